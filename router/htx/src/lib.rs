//! Betanet's HTX inner protocol, as Fog's transport between routers and hosts and for visitors'
//! Betanet connections.
//!
//! - [`keys`]: the Betanet 1.2 key schedule (`HKDF-Expand-Label` with the `"betanet "` prefix),
//!   reproducing the spec's vectors byte for byte;
//! - [`frame`]: the 1.2 frame layout (`Len u24 | Type u8 | StreamID u32 | AAD u16 | ciphertext |
//!   tag`, header as associated data, ChaCha20-Poly1305, nonce = salt XOR counter), with limits
//!   checked before anything is trusted;
//! - [`handshake`]: `Noise_XK_25519_ChaChaPoly_SHA256` with the `snow` crate (the responder's
//!   static key is known in advance). The 1.2 proposal's hand-written state machine is not
//!   standard XK; Fog uses standard Noise and derives the 1.2 traffic secrets from the Noise
//!   split keys and handshake hash (see [`handshake`]);
//! - [`conn`]: a connection of many flow-controlled streams (odd ids for the client, even for
//!   the server), PING with a timeout, KEY_UPDATE on frame / byte / time thresholds, CLOSE;
//! - [`names`]: self-certifying `betanet://` and `bn1:` names;
//! - [`tickets`]: access tickets (the 1.1 formula) with replay rejection;
//! - [`dial`]: hyper's pooled HTTP/1.1 client over HTX streams;
//! - [`mix`]: paths through 0, 2 or ≥ 3 relays, and the relay itself;
//! - [`tls`]: the optional outer TLS 1.3 session, its exporter bound into the Noise prologue;
//! - [`attach`]: hosts behind NAT dialling out to routers, and splices between two such hosts.
//!
//! Where the 1.1 and 1.2 documents disagree, Fog follows 1.2's frame layout and key schedule,
//! which come with test vectors.

#![deny(missing_docs)]

pub mod attach;
pub mod conn;
pub mod dial;
pub mod frame;
pub mod handshake;
pub mod keys;
pub mod mix;
pub mod names;
pub mod tickets;
pub mod tls;

/// Everything that can go wrong on an HTX connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HtxError {
    /// A frame failed authentication: tampered, replayed, reordered or under the wrong key.
    #[error("frame {counter} failed authentication (tampered, replayed, reordered or wrong key)")]
    Authentication {
        /// The receive counter the frame was expected at.
        counter: u64,
    },
    /// A frame is larger than allowed.
    #[error("frame of {len} bytes exceeds the limit of {limit}")]
    Oversized {
        /// Its length field.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// A frame or message is shorter than its fields.
    #[error("truncated {what}: {len} bytes")]
    Truncated {
        /// What was being parsed.
        what: &'static str,
        /// How many bytes there were.
        len: usize,
    },
    /// A field holds a value the protocol does not allow.
    #[error("malformed {what}: {reason}")]
    Malformed {
        /// What was being parsed.
        what: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The Noise handshake failed (wrong responder key, tampered message, ...).
    #[error("handshake failed: {0}")]
    Handshake(String),
    /// The transport failed.
    #[error("connection failed: {0}")]
    Io(String),
    /// The peer closed the connection or stream.
    #[error("closed by the peer: {0}")]
    Closed(String),
    /// The peer refused what was asked (a splice, an attachment), saying why.
    #[error("refused: {0}")]
    Refused(String),
}
