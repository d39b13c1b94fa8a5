//! [`CheckpointStore`] on the SQLite store: the `audit_checkpoints` and
//! `witnessed_checkpoints` tables (migration 2).
//!
//! The store keeps the JWS text as evidence; it never interprets it. The
//! copied payload columns only order and filter rows.

use super::audit;
use super::cached::Cached;
use super::sqlite::SqliteStore;
use super::{AuditHead, AuditReport, CheckpointStore, StoreError, StoredCheckpoint, WitnessedCheckpoint};
use rusqlite::{params, OptionalExtension};
use std::collections::{BTreeMap, BTreeSet};

use super::sqlite::sqlite;

fn seq_in(seq: u64) -> i64 {
    i64::try_from(seq).unwrap_or(i64::MAX)
}

fn seq_out(seq: i64, context: &'static str) -> Result<u64, StoreError> {
    u64::try_from(seq).map_err(|_| StoreError::Corrupt {
        context,
        reason: format!("negative seq {seq}"),
    })
}

fn own_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(i64, String, i64, String)> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
}

fn own(row: (i64, String, i64, String)) -> Result<StoredCheckpoint, StoreError> {
    let (seq, head, at, jws) = row;
    Ok(StoredCheckpoint {
        seq: seq_out(seq, "audit checkpoint")?,
        head,
        at,
        jws,
    })
}

type WitnessRow = (String, i64, String, i64, i64, String);

fn witness_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<WitnessRow> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?))
}

fn witnessed(
    (member, seq, head, at, fetched_at, jws): WitnessRow,
) -> Result<WitnessedCheckpoint, StoreError> {
    Ok(WitnessedCheckpoint {
        member,
        seq: seq_out(seq, "witnessed checkpoint")?,
        head,
        at,
        fetched_at,
        jws,
    })
}

impl CheckpointStore for SqliteStore {
    fn audit_head(&self) -> Result<AuditHead, StoreError> {
        self.read(|tx| audit::head(tx).map(|(seq, hash)| AuditHead { seq, hash }))
    }

    fn audit_entry_hash(&self, seq: u64) -> Result<Option<String>, StoreError> {
        self.read(|tx| audit::entry_hash_at(tx, seq))
    }

    fn audit_verify_at(
        &self,
        seqs: &BTreeSet<u64>,
    ) -> Result<(AuditReport, BTreeMap<u64, String>), StoreError> {
        self.read(|tx| audit::verify_at(tx, seqs))
    }

    fn save_checkpoint(&self, cp: &StoredCheckpoint) -> Result<(), StoreError> {
        self.write(|tx| {
            tx.exec(
                "INSERT INTO audit_checkpoints (seq, head, at, jws) VALUES (?1, ?2, ?3, ?4)",
                params![seq_in(cp.seq), cp.head, cp.at, cp.jws],
            )
            .map_err(sqlite("storing an audit checkpoint"))?;
            Ok(())
        })
    }

    fn latest_checkpoint(&self) -> Result<Option<StoredCheckpoint>, StoreError> {
        self.read(|tx| {
            tx.row(
                "SELECT seq, head, at, jws FROM audit_checkpoints ORDER BY id DESC LIMIT 1",
                [],
                own_row,
            )
            .optional()
            .map_err(sqlite("reading the latest audit checkpoint"))?
            .map(own)
            .transpose()
        })
    }

    fn checkpoints(&self) -> Result<Vec<StoredCheckpoint>, StoreError> {
        self.read(|tx| {
            let mut stmt = tx
                .prepare_cached("SELECT seq, head, at, jws FROM audit_checkpoints ORDER BY id")
                .map_err(sqlite("reading audit checkpoints"))?;
            let rows = stmt
                .query_map([], own_row)
                .map_err(sqlite("reading audit checkpoints"))?;
            rows.map(|r| own(r.map_err(sqlite("reading audit checkpoints"))?))
                .collect()
        })
    }

    fn save_witnessed(&self, cp: &WitnessedCheckpoint) -> Result<bool, StoreError> {
        self.write(|tx| {
            let n = tx
                .exec(
                    "INSERT INTO witnessed_checkpoints (member, seq, head, at, fetched_at, jws)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                     ON CONFLICT (member, jws) DO NOTHING",
                    params![cp.member, seq_in(cp.seq), cp.head, cp.at, cp.fetched_at, cp.jws],
                )
                .map_err(sqlite("storing a witnessed checkpoint"))?;
            Ok(n == 1)
        })
    }

    fn latest_witnessed(&self, member: &str) -> Result<Option<WitnessedCheckpoint>, StoreError> {
        self.read(|tx| {
            tx.row(
                "SELECT member, seq, head, at, fetched_at, jws FROM witnessed_checkpoints
                 WHERE member = ?1 ORDER BY id DESC LIMIT 1",
                params![member],
                witness_row,
            )
            .optional()
            .map_err(sqlite("reading a witnessed checkpoint"))?
            .map(witnessed)
            .transpose()
        })
    }

    fn witnessed(&self, member: &str) -> Result<Vec<WitnessedCheckpoint>, StoreError> {
        self.read(|tx| {
            let mut stmt = tx
                .prepare_cached(
                    "SELECT member, seq, head, at, fetched_at, jws FROM witnessed_checkpoints
                     WHERE member = ?1 ORDER BY id",
                )
                .map_err(sqlite("reading witnessed checkpoints"))?;
            let rows = stmt
                .query_map(params![member], witness_row)
                .map_err(sqlite("reading witnessed checkpoints"))?;
            rows.map(|r| witnessed(r.map_err(sqlite("reading witnessed checkpoints"))?))
                .collect()
        })
    }
}
