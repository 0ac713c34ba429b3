//! `fog logs APP [--follow]`: requests served by the app's replicas, and new ones as they come.

use fog_proto::api::LogLine;

use crate::client::{Api, ControlArgs, print_json};

/// Show the app's recent requests (the last 1,000 the control plane kept); with `--follow`, keep
/// printing new ones as the hosts report them.
#[derive(Debug, clap::Args)]
pub struct Logs {
    /// The app.
    app: String,
    #[command(flatten)]
    control: ControlArgs,
    /// Print JSON (with --follow, one object per line).
    #[arg(long)]
    json: bool,
    /// Keep printing requests as they are served, until interrupted (the control plane holds
    /// each poll until a line arrives).
    #[arg(long, short)]
    follow: bool,
}

impl Logs {
    pub fn execute(self) -> anyhow::Result<()> {
        crate::client::runtime()?.block_on(async {
            let api = Api::new(&self.control)?;
            let path = format!("/v1/apps/{}/logs", self.app);
            let lines: Vec<LogLine> = api.get(&path).await?;
            if self.json && !self.follow {
                return print_json(&lines);
            }
            let mut last = 0;
            for line in &lines {
                self.print(line)?;
                last = last.max(line.id);
            }
            if !self.follow {
                return Ok(());
            }
            loop {
                // Long-poll: answered as soon as a line past `last` arrives, or empty after a
                // while; never a busy loop.
                let lines: Vec<LogLine> = api.get(&format!("{path}?after={last}")).await?;
                for line in &lines {
                    self.print(line)?;
                    last = last.max(line.id);
                }
            }
        })
    }

    fn print(&self, l: &LogLine) -> anyhow::Result<()> {
        if self.json {
            println!("{}", serde_json::to_string(l)?);
        } else {
            println!(
                "{} {} {} {} {} fuel={} {}us{}",
                l.ts_ms,
                l.device,
                l.status,
                l.method,
                l.path,
                l.fuel,
                l.micros,
                l.error
                    .as_ref()
                    .map(|e| format!(" error={e}"))
                    .unwrap_or_default()
            );
        }
        Ok(())
    }
}
