//! `fog control`: run the control plane (registry, API, reconcile loop).

use std::net::SocketAddr;
use std::path::PathBuf;

use fog_control::store::StoreLocation;
use fog_scheduler::placement::PlacementStrategy;

use crate::services::{self, Stop};

/// Run the control plane: the registry (sled, or etcd shared by several control planes), the HTTP
/// API and the placement loop.
#[derive(Debug, clap::Args)]
pub struct ControlCmd {
    /// Address of the API.
    #[arg(long, default_value = "127.0.0.1:7070")]
    listen: SocketAddr,
    /// Directory of the registry (with --store etcd://: of the components and snapshots, which
    /// stay out of etcd).
    #[arg(long, value_name = "DIR")]
    data: Option<PathBuf>,
    /// Where the registry lives: sled (embedded, in --data) or
    /// etcd://HOST:PORT[,HOST:PORT...][/PREFIX] (several control planes can share one etcd
    /// cluster; keys start with PREFIX, default "fog").
    #[arg(
        long,
        default_value = "sled",
        value_name = "sled|etcd://...",
        env = "FOG_STORE"
    )]
    store: StoreLocation,
    /// A router key (hex, printed by `fog router`) allowed to register a Betanet front;
    /// repeat for several routers.
    #[arg(
        long = "trust-router",
        value_name = "HEX",
        env = "FOG_TRUST_ROUTERS",
        value_delimiter = ','
    )]
    trust_router: Vec<String>,
    /// How often tier-B apps upload a snapshot of their state (seconds): what a tier-B app
    /// can lose when its device dies.
    #[arg(long, default_value_t = 5.0, value_name = "SECONDS")]
    snapshot_every: f64,
    /// Signed requests per second each key (developer, device, router, relay) may make,
    /// sustained (beyond: 429 with Retry-After); 0 for no limit.
    #[arg(long, default_value_t = fog_control::DEFAULT_KEY_RATE, value_name = "N")]
    key_rate: u32,
    /// Signed requests a key may make at once on top of --key-rate.
    #[arg(long, default_value_t = fog_control::DEFAULT_KEY_BURST, value_name = "N")]
    key_burst: u32,
    /// The key app secrets are encrypted with in the registry (created, 0600, if missing;
    /// default: secrets.key in --data). Control planes sharing an etcd registry must all be
    /// given the same key file.
    #[arg(long, value_name = "FILE", env = "FOG_SECRETS_KEY")]
    secrets_key: Option<PathBuf>,
    /// The URL other control planes on the same store reach this one's API at (they copy
    /// components from it); default http://<the --listen address>.
    #[arg(long, value_name = "URL")]
    advertise: Option<String>,
    /// Seconds between two spot checks of each device: a known-answer request, carried by a
    /// trusted router, to the canary component every device runs; a wrong answer costs the
    /// device its trust and its replicas. 0 turns spot checks off.
    #[arg(long, default_value_t = fog_control::canary::DEFAULT_INTERVAL.as_secs_f64(), value_name = "SECONDS")]
    canary_interval: f64,
    /// The fog's admission token (at least 16 characters): devices and relays registering with
    /// it are admitted at once; others wait, pending, for `fog admit KEY`. Replaces the token
    /// in the registry. Default: the registry's, made at random on first start. Either way it
    /// is written to admission-token in --data (0600); `fog admit token` prints it.
    #[arg(
        long,
        value_name = "TOKEN",
        env = "FOG_ADMISSION_TOKEN",
        hide_env_values = true
    )]
    admission_token: Option<String>,
    /// Least memory every replica is planned with, MiB, whatever its measured footprint (an
    /// idle app's is about nothing): raise it to keep that much room per replica on devices.
    /// Never more than the app's own memory limit.
    #[arg(long, default_value_t = fog_control::ControlConfig::default().replica_memory_floor_mb, value_name = "MIB")]
    replica_memory_floor: f64,
    /// Benchmark only: the placement algorithm. `greedy` runs the scheduler's greedy baseline
    /// (first-fit decreasing, blind to latency, trust and price) instead of NSGA-II on the same
    /// measured inputs, to compare the two (`benches/visitor_latency.sh`). Never for a real fog.
    #[arg(long, hide = true, value_enum, default_value_t = Placement::Nsga2)]
    placement: Placement,
}

/// `fog control --placement`: which algorithm places replicas.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Placement {
    /// Fog's: NSGA-II, then the per-tier pick.
    Nsga2,
    /// The greedy baseline, for comparisons only.
    Greedy,
}

impl From<Placement> for PlacementStrategy {
    fn from(placement: Placement) -> Self {
        match placement {
            Placement::Nsga2 => PlacementStrategy::Nsga2,
            Placement::Greedy => PlacementStrategy::Greedy,
        }
    }
}

impl ControlCmd {
    pub fn execute(self) -> anyhow::Result<()> {
        let defaults = fog_control::ControlConfig::default();
        if !(self.replica_memory_floor.is_finite() && self.replica_memory_floor >= 0.0) {
            anyhow::bail!(
                "--replica-memory-floor must be a number of MiB, 0 or more (got {})",
                self.replica_memory_floor
            );
        }
        let data = self
            .data
            .unwrap_or_else(|| fog_host::agent::default_data_dir().join("control"));
        crate::client::runtime()?.block_on(async {
            let (stop_tx, stop) = Stop::new();
            let (addr, _, tasks) = services::start_control(
                self.listen,
                &self.store,
                &data,
                fog_control::ControlConfig {
                    trusted_routers: self.trust_router,
                    snapshot_every: std::time::Duration::from_secs_f64(
                        self.snapshot_every.max(0.1),
                    ),
                    key_rate: fog_control::Rate::new(self.key_rate, self.key_burst),
                    advertise: self.advertise,
                    canary: services::canary(self.canary_interval),
                    replica_memory_floor_mb: self.replica_memory_floor,
                    secrets_key: Some(self.secrets_key.unwrap_or_else(|| data.join("secrets.key"))),
                    // Test only: hold handovers mid-way so a test can kill this leader with
                    // one in flight (see `ControlConfig::hold_handovers`).
                    hold_handovers: std::env::var_os("FOG_TEST_HOLD_HANDOVER").is_some(),
                    placement: fog_scheduler::placement::PlacementConfig {
                        strategy: self.placement.into(),
                        ..defaults.placement.clone()
                    },
                    ..defaults
                },
                self.admission_token.as_deref().filter(|t| !t.is_empty()),
                stop,
            )
            .await?;
            println!("fog: control plane on http://{addr}");
            if self.placement == Placement::Greedy {
                println!(
                    "fog: placing with the greedy baseline (--placement greedy: benchmarks only)"
                );
            }
            // The token itself stays out of stdout (often a log): it is a password to the fog.
            println!(
                "fog: devices and relays are admitted with the token in {} (`fog admit token \
                 --data {}` prints it) or one by one with `fog admit KEY`",
                data.join(services::ADMISSION_TOKEN_FILE).display(),
                data.display()
            );
            services::run_until_signal(stop_tx, tasks).await;
            Ok(())
        })
    }
}
