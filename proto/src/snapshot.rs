//! The snapshot format: an app's whole key-value state at a sequence number, as hosts stream it
//! to each other when a follower starts or an app moves.
//!
//! Frames are a `u32` big-endian length and a bincode body: a header (format, app, seq), one
//! frame per key, then an end marker (`u32::MAX`), the record count and the SHA-256 of
//! everything before it. Writer and reader hold one record at a time, and the reader takes
//! chunks of any size, so a snapshot never has to fit in memory. Bytes arrive from another
//! device: everything here refuses bad input with a [`SnapshotError`] and never panics (fuzzed
//! by `fuzz/fuzz_targets/snapshot.rs`, property-tested below).

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Largest snapshot frame (one key and its value).
pub const MAX_FRAME: usize = 10 << 20;
/// Snapshot format version.
pub const SNAPSHOT_FORMAT: u8 = 1;
/// Marks the end of a snapshot's records.
const END: u32 = u32::MAX;

/// Why a snapshot was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    /// Bytes followed the end marker and trailer.
    #[error("bytes after the snapshot's end")]
    TrailingBytes,
    /// A frame claimed more than [`MAX_FRAME`] bytes.
    #[error("snapshot frame of {0} bytes is over the limit")]
    FrameTooLarge(usize),
    /// The header names a format this build does not read.
    #[error("unknown snapshot format {0}")]
    UnknownFormat(u8),
    /// A frame's body is not what its place in the snapshot requires.
    #[error("undecodable snapshot frame: {0}")]
    Decode(String),
    /// The stream ended before the header.
    #[error("the snapshot has no header")]
    NoHeader,
    /// The stream ended before the end marker and trailer.
    #[error("the snapshot is truncated")]
    Truncated,
    /// The trailer's record count disagrees with the records read.
    #[error("the snapshot says {said} records, {arrived} arrived")]
    CountMismatch {
        /// Records the trailer claims.
        said: u64,
        /// Records read.
        arrived: u64,
    },
    /// The trailer's SHA-256 disagrees with the bytes read.
    #[error("the snapshot's checksum does not match")]
    Checksum,
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    bincode::serde::encode_to_vec(value, bincode::config::standard()).expect("always encodes")
}

/// Decoding is limited to the frame's own size: without the limit a length prefix of 2^64 in a
/// 46-byte frame made bincode allocate that much and abort the host (found by the fuzz target).
fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, SnapshotError> {
    let config = bincode::config::standard().with_limit::<MAX_FRAME>();
    bincode::serde::decode_from_slice(bytes, config)
        .map(|(value, _)| value)
        .map_err(|e| SnapshotError::Decode(e.to_string()))
}

#[derive(Debug, Serialize, Deserialize)]
struct SnapshotHeader {
    format: u8,
    app: String,
    seq: u64,
}

/// Writes snapshot frames, hashing as it goes.
#[derive(Debug)]
pub struct SnapshotWriter {
    buffer: Vec<u8>,
    hasher: Sha256,
    count: u64,
}

impl SnapshotWriter {
    /// A snapshot of `app` at `seq`.
    pub fn new(app: &str, seq: u64) -> SnapshotWriter {
        let mut writer = SnapshotWriter {
            buffer: Vec::with_capacity(128 << 10),
            hasher: Sha256::new(),
            count: 0,
        };
        writer.frame(&encode(&SnapshotHeader {
            format: SNAPSHOT_FORMAT,
            app: app.to_string(),
            seq,
        }));
        writer
    }

    fn frame(&mut self, body: &[u8]) {
        let len = (body.len() as u32).to_be_bytes();
        self.hasher.update(len);
        self.hasher.update(body);
        self.buffer.extend_from_slice(&len);
        self.buffer.extend_from_slice(body);
    }

    /// Add one key.
    pub fn record(&mut self, key: &[u8], value: &[u8]) {
        self.frame(&encode(&(key, value)));
        self.count += 1;
    }

    /// Bytes waiting to be taken.
    pub fn buffered(&self) -> usize {
        self.buffer.len()
    }

    /// Take what is buffered.
    pub fn take(&mut self) -> Bytes {
        Bytes::from(std::mem::take(&mut self.buffer))
    }

    /// The end marker, count and checksum, with anything still buffered.
    pub fn finish(mut self) -> Bytes {
        self.buffer.extend_from_slice(&END.to_be_bytes());
        self.buffer.extend_from_slice(&self.count.to_be_bytes());
        let digest = self.hasher.clone().finalize();
        self.buffer.extend_from_slice(&digest);
        self.take()
    }
}

/// One key and its value, as a snapshot carries it.
pub type Record = (Vec<u8>, Vec<u8>);

/// Reads snapshot frames from chunks of any size, one record in memory at a time.
#[derive(Debug, Default)]
pub struct SnapshotReader {
    pending: Vec<u8>,
    hasher: Sha256,
    header: Option<SnapshotHeader>,
    count: u64,
    /// (count, checksum) once the end marker and trailer arrived.
    end: Option<(u64, [u8; 32])>,
}

impl SnapshotReader {
    /// Feed bytes; returns the complete records they finish.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<Record>, SnapshotError> {
        if self.end.is_some() && !chunk.is_empty() {
            return Err(SnapshotError::TrailingBytes);
        }
        self.pending.extend_from_slice(chunk);
        let mut records = Vec::new();
        let mut at = 0usize;
        loop {
            let rest = &self.pending[at..];
            if rest.len() < 4 {
                break;
            }
            let len = u32::from_be_bytes(rest[..4].try_into().expect("4 bytes"));
            if len == END {
                if rest.len() < 4 + 8 + 32 {
                    break;
                }
                let count = u64::from_be_bytes(rest[4..12].try_into().expect("8 bytes"));
                let sum: [u8; 32] = rest[12..44].try_into().expect("32 bytes");
                if rest.len() > 44 {
                    return Err(SnapshotError::TrailingBytes);
                }
                self.end = Some((count, sum));
                at += 44;
                break;
            }
            let len = len as usize;
            if len > MAX_FRAME {
                return Err(SnapshotError::FrameTooLarge(len));
            }
            if rest.len() < 4 + len {
                break;
            }
            let body = &rest[4..4 + len];
            self.hasher.update(&rest[..4]);
            self.hasher.update(body);
            if self.header.is_none() {
                let header: SnapshotHeader = decode(body)?;
                if header.format != SNAPSHOT_FORMAT {
                    return Err(SnapshotError::UnknownFormat(header.format));
                }
                self.header = Some(header);
            } else {
                let (key, value): (Vec<u8>, Vec<u8>) = decode(body)?;
                records.push((key, value));
                self.count += 1;
            }
            at += 4 + len;
        }
        self.pending.drain(..at);
        Ok(records)
    }

    /// Check the end: the count and checksum; returns the snapshot's sequence number.
    pub fn finished(&self) -> Result<u64, SnapshotError> {
        let header = self.header.as_ref().ok_or(SnapshotError::NoHeader)?;
        let (count, sum) = self.end.ok_or(SnapshotError::Truncated)?;
        if count != self.count {
            return Err(SnapshotError::CountMismatch {
                said: count,
                arrived: self.count,
            });
        }
        if sum[..] != self.hasher.clone().finalize()[..] {
            return Err(SnapshotError::Checksum);
        }
        Ok(header.seq)
    }

    /// The app the snapshot is of, once its header arrived.
    pub fn app(&self) -> Option<&str> {
        self.header.as_ref().map(|h| h.app.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fuzz crash `snapshot/crash-7a4ac657`: a header frame whose app name claims 2^64 bytes.
    #[test]
    fn fuzz_snapshot_huge_length_prefix_is_refused_not_allocated() {
        let mut bytes = vec![0, 0, 0, 46, 0xf7, 0xfd];
        bytes.extend([0xff; 44]);
        let err = SnapshotReader::default().push(&bytes).unwrap_err();
        assert!(matches!(err, SnapshotError::Decode(_)), "{err:?}");
    }
}

/// Property-based runs (proptest, part of the suite) over snapshot decoding: whatever bytes
/// arrive, in whatever chunks, the reader answers without panicking, returns exactly what was
/// written, and never accepts a snapshot with a changed byte.
#[cfg(test)]
mod snapshot_properties {
    use proptest::prelude::*;

    use super::*;

    fn config() -> ProptestConfig {
        ProptestConfig {
            cases: 128,
            failure_persistence: None,
            ..ProptestConfig::default()
        }
    }

    fn snapshot(records: &[Record], seq: u64) -> Vec<u8> {
        let mut writer = SnapshotWriter::new("app", seq);
        for (key, value) in records {
            writer.record(key, value);
        }
        writer.finish().to_vec()
    }

    /// Read `bytes` in chunks of `chunk`: the records and the sequence number, or the refusal.
    fn read(bytes: &[u8], chunk: usize) -> Result<(Vec<Record>, u64), SnapshotError> {
        let mut reader = SnapshotReader::default();
        let mut records = Vec::new();
        for piece in bytes.chunks(chunk.max(1)) {
            records.extend(reader.push(piece)?);
        }
        Ok((records, reader.finished()?))
    }

    fn records() -> impl Strategy<Value = Vec<Record>> {
        prop::collection::vec(
            (
                prop::collection::vec(any::<u8>(), 0..24),
                prop::collection::vec(any::<u8>(), 0..64),
            ),
            0..24,
        )
    }

    proptest! {
        #![proptest_config(config())]

        #[test]
        fn snapshots_read_back_exactly_in_any_chunking(
            records in records(),
            seq in any::<u64>(),
            chunk in 1usize..300,
        ) {
            let bytes = snapshot(&records, seq);
            prop_assert_eq!(read(&bytes, chunk), Ok((records, seq)));
        }

        #[test]
        fn any_bytes_are_answered_without_panicking(
            bytes in prop::collection::vec(any::<u8>(), 0..512),
            chunk in 1usize..64,
        ) {
            let _ = read(&bytes, chunk);
        }

        #[test]
        fn a_snapshot_with_a_changed_byte_is_refused(
            records in records(),
            at in any::<prop::sample::Index>(),
            flip in 1u8..=255,
            chunk in 1usize..300,
        ) {
            let mut bytes = snapshot(&records, 7);
            let i = at.index(bytes.len());
            bytes[i] ^= flip;
            prop_assert!(read(&bytes, chunk).is_err(), "byte {} changed and accepted", i);
        }
    }
}
