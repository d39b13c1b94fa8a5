//! A gateway-key rotation performed while verifiers run continuously causes
//! zero failed verifications (SPEC §2). Eight tasks sign translation
//! credentials with whatever key the gateway currently signs with and verify
//! them through the trust cache, while the operator rotates the key through
//! the key store file. Progress is observed through counters and
//! `yield_now`; nothing sleeps.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

mod trust_support;

use bashu_gateway::credential::{issue_translation, IssuerId, Verifier};
use bashu_gateway::jose::{Alg, SigningKey};
use bashu_gateway::trust::{
    Clock, KeyRole, KeySetFetcher, KeyStatus, KeyStore, LocalKeys, ManualClock, TrustCache, TrustCacheConfig,
};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use trust_support::*;

#[derive(Default)]
struct Tally {
    ok: AtomicUsize,
    failed: AtomicUsize,
    by_kid: Mutex<HashMap<String, usize>>,
    errors: Mutex<Vec<String>>,
}

impl Tally {
    fn ok_with(&self, kid: &str) -> usize {
        self.by_kid.lock().unwrap().get(kid).copied().unwrap_or(0)
    }
}

/// Yields until `cond` holds, or stops early once any verification failed
/// (the final assertions then report the failures).
async fn until(tally: &Tally, what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..2_000_000 {
        if cond() || tally.failed.load(Ordering::SeqCst) > 0 {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("timed out waiting for {what}");
}

struct Setup {
    _dir: tempfile::TempDir,
    store_path: std::path::PathBuf,
    clock: Arc<ManualClock>,
    local: Arc<LocalKeys>,
    verifier: Verifier,
    cache: Arc<TrustCache>,
    issuer: SigningKey,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let store_path = dir.path().join("keystore.json");
    let fed_path = dir.path().join("federation.jwk");
    let mut s = KeyStore::create("cq").unwrap();
    let issuer = s.generate_issuer(Alg::Es256, T0 - DAY).unwrap();
    s.generate(KeyRole::Gateway, Alg::Es256, T0 - DAY).unwrap();
    s.save(&store_path).unwrap();
    SigningKey::generate(Alg::EdDsa, "cq-fed")
        .unwrap()
        .save_private(&fed_path)
        .unwrap();

    let clock = Arc::new(ManualClock::at_secs(T0));
    let local = Arc::new(LocalKeys::open_with_clock(&store_path, &fed_path, 600, clock.clone()).unwrap());
    let pinned = HashMap::from([("cq".to_owned(), local.federation_public())]);
    let fetcher: Arc<dyn KeySetFetcher> = local.clone();
    let cache = Arc::new(TrustCache::with_clock(
        TrustCacheConfig::default(),
        pinned,
        fetcher,
        clock.clone(),
    ));
    let verifier = Verifier::new(cache.clone(), 60);
    Setup {
        _dir: dir,
        store_path,
        clock,
        local,
        verifier,
        cache,
        issuer,
    }
}

/// Starts eight sign-then-verify loops; returns their handles.
async fn start_workers(
    s: &Setup,
    tally: &Arc<Tally>,
    stop: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let payload = bashu_gateway::credential::new_learning_credential(
        &IssuerId::credit_bank("cq").unwrap(),
        subject("cq"),
        at(T0 - DAY),
        Some(at(T0 + 365 * DAY)),
    );
    let original = bashu_gateway::credential::issue_credential(&payload, &s.issuer).unwrap();
    let pred = Arc::new(s.verifier.verify(&original).await.unwrap());
    (0..8)
        .map(|_| {
            let (local, verifier, clock) = (s.local.clone(), s.verifier.clone(), s.clock.clone());
            let (tally, stop, pred) = (tally.clone(), stop.clone(), pred.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    let key = local.signing_key().unwrap();
                    let now = at(clock.now_secs());
                    let jws = issue_translation(
                        &pred,
                        pred.subject().clone(),
                        "cqf-wfs-ref",
                        "1.0.0",
                        &IssuerId::gateway("cq").unwrap(),
                        &key,
                        now,
                    )
                    .unwrap();
                    match verifier.verify(&jws).await {
                        Ok(v) => {
                            tally.ok.fetch_add(1, Ordering::SeqCst);
                            *tally
                                .by_kid
                                .lock()
                                .unwrap()
                                .entry(v.kid().to_owned())
                                .or_default() += 1;
                        }
                        Err(e) => {
                            tally.failed.fetch_add(1, Ordering::SeqCst);
                            tally.errors.lock().unwrap().push(e.to_string());
                        }
                    }
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect()
}

fn edit(path: &std::path::Path, f: impl FnOnce(&mut KeyStore)) {
    let mut s = KeyStore::load(path).unwrap();
    f(&mut s);
    s.save(path).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rotation_under_load_causes_zero_failures() {
    let s = setup();
    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let k1 = s.local.signing_key().unwrap().kid().to_owned();
    let workers = start_workers(&s, &tally, &stop).await;
    until(&tally, "warm-up", || tally.ok.load(Ordering::SeqCst) >= 40).await;

    // 1. `bashu keys rotate`, phase one: generate the successor as `next`
    //    and publish it.
    let mut k2 = String::new();
    edit(&s.store_path, |st| {
        k2 = st.generate(KeyRole::Gateway, Alg::Es256, T0).unwrap()
    });
    s.clock.advance_ms(1000);
    assert_eq!(s.local.keyset().key(&k2).unwrap().status, KeyStatus::Next);

    // 2. Wait one cache TTL: move time into the peers' refresh-ahead window;
    //    their background refresh picks the `next` key up.
    s.clock.advance_secs(301);
    let cache = s.cache.clone();
    let k2c = k2.clone();
    for _ in 0..2_000_000 {
        if cache
            .cached_set("cq")
            .await
            .is_some_and(|set| set.key(&k2c).is_some())
        {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert!(
        cache.cached_set("cq").await.unwrap().key(&k2).is_some(),
        "cache never saw the next key"
    );
    let before = tally.ok.load(Ordering::SeqCst);
    until(&tally, "verifications after refresh", || {
        tally.ok.load(Ordering::SeqCst) >= before + 40
    })
    .await;

    // 3. Phase two: promote; the old key becomes `retiring`.
    edit(&s.store_path, |st| {
        st.promote(&k2, s.clock.now_secs(), 3600).unwrap()
    });
    s.clock.advance_ms(1000);
    until(&tally, "credentials signed with the new key", || {
        tally.ok_with(&k2) >= 40
    })
    .await;

    stop.store(true, Ordering::SeqCst);
    for w in workers {
        w.await.unwrap();
    }
    let errors = tally.errors.lock().unwrap().clone();
    assert_eq!(tally.failed.load(Ordering::SeqCst), 0, "failures: {errors:?}");
    assert!(tally.ok_with(&k1) >= 40 && tally.ok_with(&k2) >= 40);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn promoting_without_waiting_is_covered_by_the_unknown_kid_refetch() {
    let s = setup();
    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let workers = start_workers(&s, &tally, &stop).await;
    until(&tally, "warm-up", || tally.ok.load(Ordering::SeqCst) >= 40).await;

    // An impatient operator: generate and promote at once. Peers have never
    // seen the key; the first verification misses and triggers one refetch.
    s.clock.advance_ms(1000); // past the refetch rate limit of the warm-up fetch
    let mut k2 = String::new();
    edit(&s.store_path, |st| {
        k2 = st.generate(KeyRole::Gateway, Alg::Es256, T0).unwrap();
        st.promote(&k2, T0, 3600).unwrap();
    });
    s.clock.advance_ms(1000);
    until(&tally, "credentials signed with the new key", || {
        tally.ok_with(&k2) >= 40
    })
    .await;

    stop.store(true, Ordering::SeqCst);
    for w in workers {
        w.await.unwrap();
    }
    let errors = tally.errors.lock().unwrap().clone();
    assert_eq!(tally.failed.load(Ordering::SeqCst), 0, "failures: {errors:?}");
}
