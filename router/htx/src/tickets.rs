//! Access tickets (Betanet 1.1): who may open a visitor connection.
//!
//! A client with key pair (cliPriv, cliPub) and the service's ticket key ticketPub computes
//! `shared = X25519(cliPriv, ticketPub)`, `hour = floor(unix / 3600)`,
//! `salt = SHA-256("betanet-ticket-v1" ‖ keyID ‖ u64be(hour))` and
//! `ticket = HKDF-SHA256(ikm = shared, salt, info = "", 32)`. The service recomputes it from
//! (ticketPriv, cliPub), accepts the hours −1..+1 around its clock, and rejects a second use of
//! the same (cliPub, hour) within 2 hours.

use std::collections::HashMap;

use hkdf::Hkdf;
use sha2::{Digest, Sha256};
use x25519_dalek::{PublicKey, StaticSecret};

use crate::HtxError;

/// The ticket for `hour`.
pub fn ticket(
    client_private: &[u8; 32],
    ticket_public: &[u8; 32],
    key_id: &[u8],
    hour: u64,
) -> [u8; 32] {
    let shared =
        StaticSecret::from(*client_private).diffie_hellman(&PublicKey::from(*ticket_public));
    derive(shared.as_bytes(), key_id, hour)
}

fn derive(shared: &[u8; 32], key_id: &[u8], hour: u64) -> [u8; 32] {
    let mut salt = Sha256::new();
    salt.update(b"betanet-ticket-v1");
    salt.update(key_id);
    salt.update(hour.to_be_bytes());
    let salt = salt.finalize();
    let mut out = [0u8; 32];
    Hkdf::<Sha256>::new(Some(&salt), shared)
        .expand(&[], &mut out)
        .expect("32 bytes is a valid HKDF output");
    out
}

/// The service side: checks tickets and remembers which were used.
pub struct TicketVerifier {
    private: [u8; 32],
    key_id: Vec<u8>,
    /// (client public key, hour) → already used.
    used: HashMap<([u8; 32], u64), ()>,
}

impl std::fmt::Debug for TicketVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TicketVerifier")
            .field("used", &self.used.len())
            .finish_non_exhaustive()
    }
}

impl TicketVerifier {
    /// A verifier for the ticket key `private` named `key_id`.
    pub fn new(private: [u8; 32], key_id: &[u8]) -> TicketVerifier {
        TicketVerifier {
            private,
            key_id: key_id.to_vec(),
            used: HashMap::new(),
        }
    }

    /// The ticket public key clients need.
    pub fn public(&self) -> [u8; 32] {
        PublicKey::from(&StaticSecret::from(self.private)).to_bytes()
    }

    /// Accept `ticket` from `client_public` at unix time `now_s`, once.
    pub fn check(
        &mut self,
        client_public: &[u8; 32],
        presented: &[u8; 32],
        now_s: u64,
    ) -> Result<(), HtxError> {
        let now_hour = now_s / 3600;
        // Forget uses older than 2 hours: they can no longer be replayed (hour window is ±1).
        self.used.retain(|(_, hour), _| hour + 2 >= now_hour);
        let shared =
            StaticSecret::from(self.private).diffie_hellman(&PublicKey::from(*client_public));
        for hour in [now_hour.saturating_sub(1), now_hour, now_hour + 1] {
            let expected = derive(shared.as_bytes(), &self.key_id, hour);
            // Constant-time comparison of the 32 bytes.
            let same = expected
                .iter()
                .zip(presented)
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0;
            if same {
                if self.used.insert((*client_public, hour), ()).is_some() {
                    return Err(HtxError::Malformed {
                        what: "access ticket",
                        reason: "already used (replay)".into(),
                    });
                }
                return Ok(());
            }
        }
        Err(HtxError::Malformed {
            what: "access ticket",
            reason: "not valid for this service and hour".into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tickets_are_accepted_once_within_an_hour_either_side() {
        let mut service = TicketVerifier::new([9u8; 32], b"key-1");
        let client_private = [5u8; 32];
        let client_public = PublicKey::from(&StaticSecret::from(client_private)).to_bytes();
        let now = 1_795_000_000u64;
        let hour = now / 3600;
        let t = ticket(&client_private, &service.public(), b"key-1", hour);
        assert_eq!(service.check(&client_public, &t, now), Ok(()));
        assert!(
            service
                .check(&client_public, &t, now)
                .unwrap_err()
                .to_string()
                .contains("replay")
        );
        // The next hour's and the previous hour's tickets are fine once each.
        let next = ticket(&client_private, &service.public(), b"key-1", hour + 1);
        assert_eq!(service.check(&client_public, &next, now), Ok(()));
        let previous = ticket(&client_private, &service.public(), b"key-1", hour - 1);
        assert_eq!(service.check(&client_public, &previous, now), Ok(()));
        // Too old, another key id, another client: refused.
        let old = ticket(&client_private, &service.public(), b"key-1", hour - 2);
        assert!(service.check(&client_public, &old, now).is_err());
        let other_id = ticket(&client_private, &service.public(), b"key-2", hour);
        assert!(
            service
                .check(&client_public, &other_id, now + 3600)
                .is_err()
        );
        let stranger = PublicKey::from(&StaticSecret::from([6u8; 32])).to_bytes();
        assert!(service.check(&stranger, &t, now).is_err());
        // Three hours later the old uses are forgotten, and the old tickets are out of range.
        assert!(service.check(&client_public, &t, now + 3 * 3600).is_err());
    }
}
