//! The `fog` binary as people run it: real processes, real sockets.

mod betanet;
mod dashboard;
mod dialout;
mod etcd;
mod flood;
mod fog;
mod ha;
mod harvest;
mod lab;
mod logs;
mod metrics;
mod onion;
pub mod publish;
mod ratelimit;
mod run;
mod sites;
pub mod state;
mod traces;
mod up;
