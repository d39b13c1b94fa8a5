//! What only the SQLite store has: durability across reopen, migrations,
//! opening rules, and the audit chain against edits made with SQL behind
//! the store's back. The backend-neutral behaviour (idempotency, ordering,
//! transitions, inbox cursors, leases, concurrency) is the store contract,
//! run on SQLite by `store_contract_sqlite.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

use bashu_gateway::store::{Inserted, Lease, NewExchange, NewInboxItem, SqliteStore, Store, StoreError};
use rusqlite::{params, Connection};
use serde_json::json;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use time::macros::datetime;
use time::{Duration, OffsetDateTime};

const T0: OffsetDateTime = datetime!(2026-11-25 01:00:00.123456789 UTC);

fn digest(s: &str) -> String {
    Sha256::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn new_exchange(n: u32, destination: &str) -> NewExchange {
    let original = format!("original-jws-{n}");
    NewExchange {
        exchange_id: format!("ex-{n}"),
        credential_id: format!("urn:uuid:cred-{n}"),
        credential_digest: digest(&original),
        origin: "cq".into(),
        destination: destination.into(),
        chain: vec![original, format!("interchange-jws-{n}")],
        accepted_at: T0 + Duration::milliseconds(i64::from(n)),
    }
}

fn new_inbox(n: u32) -> NewInboxItem {
    NewInboxItem {
        exchange_id: format!("in-{n}"),
        origin: "sc".into(),
        credential_id: format!("urn:uuid:orig-{n}"),
        received_at: T0 + Duration::seconds(i64::from(n)),
        chain: vec![format!("orig-{n}"), format!("wfs-{n}"), format!("home-{n}")],
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bashu.db");
        Self { _dir: dir, path }
    }

    fn open(&self) -> SqliteStore {
        SqliteStore::open(&self.path).unwrap()
    }

    fn raw(&self) -> Connection {
        Connection::open(&self.path).unwrap()
    }
}

/// A delivery lease for the destination of `exchange_id` ("sc" if unknown).
fn lease_for(store: &SqliteStore, exchange_id: &str) -> Lease {
    let destination = store
        .exchange(exchange_id)
        .unwrap()
        .map_or_else(|| "sc".to_owned(), |e| e.destination);
    store
        .acquire_lease(&destination, "test", std::time::Duration::from_secs(3600), T0)
        .unwrap()
        .unwrap()
}

fn created<T: std::fmt::Debug>(outcome: Inserted<T>) -> T {
    match outcome {
        Inserted::Created(t) => t,
        other => panic!("expected Created, got {other:?}"),
    }
}

#[test]
fn reopen_keeps_everything_and_migrations_are_idempotent() {
    let fx = Fixture::new();
    let (exchanges, inbox, report, version) = {
        let store = fx.open();
        for n in 1..=4 {
            created(store.insert_exchange(new_exchange(n, "sc")).unwrap());
            created(store.insert_inbox(new_inbox(n)).unwrap());
        }
        store
            .record_attempt_failure(
                &lease_for(&store, "ex-1"),
                "ex-1",
                "timeout",
                T0,
                T0 + Duration::seconds(1),
            )
            .unwrap();
        store
            .mark_delivered(&lease_for(&store, "ex-2"), "ex-2", T0)
            .unwrap();
        store
            .mark_rejected(&lease_for(&store, "ex-3"), "ex-3", &json!({"type": "x"}), T0)
            .unwrap();
        store.ack(2, T0).unwrap();
        (
            store.list_exchanges(None, 100).unwrap(),
            store.inbox_page(Some(0), 100).unwrap(),
            store.audit_verify().unwrap(),
            store.schema_version().unwrap(),
        )
    };
    assert!(version >= 2, "every migration applied: {version}");
    for _ in 0..2 {
        let store = fx.open();
        assert_eq!(store.schema_version().unwrap(), version);
        assert_eq!(store.list_exchanges(None, 100).unwrap(), exchanges);
        assert_eq!(store.inbox_page(Some(0), 100).unwrap(), inbox);
        assert_eq!(store.acked_up_to().unwrap(), 2);
        assert_eq!(store.audit_verify().unwrap(), report);
        assert_eq!(
            store
                .pending_outbox("sc", 10)
                .unwrap()
                .iter()
                .map(|i| i.exchange_id.as_str())
                .collect::<Vec<_>>(),
            ["ex-1", "ex-4"]
        );
    }
    // Appending after a reopen continues the same chain.
    let store = fx.open();
    created(store.insert_inbox(new_inbox(9)).unwrap());
    assert_eq!(store.audit_verify().unwrap().entries, report.entries + 1);
    store.ping().unwrap();
}

#[test]
fn open_refuses_newer_schema_and_missing_files() {
    let fx = Fixture::new();
    let err = SqliteStore::open_existing(&fx.path).unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Open {
                backend: "SQLite",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().starts_with("cannot open SQLite store"), "{err}");
    drop(fx.open());
    SqliteStore::open_existing(&fx.path).unwrap();
    fx.raw().pragma_update(None, "user_version", 99).unwrap();
    assert!(matches!(
        SqliteStore::open(&fx.path),
        Err(StoreError::SchemaTooNew { found: 99, .. })
    ));
}

/// Leases are durable: after a restart the fencing token continues, so a
/// settle with a lease from before a takeover is still refused.
#[test]
fn lease_tokens_survive_reopen() {
    let fx = Fixture::new();
    let ttl = std::time::Duration::from_secs(5);
    let first = {
        let store = fx.open();
        assert_eq!(
            store.schema_version().unwrap(),
            i64::try_from(SqliteStore::SCHEMA_VERSION).unwrap()
        );
        created(store.insert_exchange(new_exchange(1, "sc")).unwrap());
        store.acquire_lease("sc", "a", ttl, T0).unwrap().unwrap()
    };
    let store = fx.open();
    // Still live after the restart: another holder waits.
    assert_eq!(store.acquire_lease("sc", "b", ttl, T0).unwrap(), None);
    let later = first.expires_at;
    let taken = store.acquire_lease("sc", "b", ttl, later).unwrap().unwrap();
    assert_eq!(taken.token, first.token + 1);
    assert!(matches!(
        store.mark_delivered(&first, "ex-1", later),
        Err(StoreError::LeaseLost { .. })
    ));
    let raw = fx.raw();
    let (holder, token): (String, i64) = raw
        .query_row(
            "SELECT holder, token FROM delivery_leases WHERE destination = 'sc'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((holder.as_str(), token), ("b", 2));
}

/// The row digest an audit entry records is the documented encoding of the
/// stored row (table name, then per column a type tag, an 8-byte length and
/// the bytes): computed here independently from the raw row, so moving the
/// hashing into `store::domain` cannot have changed what old stores hold.
#[test]
fn audit_row_digest_is_the_documented_encoding_of_the_raw_row() {
    fn put(h: &mut Sha256, tag: u8, bytes: &[u8]) {
        h.update([tag]);
        h.update((bytes.len() as u64).to_be_bytes());
        h.update(bytes);
    }
    let fx = Fixture::new();
    let store = fx.open();
    created(store.insert_exchange(new_exchange(1, "sc")).unwrap());
    store
        .mark_rejected(&lease_for(&store, "ex-1"), "ex-1", &json!({"type": "x"}), T0)
        .unwrap();
    created(store.insert_inbox(new_inbox(1)).unwrap());
    let raw = fx.raw();
    // An exchange's chain has a table of its own (migration 6) and counts
    // as a column of its row.
    for (table, columns, from, entry) in [
        (
            "exchanges",
            "seq, exchange_id, origin, credential_id, credential_digest, destination, chain, status,
             accepted_at, forwarded_at, settled_at, updated_at, attempts, last_error, problem",
            "exchanges JOIN exchange_chains ON exchange_seq = seq",
            2,
        ),
        (
            "inbox",
            "cursor, exchange_id, origin, credential_id, received_at, chain",
            "inbox",
            3,
        ),
    ] {
        let n = columns.split(',').count();
        let expected: String = raw
            .query_row(&format!("SELECT {columns} FROM {from}"), [], |r| {
                let mut h = Sha256::new();
                put(&mut h, b't', table.as_bytes());
                for i in 0..n {
                    use rusqlite::types::ValueRef;
                    match r.get_ref(i)? {
                        ValueRef::Null => put(&mut h, b'n', &[]),
                        ValueRef::Integer(v) => put(&mut h, b'i', &v.to_be_bytes()),
                        ValueRef::Real(v) => put(&mut h, b'r', &v.to_be_bytes()),
                        ValueRef::Text(t) => put(&mut h, b's', t),
                        ValueRef::Blob(b) => put(&mut h, b'b', b),
                    }
                }
                Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
            })
            .unwrap();
        let detail: String = raw
            .query_row("SELECT detail FROM audit WHERE seq = ?1", [entry], |r| r.get(0))
            .unwrap();
        let detail: serde_json::Value = serde_json::from_str(&detail).unwrap();
        assert_eq!(detail["rowDigest"], expected.as_str(), "{table}");
    }
}

// --- audit tampering --------------------------------------------------------

/// A store with 6 audit entries, dropped; returns its fixture.
fn audited() -> Fixture {
    let fx = Fixture::new();
    let store = fx.open();
    for n in 1..=3 {
        created(store.insert_exchange(new_exchange(n, "sc")).unwrap());
    }
    store
        .mark_delivered(&lease_for(&store, "ex-1"), "ex-1", T0)
        .unwrap();
    created(store.insert_inbox(new_inbox(1)).unwrap());
    store.ack(1, T0).unwrap();
    assert_eq!(store.audit_verify().unwrap().entries, 6);
    fx
}

fn broken_at(path: &Path) -> (u64, String) {
    match SqliteStore::open(path).unwrap().audit_verify() {
        Err(StoreError::AuditBroken { seq, reason }) => (seq, reason),
        other => panic!("expected AuditBroken, got {other:?}"),
    }
}

#[test]
fn audit_detects_an_edited_detail() {
    let fx = audited();
    let changed = fx
        .raw()
        .execute(
            "UPDATE audit SET detail = ?1 WHERE seq = 4",
            params![r#"{"from":"forwarded"}"#],
        )
        .unwrap();
    assert_eq!(changed, 1);
    assert_eq!(broken_at(&fx.path).0, 4);
}

#[test]
fn audit_detects_an_edited_timestamp() {
    let fx = audited();
    fx.raw()
        .execute("UPDATE audit SET at = at + 1 WHERE seq = 2", [])
        .unwrap();
    assert_eq!(broken_at(&fx.path).0, 2);
}

#[test]
fn audit_detects_a_deleted_row() {
    let fx = audited();
    fx.raw().execute("DELETE FROM audit WHERE seq = 3", []).unwrap();
    let (seq, reason) = broken_at(&fx.path);
    assert_eq!(seq, 3, "{reason}");
}

#[test]
fn audit_detects_truncation_of_the_tail() {
    let fx = audited();
    fx.raw().execute("DELETE FROM audit WHERE seq = 6", []).unwrap();
    assert_eq!(broken_at(&fx.path).0, 6);
}

#[test]
fn audit_detects_swapped_hashes() {
    let fx = audited();
    let raw = fx.raw();
    let h2: String = raw
        .query_row("SELECT hash FROM audit WHERE seq = 2", [], |r| r.get(0))
        .unwrap();
    let h3: String = raw
        .query_row("SELECT hash FROM audit WHERE seq = 3", [], |r| r.get(0))
        .unwrap();
    raw.execute("UPDATE audit SET hash = ?1 WHERE seq = 2", params![h3])
        .unwrap();
    raw.execute("UPDATE audit SET hash = ?1 WHERE seq = 3", params![h2])
        .unwrap();
    assert_eq!(broken_at(&fx.path).0, 2);
}

#[test]
fn audit_detects_reordered_rows() {
    let fx = audited();
    let raw = fx.raw();
    raw.execute_batch(
        "UPDATE audit SET seq = 100 WHERE seq = 2;
         UPDATE audit SET seq = 2 WHERE seq = 3;
         UPDATE audit SET seq = 3 WHERE seq = 100;",
    )
    .unwrap();
    assert_eq!(broken_at(&fx.path).0, 2);
}
