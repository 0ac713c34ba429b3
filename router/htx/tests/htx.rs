//! HTX connections over real loopback TCP: data integrity, many streams, flow control, key
//! updates, pings, and failures that close the connection cleanly.

#[path = "htx/flood.rs"]
mod flood;

use std::time::Duration;

use fog_htx::HtxError;
use fog_htx::conn::{self, Config, Connection};
use fog_htx::handshake::StaticKey;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A connected (client, server) pair over loopback TCP.
async fn pair(config: Config) -> (Connection, Connection) {
    let server_key = StaticKey::generate();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (key, server_config) = (server_key.clone(), config.clone());
    let server = tokio::spawn(async move {
        let (socket, _) = listener.accept().await.unwrap();
        socket.set_nodelay(true).unwrap();
        conn::accept(socket, &key, b"fog-test", server_config)
            .await
            .unwrap()
            .0
    });
    let socket = TcpStream::connect(addr).await.unwrap();
    socket.set_nodelay(true).unwrap();
    let client = conn::connect(
        socket,
        &StaticKey::generate(),
        &server_key.public,
        b"fog-test",
        config,
    )
    .await
    .unwrap();
    (client, server.await.unwrap())
}

/// Serve every stream by echoing its bytes reversed.
fn echo(server: Connection) {
    tokio::spawn(async move {
        while let Some(mut stream) = server.accept().await {
            tokio::spawn(async move {
                let mut data = stream.read_to_end().await.unwrap();
                data.reverse();
                stream.write(&data).await.unwrap();
                stream.finish().await.unwrap();
            });
        }
    });
}

fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_carries_data_both_ways_intact() {
    let (client, server) = pair(Config::default()).await;
    echo(server);
    let data = pattern(300_000, 7);
    let mut stream = client.open().unwrap();
    stream.write(&data).await.unwrap();
    assert_eq!(stream.id() % 2, 1, "client streams are odd");
    stream.finish().await.unwrap();
    let mut back = stream.read_to_end().await.unwrap();
    back.reverse();
    assert_eq!(back, data);
    assert!(client.ping().await.unwrap() < Duration::from_secs(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_streams_complete() {
    let (client, server) = pair(Config::default()).await;
    echo(server);
    let mut tasks = Vec::new();
    for i in 0..1000u32 {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let data = pattern(1000 + (i as usize % 7) * 300, i as u8);
            let mut stream = client.open().unwrap();
            stream.write(&data).await.unwrap();
            stream.finish().await.unwrap();
            let mut back = stream.read_to_end().await.unwrap();
            back.reverse();
            assert_eq!(back, data, "stream {}", stream.id());
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert!(!client.is_closed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flow_control_never_lets_a_sender_exceed_the_window() {
    let config = Config::default();
    let window = config.stream_window as u64;
    let (client, server) = pair(config).await;
    let mut stream = client.open().unwrap();
    let writer = tokio::spawn(async move {
        stream.write(&pattern(1 << 20, 1)).await.unwrap();
        stream.finish().await.unwrap();
        stream
    });
    // The server does not read yet: the writer must stall at the window.
    let mut incoming = server.accept().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !writer.is_finished(),
        "a 1 MiB write finished against a {window}-byte window"
    );
    let mut received = 0u64;
    while let Some(chunk) = incoming.read().await.unwrap() {
        received += chunk.len() as u64;
    }
    assert_eq!(received, 1 << 20);
    let stream = writer.await.unwrap();
    assert_eq!(stream.sent(), 1 << 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_updates_mid_stream_lose_nothing() {
    let config = Config {
        rekey_frames: 8,
        ..Config::default()
    };
    let (client, server) = pair(config).await;
    echo(server.clone());
    let data = pattern(500_000, 3);
    let mut stream = client.open().unwrap();
    stream.write(&data).await.unwrap();
    stream.finish().await.unwrap();
    let mut back = stream.read_to_end().await.unwrap();
    back.reverse();
    assert_eq!(back, data);
    let (sent, _) = client.key_updates();
    let (_, received) = server.key_updates();
    assert!(sent >= 5, "only {sent} key updates");
    assert_eq!(sent, received);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_responder_key_fails_closed() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (socket, _) = listener.accept().await.unwrap();
        conn::accept(
            socket,
            &StaticKey::generate(),
            b"fog-test",
            Config::default(),
        )
        .await
        .map(|_| ())
    });
    let socket = TcpStream::connect(addr).await.unwrap();
    let client = conn::connect(
        socket,
        &StaticKey::generate(),
        &StaticKey::generate().public,
        b"fog-test",
        Config::default(),
    )
    .await;
    assert!(matches!(server.await.unwrap(), Err(HtxError::Handshake(_))));
    assert!(client.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_byte_on_the_wire_closes_the_connection_with_a_clear_error() {
    // client <-> proxy (flips one bit well after the handshake) <-> server
    let server_key = StaticKey::generate();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server_addr = listener.local_addr().unwrap();
    let key = server_key.clone();
    let server = tokio::spawn(async move {
        let (socket, _) = listener.accept().await.unwrap();
        conn::accept(socket, &key, b"fog-test", Config::default())
            .await
            .unwrap()
            .0
    });
    let proxy = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy_addr = proxy.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut inbound, _) = proxy.accept().await.unwrap();
        let mut outbound = TcpStream::connect(server_addr).await.unwrap();
        let (mut ir, mut iw) = inbound.split();
        let (mut or, mut ow) = outbound.split();
        let upstream = async {
            let mut seen = 0usize;
            let mut buf = [0u8; 4096];
            loop {
                let n = ir.read(&mut buf).await.unwrap_or(0);
                if n == 0 {
                    break;
                }
                for b in &mut buf[..n] {
                    if seen == 2000 {
                        *b ^= 0x40;
                    }
                    seen += 1;
                }
                if ow.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
        };
        let downstream = async {
            let _ = tokio::io::copy(&mut or, &mut iw).await;
        };
        tokio::join!(upstream, downstream);
    });
    let socket = TcpStream::connect(proxy_addr).await.unwrap();
    let client = conn::connect(
        socket,
        &StaticKey::generate(),
        &server_key.public,
        b"fog-test",
        Config::default(),
    )
    .await
    .unwrap();
    let server = server.await.unwrap();
    let mut stream = client.open().unwrap();
    let _ = stream.write(&pattern(10_000, 9)).await;
    let _ = stream.finish().await;
    // The bad frame is refused: either before the stream surfaces or while reading it.
    if let Some(mut incoming) = server.accept().await {
        assert!(
            incoming.read_to_end().await.is_err(),
            "tampered data was delivered"
        );
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(server.is_closed());
    assert!(
        matches!(server.error(), Some(HtxError::Authentication { .. })),
        "{:?}",
        server.error()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_dropped_without_finishing_are_released_on_both_sides() {
    // Regression: a stream dropped before it sent FIN left the peer waiting for it forever, and
    // after ~4,000 requests a connection refused new streams ("too many open streams").
    let config = Config {
        max_streams: 64,
        ..Config::default()
    };
    let (client, server) = pair(config).await;
    let serving = server.clone();
    tokio::spawn(async move {
        while let Some(mut stream) = serving.accept().await {
            tokio::spawn(async move {
                // Answer as soon as the request arrives, without waiting for the client's FIN.
                if let Ok(Some(request)) = stream.read().await {
                    let _ = stream.write(&request).await;
                    let _ = stream.finish().await;
                    let _ = stream.read_to_end().await;
                }
            });
        }
    });
    for i in 0..1000u32 {
        let mut stream = client.open().unwrap();
        stream.write(&i.to_be_bytes()).await.unwrap();
        let answer = stream.read().await.unwrap().unwrap();
        assert_eq!(answer, i.to_be_bytes());
        drop(stream); // never finished by this side
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!server.is_closed(), "{:?}", server.error());
    assert_eq!(server.open_streams(), 0);
    assert_eq!(client.open_streams(), 0);
}
