//! NSGA-II on ZDT1, ZDT2, ZDT3 and DTLZ2 (population 100, 250 generations, 5 seeds, reference
//! point 1.1): the mean hypervolume must reach what a widely used Python library (pymoo) reaches
//! with the same budget.

use fog_scheduler::hypervolume;
use fog_scheduler::nsga2::{self, Config, Problem};
use fog_scheduler::problems::{Benchmark, RealBenchmark};

fn front_hypervolume(kind: Benchmark, seed: u64) -> f64 {
    let problem = RealBenchmark::new(kind);
    let config = Config {
        population: 100,
        generations: 250,
        seed,
        parallel: true,
    };
    let population = nsga2::run(&problem, &config, &[]);
    let m = problem.objectives();
    let points: Vec<f64> = population
        .pareto_front()
        .into_iter()
        .flat_map(|i| population.objectives_of(i).to_vec())
        .collect();
    hypervolume(&points, m, &vec![1.1; m])
}

fn mean_hypervolume(kind: Benchmark) -> f64 {
    let values: Vec<f64> = (1..=5).map(|seed| front_hypervolume(kind, seed)).collect();
    let mean = values.iter().sum::<f64>() / values.len() as f64;
    eprintln!("{kind:?}: mean hypervolume {mean:.4} over seeds 1-5: {values:.4?}");
    mean
}

#[test]
fn zdt1_reaches_the_reference_hypervolume() {
    assert!(mean_hypervolume(Benchmark::Zdt1) >= 0.8690);
}

#[test]
fn zdt2_reaches_the_reference_hypervolume() {
    assert!(mean_hypervolume(Benchmark::Zdt2) >= 0.5355);
}

#[test]
fn zdt3_reaches_the_reference_hypervolume() {
    assert!(mean_hypervolume(Benchmark::Zdt3) >= 1.3270);
}

#[test]
fn dtlz2_reaches_the_reference_hypervolume() {
    assert!(mean_hypervolume(Benchmark::Dtlz2) >= 0.700);
}

#[test]
fn a_seed_gives_the_same_front_with_one_and_two_threads() {
    let problem = RealBenchmark::new(Benchmark::Zdt3);
    let config = Config {
        population: 60,
        generations: 60,
        seed: 42,
        parallel: true,
    };
    let run_with = |threads: usize| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
            .install(|| nsga2::run(&problem, &config, &[]))
    };
    let (one, two) = (run_with(1), run_with(2));
    assert_eq!(one.genes, two.genes);
    assert_eq!(one.objectives, two.objectives);
    let sequential = nsga2::run(
        &problem,
        &Config {
            parallel: false,
            ..config
        },
        &[],
    );
    assert_eq!(one.genes, sequential.genes);
    let other_seed = nsga2::run(&problem, &Config { seed: 43, ..config }, &[]);
    assert_ne!(one.genes, other_seed.genes);
}
