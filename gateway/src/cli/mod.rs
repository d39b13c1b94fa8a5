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
pub mod pki;
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
    /// Federation CA and member certificates (gateway, credit bank, operator).
    Pki(pki::Args),
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
        Command::Pki(a) => pki::run(a),
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
        .with_ansi(use_colour())
        .with_writer(std::io::stderr)
        .try_init();
}

/// ANSI colours in log output only when stderr is a terminal and
/// `NO_COLOR` is unset or empty (<https://no-color.org>): files and pipes
/// get plain text.
pub fn use_colour() -> bool {
    use std::io::IsTerminal as _;
    colour_wanted(
        std::io::stderr().is_terminal(),
        std::env::var_os("NO_COLOR").as_deref(),
    )
}

fn colour_wanted(terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    terminal && no_color.is_none_or(|v| v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::colour_wanted;
    use std::ffi::OsStr;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(colour_wanted(true, None));
        assert!(colour_wanted(true, Some(OsStr::new(""))));
        assert!(!colour_wanted(true, Some(OsStr::new("1"))));
        assert!(!colour_wanted(false, None));
    }
}
