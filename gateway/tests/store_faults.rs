//! Store faults and data directory safety: identity marker, exclusive
//! lock, file permissions, damaged and unwritable databases, readiness,
//! and private key file modes at `bashu serve` start.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

use bashu_gateway::store::{
    open_data_dir, NewExchange, SqliteStore, Store, StoreError, StoreFault, StoreOptions, LOCK_FILE,
    MARKER_FILE,
};
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use time::macros::datetime;

fn exchange(n: u32, chain_len: usize) -> NewExchange {
    NewExchange {
        exchange_id: format!("ex-{n}"),
        credential_id: format!("urn:uuid:cred-{n}"),
        credential_digest: format!("{n:064x}"),
        origin: "cq".into(),
        destination: "sc".into(),
        chain: vec!["o".repeat(chain_len), format!("interchange-{n}")],
        accepted_at: datetime!(2026-11-25 01:00 UTC) + time::Duration::seconds(i64::from(n)),
    }
}

fn open(dir: &Path) -> Result<SqliteStore, StoreError> {
    open_data_dir(dir, "cq", StoreOptions::default())
}

fn db(dir: &Path) -> PathBuf {
    dir.join("bashu.db")
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// A data directory that has held a store with `n` exchanges.
fn used_dir(n: u32) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).unwrap();
    for i in 1..=n {
        assert!(store.insert_exchange(exchange(i, 100)).unwrap().is_created());
    }
    store.checkpoint_truncate().unwrap();
    dir
}

// --- identity marker ---------------------------------------------------------

#[test]
fn first_start_writes_marker_and_identity_and_reopens() {
    let dir = used_dir(3);
    let marker: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join(MARKER_FILE)).unwrap()).unwrap();
    assert_eq!(marker["member"], "cq");
    let id = marker["storeId"].as_str().unwrap().to_owned();
    assert_eq!(uuid::Uuid::parse_str(&id).unwrap().get_version_num(), 4);

    let again = open(dir.path()).unwrap();
    assert!(again.exchange("ex-3").unwrap().is_some(), "history kept");
    let raw = rusqlite::Connection::open(db(dir.path())).unwrap();
    let stored: String = raw
        .query_row("SELECT store_id FROM store_identity", [], |r| r.get(0))
        .unwrap();
    assert_eq!(stored, id, "the database carries the same identity");
}

#[test]
fn an_empty_database_under_a_marker_is_refused() {
    let dir = used_dir(3);
    // The 0-byte database of the incident: it would open as an empty store.
    std::fs::write(db(dir.path()), b"").unwrap();
    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(dir.path().join(format!("bashu.db{suffix}")));
    }
    let err = open(dir.path()).unwrap_err();
    let StoreError::Identity {
        marker,
        db: named,
        reason,
    } = &err
    else {
        panic!("expected an identity error, got {err}")
    };
    assert_eq!(marker, &dir.path().join(MARKER_FILE));
    assert_eq!(named, &db(dir.path()));
    assert!(reason.contains("empty"), "{reason}");
    let text = err.to_string();
    assert!(text.contains("store-id") && text.contains("bashu.db"), "{text}");
    assert_eq!(
        std::fs::metadata(db(dir.path())).unwrap().len(),
        0,
        "nothing was written"
    );
}

#[test]
fn a_missing_database_under_a_marker_is_refused() {
    let dir = used_dir(1);
    std::fs::remove_file(db(dir.path())).unwrap();
    let err = open(dir.path()).unwrap_err();
    assert!(
        matches!(&err, StoreError::Identity { reason, .. } if reason.contains("missing")),
        "{err}"
    );
    assert!(!db(dir.path()).exists(), "no empty database conjured");
}

#[test]
fn a_foreign_database_is_refused() {
    let ours = used_dir(2);
    let theirs = used_dir(5);
    std::fs::copy(db(theirs.path()), db(ours.path())).unwrap();
    let err = open(ours.path()).unwrap_err();
    assert!(
        matches!(&err, StoreError::Identity { reason, .. } if reason.contains("the database is store")),
        "{err}"
    );

    // A database without any identity (new, or from elsewhere) is refused too.
    let blank = tempfile::tempdir().unwrap();
    drop(SqliteStore::open(&db(blank.path())).unwrap());
    std::fs::copy(db(blank.path()), db(ours.path())).unwrap();
    let err = open(ours.path()).unwrap_err();
    assert!(
        matches!(&err, StoreError::Identity { reason, .. } if reason.contains("no store identity")),
        "{err}"
    );
}

#[test]
fn another_members_store_is_refused_and_a_lost_marker_is_rewritten() {
    let dir = used_dir(1);
    let err = open_data_dir(dir.path(), "sc", StoreOptions::default()).unwrap_err();
    assert!(
        matches!(&err, StoreError::Identity { reason, .. } if reason.contains("member cq")),
        "{err}"
    );

    let marker = dir.path().join(MARKER_FILE);
    let before = std::fs::read(&marker).unwrap();
    std::fs::remove_file(&marker).unwrap();
    let store = open(dir.path()).unwrap();
    assert_eq!(
        std::fs::read(&marker).unwrap(),
        before,
        "rewritten from the database"
    );
    drop(store);
    // Without a marker the member is still checked against the database.
    std::fs::remove_file(&marker).unwrap();
    assert!(matches!(
        open_data_dir(dir.path(), "sc", StoreOptions::default()),
        Err(StoreError::Identity { .. })
    ));
}

#[test]
fn an_existing_store_without_identity_is_adopted() {
    // A store written before markers existed keeps its history.
    let dir = tempfile::tempdir().unwrap();
    let legacy = SqliteStore::open(&db(dir.path())).unwrap();
    legacy.insert_exchange(exchange(1, 10)).unwrap();
    drop(legacy);
    let store = open(dir.path()).unwrap();
    assert!(store.exchange("ex-1").unwrap().is_some());
    assert!(dir.path().join(MARKER_FILE).is_file());
}

// --- lock --------------------------------------------------------------------

#[test]
fn a_second_open_of_the_same_directory_is_refused_until_the_first_closes() {
    let dir = tempfile::tempdir().unwrap();
    let first = open(dir.path()).unwrap();
    let err = open(dir.path()).unwrap_err();
    let StoreError::Locked { lock, holder } = &err else {
        panic!("expected Locked, got {err}")
    };
    assert_eq!(lock, &dir.path().join(LOCK_FILE));
    assert_eq!(*holder, Some(std::process::id()));
    let text = err.to_string();
    assert!(text.contains(&lock.display().to_string()), "{text}");
    assert!(text.contains(&std::process::id().to_string()), "{text}");

    drop(first);
    open(dir.path()).unwrap();
}

// --- permissions ------------------------------------------------------------

#[cfg(unix)]
#[test]
fn store_files_are_0600_and_the_directory_0700_even_when_precreated_open() {
    use std::os::unix::fs::PermissionsExt;
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("data");
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    // A database left world-readable by an older version is tightened too.
    {
        let legacy = SqliteStore::open(&db(&dir)).unwrap();
        legacy.insert_exchange(exchange(1, 10)).unwrap();
    }
    std::fs::set_permissions(db(&dir), std::fs::Permissions::from_mode(0o644)).unwrap();

    let store = open(&dir).unwrap();
    store.insert_exchange(exchange(2, 10)).unwrap();
    assert_eq!(mode(&dir), 0o700);
    for name in ["bashu.db", "bashu.db-wal", "bashu.db-shm", MARKER_FILE, LOCK_FILE] {
        let path = dir.join(name);
        assert!(path.exists(), "{name} missing");
        assert_eq!(mode(&path), 0o600, "{name}");
    }
}

// --- damaged and unwritable databases ------------------------------------------

#[test]
fn a_damaged_database_is_refused_at_open() {
    let dir = used_dir(200);
    let path = db(dir.path());
    let len = std::fs::metadata(&path).unwrap().len();
    assert!(len > 16 * 4096, "store big enough to damage: {len}");
    // Overwrite some pages past the header, as the incident's disk did.
    let mut f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    for page in [3_u64, 7, 11] {
        f.seek(SeekFrom::Start(page * 4096)).unwrap();
        f.write_all(&[0xA5; 4096]).unwrap();
    }
    drop(f);
    let err = open(dir.path()).unwrap_err();
    let StoreError::Damaged { path: named, detail } = &err else {
        panic!("expected Damaged, got {err}")
    };
    assert_eq!(named, &path);
    assert!(!detail.is_empty());
}

#[test]
fn a_write_past_the_size_cap_is_a_typed_disk_full_fault() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).unwrap();
    store.insert_exchange(exchange(1, 100)).unwrap();
    let pages: i64 = rusqlite::Connection::open(db(dir.path()))
        .unwrap()
        .query_row("PRAGMA page_count", [], |r| r.get(0))
        .unwrap();
    store.set_max_pages(u64::try_from(pages).unwrap()).unwrap();
    let err = (2..50)
        .find_map(|n| store.insert_exchange(exchange(n, 20_000)).err())
        .expect("the cap must be reached");
    assert!(
        matches!(&err, StoreError::Fault { fault: StoreFault::DiskFull, path, .. } if path == &db(dir.path())),
        "{err}"
    );
    assert!(err.is_fault());
    // Reads go on.
    assert!(store.exchange("ex-1").unwrap().is_some());
}

#[test]
fn readiness_turns_false_when_the_store_cannot_commit() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).unwrap();
    store.ping().unwrap();
    // The WAL disappears under the running store (a wiped volume): SQLite
    // still writes to its open descriptor, but the commit cannot be made
    // durable. Every later write fails, and so must readiness; a plain
    // `SELECT 1` would still succeed.
    std::fs::remove_file(dir.path().join("bashu.db-wal")).unwrap();
    let write = store.insert_exchange(exchange(1, 10)).unwrap_err();
    assert!(matches!(write, StoreError::Durability { .. }), "{write}");
    let ready = store.ping().unwrap_err();
    assert!(matches!(ready, StoreError::Durability { .. }), "{ready}");
    assert!(store.insert_exchange(exchange(2, 10)).is_err(), "stays refused");
}

#[cfg(unix)]
#[test]
fn a_read_only_database_file_is_refused_at_start() {
    use std::os::unix::fs::PermissionsExt;
    let dir = used_dir(1);
    std::fs::set_permissions(db(dir.path()), std::fs::Permissions::from_mode(0o444)).unwrap();
    if std::fs::OpenOptions::new()
        .write(true)
        .open(db(dir.path()))
        .is_ok()
    {
        // Root (CAP_DAC_OVERRIDE) writes through mode 0444: nothing to detect.
        eprintln!("skipped: this process can write a 0444 file");
        return;
    }
    let err = open(dir.path()).unwrap_err();
    // SQLite reports a read-only file as read-only, or (without a writable
    // -shm) as unopenable; either way the start is refused naming the file.
    assert!(
        matches!(
            &err,
            StoreError::Fault {
                fault: StoreFault::ReadOnly | StoreFault::Io,
                ..
            } | StoreError::Open { .. }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("bashu.db"), "{err}");
    assert_eq!(
        mode(&db(dir.path())),
        0o400,
        "not made writable behind the operator's back"
    );
}

// --- WAL bound ---------------------------------------------------------------

fn wal_len(dir: &Path) -> u64 {
    std::fs::metadata(dir.join("bashu.db-wal"))
        .map(|m| m.len())
        .unwrap_or(0)
}

/// The documented bound (docs/operations.md, "WAL bound"): at most 16 MiB
/// in normal operation, which is the writer's backstop checkpoint at four
/// times the thread's 1,000-page bound. The checkpoint thread normally
/// keeps the WAL near 4 MiB, but when a loaded machine delays it the WAL
/// may pass the 8 MiB `journal_size_limit` (that limit is where a reset
/// truncates the file, not a bound on growth); CI once saw 8.5 MB. The
/// burst writes about 39 MB of WAL frames, so a store with neither
/// checkpoint breaks the bound (checked: its WAL reaches 39 MB).
#[test]
fn the_wal_stays_bounded_and_idle_maintenance_truncates_it() {
    let dir = tempfile::tempdir().unwrap();
    let options = StoreOptions::default();
    let store = open_data_dir(dir.path(), "cq", options).unwrap();
    let mut largest = 0;
    for n in 1..=600 {
        store.insert_exchange(exchange(n, 12_000)).unwrap();
        largest = largest.max(wal_len(dir.path()));
    }
    let bound = 16 * 1024 * 1024;
    assert!(largest <= bound, "WAL grew to {largest} bytes, bound {bound}");
    // Idle maintenance: the first call sees the writes, the second (no
    // writes since) checkpoints and truncates the WAL to nothing.
    store.maintain().unwrap();
    store.maintain().unwrap();
    assert_eq!(wal_len(dir.path()), 0);
    assert_eq!(store.list_exchanges(None, 1000).unwrap().len(), 600);
}

/// Salt-1 and salt-2 of the WAL header: SQLite writes new ones whenever a
/// writer starts the WAL over from its beginning.
fn wal_salts(dir: &Path) -> [u8; 8] {
    let header = std::fs::read(dir.join("bashu.db-wal")).unwrap();
    header[16..24].try_into().unwrap()
}

/// The checkpoint thread, not a commit, copies the WAL back and lets the
/// writer start it over: a burst longer than the bound but shorter than the
/// writer's own automatic checkpoint (4 x the bound) reaches the database
/// file and the WAL restarts, with no write ever waiting for a checkpoint.
#[test]
fn the_checkpoint_thread_copies_the_wal_back_and_the_writer_restarts_it() {
    let dir = tempfile::tempdir().unwrap();
    let options = StoreOptions {
        wal_autocheckpoint_pages: 40,
        ..StoreOptions::default()
    };
    let store = open_data_dir(dir.path(), "cq", options).unwrap();
    let frame = 4096 + 24;
    let frames = |dir: &Path| wal_len(dir).saturating_sub(32) / frame;
    // Let the migrations' pages settle first, so the burst below is all
    // that is left in the WAL.
    store.maintain().unwrap();
    store.maintain().unwrap();
    assert_eq!(wal_len(dir.path()), 0);
    let db_len = || std::fs::metadata(dir.path().join("bashu.db")).unwrap().len();
    let before = db_len();

    let mut n = 0;
    while frames(dir.path()) < 80 {
        n += 1;
        store.insert_exchange(exchange(n, 6_000)).unwrap();
    }
    assert!(
        frames(dir.path()) < 160,
        "the burst stays under the writer's backstop"
    );
    let salts = wal_salts(dir.path());

    let deadline = Instant::now() + Duration::from_secs(20);
    while db_len() == before {
        assert!(
            Instant::now() < deadline,
            "no checkpoint reached the database file"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // The writer finishes the checkpoint; its next write starts the WAL over.
    while wal_salts(dir.path()) == salts {
        assert!(Instant::now() < deadline, "the WAL was never started over");
        n += 1;
        store.insert_exchange(exchange(n, 100)).unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(store.list_exchanges(None, 1000).unwrap().len(), n as usize);
    assert_eq!(store.audit_verify().unwrap().entries, u64::from(n));
}

// --- `bashu serve` start checks ------------------------------------------------

fn bashu() -> Command {
    Command::new(env!("CARGO_BIN_EXE_bashu"))
}

fn dev_federation() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let out = bashu()
        .args(["dev", "init", "--dir"])
        .arg(dir.path())
        .args(["--members", "cq,sc"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    dir
}

/// Kills the child on drop, so a failing test leaves no gateway behind.
struct Serving(Child);

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `bashu serve` for `member` under `umask` until it says it listens.
fn serve(fed: &Path, member: &str, umask: &str) -> Serving {
    let config = fed.join(member).join("gateway.toml");
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!("umask {umask}; exec \"$0\" serve --config \"$1\""))
        .arg(env!("CARGO_BIN_EXE_bashu"))
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("listening on") {
                let _ = tx.send(());
            }
        }
    });
    let serving = Serving(child);
    rx.recv_timeout(Duration::from_secs(60))
        .expect("bashu serve did not start listening");
    serving
}

/// Runs `bashu serve` expecting it to refuse to start; returns its stderr.
fn serve_refused(fed: &Path, member: &str) -> String {
    let mut child = bashu()
        .args(["serve", "--config"])
        .arg(fed.join(member).join("gateway.toml"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("bashu serve started instead of refusing");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(!status.success(), "{err}");
    err
}

#[cfg(unix)]
#[test]
fn serve_under_umask_000_keeps_store_files_private_and_a_second_serve_is_refused() {
    let fed = dev_federation();
    let first = serve(fed.path(), "cq", "000");
    let data = fed.path().join("cq").join("data");
    assert_eq!(mode(&data), 0o700);
    for name in ["bashu.db", "bashu.db-wal", "bashu.db-shm", MARKER_FILE, LOCK_FILE] {
        assert_eq!(mode(&data.join(name)), 0o600, "{name}");
    }

    let err = serve_refused(fed.path(), "cq");
    let lock = data.join(LOCK_FILE);
    assert!(err.contains(&lock.display().to_string()), "{err}");
    assert!(
        err.contains(&first.0.id().to_string()),
        "names the holder pid: {err}"
    );
    drop(first);
}

#[cfg(unix)]
#[test]
fn serve_refuses_a_private_key_readable_by_others_naming_it() {
    use std::os::unix::fs::PermissionsExt;
    let fed = dev_federation();
    let key = fed.path().join("cq").join("gateway.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = serve_refused(fed.path(), "cq");
    assert!(err.contains(&key.display().to_string()), "{err}");
    assert!(err.contains("0644"), "{err}");
    assert!(
        !fed.path().join("cq").join("data").join("bashu.db").exists(),
        "refused before touching the store"
    );
}
