//! The control plane (`fog control`): the registry, the versioned HTTP/JSON API and the reconcile
//! loop that turns apps and devices into assignments with [`crate::placement::plan`].
//!
//! Persistent state (apps, devices, placements, blobs) lives in a [`store::Store`]; soft state
//! (heartbeats, recent request lines) lives in memory and is rebuilt from the devices within a
//! heartbeat of a restart. A device that misses three heartbeats, or reports it may not be
//! harvested, loses its replicas at the next reconcile.

pub mod autoscale;
pub mod names;
pub mod replicas;
pub mod store;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use fog_proto::api::{
    self, AppInfo, Assignment, DeviceInfo, DeviceRegistered, DeviceRegistration, ErrorBody,
    Heartbeat, HeartbeatReply, LogLine, PublishMeta, Replica, Route, RouteMode, ScaleRequest, Tier,
};
use fog_proto::auth::{self, AUTH_HEADER, META_HEADER};
use fog_proto::{Manifest, Permissions};
use http_body_util::{BodyExt, Full, Limited};
use serde::Serialize;
use tokio::sync::{Notify, watch};

use crate::placement::{self, AppDemand, Device, PlacementConfig};
use store::{AppRecord, DeviceRecord, PlacementRecord, Store, StoreError, Table, decode, encode};

/// The response type of the API.
pub type ApiResponse = http::Response<Full<Bytes>>;

/// Settings of the control plane.
#[derive(Debug, Clone)]
pub struct ControlConfig {
    /// How often devices heartbeat (told to them on registration and used for liveness).
    pub heartbeat_interval: Duration,
    /// How many missed heartbeats make a device dead.
    pub missed_heartbeats: u32,
    /// How often the reconcile loop runs without a change.
    pub tick: Duration,
    /// CPU share one replica is planned with, in cores.
    pub replica_cpu: f64,
    /// NSGA-II settings for placement.
    pub placement: PlacementConfig,
    /// Public keys (hex) of routers allowed to register Betanet fronts.
    pub trusted_routers: Vec<String>,
    /// How often a tier-B app's primary uploads a snapshot of its state.
    pub snapshot_every: Duration,
}

impl Default for ControlConfig {
    fn default() -> Self {
        ControlConfig {
            heartbeat_interval: Duration::from_secs(1),
            missed_heartbeats: 3,
            tick: Duration::from_secs(1),
            replica_cpu: 0.1,
            placement: PlacementConfig {
                population: 40,
                generations: 30,
                ..PlacementConfig::default()
            },
            trusted_routers: Vec::new(),
            snapshot_every: Duration::from_secs(5),
        }
    }
}

/// Lines of `fog logs` kept per app.
const LOG_LINES_KEPT: usize = 1000;

struct Live {
    at: Instant,
    heartbeat: Heartbeat,
}

/// The control plane.
pub struct Control {
    store: Arc<dyn Store>,
    config: ControlConfig,
    live: Mutex<HashMap<String, Live>>,
    logs: Mutex<HashMap<String, VecDeque<LogLine>>>,
    /// Serialises read-modify-write of app records.
    writes: Mutex<()>,
    /// Wakes the reconcile loop.
    changed: Notify,
    /// Bumped whenever placements or what devices run change: wakes long-polls.
    version: watch::Sender<u64>,
    /// When this control plane started: placements are not recomputed until devices have had
    /// time to heartbeat, so a restart never takes replicas away from live devices.
    started: Instant,
    /// The secret app keys are derived from (loaded on first use).
    master: Mutex<Option<[u8; 32]>>,
    /// Each app's public names, by (owner, name): derived once, not on every routes answer.
    public_names: Mutex<HashMap<(String, String), Arc<names::PublicNames>>>,
    /// Betanet fronts and mix relays that registered recently.
    registrations: names::Registrations,
    /// Primaries moving between devices, by app.
    handovers: Mutex<HashMap<String, replicas::Handover>>,
    /// Moves asked for with `fog move` and not started yet: app → device.
    moves: Mutex<HashMap<String, String>>,
    /// New primaries that must restore the control plane's snapshot first: app → device.
    restores: Mutex<HashMap<String, String>>,
    /// Recent events per app.
    events: replicas::Events,
    /// What the autoscaler remembers of each autoscaled app.
    loads: Mutex<HashMap<String, autoscale::AppLoad>>,
    /// Apps at zero replicas: the devices that last ran them (and hold their state).
    parked: Mutex<HashMap<String, Vec<String>>>,
    /// A handover changed phase: assignments changed though placements did not.
    phase_changed: std::sync::atomic::AtomicBool,
}

/// Largest snapshot the control plane keeps for an app.
const MAX_SNAPSHOT_BYTES: u64 = 256 << 20;

/// Longest a routes long-poll is held.
const ROUTES_HOLD: Duration = Duration::from_secs(10);

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Control")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// A request the API refuses: a status and one line.
#[derive(Debug)]
struct Refusal(u16, String);

impl From<StoreError> for Refusal {
    fn from(err: StoreError) -> Self {
        tracing::error!("registry: {err}");
        Refusal(500, format!("registry error: {err}"))
    }
}

type Answer = Result<ApiResponse, Refusal>;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn json<T: Serialize>(status: u16, value: &T) -> ApiResponse {
    let body = serde_json::to_vec(value).expect("API types always serialise");
    let mut response = bytes_response("application/json", body);
    *response.status_mut() = http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::OK);
    response
}

/// A 200 carrying `bytes` as `content_type`.
fn bytes_response(content_type: &'static str, bytes: Vec<u8>) -> ApiResponse {
    let mut response = http::Response::new(Full::new(Bytes::from(bytes)));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    response
}

fn refusal_response(Refusal(status, error): Refusal) -> ApiResponse {
    json(status, &ErrorBody { error })
}

/// A digest of a device's assignments.
fn digest(assignments: &[Assignment]) -> String {
    auth::sha256_hex(&serde_json::to_vec(assignments).expect("API types always serialise"))
}

/// Check that `bytes` is a component exporting `wasi:http/incoming-handler@0.2.*`, with
/// wasmparser's validator (the control plane never runs wasmtime).
pub fn check_component(bytes: &[u8]) -> Result<(), String> {
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err("not a WebAssembly binary (no \\0asm header)".into());
    }
    if bytes[6..8] == [0, 0] {
        return Err("a core WebAssembly module, not a component: build for wasm32-wasip2".into());
    }
    let mut validator = wasmparser::Validator::new_with_features(wasmparser::WasmFeatures::all());
    validator
        .validate_all(bytes)
        .map_err(|e| format!("not a valid component: {e}"))?;
    let mut depth = 0i32;
    for payload in wasmparser::Parser::new(0).parse_all(bytes) {
        match payload.map_err(|e| format!("not a valid component: {e}"))? {
            wasmparser::Payload::ModuleSection { .. }
            | wasmparser::Payload::ComponentSection { .. } => depth += 1,
            wasmparser::Payload::End(_) => depth -= 1,
            wasmparser::Payload::ComponentExportSection(reader) if depth == 0 => {
                for export in reader {
                    let export = export.map_err(|e| format!("not a valid component: {e}"))?;
                    if export.name.0.starts_with("wasi:http/incoming-handler@0.2.") {
                        return Ok(());
                    }
                }
            }
            _ => {}
        }
    }
    Err(
        "the component does not export wasi:http/incoming-handler@0.2: it is not an HTTP app"
            .into(),
    )
}

impl Control {
    /// A control plane over `store`.
    pub fn new(store: Arc<dyn Store>, config: ControlConfig) -> Arc<Control> {
        Arc::new(Control {
            store,
            config,
            live: Mutex::new(HashMap::new()),
            logs: Mutex::new(HashMap::new()),
            writes: Mutex::new(()),
            changed: Notify::new(),
            version: watch::channel(0).0,
            started: Instant::now(),
            master: Mutex::new(None),
            public_names: Mutex::new(HashMap::new()),
            registrations: names::Registrations::default(),
            handovers: Mutex::new(HashMap::new()),
            moves: Mutex::new(HashMap::new()),
            restores: Mutex::new(HashMap::new()),
            events: replicas::Events::default(),
            loads: Mutex::new(HashMap::new()),
            parked: Mutex::new(HashMap::new()),
            phase_changed: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Serve one API request; never fails (errors become JSON error responses).
    pub async fn handle<B>(self: &Arc<Self>, request: http::Request<B>) -> ApiResponse
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let method = request.method().clone();
        let path = request.uri().path().to_string();
        let answer = self.route(request).await;
        let response = answer.unwrap_or_else(refusal_response);
        if response.status().is_client_error() || response.status().is_server_error() {
            tracing::info!(%method, path, status = response.status().as_u16(), "refused");
        }
        response
    }

    async fn route<B>(self: &Arc<Self>, request: http::Request<B>) -> Answer
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let path = request.uri().path().to_string();
        let Some(rest) = path.strip_prefix(api::PREFIX) else {
            return Err(Refusal(
                404,
                format!("unknown path {path}: the API lives under {}", api::PREFIX),
            ));
        };
        let segments: Vec<&str> = rest.trim_matches('/').split('/').collect();
        let method = request.method().clone();
        match (method.as_str(), segments.as_slice()) {
            ("POST", ["apps"]) => self.publish(request).await,
            ("GET", ["apps"]) => Ok(json(200, &self.app_infos()?)),
            ("GET", ["apps", name]) => Ok(json(200, &self.app_info(&self.app(name)?)?)),
            ("POST", ["apps", name, "scale"]) => self.scale(name, request).await,
            ("DELETE", ["apps", name]) => self.remove(name, request).await,
            ("POST", ["apps", name, "move"]) => self.request_move(name, request).await,
            ("POST", ["apps", name, "wake"]) => self.wake(name),
            ("POST", ["apps", name, "snapshot"]) => self.store_snapshot(name, request).await,
            ("POST", ["apps", name, "snapshot", "latest"]) => {
                self.latest_snapshot(name, request).await
            }
            ("GET", ["apps", name, "logs"]) => {
                self.app(name)?;
                let logs = self.logs.lock().expect("logs lock");
                let lines: Vec<&LogLine> = logs
                    .get(*name)
                    .map(|l| l.iter().collect())
                    .unwrap_or_default();
                Ok(json(200, &lines))
            }
            ("POST", ["devices"]) => self.register(request).await,
            ("GET", ["devices"]) => Ok(json(200, &self.device_infos()?)),
            ("POST", ["devices", id, "heartbeat"]) => self.heartbeat(id, request).await,
            ("GET", ["devices", id, "ledger"]) => {
                let prefix = format!("{id}/");
                let periods: Vec<api::SignedPeriod> = self
                    .store
                    .list(Table::Ledger)?
                    .iter()
                    .filter(|(k, _)| k.starts_with(&prefix))
                    .map(|(k, v)| decode(Table::Ledger, k, v))
                    .collect::<Result<_, _>>()?;
                Ok(json(200, &periods))
            }
            ("GET", ["blobs", sha]) => match self.store.get(Table::Blobs, sha)? {
                Some(bytes) => Ok(bytes_response("application/wasm", bytes)),
                None => Err(Refusal(404, format!("no blob {sha}"))),
            },
            ("GET", ["routes"]) => {
                let after = request
                    .uri()
                    .query()
                    .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("after=")))
                    .and_then(|v| v.parse::<u64>().ok());
                let mut seen = self.version.subscribe();
                if let Some(after) = after {
                    let _ = tokio::time::timeout(ROUTES_HOLD, seen.wait_for(|v| *v != after)).await;
                }
                let version = *self.version.borrow();
                let mut response = json(200, &self.routes()?);
                response.headers_mut().insert(
                    api::ROUTES_VERSION_HEADER,
                    http::HeaderValue::from_str(&version.to_string()).expect("digits"),
                );
                Ok(response)
            }
            ("POST", ["fronts"]) => {
                let (signer, body, _) = Self::signed(request, 64 << 10).await?;
                self.trusted_router(&signer, "to register a Betanet front")?;
                let front: api::FrontInfo = serde_json::from_slice(&body)
                    .map_err(|e| Refusal(400, format!("malformed front: {e}")))?;
                self.registrations
                    .register_front(&signer, front)
                    .map_err(|e| Refusal(400, e))?;
                Ok(json(200, &self.registrations.fronts()))
            }
            ("GET", ["fronts"]) => Ok(json(200, &self.registrations.fronts())),
            ("POST", ["relays"]) => {
                let (signer, body, _) = Self::signed(request, 64 << 10).await?;
                let relay: api::RelayInfo = serde_json::from_slice(&body)
                    .map_err(|e| Refusal(400, format!("malformed relay: {e}")))?;
                self.registrations
                    .register_relay(&signer, relay)
                    .map_err(|e| Refusal(400, e))?;
                Ok(json(200, &self.registrations.relays()))
            }
            ("GET", ["relays"]) => Ok(json(200, &self.registrations.relays())),
            ("POST", ["onion-keys"]) => {
                let (signer, _, _) = Self::signed(request, api::MAX_JSON_BYTES).await?;
                self.trusted_router(&signer, "with onion keys")?;
                let master = self.master()?;
                let keys: Vec<api::OnionKey> = self
                    .apps()?
                    .iter()
                    .map(|app| {
                        let identity = names::onion_identity(&master, &app.owner, &app.name);
                        api::OnionKey {
                            app: app.name.clone(),
                            address: names::onion_address(&identity.public_bytes()),
                            secret: hex::encode(identity.secret_bytes()),
                        }
                    })
                    .collect();
                Ok(json(200, &keys))
            }
            ("GET", ["names", name]) => self.resolve(name),
            (
                _,
                [
                    "apps" | "devices" | "blobs" | "routes" | "fronts" | "relays" | "names"
                    | "onion-keys",
                    ..,
                ],
            ) => Err(Refusal(405, format!("{method} is not allowed on {path}"))),
            _ => Err(Refusal(404, format!("unknown path {path}"))),
        }
    }

    /// Refuse (403) a signer that is not a router this control plane trusts; `what` ends the
    /// reason ("router key K is not trusted {what}").
    fn trusted_router(&self, signer: &str, what: &str) -> Result<(), Refusal> {
        if self.config.trusted_routers.iter().any(|r| r == signer) {
            Ok(())
        } else {
            Err(Refusal(
                403,
                format!("router key {signer} is not trusted {what}"),
            ))
        }
    }

    /// Read a body up to `limit` bytes.
    async fn body<B>(body: B, limit: u64) -> Result<Bytes, Refusal>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        match Limited::new(body, limit as usize).collect().await {
            Ok(collected) => Ok(collected.to_bytes()),
            Err(err) if err.is::<http_body_util::LengthLimitError>() => Err(Refusal(
                413,
                format!("body larger than the limit of {limit} bytes"),
            )),
            Err(err) => Err(Refusal(400, format!("body could not be read: {err}"))),
        }
    }

    /// Read the body and check the request's signature; returns (signer, body, meta).
    async fn signed<B>(
        request: http::Request<B>,
        limit: u64,
    ) -> Result<(String, Bytes, String), Refusal>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let (parts, body) = request.into_parts();
        let header = |name: &str| {
            parts
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let auth_header = header(AUTH_HEADER);
        if auth_header.is_none() {
            return Err(Refusal(401, auth::AuthError::Missing.to_string()));
        }
        let meta = header(META_HEADER).unwrap_or_default();
        let body = Self::body(body, limit).await?;
        let now_s = now_ms() / 1000;
        let signer = auth::verify(
            auth_header.as_deref(),
            parts.method.as_str(),
            parts.uri.path(),
            &auth::sha256_hex(&body),
            &meta,
            now_s,
        )
        .map_err(|e| Refusal(401, e.to_string()))?;
        Ok((signer, body, meta))
    }

    /// `POST /v1/apps/{name}/move`: the owner asks for the primary to move to a device.
    async fn request_move<B>(self: &Arc<Self>, name: &str, request: http::Request<B>) -> Answer
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let (signer, body, _) = Self::signed(request, api::MAX_JSON_BYTES).await?;
        let wanted: api::MoveRequest = serde_json::from_slice(&body)
            .map_err(|e| Refusal(400, format!("malformed JSON: {e}")))?;
        let record = self.owned_app(name, &signer)?;
        let live = self
            .live
            .lock()
            .expect("live lock")
            .get(&wanted.to)
            .map(|l| (self.is_alive(l), l.heartbeat.harvestable));
        match live {
            None => return Err(Refusal(404, format!("no live device {}", wanted.to))),
            Some((false, _)) => {
                return Err(Refusal(409, format!("device {} is not alive", wanted.to)));
            }
            Some((true, false)) => {
                return Err(Refusal(
                    409,
                    format!("device {} may not be harvested now", wanted.to),
                ));
            }
            Some((true, true)) => {}
        }
        let primary = self
            .placements()?
            .get(name)
            .and_then(|p| p.devices.first().cloned());
        if primary.as_deref() == Some(wanted.to.as_str()) {
            return Err(Refusal(
                409,
                format!("{name:?} already has its primary on {}", wanted.to),
            ));
        }
        if self
            .handovers
            .lock()
            .expect("handovers lock")
            .contains_key(name)
        {
            return Err(Refusal(409, format!("{name:?} is already moving")));
        }
        self.moves
            .lock()
            .expect("moves lock")
            .insert(name.to_string(), wanted.to.clone());
        self.changed.notify_one();
        Ok(json(202, &self.app_info(&record)?))
    }

    /// The device (id, record) that signed a request, if registered.
    fn signing_device(&self, signer: &str) -> Result<String, Refusal> {
        let id = auth::device_id(signer);
        match self.store.get(Table::Devices, &id)? {
            Some(bytes) => {
                let device: DeviceRecord = decode(Table::Devices, &id, &bytes)?;
                if device.public_key != signer {
                    return Err(Refusal(403, "not a registered device key".into()));
                }
                Ok(id)
            }
            None => Err(Refusal(403, "not a registered device".into())),
        }
    }

    /// `POST /v1/apps/{name}/snapshot`: the app's primary uploads a snapshot (tier B).
    async fn store_snapshot<B>(self: &Arc<Self>, name: &str, request: http::Request<B>) -> Answer
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let (signer, body, _) = Self::signed(request, MAX_SNAPSHOT_BYTES).await?;
        let device = self.signing_device(&signer)?;
        self.app(name)?;
        let primary = self
            .placements()?
            .get(name)
            .and_then(|p| p.devices.first().cloned());
        if primary.as_deref() != Some(device.as_str()) {
            return Err(Refusal(
                403,
                format!("device {device} is not the primary of {name:?}"),
            ));
        }
        self.store.put(Table::Snapshots, name, &body)?;
        Ok(json(200, &serde_json::json!({ "stored": body.len() })))
    }

    /// `POST /v1/apps/{name}/snapshot/latest`: a device the app is assigned to fetches the
    /// latest snapshot.
    async fn latest_snapshot<B>(self: &Arc<Self>, name: &str, request: http::Request<B>) -> Answer
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let (signer, _, _) = Self::signed(request, api::MAX_JSON_BYTES).await?;
        let device = self.signing_device(&signer)?;
        let assigned = self
            .placements()?
            .get(name)
            .is_some_and(|p| p.devices.contains(&device));
        if !assigned {
            return Err(Refusal(
                403,
                format!("device {device} does not run {name:?}"),
            ));
        }
        match self.store.get(Table::Snapshots, name)? {
            Some(bytes) => Ok(bytes_response("application/octet-stream", bytes)),
            None => Err(Refusal(404, format!("no snapshot of {name:?} yet"))),
        }
    }

    fn master(&self) -> Result<[u8; 32], StoreError> {
        let mut master = self.master.lock().expect("master lock");
        if let Some(secret) = *master {
            return Ok(secret);
        }
        let secret = names::master_secret(self.store.as_ref())?;
        *master = Some(secret);
        Ok(secret)
    }

    /// The key of `app`.
    fn app_identity(&self, app: &AppRecord) -> Result<auth::Identity, StoreError> {
        Ok(names::app_identity(&self.master()?, &app.owner, &app.name))
    }

    /// The public names of `app`, derived on first use.
    fn public_names(&self, app: &AppRecord) -> Result<Arc<names::PublicNames>, StoreError> {
        let key = (app.owner.clone(), app.name.clone());
        if let Some(known) = self.public_names.lock().expect("names lock").get(&key) {
            return Ok(known.clone());
        }
        let derived = Arc::new(names::PublicNames::derive(
            &self.master()?,
            &app.owner,
            &app.name,
        ));
        self.public_names
            .lock()
            .expect("names lock")
            .insert(key, derived.clone());
        Ok(derived)
    }

    /// `GET /v1/names/{name}`: the signed descriptor of the app a Betanet name (the hex id of
    /// `betanet://` or a `bn1:` name) belongs to.
    fn resolve(&self, name: &str) -> Answer {
        let wanted = name.trim_start_matches("betanet://");
        let node = fog_htx::names::parse_bn1(wanted).ok();
        if node.is_none() && (wanted.len() != 64 || hex::decode(wanted).is_err()) {
            return Err(Refusal(
                400,
                format!("{name:?} is not a Betanet name (64 hex digits or bn1:...)"),
            ));
        }
        for app in self.apps()? {
            let public = self.public_names(&app)?;
            let matches = match node {
                Some(node) => fog_htx::names::node_id(&public.app_key) == node,
                None => public.betanet_id.eq_ignore_ascii_case(wanted),
            };
            if matches {
                let identity = self.app_identity(&app)?;
                let fronts = self.registrations.fronts();
                if fronts.is_empty() {
                    return Err(Refusal(
                        503,
                        format!("app {:?} has no Betanet front serving right now", app.name),
                    ));
                }
                return Ok(json(
                    200,
                    &names::descriptor(&identity, &app.name, fronts, now_ms() / 1000),
                ));
            }
        }
        Err(Refusal(
            404,
            format!("no app has the Betanet name {name:?}"),
        ))
    }

    fn app(&self, name: &str) -> Result<AppRecord, Refusal> {
        match self.store.get(Table::Apps, name)? {
            Some(bytes) => Ok(decode(Table::Apps, name, &bytes)?),
            None => Err(Refusal(404, format!("no app named {name:?}"))),
        }
    }

    fn owned_app(&self, name: &str, signer: &str) -> Result<AppRecord, Refusal> {
        let app = self.app(name)?;
        if app.owner != signer {
            return Err(Refusal(403, format!("app {name:?} belongs to another key")));
        }
        Ok(app)
    }

    async fn publish<B>(self: &Arc<Self>, request: http::Request<B>) -> Answer
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let (signer, body, meta) = Self::signed(request, api::MAX_COMPONENT_BYTES).await?;
        let meta: PublishMeta = serde_json::from_str(&meta)
            .map_err(|e| Refusal(400, format!("malformed x-fog-meta JSON: {e}")))?;
        meta.validate().map_err(|e| Refusal(400, e))?;
        let component = body.clone();
        tokio::task::spawn_blocking(move || check_component(&component))
            .await
            .map_err(|e| Refusal(500, format!("validation failed: {e}")))?
            .map_err(|e| Refusal(400, e))?;
        let sha256 = auth::sha256_hex(&body);
        let info = {
            let _guard = self.writes.lock().expect("writes lock");
            let existing = match self.store.get(Table::Apps, &meta.name)? {
                Some(bytes) => Some(decode::<AppRecord>(Table::Apps, &meta.name, &bytes)?),
                None => None,
            };
            if let Some(existing) = &existing
                && existing.owner != signer
            {
                return Err(Refusal(
                    409,
                    format!("the name {:?} is taken by another key", meta.name),
                ));
            }
            self.store.put(Table::Blobs, &sha256, &body)?;
            let record = AppRecord {
                name: meta.name.clone(),
                owner: signer,
                version: existing.as_ref().map_or(1, |e| e.version + 1),
                sha256,
                size: body.len() as u64,
                tier: meta.tier,
                replicas: meta.replicas.unwrap_or_else(|| meta.tier.replicas()),
                limits: meta.limits,
                updated_ms: now_ms(),
            };
            self.store
                .put(Table::Apps, &record.name, &encode(&record))?;
            self.store.flush()?;
            tracing::info!(
                app = record.name,
                version = record.version,
                sha256 = record.sha256,
                "published"
            );
            record
        };
        self.changed.notify_one();
        Ok(json(201, &self.app_info(&info)?))
    }

    async fn scale<B>(self: &Arc<Self>, name: &str, request: http::Request<B>) -> Answer
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let (signer, body, _) = Self::signed(request, api::MAX_JSON_BYTES).await?;
        let scale: ScaleRequest = serde_json::from_slice(&body)
            .map_err(|e| Refusal(400, format!("malformed JSON: {e}")))?;
        let record = {
            let _guard = self.writes.lock().expect("writes lock");
            let mut record = self.owned_app(name, &signer)?;
            match (scale.replicas, &scale.autoscale) {
                (Some(replicas), None) => {
                    if !(1..=api::MAX_REPLICAS).contains(&replicas) {
                        return Err(Refusal(
                            400,
                            format!("replicas must be between 1 and {}", api::MAX_REPLICAS),
                        ));
                    }
                    record.replicas = replicas;
                    self.store.delete(Table::Scaling, name)?;
                    self.loads.lock().expect("loads lock").remove(name);
                }
                (None, Some(settings)) => {
                    settings.validate().map_err(|e| Refusal(400, e))?;
                    // Start inside the bounds (at least one replica until idle says otherwise).
                    record.replicas = record.replicas.clamp(settings.min.max(1), settings.max);
                    self.store.put(Table::Scaling, name, &encode(settings))?;
                }
                _ => {
                    return Err(Refusal(
                        400,
                        "give either replicas or autoscale bounds".into(),
                    ));
                }
            }
            self.store.put(Table::Apps, name, &encode(&record))?;
            self.store.flush()?;
            record
        };
        self.changed.notify_one();
        Ok(json(200, &self.app_info(&record)?))
    }

    /// `POST /v1/apps/{name}/wake`: a router holds a request for an app parked at zero
    /// replicas. Anyone may ask; it only ever brings an autoscaled app back to its minimum.
    fn wake(self: &Arc<Self>, name: &str) -> Answer {
        let mut record = self.app(name)?;
        if record.replicas == 0 {
            let _guard = self.writes.lock().expect("writes lock");
            let settings: Option<api::Autoscale> = match self.store.get(Table::Scaling, name)? {
                Some(bytes) => Some(decode(Table::Scaling, name, &bytes)?),
                None => None,
            };
            record.replicas = settings.map_or(1, |s| s.min.max(1));
            self.store.put(Table::Apps, name, &encode(&record))?;
            self.store.flush()?;
            if let Some(load) = self.loads.lock().expect("loads lock").get_mut(name) {
                load.active = Instant::now();
            }
            self.events.record(
                name,
                format!("woken by a request: {} replica(s)", record.replicas),
            );
            self.changed.notify_one();
        }
        Ok(json(
            200,
            &serde_json::json!({ "replicas": record.replicas }),
        ))
    }

    /// Run the autoscaler over every autoscaled app; true if a replica count changed.
    fn autoscale(&self, live: &HashMap<String, (bool, Heartbeat)>) -> Result<bool, StoreError> {
        let settings: Vec<(String, api::Autoscale)> = self
            .store
            .list(Table::Scaling)?
            .iter()
            .map(|(k, v)| Ok((k.clone(), decode(Table::Scaling, k, v)?)))
            .collect::<Result<_, StoreError>>()?;
        let mut changed = false;
        for (name, settings) in settings {
            let Some(bytes) = self.store.get(Table::Apps, &name)? else {
                continue;
            };
            let mut record: AppRecord = decode(Table::Apps, &name, &bytes)?;
            let counts: HashMap<String, u64> = live
                .iter()
                .filter(|(_, (alive, _))| *alive)
                .filter_map(|(id, (_, hb))| {
                    hb.running
                        .iter()
                        .find(|r| r.app == name)
                        .map(|r| (id.clone(), r.requests))
                })
                .collect();
            let decision = {
                let mut loads = self.loads.lock().expect("loads lock");
                let load = loads
                    .entry(name.clone())
                    .or_insert_with(|| autoscale::AppLoad::new(counts.clone()));
                autoscale::check(load, &settings, record.replicas, counts)
            };
            if let Some(decision) = decision {
                let _guard = self.writes.lock().expect("writes lock");
                if decision.replicas == 0 {
                    // Remember where the state is, to wake there.
                    if let Some(placement) = self.placements()?.get(&name) {
                        self.parked
                            .lock()
                            .expect("parked lock")
                            .insert(name.clone(), placement.devices.clone());
                    }
                }
                record.replicas = decision.replicas;
                self.store.put(Table::Apps, &name, &encode(&record))?;
                self.events.record(&name, decision.reason);
                changed = true;
            }
        }
        Ok(changed)
    }

    async fn remove<B>(self: &Arc<Self>, name: &str, request: http::Request<B>) -> Answer
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let (signer, _, _) = Self::signed(request, api::MAX_JSON_BYTES).await?;
        {
            let _guard = self.writes.lock().expect("writes lock");
            let record = self.owned_app(name, &signer)?;
            self.store.delete(Table::Apps, name)?;
            self.store.delete(Table::Placements, name)?;
            self.store.delete(Table::Snapshots, name)?;
            self.store.delete(Table::Scaling, name)?;
            let still_used = self.store.list(Table::Apps)?.iter().any(|(k, v)| {
                decode::<AppRecord>(Table::Apps, k, v).is_ok_and(|a| a.sha256 == record.sha256)
            });
            if !still_used {
                self.store.delete(Table::Blobs, &record.sha256)?;
            }
            self.store.flush()?;
        }
        self.logs.lock().expect("logs lock").remove(name);
        self.events.forget(name);
        self.public_names
            .lock()
            .expect("names lock")
            .retain(|(_, app), _| app != name);
        self.handovers.lock().expect("handovers lock").remove(name);
        self.moves.lock().expect("moves lock").remove(name);
        self.restores.lock().expect("restores lock").remove(name);
        self.loads.lock().expect("loads lock").remove(name);
        self.parked.lock().expect("parked lock").remove(name);
        self.bump();
        self.changed.notify_one();
        Ok(json(200, &serde_json::json!({ "removed": name })))
    }

    async fn register<B>(self: &Arc<Self>, request: http::Request<B>) -> Answer
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let (signer, body, _) = Self::signed(request, api::MAX_JSON_BYTES).await?;
        let registration: DeviceRegistration = serde_json::from_slice(&body)
            .map_err(|e| Refusal(400, format!("malformed JSON: {e}")))?;
        if registration.addr.parse::<std::net::SocketAddr>().is_err() {
            return Err(Refusal(
                400,
                format!("addr {:?} is not host:port", registration.addr),
            ));
        }
        let finite = |x: f64| x.is_finite() && x >= 0.0;
        if !(finite(registration.cpu)
            && finite(registration.mem_mb)
            && finite(registration.disk_mb))
        {
            return Err(Refusal(
                400,
                "cpu, mem_mb and disk_mb must be non-negative numbers".into(),
            ));
        }
        let id = auth::device_id(&signer);
        let record = DeviceRecord {
            id: id.clone(),
            public_key: signer,
            addr: registration.addr,
            region: registration.region,
            cpu: registration.cpu,
            mem_mb: registration.mem_mb,
            disk_mb: registration.disk_mb,
            price_cpu_hour: registration.price_cpu_hour,
            registered_ms: now_ms(),
        };
        self.store.put(Table::Devices, &id, &encode(&record))?;
        self.store.flush()?;
        tracing::info!(device = id, addr = record.addr, "device registered");
        self.changed.notify_one();
        Ok(json(200, &DeviceRegistered { device_id: id }))
    }

    async fn heartbeat<B>(self: &Arc<Self>, id: &str, request: http::Request<B>) -> Answer
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let (signer, body, _) = Self::signed(request, 8 * api::MAX_JSON_BYTES).await?;
        let device: DeviceRecord = match self.store.get(Table::Devices, id)? {
            Some(bytes) => decode(Table::Devices, id, &bytes)?,
            None => return Err(Refusal(404, format!("no device {id}: register first"))),
        };
        if device.public_key != signer {
            return Err(Refusal(
                403,
                format!("heartbeat for {id} signed by another key"),
            ));
        }
        let mut heartbeat: Heartbeat = serde_json::from_slice(&body)
            .map_err(|e| Refusal(400, format!("malformed JSON: {e}")))?;
        if heartbeat.logs.len() > api::MAX_LOG_LINES
            || heartbeat.running.len() > api::MAX_RUNNING
            || heartbeat.periods.len() > api::MAX_PERIODS
        {
            return Err(Refusal(
                413,
                "too many log lines, running apps or ledger periods in one heartbeat".into(),
            ));
        }
        // Ledger periods: signed by this device's key, for this device, with honest arithmetic.
        for period in std::mem::take(&mut heartbeat.periods) {
            let rejected = |e: String| {
                Refusal(
                    400,
                    format!("ledger period {} rejected: {e}", period.period.start_ms),
                )
            };
            if period.period.device != id {
                return Err(rejected(format!(
                    "it is for device {}",
                    period.period.device
                )));
            }
            auth::verify_bytes(
                &device.public_key,
                &period.period.signed_bytes(),
                &period.signature,
            )
            .map_err(|e| rejected(e.to_string()))?;
            period.period.check_arithmetic().map_err(rejected)?;
            let key = format!("{id}/{:020}", period.period.start_ms);
            self.store.put(Table::Ledger, &key, &encode(&period))?;
        }
        let lines = std::mem::take(&mut heartbeat.logs);
        {
            let mut logs = self.logs.lock().expect("logs lock");
            for mut line in lines {
                line.device = id.to_string();
                let kept = logs.entry(line.app.clone()).or_default();
                kept.push_back(line);
                while kept.len() > LOG_LINES_KEPT {
                    kept.pop_front();
                }
            }
        }
        let running: Vec<String> = heartbeat
            .running
            .iter()
            .map(|r| format!("{}@{}", r.app, r.sha256))
            .collect();
        let known = heartbeat.known.clone();
        let was = {
            let mut live = self.live.lock().expect("live lock");
            let was = live.get(id).map(|l| {
                let before: Vec<String> = l
                    .heartbeat
                    .running
                    .iter()
                    .map(|r| format!("{}@{}", r.app, r.sha256))
                    .collect();
                (self.is_alive(l), l.heartbeat.harvestable, before)
            });
            live.insert(
                id.to_string(),
                Live {
                    at: Instant::now(),
                    heartbeat: heartbeat.clone(),
                },
            );
            was
        };
        // A handover advances on what devices report: look at it now.
        if !self.handovers.lock().expect("handovers lock").is_empty() {
            self.changed.notify_one();
        }
        match was {
            Some((true, harvestable, before)) if harvestable == heartbeat.harvestable => {
                if before != running {
                    self.bump();
                }
            }
            _ => {
                self.bump();
                self.changed.notify_one();
            }
        }
        // Hold the reply while the device already has its assignments, until they change or a
        // heartbeat interval passes: assignments reach devices as soon as they are made.
        let mut seen = self.version.subscribe();
        let mut assignments = self.assignments_for(id)?;
        let mut digest = digest(&assignments);
        if known.as_deref() == Some(digest.as_str()) {
            let deadline = tokio::time::Instant::now() + self.config.heartbeat_interval;
            while tokio::time::timeout_at(deadline, seen.changed())
                .await
                .is_ok_and(|r| r.is_ok())
            {
                assignments = self.assignments_for(id)?;
                digest = self::digest(&assignments);
                if known.as_deref() != Some(digest.as_str()) {
                    break;
                }
            }
        }
        Ok(json(
            200,
            &HeartbeatReply {
                assignments,
                digest,
            },
        ))
    }

    /// Wake every long-poll: placements or what devices run have changed.
    fn bump(&self) {
        self.version.send_modify(|v| *v += 1);
    }

    fn is_alive(&self, live: &Live) -> bool {
        live.at.elapsed() <= self.config.heartbeat_interval * self.config.missed_heartbeats
    }

    fn apps(&self) -> Result<Vec<AppRecord>, StoreError> {
        self.store
            .list(Table::Apps)?
            .iter()
            .map(|(k, v)| decode(Table::Apps, k, v))
            .collect()
    }

    fn devices(&self) -> Result<Vec<DeviceRecord>, StoreError> {
        self.store
            .list(Table::Devices)?
            .iter()
            .map(|(k, v)| decode(Table::Devices, k, v))
            .collect()
    }

    fn placements(&self) -> Result<BTreeMap<String, PlacementRecord>, StoreError> {
        self.store
            .list(Table::Placements)?
            .iter()
            .map(|(k, v)| Ok((k.clone(), decode(Table::Placements, k, v)?)))
            .collect()
    }

    fn assignments_for(&self, device: &str) -> Result<Vec<Assignment>, StoreError> {
        let placements = self.placements()?;
        let endpoints: HashMap<String, api::HtxEndpoint> = self
            .live
            .lock()
            .expect("live lock")
            .iter()
            .filter_map(|(id, l)| l.heartbeat.htx.clone().map(|h| (id.clone(), h)))
            .collect();
        let peer = |d: &String| {
            endpoints.get(d).map(|htx| api::Peer {
                device: d.clone(),
                htx: htx.clone(),
            })
        };
        let handovers = self.handovers.lock().expect("handovers lock").clone();
        let restores = self.restores.lock().expect("restores lock").clone();
        let mut out = Vec::new();
        for app in self.apps()? {
            let Some(placement) = placements.get(&app.name) else {
                continue;
            };
            let Some(position) = placement.devices.iter().position(|d| d == device) else {
                continue;
            };
            let replication = if position == 0 {
                api::Replication {
                    role: api::ReplicaRole::Primary,
                    peers: placement.devices[1..].iter().filter_map(peer).collect(),
                    fenced: handovers
                        .get(&app.name)
                        .is_some_and(|h| h.from == device && h.phase == replicas::Phase::Fencing),
                    snapshot_every_ms: match app.tier {
                        Tier::B => self.config.snapshot_every.as_millis() as u64,
                        Tier::A | Tier::S => 0,
                    },
                    restore: restores.get(&app.name).is_some_and(|d| d == device),
                }
            } else {
                api::Replication {
                    role: api::ReplicaRole::Follower,
                    peers: peer(&placement.devices[0]).into_iter().collect(),
                    ..api::Replication::default()
                }
            };
            out.push(Assignment {
                sha256: app.sha256.clone(),
                manifest: Manifest {
                    name: app.name.clone(),
                    limits: app.limits,
                    permissions: Permissions::default(),
                },
                replication,
            });
        }
        Ok(out)
    }

    fn running_on(&self) -> HashMap<String, Vec<String>> {
        let live = self.live.lock().expect("live lock");
        let mut running: HashMap<String, Vec<String>> = HashMap::new();
        for (device, l) in live.iter() {
            if self.is_alive(l) {
                for app in &l.heartbeat.running {
                    running
                        .entry(app.app.clone())
                        .or_default()
                        .push(device.clone());
                }
            }
        }
        for devices in running.values_mut() {
            devices.sort();
        }
        running
    }

    fn app_info(&self, app: &AppRecord) -> Result<AppInfo, StoreError> {
        let placement = match self.store.get(Table::Placements, &app.name)? {
            Some(bytes) => Some(decode::<PlacementRecord>(
                Table::Placements,
                &app.name,
                &bytes,
            )?),
            None => None,
        };
        let running = self.running_on().remove(&app.name).unwrap_or_default();
        Ok(AppInfo {
            name: app.name.clone(),
            owner: app.owner.clone(),
            version: app.version,
            sha256: app.sha256.clone(),
            size: app.size,
            tier: app.tier,
            replicas: app.replicas,
            limits: app.limits,
            assigned: placement
                .as_ref()
                .map(|p| p.devices.clone())
                .unwrap_or_default(),
            running,
            problem: placement.and_then(|p| p.problem),
            updated_ms: app.updated_ms,
            betanet: self.public_names(app)?.names.clone(),
            events: self.events.of(&app.name),
            onion: Some(self.public_names(app)?.onion.clone()),
            autoscale: match self.store.get(Table::Scaling, &app.name)? {
                Some(bytes) => Some(decode(Table::Scaling, &app.name, &bytes)?),
                None => None,
            },
            moving: self
                .handovers
                .lock()
                .expect("handovers lock")
                .get(&app.name)
                .map(|h| format!("{} -> {} ({:?})", h.from, h.to, h.phase).to_lowercase()),
        })
    }

    fn app_infos(&self) -> Result<Vec<AppInfo>, StoreError> {
        self.apps()?.iter().map(|a| self.app_info(a)).collect()
    }

    fn device_infos(&self) -> Result<Vec<DeviceInfo>, StoreError> {
        let placements = self.placements()?;
        let live = self.live.lock().expect("live lock");
        Ok(self
            .devices()?
            .into_iter()
            .map(|d| {
                let l = live.get(&d.id);
                DeviceInfo {
                    alive: l.is_some_and(|l| self.is_alive(l)),
                    harvestable: l.is_some_and(|l| l.heartbeat.harvestable),
                    cpu_free: l.map_or(0.0, |l| l.heartbeat.cpu_free),
                    heartbeat_age_ms: l.map_or(u64::MAX, |l| l.at.elapsed().as_millis() as u64),
                    assigned: placements
                        .iter()
                        .filter(|(_, p)| p.devices.contains(&d.id))
                        .map(|(a, _)| a.clone())
                        .collect(),
                    running: l
                        .map(|l| l.heartbeat.running.iter().map(|r| r.app.clone()).collect())
                        .unwrap_or_default(),
                    id: d.id,
                    addr: d.addr,
                    region: d.region,
                    cpu: d.cpu,
                }
            })
            .collect())
    }

    /// Live replicas of every app: assigned, on a device with a fresh heartbeat that reports
    /// running the app.
    pub fn routes(&self) -> Result<Vec<Route>, StoreError> {
        let placements = self.placements()?;
        let devices: HashMap<String, DeviceRecord> = self
            .devices()?
            .into_iter()
            .map(|d| (d.id.clone(), d))
            .collect();
        let running = self.running_on();
        let htx: HashMap<String, api::HtxEndpoint> = self
            .live
            .lock()
            .expect("live lock")
            .iter()
            .filter_map(|(id, l)| l.heartbeat.htx.clone().map(|h| (id.clone(), h)))
            .collect();
        self.apps()?
            .into_iter()
            .map(|app| {
                let betanet = Some(self.public_names(&app)?.betanet_id.clone());
                let assigned = placements
                    .get(&app.name)
                    .map(|p| p.devices.clone())
                    .unwrap_or_default();
                let running = running.get(&app.name).cloned().unwrap_or_default();
                let replicas = assigned
                    .iter()
                    .filter(|d| running.contains(d))
                    .filter_map(|d| devices.get(d))
                    .map(|d| Replica {
                        device: d.id.clone(),
                        addr: d.addr.clone(),
                        htx: htx.get(&d.id).cloned(),
                    })
                    .collect();
                let mode = match app.tier {
                    Tier::S => RouteMode::ActiveActive,
                    Tier::A | Tier::B => RouteMode::ActivePassive,
                };
                Ok(Route {
                    app: app.name,
                    mode,
                    replicas,
                    betanet,
                })
            })
            .collect()
    }

    /// Compute placements for every app from the registered devices and write them (after the
    /// start-up grace period of `missed_heartbeats` intervals).
    pub fn reconcile(&self) -> Result<(), StoreError> {
        let mut apps = self.apps()?;
        let devices = self.devices()?;
        let placements = self.placements()?;
        let in_grace =
            self.started.elapsed() < self.config.heartbeat_interval * self.config.missed_heartbeats;
        if in_grace && placements.values().any(|p| !p.devices.is_empty()) {
            return Ok(());
        }
        let live: HashMap<String, (bool, Heartbeat)> = self
            .live
            .lock()
            .expect("live lock")
            .iter()
            .map(|(id, l)| (id.clone(), (self.is_alive(l), l.heartbeat.clone())))
            .collect();
        if self.autoscale(&live)? {
            apps = self.apps()?;
        }
        let fleet: Vec<Device> = devices
            .iter()
            .map(|d| {
                // What the device offers now (its harvest policy's share), capped by what it
                // registered; battery and heat feed the energy objective.
                let (alive, harvestable, cpu, mem, battery, charging, temperature) =
                    match live.get(&d.id) {
                        Some((alive, hb)) => (
                            *alive,
                            hb.harvestable,
                            hb.cpu_free.min(d.cpu),
                            hb.mem_free_mb.min(d.mem_mb),
                            hb.battery,
                            hb.charging,
                            hb.temperature_c,
                        ),
                        None => (false, false, 0.0, 0.0, None, true, 0.0),
                    };
                Device {
                    id: d.id.clone(),
                    cpu_capacity: cpu.max(1e-6),
                    cpu_free: cpu,
                    mem_capacity_mb: mem.max(1e-6),
                    mem_free_mb: mem,
                    disk_free_mb: d.disk_mb,
                    harvestable,
                    healthy: alive,
                    heartbeat_age_s: if alive { 0.0 } else { f64::INFINITY },
                    battery,
                    charging,
                    temperature_c: temperature,
                    region: d.region.clone(),
                    latency_ms: 10.0,
                    bandwidth_mbps: 100.0,
                    trust: 0.5,
                    price_cpu_hour: d.price_cpu_hour,
                    price_gb_hour: 0.01,
                }
            })
            .collect();
        let demands: Vec<AppDemand> = apps
            .iter()
            .filter(|a| a.replicas > 0)
            .map(|a| {
                let tier = a.tier;
                let mut demand = AppDemand::new(
                    a.name.clone(),
                    self.config.replica_cpu,
                    (a.limits.memory_bytes >> 20) as f64,
                    tier,
                );
                demand.replicas = Some(a.replicas);
                demand.component_mb = a.size as f64 / (1 << 20) as f64;
                demand
            })
            .collect();
        let parked = self.parked.lock().expect("parked lock").clone();
        let current: placement::Assignment = placements
            .iter()
            .map(|(app, p)| {
                // A woken app starts where its state is.
                let devices = match parked.get(app) {
                    Some(devices) if p.devices.is_empty() => devices.clone(),
                    _ => p.devices.clone(),
                };
                (app.clone(), devices)
            })
            .collect();
        let outcome = placement::plan(&fleet, &demands, &current, &self.config.placement);
        let problems: HashMap<&str, &str> = outcome
            .unplaceable
            .iter()
            .map(|u| (u.app.as_str(), u.reason.as_str()))
            .collect();
        let _guard = self.writes.lock().expect("writes lock");
        let mut changed = false;
        // What each live device reports of each app.
        let reports: HashMap<(String, String), api::RunningApp> = live
            .iter()
            .filter(|(_, (alive, _))| *alive)
            .flat_map(|(id, (_, hb))| {
                hb.running
                    .iter()
                    .map(move |r| ((id.clone(), r.app.clone()), r.clone()))
            })
            .collect();
        let alive = |d: &str| live.get(d).is_some_and(|(alive, _)| *alive);
        for app in &apps {
            // Only apps still registered (one may have been removed while we planned).
            if self.store.get(Table::Apps, &app.name)?.is_none() {
                continue;
            }
            let mut old = placements
                .get(&app.name)
                .map(|p| p.devices.clone())
                .unwrap_or_default();
            if old.is_empty()
                && let Some(devices) = parked.get(&app.name)
            {
                old = devices.clone();
            }
            if app.replicas == 0 {
                // Parked: no replica, no problem to report.
                let record = PlacementRecord {
                    devices: Vec::new(),
                    problem: None,
                };
                if placements.get(&app.name) != Some(&record) {
                    self.store
                        .put(Table::Placements, &app.name, &encode(&record))?;
                    changed = true;
                }
                continue;
            }
            let planned = outcome
                .assignment
                .get(&app.name)
                .cloned()
                .unwrap_or_default();
            let devices = self.lead(app, &old, planned, &reports, &alive);
            if !devices.is_empty() {
                self.parked.lock().expect("parked lock").remove(&app.name);
            }
            let record = PlacementRecord {
                devices,
                problem: problems.get(app.name.as_str()).map(|p| p.to_string()),
            };
            if placements.get(&app.name) != Some(&record) {
                tracing::info!(app = app.name, devices = ?record.devices, problem = ?record.problem, "placement changed");
                self.store
                    .put(Table::Placements, &app.name, &encode(&record))?;
                changed = true;
            }
        }
        self.store.flush()?;
        let phase_changed = self
            .phase_changed
            .swap(false, std::sync::atomic::Ordering::AcqRel);
        if changed || phase_changed {
            self.bump();
        }
        Ok(())
    }

    /// Decide an app's placement from the planner's: keep or promote the primary, or run a
    /// handover while the old primary is alive (see [`replicas`]).
    fn lead(
        &self,
        app: &AppRecord,
        old: &[String],
        planned: Vec<String>,
        reports: &HashMap<(String, String), api::RunningApp>,
        alive: &dyn Fn(&str) -> bool,
    ) -> Vec<String> {
        let report = |d: &str| reports.get(&(d.to_string(), app.name.clone()));
        let mut handovers = self.handovers.lock().expect("handovers lock");
        // A handover in progress decides the placement until it ends.
        if let Some(handover) = handovers.get_mut(&app.name) {
            let phase = handover.phase;
            match handover.step(report(&handover.from), report(&handover.to)) {
                replicas::Step::Continue(devices) => {
                    if handover.phase != phase {
                        // The primary must learn of its fence now, not at its next heartbeat.
                        self.phase_changed
                            .store(true, std::sync::atomic::Ordering::Release);
                    }
                    return devices;
                }
                replicas::Step::Done(devices, event) => {
                    self.events.record(&app.name, event);
                    handovers.remove(&app.name);
                    return devices;
                }
                replicas::Step::Abort(reason) => {
                    self.events.record(
                        &app.name,
                        format!("move to {} abandoned: {reason}", handover.to),
                    );
                    handovers.remove(&app.name);
                }
            }
        }
        let primary = old.first().filter(|p| alive(p.as_str()));
        // A requested move, or the planner dropping a live primary: hand over.
        let requested = self.moves.lock().expect("moves lock").remove(&app.name);
        if let Some(primary) = primary {
            let target = match requested {
                Some(to) if alive(&to) && to != *primary => Some((to, "requested".to_string())),
                _ if !planned.contains(primary) && !planned.is_empty() => {
                    // Prefer a follower that has already caught up.
                    let ready = planned.iter().find(|d| {
                        report(d)
                            .is_some_and(|r| r.role == api::ReplicaRole::Follower && r.caught_up)
                    });
                    let to = ready.unwrap_or(&planned[0]).clone();
                    Some((to, "the placement changed".to_string()))
                }
                _ => None,
            };
            if let Some((to, reason)) = target {
                let mut others: Vec<String> = old[1..].to_vec();
                if reason != "requested" {
                    others = planned.clone();
                }
                others.retain(|d| *d != to && d != primary);
                let handover = replicas::Handover {
                    from: primary.clone(),
                    to: to.clone(),
                    phase: replicas::Phase::Copying,
                    reason: reason.clone(),
                    started: Instant::now(),
                    fenced_at: None,
                    others,
                };
                self.events.record(
                    &app.name,
                    format!("moving from {primary} to {to} ({reason})"),
                );
                let devices = handover.devices();
                handovers.insert(app.name.clone(), handover);
                return devices;
            }
        }
        drop(handovers);
        {
            // A restore is done once the device reports the app.
            let mut restores = self.restores.lock().expect("restores lock");
            if restores.get(&app.name).is_some_and(|d| report(d).is_some()) {
                restores.remove(&app.name);
            }
        }
        let (devices, promotion) =
            replicas::order(old, planned, |d| report(d).map(|r| r.state_seq));
        if let Some(event) = promotion {
            self.events.record(&app.name, event);
        } else if !old.is_empty() && devices.first().is_some_and(|d| !old.contains(d)) {
            // No replica survived: the new primary starts from the last snapshot.
            self.restores
                .lock()
                .expect("restores lock")
                .insert(app.name.clone(), devices[0].clone());
            self.events.record(
                &app.name,
                format!(
                    "no replica survived: {} restores the last snapshot",
                    devices[0]
                ),
            );
        }
        devices
    }

    /// Reconcile on every change and every tick until `shutdown` resolves.
    pub async fn run_reconciler(self: Arc<Self>, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            let control = self.clone();
            match tokio::task::spawn_blocking(move || control.reconcile()).await {
                Ok(Ok(())) => {}
                Ok(Err(err)) => tracing::error!("reconcile failed: {err}"),
                Err(err) => tracing::error!("reconcile panicked: {err}"),
            }
            tokio::select! {
                () = &mut shutdown => return,
                () = self.changed.notified() => {}
                () = tokio::time::sleep(self.config.tick) => {}
            }
        }
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
mod tests {
    use super::*;
    use fog_proto::auth::Identity;

    fn control() -> Arc<Control> {
        Control::new(
            Arc::new(store::SledStore::temporary().unwrap()),
            ControlConfig::default(),
        )
    }

    fn request(
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> http::Request<Full<Bytes>> {
        let mut builder = http::Request::builder().method(method).uri(path);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(Full::new(Bytes::from(body))).unwrap()
    }

    fn signed(
        key: &Identity,
        method: &str,
        path: &str,
        body: Vec<u8>,
        meta: &str,
    ) -> http::Request<Full<Bytes>> {
        let header = key.sign(
            method,
            path,
            now_ms() / 1000,
            &auth::sha256_hex(&body),
            meta,
        );
        request(
            method,
            path,
            &[(AUTH_HEADER, &header), (META_HEADER, meta)],
            body,
        )
    }

    #[test]
    fn components_are_checked_without_running_them() {
        let hello = std::fs::read(fog_test_programs::HELLO).unwrap();
        assert_eq!(check_component(&hello), Ok(()));
        assert!(
            check_component(b"nope")
                .unwrap_err()
                .contains("not a WebAssembly binary")
        );
        assert!(
            check_component(b"\0asm\x01\0\0\0")
                .unwrap_err()
                .contains("core")
        );
        assert!(
            check_component(b"\0asm\x0d\0\x01\0")
                .unwrap_err()
                .contains("does not export")
        );
        assert!(
            check_component(&hello[..hello.len() / 3])
                .unwrap_err()
                .contains("not a valid component")
        );
    }

    #[tokio::test]
    async fn only_trusted_routers_register_fronts_or_get_onion_keys() {
        let router = Identity::generate();
        let stranger = Identity::generate();
        let control = Control::new(
            Arc::new(store::SledStore::temporary().unwrap()),
            ControlConfig {
                trusted_routers: vec![router.public_hex()],
                ..ControlConfig::default()
            },
        );
        let front = serde_json::to_vec(&api::FrontInfo {
            addr: "127.0.0.1:7443".into(),
            key: hex::encode([1u8; 32]),
            ticket_key: hex::encode([2u8; 32]),
            tls: false,
        })
        .unwrap();
        for (path, body, what) in [
            ("/v1/fronts", front.clone(), "to register a Betanet front"),
            ("/v1/onion-keys", b"{}".to_vec(), "with onion keys"),
        ] {
            let refused = control
                .handle(signed(&stranger, "POST", path, body.clone(), ""))
                .await;
            assert_eq!(refused.status(), 403, "{path}");
            let text = refused.into_body().collect().await.unwrap().to_bytes();
            let text = String::from_utf8_lossy(&text);
            assert!(
                text.contains(&format!("is not trusted {what}")),
                "{path}: {text}"
            );
            let accepted = control
                .handle(signed(&router, "POST", path, body, ""))
                .await;
            assert_eq!(accepted.status(), 200, "{path}");
        }
    }

    #[tokio::test]
    async fn the_api_answers_without_sockets() {
        let control = control();
        assert_eq!(
            control
                .handle(request("GET", "/v2/apps", &[], vec![]))
                .await
                .status(),
            404
        );
        assert_eq!(
            control
                .handle(request("PUT", "/v1/apps", &[], vec![]))
                .await
                .status(),
            405
        );
        let hello = std::fs::read(fog_test_programs::HELLO).unwrap();
        let meta = r#"{"name":"hello","tier":"B"}"#;
        let unsigned = request("POST", "/v1/apps", &[(META_HEADER, meta)], hello.clone());
        assert_eq!(control.handle(unsigned).await.status(), 401);
        let key = Identity::generate();
        let published = control
            .handle(signed(&key, "POST", "/v1/apps", hello.clone(), meta))
            .await;
        assert_eq!(published.status(), 201);
        let again = control
            .handle(signed(&key, "POST", "/v1/apps", hello, meta))
            .await;
        let body = again.into_body().collect().await.unwrap().to_bytes();
        let info: AppInfo = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            (info.name.as_str(), info.version, info.replicas),
            ("hello", 2, 1)
        );
        let listed = control
            .handle(request("GET", "/v1/apps", &[], vec![]))
            .await;
        let body = listed.into_body().collect().await.unwrap().to_bytes();
        let apps: Vec<AppInfo> = serde_json::from_slice(&body).unwrap();
        assert_eq!(apps.len(), 1);
        let heartbeat = signed(
            &key,
            "POST",
            "/v1/devices/0123/heartbeat",
            b"{}".to_vec(),
            "",
        );
        assert_eq!(control.handle(heartbeat).await.status(), 404);
        // Ledger periods: verified against the device key; a tampered one is refused.
        let device_key = Identity::generate();
        let registration =
            br#"{"addr":"127.0.0.1:9","region":"r","cpu":2,"mem_mb":1024,"disk_mb":1024}"#.to_vec();
        let registered = control
            .handle(signed(&device_key, "POST", "/v1/devices", registration, ""))
            .await;
        assert_eq!(registered.status(), 200);
        let id = auth::device_id(&device_key.public_hex());
        let entries = vec![api::LedgerEntry {
            app: "hello".into(),
            fuel: 7_200_000_000,
            credits: api::LedgerPeriod::credits(7_200_000_000, 0.15),
        }];
        let period = api::LedgerPeriod {
            device: id.clone(),
            start_ms: 1,
            end_ms: 2,
            price_cpu_hour: 0.15,
            total_credits: entries[0].credits,
            entries,
        };
        let honest = api::SignedPeriod {
            signature: device_key.sign_bytes(&period.signed_bytes()),
            period,
        };
        let mut tampered = honest.clone();
        tampered.period.entries[0].fuel *= 10;
        tampered.period.entries[0].credits *= 10.0;
        tampered.period.total_credits *= 10.0;
        let path = format!("/v1/devices/{id}/heartbeat");
        for (period, status) in [(tampered, 400), (honest, 200)] {
            let heartbeat = serde_json::json!({ "harvestable": true, "cpu_free": 1.0, "mem_free_mb": 512.0, "periods": [period] });
            let response = control
                .handle(signed(
                    &device_key,
                    "POST",
                    &path,
                    serde_json::to_vec(&heartbeat).unwrap(),
                    "",
                ))
                .await;
            assert_eq!(response.status(), status);
        }
        let ledger = control
            .handle(request(
                "GET",
                &format!("/v1/devices/{id}/ledger"),
                &[],
                vec![],
            ))
            .await;
        let body = ledger.into_body().collect().await.unwrap().to_bytes();
        let stored: Vec<api::SignedPeriod> = serde_json::from_slice(&body).unwrap();
        assert_eq!(stored.len(), 1);
        assert_eq!(stored[0].period.entries[0].fuel, 7_200_000_000);
        // No device has room yet: the app is reported, not silently dropped.
        let stale = Control::new(
            Arc::new(store::SledStore::temporary().unwrap()),
            ControlConfig::default(),
        );
        let key2 = Identity::generate();
        let hello = std::fs::read(fog_test_programs::HELLO).unwrap();
        let published = stale
            .handle(signed(
                &key2,
                "POST",
                "/v1/apps",
                hello,
                r#"{"name":"hello","tier":"B"}"#,
            ))
            .await;
        assert_eq!(published.status(), 201);
        stale.reconcile().unwrap();
        let info = stale.app_info(&stale.app("hello").unwrap()).unwrap();
        assert!(info.problem.unwrap().contains("needs 1 distinct devices"));
    }
}
