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
    let keystore_of = |m: &str| {
        cluster
            .federation
            .member(m)
            .map(|m| m.keystore.clone())
            .ok_or_else(|| SpawnError::Start(format!("dev federation has no member {m}")))
    };
    let (keystore, peer_keystore) = (keystore_of(member)?, keystore_of(destination)?);
    Ok(Spawned {
        setup,
        control: Some(Arc::new(KeyStoreControl {
            keystore,
            peer_keystore,
        })),
        cluster,
        _dir: dir,
    })
}

/// Operator actions on a spawned gateway: edits its key store the way
/// `bashu keys …` does; the running gateway notices the change and
/// re-publishes its key set.
struct KeyStoreControl {
    keystore: PathBuf,
    /// The destination's key store: the suite acts as that peer.
    peer_keystore: PathBuf,
}

impl KeyStoreControl {
    fn edit<T>(&self, f: impl FnOnce(&mut KeyStore, i64) -> Result<T, String>) -> Result<T, String> {
        edit_keystore(&self.keystore, f)
    }
}

fn edit_keystore<T>(
    path: &std::path::Path,
    f: impl FnOnce(&mut KeyStore, i64) -> Result<T, String>,
) -> Result<T, String> {
    let mut store = KeyStore::load(path).map_err(|e| e.to_string())?;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let out = f(&mut store, now)?;
    store.save(path).map_err(|e| e.to_string())?;
    Ok(out)
}

/// A fresh issuer key, revoked at once; its private half and `revoked_at`.
fn fresh_revoked_issuer(store: &mut KeyStore, now: i64) -> Result<(Jwk, i64), String> {
    let key = store
        .generate_issuer(Alg::Es256, now)
        .map_err(|e| e.to_string())?;
    store.revoke(key.kid(), now).map_err(|e| e.to_string())?;
    let jwk = Jwk::from_map(key.private_jwk().clone()).map_err(|e| e.to_string())?;
    Ok((jwk, now))
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
        Box::pin(async move { self.edit(fresh_revoked_issuer).map(|(jwk, _)| jwk) })
    }

    fn revoked_peer_issuer_key(&self) -> ControlFuture<'_, (Jwk, i64)> {
        Box::pin(async move { edit_keystore(&self.peer_keystore, fresh_revoked_issuer) })
    }
}
