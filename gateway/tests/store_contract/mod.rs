//! The store contract: one suite of cases over `Arc<dyn Store>`, written
//! once and run against every backend. A backend's test file provides a
//! factory and invokes the macro:
//!
//! ```ignore
//! mod store_contract;
//! fn sqlite() -> store_contract::Backend { … }
//! store_contract_tests!(sqlite);
//! ```
//!
//! Each case gets a fresh, empty store. Cases assert on values, error
//! types and stored state read back through the trait, never on a
//! backend's tables, so they hold for any backend; cursors and sequence
//! numbers are compared by order, not by value (a database sequence may
//! skip numbers).

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

use bashu_gateway::store::{
    CheckpointStore, ExchangeState, ExchangeStatus, InboxItem, Inserted, Lease, NewExchange, NewInboxItem,
    SettleOutcome, Settlement, Store, StoreError, StoredCheckpoint, WitnessedCheckpoint,
};
use serde_json::json;
use sha2::{Digest, Sha256};
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use time::macros::datetime;
use time::{Duration, OffsetDateTime};

/// A fresh store of one backend, for one case.
pub struct Backend {
    pub store: Arc<dyn Store>,
    /// Another handle on the same database, as a second process or replica
    /// would open it.
    pub second: Box<dyn Fn() -> Arc<dyn Store>>,
    /// Whatever must live as long as the store (a temporary directory, a
    /// database to drop).
    pub keep: Box<dyn std::any::Any>,
}

/// Generates one `#[test]` per contract case, each on a fresh store from
/// `$factory: fn() -> Backend`. With `optional`, `$factory: fn() ->
/// Option<Backend>` for a backend this machine may lack (PostgreSQL): a
/// case whose factory returns `None` passes without running (the factory
/// says why, e.g. a `SKIPPED` line).
#[macro_export]
macro_rules! store_contract_tests {
    ($factory:path) => {
        $crate::store_contract_tests!(@all required $factory);
    };
    (optional $factory:path) => {
        $crate::store_contract_tests!(@all optional $factory);
    };
    (@backend required $factory:path) => {
        Some($factory())
    };
    (@backend optional $factory:path) => {
        $factory()
    };
    (@all $mode:ident $factory:path) => {
        $crate::store_contract_tests!(@cases $mode $factory;
            insert_exchange_is_idempotent_by_origin_and_credential,
            insert_exchange_validates_input,
            async_inserts_answer_as_the_blocking_ones_and_are_durable,
            outbox_keeps_acceptance_order_per_destination,
            outbox_head_is_returned_while_it_backs_off,
            delivery_settles_update_status_outbox_and_timestamps,
            invalid_transitions_are_refused_and_change_nothing,
            retry_requeues_in_acceptance_position_with_a_fresh_window,
            dead_letter_sweep_expires_by_age,
            redeliver_requeues_deliveries_since_a_time_in_acceptance_order,
            insert_inbox_is_idempotent_by_exchange_id,
            inbox_by_exchanges_answers_each_id_in_order,
            insert_inbox_refuses_a_known_original_or_an_own_exchange_id,
            inbox_paging_follows_cursor_order,
            ack_is_monotone_and_clamped,
            cursor_floor_only_rises,
            audit_verifies_after_a_mix_of_operations,
            checkpoint_store_keeps_own_and_witnessed_checkpoints,
            concurrent_inserts_store_each_exchange_exactly_once,
            lease_is_exclusive_while_live,
            lease_renewal_keeps_the_token,
            lease_takeover_after_expiry_gets_a_greater_token,
            fenced_settles_after_takeover_fail_and_change_nothing,
            fenced_settles_refuse_another_destinations_lease,
            release_lets_another_holder_take_the_lease_at_once,
            racing_acquirers_get_one_lease,
            inbox_batch_keeps_request_order_and_judges_each_against_those_before,
            settle_batch_records_every_outcome_in_order,
            settle_batch_is_one_transaction,
            settle_batch_is_fenced_as_a_whole,
        );
    };
    (@cases $mode:ident $factory:path; $($case:ident),* $(,)?) => {
        $(
            #[test]
            fn $case() {
                let Some(backend) = $crate::store_contract_tests!(@backend $mode $factory) else {
                    return;
                };
                store_contract::$case(&backend);
            }
        )*
    };
}

pub const T0: OffsetDateTime = datetime!(2026-11-25 01:00:00.123456789 UTC);
pub const TTL: std::time::Duration = std::time::Duration::from_secs(5);

pub fn digest(s: &str) -> String {
    Sha256::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

pub fn new_exchange(n: u32, destination: &str) -> NewExchange {
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

pub fn new_inbox(n: u32) -> NewInboxItem {
    NewInboxItem {
        exchange_id: format!("in-{n}"),
        origin: "sc".into(),
        credential_id: format!("urn:uuid:orig-{n}"),
        received_at: T0 + Duration::seconds(i64::from(n)),
        chain: vec![format!("orig-{n}"), format!("wfs-{n}"), format!("home-{n}")],
    }
}

pub fn created<T: std::fmt::Debug>(outcome: Inserted<T>) -> T {
    match outcome {
        Inserted::Created(t) => t,
        other => panic!("expected Created, got {other:?}"),
    }
}

/// A live lease on `destination` for holder "worker".
pub fn lease(store: &dyn Store, destination: &str) -> Lease {
    store
        .acquire_lease(destination, "worker", std::time::Duration::from_secs(3600), T0)
        .unwrap()
        .expect("the lease is free")
}

fn ids_of(items: impl IntoIterator<Item = String>) -> Vec<String> {
    items.into_iter().collect()
}

fn outbox_ids(store: &dyn Store, destination: &str) -> Vec<String> {
    ids_of(
        store
            .pending_outbox(destination, 1000)
            .unwrap()
            .into_iter()
            .map(|i| i.exchange_id),
    )
}

fn cursors(items: &[InboxItem]) -> Vec<u64> {
    items.iter().map(|i| i.cursor).collect()
}

fn entries(store: &dyn Store) -> u64 {
    store.audit_verify().unwrap().entries
}

// --- origin side ---------------------------------------------------------------

pub fn insert_exchange_is_idempotent_by_origin_and_credential(b: &Backend) {
    let store = b.store.as_ref();
    let first = created(store.insert_exchange(new_exchange(1, "sc")).unwrap());
    assert_eq!(first.exchange_id, "ex-1");
    assert_eq!(first.status(), ExchangeStatus::Accepted);
    assert_eq!(
        first.accepted_at,
        T0 + Duration::milliseconds(1),
        "nanosecond precision kept"
    );
    assert_eq!(
        first.next_attempt_at,
        Some(first.accepted_at),
        "due at acceptance"
    );
    // The answer is what is stored (backends do not read the row back).
    assert_eq!(store.exchange("ex-1").unwrap().as_ref(), Some(&first));

    // A replay carries a freshly generated exchange id; the stored one wins.
    let replay = NewExchange {
        exchange_id: "ex-replay".into(),
        accepted_at: T0 + Duration::hours(1),
        ..new_exchange(1, "sc")
    };
    assert_eq!(
        store.insert_exchange(replay).unwrap(),
        Inserted::Existing(first.clone())
    );
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
    assert_eq!(store.find_by_credential("cq", "urn:uuid:nope").unwrap(), None);
    assert_eq!(store.outbox_depths().unwrap().get("sc"), Some(&2));
    // Two creations, two audit entries: replays and conflicts change nothing.
    assert_eq!(entries(store), 2);
}

pub fn insert_exchange_validates_input(b: &Backend) {
    let store = b.store.as_ref();
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
    assert_eq!(store.list_exchanges(None, 10).unwrap().len(), 1);
    assert_eq!(entries(store), 1);
}

/// `store::insert_exchange`, the async accept path (a backend's writer
/// thread where it has one): concurrent accepts, replays, conflicts and
/// invalid input get the answers `Store::insert_exchange` gives, and what
/// was answered `Created` is stored once, with its outbox item and audit
/// entry, as another handle on the database sees it.
pub fn async_inserts_answer_as_the_blocking_ones_and_are_durable(b: &Backend) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let store = Arc::clone(&b.store);
    let answers = rt.block_on(async {
        let tasks: Vec<_> = (1..=40)
            .map(|n| {
                let store = Arc::clone(&store);
                tokio::spawn(async move {
                    bashu_gateway::store::insert_exchange(&store, new_exchange(n, "sc")).await
                })
            })
            .collect();
        let mut answers = Vec::new();
        for t in tasks {
            answers.push(t.await.unwrap());
        }
        answers
    });
    for (n, answer) in (1..=40).zip(answers) {
        assert_eq!(created(answer.unwrap()).exchange_id, format!("ex-{n}"));
    }
    rt.block_on(async {
        let replay = bashu_gateway::store::insert_exchange(&store, new_exchange(7, "sc")).await;
        assert!(matches!(replay, Ok(Inserted::Existing(ref ex)) if ex.exchange_id == "ex-7"), "{replay:?}");
        let other_bytes = NewExchange {
            credential_digest: digest("other bytes"),
            exchange_id: "ex-other".into(),
            ..new_exchange(7, "sc")
        };
        let conflict = bashu_gateway::store::insert_exchange(&store, other_bytes).await;
        assert!(
            matches!(conflict, Ok(Inserted::Conflict { ref existing_exchange_id }) if existing_exchange_id == "ex-7"),
            "{conflict:?}"
        );
        let no_chain = NewExchange {
            chain: vec![],
            ..new_exchange(99, "sc")
        };
        let invalid = bashu_gateway::store::insert_exchange(&store, no_chain).await;
        assert!(matches!(invalid, Err(StoreError::InvalidInput { field: "chain", .. })), "{invalid:?}");
    });
    let second = (b.second)();
    assert_eq!(second.list_exchanges(None, 100).unwrap().len(), 40);
    assert_eq!(outbox_ids(second.as_ref(), "sc").len(), 40);
    assert_eq!(entries(second.as_ref()), 40);
}

pub fn outbox_keeps_acceptance_order_per_destination(b: &Backend) {
    let store = b.store.as_ref();
    for n in 0..90 {
        let dest = if n % 3 == 0 { "gz" } else { "sc" };
        created(store.insert_exchange(new_exchange(n, dest)).unwrap());
    }
    let sc = store.pending_outbox("sc", 1000).unwrap();
    let expected: Vec<String> = (0..90)
        .filter(|n| n % 3 != 0)
        .map(|n| format!("ex-{n}"))
        .collect();
    assert_eq!(
        sc.iter().map(|i| i.exchange_id.clone()).collect::<Vec<_>>(),
        expected
    );
    assert!(sc.windows(2).all(|w| w[0].seq < w[1].seq));
    assert!(sc
        .iter()
        .all(|i| i.destination == "sc" && i.attempts == 0 && i.origin == "cq"));
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
    assert_eq!(depths.get("sc"), Some(&60));
    assert_eq!(depths.get("gz"), Some(&30));
    assert_eq!(depths.len(), 2);
    assert!(store.pending_outbox("nowhere", 10).unwrap().is_empty());
    let all = store.list_exchanges(None, 1000).unwrap();
    assert_eq!(all.len(), 90);
    assert!(all.windows(2).all(|w| w[0].seq < w[1].seq), "acceptance order");
}

pub fn outbox_head_is_returned_while_it_backs_off(b: &Backend) {
    let store = b.store.as_ref();
    for n in 1..=3 {
        created(store.insert_exchange(new_exchange(n, "sc")).unwrap());
    }
    let l = lease(store, "sc");
    let t1 = T0 + Duration::seconds(10);
    let later = t1 + Duration::hours(1);
    store
        .record_attempt_failure(&l, "ex-1", "connect refused", t1, later)
        .unwrap();
    // Head-of-line: the head comes first even though it is not due, and the
    // items behind it (due long ago) wait behind it.
    let head = store.pending_outbox("sc", 1).unwrap();
    assert_eq!(head.len(), 1);
    assert_eq!(
        (
            head[0].exchange_id.as_str(),
            head[0].attempts,
            head[0].next_attempt_at
        ),
        ("ex-1", 1, later)
    );
    assert_eq!(outbox_ids(store, "sc"), ["ex-1", "ex-2", "ex-3"]);
}

pub fn delivery_settles_update_status_outbox_and_timestamps(b: &Backend) {
    let store = b.store.as_ref();
    for n in 1..=3 {
        created(store.insert_exchange(new_exchange(n, "sc")).unwrap());
    }
    let l = lease(store, "sc");
    let t1 = T0 + Duration::seconds(10);
    let t2 = T0 + Duration::seconds(20);
    store
        .record_attempt_failure(&l, "ex-1", "connect refused", t1, t1 + Duration::seconds(5))
        .unwrap();
    let ex = store.exchange("ex-1").unwrap().unwrap();
    assert_eq!(ex.status(), ExchangeStatus::Forwarded);
    assert_eq!((ex.attempts, ex.forwarded_at, ex.updated_at), (1, Some(t1), t1));
    assert_eq!(ex.last_error.as_deref(), Some("connect refused"));
    assert_eq!(ex.next_attempt_at, Some(t1 + Duration::seconds(5)));
    // A very long error text is kept, cut to a bound.
    store
        .record_attempt_failure(&l, "ex-1", &"x".repeat(5000), t1, t1)
        .unwrap();
    let ex = store.exchange("ex-1").unwrap().unwrap();
    assert_eq!(ex.attempts, 2);
    assert_eq!(ex.last_error.map(|e| e.len()), Some(1000));

    store.mark_delivered(&l, "ex-1", t2).unwrap();
    let ex = store.exchange("ex-1").unwrap().unwrap();
    assert_eq!(ex.state, ExchangeState::Delivered { at: t2 });
    assert_eq!(ex.delivered_at(), Some(t2));
    assert_eq!((ex.attempts, ex.forwarded_at), (3, Some(t1)));
    assert_eq!(ex.next_attempt_at, None, "left the outbox");
    assert_eq!(outbox_ids(store, "sc"), ["ex-2", "ex-3"]);

    let problem = json!({"type": "urn:bashu:problem:chain-broken", "status": 422, "detail": "digest"});
    store.mark_rejected(&l, "ex-2", &problem, t2).unwrap();
    let ex = store.exchange("ex-2").unwrap().unwrap();
    assert_eq!(ex.problem(), Some(&problem));
    assert_eq!((ex.attempts, ex.forwarded_at), (1, Some(t2)));

    store.dead_letter(&l, "ex-3", t2).unwrap();
    let ex = store.exchange("ex-3").unwrap().unwrap();
    assert_eq!(ex.state, ExchangeState::DeadLettered { at: t2 });
    assert_eq!(ex.attempts, 0, "dead-lettering is not an attempt");
    assert!(store.pending_outbox("sc", 10).unwrap().is_empty());
    assert!(store.outbox_depths().unwrap().is_empty());

    let rejected = store.list_exchanges(Some(ExchangeStatus::Rejected), 10).unwrap();
    assert_eq!(
        rejected
            .iter()
            .map(|e| e.exchange_id.as_str())
            .collect::<Vec<_>>(),
        ["ex-2"]
    );
    // accepted ×3, attempt-failed ×2, delivered, rejected, dead-lettered
    assert_eq!(entries(store), 8);
}

pub fn invalid_transitions_are_refused_and_change_nothing(b: &Backend) {
    let store = b.store.as_ref();
    created(store.insert_exchange(new_exchange(1, "sc")).unwrap());
    created(store.insert_exchange(new_exchange(2, "sc")).unwrap());
    let l = lease(store, "sc");
    store.mark_delivered(&l, "ex-1", T0).unwrap();
    let before = (store.exchange("ex-1").unwrap(), entries(store));
    let invalid = |r: Result<(), StoreError>, to: ExchangeStatus| match r {
        Err(StoreError::InvalidTransition {
            exchange_id,
            from: ExchangeStatus::Delivered,
            to: got,
        }) => assert_eq!((exchange_id.as_str(), got), ("ex-1", to)),
        other => panic!("expected InvalidTransition to {to}, got {other:?}"),
    };
    invalid(store.mark_delivered(&l, "ex-1", T0), ExchangeStatus::Delivered);
    invalid(
        store.mark_rejected(&l, "ex-1", &json!({"type": "x"}), T0),
        ExchangeStatus::Rejected,
    );
    invalid(store.dead_letter(&l, "ex-1", T0), ExchangeStatus::DeadLettered);
    invalid(
        store.record_attempt_failure(&l, "ex-1", "late", T0, T0),
        ExchangeStatus::Forwarded,
    );
    invalid(store.retry("ex-1", T0).map(drop), ExchangeStatus::Accepted);
    // Retry needs a terminal failure; a pending exchange is not one.
    assert!(matches!(
        store.retry("ex-2", T0),
        Err(StoreError::InvalidTransition {
            from: ExchangeStatus::Accepted,
            to: ExchangeStatus::Accepted,
            ..
        })
    ));
    for r in [
        store.mark_delivered(&l, "nope", T0),
        store.retry("nope", T0).map(drop),
    ] {
        assert!(matches!(r, Err(StoreError::NotFound { .. })), "{r:?}");
    }
    assert_eq!((store.exchange("ex-1").unwrap(), entries(store)), before);
    assert_eq!(outbox_ids(store, "sc"), ["ex-2"]);
}

pub fn retry_requeues_in_acceptance_position_with_a_fresh_window(b: &Backend) {
    let store = b.store.as_ref();
    for n in 1..=4 {
        created(store.insert_exchange(new_exchange(n, "sc")).unwrap());
    }
    let l = lease(store, "sc");
    let t1 = T0 + Duration::seconds(1);
    store
        .mark_rejected(&l, "ex-1", &json!({"type": "x", "status": 422}), t1)
        .unwrap();
    store.dead_letter(&l, "ex-2", t1).unwrap();
    // Retried in the reverse order, they still drain in acceptance order,
    // ahead of items accepted after them.
    let t3 = T0 + Duration::hours(1);
    let r2 = store.retry("ex-2", t3).unwrap();
    let r1 = store.retry("ex-1", t3).unwrap();
    assert_eq!((r1.state.clone(), r1.problem()), (ExchangeState::Accepted, None));
    assert_eq!(r2.state, ExchangeState::Accepted);
    assert_eq!((r1.updated_at, r1.next_attempt_at), (t3, Some(t3)));
    let outbox = store.pending_outbox("sc", 10).unwrap();
    assert_eq!(
        outbox.iter().map(|i| i.exchange_id.as_str()).collect::<Vec<_>>(),
        ["ex-1", "ex-2", "ex-3", "ex-4"]
    );
    assert!(outbox[..2]
        .iter()
        .all(|i| i.queued_at == t3 && i.next_attempt_at == t3 && i.attempts == 0));
    // The retried item is deliverable again.
    store.mark_delivered(&l, "ex-1", t3).unwrap();
    assert_eq!(
        store.exchange("ex-1").unwrap().unwrap().state,
        ExchangeState::Delivered { at: t3 }
    );
}

pub fn dead_letter_sweep_expires_by_age(b: &Backend) {
    let store = b.store.as_ref();
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
    let sc = lease(store, "sc");
    store
        .record_attempt_failure(&sc, "ex-1", "connect refused", t1, t1 + Duration::seconds(30))
        .unwrap();
    let audit_before = entries(store);

    // Nothing is old enough yet: nothing changes.
    assert!(store.dead_letter_expired(T0, t1).unwrap().is_empty());
    assert_eq!(entries(store), audit_before);

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
    assert_eq!(outbox_ids(store, "sc"), ["ex-5"]);
    assert_eq!(outbox_ids(store, "gz"), ["ex-4"]);
    assert_eq!(entries(store), audit_before + 3);

    // Settling an item the sweep took is an invalid transition, not a resurrection.
    let gz = lease(store, "gz");
    assert!(matches!(
        store.mark_delivered(&gz, "ex-2", at),
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

pub fn redeliver_requeues_deliveries_since_a_time_in_acceptance_order(b: &Backend) {
    let store = b.store.as_ref();
    for n in 1..=4 {
        created(store.insert_exchange(new_exchange(n, "sc")).unwrap());
    }
    created(store.insert_exchange(new_exchange(5, "gz")).unwrap());
    let (sc, gz) = (lease(store, "sc"), lease(store, "gz"));
    let early = T0 + Duration::seconds(10);
    let late = T0 + Duration::seconds(20);
    store.mark_delivered(&sc, "ex-1", early).unwrap();
    store.mark_delivered(&sc, "ex-3", late).unwrap();
    store.mark_delivered(&sc, "ex-2", late).unwrap();
    store.mark_delivered(&gz, "ex-5", late).unwrap();
    let at = T0 + Duration::minutes(1);
    assert_eq!(store.redeliver("sc", late, at).unwrap(), 2);
    // ex-4 never left the outbox; ex-2 and ex-3 are back, in acceptance order.
    assert_eq!(outbox_ids(store, "sc"), ["ex-2", "ex-3", "ex-4"]);
    let ex2 = store.exchange("ex-2").unwrap().unwrap();
    assert_eq!(
        (ex2.state, ex2.next_attempt_at),
        (ExchangeState::Accepted, Some(at))
    );
    assert_eq!(
        store.exchange("ex-1").unwrap().unwrap().state,
        ExchangeState::Delivered { at: early }
    );
    assert!(store.pending_outbox("gz", 10).unwrap().is_empty());
    assert_eq!(store.redeliver("nowhere", T0, at).unwrap(), 0);
}

// --- inbox ---------------------------------------------------------------------------

pub fn insert_inbox_is_idempotent_by_exchange_id(b: &Backend) {
    let store = b.store.as_ref();
    let first = created(store.insert_inbox(new_inbox(1)).unwrap());
    assert_eq!(first.credential(), "home-1");
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
    assert_eq!(
        store.insert_inbox(other_origin).unwrap(),
        Inserted::Conflict {
            existing_exchange_id: "in-1".into()
        }
    );
    let mut empty = new_inbox(2);
    empty.chain.clear();
    assert!(matches!(
        store.insert_inbox(empty),
        Err(StoreError::InvalidInput { field: "chain", .. })
    ));
    assert_eq!(store.inbox_by_exchange("in-1").unwrap(), Some(first));
    assert_eq!(store.inbox_by_exchange("in-2").unwrap(), None);
    assert_eq!(store.inbox_page(None, 10).unwrap().len(), 1);
    assert_eq!(entries(store), 1);
}

/// SPEC v1.1 §4: the inbox is keyed by `(origin, original credential id)`
/// too, and never takes an exchange id this gateway issued itself.
pub fn inbox_by_exchanges_answers_each_id_in_order(b: &Backend) {
    let store = b.store.as_ref();
    for n in [1, 3] {
        created(store.insert_inbox(new_inbox(n)).unwrap());
    }
    let ids: Vec<String> = ["in-3", "in-2", "in-1", "in-3"].map(String::from).to_vec();
    let found: Vec<Option<String>> = store
        .inbox_by_exchanges(&ids)
        .unwrap()
        .into_iter()
        .map(|item| item.map(|i| i.exchange_id))
        .collect();
    assert_eq!(
        found,
        vec![
            Some("in-3".into()),
            None,
            Some("in-1".into()),
            Some("in-3".into())
        ]
    );
    assert!(store.inbox_by_exchanges(&[]).unwrap().is_empty());
}

pub fn insert_inbox_refuses_a_known_original_or_an_own_exchange_id(b: &Backend) {
    let store = b.store.as_ref();
    created(store.insert_inbox(new_inbox(1)).unwrap());
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
    created(store.insert_exchange(new_exchange(7, "sc")).unwrap());
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

pub fn inbox_paging_follows_cursor_order(b: &Backend) {
    let store = b.store.as_ref();
    let all: Vec<InboxItem> = (1..=5)
        .map(|n| created(store.insert_inbox(new_inbox(n)).unwrap()))
        .collect();
    let c = cursors(&all);
    assert!(c.windows(2).all(|w| w[0] < w[1]), "receipt order: {c:?}");
    assert!(c[0] > 0);
    assert_eq!(cursors(&store.inbox_page(None, 2).unwrap()), c[..2]);
    assert_eq!(cursors(&store.inbox_page(Some(c[1]), 10).unwrap()), c[2..]);
    assert!(store.inbox_page(Some(c[4]), 10).unwrap().is_empty());
    assert_eq!(cursors(&store.inbox_page(Some(0), 1).unwrap()), c[..1]);
    let page = store.inbox_page(Some(c[2]), 1).unwrap();
    assert_eq!(page, all[3..4]);
    assert_eq!(page[0].chain, new_inbox(4).chain);
    assert_eq!(page[0].received_at, new_inbox(4).received_at);
}

pub fn ack_is_monotone_and_clamped(b: &Backend) {
    let store = b.store.as_ref();
    let c: Vec<u64> = (1..=5)
        .map(|n| created(store.insert_inbox(new_inbox(n)).unwrap()).cursor)
        .collect();
    assert_eq!(store.acked_up_to().unwrap(), 0);
    assert_eq!(store.ack(c[1], T0).unwrap(), 2);
    assert_eq!(store.acked_up_to().unwrap(), c[1]);
    assert_eq!(cursors(&store.inbox_page(None, 10).unwrap()), c[2..]);
    // An explicit cursor may re-read acknowledged items (at-least-once).
    assert_eq!(cursors(&store.inbox_page(Some(0), 1).unwrap()), c[..1]);

    let entries_before = entries(store);
    assert_eq!(store.ack(c[0], T0).unwrap(), 0, "acking backwards is a no-op");
    assert_eq!(store.ack(c[1], T0).unwrap(), 0);
    assert_eq!(store.acked_up_to().unwrap(), c[1]);
    assert_eq!(entries(store), entries_before, "a no-op writes no entry");

    assert_eq!(
        store.ack(u64::MAX, T0).unwrap(),
        3,
        "clamped to the highest cursor"
    );
    assert_eq!(store.acked_up_to().unwrap(), c[4]);
    assert!(store.inbox_page(None, 10).unwrap().is_empty());
    // Items received after a clamped ack are not skipped.
    let sixth = created(store.insert_inbox(new_inbox(6)).unwrap());
    assert_eq!(store.inbox_page(None, 10).unwrap(), [sixth]);
}

pub fn cursor_floor_only_rises(b: &Backend) {
    let store = b.store.as_ref();
    // An empty store can be raised.
    assert_eq!(store.raise_inbox_cursor_floor(1_000, T0).unwrap(), 1_000);
    let first = created(store.insert_inbox(new_inbox(1)).unwrap()).cursor;
    assert!(first > 1_000, "{first}");
    assert_eq!(store.raise_inbox_cursor_floor(5_000, T0).unwrap(), 5_000);
    let second = created(store.insert_inbox(new_inbox(2)).unwrap()).cursor;
    assert!(second > 5_000, "{second}");
    // A lower floor changes nothing and writes no audit entry.
    let before = entries(store);
    let current = store.raise_inbox_cursor_floor(10, T0).unwrap();
    assert!(current >= second, "{current} < {second}");
    assert_eq!(entries(store), before);
    // Another handle (a restarted process, a replica) continues above it.
    let other = (b.second)();
    let third = created(other.insert_inbox(new_inbox(3)).unwrap()).cursor;
    assert!(third > second);
}

// --- audit and checkpoints --------------------------------------------------------------

pub fn audit_verifies_after_a_mix_of_operations(b: &Backend) {
    let store = b.store.as_ref();
    let empty = store.audit_verify().unwrap();
    assert_eq!((empty.entries, empty.exchanges, empty.inbox_items), (0, 0, 0));
    for n in 1..=4 {
        created(store.insert_exchange(new_exchange(n, "sc")).unwrap());
    }
    let l = lease(store, "sc");
    store
        .record_attempt_failure(&l, "ex-1", "timeout", T0, T0)
        .unwrap();
    store.mark_delivered(&l, "ex-1", T0).unwrap();
    store
        .mark_rejected(&l, "ex-2", &json!({"type": "x"}), T0)
        .unwrap();
    store.dead_letter(&l, "ex-3", T0).unwrap();
    store.retry("ex-3", T0).unwrap();
    store.redeliver("sc", T0, T0).unwrap();
    store.dead_letter_expired(T0 + Duration::hours(1), T0).unwrap();
    let received: Vec<u64> = (1..=3)
        .map(|n| created(store.insert_inbox(new_inbox(n)).unwrap()).cursor)
        .collect();
    store.insert_inbox(new_inbox(1)).unwrap(); // idempotent: no entry
    assert_eq!(store.ack(received[1], T0).unwrap(), 2);
    store.raise_inbox_cursor_floor(u64::MAX / 4, T0).unwrap();
    store.release_lease(&l).unwrap(); // leases are not audited state
    let report = store.audit_verify().unwrap();
    // 4 accepted, failed, delivered, rejected, dead-lettered, retried,
    // redelivered, 3 swept (ex-1 again, ex-3, ex-4), 3 received, acked, floor
    assert_eq!(report.entries, 18);
    assert_eq!((report.exchanges, report.inbox_items), (4, 3));
    assert_eq!(report.rows_predating_digests, 0);
    assert_eq!(report.head_hash.len(), 64);
    assert_ne!(report.head_hash, empty.head_hash);
    // Read through another handle: the same chain.
    assert_eq!((b.second)().audit_verify().unwrap(), report);
}

pub fn checkpoint_store_keeps_own_and_witnessed_checkpoints(b: &Backend) {
    let store = b.store.as_ref();
    let cps: &dyn CheckpointStore = store.checkpoint_store().expect("a backend keeps checkpoints");
    let genesis = cps.audit_head().unwrap();
    assert_eq!(genesis.seq, 0);
    assert_eq!(cps.audit_entry_hash(0).unwrap(), Some(genesis.hash.clone()));
    for n in 1..=3 {
        created(store.insert_exchange(new_exchange(n, "sc")).unwrap());
    }
    let head = cps.audit_head().unwrap();
    assert_eq!(head.seq, 3);
    assert_eq!(cps.audit_entry_hash(3).unwrap(), Some(head.hash.clone()));
    assert_eq!(cps.audit_entry_hash(4).unwrap(), None);
    let wanted: BTreeSet<u64> = [0, 2, 3, 9].into();
    let (report, hashes) = cps.audit_verify_at(&wanted).unwrap();
    assert_eq!(report.entries, 3);
    assert_eq!(hashes.keys().copied().collect::<Vec<_>>(), [0, 2, 3]);
    assert_eq!(hashes[&3], head.hash);
    assert_eq!(Some(hashes[&2].clone()), cps.audit_entry_hash(2).unwrap());

    assert_eq!(cps.latest_checkpoint().unwrap(), None);
    let own = |seq: u64, at: i64| StoredCheckpoint {
        seq,
        head: format!("head-{seq}"),
        at,
        jws: format!("jws-{seq}"),
    };
    cps.save_checkpoint(&own(2, 100)).unwrap();
    cps.save_checkpoint(&own(3, 160)).unwrap();
    assert_eq!(cps.latest_checkpoint().unwrap(), Some(own(3, 160)));
    assert_eq!(cps.checkpoints().unwrap(), [own(2, 100), own(3, 160)]);

    let peer = |member: &str, seq: u64| WitnessedCheckpoint {
        member: member.into(),
        seq,
        head: format!("{member}-head-{seq}"),
        at: 100 + i64::try_from(seq).unwrap(),
        fetched_at: 200,
        jws: format!("{member}-jws-{seq}"),
    };
    assert!(cps.save_witnessed(&peer("sc", 5)).unwrap());
    assert!(!cps.save_witnessed(&peer("sc", 5)).unwrap(), "kept once");
    assert!(cps.save_witnessed(&peer("sc", 7)).unwrap());
    assert!(cps.save_witnessed(&peer("gz", 1)).unwrap());
    assert_eq!(cps.latest_witnessed("sc").unwrap(), Some(peer("sc", 7)));
    assert_eq!(cps.witnessed("sc").unwrap(), [peer("sc", 5), peer("sc", 7)]);
    assert_eq!(cps.witnessed("pr").unwrap(), []);
    assert_eq!(cps.latest_witnessed("pr").unwrap(), None);
    // Checkpoints are not audit entries.
    assert_eq!(entries(store), 3);
}

// --- concurrency -------------------------------------------------------------------------

pub fn concurrent_inserts_store_each_exchange_exactly_once(b: &Backend) {
    // Two handles on one database behave like two processes (or replicas).
    let stores = [Arc::clone(&b.store), (b.second)()];
    let threads: Vec<_> = (0..4_u32)
        .map(|t| {
            let store = Arc::clone(&stores[t as usize % 2]);
            std::thread::spawn(move || {
                let mut created = Vec::new();
                for k in 0..20_u32 {
                    // Every thread walks the same ids in a different order.
                    let n = (k * 7 + t * 13) % 20;
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
    assert_eq!(counts.len(), 40, "every inbox item and exchange created");
    assert!(counts.values().all(|&c| c == 1), "{counts:?}");
    assert_eq!(store_len(b.store.as_ref()), (20, 20));
    let report = b.store.audit_verify().unwrap();
    assert_eq!(report.entries, 40);
}

fn store_len(store: &dyn Store) -> (usize, usize) {
    (
        store.list_exchanges(None, 1000).unwrap().len(),
        store.inbox_page(Some(0), 1000).unwrap().len(),
    )
}

// --- delivery leases ------------------------------------------------------------------------

pub fn lease_is_exclusive_while_live(b: &Backend) {
    let store = b.store.as_ref();
    let a = store.acquire_lease("sc", "a", TTL, T0).unwrap().expect("free");
    assert_eq!(
        (a.destination.as_str(), a.holder.as_str(), a.expires_at),
        ("sc", "a", T0 + Duration::seconds(5))
    );
    // Another holder, through another handle, until the last instant.
    let other = (b.second)();
    for at in [T0, T0 + Duration::milliseconds(4_999)] {
        assert_eq!(other.acquire_lease("sc", "b", TTL, at).unwrap(), None);
    }
    // Leases are per destination.
    let gz = other.acquire_lease("gz", "b", TTL, T0).unwrap().expect("free");
    assert_eq!(gz.holder, "b");
    // A request is validated.
    assert!(matches!(
        store.acquire_lease("sc", "", TTL, T0),
        Err(StoreError::InvalidInput { .. })
    ));
    assert!(matches!(
        store.acquire_lease("sc", "a", std::time::Duration::ZERO, T0),
        Err(StoreError::InvalidInput { .. })
    ));
}

pub fn lease_renewal_keeps_the_token(b: &Backend) {
    let store = b.store.as_ref();
    let first = store.acquire_lease("sc", "a", TTL, T0).unwrap().unwrap();
    let t1 = T0 + Duration::seconds(3);
    let renewed = store.acquire_lease("sc", "a", TTL, t1).unwrap().unwrap();
    assert_eq!(renewed.token, first.token);
    assert_eq!(renewed.expires_at, t1 + Duration::seconds(5));
    // The renewal moved the expiry: another holder is still out after the
    // first expiry.
    let other = (b.second)();
    assert_eq!(
        other
            .acquire_lease("sc", "b", TTL, T0 + Duration::seconds(6))
            .unwrap(),
        None
    );
    // And a settle with the renewed lease (same token) is accepted.
    created(store.insert_exchange(new_exchange(1, "sc")).unwrap());
    store.mark_delivered(&first, "ex-1", t1).unwrap();
}

pub fn lease_takeover_after_expiry_gets_a_greater_token(b: &Backend) {
    let store = b.store.as_ref();
    let a = store.acquire_lease("sc", "a", TTL, T0).unwrap().unwrap();
    let expiry = a.expires_at;
    let other = (b.second)();
    let taken = other
        .acquire_lease("sc", "b", TTL, expiry)
        .unwrap()
        .expect("expired");
    assert!(taken.token > a.token, "{} > {}", taken.token, a.token);
    assert_eq!(
        (taken.holder.as_str(), taken.expires_at),
        ("b", expiry + Duration::seconds(5))
    );
    // Now the former holder is the one kept out.
    assert_eq!(store.acquire_lease("sc", "a", TTL, expiry).unwrap(), None);
    // Taking back its own expired lease also gives a greater token.
    let later = taken.expires_at;
    let back = store.acquire_lease("sc", "a", TTL, later).unwrap().unwrap();
    assert!(back.token > taken.token);
}

pub fn fenced_settles_after_takeover_fail_and_change_nothing(b: &Backend) {
    let store = b.store.as_ref();
    for n in 1..=4 {
        created(store.insert_exchange(new_exchange(n, "sc")).unwrap());
    }
    let stale = store.acquire_lease("sc", "a", TTL, T0).unwrap().unwrap();
    // Replica b takes over after the expiry and records a failure.
    let other = (b.second)();
    let t1 = stale.expires_at;
    let current = other.acquire_lease("sc", "b", TTL, t1).unwrap().unwrap();
    other
        .record_attempt_failure(&current, "ex-1", "peer down", t1, t1 + Duration::seconds(1))
        .unwrap();
    let state = |s: &dyn Store| {
        (
            (1..=4)
                .map(|n| s.exchange(&format!("ex-{n}")).unwrap())
                .collect::<Vec<_>>(),
            s.pending_outbox("sc", 10).unwrap(),
            s.audit_verify().unwrap(),
        )
    };
    let before = state(store);
    // The paused former holder wakes up and tries to settle: refused.
    let lost = |r: Result<(), StoreError>| match r {
        Err(StoreError::LeaseLost { destination, token }) => {
            assert_eq!((destination.as_str(), token), ("sc", stale.token))
        }
        other => panic!("expected LeaseLost, got {other:?}"),
    };
    let t2 = t1 + Duration::seconds(2);
    lost(store.mark_delivered(&stale, "ex-1", t2));
    lost(store.mark_rejected(&stale, "ex-2", &json!({"type": "x"}), t2));
    lost(store.dead_letter(&stale, "ex-3", t2));
    lost(store.record_attempt_failure(&stale, "ex-4", "late", t2, t2));
    // Even for an exchange that does not exist: the fence comes first.
    lost(store.mark_delivered(&stale, "nope", t2));
    assert_eq!(state(store), before, "a fenced settle writes nothing");
    // The current holder's settles go through.
    other.mark_delivered(&current, "ex-1", t2).unwrap();
    assert_eq!(
        store.exchange("ex-1").unwrap().unwrap().state,
        ExchangeState::Delivered { at: t2 }
    );
    // A lease that never was the stored one is refused too.
    let forged = Lease {
        token: current.token + 1,
        ..current.clone()
    };
    lost_token(other.mark_delivered(&forged, "ex-2", t2), forged.token);
}

fn lost_token(r: Result<(), StoreError>, token: u64) {
    assert!(
        matches!(&r, Err(StoreError::LeaseLost { token: t, .. }) if *t == token),
        "{r:?}"
    );
}

pub fn fenced_settles_refuse_another_destinations_lease(b: &Backend) {
    let store = b.store.as_ref();
    created(store.insert_exchange(new_exchange(1, "sc")).unwrap());
    let gz = lease(store, "gz");
    let r = store.mark_delivered(&gz, "ex-1", T0);
    assert!(
        matches!(r, Err(StoreError::InvalidInput { field: "lease", .. })),
        "{r:?}"
    );
    // A destination that never had a lease: nobody may settle for it.
    let never = Lease {
        destination: "sc".into(),
        holder: "worker".into(),
        token: 1,
        expires_at: T0 + Duration::hours(1),
    };
    lost_token(store.mark_delivered(&never, "ex-1", T0), 1);
    assert_eq!(
        store.exchange("ex-1").unwrap().unwrap().status(),
        ExchangeStatus::Accepted
    );
}

pub fn release_lets_another_holder_take_the_lease_at_once(b: &Backend) {
    let store = b.store.as_ref();
    let a = store.acquire_lease("sc", "a", TTL, T0).unwrap().unwrap();
    let other = (b.second)();
    assert_eq!(other.acquire_lease("sc", "b", TTL, T0).unwrap(), None);
    store.release_lease(&a).unwrap();
    let t1 = T0 + Duration::milliseconds(1);
    let taken = other
        .acquire_lease("sc", "b", TTL, t1)
        .unwrap()
        .expect("released");
    assert!(taken.token > a.token);
    // Releasing a lease already lost does not free the new holder's.
    store.release_lease(&a).unwrap();
    assert_eq!(store.acquire_lease("sc", "a", TTL, t1).unwrap(), None);
    // The released holder's settles are fenced out.
    created(store.insert_exchange(new_exchange(1, "sc")).unwrap());
    lost_token(store.mark_delivered(&a, "ex-1", t1), a.token);
    other.mark_delivered(&taken, "ex-1", t1).unwrap();
}

pub fn racing_acquirers_get_one_lease(b: &Backend) {
    let stores = [Arc::clone(&b.store), (b.second)()];
    let barrier = Arc::new(std::sync::Barrier::new(6));
    let threads: Vec<_> = (0..6_usize)
        .map(|t| {
            let store = Arc::clone(&stores[t % 2]);
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                barrier.wait();
                store
                    .acquire_lease("sc", &format!("holder-{t}"), TTL, T0)
                    .unwrap()
            })
        })
        .collect();
    let won: Vec<Lease> = threads.into_iter().filter_map(|t| t.join().unwrap()).collect();
    assert_eq!(won.len(), 1, "{won:?}");
    // The winner's lease is the stored one: it can settle.
    created(b.store.insert_exchange(new_exchange(1, "sc")).unwrap());
    b.store.mark_delivered(&won[0], "ex-1", T0).unwrap();
}

// --- batches (SPEC §4 batch form) ---------------------------------------------

fn inbox_item(id: &str, original: &str) -> NewInboxItem {
    NewInboxItem {
        exchange_id: id.into(),
        origin: "sc".into(),
        credential_id: format!("urn:uuid:{original}"),
        received_at: T0,
        chain: vec![original.into(), format!("wfs-{id}"), format!("home-{id}")],
    }
}

fn settlement(id: &str, outcome: SettleOutcome) -> Settlement {
    Settlement {
        exchange_id: id.into(),
        outcome,
    }
}

fn status_of(store: &dyn Store, id: &str) -> ExchangeStatus {
    store.exchange(id).unwrap().unwrap().status()
}

/// A received batch is stored in request order, each item judged against
/// the ones before it in the same batch.
pub fn inbox_batch_keeps_request_order_and_judges_each_against_those_before(b: &Backend) {
    let store = b.store.as_ref();
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
    assert!(store.insert_inbox_batch(Vec::new()).unwrap().is_empty());
    store.audit_verify().unwrap();
}

/// The answers to a sent batch are recorded in order; an item that left
/// the outbox by another path is reported `false` and the rest go on.
pub fn settle_batch_records_every_outcome_in_order(b: &Backend) {
    let store = b.store.as_ref();
    let ids: Vec<String> = (1..=4)
        .map(|n| created(store.insert_exchange(new_exchange(n, "sc")).unwrap()).exchange_id)
        .collect();
    let lease = lease(store, "sc");
    store.dead_letter(&lease, &ids[3], T0).unwrap();
    let at = T0 + Duration::seconds(1);
    let recorded = store
        .settle_batch(
            &lease,
            &[
                settlement(&ids[0], SettleOutcome::Delivered),
                settlement(
                    &ids[1],
                    SettleOutcome::Rejected {
                        problem: json!({"type": "urn:bashu:problem:chain-broken"}),
                    },
                ),
                settlement(
                    &ids[2],
                    SettleOutcome::Failed {
                        error: "peer answered HTTP 503".into(),
                        next_attempt_at: at + Duration::seconds(5),
                    },
                ),
                settlement(&ids[3], SettleOutcome::Delivered),
            ],
            at,
        )
        .unwrap();
    assert_eq!(recorded, [true, true, true, false]);
    assert_eq!(status_of(store, &ids[0]), ExchangeStatus::Delivered);
    assert_eq!(status_of(store, &ids[1]), ExchangeStatus::Rejected);
    assert_eq!(status_of(store, &ids[2]), ExchangeStatus::Forwarded);
    assert_eq!(status_of(store, &ids[3]), ExchangeStatus::DeadLettered);
    let outbox = store.pending_outbox("sc", 10).unwrap();
    assert_eq!(
        ids_of(outbox.iter().map(|o| o.exchange_id.clone())),
        [ids[2].clone()]
    );
    assert_eq!(outbox[0].next_attempt_at, at + Duration::seconds(5));
    store.audit_verify().unwrap();
}

/// A batch that cannot be recorded whole records nothing.
pub fn settle_batch_is_one_transaction(b: &Backend) {
    let store = b.store.as_ref();
    let ids: Vec<String> = (1..=2)
        .map(|n| created(store.insert_exchange(new_exchange(n, "sc")).unwrap()).exchange_id)
        .collect();
    let lease = lease(store, "sc");
    let entries_before = entries(store);
    // The second outcome cannot be stored (a time beyond the storable range).
    let err = store
        .settle_batch(
            &lease,
            &[
                settlement(&ids[0], SettleOutcome::Delivered),
                settlement(
                    &ids[1],
                    SettleOutcome::Failed {
                        error: "x".into(),
                        next_attempt_at: datetime!(9000-01-01 00:00 UTC),
                    },
                ),
            ],
            T0,
        )
        .unwrap_err();
    assert!(err.to_string().contains("next_attempt_at"), "{err}");
    for id in &ids {
        assert_eq!(
            status_of(store, id),
            ExchangeStatus::Accepted,
            "nothing of a failed batch is recorded"
        );
    }
    assert_eq!(outbox_ids(store, "sc"), ids);
    assert_eq!(entries(store), entries_before, "no audit entry either");
    store.audit_verify().unwrap();
}

/// A batch settled with a lease another holder has since taken fails with
/// `LeaseLost` and records nothing.
pub fn settle_batch_is_fenced_as_a_whole(b: &Backend) {
    let store = b.store.as_ref();
    let ids: Vec<String> = (1..=2)
        .map(|n| created(store.insert_exchange(new_exchange(n, "sc")).unwrap()).exchange_id)
        .collect();
    let old = lease(store, "sc");
    let later = old.expires_at + Duration::seconds(1);
    let new = store
        .acquire_lease("sc", "other-replica", TTL, later)
        .unwrap()
        .expect("expired lease taken over");
    assert!(new.token > old.token);
    let err = store
        .settle_batch(
            &old,
            &[
                settlement(&ids[0], SettleOutcome::Delivered),
                settlement(&ids[1], SettleOutcome::Delivered),
            ],
            later,
        )
        .unwrap_err();
    assert!(matches!(err, StoreError::LeaseLost { .. }), "{err:?}");
    for id in &ids {
        assert_eq!(status_of(store, id), ExchangeStatus::Accepted);
    }
    assert_eq!(outbox_ids(store, "sc"), ids);
}
