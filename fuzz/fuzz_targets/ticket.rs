//! Fuzz access-ticket checks: arbitrary client keys, presented tickets and clocks. Nothing may
//! panic; a forged ticket is refused; a real one is accepted once in its hour and refused after.
#![no_main]

use std::sync::OnceLock;

use arbitrary::Arbitrary;
use fog_htx::tickets::{TicketVerifier, ticket};
use libfuzzer_sys::fuzz_target;
use x25519_dalek::{PublicKey, StaticSecret};

#[derive(Arbitrary, Debug)]
struct Input {
    key_id: Vec<u8>,
    client_private: [u8; 32],
    presented: [u8; 32],
    now_s: u64,
    hour_offset: i8,
}

/// The service's ticket key: derived once, not per input (that is curve arithmetic, not what
/// is fuzzed).
const SERVICE_PRIVATE: [u8; 32] = [9; 32];

fn service_public() -> [u8; 32] {
    static PUBLIC: OnceLock<[u8; 32]> = OnceLock::new();
    *PUBLIC.get_or_init(|| TicketVerifier::new(SERVICE_PRIVATE, b"").public())
}

fuzz_target!(|input: Input| {
    let mut verifier = TicketVerifier::new(SERVICE_PRIVATE, &input.key_id);
    let client_public = PublicKey::from(&StaticSecret::from(input.client_private)).to_bytes();
    let now = input.now_s.min(u64::MAX / 2);
    let hour = now / 3600;
    // Whatever was presented is accepted only if it is the real ticket of an hour in the
    // window around `now` (the fuzzer finds those by copying compared bytes). The tickets are
    // computed only on acceptance, which is rare: most inputs cost one key exchange here.
    if verifier.check(&client_public, &input.presented, now).is_ok() {
        let valid = [hour.saturating_sub(1), hour, hour + 1].iter().any(|h| {
            ticket(&input.client_private, &service_public(), &input.key_id, *h) == input.presented
        });
        assert!(valid, "a forged ticket was accepted");
        return;
    }
    // A real ticket of an hour in the window is accepted once and refused after (a real ticket
    // refused above is caught here too, the verifier having recorded nothing).
    let target = hour.saturating_add_signed(i64::from(input.hour_offset));
    let real = ticket(&input.client_private, &service_public(), &input.key_id, target);
    let within = target + 1 >= hour && target <= hour + 1;
    let first = verifier.check(&client_public, &real, now);
    if within {
        assert!(first.is_ok(), "a real ticket of this hour was refused");
        assert!(
            verifier.check(&client_public, &real, now).is_err(),
            "a ticket was accepted twice"
        );
    } else {
        assert!(first.is_err(), "a ticket outside the hour window was accepted");
    }
});
