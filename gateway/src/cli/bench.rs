//! `bashu bench` (issue 6): end-to-end benchmark on a loopback federation.
//! The work is in [`crate::bench`]; this file maps flags to options and the
//! outcome to an exit code (1 if the run failed or saw any error).

use crate::bench::{self, Options};
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
    /// Where to write the JSON report.
    #[arg(long, default_value = "target/bench/report.json")]
    pub out: PathBuf,
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
