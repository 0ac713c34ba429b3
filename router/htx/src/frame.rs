//! Betanet 1.2 frames: `Len u24 | Type u8 | StreamID u32 | AAD u16 | ciphertext | tag16`.
//!
//! `Len` counts every byte after itself. The 10-byte header (Len..AAD) is the AEAD's associated
//! data; the nonce is the direction's salt XOR a frame counter that both sides advance, so a
//! replayed, reordered, dropped or tampered frame fails authentication. Lengths are checked
//! against a limit before any buffer is sized from them.

use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};

use crate::HtxError;
use crate::keys::DirectionKeys;

/// Bytes before the ciphertext.
pub const HEADER_LEN: usize = 10;
/// Bytes of the authentication tag.
pub const TAG_LEN: usize = 16;
/// Largest `Len` Fog accepts by default (a 64 KiB STREAM payload plus its fields).
pub const DEFAULT_MAX_FRAME: usize = 7 + 11 + 65_535 + TAG_LEN;

/// Frame types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameType {
    /// Stream data (`flags u8 | offset u64 | length u16 | data`).
    Stream = 0,
    /// Flow-control credit (`scope u8 | credit u32`).
    WindowUpdate = 1,
    /// Liveness check, echoed (`token [u8; 8]`, plus a reply flag).
    Ping = 2,
    /// The sender switches to its next keys after this frame.
    KeyUpdate = 3,
    /// The connection (stream 0) or one stream ends (`code u16 | reason`).
    Close = 4,
}

impl FrameType {
    fn from_u8(value: u8) -> Result<FrameType, HtxError> {
        Ok(match value {
            0 => FrameType::Stream,
            1 => FrameType::WindowUpdate,
            2 => FrameType::Ping,
            3 => FrameType::KeyUpdate,
            4 => FrameType::Close,
            other => {
                return Err(HtxError::Malformed {
                    what: "frame type",
                    reason: format!("unknown type {other}"),
                });
            }
        })
    }
}

/// A decrypted frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Its type.
    pub kind: FrameType,
    /// Its stream (0 for the connection).
    pub stream: u32,
    /// The header's AAD field.
    pub aad: u16,
    /// The plaintext.
    pub payload: Vec<u8>,
}

fn cipher(keys: &DirectionKeys) -> LessSafeKey {
    LessSafeKey::new(
        UnboundKey::new(&CHACHA20_POLY1305, &keys.key).expect("a 32-byte ChaCha20-Poly1305 key"),
    )
}

/// Encrypts frames in one direction.
pub struct Sealer {
    keys: DirectionKeys,
    cipher: LessSafeKey,
    counter: u64,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer")
            .field("counter", &self.counter)
            .finish_non_exhaustive()
    }
}

impl Sealer {
    /// A sealer starting at frame counter 0.
    pub fn new(keys: DirectionKeys) -> Sealer {
        let cipher = cipher(&keys);
        Sealer {
            keys,
            cipher,
            counter: 0,
        }
    }

    /// Frames sealed under the current keys.
    pub fn counter(&self) -> u64 {
        self.counter
    }

    /// Append the sealed frame to `out`.
    pub fn seal(
        &mut self,
        kind: FrameType,
        stream: u32,
        aad: u16,
        plaintext: &[u8],
        out: &mut Vec<u8>,
    ) {
        let len = 7 + plaintext.len() + TAG_LEN;
        assert!(len < 1 << 24, "frame payloads are bounded by the caller");
        let start = out.len();
        out.extend_from_slice(&(len as u32).to_be_bytes()[1..]);
        out.push(kind as u8);
        out.extend_from_slice(&stream.to_be_bytes());
        out.extend_from_slice(&aad.to_be_bytes());
        out.extend_from_slice(plaintext);
        let (header, body) = out[start..].split_at_mut(HEADER_LEN);
        let nonce = Nonce::assume_unique_for_key(self.keys.nonce(self.counter));
        let tag = self
            .cipher
            .seal_in_place_separate_tag(nonce, Aad::from(&*header), body)
            .expect("ChaCha20-Poly1305 encrypts any payload under 256 GiB");
        out.extend_from_slice(tag.as_ref());
        self.counter += 1;
    }

    /// Switch to the next generation of keys (after sending KEY_UPDATE).
    pub fn rekey(&mut self) {
        *self = Sealer::new(self.keys.next());
    }
}

/// Decrypts frames in one direction.
pub struct Opener {
    keys: DirectionKeys,
    cipher: LessSafeKey,
    counter: u64,
    max_frame: usize,
}

impl std::fmt::Debug for Opener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opener")
            .field("counter", &self.counter)
            .finish_non_exhaustive()
    }
}

impl Opener {
    /// An opener starting at frame counter 0, refusing `Len` above `max_frame`.
    pub fn new(keys: DirectionKeys, max_frame: usize) -> Opener {
        let cipher = cipher(&keys);
        Opener {
            keys,
            cipher,
            counter: 0,
            max_frame,
        }
    }

    /// How many bytes the whole frame has, from its first 3 bytes; refuses oversized and
    /// impossible lengths before anything is allocated.
    pub fn frame_len(&self, len_field: [u8; 3]) -> Result<usize, HtxError> {
        let len = u32::from_be_bytes([0, len_field[0], len_field[1], len_field[2]]) as usize;
        if len > self.max_frame {
            return Err(HtxError::Oversized {
                len,
                limit: self.max_frame,
            });
        }
        if len < 7 + TAG_LEN {
            return Err(HtxError::Truncated { what: "frame", len });
        }
        Ok(3 + len)
    }

    /// Authenticate and decrypt one whole frame (as sized by [`Opener::frame_len`]).
    pub fn open(&mut self, frame: &[u8]) -> Result<Frame, HtxError> {
        if frame.len() < HEADER_LEN + TAG_LEN {
            return Err(HtxError::Truncated {
                what: "frame",
                len: frame.len(),
            });
        }
        let total = self.frame_len([frame[0], frame[1], frame[2]])?;
        if total != frame.len() {
            return Err(HtxError::Truncated {
                what: "frame",
                len: frame.len(),
            });
        }
        let (header, rest) = frame.split_at(HEADER_LEN);
        // ring opens ciphertext || tag in place and returns the plaintext.
        let mut payload = rest.to_vec();
        let nonce = Nonce::assume_unique_for_key(self.keys.nonce(self.counter));
        let plaintext_len = self
            .cipher
            .open_in_place(nonce, Aad::from(header), &mut payload)
            .map_err(|_| HtxError::Authentication {
                counter: self.counter,
            })?
            .len();
        payload.truncate(plaintext_len);
        self.counter += 1;
        Ok(Frame {
            kind: FrameType::from_u8(header[3])?,
            stream: u32::from_be_bytes([header[4], header[5], header[6], header[7]]),
            aad: u16::from_be_bytes([header[8], header[9]]),
            payload,
        })
    }

    /// Switch to the next generation of keys (after receiving KEY_UPDATE).
    pub fn rekey(&mut self) {
        *self = Opener::new(self.keys.next(), self.max_frame);
    }
}

/// Flag of a STREAM frame that ends the stream.
pub const FIN: u8 = 1;

/// The plaintext of a STREAM frame.
pub fn encode_stream(fin: bool, offset: u64, data: &[u8]) -> Vec<u8> {
    assert!(
        data.len() <= u16::MAX as usize,
        "STREAM data is at most 65,535 bytes"
    );
    let mut out = Vec::with_capacity(11 + data.len());
    out.push(if fin { FIN } else { 0 });
    out.extend_from_slice(&offset.to_be_bytes());
    out.extend_from_slice(&(data.len() as u16).to_be_bytes());
    out.extend_from_slice(data);
    out
}

/// Parse a STREAM plaintext into (fin, offset, data).
pub fn decode_stream(payload: &[u8]) -> Result<(bool, u64, &[u8]), HtxError> {
    if payload.len() < 11 {
        return Err(HtxError::Truncated {
            what: "STREAM frame",
            len: payload.len(),
        });
    }
    let flags = payload[0];
    if flags & !FIN != 0 {
        return Err(HtxError::Malformed {
            what: "STREAM frame",
            reason: format!("unknown flags {flags:#x}"),
        });
    }
    let offset = u64::from_be_bytes(payload[1..9].try_into().expect("8 bytes"));
    let len = u16::from_be_bytes([payload[9], payload[10]]) as usize;
    if payload.len() != 11 + len {
        return Err(HtxError::Malformed {
            what: "STREAM frame",
            reason: format!("length field {len} but {} data bytes", payload.len() - 11),
        });
    }
    Ok((flags & FIN != 0, offset, &payload[11..]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{DirectionKeys, initial_secret, traffic_secret};

    fn spec_keys() -> DirectionKeys {
        let exporter =
            hex::decode("8b1a9953c4611296a827abf8c47804d77f02b27a3b2e5c5ed1fba6b9b5d80752")
                .unwrap();
        DirectionKeys::from_secret(traffic_secret(&initial_secret(&exporter), "ts_c"))
    }

    const VECTOR: &str = "0000350000000003000026d3fd26498a080a4e63b0c892e5fecdd95bcb6ea4d1148d1c49c66eca925c4805d0d8854469f948e2b08d56e4a3";

    #[test]
    fn the_spec_stream_frame_vector_reproduces() {
        let mut sealer = Sealer::new(spec_keys());
        let mut out = Vec::new();
        sealer.seal(
            FrameType::Stream,
            3,
            0,
            &encode_stream(false, 0, b"Hello, Betanet 1.2!"),
            &mut out,
        );
        assert_eq!(hex::encode(&out), VECTOR);
        let mut opener = Opener::new(spec_keys(), DEFAULT_MAX_FRAME);
        let frame = opener.open(&out).unwrap();
        assert_eq!(
            (frame.kind, frame.stream, frame.aad),
            (FrameType::Stream, 3, 0)
        );
        assert_eq!(
            decode_stream(&frame.payload).unwrap(),
            (false, 0, &b"Hello, Betanet 1.2!"[..])
        );
    }

    #[test]
    fn tampered_truncated_oversized_reordered_and_replayed_frames_are_refused() {
        let mut sealer = Sealer::new(spec_keys());
        let (mut first, mut second) = (Vec::new(), Vec::new());
        sealer.seal(
            FrameType::Stream,
            1,
            0,
            &encode_stream(false, 0, b"one"),
            &mut first,
        );
        sealer.seal(
            FrameType::Stream,
            1,
            0,
            &encode_stream(true, 3, b"two"),
            &mut second,
        );
        let fresh = || Opener::new(spec_keys(), DEFAULT_MAX_FRAME);
        // Every single-bit flip, in the header or the body, fails.
        for i in 0..first.len() {
            let mut bad = first.clone();
            bad[i] ^= 0x10;
            assert!(fresh().open(&bad).is_err(), "flip at byte {i} accepted");
        }
        assert!(matches!(
            fresh().open(&first[..first.len() - 1]),
            Err(HtxError::Truncated { .. })
        ));
        assert!(
            matches!(
                fresh().open(&second),
                Err(HtxError::Authentication { counter: 0 })
            ),
            "reordered"
        );
        let mut opener = fresh();
        opener.open(&first).unwrap();
        assert!(
            matches!(
                opener.open(&first),
                Err(HtxError::Authentication { counter: 1 })
            ),
            "replayed"
        );
        opener.open(&second).unwrap();
        assert!(matches!(
            fresh().frame_len([0xff, 0xff, 0xff]),
            Err(HtxError::Oversized { .. })
        ));
        assert!(
            decode_stream(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5, 1]).is_err(),
            "length field lies"
        );
        assert!(decode_stream(&[2; 11]).is_err(), "unknown flag");
    }

    #[test]
    fn both_sides_rekey_in_step() {
        let mut sealer = Sealer::new(spec_keys());
        let mut opener = Opener::new(spec_keys(), DEFAULT_MAX_FRAME);
        for round in 0..3 {
            let mut out = Vec::new();
            sealer.seal(FrameType::KeyUpdate, 0, 0, &[], &mut out);
            sealer.rekey();
            assert_eq!(opener.open(&out).unwrap().kind, FrameType::KeyUpdate);
            opener.rekey();
            let mut data = Vec::new();
            sealer.seal(
                FrameType::Stream,
                1,
                0,
                &encode_stream(false, round, b"x"),
                &mut data,
            );
            assert!(opener.open(&data).is_ok(), "round {round}");
        }
    }
}
