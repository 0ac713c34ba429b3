//! The router's Prometheus metrics (`fog router --metrics-listen ADDR`): visitors' requests by
//! app and status and their latency (every way in: HTTP, Betanet, onion), hosts attached, HTX
//! streams open on their connections and those connections' round-trip times, apps and replicas
//! routed.
//!
//! Without `--metrics-listen` nothing is recorded and attached hosts are not pinged.

use std::sync::Arc;

use fog_net::metrics::{AppLabel, AppStatus, Exporter, latency_histogram, rtt_histogram};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::Gateway;

/// What the request path and the attach endpoint record.
#[derive(Debug)]
pub struct RouterMetrics {
    requests: Family<AppStatus, Counter>,
    duration: Family<AppLabel, Histogram, fn() -> Histogram>,
    pub(crate) attached_rtt: Histogram,
}

impl RouterMetrics {
    /// Count one visitor request for `app` (empty: not an app this router routes) answered
    /// with `status` after `seconds`.
    pub(crate) fn record(&self, app: &str, status: u16, seconds: f64) {
        self.requests
            .get_or_create(&AppStatus {
                app: app.to_string(),
                status,
            })
            .inc();
        if !app.is_empty() {
            self.duration
                .get_or_create(&AppLabel {
                    app: app.to_string(),
                })
                .observe(seconds);
        }
    }
}

/// Build the router's metrics, install them in `gateway`, and return the exporter.
pub fn install(gateway: &Arc<Gateway>) -> Arc<Exporter> {
    let mut registry = Registry::default();
    let metrics = Arc::new(RouterMetrics {
        requests: Family::default(),
        duration: Family::new_with_constructor(latency_histogram),
        attached_rtt: rtt_histogram(),
    });
    registry.register(
        "fog_router_requests",
        "Visitors' requests, by app and HTTP status (app empty: no app this router routes)",
        metrics.requests.clone(),
    );
    registry.register(
        "fog_router_request_duration_seconds",
        "Time from a visitor's request to the response head, by app (retries and holds included)",
        metrics.duration.clone(),
    );
    registry.register(
        "fog_router_attached_rtt_seconds",
        "Round-trip times of HTX PINGs on hosts' attach connections (every 5 s per host)",
        metrics.attached_rtt.clone(),
    );
    let attached: Gauge = Gauge::default();
    registry.register(
        "fog_router_attached_hosts",
        "Hosts holding an attach connection to this router",
        attached.clone(),
    );
    let streams: Gauge = Gauge::default();
    registry.register(
        "fog_router_htx_streams_open",
        "HTX streams open on hosts' attach connections",
        streams.clone(),
    );
    let apps: Gauge = Gauge::default();
    registry.register("fog_router_apps_routed", "Apps in the routes", apps.clone());
    let replicas: Gauge = Gauge::default();
    registry.register(
        "fog_router_replicas_routed",
        "Live replicas in the routes",
        replicas.clone(),
    );
    gateway.set_metrics(metrics);
    let gateway = gateway.clone();
    Exporter::new(registry, move || {
        let connections = gateway.dialer().attached_devices();
        attached.set(connections.len() as i64);
        streams.set(
            connections
                .iter()
                .map(|(_, c)| c.open_streams() as i64)
                .sum(),
        );
        let (app_count, replica_count) = gateway.routed();
        apps.set(app_count as i64);
        replicas.set(replica_count as i64);
    })
}
