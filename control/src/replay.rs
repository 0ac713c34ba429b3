//! Replay protection for signed requests: each (key, nonce) is accepted once while its
//! timestamp is inside the signature's skew window; after that the timestamp alone refuses it.
//! Memory is bounded per key, not per request: a device heartbeating every second for the
//! whole window must not cost the control plane hundreds of remembered requests, or 10,000
//! devices would not fit. Each key keeps about its latest [`PER_KEY`] requests (a random-keyed
//! 64-bit fingerprint of the nonce each; past the bound the oldest second is forgotten whole)
//! and a floor: a request signed at or before the floor is refused as too old (its signer sent
//! [`PER_KEY`] newer ones since), and the client signs a fresh one.

use std::collections::{BTreeSet, HashMap};
use std::hash::BuildHasher;
use std::sync::Mutex;

use fog_proto::auth::{MAX_SKEW_S, Signed};

/// Requests remembered per key, beyond those of its latest second.
pub const PER_KEY: usize = 256;

/// Most requests one key may sign within one second (all of them are remembered).
pub const PER_SECOND: usize = 10_000;

/// Seconds before a key's newest request whose requests are always remembered, whatever the
/// bound: requests signed that recently may still be in flight (uploading a component).
pub const IN_FLIGHT_S: u64 = 5;

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
    /// One key signed more requests within one second than are remembered per key.
    #[error("more than {PER_SECOND} requests signed by this key within one second; slow down")]
    TooFast,
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
        // Past the bound, forget the oldest seconds whole, so the floor never cuts through a
        // second some of whose requests are still remembered; the latest seconds (requests
        // that may still be in flight) are kept whole, each up to its own bound.
        // Counting one second's requests is needed only once the key holds more than that.
        if window.recent.len() > PER_SECOND
            && window
                .recent
                .range((signed.ts, 0)..=(signed.ts, u64::MAX))
                .count()
                > PER_SECOND
        {
            window.recent.remove(&(signed.ts, fingerprint));
            return Err(ReplayError::TooFast);
        }
        let newest = window.recent.last().map_or(signed.ts, |&(ts, _)| ts);
        while window.recent.len() > PER_KEY {
            let oldest = window
                .recent
                .first()
                .map(|&(ts, _)| ts)
                .expect("over the bound");
            if oldest + IN_FLIGHT_S >= newest {
                break;
            }
            while window.recent.first().is_some_and(|&(ts, _)| ts == oldest) {
                window.recent.pop_first();
            }
            window.floor = Some(window.floor.map_or(oldest, |floor| floor.max(oldest)));
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
        assert!(guard.len() <= PER_KEY && guard.len() > PER_KEY - 4);
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
    fn a_burst_within_one_second_is_remembered_whole_or_refused() {
        let guard = ReplayGuard::default();
        // A burst in second 1000, then one more in 1001: the burst stays remembered.
        for i in 0..PER_SECOND {
            guard
                .admit(&signed("a", &format!("n{i}"), 1000), 1000)
                .unwrap();
        }
        assert_eq!(
            guard.admit(&signed("a", "one-too-many", 1000), 1000),
            Err(ReplayError::TooFast)
        );
        assert_eq!(
            guard.admit(&signed("a", "n7", 1000), 1000),
            Err(ReplayError::Replayed),
            "every request of the burst is remembered"
        );
    }

    #[test]
    fn requests_of_the_last_seconds_are_judged_on_their_nonce_and_older_ones_forgotten_whole() {
        let guard = ReplayGuard::default();
        for i in 0..PER_KEY + 10 {
            guard
                .admit(&signed("a", &format!("n{i}"), 1000), 1000)
                .unwrap();
        }
        // Requests of the last few seconds may still be in flight: still judged on their nonce.
        guard.admit(&signed("a", "next", 1001), 1001).unwrap();
        guard.admit(&signed("a", "late", 1000), 1001).unwrap();
        assert_eq!(
            guard.admit(&signed("a", "n3", 1000), 1001),
            Err(ReplayError::Replayed)
        );
        // Past that, the oldest second is forgotten whole, and refused.
        guard
            .admit(
                &signed("a", "later", 1000 + IN_FLIGHT_S + 1),
                1000 + IN_FLIGHT_S + 1,
            )
            .unwrap();
        assert_eq!(
            guard.admit(&signed("a", "n0", 1000), 1000 + IN_FLIGHT_S + 1),
            Err(ReplayError::Superseded)
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
