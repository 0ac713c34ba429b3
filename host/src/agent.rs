//! The host agent (`fog host --control URL`): registers the device with the control plane,
//! heartbeats every second with what it runs and the requests it served, and applies the
//! assignments it gets back: fetch the component by hash (checked before it runs), compile,
//! serve; stop what is no longer assigned. Each assignment also says how the app's state is
//! kept here (see [`crate::replica`]): as the primary (feeding its followers, fenced while being
//! moved away, uploading snapshots for tier B) or as a follower of another device. Replies also
//! name the routers to keep attach connections open to ([`crate::attach`]); everything the
//! control plane tells a device comes in these replies, which the device pulls.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fog_net::control_urls::{ControlUrls, Failover};
use fog_proto::api::{
    self, Assignment, DeviceRegistered, DeviceRegistration, Heartbeat, HeartbeatReply, ReplicaRole,
    Replication, RunningApp,
};
use fog_proto::auth::{self, AUTH_HEADER, Identity, META_HEADER};

use crate::peers::{FollowStatus, PeerClient};
use crate::replica::Mode;
use crate::runtime::Runtime;
use crate::server::AppTable;

/// How the agent reaches the control plane and what it says about the device.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The control planes, e.g. `http://127.0.0.1:7070`: each call goes to the one that
    /// answered last and fails over to the others (see [`ControlUrls`]).
    pub control: ControlUrls,
    /// Where `--plain` routers reach this host's plain-HTTP data plane, if it listens.
    pub advertise: Option<SocketAddr>,
    /// Region name.
    pub region: String,
    /// CPU cores offered.
    pub cpu: f64,
    /// Memory offered, MiB.
    pub mem_mb: f64,
    /// Disk offered, MiB.
    pub disk_mb: f64,
    /// Price per CPU-hour the device asks (registered; placement and the market use it).
    pub price_cpu_hour: f64,
    /// Time between heartbeats.
    pub heartbeat: Duration,
    /// The harvester's status and ledger; without one the device always offers `cpu`.
    pub harvest: Option<crate::harvest::HarvestHandle>,
    /// The device's HTX key and listener (if any), announced to routers through the control
    /// plane.
    pub htx: Option<api::HtxEndpoint>,
    /// The host's connections to the routers the control plane names (dialling out).
    pub attacher: Option<Arc<crate::attach::Attacher>>,
    /// The fog's admission token, if the operator gave it to this device: it is admitted at
    /// registration. Without it the device waits, registered but given no work, until the
    /// operator admits its key.
    pub admission_token: Option<String>,
}

/// Why the agent could not talk to the control plane.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The control plane could not be reached.
    #[error("control plane {url} unreachable: {reason}")]
    Unreachable {
        /// The URL tried.
        url: String,
        /// What failed.
        reason: String,
    },
    /// The control plane refused the request.
    #[error("control plane refused {path}: {status} {reason}")]
    Refused {
        /// The API path.
        path: String,
        /// HTTP status.
        status: u16,
        /// Its one-line reason.
        reason: String,
        /// The kind of refusal, where the agent acts on it.
        code: Option<api::ErrorCode>,
    },
}

impl Failover for AgentError {
    fn fail_over(&self) -> bool {
        match self {
            AgentError::Unreachable { .. } => true,
            AgentError::Refused { status, .. } => *status == 503,
        }
    }
}

/// Load or create the device key in `data_dir/device.key` (mode 0600).
pub fn device_identity(data_dir: &std::path::Path) -> std::io::Result<Identity> {
    let path = data_dir.join("device.key");
    match std::fs::read_to_string(&path) {
        Ok(text) => Identity::from_text(&text).map_err(std::io::Error::other),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(data_dir)?;
            let identity = Identity::generate();
            write_private(&path, &identity.to_text())?;
            Ok(identity)
        }
        Err(err) => Err(err),
    }
}

/// Write `text` to a new file readable only by its owner.
pub fn write_private(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(text.as_bytes())
}

/// A signed JSON call to the control plane (failing over to the next one in `control` if it
/// cannot answer).
pub async fn call<T: serde::de::DeserializeOwned>(
    client: &reqwest::Client,
    identity: &Identity,
    control: &ControlUrls,
    path: &str,
    body: &impl serde::Serialize,
) -> Result<T, AgentError> {
    let body = serde_json::to_vec(body).expect("API types always serialise");
    let bytes = call_raw(client, identity, control, path, body, "application/json").await?;
    decode(path, &bytes)
}

/// A signed POST with any body; the answer's bytes on success, from the first control plane
/// in `control` that answers.
async fn call_raw(
    client: &reqwest::Client,
    identity: &Identity,
    control: &ControlUrls,
    path: &str,
    body: Vec<u8>,
    content_type: &str,
) -> Result<bytes::Bytes, AgentError> {
    let auth = identity.sign("POST", path, auth::now_s(), &auth::sha256_hex(&body), "");
    let body = bytes::Bytes::from(body);
    control
        .try_each(|base| call_one(client, &auth, base, path, body.clone(), content_type, None))
        .await
}

/// [`call_raw`] to one control plane, given up (as unreachable) after `timeout` if one is set
/// (else the client's).
async fn call_one(
    client: &reqwest::Client,
    auth: &str,
    control: String,
    path: &str,
    body: bytes::Bytes,
    content_type: &str,
    timeout: Option<Duration>,
) -> Result<bytes::Bytes, AgentError> {
    let url = format!("{control}{path}");
    let unreachable = |e: reqwest::Error| AgentError::Unreachable {
        url: url.clone(),
        reason: match timeout {
            Some(timeout) if e.is_timeout() => format!("no answer within {timeout:?}"),
            _ => e.to_string(),
        },
    };
    let mut request = client
        .post(&url)
        .header(AUTH_HEADER, auth)
        .header(META_HEADER, "")
        .header("content-type", content_type)
        .body(body);
    if let Some(timeout) = timeout {
        // From the connection's start to the answer's last byte: a control plane that accepts
        // connections and never answers is given up on as one that refuses them.
        request = request.timeout(timeout);
    }
    let response = request.send().await.map_err(unreachable)?;
    let status = response.status().as_u16();
    let bytes = response.bytes().await.map_err(unreachable)?;
    if status >= 400 {
        let (reason, code) = serde_json::from_slice::<api::ErrorBody>(&bytes).map_or_else(
            |_| (String::from_utf8_lossy(&bytes).into_owned(), None),
            |e| (e.error, e.code),
        );
        return Err(AgentError::Refused {
            path: path.to_string(),
            status,
            reason,
            code,
        });
    }
    Ok(bytes)
}

/// A signed JSON call like [`call`], each control plane tried given `timeout` to answer.
async fn call_within<T: serde::de::DeserializeOwned>(
    client: &reqwest::Client,
    identity: &Identity,
    control: &ControlUrls,
    path: &str,
    body: &impl serde::Serialize,
    timeout: Duration,
) -> Result<T, AgentError> {
    let body = bytes::Bytes::from(serde_json::to_vec(body).expect("API types always serialise"));
    let bytes = control
        .try_each(|base| post_signed(client, identity, base, path, body.clone(), timeout))
        .await?;
    decode(path, &bytes)
}

/// POST the JSON `body` to the control plane at `base`, signed for this attempt alone (a nonce is
/// accepted once, so every control plane tried gets its own signature), given `timeout` to answer.
fn post_signed<'a>(
    client: &'a reqwest::Client,
    identity: &Identity,
    base: String,
    path: &'a str,
    body: bytes::Bytes,
    timeout: Duration,
) -> impl std::future::Future<Output = Result<bytes::Bytes, AgentError>> + 'a {
    let auth = identity.sign("POST", path, auth::now_s(), &auth::sha256_hex(&body), "");
    async move {
        call_one(
            client,
            &auth,
            base,
            path,
            body,
            "application/json",
            Some(timeout),
        )
        .await
    }
}

/// An answer's JSON, or why it is unreadable.
fn decode<T: serde::de::DeserializeOwned>(path: &str, bytes: &[u8]) -> Result<T, AgentError> {
    serde_json::from_slice(bytes).map_err(|e| AgentError::Refused {
        path: path.to_string(),
        status: 200,
        reason: format!("unreadable answer: {e}"),
        code: None,
    })
}

/// The least time any heartbeat attempt is given, whatever the interval: an answer given at
/// once still crosses a loaded machine's scheduler and the control plane's store.
const LEAST_WAIT: Duration = Duration::from_millis(250);

/// How long the agent waits for a heartbeat's answer, derived from the control-plane lease
/// ([`crate::replica::ControlLease`]). A control plane that has nothing new for the device holds
/// its heartbeat one interval (the assignment long-poll); the lease, confirmed from when the
/// previous heartbeat was sent (at most one hold earlier), therefore has `window - interval`
/// left when the next is sent. A control plane that accepts the connection and never answers
/// (hung, stopped, black-holed) must be given up on early enough for another to answer before
/// that runs out, or the device's primaries fence themselves although a healthy control plane
/// was in the list.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Pace {
    /// The heartbeat interval the control plane announced: the longest it holds a heartbeat.
    interval: Duration,
    /// How long after a heartbeat a control plane counts the device dead, and the lease lasts.
    window: Duration,
}

impl Pace {
    /// The pace a reply announces (the agent's defaults where it says nothing).
    fn of(reply: &HeartbeatReply, default_interval: Duration) -> Pace {
        let interval = match reply.heartbeat_interval_ms {
            0 => default_interval,
            ms => Duration::from_millis(ms),
        };
        let missed = match reply.missed_heartbeats {
            0 => MISSED_HEARTBEATS,
            n => n,
        };
        Pace {
            interval,
            window: interval * missed,
        }
    }

    /// Before any reply: the agent's interval and the control plane's default missed count.
    fn default_for(interval: Duration) -> Pace {
        Pace {
            interval,
            window: interval * MISSED_HEARTBEATS,
        }
    }

    /// The first attempt, to the current control plane, which may hold it one interval: until
    /// half the window (1.5 intervals with the default 3 missed), never less than a hold and a
    /// little more.
    fn held(&self) -> Duration {
        (self.window / 2).max(self.interval + LEAST_WAIT)
    }

    /// Every further attempt asks its control plane to answer at once (it names no assignments
    /// already known, so there is nothing to wait for) and gets what the held attempt left of
    /// the lease: `window - interval - window / 2` (half an interval by default).
    fn prompt(&self) -> Duration {
        (self.window / 2)
            .saturating_sub(self.interval)
            .max(LEAST_WAIT)
    }

    /// How the attempts of a heartbeat sent with `left` of the lease to run (zero: lapsed, or
    /// not yet confirmed) go: whether the first may be held, and each attempt's time.
    ///
    /// The first is held when the lease leaves room for a hold and a prompt attempt after it
    /// (always, at the normal pace); a heartbeat sent again soon after the last (a finished load
    /// interrupts a held one to report the app at once) finds less left, and asks the current
    /// control plane to answer at once too, else a hung one would be waited out once more. With
    /// the lease already lapsed there is nothing left to keep: every attempt is given the window,
    /// so a slow control plane, the only one perhaps, is not given up on again and again.
    fn attempts(&self, left: Duration) -> Attempts {
        if left.is_zero() {
            return Attempts {
                held: false,
                first: self.window,
                rest: self.window,
            };
        }
        let first = left.saturating_sub(self.prompt()).min(self.held());
        if first >= self.interval + LEAST_WAIT {
            Attempts {
                held: true,
                first,
                rest: self.prompt(),
            }
        } else {
            Attempts {
                held: false,
                first: self.prompt(),
                rest: self.prompt(),
            }
        }
    }
}

/// The attempts of one heartbeat: see [`Pace::attempts`].
#[derive(Debug, Clone, Copy, PartialEq)]
struct Attempts {
    /// Whether the first attempt names the assignments already known (so it may be held).
    held: bool,
    /// The first attempt's time.
    first: Duration,
    /// Every other attempt's time.
    rest: Duration,
}

/// Send `heartbeat` to the current control plane, then (if it fails or does not answer in
/// time) to each other one and to the current one again, each of those asked to answer at once;
/// `left` is what remains of the lease (see [`Pace`]).
async fn send_heartbeat(
    client: &reqwest::Client,
    identity: &Identity,
    control: &ControlUrls,
    path: &str,
    heartbeat: &Heartbeat,
    pace: Pace,
    left: Duration,
) -> Result<HeartbeatReply, AgentError> {
    let attempts = pace.attempts(left);
    let held =
        bytes::Bytes::from(serde_json::to_vec(heartbeat).expect("API types always serialise"));
    let prompt = bytes::Bytes::from(
        serde_json::to_vec(&Heartbeat {
            known: None,
            ..heartbeat.clone()
        })
        .expect("API types always serialise"),
    );
    // With one control plane there is nothing to fail over to: giving it up early would only
    // turn a slow answer (a loaded machine) into a missed heartbeat. With several, the last try
    // (the current one again) has no other after it and gets the window too.
    let tries = match control.all().len() {
        1 => 1,
        n => n + 1,
    };
    let bytes = control
        .try_in_turn(tries, |step, base| {
            let body = if step == 0 && attempts.held {
                held.clone()
            } else {
                prompt.clone()
            };
            let timeout = match step {
                _ if step + 1 == tries => pace.window.max(attempts.first),
                0 => attempts.first,
                _ => attempts.rest,
            };
            post_signed(client, identity, base, path, body, timeout)
        })
        .await?;
    decode(path, &bytes)
}

/// A component by hash, from the first control plane that has it. The request is signed so the
/// control plane knows which device it sends the bytes to and times the download (the
/// device's measured throughput).
async fn fetch_blob(shared: &Shared, sha256: &str) -> Result<bytes::Bytes, AgentError> {
    let path = format!("/v1/blobs/{sha256}");
    shared
        .control
        .try_each(|base| {
            let (url, path) = (format!("{base}{path}"), path.clone());
            async move {
                let unreachable = |e: reqwest::Error| AgentError::Unreachable {
                    url: url.clone(),
                    reason: e.to_string(),
                };
                // Signed for each control plane tried: a nonce is accepted once.
                let auth =
                    shared
                        .identity
                        .sign("GET", &path, auth::now_s(), &auth::sha256_hex(b""), "");
                let response = shared
                    .client
                    .get(&url)
                    .header(AUTH_HEADER, auth)
                    .header(META_HEADER, "")
                    .send()
                    .await
                    .map_err(unreachable)?;
                let status = response.status().as_u16();
                let bytes = response.bytes().await.map_err(unreachable)?;
                if status >= 400 {
                    return Err(AgentError::Refused {
                        path: path.clone(),
                        status,
                        reason: String::from_utf8_lossy(&bytes).into_owned(),
                        code: None,
                    });
                }
                Ok(bytes)
            }
        })
        .await
}

/// The replication tasks of one app on this device.
#[derive(Debug, Default)]
struct AppTasks {
    /// The device followed, and the task following it.
    follow: Option<(String, tokio::task::JoinHandle<()>)>,
    status: Arc<FollowStatus>,
    /// The snapshot uploader (tier B) and its interval.
    uploader: Option<(u64, tokio::task::JoinHandle<()>)>,
}

impl Drop for AppTasks {
    fn drop(&mut self) {
        if let Some((_, task)) = self.follow.take() {
            task.abort();
        }
        if let Some((_, task)) = self.uploader.take() {
            task.abort();
        }
    }
}

/// What the agent shares between its loop and the tasks it starts.
#[derive(Clone)]
struct Shared {
    runtime: Arc<Runtime>,
    apps: Arc<AppTable>,
    client: reqwest::Client,
    control: ControlUrls,
    identity: Arc<Identity>,
    peers: PeerClient,
    loaded: Loaded,
    /// Each assigned app's latest manifest: what may change without a new version (outbound
    /// origins) is regranted from it to the app serving and to a version still loading.
    granted: Arc<Mutex<HashMap<String, fog_proto::Manifest>>>,
    tasks: Arc<Mutex<HashMap<String, AppTasks>>>,
    wake: Arc<tokio::sync::Notify>,
}

/// The agent's view of what it runs: app name → sha256 being served or loaded.
type Loaded = Arc<Mutex<HashMap<String, String>>>;

/// Run the agent until `shutdown` resolves.
pub async fn run(
    runtime: Arc<Runtime>,
    apps: Arc<AppTable>,
    identity: Identity,
    config: AgentConfig,
    shutdown: impl Future<Output = ()>,
) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("an HTTP client");
    let loaded: Loaded = Arc::new(Mutex::new(HashMap::new()));
    let wake = Arc::new(tokio::sync::Notify::new());
    let shared = Shared {
        runtime: runtime.clone(),
        apps: apps.clone(),
        client: client.clone(),
        control: config.control.clone(),
        identity: Arc::new(Identity::from_secret(&identity.secret_bytes())),
        peers: PeerClient::new(
            crate::htx_server::static_key(&identity.secret_bytes()),
            config
                .attacher
                .clone()
                .map(|a| a as Arc<dyn fog_htx::dial::Rendezvous>),
        ),
        loaded: loaded.clone(),
        granted: Arc::new(Mutex::new(HashMap::new())),
        tasks: Arc::new(Mutex::new(HashMap::new())),
        wake: wake.clone(),
    };
    let registration = DeviceRegistration {
        addr: config.advertise.map(|a| a.to_string()),
        region: config.region.clone(),
        cpu: config.cpu,
        mem_mb: config.mem_mb,
        disk_mb: config.disk_mb,
        price_cpu_hour: config.price_cpu_hour,
        admission_token: config.admission_token.clone(),
    };
    tokio::pin!(shutdown);
    let _closing = CloseOnDrop(config.attacher.clone());
    let mut device: Option<String> = None;
    let mut known: Option<String> = None;
    let mut backoff = config.heartbeat;
    let mut pace = Pace::default_for(config.heartbeat);
    // Until when the last answered heartbeat confirmed the lease.
    let mut lease_end: Option<tokio::time::Instant> = None;
    // From now on primaries take writes only while a control plane vouches for them.
    let lease = runtime.lease().clone();
    lease.govern();
    loop {
        let started = tokio::time::Instant::now();
        let step = async {
            let id = match &device {
                Some(id) => id.clone(),
                None => {
                    // Not held, but it writes to the store: a window and more (never the
                    // client's 30 s, which a hung first control plane would cost every start).
                    let registered: DeviceRegistered = call_within(
                        &client,
                        &identity,
                        &config.control,
                        "/v1/devices",
                        &registration,
                        pace.window.max(REGISTRATION_WAIT),
                    )
                    .await?;
                    tracing::info!(
                        device = registered.device_id,
                        control = %config.control,
                        admitted = registered.admitted,
                        "registered"
                    );
                    if !registered.admitted {
                        tracing::warn!(
                            device = registered.device_id,
                            key = identity.public_hex(),
                            "pending admission: this device is given no work until the \
                             operator runs `fog admit {}` (or it registers with \
                             --admission-token)",
                            registered.device_id
                        );
                    }
                    registered.device_id
                }
            };
            let mut heartbeat = heartbeat(&shared, &config);
            heartbeat.known = known.clone();
            let path = format!("/v1/devices/{id}/heartbeat");
            let logged = heartbeat.logs.last().map(|l| l.seq);
            let left =
                lease_end.map_or(Duration::ZERO, |end| end.saturating_duration_since(started));
            let reply = send_heartbeat(
                &client,
                &identity,
                &config.control,
                &path,
                &heartbeat,
                pace,
                left,
            )
            .await?;
            if let Some(seq) = logged {
                shared.apps.request_log().acknowledge(seq);
            }
            Ok::<_, AgentError>((id, reply))
        };
        // The control plane holds a heartbeat until assignments change (at most one interval);
        // a finished load cuts the wait short so the new app is reported at once.
        let outcome = tokio::select! {
            () = &mut shutdown => return,
            outcome = step => Some(outcome),
            () = wake.notified() => None,
        };
        let pause = match outcome {
            None => Duration::ZERO,
            Some(Ok((id, reply))) => {
                // The routers to dial out to come with every reply (pulled, never pushed).
                if let Some(attacher) = &config.attacher {
                    attacher.set_routers(&id, &reply.attach);
                }
                device = Some(id);
                backoff = config.heartbeat;
                pace = Pace::of(&reply, config.heartbeat);
                if known.as_deref() != Some(reply.digest.as_str()) {
                    apply(&shared, reply.assignments);
                    known = Some(reply.digest);
                }
                // Only now (a demoted primary was just told): the control plane counts this
                // device alive until that long after it heard this heartbeat, which was no
                // earlier than `started`.
                lease_end = Some(started + pace.window);
                lease.confirm((started + pace.window).into_std());
                // Never more than ten heartbeats a second, whatever the control plane does.
                Duration::from_millis(100).saturating_sub(started.elapsed())
            }
            Some(Err(err)) => {
                if matches!(err, AgentError::Refused { status: 404, .. }) {
                    device = None;
                    known = None;
                }
                // A period the control plane will never accept must not block the heartbeat.
                if let (
                    AgentError::Refused {
                        reason,
                        code: Some(api::ErrorCode::LedgerPeriodRejected),
                        ..
                    },
                    Some(harvest),
                ) = (&err, &config.harvest)
                {
                    let ledger = harvest.ledger.lock().expect("ledger lock");
                    if let Some(last) = ledger.pending(api::MAX_PERIODS).last() {
                        tracing::error!(
                            "dropping ledger periods the control plane refused: {reason}"
                        );
                        ledger.acknowledge(last.period.start_ms);
                    }
                }
                tracing::warn!("{err}");
                backoff = (backoff * 2).min(Duration::from_secs(5));
                backoff
            }
        };
        tokio::select! {
            () = &mut shutdown => return,
            () = tokio::time::sleep(pause) => {}
            () = wake.notified() => {}
        }
    }
}

/// The missed heartbeats that make a device dead when a control plane does not say: the
/// control plane's default.
const MISSED_HEARTBEATS: u32 = 3;

/// The least a registration is given before the next control plane is tried.
const REGISTRATION_WAIT: Duration = Duration::from_secs(5);

/// Closes the router connections when the agent stops.
struct CloseOnDrop(Option<Arc<crate::attach::Attacher>>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        if let Some(attacher) = &self.0 {
            attacher.close_all();
        }
    }
}

fn heartbeat(shared: &Shared, config: &AgentConfig) -> Heartbeat {
    let tasks = shared.tasks.lock().expect("tasks lock");
    let running: Vec<RunningApp> = shared
        .apps
        .list()
        .iter()
        .map(|app| {
            let meter = app.meter();
            let namespace = app.namespace();
            let mode = namespace.mode();
            RunningApp {
                app: app.name().to_string(),
                sha256: app.sha256().to_string(),
                in_flight: app.in_flight(),
                requests: meter.requests,
                failures: meter.failures,
                fuel: meter.fuel,
                state_seq: namespace.head(),
                role: if mode == Mode::Follower {
                    ReplicaRole::Follower
                } else {
                    ReplicaRole::Primary
                },
                caught_up: tasks.get(app.name()).is_some_and(|t| {
                    t.follow.is_some()
                        && t.status
                            .caught_up
                            .load(std::sync::atomic::Ordering::Acquire)
                }),
                fenced: mode == Mode::Fenced && app.in_flight() == 0,
                memory_bytes: Some(app.take_memory_peak()),
            }
        })
        .collect();
    drop(tasks);
    // Lines stay pending until a reply acknowledges them: a lost heartbeat or a restart sends
    // them again.
    let logs = shared.apps.request_log().pending(api::MAX_LOG_LINES);
    let mut heartbeat = Heartbeat {
        harvestable: true,
        cpu_free: config.cpu,
        mem_free_mb: config.mem_mb,
        battery: None,
        charging: true,
        temperature_c: 0.0,
        running,
        logs,
        known: None,
        periods: Vec::new(),
        htx: config.htx.clone(),
        attached: config
            .attacher
            .as_ref()
            .map(|a| a.links())
            .unwrap_or_default(),
        harvest: None,
    };
    if let Some(harvest) = &config.harvest {
        let status = harvest.status.borrow().clone();
        heartbeat.harvestable = status.state == crate::harvest::policy::State::Harvesting;
        heartbeat.cpu_free = status.cpu_offered.min(config.cpu);
        heartbeat.mem_free_mb = status.mem_offered_mb.min(config.mem_mb);
        heartbeat.battery = status.reading.battery;
        heartbeat.charging = status.reading.charging;
        heartbeat.temperature_c = status.reading.cpu_temp_c.unwrap_or(0.0);
        heartbeat.harvest = Some(status.reason.clone());
        heartbeat.periods = harvest
            .ledger
            .lock()
            .expect("ledger lock")
            .pending(api::MAX_PERIODS);
    }
    heartbeat
}

/// Start loading what is newly assigned, stop what is no longer assigned, and set every app's
/// replication role.
fn apply(shared: &Shared, assignments: Vec<Assignment>) {
    let wanted: HashSet<&str> = assignments
        .iter()
        .map(|a| a.manifest.name.as_str())
        .collect();
    for app in shared.apps.list() {
        if !wanted.contains(app.name()) {
            shared.apps.remove(app.name());
            shared
                .loaded
                .lock()
                .expect("loaded lock")
                .remove(app.name());
            tracing::info!(app = app.name(), "stopped: no longer assigned");
        }
    }
    shared
        .tasks
        .lock()
        .expect("tasks lock")
        .retain(|app, _| wanted.contains(app.as_str()));
    shared
        .granted
        .lock()
        .expect("granted lock")
        .retain(|app, _| wanted.contains(app.as_str()));
    for assignment in assignments {
        let name = assignment.manifest.name.clone();
        configure(shared, &name, &assignment.replication);
        {
            // Under the lock a finished load also takes it under, so no app starts serving
            // with grants older than the latest assignment's.
            let mut granted = shared.granted.lock().expect("granted lock");
            if granted.get(&name) != Some(&assignment.manifest) {
                if let Some(app) = shared.apps.get(&name) {
                    app.regrant(&assignment.manifest);
                }
                granted.insert(name.clone(), assignment.manifest.clone());
            }
        }
        let version = crate::bundle::version(&assignment);
        {
            let mut loaded = shared.loaded.lock().expect("loaded lock");
            if loaded.get(&name) == Some(&version) {
                continue;
            }
            loaded.insert(name.clone(), version.clone());
        }
        let shared = shared.clone();
        tokio::spawn(async move {
            let result = async {
                let bytes = fetch_blob(&shared, &assignment.sha256)
                    .await
                    .map_err(|e| e.to_string())?;
                let actual = auth::sha256_hex(&bytes);
                if actual != assignment.sha256 {
                    return Err(format!(
                        "blob hash mismatch: expected {}, got {actual}",
                        assignment.sha256
                    ));
                }
                let manifest = crate::bundle::manifest(
                    &shared.client,
                    &shared.control,
                    &shared.runtime,
                    &assignment,
                )
                .await
                .map_err(|e| e.to_string())?;
                let runtime = shared.runtime.clone();
                let app = tokio::task::spawn_blocking(move || runtime.load(manifest, &bytes))
                    .await
                    .map_err(|e| e.to_string())?
                    .map_err(|e| e.to_string())?;
                if assignment.replication.restore && shared.apps.get(&name).is_none() {
                    restore(&shared, &name, app.namespace()).await?;
                }
                Ok::<_, String>(app)
            }
            .await;
            match result {
                Ok(app) => {
                    // Still wanted at this version? (A newer assignment may have replaced it.)
                    if shared.loaded.lock().expect("loaded lock").get(&name) == Some(&version) {
                        tracing::info!(app = name, sha256 = assignment.sha256, "serving");
                        let granted = shared.granted.lock().expect("granted lock");
                        if let Some(latest) = granted.get(&name) {
                            app.regrant(latest);
                        }
                        shared.apps.insert(Arc::new(app));
                        drop(granted);
                        shared.wake.notify_one();
                    }
                }
                Err(err) => {
                    tracing::warn!(app = name, "cannot run assignment: {err}");
                    shared.loaded.lock().expect("loaded lock").remove(&name);
                }
            }
        });
    }
}

/// Set `app`'s replication role here, starting or stopping its tasks.
fn configure(shared: &Shared, app: &str, replication: &Replication) {
    let namespace = match shared.runtime.namespace(app) {
        Ok(namespace) => namespace,
        Err(err) => {
            tracing::error!(app, "cannot open the app's state: {err}");
            return;
        }
    };
    let keys = |peers: &[api::Peer]| -> Vec<[u8; 32]> {
        peers
            .iter()
            .filter_map(|p| hex::decode(&p.htx.key).ok()?.try_into().ok())
            .collect()
    };
    let mut tasks = shared.tasks.lock().expect("tasks lock");
    let entry = tasks.entry(app.to_string()).or_default();
    match (replication.role, replication.peers.first()) {
        (ReplicaRole::Follower, Some(source)) => {
            namespace.set_mode(Mode::Follower);
            namespace.set_allowed(Vec::new());
            if entry.follow.as_ref().map(|(d, _)| d) != Some(&source.device) {
                if let Some((_, old)) = entry.follow.take() {
                    old.abort();
                }
                entry.status = Arc::new(FollowStatus {
                    wake: shared.wake.clone(),
                    ..FollowStatus::default()
                });
                let task = tokio::spawn(crate::peers::follow(
                    shared.peers.clone(),
                    namespace.clone(),
                    app.to_string(),
                    source.clone(),
                    entry.status.clone(),
                ));
                tracing::info!(app, primary = source.device, "following");
                entry.follow = Some((source.device.clone(), task));
            }
        }
        (ReplicaRole::Follower, None) => {
            tracing::warn!(
                app,
                "follower assignment without a primary: refusing writes"
            );
            namespace.set_mode(Mode::Follower);
        }
        (ReplicaRole::Primary, _) => {
            if let Some((_, task)) = entry.follow.take() {
                task.abort();
                tracing::info!(app, seq = namespace.head(), "promoted to primary");
            }
            namespace.set_allowed(keys(&replication.peers));
            let mode = if replication.fenced {
                Mode::Fenced
            } else {
                Mode::Primary
            };
            if namespace.mode() != mode {
                tracing::info!(app, ?mode, seq = namespace.head(), "replica mode");
                if mode == Mode::Fenced {
                    // Report "fenced" as soon as the last in-flight request is done.
                    let (apps, wake, app) =
                        (shared.apps.clone(), shared.wake.clone(), app.to_string());
                    tokio::spawn(async move {
                        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
                        while apps.get(&app).is_some_and(|a| a.in_flight() > 0)
                            && tokio::time::Instant::now() < deadline
                        {
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                        wake.notify_one();
                    });
                }
            }
            namespace.set_mode(mode);
        }
    }
    // Snapshots for the control plane (tier B), on the primary only.
    let every = match replication.role {
        ReplicaRole::Primary => replication.snapshot_every_ms,
        ReplicaRole::Follower => 0,
    };
    if entry.uploader.as_ref().map(|(e, _)| *e) != Some(every) {
        if let Some((_, old)) = entry.uploader.take() {
            old.abort();
        }
        if every > 0 {
            let task = tokio::spawn(upload_snapshots(
                shared.clone(),
                app.to_string(),
                namespace,
                Duration::from_millis(every),
            ));
            entry.uploader = Some((every, task));
        }
    }
}

/// Every `every`, if the state changed, upload a snapshot to the control plane.
async fn upload_snapshots(
    shared: Shared,
    app: String,
    namespace: crate::kv::Namespace,
    every: Duration,
) {
    let mut uploaded = None;
    loop {
        tokio::time::sleep(every).await;
        let head = namespace.head();
        if uploaded == Some(head) || namespace.mode() != Mode::Primary {
            continue;
        }
        let (ns, name) = (namespace.clone(), app.clone());
        let snapshot = tokio::task::spawn_blocking(move || ns.snapshot_bytes(&name)).await;
        let Ok(Ok((seq, bytes))) = snapshot else {
            tracing::warn!(app, "cannot take a snapshot");
            continue;
        };
        let path = format!("/v1/apps/{app}/snapshot");
        match call_raw(
            &shared.client,
            &shared.identity,
            &shared.control,
            &path,
            bytes,
            "application/octet-stream",
        )
        .await
        {
            Ok(_) => {
                tracing::debug!(app, seq, "snapshot uploaded");
                uploaded = Some(seq);
            }
            Err(err) => tracing::warn!(app, "snapshot upload failed: {err}"),
        }
    }
}

/// Restore the latest snapshot the control plane holds for `app` (none yet: start empty).
async fn restore(
    shared: &Shared,
    app: &str,
    namespace: &crate::kv::Namespace,
) -> Result<(), String> {
    let path = format!("/v1/apps/{app}/snapshot/latest");
    let bytes = match call_raw(
        &shared.client,
        &shared.identity,
        &shared.control,
        &path,
        b"{}".to_vec(),
        "application/json",
    )
    .await
    {
        Ok(bytes) => bytes,
        Err(AgentError::Refused { status: 404, .. }) => {
            tracing::warn!(app, "no snapshot to restore: starting with empty state");
            return Ok(());
        }
        Err(err) => return Err(err.to_string()),
    };
    let chunks = futures_util::stream::iter([Ok::<_, String>(bytes)]);
    let seq = namespace.restore_from(chunks).await?;
    tracing::info!(app, seq, "restored the control plane's snapshot");
    Ok(())
}

/// Default data directory of a host.
pub fn default_data_dir() -> PathBuf {
    std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("."))
        .join("fog")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hung_control_plane_is_given_up_on_with_time_left_for_another_within_the_lease() {
        // The default: 1 s interval, 3 missed heartbeats.
        let pace = Pace::default_for(Duration::from_secs(1));
        assert_eq!(pace.held(), Duration::from_millis(1500));
        assert_eq!(pace.prompt(), Duration::from_millis(500));
        // Sent one held interval after the previous one, the lease has window - interval left:
        // the held attempt and one prompt one fit in it, for every interval a fleet announces.
        // At the normal pace the first attempt is held; sent again soon after (a finished load
        // interrupted it) it is not, and with the lease lapsed every attempt gets the window.
        let normal = pace.attempts(pace.window - pace.interval);
        assert_eq!(
            normal,
            Attempts {
                held: true,
                first: pace.held(),
                rest: pace.prompt()
            }
        );
        let again = pace.attempts(Duration::from_millis(1700));
        assert!(!again.held && again.first + again.rest <= Duration::from_millis(1700));
        let lapsed = pace.attempts(Duration::ZERO);
        assert!(!lapsed.held && lapsed.first == pace.window && lapsed.rest == pace.window);
        for secs in [1, 2, 5, 10] {
            let pace = Pace::default_for(Duration::from_secs(secs));
            assert!(
                pace.held() > pace.interval,
                "a held heartbeat is waited for"
            );
            assert!(
                pace.held() + pace.prompt() <= pace.window - pace.interval,
                "{pace:?}"
            );
        }
    }
}
