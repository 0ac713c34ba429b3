//! `fog move APP --to DEVICE`: move an app's primary, with its state, to another device.

use std::time::{Duration, Instant};

use anyhow::bail;
use fog_proto::api::{AppInfo, MoveRequest};

use crate::client::{Api, ControlArgs, print_json};

/// Move the primary replica of an app you own to DEVICE: the device copies the state and
/// follows the change log, writes pause briefly at the switch-over (routers hold requests), and
/// the old device lets go. Waits until the move is done (or `--no-wait`).
#[derive(Debug, clap::Args)]
pub struct Move {
    /// The app.
    app: String,
    /// The device to move to (an id from `fog devices`).
    #[arg(long)]
    to: String,
    /// Return once the move is accepted.
    #[arg(long)]
    no_wait: bool,
    /// Give up waiting after this many seconds.
    #[arg(long, default_value_t = 180)]
    timeout: u64,
    #[command(flatten)]
    control: ControlArgs,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

impl Move {
    pub fn execute(self) -> anyhow::Result<()> {
        crate::client::runtime()?.block_on(async {
            let api = Api::new(&self.control)?;
            let body = serde_json::to_vec(&MoveRequest {
                to: self.to.clone(),
            })?;
            let path = format!("/v1/apps/{}/move", self.app);
            let mut info: AppInfo = api.signed(reqwest::Method::POST, &path, body, "").await?;
            let spinner =
                crate::progress::Spinner::start(format!("moving {} to {}", self.app, self.to));
            let deadline = Instant::now() + Duration::from_secs(self.timeout);
            loop {
                if self.no_wait {
                    break;
                }
                info = api.get(&format!("/v1/apps/{}", self.app)).await?;
                let primary = info.assigned.first().map(String::as_str);
                if info.moving.is_none() && primary == Some(self.to.as_str()) {
                    break;
                }
                if info.moving.is_none()
                    && let Some(abandoned) = &info.move_abandoned
                {
                    spinner.finish();
                    bail!("{abandoned}");
                }
                if Instant::now() > deadline {
                    spinner.finish();
                    bail!("{} is still moving after {} s", self.app, self.timeout);
                }
                if let Some(moving) = &info.moving {
                    spinner.say(format!("moving {}: {moving}", self.app));
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            spinner.finish();
            if self.json {
                return print_json(&info);
            }
            match info.events.last() {
                Some(event) if !self.no_wait => println!("{}: {event}", info.name),
                _ => println!("{}: move to {} accepted", info.name, self.to),
            }
            Ok(())
        })
    }
}
