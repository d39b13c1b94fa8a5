//! Connection limits and deadlines of the API listener (issue 12 item 1):
//! silent or idle connections are closed, no source address or identity can
//! take every slot, and floods of silent sockets do not lock out clients.
#![allow(clippy::unwrap_used, clippy::expect_used)] // helpers outside #[test] fns

mod api_support;

use api_support::{client_config, connect, limits, CertFiles, Client, Fake, Pki, Server};
use bashu_gateway::config::LimitsConfig;
use bashu_gateway::transport::Role;
use bytes::Bytes;
use http::{Request, StatusCode, Version};
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpSocket, TcpStream};

/// Deadlines short enough for tests.
fn tight() -> LimitsConfig {
    LimitsConfig {
        handshake_timeout_ms: 300,
        first_request_timeout_ms: 400,
        idle_timeout_ms: 400,
        ..limits()
    }
}

/// Upper bound for "the server closed it": deadline plus generous slack.
const CLOSED_WITHIN: Duration = Duration::from_secs(5);

/// Reads until the server closes (EOF or error); panics if it does not.
async fn wait_closed<R: tokio::io::AsyncRead + Unpin>(mut stream: R) -> Duration {
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    let read = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(CLOSED_WITHIN, read)
        .await
        .expect("server did not close the connection");
    started.elapsed()
}

/// A plain TCP connection from `source` (any 127.0.0.0/8 address).
async fn tcp_from(source: [u8; 4], to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from((source, 0)))?;
    socket.connect(to).await
}

/// Connects from `source` and reads until the server ends the connection;
/// the error it ends with. A reset can surface as the result of the
/// connect itself when it arrives right after the handshake.
async fn refused_with(source: [u8; 4], to: SocketAddr) -> std::io::ErrorKind {
    let mut tcp = match tcp_from(source, to).await {
        Ok(tcp) => tcp,
        Err(err) => return err.kind(),
    };
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(CLOSED_WITHIN, tcp.read(&mut buf))
        .await
        .expect("the refused socket is closed at once");
    match read {
        Ok(n) => panic!("an orderly close or data ({n} bytes), not a reset"),
        Err(err) => err.kind(),
    }
}

/// An HTTP/2 connection whose client pings every 50 ms and sends nothing.
async fn pinging_h2(
    server: &Server,
    pki: &Pki,
    cert: &CertFiles,
) -> (
    hyper::client::conn::http2::SendRequest<Full<Bytes>>,
    tokio::task::JoinHandle<Result<(), hyper::Error>>,
) {
    let tls = connect(server.addr, client_config(&pki.ca_path, Some(cert), &[b"h2"]))
        .await
        .unwrap();
    let (sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .keep_alive_interval(Duration::from_millis(50))
        .keep_alive_while_idle(true)
        .handshake(TokioIo::new(tls))
        .await
        .unwrap();
    (sender, tokio::spawn(conn))
}

#[tokio::test]
async fn silent_connections_are_closed_by_the_handshake_and_first_request_deadlines() {
    let pki = Pki::new();
    let server = Server::start(&pki, "cq", Fake::new(), tight()).await;
    // Raw TCP that never starts TLS: the handshake deadline.
    let raw = TcpStream::connect(server.addr).await.unwrap();
    wait_closed(raw).await;
    // A complete mTLS handshake with a valid identity, then nothing.
    let bank = pki.identity("cq", Role::CreditBank);
    let tls = connect(server.addr, client_config(&pki.ca_path, Some(&bank), &[b"h2"]))
        .await
        .unwrap();
    wait_closed(tls).await;
    server.stop().await;
}

#[tokio::test]
async fn http2_pings_are_not_activity() {
    let pki = Pki::new();
    let server = Server::start(&pki, "cq", Fake::new(), tight()).await;
    let bank = pki.identity("cq", Role::CreditBank);
    // Never a request: closed by the first-request deadline despite PINGs.
    let (_sender, conn) = pinging_h2(&server, &pki, &bank).await;
    tokio::time::timeout(CLOSED_WITHIN, conn)
        .await
        .expect("a pinging connection without requests is closed")
        .unwrap()
        .ok();
    // One request, then idle: closed by the idle deadline despite PINGs.
    let (mut sender, conn) = pinging_h2(&server, &pki, &bank).await;
    let req = Request::get(format!("https://localhost:{}/healthz", server.addr.port()))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let idle_since = Instant::now();
    tokio::time::timeout(CLOSED_WITHIN, conn)
        .await
        .expect("an idle keep-alive connection is closed")
        .unwrap()
        .ok();
    assert!(
        idle_since.elapsed() >= Duration::from_millis(300),
        "not before the idle deadline"
    );
    server.stop().await;
}

#[tokio::test]
async fn one_identity_cannot_take_more_than_its_connection_cap() {
    let pki = Pki::new();
    let limits = LimitsConfig {
        max_connections_per_identity: 2,
        ..limits()
    };
    let server = Server::start(&pki, "cq", Fake::new(), limits).await;
    let bank = pki.identity("cq", Role::CreditBank);
    let cfg = || client_config(&pki.ca_path, Some(&bank), &[b"http/1.1"]);
    let _held = [
        connect(server.addr, cfg()).await.unwrap(),
        connect(server.addr, cfg()).await.unwrap(),
    ];
    // The third connection of the same identity is closed after the handshake.
    let third = connect(server.addr, cfg()).await.unwrap();
    wait_closed(third).await;
    // Another identity is not affected.
    let op = Client::of(&server, &pki, "cq", Role::Operator, Version::HTTP_2);
    assert_eq!(op.get("/healthz").await.status, StatusCode::OK);
    server.stop().await;
}

#[tokio::test]
async fn one_source_address_cannot_take_more_than_its_connection_cap() {
    let pki = Pki::new();
    let limits = LimitsConfig {
        max_connections_per_ip: 3,
        ..limits()
    };
    let server = Server::start(&pki, "cq", Fake::new(), limits).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(tcp_from([127, 0, 0, 2], server.addr).await.unwrap());
    }
    // The fourth socket from 127.0.0.2 is refused at once, long before the
    // handshake deadline (5 s by default).
    let started = Instant::now();
    assert_eq!(
        refused_with([127, 0, 0, 2], server.addr).await,
        std::io::ErrorKind::ConnectionReset
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    // Another address is served.
    let bank = Client::of(&server, &pki, "cq", Role::CreditBank, Version::HTTP_2);
    assert_eq!(bank.get("/healthz").await.status, StatusCode::OK);
    server.stop().await;
}

/// A socket refused at `accept` (here: over its address's cap) is reset
/// (`SO_LINGER` 0) rather than closed with a FIN: the cheapest close there
/// is, with no `TIME_WAIT` entry left on the gateway, and the client learns
/// at once that it was refused rather than seeing an orderly end.
#[tokio::test]
async fn refused_sockets_are_reset_at_once() {
    let pki = Pki::new();
    let limits = LimitsConfig {
        max_connections_per_ip: 1,
        ..limits()
    };
    let server = Server::start(&pki, "cq", Fake::new(), limits).await;
    let _held = tcp_from([127, 0, 0, 4], server.addr).await.unwrap();
    assert_eq!(
        refused_with([127, 0, 0, 4], server.addr).await,
        std::io::ErrorKind::ConnectionReset
    );
    server.stop().await;
}

/// The listen backlog is `[limits] listen_backlog`, whatever the socket was
/// created with (tokio binds with 1,024): while every slot serves a client,
/// the kernel queues `listen_backlog + 1` connections for the accept loop
/// and drops the SYNs of any more.
#[tokio::test]
async fn listen_backlog_comes_from_the_limits() {
    let pki = Pki::new();
    let limits = LimitsConfig {
        max_connections: 1,
        listen_backlog: 2,
        ..limits()
    };
    let server = Server::start(&pki, "cq", Fake::new(), limits).await;
    // The only slot, held by a client that has sent a request.
    let bank = pki.identity("cq", Role::CreditBank);
    let (mut active, _conn) = pinging_h2(&server, &pki, &bank).await;
    let req = Request::get(format!("https://localhost:{}/healthz", server.addr.port()))
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(active.send_request(req).await.unwrap().status(), StatusCode::OK);
    // The accept loop was already waiting in `accept` when the slot filled:
    // it takes one more connection, refuses it (listener full), and only
    // then waits for room, leaving new clients to the kernel's queue.
    assert_eq!(
        refused_with([127, 0, 0, 1], server.addr).await,
        std::io::ErrorKind::ConnectionReset
    );
    let mut queued = Vec::new();
    for i in 0..3 {
        let tcp = tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(server.addr))
            .await
            .unwrap_or_else(|_| panic!("connection {i} fits in the backlog"))
            .unwrap();
        queued.push(tcp);
    }
    // The kernel drops the next SYN (the client would retry after 1 s).
    let overflow = tokio::time::timeout(Duration::from_millis(300), TcpStream::connect(server.addr)).await;
    assert!(
        overflow.is_err(),
        "a fourth connection does not fit in a backlog of 2"
    );
    server.stop().await;
}

/// Pause of a flood socket between being closed and reconnecting.
const RECONNECT_PAUSE: Duration = Duration::from_millis(20);
/// Upper bound on any flood, whatever happens to the test.
const FLOOD_MAX: Duration = Duration::from_secs(120);

/// Runs `f` on a runtime of its own in a new OS thread, so that it does not
/// share the gateway's tokio workers (an attacker or a credit bank is not
/// inside the gateway's process either).
fn own_runtime<T, F>(name: &str, f: impl FnOnce() -> F + Send + 'static) -> std::thread::JoinHandle<T>
where
    F: std::future::Future<Output = T>,
    T: Send + 'static,
{
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(f())
        })
        .unwrap()
}

/// Waits for a thread without blocking the gateway's runtime.
async fn join<T: Send + 'static>(thread: std::thread::JoinHandle<T>) -> T {
    tokio::task::spawn_blocking(move || thread.join().unwrap())
        .await
        .unwrap()
}

/// A running flood of silent sockets from one address.
struct Flood {
    stop: tokio::sync::watch::Sender<bool>,
    connects: Arc<AtomicUsize>,
    thread: std::thread::JoinHandle<usize>,
}

impl Flood {
    /// `sockets` sockets connect from `source`, send nothing, and (if
    /// `reconnect`) connect again `RECONNECT_PAUSE` after the server closed
    /// or refused them, until stopped (at most `FLOOD_MAX`). Runs in its
    /// own thread. `connects` counts connection attempts.
    fn start(addr: SocketAddr, source: [u8; 4], sockets: usize, reconnect: bool) -> Self {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let connects = Arc::new(AtomicUsize::new(0));
        let total = Arc::clone(&connects);
        let thread = own_runtime("flood", move || async move {
            let flooders: Vec<_> = (0..sockets)
                .map(|_| {
                    let mut stopped = stopped.clone();
                    let total = Arc::clone(&total);
                    tokio::spawn(async move {
                        let mut stop = std::pin::pin!(stopped.wait_for(|s| *s));
                        let mut connects = 0;
                        loop {
                            let attempt = tokio::select! {
                                c = tcp_from(source, addr) => c,
                                _ = stop.as_mut() => return connects,
                            };
                            // Counted whether or not the connect succeeds: a
                            // socket reset right after the handshake may
                            // report the reset as the connect's result.
                            connects += 1;
                            total.fetch_add(1, Ordering::Relaxed);
                            if let Ok(mut tcp) = attempt {
                                let mut buf = [0u8; 64];
                                loop {
                                    tokio::select! {
                                        read = tcp.read(&mut buf) => match read {
                                            Ok(0) | Err(_) => break,
                                            Ok(_) => {}
                                        },
                                        _ = stop.as_mut() => return connects,
                                    }
                                }
                            }
                            if !reconnect {
                                let _ = stop.as_mut().await;
                                return connects;
                            }
                            // Closed or refused by the server: come back
                            // shortly, like a client library's reconnect loop.
                            tokio::select! {
                                () = tokio::time::sleep(RECONNECT_PAUSE) => {}
                                _ = stop.as_mut() => return connects,
                            }
                        }
                    })
                })
                .collect();
            let mut connects = 0;
            for f in flooders {
                connects += f.await.unwrap();
            }
            connects
        });
        // Bounded whatever the test does: stop after FLOOD_MAX.
        let stop_later = stop.clone();
        std::thread::spawn(move || {
            let deadline = Instant::now() + FLOOD_MAX;
            while Instant::now() < deadline && !*stop_later.borrow() {
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = stop_later.send(true);
        });
        Self {
            stop,
            connects,
            thread,
        }
    }

    fn connects(&self) -> usize {
        self.connects.load(Ordering::Relaxed)
    }

    /// Waits (bounded) until at least `n` connects happened.
    async fn wait_for(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.connects() < n && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(
            self.connects() >= n,
            "flood did not start: {} connects",
            self.connects()
        );
    }

    /// Stops the flood; returns how many connects it made.
    async fn stop(self) -> usize {
        let _ = self.stop.send(true);
        join(self.thread).await
    }
}

/// Latencies of legitimate requests, in milliseconds, sorted.
#[derive(Debug, Default)]
struct Latencies {
    /// Each on a fresh mTLS connection (connect, handshake, request).
    fresh: Vec<f64>,
    /// All on one kept-alive HTTP/2 connection opened before the flood.
    kept_alive: Vec<f64>,
}

/// `n` GETs of `/healthz` on fresh connections from 127.0.0.1, then `n` on
/// one HTTP/2 connection (`kept` was opened before the flood), all in a
/// thread of their own. Every request must succeed within 5 s.
fn legit_requests(
    addr: SocketAddr,
    cfg: Arc<rustls::ClientConfig>,
    kept: hyper::client::conn::http2::SendRequest<Full<Bytes>>,
    n: usize,
) -> std::thread::JoinHandle<Latencies> {
    own_runtime("credit-bank", move || async move {
        let mut out = Latencies::default();
        let get = || {
            Request::get(format!("https://localhost:{}/healthz", addr.port()))
                .body(Full::new(Bytes::new()))
                .unwrap()
        };
        for i in 0..n {
            let started = Instant::now();
            let one = async {
                let tcp = TcpStream::connect(addr).await?;
                // As HTTP clients do: no Nagle delay behind a delayed ACK.
                tcp.set_nodelay(true)?;
                let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
                let tls = tokio_rustls::TlsConnector::from(Arc::clone(&cfg))
                    .connect(name, tcp)
                    .await?;
                let (mut sender, conn) =
                    hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                        .await
                        .map_err(std::io::Error::other)?;
                tokio::spawn(conn);
                let resp = sender.send_request(get()).await.map_err(std::io::Error::other)?;
                Ok::<_, std::io::Error>(resp.status())
            };
            let status = tokio::time::timeout(Duration::from_secs(5), one)
                .await
                .unwrap_or_else(|_| panic!("fresh request {i} locked out by the flood"))
                .unwrap_or_else(|e| panic!("fresh request {i} failed: {e}"));
            assert_eq!(status, StatusCode::OK, "fresh request {i}");
            out.fresh.push(started.elapsed().as_secs_f64() * 1000.0);
        }
        let mut kept = kept;
        for i in 0..n {
            let started = Instant::now();
            let resp = tokio::time::timeout(Duration::from_secs(5), kept.send_request(get()))
                .await
                .unwrap_or_else(|_| panic!("kept-alive request {i} stalled by the flood"))
                .unwrap_or_else(|e| panic!("kept-alive request {i} failed: {e}"));
            assert_eq!(resp.status(), StatusCode::OK, "kept-alive request {i}");
            out.kept_alive.push(started.elapsed().as_secs_f64() * 1000.0);
        }
        out.fresh.sort_by(f64::total_cmp);
        out.kept_alive.sort_by(f64::total_cmp);
        out
    })
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn summary(sorted: &[f64]) -> String {
    format!(
        "p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        percentile(sorted, 0.5),
        percentile(sorted, 0.99),
        sorted[sorted.len() - 1]
    )
}

/// System-wide TCP counters that show where a connection waited in the
/// kernel: accept-queue overflows (the final ACK dropped, so the client
/// retransmits after its RTO), SYN-queue drops and retransmitted segments.
/// Linux only; empty elsewhere. Other processes add to them too.
fn tcp_counters() -> Vec<(String, i64)> {
    let wanted = [
        "ListenOverflows",
        "ListenDrops",
        "TCPReqQFullDrop",
        "TCPReqQFullDoCookies",
        "RetransSegs",
    ];
    let mut out = Vec::new();
    for file in ["/proc/net/netstat", "/proc/net/snmp"] {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        let lines: Vec<&str> = text.lines().collect();
        for pair in lines.chunks(2) {
            let [names, values] = pair else { continue };
            for (name, value) in names.split_whitespace().zip(values.split_whitespace()).skip(1) {
                if wanted.contains(&name) {
                    out.push((name.to_owned(), value.parse().unwrap_or(0)));
                }
            }
        }
    }
    out
}

fn counter_deltas(before: &[(String, i64)], after: &[(String, i64)]) -> String {
    after
        .iter()
        .map(|(name, v)| {
            let was = before.iter().find(|(n, _)| n == name).map_or(0, |(_, b)| *b);
            format!("{name} +{}", v - was)
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Runs `n` legitimate requests (fresh connections, then kept-alive) from
/// 127.0.0.1 during a flood of `sockets` silent sockets from `source`, and
/// prints the latencies and the kernel's TCP counters. Asserts that every
/// legitimate request succeeds; the figures are for docs/performance.md.
async fn run_flood(
    limits: LimitsConfig,
    source: [u8; 4],
    sockets: usize,
    reconnect: bool,
    n: usize,
    label: &str,
) {
    let pki = Pki::new();
    let server = Server::start(&pki, "cq", Fake::new(), limits).await;
    let bank = pki.identity("cq", Role::CreditBank);
    let cfg = Arc::new(client_config(&pki.ca_path, Some(&bank), &[b"h2"]));
    let tcp = TcpStream::connect(server.addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::clone(&cfg))
        .connect(name, tcp)
        .await
        .unwrap();
    let (kept, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
        .await
        .unwrap();
    let conn = tokio::spawn(conn);
    // One request first, so the kept connection is not pending (evictable).
    let mut kept = kept;
    let warm = Request::get(format!("https://localhost:{}/healthz", server.addr.port()))
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(kept.send_request(warm).await.unwrap().status(), StatusCode::OK);
    let flood = Flood::start(server.addr, source, sockets, reconnect);
    // Let the flood fill the listener first: every socket connected once.
    flood.wait_for(sockets).await;
    let before = tcp_counters();
    let (connects_before, started) = (flood.connects(), Instant::now());
    let latencies = join(legit_requests(server.addr, cfg, kept, n)).await;
    let window = started.elapsed();
    let during = flood.connects() - connects_before;
    let after = tcp_counters();
    let connects = flood.stop().await;
    println!(
        "{label}: {sockets} silent sockets from {}.{}.{}.{} ({}), {connects} connects in all, \
         {during} during the {:.1} s of legitimate requests ({:.0}/s)",
        source[0],
        source[1],
        source[2],
        source[3],
        if reconnect { "reconnecting" } else { "held" },
        window.as_secs_f64(),
        during as f64 / window.as_secs_f64(),
    );
    println!(
        "  {n} fresh mTLS connections, all 200: {}",
        summary(&latencies.fresh)
    );
    println!(
        "  {n} requests on one kept-alive HTTP/2 connection, all 200: {}",
        summary(&latencies.kept_alive)
    );
    println!(
        "  kernel TCP counters during the requests: {}",
        counter_deltas(&before, &after)
    );
    conn.abort();
    server.stop().await;
}

/// 500 silent, reconnecting sockets from one address (127.0.0.2) against a
/// listener capped at 64 connections: the per-address cap keeps them to 32
/// slots, so a credit bank elsewhere (127.0.0.1) is served. Before issue 12
/// the flood held all 64 slots for the 15 s request deadline and every
/// handshake of the credit bank timed out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flood_from_one_address_does_not_lock_out_others() {
    let limits = LimitsConfig {
        max_connections: 64,
        max_connections_per_ip: 32,
        ..limits()
    };
    run_flood(limits, [127, 0, 0, 2], 500, true, 100, "per-address cap").await;
}

/// 500 silent sockets from the credit bank's own address with no
/// per-address cap: every slot is taken by sockets that never sent a
/// request, and the bank's connections evict the oldest of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_listener_evicts_silent_connections_for_new_clients() {
    let limits = LimitsConfig {
        max_connections: 64,
        max_connections_per_ip: 10_000,
        // Evictions count as failed attempts of their address, which is
        // also the bank's here; this test isolates the eviction.
        unauthenticated_burst: 100_000,
        ..limits()
    };
    run_flood(limits, [127, 0, 0, 1], 500, false, 100, "eviction").await;
}

/// The issue's scale: 4,300 reconnecting silent sockets from one address
/// against the default limits, 200 legitimate requests each way. Slow in a
/// debug build; the figures in docs/performance.md come from
/// `cargo test --release -p bashu-gateway --test api_connections -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: 4,300-socket reconnect flood; run in release with --nocapture"]
async fn reconnect_flood_at_issue_scale() {
    run_flood(limits(), [127, 0, 0, 2], 4300, true, 200, "issue scale, defaults").await;
}

/// An mTLS handshake from `source`; the error if the server refuses.
async fn tls_from(
    source: [u8; 4],
    to: SocketAddr,
    cfg: rustls::ClientConfig,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = tcp_from(source, to).await?;
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(name, tcp)
        .await
}

/// Connections that fail to authenticate cost their source address a
/// token: once the burst is spent, the address is refused before the
/// handshake (issue 12: 1,920 unauthenticated answers in 0.29 s used to be
/// served to one address). Other addresses are unaffected.
#[tokio::test]
async fn failed_authentication_is_rate_limited_per_source_address() {
    let pki = Pki::new();
    let limits = LimitsConfig {
        unauthenticated_per_second: 1,
        unauthenticated_burst: 5,
        ..limits()
    };
    let server = Server::start(&pki, "cq", Fake::new(), limits).await;
    let nobody = pki.custom(
        "no-identity",
        &bashu_gateway::devpki::LeafSpec {
            common_name: "no identity".into(),
            ..Default::default()
        },
    );
    let cfg = || client_config(&pki.ca_path, Some(&nobody), &[b"h2"]);
    for i in 0..5 {
        let tls = tls_from([127, 0, 0, 3], server.addr, cfg())
            .await
            .unwrap_or_else(|e| panic!("attempt {i} within the burst is handshaken: {e}"));
        wait_closed(tls).await;
    }
    let refused = tls_from([127, 0, 0, 3], server.addr, cfg()).await;
    assert!(
        refused.is_err(),
        "the sixth attempt is refused before the handshake"
    );
    // A credit bank elsewhere is served.
    let bank = Client::of(&server, &pki, "cq", Role::CreditBank, Version::HTTP_2);
    assert_eq!(bank.get("/healthz").await.status, StatusCode::OK);
    server.stop().await;
}
