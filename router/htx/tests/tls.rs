//! HTX inside TLS 1.3 over loopback: the exporter binds the two layers, so a middlebox that
//! terminates TLS (with any certificate) and relays the bytes breaks the Noise handshake.

use fog_htx::conn::{self, Config};
use fog_htx::handshake::StaticKey;
use fog_htx::tls;
use tokio::net::{TcpListener, TcpStream};

const PROLOGUE: &[u8] = b"fog-test";

/// An HTX-over-TLS server that echoes one stream; returns its address and key.
async fn server() -> (
    std::net::SocketAddr,
    StaticKey,
    tokio::task::JoinHandle<Result<(), String>>,
) {
    let key = StaticKey::generate();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let tls = tls::Server::new("fog.test").unwrap();
    let server_key = key.clone();
    let task = tokio::spawn(async move {
        let (socket, _) = listener.accept().await.unwrap();
        let (stream, exporter) = tls.accept(socket).await.map_err(|e| e.to_string())?;
        let (connection, _) = conn::accept(
            stream,
            &server_key,
            &tls::bound_prologue(PROLOGUE, &exporter),
            Config::default(),
        )
        .await
        .map_err(|e| e.to_string())?;
        let mut stream = connection.accept().await.ok_or("no stream")?;
        let data = stream.read_to_end().await.map_err(|e| e.to_string())?;
        stream.write(&data).await.map_err(|e| e.to_string())?;
        stream.finish().await.map_err(|e| e.to_string())?;
        // Let the echo reach the client before the connection goes.
        let _ = connection.ping().await;
        Ok(())
    });
    (addr, key, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn htx_runs_inside_tls_with_the_exporter_in_the_prologue() {
    let (addr, key, task) = server().await;
    let (stream, exporter) = tls::connect(TcpStream::connect(addr).await.unwrap())
        .await
        .unwrap();
    let connection = conn::connect(
        stream,
        &StaticKey::generate(),
        &key.public,
        &tls::bound_prologue(PROLOGUE, &exporter),
        Config::default(),
    )
    .await
    .unwrap();
    let mut stream = connection.open().unwrap();
    stream.write(b"inside two layers").await.unwrap();
    stream.finish().await.unwrap();
    assert_eq!(stream.read_to_end().await.unwrap(), b"inside two layers");
    task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_terminating_middlebox_breaks_the_noise_handshake() {
    let (addr, key, task) = server().await;
    // The middlebox: terminates the client's TLS with its own certificate, opens its own TLS to
    // the server, and copies plaintext both ways. TLS alone would not notice.
    let middle = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let middle_addr = middle.local_addr().unwrap();
    tokio::spawn(async move {
        let (socket, _) = middle.accept().await.unwrap();
        let (mut inbound, _) = tls::Server::new("fog.test")
            .unwrap()
            .accept(socket)
            .await
            .unwrap();
        let (mut outbound, _) = tls::connect(TcpStream::connect(addr).await.unwrap())
            .await
            .unwrap();
        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
    });
    let (stream, exporter) = tls::connect(TcpStream::connect(middle_addr).await.unwrap())
        .await
        .unwrap();
    let client = conn::connect(
        stream,
        &StaticKey::generate(),
        &key.public,
        &tls::bound_prologue(PROLOGUE, &exporter),
        Config::default(),
    )
    .await;
    let server = task.await.unwrap();
    assert!(server.is_err(), "the server accepted a relayed handshake");
    assert!(server.unwrap_err().contains("handshake"));
    // XK's initiator may finish before the responder refuses; it then learns at once.
    if let Ok(connection) = client {
        let mut stream = connection.open().unwrap();
        let _ = stream.write(b"x").await;
        assert!(stream.read_to_end().await.is_err());
    }
}
