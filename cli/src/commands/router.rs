//! `fog router`: run the visitor-facing HTTP gateway and Betanet front.

use fog_net::control_urls::ControlUrls;
use std::net::SocketAddr;
use std::path::PathBuf;

use crate::services::{self, RouterArgs, Stop};

/// Run a router: visitors' requests to `<app>.localhost` or `/apps/<app>/`, and Betanet
/// connections to apps' `betanet://` / `bn1:` names, reach a live replica.
#[derive(Debug, clap::Args)]
pub struct RouterCmd {
    /// The control planes' base URLs, comma-separated: requests go to the one that answered
    /// last and fail over to the next on connection errors, timeouts and 503.
    #[arg(
        long,
        env = "FOG_CONTROL",
        default_value = "http://127.0.0.1:7070",
        value_name = "URL[,URL...]"
    )]
    control: ControlUrls,
    /// Address visitors connect to.
    #[arg(long, default_value = "127.0.0.1:7080")]
    listen: SocketAddr,
    /// Directory of the router's key (it signs the Betanet front's registration).
    #[arg(long, value_name = "DIR")]
    data: Option<PathBuf>,
    /// Serve Prometheus metrics at http://ADDR/metrics (off by default: nothing is recorded).
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<SocketAddr>,
    #[command(flatten)]
    router: RouterArgs,
}

impl RouterCmd {
    pub fn execute(self) -> anyhow::Result<()> {
        let data = self
            .data
            .unwrap_or_else(|| fog_host::agent::default_data_dir().join("router"));
        let identity = services::router_identity(&data)?;
        let key = identity.public_hex();
        crate::client::runtime()?.block_on(async {
            let (stop_tx, stop) = Stop::new();
            let (addrs, tasks) =
                services::start_router(
                    self.listen,
                    self.metrics_listen,
                    &self.control,
                    &self.router,
                    identity,
                    &data,
                    stop,
                )
                .await?;
            match addrs.metrics {
                Some(metrics) => println!(
                    "fog: router on http://{}, metrics on http://{metrics}/metrics",
                    addrs.http
                ),
                None => println!("fog: router on http://{}", addrs.http),
            }
            if let Some(attach) = addrs.attach {
                println!("fog: hosts attach on {attach}");
            }
            if let Some(front) = addrs.betanet {
                println!("fog: Betanet front on {front} (router key {key}; the control plane must trust it: fog control --trust-router {key})");
            }
            services::run_until_signal(stop_tx, tasks).await;
            Ok(())
        })
    }
}
