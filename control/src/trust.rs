//! Trust earned by behaviour: the evidence the control plane keeps of each device and the
//! formula that turns it into the trust placement filters and weighs.
//!
//! Anyone can run `fog host`, so a device is trusted only as far as it has behaved. Evidence is
//! counted in seconds of good standing:
//!
//! - **good** `G`: seconds the device was heard from (heartbeats no further apart than the
//!   liveness window) while it announced itself harvestable — uptime against the availability
//!   it announced;
//! - **bad** `B`: [`MISSED_HEARTBEAT_COST_S`] per heartbeat missed while it announced itself
//!   harvestable (it vanished without draining first), at most [`MISSED_EPISODE_CAP_S`] per
//!   absence; and [`REFUSED_PERIOD_COST_S`] per ledger period the control plane refused (bad
//!   signature, wrong device or arithmetic that does not add up: the device tried to be paid
//!   for work it did not meter).
//!
//! Both decay with a half-life ([`TrustConfig::half_life_s`], a day by default), so old
//! behaviour counts less than recent behaviour and a device that stops contributing drifts
//! back to the prior. Trust is a Beta-style estimate pulled toward a low prior:
//!
//! ```text
//! trust = (prior · W + G) / (W + G + B)
//! ```
//!
//! with `prior` 0.2 and prior weight `W` 60 s by default. A new device starts at the prior,
//! below the 0.3 that tiers S and A need, and reaches 0.3 after about `W / 7` ≈ 9 s of
//! harvestable uptime, 0.5 after `0.6 W` ≈ 36 s, 0.9 after `7 W` ≈ 7 min; a refused ledger
//! period costs a day of good standing at once. Requests a device failed are not counted yet:
//! hosts report failures of the guest (its fuel, its traps) that are the app's doing, and
//! routers do not report the device failures they see.

use serde::{Deserialize, Serialize};

/// Least trust a device needs for tier S and A replicas (the reference minimum).
pub const MIN_TRUST: f64 = 0.3;
/// Least trust a device needs for tier-B (best effort) replicas: a new device (at the prior)
/// may run them at once, one caught cheating on its ledger may not.
pub const MIN_TRUST_B: f64 = 0.1;

/// Seconds of good standing one missed heartbeat costs (while the device announced itself
/// harvestable).
pub const MISSED_HEARTBEAT_COST_S: f64 = 60.0;
/// Most one absence (one run of missed heartbeats) costs, s.
pub const MISSED_EPISODE_CAP_S: f64 = 3600.0;
/// Seconds of good standing a refused ledger period costs.
pub const REFUSED_PERIOD_COST_S: f64 = 86_400.0;

/// The trust formula's parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrustConfig {
    /// Trust of a device with no evidence, and what trust decays toward.
    pub prior: f64,
    /// Weight of the prior, in seconds of evidence.
    pub prior_weight_s: f64,
    /// Half-life of evidence, s.
    pub half_life_s: f64,
}

impl Default for TrustConfig {
    fn default() -> Self {
        TrustConfig {
            prior: 0.2,
            prior_weight_s: 60.0,
            half_life_s: 86_400.0,
        }
    }
}

/// What the control plane has seen a device do: decayed evidence for the formula, and plain
/// counts for people. Persisted (table `trust`), so trust outlives a control plane restart.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    /// Decayed good evidence `G`, s.
    pub good_s: f64,
    /// Decayed bad evidence `B`, s.
    pub bad_s: f64,
    /// Unix ms the decay was last applied.
    pub decayed_ms: u64,
    /// Harvestable uptime ever counted, s (not decayed).
    pub uptime_s: f64,
    /// Heartbeats missed while harvestable, ever.
    pub missed_heartbeats: u64,
    /// Ledger periods refused, ever.
    pub refused_periods: u64,
}

impl Evidence {
    /// Apply decay up to `now_ms`.
    pub fn decay(&mut self, now_ms: u64, config: &TrustConfig) {
        if self.decayed_ms == 0 {
            self.decayed_ms = now_ms;
            return;
        }
        let dt = now_ms.saturating_sub(self.decayed_ms) as f64 / 1000.0;
        if dt > 0.0 && config.half_life_s > 0.0 {
            let factor = 0.5f64.powf(dt / config.half_life_s);
            self.good_s *= factor;
            self.bad_s *= factor;
        }
        self.decayed_ms = self.decayed_ms.max(now_ms);
    }

    /// The device was heard from `gap_s` after its previous heartbeat, which announced it
    /// `harvestable`; a gap beyond `window_s` means it missed heartbeats (one per `interval_s`
    /// past the first).
    pub fn heard(
        &mut self,
        now_ms: u64,
        gap_s: f64,
        was_harvestable: bool,
        interval_s: f64,
        window_s: f64,
        config: &TrustConfig,
    ) {
        self.decay(now_ms, config);
        if !was_harvestable || !gap_s.is_finite() || gap_s < 0.0 {
            return;
        }
        if gap_s <= window_s {
            self.good_s += gap_s;
            self.uptime_s += gap_s;
        } else {
            let missed = ((gap_s / interval_s.max(1e-3)).floor() - 1.0).max(1.0);
            self.bad_s += (missed * MISSED_HEARTBEAT_COST_S).min(MISSED_EPISODE_CAP_S);
            self.missed_heartbeats += missed as u64;
        }
    }

    /// The control plane refused one of the device's ledger periods.
    pub fn refused_period(&mut self, now_ms: u64, config: &TrustConfig) {
        self.decay(now_ms, config);
        self.bad_s += REFUSED_PERIOD_COST_S;
        self.refused_periods += 1;
    }

    /// Trust in [0, 1]: `(prior · W + G) / (W + G + B)`.
    pub fn trust(&self, config: &TrustConfig) -> f64 {
        let w = config.prior_weight_s.max(0.0);
        let denominator = w + self.good_s + self.bad_s;
        if denominator <= 0.0 {
            return config.prior;
        }
        ((config.prior * w + self.good_s) / denominator).clamp(0.0, 1.0)
    }

    /// What the trust is made of, one phrase each.
    pub fn reasons(&self, config: &TrustConfig) -> Vec<String> {
        let mut out = vec![format!(
            "{} of harvestable uptime",
            human_duration(self.uptime_s)
        )];
        if self.missed_heartbeats > 0 {
            out.push(format!(
                "{} heartbeats missed while harvestable",
                self.missed_heartbeats
            ));
        }
        if self.refused_periods > 0 {
            out.push(format!("{} ledger periods refused", self.refused_periods));
        }
        if self.good_s + self.bad_s < config.prior_weight_s {
            out.push(format!("new (started at {})", config.prior));
        }
        out
    }
}

/// `90 s`, `12 min`, `3.5 h`, `2.0 d`.
fn human_duration(s: f64) -> String {
    if s < 120.0 {
        format!("{s:.0} s")
    } else if s < 7200.0 {
        format!("{:.0} min", s / 60.0)
    } else if s < 172_800.0 {
        format!("{:.1} h", s / 3600.0)
    } else {
        format!("{:.1} d", s / 86_400.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: TrustConfig = TrustConfig {
        prior: 0.2,
        prior_weight_s: 60.0,
        half_life_s: 86_400.0,
    };

    /// `seconds` of heartbeats 1 s apart, announced harvestable, from `start_ms`.
    fn uptime(evidence: &mut Evidence, start_ms: u64, seconds: u64) -> u64 {
        for i in 1..=seconds {
            evidence.heard(start_ms + i * 1000, 1.0, true, 1.0, 3.0, &CONFIG);
        }
        start_ms + seconds * 1000
    }

    #[test]
    fn a_new_device_starts_below_tier_s_and_earns_it_with_uptime() {
        let mut evidence = Evidence::default();
        assert_eq!(evidence.trust(&CONFIG), 0.2);
        let now = uptime(&mut evidence, 1_000_000, 5);
        assert!(evidence.trust(&CONFIG) < 0.3, "{}", evidence.trust(&CONFIG));
        uptime(&mut evidence, now, 10);
        assert!(
            evidence.trust(&CONFIG) >= 0.3,
            "{}",
            evidence.trust(&CONFIG)
        );
        assert!(evidence.reasons(&CONFIG)[0].contains("15 s"));
    }

    #[test]
    fn uptime_while_not_harvestable_earns_nothing() {
        let mut evidence = Evidence::default();
        for i in 1..=100 {
            evidence.heard(1_000_000 + i * 1000, 1.0, false, 1.0, 3.0, &CONFIG);
        }
        assert_eq!(evidence.trust(&CONFIG), 0.2);
    }

    #[test]
    fn vanishing_while_harvestable_costs_trust_and_is_counted() {
        let mut evidence = Evidence::default();
        let now = uptime(&mut evidence, 1_000_000, 600);
        let before = evidence.trust(&CONFIG);
        // Back after 30 s of silence: 29 heartbeats missed.
        evidence.heard(now + 30_000, 30.0, true, 1.0, 3.0, &CONFIG);
        assert_eq!(evidence.missed_heartbeats, 29);
        let after = evidence.trust(&CONFIG);
        assert!(after < 0.3 && after < before, "{before} -> {after}");
    }

    #[test]
    fn a_refused_ledger_period_drops_an_established_device_below_tier_s_at_once() {
        let mut evidence = Evidence::default();
        let now = uptime(&mut evidence, 1_000_000, 3600);
        assert!(evidence.trust(&CONFIG) > 0.9);
        evidence.refused_period(now, &CONFIG);
        assert!(evidence.trust(&CONFIG) < 0.3, "{}", evidence.trust(&CONFIG));
        assert!(
            evidence
                .reasons(&CONFIG)
                .contains(&"1 ledger periods refused".to_string())
        );
    }

    #[test]
    fn evidence_decays_so_trust_drifts_back_to_the_prior() {
        let mut evidence = Evidence::default();
        let now = uptime(&mut evidence, 1_000_000, 3600);
        let high = evidence.trust(&CONFIG);
        evidence.decay(now + 30 * 86_400_000, &CONFIG);
        let later = evidence.trust(&CONFIG);
        assert!(
            later < high && (later - 0.2).abs() < 0.05,
            "{high} -> {later}"
        );
    }
}
