//! API: request validation, problem+json everywhere, exchange status, the
//! inbox with cursors and acknowledgements, and the operator routes (SPEC §4).

use super::{
    accepted_exchange, check_problem_shape, ensure, excerpt, expect_problem, expect_status, fail, no_answer,
    submit_payload, submit_to, ADMIN_EXCHANGES, ENVELOPES, EXCHANGES, INBOX, INBOX_ACK,
};
use crate::case;
use crate::catalogue::{CheckResult, TestCase, Verdict};
use crate::client::Client;
use crate::context::Ctx;
use crate::fixtures::set_window;
use bytes::Bytes;
use http::Method;
use serde_json::{json, Value};

/// This group's catalogue rows (one per line: the table is the data).
#[rustfmt::skip]
pub fn cases() -> Vec<TestCase> {
    vec![
        case!("API-001", Must, "§4", Any, "Unknown route: 404 with a problem+json body", unknown_route),
        case!("API-002", Must, "§4", CreditBank, "Body that is not JSON: 400 malformed-request", not_json),
        case!("API-003", Must, "§4", CreditBank, "Submission without credential: 400 malformed-request", missing_credential),
        case!("API-004", Must, "§4", CreditBank, "credential that is not a string: 400 malformed-request", credential_not_string),
        case!("API-005", Must, "§4", CreditBank, "Unknown destination: 422 unknown-destination", unknown_destination),
        case!("API-006", Must, "§4", CreditBank, "Request body of 2 MiB: 413 payload-too-large", huge_body),
        case!("API-007", Must, "§4", CreditBank, "Unknown exchange id: 404 problem+json", unknown_exchange),
        case!("API-008", Must, "§4", CreditBank, "Exchange status document has id, status and timestamps", status_document),
        case!("API-009", Must, "§4", CreditBank, "Problems never echo the credential or learner id", no_echo),
        case!("API-010", Must, "§4", CreditBank, "Inbox page is {items, next}", inbox_shape),
        case!("API-011", Should, "§4", CreditBank, "Inbox limit above 500 is refused or clamped", inbox_limit),
        case!("API-012", Should, "§4", CreditBank, "Inbox cursor that is not a cursor: 400 malformed-request", inbox_bad_cursor),
        case!("API-013", Must, "§4", CreditBank, "Inbox pages by cursor: oldest first, no repeats, next null at the end", inbox_paging),
        case!("API-014", Must, "§4", CreditBank, "Inbox ack: acknowledged items are not returned again", inbox_ack),
        case!("API-015", Must, "§4", CreditBank, "Inbox ack without upTo: 400 malformed-request", ack_malformed),
        case!("API-016", Must, "§4", CreditBank, "Inbox items carry cursor, exchangeId, origin, receivedAt, credential, 3-link chain", inbox_items),
        case!("API-017", Must, "§4", Peer, "Envelope that is not JSON: 400 malformed-request", envelope_not_json),
        case!("API-018", Must, "§4", CreditBank, "Empty submission body: 400 malformed-request", empty_body),
        case!("API-019", Must, "§4", CreditBank, "Successful answers are application/json", json_success),
        case!("API-020", Should, "§4", CreditBank, "Wrong method on a route: 404/405 with problem+json", wrong_method),
        case!("API-021", Must, "§4", Operator, "Operator lists exchanges by status", admin_list),
        case!("API-022", Should, "§4", Operator, "Operator retry of an unknown exchange: 404 problem+json", admin_retry_unknown),
        case!("API-023", Must, "§4", Operator, "Operator trust refresh succeeds", admin_refresh),
    ]
}

async fn post_raw(
    client: &Client,
    path: &str,
    content_type: &str,
    body: &'static [u8],
) -> Result<crate::client::Response, Verdict> {
    client
        .send(Method::POST, path, Some(content_type), Bytes::from_static(body))
        .await
        .map_err(no_answer(path))
}

async fn unknown_route(ctx: &Ctx) -> CheckResult {
    let resp = ctx
        .any_client()?
        .get("/v1/conformance-no-such-route")
        .await
        .map_err(no_answer("GET unknown route"))?;
    expect_status(&resp, 404)?;
    check_problem_shape(&resp)
}

async fn not_json(ctx: &Ctx) -> CheckResult {
    let resp = post_raw(
        ctx.credit_bank()?,
        EXCHANGES,
        "application/json",
        b"{\"credential\": ",
    )
    .await?;
    expect_problem(&resp, &["malformed-request"])
}

async fn empty_body(ctx: &Ctx) -> CheckResult {
    let resp = post_raw(ctx.credit_bank()?, EXCHANGES, "application/json", b"").await?;
    expect_problem(&resp, &["malformed-request"])
}

async fn missing_credential(ctx: &Ctx) -> CheckResult {
    let resp = ctx
        .credit_bank()?
        .post_json(EXCHANGES, &json!({ "destination": ctx.destination }))
        .await
        .map_err(no_answer("POST exchanges"))?;
    expect_problem(&resp, &["malformed-request"])
}

async fn credential_not_string(ctx: &Ctx) -> CheckResult {
    let resp = ctx
        .credit_bank()?
        .post_json(
            EXCHANGES,
            &json!({ "credential": {"jws": 1}, "destination": ctx.destination }),
        )
        .await
        .map_err(no_answer("POST exchanges"))?;
    expect_problem(&resp, &["malformed-request"])
}

async fn unknown_destination(ctx: &Ctx) -> CheckResult {
    let payload = ctx.valid_credential()?;
    let jws = crate::craft::sign_credential(&payload, ctx.issuer_key()?).map_err(|e| fail(e.to_string()))?;
    let resp = submit_to(ctx, &jws, "zz").await?;
    expect_problem(&resp, &["unknown-destination"])
}

async fn huge_body(ctx: &Ctx) -> CheckResult {
    let body = json!({ "credential": "a".repeat(2 * 1024 * 1024), "destination": ctx.destination });
    let resp = ctx
        .credit_bank()?
        .send_oversized(EXCHANGES, "application/json", Bytes::from(body.to_string()))
        .await
        .map_err(no_answer("POST 2 MiB"))?;
    expect_problem(&resp, &["payload-too-large"])
}

async fn unknown_exchange(ctx: &Ctx) -> CheckResult {
    let path = format!("{EXCHANGES}/{}", uuid::Uuid::new_v4());
    let resp = ctx
        .credit_bank()?
        .get(&path)
        .await
        .map_err(no_answer("GET exchange"))?;
    expect_status(&resp, 404)?;
    check_problem_shape(&resp)
}

/// True if `v` is an RFC 3339 timestamp.
fn is_timestamp(v: &Value) -> bool {
    v.as_str().is_some_and(|s| {
        time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).is_ok()
    })
}

fn has_timestamp(v: &Value) -> bool {
    match v {
        Value::Object(map) => map.values().any(|x| is_timestamp(x) || has_timestamp(x)),
        Value::Array(items) => items.iter().any(has_timestamp),
        _ => false,
    }
}

async fn status_document(ctx: &Ctx) -> CheckResult {
    let (id, _) = accepted_exchange(ctx).await?;
    let resp = ctx
        .credit_bank()?
        .get(&format!("{EXCHANGES}/{id}"))
        .await
        .map_err(no_answer("GET exchange"))?;
    expect_status(&resp, 200)?;
    let doc = resp.json().ok_or_else(|| fail("status document is not JSON"))?;
    ensure(
        doc.get("exchangeId").and_then(Value::as_str) == Some(id.as_str()),
        || format!("exchangeId differs: {}", excerpt(&resp)),
    )?;
    let status = doc.get("status").and_then(Value::as_str).unwrap_or_default();
    ensure(
        ["accepted", "forwarded", "delivered", "rejected", "dead-lettered"].contains(&status),
        || format!("status {status:?} is not in the contract"),
    )?;
    ensure(has_timestamp(&doc), || {
        "no RFC 3339 timestamp in the status document".into()
    })
}

async fn no_echo(ctx: &Ctx) -> CheckResult {
    let mut payload = ctx.valid_credential()?;
    set_window(&mut payload, Some(-7200), Some(-3600));
    let learner = payload["credentialSubject"]["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let resp = submit_payload(ctx, &payload).await?;
    expect_problem(&resp, &["credential-expired"])?;
    let text = resp.text();
    ensure(!learner.is_empty() && !text.contains(&learner), || {
        "problem echoes the learner id".into()
    })?;
    ensure(!text.contains("eyJ"), || "problem echoes a JWS segment".into())
}

/// `GET /v1/inbox` with the given query.
async fn inbox(ctx: &Ctx, query: &str) -> Result<crate::client::Response, Verdict> {
    ctx.credit_bank()?
        .get(&format!("{INBOX}{query}"))
        .await
        .map_err(no_answer("GET inbox"))
}

async fn inbox_page(ctx: &Ctx, query: &str) -> Result<Value, Verdict> {
    let resp = inbox(ctx, query).await?;
    expect_status(&resp, 200)?;
    let page = resp
        .json()
        .ok_or_else(|| fail(format!("inbox page is not JSON: {}", excerpt(&resp))))?;
    ensure(page.get("items").is_some_and(Value::is_array), || {
        "no items array".into()
    })?;
    ensure(
        page.get("next")
            .is_some_and(|n| n.is_null() || n.is_string() || n.is_u64()),
        || format!("next is {:?}", page.get("next")),
    )?;
    Ok(page)
}

/// A cursor as it goes into `?after=`.
pub fn cursor_param(cursor: &Value) -> String {
    let raw = match cursor {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    raw.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Makes sure the target's inbox holds at least `n` items, delivering
/// envelopes as the peer if the suite can; skips otherwise.
async fn seeded_items(ctx: &Ctx, n: usize) -> Result<Vec<Value>, Verdict> {
    let items = all_items(ctx).await?;
    if items.len() >= n {
        return Ok(items);
    }
    for _ in items.len()..n {
        super::idem::deliver_envelope(ctx).await?;
    }
    let items = all_items(ctx).await?;
    ensure(items.len() >= n, || {
        format!("inbox holds {} items after seeding {n}", items.len())
    })?;
    Ok(items)
}

/// Every unacknowledged inbox item, following `next`.
async fn all_items(ctx: &Ctx) -> Result<Vec<Value>, Verdict> {
    let mut items = Vec::new();
    let mut query = "?limit=500".to_owned();
    for _ in 0..100 {
        let page = inbox_page(ctx, &query).await?;
        items.extend(page["items"].as_array().cloned().unwrap_or_default());
        match page.get("next") {
            Some(next) if !next.is_null() => query = format!("?limit=500&after={}", cursor_param(next)),
            _ => return Ok(items),
        }
    }
    Err(fail("inbox did not end after 100 pages"))
}

async fn inbox_shape(ctx: &Ctx) -> CheckResult {
    inbox_page(ctx, "?limit=10").await.map(|_| ())
}

async fn inbox_limit(ctx: &Ctx) -> CheckResult {
    let resp = inbox(ctx, "?limit=501").await?;
    if resp.status.as_u16() == 400 {
        return expect_problem(&resp, &["malformed-request"]);
    }
    expect_status(&resp, 200)?;
    let n = resp
        .json()
        .and_then(|p| p["items"].as_array().map(Vec::len))
        .unwrap_or(0);
    ensure(n <= 500, || format!("returned {n} items for limit=501"))
}

async fn inbox_bad_cursor(ctx: &Ctx) -> CheckResult {
    let resp = inbox(ctx, "?after=%7Bnot-a-cursor%7D").await?;
    expect_problem(&resp, &["malformed-request"])
}

fn cursors_ascend(a: &Value, b: &Value) -> bool {
    match (a.as_u64(), b.as_u64()) {
        (Some(x), Some(y)) => x < y,
        _ => a != b,
    }
}

async fn inbox_paging(ctx: &Ctx) -> CheckResult {
    seeded_items(ctx, 2).await?;
    let mut seen: Vec<Value> = Vec::new();
    let mut query = "?limit=1".to_owned();
    for _ in 0..10_000 {
        let page = inbox_page(ctx, &query).await?;
        let items = page["items"].as_array().cloned().unwrap_or_default();
        ensure(items.len() <= 1, || {
            format!("limit=1 returned {} items", items.len())
        })?;
        if let Some(item) = items.first() {
            let cursor = item.get("cursor").cloned().unwrap_or(Value::Null);
            ensure(!cursor.is_null(), || "item without cursor".into())?;
            if let Some(last) = seen.last() {
                ensure(cursors_ascend(last, &cursor), || {
                    format!("cursor {cursor} does not follow {last}")
                })?;
            }
            ensure(!seen.contains(&cursor), || format!("cursor {cursor} repeated"))?;
            seen.push(cursor);
        }
        match page.get("next") {
            Some(next) if !next.is_null() => {
                ensure(!items.is_empty(), || "empty page with a next cursor".into())?;
                query = format!("?limit=1&after={}", cursor_param(next));
            }
            _ => {
                return ensure(seen.len() >= 2, || {
                    format!("paging ended after {} items", seen.len())
                })
            }
        }
    }
    Err(fail("paging did not end"))
}

async fn inbox_ack(ctx: &Ctx) -> CheckResult {
    let items = seeded_items(ctx, 1).await?;
    let first = items.first().ok_or_else(|| fail("inbox empty"))?;
    let cursor = first.get("cursor").cloned().unwrap_or(Value::Null);
    let resp = ctx
        .credit_bank()?
        .post_json(INBOX_ACK, &json!({ "upTo": cursor }))
        .await
        .map_err(no_answer("POST inbox/ack"))?;
    ensure(resp.status.is_success(), || {
        format!("ack answered {}: {}", resp.status, excerpt(&resp))
    })?;
    let after = all_items(ctx).await?;
    ensure(!after.iter().any(|i| i.get("cursor") == Some(&cursor)), || {
        format!("acknowledged cursor {cursor} is still returned")
    })
}

async fn ack_malformed(ctx: &Ctx) -> CheckResult {
    let resp = ctx
        .credit_bank()?
        .post_json(INBOX_ACK, &json!({ "until": 1 }))
        .await
        .map_err(no_answer("POST inbox/ack"))?;
    expect_problem(&resp, &["malformed-request"])
}

async fn inbox_items(ctx: &Ctx) -> CheckResult {
    let items = seeded_items(ctx, 1).await?;
    for item in &items {
        for member in [
            "cursor",
            "exchangeId",
            "origin",
            "receivedAt",
            "credential",
            "chain",
        ] {
            ensure(item.get(member).is_some(), || format!("item lacks {member:?}"))?;
        }
        ensure(is_timestamp(&item["receivedAt"]), || {
            "receivedAt is not RFC 3339".into()
        })?;
        let chain = item["chain"].as_array().cloned().unwrap_or_default();
        ensure(chain.len() == 3, || format!("chain has {} links", chain.len()))?;
        ensure(chain.get(2) == item.get("credential"), || {
            "credential is not the last chain link".into()
        })?;
    }
    Ok(())
}

async fn envelope_not_json(ctx: &Ctx) -> CheckResult {
    let resp = post_raw(&ctx.peer()?.client, ENVELOPES, "application/json", b"[not json").await?;
    expect_problem(&resp, &["malformed-request"])
}

async fn json_success(ctx: &Ctx) -> CheckResult {
    let payload = ctx.valid_credential()?;
    let resp = submit_payload(ctx, &payload).await?;
    expect_status(&resp, 202)?;
    let media = resp.media_type();
    ensure(media.as_deref() == Some("application/json"), || {
        format!("202 content type is {media:?}")
    })
}

async fn wrong_method(ctx: &Ctx) -> CheckResult {
    let resp = ctx
        .credit_bank()?
        .send(Method::DELETE, EXCHANGES, None, Bytes::new())
        .await
        .map_err(no_answer("DELETE exchanges"))?;
    ensure(matches!(resp.status.as_u16(), 404 | 405), || {
        format!("DELETE answered {}", resp.status)
    })?;
    check_problem_shape(&resp)
}

async fn admin_list(ctx: &Ctx) -> CheckResult {
    let resp = ctx
        .operator()?
        .get(&format!("{ADMIN_EXCHANGES}?status=delivered"))
        .await
        .map_err(no_answer("GET admin exchanges"))?;
    expect_status(&resp, 200)?;
    ensure(resp.json().is_some(), || "admin list is not JSON".into())
}

async fn admin_retry_unknown(ctx: &Ctx) -> CheckResult {
    let path = format!("{ADMIN_EXCHANGES}/{}/retry", uuid::Uuid::new_v4());
    let resp = ctx
        .operator()?
        .send(
            Method::POST,
            &path,
            Some("application/json"),
            Bytes::from_static(b"{}"),
        )
        .await
        .map_err(no_answer("POST retry"))?;
    expect_status(&resp, 404)?;
    check_problem_shape(&resp)
}

async fn admin_refresh(ctx: &Ctx) -> CheckResult {
    let resp = ctx
        .operator()?
        .send(
            Method::POST,
            "/v1/admin/trust/refresh",
            Some("application/json"),
            Bytes::from_static(b"{}"),
        )
        .await
        .map_err(no_answer("POST trust refresh"))?;
    ensure(resp.status.is_success(), || {
        format!("trust refresh answered {}: {}", resp.status, excerpt(&resp))
    })
}
