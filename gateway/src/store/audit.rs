//! The hash-chained audit log.
//!
//! Entry `n` stores `hash_n = SHA-256(canonical(prev_hash, seq, at,
//! exchange_id, event, detail))` with `prev_hash = hash_{n-1}` (all zeros for
//! the first). The canonical form is a JSON array, which is unambiguous
//! where plain concatenation is not. `audit_head` holds the last seq and
//! hash, so editing, deleting, reordering *and* truncating rows are all
//! detected. Appends happen inside the caller's transaction.
//!
//! The chain also vouches for the state it describes: an entry about an
//! exchange or an inbox item carries `rowDigest`, the SHA-256 of that row as
//! it stands after the change (see [`append`]). [`verify`] recomputes every
//! row's digest and compares it with the latest entry about the row, so a
//! row edited, inserted or deleted behind the log's back is detected.
//! Truncation and recomputation of the chain itself are caught by the
//! signed checkpoints (`crate::checkpoint`), which this module only reads.

use super::cached::Cached;
use super::{AuditReport, StoreError};
use rusqlite::types::ValueRef;
use rusqlite::{params, Connection, OptionalExtension, Transaction};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet, HashMap};

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

    /// The table whose row an entry with an exchange id describes; the
    /// entry records that row's digest. Exhaustive on purpose: a new event
    /// must decide which row it vouches for.
    fn row_table(self) -> RowTable {
        match self {
            Self::Accepted
            | Self::AttemptFailed
            | Self::Delivered
            | Self::Rejected
            | Self::DeadLettered
            | Self::Retried
            | Self::Redelivered => RowTable::Exchanges,
            Self::InboxReceived => RowTable::Inbox,
            Self::InboxAcked | Self::InboxCursorFloorRaised => RowTable::None,
        }
    }
}

/// Which state table an audit event is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RowTable {
    Exchanges,
    Inbox,
    None,
}

/// Name of the wire event `name` → its row table (unknown names: none).
fn row_table_of(name: &str) -> RowTable {
    const ALL: [AuditEvent; 10] = [
        AuditEvent::Accepted,
        AuditEvent::AttemptFailed,
        AuditEvent::Delivered,
        AuditEvent::Rejected,
        AuditEvent::DeadLettered,
        AuditEvent::Retried,
        AuditEvent::InboxReceived,
        AuditEvent::InboxAcked,
        AuditEvent::Redelivered,
        AuditEvent::InboxCursorFloorRaised,
    ];
    ALL.iter()
        .find(|e| e.as_str() == name)
        .map_or(RowTable::None, |e| e.row_table())
}

/// Key of the row digest inside an entry's `detail`.
const ROW_DIGEST: &str = "rowDigest";

/// The columns a row digest covers, in digest order. Listed explicitly so a
/// column added later (e.g. bookkeeping) does not change old digests.
macro_rules! exchange_columns {
    () => {
        "seq, exchange_id, origin, credential_id, credential_digest, destination, chain, status,
         accepted_at, forwarded_at, settled_at, updated_at, attempts, last_error, problem"
    };
}
const EXCHANGE_COLUMN_COUNT: usize = 15;
macro_rules! inbox_columns {
    () => {
        "cursor, exchange_id, origin, credential_id, received_at, chain"
    };
}
const INBOX_COLUMN_COUNT: usize = 6;

/// SHA-256 (hex) of a row: the table name and every covered column, each
/// value encoded as a one-byte SQLite type tag, an 8-byte length and its
/// bytes (unambiguous, and changing a column's type changes the digest).
/// Streamed into the hasher: this runs under the write lock on every write.
fn row_digest(table: &str, row: &rusqlite::Row<'_>, columns: usize) -> rusqlite::Result<String> {
    fn put(h: &mut Sha256, tag: u8, bytes: &[u8]) {
        h.update([tag]);
        h.update((bytes.len() as u64).to_be_bytes());
        h.update(bytes);
    }
    let mut h = Sha256::new();
    put(&mut h, b't', table.as_bytes());
    for i in 0..columns {
        match row.get_ref(i)? {
            ValueRef::Null => put(&mut h, b'n', &[]),
            ValueRef::Integer(n) => put(&mut h, b'i', &n.to_be_bytes()),
            ValueRef::Real(f) => put(&mut h, b'r', &f.to_be_bytes()),
            ValueRef::Text(t) => put(&mut h, b's', t),
            ValueRef::Blob(b) => put(&mut h, b'b', b),
        }
    }
    Ok(hex(&h.finalize()))
}

/// The digest of the row `exchange_id` of `table`, if the row exists.
fn current_row_digest(
    conn: &Connection,
    table: RowTable,
    exchange_id: &str,
) -> Result<Option<String>, StoreError> {
    let (sql, name, columns) = match table {
        RowTable::Exchanges => (
            concat!(
                "SELECT ",
                exchange_columns!(),
                " FROM exchanges WHERE exchange_id = ?1"
            ),
            "exchanges",
            EXCHANGE_COLUMN_COUNT,
        ),
        RowTable::Inbox => (
            concat!("SELECT ", inbox_columns!(), " FROM inbox WHERE exchange_id = ?1"),
            "inbox",
            INBOX_COLUMN_COUNT,
        ),
        RowTable::None => return Ok(None),
    };
    conn.row(sql, params![exchange_id], |r| row_digest(name, r, columns))
        .optional()
        .map_err(sqlite("digesting a row for the audit log"))
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
///
/// Call it after the state change it records, in the same transaction: an
/// entry about an exchange or inbox item gets the digest of that row as it
/// now stands (`detail.rowDigest`), which `verify` holds the row to.
pub(super) fn append(
    tx: &Transaction<'_>,
    at: i64,
    exchange_id: Option<&str>,
    event: AuditEvent,
    detail: &Value,
) -> Result<(), StoreError> {
    let (head_seq, head_hash): (i64, String) = tx
        .row("SELECT seq, hash FROM audit_head WHERE id = 1", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .map_err(sqlite("reading the audit head"))?;
    let seq = head_seq + 1;
    let mut detail = detail.clone();
    if let (Some(id), Value::Object(map)) = (exchange_id, &mut detail) {
        if let Some(digest) = current_row_digest(tx, event.row_table(), id)? {
            map.insert(ROW_DIGEST.into(), Value::from(digest));
        }
    }
    let detail = detail.to_string();
    let hash = entry_hash(&head_hash, seq, at, exchange_id, event.as_str(), &detail);
    tx.exec(
        "INSERT INTO audit (seq, at, exchange_id, event, detail, prev_hash, hash)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![seq, at, exchange_id, event.as_str(), detail, head_hash, hash],
    )
    .map_err(sqlite("appending to the audit log"))?;
    tx.exec(
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

/// The latest entry about one row: what the row must look like now.
struct Latest {
    seq: i64,
    event: String,
    /// `None` for entries written before row digests existed.
    digest: Option<String>,
}

/// What the chain says the state tables must hold.
#[derive(Default)]
struct Expected {
    exchanges: HashMap<String, Latest>,
    inbox: HashMap<String, Latest>,
    /// `(seq, upTo)` of the latest `inbox-acked` entry.
    acked: Option<(i64, u64)>,
}

impl Expected {
    fn record(&mut self, row: &Row) {
        let table = row_table_of(&row.event);
        if row.event == AuditEvent::InboxAcked.as_str() {
            let up_to = serde_json::from_str::<Value>(&row.detail)
                .ok()
                .and_then(|d| d.get("upTo").and_then(Value::as_u64));
            if let Some(up_to) = up_to {
                self.acked = Some((row.seq, up_to));
            }
            return;
        }
        let (Some(id), map) = (
            &row.exchange_id,
            match table {
                RowTable::Exchanges => &mut self.exchanges,
                RowTable::Inbox => &mut self.inbox,
                RowTable::None => return,
            },
        ) else {
            return;
        };
        let digest = serde_json::from_str::<Value>(&row.detail)
            .ok()
            .and_then(|d| d.get(ROW_DIGEST).and_then(Value::as_str).map(str::to_owned));
        map.insert(
            id.clone(),
            Latest {
                seq: row.seq,
                event: row.event.clone(),
                digest,
            },
        );
    }
}

/// How the state tables compare with the chain.
struct RowsChecked {
    exchanges: u64,
    inbox: u64,
    uncovered: u64,
}

/// Holds every exchange and inbox row, and the inbox ack point, to the
/// latest audit entry about it. `head_seq` is where a row without any entry
/// is reported.
fn check_rows(conn: &Connection, mut expected: Expected, head_seq: i64) -> Result<RowsChecked, StoreError> {
    let broken = |seq: i64, reason: String| StoreError::AuditBroken {
        seq: u64::try_from(seq).unwrap_or_default(),
        reason,
    };
    let mut checked = RowsChecked {
        exchanges: 0,
        inbox: 0,
        uncovered: 0,
    };
    let tables = [
        (
            "exchange",
            "exchanges",
            concat!("SELECT ", exchange_columns!(), " FROM exchanges ORDER BY seq"),
            EXCHANGE_COLUMN_COUNT,
            std::mem::take(&mut expected.exchanges),
        ),
        (
            "inbox item",
            "inbox",
            concat!("SELECT ", inbox_columns!(), " FROM inbox ORDER BY cursor"),
            INBOX_COLUMN_COUNT,
            std::mem::take(&mut expected.inbox),
        ),
    ];
    for (what, table, sql, columns, mut latest) in tables {
        let mut stmt = conn.prepare(sql).map_err(sqlite("reading rows to audit"))?;
        let rows = stmt
            .query_map([], |r| {
                Ok((r.get::<_, String>(1)?, row_digest(table, r, columns)?))
            })
            .map_err(sqlite("reading rows to audit"))?;
        let mut count = 0_u64;
        for row in rows {
            let (id, digest) = row.map_err(sqlite("reading rows to audit"))?;
            count += 1;
            match latest.remove(&id) {
                None => {
                    return Err(broken(
                        head_seq,
                        format!("{what} {id} has no audit entry: it was inserted behind the log's back"),
                    ))
                }
                Some(Latest { digest: None, .. }) => checked.uncovered += 1,
                Some(Latest {
                    seq,
                    event,
                    digest: Some(recorded),
                }) if recorded != digest => {
                    return Err(broken(
                        seq,
                        format!(
                            "{what} {id} differs from what its latest audit entry ({seq}, {event}) \
                             recorded: the stored row was changed without an audit entry"
                        ),
                    ))
                }
                Some(_) => {}
            }
        }
        if let Some((id, l)) = latest.iter().min_by_key(|(_, l)| l.seq) {
            return Err(broken(
                l.seq,
                format!(
                    "{what} {id} is recorded by audit entry {} ({}) but is missing from the {table} table",
                    l.seq, l.event
                ),
            ));
        }
        match table {
            "exchanges" => checked.exchanges = count,
            _ => checked.inbox = count,
        }
    }

    let acked: i64 = conn
        .row("SELECT acked_up_to FROM inbox_ack WHERE id = 1", [], |r| r.get(0))
        .map_err(sqlite("reading the inbox ack point"))?;
    let (seq, recorded) = expected.acked.unwrap_or((head_seq, 0));
    if u64::try_from(acked).ok() != Some(recorded) {
        return Err(broken(
            seq,
            format!(
                "the inbox ack point is {acked} but the audit log last recorded {recorded}: \
                 it was changed without an audit entry"
            ),
        ));
    }
    Ok(checked)
}

/// Recomputes the chain from the first entry and checks the state tables
/// against it; run it inside a read transaction so the rows and the head
/// are one snapshot.
pub(super) fn verify(conn: &Connection) -> Result<AuditReport, StoreError> {
    verify_at(conn, &BTreeSet::new()).map(|(report, _)| report)
}

/// [`verify`], also returning the hash of every entry whose seq is in
/// `wanted` and exists (seq 0 is the genesis hash): what signed checkpoints
/// are compared with.
pub(super) fn verify_at(
    conn: &Connection,
    wanted: &BTreeSet<u64>,
) -> Result<(AuditReport, BTreeMap<u64, String>), StoreError> {
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

    let mut hashes = BTreeMap::new();
    if wanted.contains(&0) {
        hashes.insert(0, GENESIS_HASH.to_owned());
    }
    let mut expected = Expected::default();
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
        if let Ok(seq) = u64::try_from(row.seq) {
            if wanted.contains(&seq) {
                hashes.insert(seq, row.hash.clone());
            }
        }
        expected.record(&row);
        prev = row.hash;
        expected_seq += 1;
    }
    drop(stmt);
    let entries = expected_seq - 1;

    let head: Option<(i64, String)> = conn
        .row("SELECT seq, hash FROM audit_head WHERE id = 1", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()
        .map_err(sqlite("reading the audit head"))?;
    match head {
        None => return Err(broken(entries, "audit head is missing".into())),
        Some((seq, _)) if seq != entries => {
            return Err(broken(
                entries + 1,
                format!("log ends at entry {entries} but the head records entry {seq}"),
            ))
        }
        Some((_, hash)) if hash != prev => {
            return Err(broken(entries, "last entry does not match the head".into()))
        }
        Some(_) => {}
    }
    let rows = check_rows(conn, expected, entries)?;
    let report = AuditReport {
        entries: u64::try_from(entries).unwrap_or_default(),
        head_hash: prev,
        exchanges: rows.exchanges,
        inbox_items: rows.inbox,
        rows_predating_digests: rows.uncovered,
    };
    Ok((report, hashes))
}

/// The current head: `(seq, hash)`.
pub(super) fn head(conn: &Connection) -> Result<(u64, String), StoreError> {
    let (seq, hash): (i64, String) = conn
        .row("SELECT seq, hash FROM audit_head WHERE id = 1", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .map_err(sqlite("reading the audit head"))?;
    let seq = u64::try_from(seq).map_err(|_| StoreError::Corrupt {
        context: "audit head",
        reason: format!("negative seq {seq}"),
    })?;
    Ok((seq, hash))
}

/// The stored hash of entry `seq` (the genesis hash for 0).
pub(super) fn entry_hash_at(conn: &Connection, seq: u64) -> Result<Option<String>, StoreError> {
    if seq == 0 {
        return Ok(Some(GENESIS_HASH.to_owned()));
    }
    let seq = i64::try_from(seq).unwrap_or(i64::MAX);
    conn.row("SELECT hash FROM audit WHERE seq = ?1", params![seq], |r| {
        r.get(0)
    })
    .optional()
    .map_err(sqlite("reading an audit entry"))
}
