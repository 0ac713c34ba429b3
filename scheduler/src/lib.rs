//! Fog's scheduler: where app replicas run.
//!
//! - [`nsga2`]: a generic, rayon-parallel NSGA-II with constrained domination, flat arrays and
//!   results identical for a seed whatever the thread count;
//! - [`hypervolume`]: exact hypervolume for comparing fronts;
//! - [`problems`]: ZDT1–3 and DTLZ2, the standard checks of an NSGA-II;
//! - [`placement`]: devices, app demands, six objectives, hard constraints, the per-tier pick
//!   and the greedy baseline;
//! - [`market`]: marketplace prices per CPU-hour.
//!
//! The optimisation core does no I/O and reads no clock; it never depends on wasmtime.

#![deny(missing_docs)]

pub mod hypervolume;
pub mod market;
pub mod nsga2;
pub mod placement;
pub mod problems;

pub use hypervolume::hypervolume;
