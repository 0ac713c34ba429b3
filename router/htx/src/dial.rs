//! The client side of HTTP over HTX: one HTX connection per peer (Noise XK to the key the
//! control plane published for it, optionally through mix relays), and a connector that lets
//! hyper's pooled client treat each HTX stream as one keep-alive HTTP/1.1 connection. Requests
//! thus reuse streams the way plain HTTP reuses sockets, and only the first request to a peer
//! pays for a handshake. Routers use it to reach hosts, and hosts to reach each other (state
//! replication).

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

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
        })
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
        let path = {
            let relays = self.relays.read().expect("relays lock");
            mix::choose_path(self.mode, &self.seed, &key, &relays).map_err(|e| e.to_string())?
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
        let connection = tokio::time::timeout(self.timeout, connect)
            .await
            .map_err(|_| format!("HTX connection to {addr} timed out"))?
            .map_err(|e| format!("HTX connection to {addr}: {e}"))?;
        connections.insert(addr.to_string(), (key, connection.clone()));
        Ok(connection)
    }

    /// A new stream to the host at `addr`.
    pub async fn open(&self, addr: &str) -> Result<HtxStream, String> {
        let connection = self.connection(addr).await?;
        match connection.open() {
            Ok(stream) => Ok(stream),
            Err(_) => {
                // Closed between the check and the open: one fresh connection.
                self.connections.lock().await.remove(addr);
                self.connection(addr)
                    .await?
                    .open()
                    .map_err(|e| e.to_string())
            }
        }
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
