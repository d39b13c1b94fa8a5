//! Values that cross the [`Store`](super::Store) seam.
//!
//! Timestamps are `OffsetDateTime` in UTC and are stored with nanosecond
//! precision, so a value read back compares equal to the one written.

use serde_json::Value;
use std::fmt;
use std::str::FromStr;
use time::OffsetDateTime;

/// Lifecycle of an exchange on the origin side (SPEC §4 wire names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ExchangeStatus {
    /// Durably stored in the outbox; no delivery attempt yet.
    Accepted,
    /// At least one delivery attempt made; still waiting for a 202.
    Forwarded,
    /// The peer answered 202: durably in the destination inbox.
    Delivered,
    /// The peer answered 422 with a problem. Terminal until an operator retries.
    Rejected,
    /// Undeliverable past the configured age. Terminal until an operator retries.
    DeadLettered,
}

impl ExchangeStatus {
    /// Every status, in lifecycle order.
    pub const ALL: [ExchangeStatus; 5] = [
        Self::Accepted,
        Self::Forwarded,
        Self::Delivered,
        Self::Rejected,
        Self::DeadLettered,
    ];

    /// The wire name (`accepted`, …, `dead-lettered`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Accepted => "accepted",
            Self::Forwarded => "forwarded",
            Self::Delivered => "delivered",
            Self::Rejected => "rejected",
            Self::DeadLettered => "dead-lettered",
        }
    }

    /// Still in the outbox, i.e. the delivery worker owns it.
    pub fn is_pending(self) -> bool {
        matches!(self, Self::Accepted | Self::Forwarded)
    }

    /// Terminal states an operator may put back in the outbox.
    pub fn is_retryable(self) -> bool {
        matches!(self, Self::Rejected | Self::DeadLettered)
    }
}

impl fmt::Display for ExchangeStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that is not one of the five status wire names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown exchange status {0:?}")]
pub struct UnknownStatus(pub String);

impl FromStr for ExchangeStatus {
    type Err = UnknownStatus;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| UnknownStatus(s.to_owned()))
    }
}

/// Where an exchange is in its lifecycle, with the data only that state has:
/// a problem exists only for a rejection, a settle time only once settled.
#[derive(Debug, Clone, PartialEq)]
pub enum ExchangeState {
    Accepted,
    Forwarded,
    Delivered {
        at: OffsetDateTime,
    },
    /// `problem` is the problem+json body the peer answered with.
    Rejected {
        at: OffsetDateTime,
        problem: Value,
    },
    DeadLettered {
        at: OffsetDateTime,
    },
}

impl ExchangeState {
    pub fn status(&self) -> ExchangeStatus {
        match self {
            Self::Accepted => ExchangeStatus::Accepted,
            Self::Forwarded => ExchangeStatus::Forwarded,
            Self::Delivered { .. } => ExchangeStatus::Delivered,
            Self::Rejected { .. } => ExchangeStatus::Rejected,
            Self::DeadLettered { .. } => ExchangeStatus::DeadLettered,
        }
    }

    /// When the exchange reached its terminal state, if it has.
    pub fn settled_at(&self) -> Option<OffsetDateTime> {
        match self {
            Self::Accepted | Self::Forwarded => None,
            Self::Delivered { at } | Self::Rejected { at, .. } | Self::DeadLettered { at } => Some(*at),
        }
    }
}

/// An exchange accepted from this member's credit bank, to be stored with
/// its outbox entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewExchange {
    pub exchange_id: String,
    /// The credential's `id` (idempotency key together with `origin`).
    pub credential_id: String,
    /// Lowercase hex SHA-256 of the original JWS bytes.
    pub credential_digest: String,
    pub origin: String,
    pub destination: String,
    /// `[original, interchange]`: what the envelope carries.
    pub chain: Vec<String>,
    pub accepted_at: OffsetDateTime,
}

/// An exchange as stored on the origin side.
#[derive(Debug, Clone, PartialEq)]
pub struct Exchange {
    /// Acceptance sequence: strictly increasing in acceptance order.
    pub seq: u64,
    pub exchange_id: String,
    pub credential_id: String,
    pub credential_digest: String,
    pub origin: String,
    pub destination: String,
    pub state: ExchangeState,
    pub accepted_at: OffsetDateTime,
    /// First delivery attempt, if any was made.
    pub forwarded_at: Option<OffsetDateTime>,
    /// Last change of any field.
    pub updated_at: OffsetDateTime,
    /// Delivery attempts made so far (failed and successful).
    pub attempts: u32,
    /// Error of the last failed attempt, for operators.
    pub last_error: Option<String>,
    /// When the delivery worker may next try, while the exchange is in the
    /// outbox (`None` once it has left it).
    pub next_attempt_at: Option<OffsetDateTime>,
}

impl Exchange {
    pub fn status(&self) -> ExchangeStatus {
        self.state.status()
    }

    pub fn delivered_at(&self) -> Option<OffsetDateTime> {
        match self.state {
            ExchangeState::Delivered { at } => Some(at),
            _ => None,
        }
    }

    /// The peer's problem+json if the exchange was rejected.
    pub fn problem(&self) -> Option<&Value> {
        match &self.state {
            ExchangeState::Rejected { problem, .. } => Some(problem),
            _ => None,
        }
    }
}

/// An exchange waiting in the outbox for delivery to `destination`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxItem {
    /// Acceptance sequence; the outbox drains per destination in this order.
    pub seq: u64,
    pub exchange_id: String,
    pub origin: String,
    pub destination: String,
    pub chain: Vec<String>,
    /// When the item (re-)entered the outbox: acceptance, or an operator
    /// retry. Dead-lettering age counts from here, so a retried item gets a
    /// full delivery window again.
    pub queued_at: OffsetDateTime,
    pub next_attempt_at: OffsetDateTime,
    /// Failed attempts since `queued_at`; drives the backoff.
    pub attempts: u32,
}

/// An outbox item the dead-letter sweep took out of the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpiredItem {
    pub exchange_id: String,
    pub destination: String,
}

/// An envelope received from a peer gateway, to be stored in the inbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewInboxItem {
    pub exchange_id: String,
    pub origin: String,
    /// `id` of the original credential (first link): the inbox holds each
    /// original of an origin at most once.
    pub credential_id: String,
    pub received_at: OffsetDateTime,
    /// `[original, interchange, home]`; the last link is the credential the
    /// credit bank receives.
    pub chain: Vec<String>,
}

/// An item of this member's inbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboxItem {
    /// Strictly increasing in receipt order; never reused.
    pub cursor: u64,
    pub exchange_id: String,
    pub origin: String,
    pub received_at: OffsetDateTime,
    pub chain: Vec<String>,
}

impl InboxItem {
    /// The home-framework credential (last chain link).
    pub fn credential(&self) -> &str {
        self.chain.last().map(String::as_str).unwrap_or_default()
    }
}

/// Outcome of an idempotent insert.
#[derive(Debug, Clone, PartialEq)]
pub enum Inserted<T> {
    /// Newly stored (and durable).
    Created(T),
    /// The same thing was stored before; this is the stored row.
    Existing(T),
    /// The idempotency key is taken by different content.
    Conflict { existing_exchange_id: String },
}

impl<T> Inserted<T> {
    /// The stored row for `Created` and `Existing`.
    pub fn row(&self) -> Option<&T> {
        match self {
            Self::Created(t) | Self::Existing(t) => Some(t),
            Self::Conflict { .. } => None,
        }
    }

    pub fn is_created(&self) -> bool {
        matches!(self, Self::Created(_))
    }
}

/// The right to deliver to one destination until `expires_at`; `token` is
/// the fencing token (SPEC §5). Obtained from
/// [`Store::acquire_lease`](super::Store::acquire_lease); the delivery
/// settles take it and fail with `LeaseLost` once another holder has taken
/// the destination over (a greater token is stored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub destination: String,
    /// Who holds it: one delivery worker process (hostname, pid, random suffix).
    pub holder: String,
    /// Strictly increasing per destination across takeovers; the same across
    /// renewals.
    pub token: u64,
    pub expires_at: OffsetDateTime,
}

/// Result of a successful audit chain verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditReport {
    /// Number of entries checked.
    pub entries: u64,
    /// Hex hash of the last entry (all zeros for an empty log).
    pub head_hash: String,
    /// Exchange rows found to match their latest audit entry.
    pub exchanges: u64,
    /// Inbox rows found to match their latest audit entry.
    pub inbox_items: u64,
    /// Rows (of both tables) whose latest audit entry was written before
    /// entries recorded row digests: present in the log, content unchecked.
    pub rows_predating_digests: u64,
}

/// The current end of the audit chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditHead {
    /// Number of entries (0 for an empty log).
    pub seq: u64,
    /// Hex hash of entry `seq` (all zeros for an empty log).
    pub hash: String,
}

/// A checkpoint JWS this gateway signed, as kept in the store. `seq`,
/// `head` and `at` copy the payload for ordering; verification reads the
/// JWS, never these columns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCheckpoint {
    pub seq: u64,
    pub head: String,
    /// Unix seconds, as signed.
    pub at: i64,
    pub jws: String,
}

/// A peer's checkpoint JWS this gateway fetched and kept (witnessing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WitnessedCheckpoint {
    /// The peer whose chain head the checkpoint attests.
    pub member: String,
    pub seq: u64,
    pub head: String,
    /// Unix seconds, as signed by the peer.
    pub at: i64,
    /// Unix seconds, when this gateway fetched it.
    pub fetched_at: i64,
    pub jws: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_wire_names_round_trip() {
        for st in ExchangeStatus::ALL {
            assert_eq!(st.as_str().parse::<ExchangeStatus>(), Ok(st));
        }
        assert_eq!(ExchangeStatus::DeadLettered.to_string(), "dead-lettered");
        assert!("dead_lettered".parse::<ExchangeStatus>().is_err());
    }
}
