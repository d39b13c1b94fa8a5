//! `kill -9` around batched delivery (SPEC v1.1 §4–§5), with real gateway
//! processes: the receiver killed while a batch is in flight, and the
//! sender killed after the receiver stored a batch but before the sender
//! recorded it. Afterwards every exchange is in the destination inbox
//! exactly once, in acceptance order.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

use bashu_e2e::{exchange_id, init_federation, subject, GatewayProcess};
use bashu_gateway::app;
use bashu_gateway::config::Config;
use bashu_gateway::devfed::CreditBank;
use bashu_gateway::devpki::{DevFederation, DevMember};
use bashu_gateway::store::{db_path, ExchangeStatus, SqliteStore, Store};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// More than one batch (256) behind a peer that is down.
const BACKLOG: usize = 400;
const SUBMITTERS: usize = 8;

fn start_gateway(config: &Path) -> GatewayProcess {
    GatewayProcess::start(env!("CARGO_BIN_EXE_e2e-gateway"), config, &[]).unwrap()
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

/// The relay (below) tells when a whole batch has gone up to sc; sc is
/// killed at once, while it verifies the batch. Whatever the moment, a
/// batch is stored whole or not at all (one commit), and after a restart
/// everything is there exactly once, in acceptance order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receiver_killed_in_the_middle_of_a_batch_loses_and_duplicates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let fed = federation(dir.path());
    let (cq_member, sc_member) = (
        fed.member("cq").unwrap().clone(),
        fed.member("sc").unwrap().clone(),
    );
    let relay = HoldingRelay::start(socket_of(&sc_member.url())).await;
    relay.route(&cq_member, &sc_member.url());
    let cq_gw = app::start(Config::load(&cq_member.config).unwrap())
        .await
        .unwrap();
    let cq = Arc::new(CreditBank::new(&cq_member, &fed.ca_cert).unwrap());
    let sc = CreditBank::new(&sc_member, &fed.ca_cert).unwrap();
    // sc is down: the backlog queues at cq.
    assert_eq!(submit_backlog(Arc::clone(&cq)).await, BACKLOG);

    let mut sc_proc = start_gateway(&sc_member.config);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !relay.batch_uploaded() {
        assert!(Instant::now() < deadline, "no batch went up to sc");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    sc_proc.kill9().unwrap();
    let held = {
        let store = SqliteStore::open_existing(&db_path(&sc_member.data_dir)).unwrap();
        store.inbox_page(Some(0), 10_000).unwrap().len()
    };
    eprintln!("sc held {held} inbox items when killed");
    assert!(
        held == 0 || held == 256,
        "a batch is stored whole or not at all: {held}"
    );

    let mut sc_proc = start_gateway(&sc_member.config);
    let deadline = Instant::now() + Duration::from_secs(180);
    while inbox_len(&sc).await < BACKLOG.min(500) {
        assert!(Instant::now() < deadline, "not everything was delivered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let inbox = inbox_ids(&sc).await;
    cq_gw.shutdown().await;
    sc_proc.kill9().unwrap();
    let (accepted, _) = origin_state(&cq_member);
    assert_eq!(accepted.len(), BACKLOG);
    assert_eq!(inbox, accepted, "exactly once, in acceptance order");
    assert_receiver_store(&sc_member, &accepted);
}

/// A TCP relay in front of sc for cq. Once armed, it stops passing sc's
/// bytes back on a connection that has carried a large request (a batch)
/// once that request has been sent in full (nothing went up for
/// [`UPLOAD_DONE`]): sc stores the batch and answers, and cq never hears
/// the answer. The TLS handshake, small requests and the HTTP/2 window
/// updates during the upload pass, so cq connects and sends normally.
struct HoldingRelay {
    addr: std::net::SocketAddr,
    armed: Arc<AtomicBool>,
    withheld: Arc<AtomicUsize>,
    /// Bytes sent up on all connections, and when the last ones went.
    up_total: Arc<AtomicUsize>,
    last_up_total: Arc<std::sync::Mutex<Instant>>,
}

/// Upstream bytes after which a connection counts as carrying a batch.
const LARGE_REQUEST: usize = 64 * 1024;
/// Quiet time after which an upload counts as complete.
const UPLOAD_DONE: Duration = Duration::from_millis(50);

impl HoldingRelay {
    async fn start(target: std::net::SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let armed = Arc::new(AtomicBool::new(false));
        let withheld = Arc::new(AtomicUsize::new(0));
        let up_total = Arc::new(AtomicUsize::new(0));
        let last_up_total = Arc::new(std::sync::Mutex::new(Instant::now()));
        let (a, w) = (Arc::clone(&armed), Arc::clone(&withheld));
        let (ut, lut) = (Arc::clone(&up_total), Arc::clone(&last_up_total));
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (armed, withheld) = (Arc::clone(&a), Arc::clone(&w));
                let (up_total, last_up_total) = (Arc::clone(&ut), Arc::clone(&lut));
                tokio::spawn(async move {
                    let Ok(server) = tokio::net::TcpStream::connect(target).await else {
                        return; // sc is down: the connection just closes
                    };
                    let (mut cr, mut cw) = client.into_split();
                    let (mut sr, mut sw) = server.into_split();
                    let up = Arc::new(AtomicUsize::new(0));
                    let last_up = Arc::new(std::sync::Mutex::new(Instant::now()));
                    let (up2, last_up2) = (Arc::clone(&up), Arc::clone(&last_up));
                    tokio::spawn(async move {
                        let mut buf = vec![0u8; 16 * 1024];
                        while let Ok(n @ 1..) = cr.read(&mut buf).await {
                            up2.fetch_add(n, Ordering::SeqCst);
                            up_total.fetch_add(n, Ordering::SeqCst);
                            *last_up2.lock().unwrap() = Instant::now();
                            *last_up_total.lock().unwrap() = Instant::now();
                            if sw.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                    });
                    let mut buf = vec![0u8; 16 * 1024];
                    while let Ok(n @ 1..) = sr.read(&mut buf).await {
                        let sent = up.load(Ordering::SeqCst) > LARGE_REQUEST
                            && last_up.lock().unwrap().elapsed() >= UPLOAD_DONE;
                        if armed.load(Ordering::SeqCst) && sent {
                            withheld.fetch_add(n, Ordering::SeqCst);
                            continue;
                        }
                        if cw.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        Self {
            addr,
            armed,
            withheld,
            up_total,
            last_up_total,
        }
    }

    /// Points `member`'s config at this relay instead of `target_url`.
    fn route(&self, member: &DevMember, target_url: &str) {
        let toml = std::fs::read_to_string(&member.config).unwrap();
        assert!(toml.contains(target_url), "the config names the target URL");
        let relayed = toml.replace(target_url, &format!("https://{}", self.addr));
        std::fs::write(&member.config, relayed).unwrap();
    }

    /// True once a large upload has gone up in full (quiet since).
    fn batch_uploaded(&self) -> bool {
        self.up_total.load(Ordering::SeqCst) > LARGE_REQUEST
            && self.last_up_total.lock().unwrap().elapsed() >= UPLOAD_DONE
    }
}

fn socket_of(url: &str) -> std::net::SocketAddr {
    url.trim_start_matches("https://").parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sender_killed_between_the_receivers_answer_and_its_settle_resends_idempotently() {
    let dir = tempfile::tempdir().unwrap();
    let fed = federation(dir.path());
    let (cq_member, sc_member) = (
        fed.member("cq").unwrap().clone(),
        fed.member("sc").unwrap().clone(),
    );
    // cq reaches sc through the relay.
    let relay = HoldingRelay::start(socket_of(&sc_member.url())).await;
    relay.route(&cq_member, &sc_member.url());
    let cq = Arc::new(CreditBank::new(&cq_member, &fed.ca_cert).unwrap());
    let sc = CreditBank::new(&sc_member, &fed.ca_cert).unwrap();

    // The backlog queues at a cq process while sc is down.
    let mut cq_proc = start_gateway(&cq_member.config);
    assert_eq!(submit_backlog(Arc::clone(&cq)).await, BACKLOG);
    relay.armed.store(true, Ordering::SeqCst);
    let sc_gw = app::start(Config::load(&sc_member.config).unwrap())
        .await
        .unwrap();

    // sc stores the first batch and answers; the relay keeps the answer
    // from cq; cq is killed before it could record anything.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut stored = 0;
    while stored == 0 || relay.withheld.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "no batch arrived at sc");
        tokio::time::sleep(Duration::from_millis(20)).await;
        stored = inbox_len(&sc).await;
    }
    cq_proc.kill9().unwrap();
    let (_, delivered) = origin_state(&cq_member);
    assert_eq!(delivered, 0, "cq never heard sc's answer");
    assert!(stored > 0 && stored < BACKLOG, "one batch is at sc: {stored}");

    // cq restarts and resends the batch; sc answers 200 for each envelope
    // it holds and stores the rest once.
    relay.armed.store(false, Ordering::SeqCst);
    let mut cq_proc = start_gateway(&cq_member.config);
    let cq_admin = cq_member.identity(bashu_gateway::transport::Role::Operator);
    let operator = bashu_gateway::devfed::mtls_client(&fed.ca_cert, cq_admin.0, cq_admin.1).unwrap();
    let deadline = Instant::now() + Duration::from_secs(180);
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
    cq_proc.kill9().unwrap();
    let inbox = inbox_ids(&sc).await;
    sc_gw.shutdown().await;
    let (accepted, delivered) = origin_state(&cq_member);
    assert_eq!((accepted.len(), delivered), (BACKLOG, BACKLOG));
    assert_eq!(inbox, accepted, "exactly once, in acceptance order");
    assert_receiver_store(&sc_member, &accepted);
}
