//! The floor under goal 2 of issue 9: what the gateway's request stack
//! costs with nothing behind it.
//!
//! One gateway API listener (`api::serve`: TLS, HTTP/2, connection caps,
//! authentication, rate limits, routing, body parsing) runs in front of a
//! service that answers at once, and the gateway's own peer client
//! (`PeerHttpClient`: hyper-rustls, HTTP/2) drives the three legs an exchange
//! makes, with bodies of real sizes:
//!
//! - **submit**: a credit bank posts a signed credential (16 in flight),
//! - **federation**: a peer gateway posts batches of envelopes (two links),
//! - **inbox**: the credit bank reads pages of 500 items (three links each).
//!
//! Server and client each run on one thread of their own, so the CPU time of
//! each side is that thread's (`/proc/thread-self/schedstat`: user and
//! kernel). The ES256 crypto of an exchange is measured in the same run.
//! With no store, no mapping and no signatures, the sum of the two gateways'
//! shares is what no change inside the pipeline can go below.
//!
//! `cargo bench -p bashu-gateway --bench floor` (`BASHU_FLOOR_EXCHANGES`
//! sets the exchanges per leg, 6,000 by default).

use bashu_gateway::api;
use bashu_gateway::bench::ceiling;
use bashu_gateway::config::LimitsConfig;
use bashu_gateway::devpki::{self, DevMember};
use bashu_gateway::jose::Alg;
use bashu_gateway::pipeline::views;
use bashu_gateway::pipeline::{
    Envelope, EnvelopeResult, GatewayService, ReceiveOutcome, ServiceFuture, SubmitOutcome, SubmitRequest,
};
use bashu_gateway::problem::{Problem, ProblemType};
use bashu_gateway::store::InboxItem;
use bashu_gateway::transport::{PeerHttpClient, ReloadableTls, TlsPaths};
use bashu_gateway::wire::BatchRef;
use futures::{stream, StreamExt};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

type Error = Box<dyn std::error::Error + Send + Sync>;

/// Submissions in flight, as `bench --clients 16` keeps them.
const IN_FLIGHT: usize = 16;
/// Items per inbox page, as the bench's credit bank reads them.
const INBOX_PAGE: usize = 500;
/// Envelopes per federation batch: a quiet and a busy outbox.
const BATCH_SIZES: [usize; 2] = [16, 128];

fn main() -> Result<(), Error> {
    let exchanges = std::env::var("BASHU_FLOOR_EXCHANGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6_000usize);
    let dir = tempfile::tempdir()?;
    let federation = devpki::init(dir.path(), &["cq", "sc"])?;
    let member = |id: &str| {
        federation
            .member(id)
            .cloned()
            .ok_or_else(|| Error::from(format!("no member {id}")))
    };
    let (cq, sc) = (member("cq")?, member("sc")?);

    let client_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (token, crypto_us) = client_rt.block_on(async {
        let (signed, _) = ceiling::signed_credentials(&[Alg::Es256]).await?;
        let token = signed.into_iter().next().ok_or("no ES256 credential")?.token;
        let ceiling = ceiling::measure(Duration::from_secs(2)).await?;
        Ok::<_, Error>((token, ceiling.crypto_us_per_exchange))
    })?;

    // The receiving gateway, sc, on a thread of its own.
    let tls = ReloadableTls::load(TlsPaths {
        ca: federation.ca_cert.clone(),
        cert: sc.gateway_cert.clone(),
        key: sc.gateway_key.clone(),
        crls: Vec::new(),
    })?;
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let base = format!("https://{}", listener.local_addr()?);
    listener.set_nonblocking(true)?;
    let (stop, stopped) = watch::channel(false);
    let server_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let server = server_rt.handle().clone();
    let limits = LimitsConfig {
        rate_per_second: 1_000_000,
        rate_burst: 1_000_000,
        ..LimitsConfig::default()
    };
    let service: Arc<dyn GatewayService> = Arc::new(Answering::new(&token));
    let thread = std::thread::spawn(move || {
        server_rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener)?;
            api::serve(listener, tls, service, "sc".into(), limits, stopped).await;
            Ok::<_, Error>(())
        })
    });

    let bank = client(&federation.ca_cert, &sc, Side::CreditBank)?;
    let peer = client(&federation.ca_cert, &cq, Side::Gateway)?;
    let mut rows = Vec::new();
    client_rt.block_on(async {
        // Warm up: handshakes and pools, outside the measurement.
        submit(&bank, &base, &token, IN_FLIGHT).await?;
        federate(&peer, &base, &token, IN_FLIGHT, IN_FLIGHT).await?;
        inbox(&bank, &base, 1).await?;

        let (s, c) = measured(&server, submit(&bank, &base, &token, exchanges)).await?;
        rows.push(Row::new("submit", "request", exchanges, s, c));
        for size in BATCH_SIZES {
            let (s, c) = measured(&server, federate(&peer, &base, &token, exchanges, size)).await?;
            rows.push(Row::new(
                &format!("federation, batches of {size}"),
                "envelope",
                exchanges,
                s,
                c,
            ));
        }
        let pages = exchanges.div_ceil(INBOX_PAGE);
        let (s, c) = measured(&server, inbox(&bank, &base, pages)).await?;
        let leg = format!("inbox, pages of {INBOX_PAGE}");
        rows.push(Row::new(&leg, "item", pages * INBOX_PAGE, s, c));
        Ok::<_, Error>(())
    })?;
    stop.send(true)?;
    thread.join().map_err(|_| "server thread panicked")??;

    print(&rows, crypto_us, token.len());
    Ok(())
}

/// Runs `work` while measuring the CPU time of the server's thread and of
/// this (the client's) thread, in microseconds.
async fn measured(
    server: &tokio::runtime::Handle,
    work: impl std::future::Future<Output = Result<(), Error>>,
) -> Result<(f64, f64), Error> {
    let server_before = server.spawn(async { thread_cpu_ns() }).await??;
    let client_before = thread_cpu_ns()?;
    work.await?;
    let client_after = thread_cpu_ns()?;
    let server_after = server.spawn(async { thread_cpu_ns() }).await??;
    let us = |a: u64, b: u64| a.saturating_sub(b) as f64 / 1e3;
    Ok((us(server_after, server_before), us(client_after, client_before)))
}

/// Nanoseconds the calling thread has run, user and kernel.
fn thread_cpu_ns() -> Result<u64, Error> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat")?;
    let first = text.split_whitespace().next().ok_or("empty schedstat")?;
    Ok(first.parse()?)
}

enum Side {
    CreditBank,
    Gateway,
}

fn client(ca: &std::path::Path, m: &DevMember, side: Side) -> Result<PeerHttpClient, Error> {
    let (cert, key) = match side {
        Side::CreditBank => (&m.credit_bank_cert, &m.credit_bank_key),
        Side::Gateway => (&m.gateway_cert, &m.gateway_key),
    };
    Ok(PeerHttpClient::new(ca, cert, key, false)?)
}

async fn submit(bank: &PeerHttpClient, base: &str, token: &str, n: usize) -> Result<(), Error> {
    let url = format!("{base}/v1/exchanges");
    let answers = stream::iter(0..n)
        .map(|_| async {
            let body = json!({ "credential": token, "destination": "cq" });
            bank.post_json(&url, &body).await
        })
        .buffer_unordered(IN_FLIGHT)
        .collect::<Vec<_>>()
        .await;
    for a in answers {
        expect(a?.status.as_u16(), 202)?;
    }
    Ok(())
}

async fn federate(
    peer: &PeerHttpClient,
    base: &str,
    token: &str,
    n: usize,
    size: usize,
) -> Result<(), Error> {
    let url = format!("{base}{}", bashu_gateway::wire::ENVELOPES_PATH);
    let mut sent = 0;
    while sent < n {
        let envelopes: Vec<Envelope> = (sent..n.min(sent + size))
            .map(|i| Envelope {
                exchange_id: format!("ex-floor-{i}"),
                origin: "cq".into(),
                destination: "sc".into(),
                chain: vec![token.to_owned(), token.to_owned()],
            })
            .collect();
        sent += envelopes.len();
        let answer = peer
            .post_json(
                &url,
                &BatchRef {
                    envelopes: &envelopes,
                },
            )
            .await?;
        expect(answer.status.as_u16(), 200)?;
    }
    Ok(())
}

async fn inbox(bank: &PeerHttpClient, base: &str, pages: usize) -> Result<(), Error> {
    let url = format!("{base}/v1/inbox?limit={INBOX_PAGE}");
    for _ in 0..pages {
        let answer = bank.get(&url).await?;
        expect(answer.status.as_u16(), 200)?;
        // The credit bank reads the page, as the bench's does.
        let page: Value = serde_json::from_slice(&answer.body)?;
        let items = page["items"].as_array().map_or(0, Vec::len);
        expect(items as u16, INBOX_PAGE as u16)?;
    }
    Ok(())
}

fn expect(got: u16, want: u16) -> Result<(), Error> {
    if got == want {
        Ok(())
    } else {
        Err(format!("expected {want}, got {got}").into())
    }
}

struct Row {
    leg: String,
    per: &'static str,
    server_us: f64,
    client_us: f64,
}

impl Row {
    fn new(leg: &str, per: &'static str, n: usize, server_us: f64, client_us: f64) -> Self {
        let n = n.max(1) as f64;
        Row {
            leg: leg.to_owned(),
            per,
            server_us: server_us / n,
            client_us: client_us / n,
        }
    }
}

fn print(rows: &[Row], crypto_us: f64, token_bytes: usize) {
    println!("request stack floor (credential {token_bytes} bytes; CPU µs per unit, one thread each side)");
    println!("{:<28} {:>9} {:>10} {:>10}", "leg", "per", "server", "client");
    for r in rows {
        println!(
            "{:<28} {:>9} {:>10.1} {:>10.1}",
            r.leg, r.per, r.server_us, r.client_us
        );
    }
    let find = |leg: &str| rows.iter().find(|r| r.leg.starts_with(leg));
    let (Some(sub), Some(fed), Some(inb)) = (find("submit"), rows.get(1), find("inbox")) else {
        return;
    };
    // The origin serves the submission and sends the batch; the receiver
    // takes the batch and serves the inbox page.
    let origin = sub.server_us + fed.client_us;
    let receiver = fed.server_us + inb.server_us;
    let stack = origin + receiver;
    println!();
    println!("per exchange, batches of {}:", BATCH_SIZES[0]);
    println!("  origin gateway   (submit server + federation client) {origin:>8.1} µs");
    println!("  receiver gateway (federation server + inbox server)  {receiver:>8.1} µs");
    println!("  both gateways, request stack only                    {stack:>8.1} µs");
    println!("  ES256 crypto of an exchange, same run                {crypto_us:>8.1} µs");
    println!(
        "  request stack ÷ crypto                               {:>8.2}",
        stack / crypto_us.max(f64::MIN_POSITIVE)
    );
    println!(
        "  floor without a store: crypto + request stack        {:>8.1} µs (goal 2 of issue 9: 600 µs)",
        stack + crypto_us
    );
}

/// A gateway service that answers at once, with bodies of real sizes.
struct Answering {
    /// One inbox page's rows; each request renders them as the pipeline
    /// does (`views::inbox_page`).
    page: Vec<InboxItem>,
}

impl Answering {
    fn new(token: &str) -> Self {
        let page = (0..INBOX_PAGE as u64)
            .map(|i| InboxItem {
                cursor: i + 1,
                exchange_id: format!("ex-floor-{i}"),
                origin: "cq".into(),
                received_at: time::OffsetDateTime::UNIX_EPOCH,
                chain: vec![token.to_owned(); 3],
            })
            .collect();
        Answering { page }
    }
}

fn now<'a, T: Send + 'a>(v: Result<T, Problem>) -> ServiceFuture<'a, T> {
    Box::pin(async move { v })
}

fn unused<'a, T: Send + 'a>() -> ServiceFuture<'a, T> {
    now(Err(Problem::new(ProblemType::Unavailable, "not measured")))
}

impl GatewayService for Answering {
    fn submit<'a>(&'a self, _: &'a str, req: SubmitRequest) -> ServiceFuture<'a, SubmitOutcome> {
        now(Ok(SubmitOutcome {
            exchange_id: format!("ex-{}", req.credential.len()),
            status: "accepted".into(),
            created: true,
        }))
    }
    fn exchange_status<'a>(&'a self, _: &'a str) -> ServiceFuture<'a, Option<Value>> {
        unused()
    }
    fn inbox(&self, _: Option<u64>, limit: u32) -> ServiceFuture<'_, Value> {
        // The pipeline renders rows it has just read; cloning them is the nearest.
        now(Ok(views::inbox_page(self.page.clone(), limit)))
    }
    fn ack(&self, up_to: u64) -> ServiceFuture<'_, u64> {
        now(Ok(up_to))
    }
    fn receive<'a>(&'a self, _: &'a str, env: Envelope) -> ServiceFuture<'a, ReceiveOutcome> {
        now(Ok(ReceiveOutcome {
            exchange_id: env.exchange_id,
            created: true,
        }))
    }
    fn receive_batch<'a>(
        &'a self,
        _: &'a str,
        envelopes: Vec<Envelope>,
    ) -> ServiceFuture<'a, Vec<EnvelopeResult>> {
        let results = envelopes
            .into_iter()
            .map(|e| EnvelopeResult::stored(e.exchange_id, true))
            .collect();
        now(Ok(results))
    }
    fn keyset(&self) -> ServiceFuture<'_, String> {
        unused()
    }
    fn admin_exchanges<'a>(&'a self, _: Option<&'a str>) -> ServiceFuture<'a, Value> {
        unused()
    }
    fn admin_retry<'a>(&'a self, _: &'a str) -> ServiceFuture<'a, Value> {
        unused()
    }
    fn admin_trust_refresh(&self) -> ServiceFuture<'_, Value> {
        unused()
    }
    fn ready(&self) -> futures::future::BoxFuture<'_, bool> {
        Box::pin(async { true })
    }
}
