//! The plain-HTTP metrics listener: `/metrics` shows API traffic, health and
//! readiness follow the probe, anything else is a problem.
#![allow(clippy::unwrap_used, clippy::expect_used)] // helpers outside #[test] fns

mod api_support;

use api_support::{limits, Client, Fake, Pki, Server};
use bashu_gateway::api;
use bashu_gateway::transport::Role;
use bytes::Bytes;
use http::{Request, StatusCode, Version};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

async fn get(addr: SocketAddr, path: &str) -> (StatusCode, String, String) {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = Request::get(path)
        .header("host", "localhost")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let status = resp.status();
    let ct = resp.headers()["content-type"].to_str().unwrap().to_owned();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, ct, String::from_utf8(body.to_vec()).unwrap())
}

#[tokio::test]
async fn metrics_listener_serves_metrics_health_and_readiness() {
    let pki = Pki::new();
    let api = Server::start(&pki, "cq", Fake::new(), limits()).await;
    let bank = Client::of(&api, &pki, "cq", Role::CreditBank, Version::HTTP_2);
    assert_eq!(bank.get("/v1/exchanges/ex-1").await.status, StatusCode::OK);

    let ready = Arc::new(AtomicBool::new(true));
    let probe: api::ReadyProbe = {
        let ready = Arc::clone(&ready);
        Arc::new(move || {
            let now = ready.load(Ordering::SeqCst);
            Box::pin(async move {
                if now {
                    Ok(())
                } else {
                    Err("test says so".to_owned())
                }
            })
        })
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(api::serve_ops(listener, probe, rx));

    let (status, ct, body) = get(addr, "/metrics").await;
    assert_eq!(status, StatusCode::OK);
    assert!(ct.starts_with("text/plain"));
    assert!(
        body.contains(r#"bashu_http_requests_total{method="GET",route="/v1/exchanges/{id}",status="200"}"#),
        "{body}"
    );
    assert!(body.contains("bashu_http_request_duration_seconds_bucket"));

    assert_eq!(get(addr, "/healthz").await.0, StatusCode::OK);
    assert_eq!(get(addr, "/readyz").await.0, StatusCode::OK);
    ready.store(false, Ordering::SeqCst);
    let (status, ct, body) = get(addr, "/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(ct, "application/problem+json");
    assert!(body.contains("urn:bashu:problem:unavailable"));
    assert!(body.contains("gateway is not ready: test says so"), "{body}");
    let (status, ct, _) = get(addr, "/v1/exchanges").await;
    assert_eq!(
        (status, ct.as_str()),
        (StatusCode::NOT_FOUND, "application/problem+json")
    );

    stop.send(true).unwrap();
    task.await.unwrap();
    api.stop().await;
}
