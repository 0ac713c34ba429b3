//! `fog publish app.wasm`: sign and upload a component, wait until it runs, print its URLs.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use fog_host::LimitArgs;
use fog_proto::api::{AppInfo, PublishMeta, Tier};

use crate::client::{Api, ControlArgs, print_json};
use crate::progress::Spinner;

/// Publish an app: upload the component, have the fog place and run it, print its URLs.
#[derive(Debug, clap::Args)]
pub struct Publish {
    /// The component (built for wasm32-wasip2, exporting wasi:http/incoming-handler).
    app: PathBuf,
    /// The app's name (default: the file's stem).
    #[arg(long)]
    name: Option<String>,
    /// Service tier: S (3 replicas), A (2), B (1).
    #[arg(long, default_value = "B")]
    tier: Tier,
    /// Replicas, if not the tier's default.
    #[arg(long)]
    replicas: Option<u32>,
    #[command(flatten)]
    limits: LimitArgs,
    #[command(flatten)]
    control: ControlArgs,
    /// The router whose URLs to print.
    #[arg(long, env = "FOG_ROUTER", default_value = "http://127.0.0.1:7080")]
    router: String,
    /// Seconds to wait for the replicas to run (0: do not wait).
    #[arg(long, default_value_t = 60)]
    wait: u64,
    /// Print the app as JSON.
    #[arg(long)]
    json: bool,
}

impl Publish {
    pub fn execute(self) -> anyhow::Result<()> {
        crate::client::runtime()?.block_on(async {
            let api = Api::new(&self.control)?;
            let name = self
                .name
                .clone()
                .unwrap_or_else(|| super::run::default_name(&self.app));
            let meta = PublishMeta {
                name,
                tier: self.tier,
                replicas: self.replicas,
                limits: self.limits.limits(),
            };
            let info = publish(&api, &self.app, &meta, Duration::from_secs(self.wait)).await?;
            if self.json {
                return print_json(&info);
            }
            print_app(&info, &self.router);
            Ok(())
        })
    }
}

/// Upload `path` as `meta` and wait up to `wait` for its replicas to run.
pub async fn publish(
    api: &Api,
    path: &std::path::Path,
    meta: &PublishMeta,
    wait: Duration,
) -> anyhow::Result<AppInfo> {
    meta.validate().map_err(anyhow::Error::msg)?;
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let spinner = Spinner::start(format!(
        "uploading {} ({} KiB)",
        meta.name,
        bytes.len().div_ceil(1024)
    ));
    let meta_json = serde_json::to_string(meta)?;
    let mut info: AppInfo = api
        .signed(reqwest::Method::POST, "/v1/apps", bytes, &meta_json)
        .await
        .with_context(|| format!("publishing {}", meta.name))?;
    let started = Instant::now();
    while info.running.len() < info.replicas as usize && started.elapsed() < wait {
        spinner.say(format!(
            "placing {}: {} of {} replicas running",
            info.name,
            info.running.len(),
            info.replicas
        ));
        tokio::time::sleep(Duration::from_millis(100)).await;
        info = api.get(&format!("/v1/apps/{}", info.name)).await?;
    }
    spinner.finish();
    Ok(info)
}

/// Print what a developer wants to know about a published app.
pub fn print_app(info: &AppInfo, router: &str) {
    println!(
        "published {} v{} ({} KiB, sha256 {}), tier {:?}, {} replica(s)",
        info.name,
        info.version,
        info.size.div_ceil(1024),
        &info.sha256[..12],
        info.tier,
        info.replicas
    );
    if info.running.is_empty() {
        println!(
            "not running yet{}",
            info.problem
                .as_deref()
                .map(|p| format!(": {p}"))
                .unwrap_or_default()
        );
    } else {
        println!("running on {}", info.running.join(", "));
    }
    if let Some(problem) = &info.problem {
        println!("placement problem: {problem}");
    }
    let router = router.trim_end_matches('/');
    let (scheme, authority) = router.split_once("://").unwrap_or(("http", router));
    let port = authority
        .rsplit_once(':')
        .map(|(_, p)| format!(":{p}"))
        .unwrap_or_default();
    println!("  {scheme}://{}.localhost{port}/", info.name);
    println!("  {router}/apps/{}/", info.name);
    for name in &info.betanet {
        println!("  {name}");
    }
    if let Some(onion) = &info.onion {
        println!(
            "  http://{onion}/  (served by routers with an onion front: --onion, --tor-network)"
        );
    }
}
