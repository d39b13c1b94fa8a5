//! The credential profile of SPEC §3 on top of [`crate::jose`] and
//! [`crate::trust`]: VC 2.0 learning credentials as compact JWS, translation
//! credentials that name their predecessor by digest, and chains of them.
//!
//! - [`issuer`]: `IssuerId`, the `urn:bashu:<member>:<role>` issuer ids.
//! - [`profile`]: building and checking the VC 2.0 payload.
//! - [`verify`]: `Verifier` and `VerifiedCredential`.
//! - [`translation`]: translation credentials and their `evidence`.
//! - [`chain`]: link-by-link chain verification.
//! - [`recompute`]: verifiable translations: a link must equal its recomputation.

mod chain;
mod error;
pub mod issuer;
mod national_id;
pub mod profile;
mod recompute;
mod subject;
pub mod translation;
mod verify;

pub use chain::{VerifiedChain, MAX_CHAIN_LEN};
pub use error::CredentialError;
pub use issuer::IssuerId;
pub use profile::{issue_credential, new_learning_credential};
pub use subject::{split_subject, SubjectError};
pub use translation::{issue_translation, TranslationEvidence};
pub use verify::{VerifiedCredential, Verifier};
