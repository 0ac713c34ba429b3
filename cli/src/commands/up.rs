//! `fog up`: the embedded default — control plane, router and N hosts in one process over one
//! data directory; `--demo` also publishes the example apps (embedded in `fog`) and a static site,
//! and prints their URLs.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use fog_proto::Limits;
use fog_proto::api::{PublishMeta, Tier};

use crate::client::{Api, ControlArgs};
use crate::services::{self, HostArgs, RouterArgs, Stop};

/// Run a whole fog on this machine: control plane, router and hosts in one process.
#[derive(Debug, clap::Args)]
pub struct Up {
    /// Hosts to run.
    #[arg(long, default_value_t = 3)]
    hosts: u32,
    /// Directory for everything (registry, hosts' keys and state, the demo key).
    #[arg(long, value_name = "DIR")]
    data: Option<PathBuf>,
    /// Address of the control plane's API.
    #[arg(long, default_value = "127.0.0.1:7070")]
    control_listen: SocketAddr,
    /// Address of the router.
    #[arg(long, default_value = "127.0.0.1:7080")]
    router_listen: SocketAddr,
    /// Publish the example apps (hello, counter, api, embedded in `fog`) and a static site.
    #[arg(long)]
    demo: bool,
    #[command(flatten)]
    router: RouterArgs,
    /// Mix relays to run (paths through them need --mix balanced or strict).
    #[arg(long, default_value_t = 0)]
    relays: u32,
    /// Also start a private Tor network on this machine (Debian's tor) and serve every app as
    /// an onion service on it.
    #[arg(long)]
    tor_testnet: bool,
    /// Let the hosts accept connections on loopback (routers dial them) instead of dialling
    /// out to the router.
    #[arg(long)]
    hosts_listen: bool,
    /// Directory holding hello.wasm, counter.wasm and api.wasm for --demo, instead of the
    /// copies embedded in `fog`.
    #[arg(long, value_name = "DIR", env = "FOG_EXAMPLES")]
    examples: Option<PathBuf>,
    /// Also serve the router's, each host's and each relay's Prometheus metrics, each on a
    /// free loopback port (printed); the control plane's are always at /metrics.
    #[arg(long)]
    metrics: bool,
}

/// Most hosts `fog up` runs in one process.
const MAX_HOSTS: u32 = 64;
/// Most relays `fog up` runs in one process.
const MAX_RELAYS: u32 = 16;
/// The demo's apps and tiers.
const DEMO_APPS: [(&str, Tier); 3] = [("hello", Tier::B), ("counter", Tier::A), ("api", Tier::B)];

impl Up {
    /// Check the flags before anything starts, so a bad one never leaves half a fog running.
    fn check(&self) -> anyhow::Result<()> {
        if !(1..=MAX_HOSTS).contains(&self.hosts) {
            anyhow::bail!(
                "--hosts must be between 1 and {MAX_HOSTS}, got {}",
                self.hosts
            );
        }
        if self.relays > MAX_RELAYS {
            anyhow::bail!("--relays must be at most {MAX_RELAYS}, got {}", self.relays);
        }
        if self.control_listen == self.router_listen && self.control_listen.port() != 0 {
            anyhow::bail!(
                "--control-listen and --router-listen are both {}",
                self.control_listen
            );
        }
        if let Some(dir) = &self.examples {
            if !self.demo {
                anyhow::bail!("--examples is only used with --demo");
            }
            for (name, _) in DEMO_APPS {
                let path = dir.join(format!("{name}.wasm"));
                if !path.is_file() {
                    anyhow::bail!("--examples {}: no {name}.wasm there", dir.display());
                }
            }
        }
        if let Some(data) = &self.data
            && data.exists()
            && !data.is_dir()
        {
            anyhow::bail!("--data {} is not a directory", data.display());
        }
        Ok(())
    }
}

impl Up {
    pub fn execute(self) -> anyhow::Result<()> {
        self.check()?;
        let data = self
            .data
            .clone()
            .unwrap_or_else(|| fog_host::agent::default_data_dir().join("up"));
        crate::client::runtime()?.block_on(async {
            let (stop_tx, stop) = Stop::new();
            let router_identity = services::router_identity(&data.join("router"))?;
            let trusted = vec![router_identity.public_hex()];
            let (control, admission_token, mut tasks) = services::start_control(self.control_listen, &fog_control::store::StoreLocation::Sled, &data.join("control"), fog_control::ControlConfig { trusted_routers: trusted, snapshot_every: std::time::Duration::from_secs(5), secrets_key: Some(data.join("control").join("secrets.key")), canary: services::canary(fog_control::canary::DEFAULT_INTERVAL.as_secs_f64()), ..fog_control::ControlConfig::default() }, None, stop.clone()).await?;
            let control_url = format!("http://{control}");
            let control_urls: fog_net::control_urls::ControlUrls = control_url.parse()?;
            let metrics: Option<SocketAddr> = if self.metrics { Some("127.0.0.1:0".parse()?) } else { None };
            let print_metrics = |role: &str, addr: Option<SocketAddr>| {
                if let Some(addr) = addr {
                    println!("fog: {role} metrics on http://{addr}/metrics");
                }
            };
            for n in 1..=self.relays {
                let dir = data.join("relays").join(n.to_string());
                let (addr, relay_metrics, more) = services::start_relay("127.0.0.1:0".parse()?, metrics, &control_urls, &dir, Some(&admission_token), stop.clone()).await?;
                println!("fog: relay {n} on {addr}");
                print_metrics(&format!("relay {n}"), relay_metrics);
                tasks.extend(more);
            }
            let mut router_args = self.router.clone();
            let testnet = if self.tor_testnet {
                let dir = data.join("testnet");
                let _ = std::fs::remove_dir_all(&dir);
                // Started from this (the main) thread: tor processes end with the thread that
                // started them.
                let layout = crate::testnet::create(&dir, 6, std::net::Ipv4Addr::LOCALHOST)?;
                let net = layout.start("")?;
                println!("fog: private Tor network starting in {} (about a minute)", dir.display());
                let testnet = tokio::task::spawn_blocking(move || -> anyhow::Result<crate::testnet::Testnet> {
                    let mut net = net;
                    net.wait_ready(std::time::Duration::from_secs(240), &|step| tracing::info!("tor testnet: {step}"))?;
                    Ok(net)
                })
                .await??;
                println!("fog: private Tor network ready: socks5 {} (curl --socks5-hostname {} http://<app>.onion/)", testnet.layout.socks, testnet.layout.socks);
                router_args.tor_network = Some(testnet.layout.arti_config.clone());
                Some(testnet)
            } else {
                None
            };
            let (router_addrs, more) = services::start_router(self.router_listen, metrics, &control_urls, &router_args, router_identity, &data.join("router"), stop.clone()).await?;
            print_metrics("router", router_addrs.metrics);
            let router = router_addrs.http;
            tasks.extend(more);
            let host_args = HostArgs {
                region: "local".into(),
                cpu: Some(1.0),
                mem_mb: 1024.0,
                disk_mb: 4096.0,
                pool: 128,
                code_budget_mb: (fog_host::DEFAULT_CODE_BUDGET >> 20) as u64,
                // The embedded demo runs on a developer's machine: no harvest policy.
                always_on: true,
                harvest: None,
                sensors: None,
                price: 0.15,
                ledger_period: 60,
                // `fog up` is the operator's: the dashboard shows its hosts.
                status_listen: None,
                corrupt_responses: false,
                // `fog up` is one operator's whole fog: its own hosts are admitted.
                admission_token: Some(admission_token.clone()),
            };
            for n in 1..=self.hosts {
                let dir = data.join("hosts").join(n.to_string());
                let listen = if self.hosts_listen { Some("127.0.0.1:0".parse()?) } else { None };
                let (host_addrs, more) = services::start_host(listen, metrics, &control_urls, &dir, &host_args, stop.clone()).await?;
                print_metrics(&format!("host {n}"), host_addrs.metrics);
                tasks.extend(more);
            }
            println!("fog: control plane http://{control}, router http://{router}, {} host(s), data in {}", self.hosts, data.display());
            println!("fog: dashboard http://{control}/dashboard, metrics http://{control}/metrics");
            if let Some(front) = router_addrs.betanet {
                println!("fog: Betanet front on {front} (fog fetch <betanet address>)");
            }
            if self.demo {
                demo(&control_url, &format!("http://{router}"), &data, self.examples.as_deref()).await?;
            }
            println!("fog: up (Ctrl-C to stop)");
            services::run_until_signal(stop_tx, tasks).await;
            drop(testnet);
            Ok(())
        })
    }
}

/// Publish the examples with a key kept in the data directory, and print their URLs.
async fn demo(
    control: &str,
    router: &str,
    data: &std::path::Path,
    examples: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    let key = data.join("demo.key");
    if !key.exists() {
        super::keygen::make_key(&key, false)?;
    }
    let api = Api::new(&ControlArgs {
        control: control.parse()?,
        key: Some(key),
    })?;
    use fog_test_programs::shipped;
    for (name, tier) in DEMO_APPS {
        let meta = PublishMeta {
            name: name.to_string(),
            tier,
            replicas: None,
            limits: Limits::default(),
            bundle: None,
            max_price: None,
            bid: None,
            allow_outbound: Vec::new(),
            vars: Default::default(),
            secrets: Default::default(),
            durable: false,
        };
        let wait = Duration::from_secs(60);
        let info = match examples {
            Some(dir) => {
                let path = dir.join(format!("{name}.wasm"));
                super::publish::publish(&api, &path, &meta, wait).await?
            }
            None => {
                let bytes = match name {
                    "hello" => shipped::HELLO,
                    "counter" => shipped::COUNTER,
                    _ => shipped::API,
                };
                super::publish::publish_bytes(&api, bytes.to_vec(), &meta, wait).await?
            }
        };
        super::publish::print_app(&info, router);
    }
    // A static site too: the demo docs, written out from the copy embedded in `fog`.
    let site = data.join("demo-site");
    let _ = std::fs::remove_dir_all(&site);
    for (path, bytes) in shipped::DEMO_SITE {
        let path = site.join(path);
        std::fs::create_dir_all(path.parent().expect("a file in a directory"))?;
        std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
    }
    let meta = PublishMeta {
        name: "docs".to_string(),
        tier: Tier::B,
        replicas: None,
        limits: Limits::default(),
        bundle: None,
        max_price: None,
        bid: None,
        allow_outbound: Vec::new(),
        vars: Default::default(),
        secrets: Default::default(),
        durable: false,
    };
    let info = super::publish::publish_site(&api, &site, meta, Duration::from_secs(60)).await?;
    super::publish::print_app(&info, router);
    Ok(())
}
