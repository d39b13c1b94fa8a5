//! `bashu serve --config D/<member>/gateway.toml` (SPEC §8): runs one gateway
//! until SIGTERM or Ctrl-C, then drains gracefully.

use crate::config::Config;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Path of the gateway's `gateway.toml`.
    #[arg(long)]
    pub config: PathBuf,
    /// Log format: human-readable text or one JSON object per line.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

pub fn run(args: Args) -> ExitCode {
    let format = args.log_format;
    init_tracing(format);
    warn_unknown_env(std::env::vars());
    let fail = |e: &dyn std::fmt::Display| fail_in(format, e);
    let config = match Config::load_checked(&args.config) {
        Ok(c) => c,
        Err(e) => return fail(&e),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return fail(&format!("cannot start the async runtime: {e}")),
    };
    runtime.block_on(async move {
        let mut gateway = match crate::app::start(config).await {
            Ok(g) => g,
            Err(e) => return fail(&e),
        };
        match args.log_format {
            LogFormat::Text => eprintln!(
                "bashu: gateway {} listening on https://{} (metrics http://{})",
                gateway.member, gateway.api_addr, gateway.metrics_addr
            ),
            // Inside the JSON stream, so every line of output parses.
            LogFormat::Json => tracing::info!(
                member = %gateway.member,
                api = %format_args!("https://{}", gateway.api_addr),
                metrics = %format_args!("http://{}", gateway.metrics_addr),
                "gateway listening on https://{}",
                gateway.api_addr
            ),
        }
        tokio::select! {
            _ = termination() => {
                tracing::info!("shutdown requested; draining");
                gateway.shutdown().await;
                ExitCode::SUCCESS
            }
            _ = gateway.wait() => fail(&"a gateway task stopped unexpectedly"),
        }
    })
}

/// Resolves on SIGTERM or SIGINT.
async fn termination() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Reports a fatal error (exit 1): plain `bashu: error: …` for text logs,
/// an ERROR event inside the stream for JSON logs (so every line parses).
fn fail_in(format: LogFormat, err: &dyn std::fmt::Display) -> ExitCode {
    match format {
        LogFormat::Text => super::fail(err),
        LogFormat::Json => {
            tracing::error!(error = %err, "bashu: error: {err}");
            ExitCode::from(1)
        }
    }
}

/// Warns about each `BASHU_*` variable that nothing reads (a typo would
/// otherwise be ignored silently), naming the nearest known one.
fn warn_unknown_env<I: IntoIterator<Item = (String, String)>>(vars: I) {
    for unknown in crate::config::unknown_env_vars(vars) {
        match &unknown.nearest {
            Some(nearest) => tracing::warn!(
                variable = %unknown.name,
                nearest = %nearest,
                "unknown environment variable {} is ignored; did you mean {nearest}?",
                unknown.name
            ),
            None => tracing::warn!(
                variable = %unknown.name,
                "unknown environment variable {} is ignored (see docs/operations.md, Environment overrides)",
                unknown.name
            ),
        }
    }
}

/// Installs the global tracing subscriber; `RUST_LOG` overrides the level.
/// Colours only on a terminal (see [`super::use_colour`]).
pub fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(super::use_colour())
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}
