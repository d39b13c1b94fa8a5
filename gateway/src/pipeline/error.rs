//! Why the pipeline refused an operation or could not finish it.
//!
//! The pipeline says *what* went wrong, as a variant with its context;
//! [`From<PipelineError> for Problem`] says once how each case looks on the
//! wire (problem type, detail, the exchange it names). The API sees only
//! the rendered [`Problem`], through [`GatewayService`](super::GatewayService).

use crate::credential::{CredentialError, SubjectError};
use crate::problem::{Problem, ProblemType};
use crate::store::StoreError;
use crate::wire::SenderError;

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    // --- submitting (origin side)
    #[error("a credit bank submits only to its own member's gateway")]
    ForeignCreditBank,
    #[error("destination {destination:?} is not a configured peer of {member}")]
    UnknownDestination { destination: String, member: String },
    #[error("credential must be issued by {expected}, not {found}")]
    NotOwnCreditBank { expected: String, found: String },
    /// The credential id is stored with other bytes or another destination.
    #[error("this credential id was already submitted with different content")]
    SubmissionConflict { existing_exchange_id: String },

    // --- receiving (destination side)
    #[error(transparent)]
    Sender(#[from] SenderError),
    #[error("this gateway is {member}, not {destination:?}")]
    NotThisGateway { member: String, destination: String },
    #[error("{origin:?} is not a configured peer")]
    UnknownPeer { origin: String },
    #[error("an envelope carries [original, interchange], got {links} links")]
    ChainLength { links: usize },
    #[error("the original credential was not issued by the envelope's origin member")]
    OriginIsNotIssuer,
    /// Another original under this exchange id, this original under another
    /// exchange id, or an exchange id this gateway issued itself.
    #[error(
        "the envelope's exchangeId or original credential is already held here under a different exchange"
    )]
    EnvelopeConflict { existing_exchange_id: String },
    /// Not stored because an earlier envelope of the batch failed
    /// transiently (see `pipeline/batch.rs`).
    #[error(
        "not stored: an earlier envelope of this batch failed transiently; send it again after that one"
    )]
    HeldBack,

    // --- either side
    #[error(transparent)]
    Credential(#[from] CredentialError),
    #[error(transparent)]
    Subject(#[from] SubjectError),
    #[error(transparent)]
    Mapping(#[from] schema_mapper::MapError),
    /// Logged where it happens; the caller only learns it may retry.
    #[error("gateway signing key unavailable")]
    SigningKeyUnavailable,
    #[error("key set temporarily unavailable")]
    KeySetUnavailable,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("gateway is shutting down")]
    ShuttingDown,
    #[error("envelope verification failed")]
    TaskFailed,
    /// An envelope of a batch that no step answered (a bug, answered as
    /// transient so the sender keeps it).
    #[error("envelope was not processed")]
    NotProcessed,

    // --- operator and audit endpoints
    #[error("unknown status {0}")]
    UnknownStatus(String),
    #[error("no audit checkpoint has been signed yet")]
    NoCheckpoint,
}

impl PipelineError {
    /// The SPEC §4 problem type this error is answered with.
    pub fn kind(&self) -> ProblemType {
        use PipelineError as E;
        match self {
            E::ForeignCreditBank | E::UnknownPeer { .. } => ProblemType::ForbiddenRole,
            E::UnknownDestination { .. } | E::NotThisGateway { .. } => ProblemType::UnknownDestination,
            E::NotOwnCreditBank { .. } | E::OriginIsNotIssuer => ProblemType::IssuerMismatch,
            E::SubmissionConflict { .. } | E::EnvelopeConflict { .. } => ProblemType::DuplicateConflict,
            E::Sender(e) => e.kind(),
            E::ChainLength { .. } => ProblemType::ChainBroken,
            E::Credential(e) => e.kind(),
            E::Subject(e) => e.kind(),
            E::Mapping(e) => ProblemType::of_mapping(e),
            E::Store(e) => store_kind(e),
            E::HeldBack
            | E::SigningKeyUnavailable
            | E::KeySetUnavailable
            | E::ShuttingDown
            | E::TaskFailed
            | E::NotProcessed => ProblemType::Unavailable,
            E::UnknownStatus(_) => ProblemType::MalformedRequest,
            E::NoCheckpoint => ProblemType::NotFound,
        }
    }

    /// The sender should send the same envelope again later.
    pub fn is_transient(&self) -> bool {
        self.kind().is_transient()
    }

    /// The exchange the problem names regardless of which request asked:
    /// the stored one a conflict collides with, the one a store lookup
    /// missed. Otherwise the API names the request's own exchange.
    fn exchange_id(&self) -> Option<&str> {
        match self {
            PipelineError::SubmissionConflict { existing_exchange_id }
            | PipelineError::EnvelopeConflict { existing_exchange_id } => Some(existing_exchange_id),
            PipelineError::Sender(SenderError::NotOwnMember { exchange_id, .. }) => Some(exchange_id),
            PipelineError::Store(
                StoreError::NotFound { exchange_id } | StoreError::InvalidTransition { exchange_id, .. },
            ) => Some(exchange_id),
            _ => None,
        }
    }

    /// What the caller is told. Store failures other than a missing exchange
    /// or a refused transition say no more than "unavailable": their text
    /// is for the operator's log, not for a peer.
    fn detail(&self) -> String {
        match self {
            PipelineError::Store(StoreError::NotFound { .. }) => "no such exchange".to_owned(),
            PipelineError::Store(StoreError::InvalidTransition { from, .. }) => {
                format!("exchange is {from}; only rejected or dead-lettered exchanges can be retried")
            }
            PipelineError::Store(_) => "store temporarily unavailable".to_owned(),
            PipelineError::UnknownStatus(s) => format!("unknown status {}", crate::jose::plain(s, 32)),
            other => other.to_string(),
        }
    }
}

fn store_kind(e: &StoreError) -> ProblemType {
    match e {
        StoreError::NotFound { .. } => ProblemType::NotFound,
        StoreError::InvalidTransition { .. } => ProblemType::MalformedRequest,
        _ => ProblemType::Unavailable,
    }
}

impl From<PipelineError> for Problem {
    fn from(e: PipelineError) -> Self {
        if let PipelineError::Store(inner) = &e {
            if store_kind(inner) == ProblemType::Unavailable {
                tracing::error!(error = %inner, "store error");
            }
        }
        let problem = Problem::new(e.kind(), e.detail());
        match e.exchange_id() {
            Some(id) => problem.with_exchange(id),
            None => problem,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::ExchangeStatus;

    fn rendered(e: PipelineError) -> (ProblemType, String, Option<String>) {
        let p = Problem::from(e);
        (p.kind, p.detail, p.exchange_id)
    }

    #[test]
    fn a_conflict_names_the_exchange_it_collides_with() {
        let (kind, _, id) = rendered(PipelineError::EnvelopeConflict {
            existing_exchange_id: "ex-held".into(),
        });
        assert_eq!(
            (kind, id.as_deref()),
            (ProblemType::DuplicateConflict, Some("ex-held"))
        );
        let (kind, _, id) = rendered(PipelineError::SubmissionConflict {
            existing_exchange_id: "ex-first".into(),
        });
        assert_eq!(
            (kind, id.as_deref()),
            (ProblemType::DuplicateConflict, Some("ex-first"))
        );
    }

    #[test]
    fn store_failures_tell_the_caller_nothing_of_the_backend() {
        let e = PipelineError::Store(StoreError::InvalidInput {
            field: "chain",
            reason: "secret-looking internals".into(),
        });
        assert_eq!(
            rendered(e),
            (
                ProblemType::Unavailable,
                "store temporarily unavailable".into(),
                None
            )
        );
        let e = PipelineError::Store(StoreError::InvalidTransition {
            exchange_id: "ex-1".into(),
            from: ExchangeStatus::Delivered,
            to: ExchangeStatus::Accepted,
        });
        let (kind, detail, id) = rendered(e);
        assert_eq!(
            (kind, id.as_deref()),
            (ProblemType::MalformedRequest, Some("ex-1"))
        );
        assert!(detail.starts_with("exchange is delivered;"), "{detail}");
        let e = PipelineError::Store(StoreError::NotFound {
            exchange_id: "ex-2".into(),
        });
        assert_eq!(
            rendered(e),
            (
                ProblemType::NotFound,
                "no such exchange".into(),
                Some("ex-2".into())
            )
        );
    }

    #[test]
    fn only_retryable_answers_are_transient() {
        assert!(PipelineError::HeldBack.is_transient());
        assert!(PipelineError::SigningKeyUnavailable.is_transient());
        assert!(PipelineError::Credential(CredentialError::MappingVersionUnknown {
            index: 1,
            table_id: "cqf-ref~wfs-ref".into(),
            version: "9.9.9".into(),
        })
        .is_transient());
        assert!(!PipelineError::OriginIsNotIssuer.is_transient());
        assert!(!PipelineError::ChainLength { links: 3 }.is_transient());
        assert!(!PipelineError::EnvelopeConflict {
            existing_exchange_id: "x".into()
        }
        .is_transient());
    }

    #[test]
    fn a_status_filter_is_quoted_and_cut_short_in_the_detail() {
        let (kind, detail, _) = rendered(PipelineError::UnknownStatus(format!("{}\n", "x".repeat(100))));
        assert_eq!(kind, ProblemType::MalformedRequest);
        assert!(detail.len() < 80 && !detail.contains('\n'), "{detail}");
    }
}
