//! The mTLS accept loop and per-request pipeline (authenticate → rate limit
//! → route → authorise → handle with a deadline).

use super::auth::authorize;
use super::connections::{Caps, Closed, ConnTable, Slot};
use super::handlers::{dispatch, Call};
use super::ratelimit::{EnvelopeSlots, RateLimiter, SourceLimiter};
use super::request::drain;
use super::response::{self, Body};
use super::routes::{lookup, Lookup};
use crate::config::LimitsConfig;
use crate::metrics;
use crate::pipeline::GatewayService;
use crate::problem::{Lang, Problem, ProblemType};
use crate::transport::{ClientIdentity, ReloadableTls};
use http::{HeaderValue, Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tracing::{field, Instrument};

/// hyper refuses HTTP/1 read buffers below this size.
const MIN_HTTP1_BUF: usize = 8192;
/// Streams one HTTP/2 connection may have in flight.
const MAX_H2_STREAMS: u32 = 128;
/// HTTP/2 flow-control windows and send buffer. hyper's defaults (1 MiB
/// windows, 400 KiB send buffer) let every connection buffer megabytes;
/// requests here are small JSON documents, so a few hundred KiB suffice
/// and keep memory bounded under floods.
const H2_STREAM_WINDOW: u32 = 256 * 1024;
const H2_CONN_WINDOW: u32 = 512 * 1024;
const H2_MAX_SEND_BUF: usize = 128 * 1024;
/// HTTP/2 PING interval and timeout: reaps connections whose peer vanished.
/// PINGs keep nothing alive: only requests count as activity.
const H2_KEEPALIVE: Duration = Duration::from_secs(30);
const H2_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause after a failed `accept` (e.g. EMFILE) so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// How long a connection closed for idleness may take to say goodbye
/// (HTTP/2 `GOAWAY`, TLS `close_notify`) before it is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// State shared by every connection of one listener.
struct Shared {
    service: Arc<dyn GatewayService>,
    local_member: String,
    limits: LimitsConfig,
    limiter: RateLimiter,
    /// Envelope requests in flight per peer member.
    envelope_slots: EnvelopeSlots,
    /// Failed authentication attempts per source address.
    sources: SourceLimiter,
    table: Arc<ConnTable>,
    open: AtomicI64,
}

/// Serves the API on `listener` until `shutdown` becomes true (or its sender
/// is dropped), then stops accepting and gives in-flight requests up to
/// `limits.request_timeout_ms` to finish before returning.
///
/// `tls` is consulted once per accepted connection, so certificate reloads
/// apply to new connections without disturbing existing ones.
///
/// The loop itself only accepts and admits (see [`super::connections`]):
/// handshakes run in the spawned connection tasks under
/// `handshake_timeout_ms`, so slow or silent clients never hold it up.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<ReloadableTls>,
    service: Arc<dyn GatewayService>,
    local_member: String,
    limits: LimitsConfig,
    mut shutdown: watch::Receiver<bool>,
) {
    let table = ConnTable::new(Caps {
        total: limits.max_connections,
        per_ip: limits.max_connections_per_ip,
        per_identity: limits.max_connections_per_identity,
    });
    let shared = Arc::new(Shared {
        service,
        local_member,
        limiter: RateLimiter::new(limits.rate_per_second, limits.rate_burst),
        envelope_slots: EnvelopeSlots::default(),
        sources: SourceLimiter::new(limits.unauthenticated_per_second, limits.unauthenticated_burst),
        table,
        open: AtomicI64::new(0),
        limits,
    });
    set_backlog(&listener, shared.limits.listen_backlog);
    // Owns every connection task, so nothing outlives `serve`.
    let mut tasks = tokio::task::JoinSet::new();
    tracing::info!(
        addr = listener.local_addr().ok().map(field::display),
        member = %shared.local_member,
        "API listener started"
    );
    loop {
        while tasks.try_join_next().is_some() {}
        // Only when every slot serves a client that has sent a request do
        // new clients queue in the kernel backlog; otherwise the newcomer
        // may take the place of a connection that has asked for nothing.
        tokio::select! {
            biased;
            () = stopped(&mut shutdown) => break,
            () = shared.table.wait_for_room() => {}
        }
        let (tcp, peer) = tokio::select! {
            biased;
            () = stopped(&mut shutdown) => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                // That one connection failed while queued: next.
                Err(err) if connection_error(&err) => continue,
                Err(err) => {
                    tracing::warn!(%err, "accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        let Some(slot) = admit(&shared, peer) else {
            refuse(tcp);
            continue;
        };
        let acceptor = TlsAcceptor::from(tls.current());
        let task = connection(Arc::clone(&shared), acceptor, tcp, peer, slot, shutdown.clone());
        tasks.spawn(task);
    }
    drop(listener);
    let grace = request_timeout(&shared.limits);
    tracing::info!(open = shared.table.open(), "API listener draining");
    // Every connection task saw the shutdown signal and is finishing its
    // in-flight requests (HTTP/2 `GOAWAY`, HTTP/1.1 `Connection: close`).
    let drained = tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!(?grace, "API drain timed out; closing the remaining connections");
    }
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
}

/// Sets the listener's backlog (connections the kernel queues for the
/// accept loop); `listen` on a listening socket only changes that. The
/// kernel caps it at `net.core.somaxconn`.
fn set_backlog(listener: &TcpListener, backlog: u32) {
    let backlog = i32::try_from(backlog.max(1)).unwrap_or(i32::MAX);
    if let Err(err) = socket2::SockRef::from(listener).listen(backlog) {
        tracing::warn!(%err, backlog, "cannot set the listen backlog; keeping the previous one");
    }
}

/// Failures of `accept` that concern one queued connection (reset or
/// unreachable before it was accepted): the next one is accepted at once.
/// Anything else (out of descriptors or memory) is worth a pause.
fn connection_error(err: &std::io::Error) -> bool {
    use std::io::ErrorKind as K;
    matches!(
        err.kind(),
        K::ConnectionAborted
            | K::ConnectionReset
            | K::Interrupted
            | K::NetworkDown
            | K::NetworkUnreachable
            | K::HostUnreachable
    )
}

/// Admission at `accept`: the source address's failed-authentication
/// budget, then the connection caps. `None` (counted) if refused.
fn admit(shared: &Shared, peer: SocketAddr) -> Option<Slot> {
    if !shared.sources.admits(peer.ip(), Instant::now()) {
        Closed::SourceRateLimited.count();
        return None;
    }
    match shared.table.admit(peer.ip()) {
        Ok(slot) => Some(slot),
        Err(reason) => {
            reason.count();
            None
        }
    }
}

/// Closes a refused socket with a reset (`SO_LINGER` 0): no TLS, no FIN
/// exchange and no `TIME_WAIT` entry left behind, and the client learns at
/// once that it was refused.
fn refuse(tcp: TcpStream) {
    let _ = tcp.set_zero_linger();
    drop(tcp);
}

/// Resolves once shutdown is requested or the sender is gone.
pub(crate) async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

fn request_timeout(limits: &LimitsConfig) -> Duration {
    Duration::from_millis(limits.request_timeout_ms.max(1))
}

fn millis(ms: u64) -> Duration {
    Duration::from_millis(ms.max(1))
}

/// Decrements the open-connection gauge however the task ends.
struct OpenGuard(Arc<Shared>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        let open = self.0.open.fetch_sub(1, Ordering::Relaxed) - 1;
        metrics::set_open_connections(open);
    }
}

/// What the requests of one connection are doing, for its deadlines.
#[derive(Debug, Clone, Copy)]
struct Activity {
    in_flight: usize,
    started: u64,
    /// When the last request finished (or the connection was accepted).
    last: tokio::time::Instant,
}

/// Marks a request as finished however its future ends (a client reset
/// drops it half-way).
struct InFlight(Arc<watch::Sender<Activity>>);

impl InFlight {
    fn start(activity: &Arc<watch::Sender<Activity>>) -> Self {
        activity.send_modify(|a| {
            a.in_flight += 1;
            a.started += 1;
        });
        Self(Arc::clone(activity))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.send_modify(|a| {
            a.in_flight = a.in_flight.saturating_sub(1);
            a.last = tokio::time::Instant::now();
        });
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// One connection: handshake, identity, then HTTP until the client leaves,
/// a deadline passes, the slot is evicted or the listener shuts down.
async fn connection(
    shared: Arc<Shared>,
    acceptor: TlsAcceptor,
    tcp: TcpStream,
    peer: SocketAddr,
    slot: Slot,
    mut shutdown: watch::Receiver<bool>,
) {
    metrics::set_open_connections(shared.open.fetch_add(1, Ordering::Relaxed) + 1);
    let _guard = OpenGuard(Arc::clone(&shared));
    let accepted = tokio::time::Instant::now();
    let limits = &shared.limits;
    let _ = tcp.set_nodelay(true);
    let failed = |reason: Closed| {
        reason.count();
        shared.sources.charge(peer.ip(), Instant::now());
    };
    let handshake = tokio::time::timeout(millis(limits.handshake_timeout_ms), acceptor.accept(tcp));
    let mut stream = tokio::select! {
        done = handshake => match done {
            Ok(Ok(stream)) => stream,
            Ok(Err(err)) => {
                metrics::observe_tls_handshake_failure();
                failed(Closed::HandshakeFailed);
                tracing::info!(%peer, %err, "TLS handshake failed");
                return;
            }
            Err(_) => {
                metrics::observe_tls_handshake_failure();
                failed(Closed::HandshakeTimeout);
                tracing::info!(%peer, "TLS handshake timed out");
                return;
            }
        },
        () = slot.evicted() => {
            // Counted by the table when it evicted us.
            shared.sources.charge(peer.ip(), Instant::now());
            return;
        }
        () = stopped(&mut shutdown) => return,
    };
    let who = match ClientIdentity::from_peer_chain(stream.get_ref().1.peer_certificates()) {
        Ok(who) => who,
        Err(err) => {
            // No HTTP for a certificate without a role: the connection is
            // closed at once (see docs/decisions.md).
            failed(Closed::NoIdentity);
            tracing::info!(%peer, %err, "trusted certificate without a bashu identity; closing");
            let _ = tokio::time::timeout(CLOSE_GRACE, stream.shutdown()).await;
            return;
        }
    };
    if let Err(reason) = slot.identify(&who) {
        reason.count();
        tracing::info!(%peer, caller = %who, ?reason, "connection limit of the identity reached; closing");
        let _ = tokio::time::timeout(CLOSE_GRACE, stream.shutdown()).await;
        return;
    }
    tracing::debug!(%peer, caller = %who, "connection authenticated");
    let activity = Arc::new(watch::Sender::new(Activity {
        in_flight: 0,
        started: 0,
        last: accepted,
    }));
    let mut changes = activity.subscribe();
    let who = Arc::new(who);
    let svc_shared = Arc::clone(&shared);
    let svc = service_fn(move |req| {
        let in_flight = InFlight::start(&activity);
        let (shared, who) = (Arc::clone(&svc_shared), Arc::clone(&who));
        async move {
            let resp = handle(shared, who, req).await;
            drop(in_flight);
            resp
        }
    });
    let builder = http_builder(limits);
    let conn = builder.serve_connection(TokioIo::new(stream), svc);
    tokio::pin!(conn);
    let first_request = accepted + millis(limits.first_request_timeout_ms);
    let idle = millis(limits.idle_timeout_ms);
    let mut pending = true;
    // Set once the connection was asked to close: when to drop it anyway.
    let mut closing: Option<tokio::time::Instant> = None;
    loop {
        let now = *changes.borrow_and_update();
        if pending && now.started > 0 {
            slot.started_request();
            pending = false;
        }
        let deadline = match (now.in_flight, now.started) {
            (0, 0) => Some(first_request),
            (0, _) => Some(now.last + idle),
            _ => None,
        };
        tokio::select! {
            ended = conn.as_mut() => {
                if let Err(err) = ended {
                    tracing::debug!(%peer, %err, "connection ended with an error");
                }
                return;
            }
            changed = changes.changed() => {
                if changed.is_err() {
                    // The service (and with it the sender) is gone.
                    let _ = tokio::time::timeout(CLOSE_GRACE, conn.as_mut()).await;
                    return;
                }
            }
            () = sleep_until(deadline), if closing.is_none() => {
                let reason = if pending { Closed::NoRequest } else { Closed::Idle };
                if pending {
                    failed(reason);
                } else {
                    reason.count();
                }
                tracing::debug!(%peer, ?reason, "closing connection");
                conn.as_mut().graceful_shutdown();
                closing = Some(tokio::time::Instant::now() + CLOSE_GRACE);
            }
            () = slot.evicted(), if pending && closing.is_none() => {
                shared.sources.charge(peer.ip(), Instant::now());
                return;
            }
            () = stopped(&mut shutdown), if closing.is_none() => {
                conn.as_mut().graceful_shutdown();
                closing = Some(tokio::time::Instant::now() + request_timeout(limits));
            }
            () = sleep_until(closing) => return,
        }
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
        .initial_stream_window_size(H2_STREAM_WINDOW)
        .initial_connection_window_size(H2_CONN_WINDOW)
        .max_send_buf_size(H2_MAX_SEND_BUF)
        .keep_alive_interval(H2_KEEPALIVE)
        .keep_alive_timeout(H2_KEEPALIVE_TIMEOUT);
    builder
}

async fn handle(
    shared: Arc<Shared>,
    who: Arc<ClientIdentity>,
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
    let (route, mut resp) = route(&shared, &who, req, lang).instrument(span.clone()).await;
    let status = resp.status().as_u16();
    // Problem answers name their type, so a 4xx in the log says why.
    let problem = resp
        .extensions()
        .get::<response::LoggedProblemType>()
        .map(|p| p.0.clone());
    span.in_scope(|| {
        tracing::info!(
            status,
            problem = problem.as_deref(),
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
    who: &ClientIdentity,
    req: Request<Incoming>,
    lang: Lang,
) -> (&'static str, Response<Body>) {
    let span = tracing::Span::current();
    span.record("caller", field::display(who));
    let (parts, body) = req.into_parts();
    let max_body = shared.limits.max_body_bytes;
    // Early answers read (and discard) the body first: see `request::drain`.
    if let Err(wait) = shared.limiter.check(who, Instant::now()) {
        let p = Problem::new(ProblemType::RateLimited, format!("rate limit of {who} exceeded"));
        drain(body, max_body).await;
        return (UNMATCHED, response::rate_limited_in(&p, wait, lang));
    }
    let (route, param) = match lookup(&parts.method, parts.uri.path()) {
        Lookup::Found(route, param) => (route, param),
        Lookup::NotFound => {
            let p = Problem::new(ProblemType::NotFound, "no such route");
            drain(body, max_body).await;
            return (UNMATCHED, response::problem_in(&p, lang));
        }
        Lookup::MethodNotAllowed(allowed) => {
            let p = Problem::new(
                ProblemType::MalformedRequest,
                format!("method {} is not allowed on this route", parts.method),
            );
            drain(body, max_body).await;
            return (UNMATCHED, response::method_not_allowed_in(&p, &allowed, lang));
        }
    };
    span.record("route", route.path);
    if let Err(p) = authorize(route.access, who, &shared.local_member) {
        drain(body, max_body).await;
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
        envelope_slots: &shared.envelope_slots,
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
