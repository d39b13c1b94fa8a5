//! The durable store: exchanges and their outbox (origin side), the inbox
//! (receiving side) and the hash-chained audit log.
//!
//! [`Store`] is the seam between the gateway and a database: synchronous,
//! object safe, called from async code through [`blocking`] (tokio's
//! blocking pool; see docs/decisions.md for why not an async trait). Every
//! `Ok` means the change is durable (fsynced, or committed with
//! `synchronous_commit = on`), which is what lets the API answer 202. Every
//! state change and its audit entry are written in one transaction, so the
//! audit log can never disagree with the state it describes.
//!
//! The rules a backend must not get wrong — input validation, which status
//! may become which, idempotency decisions, audit entries and their hashes,
//! lease decisions — live in [`domain`], pure and backend independent. A
//! backend ([`SqliteStore`]) only reads rows, asks [`domain`] what to do, and
//! writes what it is given, inside one transaction. `tests/store_contract`
//! holds one test suite every backend must pass.
//!
//! The store never reads the clock: callers pass the time of each change,
//! which keeps tests deterministic and the delivery worker's clock injectable.

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use time::OffsetDateTime;

mod audit;
mod cached;
mod checkpoints;
mod configured;
mod data_dir;
pub mod domain;
mod group_sync;
mod migrations;
pub mod postgres;
mod settlement;
mod sqlite;
mod sqlite_batch;
mod sqlite_checkpointer;
mod sqlite_queue;
mod sqlite_writer;
mod types;

pub use configured::{open_configured, open_for_tools, AuditedStore, OpenedStore};
pub use postgres::{open_postgres, PgOptions, PgStore};
pub use sqlite::SqliteStore;
pub use sqlite_queue::Queued;

/// File name of the SQLite store inside the gateway's `data_dir`.
pub const DB_FILE: &str = "bashu.db";

/// Where the gateway keeps its SQLite store: `<data_dir>/bashu.db`.
pub fn db_path(data_dir: &Path) -> PathBuf {
    data_dir.join(DB_FILE)
}

/// The inbox cursor floor for a start or a restore at `now`: the time in
/// microseconds (see [`Store::raise_inbox_cursor_floor`]).
pub fn cursor_floor_at(now: OffsetDateTime) -> u64 {
    u64::try_from(now.unix_timestamp_nanos() / 1000).unwrap_or(0)
}

/// Runs one store call on tokio's blocking pool: the store is synchronous
/// and waits for fsyncs, which must not stall the async workers. A call
/// that panicked or was cancelled is reported as [`StoreError::Task`].
pub async fn blocking<T, F>(store: std::sync::Arc<dyn Store>, f: F) -> Result<T, StoreError>
where
    T: Send + 'static,
    F: FnOnce(&dyn Store) -> Result<T, StoreError> + Send + 'static,
{
    tokio::task::spawn_blocking(move || f(store.as_ref()))
        .await
        .map_err(|e| StoreError::Task {
            reason: e.to_string(),
        })?
}

/// [`Store::insert_exchange`] from async code: queued on the backend's
/// writer thread where it has one, through [`blocking`] otherwise.
pub async fn insert_exchange(
    store: &std::sync::Arc<dyn Store>,
    new: NewExchange,
) -> Result<Inserted<Exchange>, StoreError> {
    match store.queue_insert_exchange(Box::new(new)) {
        Ok(answer) => answer.await.map_err(|_| StoreError::Task {
            reason: "the store's writer thread stopped".into(),
        })?,
        Err(new) => blocking(std::sync::Arc::clone(store), move |s| s.insert_exchange(*new)).await,
    }
}

/// Runs [`Store::maintain`] every `interval` until `shutdown` turns true
/// (or its sender is dropped). Failures are logged; the next round retries.
pub async fn maintain_periodically(
    store: std::sync::Arc<dyn Store>,
    interval: std::time::Duration,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await; // the first tick is immediate; nothing to do at start
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        if let Err(e) = blocking(std::sync::Arc::clone(&store), |s| s.maintain()).await {
            tracing::warn!(error = %e, "store maintenance failed");
        }
    }
}

pub(crate) use data_dir::DirLock;
pub use data_dir::{open_data_dir, LOCK_FILE, MARKER_FILE};
pub use settlement::{SettleOutcome, Settlement};
pub use sqlite::StoreOptions;
pub use types::{AuditHead, StoredCheckpoint, WitnessedCheckpoint};
pub use types::{
    AuditReport, Exchange, ExchangeState, ExchangeStatus, ExpiredItem, InboxItem, Inserted, Lease,
    NewExchange, NewInboxItem, OutboxItem, UnknownStatus,
};

/// Everything the gateway keeps durably. See the module docs for the
/// durability and atomicity guarantees every implementation must give.
pub trait Store: Send + Sync {
    // --- origin side -----------------------------------------------------

    /// Stores an accepted exchange together with its outbox entry and audit
    /// entry, atomically. Idempotent by `(origin, credential_id)`: the same
    /// digest again yields `Existing` (the stored exchange, whatever its
    /// status now), a different digest `Conflict`.
    fn insert_exchange(&self, new: NewExchange) -> Result<Inserted<Exchange>, StoreError>;

    /// [`insert_exchange`](Self::insert_exchange) for async callers, on a
    /// backend's own writer thread: the answer arrives on the receiver once
    /// durable, with no blocking-pool thread held meanwhile. A backend
    /// without one gives `new` back; [`insert_exchange`] (the function)
    /// then calls the method on the blocking pool.
    fn queue_insert_exchange(
        &self,
        new: Box<NewExchange>,
    ) -> Result<Queued<Inserted<Exchange>>, Box<NewExchange>> {
        Err(new)
    }

    /// The exchange created for `credential_id` submitted by `origin`.
    fn find_by_credential(&self, origin: &str, credential_id: &str) -> Result<Option<Exchange>, StoreError>;

    fn exchange(&self, exchange_id: &str) -> Result<Option<Exchange>, StoreError>;

    /// Exchanges in acceptance order, optionally only those in `status`.
    fn list_exchanges(&self, status: Option<ExchangeStatus>, limit: u32)
        -> Result<Vec<Exchange>, StoreError>;

    // --- outbox ------------------------------------------------------------

    /// The first `limit` outbox items for `destination` in acceptance order,
    /// due or not. The delivery worker is head-of-line: it never sends an
    /// item before every earlier one has settled, so it needs the head even
    /// when the head is backing off.
    fn pending_outbox(&self, destination: &str, limit: usize) -> Result<Vec<OutboxItem>, StoreError>;

    /// Number of outbox items per destination (only destinations with any).
    fn outbox_depths(&self) -> Result<BTreeMap<String, u64>, StoreError>;

    /// A delivery attempt made `at` failed transiently: the exchange becomes
    /// `forwarded` and stays in the outbox until `next_attempt_at`.
    ///
    /// This and the other settles the delivery worker makes
    /// ([`mark_delivered`](Self::mark_delivered),
    /// [`mark_rejected`](Self::mark_rejected),
    /// [`dead_letter`](Self::dead_letter)) are *fenced*: in the same
    /// transaction they check that the destination's stored lease token
    /// still equals `lease.token`, and otherwise fail with
    /// [`StoreError::LeaseLost`] writing nothing. A replica whose lease
    /// expired and was taken over cannot settle behind the new holder's back.
    /// The lease's destination must be the exchange's (`InvalidInput`).
    fn record_attempt_failure(
        &self,
        lease: &Lease,
        exchange_id: &str,
        error: &str,
        at: OffsetDateTime,
        next_attempt_at: OffsetDateTime,
    ) -> Result<(), StoreError>;

    /// The peer answered 202: leaves the outbox as `delivered`. Fenced by
    /// `lease` (see [`record_attempt_failure`](Self::record_attempt_failure)).
    fn mark_delivered(&self, lease: &Lease, exchange_id: &str, at: OffsetDateTime) -> Result<(), StoreError>;

    /// The peer answered 422 with `problem` (problem+json): leaves the
    /// outbox as `rejected`. Fenced by `lease`.
    fn mark_rejected(
        &self,
        lease: &Lease,
        exchange_id: &str,
        problem: &Value,
        at: OffsetDateTime,
    ) -> Result<(), StoreError>;

    /// Undeliverable for too long (the worker's own check after a failed
    /// attempt): leaves the outbox as `dead-lettered`. Fenced by `lease`.
    fn dead_letter(&self, lease: &Lease, exchange_id: &str, at: OffsetDateTime) -> Result<(), StoreError>;

    /// Records the outcomes of one batch sent to a peer, in order, in ONE
    /// transaction (one commit, one fsync). An item that already left the
    /// outbox by another path (the dead-letter sweep, an operator) is
    /// skipped and reported `false`; any other failure rolls back all of
    /// them. Every settle is fenced by `lease`; a lost lease fails the
    /// whole batch with `LeaseLost`, writing nothing. The default applies
    /// them one by one (not atomically), for backends and doubles that have
    /// nothing better.
    fn settle_batch(
        &self,
        lease: &Lease,
        outcomes: &[Settlement],
        at: OffsetDateTime,
    ) -> Result<Vec<bool>, StoreError> {
        settle_one_by_one(self, lease, outcomes, at)
    }

    /// The dead-letter sweep: every outbox item queued at or before
    /// `queued_before` leaves the outbox as `dead-lettered` at `at`, with one
    /// audit entry each, all in one transaction. Age alone decides, not
    /// delivery attempts, so a backlog behind a dead peer expires at once
    /// rather than one item per failed attempt. Returns the items in
    /// acceptance order (empty, without writing, if none has expired).
    ///
    /// Not fenced, like [`retry`](Self::retry) and
    /// [`redeliver`](Self::redeliver): none of the three sends anything or
    /// settles a send. They only move items out of or back into the outbox,
    /// each in one transaction; a lease holder's settle of an item the sweep
    /// took fails with `InvalidTransition` (it already left the outbox), and
    /// items put back are picked up in acceptance order by whoever holds the
    /// destination's lease. Fencing them would make the sweep and operators
    /// wait for, or steal, a delivery lease for no safety gain.
    fn dead_letter_expired(
        &self,
        queued_before: OffsetDateTime,
        at: OffsetDateTime,
    ) -> Result<Vec<ExpiredItem>, StoreError>;

    /// Operator retry: a `rejected` or `dead-lettered` exchange goes back to
    /// the outbox as `accepted`, due immediately, keeping its place in
    /// acceptance order. Any other status is an `InvalidTransition`.
    fn retry(&self, exchange_id: &str, at: OffsetDateTime) -> Result<Exchange, StoreError>;

    /// Redelivery after the destination restored its store from a backup:
    /// every exchange for `destination` delivered at or after `since` goes
    /// back to the outbox as `accepted`, in acceptance order, due at once.
    /// The receiver's idempotency absorbs what it still holds. Returns how
    /// many were re-queued.
    fn redeliver(
        &self,
        destination: &str,
        since: OffsetDateTime,
        at: OffsetDateTime,
    ) -> Result<u64, StoreError>;

    // --- delivery leases (SPEC §5) -------------------------------------------

    /// Asks for the right to deliver to `destination` until `now + ttl`.
    /// Held by `holder` and live (`expires_at > now`): renewed, same token,
    /// new expiry. Free, released or expired: taken, with a token strictly
    /// greater than any the destination had. Live and held by another:
    /// `None`. One transaction; two callers racing get one lease between them.
    fn acquire_lease(
        &self,
        destination: &str,
        holder: &str,
        ttl: std::time::Duration,
        now: OffsetDateTime,
    ) -> Result<Option<Lease>, StoreError>;

    /// Gives the lease up at once so another holder need not wait for it to
    /// expire. The token stays recorded (the next holder's is greater). A
    /// lease already lost (another token is stored) is left alone: `Ok`.
    fn release_lease(&self, lease: &Lease) -> Result<(), StoreError>;

    // --- inbox (receiving side) --------------------------------------------

    /// Stores a received envelope. Idempotent by `exchange_id`: the same
    /// origin and original credential again yield `Existing` (the home link
    /// is re-signed on every receipt, so it is not compared); anything else
    /// is a `Conflict`. Also a `Conflict`: the same `(origin,
    /// credential_id)` under another exchange id, and an exchange id this
    /// gateway issued for one of its own outgoing exchanges.
    fn insert_inbox(&self, new: NewInboxItem) -> Result<Inserted<InboxItem>, StoreError>;

    /// Stores the accepted envelopes of one batch in request order, durable
    /// together (one commit): cursors follow the order of `items`. Each item
    /// is judged like [`Store::insert_inbox`], including against the items
    /// before it in the same batch (a duplicate is `Existing`). The default
    /// inserts one by one, for backends and doubles without a batch path.
    fn insert_inbox_batch(&self, items: Vec<NewInboxItem>) -> Result<Vec<Inserted<InboxItem>>, StoreError> {
        items.into_iter().map(|item| self.insert_inbox(item)).collect()
    }

    fn inbox_by_exchange(&self, exchange_id: &str) -> Result<Option<InboxItem>, StoreError>;

    /// [`inbox_by_exchange`](Self::inbox_by_exchange) for each id, in
    /// order: a received batch's resend check. Backends answer from one
    /// snapshot; the default asks one by one.
    fn inbox_by_exchanges(&self, exchange_ids: &[String]) -> Result<Vec<Option<InboxItem>>, StoreError> {
        exchange_ids.iter().map(|id| self.inbox_by_exchange(id)).collect()
    }

    /// Up to `limit` items with a cursor greater than `after`, oldest first.
    /// `after = None` starts after the acknowledged point.
    fn inbox_page(&self, after: Option<u64>, limit: u32) -> Result<Vec<InboxItem>, StoreError>;

    /// Acknowledges every item with cursor ≤ `up_to`; returns how many items
    /// became newly acknowledged. Monotone: acking at or below the current
    /// point is a no-op returning 0. A cursor beyond the highest stored one
    /// is clamped to it, so items received later are never skipped.
    fn ack(&self, up_to: u64, at: OffsetDateTime) -> Result<u64, StoreError>;

    /// The acknowledged point (0 before any ack).
    fn acked_up_to(&self) -> Result<u64, StoreError>;

    /// Makes every cursor handed out from now on greater than `floor`.
    /// Called at start with the current time in microseconds: a store
    /// restored from a backup (which forgot the cursors issued after it was
    /// taken) still never reuses or goes below a cursor a credit bank saw
    /// (SPEC v1.1 §5), as long as the clock did not step back. Returns the
    /// new floor; a lower `floor` than the current one changes nothing.
    fn raise_inbox_cursor_floor(&self, floor: u64, at: OffsetDateTime) -> Result<u64, StoreError>;

    // --- operations --------------------------------------------------------

    /// Recomputes the whole audit chain; `AuditBroken` names the first bad entry.
    fn audit_verify(&self) -> Result<AuditReport, StoreError>;

    /// Readiness probe: the store can commit (a durable write succeeded
    /// recently and no fsync has failed), not merely answer a query.
    fn ping(&self) -> Result<(), StoreError>;

    /// Housekeeping run periodically by the gateway (SQLite: checkpoint and
    /// truncate the WAL when idle, so it cannot grow without bound).
    fn maintain(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// Where this store keeps signed audit checkpoints, if it does. A
    /// default method so wrappers and doubles need not care; the gateway
    /// serves and signs checkpoints only through a store that has them.
    fn checkpoint_store(&self) -> Option<&dyn CheckpointStore> {
        None
    }
}

/// [`Store::settle_batch`] through the single-item operations, one
/// transaction each: the default for stores without a batch path, and for
/// wrappers that want their single-item hooks to see every settlement.
pub fn settle_one_by_one<S: Store + ?Sized>(
    store: &S,
    lease: &Lease,
    outcomes: &[Settlement],
    at: OffsetDateTime,
) -> Result<Vec<bool>, StoreError> {
    outcomes
        .iter()
        .map(|s| {
            let id = s.exchange_id.as_str();
            let written = match &s.outcome {
                SettleOutcome::Delivered => store.mark_delivered(lease, id, at),
                SettleOutcome::Rejected { problem } => store.mark_rejected(lease, id, problem, at),
                SettleOutcome::Failed {
                    error,
                    next_attempt_at,
                } => store.record_attempt_failure(lease, id, error, at, *next_attempt_at),
                SettleOutcome::DeadLettered => store.dead_letter(lease, id, at),
            };
            settlement::recorded(written)
        })
        .collect()
}

/// Signed checkpoints of the audit head (SPEC §5): this gateway's own, and
/// its peers' as witnessed. Writes are durable like every store write.
pub trait CheckpointStore: Send + Sync {
    /// The current end of the audit chain.
    fn audit_head(&self) -> Result<AuditHead, StoreError>;

    /// The stored hash of entry `seq` (the genesis hash for 0), `None` if
    /// the log has no such entry.
    fn audit_entry_hash(&self, seq: u64) -> Result<Option<String>, StoreError>;

    /// [`Store::audit_verify`], also returning the hash of each entry in
    /// `seqs` that exists: one snapshot, one pass.
    fn audit_verify_at(
        &self,
        seqs: &BTreeSet<u64>,
    ) -> Result<(AuditReport, BTreeMap<u64, String>), StoreError>;

    fn save_checkpoint(&self, checkpoint: &StoredCheckpoint) -> Result<(), StoreError>;

    /// The checkpoint signed last.
    fn latest_checkpoint(&self) -> Result<Option<StoredCheckpoint>, StoreError>;

    /// Every own checkpoint, oldest first.
    fn checkpoints(&self) -> Result<Vec<StoredCheckpoint>, StoreError>;

    /// Keeps a peer's checkpoint; `false` if this exact JWS was kept before.
    fn save_witnessed(&self, checkpoint: &WitnessedCheckpoint) -> Result<bool, StoreError>;

    /// The checkpoint of `member` fetched last.
    fn latest_witnessed(&self, member: &str) -> Result<Option<WitnessedCheckpoint>, StoreError>;

    /// Every kept checkpoint of `member`, oldest first.
    fn witnessed(&self, member: &str) -> Result<Vec<WitnessedCheckpoint>, StoreError>;
}

/// A database driver's error, carried without naming the driver's type.
pub type BackendSource = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Store failures. Idempotency conflicts are not errors (see [`Inserted`]).
/// No variant names a driver type: callers match on meaning, and a backend
/// wraps its driver's errors in [`Backend`](Self::Backend),
/// [`Open`](Self::Open) or [`Migration`](Self::Migration).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be opened (`target`: a file path, or a URL
    /// without its password).
    #[error("cannot open {backend} store {target}: {source}")]
    Open {
        backend: &'static str,
        target: String,
        #[source]
        source: BackendSource,
    },
    #[error("{backend} store schema migration to version {version} failed: {source}")]
    Migration {
        backend: &'static str,
        version: i64,
        #[source]
        source: BackendSource,
    },
    #[error("store schema version {found} is newer than this binary supports ({supported})")]
    SchemaTooNew { found: i64, supported: usize },
    /// Any other driver error, with what the store was doing.
    #[error("{backend} store failed while {context}: {source}")]
    Backend {
        backend: &'static str,
        context: &'static str,
        #[source]
        source: BackendSource,
    },
    /// A fenced write with a lease whose token is no longer the
    /// destination's: another holder took the lease over. Nothing was written.
    #[error("delivery lease for {destination} (token {token}) was lost to another holder")]
    LeaseLost { destination: String, token: u64 },
    #[error("exchange {exchange_id} not found")]
    NotFound { exchange_id: String },
    #[error("exchange {exchange_id} is {from}, cannot become {to}")]
    InvalidTransition {
        exchange_id: String,
        from: ExchangeStatus,
        to: ExchangeStatus,
    },
    #[error("invalid {field}: {reason}")]
    InvalidInput { field: &'static str, reason: String },
    #[error("stored data is corrupt ({context}): {reason}")]
    Corrupt { context: &'static str, reason: String },
    /// The blocking task running a store call panicked or was cancelled.
    #[error("store call did not complete: {reason}")]
    Task { reason: String },
    /// An fsync failed; the store refuses writes until the gateway restarts.
    #[error("store is not durable: {reason}")]
    Durability { reason: String },
    #[error("audit chain broken at seq {seq}: {reason}")]
    AuditBroken { seq: u64, reason: String },
    /// The database cannot take writes: read-only, full, damaged or failing
    /// I/O. Readiness turns false; writes fail with this until fixed.
    #[error("store {path} cannot commit ({fault}): {detail}")]
    Fault {
        path: PathBuf,
        fault: StoreFault,
        detail: String,
    },
    /// `PRAGMA quick_check` found damage when the store was opened.
    #[error("store {path} is damaged (PRAGMA quick_check: {detail}); restore it from a backup")]
    Damaged { path: PathBuf, detail: String },
    /// Another process (normally a second `bashu serve`) holds the data
    /// directory's lock.
    #[error("data directory is in use: {lock} is locked by {}", holder_text(*.holder))]
    Locked { lock: PathBuf, holder: Option<u32> },
    /// The data directory's identity marker and its database disagree: the
    /// database is missing, empty, or another store's.
    #[error("refusing to open the store: {reason} (marker {marker}, database {db})")]
    Identity {
        marker: PathBuf,
        db: PathBuf,
        reason: String,
    },
    /// A file or directory of the data directory could not be created,
    /// read or given its permissions.
    #[error("data directory file {path}: {source}")]
    DataDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn holder_text(pid: Option<u32>) -> String {
    match pid {
        Some(pid) => format!("process {pid}"),
        None => "another process".to_owned(),
    }
}

/// Why a store cannot commit, from the database's error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreFault {
    /// Read-only file, directory or mount.
    ReadOnly,
    /// No space left (or the configured size cap reached).
    DiskFull,
    /// The file is not a database or its pages are corrupt.
    Corrupt,
    /// The operating system reported an I/O error.
    Io,
}

impl std::fmt::Display for StoreFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::ReadOnly => "read-only",
            Self::DiskFull => "disk full",
            Self::Corrupt => "corrupt",
            Self::Io => "I/O error",
        })
    }
}

impl StoreError {
    /// The exchange is not (or no longer) in the outbox: a settlement for it
    /// has nothing left to record.
    pub fn left_outbox(&self) -> bool {
        match self {
            Self::NotFound { .. } => true,
            Self::InvalidTransition { from, .. } => !from.is_pending(),
            _ => false,
        }
    }

    /// The store as a whole is failing (as opposed to one bad request):
    /// callers back off instead of retrying at once.
    pub fn is_fault(&self) -> bool {
        matches!(
            self,
            Self::Fault { .. } | Self::Durability { .. } | Self::Task { .. } | Self::Backend { .. }
        )
    }
}
