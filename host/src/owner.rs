//! The device owner's local page (`fog host --status-listen`, loopback by default): what the
//! device runs, its harvest state and reason, and its fuel and credits over time, as a page, a
//! script and a stylesheet compiled into the binary (no CDN) and `/status.json`, which the
//! script polls and puts in the page as text only.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use serde::Serialize;
use tokio::sync::watch;

use crate::harvest::HarvestStatus;
use crate::server::AppTable;

const INDEX: &str = include_str!("owner/index.html");
const SCRIPT: &str = include_str!("owner/device.js");
const STYLE: &str = include_str!("owner/device.css");

/// How often fuel and credits are sampled for the chart.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(2);
/// Samples kept: an hour at [`SAMPLE_EVERY`].
const SAMPLES_KEPT: usize = 1800;

/// Fuel and credits at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Sample {
    /// Unix ms.
    pub t_ms: u64,
    /// Fuel burnt since the host started.
    pub fuel: u64,
    /// Credits earned since the host started.
    pub credits: f64,
}

/// One app the device runs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AppView {
    /// Name.
    pub name: String,
    /// Primary, follower or fenced.
    pub role: &'static str,
    /// Requests in flight.
    pub in_flight: u32,
    /// Requests served since the host started.
    pub requests: u64,
    /// Of which failed.
    pub failures: u64,
    /// Fuel burnt.
    pub fuel: u64,
}

/// The harvest policy's last decision.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HarvestView {
    /// off, harvesting or draining.
    pub state: &'static str,
    /// Why, for people.
    pub reason: String,
    /// CPU cores offered.
    pub cpu_offered: f64,
}

/// What `/status.json` answers.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OwnerStatus {
    /// The device id.
    pub device: String,
    /// None: the host ignores harvest policy (`--always-on`).
    pub harvest: Option<HarvestView>,
    /// Apps, by name.
    pub apps: Vec<AppView>,
    /// Fuel and credits over the last hour, oldest first.
    pub history: Vec<Sample>,
}

/// The page's state: where to read from, and the samples so far.
#[derive(Debug)]
pub struct OwnerPage {
    device: String,
    apps: Arc<AppTable>,
    harvest: Option<watch::Receiver<HarvestStatus>>,
    history: Mutex<VecDeque<Sample>>,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl OwnerPage {
    /// The page of `device`, serving `apps`, with the harvester's status if it has one.
    pub fn new(
        device: String,
        apps: Arc<AppTable>,
        harvest: Option<watch::Receiver<HarvestStatus>>,
    ) -> Arc<OwnerPage> {
        Arc::new(OwnerPage {
            device,
            apps,
            harvest,
            history: Mutex::new(VecDeque::new()),
        })
    }

    /// Take one sample of fuel and credits: the harvester's totals (credits come only from its
    /// ledger), or the apps' meters when the host ignores harvest policy.
    pub fn sample(&self) {
        let (fuel, credits) = match &self.harvest {
            Some(status) => {
                let status = status.borrow();
                (status.fuel_total, status.credits_total)
            }
            None => (self.apps.list().iter().map(|a| a.meter().fuel).sum(), 0.0),
        };
        let mut history = self.history.lock().expect("history lock");
        if history.len() == SAMPLES_KEPT {
            history.pop_front();
        }
        history.push_back(Sample {
            t_ms: now_ms(),
            fuel,
            credits,
        });
    }

    /// What the page shows now.
    pub fn status(&self) -> OwnerStatus {
        let apps = self
            .apps
            .list()
            .iter()
            .map(|app| {
                let meter = app.meter();
                AppView {
                    name: app.name().to_string(),
                    role: match app.namespace().mode() {
                        crate::replica::Mode::Primary => "primary",
                        crate::replica::Mode::Follower => "follower",
                        crate::replica::Mode::Fenced => "fenced",
                    },
                    in_flight: app.in_flight(),
                    requests: meter.requests,
                    failures: meter.failures,
                    fuel: meter.fuel,
                }
            })
            .collect();
        let harvest = self.harvest.as_ref().map(|status| {
            let status = status.borrow();
            HarvestView {
                state: status.state.as_str(),
                reason: status.reason.clone(),
                cpu_offered: status.cpu_offered,
            }
        });
        OwnerStatus {
            device: self.device.clone(),
            harvest,
            apps,
            history: self
                .history
                .lock()
                .expect("history lock")
                .iter()
                .copied()
                .collect(),
        }
    }

    /// The answer to one request.
    pub fn answer(&self, method: &http::Method, uri: &http::Uri) -> http::Response<Full<Bytes>> {
        if method != http::Method::GET {
            return text(405, "the device page is read-only: GET only");
        }
        let (content_type, body) = match uri.path() {
            "/" => (
                "text/html; charset=utf-8",
                Bytes::from_static(INDEX.as_bytes()),
            ),
            "/device.js" => (
                "text/javascript; charset=utf-8",
                Bytes::from_static(SCRIPT.as_bytes()),
            ),
            "/device.css" => (
                "text/css; charset=utf-8",
                Bytes::from_static(STYLE.as_bytes()),
            ),
            "/status.json" => (
                "application/json",
                Bytes::from(serde_json::to_vec(&self.status()).expect("serialises")),
            ),
            other => {
                return text(
                    404,
                    &format!("no page {}: the device page is /", other.escape_debug()),
                );
            }
        };
        // The page takes no parameters: a query is a mistake worth saying so.
        if uri.query().is_some_and(|q| !q.is_empty()) {
            return text(400, "the device page takes no query parameters");
        }
        let mut response = http::Response::new(Full::new(body));
        let headers = response.headers_mut();
        headers.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static(content_type),
        );
        // Scripts only from here, no framing by other sites.
        headers.insert(
            http::header::CONTENT_SECURITY_POLICY,
            http::HeaderValue::from_static(
                "default-src 'self'; frame-ancestors 'none'; object-src 'none'",
            ),
        );
        headers.insert(
            http::header::CACHE_CONTROL,
            http::HeaderValue::from_static("no-cache"),
        );
        response
    }
}

fn text(status: u16, reason: &str) -> http::Response<Full<Bytes>> {
    let mut response = http::Response::new(Full::new(Bytes::from(format!("{reason}\n"))));
    *response.status_mut() = http::StatusCode::from_u16(status).expect("a valid status");
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// Serve `page` on `listener` and sample it every [`SAMPLE_EVERY`] until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    page: Arc<OwnerPage>,
    shutdown: impl Future<Output = ()>,
) {
    let sampler = {
        let page = page.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(SAMPLE_EVERY);
            loop {
                every.tick().await;
                page.sample();
            }
        })
    };
    fog_net::serve_http1(
        listener,
        move |request: http::Request<hyper::body::Incoming>| {
            let page = page.clone();
            async move { page.answer(request.method(), request.uri()) }
        },
        shutdown,
    )
    .await;
    sampler.abort();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_its_files_and_clear_refusals() {
        let page = OwnerPage::new("d1".into(), AppTable::new(), None);
        let get = |target: &str| page.answer(&http::Method::GET, &target.parse().unwrap());
        assert_eq!(get("/").status(), 200);
        assert_eq!(
            get("/device.js").headers()[http::header::CONTENT_TYPE],
            "text/javascript; charset=utf-8"
        );
        assert_eq!(get("/status.json").status(), 200);
        assert_eq!(get("/../etc/passwd").status(), 404);
        assert_eq!(get("/?app=%3Cscript%3E").status(), 400);
        assert_eq!(
            page.answer(&http::Method::POST, &"/".parse().unwrap())
                .status(),
            405
        );
    }

    #[test]
    fn samples_are_bounded() {
        let page = OwnerPage::new("d1".into(), AppTable::new(), None);
        for _ in 0..SAMPLES_KEPT + 10 {
            page.sample();
        }
        assert_eq!(page.status().history.len(), SAMPLES_KEPT);
    }

    #[test]
    fn the_script_never_writes_html() {
        // App names come from developers: they go in as text only.
        for forbidden in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
        ] {
            assert!(!SCRIPT.contains(forbidden), "device.js uses {forbidden}");
        }
    }
}
