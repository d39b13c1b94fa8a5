//! Every rejection of SPEC §3, each with a token built to trigger exactly
//! that defect and the exact problem type asserted.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

mod trust_support;

use bashu_gateway::credential::CredentialError;
use bashu_gateway::jose::{b64, SigningKey};
use bashu_gateway::problem::ProblemType;
use bashu_gateway::trust::{KeyStatus, TrustCacheConfig};
use serde_json::{json, Value};
use trust_support::*;

async fn kind(fed: &Fed, jws: &str) -> ProblemType {
    match fed.verifier.verify(jws).await {
        Ok(v) => panic!("accepted a bad token (id {})", v.id()),
        Err(e) => e.kind(),
    }
}

fn issuer(fed: &Fed) -> SigningKey {
    fed.members["cq"].issuer.clone()
}

#[tokio::test]
async fn a_valid_credential_verifies_for_both_algorithms() {
    let fed = Fed::new();
    for m in ["cq", "sc"] {
        let jws = fed.credential(m);
        let v = fed.verifier.verify(&jws).await.unwrap();
        assert_eq!(v.issuer().to_string(), format!("urn:bashu:{m}:credit-bank"));
        assert_eq!(v.jws(), jws);
        assert_eq!(v.subject()["extensions"], json!({"x-local": [1, 2, 3]}));
        assert!(!v.is_translation());
        assert_eq!(v.digest_hex().len(), 64);
    }
}

#[tokio::test]
async fn disallowed_algorithms_are_unsupported() {
    let fed = Fed::new();
    let key = issuer(&fed);
    let payload = fed.payload("cq");
    for alg in [
        "HS256",
        "HS512",
        "RS256",
        "PS256",
        "ES384",
        "ES512",
        "ES256K",
        "Ed448",
        "EdDSA25519",
    ] {
        let mut h = header_for(&key);
        h["alg"] = alg.into();
        assert_eq!(
            kind(&fed, &forge(&h, &payload, &key)).await,
            ProblemType::UnsupportedAlgorithm,
            "{alg}"
        );
    }
    // alg none, unsigned (empty signature segment), as an attacker sends it.
    let mut h = header_for(&key);
    h["alg"] = "none".into();
    let unsigned = format!(
        "{}.{}.",
        b64::encode(h.to_string().as_bytes()),
        b64::encode(payload.to_string().as_bytes())
    );
    assert_eq!(kind(&fed, &unsigned).await, ProblemType::UnsupportedAlgorithm);
    // alg missing altogether.
    let mut h = header_for(&key);
    h.as_object_mut().unwrap().remove("alg");
    assert_eq!(
        kind(&fed, &forge(&h, &payload, &key)).await,
        ProblemType::UnsupportedAlgorithm
    );
}

#[tokio::test]
async fn dangerous_header_parameters_are_refused() {
    let fed = Fed::new();
    let key = issuer(&fed);
    let payload = fed.payload("cq");
    let cases: [(&str, Value); 6] = [
        ("b64", json!(false)),
        ("crit", json!(["exp"])),
        ("jku", json!("https://evil.example/keys")),
        ("x5u", json!("https://evil.example/cert")),
        ("jwk", Value::Object(key.public_jwk())),
        ("x5c", json!(["MIIB"])),
    ];
    for (name, value) in cases {
        let mut h = header_for(&key);
        h[name] = value;
        let jws = forge(&h, &payload, &key);
        let err = fed.verifier.verify(&jws).await.unwrap_err();
        assert_eq!(err.kind(), ProblemType::UnsupportedAlgorithm, "{name}");
        assert!(err.to_string().contains(name), "{err}");
    }
}

#[tokio::test]
async fn missing_or_unknown_kid_is_unknown_key() {
    let fed = Fed::new();
    let key = issuer(&fed);
    let payload = fed.payload("cq");
    let mut h = header_for(&key);
    h.as_object_mut().unwrap().remove("kid");
    assert_eq!(
        kind(&fed, &forge(&h, &payload, &key)).await,
        ProblemType::UnknownKey
    );
    // A key that exists nowhere, with a plausible kid.
    let stranger = SigningKey::generate(key.alg(), "cq-cb-20260101-ffffff").unwrap();
    assert_eq!(
        kind(&fed, &forge(&header_for(&stranger), &payload, &stranger)).await,
        ProblemType::UnknownKey
    );
    // An issuer whose member is not in the federation.
    let mut p = payload.clone();
    p["issuer"] = "urn:bashu:gz:credit-bank".into();
    assert_eq!(
        kind(&fed, &forge(&header_for(&key), &p, &key)).await,
        ProblemType::UnknownKey
    );
}

#[tokio::test]
async fn key_of_another_member_or_role_is_issuer_mismatch() {
    let fed = Fed::new();
    fed.cache.refresh_all().await;
    let payload = fed.payload("cq");
    // cq credential signed with sc's credit-bank key.
    let sc_key = fed.members["sc"].issuer.clone();
    assert_eq!(
        kind(&fed, &forge(&header_for(&sc_key), &payload, &sc_key)).await,
        ProblemType::IssuerMismatch
    );
    // cq credit-bank credential signed with cq's gateway key.
    let gw = fed.members["cq"].gateway_key();
    assert_eq!(
        kind(&fed, &forge(&header_for(&gw), &payload, &gw)).await,
        ProblemType::IssuerMismatch
    );
    // iss present and different from issuer.
    let key = issuer(&fed);
    let mut p = payload.clone();
    p["iss"] = "urn:bashu:sc:credit-bank".into();
    assert_eq!(
        kind(&fed, &forge(&header_for(&key), &p, &key)).await,
        ProblemType::IssuerMismatch
    );
    // iss equal to issuer is fine.
    p["iss"] = payload["issuer"].clone();
    fed.verifier
        .verify(&forge(&header_for(&key), &p, &key))
        .await
        .unwrap();
}

#[tokio::test]
async fn bad_signatures_are_invalid_signature() {
    let fed = Fed::new();
    let key = issuer(&fed);
    let jws = fed.credential("cq");
    let (input, sig) = jws.rsplit_once('.').unwrap();
    let mut raw = b64::decode(sig).unwrap();
    raw[10] ^= 0x01;
    assert_eq!(
        kind(&fed, &format!("{input}.{}", b64::encode(&raw))).await,
        ProblemType::InvalidSignature
    );
    // Truncated signature (canonical base64url, wrong length).
    assert_eq!(
        kind(&fed, &format!("{input}.{}", b64::encode(&raw[..63]))).await,
        ProblemType::InvalidSignature
    );
    // A different payload under the original signature.
    let mut p = fed.payload("cq");
    p["credentialSubject"]["credits"] = 120.into();
    let other = forge(&header_for(&key), &p, &key);
    let (other_input, _) = other.rsplit_once('.').unwrap();
    assert_eq!(
        kind(&fed, &format!("{other_input}.{sig}")).await,
        ProblemType::InvalidSignature
    );
    // Signed by an impostor key that claims the real kid.
    let impostor = SigningKey::generate(key.alg(), key.kid()).unwrap();
    assert_eq!(
        kind(&fed, &forge(&header_for(&key), &p, &impostor)).await,
        ProblemType::InvalidSignature
    );
    // Header names EdDSA but the kid is an ES256 key: no algorithm substitution.
    let ed = SigningKey::generate(bashu_gateway::jose::Alg::EdDsa, key.kid()).unwrap();
    let mut h = header_for(&key);
    h["alg"] = "EdDSA".into();
    assert_eq!(
        kind(&fed, &forge(&h, &p, &ed)).await,
        ProblemType::InvalidSignature
    );
}

#[tokio::test]
async fn non_canonical_base64url_is_malformed() {
    let fed = Fed::new();
    let jws = fed.credential("cq");
    let parts: Vec<&str> = jws.split('.').collect();
    let (h, p, s) = (parts[0], parts[1], parts[2]);
    // ES256 signature: 64 bytes = 86 chars, the last carrying 2 unused bits.
    let last = s.chars().last().unwrap();
    let alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let idx = alphabet.find(last).unwrap();
    let sibling = alphabet.chars().nth(idx ^ 1).unwrap(); // same 4 high bits, low bit set
    let trailing = format!("{h}.{p}.{}{}", &s[..s.len() - 1], sibling);
    let variants = [
        format!("{h}=.{p}.{s}"),
        format!("{h}.{p}.{s}=="),
        format!("{h}.{}.{s}", p.replace('-', "+").replace('_', "/") + "+"),
        format!("{h}.{p}+.{s}"),
        format!("{h}.{p}.{}/", &s[..s.len() - 1]),
        trailing,
        format!("{h}.{p}"),
        format!("{h}.{p}.{s}.{s}"),
        format!(" {jws}"),
    ];
    for v in &variants {
        assert_eq!(kind(&fed, v).await, ProblemType::MalformedRequest, "{v}");
    }
}

#[tokio::test]
async fn duplicate_members_are_malformed() {
    let fed = Fed::new();
    let key = issuer(&fed);
    let payload = fed.payload("cq").to_string();
    let h = format!(
        r#"{{"alg":"{}","typ":"vc+jwt","cty":"vc","kid":"{}","kid":"{}"}}"#,
        key.alg(),
        key.kid(),
        key.kid()
    );
    assert_eq!(
        kind(&fed, &forge_raw(h.as_bytes(), payload.as_bytes(), &key)).await,
        ProblemType::MalformedRequest
    );
    let h = format!(
        r#"{{"alg":"none","alg":"{}","typ":"vc+jwt","kid":"{}"}}"#,
        key.alg(),
        key.kid()
    );
    assert_eq!(
        kind(&fed, &forge_raw(h.as_bytes(), payload.as_bytes(), &key)).await,
        ProblemType::MalformedRequest
    );
    let header = header_for(&key).to_string();
    let dup_issuer = payload.replacen('{', r#"{"issuer":"urn:bashu:sc:credit-bank","#, 1);
    assert_eq!(
        kind(&fed, &forge_raw(header.as_bytes(), dup_issuer.as_bytes(), &key)).await,
        ProblemType::MalformedRequest
    );
    let nested = payload.replacen(r#""credits":12"#, r#""credits":12,"credits":120"#, 1);
    assert_ne!(nested, payload);
    assert_eq!(
        kind(&fed, &forge_raw(header.as_bytes(), nested.as_bytes(), &key)).await,
        ProblemType::MalformedRequest
    );
}

#[tokio::test]
async fn oversized_jws_is_payload_too_large() {
    let fed = Fed::new();
    let key = issuer(&fed);
    let mut p = fed.payload("cq");
    p["credentialSubject"]["extensions"]["blob"] = "x".repeat(200 * 1024).into();
    let jws = forge(&header_for(&key), &p, &key);
    assert!(jws.len() > 256 * 1024);
    assert_eq!(kind(&fed, &jws).await, ProblemType::PayloadTooLarge);
    // The issuing side refuses to produce it in the first place.
    let err = bashu_gateway::credential::issue_credential(&p, &key).unwrap_err();
    assert_eq!(err.kind(), ProblemType::PayloadTooLarge);
    // Just under the limit is fine.
    p["credentialSubject"]["extensions"]["blob"] = "x".repeat(150 * 1024).into();
    fed.verifier
        .verify(&forge(&header_for(&key), &p, &key))
        .await
        .unwrap();
}

#[tokio::test]
async fn nesting_beyond_32_is_malformed() {
    let fed = Fed::new();
    let key = issuer(&fed);
    let nest = |depth: usize| {
        let mut v = json!(1);
        for _ in 0..depth {
            v = json!([v]);
        }
        v
    };
    let mut p = fed.payload("cq");
    // payload (1) > credentialSubject (2) > extensions (3) > arrays.
    p["credentialSubject"]["extensions"]["deep"] = nest(29);
    fed.verifier
        .verify(&forge(&header_for(&key), &p, &key))
        .await
        .unwrap();
    p["credentialSubject"]["extensions"]["deep"] = nest(30);
    assert_eq!(
        kind(&fed, &forge(&header_for(&key), &p, &key)).await,
        ProblemType::MalformedRequest
    );
    let mut h = header_for(&key);
    h["cty"] = nest(40);
    assert_eq!(
        kind(&fed, &forge(&h, &p, &key)).await,
        ProblemType::MalformedRequest
    );
}

#[tokio::test]
async fn missing_profile_fields_are_schema_violations() {
    let fed = Fed::new();
    let key = issuer(&fed);
    let good = fed.payload("cq");
    let mut cases: Vec<(&str, Value)> = Vec::new();
    for field in ["@context", "type", "id", "validFrom", "credentialSubject"] {
        let mut p = good.clone();
        p.as_object_mut().unwrap().remove(field);
        cases.push((field, p));
    }
    let mut p = good.clone();
    p["credentialSubject"].as_object_mut().unwrap().remove("id");
    cases.push(("credentialSubject.id", p));
    let mut p = good.clone();
    p["credentialSubject"]["id"] = "110101199003074578".into(); // a national id number
    cases.push(("national id", p));
    let mut p = good.clone();
    p["@context"] = json!(["https://www.w3.org/2018/credentials/v1"]);
    cases.push(("VC 1.1 context", p));
    let mut p = good.clone();
    p["type"] = json!(["VerifiableCredential"]);
    cases.push(("type without LearningCredential", p));
    let mut p = good.clone();
    p["id"] = "urn:uuid:not-a-uuid".into();
    cases.push(("id", p));
    let mut p = good.clone();
    p["validFrom"] = "yesterday".into();
    cases.push(("validFrom format", p));
    let mut p = good.clone();
    p["issuer"] = "did:web:cq.example".into();
    cases.push(("issuer", p));
    for (what, p) in cases {
        assert_eq!(
            kind(&fed, &forge(&header_for(&key), &p, &key)).await,
            ProblemType::SchemaViolation,
            "{what}"
        );
    }
    // A payload that is JSON but not an object.
    assert_eq!(
        kind(&fed, &forge(&header_for(&key), &json!([1]), &key)).await,
        ProblemType::SchemaViolation
    );
    // A payload that is not JSON at all.
    let raw = forge_raw(header_for(&key).to_string().as_bytes(), b"{not json", &key);
    assert_eq!(kind(&fed, &raw).await, ProblemType::MalformedRequest);
}

#[tokio::test]
async fn wrong_typ_or_cty_is_schema_violation() {
    let fed = Fed::new();
    let key = issuer(&fed);
    let p = fed.payload("cq");
    for (typ, cty) in [
        (json!("JWT"), json!("vc")),
        (json!("bashu-keyset+jwt"), Value::Null),
        (json!("vc+jwt"), json!("vp")),
    ] {
        let mut h = header_for(&key);
        h["typ"] = typ;
        if cty.is_null() {
            h.as_object_mut().unwrap().remove("cty");
        } else {
            h["cty"] = cty;
        }
        assert_eq!(
            kind(&fed, &forge(&h, &p, &key)).await,
            ProblemType::SchemaViolation,
            "{h}"
        );
    }
    let mut h = header_for(&key);
    h.as_object_mut().unwrap().remove("typ");
    assert_eq!(
        kind(&fed, &forge(&h, &p, &key)).await,
        ProblemType::SchemaViolation
    );
    // cty is optional.
    let mut h = header_for(&key);
    h.as_object_mut().unwrap().remove("cty");
    fed.verifier.verify(&forge(&h, &p, &key)).await.unwrap();
}

#[tokio::test]
async fn validity_period_with_60s_skew() {
    let fed = Fed::new();
    let key = issuer(&fed);
    let with = |from: i64, until: i64| {
        let mut p = fed.payload("cq");
        p["validFrom"] = bashu_gateway::credential::profile::format_time(at(from)).into();
        p["validUntil"] = bashu_gateway::credential::profile::format_time(at(until)).into();
        forge(&header_for(&key), &p, &key)
    };
    assert_eq!(
        kind(&fed, &with(T0 - DAY, T0 - 61)).await,
        ProblemType::CredentialExpired
    );
    fed.verifier.verify(&with(T0 - DAY, T0 - 59)).await.unwrap();
    assert_eq!(
        kind(&fed, &with(T0 + 61, T0 + DAY)).await,
        ProblemType::CredentialNotYetValid
    );
    fed.verifier.verify(&with(T0 + 59, T0 + DAY)).await.unwrap();
    // validUntil before validFrom is not a period at all.
    assert_eq!(kind(&fed, &with(T0, T0 - 10)).await, ProblemType::SchemaViolation);
}

/// The detail a caller would see for `jws`.
async fn detail(fed: &Fed, jws: &str) -> (ProblemType, String) {
    let problem = fed.verifier.verify(jws).await.unwrap_err().problem();
    (problem.kind, problem.detail)
}

#[tokio::test]
async fn valid_until_before_valid_from_is_exact_and_ignores_skew() {
    let fed = Fed::new();
    let key = issuer(&fed);
    let with = |from: &str, until: &str| {
        let mut p = fed.payload("cq");
        p["validFrom"] = from.into();
        p["validUntil"] = until.into();
        forge(&header_for(&key), &p, &key)
    };
    let t = |secs: i64| bashu_gateway::credential::profile::format_time(at(secs));
    let inverted = (
        ProblemType::SchemaViolation,
        "credential violates the profile: validUntil is before validFrom".to_owned(),
    );
    // The report: validUntil 50 s before validFrom, both within the 60 s skew
    // of now. Skew applies to now, never between the two timestamps.
    assert_eq!(detail(&fed, &with(&t(T0 + 30), &t(T0 - 20))).await, inverted);
    // One second, and half a second, before: still inverted.
    assert_eq!(detail(&fed, &with(&t(T0), &t(T0 - 1))).await, inverted);
    let from = "2026-01-01T00:00:00.500Z";
    assert_eq!(detail(&fed, &with(from, "2026-01-01T00:00:00Z")).await, inverted);
    // Equal instants (also across offsets) are a valid, if short, period.
    fed.verifier.verify(&with(&t(T0), &t(T0))).await.unwrap();
    fed.verifier
        .verify(&with("2026-01-01T08:00:00+08:00", "2026-01-01T00:00:00Z"))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_national_id_number_anywhere_in_the_learner_id_is_refused() {
    let fed = Fed::new();
    let key = issuer(&fed);
    let refusal = (
        ProblemType::SchemaViolation,
        "credential violates the profile: credentialSubject.id contains a national ID number (GB 11643-1999); use an opaque learner id"
            .to_owned(),
    );
    for id in [
        "urn:bashu:learner:cq:11010519491231002X",
        "urn:bashu:learner:cq:stu-11010519491231002x",
        "did:example:11010519491231002X",
    ] {
        let mut p = fed.payload("cq");
        p["credentialSubject"]["id"] = id.into();
        assert_eq!(
            detail(&fed, &forge(&header_for(&key), &p, &key)).await,
            refusal,
            "{id}"
        );
        // The detail never echoes the number.
        assert!(!refusal.1.contains("11010519491231002"));
        // And the issuing side refuses to sign it.
        let err = bashu_gateway::credential::issue_credential(&p, &key).unwrap_err();
        assert_eq!(err.kind(), ProblemType::SchemaViolation, "{id}");
    }
    // An 18-digit opaque id that is not a valid number passes.
    let mut p = fed.payload("cq");
    p["credentialSubject"]["id"] = "urn:bashu:learner:cq:110105194912310021".into();
    fed.verifier
        .verify(&forge(&header_for(&key), &p, &key))
        .await
        .unwrap();
}

#[tokio::test]
async fn problem_details_show_values_not_rust_debug() {
    let fed = Fed::new();
    let key = issuer(&fed);
    let p = fed.payload("cq");
    let mut h = header_for(&key);
    h["typ"] = "JWT".into();
    assert_eq!(
        detail(&fed, &forge(&h, &p, &key)).await,
        (
            ProblemType::SchemaViolation,
            "typ is JWT, expected vc+jwt".to_owned()
        )
    );
    h["typ"] = "vc+jwt".into();
    h["alg"] = "HS256".into();
    assert_eq!(
        detail(&fed, &forge(&h, &p, &key)).await,
        (
            ProblemType::UnsupportedAlgorithm,
            "algorithm HS256 is not allowed (only ES256 and EdDSA)".to_owned()
        )
    );
    let mut h = header_for(&key);
    h["kid"] = "nobody-1".into();
    let (kind, text) = detail(&fed, &forge(&h, &p, &key)).await;
    assert_eq!(kind, ProblemType::UnknownKey);
    assert_eq!(text, "key nobody-1 is not in the key set of cq");
    let mut p = fed.payload("cq");
    p["issuer"] = "urn:bashu:CQ:credit-bank".into();
    let (_, text) = detail(&fed, &forge(&header_for(&key), &p, &key)).await;
    assert!(!text.contains('"') && !text.contains("Some("), "{text}");
}

#[tokio::test]
async fn key_status_decides_whether_a_signature_counts() {
    let mut fed = Fed::with_config(TrustCacheConfig {
        refetch_min_interval_ms: 0,
        ..TrustCacheConfig::default()
    });
    let jws = fed.credential("cq");
    fed.verifier.verify(&jws).await.unwrap();
    let kid = fed.members["cq"].issuer.kid().to_owned();

    // Retiring, within its window: still verifies.
    fed.member("cq").store.retire(&kid, T0 + 100).unwrap();
    fed.republish("cq");
    fed.cache.refresh("cq").await.unwrap();
    fed.verifier.verify(&jws).await.unwrap();

    // Past retire_after (+ skew): refused as revoked-key.
    fed.clock.advance_secs(100 + 61);
    assert_eq!(kind(&fed, &jws).await, ProblemType::RevokedKey);

    // Revoked: never verifies.
    fed.clock.set_ms(T0 * 1000);
    fed.member("cq").store.revoke(&kid, 1_000).unwrap();
    fed.republish("cq");
    fed.cache.refresh("cq").await.unwrap();
    let err = fed.verifier.verify(&jws).await.unwrap_err();
    assert_eq!(err.kind(), ProblemType::RevokedKey);
    assert!(matches!(err, CredentialError::Key(_)));
    assert_eq!(
        fed.cache
            .cached_set("cq")
            .await
            .unwrap()
            .key(&kid)
            .unwrap()
            .status,
        KeyStatus::Revoked
    );
}

#[tokio::test]
async fn next_keys_verify() {
    let mut fed = Fed::new();
    let next_key = SigningKey::generate(bashu_gateway::jose::Alg::Es256, "cq-cb-next").unwrap();
    let kid = fed
        .member("cq")
        .store
        .import_issuer_with(&next_key.public_jwk(), KeyStatus::Next, T0)
        .unwrap();
    assert_eq!(kid, "cq-cb-next");
    fed.republish("cq");
    fed.cache.refresh("cq").await.unwrap();
    assert_eq!(
        fed.cache.key("cq", "cq-cb-next").await.unwrap().status,
        KeyStatus::Next
    );
    let jws = bashu_gateway::credential::issue_credential(&fed.payload("cq"), &next_key).unwrap();
    assert_eq!(fed.verifier.verify(&jws).await.unwrap().kid(), "cq-cb-next");
}

#[tokio::test]
async fn problem_json_never_echoes_the_payload() {
    let fed = Fed::new();
    let key = issuer(&fed);
    let mut p = fed.payload("cq");
    p["credentialSubject"]["secret"] = "S3CR3T-VALUE".into();
    p.as_object_mut().unwrap().remove("validFrom");
    let err = fed
        .verifier
        .verify(&forge(&header_for(&key), &p, &key))
        .await
        .unwrap_err();
    let body = err.problem().to_json().to_string();
    assert!(!body.contains("S3CR3T"), "{body}");
    assert!(body.contains("urn:bashu:problem:schema-violation"), "{body}");
}
