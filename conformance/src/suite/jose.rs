//! JOSE: every rejection SPEC §3 lists, each crafted so that exactly one
//! thing is wrong. Where a real signature is possible the token is signed
//! with the credit bank's genuine issuer key, so a gateway that ignores the
//! defect would accept it (and fail the test) rather than reject it for
//! some other reason.

use super::{expect_problem, expect_status, fail, submit};
use crate::case;
use crate::catalogue::{CheckResult, TestCase, Verdict};
use crate::context::Ctx;
use crate::craft::{
    self, corrupt_signature, encode, nested_object, non_canonical_signature, set_trailing_bits, sign_raw,
    sign_segments, Encoding, KeyAlg, Signature, SigningKey,
};
use serde_json::{json, Value};

/// Header defects are reported as this type (SPEC §4: "JWS algorithm or header not allowed").
const HEADER: &[&str] = &["unsupported-algorithm"];
/// Encoding defects: the token is not a canonical compact JWS. The SPEC
/// names the defect, not the type; these three are the defensible readings.
const ENCODING: &[&str] = &["malformed-request", "invalid-signature", "schema-violation"];
/// Defects in the JSON itself (duplicate members, depth).
const JSON: &[&str] = &["malformed-request", "schema-violation"];

/// This group's catalogue rows (one per line: the table is the data).
#[rustfmt::skip]
pub fn cases() -> Vec<TestCase> {
    vec![
        case!("JOSE-001", Must, "§3", CreditBank, "alg none is rejected (unsupported-algorithm)", alg_none),
        case!("JOSE-002", Must, "§3", CreditBank, "HS256 keyed with the issuer's public key is rejected", hs256),
        case!("JOSE-003", Must, "§3", CreditBank, "RS256 is rejected", rs256),
        case!("JOSE-004", Must, "§3", CreditBank, "ES384 is rejected", es384),
        case!("JOSE-005", Must, "§3", CreditBank, "b64:false (RFC 7797) is rejected", b64_false),
        case!("JOSE-006", Must, "§3", CreditBank, "Any crit header is rejected", crit),
        case!("JOSE-007", Must, "§3", CreditBank, "jku header is rejected", jku),
        case!("JOSE-008", Must, "§3", CreditBank, "x5u header is rejected", x5u),
        case!("JOSE-009", Must, "§3", CreditBank, "Embedded jwk header is rejected", embedded_jwk),
        case!("JOSE-010", Must, "§3", CreditBank, "x5c header is rejected", x5c),
        case!("JOSE-011", Must, "§3", CreditBank, "Unknown kid is rejected (unknown-key)", unknown_kid),
        case!("JOSE-012", Must, "§3", CreditBank, "Missing kid is rejected", missing_kid),
        case!("JOSE-013", Must, "§3", CreditBank, "Padded base64url segments are rejected", padded),
        case!("JOSE-014", Must, "§3", CreditBank, "Standard-alphabet base64 segments are rejected", std_alphabet),
        case!("JOSE-015", Must, "§3", CreditBank, "Non-zero trailing bits in base64url are rejected", trailing_bits),
        case!("JOSE-016", Must, "§3", CreditBank, "Duplicate member names in the header are rejected", dup_header),
        case!("JOSE-017", Must, "§3", CreditBank, "Duplicate member names in the payload are rejected", dup_payload),
        case!("JOSE-018", Must, "§3", CreditBank, "JWS over 256 KiB is rejected (payload-too-large)", oversize),
        case!("JOSE-019", Must, "§3", CreditBank, "JSON nesting deeper than 32 is rejected", too_deep),
        case!("JOSE-020", Must, "§3", CreditBank, "Corrupted signature is rejected (invalid-signature)", bad_signature),
        case!("JOSE-021", Must, "§3", CreditBank, "typ other than vc+jwt is rejected", wrong_typ),
        case!("JOSE-022", Must, "§3", CreditBank, "Empty signature with alg ES256/EdDSA is rejected", empty_signature),
        case!("JOSE-023", Must, "§3", CreditBank, "Signature transplanted from another credential is rejected", transplant),
        case!("JOSE-024", Must, "§3", CreditBank, "alg naming the other allowed algorithm than the key's is rejected", alg_swap),
        case!("JOSE-025", Should, "§3", CreditBank, "A 200 KiB JWS (under the limit) is accepted", large_ok),
        case!("JOSE-026", Should, "§3", CreditBank, "Nesting depth 30 (under the limit) is accepted", deep_ok),
    ]
}

fn craft_err(e: craft::CraftError) -> Verdict {
    fail(format!("cannot craft token: {e}"))
}

/// The profile header of the issuer key, with `extra` members merged in.
fn header(key: &SigningKey, extra: Value) -> Value {
    let mut h = key.vc_header();
    if let (Some(h), Some(extra)) = (h.as_object_mut(), extra.as_object()) {
        h.extend(extra.clone());
    }
    h
}

/// Signs header and payload with the genuine issuer key, canonically.
fn genuine(key: &SigningKey, header: &Value, payload: &Value) -> Result<String, Verdict> {
    craft::sign_json(header, payload, key).map_err(craft_err)
}

async fn rejected(ctx: &Ctx, jws: &str, slugs: &[&str]) -> CheckResult {
    let resp = submit(ctx, jws).await?;
    expect_problem(&resp, slugs)
}

async fn header_rejected(ctx: &Ctx, extra: Value) -> CheckResult {
    let key = ctx.issuer_key()?;
    let jws = genuine(key, &header(key, extra), &ctx.valid_credential()?)?;
    rejected(ctx, &jws, HEADER).await
}

async fn alg_none(ctx: &Ctx) -> CheckResult {
    let key = ctx.issuer_key()?;
    let h = header(key, json!({"alg": "none"}));
    let payload = ctx.valid_credential()?;
    let jws = sign_raw(
        h.to_string().as_bytes(),
        payload.to_string().as_bytes(),
        Encoding::Canonical,
        Signature::Empty,
    )
    .map_err(craft_err)?;
    rejected(ctx, &jws, HEADER).await
}

async fn hs256(ctx: &Ctx) -> CheckResult {
    let key = ctx.issuer_key()?;
    // The classic confusion attack: the public key is the HMAC secret.
    let secret = key.public_jwk().map_err(craft_err)?.to_string();
    let h = header(key, json!({"alg": "HS256"}));
    let payload = ctx.valid_credential()?;
    let jws = sign_raw(
        h.to_string().as_bytes(),
        payload.to_string().as_bytes(),
        Encoding::Canonical,
        Signature::Hmac(secret.as_bytes()),
    )
    .map_err(craft_err)?;
    rejected(ctx, &jws, HEADER).await
}

async fn rs256(ctx: &Ctx) -> CheckResult {
    let key = ctx.issuer_key()?;
    let h = header(key, json!({"alg": "RS256"}));
    let payload = ctx.valid_credential()?;
    let jws = sign_raw(
        h.to_string().as_bytes(),
        payload.to_string().as_bytes(),
        Encoding::Canonical,
        Signature::Rsa,
    )
    .map_err(craft_err)?;
    rejected(ctx, &jws, HEADER).await
}

async fn es384(ctx: &Ctx) -> CheckResult {
    header_rejected(ctx, json!({"alg": "ES384"})).await
}

async fn b64_false(ctx: &Ctx) -> CheckResult {
    // Under RFC 7797 the signing input is `header64 "." payload-as-is`; with
    // the base64url text as the payload that is byte for byte the ordinary
    // signing input, so a gateway that ignores `b64` accepts this token.
    header_rejected(ctx, json!({"b64": false, "crit": ["b64"]})).await
}

async fn crit(ctx: &Ctx) -> CheckResult {
    header_rejected(ctx, json!({"crit": ["urn:bashu:ext"], "urn:bashu:ext": true})).await
}

async fn jku(ctx: &Ctx) -> CheckResult {
    header_rejected(ctx, json!({"jku": "https://127.0.0.1:9/keys.json"})).await
}

async fn x5u(ctx: &Ctx) -> CheckResult {
    header_rejected(ctx, json!({"x5u": "https://127.0.0.1:9/cert.pem"})).await
}

async fn embedded_jwk(ctx: &Ctx) -> CheckResult {
    let key = ctx.issuer_key()?;
    let public: Value = serde_json::from_str(&key.public_jwk().map_err(craft_err)?.to_string())
        .map_err(|e| fail(e.to_string()))?;
    header_rejected(ctx, json!({ "jwk": public })).await
}

async fn x5c(ctx: &Ctx) -> CheckResult {
    let ca = crate::pki::CaSigner::generate("x5c").map_err(fail)?;
    let der = ca.cert_der();
    let b64 = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, der.as_ref());
    header_rejected(ctx, json!({ "x5c": [b64] })).await
}

async fn unknown_kid(ctx: &Ctx) -> CheckResult {
    let alg = ctx.issuer_key()?.alg();
    let kid = format!("{}-conformance-{}", ctx.member, uuid::Uuid::new_v4().simple());
    let rogue = SigningKey::generate(alg, &kid).map_err(craft_err)?;
    let jws = craft::sign_credential(&ctx.valid_credential()?, &rogue).map_err(craft_err)?;
    rejected(ctx, &jws, &["unknown-key"]).await
}

async fn missing_kid(ctx: &Ctx) -> CheckResult {
    let key = ctx.issuer_key()?;
    let mut h = key.vc_header();
    if let Some(h) = h.as_object_mut() {
        h.remove("kid");
    }
    let jws = genuine(key, &h, &ctx.valid_credential()?)?;
    rejected(ctx, &jws, &["unknown-key", "unsupported-algorithm"]).await
}

/// Pads the payload until its encoding needs padding (or has spare bits).
fn awkward_payload(ctx: &Ctx, len_mod_3: usize) -> Result<String, Verdict> {
    let mut payload = ctx.valid_credential()?.to_string();
    while payload.len() % 3 != len_mod_3 {
        payload.push(' ');
    }
    Ok(payload)
}

async fn padded(ctx: &Ctx) -> CheckResult {
    let key = ctx.issuer_key()?;
    let payload = awkward_payload(ctx, 1)?;
    let jws = sign_raw(
        key.vc_header().to_string().as_bytes(),
        payload.as_bytes(),
        Encoding::Padded,
        Signature::Key(key),
    )
    .map_err(craft_err)?;
    if !jws.contains('=') {
        return Err(fail("crafting error: padded token has no padding"));
    }
    rejected(ctx, &jws, ENCODING).await
}

async fn std_alphabet(ctx: &Ctx) -> CheckResult {
    let key = ctx.issuer_key()?;
    // `?>` and `~` encode to `/` and `+` in the standard alphabet.
    let mut payload = ctx.valid_credential()?;
    payload["credentialSubject"]["extensions"]["conformance:probe"] = json!("??>>~~??>>~~");
    let jws = sign_raw(
        key.vc_header().to_string().as_bytes(),
        payload.to_string().as_bytes(),
        Encoding::StandardAlphabet,
        Signature::Key(key),
    )
    .map_err(craft_err)?;
    if !jws.contains(['+', '/']) {
        return Err(fail("crafting error: token has no standard-alphabet characters"));
    }
    rejected(ctx, &jws, ENCODING).await
}

async fn trailing_bits(ctx: &Ctx) -> CheckResult {
    let key = ctx.issuer_key()?;
    let payload = awkward_payload(ctx, 1)?;
    let h64 = encode(key.vc_header().to_string().as_bytes(), Encoding::Canonical);
    let p64 = encode(payload.as_bytes(), Encoding::Canonical);
    let p64 = set_trailing_bits(&p64).ok_or_else(|| fail("crafting error: no spare bits"))?;
    let jws = sign_segments(&h64, &p64, Signature::Key(key)).map_err(craft_err)?;
    rejected(ctx, &jws, ENCODING).await?;
    // The same defect in the signature segment alone.
    let good = craft::sign_credential(&ctx.valid_credential()?, key).map_err(craft_err)?;
    match non_canonical_signature(&good) {
        Some(jws) => rejected(ctx, &jws, ENCODING).await,
        None => Ok(()),
    }
}

async fn dup_header(ctx: &Ctx) -> CheckResult {
    let key = ctx.issuer_key()?;
    let h = key.vc_header().to_string();
    // Same member twice: `"alg":"none"` last, the parser-differential classic.
    let dup = format!("{},\"alg\":\"none\"}}", h.trim_end_matches('}'));
    let jws = sign_raw(
        dup.as_bytes(),
        ctx.valid_credential()?.to_string().as_bytes(),
        Encoding::Canonical,
        Signature::Key(key),
    )
    .map_err(craft_err)?;
    rejected(
        ctx,
        &jws,
        &["malformed-request", "schema-violation", "unsupported-algorithm"],
    )
    .await
}

async fn dup_payload(ctx: &Ctx) -> CheckResult {
    let key = ctx.issuer_key()?;
    let payload = ctx.valid_credential()?.to_string();
    // A second `issuer` naming another member.
    let other = crate::fixtures::issuer_id(&ctx.destination, "credit-bank");
    let dup = format!("{},\"issuer\":\"{other}\"}}", payload.trim_end_matches('}'));
    let jws = sign_raw(
        key.vc_header().to_string().as_bytes(),
        dup.as_bytes(),
        Encoding::Canonical,
        Signature::Key(key),
    )
    .map_err(craft_err)?;
    rejected(ctx, &jws, JSON).await
}

fn with_filler(ctx: &Ctx, bytes: usize) -> Result<Value, Verdict> {
    let mut payload = ctx.valid_credential()?;
    payload["credentialSubject"]["extensions"]["conformance:filler"] = json!("x".repeat(bytes));
    Ok(payload)
}

async fn oversize(ctx: &Ctx) -> CheckResult {
    let key = ctx.issuer_key()?;
    // ~260 KiB of payload: the JWS exceeds 256 KiB, the request stays under 1 MiB.
    let jws = craft::sign_credential(&with_filler(ctx, 200 * 1024)?, key).map_err(craft_err)?;
    rejected(ctx, &jws, &["payload-too-large"]).await
}

async fn large_ok(ctx: &Ctx) -> CheckResult {
    let key = ctx.issuer_key()?;
    let jws = craft::sign_credential(&with_filler(ctx, 150 * 1024)?, key).map_err(craft_err)?;
    if jws.len() > 256 * 1024 {
        return Err(fail("crafting error: token over the limit"));
    }
    expect_status(&submit(ctx, &jws).await?, 202)
}

async fn too_deep(ctx: &Ctx) -> CheckResult {
    let mut payload = ctx.valid_credential()?;
    payload["credentialSubject"]["extensions"]["conformance:deep"] = nested_object(40);
    let jws = craft::sign_credential(&payload, ctx.issuer_key()?).map_err(craft_err)?;
    rejected(ctx, &jws, JSON).await
}

async fn deep_ok(ctx: &Ctx) -> CheckResult {
    let mut payload = ctx.valid_credential()?;
    // Root, credentialSubject and extensions add three levels: 3 + 27 = 30.
    payload["credentialSubject"]["extensions"]["conformance:deep"] = nested_object(27);
    let jws = craft::sign_credential(&payload, ctx.issuer_key()?).map_err(craft_err)?;
    expect_status(&submit(ctx, &jws).await?, 202)
}

async fn bad_signature(ctx: &Ctx) -> CheckResult {
    let good = craft::sign_credential(&ctx.valid_credential()?, ctx.issuer_key()?).map_err(craft_err)?;
    let jws = corrupt_signature(&good).ok_or_else(|| fail("crafting error"))?;
    rejected(ctx, &jws, &["invalid-signature"]).await
}

async fn wrong_typ(ctx: &Ctx) -> CheckResult {
    let key = ctx.issuer_key()?;
    let jws = genuine(key, &header(key, json!({"typ": "JWT"})), &ctx.valid_credential()?)?;
    rejected(ctx, &jws, &["unsupported-algorithm", "schema-violation"]).await
}

async fn empty_signature(ctx: &Ctx) -> CheckResult {
    let key = ctx.issuer_key()?;
    let payload = ctx.valid_credential()?;
    let jws = sign_raw(
        key.vc_header().to_string().as_bytes(),
        payload.to_string().as_bytes(),
        Encoding::Canonical,
        Signature::Empty,
    )
    .map_err(craft_err)?;
    // An empty segment is also not a compact ES256/EdDSA JWS at all.
    rejected(ctx, &jws, &["invalid-signature", "malformed-request"]).await
}

async fn transplant(ctx: &Ctx) -> CheckResult {
    let key = ctx.issuer_key()?;
    let donor = craft::sign_credential(&ctx.valid_credential()?, key).map_err(craft_err)?;
    let victim = craft::sign_credential(&ctx.valid_credential()?, key).map_err(craft_err)?;
    let (_, sig) = donor.rsplit_once('.').ok_or_else(|| fail("crafting error"))?;
    let (input, _) = victim.rsplit_once('.').ok_or_else(|| fail("crafting error"))?;
    rejected(ctx, &format!("{input}.{sig}"), &["invalid-signature"]).await
}

async fn alg_swap(ctx: &Ctx) -> CheckResult {
    let key = ctx.issuer_key()?;
    let other = match key.alg() {
        KeyAlg::Es256 => KeyAlg::EdDsa,
        KeyAlg::EdDsa => KeyAlg::Es256,
    };
    let jws = genuine(
        key,
        &header(key, json!({"alg": other.name()})),
        &ctx.valid_credential()?,
    )?;
    rejected(ctx, &jws, &["invalid-signature", "unsupported-algorithm"]).await
}
