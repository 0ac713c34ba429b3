//! The host's Prometheus metrics (`fog host --metrics-listen ADDR`): requests by app and status,
//! latency, fuel burnt per app on the request path; apps loaded and resident, requests in
//! flight, the process's memory, the harvest state with its cause, and each replica's log
//! sequence number and (followers) replication lag, read at scrape time.
//!
//! Without `--metrics-listen` nothing is recorded: the request path only checks that no
//! [`HostMetrics`] was installed.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use fog_net::metrics::{AppLabel, AppStatus, Exporter, latency_histogram};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tokio::sync::watch;

use crate::harvest::HarvestStatus;
use crate::server::AppTable;

/// Labels of the harvest-state gauge: the state and why, both bounded sets.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HarvestLabels {
    state: String,
    cause: String,
}

/// What the request path records.
#[derive(Debug)]
pub struct HostMetrics {
    requests: Family<AppStatus, Counter>,
    duration: Family<AppLabel, Histogram, fn() -> Histogram>,
    fuel: Family<AppLabel, Counter>,
}

impl HostMetrics {
    /// Count one request of `app` (empty: no app of this host) answered with `status` after
    /// `seconds`, having burnt `fuel`.
    pub fn record(&self, app: &str, status: u16, seconds: f64, fuel: u64) {
        self.requests
            .get_or_create(&AppStatus {
                app: app.to_string(),
                status,
            })
            .inc();
        if app.is_empty() {
            return;
        }
        let label = AppLabel {
            app: app.to_string(),
        };
        self.duration.get_or_create(&label).observe(seconds);
        if fuel > 0 {
            self.fuel.get_or_create(&label).inc_by(fuel);
        }
    }
}

/// Build the host's metrics, install the request-path part in `apps`, and return the exporter
/// (`harvest`: the harvester's status, if the host follows a harvest policy).
pub fn install(
    apps: &Arc<AppTable>,
    harvest: Option<watch::Receiver<HarvestStatus>>,
) -> Arc<Exporter> {
    let mut registry = Registry::default();
    let metrics = Arc::new(HostMetrics {
        requests: Family::default(),
        duration: Family::new_with_constructor(latency_histogram),
        fuel: Family::default(),
    });
    registry.register(
        "fog_host_requests",
        "Requests served, by app and HTTP status (app empty: the request named no app here)",
        metrics.requests.clone(),
    );
    registry.register(
        "fog_host_request_duration_seconds",
        "Time from a request's arrival to its response head, by app",
        metrics.duration.clone(),
    );
    registry.register(
        "fog_host_fuel_burnt",
        "Fuel (wasmtime instructions) burnt by requests, by app",
        metrics.fuel.clone(),
    );
    let loaded: Gauge = Gauge::default();
    registry.register(
        "fog_host_apps_loaded",
        "Apps this host serves",
        loaded.clone(),
    );
    let resident: Gauge = Gauge::default();
    registry.register(
        "fog_host_apps_resident",
        "Apps whose compiled code is in memory now",
        resident.clone(),
    );
    let in_flight: Gauge = Gauge::default();
    registry.register(
        "fog_host_instances_in_flight",
        "Guest instances running a request now",
        in_flight.clone(),
    );
    let memory: Gauge = Gauge::default();
    registry.register(
        "fog_host_resident_memory_bytes",
        "Resident memory of the host process",
        memory.clone(),
    );
    let state = Family::<HarvestLabels, Gauge>::default();
    registry.register(
        "fog_host_harvest_state",
        "1 for the harvest state the policy is in now, with its cause",
        state.clone(),
    );
    let cpu_offered = Gauge::<f64, AtomicU64>::default();
    registry.register(
        "fog_host_cpu_offered_cores",
        "CPU cores the harvest policy offers now",
        cpu_offered.clone(),
    );
    let credits = Gauge::<f64, AtomicU64>::default();
    registry.register(
        "fog_host_credits_earned",
        "Credits earned since the host started (closed ledger periods and the open one)",
        credits.clone(),
    );
    let lag = Family::<AppLabel, Gauge>::default();
    registry.register(
        "fog_host_replication_lag_entries",
        "Log entries this follower replica lacks of what its primary held at its last pull, by \
         app (followers only)",
        lag.clone(),
    );
    let state_seq = Family::<AppLabel, Gauge>::default();
    registry.register(
        "fog_host_replication_seq",
        "The last log sequence number each app's state holds here, by app",
        state_seq.clone(),
    );
    apps.set_metrics(metrics);
    let table = apps.clone();
    Exporter::new(registry, move || {
        let listed = table.list();
        loaded.set(listed.len() as i64);
        resident.set(listed.iter().filter(|a| a.is_resident()).count() as i64);
        in_flight.set(listed.iter().map(|a| i64::from(a.in_flight())).sum());
        // Only apps served here now: a removed app's series goes with it.
        lag.clear();
        state_seq.clear();
        for app in &listed {
            let label = AppLabel {
                app: app.name().to_string(),
            };
            let namespace = app.namespace();
            state_seq
                .get_or_create(&label)
                .set(i64::try_from(namespace.head()).unwrap_or(i64::MAX));
            if let Some(behind) = namespace.lag() {
                lag.get_or_create(&label)
                    .set(i64::try_from(behind).unwrap_or(i64::MAX));
            }
        }
        if let Some(bytes) = resident_memory_bytes() {
            memory.set(bytes as i64);
        }
        // One series at a time: the state the policy is in now.
        state.clear();
        match &harvest {
            Some(status) => {
                let status = status.borrow();
                state
                    .get_or_create(&HarvestLabels {
                        state: status.state.as_str().to_string(),
                        cause: status.cause.as_str().to_string(),
                    })
                    .set(1);
                cpu_offered.set(status.cpu_offered);
                credits.set(status.credits_total);
            }
            None => {
                state
                    .get_or_create(&HarvestLabels {
                        state: "harvesting".to_string(),
                        cause: "always_on".to_string(),
                    })
                    .set(1);
            }
        }
    })
}

/// The process's resident set size, from `/proc/self/status` (Linux).
fn resident_memory_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
