//! `kill -9` around batched delivery (SPEC v1.1 §4–§5), with real gateway
//! processes: the receiver killed while a batch is in flight, and the
//! sender killed after the receiver stored a batch but before the sender
//! recorded it. Afterwards every exchange is in the destination inbox
//! exactly once, in acceptance order.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

use bashu_e2e::{exchange_id, init_federation, subject};
use bashu_gateway::app;
use bashu_gateway::config::Config;
use bashu_gateway::devfed::CreditBank;
use bashu_gateway::devpki::{DevFederation, DevMember};
use bashu_gateway::store::{db_path, ExchangeStatus, SqliteStore, Store};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// More than one batch (256) behind a peer that is down.
const BACKLOG: usize = 400;
const SUBMITTERS: usize = 8;

/// A gateway child process, killed when dropped.
struct GatewayProcess(Child);

impl GatewayProcess {
    fn start(config: &Path) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_e2e-gateway"))
            .args(["serve", "--config"])
            .arg(config)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("listening on") {
                    let _ = tx.send(());
                }
            }
        });
        rx.recv_timeout(Duration::from_secs(60))
            .expect("gateway did not report listening");
        Self(child)
    }

    fn kill9(mut self) {
        self.0.kill().unwrap();
        self.0.wait().unwrap();
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Submits [`BACKLOG`] credentials to cq for sc from concurrent clients.
async fn submit_backlog(cq: Arc<CreditBank>) -> usize {
    let mut submitters = tokio::task::JoinSet::new();
    for s in 0..SUBMITTERS {
        let cq = Arc::clone(&cq);
        submitters.spawn(async move {
            let mut n_ok = 0;
            for n in (s..BACKLOG).step_by(SUBMITTERS) {
                let jws = cq.issue(subject("cq", n)).unwrap();
                let answer = cq.submit(&jws, "sc").await.unwrap();
                assert_eq!(answer.status.as_u16(), 202, "{}", answer.body);
                assert!(!exchange_id(&answer.body).is_empty());
                n_ok += 1;
            }
            n_ok
        });
    }
    let mut total = 0;
    while let Some(n) = submitters.join_next().await {
        total += n.unwrap();
    }
    total
}

async fn inbox_len(bank: &CreditBank) -> usize {
    bank.inbox(Some(0), 500)
        .await
        .map(|a| a.body["items"].as_array().map_or(0, Vec::len))
        .unwrap_or(0)
}

/// cq's exchanges for sc in acceptance order, and how many are delivered,
/// read from its store (the process must not be running).
fn origin_state(cq: &DevMember) -> (Vec<String>, usize) {
    let store = SqliteStore::open_existing(&db_path(&cq.data_dir)).unwrap();
    let all = store.list_exchanges(None, 10_000).unwrap();
    let delivered = all
        .iter()
        .filter(|e| e.status() == ExchangeStatus::Delivered)
        .count();
    (all.into_iter().map(|e| e.exchange_id).collect(), delivered)
}

/// The whole inbox of `bank`, oldest first, read in pages.
async fn inbox_ids(bank: &CreditBank) -> Vec<String> {
    let mut seen = Vec::new();
    let mut after = 0;
    loop {
        let page = bank.inbox(Some(after), 100).await.unwrap();
        let items = page.body["items"].as_array().unwrap().clone();
        let Some(last) = items.last() else { break };
        after = last["cursor"].as_u64().unwrap();
        for item in &items {
            assert_eq!(item["chain"].as_array().unwrap().len(), 3);
            seen.push(item["exchangeId"].as_str().unwrap().to_owned());
        }
    }
    seen
}

/// The receiver's durable state: `expected` items in this order, intact audit chain.
fn assert_receiver_store(sc: &DevMember, expected: &[String]) {
    let store = SqliteStore::open_existing(&db_path(&sc.data_dir)).unwrap();
    let ids: Vec<String> = store
        .inbox_page(Some(0), 10_000)
        .unwrap()
        .into_iter()
        .map(|i| i.exchange_id)
        .collect();
    assert_eq!(ids, expected);
    store.audit_verify().unwrap();
}

fn federation(dir: &Path) -> DevFederation {
    init_federation(dir, &["cq", "sc"]).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receiver_killed_while_a_batch_is_in_flight_loses_and_duplicates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let fed = federation(dir.path());
    let (cq_member, sc_member) = (
        fed.member("cq").unwrap().clone(),
        fed.member("sc").unwrap().clone(),
    );
    let cq_gw = app::start(Config::load(&cq_member.config).unwrap())
        .await
        .unwrap();
    let cq = Arc::new(CreditBank::new(&cq_member, &fed.ca_cert).unwrap());
    let sc = CreditBank::new(&sc_member, &fed.ca_cert).unwrap();
    // sc is down: the backlog queues at cq.
    assert_eq!(submit_backlog(Arc::clone(&cq)).await, BACKLOG);

    // sc comes up; the first batch lands in one commit; kill sc while the
    // next one is on its way or being verified.
    let sc_proc = GatewayProcess::start(&sc_member.config);
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut first = 0;
    while first == 0 {
        assert!(Instant::now() < deadline, "no batch arrived");
        first = inbox_len(&sc).await;
    }
    sc_proc.kill9();
    assert!(
        first < BACKLOG,
        "the kill must leave part of the backlog undelivered"
    );

    let sc_proc = GatewayProcess::start(&sc_member.config);
    let deadline = Instant::now() + Duration::from_secs(180);
    while inbox_len(&sc).await < BACKLOG.min(500) {
        assert!(Instant::now() < deadline, "not everything was delivered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let inbox = inbox_ids(&sc).await;
    cq_gw.shutdown().await;
    sc_proc.kill9();
    let (accepted, _) = origin_state(&cq_member);
    assert_eq!(accepted.len(), BACKLOG);
    assert_eq!(inbox, accepted, "exactly once, in acceptance order");
    assert_receiver_store(&sc_member, &accepted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sender_killed_between_the_receivers_answer_and_its_settle_resends_idempotently() {
    let dir = tempfile::tempdir().unwrap();
    let fed = federation(dir.path());
    let (cq_member, sc_member) = (
        fed.member("cq").unwrap().clone(),
        fed.member("sc").unwrap().clone(),
    );
    let cq = Arc::new(CreditBank::new(&cq_member, &fed.ca_cert).unwrap());
    let sc = CreditBank::new(&sc_member, &fed.ca_cert).unwrap();

    // The backlog queues at a cq process while sc is down.
    let mut cq_proc = GatewayProcess::start(&cq_member.config);
    assert_eq!(submit_backlog(Arc::clone(&cq)).await, BACKLOG);
    cq_proc.kill9();
    let sc_gw = app::start(Config::load(&sc_member.config).unwrap())
        .await
        .unwrap();

    // Start cq and kill it the moment a batch appears in sc's inbox: sc has
    // answered, cq is recording the answer (256 rows, one transaction).
    // Repeat until a kill lands before cq's settle became durable.
    let mut caught = false;
    for _attempt in 0..8 {
        let before = inbox_len(&sc).await;
        if before >= BACKLOG.min(500) {
            break;
        }
        cq_proc = GatewayProcess::start(&cq_member.config);
        let deadline = Instant::now() + Duration::from_secs(120);
        while inbox_len(&sc).await == before {
            assert!(Instant::now() < deadline, "no batch arrived");
        }
        cq_proc.kill9();
        let stored = inbox_len(&sc).await;
        let (_, delivered) = origin_state(&cq_member);
        assert!(delivered <= stored, "cq never records more than sc holds");
        if delivered < stored {
            caught = true;
            break;
        }
    }
    assert!(caught, "no kill landed between sc's answer and cq's settle");

    // cq restarts, resends what it did not record; sc answers 200 for those.
    let cq_proc = GatewayProcess::start(&cq_member.config);
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let done = inbox_len(&sc).await >= BACKLOG.min(500);
        if done {
            break;
        }
        assert!(Instant::now() < deadline, "not everything was delivered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Wait until cq has recorded every delivery, then stop it.
    let deadline = Instant::now() + Duration::from_secs(60);
    let cq_admin = cq_member.identity(bashu_gateway::transport::Role::Operator);
    let operator = bashu_gateway::devfed::mtls_client(&fed.ca_cert, cq_admin.0, cq_admin.1).unwrap();
    loop {
        let r = operator
            .get(&format!(
                "{}/v1/admin/exchanges?status=delivered",
                cq_member.url()
            ))
            .await
            .unwrap();
        let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        if body["items"].as_array().map_or(0, Vec::len) >= BACKLOG {
            break;
        }
        assert!(Instant::now() < deadline, "cq did not record every delivery");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cq_proc.kill9();
    let inbox = inbox_ids(&sc).await;
    sc_gw.shutdown().await;
    let (accepted, delivered) = origin_state(&cq_member);
    assert_eq!((accepted.len(), delivered), (BACKLOG, BACKLOG));
    assert_eq!(inbox, accepted, "exactly once, in acceptance order");
    assert_receiver_store(&sc_member, &accepted);
}
