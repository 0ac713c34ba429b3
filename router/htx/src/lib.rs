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
    /// The connection or stream ended: closed normally (by either side), or the transport ended.
    #[error("closed by the peer: {0}")]
    Closed(String),
    /// The peer closed the connection with a CLOSE whose code says why.
    #[error("closed by the peer ({code}): {reason}")]
    ClosedByPeer {
        /// Why.
        code: CloseCode,
        /// The peer's words.
        reason: String,
    },
    /// This side cut the peer off (a bound broken, a deadline passed, a refusal); the peer was
    /// sent a CLOSE with the code when keys existed to seal one.
    #[error("cut off ({code}): {reason}")]
    CutOff {
        /// Why.
        code: CloseCode,
        /// Details.
        reason: String,
    },
    /// The peer refused what was asked (a splice, an attachment), saying why.
    #[error("refused: {0}")]
    Refused(String),
}

impl HtxError {
    /// The code a CLOSE reporting this error carries.
    pub fn close_code(&self) -> CloseCode {
        match self {
            HtxError::Closed(_) => CloseCode::Normal,
            HtxError::ClosedByPeer { code, .. } | HtxError::CutOff { code, .. } => *code,
            _ => CloseCode::Protocol,
        }
    }
}

/// Why a connection was closed: the `code u16` of a connection CLOSE frame, so a peer (or a
/// test) acts on a type, never on the reason's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CloseCode {
    /// 0: an ordinary close (the reason is for people).
    Normal,
    /// 1: a frame broke the protocol (authentication, layout, parity).
    Protocol,
    /// 2: the peer sent PINGs faster than it read their echoes.
    PingFlood,
    /// 3: the peer held more streams open than allowed.
    TooManyStreams,
    /// 4: the peer stopped reading: control frames for it passed their bound.
    NotReading,
    /// 5: the peer sent KEY_UPDATEs far more often than the key schedule calls for.
    KeyUpdateFlood,
    /// 6: the peer sent beyond its credit, or returned credit for data it cannot have had.
    FlowControl,
    /// 7: the handshake did not complete in time (never on the wire: no keys exist yet).
    HandshakeTimeout,
    /// 8: a PING went unanswered.
    PingTimeout,
    /// 9: the peer was refused (admission, ticket, unknown name).
    Refused,
    /// A code this version does not know.
    Other(u16),
}

impl CloseCode {
    /// The wire value.
    pub fn code(self) -> u16 {
        match self {
            CloseCode::Normal => 0,
            CloseCode::Protocol => 1,
            CloseCode::PingFlood => 2,
            CloseCode::TooManyStreams => 3,
            CloseCode::NotReading => 4,
            CloseCode::KeyUpdateFlood => 5,
            CloseCode::FlowControl => 6,
            CloseCode::HandshakeTimeout => 7,
            CloseCode::PingTimeout => 8,
            CloseCode::Refused => 9,
            CloseCode::Other(code) => code,
        }
    }

    /// The code for a wire value.
    pub fn from_code(code: u16) -> CloseCode {
        match code {
            0 => CloseCode::Normal,
            1 => CloseCode::Protocol,
            2 => CloseCode::PingFlood,
            3 => CloseCode::TooManyStreams,
            4 => CloseCode::NotReading,
            5 => CloseCode::KeyUpdateFlood,
            6 => CloseCode::FlowControl,
            7 => CloseCode::HandshakeTimeout,
            8 => CloseCode::PingTimeout,
            9 => CloseCode::Refused,
            other => CloseCode::Other(other),
        }
    }
}

impl std::fmt::Display for CloseCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self {
            CloseCode::Normal => "normal",
            CloseCode::Protocol => "protocol violation",
            CloseCode::PingFlood => "ping flood",
            CloseCode::TooManyStreams => "too many streams",
            CloseCode::NotReading => "peer not reading",
            CloseCode::KeyUpdateFlood => "key update flood",
            CloseCode::FlowControl => "flow control violation",
            CloseCode::HandshakeTimeout => "handshake timeout",
            CloseCode::PingTimeout => "ping timeout",
            CloseCode::Refused => "refused",
            CloseCode::Other(code) => return write!(f, "code {code}"),
        };
        f.write_str(name)
    }
}

#[cfg(test)]
mod close_code_tests {
    use super::CloseCode;

    #[test]
    fn close_codes_round_trip_through_the_wire_value() {
        for code in 0..=12u16 {
            assert_eq!(CloseCode::from_code(code).code(), code);
        }
    }
}
