//! `bashu audit` (SPEC §8): operator checks of the hash-chained audit log.

use crate::config::Config;
use crate::store::{self, SqliteStore, Store, StoreError};
use clap::Subcommand;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: AuditCommand,
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Recompute the audit hash chain; exit 0 if intact, 1 if broken.
    Verify(VerifyArgs),
}

#[derive(Debug, clap::Args)]
#[group(required = true, multiple = false)]
struct VerifyArgs {
    /// Gateway config; the store is `<data_dir>/bashu.db`.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Path of the store database itself.
    #[arg(long)]
    db: Option<PathBuf>,
}

pub fn run(args: Args) -> ExitCode {
    match args.command {
        AuditCommand::Verify(v) => verify(v),
    }
}

fn verify(args: VerifyArgs) -> ExitCode {
    let path = match (args.db, args.config) {
        (Some(db), _) => db,
        (None, Some(config)) => match Config::load(&config) {
            Ok(cfg) => store::db_path(&cfg.data_dir),
            Err(e) => return super::fail(e),
        },
        // clap's argument group requires exactly one of the two.
        (None, None) => return super::fail("one of --config or --db is required"),
    };
    // Never create a store here: an empty one would "verify" trivially.
    let store = match SqliteStore::open_existing(&path) {
        Ok(s) => s,
        Err(e) => return super::fail(e),
    };
    match store.audit_verify() {
        Ok(report) => {
            println!(
                "audit log intact: {} entries, head {} ({})",
                report.entries,
                report.head_hash,
                path.display()
            );
            ExitCode::SUCCESS
        }
        Err(StoreError::AuditBroken { seq, reason }) => {
            println!("audit log BROKEN at seq {seq}: {reason} ({})", path.display());
            ExitCode::from(1)
        }
        Err(e) => super::fail(e),
    }
}
