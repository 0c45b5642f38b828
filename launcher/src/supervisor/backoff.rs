//! Restart delays: exponential with jitter, capped, so a crash loop neither spins nor stalls.

use std::time::Duration;

/// The delay before the first restart of a worker that failed.
pub const FIRST: Duration = Duration::from_millis(100);
/// The longest delay between two restarts.
pub const CAP: Duration = Duration::from_secs(10);
/// How long a ready worker must have run for its slot's failure count to start over.
pub const STABLE: Duration = Duration::from_secs(10);

/// The delay after `failures` consecutive failed boots (1 = the first failure), spread by
/// `jitter` (0.0..1.0) over ±25% so that workers that crashed together do not restart together.
pub fn delay(failures: u32, jitter: f64) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    let base = FIRST.saturating_mul(1 << doublings).min(CAP);
    base.mul_f64(0.75 + 0.5 * jitter.clamp(0.0, 1.0))
}

/// A small xorshift generator for the jitter; not for anything that needs real randomness.
#[derive(Debug, Clone)]
pub struct Jitter(u64);

impl Jitter {
    pub fn new(seed: u64) -> Self {
        Jitter(seed | 1)
    }

    pub fn next(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_cap() {
        let table = [
            (1, 100),
            (2, 200),
            (3, 400),
            (4, 800),
            (7, 6400),
            (8, 10_000),
            (40, 10_000),
        ];
        for (failures, millis) in table {
            assert_eq!(
                delay(failures, 0.5),
                Duration::from_millis(millis),
                "{failures}"
            );
        }
    }

    #[test]
    fn jitter_spreads_by_a_quarter() {
        assert_eq!(delay(3, 0.0), Duration::from_millis(300));
        assert_eq!(delay(3, 1.0), Duration::from_millis(500));
        let mut jitter = Jitter::new(42);
        let draws: Vec<f64> = (0..1000).map(|_| jitter.next()).collect();
        assert!(draws.iter().all(|x| (0.0..1.0).contains(x)));
        assert!(draws.iter().any(|x| *x < 0.1) && draws.iter().any(|x| *x > 0.9));
    }
}
