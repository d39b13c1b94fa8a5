//! The crypto ceiling: how many ES256 signatures and full credential
//! verifications these cores do per second when they do nothing else, and
//! so how many exchanges per second the crypto alone would allow.

use super::BenchError;
use crate::credential::{issue_credential, new_learning_credential, IssuerId, Verifier};
use crate::devfed::FIXTURES;
use crate::jose::{Alg, SigningKey};
use crate::trust::{KeyStore, SystemClock, TrustCache, TrustCacheConfig};
use serde::Serialize;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Credential verifications one delivered exchange costs: the origin
/// verifies the credit bank's credential (`Pipeline::submit_inner`), the
/// receiver verifies the original and the interchange (`verify_chain` in
/// `Pipeline::receive_inner`). Key-set signatures are verified only when a
/// peer's set is fetched (once per TTL), so they amortise to ~0.
pub const VERIFY_PER_EXCHANGE: u32 = 3;
/// Signatures one delivered exchange costs: the interchange at the origin
/// and the home translation at the receiver (`translate_and_sign`).
pub const SIGN_PER_EXCHANGE: u32 = 2;

/// A signed credential and the key that signed it, for one algorithm.
pub struct Signed {
    pub alg: Alg,
    pub key: SigningKey,
    pub token: String,
}

/// Credit-bank credentials of `cq` signed with each of `algs`, and a
/// verifier whose cache already holds the key set naming those keys (no
/// network, no key-set signature on the measured path).
pub async fn signed_credentials(algs: &[Alg]) -> Result<(Vec<Signed>, Verifier), BenchError> {
    let now = time::OffsetDateTime::now_utc();
    let mut store = KeyStore::create("cq").map_err(crypto)?;
    let issuer = IssuerId::credit_bank("cq").map_err(crypto)?;
    let subject = FIXTURES
        .iter()
        .find(|f| f.member == "cq")
        .ok_or_else(|| BenchError::Setup("no cq fixture".into()))?
        .subject()
        .map_err(crypto)?;
    let payload = new_learning_credential(&issuer, subject, now, Some(now + time::Duration::days(365)));
    let mut out = Vec::new();
    for &alg in algs {
        let key = store.generate_issuer(alg, now.unix_timestamp()).map_err(crypto)?;
        let token = issue_credential(&payload, &key).map_err(crypto)?;
        out.push(Signed { alg, key, token });
    }
    let set = store.keyset(now.unix_timestamp(), 3600);
    let cache = TrustCache::preloaded(TrustCacheConfig::default(), vec![set], Arc::new(SystemClock)).await;
    let verifier = Verifier::new(Arc::new(cache), 60);
    for s in &out {
        verifier.verify(&s.token).await.map_err(crypto)?;
    }
    Ok((out, verifier))
}

pub fn crypto(e: impl std::fmt::Display) -> BenchError {
    BenchError::Crypto(e.to_string())
}

/// Aggregate ES256 rates over every core, and the ceiling they imply.
#[derive(Debug, Clone, Serialize)]
pub struct Ceiling {
    pub threads: usize,
    /// `issue_credential` (profile check, serialise, sign): what signing a translation costs.
    pub es256_sign_per_sec: f64,
    /// `Verifier::verify` with a warm cache: strict parse, signature, profile, validity.
    pub es256_verify_per_sec: f64,
    pub verify_per_exchange: u32,
    pub sign_per_exchange: u32,
    /// CPU-seconds of crypto per exchange on one core, in microseconds.
    pub crypto_us_per_exchange: f64,
    /// Exchanges/s if every core did nothing but this crypto.
    pub ceiling_exchanges_per_sec: f64,
}

impl Ceiling {
    /// Share of the ceiling that `exchanges_per_sec` reaches.
    pub fn fraction(&self, exchanges_per_sec: f64) -> f64 {
        if self.ceiling_exchanges_per_sec > 0.0 {
            exchanges_per_sec / self.ceiling_exchanges_per_sec
        } else {
            0.0
        }
    }
}

/// Runs the sign and the verify loop for `duration` each on every core at once.
pub async fn measure(duration: Duration) -> Result<Ceiling, BenchError> {
    let (signed, verifier) = signed_credentials(&[Alg::Es256]).await?;
    let s = signed
        .into_iter()
        .next()
        .ok_or_else(|| BenchError::Crypto("no ES256 key".into()))?;
    let payload = {
        let parsed =
            crate::jose::parse_compact(&s.token, crate::jose::HeaderPolicy::CREDENTIAL).map_err(crypto)?;
        serde_json::from_slice::<serde_json::Value>(parsed.payload()).map_err(crypto)?
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let key = Arc::new(s.key);
    let payload = Arc::new(payload);
    let sign = on_every_core(threads, duration, move || {
        let (key, payload) = (key.clone(), payload.clone());
        move || issue_credential(&payload, &key).map(drop).map_err(crypto)
    })
    .await?;
    let token = Arc::new(s.token);
    let verify = on_every_core(threads, duration, move || {
        let (verifier, token) = (verifier.clone(), token.clone());
        let rt = tokio::runtime::Builder::new_current_thread().build();
        move || {
            let rt = rt.as_ref().map_err(crypto)?;
            rt.block_on(verifier.verify(&token)).map(drop).map_err(crypto)
        }
    })
    .await?;
    let us = 1e6 * (f64::from(VERIFY_PER_EXCHANGE) / verify + f64::from(SIGN_PER_EXCHANGE) / sign);
    Ok(Ceiling {
        threads,
        es256_sign_per_sec: sign * threads as f64,
        es256_verify_per_sec: verify * threads as f64,
        verify_per_exchange: VERIFY_PER_EXCHANGE,
        sign_per_exchange: SIGN_PER_EXCHANGE,
        crypto_us_per_exchange: us,
        ceiling_exchanges_per_sec: threads as f64 * 1e6 / us,
    })
}

/// Runs `make()`'s operation in a loop on `threads` OS threads for
/// `duration`; returns the mean rate of one thread (ops/s).
async fn on_every_core<M, F>(threads: usize, duration: Duration, make: M) -> Result<f64, BenchError>
where
    M: Fn() -> F + Send + 'static,
    F: FnMut() -> Result<(), BenchError> + Send + 'static,
{
    tokio::task::spawn_blocking(move || {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let mut op = make();
                std::thread::spawn(move || timed_loop(duration, &mut op))
            })
            .collect();
        let mut total = 0.0;
        for h in handles {
            total += h
                .join()
                .map_err(|_| BenchError::Crypto("crypto thread panicked".into()))??;
        }
        Ok(total / threads.max(1) as f64)
    })
    .await
    .map_err(crypto)?
}

/// Calls `op` until `duration` passes; returns calls per second.
pub fn timed_loop(
    duration: Duration,
    op: &mut dyn FnMut() -> Result<(), BenchError>,
) -> Result<f64, BenchError> {
    let start = Instant::now();
    let mut n: u64 = 0;
    while start.elapsed() < duration || n == 0 {
        for _ in 0..16 {
            op()?;
        }
        n += 16;
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}
