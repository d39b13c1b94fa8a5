//! Interoperability: public test vectors and tokens made by an independent
//! implementation (RustCrypto `p256`, not josekit/OpenSSL).
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

mod trust_support;

use bashu_gateway::jose::{b64, SigningKey, VerifyingKey};
use bashu_gateway::problem::ProblemType;
use p256::ecdsa::signature::Signer;
use serde_json::{json, Map, Value};
use std::path::PathBuf;
use trust_support::*;

fn fixture(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/jose")
        .join(name);
    std::fs::read_to_string(path).unwrap().trim().to_owned()
}

#[test]
fn rfc8037_a4_ed25519_vector_verifies_and_signs_identically() {
    let jwk: Map<String, Value> = serde_json::from_str(&fixture("rfc8037-a4-ed25519.jwk")).unwrap();
    let jws = fixture("rfc8037-a4.jws");
    let (input, sig) = jws.rsplit_once('.').unwrap();
    let (header, payload) = input.split_once('.').unwrap();
    assert_eq!(b64::decode(header).unwrap(), br#"{"alg":"EdDSA"}"#);
    assert_eq!(b64::decode(payload).unwrap(), b"Example of Ed25519 signing");
    let sig = b64::decode(sig).unwrap();

    let mut public = jwk.clone();
    public.remove("d");
    let key = VerifyingKey::from_jwk(&public).unwrap();
    key.verify_raw(input.as_bytes(), &sig).unwrap();

    // Ed25519 is deterministic: our signer must reproduce the RFC's bytes.
    let mut private = jwk;
    private.insert("kid".into(), "rfc8037".into());
    let signer = SigningKey::from_jwk_json(&Value::Object(private).to_string()).unwrap();
    assert_eq!(signer.sign_raw(input.as_bytes()).unwrap(), sig);

    // Any change breaks it.
    let mut bad = sig.clone();
    bad[0] ^= 0x80;
    assert!(key.verify_raw(input.as_bytes(), &bad).is_err());
    assert!(key
        .verify_raw(b"eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmC", &sig)
        .is_err());
}

#[test]
fn private_jwk_with_foreign_public_half_is_refused() {
    let mut jwk: Map<String, Value> = serde_json::from_str(&fixture("rfc8037-a4-ed25519.jwk")).unwrap();
    jwk.insert("kid".into(), "k".into());
    let other = SigningKey::generate(bashu_gateway::jose::Alg::EdDsa, "o").unwrap();
    jwk.insert("x".into(), other.public_jwk()["x"].clone());
    assert!(SigningKey::from_jwk_json(&Value::Object(jwk).to_string()).is_err());
}

/// An ES256 credential made entirely with RustCrypto's `p256`.
fn p256_credential(fed: &mut Fed) -> String {
    let secret: [u8; 32] = rand::random();
    let sk = p256::ecdsa::SigningKey::from_bytes((&secret).into()).unwrap();
    let point = sk.verifying_key().to_encoded_point(false);
    let jwk = json!({
        "kty": "EC", "crv": "P-256", "kid": "cq-cb-p256",
        "x": b64::encode(point.x().unwrap()), "y": b64::encode(point.y().unwrap()),
    });
    fed.member("cq")
        .store
        .import_issuer(jwk.as_object().unwrap(), T0)
        .unwrap();
    fed.republish("cq");

    let header = json!({"alg": "ES256", "typ": "vc+jwt", "cty": "vc", "kid": "cq-cb-p256"});
    let payload = fed.payload("cq");
    let input = format!(
        "{}.{}",
        b64::encode(header.to_string().as_bytes()),
        b64::encode(payload.to_string().as_bytes())
    );
    let sig: p256::ecdsa::Signature = sk.sign(input.as_bytes());
    format!("{input}.{}", b64::encode(&sig.to_bytes()))
}

#[tokio::test]
async fn es256_token_from_an_independent_implementation_verifies() {
    let mut fed = Fed::new();
    let jws = p256_credential(&mut fed);
    let v = fed.verifier.verify(&jws).await.unwrap();
    assert_eq!(v.kid(), "cq-cb-p256");
    assert_eq!(v.issuer().to_string(), "urn:bashu:cq:credit-bank");

    // Tampered copy: one payload character changed, signature kept.
    let (header, rest) = jws.split_once('.').unwrap();
    let (payload, sig) = rest.split_once('.').unwrap();
    let mut claims: Value = serde_json::from_slice(&b64::decode(payload).unwrap()).unwrap();
    claims["credentialSubject"]["credits"] = 13.into();
    let tampered = format!("{header}.{}.{sig}", b64::encode(claims.to_string().as_bytes()));
    let err = fed.verifier.verify(&tampered).await.unwrap_err();
    assert_eq!(err.kind(), ProblemType::InvalidSignature);
}

#[test]
fn our_es256_signatures_verify_with_p256() {
    use p256::ecdsa::signature::Verifier as _;
    let key = SigningKey::generate(bashu_gateway::jose::Alg::Es256, "k").unwrap();
    let jwk = key.public_jwk();
    let mut sec1 = vec![4u8];
    sec1.extend(b64::decode(jwk["x"].as_str().unwrap()).unwrap());
    sec1.extend(b64::decode(jwk["y"].as_str().unwrap()).unwrap());
    let vk = p256::ecdsa::VerifyingKey::from_sec1_bytes(&sec1).unwrap();
    let jws = bashu_gateway::jose::sign_compact("vc+jwt", b"{}", &key).unwrap();
    let (input, sig) = jws.rsplit_once('.').unwrap();
    let sig = p256::ecdsa::Signature::from_slice(&b64::decode(sig).unwrap()).unwrap();
    vk.verify(input.as_bytes(), &sig).unwrap();
}
