//! Hostile peers written raw (handshake, then hand-sealed frames) against a real HTX server on
//! loopback: each flood is cut off with a CLOSE carrying its code, the server's queue stays
//! within its bound, and an honest connection to the same server keeps its round-trip time.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use fog_htx::conn::{self, Config, Connection};
use fog_htx::frame::{FrameType, Opener, Sealer, encode_stream};
use fog_htx::handshake::{self, StaticKey};
use fog_htx::{CloseCode, HtxError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::mpsc;

const PROLOGUE: &[u8] = b"fog-test";

/// A server that answers every stream with `reply` bytes, reporting each connection it accepts
/// (or the handshake error) to the test.
struct Server {
    addr: std::net::SocketAddr,
    key: StaticKey,
    accepted: mpsc::UnboundedReceiver<Result<(Connection, [u8; 32]), HtxError>>,
    /// Handshakes in progress: what stalled peers hold on the server.
    handshaking: Arc<AtomicUsize>,
}

impl Server {
    async fn start(config: Config, reply: usize) -> Server {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let key = StaticKey::generate();
        let (tx, accepted) = mpsc::unbounded_channel();
        let handshaking = Arc::new(AtomicUsize::new(0));
        let (server_key, counter) = (key.clone(), handshaking.clone());
        tokio::spawn(async move {
            loop {
                let (socket, _) = listener.accept().await.unwrap();
                socket.set_nodelay(true).unwrap();
                let (key, config, tx, counter) = (
                    server_key.clone(),
                    config.clone(),
                    tx.clone(),
                    counter.clone(),
                );
                tokio::spawn(async move {
                    counter.fetch_add(1, Ordering::SeqCst);
                    let accepted = conn::accept(socket, &key, PROLOGUE, config).await;
                    counter.fetch_sub(1, Ordering::SeqCst);
                    let connection = match accepted {
                        Ok((connection, peer)) => {
                            let _ = tx.send(Ok((connection.clone(), peer.key)));
                            connection
                        }
                        Err(err) => {
                            let _ = tx.send(Err(err));
                            return;
                        }
                    };
                    while let Some(mut stream) = connection.accept().await {
                        tokio::spawn(async move {
                            if stream.read_to_end().await.is_ok() {
                                let _ = stream.write(&vec![7u8; reply]).await;
                                let _ = stream.finish().await;
                            }
                        });
                    }
                });
            }
        });
        Server {
            addr,
            key,
            accepted,
            handshaking,
        }
    }

    /// The server's end of the connection from the peer with static key `peer`.
    async fn connection_of(&mut self, peer: &[u8; 32]) -> Connection {
        loop {
            match self.accepted.recv().await.unwrap() {
                Ok((connection, key)) if &key == peer => return connection,
                _ => {}
            }
        }
    }
}

/// A peer that speaks HTX by hand: a real handshake, then frames sealed one by one. Its two
/// halves go their own ways: the writer floods, the reader looks for the CLOSE afterwards.
struct RawPeer {
    key: StaticKey,
    reader: PeerReader,
    writer: PeerWriter,
}

struct PeerWriter {
    half: OwnedWriteHalf,
    sealer: Sealer,
}

struct PeerReader {
    half: OwnedReadHalf,
    opener: Opener,
}

impl RawPeer {
    /// Connect with a small receive buffer, so a peer that does not read stalls the server's
    /// writer after little data, as a slow or hostile peer on a real network would.
    async fn connect(server: &Server) -> RawPeer {
        let socket = TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let mut stream = socket.connect(server.addr).await.unwrap();
        let key = StaticKey::generate();
        let keys = handshake::initiate(&mut stream, &key, &server.key.public, PROLOGUE, &[])
            .await
            .unwrap();
        let (reader, writer) = stream.into_split();
        RawPeer {
            key,
            reader: PeerReader {
                half: reader,
                opener: Opener::new(keys.recv, 1 << 20),
            },
            writer: PeerWriter {
                half: writer,
                sealer: Sealer::new(keys.send),
            },
        }
    }
}

impl PeerWriter {
    fn seal(&mut self, kind: FrameType, stream: u32, payload: &[u8], out: &mut Vec<u8>) {
        self.sealer.seal(kind, stream, 0, payload, out);
    }
}

impl PeerReader {
    /// Read (never having read before) until the server's connection CLOSE; its code.
    async fn close_code(&mut self) -> CloseCode {
        let mut frame = Vec::new();
        loop {
            let mut len = [0u8; 3];
            self.half
                .read_exact(&mut len)
                .await
                .expect("the server hung up without a CLOSE");
            let total = self.opener.frame_len(len).unwrap();
            frame.clear();
            frame.extend_from_slice(&len);
            frame.resize(total, 0);
            self.half.read_exact(&mut frame[3..]).await.unwrap();
            let opened = self.opener.open(&frame).unwrap();
            match opened.kind {
                FrameType::KeyUpdate => self.opener.rekey(),
                FrameType::Close if opened.stream == 0 => {
                    return CloseCode::from_code(u16::from_be_bytes([
                        opened.payload[0],
                        opened.payload[1],
                    ]));
                }
                _ => {}
            }
        }
    }
}

/// Median round trip of `n` small requests on `client`.
async fn round_trips(client: &Connection, n: usize) -> Duration {
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        let mut stream = client.open().unwrap();
        stream.write(b"?").await.unwrap();
        stream.finish().await.unwrap();
        stream
            .read_to_end()
            .await
            .expect("the honest connection failed");
        samples.push(started.elapsed());
    }
    samples.sort();
    samples[n / 2]
}

/// An honest client of `server`, and its baseline round trip.
async fn honest_client(server: &mut Server, config: Config) -> (Connection, Duration) {
    let socket = TcpStream::connect(server.addr).await.unwrap();
    socket.set_nodelay(true).unwrap();
    let client = conn::connect(
        socket,
        &StaticKey::generate(),
        &server.key.public,
        PROLOGUE,
        config,
    )
    .await
    .unwrap();
    round_trips(&client, 5).await; // warm up
    let baseline = round_trips(&client, 21).await;
    (client, baseline)
}

/// Round trips measured on `client` while `flood` runs, until `cut` reports the flooding
/// connection gone and the flood task is stopped; the median, and the flood's outcome.
async fn under_flood(
    client: &Connection,
    flooded: &Connection,
    flood: tokio::task::JoinHandle<()>,
) -> Duration {
    let mut samples = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !flooded.is_closed() || samples.len() < 21 {
        assert!(Instant::now() < deadline, "the flood was never cut off");
        samples.push(round_trips(client, 1).await);
    }
    flood.abort();
    samples.sort();
    samples[samples.len() / 2]
}

/// The honest connection's latency under the flood stays within a generous factor of its own
/// baseline (the flood shares the machine's two cores with it), or within a few scheduler time
/// slices of it: 20 times a baseline of 0.2 ms is 4 ms, less than one slice of a busy core on
/// a shared machine (a whole-suite run failed at 3.7 ms against 3.3 ms). A flood that holds the
/// honest connection up is seen either way.
fn assert_latency_kept(baseline: Duration, during: Duration) {
    eprintln!("honest round trip: baseline {baseline:?}, under the flood {during:?}");
    let allowed = (baseline * 20).max(baseline + Duration::from_millis(20));
    assert!(
        during <= allowed,
        "honest round trip went from {baseline:?} to {during:?} under the flood (allowed {allowed:?})"
    );
}

fn flood_config() -> Config {
    Config {
        max_streams: 64,
        ..Config::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_pinging_without_reading_is_cut_off_for_a_ping_flood() {
    let config = flood_config();
    let mut server = Server::start(config.clone(), 16).await;
    let (client, baseline) = honest_client(&mut server, config.clone()).await;
    let peer = RawPeer::connect(&server).await;
    let flooded = server.connection_of(&peer.key.public).await;

    let RawPeer {
        mut reader,
        mut writer,
        ..
    } = peer;
    let flood = tokio::spawn(async move {
        let mut batch = Vec::new();
        for token in 0u64.. {
            let mut ping = vec![0u8];
            ping.extend_from_slice(&token.to_be_bytes());
            writer.seal(FrameType::Ping, 0, &ping, &mut batch);
            if batch.len() >= 8 << 10 {
                if writer.half.write_all(&batch).await.is_err() {
                    return;
                }
                batch.clear();
            }
        }
    });
    let during = under_flood(&client, &flooded, flood).await;

    assert!(
        matches!(
            flooded.error(),
            Some(HtxError::CutOff {
                code: CloseCode::PingFlood,
                ..
            })
        ),
        "{:?}",
        flooded.error()
    );
    assert_eq!(reader.close_code().await, CloseCode::PingFlood);
    // What the flood made the server hold: at most the echoes allowed, never the flood.
    let peak = flooded.queued_peak();
    eprintln!("ping flood: at most {peak} bytes queued");
    let bound = config.max_pending_pings * 64 + 1024;
    assert!(peak <= bound, "{peak} bytes queued (bound {bound})");
    assert_latency_kept(baseline, during);
    assert!(!client.is_closed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_opening_streams_without_reading_is_cut_off_for_too_many_streams() {
    let config = flood_config();
    // Answers of 16 KiB: the connection window holds four, the rest wait for credit the peer
    // never returns, so their streams stay open.
    let mut server = Server::start(config.clone(), 16 << 10).await;
    let (client, baseline) = honest_client(&mut server, config.clone()).await;
    let peer = RawPeer::connect(&server).await;
    let flooded = server.connection_of(&peer.key.public).await;

    let RawPeer {
        mut reader,
        mut writer,
        ..
    } = peer;
    let streams = config.max_streams as u32 + 8;
    let flood = tokio::spawn(async move {
        // One request per stream, each finished at once, none of the answers read.
        for i in 0..streams {
            let mut frame = Vec::new();
            writer.seal(
                FrameType::Stream,
                2 * i + 1,
                &encode_stream(true, 0, b"GET"),
                &mut frame,
            );
            if writer.half.write_all(&frame).await.is_err() {
                return;
            }
        }
        // Hold the transport open (unread) until the test stops the flood.
        std::future::pending::<()>().await;
    });
    let during = under_flood(&client, &flooded, flood).await;

    assert!(
        matches!(
            flooded.error(),
            Some(HtxError::CutOff {
                code: CloseCode::TooManyStreams,
                ..
            })
        ),
        "{:?}",
        flooded.error()
    );
    assert_eq!(reader.close_code().await, CloseCode::TooManyStreams);
    let peak = flooded.queued_peak();
    eprintln!("stream flood: at most {peak} bytes queued");
    assert!(
        peak <= config.queue_bound(),
        "{peak} bytes queued (bound {})",
        config.queue_bound()
    );
    assert_latency_kept(baseline, during);
    assert!(!client.is_closed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_handshake_is_cut_off_at_its_deadline() {
    let config = Config {
        handshake_timeout: Duration::from_millis(500),
        ..flood_config()
    };
    let mut server = Server::start(config.clone(), 16).await;
    let (client, baseline) = honest_client(&mut server, config.clone()).await;
    // Twenty peers that open a connection and stall: half send nothing, half half a message.
    let mut stalled = Vec::new();
    for i in 0..20 {
        let mut socket = TcpStream::connect(server.addr).await.unwrap();
        if i % 2 == 1 {
            socket.write_all(&[0, 48, 1, 2, 3]).await.unwrap();
        }
        stalled.push(socket);
    }
    let during = round_trips(&client, 21).await;
    let mut refused = 0;
    while refused < stalled.len() {
        match tokio::time::timeout(Duration::from_secs(30), server.accepted.recv())
            .await
            .expect("a stalled handshake outlived its deadline")
            .unwrap()
        {
            Err(HtxError::CutOff {
                code: CloseCode::HandshakeTimeout,
                ..
            }) => refused += 1,
            // The honest client.
            Ok(_) => {}
            Err(other) => panic!("unexpected: {other}"),
        }
    }
    // Each stalled peer's transport was dropped, and the server holds no handshake state.
    for mut socket in stalled {
        let mut buf = [0u8; 16];
        let n = tokio::time::timeout(Duration::from_secs(10), socket.read(&mut buf))
            .await
            .expect("the stalled connection was left open")
            .unwrap_or(0);
        assert_eq!(n, 0);
    }
    assert_eq!(server.handshaking.load(Ordering::SeqCst), 0);
    assert_latency_kept(baseline, during);
    assert!(!client.is_closed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_flooding_key_updates_is_cut_off() {
    let config = flood_config();
    let mut server = Server::start(config, 16).await;
    let mut peer = RawPeer::connect(&server).await;
    let flooded = server.connection_of(&peer.key.public).await;
    let mut batch = Vec::new();
    for _ in 0..4 {
        peer.writer.seal(FrameType::KeyUpdate, 0, &[], &mut batch);
        peer.writer.sealer.rekey();
    }
    peer.writer.half.write_all(&batch).await.unwrap();
    assert_eq!(peer.reader.close_code().await, CloseCode::KeyUpdateFlood);
    assert!(matches!(
        flooded.error(),
        Some(HtxError::CutOff {
            code: CloseCode::KeyUpdateFlood,
            ..
        })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credit_for_data_never_sent_is_cut_off_as_a_flow_control_violation() {
    let config = flood_config();
    let mut server = Server::start(config, 16).await;
    let mut peer = RawPeer::connect(&server).await;
    let flooded = server.connection_of(&peer.key.public).await;
    let mut batch = Vec::new();
    let mut credit = vec![0u8];
    credit.extend_from_slice(&(1u32 << 30).to_be_bytes());
    peer.writer
        .seal(FrameType::WindowUpdate, 0, &credit, &mut batch);
    peer.writer.half.write_all(&batch).await.unwrap();
    assert_eq!(peer.reader.close_code().await, CloseCode::FlowControl);
    assert!(flooded.is_closed());
}
