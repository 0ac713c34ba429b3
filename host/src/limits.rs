//! Command-line flags for app limits, flattened into the `fog` subcommands that take them.

use std::time::Duration;

use fog_proto::Limits;

/// Command-line flags that set [`Limits`]; the CLI flattens this into its subcommands.
#[derive(Debug, Clone, clap::Args)]
pub struct LimitArgs {
    /// Fuel budget per request (about one unit per WebAssembly instruction).
    #[arg(long, value_name = "N", default_value_t = Limits::default().fuel)]
    pub fuel: u64,
    /// Memory cap per request instance, in MiB.
    #[arg(long, value_name = "MB", default_value_t = Limits::default().memory_bytes >> 20)]
    pub memory: u64,
    /// Wall-clock deadline per request, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = Limits::default().timeout.as_millis() as u64)]
    pub timeout: u64,
    /// Requests of the app running at once before the host answers 503.
    #[arg(long, value_name = "N", default_value_t = Limits::default().max_concurrency)]
    pub concurrency: u32,
    /// Largest request body the app accepts, in MiB (a larger one is cut with 413).
    #[arg(long, value_name = "MB", default_value_t = Limits::default().max_request_body >> 20)]
    pub max_request_body: u64,
}

impl LimitArgs {
    /// The limits these flags describe.
    pub fn limits(&self) -> Limits {
        Limits {
            memory_bytes: self.memory.saturating_mul(1 << 20),
            fuel: self.fuel,
            timeout: Duration::from_millis(self.timeout),
            max_concurrency: self.concurrency,
            max_request_body: self.max_request_body.saturating_mul(1 << 20),
            ..Limits::default()
        }
    }
}
