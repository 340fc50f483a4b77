//! The protocol core's only source of randomness: SplitMix64, seeded by the caller.
//!
//! Why hand-written: the core must be deterministic under test (a seed replays a run
//! exactly) and needs only jitter and peer choice, not cryptographic quality; SplitMix64 is
//! ten lines, passes BigCrush, and keeps the core's dependency list to the data types.

/// A seeded pseudo-random generator (SplitMix64).
#[derive(Clone, Debug)]
pub struct Rng {
    state: u64,
}

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng { state: seed }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix(self.state)
    }

    /// Uniform in `0..n` (`n > 0`; the modulo bias is below 2^-40 for the small `n` used
    /// here).
    pub fn below(&mut self, n: u64) -> u64 {
        debug_assert!(n > 0);
        self.next_u64() % n.max(1)
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// `base_ms` scaled by a uniform factor in `[1 - spread, 1 + spread]`.
    pub fn jitter(&mut self, base_ms: u64, spread: f64) -> u64 {
        let factor = 1.0 + spread * (2.0 * self.unit() - 1.0);
        (base_ms as f64 * factor).round().max(0.0) as u64
    }
}

/// The SplitMix64 finaliser: a fixed, well-mixed 64-bit hash of one word. Also used to
/// derive per-node phase offsets from node ids, so they are the same on every run.
pub fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream() {
        let mut a = Rng::new(7);
        let mut b = Rng::new(7);
        let xs: Vec<u64> = (0..5).map(|_| a.next_u64()).collect();
        let ys: Vec<u64> = (0..5).map(|_| b.next_u64()).collect();
        assert_eq!(xs, ys);
        assert_ne!(Rng::new(8).next_u64(), xs[0]);
    }

    #[test]
    fn jitter_stays_in_range() {
        let mut rng = Rng::new(1);
        for _ in 0..1000 {
            let j = rng.jitter(1000, 0.25);
            assert!((750..=1250).contains(&j), "{j}");
            assert!(rng.below(3) < 3);
        }
    }
}
