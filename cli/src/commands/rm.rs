//! `fog rm APP`: remove an app you own; its replicas stop.

use crate::client::{Api, ControlArgs};

/// Remove an app you own: its replicas stop and its component is deleted.
#[derive(Debug, clap::Args)]
pub struct Rm {
    /// The app.
    app: String,
    #[command(flatten)]
    control: ControlArgs,
}

impl Rm {
    pub fn execute(self) -> anyhow::Result<()> {
        crate::client::runtime()?.block_on(async {
            let path = format!("/v1/apps/{}", self.app);
            let _: serde_json::Value = Api::new(&self.control)?
                .signed(reqwest::Method::DELETE, &path, Vec::new(), "")
                .await?;
            println!("removed {}", self.app);
            Ok(())
        })
    }
}
