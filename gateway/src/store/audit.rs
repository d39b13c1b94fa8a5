//! The hash-chained audit log.
//!
//! Entry `n` stores `hash_n = SHA-256(canonical(prev_hash, seq, at,
//! exchange_id, event, detail))` with `prev_hash = hash_{n-1}` (all zeros for
//! the first). The canonical form is a JSON array, which is unambiguous
//! where plain concatenation is not. `audit_head` holds the last seq and
//! hash, so editing, deleting, reordering *and* truncating rows are all
//! detected. Appends happen inside the caller's transaction.

use super::{AuditReport, StoreError};
use rusqlite::{params, Connection, OptionalExtension, Transaction};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// `prev_hash` of the first entry.
pub(super) const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What happened. The wire names are part of the stored log: never rename.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum AuditEvent {
    Accepted,
    AttemptFailed,
    Delivered,
    Rejected,
    DeadLettered,
    Retried,
    InboxReceived,
    InboxAcked,
    Redelivered,
    InboxCursorFloorRaised,
}

impl AuditEvent {
    fn as_str(self) -> &'static str {
        match self {
            Self::Accepted => "accepted",
            Self::AttemptFailed => "attempt-failed",
            Self::Delivered => "delivered",
            Self::Rejected => "rejected",
            Self::DeadLettered => "dead-lettered",
            Self::Retried => "retried",
            Self::InboxReceived => "inbox-received",
            Self::InboxAcked => "inbox-acked",
            Self::Redelivered => "redelivered",
            Self::InboxCursorFloorRaised => "inbox-cursor-floor-raised",
        }
    }
}

fn sqlite(context: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError {
    move |source| StoreError::Sqlite { context, source }
}

fn entry_hash(
    prev_hash: &str,
    seq: i64,
    at: i64,
    exchange_id: Option<&str>,
    event: &str,
    detail: &str,
) -> String {
    let canonical = serde_json::json!([prev_hash, seq, at, exchange_id, event, detail]).to_string();
    hex(&Sha256::digest(canonical.as_bytes()))
}

pub(super) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// Appends one entry in `tx`; `at` is UTC Unix nanoseconds.
pub(super) fn append(
    tx: &Transaction<'_>,
    at: i64,
    exchange_id: Option<&str>,
    event: AuditEvent,
    detail: &Value,
) -> Result<(), StoreError> {
    let (head_seq, head_hash): (i64, String) = tx
        .query_row("SELECT seq, hash FROM audit_head WHERE id = 1", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .map_err(sqlite("reading the audit head"))?;
    let seq = head_seq + 1;
    let detail = detail.to_string();
    let hash = entry_hash(&head_hash, seq, at, exchange_id, event.as_str(), &detail);
    tx.execute(
        "INSERT INTO audit (seq, at, exchange_id, event, detail, prev_hash, hash)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![seq, at, exchange_id, event.as_str(), detail, head_hash, hash],
    )
    .map_err(sqlite("appending to the audit log"))?;
    tx.execute(
        "UPDATE audit_head SET seq = ?1, hash = ?2 WHERE id = 1",
        params![seq, hash],
    )
    .map_err(sqlite("advancing the audit head"))?;
    Ok(())
}

struct Row {
    seq: i64,
    at: i64,
    exchange_id: Option<String>,
    event: String,
    detail: String,
    prev_hash: String,
    hash: String,
}

/// Recomputes the chain from the first entry; run it inside a read
/// transaction so the rows and the head are one snapshot.
pub(super) fn verify(conn: &Connection) -> Result<AuditReport, StoreError> {
    let broken = |seq: i64, reason: String| StoreError::AuditBroken {
        seq: u64::try_from(seq).unwrap_or_default(),
        reason,
    };
    let mut stmt = conn
        .prepare("SELECT seq, at, exchange_id, event, detail, prev_hash, hash FROM audit ORDER BY seq")
        .map_err(sqlite("reading the audit log"))?;
    let rows = stmt
        .query_map([], |r| {
            Ok(Row {
                seq: r.get(0)?,
                at: r.get(1)?,
                exchange_id: r.get(2)?,
                event: r.get(3)?,
                detail: r.get(4)?,
                prev_hash: r.get(5)?,
                hash: r.get(6)?,
            })
        })
        .map_err(sqlite("reading the audit log"))?;

    let mut expected_seq = 1_i64;
    let mut prev = GENESIS_HASH.to_owned();
    for row in rows {
        let row = row.map_err(sqlite("reading the audit log"))?;
        if row.seq != expected_seq {
            return Err(broken(
                expected_seq,
                format!(
                    "entry {expected_seq} is missing (next stored entry is {})",
                    row.seq
                ),
            ));
        }
        if row.prev_hash != prev {
            return Err(broken(
                row.seq,
                "prev_hash does not match the previous entry".into(),
            ));
        }
        let recomputed = entry_hash(
            &row.prev_hash,
            row.seq,
            row.at,
            row.exchange_id.as_deref(),
            &row.event,
            &row.detail,
        );
        if recomputed != row.hash {
            return Err(broken(row.seq, "hash does not match the entry's content".into()));
        }
        prev = row.hash;
        expected_seq += 1;
    }
    let entries = expected_seq - 1;

    let head: Option<(i64, String)> = conn
        .query_row("SELECT seq, hash FROM audit_head WHERE id = 1", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()
        .map_err(sqlite("reading the audit head"))?;
    match head {
        None => Err(broken(entries, "audit head is missing".into())),
        Some((seq, _)) if seq != entries => Err(broken(
            entries + 1,
            format!("log ends at entry {entries} but the head records entry {seq}"),
        )),
        Some((_, hash)) if hash != prev => Err(broken(entries, "last entry does not match the head".into())),
        Some(_) => Ok(AuditReport {
            entries: u64::try_from(entries).unwrap_or_default(),
            head_hash: prev,
        }),
    }
}
