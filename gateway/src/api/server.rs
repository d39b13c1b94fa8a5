//! The mTLS accept loop and per-request pipeline (authenticate → rate limit
//! → route → authorise → handle with a deadline).

use super::auth::authorize;
use super::handlers::{dispatch, Call};
use super::ratelimit::RateLimiter;
use super::response::{self, Body};
use super::routes::{lookup, Lookup};
use crate::config::LimitsConfig;
use crate::metrics;
use crate::pipeline::GatewayService;
use crate::problem::{Lang, Problem, ProblemType};
use crate::transport::{ClientIdentity, IdentityError, ReloadableTls};
use http::{HeaderValue, Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;
use tracing::{field, Instrument};

/// hyper refuses HTTP/1 read buffers below this size.
const MIN_HTTP1_BUF: usize = 8192;
/// Streams one HTTP/2 connection may have in flight.
const MAX_H2_STREAMS: u32 = 128;
/// HTTP/2 PING interval and timeout: reaps connections whose peer vanished.
const H2_KEEPALIVE: Duration = Duration::from_secs(30);
const H2_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause after a failed `accept` (e.g. EMFILE) so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// State shared by every connection of one listener.
struct Shared {
    service: Arc<dyn GatewayService>,
    local_member: String,
    limits: LimitsConfig,
    limiter: RateLimiter,
    open: AtomicI64,
}

/// Serves the API on `listener` until `shutdown` becomes true (or its sender
/// is dropped), then stops accepting and gives in-flight requests up to
/// `limits.request_timeout_ms` to finish before returning.
///
/// `tls` is consulted once per accepted connection, so certificate reloads
/// apply to new connections without disturbing existing ones.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<ReloadableTls>,
    service: Arc<dyn GatewayService>,
    local_member: String,
    limits: LimitsConfig,
    mut shutdown: watch::Receiver<bool>,
) {
    let shared = Arc::new(Shared {
        service,
        local_member,
        limiter: RateLimiter::new(limits.rate_per_second, limits.rate_burst),
        open: AtomicI64::new(0),
        limits,
    });
    let slots = Arc::new(Semaphore::new(shared.limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    // Owns every connection task, so nothing outlives `serve`.
    let mut tasks = tokio::task::JoinSet::new();
    tracing::info!(addr = ?listener.local_addr().ok(), member = %shared.local_member, "API listener started");
    loop {
        while tasks.try_join_next().is_some() {}
        // Wait for a connection slot before accepting, so excess clients queue
        // in the kernel backlog instead of consuming memory here.
        let permit = tokio::select! {
            biased;
            () = stopped(&mut shutdown) => break,
            permit = Arc::clone(&slots).acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (tcp, peer) = tokio::select! {
            biased;
            () = stopped(&mut shutdown) => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(err) => {
                    tracing::warn!(%err, "accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        let acceptor = TlsAcceptor::from(tls.current());
        let task = connection(
            Arc::clone(&shared),
            acceptor,
            tcp,
            peer,
            graceful.watcher(),
            permit,
        );
        tasks.spawn(task);
    }
    drop(listener);
    let grace = request_timeout(&shared.limits);
    tracing::info!(open = graceful.count(), "API listener draining");
    if tokio::time::timeout(grace, graceful.shutdown()).await.is_err() {
        tracing::warn!(?grace, "API drain timed out; closing the remaining connections");
    }
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
}

/// Resolves once shutdown is requested or the sender is gone.
pub(crate) async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

fn request_timeout(limits: &LimitsConfig) -> Duration {
    Duration::from_millis(limits.request_timeout_ms.max(1))
}

/// Decrements the open-connection gauge however the task ends.
struct OpenGuard(Arc<Shared>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        let open = self.0.open.fetch_sub(1, Ordering::Relaxed) - 1;
        metrics::set_open_connections(open);
    }
}

async fn connection(
    shared: Arc<Shared>,
    acceptor: TlsAcceptor,
    tcp: TcpStream,
    peer: SocketAddr,
    watcher: Watcher,
    _permit: OwnedSemaphorePermit,
) {
    metrics::set_open_connections(shared.open.fetch_add(1, Ordering::Relaxed) + 1);
    let _guard = OpenGuard(Arc::clone(&shared));
    let _ = tcp.set_nodelay(true);
    let deadline = request_timeout(&shared.limits);
    let stream = match tokio::time::timeout(deadline, acceptor.accept(tcp)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(err)) => {
            metrics::observe_tls_handshake_failure();
            tracing::info!(%peer, %err, "TLS handshake failed");
            return;
        }
        Err(_) => {
            metrics::observe_tls_handshake_failure();
            tracing::info!(%peer, "TLS handshake timed out");
            return;
        }
    };
    let identity = ClientIdentity::from_peer_chain(stream.get_ref().1.peer_certificates());
    match &identity {
        Ok(who) => tracing::debug!(%peer, caller = %who, "connection authenticated"),
        Err(err) => tracing::warn!(%peer, %err, "trusted certificate without a bashu identity"),
    }
    let identity = Arc::new(identity);
    let svc_shared = Arc::clone(&shared);
    let svc = service_fn(move |req| handle(Arc::clone(&svc_shared), Arc::clone(&identity), req));
    let builder = http_builder(&shared.limits);
    let conn = builder.serve_connection(TokioIo::new(stream), svc);
    if let Err(err) = watcher.watch(conn).await {
        tracing::debug!(%peer, %err, "connection ended with an error");
    }
}

fn http_builder(limits: &LimitsConfig) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // The header read timeout also runs while an HTTP/1.1 connection idles
    // between requests, so idle keep-alive connections give their slot back.
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(request_timeout(limits))
        .max_buf_size(limits.max_header_bytes.max(MIN_HTTP1_BUF));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(MAX_H2_STREAMS)
        .keep_alive_interval(H2_KEEPALIVE)
        .keep_alive_timeout(H2_KEEPALIVE_TIMEOUT);
    builder
}

async fn handle(
    shared: Arc<Shared>,
    identity: Arc<Result<ClientIdentity, IdentityError>>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let started = Instant::now();
    let request_id = uuid::Uuid::new_v4().to_string();
    let method = req.method().clone();
    let span = tracing::info_span!(
        "request",
        id = %request_id,
        method = %method,
        route = field::Empty,
        caller = field::Empty,
        exchange_id = field::Empty,
    );
    let lang = request_lang(req.headers());
    let (route, mut resp) = route(&shared, identity.as_ref().as_ref(), req, lang)
        .instrument(span.clone())
        .await;
    let status = resp.status().as_u16();
    span.in_scope(|| {
        tracing::info!(
            status,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "request done"
        )
    });
    metrics::observe_http(route, method.as_str(), status, started.elapsed());
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    Ok(resp)
}

/// Metric label for requests that matched no route.
const UNMATCHED: &str = "unmatched";

/// Language of problem titles and fixed details, from `Accept-Language`
/// (English if absent or not ASCII).
fn request_lang(headers: &http::HeaderMap) -> Lang {
    headers
        .get(http::header::ACCEPT_LANGUAGE)
        .and_then(|v| v.to_str().ok())
        .map_or(Lang::En, Lang::from_accept_language)
}

async fn route(
    shared: &Shared,
    identity: Result<&ClientIdentity, &IdentityError>,
    req: Request<Incoming>,
    lang: Lang,
) -> (&'static str, Response<Body>) {
    let span = tracing::Span::current();
    let who = match identity {
        Ok(who) => who,
        Err(err) => {
            let p = Problem::new(ProblemType::Unauthenticated, err.to_string());
            return (UNMATCHED, response::problem_in(&p, lang));
        }
    };
    span.record("caller", field::display(who));
    if let Err(wait) = shared.limiter.check(who, Instant::now()) {
        let p = Problem::new(ProblemType::RateLimited, format!("rate limit of {who} exceeded"));
        return (UNMATCHED, response::rate_limited_in(&p, wait, lang));
    }
    let (parts, body) = req.into_parts();
    let (route, param) = match lookup(&parts.method, parts.uri.path()) {
        Lookup::Found(route, param) => (route, param),
        Lookup::NotFound => {
            let p = Problem::new(ProblemType::NotFound, "no such route");
            return (UNMATCHED, response::problem_in(&p, lang));
        }
        Lookup::MethodNotAllowed(allowed) => {
            let p = Problem::new(
                ProblemType::MalformedRequest,
                format!("method {} is not allowed on this route", parts.method),
            );
            return (UNMATCHED, response::method_not_allowed_in(&p, &allowed, lang));
        }
    };
    span.record("route", route.path);
    if let Err(p) = authorize(route.access, who, &shared.local_member) {
        return (route.path, response::problem_in(&p, lang));
    }
    let call = Call {
        service: shared.service.as_ref(),
        caller: who,
        param,
        query: parts.uri.query(),
        headers: &parts.headers,
        body,
        max_body: shared.limits.max_body_bytes,
    };
    let deadline = request_timeout(&shared.limits);
    let resp = match tokio::time::timeout(deadline, dispatch(route.handler, call)).await {
        Ok(Ok(resp)) => resp,
        Ok(Err(p)) => response::problem_in(&p, lang),
        Err(_) => {
            let p = Problem::new(
                ProblemType::Unavailable,
                format!("request not completed within {deadline:?}"),
            );
            response::problem_in(&p, lang)
        }
    };
    (route.path, resp)
}
