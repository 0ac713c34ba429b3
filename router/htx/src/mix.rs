//! Mix relays: an HTX connection carried through 0, 2 or ≥ 3 relays (Betanet 1.1's performance,
//! balanced and strict modes).
//!
//! The client telescopes: it opens an HTX connection to the first relay (Noise XK to the relay's
//! key, with a fresh client key per hop so relays cannot link circuits by key), opens one stream
//! and asks `FORWARD <next address> <delay µs>`. The relay connects to the next address and from
//! then on copies bytes between that stream and the TCP connection. The client runs its next
//! handshake *inside* that stream, and so on; the last pipe reaches the destination, where the
//! caller runs its own HTX handshake. Each relay therefore handles only the next layer's Noise
//! messages and sealed frames: it never holds a key that opens the inner frames.
//!
//! Paths are chosen deterministically from a seed and the destination over the relays known
//! (sorted by key), so the same seed gives the same path. In strict mode each relay holds every
//! chunk it forwards for its delay, drawn from U[30, 150] ms, scaled down so one direction's
//! delays total at most 600 ms; chunks are pipelined, so a delay adds latency, not a throughput
//! cap.
//!
//! A relay forwards only to the destinations its [`Destinations`] allows (for `fog relay`: the
//! relays, Betanet fronts and hosts the control plane lists), so it cannot be used as a TCP
//! forwarder to anywhere else.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

use crate::HtxError;
use crate::conn::{self, Config, Connection, HtxStream};
use crate::handshake::StaticKey;

/// Noise prologue of relay hops.
pub const RELAY_PROLOGUE: &[u8] = b"fog-relay-v1";
/// Smallest and largest per-hop delay in strict mode, and the cap on their total.
pub const STRICT_DELAY_MS: (u64, u64) = (30, 150);
/// Most delay one direction of a strict path may add.
pub const STRICT_TOTAL_CAP: Duration = Duration::from_millis(600);
/// Hops of a strict path.
pub const STRICT_HOPS: usize = 3;
/// Hops of a balanced path.
pub const BALANCED_HOPS: usize = 2;

/// How much anonymity a connection buys with latency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MixMode {
    /// Direct: no relay.
    #[default]
    Performance,
    /// Two relays, no added delay.
    Balanced,
    /// At least three relays, each holding traffic for U[30, 150] ms.
    Strict {
        /// Relays on the path (3 or more).
        hops: usize,
    },
}

impl std::str::FromStr for MixMode {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "performance" | "0" => Ok(MixMode::Performance),
            "balanced" | "2" => Ok(MixMode::Balanced),
            "strict" => Ok(MixMode::Strict { hops: STRICT_HOPS }),
            other => match other.strip_prefix("strict:").map(str::parse::<usize>) {
                Some(Ok(hops)) if hops >= STRICT_HOPS => Ok(MixMode::Strict { hops }),
                _ => Err(format!(
                    "unknown mix mode {other:?}: use performance (0 hops), balanced (2), strict \
                     (3) or strict:N (N >= 3)"
                )),
            },
        }
    }
}

impl std::fmt::Display for MixMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MixMode::Performance => f.write_str("performance"),
            MixMode::Balanced => f.write_str("balanced"),
            MixMode::Strict { hops } if *hops == STRICT_HOPS => f.write_str("strict"),
            MixMode::Strict { hops } => write!(f, "strict:{hops}"),
        }
    }
}

impl MixMode {
    /// Relays on a path of this mode.
    pub fn hops(self) -> usize {
        match self {
            MixMode::Performance => 0,
            MixMode::Balanced => BALANCED_HOPS,
            MixMode::Strict { hops } => hops.max(STRICT_HOPS),
        }
    }
}

/// A relay: where it listens and its Noise static key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relay {
    /// TCP address.
    pub addr: String,
    /// X25519 static public key.
    pub key: [u8; 32],
}

/// One hop of a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hop {
    /// The relay.
    pub relay: Relay,
    /// How long it holds each chunk.
    pub delay: Duration,
}

/// Deterministic numbers from (seed, destination): SHA-256 in counter mode.
struct Draws {
    base: Vec<u8>,
    counter: u64,
}

impl Draws {
    fn next(&mut self) -> u64 {
        let mut hasher = Sha256::new();
        hasher.update(&self.base);
        hasher.update(self.counter.to_be_bytes());
        self.counter += 1;
        u64::from_be_bytes(hasher.finalize()[..8].try_into().expect("8 bytes"))
    }

    /// Uniform in 0..n (n > 0), without modulo bias worth measuring at these sizes.
    fn below(&mut self, n: u64) -> u64 {
        ((self.next() as u128 * n as u128) >> 64) as u64
    }
}

/// Choose `mode`'s path to `destination` (e.g. its Noise key) over `relays`, from `seed`.
///
/// Fails when there are too few relays: a path never silently has fewer hops than its mode.
pub fn choose_path(
    mode: MixMode,
    seed: &[u8],
    destination: &[u8],
    relays: &[Relay],
) -> Result<Vec<Hop>, HtxError> {
    let hops = mode.hops();
    let mut candidates: Vec<&Relay> = relays.iter().collect();
    candidates.sort_by(|a, b| a.key.cmp(&b.key).then(a.addr.cmp(&b.addr)));
    candidates.dedup_by(|a, b| a.key == b.key);
    if candidates.len() < hops {
        return Err(HtxError::Malformed {
            what: "mix path",
            reason: format!(
                "{mode} mode needs {hops} relays, {} known",
                candidates.len()
            ),
        });
    }
    let mut base = b"fog-mix-path-v1".to_vec();
    base.extend_from_slice(&(seed.len() as u32).to_be_bytes());
    base.extend_from_slice(seed);
    base.extend_from_slice(destination);
    let mut draws = Draws { base, counter: 0 };
    let mut path = Vec::with_capacity(hops);
    for _ in 0..hops {
        let i = draws.below(candidates.len() as u64) as usize;
        let relay = candidates.remove(i).clone();
        let delay = if matches!(mode, MixMode::Strict { .. }) {
            let (low, high) = STRICT_DELAY_MS;
            // Microsecond resolution within [low, high] ms.
            Duration::from_micros(low * 1000 + draws.below((high - low) * 1000 + 1))
        } else {
            Duration::ZERO
        };
        path.push(Hop { relay, delay });
    }
    let total: Duration = path.iter().map(|h| h.delay).sum();
    if total > STRICT_TOTAL_CAP {
        // Integer scaling rounds down, so the total never exceeds the cap.
        let (cap, total) = (STRICT_TOTAL_CAP.as_micros(), total.as_micros());
        for hop in &mut path {
            hop.delay = Duration::from_micros((hop.delay.as_micros() * cap / total) as u64);
        }
    }
    Ok(path)
}

/// A byte pipe: a TCP connection or a stream through relays.
pub trait Pipe: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Pipe for T {}

/// The pipe through one relay: the stream, and its connection kept open while it lives.
struct RelayedPipe {
    stream: HtxStream,
    connection: Connection,
}

impl Drop for RelayedPipe {
    fn drop(&mut self) {
        self.connection.close("circuit closed");
    }
}

impl AsyncRead for RelayedPipe {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for RelayedPipe {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// Settings of hop connections: windows large enough that a relay never throttles a single
/// request, one stream (a circuit carries exactly one: a client opening more is cut off), the
/// spec's other defaults.
fn hop_config() -> Config {
    Config {
        stream_window: 1 << 20,
        connection_window: 4 << 20,
        max_streams: 1,
        ..Config::default()
    }
}

async fn tcp(addr: &str, timeout: Duration) -> Result<TcpStream, HtxError> {
    let socket = tokio::time::timeout(timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| HtxError::Io(format!("connecting to {addr} timed out")))?
        .map_err(|e| HtxError::Io(format!("connecting to {addr}: {e}")))?;
    let _ = socket.set_nodelay(true);
    Ok(socket)
}

/// Read one `\n`-terminated line of at most 256 bytes.
async fn read_line<R: AsyncRead + Unpin>(io: &mut R) -> Result<String, HtxError> {
    let mut line = Vec::new();
    loop {
        let byte = io
            .read_u8()
            .await
            .map_err(|e| HtxError::Closed(format!("relay control line: {e}")))?;
        if byte == b'\n' {
            break;
        }
        line.push(byte);
        if line.len() > 256 {
            return Err(HtxError::Malformed {
                what: "relay control line",
                reason: "longer than 256 bytes".into(),
            });
        }
    }
    String::from_utf8(line).map_err(|_| HtxError::Malformed {
        what: "relay control line",
        reason: "not UTF-8".into(),
    })
}

/// A pipe to `destination` through `path` (direct when the path is empty).
pub async fn dial(
    path: &[Hop],
    destination: &str,
    timeout: Duration,
) -> Result<Box<dyn Pipe>, HtxError> {
    let first = path.first().map_or(destination, |h| h.relay.addr.as_str());
    let mut pipe: Box<dyn Pipe> = Box::new(tcp(first, timeout).await?);
    for (i, hop) in path.iter().enumerate() {
        let next = path
            .get(i + 1)
            .map_or(destination, |h| h.relay.addr.as_str());
        let step = async {
            let connection = conn::connect(
                pipe,
                &StaticKey::generate(),
                &hop.relay.key,
                RELAY_PROLOGUE,
                hop_config(),
            )
            .await?;
            let mut stream = connection.open()?;
            stream
                .write(format!("FORWARD {next} {}\n", hop.delay.as_micros()).as_bytes())
                .await?;
            let reply = read_line(&mut stream).await?;
            if reply != "OK" {
                return Err(HtxError::Closed(format!(
                    "relay {} refused to forward to {next}: {}",
                    hop.relay.addr,
                    reply.strip_prefix("ERR ").unwrap_or(&reply)
                )));
            }
            Ok(Box::new(RelayedPipe { stream, connection }) as Box<dyn Pipe>)
        };
        pipe = tokio::time::timeout(timeout, step)
            .await
            .map_err(|_| HtxError::Io(format!("relay {} timed out", hop.relay.addr)))??;
    }
    Ok(pipe)
}

/// Where a relay may forward. `Err` carries the reason sent back to the client.
pub trait Destinations: Send + Sync {
    /// Whether the relay may connect onward to `addr` (as the client wrote it).
    fn allows<'a>(
        &'a self,
        addr: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>>;
}

/// Sees every byte a relay reads, in either direction (for tests and audits: what a relay
/// could record).
pub type Tap = Arc<dyn Fn(&[u8]) + Send + Sync>;

/// Settings of a relay.
#[derive(Clone)]
pub struct RelayConfig {
    /// Deadline for connecting to the next hop.
    pub connect_timeout: Duration,
    /// Longest delay a client may ask for.
    pub max_delay: Duration,
    /// Most circuits at once.
    pub max_circuits: usize,
    /// Called with every byte the relay reads.
    pub tap: Option<Tap>,
    /// Where the relay may forward; `None` forwards anywhere (a closed test network only).
    pub destinations: Option<Arc<dyn Destinations>>,
}

impl std::fmt::Debug for RelayConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayConfig")
            .field("connect_timeout", &self.connect_timeout)
            .field("max_delay", &self.max_delay)
            .field("max_circuits", &self.max_circuits)
            .field("tap", &self.tap.is_some())
            .field("destinations", &self.destinations.is_some())
            .finish()
    }
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            connect_timeout: Duration::from_secs(5),
            max_delay: STRICT_TOTAL_CAP,
            max_circuits: 1024,
            tap: None,
            destinations: None,
        }
    }
}

/// Copy `from` to `to`, holding each chunk for `delay` (pipelined), then shut `to` down.
async fn pump<R, W>(mut from: R, mut to: W, delay: Duration, tap: Option<Tap>)
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(Instant, Vec<u8>)>(256);
    let reader = async move {
        let mut buf = vec![0u8; 16 << 10];
        loop {
            match from.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if let Some(tap) = &tap {
                        tap(&buf[..n]);
                    }
                    if tx
                        .send((Instant::now() + delay, buf[..n].to_vec()))
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
            }
        }
    };
    let writer = async move {
        while let Some((due, chunk)) = rx.recv().await {
            // Tokio's timer rounds up to whole milliseconds: never touch it for a chunk that
            // is already due (always, on a path without delays).
            if due > Instant::now() {
                tokio::time::sleep_until(due).await;
            }
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(reader, writer);
}

async fn circuit(socket: TcpStream, key: StaticKey, config: RelayConfig) -> Result<(), HtxError> {
    let (connection, _) = conn::accept(socket, &key, RELAY_PROLOGUE, hop_config()).await?;
    let mut stream = tokio::time::timeout(config.connect_timeout, connection.accept())
        .await
        .map_err(|_| HtxError::Closed("no stream opened".into()))?
        .ok_or_else(|| HtxError::Closed("no stream opened".into()))?;
    let line = read_line(&mut stream).await?;
    let refuse = |reason: String| HtxError::Malformed {
        what: "FORWARD",
        reason,
    };
    let mut words = line.split(' ');
    let (Some("FORWARD"), Some(next), Some(delay), None) =
        (words.next(), words.next(), words.next(), words.next())
    else {
        stream
            .write(b"ERR expected FORWARD <address> <delay us>\n")
            .await?;
        return Err(refuse(format!("bad request line {line:?}")));
    };
    let delay = match delay.parse::<u64>().map(Duration::from_micros) {
        Ok(delay) if delay <= config.max_delay => delay,
        _ => {
            stream.write(b"ERR delay out of range\n").await?;
            return Err(refuse(format!("delay {delay:?}")));
        }
    };
    if let Some(destinations) = &config.destinations
        && let Err(reason) = destinations.allows(next).await
    {
        stream.write(format!("ERR {reason}\n").as_bytes()).await?;
        return Err(refuse(reason));
    }
    let onward = match tcp(next, config.connect_timeout).await {
        Ok(onward) => onward,
        Err(err) => {
            stream.write(format!("ERR {err}\n").as_bytes()).await?;
            return Err(err);
        }
    };
    stream.write(b"OK\n").await?;
    let (onward_read, onward_write) = onward.into_split();
    let (stream_read, stream_write) = tokio::io::split(stream);
    tokio::join!(
        pump(stream_read, onward_write, delay, config.tap.clone()),
        pump(onward_read, stream_write, delay, config.tap.clone()),
    );
    connection.close("circuit done");
    Ok(())
}

/// Relay circuits for clients on `listener` until `shutdown` resolves.
pub async fn serve_relay(
    listener: TcpListener,
    key: StaticKey,
    config: RelayConfig,
    shutdown: impl Future<Output = ()>,
) {
    let circuits = Arc::new(tokio::sync::Semaphore::new(config.max_circuits));
    fog_net::accept_each(&listener, shutdown, |socket, _| {
        let Ok(permit) = circuits.clone().try_acquire_owned() else {
            // Full: refuse by closing at once.
            return;
        };
        let (key, config) = (key.clone(), config.clone());
        tokio::spawn(async move {
            let _permit = permit;
            if let Err(err) = circuit(socket, key, config).await {
                tracing::debug!("relay circuit ended: {err}");
            }
        });
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn relays(n: u8) -> Vec<Relay> {
        (0..n)
            .map(|i| Relay {
                addr: format!("127.0.0.1:{}", 9000 + i as u16),
                key: [i; 32],
            })
            .collect()
    }

    #[test]
    fn paths_follow_the_mode_and_the_seed() {
        let known = relays(6);
        assert!(
            choose_path(MixMode::Performance, b"s", b"d", &known)
                .unwrap()
                .is_empty()
        );
        let balanced = choose_path(MixMode::Balanced, b"s", b"d", &known).unwrap();
        assert_eq!(balanced.len(), 2);
        assert!(balanced.iter().all(|h| h.delay.is_zero()));
        let strict = choose_path(MixMode::Strict { hops: 3 }, b"s", b"d", &known).unwrap();
        assert_eq!(strict.len(), 3);
        let mut keys: Vec<_> = strict.iter().map(|h| h.relay.key).collect();
        keys.dedup();
        assert_eq!(keys.len(), 3, "distinct relays");
        for hop in &strict {
            assert!(
                hop.delay >= Duration::from_millis(30) && hop.delay <= Duration::from_millis(150)
            );
        }
        // Deterministic in (seed, destination), whatever order the relays come in.
        let mut shuffled = known.clone();
        shuffled.reverse();
        assert_eq!(
            choose_path(MixMode::Strict { hops: 3 }, b"s", b"d", &shuffled).unwrap(),
            strict
        );
        let others: Vec<_> = (0..20u8)
            .map(|i| choose_path(MixMode::Strict { hops: 3 }, &[i], b"d", &known).unwrap())
            .collect();
        assert!(others.iter().any(|p| *p != strict), "seeds change paths");
        // Too few relays fails rather than shortening the path.
        let err = choose_path(MixMode::Strict { hops: 3 }, b"s", b"d", &relays(2)).unwrap_err();
        assert!(err.to_string().contains("needs 3 relays, 2 known"), "{err}");
    }

    #[test]
    fn strict_delays_are_capped() {
        // Six hops draw up to 900 ms: the total is scaled down to the cap, and some paths need it.
        let mut capped = 0;
        for i in 0..200u32 {
            let path = choose_path(
                MixMode::Strict { hops: 6 },
                &i.to_be_bytes(),
                b"d",
                &relays(8),
            )
            .unwrap();
            assert_eq!(path.len(), 6);
            let total: Duration = path.iter().map(|h| h.delay).sum();
            assert!(total <= STRICT_TOTAL_CAP, "{total:?}");
            capped += usize::from(total >= STRICT_TOTAL_CAP - Duration::from_millis(1));
        }
        assert!(capped > 0);
        assert_eq!(
            "strict".parse::<MixMode>().unwrap(),
            MixMode::Strict { hops: 3 }
        );
        assert_eq!(
            "strict:5".parse::<MixMode>().unwrap(),
            MixMode::Strict { hops: 5 }
        );
        assert_eq!(MixMode::Strict { hops: 5 }.to_string(), "strict:5");
        assert!("strict:2".parse::<MixMode>().is_err());
        assert!("fast".parse::<MixMode>().is_err());
    }
}
