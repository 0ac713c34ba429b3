//! `fog`: the command-line entry point. One file per subcommand under `commands/`.

mod client;
mod commands;
mod progress;
mod services;
mod site;
mod telemetry;
mod testnet;

use std::process::ExitCode;

use clap::Parser;

// Each request builds and drops a wasmtime store, a WASI context and a resource table: many
// small allocations, cheaper with mimalloc than with glibc malloc (whose free-list consolidation
// showed in the host's per-request profile; see benches/RESULTS.md). Built with `no_thp`: with
// transparent huge pages mimalloc's arenas grew in 2 MiB steps (the host's idle RSS nearly doubled
// and a streamed upload grew the router by more than its bound).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    let traces = init_logging();
    let result = cli.execute();
    if let Some(provider) = traces {
        // Send the spans still batched before the process ends.
        if let Err(err) = provider.shutdown() {
            eprintln!("warning: exporting the last spans: {err}");
        }
    }
    match result {
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
/// the default shows informational messages from Fog and warnings from everything else. With
/// `OTEL_EXPORTER_OTLP_ENDPOINT` set, request spans also go there (OTLP over HTTP/protobuf); the
/// returned provider must be shut down at exit to send the last of them.
fn init_logging() -> Option<opentelemetry_sdk::trace::SdkTracerProvider> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::{Layer, filter};

    let env_filter = tracing_subscriber::EnvFilter::try_from_env("FOG_LOG").unwrap_or_else(|_| {
        // arti's path selection warns on every pick in a small network; its errors matter.
        tracing_subscriber::EnvFilter::new("warn,fog=info,fog_host=info,tor_netdir=error")
    });
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        // Request spans are for the exporter; the log shows them only when FOG_LOG names them.
        .with_filter(env_filter);
    let provider = telemetry::provider();
    let otel = provider.as_ref().map(|provider| {
        use opentelemetry::trace::TracerProvider as _;
        fog_net::trace::enable();
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("fog"))
            .with_filter(
                filter::Targets::new().with_target(fog_net::trace::TARGET, tracing::Level::INFO),
            )
    });
    tracing_subscriber::registry().with(fmt).with(otel).init();
    provider
}
