//! The wire format of attached connections: a host behind NAT dials out to a router and keeps
//! that HTX connection open, and the router sends requests back down it (the way Tor onion
//! services and Cloudflare Tunnel reach servers that accept no connection).
//!
//! - The host is the Noise XK initiator, to the router's attach key (learnt from the control
//!   plane, which got it from a trusted router's signed registration), with the device's own
//!   static key (derived from its identity and announced in its signed heartbeats). Its hello
//!   names its device id; the router checks with the control plane that this device announced
//!   exactly this key, and otherwise closes the connection with a reason.
//! - Every stream starts with one tag byte saying what it carries: [`HTTP_STREAM`] (the router
//!   forwards HTTP/1.1 requests to the host's apps) or [`SPLICE_STREAM`].
//! - A splice joins two hosts attached to the same router: host A opens a stream tagged
//!   [`SPLICE_STREAM`] naming device B; the router checks that an assignment pairs A and B,
//!   opens a stream tagged [`SPLICE_STREAM`] naming A on B's connection, answers A
//!   [`SPLICE_OK`] (or [`SPLICE_REFUSED`] and a reason) and then copies bytes both ways. A and B
//!   run their own Noise XK handshake inside the spliced stream, so the router copies
//!   ciphertext only, as a mix relay does.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::HtxError;
use crate::conn::{Connection, HtxStream};

/// Noise prologue of host → router attach connections.
pub const ATTACH_PROLOGUE: &[u8] = b"fog-attach-v1";
/// Tag of a stream that carries HTTP/1.1.
pub const HTTP_STREAM: u8 = b'H';
/// Tag of a stream that asks for (host → router) or delivers (router → host) a splice.
pub const SPLICE_STREAM: u8 = b'S';
/// The router's answer to a splice it made.
pub const SPLICE_OK: u8 = 0;
/// The router's answer to a splice it refuses; a u16 length and a reason follow.
pub const SPLICE_REFUSED: u8 = 1;
/// Longest device id on the wire.
pub const MAX_DEVICE_ID: usize = 64;
/// Longest refusal reason.
const MAX_REASON: usize = 1024;

/// Check a device id read from the network: 1 to [`MAX_DEVICE_ID`] lowercase letters, digits
/// or dashes (so it is also a valid host name label).
pub fn check_device_id(id: &str) -> Result<(), HtxError> {
    let valid = !id.is_empty()
        && id.len() <= MAX_DEVICE_ID
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if valid {
        Ok(())
    } else {
        Err(HtxError::Malformed {
            what: "device id",
            reason: format!("{id:?} is not 1-{MAX_DEVICE_ID} of [a-z0-9-]"),
        })
    }
}

/// The hello a host sends when it attaches: its device id.
pub fn hello(device: &str) -> Vec<u8> {
    device.as_bytes().to_vec()
}

/// The device id a host's hello names.
pub fn read_hello(hello: &[u8]) -> Result<String, HtxError> {
    let id = std::str::from_utf8(hello).map_err(|_| HtxError::Malformed {
        what: "attach hello",
        reason: "not UTF-8".into(),
    })?;
    check_device_id(id)?;
    Ok(id.to_string())
}

/// Read the tag byte a stream starts with.
pub async fn read_tag<S: AsyncRead + Unpin>(stream: &mut S) -> Result<u8, HtxError> {
    stream
        .read_u8()
        .await
        .map_err(|e| HtxError::Io(format!("reading the stream tag: {e}")))
}

/// Write [`SPLICE_STREAM`] and the device at the other end.
pub async fn write_splice_header<S: AsyncWrite + Unpin>(
    stream: &mut S,
    device: &str,
) -> Result<(), HtxError> {
    check_device_id(device)?;
    let mut header = vec![SPLICE_STREAM, device.len() as u8];
    header.extend_from_slice(device.as_bytes());
    stream
        .write_all(&header)
        .await
        .map_err(|e| HtxError::Io(e.to_string()))
}

/// Read the device a splice names, after its tag.
pub async fn read_splice_device<S: AsyncRead + Unpin>(stream: &mut S) -> Result<String, HtxError> {
    let io = |e: std::io::Error| HtxError::Io(format!("reading a splice header: {e}"));
    let len = stream.read_u8().await.map_err(io)? as usize;
    if len > MAX_DEVICE_ID {
        return Err(HtxError::Oversized {
            len,
            limit: MAX_DEVICE_ID,
        });
    }
    let mut id = vec![0u8; len];
    stream.read_exact(&mut id).await.map_err(io)?;
    let id = String::from_utf8(id).map_err(|_| HtxError::Malformed {
        what: "device id",
        reason: "not UTF-8".into(),
    })?;
    check_device_id(&id)?;
    Ok(id)
}

/// The router's answer to a splice request: [`SPLICE_OK`], or a refusal with `reason`.
pub async fn write_splice_answer<S: AsyncWrite + Unpin>(
    stream: &mut S,
    refusal: Option<&str>,
) -> Result<(), HtxError> {
    let message = match refusal {
        None => vec![SPLICE_OK],
        Some(reason) => {
            let reason = &reason.as_bytes()[..reason.len().min(MAX_REASON)];
            let mut message = vec![SPLICE_REFUSED];
            message.extend_from_slice(&(reason.len() as u16).to_be_bytes());
            message.extend_from_slice(reason);
            message
        }
    };
    stream
        .write_all(&message)
        .await
        .map_err(|e| HtxError::Io(e.to_string()))
}

/// Ask the router at the other end of `connection` (an attached connection, this side the
/// host) for a stream spliced to `device`'s attached connection. The caller then runs its own
/// HTX handshake over it.
pub async fn splice(connection: &Connection, device: &str) -> Result<HtxStream, HtxError> {
    let mut stream = connection.open()?;
    write_splice_header(&mut stream, device).await?;
    let io = |e: std::io::Error| HtxError::Io(format!("reading the splice answer: {e}"));
    match stream.read_u8().await.map_err(io)? {
        SPLICE_OK => Ok(stream),
        SPLICE_REFUSED => {
            let len = stream.read_u16().await.map_err(io)? as usize;
            if len > MAX_REASON {
                return Err(HtxError::Oversized {
                    len,
                    limit: MAX_REASON,
                });
            }
            let mut reason = vec![0u8; len];
            stream.read_exact(&mut reason).await.map_err(io)?;
            Err(HtxError::Refused(
                String::from_utf8_lossy(&reason).into_owned(),
            ))
        }
        other => Err(HtxError::Malformed {
            what: "splice answer",
            reason: format!("unknown answer byte {other}"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_ids_are_host_name_labels() {
        assert!(check_device_id("0123abcd").is_ok());
        assert!(check_device_id("").is_err());
        assert!(check_device_id("UPPER").is_err());
        assert!(check_device_id("a.b").is_err());
        assert!(check_device_id(&"a".repeat(MAX_DEVICE_ID + 1)).is_err());
        assert_eq!(read_hello(b"0123abcd").unwrap(), "0123abcd");
        assert!(read_hello(&[0xff]).is_err());
    }

    #[tokio::test]
    async fn splice_headers_and_answers_round_trip() {
        let (mut a, mut b) = tokio::io::duplex(256);
        write_splice_header(&mut a, "abc123").await.unwrap();
        assert_eq!(read_tag(&mut b).await.unwrap(), SPLICE_STREAM);
        assert_eq!(read_splice_device(&mut b).await.unwrap(), "abc123");
        write_splice_answer(&mut b, Some("no assignment pairs them"))
            .await
            .unwrap();
        assert_eq!(a.read_u8().await.unwrap(), SPLICE_REFUSED);
        let len = a.read_u16().await.unwrap() as usize;
        let mut reason = vec![0u8; len];
        a.read_exact(&mut reason).await.unwrap();
        assert_eq!(reason, b"no assignment pairs them");
    }
}
