//! Prometheus metrics shared by every role: one exporter (a registry plus what to refresh just
//! before a scrape), the text encoder and the `/metrics` listener, and the label sets and
//! buckets the roles have in common, so the control plane, routers, hosts and relays expose
//! their metrics the same way.
//!
//! Label rule (Prometheus conventions): labels carry only bounded sets — app names (bounded by
//! the registry), status codes, states. Never a visitor address, a request path or a request id.

use std::sync::Arc;

pub use prometheus_client;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

/// The `Content-Type` of the Prometheus text format (version 0.0.4).
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Where Prometheus scrapes.
pub const PATH: &str = "/metrics";

/// A role's metrics: its registry and what to update just before each scrape (gauges read from
/// the role's state, so nothing on the request path keeps them).
pub struct Exporter {
    registry: Registry,
    before_scrape: Box<dyn Fn() + Send + Sync>,
}

impl std::fmt::Debug for Exporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exporter").finish_non_exhaustive()
    }
}

impl Exporter {
    /// An exporter of `registry` that runs `before_scrape` before encoding.
    pub fn new(registry: Registry, before_scrape: impl Fn() + Send + Sync + 'static) -> Arc<Self> {
        Arc::new(Exporter {
            registry,
            before_scrape: Box::new(before_scrape),
        })
    }

    /// Refresh, then encode every metric in the Prometheus text format.
    pub fn encode(&self) -> String {
        (self.before_scrape)();
        let mut text = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }

    /// The answer to a scrape: 200 with the text format.
    pub fn response(&self) -> http::Response<String> {
        let mut response = http::Response::new(self.encode());
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static(CONTENT_TYPE),
        );
        response
    }
}

/// Serve `GET /metrics` from `exporter` on `listener` (anything else gets 404) until `shutdown`
/// resolves: the listener of roles whose own port belongs to visitors or peers (routers, hosts,
/// relays), so metrics are never exposed where apps are served.
pub async fn serve(
    listener: TcpListener,
    exporter: Arc<Exporter>,
    shutdown: impl Future<Output = ()>,
) {
    crate::serve_http1(
        listener,
        move |request: http::Request<hyper::body::Incoming>| {
            let exporter = exporter.clone();
            async move {
                if request.method() == http::Method::GET && request.uri().path() == PATH {
                    exporter.response()
                } else {
                    let mut response = http::Response::new(format!("only GET {PATH} here\n"));
                    *response.status_mut() = http::StatusCode::NOT_FOUND;
                    response
                }
            }
        },
        shutdown,
    )
    .await;
}

/// Buckets of request latency histograms: 0.5 ms doubling to ~16 s, covering a cached
/// instantiate (sub-millisecond) up to a slow guest near its deadline.
pub fn latency_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(0.0005, 2.0, 16)
}

/// A latency histogram with [`latency_buckets`] (the constructor of histogram families).
pub fn latency_histogram() -> Histogram {
    Histogram::new(latency_buckets())
}

/// Buckets of round-trip times: 0.1 ms doubling to ~3.3 s.
pub fn rtt_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 2.0, 16))
}

/// Labels of a request counted per app and status code.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AppStatus {
    /// The app's name, or empty when the request named no app this role serves (the name a
    /// visitor typed is never a label: it is unbounded).
    pub app: String,
    /// HTTP status code.
    pub status: u16,
}

/// Labels of a per-app metric.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AppLabel {
    /// The app's name.
    pub app: String,
}

/// Labels of a metric split by a state (a bounded set of words).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    /// The state.
    pub state: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::counter::Counter;
    use prometheus_client::metrics::family::Family;

    #[test]
    fn counters_and_histograms_encode_in_the_text_format_with_units() {
        let mut registry = Registry::default();
        let requests = Family::<AppStatus, Counter>::default();
        registry.register("fog_test_requests", "Requests", requests.clone());
        let latency = Family::<AppLabel, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram,
        );
        registry.register(
            "fog_test_request_duration_seconds",
            "Latency",
            latency.clone(),
        );
        requests
            .get_or_create(&AppStatus {
                app: "hello".into(),
                status: 200,
            })
            .inc();
        latency
            .get_or_create(&AppLabel {
                app: "hello".into(),
            })
            .observe(0.002);
        let exporter = Exporter::new(registry, || {});
        let text = exporter.encode();
        assert!(
            text.contains("fog_test_requests_total{app=\"hello\",status=\"200\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("fog_test_request_duration_seconds_count{app=\"hello\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE fog_test_request_duration_seconds histogram"),
            "{text}"
        );
    }
}
