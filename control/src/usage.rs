//! What each app's replicas really use: CPU from the fuel they burn (every heartbeat reports
//! each running app's fuel so far), smoothed over time, so placement plans each replica with
//! its measured demand instead of a fixed reservation. Idle apps then cost the floor, busy ones
//! what they burn, and the tiers differ in headroom: tier B overcommits (plans exactly what was
//! measured), tiers A and S keep room to grow. Memory the same way: each heartbeat reports the
//! most linear memory each app's instances held at once since the last one; the control plane
//! keeps a peak that decays over [`MEMORY_DECAY`], and an idle app is planned with the floor
//! instead of its whole memory limit.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use fog_proto::api::{FUEL_PER_CORE_SECOND, RunningApp, Tier};

/// Time constant of the smoothing: a change in load shows at 63 % after this long.
pub const SMOOTHING: Duration = Duration::from_secs(10);

/// Time constant a memory peak decays with: a spike is planned for about this long after.
pub const MEMORY_DECAY: Duration = Duration::from_secs(60);

/// How much more than measured each tier is planned with.
pub fn headroom(tier: Tier) -> f64 {
    match tier {
        Tier::B => 1.0,
        Tier::A => 1.5,
        Tier::S => 2.0,
    }
}

/// The CPU one replica of an app is planned with: the measured cores of its busiest replica
/// with the tier's headroom, never below `floor`, and never above `ceiling` (the most any usable
/// device offers): headroom is a preference, and a busy app must stay placeable on the largest
/// device rather than be reported as fitting nowhere.
pub fn planned_cpu(tier: Tier, measured: Option<f64>, floor: f64, ceiling: f64) -> f64 {
    (measured.unwrap_or(0.0) * headroom(tier))
        .min(ceiling)
        .max(floor)
}

/// The memory one replica of an app is planned with, MiB: its measured footprint with the
/// tier's headroom, never below `floor` nor above the app's memory `limit`; the whole limit
/// while no host has measured it (a new app, or hosts that do not report it).
pub fn planned_memory(tier: Tier, measured: Option<f64>, floor: f64, limit: f64) -> f64 {
    match measured {
        Some(mb) => (mb * headroom(tier)).max(floor).min(limit),
        None => limit,
    }
}

#[derive(Debug, Clone, Copy)]
struct Sample {
    /// Fuel burnt so far, as last reported.
    fuel: u64,
    at: Instant,
    /// Smoothed cores; `None` until two reports make a rate.
    cores: Option<f64>,
    /// Decaying peak of linear memory held, MiB; `None` if the host does not measure it.
    memory_mb: Option<f64>,
}

/// Smoothed CPU per (device, app), from heartbeats.
#[derive(Debug, Default)]
pub struct Usage {
    devices: Mutex<HashMap<String, HashMap<String, Sample>>>,
}

impl Usage {
    /// Take `device`'s report of what it runs at `now`. Apps it no longer reports are forgotten
    /// for it; a counter that went backwards (the replica restarted) starts a new rate.
    pub fn record(&self, device: &str, running: &[RunningApp], now: Instant) {
        let mut devices = self.devices.lock().expect("usage lock");
        let before = devices.remove(device).unwrap_or_default();
        let mut after = HashMap::with_capacity(running.len());
        for app in running {
            let old = before.get(&app.app);
            let measured = app.memory_bytes.map(|b| b as f64 / (1 << 20) as f64);
            let memory_mb = match (measured, old.and_then(|o| o.memory_mb.map(|m| (m, o.at)))) {
                (Some(mb), Some((peak, at))) if now > at => {
                    let dt = (now - at).as_secs_f64();
                    Some(mb.max(peak * (-dt / MEMORY_DECAY.as_secs_f64()).exp()))
                }
                (Some(mb), Some((peak, _))) => Some(mb.max(peak)),
                (measured, _) => measured,
            };
            let sample = match old {
                Some(old) if app.fuel >= old.fuel && now > old.at => {
                    let dt = (now - old.at).as_secs_f64();
                    let rate = (app.fuel - old.fuel) as f64 / dt / FUEL_PER_CORE_SECOND;
                    let alpha = 1.0 - (-dt / SMOOTHING.as_secs_f64()).exp();
                    Sample {
                        fuel: app.fuel,
                        at: now,
                        cores: Some(match old.cores {
                            Some(cores) => cores + alpha * (rate - cores),
                            None => rate,
                        }),
                        memory_mb,
                    }
                }
                Some(old) if app.fuel >= old.fuel => Sample { memory_mb, ..*old },
                _ => Sample {
                    fuel: app.fuel,
                    at: now,
                    cores: None,
                    memory_mb,
                },
            };
            after.insert(app.app.clone(), sample);
        }
        if !after.is_empty() {
            devices.insert(device.to_string(), after);
        }
    }

    /// Each app's busiest replica's smoothed cores, over the devices `counts` accepts.
    pub fn busiest(&self, counts: impl Fn(&str) -> bool) -> HashMap<String, f64> {
        self.largest(counts, |sample| sample.cores)
    }

    /// `app`'s busiest replica's smoothed cores over `devices` only: what
    /// [`Usage::busiest`] says of it when they are the devices it counts that run it, without
    /// a walk over every device.
    pub fn busiest_of<'a>(
        &self,
        app: &str,
        devices: impl IntoIterator<Item = &'a str>,
    ) -> Option<f64> {
        self.largest_of(app, devices, |sample| sample.cores)
    }

    /// `app`'s largest measured memory footprint over `devices` (those reporting it, see
    /// [`Usage::footprint`]), MiB.
    pub fn footprint_of<'a>(
        &self,
        app: &str,
        devices: impl IntoIterator<Item = &'a str>,
    ) -> Option<f64> {
        self.largest_of(app, devices, |sample| sample.memory_mb)
    }

    /// `app`'s largest measured memory footprint over every device reporting it, MiB.
    pub fn footprint(&self, app: &str) -> Option<f64> {
        let devices = self.devices.lock().expect("usage lock");
        devices
            .values()
            .filter_map(|apps| apps.get(app).and_then(|s| s.memory_mb))
            .reduce(f64::max)
    }

    /// Each app's largest measured memory footprint (decaying peak, MiB) over the devices
    /// `counts` accepts; apps no host measured are absent.
    pub fn footprints(&self, counts: impl Fn(&str) -> bool) -> HashMap<String, f64> {
        self.largest(counts, |sample| sample.memory_mb)
    }

    /// Each app's largest `figure` over the devices `counts` accepts; apps with no figure on
    /// any of them are absent.
    /// `app`'s largest `figure` over `devices` only.
    fn largest_of<'a>(
        &self,
        app: &str,
        devices: impl IntoIterator<Item = &'a str>,
        figure: impl Fn(&Sample) -> Option<f64>,
    ) -> Option<f64> {
        let usage = self.devices.lock().expect("usage lock");
        devices
            .into_iter()
            .filter_map(|d| figure(usage.get(d)?.get(app)?))
            .reduce(f64::max)
    }

    fn largest(
        &self,
        counts: impl Fn(&str) -> bool,
        figure: impl Fn(&Sample) -> Option<f64>,
    ) -> HashMap<String, f64> {
        let devices = self.devices.lock().expect("usage lock");
        let mut out: HashMap<String, f64> = HashMap::new();
        for apps in devices
            .iter()
            .filter(|(d, _)| counts(d))
            .map(|(_, apps)| apps)
        {
            for (app, sample) in apps {
                if let Some(value) = figure(sample) {
                    let largest = out.entry(app.clone()).or_insert(0.0);
                    *largest = largest.max(value);
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn running(app: &str, fuel: u64) -> RunningApp {
        RunningApp {
            app: app.into(),
            sha256: String::new(),
            in_flight: 0,
            requests: 0,
            failures: 0,
            fuel,
            state_seq: 0,
            role: Default::default(),
            caught_up: false,
            fenced: false,
            memory_bytes: None,
        }
    }

    #[test]
    fn a_steady_burn_converges_on_its_cores_and_idle_apps_on_zero() {
        let usage = Usage::default();
        let start = Instant::now();
        // "busy" burns half a core; "idle" nothing.
        for s in 0..=60u64 {
            let fuel = (s as f64 * 0.5 * FUEL_PER_CORE_SECOND) as u64;
            usage.record(
                "d1",
                &[running("busy", fuel), running("idle", 7)],
                start + Duration::from_secs(s),
            );
        }
        let busiest = usage.busiest(|_| true);
        assert!((busiest["busy"] - 0.5).abs() < 1e-6, "{busiest:?}");
        assert_eq!(busiest["idle"], 0.0);
    }

    #[test]
    fn a_burst_is_smoothed_and_a_restart_starts_over() {
        let usage = Usage::default();
        let start = Instant::now();
        usage.record("d1", &[running("a", 0)], start);
        // One second at two cores: the smoothed figure is that rate (the first one).
        let two = (2.0 * FUEL_PER_CORE_SECOND) as u64;
        usage.record("d1", &[running("a", two)], start + Duration::from_secs(1));
        // Then idle for a second: pulled down by one second's share of the time constant.
        usage.record("d1", &[running("a", two)], start + Duration::from_secs(2));
        let cores = usage.busiest(|_| true)["a"];
        assert!(cores > 1.5 && cores < 2.0, "{cores}");
        // The replica restarted: its counter went back; no rate until the next report.
        usage.record("d1", &[running("a", 5)], start + Duration::from_secs(3));
        assert!(!usage.busiest(|_| true).contains_key("a"));
    }

    #[test]
    fn the_busiest_live_replica_counts_and_headroom_follows_the_tier() {
        let usage = Usage::default();
        let start = Instant::now();
        let core = FUEL_PER_CORE_SECOND as u64;
        for (device, per_s) in [("d1", core / 10), ("d2", core / 2), ("dead", 4 * core)] {
            usage.record(device, &[running("a", 0)], start);
            usage.record(
                device,
                &[running("a", per_s)],
                start + Duration::from_secs(1),
            );
        }
        let busiest = usage.busiest(|d| d != "dead");
        assert!((busiest["a"] - 0.5).abs() < 1e-9);
        assert_eq!(planned_cpu(Tier::B, Some(0.5), 0.01, 4.0), 0.5);
        assert_eq!(planned_cpu(Tier::S, Some(0.5), 0.01, 4.0), 1.0);
        assert_eq!(planned_cpu(Tier::A, None, 0.01, 4.0), 0.01);
        assert_eq!(
            planned_cpu(Tier::S, Some(0.8), 0.01, 1.0),
            1.0,
            "capped at the ceiling"
        );
        // d2 stopped running it.
        usage.record("d2", &[], start + Duration::from_secs(2));
        assert!((usage.busiest(|d| d != "dead")["a"] - 0.1).abs() < 1e-9);
    }

    fn using(app: &str, mb: u64) -> RunningApp {
        RunningApp {
            memory_bytes: Some(mb << 20),
            ..running(app, 0)
        }
    }

    #[test]
    fn a_memory_peak_counts_at_once_and_decays_and_idle_apps_plan_the_floor() {
        let usage = Usage::default();
        let start = Instant::now();
        usage.record("d1", &[using("a", 40), using("idle", 0)], start);
        usage.record("d2", &[using("a", 10)], start);
        let footprints = usage.footprints(|_| true);
        assert_eq!(footprints["a"], 40.0, "the largest replica counts");
        assert_eq!(footprints["idle"], 0.0);
        // The spike is over: one decay time later about 37 % of it is still planned for.
        usage.record("d1", &[using("a", 2)], start + MEMORY_DECAY);
        let decayed = usage.footprints(|d| d == "d1")["a"];
        assert!(
            (decayed - 40.0 / std::f64::consts::E).abs() < 1e-6,
            "{decayed}"
        );
        // A new peak counts at once.
        usage.record("d1", &[using("a", 50)], start + MEMORY_DECAY * 2);
        assert_eq!(usage.footprints(|d| d == "d1")["a"], 50.0);
        // Hosts that do not measure leave the app unmeasured.
        usage.record("d3", &[running("b", 0)], start);
        assert!(!usage.footprints(|_| true).contains_key("b"));

        assert_eq!(
            planned_memory(Tier::B, Some(0.0), 1.0, 64.0),
            1.0,
            "idle: the floor"
        );
        assert_eq!(planned_memory(Tier::B, Some(20.0), 1.0, 64.0), 20.0);
        assert_eq!(
            planned_memory(Tier::S, Some(20.0), 1.0, 64.0),
            40.0,
            "headroom"
        );
        assert_eq!(
            planned_memory(Tier::S, Some(50.0), 1.0, 64.0),
            64.0,
            "never past the limit"
        );
        assert_eq!(
            planned_memory(Tier::B, None, 1.0, 64.0),
            64.0,
            "unmeasured: the limit"
        );
    }
}
