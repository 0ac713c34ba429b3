//! Replay protection for signed requests: each (key, nonce) is accepted once while its
//! timestamp is inside the signature's skew window; after that the timestamp alone refuses it,
//! so the memory needed is bounded by the requests of one window.

use std::collections::{BTreeSet, HashSet};
use std::sync::Mutex;

use fog_proto::auth::{MAX_SKEW_S, Signed};

/// Most signed requests remembered at once; past it new requests are refused until old ones
/// leave the window (bounded memory whatever a flood of freshly made keys sends).
pub const MAX_REMEMBERED: usize = 1_000_000;

/// Why a signed request was not admitted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    /// The same key and nonce were accepted before.
    #[error("replayed request: this signature's nonce was already used; sign a new request")]
    Replayed,
    /// Too many signed requests inside one window to remember another.
    #[error("too many signed requests in the last {MAX_SKEW_S} s; try again shortly")]
    Full,
}

/// The (key, nonce) pairs seen inside the window, with when each may be forgotten.
#[derive(Debug, Default)]
pub struct ReplayGuard {
    inner: Mutex<Seen>,
}

#[derive(Debug, Default)]
struct Seen {
    pairs: HashSet<(String, String)>,
    /// (unix second after which the pair's timestamp is refused anyway, key, nonce).
    expiry: BTreeSet<(u64, String, String)>,
}

impl ReplayGuard {
    /// Admit `signed` once; `now_s` is the control plane's clock.
    pub fn admit(&self, signed: &Signed, now_s: u64) -> Result<(), ReplayError> {
        let mut seen = self.inner.lock().expect("replay lock");
        while let Some(first) = seen.expiry.first() {
            if first.0 >= now_s {
                break;
            }
            let (_, key, nonce) = seen.expiry.pop_first().expect("first exists");
            seen.pairs.remove(&(key, nonce));
        }
        let pair = (signed.key.clone(), signed.nonce.clone());
        if seen.pairs.contains(&pair) {
            return Err(ReplayError::Replayed);
        }
        if seen.pairs.len() >= MAX_REMEMBERED {
            return Err(ReplayError::Full);
        }
        seen.expiry
            .insert((signed.ts + MAX_SKEW_S, pair.0.clone(), pair.1.clone()));
        seen.pairs.insert(pair);
        Ok(())
    }

    /// How many pairs are remembered now.
    pub fn len(&self) -> usize {
        self.inner.lock().expect("replay lock").pairs.len()
    }

    /// True when nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signed(key: &str, nonce: &str, ts: u64) -> Signed {
        Signed {
            key: key.into(),
            ts,
            nonce: nonce.into(),
        }
    }

    #[test]
    fn a_nonce_is_accepted_once_per_key() {
        let guard = ReplayGuard::default();
        assert_eq!(guard.admit(&signed("a", "n1", 1000), 1000), Ok(()));
        assert_eq!(
            guard.admit(&signed("a", "n1", 1000), 1001),
            Err(ReplayError::Replayed)
        );
        assert_eq!(guard.admit(&signed("a", "n2", 1000), 1001), Ok(()));
        assert_eq!(guard.admit(&signed("b", "n1", 1000), 1001), Ok(()));
    }

    #[test]
    fn pairs_are_forgotten_once_their_timestamp_is_outside_the_window() {
        let guard = ReplayGuard::default();
        guard.admit(&signed("a", "n1", 1000), 1000).unwrap();
        guard.admit(&signed("a", "n2", 1200), 1200).unwrap();
        assert_eq!(guard.len(), 2);
        // At 1000 + skew + 1 the first pair's timestamp is refused by the skew check anyway.
        guard
            .admit(&signed("a", "n3", 1301), 1000 + MAX_SKEW_S + 1)
            .unwrap();
        assert_eq!(guard.len(), 2);
    }
}
