//! The harvest policy: whether the device may work now, with a reason for every decision.
//!
//! States: **Off** → **Harvesting** when every rule holds (and any cooldown has passed) →
//! **Draining** when a rule breaks or the session cap is reached (no new replicas; the control
//! plane moves them; in-flight requests finish) → **Off** once nothing runs (or after the drain
//! timeout) → a cooldown before the next session. Entering uses stricter thresholds than staying
//! (battery +5 points, temperature −3 °C) so readings hovering at a threshold never flap.

use serde::{Deserialize, Serialize};

use super::sensors::Reading;

/// The policy's settings (the `[harvest]` section of a host's config). Defaults are the
/// reference thresholds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HarvestConfig {
    /// Work only while charging or on mains.
    pub require_charging: bool,
    /// Lowest battery charge to keep working, [0, 1].
    pub min_battery: f64,
    /// Highest CPU temperature to keep working, °C.
    pub max_temp_c: f64,
    /// Work on a metered network too.
    pub allow_metered: bool,
    /// Seconds the user must have been idle.
    pub min_idle_s: f64,
    /// Treat the user as idle when the device cannot tell (headless servers have no user).
    pub assume_idle_when_unknown: bool,
    /// Optional daily window, local time, e.g. `{ start = "22:00", end = "07:00" }`.
    pub window: Option<Window>,
    /// Share of the CPU cores offered.
    pub max_cpu_share: f64,
    /// Share of the memory offered.
    pub max_mem_share: f64,
    /// Longest session, seconds.
    pub max_session_s: f64,
    /// Rest after a session, seconds.
    pub cooldown_s: f64,
    /// Battery hysteresis: entering needs `min_battery + battery_margin`.
    pub battery_margin: f64,
    /// Temperature hysteresis: entering needs `max_temp_c − temp_margin_c`.
    pub temp_margin_c: f64,
    /// Longest drain before the device stops anyway, seconds.
    pub drain_timeout_s: f64,
}

impl Default for HarvestConfig {
    fn default() -> Self {
        HarvestConfig {
            require_charging: true,
            min_battery: 0.20,
            max_temp_c: 45.0,
            allow_metered: false,
            min_idle_s: 300.0,
            assume_idle_when_unknown: true,
            window: None,
            max_cpu_share: 0.5,
            max_mem_share: 0.3,
            max_session_s: 8.0 * 3600.0,
            cooldown_s: 30.0 * 60.0,
            battery_margin: 0.05,
            temp_margin_c: 3.0,
            drain_timeout_s: 60.0,
        }
    }
}

impl HarvestConfig {
    /// Parse a TOML document with a `[harvest]` section; unknown keys are errors naming the key.
    pub fn from_toml(text: &str) -> Result<HarvestConfig, String> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct File {
            #[serde(default)]
            harvest: HarvestConfig,
        }
        let file: File = toml::from_str(text).map_err(|e| e.to_string())?;
        file.harvest.validate()?;
        Ok(file.harvest)
    }

    /// Check ranges; the message names the key.
    pub fn validate(&self) -> Result<(), String> {
        let share = |name: &str, v: f64| {
            if (0.0..=1.0).contains(&v) {
                Ok(())
            } else {
                Err(format!("{name} must be in [0, 1], got {v}"))
            }
        };
        share("min_battery", self.min_battery)?;
        share("max_cpu_share", self.max_cpu_share)?;
        share("max_mem_share", self.max_mem_share)?;
        for (name, v) in [
            ("min_idle_s", self.min_idle_s),
            ("max_session_s", self.max_session_s),
            ("cooldown_s", self.cooldown_s),
            ("drain_timeout_s", self.drain_timeout_s),
        ] {
            if v.is_nan() || v < 0.0 {
                return Err(format!("{name} must be a non-negative number of seconds"));
            }
        }
        Ok(())
    }
}

/// A daily window in local time; it may wrap past midnight.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Window {
    /// Start, "HH:MM".
    pub start: String,
    /// End, "HH:MM".
    pub end: String,
}

fn minutes(hhmm: &str) -> Option<u32> {
    let (h, m) = hhmm.split_once(':')?;
    let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
    (h < 24 && m < 60).then_some(h * 60 + m)
}

impl Window {
    /// Whether `minute_of_day` (0–1439) falls inside.
    pub fn contains(&self, minute_of_day: u32) -> bool {
        match (minutes(&self.start), minutes(&self.end)) {
            (Some(s), Some(e)) if s <= e => (s..e).contains(&minute_of_day),
            (Some(s), Some(e)) => minute_of_day >= s || minute_of_day < e,
            _ => false,
        }
    }
}

/// Where the device is in its harvest cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Not working.
    Off,
    /// Working: replicas may run here.
    Harvesting,
    /// Stopping: no new replicas, in-flight requests finish.
    Draining,
}

impl State {
    /// The state as a lowercase word (a metric label).
    pub fn as_str(self) -> &'static str {
        match self {
            State::Off => "off",
            State::Harvesting => "harvesting",
            State::Draining => "draining",
        }
    }
}

/// Why the policy decided what it did, as a bounded set (a metric label); the reason text adds
/// the readings and thresholds for people.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Cause {
    /// The harvester has not decided yet.
    #[default]
    Starting,
    /// Every rule holds.
    RulesHold,
    /// The device is not charging.
    NotCharging,
    /// The battery is below the minimum.
    Battery,
    /// The CPU is too hot.
    Temperature,
    /// The network is metered.
    Metered,
    /// The user is active.
    UserActive,
    /// Outside the daily harvest window.
    Window,
    /// Resting after a session.
    Cooldown,
    /// The session cap was reached.
    SessionCap,
    /// Waiting for replicas to move and requests to finish.
    Draining,
    /// Drained.
    Drained,
    /// The drain took too long.
    DrainTimeout,
}

impl Cause {
    /// The cause as a snake_case word (a metric label).
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::Starting => "starting",
            Cause::RulesHold => "rules_hold",
            Cause::NotCharging => "not_charging",
            Cause::Battery => "battery",
            Cause::Temperature => "temperature",
            Cause::Metered => "metered",
            Cause::UserActive => "user_active",
            Cause::Window => "window",
            Cause::Cooldown => "cooldown",
            Cause::SessionCap => "session_cap",
            Cause::Draining => "draining",
            Cause::Drained => "drained",
            Cause::DrainTimeout => "drain_timeout",
        }
    }
}

/// One decision of the policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// The state after this step.
    pub state: State,
    /// Why, as a bounded set.
    #[serde(default)]
    pub cause: Cause,
    /// Why, for people.
    pub reason: String,
    /// CPU cores offered (0 unless harvesting).
    pub cpu_offered: f64,
    /// Memory offered, MiB (0 unless harvesting).
    pub mem_offered_mb: f64,
}

/// The policy and its state.
#[derive(Debug, Clone)]
pub struct Policy {
    config: HarvestConfig,
    state: State,
    session_start: f64,
    drain_start: f64,
    off_since: Option<f64>,
}

impl Policy {
    /// A policy starting Off, with no cooldown pending.
    pub fn new(config: HarvestConfig) -> Policy {
        Policy {
            config,
            state: State::Off,
            session_start: 0.0,
            drain_start: 0.0,
            off_since: None,
        }
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// The first rule that `reading` breaks, with stricter thresholds when `entering`.
    fn broken_rule(
        &self,
        r: &Reading,
        minute_of_day: u32,
        entering: bool,
    ) -> Option<(Cause, String)> {
        let c = &self.config;
        if c.require_charging && !r.charging {
            return Some((Cause::NotCharging, "not charging".into()));
        }
        let min_battery = c.min_battery + if entering { c.battery_margin } else { 0.0 };
        if let Some(battery) = r.battery
            && battery < min_battery
        {
            return Some((
                Cause::Battery,
                format!(
                    "battery {:.0}% below {:.0}%",
                    battery * 100.0,
                    min_battery * 100.0
                ),
            ));
        }
        let max_temp = c.max_temp_c - if entering { c.temp_margin_c } else { 0.0 };
        if let Some(temp) = r.cpu_temp_c
            && temp > max_temp
        {
            return Some((
                Cause::Temperature,
                format!("CPU at {temp:.0} °C above {max_temp:.0} °C"),
            ));
        }
        if r.metered && !c.allow_metered {
            return Some((Cause::Metered, "network is metered".into()));
        }
        let idle = r.user_idle_s.unwrap_or(if c.assume_idle_when_unknown {
            f64::INFINITY
        } else {
            0.0
        });
        if idle < c.min_idle_s {
            return Some((
                Cause::UserActive,
                format!("user active (idle {idle:.0} s of {:.0} s)", c.min_idle_s),
            ));
        }
        if let Some(window) = &c.window
            && !window.contains(minute_of_day)
        {
            return Some((
                Cause::Window,
                format!("outside the harvest window {}–{}", window.start, window.end),
            ));
        }
        None
    }

    /// Advance the policy: `now_s` is a monotonic clock in seconds, `minute_of_day` local time,
    /// `busy` whether replicas are still assigned or requests still in flight.
    pub fn step(
        &mut self,
        reading: &Reading,
        now_s: f64,
        minute_of_day: u32,
        busy: bool,
    ) -> Decision {
        let c = self.config.clone();
        let (cause, reason) = match self.state {
            State::Off => {
                let cooling = self
                    .off_since
                    .map(|off| c.cooldown_s - (now_s - off))
                    .filter(|left| *left > 0.0);
                match (cooling, self.broken_rule(reading, minute_of_day, true)) {
                    (Some(left), _) => (
                        Cause::Cooldown,
                        format!("cooling down after a session ({left:.0} s left)"),
                    ),
                    (None, Some((cause, rule))) => (cause, format!("not harvesting: {rule}")),
                    (None, None) => {
                        self.state = State::Harvesting;
                        self.session_start = now_s;
                        (Cause::RulesHold, "harvesting: every rule holds".to_string())
                    }
                }
            }
            State::Harvesting => {
                if now_s - self.session_start >= c.max_session_s {
                    self.state = State::Draining;
                    self.drain_start = now_s;
                    (
                        Cause::SessionCap,
                        format!("draining: session cap of {:.0} s reached", c.max_session_s),
                    )
                } else if let Some((cause, rule)) = self.broken_rule(reading, minute_of_day, false)
                {
                    self.state = State::Draining;
                    self.drain_start = now_s;
                    (cause, format!("draining: {rule}"))
                } else {
                    (Cause::RulesHold, "harvesting: every rule holds".to_string())
                }
            }
            State::Draining => {
                if !busy {
                    self.state = State::Off;
                    self.off_since = Some(now_s);
                    (Cause::Drained, "off: drained".to_string())
                } else if now_s - self.drain_start >= c.drain_timeout_s {
                    self.state = State::Off;
                    self.off_since = Some(now_s);
                    (
                        Cause::DrainTimeout,
                        format!("off: drain timeout of {:.0} s", c.drain_timeout_s),
                    )
                } else {
                    (
                        Cause::Draining,
                        "draining: waiting for replicas to move and requests to finish".to_string(),
                    )
                }
            }
        };
        let harvesting = self.state == State::Harvesting;
        Decision {
            state: self.state,
            cause,
            reason,
            cpu_offered: if harvesting {
                reading.cpus as f64 * c.max_cpu_share
            } else {
                0.0
            },
            mem_offered_mb: if harvesting {
                reading.mem_total_mb * c.max_mem_share
            } else {
                0.0
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good() -> Reading {
        Reading {
            battery: Some(0.8),
            charging: true,
            cpu_temp_c: Some(35.0),
            cpus: 4,
            mem_total_mb: 8192.0,
            user_idle_s: Some(900.0),
            ..Reading::default()
        }
    }

    fn quick() -> HarvestConfig {
        HarvestConfig {
            cooldown_s: 100.0,
            max_session_s: 1000.0,
            drain_timeout_s: 30.0,
            ..HarvestConfig::default()
        }
    }

    #[test]
    fn every_rule_blocks_with_its_reason() {
        let cases: Vec<(Reading, &str)> = vec![
            (
                Reading {
                    charging: false,
                    ..good()
                },
                "not charging",
            ),
            (
                Reading {
                    battery: Some(0.1),
                    ..good()
                },
                "battery 10% below 25%",
            ),
            (
                Reading {
                    cpu_temp_c: Some(50.0),
                    ..good()
                },
                "CPU at 50 °C above 42 °C",
            ),
            (
                Reading {
                    metered: true,
                    ..good()
                },
                "network is metered",
            ),
            (
                Reading {
                    user_idle_s: Some(10.0),
                    ..good()
                },
                "user active (idle 10 s of 300 s)",
            ),
        ];
        for (reading, reason) in cases {
            let mut policy = Policy::new(quick());
            let d = policy.step(&reading, 0.0, 0, false);
            assert_eq!(d.state, State::Off);
            assert!(
                d.reason.contains(reason),
                "{} does not say {reason}",
                d.reason
            );
            assert_eq!(d.cpu_offered, 0.0);
        }
        let window = HarvestConfig {
            window: Some(Window {
                start: "22:00".into(),
                end: "07:00".into(),
            }),
            ..quick()
        };
        let mut policy = Policy::new(window);
        assert!(
            policy
                .step(&good(), 0.0, 12 * 60, false)
                .reason
                .contains("outside the harvest window 22:00–07:00")
        );
        assert_eq!(
            policy.step(&good(), 1.0, 23 * 60, false).state,
            State::Harvesting
        );
    }

    #[test]
    fn a_full_cycle_offers_capped_capacity_then_drains_and_cools_down() {
        let mut policy = Policy::new(quick());
        let d = policy.step(&good(), 0.0, 0, false);
        assert_eq!(d.state, State::Harvesting);
        assert_eq!((d.cpu_offered, d.mem_offered_mb), (2.0, 8192.0 * 0.3));
        let unplugged = Reading {
            charging: false,
            ..good()
        };
        let d = policy.step(&unplugged, 10.0, 0, true);
        assert_eq!(
            (d.state, d.reason.as_str()),
            (State::Draining, "draining: not charging")
        );
        assert_eq!(d.cpu_offered, 0.0);
        assert_eq!(
            policy.step(&unplugged, 11.0, 0, true).state,
            State::Draining,
            "busy: still draining"
        );
        assert_eq!(policy.step(&unplugged, 12.0, 0, false).state, State::Off);
        // Plugged back in: cooldown first.
        let d = policy.step(&good(), 50.0, 0, false);
        assert_eq!(d.state, State::Off);
        assert!(d.reason.contains("cooling down"), "{}", d.reason);
        assert_eq!(
            policy.step(&good(), 113.0, 0, false).state,
            State::Harvesting
        );
    }

    #[test]
    fn hysteresis_holds_under_flapping_readings() {
        let mut policy = Policy::new(quick());
        // Battery hovering at 21–24 %: never enters (needs 25 %).
        for (i, level) in [0.21, 0.24, 0.22, 0.24, 0.23].into_iter().enumerate() {
            let r = Reading {
                battery: Some(level),
                ..good()
            };
            assert_eq!(policy.step(&r, i as f64, 0, false).state, State::Off);
        }
        // At 26 % it enters, and hovering at 20–24 % never drops it.
        assert_eq!(
            policy
                .step(
                    &Reading {
                        battery: Some(0.26),
                        ..good()
                    },
                    10.0,
                    0,
                    false
                )
                .state,
            State::Harvesting
        );
        for (i, level) in [0.21, 0.24, 0.20, 0.23, 0.22].into_iter().enumerate() {
            let r = Reading {
                battery: Some(level),
                ..good()
            };
            assert_eq!(
                policy.step(&r, 11.0 + i as f64, 0, false).state,
                State::Harvesting
            );
        }
        // Temperature 43–45 °C likewise stays harvesting.
        for (i, t) in [43.0, 45.0, 44.0].into_iter().enumerate() {
            let r = Reading {
                cpu_temp_c: Some(t),
                ..good()
            };
            assert_eq!(
                policy.step(&r, 20.0 + i as f64, 0, false).state,
                State::Harvesting
            );
        }
        assert_eq!(
            policy
                .step(
                    &Reading {
                        cpu_temp_c: Some(46.0),
                        ..good()
                    },
                    30.0,
                    0,
                    false
                )
                .state,
            State::Draining
        );
    }

    #[test]
    fn sessions_are_capped_and_drains_time_out() {
        let mut policy = Policy::new(quick());
        assert_eq!(policy.step(&good(), 0.0, 0, false).state, State::Harvesting);
        assert_eq!(
            policy.step(&good(), 999.0, 0, true).state,
            State::Harvesting
        );
        let d = policy.step(&good(), 1000.0, 0, true);
        assert_eq!(
            (d.state, d.reason.as_str()),
            (State::Draining, "draining: session cap of 1000 s reached")
        );
        assert_eq!(policy.step(&good(), 1029.0, 0, true).state, State::Draining);
        let d = policy.step(&good(), 1030.0, 0, true);
        assert_eq!(
            (d.state, d.reason.as_str()),
            (State::Off, "off: drain timeout of 30 s")
        );
    }

    #[test]
    fn config_is_strict_toml_and_defaults_match_the_reference() {
        assert_eq!(
            HarvestConfig::from_toml("").unwrap(),
            HarvestConfig::default()
        );
        let example = include_str!("../../harvest.example.toml");
        assert_eq!(
            HarvestConfig::from_toml(example).unwrap(),
            HarvestConfig::default()
        );
        let err = HarvestConfig::from_toml("[harvest]\nmin_batery = 0.3\n").unwrap_err();
        assert!(err.contains("min_batery"), "{err}");
        let err = HarvestConfig::from_toml("[harvest]\nmax_cpu_share = 2.0\n").unwrap_err();
        assert!(err.contains("max_cpu_share"), "{err}");
        let custom = HarvestConfig::from_toml(
            "[harvest]\nmin_idle_s = 0\nwindow = { start = \"22:00\", end = \"07:00\" }\n",
        )
        .unwrap();
        assert_eq!(custom.min_idle_s, 0.0);
        assert!(custom.window.unwrap().contains(2 * 60));
    }
}
