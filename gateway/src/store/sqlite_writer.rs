//! The SQLite writer connection, with group transactions.
//!
//! Every SQLite commit appends each page it touched to the WAL, takes and
//! drops the WAL locks and (with group commit) waits for an fsync. Under
//! load most commits touch the same few pages (the tail of the exchanges,
//! outbox and audit tables and their indexes), so one commit per write
//! paid for the same pages again and again: `pwrite` was the largest
//! kernel cost of an origin gateway.
//!
//! Here concurrent writes share one transaction. Each write runs in its
//! own savepoint, so a write that fails leaves no trace and does not affect
//! the others. After its savepoint is released, the write commits the
//! shared transaction itself unless another write is already queued for
//! the connection (then the last one of the burst commits), the
//! transaction has [`MAX_MEMBERS`] writes, or it has been open for
//! [`MAX_HOLD`]. A write returns `Ok` only after *its* transaction has
//! committed and the commit is on disk ([`GroupSync`]), exactly as before:
//! if the shared commit fails, every write in it fails (a write whose own
//! work failed also waits, and then reports the shared failure, since its
//! decision may rest on writes that never committed).
//!
//! Whoever takes the connection finds either no transaction (and begins
//! one) or an open one whose last member saw it queued, so an open
//! transaction always has a later holder that commits it.

use super::cached::Cached;
use super::group_sync::GroupSync;
use super::sqlite::{classify, sqlite, BACKEND};
use super::{StoreError, StoreFault};
use rusqlite::Connection;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// Most writes one transaction takes before it commits.
pub(super) const MAX_MEMBERS: u32 = 64;
/// Longest a transaction stays open for later writes to join it.
pub(super) const MAX_HOLD: Duration = Duration::from_millis(4);

/// The writer connection and the group commit around it.
#[derive(Debug)]
pub(super) struct Writer {
    path: PathBuf,
    state: Mutex<State>,
    /// Writes waiting for the connection: while one is, the current holder
    /// leaves the transaction open for it.
    queued: AtomicUsize,
    sync: GroupSync,
}

#[derive(Debug)]
struct State {
    conn: Connection,
    open: Option<OpenTx>,
}

#[derive(Debug)]
struct OpenTx {
    members: u32,
    began: Instant,
    outcome: Arc<Outcome>,
}

/// How a shared transaction ended, for every write that was in it.
#[derive(Debug, Default)]
struct Outcome {
    /// `Ok(generation)` once committed, the failure otherwise.
    result: Mutex<Option<Result<u64, SharedFailure>>>,
    done: Condvar,
}

/// A failed shared commit, as every member reports it.
#[derive(Debug, Clone)]
enum SharedFailure {
    Fault {
        path: PathBuf,
        fault: StoreFault,
        detail: String,
    },
    Durability(String),
    Task(String),
    Other(String),
}

/// The error a member gets when the transaction it joined failed because
/// of another member or the commit.
#[derive(Debug, thiserror::Error)]
#[error("the shared transaction was not committed: {0}")]
struct NotCommitted(String);

impl SharedFailure {
    fn of(err: &StoreError) -> Self {
        match err {
            StoreError::Fault { path, fault, detail } => Self::Fault {
                path: path.clone(),
                fault: *fault,
                detail: detail.clone(),
            },
            StoreError::Durability { reason } => Self::Durability(reason.clone()),
            StoreError::Task { reason } => Self::Task(reason.clone()),
            other => Self::Other(other.to_string()),
        }
    }

    fn into_error(self) -> StoreError {
        match self {
            Self::Fault { path, fault, detail } => StoreError::Fault { path, fault, detail },
            Self::Durability(reason) => StoreError::Durability { reason },
            Self::Task(reason) => StoreError::Task { reason },
            Self::Other(detail) => StoreError::Backend {
                backend: BACKEND,
                context: "committing a shared transaction",
                source: Box::new(NotCommitted(detail)),
            },
        }
    }
}

/// `err` again, for another write of the same failed transaction: faults,
/// durability failures and panicked calls keep their type, anything else
/// is reported as a commit that did not happen.
pub(super) fn duplicate(err: &StoreError) -> StoreError {
    SharedFailure::of(err).into_error()
}

impl Outcome {
    fn publish(&self, result: Result<u64, SharedFailure>) {
        *self.result.lock().unwrap_or_else(PoisonError::into_inner) = Some(result);
        self.done.notify_all();
    }

    fn wait(&self) -> Result<u64, SharedFailure> {
        let mut slot = self.result.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if let Some(result) = slot.as_ref() {
                return result.clone();
            }
            slot = self.done.wait(slot).unwrap_or_else(PoisonError::into_inner);
        }
    }
}

pub(super) fn durability(reason: String) -> StoreError {
    StoreError::Durability { reason }
}

impl Writer {
    /// `path` is the database file; `conn` is open on it, configured for
    /// WAL with `synchronous=NORMAL` (commits append, [`GroupSync`] syncs).
    pub(super) fn new(path: &Path, conn: Connection) -> Self {
        Self {
            path: path.to_owned(),
            state: Mutex::new(State { conn, open: None }),
            queued: AtomicUsize::new(0),
            sync: GroupSync::new(path),
        }
    }

    /// The database file.
    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    pub(super) fn sync(&self) -> &GroupSync {
        &self.sync
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock is handled in `write` (the shared
        // transaction is rolled back and its members told); poisoning
        // carries no further meaning.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` as one atomic write and returns once it is committed and on
    /// disk. `f`'s changes are rolled back if it returns an error.
    pub(super) fn write<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let (value, generation) = self.write_committed(f)?;
        self.sync.wait_durable(generation).map_err(durability)?;
        Ok(value)
    }

    /// [`Self::write`] up to the commit: returns the commit's generation
    /// before it is on disk. Nothing may report the write as done before
    /// [`GroupSync::wait_durable`] of that generation succeeds; the
    /// accept queue waits on another thread meanwhile, so that its next
    /// group commits while this one syncs.
    pub(super) fn write_committed<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<(T, u64), StoreError> {
        self.sync.check().map_err(durability)?;
        self.queued.fetch_add(1, Ordering::SeqCst);
        let mut st = self.lock();
        self.queued.fetch_sub(1, Ordering::SeqCst);
        if st.open.is_none() {
            st.conn
                .exec("BEGIN IMMEDIATE", [])
                .map_err(|e| classify(&self.path, sqlite("starting a write transaction")(e)))?;
            st.open = Some(OpenTx {
                members: 0,
                began: Instant::now(),
                outcome: Arc::default(),
            });
        }
        let ran = catch_unwind(AssertUnwindSafe(|| in_savepoint(&st.conn, f)));
        let result = match ran {
            Ok(result) => result.map_err(|e| classify(&self.path, e)),
            Err(panic) => {
                self.abort(&mut st, "a write panicked");
                drop(st);
                resume_unwind(panic);
            }
        };
        if st.conn.is_autocommit() {
            // SQLite rolled the whole transaction back (full disk, I/O
            // error) or the savepoint could not be closed: every member's
            // work is gone, not only this one's.
            let err = match result {
                Err(e) => e,
                Ok(_) => StoreError::Backend {
                    backend: BACKEND,
                    context: "writing",
                    source: Box::new(NotCommitted("the transaction was rolled back".into())),
                },
            };
            if let Some(open) = st.open.take() {
                open.outcome.publish(Err(SharedFailure::of(&err)));
            }
            return Err(err);
        }
        let Some(open) = st.open.as_mut() else {
            // Unreachable: the transaction was opened above and only this
            // holder can close it.
            return Err(StoreError::Corrupt {
                context: "write transaction",
                reason: "no transaction open after a write".into(),
            });
        };
        open.members += 1;
        let outcome = Arc::clone(&open.outcome);
        let last = self.queued.load(Ordering::SeqCst) == 0
            || open.members >= MAX_MEMBERS
            || open.began.elapsed() >= MAX_HOLD;
        if last {
            self.commit(&mut st);
        }
        drop(st);
        // Every answer waits for the transaction's fate, errors too: a
        // write judged against what earlier members wrote (a lease lost, a
        // transition refused) must not report a state that never commits.
        let generation = outcome.wait().map_err(SharedFailure::into_error)?;
        Ok((result?, generation))
    }

    /// Runs `f` on the connection outside any transaction (checkpoints,
    /// `VACUUM INTO`, pragmas), after committing the open one.
    pub(super) fn exclusive<T>(&self, f: impl FnOnce(&Connection) -> T) -> T {
        let mut st = self.lock();
        self.commit(&mut st);
        f(&st.conn)
    }

    /// Commits the open transaction, if any, and tells its members.
    fn commit(&self, st: &mut State) {
        let Some(open) = st.open.take() else {
            return;
        };
        let result = match st.conn.exec("COMMIT", []) {
            // Generations follow commit order: still under the lock.
            Ok(_) => Ok(self.sync.committed()),
            Err(e) => {
                let err = classify(&self.path, sqlite("committing")(e));
                if !st.conn.is_autocommit() {
                    // Leave no half-open transaction behind; its members fail.
                    let _ = st.conn.exec("ROLLBACK", []);
                }
                Err(SharedFailure::of(&err))
            }
        };
        open.outcome.publish(result);
    }

    fn abort(&self, st: &mut State, why: &str) {
        if !st.conn.is_autocommit() {
            let _ = st.conn.exec("ROLLBACK", []);
        }
        if let Some(open) = st.open.take() {
            open.outcome.publish(Err(SharedFailure::Other(why.to_owned())));
        }
    }
}

/// Runs `f` inside a savepoint: released on success, rolled back on error.
/// If the savepoint itself cannot be closed, the whole transaction is
/// rolled back (the caller sees the connection back in autocommit).
fn in_savepoint<T>(
    conn: &Connection,
    f: impl FnOnce(&Connection) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    conn.exec("SAVEPOINT member", [])
        .map_err(sqlite("starting a savepoint"))?;
    let result = f(conn);
    let closed = match &result {
        Ok(_) => conn.exec("RELEASE member", []),
        Err(_) => conn
            .exec("ROLLBACK TO member", [])
            .and_then(|_| conn.exec("RELEASE member", [])),
    };
    if let Err(e) = closed {
        if !conn.is_autocommit() {
            let _ = conn.exec("ROLLBACK", []);
        }
        return Err(result.err().unwrap_or_else(|| sqlite("closing a savepoint")(e)));
    }
    result
}

/// A connection set up as the store's writer is (WAL, `synchronous=NORMAL`),
/// for the store's unit tests.
#[cfg(test)]
pub(super) fn test_connection(path: &Path) -> Connection {
    let conn = Connection::open(path).unwrap();
    conn.pragma_update(None, "journal_mode", "WAL").unwrap();
    conn.pragma_update(None, "synchronous", "NORMAL").unwrap();
    conn
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::params;
    use std::sync::Barrier;

    fn writer(dir: &Path) -> Writer {
        let path = dir.join("w.db");
        let conn = test_connection(&path);
        conn.execute_batch("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT NOT NULL)")
            .unwrap();
        Writer::new(&path, conn)
    }

    fn keys(w: &Writer) -> Vec<i64> {
        w.exclusive(|c| {
            let mut stmt = c.prepare("SELECT k FROM t ORDER BY k").unwrap();
            let rows = stmt.query_map([], |r| r.get(0)).unwrap();
            rows.collect::<Result<_, _>>().unwrap()
        })
    }

    fn insert(c: &Connection, k: i64) -> Result<i64, StoreError> {
        c.exec("INSERT INTO t (k, v) VALUES (?1, 'x')", params![k])
            .map_err(sqlite("inserting"))?;
        Ok(k)
    }

    /// Runs `writes` writes from `threads` threads at once; write `k` runs `f(k)`.
    fn concurrently(
        w: &Arc<Writer>,
        threads: usize,
        writes: i64,
        f: impl Fn(&Connection, i64) -> Result<i64, StoreError> + Send + Sync + 'static,
    ) -> Vec<Result<i64, StoreError>> {
        let f = Arc::new(f);
        let start = Arc::new(Barrier::new(threads));
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (w, f, start) = (Arc::clone(w), Arc::clone(&f), Arc::clone(&start));
                std::thread::spawn(move || {
                    start.wait();
                    (0..writes)
                        .filter(|k| k.rem_euclid(threads as i64) == t as i64)
                        .map(|k| w.write(|c| f(c, k)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().unwrap()).collect()
    }

    #[test]
    fn concurrent_writes_share_commits_and_all_land() {
        let dir = tempfile::tempdir().unwrap();
        let w = Arc::new(writer(dir.path()));
        let results = concurrently(&w, 8, 400, |c, k| {
            // Widen the window in which other writes queue up.
            std::thread::sleep(Duration::from_micros(50));
            insert(c, k)
        });
        assert!(results.iter().all(Result::is_ok));
        assert_eq!(keys(&w), (0..400).collect::<Vec<_>>());
        let commits = w.sync().generation();
        assert!(
            commits < 400,
            "every write committed alone ({commits} commits for 400 writes)"
        );
    }

    #[test]
    fn a_failed_write_leaves_no_trace_and_spares_the_others() {
        let dir = tempfile::tempdir().unwrap();
        let w = Arc::new(writer(dir.path()));
        let results = concurrently(&w, 6, 300, |c, k| {
            insert(c, k)?;
            if k % 3 == 0 {
                // Fails after writing: its row must be rolled back.
                return Err(StoreError::InvalidInput {
                    field: "k",
                    reason: "multiple of three".into(),
                });
            }
            Ok(k)
        });
        let failed = results.iter().filter(|r| r.is_err()).count();
        assert_eq!(failed, 100);
        assert!(results
            .iter()
            .filter_map(|r| r.as_ref().err())
            .all(|e| matches!(e, StoreError::InvalidInput { field: "k", .. })));
        let expected: Vec<i64> = (0..300).filter(|k| k % 3 != 0).collect();
        assert_eq!(keys(&w), expected);
    }

    #[test]
    fn a_duplicate_key_fails_only_its_own_write() {
        let dir = tempfile::tempdir().unwrap();
        let w = Arc::new(writer(dir.path()));
        // Every key is written twice; exactly one of each pair succeeds.
        let results = concurrently(&w, 8, 400, |c, k| insert(c, k / 2));
        assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 200);
        assert_eq!(keys(&w), (0..200).collect::<Vec<_>>());
    }

    #[test]
    fn a_panicking_write_fails_its_transaction_and_the_writer_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let w = writer(dir.path());
        w.write(|c| insert(c, 1)).unwrap();
        let panicked = std::panic::catch_unwind(AssertUnwindSafe(|| {
            w.write(|c| -> Result<(), StoreError> {
                insert(c, 2)?;
                panic!("bug in a write");
            })
        }));
        assert!(panicked.is_err());
        w.write(|c| insert(c, 3)).unwrap();
        assert_eq!(keys(&w), vec![1, 3]);
    }

    #[test]
    fn ok_means_committed_and_on_disk_after_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let w = Arc::new(writer(dir.path()));
            let results = concurrently(&w, 4, 100, insert);
            assert!(results.iter().all(Result::is_ok));
        }
        let conn = Connection::open(dir.path().join("w.db")).unwrap();
        let n: i64 = conn
            .query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 100);
    }

    #[test]
    fn a_full_database_fails_writes_without_losing_acknowledged_ones() {
        let dir = tempfile::tempdir().unwrap();
        let w = Arc::new(writer(dir.path()));
        let pages: i64 = w.exclusive(|c| c.query_row("PRAGMA page_count", [], |r| r.get(0)).unwrap());
        w.exclusive(|c| {
            c.query_row(&format!("PRAGMA max_page_count = {}", pages + 3), [], |r| {
                r.get::<_, i64>(0)
            })
            .unwrap()
        });
        let results = concurrently(&w, 6, 600, |c, k| {
            c.exec(
                "INSERT INTO t (k, v) VALUES (?1, ?2)",
                params![k, "y".repeat(500)],
            )
            .map_err(sqlite("inserting"))?;
            Ok(k)
        });
        let acknowledged: Vec<i64> = results.iter().filter_map(|r| r.as_ref().ok().copied()).collect();
        assert!(results.iter().any(Result::is_err), "the quota was never reached");
        assert!(results.iter().filter_map(|r| r.as_ref().err()).all(|e| matches!(
            e,
            StoreError::Fault {
                fault: StoreFault::DiskFull,
                ..
            }
        )));
        let mut stored = keys(&w);
        stored.sort_unstable();
        let mut acknowledged = acknowledged;
        acknowledged.sort_unstable();
        assert_eq!(
            stored, acknowledged,
            "stored rows are exactly the acknowledged writes"
        );
    }
}
