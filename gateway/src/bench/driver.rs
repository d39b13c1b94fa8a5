//! The load generator: C concurrent credit-bank clients of the origin
//! gateway submit pre-signed credentials, while the destination credit bank
//! reads (and acknowledges) its inbox, so every exchange is timed from the
//! request to its 202 and from the 202 to its arrival in the inbox.

use super::cluster::{Cluster, DESTINATION, ORIGIN};
use super::report::Latency;
use super::BenchError;
use crate::devfed::{CreditBank, FIXTURES};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often the destination credit bank polls an empty inbox: the
/// resolution of the delivery latency. Polls are reads (no fsync).
const INBOX_POLL: Duration = Duration::from_millis(5);
/// Inbox page size (the API maximum).
const INBOX_PAGE: u32 = 500;
/// At most this many error messages are kept for the report.
const ERROR_SAMPLES: usize = 10;

/// One bounded load run.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    /// Credentials to submit (all pre-signed before the clock starts).
    pub count: usize,
    pub clients: usize,
    /// Stop submitting after this long even if credentials are left.
    pub max_submit: Duration,
    /// Open-loop pacing: start request i at `i / rate` seconds; `None`
    /// submits as fast as the clients' answers come back (closed loop).
    pub rate: Option<f64>,
    /// Give up waiting for deliveries this long after the last 202.
    pub delivery_timeout: Duration,
}

/// What one load run measured.
#[derive(Debug, Clone)]
pub struct LoadResult {
    pub clients: usize,
    pub submitted: usize,
    pub accepted: usize,
    pub delivered: usize,
    pub errors: usize,
    pub error_samples: Vec<String>,
    /// First request to last 202.
    pub submit_window: Duration,
    /// First request to last delivery into the inbox.
    pub e2e_window: Duration,
    pub accept_latency: Latency,
    pub delivery_latency: Latency,
}

impl LoadResult {
    pub fn accepted_per_sec(&self) -> f64 {
        per_sec(self.accepted, self.submit_window)
    }
    pub fn delivered_per_sec(&self) -> f64 {
        per_sec(self.delivered, self.e2e_window)
    }
}

fn per_sec(n: usize, window: Duration) -> f64 {
    if window.is_zero() {
        0.0
    } else {
        n as f64 / window.as_secs_f64()
    }
}

/// Signs `count` origin credentials with the credit bank's key, each for a
/// distinct learner. Done before timing so client-side signing is not measured.
pub fn presign(bank: &CreditBank, count: usize, run: &str) -> Result<Vec<String>, BenchError> {
    let fixtures: Vec<_> = FIXTURES.iter().filter(|f| f.member == ORIGIN).collect();
    let mut out = Vec::with_capacity(count);
    for n in 0..count {
        let fixture = fixtures
            .get(n % fixtures.len().max(1))
            .ok_or_else(|| BenchError::Setup(format!("no fixture records for {ORIGIN}")))?;
        let mut subject = fixture
            .subject()
            .map_err(|e| BenchError::Setup(format!("fixture {}: {e}", fixture.name)))?;
        subject["id"] = Value::String(format!("urn:bashu:learner:{ORIGIN}:bench-{run}-{n:06}"));
        out.push(bank.issue(subject)?);
    }
    Ok(out)
}

/// Per-client outcome, merged after the run.
#[derive(Default)]
struct ClientLog {
    submitted: usize,
    accepted: Vec<(String, Instant)>,
    latencies: Vec<Duration>,
    errors: Vec<String>,
    error_count: usize,
}

/// Runs `spec` against `cluster` with `credentials` (at least `spec.count`).
/// `inbox_cursor` carries the destination's acknowledged position across runs.
pub async fn run(
    cluster: &Cluster,
    spec: &LoadSpec,
    credentials: Vec<String>,
    inbox_cursor: &mut Option<u64>,
) -> Result<LoadResult, BenchError> {
    let clients = spec.clients.max(1);
    let mut banks = Vec::with_capacity(clients);
    for n in 0..clients {
        banks.push(cluster.origin_bank(n)?);
    }
    // Open every connection (TLS handshake) before timing: the figures are
    // steady state over kept-alive connections, as a credit bank runs.
    let warm = futures::future::join_all(banks.iter().map(|b| b.exchange("bench-warm-up"))).await;
    if let Some(Err(e)) = warm.into_iter().find(Result::is_err) {
        return Err(BenchError::Setup(format!("client connection: {e}")));
    }

    let credentials = Arc::new(credentials);
    let next = Arc::new(AtomicUsize::new(0));
    let submit_done = Arc::new(AtomicBool::new(false));
    let accepted_so_far = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let stop_at = start + spec.max_submit;
    let count = spec.count.min(credentials.len());

    let watcher = {
        let bank = cluster.credit_bank(DESTINATION)?;
        let (done, accepted) = (submit_done.clone(), accepted_so_far.clone());
        let after = *inbox_cursor;
        let timeout = spec.delivery_timeout;
        tokio::spawn(async move { watch_inbox(bank, after, done, accepted, timeout).await })
    };

    let mut tasks = Vec::with_capacity(clients);
    for bank in banks {
        let (credentials, next, accepted) = (credentials.clone(), next.clone(), accepted_so_far.clone());
        let rate = spec.rate;
        tasks.push(tokio::spawn(async move {
            let mut log = ClientLog::default();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count || Instant::now() >= stop_at {
                    break;
                }
                // Paced runs time each request from when it was due, not from
                // when a client got round to it: a stall that delays later
                // requests counts against their latency (no coordinated omission).
                let due = rate
                    .filter(|r| *r > 0.0)
                    .map(|r| start + Duration::from_secs_f64(i as f64 / r));
                if let Some(due) = due {
                    tokio::time::sleep_until(due.into()).await;
                }
                let Some(credential) = credentials.get(i) else {
                    break;
                };
                log.submitted += 1;
                let t0 = due.unwrap_or_else(Instant::now);
                match bank.submit(credential, DESTINATION).await {
                    Ok(a) if a.status.as_u16() == 202 => {
                        let now = Instant::now();
                        log.latencies.push(now - t0);
                        match a.exchange_id() {
                            Some(id) => {
                                log.accepted.push((id.to_owned(), now));
                                accepted.fetch_add(1, Ordering::Relaxed);
                            }
                            None => log.error("202 without exchangeId".into()),
                        }
                    }
                    Ok(a) => log.error(format!("HTTP {}: {}", a.status, a.body)),
                    Err(e) => log.error(e.to_string()),
                }
            }
            log
        }));
    }

    let mut logs = Vec::with_capacity(tasks.len());
    for t in tasks {
        logs.push(
            t.await
                .map_err(|e| BenchError::Setup(format!("client task: {e}")))?,
        );
    }
    submit_done.store(true, Ordering::Release);
    let inbox = watcher
        .await
        .map_err(|e| BenchError::Setup(format!("inbox task: {e}")))??;
    *inbox_cursor = inbox.cursor.or(*inbox_cursor);

    let mut accepted_at = HashMap::new();
    let (mut latencies, mut error_samples) = (Vec::new(), Vec::new());
    let (mut submitted, mut errors) = (0, 0);
    for log in logs {
        submitted += log.submitted;
        errors += log.error_count;
        latencies.extend(log.latencies);
        accepted_at.extend(log.accepted);
        error_samples.extend(log.errors);
    }
    error_samples.truncate(ERROR_SAMPLES);
    let last_accept = accepted_at.values().max().copied().unwrap_or(start);
    let mut delivery = Vec::with_capacity(inbox.seen.len());
    let mut delivered = 0;
    for (id, at) in &inbox.seen {
        if let Some(acc) = accepted_at.get(id) {
            delivered += 1;
            delivery.push(at.saturating_duration_since(*acc));
        }
    }
    let undelivered = accepted_at.len().saturating_sub(delivered);
    if undelivered > 0 {
        errors += undelivered;
        error_samples.push(format!(
            "{undelivered} accepted exchanges not in the inbox within {:?}",
            spec.delivery_timeout
        ));
    }
    let last_delivery = inbox.seen.values().max().copied().unwrap_or(start);
    Ok(LoadResult {
        clients,
        submitted,
        accepted: accepted_at.len(),
        delivered,
        errors,
        error_samples,
        submit_window: last_accept - start,
        e2e_window: last_delivery.saturating_duration_since(start),
        accept_latency: Latency::of(&mut latencies),
        delivery_latency: Latency::of(&mut delivery),
    })
}

impl ClientLog {
    fn error(&mut self, message: String) {
        self.error_count += 1;
        if self.errors.len() < ERROR_SAMPLES {
            self.errors.push(message);
        }
    }
}

/// Exchange ids that arrived in the destination inbox, with arrival times.
struct InboxSeen {
    seen: HashMap<String, Instant>,
    cursor: Option<u64>,
}

/// Reads the destination inbox until every accepted exchange has arrived
/// (after submission ended) or `timeout` passes, then acknowledges once.
/// Acknowledging every page would put one more fsync'd write per poll on
/// the receiving gateway's single writer, competing with the deliveries
/// being measured; a credit bank acks in batches too.
async fn watch_inbox(
    bank: CreditBank,
    mut after: Option<u64>,
    done: Arc<AtomicBool>,
    accepted: Arc<AtomicUsize>,
    timeout: Duration,
) -> Result<InboxSeen, BenchError> {
    let mut seen = HashMap::new();
    let mut done_at: Option<Instant> = None;
    loop {
        let entries = bank.inbox_entries(after, INBOX_PAGE).await?;
        let now = Instant::now();
        for entry in &entries {
            seen.entry(entry.exchange_id.clone()).or_insert(now);
        }
        if let Some(last) = entries.last() {
            after = Some(last.cursor);
        }
        if done.load(Ordering::Acquire) {
            let since = *done_at.get_or_insert_with(Instant::now);
            if seen.len() >= accepted.load(Ordering::Relaxed) || since.elapsed() >= timeout {
                if let Some(cursor) = after {
                    bank.ack(cursor).await?;
                }
                return Ok(InboxSeen { seen, cursor: after });
            }
        }
        if entries.is_empty() {
            tokio::time::sleep(INBOX_POLL).await;
        }
    }
}
