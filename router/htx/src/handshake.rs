//! The inner handshake: `Noise_XK_25519_ChaChaPoly_SHA256` (snow), over any byte stream.
//!
//! Messages are sent with a 2-byte big-endian length. The initiator knows the responder's static
//! key in advance (for Fog: the host's or router's device key, learnt from the control plane), so
//! a wrong key fails closed at the second message. An outer TLS session, when there is one, is
//! bound by passing its exporter as the Noise prologue.
//!
//! The 1.2 key schedule needs an "exporter". Fog derives it from the Noise result as
//! `HKDF-Extract(salt = handshake hash, ikm = k1 || k2)` over Noise's two split keys — secret
//! and bound to the whole transcript — then runs the 1.2 schedule: `TS_c` for the initiator's
//! direction, `TS_s` for the responder's.

use hkdf::Hkdf;
use sha2::Sha256;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::HtxError;
use crate::keys::{DirectionKeys, initial_secret, traffic_secret};

/// The Noise protocol name.
pub const PATTERN: &str = "Noise_XK_25519_ChaChaPoly_SHA256";
/// Largest handshake message.
const MAX_MESSAGE: usize = 1024;

/// An X25519 static key pair for Noise.
#[derive(Clone)]
pub struct StaticKey {
    /// Private key.
    pub private: [u8; 32],
    /// Public key.
    pub public: [u8; 32],
}

impl std::fmt::Debug for StaticKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StaticKey")
            .field("public", &hex::encode(self.public))
            .finish()
    }
}

impl StaticKey {
    /// A new random key pair.
    pub fn generate() -> StaticKey {
        let keypair = snow::Builder::new(PATTERN.parse().expect("a valid pattern"))
            .generate_keypair()
            .expect("the operating system's random source");
        StaticKey {
            private: keypair.private.try_into().expect("32 bytes"),
            public: keypair.public.try_into().expect("32 bytes"),
        }
    }

    /// The key pair whose private key is `private` (e.g. derived from a device identity).
    pub fn from_private(private: [u8; 32]) -> StaticKey {
        let secret = x25519_dalek::StaticSecret::from(private);
        let public = x25519_dalek::PublicKey::from(&secret).to_bytes();
        StaticKey { private, public }
    }
}

/// The traffic keys both directions start with.
#[derive(Debug, Clone)]
pub struct SessionKeys {
    /// Keys for what this side sends.
    pub send: DirectionKeys,
    /// Keys for what this side receives.
    pub recv: DirectionKeys,
    /// The peer's static public key.
    pub remote_static: [u8; 32],
    /// What the initiator sent with its last handshake message (e.g. an access ticket);
    /// encrypted to the responder and bound to the handshake. Empty on the initiator's side.
    pub hello: Vec<u8>,
}

/// Largest hello an initiator may send.
pub const MAX_HELLO: usize = 512;

fn derive(state: &mut snow::HandshakeState, initiator: bool) -> Result<SessionKeys, HtxError> {
    let remote_static: [u8; 32] = state
        .get_remote_static()
        .and_then(|k| k.try_into().ok())
        .ok_or_else(|| HtxError::Handshake("peer static key missing".into()))?;
    let hash = state.get_handshake_hash().to_vec();
    let (k1, k2) = state.dangerously_get_raw_split();
    let mut ikm = [0u8; 64];
    ikm[..32].copy_from_slice(&k1);
    ikm[32..].copy_from_slice(&k2);
    let (exporter, _) = Hkdf::<Sha256>::extract(Some(&hash), &ikm);
    let k0 = initial_secret(&exporter);
    let client = DirectionKeys::from_secret(traffic_secret(&k0, "ts_c"));
    let server = DirectionKeys::from_secret(traffic_secret(&k0, "ts_s"));
    let (send, recv) = if initiator {
        (client, server)
    } else {
        (server, client)
    };
    Ok(SessionKeys {
        send,
        recv,
        remote_static,
        hello: Vec::new(),
    })
}

async fn send<S: AsyncWrite + Unpin>(io: &mut S, message: &[u8]) -> Result<(), HtxError> {
    let mut framed = Vec::with_capacity(2 + message.len());
    framed.extend_from_slice(&(message.len() as u16).to_be_bytes());
    framed.extend_from_slice(message);
    io.write_all(&framed)
        .await
        .map_err(|e| HtxError::Io(e.to_string()))?;
    io.flush().await.map_err(|e| HtxError::Io(e.to_string()))
}

async fn receive<S: AsyncRead + Unpin>(io: &mut S) -> Result<Vec<u8>, HtxError> {
    let mut len = [0u8; 2];
    io.read_exact(&mut len)
        .await
        .map_err(|e| HtxError::Io(e.to_string()))?;
    let len = u16::from_be_bytes(len) as usize;
    if len > MAX_MESSAGE {
        return Err(HtxError::Oversized {
            len,
            limit: MAX_MESSAGE,
        });
    }
    let mut message = vec![0u8; len];
    io.read_exact(&mut message)
        .await
        .map_err(|e| HtxError::Io(e.to_string()))?;
    Ok(message)
}

fn noise_error(e: snow::Error) -> HtxError {
    HtxError::Handshake(e.to_string())
}

/// Run the initiator's side against a responder whose static public key is `remote`, sending
/// `hello` (at most [`MAX_HELLO`] bytes) encrypted in the last message.
pub async fn initiate<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut S,
    local: &StaticKey,
    remote: &[u8; 32],
    prologue: &[u8],
    hello: &[u8],
) -> Result<SessionKeys, HtxError> {
    if hello.len() > MAX_HELLO {
        return Err(HtxError::Oversized {
            len: hello.len(),
            limit: MAX_HELLO,
        });
    }
    let mut state = snow::Builder::new(PATTERN.parse().expect("a valid pattern"))
        .local_private_key(&local.private)
        .and_then(|b| b.remote_public_key(remote))
        .and_then(|b| b.prologue(prologue))
        .and_then(|b| b.build_initiator())
        .map_err(noise_error)?;
    let mut buf = [0u8; MAX_MESSAGE];
    let mut payload = [0u8; MAX_MESSAGE];
    let n = state.write_message(&[], &mut buf).map_err(noise_error)?; // -> e, es
    send(io, &buf[..n]).await?;
    let message = receive(io).await?; // <- e, ee
    state
        .read_message(&message, &mut payload)
        .map_err(noise_error)?;
    let n = state.write_message(hello, &mut buf).map_err(noise_error)?; // -> s, se
    send(io, &buf[..n]).await?;
    derive(&mut state, true)
}

/// Run the responder's side with `local` as its static key.
pub async fn respond<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut S,
    local: &StaticKey,
    prologue: &[u8],
) -> Result<SessionKeys, HtxError> {
    let mut state = snow::Builder::new(PATTERN.parse().expect("a valid pattern"))
        .local_private_key(&local.private)
        .and_then(|b| b.prologue(prologue))
        .and_then(|b| b.build_responder())
        .map_err(noise_error)?;
    let mut buf = [0u8; MAX_MESSAGE];
    let mut payload = [0u8; MAX_MESSAGE];
    let message = receive(io).await?;
    state
        .read_message(&message, &mut payload)
        .map_err(noise_error)?;
    let n = state.write_message(&[], &mut buf).map_err(noise_error)?;
    send(io, &buf[..n]).await?;
    let message = receive(io).await?;
    let n = state
        .read_message(&message, &mut payload)
        .map_err(noise_error)?;
    if n > MAX_HELLO {
        return Err(HtxError::Oversized {
            len: n,
            limit: MAX_HELLO,
        });
    }
    let mut keys = derive(&mut state, false)?;
    keys.hello = payload[..n].to_vec();
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn both_sides_agree_and_learn_each_other() {
        let (server_key, client_key) = (StaticKey::generate(), StaticKey::generate());
        let (mut a, mut b) = tokio::io::duplex(4096);
        let server = {
            let key = server_key.clone();
            tokio::spawn(async move { respond(&mut b, &key, b"fog").await })
        };
        let client = initiate(&mut a, &client_key, &server_key.public, b"fog", b"ticket")
            .await
            .unwrap();
        let server = server.await.unwrap().unwrap();
        assert_eq!(server.hello, b"ticket");
        assert!(client.hello.is_empty());
        assert_eq!(client.send, server.recv);
        assert_eq!(client.recv, server.send);
        assert_ne!(client.send, client.recv);
        assert_eq!(server.remote_static, client_key.public);
        assert_eq!(client.remote_static, server_key.public);
    }

    #[tokio::test]
    async fn a_wrong_responder_key_or_prologue_fails_closed() {
        let server_key = StaticKey::generate();
        for (remote, prologue) in [
            (StaticKey::generate().public, &b"fog"[..]),
            (server_key.public, &b"other"[..]),
        ] {
            let (mut a, mut b) = tokio::io::duplex(4096);
            let key = server_key.clone();
            let server = tokio::spawn(async move { respond(&mut b, &key, b"fog").await });
            let client = initiate(&mut a, &StaticKey::generate(), &remote, prologue, &[]).await;
            let server = server.await.unwrap();
            assert!(
                client.is_err() || server.is_err(),
                "mismatched handshake succeeded"
            );
            assert!(server.is_err(), "the responder must refuse");
        }
    }

    #[test]
    fn public_keys_follow_from_private_keys() {
        let key = StaticKey::generate();
        assert_eq!(StaticKey::from_private(key.private).public, key.public);
    }
}
