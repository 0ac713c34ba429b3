//! The router's attach endpoint: hosts behind NAT dial out to it and keep an HTX connection open;
//! the gateway sends visitors' requests back down that connection, and two attached hosts meet
//! here for a splice (wire format in [`fog_htx::attach`]).
//!
//! A host is admitted only if the control plane says its hello's device id announced exactly the
//! Noise key the host proved in the handshake (a device's key is derived from its identity and
//! sent in heartbeats it signs): an unknown key, or a host claiming another device's id, gets
//! its connection closed with a CLOSE frame that says why. Handshakes are bounded in time and
//! number, so half-open connections cannot pile up.
//!
//! A splice is made only between devices an assignment pairs (both hold replicas of one app,
//! as the control plane says), and the router copies ciphertext only: the two hosts run Noise
//! end to end inside the stream.
//!
//! The router PINGs every attached host each second and reports the RTTs to the control plane
//! every [`REPORT_EVERY`] (`POST /v1/attach/rtts`): placement's latency is what routers measure,
//! not what devices say of themselves.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fog_htx::CloseCode;
use fog_htx::attach::{
    ATTACH_PROLOGUE, SPLICE_STREAM, read_hello, read_splice_device, read_tag, write_splice_answer,
    write_splice_header,
};
use fog_htx::conn::{self, Connection, HtxStream};
use fog_htx::dial::data_plane_config;
use fog_htx::handshake::StaticKey;
use fog_proto::api::{AttachInfo, DeviceInfo, DeviceRtt, RouterRtts};
use fog_proto::auth::Identity;
use hkdf::Hkdf;
use sha2::Sha256;
use tokio::net::TcpListener;

use crate::Gateway;
use crate::error::{ControlError, SpliceError};

/// Longest a host may take to finish its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Most handshakes in progress at once; more connections wait in the kernel's backlog.
const MAX_HANDSHAKES: usize = 256;
/// How often the router PINGs each attached host.
const PING_EVERY: Duration = Duration::from_secs(1);
/// How often the router reports the RTTs it measured to the control plane.
pub const REPORT_EVERY: Duration = Duration::from_secs(2);

/// A router's attach endpoint.
pub struct Attach {
    gateway: Arc<Gateway>,
    key: StaticKey,
    /// This router's id, as hosts report the links they hold.
    id: String,
    handshakes: Arc<tokio::sync::Semaphore>,
    /// The last PING RTT to each attached device, µs.
    rtts: Mutex<HashMap<String, u64>>,
    /// Connections accepted so far: each one's number ranks it among its device's connections
    /// ([`fog_htx::dial::Dialer::attach`]).
    accepted: AtomicU64,
}

impl std::fmt::Debug for Attach {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Attach")
            .field("id", &self.id)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

/// Why a host was not admitted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The hello is not a device id.
    #[error("malformed hello: {0}")]
    Hello(String),
    /// The control plane knows no such device.
    #[error("no device {0} is registered with the control plane")]
    Unknown(String),
    /// The device announced no key yet (it has not heartbeated since the control plane
    /// started).
    #[error("device {0} has announced no HTX key yet")]
    NoKey(String),
    /// The key the host proved is not the one the device announced.
    #[error("this key is not the one device {0} announced: wrong key, or another device's id")]
    WrongKey(String),
    /// The control plane could not be asked.
    #[error("cannot check device {device} with the control plane: {source}")]
    Control {
        /// The device.
        device: String,
        /// What failed.
        source: ControlError,
    },
}

impl Attach {
    /// An attach endpoint for `gateway` with a key derived from the router's identity.
    pub fn new(gateway: Arc<Gateway>, identity: &Identity) -> Arc<Attach> {
        Arc::new(Attach {
            gateway,
            key: attach_key(identity),
            id: fog_proto::auth::device_id(&identity.public_hex()),
            handshakes: Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES)),
            rtts: Mutex::new(HashMap::new()),
            accepted: AtomicU64::new(0),
        })
    }

    /// This router's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// What to register with the control plane for an endpoint reachable at `addr`.
    pub fn info(&self, addr: &str) -> AttachInfo {
        AttachInfo {
            addr: addr.to_string(),
            key: hex::encode(self.key.public),
        }
    }

    /// Check that `device` announced `key`.
    async fn admit(&self, device: &str, key: &[u8; 32]) -> Result<(), Refusal> {
        let (status, body) = self
            .gateway
            .control_get(&format!("/v1/devices/{device}"))
            .await
            .map_err(|source| Refusal::Control {
                device: device.to_string(),
                source,
            })?;
        let path = format!("/v1/devices/{device}");
        match status.as_u16() {
            200 => {}
            404 => return Err(Refusal::Unknown(device.to_string())),
            _ => {
                return Err(Refusal::Control {
                    device: device.to_string(),
                    source: ControlError::status(&path, status, &body),
                });
            }
        }
        let info: DeviceInfo = serde_json::from_slice(&body).map_err(|e| Refusal::Control {
            device: device.to_string(),
            source: ControlError::Malformed {
                path,
                reason: e.to_string(),
            },
        })?;
        let announced = info.htx.ok_or_else(|| Refusal::NoKey(device.to_string()))?;
        if announced.key.eq_ignore_ascii_case(&hex::encode(key)) {
            Ok(())
        } else {
            Err(Refusal::WrongKey(device.to_string()))
        }
    }

    /// Serve one host's attached connection, the `accepted`th, until it ends.
    async fn run(self: Arc<Self>, device: String, connection: Connection, accepted: u64) {
        if connection.is_closed() {
            // The host gave up on it while the control plane was asked (it may already hold a
            // newer one, which this must not displace: see `Dialer::attach`).
            tracing::debug!(device, "host's connection ended before it was admitted");
            return;
        }
        self.gateway
            .dialer()
            .attach(&device, connection.clone(), accepted);
        tracing::info!(device, "host attached");
        let pinger = tokio::spawn(self.clone().ping(device.clone(), connection.clone()));
        while let Some(stream) = connection.accept().await {
            let this = self.clone();
            let device = device.clone();
            tokio::spawn(async move {
                if let Err(reason) = this.stream(&device, stream).await {
                    tracing::debug!(device, "attached stream: {reason}");
                }
            });
        }
        pinger.abort();
        self.gateway.dialer().detach(&device, &connection);
        if self.gateway.dialer().attached(&device).is_none() {
            self.rtts.lock().expect("rtts lock").remove(&device);
        }
        tracing::info!(device, "host detached: {:?}", connection.error());
    }

    /// PING `device` every [`PING_EVERY`] and keep the RTT for the control plane (and the
    /// metrics, when on); a missed echo closes the connection, which ends this.
    async fn ping(self: Arc<Self>, device: String, connection: Connection) {
        loop {
            match connection.ping().await {
                Ok(rtt) => {
                    if let Some(metrics) = self.gateway.metrics() {
                        metrics.attached_rtt.observe(rtt.as_secs_f64());
                    }
                    let us = (rtt.as_micros() as u64).max(1);
                    self.rtts
                        .lock()
                        .expect("rtts lock")
                        .insert(device.clone(), us);
                }
                Err(_) => return,
            }
            tokio::time::sleep(PING_EVERY).await;
        }
    }

    /// Report the RTTs measured to attached hosts every [`REPORT_EVERY`] until `shutdown`
    /// resolves (signed with the router's identity; only routers the control plane trusts may).
    pub async fn run_rtt_reports(
        self: Arc<Self>,
        identity: Identity,
        shutdown: impl Future<Output = ()>,
    ) {
        tokio::pin!(shutdown);
        let mut last_error: Option<crate::error::ControlError> = None;
        loop {
            tokio::select! {
                () = &mut shutdown => return,
                () = tokio::time::sleep(REPORT_EVERY) => {}
            }
            let links: Vec<DeviceRtt> = self
                .rtts
                .lock()
                .expect("rtts lock")
                .iter()
                .take(fog_proto::api::MAX_ROUTER_RTTS)
                .map(|(device, &rtt_us)| DeviceRtt {
                    device: device.clone(),
                    rtt_us,
                })
                .collect();
            if links.is_empty() {
                continue;
            }
            let body =
                serde_json::to_vec(&RouterRtts { links }).expect("API types always serialise");
            match self
                .gateway
                .post_signed("/v1/attach/rtts", body, &identity)
                .await
            {
                Ok(_) => last_error = None,
                Err(err) => {
                    if last_error.as_ref() != Some(&err) {
                        tracing::warn!("cannot report attach RTTs: {err}");
                    }
                    last_error = Some(err);
                }
            }
        }
    }

    /// A stream the host opened: a splice request.
    async fn stream(&self, from: &str, mut stream: HtxStream) -> Result<(), SpliceError> {
        let tag = read_tag(&mut stream).await?;
        if tag != SPLICE_STREAM {
            return Err(SpliceError::Tag(tag));
        }
        let to = read_splice_device(&mut stream).await?;
        let mut other = match self.splice_to(from, &to).await {
            Ok(other) => other,
            Err(refusal) => {
                tracing::info!(from, to, "splice refused: {refusal}");
                let _ = write_splice_answer(&mut stream, Some(&refusal.to_string())).await;
                let _ = tokio::io::AsyncWriteExt::shutdown(&mut stream).await;
                return Ok(());
            }
        };
        write_splice_answer(&mut stream, None).await?;
        // Ciphertext both ways until both sides finish.
        tokio::io::copy_bidirectional(&mut stream, &mut other)
            .await
            .map_err(|e| SpliceError::Ended {
                from: from.to_string(),
                to: to.clone(),
                reason: e.to_string(),
            })?;
        Ok(())
    }

    /// A stream on `to`'s attached connection, announced as a splice from `from`, if an
    /// assignment pairs them.
    async fn splice_to(&self, from: &str, to: &str) -> Result<HtxStream, SpliceError> {
        if from == to {
            return Err(SpliceError::ToItself);
        }
        let (status, body) = self
            .gateway
            .control_get(&format!("/v1/devices/{from}/peers/{to}"))
            .await
            .map_err(SpliceError::Control)?;
        if !status.is_success() {
            let reason = serde_json::from_slice::<fog_proto::api::ErrorBody>(&body)
                .map_or_else(|_| String::from_utf8_lossy(&body).into_owned(), |e| e.error);
            return Err(SpliceError::NotPaired(reason));
        }
        let connection = self
            .gateway
            .dialer()
            .attached(to)
            .ok_or_else(|| SpliceError::NotAttached(to.to_string()))?;
        let mut other = connection.open()?;
        write_splice_header(&mut other, from).await?;
        Ok(other)
    }
}

/// The router's attach key: derived from its identity, so it survives restarts.
pub fn attach_key(identity: &Identity) -> StaticKey {
    let mut private = [0u8; 32];
    Hkdf::<Sha256>::new(Some(b"fog-attach-v1"), &identity.secret_bytes())
        .expand(b"noise", &mut private)
        .expect("32 bytes is a valid HKDF output");
    StaticKey::from_private(private)
}

/// Accept hosts' attach connections on `listener` until `shutdown` resolves.
pub async fn serve(listener: TcpListener, attach: Arc<Attach>, shutdown: impl Future<Output = ()>) {
    tokio::pin!(shutdown);
    loop {
        // Take a handshake slot before accepting: a flood of half-open connections waits in
        // the backlog instead of holding memory here.
        let permit = tokio::select! {
            () = &mut shutdown => return,
            permit = attach.handshakes.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return,
            },
        };
        let (socket, peer) = tokio::select! {
            () = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    tracing::warn!("attach accept failed: {err}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = socket.set_nodelay(true);
        // Numbered in the order hosts' connections arrive, before handshakes and admissions
        // (which may finish in any order) run.
        let accepted = attach.accepted.fetch_add(1, Ordering::Relaxed);
        let attach = attach.clone();
        tokio::spawn(async move {
            let handshake = tokio::time::timeout(
                HANDSHAKE_TIMEOUT,
                conn::accept(socket, &attach.key, ATTACH_PROLOGUE, data_plane_config()),
            )
            .await;
            drop(permit);
            let (connection, host) = match handshake {
                Ok(Ok(accepted)) => accepted,
                Ok(Err(err)) => {
                    tracing::debug!(%peer, "attach handshake failed: {err}");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "attach handshake timed out");
                    return;
                }
            };
            let admitted = match read_hello(&host.hello) {
                Ok(device) => attach.admit(&device, &host.key).await.map(|()| device),
                Err(err) => Err(Refusal::Hello(err.to_string())),
            };
            match admitted {
                Ok(device) => attach.run(device, connection, accepted).await,
                Err(refusal) => {
                    tracing::info!(%peer, "host refused: {refusal}");
                    connection.close_with(CloseCode::Refused, &refusal.to_string());
                }
            }
        });
    }
}

/// Register the attach endpoint (`info`) with the control plane every 10 s until `shutdown`
/// resolves, so hosts learn where to dial; a refusal (an untrusted router key) is logged once
/// per change.
pub async fn run_registration(
    gateway: Arc<Gateway>,
    info: AttachInfo,
    identity: Identity,
    shutdown: impl Future<Output = ()>,
) {
    let body = serde_json::to_vec(&info).expect("API types always serialise");
    gateway
        .register_every("/v1/attach", body, identity, "attach endpoint", shutdown)
        .await;
}
