//! Reloading a running gateway (issue 12 item 2): a rotated gateway
//! certificate is presented on outbound connections to peers, and a peer
//! added to `gateway.toml` is delivered to after a reload, without restart.
#![allow(clippy::unwrap_used, clippy::expect_used)] // helpers outside #[test] fns

use bashu_gateway::app;
use bashu_gateway::config::Config;
use bashu_gateway::devfed::{CreditBank, FIXTURES};
use bashu_gateway::devpki::{DevCa, DevMember};
use bashu_gateway::transport::{server_tls_config, Role};
use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_rustls::TlsAcceptor;

const DELIVERY_TIMEOUT: Duration = Duration::from_secs(20);

/// Faster retries than the defaults, appended to a member's gateway.toml.
const FAST_DELIVERY: &str = "
[delivery]
initial_backoff_ms = 20
max_backoff_ms = 300
breaker_failure_threshold = 50
breaker_open_ms = 100
";

fn fast_delivery(m: &DevMember) {
    let text = std::fs::read_to_string(&m.config).unwrap();
    std::fs::write(&m.config, text + FAST_DELIVERY).unwrap();
}

/// A learning-record subject of a cq credit bank, unique per `n`.
fn subject(n: usize) -> Value {
    let fixture = FIXTURES.iter().find(|f| f.member == "cq").unwrap();
    let mut subject = fixture.subject().unwrap();
    subject["id"] = Value::String(format!("urn:bashu:learner:cq:reload-{n:05}"));
    subject
}

async fn submit(bank: &CreditBank, dest: &str, n: usize) -> (StatusCode, Value) {
    let jws = bank.issue(subject(n)).unwrap();
    let answer = bank.submit(&jws, dest).await.unwrap();
    (answer.status, answer.body)
}

fn pem_der(path: &Path) -> Vec<u8> {
    let pem = std::fs::read(path).unwrap();
    let der = rustls_pemfile::certs(&mut pem.as_slice())
        .next()
        .unwrap()
        .unwrap()
        .to_vec();
    der
}

/// A stand-in for a peer gateway: mTLS with the peer's certificate, records
/// the client certificate of every connection, accepts every envelope
/// (202) and closes nothing itself.
struct Recorder {
    seen: Arc<Mutex<Vec<Vec<u8>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Recorder {
    async fn start(addr: SocketAddr, ca: &Path, peer: &DevMember) -> Self {
        let config = server_tls_config(ca, &peer.gateway_cert, &peer.gateway_key, &[]).unwrap();
        let acceptor = TlsAcceptor::from(config);
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = Arc::clone(&seen);
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let acceptor = acceptor.clone();
                let record = Arc::clone(&record);
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    if let Some(leaf) = tls.get_ref().1.peer_certificates().and_then(|c| c.first()) {
                        record.lock().unwrap().push(leaf.to_vec());
                    }
                    let svc = service_fn(|_req| async {
                        let mut resp = Response::new(Full::new(Bytes::from_static(b"{}")));
                        *resp.status_mut() = StatusCode::ACCEPTED;
                        Ok::<_, std::convert::Infallible>(resp)
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
        Self { seen, task }
    }

    fn seen(&self) -> Vec<Vec<u8>> {
        self.seen.lock().unwrap().clone()
    }

    /// Waits (bounded) until a connection presented `cert`.
    async fn wait_for(&self, cert: &[u8]) -> bool {
        let deadline = Instant::now() + DELIVERY_TIMEOUT;
        while Instant::now() < deadline {
            if self.seen().iter().any(|c| c == cert) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_gateway_certificate_is_presented_to_peers() {
    let dir = tempfile::tempdir().unwrap();
    let fed = bashu_gateway::devpki::init(dir.path(), &["cq", "sc"]).unwrap();
    let cq = fed.member("cq").unwrap().clone();
    let sc = fed.member("sc").unwrap().clone();
    fast_delivery(&cq);
    let recorder = Recorder::start(sc.api_addr, &fed.ca_cert, &sc).await;
    let gateway = app::start(Config::load(&cq.config).unwrap()).await.unwrap();
    let bank = CreditBank::new(&cq, &fed.ca_cert).unwrap();

    let old = pem_der(&cq.gateway_cert);
    let (status, body) = submit(&bank, "sc", 1).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert!(
        recorder.wait_for(&old).await,
        "first delivery presents the original certificate"
    );

    // Rotate: a new certificate from the same CA, then what SIGHUP does.
    let ca = DevCa::from_pem(
        &std::fs::read_to_string(&fed.ca_cert).unwrap(),
        &std::fs::read_to_string(&fed.ca_key).unwrap(),
    )
    .unwrap();
    let issued = ca.issue_identity("cq", Role::Gateway).unwrap();
    std::fs::write(&cq.gateway_cert, &issued.cert_pem).unwrap();
    std::fs::write(&cq.gateway_key, &issued.key_pem).unwrap();
    let new = pem_der(&cq.gateway_cert);
    assert_ne!(old, new);
    gateway.reload().await.unwrap();

    let before = recorder.seen().len();
    let (status, body) = submit(&bank, "sc", 2).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert!(
        recorder.wait_for(&new).await,
        "the delivery after the reload presents the rotated certificate"
    );
    let after: Vec<_> = recorder.seen().split_off(before);
    assert!(
        after.iter().all(|c| *c == new),
        "no new connection presents the old certificate"
    );

    gateway.shutdown().await;
    recorder.task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_added_to_the_config_is_delivered_to_after_reload() {
    let dir = tempfile::tempdir().unwrap();
    let fed = bashu_gateway::devpki::init(dir.path(), &["cq", "hk"]).unwrap();
    let cq = fed.member("cq").unwrap().clone();
    let hk = fed.member("hk").unwrap().clone();
    fast_delivery(&cq);
    fast_delivery(&hk);
    // cq starts without peers.
    let full = std::fs::read_to_string(&cq.config).unwrap();
    let mut doc: toml::Table = toml::from_str(&full).unwrap();
    assert!(doc.remove("peers").is_some());
    std::fs::write(&cq.config, toml::to_string(&doc).unwrap()).unwrap();
    let cq_gw = app::start(Config::load(&cq.config).unwrap()).await.unwrap();
    let hk_gw = app::start(Config::load(&hk.config).unwrap()).await.unwrap();
    let bank = CreditBank::new(&cq, &fed.ca_cert).unwrap();

    let (status, body) = submit(&bank, "hk", 1).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["type"], "urn:bashu:problem:unknown-destination", "{body}");

    std::fs::write(&cq.config, &full).unwrap();
    let changes = cq_gw.reload().await.unwrap();
    assert_eq!(changes.added, vec!["hk".to_owned()]);
    assert!(
        changes.changed.is_empty() && changes.removed.is_empty(),
        "{changes:?}"
    );

    let (status, body) = submit(&bank, "hk", 2).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let id = body["exchangeId"].as_str().unwrap().to_owned();
    let doc = bank
        .wait_for_status(&id, &["delivered", "rejected", "dead-lettered"], DELIVERY_TIMEOUT)
        .await
        .unwrap();
    assert_eq!(doc["status"], "delivered", "{doc}");

    // A reload without changes changes nothing.
    assert_eq!(cq_gw.reload().await.unwrap(), app::PeerChanges::default());

    cq_gw.shutdown().await;
    hk_gw.shutdown().await;
}
