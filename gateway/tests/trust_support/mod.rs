//! Shared fixtures for the jose/trust/credential integration tests: a small
//! federation (cq with ES256 keys, sc with EdDSA keys), a fake key-set
//! fetcher that counts calls and can fail or hold fetches, and forging
//! helpers that sign arbitrary header/payload bytes.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use bashu_gateway::credential::{self, IssuerId, Verifier};
use bashu_gateway::jose::{b64, Alg, SigningKey};
use bashu_gateway::trust::{
    Clock, FetchError, KeyRole, KeySetFetcher, KeyStore, ManualClock, TrustCache, TrustCacheConfig,
};
use futures::future::BoxFuture;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use time::OffsetDateTime;

/// 2026-01-01T00:00:00Z: the tests' "now".
pub const T0: i64 = 1_767_225_600;
pub const DAY: i64 = 86_400;
pub const KEYSET_TTL: i64 = 600;

/// A key-set source that counts fetches, can fail, and can hold every
/// fetch until released (to pile up concurrent callers).
pub struct FakeFetcher {
    sets: Mutex<HashMap<String, String>>,
    pub calls: AtomicUsize,
    pub fail: AtomicBool,
    gate: tokio::sync::watch::Sender<bool>,
    pub started: tokio::sync::Notify,
}

impl FakeFetcher {
    pub fn new() -> Self {
        Self {
            sets: Mutex::new(HashMap::new()),
            calls: AtomicUsize::new(0),
            fail: AtomicBool::new(false),
            gate: tokio::sync::watch::channel(true).0,
            started: tokio::sync::Notify::new(),
        }
    }

    pub fn put(&self, member: &str, jws: String) {
        self.sets.lock().unwrap().insert(member.to_owned(), jws);
    }

    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    /// Subsequent fetches wait until [`FakeFetcher::open`].
    pub fn hold(&self) {
        self.gate.send_replace(false);
    }

    pub fn open(&self) {
        self.gate.send_replace(true);
    }
}

impl KeySetFetcher for FakeFetcher {
    fn fetch<'a>(&'a self, member: &'a str) -> BoxFuture<'a, Result<String, FetchError>> {
        Box::pin(async move {
            self.calls.fetch_add(1, Ordering::SeqCst);
            self.started.notify_one();
            let mut rx = self.gate.subscribe();
            let _ = rx.wait_for(|open| *open).await;
            if self.fail.load(Ordering::SeqCst) {
                return Err(FetchError::unreachable(member, "injected failure"));
            }
            self.sets
                .lock()
                .unwrap()
                .get(member)
                .cloned()
                .ok_or_else(|| FetchError::UnknownMember(member.to_owned()))
        })
    }
}

/// One member: federation key, key store (one issuer key, one gateway key).
pub struct Member {
    pub id: String,
    pub fed: SigningKey,
    pub store: KeyStore,
    pub issuer: SigningKey,
}

impl Member {
    pub fn new(id: &str, alg: Alg) -> Self {
        let fed = SigningKey::generate(alg, &format!("{id}-fed")).unwrap();
        let mut store = KeyStore::create(id).unwrap();
        let issuer = store.generate_issuer(alg, T0 - DAY).unwrap();
        store.generate(KeyRole::Gateway, alg, T0 - DAY).unwrap();
        Self {
            id: id.to_owned(),
            fed,
            store,
            issuer,
        }
    }

    pub fn gateway_key(&self) -> SigningKey {
        self.store.active_gateway_key().unwrap().clone()
    }

    pub fn publish(&mut self, now: i64) -> String {
        self.store.publish(&self.fed, now, KEYSET_TTL).unwrap()
    }
}

/// Two members, a fake fetcher serving their sets, a cache and a verifier
/// on a manual clock at [`T0`].
pub struct Fed {
    pub clock: Arc<ManualClock>,
    pub fetcher: Arc<FakeFetcher>,
    pub cache: Arc<TrustCache>,
    pub verifier: Verifier,
    pub members: HashMap<String, Member>,
}

impl Fed {
    pub fn new() -> Self {
        Self::with_config(TrustCacheConfig::default())
    }

    pub fn with_config(cfg: TrustCacheConfig) -> Self {
        let clock = Arc::new(ManualClock::at_secs(T0));
        let fetcher = Arc::new(FakeFetcher::new());
        let mut members = HashMap::new();
        let mut pinned = HashMap::new();
        for (id, alg) in [("cq", Alg::Es256), ("sc", Alg::EdDsa)] {
            let mut m = Member::new(id, alg);
            fetcher.put(id, m.publish(T0));
            pinned.insert(id.to_owned(), m.fed.verifying_key().clone());
            members.insert(id.to_owned(), m);
        }
        let cache = Arc::new(TrustCache::with_clock(
            cfg,
            pinned,
            fetcher.clone(),
            clock.clone(),
        ));
        let verifier = Verifier::new(cache.clone(), 60);
        Self {
            clock,
            fetcher,
            cache,
            verifier,
            members,
        }
    }

    pub fn member(&mut self, id: &str) -> &mut Member {
        self.members.get_mut(id).unwrap()
    }

    /// Re-publishes `id`'s key store and serves the new set.
    pub fn republish(&mut self, id: &str) {
        let now = self.clock.now_secs();
        let jws = self.member(id).publish(now);
        self.fetcher.put(id, jws);
    }

    /// A well-formed credit-bank credential payload of `member`.
    pub fn payload(&self, member: &str) -> Value {
        credential::new_learning_credential(
            &IssuerId::credit_bank(member).unwrap(),
            subject(member),
            at(T0 - DAY),
            Some(at(T0 + 365 * DAY)),
        )
    }

    /// `payload` signed with `member`'s issuer key.
    pub fn sign(&self, member: &str, payload: &Value) -> String {
        credential::issue_credential(payload, &self.members[member].issuer).unwrap()
    }

    /// A valid credential of `member`'s credit bank.
    pub fn credential(&self, member: &str) -> String {
        self.sign(member, &self.payload(member))
    }
}

pub fn at(secs: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(secs).unwrap()
}

/// A CQF learning record with an extension.
pub fn subject(member: &str) -> Value {
    json!({
        "id": format!("urn:bashu:learner:{member}:8f3a2c"),
        "framework": "cqf",
        "frameworkVersion": "1.0.0",
        "level": 5,
        "credits": 12,
        "learningHours": 360,
        "outcomeType": "vocational-skill-level",
        "title": {"zh": "数控加工", "en": "CNC machining"},
        "awardedOn": "2025-07-01",
        "awardingBody": "重庆市终身学习学分银行",
        "extensions": {"x-local": [1, 2, 3]}
    })
}

/// Signs arbitrary header and payload bytes with `key` (no checks at all).
pub fn forge_raw(header: &[u8], payload: &[u8], key: &SigningKey) -> String {
    let input = format!("{}.{}", b64::encode(header), b64::encode(payload));
    let sig = key.sign_raw(input.as_bytes()).unwrap();
    format!("{input}.{}", b64::encode(&sig))
}

/// Signs arbitrary header and payload JSON with `key`.
pub fn forge(header: &Value, payload: &Value, key: &SigningKey) -> String {
    forge_raw(header.to_string().as_bytes(), payload.to_string().as_bytes(), key)
}

/// The profile header for `key`.
pub fn header_for(key: &SigningKey) -> Value {
    json!({"alg": key.alg().as_str(), "typ": "vc+jwt", "cty": "vc", "kid": key.kid()})
}
