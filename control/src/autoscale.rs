//! Autoscaling: how many replicas an app should run, from the requests its replicas report.
//!
//! Every check (at most once a second per app) the control plane sums what the app's replicas
//! served since the last check (heartbeats carry each replica's running request count) and
//! divides by the replicas and the time: requests per second per replica. Above the target for
//! [`OUT_AFTER`] checks in a row adds a replica; below half the target for [`IN_AFTER`] checks
//! removes one (the gap between the two bounds is the hysteresis); `min` 0 and `idle_s`
//! seconds without any request park the app at zero replicas. A parked app is woken by the
//! next request: routers call `POST /v1/apps/{app}/wake` and hold the request until a replica
//! runs. The state of a parked app stays on the device that last ran it, and waking prefers it.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use fog_proto::api::Autoscale;

/// Checks above target before scaling out.
pub const OUT_AFTER: u32 = 3;
/// Checks below half the target before scaling in.
pub const IN_AFTER: u32 = 10;
/// Shortest time between two checks of one app.
pub const CHECK_EVERY: Duration = Duration::from_secs(1);

/// What the autoscaler remembers of one app.
#[derive(Debug)]
pub struct AppLoad {
    /// Each device's request count at the last check.
    counts: HashMap<String, u64>,
    at: Instant,
    above: u32,
    below: u32,
    /// When a request was last seen (or the app woken).
    pub active: Instant,
}

impl AppLoad {
    /// A fresh record, counting from `counts`.
    pub fn new(counts: HashMap<String, u64>) -> AppLoad {
        AppLoad {
            counts,
            at: Instant::now(),
            above: 0,
            below: 0,
            active: Instant::now(),
        }
    }
}

/// A decision.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// Replicas wanted now.
    pub replicas: u32,
    /// Why, for the app's events.
    pub reason: String,
}

/// Check one app: `replicas` is what it runs now, `counts` each live replica's request count.
/// Returns a new replica count when it should change.
pub fn check(
    load: &mut AppLoad,
    settings: &Autoscale,
    replicas: u32,
    counts: HashMap<String, u64>,
) -> Option<Decision> {
    let elapsed = load.at.elapsed();
    if elapsed < CHECK_EVERY {
        return None;
    }
    // Requests since the last check; a replica that restarted counts from zero.
    let served: u64 = counts
        .iter()
        .map(|(device, now)| {
            let before = load.counts.get(device).copied().unwrap_or(0);
            if *now >= before { now - before } else { *now }
        })
        .sum();
    load.counts = counts;
    load.at = Instant::now();
    if served > 0 {
        load.active = Instant::now();
    }
    if replicas == 0 {
        return None;
    }
    let per_replica = served as f64 / elapsed.as_secs_f64() / replicas as f64;
    if per_replica > settings.target_rps {
        load.above += 1;
        load.below = 0;
    } else if per_replica < settings.target_rps / 2.0 {
        load.below += 1;
        load.above = 0;
    } else {
        load.above = 0;
        load.below = 0;
    }
    if settings.min == 0
        && settings.idle_s > 0
        && load.active.elapsed() >= Duration::from_secs(settings.idle_s)
    {
        load.above = 0;
        load.below = 0;
        return Some(Decision {
            replicas: 0,
            reason: format!("scaled to zero: no request for {} s", settings.idle_s),
        });
    }
    if load.above >= OUT_AFTER && replicas < settings.max {
        load.above = 0;
        return Some(Decision {
            replicas: replicas + 1,
            reason: format!(
                "scaled out to {}: {per_replica:.1} req/s per replica > target {}",
                replicas + 1,
                settings.target_rps
            ),
        });
    }
    if load.below >= IN_AFTER && replicas > settings.min.max(1) {
        load.below = 0;
        return Some(Decision {
            replicas: replicas - 1,
            reason: format!(
                "scaled in to {}: {per_replica:.1} req/s per replica < half the target {}",
                replicas - 1,
                settings.target_rps
            ),
        });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Autoscale {
        Autoscale {
            min: 0,
            max: 3,
            target_rps: 10.0,
            idle_s: 2,
        }
    }

    /// Pretend `seconds` passed since the last check.
    fn age(load: &mut AppLoad, seconds: f64) {
        load.at = Instant::now() - Duration::from_secs_f64(seconds);
    }

    #[test]
    fn bursts_scale_out_quiet_scales_in_idle_parks() {
        let s = settings();
        let mut load = AppLoad::new(HashMap::from([("d1".to_string(), 0)]));
        let mut served = 0;
        let mut replicas = 1;
        // 30 req/s on one replica: out after three checks, not before.
        for round in 1..=3 {
            served += 30;
            age(&mut load, 1.0);
            let decision = check(
                &mut load,
                &s,
                replicas,
                HashMap::from([("d1".into(), served)]),
            );
            if round < 3 {
                assert_eq!(decision, None);
            } else {
                replicas = decision.expect("scaled out").replicas;
            }
        }
        assert_eq!(replicas, 2);
        // Never above max.
        let mut capped = 3;
        for _ in 0..5 {
            served += 100;
            age(&mut load, 1.0);
            if let Some(d) = check(
                &mut load,
                &s,
                capped,
                HashMap::from([("d1".into(), served)]),
            ) {
                capped = d.replicas;
            }
        }
        assert_eq!(capped, 3);
        // 2 req/s on two replicas (1 per replica < 5): in after ten checks.
        let mut decisions = Vec::new();
        for _ in 0..10 {
            served += 2;
            age(&mut load, 1.0);
            decisions.push(check(
                &mut load,
                &s,
                2,
                HashMap::from([("d1".into(), served)]),
            ));
        }
        assert!(decisions[..9].iter().all(Option::is_none));
        assert_eq!(decisions[9].as_ref().unwrap().replicas, 1);
        // Nothing at all for idle_s: zero.
        load.active = Instant::now() - Duration::from_secs(3);
        age(&mut load, 1.0);
        let parked = check(&mut load, &s, 1, HashMap::from([("d1".into(), served)])).unwrap();
        assert_eq!(parked.replicas, 0);
        assert!(parked.reason.contains("zero"));
        // A restarted replica's count starting over is not a negative rate.
        age(&mut load, 1.0);
        assert_eq!(
            check(&mut load, &s, 1, HashMap::from([("d1".into(), 1)])),
            None
        );
    }

    #[test]
    fn settings_are_validated() {
        assert!(settings().validate().is_ok());
        let no_idle = Autoscale {
            idle_s: 0,
            ..settings()
        };
        assert!(no_idle.validate().unwrap_err().contains("idle"));
        let inverted = Autoscale {
            min: 4,
            max: 2,
            ..settings()
        };
        assert!(inverted.validate().is_err());
        let zero_target = Autoscale {
            target_rps: 0.0,
            ..settings()
        };
        assert!(zero_target.validate().is_err());
    }
}
