//! The batch operations of the SQLite store: a batch of received envelopes
//! and the outcomes of a batch sent are each one transaction, in order.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

use bashu_gateway::store::{
    ExchangeStatus, Inserted, NewExchange, NewInboxItem, SettleOutcome, Settlement, SqliteStore, Store,
};
use serde_json::json;
use time::macros::datetime;
use time::{Duration, OffsetDateTime};

const T0: OffsetDateTime = datetime!(2026-11-25 01:00:00 UTC);

fn store() -> (tempfile::TempDir, SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("bashu.db")).unwrap();
    (dir, store)
}

fn inbox_item(id: &str, original: &str) -> NewInboxItem {
    NewInboxItem {
        exchange_id: id.into(),
        origin: "sc".into(),
        credential_id: format!("urn:uuid:{original}"),
        received_at: T0,
        chain: vec![original.into(), format!("wfs-{id}"), format!("home-{id}")],
    }
}

fn accept(store: &SqliteStore, n: u32) -> String {
    let id = format!("ex-{n}");
    let new = NewExchange {
        exchange_id: id.clone(),
        credential_id: format!("urn:uuid:cred-{n}"),
        credential_digest: format!("{n:064x}"),
        origin: "cq".into(),
        destination: "sc".into(),
        chain: vec![format!("orig-{n}"), format!("wfs-{n}")],
        accepted_at: T0 + Duration::milliseconds(i64::from(n)),
    };
    assert!(store.insert_exchange(new).unwrap().is_created());
    id
}

#[test]
fn a_batch_of_inbox_items_keeps_request_order_and_judges_each_against_those_before() {
    let (_dir, store) = store();
    let out = store
        .insert_inbox_batch(vec![
            inbox_item("a", "orig-a"),
            inbox_item("b", "orig-b"),
            inbox_item("a", "orig-a"),     // resend inside the batch
            inbox_item("a", "orig-other"), // same id, another original
            inbox_item("c", "orig-b"),     // same original, another id
            inbox_item("d", "orig-d"),
        ])
        .unwrap();
    let kinds: Vec<&str> = out
        .iter()
        .map(|i| match i {
            Inserted::Created(_) => "created",
            Inserted::Existing(_) => "existing",
            Inserted::Conflict { .. } => "conflict",
        })
        .collect();
    assert_eq!(
        kinds,
        ["created", "created", "existing", "conflict", "conflict", "created"]
    );
    let page = store.inbox_page(Some(0), 10).unwrap();
    let ids: Vec<&str> = page.iter().map(|i| i.exchange_id.as_str()).collect();
    assert_eq!(ids, ["a", "b", "d"]);
    assert!(page.windows(2).all(|w| w[0].cursor < w[1].cursor));
    store.audit_verify().unwrap();
}

#[test]
fn a_batch_settlement_records_every_outcome_in_order() {
    let (_dir, store) = store();
    let ids: Vec<String> = (1..=4).map(|n| accept(&store, n)).collect();
    // ex-4 left the outbox by another path before the answer is recorded.
    store.dead_letter(&ids[3], T0).unwrap();
    let at = T0 + Duration::seconds(1);
    let recorded = store
        .settle_batch(
            &[
                Settlement {
                    exchange_id: ids[0].clone(),
                    outcome: SettleOutcome::Delivered,
                },
                Settlement {
                    exchange_id: ids[1].clone(),
                    outcome: SettleOutcome::Rejected {
                        problem: json!({"type": "urn:bashu:problem:chain-broken"}),
                    },
                },
                Settlement {
                    exchange_id: ids[2].clone(),
                    outcome: SettleOutcome::Failed {
                        error: "peer answered HTTP 503".into(),
                        next_attempt_at: at + Duration::seconds(5),
                    },
                },
                Settlement {
                    exchange_id: ids[3].clone(),
                    outcome: SettleOutcome::Delivered,
                },
            ],
            at,
        )
        .unwrap();
    assert_eq!(recorded, [true, true, true, false]);
    let status = |id: &str| store.exchange(id).unwrap().unwrap().status();
    assert_eq!(status(&ids[0]), ExchangeStatus::Delivered);
    assert_eq!(status(&ids[1]), ExchangeStatus::Rejected);
    assert_eq!(status(&ids[2]), ExchangeStatus::Forwarded);
    assert_eq!(status(&ids[3]), ExchangeStatus::DeadLettered);
    let outbox = store.pending_outbox("sc", 10).unwrap();
    assert_eq!(outbox.len(), 1);
    assert_eq!(outbox[0].exchange_id, ids[2]);
    assert_eq!(outbox[0].next_attempt_at, at + Duration::seconds(5));
    store.audit_verify().unwrap();
}

#[test]
fn a_batch_settlement_is_one_transaction() {
    let (_dir, store) = store();
    let ids: Vec<String> = (1..=2).map(|n| accept(&store, n)).collect();
    // The second outcome cannot be stored (a time beyond the storable
    // range): the first, already applied inside the transaction, rolls back.
    let err = store
        .settle_batch(
            &[
                Settlement {
                    exchange_id: ids[0].clone(),
                    outcome: SettleOutcome::Delivered,
                },
                Settlement {
                    exchange_id: ids[1].clone(),
                    outcome: SettleOutcome::Failed {
                        error: "x".into(),
                        next_attempt_at: datetime!(9000-01-01 00:00 UTC),
                    },
                },
            ],
            T0,
        )
        .unwrap_err();
    assert!(err.to_string().contains("next_attempt_at"), "{err}");
    for id in &ids {
        assert_eq!(
            store.exchange(id).unwrap().unwrap().status(),
            ExchangeStatus::Accepted,
            "nothing of a failed batch is recorded"
        );
    }
    assert_eq!(store.pending_outbox("sc", 10).unwrap().len(), 2);
    store.audit_verify().unwrap();
}
