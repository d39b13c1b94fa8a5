//! [`Store`] on an embedded SQLite database.
//!
//! WAL with group commit (see `group_sync`): a write returns `Ok` only after
//! an fsync of the WAL that covers its commit, so `Ok` means durable across
//! `kill -9` and power loss, while concurrent writers share fsyncs. Writes
//! go through one connection behind a mutex and use `BEGIN IMMEDIATE`, so
//! read-then-write decisions (idempotency, transitions) cannot race, not
//! even with another process on the same file. Reads use a second,
//! query-only connection so they do not queue behind writes.

use super::audit;
use super::cached::Cached;
use super::domain::{
    self, chain_from_json, chain_json, entries, from_nanos, nanos, to_i64 as sql_int, to_u64, Admission,
    Transition,
};
use super::migrations;
use super::sqlite_checkpointer::Checkpointer;
use super::sqlite_queue::{Queued, WriteQueue};
use super::sqlite_writer::Writer;
use super::{
    AuditReport, Exchange, ExchangeState, ExchangeStatus, ExpiredItem, InboxItem, Inserted, Lease,
    NewExchange, NewInboxItem, OutboxItem, Settlement, Store, StoreError, StoreFault,
};
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, Transaction};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use time::OffsetDateTime;

/// How long a writer waits for another process's write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a readiness write probe's result is reused: `/readyz` may be
/// polled often, a probe costs a commit and an fsync.
const PROBE_TTL: Duration = Duration::from_secs(1);

/// After this many `maintain` calls with writes in between, the WAL is
/// checkpointed and truncated even though the store never went idle.
const BUSY_CHECKPOINT_EVERY: u32 = 6;

/// How the WAL is kept bounded. The defaults keep it under 8 MiB in normal
/// operation, so a small disk is not filled by the log while the database
/// itself stays tiny. Checkpoints are not more frequent than that because
/// each one fsyncs twice and writes the same hot pages back again: at 200
/// pages they were 3 % of an origin gateway's CPU under load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreOptions {
    /// Once the WAL is this many pages long, it is copied back into the
    /// database by the checkpoint thread (`sqlite_checkpointer.rs`), and the
    /// writer's next write starts it over. The writer's own
    /// `wal_autocheckpoint` is armed at four times this as a backstop.
    pub wal_autocheckpoint_pages: u32,
    /// `PRAGMA journal_size_limit`: when the WAL is reset after a
    /// checkpoint, it is truncated to at most this many bytes.
    pub journal_size_limit_bytes: u64,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            wal_autocheckpoint_pages: 1000,
            journal_size_limit_bytes: 8 * 1024 * 1024,
        }
    }
}

/// The SQLite store. Cheap to share: wrap it in an `Arc`.
#[derive(Debug)]
pub struct SqliteStore {
    /// Accepts queued by async callers (`queue_insert_exchange`); dropped
    /// first, so its thread finishes them before the connection closes.
    queue: Option<WriteQueue>,
    /// Copies the WAL back into the database off the write path; dropped
    /// (stopped and joined) before the writer's connection closes.
    checkpointer: Checkpointer,
    path: PathBuf,
    /// The one writing connection, with group transactions and group commit.
    writer: Arc<Writer>,
    reader: Mutex<Connection>,
    /// Last readiness probe: when, and whether it could commit.
    probe: Mutex<Option<Probe>>,
    /// Commit generations seen by `maintain`, to tell idle from busy.
    checkpoints: Mutex<CheckpointState>,
    /// The database file, for the checkpoint thread's flush. Closed after
    /// every connection above: closing any descriptor of the file drops
    /// the process's POSIX locks on it, SQLite's included.
    _db_file: Arc<std::fs::File>,
    /// The data directory lock, held as long as the store is open.
    _lock: Option<super::data_dir::DirLock>,
}

/// A readiness probe's outcome, reused for [`PROBE_TTL`].
#[derive(Debug, Clone)]
struct Probe {
    at: std::time::Instant,
    result: Result<(), (StoreFault, String)>,
}

#[derive(Debug, Default)]
struct CheckpointState {
    /// Commit generation at the previous `maintain` call.
    seen: u64,
    /// Commit generation covered by the last truncating checkpoint.
    done: u64,
    /// `maintain` calls since the last checkpoint.
    calls: u32,
}

/// Maps SQLite result codes that mean "this store cannot commit" to a
/// typed [`StoreError::Fault`]; other errors are returned unchanged.
pub(super) fn classify(path: &Path, err: StoreError) -> StoreError {
    let StoreError::Backend {
        backend,
        context,
        source,
    } = err
    else {
        return err;
    };
    let fault = match sqlite_code(source.as_ref()) {
        Some(rusqlite::ErrorCode::ReadOnly) => StoreFault::ReadOnly,
        Some(rusqlite::ErrorCode::DiskFull) => StoreFault::DiskFull,
        Some(rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase) => StoreFault::Corrupt,
        Some(rusqlite::ErrorCode::SystemIoFailure | rusqlite::ErrorCode::CannotOpen) => StoreFault::Io,
        _ => {
            return StoreError::Backend {
                backend,
                context,
                source,
            }
        }
    };
    StoreError::Fault {
        path: path.to_owned(),
        fault,
        detail: format!("{context}: {source}"),
    }
}

fn durability(reason: String) -> StoreError {
    StoreError::Durability { reason }
}

/// The name this backend reports in errors.
pub(super) const BACKEND: &str = "SQLite";

/// Wraps a rusqlite error with what the store was doing.
pub(super) fn sqlite(context: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError {
    move |source| StoreError::Backend {
        backend: BACKEND,
        context,
        source: Box::new(source),
    }
}

/// SQLite's result code of a wrapped rusqlite error, if it is one.
fn sqlite_code(source: &(dyn std::error::Error + Send + Sync + 'static)) -> Option<rusqlite::ErrorCode> {
    source
        .downcast_ref::<rusqlite::Error>()
        .and_then(rusqlite::Error::sqlite_error_code)
}

fn lock(conn: &Mutex<Connection>) -> MutexGuard<'_, Connection> {
    // A panic while holding the lock dropped its transaction, which rolls
    // back: the connection is consistent, so poisoning carries no meaning.
    conn.lock().unwrap_or_else(PoisonError::into_inner)
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and migrates it.
    /// A gateway opens its store with [`super::open_data_dir`] instead,
    /// which adds the data directory's lock, identity and permissions.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Self::open_with(path, OpenFlags::default(), StoreOptions::default())
    }

    /// [`open`](Self::open) with explicit WAL bounds.
    pub fn open_with_options(path: &Path, options: StoreOptions) -> Result<Self, StoreError> {
        Self::open_with(path, OpenFlags::default(), options)
    }

    /// Opens an existing database only: for tools such as `bashu audit
    /// verify`, which must not conjure an empty (and trivially intact) store.
    pub fn open_existing(path: &Path) -> Result<Self, StoreError> {
        let mut flags = OpenFlags::default();
        flags.remove(OpenFlags::SQLITE_OPEN_CREATE);
        Self::open_with(path, flags, StoreOptions::default())
    }

    fn open_with(path: &Path, flags: OpenFlags, options: StoreOptions) -> Result<Self, StoreError> {
        let open_error = |source: rusqlite::Error| StoreError::Open {
            backend: BACKEND,
            target: path.display().to_string(),
            source: Box::new(source),
        };
        // Declared before the connections so that, on every path, it is
        // closed after them (see `SqliteStore::_db_file`).
        let db_file: Arc<std::fs::File>;
        let mut writer = Connection::open_with_flags(path, flags).map_err(open_error)?;
        configure(&writer, options).map_err(|source| classify(path, sqlite("configuring")(source)))?;
        quick_check(&writer, path)?;
        migrations::migrate(&mut writer).map_err(|e| match e {
            StoreError::Migration { backend, source, .. } if sqlite_code(source.as_ref()).is_some() => {
                classify(
                    path,
                    StoreError::Backend {
                        backend,
                        context: "migrating the schema",
                        source,
                    },
                )
            }
            other => other,
        })?;
        let reader = Connection::open_with_flags(path, flags).map_err(open_error)?;
        configure(&reader, options).map_err(open_error)?;
        reader
            .pragma_update(None, "query_only", true)
            .map_err(open_error)?;
        let checkpoint_conn = Connection::open_with_flags(path, flags).map_err(open_error)?;
        configure(&checkpoint_conn, options).map_err(open_error)?;
        let io_error = |e: std::io::Error| StoreError::Open {
            backend: BACKEND,
            target: path.display().to_string(),
            source: Box::new(e),
        };
        db_file = Arc::new(std::fs::File::open(path).map_err(io_error)?);
        let writer = Arc::new(Writer::new(path, writer));
        let queue = WriteQueue::start(Arc::clone(&writer)).map_err(io_error)?;
        let checkpointer = Checkpointer::start(
            checkpoint_conn,
            Arc::clone(&writer),
            Arc::clone(&db_file),
            options.wal_autocheckpoint_pages.max(1),
        )
        .map_err(io_error)?;
        Ok(Self {
            queue: Some(queue),
            checkpointer,
            path: path.to_owned(),
            writer,
            reader: Mutex::new(reader),
            probe: Mutex::new(None),
            checkpoints: Mutex::new(CheckpointState::default()),
            _db_file: db_file,
            _lock: None,
        })
    }

    /// Keeps the data directory lock for as long as the store is open.
    pub(super) fn with_lock(mut self, lock: super::data_dir::DirLock) -> Self {
        self._lock = Some(lock);
        self
    }

    /// The store's identity `(store id, member)`, if one was recorded.
    pub(super) fn identity(&self) -> Result<Option<(String, String)>, StoreError> {
        self.read(|tx| {
            tx.row(
                "SELECT store_id, member FROM store_identity WHERE id = 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(sqlite("reading the store identity"))
        })
    }

    /// Records the store's identity; only ever once.
    pub(super) fn set_identity(
        &self,
        store_id: &str,
        member: &str,
        at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let at = nanos(at, "at")?;
        self.write(|tx| {
            tx.exec(
                "INSERT INTO store_identity (id, store_id, member, created_at) VALUES (1, ?1, ?2, ?3)",
                params![store_id, member, at],
            )
            .map_err(sqlite("recording the store identity"))
            .map(drop)
        })
    }

    /// Caps the database at `pages` pages (`PRAGMA max_page_count`): a
    /// quota below the disk's size, after which writes fail as
    /// [`StoreFault::DiskFull`] while reads go on. Returns the cap in force.
    pub fn set_max_pages(&self, pages: u64) -> Result<u64, StoreError> {
        self.writer.exclusive(|conn| {
            conn.row(&format!("PRAGMA max_page_count = {pages}"), [], |r| {
                r.get::<_, i64>(0)
            })
            .map_err(sqlite("setting max_page_count"))
            .and_then(|n| to_u64(n, "max_page_count"))
        })
    }

    /// Checkpoints the WAL into the database and truncates it to zero
    /// bytes. Blocks writers while it runs; returns false if a reader kept
    /// part of the WAL in use (it is then left for the next checkpoint).
    pub fn checkpoint_truncate(&self) -> Result<bool, StoreError> {
        // Our own checkpoint thread is no long reader: let its pass finish.
        let _quiet = self.checkpointer.hold();
        self.writer.exclusive(|conn| {
            let failed = |source| classify(&self.path, sqlite("checkpointing the WAL")(source));
            // Do not wait for a long reader (e.g. another process) while holding
            // the writer: a busy checkpoint is simply left for the next round.
            conn.busy_timeout(Duration::ZERO).map_err(failed)?;
            let busy = conn.row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get::<_, i64>(0));
            conn.busy_timeout(BUSY_TIMEOUT).map_err(failed)?;
            Ok(busy.map_err(failed)? == 0)
        })
    }

    /// A write that needs a commit and an fsync, touching nothing else.
    fn probe_write(&self) -> Result<(), StoreError> {
        let at = nanos(OffsetDateTime::now_utc(), "probed_at")?;
        self.write(|tx| {
            tx.exec("UPDATE health SET probed_at = ?1 WHERE id = 1", params![at])
                .map_err(sqlite("writing the health probe"))
                .map(drop)
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The schema version this binary migrates to (the number of migrations).
    pub const SCHEMA_VERSION: usize = migrations::MIGRATIONS.len();

    /// The schema version (number of migrations applied).
    pub fn schema_version(&self) -> Result<i64, StoreError> {
        migrations::schema_version(&lock(&self.reader))
    }

    /// Runs `f` as one atomic write (its own savepoint in a transaction
    /// shared with concurrent writes, see `sqlite_writer`) and returns once
    /// the commit is on disk (a group fsync shared with concurrent writers).
    ///
    /// Readers may see a commit a moment before it is durable; nothing is
    /// acknowledged to a client before it is.
    pub(super) fn write<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.writer.write(f)
    }

    /// Runs `f` in a read transaction: one consistent snapshot.
    /// Writes a consistent snapshot of the whole database to `dest` (which
    /// must not exist) while writers keep going: `VACUUM INTO` reads one
    /// transaction's view. The copy is fsynced before this returns.
    pub fn backup_to(&self, dest: &Path) -> Result<(), StoreError> {
        let text = dest.to_str().ok_or_else(|| StoreError::InvalidInput {
            field: "backup path",
            reason: "not valid UTF-8".into(),
        })?;
        // The writer connection: the reader is `query_only`, which SQLite
        // applies to VACUUM INTO's output too. This only reads our file.
        self.writer
            .exclusive(|conn| conn.execute("VACUUM INTO ?1", params![text]))
            .map_err(sqlite("writing the backup"))?;
        std::fs::File::open(dest)
            .and_then(|f| f.sync_all())
            .map_err(|e| StoreError::Durability {
                reason: format!("fsync of {}: {e}", dest.display()),
            })
    }

    /// `PRAGMA integrity_check`: `Ok` if SQLite finds nothing wrong,
    /// `Corrupt` with its first findings otherwise.
    pub fn integrity_check(&self) -> Result<(), StoreError> {
        let conn = lock(&self.reader);
        let mut stmt = conn
            .prepare_cached("PRAGMA integrity_check")
            .map_err(sqlite("checking integrity"))?;
        let findings: Vec<String> = stmt
            .query_map([], |r| r.get(0))
            .map_err(sqlite("checking integrity"))?
            .collect::<Result<_, _>>()
            .map_err(sqlite("checking integrity"))?;
        match findings.as_slice() {
            [ok] if ok == "ok" => Ok(()),
            other => Err(StoreError::Corrupt {
                context: "integrity check",
                reason: other.iter().take(5).cloned().collect::<Vec<_>>().join("; "),
            }),
        }
    }

    /// Time of the newest audit entry: what a backup knows up to.
    pub fn last_change_at(&self) -> Result<Option<OffsetDateTime>, StoreError> {
        self.read(|tx| {
            let at: Option<i64> = tx
                .row("SELECT MAX(at) FROM audit", [], |r| r.get(0))
                .map_err(sqlite("reading the audit log"))?;
            opt_from_nanos(at, "audit time")
        })
    }

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

/// `PRAGMA quick_check` (a few seconds per GiB): a damaged database is
/// refused when opened instead of failing writes one by one later.
fn quick_check(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    let mut stmt = conn
        .prepare_cached("PRAGMA quick_check(5)")
        .map_err(|source| classify(path, sqlite("checking the database")(source)))?;
    let lines: Vec<String> = stmt
        .query_map([], |r| r.get::<_, String>(0))
        .and_then(|rows| rows.collect())
        .map_err(|e| match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase) => {
                StoreError::Damaged {
                    path: path.to_owned(),
                    detail: e.to_string(),
                }
            }
            _ => classify(path, sqlite("checking the database")(e)),
        })?;
    if lines.len() == 1 && lines[0] == "ok" {
        Ok(())
    } else {
        Err(StoreError::Damaged {
            path: path.to_owned(),
            detail: lines.join("; "),
        })
    }
}

fn configure(conn: &Connection, options: StoreOptions) -> rusqlite::Result<()> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.set_prepared_statement_cache_capacity(super::cached::STATEMENT_CACHE);
    let mode: String = conn.row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(rusqlite::Error::InvalidParameterName(format!(
            "journal_mode is {mode}, WAL is required"
        )));
    }
    // Commits append to the WAL; `GroupSync` makes them durable before a
    // write returns, sharing one fsync among concurrent writers.
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", true)?;
    // Statement and savepoint journals (every write runs in a savepoint,
    // see `sqlite_writer`) and sort buffers stay in memory, not temp files.
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    // 4 MiB of page cache per connection (SQLite's default is 2 MiB): the
    // idempotency lookups land on random leaves of the credential-id
    // indexes, which outgrew the default cache and were read back from the
    // WAL with a `pread` each. Not more: a commit after a b-tree split that
    // reordered pages walks the whole cache's hash table (SQLite's
    // `balance_nonroot` rekeys through the lock-byte page number, and
    // `pcache1` then truncates by a full scan), so that walk grows with the
    // cache. Measured on an origin gateway under load: page-cache work
    // 3.4 % of its CPU at 16 MiB, 2.4 % at 4 MiB, for 0.26 more `pread`s per
    // exchange (docs/performance.md, fourth round).
    conn.pragma_update(None, "cache_size", -4_096)?;
    // Bound the WAL. The checkpoint thread copies it back at the bound; the
    // automatic checkpoint (run by whichever connection commits past it:
    // only the writer commits) is the backstop if that thread falls behind.
    // Shrink the file when it is reset instead of keeping its largest size.
    let backstop = options
        .wal_autocheckpoint_pages
        .max(1)
        .saturating_mul(super::sqlite_checkpointer::BACKSTOP_FACTOR);
    conn.row(&format!("PRAGMA wal_autocheckpoint = {backstop}"), [], |r| {
        r.get::<_, i64>(0)
    })?;
    let limit = i64::try_from(options.journal_size_limit_bytes).unwrap_or(i64::MAX);
    conn.row(&format!("PRAGMA journal_size_limit = {limit}"), [], |r| {
        r.get::<_, i64>(0)
    })?;
    Ok(())
}

// --- value encoding -------------------------------------------------------

fn opt_from_nanos(n: Option<i64>, context: &'static str) -> Result<Option<OffsetDateTime>, StoreError> {
    n.map(|n| from_nanos(n, context)).transpose()
}

fn to_u32(n: i64, context: &'static str) -> Result<u32, StoreError> {
    u32::try_from(n).map_err(|_| StoreError::Corrupt {
        context,
        reason: format!("value {n} out of range"),
    })
}

fn sql_limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

// --- rows -----------------------------------------------------------------

macro_rules! select_exchange {
    () => {
        "SELECT seq, exchange_id, credential_id, credential_digest, origin, destination, status,
                accepted_at, forwarded_at, settled_at, updated_at, attempts, last_error, problem,
                (SELECT o.next_attempt_at FROM outbox o WHERE o.exchange_seq = exchanges.seq)
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
    status: String,
    accepted_at: i64,
    forwarded_at: Option<i64>,
    settled_at: Option<i64>,
    updated_at: i64,
    attempts: i64,
    last_error: Option<String>,
    problem: Option<String>,
    next_attempt_at: Option<i64>,
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
            status: r.get(6)?,
            accepted_at: r.get(7)?,
            forwarded_at: r.get(8)?,
            settled_at: r.get(9)?,
            updated_at: r.get(10)?,
            attempts: r.get(11)?,
            last_error: r.get(12)?,
            problem: r.get(13)?,
            next_attempt_at: r.get(14)?,
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
            state,
            accepted_at: from_nanos(self.accepted_at, CTX)?,
            forwarded_at: opt_from_nanos(self.forwarded_at, CTX)?,
            updated_at: from_nanos(self.updated_at, CTX)?,
            attempts: to_u32(self.attempts, CTX)?,
            next_attempt_at: opt_from_nanos(self.next_attempt_at, CTX)?,
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
    conn.row(sql, params, ExchangeRow::from_row)
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
    conn.row(
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
        .row("SELECT acked_up_to FROM inbox_ack WHERE id = 1", [], |r| r.get(0))
        .map_err(sqlite("reading the inbox ack point"))?;
    to_u64(n, "inbox ack point")
}

/// Loads the exchange a fenced operation is about, checks the lease's
/// token against the stored one, then the transition.
fn load_fenced(
    tx: &Connection,
    lease: &Lease,
    exchange_id: &str,
    t: Transition,
) -> Result<Exchange, StoreError> {
    let current = exchange_by_id(tx, exchange_id)?;
    let stored = lease_row(tx, &lease.destination)?.map(|l| l.token);
    domain::check_fence(stored, lease, current.as_ref().map(|e| e.destination.as_str()))?;
    t.check_found(exchange_id, current)
}

/// Takes a pending exchange out of the outbox into a terminal state.
pub(super) fn settle(
    tx: &Connection,
    lease: &Lease,
    exchange_id: &str,
    t: Transition,
    problem: Option<&Value>,
    at: OffsetDateTime,
) -> Result<(), StoreError> {
    let at_n = nanos(at, "at")?;
    let current = load_fenced(tx, lease, exchange_id, t)?;
    let problem_text = problem.map(Value::to_string);
    tx.exec(
        "UPDATE exchanges
         SET status = ?2, settled_at = ?3, updated_at = ?3, problem = ?4,
             attempts = attempts + ?5,
             forwarded_at = CASE WHEN ?5 = 1 THEN COALESCE(forwarded_at, ?3) ELSE forwarded_at END
         WHERE seq = ?1",
        params![
            sql_int(current.seq),
            t.to().as_str(),
            at_n,
            problem_text,
            i64::from(t.counts_attempt())
        ],
    )
    .map_err(sqlite("settling an exchange"))?;
    tx.exec(
        "DELETE FROM outbox WHERE exchange_seq = ?1",
        params![sql_int(current.seq)],
    )
    .map_err(sqlite("removing an outbox item"))?;
    audit::append(tx, at_n, entries::settled(t, &current, problem))
}

/// [`Store::record_attempt_failure`] inside a write transaction.
pub(super) fn record_failure_tx(
    tx: &Connection,
    lease: &Lease,
    exchange_id: &str,
    error: &str,
    at: OffsetDateTime,
    next_attempt_at: OffsetDateTime,
) -> Result<(), StoreError> {
    let at_n = nanos(at, "at")?;
    let next_n = nanos(next_attempt_at, "next_attempt_at")?;
    let error = domain::truncate_error(error);
    let current = load_fenced(tx, lease, exchange_id, Transition::AttemptFailed)?;
    let seq = sql_int(current.seq);
    tx.exec(
        "UPDATE exchanges
         SET status = 'forwarded', attempts = attempts + 1, last_error = ?2,
             forwarded_at = COALESCE(forwarded_at, ?3), updated_at = ?3
         WHERE seq = ?1",
        params![seq, error, at_n],
    )
    .map_err(sqlite("recording a failed attempt"))?;
    tx.exec(
        "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = ?2 WHERE exchange_seq = ?1",
        params![seq, next_n],
    )
    .map_err(sqlite("rescheduling an outbox item"))?;
    audit::append(tx, at_n, entries::attempt_failed(&current, error, next_n))
}

/// [`Store::insert_inbox`] inside a write transaction, for an item already
/// validated by [`domain::validate_inbox`].
pub(super) fn insert_inbox_tx(tx: &Connection, new: NewInboxItem) -> Result<Inserted<InboxItem>, StoreError> {
    let at = nanos(new.received_at, "received_at")?;
    let chain = chain_json(&new.chain)?;
    let by_id = inbox_by_id(tx, &new.exchange_id)?;
    let (by_original, own) = if by_id.is_some() {
        (None, false)
    } else {
        let by_original: Option<String> = tx
            .row(
                "SELECT exchange_id FROM inbox WHERE origin = ?1 AND credential_id = ?2",
                params![new.origin, new.credential_id],
                |r| r.get(0),
            )
            .optional()
            .map_err(sqlite("reading an inbox item"))?;
        let own: bool = tx
            .row(
                "SELECT EXISTS (SELECT 1 FROM exchanges WHERE exchange_id = ?1)",
                params![new.exchange_id],
                |r| r.get(0),
            )
            .map_err(sqlite("reading an exchange"))?;
        (by_original, own)
    };
    if let Admission::Answer(answer) = domain::admit_inbox(&new, by_id, by_original, own) {
        return Ok(answer);
    }
    tx.exec(
        "INSERT INTO inbox (exchange_id, origin, credential_id, received_at, chain) \
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![new.exchange_id, new.origin, new.credential_id, at, chain],
    )
    .map_err(sqlite("inserting an inbox item"))?;
    let cursor = to_u64(tx.last_insert_rowid(), "inbox cursor")?;
    audit::append(tx, at, entries::inbox_received(&new, cursor))?;
    Ok(Inserted::Created(InboxItem {
        cursor,
        exchange_id: new.exchange_id,
        origin: new.origin,
        received_at: new.received_at,
        chain: new.chain,
    }))
}

/// The destination's stored lease, if it ever had one.
fn lease_row(conn: &Connection, destination: &str) -> Result<Option<Lease>, StoreError> {
    const CTX: &str = "delivery lease";
    let row: Option<(String, i64, i64)> = conn
        .row(
            "SELECT holder, token, expires_at FROM delivery_leases WHERE destination = ?1",
            params![destination],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()
        .map_err(sqlite("reading a delivery lease"))?;
    row.map(|(holder, token, expires_at)| {
        Ok(Lease {
            destination: destination.to_owned(),
            holder,
            token: to_u64(token, CTX)?,
            expires_at: from_nanos(expires_at, CTX)?,
        })
    })
    .transpose()
}

/// An exchange checked and encoded for insertion, outside any transaction.
struct NewExchangeRow {
    new: NewExchange,
    at: i64,
    chain: String,
}

impl NewExchangeRow {
    fn new(new: NewExchange) -> Result<Self, StoreError> {
        domain::validate_exchange(&new)?;
        let at = nanos(new.accepted_at, "accepted_at")?;
        let chain = chain_json(&new.chain)?;
        Ok(Self { new, at, chain })
    }

    /// Inserts the exchange, its outbox item and audit entry, or answers a
    /// replay or conflict from what is stored.
    fn insert(&self, tx: &Connection) -> Result<Inserted<Exchange>, StoreError> {
        let (new, at) = (&self.new, self.at);
        let by_credential = exchange_where(
            tx,
            concat!(select_exchange!(), "WHERE origin = ?1 AND credential_id = ?2"),
            params![new.origin, new.credential_id],
        )?;
        let id_taken = by_credential.is_none() && exchange_by_id(tx, &new.exchange_id)?.is_some();
        if let Admission::Answer(answer) = domain::admit_exchange(new, by_credential, id_taken)? {
            return Ok(answer);
        }
        tx.exec(
            "INSERT INTO exchanges (exchange_id, origin, credential_id, credential_digest, destination,
                                    status, accepted_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, 'accepted', ?6, ?6)",
            params![
                new.exchange_id,
                new.origin,
                new.credential_id,
                new.credential_digest,
                new.destination,
                at
            ],
        )
        .map_err(sqlite("inserting an exchange"))?;
        let seq = tx.last_insert_rowid();
        tx.exec(
            "INSERT INTO exchange_chains (exchange_seq, chain) VALUES (?1, ?2)",
            params![seq, self.chain],
        )
        .map_err(sqlite("storing an exchange's chain"))?;
        tx.exec(
            "INSERT INTO outbox (exchange_seq, destination, queued_at, next_attempt_at)
             VALUES (?1, ?2, ?3, ?3)",
            params![seq, new.destination, at],
        )
        .map_err(sqlite("inserting an outbox item"))?;
        let seq = to_u64(seq, "exchange seq")?;
        audit::append(tx, at, entries::accepted(new, seq))?;
        Ok(Inserted::Created(domain::accepted_exchange(new, seq)))
    }
}

impl Store for SqliteStore {
    fn insert_exchange(&self, new: NewExchange) -> Result<Inserted<Exchange>, StoreError> {
        let row = NewExchangeRow::new(new)?;
        self.write(|tx| row.insert(tx))
    }

    fn queue_insert_exchange(
        &self,
        new: Box<NewExchange>,
    ) -> Result<Queued<Inserted<Exchange>>, Box<NewExchange>> {
        let Some(queue) = &self.queue else {
            return Err(new);
        };
        Ok(match NewExchangeRow::new(*new) {
            Ok(row) => queue.submit(move |tx| row.insert(tx)),
            Err(invalid) => {
                let (reply, answer) = tokio::sync::oneshot::channel();
                let _ = reply.send(Err(invalid));
                answer
            }
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
                .prepare_cached(concat!(
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
                .prepare_cached(
                    "SELECT o.exchange_seq, e.exchange_id, e.origin, o.destination, c.chain,
                            o.queued_at, o.next_attempt_at, o.attempts
                     FROM outbox o JOIN exchanges e ON e.seq = o.exchange_seq
                     LEFT JOIN exchange_chains c ON c.exchange_seq = o.exchange_seq
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
                        r.get::<_, Option<String>>(4)?,
                        r.get::<_, i64>(5)?,
                        r.get::<_, i64>(6)?,
                        r.get::<_, i64>(7)?,
                    ))
                })
                .map_err(sqlite("reading the outbox"))?;
            rows.map(|r| {
                let (seq, exchange_id, origin, destination, chain, queued, next, attempts) =
                    r.map_err(sqlite("reading the outbox"))?;
                // Never skip an item: a missing chain is damage to report.
                let chain = chain.ok_or_else(|| StoreError::Corrupt {
                    context: CTX,
                    reason: format!("exchange {exchange_id} has no stored chain"),
                })?;
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
                .prepare_cached("SELECT destination, COUNT(*) FROM outbox GROUP BY destination")
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
        lease: &Lease,
        exchange_id: &str,
        error: &str,
        at: OffsetDateTime,
        next_attempt_at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        self.write(|tx| record_failure_tx(tx, lease, exchange_id, error, at, next_attempt_at))
    }

    fn mark_delivered(&self, lease: &Lease, exchange_id: &str, at: OffsetDateTime) -> Result<(), StoreError> {
        self.write(|tx| settle(tx, lease, exchange_id, Transition::Deliver, None, at))
    }

    fn mark_rejected(
        &self,
        lease: &Lease,
        exchange_id: &str,
        problem: &Value,
        at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        self.write(|tx| settle(tx, lease, exchange_id, Transition::Reject, Some(problem), at))
    }

    fn dead_letter(&self, lease: &Lease, exchange_id: &str, at: OffsetDateTime) -> Result<(), StoreError> {
        self.write(|tx| settle(tx, lease, exchange_id, Transition::DeadLetter, None, at))
    }

    fn settle_batch(
        &self,
        lease: &Lease,
        outcomes: &[Settlement],
        at: OffsetDateTime,
    ) -> Result<Vec<bool>, StoreError> {
        self.settle_batch_tx(lease, outcomes, at)
    }

    fn dead_letter_expired(
        &self,
        queued_before: OffsetDateTime,
        at: OffsetDateTime,
    ) -> Result<Vec<ExpiredItem>, StoreError> {
        let cutoff = nanos(queued_before, "queued_before")?;
        let at_n = nanos(at, "at")?;
        // Nearly every sweep finds nothing: answer that from the reader
        // (an index lookup) without a write transaction and its fsync.
        let any = self.read(|tx| {
            tx.row(
                "SELECT EXISTS (SELECT 1 FROM outbox WHERE queued_at <= ?1)",
                params![cutoff],
                |r| r.get::<_, bool>(0),
            )
            .map_err(sqlite("looking for expired outbox items"))
        })?;
        if !any {
            return Ok(Vec::new());
        }
        self.write(|tx| {
            let expired: Vec<(String, String, String)> = {
                let mut stmt = tx
                    .prepare_cached(
                        "SELECT e.exchange_id, e.status, o.destination
                         FROM outbox o JOIN exchanges e ON e.seq = o.exchange_seq
                         WHERE o.queued_at <= ?1
                         ORDER BY o.exchange_seq",
                    )
                    .map_err(sqlite("reading expired outbox items"))?;
                let rows = stmt
                    .query_map(params![cutoff], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                    .map_err(sqlite("reading expired outbox items"))?;
                rows.collect::<Result<_, _>>()
                    .map_err(sqlite("reading expired outbox items"))?
            };
            tx.exec(
                "UPDATE exchanges
                 SET status = 'dead-lettered', settled_at = ?2, updated_at = ?2, problem = NULL
                 WHERE seq IN (SELECT exchange_seq FROM outbox WHERE queued_at <= ?1)",
                params![cutoff, at_n],
            )
            .map_err(sqlite("dead-lettering expired exchanges"))?;
            tx.exec("DELETE FROM outbox WHERE queued_at <= ?1", params![cutoff])
                .map_err(sqlite("removing expired outbox items"))?;
            expired
                .into_iter()
                .map(|(exchange_id, from, destination)| {
                    audit::append(tx, at_n, entries::expired(&exchange_id, &from))?;
                    Ok(ExpiredItem {
                        exchange_id,
                        destination,
                    })
                })
                .collect()
        })
    }

    fn retry(&self, exchange_id: &str, at: OffsetDateTime) -> Result<Exchange, StoreError> {
        let at_n = nanos(at, "at")?;
        self.write(|tx| {
            let current = Transition::Retry.check_found(exchange_id, exchange_by_id(tx, exchange_id)?)?;
            let seq = sql_int(current.seq);
            tx.exec(
                "UPDATE exchanges
                 SET status = 'accepted', settled_at = NULL, problem = NULL, updated_at = ?2
                 WHERE seq = ?1",
                params![seq, at_n],
            )
            .map_err(sqlite("retrying an exchange"))?;
            tx.exec(
                "INSERT INTO outbox (exchange_seq, destination, queued_at, next_attempt_at)
                 VALUES (?1, ?2, ?3, ?3)",
                params![seq, current.destination, at_n],
            )
            .map_err(sqlite("re-queueing an outbox item"))?;
            audit::append(tx, at_n, entries::retried(&current))?;
            exchange_by_id(tx, exchange_id)?.ok_or_else(|| StoreError::NotFound {
                exchange_id: exchange_id.to_owned(),
            })
        })
    }

    fn redeliver(
        &self,
        destination: &str,
        since: OffsetDateTime,
        at: OffsetDateTime,
    ) -> Result<u64, StoreError> {
        let (since_n, at_n) = (nanos(since, "since")?, nanos(at, "at")?);
        self.write(|tx| {
            let ids: Vec<(i64, String)> = {
                let mut stmt = tx
                    .prepare_cached(
                        "SELECT seq, exchange_id FROM exchanges
                         WHERE destination = ?1 AND status = 'delivered' AND settled_at >= ?2
                         ORDER BY seq",
                    )
                    .map_err(sqlite("finding delivered exchanges"))?;
                let rows = stmt
                    .query_map(params![destination, since_n], |r| Ok((r.get(0)?, r.get(1)?)))
                    .map_err(sqlite("finding delivered exchanges"))?;
                rows.collect::<Result<_, _>>()
                    .map_err(sqlite("finding delivered exchanges"))?
            };
            for (seq, exchange_id) in &ids {
                tx.exec(
                    "UPDATE exchanges
                     SET status = 'accepted', settled_at = NULL, updated_at = ?2
                     WHERE seq = ?1",
                    params![seq, at_n],
                )
                .map_err(sqlite("re-queueing a delivered exchange"))?;
                tx.exec(
                    "INSERT INTO outbox (exchange_seq, destination, queued_at, next_attempt_at)
                     VALUES (?1, ?2, ?3, ?3)",
                    params![seq, destination, at_n],
                )
                .map_err(sqlite("re-queueing an outbox item"))?;
                audit::append(tx, at_n, entries::redelivered(exchange_id, destination, since_n))?;
            }
            Ok(u64::try_from(ids.len()).unwrap_or(u64::MAX))
        })
    }

    fn acquire_lease(
        &self,
        destination: &str,
        holder: &str,
        ttl: Duration,
        now: OffsetDateTime,
    ) -> Result<Option<Lease>, StoreError> {
        self.write(|tx| {
            let current = lease_row(tx, destination)?;
            let decision = domain::decide_lease(current.as_ref(), destination, holder, ttl, now)?;
            let Some(lease) = decision.lease() else {
                return Ok(None);
            };
            tx.exec(
                "INSERT INTO delivery_leases (destination, holder, token, expires_at)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (destination) DO UPDATE
                 SET holder = excluded.holder, token = excluded.token, expires_at = excluded.expires_at",
                params![
                    lease.destination,
                    lease.holder,
                    sql_int(lease.token),
                    nanos(lease.expires_at, "expires_at")?
                ],
            )
            .map_err(sqlite("storing a delivery lease"))?;
            Ok(Some(lease.clone()))
        })
    }

    fn release_lease(&self, lease: &Lease) -> Result<(), StoreError> {
        let released = domain::released(lease);
        let expires_at = nanos(released.expires_at, "expires_at")?;
        self.write(|tx| {
            tx.exec(
                "UPDATE delivery_leases SET expires_at = ?3 WHERE destination = ?1 AND token = ?2",
                params![released.destination, sql_int(released.token), expires_at],
            )
            .map_err(sqlite("releasing a delivery lease"))
            .map(drop)
        })
    }

    fn insert_inbox(&self, new: NewInboxItem) -> Result<Inserted<InboxItem>, StoreError> {
        domain::validate_inbox(&new)?;
        self.write(|tx| insert_inbox_tx(tx, new))
    }

    fn insert_inbox_batch(&self, items: Vec<NewInboxItem>) -> Result<Vec<Inserted<InboxItem>>, StoreError> {
        self.insert_inbox_batch_tx(items)
    }

    fn inbox_by_exchange(&self, exchange_id: &str) -> Result<Option<InboxItem>, StoreError> {
        self.read(|tx| inbox_by_id(tx, exchange_id))
    }

    fn inbox_by_exchanges(&self, exchange_ids: &[String]) -> Result<Vec<Option<InboxItem>>, StoreError> {
        // One read transaction: its start re-validates the page cache
        // against the WAL, once per batch instead of once per envelope.
        self.read(|tx| exchange_ids.iter().map(|id| inbox_by_id(tx, id)).collect())
    }

    fn inbox_page(&self, after: Option<u64>, limit: u32) -> Result<Vec<InboxItem>, StoreError> {
        self.read(|tx| {
            let after = match after {
                Some(a) => a,
                None => acked_point(tx)?,
            };
            let after = sql_int(after);
            let mut stmt = tx
                .prepare_cached(concat!(
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

    fn raise_inbox_cursor_floor(&self, floor: u64, at: OffsetDateTime) -> Result<u64, StoreError> {
        let at_n = nanos(at, "at")?;
        self.write(|tx| {
            // AUTOINCREMENT hands out max(sqlite_sequence, max(cursor)) + 1;
            // SQLite lets ordinary statements edit sqlite_sequence for this.
            let current: i64 = tx
                .row(
                    "SELECT MAX(COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'inbox'), 0),
                                COALESCE((SELECT MAX(cursor) FROM inbox), 0))",
                    [],
                    |r| r.get(0),
                )
                .map_err(sqlite("reading the inbox cursor"))?;
            let current = to_u64(current, "inbox cursor")?;
            let Some(floor) = domain::floor_target(current, floor) else {
                return Ok(current);
            };
            let updated = tx
                .exec(
                    "UPDATE sqlite_sequence SET seq = ?1 WHERE name = 'inbox'",
                    params![sql_int(floor)],
                )
                .map_err(sqlite("raising the inbox cursor floor"))?;
            if updated == 0 {
                tx.exec(
                    "INSERT INTO sqlite_sequence (name, seq) VALUES ('inbox', ?1)",
                    params![sql_int(floor)],
                )
                .map_err(sqlite("raising the inbox cursor floor"))?;
            }
            audit::append(tx, at_n, entries::cursor_floor_raised(current, floor))?;
            Ok(floor)
        })
    }

    fn ack(&self, up_to: u64, at: OffsetDateTime) -> Result<u64, StoreError> {
        let at_n = nanos(at, "at")?;
        self.write(|tx| {
            let current = acked_point(tx)?;
            let highest: i64 = tx
                .row("SELECT COALESCE(MAX(cursor), 0) FROM inbox", [], |r| r.get(0))
                .map_err(sqlite("reading the highest inbox cursor"))?;
            let highest = to_u64(highest, "inbox cursor")?;
            let Some(target) = domain::ack_target(current, highest, up_to) else {
                return Ok(0);
            };
            let (current_i, target_i) = (sql_int(current), sql_int(target));
            let newly: i64 = tx
                .row(
                    "SELECT COUNT(*) FROM inbox WHERE cursor > ?1 AND cursor <= ?2",
                    params![current_i, target_i],
                    |r| r.get(0),
                )
                .map_err(sqlite("counting acknowledged items"))?;
            let newly = to_u64(newly, "acknowledged count")?;
            tx.exec(
                "UPDATE inbox_ack SET acked_up_to = ?1 WHERE id = 1",
                params![target_i],
            )
            .map_err(sqlite("advancing the inbox ack point"))?;
            audit::append(tx, at_n, entries::inbox_acked(current, target, up_to, newly))?;
            Ok(newly)
        })
    }

    fn acked_up_to(&self) -> Result<u64, StoreError> {
        self.read(|tx| acked_point(tx))
    }

    fn audit_verify(&self) -> Result<AuditReport, StoreError> {
        self.read(|tx| audit::verify(tx))
    }

    fn ping(&self) -> Result<(), StoreError> {
        // After a failed fsync no write can succeed until a restart.
        self.writer.sync().check().map_err(durability)?;
        let mut probe = self.probe.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(last) = probe.as_ref() {
            if last.at.elapsed() < PROBE_TTL {
                return last.result.clone().map_err(|(fault, detail)| StoreError::Fault {
                    path: self.path.clone(),
                    fault,
                    detail,
                });
            }
        }
        // Held across the probe: concurrent `/readyz` calls share one.
        let result = self.probe_write();
        if let Err(e) = &result {
            tracing::warn!(store = %self.path.display(), error = %e, "store readiness probe failed");
        }
        *probe = Some(Probe {
            at: std::time::Instant::now(),
            result: result.as_ref().map(drop).map_err(|e| match e {
                StoreError::Fault { fault, detail, .. } => (*fault, detail.clone()),
                other => (StoreFault::Io, other.to_string()),
            }),
        });
        result
    }

    fn maintain(&self) -> Result<(), StoreError> {
        let generation = self.writer.sync().generation();
        let run = {
            let mut st = self.checkpoints.lock().unwrap_or_else(PoisonError::into_inner);
            let idle = generation == st.seen;
            st.seen = generation;
            st.calls = st.calls.saturating_add(1);
            generation != st.done && (idle || st.calls >= BUSY_CHECKPOINT_EVERY)
        };
        if !run {
            return Ok(());
        }
        let complete = self.checkpoint_truncate()?;
        if complete {
            let mut st = self.checkpoints.lock().unwrap_or_else(PoisonError::into_inner);
            st.done = generation;
            st.calls = 0;
        }
        Ok(())
    }

    fn checkpoint_store(&self) -> Option<&dyn super::CheckpointStore> {
        Some(self)
    }
}
