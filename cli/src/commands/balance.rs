//! `fog balance`: the accounts the control plane derives from verified ledger periods — what
//! each device earned and what each developer spent, with both totals.

use fog_proto::api::Balances;

use crate::client::{Api, ControlArgs, print_json};

/// Show credits earned by devices and spent by developers (from the signed ledger periods).
#[derive(Debug, clap::Args)]
pub struct Balance {
    #[command(flatten)]
    control: ControlArgs,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

impl Balance {
    pub fn execute(self) -> anyhow::Result<()> {
        crate::client::runtime()?.block_on(async {
            let balances: Balances = Api::new(&self.control)?.get("/v1/balances").await?;
            if self.json {
                return print_json(&balances);
            }
            println!("DEVICES (earned)");
            println!(
                "{:<18} {:>14} {:>18} {:>8}",
                "ID", "CREDITS", "FUEL", "PERIODS"
            );
            for d in &balances.devices {
                println!(
                    "{:<18} {:>14.9} {:>18} {:>8}",
                    d.device, d.earned, d.fuel, d.periods
                );
            }
            println!();
            println!("DEVELOPERS (spent)");
            println!("{:<66} {:>14} {:>18} APPS", "OWNER", "CREDITS", "FUEL");
            for d in &balances.developers {
                println!(
                    "{:<66} {:>14.9} {:>18} {}",
                    d.owner,
                    d.spent,
                    d.fuel,
                    d.apps.join(",")
                );
            }
            println!();
            println!(
                "total earned: {:.9}  total spent: {:.9}  ({} ledger periods)",
                balances.earned, balances.spent, balances.periods
            );
            Ok(())
        })
    }
}
