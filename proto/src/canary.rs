//! Spot checks (canaries): the known-answer requests the control plane has routers send to the
//! canary component on each device, and the answer it expects. The formula is the one the
//! canary guest (`guest-examples/canary`) computes, so a device that runs it faithfully answers
//! exactly this, and one that corrupts responses does not.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::api::HtxEndpoint;

/// The name the canary runs under on every device; no developer may publish an app by it.
pub const APP: &str = "fog-canary";

/// Domain separation: the answer is useful for nothing but this check.
const LABEL: &[u8] = b"fog-canary-v1";

/// Most hash rounds one check may ask for (the guest refuses more).
pub const MAX_ROUNDS: u32 = 1000;

/// Most body bytes a router reads from a canary's answer (a right one is 64).
pub const MAX_ANSWER_BYTES: usize = 1024;

/// Most challenges handed out, or answers reported, in one exchange.
pub const MAX_BATCH: usize = 4096;

/// The path (with query) that asks the canary for `nonce` hashed `rounds` times.
pub fn path(nonce: &[u8; 16], rounds: u32) -> String {
    format!("/{}?rounds={rounds}", hex::encode(nonce))
}

/// The answer a faithful device gives: hex of `H_rounds`, where
/// `H_1 = sha256("fog-canary-v1" ‖ nonce)` and `H_(i+1) = sha256(H_i)`.
pub fn expected(nonce: &[u8; 16], rounds: u32) -> String {
    let mut hash: [u8; 32] = Sha256::new()
        .chain_update(LABEL)
        .chain_update(nonce)
        .finalize()
        .into();
    for _ in 1..rounds.max(1) {
        hash = Sha256::digest(hash).into();
    }
    hex::encode(hash)
}

/// One check a router is to carry: send `GET path` to the canary on `device`, reached like a
/// replica in the routes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Challenge {
    /// Names this check in the answer.
    pub id: String,
    /// The device whose canary must answer.
    pub device: String,
    /// Its plain-HTTP address, if it listens (local development).
    #[serde(default)]
    pub addr: Option<String>,
    /// Its Noise key and HTX listener, as its last heartbeat announced them.
    #[serde(default)]
    pub htx: Option<HtxEndpoint>,
    /// Path and query to request from the canary.
    pub path: String,
}

/// What a router carried back for one [`Challenge`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Answer {
    /// The challenge's id.
    pub id: String,
    /// The device's answer, if it gave one: its status and body (at most
    /// [`MAX_ANSWER_BYTES`], hex-encoded so any bytes survive JSON).
    #[serde(default)]
    pub reply: Option<Reply>,
    /// Why there is no reply (unreachable, timed out, not serving the canary now).
    #[serde(default)]
    pub error: Option<String>,
}

/// A device's HTTP answer to a check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// The body, hex.
    pub body_hex: String,
}

/// `POST /v1/canary/answers`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Answers {
    /// One per challenge carried.
    pub answers: Vec<Answer>,
}

/// `POST /v1/canary/challenges` answers this.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Challenges {
    /// Checks due now.
    pub challenges: Vec<Challenge>,
}

/// How a device fared in one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// 200 with the expected body.
    Right,
    /// The device answered as the app (no `x-fog-error` of Fog's own), and not with the
    /// expected 200 and body: it ran the check and got it wrong, or changed the answer.
    Wrong,
    /// No answer from the app: unreachable, timed out, or the host said it does not serve it.
    Unanswered,
}

/// Judge what a router carried back for a check of `nonce` and `rounds`.
pub fn judge(nonce: &[u8; 16], rounds: u32, answer: &Answer) -> Verdict {
    match &answer.reply {
        None => Verdict::Unanswered,
        Some(reply) => {
            let right = reply.status == 200
                && hex::decode(&reply.body_hex)
                    .is_ok_and(|body| body == expected(nonce, rounds).as_bytes());
            if right {
                Verdict::Right
            } else {
                Verdict::Wrong
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, body: &[u8]) -> Answer {
        Answer {
            id: "1".into(),
            reply: Some(Reply {
                status,
                body_hex: hex::encode(body),
            }),
            error: None,
        }
    }

    #[test]
    fn the_expected_answer_is_sha256_of_label_and_nonce_then_rehashed() {
        let nonce = [7u8; 16];
        let mut first = LABEL.to_vec();
        first.extend_from_slice(&nonce);
        let h1 = Sha256::digest(&first);
        assert_eq!(expected(&nonce, 1), hex::encode(h1));
        assert_eq!(expected(&nonce, 2), hex::encode(Sha256::digest(h1)));
        assert_ne!(expected(&nonce, 2), expected(&[8u8; 16], 2));
        assert_eq!(path(&nonce, 3), format!("/{}?rounds=3", "07".repeat(16)));
    }

    #[test]
    fn only_the_exact_answer_with_200_is_right() {
        let nonce = [1u8; 16];
        let good = expected(&nonce, 5);
        assert_eq!(
            judge(&nonce, 5, &answer(200, good.as_bytes())),
            Verdict::Right
        );
        // Another round count, a flipped bit, a trailing newline, another status: wrong.
        assert_eq!(
            judge(&nonce, 4, &answer(200, good.as_bytes())),
            Verdict::Wrong
        );
        let mut flipped = good.clone().into_bytes();
        flipped[0] ^= 1;
        assert_eq!(judge(&nonce, 5, &answer(200, &flipped)), Verdict::Wrong);
        assert_eq!(
            judge(&nonce, 5, &answer(200, format!("{good}\n").as_bytes())),
            Verdict::Wrong
        );
        assert_eq!(
            judge(&nonce, 5, &answer(500, good.as_bytes())),
            Verdict::Wrong
        );
        let mut garbled = answer(200, good.as_bytes());
        garbled.reply.as_mut().unwrap().body_hex.push('z');
        assert_eq!(judge(&nonce, 5, &garbled), Verdict::Wrong);
    }

    #[test]
    fn no_reply_is_unanswered_not_wrong() {
        let missing = Answer {
            id: "1".into(),
            reply: None,
            error: Some("timed out".into()),
        };
        assert_eq!(judge(&[0; 16], 1, &missing), Verdict::Unanswered);
    }
}
