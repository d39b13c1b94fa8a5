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
    init_tracing(args.log_format);
    let config = match Config::load_checked(&args.config) {
        Ok(c) => c,
        Err(e) => return super::fail(e),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return super::fail(format!("cannot start the async runtime: {e}")),
    };
    runtime.block_on(async move {
        let mut gateway = match crate::app::start(config).await {
            Ok(g) => g,
            Err(e) => return super::fail(e),
        };
        eprintln!(
            "bashu: gateway {} listening on https://{} (metrics http://{})",
            gateway.member, gateway.api_addr, gateway.metrics_addr
        );
        tokio::select! {
            _ = termination() => {
                tracing::info!("shutdown requested; draining");
                gateway.shutdown().await;
                ExitCode::SUCCESS
            }
            _ = gateway.wait() => super::fail("a gateway task stopped unexpectedly"),
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

/// Installs the global tracing subscriber; `RUST_LOG` overrides the level.
pub fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}
