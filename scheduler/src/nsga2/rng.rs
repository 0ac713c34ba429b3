//! A seeded random source with the few draws NSGA-II needs; ChaCha8 so that a seed gives the
//! same stream on every platform and thread count.

use rand_chacha::ChaCha8Rng;
use rand_core::{Rng as _, SeedableRng};

/// Deterministic random numbers for one stream of work.
#[derive(Debug, Clone)]
pub struct Rand(ChaCha8Rng);

impl Rand {
    /// A stream for `seed`.
    pub fn new(seed: u64) -> Rand {
        Rand(ChaCha8Rng::seed_from_u64(seed))
    }

    /// An independent stream for (`seed`, `a`, `b`): used to give every generation and every
    /// offspring pair its own stream, so parallel work draws the same numbers in any order.
    pub fn derive(seed: u64, a: u64, b: u64) -> Rand {
        let mut x =
            seed ^ a.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ b.wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
        // SplitMix64 finaliser: spreads nearby inputs over the whole seed space.
        x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Rand::new(x ^ (x >> 31))
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.0.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in 0..n (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        ((self.0.next_u64() as u128 * n as u128) >> 64) as usize
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        self.uniform() < p
    }
}
