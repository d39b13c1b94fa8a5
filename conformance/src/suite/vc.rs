//! VC: the credential profile of SPEC §3 — required members, validity
//! window, issuer/key binding — on submission by the credit bank, and the
//! translation chain as a peer gateway delivers it in an envelope.

use super::{
    ensure, excerpt, expect_problem, expect_status, fail, no_answer, rejects_edited, submit_payload,
    ENVELOPES,
};
use crate::case;
use crate::catalogue::{CheckResult, TestCase, Verdict};
use crate::chain;
use crate::client::Response;
use crate::context::Ctx;
use crate::craft::{self, corrupt_signature, SigningKey};
use crate::fixtures::{self, issuer_id, set_window};
use serde_json::{json, Value};

/// This group's catalogue rows (one per line: the table is the data).
#[rustfmt::skip]
pub fn cases() -> Vec<TestCase> {
    vec![
        case!("VC-001", Must, "§3", CreditBank, "A valid credential is accepted: 202 {exchangeId, status: accepted}", valid),
        case!("VC-002", Must, "§3", CreditBank, "@context not starting with the VC 2.0 context is rejected", bad_context),
        case!("VC-003", Must, "§3", CreditBank, "type without LearningCredential is rejected", bad_type),
        case!("VC-004", Must, "§3", CreditBank, "Missing credentialSubject is rejected", no_subject),
        case!("VC-005", Must, "§3", CreditBank, "id that is not a URN UUID is rejected", bad_id),
        case!("VC-006", Must, "§3", CreditBank, "validUntil an hour ago: credential-expired", expired),
        case!("VC-007", Must, "§3", CreditBank, "validFrom an hour ahead: credential-not-yet-valid", future),
        case!("VC-008", Should, "§3", CreditBank, "validFrom 30 s ahead is within clock skew and accepted", skew_ok),
        case!("VC-009", Must, "§3", CreditBank, "validUntil 120 s ago is beyond any allowed skew", past_skew),
        case!("VC-010", Must, "§3", CreditBank, "issuer naming another member: issuer-mismatch", other_member),
        case!("VC-011", Must, "§2", CreditBank, "issuer naming the gateway role, signed by an issuer key: issuer-mismatch", other_role),
        case!("VC-012", Must, "§3", CreditBank, "iss different from issuer is rejected", iss_differs),
        case!("VC-013", Should, "§3", CreditBank, "A national id number as learner id is rejected", national_id),
        case!("VC-014", Must, "§3", CreditBank, "credentialSubject without level is rejected", no_level),
        case!("VC-015", Must, "§6", CreditBank, "Unknown framework: mapping-version-unknown", unknown_framework),
        case!("VC-016", Must, "§6", CreditBank, "Unknown frameworkVersion: mapping-version-unknown", unknown_version),
        case!("VC-017", Must, "§6", CreditBank, "Level outside the framework is rejected", level_out_of_range),
        case!("VC-018", Must, "§3", CreditBank, "Negative credits are rejected", negative_credits),
        case!("VC-020", Must, "§4", Peer, "A valid two-link envelope from a peer is accepted (202)", envelope_ok),
        case!("VC-021", Must, "§3", Peer, "Interchange evidence with a wrong digest: chain-broken", wrong_digest),
        case!("VC-022", Must, "§3", Peer, "Interchange evidence naming another predecessor: chain-broken", wrong_pred),
        case!("VC-023", Must, "§3", Peer, "Interchange signed with the issuer key instead of the gateway key", interchange_by_issuer),
        case!("VC-024", Must, "§3", Peer, "Envelope with the original only: chain-broken", truncated),
        case!("VC-025", Must, "§3", Peer, "Envelope whose original signature is corrupted is rejected", bad_original),
        case!("VC-026", Should, "§4", Peer, "Envelope for another destination: unknown-destination", wrong_destination),
        case!("VC-027", Must, "§3", Peer, "Interchange claiming the target's own gateway as issuer: issuer-mismatch", spoofed_gateway),
        case!("VC-028", Must, "§3", Peer, "Chain links in the wrong order: chain-broken", reversed),
        case!("VC-029", Should, "§3", CreditBank, "A national id number inside a urn:bashu:learner: id is rejected", national_id_in_urn),
        case!("VC-030", Must, "§3", CreditBank, "validUntil 50 s before validFrom, both within skew, is rejected", inverted_window),
        case!("VC-031", Must, "§3", Peer, "Interchange record that is not the recomputed translation (credits inflated): chain-broken naming the field", inflated),
        case!("VC-032", Must, "§3", Peer, "Interchange extensions not kept verbatim: chain-broken naming the field", extensions_altered),
        case!("VC-033", Must, "§3", Peer, "Interchange naming a mapping table version the target does not hold: mapping-version-unknown", unknown_table),
    ]
}

const SCHEMA: &[&str] = &["schema-violation"];

async fn valid(ctx: &Ctx) -> CheckResult {
    let resp = submit_payload(ctx, &ctx.valid_credential()?).await?;
    expect_status(&resp, 202)?;
    let body = resp.json().unwrap_or_default();
    ensure(body.get("exchangeId").is_some_and(Value::is_string), || {
        format!("no exchangeId in {}", excerpt(&resp))
    })?;
    ensure(body.get("status") == Some(&json!("accepted")), || {
        format!("status is {:?}, expected \"accepted\"", body.get("status"))
    })
}

async fn bad_context(ctx: &Ctx) -> CheckResult {
    rejects_edited(
        ctx,
        |c| c["@context"] = json!(["https://www.w3.org/2018/credentials/v1"]),
        SCHEMA,
    )
    .await
}

async fn bad_type(ctx: &Ctx) -> CheckResult {
    rejects_edited(ctx, |c| c["type"] = json!(["VerifiableCredential"]), SCHEMA).await
}

fn remove(value: &mut Value, key: &str) {
    if let Some(obj) = value.as_object_mut() {
        obj.remove(key);
    }
}

async fn no_subject(ctx: &Ctx) -> CheckResult {
    rejects_edited(ctx, |c| remove(c, "credentialSubject"), SCHEMA).await
}

async fn bad_id(ctx: &Ctx) -> CheckResult {
    rejects_edited(ctx, |c| c["id"] = json!("credential-42"), SCHEMA).await
}

async fn expired(ctx: &Ctx) -> CheckResult {
    rejects_edited(
        ctx,
        |c| set_window(c, Some(-7200), Some(-3600)),
        &["credential-expired"],
    )
    .await
}

async fn past_skew(ctx: &Ctx) -> CheckResult {
    rejects_edited(
        ctx,
        |c| set_window(c, Some(-7200), Some(-120)),
        &["credential-expired"],
    )
    .await
}

async fn future(ctx: &Ctx) -> CheckResult {
    rejects_edited(
        ctx,
        |c| set_window(c, Some(3600), Some(7200)),
        &["credential-not-yet-valid"],
    )
    .await
}

async fn skew_ok(ctx: &Ctx) -> CheckResult {
    let mut payload = ctx.valid_credential()?;
    set_window(&mut payload, Some(30), Some(86_400));
    expect_status(&submit_payload(ctx, &payload).await?, 202)
}

async fn other_member(ctx: &Ctx) -> CheckResult {
    let other = issuer_id(&ctx.destination, "credit-bank");
    rejects_edited(ctx, |c| c["issuer"] = json!(other), &["issuer-mismatch"]).await
}

async fn other_role(ctx: &Ctx) -> CheckResult {
    let gateway = issuer_id(&ctx.member, "gateway");
    rejects_edited(ctx, |c| c["issuer"] = json!(gateway), &["issuer-mismatch"]).await
}

async fn iss_differs(ctx: &Ctx) -> CheckResult {
    let other = issuer_id(&ctx.destination, "credit-bank");
    rejects_edited(
        ctx,
        |c| c["iss"] = json!(other),
        &["issuer-mismatch", "schema-violation"],
    )
    .await
}

async fn national_id(ctx: &Ctx) -> CheckResult {
    // A syntactically valid PRC resident id number (checksum digit X).
    rejects_edited(
        ctx,
        |c| c["credentialSubject"]["id"] = json!("11010519491231002X"),
        SCHEMA,
    )
    .await
}

async fn national_id_in_urn(ctx: &Ctx) -> CheckResult {
    // The same valid number as VC-013, as the opaque part of a Bashu learner id.
    let id = format!("urn:bashu:learner:{}:11010519491231002X", ctx.member);
    rejects_edited(ctx, |c| c["credentialSubject"]["id"] = json!(id), SCHEMA).await
}

async fn inverted_window(ctx: &Ctx) -> CheckResult {
    // Skew tolerates a clock difference to now, not a period that ends
    // before it starts.
    rejects_edited(ctx, |c| set_window(c, Some(30), Some(-20)), SCHEMA).await
}

async fn no_level(ctx: &Ctx) -> CheckResult {
    rejects_edited(ctx, |c| remove(&mut c["credentialSubject"], "level"), SCHEMA).await
}

async fn unknown_framework(ctx: &Ctx) -> CheckResult {
    rejects_edited(
        ctx,
        |c| c["credentialSubject"]["framework"] = json!("conformance-unknown"),
        // "Framework … not known" (§4 title) or "cannot be mapped": both read the SPEC.
        &["mapping-version-unknown", "unmappable-record"],
    )
    .await
}

async fn unknown_version(ctx: &Ctx) -> CheckResult {
    rejects_edited(
        ctx,
        |c| c["credentialSubject"]["frameworkVersion"] = json!("99.0.0"),
        &["mapping-version-unknown"],
    )
    .await
}

async fn level_out_of_range(ctx: &Ctx) -> CheckResult {
    rejects_edited(
        ctx,
        |c| c["credentialSubject"]["level"] = json!(99),
        &["unmappable-record", "schema-violation"],
    )
    .await
}

async fn negative_credits(ctx: &Ctx) -> CheckResult {
    rejects_edited(ctx, |c| c["credentialSubject"]["credits"] = json!(-3), SCHEMA).await
}

// ---- envelopes from a peer -------------------------------------------------

/// A peer's original credential (signed by the peer credit bank).
fn peer_original(ctx: &Ctx, issuer: &SigningKey, member: &str) -> Result<(String, Value), Verdict> {
    let framework = fixtures::default_framework(member);
    let record = ctx.record(framework)?;
    let payload = fixtures::credential(&issuer_id(member, "credit-bank"), member, &record);
    let jws = craft::sign_credential(&payload, issuer).map_err(|e| fail(e.to_string()))?;
    Ok((jws, payload))
}

/// How the interchange link of a crafted chain deviates from a valid one.
#[derive(Default)]
struct Twist<'a> {
    /// Bytes whose digest the evidence records (default: the original's).
    digest_of: Option<&'a str>,
    /// Predecessor id the evidence names (default: the original's).
    pred_id: Option<&'a str>,
    /// Issuer the interchange claims (default: the peer's gateway).
    issuer: Option<String>,
    /// Key that signs the interchange (default: the peer's gateway key).
    key: Option<&'a SigningKey>,
    /// Edits the honest interchange record (default: none).
    record: Option<fn(&mut Value)>,
    /// Table the evidence names (default: the one the records file gives).
    table: Option<chain::TableRef>,
    /// Key of the peer's credit bank that signs the original (default: the
    /// configured peer issuer key).
    issuer_key: Option<&'a SigningKey>,
    /// `verifiedAt` the interchange attests (default: now).
    verified_at: Option<String>,
}

/// `[original, interchange]` as the peer gateway would send it.
fn peer_chain(ctx: &Ctx, twist: Twist<'_>) -> Result<Vec<String>, Verdict> {
    let (peer, gateway_key, issuer_key) = ctx.peer_keys()?;
    let issuer_key = twist.issuer_key.unwrap_or(issuer_key);
    let (original, payload) = peer_original(ctx, issuer_key, &peer.member)?;
    let framework = fixtures::default_framework(&peer.member);
    let table = ctx.interchange_table(framework)?;
    let mut pred = payload.clone();
    if let Some(id) = twist.pred_id {
        pred["id"] = json!(id);
    }
    let digest_of = twist.digest_of.map_or_else(|| original.clone(), str::to_owned);
    let mut subject = chain::interchange_subject(&payload["credentialSubject"], framework, &table)
        .ok_or_else(|| {
            Verdict::Skip(format!(
                "the suite holds only the reference mapping table, not {} {}",
                table.id, table.version
            ))
        })?
        .map_err(fail)?;
    if let Some(edit) = twist.record {
        edit(&mut subject);
    }
    let table = twist.table.unwrap_or(table);
    let issuer = twist.issuer.unwrap_or_else(|| issuer_id(&peer.member, "gateway"));
    let key = twist.key.unwrap_or(gateway_key);
    let verified_at = twist
        .verified_at
        .unwrap_or_else(|| chain::rfc3339(time::OffsetDateTime::now_utc().unix_timestamp()));
    let interchange = chain::translation_attested(
        &digest_of,
        &pred,
        subject,
        &issuer,
        &table,
        key,
        Some(&verified_at),
    )
    .map_err(|e| fail(e.to_string()))?;
    Ok(vec![original, interchange])
}

/// A valid peer chain whose original is signed by `issuer_key` and whose
/// interchange attests `verified_at` (Unix seconds).
pub(crate) fn peer_chain_attested(
    ctx: &Ctx,
    issuer_key: &SigningKey,
    verified_at: i64,
) -> Result<Vec<String>, Verdict> {
    peer_chain(
        ctx,
        Twist {
            issuer_key: Some(issuer_key),
            verified_at: Some(chain::rfc3339(verified_at)),
            ..Twist::default()
        },
    )
}

async fn post_envelope(ctx: &Ctx, chain: &[String], destination: &str) -> Result<Response, Verdict> {
    post_envelope_as(ctx, &uuid::Uuid::new_v4().to_string(), chain, destination).await
}

/// A valid `[original, interchange]` chain from the peer.
pub(crate) fn valid_peer_chain(ctx: &Ctx) -> Result<Vec<String>, Verdict> {
    peer_chain(ctx, Twist::default())
}

/// Posts an envelope with this exchange id as the peer gateway.
pub(crate) async fn post_envelope_as(
    ctx: &Ctx,
    exchange_id: &str,
    chain: &[String],
    destination: &str,
) -> Result<Response, Verdict> {
    let peer = ctx.peer()?;
    let body = chain::envelope(exchange_id, &peer.member, destination, chain);
    peer.client
        .post_json(ENVELOPES, &body)
        .await
        .map_err(no_answer("POST envelopes"))
}

async fn envelope_rejected(ctx: &Ctx, chain: &[String], slugs: &[&str]) -> CheckResult {
    let resp = post_envelope(ctx, chain, &ctx.member).await?;
    expect_problem(&resp, slugs)
}

async fn envelope_ok(ctx: &Ctx) -> CheckResult {
    let chain = peer_chain(ctx, Twist::default())?;
    expect_status(&post_envelope(ctx, &chain, &ctx.member).await?, 202)
}

async fn wrong_digest(ctx: &Ctx) -> CheckResult {
    let chain = peer_chain(
        ctx,
        Twist {
            digest_of: Some("not the original"),
            ..Twist::default()
        },
    )?;
    envelope_rejected(ctx, &chain, &["chain-broken"]).await
}

async fn wrong_pred(ctx: &Ctx) -> CheckResult {
    let other = format!("urn:uuid:{}", uuid::Uuid::new_v4());
    let chain = peer_chain(
        ctx,
        Twist {
            pred_id: Some(&other),
            ..Twist::default()
        },
    )?;
    envelope_rejected(ctx, &chain, &["chain-broken"]).await
}

async fn interchange_by_issuer(ctx: &Ctx) -> CheckResult {
    let (_, _, issuer_key) = ctx.peer_keys()?;
    let chain = peer_chain(
        ctx,
        Twist {
            key: Some(issuer_key),
            ..Twist::default()
        },
    )?;
    envelope_rejected(ctx, &chain, &["issuer-mismatch", "chain-broken"]).await
}

async fn spoofed_gateway(ctx: &Ctx) -> CheckResult {
    let chain = peer_chain(
        ctx,
        Twist {
            issuer: Some(issuer_id(&ctx.member, "gateway")),
            ..Twist::default()
        },
    )?;
    envelope_rejected(ctx, &chain, &["issuer-mismatch", "chain-broken"]).await
}

async fn truncated(ctx: &Ctx) -> CheckResult {
    let mut chain = peer_chain(ctx, Twist::default())?;
    chain.truncate(1);
    envelope_rejected(ctx, &chain, &["chain-broken"]).await
}

async fn reversed(ctx: &Ctx) -> CheckResult {
    let mut chain = peer_chain(ctx, Twist::default())?;
    chain.reverse();
    envelope_rejected(ctx, &chain, &["chain-broken"]).await
}

async fn bad_original(ctx: &Ctx) -> CheckResult {
    let mut chain = peer_chain(ctx, Twist::default())?;
    let first = chain.first_mut().ok_or_else(|| fail("empty chain"))?;
    *first = corrupt_signature(first).ok_or_else(|| fail("crafting error"))?;
    envelope_rejected(ctx, &chain, &["invalid-signature", "chain-broken"]).await
}

/// A field-naming `chain-broken` for an interchange edited by `edit`.
async fn recomputation_catches(ctx: &Ctx, field: &str, edit: fn(&mut Value)) -> CheckResult {
    let chain = peer_chain(
        ctx,
        Twist {
            record: Some(edit),
            ..Twist::default()
        },
    )?;
    let resp = post_envelope(ctx, &chain, &ctx.member).await?;
    expect_problem(&resp, &["chain-broken"])?;
    let detail = resp
        .json()
        .and_then(|b| b.get("detail").and_then(Value::as_str).map(str::to_owned))
        .unwrap_or_default();
    ensure(detail.contains(field), || {
        format!("chain-broken, but the detail does not name `{field}`: {detail:?}")
    })
}

async fn inflated(ctx: &Ctx) -> CheckResult {
    recomputation_catches(ctx, "credits", |s| {
        let credits = s["credits"].as_f64().unwrap_or(0.0);
        s["credits"] = json!(credits * 20.0 + 1.0);
    })
    .await
}

async fn extensions_altered(ctx: &Ctx) -> CheckResult {
    recomputation_catches(ctx, "extensions", |s| {
        s["extensions"]["x-bashu-conformance-forged"] = json!(true);
    })
    .await
}

async fn unknown_table(ctx: &Ctx) -> CheckResult {
    let framework = fixtures::default_framework(&ctx.peer()?.member);
    let named = ctx.interchange_table(framework)?;
    let chain = peer_chain(
        ctx,
        Twist {
            table: Some(chain::TableRef {
                id: named.id,
                version: "999.0.0".into(),
            }),
            ..Twist::default()
        },
    )?;
    envelope_rejected(ctx, &chain, &["mapping-version-unknown"]).await
}

async fn wrong_destination(ctx: &Ctx) -> CheckResult {
    let chain = peer_chain(ctx, Twist::default())?;
    let resp = post_envelope(ctx, &chain, "zz").await?;
    expect_problem(&resp, &["unknown-destination"])
}
