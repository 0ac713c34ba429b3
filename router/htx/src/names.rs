//! Self-certifying Betanet names for apps and services.
//!
//! - 1.1: `betanet://<hex sha256(public key)>`;
//! - 1.2: `bn1:` + base32(NodeID ‖ first 4 bytes of SHA-256("BN-NAME" ‖ NodeID)), with
//!   NodeID = SHA-256(ed25519 public key)[..20]. Fog writes the base32 as RFC 4648's alphabet in
//!   lower case without padding (the proposal does not fix one) and accepts either case.
//!
//! A name is derived from the key, so whoever proves the key (the Noise static key bound to it,
//! or a signature) proves the name; nothing else needs to be trusted.

use sha2::{Digest, Sha256};

use crate::HtxError;

const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

/// The 1.1 name of `public_key`: `betanet://` and the hex sha256 of the key.
pub fn betanet_url(public_key: &[u8; 32]) -> String {
    format!("betanet://{}", hex::encode(Sha256::digest(public_key)))
}

/// NodeID: the first 20 bytes of the key's sha256.
pub fn node_id(public_key: &[u8; 32]) -> [u8; 20] {
    Sha256::digest(public_key)[..20]
        .try_into()
        .expect("20 bytes")
}

fn checksum(node: &[u8; 20]) -> [u8; 4] {
    let mut hasher = Sha256::new();
    hasher.update(b"BN-NAME");
    hasher.update(node);
    hasher.finalize()[..4].try_into().expect("4 bytes")
}

/// RFC 4648 base32, lower case, no padding (also what `.onion` addresses use).
pub fn base32(bytes: &[u8]) -> String {
    let mut out = String::new();
    let (mut buffer, mut bits) = (0u32, 0u32);
    for &b in bytes {
        buffer = (buffer << 8) | b as u32;
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(ALPHABET[((buffer >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((buffer << (5 - bits)) & 31) as usize] as char);
    }
    out
}

fn unbase32(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let (mut buffer, mut bits) = (0u32, 0u32);
    for c in text.bytes() {
        let value = ALPHABET.iter().position(|&a| a == c.to_ascii_lowercase())? as u32;
        buffer = (buffer << 5) | value;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
        }
    }
    // Leftover bits must be zero padding.
    (buffer & ((1 << bits) - 1) == 0).then_some(out)
}

/// The 1.2 `bn1:` name of an ed25519 public key.
pub fn bn1(public_key: &[u8; 32]) -> String {
    let node = node_id(public_key);
    let mut bytes = node.to_vec();
    bytes.extend_from_slice(&checksum(&node));
    format!("bn1:{}", base32(&bytes))
}

/// Parse a `bn1:` name into its NodeID, checking its checksum.
pub fn parse_bn1(name: &str) -> Result<[u8; 20], HtxError> {
    let malformed = |reason: &str| HtxError::Malformed {
        what: "bn1 name",
        reason: reason.to_string(),
    };
    let body = name
        .strip_prefix("bn1:")
        .ok_or_else(|| malformed("does not start with bn1:"))?;
    if body.len() != 39 {
        return Err(malformed("must have 39 base32 characters"));
    }
    let bytes = unbase32(body).ok_or_else(|| malformed("not base32"))?;
    let node: [u8; 20] = bytes[..20].try_into().map_err(|_| malformed("too short"))?;
    if bytes[20..] != checksum(&node) {
        return Err(malformed("checksum does not match"));
    }
    Ok(node)
}

/// Whether `name` (either form) names `public_key`.
pub fn names_key(name: &str, public_key: &[u8; 32]) -> bool {
    if let Some(hex_digest) = name.strip_prefix("betanet://") {
        return hex_digest.eq_ignore_ascii_case(&hex::encode(Sha256::digest(public_key)));
    }
    parse_bn1(name).is_ok_and(|node| node == node_id(public_key))
}

/// The v3 `.onion` address of an ed25519 public key (rend-spec-v3 §6):
/// base32(pubkey ‖ checksum ‖ version) with checksum = SHA3-256(".onion checksum" ‖ pubkey ‖
/// version)[..2] and version 3.
pub fn onion_address(public: &[u8; 32]) -> String {
    use sha3::Digest as _;
    let mut hasher = sha3::Sha3_256::new();
    hasher.update(b".onion checksum");
    hasher.update(public);
    hasher.update([3u8]);
    let checksum = hasher.finalize();
    let mut bytes = public.to_vec();
    bytes.extend_from_slice(&checksum[..2]);
    bytes.push(3);
    format!("{}.onion", base32(&bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_bind_the_key() {
        let key = [7u8; 32];
        let name = bn1(&key);
        assert!(name.starts_with("bn1:") && name.len() == 4 + 39, "{name}");
        assert_eq!(parse_bn1(&name).unwrap(), node_id(&key));
        assert_eq!(
            parse_bn1(&name.to_uppercase().replace("BN1:", "bn1:")).unwrap(),
            node_id(&key)
        );
        assert!(names_key(&name, &key));
        assert!(!names_key(&name, &[8u8; 32]));
        let url = betanet_url(&key);
        assert_eq!(url.len(), "betanet://".len() + 64);
        assert!(names_key(&url, &key));
        // One changed character breaks the checksum.
        let mut bad: Vec<char> = name.chars().collect();
        let i = 10;
        bad[i] = if bad[i] == 'a' { 'b' } else { 'a' };
        let bad: String = bad.into_iter().collect();
        assert!(parse_bn1(&bad).is_err());
        assert!(parse_bn1("bn1:short").is_err());
        assert!(parse_bn1("http://x").is_err());
    }

    #[test]
    fn base32_matches_rfc4648() {
        // RFC 4648 test vectors, lower case, no padding.
        for (input, output) in [
            ("", ""),
            ("f", "my"),
            ("fo", "mzxq"),
            ("foo", "mzxw6"),
            ("foob", "mzxw6yq"),
            ("fooba", "mzxw6ytb"),
            ("foobar", "mzxw6ytboi"),
        ] {
            assert_eq!(base32(input.as_bytes()), output);
            assert_eq!(unbase32(output).unwrap(), input.as_bytes());
        }
    }
}
