//! The development federation written by `bashu dev init` (SPEC §8).
//!
//! One throwaway CA, and per member: gateway, credit-bank and operator
//! certificates carrying their SPIFFE identities, the member's keys, and a
//! `gateway.toml` whose peers are every other member. Everything uses paths
//! relative to the member directory, so the whole tree can be moved. Private
//! keys are written with mode 0600. This is for development and tests only:
//! the CA key sits next to the certificates it signed.

mod ca;
mod files;
mod keys;
mod layout;
mod replicas;

pub use ca::{DevCa, IssuedCert, LeafSpec};
pub use files::free_ports;
pub(crate) use files::write as write_file;
pub use layout::{init, init_with, DevFederation, DevMember, MemberSpec};
pub use replicas::{write_replicas, DevReplica, MAX_REPLICAS};

use std::path::PathBuf;

/// Why a dev federation could not be written.
#[derive(Debug, thiserror::Error)]
pub enum DevPkiError {
    #[error("certificate generation: {0}")]
    Certificate(#[from] rcgen::Error),
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("cannot pick a free port on 127.0.0.1: {0}")]
    Port(std::io::Error),
    #[error("{0:?} is not a member id (a-z0-9, 2-16 characters)")]
    BadMember(String),
    #[error("member {0:?} given twice")]
    DuplicateMember(String),
    #[error("at least one member is required")]
    NoMembers,
    #[error("key generation: {0}")]
    Key(#[from] crate::jose::JoseError),
    #[error("key store: {0}")]
    KeyStore(#[from] crate::trust::KeyStoreError),
    #[error("{0} is not empty; refusing to overwrite a federation there (use --force to replace it, or pick a new directory)")]
    NotEmpty(PathBuf),
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("the CA private key is not the key of the CA certificate")]
    CaKeyMismatch,
    #[error("replicas: {0}")]
    Replicas(String),
}

/// Refuses a directory that already holds anything: writing a new CA, keys
/// and ports over a running federation would silently replace them (the
/// gateways hot-reload certificates). A missing directory is fine.
pub fn ensure_empty(dir: &std::path::Path) -> Result<(), DevPkiError> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => match entries.next() {
            None => Ok(()),
            Some(_) => Err(DevPkiError::NotEmpty(dir.to_owned())),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(DevPkiError::Read {
            path: dir.to_owned(),
            source,
        }),
    }
}
