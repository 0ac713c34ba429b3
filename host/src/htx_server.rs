//! The host's HTX (Betanet) data plane: routers (and peers) connect with Noise XK to the
//! device's static key and send HTTP/1.1 requests on HTX streams; each stream is served by the
//! app table. The listener is for hosts that accept connections (`fog host --listen`); the
//! streams of attached connections ([`crate::attach`]) are served the same way.

use std::sync::Arc;

use fog_htx::conn::{self, Connection};
use fog_htx::dial::{DATA_PLANE_PROLOGUE, data_plane_config};
use fog_htx::handshake::StaticKey;
use hkdf::Hkdf;
use http_body_util::BodyExt;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use sha2::Sha256;
use tokio::net::TcpListener;

use crate::server::AppTable;

/// The device's Noise static key, derived from its identity secret.
pub fn static_key(identity_secret: &[u8; 32]) -> StaticKey {
    let mut private = [0u8; 32];
    Hkdf::<Sha256>::new(Some(b"fog-htx-static-v1"), identity_secret)
        .expand(b"x25519", &mut private)
        .expect("32 bytes is a valid HKDF output");
    StaticKey::from_private(private)
}

/// Accept HTX connections on `listener` and serve their streams until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    apps: Arc<AppTable>,
    key: StaticKey,
    shutdown: impl Future<Output = ()>,
) {
    fog_net::accept_each(&listener, shutdown, |socket, _| {
        let (apps, key) = (apps.clone(), key.clone());
        tokio::spawn(async move {
            // The same prologue and windows as the routers' and peers' side (`fog_htx::dial`).
            let (connection, peer) =
                match conn::accept(socket, &key, DATA_PLANE_PROLOGUE, data_plane_config()).await {
                    Ok(accepted) => accepted,
                    Err(err) => {
                        tracing::debug!("HTX handshake failed: {err}");
                        return;
                    }
                };
            serve_connection(connection, apps, peer.key, Serves::Everything).await;
        });
    })
    .await;
}

/// What a connection's streams may ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Serves {
    /// The apps and the internal state endpoints (for the peers the apps allow).
    Everything,
    /// Only the internal state endpoints: a peer spliced through a rendezvous.
    StateOnly,
}

/// Serve every stream the peer with Noise key `peer` opens on `connection` until it ends.
pub async fn serve_connection(
    connection: Connection,
    apps: Arc<AppTable>,
    peer: [u8; 32],
    serves: Serves,
) {
    while let Some(stream) = connection.accept().await {
        tokio::spawn(serve_stream(stream, apps.clone(), peer, serves));
    }
    tracing::debug!("HTX connection ended: {:?}", connection.error());
}

/// Serve one stream (or any byte pipe) from the peer with Noise key `peer` as a keep-alive
/// HTTP/1.1 connection.
pub async fn serve_stream<S>(stream: S, apps: Arc<AppTable>, peer: [u8; 32], serves: Serves)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |request: http::Request<hyper::body::Incoming>| {
        let apps = apps.clone();
        async move {
            // State transfer between devices, for the peers the app allows.
            if request.uri().path().starts_with(crate::peers::PREFIX) {
                return Ok::<_, std::convert::Infallible>(
                    crate::peers::serve(&apps, &peer, &request)
                        .await
                        .map(|b| b.map_err(|never| match never {}).boxed()),
                );
            }
            if serves == Serves::StateOnly {
                return Ok(crate::peers::refuse(
                    404,
                    "a spliced peer may only ask for app state\n",
                )
                .map(|b| b.map_err(|never| match never {}).boxed()));
            }
            Ok(apps.handle(request).await.map(BodyExt::boxed))
        }
    });
    // Each stream is one keep-alive HTTP/1.1 connection; the router may half-close its side once
    // a request is sent: keep answering.
    let _ = http1::Builder::new()
        .half_close(true)
        .serve_connection(TokioIo::new(stream), service)
        .await;
}
