//! Fog's benchmarks live in `benches/*.rs` (criterion) and `benches/*.sh` (load tests against
//! real processes); results are recorded in `benches/RESULTS.md`.
