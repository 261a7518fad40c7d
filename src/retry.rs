//! Backoff between attempts: exponential from `retry.initial_seconds`, capped at
//! `retry.max_seconds`, with jitter from a seeded source so that a fleet does not retry
//! in step and a failing seed reproduces. Pure.

use std::time::Duration;

/// A small seeded PRNG (xorshift64*). Not for secrets; for spreading retries.
#[derive(Debug, Clone)]
pub struct Jitter(u64);

impl Jitter {
    pub fn new(seed: u64) -> Jitter {
        // xorshift's state must not be zero.
        Jitter(seed | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A fraction in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The wait before attempt `attempt + 1` after `attempt` failures (1-based): half the
/// exponential step fixed, half random ("equal jitter"), so it never collapses to zero.
pub fn backoff(attempt: u32, initial: Duration, max: Duration, jitter: &mut Jitter) -> Duration {
    let exp = attempt.saturating_sub(1).min(30);
    let step = initial.saturating_mul(1u32 << exp).min(max);
    step / 2 + step.mul_f64(jitter.unit() / 2.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn grows_exponentially_within_half_and_whole_step() {
        let mut j = Jitter::new(42);
        for attempt in 1..=8u32 {
            let step = S * (1 << (attempt - 1));
            let d = backoff(attempt, S, Duration::from_secs(300), &mut j);
            assert!(d >= step / 2 && d <= step, "attempt {attempt}: {d:?}");
        }
    }

    #[test]
    fn is_capped_at_max_even_for_huge_attempts() {
        let mut j = Jitter::new(7);
        let max = Duration::from_secs(300);
        for attempt in [9, 20, 31, 1000, u32::MAX] {
            let d = backoff(attempt, S, max, &mut j);
            assert!(d <= max && d >= max / 2, "attempt {attempt}: {d:?}");
        }
    }

    #[test]
    fn same_seed_same_waits() {
        let (mut a, mut b) = (Jitter::new(99), Jitter::new(99));
        let wa: Vec<_> = (1..10).map(|n| backoff(n, S, S * 60, &mut a)).collect();
        let wb: Vec<_> = (1..10).map(|n| backoff(n, S, S * 60, &mut b)).collect();
        assert_eq!(wa, wb);
        let mut c = Jitter::new(100);
        let wc: Vec<_> = (1..10).map(|n| backoff(n, S, S * 60, &mut c)).collect();
        assert_ne!(wa, wc);
    }
}
