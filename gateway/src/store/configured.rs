//! Opening the store a configuration names: SQLite in `data_dir` (the
//! default) or the PostgreSQL database of `[store] url`.

use super::postgres::{open_postgres, PgOptions, PgStore};
use super::{open_data_dir, CheckpointStore, SqliteStore, Store, StoreError, StoreOptions};
use crate::config::Config;
use std::path::Path;
use std::sync::Arc;

/// A store with its signed checkpoints: what tools and the gateway use.
pub trait AuditedStore: Store + CheckpointStore {}
impl<T: Store + CheckpointStore> AuditedStore for T {}

/// The store a gateway serves from, as both trait objects.
pub struct OpenedStore {
    pub store: Arc<dyn Store>,
    pub checkpoints: Arc<dyn CheckpointStore>,
    /// `"SQLite"` or `"PostgreSQL"`, for logs.
    pub backend: &'static str,
}

/// Opens the configured store with every start-up guard (data directory
/// lock, identity, a durable probe write). Blocking: call it off the async
/// workers.
pub fn open_configured(config: &Config) -> Result<OpenedStore, StoreError> {
    match &config.store.url {
        None => {
            let s = Arc::new(open_data_dir(
                &config.data_dir,
                &config.member,
                StoreOptions::default(),
            )?);
            Ok(OpenedStore {
                store: s.clone(),
                checkpoints: s,
                backend: super::sqlite::BACKEND,
            })
        }
        Some(url) => {
            let options = PgOptions {
                pool_size: config.store.pool_size,
                ..PgOptions::default()
            };
            let s = Arc::new(open_postgres(&config.data_dir, &config.member, url, options)?);
            tracing::info!(store = %url, pool_size = options.pool_size, "store: PostgreSQL");
            Ok(OpenedStore {
                store: s.clone(),
                checkpoints: s,
                backend: super::postgres::BACKEND,
            })
        }
    }
}

/// Opens an existing store for a tool such as `bashu audit verify`, which
/// must never conjure an empty (and trivially intact) one: with a config
/// naming PostgreSQL, that database (it must hold a store identity);
/// otherwise the SQLite file `sqlite_path`, which must exist. No data
/// directory lock is taken: tools only read.
pub fn open_for_tools(
    config: Option<&Config>,
    sqlite_path: &Path,
) -> Result<Box<dyn AuditedStore>, StoreError> {
    match config.and_then(|c| c.store.url.as_ref().map(|url| (c, url))) {
        Some((cfg, url)) => {
            let options = PgOptions {
                pool_size: 2,
                ..PgOptions::default()
            };
            let store = PgStore::connect(url, options)?;
            match store.identity()? {
                Some((_, member)) if member == cfg.member => Ok(Box::new(store)),
                Some((id, member)) => Err(StoreError::Identity {
                    marker: cfg.data_dir.join(super::MARKER_FILE),
                    db: url.redacted().into(),
                    reason: format!(
                        "the database is store {id} of member {member}, not of {}",
                        cfg.member
                    ),
                }),
                None => Err(StoreError::Identity {
                    marker: cfg.data_dir.join(super::MARKER_FILE),
                    db: url.redacted().into(),
                    reason: "the database holds no store (no store identity): no gateway ever started on it"
                        .into(),
                }),
            }
        }
        None => Ok(Box::new(SqliteStore::open_existing(sqlite_path)?)),
    }
}
