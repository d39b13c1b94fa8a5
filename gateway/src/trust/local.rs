//! What a running gateway holds for its own member: the active gateway
//! signing key and the currently published, signed key set.
//!
//! The operator changes keys with `bashu keys …`, which rewrites the key
//! store file atomically. `LocalKeys` notices (it stats its files at most
//! once a second; every atomic rewrite is a new inode) and serves the new
//! state. `LocalKeys` never writes the key store: the operator's CLI is its
//! only writer, so the two cannot overwrite each other's changes.
//!
//! Two ways to publish, chosen by what `trust.federation_key` holds:
//! - **online** (a private JWK): the gateway signs its key set itself,
//!   again whenever the key store changed or the current set is past half
//!   its lifetime, with a `seq` that only grows
//!   ([`super::keystore::next_seq`]);
//! - **offline** (a public JWK): the federation key stays off the host; the
//!   operator runs `bashu keys publish` elsewhere and installs the result as
//!   [`published_keyset_path`]. The gateway serves that file after checking
//!   it against the public key, and never re-signs (so the operator must
//!   publish again before `exp`).

use super::fetch::{FetchError, KeySetFetcher};
use super::keyset::KeySet;
use super::keystore::{next_seq, KeyStore, KeyStoreError};
use crate::clock::{Clock, SystemClock};
use crate::jose::{self, json_strict, SigningKey, VerifyingKey};
use futures::future::BoxFuture;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock, TryLockError};
use std::time::SystemTime;

/// How often, at most, the files are stat'ed. Together with
/// [`OWN_KEYS_POLL`] this bounds how long a revocation takes to bite at
/// this gateway (SPEC §2: within 1 s).
const CHECK_INTERVAL_MS: i64 = 200;

/// A snapshot older than this is refreshed by the reader itself (a
/// gateway's [`watch_own_keys`] refreshes it every [`OWN_KEYS_POLL`], so on
/// the request path this only happens if that task is not running).
const SNAPSHOT_STALE_MS: i64 = 1000;

/// How often [`watch_own_keys`] looks at the key store.
pub const OWN_KEYS_POLL: std::time::Duration = std::time::Duration::from_millis(200);

/// Where `bashu keys publish` puts the signed key set next to a key store
/// (`keystore.json` → `keystore.keyset.jws`), and where an offline-mode
/// gateway reads it.
pub fn published_keyset_path(keystore: &Path) -> PathBuf {
    keystore.with_extension("keyset.jws")
}

/// Identity of one version of a file.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileStamp {
    modified: Option<SystemTime>,
    len: u64,
    #[cfg(unix)]
    ino: u64,
}

fn stamp(path: &Path) -> Option<FileStamp> {
    let meta = std::fs::metadata(path).ok()?;
    Some(FileStamp {
        modified: meta.modified().ok(),
        len: meta.len(),
        #[cfg(unix)]
        ino: std::os::unix::fs::MetadataExt::ino(&meta),
    })
}

#[derive(Debug)]
enum Publisher {
    Online(SigningKey),
    Offline { public: VerifyingKey, path: PathBuf },
}

impl Publisher {
    fn public(&self) -> &VerifyingKey {
        match self {
            Publisher::Online(k) => k.verifying_key(),
            Publisher::Offline { public, .. } => public,
        }
    }
}

#[derive(Debug)]
struct State {
    store: KeyStore,
    store_stamp: Option<FileStamp>,
    published_stamp: Option<FileStamp>,
    checked_ms: i64,
    set: KeySet,
    jws: String,
}

/// What the request path reads: the signing key and the published set as
/// of the last refresh, swapped as a whole.
#[derive(Debug)]
struct Snapshot {
    signing: Option<SigningKey>,
    jws: String,
}

impl Snapshot {
    fn of(st: &State) -> Arc<Self> {
        Arc::new(Self {
            signing: st.store.active_gateway_key().ok().cloned(),
            jws: st.jws.clone(),
        })
    }
}

/// The gateway's own keys (see the module docs).
#[derive(Debug)]
pub struct LocalKeys {
    path: PathBuf,
    publisher: Publisher,
    ttl_secs: i64,
    clock: Arc<dyn Clock>,
    state: Mutex<State>,
    /// Read on every signature and key-set request: no mutex and no file
    /// check there, only this read lock and an `Arc` clone.
    snapshot: RwLock<Arc<Snapshot>>,
    /// When `snapshot` was last brought up to date (clock ms).
    snapshot_ms: AtomicI64,
}

impl LocalKeys {
    /// Loads the key store and the federation key and publishes (online) or
    /// loads (offline) a first key set.
    pub fn open(keystore: &Path, federation_key: &Path, ttl_secs: u64) -> Result<Self, KeyStoreError> {
        Self::open_with_clock(keystore, federation_key, ttl_secs, Arc::new(SystemClock))
    }

    /// Like [`LocalKeys::open`] with an explicit clock.
    pub fn open_with_clock(
        keystore: &Path,
        federation_key: &Path,
        ttl_secs: u64,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, KeyStoreError> {
        let publisher = load_publisher(keystore, federation_key)?;
        let store_stamp = stamp(keystore);
        let store = KeyStore::load(keystore)?;
        let ttl_secs = i64::try_from(ttl_secs).unwrap_or(i64::MAX).max(2);
        let now = clock.now_secs();
        let (set, jws, published_stamp) = match &publisher {
            Publisher::Online(fed) => {
                let (set, jws) = publish(&store, fed, store.seq(), now, ttl_secs)?;
                (set, jws, None)
            }
            Publisher::Offline { public, path } => {
                let file_stamp = stamp(path);
                let (set, jws) = read_published(path, public, store.member(), now)?;
                (set, jws, file_stamp)
            }
        };
        let state = State {
            store,
            store_stamp,
            published_stamp,
            checked_ms: clock.now_ms(),
            set,
            jws,
        };
        Ok(Self {
            path: keystore.to_owned(),
            publisher,
            ttl_secs,
            snapshot: RwLock::new(Snapshot::of(&state)),
            snapshot_ms: AtomicI64::new(clock.now_ms()),
            state: Mutex::new(state),
            clock,
        })
    }

    pub fn member(&self) -> String {
        self.lock().store.member().to_owned()
    }

    /// The public half of this member's federation key (peers pin it; the
    /// gateway's own trust cache needs it for its own member).
    pub fn federation_public(&self) -> VerifyingKey {
        self.publisher.public().clone()
    }

    /// Whether this gateway signs its own key sets (online mode).
    pub fn signs_own_keyset(&self) -> bool {
        matches!(self.publisher, Publisher::Online(_))
    }

    /// The active gateway key, to sign translation credentials with.
    pub fn signing_key(&self) -> Result<SigningKey, KeyStoreError> {
        self.current()
            .signing
            .clone()
            .ok_or(KeyStoreError::NoActiveGatewayKey)
    }

    /// The current signed key set (what `GET /v1/federation/keys` serves).
    pub fn signed_keyset(&self) -> Result<String, KeyStoreError> {
        Ok(self.current().jws.clone())
    }

    /// Brings the snapshot up to date now (stat the files, reload and
    /// re-publish if needed). [`watch_own_keys`] calls it periodically.
    pub fn refresh_now(&self) {
        let mut st = self.lock();
        self.refresh(&mut st);
    }

    /// The snapshot; refreshed here only if nobody refreshed it for
    /// [`SNAPSHOT_STALE_MS`] and no refresh is running right now.
    fn current(&self) -> Arc<Snapshot> {
        let age = self
            .clock
            .now_ms()
            .saturating_sub(self.snapshot_ms.load(Ordering::Relaxed));
        if age >= SNAPSHOT_STALE_MS {
            let guard = match self.state.try_lock() {
                Ok(g) => Some(g),
                Err(TryLockError::Poisoned(p)) => Some(p.into_inner()),
                Err(TryLockError::WouldBlock) => None,
            };
            if let Some(mut st) = guard {
                self.refresh(&mut st);
            }
        }
        self.snapshot
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Revoked kids of the key store (kid → `revoked_at`), reloading the
    /// store first if it changed.
    pub fn revocations(&self) -> std::collections::HashMap<String, i64> {
        let mut st = self.lock();
        self.refresh(&mut st);
        st.store.revocations()
    }

    /// The payload of the current signed key set.
    pub fn keyset(&self) -> KeySet {
        let mut st = self.lock();
        self.refresh(&mut st);
        st.set.clone()
    }

    /// `seq` of the current signed key set, reloading the store first if it
    /// changed: what [`sync_own_keys`] polls every [`OWN_KEYS_POLL`], without
    /// copying the whole set as [`LocalKeys::keyset`] does.
    pub fn published_seq(&self) -> u64 {
        let mut st = self.lock();
        self.refresh(&mut st);
        st.set.seq
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Reloads changed files and re-publishes when needed. Failures keep the
    /// previous state (the last good keys stay in use), are logged, and are
    /// retried on the next check.
    fn refresh(&self, st: &mut State) {
        self.refresh_state(st);
        *self.snapshot.write().unwrap_or_else(PoisonError::into_inner) = Snapshot::of(st);
        self.snapshot_ms.store(self.clock.now_ms(), Ordering::Relaxed);
    }

    fn refresh_state(&self, st: &mut State) {
        let now_ms = self.clock.now_ms();
        let now = now_ms.div_euclid(1000);
        let mut store_changed = false;
        let due = now_ms.saturating_sub(st.checked_ms) >= CHECK_INTERVAL_MS;
        if due {
            st.checked_ms = now_ms;
            let current = stamp(&self.path);
            if current != st.store_stamp {
                match KeyStore::load(&self.path) {
                    Ok(store) => {
                        tracing::info!(path = %self.path.display(), "key store changed; reloading keys");
                        st.store = store;
                        st.store_stamp = current;
                        store_changed = true;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "key store changed but cannot be loaded; keeping previous keys")
                    }
                }
            }
        }
        match &self.publisher {
            Publisher::Online(fed) => {
                let half_life = st
                    .set
                    .iat
                    .saturating_add(st.set.exp.saturating_sub(st.set.iat) / 2);
                if store_changed || now >= half_life {
                    let prev = st.set.seq.max(st.store.seq());
                    match publish(&st.store, fed, prev, now, self.ttl_secs) {
                        Ok((set, jws)) => {
                            st.set = set;
                            st.jws = jws;
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot re-publish key set; serving the previous one")
                        }
                    }
                }
            }
            Publisher::Offline { public, path } => {
                let current = stamp(path);
                if due && current != st.published_stamp {
                    match read_published(path, public, st.store.member(), now) {
                        Ok((set, jws)) if set.seq >= st.set.seq => {
                            st.set = set;
                            st.jws = jws;
                            st.published_stamp = current;
                        }
                        Ok((set, _)) => tracing::warn!(
                            seq = set.seq,
                            serving = st.set.seq,
                            "published key set has a lower seq; keeping the current one"
                        ),
                        Err(e) => {
                            tracing::warn!(error = %e, "published key set refused; keeping the current one")
                        }
                    }
                }
                if now >= st.set.exp {
                    tracing::warn!(
                        exp = st.set.exp,
                        "published key set has expired; run `bashu keys publish`"
                    );
                }
            }
        }
    }
}

/// A private JWK means online publishing; a public JWK offline publishing.
fn load_publisher(keystore: &Path, federation_key: &Path) -> Result<Publisher, KeyStoreError> {
    let text = std::fs::read_to_string(federation_key).map_err(|source| KeyStoreError::Io {
        path: federation_key.to_owned(),
        source,
    })?;
    let map = json_strict::parse_object(text.as_bytes()).map_err(|e| KeyStoreError::Parse {
        path: federation_key.to_owned(),
        message: e.to_string(),
    })?;
    if map.contains_key("d") {
        Ok(Publisher::Online(SigningKey::from_jwk_map(&map)?))
    } else {
        Ok(Publisher::Offline {
            public: VerifyingKey::from_jwk(&map)?,
            path: published_keyset_path(keystore),
        })
    }
}

fn read_published(
    path: &Path,
    public: &VerifyingKey,
    member: &str,
    now: i64,
) -> Result<(KeySet, String), KeyStoreError> {
    let jws = std::fs::read_to_string(path)
        .map_err(|source| KeyStoreError::Io {
            path: path.to_owned(),
            source,
        })?
        .trim()
        .to_owned();
    // Checked like a peer would, except that an expired set is still loaded
    // (and logged): serving it lets peers fall back on their own grace rules.
    let parsed = jose::parse_compact(&jws, jose::HeaderPolicy::KEYSET).map_err(super::TrustError::from)?;
    parsed.verify_signature(public).map_err(super::TrustError::from)?;
    let set = KeySet::from_json(&json_strict::parse(parsed.payload()).map_err(super::TrustError::from)?)?;
    if set.iss != member {
        return Err(super::TrustError::WrongIssuer {
            expected: member.to_owned(),
            found: set.iss,
        }
        .into());
    }
    if set.exp <= now {
        tracing::warn!(exp = set.exp, "published key set has expired");
    }
    Ok((set, jws))
}

fn publish(
    store: &KeyStore,
    fed: &SigningKey,
    prev_seq: u64,
    now: i64,
    ttl: i64,
) -> Result<(KeySet, String), KeyStoreError> {
    let mut set = store.keyset(now, ttl);
    set.seq = next_seq(prev_seq, now);
    let jws = set.sign(fed)?;
    Ok((set, jws))
}

impl KeySetFetcher for LocalKeys {
    fn fetch<'a>(&'a self, member: &'a str) -> BoxFuture<'a, Result<String, FetchError>> {
        let r = if self.lock().store.member() == member {
            self.signed_keyset()
                .map_err(|e| FetchError::unreachable(member, e.to_string()))
        } else {
            Err(FetchError::UnknownMember(member.to_owned()))
        };
        Box::pin(async move { r })
    }
}

/// Keeps the trust cache's view of this gateway's own member in step with
/// the key store: local revocations are applied at once (whatever the
/// published set says), and a newly published set replaces the cached one
/// without waiting for its refresh time. Runs until `shutdown` turns true.
pub async fn watch_own_keys(
    local: Arc<LocalKeys>,
    cache: Arc<super::TrustCache>,
    poll: std::time::Duration,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let member = local.member();
    loop {
        sync_own_keys(&member, &local, &cache).await;
        tokio::select! {
            _ = tokio::time::sleep(poll) => {}
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    return;
                }
            }
        }
    }
}

/// One step of [`watch_own_keys`]; also called once at start-up so the
/// gateway never serves a request before its own revocations apply.
pub async fn sync_own_keys(member: &str, local: &LocalKeys, cache: &super::TrustCache) {
    cache.set_local_revocations(member, local.revocations());
    let published = local.published_seq();
    if cache
        .cached_seq(member)
        .await
        .is_some_and(|cached| cached < published)
    {
        if let Err(e) = cache.refresh(member).await {
            tracing::warn!(member, error = %e, "own key set changed but could not be installed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jose::Alg;
    use crate::trust::{KeyRole, ManualClock};

    /// The request path reads the snapshot: it neither waits for the state
    /// mutex (held here, as a slow refresh would) nor looks at the files
    /// (deleted here) while the snapshot is fresh.
    #[test]
    fn signing_key_and_keyset_come_from_the_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let store_path = dir.path().join("keystore.json");
        let fed = dir.path().join("federation.jwk");
        let mut s = KeyStore::create("cq").unwrap();
        s.generate(KeyRole::Gateway, Alg::Es256, 1_767_225_600).unwrap();
        s.save(&store_path).unwrap();
        SigningKey::generate(Alg::EdDsa, "cq-fed")
            .unwrap()
            .save_private(&fed)
            .unwrap();
        let clock = Arc::new(ManualClock::at_secs(1_767_225_600));
        let local = Arc::new(LocalKeys::open_with_clock(&store_path, &fed, 600, clock.clone()).unwrap());
        let kid = local.signing_key().unwrap().kid().to_owned();
        let jws = local.signed_keyset().unwrap();
        std::fs::remove_file(&store_path).unwrap();

        let held = local.lock();
        let reader = Arc::clone(&local);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let got = (
                reader.signing_key().map(|k| k.kid().to_owned()),
                reader.signed_keyset(),
            );
            tx.send(got).unwrap();
        });
        let (key, set) = rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("the reader must not wait for the state mutex");
        drop(held);
        assert_eq!(key.unwrap(), kid);
        assert_eq!(set.unwrap(), jws);
        // A refresh that finds the file gone keeps the last good keys.
        clock.advance_ms(1000);
        local.refresh_now();
        assert_eq!(local.signing_key().unwrap().kid(), kid);
    }

    const T0: i64 = 1_700_000_000;

    #[test]
    fn published_seq_follows_the_published_set() {
        let dir = tempfile::tempdir().unwrap();
        let store_path = dir.path().join("keystore.json");
        let fed_path = dir.path().join("federation.jwk");
        let mut store = KeyStore::create("cq").unwrap();
        store.generate(KeyRole::Gateway, Alg::Es256, T0).unwrap();
        store.save(&store_path).unwrap();
        SigningKey::generate(Alg::EdDsa, "cq-fed")
            .unwrap()
            .save_private(&fed_path)
            .unwrap();
        let clock = Arc::new(ManualClock::at_secs(T0));
        let local = LocalKeys::open_with_clock(&store_path, &fed_path, 600, clock.clone()).unwrap();
        let first = local.published_seq();
        assert!(first > 0);
        assert_eq!(first, local.keyset().seq);

        // A key store change is re-published with a higher seq, and the
        // accessor reloads first, like `keyset()`.
        store.generate(KeyRole::Gateway, Alg::Es256, T0).unwrap();
        store.save(&store_path).unwrap();
        clock.advance_ms(1000);
        let second = local.published_seq();
        assert!(second > first, "{second} > {first}");
        assert_eq!(second, local.keyset().seq);
    }
}
