//! Per-identity token buckets.
//!
//! Keyed by [`ClientIdentity`], not by address: replicas of a credit bank
//! behind one NAT share nothing, and one identity cannot escape its budget by
//! opening more connections.

use crate::transport::ClientIdentity;
use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Above this many tracked identities, full (idle) buckets are forgotten.
const PRUNE_ABOVE: usize = 10_000;

#[derive(Debug)]
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<ClientIdentity, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl RateLimiter {
    /// `rate` tokens per second refill a bucket of `burst` tokens. Both are
    /// floored at 1 so that a zero can never lock every client out.
    pub fn new(rate_per_second: u32, burst: u32) -> Self {
        Self {
            rate: f64::from(rate_per_second.max(1)),
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token for `who`, or says how long until one is available.
    pub fn check(&self, who: &ClientIdentity, now: Instant) -> Result<(), Duration> {
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        if buckets.len() > PRUNE_ABOVE {
            let (rate, burst) = (self.rate, self.burst);
            buckets.retain(|_, b| b.refilled(now, rate, burst) < burst);
        }
        let bucket = buckets.entry(who.clone()).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        let tokens = bucket.refilled(now, self.rate, self.burst);
        if tokens >= 1.0 {
            *bucket = Bucket {
                tokens: tokens - 1.0,
                at: now,
            };
            Ok(())
        } else {
            *bucket = Bucket { tokens, at: now };
            Err(Duration::from_secs_f64((1.0 - tokens) / self.rate))
        }
    }
}

impl Bucket {
    fn refilled(&self, now: Instant, rate: f64, burst: f64) -> f64 {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        (self.tokens + elapsed * rate).min(burst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::Role;

    #[test]
    fn bucket_allows_burst_then_refills() {
        let rl = RateLimiter::new(2, 3);
        let a = ClientIdentity::new("cq", Role::CreditBank);
        let b = ClientIdentity::new("sc", Role::Gateway);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(rl.check(&a, t0).is_ok());
        }
        let wait = rl.check(&a, t0).unwrap_err();
        assert_eq!(wait, Duration::from_millis(500));
        assert!(rl.check(&b, t0).is_ok(), "buckets are per identity");
        assert!(rl.check(&a, t0 + Duration::from_millis(500)).is_ok());
        assert!(rl.check(&a, t0 + Duration::from_millis(500)).is_err());
    }
}
