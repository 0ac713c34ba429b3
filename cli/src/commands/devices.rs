//! `fog devices`: the registered devices, alive or not, how routers reach them (dialled at a
//! listener, or on the connections they dialled out, with each one's round-trip time) and what
//! they run.

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
                "{:<18} {:<10} {:<6} {:>5} {:<40} {:<24} RUNNING",
                "ID", "REGION", "STATE", "CPU", "REACHED", "RTT"
            );
            for d in devices {
                let state = match (d.alive, d.harvestable) {
                    (false, _) => "down",
                    (true, false) => "idle",
                    (true, true) => "up",
                };
                println!(
                    "{:<18} {:<10} {:<6} {:>5} {:<40} {:<24} {}",
                    d.id,
                    d.region,
                    state,
                    d.cpu,
                    reached(&d),
                    rtt(&d),
                    d.running.join(",")
                );
                if let Some(harvest) = d.harvest.as_deref().filter(|_| d.alive) {
                    println!("  harvest: {harvest}");
                }
            }
            Ok(())
        })
    }
}

/// How routers reach the device: dialled at its listener, or on the connections it dialled out.
pub fn reached(d: &DeviceInfo) -> String {
    match (
        d.htx.as_ref().and_then(|h| h.addr.as_deref()),
        &d.attached[..],
    ) {
        (Some(addr), _) => format!("direct {addr}"),
        (None, []) => "unreachable (attached to no router)".to_string(),
        (None, links) => format!(
            "dial-out via {}",
            links
                .iter()
                .map(|l| l.router.as_str())
                .collect::<Vec<_>>()
                .join(",")
        ),
    }
}

/// Round-trip time of each connection the device holds to a router, as it measured them.
fn rtt(d: &DeviceInfo) -> String {
    if d.attached.is_empty() {
        return "-".to_string();
    }
    d.attached
        .iter()
        .map(|l| match l.rtt_us {
            0 => "?".to_string(),
            us => format!("{:.1}ms", us as f64 / 1000.0),
        })
        .collect::<Vec<_>>()
        .join(",")
}
