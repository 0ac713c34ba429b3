//! The `fog` binary as people run it: real processes, real sockets.

mod betanet;
mod etcd;
mod fog;
mod harvest;
mod onion;
pub mod publish;
mod run;
mod state;
