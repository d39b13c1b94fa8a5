//! Group commit for the SQLite store: many commits, one fsync.
//!
//! The writer connection runs with `synchronous=NORMAL`, so a commit only
//! appends to the WAL file. Before a write is reported `Ok`, its caller
//! waits here until an `fdatasync` of the WAL that started after its commit
//! has completed. Concurrent callers share that fsync: whoever finds no sync
//! covering its commit becomes the leader, syncs everything committed so
//! far and wakes the others. "Ok means durable" holds exactly as with
//! `synchronous=FULL`, at a fraction of the fsyncs under load.
//!
//! Up to [`MAX_IN_FLIGHT`] syncs run at once, so a commit made while a sync
//! runs starts its own at once instead of waiting for that one to end
//! first (the accept queue commits its next group meanwhile). Their
//! outcomes count in the order they started (`State::ended`).
//!
//! Checkpoints keep this sound: with `synchronous=NORMAL` SQLite syncs the
//! WAL before copying it into the database and syncs the database after, so
//! a frame moved out of the WAL before our fsync is already durable.
//!
//! A failed fsync leaves the kernel's page cache in an unknown state (a
//! retry may report success for data that never reached the disk), so the
//! first failure poisons the store: every later write fails, and the
//! operator restarts the gateway, which recovers from what is on disk.

use std::collections::VecDeque;
use std::fs::OpenOptions;
use std::path::PathBuf;
use std::sync::{Condvar, Mutex, PoisonError};

/// Syncs of the WAL that may run at once. With one, a commit that arrives
/// during a sync waits for that sync to end and then for its own; with
/// two, its own starts at once.
const MAX_IN_FLIGHT: usize = 2;

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
    /// Syncs started and not yet counted, oldest first.
    running: VecDeque<Running>,
    /// Why the store stopped accepting writes, after a failed fsync.
    failed: Option<String>,
}

/// A sync of everything committed up to `target`.
#[derive(Debug)]
struct Running {
    target: u64,
    /// `None` while it runs.
    ended: Option<Result<(), String>>,
}

impl State {
    /// The newest generation a started sync covers.
    fn started(&self) -> u64 {
        self.running.back().map_or(self.durable, |r| r.target)
    }

    /// Records how the sync for `target` ended and counts the ended syncs
    /// in the order they started. A sync's success counts only once every
    /// earlier one has succeeded: if an earlier sync failed, the kernel may
    /// have dropped pages of commits that the later one was meant to
    /// follow, and the WAL would have a hole before them.
    fn ended(&mut self, target: u64, result: Result<(), String>) {
        if let Some(sync) = self.running.iter_mut().find(|r| r.target == target) {
            sync.ended = Some(result);
        }
        while self.running.front().is_some_and(|r| r.ended.is_some()) {
            if let Some(Running {
                target,
                ended: Some(result),
            }) = self.running.pop_front()
            {
                match result {
                    Ok(()) if self.failed.is_none() => self.durable = self.durable.max(target),
                    Ok(()) => {}
                    Err(reason) => {
                        self.failed.get_or_insert(reason);
                    }
                }
            }
        }
    }
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
            // A sync that started after this commit covers it; with every
            // slot busy, the next sync to end frees one.
            if s.started() >= generation || s.running.len() >= MAX_IN_FLIGHT {
                s = self.synced.wait(s).unwrap_or_else(PoisonError::into_inner);
                continue;
            }
            // Sync everything committed so far.
            let target = s.committed;
            s.running.push_back(Running { target, ended: None });
            drop(s);
            let result = self
                .fsync_wal()
                .map_err(|e| format!("fsync of {} failed: {e}", self.wal.display()));
            s = self.lock();
            s.ended(target, result);
            self.synced.notify_all();
        }
    }

    /// Stops the store after an fsync elsewhere failed (the checkpoint
    /// thread's flush of the database file), by the same rule as a failed
    /// sync of the WAL. The first reason is kept.
    pub(super) fn poison(&self, reason: String) {
        self.lock().failed.get_or_insert(reason);
        self.synced.notify_all();
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

    /// Two syncs overlap: the later one's success counts only once the
    /// earlier one has succeeded, and not at all if it failed.
    #[test]
    fn overlapping_syncs_count_in_the_order_they_started() {
        let running = |targets: &[u64]| State {
            committed: 10,
            running: targets
                .iter()
                .map(|&target| Running { target, ended: None })
                .collect(),
            ..State::default()
        };
        let mut s = running(&[5, 10]);
        assert_eq!(s.started(), 10);
        s.ended(10, Ok(()));
        assert_eq!(
            (s.durable, s.running.len()),
            (0, 2),
            "the earlier sync still runs"
        );
        s.ended(5, Ok(()));
        assert_eq!((s.durable, s.running.len()), (10, 0));
        assert_eq!(s.started(), 10);

        let mut s = running(&[5, 10]);
        s.ended(10, Ok(()));
        s.ended(5, Err("fsync of x failed: EIO".into()));
        assert_eq!(s.durable, 0, "nothing after a failed sync counts");
        assert_eq!(s.failed.as_deref(), Some("fsync of x failed: EIO"));

        let mut s = running(&[5, 10]);
        s.ended(5, Ok(()));
        assert_eq!((s.durable, s.running.len()), (5, 1));
    }

    #[test]
    fn a_poisoned_sync_refuses_writes_and_keeps_the_first_reason() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("x.db");
        std::fs::write(dir.path().join("x.db-wal"), b"frames").unwrap();
        let sync = GroupSync::new(&db);
        sync.wait_durable(sync.committed()).unwrap();
        sync.poison("fsync of the database file failed: EIO".into());
        sync.poison("a second reason".into());
        let err = sync.wait_durable(sync.committed()).unwrap_err();
        assert_eq!(err, "fsync of the database file failed: EIO");
        assert_eq!(sync.check().unwrap_err(), err);
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
