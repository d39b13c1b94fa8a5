//! Why a credential was refused, mapped onto the SPEC §4 catalogue.

use crate::jose::json_strict::JsonError;
use crate::jose::JoseError;
use crate::problem::{Problem, ProblemType};
use crate::trust::LookupError;

/// A credential, translation or chain that did not verify (or could not be
/// issued). Messages name fields, kids and members, never payload values
/// beyond short identifiers.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error(transparent)]
    Jose(#[from] JoseError),
    #[error("payload is not acceptable JSON: {0}")]
    Json(#[from] JsonError),
    #[error("credential violates the profile: {0}")]
    Schema(String),
    #[error("issuer mismatch: {0}")]
    IssuerMismatch(String),
    #[error(transparent)]
    Key(#[from] LookupError),
    #[error("credential expired (validUntil {0})")]
    Expired(String),
    #[error("credential not valid before {0}")]
    NotYetValid(String),
    #[error("chain link {index}: {reason}")]
    ChainBroken { index: usize, reason: String },
    #[error("chain link {index}: mapping table {table_id} {version} is not installed here")]
    MappingVersionUnknown {
        index: usize,
        table_id: String,
        version: String,
    },
    #[error("chain link {index}: {source}")]
    ChainLink {
        index: usize,
        #[source]
        source: Box<CredentialError>,
    },
}

impl CredentialError {
    /// The problem type of SPEC §4.
    ///
    /// A link of a chain that fails on its own is reported as
    /// `chain-broken` (the chain is what was submitted), except when the
    /// cause is transient (`unavailable`: the sender should retry rather
    /// than give up) or a key problem (`revoked-key`, `unknown-key`: SPEC §2
    /// names those, and the sender's operator needs to know which).
    pub fn kind(&self) -> ProblemType {
        match self {
            CredentialError::Jose(e) => e.problem_type(),
            CredentialError::Json(_) => ProblemType::MalformedRequest,
            CredentialError::Schema(_) => ProblemType::SchemaViolation,
            CredentialError::IssuerMismatch(_) => ProblemType::IssuerMismatch,
            CredentialError::Key(e) => e.problem_type(),
            CredentialError::Expired(_) => ProblemType::CredentialExpired,
            CredentialError::NotYetValid(_) => ProblemType::CredentialNotYetValid,
            CredentialError::ChainBroken { .. } => ProblemType::ChainBroken,
            CredentialError::MappingVersionUnknown { .. } => ProblemType::MappingVersionUnknown,
            CredentialError::ChainLink { source, .. } => match source.kind() {
                kind @ (ProblemType::Unavailable | ProblemType::RevokedKey | ProblemType::UnknownKey) => kind,
                _ => ProblemType::ChainBroken,
            },
        }
    }

    /// The problem to show the caller.
    pub fn problem(&self) -> Problem {
        Problem::new(self.kind(), self.to_string())
    }

    pub(crate) fn schema(msg: impl Into<String>) -> Self {
        CredentialError::Schema(msg.into())
    }
}
