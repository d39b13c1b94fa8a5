//! The two background duties: signing own checkpoints, witnessing peers'.

use super::{metrics, peek, verify, Checkpoint, CheckpointError, Inconsistency};
use crate::store::{CheckpointStore, StoredCheckpoint, WitnessedCheckpoint};
use crate::trust::{Clock, KeyRole, LocalKeys, TrustCache};
use futures::future::BoxFuture;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Signs checkpoints of this gateway's audit head.
pub struct Checkpointer {
    member: String,
    store: Arc<dyn CheckpointStore>,
    keys: Arc<LocalKeys>,
    clock: Arc<dyn Clock>,
}

impl Checkpointer {
    pub fn new(
        member: String,
        store: Arc<dyn CheckpointStore>,
        keys: Arc<LocalKeys>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            member,
            store,
            keys,
            clock,
        }
    }

    /// Signs and keeps a checkpoint of the current head if the head moved
    /// since the last one; `None` if it did not (or the log is empty and
    /// nothing was ever signed). Blocking: store I/O and an fsync.
    ///
    /// Before signing, the last checkpoint must still hold: a chain that no
    /// longer contains the signed entry was truncated or rewritten, and
    /// signing its new head would launder the rewrite. The gateway then
    /// refuses (the error says why) and keeps serving the old checkpoint.
    pub fn sign_if_moved(&self) -> Result<Option<StoredCheckpoint>, CheckpointError> {
        let head = self.store.audit_head()?;
        if let Some(latest) = self.store.latest_checkpoint()? {
            let signed = peek(&latest.jws)?;
            if signed.seq == head.seq && signed.head == head.hash {
                return Ok(None);
            }
            let kid = super::kid_of(&latest.jws)?;
            if signed.seq > head.seq {
                return Err(CheckpointError::Inconsistent(Inconsistency::BeyondEnd {
                    seq: signed.seq,
                    at: signed.at,
                    kid,
                    entries: head.seq,
                }));
            }
            let found = self.store.audit_entry_hash(signed.seq)?;
            if found.as_deref() != Some(signed.head.as_str()) {
                return Err(CheckpointError::Inconsistent(Inconsistency::HeadMismatch {
                    seq: signed.seq,
                    at: signed.at,
                    kid,
                    signed: signed.head,
                    found: found.unwrap_or_else(|| "<missing>".into()),
                }));
            }
        } else if head.seq == 0 {
            return Ok(None);
        }
        let key = self.keys.signing_key()?;
        let checkpoint = Checkpoint {
            iss: self.member.clone(),
            seq: head.seq,
            head: head.hash,
            at: self.clock.now_secs(),
        };
        let stored = StoredCheckpoint {
            jws: checkpoint.sign(&key)?,
            seq: checkpoint.seq,
            head: checkpoint.head,
            at: checkpoint.at,
        };
        self.store.save_checkpoint(&stored)?;
        Ok(Some(stored))
    }

    /// [`Checkpointer::sign_if_moved`] on the blocking pool, with the
    /// outcome logged.
    pub async fn sign_now(self: &Arc<Self>) -> Result<Option<StoredCheckpoint>, CheckpointError> {
        let me = Arc::clone(self);
        let out = tokio::task::spawn_blocking(move || me.sign_if_moved())
            .await
            .map_err(|e| CheckpointError::Task(e.to_string()))?;
        match &out {
            Ok(Some(cp)) => {
                tracing::debug!(seq = cp.seq, "signed audit checkpoint");
                metrics::CHECKPOINTS.with_label_values(&["signed"]).inc();
                metrics::CHECKPOINT_SEQ.set(metrics::seq_value(cp.seq));
            }
            Ok(None) => {}
            Err(CheckpointError::Inconsistent(i)) => {
                tracing::error!(problem = %i, "audit chain contradicts its last signed checkpoint; not signing");
                metrics::CHECKPOINTS.with_label_values(&["refused"]).inc();
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot sign audit checkpoint");
                metrics::CHECKPOINTS.with_label_values(&["failed"]).inc();
            }
        }
        out
    }

    /// Signs every `interval` while the head moves, until shutdown. The
    /// first tick is immediate, so a head left unsigned by a crash is
    /// signed at start. The final checkpoint at shutdown is signed by the
    /// caller once every writer has stopped.
    pub async fn run(self: Arc<Self>, interval: Duration, mut shutdown: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    let _ = self.sign_now().await;
                }
                changed = shutdown.changed() => {
                    if changed.is_err() || stopping(&shutdown) {
                        return;
                    }
                }
            }
        }
    }
}

/// Whether shutdown was asked (the value is copied out: a held borrow
/// would make the task's future non-`Send`).
fn stopping(shutdown: &watch::Receiver<bool>) -> bool {
    *shutdown.borrow()
}

/// Fetches a peer's latest checkpoint JWS (`None`: it has none yet).
pub trait CheckpointFetcher: Send + Sync {
    fn fetch_checkpoint<'a>(&'a self, member: &'a str) -> BoxFuture<'a, Result<Option<String>, String>>;
}

/// Fetches, verifies and keeps peers' checkpoints.
pub struct Witness {
    members: Vec<String>,
    fetcher: Arc<dyn CheckpointFetcher>,
    cache: Arc<TrustCache>,
    store: Arc<dyn CheckpointStore>,
    clock: Arc<dyn Clock>,
}

impl Witness {
    pub fn new(
        members: Vec<String>,
        fetcher: Arc<dyn CheckpointFetcher>,
        cache: Arc<TrustCache>,
        store: Arc<dyn CheckpointStore>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            members,
            fetcher,
            cache,
            store,
            clock,
        }
    }

    /// Fetches `member`'s latest checkpoint, verifies it with that member's
    /// gateway key from the trust cache and keeps it; `Ok(true)` if it was
    /// new. A checkpoint older than the last one kept is kept too (it is
    /// evidence of a rollback) and logged.
    pub async fn witness(&self, member: &str) -> Result<bool, WitnessError> {
        let Some(jws) = self
            .fetcher
            .fetch_checkpoint(member)
            .await
            .map_err(WitnessError::Fetch)?
        else {
            return Ok(false);
        };
        let kid = super::kid_of(&jws)?;
        let key = self
            .cache
            .key(member, &kid)
            .await
            .map_err(|e| WitnessError::Key(e.to_string()))?;
        if key.role != KeyRole::Gateway {
            return Err(WitnessError::Key(format!(
                "kid {kid} is not a gateway key of {member}"
            )));
        }
        let signed = verify(&jws, member, &key.key)?;
        let store = Arc::clone(&self.store);
        let cp = WitnessedCheckpoint {
            member: member.to_owned(),
            seq: signed.checkpoint.seq,
            head: signed.checkpoint.head,
            at: signed.checkpoint.at,
            fetched_at: self.clock.now_secs(),
            jws,
        };
        tokio::task::spawn_blocking(move || {
            let previous = store.latest_witnessed(&cp.member)?;
            if let Some(p) = &previous {
                // The same head again (a peer re-signs only when it moved,
                // but a restart may re-sign it): nothing new to keep.
                if p.jws == cp.jws || (p.seq == cp.seq && p.head == cp.head) {
                    metrics::WITNESS
                        .with_label_values(&[cp.member.as_str(), "unchanged"])
                        .inc();
                    return Ok(false);
                }
                if cp.seq < p.seq || (cp.seq == p.seq && cp.head != p.head) {
                    tracing::error!(
                        member = %cp.member,
                        seq = cp.seq,
                        previous_seq = p.seq,
                        "peer's audit checkpoint contradicts one witnessed earlier; keeping both as evidence"
                    );
                    metrics::WITNESS
                        .with_label_values(&[cp.member.as_str(), "contradiction"])
                        .inc();
                }
            }
            let new = store.save_witnessed(&cp)?;
            if new {
                metrics::WITNESS
                    .with_label_values(&[cp.member.as_str(), "new"])
                    .inc();
                metrics::WITNESSED_SEQ
                    .with_label_values(&[cp.member.as_str()])
                    .set(metrics::seq_value(cp.seq));
            }
            Ok(new)
        })
        .await
        .map_err(|e| WitnessError::Task(e.to_string()))?
        .map_err(WitnessError::Store)
    }

    /// Witnesses every peer every `interval`, until shutdown.
    pub async fn run(self: Arc<Self>, interval: Duration, mut shutdown: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Members start independently, so a peer that is not listening yet
        // in the round at start is expected (the quickstart's second
        // gateway, every federation restart): INFO then, WARN afterwards.
        let mut first_round = true;
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    for member in &self.members {
                        match self.witness(member).await {
                            Ok(true) => tracing::debug!(%member, "witnessed audit checkpoint"),
                            Ok(false) => {}
                            Err(WitnessError::Fetch(e)) if first_round => {
                                tracing::info!(%member, error = %e, ?interval, "peer not reachable yet to witness its audit checkpoint; trying again each interval");
                                metrics::WITNESS.with_label_values(&[member.as_str(), "failed"]).inc();
                            }
                            Err(e) => {
                                tracing::warn!(%member, error = %e, "cannot witness audit checkpoint");
                                metrics::WITNESS.with_label_values(&[member.as_str(), "failed"]).inc();
                            }
                        }
                    }
                    first_round = false;
                }
                changed = shutdown.changed() => {
                    if changed.is_err() || stopping(&shutdown) {
                        return;
                    }
                }
            }
        }
    }
}

/// Why a peer's checkpoint was not kept.
#[derive(Debug, thiserror::Error)]
pub enum WitnessError {
    #[error("fetching: {0}")]
    Fetch(String),
    #[error("peer key: {0}")]
    Key(String),
    #[error("{0}")]
    Checkpoint(#[from] CheckpointError),
    #[error("store: {0}")]
    Store(crate::store::StoreError),
    #[error("the task storing the checkpoint failed: {0}")]
    Task(String),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jose::{Alg, SigningKey};
    use crate::store::SqliteStore;
    use crate::trust::{KeyStore, ManualClock, TrustCacheConfig};
    use std::sync::Mutex;

    /// Answers with the queued JWS texts, one per fetch.
    struct Queue(Mutex<Vec<String>>);

    impl CheckpointFetcher for Queue {
        fn fetch_checkpoint<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<Option<String>, String>> {
            let next = self.0.lock().unwrap().pop();
            Box::pin(async move { Ok(next) })
        }
    }

    fn signed(key: &SigningKey, seq: u64, head: char) -> String {
        Checkpoint {
            iss: "cq".into(),
            seq,
            head: head.to_string().repeat(64),
            at: 1_800_000_000,
        }
        .sign(key)
        .unwrap()
    }

    #[tokio::test]
    async fn witness_keeps_new_and_contradicting_checkpoints_and_refuses_forgeries() {
        let now = 1_800_000_000;
        let mut keys = KeyStore::create("cq").unwrap();
        let kid = keys.generate(KeyRole::Gateway, Alg::Es256, now - 10).unwrap();
        let key = keys.get(&kid).map(|k| match k.material() {
            crate::trust::keystore::KeyMaterial::Gateway(s) => s.clone(),
            _ => unreachable!(),
        });
        let key = key.unwrap();
        let clock = Arc::new(ManualClock::at_secs(now));
        let cache = TrustCache::preloaded(
            TrustCacheConfig::default(),
            vec![keys.keyset(now - 10, 3600)],
            clock.clone(),
        )
        .await;
        let forger = SigningKey::generate(Alg::Es256, &kid).unwrap();
        // Popped from the end: 5, 5 again, 3 (rollback), a forgery, 6 signed
        // by a kid the member never published.
        let queue = vec![
            signed(&SigningKey::generate(Alg::Es256, "nobody").unwrap(), 6, 'd'),
            signed(&forger, 7, 'c'),
            signed(&key, 3, 'b'),
            signed(&key, 5, 'a'),
            signed(&key, 5, 'a'),
        ];
        // The two signatures over seq 5 differ (ECDSA is randomised); the
        // witness still keeps seq 5 once.
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SqliteStore::open(&dir.path().join("w.db")).unwrap());
        let witness = Witness::new(
            vec!["cq".into()],
            Arc::new(Queue(Mutex::new(queue))),
            Arc::new(cache),
            store.clone(),
            clock,
        );
        assert!(witness.witness("cq").await.unwrap(), "new");
        assert!(!witness.witness("cq").await.unwrap(), "unchanged");
        assert!(
            witness.witness("cq").await.unwrap(),
            "a rollback is kept as evidence"
        );
        assert!(matches!(
            witness.witness("cq").await,
            Err(WitnessError::Checkpoint(CheckpointError::Jose(
                crate::jose::JoseError::BadSignature
            )))
        ));
        assert!(matches!(witness.witness("cq").await, Err(WitnessError::Key(_))));
        assert!(!witness.witness("cq").await.unwrap(), "nothing served");
        let kept: Vec<u64> = store.witnessed("cq").unwrap().iter().map(|c| c.seq).collect();
        assert_eq!(kept, vec![5, 3]);
        assert_eq!(store.latest_witnessed("cq").unwrap().unwrap().seq, 3);
    }
}
