//! Starting Fog's long-running roles (control plane, router, host) for `fog control`,
//! `fog router`, `fog host` and `fog up`, each stopped by one shared signal.

use fog_net::control_urls::ControlUrls;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use fog_control::store::StoreLocation;
use fog_control::{self as control, Control, ControlConfig};
use fog_host::agent::{self, AgentConfig};
use fog_host::harvest::ledger::Ledger;
use fog_host::harvest::policy::HarvestConfig;
use fog_host::harvest::sensors::{FileSensors, LinuxSensors, Sensors};
use fog_host::harvest::{self, HarvesterConfig};
use fog_host::server::{self, AppTable};
use fog_host::{Runtime, RuntimeConfig};
use fog_net::metrics::prometheus_client::metrics::counter::Counter;
use fog_net::metrics::prometheus_client::metrics::family::Family;
use fog_net::metrics::prometheus_client::registry::Registry;
use fog_router::{Gateway, GatewayConfig};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A stop signal shared by every role of a process.
#[derive(Debug, Clone)]
pub struct Stop(watch::Receiver<bool>);

impl Stop {
    /// A signal and the sender that fires it.
    pub fn new() -> (watch::Sender<bool>, Stop) {
        let (tx, rx) = watch::channel(false);
        (tx, Stop(rx))
    }

    /// Resolves once the signal fires.
    pub async fn wait(mut self) {
        let _ = self.0.wait_for(|stopped| *stopped).await;
    }
}

/// Serve `GET /metrics` from `exporter` on `listen`, if given: its address and task.
async fn start_metrics(
    listen: Option<SocketAddr>,
    exporter: impl FnOnce() -> Arc<fog_net::metrics::Exporter>,
    stop: &Stop,
    tasks: &mut Vec<JoinHandle<()>>,
) -> anyhow::Result<Option<SocketAddr>> {
    let Some(listen) = listen else {
        return Ok(None);
    };
    let listener = server::bind(listen).await?;
    let addr = listener.local_addr()?;
    tasks.push(tokio::spawn(fog_net::metrics::serve(
        listener,
        exporter(),
        stop.clone().wait(),
    )));
    Ok(Some(addr))
}

/// Where the control plane keeps a copy of the fog's admission token in its data directory
/// (0600), for `fog admit` on the same machine.
pub const ADMISSION_TOKEN_FILE: &str = "admission-token";

/// Start the control plane on `listen` with its registry at `store` (and in `data`), set up by
/// `config` (without `advertise`, it advertises the address it listens on: right for
/// loopback and one machine). `admission_token`, if given, becomes the fog's admission token
/// (otherwise the store's, made on first start). Returns the address, the admission token in
/// force (also written to [`ADMISSION_TOKEN_FILE`] in `data`) and the tasks.
pub async fn start_control(
    listen: SocketAddr,
    store: &StoreLocation,
    data: &Path,
    config: ControlConfig,
    admission_token: Option<&str>,
    stop: Stop,
) -> anyhow::Result<(SocketAddr, String, Vec<JoinHandle<()>>)> {
    std::fs::create_dir_all(data).with_context(|| format!("creating {}", data.display()))?;
    let store = store.open(data).context("opening the registry")?;
    if let Some(token) = admission_token {
        control::admission::check_token(token).map_err(anyhow::Error::msg)?;
        control::admission::set_token(store.as_ref(), token)
            .context("writing the admission token")?;
    }
    let token = control::admission::token(store.as_ref()).context("reading the admission token")?;
    write_private(&data.join(ADMISSION_TOKEN_FILE), token.as_bytes())?;
    let listener = server::bind(listen).await?;
    let addr = listener.local_addr()?;
    let advertise = config
        .advertise
        .as_deref()
        .map(|url| url.trim_end_matches('/').to_string())
        .unwrap_or_else(|| format!("http://{addr}"));
    let control = Control::new(
        store,
        ControlConfig {
            advertise: Some(advertise),
            ..config
        },
    );
    let api = tokio::spawn(control::serve(
        listener,
        control.clone(),
        stop.clone().wait(),
    ));
    let presence = tokio::spawn(control.clone().run_presence(stop.clone().wait()));
    let reconciler = tokio::spawn(control.run_reconciler(stop.wait()));
    Ok((addr, token, vec![api, presence, reconciler]))
}

/// Write `bytes` to `path`, readable by this user only.
fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    // An older file keeps its mode through `open`: tighten it.
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    file.write_all(bytes)?;
    Ok(())
}

/// Spot checks every `interval_s` seconds with the canary `fog` embeds; none for 0 (or
/// anything not a positive number).
pub fn canary(interval_s: f64) -> Option<fog_control::canary::CanaryConfig> {
    (interval_s.is_finite() && interval_s > 0.0).then(|| fog_control::canary::CanaryConfig {
        component: bytes::Bytes::from_static(fog_test_programs::shipped::CANARY),
        interval: std::time::Duration::from_secs_f64(interval_s.max(0.1)),
    })
}

/// How a router runs.
#[derive(Debug, Clone, clap::Args)]
pub struct RouterArgs {
    /// Reach hosts over plain HTTP instead of HTX (Noise XK, Betanet frames): local
    /// development only.
    #[arg(long)]
    pub plain: bool,
    /// Address of the Betanet front visitors open HTX connections to ("off" for none).
    #[arg(long, default_value = "127.0.0.1:7443", value_name = "ADDR|off")]
    pub betanet: String,
    /// Run the Betanet front's HTX inside TLS 1.3 (the TLS exporter bound into the Noise
    /// prologue).
    #[arg(long)]
    pub betanet_tls: bool,
    /// Address hosts behind NAT dial out to and keep a connection open on ("off" for none).
    #[arg(long, default_value = "127.0.0.1:0", value_name = "ADDR|off")]
    pub attach: String,
    /// Address hosts are told to dial for the attach endpoint, if not the one it listens on
    /// (e.g. the public address when listening on 0.0.0.0).
    #[arg(long, value_name = "ADDR")]
    pub attach_advertise: Option<SocketAddr>,
    /// Relays on the way to hosts: performance (0), balanced (2), strict (3, with delays) or
    /// strict:N.
    #[arg(long, default_value = "performance")]
    pub mix: fog_htx::mix::MixMode,
    /// Seed of the relay paths (hex; default: random per start).
    #[arg(long, value_name = "HEX")]
    pub mix_seed: Option<String>,
    /// Requests per second each visitor address may make, sustained (beyond: 429 with
    /// Retry-After); 0 for no limit (e.g. behind a local proxy, where every visitor has its
    /// address, or for a load generator).
    #[arg(long, default_value_t = fog_router::DEFAULT_VISITOR_RATE, value_name = "N")]
    pub visitor_rate: u32,
    /// Requests a visitor address may make at once on top of --visitor-rate.
    #[arg(long, default_value_t = fog_router::DEFAULT_VISITOR_BURST, value_name = "N")]
    pub visitor_burst: u32,
    /// Serve every app as an onion service on the public Tor network (arti).
    #[arg(long)]
    pub onion: bool,
    /// Serve onion services on the Tor network this arti configuration describes (e.g. the
    /// `arti.toml` of `fog testnet`); implies --onion.
    #[arg(long, value_name = "FILE")]
    pub tor_network: Option<std::path::PathBuf>,
}

/// Where a started router listens.
#[derive(Debug, Clone, Copy)]
pub struct RouterAddrs {
    /// Visitors' HTTP.
    pub http: SocketAddr,
    /// The Betanet front, if any.
    pub betanet: Option<SocketAddr>,
    /// The attach endpoint hosts dial out to, if any.
    pub attach: Option<SocketAddr>,
    /// Where Prometheus scrapes `/metrics`, if anywhere.
    pub metrics: Option<SocketAddr>,
}

/// The router's identity (its key signs front registrations), kept in `data`.
pub fn router_identity(data: &Path) -> anyhow::Result<fog_proto::auth::Identity> {
    agent::device_identity(data).with_context(|| format!("router key in {}", data.display()))
}

/// Start a router on `listen` for the control plane at `control_url`, its files (arti's) in
/// `data`, with `/metrics` on `metrics` if given.
pub async fn start_router(
    listen: SocketAddr,
    metrics: Option<SocketAddr>,
    control_url: &ControlUrls,
    args: &RouterArgs,
    identity: fog_proto::auth::Identity,
    data: &Path,
    stop: Stop,
) -> anyhow::Result<(RouterAddrs, Vec<JoinHandle<()>>)> {
    let mix_seed = match &args.mix_seed {
        Some(seed) => hex::decode(seed).context("--mix-seed must be hex")?,
        None => Vec::new(),
    };
    let identity_secret = identity.secret_bytes();
    let gateway = Gateway::new(GatewayConfig {
        htx_data_plane: !args.plain,
        mix: args.mix,
        mix_seed,
        visitor_rate: fog_router::Rate::new(args.visitor_rate, args.visitor_burst),
        ..GatewayConfig::new(control_url.clone())
    });
    let listener = server::bind(listen).await?;
    let addr = listener.local_addr()?;
    let mut tasks = vec![tokio::spawn(fog_router::serve(
        listener,
        gateway.clone(),
        stop.clone().wait(),
    ))];
    let metrics = start_metrics(
        metrics,
        || fog_router::metrics::install(&gateway),
        &stop,
        &mut tasks,
    )
    .await?;
    let betanet = if args.betanet == "off" {
        None
    } else {
        let front_listen: SocketAddr = args
            .betanet
            .parse()
            .with_context(|| format!("--betanet {:?} is not host:port or off", args.betanet))?;
        let front_listener = server::bind(front_listen).await?;
        let front_addr = front_listener.local_addr()?;
        let front = fog_router::front::Front::new(gateway.clone(), &identity, args.betanet_tls)?;
        tasks.push(tokio::spawn(fog_router::front::serve(
            front_listener,
            front.clone(),
            stop.clone().wait(),
        )));
        tasks.push(tokio::spawn(fog_router::front::run_registration(
            gateway.clone(),
            front.info(&front_addr.to_string()),
            fog_proto::auth::Identity::from_secret(&identity_secret),
            stop.clone().wait(),
        )));
        Some(front_addr)
    };
    let attach = if args.attach == "off" {
        None
    } else {
        let attach_listen: SocketAddr = args
            .attach
            .parse()
            .with_context(|| format!("--attach {:?} is not host:port or off", args.attach))?;
        let attach_listener = server::bind(attach_listen).await?;
        let attach_addr = attach_listener.local_addr()?;
        let attach = fog_router::attach::Attach::new(gateway.clone(), &identity);
        tasks.push(tokio::spawn(fog_router::attach::serve(
            attach_listener,
            attach.clone(),
            stop.clone().wait(),
        )));
        let advertised = args.attach_advertise.unwrap_or(attach_addr);
        tasks.push(tokio::spawn(fog_router::attach::run_registration(
            gateway.clone(),
            attach.info(&advertised.to_string()),
            fog_proto::auth::Identity::from_secret(&identity_secret),
            stop.clone().wait(),
        )));
        tasks.push(tokio::spawn(attach.clone().run_rtt_reports(
            fog_proto::auth::Identity::from_secret(&identity_secret),
            stop.clone().wait(),
        )));
        Some(attach_addr)
    };
    if args.onion || args.tor_network.is_some() {
        let config = fog_router::onion::OnionConfig {
            network: args.tor_network.clone(),
            cache_dir: data.join("arti-cache"),
            state_dir: data.join("arti-state"),
        };
        let onion_identity = fog_proto::auth::Identity::from_secret(&identity_secret);
        tasks.push(tokio::spawn(fog_router::onion::run(
            gateway.clone(),
            onion_identity,
            config,
            stop.clone().wait(),
        )));
    }
    tasks.push(tokio::spawn(fog_router::canary::run(
        gateway.clone(),
        fog_proto::auth::Identity::from_secret(&identity_secret),
        stop.clone().wait(),
    )));
    tasks.push(tokio::spawn(
        gateway.clone().run_relay_refresher(stop.clone().wait()),
    ));
    tasks.push(tokio::spawn(gateway.run_refresher(stop.wait())));
    Ok((
        RouterAddrs {
            http: addr,
            betanet,
            attach,
            metrics,
        },
        tasks,
    ))
}

/// Start a mix relay on `listen` with its key in `data`, registering with the control plane at
/// `control_url` every 10 s, with `/metrics` on `metrics` if given: its address, the metrics'
/// address, and its tasks.
pub async fn start_relay(
    listen: SocketAddr,
    metrics: Option<SocketAddr>,
    control_url: &ControlUrls,
    data: &Path,
    admission_token: Option<&str>,
    stop: Stop,
) -> anyhow::Result<(SocketAddr, Option<SocketAddr>, Vec<JoinHandle<()>>)> {
    let identity =
        agent::device_identity(data).with_context(|| format!("relay key in {}", data.display()))?;
    let key = fog_host::htx_server::static_key(&identity.secret_bytes());
    let listener = server::bind(listen).await?;
    let addr = listener.local_addr()?;
    let destinations = Arc::new(ListedDestinations {
        api: crate::client::Api::new(&crate::client::ControlArgs {
            control: control_url.clone(),
            key: None,
        })?,
        known: tokio::sync::Mutex::new(Listed::default()),
        forwards: Family::default(),
    });
    let mut tasks = Vec::new();
    let metrics = start_metrics(
        metrics,
        || {
            let mut registry = Registry::default();
            registry.register(
                "fog_relay_forwards",
                "Hops asked of this relay, by result: allowed (a listed relay, front or host) \
                 or refused",
                destinations.forwards.clone(),
            );
            fog_net::metrics::Exporter::new(registry, || {})
        },
        &stop,
        &mut tasks,
    )
    .await?;
    let relay = tokio::spawn(fog_htx::mix::serve_relay(
        listener,
        key.clone(),
        fog_htx::mix::RelayConfig {
            destinations: Some(destinations),
            ..fog_htx::mix::RelayConfig::default()
        },
        stop.clone().wait(),
    ));
    let info = fog_proto::api::RelayRegistration {
        addr: addr.to_string(),
        key: hex::encode(key.public),
        admission_token: admission_token.map(str::to_string),
    };
    let relay_key = identity.public_hex();
    let api = crate::client::Api::with_identity(control_url, identity)?;
    let registration = tokio::spawn(async move {
        let stop = stop.wait();
        tokio::pin!(stop);
        let mut warned = false;
        let mut pending_told = false;
        loop {
            match api
                .post_json::<_, Vec<fog_proto::api::RelayInfo>>("/v1/relays", &info)
                .await
            {
                Ok(listed) => {
                    warned = false;
                    // The answer lists admitted relays only.
                    let admitted = listed.iter().any(|r| r.key == info.key);
                    if !admitted && !pending_told {
                        tracing::warn!(
                            "relay pending admission: it is on no path until the operator runs \
                             `fog admit {relay_key}` (or it registers with --admission-token)"
                        );
                    }
                    pending_told = !admitted;
                }
                Err(err) if !warned => {
                    tracing::warn!("cannot register the relay: {err:#}");
                    warned = true;
                }
                Err(_) => {}
            }
            tokio::select! {
                () = &mut stop => return,
                () = tokio::time::sleep(std::time::Duration::from_secs(10)) => {}
            }
        }
    });
    tasks.extend([relay, registration]);
    Ok((addr, metrics, tasks))
}

/// A relay's destinations: the relays, Betanet fronts and hosts (HTX endpoints of live replicas)
/// the control plane lists, so a relay is no open TCP forwarder. The list is read again when it
/// is older than [`LISTED_FRESH`], or on a miss once [`LISTED_RETRY`] has passed (a host placed a
/// moment ago).
struct ListedDestinations {
    api: crate::client::Api,
    known: tokio::sync::Mutex<Listed>,
    /// Hops asked for, by result (exported with `fog relay --metrics-listen`).
    forwards: Family<Vec<(&'static str, &'static str)>, Counter>,
}

#[derive(Default)]
struct Listed {
    addrs: std::collections::HashSet<String>,
    read_at: Option<std::time::Instant>,
}

const LISTED_FRESH: std::time::Duration = std::time::Duration::from_secs(10);
const LISTED_RETRY: std::time::Duration = std::time::Duration::from_secs(1);

impl ListedDestinations {
    async fn read(&self) -> anyhow::Result<std::collections::HashSet<String>> {
        // Read on a miss, while a FORWARD waits: the three lists at once.
        let (relays, fronts, routes): (
            Vec<fog_proto::api::RelayInfo>,
            Vec<fog_proto::api::FrontInfo>,
            Vec<fog_proto::api::Route>,
        ) = tokio::try_join!(
            self.api.get("/v1/relays"),
            self.api.get("/v1/fronts"),
            self.api.get("/v1/routes"),
        )?;
        let hosts = routes
            .into_iter()
            .flat_map(|r| r.replicas)
            .filter_map(|r| r.htx.and_then(|h| h.addr));
        Ok(relays
            .into_iter()
            .map(|r| r.addr)
            .chain(fronts.into_iter().map(|f| f.addr))
            .chain(hosts)
            .collect())
    }
}

impl fog_htx::mix::Destinations for ListedDestinations {
    fn allows<'a>(
        &'a self,
        addr: &'a str,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send + 'a>> {
        Box::pin(async move {
            let mut known = self.known.lock().await;
            let age = known.read_at.map(|at| at.elapsed());
            let stale = age.is_none_or(|age| age >= LISTED_FRESH);
            let retry = age.is_none_or(|age| age >= LISTED_RETRY);
            if stale || (retry && !known.addrs.contains(addr)) {
                match self.read().await {
                    Ok(addrs) => {
                        known.addrs = addrs;
                        known.read_at = Some(std::time::Instant::now());
                    }
                    Err(err) if !known.addrs.contains(addr) => {
                        return Err(format!(
                            "cannot check {addr} with the control plane: {err:#}"
                        ));
                    }
                    Err(err) => tracing::warn!("relay destinations not refreshed: {err:#}"),
                }
            }
            let allowed = known.addrs.contains(addr);
            self.forwards
                .get_or_create(&vec![(
                    "result",
                    if allowed { "allowed" } else { "refused" },
                )])
                .inc();
            if allowed {
                Ok(())
            } else {
                Err(format!(
                    "{addr} is not a relay, Betanet front or host the control plane lists"
                ))
            }
        })
    }
}

/// How a host presents itself.
#[derive(Debug, Clone, clap::Args)]
pub struct HostArgs {
    /// Region this device is in.
    #[arg(long, default_value = "local")]
    pub region: String,
    /// CPU cores offered to the fog (default: all).
    #[arg(long)]
    pub cpu: Option<f64>,
    /// Memory offered, MiB.
    #[arg(long, default_value_t = 2048.0)]
    pub mem_mb: f64,
    /// Disk offered, MiB.
    #[arg(long, default_value_t = 10240.0)]
    pub disk_mb: f64,
    /// Requests in flight across all apps (instance pool size).
    #[arg(long, default_value_t = 256)]
    pub pool: u32,
    /// Compiled components kept in memory, MiB; beyond it the least recently used are dropped
    /// and mapped again from the on-disk cache when an app of theirs is next visited.
    #[arg(long, default_value_t = (fog_host::DEFAULT_CODE_BUDGET >> 20) as u64)]
    pub code_budget_mb: u64,
    /// Ignore the harvest policy: offer the capacity above at all times (servers, development).
    #[arg(long)]
    pub always_on: bool,
    /// Harvest policy file (TOML, a `[harvest]` section; see host/harvest.example.toml).
    #[arg(long, value_name = "FILE")]
    pub harvest: Option<std::path::PathBuf>,
    /// Read sensors from this JSON file instead of the machine (for tests, or a power daemon).
    #[arg(long, value_name = "FILE")]
    pub sensors: Option<std::path::PathBuf>,
    /// Price per CPU-hour this device asks (0: the market base; at most 1000). Apps whose
    /// `--max-price` is lower never run here.
    #[arg(long, default_value_t = 0.15, value_parser = parse_price)]
    pub price: f64,
    /// Length of a rewards-ledger period, seconds.
    #[arg(long, default_value_t = 60)]
    pub ledger_period: u64,
    /// Serve the device owner's page (what runs here, harvest state and reason, fuel and
    /// credits over time) at http://ADDR/; alone, on 127.0.0.1:7072. Keep it on loopback: it
    /// is the owner's, not the fog's.
    #[arg(
        long,
        value_name = "ADDR",
        num_args = 0..=1,
        default_missing_value = "127.0.0.1:7072"
    )]
    pub status_listen: Option<SocketAddr>,
    /// TEST ONLY: flip a bit in every byte of every response body the apps give, as a broken
    /// or cheating device would (spot checks catch it, and the device loses its replicas).
    #[arg(long, hide = true)]
    pub corrupt_responses: bool,
    /// The fog's admission token (the operator's `fog admit token`): the device is admitted
    /// when it registers. Without it, it registers pending and gets no work until the operator
    /// runs `fog admit DEVICE`.
    #[arg(
        long,
        value_name = "TOKEN",
        env = "FOG_ADMISSION_TOKEN",
        hide_env_values = true
    )]
    pub admission_token: Option<String>,
}

/// A price per CPU-hour from the command line: a finite number in [0, 1000], so a typo never
/// reaches the control plane.
pub fn parse_price(text: &str) -> Result<f64, String> {
    let price: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a number"))?;
    fog_proto::api::validate_price("price", price)?;
    Ok(price)
}

/// How a started host is reached.
#[derive(Debug, Clone)]
pub struct HostAddrs {
    /// Its plain-HTTP listener, if it listens at all.
    pub http: Option<SocketAddr>,
    /// Its device id.
    pub device: String,
    /// Where Prometheus scrapes `/metrics`, if anywhere.
    pub metrics: Option<SocketAddr>,
    /// Where the owner's page is, if anywhere.
    pub status: Option<SocketAddr>,
}

/// Start a host, agent talking to `control_url`, state in `data`. With `listen`, it also
/// accepts connections there (plain HTTP) and on the same address's port 0 (HTX), and routers
/// dial it; without, it needs no inbound port: it dials out to the routers the control plane
/// names. With `metrics`, `/metrics` is served there.
pub async fn start_host(
    listen: Option<SocketAddr>,
    metrics: Option<SocketAddr>,
    control_url: &ControlUrls,
    data: &Path,
    args: &HostArgs,
    stop: Stop,
) -> anyhow::Result<(HostAddrs, Vec<JoinHandle<()>>)> {
    let identity = agent::device_identity(data)
        .with_context(|| format!("device key in {}", data.display()))?;
    let runtime = Runtime::new(RuntimeConfig {
        data_dir: Some(data.to_path_buf()),
        pool_size: args.pool,
        code_budget: usize::try_from(args.code_budget_mb << 20).unwrap_or(usize::MAX),
        ..RuntimeConfig::default()
    })?;
    // Requests served are logged under the data directory, so a restart loses none the control
    // plane has not taken yet.
    let log = fog_host::reqlog::RequestLog::open(
        &data.join("logs"),
        fog_host::reqlog::DEFAULT_FILE_BYTES,
        fog_host::reqlog::DEFAULT_FILES,
    )?;
    let apps = AppTable::with_request_log(log);
    if args.corrupt_responses {
        tracing::warn!("--corrupt-responses: every app's answers are corrupted (test only)");
        apps.corrupt_responses();
    }
    let listener = match listen {
        Some(listen) => Some(server::bind(listen).await?),
        None => None,
    };
    let addr = listener.as_ref().map(|l| l.local_addr()).transpose()?;
    let cpu = args
        .cpu
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1.0, |n| n.get() as f64));
    let config = AgentConfig {
        control: control_url.clone(),
        advertise: addr,
        region: args.region.clone(),
        cpu,
        mem_mb: args.mem_mb,
        disk_mb: args.disk_mb,
        price_cpu_hour: args.price,
        heartbeat: std::time::Duration::from_secs(1),
        harvest: None,
        htx: None,
        attacher: None,
        admission_token: args.admission_token.clone().filter(|t| !t.is_empty()),
    };
    let mut tasks = Vec::new();
    let harvest = if args.always_on {
        None
    } else {
        let policy = match &args.harvest {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?;
                HarvestConfig::from_toml(&text)
                    .map_err(anyhow::Error::msg)
                    .with_context(|| format!("bad harvest policy {}", path.display()))?
            }
            None => HarvestConfig::default(),
        };
        let sensors: Box<dyn Sensors> = match &args.sensors {
            Some(path) => Box::new(FileSensors::new(path)),
            None => Box::new(LinuxSensors::new()),
        };
        let ledger_db = sled::open(data.join("ledger"))
            .with_context(|| format!("opening the ledger in {}", data.display()))?;
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_millis() as u64;
        let ledger_identity = fog_proto::auth::Identity::from_text(&identity.to_text())
            .map_err(anyhow::Error::msg)?;
        let ledger = Ledger::new(
            ledger_db.open_tree("periods")?,
            ledger_identity,
            args.price,
            now_ms,
        );
        let config = HarvesterConfig {
            policy,
            price_cpu_hour: args.price,
            period: std::time::Duration::from_secs(args.ledger_period.max(1)),
            status_file: Some(data.join("status.json")),
        };
        let (handle, task) =
            harvest::start(sensors, config, apps.clone(), ledger, stop.clone().wait());
        tasks.push(task);
        Some(handle)
    };
    let metrics = start_metrics(
        metrics,
        || fog_host::metrics::install(&apps, harvest.as_ref().map(|h| h.status.clone())),
        &stop,
        &mut tasks,
    )
    .await?;
    // The data plane routers use: HTX (Noise XK to a key derived from the device identity),
    // over the connections the host dials out to routers, and on a listener if it has one.
    let htx_key = fog_host::htx_server::static_key(&identity.secret_bytes());
    let mut htx = fog_proto::api::HtxEndpoint {
        addr: None,
        key: hex::encode(htx_key.public),
    };
    if let (Some(listener), Some(listen)) = (listener, listen) {
        tasks.push(tokio::spawn(server::serve(
            listener,
            apps.clone(),
            stop.clone().wait(),
        )));
        let htx_listener = server::bind(std::net::SocketAddr::new(listen.ip(), 0)).await?;
        htx.addr = Some(htx_listener.local_addr()?.to_string());
        tasks.push(tokio::spawn(fog_host::htx_server::serve(
            htx_listener,
            apps.clone(),
            htx_key.clone(),
            stop.clone().wait(),
        )));
    }
    // Every host dials out: it is how one behind NAT is reached, and how any host meets peers
    // behind NAT.
    let attacher = fog_host::attach::Attacher::new(htx_key, apps.clone());
    let flush = runtime.clone();
    let config = AgentConfig {
        harvest,
        htx: Some(htx),
        attacher: Some(attacher),
        ..config
    };
    let device = fog_proto::auth::device_id(&identity.public_hex());
    let status = match args.status_listen {
        Some(listen) => {
            let listener = server::bind(listen)
                .await
                .with_context(|| format!("device page on {listen}"))?;
            let addr = listener.local_addr()?;
            let page = fog_host::owner::OwnerPage::new(
                device.clone(),
                apps.clone(),
                config.harvest.as_ref().map(|h| h.status.clone()),
            );
            tasks.push(tokio::spawn(fog_host::owner::serve(
                listener,
                page,
                stop.clone().wait(),
            )));
            Some(addr)
        }
        None => None,
    };
    let agent = tokio::spawn(async move {
        agent::run(runtime, apps, identity, config, stop.wait()).await;
        if let Err(err) = flush.flush() {
            tracing::error!("cannot save app state: {err}");
        }
    });
    tasks.push(agent);
    Ok((
        HostAddrs {
            http: addr,
            device,
            metrics,
            status,
        },
        tasks,
    ))
}

/// Wait for Ctrl-C or SIGTERM, fire `stop`, and wait for `tasks` to finish.
pub async fn run_until_signal(stop: watch::Sender<bool>, tasks: Vec<JoinHandle<()>>) {
    super::commands::run::shutdown_signal().await;
    let _ = stop.send(true);
    for task in tasks {
        let _ = task.await;
    }
}
