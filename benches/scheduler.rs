//! Scheduler timings: NSGA-II on ZDT1 (population 100, 250 generations) and the placement of
//! 1,000 replicas on 10,000 devices, each with 1 and 2 rayon threads.

use criterion::{Criterion, criterion_group, criterion_main};
use fog_scheduler::nsga2::{self, Config};
use fog_scheduler::placement::{self, Assignment, PlacementConfig, scenarios};
use fog_scheduler::problems::{Benchmark, RealBenchmark};

fn pool(threads: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap()
}

fn zdt1(c: &mut Criterion) {
    let problem = RealBenchmark::new(Benchmark::Zdt1);
    let mut group = c.benchmark_group("nsga2 zdt1 pop100 gen250");
    for threads in [1, 2] {
        let pool = pool(threads);
        group.bench_function(format!("{threads} thread(s)"), |b| {
            b.iter(|| pool.install(|| nsga2::run(&problem, &Config::default(), &[])))
        });
    }
    group.bench_function("sequential evaluation", |b| {
        let config = Config {
            parallel: false,
            ..Config::default()
        };
        b.iter(|| nsga2::run(&problem, &config, &[]))
    });
    group.finish();
}

fn placement_large(c: &mut Criterion) {
    let devices = scenarios::devices(10_000, 1);
    let apps = scenarios::apps(1_000, 1);
    let config = PlacementConfig::default();
    let mut group = c.benchmark_group("placement 1000 replicas on 10000 devices");
    group.sample_size(10);
    for threads in [1, 2] {
        let pool = pool(threads);
        group.bench_function(format!("{threads} thread(s)"), |b| {
            b.iter(|| {
                pool.install(|| placement::plan(&devices, &apps, &Assignment::new(), &config))
            })
        });
    }
    group.finish();
}

criterion_group!(benches, zdt1, placement_large);
criterion_main!(benches);
