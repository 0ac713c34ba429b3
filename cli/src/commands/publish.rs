//! `fog publish app.wasm`: sign and upload a component, wait until it runs, print its URLs.
//! `fog publish DIR`: the same for a static site — the directory packed as a bundle, served by
//! the fileserver component embedded in `fog`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use fog_host::LimitArgs;
use fog_proto::api::{AppInfo, Bid, PublishMeta, Tier};

use crate::client::{Api, ControlArgs, print_json};
use crate::progress::Spinner;

/// Publish an app: upload the component, have the fog place and run it, print its URLs.
#[derive(Debug, clap::Args)]
pub struct Publish {
    /// The component (built for wasm32-wasip2, exporting wasi:http/incoming-handler), or a
    /// directory to publish as a static site.
    app: PathBuf,
    /// The app's name (default: the file's stem, or the directory's name).
    #[arg(long)]
    name: Option<String>,
    /// Service tier: S (3 replicas), A (2), B (1).
    #[arg(long, default_value = "B")]
    tier: Tier,
    /// Replicas, if not the tier's default.
    #[arg(long)]
    replicas: Option<u32>,
    /// Highest price per CPU-hour you pay: no replica runs on a device that asks more, or whose
    /// market price for this app is higher.
    #[arg(long, value_parser = crate::services::parse_price)]
    max_price: Option<f64>,
    /// How you buy capacity: spot, on-demand or reserved.
    #[arg(long)]
    bid: Option<Bid>,
    /// An origin the app may send HTTP requests to, as `https://api.example.com` or
    /// `http://127.0.0.1:8080` (scheme, host and port must match; repeat for more). Every other
    /// destination is refused.
    #[arg(long = "allow-outbound", value_name = "URL")]
    allow_outbound: Vec<fog_proto::Origin>,
    /// A variable the app reads through wasi:config (repeat for more); variables and secrets
    /// set before and not named here are kept.
    #[arg(long = "var", value_name = "K=V", value_parser = super::config::parse_var)]
    vars: Vec<(String, String)>,
    /// A secret the app reads through wasi:config, from a file (repeat for more): stored
    /// encrypted, never printed.
    #[arg(long = "secret", value_name = "K=@FILE", value_parser = super::config::parse_secret)]
    secrets: Vec<(String, fog_proto::config::Secret)>,
    /// Answer a request only once its key-value writes are on the host's disk, so a crash of
    /// the host never loses an acknowledged write (for tier B, which has no follower to hold
    /// them). Costs a disk flush per request (shared by concurrent requests).
    #[arg(long)]
    durable: bool,
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
                .unwrap_or_else(|| super::run::default_name(&site_name_source(&self.app)));
            let meta = PublishMeta {
                name,
                tier: self.tier,
                replicas: self.replicas,
                limits: self.limits.limits(),
                bundle: None,
                max_price: self.max_price,
                bid: self.bid,
                allow_outbound: self.allow_outbound.clone(),
                vars: self.vars.iter().cloned().collect(),
                secrets: self.secrets.iter().cloned().collect(),
                durable: self.durable,
            };
            let wait = Duration::from_secs(self.wait);
            let info = if self.app.is_dir() {
                publish_site(&api, &self.app, meta, wait).await?
            } else {
                publish(&api, &self.app, &meta, wait).await?
            };
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
    let size = std::fs::metadata(path)
        .with_context(|| format!("cannot read {}", path.display()))?
        .len();
    // Refuse before reading and uploading what the control plane would refuse anyway.
    let limit = fog_proto::api::MAX_COMPONENT_BYTES;
    if size > limit {
        bail!(
            "{} is {} MiB, over the component size limit of {} MiB",
            path.display(),
            size.div_ceil(1 << 20),
            limit >> 20
        );
    }
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    publish_bytes(api, bytes, meta, wait).await
}

/// Deadline of one request to a static site unless `--timeout` says otherwise: long enough to
/// send a large file to a slow visitor.
const SITE_TIMEOUT: Duration = Duration::from_secs(300);

/// Pack `dir`, upload it as a bundle, then publish Fog's fileserver serving it as `meta`.
/// Nothing is uploaded when the directory is unusable (empty, too large, not a directory).
pub async fn publish_site(
    api: &Api,
    dir: &std::path::Path,
    mut meta: PublishMeta,
    wait: Duration,
) -> anyhow::Result<AppInfo> {
    meta.validate().map_err(anyhow::Error::msg)?;
    let packed = crate::site::pack(dir)?;
    let spinner = Spinner::start(format!(
        "uploading site {} ({} files, {} KiB)",
        meta.name,
        packed.files,
        packed.bytes.len().div_ceil(1024)
    ));
    #[derive(serde::Deserialize)]
    struct Stored {
        sha256: String,
    }
    let stored: Stored = api
        .signed(reqwest::Method::POST, "/v1/bundles", packed.bytes, "")
        .await
        .with_context(|| format!("uploading the site {}", dir.display()))?;
    spinner.finish();
    if meta.limits.timeout == fog_proto::Limits::default().timeout {
        meta.limits.timeout = SITE_TIMEOUT;
    }
    meta.limits.max_response_body = fog_proto::bundle::MAX_BUNDLE_BYTES;
    meta.bundle = Some(stored.sha256);
    publish_bytes(
        api,
        fog_test_programs::shipped::FILESERVER.to_vec(),
        &meta,
        wait,
    )
    .await
}

/// Upload the component `bytes` as `meta` and wait up to `wait` for its replicas to run.
pub async fn publish_bytes(
    api: &Api,
    bytes: Vec<u8>,
    meta: &PublishMeta,
    wait: Duration,
) -> anyhow::Result<AppInfo> {
    let spinner = Spinner::start(format!(
        "uploading {} ({} KiB)",
        meta.name,
        bytes.len().div_ceil(1024)
    ));
    let meta_json = ascii_json(&serde_json::to_string(meta)?);
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

/// `json` with every non-ASCII character escaped (`\uXXXX`): the metadata travels in a header,
/// where only ASCII is safe, and a variable may hold any text.
fn ascii_json(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        }
    }
    out
}

/// What a default name comes from: the file, or for a directory its own name (`.` resolved).
fn site_name_source(path: &std::path::Path) -> PathBuf {
    if path.is_dir() {
        let dir = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
        // `mysite/public` is better named `mysite` than `public`.
        let named = match dir.file_name().and_then(|n| n.to_str()) {
            Some("public" | "dist" | "build" | "site" | "www") => dir.parent().unwrap_or(&dir),
            _ => &dir,
        };
        PathBuf::from(named.file_name().unwrap_or_default())
    } else {
        path.to_path_buf()
    }
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
