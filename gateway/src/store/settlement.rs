//! What the delivery worker records about the envelopes of one batch, in
//! one transaction ([`Store::settle_batch`](super::Store::settle_batch)).

use serde_json::Value;
use time::OffsetDateTime;

/// The recorded outcome for one outbox item.
#[derive(Debug, Clone, PartialEq)]
pub struct Settlement {
    pub exchange_id: String,
    pub outcome: SettleOutcome,
}

/// How an outbox item leaves (or stays in) the outbox.
#[derive(Debug, Clone, PartialEq)]
pub enum SettleOutcome {
    /// The peer stored it (202, or 200 for a resend): `delivered`.
    Delivered,
    /// The peer refused it for good (problem+json): `rejected`.
    Rejected { problem: Value },
    /// A transient failure: stays at the head as `forwarded` until
    /// `next_attempt_at` ([`Store::record_attempt_failure`](super::Store::record_attempt_failure)).
    Failed {
        error: String,
        next_attempt_at: OffsetDateTime,
    },
    /// Undeliverable for longer than the dead-letter age.
    DeadLettered,
}
