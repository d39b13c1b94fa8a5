//! JSON documents the API returns for stored state (SPEC §4): exchange
//! status and inbox pages. Kept apart from the pipeline logic so the wire
//! shape lives in one place.

use crate::credential::profile::format_time;
use crate::store::{Exchange, ExchangeStatus, InboxItem};
use serde_json::{json, Map, Value};

/// `GET /v1/exchanges/{id}` document.
pub fn exchange_status(ex: &Exchange) -> Value {
    let mut doc = Map::new();
    doc.insert("exchangeId".into(), json!(ex.exchange_id));
    doc.insert("status".into(), json!(ex.status().as_str()));
    doc.insert("credentialId".into(), json!(ex.credential_id));
    doc.insert("origin".into(), json!(ex.origin));
    doc.insert("destination".into(), json!(ex.destination));
    doc.insert("acceptedAt".into(), json!(format_time(ex.accepted_at)));
    if let Some(at) = ex.forwarded_at {
        doc.insert("forwardedAt".into(), json!(format_time(at)));
    }
    let settled_key = match ex.status() {
        ExchangeStatus::Delivered => Some("deliveredAt"),
        ExchangeStatus::Rejected => Some("rejectedAt"),
        ExchangeStatus::DeadLettered => Some("deadLetteredAt"),
        ExchangeStatus::Accepted | ExchangeStatus::Forwarded => None,
    };
    if let (Some(key), Some(at)) = (settled_key, ex.state.settled_at()) {
        doc.insert(key.into(), json!(format_time(at)));
    }
    doc.insert("updatedAt".into(), json!(format_time(ex.updated_at)));
    doc.insert("attempts".into(), json!(ex.attempts));
    if let Some(err) = &ex.last_error {
        doc.insert("lastError".into(), json!(err));
    }
    if let Some(at) = ex.next_attempt_at {
        doc.insert("nextAttemptAt".into(), json!(format_time(at)));
    }
    if let Some(problem) = ex.problem() {
        doc.insert("problem".into(), problem.clone());
    }
    Value::Object(doc)
}

/// One inbox item of `GET /v1/inbox`.
///
/// Takes the item by value: its JWS strings move into the document instead
/// of being copied (a page holds up to 500 items of four JWS each).
pub fn inbox_item(item: InboxItem) -> Value {
    let mut doc = Map::new();
    doc.insert("cursor".into(), Value::from(item.cursor));
    doc.insert("exchangeId".into(), Value::String(item.exchange_id));
    doc.insert("origin".into(), Value::String(item.origin));
    doc.insert("receivedAt".into(), Value::String(format_time(item.received_at)));
    let credential = item.chain.last().cloned().unwrap_or_default();
    doc.insert("credential".into(), Value::String(credential));
    let chain = item.chain.into_iter().map(Value::String).collect();
    doc.insert("chain".into(), Value::Array(chain));
    Value::Object(doc)
}

/// A page of the inbox. `items` may hold one more row than `limit`: that
/// extra row only tells whether a next page exists and is not returned.
pub fn inbox_page(mut items: Vec<InboxItem>, limit: u32) -> Value {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let more = items.len() > limit;
    items.truncate(limit);
    let next = if more {
        items.last().map(|i| json!(i.cursor))
    } else {
        None
    };
    json!({
        "items": items.into_iter().map(inbox_item).collect::<Vec<_>>(),
        "next": next.unwrap_or(Value::Null),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::OffsetDateTime;

    fn item(cursor: u64) -> InboxItem {
        InboxItem {
            cursor,
            exchange_id: format!("ex-{cursor}"),
            origin: "cq".into(),
            received_at: OffsetDateTime::UNIX_EPOCH,
            chain: vec!["a".into(), "b".into(), format!("home-{cursor}")],
        }
    }

    fn forwarded() -> Exchange {
        Exchange {
            seq: 3,
            exchange_id: "ex-3".into(),
            credential_id: "urn:uuid:c".into(),
            credential_digest: "0".repeat(64),
            origin: "cq".into(),
            destination: "sc".into(),
            state: crate::store::ExchangeState::Forwarded,
            accepted_at: OffsetDateTime::UNIX_EPOCH,
            forwarded_at: Some(OffsetDateTime::UNIX_EPOCH + time::Duration::seconds(1)),
            updated_at: OffsetDateTime::UNIX_EPOCH + time::Duration::seconds(1),
            attempts: 4,
            last_error: Some("cannot connect to peer: connection refused".into()),
            next_attempt_at: Some(OffsetDateTime::UNIX_EPOCH + time::Duration::seconds(9)),
        }
    }

    #[test]
    fn status_shows_attempts_last_error_and_next_attempt() {
        let doc = exchange_status(&forwarded());
        assert_eq!(doc["status"], "forwarded");
        assert_eq!(doc["attempts"], 4);
        assert_eq!(doc["lastError"], "cannot connect to peer: connection refused");
        assert_eq!(doc["nextAttemptAt"], "1970-01-01T00:00:09Z");

        // Out of the outbox: no next attempt is announced.
        let settled = Exchange {
            state: crate::store::ExchangeState::DeadLettered {
                at: OffsetDateTime::UNIX_EPOCH + time::Duration::seconds(20),
            },
            next_attempt_at: None,
            ..forwarded()
        };
        let doc = exchange_status(&settled);
        assert_eq!(doc["status"], "dead-lettered");
        assert!(doc.get("nextAttemptAt").is_none());
        assert_eq!(doc["deadLetteredAt"], "1970-01-01T00:00:20Z");
        assert_eq!(doc["lastError"], "cannot connect to peer: connection refused");
    }

    #[test]
    fn next_is_set_only_when_more_items_follow() {
        // The pipeline asks the store for limit + 1 rows.
        let full = inbox_page(vec![item(4), item(7), item(9)], 2);
        assert_eq!(full["items"].as_array().map(Vec::len), Some(2));
        assert_eq!(full["next"], 7);
        assert_eq!(full["items"][1]["credential"], "home-7");
        // Every member SPEC §4 names, and nothing else.
        assert_eq!(
            full["items"][0],
            json!({
                "cursor": 4, "exchangeId": "ex-4", "origin": "cq",
                "receivedAt": "1970-01-01T00:00:00Z", "credential": "home-4",
                "chain": ["a", "b", "home-4"],
            })
        );

        let last = inbox_page(vec![item(4), item(7)], 2);
        assert_eq!(last["items"].as_array().map(Vec::len), Some(2));
        assert!(last["next"].is_null());

        let empty = inbox_page(Vec::new(), 100);
        assert_eq!(empty, json!({"items": [], "next": null}));
    }
}
