//! TRUST: the signed trust key set of SPEC §2 as any peer sees it, checked
//! against the federation key the suite was told to pin.

use super::{ensure, expect_problem, expect_status, fail, submit};
use crate::case;
use crate::catalogue::{CheckResult, TestCase, Verdict};
use crate::context::Ctx;
use crate::craft;
use crate::keyset::{self, KeySet, KEYS_PATH};
use serde_json::Value;
use std::time::{Duration, Instant};

/// This group's catalogue rows (one per line: the table is the data).
#[rustfmt::skip]
pub fn cases() -> Vec<TestCase> {
    vec![
        case!("TRUST-001", Must, "§2", Any, "Key set signature verifies with the pinned federation key", signature),
        case!("TRUST-002", Must, "§2", Any, "Key set header: typ bashu-keyset+jwt, alg ES256 or EdDSA", header),
        case!("TRUST-003", Must, "§2", Any, "Key set iss is the member, iat not ahead, exp in the future", claims),
        case!("TRUST-004", Must, "§2", Any, "seq never goes backwards across two fetches", seq_monotone),
        case!("TRUST-005", Must, "§2", Any, "Every key has kid, use sig, alg, status and role from the contract", key_fields),
        case!("TRUST-006", Must, "§2", Any, "No private key material is published", no_private),
        case!("TRUST-007", Must, "§2", Any, "An active issuer key and an active gateway key are published", active_keys),
        case!("TRUST-008", Must, "§2", CreditBank, "The credit bank's issuer key is published with role issuer", issuer_listed),
        case!("TRUST-009", Must, "§2", Any, "kids are unique within the key set", unique_kids),
        case!("TRUST-010", Must, "§2", CreditBank, "A revoked issuer key is listed as revoked and never verifies", revoked),
        case!("TRUST-011", Must, "§2", Any, "Rotation is visible: seq increases and the new key appears as next", rotation),
        case!("TRUST-012", Should, "§2", Any, "retiring keys carry retire_after", retiring_has_date),
        case!("TRUST-013", Should, "§2", Any, "Key set is served as application/jwt", content_type),
        case!("TRUST-014", Must, "§2", CreditBank, "A revoked key carries revoked_at (Unix seconds, not in the future)", revoked_at),
        case!("TRUST-015", Must, "§2", Peer, "An original by a since-revoked peer issuer key: accepted iff the interchange's verifiedAt precedes revoked_at", verified_before_revocation),
    ]
}

async fn verified(ctx: &Ctx) -> Result<KeySet, Verdict> {
    keyset::fetch_verified(ctx.any_client()?, ctx.federation_key()?).await
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

async fn signature(ctx: &Ctx) -> CheckResult {
    verified(ctx).await.map(|_| ())
}

async fn header(ctx: &Ctx) -> CheckResult {
    let set = keyset::fetch(ctx.any_client()?).await?;
    let typ = set.header.get("typ").and_then(Value::as_str);
    ensure(typ == Some("bashu-keyset+jwt"), || format!("typ is {typ:?}"))?;
    let alg = set.header.get("alg").and_then(Value::as_str);
    ensure(matches!(alg, Some("ES256" | "EdDSA")), || {
        format!("alg is {alg:?}")
    })
}

async fn claims(ctx: &Ctx) -> CheckResult {
    let set = verified(ctx).await?;
    let iss = set.payload.get("iss").and_then(Value::as_str);
    ensure(iss == Some(ctx.member.as_str()), || {
        format!("iss is {iss:?}, expected {:?}", ctx.member)
    })?;
    let (iat, exp) = (set.iat(), set.exp());
    let (Some(iat), Some(exp)) = (iat, exp) else {
        return Err(fail(format!("iat {iat:?} / exp {exp:?} missing or not integers")));
    };
    ensure(iat <= now() + 60, || format!("iat {iat} is in the future"))?;
    ensure(exp > now(), || format!("exp {exp} has passed"))?;
    ensure(set.seq().is_some(), || {
        "seq missing or not an unsigned integer".into()
    })
}

async fn seq_monotone(ctx: &Ctx) -> CheckResult {
    let client = ctx.any_client()?;
    let first = keyset::fetch(client).await?;
    let second = keyset::fetch(client).await?;
    let (Some(a), Some(b)) = (first.seq(), second.seq()) else {
        return Err(fail("seq missing"));
    };
    ensure(b >= a, || format!("seq went backwards: {a} then {b}"))
}

async fn key_fields(ctx: &Ctx) -> CheckResult {
    let set = verified(ctx).await?;
    ensure(!set.keys().is_empty(), || "no keys".into())?;
    for key in set.keys() {
        let s = |name: &str| key.get(name).and_then(Value::as_str);
        let kid = s("kid").ok_or_else(|| fail("key without kid"))?;
        ensure(s("use") == Some("sig"), || {
            format!("{kid}: use is {:?}", s("use"))
        })?;
        ensure(matches!(s("alg"), Some("ES256" | "EdDSA")), || {
            format!("{kid}: alg is {:?}", s("alg"))
        })?;
        ensure(
            matches!(s("status"), Some("next" | "active" | "retiring" | "revoked")),
            || format!("{kid}: status is {:?}", s("status")),
        )?;
        ensure(matches!(s("role"), Some("issuer" | "gateway")), || {
            format!("{kid}: role is {:?}", s("role"))
        })?;
        keyset::entry_jwk(key).map_err(|e| fail(format!("{kid}: {e}")))?;
    }
    Ok(())
}

async fn no_private(ctx: &Ctx) -> CheckResult {
    let set = keyset::fetch(ctx.any_client()?).await?;
    for key in set.keys() {
        for private in ["d", "p", "q", "dp", "dq", "qi", "k"] {
            ensure(key.get(private).is_none(), || {
                format!("key {:?} publishes private member {private:?}", key.get("kid"))
            })?;
        }
    }
    Ok(())
}

async fn active_keys(ctx: &Ctx) -> CheckResult {
    let set = verified(ctx).await?;
    for role in ["issuer", "gateway"] {
        ensure(!set.keys_with(role, &["active"]).is_empty(), || {
            format!("no active {role} key")
        })?;
    }
    Ok(())
}

async fn issuer_listed(ctx: &Ctx) -> CheckResult {
    let key = ctx.issuer_key()?;
    let set = keyset::fetch(ctx.any_client()?).await?;
    let entry = set
        .key(key.kid())
        .ok_or_else(|| fail(format!("kid {:?} is not in the key set", key.kid())))?;
    let role = entry.get("role").and_then(Value::as_str);
    ensure(role == Some("issuer"), || format!("role is {role:?}"))?;
    // The published key must be the public half of the configured one.
    let probe =
        craft::sign_credential(&serde_json::json!({"probe": true}), key).map_err(|e| fail(e.to_string()))?;
    let jwk = keyset::entry_jwk(entry).map_err(fail)?;
    keyset::verify_signature(&probe, &jwk).map_err(|e| fail(format!("published key does not match: {e}")))
}

async fn unique_kids(ctx: &Ctx) -> CheckResult {
    let set = keyset::fetch(ctx.any_client()?).await?;
    let mut kids: Vec<&str> = set
        .keys()
        .iter()
        .filter_map(|k| k.get("kid").and_then(Value::as_str))
        .collect();
    let n = kids.len();
    kids.sort_unstable();
    kids.dedup();
    ensure(kids.len() == n, || "duplicate kid".into())
}

/// How long a key store change may take to show in the published set and
/// in the target's own trust cache (refresh checks, single-flight refetch
/// rate limits, brief negative caching: SPEC §2).
const PROPAGATION: Duration = Duration::from_secs(5);

/// Fetches the key set until `pred` holds or [`PROPAGATION`] passes; returns
/// the last set seen.
async fn fetch_until(ctx: &Ctx, pred: impl Fn(&KeySet) -> bool) -> Result<(KeySet, bool), Verdict> {
    let client = ctx.any_client()?;
    let deadline = Instant::now() + PROPAGATION;
    loop {
        let set = keyset::fetch(client).await?;
        if pred(&set) || Instant::now() >= deadline {
            let ok = pred(&set);
            return Ok((set, ok));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn status_of<'a>(set: &'a KeySet, kid: &str) -> Option<&'a str> {
    set.key(kid).and_then(|k| k.get("status")).and_then(Value::as_str)
}

async fn revoked(ctx: &Ctx) -> CheckResult {
    let key = ctx.revoked_issuer_key().await?;
    let (_, listed) = fetch_until(ctx, |set| status_of(set, key.kid()) == Some("revoked")).await?;
    ensure(listed, || format!("kid {:?} is not listed as revoked", key.kid()))?;
    let jws = craft::sign_credential(&ctx.valid_credential()?, key).map_err(|e| fail(e.to_string()))?;
    // The target may still hold a set without this kid (rate-limited
    // refetch): `unknown-key` is retried within the propagation window.
    let deadline = Instant::now() + PROPAGATION;
    loop {
        let resp = submit(ctx, &jws).await?;
        let unknown = expect_problem(&resp, &["unknown-key"]).is_ok();
        if !unknown || Instant::now() >= deadline {
            return expect_problem(&resp, &["revoked-key"]);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn rotation(ctx: &Ctx) -> CheckResult {
    let control = ctx.control()?;
    let before = keyset::fetch(ctx.any_client()?).await?;
    let a = before.seq().ok_or_else(|| fail("seq missing"))?;
    control
        .rotate()
        .await
        .map_err(|e| fail(format!("rotation failed: {e}")))?;
    let new_next = |set: &KeySet| {
        set.keys_with("gateway", &["next"]).into_iter().any(|k| {
            let kid = k.get("kid").and_then(Value::as_str).unwrap_or_default();
            before.key(kid).is_none()
        })
    };
    let (after, visible) = fetch_until(ctx, new_next).await?;
    ensure(visible, || "no new key with status next after rotation".into())?;
    let b = after.seq().ok_or_else(|| fail("seq missing"))?;
    ensure(b > a, || {
        format!("seq did not increase on rotation: {a} then {b}")
    })
}

async fn retiring_has_date(ctx: &Ctx) -> CheckResult {
    let set = keyset::fetch(ctx.any_client()?).await?;
    for key in set
        .keys_with("issuer", &["retiring"])
        .into_iter()
        .chain(set.keys_with("gateway", &["retiring"]))
    {
        ensure(key.get("retire_after").is_some_and(Value::is_i64), || {
            format!("retiring key {:?} has no retire_after", key.get("kid"))
        })?;
    }
    Ok(())
}

async fn content_type(ctx: &Ctx) -> CheckResult {
    let resp = ctx
        .any_client()?
        .get(KEYS_PATH)
        .await
        .map_err(super::no_answer("GET keys"))?;
    let media = resp.media_type();
    ensure(media.as_deref() == Some("application/jwt"), || {
        format!("content type is {media:?}")
    })
}

async fn revoked_at(ctx: &Ctx) -> CheckResult {
    let key = ctx.revoked_issuer_key().await?;
    let (set, listed) = fetch_until(ctx, |set| status_of(set, key.kid()) == Some("revoked")).await?;
    ensure(listed, || format!("kid {:?} is not listed as revoked", key.kid()))?;
    let entry = set.key(key.kid()).ok_or_else(|| fail("revoked key vanished"))?;
    let at = entry.get("revoked_at").and_then(Value::as_i64);
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    ensure(at.is_some_and(|t| t > 0 && t <= now + 60), || {
        format!(
            "revoked key {:?} has revoked_at {:?}",
            key.kid(),
            entry.get("revoked_at")
        )
    })
}

/// Posts `chain` as the peer, retrying while the target still answers
/// `unknown-key` (its rate-limited refetch has not seen the new key yet).
async fn post_once_known(ctx: &Ctx, chain: &[String]) -> Result<crate::client::Response, Verdict> {
    let deadline = Instant::now() + PROPAGATION;
    loop {
        let id = uuid::Uuid::new_v4().to_string();
        let resp = super::vc::post_envelope_as(ctx, &id, chain, &ctx.member).await?;
        let unknown = expect_problem(&resp, &["unknown-key"]).is_ok();
        if !unknown || Instant::now() >= deadline {
            return Ok(resp);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn verified_before_revocation(ctx: &Ctx) -> CheckResult {
    let control = ctx.control()?;
    let (jwk, revoked_at) = control
        .revoked_peer_issuer_key()
        .await
        .map_err(|e| fail(format!("cannot revoke an issuer key on the peer: {e}")))?;
    let key = craft::SigningKey::from_jwk(jwk).map_err(|e| fail(e.to_string()))?;
    let before = super::vc::peer_chain_attested(ctx, &key, revoked_at - 30)?;
    let resp = post_once_known(ctx, &before).await?;
    expect_status(&resp, 202)?;
    let at = super::vc::peer_chain_attested(ctx, &key, revoked_at)?;
    expect_problem(&post_once_known(ctx, &at).await?, &["revoked-key"])
}
