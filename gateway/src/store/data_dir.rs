//! Opening a gateway's data directory safely.
//!
//! Four guards sit between `bashu serve` and the SQLite file:
//!
//! - **One gateway per directory.** An exclusive `flock` on `<dir>/lock`,
//!   held while the store is open, refuses a second gateway (two writers
//!   group-committing the same WAL would each believe their own fsyncs).
//!   The kernel drops the lock when the process dies, even by `kill -9`, so
//!   there is never a stale lock to clean up. The holder's pid is written
//!   into the file for the error message.
//! - **Identity.** The first start writes a random store id and the member
//!   into the database *and* into `<dir>/store-id`. Later starts compare the
//!   two: a marker with a missing, empty (0-byte) or different database is
//!   refused, instead of silently starting an empty store and losing the
//!   history (and the inbox cursors credit banks rely on).
//! - **Permissions.** The directory is made 0700 and every store file
//!   (database, `-wal`, `-shm`, marker, lock) 0600, set explicitly after
//!   creation, so the umask cannot widen them.
//! - **Health at start.** `PRAGMA quick_check` (in [`SqliteStore`]'s open)
//!   and one durable probe write: a damaged or unwritable store fails the
//!   start with the file named rather than failing every request later.

use super::sqlite::{SqliteStore, StoreOptions};
use super::{db_path, Store, StoreError};
use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

/// The lock file inside the data directory.
pub const LOCK_FILE: &str = "lock";

/// The identity marker inside the data directory.
pub const MARKER_FILE: &str = "store-id";

/// Mode of the data directory.
const DIR_MODE: u32 = 0o700;
/// Mode of every file in it.
const FILE_MODE: u32 = 0o600;

/// `<dir>/store-id`: which store lives in this directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Marker {
    store_id: String,
    member: String,
}

/// The held data directory lock; released when dropped (or the process ends).
#[derive(Debug)]
pub(crate) struct DirLock {
    _file: File,
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::DataDir {
        path: path.to_owned(),
        source,
    }
}

/// Sets `mode` exactly, whatever the umask did at creation.
fn set_mode(path: &Path, mode: u32) -> Result<(), StoreError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(io_error(path))
    }
    #[cfg(not(unix))]
    {
        let _ = (path, mode);
        Ok(())
    }
}

/// Takes every permission away from group and others, keeping the
/// owner's: an existing database the operator made read-only stays
/// read-only (and is then refused as such), it is not made writable.
fn restrict(path: &Path) -> Result<(), StoreError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)
            .map_err(io_error(path))?
            .permissions()
            .mode();
        if mode & 0o7077 != 0 {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode & 0o700))
                .map_err(io_error(path))?;
        }
        Ok(())
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        Ok(())
    }
}

/// Opens `path` for writing, creating it 0600 if missing (`create_new`
/// only when `exclusive`).
fn open_private(path: &Path, exclusive: bool) -> Result<File, StoreError> {
    let mut opts = OpenOptions::new();
    opts.read(true).write(true);
    if exclusive {
        opts.create_new(true);
    } else {
        opts.create(true);
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(FILE_MODE);
    }
    let file = opts.open(path).map_err(io_error(path))?;
    set_mode(path, FILE_MODE)?;
    Ok(file)
}

impl DirLock {
    /// Takes the exclusive lock on `<dir>/lock` or says who holds it.
    pub(crate) fn acquire(dir: &Path) -> Result<Self, StoreError> {
        let path = dir.join(LOCK_FILE);
        let mut file = open_private(&path, false)?;
        #[cfg(unix)]
        {
            use rustix::fs::{flock, FlockOperation};
            if let Err(errno) = flock(&file, FlockOperation::NonBlockingLockExclusive) {
                if errno == rustix::io::Errno::WOULDBLOCK {
                    let mut text = String::new();
                    let holder = file
                        .read_to_string(&mut text)
                        .ok()
                        .and_then(|_| text.trim().parse::<u32>().ok());
                    return Err(StoreError::Locked { lock: path, holder });
                }
                return Err(io_error(&path)(std::io::Error::from(errno)));
            }
        }
        // Ours now: record who holds it, for the next one's error message.
        file.set_len(0).map_err(io_error(&path))?;
        file.rewind().map_err(io_error(&path))?;
        writeln!(file, "{}", std::process::id()).map_err(io_error(&path))?;
        Ok(Self { _file: file })
    }
}

/// What the database file looked like before it was opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DbFile {
    Missing,
    Empty,
    Present,
}

fn file_len(path: &Path) -> Result<Option<u64>, StoreError> {
    match std::fs::metadata(path) {
        Ok(m) => Ok(Some(m.len())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_error(path)(e)),
    }
}

/// A 0-byte database is empty only if no WAL holds its pages either
/// (SQLite recovers those into the database on open).
fn db_file(db: &Path) -> Result<DbFile, StoreError> {
    let mut wal = db.as_os_str().to_owned();
    wal.push("-wal");
    match file_len(db)? {
        None => Ok(DbFile::Missing),
        Some(0) if file_len(Path::new(&wal))?.unwrap_or(0) == 0 => Ok(DbFile::Empty),
        Some(_) => Ok(DbFile::Present),
    }
}

fn read_marker(path: &Path) -> Result<Option<Marker>, StoreError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_error(path)(e)),
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| StoreError::DataDir {
            path: path.to_owned(),
            source: std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("not a store marker: {e}"),
            ),
        })
}

fn write_marker(path: &Path, marker: &Marker) -> Result<(), StoreError> {
    let mut text = serde_json::to_vec_pretty(marker).map_err(|e| StoreError::DataDir {
        path: path.to_owned(),
        source: std::io::Error::other(e),
    })?;
    text.push(b'\n');
    crate::jose::atomic_file::write(path, &text, FILE_MODE).map_err(io_error(path))?;
    set_mode(path, FILE_MODE)
}

/// Closes the database and its SQLite side files (those that exist) to
/// group and others; a file created here is already exactly 0600.
fn tighten_db_files(db: &Path) -> Result<(), StoreError> {
    for suffix in ["", "-wal", "-shm"] {
        let mut name = db.as_os_str().to_owned();
        name.push(suffix);
        let path = PathBuf::from(name);
        if path.exists() {
            restrict(&path)?;
        }
    }
    Ok(())
}

/// Opens the store of the gateway of `member` in `dir` (created if
/// missing) with every guard of the module docs. The returned store holds
/// the directory lock until it is dropped.
pub fn open_data_dir(dir: &Path, member: &str, options: StoreOptions) -> Result<SqliteStore, StoreError> {
    if dir.exists() {
        restrict(dir)?;
    } else {
        std::fs::create_dir_all(dir).map_err(io_error(dir))?;
        set_mode(dir, DIR_MODE)?;
    }
    let lock = DirLock::acquire(dir)?;

    let db = db_path(dir);
    let marker_path = dir.join(MARKER_FILE);
    let marker = read_marker(&marker_path)?;
    let identity_error = |reason: String| StoreError::Identity {
        marker: marker_path.clone(),
        db: db.clone(),
        reason,
    };
    let before = db_file(&db)?;
    if let Some(m) = &marker {
        match before {
            DbFile::Missing => {
                return Err(identity_error(format!(
                    "the marker says store {} of member {} lives here, but the database is missing",
                    m.store_id, m.member
                )))
            }
            DbFile::Empty => {
                return Err(identity_error(format!(
                    "the marker says store {} of member {} lives here, but the database is empty (0 bytes)",
                    m.store_id, m.member
                )))
            }
            DbFile::Present => {}
        }
    }
    if before == DbFile::Missing {
        // Created here, 0600 from the first byte; SQLite gives its -wal
        // and -shm files the database file's mode.
        drop(open_private(&db, true)?);
    }
    tighten_db_files(&db)?;

    let store = SqliteStore::open_with_options(&db, options)?;
    // One durable write before serving: a read-only file or mount, a full
    // disk or a failing device stops the start here, naming the file.
    store.ping()?;
    tighten_db_files(&db)?;

    match (marker, store.identity()?) {
        (Some(m), Some((id, owner))) => {
            if id != m.store_id {
                return Err(identity_error(format!(
                    "the database is store {id}, but the marker says store {} lives here",
                    m.store_id
                )));
            }
            check_member(&owner, member).map_err(identity_error)?;
        }
        (Some(m), None) => {
            return Err(identity_error(format!(
                "the marker says store {} lives here, but the database has no store identity \
                 (a new or foreign database)",
                m.store_id
            )))
        }
        (None, Some((id, owner))) => {
            // The database is the history; the marker only guards it. A
            // lost marker (or a crash between the two first writes) is
            // rewritten from the database.
            check_member(&owner, member).map_err(identity_error)?;
            tracing::warn!(marker = %marker_path.display(), store_id = %id, "store marker missing; rewriting it from the database");
            write_marker(
                &marker_path,
                &Marker {
                    store_id: id,
                    member: owner,
                },
            )?;
        }
        (None, None) => {
            let id = uuid::Uuid::new_v4().to_string();
            store.set_identity(&id, member, time::OffsetDateTime::now_utc())?;
            write_marker(
                &marker_path,
                &Marker {
                    store_id: id.clone(),
                    member: member.to_owned(),
                },
            )?;
            if before == DbFile::Present {
                tracing::info!(store_id = %id, "existing store given an identity marker");
            } else {
                tracing::info!(store_id = %id, db = %db.display(), "new store created");
            }
        }
    }
    Ok(store.with_lock(lock))
}

fn check_member(stored: &str, configured: &str) -> Result<(), String> {
    if stored == configured {
        Ok(())
    } else {
        Err(format!(
            "the store belongs to member {stored}, but this gateway is configured as member {configured}"
        ))
    }
}

// --- for stores that keep their database elsewhere (PostgreSQL) -------------

/// Creates `dir` (0700) or takes group and other access away from it, and
/// takes its lock: one gateway process per data directory, whatever the
/// backend, since the directory still holds per-process state.
pub(super) fn lock_dir(dir: &Path) -> Result<DirLock, StoreError> {
    if dir.exists() {
        restrict(dir)?;
    } else {
        std::fs::create_dir_all(dir).map_err(io_error(dir))?;
        set_mode(dir, DIR_MODE)?;
    }
    DirLock::acquire(dir)
}

/// `(store id, member)` of the marker in `dir`, if there is one.
pub(super) fn read_dir_marker(dir: &Path) -> Result<Option<(String, String)>, StoreError> {
    Ok(read_marker(&dir.join(MARKER_FILE))?.map(|m| (m.store_id, m.member)))
}

/// Writes the marker of `dir` (atomically, 0600).
pub(super) fn write_dir_marker(dir: &Path, store_id: &str, member: &str) -> Result<(), StoreError> {
    write_marker(
        &dir.join(MARKER_FILE),
        &Marker {
            store_id: store_id.to_owned(),
            member: member.to_owned(),
        },
    )
}

/// `Err(reason)` unless the store's member is the configured one.
pub(super) fn same_member(stored: &str, configured: &str) -> Result<(), String> {
    check_member(stored, configured)
}
