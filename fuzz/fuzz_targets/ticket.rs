//! Fuzz access-ticket checks: arbitrary client keys, presented tickets and clocks. Nothing may
//! panic; a forged ticket is refused; a real one is accepted once in its hour and refused after.
#![no_main]

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

fuzz_target!(|input: Input| {
    let mut verifier = TicketVerifier::new([9; 32], &input.key_id);
    let client_public = PublicKey::from(&StaticSecret::from(input.client_private)).to_bytes();
    let now = input.now_s.min(u64::MAX / 2);
    let real = ticket(
        &input.client_private,
        &verifier.public(),
        &input.key_id,
        (now / 3600).saturating_add_signed(i64::from(input.hour_offset)),
    );
    // A ticket of any hour in the window around `now` is valid (the fuzzer finds them by
    // copying compared bytes); anything else must be refused.
    let hour = now / 3600;
    let valid = [hour.saturating_sub(1), hour, hour + 1]
        .iter()
        .any(|h| ticket(&input.client_private, &verifier.public(), &input.key_id, *h) == input.presented);
    if !valid {
        assert!(verifier.check(&client_public, &input.presented, now).is_err());
    } else {
        return;
    }
    let within = (-1..=1).contains(&input.hour_offset) && now / 3600 >= 1;
    let first = verifier.check(&client_public, &real, now);
    if within {
        assert!(first.is_ok(), "a real ticket of this hour was refused");
        assert!(
            verifier.check(&client_public, &real, now).is_err(),
            "a ticket was accepted twice"
        );
    }
});
