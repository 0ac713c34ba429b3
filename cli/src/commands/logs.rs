//! `fog logs APP`: recent requests served by the app's replicas.

use fog_proto::api::LogLine;

use crate::client::{Api, ControlArgs, print_json};

/// Show the app's recent requests (the last 1,000, as reported by the hosts).
#[derive(Debug, clap::Args)]
pub struct Logs {
    /// The app.
    app: String,
    #[command(flatten)]
    control: ControlArgs,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

impl Logs {
    pub fn execute(self) -> anyhow::Result<()> {
        crate::client::runtime()?.block_on(async {
            let lines: Vec<LogLine> = Api::new(&self.control)?
                .get(&format!("/v1/apps/{}/logs", self.app))
                .await?;
            if self.json {
                return print_json(&lines);
            }
            for l in lines {
                println!(
                    "{} {} {} {} {} fuel={} {}us{}",
                    l.ts_ms,
                    l.device,
                    l.status,
                    l.method,
                    l.path,
                    l.fuel,
                    l.micros,
                    l.error.map(|e| format!(" error={e}")).unwrap_or_default()
                );
            }
            Ok(())
        })
    }
}
