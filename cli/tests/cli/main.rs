//! The `fog` binary as people run it: real processes, real sockets.

mod betanet;
mod fog;
mod harvest;
pub mod publish;
mod run;
mod state;
