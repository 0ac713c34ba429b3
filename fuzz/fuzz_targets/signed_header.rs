//! Fuzz signed-request verification: arbitrary `x-fog-auth` headers against arbitrary requests,
//! and arbitrary key texts. Nothing may panic; a header this input did not sign never verifies.
#![no_main]

use std::sync::OnceLock;

use arbitrary::Arbitrary;
use fog_proto::auth::{self, Identity};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input {
    header: Option<String>,
    method: String,
    path: String,
    body_sha256: String,
    meta: String,
    now_s: u64,
    key_text: String,
    message: Vec<u8>,
    signature: String,
}

fuzz_target!(|input: Input| {
    // A forged header: whatever it claims, it carries no valid signature unless it was made
    // by a key, which random bytes do not do.
    let _ = auth::verify(
        input.header.as_deref(),
        &input.method,
        &input.path,
        &input.body_sha256,
        &input.meta,
        input.now_s,
    );
    let _ = auth::verify_bytes(&input.key_text, &input.message, &input.signature);
    let _ = Identity::from_text(&input.key_text);
    // A header made by a key verifies once for exactly what it signed, and not for another
    // path.
    // One key for the run: deriving it is not what is fuzzed.
    static SIGNER: OnceLock<Identity> = OnceLock::new();
    let signer = SIGNER.get_or_init(|| Identity::from_secret(&[1; 32]));
    let now = auth::now_s();
    let header = signer.sign(&input.method, &input.path, now, &input.body_sha256, &input.meta);
    let signed = auth::verify(
        Some(&header),
        &input.method,
        &input.path,
        &input.body_sha256,
        &input.meta,
        now,
    );
    if header.len() <= 512 {
        assert!(signed.is_ok(), "a valid signature was refused: {signed:?}");
        let other = format!("{}x", input.path);
        assert!(
            auth::verify(Some(&header), &input.method, &other, &input.body_sha256, &input.meta, now)
                .is_err(),
            "a signature verified for a path it did not sign"
        );
    }
});
