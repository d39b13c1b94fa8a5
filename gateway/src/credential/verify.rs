//! Credential verification: the only way to obtain a [`VerifiedCredential`].

use super::profile::{self, Profile};
use super::translation::TranslationEvidence;
use super::{CredentialError, IssuerId};
use crate::jose::{self, json_strict, HeaderPolicy};
use crate::mapping::MappingTables;
use crate::trust::{KeyUnusable, LookupError, TrustCache, TrustKey};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use time::OffsetDateTime;

/// Verifies credentials against the federation's trust key sets.
#[derive(Debug, Clone)]
pub struct Verifier {
    cache: Arc<TrustCache>,
    skew_secs: i64,
    /// Tables translation links are recomputed with (SPEC §3).
    tables: Arc<MappingTables>,
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
    verified_at: OffsetDateTime,
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

    /// When this gateway verified it (the verifier's clock). A translation
    /// of it attests this moment as `verifiedAt`.
    pub fn verified_at(&self) -> OffsetDateTime {
        self.verified_at
    }
}

impl Verifier {
    /// `clock_skew_secs` is the tolerance on `validFrom`/`validUntil`
    /// (SPEC §3: at most 60 s). Time comes from the cache's clock.
    pub fn new(cache: Arc<TrustCache>, clock_skew_secs: u64) -> Self {
        Self {
            cache,
            skew_secs: i64::try_from(clock_skew_secs).unwrap_or(60).min(60),
            tables: Arc::new(MappingTables::reference()),
        }
    }

    /// Recompute translation links with `tables` instead of only the
    /// bundled reference table.
    pub fn with_tables(mut self, tables: Arc<MappingTables>) -> Self {
        self.tables = tables;
        self
    }

    pub fn cache(&self) -> &Arc<TrustCache> {
        &self.cache
    }

    /// The mapping tables translations are recomputed with.
    pub fn tables(&self) -> &Arc<MappingTables> {
        &self.tables
    }

    /// Verifies one credential. The order of checks is part of the contract
    /// (it decides which problem a doubly-broken token gets): encoding and
    /// header (`jose`), payload JSON, issuer, key lookup and role, signature,
    /// profile, validity period.
    pub async fn verify(&self, jws: &str) -> Result<VerifiedCredential, CredentialError> {
        let (vc, superseded) = self.verify_inner(jws, false).await?;
        match superseded {
            None => Ok(vc),
            // Unreachable: without the allowance the key lookup refuses such
            // keys. Kept as a refusal so the type system need not trust that.
            Some(s) => Err(s.into_error(vc.issuer())),
        }
    }

    /// Like [`Self::verify`], but a signature by a key that has since been
    /// revoked or retired still verifies, and the result says so. Only chain
    /// verification uses this, and only for the original, whose acceptance
    /// then depends on the origin gateway's `verifiedAt` (SPEC §2).
    pub(crate) async fn verify_allowing_superseded(
        &self,
        jws: &str,
    ) -> Result<(VerifiedCredential, Option<Superseded>), CredentialError> {
        self.verify_inner(jws, true).await
    }

    async fn verify_inner(
        &self,
        jws: &str,
        allow_superseded: bool,
    ) -> Result<(VerifiedCredential, Option<Superseded>), CredentialError> {
        let parsed = jose::parse_compact(jws, HeaderPolicy::CREDENTIAL)?;
        let payload = json_strict::parse(parsed.payload())?;
        let obj = payload
            .as_object()
            .ok_or_else(|| CredentialError::schema("credential must be a JSON object"))?;
        let issuer = profile::issuer_of(obj)?;
        let kid = parsed.header().kid();
        let (key, unusable) = self.key_for(&issuer, kid, allow_superseded).await?;
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
        let superseded = unusable.map(|reason| Superseded {
            kid: kid.to_owned(),
            reason,
            since: key.unusable_since().unwrap_or(i64::MIN),
        });
        let now = self.cache.clock().now_secs();
        let vc = VerifiedCredential {
            jws: jws.to_owned(),
            digest: sha256(jws.as_bytes()),
            issuer,
            kid: kid.to_owned(),
            id,
            payload,
            evidence,
            valid_from,
            valid_until,
            verified_at: OffsetDateTime::from_unix_timestamp(now).unwrap_or(OffsetDateTime::UNIX_EPOCH),
        };
        Ok((vc, superseded))
    }

    /// The key `kid` of the issuer's member, whose role must be the
    /// issuer's. A kid that the cache only knows under another member (or
    /// role) is an issuer mismatch, not an unknown key. With
    /// `allow_superseded`, a revoked or retired key is returned with the
    /// reason instead of refused.
    async fn key_for(
        &self,
        issuer: &IssuerId,
        kid: &str,
        allow_superseded: bool,
    ) -> Result<(Arc<TrustKey>, Option<KeyUnusable>), CredentialError> {
        let found = if allow_superseded {
            self.cache.key_with_status(issuer.member(), kid).await
        } else {
            self.cache.key(issuer.member(), kid).await.map(|k| (k, None))
        };
        match found {
            Ok((key, unusable)) if key.role == issuer.role() => Ok((key, unusable)),
            Ok((key, _)) => Err(CredentialError::IssuerMismatch(format!(
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

/// A credential verified with a key that no longer verifies new ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Superseded {
    pub kid: String,
    pub reason: KeyUnusable,
    /// Unix seconds from which the key stopped counting (`revoked_at`,
    /// `retire_after`).
    pub since: i64,
}

impl Superseded {
    /// The refusal when no gateway attests verification before `since`.
    pub fn into_error(self, issuer: &IssuerId) -> CredentialError {
        CredentialError::Key(LookupError::Unusable {
            member: issuer.member().to_owned(),
            kid: self.kid,
            reason: self.reason,
        })
    }
}

pub(crate) fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    crate::hex::lower(bytes)
}
