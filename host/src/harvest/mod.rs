//! Harvesting: the host works only while the device can spare it, offers only what the policy
//! allows, enforces that itself, and meters real work into a signed rewards ledger.
//!
//! [`Harvester::run`] reads the [`sensors`] every second, advances the [`policy`], sets the
//! [`Gate`] that admits requests (concurrency and fuel rate sized to the offered CPU), counts the
//! fuel each app burnt into the [`ledger`], and publishes a [`HarvestStatus`] for the agent's
//! heartbeat and for `fog host status`.

pub mod ledger;
pub mod policy;
pub mod sensors;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use chrono::Timelike;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::server::AppTable;
use ledger::Ledger;
use policy::{Decision, Policy, State};
use sensors::{Reading, Sensors};

/// Concurrent requests admitted per offered CPU core.
pub const REQUESTS_PER_CORE: f64 = 32.0;
/// Fuel one offered core may burn per second (≈ one core's worth of guest code).
pub use fog_proto::api::FUEL_PER_CORE_SECOND;

/// What the host admits: nothing while off, a capped amount while harvesting or draining.
#[derive(Debug)]
pub struct Gate {
    accepting: AtomicBool,
    max_in_flight: AtomicU32,
    in_flight: AtomicU32,
    fuel: Mutex<FuelBucket>,
}

#[derive(Debug)]
struct FuelBucket {
    tokens: f64,
    rate: f64,
    last: Instant,
}

/// A request admitted by the [`Gate`]; report its fuel with [`Admission::finish`].
#[derive(Debug)]
pub struct Admission<'a>(&'a Gate);

impl Admission<'_> {
    /// Charge the fuel the request burnt and release its slot.
    pub fn finish(self, fuel: u64) {
        let mut bucket = self.0.fuel.lock().expect("fuel lock");
        bucket.tokens -= fuel as f64;
        drop(bucket);
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
        std::mem::forget(self);
    }
}

impl Drop for Admission<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Default for Gate {
    /// A gate that admits everything (a host without a harvest policy, e.g. `fog run`).
    fn default() -> Self {
        Gate {
            accepting: AtomicBool::new(true),
            max_in_flight: AtomicU32::new(u32::MAX),
            in_flight: AtomicU32::new(0),
            fuel: Mutex::new(FuelBucket {
                tokens: f64::INFINITY,
                rate: f64::INFINITY,
                last: Instant::now(),
            }),
        }
    }
}

impl Gate {
    /// Size the gate for `decision`: closed when off, `cpu_offered` cores' worth otherwise
    /// (draining keeps the last capacity so in-flight work and stragglers finish).
    pub fn apply(&self, decision: &Decision, last_cpu: f64) {
        let cpu = if decision.state == State::Harvesting {
            decision.cpu_offered
        } else {
            last_cpu
        };
        self.accepting
            .store(decision.state != State::Off, Ordering::Release);
        self.max_in_flight.store(
            (cpu * REQUESTS_PER_CORE).ceil().max(1.0) as u32,
            Ordering::Release,
        );
        let mut bucket = self.fuel.lock().expect("fuel lock");
        bucket.rate = cpu * FUEL_PER_CORE_SECOND;
        if !bucket.tokens.is_finite() {
            bucket.tokens = bucket.rate;
        }
    }

    /// Admit one request, or say why not.
    pub fn admit(&self) -> Result<Admission<'_>, String> {
        if !self.accepting.load(Ordering::Acquire) {
            return Err(
                "this device is not offering capacity now (its harvest policy says off)".into(),
            );
        }
        let max = self.max_in_flight.load(Ordering::Acquire);
        if self.in_flight.fetch_add(1, Ordering::AcqRel) >= max {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            return Err(format!(
                "this device is at its harvest capacity of {max} concurrent requests"
            ));
        }
        let admission = Admission(self);
        let mut bucket = self.fuel.lock().expect("fuel lock");
        let now = Instant::now();
        let elapsed = now.duration_since(bucket.last).as_secs_f64();
        bucket.last = now;
        // Refill up to one second's worth.
        bucket.tokens = (bucket.tokens + elapsed * bucket.rate).min(bucket.rate);
        if bucket.tokens < 0.0 {
            return Err(
                "this device has used the CPU time it offers for now; retry shortly".into(),
            );
        }
        Ok(admission)
    }
}

/// What the harvester last decided and measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HarvestStatus {
    /// The state.
    pub state: State,
    /// Why, as a bounded set.
    #[serde(default)]
    pub cause: policy::Cause,
    /// Why.
    pub reason: String,
    /// CPU cores offered.
    pub cpu_offered: f64,
    /// Memory offered, MiB.
    pub mem_offered_mb: f64,
    /// The last sensor reading.
    pub reading: Reading,
    /// Apps served and the fuel they burnt since the host started.
    pub apps: Vec<AppUsage>,
    /// Fuel burnt by all apps since the host started.
    pub fuel_total: u64,
    /// Credits earned since the host started (closed periods and the open one).
    pub credits_total: f64,
    /// Unix ms of this status.
    pub updated_ms: u64,
}

/// One app's usage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppUsage {
    /// Name.
    pub name: String,
    /// Requests served.
    pub requests: u64,
    /// Fuel burnt.
    pub fuel: u64,
}

/// Settings of the harvester.
#[derive(Debug, Clone)]
pub struct HarvesterConfig {
    /// The policy.
    pub policy: policy::HarvestConfig,
    /// Price per CPU-hour the device asks.
    pub price_cpu_hour: f64,
    /// Length of a ledger period.
    pub period: Duration,
    /// Where to write `status.json` for `fog host status`.
    pub status_file: Option<PathBuf>,
}

/// The harvester's handles for the rest of the host.
#[derive(Debug, Clone)]
pub struct HarvestHandle {
    /// The latest status.
    pub status: watch::Receiver<HarvestStatus>,
    /// The ledger (the agent ships and acknowledges its closed periods).
    pub ledger: Arc<Mutex<Ledger>>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Run the harvester for `apps` until `shutdown` resolves.
pub fn start(
    mut sensors: Box<dyn Sensors>,
    config: HarvesterConfig,
    apps: Arc<AppTable>,
    ledger: Ledger,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> (HarvestHandle, tokio::task::JoinHandle<()>) {
    let first = sensors.read();
    let initial = HarvestStatus {
        state: State::Off,
        cause: policy::Cause::Starting,
        reason: "starting".into(),
        cpu_offered: 0.0,
        mem_offered_mb: 0.0,
        reading: first,
        apps: Vec::new(),
        fuel_total: 0,
        credits_total: 0.0,
        updated_ms: now_ms(),
    };
    let (tx, rx) = watch::channel(initial);
    let ledger = Arc::new(Mutex::new(ledger));
    let handle = HarvestHandle {
        status: rx,
        ledger: ledger.clone(),
    };
    let task = tokio::spawn(async move {
        tokio::pin!(shutdown);
        let sensors = Arc::new(Mutex::new(sensors));
        let mut policy = Policy::new(config.policy.clone());
        let started = Instant::now();
        let mut period_start = Instant::now();
        let mut last_meter: HashMap<(String, String), u64> = HashMap::new();
        let mut usage: HashMap<String, AppUsage> = HashMap::new();
        let mut fuel_total = 0u64;
        let mut credits_closed = 0.0;
        let mut last_cpu = 0.0;
        let mut last_state = State::Off;
        loop {
            let reader = sensors.clone();
            let reading =
                tokio::task::spawn_blocking(move || reader.lock().expect("sensors lock").read())
                    .await
                    .unwrap_or_default();
            // Fuel burnt since the last tick, per app.
            let listed = apps.list();
            let mut in_flight = 0;
            for app in &listed {
                let meter = app.meter();
                in_flight += app.in_flight();
                let key = (app.name().to_string(), app.sha256().to_string());
                let before = last_meter.insert(key, meter.fuel).unwrap_or(0);
                let burnt = meter.fuel.saturating_sub(before);
                let entry = usage
                    .entry(app.name().to_string())
                    .or_insert_with(|| AppUsage {
                        name: app.name().to_string(),
                        requests: 0,
                        fuel: 0,
                    });
                entry.requests = meter.requests;
                entry.fuel += burnt;
                fuel_total += burnt;
                if burnt > 0 {
                    ledger
                        .lock()
                        .expect("ledger lock")
                        .record(app.name(), burnt);
                }
            }
            let busy = !listed.is_empty() || in_flight > 0;
            let minute = {
                let now = chrono::Local::now();
                now.hour() * 60 + now.minute()
            };
            let decision = policy.step(&reading, started.elapsed().as_secs_f64(), minute, busy);
            apps.gate().apply(&decision, last_cpu);
            if decision.state == State::Harvesting {
                last_cpu = decision.cpu_offered;
            }
            if decision.state != last_state {
                tracing::info!(state = ?decision.state, "{}", decision.reason);
                last_state = decision.state;
            }
            if period_start.elapsed() >= config.period {
                period_start = Instant::now();
                match ledger.lock().expect("ledger lock").close(now_ms()) {
                    Ok(period) => credits_closed += period.period.total_credits,
                    Err(err) => tracing::error!("cannot close the ledger period: {err}"),
                }
            }
            let open_credits: f64 = ledger
                .lock()
                .expect("ledger lock")
                .open_fuel()
                .values()
                .map(|fuel| fog_proto::api::LedgerPeriod::credits(*fuel, config.price_cpu_hour))
                .sum();
            let mut apps_usage: Vec<AppUsage> = usage.values().cloned().collect();
            apps_usage.sort_by(|a, b| a.name.cmp(&b.name));
            let status = HarvestStatus {
                state: decision.state,
                cause: decision.cause,
                reason: decision.reason.clone(),
                cpu_offered: decision.cpu_offered,
                mem_offered_mb: decision.mem_offered_mb,
                reading,
                apps: apps_usage,
                fuel_total,
                credits_total: credits_closed + open_credits,
                updated_ms: now_ms(),
            };
            if let Some(path) = &config.status_file {
                let tmp = path.with_extension("tmp");
                let written = std::fs::write(
                    &tmp,
                    serde_json::to_vec_pretty(&status).expect("serialises"),
                )
                .and_then(|()| std::fs::rename(&tmp, path));
                if let Err(err) = written {
                    tracing::warn!(path = %path.display(), "cannot write the status file: {err}");
                }
            }
            let _ = tx.send(status);
            tokio::select! {
                () = &mut shutdown => return,
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    });
    (handle, task)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decision(state: State, cpu: f64) -> Decision {
        Decision {
            state,
            cause: policy::Cause::RulesHold,
            reason: String::new(),
            cpu_offered: cpu,
            mem_offered_mb: 0.0,
        }
    }

    #[test]
    fn the_gate_enforces_concurrency_and_fuel_rate() {
        let gate = Gate::default();
        gate.apply(&decision(State::Off, 0.0), 0.0);
        assert!(gate.admit().unwrap_err().contains("not offering capacity"));
        // Half a core: 16 concurrent requests, 1e9 fuel per second.
        gate.apply(&decision(State::Harvesting, 0.5), 0.0);
        let held: Vec<_> = (0..16).map(|_| gate.admit().unwrap()).collect();
        assert!(gate.admit().unwrap_err().contains("harvest capacity of 16"));
        drop(held);
        let admitted = gate.admit().unwrap();
        admitted.finish(3_000_000_000);
        assert!(gate.admit().unwrap_err().contains("CPU time it offers"));
        // Draining keeps the last capacity.
        gate.apply(&decision(State::Draining, 0.0), 0.5);
        assert!(gate.admit().is_err(), "still in debt");
    }
}
