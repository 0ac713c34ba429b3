//! HTX throughput: one loopback TCP connection, one stream, 1 KiB STREAM frames; frames/s and
//! MB/s end to end (sealed, written, read, opened, delivered), with large windows and with the
//! spec's default windows. The peer in the same run is the frame layer alone (seal + open in
//! memory, no I/O), the ceiling for the connection.
//!
//! Then the latency a relay hop adds: round trips of a small request over an HTX connection
//! dialled directly and through 1, 2 and 3 relays on loopback with no mix delay (the relays'
//! own cost: a Noise layer, frame sealing and a copy per hop); the direct path is the peer.
//!
//! `cargo bench -p fog-benches --bench htx`

use std::time::{Duration, Instant};

use fog_htx::conn::{self, Config};
use fog_htx::frame::{DEFAULT_MAX_FRAME, FrameType, Opener, Sealer, encode_stream};
use fog_htx::handshake::StaticKey;
use fog_htx::keys::DirectionKeys;
use fog_htx::mix::{self, Hop, Relay, RelayConfig};
use tokio::net::{TcpListener, TcpStream};

mod support;

const FRAMES: usize = 400_000;
const CHUNK: usize = 1024;

async fn connection_run(config: Config) -> f64 {
    let server_key = StaticKey::generate();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (key, server_config) = (server_key.clone(), config.clone());
    let receiver = tokio::spawn(async move {
        let (socket, _) = listener.accept().await.unwrap();
        let (server, _) = conn::accept(socket, &key, b"bench", server_config)
            .await
            .unwrap();
        let mut stream = server.accept().await.unwrap();
        let mut received = 0usize;
        while let Some(chunk) = stream.read().await.unwrap() {
            received += chunk.len();
        }
        received
    });
    let socket = TcpStream::connect(addr).await.unwrap();
    socket.set_nodelay(true).unwrap();
    let client = conn::connect(
        socket,
        &StaticKey::generate(),
        &server_key.public,
        b"bench",
        config,
    )
    .await
    .unwrap();
    let data = vec![0x5a; 1 << 20];
    let started = Instant::now();
    let mut stream = client.open().unwrap();
    let mut left = FRAMES * CHUNK;
    while left > 0 {
        let n = left.min(data.len());
        stream.write(&data[..n]).await.unwrap();
        left -= n;
    }
    stream.finish().await.unwrap();
    let received = receiver.await.unwrap();
    assert_eq!(received, FRAMES * CHUNK);
    started.elapsed().as_secs_f64()
}

fn frame_layer_run() -> f64 {
    let keys = DirectionKeys::from_secret([7; 32]);
    let mut sealer = Sealer::new(keys.clone());
    let mut opener = Opener::new(keys, DEFAULT_MAX_FRAME);
    let payload = encode_stream(false, 0, &[0x5a; CHUNK]);
    let mut buffer = Vec::with_capacity(2048);
    let started = Instant::now();
    for _ in 0..FRAMES {
        buffer.clear();
        sealer.seal(FrameType::Stream, 1, 0, &payload, &mut buffer);
        let frame = opener.open(&buffer).unwrap();
        assert_eq!(frame.payload.len(), payload.len());
    }
    started.elapsed().as_secs_f64()
}

/// Round trips (64 bytes there, 64 back, one stream each) over a connection through `hops`
/// relays: the median and p99 in microseconds.
async fn hop_latency(hops: usize, rounds: usize) -> (f64, f64) {
    let mut path = Vec::new();
    for _ in 0..hops {
        let key = StaticKey::generate();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(mix::serve_relay(
            listener,
            key.clone(),
            RelayConfig::default(),
            std::future::pending(),
        ));
        path.push(Hop {
            relay: Relay {
                addr,
                key: key.public,
            },
            delay: Duration::ZERO,
        });
    }
    let server_key = StaticKey::generate();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let key = server_key.clone();
    tokio::spawn(async move {
        let (socket, _) = listener.accept().await.unwrap();
        socket.set_nodelay(true).unwrap();
        let (server, _) = conn::accept(socket, &key, b"bench", Config::default())
            .await
            .unwrap();
        while let Some(mut stream) = server.accept().await {
            tokio::spawn(async move {
                let data = stream.read_to_end().await.unwrap();
                stream.write(&data).await.unwrap();
                stream.finish().await.unwrap();
            });
        }
    });
    let pipe = mix::dial(&path, &addr, Duration::from_secs(5))
        .await
        .unwrap();
    let client = conn::connect(
        pipe,
        &StaticKey::generate(),
        &server_key.public,
        b"bench",
        Config::default(),
    )
    .await
    .unwrap();
    let mut times = Vec::with_capacity(rounds);
    for i in 0..rounds + 50 {
        let started = Instant::now();
        let mut stream = client.open().unwrap();
        stream.write(&[0x42; 64]).await.unwrap();
        stream.finish().await.unwrap();
        assert_eq!(stream.read_to_end().await.unwrap().len(), 64);
        if i >= 50 {
            times.push(started.elapsed().as_secs_f64() * 1e6);
        }
    }
    times.sort_by(f64::total_cmp);
    (times[times.len() / 2], times[times.len() * 99 / 100])
}

fn main() {
    let tokio = support::runtime();
    let large = Config {
        stream_window: 16 << 20,
        connection_window: 16 << 20,
        max_chunk: CHUNK,
        ..Config::default()
    };
    let spec = Config {
        max_chunk: CHUNK,
        ..Config::default()
    };
    println!("| case | frames | seconds | frames/s | MB/s |");
    println!("|---|---|---|---|---|");
    let row = |label: &str, seconds: f64| {
        println!(
            "| {label} | {FRAMES} | {seconds:.2} | {:.0} | {:.1} |",
            FRAMES as f64 / seconds,
            (FRAMES * CHUNK) as f64 / seconds / 1e6
        );
    };
    row("frame layer only (seal + open, memory)", frame_layer_run());
    row(
        "connection, 16 MiB windows",
        tokio.block_on(connection_run(large)),
    );
    row(
        "connection, spec windows (32 KiB stream, 64 KiB connection)",
        tokio.block_on(connection_run(spec)),
    );

    println!();
    println!("| relay hops (no mix delay) | round-trip p50 µs | p99 µs | added per hop, p50 µs |");
    println!("|---|---|---|---|");
    let (direct, direct_p99) = tokio.block_on(hop_latency(0, 2000));
    println!("| 0 (direct) | {direct:.0} | {direct_p99:.0} | — |");
    for hops in 1..=3 {
        let (p50, p99) = tokio.block_on(hop_latency(hops, 2000));
        println!(
            "| {hops} | {p50:.0} | {p99:.0} | {:.0} |",
            (p50 - direct) / hops as f64
        );
    }
}
