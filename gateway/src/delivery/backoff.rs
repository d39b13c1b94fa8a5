//! Exponential backoff with jitter between delivery attempts of one item.

use rand::Rng;
use std::time::Duration;

/// `initial · 2^(failures-1)`, capped at `max`, with "equal jitter": the
/// delay is uniformly drawn from the upper half of that value. The floor
/// keeps a failing peer from being hammered; the jitter keeps the gateways
/// of a federation from retrying in lockstep after a shared outage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
}

impl Backoff {
    /// `max` below `initial` is raised to `initial`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max: max.max(initial),
        }
    }

    /// The un-jittered delay after `failures` consecutive failures (≥ 1).
    pub fn ceiling(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(63);
        let factor = 1_u64 << doublings;
        let nanos = u64::try_from(self.initial.as_nanos())
            .unwrap_or(u64::MAX)
            .saturating_mul(factor);
        Duration::from_nanos(nanos).min(self.max)
    }

    /// The delay before the next attempt after `failures` consecutive
    /// failures. A peer's `Retry-After` is honoured up to `max`.
    pub fn delay(&self, failures: u32, retry_after: Option<Duration>, rng: &mut impl Rng) -> Duration {
        let ceiling = self.ceiling(failures);
        let half = ceiling / 2;
        let jittered = half + rng.gen_range(Duration::ZERO..=ceiling - half);
        match retry_after {
            Some(peer_wish) => jittered.max(peer_wish.min(self.max)),
            None => jittered,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn ceiling_doubles_then_caps() {
        let b = Backoff::new(100 * MS, 1000 * MS);
        let ceilings: Vec<_> = (1..=6).map(|f| b.ceiling(f)).collect();
        assert_eq!(
            ceilings,
            [100 * MS, 200 * MS, 400 * MS, 800 * MS, 1000 * MS, 1000 * MS]
        );
        assert_eq!(b.ceiling(u32::MAX), 1000 * MS, "no overflow");
        assert_eq!(b.ceiling(0), 100 * MS);
    }

    #[test]
    fn delay_stays_in_the_upper_half_and_varies() {
        let b = Backoff::new(100 * MS, 10_000 * MS);
        let mut rng = StdRng::seed_from_u64(7);
        let delays: Vec<_> = (0..200).map(|_| b.delay(4, None, &mut rng)).collect();
        assert!(
            delays.iter().all(|d| (400 * MS..=800 * MS).contains(d)),
            "{delays:?}"
        );
        let distinct: std::collections::HashSet<_> = delays.iter().collect();
        assert!(distinct.len() > 50, "jitter must spread the delays");
    }

    #[test]
    fn retry_after_is_honoured_up_to_max() {
        let b = Backoff::new(100 * MS, 5000 * MS);
        let mut rng = StdRng::seed_from_u64(1);
        assert_eq!(b.delay(1, Some(3000 * MS), &mut rng), 3000 * MS);
        assert_eq!(b.delay(1, Some(60_000 * MS), &mut rng), 5000 * MS);
        assert!(b.delay(1, Some(MS), &mut rng) >= 50 * MS);
    }
}
