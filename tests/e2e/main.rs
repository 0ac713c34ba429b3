//! Fog's end-to-end tests: real components served over real HTTP on loopback.

mod architecture;
mod code_cache;
mod examples;
mod harvest;
mod hostile;
mod state;
mod streaming;
