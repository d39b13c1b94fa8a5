//! WAL checkpoints off the write path.
//!
//! SQLite's automatic checkpoint runs inside the commit that crosses the
//! threshold: the committing connection copies the WAL into the database
//! and fsyncs the database file before the commit returns. On this store
//! that connection is the writer, so every accept and settle queued behind
//! it waited for those fsyncs. Measured on a busy origin: 5 ms median and
//! 12 ms worst per checkpoint, five times a second, squarely in the accept
//! p99.
//!
//! Here a thread with its own connection does that copy (a `PASSIVE`
//! checkpoint, which never blocks writers). A checkpoint from another
//! connection cannot restart the WAL while the writer keeps appending,
//! though, so when the WAL has grown past its bound the thread finishes on
//! the writer's connection: a second `PASSIVE` checkpoint that copies only
//! what arrived meanwhile, after which the next write starts the WAL from
//! its beginning again. That finish still holds the writer for one fsync of
//! the database file, once per bound's worth of pages rather than in every
//! crossing commit. A `PASSIVE` pass that did not reach the WAL's end does
//! not sync the database, so that fsync used to write out everything the
//! thread had copied since its last complete pass (7–16 ms under load).
//! The thread now flushes the database file itself before it takes the
//! writer (`fdatasync` on a descriptor of its own, which the store closes
//! only after every connection, see `SqliteStore`), and the finish writes
//! only what it copies. The writer's own
//! automatic checkpoint stays armed at [`BACKSTOP_FACTOR`] times the bound,
//! so the WAL stays bounded even if this thread falls behind or fails.
//!
//! Durability is unchanged: checkpoints at `synchronous=NORMAL` sync the WAL
//! before copying it (see `group_sync.rs`), whichever connection runs them.

use super::cached::Cached;
use super::sqlite_writer::Writer;
use rusqlite::Connection;
use std::fs::File;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

/// How often the thread looks for new commits to checkpoint.
pub(super) const CHECKPOINT_EVERY: Duration = Duration::from_millis(200);
/// The writer's own automatic checkpoint, as a multiple of the bound.
pub(super) const BACKSTOP_FACTOR: u32 = 4;

#[derive(Default)]
struct Stop {
    stopped: Mutex<bool>,
    signal: Condvar,
}

/// The checkpoint thread. Dropping it stops and joins the thread.
pub(super) struct Checkpointer {
    stop: Arc<Stop>,
    /// Held by the thread for each pass; see [`Checkpointer::hold`].
    pass: Arc<Mutex<()>>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Checkpointer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpointer").finish_non_exhaustive()
    }
}

impl Checkpointer {
    /// Starts the thread on `conn` (its own connection, configured like the
    /// others). `bound_pages` is the WAL length past which the writer is
    /// asked to finish a checkpoint.
    pub(super) fn start(
        conn: Connection,
        writer: Arc<Writer>,
        db_file: Arc<File>,
        bound_pages: u32,
    ) -> std::io::Result<Self> {
        let stop = Arc::new(Stop::default());
        let pass = Arc::new(Mutex::new(()));
        let thread = std::thread::Builder::new().name("bashu-wal-ckpt".into()).spawn({
            let (stop, pass) = (Arc::clone(&stop), Arc::clone(&pass));
            move || run(&conn, &writer, &db_file, bound_pages, &stop, &pass)
        })?;
        Ok(Self {
            stop,
            pass,
            thread: Some(thread),
        })
    }

    /// Waits for the thread's current pass and holds off the next one while
    /// the guard lives, so a checkpoint that must see no other checkpointer
    /// (the idle `TRUNCATE`) is not turned away as busy by this thread.
    /// Take it before the writer: the thread takes the two in that order.
    pub(super) fn hold(&self) -> MutexGuard<'_, ()> {
        self.pass.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        *self.stop.stopped.lock().unwrap_or_else(PoisonError::into_inner) = true;
        self.stop.signal.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// `PRAGMA wal_checkpoint(PASSIVE)`: `(busy, frames in the WAL, frames
/// copied)`.
fn passive(conn: &Connection) -> rusqlite::Result<(i64, i64, i64)> {
    conn.row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?))
    })
}

fn run(conn: &Connection, writer: &Writer, db_file: &File, bound_pages: u32, stop: &Stop, pass: &Mutex<()>) {
    let mut seen = writer.sync().generation();
    loop {
        {
            let stopped = stop.stopped.lock().unwrap_or_else(PoisonError::into_inner);
            let (stopped, _) = stop
                .signal
                .wait_timeout_while(stopped, CHECKPOINT_EVERY, |stopped| !*stopped)
                .unwrap_or_else(PoisonError::into_inner);
            if *stopped {
                return;
            }
        }
        let now = writer.sync().generation();
        // After a failed fsync the store refuses writes until a restart
        // (`group_sync.rs`); copying its WAL around would not help either.
        if now == seen || writer.sync().check().is_err() {
            continue;
        }
        seen = now;
        let _pass = pass.lock().unwrap_or_else(PoisonError::into_inner);
        match passive(conn) {
            Ok((_, frames, _)) if frames >= i64::from(bound_pages) => {
                // Write this pass's pages out before holding the writer, so
                // that the finish's own sync of the database only has the
                // pages it copies itself. A failure poisons the store like a
                // failed sync of the WAL: the kernel may have dropped pages
                // that SQLite believes are on disk.
                if let Err(e) = db_file.sync_data() {
                    let reason = format!("fsync of {} failed: {e}", writer.path().display());
                    tracing::error!(%reason, "the store refuses writes until a restart");
                    writer.sync().poison(reason);
                    continue;
                }
                let finished = writer.exclusive(passive);
                if let Err(e) = finished {
                    tracing::warn!(error = %e, "cannot finish a WAL checkpoint on the writer; the next round retries");
                }
            }
            Ok(_) => {}
            // Not fatal: the writer's own automatic checkpoint bounds the WAL.
            Err(e) => tracing::warn!(error = %e, "background WAL checkpoint failed; the next round retries"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite::sqlite;
    use crate::store::sqlite_writer::test_connection;
    use std::time::Instant;

    /// Salt-1 and salt-2 of the WAL header, new whenever the WAL restarts.
    fn wal_salts(path: &std::path::Path) -> Vec<u8> {
        let mut wal = path.as_os_str().to_owned();
        wal.push("-wal");
        std::fs::read(wal).unwrap()[16..24].to_vec()
    }

    /// A flush of the database file that fails stops the store, as a failed
    /// sync of the WAL does, and the writer is never asked to finish the
    /// checkpoint: the WAL, which still holds every frame, is not started
    /// over. A pipe stands in for the database file: it cannot be synced.
    #[cfg(unix)]
    #[test]
    fn a_failed_flush_of_the_database_file_poisons_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.db");
        let conn = test_connection(&path);
        conn.execute_batch("CREATE TABLE t (k INTEGER PRIMARY KEY, v BLOB NOT NULL)")
            .unwrap();
        let writer = Arc::new(Writer::new(&path, conn));
        let (pipe, _keep_open) = std::io::pipe().unwrap();
        let db_file = Arc::new(File::from(std::os::fd::OwnedFd::from(pipe)));
        let insert = |k: i64| {
            writer.write(|c| {
                c.exec("INSERT INTO t (k, v) VALUES (?1, zeroblob(8192))", [k])
                    .map_err(sqlite("inserting"))
            })
        };
        insert(0).unwrap();
        let salts = wal_salts(&path);
        let checkpointer =
            Checkpointer::start(test_connection(&path), Arc::clone(&writer), db_file, 10).unwrap();

        let deadline = Instant::now() + Duration::from_secs(20);
        let mut k = 0;
        while writer.sync().check().is_ok() {
            assert!(Instant::now() < deadline, "the failed flush went unnoticed");
            k += 1;
            // Writes race the poisoning; those after it are refused.
            let _ = insert(k);
            std::thread::sleep(Duration::from_millis(10));
        }
        drop(checkpointer);
        let reason = writer.sync().check().unwrap_err();
        assert!(reason.contains("c.db"), "{reason}");
        assert!(
            matches!(insert(k + 1), Err(crate::store::StoreError::Durability { .. })),
            "a write after the failed flush is refused"
        );
        assert_eq!(wal_salts(&path), salts, "the WAL was started over");
    }
}
