//! `--spawn`: a self-contained run. Writes a dev federation into a temp dir
//! and starts its gateways in-process (the gateway's `devfed`, the same code
//! path as `bashu serve`), then hands back a [`Setup`] pointing at them. This
//! is the only place the suite uses the gateway library; the tests still go
//! through HTTP over mTLS. Because the suite owns these gateways it can also
//! act as their operator ([`KeyStoreControl`]).

use crate::context::{ControlFuture, TargetControl};
use crate::setup::Setup;
use bashu_gateway::devfed::DevCluster;
use bashu_gateway::jose::Alg;
use bashu_gateway::trust::{KeyRole, KeyStore};
use josekit::jwk::Jwk;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("--spawn needs two different members, got {0:?} twice")]
    SameMember(String),
    #[error("cannot create a temp dir: {0}")]
    TempDir(std::io::Error),
    #[error("cannot start the dev federation: {0}")]
    Start(String),
}

/// Running gateways and the directory they live in.
pub struct Spawned {
    pub setup: Setup,
    pub control: Option<Arc<dyn TargetControl>>,
    cluster: DevCluster,
    _dir: tempfile::TempDir,
}

impl std::fmt::Debug for Spawned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spawned")
            .field("setup", &self.setup)
            .finish_non_exhaustive()
    }
}

impl Spawned {
    /// Stops the gateways gracefully; the temp dir goes with `self`.
    pub async fn shutdown(self) {
        self.cluster.shutdown().await;
    }
}

/// Starts gateways for `member` (the target) and `destination` (its peer).
pub async fn start(member: &str, destination: &str) -> Result<Spawned, SpawnError> {
    if member == destination {
        return Err(SpawnError::SameMember(member.to_owned()));
    }
    let dir = tempfile::Builder::new()
        .prefix("bashu-conformance-")
        .tempdir()
        .map_err(SpawnError::TempDir)?;
    let cluster = DevCluster::init_and_start(dir.path(), &[member, destination])
        .await
        .map_err(|e| SpawnError::Start(e.to_string()))?;
    let setup = match crate::devdir::setup(dir.path(), member, destination) {
        Ok(setup) => setup,
        Err(e) => {
            cluster.shutdown().await;
            return Err(SpawnError::Start(e.to_string()));
        }
    };
    let keystore = cluster
        .federation
        .member(member)
        .map(|m| m.keystore.clone())
        .ok_or_else(|| SpawnError::Start(format!("dev federation has no member {member}")))?;
    Ok(Spawned {
        setup,
        control: Some(Arc::new(KeyStoreControl { keystore })),
        cluster,
        _dir: dir,
    })
}

/// Operator actions on a spawned gateway: edits its key store the way
/// `bashu keys …` does; the running gateway notices the change and
/// re-publishes its key set.
struct KeyStoreControl {
    keystore: PathBuf,
}

impl KeyStoreControl {
    fn edit<T>(&self, f: impl FnOnce(&mut KeyStore, i64) -> Result<T, String>) -> Result<T, String> {
        let mut store = KeyStore::load(&self.keystore).map_err(|e| e.to_string())?;
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let out = f(&mut store, now)?;
        store.save(&self.keystore).map_err(|e| e.to_string())?;
        Ok(out)
    }
}

impl TargetControl for KeyStoreControl {
    fn rotate(&self) -> ControlFuture<'_, ()> {
        Box::pin(async move {
            self.edit(|store, now| {
                store
                    .generate(KeyRole::Gateway, Alg::Es256, now)
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            })
        })
    }

    fn revoked_issuer_key(&self) -> ControlFuture<'_, Jwk> {
        Box::pin(async move {
            let key = self.edit(|store, now| {
                let key = store
                    .generate_issuer(Alg::Es256, now)
                    .map_err(|e| e.to_string())?;
                store.revoke(key.kid(), now).map_err(|e| e.to_string())?;
                Ok(key)
            })?;
            Jwk::from_map(key.private_jwk().clone()).map_err(|e| e.to_string())
        })
    }
}
