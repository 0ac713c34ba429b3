//! `fog devices`: the registered devices, alive or not, how routers reach them (dialled at a
//! listener, or on the connections they dialled out, with each one's round-trip time), the
//! smoothed RTT and the throughput (timed transfers) placement uses, their trust with its
//! reasons, the price they ask and what they run.

use fog_proto::api::{DeviceInfo, PendingKey};

use crate::client::{Api, ControlArgs, print_json};

/// List registered devices: liveness, harvest state, capacity and apps.
#[derive(Debug, clap::Args)]
pub struct Devices {
    #[command(flatten)]
    control: ControlArgs,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    /// List only the devices and relays waiting to be admitted (`fog admit KEY`).
    #[arg(long)]
    pending: bool,
}

impl Devices {
    pub fn execute(self) -> anyhow::Result<()> {
        crate::client::runtime()?.block_on(async {
            if self.pending {
                let pending: Vec<PendingKey> = Api::new(&self.control)?.get("/v1/pending").await?;
                if self.json {
                    return print_json(&pending);
                }
                println!(
                    "{:<7} {:<64} {:<22} REGION",
                    "KIND", "KEY", "DEVICE/ADDRESS"
                );
                for p in &pending {
                    println!("{:<7} {:<64} {:<22} {}", p.kind, p.key, p.name, p.region);
                }
                if !pending.is_empty() {
                    println!("admit one with: fog admit KEY");
                }
                return Ok(());
            }
            let devices: Vec<DeviceInfo> = Api::new(&self.control)?.get("/v1/devices").await?;
            if self.json {
                return print_json(&devices);
            }
            println!(
                "{:<18} {:<10} {:<6} {:>5} {:>7} {:<40} {:<24} {:<16} {:<20} {:<6} RUNNING",
                "ID",
                "REGION",
                "STATE",
                "CPU",
                "PRICE",
                "REACHED",
                "RTT",
                "SMOOTHED RTT",
                "THROUGHPUT",
                "TRUST"
            );
            for d in devices {
                let state = match (d.alive, d.harvestable) {
                    (false, _) => "down",
                    (true, false) => "idle",
                    (true, true) => "up",
                };
                println!(
                    "{:<18} {:<10} {:<6} {:>5} {:>7} {:<40} {:<24} {:<16} {:<20} {:<6.2} {}",
                    d.id,
                    d.region,
                    state,
                    d.cpu,
                    format!("{:.3}", d.price_cpu_hour),
                    reached(&d),
                    rtt(&d),
                    smoothed(&d),
                    throughput(&d),
                    d.trust,
                    d.running.join(",")
                );
                println!("  trust: {}", d.trust_reasons.join("; "));
                if !d.admitted {
                    println!("  admission: pending, given no work (fog admit {})", d.id);
                }
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

/// The smoothed RTT placement uses, and the age of its newest sample.
fn smoothed(d: &DeviceInfo) -> String {
    match (d.rtt_ms, d.rtt_age_ms) {
        (Some(ms), Some(age)) => format!(
            "{ms:.1}ms ({:.0}s ago{})",
            age as f64 / 1000.0,
            match d.rtt_source {
                Some(fog_proto::api::RttSource::Device) => ", device's own",
                _ => "",
            }
        ),
        _ => "unmeasured".to_string(),
    }
}

/// The smoothed throughput of timed transfers and the age of the newest; "-" if never timed
/// (placement then assumes a prior).
fn throughput(d: &DeviceInfo) -> String {
    match (d.throughput_mbps, d.throughput_age_ms) {
        (Some(mbps), Some(age)) => format!("{mbps:.0}Mbit/s ({:.0}s ago)", age as f64 / 1000.0),
        _ => "-".to_string(),
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
