//! Fuzz the handshake driver: a responder fed arbitrary bytes as the initiator's messages.
//! It must fail cleanly (never panic, never hang on a short input).
#![no_main]

use fog_htx::handshake::{StaticKey, respond};
use libfuzzer_sys::fuzz_target;
use tokio::io::AsyncWriteExt;

fuzz_target!(|data: &[u8]| {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let (mut attacker, mut victim) = tokio::io::duplex(1 << 16);
        attacker.write_all(data).await.unwrap();
        attacker.shutdown().await.unwrap();
        let key = StaticKey::from_private([4; 32]);
        assert!(respond(&mut victim, &key, b"fuzz").await.is_err());
    });
});
