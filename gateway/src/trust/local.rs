//! What a running gateway holds for its own member: the active gateway
//! signing key and the currently published, signed key set.
//!
//! The operator changes keys with `bashu keys …`, which rewrites the key
//! store file atomically. `LocalKeys` notices (it stats the file at most
//! once a second; every atomic rewrite is a new inode) and re-publishes with
//! a higher `seq`. It also re-publishes when the current set is past half
//! its lifetime, so peers refreshing ahead of `exp` always find a fresh one.
//! `LocalKeys` never writes the key store: the operator's CLI is its only
//! writer, so the two cannot overwrite each other's changes. The `seq` rule
//! ([`super::keystore::next_seq`]) keeps publications monotonic anyway.

use super::clock::{Clock, SystemClock};
use super::fetch::{FetchError, KeySetFetcher};
use super::keyset::KeySet;
use super::keystore::{next_seq, KeyStore, KeyStoreError};
use crate::jose::{SigningKey, VerifyingKey};
use futures::future::BoxFuture;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

/// How often, at most, the key store file is stat'ed.
const CHECK_INTERVAL_MS: i64 = 1000;

/// Identity of one version of the key store file.
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
struct State {
    store: KeyStore,
    stamp: Option<FileStamp>,
    checked_ms: i64,
    set: KeySet,
    jws: String,
}

/// The gateway's own keys (see the module docs).
#[derive(Debug)]
pub struct LocalKeys {
    path: PathBuf,
    fed: SigningKey,
    ttl_secs: i64,
    clock: Arc<dyn Clock>,
    state: Mutex<State>,
}

impl LocalKeys {
    /// Loads the key store and the federation key and publishes a first set.
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
        let fed = SigningKey::load(federation_key)?;
        let file_stamp = stamp(keystore);
        let store = KeyStore::load(keystore)?;
        let ttl_secs = i64::try_from(ttl_secs).unwrap_or(i64::MAX).max(2);
        let now = clock.now_secs();
        let (set, jws) = publish(&store, &fed, store.seq(), now, ttl_secs)?;
        Ok(Self {
            path: keystore.to_owned(),
            fed,
            ttl_secs,
            state: Mutex::new(State {
                store,
                stamp: file_stamp,
                checked_ms: clock.now_ms(),
                set,
                jws,
            }),
            clock,
        })
    }

    pub fn member(&self) -> String {
        self.lock().store.member().to_owned()
    }

    /// The public half of this member's federation key (peers pin it; the
    /// gateway's own trust cache needs it for its own member).
    pub fn federation_public(&self) -> VerifyingKey {
        self.fed.verifying_key().clone()
    }

    /// The active gateway key, to sign translation credentials with.
    pub fn signing_key(&self) -> Result<SigningKey, KeyStoreError> {
        let mut st = self.lock();
        self.refresh(&mut st);
        st.store.active_gateway_key().cloned()
    }

    /// The current signed key set (what `GET /v1/federation/keys` serves).
    pub fn signed_keyset(&self) -> Result<String, KeyStoreError> {
        let mut st = self.lock();
        self.refresh(&mut st);
        Ok(st.jws.clone())
    }

    /// The payload of the current signed key set.
    pub fn keyset(&self) -> KeySet {
        let mut st = self.lock();
        self.refresh(&mut st);
        st.set.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Reloads a changed key store and re-publishes when needed. Failures
    /// keep the previous state (fail safe: the last good keys stay in use)
    /// and are logged; they are retried on the next check.
    fn refresh(&self, st: &mut State) {
        let now_ms = self.clock.now_ms();
        let now = now_ms.div_euclid(1000);
        let mut republish = false;
        if now_ms.saturating_sub(st.checked_ms) >= CHECK_INTERVAL_MS {
            st.checked_ms = now_ms;
            let current = stamp(&self.path);
            if current != st.stamp {
                match KeyStore::load(&self.path) {
                    Ok(store) => {
                        tracing::info!(path = %self.path.display(), "key store changed; re-publishing key set");
                        st.store = store;
                        st.stamp = current;
                        republish = true;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "key store changed but cannot be loaded; keeping previous keys")
                    }
                }
            }
        }
        let half_life = st
            .set
            .iat
            .saturating_add((st.set.exp.saturating_sub(st.set.iat)) / 2);
        if now >= half_life {
            republish = true;
        }
        if republish {
            let prev = st.set.seq.max(st.store.seq());
            match publish(&st.store, &self.fed, prev, now, self.ttl_secs) {
                Ok((set, jws)) => {
                    st.set = set;
                    st.jws = jws;
                }
                Err(e) => tracing::warn!(error = %e, "cannot re-publish key set; serving the previous one"),
            }
        }
    }
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
