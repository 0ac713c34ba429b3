//! The control plane's Prometheus metrics, served at `GET /metrics` on its API listener:
//! heartbeats received, placement time, and (read at scrape time) devices, apps, replicas and
//! placement problems.

use std::sync::Arc;

use fog_net::metrics::{Exporter, StateLabel};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::store::StoreError;
use crate::{ApiResponse, Control};

/// The control plane's metrics.
#[derive(Debug)]
pub(crate) struct ControlMetrics {
    exporter: Arc<Exporter>,
    pub(crate) heartbeats: Counter,
    pub(crate) placement: Histogram,
    devices: Family<StateLabel, Gauge>,
    apps: Gauge,
    replicas_wanted: Gauge,
    replicas_running: Gauge,
    problems: Gauge,
}

impl Default for ControlMetrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let heartbeats = Counter::default();
        registry.register(
            "fog_control_heartbeats",
            "Heartbeats received from devices (accepted or refused)",
            heartbeats.clone(),
        );
        // 1 ms doubling to ~16 s: a placement of a handful of apps up to thousands of devices.
        let placement = Histogram::new(exponential_buckets(0.001, 2.0, 15));
        registry.register(
            "fog_control_placement_duration_seconds",
            "Time of one placement: the whole fleet, or only the apps that need a place",
            placement.clone(),
        );
        let devices = Family::<StateLabel, Gauge>::default();
        registry.register(
            "fog_control_devices",
            "Devices registered, by state: alive (fresh heartbeat) and harvestable, alive but \
             not harvestable, or dead",
            devices.clone(),
        );
        let apps = Gauge::default();
        registry.register("fog_control_apps", "Apps published", apps.clone());
        let replicas_wanted = Gauge::default();
        registry.register(
            "fog_control_replicas_wanted",
            "Replicas the apps want, summed",
            replicas_wanted.clone(),
        );
        let replicas_running = Gauge::default();
        registry.register(
            "fog_control_replicas_running",
            "Replicas devices report running, summed over apps",
            replicas_running.clone(),
        );
        let problems = Gauge::default();
        registry.register(
            "fog_control_apps_unplaced",
            "Apps with a placement problem (fewer replicas placed than wanted)",
            problems.clone(),
        );
        ControlMetrics {
            exporter: Exporter::new(registry, || {}),
            heartbeats,
            placement,
            devices,
            apps,
            replicas_wanted,
            replicas_running,
            problems,
        }
    }
}

impl Control {
    /// `GET /metrics`: gauges read from the registry and the heartbeats now, then every metric.
    pub(crate) fn scrape(&self) -> Result<ApiResponse, StoreError> {
        let metrics = &self.metrics;
        let devices = self.device_infos()?;
        for (state, count) in [
            (
                "harvestable",
                devices.iter().filter(|d| d.alive && d.harvestable).count(),
            ),
            (
                "not_harvestable",
                devices.iter().filter(|d| d.alive && !d.harvestable).count(),
            ),
            ("dead", devices.iter().filter(|d| !d.alive).count()),
        ] {
            metrics
                .devices
                .get_or_create(&StateLabel {
                    state: state.to_string(),
                })
                .set(count as i64);
        }
        let apps = self.app_infos()?;
        metrics.apps.set(apps.len() as i64);
        metrics
            .replicas_wanted
            .set(apps.iter().map(|a| i64::from(a.replicas)).sum());
        metrics
            .replicas_running
            .set(apps.iter().map(|a| a.running.len() as i64).sum());
        metrics
            .problems
            .set(apps.iter().filter(|a| a.problem.is_some()).count() as i64);
        let response = metrics.exporter.response();
        let (parts, body) = response.into_parts();
        Ok(http::Response::from_parts(
            parts,
            crate::api::ApiBody::full(body),
        ))
    }
}
