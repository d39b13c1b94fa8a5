//! Translation credentials and chains `[original, interchange, home]`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

mod trust_support;

use bashu_gateway::credential::{
    issue_translation_at, new_learning_credential, CredentialError, IssuerId, VerifiedCredential,
};
use bashu_gateway::problem::ProblemType;
use serde_json::{json, Value};
use std::sync::atomic::Ordering;
use trust_support::*;

fn gw(member: &str) -> IssuerId {
    IssuerId::gateway(member).unwrap()
}

/// A WFS-ish translation of `pred`'s subject (the mapper's job, faked).
fn translated(pred: &VerifiedCredential, framework: &str) -> Value {
    let mut s = pred.subject().clone();
    s["framework"] = framework.into();
    s["level"] = 4.into();
    s
}

async fn translate(
    fed: &Fed,
    pred: &VerifiedCredential,
    by: &str,
    framework: &str,
) -> (String, VerifiedCredential) {
    let key = fed.members[by].gateway_key();
    let jws = issue_translation_at(
        pred,
        translated(pred, framework),
        &format!("cqf-{framework}-ref"),
        "1.0.0",
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
    let (home_jws, _) = translate(fed, &inter, "sc", "scf").await;
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
    assert_eq!(
        (ev.table_id.as_str(), ev.table_version.as_str()),
        ("cqf-wfs-ref", "1.0.0")
    );
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
    let jws = issue_translation_at(&orig, s, "cqf-wfs-ref", "1.0.0", &gw("cq"), &key, at(T0)).unwrap();
    assert_eq!(chain_kind(&fed, &[original, jws]).await, ProblemType::ChainBroken);
}

/// A translation payload with hand-made evidence, signed by cq's gateway.
fn forged_translation(fed: &Fed, evidence: Value) -> String {
    let mut p = new_learning_credential(&gw("cq"), subject("cq"), at(T0 - 10), None);
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
        "mappingTableId": "cqf-wfs-ref",
        "mappingTableVersion": "1.0.0",
    });
    let ok = forged_translation(&fed, json!([good.clone()]));
    fed.verifier.verify_chain(&[original.clone(), ok]).await.unwrap();

    for field in [
        "predecessorId",
        "predecessorSha256",
        "mappingTableId",
        "mappingTableVersion",
    ] {
        let mut ev = good.clone();
        ev.as_object_mut().unwrap().remove(field);
        let jws = forged_translation(&fed, json!([ev]));
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
    let jws = forged_translation(&fed, json!([upper]));
    assert_eq!(
        fed.verifier.verify(&jws).await.unwrap_err().kind(),
        ProblemType::SchemaViolation
    );
    // Two evidence entries of our type are ambiguous.
    let jws = forged_translation(&fed, json!([good.clone(), good]));
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
    let err = issue_translation_at(
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
