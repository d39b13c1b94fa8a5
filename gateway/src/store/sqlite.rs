//! [`Store`] on an embedded SQLite database.
//!
//! WAL with group commit (see `group_sync`): a write returns `Ok` only after
//! an fsync of the WAL that covers its commit, so `Ok` means durable across
//! `kill -9` and power loss, while concurrent writers share fsyncs. Writes
//! go through one connection behind a mutex and use `BEGIN IMMEDIATE`, so
//! read-then-write decisions (idempotency, transitions) cannot race, not
//! even with another process on the same file. Reads use a second,
//! query-only connection so they do not queue behind writes.

use super::audit::{self, AuditEvent};
use super::group_sync::GroupSync;
use super::migrations;
use super::{
    AuditReport, Exchange, ExchangeState, ExchangeStatus, InboxItem, Inserted, NewExchange, NewInboxItem,
    OutboxItem, Store, StoreError,
};
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, Transaction, TransactionBehavior};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use time::OffsetDateTime;

/// How long a writer waits for another process's write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest `last_error` kept; peer error texts are for operators, not archives.
const MAX_ERROR_LEN: usize = 1000;

/// The SQLite store. Cheap to share: wrap it in an `Arc`.
#[derive(Debug)]
pub struct SqliteStore {
    path: PathBuf,
    writer: Mutex<Connection>,
    reader: Mutex<Connection>,
    sync: GroupSync,
}

fn durability(reason: String) -> StoreError {
    StoreError::Durability { reason }
}

fn sqlite(context: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError {
    move |source| StoreError::Sqlite { context, source }
}

fn lock(conn: &Mutex<Connection>) -> MutexGuard<'_, Connection> {
    // A panic while holding the lock dropped its transaction, which rolls
    // back: the connection is consistent, so poisoning carries no meaning.
    conn.lock().unwrap_or_else(PoisonError::into_inner)
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and migrates it.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Self::open_with(path, OpenFlags::default())
    }

    /// Opens an existing database only: for tools such as `bashu audit
    /// verify`, which must not conjure an empty (and trivially intact) store.
    pub fn open_existing(path: &Path) -> Result<Self, StoreError> {
        let mut flags = OpenFlags::default();
        flags.remove(OpenFlags::SQLITE_OPEN_CREATE);
        Self::open_with(path, flags)
    }

    fn open_with(path: &Path, flags: OpenFlags) -> Result<Self, StoreError> {
        let open_error = |source| StoreError::Open {
            path: path.to_owned(),
            source,
        };
        let mut writer = Connection::open_with_flags(path, flags).map_err(open_error)?;
        configure(&writer).map_err(open_error)?;
        migrations::migrate(&mut writer)?;
        let reader = Connection::open_with_flags(path, flags).map_err(open_error)?;
        configure(&reader).map_err(open_error)?;
        reader
            .pragma_update(None, "query_only", true)
            .map_err(open_error)?;
        Ok(Self {
            path: path.to_owned(),
            writer: Mutex::new(writer),
            reader: Mutex::new(reader),
            sync: GroupSync::new(path),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The schema version (number of migrations applied).
    pub fn schema_version(&self) -> Result<i64, StoreError> {
        migrations::schema_version(&lock(&self.reader))
    }

    /// Runs `f` in an immediate write transaction, commits, and returns once
    /// the commit is on disk (a group fsync shared with concurrent writers).
    ///
    /// Readers may see a commit a moment before it is durable; nothing is
    /// acknowledged to a client before it is.
    pub(super) fn write<T>(
        &self,
        f: impl FnOnce(&Transaction<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.sync.check().map_err(durability)?;
        let (generation, value) = {
            let mut conn = lock(&self.writer);
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(sqlite("starting a write transaction"))?;
            let value = f(&tx)?;
            tx.commit().map_err(sqlite("committing"))?;
            (self.sync.committed(), value)
        };
        self.sync.wait_durable(generation).map_err(durability)?;
        Ok(value)
    }

    /// Runs `f` in a read transaction: one consistent snapshot.
    pub(super) fn read<T>(
        &self,
        f: impl FnOnce(&Transaction<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut conn = lock(&self.reader);
        let tx = conn
            .transaction()
            .map_err(sqlite("starting a read transaction"))?;
        f(&tx)
    }
}

fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(rusqlite::Error::InvalidParameterName(format!(
            "journal_mode is {mode}, WAL is required"
        )));
    }
    // Commits append to the WAL; `GroupSync` makes them durable before a
    // write returns, sharing one fsync among concurrent writers.
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", true)?;
    Ok(())
}

// --- value encoding -------------------------------------------------------

fn nanos(t: OffsetDateTime, field: &'static str) -> Result<i64, StoreError> {
    i64::try_from(t.unix_timestamp_nanos()).map_err(|_| StoreError::InvalidInput {
        field,
        reason: format!("{t} is outside the storable range"),
    })
}

fn from_nanos(n: i64, context: &'static str) -> Result<OffsetDateTime, StoreError> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(n)).map_err(|e| StoreError::Corrupt {
        context,
        reason: e.to_string(),
    })
}

fn opt_from_nanos(n: Option<i64>, context: &'static str) -> Result<Option<OffsetDateTime>, StoreError> {
    n.map(|n| from_nanos(n, context)).transpose()
}

fn to_u64(n: i64, context: &'static str) -> Result<u64, StoreError> {
    u64::try_from(n).map_err(|_| StoreError::Corrupt {
        context,
        reason: format!("negative value {n}"),
    })
}

fn to_u32(n: i64, context: &'static str) -> Result<u32, StoreError> {
    u32::try_from(n).map_err(|_| StoreError::Corrupt {
        context,
        reason: format!("value {n} out of range"),
    })
}

fn chain_json(chain: &[String]) -> Result<String, StoreError> {
    serde_json::to_string(chain).map_err(|e| StoreError::InvalidInput {
        field: "chain",
        reason: e.to_string(),
    })
}

fn chain_from_json(text: &str, context: &'static str) -> Result<Vec<String>, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt {
        context,
        reason: e.to_string(),
    })
}

fn sql_limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

/// Sequence numbers and cursors come from SQLite's signed rowids, so they
/// always fit back; saturating keeps an out-of-range argument matching nothing.
fn sql_int(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

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

fn validate_exchange(new: &NewExchange) -> Result<(), StoreError> {
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
    )
}

// --- rows -----------------------------------------------------------------

macro_rules! select_exchange {
    () => {
        "SELECT seq, exchange_id, credential_id, credential_digest, origin, destination, chain, status,
                accepted_at, forwarded_at, settled_at, updated_at, attempts, last_error, problem
         FROM exchanges "
    };
}

/// An `exchanges` row as SQLite returns it, before validation.
struct ExchangeRow {
    seq: i64,
    exchange_id: String,
    credential_id: String,
    credential_digest: String,
    origin: String,
    destination: String,
    chain: String,
    status: String,
    accepted_at: i64,
    forwarded_at: Option<i64>,
    settled_at: Option<i64>,
    updated_at: i64,
    attempts: i64,
    last_error: Option<String>,
    problem: Option<String>,
}

impl ExchangeRow {
    fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            seq: r.get(0)?,
            exchange_id: r.get(1)?,
            credential_id: r.get(2)?,
            credential_digest: r.get(3)?,
            origin: r.get(4)?,
            destination: r.get(5)?,
            chain: r.get(6)?,
            status: r.get(7)?,
            accepted_at: r.get(8)?,
            forwarded_at: r.get(9)?,
            settled_at: r.get(10)?,
            updated_at: r.get(11)?,
            attempts: r.get(12)?,
            last_error: r.get(13)?,
            problem: r.get(14)?,
        })
    }

    fn into_exchange(self) -> Result<Exchange, StoreError> {
        const CTX: &str = "exchange row";
        let corrupt = |reason: String| StoreError::Corrupt { context: CTX, reason };
        let status: ExchangeStatus = self.status.parse().map_err(|e| corrupt(format!("{e}")))?;
        let settled = || {
            self.settled_at
                .ok_or_else(|| corrupt(format!("{status} exchange without settled_at")))
                .and_then(|n| from_nanos(n, CTX))
        };
        let state = match status {
            ExchangeStatus::Accepted => ExchangeState::Accepted,
            ExchangeStatus::Forwarded => ExchangeState::Forwarded,
            ExchangeStatus::Delivered => ExchangeState::Delivered { at: settled()? },
            ExchangeStatus::DeadLettered => ExchangeState::DeadLettered { at: settled()? },
            ExchangeStatus::Rejected => {
                let text = self
                    .problem
                    .as_deref()
                    .ok_or_else(|| corrupt("rejected exchange without a problem".into()))?;
                let problem = serde_json::from_str(text).map_err(|e| corrupt(e.to_string()))?;
                ExchangeState::Rejected {
                    at: settled()?,
                    problem,
                }
            }
        };
        Ok(Exchange {
            seq: to_u64(self.seq, CTX)?,
            chain: chain_from_json(&self.chain, CTX)?,
            state,
            accepted_at: from_nanos(self.accepted_at, CTX)?,
            forwarded_at: opt_from_nanos(self.forwarded_at, CTX)?,
            updated_at: from_nanos(self.updated_at, CTX)?,
            attempts: to_u32(self.attempts, CTX)?,
            exchange_id: self.exchange_id,
            credential_id: self.credential_id,
            credential_digest: self.credential_digest,
            origin: self.origin,
            destination: self.destination,
            last_error: self.last_error,
        })
    }
}

fn exchange_where(
    conn: &Connection,
    sql: &'static str,
    params: impl rusqlite::Params,
) -> Result<Option<Exchange>, StoreError> {
    conn.query_row(sql, params, ExchangeRow::from_row)
        .optional()
        .map_err(sqlite("reading an exchange"))?
        .map(ExchangeRow::into_exchange)
        .transpose()
}

fn exchange_by_id(conn: &Connection, exchange_id: &str) -> Result<Option<Exchange>, StoreError> {
    exchange_where(
        conn,
        concat!(select_exchange!(), "WHERE exchange_id = ?1"),
        params![exchange_id],
    )
}

macro_rules! select_inbox {
    () => {
        "SELECT cursor, exchange_id, origin, received_at, chain FROM inbox "
    };
}

fn inbox_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(i64, String, String, i64, String)> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
}

fn into_inbox_item(
    (cursor, exchange_id, origin, received_at, chain): (i64, String, String, i64, String),
) -> Result<InboxItem, StoreError> {
    const CTX: &str = "inbox row";
    Ok(InboxItem {
        cursor: to_u64(cursor, CTX)?,
        exchange_id,
        origin,
        received_at: from_nanos(received_at, CTX)?,
        chain: chain_from_json(&chain, CTX)?,
    })
}

fn inbox_by_id(conn: &Connection, exchange_id: &str) -> Result<Option<InboxItem>, StoreError> {
    conn.query_row(
        concat!(select_inbox!(), "WHERE exchange_id = ?1"),
        params![exchange_id],
        inbox_from_row,
    )
    .optional()
    .map_err(sqlite("reading an inbox item"))?
    .map(into_inbox_item)
    .transpose()
}

fn acked_point(conn: &Connection) -> Result<u64, StoreError> {
    let n: i64 = conn
        .query_row("SELECT acked_up_to FROM inbox_ack WHERE id = 1", [], |r| r.get(0))
        .map_err(sqlite("reading the inbox ack point"))?;
    to_u64(n, "inbox ack point")
}

/// Loads the exchange and checks that it may move to `to`.
fn transition(
    tx: &Transaction<'_>,
    exchange_id: &str,
    to: ExchangeStatus,
    allowed_from: fn(ExchangeStatus) -> bool,
) -> Result<Exchange, StoreError> {
    let current = exchange_by_id(tx, exchange_id)?.ok_or_else(|| StoreError::NotFound {
        exchange_id: exchange_id.to_owned(),
    })?;
    if allowed_from(current.status()) {
        Ok(current)
    } else {
        Err(StoreError::InvalidTransition {
            exchange_id: exchange_id.to_owned(),
            from: current.status(),
            to,
        })
    }
}

/// Takes a pending exchange out of the outbox into a terminal state.
fn settle(
    tx: &Transaction<'_>,
    exchange_id: &str,
    to: ExchangeStatus,
    problem: Option<&Value>,
    at: OffsetDateTime,
) -> Result<Exchange, StoreError> {
    let current = transition(tx, exchange_id, to, ExchangeStatus::is_pending)?;
    let at_n = nanos(at, "at")?;
    // A settlement by the peer's answer is itself an attempt; dead-lettering is not.
    let attempt = i64::from(matches!(to, ExchangeStatus::Delivered | ExchangeStatus::Rejected));
    let problem_text = problem.map(Value::to_string);
    tx.execute(
        "UPDATE exchanges
         SET status = ?2, settled_at = ?3, updated_at = ?3, problem = ?4,
             attempts = attempts + ?5,
             forwarded_at = CASE WHEN ?5 = 1 THEN COALESCE(forwarded_at, ?3) ELSE forwarded_at END
         WHERE seq = ?1",
        params![sql_int(current.seq), to.as_str(), at_n, problem_text, attempt],
    )
    .map_err(sqlite("settling an exchange"))?;
    tx.execute(
        "DELETE FROM outbox WHERE exchange_seq = ?1",
        params![sql_int(current.seq)],
    )
    .map_err(sqlite("removing an outbox item"))?;
    let event = match to {
        ExchangeStatus::Delivered => AuditEvent::Delivered,
        ExchangeStatus::Rejected => AuditEvent::Rejected,
        _ => AuditEvent::DeadLettered,
    };
    let detail = match problem {
        Some(p) => json!({ "from": current.status().as_str(), "problem": p }),
        None => json!({ "from": current.status().as_str() }),
    };
    audit::append(tx, at_n, Some(exchange_id), event, &detail)?;
    Ok(current)
}

impl Store for SqliteStore {
    fn insert_exchange(&self, new: NewExchange) -> Result<Inserted<Exchange>, StoreError> {
        validate_exchange(&new)?;
        let at = nanos(new.accepted_at, "accepted_at")?;
        let chain = chain_json(&new.chain)?;
        self.write(|tx| {
            let existing = exchange_where(
                tx,
                concat!(select_exchange!(), "WHERE origin = ?1 AND credential_id = ?2"),
                params![new.origin, new.credential_id],
            )?;
            if let Some(existing) = existing {
                return Ok(if existing.credential_digest == new.credential_digest {
                    Inserted::Existing(existing)
                } else {
                    Inserted::Conflict {
                        existing_exchange_id: existing.exchange_id,
                    }
                });
            }
            if exchange_by_id(tx, &new.exchange_id)?.is_some() {
                return Err(StoreError::InvalidInput {
                    field: "exchange_id",
                    reason: format!("{} is already used by another credential", new.exchange_id),
                });
            }
            tx.execute(
                "INSERT INTO exchanges (exchange_id, origin, credential_id, credential_digest, destination,
                                        chain, status, accepted_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'accepted', ?7, ?7)",
                params![
                    new.exchange_id,
                    new.origin,
                    new.credential_id,
                    new.credential_digest,
                    new.destination,
                    chain,
                    at
                ],
            )
            .map_err(sqlite("inserting an exchange"))?;
            let seq = tx.last_insert_rowid();
            tx.execute(
                "INSERT INTO outbox (exchange_seq, destination, queued_at, next_attempt_at)
                 VALUES (?1, ?2, ?3, ?3)",
                params![seq, new.destination, at],
            )
            .map_err(sqlite("inserting an outbox item"))?;
            audit::append(
                tx,
                at,
                Some(&new.exchange_id),
                AuditEvent::Accepted,
                &json!({
                    "origin": new.origin,
                    "destination": new.destination,
                    "credentialId": new.credential_id,
                    "credentialDigest": new.credential_digest,
                    "seq": seq,
                }),
            )?;
            let created = exchange_by_id(tx, &new.exchange_id)?.ok_or_else(|| StoreError::Corrupt {
                context: "exchange row",
                reason: "inserted exchange cannot be read back".into(),
            })?;
            Ok(Inserted::Created(created))
        })
    }

    fn find_by_credential(&self, origin: &str, credential_id: &str) -> Result<Option<Exchange>, StoreError> {
        self.read(|tx| {
            exchange_where(
                tx,
                concat!(select_exchange!(), "WHERE origin = ?1 AND credential_id = ?2"),
                params![origin, credential_id],
            )
        })
    }

    fn exchange(&self, exchange_id: &str) -> Result<Option<Exchange>, StoreError> {
        self.read(|tx| exchange_by_id(tx, exchange_id))
    }

    fn list_exchanges(
        &self,
        status: Option<ExchangeStatus>,
        limit: u32,
    ) -> Result<Vec<Exchange>, StoreError> {
        self.read(|tx| {
            let mut stmt = tx
                .prepare(concat!(
                    select_exchange!(),
                    "WHERE ?1 IS NULL OR status = ?1 ORDER BY seq LIMIT ?2"
                ))
                .map_err(sqlite("listing exchanges"))?;
            let rows = stmt
                .query_map(
                    params![status.map(ExchangeStatus::as_str), i64::from(limit)],
                    ExchangeRow::from_row,
                )
                .map_err(sqlite("listing exchanges"))?;
            rows.map(|r| r.map_err(sqlite("listing exchanges"))?.into_exchange())
                .collect()
        })
    }

    fn pending_outbox(&self, destination: &str, limit: usize) -> Result<Vec<OutboxItem>, StoreError> {
        const CTX: &str = "outbox row";
        self.read(|tx| {
            let mut stmt = tx
                .prepare(
                    "SELECT o.exchange_seq, e.exchange_id, e.origin, o.destination, e.chain,
                            o.queued_at, o.next_attempt_at, o.attempts
                     FROM outbox o JOIN exchanges e ON e.seq = o.exchange_seq
                     WHERE o.destination = ?1
                     ORDER BY o.exchange_seq
                     LIMIT ?2",
                )
                .map_err(sqlite("reading the outbox"))?;
            let rows = stmt
                .query_map(params![destination, sql_limit(limit)], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, String>(3)?,
                        r.get::<_, String>(4)?,
                        r.get::<_, i64>(5)?,
                        r.get::<_, i64>(6)?,
                        r.get::<_, i64>(7)?,
                    ))
                })
                .map_err(sqlite("reading the outbox"))?;
            rows.map(|r| {
                let (seq, exchange_id, origin, destination, chain, queued, next, attempts) =
                    r.map_err(sqlite("reading the outbox"))?;
                Ok(OutboxItem {
                    seq: to_u64(seq, CTX)?,
                    exchange_id,
                    origin,
                    destination,
                    chain: chain_from_json(&chain, CTX)?,
                    queued_at: from_nanos(queued, CTX)?,
                    next_attempt_at: from_nanos(next, CTX)?,
                    attempts: to_u32(attempts, CTX)?,
                })
            })
            .collect()
        })
    }

    fn outbox_depths(&self) -> Result<BTreeMap<String, u64>, StoreError> {
        self.read(|tx| {
            let mut stmt = tx
                .prepare("SELECT destination, COUNT(*) FROM outbox GROUP BY destination")
                .map_err(sqlite("counting the outbox"))?;
            let rows = stmt
                .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
                .map_err(sqlite("counting the outbox"))?;
            rows.map(|r| {
                let (dest, n) = r.map_err(sqlite("counting the outbox"))?;
                Ok((dest, to_u64(n, "outbox count")?))
            })
            .collect()
        })
    }

    fn record_attempt_failure(
        &self,
        exchange_id: &str,
        error: &str,
        at: OffsetDateTime,
        next_attempt_at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let at_n = nanos(at, "at")?;
        let next_n = nanos(next_attempt_at, "next_attempt_at")?;
        let error = truncate(error, MAX_ERROR_LEN);
        self.write(|tx| {
            let current = transition(
                tx,
                exchange_id,
                ExchangeStatus::Forwarded,
                ExchangeStatus::is_pending,
            )?;
            let seq = sql_int(current.seq);
            tx.execute(
                "UPDATE exchanges
                 SET status = 'forwarded', attempts = attempts + 1, last_error = ?2,
                     forwarded_at = COALESCE(forwarded_at, ?3), updated_at = ?3
                 WHERE seq = ?1",
                params![seq, error, at_n],
            )
            .map_err(sqlite("recording a failed attempt"))?;
            tx.execute(
                "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = ?2 WHERE exchange_seq = ?1",
                params![seq, next_n],
            )
            .map_err(sqlite("rescheduling an outbox item"))?;
            audit::append(
                tx,
                at_n,
                Some(exchange_id),
                AuditEvent::AttemptFailed,
                &json!({
                    "from": current.status().as_str(),
                    "attempt": current.attempts + 1,
                    "error": error,
                    "nextAttemptAt": next_n,
                }),
            )
        })
    }

    fn mark_delivered(&self, exchange_id: &str, at: OffsetDateTime) -> Result<(), StoreError> {
        self.write(|tx| settle(tx, exchange_id, ExchangeStatus::Delivered, None, at).map(drop))
    }

    fn mark_rejected(
        &self,
        exchange_id: &str,
        problem: &Value,
        at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        self.write(|tx| settle(tx, exchange_id, ExchangeStatus::Rejected, Some(problem), at).map(drop))
    }

    fn dead_letter(&self, exchange_id: &str, at: OffsetDateTime) -> Result<(), StoreError> {
        self.write(|tx| settle(tx, exchange_id, ExchangeStatus::DeadLettered, None, at).map(drop))
    }

    fn retry(&self, exchange_id: &str, at: OffsetDateTime) -> Result<Exchange, StoreError> {
        let at_n = nanos(at, "at")?;
        self.write(|tx| {
            let current = transition(
                tx,
                exchange_id,
                ExchangeStatus::Accepted,
                ExchangeStatus::is_retryable,
            )?;
            let seq = sql_int(current.seq);
            tx.execute(
                "UPDATE exchanges
                 SET status = 'accepted', settled_at = NULL, problem = NULL, updated_at = ?2
                 WHERE seq = ?1",
                params![seq, at_n],
            )
            .map_err(sqlite("retrying an exchange"))?;
            tx.execute(
                "INSERT INTO outbox (exchange_seq, destination, queued_at, next_attempt_at)
                 VALUES (?1, ?2, ?3, ?3)",
                params![seq, current.destination, at_n],
            )
            .map_err(sqlite("re-queueing an outbox item"))?;
            audit::append(
                tx,
                at_n,
                Some(exchange_id),
                AuditEvent::Retried,
                &json!({ "from": current.status().as_str() }),
            )?;
            exchange_by_id(tx, exchange_id)?.ok_or_else(|| StoreError::NotFound {
                exchange_id: exchange_id.to_owned(),
            })
        })
    }

    fn insert_inbox(&self, new: NewInboxItem) -> Result<Inserted<InboxItem>, StoreError> {
        require(!new.exchange_id.is_empty(), "exchange_id", "empty")?;
        require(!new.origin.is_empty(), "origin", "empty")?;
        require(!new.chain.is_empty(), "chain", "empty")?;
        let at = nanos(new.received_at, "received_at")?;
        let chain = chain_json(&new.chain)?;
        self.write(|tx| {
            if let Some(existing) = inbox_by_id(tx, &new.exchange_id)? {
                let same = existing.origin == new.origin && existing.chain.first() == new.chain.first();
                return Ok(if same {
                    Inserted::Existing(existing)
                } else {
                    Inserted::Conflict {
                        existing_exchange_id: existing.exchange_id,
                    }
                });
            }
            tx.execute(
                "INSERT INTO inbox (exchange_id, origin, received_at, chain) VALUES (?1, ?2, ?3, ?4)",
                params![new.exchange_id, new.origin, at, chain],
            )
            .map_err(sqlite("inserting an inbox item"))?;
            let cursor = tx.last_insert_rowid();
            audit::append(
                tx,
                at,
                Some(&new.exchange_id),
                AuditEvent::InboxReceived,
                &json!({ "origin": new.origin, "cursor": cursor }),
            )?;
            Ok(Inserted::Created(InboxItem {
                cursor: to_u64(cursor, "inbox cursor")?,
                exchange_id: new.exchange_id,
                origin: new.origin,
                received_at: new.received_at,
                chain: new.chain,
            }))
        })
    }

    fn inbox_by_exchange(&self, exchange_id: &str) -> Result<Option<InboxItem>, StoreError> {
        self.read(|tx| inbox_by_id(tx, exchange_id))
    }

    fn inbox_page(&self, after: Option<u64>, limit: u32) -> Result<Vec<InboxItem>, StoreError> {
        self.read(|tx| {
            let after = match after {
                Some(a) => a,
                None => acked_point(tx)?,
            };
            let after = sql_int(after);
            let mut stmt = tx
                .prepare(concat!(
                    select_inbox!(),
                    "WHERE cursor > ?1 ORDER BY cursor LIMIT ?2"
                ))
                .map_err(sqlite("reading the inbox"))?;
            let rows = stmt
                .query_map(params![after, i64::from(limit)], inbox_from_row)
                .map_err(sqlite("reading the inbox"))?;
            rows.map(|r| into_inbox_item(r.map_err(sqlite("reading the inbox"))?))
                .collect()
        })
    }

    fn ack(&self, up_to: u64, at: OffsetDateTime) -> Result<u64, StoreError> {
        let at_n = nanos(at, "at")?;
        self.write(|tx| {
            let current = acked_point(tx)?;
            let highest: i64 = tx
                .query_row("SELECT COALESCE(MAX(cursor), 0) FROM inbox", [], |r| r.get(0))
                .map_err(sqlite("reading the highest inbox cursor"))?;
            let target = up_to.min(to_u64(highest, "inbox cursor")?);
            if target <= current {
                return Ok(0);
            }
            let (current_i, target_i) = (sql_int(current), sql_int(target));
            let newly: i64 = tx
                .query_row(
                    "SELECT COUNT(*) FROM inbox WHERE cursor > ?1 AND cursor <= ?2",
                    params![current_i, target_i],
                    |r| r.get(0),
                )
                .map_err(sqlite("counting acknowledged items"))?;
            tx.execute(
                "UPDATE inbox_ack SET acked_up_to = ?1 WHERE id = 1",
                params![target_i],
            )
            .map_err(sqlite("advancing the inbox ack point"))?;
            audit::append(
                tx,
                at_n,
                None,
                AuditEvent::InboxAcked,
                &json!({ "from": current, "upTo": target, "requested": up_to, "count": newly }),
            )?;
            to_u64(newly, "acknowledged count")
        })
    }

    fn acked_up_to(&self) -> Result<u64, StoreError> {
        self.read(|tx| acked_point(tx))
    }

    fn audit_verify(&self) -> Result<AuditReport, StoreError> {
        self.read(|tx| audit::verify(tx))
    }

    fn ping(&self) -> Result<(), StoreError> {
        let conn = lock(&self.reader);
        conn.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))
            .map_err(sqlite("pinging the database"))?;
        Ok(())
    }

    fn checkpoint_store(&self) -> Option<&dyn super::CheckpointStore> {
        Some(self)
    }
}
