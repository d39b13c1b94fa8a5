//! A writer thread for the SQLite writes async code waits on most: the
//! accepts of an origin gateway.
//!
//! Through tokio's blocking pool every accept woke a pool thread, which
//! then slept on the group-commit condition variable and was woken again
//! (futex wake-ups and context switches were a tenth of an origin
//! gateway's CPU). Here async callers queue the write and await a oneshot
//! answer. One thread takes everything queued, runs each write in its own
//! savepoint of one [`Writer::write`] (one commit, one fsync) and answers
//! them all once the commit is on disk. Writes queued while it waits for
//! the fsync form the next group, so the group grows with the load.

use super::cached::Cached;
use super::sqlite::sqlite;
use super::sqlite_writer::{duplicate, Writer};
use super::StoreError;
use rusqlite::Connection;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;

/// The answer to a queued write, sent once it is durable (or failed).
pub type Queued<T> = tokio::sync::oneshot::Receiver<Result<T, StoreError>>;

/// One queued write: run inside the shared transaction, answered after it.
trait QueuedWrite: Send {
    /// Runs the write; `true` if it succeeded (its savepoint is kept).
    fn run(&mut self, conn: &Connection) -> bool;
    /// Answers the caller once the transaction's fate is known.
    fn finish(self: Box<Self>, committed: Result<(), &StoreError>);
}

struct Pending<T, F> {
    write: Option<F>,
    result: Option<Result<T, StoreError>>,
    reply: tokio::sync::oneshot::Sender<Result<T, StoreError>>,
}

impl<T, F> QueuedWrite for Pending<T, F>
where
    T: Send,
    F: FnOnce(&Connection) -> Result<T, StoreError> + Send,
{
    fn run(&mut self, conn: &Connection) -> bool {
        let Some(write) = self.write.take() else {
            return false;
        };
        let result = write(conn);
        let ok = result.is_ok();
        self.result = Some(result);
        ok
    }

    fn finish(self: Box<Self>, committed: Result<(), &StoreError>) {
        let answer = match (self.result, committed) {
            // The group failed: even a write that failed on its own may have
            // been judged against writes that never committed.
            (_, Err(e)) => Err(duplicate(e)),
            (Some(result), Ok(())) => result,
            (None, Ok(())) => Err(StoreError::Task {
                reason: "a queued write was not run".into(),
            }),
        };
        // The caller may have gone away (its request was cancelled); the
        // write stands either way, as it would through the blocking pool.
        let _ = self.reply.send(answer);
    }
}

#[derive(Default)]
struct Inbox {
    writes: Vec<Box<dyn QueuedWrite>>,
    closed: bool,
}

#[derive(Default)]
struct Shared {
    inbox: Mutex<Inbox>,
    arrived: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inbox> {
        self.inbox.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The queue and its thread. Dropping it runs what is queued, then stops.
pub(super) struct WriteQueue {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for WriteQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteQueue").finish_non_exhaustive()
    }
}

impl WriteQueue {
    pub(super) fn start(writer: Arc<Writer>) -> std::io::Result<Self> {
        let shared = Arc::new(Shared::default());
        let thread = std::thread::Builder::new().name("bashu-store".into()).spawn({
            let shared = Arc::clone(&shared);
            move || run(&writer, &shared)
        })?;
        Ok(Self {
            shared,
            thread: Some(thread),
        })
    }

    /// Queues `write`; the receiver gets its result once it is durable.
    pub(super) fn submit<T, F>(&self, write: F) -> Queued<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let pending = Box::new(Pending {
            write: Some(write),
            result: None,
            reply,
        });
        let mut inbox = self.shared.lock();
        inbox.writes.push(pending);
        drop(inbox);
        self.shared.arrived.notify_one();
        answer
    }
}

impl Drop for WriteQueue {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.arrived.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn run(writer: &Writer, shared: &Shared) {
    loop {
        let mut writes = {
            let mut inbox = shared.lock();
            loop {
                if !inbox.writes.is_empty() {
                    break std::mem::take(&mut inbox.writes);
                }
                if inbox.closed {
                    return;
                }
                inbox = shared.arrived.wait(inbox).unwrap_or_else(PoisonError::into_inner);
            }
        };
        let ran = catch_unwind(AssertUnwindSafe(|| {
            writer.write(|conn| {
                for w in writes.iter_mut() {
                    in_savepoint(conn, w.as_mut())?;
                }
                Ok(())
            })
        }));
        let committed = ran.unwrap_or_else(|_| {
            // `Writer::write` rolled the transaction back; keep serving.
            Err(StoreError::Task {
                reason: "a queued write panicked".into(),
            })
        });
        for w in writes {
            w.finish(committed.as_ref().map(|_| ()));
        }
    }
}

/// Runs one queued write in a nested savepoint: a write that fails leaves
/// nothing behind and the others go on.
fn in_savepoint(conn: &Connection, write: &mut dyn QueuedWrite) -> Result<(), StoreError> {
    conn.exec("SAVEPOINT queued", [])
        .map_err(sqlite("starting a savepoint"))?;
    if write.run(conn) {
        conn.exec("RELEASE queued", [])
    } else {
        conn.exec("ROLLBACK TO queued", [])
            .and_then(|_| conn.exec("RELEASE queued", []))
    }
    .map_err(sqlite("closing a savepoint"))
    .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::params;

    fn writer(dir: &std::path::Path) -> Arc<Writer> {
        let path = dir.join("q.db");
        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "journal_mode", "WAL").unwrap();
        conn.execute_batch("CREATE TABLE t (k INTEGER PRIMARY KEY)")
            .unwrap();
        Arc::new(Writer::new(&path, conn))
    }

    fn insert(k: i64) -> impl FnOnce(&Connection) -> Result<i64, StoreError> + Send + 'static {
        move |c| {
            c.exec("INSERT INTO t (k) VALUES (?1)", params![k])
                .map_err(sqlite("inserting"))?;
            Ok(k)
        }
    }

    fn count(w: &Writer) -> i64 {
        w.exclusive(|c| c.query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0)).unwrap())
    }

    #[test]
    fn a_burst_shares_commits_and_a_failing_write_spares_the_others() {
        let dir = tempfile::tempdir().unwrap();
        let w = writer(dir.path());
        let queue = WriteQueue::start(Arc::clone(&w)).unwrap();
        // Key 5 twice: the second fails on the primary key, alone.
        let answers: Vec<_> = (0..200).chain([5]).map(|k| queue.submit(insert(k))).collect();
        let results: Vec<_> = answers.into_iter().map(|a| a.blocking_recv().unwrap()).collect();
        assert!(results[..200].iter().all(Result::is_ok));
        assert!(
            matches!(results[200], Err(StoreError::Backend { .. })),
            "{:?}",
            results[200]
        );
        assert_eq!(count(&w), 200);
        let commits = w.sync().generation();
        assert!(commits < 200, "{commits} commits for a burst of 201 writes");
    }

    #[test]
    fn dropping_the_queue_finishes_what_was_queued() {
        let dir = tempfile::tempdir().unwrap();
        let w = writer(dir.path());
        let queue = WriteQueue::start(Arc::clone(&w)).unwrap();
        let answers: Vec<_> = (0..50).map(|k| queue.submit(insert(k))).collect();
        drop(queue);
        for (k, a) in (0..50).zip(answers) {
            assert_eq!(a.blocking_recv().unwrap().unwrap(), k);
        }
        assert_eq!(count(&w), 50);
    }

    #[test]
    fn a_panicking_write_fails_its_group_and_the_thread_keeps_serving() {
        let dir = tempfile::tempdir().unwrap();
        let w = writer(dir.path());
        let queue = WriteQueue::start(Arc::clone(&w)).unwrap();
        let bad = queue.submit(|_: &Connection| -> Result<(), StoreError> { panic!("bug in a write") });
        assert!(matches!(
            bad.blocking_recv().unwrap(),
            Err(StoreError::Task { .. })
        ));
        assert_eq!(queue.submit(insert(1)).blocking_recv().unwrap().unwrap(), 1);
        assert_eq!(count(&w), 1);
    }
}
