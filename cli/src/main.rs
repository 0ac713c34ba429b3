//! `fog`: the command-line entry point. One file per subcommand under `commands/`.

mod client;
mod commands;
mod progress;
mod services;
mod site;
mod testnet;

use std::process::ExitCode;

use clap::Parser;

/// Exit codes `fog` documents (see `fog --help`).
pub mod exit {
    /// Success.
    pub const OK: u8 = 0;
    /// The command failed (an error line says why).
    pub const FAILURE: u8 = 1;
    /// The command line itself was wrong (clap prints the usage).
    pub const USAGE: u8 = 2;
    /// The app given is not a usable component (not wasm, a core module, no HTTP handler, ...).
    pub const BAD_APP: u8 = 3;
}

fn main() -> ExitCode {
    let cli = commands::Cli::parse();
    init_logging();
    match cli.execute() {
        Ok(()) => ExitCode::from(exit::OK),
        Err(err) => {
            eprintln!("error: {err:#}");
            let code = match err.downcast_ref::<fog_host::LoadError>() {
                Some(fog_host::LoadError::Read { .. }) | None => exit::FAILURE,
                Some(_) => exit::BAD_APP,
            };
            ExitCode::from(code)
        }
    }
}

/// Logs go to stderr, filtered by `FOG_LOG` (e.g. `FOG_LOG=debug`, `FOG_LOG=fog_host=trace`);
/// the default shows informational messages from Fog and warnings from everything else.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("FOG_LOG").unwrap_or_else(|_| {
        // arti's path selection warns on every pick in a small network; its errors matter.
        tracing_subscriber::EnvFilter::new("warn,fog=info,fog_host=info,tor_netdir=error")
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}
