//! The Betanet 1.2 key schedule (Appendix C.1).
//!
//! `HKDF-Expand-Label(secret, label, L) = HKDF-Expand-SHA256(secret, "betanet " || label, L)`;
//! `K0 = HKDF-Extract(salt = 32 zero bytes, ikm = exporter)`; `TS_c = Expand-Label(K0, "ts_c",
//! 32)` (and `"ts_s"` for the server's direction); `key = Expand-Label(TS, "key", 32)`;
//! `nonce_salt = Expand-Label(TS, "nonce", 12)`; after a key update `TS' = Expand-Label(TS,
//! "next", 32)`.

use hkdf::Hkdf;
use sha2::Sha256;

/// `HKDF-Expand-SHA256(secret, "betanet " || label, out.len())`.
pub fn expand_label(secret: &[u8; 32], label: &str, out: &mut [u8]) {
    let hkdf = Hkdf::<Sha256>::from_prk(secret).expect("a 32-byte PRK is valid for SHA-256");
    let mut info = Vec::with_capacity(8 + label.len());
    info.extend_from_slice(b"betanet ");
    info.extend_from_slice(label.as_bytes());
    hkdf.expand(&info, out)
        .expect("outputs up to 255 hashes long are valid");
}

/// `K0 = HKDF-Extract(salt = 32 zero bytes, ikm = exporter)`.
pub fn initial_secret(exporter: &[u8]) -> [u8; 32] {
    let (prk, _) = Hkdf::<Sha256>::extract(Some(&[0u8; 32]), exporter);
    prk.into()
}

/// The traffic secret of one direction.
pub fn traffic_secret(k0: &[u8; 32], label: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    expand_label(k0, label, &mut out);
    out
}

/// The keys of one direction at one generation.
#[derive(Clone, PartialEq, Eq)]
pub struct DirectionKeys {
    /// The traffic secret this generation comes from.
    pub secret: [u8; 32],
    /// The ChaCha20-Poly1305 key.
    pub key: [u8; 32],
    /// XORed with the frame counter to make each nonce.
    pub nonce_salt: [u8; 12],
}

impl std::fmt::Debug for DirectionKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DirectionKeys(..)")
    }
}

impl DirectionKeys {
    /// Keys derived from a traffic secret.
    pub fn from_secret(secret: [u8; 32]) -> DirectionKeys {
        let mut key = [0u8; 32];
        let mut nonce_salt = [0u8; 12];
        expand_label(&secret, "key", &mut key);
        expand_label(&secret, "nonce", &mut nonce_salt);
        DirectionKeys {
            secret,
            key,
            nonce_salt,
        }
    }

    /// The next generation after a key update.
    pub fn next(&self) -> DirectionKeys {
        DirectionKeys::from_secret(traffic_secret(&self.secret, "next"))
    }

    /// The nonce of frame `counter`: the salt XOR the big-endian counter in its last 8 bytes.
    pub fn nonce(&self, counter: u64) -> [u8; 12] {
        let mut nonce = self.nonce_salt;
        for (n, c) in nonce[4..].iter_mut().zip(counter.to_be_bytes()) {
            *n ^= c;
        }
        nonce
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(hex: &str) -> Vec<u8> {
        hex::decode(hex).unwrap()
    }

    #[test]
    fn the_spec_key_schedule_vector_reproduces() {
        let exporter = h("8b1a9953c4611296a827abf8c47804d77f02b27a3b2e5c5ed1fba6b9b5d80752");
        let k0 = initial_secret(&exporter);
        assert_eq!(
            hex::encode(k0),
            "89245712909f2d1041d3f26ab06092c264df10429ce351e8273ef873dd0cf06e"
        );
        let ts_c = traffic_secret(&k0, "ts_c");
        assert_eq!(
            hex::encode(ts_c),
            "114572d3dfdf0e268fc1547659fde69bd1f21c59e5655cc182f78dd8b6f8a7fb"
        );
        let keys = DirectionKeys::from_secret(ts_c);
        assert_eq!(
            hex::encode(keys.key),
            "743dc35fbdfe9f893161f6272858a4c4558a9faddc9a3980218d05367ea6b7bf"
        );
        assert_eq!(hex::encode(keys.nonce_salt), "ec8decc0494bc6b8acfc0dd5");
        assert_eq!(keys.nonce(0), keys.nonce_salt);
        assert_ne!(keys.next().key, keys.key);
    }
}
