//! `fog ps`: the published apps and where they run.

use fog_proto::api::AppInfo;

use crate::client::{Api, ControlArgs, print_json};

/// List published apps: version, tier, bid and price cap, what each pays per hour, replicas
/// wanted and running, and any placement problem.
#[derive(Debug, clap::Args)]
pub struct Ps {
    #[command(flatten)]
    control: ControlArgs,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

impl Ps {
    pub fn execute(self) -> anyhow::Result<()> {
        crate::client::runtime()?.block_on(async {
            let apps: Vec<AppInfo> = Api::new(&self.control)?.get("/v1/apps").await?;
            if self.json {
                return print_json(&apps);
            }
            println!(
                "{:<24} {:>4} {:>4} {:<18} {:>10} {:>8} {:<40} {:<43} PROBLEM",
                "NAME", "VER", "TIER", "BID", "PRICE/H", "RUNNING", "DEVICES", "BETANET"
            );
            for app in &apps {
                let bid = match app.max_price {
                    Some(max) => format!("{} <= {max}", app.bid),
                    None => app.bid.to_string(),
                };
                // Credits per hour at the planned demand; "-" for an app placed nowhere.
                let price = if app.assigned.is_empty() {
                    "-".to_string()
                } else {
                    format!("{:.6}", app.price_per_hour)
                };
                println!(
                    "{:<24} {:>4} {:>4} {:<18} {:>10} {:>8} {:<40} {:<43} {}",
                    app.name,
                    app.version,
                    format!("{:?}", app.tier),
                    bid,
                    price,
                    format!("{}/{}", app.running.len(), app.replicas),
                    app.assigned.join(","),
                    app.betanet
                        .iter()
                        .find(|n| n.starts_with("bn1:"))
                        .map_or("-", String::as_str),
                    app.problem.as_deref().unwrap_or_default()
                );
            }
            // Onion addresses, moves in progress and the latest events.
            for app in &apps {
                if let Some(onion) = &app.onion {
                    // Which router's onion front publishes it (one at a time, by lease).
                    let by = match &app.onion_router {
                        Some(router) => {
                            format!("published by router {}…", &router[..router.len().min(16)])
                        }
                        None => "no router publishes it now".to_string(),
                    };
                    println!("{}: http://{onion}/  ({by})", app.name);
                }
                if let Some(moving) = &app.moving {
                    println!("{}: moving {moving}", app.name);
                }
                for event in app.events.iter().rev().take(3).rev() {
                    println!("{}: {event}", app.name);
                }
            }
            Ok(())
        })
    }
}
