//! SQLite store: idempotency, ordering, transitions, inbox cursors,
//! concurrency, durability across reopen, migrations and the audit chain.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

use bashu_gateway::store::{
    ExchangeState, ExchangeStatus, Inserted, Lease, NewExchange, NewInboxItem, SqliteStore, Store, StoreError,
};
use rusqlite::{params, Connection};
use serde_json::json;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
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
fn insert_exchange_is_idempotent_by_origin_and_credential() {
    let fx = Fixture::new();
    let store = fx.open();
    let first = created(store.insert_exchange(new_exchange(1, "sc")).unwrap());
    assert_eq!(first.exchange_id, "ex-1");
    assert_eq!(first.status(), ExchangeStatus::Accepted);
    assert_eq!(
        first.accepted_at,
        T0 + Duration::milliseconds(1),
        "nanosecond precision kept"
    );

    // A replay carries a freshly generated exchange id; the stored one wins.
    let replay = NewExchange {
        exchange_id: "ex-replay".into(),
        accepted_at: T0 + Duration::hours(1),
        ..new_exchange(1, "sc")
    };
    match store.insert_exchange(replay).unwrap() {
        Inserted::Existing(ex) => assert_eq!(ex, first),
        other => panic!("expected Existing, got {other:?}"),
    }

    let different_bytes = NewExchange {
        exchange_id: "ex-other".into(),
        credential_digest: digest("tampered"),
        ..new_exchange(1, "sc")
    };
    assert_eq!(
        store.insert_exchange(different_bytes).unwrap(),
        Inserted::Conflict {
            existing_exchange_id: "ex-1".into()
        }
    );

    // Same credential id from another origin is a different exchange.
    let other_origin = NewExchange {
        exchange_id: "ex-gz".into(),
        origin: "gz".into(),
        ..new_exchange(1, "sc")
    };
    assert!(store.insert_exchange(other_origin).unwrap().is_created());

    assert!(store.exchange("ex-replay").unwrap().is_none());
    assert!(store.exchange("ex-other").unwrap().is_none());
    assert_eq!(
        store
            .find_by_credential("cq", "urn:uuid:cred-1")
            .unwrap()
            .map(|e| e.exchange_id),
        Some("ex-1".to_owned())
    );
    assert_eq!(store.outbox_depths().unwrap().get("sc"), Some(&2));
    // Two creations, two audit entries: replays and conflicts change nothing.
    assert_eq!(store.audit_verify().unwrap().entries, 2);
}

#[test]
fn insert_exchange_validates_input() {
    let fx = Fixture::new();
    let store = fx.open();
    let bad_digest = NewExchange {
        credential_digest: "ABC".into(),
        ..new_exchange(1, "sc")
    };
    assert!(matches!(
        store.insert_exchange(bad_digest),
        Err(StoreError::InvalidInput {
            field: "credential_digest",
            ..
        })
    ));
    let no_chain = NewExchange {
        chain: vec![],
        ..new_exchange(1, "sc")
    };
    assert!(matches!(
        store.insert_exchange(no_chain),
        Err(StoreError::InvalidInput { field: "chain", .. })
    ));
    created(store.insert_exchange(new_exchange(1, "sc")).unwrap());
    let reused_id = NewExchange {
        exchange_id: "ex-1".into(),
        ..new_exchange(2, "sc")
    };
    assert!(matches!(
        store.insert_exchange(reused_id),
        Err(StoreError::InvalidInput {
            field: "exchange_id",
            ..
        })
    ));
}

#[test]
fn outbox_keeps_acceptance_order_per_destination() {
    let fx = Fixture::new();
    let store = fx.open();
    for n in 0..300 {
        let dest = if n % 3 == 0 { "gz" } else { "sc" };
        created(store.insert_exchange(new_exchange(n, dest)).unwrap());
    }
    let sc = store.pending_outbox("sc", 1000).unwrap();
    let expected: Vec<String> = (0..300)
        .filter(|n| n % 3 != 0)
        .map(|n| format!("ex-{n}"))
        .collect();
    assert_eq!(
        sc.iter().map(|i| i.exchange_id.clone()).collect::<Vec<_>>(),
        expected
    );
    assert!(sc.windows(2).all(|w| w[0].seq < w[1].seq));
    assert!(sc.iter().all(|i| i.destination == "sc" && i.attempts == 0));
    assert_eq!(
        sc[0].chain,
        vec!["original-jws-1".to_owned(), "interchange-jws-1".into()]
    );
    assert_eq!(sc[0].next_attempt_at, sc[0].queued_at);

    let head = store.pending_outbox("gz", 5).unwrap();
    assert_eq!(
        head.iter().map(|i| i.exchange_id.as_str()).collect::<Vec<_>>(),
        ["ex-0", "ex-3", "ex-6", "ex-9", "ex-12"]
    );
    let depths = store.outbox_depths().unwrap();
    assert_eq!(depths.get("sc"), Some(&200));
    assert_eq!(depths.get("gz"), Some(&100));

    let listed = store.list_exchanges(None, 10).unwrap();
    assert_eq!(listed.first().map(|e| e.exchange_id.as_str()), Some("ex-0"));
    assert!(listed.windows(2).all(|w| w[0].seq < w[1].seq));
}

#[test]
fn delivery_transitions_update_status_outbox_and_timestamps() {
    let fx = Fixture::new();
    let store = fx.open();
    for n in 1..=3 {
        created(store.insert_exchange(new_exchange(n, "sc")).unwrap());
    }
    let t1 = T0 + Duration::seconds(10);
    let t2 = T0 + Duration::seconds(20);
    store
        .record_attempt_failure(
            &lease_for(&store, "ex-1"),
            "ex-1",
            "connect refused",
            t1,
            t1 + Duration::seconds(5),
        )
        .unwrap();
    let ex = store.exchange("ex-1").unwrap().unwrap();
    assert_eq!(ex.status(), ExchangeStatus::Forwarded);
    assert_eq!((ex.attempts, ex.forwarded_at, ex.updated_at), (1, Some(t1), t1));
    assert_eq!(ex.last_error.as_deref(), Some("connect refused"));
    let head = &store.pending_outbox("sc", 1).unwrap()[0];
    assert_eq!((head.exchange_id.as_str(), head.attempts), ("ex-1", 1));
    assert_eq!(head.next_attempt_at, t1 + Duration::seconds(5));

    store
        .mark_delivered(&lease_for(&store, "ex-1"), "ex-1", t2)
        .unwrap();
    let ex = store.exchange("ex-1").unwrap().unwrap();
    assert_eq!(ex.state, ExchangeState::Delivered { at: t2 });
    assert_eq!((ex.attempts, ex.forwarded_at), (2, Some(t1)));
    assert_eq!(store.pending_outbox("sc", 10).unwrap()[0].exchange_id, "ex-2");
    assert!(matches!(
        store.mark_delivered(&lease_for(&store, "ex-1"), "ex-1", t2),
        Err(StoreError::InvalidTransition {
            from: ExchangeStatus::Delivered,
            to: ExchangeStatus::Delivered,
            ..
        })
    ));
    assert!(matches!(
        store.retry("ex-1", t2),
        Err(StoreError::InvalidTransition { .. })
    ));

    let problem = json!({"type": "urn:bashu:problem:chain-broken", "status": 422, "detail": "digest"});
    store
        .mark_rejected(&lease_for(&store, "ex-2"), "ex-2", &problem, t2)
        .unwrap();
    let ex = store.exchange("ex-2").unwrap().unwrap();
    assert_eq!(ex.problem(), Some(&problem));
    assert_eq!(ex.forwarded_at, Some(t2));
    store.dead_letter(&lease_for(&store, "ex-3"), "ex-3", t2).unwrap();
    assert_eq!(
        store.exchange("ex-3").unwrap().unwrap().state,
        ExchangeState::DeadLettered { at: t2 }
    );
    assert!(store.pending_outbox("sc", 10).unwrap().is_empty());
    assert!(store.outbox_depths().unwrap().is_empty());

    let rejected = store.list_exchanges(Some(ExchangeStatus::Rejected), 10).unwrap();
    assert_eq!(rejected.len(), 1);
    assert_eq!(rejected[0].exchange_id, "ex-2");

    // Operator retry: back to accepted, in acceptance position, fresh window.
    let t3 = T0 + Duration::hours(1);
    let retried = store.retry("ex-3", t3).unwrap();
    let retried2 = store.retry("ex-2", t3).unwrap();
    assert_eq!(retried.state, ExchangeState::Accepted);
    assert_eq!(retried2.problem(), None);
    let outbox = store.pending_outbox("sc", 10).unwrap();
    assert_eq!(
        outbox.iter().map(|i| i.exchange_id.as_str()).collect::<Vec<_>>(),
        ["ex-2", "ex-3"]
    );
    assert!(outbox
        .iter()
        .all(|i| i.queued_at == t3 && i.next_attempt_at == t3 && i.attempts == 0));

    assert!(matches!(
        store.mark_delivered(&lease_for(&store, "nope"), "nope", t3),
        Err(StoreError::NotFound { .. })
    ));
    // accepted ×3, attempt-failed, delivered, rejected, dead-lettered, retried ×2
    assert_eq!(store.audit_verify().unwrap().entries, 9);
}

#[test]
fn dead_letter_sweep_expires_by_age_in_one_transaction_with_audit_entries() {
    let fx = Fixture::new();
    let store = fx.open();
    // ex-1..ex-4 accepted at T0+1..4 ms for two destinations; ex-5 much later.
    for n in 1..=4 {
        let dest = if n % 2 == 0 { "gz" } else { "sc" };
        created(store.insert_exchange(new_exchange(n, dest)).unwrap());
    }
    let late = NewExchange {
        accepted_at: T0 + Duration::hours(1),
        ..new_exchange(5, "sc")
    };
    created(store.insert_exchange(late).unwrap());
    let t1 = T0 + Duration::seconds(10);
    store
        .record_attempt_failure(
            &lease_for(&store, "ex-1"),
            "ex-1",
            "connect refused",
            t1,
            t1 + Duration::seconds(30),
        )
        .unwrap();
    let pending = store.exchange("ex-1").unwrap().unwrap();
    assert_eq!(pending.next_attempt_at, Some(t1 + Duration::seconds(30)));
    assert_eq!(
        store.exchange("ex-2").unwrap().unwrap().next_attempt_at,
        Some(T0 + Duration::milliseconds(2)),
        "due at acceptance"
    );
    let audit_before = store.audit_verify().unwrap().entries;

    // Nothing is old enough yet: no write at all.
    assert!(store.dead_letter_expired(T0, t1).unwrap().is_empty());
    assert_eq!(store.audit_verify().unwrap().entries, audit_before);

    // Items queued at or before the cutoff expire, attempted or not.
    let at = T0 + Duration::minutes(5);
    let expired = store
        .dead_letter_expired(T0 + Duration::milliseconds(3), at)
        .unwrap();
    let got: Vec<(&str, &str)> = expired
        .iter()
        .map(|e| (e.exchange_id.as_str(), e.destination.as_str()))
        .collect();
    assert_eq!(got, [("ex-1", "sc"), ("ex-2", "gz"), ("ex-3", "sc")]);
    for id in ["ex-1", "ex-2", "ex-3"] {
        let ex = store.exchange(id).unwrap().unwrap();
        assert_eq!(ex.state, ExchangeState::DeadLettered { at }, "{id}");
        assert_eq!(ex.next_attempt_at, None, "{id}");
    }
    let kept = store.exchange("ex-1").unwrap().unwrap();
    assert_eq!(
        (kept.attempts, kept.last_error.as_deref()),
        (1, Some("connect refused"))
    );
    let outbox: Vec<String> = ["sc", "gz"]
        .iter()
        .flat_map(|d| store.pending_outbox(d, 10).unwrap())
        .map(|i| i.exchange_id)
        .collect();
    assert_eq!(outbox, ["ex-5", "ex-4"]);
    assert_eq!(store.audit_verify().unwrap().entries, audit_before + 3);
    let events: Vec<(String, String)> = {
        let raw = fx.raw();
        let mut stmt = raw
            .prepare("SELECT exchange_id, event FROM audit ORDER BY seq DESC LIMIT 3")
            .unwrap();
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap();
        rows.map(Result::unwrap).collect()
    };
    assert!(events.iter().all(|(_, e)| e == "dead-lettered"), "{events:?}");

    // Settling an item the sweep took is an invalid transition, not a resurrection.
    assert!(matches!(
        store.mark_delivered(&lease_for(&store, "ex-2"), "ex-2", at),
        Err(StoreError::InvalidTransition {
            from: ExchangeStatus::DeadLettered,
            ..
        })
    ));
    // The operator retry gives a fresh window: not expired by the same cutoff.
    store.retry("ex-2", at).unwrap();
    assert!(store
        .dead_letter_expired(T0 + Duration::milliseconds(3), at)
        .unwrap()
        .is_empty());
}

#[test]
fn inbox_cursor_paging_and_ack_are_monotone() {
    let fx = Fixture::new();
    let store = fx.open();
    for n in 1..=5 {
        let item = created(store.insert_inbox(new_inbox(n)).unwrap());
        assert_eq!(item.cursor, u64::from(n));
        assert_eq!(item.credential(), format!("home-{n}"));
    }
    let cursors =
        |items: Vec<bashu_gateway::store::InboxItem>| items.iter().map(|i| i.cursor).collect::<Vec<_>>();
    assert_eq!(cursors(store.inbox_page(None, 2).unwrap()), [1, 2]);
    assert_eq!(cursors(store.inbox_page(Some(2), 10).unwrap()), [3, 4, 5]);
    assert_eq!(cursors(store.inbox_page(Some(5), 10).unwrap()), Vec::<u64>::new());

    assert_eq!(store.ack(2, T0).unwrap(), 2);
    assert_eq!(store.acked_up_to().unwrap(), 2);
    assert_eq!(cursors(store.inbox_page(None, 10).unwrap()), [3, 4, 5]);
    // An explicit cursor may re-read acknowledged items (at-least-once).
    assert_eq!(cursors(store.inbox_page(Some(0), 1).unwrap()), [1]);

    assert_eq!(store.ack(1, T0).unwrap(), 0, "acking backwards is a no-op");
    assert_eq!(store.ack(2, T0).unwrap(), 0);
    assert_eq!(store.acked_up_to().unwrap(), 2);

    assert_eq!(store.ack(1000, T0).unwrap(), 3, "clamped to the highest cursor");
    assert_eq!(store.acked_up_to().unwrap(), 5);
    assert!(store.inbox_page(None, 10).unwrap().is_empty());

    // Items received after a clamped ack are not skipped.
    created(store.insert_inbox(new_inbox(6)).unwrap());
    let page = store.inbox_page(None, 10).unwrap();
    assert_eq!(cursors(page.clone()), [6]);
    assert_eq!(page[0].chain, new_inbox(6).chain);
    assert_eq!(page[0].received_at, new_inbox(6).received_at);
}

#[test]
fn insert_inbox_is_idempotent_by_exchange_id() {
    let fx = Fixture::new();
    let store = fx.open();
    let first = created(store.insert_inbox(new_inbox(1)).unwrap());
    // The home link is re-signed on every receipt, so it may differ.
    let mut resent = new_inbox(1);
    resent.chain[2] = "home-resigned".into();
    resent.received_at = T0 + Duration::hours(2);
    assert_eq!(
        store.insert_inbox(resent).unwrap(),
        Inserted::Existing(first.clone())
    );

    let mut other_original = new_inbox(1);
    other_original.chain[0] = "another-original".into();
    assert_eq!(
        store.insert_inbox(other_original).unwrap(),
        Inserted::Conflict {
            existing_exchange_id: "in-1".into()
        }
    );
    let mut other_origin = new_inbox(1);
    other_origin.origin = "gz".into();
    assert!(matches!(
        store.insert_inbox(other_origin).unwrap(),
        Inserted::Conflict { .. }
    ));
    assert_eq!(store.inbox_by_exchange("in-1").unwrap(), Some(first));
    assert_eq!(store.inbox_page(None, 10).unwrap().len(), 1);
}

/// SPEC v1.1 §4: the inbox is keyed by `(origin, original credential id)`
/// too, and never takes an exchange id this gateway issued itself.
#[test]
fn insert_inbox_refuses_a_known_original_or_an_own_exchange_id() {
    let fx = Fixture::new();
    let store = fx.open();
    created(store.insert_inbox(new_inbox(1)).unwrap());

    // Same original, same origin, new exchange id: conflict, no second item.
    let mut replayed = new_inbox(1);
    replayed.exchange_id = "in-1-again".into();
    assert_eq!(
        store.insert_inbox(replayed).unwrap(),
        Inserted::Conflict {
            existing_exchange_id: "in-1".into()
        }
    );
    // The same credential id from another origin is another credential.
    let mut elsewhere = new_inbox(1);
    elsewhere.exchange_id = "in-1-gz".into();
    elsewhere.origin = "gz".into();
    created(store.insert_inbox(elsewhere).unwrap());

    // An envelope reusing the id of our own outgoing exchange.
    let own = new_exchange(7, "sc");
    created(store.insert_exchange(own).unwrap());
    let mut squatting = new_inbox(2);
    squatting.exchange_id = "ex-7".into();
    assert_eq!(
        store.insert_inbox(squatting).unwrap(),
        Inserted::Conflict {
            existing_exchange_id: "ex-7".into()
        }
    );
    let ids: Vec<String> = store
        .inbox_page(Some(0), 10)
        .unwrap()
        .into_iter()
        .map(|i| i.exchange_id)
        .collect();
    assert_eq!(ids, ["in-1", "in-1-gz"]);
}

#[test]
fn concurrent_inserts_store_each_exchange_exactly_once() {
    let fx = Fixture::new();
    // Two independent stores on one file behave like two processes.
    let stores = [Arc::new(fx.open()), Arc::new(fx.open())];
    let threads: Vec<_> = (0..6_u32)
        .map(|t| {
            let store = Arc::clone(&stores[t as usize % 2]);
            std::thread::spawn(move || {
                let mut created = Vec::new();
                for k in 0..40_u32 {
                    // Every thread walks the same ids in a different order.
                    let n = (k * 7 + t * 13) % 40;
                    if store.insert_inbox(new_inbox(n)).unwrap().is_created() {
                        created.push(format!("in-{n}"));
                    }
                    let ex = NewExchange {
                        exchange_id: format!("ex-{n}-thread-{t}"),
                        ..new_exchange(n, "sc")
                    };
                    if store.insert_exchange(ex).unwrap().is_created() {
                        created.push(format!("cred-{n}"));
                    }
                }
                created
            })
        })
        .collect();
    let mut counts: HashMap<String, usize> = HashMap::new();
    for t in threads {
        for id in t.join().unwrap() {
            *counts.entry(id).or_default() += 1;
        }
    }
    assert_eq!(counts.len(), 80);
    assert!(counts.values().all(|&c| c == 1), "{counts:?}");

    let store = &stores[0];
    let inbox = store.inbox_page(Some(0), 500).unwrap();
    assert_eq!(inbox.len(), 40);
    assert!(inbox.windows(2).all(|w| w[0].cursor < w[1].cursor));
    assert_eq!(store.pending_outbox("sc", 500).unwrap().len(), 40);
    assert_eq!(store.audit_verify().unwrap().entries, 80);
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
    assert!(matches!(
        SqliteStore::open_existing(&fx.path),
        Err(StoreError::Open { .. })
    ));
    drop(fx.open());
    SqliteStore::open_existing(&fx.path).unwrap();
    fx.raw().pragma_update(None, "user_version", 99).unwrap();
    assert!(matches!(
        SqliteStore::open(&fx.path),
        Err(StoreError::SchemaTooNew { found: 99, .. })
    ));
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

/// Issue 12.5: after a restore, cursors continue above a floor (the start
/// time), never below a cursor handed out before.
#[test]
fn the_inbox_cursor_floor_only_rises() {
    let fx = Fixture::new();
    let store = fx.open();
    assert_eq!(created(store.insert_inbox(new_inbox(1)).unwrap()).cursor, 1);
    assert_eq!(store.raise_inbox_cursor_floor(1_000, T0).unwrap(), 1_000);
    assert_eq!(created(store.insert_inbox(new_inbox(2)).unwrap()).cursor, 1_001);
    // A lower floor changes nothing and writes no audit entry.
    let entries = store.audit_verify().unwrap().entries;
    assert_eq!(store.raise_inbox_cursor_floor(10, T0).unwrap(), 1_001);
    assert_eq!(store.audit_verify().unwrap().entries, entries);
    // The floor survives a reopen.
    drop(store);
    let store = fx.open();
    assert_eq!(created(store.insert_inbox(new_inbox(3)).unwrap()).cursor, 1_002);
    // An empty store can be raised too (no sqlite_sequence row yet).
    let other = Fixture::new();
    let empty = other.open();
    assert_eq!(empty.raise_inbox_cursor_floor(5_000, T0).unwrap(), 5_000);
    assert_eq!(created(empty.insert_inbox(new_inbox(1)).unwrap()).cursor, 5_001);
}

/// Issue 12.5: redelivery puts exchanges delivered since a time back into
/// the outbox in acceptance order; older deliveries and other destinations
/// stay as they are.
#[test]
fn redeliver_requeues_deliveries_since_a_time_in_acceptance_order() {
    let fx = Fixture::new();
    let store = fx.open();
    for n in 1..=4 {
        created(store.insert_exchange(new_exchange(n, "sc")).unwrap());
    }
    created(store.insert_exchange(new_exchange(5, "gz")).unwrap());
    let early = T0 + Duration::seconds(10);
    let late = T0 + Duration::seconds(20);
    store
        .mark_delivered(&lease_for(&store, "ex-1"), "ex-1", early)
        .unwrap();
    store
        .mark_delivered(&lease_for(&store, "ex-2"), "ex-2", late)
        .unwrap();
    store
        .mark_delivered(&lease_for(&store, "ex-3"), "ex-3", late)
        .unwrap();
    store
        .mark_delivered(&lease_for(&store, "ex-5"), "ex-5", late)
        .unwrap();

    let at = T0 + Duration::seconds(30);
    assert_eq!(store.redeliver("sc", late, at).unwrap(), 2);
    let queued: Vec<String> = store
        .pending_outbox("sc", 10)
        .unwrap()
        .into_iter()
        .map(|i| i.exchange_id)
        .collect();
    assert_eq!(queued, ["ex-2", "ex-3", "ex-4"]);
    assert_eq!(
        store.exchange("ex-2").unwrap().unwrap().status(),
        ExchangeStatus::Accepted
    );
    assert_eq!(
        store.exchange("ex-1").unwrap().unwrap().status(),
        ExchangeStatus::Delivered
    );
    assert_eq!(
        store.exchange("ex-5").unwrap().unwrap().status(),
        ExchangeStatus::Delivered
    );
    assert_eq!(
        store.redeliver("sc", late, at).unwrap(),
        0,
        "nothing delivered any more"
    );
    store.audit_verify().unwrap();
}
