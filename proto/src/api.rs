//! The control plane's versioned HTTP/JSON API: paths, requests and responses.
//!
//! | method | path | who | body |
//! |---|---|---|---|
//! | POST | `/v1/apps` | developer (signed) | the component; [`PublishMeta`] in `x-fog-meta` |
//! | GET | `/v1/apps`, `/v1/apps/{name}` | anyone | → [`AppInfo`] |
//! | POST | `/v1/apps/{name}/scale` | owner (signed) | [`ScaleRequest`] |
//! | POST | `/v1/apps/{name}/config` | owner (signed) | [`crate::config::ConfigChange`] → [`crate::config::ConfigListing`] |
//! | GET | `/v1/apps/{name}/config` | owner (signed) | → [`crate::config::ConfigListing`] |
//! | DELETE | `/v1/apps/{name}` | owner (signed) | — |
//! | GET | `/v1/apps/{name}/logs[?after=ID]` | anyone | → [`LogLine`]s (long-poll past line ID) |
//! | POST | `/v1/devices` | device (signed) | [`DeviceRegistration`] → [`DeviceRegistered`] |
//! | POST | `/v1/devices/{id}/heartbeat` | device (signed) | [`Heartbeat`] → [`HeartbeatReply`] |
//! | GET | `/v1/devices` | anyone | → [`DeviceInfo`]s |
//! | GET | `/v1/devices/{id}` | anyone | → [`DeviceInfo`] |
//! | GET | `/v1/devices/{a}/peers/{b}` | routers | → [`Pairing`] (403: no assignment pairs them) |
//! | POST | `/v1/attach` | trusted router (signed) | [`AttachInfo`] → [`AttachPoint`]s |
//! | GET | `/v1/attach` | anyone | → [`AttachPoint`]s |
//! | POST | `/v1/attach/rtts` | trusted router (signed) | [`RouterRtts`] |
//! | GET | `/v1/devices/{id}/ledger` | anyone | → verified [`SignedPeriod`]s |
//! | POST | `/v1/bundles` | developer (signed) | a static site's bundle ([`crate::bundle`]) |
//! | GET | `/v1/blobs/{sha256}` | anyone | the component or bundle |
//! | GET | `/v1/routes[?after=N]` | routers | → [`Route`]s (long-poll past version N) |
//! | POST | `/v1/relays` | relay (signed) | [`RelayRegistration`] → admitted [`RelayInfo`]s |
//! | GET | `/v1/relays` | anyone | → admitted [`RelayInfo`]s |
//! | POST | `/v1/admissions` | operator (signed, with the token) | [`AdmitRequest`] → [`Admitted`] |
//! | GET | `/v1/pending` | anyone | → [`PendingKey`]s: devices and relays not admitted |
//! | POST | `/v1/onion-leases` | trusted router (signed) | → the [`OnionLease`]s it holds (renewed, or newly granted) |
//! | GET | `/v1/onion-leases` | anyone | → [`OnionLeaseInfo`]s: which router publishes each app's onion service |
//!
//! Errors are `{"error": "..."}` with a 4xx or 5xx status.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::Manifest;
use crate::limits::Limits;

/// Prefix of every path of this API version.
pub const PREFIX: &str = "/v1";
/// Largest component the control plane accepts, in bytes. A Python app built with
/// componentize-py carries the interpreter and its standard library (20 to 40 MiB); 64 MiB
/// leaves room for its packages.
pub const MAX_COMPONENT_BYTES: u64 = 64 << 20;
/// Largest JSON body accepted, in bytes.
pub const MAX_JSON_BYTES: u64 = 1 << 20;

/// An app's service tier: how many replicas it gets, what it pays, what placement favours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Tier {
    /// 3 replicas, active-active, success ≥ 0.999; price ×2.0.
    S,
    /// 2 replicas, active-passive, success ≥ 0.99; price ×1.5.
    A,
    /// 1 replica, best effort, success ≥ 0.95; price ×1.0.
    B,
}

impl Tier {
    /// The tier's default replica count.
    pub fn replicas(self) -> u32 {
        match self {
            Tier::S => 3,
            Tier::A => 2,
            Tier::B => 1,
        }
    }

    /// Price multiplier of the tier.
    pub fn price_multiplier(self) -> f64 {
        match self {
            Tier::S => 2.0,
            Tier::A => 1.5,
            Tier::B => 1.0,
        }
    }

    /// Target success ratio of the tier.
    pub fn success_target(self) -> f64 {
        match self {
            Tier::S => 0.999,
            Tier::A => 0.99,
            Tier::B => 0.95,
        }
    }
}

impl std::str::FromStr for Tier {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "S" | "s" => Ok(Tier::S),
            "A" | "a" => Ok(Tier::A),
            "B" | "b" => Ok(Tier::B),
            _ => Err(format!("tier must be S, A or B, not {s:?}")),
        }
    }
}

/// What a developer says about an app when publishing it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishMeta {
    /// The app's name.
    pub name: String,
    /// Its tier.
    pub tier: Tier,
    /// Replicas, if not the tier's default.
    #[serde(default)]
    pub replicas: Option<u32>,
    /// Per-request limits.
    #[serde(default)]
    pub limits: Limits,
    /// A static site: the sha256 of its bundle (uploaded first to `/v1/bundles`), served by the
    /// component (Fog's fileserver) from a read-only directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bundle: Option<String>,
    /// Highest price per CPU-hour the developer pays (`fog publish --max-price`): no replica
    /// lands on a device that asks more, or whose market price for this app is higher.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_price: Option<f64>,
    /// How the developer buys capacity (`fog publish --bid`); on-demand if not said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bid: Option<Bid>,
    /// The origins the app may send HTTP requests to (`fog publish --allow-outbound`); none
    /// if empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_outbound: Vec<crate::Origin>,
    /// Variables to set (`fog publish --var K=V`); others the app has are kept.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub vars: BTreeMap<String, String>,
    /// Secrets to set (`fog publish --secret K=@FILE`); others the app has are kept.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secrets: BTreeMap<String, crate::config::Secret>,
    /// Each request's state writes are on the host's disk before it is answered
    /// (`fog publish --durable`); off if not said.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub durable: bool,
}

/// How a developer buys CPU time for an app (the market's pricing classes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Bid {
    /// Interruptible capacity, at 0.8 of the spot quote.
    Spot,
    /// Capacity at the quoted price.
    #[default]
    OnDemand,
    /// Capacity committed for the placement period.
    Reserved,
}

impl std::str::FromStr for Bid {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "spot" => Ok(Bid::Spot),
            "on-demand" => Ok(Bid::OnDemand),
            "reserved" => Ok(Bid::Reserved),
            _ => Err(format!(
                "bid must be spot, on-demand or reserved, not {s:?}"
            )),
        }
    }
}

impl std::fmt::Display for Bid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Bid::Spot => "spot",
            Bid::OnDemand => "on-demand",
            Bid::Reserved => "reserved",
        })
    }
}

/// Highest price per CPU-hour a device may ask or a developer may bid: about 10,000 times the
/// market's base price (0.10–0.15), so anything above is a mistake, not a price.
pub const MAX_PRICE_CPU_HOUR: f64 = 1000.0;

/// Check a price per CPU-hour (`what` names it in the reason): a finite number in
/// [0, [`MAX_PRICE_CPU_HOUR`]].
pub fn validate_price(what: &str, price: f64) -> Result<(), String> {
    if !price.is_finite() {
        return Err(format!("{what} must be a number, not {price}"));
    }
    if price < 0.0 {
        return Err(format!("{what} must not be negative, got {price}"));
    }
    if price > MAX_PRICE_CPU_HOUR {
        return Err(format!(
            "{what} {price} per CPU-hour is absurd (at most {MAX_PRICE_CPU_HOUR})"
        ));
    }
    Ok(())
}

/// Most replicas one app may ask for.
pub const MAX_REPLICAS: u32 = 16;

impl PublishMeta {
    /// Check the name, replica count and limits.
    pub fn validate(&self) -> Result<(), String> {
        crate::validate_app_name(&self.name)?;
        if let Some(r) = self.replicas
            && !(1..=MAX_REPLICAS).contains(&r)
        {
            return Err(format!(
                "replicas must be between 1 and {MAX_REPLICAS}, got {r}"
            ));
        }
        if let Some(max) = self.max_price {
            validate_price("max price", max)?;
        }
        crate::config::validate(&self.vars, &self.secrets)?;
        if self.allow_outbound.len() > crate::origin::MAX_ORIGINS {
            return Err(format!(
                "at most {} outbound origins, got {}",
                crate::origin::MAX_ORIGINS,
                self.allow_outbound.len()
            ));
        }
        self.limits.validate()
    }
}

/// An app as the control plane reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppInfo {
    /// Name.
    pub name: String,
    /// Owner's public key (hex).
    pub owner: String,
    /// Version, counting publishes from 1.
    pub version: u32,
    /// sha256 of the component.
    pub sha256: String,
    /// Size of the component, bytes.
    pub size: u64,
    /// Tier.
    pub tier: Tier,
    /// Replicas wanted.
    pub replicas: u32,
    /// Limits.
    pub limits: Limits,
    /// Devices the app is assigned to.
    pub assigned: Vec<String>,
    /// Devices that report it running.
    pub running: Vec<String>,
    /// Why it is not (fully) placed, if it is not.
    pub problem: Option<String>,
    /// Unix milliseconds of the last publish.
    pub updated_ms: u64,
    /// The app's self-certifying Betanet addresses (`betanet://…` and `bn1:…`).
    #[serde(default)]
    pub betanet: Vec<String>,
    /// Recent handovers, promotions, restores and scaling decisions, oldest first.
    #[serde(default)]
    pub events: Vec<String>,
    /// A handover in progress, if any.
    #[serde(default)]
    pub moving: Option<String>,
    /// Why the last move was abandoned, while that is the app's latest event.
    #[serde(default)]
    pub move_abandoned: Option<String>,
    /// Autoscaling bounds, if the app autoscales.
    #[serde(default)]
    pub autoscale: Option<Autoscale>,
    /// The app's onion-service address (`<56 characters>.onion`).
    #[serde(default)]
    pub onion: Option<String>,
    /// The router publishing that onion service now (its key, hex), if one holds the lease.
    #[serde(default)]
    pub onion_router: Option<String>,
    /// Highest price per CPU-hour the developer pays, if capped.
    #[serde(default)]
    pub max_price: Option<f64>,
    /// How the developer buys capacity.
    #[serde(default)]
    pub bid: Bid,
    /// The origins the app may send HTTP requests to.
    #[serde(default)]
    pub allow_outbound: Vec<crate::Origin>,
    /// Whether each request's state writes are on disk before it is answered.
    #[serde(default)]
    pub durable: bool,
    /// Cores one replica is planned with (its measured use with its tier's headroom, never
    /// below the control plane's floor): the demand placement and [`AppInfo::price_per_hour`]
    /// use.
    #[serde(default)]
    pub cpu_planned: f64,
    /// Credits per hour the app pays at that demand: for each device it is assigned to,
    /// [`LedgerPeriod::credits`] of an hour's fuel at the price the device asks, the formula
    /// its ledger periods charge with. 0 when it is placed nowhere.
    #[serde(default)]
    pub price_per_hour: f64,
    /// The most linear memory one replica's instances held at once lately (a peak decaying
    /// over a minute), MiB, as hosts measured it: what placement plans a replica with, with
    /// the tier's headroom. `None` until a host that measures runs it.
    #[serde(default)]
    pub footprint_mb: Option<f64>,
}

/// An app's onion-service lease granted to a trusted router (`POST /v1/onion-leases`): the key
/// to run the service with, and how long the router may run it without renewing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OnionLease {
    /// App name.
    pub app: String,
    /// Its `.onion` address.
    pub address: String,
    /// The ed25519 secret key (32-byte seed, hex).
    pub secret: String,
    /// Milliseconds the lease has left, counted from when the control plane answered: the
    /// router stops the service this long after it sent the request unless renewed.
    pub ttl_ms: u64,
}

/// One router's unbroken hold on an app's onion lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OnionLeaseTerm {
    /// The router's public key (hex).
    pub router: String,
    /// Unix ms it was granted.
    pub from_ms: u64,
    /// Unix ms it expires (or expired) at: its last renewal's expiry.
    pub until_ms: u64,
}

/// Who publishes an app's onion service (`GET /v1/onion-leases`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OnionLeaseInfo {
    /// App name.
    pub app: String,
    /// The router holding the lease now, if one does.
    pub router: Option<String>,
    /// The latest holders, oldest first (the last few terms).
    pub terms: Vec<OnionLeaseTerm>,
}

/// Move an app's primary to another device (`fog move`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MoveRequest {
    /// The device to move to.
    pub to: String,
}

/// Change how many replicas an app runs: a fixed count, or autoscaling bounds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScaleRequest {
    /// A fixed number of replicas (turns autoscaling off).
    #[serde(default)]
    pub replicas: Option<u32>,
    /// Autoscaling instead.
    #[serde(default)]
    pub autoscale: Option<Autoscale>,
}

/// Autoscaling of an app: between `min` and `max` replicas, aiming at `target_rps` requests per
/// second per replica. Above the target for 3 checks (1 s apart) adds a replica; below half of
/// it for 10 checks removes one; with `min` 0, `idle_s` seconds without a request park the app
/// at zero replicas, and the next request wakes it (routers hold the request meanwhile).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Autoscale {
    /// Fewest replicas (0 allows scaling to zero).
    pub min: u32,
    /// Most replicas.
    pub max: u32,
    /// Requests per second per replica to aim at.
    pub target_rps: f64,
    /// Seconds without a request before scaling to zero (needs `min` 0).
    #[serde(default)]
    pub idle_s: u64,
}

impl Autoscale {
    /// Check the bounds.
    pub fn validate(&self) -> Result<(), String> {
        if self.max == 0 || self.max > MAX_REPLICAS {
            return Err(format!("max must be between 1 and {MAX_REPLICAS}"));
        }
        if self.min > self.max {
            return Err(format!("min {} is above max {}", self.min, self.max));
        }
        if !(self.target_rps.is_finite() && self.target_rps > 0.0) {
            return Err("target must be a positive number of requests per second".into());
        }
        if self.min == 0 && self.idle_s == 0 {
            return Err("scaling to zero (min 0) needs an idle time".into());
        }
        Ok(())
    }
}

/// A device announcing itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceRegistration {
    /// Where `--plain` routers reach its plain-HTTP data plane (host:port), if it listens at
    /// all; a device behind NAT does not (it dials out, see [`AttachPoint`]).
    #[serde(default)]
    pub addr: Option<String>,
    /// Region name.
    pub region: String,
    /// CPU cores offered.
    pub cpu: f64,
    /// Memory offered, MiB.
    pub mem_mb: f64,
    /// Disk offered, MiB.
    pub disk_mb: f64,
    /// Asking price per CPU-hour (0 for the market base).
    #[serde(default)]
    pub price_cpu_hour: f64,
    /// The fog's admission token (`fog admit token`): with it the device is admitted at once;
    /// without it, it stays pending until an operator admits its key (`fog admit KEY`). A
    /// wrong one is refused (403) and nothing is registered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admission_token: Option<String>,
}

/// Most CPU cores one device may offer.
pub const MAX_DEVICE_CPU: f64 = 1024.0;
/// Most memory one device may offer, MiB (64 TiB).
pub const MAX_DEVICE_MEM_MB: f64 = (1u64 << 26) as f64;
/// Most disk one device may offer, MiB (1 PiB).
pub const MAX_DEVICE_DISK_MB: f64 = (1u64 << 30) as f64;

/// Check that `value` (named `what`) is a number in [0, `max`].
fn check_amount(what: &str, value: f64, max: f64) -> Result<(), String> {
    if !(value.is_finite() && value >= 0.0) {
        return Err(format!("{what} must be a non-negative number, got {value}"));
    }
    if value > max {
        return Err(format!(
            "{what} {value} is impossible for one device (at most {max})"
        ));
    }
    Ok(())
}

impl DeviceRegistration {
    /// Check the capacity and the asked price: finite, non-negative, not absurd.
    pub fn validate(&self) -> Result<(), String> {
        check_amount("cpu", self.cpu, MAX_DEVICE_CPU)?;
        check_amount("mem_mb", self.mem_mb, MAX_DEVICE_MEM_MB)?;
        check_amount("disk_mb", self.disk_mb, MAX_DEVICE_DISK_MB)?;
        validate_price("price", self.price_cpu_hour)
    }
}

/// The control plane's answer to a registration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceRegistered {
    /// The device's id.
    pub device_id: String,
    /// Whether its key is admitted; a pending device is never given work until an operator
    /// runs `fog admit` with its id or key.
    #[serde(default)]
    pub admitted: bool,
    /// How often the device is to heartbeat, milliseconds: the control plane lengthens it as
    /// the fleet grows (0 from a control plane that does not say: keep the configured one).
    #[serde(default)]
    pub heartbeat_interval_ms: u64,
}

/// What a device reports every second.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Heartbeat {
    /// Whether its harvest policy allows running replicas now.
    pub harvestable: bool,
    /// CPU cores free.
    pub cpu_free: f64,
    /// Memory free, MiB.
    pub mem_free_mb: f64,
    /// Battery level in [0, 1], if it has one.
    #[serde(default)]
    pub battery: Option<f64>,
    /// Whether it is charging (or on mains).
    #[serde(default = "yes")]
    pub charging: bool,
    /// CPU temperature, °C.
    #[serde(default)]
    pub temperature_c: f64,
    /// Apps it runs now.
    #[serde(default)]
    pub running: Vec<RunningApp>,
    /// Request lines since the last heartbeat (bounded by the device).
    #[serde(default)]
    pub logs: Vec<LogLine>,
    /// Digest of the assignments the device already has: when nothing changed, the control
    /// plane holds the reply (up to a heartbeat interval) until something does.
    #[serde(default)]
    pub known: Option<String>,
    /// Ledger periods closed since the last heartbeat, signed with the device key.
    #[serde(default)]
    pub periods: Vec<SignedPeriod>,
    /// The device's Noise static public key (hex) and, if it accepts HTX connections, where;
    /// signed with the heartbeat, so routers and peers can trust the key.
    #[serde(default)]
    pub htx: Option<HtxEndpoint>,
    /// The routers the device holds an attach connection to now, with each one's round-trip
    /// time as the device measured it (HTX PING).
    #[serde(default)]
    pub attached: Vec<AttachedLink>,
    /// Its harvest policy's last decision, for people (none: it ignores the policy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub harvest: Option<String>,
}

impl Heartbeat {
    /// Check what the device claims about itself is physically possible: capacity, battery,
    /// temperature, and the RTT of each attach link.
    pub fn validate(&self) -> Result<(), String> {
        check_amount("cpu_free", self.cpu_free, MAX_DEVICE_CPU)?;
        check_amount("mem_free_mb", self.mem_free_mb, MAX_DEVICE_MEM_MB)?;
        if let Some(battery) = self.battery
            && !(0.0..=1.0).contains(&battery)
        {
            return Err(format!("battery {battery} is not in [0, 1]"));
        }
        if !(-100.0..=200.0).contains(&self.temperature_c) {
            return Err(format!(
                "a CPU temperature of {} °C is impossible",
                self.temperature_c
            ));
        }
        for link in &self.attached {
            link.validate()?;
        }
        Ok(())
    }
}

/// A device's Noise static key and the HTX listener it answers on, if any.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HtxEndpoint {
    /// host:port of its HTX listener; `None` for a device that accepts no connection (behind
    /// NAT): it is reached through the routers it attaches to.
    #[serde(default)]
    pub addr: Option<String>,
    /// X25519 public key, hex.
    pub key: String,
}

/// Most attach links one heartbeat may report.
pub const MAX_ATTACHED: usize = 64;

/// Largest round-trip time a device may report on an attach link, µs: a link slower than 30 s
/// would have been closed by its missed PINGs long before, so more is a lie or a bug.
pub const MAX_RTT_US: u64 = 30_000_000;

/// One attach connection a device holds open to a router.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttachedLink {
    /// The router's id.
    pub router: String,
    /// Round-trip time of the last HTX PING on the connection, µs (0: not measured yet).
    pub rtt_us: u64,
}

impl AttachedLink {
    /// Check the RTT is physically possible (see [`MAX_RTT_US`]).
    pub fn validate(&self) -> Result<(), String> {
        if self.rtt_us > MAX_RTT_US {
            return Err(format!(
                "attach link to router {}: an RTT of {} µs is impossible (at most {MAX_RTT_US})",
                self.router, self.rtt_us
            ));
        }
        Ok(())
    }
}

/// What a router registers about its attach endpoint (signed with its identity; only routers
/// the control plane trusts may).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttachInfo {
    /// host:port hosts dial.
    pub addr: String,
    /// Noise static public key (X25519, hex) hosts run Noise XK to.
    pub key: String,
}

/// Most devices one RTT report of a router may name.
pub const MAX_ROUTER_RTTS: usize = 16_384;

/// The round-trip times a router measured (HTX PING) on the attach connections hosts hold to
/// it: what placement prefers to what devices say of themselves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouterRtts {
    /// One entry per attached device.
    pub links: Vec<DeviceRtt>,
}

/// One attached device's RTT as its router measured it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceRtt {
    /// The device's id.
    pub device: String,
    /// Round-trip time of the last PING, µs.
    pub rtt_us: u64,
}

/// Who measured the RTT placement uses for a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RttSource {
    /// The routers the device is attached to, on every link used.
    Routers,
    /// The device itself, on at least one link (no router measured it).
    Device,
}

/// A router's attach endpoint, as hosts learn it from their heartbeat replies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttachPoint {
    /// The router's id (derived from its key like a device id).
    pub router: String,
    /// host:port.
    pub addr: String,
    /// Noise static public key, hex.
    pub key: String,
}

/// Two devices an assignment pairs: the apps both hold replicas of.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pairing {
    /// App names.
    pub apps: Vec<String>,
}

/// Fuel one core burns in a second (about 2·10⁹ on the machines Fog was measured on): the
/// host's fuel gate, the ledger's credits and placement's measured demand all use it.
pub const FUEL_PER_CORE_SECOND: f64 = 2.0e9;

/// Fuel that counts as one CPU-hour when turning fuel into credits.
pub const FUEL_PER_CPU_HOUR: f64 = FUEL_PER_CORE_SECOND * 3600.0;

/// Most ledger periods one heartbeat may carry.
pub const MAX_PERIODS: usize = 64;

/// One period of a device's rewards ledger: fuel burnt per app and the credits it earns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LedgerPeriod {
    /// Device id.
    pub device: String,
    /// Start, unix ms.
    pub start_ms: u64,
    /// End, unix ms.
    pub end_ms: u64,
    /// The device's price per CPU-hour.
    pub price_cpu_hour: f64,
    /// Fuel burnt and credits earned per app.
    pub entries: Vec<LedgerEntry>,
    /// Sum of the entries' credits.
    pub total_credits: f64,
}

/// Fuel and credits of one app in one period.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LedgerEntry {
    /// App name.
    pub app: String,
    /// Fuel burnt.
    pub fuel: u64,
    /// `fuel / FUEL_PER_CPU_HOUR × price_cpu_hour`.
    pub credits: f64,
}

impl LedgerPeriod {
    /// Credits for `fuel` at `price_cpu_hour`.
    pub fn credits(fuel: u64, price_cpu_hour: f64) -> f64 {
        fuel as f64 / FUEL_PER_CPU_HOUR * price_cpu_hour
    }

    /// Credits one replica using `cores` for an hour is charged at `price_cpu_hour`: the
    /// [`LedgerPeriod::credits`] of the fuel it burns in that hour.
    pub fn credits_per_hour(cores: f64, price_cpu_hour: f64) -> f64 {
        Self::credits((cores.max(0.0) * FUEL_PER_CPU_HOUR) as u64, price_cpu_hour)
    }

    /// The bytes the device signs: the period as JSON.
    pub fn signed_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("ledger periods always serialise")
    }

    /// Check that every entry's credits follow from its fuel and the total adds up.
    pub fn check_arithmetic(&self) -> Result<(), String> {
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1e-12);
        let mut total = 0.0;
        for entry in &self.entries {
            let expected = Self::credits(entry.fuel, self.price_cpu_hour);
            if !close(entry.credits, expected) {
                return Err(format!(
                    "{}: {} credits for {} fuel, expected {expected}",
                    entry.app, entry.credits, entry.fuel
                ));
            }
            total += entry.credits;
        }
        if !close(total, self.total_credits) {
            return Err(format!(
                "total {} does not add up to {total}",
                self.total_credits
            ));
        }
        Ok(())
    }
}

/// A ledger period with the device's signature over [`LedgerPeriod::signed_bytes`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedPeriod {
    /// The period.
    pub period: LedgerPeriod,
    /// Signature (hex) by the device key.
    pub signature: String,
}

fn yes() -> bool {
    true
}

/// Most log lines one heartbeat may carry.
pub const MAX_LOG_LINES: usize = 1000;
/// Most running apps one heartbeat may list.
pub const MAX_RUNNING: usize = 1000;

/// One app a device runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunningApp {
    /// App name.
    pub app: String,
    /// sha256 of the component it runs.
    pub sha256: String,
    /// Requests in flight now.
    pub in_flight: u32,
    /// Requests served since it started.
    pub requests: u64,
    /// Requests that failed since it started.
    pub failures: u64,
    /// Fuel burnt since it started.
    pub fuel: u64,
    /// The last change-log sequence number its state holds.
    #[serde(default)]
    pub state_seq: u64,
    /// Its replica role.
    #[serde(default)]
    pub role: ReplicaRole,
    /// A follower: its last pull found nothing newer at the primary.
    #[serde(default)]
    pub caught_up: bool,
    /// A fenced primary with no request in flight: its state will not change any more.
    #[serde(default)]
    pub fenced: bool,
    /// The most linear memory its instances held at once since the previous heartbeat, bytes
    /// (its real footprint, which placement plans it with); absent from hosts that do not
    /// measure it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
}

/// What a replica of an app does with writes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReplicaRole {
    /// Serves reads and writes, and feeds its followers' change logs.
    #[default]
    Primary,
    /// Follows a primary's change log; serves reads, refuses writes (routers retry them).
    Follower,
}

/// A replica's peer: its device and HTX endpoint (the Noise key that authenticates it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Peer {
    /// Device id.
    pub device: String,
    /// Its HTX endpoint.
    pub htx: HtxEndpoint,
}

/// How one replica keeps its state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Replication {
    /// Primary or follower.
    #[serde(default)]
    pub role: ReplicaRole,
    /// A primary: the followers allowed to pull its state (acknowledged writes wait for those
    /// that have caught up). A follower: the primary it follows.
    #[serde(default)]
    pub peers: Vec<Peer>,
    /// A primary being moved away: refuse new requests (routers retry elsewhere).
    #[serde(default)]
    pub fenced: bool,
    /// Upload a snapshot of the state to the control plane this often (0: never).
    #[serde(default)]
    pub snapshot_every_ms: u64,
    /// Before serving, restore the latest snapshot the control plane holds (the previous
    /// primary is gone and there is no follower to promote).
    #[serde(default)]
    pub restore: bool,
}

/// One served request, for `fog logs`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogLine {
    /// App name.
    pub app: String,
    /// Device that served it (filled in by the control plane).
    #[serde(default)]
    pub device: String,
    /// The serving host's sequence number of the line (per device, from 1, kept across
    /// restarts): the control plane takes each line of a device once.
    #[serde(default)]
    pub seq: u64,
    /// Position in the control plane's log of the app (filled in by the control plane, from 1):
    /// `GET /v1/apps/{name}/logs?after=ID` waits for lines past it.
    #[serde(default)]
    pub id: u64,
    /// Unix milliseconds.
    pub ts_ms: u64,
    /// The host's request id.
    pub request_id: String,
    /// Method.
    pub method: String,
    /// Path (without query).
    pub path: String,
    /// Status sent.
    pub status: u16,
    /// Fuel burnt.
    pub fuel: u64,
    /// Time to the complete response, µs.
    pub micros: u64,
    /// Failure kind, if the guest's answer was replaced.
    #[serde(default)]
    pub error: Option<String>,
}

/// What the control plane wants a device to run, and which routers it keeps connections to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeartbeatReply {
    /// The full desired set of apps on this device.
    pub assignments: Vec<Assignment>,
    /// Digest of `assignments` and `attach`, to send back as [`Heartbeat::known`].
    pub digest: String,
    /// The routers to keep an attach connection open to (the device dials out; nothing dials
    /// it).
    #[serde(default)]
    pub attach: Vec<AttachPoint>,
    /// The device's heartbeat interval, milliseconds, lengthened by the control plane as the
    /// fleet grows: a device that sends no [`Heartbeat::known`] heartbeats this often; one
    /// that does is held up to this long (unless its assignments change) and heartbeats again
    /// at once. Missing a few intervals makes it dead. 0 from a control plane that does not
    /// say.
    #[serde(default)]
    pub heartbeat_interval_ms: u64,
    /// How many intervals of silence make the device dead to the control plane, which then
    /// places its apps elsewhere (a follower is promoted). A primary that has heard from no
    /// control plane for that long stops acknowledging writes (it fences itself) until one
    /// answers again. 0 from a control plane that does not say.
    #[serde(default)]
    pub missed_heartbeats: u32,
}

/// One app a device should run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Assignment {
    /// sha256 of the component to fetch from `/v1/blobs/{sha256}`.
    pub sha256: String,
    /// Name, limits and permissions.
    pub manifest: Manifest,
    /// Replication role and peers.
    #[serde(default)]
    pub replication: Replication,
    /// A static site's bundle, to fetch from `/v1/blobs/{sha256}`, unpack and give the component
    /// as its read-only directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bundle: Option<String>,
}

/// A device as the control plane reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceInfo {
    /// Id.
    pub id: String,
    /// Whether the device is admitted (`fog admit`, or registered with the admission token):
    /// a pending device is listed but never given work.
    #[serde(default)]
    pub admitted: bool,
    /// Plain-HTTP data-plane address, if it listens.
    #[serde(default)]
    pub addr: Option<String>,
    /// Its Noise static key and HTX listener, as its last heartbeat announced them.
    #[serde(default)]
    pub htx: Option<HtxEndpoint>,
    /// The routers it holds attach connections to, with their round-trip times.
    #[serde(default)]
    pub attached: Vec<AttachedLink>,
    /// Region.
    pub region: String,
    /// Whether its heartbeat is fresh.
    pub alive: bool,
    /// Whether it may run replicas now.
    pub harvestable: bool,
    /// CPU cores offered, and free.
    pub cpu: f64,
    /// CPU cores free.
    pub cpu_free: f64,
    /// Milliseconds since its last heartbeat.
    pub heartbeat_age_ms: u64,
    /// Apps assigned to it.
    pub assigned: Vec<String>,
    /// Apps it reports running.
    pub running: Vec<String>,
    /// Price per CPU-hour it asks (`fog host --price`; 0: the market base).
    #[serde(default)]
    pub price_cpu_hour: f64,
    /// Its measured latency as placement uses it, if measured: the smoothed RTT of its attach
    /// links, averaged over the routers it is attached to, ms.
    #[serde(default)]
    pub rtt_ms: Option<f64>,
    /// Milliseconds since the last RTT sample.
    #[serde(default)]
    pub rtt_age_ms: Option<u64>,
    /// Who measured that RTT.
    #[serde(default)]
    pub rtt_source: Option<RttSource>,
    /// Trust in [0, 1] earned by behaviour (tiers S and A need 0.3).
    #[serde(default)]
    pub trust: f64,
    /// What the trust is made of, for people.
    #[serde(default)]
    pub trust_reasons: Vec<String>,
    /// Spot checks of its canary judged so far (right, wrong or unanswered).
    #[serde(default)]
    pub canary_checks: u64,
    /// Its throughput as a control plane measured it, if any transfer to or from it was
    /// timed (components downloaded, snapshots moved): smoothed, Mbit/s.
    #[serde(default)]
    pub throughput_mbps: Option<f64>,
    /// Milliseconds since the newest timed transfer.
    #[serde(default)]
    pub throughput_age_ms: Option<u64>,
    /// Its harvest policy's last decision, as its last heartbeat said (none: it ignores the
    /// policy, or never said).
    #[serde(default)]
    pub harvest: Option<String>,
}

/// Where an app's live replicas are, for routers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    /// App name.
    pub app: String,
    /// How requests spread over the replicas.
    pub mode: RouteMode,
    /// Live replicas, primary first.
    pub replicas: Vec<Replica>,
    /// The app's Betanet id: hex sha256 of its public key (what `betanet://` names).
    #[serde(default)]
    pub betanet: Option<String>,
}

/// How a router spreads an app's requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RouteMode {
    /// Every request to the first live replica; the others take over when it fails (tier A, B).
    ActivePassive,
    /// Requests to the least-loaded live replica (tier S).
    ActiveActive,
}

/// Header with the routes' version; `GET /v1/routes?after=N` waits until it passes N.
pub const ROUTES_VERSION_HEADER: &str = "x-fog-routes-version";

/// One live replica.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replica {
    /// Device id.
    pub device: String,
    /// Plain-HTTP data-plane address of the device (local development), if it listens.
    #[serde(default)]
    pub addr: Option<String>,
    /// The device's HTX endpoint, when it has one (the normal data plane).
    #[serde(default)]
    pub htx: Option<HtxEndpoint>,
}

/// Error body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// One line saying what is wrong.
    pub error: String,
    /// What kind of refusal it is, where a caller acts on it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<ErrorCode>,
}

/// Refusals of the control plane that callers act on (the status says the rest).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorCode {
    /// A ledger period in a heartbeat was rejected: the device drops it rather than resend it.
    LedgerPeriodRejected,
    /// Too many requests from this key or address: wait for `Retry-After`.
    RateLimited,
    /// A code this version does not know.
    #[serde(other)]
    Unknown,
}

/// One control plane's view of the control planes sharing its store (`GET /v1/plane`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlaneInfo {
    /// Its id in the election and the announcements.
    pub id: String,
    /// Whether it leads (runs reconcile) as of its last tick.
    pub leading: bool,
    /// The URL it advertises to the others, if any.
    pub advertise: Option<String>,
    /// The other live control planes' URLs, as announced.
    pub peers: Vec<String>,
}

/// A mix relay (`fog relay`): where it listens and its Noise static key (hex). Relays register
/// themselves (signed with their identity) and expire unless they register again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelayInfo {
    /// host:port.
    pub addr: String,
    /// X25519 public key, hex.
    pub key: String,
}

/// What a relay sends to register (`POST /v1/relays`): its [`RelayInfo`] and, to be admitted
/// at once, the fog's admission token. A relay without one stays pending (never listed, so
/// never on a path) until an operator admits its key; a wrong one is refused (403).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelayRegistration {
    /// host:port.
    pub addr: String,
    /// X25519 public key, hex.
    pub key: String,
    /// The fog's admission token, if the relay was given it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admission_token: Option<String>,
}

/// `POST /v1/admissions` (signed by anyone holding the admission token: the operator): admit
/// one device or relay key without giving its owner the token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdmitRequest {
    /// The key to admit (hex), or a registered device's id.
    pub key: String,
    /// The fog's admission token: proof the signer is the operator.
    pub admission_token: String,
    /// Withdraw the key's admission instead: its device is given no new work and its replicas
    /// are placed elsewhere at the next reconcile; its relay leaves every list.
    #[serde(default)]
    pub revoke: bool,
}

/// The answer to an admission: the key admitted (or revoked).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Admitted {
    /// The public key (hex).
    pub key: String,
    /// The device id of that key.
    pub device_id: String,
    /// Whether the key is admitted now.
    pub admitted: bool,
}

/// A device or relay that registered without being admitted (`GET /v1/pending`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingKey {
    /// `device` or `relay`.
    pub kind: String,
    /// The public key `fog admit` takes (hex).
    pub key: String,
    /// The device id (devices) or the relay's address.
    pub name: String,
    /// Its region (devices) or empty.
    #[serde(default)]
    pub region: String,
}

/// A router's Betanet front: where visitors open HTX connections, its Noise static key and the
/// key access tickets are made with (both X25519, hex). Only routers the control plane trusts
/// may register one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FrontInfo {
    /// host:port.
    pub addr: String,
    /// Noise static public key, hex.
    pub key: String,
    /// Ticket public key, hex.
    pub ticket_key: String,
    /// Whether HTX runs inside TLS 1.3 here (the exporter bound into the Noise prologue).
    #[serde(default)]
    pub tls: bool,
}

/// How long registered relays and fronts stay listed without registering again.
pub const REGISTRATION_TTL_MS: u64 = 30_000;

/// What a Betanet name resolves to, signed by the app's own key: anyone can check it against
/// the name (the name is the key's hash), so whoever serves it need not be trusted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NameDescriptor {
    /// The app's name.
    pub app: String,
    /// The app's ed25519 public key, hex.
    pub app_key: String,
    /// Fronts that serve the app.
    pub fronts: Vec<FrontInfo>,
    /// Unix seconds after which the descriptor is stale.
    pub expires_s: u64,
    /// ed25519 signature by `app_key` over [`NameDescriptor::signed_bytes`], hex.
    pub signature: String,
}

impl NameDescriptor {
    /// The bytes the app key signs: a domain tag and everything but the signature.
    pub fn signed_bytes(&self) -> Vec<u8> {
        let body = serde_json::json!({
            "app": self.app,
            "app_key": self.app_key,
            "fronts": self.fronts,
            "expires_s": self.expires_s,
        });
        let mut bytes = b"fog-betanet-descriptor-v1\n".to_vec();
        bytes.extend_from_slice(body.to_string().as_bytes());
        bytes
    }

    /// Check the signature and freshness (the caller checks that the key matches the name).
    pub fn verify(&self, now_s: u64) -> Result<(), String> {
        crate::auth::verify_bytes(&self.app_key, &self.signed_bytes(), &self.signature)
            .map_err(|e| format!("descriptor signature: {e}"))?;
        if now_s > self.expires_s {
            return Err(format!(
                "descriptor expired {} s ago",
                now_s - self.expires_s
            ));
        }
        Ok(())
    }
}

/// Accounts derived from the verified ledger periods (`GET /v1/balances`): what each device
/// earned and what each developer spent. Every ledger entry is counted once on each side, for
/// the same amount (the entry's credits: its fuel at the price the device signed for that
/// period), so the two totals are equal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Balances {
    /// Devices, by id.
    pub devices: Vec<DeviceBalance>,
    /// Developers, by owner key.
    pub developers: Vec<DeveloperBalance>,
    /// Credits earned by all devices.
    pub earned: f64,
    /// Credits spent by all developers.
    pub spent: f64,
    /// Verified ledger periods counted.
    pub periods: u64,
}

/// What one device earned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceBalance {
    /// Device id.
    pub device: String,
    /// Credits earned.
    pub earned: f64,
    /// Fuel burnt for apps.
    pub fuel: u64,
    /// Ledger periods counted.
    pub periods: u64,
}

/// What one developer spent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeveloperBalance {
    /// The developer's public key (hex); `removed:<app>` for an app no longer published, whose
    /// owner the control plane no longer knows.
    pub owner: String,
    /// Credits spent.
    pub spent: f64,
    /// Fuel their apps burnt.
    pub fuel: u64,
    /// Their apps that burnt fuel.
    pub apps: Vec<String>,
}
