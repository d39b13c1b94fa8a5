//! What the delivery worker records about the envelopes of one batch, in
//! one transaction ([`Store::settle_batch`](super::Store::settle_batch)).

use super::domain::Transition;
use super::StoreError;
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

/// How a backend records one [`SettleOutcome`] inside its transaction.
pub(crate) enum SettleStep<'a> {
    /// Out of the outbox into a terminal status.
    Terminal {
        transition: Transition,
        problem: Option<&'a Value>,
    },
    /// A failed attempt: the item stays at the head until `next_attempt_at`.
    Reschedule {
        error: &'a str,
        next_attempt_at: OffsetDateTime,
    },
}

impl SettleOutcome {
    pub(crate) fn step(&self) -> SettleStep<'_> {
        let terminal = |transition, problem| SettleStep::Terminal { transition, problem };
        match self {
            Self::Delivered => terminal(Transition::Deliver, None),
            Self::Rejected { problem } => terminal(Transition::Reject, Some(problem)),
            Self::DeadLettered => terminal(Transition::DeadLetter, None),
            Self::Failed {
                error,
                next_attempt_at,
            } => SettleStep::Reschedule {
                error,
                next_attempt_at: *next_attempt_at,
            },
        }
    }
}

/// Whether one settlement of a batch was recorded. An item that already
/// left the outbox by another path (the sweep, an operator) fails its
/// checks before writing anything: `false`, and the batch goes on. Any
/// other failure (a lost lease among them) fails the batch.
pub(crate) fn recorded(written: Result<(), StoreError>) -> Result<bool, StoreError> {
    match written {
        Ok(()) => Ok(true),
        Err(e) if e.left_outbox() => Ok(false),
        Err(e) => Err(e),
    }
}
