//! The registry on etcd, for several control planes sharing one registry
//! (`fog control --store etcd://h1:2379,h2:2379`).
//!
//! Records live under `<prefix>/<table>/<key>` with their format version byte, as in sled.
//! Conditional writes compare the key's `mod_revision` in a transaction. Bulk tables
//! ([`Table::is_bulk`]: components and tier-B snapshots) never go to etcd, whose requests are
//! limited to 1.5 MiB: they stay content-addressed in a sled store on this control plane's disk,
//! components and bundles copied to a second control plane before a publish is acknowledged
//! (see `crate::planes`). Control planes announce themselves under `<prefix>/planes/<id>`,
//! each under a short lease.
//!
//! The [`Store`] trait is synchronous and the control plane calls it both from async handlers
//! and from `spawn_blocking`, so the store owns a small tokio runtime of its own that runs the
//! etcd client; a call hands its request to that runtime and waits on a channel (inside
//! `block_in_place` on a multi-thread runtime, so the caller's other tasks move to other
//! workers). The caller's runtime never drives etcd I/O, so no caller can starve it: not a
//! current-thread runtime blocked in a handler, not a multi-thread runtime with every worker
//! waiting on etcd.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, PutOptions, Txn, TxnOp,
    TxnOpResponse, TxnResponse, WatchOptions,
};
use tokio::runtime::{Handle, Runtime, RuntimeFlavor};

use super::{
    Feed, Feeds, Leadership, Revision, RevisionKind, SledStore, Store, StoreError, Table,
    Versioned, writing_as_leader,
};

/// Seconds the leader's lease lives without renewal: a leader that stops (killed, paused,
/// partitioned from the cluster) is replaced within about this long. The reconcile loop
/// renews it before every tick (1 s) and every second while a tick runs.
pub const LEADER_LEASE_TTL_S: i64 = 3;

/// The election key under the prefix.
const LEADER_KEY: &str = "leader";

/// Where control planes announce themselves (see [`Store::announce`]), under the prefix.
const PLANES: &str = "planes";

/// Where control planes put the last heartbeat of each device they heard (see
/// [`Store::announce`]), one key per device, under the prefix.
const HEARD: &str = "heard";

/// Most writes in one transaction (etcd's `--max-txn-ops` default).
const TXN_OPS: usize = 128;

/// Most bytes of values in one transaction: well under etcd's request limit (1.5 MiB) and
/// its gRPC receive limit (2 MiB).
const TXN_BYTES: usize = 512 << 10;

/// This control plane's standing in the election.
#[derive(Debug, Default)]
struct Standing {
    /// Our lease, while it lives.
    lease: Option<i64>,
    /// The creation revision of the leader key we wrote, while we lead; 0 otherwise. Fenced
    /// writes compare it, so a write after someone else was elected fails.
    revision: i64,
}

/// Default for [`EtcdConfig::history`]: far longer than any watch of a control plane lags.
pub const DEFAULT_HISTORY: Duration = Duration::from_secs(600);

/// Keys fetched per request when listing a table.
const PAGE: i64 = 500;

/// Where the etcd cluster is and how to use it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdConfig {
    /// Client endpoints, `host:port`.
    pub endpoints: Vec<String>,
    /// The prefix of every key, so several fogs (or tests) can share one cluster.
    pub prefix: String,
    /// How long one request may take before the store reports etcd unreachable.
    pub timeout: Duration,
    /// How much of the cluster's history (old revisions) is kept: older revisions are
    /// compacted away, so the heartbeats and announcements written every round do not grow
    /// etcd's database until it hits its space quota. `None` leaves compaction to the cluster
    /// (etcd's `--auto-compaction-retention`).
    pub history: Option<Duration>,
}

impl EtcdConfig {
    /// The default key prefix.
    pub const DEFAULT_PREFIX: &'static str = "fog";

    /// Parse `etcd://h1:2379,h2:2379[/prefix]`.
    pub fn from_url(url: &str) -> Result<EtcdConfig, StoreError> {
        let bad = |reason: &str| StoreError::BadLocation {
            given: url.to_string(),
            reason: reason.to_string(),
        };
        let rest = url
            .strip_prefix("etcd://")
            .ok_or_else(|| bad("expected etcd://HOST:PORT[,HOST:PORT...][/PREFIX]"))?;
        let (hosts, prefix) = match rest.split_once('/') {
            Some((hosts, prefix)) => (hosts, prefix.trim_matches('/')),
            None => (rest, Self::DEFAULT_PREFIX),
        };
        if prefix.is_empty() {
            return Err(bad("the key prefix after the hosts is empty"));
        }
        let endpoints: Vec<String> = hosts.split(',').map(str::to_string).collect();
        for endpoint in &endpoints {
            let port = endpoint
                .rsplit_once(':')
                .and_then(|(host, port)| (!host.is_empty()).then_some(port))
                .ok_or_else(|| bad(&format!("endpoint {endpoint:?} is not HOST:PORT")))?;
            port.parse::<u16>()
                .map_err(|_| bad(&format!("endpoint {endpoint:?} has a bad port")))?;
        }
        Ok(EtcdConfig {
            endpoints,
            prefix: prefix.to_string(),
            timeout: Duration::from_secs(5),
            history: Some(DEFAULT_HISTORY),
        })
    }
}

/// The registry on an etcd cluster, with bulk tables on the local disk.
pub struct EtcdStore {
    config: EtcdConfig,
    client: Client,
    /// Runs the etcd client; `None` only while dropping.
    runtime: Option<Runtime>,
    /// Components and snapshots, content-addressed on this control plane's disk.
    local: SledStore,
    /// What the watch on the prefix (and this store's own writes) saw change, per table.
    changes: Arc<Changes>,
    /// Readers following some tables' changes key by key, fed by the same watch (see
    /// [`Store::follow`]).
    feeds: Arc<Feeds>,
    /// Where this control plane stands in the election.
    standing: std::sync::Mutex<Standing>,
    /// The lease this control plane's announcement and the devices it heard live under, while
    /// it lives (renewed by every [`Store::announce`]).
    presence: std::sync::Mutex<Option<i64>>,
    /// Devices' heartbeats the watch saw control planes put (see [`Store::heard`]).
    heard: Arc<Heard>,
}

/// What the watch saw under [`HEARD`] since [`Store::heard`] last took it: the newest record of
/// each device, with the lease it was put under (so a control plane skips its own).
#[derive(Debug, Default)]
struct Heard {
    state: std::sync::Mutex<HeardState>,
}

#[derive(Debug)]
struct HeardState {
    records: std::collections::HashMap<String, (Vec<u8>, i64)>,
    /// Records may have been missed (the watch is new or restarted): the next
    /// [`Store::heard`] reads them all.
    lost: bool,
}

impl Default for HeardState {
    fn default() -> Self {
        HeardState {
            records: Default::default(),
            lost: true,
        }
    }
}

impl Heard {
    fn put(&self, device: &str, record: &[u8], lease: i64) {
        let mut state = self.state.lock().expect("heard lock");
        // Bounded by the fleet: one record per device.
        state
            .records
            .insert(device.to_string(), (record.to_vec(), lease));
    }

    fn lose(&self) {
        let mut state = self.state.lock().expect("heard lock");
        state.records.clear();
        state.lost = true;
    }
}

/// Changes per table, counted from an etcd watch on the whole prefix (writes by any control
/// plane) and from this store's own writes as they are acknowledged (so a read right after a
/// write of ours never sees a view from before it). Meaningful only while the watch is up:
/// while it is down a change could go unseen, and [`Store::generation`] says `None`.
#[derive(Debug, Default)]
struct Changes {
    tables: [AtomicU64; Table::ALL.len()],
    watching: AtomicBool,
}

impl Changes {
    fn saw(&self, table: Table) {
        self.tables[table.index()].fetch_add(1, Ordering::SeqCst);
    }

    /// Everything may have changed (the watch started or stopped).
    fn saw_everything(&self) {
        for table in Table::ALL {
            self.saw(table);
        }
    }
}

/// Compact the cluster's history older than `history`, for as long as the store lives: every
/// quarter of `history` note the cluster's revision, and compact to the newest noted revision
/// at least `history` old. Every control plane does this; a revision another already compacted
/// is not an error. Watches follow the present, so none is cut off unless it lags by `history`
/// (it is then cancelled by etcd and made again, reading everything anew).
async fn compact_history(mut client: Client, prefix: String, history: Duration) {
    let mut noted: std::collections::VecDeque<(tokio::time::Instant, i64)> = Default::default();
    let every = (history / 4).max(Duration::from_millis(50));
    loop {
        tokio::time::sleep(every).await;
        let read = client
            .get(
                format!("{prefix}/"),
                Some(GetOptions::new().with_prefix().with_count_only()),
            )
            .await;
        match read.map(|r| r.header().map(|h| h.revision())) {
            Ok(Some(revision)) => noted.push_back((tokio::time::Instant::now(), revision)),
            Ok(None) => {}
            Err(err) => {
                tracing::debug!("cannot read etcd's revision to compact its history: {err}");
                continue;
            }
        }
        let mut target = None;
        while let Some(&(at, revision)) = noted.front()
            && at.elapsed() >= history
        {
            target = Some(revision);
            noted.pop_front();
        }
        let Some(revision) = target else { continue };
        match client.compact(revision, None).await {
            Ok(_) => tracing::debug!(revision, "etcd history compacted"),
            // Already compacted to this revision or beyond (by another control plane).
            Err(etcd_client::Error::GRpcStatus(status))
                if status.code() == tonic::Code::OutOfRange => {}
            Err(err) => tracing::warn!(revision, "cannot compact etcd's history: {err}"),
        }
    }
}

/// Pause before watching again after the watch broke.
const REWATCH_PAUSE: Duration = Duration::from_millis(500);

/// Largest watch response taken. etcd sends a watch that fell behind up to 1,000 revisions at
/// once (each up to etcd's request limit, 1.5 MiB by default), far over gRPC's default 4 MiB; a
/// response over the limit breaks the watch, and watching again reads every table afresh.
const WATCH_MESSAGE_LIMIT: usize = 256 << 20;

/// Count the changes under `prefix` into `changes`, for as long as the store lives, watching
/// again whenever the watch breaks (a member went away, the stream was cancelled).
async fn watch_changes(
    client: Client,
    prefix: String,
    changes: Arc<Changes>,
    feeds: Arc<Feeds>,
    heard: Arc<Heard>,
) {
    let leader_key = format!("{prefix}/{LEADER_KEY}");
    let planes = format!("{prefix}/{PLANES}/");
    let heard_prefix = format!("{prefix}/{HEARD}/");
    loop {
        let watched = async {
            let mut stream = client
                .watch_client()
                .max_decoding_message_size(WATCH_MESSAGE_LIMIT)
                .watch(
                    format!("{prefix}/"),
                    Some(WatchOptions::new().with_prefix()),
                )
                .await?;
            while let Some(response) = stream.message().await? {
                if response.created() {
                    // From here on every change shows; anything read before may be stale.
                    changes.saw_everything();
                    changes.watching.store(true, Ordering::SeqCst);
                    feeds.set_live(true);
                    heard.lose();
                    // Our writes up to here are in whatever is read from now on.
                    feeds.delivered(response.header().map_or(0, |h| h.revision()));
                }
                if response.canceled() {
                    break;
                }
                let mut delivered = 0;
                for event in response.events() {
                    // A device heard by some control plane: no table, and no write a drain
                    // waits for.
                    if let Some(kv) = event.kv()
                        && let Some(device) = kv.key().strip_prefix(heard_prefix.as_bytes())
                    {
                        if event.event_type() == EventType::Put {
                            heard.put(&String::from_utf8_lossy(device), kv.value(), kv.lease());
                        }
                        continue;
                    }
                    let entry = event
                        .kv()
                        .and_then(|kv| kv.key_str().ok())
                        .and_then(|key| key.strip_prefix(&prefix)?.strip_prefix('/'))
                        .and_then(|rest| rest.split_once('/'))
                        .and_then(|(name, key)| {
                            Table::ALL
                                .into_iter()
                                .find(|t| t.name() == name)
                                .map(|table| (table, key))
                        });
                    delivered = event.kv().map_or(delivered, |kv| kv.mod_revision());
                    match entry {
                        Some((table, key)) => {
                            changes.saw(table);
                            let value = match event.event_type() {
                                EventType::Put => event.kv().map(|kv| kv.value()),
                                EventType::Delete => None,
                            };
                            feeds.changed(table, key, value);
                        }
                        // The election and the announcements change no table.
                        None if event.kv().is_some_and(|kv| {
                            kv.key() == leader_key.as_bytes()
                                || kv.key().starts_with(planes.as_bytes())
                        }) => {}
                        None => {
                            changes.saw_everything();
                            feeds.lost();
                        }
                    }
                }
                feeds.delivered(delivered);
            }
            Ok::<_, etcd_client::Error>(())
        }
        .await;
        changes.watching.store(false, Ordering::SeqCst);
        changes.saw_everything();
        feeds.set_live(false);
        heard.lose();
        if let Err(err) = watched {
            tracing::warn!("etcd watch broke: {err}; watching again");
        }
        tokio::time::sleep(REWATCH_PAUSE).await;
    }
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Drop for EtcdStore {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which tokio forbids inside another runtime's tasks.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Wait for `receive` without stalling the caller's runtime (see the module's documentation).
fn wait<T>(receive: impl FnOnce() -> T) -> T {
    match Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(receive)
        }
        _ => receive(),
    }
}

impl EtcdStore {
    /// Connect to the cluster and check that it answers a linearizable read (so a quorum is
    /// up); bulk tables go to `local`.
    pub fn connect(config: EtcdConfig, local: SledStore) -> Result<EtcdStore, StoreError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("fog-etcd")
            .enable_all()
            .build()
            .map_err(|e| StoreError::Backend(format!("starting the etcd client runtime: {e}")))?;
        let urls: Vec<String> = config
            .endpoints
            .iter()
            .map(|e| format!("http://{e}"))
            .collect();
        let options = ConnectOptions::new()
            .with_connect_timeout(config.timeout)
            .with_timeout(config.timeout)
            .with_keep_alive(Duration::from_secs(5), config.timeout);
        let probe_key = format!("{}/", config.prefix);
        let timeout = config.timeout;
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        runtime.spawn(async move {
            let attempt = async {
                let mut client = Client::connect(urls, Some(options)).await?;
                client
                    .get(
                        probe_key,
                        Some(GetOptions::new().with_prefix().with_count_only()),
                    )
                    .await?;
                Ok::<_, etcd_client::Error>(client)
            };
            let _ = tx.send(tokio::time::timeout(timeout, attempt).await);
        });
        let outcome = wait(|| rx.recv());
        let unreachable = |reason: String| StoreError::Unreachable {
            endpoints: config.endpoints.clone(),
            reason,
        };
        let client = match outcome {
            Ok(Ok(Ok(client))) => Ok(client),
            Ok(Ok(Err(err))) => Err(unreachable(err.to_string())),
            Ok(Err(_)) => {
                let reasons = probe(&runtime, &config.endpoints, timeout);
                Err(unreachable(format!(
                    "no answer within {timeout:?}{reasons}"
                )))
            }
            Err(_) => Err(unreachable("the etcd client stopped".into())),
        };
        let client = match client {
            Ok(client) => client,
            Err(err) => {
                // Dropping a runtime blocks, which tokio forbids inside another runtime's tasks.
                runtime.shutdown_background();
                return Err(err);
            }
        };
        tracing::info!(endpoints = ?config.endpoints, prefix = config.prefix, "registry on etcd");
        let changes = Arc::new(Changes::default());
        let feeds = Arc::new(Feeds::default());
        let heard = Arc::new(Heard::default());
        // Down until the watch is created.
        feeds.set_live(false);
        if let Some(history) = config.history {
            runtime.spawn(compact_history(
                client.clone(),
                config.prefix.clone(),
                history,
            ));
        }
        runtime.spawn(watch_changes(
            client.clone(),
            config.prefix.clone(),
            changes.clone(),
            feeds.clone(),
            heard.clone(),
        ));
        Ok(EtcdStore {
            config,
            client,
            runtime: Some(runtime),
            local,
            changes,
            feeds,
            standing: std::sync::Mutex::new(Standing::default()),
            presence: std::sync::Mutex::new(None),
            heard,
        })
    }

    /// The endpoints this store uses.
    pub fn endpoints(&self) -> &[String] {
        &self.config.endpoints
    }

    fn key(&self, table: Table, key: &str) -> String {
        format!("{}/{}/{key}", self.config.prefix, table.name())
    }

    fn leader_key(&self) -> String {
        format!("{}/{LEADER_KEY}", self.config.prefix)
    }

    /// The compare that fences a write made as the leader (see [`super::as_leader`]), or
    /// [`StoreError::Deposed`] at once if we do not lead; `None` for an unfenced write.
    fn fence(&self) -> Result<Option<Compare>, StoreError> {
        if !writing_as_leader() {
            return Ok(None);
        }
        match self.standing.lock().expect("standing lock").revision {
            0 => Err(StoreError::Deposed),
            revision => Ok(Some(Compare::create_revision(
                self.leader_key(),
                CompareOp::Equal,
                revision,
            ))),
        }
    }

    /// Run `op` under `fence` (if any) in one transaction: [`StoreError::Deposed`] if the fence
    /// failed.
    fn fenced(&self, op: TxnOp, fence: Option<Compare>) -> Result<TxnResponse, StoreError> {
        self.fenced_ops(vec![op], fence)
    }

    /// Run `ops` under `fence` (if any) in one transaction: [`StoreError::Deposed`] if the
    /// fence failed.
    fn fenced_ops(
        &self,
        ops: Vec<TxnOp>,
        fence: Option<Compare>,
    ) -> Result<TxnResponse, StoreError> {
        let txn = Txn::new()
            .when(fence.into_iter().collect::<Vec<_>>())
            .and_then(ops);
        let response = self.run(move |mut client| {
            let txn = txn.clone();
            async move { client.txn(txn).await }
        })?;
        if response.succeeded() {
            Ok(response)
        } else {
            Err(StoreError::Deposed)
        }
    }

    /// This store's write to `table` took effect at the revision in `header`: a feed's next
    /// drain waits for the watch to deliver it.
    fn wrote(&self, table: Table, header: Option<&etcd_client::ResponseHeader>) {
        if let Some(header) = header {
            self.feeds.wrote_at(table, header.revision());
        }
    }

    fn table_prefix(&self, table: Table) -> String {
        format!("{}/{}/", self.config.prefix, table.name())
    }

    /// Every key starting with `prefix`, read in pages (so no answer nears gRPC's message
    /// limit) at one revision: one consistent snapshot.
    fn range(&self, prefix: &str) -> Result<Vec<etcd_client::KeyValue>, StoreError> {
        let end = prefix_end(prefix.as_bytes());
        let mut out = Vec::new();
        let mut from = prefix.as_bytes().to_vec();
        // Every page reads at the first page's revision.
        let mut revision = 0;
        loop {
            let (start, end_key) = (from.clone(), end.clone());
            let mut response = self.run(move |mut client| {
                let (start, end_key) = (start.clone(), end_key.clone());
                async move {
                    let options = GetOptions::new()
                        .with_range(end_key)
                        .with_limit(PAGE)
                        .with_revision(revision);
                    client.get(start, Some(options)).await
                }
            })?;
            if revision == 0 {
                revision = response.header().map_or(0, |h| h.revision());
            }
            let more = response.more();
            let kvs = response.take_kvs();
            let Some(last) = kvs.last() else { break };
            from = last.key().to_vec();
            from.push(0);
            out.extend(kvs);
            if !more {
                break;
            }
        }
        Ok(out)
    }

    /// This control plane's presence lease, renewed; a new one if it had none or it lapsed
    /// (then `false`: whatever was put under the old one is gone).
    fn presence_lease(&self) -> Result<(i64, bool), StoreError> {
        let mut presence = self.presence.lock().expect("presence lock");
        if let Some(lease) = *presence {
            let ttl = self.run(move |mut client| async move {
                let (mut keeper, mut stream) = client.lease_keep_alive(lease).await?;
                keeper.keep_alive().await?;
                Ok(stream.message().await?.map_or(0, |r| r.ttl()))
            })?;
            if ttl > 0 {
                return Ok((lease, true));
            }
            tracing::warn!(
                "this control plane's presence lease lapsed; announcing every device it hears again"
            );
            *presence = None;
        }
        let granted = self.run(move |mut client| async move {
            client.lease_grant(super::PLANE_TTL_S, None).await
        })?;
        *presence = Some(granted.id());
        Ok((granted.id(), false))
    }

    /// Run `request` with a clone of the client on the store's runtime and wait for it. A
    /// request that never reached etcd (a member is down and the client picked it) is sent
    /// again, to whichever member answers, until the timeout.
    fn run<T, F>(&self, request: impl Fn(Client) -> F + Send + 'static) -> Result<T, StoreError>
    where
        F: Future<Output = Result<T, etcd_client::Error>> + Send + 'static,
        T: Send + 'static,
    {
        let runtime = self.runtime.as_ref().expect("runtime lives until drop");
        let client = self.client.clone();
        let timeout = self.config.timeout;
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        runtime.spawn(async move {
            let deadline = tokio::time::Instant::now() + timeout;
            let mut last = None;
            let outcome = loop {
                match tokio::time::timeout_at(deadline, request(client.clone())).await {
                    Ok(Err(err)) if never_sent(&err) => {
                        last = Some(err.to_string());
                        if tokio::time::Instant::now() + RETRY_PAUSE >= deadline {
                            break Err(last);
                        }
                        tokio::time::sleep(RETRY_PAUSE).await;
                    }
                    Ok(done) => break Ok(done),
                    Err(_) => break Err(last),
                }
            };
            let _ = tx.send(outcome);
        });
        let unreachable = |reason: String| StoreError::Unreachable {
            endpoints: self.config.endpoints.clone(),
            reason,
        };
        match wait(|| rx.recv()) {
            Ok(Ok(Ok(value))) => Ok(value),
            Ok(Ok(Err(err))) => Err(match err {
                // etcd answered and refused: not a matter of reaching it. (A status made on
                // this side of the wire, from a broken connection, carries its cause.)
                etcd_client::Error::GRpcStatus(status)
                    if std::error::Error::source(&status).is_none()
                        && !matches!(
                            status.code(),
                            tonic::Code::Unavailable | tonic::Code::DeadlineExceeded
                        ) =>
                {
                    StoreError::Backend(format!("etcd: {}", status.message()))
                }
                other => unreachable(other.to_string()),
            }),
            Ok(Err(last)) => Err(unreachable(match last {
                Some(reason) => format!("no answer within {timeout:?}; last: {reason}"),
                None => format!("no answer within {timeout:?}"),
            })),
            Err(_) => Err(unreachable("the etcd client stopped".into())),
        }
    }
}

/// Pause between attempts at a request that could not be sent.
const RETRY_PAUSE: Duration = Duration::from_millis(50);

/// True if `err` says the connection to a member could not be made: the request was never sent,
/// so sending it again cannot apply it twice.
fn never_sent(err: &etcd_client::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = match err {
        etcd_client::Error::GRpcStatus(status) => std::error::Error::source(status),
        etcd_client::Error::TransportError(err) => std::error::Error::source(err),
        _ => None,
    };
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            return matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionRefused
                    | std::io::ErrorKind::HostUnreachable
                    | std::io::ErrorKind::NetworkUnreachable
                    | std::io::ErrorKind::AddrNotAvailable
            );
        }
        source = err.source();
    }
    false
}

/// Why each endpoint cannot be reached (TCP), for the error of a failed start.
fn probe(runtime: &Runtime, endpoints: &[String], timeout: Duration) -> String {
    let endpoints = endpoints.to_vec();
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    runtime.spawn(async move {
        let mut reasons = Vec::new();
        for endpoint in endpoints {
            let connect = tokio::net::TcpStream::connect(endpoint.clone());
            match tokio::time::timeout(timeout, connect).await {
                Ok(Ok(_)) => {}
                Ok(Err(err)) => reasons.push(format!("{endpoint}: {err}")),
                Err(_) => reasons.push(format!("{endpoint}: TCP connect timed out")),
            }
        }
        let _ = tx.send(reasons);
    });
    match wait(|| rx.recv()) {
        Ok(reasons) if !reasons.is_empty() => format!(" ({})", reasons.join("; ")),
        _ => String::new(),
    }
}

impl Store for EtcdStore {
    fn shared(&self) -> bool {
        true
    }

    fn get(&self, table: Table, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        if table.is_bulk() {
            return self.local.get(table, key);
        }
        Ok(self.get_versioned(table, key)?.value)
    }

    fn get_versioned(&self, table: Table, key: &str) -> Result<Versioned, StoreError> {
        if table.is_bulk() {
            return self.local.get_versioned(table, key);
        }
        let key = self.key(table, key);
        let mut response = self.run(move |mut client| {
            let key = key.clone();
            async move { client.get(key, None).await }
        })?;
        Ok(match response.take_kvs().into_iter().next() {
            Some(kv) => Versioned {
                revision: Revision(RevisionKind::Etcd(kv.mod_revision())),
                value: Some(kv.into_key_value().1),
            },
            None => Versioned {
                value: None,
                revision: Revision::absent(),
            },
        })
    }

    fn put_if(
        &self,
        table: Table,
        key: &str,
        value: &[u8],
        expected: &Revision,
    ) -> Result<(), StoreError> {
        if table.is_bulk() {
            return self.local.put_if(table, key, value, expected);
        }
        let full = self.key(table, key);
        let compare = match &expected.0 {
            // A key that never existed, or was deleted, has version 0.
            RevisionKind::Absent => Compare::version(full.clone(), CompareOp::Equal, 0),
            RevisionKind::Etcd(revision) => {
                Compare::mod_revision(full.clone(), CompareOp::Equal, *revision)
            }
            RevisionKind::Bytes(_) => {
                return Err(StoreError::Conflict {
                    table: table.name(),
                    key: key.to_string(),
                });
            }
        };
        let fence = self.fence()?;
        let fenced = fence.is_some();
        let txn = Txn::new()
            .when([compare].into_iter().chain(fence).collect::<Vec<_>>())
            .and_then([TxnOp::put(full, value.to_vec(), None)])
            .or_else([TxnOp::get(self.leader_key(), None)]);
        let response = self.run(move |mut client| {
            let txn = txn.clone();
            async move { client.txn(txn).await }
        });
        // Counted whatever the outcome: a write that timed out may still have been applied.
        self.changes.saw(table);
        let response = response?;
        if response.succeeded() {
            self.wrote(table, response.header());
            return Ok(());
        }
        // Which compare failed: the record's, or (for a fenced write) the leadership's.
        let ours = self.standing.lock().expect("standing lock").revision;
        let still_leading = response.op_responses().into_iter().any(|r| match r {
            TxnOpResponse::Get(get) => get
                .kvs()
                .first()
                .is_some_and(|kv| kv.create_revision() == ours),
            _ => false,
        });
        if fenced && !still_leading {
            Err(StoreError::Deposed)
        } else {
            Err(StoreError::Conflict {
                table: table.name(),
                key: key.to_string(),
            })
        }
    }

    fn put(&self, table: Table, key: &str, value: &[u8]) -> Result<(), StoreError> {
        if table.is_bulk() {
            return self.local.put(table, key, value);
        }
        let key = self.key(table, key);
        if let Some(fence) = self.fence()? {
            let put = self.fenced(TxnOp::put(key, value.to_vec(), None), Some(fence));
            self.changes.saw(table);
            self.wrote(table, put.as_ref().ok().and_then(|r| r.header()));
            return put.map(|_| ());
        }
        let value = value.to_vec();
        let put = self.run(move |mut client| {
            let (key, value) = (key.clone(), value.clone());
            async move { client.put(key, value, None).await }
        });
        self.changes.saw(table);
        self.wrote(table, put.as_ref().ok().and_then(|r| r.header()));
        put.map(|_| ())
    }

    fn put_many(&self, table: Table, records: &[(String, Vec<u8>)]) -> Result<(), StoreError> {
        if table.is_bulk() {
            return self.local.put_many(table, records);
        }
        let fence = self.fence()?;
        let mut start = 0;
        while start < records.len() {
            // As many as fit one transaction.
            let mut end = start;
            let mut bytes = 0;
            while end < records.len()
                && end - start < TXN_OPS
                && (end == start || bytes + records[end].1.len() <= TXN_BYTES)
            {
                bytes += records[end].1.len();
                end += 1;
            }
            let ops: Vec<TxnOp> = records[start..end]
                .iter()
                .map(|(key, value)| TxnOp::put(self.key(table, key), value.clone(), None))
                .collect();
            let written = self.fenced_ops(ops, fence.clone());
            self.changes.saw(table);
            self.wrote(table, written.as_ref().ok().and_then(|r| r.header()));
            written?;
            start = end;
        }
        Ok(())
    }

    fn delete(&self, table: Table, key: &str) -> Result<(), StoreError> {
        if table.is_bulk() {
            return self.local.delete(table, key);
        }
        let key = self.key(table, key);
        if let Some(fence) = self.fence()? {
            let deleted = self.fenced(TxnOp::delete(key, None), Some(fence));
            self.changes.saw(table);
            if let Ok(response) = &deleted {
                // Deleting nothing makes no revision (and no event to wait for).
                let removed = response.op_responses().into_iter().any(|r| match r {
                    TxnOpResponse::Delete(d) => d.deleted() > 0,
                    _ => false,
                });
                if removed {
                    self.wrote(table, response.header());
                }
            }
            return deleted.map(|_| ());
        }
        let deleted = self.run(move |mut client| {
            let key = key.clone();
            async move { client.delete(key, None).await }
        });
        self.changes.saw(table);
        if let Ok(response) = &deleted {
            // Deleting nothing makes no revision (and no event to wait for).
            if response.deleted() > 0 {
                self.wrote(table, response.header());
            }
        }
        deleted.map(|_| ())
    }

    fn list(&self, table: Table) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        if table.is_bulk() {
            return self.local.list(table);
        }
        let prefix = self.table_prefix(table);
        Ok(self
            .range(&prefix)?
            .into_iter()
            .map(|kv| {
                let (key, value) = kv.into_key_value();
                (
                    String::from_utf8_lossy(&key[prefix.len()..]).into_owned(),
                    value,
                )
            })
            .collect())
    }

    fn flush(&self) -> Result<(), StoreError> {
        // etcd acknowledges a write once a quorum has it on disk; only the local part needs it.
        self.local.flush()
    }

    fn lead(&self, id: &str) -> Result<Leadership, StoreError> {
        let key = self.leader_key();
        let mut standing = self.standing.lock().expect("standing lock");
        if let Some(lease) = standing.lease {
            let ttl = self.run(move |mut client| async move {
                let (mut keeper, mut stream) = client.lease_keep_alive(lease).await?;
                keeper.keep_alive().await?;
                Ok(stream.message().await?.map_or(0, |r| r.ttl()))
            });
            // An expired lease (we were paused or cut off too long) took our leadership with it.
            if !matches!(ttl, Ok(ttl) if ttl > 0) {
                *standing = Standing::default();
                ttl?;
            }
        }
        let lease = match standing.lease {
            Some(lease) => lease,
            None => {
                let granted = self.run(move |mut client| async move {
                    client.lease_grant(LEADER_LEASE_TTL_S, None).await
                })?;
                standing.lease = Some(granted.id());
                granted.id()
            }
        };
        let txn = Txn::new()
            .when([Compare::version(key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(
                key.clone(),
                id,
                Some(PutOptions::new().with_lease(lease)),
            )])
            .or_else([TxnOp::get(key, None)]);
        let response = self.run(move |mut client| {
            let txn = txn.clone();
            async move { client.txn(txn).await }
        })?;
        if response.succeeded() {
            standing.revision = response.header().map_or(0, |h| h.revision());
            tracing::info!(id, "elected leader of the control planes");
            return Ok(Leadership::Leader);
        }
        let current = response.op_responses().into_iter().find_map(|r| match r {
            TxnOpResponse::Get(get) => get.kvs().first().map(|kv| {
                (
                    String::from_utf8_lossy(kv.value()).into_owned(),
                    kv.create_revision(),
                    kv.lease(),
                )
            }),
            _ => None,
        });
        Ok(match current {
            Some((leader, revision, held_by)) if leader == id && held_by == lease => {
                standing.revision = revision;
                Leadership::Leader
            }
            other => {
                standing.revision = 0;
                Leadership::Follower {
                    leader: other.map(|(leader, ..)| leader),
                }
            }
        })
    }

    fn announce(
        &self,
        id: &str,
        record: &[u8],
        heard: &[(String, Vec<u8>)],
    ) -> Result<bool, StoreError> {
        // One lease for the announcement and every device heard, renewed each round: the
        // devices' keys outlive the round they were put in, and all go with the control plane.
        let (lease, kept) = self.presence_lease()?;
        let key = format!("{}/{PLANES}/{id}", self.config.prefix);
        let record = record.to_vec();
        self.run(move |mut client| {
            let (key, record) = (key.clone(), record.clone());
            async move {
                client
                    .put(key, record, Some(PutOptions::new().with_lease(lease)))
                    .await
            }
        })?;
        // The devices, in transactions small enough for any etcd.
        let send = |batch: Vec<TxnOp>| -> Result<(), StoreError> {
            let txn = Txn::new().and_then(batch);
            self.run(move |mut client| {
                let txn = txn.clone();
                async move { client.txn(txn).await }
            })?;
            Ok(())
        };
        let mut batch: Vec<TxnOp> = Vec::new();
        let mut bytes = 0;
        for (device, record) in heard {
            if batch.len() == TXN_OPS || (bytes + record.len() > TXN_BYTES && !batch.is_empty()) {
                send(std::mem::take(&mut batch))?;
                bytes = 0;
            }
            bytes += record.len();
            batch.push(TxnOp::put(
                format!("{}/{HEARD}/{device}", self.config.prefix),
                record.clone(),
                Some(PutOptions::new().with_lease(lease)),
            ));
        }
        if !batch.is_empty() {
            send(batch)?;
        }
        Ok(kept)
    }

    fn heard(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let ours = *self.presence.lock().expect("presence lock");
        let theirs = |lease: i64| Some(lease) != ours;
        let records = {
            let mut state = self.heard.state.lock().expect("heard lock");
            if state.lost || !self.changes.watching.load(Ordering::SeqCst) {
                // Whatever the watch brings from here on comes on top of what is read now.
                state.lost = false;
                state.records.clear();
                None
            } else {
                Some(std::mem::take(&mut state.records))
            }
        };
        if let Some(records) = records {
            return Ok(records
                .into_iter()
                .filter(|(_, (_, lease))| theirs(*lease))
                .map(|(device, (record, _))| (device, record))
                .collect());
        }
        let prefix = format!("{}/{HEARD}/", self.config.prefix);
        match self.range(&prefix) {
            Ok(kvs) => Ok(kvs
                .into_iter()
                .filter(|kv| theirs(kv.lease()))
                .map(|kv| {
                    let (key, value) = kv.into_key_value();
                    (
                        String::from_utf8_lossy(&key[prefix.len()..]).into_owned(),
                        value,
                    )
                })
                .collect()),
            Err(err) => {
                self.heard.lose();
                Err(err)
            }
        }
    }

    fn planes(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let prefix = format!("{}/{PLANES}/", self.config.prefix);
        let start = prefix.clone();
        let mut response = self.run(move |mut client| {
            let start = start.clone();
            async move {
                client
                    .get(start, Some(GetOptions::new().with_prefix()))
                    .await
            }
        })?;
        Ok(response
            .take_kvs()
            .into_iter()
            .map(|kv| {
                let (key, value) = kv.into_key_value();
                (
                    String::from_utf8_lossy(&key[prefix.len()..]).into_owned(),
                    value,
                )
            })
            .collect())
    }

    fn follow(&self, tables: &[Table]) -> Option<Arc<Feed>> {
        // Bulk tables live on the local disk, where nobody else writes.
        if tables.iter().any(|t| t.is_bulk()) {
            return None;
        }
        Some(self.feeds.add(tables))
    }

    fn generation(&self, table: Table) -> Option<u64> {
        if table.is_bulk() {
            return self.local.generation(table);
        }
        self.changes
            .watching
            .load(Ordering::SeqCst)
            .then(|| self.changes.tables[table.index()].load(Ordering::SeqCst))
    }
}

/// The first key after every key starting with `prefix`.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // Every byte was 0xff: the range runs to the end of the key space.
    vec![0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_endpoints_and_an_optional_prefix() {
        let config = EtcdConfig::from_url("etcd://h1:2379,10.0.0.2:2380").unwrap();
        assert_eq!(config.endpoints, ["h1:2379", "10.0.0.2:2380"]);
        assert_eq!(config.prefix, "fog");
        let config = EtcdConfig::from_url("etcd://h1:2379/team/fog/").unwrap();
        assert_eq!(config.prefix, "team/fog");
        for bad in [
            "http://h1:2379",
            "etcd://h1",
            "etcd://h1:port",
            "etcd://:2379",
            "etcd://h1:2379/",
        ] {
            assert!(
                matches!(
                    EtcdConfig::from_url(bad),
                    Err(StoreError::BadLocation { .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn prefix_ends_bound_exactly_the_prefix() {
        assert_eq!(prefix_end(b"fog/apps/"), b"fog/apps0");
        assert_eq!(prefix_end(b"a\xff"), b"b");
    }
}
