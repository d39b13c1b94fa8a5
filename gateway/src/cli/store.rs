//! `bashu store backup|restore`: consistent snapshots of a gateway's store
//! and putting one back without breaking the contract's promises (SPEC
//! v1.1 §5): a restored receiver never reuses an inbox cursor, and the
//! operator learns which moment to ask origins to redeliver from.

use crate::config::Config;
use crate::store::{self, SqliteStore, Store, StoreError};
use clap::Subcommand;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: StoreCommand,
}

#[derive(Debug, Subcommand)]
enum StoreCommand {
    /// Write a consistent snapshot of the store (safe while the gateway runs).
    Backup {
        /// Gateway config; the store is `<data_dir>/bashu.db`.
        #[arg(long)]
        config: PathBuf,
        /// The backup file to create (must not exist).
        #[arg(long)]
        out: PathBuf,
    },
    /// Replace the store with a backup (the gateway must be stopped).
    Restore {
        #[arg(long)]
        config: PathBuf,
        /// A file written by `bashu store backup`.
        #[arg(long)]
        from: PathBuf,
    },
}

/// Why a backup or restore did not happen.
#[derive(Debug, thiserror::Error)]
pub enum StoreCliError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("{path}: {source}")]
    Store { path: PathBuf, source: StoreError },
    #[error("{0} already exists; choose a new file name")]
    Exists(PathBuf),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    /// `bashu store backup|restore` copy the SQLite file; a PostgreSQL
    /// store is backed up with PostgreSQL's own tools.
    #[error("the store is PostgreSQL ({0}): back it up with pg_basebackup and WAL archiving (point-in-time recovery) or pg_dump; see docs/operations.md \"High availability\"")]
    Postgres(String),
}

/// What a verified backup holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupSummary {
    pub audit_entries: u64,
    pub last_change: Option<OffsetDateTime>,
}

pub fn run(args: Args) -> ExitCode {
    let result = match args.command {
        StoreCommand::Backup { config, out } => load(&config).and_then(|db| {
            let summary = backup(&db, &out)?;
            println!(
                "backup {} written and verified: {} audit entries, last change {}",
                out.display(),
                summary.audit_entries,
                fmt_time(summary.last_change)
            );
            Ok(())
        }),
        StoreCommand::Restore { config, from } => load(&config).and_then(|db| {
            let (summary, aside) = restore(&db, &from)?;
            println!("restored {} from {}", db.display(), from.display());
            if let Some(aside) = aside {
                println!("the replaced store was kept as {}", aside.display());
            }
            println!(
                "the backup knows changes up to {}; inbox cursors continue above every cursor issued before",
                fmt_time(summary.last_change)
            );
            println!(
                "next: start the gateway; ask each origin's operator to redeliver what this member received since then:\n  POST /v1/admin/redeliver {{\"destination\":\"<this member>\",\"since\":\"{}\"}}\nand have this member's credit bank resubmit what it sent since then (receivers recognise duplicates).",
                fmt_time(summary.last_change)
            );
            Ok(())
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => super::fail(e),
    }
}

fn load(config: &Path) -> Result<PathBuf, StoreCliError> {
    let cfg = Config::load(config)?;
    if let Some(url) = &cfg.store.url {
        return Err(StoreCliError::Postgres(url.redacted()));
    }
    Ok(store::db_path(&cfg.data_dir))
}

fn fmt_time(t: Option<OffsetDateTime>) -> String {
    t.and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| "(empty store)".into())
}

fn store_err(path: &Path) -> impl FnOnce(StoreError) -> StoreCliError + '_ {
    move |source| StoreCliError::Store {
        path: path.to_owned(),
        source,
    }
}

/// Snapshots the store at `db` into `out`, then checks the copy (SQLite
/// integrity and the audit chain) before calling it a backup.
pub fn backup(db: &Path, out: &Path) -> Result<BackupSummary, StoreCliError> {
    if out.exists() {
        return Err(StoreCliError::Exists(out.to_owned()));
    }
    let live = SqliteStore::open_existing(db).map_err(store_err(db))?;
    live.backup_to(out).map_err(store_err(out))?;
    // A backup holds learners' records: owner-only, like the store itself.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(out, std::fs::Permissions::from_mode(0o600)).map_err(|source| {
            StoreCliError::Io {
                path: out.to_owned(),
                source,
            }
        })?;
    }
    verify(out)
}

/// Checks a backup file without changing it.
pub fn verify(file: &Path) -> Result<BackupSummary, StoreCliError> {
    let copy = SqliteStore::open_existing(file).map_err(store_err(file))?;
    copy.integrity_check().map_err(store_err(file))?;
    let report = copy.audit_verify().map_err(store_err(file))?;
    Ok(BackupSummary {
        audit_entries: report.entries,
        last_change: copy.last_change_at().map_err(store_err(file))?,
    })
}

/// Puts the backup `from` in place of the store at `db`. The current files
/// are moved aside (never deleted), the copy is fsynced and renamed into
/// place, and the inbox cursor floor is raised to now, so no cursor issued
/// since the backup was taken is ever handed out again. Returns what the
/// backup holds and where the replaced store went.
pub fn restore(db: &Path, from: &Path) -> Result<(BackupSummary, Option<PathBuf>), StoreCliError> {
    // A running gateway holds this lock: never swap its database under it.
    let dir = db.parent().unwrap_or_else(|| Path::new("."));
    let _lock = store::DirLock::acquire(dir).map_err(store_err(dir))?;
    let summary = verify(from)?;
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| StoreCliError::Io { path, source }
    };
    let staging = db.with_extension("db.restoring");
    std::fs::copy(from, &staging).map_err(io(&staging))?;
    std::fs::File::open(&staging)
        .and_then(|f| f.sync_all())
        .map_err(io(&staging))?;
    let aside = if db.exists() {
        let stamp = OffsetDateTime::now_utc().unix_timestamp();
        let aside = db.with_extension(format!("db.before-restore-{stamp}"));
        std::fs::rename(db, &aside).map_err(io(db))?;
        Some(aside)
    } else {
        None
    };
    // The old WAL belongs to the old database: replaying it over the
    // restored one would corrupt it.
    for suffix in ["-wal", "-shm"] {
        let side = PathBuf::from(format!("{}{suffix}", db.display()));
        if side.exists() {
            let target = aside
                .as_ref()
                .map(|a| PathBuf::from(format!("{}{suffix}", a.display())));
            match target {
                Some(t) => std::fs::rename(&side, &t).map_err(io(&side))?,
                None => std::fs::remove_file(&side).map_err(io(&side))?,
            }
        }
    }
    std::fs::rename(&staging, db).map_err(io(db))?;
    if let Some(dir) = db.parent() {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io(dir))?;
    }
    let restored = SqliteStore::open_existing(db).map_err(store_err(db))?;
    let now = OffsetDateTime::now_utc();
    let floor = crate::store::cursor_floor_at(now);
    restored
        .raise_inbox_cursor_floor(floor, now)
        .map_err(store_err(db))?;
    Ok((summary, aside))
}
