//! The store's domain rules, independent of any database.
//!
//! Everything a backend must decide the same way lives here as pure
//! functions: input validation, which status each operation may move an
//! exchange from and to ([`Transition`]), idempotency ([`admit_exchange`],
//! [`admit_inbox`]), delivery leases and fencing ([`decide_lease`],
//! [`check_fence`]), and the audit log's entries, row digests, hashes and
//! verification ([`audit`]). A backend reads the rows a decision needs,
//! calls these functions inside its transaction, and persists what they
//! return; it adds SQL, never rules.

pub mod audit;

use super::{
    Exchange, ExchangeState, ExchangeStatus, InboxItem, Inserted, Lease, NewExchange, NewInboxItem,
    StoreError,
};
use serde_json::{json, Value};
use std::time::Duration;
use time::OffsetDateTime;

pub use audit::{AuditEntry, AuditEvent, Cell, ChainVerifier, Draft, RowTable, GENESIS_HASH};

/// Longest `last_error` kept; peer error texts are for operators, not archives.
pub const MAX_ERROR_LEN: usize = 1000;

// --- values ------------------------------------------------------------------

/// A time as stored: UTC Unix nanoseconds. Times outside `i64` nanoseconds
/// (years beyond about 1677..2262) are refused as input.
pub fn nanos(t: OffsetDateTime, field: &'static str) -> Result<i64, StoreError> {
    i64::try_from(t.unix_timestamp_nanos()).map_err(|_| StoreError::InvalidInput {
        field,
        reason: format!("{t} is outside the storable range"),
    })
}

/// A stored time back; a value no time has is corruption.
pub fn from_nanos(n: i64, context: &'static str) -> Result<OffsetDateTime, StoreError> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(n)).map_err(|e| StoreError::Corrupt {
        context,
        reason: e.to_string(),
    })
}

/// A stored count, sequence or cursor back; negative is corruption.
pub fn to_u64(n: i64, context: &'static str) -> Result<u64, StoreError> {
    u64::try_from(n).map_err(|_| StoreError::Corrupt {
        context,
        reason: format!("negative value {n}"),
    })
}

/// Sequence numbers, cursors and tokens as stored (signed 64-bit columns).
/// Saturating keeps an out-of-range argument matching nothing.
pub fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// `error` cut to [`MAX_ERROR_LEN`] characters.
pub fn truncate_error(error: &str) -> &str {
    match error.char_indices().nth(MAX_ERROR_LEN) {
        Some((i, _)) => &error[..i],
        None => error,
    }
}

/// A credential chain as stored: a JSON array of strings.
///
/// Links are compact JWS (base64url and dots), which JSON never escapes,
/// so the array is written directly: serde_json's escaping scan, a table
/// lookup per byte, was a tenth of the store path's instructions. The text
/// is byte for byte what serde_json writes (a property test holds it to
/// that); a link that does need escaping goes to serde_json.
pub fn chain_json(chain: &[String]) -> Result<String, StoreError> {
    if chain.iter().all(|link| json_verbatim(link)) {
        let len = chain.iter().map(|link| link.len() + 3).sum::<usize>() + 2;
        let mut out = String::with_capacity(len);
        out.push('[');
        for (i, link) in chain.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push('"');
            out.push_str(link);
            out.push('"');
        }
        out.push(']');
        return Ok(out);
    }
    serde_json::to_string(chain).map_err(|e| StoreError::InvalidInput {
        field: "chain",
        reason: e.to_string(),
    })
}

/// Whether serde_json writes `s` inside its quotes unchanged: it escapes
/// only `"`, `\` and the control characters below U+0020. Checked in
/// blocks without early exit, so the compiler can vectorise it.
fn json_verbatim(s: &str) -> bool {
    s.as_bytes().chunks(32).all(|block| {
        block
            .iter()
            .fold(true, |ok, &b| ok & (b >= 0x20) & (b != b'"') & (b != b'\\'))
    })
}

pub fn chain_from_json(text: &str, context: &'static str) -> Result<Vec<String>, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt {
        context,
        reason: e.to_string(),
    })
}

// --- validation ----------------------------------------------------------------

fn require(ok: bool, field: &'static str, reason: &str) -> Result<(), StoreError> {
    if ok {
        Ok(())
    } else {
        Err(StoreError::InvalidInput {
            field,
            reason: reason.to_owned(),
        })
    }
}

/// What an exchange must have before it is stored.
pub fn validate_exchange(new: &NewExchange) -> Result<(), StoreError> {
    require(!new.exchange_id.is_empty(), "exchange_id", "empty")?;
    require(!new.credential_id.is_empty(), "credential_id", "empty")?;
    require(!new.origin.is_empty(), "origin", "empty")?;
    require(!new.destination.is_empty(), "destination", "empty")?;
    require(!new.chain.is_empty(), "chain", "empty")?;
    require(
        new.credential_digest.len() == 64
            && new
                .credential_digest
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "credential_digest",
        "must be 64 lowercase hex digits (SHA-256)",
    )?;
    nanos(new.accepted_at, "accepted_at").map(drop)
}

/// The exchange a successful insert of `new` stored under `seq`: every
/// backend answers with this instead of reading its row back (a contract
/// case holds the two equal).
pub fn accepted_exchange(new: &NewExchange, seq: u64) -> Exchange {
    Exchange {
        seq,
        exchange_id: new.exchange_id.clone(),
        credential_id: new.credential_id.clone(),
        credential_digest: new.credential_digest.clone(),
        origin: new.origin.clone(),
        destination: new.destination.clone(),
        state: ExchangeState::Accepted,
        accepted_at: new.accepted_at,
        forwarded_at: None,
        updated_at: new.accepted_at,
        attempts: 0,
        last_error: None,
        next_attempt_at: Some(new.accepted_at),
    }
}

/// What a received envelope must have before it enters the inbox.
pub fn validate_inbox(new: &NewInboxItem) -> Result<(), StoreError> {
    require(!new.exchange_id.is_empty(), "exchange_id", "empty")?;
    require(!new.origin.is_empty(), "origin", "empty")?;
    require(!new.credential_id.is_empty(), "credential_id", "empty")?;
    require(!new.chain.is_empty(), "chain", "empty")?;
    nanos(new.received_at, "received_at").map(drop)
}

// --- idempotency -----------------------------------------------------------------

/// What an idempotent insert should do, decided from the rows that hold its keys.
#[derive(Debug, Clone, PartialEq)]
pub enum Admission<T> {
    /// Nothing holds the keys: insert the new row.
    Insert,
    /// Answer without writing.
    Answer(Inserted<T>),
}

/// [`Store::insert_exchange`](super::Store::insert_exchange): `by_credential`
/// is the exchange stored under the new one's `(origin, credential_id)`,
/// `id_taken` whether its exchange id is used by any exchange. The same
/// digest again is `Existing`, another digest `Conflict`; an exchange id
/// taken by another credential is invalid input (ids are minted by the
/// gateway, so that is a bug upstream, not a client's retry).
pub fn admit_exchange(
    new: &NewExchange,
    by_credential: Option<Exchange>,
    id_taken: bool,
) -> Result<Admission<Exchange>, StoreError> {
    if let Some(existing) = by_credential {
        return Ok(Admission::Answer(
            if existing.credential_digest == new.credential_digest {
                Inserted::Existing(existing)
            } else {
                Inserted::Conflict {
                    existing_exchange_id: existing.exchange_id,
                }
            },
        ));
    }
    if id_taken {
        return Err(StoreError::InvalidInput {
            field: "exchange_id",
            reason: format!("{} is already used by another credential", new.exchange_id),
        });
    }
    Ok(Admission::Insert)
}

/// [`Store::insert_inbox`](super::Store::insert_inbox): `by_id` is the
/// inbox item stored under the new one's exchange id, `by_original` the
/// exchange id of the item holding its `(origin, credential_id)`, and
/// `own_exchange` whether this gateway issued the exchange id for one of
/// its own outgoing exchanges.
///
/// The same origin and original credential under the same id is `Existing`
/// (the home link is re-signed on every receipt, so it is not compared);
/// anything else under that id is a `Conflict`. So is the same original
/// under another id, and an id of this gateway's own: taking it would make
/// `GET /v1/exchanges/{id}` and the inbox disagree.
pub fn admit_inbox(
    new: &NewInboxItem,
    by_id: Option<InboxItem>,
    by_original: Option<String>,
    own_exchange: bool,
) -> Admission<InboxItem> {
    if let Some(existing) = by_id {
        let same = existing.origin == new.origin && existing.chain.first() == new.chain.first();
        return Admission::Answer(if same {
            Inserted::Existing(existing)
        } else {
            Inserted::Conflict {
                existing_exchange_id: existing.exchange_id,
            }
        });
    }
    if let Some(existing_exchange_id) = by_original {
        return Admission::Answer(Inserted::Conflict { existing_exchange_id });
    }
    if own_exchange {
        return Admission::Answer(Inserted::Conflict {
            existing_exchange_id: new.exchange_id.clone(),
        });
    }
    Admission::Insert
}

// --- transitions -------------------------------------------------------------------

/// Every operation that changes one exchange's status. The table of what
/// each may move from and to is [`Transition::from`] and [`Transition::to`];
/// the dead-letter sweep is [`Transition::DeadLetter`] applied to every
/// expired outbox item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// A transient delivery failure; the item stays in the outbox.
    AttemptFailed,
    /// The peer answered 202.
    Deliver,
    /// The peer answered 422.
    Reject,
    /// Too old to deliver (the worker's check or the age sweep).
    DeadLetter,
    /// Operator retry of a terminal failure.
    Retry,
    /// The destination restored a backup: deliver again.
    Redeliver,
}

const PENDING: &[ExchangeStatus] = &[ExchangeStatus::Accepted, ExchangeStatus::Forwarded];
const RETRYABLE: &[ExchangeStatus] = &[ExchangeStatus::Rejected, ExchangeStatus::DeadLettered];
const DELIVERED: &[ExchangeStatus] = &[ExchangeStatus::Delivered];

impl Transition {
    pub const ALL: [Transition; 6] = [
        Self::AttemptFailed,
        Self::Deliver,
        Self::Reject,
        Self::DeadLetter,
        Self::Retry,
        Self::Redeliver,
    ];

    /// The statuses this operation may start from.
    pub fn from(self) -> &'static [ExchangeStatus] {
        match self {
            Self::AttemptFailed | Self::Deliver | Self::Reject | Self::DeadLetter => PENDING,
            Self::Retry => RETRYABLE,
            Self::Redeliver => DELIVERED,
        }
    }

    /// The status it leaves the exchange in.
    pub fn to(self) -> ExchangeStatus {
        match self {
            Self::AttemptFailed => ExchangeStatus::Forwarded,
            Self::Deliver => ExchangeStatus::Delivered,
            Self::Reject => ExchangeStatus::Rejected,
            Self::DeadLetter => ExchangeStatus::DeadLettered,
            Self::Retry | Self::Redeliver => ExchangeStatus::Accepted,
        }
    }

    /// The exchange leaves the outbox (it was in it before).
    pub fn leaves_outbox(self) -> bool {
        matches!(self, Self::Deliver | Self::Reject | Self::DeadLetter)
    }

    /// The exchange goes back into the outbox, due at once.
    pub fn requeues(self) -> bool {
        matches!(self, Self::Retry | Self::Redeliver)
    }

    /// The operation records a delivery attempt (a failure, or the peer's
    /// answer); dead-lettering and operator actions do not.
    pub fn counts_attempt(self) -> bool {
        matches!(self, Self::AttemptFailed | Self::Deliver | Self::Reject)
    }

    /// Only the lease holder of the exchange's destination may make it
    /// (see [`check_fence`]); the sweep's dead-lettering uses
    /// [`Store::dead_letter_expired`](super::Store::dead_letter_expired),
    /// which is not fenced.
    pub fn fenced(self) -> bool {
        matches!(
            self,
            Self::AttemptFailed | Self::Deliver | Self::Reject | Self::DeadLetter
        )
    }

    /// The audit event recording it.
    pub fn event(self) -> AuditEvent {
        match self {
            Self::AttemptFailed => AuditEvent::AttemptFailed,
            Self::Deliver => AuditEvent::Delivered,
            Self::Reject => AuditEvent::Rejected,
            Self::DeadLetter => AuditEvent::DeadLettered,
            Self::Retry => AuditEvent::Retried,
            Self::Redeliver => AuditEvent::Redelivered,
        }
    }

    /// `Ok` if `current` may make this move, else `InvalidTransition`.
    pub fn check(self, current: &Exchange) -> Result<(), StoreError> {
        let from = current.status();
        if self.from().contains(&from) {
            Ok(())
        } else {
            Err(StoreError::InvalidTransition {
                exchange_id: current.exchange_id.clone(),
                from,
                to: self.to(),
            })
        }
    }

    /// [`check`](Self::check) for an exchange that may not exist.
    pub fn check_found(self, exchange_id: &str, current: Option<Exchange>) -> Result<Exchange, StoreError> {
        let current = current.ok_or_else(|| StoreError::NotFound {
            exchange_id: exchange_id.to_owned(),
        })?;
        self.check(&current)?;
        Ok(current)
    }
}

// --- delivery leases -----------------------------------------------------------------

/// What [`Store::acquire_lease`](super::Store::acquire_lease) should do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseDecision {
    /// The caller holds it and it is live: store this (same token, later expiry).
    Renew(Lease),
    /// Free or expired: store this (a greater token).
    Take(Lease),
    /// Live and held by another: write nothing, answer `None`.
    Held,
}

impl LeaseDecision {
    /// The lease to store and hand out, if any.
    pub fn lease(&self) -> Option<&Lease> {
        match self {
            Self::Renew(l) | Self::Take(l) => Some(l),
            Self::Held => None,
        }
    }
}

/// Decides a lease request from the destination's stored lease (`current`).
/// Tokens start at 1 and grow by one per takeover, so a takeover after an
/// expiry or a release always fences the previous holder out.
pub fn decide_lease(
    current: Option<&Lease>,
    destination: &str,
    holder: &str,
    ttl: Duration,
    now: OffsetDateTime,
) -> Result<LeaseDecision, StoreError> {
    require(!destination.is_empty(), "destination", "empty")?;
    require(!holder.is_empty(), "holder", "empty")?;
    require(!ttl.is_zero(), "ttl", "must be positive")?;
    let expires_at = time::Duration::try_from(ttl)
        .ok()
        .and_then(|ttl| now.checked_add(ttl))
        .filter(|t| nanos(*t, "expires_at").is_ok())
        .ok_or_else(|| StoreError::InvalidInput {
            field: "ttl",
            reason: format!("{now} + {ttl:?} is outside the storable range"),
        })?;
    let lease = |token| Lease {
        destination: destination.to_owned(),
        holder: holder.to_owned(),
        token,
        expires_at,
    };
    Ok(match current {
        None => LeaseDecision::Take(lease(1)),
        Some(c) if c.expires_at > now && c.holder == holder => LeaseDecision::Renew(lease(c.token)),
        Some(c) if c.expires_at > now => LeaseDecision::Held,
        Some(c) => LeaseDecision::Take(lease(c.token.checked_add(1).ok_or_else(|| {
            StoreError::Corrupt {
                context: "delivery lease",
                reason: format!("token {} cannot grow", c.token),
            }
        })?)),
    })
}

/// The stored form of a released lease: same holder and token, expired
/// before any `now`, so the next request takes it (with a greater token).
pub fn released(lease: &Lease) -> Lease {
    Lease {
        expires_at: OffsetDateTime::UNIX_EPOCH,
        ..lease.clone()
    }
}

/// Fencing: a settle with `lease` may write only while the destination's
/// stored token (`stored_token`, `None` if it never had a lease) is still
/// `lease.token`, and only for an exchange to that destination.
pub fn check_fence(
    stored_token: Option<u64>,
    lease: &Lease,
    exchange_destination: Option<&str>,
) -> Result<(), StoreError> {
    if stored_token != Some(lease.token) {
        return Err(StoreError::LeaseLost {
            destination: lease.destination.clone(),
            token: lease.token,
        });
    }
    match exchange_destination {
        Some(d) if d != lease.destination => Err(StoreError::InvalidInput {
            field: "lease",
            reason: format!("the lease is for {}, the exchange goes to {d}", lease.destination),
        }),
        _ => Ok(()),
    }
}

// --- audit details ---------------------------------------------------------------------

/// The audit entries each operation writes: what happened and its details.
/// The row digest and the chain hash are added by [`AuditEntry::next`].
pub mod entries {
    use super::*;

    pub fn accepted(new: &NewExchange, seq: u64) -> Draft {
        Draft::about(
            &new.exchange_id,
            AuditEvent::Accepted,
            json!({
                "origin": new.origin,
                "destination": new.destination,
                "credentialId": new.credential_id,
                "credentialDigest": new.credential_digest,
                "seq": seq,
            }),
        )
    }

    pub fn attempt_failed(current: &Exchange, error: &str, next_attempt_at: i64) -> Draft {
        Draft::about(
            &current.exchange_id,
            AuditEvent::AttemptFailed,
            json!({
                "from": current.status().as_str(),
                "attempt": current.attempts.saturating_add(1),
                "error": truncate_error(error),
                "nextAttemptAt": next_attempt_at,
            }),
        )
    }

    /// Delivered, rejected (with the peer's problem) or dead-lettered by the worker.
    pub fn settled(t: Transition, current: &Exchange, problem: Option<&Value>) -> Draft {
        let from = current.status().as_str();
        let detail = match problem {
            Some(p) => json!({ "from": from, "problem": p }),
            None => json!({ "from": from }),
        };
        Draft::about(&current.exchange_id, t.event(), detail)
    }

    /// Dead-lettered by the age sweep.
    pub fn expired(exchange_id: &str, from: &str) -> Draft {
        Draft::about(
            exchange_id,
            AuditEvent::DeadLettered,
            json!({ "from": from, "sweep": true }),
        )
    }

    pub fn retried(current: &Exchange) -> Draft {
        Draft::about(
            &current.exchange_id,
            AuditEvent::Retried,
            json!({ "from": current.status().as_str() }),
        )
    }

    pub fn redelivered(exchange_id: &str, destination: &str, since: i64) -> Draft {
        Draft::about(
            exchange_id,
            AuditEvent::Redelivered,
            json!({ "destination": destination, "since": since }),
        )
    }

    pub fn inbox_received(new: &NewInboxItem, cursor: u64) -> Draft {
        Draft::about(
            &new.exchange_id,
            AuditEvent::InboxReceived,
            json!({ "origin": new.origin, "cursor": cursor }),
        )
    }

    pub fn inbox_acked(from: u64, up_to: u64, requested: u64, count: u64) -> Draft {
        Draft::general(
            AuditEvent::InboxAcked,
            json!({ "from": from, "upTo": up_to, "requested": requested, "count": count }),
        )
    }

    pub fn cursor_floor_raised(from: u64, to: u64) -> Draft {
        Draft::general(
            AuditEvent::InboxCursorFloorRaised,
            json!({ "from": from, "to": to }),
        )
    }
}

// --- inbox acknowledgement ---------------------------------------------------------------

/// [`Store::ack`](super::Store::ack): the new ack point for a request to
/// ack up to `up_to`, given the current point and the highest stored
/// cursor; `None` if nothing moves (monotone, clamped to what exists).
pub fn ack_target(current: u64, highest: u64, up_to: u64) -> Option<u64> {
    let target = up_to.min(highest);
    (target > current).then_some(target)
}

/// [`Store::raise_inbox_cursor_floor`](super::Store::raise_inbox_cursor_floor):
/// the new floor, or `None` if `floor` does not raise the current one.
pub fn floor_target(current: u64, floor: u64) -> Option<u64> {
    (floor > current).then_some(floor)
}

#[cfg(test)]
mod tests;
