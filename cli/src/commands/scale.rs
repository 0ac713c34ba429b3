//! `fog scale APP N` or `fog scale APP --min A --max B --target RPS [--idle SECS]`: a fixed
//! number of replicas, or autoscaling.

use anyhow::bail;
use fog_proto::api::{AppInfo, Autoscale, ScaleRequest};

use crate::client::{Api, ControlArgs, print_json};

/// Change how many replicas an app you own runs: a fixed count, or autoscaling between --min
/// and --max aiming at --target requests per second per replica (--min 0 with --idle parks an
/// idle app at zero replicas; its next request wakes it).
#[derive(Debug, clap::Args)]
pub struct Scale {
    /// The app.
    app: String,
    /// A fixed number of replicas.
    #[arg(conflicts_with_all = ["min", "max", "target", "idle"])]
    replicas: Option<u32>,
    /// Autoscale: fewest replicas (0 to scale to zero when idle).
    #[arg(long, requires_all = ["max", "target"])]
    min: Option<u32>,
    /// Autoscale: most replicas.
    #[arg(long, requires_all = ["min", "target"])]
    max: Option<u32>,
    /// Autoscale: requests per second per replica to aim at.
    #[arg(long, requires_all = ["min", "max"])]
    target: Option<f64>,
    /// Autoscale: seconds without a request before scaling to zero (needs --min 0).
    #[arg(long, default_value_t = 0)]
    idle: u64,
    #[command(flatten)]
    control: ControlArgs,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

impl Scale {
    pub fn execute(self) -> anyhow::Result<()> {
        let request = match (self.replicas, self.min, self.max, self.target) {
            (Some(replicas), None, None, None) => ScaleRequest {
                replicas: Some(replicas),
                autoscale: None,
            },
            (None, Some(min), Some(max), Some(target_rps)) => ScaleRequest {
                replicas: None,
                autoscale: Some(Autoscale {
                    min,
                    max,
                    target_rps,
                    idle_s: self.idle,
                }),
            },
            _ => bail!("give a replica count, or --min, --max and --target"),
        };
        crate::client::runtime()?.block_on(async {
            let body = serde_json::to_vec(&request)?;
            let path = format!("/v1/apps/{}/scale", self.app);
            let info: AppInfo = Api::new(&self.control)?
                .signed(reqwest::Method::POST, &path, body, "")
                .await?;
            if self.json {
                return print_json(&info);
            }
            match &info.autoscale {
                Some(a) => println!(
                    "{} autoscales between {} and {} replica(s) at {} req/s per replica{} (now {})",
                    info.name,
                    a.min,
                    a.max,
                    a.target_rps,
                    if a.min == 0 {
                        format!(", to zero after {} s idle", a.idle_s)
                    } else {
                        String::new()
                    },
                    info.replicas
                ),
                None => println!("{} now wants {} replica(s)", info.name, info.replicas),
            }
            Ok(())
        })
    }
}
