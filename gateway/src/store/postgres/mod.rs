//! [`Store`] on PostgreSQL: the backend that several replicas of one
//! member's gateway share (SPEC v1.1 §5, docs/operations.md "High
//! availability").
//!
//! **Only SQL lives here.** Validation, transitions, idempotency decisions,
//! lease decisions, fencing and audit entries come from
//! [`domain`](super::domain), exactly as for SQLite, so both backends pass
//! one contract suite (`gateway/tests/store_contract`).
//!
//! **One order for everything that must be ordered.** Every writing
//! transaction first locks the single `audit_head` row (`SELECT … FOR
//! UPDATE`) and keeps it until it commits. Exchange `seq`s and inbox
//! cursors are drawn from their sequences only under that lock, and the
//! audit entry is chained to the head read under it, so across all
//! replicas commit order = acceptance order = cursor order = audit order.
//! In particular a credit bank can never see cursor N+1 committed while N
//! is still in flight (it would ack past N and never see it), and the audit
//! log stays one verifiable chain. The price is that writes of all replicas
//! commit one at a time, each holding the lock across its commit's WAL
//! flush (see docs/operations.md for the measured rate).
//!
//! **Durability.** Every connection runs with `synchronous_commit = on`:
//! `Ok` from a write means the commit is flushed on the primary (and on
//! synchronous standbys if the operator configured any), so a 202 survives
//! a crash of PostgreSQL's host.
//!
//! **Sync seam, async driver.** [`Store`] is synchronous and the gateway
//! calls it on tokio's blocking pool (`store::blocking`). This store owns a
//! small multi-thread tokio runtime of its own that drives the connection
//! pool (deadpool-postgres over tokio-postgres); each call spawns its work
//! there and waits for the answer on a plain channel. Waiting on a channel
//! never panics, whatever thread calls, but it blocks that thread, so a
//! caller on an async worker thread must go through `store::blocking`
//! like for every store.

mod checkpoints;
mod migrations;
mod open;

pub use open::open_postgres;

use super::domain::audit::{row_digest, AuditEntry, Cell, ChainVerifier, Draft, RowTable};
use super::domain::{
    self, chain_from_json, chain_json, entries, from_nanos, nanos, to_i64, to_u64, Admission, Transition,
};
use super::settlement::{recorded, SettleStep};
use super::{
    AuditHead, AuditReport, Exchange, ExchangeState, ExchangeStatus, ExpiredItem, InboxItem, Inserted, Lease,
    NewExchange, NewInboxItem, OutboxItem, Settlement, Store, StoreError, StoreFault,
};
use crate::config::StoreUrl;
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;
use time::OffsetDateTime;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::Type;
use tokio_postgres::{NoTls, Row};

/// The name this backend reports in errors.
pub(super) const BACKEND: &str = "PostgreSQL";

/// How long a readiness probe's result is reused (as for SQLite).
const PROBE_TTL: Duration = Duration::from_secs(1);

/// Session settings of every connection. `synchronous_commit = on` is what
/// makes `Ok` mean durable; the timeouts turn a wedged peer session (a
/// replica frozen inside a transaction, a lock never granted) into an error
/// instead of a hang that would hold the audit head for everyone.
const SESSION_OPTIONS: &str = "-c synchronous_commit=on -c lock_timeout=30000 \
                               -c idle_in_transaction_session_timeout=60000";

/// Worker threads of the store's own runtime: they only shuttle bytes
/// between sockets and waiting callers.
const RUNTIME_THREADS: usize = 2;

/// Tunables of the PostgreSQL store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PgOptions {
    /// Connections kept open at most.
    pub pool_size: usize,
    /// How long a call waits for a free connection before failing.
    pub wait_timeout: Duration,
    /// How long opening one connection may take.
    pub connect_timeout: Duration,
}

impl Default for PgOptions {
    fn default() -> Self {
        Self {
            pool_size: crate::config::DEFAULT_POOL_SIZE,
            wait_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
        }
    }
}

/// The PostgreSQL store. Cheap to share: wrap it in an `Arc`.
pub struct PgStore {
    /// `Some` until dropped; shut down without blocking, so dropping the
    /// store is fine on any thread.
    runtime: Option<tokio::runtime::Runtime>,
    handle: tokio::runtime::Handle,
    pool: Pool,
    /// The URL without its password, for errors and logs.
    target: String,
    probe: Mutex<Option<Probe>>,
    /// The data directory lock, held as long as the store is open.
    _lock: Option<super::DirLock>,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

impl Drop for PgStore {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

#[derive(Debug, Clone)]
struct Probe {
    at: std::time::Instant,
    result: Result<(), (StoreFault, String)>,
}

/// Wraps a driver error with what the store was doing; errors that mean
/// "this database cannot commit" become a typed [`StoreError::Fault`].
pub(super) fn backend_error(context: &'static str) -> impl Fn(tokio_postgres::Error) -> StoreError {
    move |source| classify(context, source)
}

fn classify(context: &'static str, source: tokio_postgres::Error) -> StoreError {
    let fault = match source.code() {
        Some(c) if *c == SqlState::READ_ONLY_SQL_TRANSACTION => Some(StoreFault::ReadOnly),
        Some(c) if *c == SqlState::DISK_FULL => Some(StoreFault::DiskFull),
        Some(c) if *c == SqlState::DATA_CORRUPTED || *c == SqlState::INDEX_CORRUPTED => {
            Some(StoreFault::Corrupt)
        }
        Some(c) if *c == SqlState::IO_ERROR => Some(StoreFault::Io),
        _ => None,
    };
    match fault {
        Some(fault) => StoreError::Fault {
            path: std::path::PathBuf::from(BACKEND),
            fault,
            detail: format!("{context}: {source}"),
        },
        None => StoreError::Backend {
            backend: BACKEND,
            context,
            source: Box::new(source),
        },
    }
}

fn pool_error(context: &'static str) -> impl Fn(deadpool_postgres::PoolError) -> StoreError {
    move |e| match e {
        deadpool_postgres::PoolError::Backend(source) => classify(context, source),
        other => StoreError::Backend {
            backend: BACKEND,
            context,
            source: Box::new(other),
        },
    }
}

/// A connection from the pool.
async fn conn(pool: &Pool) -> Result<Object, StoreError> {
    pool.get().await.map_err(pool_error("connecting"))
}

fn corrupt(context: &'static str, reason: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        context,
        reason: reason.into(),
    }
}

fn to_u32(n: i64, context: &'static str) -> Result<u32, StoreError> {
    u32::try_from(n).map_err(|_| corrupt(context, format!("value {n} out of range")))
}

fn opt_from_nanos(n: Option<i64>, context: &'static str) -> Result<Option<OffsetDateTime>, StoreError> {
    n.map(|n| from_nanos(n, context)).transpose()
}

impl PgStore {
    /// Connects to `url`, applies pending migrations and returns the store.
    /// A gateway opens it with [`open_postgres`] instead, which adds the
    /// data directory's lock and the store identity checks.
    pub fn connect(url: &StoreUrl, options: PgOptions) -> Result<Self, StoreError> {
        let target = url.redacted();
        let open_error = |source: super::BackendSource| StoreError::Open {
            backend: BACKEND,
            target: target.clone(),
            source,
        };
        if !url.is_postgres() {
            return Err(open_error("not a postgres:// URL".into()));
        }
        let mut config: tokio_postgres::Config = url
            .expose()
            .parse()
            .map_err(|e: tokio_postgres::Error| open_error(Box::new(e)))?;
        let session = match config.get_options() {
            Some(own) if !own.trim().is_empty() => format!("{own} {SESSION_OPTIONS}"),
            _ => SESSION_OPTIONS.to_owned(),
        };
        config.options(&session);
        if config.get_application_name().is_none() {
            config.application_name("bashu-gateway");
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(options.connect_timeout);
        }
        config.keepalives(true);
        config.keepalives_idle(Duration::from_secs(10));

        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(options.pool_size.max(1))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(options.wait_timeout))
            .create_timeout(Some(options.connect_timeout))
            .build()
            .map_err(|e| open_error(Box::new(e)))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(RUNTIME_THREADS)
            .thread_name("bashu-postgres")
            .enable_all()
            .build()
            .map_err(|e| open_error(Box::new(e)))?;
        let store = Self {
            handle: runtime.handle().clone(),
            runtime: Some(runtime),
            pool,
            target: target.clone(),
            probe: Mutex::new(None),
            _lock: None,
        };
        store.run(|pool| async move {
            let mut client = pool.get().await.map_err(|e| StoreError::Open {
                backend: BACKEND,
                target,
                source: Box::new(e),
            })?;
            migrations::migrate(&mut client).await
        })?;
        Ok(store)
    }

    /// Keeps the data directory lock for as long as the store is open.
    pub(super) fn with_lock(mut self, lock: super::DirLock) -> Self {
        self._lock = Some(lock);
        self
    }

    /// The URL this store connects to, without its password.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// The schema version this binary migrates to.
    pub const SCHEMA_VERSION: usize = migrations::MIGRATIONS.len();

    /// The schema version of the database.
    pub fn schema_version(&self) -> Result<i64, StoreError> {
        self.run(|pool| async move {
            let client = conn(&pool).await?;
            migrations::current_version(&**client).await
        })
    }

    /// Runs `work` on the store's runtime and waits for its result.
    fn run<T, F, Fut>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(Pool) -> Fut,
        Fut: Future<Output = Result<T, StoreError>> + Send + 'static,
    {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let fut = work(self.pool.clone());
        self.handle.spawn(async move {
            let _ = tx.send(fut.await);
        });
        rx.recv().map_err(|_| StoreError::Task {
            reason: "the PostgreSQL store's task ended without an answer (runtime shut down)".into(),
        })?
    }

    /// The store identity `(store id, member)`, if one was recorded.
    pub(super) fn identity(&self) -> Result<Option<(String, String)>, StoreError> {
        self.run(|pool| async move {
            let client = conn(&pool).await?;
            let row = client
                .query_opt("SELECT store_id, member FROM store_identity WHERE id = 1", &[])
                .await
                .map_err(backend_error("reading the store identity"))?;
            Ok(row.map(|r| (r.get(0), r.get(1))))
        })
    }

    /// Records the store identity unless one exists, and returns the one
    /// stored: replicas starting together on a new database agree.
    pub(super) fn claim_identity(
        &self,
        store_id: &str,
        member: &str,
        at: OffsetDateTime,
    ) -> Result<(String, String), StoreError> {
        let (store_id, member, at) = (store_id.to_owned(), member.to_owned(), nanos(at, "at")?);
        self.run(move |pool| async move {
            let client = conn(&pool).await?;
            client
                .execute(
                    "INSERT INTO store_identity (id, store_id, member, created_at) VALUES (1, $1, $2, $3)
                     ON CONFLICT (id) DO NOTHING",
                    &[&store_id, &member, &at],
                )
                .await
                .map_err(backend_error("recording the store identity"))?;
            let row = client
                .query_one("SELECT store_id, member FROM store_identity WHERE id = 1", &[])
                .await
                .map_err(backend_error("reading the store identity"))?;
            Ok((row.get(0), row.get(1)))
        })
    }

    /// The stored delivery lease of `destination` (live or not), for
    /// operators and tests: who delivers there, with which token, until when.
    pub fn current_lease(&self, destination: &str) -> Result<Option<Lease>, StoreError> {
        let destination = destination.to_owned();
        self.run(move |pool| async move {
            let client = conn(&pool).await?;
            lease_row(&**client, &destination, "").await
        })
    }

    /// Time of the newest audit entry.
    pub fn last_change_at(&self) -> Result<Option<OffsetDateTime>, StoreError> {
        self.run(|pool| async move {
            let client = conn(&pool).await?;
            let at: Option<i64> = client
                .query_one("SELECT MAX(at) FROM audit", &[])
                .await
                .map_err(backend_error("reading the audit log"))?
                .get(0);
            opt_from_nanos(at, "audit time")
        })
    }

    fn probe_write(&self) -> Result<(), StoreError> {
        let at = nanos(OffsetDateTime::now_utc(), "probed_at")?;
        self.run(move |pool| async move {
            let client = conn(&pool).await?;
            client
                .execute("UPDATE health SET probed_at = $1 WHERE id = 1", &[&at])
                .await
                .map_err(backend_error("writing the health probe"))
                .map(drop)
        })
    }
}

// --- rows ---------------------------------------------------------------------

/// The columns of an exchange as the API sees it, with the outbox's due time.
const SELECT_EXCHANGE: &str = "SELECT e.seq, e.exchange_id, e.credential_id, e.credential_digest, e.origin,
        e.destination, e.status, e.accepted_at, e.forwarded_at, e.settled_at, e.updated_at,
        e.attempts, e.last_error, e.problem, o.next_attempt_at
     FROM exchanges e LEFT JOIN outbox o ON o.exchange_seq = e.seq ";

fn exchange_from_row(r: &Row) -> Result<Exchange, StoreError> {
    const CTX: &str = "exchange row";
    let get_err = |e: tokio_postgres::Error| corrupt(CTX, e.to_string());
    let status: String = r.try_get(6).map_err(get_err)?;
    let status: ExchangeStatus = status.parse().map_err(|e| corrupt(CTX, format!("{e}")))?;
    let settled_at: Option<i64> = r.try_get(9).map_err(get_err)?;
    let settled = || {
        settled_at
            .ok_or_else(|| corrupt(CTX, format!("{status} exchange without settled_at")))
            .and_then(|n| from_nanos(n, CTX))
    };
    let state = match status {
        ExchangeStatus::Accepted => ExchangeState::Accepted,
        ExchangeStatus::Forwarded => ExchangeState::Forwarded,
        ExchangeStatus::Delivered => ExchangeState::Delivered { at: settled()? },
        ExchangeStatus::DeadLettered => ExchangeState::DeadLettered { at: settled()? },
        ExchangeStatus::Rejected => {
            let text: Option<String> = r.try_get(13).map_err(get_err)?;
            let text = text.ok_or_else(|| corrupt(CTX, "rejected exchange without a problem"))?;
            let problem = serde_json::from_str(&text).map_err(|e| corrupt(CTX, e.to_string()))?;
            ExchangeState::Rejected {
                at: settled()?,
                problem,
            }
        }
    };
    Ok(Exchange {
        seq: to_u64(r.try_get(0).map_err(get_err)?, CTX)?,
        exchange_id: r.try_get(1).map_err(get_err)?,
        credential_id: r.try_get(2).map_err(get_err)?,
        credential_digest: r.try_get(3).map_err(get_err)?,
        origin: r.try_get(4).map_err(get_err)?,
        destination: r.try_get(5).map_err(get_err)?,
        state,
        accepted_at: from_nanos(r.try_get(7).map_err(get_err)?, CTX)?,
        forwarded_at: opt_from_nanos(r.try_get(8).map_err(get_err)?, CTX)?,
        updated_at: from_nanos(r.try_get(10).map_err(get_err)?, CTX)?,
        attempts: to_u32(r.try_get(11).map_err(get_err)?, CTX)?,
        last_error: r.try_get(12).map_err(get_err)?,
        next_attempt_at: opt_from_nanos(r.try_get(14).map_err(get_err)?, CTX)?,
    })
}

async fn exchange_where(
    client: &impl tokio_postgres::GenericClient,
    condition: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<Option<Exchange>, StoreError> {
    let sql = format!("{SELECT_EXCHANGE}{condition}");
    client
        .query_opt(&sql, params)
        .await
        .map_err(backend_error("reading an exchange"))?
        .as_ref()
        .map(exchange_from_row)
        .transpose()
}

async fn exchange_by_id(
    client: &impl tokio_postgres::GenericClient,
    exchange_id: &str,
) -> Result<Option<Exchange>, StoreError> {
    exchange_where(client, "WHERE e.exchange_id = $1", &[&exchange_id]).await
}

const SELECT_INBOX: &str = "SELECT cursor, exchange_id, origin, received_at, chain FROM inbox ";

fn inbox_from_row(r: &Row) -> Result<InboxItem, StoreError> {
    const CTX: &str = "inbox row";
    let get_err = |e: tokio_postgres::Error| corrupt(CTX, e.to_string());
    let chain: String = r.try_get(4).map_err(get_err)?;
    Ok(InboxItem {
        cursor: to_u64(r.try_get(0).map_err(get_err)?, CTX)?,
        exchange_id: r.try_get(1).map_err(get_err)?,
        origin: r.try_get(2).map_err(get_err)?,
        received_at: from_nanos(r.try_get(3).map_err(get_err)?, CTX)?,
        chain: chain_from_json(&chain, CTX)?,
    })
}

async fn inbox_by_id(
    client: &impl tokio_postgres::GenericClient,
    exchange_id: &str,
) -> Result<Option<InboxItem>, StoreError> {
    let sql = format!("{SELECT_INBOX}WHERE exchange_id = $1");
    client
        .query_opt(&sql, &[&exchange_id])
        .await
        .map_err(backend_error("reading an inbox item"))?
        .as_ref()
        .map(inbox_from_row)
        .transpose()
}

async fn acked_point(client: &impl tokio_postgres::GenericClient) -> Result<u64, StoreError> {
    let n: i64 = client
        .query_one("SELECT acked_up_to FROM inbox_ack WHERE id = 1", &[])
        .await
        .map_err(backend_error("reading the inbox ack point"))?
        .get(0);
    to_u64(n, "inbox ack point")
}

async fn lease_row(
    client: &impl tokio_postgres::GenericClient,
    destination: &str,
    lock: &str,
) -> Result<Option<Lease>, StoreError> {
    const CTX: &str = "delivery lease";
    let sql = format!("SELECT holder, token, expires_at FROM delivery_leases WHERE destination = $1 {lock}");
    let row = client
        .query_opt(&sql, &[&destination])
        .await
        .map_err(backend_error("reading a delivery lease"))?;
    row.map(|r| {
        Ok(Lease {
            destination: destination.to_owned(),
            holder: r.get(0),
            token: to_u64(r.get(1), CTX)?,
            expires_at: from_nanos(r.get(2), CTX)?,
        })
    })
    .transpose()
}

/// SQL selecting the digest columns of `table`, in digest order.
fn digest_select(table: RowTable) -> String {
    format!(
        "SELECT {} FROM {} WHERE exchange_id = $1",
        table.digest_columns().join(", "),
        table.name()
    )
}

/// The audit row digest of a row whose columns are exactly `table`'s
/// digest columns: `BIGINT` and `INTEGER` as integers, `TEXT` as text, NULL
/// as NULL, the same cells SQLite yields for the same logical row.
fn digest_of_row(table: RowTable, r: &Row) -> Result<String, StoreError> {
    const CTX: &str = "row digest";
    enum Owned {
        Null,
        Int(i64),
        Text(String),
    }
    let mut cells = Vec::with_capacity(r.len());
    for (i, col) in r.columns().iter().enumerate() {
        let get_err = |e: tokio_postgres::Error| corrupt(CTX, e.to_string());
        let cell = match *col.type_() {
            Type::INT8 => r.try_get::<_, Option<i64>>(i).map_err(get_err)?.map(Owned::Int),
            Type::INT4 => r
                .try_get::<_, Option<i32>>(i)
                .map_err(get_err)?
                .map(|n| Owned::Int(i64::from(n))),
            Type::TEXT | Type::VARCHAR => r
                .try_get::<_, Option<String>>(i)
                .map_err(get_err)?
                .map(Owned::Text),
            ref other => return Err(corrupt(CTX, format!("column {} has type {other}", col.name()))),
        };
        cells.push(cell.unwrap_or(Owned::Null));
    }
    Ok(row_digest(
        table,
        cells.iter().map(|c| match c {
            Owned::Null => Cell::Null,
            Owned::Int(n) => Cell::Int(*n),
            Owned::Text(t) => Cell::Text(t.as_bytes()),
        }),
    ))
}

// --- writing --------------------------------------------------------------------

/// One writing transaction: it holds the audit head row from its first
/// statement to its commit (see the module docs), and appends audit
/// entries chained to it.
struct Writer<'c> {
    tx: deadpool_postgres::Transaction<'c>,
    head: AuditHead,
    appended: bool,
}

impl<'c> Writer<'c> {
    async fn begin(client: &'c mut Object) -> Result<Self, StoreError> {
        let tx = client
            .transaction()
            .await
            .map_err(backend_error("starting a write transaction"))?;
        let row = tx
            .query_one("SELECT seq, hash FROM audit_head WHERE id = 1 FOR UPDATE", &[])
            .await
            .map_err(backend_error("locking the audit head"))?;
        let head = AuditHead {
            seq: to_u64(row.get(0), "audit head")?,
            hash: row.get(1),
        };
        Ok(Self {
            tx,
            head,
            appended: false,
        })
    }

    /// Appends `draft`, digesting the row it is about as it now stands.
    async fn append(&mut self, at: i64, draft: Draft) -> Result<(), StoreError> {
        let digest = match (&draft.exchange_id, draft.row_table()) {
            (Some(id), table @ (RowTable::Exchanges | RowTable::Inbox)) => {
                let sql = digest_select(table);
                let row = self
                    .tx
                    .query_opt(&sql, &[id])
                    .await
                    .map_err(backend_error("digesting a row for the audit log"))?;
                row.map(|r| digest_of_row(table, &r)).transpose()?
            }
            _ => None,
        };
        let entry = AuditEntry::next(&self.head, at, draft, digest);
        self.tx
            .execute(
                "INSERT INTO audit (seq, at, exchange_id, event, detail, prev_hash, hash)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
                &[
                    &entry.seq,
                    &entry.at,
                    &entry.exchange_id,
                    &entry.event,
                    &entry.detail,
                    &entry.prev_hash,
                    &entry.hash,
                ],
            )
            .await
            .map_err(backend_error("appending to the audit log"))?;
        self.head = entry.head();
        self.appended = true;
        Ok(())
    }

    /// Moves the head to the last appended entry and commits. `Ok` means
    /// the commit was flushed (`synchronous_commit = on`).
    async fn commit(self) -> Result<(), StoreError> {
        if self.appended {
            self.tx
                .execute(
                    "UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1",
                    &[&to_i64(self.head.seq), &self.head.hash],
                )
                .await
                .map_err(backend_error("advancing the audit head"))?;
        }
        self.tx.commit().await.map_err(backend_error("committing"))
    }
}

/// Loads the exchange a fenced operation is about and checks the lease's
/// token against the stored one (locked for share: a takeover waits until
/// this settle has committed), then the transition.
async fn load_fenced(
    w: &Writer<'_>,
    lease: &Lease,
    exchange_id: &str,
    t: Transition,
) -> Result<Exchange, StoreError> {
    let current = exchange_by_id(&*w.tx, exchange_id).await?;
    let stored = lease_row(&*w.tx, &lease.destination, "FOR SHARE")
        .await?
        .map(|l| l.token);
    domain::check_fence(stored, lease, current.as_ref().map(|e| e.destination.as_str()))?;
    t.check_found(exchange_id, current)
}

/// Takes a pending exchange out of the outbox into a terminal state.
async fn settle(
    pool: Pool,
    lease: Lease,
    exchange_id: String,
    t: Transition,
    problem: Option<Value>,
    at: i64,
) -> Result<(), StoreError> {
    let mut client = conn(&pool).await?;
    let mut w = Writer::begin(&mut client).await?;
    settle_in(&mut w, &lease, &exchange_id, t, problem.as_ref(), at).await?;
    w.commit().await
}

/// [`settle`] inside a writing transaction.
async fn settle_in(
    w: &mut Writer<'_>,
    lease: &Lease,
    exchange_id: &str,
    t: Transition,
    problem: Option<&Value>,
    at: i64,
) -> Result<(), StoreError> {
    let current = load_fenced(w, lease, exchange_id, t).await?;
    let seq = to_i64(current.seq);
    let problem_text = problem.map(Value::to_string);
    let attempt = i64::from(t.counts_attempt());
    w.tx.execute(
        "UPDATE exchanges
         SET status = $2, settled_at = $3, updated_at = $3, problem = $4,
             attempts = attempts + $5,
             forwarded_at = CASE WHEN $5 = 1 THEN COALESCE(forwarded_at, $3) ELSE forwarded_at END
         WHERE seq = $1",
        &[&seq, &t.to().as_str(), &at, &problem_text, &attempt],
    )
    .await
    .map_err(backend_error("settling an exchange"))?;
    w.tx.execute("DELETE FROM outbox WHERE exchange_seq = $1", &[&seq])
        .await
        .map_err(backend_error("removing an outbox item"))?;
    w.append(at, entries::settled(t, &current, problem)).await
}

/// [`Store::record_attempt_failure`] inside a writing transaction.
async fn record_failure_in(
    w: &mut Writer<'_>,
    lease: &Lease,
    exchange_id: &str,
    error: &str,
    at_n: i64,
    next_n: i64,
) -> Result<(), StoreError> {
    let error = domain::truncate_error(error);
    let current = load_fenced(w, lease, exchange_id, Transition::AttemptFailed).await?;
    let seq = to_i64(current.seq);
    w.tx.execute(
        "UPDATE exchanges
         SET status = 'forwarded', attempts = attempts + 1, last_error = $2,
             forwarded_at = COALESCE(forwarded_at, $3), updated_at = $3
         WHERE seq = $1",
        &[&seq, &error, &at_n],
    )
    .await
    .map_err(backend_error("recording a failed attempt"))?;
    w.tx.execute(
        "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = $2 WHERE exchange_seq = $1",
        &[&seq, &next_n],
    )
    .await
    .map_err(backend_error("rescheduling an outbox item"))?;
    w.append(at_n, entries::attempt_failed(&current, error, next_n))
        .await
}

/// [`Store::insert_inbox`] inside a writing transaction, for an item
/// already validated. The cursor is drawn here, under the audit head lock:
/// cursors commit in the order they are handed out.
async fn insert_inbox_in(w: &mut Writer<'_>, new: NewInboxItem) -> Result<Inserted<InboxItem>, StoreError> {
    let at = nanos(new.received_at, "received_at")?;
    let chain = chain_json(&new.chain)?;
    let by_id = inbox_by_id(&*w.tx, &new.exchange_id).await?;
    let (by_original, own) = if by_id.is_some() {
        (None, false)
    } else {
        let by_original: Option<String> =
            w.tx.query_opt(
                "SELECT exchange_id FROM inbox WHERE origin = $1 AND credential_id = $2",
                &[&new.origin, &new.credential_id],
            )
            .await
            .map_err(backend_error("reading an inbox item"))?
            .map(|r| r.get(0));
        let own: bool =
            w.tx.query_one(
                "SELECT EXISTS (SELECT 1 FROM exchanges WHERE exchange_id = $1)",
                &[&new.exchange_id],
            )
            .await
            .map_err(backend_error("reading an exchange"))?
            .get(0);
        (by_original, own)
    };
    if let Admission::Answer(answer) = domain::admit_inbox(&new, by_id, by_original, own) {
        return Ok(answer);
    }
    let cursor: i64 =
        w.tx.query_one(
            "INSERT INTO inbox (exchange_id, origin, credential_id, received_at, chain)
             VALUES ($1, $2, $3, $4, $5)
             RETURNING cursor",
            &[&new.exchange_id, &new.origin, &new.credential_id, &at, &chain],
        )
        .await
        .map_err(backend_error("inserting an inbox item"))?
        .get(0);
    let cursor = to_u64(cursor, "inbox cursor")?;
    w.append(at, entries::inbox_received(&new, cursor)).await?;
    Ok(Inserted::Created(InboxItem {
        cursor,
        exchange_id: new.exchange_id,
        origin: new.origin,
        received_at: new.received_at,
        chain: new.chain,
    }))
}

impl Store for PgStore {
    fn insert_exchange(&self, new: NewExchange) -> Result<Inserted<Exchange>, StoreError> {
        domain::validate_exchange(&new)?;
        let at = nanos(new.accepted_at, "accepted_at")?;
        let chain = chain_json(&new.chain)?;
        self.run(move |pool| async move {
            let mut client = conn(&pool).await?;
            let mut w = Writer::begin(&mut client).await?;
            let by_credential = exchange_where(
                &*w.tx,
                "WHERE e.origin = $1 AND e.credential_id = $2",
                &[&new.origin, &new.credential_id],
            )
            .await?;
            let id_taken = by_credential.is_none() && exchange_by_id(&*w.tx, &new.exchange_id).await?.is_some();
            if let Admission::Answer(answer) = domain::admit_exchange(&new, by_credential, id_taken)? {
                return Ok(answer);
            }
            // The UNIQUE constraints on exchange_id and (origin,
            // credential_id) hold even if a writer ever skipped the check.
            let seq: i64 = w
                .tx
                .query_one(
                    "INSERT INTO exchanges (exchange_id, origin, credential_id, credential_digest, destination,
                                            chain, status, accepted_at, updated_at)
                     VALUES ($1, $2, $3, $4, $5, $6, 'accepted', $7, $7)
                     RETURNING seq",
                    &[
                        &new.exchange_id,
                        &new.origin,
                        &new.credential_id,
                        &new.credential_digest,
                        &new.destination,
                        &chain,
                        &at,
                    ],
                )
                .await
                .map_err(backend_error("inserting an exchange"))?
                .get(0);
            w.tx.execute(
                "INSERT INTO outbox (exchange_seq, destination, queued_at, next_attempt_at)
                 VALUES ($1, $2, $3, $3)",
                &[&seq, &new.destination, &at],
            )
            .await
            .map_err(backend_error("inserting an outbox item"))?;
            let seq = to_u64(seq, "exchange seq")?;
            w.append(at, entries::accepted(&new, seq)).await?;
            w.commit().await?;
            Ok(Inserted::Created(domain::accepted_exchange(&new, seq)))
        })
    }

    fn find_by_credential(&self, origin: &str, credential_id: &str) -> Result<Option<Exchange>, StoreError> {
        let (origin, credential_id) = (origin.to_owned(), credential_id.to_owned());
        self.run(move |pool| async move {
            let client = conn(&pool).await?;
            exchange_where(
                &**client,
                "WHERE e.origin = $1 AND e.credential_id = $2",
                &[&origin, &credential_id],
            )
            .await
        })
    }

    fn exchange(&self, exchange_id: &str) -> Result<Option<Exchange>, StoreError> {
        let exchange_id = exchange_id.to_owned();
        self.run(move |pool| async move {
            let client = conn(&pool).await?;
            exchange_by_id(&**client, &exchange_id).await
        })
    }

    fn list_exchanges(
        &self,
        status: Option<ExchangeStatus>,
        limit: u32,
    ) -> Result<Vec<Exchange>, StoreError> {
        let status = status.map(|s| s.as_str().to_owned());
        self.run(move |pool| async move {
            let client = conn(&pool).await?;
            let sql =
                format!("{SELECT_EXCHANGE}WHERE $1::TEXT IS NULL OR e.status = $1 ORDER BY e.seq LIMIT $2");
            client
                .query(&sql, &[&status, &i64::from(limit)])
                .await
                .map_err(backend_error("listing exchanges"))?
                .iter()
                .map(exchange_from_row)
                .collect()
        })
    }

    fn pending_outbox(&self, destination: &str, limit: usize) -> Result<Vec<OutboxItem>, StoreError> {
        const CTX: &str = "outbox row";
        let destination = destination.to_owned();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.run(move |pool| async move {
            let client = conn(&pool).await?;
            let rows = client
                .query(
                    "SELECT o.exchange_seq, e.exchange_id, e.origin, o.destination, e.chain,
                            o.queued_at, o.next_attempt_at, o.attempts
                     FROM outbox o JOIN exchanges e ON e.seq = o.exchange_seq
                     WHERE o.destination = $1
                     ORDER BY o.exchange_seq
                     LIMIT $2",
                    &[&destination, &limit],
                )
                .await
                .map_err(backend_error("reading the outbox"))?;
            rows.iter()
                .map(|r| {
                    let chain: String = r.get(4);
                    Ok(OutboxItem {
                        seq: to_u64(r.get(0), CTX)?,
                        exchange_id: r.get(1),
                        origin: r.get(2),
                        destination: r.get(3),
                        chain: chain_from_json(&chain, CTX)?,
                        queued_at: from_nanos(r.get(5), CTX)?,
                        next_attempt_at: from_nanos(r.get(6), CTX)?,
                        attempts: to_u32(r.get(7), CTX)?,
                    })
                })
                .collect()
        })
    }

    fn outbox_depths(&self) -> Result<BTreeMap<String, u64>, StoreError> {
        self.run(|pool| async move {
            let client = conn(&pool).await?;
            let rows = client
                .query(
                    "SELECT destination, COUNT(*) FROM outbox GROUP BY destination",
                    &[],
                )
                .await
                .map_err(backend_error("counting the outbox"))?;
            rows.iter()
                .map(|r| Ok((r.get::<_, String>(0), to_u64(r.get(1), "outbox count")?)))
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
        let at_n = nanos(at, "at")?;
        let next_n = nanos(next_attempt_at, "next_attempt_at")?;
        let (lease, exchange_id, error) = (lease.clone(), exchange_id.to_owned(), error.to_owned());
        self.run(move |pool| async move {
            let mut client = conn(&pool).await?;
            let mut w = Writer::begin(&mut client).await?;
            record_failure_in(&mut w, &lease, &exchange_id, &error, at_n, next_n).await?;
            w.commit().await
        })
    }

    fn settle_batch(
        &self,
        lease: &Lease,
        outcomes: &[Settlement],
        at: OffsetDateTime,
    ) -> Result<Vec<bool>, StoreError> {
        if outcomes.is_empty() {
            return Ok(Vec::new());
        }
        let at_n = nanos(at, "at")?;
        let (lease, outcomes) = (lease.clone(), outcomes.to_vec());
        self.run(move |pool| async move {
            let mut client = conn(&pool).await?;
            let mut w = Writer::begin(&mut client).await?;
            let mut done = Vec::with_capacity(outcomes.len());
            for s in &outcomes {
                let id = s.exchange_id.as_str();
                // Any error but "left the outbox" returns before the commit:
                // the transaction rolls back and nothing of the batch is kept.
                done.push(recorded(match s.outcome.step() {
                    SettleStep::Terminal { transition, problem } => {
                        settle_in(&mut w, &lease, id, transition, problem, at_n).await
                    }
                    SettleStep::Reschedule {
                        error,
                        next_attempt_at,
                    } => {
                        let next_n = nanos(next_attempt_at, "next_attempt_at")?;
                        record_failure_in(&mut w, &lease, id, error, at_n, next_n).await
                    }
                })?);
            }
            w.commit().await?;
            Ok(done)
        })
    }

    fn mark_delivered(&self, lease: &Lease, exchange_id: &str, at: OffsetDateTime) -> Result<(), StoreError> {
        let at = nanos(at, "at")?;
        let (lease, id) = (lease.clone(), exchange_id.to_owned());
        self.run(move |pool| settle(pool, lease, id, Transition::Deliver, None, at))
    }

    fn mark_rejected(
        &self,
        lease: &Lease,
        exchange_id: &str,
        problem: &Value,
        at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let at = nanos(at, "at")?;
        let (lease, id, problem) = (lease.clone(), exchange_id.to_owned(), problem.clone());
        self.run(move |pool| settle(pool, lease, id, Transition::Reject, Some(problem), at))
    }

    fn dead_letter(&self, lease: &Lease, exchange_id: &str, at: OffsetDateTime) -> Result<(), StoreError> {
        let at = nanos(at, "at")?;
        let (lease, id) = (lease.clone(), exchange_id.to_owned());
        self.run(move |pool| settle(pool, lease, id, Transition::DeadLetter, None, at))
    }

    fn dead_letter_expired(
        &self,
        queued_before: OffsetDateTime,
        at: OffsetDateTime,
    ) -> Result<Vec<ExpiredItem>, StoreError> {
        let cutoff = nanos(queued_before, "queued_before")?;
        let at_n = nanos(at, "at")?;
        self.run(move |pool| async move {
            let mut client = conn(&pool).await?;
            // Nearly every sweep finds nothing: answer that without taking
            // the audit head every replica's writes wait for.
            let any: bool = client
                .query_one(
                    "SELECT EXISTS (SELECT 1 FROM outbox WHERE queued_at <= $1)",
                    &[&cutoff],
                )
                .await
                .map_err(backend_error("looking for expired outbox items"))?
                .get(0);
            if !any {
                return Ok(Vec::new());
            }
            let mut w = Writer::begin(&mut client).await?;
            let expired =
                w.tx.query(
                    "SELECT e.exchange_id, e.status, o.destination
                     FROM outbox o JOIN exchanges e ON e.seq = o.exchange_seq
                     WHERE o.queued_at <= $1
                     ORDER BY o.exchange_seq",
                    &[&cutoff],
                )
                .await
                .map_err(backend_error("reading expired outbox items"))?;
            w.tx.execute(
                "UPDATE exchanges
                 SET status = 'dead-lettered', settled_at = $2, updated_at = $2, problem = NULL
                 WHERE seq IN (SELECT exchange_seq FROM outbox WHERE queued_at <= $1)",
                &[&cutoff, &at_n],
            )
            .await
            .map_err(backend_error("dead-lettering expired exchanges"))?;
            w.tx.execute("DELETE FROM outbox WHERE queued_at <= $1", &[&cutoff])
                .await
                .map_err(backend_error("removing expired outbox items"))?;
            let mut items = Vec::with_capacity(expired.len());
            for r in &expired {
                let (exchange_id, from, destination): (String, String, String) =
                    (r.get(0), r.get(1), r.get(2));
                w.append(at_n, entries::expired(&exchange_id, &from)).await?;
                items.push(ExpiredItem {
                    exchange_id,
                    destination,
                });
            }
            w.commit().await?;
            Ok(items)
        })
    }

    fn retry(&self, exchange_id: &str, at: OffsetDateTime) -> Result<Exchange, StoreError> {
        let at_n = nanos(at, "at")?;
        let exchange_id = exchange_id.to_owned();
        self.run(move |pool| async move {
            let mut client = conn(&pool).await?;
            let mut w = Writer::begin(&mut client).await?;
            let current =
                Transition::Retry.check_found(&exchange_id, exchange_by_id(&*w.tx, &exchange_id).await?)?;
            let seq = to_i64(current.seq);
            w.tx.execute(
                "UPDATE exchanges
                 SET status = 'accepted', settled_at = NULL, problem = NULL, updated_at = $2
                 WHERE seq = $1",
                &[&seq, &at_n],
            )
            .await
            .map_err(backend_error("retrying an exchange"))?;
            w.tx.execute(
                "INSERT INTO outbox (exchange_seq, destination, queued_at, next_attempt_at)
                 VALUES ($1, $2, $3, $3)",
                &[&seq, &current.destination, &at_n],
            )
            .await
            .map_err(backend_error("re-queueing an outbox item"))?;
            w.append(at_n, entries::retried(&current)).await?;
            let updated =
                exchange_by_id(&*w.tx, &exchange_id)
                    .await?
                    .ok_or_else(|| StoreError::NotFound {
                        exchange_id: exchange_id.clone(),
                    })?;
            w.commit().await?;
            Ok(updated)
        })
    }

    fn redeliver(
        &self,
        destination: &str,
        since: OffsetDateTime,
        at: OffsetDateTime,
    ) -> Result<u64, StoreError> {
        let (since_n, at_n) = (nanos(since, "since")?, nanos(at, "at")?);
        let destination = destination.to_owned();
        self.run(move |pool| async move {
            let mut client = conn(&pool).await?;
            let mut w = Writer::begin(&mut client).await?;
            let rows = w
                .tx
                .query(
                    "SELECT seq, exchange_id FROM exchanges
                     WHERE destination = $1 AND status = 'delivered' AND settled_at >= $2
                     ORDER BY seq",
                    &[&destination, &since_n],
                )
                .await
                .map_err(backend_error("finding delivered exchanges"))?;
            for r in &rows {
                let (seq, exchange_id): (i64, String) = (r.get(0), r.get(1));
                w.tx.execute(
                    "UPDATE exchanges SET status = 'accepted', settled_at = NULL, updated_at = $2 WHERE seq = $1",
                    &[&seq, &at_n],
                )
                .await
                .map_err(backend_error("re-queueing a delivered exchange"))?;
                w.tx.execute(
                    "INSERT INTO outbox (exchange_seq, destination, queued_at, next_attempt_at)
                     VALUES ($1, $2, $3, $3)",
                    &[&seq, &destination, &at_n],
                )
                .await
                .map_err(backend_error("re-queueing an outbox item"))?;
                w.append(at_n, entries::redelivered(&exchange_id, &destination, since_n))
                    .await?;
            }
            w.commit().await?;
            Ok(u64::try_from(rows.len()).unwrap_or(u64::MAX))
        })
    }

    fn acquire_lease(
        &self,
        destination: &str,
        holder: &str,
        ttl: Duration,
        now: OffsetDateTime,
    ) -> Result<Option<Lease>, StoreError> {
        let (destination, holder) = (destination.to_owned(), holder.to_owned());
        // Validates the request before touching the database.
        domain::decide_lease(None, &destination, &holder, ttl, now)?;
        self.run(move |pool| async move {
            let mut client = conn(&pool).await?;
            // The lease row is locked (FOR UPDATE) while deciding, so two
            // replicas racing decide one after the other; the first lease
            // of a destination is inserted, and a concurrent first insert
            // makes the loser decide again against the winner's row.
            for _ in 0..3 {
                let tx = client
                    .transaction()
                    .await
                    .map_err(backend_error("starting a lease transaction"))?;
                let current = lease_row(&*tx, &destination, "FOR UPDATE").await?;
                let decision = domain::decide_lease(current.as_ref(), &destination, &holder, ttl, now)?;
                let Some(lease) = decision.lease().cloned() else {
                    return Ok(None);
                };
                let expires_at = nanos(lease.expires_at, "expires_at")?;
                let token = to_i64(lease.token);
                let written = if current.is_some() {
                    tx.execute(
                        "UPDATE delivery_leases SET holder = $2, token = $3, expires_at = $4 WHERE destination = $1",
                        &[&lease.destination, &lease.holder, &token, &expires_at],
                    )
                    .await
                } else {
                    tx.execute(
                        "INSERT INTO delivery_leases (destination, holder, token, expires_at)
                         VALUES ($1, $2, $3, $4) ON CONFLICT (destination) DO NOTHING",
                        &[&lease.destination, &lease.holder, &token, &expires_at],
                    )
                    .await
                }
                .map_err(backend_error("storing a delivery lease"))?;
                if written == 1 {
                    tx.commit().await.map_err(backend_error("committing a delivery lease"))?;
                    return Ok(Some(lease));
                }
            }
            Err(StoreError::Backend {
                backend: BACKEND,
                context: "storing a delivery lease",
                source: "the lease row kept changing under concurrent first inserts".into(),
            })
        })
    }

    fn release_lease(&self, lease: &Lease) -> Result<(), StoreError> {
        let released = domain::released(lease);
        let expires_at = nanos(released.expires_at, "expires_at")?;
        self.run(move |pool| async move {
            let client = conn(&pool).await?;
            client
                .execute(
                    "UPDATE delivery_leases SET expires_at = $3 WHERE destination = $1 AND token = $2",
                    &[&released.destination, &to_i64(released.token), &expires_at],
                )
                .await
                .map_err(backend_error("releasing a delivery lease"))
                .map(drop)
        })
    }

    fn insert_inbox(&self, new: NewInboxItem) -> Result<Inserted<InboxItem>, StoreError> {
        domain::validate_inbox(&new)?;
        self.run(move |pool| async move {
            let mut client = conn(&pool).await?;
            let mut w = Writer::begin(&mut client).await?;
            let inserted = insert_inbox_in(&mut w, new).await?;
            w.commit().await?;
            Ok(inserted)
        })
    }

    fn insert_inbox_batch(&self, items: Vec<NewInboxItem>) -> Result<Vec<Inserted<InboxItem>>, StoreError> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        for item in &items {
            domain::validate_inbox(item)?;
        }
        self.run(move |pool| async move {
            let mut client = conn(&pool).await?;
            let mut w = Writer::begin(&mut client).await?;
            let mut out = Vec::with_capacity(items.len());
            for item in items {
                out.push(insert_inbox_in(&mut w, item).await?);
            }
            w.commit().await?;
            Ok(out)
        })
    }

    fn inbox_by_exchange(&self, exchange_id: &str) -> Result<Option<InboxItem>, StoreError> {
        let exchange_id = exchange_id.to_owned();
        self.run(move |pool| async move {
            let client = conn(&pool).await?;
            inbox_by_id(&**client, &exchange_id).await
        })
    }

    fn inbox_page(&self, after: Option<u64>, limit: u32) -> Result<Vec<InboxItem>, StoreError> {
        let after = after.map(to_i64);
        self.run(move |pool| async move {
            let client = conn(&pool).await?;
            // One statement, one snapshot: the ack point and the page agree.
            let sql = format!(
                "{SELECT_INBOX}WHERE cursor > COALESCE($1, (SELECT acked_up_to FROM inbox_ack WHERE id = 1))
                 ORDER BY cursor LIMIT $2"
            );
            client
                .query(&sql, &[&after, &i64::from(limit)])
                .await
                .map_err(backend_error("reading the inbox"))?
                .iter()
                .map(inbox_from_row)
                .collect()
        })
    }

    fn ack(&self, up_to: u64, at: OffsetDateTime) -> Result<u64, StoreError> {
        let at_n = nanos(at, "at")?;
        self.run(move |pool| async move {
            let mut client = conn(&pool).await?;
            let mut w = Writer::begin(&mut client).await?;
            let current = acked_point(&*w.tx).await?;
            let highest: i64 =
                w.tx.query_one("SELECT COALESCE(MAX(cursor), 0)::BIGINT FROM inbox", &[])
                    .await
                    .map_err(backend_error("reading the highest inbox cursor"))?
                    .get(0);
            let highest = to_u64(highest, "inbox cursor")?;
            let Some(target) = domain::ack_target(current, highest, up_to) else {
                return Ok(0);
            };
            let newly: i64 =
                w.tx.query_one(
                    "SELECT COUNT(*) FROM inbox WHERE cursor > $1 AND cursor <= $2",
                    &[&to_i64(current), &to_i64(target)],
                )
                .await
                .map_err(backend_error("counting acknowledged items"))?
                .get(0);
            let newly = to_u64(newly, "acknowledged count")?;
            w.tx.execute(
                "UPDATE inbox_ack SET acked_up_to = $1 WHERE id = 1",
                &[&to_i64(target)],
            )
            .await
            .map_err(backend_error("advancing the inbox ack point"))?;
            w.append(at_n, entries::inbox_acked(current, target, up_to, newly))
                .await?;
            w.commit().await?;
            Ok(newly)
        })
    }

    fn acked_up_to(&self) -> Result<u64, StoreError> {
        self.run(|pool| async move {
            let client = conn(&pool).await?;
            acked_point(&**client).await
        })
    }

    fn raise_inbox_cursor_floor(&self, floor: u64, at: OffsetDateTime) -> Result<u64, StoreError> {
        let at_n = nanos(at, "at")?;
        self.run(move |pool| async move {
            let mut client = conn(&pool).await?;
            let mut w = Writer::begin(&mut client).await?;
            // The highest cursor handed out: the sequence's position (it
            // may be past the highest row, never below) or a stored row.
            let current: i64 = w
                .tx
                .query_one(
                    "SELECT GREATEST(
                         (SELECT CASE WHEN is_called THEN last_value ELSE last_value - 1 END FROM inbox_cursor),
                         (SELECT COALESCE(MAX(cursor), 0) FROM inbox),
                         0)::BIGINT",
                    &[],
                )
                .await
                .map_err(backend_error("reading the inbox cursor"))?
                .get(0);
            let current = to_u64(current, "inbox cursor")?;
            let Some(floor) = domain::floor_target(current, floor) else {
                return Ok(current);
            };
            // setval is not transactional, but it runs under the audit head
            // lock like every nextval, and a floor only ever moves up.
            w.tx.execute("SELECT setval('inbox_cursor', $1, true)", &[&to_i64(floor)])
                .await
                .map_err(backend_error("raising the inbox cursor floor"))?;
            w.append(at_n, entries::cursor_floor_raised(current, floor)).await?;
            w.commit().await?;
            Ok(floor)
        })
    }

    fn audit_verify(&self) -> Result<AuditReport, StoreError> {
        super::CheckpointStore::audit_verify_at(self, &BTreeSet::new()).map(|(report, _)| report)
    }

    fn ping(&self) -> Result<(), StoreError> {
        let mut probe = self.probe.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(last) = probe.as_ref() {
            if last.at.elapsed() < PROBE_TTL {
                return last.result.clone().map_err(|(fault, detail)| StoreError::Fault {
                    path: std::path::PathBuf::from(BACKEND),
                    fault,
                    detail,
                });
            }
        }
        // A commit, not a query: a standby, a full disk or a lost primary
        // all fail here. Held across the probe: concurrent `/readyz` share one.
        let result = self.probe_write();
        if let Err(e) = &result {
            tracing::warn!(store = %self.target, error = %e, "store readiness probe failed");
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

    fn checkpoint_store(&self) -> Option<&dyn super::CheckpointStore> {
        Some(self)
    }
}

/// [`ChainVerifier`] fed from one REPEATABLE READ snapshot.
async fn verify_chain(
    pool: Pool,
    wanted: BTreeSet<u64>,
) -> Result<(AuditReport, BTreeMap<u64, String>), StoreError> {
    use futures::TryStreamExt;
    let mut client = conn(&pool).await?;
    let tx = client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(backend_error("starting a read transaction"))?;
    let read = backend_error("reading the audit log");
    let mut verifier = ChainVerifier::new(&wanted);
    let no_params: [&(dyn tokio_postgres::types::ToSql + Sync); 0] = [];
    let entries = tx
        .query_raw(
            "SELECT seq, at, exchange_id, event, detail, prev_hash, hash FROM audit ORDER BY seq",
            no_params,
        )
        .await
        .map_err(&read)?;
    futures::pin_mut!(entries);
    while let Some(r) = entries.try_next().await.map_err(&read)? {
        verifier.entry(AuditEntry {
            seq: r.get(0),
            at: r.get(1),
            exchange_id: r.get(2),
            event: r.get(3),
            detail: r.get(4),
            prev_hash: r.get(5),
            hash: r.get(6),
        })?;
    }
    let head = tx
        .query_opt("SELECT seq, hash FROM audit_head WHERE id = 1", &[])
        .await
        .map_err(&read)?
        .map(|r| (r.get::<_, i64>(0), r.get::<_, String>(1)));
    verifier.head(head)?;
    for (table, order) in [(RowTable::Exchanges, "seq"), (RowTable::Inbox, "cursor")] {
        let sql = format!(
            "SELECT {} FROM {} ORDER BY {order}",
            table.digest_columns().join(", "),
            table.name()
        );
        let rows = tx.query_raw(&sql, no_params).await.map_err(&read)?;
        futures::pin_mut!(rows);
        while let Some(r) = rows.try_next().await.map_err(&read)? {
            let id: String = r.get("exchange_id");
            verifier.row(table, &id, &digest_of_row(table, &r)?)?;
        }
        verifier.rows_done(table)?;
    }
    let acked: i64 = tx
        .query_one("SELECT acked_up_to FROM inbox_ack WHERE id = 1", &[])
        .await
        .map_err(backend_error("reading the inbox ack point"))?
        .get(0);
    verifier.finish(acked)
}
