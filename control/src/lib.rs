//! The control plane (`fog control`): the registry, the versioned HTTP/JSON API and the reconcile
//! loop that turns apps and devices into assignments with [`fog_scheduler::placement::plan`].
//!
//! Persistent state (apps, devices, placements, blobs, and handovers in flight, parked apps,
//! pending restores and recent events: see [`soft`]) lives in a [`store::Store`]; soft state
//! (heartbeats, recent request lines) lives in memory and is rebuilt from the devices within a
//! heartbeat of a restart. A device that misses three heartbeats, or reports it may not be
//! harvested, loses its replicas at the next reconcile.
//!
//! The crate is split by concern: [`api`] routes requests and shapes responses, `registry`
//! reads records, `apps` and `devices` handle what developers and devices send, `reconcile`
//! places replicas and leads handovers, `views` answers `fog ps`, `fog devices`, routes and
//! names; every refusal is an [`ApiError`].

mod accounts;
pub mod admission;
pub mod api;
mod apps;
pub mod autoscale;
pub mod canary;
mod config;
mod dashboard;
mod devices;
pub mod error;
pub(crate) mod logs;
mod metrics;
pub mod names;
pub mod observe;
pub mod onion;
mod planes;
mod preempt;
mod reconcile;
mod registry;
pub mod replay;
pub mod replicas;
mod secrets;
mod sites;
pub mod soft;
pub mod store;
pub mod trust;
pub mod usage;
mod views;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fog_net::limit::RateLimit;
use fog_proto::api::Heartbeat;
use fog_scheduler::placement::PlacementConfig;
use tokio::sync::{Notify, watch};

pub use apps::check_component;
pub use error::ApiError;
use store::Store;

pub use fog_net::limit::Rate;

/// The response type of the API.
pub type ApiResponse = http::Response<api::ApiBody>;

/// Settings of the control plane.
#[derive(Debug, Clone)]
pub struct ControlConfig {
    /// How often devices heartbeat in a small fleet: the shortest interval announced (see
    /// [`heartbeat_interval_for`]).
    pub heartbeat_interval: Duration,
    /// Most heartbeats a second the control plane means to receive: past
    /// `heartbeat_rate × heartbeat_interval` devices the announced interval grows with the fleet.
    pub heartbeat_rate: f64,
    /// The longest heartbeat interval announced, however large the fleet.
    pub max_heartbeat_interval: Duration,
    /// How many missed heartbeats (of the interval announced to each device) make it dead.
    pub missed_heartbeats: u32,
    /// How often the reconcile loop runs without a change.
    pub tick: Duration,
    /// Least CPU one replica is planned with, in cores: its measured use (see [`usage`]) with
    /// its tier's headroom, never below this.
    pub replica_cpu_floor: f64,
    /// Least memory one replica is planned with, MiB: its measured footprint with its tier's
    /// headroom (see [`usage`]), never below this; an idle app costs a host about a KiB of
    /// bookkeeping, the floor leaves room for its state's caches.
    pub replica_memory_floor_mb: f64,
    /// NSGA-II settings for placement.
    pub placement: PlacementConfig,
    /// Public keys (hex) of routers allowed to register Betanet fronts.
    pub trusted_routers: Vec<String>,
    /// How often a tier-B app's primary uploads a snapshot of its state.
    pub snapshot_every: Duration,
    /// How devices earn trust (see [`trust`]).
    pub trust: trust::TrustConfig,
    /// Signed (mutating) requests each key may make (beyond: 429 with `Retry-After`); `None`
    /// for no limit.
    pub key_rate: Option<Rate>,
    /// How often every app is placed again from scratch (NSGA-II over the whole fleet) when
    /// the fleet has not changed; in between, a reconcile places only the apps that need it
    /// (new, scaled, short of replicas).
    pub replan_every: Duration,
    /// The file holding the key app secrets are sealed with (created, 0600, on first use);
    /// control planes sharing a registry must be given the same file. `None`: a key for this
    /// process only (secrets sealed under it do not survive a restart).
    pub secrets_key: Option<std::path::PathBuf>,
    /// Where the other control planes reach this one's API (`fog control --advertise`): it
    /// is announced in the store, and peers pull components from it.
    pub advertise: Option<String>,
    /// The canary component placed on every device and how often each is spot-checked
    /// (`fog control --canary-interval`); `None`: no spot checks.
    pub canary: Option<canary::CanaryConfig>,
    /// Most devices that may wait for admission at once; past it a new device without the
    /// admission token is refused (503) until the operator admits some: a flood of freshly
    /// made keys cannot fill the registry.
    pub max_pending_devices: usize,
    /// Test only (`FOG_TEST_HOLD_HANDOVER` on `fog control`): a handover that reaches its
    /// fencing phase stays there under this control plane and never completes, so a test can
    /// kill the leader with a handover in flight. Never set in production.
    pub hold_handovers: bool,
    /// How long an app's onion lease lasts without renewal (see [`onion`]): routers renew
    /// every few seconds, and a dead router's apps pass to another after this plus
    /// [`ControlConfig::onion_lease_grace`].
    pub onion_lease: Duration,
    /// How long after a lease's expiry another router may take it: room for the control
    /// planes' clocks to differ.
    pub onion_lease_grace: Duration,
}

/// The default for [`ControlConfig::heartbeat_rate`]: heartbeats a second one control plane
/// is meant to receive (1 s intervals up to 2,000 devices, 5 s at 10,000).
pub const DEFAULT_HEARTBEAT_RATE: f64 = 2_000.0;

/// The heartbeat interval announced in a fleet of `devices`: `base` while they send at most
/// `rate` heartbeats a second between them, then just long enough that they do not, never
/// longer than `max` (nor shorter than `base`).
pub fn heartbeat_interval_for(
    devices: usize,
    base: Duration,
    rate: f64,
    max: Duration,
) -> Duration {
    let needed = if rate > 0.0 {
        Duration::try_from_secs_f64(devices as f64 / rate).unwrap_or(max)
    } else {
        max
    };
    needed.clamp(base, max.max(base))
}

/// The default per-key limit: ten heartbeats a second (the most a host sends) and a developer's
/// publishes fit well inside it; a script hammering the API with one key does not.
pub const DEFAULT_KEY_RATE: u32 = 20;
/// The default burst on top of [`DEFAULT_KEY_RATE`].
pub const DEFAULT_KEY_BURST: u32 = 100;

impl Default for ControlConfig {
    fn default() -> Self {
        ControlConfig {
            heartbeat_interval: Duration::from_secs(1),
            heartbeat_rate: DEFAULT_HEARTBEAT_RATE,
            max_heartbeat_interval: Duration::from_secs(10),
            missed_heartbeats: 3,
            tick: Duration::from_secs(1),
            replica_cpu_floor: 0.01,
            replica_memory_floor_mb: 1.0,
            placement: PlacementConfig {
                population: 40,
                generations: 30,
                ..PlacementConfig::default()
            },
            trusted_routers: Vec::new(),
            snapshot_every: Duration::from_secs(5),
            trust: trust::TrustConfig::default(),
            key_rate: Rate::new(DEFAULT_KEY_RATE, DEFAULT_KEY_BURST),
            replan_every: Duration::from_secs(30),
            secrets_key: None,
            advertise: None,
            canary: None,
            max_pending_devices: admission::MAX_PENDING_DEVICES,
            hold_handovers: false,
            onion_lease: Duration::from_secs(10),
            onion_lease_grace: Duration::from_secs(2),
        }
    }
}

pub(crate) struct Live {
    at: Instant,
    /// The heartbeat interval this device was told with its last reply: its liveness is
    /// judged by it, so a device told to heartbeat less often is not declared dead in between.
    interval: Duration,
    heartbeat: Heartbeat,
    /// Received by this control plane (not learnt from another's announcement): only these
    /// are announced, so a heartbeat is never echoed back and forth.
    local: bool,
}

/// The control plane.
pub struct Control {
    store: Arc<dyn Store>,
    config: ControlConfig,
    live: Mutex<HashMap<String, Live>>,
    /// App → the devices in the live table whose last heartbeat reported running it (alive or
    /// not), kept in step with it (see [`Control::put_live`]): what `fog ps` shows of one app
    /// without a walk over every device.
    running: Mutex<HashMap<String, std::collections::BTreeSet<String>>>,
    /// The most CPU a usable device offers (see [`Control::planned_cpu`]), and when it was
    /// computed: `fog ps` prices replicas with it, recomputed at most once a second.
    cpu_ceiling: Mutex<Option<(Instant, f64)>>,
    /// Devices in the live table (heard from since start): the fleet size the heartbeat
    /// interval is set by, read without the live table's lock.
    fleet: std::sync::atomic::AtomicUsize,
    /// Registered device ids (and admitted keys) already read from the registry, so a
    /// heartbeat does not read it again (see [`devices::KnownDevices`]).
    known_devices: devices::KnownDevices,
    /// Request lines for `fog logs`.
    logs: logs::Logs,
    /// Serialises read-modify-write of app records.
    writes: Mutex<()>,
    /// Wakes the reconcile loop.
    changed: Notify,
    /// Bumped whenever placements or what devices run change: wakes long-polls.
    version: watch::Sender<u64>,
    /// How many of `version`'s bumps said only that records in the plan index changed (see
    /// [`Control::bump_index`]), counted before each is made.
    index_bumps: std::sync::atomic::AtomicU64,
    /// When this control plane started: placements are not recomputed until devices have had
    /// time to heartbeat, so a restart never takes replicas away from live devices.
    started: Instant,
    /// The secret app keys are derived from (loaded on first use).
    master: Mutex<Option<[u8; 32]>>,
    /// Each app's public names, by (owner, name): derived once, not on every routes answer.
    public_names: Mutex<HashMap<(String, String), Arc<names::PublicNames>>>,
    /// Betanet fronts and mix relays that registered recently.
    registrations: names::Registrations,
    /// Primaries moving between devices, by app: the leader's working copy of
    /// [`store::Table::Handovers`].
    handovers: Mutex<HashMap<String, replicas::Handover>>,
    /// New primaries that must restore the control plane's snapshot first: app → device (the
    /// leader's working copy of [`store::Table::Restores`]).
    restores: Mutex<HashMap<String, String>>,
    /// What the autoscaler remembers of each autoscaled app.
    loads: Mutex<HashMap<String, autoscale::AppLoad>>,
    /// Whether the handovers and restores above were loaded from the store since this
    /// control plane last became the leader (see [`soft`]).
    soft_loaded: std::sync::atomic::AtomicBool,
    /// Signed requests seen inside the skew window: each is accepted once.
    replays: replay::ReplayGuard,
    /// Each signing key's token bucket.
    key_limit: Option<RateLimit<String>>,
    /// A handover changed phase: assignments changed though placements did not.
    phase_changed: std::sync::atomic::AtomicBool,
    /// Prometheus metrics (`GET /metrics`).
    metrics: metrics::ControlMetrics,
    /// Apps and placements indexed by device, kept up to date from `plan_feed`.
    plan_index: std::sync::RwLock<registry::PlanIndex>,
    /// The store's changes to the plan index's tables; `None` for a store that cannot feed
    /// them (the index is then read whole on every use).
    plan_feed: Option<Arc<store::Feed>>,
    /// Held while the plan index is brought up to date: one update at a time, the heartbeats
    /// that found it stale meanwhile wait and take its result (see [`Control::plan_index`]).
    plan_index_update: Mutex<()>,
    /// Registered devices and admitted keys, kept up to date from `device_feed`.
    device_index: Mutex<registry::DeviceIndex>,
    /// The store's changes to the device index's tables; `None` for a store that cannot feed
    /// them (the tables are then read on every use).
    device_feed: Option<Arc<store::Feed>>,
    /// Devices' measured RTTs and the behaviour their trust is earned with.
    observed: observe::Observations,
    /// Smoothed CPU each replica burns, from heartbeats.
    usage: usage::Usage,
    /// When every app was last placed from scratch, and the fleet it was placed on.
    last_full_plan: Mutex<Option<(Instant, u64)>>,
    /// This control plane's name in the election of the one that reconciles.
    id: String,
    /// Whether this control plane led at its last reconcile tick.
    leading: std::sync::atomic::AtomicBool,
    /// The key app secrets are sealed with in the registry.
    secrets: secrets::SecretsKey,
    /// The other control planes, and the client to reach them.
    planes: planes::Planes,
    /// The canary component and the spot checks in flight.
    canary: canary::Canary,
}

/// Largest snapshot the control plane keeps for an app.
pub(crate) const MAX_SNAPSHOT_BYTES: u64 = 256 << 20;

/// Longest a routes long-poll is held.
pub(crate) const ROUTES_HOLD: Duration = Duration::from_secs(10);

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Control")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Control {
    /// A control plane over `store`.
    pub fn new(store: Arc<dyn Store>, config: ControlConfig) -> Arc<Control> {
        let key_limit = config.key_rate.map(RateLimit::new);
        let secrets = secrets::SecretsKey::new(config.secrets_key.clone());
        let canary = canary::Canary::new(config.canary.clone());
        Arc::new(Control {
            secrets,
            plan_feed: store.follow(&registry::PLAN_TABLES),
            device_feed: store.follow(&registry::DEVICE_TABLES),
            device_index: Default::default(),
            store,
            config,
            live: Mutex::new(HashMap::new()),
            running: Mutex::new(HashMap::new()),
            cpu_ceiling: Mutex::new(None),
            fleet: std::sync::atomic::AtomicUsize::new(0),
            known_devices: devices::KnownDevices::default(),
            logs: logs::Logs::default(),
            writes: Mutex::new(()),
            changed: Notify::new(),
            version: watch::channel(0).0,
            index_bumps: std::sync::atomic::AtomicU64::new(0),
            started: Instant::now(),
            master: Mutex::new(None),
            public_names: Mutex::new(HashMap::new()),
            registrations: names::Registrations::default(),
            handovers: Mutex::new(HashMap::new()),
            restores: Mutex::new(HashMap::new()),
            loads: Mutex::new(HashMap::new()),
            soft_loaded: std::sync::atomic::AtomicBool::new(false),
            replays: replay::ReplayGuard::default(),
            key_limit,
            phase_changed: std::sync::atomic::AtomicBool::new(false),
            metrics: metrics::ControlMetrics::default(),
            plan_index: Default::default(),
            plan_index_update: Mutex::new(()),
            observed: observe::Observations::default(),
            usage: usage::Usage::default(),
            last_full_plan: Mutex::new(None),
            id: {
                let mut id = [0u8; 8];
                getrandom::fill(&mut id).expect("the operating system's random source");
                hex::encode(id)
            },
            leading: std::sync::atomic::AtomicBool::new(false),
            planes: planes::Planes::default(),
            canary,
        })
    }
}

/// Serve the API on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    control: Arc<Control>,
    shutdown: impl Future<Output = ()>,
) {
    fog_net::serve_http1(
        listener,
        move |request| {
            let control = control.clone();
            async move { control.handle(request).await }
        },
        shutdown,
    )
    .await;
}

#[cfg(test)]
mod tests;
