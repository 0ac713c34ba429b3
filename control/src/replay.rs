//! Replay protection for signed requests: each (key, nonce) is accepted once while its
//! timestamp is inside the signature's skew window; after that the timestamp alone refuses it.
//! Memory is bounded per key, not per request: a device heartbeating every second for the
//! whole window must not cost the control plane hundreds of remembered requests, or 10,000
//! devices would not fit. Each key keeps its latest [`PER_KEY`] requests (a random-keyed 64-bit
//! fingerprint of the nonce each) and a floor: a request signed at or before the floor is
//! refused as too old (its signer sent [`PER_KEY`] newer ones since), and the client signs a
//! fresh one.

use std::collections::{BTreeSet, HashMap};
use std::hash::BuildHasher;
use std::sync::Mutex;

use fog_proto::auth::{MAX_SKEW_S, Signed};

/// Requests remembered per key.
pub const PER_KEY: usize = 128;

/// Most keys remembered at once; past it requests from new keys are refused until old ones
/// leave the window (bounded memory whatever a flood of freshly made keys sends).
pub const MAX_KEYS: usize = 250_000;

/// Why a signed request was not admitted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    /// The same key and nonce were accepted before.
    #[error("replayed request: this signature's nonce was already used; sign a new request")]
    Replayed,
    /// The key signed many newer requests since this one, and this one is no longer
    /// remembered well enough to tell whether it is a replay.
    #[error("request signed too long before this key's newer requests; sign a new request")]
    Superseded,
    /// Too many keys signed requests inside one window to remember another.
    #[error("too many signers in the last {MAX_SKEW_S} s; try again shortly")]
    Full,
}

/// What is remembered of the requests seen inside the window.
#[derive(Debug, Default)]
pub struct ReplayGuard {
    inner: Mutex<Seen>,
}

#[derive(Debug, Default)]
struct Seen {
    keys: HashMap<String, Window>,
    /// (unix second after which every request of the key is refused by the skew check, key).
    expiry: BTreeSet<(u64, String)>,
    /// Keys the nonce fingerprints (randomly, per process: nobody can aim for a collision).
    hasher: std::collections::hash_map::RandomState,
}

#[derive(Debug, Default)]
struct Window {
    /// Requests signed at or before this second are refused.
    floor: Option<u64>,
    /// (timestamp, nonce fingerprint) of the latest requests.
    recent: BTreeSet<(u64, u64)>,
    /// This key's entry in `Seen::expiry`.
    expires: u64,
}

impl ReplayGuard {
    /// Admit `signed` once; `now_s` is the control plane's clock.
    pub fn admit(&self, signed: &Signed, now_s: u64) -> Result<(), ReplayError> {
        let mut guard = self.inner.lock().expect("replay lock");
        let seen = &mut *guard;
        while let Some((expires, _)) = seen.expiry.first() {
            if *expires >= now_s {
                break;
            }
            let (_, key) = seen.expiry.pop_first().expect("first exists");
            seen.keys.remove(&key);
        }
        if !seen.keys.contains_key(&signed.key) && seen.keys.len() >= MAX_KEYS {
            return Err(ReplayError::Full);
        }
        let fingerprint = seen.hasher.hash_one(signed.nonce.as_bytes());
        let window = seen.keys.entry(signed.key.clone()).or_default();
        if window.floor.is_some_and(|floor| signed.ts <= floor) {
            return Err(ReplayError::Superseded);
        }
        if !window.recent.insert((signed.ts, fingerprint)) {
            return Err(ReplayError::Replayed);
        }
        // Requests whose timestamp the skew check refuses anyway need no memory.
        while let Some(&(ts, _)) = window.recent.first() {
            if ts + MAX_SKEW_S >= now_s {
                break;
            }
            window.recent.pop_first();
        }
        if window.recent.len() > PER_KEY {
            let (ts, _) = window.recent.pop_first().expect("over the bound");
            window.floor = Some(window.floor.map_or(ts, |floor| floor.max(ts)));
        }
        let expires = window
            .recent
            .last()
            .map_or(signed.ts, |&(ts, _)| ts)
            .max(signed.ts)
            + MAX_SKEW_S;
        let old = std::mem::replace(&mut window.expires, expires);
        if old != expires {
            seen.expiry.remove(&(old, signed.key.clone()));
        }
        seen.expiry.insert((expires, signed.key.clone()));
        Ok(())
    }

    /// How many requests are remembered now.
    pub fn len(&self) -> usize {
        let seen = self.inner.lock().expect("replay lock");
        seen.keys.values().map(|w| w.recent.len()).sum()
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

    #[test]
    fn memory_per_key_is_bounded_and_older_requests_are_refused_past_it() {
        let guard = ReplayGuard::default();
        let start = 10_000;
        for i in 0..(PER_KEY as u64 * 2) {
            guard
                .admit(&signed("a", &format!("n{i}"), start + i / 4), start + i / 4)
                .unwrap();
        }
        assert_eq!(guard.len(), PER_KEY);
        let now = start + PER_KEY as u64 / 2;
        // Signed early in the run: inside the skew window, but past what the key remembers.
        assert_eq!(
            guard.admit(&signed("a", "fresh-nonce", start), now),
            Err(ReplayError::Superseded)
        );
        // Another key is not affected.
        assert_eq!(guard.admit(&signed("b", "n0", start), now), Ok(()));
        // A replay of a remembered request is still a replay.
        let last = PER_KEY as u64 * 2 - 1;
        assert_eq!(
            guard.admit(&signed("a", &format!("n{last}"), start + last / 4), now),
            Err(ReplayError::Replayed)
        );
    }

    #[test]
    fn keys_are_forgotten_when_all_their_requests_leave_the_window() {
        let guard = ReplayGuard::default();
        guard.admit(&signed("a", "n1", 1000), 1000).unwrap();
        guard.admit(&signed("b", "n1", 1100), 1100).unwrap();
        guard
            .admit(
                &signed("c", "n1", 1000 + MAX_SKEW_S + 1),
                1000 + MAX_SKEW_S + 1,
            )
            .unwrap();
        assert_eq!(guard.inner.lock().unwrap().keys.len(), 2, "a is gone");
    }
}
