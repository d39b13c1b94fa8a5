//! Opening the PostgreSQL store for a gateway replica.
//!
//! With PostgreSQL the history lives in the database, shared by every
//! replica; the data directory is per replica and keeps only local state
//! (its lock, trust-key seq marks, the identity marker). So:
//!
//! - **Lock.** Each replica still holds `<data_dir>/lock`: two processes
//!   must not share one data directory (they would share seq marks), but
//!   replicas on one host each get their own directory.
//! - **Identity in the database.** The first replica to start on a new
//!   database records a random store id and the member in
//!   `store_identity`; every replica refuses a database of another member.
//! - **Marker as a guard.** A replica writes that identity into
//!   `<data_dir>/store-id`. Later starts refuse a database whose identity
//!   differs from the marker, or that has none while the marker exists (the
//!   URL now points at a new, empty or foreign database, whose inbox cursors
//!   would restart below what credit banks have read). A replica without a
//!   marker (a new replica) adopts the database's identity.
//! - **Health at start.** One committed probe write before serving.

use super::{PgOptions, PgStore};
use crate::config::StoreUrl;
use crate::store::data_dir::{lock_dir, read_dir_marker, same_member, write_dir_marker};
use crate::store::{Store, StoreError, MARKER_FILE};
use std::path::{Path, PathBuf};

/// Opens the PostgreSQL store at `url` for the gateway of `member` whose
/// data directory is `dir`, with the guards of the module docs. The
/// returned store holds the directory lock until it is dropped.
pub fn open_postgres(
    dir: &Path,
    member: &str,
    url: &StoreUrl,
    options: PgOptions,
) -> Result<PgStore, StoreError> {
    let lock = lock_dir(dir)?;
    let store = PgStore::connect(url, options)?;
    // One durable write before serving: a standby, a full disk or missing
    // privileges stop the start here.
    store.ping()?;

    let marker_path = dir.join(MARKER_FILE);
    let identity_error = |reason: String| StoreError::Identity {
        marker: marker_path.clone(),
        db: PathBuf::from(url.redacted()),
        reason,
    };
    let marker = read_dir_marker(dir)?;
    let (store_id, owner) = match (store.identity()?, &marker) {
        (Some(identity), _) => identity,
        (None, Some((id, m))) => {
            return Err(identity_error(format!(
                "the marker says store {id} of member {m} lives in this database, but the database \
                 has no store identity (a new, empty or foreign database)"
            )))
        }
        (None, None) => {
            let id = uuid::Uuid::new_v4().to_string();
            let claimed = store.claim_identity(&id, member, time::OffsetDateTime::now_utc())?;
            if claimed.0 == id {
                tracing::info!(store_id = %id, store = %store.target(), "new PostgreSQL store created");
            }
            claimed
        }
    };
    same_member(&owner, member).map_err(identity_error)?;
    match marker {
        Some((id, _)) if id != store_id => {
            return Err(identity_error(format!(
                "the database is store {store_id}, but the marker says store {id}"
            )))
        }
        Some(_) => {}
        None => write_dir_marker(dir, &store_id, &owner)?,
    }
    Ok(store.with_lock(lock))
}
