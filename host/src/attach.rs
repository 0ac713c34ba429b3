//! Dialling out: a host behind NAT keeps an HTX connection open to each router the control plane
//! names in its heartbeat replies, and serves what the routers send back down them. Wire format
//! in [`fog_htx::attach`].
//!
//! - The host authenticates with its device key (Noise XK to the router's attach key; the hello
//!   names the device id); the router checks with the control plane that the key is the one the
//!   device announced, and otherwise closes the connection with a reason, which is logged here.
//! - A lost or refused connection is tried again after an exponential backoff (100 ms doubling
//!   to 10 s, each wait drawn from its upper half so hosts that lost the same router do not
//!   return in step); a connection that stayed up 10 s starts the backoff afresh.
//! - Every second the host PINGs each router and keeps the round-trip time; heartbeats report
//!   it ([`Attacher::links`]).
//! - Streams the router opens carry HTTP (visitors' requests, served by the app table) or a
//!   splice from a peer, inside which the peer runs its own Noise XK handshake to this device's
//!   key; spliced peers may only ask for app state. [`Attacher`] is also the host's
//!   [`Rendezvous`]: it asks a router it is attached to for a splice to a peer device.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fog_htx::attach::{ATTACH_PROLOGUE, HTTP_STREAM, SPLICE_STREAM, read_splice_device, read_tag};
use fog_htx::conn::{self, Connection, HtxStream};
use fog_htx::dial::{DATA_PLANE_PROLOGUE, Rendezvous, SpliceFuture, data_plane_config};
use fog_htx::handshake::StaticKey;
use fog_htx::{CloseCode, HtxError};
use fog_proto::api::{AttachPoint, AttachedLink};

use crate::htx_server::{Serves, serve_connection, serve_stream};
use crate::server::AppTable;

/// First wait after a failure.
const BACKOFF_START: Duration = Duration::from_millis(100);
/// Longest wait between attempts.
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// A connection that lived this long resets the backoff.
const STABLE_AFTER: Duration = Duration::from_secs(10);
/// How often each connection is PINGed.
const PING_EVERY: Duration = Duration::from_secs(1);
/// Longest a TCP connect plus handshake may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// What one router link shares with its task.
#[derive(Debug, Default)]
struct LinkState {
    connection: Mutex<Option<Connection>>,
    /// Round-trip time of the last PING, µs (0 until one is answered).
    rtt_us: AtomicU64,
}

#[derive(Debug)]
struct Link {
    point: AttachPoint,
    state: Arc<LinkState>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Link {
    fn drop(&mut self) {
        self.task.abort();
        if let Some(connection) = self.state.connection.lock().expect("link lock").take() {
            connection.close("the control plane no longer names this router");
        }
    }
}

/// The host's connections to routers.
pub struct Attacher {
    key: StaticKey,
    apps: Arc<AppTable>,
    links: Mutex<HashMap<String, Link>>,
}

impl std::fmt::Debug for Attacher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Attacher")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl Attacher {
    /// An attacher that authenticates with the device's HTX key and serves `apps`.
    pub fn new(key: StaticKey, apps: Arc<AppTable>) -> Arc<Attacher> {
        Arc::new(Attacher {
            key,
            apps,
            links: Mutex::new(HashMap::new()),
        })
    }

    /// Keep connections to exactly `points` (what the control plane named last), as `device`:
    /// new routers are dialled, routers no longer named are let go, a router whose address or
    /// key changed (restarted elsewhere) is dialled afresh. An empty list changes nothing.
    pub fn set_routers(&self, device: &str, points: &[AttachPoint]) {
        let mut links = self.links.lock().expect("links lock");
        // No router at all is what a control plane that just restarted says until the routers
        // register again: working connections are kept rather than dropped for that.
        if points.is_empty() {
            return;
        }
        links.retain(|router, link| {
            let named = points
                .iter()
                .any(|p| p.router == *router && *p == link.point);
            if !named {
                // Said, since it closes a connection that may be working: a router whose
                // registration lapsed (it could not reach the control plane for 30 s) or that
                // moved is dialled again as soon as it is named again.
                tracing::info!(
                    router,
                    addr = link.point.addr,
                    "the control plane no longer names this router (or it moved): closing its \
                     attach connection"
                );
            }
            named
        });
        for point in points {
            if links.contains_key(&point.router) {
                continue;
            }
            let Some(router_key) = hex::decode(&point.key)
                .ok()
                .and_then(|k| <[u8; 32]>::try_from(k).ok())
            else {
                tracing::warn!(router = point.router, "router key is not 32 bytes of hex");
                continue;
            };
            let state = Arc::new(LinkState::default());
            let task = tokio::spawn(keep(
                point.clone(),
                router_key,
                device.to_string(),
                self.key.clone(),
                self.apps.clone(),
                state.clone(),
            ));
            links.insert(
                point.router.clone(),
                Link {
                    point: point.clone(),
                    state,
                    task,
                },
            );
        }
    }

    /// The routers attached now, with their round-trip times, for the heartbeat.
    pub fn links(&self) -> Vec<AttachedLink> {
        let links = self.links.lock().expect("links lock");
        let mut out: Vec<AttachedLink> = links
            .iter()
            .filter(|(_, link)| {
                link.state
                    .connection
                    .lock()
                    .expect("link lock")
                    .as_ref()
                    .is_some_and(|c| !c.is_closed())
            })
            .map(|(router, link)| AttachedLink {
                router: router.clone(),
                rtt_us: link.state.rtt_us.load(Ordering::Relaxed),
            })
            .collect();
        out.sort_by(|a, b| a.router.cmp(&b.router));
        out
    }

    /// Live connections, fastest first.
    fn connections(&self) -> Vec<(String, Connection)> {
        let links = self.links.lock().expect("links lock");
        let mut live: Vec<(u64, String, Connection)> = links
            .iter()
            .filter_map(|(router, link)| {
                let connection = link.state.connection.lock().expect("link lock").clone()?;
                (!connection.is_closed()).then(|| {
                    (
                        link.state.rtt_us.load(Ordering::Relaxed),
                        router.clone(),
                        connection,
                    )
                })
            })
            .collect();
        live.sort_by_key(|(rtt, router, _)| (*rtt, router.clone()));
        live.into_iter().map(|(_, r, c)| (r, c)).collect()
    }

    /// Close every connection (the host is stopping).
    pub fn close_all(&self) {
        self.links.lock().expect("links lock").clear();
    }
}

impl Rendezvous for Attacher {
    fn splice<'a>(&'a self, device: &'a str) -> SpliceFuture<'a> {
        Box::pin(async move {
            let connections = self.connections();
            if connections.is_empty() {
                return Err(format!(
                    "cannot reach device {device}: this host is attached to no router"
                ));
            }
            let mut reasons = Vec::new();
            for (router, connection) in connections {
                match fog_htx::attach::splice(&connection, device).await {
                    Ok(stream) => return Ok(stream),
                    Err(err) => reasons.push(format!("router {router}: {err}")),
                }
            }
            Err(format!(
                "no router spliced a stream to device {device}: {}",
                reasons.join("; ")
            ))
        })
    }
}

/// The next wait: up to twice `backoff` (at most [`BACKOFF_MAX`]), drawn from its upper half.
fn next_backoff(backoff: Duration) -> (Duration, Duration) {
    let next = (backoff * 2).min(BACKOFF_MAX);
    let unit = getrandom::u32().unwrap_or(u32::MAX / 2) as f64 / u32::MAX as f64;
    (backoff.mul_f64(0.5 + 0.5 * unit), next)
}

/// Why a link to a router is down; compared (as a type) to say each distinct failure once.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum LinkDown {
    /// The TCP connection failed.
    #[error("connect to {addr}: {kind}")]
    Connect {
        addr: String,
        kind: std::io::ErrorKind,
    },
    /// The HTX handshake failed.
    #[error("handshake with {addr}: {source}")]
    Handshake { addr: String, source: HtxError },
    /// Connecting took too long.
    #[error("connecting to {addr} timed out")]
    Timeout { addr: String },
    /// An established connection ended (the router's CLOSE says why, with its code).
    #[error("attach connection ended: {}", .0.as_ref().map_or_else(|| "closed".to_string(), |e| e.to_string()))]
    Ended(Option<HtxError>),
}

/// Keep one router's connection up until aborted.
async fn keep(
    point: AttachPoint,
    router_key: [u8; 32],
    device: String,
    key: StaticKey,
    apps: Arc<AppTable>,
    state: Arc<LinkState>,
) {
    let mut backoff = BACKOFF_START;
    let mut last_error: Option<LinkDown> = None;
    loop {
        let started = Instant::now();
        let connect = async {
            let socket = tokio::net::TcpStream::connect(&point.addr)
                .await
                .map_err(|e| LinkDown::Connect {
                    addr: point.addr.clone(),
                    kind: e.kind(),
                })?;
            let _ = socket.set_nodelay(true);
            conn::connect_with_hello(
                socket,
                &key,
                &router_key,
                ATTACH_PROLOGUE,
                &fog_htx::attach::hello(&device),
                data_plane_config(),
            )
            .await
            .map_err(|source| LinkDown::Handshake {
                addr: point.addr.clone(),
                source,
            })
        };
        let connected = tokio::time::timeout(CONNECT_TIMEOUT, connect)
            .await
            .unwrap_or_else(|_| {
                Err(LinkDown::Timeout {
                    addr: point.addr.clone(),
                })
            });
        match connected {
            Ok(connection) => {
                if last_error.is_some() {
                    tracing::info!(router = point.router, addr = point.addr, "attached");
                } else {
                    tracing::debug!(router = point.router, addr = point.addr, "attached");
                }
                *state.connection.lock().expect("link lock") = Some(connection.clone());
                let pinger = tokio::spawn(ping(connection.clone(), state.clone()));
                while let Some(stream) = connection.accept().await {
                    tokio::spawn(serve(stream, apps.clone(), key.clone(), router_key));
                }
                pinger.abort();
                state.connection.lock().expect("link lock").take();
                state.rtt_us.store(0, Ordering::Relaxed);
                let error = connection.error();
                // A refusal comes right after the handshake: the same one again is not said
                // again. Any other end is said every time, so a host's log shows every
                // disconnect of a link that worked.
                let refused = matches!(
                    error,
                    Some(HtxError::ClosedByPeer {
                        code: CloseCode::Refused,
                        ..
                    })
                );
                let ended = LinkDown::Ended(error);
                if !refused || last_error.as_ref() != Some(&ended) {
                    tracing::warn!(router = point.router, "{ended}");
                }
                last_error = Some(ended);
                if started.elapsed() >= STABLE_AFTER {
                    backoff = BACKOFF_START;
                }
            }
            Err(err) => {
                if last_error.as_ref() != Some(&err) {
                    tracing::warn!(router = point.router, "cannot attach: {err}");
                }
                last_error = Some(err);
            }
        }
        let (wait, next) = next_backoff(backoff);
        backoff = next;
        tokio::time::sleep(wait).await;
    }
}

/// PING the router every [`PING_EVERY`] and keep the round-trip time (a missed echo closes the
/// connection, which `keep` then redials).
async fn ping(connection: Connection, state: Arc<LinkState>) {
    loop {
        match connection.ping().await {
            Ok(rtt) => state
                .rtt_us
                .store((rtt.as_micros() as u64).max(1), Ordering::Relaxed),
            Err(_) => return,
        }
        tokio::time::sleep(PING_EVERY).await;
    }
}

/// Serve one stream the router opened.
async fn serve(mut stream: HtxStream, apps: Arc<AppTable>, key: StaticKey, router: [u8; 32]) {
    match read_tag(&mut stream).await {
        Ok(HTTP_STREAM) => serve_stream(stream, apps, router, Serves::Everything).await,
        Ok(SPLICE_STREAM) => {
            let from = match read_splice_device(&mut stream).await {
                Ok(from) => from,
                Err(err) => {
                    tracing::debug!("bad splice header: {err}");
                    return;
                }
            };
            // The peer's own handshake, end to end through the router.
            let accepted = tokio::time::timeout(
                CONNECT_TIMEOUT,
                conn::accept(stream, &key, DATA_PLANE_PROLOGUE, data_plane_config()),
            )
            .await;
            match accepted {
                Ok(Ok((connection, peer))) => {
                    tracing::debug!(from, "spliced peer connected");
                    serve_connection(connection, apps, peer.key, Serves::StateOnly).await;
                }
                Ok(Err(err)) => tracing::debug!(from, "spliced handshake failed: {err}"),
                Err(_) => tracing::debug!(from, "spliced handshake timed out"),
            }
        }
        Ok(other) => tracing::debug!("unknown stream tag {other}"),
        Err(err) => tracing::debug!("stream without a tag: {err}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_its_cap_with_jitter_in_the_upper_half() {
        let mut backoff = BACKOFF_START;
        for _ in 0..20 {
            let (wait, next) = next_backoff(backoff);
            assert!(
                wait >= backoff / 2 && wait <= backoff,
                "{wait:?} vs {backoff:?}"
            );
            assert!(next <= BACKOFF_MAX);
            backoff = next;
        }
        assert_eq!(backoff, BACKOFF_MAX);
    }
}
