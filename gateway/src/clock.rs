//! Wall-clock time for the pipeline and the delivery worker, injectable so
//! tests control it. (The trust cache keeps its own second-resolution clock.)

use std::time::Duration;
use time::OffsetDateTime;

/// Source of wall-clock time (UTC). Timestamps written to the store and
/// dead-letter ages come from here.
pub trait Clock: Send + Sync {
    fn now(&self) -> OffsetDateTime;
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
