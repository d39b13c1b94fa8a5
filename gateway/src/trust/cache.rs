//! The trust cache: verified key sets of every federation member, keyed by
//! member (moka), with the behaviour SPEC §2 asks for:
//!
//! - **refresh ahead**: a lookup within `refresh_ahead_secs` of a set's
//!   `exp` starts one background refresh and is served from the current set;
//! - **single flight**: concurrent misses for one member share one fetch
//!   (a per-member async mutex plus an attempt counter: whoever waited on
//!   the mutex while someone else fetched uses that result);
//! - **rate limit**: at most one unknown-kid refetch per member per
//!   `refetch_min_interval_ms`, then fail closed;
//! - **negative cache**: an unknown `(member, kid)` is remembered for
//!   `negative_ttl_secs`, until the member's set changes;
//! - **stale-if-error**: an expired set keeps serving while the peer is
//!   unreachable, for at most `stale_grace_secs` past its `exp`, never longer;
//! - **rollback protection**: a set with a lower `seq` than the highest seen
//!   for its member is refused (the high-water mark survives invalidation);
//!   with [`SeqMarks`] attached, a new mark is recorded durably before the
//!   set is served, so it survives restarts too.
//!
//! Only members with a pinned federation key exist for the cache; any other
//! member name is answered without I/O, so attacker-chosen issuers cannot
//! make the gateway fetch anything or grow any map.

use super::fetch::{FetchError, KeySetFetcher};
use super::keyset::{KeySet, KeyUnusable, TrustError, TrustKey};
use super::marks::{SeqMarks, SeqMarksError};
use super::metrics::{self, FetchOutcome};
use super::KeyStatus;
use crate::clock::{Clock, SystemClock};
use crate::config::TrustConfig;
use crate::jose::VerifyingKey;
use crate::problem::{Problem, ProblemType};
use moka::future::Cache;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

/// Cache tuning, mirroring the `[trust]` section of `gateway.toml`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustCacheConfig {
    pub refresh_ahead_secs: u64,
    pub stale_grace_secs: u64,
    pub negative_ttl_secs: u64,
    pub refetch_min_interval_ms: u64,
    pub clock_skew_secs: u64,
}

impl Default for TrustCacheConfig {
    fn default() -> Self {
        Self {
            refresh_ahead_secs: 300,
            stale_grace_secs: 3600,
            negative_ttl_secs: 5,
            refetch_min_interval_ms: 1000,
            clock_skew_secs: 60,
        }
    }
}

impl From<&TrustConfig> for TrustCacheConfig {
    fn from(c: &TrustConfig) -> Self {
        Self {
            refresh_ahead_secs: c.refresh_ahead_secs,
            stale_grace_secs: c.stale_grace_secs,
            negative_ttl_secs: c.negative_ttl_secs,
            refetch_min_interval_ms: c.refetch_min_interval_ms,
            clock_skew_secs: c.clock_skew_secs,
        }
    }
}

/// Why no usable key was found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    #[error("member {0} is not in the federation (no pinned federation key)")]
    UnknownMember(String),
    #[error("key {kid} is not in the key set of {member}")]
    UnknownKey { member: String, kid: String },
    #[error("key {kid} of {member}: {reason}")]
    Unusable {
        member: String,
        kid: String,
        reason: KeyUnusable,
    },
    #[error("key set of {member} unavailable: {reason}")]
    Unavailable { member: String, reason: String },
}

impl LookupError {
    pub fn problem_type(&self) -> ProblemType {
        match self {
            LookupError::UnknownMember(_) | LookupError::UnknownKey { .. } => ProblemType::UnknownKey,
            LookupError::Unusable {
                reason: KeyUnusable::NotYetValid { .. },
                ..
            } => ProblemType::UnknownKey,
            LookupError::Unusable { .. } => ProblemType::RevokedKey,
            LookupError::Unavailable { .. } => ProblemType::Unavailable,
        }
    }

    pub fn problem(&self) -> Problem {
        Problem::new(self.problem_type(), self.to_string())
    }
}

/// A verified key set as held in the cache, indexed by kid.
#[derive(Debug)]
struct Cached {
    set: KeySet,
    by_kid: HashMap<String, Arc<TrustKey>>,
    /// Bumped on every install for the member; negative entries recorded
    /// under an older generation are void.
    generation: u64,
}

impl Cached {
    fn new(set: KeySet, generation: u64) -> Self {
        let by_kid = set
            .keys
            .iter()
            .map(|k| (k.kid.clone(), Arc::new(k.clone())))
            .collect();
        Self {
            set,
            by_kid,
            generation,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Negative {
    until_ms: i64,
    generation: u64,
}

/// Per-member fetch coordination. Exists only for pinned members.
#[derive(Debug, Default)]
struct Slot {
    flight: tokio::sync::Mutex<Flight>,
    /// Number of fetch attempts completed; read without the mutex to detect
    /// "someone fetched while I was waiting".
    attempts: AtomicU64,
    /// Copy of `Flight::last_attempt_ms` for the lock-free pre-check of
    /// background refreshes.
    last_attempt_ms: AtomicI64,
    refreshing: AtomicBool,
    /// Local revocations (kid → `revoked_at`), see
    /// [`TrustCache::set_local_revocations`]. Read on every lookup, written
    /// rarely: a read lock and an `Arc` clone.
    revoked: std::sync::RwLock<Arc<HashMap<String, i64>>>,
}

impl Slot {
    /// `key` with a local revocation applied, if there is one and the
    /// published key is not already revoked at least as early.
    fn overlay(&self, key: Arc<TrustKey>) -> Arc<TrustKey> {
        let overlay = self
            .revoked
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let Some(&at) = overlay.get(&key.kid) else {
            return key;
        };
        if key.status == KeyStatus::Revoked && key.revoked_at.is_some_and(|t| t <= at) {
            return key;
        }
        let mut revoked = (*key).clone();
        revoked.status = KeyStatus::Revoked;
        revoked.revoked_at = Some(revoked.revoked_at.map_or(at, |t| t.min(at)));
        Arc::new(revoked)
    }
}

#[derive(Debug, Default)]
struct Flight {
    last_attempt_ms: Option<i64>,
    highest_seq: Option<u64>,
    generation: u64,
    last_error: Option<String>,
}

/// Why one fetch attempt did not install a set.
#[derive(Debug, thiserror::Error)]
enum RefreshError {
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error(transparent)]
    Verify(#[from] TrustError),
    #[error("no pinned federation key for {0}")]
    NotPinned(String),
    #[error("seq {seq} verified but its rollback mark was not recorded; keeping the previous set: {source}")]
    Mark { seq: u64, source: SeqMarksError },
}

impl RefreshError {
    fn outcome(&self) -> FetchOutcome {
        match self {
            RefreshError::Fetch(_) | RefreshError::NotPinned(_) => FetchOutcome::Unreachable,
            RefreshError::Verify(TrustError::Rollback { .. }) => FetchOutcome::Rollback,
            RefreshError::Verify(TrustError::Expired { .. }) => FetchOutcome::Expired,
            RefreshError::Verify(_) => FetchOutcome::Invalid,
            RefreshError::Mark { .. } => FetchOutcome::MarkFailed,
        }
    }
}

enum Outcome {
    /// This caller fetched and installed a new set.
    Fetched(Arc<Cached>),
    /// Someone else fetched meanwhile, or the rate limit applied: here is
    /// whatever is installed now.
    Skipped(Option<Arc<Cached>>),
    /// This caller's fetch failed; the installed set (if any) is unchanged.
    Failed(String),
}

/// Verified key sets of every federation member. Cheap to share (`Arc`).
#[derive(Clone)]
pub struct TrustCache {
    inner: Arc<Inner>,
}

struct Inner {
    cfg: TrustCacheConfig,
    clock: Arc<dyn Clock>,
    fetcher: Arc<dyn KeySetFetcher>,
    /// Member → pinned federation key. Grows (or a key is replaced) only
    /// through [`TrustCache::pin_member`].
    pinned: RwLock<HashMap<String, VerifyingKey>>,
    slots: RwLock<HashMap<String, Arc<Slot>>>,
    sets: Cache<String, Arc<Cached>>,
    negative: Cache<String, Negative>,
    /// Durable rollback marks; `None` keeps them in memory only.
    marks: Option<Arc<dyn SeqMarks>>,
    /// Holds preloaded sets only and never fetches (offline verification).
    fixed: bool,
}

impl std::fmt::Debug for TrustCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrustCache")
            .field("members", &self.members())
            .field("cfg", &self.inner.cfg)
            .finish_non_exhaustive()
    }
}

const NEGATIVE_CAPACITY: u64 = 10_000;

impl TrustCache {
    /// A cache over the system clock. `pinned` maps member id → that
    /// member's federation public key; it defines the federation.
    pub fn new(
        cfg: TrustCacheConfig,
        pinned: HashMap<String, VerifyingKey>,
        fetcher: Arc<dyn KeySetFetcher>,
    ) -> Self {
        Self::with_clock(cfg, pinned, fetcher, Arc::new(SystemClock))
    }

    /// Like [`TrustCache::new`] with an explicit clock (tests).
    pub fn with_clock(
        cfg: TrustCacheConfig,
        pinned: HashMap<String, VerifyingKey>,
        fetcher: Arc<dyn KeySetFetcher>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let slots = pinned.keys().map(|m| (m.clone(), Arc::default())).collect();
        let sets = Cache::builder().max_capacity(pinned.len() as u64 + 16).build();
        // The TTL here only bounds memory; expiry is decided against `clock`.
        let negative = Cache::builder()
            .max_capacity(NEGATIVE_CAPACITY)
            .time_to_live(Duration::from_secs(cfg.negative_ttl_secs.max(1)))
            .build();
        Self {
            inner: Arc::new(Inner {
                cfg,
                clock,
                fetcher,
                pinned: RwLock::new(pinned),
                slots: RwLock::new(slots),
                sets,
                negative,
                marks: None,
                fixed: false,
            }),
        }
    }

    /// A cache over fixed, already trusted key sets that never fetches:
    /// offline verification (`bashu credential verify --jwks`). The caller
    /// vouches for the sets; nothing here checks a signature on them.
    pub async fn preloaded(cfg: TrustCacheConfig, sets: Vec<KeySet>, clock: Arc<dyn Clock>) -> Self {
        let slots = sets.iter().map(|s| (s.iss.clone(), Arc::default())).collect();
        let cache = Cache::builder().max_capacity(sets.len() as u64 + 16).build();
        for (generation, set) in (1..).zip(sets) {
            cache
                .insert(set.iss.clone(), Arc::new(Cached::new(set, generation)))
                .await;
        }
        Self {
            inner: Arc::new(Inner {
                cfg,
                clock,
                fetcher: Arc::new(super::fetch::StaticFetcher::new()),
                pinned: RwLock::new(HashMap::new()),
                slots: RwLock::new(slots),
                sets: cache,
                negative: Cache::builder().max_capacity(NEGATIVE_CAPACITY).build(),
                marks: None,
                fixed: true,
            }),
        }
    }

    /// Makes rollback protection survive restarts: loads the recorded
    /// marks as each member's starting high-water mark, and from now on
    /// records a member's new highest `seq` in `marks` before serving that
    /// set. Call before the cache is cloned or used; a mark that cannot be
    /// loaded is an error (starting without it would silently reopen the
    /// rollback window).
    pub fn with_seq_marks(mut self, marks: Arc<dyn SeqMarks>) -> Result<Self, SeqMarksError> {
        let loaded = marks.load()?;
        let inner = Arc::get_mut(&mut self.inner).ok_or(SeqMarksError::CacheShared)?;
        for (member, seq) in loaded {
            // Marks of members no longer pinned stay in the store, unused.
            let slots = inner.slots.get_mut().unwrap_or_else(PoisonError::into_inner);
            if let Some(slot) = slots.get_mut(&member).and_then(Arc::get_mut) {
                let highest = &mut slot.flight.get_mut().highest_seq;
                *highest = Some(highest.map_or(seq, |h| h.max(seq)));
            }
        }
        inner.marks = Some(marks);
        Ok(self)
    }

    /// The clock every time-dependent check uses.
    pub fn clock(&self) -> Arc<dyn Clock> {
        self.inner.clock.clone()
    }

    pub fn config(&self) -> &TrustCacheConfig {
        &self.inner.cfg
    }

    /// Member ids the cache answers for (pinned federation keys, or the
    /// preloaded sets).
    pub fn members(&self) -> Vec<String> {
        let mut members: Vec<String> = self.inner.slots_read().keys().cloned().collect();
        members.sort();
        members
    }

    /// The key `kid` of `member`, if it exists and verifies now.
    pub async fn key(&self, member: &str, kid: &str) -> Result<Arc<TrustKey>, LookupError> {
        let key = self.find(member, kid).await?;
        self.inner.usable(member, &key, self.inner.clock.now_ms())
    }

    /// The key `kid` of `member` even if it no longer verifies new
    /// credentials, with the reason it does not (`None` if it does). For the
    /// one caller that may still honour it: a chain whose origin gateway
    /// attests it verified the original before the key was revoked or
    /// retired (SPEC §2). A key that is not valid *yet* is refused here too.
    pub async fn key_with_status(
        &self,
        member: &str,
        kid: &str,
    ) -> Result<(Arc<TrustKey>, Option<KeyUnusable>), LookupError> {
        let key = self.find(member, kid).await?;
        match self.inner.usable(member, &key, self.inner.clock.now_ms()) {
            Ok(k) => Ok((k, None)),
            Err(LookupError::Unusable {
                reason: reason @ (KeyUnusable::Revoked | KeyUnusable::Retired { .. }),
                ..
            }) => Ok((key, Some(reason))),
            Err(e) => Err(e),
        }
    }

    /// Marks keys of `member` revoked locally, whatever its published set
    /// says (kid → `revoked_at`). The gateway feeds its own member's
    /// revocations here straight from the key store, so a revocation bites
    /// at once even before (or without, when the federation key is offline)
    /// a new signed set. Replaces the previous overlay of `member`.
    pub fn set_local_revocations(&self, member: &str, revoked: HashMap<String, i64>) {
        if let Some(slot) = self.inner.slot(member) {
            let mut overlay = slot
                .revoked
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            *overlay = Arc::new(revoked);
        }
    }

    /// `seq` of the set currently cached for `member` (no I/O).
    pub async fn cached_seq(&self, member: &str) -> Option<u64> {
        self.inner.sets.get(member).await.map(|c| c.set.seq)
    }

    /// The key `kid` of `member` as published (with any local revocation
    /// applied), whether or not it verifies now.
    async fn find(&self, member: &str, kid: &str) -> Result<Arc<TrustKey>, LookupError> {
        let inner = &self.inner;
        let slot = inner
            .slot(member)
            .ok_or_else(|| LookupError::UnknownMember(member.to_owned()))?;
        let found = self.find_in(member, slot.as_ref(), kid).await?;
        Ok(slot.overlay(found))
    }

    async fn find_in(&self, member: &str, slot: &Slot, kid: &str) -> Result<Arc<TrustKey>, LookupError> {
        let inner = &self.inner;
        // Captured before looking: a fetch that completes after this point is
        // at least as fresh as anything we could start, so we share it.
        let seen = slot.attempts.load(Ordering::Acquire);
        let now = inner.clock.now_ms();
        let cached = self.current(member, slot, now).await?;
        if let Some(k) = cached.by_kid.get(kid) {
            return Ok(k.clone());
        }
        let neg_key = negative_key(member, kid);
        if let Some(neg) = inner.negative.get(&neg_key).await {
            if neg.generation == cached.generation && neg.until_ms > now {
                return Err(unknown(member, kid));
            }
        }
        let outcome = inner.fetch(member, slot, seen, true).await;
        if matches!(outcome, Outcome::Fetched(_) | Outcome::Failed(_)) {
            metrics::unknown_kid_refetch(member);
        }
        let latest = match outcome {
            Outcome::Fetched(c) | Outcome::Skipped(Some(c)) => c,
            Outcome::Skipped(None) => cached,
            Outcome::Failed(reason) => {
                return Err(LookupError::Unavailable {
                    member: member.to_owned(),
                    reason,
                })
            }
        };
        match latest.by_kid.get(kid) {
            Some(k) => Ok(k.clone()),
            None => {
                let ttl_ms =
                    i64::try_from(inner.cfg.negative_ttl_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
                let neg = Negative {
                    until_ms: now.saturating_add(ttl_ms),
                    generation: latest.generation,
                };
                inner.negative.insert(neg_key, neg).await;
                Err(unknown(member, kid))
            }
        }
    }

    /// The member owning `kid` among the sets currently cached, without any
    /// I/O. Used to tell "signed by another member's key" (issuer mismatch)
    /// from "signed by a key nobody knows".
    pub fn cached_owner_of(&self, kid: &str) -> Option<(String, super::KeyRole)> {
        self.inner
            .sets
            .iter()
            .find_map(|(member, c)| c.by_kid.get(kid).map(|k| (member.as_ref().clone(), k.role)))
    }

    /// The currently cached, verified set of `member` (no I/O).
    pub async fn cached_set(&self, member: &str) -> Option<KeySet> {
        self.inner.sets.get(member).await.map(|c| c.set.clone())
    }

    /// Fetches `member`'s set now, ignoring the rate limit (operator action,
    /// `POST /v1/admin/trust/refresh`). Returns the installed `seq`.
    pub async fn refresh(&self, member: &str) -> Result<u64, LookupError> {
        let slot = self
            .inner
            .slot(member)
            .ok_or_else(|| LookupError::UnknownMember(member.to_owned()))?;
        let slot = slot.as_ref();
        let seen = slot.attempts.load(Ordering::Acquire);
        match self.inner.fetch(member, slot, seen, false).await {
            Outcome::Fetched(c) | Outcome::Skipped(Some(c)) => Ok(c.set.seq),
            Outcome::Skipped(None) => Err(LookupError::Unavailable {
                member: member.to_owned(),
                reason: "no key set".into(),
            }),
            Outcome::Failed(reason) => Err(LookupError::Unavailable {
                member: member.to_owned(),
                reason,
            }),
        }
    }

    /// [`TrustCache::refresh`] for every member; one result per member.
    pub async fn refresh_all(&self) -> Vec<(String, Result<u64, LookupError>)> {
        let mut out = Vec::new();
        for m in self.members() {
            let result = self.refresh(&m).await;
            out.push((m, result));
        }
        out
    }

    /// Pins `member`'s federation key at run time: adds a member, or
    /// replaces the key of one already pinned (its cached set, verified
    /// under the old key, is dropped and fetched again on next use). Used
    /// when a SIGHUP adds or changes a peer. The member's rollback mark is
    /// kept, or loaded from the attached [`SeqMarks`] for a new member.
    /// Returns whether anything changed.
    pub async fn pin_member(&self, member: &str, key: VerifyingKey) -> Result<bool, SeqMarksError> {
        let inner = &self.inner;
        if inner.fixed {
            return Ok(false);
        }
        let unchanged = inner
            .pinned
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(member)
            .is_some_and(|old| old.jwk() == key.jwk());
        if unchanged {
            return Ok(false);
        }
        let mark = match &inner.marks {
            Some(marks) => marks.load()?.get(member).copied(),
            None => None,
        };
        {
            let mut slots = inner.slots.write().unwrap_or_else(PoisonError::into_inner);
            slots.entry(member.to_owned()).or_insert_with(|| {
                let mut slot = Slot::default();
                slot.flight.get_mut().highest_seq = mark;
                Arc::new(slot)
            });
        }
        inner
            .pinned
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(member.to_owned(), key);
        inner.sets.invalidate(member).await;
        inner.negative.invalidate_all();
        tracing::info!(member, "federation key pinned at run time");
        Ok(true)
    }

    /// Drops every cached set and negative entry. Rollback high-water marks
    /// are kept: forgetting them would re-open the rollback window.
    pub fn invalidate_all(&self) {
        self.inner.sets.invalidate_all();
        self.inner.negative.invalidate_all();
    }

    /// The set to answer from right now: the cached one while valid
    /// (starting a background refresh when close to `exp`), a freshly fetched
    /// one otherwise, or the stale one within the grace period.
    async fn current(&self, member: &str, slot: &Slot, now: i64) -> Result<Arc<Cached>, LookupError> {
        let inner = &self.inner;
        let Some(c) = inner.sets.get(member).await else {
            let seen = slot.attempts.load(Ordering::Acquire);
            return match inner.fetch(member, slot, seen, true).await {
                Outcome::Fetched(c) | Outcome::Skipped(Some(c)) => Ok(c),
                Outcome::Skipped(None) => Err(LookupError::Unavailable {
                    member: member.to_owned(),
                    reason: slot_error(slot).await,
                }),
                Outcome::Failed(reason) => Err(LookupError::Unavailable {
                    member: member.to_owned(),
                    reason,
                }),
            };
        };
        let exp_ms = c.set.exp.saturating_mul(1000);
        if now < exp_ms {
            let ahead_ms =
                i64::try_from(inner.cfg.refresh_ahead_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
            if now >= exp_ms.saturating_sub(ahead_ms) {
                self.spawn_refresh(member);
            }
            return Ok(c);
        }
        let seen = slot.attempts.load(Ordering::Acquire);
        if let Outcome::Fetched(fresh) | Outcome::Skipped(Some(fresh)) =
            inner.fetch(member, slot, seen, true).await
        {
            if now < fresh.set.exp.saturating_mul(1000) {
                return Ok(fresh);
            }
        }
        let grace_ms = i64::try_from(inner.cfg.stale_grace_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
        if now < exp_ms.saturating_add(grace_ms) {
            tracing::warn!(member, exp = c.set.exp, "serving stale trust key set");
            metrics::stale_served(member);
            return Ok(c);
        }
        Err(LookupError::Unavailable {
            member: member.to_owned(),
            reason: format!(
                "key set expired at {} and no fresh one could be fetched",
                c.set.exp
            ),
        })
    }

    /// Starts one background refresh for `member` unless one is running.
    fn spawn_refresh(&self, member: &str) {
        let Some(slot) = self.inner.slot(member) else {
            return;
        };
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let interval = i64::try_from(self.inner.cfg.refetch_min_interval_ms).unwrap_or(i64::MAX);
        let since = self
            .inner
            .clock
            .now_ms()
            .saturating_sub(slot.last_attempt_ms.load(Ordering::Acquire));
        if since < interval || slot.refreshing.swap(true, Ordering::AcqRel) {
            return;
        }
        let this = self.clone();
        let member = member.to_owned();
        handle.spawn(async move {
            if let Some(slot) = this.inner.slot(&member) {
                let slot = slot.as_ref();
                let seen = slot.attempts.load(Ordering::Acquire);
                let _ = this.inner.fetch(&member, slot, seen, true).await;
                slot.refreshing.store(false, Ordering::Release);
            }
        });
    }
}

impl Inner {
    fn slots_read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Arc<Slot>>> {
        self.slots.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn slot(&self, member: &str) -> Option<Arc<Slot>> {
        self.slots_read().get(member).cloned()
    }

    fn usable(&self, member: &str, k: &Arc<TrustKey>, now_ms: i64) -> Result<Arc<TrustKey>, LookupError> {
        let skew = i64::try_from(self.cfg.clock_skew_secs).unwrap_or(i64::MAX);
        k.check_usable(now_ms.div_euclid(1000), skew)
            .map(|()| k.clone())
            .map_err(|reason| LookupError::Unusable {
                member: member.to_owned(),
                kid: k.kid.clone(),
                reason,
            })
    }

    /// The single-flight fetch. `seen` is the attempt counter the caller
    /// observed before deciding to fetch; if it moved while we waited for the
    /// mutex, somebody else's result is used instead of fetching again.
    async fn fetch(&self, member: &str, slot: &Slot, seen: u64, rate_limited: bool) -> Outcome {
        if self.fixed {
            return Outcome::Skipped(self.sets.get(member).await);
        }
        let mut flight = slot.flight.lock().await;
        if slot.attempts.load(Ordering::Acquire) != seen {
            return Outcome::Skipped(self.sets.get(member).await);
        }
        let now = self.clock.now_ms();
        let interval = i64::try_from(self.cfg.refetch_min_interval_ms).unwrap_or(i64::MAX);
        if rate_limited
            && flight
                .last_attempt_ms
                .is_some_and(|t| now.saturating_sub(t) < interval)
        {
            return Outcome::Skipped(self.sets.get(member).await);
        }
        flight.last_attempt_ms = Some(now);
        slot.last_attempt_ms.store(now, Ordering::Release);
        let outcome = match self.fetch_verified(member, flight.highest_seq, now).await {
            Ok(set) => {
                metrics::fetched(member, FetchOutcome::Ok);
                metrics::serving_seq(member, set.seq);
                flight.highest_seq = Some(set.seq);
                flight.generation += 1;
                flight.last_error = None;
                let cached = Arc::new(Cached::new(set, flight.generation));
                self.sets.insert(member.to_owned(), cached.clone()).await;
                Outcome::Fetched(cached)
            }
            Err(e) => {
                metrics::fetched(member, e.outcome());
                let reason = e.to_string();
                if let RefreshError::Mark { .. } = e {
                    tracing::error!(member, %reason, "trust key set refused: rollback mark not recorded");
                } else {
                    tracing::warn!(member, %reason, "trust key set fetch failed");
                }
                flight.last_error = Some(reason.clone());
                Outcome::Failed(reason)
            }
        };
        // Counted on completion, after the install, under the mutex: whoever
        // observed the old count queued behind (or raced with) this fetch and
        // now shares its result instead of fetching again.
        slot.attempts.fetch_add(1, Ordering::AcqRel);
        outcome
    }

    /// Fetches and verifies `member`'s set and, if its `seq` is a new
    /// high, records the mark durably: only then may the set be served.
    async fn fetch_verified(
        &self,
        member: &str,
        highest_seq: Option<u64>,
        now_ms: i64,
    ) -> Result<KeySet, RefreshError> {
        let fed = self
            .pinned
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(member)
            .cloned()
            .ok_or_else(|| RefreshError::NotPinned(member.to_owned()))?;
        let jws = self.fetcher.fetch(member).await?;
        let set = KeySet::verify_for(member, &jws, &fed, now_ms.div_euclid(1000))?;
        match highest_seq {
            Some(seen) if set.seq < seen => {
                return Err(TrustError::Rollback { seen, got: set.seq }.into());
            }
            // Same set refetched (or an equal seq): the mark already holds.
            Some(seen) if set.seq == seen => {}
            _ => self.record_mark(member, set.seq).await?,
        }
        Ok(set)
    }

    async fn record_mark(&self, member: &str, seq: u64) -> Result<(), RefreshError> {
        let Some(marks) = self.marks.clone() else {
            return Ok(());
        };
        let owned = member.to_owned();
        let record = move || marks.record(&owned, seq);
        // Recording fsyncs: keep it off the async workers when we can.
        let result = match tokio::runtime::Handle::try_current() {
            Ok(handle) => handle
                .spawn_blocking(record)
                .await
                .unwrap_or_else(|e| Err(SeqMarksError::Unavailable(format!("record task failed: {e}")))),
            Err(_) => record(),
        };
        result.map_err(|source| RefreshError::Mark { seq, source })
    }
}

async fn slot_error(slot: &Slot) -> String {
    let flight = slot.flight.lock().await;
    flight
        .last_error
        .clone()
        .unwrap_or_else(|| "no key set fetched yet (rate limited)".into())
}

fn negative_key(member: &str, kid: &str) -> String {
    // Neither part can contain NUL (member ids and kids are ASCII tokens).
    format!("{member}\u{0}{kid}")
}

fn unknown(member: &str, kid: &str) -> LookupError {
    LookupError::UnknownKey {
        member: member.to_owned(),
        kid: kid.to_owned(),
    }
}
