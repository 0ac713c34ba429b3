//! `fog host`: run this device's host and its agent.

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::services::{self, HostArgs, Stop};

/// Run this device as a Fog host: register with the control plane and serve what it assigns.
#[derive(Debug, clap::Args)]
pub struct HostCmd {
    /// Base URL of the control plane.
    #[arg(long, env = "FOG_CONTROL", default_value = "http://127.0.0.1:7070")]
    control: String,
    /// Address of this host's data plane (routers connect here).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Directory for the device key, compiled components and app state.
    #[arg(long, value_name = "DIR")]
    data: Option<PathBuf>,
    #[command(flatten)]
    host: HostArgs,
}

impl HostCmd {
    pub fn execute(self) -> anyhow::Result<()> {
        let data = self
            .data
            .clone()
            .unwrap_or_else(|| fog_host::agent::default_data_dir().join("host"));
        crate::client::runtime()?.block_on(async {
            let (stop_tx, stop) = Stop::new();
            let (addr, tasks) =
                services::start_host(self.listen, &self.control, &data, &self.host, stop).await?;
            println!("fog: host on http://{addr}, control plane {}", self.control);
            services::run_until_signal(stop_tx, tasks).await;
            Ok(())
        })
    }
}
