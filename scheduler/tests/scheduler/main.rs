//! The scheduler's integration tests: NSGA-II against published hypervolumes, determinism
//! across thread counts, and the placement model's guarantees.

mod benchmarks;
mod placement;
