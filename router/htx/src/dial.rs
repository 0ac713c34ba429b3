//! The client side of HTTP over HTX: one HTX connection per peer (Noise XK to the key the
//! control plane published for it, optionally through mix relays), and a connector that lets
//! hyper's pooled client treat each HTX stream as one keep-alive HTTP/1.1 connection. Requests
//! thus reuse streams the way plain HTTP reuses sockets, and only the first request to a peer
//! pays for a handshake. Routers use it to reach hosts, and hosts to reach each other (state
//! replication).
//!
//! Three kinds of target, by the authority of the request's URI:
//! - `host:port`: a host that listens; dialled directly (optionally through relays);
//! - `<device>.attached` ([`attached_authority`]): a host that dialled out to this router; a
//!   stream is opened on the connection it keeps open ([`Dialer::attach`]);
//! - `<device>.spliced` ([`spliced_authority`]): a host behind NAT reached from another host
//!   through a rendezvous ([`Rendezvous`], a router both are attached to); the HTX handshake runs
//!   end to end inside the spliced stream.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use crate::attach::HTTP_STREAM;
use crate::conn::{self, Config, Connection, HtxStream};
use crate::handshake::StaticKey;
use crate::mix::{self, MixMode, Relay};
use hyper_util::client::legacy::connect::{Connected, Connection as HyperConnection};
use hyper_util::rt::TokioIo;

/// Noise prologue of router → host connections.
pub const DATA_PLANE_PROLOGUE: &[u8] = b"fog-data-plane-v1";

/// Windows of data-plane connections: a few in-flight responses never wait for credit.
pub fn data_plane_config() -> Config {
    Config {
        stream_window: 1 << 20,
        connection_window: 16 << 20,
        ..Config::default()
    }
}

/// Suffix of the authority of a host attached to this router.
pub const ATTACHED_SUFFIX: &str = ".attached";
/// Suffix of the authority of a host reached through a rendezvous.
pub const SPLICED_SUFFIX: &str = ".spliced";

/// The URI authority that reaches `device` on the connection it attached to this router with.
pub fn attached_authority(device: &str) -> String {
    format!("{device}{ATTACHED_SUFFIX}")
}

/// The URI authority that reaches `device` through a rendezvous.
pub fn spliced_authority(device: &str) -> String {
    format!("{device}{SPLICED_SUFFIX}")
}

/// A future returned by a [`Rendezvous`].
pub type SpliceFuture<'a> = Pin<Box<dyn Future<Output = Result<HtxStream, String>> + Send + 'a>>;

/// Where a host meets peers that accept no connection: a stream spliced to `device`'s attached
/// connection (see [`crate::attach::splice`]).
pub trait Rendezvous: Send + Sync {
    /// A byte pipe to `device`, or why there is none.
    fn splice<'a>(&'a self, device: &'a str) -> SpliceFuture<'a>;
}

/// The open connection of the highest order among `connections`.
fn newest_open(connections: &[(u64, Connection)]) -> Option<Connection> {
    connections
        .iter()
        .filter(|(_, c)| !c.is_closed())
        .max_by_key(|(order, _)| *order)
        .map(|(_, c)| c.clone())
}

/// How a client reaches peers' HTX endpoints.
pub struct Dialer {
    key: StaticKey,
    /// Host HTX address → its Noise key, from the routes.
    keys: RwLock<HashMap<String, [u8; 32]>>,
    /// Host HTX address → (the key it was opened to, the connection).
    connections: tokio::sync::Mutex<HashMap<String, ([u8; 32], Connection)>>,
    mode: MixMode,
    seed: Vec<u8>,
    relays: RwLock<Vec<Relay>>,
    timeout: Duration,
    /// Device id → every connection it attached with that may still be open (on a router),
    /// with its order (see [`Dialer::attach`]).
    attached: RwLock<HashMap<String, Vec<(u64, Connection)>>>,
    /// Where spliced targets are reached (on a host).
    rendezvous: RwLock<Option<Arc<dyn Rendezvous>>>,
}

impl std::fmt::Debug for Dialer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dialer")
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

impl Dialer {
    /// A dialer that authenticates with `key`, sending through `mode`'s paths chosen from
    /// `seed`.
    pub fn new(key: StaticKey, mode: MixMode, seed: Vec<u8>) -> Arc<Dialer> {
        Arc::new(Dialer {
            key,
            keys: RwLock::new(HashMap::new()),
            connections: tokio::sync::Mutex::new(HashMap::new()),
            mode,
            seed,
            relays: RwLock::new(Vec::new()),
            timeout: Duration::from_secs(5),
            attached: RwLock::new(HashMap::new()),
            rendezvous: RwLock::new(None),
        })
    }

    /// `device` is attached through `connection`; `order` ranks it among the device's
    /// connections (the router's accept order): requests go to the open connection with the
    /// highest order. A host that re-dials holds only its newest connection, and the router may
    /// admit its connections out of order (admission asks the control plane) and learn late
    /// that an older one ended: ranking by when each was accepted, and keeping every open one
    /// until it ends, means no order of admissions and endings can leave the router without
    /// the connection the host holds.
    pub fn attach(&self, device: &str, connection: Connection, order: u64) {
        if connection.is_closed() {
            return;
        }
        let mut attached = self.attached.write().expect("attached lock");
        let connections = attached.entry(device.to_string()).or_default();
        connections.retain(|(_, c)| !c.is_closed());
        connections.push((order, connection));
    }

    /// `connection` of `device` ended: forget it (and any other that ended).
    pub fn detach(&self, device: &str, connection: &Connection) {
        let mut attached = self.attached.write().expect("attached lock");
        if let Some(connections) = attached.get_mut(device) {
            connections.retain(|(_, c)| !c.same_as(connection) && !c.is_closed());
            if connections.is_empty() {
                attached.remove(device);
            }
        }
    }

    /// The open connection `device` attached with (its highest-ranked one), if any.
    pub fn attached(&self, device: &str) -> Option<Connection> {
        self.attached
            .read()
            .expect("attached lock")
            .get(device)
            .and_then(|connections| newest_open(connections))
    }

    /// Every device attached now, with the connection requests to it take.
    pub fn attached_devices(&self) -> Vec<(String, Connection)> {
        self.attached
            .read()
            .expect("attached lock")
            .iter()
            .filter_map(|(d, connections)| Some((d.clone(), newest_open(connections)?)))
            .collect()
    }

    /// Reach `<device>.spliced` targets through `rendezvous`.
    pub fn set_rendezvous(&self, rendezvous: Arc<dyn Rendezvous>) {
        *self.rendezvous.write().expect("rendezvous lock") = Some(rendezvous);
    }

    /// The mix mode of data-plane connections.
    pub fn mode(&self) -> MixMode {
        self.mode
    }

    /// Remember the HTX keys of hosts (from the routes).
    pub fn learn(&self, endpoints: impl IntoIterator<Item = (String, [u8; 32])>) {
        let mut keys = self.keys.write().expect("keys lock");
        keys.extend(endpoints);
    }

    /// Replace the relays paths are chosen over.
    pub fn set_relays(&self, relays: Vec<Relay>) {
        *self.relays.write().expect("relays lock") = relays;
    }

    /// The live HTX connection to `addr`, made if needed.
    async fn connection(&self, addr: &str) -> Result<Connection, String> {
        if let Some(device) = addr.strip_suffix(ATTACHED_SUFFIX) {
            return self
                .attached(device)
                .ok_or_else(|| format!("device {device} is not attached to this router"));
        }
        let key = *self
            .keys
            .read()
            .expect("keys lock")
            .get(addr)
            .ok_or_else(|| format!("no HTX key known for {addr}"))?;
        let mut connections = self.connections.lock().await;
        if let Some((opened_to, connection)) = connections.get(addr)
            && *opened_to == key
            && !connection.is_closed()
        {
            return Ok(connection.clone());
        }
        let connection = match addr.strip_suffix(SPLICED_SUFFIX) {
            Some(device) => {
                let rendezvous = self
                    .rendezvous
                    .read()
                    .expect("rendezvous lock")
                    .clone()
                    .ok_or_else(|| format!("no rendezvous to reach device {device} through"))?;
                let connect = async {
                    let pipe = rendezvous.splice(device).await?;
                    // Noise end to end: the rendezvous copies ciphertext only.
                    conn::connect(
                        pipe,
                        &self.key,
                        &key,
                        DATA_PLANE_PROLOGUE,
                        data_plane_config(),
                    )
                    .await
                    .map_err(|e| format!("HTX handshake with device {device}: {e}"))
                };
                tokio::time::timeout(self.timeout, connect)
                    .await
                    .map_err(|_| format!("spliced connection to device {device} timed out"))??
            }
            None => {
                let path = {
                    let relays = self.relays.read().expect("relays lock");
                    mix::choose_path(self.mode, &self.seed, &key, &relays)
                        .map_err(|e| e.to_string())?
                };
                let connect = async {
                    let pipe = mix::dial(&path, addr, self.timeout).await?;
                    conn::connect(
                        pipe,
                        &self.key,
                        &key,
                        DATA_PLANE_PROLOGUE,
                        data_plane_config(),
                    )
                    .await
                };
                tokio::time::timeout(self.timeout, connect)
                    .await
                    .map_err(|_| format!("HTX connection to {addr} timed out"))?
                    .map_err(|e| format!("HTX connection to {addr}: {e}"))?
            }
        };
        connections.insert(addr.to_string(), (key, connection.clone()));
        Ok(connection)
    }

    /// A new stream to the host at `addr`.
    pub async fn open(&self, addr: &str) -> Result<HtxStream, String> {
        let connection = self.connection(addr).await?;
        let mut stream = match connection.open() {
            Ok(stream) => stream,
            Err(_) => {
                // Closed between the check and the open: one fresh connection.
                self.connections.lock().await.remove(addr);
                self.connection(addr)
                    .await?
                    .open()
                    .map_err(|e| e.to_string())?
            }
        };
        if addr.ends_with(ATTACHED_SUFFIX) {
            // Streams on an attached connection say what they carry.
            stream
                .write(&[HTTP_STREAM])
                .await
                .map_err(|e| format!("opening a stream to {addr}: {e}"))?;
        }
        Ok(stream)
    }
}

/// An HTX stream is what hyper's pooled client calls a connection.
impl HyperConnection for HtxStream {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

/// hyper's connector for `http://<host HTX address>/...`: a new stream on the host's HTX
/// connection.
#[derive(Debug, Clone)]
pub struct HtxConnector(pub Arc<Dialer>);

type Connecting = Pin<
    Box<
        dyn Future<Output = Result<TokioIo<HtxStream>, Box<dyn std::error::Error + Send + Sync>>>
            + Send,
    >,
>;

impl tower_service::Service<http::Uri> for HtxConnector {
    type Response = TokioIo<HtxStream>;
    type Error = Box<dyn std::error::Error + Send + Sync>;
    type Future = Connecting;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let dialer = self.0.clone();
        Box::pin(async move {
            let addr = uri
                .authority()
                .ok_or("an HTX target needs an address")?
                .to_string();
            let stream = dialer.open(&addr).await?;
            Ok(TokioIo::new(stream))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One HTX connection over an in-memory pipe: (the router's side, the host's side).
    async fn pair() -> (Connection, Connection) {
        let (router, host) = (StaticKey::generate(), StaticKey::generate());
        let (a, b) = tokio::io::duplex(64 << 10);
        let (accepted, connected) = tokio::join!(
            conn::accept(a, &router, b"test", Config::default()),
            conn::connect(b, &host, &router.public, b"test", Config::default()),
        );
        (accepted.unwrap().0, connected.unwrap())
    }

    fn dialer() -> Arc<Dialer> {
        Dialer::new(StaticKey::generate(), MixMode::Performance, Vec::new())
    }

    #[tokio::test]
    async fn the_connection_accepted_last_wins_whatever_order_admissions_finish_in() {
        let dialer = dialer();
        let ((older, _h1), (newer, _h2)) = (pair().await, pair().await);
        dialer.attach("d", newer.clone(), 2);
        dialer.attach("d", older.clone(), 1);
        assert!(dialer.attached("d").unwrap().same_as(&newer));
        // The older one ends: the newer one is still the way to the device.
        older.close("the host re-dialled");
        dialer.detach("d", &older);
        assert!(dialer.attached("d").unwrap().same_as(&newer));
        assert_eq!(dialer.attached_devices().len(), 1);
    }

    #[tokio::test]
    async fn when_the_newest_connection_ends_the_device_is_reached_on_an_older_open_one() {
        let dialer = dialer();
        let ((older, _h1), (newer, _h2)) = (pair().await, pair().await);
        dialer.attach("d", older.clone(), 1);
        dialer.attach("d", newer.clone(), 2);
        newer.close("gone");
        // Even before its task detaches it, a closed connection is never chosen.
        assert!(dialer.attached("d").unwrap().same_as(&older));
        dialer.detach("d", &newer);
        assert!(dialer.attached("d").unwrap().same_as(&older));
        older.close("gone too");
        dialer.detach("d", &older);
        assert!(dialer.attached("d").is_none());
        assert!(dialer.attached_devices().is_empty());
    }

    #[tokio::test]
    async fn a_connection_that_ended_before_its_admission_is_not_attached() {
        let dialer = dialer();
        let ((open, _h1), (ended, _h2)) = (pair().await, pair().await);
        dialer.attach("d", open.clone(), 1);
        ended.close("the host gave up on it");
        dialer.attach("d", ended.clone(), 2);
        assert!(dialer.attached("d").unwrap().same_as(&open));
    }
}
