//! Group commit for the SQLite store: many commits, one fsync.
//!
//! The writer connection runs with `synchronous=NORMAL`, so a commit only
//! appends to the WAL file. Before a write is reported `Ok`, its caller
//! waits here until an `fdatasync` of the WAL that started after its commit
//! has completed. Concurrent callers share that fsync: whoever finds no sync
//! in flight becomes the leader, syncs everything committed so far and
//! wakes the others. "Ok means durable" holds exactly as with
//! `synchronous=FULL`, at a fraction of the fsyncs under load.
//!
//! Checkpoints keep this sound: with `synchronous=NORMAL` SQLite syncs the
//! WAL before copying it into the database and syncs the database after, so
//! a frame moved out of the WAL before our fsync is already durable.
//!
//! A failed fsync leaves the kernel's page cache in an unknown state (a
//! retry may report success for data that never reached the disk), so the
//! first failure poisons the store: every later write fails, and the
//! operator restarts the gateway, which recovers from what is on disk.

use std::fs::OpenOptions;
use std::path::PathBuf;
use std::sync::{Condvar, Mutex, PoisonError};

/// Commit generations and the sync state shared by all writers.
#[derive(Debug)]
pub(super) struct GroupSync {
    wal: PathBuf,
    state: Mutex<State>,
    synced: Condvar,
}

#[derive(Debug, Default)]
struct State {
    /// Generation of the newest commit.
    committed: u64,
    /// Every commit up to this generation is on disk.
    durable: u64,
    /// A leader is syncing right now.
    syncing: bool,
    /// Why the store stopped accepting writes, after a failed fsync.
    failed: Option<String>,
}

impl GroupSync {
    /// `db` is the database path; SQLite keeps its WAL at `<db>-wal`.
    pub(super) fn new(db: &std::path::Path) -> Self {
        let mut wal = db.as_os_str().to_owned();
        wal.push("-wal");
        Self {
            wal: PathBuf::from(wal),
            state: Mutex::default(),
            synced: Condvar::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Refuses new writes once an fsync has failed.
    pub(super) fn check(&self) -> Result<(), String> {
        match &self.lock().failed {
            Some(reason) => Err(reason.clone()),
            None => Ok(()),
        }
    }

    /// Generation of the newest commit (0 before any).
    pub(super) fn generation(&self) -> u64 {
        self.lock().committed
    }

    /// Records a commit; call it while still holding the writer lock so
    /// generations follow commit order. Returns the commit's generation.
    pub(super) fn committed(&self) -> u64 {
        let mut s = self.lock();
        s.committed += 1;
        s.committed
    }

    /// Blocks until commit `generation` is on disk.
    pub(super) fn wait_durable(&self, generation: u64) -> Result<(), String> {
        let mut s = self.lock();
        loop {
            if let Some(reason) = &s.failed {
                return Err(reason.clone());
            }
            if s.durable >= generation {
                return Ok(());
            }
            if s.syncing {
                s = self.synced.wait(s).unwrap_or_else(PoisonError::into_inner);
                continue;
            }
            // Become the leader for everything committed so far.
            s.syncing = true;
            let target = s.committed;
            drop(s);
            let result = self.fsync_wal();
            s = self.lock();
            s.syncing = false;
            match result {
                Ok(()) => s.durable = s.durable.max(target),
                Err(e) => s.failed = Some(format!("fsync of {} failed: {e}", self.wal.display())),
            }
            self.synced.notify_all();
        }
    }

    fn fsync_wal(&self) -> std::io::Result<()> {
        // Opened per sync: SQLite may recreate the WAL file, and fsync
        // applies to the inode behind the path now.
        OpenOptions::new().read(true).open(&self.wal)?.sync_data()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn concurrent_writers_are_all_made_durable() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("x.db");
        std::fs::write(dir.path().join("x.db-wal"), b"frames").unwrap();
        let sync = Arc::new(GroupSync::new(&db));
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let sync = Arc::clone(&sync);
                std::thread::spawn(move || {
                    for _ in 0..50 {
                        let generation = sync.committed();
                        sync.wait_durable(generation).unwrap();
                        assert!(sync.lock().durable >= generation);
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        let s = sync.lock();
        assert_eq!((s.committed, s.durable), (400, 400));
    }

    #[test]
    fn a_failed_fsync_poisons_every_later_write() {
        let dir = tempfile::tempdir().unwrap();
        // No WAL file: the sync fails.
        let sync = GroupSync::new(&dir.path().join("missing.db"));
        let generation = sync.committed();
        let err = sync.wait_durable(generation).unwrap_err();
        assert!(err.contains("fsync"), "{err}");
        assert!(sync.check().is_err());
        std::fs::write(dir.path().join("missing.db-wal"), b"now it exists").unwrap();
        assert!(
            sync.wait_durable(sync.committed()).is_err(),
            "no recovery after a failed fsync"
        );
    }
}
