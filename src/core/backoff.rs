//! Retry delays: exponential with a cap and full jitter.
//!
//! The delay before retry `n` (after the `n`th failed attempt) is drawn uniformly from
//! `[0, min(cap, base × factorⁿ⁻¹)]` — "full jitter", which spreads a burst of failures over the
//! whole window so retries do not arrive in lockstep.

/// The retry backoff of a queue.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Backoff {
    /// Upper bound of the first retry's delay. Defaults to 1 s.
    pub base_ms: u64,
    /// Growth of the upper bound per attempt. Defaults to 2.
    pub factor: f64,
    /// Largest delay ever chosen. Defaults to 1 h.
    pub cap_ms: u64,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { base_ms: 1_000, factor: 2.0, cap_ms: 3_600_000 }
    }
}

impl Backoff {
    /// The largest delay after failed attempt `attempt` (1-based).
    pub fn ceiling_ms(&self, attempt: u32) -> u64 {
        let exponent = attempt.saturating_sub(1).min(1_000) as i32;
        let raw = self.base_ms as f64 * self.factor.powi(exponent);
        if raw.is_finite() && raw < self.cap_ms as f64 { raw as u64 } else { self.cap_ms }
    }

    /// A delay after failed attempt `attempt`, drawn with full jitter from `rng`.
    pub fn delay_ms(&self, attempt: u32, rng: &mut fastrand::Rng) -> u64 {
        rng.u64(0..=self.ceiling_ms(attempt))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn default_ceilings_double_until_the_cap() {
        let b = Backoff::default();
        assert_eq!(b.ceiling_ms(1), 1_000);
        assert_eq!(b.ceiling_ms(2), 2_000);
        assert_eq!(b.ceiling_ms(3), 4_000);
        assert_eq!(b.ceiling_ms(13), 3_600_000);
        assert_eq!(b.ceiling_ms(u32::MAX), 3_600_000);
    }

    #[test]
    fn jitter_spreads_over_the_whole_window() {
        let b = Backoff::default();
        let mut rng = fastrand::Rng::with_seed(7);
        let delays: Vec<u64> = (0..2_000).map(|_| b.delay_ms(3, &mut rng)).collect();
        assert!(delays.iter().any(|&d| d < 1_000), "some delay in the lowest quarter");
        assert!(delays.iter().any(|&d| d > 3_000), "some delay in the highest quarter");
    }

    proptest! {
        #[test]
        fn delay_stays_within_zero_and_the_ceiling(
            base in 0u64..100_000, factor in 1.0f64..10.0, cap in 0u64..10_000_000,
            attempt in 1u32..200, seed: u64,
        ) {
            let b = Backoff { base_ms: base, factor, cap_ms: cap };
            let mut rng = fastrand::Rng::with_seed(seed);
            let d = b.delay_ms(attempt, &mut rng);
            prop_assert!(d <= b.ceiling_ms(attempt));
            prop_assert!(b.ceiling_ms(attempt) <= cap);
        }

        #[test]
        fn ceiling_never_shrinks_with_more_attempts(base in 0u64..100_000, factor in 1.0f64..10.0, cap in 0u64..10_000_000, attempt in 1u32..200) {
            let b = Backoff { base_ms: base, factor, cap_ms: cap };
            prop_assert!(b.ceiling_ms(attempt) <= b.ceiling_ms(attempt + 1));
        }
    }
}
