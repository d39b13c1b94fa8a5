//! DELIVERY: a submitted exchange reaches the destination's inbox as the
//! three-link chain of SPEC §3, every link verifiable with published keys,
//! and the origin reports it `delivered` (SPEC §4, §5).

use super::{ensure, excerpt, expect_status, fail, no_answer, submit, EXCHANGES, INBOX};
use crate::case;
use crate::catalogue::{CheckResult, TestCase, Verdict};
use crate::chain::names_predecessor;
use crate::client::Client;
use crate::context::{Ctx, Delivered};
use crate::craft::{self, decode_compact};
use crate::keyset::{self, KeySet};
use serde_json::Value;
use std::time::{Duration, Instant};

/// This group's catalogue rows (one per line: the table is the data).
#[rustfmt::skip]
pub fn cases() -> Vec<TestCase> {
    vec![
        case!("DELIVERY-001", Must, "§5", CreditBank, "An accepted exchange reaches status delivered", reaches_delivered),
        case!("DELIVERY-002", Must, "§3", Destination, "The destination inbox holds [original, interchange, home]; the original byte for byte", three_links),
        case!("DELIVERY-003", Must, "§3", Destination, "Every link verifies with its issuer's published key of the right role", links_verify),
        case!("DELIVERY-004", Must, "§3", Destination, "Each translation names its predecessor by id and SHA-256 of its exact bytes", evidence_digests),
        case!("DELIVERY-005", Must, "§3", Destination, "Translations are issued by the origin and destination gateways", translation_issuers),
        case!("DELIVERY-006", Must, "§4", Destination, "Inbox item: credential is the home link, origin and exchangeId match", item_fields),
        case!("DELIVERY-007", Must, "§5", Destination, "The exchange is in the destination inbox exactly once", exactly_once),
    ]
}

const POLL: Duration = Duration::from_millis(250);

/// Polls the origin until the exchange is `delivered`; fails on a terminal
/// status or when the delivery timeout passes.
pub(crate) async fn wait_delivered(ctx: &Ctx, id: &str) -> Result<Value, Verdict> {
    let client = ctx.credit_bank()?;
    let deadline = Instant::now() + ctx.delivery_timeout;
    let mut last = String::from("unknown");
    while Instant::now() < deadline {
        let resp = client
            .get(&format!("{EXCHANGES}/{id}"))
            .await
            .map_err(no_answer("GET exchange"))?;
        expect_status(&resp, 200)?;
        let doc = resp.json().unwrap_or_default();
        last = doc["status"].as_str().unwrap_or_default().to_owned();
        match last.as_str() {
            "delivered" => return Ok(doc),
            "rejected" | "dead-lettered" => {
                return Err(fail(format!("exchange {id} ended {last}: {}", excerpt(&resp))))
            }
            _ => tokio::time::sleep(POLL).await,
        }
    }
    Err(fail(format!(
        "exchange {id} still {last:?} after {:?}",
        ctx.delivery_timeout
    )))
}

/// Every inbox item of `client`'s member with this exchange id.
pub(crate) async fn inbox_items_for(client: &Client, exchange_id: &str) -> Result<Vec<Value>, Verdict> {
    let mut found = Vec::new();
    let mut query = "?limit=500".to_owned();
    for _ in 0..100 {
        let resp = client
            .get(&format!("{INBOX}{query}"))
            .await
            .map_err(no_answer("GET destination inbox"))?;
        expect_status(&resp, 200)?;
        let page = resp.json().unwrap_or_default();
        if let Some(items) = page["items"].as_array() {
            found.extend(items.iter().filter(|i| i["exchangeId"] == exchange_id).cloned());
        }
        match page.get("next") {
            Some(next) if !next.is_null() => {
                query = format!("?limit=500&after={}", super::api::cursor_param(next));
            }
            _ => return Ok(found),
        }
    }
    Err(fail("destination inbox did not end after 100 pages"))
}

/// Submits `payload`, waits for delivery and finds it in the destination inbox.
pub(crate) async fn deliver(ctx: &Ctx, payload: Value) -> Result<Delivered, Verdict> {
    let dest = ctx.dest()?;
    let jws = craft::sign_credential(&payload, ctx.issuer_key()?).map_err(|e| fail(e.to_string()))?;
    let resp = submit(ctx, &jws).await?;
    expect_status(&resp, 202)?;
    let id = super::exchange_id(&resp)?;
    wait_delivered(ctx, &id).await?;
    // Delivered means durably in the destination inbox: no waiting here.
    let item = inbox_items_for(&dest.client, &id)
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| fail(format!("delivered exchange {id} is not in the destination inbox")))?;
    Ok(Delivered {
        exchange_id: id,
        credential: jws,
        payload,
        item,
    })
}

/// The one full exchange the DELIVERY and MAP groups inspect.
pub(crate) async fn delivered(ctx: &Ctx) -> Result<&Delivered, Verdict> {
    let shared = ctx
        .delivered
        .get_or_init(|| async { deliver(ctx, ctx.valid_credential()?).await })
        .await;
    shared.as_ref().map_err(Clone::clone)
}

/// The delivered chain as strings, checked to have three links.
pub(crate) fn chain_of(d: &Delivered) -> Result<Vec<String>, Verdict> {
    let chain: Vec<String> = d.item["chain"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).map(str::to_owned).collect())
        .unwrap_or_default();
    ensure(chain.len() == 3, || {
        format!("chain has {} links, expected 3", chain.len())
    })?;
    Ok(chain)
}

/// Decoded payloads of the chain links.
pub(crate) fn payloads(chain: &[String]) -> Result<Vec<Value>, Verdict> {
    chain
        .iter()
        .enumerate()
        .map(|(i, jws)| {
            decode_compact(jws)
                .map(|(_, p)| p)
                .ok_or_else(|| fail(format!("link {i} is not a decodable compact JWS")))
        })
        .collect()
}

async fn reaches_delivered(ctx: &Ctx) -> CheckResult {
    let (id, _) = super::accepted_exchange(ctx).await?;
    wait_delivered(ctx, &id).await.map(|_| ())
}

async fn three_links(ctx: &Ctx) -> CheckResult {
    let d = delivered(ctx).await?;
    let chain = chain_of(d)?;
    ensure(chain.first() == Some(&d.credential), || {
        "chain[0] is not byte-identical to the submitted credential".into()
    })
}

/// `(member, role)` of an issuer URN `urn:bashu:<member>:<role>`.
fn issuer_parts(issuer: &str) -> Option<(&str, &str)> {
    let rest = issuer.strip_prefix("urn:bashu:")?;
    rest.split_once(':')
}

fn issuer_of(payload: &Value) -> String {
    match payload.get("issuer") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Object(o)) => o.get("id").and_then(Value::as_str).unwrap_or_default().to_owned(),
        _ => String::new(),
    }
}

async fn key_sets(ctx: &Ctx) -> Result<(KeySet, KeySet), Verdict> {
    let dest = ctx.dest()?;
    let origin = match ctx.federation_key() {
        Ok(k) => keyset::fetch_verified(ctx.any_client()?, k).await?,
        Err(_) => keyset::fetch(ctx.any_client()?).await?,
    };
    let destination = match &dest.federation_key {
        Some(k) => keyset::fetch_verified(&dest.client, k).await?,
        None => keyset::fetch(&dest.client).await?,
    };
    Ok((origin, destination))
}

async fn links_verify(ctx: &Ctx) -> CheckResult {
    let d = delivered(ctx).await?;
    let chain = chain_of(d)?;
    let (origin, destination) = key_sets(ctx).await?;
    for (i, jws) in chain.iter().enumerate() {
        let (header, payload) = decode_compact(jws).ok_or_else(|| fail(format!("link {i} undecodable")))?;
        let issuer = issuer_of(&payload);
        let (member, role) = issuer_parts(&issuer)
            .ok_or_else(|| fail(format!("link {i}: issuer {issuer:?} is not a Bashu URN")))?;
        let set = if member == ctx.member {
            &origin
        } else if member == ctx.destination {
            &destination
        } else {
            return Err(fail(format!(
                "link {i}: issuer member {member:?} is neither side"
            )));
        };
        let kid = header["kid"].as_str().unwrap_or_default();
        let entry = set
            .key(kid)
            .ok_or_else(|| fail(format!("link {i}: kid {kid:?} not in {member}'s key set")))?;
        let key_role = match role {
            "credit-bank" => "issuer",
            other => other,
        };
        ensure(entry["role"] == key_role, || {
            format!("link {i}: key {kid} has role {}, issuer is {role}", entry["role"])
        })?;
        let jwk = keyset::entry_jwk(entry).map_err(fail)?;
        keyset::verify_signature(jws, &jwk).map_err(|e| fail(format!("link {i}: {e}")))?;
    }
    Ok(())
}

async fn evidence_digests(ctx: &Ctx) -> CheckResult {
    let chain = chain_of(delivered(ctx).await?)?;
    let payloads = payloads(&chain)?;
    for i in 1..chain.len() {
        let pred_id = payloads[i - 1]["id"].as_str().unwrap_or_default();
        ensure(names_predecessor(&payloads[i], pred_id, &chain[i - 1]), || {
            format!("link {i} does not name link {} by id and SHA-256", i - 1)
        })?;
    }
    Ok(())
}

async fn translation_issuers(ctx: &Ctx) -> CheckResult {
    let chain = chain_of(delivered(ctx).await?)?;
    let payloads = payloads(&chain)?;
    let expected = [
        crate::fixtures::issuer_id(&ctx.member, "credit-bank"),
        crate::fixtures::issuer_id(&ctx.member, "gateway"),
        crate::fixtures::issuer_id(&ctx.destination, "gateway"),
    ];
    for (i, (payload, want)) in payloads.iter().zip(&expected).enumerate() {
        let got = issuer_of(payload);
        ensure(&got == want, || {
            format!("link {i} issuer is {got:?}, expected {want:?}")
        })?;
        if i > 0 {
            let types = payload["type"].as_array().cloned().unwrap_or_default();
            ensure(
                types.contains(&Value::from("TranslatedLearningCredential")),
                || format!("link {i} type lacks TranslatedLearningCredential"),
            )?;
        }
    }
    Ok(())
}

async fn item_fields(ctx: &Ctx) -> CheckResult {
    let d = delivered(ctx).await?;
    let chain = chain_of(d)?;
    ensure(
        d.item["credential"].as_str() == chain.get(2).map(String::as_str),
        || "credential is not chain[2]".into(),
    )?;
    ensure(d.item["origin"] == ctx.member.as_str(), || {
        format!("origin is {}", d.item["origin"])
    })?;
    ensure(d.item["exchangeId"] == d.exchange_id.as_str(), || {
        format!("exchangeId is {}", d.item["exchangeId"])
    })
}

async fn exactly_once(ctx: &Ctx) -> CheckResult {
    let d = delivered(ctx).await?;
    let n = inbox_items_for(&ctx.dest()?.client, &d.exchange_id).await?.len();
    ensure(n == 1, || {
        format!("exchange is {n} times in the destination inbox")
    })
}
