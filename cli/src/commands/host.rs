//! `fog host`: run this device's host and its agent.

use fog_net::control_urls::ControlUrls;
use std::net::SocketAddr;
use std::path::PathBuf;

use crate::services::{self, HostArgs, Stop};

/// Run this device as a Fog host: register with the control plane and serve what it assigns
/// while the harvest policy allows (charging, battery, heat, unmetered network, idle user).
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct HostCmd {
    #[command(subcommand)]
    action: Option<HostAction>,
    /// The control planes' base URLs, comma-separated: requests go to the one that answered
    /// last and fail over to the next on connection errors, timeouts and 503.
    #[arg(
        long,
        env = "FOG_CONTROL",
        default_value = "http://127.0.0.1:7070",
        value_name = "URL[,URL...]"
    )]
    control: ControlUrls,
    /// Accept connections on this address (plain HTTP here, HTX on the same address's port 0)
    /// and let routers dial in: for a host with a public address. Without it the host needs no
    /// inbound port: it dials out to the routers the control plane names.
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Directory for the device key, compiled components and app state.
    #[arg(long, value_name = "DIR")]
    data: Option<PathBuf>,
    /// Serve Prometheus metrics at http://ADDR/metrics (off by default: nothing is recorded).
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<SocketAddr>,
    #[command(flatten)]
    host: HostArgs,
}

#[derive(Debug, clap::Subcommand)]
enum HostAction {
    /// Show the host's harvest state and reason, capacity offered, apps, fuel and credits.
    Status {
        /// The host's data directory.
        #[arg(long, value_name = "DIR")]
        data: Option<PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

impl HostCmd {
    pub fn execute(self) -> anyhow::Result<()> {
        if let Some(HostAction::Status { data, json }) = self.action {
            return status(data, json);
        }
        let data = self
            .data
            .clone()
            .unwrap_or_else(|| fog_host::agent::default_data_dir().join("host"));
        crate::client::runtime()?.block_on(async {
            let (stop_tx, stop) = Stop::new();
            let (addrs, tasks) = services::start_host(
                self.listen,
                self.metrics_listen,
                &self.control,
                &data,
                &self.host,
                stop,
            )
            .await?;
            let metrics = addrs
                .metrics
                .map(|m| format!(", metrics on http://{m}/metrics"))
                .unwrap_or_default();
            match addrs.http {
                Some(addr) => println!(
                    "fog: host on http://{addr}, device {}, control plane {}{metrics}",
                    addrs.device, self.control
                ),
                None => println!(
                    "fog: host device {} dials out to the routers of control plane {}{metrics}",
                    addrs.device, self.control
                ),
            }
            services::run_until_signal(stop_tx, tasks).await;
            Ok(())
        })
    }
}

fn status(data: Option<PathBuf>, json: bool) -> anyhow::Result<()> {
    use anyhow::Context;
    let data = data.unwrap_or_else(|| fog_host::agent::default_data_dir().join("host"));
    let path = data.join("status.json");
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "no status at {} (is `fog host` running with this --data?)",
            path.display()
        )
    })?;
    if json {
        println!("{text}");
        return Ok(());
    }
    let status: fog_host::harvest::HarvestStatus =
        serde_json::from_str(&text).context("reading the status file")?;
    println!("state:    {:?} — {}", status.state, status.reason);
    println!(
        "offering: {:.2} CPU cores, {:.0} MiB",
        status.cpu_offered, status.mem_offered_mb
    );
    let r = &status.reading;
    println!(
        "sensors:  battery {}, {}, CPU {}, load {:.0}%, network {}, user idle {}",
        r.battery
            .map_or("none (mains)".to_string(), |b| format!("{:.0}%", b * 100.0)),
        if r.charging {
            "charging"
        } else {
            "discharging"
        },
        r.cpu_temp_c
            .map_or("temperature unknown".to_string(), |t| format!("{t:.0} °C")),
        r.cpu_load * 100.0,
        if r.metered { "metered" } else { "unmetered" },
        r.user_idle_s
            .map_or("unknown".to_string(), |s| format!("{s:.0} s")),
    );
    println!(
        "fuel:     {} in total, {:.6} credits earned",
        status.fuel_total, status.credits_total
    );
    for app in &status.apps {
        println!(
            "  {:<24} {:>8} requests {:>16} fuel",
            app.name, app.requests, app.fuel
        );
    }
    Ok(())
}
