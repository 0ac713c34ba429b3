//! Fuzz Betanet name descriptors as they arrive from a router or the control plane: arbitrary
//! JSON parsed and verified. Nothing may panic, and no forged descriptor verifies.
#![no_main]

use fog_proto::api::NameDescriptor;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(descriptor) = serde_json::from_slice::<NameDescriptor>(data) else {
        return;
    };
    let _ = descriptor.signed_bytes();
    // Random input cannot carry an ed25519 signature over its own body.
    assert!(
        descriptor.verify(0).is_err(),
        "a descriptor nobody signed verified"
    );
});
