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
        /// Also write this many replica configs of one member
        /// (`<member>/replica-<i>/gateway.toml`) sharing the PostgreSQL
        /// database of --store-url.
        #[arg(long, requires = "store_url")]
        replicas: Option<usize>,
        /// `postgres://user:password@host:port/database` the replicas share
        /// (use one database per member).
        #[arg(long)]
        store_url: Option<String>,
        /// The member that runs as replicas (default: the first of --members).
        #[arg(long)]
        replicated_member: Option<String>,
    },
}

pub fn run(args: Args) -> ExitCode {
    match args.command {
        DevCommand::Init {
            dir,
            members,
            force,
            replicas,
            store_url,
            replicated_member,
        } => {
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
                    if let (Some(n), Some(url)) = (replicas, store_url) {
                        let member = replicated_member
                            .or_else(|| members.first().cloned())
                            .unwrap_or_default();
                        let url = crate::config::StoreUrl::new(url);
                        match devpki::write_replicas(&fed, &member, n, &url) {
                            Ok(written) => {
                                println!("  {member} as {n} replicas sharing {url}:");
                                for r in &written {
                                    println!(
                                        "    replica {}: api {}  metrics {}  config {}",
                                        r.index,
                                        r.api_addr,
                                        r.metrics_addr,
                                        r.config.display()
                                    );
                                }
                                println!(
                                    "  run each with `bashu serve --config <config>`; peers reach replica 1 \
                                     (put a load balancer in front in production)"
                                );
                            }
                            Err(err) => return super::fail(err),
                        }
                    }
                    ExitCode::SUCCESS
                }
                Err(err) => super::fail(err),
            }
        }
    }
}
