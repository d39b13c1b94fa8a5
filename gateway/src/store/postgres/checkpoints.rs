//! [`CheckpointStore`] on PostgreSQL: the `audit_checkpoints` and
//! `witnessed_checkpoints` tables (migration 4). Several replicas sign
//! checkpoints of the one shared chain; each signed one is kept here, so
//! every replica serves the newest (`GET /v1/federation/audit/checkpoint`).

use super::{backend_error, conn, to_u64, verify_chain, PgStore};
use crate::store::{
    AuditHead, AuditReport, CheckpointStore, StoreError, StoredCheckpoint, WitnessedCheckpoint,
};
use std::collections::{BTreeMap, BTreeSet};
use tokio_postgres::Row;

fn own(r: &Row) -> Result<StoredCheckpoint, StoreError> {
    Ok(StoredCheckpoint {
        seq: to_u64(r.get(0), "audit checkpoint")?,
        head: r.get(1),
        at: r.get(2),
        jws: r.get(3),
    })
}

fn witnessed(r: &Row) -> Result<WitnessedCheckpoint, StoreError> {
    Ok(WitnessedCheckpoint {
        member: r.get(0),
        seq: to_u64(r.get(1), "witnessed checkpoint")?,
        head: r.get(2),
        at: r.get(3),
        fetched_at: r.get(4),
        jws: r.get(5),
    })
}

impl CheckpointStore for PgStore {
    fn audit_head(&self) -> Result<AuditHead, StoreError> {
        self.run(|pool| async move {
            let client = conn(&pool).await?;
            let r = client
                .query_one("SELECT seq, hash FROM audit_head WHERE id = 1", &[])
                .await
                .map_err(backend_error("reading the audit head"))?;
            Ok(AuditHead {
                seq: to_u64(r.get(0), "audit head")?,
                hash: r.get(1),
            })
        })
    }

    fn audit_entry_hash(&self, seq: u64) -> Result<Option<String>, StoreError> {
        if seq == 0 {
            return Ok(Some(crate::store::domain::GENESIS_HASH.to_owned()));
        }
        let seq = crate::store::domain::to_i64(seq);
        self.run(move |pool| async move {
            let client = conn(&pool).await?;
            Ok(client
                .query_opt("SELECT hash FROM audit WHERE seq = $1", &[&seq])
                .await
                .map_err(backend_error("reading an audit entry"))?
                .map(|r| r.get(0)))
        })
    }

    fn audit_verify_at(
        &self,
        seqs: &BTreeSet<u64>,
    ) -> Result<(AuditReport, BTreeMap<u64, String>), StoreError> {
        let seqs = seqs.clone();
        self.run(move |pool| verify_chain(pool, seqs))
    }

    fn save_checkpoint(&self, cp: &StoredCheckpoint) -> Result<(), StoreError> {
        let cp = cp.clone();
        self.run(move |pool| async move {
            let client = conn(&pool).await?;
            client
                .execute(
                    "INSERT INTO audit_checkpoints (seq, head, at, jws) VALUES ($1, $2, $3, $4)",
                    &[&crate::store::domain::to_i64(cp.seq), &cp.head, &cp.at, &cp.jws],
                )
                .await
                .map_err(backend_error("storing an audit checkpoint"))
                .map(drop)
        })
    }

    fn latest_checkpoint(&self) -> Result<Option<StoredCheckpoint>, StoreError> {
        self.run(|pool| async move {
            let client = conn(&pool).await?;
            client
                .query_opt(
                    "SELECT seq, head, at, jws FROM audit_checkpoints ORDER BY id DESC LIMIT 1",
                    &[],
                )
                .await
                .map_err(backend_error("reading the latest audit checkpoint"))?
                .as_ref()
                .map(own)
                .transpose()
        })
    }

    fn checkpoints(&self) -> Result<Vec<StoredCheckpoint>, StoreError> {
        self.run(|pool| async move {
            let client = conn(&pool).await?;
            client
                .query(
                    "SELECT seq, head, at, jws FROM audit_checkpoints ORDER BY id",
                    &[],
                )
                .await
                .map_err(backend_error("reading audit checkpoints"))?
                .iter()
                .map(own)
                .collect()
        })
    }

    fn save_witnessed(&self, cp: &WitnessedCheckpoint) -> Result<bool, StoreError> {
        let cp = cp.clone();
        self.run(move |pool| async move {
            let client = conn(&pool).await?;
            let n = client
                .execute(
                    "INSERT INTO witnessed_checkpoints (member, seq, head, at, fetched_at, jws)
                     VALUES ($1, $2, $3, $4, $5, $6)
                     ON CONFLICT (member, md5(jws)) DO NOTHING",
                    &[
                        &cp.member,
                        &crate::store::domain::to_i64(cp.seq),
                        &cp.head,
                        &cp.at,
                        &cp.fetched_at,
                        &cp.jws,
                    ],
                )
                .await
                .map_err(backend_error("storing a witnessed checkpoint"))?;
            Ok(n == 1)
        })
    }

    fn latest_witnessed(&self, member: &str) -> Result<Option<WitnessedCheckpoint>, StoreError> {
        let member = member.to_owned();
        self.run(move |pool| async move {
            let client = conn(&pool).await?;
            client
                .query_opt(
                    "SELECT member, seq, head, at, fetched_at, jws FROM witnessed_checkpoints
                     WHERE member = $1 ORDER BY id DESC LIMIT 1",
                    &[&member],
                )
                .await
                .map_err(backend_error("reading a witnessed checkpoint"))?
                .as_ref()
                .map(witnessed)
                .transpose()
        })
    }

    fn witnessed(&self, member: &str) -> Result<Vec<WitnessedCheckpoint>, StoreError> {
        let member = member.to_owned();
        self.run(move |pool| async move {
            let client = conn(&pool).await?;
            client
                .query(
                    "SELECT member, seq, head, at, fetched_at, jws FROM witnessed_checkpoints
                     WHERE member = $1 ORDER BY id",
                    &[&member],
                )
                .await
                .map_err(backend_error("reading witnessed checkpoints"))?
                .iter()
                .map(witnessed)
                .collect()
        })
    }
}
