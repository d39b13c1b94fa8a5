//! A writer thread for the SQLite writes async code waits on most: the
//! accepts of an origin gateway.
//!
//! Through tokio's blocking pool every accept woke a pool thread, which
//! then slept on the group-commit condition variable and was woken again
//! (futex wake-ups and context switches were a tenth of an origin
//! gateway's CPU). Here async callers queue the write and await a oneshot
//! answer. One thread takes everything queued and runs the writes as one
//! transaction ([`Writer::write_committed`]: one commit). It then hands the
//! group to one of [`ANSWERING_THREADS`] threads, which waits until the
//! commit is on disk and answers every write of it, and takes the next
//! group at once: that group commits while the one before it syncs, and
//! its own fsync starts without waiting for the other's to end
//! (`group_sync.rs`). Writes queued meanwhile form the next group, so the
//! group grows with the load.
//!
//! A write that fails must leave no trace and spare the others. Giving
//! every write a savepoint of its own does that, but each savepoint copies
//! every page its write touches into the statement journal first (the
//! audit head, the index leaves, the table tails: the same pages, once per
//! write), which was a twentieth of an origin gateway's store thread. So a
//! group first runs optimistically, all writes inside the one savepoint
//! `Writer::write` gives it. Accepts answer replays and conflicts as values
//! rather than errors, so nearly every group gets through. If one write
//! fails, the whole group is rolled back and run again, each write in its
//! own savepoint, exactly as before: the writes are re-runnable (`FnMut`)
//! for that reason.

use super::cached::Cached;
use super::sqlite::sqlite;
use super::sqlite_writer::{duplicate, durability, Writer};
use super::StoreError;
use rusqlite::Connection;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;

/// Threads that wait for committed groups to be durable and answer them:
/// as many as syncs may run at once (`group_sync.rs`).
const ANSWERING_THREADS: usize = 2;

/// The answer to a queued write, sent once it is durable (or failed).
pub type Queued<T> = tokio::sync::oneshot::Receiver<Result<T, StoreError>>;

/// One queued write: run inside the shared transaction, answered after it.
trait QueuedWrite: Send {
    /// Runs the write; `true` if it succeeded. It may run twice: a second
    /// run replaces the first's result (see the module docs).
    fn run(&mut self, conn: &Connection) -> bool;
    /// Answers the caller once the transaction's fate is known.
    fn finish(self: Box<Self>, committed: Result<(), &StoreError>);
}

struct Pending<T, F> {
    write: F,
    result: Option<Result<T, StoreError>>,
    reply: tokio::sync::oneshot::Sender<Result<T, StoreError>>,
}

impl<T, F> QueuedWrite for Pending<T, F>
where
    T: Send,
    F: FnMut(&Connection) -> Result<T, StoreError> + Send,
{
    fn run(&mut self, conn: &Connection) -> bool {
        let result = (self.write)(conn);
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
    /// Groups run again write by write because one write failed.
    replays: AtomicU64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inbox> {
        self.inbox.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The queue and its threads. Dropping it runs and answers what is queued,
/// then stops.
pub(super) struct WriteQueue {
    shared: Arc<Shared>,
    /// The writing thread first, then the answering ones.
    threads: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for WriteQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteQueue").finish_non_exhaustive()
    }
}

impl WriteQueue {
    pub(super) fn start(writer: Arc<Writer>) -> std::io::Result<Self> {
        let (synced, committed) = mpsc::channel();
        let committed = Arc::new(Mutex::new(committed));
        // If a thread cannot start, dropping `queue` stops and joins those
        // that did (the answering ones end with the sender).
        let mut queue = Self {
            shared: Arc::new(Shared::default()),
            threads: Vec::with_capacity(ANSWERING_THREADS + 1),
        };
        for _ in 0..ANSWERING_THREADS {
            let (committed, writer) = (Arc::clone(&committed), Arc::clone(&writer));
            let thread = std::thread::Builder::new()
                .name("bashu-store-sync".into())
                .spawn(move || answer(&writer, &committed))?;
            queue.threads.push(thread);
        }
        let shared = Arc::clone(&queue.shared);
        let thread = std::thread::Builder::new()
            .name("bashu-store".into())
            .spawn(move || run(&writer, &shared, &synced))?;
        // Joined first on drop: it ends the answering threads.
        queue.threads.insert(0, thread);
        Ok(queue)
    }

    /// Queues `write`; the receiver gets its result once it is durable.
    /// `write` may run twice (module docs); only the last run's changes and
    /// result count.
    pub(super) fn submit<T, F>(&self, write: F) -> Queued<T>
    where
        T: Send + 'static,
        F: FnMut(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (pending, answer) = pending(write);
        self.shared.lock().writes.push(pending);
        self.shared.arrived.notify_one();
        answer
    }
}

/// A write to queue, and the receiver of its answer.
fn pending<T, F>(write: F) -> (Box<dyn QueuedWrite>, Queued<T>)
where
    T: Send + 'static,
    F: FnMut(&Connection) -> Result<T, StoreError> + Send + 'static,
{
    let (reply, answer) = tokio::sync::oneshot::channel();
    let pending = Box::new(Pending {
        write,
        result: None,
        reply,
    });
    (pending, answer)
}

/// A write as tests queue it, boxed so one group can mix closures.
#[cfg(test)]
type BoxedWrite<T> = Box<dyn FnMut(&Connection) -> Result<T, StoreError> + Send>;

#[cfg(test)]
impl WriteQueue {
    /// Groups that were run again write by write.
    fn replays(&self) -> u64 {
        self.shared.replays.load(Ordering::Relaxed)
    }

    /// Queues `writes` under one lock, so the thread takes them as one group.
    fn submit_group<T: Send + 'static>(&self, writes: Vec<BoxedWrite<T>>) -> Vec<Queued<T>> {
        let mut inbox = self.shared.lock();
        let answers = writes
            .into_iter()
            .map(|w| {
                let (p, answer) = pending(w);
                inbox.writes.push(p);
                answer
            })
            .collect();
        drop(inbox);
        self.shared.arrived.notify_one();
        answers
    }
}

impl Drop for WriteQueue {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.arrived.notify_one();
        // The writing thread ends first and drops the sender, which ends
        // the answering threads once they have answered everything.
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

fn run(writer: &Writer, shared: &Shared, synced: &mpsc::Sender<Committed>) {
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
        match run_group(writer, shared, &mut writes) {
            Ok(generation) => {
                if let Err(mpsc::SendError(group)) = synced.send(Committed { generation, writes }) {
                    // No waiter left (they only stop when this thread has):
                    // answer here rather than drop the answers.
                    group.answer(writer);
                }
            }
            Err(e) => {
                for w in writes {
                    w.finish(Err(&e));
                }
            }
        }
    }
}

/// A committed group on its way to durability.
struct Committed {
    generation: u64,
    writes: Vec<Box<dyn QueuedWrite>>,
}

impl Committed {
    /// Waits until the group's commit is on disk and answers its writes.
    fn answer(self, writer: &Writer) {
        let durable = writer.sync().wait_durable(self.generation).map_err(durability);
        for w in self.writes {
            w.finish(durable.as_ref().map(|_| ()));
        }
    }
}

/// Answers committed groups once they are durable. Several run, so that
/// one group's fsync can start while the one before it is still syncing.
fn answer(writer: &Writer, groups: &Mutex<mpsc::Receiver<Committed>>) {
    loop {
        let next = groups.lock().unwrap_or_else(PoisonError::into_inner).recv();
        match next {
            Ok(group) => group.answer(writer),
            Err(mpsc::RecvError) => return,
        }
    }
}

/// Runs one group: optimistically in one savepoint, and if a write failed,
/// again with a savepoint per write (module docs).
fn run_group(
    writer: &Writer,
    shared: &Shared,
    writes: &mut [Box<dyn QueuedWrite>],
) -> Result<u64, StoreError> {
    let mut member_failed = false;
    let optimistic = catch_unwind(AssertUnwindSafe(|| {
        writer.write_committed(|conn| {
            if writes.iter_mut().all(|w| w.run(conn)) {
                Ok(())
            } else {
                // Roll the whole group back; it runs again below.
                member_failed = true;
                Err(StoreError::Task {
                    reason: "a write of the group failed".into(),
                })
            }
        })
    }));
    match optimistic {
        Ok(Err(_)) if member_failed => {}
        Ok(done) => return done.map(|((), generation)| generation),
        // `Writer::write_committed` rolled the transaction back; keep serving.
        Err(_) => return Err(panicked()),
    }
    let replays = shared.replays.fetch_add(1, Ordering::Relaxed) + 1;
    // Rare by design (accepts answer conflicts as values); a steady stream
    // of these means some write fails as an error and costs a second pass.
    tracing::debug!(
        writes = writes.len(),
        replays,
        "a write of an accept group failed; running the group again write by write"
    );
    catch_unwind(AssertUnwindSafe(|| {
        writer.write_committed(|conn| {
            for w in writes.iter_mut() {
                in_savepoint(conn, w.as_mut())?;
            }
            Ok(())
        })
    }))
    .unwrap_or_else(|_| Err(panicked()))
    .map(|((), generation)| generation)
}

fn panicked() -> StoreError {
    StoreError::Task {
        reason: "a queued write panicked".into(),
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
        let conn = crate::store::sqlite_writer::test_connection(&path);
        conn.execute_batch("CREATE TABLE t (k INTEGER PRIMARY KEY)")
            .unwrap();
        Arc::new(Writer::new(&path, conn))
    }

    fn insert(k: i64) -> impl FnMut(&Connection) -> Result<i64, StoreError> + Send + 'static {
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
        // Only the group holding the duplicate was run again.
        assert_eq!(queue.replays(), 1);
    }

    /// The optimistic pass's changes are rolled back before the replay:
    /// a write that ran in both passes is stored once, a write that reads
    /// what an earlier one wrote sees only the replay's.
    #[test]
    fn a_replayed_group_keeps_nothing_of_its_first_pass() {
        let dir = tempfile::tempdir().unwrap();
        let w = writer(dir.path());
        let queue = WriteQueue::start(Arc::clone(&w)).unwrap();
        let runs = Arc::new(AtomicU64::new(0));
        let counted = {
            let runs = Arc::clone(&runs);
            let mut inner = insert(7);
            move |c: &Connection| {
                runs.fetch_add(1, Ordering::SeqCst);
                inner(c)
            }
        };
        let answers = queue.submit_group(vec![Box::new(counted), Box::new(insert(8)), Box::new(insert(7))]);
        let results: Vec<_> = answers.into_iter().map(|a| a.blocking_recv().unwrap()).collect();
        assert_eq!(results[0].as_ref().ok(), Some(&7));
        assert_eq!(results[1].as_ref().ok(), Some(&8));
        assert!(
            matches!(results[2], Err(StoreError::Backend { .. })),
            "{:?}",
            results[2]
        );
        assert_eq!(count(&w), 2);
        assert_eq!(queue.replays(), 1);
        assert_eq!(
            runs.load(Ordering::SeqCst),
            2,
            "the first write ran in both passes"
        );
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

    /// Answers wait for the commit's sync on another thread: a group whose
    /// sync fails is answered with the failure although it committed, and
    /// so is everything after it.
    #[test]
    fn a_committed_group_whose_sync_fails_is_answered_with_the_failure() {
        let dir = tempfile::tempdir().unwrap();
        let w = writer(dir.path());
        let queue = WriteQueue::start(Arc::clone(&w)).unwrap();
        assert_eq!(queue.submit(insert(1)).blocking_recv().unwrap().unwrap(), 1);
        // SQLite keeps appending to the WAL it has open; the sync, which
        // opens the WAL by its path, fails.
        let wal = dir.path().join("q.db-wal");
        let mut second = insert(2);
        let answer = queue.submit(move |c: &Connection| {
            std::fs::remove_file(&wal).map_err(|e| StoreError::Task {
                reason: e.to_string(),
            })?;
            second(c)
        });
        let err = answer.blocking_recv().unwrap().unwrap_err();
        assert!(matches!(err, StoreError::Durability { .. }), "{err}");
        assert_eq!(count(&w), 2, "the write committed but was never reported done");
        assert!(matches!(
            queue.submit(insert(3)).blocking_recv().unwrap(),
            Err(StoreError::Durability { .. })
        ));
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
