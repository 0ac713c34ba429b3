//! Identities and signed requests.
//!
//! Developers and devices each hold an ed25519 key. A request that changes something carries an
//! `x-fog-auth: key=<hex public key>,ts=<unix seconds>,nonce=<hex>,sig=<hex signature>` header;
//! the signature covers `fog-request-v2`, the method, the path, the timestamp, the nonce, the
//! sha256 of the body and the `x-fog-meta` header, each on its own line. The control plane
//! accepts timestamps within [`MAX_SKEW_S`] of its clock and each (key, nonce) once within that
//! window, so a captured request cannot be sent again.

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use sha2::{Digest, Sha256};

/// Header carrying the signature.
pub const AUTH_HEADER: &str = "x-fog-auth";
/// Header carrying request metadata that the signature also covers.
pub const META_HEADER: &str = "x-fog-meta";
/// Largest clock difference accepted, in seconds.
pub const MAX_SKEW_S: u64 = 300;

/// Why a signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `x-fog-auth` header.
    #[error("missing x-fog-auth header: sign the request with your key (fog keygen)")]
    Missing,
    /// The header is not `key=..,ts=..,sig=..` with valid hex.
    #[error("malformed x-fog-auth header: {0}")]
    Malformed(String),
    /// The timestamp is too far from the server's clock.
    #[error("request timestamp is {0} s away from the server's clock (limit {MAX_SKEW_S} s)")]
    Skew(u64),
    /// The signature does not match.
    #[error("signature does not match the request")]
    BadSignature,
    /// This exact signed request was already accepted.
    #[error("replayed request: this signature's nonce was already used; sign a new request")]
    Replay,
}

/// Bytes of random nonce in each signed request.
pub const NONCE_BYTES: usize = 16;

/// Who signed a request that verified, and the nonce that makes it unique.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    /// The signer's public key (hex).
    pub key: String,
    /// The request's timestamp (unix seconds).
    pub ts: u64,
    /// The request's nonce (hex): refuse a second request with the same key and nonce.
    pub nonce: String,
}

/// An ed25519 key pair.
pub struct Identity {
    key: SigningKey,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("public", &self.public_hex())
            .finish()
    }
}

impl Identity {
    /// A new random key.
    pub fn generate() -> Identity {
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret).expect("the operating system's random source");
        Identity {
            key: SigningKey::from_bytes(&secret),
        }
    }

    /// The identity whose secret key is `secret` (e.g. derived from another secret).
    pub fn from_secret(secret: &[u8; 32]) -> Identity {
        Identity {
            key: SigningKey::from_bytes(secret),
        }
    }

    /// The public key's 32 bytes.
    pub fn public_bytes(&self) -> [u8; 32] {
        self.key.verifying_key().to_bytes()
    }

    /// The key stored as hex text (as written by [`Identity::to_text`]).
    pub fn from_text(text: &str) -> Result<Identity, String> {
        let bytes = hex::decode(text.trim()).map_err(|e| format!("key is not hex: {e}"))?;
        let secret: [u8; 32] = bytes
            .try_into()
            .map_err(|_| "key must be 32 bytes".to_string())?;
        Ok(Identity {
            key: SigningKey::from_bytes(&secret),
        })
    }

    /// The secret key as hex text, for a 0600 key file.
    pub fn to_text(&self) -> String {
        format!("{}\n", hex::encode(self.key.to_bytes()))
    }

    /// The public key in hex.
    pub fn public_hex(&self) -> String {
        hex::encode(self.key.verifying_key().to_bytes())
    }

    /// The 32-byte secret, for deriving other keys (e.g. a transport key) from this identity.
    pub fn secret_bytes(&self) -> [u8; 32] {
        self.key.to_bytes()
    }

    /// Sign arbitrary bytes; the signature in hex.
    pub fn sign_bytes(&self, message: &[u8]) -> String {
        hex::encode(self.key.sign(message).to_bytes())
    }

    /// The `x-fog-auth` header value for a request.
    /// Each call draws a fresh nonce, so two calls never give the same header.
    pub fn sign(&self, method: &str, path: &str, ts: u64, body_sha256: &str, meta: &str) -> String {
        let mut nonce = [0u8; NONCE_BYTES];
        getrandom::fill(&mut nonce).expect("the operating system's random source");
        let nonce = hex::encode(nonce);
        let signature = self
            .key
            .sign(&canonical(method, path, ts, &nonce, body_sha256, meta));
        format!(
            "key={},ts={ts},nonce={nonce},sig={}",
            self.public_hex(),
            hex::encode(signature.to_bytes())
        )
    }
}

/// Unix seconds now: what signatures are stamped and checked with (0 if the clock is before
/// 1970).
pub fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Check a hex signature by the hex public key `public_hex` over `message`.
pub fn verify_bytes(
    public_hex: &str,
    message: &[u8],
    signature_hex: &str,
) -> Result<(), AuthError> {
    let key: [u8; 32] = hex::decode(public_hex)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| AuthError::Malformed("key must be 32 bytes of hex".into()))?;
    let sig: [u8; 64] = hex::decode(signature_hex)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| AuthError::Malformed("signature must be 64 bytes of hex".into()))?;
    let key = VerifyingKey::from_bytes(&key)
        .map_err(|_| AuthError::Malformed("not a valid public key".into()))?;
    key.verify(message, &Signature::from_bytes(&sig))
        .map_err(|_| AuthError::BadSignature)
}

/// The bytes a request signature covers.
pub fn canonical(
    method: &str,
    path: &str,
    ts: u64,
    nonce: &str,
    body_sha256: &str,
    meta: &str,
) -> Vec<u8> {
    format!("fog-request-v2\n{method}\n{path}\n{ts}\n{nonce}\n{body_sha256}\n{meta}").into_bytes()
}

/// The sha256 of `body` in hex.
pub fn sha256_hex(body: &[u8]) -> String {
    hex::encode(Sha256::digest(body))
}

/// A device's id: the first 16 hex digits of the sha256 of its public key.
pub fn device_id(public_hex: &str) -> String {
    let bytes = hex::decode(public_hex).unwrap_or_default();
    hex::encode(Sha256::digest(bytes))[..16].to_string()
}

/// Check an `x-fog-auth` header against the request; on success, who signed it and its nonce.
/// Refusing a nonce seen before is the caller's part (it keeps the memory).
pub fn verify(
    header: Option<&str>,
    method: &str,
    path: &str,
    body_sha256: &str,
    meta: &str,
    now_s: u64,
) -> Result<Signed, AuthError> {
    let header = header.ok_or(AuthError::Missing)?;
    if header.len() > 512 {
        return Err(AuthError::Malformed("too long".into()));
    }
    let (mut key, mut ts, mut nonce, mut sig) = (None, None, None, None);
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("key", v)) => key = Some(v),
            Some(("ts", v)) => ts = Some(v),
            Some(("nonce", v)) => nonce = Some(v),
            Some(("sig", v)) => sig = Some(v),
            _ => return Err(AuthError::Malformed(format!("unexpected part {part:?}"))),
        }
    }
    let key = key.ok_or_else(|| AuthError::Malformed("no key".into()))?;
    let ts: u64 = ts
        .ok_or_else(|| AuthError::Malformed("no ts".into()))?
        .parse()
        .map_err(|_| AuthError::Malformed("ts is not a number".into()))?;
    let sig = sig.ok_or_else(|| AuthError::Malformed("no sig".into()))?;
    let nonce = nonce.ok_or_else(|| AuthError::Malformed("no nonce".into()))?;
    if nonce.len() != 2 * NONCE_BYTES || hex::decode(nonce).is_err() {
        return Err(AuthError::Malformed(format!(
            "nonce must be {NONCE_BYTES} bytes of hex"
        )));
    }
    let key_bytes: [u8; 32] = hex::decode(key)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| AuthError::Malformed("key must be 32 bytes of hex".into()))?;
    let sig_bytes: [u8; 64] = hex::decode(sig)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| AuthError::Malformed("sig must be 64 bytes of hex".into()))?;
    let skew = now_s.abs_diff(ts);
    if skew > MAX_SKEW_S {
        return Err(AuthError::Skew(skew));
    }
    let verifying = VerifyingKey::from_bytes(&key_bytes)
        .map_err(|_| AuthError::Malformed("not a valid public key".into()))?;
    verifying
        .verify(
            &canonical(method, path, ts, nonce, body_sha256, meta),
            &Signature::from_bytes(&sig_bytes),
        )
        .map_err(|_| AuthError::BadSignature)?;
    Ok(Signed {
        key: hex::encode(key_bytes),
        ts,
        nonce: nonce.to_ascii_lowercase(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_bind_every_part_of_the_request() {
        let me = Identity::generate();
        let body = sha256_hex(b"component");
        let header = me.sign("POST", "/v1/apps", 1000, &body, "{\"name\":\"a\"}");
        let ok = verify(
            Some(&header),
            "POST",
            "/v1/apps",
            &body,
            "{\"name\":\"a\"}",
            1001,
        );
        assert_eq!(ok.map(|s| s.key), Ok(me.public_hex()));
        let again = me.sign("POST", "/v1/apps", 1000, &body, "{\"name\":\"a\"}");
        assert_ne!(header, again, "every signature carries a fresh nonce");
        for (method, path, sha, meta) in [
            ("PUT", "/v1/apps", body.as_str(), "{\"name\":\"a\"}"),
            ("POST", "/v1/other", body.as_str(), "{\"name\":\"a\"}"),
            ("POST", "/v1/apps", "00", "{\"name\":\"a\"}"),
            ("POST", "/v1/apps", body.as_str(), "{\"name\":\"b\"}"),
        ] {
            assert_eq!(
                verify(Some(&header), method, path, sha, meta, 1000),
                Err(AuthError::BadSignature)
            );
        }
        assert!(matches!(
            verify(
                Some(&header),
                "POST",
                "/v1/apps",
                &body,
                "{\"name\":\"a\"}",
                5000
            ),
            Err(AuthError::Skew(_))
        ));
        assert_eq!(
            verify(None, "POST", "/", "", "", 0),
            Err(AuthError::Missing)
        );
        assert!(matches!(
            verify(Some("key=zz,ts=1,sig=00"), "POST", "/", "", "", 1),
            Err(AuthError::Malformed(_))
        ));
        // The nonce is covered by the signature: changing it breaks the signature.
        let nonce_at = header.find("nonce=").unwrap() + "nonce=".len();
        let mut other = header.clone();
        let flipped = if &header[nonce_at..nonce_at + 1] == "0" {
            "1"
        } else {
            "0"
        };
        other.replace_range(nonce_at..nonce_at + 1, flipped);
        assert_eq!(
            verify(
                Some(&other),
                "POST",
                "/v1/apps",
                &body,
                "{\"name\":\"a\"}",
                1000
            ),
            Err(AuthError::BadSignature)
        );
        let without = header.replace(&format!(",nonce={}", &header[nonce_at..nonce_at + 32]), "");
        assert!(matches!(
            verify(
                Some(&without),
                "POST",
                "/v1/apps",
                &body,
                "{\"name\":\"a\"}",
                1000
            ),
            Err(AuthError::Malformed(_))
        ));
    }

    #[test]
    fn keys_round_trip_through_text() {
        let me = Identity::generate();
        let again = Identity::from_text(&me.to_text()).unwrap();
        assert_eq!(me.public_hex(), again.public_hex());
        assert_eq!(device_id(&me.public_hex()).len(), 16);
        assert!(Identity::from_text("abc").is_err());
    }
}
