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

use crate::config::StoreUrl;
use crate::devfed::DevFedError;
use crate::devpg::DevPostgres;
use cluster::{Cluster, OriginStore, ORIGIN};
use driver::{LoadResult, LoadSpec};
use report::{EndToEnd, GatewayUsage, LoadSummary, Report, Scaling, Setup, StoreRun};
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
    /// The origin member's store for the main run.
    pub store: StoreChoice,
    /// Also run SQLite, PostgreSQL with one replica and PostgreSQL with
    /// `compare_replicas` replicas, same count and clients (issue 10),
    /// each on a fresh database of a throwaway cluster.
    pub compare_stores: bool,
    /// The largest replica count of `compare_stores` (at least 2).
    pub compare_replicas: usize,
}

/// The origin member's store.
#[derive(Debug, Clone)]
pub enum StoreChoice {
    Sqlite,
    /// `replicas` (at least 1) `serve` processes sharing the database at
    /// `url`, or a fresh database of a throwaway cluster when `None`.
    Postgres {
        url: Option<String>,
        replicas: usize,
    },
}

impl Options {
    /// Configurations to run, as origin replica counts (0 = SQLite), the
    /// first one getting the full run.
    fn store_plan(&self) -> Vec<usize> {
        let replicas = match &self.store {
            StoreChoice::Sqlite => 0,
            StoreChoice::Postgres { replicas, .. } => (*replicas).max(1),
        };
        if self.compare_stores {
            vec![0, 1, self.compare_replicas.max(2)]
        } else {
            vec![replicas]
        }
    }
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

    let plan = opts.store_plan();
    let mut pg = PgSource::new(&opts.store);
    let temp = tempfile::tempdir().map_err(|e| BenchError::io("temporary directory", e))?;
    let dir = opts.dir.clone().unwrap_or_else(|| temp.path().to_owned());
    let count = match opts.duration {
        Some(d) => (d.as_secs_f64() * DURATION_POOL_PER_SEC as f64).ceil() as usize,
        None => opts.count,
    }
    .clamp(1, POOL_CAP);
    let spec = LoadSpec {
        count,
        clients: opts.clients,
        max_submit: opts.duration.unwrap_or(MAX_SUBMIT),
        rate: None,
        delivery_timeout: DELIVERY_TIMEOUT,
    };

    // The first configuration gets the full run (half load, scaling); the
    // others of --compare-stores only the main load, on fresh clusters.
    let first_replicas = plan.first().copied().unwrap_or(0);
    let first = Measured::start(&dir, first_replicas, &mut pg, opts, &spec).await?;
    let Measured {
        cluster,
        bank,
        mut cursor,
        main,
        row,
    } = first;
    let mut stores = vec![row.clone()];
    let end_to_end = EndToEnd {
        fraction_of_crypto_ceiling: crypto_ceiling.fraction(row.load.delivered_per_sec),
        load: row.load.clone(),
        gateways: row.gateways.clone(),
        cpu_ms_per_exchange: row.cpu_ms_per_exchange,
        bench_process_cpu_secs: row.bench_process_cpu_secs,
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

    for replicas in plan.iter().skip(1).copied() {
        let sub = dir.join(format!("compare-{}", store_label(replicas)));
        let m = Measured::start(&sub, replicas, &mut pg, opts, &spec).await?;
        if opts.dir.is_some() {
            m.cluster.save_metrics().await?;
        }
        errors += m.main.errors;
        stores.push(m.row);
    }
    drop(pg);
    drop(temp);

    let mut report = Report {
        schema: "bashu-bench/1",
        started_at,
        machine,
        setup: Setup {
            build: if cfg!(debug_assertions) {
                "debug"
            } else {
                "release"
            },
            gateways: setup_gateways(first_replicas),
            store: setup_store(first_replicas),
            requested_count: opts.count,
            requested_duration_secs: opts.duration.map(|d| d.as_secs_f64()),
            clients: opts.clients,
        },
        crypto_ceiling,
        end_to_end,
        half_load,
        peer_comparison,
        scaling,
        stores,
        targets: Vec::new(),
        errors,
    };
    report.judge();
    write(&report, &opts.out)?;
    Ok(report)
}

/// `sqlite`, `postgresql-1`, `postgresql-2`, …
fn store_label(replicas: usize) -> String {
    if replicas == 0 {
        "sqlite".into()
    } else {
        format!("postgresql-{replicas}")
    }
}

fn setup_gateways(replicas: usize) -> String {
    if replicas == 0 {
        "two `bashu serve` child processes (cq, sc) on 127.0.0.1, mTLS, default config except rate limits"
            .into()
    } else {
        format!(
            "cq as {replicas} `bashu serve` replica process(es) sharing one PostgreSQL database, \
             the load spread over them round-robin by client; sc as one process on SQLite; \
             127.0.0.1, mTLS, default config except rate limits"
        )
    }
}

fn setup_store(replicas: usize) -> String {
    if replicas == 0 {
        "SQLite WAL with group commit (fsync before every answer, shared by concurrent writers); one commit per received batch and per settled batch".into()
    } else {
        "cq on PostgreSQL (writes serialized on the audit-head lock, docs/decisions.md); sc on SQLite WAL with group commit".into()
    }
}

/// Where PostgreSQL databases come from: the `--store-url` database, or a
/// throwaway `devpg` cluster started on first need (a fresh database per
/// configuration), stopped when this is dropped.
struct PgSource {
    url: Option<String>,
    dev: Option<DevPostgres>,
}

impl PgSource {
    fn new(store: &StoreChoice) -> Self {
        let url = match store {
            StoreChoice::Postgres { url, .. } => url.clone(),
            StoreChoice::Sqlite => None,
        };
        Self { url, dev: None }
    }

    fn database(&mut self) -> Result<StoreUrl, BenchError> {
        if let Some(url) = &self.url {
            return Ok(StoreUrl::new(url.clone()));
        }
        if self.dev.is_none() {
            let pg = DevPostgres::start().map_err(|e| {
                BenchError::Setup(format!(
                    "a PostgreSQL run needs a database: give --store-url postgres://… \
                     (no throwaway cluster could be started: {e})"
                ))
            })?;
            progress(&format!(
                "no --store-url: started a throwaway PostgreSQL 15 cluster (devpg) on 127.0.0.1:{}",
                pg.port()
            ));
            self.dev = Some(pg);
        }
        let pg = self
            .dev
            .as_ref()
            .ok_or_else(|| BenchError::Setup("no PostgreSQL cluster".into()))?;
        let url = pg
            .create_database()
            .map_err(|e| BenchError::Setup(format!("creating a database: {e}")))?;
        Ok(StoreUrl::new(url))
    }

    /// The local server's data directory, when its CPU can be read.
    fn data_dir(&self) -> Option<PathBuf> {
        self.dev.as_ref().map(|d| d.dir().join("data"))
    }
}

/// One configuration started, warmed up and measured under the main load.
struct Measured {
    cluster: Cluster,
    bank: crate::devfed::CreditBank,
    cursor: Option<u64>,
    main: LoadResult,
    row: StoreRun,
}

impl Measured {
    async fn start(
        dir: &std::path::Path,
        replicas: usize,
        pg: &mut PgSource,
        opts: &Options,
        spec: &LoadSpec,
    ) -> Result<Self, BenchError> {
        let label = store_label(replicas);
        let store = if replicas == 0 {
            OriginStore::Sqlite
        } else {
            OriginStore::Postgres {
                url: pg.database()?,
                replicas,
            }
        };
        progress(&format!("[{label}] starting gateways in {}", dir.display()));
        let cluster = Cluster::start(dir, &store).await?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let idle = cluster.samples()?;
        let bank = cluster.credit_bank(ORIGIN)?;
        let mut cursor = None;

        progress(&format!("[{label}] warm-up"));
        let warm = LoadSpec {
            count: WARM_UP,
            // One client per origin process, so every replica is warmed.
            clients: replicas.max(1),
            max_submit: MAX_SUBMIT,
            rate: None,
            delivery_timeout: DELIVERY_TIMEOUT,
        };
        let creds = driver::presign(&bank, warm.count, "warm")?;
        check_clean(
            "warm-up",
            &driver::run(&cluster, &warm, creds, &mut cursor).await?,
        )?;

        progress(&format!("[{label}] pre-signing {} credentials", spec.count));
        let creds = driver::presign(&bank, spec.count, "main")?;
        let bound = opts.duration.map_or(String::new(), |d| {
            format!(" or {:.1} s, whichever ends first", d.as_secs_f64())
        });
        progress(&format!(
            "[{label}] main run: {} exchanges{bound}, {} clients",
            spec.count, spec.clients
        ));
        let pg_data = if replicas == 0 { None } else { pg.data_dir() };
        let pg_before = pg_data.as_deref().map(procstat::postgres_cpu_secs).transpose()?;
        let before = cluster.samples()?;
        let self_before = procstat::sample("self")?;
        let main = driver::run(&cluster, spec, creds, &mut cursor).await?;
        let after = cluster.samples()?;
        let self_after = procstat::sample("self")?;
        let pg_after = pg_data.as_deref().map(procstat::postgres_cpu_secs).transpose()?;
        let delivered = main.delivered.max(1) as f64;
        let mut gateways = Vec::new();
        let mut cpu_total = 0.0;
        for ((((name, b), (_, a)), (_, i)), g) in before.iter().zip(&after).zip(&idle).zip(&cluster.gateways)
        {
            let cpu = a.cpu_secs - b.cpu_secs;
            cpu_total += cpu;
            gateways.push(GatewayUsage {
                member: name.clone(),
                pid: g.pid(),
                cpu_secs: cpu,
                cpu_ms_per_exchange: cpu * 1e3 / delivered,
                rss_idle_kib: i.rss_kib,
                rss_peak_kib: a.hwm_kib,
            });
        }
        let postgres_cpu_secs = pg_before.zip(pg_after).map(|(b, a)| a - b);
        let row = StoreRun {
            store: if replicas == 0 { "sqlite" } else { "postgresql" },
            replicas: replicas.max(1),
            load: LoadSummary::new(&main, None),
            gateways,
            cpu_ms_per_exchange: cpu_total * 1e3 / delivered,
            postgres_cpu_secs,
            postgres_cpu_ms_per_exchange: postgres_cpu_secs.map(|c| c * 1e3 / delivered),
            bench_process_cpu_secs: self_after.cpu_secs - self_before.cpu_secs,
        };
        Ok(Self {
            cluster,
            bank,
            cursor,
            main,
            row,
        })
    }
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
