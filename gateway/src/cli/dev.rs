//! `bashu dev` (SPEC §8): development helpers.

use crate::devpki;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: DevCommand,
}

#[derive(Debug, clap::Subcommand)]
enum DevCommand {
    /// Write a complete dev federation: CA, certificates, keys and one
    /// gateway.toml per member, on free 127.0.0.1 ports.
    Init {
        /// Directory to write into (created if missing).
        #[arg(long)]
        dir: PathBuf,
        /// Comma-separated member ids.
        #[arg(long, value_delimiter = ',', default_value = "cq,sc")]
        members: Vec<String>,
        /// Write even if the directory is not empty (replaces the CA, keys
        /// and ports of any federation there).
        #[arg(long)]
        force: bool,
    },
}

pub fn run(args: Args) -> ExitCode {
    match args.command {
        DevCommand::Init { dir, members, force } => {
            if !force {
                if let Err(e) = devpki::ensure_empty(&dir) {
                    return super::fail(e);
                }
            }
            let ids: Vec<&str> = members.iter().map(String::as_str).collect();
            match devpki::init(&dir, &ids) {
                Ok(fed) => {
                    println!("dev federation written to {}", fed.dir.display());
                    println!("  CA: {}", fed.ca_cert.display());
                    for m in &fed.members {
                        println!(
                            "  {} ({}): api {}  metrics {}  config {}",
                            m.id,
                            m.framework,
                            m.api_addr,
                            m.metrics_addr,
                            m.config.display()
                        );
                    }
                    ExitCode::SUCCESS
                }
                Err(err) => super::fail(err),
            }
        }
    }
}
