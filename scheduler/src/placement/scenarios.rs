//! Synthetic fleets for tests and benchmarks: devices of several kinds (phones, laptops, home
//! servers) across regions, and a mix of apps of every tier, all drawn from a seed.

use super::model::{AppDemand, Device, Tier};
use crate::market::Pricing;
use crate::nsga2::Rand;

const REGIONS: [&str; 5] = ["eu-west", "eu-north", "us-east", "us-west", "ap-south"];

/// `n` devices drawn from `seed`; about 10 % are not usable (unhealthy, not harvestable or
/// silent) so that filters matter.
pub fn devices(n: usize, seed: u64) -> Vec<Device> {
    let mut rng = Rand::new(seed);
    (0..n)
        .map(|i| {
            let kind = rng.below(3);
            let (cpu, mem, battery) = match kind {
                0 => (
                    2.0 + rng.below(3) as f64,
                    2048.0 + 1024.0 * rng.below(3) as f64,
                    Some(0.2 + 0.8 * rng.uniform()),
                ),
                1 => (
                    4.0 + 2.0 * rng.below(3) as f64,
                    8192.0 + 4096.0 * rng.below(2) as f64,
                    Some(0.3 + 0.7 * rng.uniform()),
                ),
                _ => (
                    8.0 + 4.0 * rng.below(3) as f64,
                    16384.0 + 16384.0 * rng.below(2) as f64,
                    None,
                ),
            };
            let used = rng.uniform() * 0.6;
            let usable = rng.uniform();
            Device {
                id: format!("dev-{i:05}"),
                cpu_capacity: cpu,
                cpu_free: cpu * (1.0 - used),
                mem_capacity_mb: mem,
                mem_free_mb: mem * (1.0 - used),
                disk_free_mb: 2048.0 + 4096.0 * rng.uniform(),
                harvestable: usable > 0.04,
                healthy: !(0.04..0.07).contains(&usable),
                heartbeat_age_s: if (0.07..0.10).contains(&usable) {
                    120.0
                } else {
                    15.0 * rng.uniform()
                },
                battery,
                charging: battery.is_none() || rng.chance(0.9),
                temperature_c: 25.0 + 25.0 * rng.uniform(),
                region: REGIONS[rng.below(REGIONS.len())].to_string(),
                latency_ms: 5.0 + 95.0 * rng.uniform(),
                bandwidth_mbps: 10.0 + 490.0 * rng.uniform(),
                trust: 0.2 + 0.8 * rng.uniform(),
                price_cpu_hour: 0.10 + 0.10 * rng.uniform(),
                price_gb_hour: 0.005 + 0.01 * rng.uniform(),
            }
        })
        .collect()
}

/// Apps whose replicas add up to about `replicas`, drawn from `seed`: 20 % tier S, 30 % tier A,
/// 50 % tier B.
pub fn apps(replicas: usize, seed: u64) -> Vec<AppDemand> {
    let mut rng = Rand::new(seed ^ 0xA995);
    let mut out = Vec::new();
    let mut total = 0;
    while total < replicas {
        let tier = match rng.below(10) {
            0 | 1 => Tier::S,
            2..=4 => Tier::A,
            _ => Tier::B,
        };
        let mut app = AppDemand::new(
            format!("app-{:04}", out.len()),
            [0.1, 0.25, 0.5, 1.0][rng.below(4)],
            [64.0, 128.0, 256.0, 512.0][rng.below(4)],
            tier,
        );
        app.component_mb = 0.1 + 4.9 * rng.uniform();
        app.pricing = [Pricing::Spot, Pricing::OnDemand, Pricing::Reserved][rng.below(3)];
        if rng.chance(0.2) {
            app.region_preference = Some(REGIONS[rng.below(REGIONS.len())].to_string());
        }
        total += app.replica_count() as usize;
        out.push(app);
    }
    out
}
