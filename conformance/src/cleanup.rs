//! After a run: acknowledge the suite's own inbox items, and nothing else.
//!
//! A run writes real items into the target's and the destination's inbox
//! (every credential it sends is marked, see [`crate::fixtures::TEST_MARKER`]).
//! An ack covers every cursor up to the one given, so the suite acks only
//! the leading run of its own items after the current ack point and stops
//! at the first item it did not send: a real credential is never
//! acknowledged on the credit bank's behalf.

use crate::client::Client;
use crate::context::Ctx;
use crate::craft::b64url_decode;
use crate::fixtures::is_test_credential;
use serde_json::{json, Value};

/// Inbox pages looked at per inbox (500 items each).
const MAX_PAGES: usize = 20;

/// What the cleanup did for one inbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AckSummary {
    pub inbox: String,
    /// Test items acknowledged.
    pub acknowledged: usize,
    /// Whether a non-test item stopped the walk (it and later items stay).
    pub stopped_at_foreign_item: bool,
}

/// Acks the leading test items of the target's and the destination's inbox.
pub async fn ack_test_items(ctx: &Ctx) -> Vec<Result<AckSummary, String>> {
    let mut out = Vec::new();
    if let Ok(bank) = ctx.credit_bank() {
        out.push(ack_inbox(bank, &ctx.member).await);
    }
    if let Ok(dest) = ctx.dest() {
        out.push(ack_inbox(&dest.client, &ctx.destination).await);
    }
    out
}

/// The payload of a chain's first link (the original credential).
fn original_payload(item: &Value) -> Option<Value> {
    let jws = item.get("chain")?.get(0)?.as_str()?;
    let payload = b64url_decode(jws.split('.').nth(1)?)?;
    serde_json::from_slice(&payload).ok()
}

async fn ack_inbox(client: &Client, member: &str) -> Result<AckSummary, String> {
    let mut last = None;
    let mut acknowledged = 0;
    let mut stopped = false;
    let mut after: Option<u64> = None;
    'pages: for _ in 0..MAX_PAGES {
        let query = match after {
            Some(a) => format!("/v1/inbox?limit=500&after={a}"),
            None => "/v1/inbox?limit=500".to_owned(),
        };
        let resp = client
            .get(&query)
            .await
            .map_err(|e| format!("{member} inbox: {e}"))?;
        let page = resp
            .json()
            .filter(|_| resp.status.is_success())
            .ok_or_else(|| format!("{member} inbox: HTTP {}", resp.status))?;
        let items = page["items"].as_array().cloned().unwrap_or_default();
        for item in &items {
            let ours = original_payload(item).is_some_and(|p| is_test_credential(&p));
            if !ours {
                stopped = true;
                break 'pages;
            }
            last = item["cursor"].as_u64();
            acknowledged += 1;
        }
        match page["next"].as_u64() {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    if let Some(up_to) = last {
        let resp = client
            .post_json("/v1/inbox/ack", &json!({ "upTo": up_to }))
            .await
            .map_err(|e| format!("{member} inbox ack: {e}"))?;
        if !resp.status.is_success() {
            return Err(format!("{member} inbox ack: HTTP {}", resp.status));
        }
    }
    Ok(AckSummary {
        inbox: member.to_owned(),
        acknowledged,
        stopped_at_foreign_item: stopped,
    })
}
