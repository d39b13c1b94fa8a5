//! The audit log on SQLite: reading and writing entries and rows. The
//! rules (entries, digests, hashes, verification) are in
//! [`domain::audit`](super::domain::audit); this module only feeds them.

use super::cached::Cached;
use super::domain::audit::{AuditEntry, Cell, ChainVerifier, Draft, RowTable, GENESIS_HASH};
use super::sqlite::sqlite;
use super::{AuditHead, AuditReport, StoreError};
use rusqlite::types::ValueRef;
use rusqlite::{params, Connection, OptionalExtension};
use std::collections::{BTreeMap, BTreeSet};

/// The columns a row digest covers, in digest order (must equal
/// `domain::audit::EXCHANGE_DIGEST_COLUMNS`; a test checks).
macro_rules! exchange_columns {
    () => {
        "seq, exchange_id, origin, credential_id, credential_digest, destination, chain, status,
         accepted_at, forwarded_at, settled_at, updated_at, attempts, last_error, problem"
    };
}
/// An exchange row as its digest sees it: the chain lives in a table of its
/// own (migration 6) but is part of the row. A missing chain reads as NULL,
/// so the digest no longer matches and verification names the exchange.
macro_rules! exchange_rows {
    () => {
        " FROM exchanges LEFT JOIN exchange_chains ON exchange_seq = seq "
    };
}
macro_rules! inbox_columns {
    () => {
        "cursor, exchange_id, origin, credential_id, received_at, chain"
    };
}

fn cell(v: ValueRef<'_>) -> Cell<'_> {
    match v {
        ValueRef::Null => Cell::Null,
        ValueRef::Integer(n) => Cell::Int(n),
        ValueRef::Real(f) => Cell::Real(f),
        ValueRef::Text(t) => Cell::Text(t),
        ValueRef::Blob(b) => Cell::Blob(b),
    }
}

/// The digest of a row selected with the table's digest columns first.
pub(super) fn row_digest(table: RowTable, row: &rusqlite::Row<'_>) -> rusqlite::Result<String> {
    let n = table.digest_columns().len();
    let cells = (0..n)
        .map(|i| row.get_ref(i).map(cell))
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(super::domain::audit::row_digest(table, cells))
}

/// The digest of the row `exchange_id` of `table`, if the row exists.
fn current_row_digest(
    conn: &Connection,
    table: RowTable,
    exchange_id: &str,
) -> Result<Option<String>, StoreError> {
    let sql = match table {
        RowTable::Exchanges => concat!(
            "SELECT ",
            exchange_columns!(),
            exchange_rows!(),
            "WHERE exchange_id = ?1"
        ),
        RowTable::Inbox => concat!("SELECT ", inbox_columns!(), " FROM inbox WHERE exchange_id = ?1"),
        RowTable::None => return Ok(None),
    };
    conn.row(sql, params![exchange_id], |r| row_digest(table, r))
        .optional()
        .map_err(sqlite("digesting a row for the audit log"))
}

/// Appends the entry for `draft` in `tx`; `at` is UTC Unix nanoseconds.
///
/// Call it after the state change it records, in the same transaction: an
/// entry about an exchange or inbox item gets the digest of that row as it
/// now stands, which verification holds the row to.
pub(super) fn append(tx: &Connection, at: i64, draft: Draft) -> Result<(), StoreError> {
    let (seq, hash) = head(tx)?;
    let digest = match &draft.exchange_id {
        Some(id) => current_row_digest(tx, draft.row_table(), id)?,
        None => None,
    };
    let entry = AuditEntry::next(&AuditHead { seq, hash }, at, draft, digest);
    store_entry(tx, &entry)
}

/// Stores `entry` and moves the head to it (in the caller's transaction).
pub(super) fn store_entry(tx: &Connection, entry: &AuditEntry) -> Result<(), StoreError> {
    tx.exec(
        "INSERT INTO audit (seq, at, exchange_id, event, detail, prev_hash, hash)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            entry.seq,
            entry.at,
            entry.exchange_id,
            entry.event,
            entry.detail,
            entry.prev_hash,
            entry.hash
        ],
    )
    .map_err(sqlite("appending to the audit log"))?;
    tx.exec(
        "UPDATE audit_head SET seq = ?1, hash = ?2 WHERE id = 1",
        params![entry.seq, entry.hash],
    )
    .map_err(sqlite("advancing the audit head"))?;
    Ok(())
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
    let mut verifier = ChainVerifier::new(wanted);
    {
        let mut stmt = conn
            .prepare_cached(
                "SELECT seq, at, exchange_id, event, detail, prev_hash, hash FROM audit ORDER BY seq",
            )
            .map_err(sqlite("reading the audit log"))?;
        let rows = stmt
            .query_map([], |r| {
                Ok(AuditEntry {
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
        for row in rows {
            verifier.entry(row.map_err(sqlite("reading the audit log"))?)?;
        }
    }
    let head: Option<(i64, String)> = conn
        .row("SELECT seq, hash FROM audit_head WHERE id = 1", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()
        .map_err(sqlite("reading the audit head"))?;
    verifier.head(head)?;
    let tables = [
        (
            RowTable::Exchanges,
            concat!("SELECT ", exchange_columns!(), exchange_rows!(), "ORDER BY seq"),
        ),
        (
            RowTable::Inbox,
            concat!("SELECT ", inbox_columns!(), " FROM inbox ORDER BY cursor"),
        ),
    ];
    for (table, sql) in tables {
        let mut stmt = conn
            .prepare_cached(sql)
            .map_err(sqlite("reading rows to audit"))?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(1)?, row_digest(table, r)?)))
            .map_err(sqlite("reading rows to audit"))?;
        for row in rows {
            let (id, digest) = row.map_err(sqlite("reading rows to audit"))?;
            verifier.row(table, &id, &digest)?;
        }
        verifier.rows_done(table)?;
    }
    let acked: i64 = conn
        .row("SELECT acked_up_to FROM inbox_ack WHERE id = 1", [], |r| r.get(0))
        .map_err(sqlite("reading the inbox ack point"))?;
    verifier.finish(acked)
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

#[cfg(test)]
mod tests {
    use super::super::domain::audit::{EXCHANGE_DIGEST_COLUMNS, INBOX_DIGEST_COLUMNS};

    fn names(sql: &str) -> Vec<String> {
        sql.split(',').map(|c| c.trim().to_owned()).collect()
    }

    #[test]
    fn sql_column_lists_are_the_domain_digest_columns() {
        assert_eq!(names(exchange_columns!()), EXCHANGE_DIGEST_COLUMNS);
        assert_eq!(names(inbox_columns!()), INBOX_DIGEST_COLUMNS);
    }
}
