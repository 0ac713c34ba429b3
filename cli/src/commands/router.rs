//! `fog router`: run the visitor-facing HTTP gateway.

use std::net::SocketAddr;

use crate::services::{self, Stop};

/// Run a router: visitors' requests to `<app>.localhost` or `/apps/<app>/` reach a live replica.
#[derive(Debug, clap::Args)]
pub struct RouterCmd {
    /// Base URL of the control plane.
    #[arg(long, env = "FOG_CONTROL", default_value = "http://127.0.0.1:7070")]
    control: String,
    /// Address visitors connect to.
    #[arg(long, default_value = "127.0.0.1:7080")]
    listen: SocketAddr,
    /// Reach hosts over plain HTTP instead of HTX (Noise XK, Betanet frames): local
    /// development only.
    #[arg(long)]
    plain: bool,
}

impl RouterCmd {
    pub fn execute(self) -> anyhow::Result<()> {
        crate::client::runtime()?.block_on(async {
            let (stop_tx, stop) = Stop::new();
            let (addr, tasks) =
                services::start_router(self.listen, &self.control, !self.plain, stop).await?;
            println!("fog: router on http://{addr}");
            services::run_until_signal(stop_tx, tasks).await;
            Ok(())
        })
    }
}
