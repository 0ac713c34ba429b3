//! Quality figures for `benches/RESULTS.md`, printed as Markdown:
//!
//! - `zdt1`: NSGA-II on ZDT1 (population 100, 250 generations) over seeds 1–5: mean time per run
//!   and mean hypervolume (reference 1.1, 1.1), for comparison with pymoo in the same run;
//! - `placement`: 1,000 replicas on 10,000 devices: repair vs constraint violation only (time,
//!   feasible front size, hypervolume of the normalised latency/imbalance/cost front), the
//!   per-tier pick vs the first-fit-decreasing baseline, and 1 vs 2 rayon threads.
//!
//! `cargo bench -p fog-benches --bench placement_report -- zdt1|placement`

use std::time::{Duration, Instant};

use fog_scheduler::hypervolume;
use fog_scheduler::nsga2::{self, Config, Problem};
use fog_scheduler::placement::{self, Assignment, OBJECTIVES, PlacementConfig, scenarios};
use fog_scheduler::problems::{Benchmark, RealBenchmark};

fn main() {
    let what: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let all = what.is_empty();
    if all || what.iter().any(|w| w == "zdt1") {
        zdt1();
    }
    if all || what.iter().any(|w| w == "placement") {
        placement_report();
    }
}

fn zdt1() {
    let problem = RealBenchmark::new(Benchmark::Zdt1);
    let mut times = Vec::new();
    let mut volumes = Vec::new();
    for seed in 1..=5 {
        let config = Config {
            seed,
            ..Config::default()
        };
        let started = Instant::now();
        let population = nsga2::run(&problem, &config, &[]);
        times.push(started.elapsed());
        let points: Vec<f64> = population
            .pareto_front()
            .into_iter()
            .flat_map(|i| population.objectives_of(i).to_vec())
            .collect();
        volumes.push(hypervolume(&points, problem.objectives(), &[1.1, 1.1]));
    }
    let mean_ms = times.iter().sum::<Duration>().as_secs_f64() * 1000.0 / times.len() as f64;
    let mean_hv = volumes.iter().sum::<f64>() / volumes.len() as f64;
    println!(
        "fog nsga2 zdt1: mean {mean_ms:.1} ms per run, mean hypervolume {mean_hv:.4} (seeds 1-5)"
    );
}

fn placement_report() {
    let devices = scenarios::devices(10_000, 1);
    let apps = scenarios::apps(1_000, 1);
    println!(
        "| variant | time s | feasible front | unplaced apps | latency ms | imbalance | distrust | cost/h | energy | churn |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let mut outcomes = Vec::new();
    for (label, repair) in [
        ("NSGA-II with repair", true),
        ("NSGA-II, violation only", false),
    ] {
        let config = PlacementConfig {
            repair,
            ..PlacementConfig::default()
        };
        let started = Instant::now();
        let outcome = placement::plan(&devices, &apps, &Assignment::new(), &config);
        let elapsed = started.elapsed().as_secs_f64();
        row(
            label,
            Some(elapsed),
            outcome.front_size,
            outcome.unplaceable.len(),
            &outcome.objectives,
        );
        outcomes.push(outcome);
    }
    if let Some(greedy) = outcomes[0].greedy {
        row("greedy first-fit decreasing", None, 0, 0, &greedy);
    }
    // Which constraint handling gives the better front: hypervolume of each front in (latency,
    // imbalance, cost), normalised over both fronts together, reference 1.1.
    let axes = [0, 1, 3];
    let mut lo = [f64::INFINITY; 3];
    let mut hi = [f64::NEG_INFINITY; 3];
    for outcome in &outcomes {
        for point in &outcome.front {
            for (k, &a) in axes.iter().enumerate() {
                lo[k] = lo[k].min(point[a]);
                hi[k] = hi[k].max(point[a]);
            }
        }
    }
    for (outcome, label) in outcomes.iter().zip(["with repair", "violation only"]) {
        let points: Vec<f64> = outcome
            .front
            .iter()
            .flat_map(|p| (0..3).map(move |k| (p[axes[k]] - lo[k]) / (hi[k] - lo[k]).max(1e-12)))
            .collect();
        println!(
            "\nfront hypervolume ({label}, latency/imbalance/cost normalised): {:.4}",
            hypervolume(&points, 3, &[1.1, 1.1, 1.1])
        );
    }
    for threads in [1, 2] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        let started = Instant::now();
        pool.install(|| {
            placement::plan(
                &devices,
                &apps,
                &Assignment::new(),
                &PlacementConfig::default(),
            )
        });
        println!(
            "\n{threads} rayon thread(s): {:.2} s",
            started.elapsed().as_secs_f64()
        );
    }
    println!("\nobjectives: {OBJECTIVES:?}");
}

fn row(label: &str, time: Option<f64>, front: usize, unplaced: usize, o: &[f64; 6]) {
    let time = time.map_or("-".to_string(), |t| format!("{t:.2}"));
    println!(
        "| {label} | {time} | {front} | {unplaced} | {:.1} | {:.5} | {:.3} | {:.2} | {:.3} | {} |",
        o[0], o[1], o[2], o[3], o[4], o[5]
    );
}
