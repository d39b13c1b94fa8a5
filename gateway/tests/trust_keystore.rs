//! The operator key store (lifecycle, atomic 0600 persistence, publication
//! counter) and `LocalKeys` (what a running gateway signs and publishes).
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

mod trust_support;

use bashu_gateway::jose::{Alg, SigningKey};
use bashu_gateway::trust::{
    Clock, KeyRole, KeySet, KeySetFetcher, KeyStatus, KeyStore, KeyStoreError, LocalKeys, ManualClock,
};
use std::path::Path;
use std::sync::Arc;
use trust_support::*;

fn statuses(store: &KeyStore) -> Vec<(String, KeyStatus)> {
    store.list().into_iter().map(|k| (k.kid, k.status)).collect()
}

#[test]
fn lifecycle_next_active_retiring_revoked() {
    let mut s = KeyStore::create("cq").unwrap();
    assert!(matches!(
        s.active_gateway_key(),
        Err(KeyStoreError::NoActiveGatewayKey)
    ));
    let k1 = s.generate(KeyRole::Gateway, Alg::Es256, T0).unwrap();
    assert!(k1.starts_with("cq-gw-20260101-"), "{k1}");
    assert_eq!(s.get(&k1).unwrap().status(), KeyStatus::Active);
    let k2 = s.generate(KeyRole::Gateway, Alg::EdDsa, T0).unwrap();
    assert_eq!(s.get(&k2).unwrap().status(), KeyStatus::Next);
    assert_eq!(s.active_gateway_key().unwrap().kid(), k1);
    assert_eq!(s.next_gateway_kid(), Some(k2.as_str()));

    // The only active gateway key cannot be retired.
    assert!(matches!(
        s.retire(&k1, T0 + 10),
        Err(KeyStoreError::LastActiveKey(_))
    ));
    // Promotion swaps active and demotes the old key with a retire window.
    s.promote(&k2, T0 + 100, 3600).unwrap();
    assert_eq!(s.active_gateway_key().unwrap().kid(), k2);
    let old = s.list().into_iter().find(|k| k.kid == k1).unwrap();
    assert_eq!(
        (old.status, old.retire_after),
        (KeyStatus::Retiring, Some(T0 + 3700))
    );
    // Only next keys can be promoted; revoked is final.
    assert!(matches!(
        s.promote(&k1, T0, 0),
        Err(KeyStoreError::InvalidTransition { .. })
    ));
    s.revoke(&k1, 1_000).unwrap();
    assert!(matches!(
        s.retire(&k1, T0),
        Err(KeyStoreError::InvalidTransition { .. })
    ));
    assert!(matches!(
        s.promote("nope", T0, 0),
        Err(KeyStoreError::UnknownKid(_))
    ));
    assert_eq!(
        statuses(&s),
        vec![(k1, KeyStatus::Revoked), (k2, KeyStatus::Active)]
    );
    // Issuer keys are the credit bank's: never generated as gateway keys here.
    assert!(matches!(
        s.generate(KeyRole::Issuer, Alg::Es256, T0),
        Err(KeyStoreError::WrongRole(_))
    ));
}

#[test]
fn imported_issuer_keys() {
    let mut s = KeyStore::create("cq").unwrap();
    let cb = SigningKey::generate(Alg::Es256, "cq-cb-1").unwrap();
    assert_eq!(s.import_issuer(&cb.public_jwk(), T0).unwrap(), "cq-cb-1");
    assert!(matches!(
        s.import_issuer(&cb.public_jwk(), T0),
        Err(KeyStoreError::DuplicateKid(_))
    ));
    // A private JWK is refused: the store must never hold the bank's secret.
    assert!(s.import_issuer(cb.private_jwk(), T0).is_err());
    // No kid: one is assigned.
    let mut anon = SigningKey::generate(Alg::EdDsa, "x").unwrap().public_jwk();
    anon.remove("kid");
    let kid = s.import_issuer(&anon, T0).unwrap();
    assert!(kid.starts_with("cq-cb-"), "{kid}");
    let info = s.list();
    assert!(info
        .iter()
        .all(|k| k.role == KeyRole::Issuer && k.status == KeyStatus::Active));
}

#[test]
fn save_is_atomic_0600_and_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keystore.json");
    let mut s = KeyStore::create("cq").unwrap();
    let cb = s.generate_issuer(Alg::Es256, T0).unwrap();
    s.generate(KeyRole::Gateway, Alg::EdDsa, T0).unwrap();
    s.save(&path).unwrap();
    s.save(&path).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        1,
        "temporary files left behind"
    );
    let loaded = KeyStore::load(&path).unwrap();
    assert_eq!(loaded.list(), s.list());
    assert_eq!(loaded.member(), "cq");
    // Issuer keys are stored public only.
    let text = std::fs::read_to_string(&path).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let issuer = v["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["role"] == "issuer")
        .unwrap();
    assert_eq!(issuer["kid"], cb.kid());
    assert!(issuer["jwk"].get("d").is_none());
}

#[test]
fn corrupt_or_inconsistent_stores_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keystore.json");
    let mut s = KeyStore::create("cq").unwrap();
    s.generate(KeyRole::Gateway, Alg::Es256, T0).unwrap();
    s.save(&path).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    // Two active gateway keys.
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut second = v["keys"][0].clone();
    second["kid"] = "cq-gw-other".into();
    second["jwk"]["kid"] = "cq-gw-other".into();
    v["keys"].as_array_mut().unwrap().push(second);
    std::fs::write(&path, v.to_string()).unwrap();
    assert!(KeyStore::load(&path).is_err());
    // Duplicate JSON members.
    std::fs::write(&path, text.replacen("\"seq\"", "\"seq\": 1, \"seq\"", 1)).unwrap();
    assert!(KeyStore::load(&path).is_err());
    // Truncated.
    std::fs::write(&path, &text[..text.len() / 2]).unwrap();
    assert!(KeyStore::load(&path).is_err());
}

#[test]
fn publish_bumps_seq_monotonically_and_signs_a_verifiable_set() {
    let mut s = KeyStore::create("cq").unwrap();
    s.generate(KeyRole::Gateway, Alg::Es256, T0).unwrap();
    let fed = SigningKey::generate(Alg::EdDsa, "cq-fed").unwrap();
    let a = s.publish(&fed, T0, 600).unwrap();
    let first = s.seq();
    assert!(first >= T0 as u64);
    let b = s.publish(&fed, T0, 600).unwrap();
    assert_eq!(s.seq(), first + 1);
    let (sa, sb) = (
        KeySet::verify(&a, fed.verifying_key(), T0).unwrap(),
        KeySet::verify(&b, fed.verifying_key(), T0).unwrap(),
    );
    assert!(sb.seq > sa.seq);
    // A publisher that lost its counter still moves forward with the clock.
    let mut fresh = KeyStore::create("cq").unwrap();
    fresh.publish(&fed, T0 + 10, 600).unwrap();
    assert!(fresh.seq() > first);
}

struct Files {
    _dir: tempfile::TempDir,
    store: std::path::PathBuf,
    fed: std::path::PathBuf,
}

fn files() -> Files {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("keystore.json");
    let fed = dir.path().join("federation.jwk");
    let mut s = KeyStore::create("cq").unwrap();
    s.generate_issuer(Alg::Es256, T0).unwrap();
    s.generate(KeyRole::Gateway, Alg::Es256, T0).unwrap();
    s.save(&store).unwrap();
    SigningKey::generate(Alg::EdDsa, "cq-fed")
        .unwrap()
        .save_private(&fed)
        .unwrap();
    Files {
        _dir: dir,
        store,
        fed,
    }
}

fn edit(path: &Path, f: impl FnOnce(&mut KeyStore)) {
    let mut s = KeyStore::load(path).unwrap();
    f(&mut s);
    s.save(path).unwrap();
}

#[tokio::test]
async fn local_keys_follow_the_key_store_file() {
    let f = files();
    let clock = Arc::new(ManualClock::at_secs(T0));
    let local = LocalKeys::open_with_clock(&f.store, &f.fed, 600, clock.clone()).unwrap();
    let fed_pub = local.federation_public();
    let k1 = local.signing_key().unwrap().kid().to_owned();
    let set1 = KeySet::verify(&local.signed_keyset().unwrap(), &fed_pub, T0).unwrap();
    assert_eq!(set1.keys.len(), 2);

    // The operator generates and promotes a new key with the CLI.
    let mut k2 = String::new();
    edit(&f.store, |s| {
        k2 = s.generate(KeyRole::Gateway, Alg::Es256, T0).unwrap();
        s.promote(&k2, T0, 3600).unwrap();
    });
    // Not noticed within the same second (cheap hot path)…
    assert_eq!(local.signing_key().unwrap().kid(), k1);
    // …but on the next check.
    clock.advance_ms(1000);
    assert_eq!(local.signing_key().unwrap().kid(), k2);
    let set2 = KeySet::verify(&local.signed_keyset().unwrap(), &fed_pub, clock.now_secs()).unwrap();
    assert!(set2.seq > set1.seq);
    assert_eq!(set2.key(&k1).unwrap().status, KeyStatus::Retiring);
    assert_eq!(set2.key(&k2).unwrap().status, KeyStatus::Active);

    // A broken file keeps the last good keys in service.
    std::fs::write(&f.store, "{").unwrap();
    clock.advance_ms(1000);
    assert_eq!(local.signing_key().unwrap().kid(), k2);
    assert_eq!(local.keyset().seq, set2.seq);

    // Past half its lifetime the set is re-published with a higher seq.
    clock.advance_secs(300);
    let set3 = KeySet::verify(&local.signed_keyset().unwrap(), &fed_pub, clock.now_secs()).unwrap();
    assert!(set3.seq > set2.seq);
    assert_eq!(set3.iat, clock.now_secs());

    // It is also the fetcher for its own member, and only for it.
    let jws = local.fetch("cq").await.unwrap();
    assert_eq!(
        KeySet::verify(&jws, &fed_pub, clock.now_secs()).unwrap().seq,
        set3.seq
    );
    assert!(local.fetch("sc").await.is_err());
}

#[test]
fn revoking_the_active_key_fails_closed() {
    let f = files();
    let clock = Arc::new(ManualClock::at_secs(T0));
    let local = LocalKeys::open_with_clock(&f.store, &f.fed, 600, clock.clone()).unwrap();
    let kid = local.signing_key().unwrap().kid().to_owned();
    edit(&f.store, |s| s.revoke(&kid, 1_000).unwrap());
    clock.advance_ms(1000);
    assert!(matches!(
        local.signing_key(),
        Err(KeyStoreError::NoActiveGatewayKey)
    ));
    assert_eq!(local.keyset().key(&kid).unwrap().status, KeyStatus::Revoked);
}

#[test]
fn offline_mode_serves_the_published_file() {
    let f = files();
    let fed = SigningKey::load(&f.fed).unwrap();
    // The host only has the public half of the federation key.
    std::fs::write(&f.fed, serde_json::Value::Object(fed.public_jwk()).to_string()).unwrap();
    let published = bashu_gateway::trust::published_keyset_path(&f.store);
    assert_eq!(published.file_name().unwrap(), "keystore.keyset.jws");
    let clock = Arc::new(ManualClock::at_secs(T0));
    // Nothing published yet: the gateway refuses to start.
    assert!(LocalKeys::open_with_clock(&f.store, &f.fed, 600, clock.clone()).is_err());

    let mut s = KeyStore::load(&f.store).unwrap();
    std::fs::write(&published, s.publish(&fed, T0, 600).unwrap()).unwrap();
    let local = LocalKeys::open_with_clock(&f.store, &f.fed, 600, clock.clone()).unwrap();
    assert!(!local.signs_own_keyset());
    let first = local.signed_keyset().unwrap();
    assert_eq!(KeySet::verify(&first, &fed_pub(&fed), T0).unwrap().seq, s.seq());

    // Not re-signed at half-life (it cannot be)…
    clock.advance_secs(400);
    assert_eq!(local.signed_keyset().unwrap(), first);
    // …but a newly published file is picked up.
    let second = s.publish(&fed, clock.now_secs(), 600).unwrap();
    std::fs::write(&published, &second).unwrap();
    clock.advance_ms(1000);
    assert_eq!(local.signed_keyset().unwrap(), second);
    // A forged or rolled-back file is not.
    let forged = s
        .keyset(clock.now_secs(), 600)
        .sign(&SigningKey::generate(Alg::EdDsa, "x").unwrap())
        .unwrap();
    std::fs::write(&published, forged).unwrap();
    clock.advance_ms(1000);
    assert_eq!(local.signed_keyset().unwrap(), second);
    std::fs::write(&published, first).unwrap();
    clock.advance_ms(1000);
    assert_eq!(local.signed_keyset().unwrap(), second);
}

fn fed_pub(fed: &SigningKey) -> bashu_gateway::jose::VerifyingKey {
    fed.verifying_key().clone()
}

#[tokio::test]
async fn member_router_sends_each_member_to_its_source() {
    use bashu_gateway::trust::{MemberRouter, StaticFetcher};
    let own = Arc::new(StaticFetcher::new());
    own.put("cq", "own".into());
    let peers = Arc::new(StaticFetcher::new());
    peers.put("sc", "peer".into());
    peers.put("cq", "wrong".into());
    let router = MemberRouter::new().route("cq", own).fallback(peers);
    assert_eq!(router.fetch("cq").await.unwrap(), "own");
    assert_eq!(router.fetch("sc").await.unwrap(), "peer");
    assert!(router.fetch("gz").await.is_err());
    assert!(MemberRouter::new().fetch("cq").await.is_err());
}
