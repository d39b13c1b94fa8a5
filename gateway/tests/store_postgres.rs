//! What only a shared PostgreSQL store must get right: several replicas
//! (here, several `PgStore`s on one database, as several `bashu serve`
//! processes would hold) racing for leases, for one credential, for inbox
//! cursors and for the audit chain; the identity guards of a replica's data
//! directory; readiness that follows whether PostgreSQL can commit.
//!
//! Runs against a real PostgreSQL 15 (`bashu_gateway::devpg`); skipped with
//! a `SKIPPED` line when it is not installed, unless
//! `BASHU_REQUIRE_POSTGRES=1`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use bashu_gateway::config::StoreUrl;
use bashu_gateway::devpg::DevPostgres;
use bashu_gateway::store::{
    open_postgres, CheckpointStore, Inserted, NewExchange, NewInboxItem, PgOptions, PgStore, Store,
    StoreError, StoreFault,
};
use std::collections::BTreeSet;
use std::sync::{Arc, Barrier};
use std::time::Duration;
use time::OffsetDateTime;

/// A fresh database and `n` stores on it, as `n` replicas would have.
fn replicas(test: &str, n: usize) -> Option<(Arc<DevPostgres>, StoreUrl, Vec<Arc<PgStore>>)> {
    let pg = DevPostgres::for_tests(test)?;
    let url = StoreUrl::new(pg.create_database().unwrap());
    let options = PgOptions {
        pool_size: 8,
        ..PgOptions::default()
    };
    let stores = (0..n)
        .map(|_| Arc::new(PgStore::connect(&url, options).unwrap()))
        .collect();
    Some((pg, url, stores))
}

fn t(secs: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_767_225_600 + secs).unwrap()
}

fn new_exchange(n: usize, destination: &str) -> NewExchange {
    NewExchange {
        exchange_id: format!("ex-{n:05}"),
        credential_id: format!("urn:uuid:cred-{n:05}"),
        credential_digest: format!("{n:064x}"),
        origin: "cq".into(),
        destination: destination.into(),
        chain: vec![format!("original-{n}"), format!("interchange-{n}")],
        accepted_at: t(0),
    }
}

fn new_inbox(n: usize) -> NewInboxItem {
    NewInboxItem {
        exchange_id: format!("in-{n:05}"),
        origin: "sc".into(),
        credential_id: format!("urn:uuid:orig-{n:05}"),
        received_at: t(1),
        chain: vec![format!("o-{n}"), format!("i-{n}"), format!("h-{n}")],
    }
}

/// Runs an SQL statement as the cluster's superuser (test setup only).
fn admin(url: &str, sql: &str) {
    let (url, sql) = (url.to_owned(), sql.to_owned());
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(conn);
            client.batch_execute(&sql).await.unwrap();
        })
    })
    .join()
    .unwrap();
}

#[test]
fn two_replicas_racing_for_a_lease_get_one_and_the_losers_late_settle_is_refused() {
    let Some((_pg, _url, stores)) = replicas("lease race", 2) else {
        return;
    };
    let (a, b) = (&stores[0], &stores[1]);
    a.insert_exchange(new_exchange(1, "sc")).unwrap();

    // Eight contenders on two replicas ask at the same instant: one wins.
    let barrier = Arc::new(Barrier::new(8));
    let winners: Vec<_> = (0..8)
        .map(|i| {
            let store = Arc::clone(&stores[i % 2]);
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                barrier.wait();
                store
                    .acquire_lease("sc", &format!("replica-{i}"), Duration::from_secs(5), t(10))
                    .unwrap()
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .filter_map(|h| h.join().unwrap())
        .collect();
    assert_eq!(
        winners.len(),
        1,
        "exactly one contender holds the lease: {winners:?}"
    );
    let first = winners[0].clone();
    assert_eq!(first.token, 1);

    // Live elsewhere: refused on either replica. Renewed by its holder:
    // same token.
    assert_eq!(
        b.acquire_lease("sc", "late", Duration::from_secs(5), t(12))
            .unwrap(),
        None
    );
    let renewed = a
        .acquire_lease("sc", &first.holder, Duration::from_secs(5), t(12))
        .unwrap()
        .unwrap();
    assert_eq!(renewed.token, first.token);

    // The holder stalls past its TTL; another replica takes over with a
    // greater token; the stale holder's settle writes nothing.
    let taken = b
        .acquire_lease("sc", "replica-b", Duration::from_secs(5), t(30))
        .unwrap()
        .unwrap();
    assert_eq!(taken.token, 2);
    match a.mark_delivered(&renewed, "ex-00001", t(31)) {
        Err(StoreError::LeaseLost { destination, token }) => {
            assert_eq!((destination.as_str(), token), ("sc", 1));
        }
        other => panic!("a stale lease must not settle: {other:?}"),
    }
    let pending = b.exchange("ex-00001").unwrap().unwrap();
    assert_eq!(
        pending.status().as_str(),
        "accepted",
        "the refused settle wrote nothing"
    );
    assert_eq!(b.pending_outbox("sc", 10).unwrap().len(), 1);
    b.mark_delivered(&taken, "ex-00001", t(32)).unwrap();
    assert_eq!(
        a.exchange("ex-00001").unwrap().unwrap().status().as_str(),
        "delivered"
    );

    // Released: the next holder need not wait, and gets a greater token.
    b.release_lease(&taken).unwrap();
    let next = a
        .acquire_lease("sc", "replica-a", Duration::from_secs(5), t(33))
        .unwrap()
        .unwrap();
    assert_eq!(next.token, 3);
    a.audit_verify().unwrap();
}

#[test]
fn one_credential_submitted_to_two_replicas_at_once_is_one_exchange() {
    let Some((_pg, _url, stores)) = replicas("idempotency across replicas", 2) else {
        return;
    };
    // The same credential under a different exchange id per replica, as
    // two replicas accepting one resubmission would mint.
    let barrier = Arc::new(Barrier::new(8));
    let outcomes: Vec<Inserted<_>> = (0..8)
        .map(|i| {
            let store = Arc::clone(&stores[i % 2]);
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                let mut new = new_exchange(7, "sc");
                new.exchange_id = format!("ex-race-{i}");
                barrier.wait();
                store.insert_exchange(new).unwrap()
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|h| h.join().unwrap())
        .collect();
    let created: Vec<_> = outcomes.iter().filter(|o| o.is_created()).collect();
    assert_eq!(
        created.len(),
        1,
        "one insert creates, the others find it: {outcomes:?}"
    );
    let id = created[0].row().unwrap().exchange_id.clone();
    for o in &outcomes {
        match o {
            Inserted::Created(e) | Inserted::Existing(e) => assert_eq!(e.exchange_id, id),
            Inserted::Conflict { .. } => panic!("same digest is not a conflict"),
        }
    }
    // Different bytes under the same credential id: a conflict naming it.
    let mut other = new_exchange(7, "sc");
    other.exchange_id = "ex-other".into();
    other.credential_digest = "f".repeat(64);
    assert_eq!(
        stores[1].insert_exchange(other).unwrap(),
        Inserted::Conflict {
            existing_exchange_id: id.clone()
        }
    );
    assert_eq!(stores[0].list_exchanges(None, 100).unwrap().len(), 1);
    assert_eq!(stores[1].pending_outbox("sc", 100).unwrap().len(), 1);
}

/// A credit bank polling one replica while others receive must never see
/// cursor N+1 before N: every page it reads is a prefix of the final inbox.
#[test]
fn inbox_cursors_become_visible_in_order_across_replicas() {
    const WRITERS: usize = 6;
    const PER_WRITER: usize = 25;
    let Some((_pg, _url, stores)) = replicas("cursor order", 3) else {
        return;
    };
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let store = Arc::clone(&stores[2]);
        let done = Arc::clone(&done);
        std::thread::spawn(move || {
            let mut snapshots = Vec::new();
            while !done.load(std::sync::atomic::Ordering::Acquire) {
                let page: Vec<u64> = store
                    .inbox_page(Some(0), 500)
                    .unwrap()
                    .iter()
                    .map(|i| i.cursor)
                    .collect();
                snapshots.push(page);
            }
            snapshots
        })
    };
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let store = Arc::clone(&stores[w % 2]);
            std::thread::spawn(move || {
                for k in 0..PER_WRITER {
                    let created = store.insert_inbox(new_inbox(w * 1000 + k)).unwrap();
                    assert!(created.is_created());
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    done.store(true, std::sync::atomic::Ordering::Release);
    let snapshots = reader.join().unwrap();
    let all: Vec<u64> = stores[0]
        .inbox_page(Some(0), 500)
        .unwrap()
        .iter()
        .map(|i| i.cursor)
        .collect();
    assert_eq!(all.len(), WRITERS * PER_WRITER);
    assert!(all.windows(2).all(|w| w[0] < w[1]), "cursors strictly increase");
    assert!(
        snapshots.len() > 3,
        "the reader must have polled during the writes"
    );
    for (n, seen) in snapshots.iter().enumerate() {
        let Some(&max) = seen.last() else { continue };
        let expected: Vec<u64> = all.iter().copied().filter(|c| *c <= max).collect();
        assert_eq!(
            seen, &expected,
            "read {n} saw cursor {max} while an earlier cursor was not yet visible"
        );
    }
    // One chain, whichever replica wrote: every write is an entry.
    let report = stores[1].audit_verify().unwrap();
    assert_eq!(report.entries, (WRITERS * PER_WRITER) as u64);
    assert_eq!(report.inbox_items, (WRITERS * PER_WRITER) as u64);
    assert_eq!(stores[0].audit_head().unwrap().hash, report.head_hash);
}

#[test]
fn the_cursor_floor_moves_the_sequence_and_never_down() {
    let Some((_pg, _url, stores)) = replicas("cursor floor", 2) else {
        return;
    };
    let first = stores[0].insert_inbox(new_inbox(1)).unwrap();
    assert_eq!(first.row().unwrap().cursor, 1);
    assert_eq!(
        stores[0].raise_inbox_cursor_floor(1_000_000, t(2)).unwrap(),
        1_000_000
    );
    // A lower floor (another replica starting with a slower clock) changes nothing.
    assert_eq!(stores[1].raise_inbox_cursor_floor(500, t(3)).unwrap(), 1_000_000);
    let next = stores[1].insert_inbox(new_inbox(2)).unwrap();
    assert_eq!(next.row().unwrap().cursor, 1_000_001);
    // Acks across the gap count what exists.
    assert_eq!(stores[0].ack(1_000_001, t(4)).unwrap(), 2);
    assert_eq!(stores[1].acked_up_to().unwrap(), 1_000_001);
    let report = stores[0].audit_verify().unwrap();
    assert_eq!(report.entries, 4, "two receipts, one floor raise, one ack");
}

#[test]
fn a_replica_refuses_another_members_database_and_a_swapped_one() {
    let Some(pg) = DevPostgres::for_tests("identity guards") else {
        return;
    };
    let url = StoreUrl::new(pg.create_database().unwrap());
    let dirs = tempfile::tempdir().unwrap();
    let (d1, d2) = (dirs.path().join("r1"), dirs.path().join("r2"));
    let options = PgOptions {
        pool_size: 2,
        ..PgOptions::default()
    };
    let first = open_postgres(&d1, "cq", &url, options).unwrap();
    // One process per data directory, whatever the backend.
    match open_postgres(&d1, "cq", &url, options) {
        Err(StoreError::Locked { .. }) => {}
        other => panic!("a second process on one data directory: {other:?}"),
    }
    drop(first);
    // A second replica (own data directory) joins the same store.
    let second = open_postgres(&d2, "cq", &url, options).unwrap();
    drop(second);
    let marker = |d: &std::path::Path| std::fs::read_to_string(d.join("store-id")).unwrap();
    assert_eq!(
        marker(&d1),
        marker(&d2),
        "both replicas record the one store identity"
    );

    // Another member's gateway pointed at cq's database is refused.
    let d3 = dirs.path().join("r3");
    match open_postgres(&d3, "sc", &url, options) {
        Err(StoreError::Identity { reason, .. }) => assert!(reason.contains("member cq"), "{reason}"),
        other => panic!("sc on cq's database: {other:?}"),
    }
    // The URL now points at a new, empty database: refused, not a silent
    // fresh start below the cursors credit banks have seen.
    let empty = StoreUrl::new(pg.create_database().unwrap());
    match open_postgres(&d1, "cq", &empty, options) {
        Err(StoreError::Identity { reason, db, .. }) => {
            assert!(reason.contains("no store identity"), "{reason}");
            let password = empty
                .expose()
                .split('@')
                .next()
                .unwrap()
                .rsplit(':')
                .next()
                .unwrap();
            assert!(
                !db.to_string_lossy().contains(password),
                "the error must not show the password"
            );
        }
        other => panic!("a replica's marker with an empty database: {other:?}"),
    }
}

#[test]
fn readiness_follows_whether_postgres_can_commit() {
    let Some(pg) = DevPostgres::for_tests("readiness") else {
        return;
    };
    let url = pg.create_database().unwrap();
    let db = url.rsplit('/').next().unwrap().to_owned();
    let store = PgStore::connect(&StoreUrl::new(url.clone()), PgOptions::default()).unwrap();
    store.ping().unwrap();
    // The database turns read-only (as a demoted primary would): new
    // sessions cannot commit, and readiness says so with the fault.
    let admin_url = pg.url("postgres");
    admin(
        &admin_url,
        &format!(
            "ALTER DATABASE {db} SET default_transaction_read_only = on;
             SELECT pg_terminate_backend(pid) FROM pg_stat_activity
              WHERE datname = '{db}' AND pid <> pg_backend_pid();"
        ),
    );
    std::thread::sleep(Duration::from_millis(1100)); // past the probe's 1 s cache
    let mut fault = None;
    for _ in 0..20 {
        match store.ping() {
            Err(StoreError::Fault { fault: f, .. }) if f == StoreFault::ReadOnly => {
                fault = Some(f);
                break;
            }
            // A pooled connection killed under it fails first; the next
            // probe (after the cache) opens a fresh, read-only one.
            _ => std::thread::sleep(Duration::from_millis(1100)),
        }
    }
    assert_eq!(
        fault,
        Some(StoreFault::ReadOnly),
        "readiness must report the read-only database"
    );
    let write = store.insert_exchange(new_exchange(1, "sc"));
    assert!(write.is_err(), "no write commits meanwhile: {write:?}");

    admin(&admin_url, &format!("ALTER DATABASE {db} SET default_transaction_read_only = off;
        SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{db}' AND pid <> pg_backend_pid();"));
    let mut ready = false;
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(1100));
        if store.ping().is_ok() {
            ready = true;
            break;
        }
    }
    assert!(ready, "readiness returns once PostgreSQL commits again");
    assert!(store.insert_exchange(new_exchange(1, "sc")).unwrap().is_created());
}

#[test]
fn checkpoints_signed_by_any_replica_are_seen_by_all() {
    let Some((_pg, _url, stores)) = replicas("checkpoints", 2) else {
        return;
    };
    stores[0].insert_exchange(new_exchange(1, "sc")).unwrap();
    let head = stores[1].audit_head().unwrap();
    assert_eq!(head.seq, 1);
    let cp = bashu_gateway::store::StoredCheckpoint {
        seq: head.seq,
        head: head.hash.clone(),
        at: 1_767_225_600,
        jws: "header.payload.sig".into(),
    };
    stores[0].save_checkpoint(&cp).unwrap();
    assert_eq!(stores[1].latest_checkpoint().unwrap(), Some(cp));
    assert_eq!(stores[1].audit_entry_hash(1).unwrap(), Some(head.hash.clone()));
    let (report, hashes) = stores[1].audit_verify_at(&BTreeSet::from([0, 1, 9])).unwrap();
    assert_eq!(report.entries, 1);
    assert_eq!(hashes.get(&1), Some(&head.hash));
    assert!(!hashes.contains_key(&9));
    let w = bashu_gateway::store::WitnessedCheckpoint {
        member: "sc".into(),
        seq: 3,
        head: "ab".repeat(32),
        at: 1,
        fetched_at: 2,
        jws: "w.j.s".into(),
    };
    assert!(stores[0].save_witnessed(&w).unwrap());
    assert!(
        !stores[1].save_witnessed(&w).unwrap(),
        "the same JWS is kept once across replicas"
    );
    assert_eq!(stores[1].witnessed("sc").unwrap(), vec![w]);
}

/// Accepted exchanges per second on one database from 1 and 2 replicas
/// (8 writers in all), for docs/operations.md "High availability". A
/// figure, not a check: run with `--ignored --nocapture`.
#[test]
#[ignore]
fn measure_accept_rate() {
    for n in [1, 2] {
        let Some((_pg, _url, stores)) = replicas("accept rate", n) else {
            return;
        };
        const PER_THREAD: usize = 100;
        let started = std::time::Instant::now();
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let store = Arc::clone(&stores[t % n]);
                std::thread::spawn(move || {
                    for k in 0..PER_THREAD {
                        store.insert_exchange(new_exchange(t * 10_000 + k, "sc")).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let secs = started.elapsed().as_secs_f64();
        eprintln!(
            "MEASURED: {n} replica(s), 8 writers: {:.0} accepted exchanges/s ({:.2} ms per commit)",
            (8 * PER_THREAD) as f64 / secs,
            secs * 1000.0 / (8 * PER_THREAD) as f64
        );
    }
}
