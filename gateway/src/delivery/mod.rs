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

pub(crate) mod answers;
mod backoff;
mod breaker;
pub mod metrics;
mod worker;

pub use crate::clock::{Clock, SystemClock, TokioClock};
pub use backoff::Backoff;
pub use breaker::{BreakerState, CircuitBreaker};
pub use worker::{process_holder_id, DeliveryWorker, DEAD_LETTER_SWEEP_INTERVAL, SINGLE_MODE_FOR};

use crate::problem::Problem;
use crate::wire::Envelope;
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

/// What a peer answered to a batch of envelopes (SPEC §4 batch form).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchAnswer {
    /// One answer per envelope, in request order: what each would have got
    /// alone (a transient one as its `SendError`).
    Results(Vec<Result<PeerAnswer, SendError>>),
    /// The peer does not take the batch form (a v1 gateway: 400, 404 or
    /// 415; or 413, a smaller body limit): send it single envelopes.
    Unsupported,
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

    /// Sends `envelopes` as one batch request. The default says the batch
    /// form is not supported, so a client without it gets single envelopes.
    fn send_batch<'a>(
        &'a self,
        peer: &'a str,
        envelopes: &'a [Envelope],
    ) -> BoxFuture<'a, Result<BatchAnswer, SendError>> {
        let _ = (peer, envelopes);
        Box::pin(async { Ok(BatchAnswer::Unsupported) })
    }
}
