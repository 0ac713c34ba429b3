//! What the scheduler knows: devices, the apps' demands and the current placement.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::market::Pricing;

pub use fog_proto::api::Tier;

/// One device as the control plane last heard of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Device {
    /// Stable device id.
    pub id: String,
    /// CPU cores the device offers in total, and free now.
    pub cpu_capacity: f64,
    /// CPU cores free for new replicas.
    pub cpu_free: f64,
    /// Memory offered in total, MiB.
    pub mem_capacity_mb: f64,
    /// Memory free for new replicas, MiB.
    pub mem_free_mb: f64,
    /// Disk free for components and state, MiB.
    pub disk_free_mb: f64,
    /// Whether the harvest policy allows running replicas now.
    pub harvestable: bool,
    /// Whether the device answers and reports no fault.
    pub healthy: bool,
    /// Seconds since its last heartbeat.
    pub heartbeat_age_s: f64,
    /// Battery level in [0, 1]; `None` for mains power.
    pub battery: Option<f64>,
    /// Whether it is charging (mains-powered devices count as charging).
    pub charging: bool,
    /// CPU temperature, °C.
    pub temperature_c: f64,
    /// Region name.
    pub region: String,
    /// Round-trip latency to the routers, ms.
    pub latency_ms: f64,
    /// Bandwidth to the routers, Mbit/s.
    pub bandwidth_mbps: f64,
    /// Trust in [0, 1] (history of honest metering and uptime).
    pub trust: f64,
    /// Owner's asking price per CPU-hour, before market multipliers (0 = market base).
    pub price_cpu_hour: f64,
    /// Price per GB-hour of memory.
    pub price_gb_hour: f64,
}

impl Device {
    /// Current utilisation of its CPU in [0, 1].
    pub fn load(&self) -> f64 {
        if self.cpu_capacity <= 0.0 {
            return 1.0;
        }
        ((self.cpu_capacity - self.cpu_free) / self.cpu_capacity).clamp(0.0, 1.0)
    }
}

/// What an app needs from the fog.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppDemand {
    /// App id.
    pub id: String,
    /// CPU cores per replica.
    pub cpu: f64,
    /// Memory per replica, MiB.
    pub mem_mb: f64,
    /// Component size, MiB (disk and transfer to a new device).
    pub component_mb: f64,
    /// Service tier.
    pub tier: Tier,
    /// Replicas wanted; `None` means the tier's count.
    pub replicas: Option<u32>,
    /// How it buys CPU time.
    pub pricing: Pricing,
    /// Highest price per CPU-hour it accepts.
    pub max_price: Option<f64>,
    /// Lowest device trust it accepts.
    pub min_trust: f64,
    /// Region it would rather run in (soft: other regions cost latency).
    pub region_preference: Option<String>,
    /// Devices it must not run on.
    pub excluded_devices: Vec<String>,
}

impl AppDemand {
    /// A tier-`tier` app with the reference defaults (min trust 0.3, on-demand, no limits).
    pub fn new(id: impl Into<String>, cpu: f64, mem_mb: f64, tier: Tier) -> Self {
        AppDemand {
            id: id.into(),
            cpu,
            mem_mb,
            component_mb: 1.0,
            tier,
            replicas: None,
            pricing: Pricing::OnDemand,
            max_price: None,
            min_trust: 0.3,
            region_preference: None,
            excluded_devices: Vec::new(),
        }
    }

    /// Replicas to place.
    pub fn replica_count(&self) -> u32 {
        self.replicas.unwrap_or_else(|| self.tier.replicas())
    }
}

/// Which devices run each app's replicas: app id → device ids.
pub type Assignment = BTreeMap<String, Vec<String>>;

/// Which algorithm chooses the placement. NSGA-II is Fog's; the greedy baseline exists to compare
/// it with on the same inputs (`benches/visitor_latency.sh`), not to run a fog on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PlacementStrategy {
    /// NSGA-II seeded with the current and the greedy placement, then the per-tier pick and the
    /// hysteresis that keeps the current placement (see [`super::plan`]).
    #[default]
    Nsga2,
    /// The greedy baseline alone: first-fit decreasing in device order, blind to latency, trust,
    /// price and energy, with no hysteresis. For benchmarks and comparisons only.
    Greedy,
}

/// Settings of a placement run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PlacementConfig {
    /// A device whose last heartbeat is older than this is not used, s.
    pub max_heartbeat_age_s: f64,
    /// Share of a region's CPU that tier-S replicas may take.
    pub tier_s_region_share: f64,
    /// NSGA-II population.
    pub population: usize,
    /// NSGA-II generations.
    pub generations: usize,
    /// Seed.
    pub seed: u64,
    /// Repair infeasible children (else only penalise them through constraint violation).
    pub repair: bool,
    /// Keep the current placement unless the best candidate's score is better by this much
    /// (scores are normalised to [0, 1]).
    pub min_gain: f64,
    /// Latency added when a replica runs outside the app's preferred region, ms.
    pub off_region_penalty_ms: f64,
    /// The algorithm (default NSGA-II; greedy only to compare with it).
    pub strategy: PlacementStrategy,
}

impl Default for PlacementConfig {
    fn default() -> Self {
        PlacementConfig {
            max_heartbeat_age_s: 30.0,
            tier_s_region_share: 0.3,
            population: 100,
            generations: 100,
            seed: 1,
            repair: true,
            min_gain: 0.05,
            off_region_penalty_ms: 40.0,
            strategy: PlacementStrategy::Nsga2,
        }
    }
}
