//! The delivery worker: a supervisor plus one task per destination.
//!
//! The supervisor learns destinations from the configured peers and from
//! the outbox, wakes peer tasks when the pipeline signals new work, keeps
//! the outbox-depth gauges current, and restarts a peer task that died.
//! Each peer task drains its destination head-of-line: it never sends an
//! item before every earlier one has settled.

use super::backoff::Backoff;
use super::breaker::CircuitBreaker;
use super::metrics::{ATTEMPTS, BREAKER_STATE, DEAD_LETTERED, OUTBOX_DEPTH, RETRIES};
use super::{Clock, PeerAnswer, PeerClient, SendError};
use crate::config::DeliveryConfig;
use crate::pipeline::Envelope;
use crate::store::{blocking, OutboxItem, Store, StoreError};
use futures::FutureExt;
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::collections::{BTreeSet, HashMap};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Notify};
use tokio::task::{Id, JoinSet};
use tokio::time::Instant;

/// How often the supervisor rescans the outbox without being notified: a
/// safety net for writes it was not told about (another process, a lost
/// notification), not the normal path.
const SWEEP_INTERVAL: Duration = Duration::from_secs(30);

/// Pause after a store failure before a peer task tries again.
const STORE_RETRY_DELAY: Duration = Duration::from_secs(1);

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
    dead_letter_after: Duration,
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
            dead_letter_after: Duration::from_secs(config.dead_letter_after_secs),
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
        loop {
            supervisor.sweep().await;
            tokio::select! {
                () = self.notify.notified() => {}
                () = tokio::time::sleep(SWEEP_INTERVAL) => {}
                Some(ended) = supervisor.tasks.join_next_with_id() => supervisor.task_ended(ended),
                () = shutdown_signalled(&mut shutdown) => break,
            }
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
            rng: StdRng::from_entropy(),
            shared: Arc::clone(&self.shared),
            peer: peer.clone(),
            wake: Arc::clone(&wake),
            shutdown: self.shutdown.clone(),
        };
        let handle = self.tasks.spawn(task.run());
        self.task_peers.insert(handle.id(), peer.clone());
        self.wakers.insert(peer, wake);
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

/// What a single delivery attempt led to.
enum Attempt {
    /// The item left the outbox (delivered, rejected or dead-lettered):
    /// the next item may go.
    Settled,
    /// The item stays at the head, waiting for its next attempt.
    Retry,
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
    rng: StdRng,
}

impl PeerTask {
    async fn run(mut self) {
        while !shutdown_requested(&self.shutdown) {
            let pause = match self.drain_batch().await {
                Ok(Next::Now) => continue,
                Ok(Next::After(wait)) => Some(wait),
                Ok(Next::WhenWoken) => None,
                Err(e) => {
                    tracing::error!(peer = %self.peer, error = %e, "delivery store failure");
                    Some(STORE_RETRY_DELAY)
                }
            };
            // Wait for the head to become due, for new work, or to stop.
            // New work never jumps the queue: it only makes us look again.
            let mut shutdown = self.shutdown.clone();
            tokio::select! {
                () = self.wake.notified() => {}
                () = sleep_opt(pause) => {}
                () = shutdown_signalled(&mut shutdown) => return,
            }
        }
    }

    /// Sends the due items of one batch, in order, stopping at the first
    /// that is not due or fails.
    async fn drain_batch(&mut self) -> Result<Next, TaskError> {
        let (peer, limit) = (self.peer.clone(), self.shared.batch_size);
        let batch = blocking(Arc::clone(&self.shared.store), move |s| {
            s.pending_outbox(&peer, limit)
        })
        .await?;
        if batch.is_empty() {
            OUTBOX_DEPTH.with_label_values(&[&self.peer]).set(0);
            return Ok(Next::WhenWoken);
        }
        for item in batch {
            if let Some(wait) = self.wait_before(&item) {
                return Ok(Next::After(wait));
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

    async fn attempt(&mut self, item: &OutboxItem) -> Result<Attempt, TaskError> {
        let envelope = Envelope {
            exchange_id: item.exchange_id.clone(),
            origin: item.origin.clone(),
            destination: item.destination.clone(),
            chain: item.chain.clone(),
        };
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
        let id = item.exchange_id.clone();
        let store = Arc::clone(&self.shared.store);
        let outcome = match sent {
            Ok(PeerAnswer::Accepted) => {
                self.count("delivered");
                self.breaker.on_success();
                blocking(store, move |s| s.mark_delivered(&id, at)).await?;
                Attempt::Settled
            }
            Ok(PeerAnswer::Rejected(problem)) => {
                self.count("rejected");
                self.breaker.on_success();
                tracing::warn!(peer = %self.peer, exchange = %id, problem = %problem, "peer rejected exchange");
                let body = problem.to_json();
                blocking(store, move |s| s.mark_rejected(&id, &body, at)).await?;
                Attempt::Settled
            }
            Err(error) => {
                self.count("transient");
                self.breaker.on_failure(Instant::now());
                self.record_failure(item, error, at).await?
            }
        };
        self.publish_breaker();
        Ok(outcome)
    }

    /// A transient failure: schedule the next attempt, or dead-letter the
    /// item if it has been queued longer than the configured age.
    async fn record_failure(
        &mut self,
        item: &OutboxItem,
        error: SendError,
        at: time::OffsetDateTime,
    ) -> Result<Attempt, TaskError> {
        let id = item.exchange_id.clone();
        let store = Arc::clone(&self.shared.store);
        let queued_for = Duration::try_from(at - item.queued_at).unwrap_or_default();
        if queued_for >= self.shared.dead_letter_after {
            tracing::warn!(peer = %self.peer, exchange = %id, %error, "dead-lettering undeliverable exchange");
            DEAD_LETTERED.with_label_values(&[&self.peer]).inc();
            blocking(store, move |s| s.dead_letter(&id, at)).await?;
            return Ok(Attempt::Settled);
        }
        let retry_after = match error {
            SendError::RateLimited { retry_after } => retry_after,
            _ => None,
        };
        let delay = self
            .shared
            .backoff
            .delay(item.attempts.saturating_add(1), retry_after, &mut self.rng);
        tracing::debug!(peer = %self.peer, exchange = %id, %error, ?delay, "delivery attempt failed");
        let message = error.to_string();
        blocking(store, move |s| {
            s.record_attempt_failure(&id, &message, at, at + delay)
        })
        .await?;
        Ok(Attempt::Retry)
    }

    fn count(&self, outcome: &str) {
        ATTEMPTS.with_label_values(&[&self.peer, outcome]).inc();
    }

    fn publish_breaker(&self) {
        BREAKER_STATE
            .with_label_values(&[&self.peer])
            .set(self.breaker.state().gauge());
    }
}

async fn sleep_opt(duration: Option<Duration>) {
    match duration {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}
