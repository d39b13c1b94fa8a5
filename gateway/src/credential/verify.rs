//! Credential verification: the only way to obtain a [`VerifiedCredential`].

use super::profile::{self, Profile};
use super::translation::TranslationEvidence;
use super::{CredentialError, IssuerId};
use crate::jose::{self, json_strict, HeaderPolicy};
use crate::trust::{LookupError, TrustCache, TrustKey};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use time::OffsetDateTime;

/// Verifies credentials against the federation's trust key sets.
#[derive(Debug, Clone)]
pub struct Verifier {
    cache: Arc<TrustCache>,
    skew_secs: i64,
}

/// A credential whose signature, issuer, key status, profile and validity
/// period have been checked. There is no public constructor: holding one is
/// proof that [`Verifier::verify`] accepted the exact bytes in [`Self::jws`].
/// `Debug` shows identifiers only, never the payload (it holds a learner's
/// record).
#[derive(Clone)]
pub struct VerifiedCredential {
    jws: String,
    digest: [u8; 32],
    issuer: IssuerId,
    kid: String,
    id: String,
    payload: Value,
    evidence: Option<TranslationEvidence>,
    valid_from: OffsetDateTime,
    valid_until: Option<OffsetDateTime>,
}

impl std::fmt::Debug for VerifiedCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifiedCredential")
            .field("id", &self.id)
            .field("issuer", &self.issuer.to_string())
            .field("kid", &self.kid)
            .field("digest", &self.digest_hex())
            .field("translation", &self.evidence.is_some())
            .finish_non_exhaustive()
    }
}

impl VerifiedCredential {
    /// The exact compact JWS that was verified.
    pub fn jws(&self) -> &str {
        &self.jws
    }

    /// SHA-256 of the exact JWS bytes (what translation evidence names).
    pub fn digest(&self) -> [u8; 32] {
        self.digest
    }

    /// [`Self::digest`] as 64 lowercase hex digits.
    pub fn digest_hex(&self) -> String {
        hex(&self.digest)
    }

    pub fn issuer(&self) -> &IssuerId {
        &self.issuer
    }

    /// The kid of the key that verified the signature.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The credential `id` (a `urn:uuid:`).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The whole verified payload.
    pub fn payload(&self) -> &Value {
        &self.payload
    }

    /// `credentialSubject` (always an object with an `id`).
    pub fn subject(&self) -> &Value {
        &self.payload["credentialSubject"]
    }

    /// Whether this is a `TranslatedLearningCredential`.
    pub fn is_translation(&self) -> bool {
        self.evidence.is_some()
    }

    /// The translation evidence, for translation credentials.
    pub fn evidence(&self) -> Option<&TranslationEvidence> {
        self.evidence.as_ref()
    }

    pub fn valid_from(&self) -> OffsetDateTime {
        self.valid_from
    }

    pub fn valid_until(&self) -> Option<OffsetDateTime> {
        self.valid_until
    }
}

impl Verifier {
    /// `clock_skew_secs` is the tolerance on `validFrom`/`validUntil`
    /// (SPEC §3: at most 60 s). Time comes from the cache's clock.
    pub fn new(cache: Arc<TrustCache>, clock_skew_secs: u64) -> Self {
        Self {
            cache,
            skew_secs: i64::try_from(clock_skew_secs).unwrap_or(60).min(60),
        }
    }

    pub fn cache(&self) -> &Arc<TrustCache> {
        &self.cache
    }

    /// Verifies one credential. The order of checks is part of the contract
    /// (it decides which problem a doubly-broken token gets): encoding and
    /// header (`jose`), payload JSON, issuer, key lookup and role, signature,
    /// profile, validity period.
    pub async fn verify(&self, jws: &str) -> Result<VerifiedCredential, CredentialError> {
        let parsed = jose::parse_compact(jws, HeaderPolicy::CREDENTIAL)?;
        let payload = json_strict::parse(parsed.payload())?;
        let obj = payload
            .as_object()
            .ok_or_else(|| CredentialError::schema("credential must be a JSON object"))?;
        let issuer = profile::issuer_of(obj)?;
        let kid = parsed.header().kid();
        let key = self.key_for(&issuer, kid).await?;
        parsed.verify_signature(&key.key)?;
        let Profile {
            id,
            translation,
            valid_from,
            valid_until,
            ..
        } = profile::check(obj)?;
        let evidence = if translation {
            Some(TranslationEvidence::from_payload(obj)?)
        } else {
            None
        };
        self.check_period(valid_from, valid_until)?;
        Ok(VerifiedCredential {
            jws: jws.to_owned(),
            digest: sha256(jws.as_bytes()),
            issuer,
            kid: kid.to_owned(),
            id,
            payload,
            evidence,
            valid_from,
            valid_until,
        })
    }

    /// The key `kid` of the issuer's member, whose role must be the
    /// issuer's. A kid that the cache only knows under another member (or
    /// role) is an issuer mismatch, not an unknown key.
    async fn key_for(&self, issuer: &IssuerId, kid: &str) -> Result<Arc<TrustKey>, CredentialError> {
        match self.cache.key(issuer.member(), kid).await {
            Ok(key) if key.role == issuer.role() => Ok(key),
            Ok(key) => Err(CredentialError::IssuerMismatch(format!(
                "key {kid} has role {} but the issuer is {issuer}",
                key.role
            ))),
            Err(LookupError::UnknownKey { .. }) => match self.cache.cached_owner_of(kid) {
                Some((member, role)) => Err(CredentialError::IssuerMismatch(format!(
                    "key {kid} belongs to {member} ({role}), not to {issuer}"
                ))),
                None => Err(LookupError::UnknownKey {
                    member: issuer.member().to_owned(),
                    kid: kid.to_owned(),
                }
                .into()),
            },
            Err(e) => Err(e.into()),
        }
    }

    fn check_period(
        &self,
        from: OffsetDateTime,
        until: Option<OffsetDateTime>,
    ) -> Result<(), CredentialError> {
        let now = self.cache.clock().now_secs();
        if from.unix_timestamp() > now.saturating_add(self.skew_secs) {
            return Err(CredentialError::NotYetValid(profile::format_time(from)));
        }
        if let Some(until) = until {
            if until.unix_timestamp() < now.saturating_sub(self.skew_secs) {
                return Err(CredentialError::Expired(profile::format_time(until)));
            }
        }
        Ok(())
    }
}

pub(crate) fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}
