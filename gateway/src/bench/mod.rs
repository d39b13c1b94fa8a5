//! `bashu bench` (issue 6): end-to-end throughput and latency of a loopback
//! federation, judged against the crypto ceiling of the same cores, a peer
//! JOSE implementation, and memory per connection.
//!
//! Modules, one job each: [`cluster`] runs the gateways as child processes,
//! [`driver`] generates load and times it, [`ceiling`] measures raw crypto
//! rates, [`node`] runs the Node `jose` comparison, [`idle`] holds idle
//! connections, [`procstat`] reads `/proc`, [`report`] writes and prints.

pub mod ceiling;
pub mod cluster;
pub mod driver;
pub mod idle;
pub mod node;
pub mod procstat;
pub mod report;

use crate::devfed::DevFedError;
use cluster::{Cluster, ORIGIN};
use driver::{LoadResult, LoadSpec};
use report::{EndToEnd, GatewayUsage, LoadSummary, Report, Scaling, Setup};
use std::path::PathBuf;
use std::time::Duration;

/// Why a benchmark run could not produce a report.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
    #[error("dev federation: {0}")]
    DevFed(#[from] DevFedError),
    #[error("dev PKI: {0}")]
    Pki(#[from] crate::devpki::DevPkiError),
    #[error("/proc: {0}")]
    Proc(#[from] procstat::ProcError),
    #[error("crypto: {0}")]
    Crypto(String),
    #[error("{0}")]
    Setup(String),
}

impl BenchError {
    pub fn io(what: &str, source: std::io::Error) -> Self {
        Self::Io {
            what: what.to_owned(),
            source,
        }
    }
}

/// What to run; built from the command line.
#[derive(Debug, Clone)]
pub struct Options {
    pub count: usize,
    pub duration: Option<Duration>,
    pub clients: usize,
    pub scaling: bool,
    /// Credentials per scaling level.
    pub scaling_count: usize,
    pub idle_connections: usize,
    pub node: bool,
    /// Length of each crypto measurement (ceiling and peer comparison).
    pub crypto_time: Duration,
    pub half_load: bool,
    pub out: PathBuf,
    /// Keep the federation (configs, databases, logs, metrics) here
    /// instead of a temporary directory.
    pub dir: Option<PathBuf>,
}

/// Scaling levels of issue 6 (concurrent clients).
pub const SCALING_CLIENTS: [usize; 4] = [1, 8, 64, 256];
/// Upper bound on the submission phase of any run without `--duration`.
const MAX_SUBMIT: Duration = Duration::from_secs(300);
/// How long a run waits for its last deliveries after its last 202.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(60);
/// Credentials pre-signed per second of `--duration` (above any rate seen
/// here; the run ends early if they run out) and the absolute cap.
const DURATION_POOL_PER_SEC: usize = 3_000;
const POOL_CAP: usize = 200_000;
/// Exchanges run (and not reported) before measuring: key-set fetches,
/// connection set-up, SQLite page cache.
const WARM_UP: usize = 20;
/// Seconds of load the half-peak run aims for.
const HALF_LOAD_SECS: f64 = 5.0;

/// Runs everything `opts` asks for and returns the report (also written to
/// `opts.out`). Progress goes to stderr.
pub async fn run(opts: &Options) -> Result<Report, BenchError> {
    let machine = procstat::Machine::describe();
    let started_at = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();

    progress("crypto ceiling (every core, nothing else running)");
    let crypto_ceiling = ceiling::measure(opts.crypto_time).await?;
    let peer_comparison = if opts.node {
        progress("peer comparison with Node jose");
        Some(node::compare(opts.crypto_time).await?)
    } else {
        None
    };

    let temp = tempfile::tempdir().map_err(|e| BenchError::io("temporary directory", e))?;
    let dir = opts.dir.clone().unwrap_or_else(|| temp.path().to_owned());
    progress(&format!("starting gateways in {}", dir.display()));
    let cluster = Cluster::start(&dir).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle = cluster.samples()?;
    let bank = cluster.credit_bank(ORIGIN)?;
    let mut cursor = None;

    progress("warm-up");
    let warm = LoadSpec {
        count: WARM_UP,
        clients: 1,
        max_submit: MAX_SUBMIT,
        rate: None,
        delivery_timeout: DELIVERY_TIMEOUT,
    };
    let creds = driver::presign(&bank, WARM_UP, "warm")?;
    check_clean(
        "warm-up",
        &driver::run(&cluster, &warm, creds, &mut cursor).await?,
    )?;

    let count = match opts.duration {
        Some(d) => (d.as_secs_f64() * DURATION_POOL_PER_SEC as f64).ceil() as usize,
        None => opts.count,
    }
    .clamp(1, POOL_CAP);
    progress(&format!("pre-signing {count} credentials"));
    let creds = driver::presign(&bank, count, "main")?;
    let spec = LoadSpec {
        count,
        clients: opts.clients,
        max_submit: opts.duration.unwrap_or(MAX_SUBMIT),
        rate: None,
        delivery_timeout: DELIVERY_TIMEOUT,
    };
    let bound = opts.duration.map_or(String::new(), |d| {
        format!(" or {:.1} s, whichever ends first", d.as_secs_f64())
    });
    progress(&format!(
        "main run: {count} exchanges{bound}, {} clients",
        opts.clients
    ));
    let before = cluster.samples()?;
    let self_before = procstat::sample("self")?;
    let main = driver::run(&cluster, &spec, creds, &mut cursor).await?;
    let after = cluster.samples()?;
    let self_after = procstat::sample("self")?;
    let delivered = main.delivered.max(1) as f64;
    let mut gateways = Vec::new();
    let mut cpu_total = 0.0;
    for (((member, b), (_, a)), (_, i)) in before.iter().zip(&after).zip(&idle) {
        let cpu = a.cpu_secs - b.cpu_secs;
        cpu_total += cpu;
        gateways.push(GatewayUsage {
            member: member.clone(),
            pid: cluster.gateway(member)?.pid(),
            cpu_secs: cpu,
            cpu_ms_per_exchange: cpu * 1e3 / delivered,
            rss_idle_kib: i.rss_kib,
            rss_peak_kib: a.hwm_kib,
        });
    }
    let load = LoadSummary::new(&main, None);
    let end_to_end = EndToEnd {
        fraction_of_crypto_ceiling: crypto_ceiling.fraction(load.delivered_per_sec),
        load,
        gateways,
        cpu_ms_per_exchange: cpu_total * 1e3 / delivered,
        bench_process_cpu_secs: self_after.cpu_secs - self_before.cpu_secs,
    };
    let mut errors = main.errors;

    let half_load = if opts.half_load && main.delivered_per_sec() > 0.0 {
        let rate = main.delivered_per_sec() / 2.0;
        let n = ((rate * HALF_LOAD_SECS).ceil() as usize).clamp(10, count.max(10));
        progress(&format!("half-peak run: {n} exchanges paced at {rate:.0}/s"));
        let creds = driver::presign(&bank, n, "half")?;
        let spec = LoadSpec {
            count: n,
            rate: Some(rate),
            ..spec.clone()
        };
        let r = driver::run(&cluster, &spec, creds, &mut cursor).await?;
        errors += r.errors;
        Some(LoadSummary::new(&r, Some(rate)))
    } else {
        None
    };

    let scaling = if opts.scaling {
        let mut levels = Vec::new();
        for clients in SCALING_CLIENTS {
            let n = opts.scaling_count.max(clients);
            progress(&format!("scaling: {clients} clients, {n} exchanges"));
            let creds = driver::presign(&bank, n, &format!("scale{clients}"))?;
            let spec = LoadSpec {
                count: n,
                clients,
                max_submit: MAX_SUBMIT,
                rate: None,
                delivery_timeout: DELIVERY_TIMEOUT,
            };
            let r = driver::run(&cluster, &spec, creds, &mut cursor).await?;
            errors += r.errors;
            levels.push(LoadSummary::new(&r, None));
        }
        let idle_connections = if opts.idle_connections > 0 {
            progress(&format!(
                "holding {} idle mTLS connections",
                opts.idle_connections
            ));
            Some(idle::hold(&cluster, opts.idle_connections).await?)
        } else {
            None
        };
        Some(Scaling {
            levels,
            idle_connections,
        })
    } else {
        None
    };
    if opts.dir.is_some() {
        cluster.save_metrics().await?;
    }
    drop(bank);
    drop(cluster);
    drop(temp);

    let mut report = Report {
        schema: "bashu-bench/1",
        started_at,
        machine,
        setup: Setup {
            build: if cfg!(debug_assertions) { "debug" } else { "release" },
            gateways: "two `bashu serve` child processes (cq, sc) on 127.0.0.1, mTLS, default config except rate limits",
            store: "SQLite WAL with group commit (fsync before every answer, shared by concurrent writers); one commit per received batch and per settled batch",
            requested_count: opts.count,
            requested_duration_secs: opts.duration.map(|d| d.as_secs_f64()),
            clients: opts.clients,
        },
        crypto_ceiling,
        end_to_end,
        half_load,
        peer_comparison,
        scaling,
        targets: Vec::new(),
        errors,
    };
    report.judge();
    write(&report, &opts.out)?;
    Ok(report)
}

fn check_clean(what: &str, r: &LoadResult) -> Result<(), BenchError> {
    if r.errors == 0 {
        return Ok(());
    }
    Err(BenchError::Setup(format!(
        "{what}: {} errors, e.g. {}",
        r.errors,
        r.error_samples.first().map_or("?", String::as_str)
    )))
}

fn write(report: &Report, out: &std::path::Path) -> Result<(), BenchError> {
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| BenchError::io("creating the report directory", e))?;
    }
    let json = serde_json::to_vec_pretty(report).map_err(|e| BenchError::Setup(e.to_string()))?;
    std::fs::write(out, json).map_err(|e| BenchError::io(&format!("writing {}", out.display()), e))
}

fn progress(what: &str) {
    eprintln!("bench: {what}");
}
