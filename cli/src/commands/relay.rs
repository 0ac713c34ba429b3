//! `fog relay`: run a mix relay for Betanet paths.

use fog_net::control_urls::ControlUrls;
use std::net::SocketAddr;
use std::path::PathBuf;

use crate::services::{self, Stop};

/// Run a mix relay: it forwards HTX connections one hop further without being able to read
/// them, and registers itself with the control plane so routers and visitors can use it.
#[derive(Debug, clap::Args)]
pub struct RelayCmd {
    /// The control planes' base URLs, comma-separated: requests go to the one that answered
    /// last and fail over to the next on connection errors, timeouts and 503.
    #[arg(
        long,
        env = "FOG_CONTROL",
        default_value = "http://127.0.0.1:7070",
        value_name = "URL[,URL...]"
    )]
    control: ControlUrls,
    /// Address the relay listens on (and registers).
    #[arg(long, default_value = "127.0.0.1:7600")]
    listen: SocketAddr,
    /// Directory of the relay's key.
    #[arg(long, value_name = "DIR")]
    data: Option<PathBuf>,
    /// Serve Prometheus metrics at http://ADDR/metrics (off by default: nothing is recorded).
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<SocketAddr>,
    /// The fog's admission token (the operator's `fog admit token`): the relay is admitted
    /// when it registers. Without it, it registers pending and is on no path until the
    /// operator runs `fog admit KEY`.
    #[arg(
        long,
        value_name = "TOKEN",
        env = "FOG_ADMISSION_TOKEN",
        hide_env_values = true
    )]
    admission_token: Option<String>,
}

impl RelayCmd {
    pub fn execute(self) -> anyhow::Result<()> {
        let data = self
            .data
            .unwrap_or_else(|| fog_host::agent::default_data_dir().join("relay"));
        crate::client::runtime()?.block_on(async {
            let (stop_tx, stop) = Stop::new();
            let (addr, metrics, tasks) = services::start_relay(
                self.listen,
                self.metrics_listen,
                &self.control,
                &data,
                self.admission_token.as_deref().filter(|t| !t.is_empty()),
                stop,
            )
            .await?;
            match metrics {
                Some(metrics) => {
                    println!("fog: relay on {addr}, metrics on http://{metrics}/metrics")
                }
                None => println!("fog: relay on {addr}"),
            }
            services::run_until_signal(stop_tx, tasks).await;
            Ok(())
        })
    }
}
