//! Marketplace prices per CPU-hour, following the reference formulas.
//!
//! A quote starts from a base price per pricing class (spot 0.10, on-demand 0.15, reserved 0.12
//! per CPU-hour) and is multiplied by
//! - demand: `1 + min(2, demand / supply · 0.5)`,
//! - supply: `max(0.5, 1 − supply / demand · 0.2)`,
//! - trust of the device: `1 + 0.5 · trust`,
//! - the app's tier: S 2.0, A 1.5, B 1.0;
//!
//! and a spot *bid* pays 0.8 of the spot quote. Reserved capacity (a Fog addition: the reference
//! names reserved bids but gives no price) is quoted at 0.12, between spot and on-demand, for a
//! commitment to the whole placement period.

use serde::{Deserialize, Serialize};

use crate::placement::Tier;

/// How an app buys CPU time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Pricing {
    /// Interruptible capacity, bid at 0.8 of the quote.
    Spot,
    /// Capacity at the quoted price.
    #[default]
    OnDemand,
    /// Capacity committed for the placement period.
    Reserved,
}

impl Pricing {
    /// Base price per CPU-hour before multipliers.
    pub fn base(self) -> f64 {
        match self {
            Pricing::Spot => 0.10,
            Pricing::OnDemand => 0.15,
            Pricing::Reserved => 0.12,
        }
    }
}

/// The multiplier demand puts on prices: `1 + min(2, demand / supply · 0.5)`.
pub fn demand_multiplier(demand: f64, supply: f64) -> f64 {
    if supply <= 0.0 {
        return 3.0;
    }
    1.0 + (demand / supply * 0.5).min(2.0)
}

/// The multiplier supply puts on prices: `max(0.5, 1 − supply / demand · 0.2)`.
pub fn supply_multiplier(demand: f64, supply: f64) -> f64 {
    if demand <= 0.0 {
        return 0.5;
    }
    (1.0 - supply / demand * 0.2).max(0.5)
}

/// The multiplier a device's trust puts on its price: `1 + 0.5 · trust`.
pub fn trust_multiplier(trust: f64) -> f64 {
    1.0 + 0.5 * trust.clamp(0.0, 1.0)
}

/// What an app of `tier` pays per CPU-hour on a device with `trust`, when `demand` CPUs are asked
/// for and `supply` CPUs are offered.
pub fn price_per_cpu_hour(
    pricing: Pricing,
    tier: Tier,
    demand: f64,
    supply: f64,
    trust: f64,
) -> f64 {
    let quote = pricing.base()
        * demand_multiplier(demand, supply)
        * supply_multiplier(demand, supply)
        * trust_multiplier(trust)
        * tier.price_multiplier();
    match pricing {
        Pricing::Spot => quote * 0.8,
        Pricing::OnDemand | Pricing::Reserved => quote,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn multipliers_follow_the_reference_formulas() {
        assert!(close(demand_multiplier(10.0, 10.0), 1.5));
        assert!(close(demand_multiplier(100.0, 10.0), 3.0)); // capped at 1 + 2
        assert!(close(demand_multiplier(0.0, 10.0), 1.0));
        assert!(close(supply_multiplier(10.0, 10.0), 0.8));
        assert!(close(supply_multiplier(10.0, 100.0), 0.5)); // floored
        assert!(close(supply_multiplier(100.0, 10.0), 0.98));
        assert!(close(trust_multiplier(0.0), 1.0));
        assert!(close(trust_multiplier(1.0), 1.5));
        assert!(close(trust_multiplier(7.0), 1.5));
    }

    #[test]
    fn prices_combine_base_multipliers_tier_and_spot_discount() {
        // Balanced market, trust 0.6, tier B on demand: 0.15 · 1.5 · 0.8 · 1.3 · 1.0.
        let on_demand = price_per_cpu_hour(Pricing::OnDemand, Tier::B, 10.0, 10.0, 0.6);
        assert!(close(on_demand, 0.15 * 1.5 * 0.8 * 1.3));
        let spot = price_per_cpu_hour(Pricing::Spot, Tier::B, 10.0, 10.0, 0.6);
        assert!(close(spot, 0.10 * 1.5 * 0.8 * 1.3 * 0.8));
        let s = price_per_cpu_hour(Pricing::OnDemand, Tier::S, 10.0, 10.0, 0.6);
        let a = price_per_cpu_hour(Pricing::OnDemand, Tier::A, 10.0, 10.0, 0.6);
        assert!(close(s, on_demand * 2.0));
        assert!(close(a, on_demand * 1.5));
        let reserved = price_per_cpu_hour(Pricing::Reserved, Tier::B, 10.0, 10.0, 0.6);
        assert!(spot < reserved && reserved < on_demand);
    }
}
