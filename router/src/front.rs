//! The visitor-facing Betanet front: visitors open HTX connections (Noise XK to the front's key,
//! which they learn from a descriptor signed by the app's own key) and send HTTP/1.1 on its
//! streams; each connection is bound to one app and carries an access ticket.
//!
//! The initiator's last handshake message carries the hello, encrypted to the front:
//! `version u8 (1) | app id (32 bytes: sha256 of the app's key) | ticket (32 bytes)`. The ticket
//! is Betanet 1.1's: `HKDF(X25519(client key, ticket key), SHA-256("betanet-ticket-v1" ‖ keyID
//! ‖ u64be(hour)))` with keyID = the ticket public key, and the client key = the visitor's
//! Noise static key (which the handshake proves). A missing, wrong or replayed ticket, or an
//! app this router does not route, closes the connection with a CLOSE frame that says why.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use fog_htx::CloseCode;
use fog_htx::conn::{self, Config};
use fog_htx::handshake::StaticKey;
use fog_htx::tickets::TicketVerifier;
use fog_proto::api::FrontInfo;
use fog_proto::auth::Identity;
use hkdf::Hkdf;
use sha2::Sha256;
use tokio::net::TcpListener;

use crate::Gateway;
use crate::error::VisitorRefusal;

/// Noise prologue of visitor connections.
pub const FRONT_PROLOGUE: &[u8] = b"fog-betanet-front-v1";
/// Version byte of the hello.
pub const HELLO_VERSION: u8 = 1;
/// Length of the hello.
pub const HELLO_LEN: usize = 1 + 32 + 32;

/// The hello a visitor sends for the app with Betanet id `app_id`.
pub fn hello(app_id: &[u8; 32], ticket: &[u8; 32]) -> Vec<u8> {
    let mut hello = Vec::with_capacity(HELLO_LEN);
    hello.push(HELLO_VERSION);
    hello.extend_from_slice(app_id);
    hello.extend_from_slice(ticket);
    hello
}

/// Windows of visitor connections: the spec's defaults would cap one page at 64 KiB in
/// flight; a few MiB let an ordinary page arrive in one round trip.
/// A visitor may hold 256 requests open at once (as HTTP/2 servers commonly allow); one more
/// cuts the connection off.
pub fn visitor_config() -> Config {
    Config {
        stream_window: 1 << 20,
        connection_window: 4 << 20,
        max_streams: 256,
        ..Config::default()
    }
}

/// A router's Betanet front.
pub struct Front {
    gateway: Arc<Gateway>,
    /// The outer TLS layer, when the front uses one.
    tls: Option<fog_htx::tls::Server>,
    key: StaticKey,
    tickets: Mutex<TicketVerifier>,
    ticket_public: [u8; 32],
}

impl std::fmt::Debug for Front {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Front")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl Front {
    /// A front for `gateway` with keys derived from the router's identity; with `tls`, HTX runs
    /// inside TLS 1.3 (a fresh self-signed certificate; the exporter binds it to Noise).
    pub fn new(
        gateway: Arc<Gateway>,
        identity: &Identity,
        tls: bool,
    ) -> Result<Arc<Front>, fog_htx::HtxError> {
        let derive = |label: &[u8]| {
            let mut key = [0u8; 32];
            Hkdf::<Sha256>::new(Some(b"fog-betanet-front-v1"), &identity.secret_bytes())
                .expand(label, &mut key)
                .expect("32 bytes is a valid HKDF output");
            key
        };
        let key = StaticKey::from_private(derive(b"noise"));
        let ticket_private = derive(b"ticket");
        let ticket_public = StaticKey::from_private(ticket_private).public;
        let tls = if tls {
            Some(fog_htx::tls::Server::new("betanet.invalid")?)
        } else {
            None
        };
        Ok(Arc::new(Front {
            gateway,
            tls,
            key,
            tickets: Mutex::new(TicketVerifier::new(ticket_private, &ticket_public)),
            ticket_public,
        }))
    }

    /// What to register with the control plane for a front reachable at `addr`.
    pub fn info(&self, addr: &str) -> FrontInfo {
        FrontInfo {
            addr: addr.to_string(),
            key: hex::encode(self.key.public),
            ticket_key: hex::encode(self.ticket_public),
            tls: self.tls.is_some(),
        }
    }

    /// Check a hello from the visitor with static key `client`: the app it names.
    fn admit(&self, client: &[u8; 32], hello: &[u8]) -> Result<String, VisitorRefusal> {
        if hello.len() != HELLO_LEN || hello[0] != HELLO_VERSION {
            return Err(VisitorRefusal::Hello {
                expected_len: HELLO_LEN,
                version: HELLO_VERSION,
            });
        }
        let app_id: [u8; 32] = hello[1..33].try_into().expect("32 bytes");
        let ticket: [u8; 32] = hello[33..].try_into().expect("32 bytes");
        self.tickets
            .lock()
            .expect("tickets lock")
            .check(client, &ticket, fog_proto::auth::now_s())
            .map_err(VisitorRefusal::Ticket)?;
        self.gateway
            .app_by_betanet_id(&hex::encode(app_id))
            .ok_or(VisitorRefusal::UnknownApp)
    }
}

/// Accept visitors' HTX connections on `listener` until `shutdown` resolves.
pub async fn serve(listener: TcpListener, front: Arc<Front>, shutdown: impl Future<Output = ()>) {
    fog_net::accept_each(&listener, shutdown, |socket, peer_addr| {
        // Requests are limited per address that connected (a visitor, or the last relay of its
        // mix path).
        let peer_ip = peer_addr.ip();
        let front = front.clone();
        tokio::spawn(async move {
            let handshake = tokio::time::timeout(Duration::from_secs(10), async {
                match &front.tls {
                    None => {
                        conn::accept(socket, &front.key, FRONT_PROLOGUE, visitor_config()).await
                    }
                    Some(tls) => {
                        let (stream, exporter) = tls.accept(socket).await?;
                        let prologue = fog_htx::tls::bound_prologue(FRONT_PROLOGUE, &exporter);
                        conn::accept(stream, &front.key, &prologue, visitor_config()).await
                    }
                }
            });
            let (connection, peer) = match handshake.await {
                Ok(Ok(accepted)) => accepted,
                Ok(Err(err)) => {
                    tracing::debug!("visitor handshake failed: {err}");
                    return;
                }
                Err(_) => return,
            };
            let app = match front.admit(&peer.key, &peer.hello) {
                Ok(app) => app,
                Err(refusal) => {
                    tracing::info!("visitor refused: {refusal}");
                    connection.close_with(CloseCode::Refused, &refusal.to_string());
                    return;
                }
            };
            while let Some(stream) = connection.accept().await {
                tokio::spawn(
                    front
                        .gateway
                        .clone()
                        .serve_app(stream, app.clone(), Some(peer_ip)),
                );
            }
        });
    })
    .await;
}

/// Register the front (`info`) with the control plane every 10 s until `shutdown` resolves, so
/// descriptors list it; a refusal (an untrusted router key) is logged once per change.
pub async fn run_registration(
    gateway: Arc<Gateway>,
    info: FrontInfo,
    identity: Identity,
    shutdown: impl Future<Output = ()>,
) {
    let body = serde_json::to_vec(&info).expect("API types always serialise");
    gateway
        .register_every("/v1/fronts", body, identity, "Betanet front", shutdown)
        .await;
}
