//! The `fog` binary as people run it: real processes, real sockets.

mod betanet;
mod fog;
mod harvest;
mod onion;
pub mod publish;
mod run;
mod sites;
mod state;
mod up;
