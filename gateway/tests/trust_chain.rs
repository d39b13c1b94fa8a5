//! Translation credentials and chains `[original, interchange, home]`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

mod trust_support;

use bashu_gateway::credential::{
    issue_translation, new_learning_credential, CredentialError, IssuerId, VerifiedCredential,
};
use bashu_gateway::problem::ProblemType;
use schema_mapper::{LearningRecord, MappingTable};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use trust_support::*;

fn gw(member: &str) -> IssuerId {
    IssuerId::gateway(member).unwrap()
}

/// The reference table every translation here names.
const TABLE: (&str, &str) = ("cqf-ref~wfs-ref", "1.0.0");

/// The real translation of `pred`'s record into `framework` with the
/// reference table: what a receiver recomputes and must find.
fn translated(pred: &VerifiedCredential, framework: &str) -> Value {
    let mut record = pred.subject().as_object().unwrap().clone();
    let learner = record.remove("id").unwrap();
    let record = LearningRecord::from_json(&Value::Object(record)).unwrap();
    let t =
        schema_mapper::translate(&record, &record.framework, framework, &MappingTable::reference()).unwrap();
    let mut out = t.record.to_json();
    out["id"] = learner;
    out
}

/// Signs `subject` as cq's gateway translation of `pred` with the reference table.
fn sign_translation(fed: &Fed, pred: &VerifiedCredential, subject: Value) -> String {
    let key = fed.members["cq"].gateway_key();
    issue_translation(pred, subject, TABLE.0, TABLE.1, &gw("cq"), &key, at(T0)).unwrap()
}

async fn translate(
    fed: &Fed,
    pred: &VerifiedCredential,
    by: &str,
    framework: &str,
) -> (String, VerifiedCredential) {
    let key = fed.members[by].gateway_key();
    let jws = issue_translation(
        pred,
        translated(pred, framework),
        TABLE.0,
        TABLE.1,
        &gw(by),
        &key,
        at(T0),
    )
    .unwrap();
    let v = fed.verifier.verify(&jws).await.unwrap();
    (jws, v)
}

/// original (cq credit bank) → interchange (cq gateway) → home (sc gateway).
async fn chain(fed: &Fed) -> Vec<String> {
    let original = fed.credential("cq");
    let orig = fed.verifier.verify(&original).await.unwrap();
    let (inter_jws, inter) = translate(fed, &orig, "cq", "wfs").await;
    let (home_jws, _) = translate(fed, &inter, "sc", "wfs").await;
    vec![original, inter_jws, home_jws]
}

async fn chain_kind(fed: &Fed, links: &[String]) -> ProblemType {
    match fed.verifier.verify_chain(links).await {
        Ok(_) => panic!("accepted a broken chain"),
        Err(e) => e.kind(),
    }
}

#[tokio::test]
async fn a_full_chain_verifies_link_by_link() {
    let fed = Fed::new();
    let links = chain(&fed).await;
    let verified = fed.verifier.verify_chain(&links).await.unwrap();
    assert_eq!(verified.len(), 3);
    let (orig, inter, home) = (&verified.links()[0], &verified.links()[1], &verified.links()[2]);
    assert_eq!(orig.issuer().to_string(), "urn:bashu:cq:credit-bank");
    assert_eq!(inter.issuer().to_string(), "urn:bashu:cq:gateway");
    assert_eq!(home.issuer().to_string(), "urn:bashu:sc:gateway");
    let ev = inter.evidence().unwrap();
    assert_eq!(ev.predecessor_id, orig.id());
    assert_eq!(ev.predecessor_sha256, orig.digest());
    assert_eq!((ev.table_id.as_str(), ev.table_version.as_str()), TABLE);
    assert_eq!(ev.verified_at, Some(T0));
    assert!(inter.is_translation() && home.is_translation());
    assert_eq!(
        inter.payload()["evidence"][0]["predecessorSha256"],
        orig.digest_hex()
    );
    assert_eq!(inter.payload()["type"][2], "TranslatedLearningCredential");
    assert_eq!(home.subject()["extensions"], orig.subject()["extensions"]);
    // A translation never outlives its source.
    assert_eq!(home.valid_until(), orig.valid_until());
    // Prefixes are chains too (what an envelope carries).
    assert_eq!(fed.verifier.verify_chain(&links[..2]).await.unwrap().len(), 2);
}

#[tokio::test]
async fn digest_must_match_the_exact_predecessor_bytes() {
    let fed = Fed::new();
    let links = chain(&fed).await;
    // Same payload re-signed: same id, different bytes (ECDSA is randomised).
    let orig = fed.verifier.verify(&links[0]).await.unwrap();
    let resigned = fed.sign("cq", orig.payload());
    assert_ne!(resigned, links[0]);
    assert_eq!(fed.verifier.verify(&resigned).await.unwrap().id(), orig.id());
    let err = fed
        .verifier
        .verify_chain(&[resigned, links[1].clone()])
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ProblemType::ChainBroken);
    assert!(err.to_string().contains("digest"), "{err}");
}

#[tokio::test]
async fn predecessor_id_must_match() {
    let fed = Fed::new();
    let links = chain(&fed).await;
    let other = fed.credential("cq");
    assert_eq!(
        chain_kind(&fed, &[other, links[1].clone()]).await,
        ProblemType::ChainBroken
    );
    // Skipping the interchange breaks the home link.
    assert_eq!(
        chain_kind(&fed, &[links[0].clone(), links[2].clone()]).await,
        ProblemType::ChainBroken
    );
    // Reordered.
    assert_eq!(
        chain_kind(&fed, &[links[1].clone(), links[0].clone()]).await,
        ProblemType::ChainBroken
    );
}

#[tokio::test]
async fn chain_shape_is_enforced() {
    let fed = Fed::new();
    let links = chain(&fed).await;
    assert_eq!(chain_kind(&fed, &[]).await, ProblemType::ChainBroken);
    assert_eq!(
        chain_kind(&fed, &[links[0].clone(), links[0].clone()]).await,
        ProblemType::ChainBroken
    );
    assert_eq!(
        chain_kind(&fed, &[links[0].clone(), fed.credential("cq")]).await,
        ProblemType::ChainBroken
    );
    let long: Vec<String> = std::iter::repeat_n(links[0].clone(), 9).collect();
    assert_eq!(chain_kind(&fed, &long).await, ProblemType::ChainBroken);
}

#[tokio::test]
async fn a_bad_link_breaks_the_chain_and_names_its_index() {
    let fed = Fed::new();
    let mut links = chain(&fed).await;
    let (input, sig) = links[2].rsplit_once('.').unwrap();
    let flipped = if sig.starts_with('A') { "B" } else { "A" };
    links[2] = format!("{input}.{flipped}{}", &sig[1..]);
    let err = fed.verifier.verify_chain(&links).await.unwrap_err();
    assert_eq!(err.kind(), ProblemType::ChainBroken);
    match &err {
        CredentialError::ChainLink { index, source } => {
            assert_eq!(*index, 2);
            assert_eq!(source.kind(), ProblemType::InvalidSignature);
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(err.problem().detail.contains("chain link 2"));
}

#[tokio::test]
async fn interchange_must_come_from_the_origin_gateway() {
    let fed = Fed::new();
    let original = fed.credential("cq");
    let orig = fed.verifier.verify(&original).await.unwrap();
    let (by_sc, _) = translate(&fed, &orig, "sc", "wfs").await;
    assert_eq!(
        chain_kind(&fed, &[original, by_sc]).await,
        ProblemType::ChainBroken
    );
}

#[tokio::test]
async fn learner_id_may_not_change() {
    let fed = Fed::new();
    let original = fed.credential("cq");
    let orig = fed.verifier.verify(&original).await.unwrap();
    let mut s = translated(&orig, "wfs");
    s["id"] = "urn:bashu:learner:cq:someone-else".into();
    let key = fed.members["cq"].gateway_key();
    let jws = issue_translation(&orig, s, TABLE.0, TABLE.1, &gw("cq"), &key, at(T0)).unwrap();
    assert_eq!(chain_kind(&fed, &[original, jws]).await, ProblemType::ChainBroken);
}

/// A translation of `pred` with hand-made evidence, signed by cq's gateway.
fn forged_translation(fed: &Fed, pred: &VerifiedCredential, evidence: Value) -> String {
    let mut p = new_learning_credential(&gw("cq"), translated(pred, "wfs"), at(T0 - 10), None);
    p["type"] = json!([
        "VerifiableCredential",
        "LearningCredential",
        "TranslatedLearningCredential"
    ]);
    p["evidence"] = evidence;
    let key = fed.members["cq"].gateway_key();
    forge(&header_for(&key), &p, &key)
}

#[tokio::test]
async fn evidence_must_name_predecessor_digest_and_table() {
    let fed = Fed::new();
    let original = fed.credential("cq");
    let orig = fed.verifier.verify(&original).await.unwrap();
    let good = json!({
        "type": ["Evidence", "TranslationEvidence"],
        "predecessorId": orig.id(),
        "predecessorSha256": orig.digest_hex(),
        "mappingTableId": TABLE.0,
        "mappingTableVersion": TABLE.1,
    });
    let ok = forged_translation(&fed, &orig, json!([good.clone()]));
    fed.verifier.verify_chain(&[original.clone(), ok]).await.unwrap();

    for field in [
        "predecessorId",
        "predecessorSha256",
        "mappingTableId",
        "mappingTableVersion",
    ] {
        let mut ev = good.clone();
        ev.as_object_mut().unwrap().remove(field);
        let jws = forged_translation(&fed, &orig, json!([ev]));
        assert_eq!(
            fed.verifier.verify(&jws).await.unwrap_err().kind(),
            ProblemType::SchemaViolation,
            "{field}"
        );
        assert_eq!(
            chain_kind(&fed, &[original.clone(), jws]).await,
            ProblemType::ChainBroken,
            "{field}"
        );
    }
    let mut upper = good.clone();
    upper["predecessorSha256"] = orig.digest_hex().to_uppercase().into();
    let jws = forged_translation(&fed, &orig, json!([upper]));
    assert_eq!(
        fed.verifier.verify(&jws).await.unwrap_err().kind(),
        ProblemType::SchemaViolation
    );
    // Two evidence entries of our type are ambiguous.
    let jws = forged_translation(&fed, &orig, json!([good.clone(), good]));
    assert_eq!(
        fed.verifier.verify(&jws).await.unwrap_err().kind(),
        ProblemType::SchemaViolation
    );
}

#[tokio::test]
async fn roles_and_types_must_agree() {
    let fed = Fed::new();
    let orig = fed.verifier.verify(&fed.credential("cq")).await.unwrap();
    // Only gateways issue translations.
    let err = issue_translation(
        &orig,
        translated(&orig, "wfs"),
        "t",
        "1",
        &IssuerId::credit_bank("cq").unwrap(),
        &fed.members["cq"].issuer,
        at(T0),
    )
    .unwrap_err();
    assert_eq!(err.kind(), ProblemType::IssuerMismatch);
    // A gateway-signed credential that is not a translation.
    let mut p = new_learning_credential(&gw("cq"), subject("cq"), at(T0 - 10), None);
    p["type"] = json!(["VerifiableCredential", "LearningCredential"]);
    let key = fed.members["cq"].gateway_key();
    let jws = forge(&header_for(&key), &p, &key);
    assert_eq!(
        fed.verifier.verify(&jws).await.unwrap_err().kind(),
        ProblemType::SchemaViolation
    );
}

#[tokio::test]
async fn an_unreachable_trust_source_is_unavailable_not_broken() {
    let fed = Fed::new();
    let links = chain(&fed).await;
    fed.cache.invalidate_all();
    fed.fetcher.fail.store(true, Ordering::SeqCst);
    fed.clock.advance_ms(2000);
    assert_eq!(chain_kind(&fed, &links).await, ProblemType::Unavailable);
}

#[tokio::test]
async fn debug_output_names_the_credential_but_not_the_record() {
    let fed = Fed::new();
    let v = fed.verifier.verify(&fed.credential("cq")).await.unwrap();
    let dbg = format!("{v:?}");
    assert!(dbg.contains(v.id()) && dbg.contains(&v.digest_hex()), "{dbg}");
    assert!(!dbg.contains("learner") && !dbg.contains("数控"), "{dbg}");
}

/// SPEC v1.1 §3, issue 11.3: a peer gateway that signs an inflated
/// interchange (level, credits, hours, extensions) is caught by
/// recomputation, and the problem names the field.
#[tokio::test]
async fn an_interchange_that_is_not_the_recomputed_translation_is_chain_broken() {
    let fed = Fed::new();
    let original = fed.credential("cq");
    let orig = fed.verifier.verify(&original).await.unwrap();
    let honest = translated(&orig, "wfs");
    let ok = sign_translation(&fed, &orig, honest.clone());
    fed.verifier.verify_chain(&[original.clone(), ok]).await.unwrap();

    let edits: [(&str, Value); 5] = [
        ("level", json!(8)),
        ("credits", json!(60)),
        ("learningHours", json!(1620)),
        ("outcomeType", json!("micro-credential")),
        ("extensions", json!({"x-local": [1, 2, 3, 4]})),
    ];
    for (field, value) in edits {
        let mut inflated = honest.clone();
        assert_ne!(inflated[field], value, "{field} must actually change");
        inflated[field] = value;
        let jws = sign_translation(&fed, &orig, inflated);
        let err = fed
            .verifier
            .verify_chain(&[original.clone(), jws])
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ProblemType::ChainBroken, "{field}");
        let detail = err.problem().detail;
        assert!(detail.contains(&format!("{field} differs")), "{field}: {detail}");
    }
    // An extra member the record does not have is refused too.
    let mut extra = honest.clone();
    extra["bonus"] = json!(1);
    let jws = sign_translation(&fed, &orig, extra);
    assert_eq!(chain_kind(&fed, &[original, jws]).await, ProblemType::ChainBroken);
}

/// A translation naming a table (or version) this gateway does not hold
/// is `mapping-version-unknown`: the sender retries until it is installed.
#[tokio::test]
async fn a_translation_with_an_unknown_table_version_is_mapping_version_unknown() {
    let fed = Fed::new();
    let original = fed.credential("cq");
    let orig = fed.verifier.verify(&original).await.unwrap();
    let key = fed.members["cq"].gateway_key();
    for (id, version) in [(TABLE.0, "9.9.9"), ("gzf-ref~wfs-ref", TABLE.1)] {
        let jws = issue_translation(
            &orig,
            translated(&orig, "wfs"),
            id,
            version,
            &gw("cq"),
            &key,
            at(T0),
        )
        .unwrap();
        assert_eq!(
            chain_kind(&fed, &[original.clone(), jws]).await,
            ProblemType::MappingVersionUnknown,
            "{id} {version}"
        );
    }
}

/// SPEC v1.1 §2, issue 11.2: an original signed by an issuer key revoked
/// *after* the origin gateway verified it (its signed `verifiedAt`) stays
/// accepted; one attested at or after `revoked_at`, or without an
/// attestation, is `revoked-key`.
#[tokio::test]
async fn a_revoked_issuer_key_keeps_exchanges_verified_before_revoked_at() {
    let mut fed = Fed::new();
    let original = fed.credential("cq");
    let orig = fed.verifier.verify(&original).await.unwrap();
    assert_eq!(orig.verified_at(), at(T0));
    let before = sign_translation(&fed, &orig, translated(&orig, "wfs"));

    fed.clock.advance_ms(100_000);
    let kid = fed.members["cq"].issuer.kid().to_owned();
    fed.member("cq").store.revoke(&kid, T0 + 50).unwrap();
    fed.republish("cq");
    fed.cache.refresh("cq").await.unwrap();

    assert_eq!(
        fed.verifier.verify(&original).await.unwrap_err().kind(),
        ProblemType::RevokedKey
    );
    let chain = fed
        .verifier
        .verify_chain(&[original.clone(), before])
        .await
        .unwrap();
    assert_eq!(chain.original().id(), orig.id());

    let evidence = |verified_at: Option<&str>| {
        let mut ev = json!({
            "type": ["Evidence", "TranslationEvidence"],
            "predecessorId": orig.id(),
            "predecessorSha256": orig.digest_hex(),
            "mappingTableId": TABLE.0,
            "mappingTableVersion": TABLE.1,
        });
        if let Some(t) = verified_at {
            ev["verifiedAt"] = t.into();
        }
        json!([ev])
    };
    // 2026-01-01T00:00:50Z is revoked_at itself: not before it.
    for attested in [Some("2026-01-01T00:00:50Z"), Some("2026-01-01T00:01:40Z"), None] {
        let late = forged_translation(&fed, &orig, evidence(attested));
        assert_eq!(
            chain_kind(&fed, &[original.clone(), late]).await,
            ProblemType::RevokedKey,
            "{attested:?}"
        );
    }
    let early = forged_translation(&fed, &orig, evidence(Some("2026-01-01T00:00:49Z")));
    fed.verifier.verify_chain(&[original, early]).await.unwrap();
}

/// The gateway's own revocations bite before any republication: the
/// overlay the key-store watcher installs (issue 11.1).
#[tokio::test]
async fn a_local_revocation_applies_without_a_new_key_set() {
    let fed = Fed::new();
    let original = fed.credential("cq");
    fed.verifier.verify(&original).await.unwrap();
    let kid = fed.members["cq"].issuer.kid().to_owned();
    fed.cache
        .set_local_revocations("cq", HashMap::from([(kid.clone(), T0 - 5)]));
    let err = fed.verifier.verify(&original).await.unwrap_err();
    assert_eq!(err.kind(), ProblemType::RevokedKey);
    assert!(err.to_string().contains(&kid), "{err}");
    fed.cache.set_local_revocations("cq", HashMap::new());
    fed.verifier.verify(&original).await.unwrap();
}
