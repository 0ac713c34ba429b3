//! The `fog` binary as people run it: real processes, real sockets.

mod betanet;
mod dialout;
mod flood;
mod etcd;
mod fog;
mod harvest;
mod lab;
mod onion;
pub mod publish;
mod run;
pub mod state;
