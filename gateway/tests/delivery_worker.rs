//! Delivery worker against a fake peer, on a real SQLite store, in paused
//! tokio time: hours of outage and backoff run in milliseconds, and every
//! wait is on a signal (a store change or a peer call), never a sleep.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

use bashu_gateway::config::DeliveryConfig;
use bashu_gateway::delivery::metrics::{ATTEMPTS, DEAD_LETTERED, LEASE_HELD};
use bashu_gateway::delivery::{
    BatchAnswer, Clock, DeliveryWorker, PeerAnswer, PeerClient, SendError, TokioClock,
    DEAD_LETTER_SWEEP_INTERVAL, SINGLE_MODE_FOR,
};
use bashu_gateway::pipeline::Envelope;
use bashu_gateway::problem::{Problem, ProblemType};
use bashu_gateway::store::settle_one_by_one;
use bashu_gateway::store::{
    AuditReport, Exchange, ExchangeState, ExchangeStatus, ExpiredItem, InboxItem, Inserted, Lease,
    NewExchange, NewInboxItem, OutboxItem, Settlement, SqliteStore, Store, StoreError, StoreFault,
};
use futures::future::BoxFuture;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use time::macros::datetime;
use time::OffsetDateTime;
use tokio::sync::{watch, Notify, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Upper bound on any wait, in paused (virtual) time: a stalled worker
/// fails the test at once instead of hanging it.
const PATIENCE: Duration = Duration::from_secs(30 * 24 * 3600);

// --- a store that announces its changes ----------------------------------

/// Delegates to SQLite and bumps a counter after every successful write,
/// so tests can wait for a condition on the store without polling.
struct Observed {
    inner: SqliteStore,
    changes: watch::Sender<u64>,
    /// The next this many `mark_delivered` calls fail as a full disk would.
    fail_settles: AtomicU32,
    /// Every `mark_delivered` call, failed or not, in virtual time.
    settle_calls: Mutex<Vec<Instant>>,
    /// The size of every batch settlement committed (one transaction each).
    settled_batches: Mutex<Vec<usize>>,
}

impl Observed {
    fn changed<T>(&self, r: Result<T, StoreError>) -> Result<T, StoreError> {
        if r.is_ok() {
            self.changes.send_modify(|n| *n += 1);
        }
        r
    }
}

impl Store for Observed {
    fn insert_exchange(&self, new: NewExchange) -> Result<Inserted<Exchange>, StoreError> {
        self.changed(self.inner.insert_exchange(new))
    }
    fn find_by_credential(&self, origin: &str, credential_id: &str) -> Result<Option<Exchange>, StoreError> {
        self.inner.find_by_credential(origin, credential_id)
    }
    fn exchange(&self, exchange_id: &str) -> Result<Option<Exchange>, StoreError> {
        self.inner.exchange(exchange_id)
    }
    fn list_exchanges(
        &self,
        status: Option<ExchangeStatus>,
        limit: u32,
    ) -> Result<Vec<Exchange>, StoreError> {
        self.inner.list_exchanges(status, limit)
    }
    fn pending_outbox(&self, destination: &str, limit: usize) -> Result<Vec<OutboxItem>, StoreError> {
        self.inner.pending_outbox(destination, limit)
    }
    fn outbox_depths(&self) -> Result<BTreeMap<String, u64>, StoreError> {
        self.inner.outbox_depths()
    }
    fn record_attempt_failure(
        &self,
        lease: &Lease,
        exchange_id: &str,
        error: &str,
        at: OffsetDateTime,
        next_attempt_at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        self.changed(
            self.inner
                .record_attempt_failure(lease, exchange_id, error, at, next_attempt_at),
        )
    }
    fn mark_delivered(&self, lease: &Lease, exchange_id: &str, at: OffsetDateTime) -> Result<(), StoreError> {
        self.settle_calls.lock().unwrap().push(Instant::now());
        let failing = self
            .fail_settles
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if failing {
            let err = StoreError::Fault {
                path: "bashu.db".into(),
                fault: StoreFault::DiskFull,
                detail: "database or disk is full".into(),
            };
            // Announce the failure too, so a test can wait for a count.
            self.changes.send_modify(|n| *n += 1);
            return Err(err);
        }
        self.changed(self.inner.mark_delivered(lease, exchange_id, at))
    }
    fn mark_rejected(
        &self,
        lease: &Lease,
        exchange_id: &str,
        problem: &Value,
        at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        self.changed(self.inner.mark_rejected(lease, exchange_id, problem, at))
    }
    fn dead_letter(&self, lease: &Lease, exchange_id: &str, at: OffsetDateTime) -> Result<(), StoreError> {
        self.changed(self.inner.dead_letter(lease, exchange_id, at))
    }
    fn acquire_lease(
        &self,
        destination: &str,
        holder: &str,
        ttl: Duration,
        now: OffsetDateTime,
    ) -> Result<Option<Lease>, StoreError> {
        // Not announced: renewals are not changes a test waits for.
        self.inner.acquire_lease(destination, holder, ttl, now)
    }
    fn release_lease(&self, lease: &Lease) -> Result<(), StoreError> {
        self.inner.release_lease(lease)
    }
    fn settle_batch(
        &self,
        lease: &Lease,
        outcomes: &[Settlement],
        at: OffsetDateTime,
    ) -> Result<Vec<bool>, StoreError> {
        // Batches of more than one go to SQLite's one-transaction path;
        // single settlements keep going through `mark_delivered` & co., so
        // the fault injection above applies to them.
        if outcomes.len() < 2 {
            return settle_one_by_one(self, lease, outcomes, at);
        }
        let r = self.inner.settle_batch(lease, outcomes, at);
        if r.is_ok() {
            self.settled_batches.lock().unwrap().push(outcomes.len());
        }
        self.changed(r)
    }
    fn dead_letter_expired(
        &self,
        queued_before: OffsetDateTime,
        at: OffsetDateTime,
    ) -> Result<Vec<ExpiredItem>, StoreError> {
        let r = self.inner.dead_letter_expired(queued_before, at);
        match &r {
            Ok(items) if items.is_empty() => r,
            _ => self.changed(r),
        }
    }
    fn retry(&self, exchange_id: &str, at: OffsetDateTime) -> Result<Exchange, StoreError> {
        self.changed(self.inner.retry(exchange_id, at))
    }
    fn redeliver(
        &self,
        destination: &str,
        since: OffsetDateTime,
        at: OffsetDateTime,
    ) -> Result<u64, StoreError> {
        self.changed(self.inner.redeliver(destination, since, at))
    }
    fn insert_inbox(&self, new: NewInboxItem) -> Result<Inserted<InboxItem>, StoreError> {
        self.changed(self.inner.insert_inbox(new))
    }
    fn inbox_by_exchange(&self, exchange_id: &str) -> Result<Option<InboxItem>, StoreError> {
        self.inner.inbox_by_exchange(exchange_id)
    }
    fn inbox_page(&self, after: Option<u64>, limit: u32) -> Result<Vec<InboxItem>, StoreError> {
        self.inner.inbox_page(after, limit)
    }
    fn ack(&self, up_to: u64, at: OffsetDateTime) -> Result<u64, StoreError> {
        self.changed(self.inner.ack(up_to, at))
    }
    fn acked_up_to(&self) -> Result<u64, StoreError> {
        self.inner.acked_up_to()
    }
    fn raise_inbox_cursor_floor(&self, floor: u64, at: OffsetDateTime) -> Result<u64, StoreError> {
        self.changed(self.inner.raise_inbox_cursor_floor(floor, at))
    }
    fn audit_verify(&self) -> Result<AuditReport, StoreError> {
        self.inner.audit_verify()
    }
    fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping()
    }
}

// --- a fake peer gateway --------------------------------------------------

#[derive(Debug, Clone)]
struct Call {
    peer: String,
    exchange_id: String,
    at: Instant,
    answer: &'static str,
}

#[derive(Default)]
struct PeerState {
    down: HashSet<String>,
    /// Exchange ids whose next send panics inside the client (once each).
    panic_once: HashSet<String>,
    reject: HashMap<String, Problem>,
    /// Exchange ids answered with a transient problem (the peer lacks the
    /// mapping table) while listed.
    transient: HashSet<String>,
    calls: Vec<Call>,
    /// Exchange ids of every batch request, in order.
    batch_calls: Vec<Vec<String>>,
    /// Batch requests refused because the peer does not take the form.
    batch_refusals: u32,
    /// Exchange ids the peer stored, in arrival order, per peer.
    inbox: BTreeMap<String, Vec<String>>,
}

/// Answers like a peer gateway: 202 (idempotently storing the id), 422 for
/// ids told to reject, a connect error while the peer is down. With a
/// gate, every send waits for a permit first (an in-flight request).
#[derive(Default)]
struct FakePeer {
    state: Mutex<PeerState>,
    gate: Option<Semaphore>,
    sending: Notify,
    /// Takes the batch form (a v1.1 peer); otherwise only single envelopes.
    batches: bool,
}

impl FakePeer {
    fn set_down(&self, peer: &str, down: bool) {
        let mut st = self.state.lock().unwrap();
        if down {
            st.down.insert(peer.into());
        } else {
            st.down.remove(peer);
        }
    }

    fn reject(&self, exchange_id: &str, problem: Option<Problem>) {
        let mut st = self.state.lock().unwrap();
        match problem {
            Some(p) => st.reject.insert(exchange_id.into(), p),
            None => st.reject.remove(exchange_id),
        };
    }

    fn calls(&self) -> Vec<Call> {
        self.state.lock().unwrap().calls.clone()
    }

    fn calls_for(&self, peer: &str) -> Vec<Call> {
        self.calls().into_iter().filter(|c| c.peer == peer).collect()
    }

    fn inbox(&self, peer: &str) -> Vec<String> {
        self.state
            .lock()
            .unwrap()
            .inbox
            .get(peer)
            .cloned()
            .unwrap_or_default()
    }
}

impl FakePeer {
    /// Answers one envelope as the peer would, recording the call.
    fn answer(st: &mut PeerState, peer: &str, env: &Envelope) -> Result<PeerAnswer, SendError> {
        assert_eq!(env.destination, peer, "envelope sent to the wrong peer");
        let (answer, result) = if st.down.contains(peer) {
            ("down", Err(SendError::Connect("connection refused".into())))
        } else if let Some(p) = st.reject.get(&env.exchange_id) {
            ("rejected", Ok(PeerAnswer::Rejected(p.clone())))
        } else if st.transient.contains(&env.exchange_id) {
            ("transient", Err(SendError::Status { status: 422 }))
        } else {
            let inbox = st.inbox.entry(peer.to_owned()).or_default();
            if !inbox.contains(&env.exchange_id) {
                inbox.push(env.exchange_id.clone());
            }
            ("accepted", Ok(PeerAnswer::Accepted))
        };
        st.calls.push(Call {
            peer: peer.to_owned(),
            exchange_id: env.exchange_id.clone(),
            at: Instant::now(),
            answer,
        });
        result
    }
}

impl PeerClient for FakePeer {
    fn send<'a>(&'a self, peer: &'a str, env: &'a Envelope) -> BoxFuture<'a, Result<PeerAnswer, SendError>> {
        Box::pin(async move {
            self.sending.notify_one();
            if let Some(gate) = &self.gate {
                gate.acquire().await.unwrap().forget();
            }
            let mut st = self.state.lock().unwrap();
            if st.panic_once.remove(&env.exchange_id) {
                drop(st);
                panic!("fake client bug");
            }
            Self::answer(&mut st, peer, env)
        })
    }

    fn send_batch<'a>(
        &'a self,
        peer: &'a str,
        envelopes: &'a [Envelope],
    ) -> BoxFuture<'a, Result<BatchAnswer, SendError>> {
        Box::pin(async move {
            let mut st = self.state.lock().unwrap();
            if !self.batches {
                st.batch_refusals += 1;
                return Ok(BatchAnswer::Unsupported);
            }
            st.batch_calls
                .push(envelopes.iter().map(|e| e.exchange_id.clone()).collect());
            if st.down.contains(peer) {
                return Err(SendError::Connect("connection refused".into()));
            }
            // Like the real receiver: nothing is stored after a transient failure.
            let mut results = Vec::new();
            let mut blocked = false;
            for env in envelopes {
                let r = if blocked {
                    Err(SendError::Status { status: 503 })
                } else {
                    Self::answer(&mut st, peer, env)
                };
                blocked |= r.is_err();
                results.push(r);
            }
            Ok(BatchAnswer::Results(results))
        })
    }
}

// --- harness --------------------------------------------------------------

struct Harness {
    _dir: tempfile::TempDir,
    store: Arc<Observed>,
    peer: Arc<FakePeer>,
    clock: Arc<TokioClock>,
    notify: Arc<Notify>,
    shutdown: watch::Sender<bool>,
    worker: JoinHandle<()>,
    next: u32,
}

/// The defaults with an hour-long lease: the lease tests below exercise
/// renewal and takeover; elsewhere, renewals every third of a 5 s TTL
/// would only add thousands of store writes to hour-long virtual waits.
fn base_config() -> DeliveryConfig {
    DeliveryConfig {
        lease_ttl_ms: 3_600_000,
        ..DeliveryConfig::default()
    }
}

fn config(initial_ms: u64, max_ms: u64) -> DeliveryConfig {
    DeliveryConfig {
        initial_backoff_ms: initial_ms,
        max_backoff_ms: max_ms,
        ..base_config()
    }
}

impl Harness {
    fn start(config: DeliveryConfig, configured_peers: &[&str]) -> Self {
        Self::start_with(config, configured_peers, FakePeer::default())
    }

    fn start_with(config: DeliveryConfig, configured_peers: &[&str], peer: FakePeer) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Observed {
            inner: SqliteStore::open(&dir.path().join("bashu.db")).unwrap(),
            changes: watch::Sender::new(0),
            fail_settles: AtomicU32::new(0),
            settle_calls: Mutex::new(Vec::new()),
            settled_batches: Mutex::new(Vec::new()),
        });
        let peer = Arc::new(peer);
        let clock = Arc::new(TokioClock::new(datetime!(2026-11-25 03:00 UTC)));
        let worker = DeliveryWorker::new(store.clone(), peer.clone(), config, clock.clone())
            .with_peers(configured_peers.iter().copied());
        let notify = worker.notifier();
        let (shutdown, rx) = watch::channel(false);
        let worker = tokio::spawn(worker.run(rx));
        Self {
            _dir: dir,
            store,
            peer,
            clock,
            notify,
            shutdown,
            worker,
            next: 0,
        }
    }

    /// Starts another worker on the same store, peer and clock, asking for
    /// leases as `holder`: a second replica of the gateway.
    fn replica(&self, config: DeliveryConfig, holder: &str, peers: &[&str]) -> Replica {
        let worker = DeliveryWorker::new(self.store.clone(), self.peer.clone(), config, self.clock.clone())
            .with_peers(peers.iter().copied())
            .with_holder(holder);
        let (shutdown, rx) = watch::channel(false);
        Replica {
            shutdown,
            worker: tokio::spawn(worker.run(rx)),
        }
    }

    /// The holder of `destination`'s lease as stored (read with SQL).
    fn lease_holder(&self, destination: &str) -> Option<String> {
        let raw = rusqlite::Connection::open(self._dir.path().join("bashu.db")).unwrap();
        raw.query_row(
            "SELECT holder FROM delivery_leases WHERE destination = ?1",
            [destination],
            |r| r.get(0),
        )
        .ok()
    }

    /// Stores `count` exchanges for `destination` as the pipeline would and
    /// signals the worker; returns their ids in acceptance order.
    fn accept(&mut self, destination: &str, count: u32) -> Vec<String> {
        let ids: Vec<String> = (0..count)
            .map(|_| {
                self.next += 1;
                let n = self.next;
                let new = NewExchange {
                    exchange_id: format!("{destination}-{n:04}"),
                    credential_id: format!("cred-{n}"),
                    credential_digest: format!("{n:064x}"),
                    origin: "cq".into(),
                    destination: destination.into(),
                    chain: vec![format!("orig-{n}"), format!("wfs-{n}")],
                    accepted_at: self.clock.now(),
                };
                let id = new.exchange_id.clone();
                assert!(self.store.insert_exchange(new).unwrap().is_created());
                id
            })
            .collect();
        self.notify.notify_one();
        ids
    }

    /// [`accept`](Self::accept) from eight threads at once, so the store's
    /// group commit shares their fsyncs; ids in acceptance order.
    fn accept_concurrently(&mut self, destination: &str, count: u32) -> Vec<String> {
        const THREADS: u32 = 8;
        let (first, at) = (self.next + 1, self.clock.now());
        self.next += count;
        let store = &self.store;
        std::thread::scope(|scope| {
            for t in 0..THREADS {
                scope.spawn(move || {
                    for n in (first..first + count).filter(|n| n % THREADS == t) {
                        let new = NewExchange {
                            exchange_id: format!("{destination}-{n:04}"),
                            credential_id: format!("cred-{n}"),
                            credential_digest: format!("{n:064x}"),
                            origin: "cq".into(),
                            destination: destination.into(),
                            chain: vec![format!("orig-{n}"), format!("wfs-{n}")],
                            accepted_at: at,
                        };
                        assert!(store.insert_exchange(new).unwrap().is_created());
                    }
                });
            }
        });
        self.notify.notify_one();
        let ids: Vec<String> = self
            .store
            .list_exchanges(None, u32::MAX)
            .unwrap()
            .into_iter()
            .filter(|e| e.destination == destination)
            .map(|e| e.exchange_id)
            .collect();
        assert_eq!(ids.len(), count as usize);
        ids
    }

    fn exchange(&self, id: &str) -> Exchange {
        self.store.exchange(id).unwrap().unwrap()
    }

    fn status(&self, id: &str) -> ExchangeStatus {
        self.exchange(id).status()
    }

    /// Waits until `pred` holds, re-checking after every store change.
    async fn until(&self, what: &str, pred: impl Fn(&Self) -> bool) {
        let mut changes = self.store.changes.subscribe();
        let wait = async {
            while !pred(self) {
                changes.changed().await.unwrap();
            }
        };
        tokio::time::timeout(PATIENCE, wait)
            .await
            .unwrap_or_else(|_| panic!("gave up waiting until {what}"));
    }

    /// Requests shutdown and waits for the worker to return.
    async fn stop(self) -> Self {
        self.shutdown.send_replace(true);
        let worker = self.worker;
        tokio::time::timeout(PATIENCE, worker).await.unwrap().unwrap();
        Self {
            worker: tokio::spawn(async {}),
            ..self
        }
    }
}

struct Replica {
    shutdown: watch::Sender<bool>,
    worker: JoinHandle<()>,
}

impl Replica {
    async fn stop(self) {
        self.shutdown.send_replace(true);
        tokio::time::timeout(PATIENCE, self.worker)
            .await
            .unwrap()
            .unwrap();
    }
}

/// Waits (bounded) for a metric the worker updates just after the store
/// change a test waited for; there is no signal for the metric itself.
async fn counted(value: impl Fn() -> u64, expected: u64) {
    for _ in 0..1000 {
        if value() == expected {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert_eq!(value(), expected);
}

fn all_have(h: &Harness, ids: &[String], status: ExchangeStatus) -> bool {
    ids.iter().all(|id| h.status(id) == status)
}

fn ids_of(calls: &[Call]) -> Vec<String> {
    calls.iter().map(|c| c.exchange_id.clone()).collect()
}

// --- tests ----------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn delivers_in_acceptance_order_to_configured_and_discovered_peers() {
    let mut h = Harness::start(config(100, 1000), &["ord1"]);
    let mut ord1 = Vec::new();
    let mut ord2 = Vec::new();
    for _ in 0..10 {
        ord1.extend(h.accept("ord1", 2));
        ord2.extend(h.accept("ord2", 1)); // not configured: found in the outbox
    }
    h.until("all delivered", |h| {
        all_have(h, &ord1, ExchangeStatus::Delivered) && all_have(h, &ord2, ExchangeStatus::Delivered)
    })
    .await;

    assert_eq!(h.peer.inbox("ord1"), ord1);
    assert_eq!(h.peer.inbox("ord2"), ord2);
    assert_eq!(h.peer.calls().len(), 30, "one call per exchange");
    assert!(h.store.outbox_depths().unwrap().is_empty());
    let ex = h.exchange(&ord1[0]);
    assert_eq!(ex.attempts, 1);
    assert!(matches!(ex.state, ExchangeState::Delivered { .. }));
    assert_eq!(ATTEMPTS.with_label_values(&["ord1", "delivered"]).get(), 20);
    assert_eq!(ATTEMPTS.with_label_values(&["ord2", "delivered"]).get(), 10);
    h.store.audit_verify().unwrap();
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn outage_of_hours_drains_in_acceptance_order_exactly_once() {
    let mut h = Harness::start(config(200, 30_000), &["out"]);
    h.peer.set_down("out", true);
    let started = Instant::now();
    let mut ids = h.accept("out", 40);
    // Keep the peer down for more than two hours of (virtual) time.
    h.until("the head has failed 500 times", |h| {
        h.exchange(&ids[0]).attempts >= 500
    })
    .await;
    assert!(
        started.elapsed() > Duration::from_secs(2 * 3600),
        "backoff must space the attempts"
    );
    ids.extend(h.accept("out", 10)); // accepted during the outage

    // Head-of-line: nothing behind the head was tried during the outage.
    let calls = h.peer.calls_for("out");
    assert!(
        calls.iter().all(|c| c.exchange_id == ids[0]),
        "only the head may be attempted"
    );
    assert_eq!(h.status(&ids[0]), ExchangeStatus::Forwarded);
    assert_eq!(h.status(&ids[1]), ExchangeStatus::Accepted);
    assert_eq!(
        h.exchange(&ids[0]).last_error.as_deref(),
        Some("cannot connect to peer: connection refused")
    );

    h.peer.set_down("out", false);
    h.until("all delivered", |h| all_have(h, &ids, ExchangeStatus::Delivered))
        .await;
    assert_eq!(h.peer.inbox("out"), ids, "drained in acceptance order");
    let accepted: Vec<String> = ids_of(
        &h.peer
            .calls_for("out")
            .into_iter()
            .filter(|c| c.answer == "accepted")
            .collect::<Vec<_>>(),
    );
    assert_eq!(accepted, ids, "each exchange answered 202 exactly once");
    h.store.audit_verify().unwrap();
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn rejection_is_terminal_then_operator_retry_redelivers() {
    let mut h = Harness::start(config(100, 1000), &["rej"]);
    let problem =
        Problem::new(ProblemType::ChainBroken, "interchange digest mismatch").with_exchange("rej-0002");
    h.peer.reject("rej-0002", Some(problem.clone()));
    let ids = h.accept("rej", 4);
    h.until("settled", |h| {
        ids.iter()
            .all(|id| matches!(h.status(id), ExchangeStatus::Delivered | ExchangeStatus::Rejected))
    })
    .await;

    let rejected = h.exchange(&ids[1]);
    assert_eq!(rejected.status(), ExchangeStatus::Rejected);
    assert_eq!(rejected.problem(), Some(&problem.to_json()));
    assert_eq!(rejected.attempts, 1);
    assert_eq!(
        h.peer.inbox("rej"),
        [ids[0].clone(), ids[2].clone(), ids[3].clone()]
    );
    assert_eq!(
        ids_of(&h.peer.calls_for("rej")),
        ids,
        "the rejected item is not retried"
    );

    // The operator fixes the cause and retries; the worker is told.
    h.peer.reject("rej-0002", None);
    assert_eq!(
        h.store.retry(&ids[1], h.clock.now()).unwrap().status(),
        ExchangeStatus::Accepted
    );
    h.notify.notify_one();
    h.until("retried item delivered", |h| {
        h.status(&ids[1]) == ExchangeStatus::Delivered
    })
    .await;
    assert_eq!(h.exchange(&ids[1]).problem(), None);
    assert_eq!(h.peer.inbox("rej").last(), Some(&ids[1]));
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn breaker_opens_after_threshold_and_probes_once_per_open_period() {
    let cfg = DeliveryConfig {
        breaker_failure_threshold: 3,
        breaker_open_ms: 60_000,
        ..config(10, 20)
    };
    let mut h = Harness::start(cfg, &["brk", "brk-ok"]);
    h.peer.set_down("brk", true);
    let head = h.accept("brk", 2)[0].clone();
    h.until("five failed attempts", |h| h.exchange(&head).attempts >= 5)
        .await;

    // While `brk` is failing, another peer is unaffected.
    let ok = h.accept("brk-ok", 1);
    h.until("other peer delivered", |h| {
        all_have(h, &ok, ExchangeStatus::Delivered)
    })
    .await;

    let at: Vec<Instant> = h.peer.calls_for("brk").iter().map(|c| c.at).collect();
    let gap = |i: usize| at[i] - at[i - 1];
    // Attempts 1-3 follow the (short) backoff; then the breaker holds
    // every further attempt for a full open period: one half-open probe each.
    assert!(gap(1) < Duration::from_secs(1) && gap(2) < Duration::from_secs(1));
    assert!(gap(3) >= Duration::from_secs(60), "{:?}", gap(3));
    assert!(gap(4) >= Duration::from_secs(60), "{:?}", gap(4));

    h.peer.set_down("brk", false);
    h.until("head delivered", |h| h.status(&head) == ExchangeStatus::Delivered)
        .await;
    let head_calls = h
        .peer
        .calls_for("brk")
        .iter()
        .filter(|c| c.exchange_id == head)
        .count();
    assert_eq!(
        h.exchange(&head).attempts as usize,
        head_calls,
        "every call counted once"
    );
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn dead_letters_after_the_configured_age_and_retry_redelivers() {
    let cfg = DeliveryConfig {
        dead_letter_after_secs: 3600,
        ..config(1000, 600_000)
    };
    let mut h = Harness::start(cfg, &["dl"]);
    h.peer.set_down("dl", true);
    let accepted_at = h.clock.now();
    let ids = h.accept("dl", 2);
    h.until("both dead-lettered", |h| {
        all_have(h, &ids, ExchangeStatus::DeadLettered)
    })
    .await;

    let head = h.exchange(&ids[0]);
    let ExchangeState::DeadLettered { at } = head.state else {
        panic!("not dead-lettered: {head:?}")
    };
    assert!(at - accepted_at >= time::Duration::hours(1));
    assert!(head.attempts > 1);
    // The second item was never attempted (head-of-line), yet expired by
    // age together with the head.
    let calls = ids_of(&h.peer.calls_for("dl"));
    assert!(calls.iter().all(|c| c == &ids[0]), "only the head was attempted");
    let second = h.exchange(&ids[1]);
    assert_eq!(second.attempts, 0);
    let ExchangeState::DeadLettered { at: second_at } = second.state else {
        panic!("not dead-lettered: {second:?}")
    };
    let sweep = time::Duration::try_from(DEAD_LETTER_SWEEP_INTERVAL).unwrap();
    assert!(second_at - accepted_at <= time::Duration::hours(1) + sweep);
    counted(|| DEAD_LETTERED.with_label_values(&["dl"]).get(), 2).await;

    // Operator retry after the outage: a fresh delivery window.
    h.peer.set_down("dl", false);
    for id in &ids {
        h.store.retry(id, h.clock.now()).unwrap();
    }
    h.notify.notify_one();
    h.until("redelivered", |h| all_have(h, &ids, ExchangeStatus::Delivered))
        .await;
    assert_eq!(h.peer.inbox("dl"), ids);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn shutdown_finishes_the_in_flight_send_and_sends_nothing_more() {
    let peer = FakePeer {
        gate: Some(Semaphore::new(0)),
        ..FakePeer::default()
    };
    let mut h = Harness::start_with(config(100, 1000), &["sd"], peer);
    let ids = h.accept("sd", 3);
    h.peer.sending.notified().await;

    h.shutdown.send_replace(true);
    h.peer.gate.as_ref().unwrap().add_permits(10);
    let h = h.stop().await;
    assert_eq!(
        h.status(&ids[0]),
        ExchangeStatus::Delivered,
        "in-flight answer recorded"
    );
    assert_eq!(h.status(&ids[1]), ExchangeStatus::Accepted);
    assert_eq!(h.peer.calls().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn shutdown_does_not_wait_for_a_pending_backoff() {
    let mut h = Harness::start(config(3_600_000, 3_600_000), &["sb"]);
    h.peer.set_down("sb", true);
    let ids = h.accept("sb", 1);
    h.until("first attempt failed", |h| {
        h.status(&ids[0]) == ExchangeStatus::Forwarded
    })
    .await;
    let asked = Instant::now();
    let h = h.stop().await;
    assert!(
        asked.elapsed() < Duration::from_secs(1),
        "stopped without waiting an hour"
    );
    assert_eq!(h.peer.calls().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_panicking_client_is_a_transient_failure() {
    let mut h = Harness::start(config(100, 1000), &["pan"]);
    h.peer.state.lock().unwrap().panic_once.insert("pan-0001".into());
    let ids = h.accept("pan", 2);
    h.until("all delivered", |h| all_have(h, &ids, ExchangeStatus::Delivered))
        .await;
    let head = h.exchange(&ids[0]);
    assert_eq!(head.attempts, 2);
    assert_eq!(
        head.last_error.as_deref(),
        Some("invalid answer from peer: peer client panicked")
    );
    assert_eq!(h.peer.inbox("pan"), ids);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_thousand_items_behind_a_dead_peer_expire_within_one_sweep_interval() {
    let limit = Duration::from_secs(20);
    let cfg = DeliveryConfig {
        dead_letter_after_secs: limit.as_secs(),
        ..config(200, 30_000)
    };
    let mut h = Harness::start(cfg, &["dl1k"]);
    h.peer.set_down("dl1k", true);
    let accepted_at = h.clock.now();
    let started = Instant::now();
    let ids = h.accept_concurrently("dl1k", 1000);

    // Before the limit nothing expires, however long the backlog.
    h.until("the head has failed", |h| h.exchange(&ids[0]).attempts >= 1)
        .await;
    assert!(all_have(&h, &ids[1..], ExchangeStatus::Accepted));

    let deadline = limit + DEAD_LETTER_SWEEP_INTERVAL;
    tokio::time::timeout(
        deadline.saturating_sub(started.elapsed()),
        h.until("all 1000 dead-lettered", |h| {
            h.store
                .list_exchanges(Some(ExchangeStatus::DeadLettered), 2000)
                .unwrap()
                .len()
                == ids.len()
        }),
    )
    .await
    .unwrap_or_else(|_| {
        let done = h
            .store
            .list_exchanges(Some(ExchangeStatus::DeadLettered), 2000)
            .unwrap()
            .len();
        panic!("only {done} of 1000 dead-lettered within {deadline:?} after acceptance")
    });

    for id in [&ids[0], &ids[1], &ids[500], &ids[999]] {
        let ex = h.exchange(id);
        let ExchangeState::DeadLettered { at } = ex.state else {
            panic!("not dead-lettered: {ex:?}")
        };
        assert!(
            at - accepted_at >= time::Duration::seconds(20),
            "{id} expired early"
        );
        assert_eq!(ex.next_attempt_at, None, "{id} left the outbox");
    }
    assert!(h.store.outbox_depths().unwrap().is_empty());
    counted(|| DEAD_LETTERED.with_label_values(&["dl1k"]).get(), 1000).await;
    // Head-of-line held: only the head was ever sent.
    assert!(h.peer.calls_for("dl1k").iter().all(|c| c.exchange_id == ids[0]));
    // One audit entry per exchange for acceptance and for dead-lettering,
    // plus the head's failed attempts.
    let head_attempts = u64::from(h.exchange(&ids[0]).attempts);
    let report = h.store.audit_verify().unwrap();
    assert!(
        report.entries >= 2000 + head_attempts.saturating_sub(1),
        "{} audit entries",
        report.entries
    );
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_failed_settle_backs_off_and_never_resends() {
    let mut h = Harness::start(config(100, 1000), &["full"]);
    // The peer answers 202, but the store cannot record it for 12 tries.
    h.store.fail_settles.store(12, Ordering::SeqCst);
    let ids = h.accept("full", 3);
    h.until("all delivered", |h| all_have(h, &ids, ExchangeStatus::Delivered))
        .await;

    // Exactly one send per exchange: the kept answer was recorded later,
    // the envelope was not sent again.
    assert_eq!(ids_of(&h.peer.calls_for("full")), ids);
    let settles = h.store.settle_calls.lock().unwrap().clone();
    assert_eq!(
        settles.len(),
        12 + 3,
        "one settle per failure plus one per exchange"
    );
    // Backed off: the gaps between the head's failing settles grow, from
    // about a second to about a minute, instead of a fixed short retry.
    let gaps: Vec<Duration> = settles.windows(2).take(12).map(|w| w[1] - w[0]).collect();
    assert!(gaps[0] <= Duration::from_secs(1), "{gaps:?}");
    assert!(gaps[11] >= Duration::from_secs(30), "{gaps:?}");
    assert!(gaps.iter().all(|g| *g <= Duration::from_secs(60)), "{gaps:?}");
    assert_eq!(h.peer.inbox("full"), ids);
    h.store.audit_verify().unwrap();
    h.stop().await;
}

/// Collects formatted log lines from the current thread's subscriber.
#[derive(Clone, Default)]
struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn failures_and_breaker_transitions_are_logged_at_warn() {
    // The process-wide subscriber, not a thread-scoped one: tracing caches
    // per call site whether anyone listens, and the other tests of this
    // binary (running in parallel without a subscriber) would otherwise
    // race that cache. Their lines land here too; only `peer=warn` counts.
    let logs = LogBuffer::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::WARN)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    tracing::subscriber::set_global_default(subscriber).expect("only this test installs a subscriber");

    let cfg = DeliveryConfig {
        breaker_failure_threshold: 2,
        breaker_open_ms: 10_000,
        ..config(10, 20)
    };
    let mut h = Harness::start(cfg, &["warn"]);
    h.peer.set_down("warn", true);
    let ids = h.accept("warn", 1);
    h.until("three failed attempts", |h| h.exchange(&ids[0]).attempts >= 3)
        .await;
    h.peer.set_down("warn", false);
    h.until("delivered", |h| all_have(h, &ids, ExchangeStatus::Delivered))
        .await;
    h.stop().await;

    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    let warn_lines = |needle: &str| {
        text.lines()
            .filter(|l| l.contains(" WARN ") && l.contains(needle) && l.contains("peer=warn"))
            .count()
    };
    assert!(warn_lines("delivery attempt failed") >= 3, "{text}");
    assert_eq!(warn_lines("circuit breaker opened"), 1, "{text}");
    assert_eq!(warn_lines("circuit breaker closed"), 1, "{text}");
}

// --- delivery leases (SPEC §5) ----------------------------------------------

fn lease_config() -> DeliveryConfig {
    DeliveryConfig {
        lease_ttl_ms: 5_000,
        ..config(100, 1000)
    }
}

/// Two replicas on one store: one lease, so one sender; every exchange is
/// sent once, in acceptance order. Stopping the holder releases the lease
/// and the other replica continues at its next retry, well within the TTL.
#[tokio::test(start_paused = true)]
async fn replicas_deliver_through_one_lease_and_hand_over_at_shutdown() {
    let mut h = Harness::start(lease_config(), &["ha"]);
    let b = h.replica(lease_config(), "replica-b", &["ha"]);
    let ids = h.accept("ha", 30);
    h.until("all delivered", |h| all_have(h, &ids, ExchangeStatus::Delivered))
        .await;
    assert_eq!(h.peer.inbox("ha"), ids);
    assert_eq!(ids_of(&h.peer.calls_for("ha")), ids, "one sender: each sent once");
    let ttl = Duration::from_secs(5);
    assert_eq!(
        h.store
            .acquire_lease("ha", "intruder", ttl, h.clock.now())
            .unwrap(),
        None,
        "held by one of the replicas"
    );

    // Stop whichever replica holds the lease; the other takes over.
    let first = h.lease_holder("ha").unwrap();
    let mut other = None;
    let mut h = if first == "replica-b" {
        b.stop().await;
        h
    } else {
        other = Some(b);
        h.stop().await
    };
    let stopped = Instant::now();
    let more = h.accept("ha", 5);
    h.until("the rest delivered", |h| {
        all_have(h, &more, ExchangeStatus::Delivered)
    })
    .await;
    assert!(
        stopped.elapsed() < ttl,
        "released, not expired: took {:?}",
        stopped.elapsed()
    );
    let holder = h.lease_holder("ha").unwrap();
    assert_ne!(holder, first, "the other replica holds it now");
    let all: Vec<String> = ids.iter().chain(&more).cloned().collect();
    assert_eq!(h.peer.inbox("ha"), all);
    assert_eq!(ids_of(&h.peer.calls_for("ha")), all);
    h.store.audit_verify().unwrap();
    match other {
        Some(b) => b.stop().await,
        None => drop(h.stop().await),
    }
}

/// A worker stuck in a send past its lease TTL loses the lease to another
/// holder: the peer's answer is then refused by the store (fenced), the
/// worker sends nothing while the other holds the lease, and once it is
/// released the worker takes over and resends (the peer is idempotent).
#[tokio::test(start_paused = true)]
async fn a_worker_that_lost_its_lease_is_fenced_and_waits() {
    let cfg = DeliveryConfig {
        request_timeout_ms: 600_000,
        ..lease_config()
    };
    let peer = FakePeer {
        gate: Some(Semaphore::new(0)),
        ..FakePeer::default()
    };
    let mut h = Harness::start_with(cfg, &["fe"], peer);
    let ids = h.accept("fe", 2);
    h.peer.sending.notified().await; // ids[0] is in flight
    counted(|| LEASE_HELD.with_label_values(&["fe"]).get() as u64, 1).await;

    // Stuck past the TTL: another holder takes the lease over.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let intruder = h
        .store
        .acquire_lease("fe", "intruder", Duration::from_secs(3600), h.clock.now())
        .unwrap()
        .expect("the stuck worker's lease expired");
    h.peer.gate.as_ref().unwrap().add_permits(1); // the peer answers 202
    counted(|| h.store.settle_calls.lock().unwrap().len() as u64, 1).await;
    counted(|| LEASE_HELD.with_label_values(&["fe"]).get() as u64, 0).await;
    assert_eq!(
        h.status(&ids[0]),
        ExchangeStatus::Accepted,
        "the fenced settle wrote nothing"
    );
    assert_eq!(h.exchange(&ids[0]).attempts, 0);

    // While the other holder has it, the worker only asks for it.
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(h.peer.calls().len(), 1);

    h.peer.gate.as_ref().unwrap().add_permits(10);
    h.store.release_lease(&intruder).unwrap();
    h.until("all delivered", |h| all_have(h, &ids, ExchangeStatus::Delivered))
        .await;
    assert_eq!(h.peer.inbox("fe"), ids, "received once each, in order");
    assert_eq!(
        ids_of(&h.peer.calls_for("fe")),
        [ids[0].clone(), ids[0].clone(), ids[1].clone()],
        "the head was resent by the new tenure"
    );
    assert_eq!(LEASE_HELD.with_label_values(&["fe"]).get(), 1);
    h.store.audit_verify().unwrap();
    let h = h.stop().await;
    assert_eq!(
        LEASE_HELD.with_label_values(&["fe"]).get(),
        0,
        "released at shutdown"
    );
    assert!(h
        .store
        .acquire_lease("fe", "next", Duration::from_secs(5), h.clock.now())
        .unwrap()
        .is_some());
}

// --- batches (SPEC §4 batch form) ----------------------------------------

fn batch_peer() -> FakePeer {
    FakePeer {
        batches: true,
        ..FakePeer::default()
    }
}

#[tokio::test(start_paused = true)]
async fn a_backlog_goes_out_as_batches_in_order_each_settled_in_one_commit() {
    // The protocol's largest batch (the default is smaller).
    let cfg = DeliveryConfig {
        peer_batch_max: 256,
        ..config(100, 1000)
    };
    let mut h = Harness::start_with(cfg, &["bat"], batch_peer());
    h.peer.set_down("bat", true);
    let ids = h.accept("bat", 300);
    h.until("the head failed", |h| h.exchange(&ids[0]).attempts >= 1)
        .await;
    h.peer.set_down("bat", false);
    h.until("all delivered", |h| all_have(h, &ids, ExchangeStatus::Delivered))
        .await;

    assert_eq!(h.peer.inbox("bat"), ids, "inbox order is acceptance order");
    let batches = h.peer.state.lock().unwrap().batch_calls.clone();
    assert!(batches.iter().all(|b| b.len() <= 256), "at most 256 per batch");
    assert!(
        batches
            .iter()
            .all(|b| b[..] == ids[..b.len()] || b[..] == ids[256..]),
        "{batches:?}"
    );
    assert_eq!(batches.last().map(Vec::len), Some(300 - 256));
    assert!(h.peer.calls_for("bat").iter().all(|c| c.answer == "accepted"));
    // Every batch that reached the peer was settled in one commit of its size.
    let settled = h.store.settled_batches.lock().unwrap().clone();
    assert_eq!(settled, vec![256, 300 - 256], "{batches:?}");
    // Each exchange answered 202 exactly once.
    let accepted = ids_of(
        &h.peer
            .calls_for("bat")
            .into_iter()
            .filter(|c| c.answer == "accepted")
            .collect::<Vec<_>>(),
    );
    assert_eq!(accepted, ids);
    h.store.audit_verify().unwrap();
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn in_a_batch_a_rejection_settles_alone_and_a_transient_failure_stops_the_rest() {
    let mut h = Harness::start_with(config(100, 1000), &["mix"], batch_peer());
    h.peer.set_down("mix", true);
    let ids = h.accept("mix", 6);
    h.until("the head failed", |h| h.exchange(&ids[0]).attempts >= 1)
        .await;
    let problem = Problem::new(ProblemType::InvalidSignature, "bad").with_exchange(ids[1].clone());
    h.peer.reject(&ids[1], Some(problem));
    h.peer.state.lock().unwrap().transient.insert(ids[3].clone());
    h.peer.set_down("mix", false);
    h.until("0 delivered, 1 rejected, 3 retried", |h| {
        h.status(&ids[0]) == ExchangeStatus::Delivered
            && h.status(&ids[1]) == ExchangeStatus::Rejected
            && h.exchange(&ids[3]).attempts >= 2
    })
    .await;
    // Before the transient failure: settled; after it: untouched, in order.
    assert_eq!(h.status(&ids[2]), ExchangeStatus::Delivered);
    assert_eq!(h.status(&ids[4]), ExchangeStatus::Accepted);
    assert_eq!(h.status(&ids[5]), ExchangeStatus::Accepted);
    assert_eq!(h.peer.inbox("mix"), vec![ids[0].clone(), ids[2].clone()]);

    h.peer.state.lock().unwrap().transient.clear();
    h.until("all settled", |h| {
        all_have(
            h,
            &[
                ids[0].clone(),
                ids[2].clone(),
                ids[3].clone(),
                ids[4].clone(),
                ids[5].clone(),
            ],
            ExchangeStatus::Delivered,
        )
    })
    .await;
    let want: Vec<String> = [0, 2, 3, 4, 5].iter().map(|&i| ids[i].clone()).collect();
    assert_eq!(
        h.peer.inbox("mix"),
        want,
        "order kept across the transient failure"
    );
    h.store.audit_verify().unwrap();
    h.stop().await;
}

/// A v1 peer (no batch form) gets single envelopes, in order; the batch
/// form is tried again only after [`SINGLE_MODE_FOR`].
#[tokio::test(start_paused = true)]
async fn a_peer_without_the_batch_form_gets_single_envelopes_and_is_probed_again_later() {
    let mut h = Harness::start(config(100, 1000), &["v1"]);
    h.peer.set_down("v1", true);
    let ids = h.accept("v1", 5);
    h.until("the head failed", |h| h.exchange(&ids[0]).attempts >= 1)
        .await;
    h.peer.set_down("v1", false);
    h.until("all delivered", |h| all_have(h, &ids, ExchangeStatus::Delivered))
        .await;
    assert_eq!(h.peer.inbox("v1"), ids);
    let singles: Vec<String> = ids_of(
        &h.peer
            .calls_for("v1")
            .into_iter()
            .filter(|c| c.answer == "accepted")
            .collect::<Vec<_>>(),
    );
    assert_eq!(singles, ids, "one single envelope per exchange, in order");
    assert!(h.store.settled_batches.lock().unwrap().is_empty());
    assert_eq!(
        h.peer.state.lock().unwrap().batch_refusals,
        1,
        "refusal remembered"
    );

    // Virtual time: past the single-envelope period the form is tried again.
    tokio::time::sleep(SINGLE_MODE_FOR + Duration::from_secs(1)).await;
    let more = h.accept("v1", 3);
    h.until("all delivered", |h| all_have(h, &more, ExchangeStatus::Delivered))
        .await;
    assert_eq!(h.peer.state.lock().unwrap().batch_refusals, 2, "probed again");
    assert_eq!(h.peer.inbox("v1"), [ids, more].concat());
    h.stop().await;
}
