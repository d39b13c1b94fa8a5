//! The outbox worker: forwards stored exchanges to peer gateways.
//!
//! One task per destination drains that destination's outbox strictly in
//! acceptance order (head-of-line), so a long peer outage drains in order
//! when the peer returns. A 202 settles an item as delivered, a 422 as
//! rejected (terminal; the worker moves on); anything else is transient and
//! retried with exponential backoff and jitter behind a per-peer circuit
//! breaker. Separately, a sweep dead-letters every item older than the
//! dead-letter age in one store transaction, whatever its attempts: a
//! backlog behind a dead peer expires together, not one item per attempt.

mod backoff;
mod breaker;
mod clock;
pub mod metrics;
mod worker;

pub use backoff::Backoff;
pub use breaker::{BreakerState, CircuitBreaker};
pub use clock::{Clock, SystemClock, TokioClock};
pub use worker::{process_holder_id, DeliveryWorker, DEAD_LETTER_SWEEP_INTERVAL};

use crate::pipeline::Envelope;
use crate::problem::Problem;
use futures::future::BoxFuture;
use std::time::Duration;

/// What a peer gateway answered to `POST /v1/federation/envelopes`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerAnswer {
    /// 202: durably stored in the peer's inbox.
    Accepted,
    /// 422: the chain does not verify at the peer. Terminal.
    Rejected(Problem),
}

/// A delivery attempt that may succeed if repeated later.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    #[error("cannot connect to peer: {0}")]
    Connect(String),
    #[error("peer did not answer in time")]
    Timeout,
    /// 5xx, or any status the contract does not define for this route.
    #[error("peer answered HTTP {status}")]
    Status { status: u16 },
    /// 429; `retry_after` is the peer's `Retry-After`, if it sent one.
    #[error("peer is rate limiting")]
    RateLimited { retry_after: Option<Duration> },
    /// A 2xx/422 whose body is not what the contract says.
    #[error("invalid answer from peer: {0}")]
    Protocol(String),
}

/// Sends envelopes to peer gateways. The gateway implements it over mTLS;
/// tests use fakes. Object safe so the worker holds `Arc<dyn PeerClient>`.
pub trait PeerClient: Send + Sync {
    /// Sends `envelope` to the gateway of member `peer`.
    fn send<'a>(
        &'a self,
        peer: &'a str,
        envelope: &'a Envelope,
    ) -> BoxFuture<'a, Result<PeerAnswer, SendError>>;
}
