//! Trust key sets and the trust cache: signing and verifying sets, rollback
//! and expiry, single-flight refetch, rate limiting, negative caching,
//! refresh-ahead, bounded stale-if-error and the metrics of each. Time is a
//! manual clock; no test sleeps.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

mod trust_support;

use bashu_gateway::jose::{Alg, SigningKey};
use bashu_gateway::problem::ProblemType;
use bashu_gateway::trust::metrics::{FETCHES, KEYSET_SEQ, STALE_SERVED, UNKNOWN_KID_REFETCH};
use bashu_gateway::trust::{KeySet, LookupError, ManualClock, TrustCache, TrustCacheConfig, TrustError};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use trust_support::*;

fn eager() -> TrustCacheConfig {
    TrustCacheConfig {
        refetch_min_interval_ms: 0,
        ..TrustCacheConfig::default()
    }
}

#[test]
fn keyset_sign_verify_round_trip_and_refusals() {
    let mut m = Member::new("cq", Alg::EdDsa);
    let jws = m.publish(T0);
    let fed_pub = m.fed.verifying_key().clone();
    let set = KeySet::verify(&jws, &fed_pub, T0).unwrap();
    assert_eq!(set.iss, "cq");
    assert_eq!(set.exp - set.iat, KEYSET_TTL);
    assert_eq!(set.keys.len(), 2);
    assert_eq!(set.to_json()["keys"][0]["role"], "issuer");
    assert!(set.to_json()["keys"][0].get("d").is_none());

    // Signed by a key that is not the pinned federation key.
    let other = SigningKey::generate(Alg::EdDsa, "cq-fed").unwrap();
    assert!(matches!(
        KeySet::verify(&jws, other.verifying_key(), T0),
        Err(TrustError::Jose(_))
    ));
    // Expired.
    assert!(matches!(
        KeySet::verify(&jws, &fed_pub, T0 + KEYSET_TTL),
        Err(TrustError::Expired { .. })
    ));
    // Issued in the future.
    assert!(matches!(
        KeySet::verify(&jws, &fed_pub, T0 - 120),
        Err(TrustError::NotYetIssued { .. })
    ));
    // For another member than asked.
    assert!(matches!(
        KeySet::verify_for("sc", &jws, &fed_pub, T0),
        Err(TrustError::WrongIssuer { .. })
    ));
    // A credential-typed JWS is not a key set.
    let set_json = set.to_json().to_string();
    let wrong_typ = bashu_gateway::jose::sign_compact("vc+jwt", set_json.as_bytes(), &m.fed).unwrap();
    assert!(KeySet::verify(&wrong_typ, &fed_pub, T0).is_err());
    // Private key material in a set is refused outright.
    let mut leaked = set.to_json();
    leaked["keys"][1]["d"] = "AAAA".into();
    let leaked =
        bashu_gateway::jose::sign_compact("bashu-keyset+jwt", leaked.to_string().as_bytes(), &m.fed).unwrap();
    assert!(KeySet::verify(&leaked, &fed_pub, T0).is_err());
}

#[tokio::test]
async fn thousand_concurrent_misses_share_one_fetch_and_all_succeed() {
    let mut fed = Fed::with_config(eager());
    fed.cache.refresh_all().await;
    let before = fed.fetcher.calls();

    // The credit bank starts using a key the cache has not seen yet.
    let fresh = SigningKey::generate(Alg::Es256, "cq-cb-fresh").unwrap();
    fed.member("cq")
        .store
        .import_issuer(&fresh.public_jwk(), T0)
        .unwrap();
    fed.republish("cq");
    let jws = bashu_gateway::credential::issue_credential(&fed.payload("cq"), &fresh).unwrap();

    fed.fetcher.hold();
    let tasks: Vec<_> = (0..1000)
        .map(|_| {
            let verifier = fed.verifier.clone();
            let jws = jws.clone();
            tokio::spawn(async move { verifier.verify(&jws).await.map(|v| v.kid().to_owned()) })
        })
        .collect();
    // The first task reaches the fetcher and is held there; let every other
    // task run up to the cache's single-flight point before releasing it.
    fed.fetcher.started.notified().await;
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
    fed.fetcher.open();
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap(), "cq-cb-fresh");
    }
    assert_eq!(fed.fetcher.calls() - before, 1);
}

#[tokio::test]
async fn thousand_concurrent_misses_for_a_bogus_kid_fetch_once_then_fail_closed() {
    let fed = Fed::with_config(eager());
    fed.cache.refresh_all().await;
    let before = fed.fetcher.calls();
    let bogus = SigningKey::generate(Alg::Es256, "cq-cb-bogus").unwrap();
    let jws = bashu_gateway::credential::issue_credential(&fed.payload("cq"), &bogus).unwrap();

    fed.fetcher.hold();
    let tasks: Vec<_> = (0..1000)
        .map(|_| {
            let verifier = fed.verifier.clone();
            let jws = jws.clone();
            tokio::spawn(async move { verifier.verify(&jws).await.map_err(|e| e.kind()) })
        })
        .collect();
    fed.fetcher.started.notified().await;
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
    fed.fetcher.open();
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap_err(), ProblemType::UnknownKey);
    }
    assert_eq!(fed.fetcher.calls() - before, 1);

    // Negative cache: within negative_ttl the answer comes without a fetch…
    fed.clock.advance_secs(4);
    assert_eq!(
        fed.verifier.verify(&jws).await.unwrap_err().kind(),
        ProblemType::UnknownKey
    );
    assert_eq!(fed.fetcher.calls() - before, 1);
    // …and after it, one more fetch is allowed.
    fed.clock.advance_secs(2);
    assert_eq!(
        fed.verifier.verify(&jws).await.unwrap_err().kind(),
        ProblemType::UnknownKey
    );
    assert_eq!(fed.fetcher.calls() - before, 2);
}

#[tokio::test]
async fn unknown_kid_refetch_is_rate_limited_per_member() {
    let fed = Fed::new(); // refetch_min_interval_ms = 1000
    fed.cache.refresh_all().await;
    fed.clock.advance_ms(1500);
    let before = fed.fetcher.calls();
    let miss = |kid: &'static str| {
        let cache = fed.cache.clone();
        async move { cache.key("cq", kid).await.unwrap_err() }
    };
    assert!(matches!(miss("cq-a").await, LookupError::UnknownKey { .. }));
    assert!(matches!(miss("cq-b").await, LookupError::UnknownKey { .. }));
    assert!(matches!(miss("cq-c").await, LookupError::UnknownKey { .. }));
    assert_eq!(fed.fetcher.calls() - before, 1);
    // Another member has its own budget.
    assert!(matches!(
        fed.cache.key("sc", "sc-a").await.unwrap_err(),
        LookupError::UnknownKey { .. }
    ));
    assert_eq!(fed.fetcher.calls() - before, 2);
    fed.clock.advance_ms(1000);
    assert!(matches!(miss("cq-d").await, LookupError::UnknownKey { .. }));
    assert_eq!(fed.fetcher.calls() - before, 3);
}

#[tokio::test]
async fn members_outside_the_federation_cost_nothing() {
    let fed = Fed::new();
    let err = fed.cache.key("gz", "gz-1").await.unwrap_err();
    assert_eq!(err, LookupError::UnknownMember("gz".into()));
    assert_eq!(err.problem_type(), ProblemType::UnknownKey);
    assert_eq!(fed.fetcher.calls(), 0);
}

#[tokio::test]
async fn first_fetch_failure_is_unavailable() {
    let fed = Fed::new();
    fed.fetcher.fail.store(true, Ordering::SeqCst);
    let err = fed.verifier.verify(&fed.credential("cq")).await.unwrap_err();
    assert_eq!(err.kind(), ProblemType::Unavailable);
    // Fixed peer: the next attempt (after the rate limit) succeeds.
    fed.fetcher.fail.store(false, Ordering::SeqCst);
    fed.clock.advance_ms(1000);
    fed.verifier.verify(&fed.credential("cq")).await.unwrap();
}

#[tokio::test]
async fn stale_if_error_is_bounded_by_exp_plus_grace() {
    let fed = Fed::with_config(TrustCacheConfig {
        stale_grace_secs: 1000,
        ..TrustCacheConfig::default()
    });
    let jws = fed.credential("cq");
    fed.verifier.verify(&jws).await.unwrap();
    fed.fetcher.fail.store(true, Ordering::SeqCst);
    // Past exp, peer unreachable: the last good set keeps serving…
    fed.clock.set_ms((T0 + KEYSET_TTL + 10) * 1000);
    fed.verifier.verify(&jws).await.unwrap();
    fed.clock.set_ms((T0 + KEYSET_TTL + 999) * 1000);
    fed.verifier.verify(&jws).await.unwrap();
    // …but never past exp + grace.
    fed.clock.set_ms((T0 + KEYSET_TTL + 1000) * 1000);
    assert_eq!(
        fed.verifier.verify(&jws).await.unwrap_err().kind(),
        ProblemType::Unavailable
    );
}

#[tokio::test]
async fn expired_set_is_replaced_when_the_peer_answers() {
    let mut fed = Fed::new();
    let jws = fed.credential("cq");
    fed.verifier.verify(&jws).await.unwrap();
    fed.clock.set_ms((T0 + KEYSET_TTL + 5) * 1000);
    fed.republish("cq");
    fed.verifier.verify(&jws).await.unwrap();
    let set = fed.cache.cached_set("cq").await.unwrap();
    assert_eq!(set.iat, T0 + KEYSET_TTL + 5);
}

#[tokio::test]
async fn refresh_ahead_runs_in_the_background() {
    let mut fed = Fed::new();
    let jws = fed.credential("cq");
    fed.verifier.verify(&jws).await.unwrap();
    assert_eq!(fed.fetcher.calls(), 1);
    // Within refresh_ahead (300 s) of exp: answered from the current set,
    // and one background refresh fetches the newer one.
    fed.clock.set_ms((T0 + KEYSET_TTL - 200) * 1000);
    fed.republish("cq");
    let new_seq = fed.members["cq"].store.seq();
    fed.verifier.verify(&jws).await.unwrap();
    fed.verifier.verify(&jws).await.unwrap();
    for _ in 0..10_000 {
        if fed.cache.cached_set("cq").await.unwrap().seq == new_seq {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(fed.cache.cached_set("cq").await.unwrap().seq, new_seq);
    assert_eq!(fed.fetcher.calls(), 2);
}

#[tokio::test]
async fn rollback_to_a_lower_seq_is_refused() {
    let mut fed = Fed::with_config(eager());
    let old = fed.member("cq").publish(T0);
    let newer = fed.member("cq").publish(T0);
    fed.fetcher.put("cq", newer);
    let seq = fed.cache.refresh("cq").await.unwrap();
    fed.fetcher.put("cq", old);
    let err = fed.cache.refresh("cq").await.unwrap_err();
    assert!(err.to_string().contains("rollback"), "{err}");
    assert_eq!(fed.cache.cached_set("cq").await.unwrap().seq, seq);
    // Invalidation forgets sets, not the high-water mark.
    fed.cache.invalidate_all();
    assert!(fed.cache.refresh("cq").await.is_err());
}

#[tokio::test]
async fn a_peer_serving_another_members_set_is_refused() {
    let fed = Fed::with_config(eager());
    let sc_set = fed.members["sc"]
        .store
        .keyset(T0, KEYSET_TTL)
        .sign(&fed.members["cq"].fed)
        .unwrap();
    fed.fetcher.put("cq", sc_set);
    let err = fed.cache.refresh("cq").await.unwrap_err();
    assert!(err.to_string().contains("is for sc, expected cq"), "{err}");
}

/// A federation of one member, `id`, unique to the calling test so the
/// process-wide metrics it reads are its own.
struct Solo {
    member: Member,
    fetcher: Arc<FakeFetcher>,
    clock: Arc<ManualClock>,
    cache: TrustCache,
}

fn solo(id: &str) -> Solo {
    let clock = Arc::new(ManualClock::at_secs(T0));
    let fetcher = Arc::new(FakeFetcher::new());
    let mut member = Member::new(id, Alg::Es256);
    fetcher.put(id, member.publish(T0));
    let pinned = HashMap::from([(id.to_owned(), member.fed.verifying_key().clone())]);
    let cache = TrustCache::with_clock(eager(), pinned, fetcher.clone(), clock.clone());
    Solo {
        member,
        fetcher,
        clock,
        cache,
    }
}

fn fetches(member: &str, outcome: &str) -> u64 {
    FETCHES.with_label_values(&[member, outcome]).get()
}

#[tokio::test]
async fn fetch_outcomes_are_counted_per_member() {
    let mut s = solo("mfetch");
    let seq = s.cache.refresh("mfetch").await.unwrap();
    assert_eq!(fetches("mfetch", "ok"), 1);
    assert_eq!(KEYSET_SEQ.with_label_values(&["mfetch"]).get(), seq as i64);

    // Rollback: an older set than the one served.
    let older = s.member.publish(T0 - 10);
    s.fetcher.put("mfetch", s.member.publish(T0));
    let newer = s.cache.refresh("mfetch").await.unwrap();
    s.fetcher.put("mfetch", older);
    assert!(s.cache.refresh("mfetch").await.is_err());
    assert_eq!(fetches("mfetch", "rollback"), 1);
    assert_eq!(KEYSET_SEQ.with_label_values(&["mfetch"]).get(), newer as i64);

    // Expired, invalid, unreachable.
    s.fetcher.put("mfetch", s.member.publish(T0 - 2 * KEYSET_TTL));
    assert!(s.cache.refresh("mfetch").await.is_err());
    assert_eq!(fetches("mfetch", "expired"), 1);
    s.fetcher.put("mfetch", "a.b.c".into());
    assert!(s.cache.refresh("mfetch").await.is_err());
    assert_eq!(fetches("mfetch", "invalid"), 1);
    s.fetcher.fail.store(true, Ordering::SeqCst);
    assert!(s.cache.refresh("mfetch").await.is_err());
    assert_eq!(fetches("mfetch", "unreachable"), 1);
    assert_eq!(fetches("mfetch", "ok"), 2);
}

#[tokio::test]
async fn unknown_kid_refetches_are_counted_once_per_fetch() {
    let s = solo("mkid");
    s.cache.refresh("mkid").await.unwrap();
    let refetches = || UNKNOWN_KID_REFETCH.with_label_values(&["mkid"]).get();
    assert_eq!(refetches(), 0, "a first fetch is not an unknown-kid refetch");
    assert!(matches!(
        s.cache.key("mkid", "mkid-x").await.unwrap_err(),
        LookupError::UnknownKey { .. }
    ));
    assert_eq!(refetches(), 1);
    // Negatively cached: no fetch, nothing counted.
    assert!(s.cache.key("mkid", "mkid-x").await.is_err());
    assert_eq!(refetches(), 1);
    assert_eq!(s.fetcher.calls(), 2);
}

#[tokio::test]
async fn stale_answers_are_counted() {
    let s = solo("mstale");
    let kid = s.member.issuer.kid().to_owned();
    s.cache.key("mstale", &kid).await.unwrap();
    let stale = || STALE_SERVED.with_label_values(&["mstale"]).get();
    assert_eq!(stale(), 0);
    s.fetcher.fail.store(true, Ordering::SeqCst);
    s.clock.set_ms((T0 + KEYSET_TTL + 10) * 1000);
    s.cache.key("mstale", &kid).await.unwrap();
    s.cache.key("mstale", &kid).await.unwrap();
    assert_eq!(stale(), 2);
}
