//! Crash safety: a child process writes as fast as it can and is killed with
//! SIGKILL mid-stream. Everything it reported as committed (printed only
//! after `Ok`) must survive intact, and the audit chain must still verify
//! and account for every stored change.
//!
//! The child is this test binary re-executed with `BASHU_CRASH_CHILD_DB`
//! set, running only `crash_child_writer`, which does nothing otherwise.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

use bashu_gateway::store::{ExchangeStatus, NewExchange, NewInboxItem, SqliteStore, Store};
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use time::macros::datetime;
use time::{Duration, OffsetDateTime};

const CHILD_ENV: &str = "BASHU_CRASH_CHILD_DB";
const T0: OffsetDateTime = datetime!(2026-11-25 02:00 UTC);
/// Upper bound so an orphaned child cannot run forever.
const CHILD_MAX: u32 = 100_000;
/// Kill the child once it has reported this many exchanges.
const KILL_AFTER: usize = 150;

fn original(n: u32) -> String {
    format!("original-{n}")
}

fn digest(s: &str) -> String {
    Sha256::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn new_exchange(n: u32) -> NewExchange {
    NewExchange {
        exchange_id: format!("ex-{n}"),
        credential_id: format!("cred-{n}"),
        credential_digest: digest(&original(n)),
        origin: "cq".into(),
        destination: "sc".into(),
        chain: vec![original(n), format!("interchange-{n}")],
        accepted_at: T0 + Duration::milliseconds(i64::from(n)),
    }
}

fn new_inbox(n: u32) -> NewInboxItem {
    NewInboxItem {
        exchange_id: format!("in-{n}"),
        origin: "sc".into(),
        credential_id: format!("urn:uuid:orig-{n}"),
        received_at: T0 + Duration::milliseconds(i64::from(n)),
        chain: vec![format!("o-{n}"), format!("w-{n}"), format!("h-{n}")],
    }
}

/// The child: two writer threads, each printing a line after every `Ok`.
#[test]
fn crash_child_writer() {
    let Some(db) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let store = Arc::new(SqliteStore::open(Path::new(&db)).unwrap());
    let inbox_store = Arc::clone(&store);
    let inbox = std::thread::spawn(move || {
        for n in 0..CHILD_MAX {
            inbox_store.insert_inbox(new_inbox(n)).unwrap();
            println!("inbox in-{n}");
        }
    });
    let lease = store
        .acquire_lease("sc", "crash-child", std::time::Duration::from_secs(3600), T0)
        .unwrap()
        .unwrap();
    for n in 0..CHILD_MAX {
        store.insert_exchange(new_exchange(n)).unwrap();
        println!("exchange ex-{n}");
        if n % 3 == 0 {
            store.mark_delivered(&lease, &format!("ex-{n}"), T0).unwrap();
            println!("delivered ex-{n}");
        }
    }
    inbox.join().unwrap();
}

#[test]
fn sigkill_mid_stream_loses_nothing_reported_committed() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("bashu.db");
    // Create the schema first so the child starts writing immediately.
    drop(SqliteStore::open(&db).unwrap());

    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "crash_child_writer", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, &db)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();

    let mut exchanges = HashSet::new();
    let mut delivered = HashSet::new();
    let mut inbox = HashSet::new();
    let mut killed = false;
    for line in lines.by_ref() {
        let line = line.unwrap();
        match line.split_once(' ') {
            Some(("exchange", id)) => exchanges.insert(id.to_owned()),
            Some(("delivered", id)) => delivered.insert(id.to_owned()),
            Some(("inbox", id)) => inbox.insert(id.to_owned()),
            _ => false,
        };
        if !killed && exchanges.len() >= KILL_AFTER {
            child.kill().unwrap(); // SIGKILL on Unix
            killed = true;
        }
    }
    let status = child.wait().unwrap();
    let mut stderr = String::new();
    child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    assert!(killed, "child ended before being killed ({status}): {stderr}");
    assert!(!status.success(), "child must have died from the signal");

    let store = SqliteStore::open(&db).unwrap();
    // A pending exchange's chain is read back from its outbox item; a
    // settled one's is held to its audit entry by `audit_verify` below.
    let outbox: HashMap<String, Vec<String>> = store
        .pending_outbox("sc", usize::MAX)
        .unwrap()
        .into_iter()
        .map(|item| (item.exchange_id, item.chain))
        .collect();
    for id in &exchanges {
        let n: u32 = id.trim_start_matches("ex-").parse().unwrap();
        let ex = store.exchange(id).unwrap().unwrap_or_else(|| panic!("{id} lost"));
        let expected = new_exchange(n);
        if ex.status().is_pending() {
            assert_eq!(outbox.get(id), Some(&expected.chain), "{id}");
        }
        assert_eq!(ex.credential_digest, expected.credential_digest);
        assert_eq!(ex.accepted_at, expected.accepted_at);
        if delivered.contains(id) {
            assert_eq!(ex.status(), ExchangeStatus::Delivered, "{id}");
        }
    }
    for id in &inbox {
        let n: u32 = id.trim_start_matches("in-").parse().unwrap();
        let item = store
            .inbox_by_exchange(id)
            .unwrap()
            .unwrap_or_else(|| panic!("{id} lost"));
        assert_eq!(item.chain, new_inbox(n).chain);
    }

    // Whatever the store holds (reported or committed just before the kill)
    // is consistent: pending exchanges are exactly the outbox, and every
    // stored change has its audit entry.
    let all = store.list_exchanges(None, u32::MAX).unwrap();
    let pending = all.iter().filter(|e| e.status().is_pending()).count();
    let settled = all.len() - pending;
    assert_eq!(store.pending_outbox("sc", usize::MAX).unwrap().len(), pending);
    let inbox_rows = store.inbox_page(Some(0), u32::MAX).unwrap();
    assert!(inbox_rows.windows(2).all(|w| w[0].cursor < w[1].cursor));
    let report = store.audit_verify().unwrap();
    assert_eq!(report.entries, (all.len() + settled + inbox_rows.len()) as u64);
    assert!(all.len() >= exchanges.len() && inbox_rows.len() >= inbox.len());
}
