//! Placement time with measured inputs: 1,000 replicas on 10,000 devices whose RTT, throughput,
//! trust and price vary as a measured fleet's do (heavy-tailed RTT and throughput, some devices
//! not measured yet, newcomers with low trust, some asking the market base), turned into
//! placement inputs by the control plane's own functions (`fog_control::observe`) and placed
//! with the control plane's default settings through `placement::plan`, the call its full
//! replan makes. The peer in the same run: 100 replicas on the same fleet.

use criterion::{Criterion, criterion_group, criterion_main};
use fog_control::observe::{self, Throughput};
use fog_control::{ControlConfig, trust};
use fog_scheduler::nsga2::Rand;
use fog_scheduler::placement::{self, AppDemand, Assignment, Device, Tier, scenarios};

/// A standard normal draw (Box–Muller).
fn normal(rng: &mut Rand) -> f64 {
    let u = rng.uniform().max(1e-12);
    (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * rng.uniform()).cos()
}

/// `n` devices: capacities and health from the synthetic fleet, measurements drawn like a
/// measured one's and passed through the control plane's conversions.
fn measured_fleet(n: usize, seed: u64) -> Vec<Device> {
    let mut rng = Rand::new(seed ^ 0x5EED);
    let mut devices = scenarios::devices(n, seed);
    // RTT: log-normal around 20 ms (a few devices past 200 ms); 10 % not measured yet.
    let rtt: Vec<Option<f64>> = (0..n)
        .map(|_| {
            (!rng.chance(0.1)).then(|| {
                (20f64.ln() + 0.8 * normal(&mut rng))
                    .exp()
                    .clamp(1.0, 400.0)
            })
        })
        .collect();
    let latency = observe::placement_latencies(&rtt);
    for (device, latency_ms) in devices.iter_mut().zip(latency) {
        // Throughput: log-normal around 60 Mbit/s; 15 % never timed (the prior).
        let timed = (!rng.chance(0.15)).then(|| Throughput {
            mbps: (60f64.ln() + normal(&mut rng)).exp().clamp(1.0, 2000.0),
            at_ms: 0,
            samples: 1,
        });
        // Trust: newcomers low, most earned, a few penalised (wrong canary answers).
        let earned = match rng.below(10) {
            0 | 1 => 0.1 + 0.2 * rng.uniform(),
            2 => 0.2 * rng.uniform(),
            _ => 0.4 + 0.55 * rng.uniform(),
        };
        // Price: a third ask the market base (0), the others 0.05–0.5 per CPU-hour.
        let price = if rng.chance(0.3) {
            0.0
        } else {
            0.05 + 0.45 * rng.uniform()
        };
        device.latency_ms = latency_ms;
        device.bandwidth_mbps = observe::placement_bandwidth(timed.as_ref());
        device.trust = observe::placement_trust(earned);
        device.price_cpu_hour = price;
    }
    devices
}

/// Apps adding up to about `replicas`, with the trust floors the control plane sets per tier.
fn apps(replicas: usize) -> Vec<AppDemand> {
    let mut apps = scenarios::apps(replicas, 1);
    for app in &mut apps {
        app.min_trust = match app.tier {
            Tier::S | Tier::A => trust::MIN_TRUST,
            Tier::B => trust::MIN_TRUST_B,
        };
    }
    apps
}

fn placement_measured(c: &mut Criterion) {
    let devices = measured_fleet(10_000, 1);
    let config = ControlConfig::default().placement;
    let mut group = c.benchmark_group("placement with measured inputs on 10000 devices");
    group.sample_size(10);
    for replicas in [100, 1_000] {
        let apps = apps(replicas);
        let outcome = placement::plan(&devices, &apps, &Assignment::new(), &config);
        let placed: usize = outcome.assignment.values().map(Vec::len).sum();
        eprintln!(
            "{replicas} replicas: {} apps, {placed} replicas placed, {} apps unplaceable",
            apps.len(),
            outcome.unplaceable.len()
        );
        group.bench_function(format!("{replicas} replicas"), |b| {
            b.iter(|| placement::plan(&devices, &apps, &Assignment::new(), &config))
        });
    }
    group.finish();
}

criterion_group!(benches, placement_measured);
criterion_main!(benches);
