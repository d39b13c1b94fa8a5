//! The delivery worker: a supervisor plus one task per destination.
//!
//! The supervisor learns destinations from the configured peers and from
//! the outbox, wakes peer tasks when the pipeline signals new work, keeps
//! the outbox-depth gauges current, and restarts a peer task that died.
//! Each peer task drains its destination head-of-line: it never sends an
//! item before every earlier one has settled.
//!
//! A peer task delivers only while it holds the destination's lease
//! (SPEC §5): several replicas sharing one store each run a task per
//! destination, and the lease makes one of them the sender. The holder
//! renews it every third of the TTL (checked on a timer while waiting and
//! before each send); the others retry every third of the TTL. Every settle
//! carries the lease, so a holder that lost it (paused past its TTL, then
//! taken over) writes nothing: it gets `LeaseLost`, drops what it had in
//! memory and asks for the lease again. Shutdown releases it.

use super::backoff::Backoff;
use super::breaker::{BreakerState, CircuitBreaker};
use super::metrics::{ATTEMPTS, BREAKER_STATE, DEAD_LETTERED, LEASE_HELD, OUTBOX_DEPTH, RETRIES};
use super::{BatchAnswer, Clock, PeerAnswer, PeerClient, SendError};
use crate::config::DeliveryConfig;
use crate::store::{blocking, Lease, OutboxItem, SettleOutcome, Settlement, Store, StoreError};
use crate::wire::Envelope;
use crate::wire::{MAX_BATCH_BYTES, MAX_BATCH_ENVELOPES};
use futures::FutureExt;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeSet, HashMap};
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use time::OffsetDateTime;
use tokio::sync::{watch, Notify};
use tokio::task::{Id, JoinSet};
use tokio::time::Instant;

/// How often the supervisor rescans the outbox without being notified: a
/// safety net for writes it was not told about (another process, a lost
/// notification), not the normal path.
const SWEEP_INTERVAL: Duration = Duration::from_secs(30);

/// How often the dead-letter sweep runs. An item is dead-lettered at most
/// this long after it reaches the configured age, however many items are
/// queued and whatever the breaker is doing: age alone decides, not
/// delivery attempts.
pub const DEAD_LETTER_SWEEP_INTERVAL: Duration = Duration::from_secs(2);

/// Least time between two outbox sweeps started by notifications. Every
/// accept notifies the worker; a sweep per accept (an outbox count and a
/// dead-letter lookup, two blocking-pool hops) was 4 % of an origin
/// gateway's CPU under load. In between, a notification only wakes the peer
/// tasks; a skipped sweep runs at the next tick.
const NOTIFIED_SWEEP_GAP: Duration = Duration::from_millis(250);

/// Why the supervisor's loop turned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Turn {
    Start,
    Notified,
    Tick,
    TaskEnded,
}

/// Backoff of a peer task after store failures (a full disk, a read-only
/// or damaged database): the first retry after about a second, then
/// doubling up to a minute, so a failing store is not hammered.
const STORE_BACKOFF_INITIAL: Duration = Duration::from_secs(1);
const STORE_BACKOFF_MAX: Duration = Duration::from_secs(60);

/// This process's lease holder id: hostname, pid and a random suffix (a
/// restarted process that got the same pid is still another holder), made
/// once per process.
pub fn process_holder_id() -> &'static str {
    static ID: OnceLock<String> = OnceLock::new();
    ID.get_or_init(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .or_else(|_| std::fs::read_to_string("/etc/hostname"))
            .map(|h| h.trim().to_owned())
            .ok()
            .filter(|h| !h.is_empty())
            .or_else(|| std::env::var("HOSTNAME").ok())
            .unwrap_or_else(|| "localhost".to_owned());
        let suffix: u32 = rand::thread_rng().gen();
        format!("{host}/{}/{suffix:08x}", std::process::id())
    })
}

/// How long a peer that refused the batch form (a v1 gateway) is sent
/// single envelopes before the batch form is tried again (it may have
/// been upgraded meanwhile).
pub const SINGLE_MODE_FOR: Duration = Duration::from_secs(600);

/// Forwards outbox items to peer gateways until shut down.
pub struct DeliveryWorker {
    shared: Arc<Shared>,
    peers: BTreeSet<String>,
    notify: Arc<Notify>,
}

/// What every peer task needs, shared read-only.
struct Shared {
    store: Arc<dyn Store>,
    client: Arc<dyn PeerClient>,
    clock: Arc<dyn Clock>,
    backoff: Backoff,
    breaker_threshold: u32,
    breaker_open: Duration,
    request_timeout: Duration,
    batch_size: usize,
    /// Most envelopes per batch request (1: never batch).
    peer_batch_max: usize,
    dead_letter_after: Duration,
    /// Who this worker is when it asks for a delivery lease.
    holder: String,
    lease_ttl: Duration,
}

impl Shared {
    /// How often a held lease is renewed and a held-elsewhere one asked for.
    fn lease_period(&self) -> Duration {
        (self.lease_ttl / 3).max(Duration::from_millis(1))
    }
}

impl DeliveryWorker {
    pub fn new(
        store: Arc<dyn Store>,
        client: Arc<dyn PeerClient>,
        config: DeliveryConfig,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let shared = Shared {
            store,
            client,
            clock,
            backoff: Backoff::new(
                Duration::from_millis(config.initial_backoff_ms),
                Duration::from_millis(config.max_backoff_ms),
            ),
            breaker_threshold: config.breaker_failure_threshold,
            breaker_open: Duration::from_millis(config.breaker_open_ms),
            request_timeout: Duration::from_millis(config.request_timeout_ms.max(1)),
            batch_size: config.batch_size.max(1),
            peer_batch_max: config.peer_batch_max.clamp(1, MAX_BATCH_ENVELOPES),
            dead_letter_after: Duration::from_secs(config.dead_letter_after_secs),
            holder: process_holder_id().to_owned(),
            lease_ttl: Duration::from_millis(config.lease_ttl_ms.max(1)),
        };
        Self {
            shared: Arc::new(shared),
            peers: BTreeSet::new(),
            notify: Arc::new(Notify::new()),
        }
    }

    /// Destinations to serve from the start (the configured peers); others
    /// are discovered from the outbox.
    pub fn with_peers<I, S>(mut self, peers: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.peers.extend(peers.into_iter().map(Into::into));
        self
    }

    /// Asks for delivery leases as `holder` instead of
    /// [`process_holder_id`]: for tests running several workers, as
    /// replicas, in one process.
    pub fn with_holder(mut self, holder: impl Into<String>) -> Self {
        if let Some(shared) = Arc::get_mut(&mut self.shared) {
            shared.holder = holder.into();
        }
        self
    }

    /// Signal new outbox work (a stored exchange, an operator retry) with
    /// `notify_one()`, which is never lost even if the worker is busy.
    pub fn notifier(&self) -> Arc<Notify> {
        Arc::clone(&self.notify)
    }

    /// Runs until `shutdown` becomes true (or its sender is dropped). Each
    /// peer task finishes the send it has in flight, records the answer and
    /// returns; then `run` returns.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut supervisor = Supervisor {
            shared: self.shared,
            wakers: HashMap::new(),
            task_peers: HashMap::new(),
            tasks: JoinSet::new(),
            shutdown: shutdown.clone(),
        };
        for peer in self.peers {
            supervisor.spawn(peer);
        }
        let mut tick = tokio::time::interval(DEAD_LETTER_SWEEP_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_scan: Option<Instant> = None;
        // A notification arrived since the last sweep but did not run one.
        let mut skipped = false;
        let mut turn = Turn::Start;
        loop {
            let expired = matches!(turn, Turn::Start | Turn::Tick) && supervisor.expire().await;
            let scan_due = last_scan.is_none_or(|at| at.elapsed() >= SWEEP_INTERVAL);
            let recent = last_scan.is_some_and(|at| at.elapsed() < NOTIFIED_SWEEP_GAP);
            let sweep = match turn {
                Turn::Start | Turn::TaskEnded => true,
                Turn::Notified => !recent,
                Turn::Tick => skipped,
            };
            if sweep || expired || scan_due {
                supervisor.sweep().await;
                last_scan = Some(Instant::now());
                skipped = false;
            } else if turn == Turn::Notified {
                supervisor.wake_all();
                skipped = true;
            }
            turn = tokio::select! {
                () = self.notify.notified() => Turn::Notified,
                _ = tick.tick() => Turn::Tick,
                Some(ended) = supervisor.tasks.join_next_with_id() => {
                    supervisor.task_ended(ended);
                    Turn::TaskEnded
                }
                () = shutdown_signalled(&mut shutdown) => break,
            };
        }
        while let Some(ended) = supervisor.tasks.join_next_with_id().await {
            if let Err(e) = ended {
                tracing::error!(error = %e, "delivery task failed during shutdown");
            }
        }
    }
}

struct Supervisor {
    shared: Arc<Shared>,
    /// Per-peer wake-up signal; a stored permit means "look at the outbox".
    wakers: HashMap<String, Arc<Notify>>,
    task_peers: HashMap<Id, String>,
    tasks: JoinSet<()>,
    shutdown: watch::Receiver<bool>,
}

impl Supervisor {
    fn spawn(&mut self, peer: String) {
        if self.wakers.contains_key(&peer) {
            return;
        }
        let wake = Arc::new(Notify::new());
        let task = PeerTask {
            breaker: CircuitBreaker::new(self.shared.breaker_threshold, self.shared.breaker_open),
            breaker_seen: BreakerState::Closed,
            rng: StdRng::from_entropy(),
            unsettled: None,
            single_until: None,
            store_failures: 0,
            lease: None,
            renewed_at: None,
            shared: Arc::clone(&self.shared),
            peer: peer.clone(),
            wake: Arc::clone(&wake),
            shutdown: self.shutdown.clone(),
        };
        let handle = self.tasks.spawn(task.run());
        self.task_peers.insert(handle.id(), peer.clone());
        self.wakers.insert(peer, wake);
    }

    /// The dead-letter sweep: one store transaction dead-letters every
    /// outbox item older than the configured age. True if it took any.
    async fn expire(&mut self) -> bool {
        let now = self.shared.clock.now();
        let cutoff = time::Duration::try_from(self.shared.dead_letter_after)
            .ok()
            .and_then(|age| now.checked_sub(age));
        let Some(cutoff) = cutoff else {
            return false; // an age reaching before the calendar: nothing is that old
        };
        let store = Arc::clone(&self.shared.store);
        let expired = match blocking(store, move |s| s.dead_letter_expired(cutoff, now)).await {
            Ok(items) => items,
            Err(e) => {
                tracing::error!(error = %e, "dead-letter sweep failed");
                return false;
            }
        };
        if expired.is_empty() {
            return false;
        }
        let mut per_peer: HashMap<&str, Vec<&str>> = HashMap::new();
        for item in &expired {
            per_peer
                .entry(item.destination.as_str())
                .or_default()
                .push(item.exchange_id.as_str());
        }
        for (peer, ids) in per_peer {
            DEAD_LETTERED
                .with_label_values(&[peer])
                .inc_by(u64::try_from(ids.len()).unwrap_or(u64::MAX));
            tracing::warn!(
                peer = %peer,
                count = ids.len(),
                first = ids.first().copied().unwrap_or_default(),
                last = ids.last().copied().unwrap_or_default(),
                max_age_secs = self.shared.dead_letter_after.as_secs(),
                "dead-lettered exchanges older than the configured age"
            );
        }
        true
    }

    /// Starts tasks for new destinations, refreshes the depth gauges and
    /// wakes every peer with work.
    async fn sweep(&mut self) {
        let store = Arc::clone(&self.shared.store);
        let depths = match blocking(store, |s| s.outbox_depths()).await {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(error = %e, "cannot read outbox depths");
                return;
            }
        };
        for peer in depths.keys() {
            self.spawn(peer.clone());
        }
        for (peer, wake) in &self.wakers {
            let depth = depths.get(peer).copied().unwrap_or(0);
            OUTBOX_DEPTH
                .with_label_values(&[peer])
                .set(i64::try_from(depth).unwrap_or(i64::MAX));
            if depth > 0 {
                wake.notify_one();
            }
        }
    }

    /// Wakes every peer task to look at its outbox, without reading it here.
    fn wake_all(&self) {
        for wake in self.wakers.values() {
            wake.notify_one();
        }
    }

    /// A peer task returned. Outside shutdown that is a bug (a panic):
    /// forget the task so the next sweep starts a fresh one for its peer.
    fn task_ended(&mut self, ended: Result<(Id, ()), tokio::task::JoinError>) {
        if shutdown_requested(&self.shutdown) {
            return;
        }
        let (id, cause) = match &ended {
            Ok((id, ())) => (*id, "returned".to_owned()),
            Err(e) => (e.id(), e.to_string()),
        };
        if let Some(peer) = self.task_peers.remove(&id) {
            tracing::error!(peer = %peer, %cause, "delivery task ended unexpectedly; restarting it");
            self.wakers.remove(&peer);
        }
    }
}

/// Store failure inside a peer task (including a store call that did not
/// complete); logged, then retried.
type TaskError = StoreError;

/// Resolves once shutdown is requested or the sender is gone.
async fn shutdown_signalled(shutdown: &mut watch::Receiver<bool>) {
    // An error means the sender was dropped: nobody can stop us any more
    // politely, so treat it as a stop request.
    let _ = shutdown.wait_for(|stop| *stop).await;
}

fn shutdown_requested(shutdown: &watch::Receiver<bool>) -> bool {
    *shutdown.borrow() || shutdown.has_changed().is_err()
}

/// Answers from the peer not yet recorded (the store failed): kept until
/// the store takes them, so their items are not sent again meanwhile.
#[derive(Debug, Clone)]
struct Unsettled {
    outcomes: Vec<Settlement>,
    at: OffsetDateTime,
}

/// What a single delivery attempt led to.
enum Attempt {
    /// The item left the outbox (delivered, rejected or dead-lettered):
    /// the next item may go.
    Settled,
    /// The item stays at the head, waiting for its next attempt.
    Retry,
}

/// Whether a peer task holds its destination's lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tenure {
    /// Held, as before (renewed or still fresh).
    Kept,
    /// Held, newly taken (a new token): what was read before is stale.
    New,
    /// Another holder has it.
    Elsewhere,
}

/// When a peer task should look at its outbox again.
enum Next {
    /// At once: the batch was drained or the head was rescheduled.
    Now,
    /// When the head becomes due (backoff or open breaker).
    After(Duration),
    /// Only when woken: the outbox is empty.
    WhenWoken,
}

struct PeerTask {
    shared: Arc<Shared>,
    peer: String,
    wake: Arc<Notify>,
    shutdown: watch::Receiver<bool>,
    breaker: CircuitBreaker,
    /// The breaker state last published, to log its transitions.
    breaker_seen: BreakerState,
    rng: StdRng,
    /// Answers still to be recorded (see [`Unsettled`]).
    unsettled: Option<Unsettled>,
    /// The peer refused the batch form: single envelopes until then.
    single_until: Option<Instant>,
    /// Consecutive store failures; drives the store backoff.
    store_failures: u32,
    /// The destination's lease while this task holds it.
    lease: Option<Lease>,
    /// When `lease` was last renewed (or taken).
    renewed_at: Option<Instant>,
}

impl PeerTask {
    async fn run(mut self) {
        let store_backoff = Backoff::new(STORE_BACKOFF_INITIAL, STORE_BACKOFF_MAX);
        while !shutdown_requested(&self.shutdown) {
            let step = match self.hold_lease().await {
                Ok(Tenure::Elsewhere) => Ok(None),
                Ok(Tenure::Kept | Tenure::New) => self.drain_batch().await.map(Some),
                Err(e) => Err(e),
            };
            let pause = match step {
                Ok(Some(next)) => {
                    self.store_failures = 0;
                    match next {
                        Next::Now => continue,
                        Next::After(wait) => Some(wait),
                        Next::WhenWoken => None,
                    }
                }
                // Another replica delivers; ask again a third of a TTL later.
                Ok(None) => {
                    self.store_failures = 0;
                    Some(self.shared.lease_period())
                }
                Err(StoreError::LeaseLost { token, .. }) => {
                    tracing::warn!(peer = %self.peer, token, "delivery lease lost to another holder; asking for it again");
                    self.drop_lease();
                    continue;
                }
                Err(e) => {
                    self.store_failures = self.store_failures.saturating_add(1);
                    let delay = store_backoff.delay(self.store_failures, None, &mut self.rng);
                    tracing::error!(
                        peer = %self.peer,
                        error = %e,
                        failures = self.store_failures,
                        ?delay,
                        unsettled = self.unsettled.as_ref().map_or(0, |u| u.outcomes.len()),
                        "delivery store failure; backing off"
                    );
                    Some(delay)
                }
            };
            // Wait for the head to become due, for new work, or to stop.
            // New work never jumps the queue: it only makes us look again.
            // While the store is failing, new work does not cut the backoff
            // short; while another replica holds the lease, it is theirs.
            // A held lease is renewed while waiting, except while the store
            // is failing: then its backoff rules (the lease may expire; see
            // `hold_lease` for why that loses nothing if nobody took it).
            let listen = self.store_failures == 0 && self.lease.is_some();
            let period = self.shared.lease_period();
            let pause = match pause {
                _ if self.lease.is_none() || self.store_failures > 0 => pause,
                Some(p) => Some(p.min(period)),
                None => Some(period),
            };
            let mut shutdown = self.shutdown.clone();
            tokio::select! {
                () = self.wake.notified(), if listen => {}
                () = sleep_opt(pause) => {}
                () = shutdown_signalled(&mut shutdown) => break,
            }
        }
        self.release_lease().await;
    }

    /// Takes or renews the destination's lease when a third of its TTL has
    /// passed since the last renewal (at once if not held).
    async fn hold_lease(&mut self) -> Result<Tenure, TaskError> {
        let period = self.shared.lease_period();
        if self.lease.is_some() && self.renewed_at.is_some_and(|at| at.elapsed() < period) {
            return Ok(Tenure::Kept);
        }
        let (peer, holder) = (self.peer.clone(), self.shared.holder.clone());
        let (ttl, now) = (self.shared.lease_ttl, self.shared.clock.now());
        let asked = Instant::now();
        let got = blocking(Arc::clone(&self.shared.store), move |s| {
            s.acquire_lease(&peer, &holder, ttl, now)
        })
        .await?;
        let Some(lease) = got else {
            if self.lease.is_some() {
                tracing::warn!(peer = %self.peer, "delivery lease expired and was taken by another holder");
            }
            self.drop_lease();
            return Ok(Tenure::Elsewhere);
        };
        let tenure = match &self.lease {
            // Renewed; or ours expired and we took it back with the next
            // token, so nobody held it in between (every takeover adds one).
            Some(old) if old.token == lease.token || old.token.checked_add(1) == Some(lease.token) => {
                Tenure::Kept
            }
            _ => {
                // Whatever this task knew from an earlier tenure may have
                // been overtaken by another holder meanwhile.
                self.unsettled = None;
                tracing::info!(peer = %self.peer, token = lease.token, "delivery lease taken");
                Tenure::New
            }
        };
        self.lease = Some(lease);
        self.renewed_at = Some(asked);
        LEASE_HELD.with_label_values(&[&self.peer]).set(1);
        Ok(tenure)
    }

    /// Forgets the lease and everything learned under it.
    fn drop_lease(&mut self) {
        self.lease = None;
        self.renewed_at = None;
        self.unsettled = None;
        LEASE_HELD.with_label_values(&[&self.peer]).set(0);
    }

    /// Gives the lease up at shutdown, so another replica need not wait for
    /// it to expire. A failure only costs that wait.
    async fn release_lease(&mut self) {
        let Some(lease) = self.lease.take() else {
            return;
        };
        self.drop_lease();
        if let Err(e) = blocking(Arc::clone(&self.shared.store), move |s| s.release_lease(&lease)).await {
            tracing::warn!(peer = %self.peer, error = %e, "cannot release the delivery lease; it expires on its own");
        }
    }

    /// Records the answers kept in `unsettled`, if any, in one store
    /// transaction. Returns, per answer, whether it was recorded (`false`:
    /// the item had already left the outbox by another path).
    async fn settle_pending(&mut self) -> Result<Vec<bool>, TaskError> {
        let Some(u) = self.unsettled.clone() else {
            return Ok(Vec::new());
        };
        let Some(lease) = self.lease.clone() else {
            self.unsettled = None; // learned under a lost lease: the next holder resends
            return Ok(Vec::new());
        };
        let store = Arc::clone(&self.shared.store);
        let (outcomes, at) = (u.outcomes.clone(), u.at);
        let recorded = blocking(store, move |s| s.settle_batch(&lease, &outcomes, at)).await?;
        for (done, s) in recorded.iter().zip(&u.outcomes) {
            match (&s.outcome, done) {
                (SettleOutcome::DeadLettered, true) => DEAD_LETTERED.with_label_values(&[&self.peer]).inc(),
                (_, false) => tracing::warn!(peer = %self.peer, exchange = %s.exchange_id,
                    "peer answered for an exchange that already left the outbox"),
                _ => {}
            }
        }
        self.unsettled = None;
        Ok(recorded)
    }

    /// Sends what is due at the head of the outbox — as one batch when the
    /// peer takes batches and more than one item is due, else one item at a
    /// time — stopping at the first that is not due or fails.
    async fn drain_batch(&mut self) -> Result<Next, TaskError> {
        // First record answers we already have: re-reading the outbox
        // before that would send the same items again.
        self.settle_pending().await?;
        let peer = self.peer.clone();
        let limit = self.shared.batch_size.max(self.shared.peer_batch_max);
        let batch = blocking(Arc::clone(&self.shared.store), move |s| {
            s.pending_outbox(&peer, limit)
        })
        .await?;
        let Some(head) = batch.first() else {
            OUTBOX_DEPTH.with_label_values(&[&self.peer]).set(0);
            return Ok(Next::WhenWoken);
        };
        if let Some(wait) = self.wait_before(head) {
            return Ok(Next::After(wait));
        }
        if self.batching() {
            let due = self.due_prefix(&batch);
            if due > 1 {
                // As for single items below: still the holder, renewed
                // within a third of its TTL, and the batch read is current.
                if self.hold_lease().await? != Tenure::Kept {
                    return Ok(Next::Now);
                }
                return self.attempt_batch(&batch[..due]).await;
            }
        }
        for item in batch {
            if let Some(wait) = self.wait_before(&item) {
                return Ok(Next::After(wait));
            }
            // Still the holder, with a lease renewed within a third of its
            // TTL; after a takeover the batch read may be stale.
            if self.hold_lease().await? != Tenure::Kept {
                return Ok(Next::Now);
            }
            match self.attempt(&item).await? {
                Attempt::Settled => {}
                Attempt::Retry => return Ok(Next::Now),
            }
            if shutdown_requested(&self.shutdown) {
                return Ok(Next::WhenWoken);
            }
        }
        Ok(Next::Now)
    }

    /// Whether the next send may use the batch form.
    fn batching(&mut self) -> bool {
        if self.shared.peer_batch_max < 2 {
            return false;
        }
        match self.single_until {
            Some(until) if Instant::now() < until => false,
            Some(_) => {
                tracing::info!(peer = %self.peer, "trying the batch form with this peer again");
                self.single_until = None;
                true
            }
            None => true,
        }
    }

    /// How many items from the head are due now and fit one batch (count
    /// and bytes); the head itself always counts.
    fn due_prefix(&self, items: &[OutboxItem]) -> usize {
        let now = self.shared.clock.now();
        let mut bytes = 64usize;
        let mut n = 0;
        for item in items.iter().take(self.shared.peer_batch_max) {
            let size: usize = item
                .chain
                .iter()
                .map(|l| l.len().saturating_add(4))
                .sum::<usize>()
                + 160;
            if n > 0 && (item.next_attempt_at > now || bytes.saturating_add(size) > MAX_BATCH_BYTES) {
                break;
            }
            bytes = bytes.saturating_add(size);
            n += 1;
        }
        n
    }

    /// How long until `item` may be sent: its backoff and the breaker.
    fn wait_before(&mut self, item: &OutboxItem) -> Option<Duration> {
        let until_due = item.next_attempt_at - self.shared.clock.now();
        if let Ok(wait) = Duration::try_from(until_due) {
            if !wait.is_zero() {
                return Some(wait);
            }
        }
        let now = Instant::now();
        let blocked = self.breaker.blocked_until(now);
        self.publish_breaker();
        blocked.map(|until| until.saturating_duration_since(now))
    }

    /// Sends `items` (due, in acceptance order) as one batch and records
    /// every answer in one transaction.
    ///
    /// Order: answers are recorded in order up to and including the first
    /// transient one, which is rescheduled with backoff; the items after it
    /// are left untouched at the head, unsent as far as the outbox knows.
    /// (A receiver of this contract stores nothing after an envelope that
    /// failed transiently, so they cannot overtake it; a terminal answer —
    /// 409, 422 — does not hold back the rest, since it is final.)
    async fn attempt_batch(&mut self, items: &[OutboxItem]) -> Result<Next, TaskError> {
        let envelopes: Vec<Envelope> = items.iter().map(envelope).collect();
        let retries = items.iter().filter(|i| i.attempts > 0).count();
        if retries > 0 {
            RETRIES
                .with_label_values(&[&self.peer])
                .inc_by(u64::try_from(retries).unwrap_or(u64::MAX));
        }
        let send = AssertUnwindSafe(self.shared.client.send_batch(&self.peer, &envelopes)).catch_unwind();
        let sent = match tokio::time::timeout(self.shared.request_timeout, send).await {
            Err(_elapsed) => Err(SendError::Timeout),
            Ok(Err(_panic)) => Err(SendError::Protocol("peer client panicked".into())),
            Ok(Ok(answer)) => answer,
        };
        let at = self.shared.clock.now();
        let results = match sent {
            Ok(BatchAnswer::Results(results)) => results,
            Ok(BatchAnswer::Unsupported) => {
                tracing::warn!(peer = %self.peer, for_secs = SINGLE_MODE_FOR.as_secs(),
                    "peer does not take batches of envelopes; sending single envelopes");
                self.single_until = Some(Instant::now() + SINGLE_MODE_FOR);
                return Ok(Next::Now);
            }
            // The request as a whole failed: it counts against the head.
            Err(error) => {
                self.count("transient");
                self.breaker.on_failure(Instant::now());
                self.publish_breaker();
                let Some(head) = items.first() else {
                    return Ok(Next::Now);
                };
                let settlement = self.failure_settlement(head, error, at);
                self.unsettled = Some(Unsettled {
                    outcomes: vec![settlement],
                    at,
                });
                self.settle_pending().await?;
                return Ok(Next::Now);
            }
        };
        let mut outcomes = Vec::with_capacity(items.len());
        let mut transient = false;
        for (item, result) in items.iter().zip(results) {
            match result {
                Ok(PeerAnswer::Accepted) => {
                    self.count("delivered");
                    outcomes.push(settled(item, SettleOutcome::Delivered));
                }
                Ok(PeerAnswer::Rejected(problem)) => {
                    self.count("rejected");
                    tracing::warn!(peer = %self.peer, exchange = %item.exchange_id, problem = %problem, "peer rejected exchange");
                    let problem = problem.to_json();
                    outcomes.push(settled(item, SettleOutcome::Rejected { problem }));
                }
                Err(error) => {
                    self.count("transient");
                    outcomes.push(self.failure_settlement(item, error, at));
                    transient = true;
                    break;
                }
            }
        }
        if transient {
            self.breaker.on_failure(Instant::now());
        } else {
            self.breaker.on_success();
        }
        self.publish_breaker();
        self.unsettled = Some(Unsettled { outcomes, at });
        self.settle_pending().await?;
        Ok(Next::Now)
    }

    async fn attempt(&mut self, item: &OutboxItem) -> Result<Attempt, TaskError> {
        let envelope = envelope(item);
        if item.attempts > 0 {
            RETRIES.with_label_values(&[&self.peer]).inc();
        }
        // Not raced against shutdown: an in-flight send always completes
        // and its answer is recorded. A panicking client is a transient
        // failure (backed off like any other), not the end of this peer's task.
        let send = AssertUnwindSafe(self.shared.client.send(&self.peer, &envelope)).catch_unwind();
        let sent = match tokio::time::timeout(self.shared.request_timeout, send).await {
            Err(_elapsed) => Err(SendError::Timeout),
            Ok(Err(_panic)) => Err(SendError::Protocol("peer client panicked".into())),
            Ok(Ok(answer)) => answer,
        };
        let at = self.shared.clock.now();
        let settlement = match sent {
            Ok(PeerAnswer::Accepted) => {
                self.count("delivered");
                self.breaker.on_success();
                settled(item, SettleOutcome::Delivered)
            }
            Ok(PeerAnswer::Rejected(problem)) => {
                self.count("rejected");
                self.breaker.on_success();
                tracing::warn!(peer = %self.peer, exchange = %item.exchange_id, problem = %problem, "peer rejected exchange");
                let problem = problem.to_json();
                settled(item, SettleOutcome::Rejected { problem })
            }
            Err(error) => {
                self.count("transient");
                self.breaker.on_failure(Instant::now());
                self.failure_settlement(item, error, at)
            }
        };
        self.publish_breaker();
        let retry = matches!(settlement.outcome, SettleOutcome::Failed { .. });
        self.unsettled = Some(Unsettled {
            outcomes: vec![settlement],
            at,
        });
        let recorded = self.settle_pending().await?;
        // A failure recorded keeps the item at the head; one that found the
        // item gone (dead-lettered by the sweep meanwhile) moves on.
        if retry && recorded.first().copied().unwrap_or(false) {
            Ok(Attempt::Retry)
        } else {
            Ok(Attempt::Settled)
        }
    }

    /// A transient failure: schedule the next attempt, or dead-letter the
    /// item if it has been queued longer than the configured age.
    fn failure_settlement(&mut self, item: &OutboxItem, error: SendError, at: OffsetDateTime) -> Settlement {
        let id = item.exchange_id.clone();
        let queued_for = Duration::try_from(at - item.queued_at).unwrap_or_default();
        if queued_for >= self.shared.dead_letter_after {
            tracing::warn!(peer = %self.peer, exchange = %id, %error, "dead-lettering undeliverable exchange");
            return settled(item, SettleOutcome::DeadLettered);
        }
        let retry_after = match error {
            SendError::RateLimited { retry_after } => retry_after,
            _ => None,
        };
        let delay = self
            .shared
            .backoff
            .delay(item.attempts.saturating_add(1), retry_after, &mut self.rng);
        tracing::warn!(
            peer = %self.peer,
            exchange = %id,
            %error,
            attempt = item.attempts.saturating_add(1),
            ?delay,
            "delivery attempt failed"
        );
        settled(
            item,
            SettleOutcome::Failed {
                error: error.to_string(),
                next_attempt_at: at + delay,
            },
        )
    }

    fn count(&self, outcome: &str) {
        ATTEMPTS.with_label_values(&[&self.peer, outcome]).inc();
    }

    /// Publishes the breaker gauge and logs opening and closing at WARN
    /// (a failed half-open probe that re-opens it only at debug).
    fn publish_breaker(&mut self) {
        let state = self.breaker.state();
        BREAKER_STATE.with_label_values(&[&self.peer]).set(state.gauge());
        let before = std::mem::replace(&mut self.breaker_seen, state);
        match (before, state) {
            (BreakerState::Closed, BreakerState::Open { until }) => tracing::warn!(
                peer = %self.peer,
                hold = ?until.saturating_duration_since(Instant::now()),
                "circuit breaker opened: deliveries to this peer are held"
            ),
            (BreakerState::HalfOpen, BreakerState::Open { .. }) => {
                tracing::debug!(peer = %self.peer, "half-open probe failed; circuit breaker open again")
            }
            (BreakerState::Open { .. } | BreakerState::HalfOpen, BreakerState::Closed) => {
                tracing::warn!(peer = %self.peer, "circuit breaker closed: peer is answering again")
            }
            _ => {}
        }
    }
}

fn envelope(item: &OutboxItem) -> Envelope {
    Envelope {
        exchange_id: item.exchange_id.clone(),
        origin: item.origin.clone(),
        destination: item.destination.clone(),
        chain: item.chain.clone(),
    }
}

fn settled(item: &OutboxItem, outcome: SettleOutcome) -> Settlement {
    Settlement {
        exchange_id: item.exchange_id.clone(),
        outcome,
    }
}

async fn sleep_opt(duration: Option<Duration>) {
    match duration {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}
