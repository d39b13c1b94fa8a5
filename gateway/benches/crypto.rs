//! Crypto throughput: credential signing and verification for ES256 and
//! EdDSA (full path: strict parsing, cache lookup, signature, profile), and
//! the trust-cache hit that every verification starts with.

use bashu_gateway::credential::{issue_credential, new_learning_credential, IssuerId, Verifier};
use bashu_gateway::jose::{sign_compact, Alg, SigningKey};
use bashu_gateway::trust::{KeyRole, KeyStore, StaticFetcher, TrustCache, TrustCacheConfig};
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Setup {
    rt: tokio::runtime::Runtime,
    verifier: Verifier,
    cache: Arc<TrustCache>,
    issuer: SigningKey,
    payload: Value,
}

fn setup(alg: Alg) -> Setup {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let now = time::OffsetDateTime::now_utc();
    let mut store = KeyStore::create("cq").unwrap_or_else(|e| panic!("{e}"));
    let issuer = store
        .generate_issuer(alg, now.unix_timestamp())
        .unwrap_or_else(|e| panic!("{e}"));
    store
        .generate(KeyRole::Gateway, alg, now.unix_timestamp())
        .unwrap_or_else(|e| panic!("{e}"));
    let fed = SigningKey::generate(Alg::EdDsa, "cq-fed").unwrap_or_else(|e| panic!("{e}"));
    let fetcher = StaticFetcher::new();
    fetcher.put(
        "cq",
        store
            .publish(&fed, now.unix_timestamp(), 3600)
            .unwrap_or_else(|e| panic!("{e}")),
    );
    let pinned = HashMap::from([("cq".to_owned(), fed.verifying_key().clone())]);
    let cache = Arc::new(TrustCache::new(
        TrustCacheConfig::default(),
        pinned,
        Arc::new(fetcher),
    ));
    let verifier = Verifier::new(cache.clone(), 60);
    let subject = json!({
        "id": "urn:bashu:learner:cq:8f3a2c", "framework": "cqf", "frameworkVersion": "1.0.0",
        "level": 5, "credits": 12, "learningHours": 360, "outcomeType": "职业技能",
        "title": {"zh": "数控加工", "en": "CNC machining"}, "awardedOn": "2025-07-01",
        "awardingBody": "重庆市终身学习学分银行", "extensions": {"x-local": [1, 2, 3]}
    });
    let issuer_id = IssuerId::credit_bank("cq").unwrap_or_else(|e| panic!("{e}"));
    let payload = new_learning_credential(&issuer_id, subject, now, Some(now + time::Duration::days(365)));
    Setup {
        rt,
        verifier,
        cache,
        issuer,
        payload,
    }
}

fn crypto(c: &mut Criterion) {
    for alg in [Alg::Es256, Alg::EdDsa] {
        let s = setup(alg);
        let jws = issue_credential(&s.payload, &s.issuer).unwrap_or_else(|e| panic!("{e}"));
        s.rt.block_on(s.verifier.verify(&jws))
            .unwrap_or_else(|e| panic!("{e}"));

        c.bench_function(&format!("sign_raw/{alg}"), |b| {
            b.iter(|| s.issuer.sign_raw(black_box(b"header.payload")))
        });
        c.bench_function(&format!("issue_credential/{alg}"), |b| {
            b.iter(|| issue_credential(black_box(&s.payload), &s.issuer))
        });
        c.bench_function(&format!("verify_credential/{alg}"), |b| {
            b.iter(|| s.rt.block_on(s.verifier.verify(black_box(&jws))))
        });
        let bytes = s.payload.to_string();
        c.bench_function(&format!("sign_compact/{alg}"), |b| {
            b.iter(|| sign_compact("vc+jwt", black_box(bytes.as_bytes()), &s.issuer))
        });
    }

    let s = setup(Alg::Es256);
    let kid = s.issuer.kid().to_owned();
    s.rt.block_on(s.cache.key("cq", &kid))
        .unwrap_or_else(|e| panic!("{e}"));
    // Many lookups per block_on, so the runtime entry is not what we measure.
    c.bench_function("trust_cache_hit", |b| {
        b.iter_custom(|iters| {
            s.rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    let _ = black_box(s.cache.key(black_box("cq"), black_box(&kid)).await);
                }
                start.elapsed()
            })
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = crypto
}
criterion_main!(benches);
