//! The `fog` binary as people run it: real processes, real sockets.

mod admit;
mod betanet;
mod canary;
mod config;
mod dashboard;
mod dialout;
mod etcd;
mod flood;
mod fog;
mod ha;
mod harvest;
pub mod jspy;
mod lab;
mod logs;
mod metrics;
mod newcomer;
mod onion;
mod outbound;
pub mod publish;
mod ratelimit;
mod run;
mod sites;
mod soft;
pub mod state;
mod traces;
mod up;
mod uploads;
