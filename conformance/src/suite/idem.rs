//! IDEM: idempotency of submissions (by credential `id`) and of envelopes
//! (by `exchangeId`), including under concurrency (SPEC §4).

use super::vc::{post_envelope_as, valid_peer_chain};
use super::{ensure, exchange_id, expect_problem, expect_status, fail, submit, submit_payload, INBOX};
use crate::case;
use crate::catalogue::{CheckResult, TestCase, Verdict};
use crate::context::Ctx;
use crate::craft;
use serde_json::{json, Value};

/// This group's catalogue rows (one per line: the table is the data).
#[rustfmt::skip]
pub fn cases() -> Vec<TestCase> {
    vec![
        case!("IDEM-001", Must, "§4", CreditBank, "Resubmitting the same JWS: 200 with the same exchangeId", resubmit),
        case!("IDEM-002", Must, "§4", CreditBank, "Same credential id, different bytes: 409 duplicate-conflict", conflict),
        case!("IDEM-003", Must, "§4", CreditBank, "Eight concurrent identical submissions: one 202, the rest 200, one exchangeId", concurrent),
        case!("IDEM-004", Must, "§4", Peer, "Envelope replay is accepted again and stored once", envelope_replay),
        case!("IDEM-005", Should, "§4", Peer, "Envelope replay with a different chain: 409 duplicate-conflict", envelope_conflict),
        case!("IDEM-006", Must, "§4", Peer, "The same original under a new exchangeId: 409 duplicate-conflict, one inbox item", original_replayed),
        case!("IDEM-007", Must, "§4", Peer, "An envelope reusing the id of the target's own outgoing exchange: 409 duplicate-conflict", own_exchange_id),
    ]
}

fn sign(ctx: &Ctx, payload: &Value) -> Result<String, Verdict> {
    craft::sign_credential(payload, ctx.issuer_key()?).map_err(|e| fail(e.to_string()))
}

async fn resubmit(ctx: &Ctx) -> CheckResult {
    let jws = sign(ctx, &ctx.valid_credential()?)?;
    let first = submit(ctx, &jws).await?;
    expect_status(&first, 202)?;
    let second = submit(ctx, &jws).await?;
    expect_status(&second, 200)?;
    let (a, b) = (exchange_id(&first)?, exchange_id(&second)?);
    ensure(a == b, || format!("exchangeId changed: {a} then {b}"))
}

async fn conflict(ctx: &Ctx) -> CheckResult {
    let payload = ctx.valid_credential()?;
    expect_status(&submit(ctx, &sign(ctx, &payload)?).await?, 202)?;
    let mut altered = payload;
    altered["credentialSubject"]["credits"] = json!(1);
    expect_problem(
        &submit(ctx, &sign(ctx, &altered)?).await?,
        &["duplicate-conflict"],
    )
}

async fn concurrent(ctx: &Ctx) -> CheckResult {
    let jws = sign(ctx, &ctx.valid_credential()?)?;
    let mut tasks = Vec::new();
    for _ in 0..8 {
        tasks.push(submit(ctx, &jws));
    }
    let mut created = 0;
    let mut ids = Vec::new();
    for resp in join_all(tasks).await {
        let resp = resp?;
        match resp.status.as_u16() {
            202 => created += 1,
            200 => {}
            other => return Err(fail(format!("concurrent duplicate answered {other}"))),
        }
        ids.push(exchange_id(&resp)?);
    }
    ensure(created == 1, || {
        format!("{created} submissions answered 202, expected exactly 1")
    })?;
    ids.dedup();
    ensure(ids.len() == 1, || format!("several exchangeIds: {ids:?}"))
}

/// Runs futures concurrently on the current task.
async fn join_all<F: std::future::Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut pinned: Vec<_> = futures.into_iter().map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = pinned.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (fut, slot) in pinned.iter_mut().zip(out.iter_mut()) {
            if slot.is_none() {
                match fut.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *slot = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter().flatten().collect()
}

/// Delivers one valid envelope as the peer; returns its exchange id.
pub(crate) async fn deliver_envelope(ctx: &Ctx) -> Result<String, Verdict> {
    let id = uuid::Uuid::new_v4().to_string();
    let chain = valid_peer_chain(ctx)?;
    expect_status(&post_envelope_as(ctx, &id, &chain, &ctx.member).await?, 202)?;
    Ok(id)
}

/// How many inbox items carry this exchange id (credit bank view).
async fn inbox_count(ctx: &Ctx, exchange_id: &str) -> Result<usize, Verdict> {
    let client = ctx.credit_bank()?;
    let mut count = 0;
    let mut query = "?limit=500".to_owned();
    for _ in 0..100 {
        let resp = client
            .get(&format!("{INBOX}{query}"))
            .await
            .map_err(super::no_answer("GET inbox"))?;
        expect_status(&resp, 200)?;
        let page = resp.json().unwrap_or_default();
        count += page["items"].as_array().map_or(0, |items| {
            items.iter().filter(|i| i["exchangeId"] == exchange_id).count()
        });
        match page.get("next") {
            Some(next) if !next.is_null() => {
                query = format!("?limit=500&after={}", super::api::cursor_param(next));
            }
            _ => return Ok(count),
        }
    }
    Err(fail("inbox did not end after 100 pages"))
}

async fn envelope_replay(ctx: &Ctx) -> CheckResult {
    let id = uuid::Uuid::new_v4().to_string();
    let chain = valid_peer_chain(ctx)?;
    expect_status(&post_envelope_as(ctx, &id, &chain, &ctx.member).await?, 202)?;
    let replay = post_envelope_as(ctx, &id, &chain, &ctx.member).await?;
    ensure(matches!(replay.status.as_u16(), 200 | 202), || {
        format!("replay answered {}", replay.status)
    })?;
    match ctx.credit_bank() {
        Ok(_) => {
            let n = inbox_count(ctx, &id).await?;
            ensure(n == 1, || format!("exchange {id} is {n} times in the inbox"))
        }
        // Without the credit bank's view only the answer can be checked.
        Err(_) => Ok(()),
    }
}

async fn envelope_conflict(ctx: &Ctx) -> CheckResult {
    let id = uuid::Uuid::new_v4().to_string();
    expect_status(
        &post_envelope_as(ctx, &id, &valid_peer_chain(ctx)?, &ctx.member).await?,
        202,
    )?;
    let other = valid_peer_chain(ctx)?;
    expect_problem(
        &post_envelope_as(ctx, &id, &other, &ctx.member).await?,
        &["duplicate-conflict"],
    )
}

async fn original_replayed(ctx: &Ctx) -> CheckResult {
    let first = uuid::Uuid::new_v4().to_string();
    let chain = valid_peer_chain(ctx)?;
    expect_status(&post_envelope_as(ctx, &first, &chain, &ctx.member).await?, 202)?;
    let again = uuid::Uuid::new_v4().to_string();
    expect_problem(
        &post_envelope_as(ctx, &again, &chain, &ctx.member).await?,
        &["duplicate-conflict"],
    )?;
    match ctx.credit_bank() {
        Ok(_) => {
            let n = inbox_count(ctx, &again).await?;
            ensure(n == 0, || {
                format!("the replayed original is in the inbox as {again}")
            })
        }
        Err(_) => Ok(()),
    }
}

async fn own_exchange_id(ctx: &Ctx) -> CheckResult {
    // Needs an exchange the target itself accepted from its credit bank.
    ctx.credit_bank()?;
    let resp = submit_payload(ctx, &ctx.valid_credential()?).await?;
    expect_status(&resp, 202)?;
    let own = exchange_id(&resp)?;
    let chain = valid_peer_chain(ctx)?;
    expect_problem(
        &post_envelope_as(ctx, &own, &chain, &ctx.member).await?,
        &["duplicate-conflict"],
    )
}
