//! Wall-clock time for the whole gateway, injectable so tests control it
//! instead of sleeping: store timestamps and dead-letter ages (pipeline,
//! delivery), key-set and credential validity (trust, credential), audit
//! checkpoints. One trait, so a test that moves time moves it for every
//! part at once.

use std::fmt::Debug;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;
use time::OffsetDateTime;

/// Source of wall-clock time (UTC).
pub trait Clock: Send + Sync + Debug {
    fn now(&self) -> OffsetDateTime;

    /// Milliseconds since the Unix epoch (negative before it: every
    /// validity check then fails closed).
    fn now_ms(&self) -> i64 {
        let ms = self.now().unix_timestamp_nanos().div_euclid(1_000_000);
        i64::try_from(ms).unwrap_or(if ms < 0 { i64::MIN } else { i64::MAX })
    }

    /// Seconds since the Unix epoch (rounded down).
    fn now_secs(&self) -> i64 {
        self.now_ms().div_euclid(1000)
    }
}

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }
}

/// Wall-clock time that advances with tokio's clock: a fixed start plus the
/// tokio time elapsed since creation. Under `start_paused` tests, timers and
/// this clock move together, so hours of backoff take no real time.
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    start_wall: OffsetDateTime,
    start: tokio::time::Instant,
}

impl TokioClock {
    pub fn new(start_wall: OffsetDateTime) -> Self {
        Self {
            start_wall,
            start: tokio::time::Instant::now(),
        }
    }
}

impl Clock for TokioClock {
    fn now(&self) -> OffsetDateTime {
        let elapsed: Duration = self.start.elapsed();
        self.start_wall + elapsed
    }
}

/// A clock that only moves when told to (tests, simulations), with
/// millisecond resolution.
#[derive(Debug, Default)]
pub struct ManualClock {
    ms: AtomicI64,
}

impl ManualClock {
    pub fn at_secs(secs: i64) -> Self {
        Self {
            ms: AtomicI64::new(secs.saturating_mul(1000)),
        }
    }

    pub fn set_ms(&self, ms: i64) {
        self.ms.store(ms, Ordering::SeqCst);
    }

    pub fn advance_ms(&self, ms: i64) {
        self.ms.fetch_add(ms, Ordering::SeqCst);
    }

    pub fn advance_secs(&self, secs: i64) {
        self.advance_ms(secs.saturating_mul(1000));
    }
}

impl Clock for ManualClock {
    fn now(&self) -> OffsetDateTime {
        let nanos = i128::from(self.now_ms()) * 1_000_000;
        // Out of `time`'s range (±9999 years): the epoch, so validity
        // checks fail closed rather than panicking.
        OffsetDateTime::from_unix_timestamp_nanos(nanos).unwrap_or(OffsetDateTime::UNIX_EPOCH)
    }

    fn now_ms(&self) -> i64 {
        self.ms.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_clock_reports_one_instant_in_both_forms() {
        let manual = ManualClock::at_secs(1_700_000_000);
        manual.advance_ms(1_234);
        assert_eq!(manual.now_ms(), 1_700_000_001_234);
        assert_eq!(manual.now_secs(), 1_700_000_001);
        assert_eq!(manual.now().unix_timestamp_nanos(), 1_700_000_001_234_000_000);

        manual.set_ms(-1);
        assert_eq!(manual.now_secs(), -1, "rounded down, not toward zero");

        let tokio_clock = TokioClock::new(OffsetDateTime::UNIX_EPOCH + time::Duration::milliseconds(1_500));
        assert!(tokio_clock.now_ms() >= 1_500);
        assert!(SystemClock.now_secs() > 1_700_000_000);
    }
}
