//! What a run is configured with, as plain data: made from command-line
//! flags, a `bashu dev init` directory, or `--spawn`, and turned into a
//! [`crate::context::Ctx`] by loading every file it names.

use crate::client::{ClientError, Identity};
use crate::craft::CraftError;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(transparent)]
    Key(#[from] CraftError),
    #[error("cannot read federation key {path}: {message}")]
    FederationKey { path: PathBuf, message: String },
    #[error("{0}")]
    Invalid(String),
}

/// A certificate and key pair on disk.
#[derive(Debug, Clone)]
pub struct IdentityFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl IdentityFiles {
    pub(crate) fn load(&self) -> Result<Identity, ClientError> {
        Identity::load(&self.cert, &self.key)
    }
}

/// A peer gateway as the suite impersonates it (`--role peer`).
#[derive(Debug, Clone)]
pub struct PeerSetup {
    pub member: String,
    pub identity: IdentityFiles,
    /// The peer gateway's private translation-signing key.
    pub gateway_key: Option<PathBuf>,
    /// The peer credit bank's private issuer key (signs chain originals).
    pub issuer_key: Option<PathBuf>,
}

/// The destination member's gateway and credit bank, to read its inbox.
#[derive(Debug, Clone)]
pub struct DestinationSetup {
    pub target: String,
    pub identity: IdentityFiles,
    /// The destination member's pinned federation public key.
    pub federation_key: Option<PathBuf>,
}

/// Everything a run is configured with, as plain data (CLI, dev dir, spawn).
#[derive(Debug, Clone)]
pub struct Setup {
    pub target: String,
    pub ca: PathBuf,
    pub server_name: Option<String>,
    pub member: String,
    pub destination: String,
    /// Home framework of the target member's credit bank (`cqf`, `wfs`, …).
    pub framework: Option<String>,
    pub credit_bank: Option<IdentityFiles>,
    pub issuer_key: Option<PathBuf>,
    pub operator: Option<IdentityFiles>,
    pub peer: Option<PeerSetup>,
    pub dest: Option<DestinationSetup>,
    /// The target member's pinned federation public key (JWK).
    pub federation_key: Option<PathBuf>,
    /// The federation CA's private key (PEM): lets TLS tests mint expired
    /// and wrong-SAN client certificates the CA itself signed.
    pub ca_key: Option<PathBuf>,
    /// An issuer key whose kid the target lists as `revoked`.
    pub revoked_issuer_key: Option<PathBuf>,
    /// Learning records to wrap in credentials (default: the shipped ones).
    pub records: Option<PathBuf>,
    /// Golden mapping expectations (default: the shipped ones).
    pub goldens: Option<PathBuf>,
    pub request_timeout: Duration,
    pub delivery_timeout: Duration,
}

impl Setup {
    /// Defaults for everything but where the target is and what trusts it.
    pub fn new(target: impl Into<String>, ca: impl Into<PathBuf>, member: &str, destination: &str) -> Self {
        Self {
            target: target.into(),
            ca: ca.into(),
            server_name: None,
            member: member.to_owned(),
            destination: destination.to_owned(),
            framework: None,
            credit_bank: None,
            issuer_key: None,
            operator: None,
            peer: None,
            dest: None,
            federation_key: None,
            ca_key: None,
            revoked_issuer_key: None,
            records: None,
            goldens: None,
            request_timeout: Duration::from_secs(10),
            delivery_timeout: Duration::from_secs(30),
        }
    }
}
