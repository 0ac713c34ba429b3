//! `fog devices`: the registered devices, alive or not, and what they run.

use fog_proto::api::DeviceInfo;

use crate::client::{Api, ControlArgs, print_json};

/// List registered devices: liveness, harvest state, capacity and apps.
#[derive(Debug, clap::Args)]
pub struct Devices {
    #[command(flatten)]
    control: ControlArgs,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

impl Devices {
    pub fn execute(self) -> anyhow::Result<()> {
        crate::client::runtime()?.block_on(async {
            let devices: Vec<DeviceInfo> = Api::new(&self.control)?.get("/v1/devices").await?;
            if self.json {
                return print_json(&devices);
            }
            println!(
                "{:<18} {:<22} {:<10} {:<6} {:>5} RUNNING",
                "ID", "ADDR", "REGION", "STATE", "CPU"
            );
            for d in devices {
                let state = match (d.alive, d.harvestable) {
                    (false, _) => "down",
                    (true, false) => "idle",
                    (true, true) => "up",
                };
                println!(
                    "{:<18} {:<22} {:<10} {:<6} {:>5} {}",
                    d.id,
                    d.addr,
                    d.region,
                    state,
                    d.cpu,
                    d.running.join(",")
                );
            }
            Ok(())
        })
    }
}
