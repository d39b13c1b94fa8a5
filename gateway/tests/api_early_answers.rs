//! Early answers over HTTP/2 (issue 12 item 6): a 403 or 413 decided before
//! the request body was read is sent only after the body was read (within
//! bounds), so the client finishes its request and sees the answer instead
//! of a stream reset.
#![allow(clippy::unwrap_used, clippy::expect_used)] // helpers outside #[test] fns

mod api_support;

use api_support::{client_config, connect, limits, Fake, Pki, Server};
use bashu_gateway::config::LimitsConfig;
use bashu_gateway::problem::ProblemType;
use bashu_gateway::transport::Role;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

const TRIES: usize = 50;
const CHUNKS: usize = 16;
const CHUNK: usize = 1024;

type Chunk = Result<Frame<Bytes>, std::convert::Infallible>;

/// A body of `CHUNKS` × 1 KiB produced over a few milliseconds, so the
/// server decides before it has all of it; `done` turns true once the
/// client has handed over the last chunk.
fn slow_body(done: Arc<AtomicBool>) -> StreamBody<futures::stream::BoxStream<'static, Chunk>> {
    let stream = futures::stream::unfold(0usize, move |sent| {
        let done = Arc::clone(&done);
        async move {
            if sent == CHUNKS {
                done.store(true, Ordering::SeqCst);
                return None;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
            Some((Ok(Frame::data(Bytes::from(vec![b' '; CHUNK]))), sent + 1))
        }
    });
    StreamBody::new(futures::StreamExt::boxed(stream))
}

/// Sends `TRIES` POSTs with slow bodies on one HTTP/2 connection; each must
/// be answered `status` with a `kind` problem, and each body must have been
/// sent to the end.
async fn early_answers(path: &str, role: Role, status: StatusCode, kind: ProblemType) {
    let pki = Pki::new();
    let limits = LimitsConfig {
        max_body_bytes: 1024,
        ..limits()
    };
    let server = Server::start(&pki, "cq", Fake::new(), limits).await;
    let cert = pki.identity("cq", role);
    let tls = connect(server.addr, client_config(&pki.ca_path, Some(&cert), &[b"h2"]))
        .await
        .unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut unfinished = 0;
    for i in 0..TRIES {
        let done = Arc::new(AtomicBool::new(false));
        let req = Request::post(format!("https://localhost:{}{path}", server.addr.port()))
            .header("content-type", "application/json")
            .body(slow_body(Arc::clone(&done)))
            .unwrap();
        let resp = sender
            .send_request(req)
            .await
            .unwrap_or_else(|e| panic!("try {i}: no answer: {e}"));
        assert_eq!(resp.status(), status, "try {i}");
        let ct = resp.headers()["content-type"].to_str().unwrap().to_owned();
        assert_eq!(ct, "application/problem+json", "try {i}");
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let problem: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(problem["type"], kind.uri(), "try {i}");
        if !done.load(Ordering::SeqCst) {
            unfinished += 1;
        }
    }
    assert_eq!(
        unfinished, 0,
        "{unfinished} of {TRIES} request bodies were cut off by the early answer"
    );
    server.stop().await;
}

#[tokio::test]
async fn forbidden_route_is_answered_after_the_body() {
    // A credit bank may not post envelopes (peer gateways only).
    early_answers(
        "/v1/federation/envelopes",
        Role::CreditBank,
        StatusCode::FORBIDDEN,
        ProblemType::ForbiddenRole,
    )
    .await;
}

#[tokio::test]
async fn oversize_body_is_answered_after_the_body() {
    early_answers(
        "/v1/exchanges",
        Role::CreditBank,
        StatusCode::PAYLOAD_TOO_LARGE,
        ProblemType::PayloadTooLarge,
    )
    .await;
}
