//! The `fog` binary as people run it: real processes, real sockets.

mod fog;
mod harvest;
pub mod publish;
mod run;
