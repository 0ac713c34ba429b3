//! Per-key rate limits (a token bucket per key, GCRA from the `governor` crate): how a router
//! limits each visitor address and the control plane each signing key.

use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

/// A sustained rate and the burst allowed on top of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Requests per second, sustained.
    pub per_second: NonZeroU32,
    /// Requests at once after a quiet spell.
    pub burst: NonZeroU32,
}

impl Rate {
    /// `per_second` sustained with bursts of `burst`; `None` when `per_second` is 0 (no limit).
    pub fn new(per_second: u32, burst: u32) -> Option<Rate> {
        Some(Rate {
            per_second: NonZeroU32::new(per_second)?,
            burst: NonZeroU32::new(burst.max(1)).expect("at least 1"),
        })
    }
}

/// One token bucket per key.
#[derive(Debug)]
pub struct RateLimit<K: Hash + Eq + Clone> {
    limiter: DefaultKeyedRateLimiter<K>,
    checks: AtomicU64,
}

/// How often (in checks) keys whose buckets are full again are forgotten, so a stream of new
/// keys cannot grow the table for good.
const PRUNE_EVERY: u64 = 4096;

impl<K: Hash + Eq + Clone> RateLimit<K> {
    /// A limit of `rate` per key.
    pub fn new(rate: Rate) -> RateLimit<K> {
        RateLimit {
            limiter: DefaultKeyedRateLimiter::keyed(
                Quota::per_second(rate.per_second).allow_burst(rate.burst),
            ),
            checks: AtomicU64::new(0),
        }
    }

    /// Take one token for `key`: `Ok`, or how long until it may try again.
    pub fn check(&self, key: &K) -> Result<(), Duration> {
        if self.checks.fetch_add(1, Ordering::Relaxed) % PRUNE_EVERY == PRUNE_EVERY - 1 {
            self.limiter.retain_recent();
            self.limiter.shrink_to_fit();
        }
        self.limiter
            .check_key(key)
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }

    /// Keys with a bucket not yet full again (the memory the limit holds).
    pub fn keys(&self) -> usize {
        self.limiter.len()
    }
}

/// A `Retry-After` value: whole seconds, at least 1.
pub fn retry_after_secs(wait: Duration) -> u64 {
    wait.as_secs_f64().ceil().max(1.0) as u64
}

/// The key of a visitor's address: IPv4 as is, IPv6 by its /64 (one host's usual share, so a
/// single host cannot take a fresh bucket per address).
pub fn visitor_key(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V4(_) => addr,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_gets_its_burst_then_waits_while_another_key_does_not() {
        let limit = RateLimit::new(Rate::new(1, 3).unwrap());
        for _ in 0..3 {
            assert_eq!(limit.check(&"a"), Ok(()));
        }
        let wait = limit.check(&"a").unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
        assert_eq!(retry_after_secs(wait), 1);
        assert_eq!(limit.check(&"b"), Ok(()));
        assert!(Rate::new(0, 10).is_none());
    }

    #[test]
    fn visitors_are_keyed_by_ipv4_address_or_ipv6_slash_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(visitor_key(a), visitor_key(b));
        assert_ne!(visitor_key(a), visitor_key(c));
        let mapped: IpAddr = "::ffff:127.0.0.2".parse().unwrap();
        assert_eq!(visitor_key(mapped), "127.0.0.2".parse::<IpAddr>().unwrap());
    }
}
