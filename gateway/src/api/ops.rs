//! Plain-HTTP operations listener: `/metrics`, `/healthz` and `/readyz`.
//!
//! It lives with the API rather than in `metrics`, so that `metrics` stays a
//! leaf every module can record into without depending on HTTP serving.

use super::response::{self, Body};
use super::server::stopped;
use crate::pipeline::GatewayService;
use crate::problem::{Problem, ProblemType};
use futures::future::BoxFuture;
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use serde_json::json;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Answers `/readyz`: `Ok` when the gateway can take traffic, otherwise why
/// not (shown in the problem `detail`).
pub type ReadyProbe = Arc<dyn Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

/// A [`ReadyProbe`] asking the service (store reachable, keys loaded).
pub fn ready_probe(service: Arc<dyn GatewayService>) -> ReadyProbe {
    Arc::new(move || {
        let service = Arc::clone(&service);
        Box::pin(async move {
            if service.ready().await {
                Ok(())
            } else {
                Err("store or signing key unavailable".to_owned())
            }
        })
    })
}

/// `probe`, after a synchronous `check` that must pass first (e.g. the TLS
/// listener's CRLs being current).
pub fn ready_probe_with(
    probe: ReadyProbe,
    check: impl Fn() -> Result<(), String> + Send + Sync + 'static,
) -> ReadyProbe {
    Arc::new(move || match check() {
        Ok(()) => probe(),
        Err(why) => Box::pin(async move { Err(why) }),
    })
}

/// Bound on draining the metrics listener at shutdown and on reading headers.
const TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once; scrapers and probes need few.
const MAX_CONNECTIONS: usize = 64;

/// Serves the metrics listener until `shutdown` becomes true.
pub async fn serve(listener: TcpListener, ready: ReadyProbe, mut shutdown: watch::Receiver<bool>) {
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let mut tasks = tokio::task::JoinSet::new();
    tracing::info!(
        addr = listener.local_addr().ok().map(tracing::field::display),
        "metrics listener started"
    );
    loop {
        while tasks.try_join_next().is_some() {}
        let permit = tokio::select! {
            biased;
            () = stopped(&mut shutdown) => break,
            p = Arc::clone(&slots).acquire_owned() => match p { Ok(p) => p, Err(_) => break },
        };
        let tcp = tokio::select! {
            biased;
            () = stopped(&mut shutdown) => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => tcp,
                Err(err) => {
                    tracing::warn!(%err, "metrics accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let ready = Arc::clone(&ready);
        let watcher = graceful.watcher();
        tasks.spawn(async move {
            let _permit = permit;
            let svc = service_fn(move |req| answer(Arc::clone(&ready), req));
            let mut builder = auto::Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(TIMEOUT);
            let conn = builder.serve_connection(TokioIo::new(tcp), svc);
            if let Err(err) = watcher.watch(conn).await {
                tracing::debug!(%err, "metrics connection error");
            }
        });
    }
    drop(listener);
    let _ = tokio::time::timeout(TIMEOUT, graceful.shutdown()).await;
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
}

async fn answer(ready: ReadyProbe, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path();
    let known = matches!(path, "/metrics" | "/healthz" | "/readyz");
    if known && req.method() != Method::GET {
        let p = Problem::new(ProblemType::MalformedRequest, "only GET is allowed here");
        return Ok(response::method_not_allowed(&p, &[Method::GET]));
    }
    Ok(match path {
        "/metrics" => response::text(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            crate::metrics::render(),
        ),
        "/healthz" => response::json(StatusCode::OK, &json!({"status": "ok"})),
        "/readyz" => match ready().await {
            Ok(()) => response::json(StatusCode::OK, &json!({"status": "ready"})),
            Err(why) => response::problem(&Problem::new(
                ProblemType::Unavailable,
                format!("gateway is not ready: {why}"),
            )),
        },
        _ => response::problem(&Problem::new(ProblemType::NotFound, "no such route")),
    })
}
