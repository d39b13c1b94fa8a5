//! Per-peer circuit breaker.
//!
//! After `threshold` consecutive transient failures the breaker opens and no
//! envelope is sent to that peer for `open_for`; then one probe is let
//! through (half-open). A probe that succeeds closes the breaker, one that
//! fails opens it again. A 422 counts as success: the peer is up and
//! answering, it just refused that one chain.

use tokio::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open { until: Instant },
    HalfOpen,
}

impl BreakerState {
    /// Gauge value: 0 closed, 1 open, 2 half-open.
    pub fn gauge(self) -> i64 {
        match self {
            Self::Closed => 0,
            Self::Open { .. } => 1,
            Self::HalfOpen => 2,
        }
    }
}

#[derive(Debug, Clone)]
pub struct CircuitBreaker {
    threshold: u32,
    open_for: std::time::Duration,
    consecutive_failures: u32,
    state: BreakerState,
}

impl CircuitBreaker {
    /// A `threshold` of 0 is treated as 1.
    pub fn new(threshold: u32, open_for: std::time::Duration) -> Self {
        Self {
            threshold: threshold.max(1),
            open_for,
            consecutive_failures: 0,
            state: BreakerState::Closed,
        }
    }

    pub fn state(&self) -> BreakerState {
        self.state
    }

    /// `None` if a request may go out at `now` (turning an expired open
    /// breaker half-open), otherwise the instant to wait for.
    pub fn blocked_until(&mut self, now: Instant) -> Option<Instant> {
        match self.state {
            BreakerState::Open { until } if now < until => Some(until),
            BreakerState::Open { .. } => {
                self.state = BreakerState::HalfOpen;
                None
            }
            BreakerState::Closed | BreakerState::HalfOpen => None,
        }
    }

    pub fn on_success(&mut self) {
        self.consecutive_failures = 0;
        self.state = BreakerState::Closed;
    }

    pub fn on_failure(&mut self, now: Instant) {
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        let trips = match self.state {
            BreakerState::HalfOpen => true,
            BreakerState::Closed => self.consecutive_failures >= self.threshold,
            BreakerState::Open { .. } => false,
        };
        if trips {
            self.state = BreakerState::Open {
                until: now + self.open_for,
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn opens_after_threshold_and_probes_after_open_period() {
        let t0 = Instant::now();
        let open_for = Duration::from_secs(5);
        let mut b = CircuitBreaker::new(3, open_for);
        for _ in 0..2 {
            assert_eq!(b.blocked_until(t0), None);
            b.on_failure(t0);
        }
        assert_eq!(b.state(), BreakerState::Closed);
        b.on_failure(t0);
        assert_eq!(b.blocked_until(t0), Some(t0 + open_for));
        assert_eq!(b.blocked_until(t0 + Duration::from_secs(4)), Some(t0 + open_for));

        // Half-open probe fails: open again for a full period.
        let t1 = t0 + open_for;
        assert_eq!(b.blocked_until(t1), None);
        assert_eq!(b.state(), BreakerState::HalfOpen);
        b.on_failure(t1);
        assert_eq!(b.blocked_until(t1), Some(t1 + open_for));

        // Probe succeeds: closed, and the failure count starts over.
        let t2 = t1 + open_for;
        assert_eq!(b.blocked_until(t2), None);
        b.on_success();
        assert_eq!(b.state(), BreakerState::Closed);
        b.on_failure(t2);
        b.on_failure(t2);
        assert_eq!(b.blocked_until(t2), None);
    }

    #[test]
    fn success_resets_consecutive_failures() {
        let t0 = Instant::now();
        let mut b = CircuitBreaker::new(2, Duration::from_secs(1));
        b.on_failure(t0);
        b.on_success();
        b.on_failure(t0);
        assert_eq!(b.state(), BreakerState::Closed);
    }
}
