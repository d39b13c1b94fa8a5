//! The `bashu` command line (SPEC §8).
//!
//! Each subcommand lives in its own file with its own `Args` and `run`, so the
//! command surface can grow without this file changing. Exit codes: 0 success,
//! 1 a domain failure (e.g. a credential that does not verify), 2 usage errors
//! (clap's default for bad arguments).

use clap::{Parser, Subcommand};
use std::process::ExitCode;

pub mod audit;
pub mod bench;
pub mod credential;
pub mod dev;
pub mod keys;
pub mod map;
pub mod quickstart;
mod quickstart_ha;
pub mod serve;
pub mod store;

/// Bashu federation gateway and operator tooling.
#[derive(Debug, Parser)]
#[command(name = "bashu", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Translate learning records between frameworks (JSON Lines on stdin).
    Map(map::Args),
    /// Manage the member's trust keys.
    Keys(keys::Args),
    /// Issue or verify a learning credential.
    Credential(credential::Args),
    /// Development helpers (dev PKI and federation).
    Dev(dev::Args),
    /// Run one gateway until SIGTERM.
    Serve(serve::Args),
    /// Make a dev federation, run two gateways and exchange fixture credentials.
    Quickstart(quickstart::Args),
    /// Inspect the audit log.
    Audit(audit::Args),
    /// Back up or restore the gateway's store.
    Store(store::Args),
    /// Measure end-to-end throughput and latency on a loopback federation.
    Bench(bench::Args),
}

/// Entry point of the `bashu` binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Map(a) => map::run(a),
        Command::Keys(a) => keys::run(a),
        Command::Credential(a) => credential::run(a),
        Command::Dev(a) => dev::run(a),
        Command::Serve(a) => serve::run(a),
        Command::Quickstart(a) => quickstart::run(a),
        Command::Audit(a) => audit::run(a),
        Command::Store(a) => store::run(a),
        Command::Bench(a) => bench::run(a),
    }
}

/// Prints an error the way every subcommand does and returns exit code 1.
pub fn fail(err: impl std::fmt::Display) -> ExitCode {
    eprintln!("bashu: error: {err}");
    ExitCode::from(1)
}

/// Logging for interactive commands: warnings and errors only, unless
/// `RUST_LOG` asks for more.
pub fn init_tracing_quiet() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
