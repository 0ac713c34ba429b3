//! `fog scale APP N`: change how many replicas an app runs.

use fog_proto::api::{AppInfo, ScaleRequest};

use crate::client::{Api, ControlArgs, print_json};

/// Change the number of replicas of an app you own.
#[derive(Debug, clap::Args)]
pub struct Scale {
    /// The app.
    app: String,
    /// Replicas wanted.
    replicas: u32,
    #[command(flatten)]
    control: ControlArgs,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

impl Scale {
    pub fn execute(self) -> anyhow::Result<()> {
        crate::client::runtime()?.block_on(async {
            let body = serde_json::to_vec(&ScaleRequest {
                replicas: self.replicas,
            })?;
            let path = format!("/v1/apps/{}/scale", self.app);
            let info: AppInfo = Api::new(&self.control)?
                .signed(reqwest::Method::POST, &path, body, "")
                .await?;
            if self.json {
                return print_json(&info);
            }
            println!("{} now wants {} replica(s)", info.name, info.replicas);
            Ok(())
        })
    }
}
