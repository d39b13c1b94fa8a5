#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use crate::store::{AuditHead, AuditReport, ExchangeState};
use std::collections::BTreeSet;
use time::macros::datetime;

const T0: OffsetDateTime = datetime!(2026-03-01 12:00 UTC);

fn new_exchange() -> NewExchange {
    NewExchange {
        exchange_id: "ex-1".into(),
        credential_id: "cred-1".into(),
        credential_digest: "a".repeat(64),
        origin: "cq".into(),
        destination: "sc".into(),
        chain: vec!["orig".into(), "inter".into()],
        accepted_at: T0,
    }
}

fn stored(status: ExchangeState) -> Exchange {
    Exchange {
        seq: 1,
        exchange_id: "ex-1".into(),
        credential_id: "cred-1".into(),
        credential_digest: "a".repeat(64),
        origin: "cq".into(),
        destination: "sc".into(),
        state: status,
        accepted_at: T0,
        forwarded_at: None,
        updated_at: T0,
        attempts: 0,
        last_error: None,
        next_attempt_at: Some(T0),
    }
}

fn new_inbox() -> NewInboxItem {
    NewInboxItem {
        exchange_id: "ex-9".into(),
        origin: "sc".into(),
        credential_id: "cred-9".into(),
        received_at: T0,
        chain: vec!["orig".into(), "inter".into(), "home".into()],
    }
}

#[test]
fn exchange_validation_names_the_bad_field() {
    assert!(validate_exchange(&new_exchange()).is_ok());
    type Spoil = fn(&mut NewExchange);
    let cases: [(&str, Spoil); 6] = [
        ("exchange_id", |n| n.exchange_id.clear()),
        ("credential_id", |n| n.credential_id.clear()),
        ("origin", |n| n.origin.clear()),
        ("destination", |n| n.destination.clear()),
        ("chain", |n| n.chain.clear()),
        ("credential_digest", |n| n.credential_digest = "A".repeat(64)),
    ];
    for (field, spoil) in cases {
        let mut n = new_exchange();
        spoil(&mut n);
        match validate_exchange(&n) {
            Err(StoreError::InvalidInput { field: f, .. }) => assert_eq!(f, field),
            other => panic!("{field}: {other:?}"),
        }
    }
}

#[test]
fn inbox_validation_refuses_empty_fields() {
    assert!(validate_inbox(&new_inbox()).is_ok());
    let mut n = new_inbox();
    n.credential_id.clear();
    assert!(matches!(
        validate_inbox(&n),
        Err(StoreError::InvalidInput {
            field: "credential_id",
            ..
        })
    ));
}

#[test]
fn exchange_idempotency_by_digest() {
    let new = new_exchange();
    assert_eq!(admit_exchange(&new, None, false).unwrap(), Admission::Insert);
    let same = stored(ExchangeState::Forwarded);
    assert_eq!(
        admit_exchange(&new, Some(same.clone()), false).unwrap(),
        Admission::Answer(Inserted::Existing(same.clone()))
    );
    let mut other = same;
    other.credential_digest = "b".repeat(64);
    other.exchange_id = "ex-0".into();
    assert_eq!(
        admit_exchange(&new, Some(other), false).unwrap(),
        Admission::Answer(Inserted::Conflict {
            existing_exchange_id: "ex-0".into()
        })
    );
    assert!(matches!(
        admit_exchange(&new, None, true),
        Err(StoreError::InvalidInput {
            field: "exchange_id",
            ..
        })
    ));
}

#[test]
fn inbox_idempotency_rules() {
    let new = new_inbox();
    assert_eq!(admit_inbox(&new, None, None, false), Admission::Insert);
    let existing = InboxItem {
        cursor: 4,
        exchange_id: "ex-9".into(),
        origin: "sc".into(),
        received_at: T0,
        chain: vec!["orig".into(), "inter".into(), "another home link".into()],
    };
    // The home link is re-signed per receipt: not compared.
    assert_eq!(
        admit_inbox(&new, Some(existing.clone()), None, false),
        Admission::Answer(Inserted::Existing(existing.clone()))
    );
    let mut other_original = existing;
    other_original.chain[0] = "another original".into();
    assert_eq!(
        admit_inbox(&new, Some(other_original), None, false),
        Admission::Answer(Inserted::Conflict {
            existing_exchange_id: "ex-9".into()
        })
    );
    assert_eq!(
        admit_inbox(&new, None, Some("ex-3".into()), false),
        Admission::Answer(Inserted::Conflict {
            existing_exchange_id: "ex-3".into()
        })
    );
    assert_eq!(
        admit_inbox(&new, None, None, true),
        Admission::Answer(Inserted::Conflict {
            existing_exchange_id: "ex-9".into()
        })
    );
}

#[test]
fn transition_table() {
    use ExchangeStatus::*;
    let table: Vec<(Transition, Vec<ExchangeStatus>, ExchangeStatus)> = Transition::ALL
        .iter()
        .map(|t| (*t, t.from().to_vec(), t.to()))
        .collect();
    assert_eq!(
        table,
        vec![
            (Transition::AttemptFailed, vec![Accepted, Forwarded], Forwarded),
            (Transition::Deliver, vec![Accepted, Forwarded], Delivered),
            (Transition::Reject, vec![Accepted, Forwarded], Rejected),
            (Transition::DeadLetter, vec![Accepted, Forwarded], DeadLettered),
            (Transition::Retry, vec![Rejected, DeadLettered], Accepted),
            (Transition::Redeliver, vec![Delivered], Accepted),
        ]
    );
    // The table agrees with the status predicates the rest of the code uses.
    for st in ExchangeStatus::ALL {
        assert_eq!(Transition::Deliver.from().contains(&st), st.is_pending());
        assert_eq!(Transition::Retry.from().contains(&st), st.is_retryable());
    }
}

#[test]
fn transition_check_reports_from_and_to() {
    let delivered = stored(ExchangeState::Delivered { at: T0 });
    match Transition::Deliver.check(&delivered) {
        Err(StoreError::InvalidTransition {
            exchange_id,
            from,
            to,
        }) => {
            assert_eq!(exchange_id, "ex-1");
            assert_eq!(from, ExchangeStatus::Delivered);
            assert_eq!(to, ExchangeStatus::Delivered);
        }
        other => panic!("{other:?}"),
    }
    assert!(Transition::Redeliver.check(&delivered).is_ok());
    assert!(matches!(
        Transition::Retry.check_found("nope", None),
        Err(StoreError::NotFound { .. })
    ));
}

const TTL: Duration = Duration::from_secs(5);

#[test]
fn lease_free_is_taken_with_token_one() {
    let d = decide_lease(None, "sc", "a", TTL, T0).unwrap();
    let LeaseDecision::Take(l) = d else {
        panic!("{d:?}")
    };
    assert_eq!((l.token, l.holder.as_str()), (1, "a"));
    assert_eq!(l.expires_at, T0 + time::Duration::seconds(5));
}

#[test]
fn lease_renewal_takeover_and_exclusion() {
    let held = Lease {
        destination: "sc".into(),
        holder: "a".into(),
        token: 7,
        expires_at: T0 + time::Duration::seconds(2),
    };
    // Live, same holder: renewed, same token, new expiry.
    let d = decide_lease(Some(&held), "sc", "a", TTL, T0).unwrap();
    assert_eq!(
        d,
        LeaseDecision::Renew(Lease {
            expires_at: T0 + time::Duration::seconds(5),
            ..held.clone()
        })
    );
    // Live, another holder: nothing.
    assert_eq!(
        decide_lease(Some(&held), "sc", "b", TTL, T0).unwrap(),
        LeaseDecision::Held
    );
    // Expired (at exactly its expiry too): taken with a greater token, by anyone.
    let at_expiry = held.expires_at;
    for holder in ["a", "b"] {
        let d = decide_lease(Some(&held), "sc", holder, TTL, at_expiry).unwrap();
        let LeaseDecision::Take(l) = d else {
            panic!("{d:?}")
        };
        assert_eq!((l.token, l.holder.as_str()), (8, holder));
    }
    // Released: taken at once.
    let d = decide_lease(Some(&released(&held)), "sc", "b", TTL, T0).unwrap();
    assert!(matches!(d, LeaseDecision::Take(Lease { token: 8, .. })));
}

#[test]
fn lease_requests_are_validated() {
    for (dest, holder, ttl) in [("", "a", TTL), ("sc", "", TTL), ("sc", "a", Duration::ZERO)] {
        assert!(matches!(
            decide_lease(None, dest, holder, ttl, T0),
            Err(StoreError::InvalidInput { .. })
        ));
    }
    assert!(decide_lease(None, "sc", "a", Duration::from_secs(u64::MAX), T0).is_err());
}

#[test]
fn fence_requires_the_stored_token_and_destination() {
    let lease = Lease {
        destination: "sc".into(),
        holder: "a".into(),
        token: 3,
        expires_at: T0,
    };
    assert!(check_fence(Some(3), &lease, Some("sc")).is_ok());
    for stored in [None, Some(2), Some(4)] {
        assert!(matches!(
            check_fence(stored, &lease, Some("sc")),
            Err(StoreError::LeaseLost { token: 3, .. })
        ));
    }
    assert!(matches!(
        check_fence(Some(3), &lease, Some("pr")),
        Err(StoreError::InvalidInput { field: "lease", .. })
    ));
}

#[test]
fn ack_and_floor_are_monotone_and_clamped() {
    assert_eq!(ack_target(0, 5, 3), Some(3));
    assert_eq!(ack_target(0, 5, 99), Some(5));
    assert_eq!(ack_target(5, 5, 99), None);
    assert_eq!(ack_target(4, 9, 2), None);
    assert_eq!(floor_target(10, 20), Some(20));
    assert_eq!(floor_target(20, 10), None);
    assert_eq!(floor_target(20, 20), None);
}

#[test]
fn error_texts_are_cut_on_a_char_boundary() {
    let long = "é".repeat(MAX_ERROR_LEN + 5);
    assert_eq!(truncate_error(&long).chars().count(), MAX_ERROR_LEN);
    assert_eq!(truncate_error("short"), "short");
}

// --- audit --------------------------------------------------------------------

fn genesis() -> AuditHead {
    AuditHead {
        seq: 0,
        hash: GENESIS_HASH.into(),
    }
}

/// A small chain: an accepted exchange, then an ack.
fn chain() -> Vec<AuditEntry> {
    let e1 = AuditEntry::next(
        &genesis(),
        10,
        entries::accepted(&new_exchange(), 1),
        Some("d1".into()),
    );
    let e2 = AuditEntry::next(&e1.head(), 20, entries::inbox_acked(0, 0, 0, 0), None);
    vec![e1, e2]
}

fn verify(
    entries: Vec<AuditEntry>,
    head: Option<(i64, String)>,
    rows: &[(&str, &str)],
) -> Result<AuditReport, StoreError> {
    let mut v = ChainVerifier::new(&BTreeSet::new());
    for e in entries {
        v.entry(e)?;
    }
    v.head(head)?;
    for (id, digest) in rows {
        v.row(RowTable::Exchanges, id, digest)?;
    }
    v.rows_done(RowTable::Exchanges)?;
    v.rows_done(RowTable::Inbox)?;
    v.finish(0).map(|(r, _)| r)
}

#[test]
fn entries_chain_and_record_the_row_digest() {
    let c = chain();
    assert_eq!(c[0].seq, 1);
    assert_eq!(c[0].prev_hash, GENESIS_HASH);
    assert_eq!(c[1].prev_hash, c[0].hash);
    let detail: Value = serde_json::from_str(&c[0].detail).unwrap();
    assert_eq!(detail["rowDigest"], "d1");
    assert_eq!(detail["seq"], 1);
    let head = Some((2, c[1].hash.clone()));
    let report = verify(c, head, &[("ex-1", "d1")]).unwrap();
    assert_eq!((report.entries, report.exchanges), (2, 1));
}

#[test]
fn verifier_detects_edits_gaps_truncation_and_row_tampering() {
    let c = chain();
    let head = Some((2, c[1].hash.clone()));
    let rows = [("ex-1", "d1")];

    let mut edited = c.clone();
    edited[0].detail = edited[0].detail.replace("cq", "xx");
    assert!(matches!(
        verify(edited, head.clone(), &rows),
        Err(StoreError::AuditBroken { seq: 1, .. })
    ));

    let gap = vec![c[1].clone()];
    assert!(matches!(
        verify(gap, head.clone(), &rows),
        Err(StoreError::AuditBroken { seq: 1, .. })
    ));

    let truncated = vec![c[0].clone()];
    assert!(matches!(
        verify(truncated, head.clone(), &rows),
        Err(StoreError::AuditBroken { seq: 2, .. })
    ));

    assert!(matches!(
        verify(c.clone(), head.clone(), &[("ex-1", "changed")]),
        Err(StoreError::AuditBroken { seq: 1, .. })
    ));
    assert!(matches!(
        verify(c.clone(), head.clone(), &[("ex-1", "d1"), ("ex-2", "d2")]),
        Err(StoreError::AuditBroken { .. })
    ));
    assert!(matches!(
        verify(c, head, &[]),
        Err(StoreError::AuditBroken { seq: 1, .. })
    ));
}

#[test]
fn row_digest_encodes_types_and_table() {
    let a = audit::row_digest(RowTable::Exchanges, [Cell::Int(1), Cell::Text(b"x")]);
    assert_eq!(a.len(), 64);
    assert_ne!(
        a,
        audit::row_digest(RowTable::Exchanges, [Cell::Text(b"1"), Cell::Text(b"x")])
    );
    assert_ne!(
        a,
        audit::row_digest(RowTable::Inbox, [Cell::Int(1), Cell::Text(b"x")])
    );
    assert_ne!(
        audit::row_digest(RowTable::Inbox, [Cell::Null]),
        audit::row_digest(RowTable::Inbox, [Cell::Text(b"")])
    );
}

/// The streamed entry hash is the hash of the documented JSON array, byte
/// for byte (stored logs depend on it), escapes and non-ASCII included.
#[test]
fn entry_hash_is_the_hash_of_the_canonical_json_array() {
    use sha2::{Digest, Sha256};
    let head = AuditHead {
        seq: 41,
        hash: "ab".repeat(32),
    };
    for (exchange_id, detail) in [
        (
            Some("ex-\"1\"\u{2028}"),
            json!({"from": "forwarded", "error": "超时\n\t\u{0}"}),
        ),
        (None, json!({"upTo": 7})),
    ] {
        let draft = match exchange_id {
            Some(id) => Draft::about(id, AuditEvent::AttemptFailed, detail),
            None => Draft::general(AuditEvent::InboxAcked, detail),
        };
        let entry = AuditEntry::next(&head, 1_700_000_000_123_456_789, draft, None);
        let canonical = json!([
            entry.prev_hash,
            entry.seq,
            entry.at,
            entry.exchange_id,
            entry.event,
            entry.detail
        ])
        .to_string();
        let expected: String = Sha256::digest(canonical.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(entry.hash, expected);
    }
}

/// A vector computed outside Rust (Python's `json` and `hashlib`): stored
/// logs must keep verifying whatever changes in how the hash is streamed or
/// in serde_json.
#[test]
fn entry_hash_matches_a_vector_computed_elsewhere() {
    let head = AuditHead {
        seq: 1,
        hash: "f".repeat(64),
    };
    let detail = json!({"upTo": 7, "note": "say \"hi\"\n超时"});
    let entry = AuditEntry::next(&head, 5, Draft::general(AuditEvent::InboxAcked, detail), None);
    assert_eq!(
        entry.hash,
        "1f31ea718fed757982472f5b652f248623be890d04409f40935d9aa5b08d3eb1"
    );
}

proptest::proptest! {
    /// The chain text is exactly what serde_json writes, for links that
    /// need no escaping (every JWS) and for any other string.
    #[test]
    fn chain_json_is_serde_jsons_text(
        chain in proptest::collection::vec(
            proptest::prop_oneof![
                "[A-Za-z0-9_.-]{0,300}",
                proptest::string::string_regex("(?s).{0,80}").unwrap(),
                "[\u{0}-\u{7f}]{0,40}",
            ],
            0..5,
        )
    ) {
        let ours = chain_json(&chain).unwrap();
        proptest::prop_assert_eq!(&ours, &serde_json::to_string(&chain).unwrap());
        proptest::prop_assert_eq!(chain_from_json(&ours, "test").unwrap(), chain);
    }
}
