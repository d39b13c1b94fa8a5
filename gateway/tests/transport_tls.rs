//! The mTLS listener: no trusted client certificate, no HTTP; certificate
//! hot reload; the outbound peer client; graceful shutdown.
#![allow(clippy::unwrap_used, clippy::expect_used)] // helpers outside #[test] fns

mod api_support;

use api_support::{client_config, connect, limits, CertFiles, Client, Fake, Pki, Server};
use bashu_gateway::pipeline::{GatewayService, ServiceFuture, Unwired};
use bashu_gateway::transport::{ClientIdentity, PeerClientOptions, PeerHttpClient, Role, TlsPaths};
use http::{StatusCode, Version};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{oneshot, Notify};

/// Tries a raw HTTP/1.1 request; returns what the server sent back, or the
/// error that ended the attempt (handshake or first read).
async fn raw_request(
    addr: SocketAddr,
    ca: &Path,
    cert: Option<&CertFiles>,
) -> Result<Vec<u8>, std::io::Error> {
    let mut tls = connect(addr, client_config(ca, cert, &[b"http/1.1"])).await?;
    tls.write_all(b"GET /healthz HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
        .await?;
    let mut out = Vec::new();
    tls.read_to_end(&mut out).await?;
    Ok(out)
}

fn assert_no_http(result: Result<Vec<u8>, std::io::Error>) {
    if let Ok(bytes) = result {
        assert!(
            !bytes.starts_with(b"HTTP/"),
            "server spoke HTTP: {}",
            String::from_utf8_lossy(&bytes)
        );
    }
}

#[tokio::test]
async fn no_client_certificate_means_no_http() {
    let pki = Pki::new();
    let server = Server::start(&pki, "cq", Arc::new(Unwired), limits()).await;
    assert_no_http(raw_request(server.addr, &pki.ca_path, None).await);
    // The same client with a certificate does get HTTP (the probe can fail).
    let ok = raw_request(
        server.addr,
        &pki.ca_path,
        Some(&pki.identity("cq", Role::Operator)),
    )
    .await
    .unwrap();
    assert!(
        ok.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&ok)
    );
    server.stop().await;
}

#[tokio::test]
async fn certificate_from_another_ca_means_no_http() {
    let pki = Pki::new();
    let other = Pki::new();
    let server = Server::start(&pki, "cq", Arc::new(Unwired), limits()).await;
    // Valid SPIFFE identity, wrong issuer.
    let foreign = other.identity("cq", Role::Operator);
    assert_no_http(raw_request(server.addr, &pki.ca_path, Some(&foreign)).await);
    server.stop().await;
}

#[tokio::test]
async fn revoked_certificate_means_no_http() {
    let pki = Pki::new();
    let revoked = pki.identity("cq", Role::CreditBank);
    let good = pki.identity("cq", Role::Operator);
    let crl = pki.dir.path().join("ca.crl");
    std::fs::write(&crl, pki.ca.crl(&[&revoked.serial]).unwrap()).unwrap();
    let mut paths = pki.server_paths("cq");
    paths.crls = vec![crl];
    let server = Server::start_with(paths, "cq", Arc::new(Unwired), limits()).await;
    assert_no_http(raw_request(server.addr, &pki.ca_path, Some(&revoked)).await);
    let ok = raw_request(server.addr, &pki.ca_path, Some(&good)).await.unwrap();
    assert!(ok.starts_with(b"HTTP/1.1 200"));
    server.stop().await;
}

/// Leaf certificate the server presented on a fresh connection.
async fn served_cert(addr: SocketAddr, pki: &Pki, client: &CertFiles) -> Vec<u8> {
    let tls = connect(addr, client_config(&pki.ca_path, Some(client), &[b"h2"]))
        .await
        .unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

fn pem_der(path: &Path) -> Vec<u8> {
    let pem = std::fs::read(path).unwrap();
    let mut reader = pem.as_slice();
    let der = rustls_pemfile::certs(&mut reader).next().unwrap().unwrap();
    der.to_vec()
}

#[tokio::test]
async fn certificate_reload_applies_to_new_connections_only() {
    let pki = Pki::new();
    let live = pki.dir.path().join("live");
    std::fs::create_dir(&live).unwrap();
    let install = |files: &CertFiles| {
        std::fs::copy(&files.cert, live.join("gw.crt")).unwrap();
        std::fs::copy(&files.key, live.join("gw.key")).unwrap();
    };
    let first = pki.identity("cq", Role::Gateway);
    install(&first);
    let paths = TlsPaths {
        ca: pki.ca_path.clone(),
        cert: live.join("gw.crt"),
        key: live.join("gw.key"),
        crls: vec![],
    };
    let server = Server::start_with(paths, "cq", Fake::new(), limits()).await;
    let client = pki.identity("cq", Role::Operator);
    assert_eq!(
        served_cert(server.addr, &pki, &client).await,
        pem_der(&first.cert)
    );

    // An HTTP/1.1 keep-alive connection opened before the reload.
    let tls = connect(
        server.addr,
        client_config(&pki.ca_path, Some(&client), &[b"http/1.1"]),
    )
    .await
    .unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let get = || {
        http::Request::get("/healthz")
            .header("host", "localhost")
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap()
    };
    assert_eq!(sender.send_request(get()).await.unwrap().status(), StatusCode::OK);

    // A broken rollout (key of another certificate) is refused; the old config stays.
    let second = pki.identity("cq", Role::Gateway);
    std::fs::copy(&second.cert, live.join("gw.crt")).unwrap();
    assert!(server.tls.reload().is_err());
    assert_eq!(
        served_cert(server.addr, &pki, &client).await,
        pem_der(&first.cert)
    );

    install(&second);
    server.tls.reload().unwrap();
    assert_eq!(
        served_cert(server.addr, &pki, &client).await,
        pem_der(&second.cert)
    );
    // The old connection still works, on its original session.
    sender.ready().await.unwrap();
    assert_eq!(sender.send_request(get()).await.unwrap().status(), StatusCode::OK);
    server.stop().await;
}

#[tokio::test]
async fn peer_client_speaks_http2_over_mtls() {
    let pki = Pki::new();
    let fake = Fake::new();
    let server = Server::start(&pki, "sc", fake.clone(), limits()).await;
    let gw = pki.identity("cq", Role::Gateway);
    let client = PeerHttpClient::new(&pki.ca_path, &gw.cert, &gw.key, false).unwrap();
    let base = format!("https://127.0.0.1:{}", server.addr.port());
    let env = json!({"exchangeId": "ex-new", "origin": "cq", "destination": "sc", "chain": []});
    let resp = client
        .post_json(&format!("{base}/v1/federation/envelopes"), &env)
        .await
        .unwrap();
    assert_eq!(resp.status, StatusCode::ACCEPTED);
    assert_eq!(resp.version, Version::HTTP_2);
    let body: Value = serde_json::from_slice(&resp.body).unwrap();
    assert_eq!(body, json!({"exchangeId": "ex-new", "status": "delivered"}));
    let keys = client.get(&format!("{base}/v1/federation/keys")).await.unwrap();
    assert_eq!(keys.status, StatusCode::OK);
    assert_eq!(keys.headers["content-type"], "application/jwt");
    // Plain http:// is refused before any connection is made.
    assert!(client
        .get(&format!("http://127.0.0.1:{}/healthz", server.addr.port()))
        .await
        .is_err());
    assert_eq!(fake.calls(), vec!["receive cq ex-new"]);
    server.stop().await;
}

#[tokio::test]
async fn peer_client_rejects_a_server_from_another_ca() {
    let pki = Pki::new();
    let other = Pki::new();
    let server = Server::start(&other, "sc", Fake::new(), limits()).await;
    let gw = pki.identity("cq", Role::Gateway);
    let client = PeerHttpClient::new(&pki.ca_path, &gw.cert, &gw.key, false).unwrap();
    let err = client
        .get(&format!("https://127.0.0.1:{}/healthz", server.addr.port()))
        .await
        .unwrap_err();
    assert!(
        matches!(err, bashu_gateway::transport::PeerHttpError::Request { .. }),
        "{err}"
    );
    server.stop().await;
}

#[tokio::test]
async fn peer_client_accepts_only_the_expected_gateway_identity() {
    let pki = Pki::new();
    let server = Server::start(&pki, "sc", Fake::new(), limits()).await;
    let gw = pki.identity("cq", Role::Gateway);
    let url = format!("https://127.0.0.1:{}/healthz", server.addr.port());
    let pinned = |member: &str, role: Role| {
        let options = PeerClientOptions {
            expected_server: Some(ClientIdentity::new(member, role)),
            ..PeerClientOptions::default()
        };
        PeerHttpClient::with_options(&pki.ca_path, &gw.cert, &gw.key, false, options).unwrap()
    };
    // The server really is sc's gateway.
    assert_eq!(
        pinned("sc", Role::Gateway).get(&url).await.unwrap().status,
        StatusCode::OK
    );
    // Chaining to the federation CA is not enough for a different identity.
    for (member, role) in [("gz", Role::Gateway), ("sc", Role::CreditBank)] {
        let err = pinned(member, role).get(&url).await.unwrap_err();
        assert!(
            matches!(err, bashu_gateway::transport::PeerHttpError::Request { .. }),
            "{err}"
        );
    }
    server.stop().await;
}

/// Holds `exchange_status` until released, to observe draining.
struct Gate {
    entered: Notify,
    release: tokio::sync::Mutex<Option<oneshot::Receiver<()>>>,
}

impl GatewayService for Gate {
    fn exchange_status<'a>(&'a self, id: &'a str) -> ServiceFuture<'a, Option<Value>> {
        Box::pin(async move {
            self.entered.notify_one();
            if let Some(rx) = self.release.lock().await.take() {
                let _ = rx.await;
            }
            Ok(Some(json!({"exchangeId": id, "status": "accepted"})))
        })
    }
    fn submit<'a>(
        &'a self,
        c: &'a str,
        r: bashu_gateway::pipeline::SubmitRequest,
    ) -> ServiceFuture<'a, bashu_gateway::pipeline::SubmitOutcome> {
        Unwired.submit(c, r)
    }
    fn inbox(&self, a: Option<u64>, l: u32) -> ServiceFuture<'_, Value> {
        Unwired.inbox(a, l)
    }
    fn ack(&self, u: u64) -> ServiceFuture<'_, u64> {
        Unwired.ack(u)
    }
    fn receive<'a>(
        &'a self,
        c: &'a str,
        e: bashu_gateway::pipeline::Envelope,
    ) -> ServiceFuture<'a, bashu_gateway::pipeline::ReceiveOutcome> {
        Unwired.receive(c, e)
    }
    fn keyset(&self) -> ServiceFuture<'_, String> {
        Unwired.keyset()
    }
    fn admin_exchanges<'a>(&'a self, s: Option<&'a str>) -> ServiceFuture<'a, Value> {
        Unwired.admin_exchanges(s)
    }
    fn admin_retry<'a>(&'a self, i: &'a str) -> ServiceFuture<'a, Value> {
        Unwired.admin_retry(i)
    }
    fn admin_trust_refresh(&self) -> ServiceFuture<'_, Value> {
        Unwired.admin_trust_refresh()
    }
    fn ready(&self) -> futures::future::BoxFuture<'_, bool> {
        Box::pin(async { true })
    }
}

#[tokio::test]
async fn shutdown_stops_accepting_and_drains_in_flight_requests() {
    let pki = Pki::new();
    let (release, rx) = oneshot::channel();
    let gate = Arc::new(Gate {
        entered: Notify::new(),
        release: tokio::sync::Mutex::new(Some(rx)),
    });
    let server = Server::start(&pki, "cq", gate.clone(), limits()).await;
    let bank = Client::of(&server, &pki, "cq", Role::CreditBank, Version::HTTP_2);
    let in_flight = tokio::spawn({
        let bank = bank.clone();
        async move { bank.get("/v1/exchanges/ex-7").await }
    });
    gate.entered.notified().await;
    server.shutdown.send(true).unwrap();
    // Stopped accepting: a new connection is refused or never answered.
    let refused = tokio::net::TcpStream::connect(server.addr).await;
    if let Ok(mut tcp) = refused {
        let mut buf = [0u8; 1];
        assert!(matches!(tcp.read(&mut buf).await, Ok(0) | Err(_)));
    }
    assert!(!server.task.is_finished());
    release.send(()).unwrap();
    let resp = in_flight.await.unwrap();
    assert_eq!(resp.status, StatusCode::OK);
    assert_eq!(resp.json()["exchangeId"], "ex-7");
    server.task.await.unwrap();
}

#[tokio::test]
async fn watcher_reloads_when_the_files_change() {
    let pki = Pki::new();
    let live = pki.dir.path().join("watched");
    std::fs::create_dir(&live).unwrap();
    let first = pki.identity("cq", Role::Gateway);
    std::fs::copy(&first.cert, live.join("gw.crt")).unwrap();
    std::fs::copy(&first.key, live.join("gw.key")).unwrap();
    let paths = TlsPaths {
        ca: pki.ca_path.clone(),
        cert: live.join("gw.crt"),
        key: live.join("gw.key"),
        crls: vec![],
    };
    let server = Server::start_with(paths, "cq", Fake::new(), limits()).await;
    let mut reloads = server.tls.reloads();
    let (_stop, stop_rx) = tokio::sync::watch::channel(false);
    let watcher = server
        .tls
        .spawn_watcher(std::time::Duration::from_millis(20), stop_rx);

    // Atomic replacement, as docs/operations.md recommends.
    let second = pki.identity("cq", Role::Gateway);
    std::fs::copy(&second.key, live.join("gw.key.tmp")).unwrap();
    std::fs::copy(&second.cert, live.join("gw.crt.tmp")).unwrap();
    std::fs::rename(live.join("gw.key.tmp"), live.join("gw.key")).unwrap();
    std::fs::rename(live.join("gw.crt.tmp"), live.join("gw.crt")).unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(10), reloads.changed())
        .await
        .expect("no reload after the files changed")
        .unwrap();
    let client = pki.identity("cq", Role::Operator);
    // The key may have been picked up alone first (a failed reload keeps the
    // old config); wait for the reload that includes the new certificate.
    while served_cert(server.addr, &pki, &client).await != pem_der(&second.cert) {
        tokio::time::timeout(std::time::Duration::from_secs(10), reloads.changed())
            .await
            .expect("certificate never reloaded")
            .unwrap();
    }
    watcher.abort();
    server.stop().await;
}
