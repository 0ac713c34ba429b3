//! A generic, rayon-parallel NSGA-II (Deb et al., 2002) with Deb's constraint handling.
//!
//! The population lives in flat arrays (genes, objectives, violations, ranks, crowding) so the
//! hot loops touch contiguous memory. Evaluation runs in parallel with rayon; every random draw
//! comes from a stream derived from (seed, generation, pair), so a seed gives the same result
//! with any number of threads. The core does no I/O and reads no clock.

mod operators;
mod rng;
mod sort;

pub use operators::{RealOperators, reset_mutation, uniform_crossover};
pub use rng::Rand;
pub use sort::{constrained_ranks, crowding, dominates, prune_by_crowding};

use rayon::prelude::*;

/// Times a pair is re-mated when its children copy a parent.
const MATING_ATTEMPTS: usize = 10;

/// An optimisation problem: every objective is minimised; a positive violation means infeasible.
pub trait Problem: Sync {
    /// The gene type: `f64` for real problems, `u32` for placement.
    type Gene: Copy + Default + Send + Sync + PartialEq;

    /// Number of objectives.
    fn objectives(&self) -> usize;
    /// Number of genes per solution.
    fn genes(&self) -> usize;
    /// Write the objectives of `genes` into `objectives` and return its total constraint
    /// violation (0 when feasible). Must be deterministic.
    fn evaluate(&self, genes: &[Self::Gene], objectives: &mut [f64]) -> f64;
    /// Fill `genes` with a random solution.
    fn random(&self, genes: &mut [Self::Gene], rng: &mut Rand);
    /// Recombine two parents into two children.
    fn crossover(
        &self,
        p1: &[Self::Gene],
        p2: &[Self::Gene],
        c1: &mut [Self::Gene],
        c2: &mut [Self::Gene],
        rng: &mut Rand,
    );
    /// Mutate a child in place.
    fn mutate(&self, genes: &mut [Self::Gene], rng: &mut Rand);
    /// Optionally move a solution towards feasibility after variation.
    fn repair(&self, _genes: &mut [Self::Gene], _rng: &mut Rand) {}
}

/// NSGA-II settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// Population size (rounded up to an even number).
    pub population: usize,
    /// Generations after the initial population.
    pub generations: usize,
    /// Seed of every random draw.
    pub seed: u64,
    /// Evaluate in parallel with rayon (the result is the same either way).
    pub parallel: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            population: 100,
            generations: 250,
            seed: 1,
            parallel: true,
        }
    }
}

/// A population in flat arrays: solution `i` owns `genes[i*g..(i+1)*g]` and
/// `objectives[i*m..(i+1)*m]`.
#[derive(Debug, Clone)]
pub struct Population<G> {
    /// Genes per solution.
    pub g: usize,
    /// Objectives per solution.
    pub m: usize,
    /// All genes.
    pub genes: Vec<G>,
    /// All objective values.
    pub objectives: Vec<f64>,
    /// Total constraint violation of each solution.
    pub violation: Vec<f64>,
    /// Front index of each solution (0 is the best).
    pub rank: Vec<u32>,
    /// Crowding distance of each solution within its front.
    pub crowding: Vec<f64>,
}

impl<G> Population<G> {
    /// Number of solutions.
    pub fn len(&self) -> usize {
        self.violation.len()
    }

    /// Whether there are no solutions.
    pub fn is_empty(&self) -> bool {
        self.violation.is_empty()
    }
}

impl<G: Copy + Default> Population<G> {
    fn new(n: usize, g: usize, m: usize) -> Self {
        Population {
            g,
            m,
            genes: vec![G::default(); n * g],
            objectives: vec![0.0; n * m],
            violation: vec![0.0; n],
            rank: vec![0; n],
            crowding: vec![0.0; n],
        }
    }

    /// The genes of solution `i`.
    pub fn genes_of(&self, i: usize) -> &[G] {
        &self.genes[i * self.g..(i + 1) * self.g]
    }

    /// The objectives of solution `i`.
    pub fn objectives_of(&self, i: usize) -> &[f64] {
        &self.objectives[i * self.m..(i + 1) * self.m]
    }

    /// Indices of the feasible solutions of the first front, in index order.
    pub fn pareto_front(&self) -> Vec<usize> {
        (0..self.len())
            .filter(|&i| self.rank[i] == 0 && self.violation[i] <= 0.0)
            .collect()
    }

    fn copy_from(&mut self, i: usize, other: &Population<G>, j: usize) {
        let (g, m) = (self.g, self.m);
        self.genes[i * g..(i + 1) * g].copy_from_slice(&other.genes[j * g..(j + 1) * g]);
        self.objectives[i * m..(i + 1) * m].copy_from_slice(&other.objectives[j * m..(j + 1) * m]);
        self.violation[i] = other.violation[j];
        self.rank[i] = other.rank[j];
        self.crowding[i] = other.crowding[j];
    }
}

/// Run NSGA-II on `problem`. `seeds` are solutions placed in the initial population (e.g. the
/// current placement and a greedy one); the rest is random. Returns the final population, ranked.
pub fn run<P: Problem>(
    problem: &P,
    config: &Config,
    seeds: &[Vec<P::Gene>],
) -> Population<P::Gene> {
    let n = config.population.max(4).div_ceil(2) * 2;
    let (g, m) = (problem.genes(), problem.objectives());

    let mut parents = Population::new(n, g, m);
    for i in 0..n {
        let genes = &mut parents.genes[i * g..(i + 1) * g];
        match seeds.get(i) {
            Some(seed) if seed.len() == g => genes.copy_from_slice(seed),
            _ => {
                let mut rng = Rand::derive(config.seed, 0, i as u64);
                problem.random(genes, &mut rng);
                problem.repair(genes, &mut rng);
            }
        }
    }
    evaluate(problem, &mut parents, config.parallel);
    let mut all = vec![0usize; n];
    for (i, slot) in all.iter_mut().enumerate() {
        *slot = i;
    }
    assign_fronts(&mut parents, &all);

    let mut offspring = Population::new(n, g, m);
    let mut merged = Population::new(2 * n, g, m);
    for generation in 1..=config.generations {
        make_offspring(
            problem,
            &parents,
            &mut offspring,
            config.seed,
            generation as u64,
        );
        evaluate(problem, &mut offspring, config.parallel);
        for i in 0..n {
            merged.copy_from(i, &parents, i);
            merged.copy_from(n + i, &offspring, i);
        }
        survive(&mut merged, &mut parents);
    }
    parents
}

/// Evaluate every solution of `population`.
fn evaluate<P: Problem>(problem: &P, population: &mut Population<P::Gene>, parallel: bool) {
    let (g, m) = (population.g, population.m);
    let genes = &population.genes;
    if parallel {
        population
            .objectives
            .par_chunks_mut(m)
            .zip(population.violation.par_iter_mut())
            .zip(genes.par_chunks(g))
            .with_min_len(8)
            .for_each(|((objectives, violation), genes)| {
                *violation = problem.evaluate(genes, objectives).max(0.0);
            });
    } else {
        for ((objectives, violation), genes) in population
            .objectives
            .chunks_mut(m)
            .zip(population.violation.iter_mut())
            .zip(genes.chunks(g))
        {
            *violation = problem.evaluate(genes, objectives).max(0.0);
        }
    }
}

/// Binary tournament on (rank, crowding): Deb's crowded comparison, which with constrained ranks
/// is also his constrained tournament.
fn tournament<G>(population: &Population<G>, rng: &mut Rand) -> usize {
    let a = rng.below(population.len());
    let b = rng.below(population.len());
    let better = |x: usize, y: usize| {
        population.rank[x] < population.rank[y]
            || (population.rank[x] == population.rank[y]
                && population.crowding[x] > population.crowding[y])
    };
    if better(a, b) {
        a
    } else if better(b, a) {
        b
    } else if rng.chance(0.5) {
        a
    } else {
        b
    }
}

fn make_offspring<P: Problem>(
    problem: &P,
    parents: &Population<P::Gene>,
    offspring: &mut Population<P::Gene>,
    seed: u64,
    generation: u64,
) {
    let g = parents.g;
    offspring
        .genes
        .par_chunks_mut(2 * g)
        .enumerate()
        .for_each(|(pair, children)| {
            let mut rng = Rand::derive(seed, generation, pair as u64);
            let (c1, c2) = children.split_at_mut(g);
            // Children identical to a parent waste an evaluation and crowd the front with
            // copies: mate again (a bounded number of times) until both are new.
            for _ in 0..MATING_ATTEMPTS {
                let a = tournament(parents, &mut rng);
                let b = tournament(parents, &mut rng);
                let (pa, pb) = (parents.genes_of(a), parents.genes_of(b));
                problem.crossover(pa, pb, c1, c2, &mut rng);
                problem.mutate(c1, &mut rng);
                problem.mutate(c2, &mut rng);
                problem.repair(c1, &mut rng);
                problem.repair(c2, &mut rng);
                let copy = |c: &[P::Gene]| c == pa || c == pb;
                if !copy(c1) && !copy(c2) {
                    break;
                }
            }
        });
}

/// Rank `members` of `population` and set their crowding distances, front by front.
fn assign_fronts<G>(population: &mut Population<G>, members: &[usize]) -> Vec<Vec<usize>> {
    let fronts_count = constrained_ranks(
        &population.objectives,
        population.m,
        &population.violation,
        &mut population.rank,
    );
    let mut fronts = vec![Vec::new(); fronts_count as usize];
    for &i in members {
        fronts[population.rank[i] as usize].push(i);
    }
    for front in &fronts {
        crowding(
            &population.objectives,
            population.m,
            front,
            &mut population.crowding,
        );
    }
    fronts
}

/// Keep the best half of `merged` (by front, then crowding) in `next`.
fn survive<G: Copy + Default>(merged: &mut Population<G>, next: &mut Population<G>) {
    let n = next.len();
    let all: Vec<usize> = (0..merged.len()).collect();
    let fronts = assign_fronts(merged, &all);
    let mut chosen = Vec::with_capacity(n);
    for front in fronts {
        if chosen.len() + front.len() <= n {
            chosen.extend_from_slice(&front);
        } else {
            let kept = prune_by_crowding(&merged.objectives, merged.m, &front, n - chosen.len());
            crowding(&merged.objectives, merged.m, &kept, &mut merged.crowding);
            chosen.extend_from_slice(&kept);
        }
        if chosen.len() == n {
            break;
        }
    }
    for (i, &j) in chosen.iter().enumerate() {
        next.copy_from(i, merged, j);
    }
}
