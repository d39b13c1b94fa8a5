//! Token buckets: requests per client identity ([`RateLimiter`]) and failed
//! authentications per source address ([`SourceLimiter`]).
//!
//! Request budgets are keyed by [`ClientIdentity`], not by address: replicas
//! of a credit bank behind one NAT share nothing, and one identity cannot
//! escape its budget by opening more connections. Only connections that never
//! authenticate are accounted by address, since they have nothing else.

use crate::transport::ClientIdentity;
use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Above this many tracked keys, full (idle) buckets are forgotten.
const PRUNE_ABOVE: usize = 10_000;

/// Token buckets keyed by `K`, all with one rate and burst.
#[derive(Debug)]
struct Buckets<K> {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<K, Bucket>>,
}

#[derive(Debug)]
pub struct RateLimiter {
    buckets: Buckets<ClientIdentity>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl<K: Hash + Eq + Clone> Buckets<K> {
    /// Both values are floored at 1 so that a zero can never lock every
    /// client out.
    fn new(rate_per_second: u32, burst: u32) -> Self {
        Self {
            rate: f64::from(rate_per_second.max(1)),
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Runs `f` on the refilled token count of `key`'s bucket and stores
    /// what it returns as the new count.
    fn with<T>(&self, key: &K, now: Instant, f: impl FnOnce(f64) -> (f64, T)) -> T {
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        if buckets.len() > PRUNE_ABOVE {
            let (rate, burst) = (self.rate, self.burst);
            buckets.retain(|_, b| b.refilled(now, rate, burst) < burst);
        }
        let bucket = buckets.entry(key.clone()).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        let (tokens, out) = f(bucket.refilled(now, self.rate, self.burst));
        *bucket = Bucket { tokens, at: now };
        out
    }

    /// Takes one token, or says how long until one is available.
    fn take(&self, key: &K, now: Instant) -> Result<(), Duration> {
        let rate = self.rate;
        self.with(key, now, |tokens| {
            if tokens >= 1.0 {
                (tokens - 1.0, Ok(()))
            } else {
                (tokens, Err(Duration::from_secs_f64((1.0 - tokens) / rate)))
            }
        })
    }

    /// Whether a token is available, without taking it.
    fn has_token(&self, key: &K, now: Instant) -> bool {
        let buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        buckets
            .get(key)
            .is_none_or(|b| b.refilled(now, self.rate, self.burst) >= 1.0)
    }
}

impl RateLimiter {
    /// `rate` tokens per second refill a bucket of `burst` tokens. Both are
    /// floored at 1 so that a zero can never lock every client out.
    pub fn new(rate_per_second: u32, burst: u32) -> Self {
        Self {
            buckets: Buckets::new(rate_per_second, burst),
        }
    }

    /// Takes one token for `who`, or says how long until one is available.
    pub fn check(&self, who: &ClientIdentity, now: Instant) -> Result<(), Duration> {
        self.buckets.take(who, now)
    }
}

/// Failed authentication attempts per source address.
///
/// Connections that never produce an identity (failed or timed-out
/// handshakes, certificates without a bashu identity, no request in time)
/// each cost their source address a token; an address without a token is
/// refused at `accept`, before any handshake work. Authenticated traffic
/// costs nothing, so a credit bank behind the same address as a broken
/// client is only affected once the broken one has exhausted the burst.
#[derive(Debug)]
pub struct SourceLimiter {
    buckets: Buckets<IpAddr>,
}

impl SourceLimiter {
    pub fn new(rate_per_second: u32, burst: u32) -> Self {
        Self {
            buckets: Buckets::new(rate_per_second, burst),
        }
    }

    /// Whether `ip` may start another handshake now.
    pub fn admits(&self, ip: IpAddr, now: Instant) -> bool {
        self.buckets.has_token(&ip, now)
    }

    /// Records one failed attempt of `ip` (never below zero tokens).
    pub fn charge(&self, ip: IpAddr, now: Instant) {
        self.buckets
            .with(&ip, now, |tokens| ((tokens - 1.0).max(0.0), ()));
    }
}

impl Bucket {
    fn refilled(&self, now: Instant, rate: f64, burst: f64) -> f64 {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        (self.tokens + elapsed * rate).min(burst)
    }
}

/// Envelope requests one peer member may have in flight at once. A batch
/// may hold up to 4 MiB in memory while it is read and verified; an honest
/// sender keeps one request in flight per destination (two briefly, across
/// a lease hand-over between its replicas), so four never slows it down
/// while a hostile peer's streams cannot multiply that memory.
pub const ENVELOPE_REQUESTS_PER_PEER: usize = 4;

/// Peer members tracked at most (distinct gateway identities are few: one
/// per federation member).
const MAX_TRACKED_PEERS: usize = 1024;

/// Bounds the envelope requests in flight per peer member.
#[derive(Default)]
pub struct EnvelopeSlots {
    peers: Mutex<HashMap<String, std::sync::Arc<tokio::sync::Semaphore>>>,
}

impl EnvelopeSlots {
    /// A slot for one request of `member`, held until dropped; `None` when
    /// the member has [`ENVELOPE_REQUESTS_PER_PEER`] in flight already.
    pub fn try_take(&self, member: &str) -> Option<tokio::sync::OwnedSemaphorePermit> {
        let slots = {
            let mut peers = self.peers.lock().unwrap_or_else(PoisonError::into_inner);
            match peers.get(member) {
                Some(s) => std::sync::Arc::clone(s),
                None if peers.len() >= MAX_TRACKED_PEERS => return None,
                None => {
                    let s = std::sync::Arc::new(tokio::sync::Semaphore::new(ENVELOPE_REQUESTS_PER_PEER));
                    peers.insert(member.to_owned(), std::sync::Arc::clone(&s));
                    s
                }
            }
        };
        slots.try_acquire_owned().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::Role;

    #[test]
    fn envelope_slots_bound_each_peer_and_free_on_drop() {
        let slots = EnvelopeSlots::default();
        let held: Vec<_> = (0..ENVELOPE_REQUESTS_PER_PEER)
            .map(|_| slots.try_take("sc").expect("a free slot"))
            .collect();
        assert!(slots.try_take("sc").is_none(), "sc is at its bound");
        assert!(slots.try_take("gz").is_some(), "slots are per member");
        drop(held);
        assert!(slots.try_take("sc").is_some(), "freed when the request ends");
    }

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

    #[test]
    fn failed_attempts_block_their_source_only() {
        let sl = SourceLimiter::new(2, 3);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(sl.admits(a, t0));
            sl.charge(a, t0);
        }
        assert!(!sl.admits(a, t0), "burst of failures used up");
        assert!(sl.admits(b, t0), "buckets are per address");
        assert!(!sl.admits(a, t0 + Duration::from_millis(499)));
        assert!(sl.admits(a, t0 + Duration::from_millis(500)));
        // Charging an empty bucket creates no debt.
        for _ in 0..10 {
            sl.charge(b, t0);
        }
        assert!(sl.admits(b, t0 + Duration::from_millis(500)));
    }
}
