//! State between devices: the internal endpoints a primary serves to its followers over HTX,
//! the follower's loop, and the tier-B snapshot uploader. A peer that listens is dialled; one
//! behind NAT is reached through a router both are attached to, with Noise end to end
//! ([`crate::attach`]).
//!
//! Internal endpoints live under `/_fog/state/{app}/` and are served only on HTX connections
//! whose Noise static key belongs to a peer the app's assignment allows (a follower); anything
//! else asking for them (a router forwarding a visitor's path, say) gets 403. They are:
//! - `GET snapshot`: the namespace as a streamed snapshot ([`crate::replica`]);
//! - `GET log?after=N&wait_ms=M`: log entries after N (bincode), held up to M ms when there are
//!   none yet; N acknowledges everything up to it. 410 when the log no longer reaches back to
//!   N (take a snapshot).

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use fog_htx::dial::{Dialer, HtxConnector};
use fog_proto::api::Peer;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full, Limited, StreamBody};
use hyper::body::Frame;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::kv::Namespace;
use crate::server::AppTable;

/// Path prefix of the internal endpoints.
pub const PREFIX: &str = "/_fog/state/";
/// Longest a log long-poll is held.
const MAX_WAIT: Duration = Duration::from_secs(10);
/// About how many bytes of log one answer carries.
const LOG_BATCH: usize = 1 << 20;

/// The body internal endpoints answer with.
pub type PeerBody = BoxBody<Bytes, Infallible>;

/// A short answer with `status`.
pub fn refuse(status: u16, body: impl Into<Bytes>) -> http::Response<PeerBody> {
    answer(status, body)
}

fn answer(status: u16, body: impl Into<Bytes>) -> http::Response<PeerBody> {
    let mut response = http::Response::new(Full::new(body.into()).boxed());
    *response.status_mut() = http::StatusCode::from_u16(status).expect("a valid status");
    response
}

/// Serve an internal request from the peer with Noise key `peer`.
pub async fn serve<B>(
    apps: &AppTable,
    peer: &[u8; 32],
    request: &http::Request<B>,
) -> http::Response<PeerBody> {
    let path = request.uri().path();
    let Some(rest) = path.strip_prefix(PREFIX) else {
        return answer(404, "not an internal path\n");
    };
    let Some((app, op)) = rest.split_once('/') else {
        return answer(404, "expected /_fog/state/{app}/{snapshot|log}\n");
    };
    let Some(loaded) = apps.get(app) else {
        return answer(404, format!("no app {app:?} here\n"));
    };
    let namespace = loaded.namespace().clone();
    if !namespace.allows(peer) {
        return answer(403, "this peer may not read the app's state\n");
    }
    let query = |name: &str| {
        request.uri().query().and_then(|q| {
            q.split('&')
                .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
                .and_then(|v| v.parse::<u64>().ok())
        })
    };
    match op {
        "snapshot" => {
            let (tx, rx) = tokio::sync::mpsc::channel(4);
            let app = app.to_string();
            tokio::spawn(async move {
                if let Err(err) = namespace.snapshot_to(&app, tx).await {
                    tracing::warn!(app, "snapshot for a follower failed: {err}");
                }
            });
            let stream = futures_util::stream::unfold(rx, |mut rx| async move {
                rx.recv()
                    .await
                    .map(|chunk| (Ok::<_, Infallible>(Frame::data(chunk)), rx))
            });
            http::Response::new(BodyExt::boxed(StreamBody::new(stream)))
        }
        "log" => {
            let Some(after) = query("after") else {
                return answer(400, "log needs ?after=N\n");
            };
            let wait = Duration::from_millis(query("wait_ms").unwrap_or(0)).min(MAX_WAIT);
            namespace.acknowledge(*peer, after);
            // Returns at once when there is something after `after` already.
            namespace.wait_past(after, wait).await;
            match namespace.entries_after(after, LOG_BATCH) {
                Some(entries) => {
                    let body = bincode::serde::encode_to_vec(&entries, bincode::config::standard())
                        .expect("always encodes");
                    let mut response = answer(200, body);
                    response
                        .headers_mut()
                        .insert("x-fog-head", http::HeaderValue::from(namespace.head()));
                    response
                }
                None => answer(
                    410,
                    "the log no longer reaches back that far: take a snapshot\n",
                ),
            }
        }
        _ => answer(404, format!("unknown state operation {op:?}\n")),
    }
}

/// A client for peers' internal endpoints over HTX, authenticated with the device's key.
#[derive(Clone)]
pub struct PeerClient {
    dialer: Arc<Dialer>,
    client: Client<HtxConnector, Empty<Bytes>>,
}

impl std::fmt::Debug for PeerClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerClient").finish_non_exhaustive()
    }
}

impl PeerClient {
    /// A client with the device's HTX key; peers that accept no connection are reached through
    /// `rendezvous` (the routers this device is attached to).
    pub fn new(
        key: fog_htx::handshake::StaticKey,
        rendezvous: Option<Arc<dyn fog_htx::dial::Rendezvous>>,
    ) -> PeerClient {
        let dialer = Dialer::new(key, fog_htx::mix::MixMode::Performance, Vec::new());
        if let Some(rendezvous) = rendezvous {
            dialer.set_rendezvous(rendezvous);
        }
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(HtxConnector(dialer.clone()));
        PeerClient { dialer, client }
    }

    async fn get(
        &self,
        peer: &Peer,
        path: &str,
    ) -> Result<http::Response<hyper::body::Incoming>, String> {
        let key: [u8; 32] = hex::decode(&peer.htx.key)
            .ok()
            .and_then(|k| k.try_into().ok())
            .ok_or("the peer's HTX key is not 32 bytes of hex")?;
        // A peer that listens is dialled; one behind NAT is met at a rendezvous.
        let authority = match &peer.htx.addr {
            Some(addr) => addr.clone(),
            None => fog_htx::dial::spliced_authority(&peer.device),
        };
        self.dialer.learn([(authority.clone(), key)]);
        let uri: http::Uri = format!("http://{authority}{path}")
            .parse()
            .map_err(|e| format!("{e}"))?;
        tokio::time::timeout(MAX_WAIT + Duration::from_secs(5), self.client.get(uri))
            .await
            .map_err(|_| format!("device {} did not answer", peer.device))?
            .map_err(|e| format!("device {}: {e}", peer.device))
    }
}

/// What a follower reports.
#[derive(Debug, Default)]
pub struct FollowStatus {
    /// After its last pull it held everything the primary had when it answered.
    pub caught_up: AtomicBool,
    /// Its last pull found nothing newer: the primary's state is not changing.
    pub idle: AtomicBool,
    /// Woken when it becomes idle (so the agent reports its state at once: a fenced primary's
    /// writes have stopped, and the switch-over waits for this follower to say it has them all).
    pub wake: Arc<tokio::sync::Notify>,
}

/// Follow `source`'s log for `app` into `namespace` until dropped: a snapshot first (a follower
/// never trusts state it held before), then long-polls.
pub async fn follow(
    client: PeerClient,
    namespace: Namespace,
    app: String,
    source: Peer,
    status: Arc<FollowStatus>,
) {
    let base = format!("{PREFIX}{app}");
    let mut need_snapshot = true;
    let mut failures = 0u32;
    loop {
        let step: Result<(), String> = async {
            if need_snapshot {
                let response = client.get(&source, &format!("{base}/snapshot")).await?;
                if !response.status().is_success() {
                    return Err(format!("snapshot: status {}", response.status()));
                }
                let body = response.into_body().into_data_stream();
                let seq = namespace.restore_from(body).await?;
                tracing::info!(app, seq, from = source.device, "restored a snapshot");
                need_snapshot = false;
            }
            let path = format!("{base}/log?after={}&wait_ms=5000", namespace.head());
            let response = client.get(&source, &path).await?;
            match response.status().as_u16() {
                200 => {}
                410 => {
                    need_snapshot = true;
                    return Ok(());
                }
                status => return Err(format!("log: status {status}")),
            }
            let response_head = response
                .headers()
                .get("x-fog-head")
                .and_then(|h| h.to_str().ok())
                .and_then(|h| h.parse::<u64>().ok())
                .unwrap_or(u64::MAX);
            let body = Limited::new(response.into_body(), 64 << 20)
                .collect()
                .await
                .map_err(|e| e.to_string())?
                .to_bytes();
            let primary_head = response_head;
            if primary_head != u64::MAX {
                namespace.set_primary_head(primary_head);
            }
            // Limited to the body's own bound: a length prefix from a broken or hostile primary
            // must be refused, not allocated (the snapshot reader's fuzz finding, same class).
            let config = bincode::config::standard().with_limit::<{ 64 << 20 }>();
            let (entries, _): (Vec<crate::replica::Entry>, _) =
                bincode::serde::decode_from_slice(&body, config).map_err(|e| e.to_string())?;
            let held = match namespace.apply_entries(&entries) {
                Ok(held) => held,
                Err(err) => {
                    need_snapshot = true;
                    return Err(err.to_string());
                }
            };
            status
                .caught_up
                .store(held >= primary_head, Ordering::Release);
            let was_idle = status.idle.swap(entries.is_empty(), Ordering::AcqRel);
            if entries.is_empty() && !was_idle {
                status.wake.notify_one();
            }
            Ok(())
        }
        .await;
        match step {
            Ok(()) => failures = 0,
            Err(err) => {
                status.caught_up.store(false, Ordering::Release);
                status.idle.store(false, Ordering::Release);
                failures += 1;
                if failures == 1 || failures.is_multiple_of(20) {
                    tracing::warn!(app, from = source.device, "following: {err}");
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}
