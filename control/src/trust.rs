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
//!   for work it did not meter); [`WRONG_CANARY_COST_S`] per spot check answered wrongly (the
//!   device's canary, a component whose answers the control plane computes itself, answered
//!   something else: the device corrupts what it serves) and [`UNANSWERED_CANARY_COST_S`] per
//!   spot check it did not answer at all.
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
//! period or a wrong canary answer costs a day of good standing at once (trust falls below 0.1:
//! the device loses every replica, whatever its tier, and needs days to recover). Requests a device failed are not counted yet:
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
/// Seconds of good standing a wrong answer to a spot check costs: as much as a refused ledger
/// period, since both show the device cheats or is broken.
pub const WRONG_CANARY_COST_S: f64 = 86_400.0;
/// Seconds of good standing an unanswered spot check costs: like a missed heartbeat, since a
/// device may stop serving for honest reasons between the check's issue and its delivery.
pub const UNANSWERED_CANARY_COST_S: f64 = 60.0;

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
    /// Spot checks answered rightly, ever.
    pub canary_right: u64,
    /// Spot checks answered wrongly, ever.
    pub canary_wrong: u64,
    /// Spot checks not answered, ever.
    pub canary_unanswered: u64,
    /// Unix ms of the last wrong answer, 0 for none.
    pub canary_wrong_ms: u64,
    /// Unix ms of the last unanswered check, 0 for none.
    pub canary_unanswered_ms: u64,
}

/// [`Evidence`] as written before spot checks existed: records in this layout are read and
/// completed with no checks.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EvidenceV1 {
    /// See [`Evidence::good_s`].
    pub good_s: f64,
    /// See [`Evidence::bad_s`].
    pub bad_s: f64,
    /// See [`Evidence::decayed_ms`].
    pub decayed_ms: u64,
    /// See [`Evidence::uptime_s`].
    pub uptime_s: f64,
    /// See [`Evidence::missed_heartbeats`].
    pub missed_heartbeats: u64,
    /// See [`Evidence::refused_periods`].
    pub refused_periods: u64,
}

impl From<EvidenceV1> for Evidence {
    fn from(old: EvidenceV1) -> Evidence {
        Evidence {
            good_s: old.good_s,
            bad_s: old.bad_s,
            decayed_ms: old.decayed_ms,
            uptime_s: old.uptime_s,
            missed_heartbeats: old.missed_heartbeats,
            refused_periods: old.refused_periods,
            ..Evidence::default()
        }
    }
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

    /// The outcome of one spot check of the device, at `now_ms`.
    pub fn canary(
        &mut self,
        now_ms: u64,
        verdict: fog_proto::canary::Verdict,
        config: &TrustConfig,
    ) {
        use fog_proto::canary::Verdict;
        self.decay(now_ms, config);
        match verdict {
            Verdict::Right => self.canary_right += 1,
            Verdict::Wrong => {
                self.bad_s += WRONG_CANARY_COST_S;
                self.canary_wrong += 1;
                self.canary_wrong_ms = now_ms;
            }
            Verdict::Unanswered => {
                self.bad_s += UNANSWERED_CANARY_COST_S;
                self.canary_unanswered += 1;
                self.canary_unanswered_ms = now_ms;
            }
        }
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
        if self.canary_wrong > 0 {
            out.push(format!(
                "canary: wrong answer at {} ({} of {} checks wrong)",
                utc(self.canary_wrong_ms),
                self.canary_wrong,
                self.canary_checks()
            ));
        }
        if self.canary_unanswered > 0 {
            out.push(format!(
                "canary: no answer at {} ({} of {} checks unanswered)",
                utc(self.canary_unanswered_ms),
                self.canary_unanswered,
                self.canary_checks()
            ));
        }
        if self.canary_right > 0 && self.canary_right == self.canary_checks() {
            out.push(format!("canary: {} checks right", self.canary_right));
        }
        if self.good_s + self.bad_s < config.prior_weight_s {
            out.push(format!("new (started at {})", config.prior));
        }
        out
    }
}

impl Evidence {
    /// Spot checks judged, ever.
    pub fn canary_checks(&self) -> u64 {
        self.canary_right + self.canary_wrong + self.canary_unanswered
    }
}

/// Read a device's saved evidence, in this layout or the one before spot checks.
pub(crate) fn decode_evidence(
    device: &str,
    bytes: &[u8],
) -> Result<Evidence, crate::store::StoreError> {
    use crate::store::{Table, decode};
    decode::<Evidence>(Table::Trust, device, bytes).or_else(|new_layout| {
        decode::<EvidenceV1>(Table::Trust, device, bytes)
            .map(Evidence::from)
            .map_err(|_| new_layout)
    })
}

/// `2026-11-30 16:41:07 UTC` for unix ms.
fn utc(ms: u64) -> String {
    chrono::DateTime::<chrono::Utc>::from_timestamp_millis(ms as i64).map_or_else(
        || format!("{ms} ms"),
        |t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
    )
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
    fn a_wrong_canary_answer_drops_an_established_device_below_every_tier_at_once() {
        use fog_proto::canary::Verdict;
        let mut evidence = Evidence::default();
        let now = uptime(&mut evidence, 1_000_000, 3600);
        evidence.canary(now, Verdict::Right, &CONFIG);
        assert!(evidence.trust(&CONFIG) > 0.9);
        // 2026-11-30 16:41:07 UTC.
        let at = 1_796_056_867_000;
        evidence.canary(at, Verdict::Wrong, &CONFIG);
        assert!(
            evidence.trust(&CONFIG) < MIN_TRUST_B,
            "{}",
            evidence.trust(&CONFIG)
        );
        let reasons = evidence.reasons(&CONFIG);
        assert!(
            reasons.contains(
                &"canary: wrong answer at 2026-11-30 16:41:07 UTC (1 of 2 checks wrong)"
                    .to_string()
            ),
            "{reasons:?}"
        );
    }

    #[test]
    fn an_unanswered_canary_costs_a_little_and_is_told_apart_from_a_wrong_one() {
        use fog_proto::canary::Verdict;
        let mut evidence = Evidence::default();
        let now = uptime(&mut evidence, 1_000_000, 3600);
        evidence.canary(now, Verdict::Unanswered, &CONFIG);
        let trust = evidence.trust(&CONFIG);
        assert!(trust > 0.9, "{trust}");
        assert_eq!((evidence.canary_unanswered, evidence.canary_wrong), (1, 0));
        let reasons = evidence.reasons(&CONFIG).join("; ");
        assert!(reasons.contains("canary: no answer at"), "{reasons}");
        assert!(!reasons.contains("wrong"), "{reasons}");
    }

    #[test]
    fn evidence_saved_before_canaries_existed_still_reads() {
        let old = EvidenceV1 {
            good_s: 10.0,
            bad_s: 1.0,
            decayed_ms: 5,
            uptime_s: 10.0,
            missed_heartbeats: 1,
            refused_periods: 0,
        };
        let bytes = crate::store::encode(&old);
        let read = super::decode_evidence("d1", &bytes).unwrap();
        assert_eq!(read, Evidence::from(old));
        let new = Evidence {
            canary_wrong: 2,
            ..read
        };
        assert_eq!(
            super::decode_evidence("d1", &crate::store::encode(&new)).unwrap(),
            new
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
