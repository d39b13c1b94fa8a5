//! `bashu bench` (issue 6): end-to-end benchmark on a loopback federation.
//! The work is in [`crate::bench`]; this file maps flags to options and the
//! outcome to an exit code (1 if the run failed or saw any error).

use crate::bench::{self, Options, StoreChoice};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Exchanges in the main run (ignored with --duration).
    #[arg(long, default_value_t = 2000, conflicts_with = "duration")]
    pub count: usize,
    /// Run the main load for this many seconds instead of a fixed count.
    #[arg(long)]
    pub duration: Option<f64>,
    /// Concurrent credit-bank clients (one mTLS connection each).
    #[arg(long, default_value_t = 16)]
    pub clients: usize,
    /// Also measure throughput and p99 at 1, 8, 64 and 256 clients, and
    /// gateway RSS while --idle-connections connections are held open.
    #[arg(long)]
    pub scaling: bool,
    /// Exchanges per scaling level.
    #[arg(long, default_value_t = 1000)]
    pub scaling_count: usize,
    /// Idle mTLS connections held during --scaling (0 skips).
    #[arg(long, default_value_t = 1000)]
    pub idle_connections: usize,
    /// Compare verification with Node's `jose` (needs node and npm; installs
    /// jose from the npm registry into a temporary directory).
    #[arg(long)]
    pub node: bool,
    /// Milliseconds per crypto measurement (ceiling, peer comparison).
    #[arg(long, default_value_t = 2000)]
    pub crypto_ms: u64,
    /// Skip the run paced at half the measured peak (the p99 target's load).
    #[arg(long)]
    pub no_half_load: bool,
    /// Keep the dev federation (databases, gateway logs, and each gateway's
    /// final `/metrics` as `<member>/metrics.prom`) in this directory.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Run the origin member (cq) on this PostgreSQL database instead of
    /// SQLite (the receiver sc stays on SQLite).
    #[arg(long, value_name = "URL", conflicts_with = "compare_stores")]
    pub store_url: Option<String>,
    /// The origin's store; `postgres` without --store-url starts a
    /// throwaway PostgreSQL 15 cluster (devpg), as quickstart does.
    #[arg(long, value_enum)]
    pub store: Option<StoreKind>,
    /// Run cq as this many `bashu serve` replicas sharing the PostgreSQL
    /// database, clients spread over them round-robin (implies PostgreSQL).
    #[arg(long)]
    pub replicas: Option<usize>,
    /// Run the main load on SQLite, PostgreSQL with 1 replica and with
    /// max(--replicas, 2) replicas (same count and clients) on a throwaway
    /// cluster, and print them side by side.
    #[arg(long)]
    pub compare_stores: bool,
    /// Where to write the JSON report.
    #[arg(long, default_value = "target/bench/report.json")]
    pub out: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StoreKind {
    Sqlite,
    Postgres,
}

pub fn run(args: Args) -> ExitCode {
    super::init_tracing_quiet();
    let duration = match args.duration {
        None => None,
        Some(s) if s.is_finite() && s > 0.0 => Some(Duration::from_secs_f64(s)),
        Some(s) => {
            return super::fail(format!(
                "--duration must be a positive number of seconds, not {s}"
            ))
        }
    };
    if args.count == 0 || args.clients == 0 {
        return super::fail("--count and --clients must be at least 1");
    }
    let max = crate::devpki::MAX_REPLICAS;
    if args.replicas.is_some_and(|r| !(1..=max).contains(&r)) {
        return super::fail(format!("--replicas must be between 1 and {max}"));
    }
    let postgres =
        args.store_url.is_some() || args.replicas.is_some() || args.store == Some(StoreKind::Postgres);
    if postgres && args.store == Some(StoreKind::Sqlite) {
        return super::fail("--store sqlite cannot be combined with --store-url or --replicas");
    }
    let store = if postgres {
        StoreChoice::Postgres {
            url: args.store_url,
            replicas: args.replicas.unwrap_or(1),
        }
    } else {
        StoreChoice::Sqlite
    };
    // With --compare-stores the full run (half load, scaling) is SQLite's;
    // --replicas only sets the largest replica count compared.
    let store = if args.compare_stores {
        StoreChoice::Sqlite
    } else {
        store
    };
    let opts = Options {
        count: args.count,
        duration,
        clients: args.clients,
        scaling: args.scaling,
        scaling_count: args.scaling_count.max(1),
        idle_connections: args.idle_connections,
        node: args.node,
        crypto_time: Duration::from_millis(args.crypto_ms.max(10)),
        half_load: !args.no_half_load,
        out: args.out,
        dir: args.dir,
        compare_replicas: args.replicas.unwrap_or(2),
        store,
        compare_stores: args.compare_stores,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return super::fail(format!("cannot start the async runtime: {e}")),
    };
    match runtime.block_on(bench::run(&opts)) {
        Ok(report) => {
            println!("{}", report.summary());
            println!("Report written to {}", opts.out.display());
            if report.errors == 0 {
                ExitCode::SUCCESS
            } else {
                super::fail(format!("{} exchanges failed", report.errors))
            }
        }
        Err(e) => super::fail(format!("bench: {e}")),
    }
}
