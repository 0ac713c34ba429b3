//! Fuzz the handshake driver: a responder fed arbitrary bytes as the initiator's messages.
//! It must fail cleanly (never panic, never hang on a short input).
#![no_main]

use std::sync::OnceLock;

use fog_htx::handshake::{StaticKey, respond};
use libfuzzer_sys::fuzz_target;
use tokio::io::AsyncWriteExt;

/// One runtime and one responder key for the whole run: building them is not what is fuzzed,
/// and doing it per input cost more than the handshake itself.
fn fixture() -> &'static (tokio::runtime::Runtime, StaticKey) {
    static FIXTURE: OnceLock<(tokio::runtime::Runtime, StaticKey)> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        (runtime, StaticKey::from_private([4; 32]))
    })
}

fuzz_target!(|data: &[u8]| {
    let (runtime, key) = fixture();
    runtime.block_on(async {
        let (mut attacker, mut victim) = tokio::io::duplex(1 << 16);
        attacker.write_all(data).await.unwrap();
        attacker.shutdown().await.unwrap();
        assert!(respond(&mut victim, key, b"fuzz").await.is_err());
    });
});
