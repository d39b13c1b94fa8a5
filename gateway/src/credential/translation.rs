//! Translation credentials (SPEC §3): issued by a gateway, their subject is
//! the translated record and their `evidence` binds them to the exact bytes
//! of the predecessor:
//!
//! ```json
//! "evidence": [{
//!   "type": ["Evidence", "TranslationEvidence"],
//!   "predecessorId": "urn:uuid:…",
//!   "predecessorSha256": "<64 lowercase hex digits: SHA-256 of the predecessor's compact JWS>",
//!   "mappingTableId": "cqf-wfs-ref",
//!   "mappingTableVersion": "1.0.0",
//!   "verifiedAt": "2026-11-28T10:00:00Z"
//! }]
//! ```
//!
//! `verifiedAt` (SPEC v1.1 §2) is when the issuing gateway verified the
//! predecessor. It is the gateway's signed attestation that lets a receiver
//! keep accepting an exchange whose original was signed by a key revoked
//! *after* that moment. v1 translations lack it; they then get no such grace.

use super::profile::{self, TYPE_LEARNING, TYPE_TRANSLATED, TYPE_VC};
use super::verify::hex;
use super::{issue_credential, CredentialError, IssuerId, VerifiedCredential};
use crate::jose::SigningKey;
use crate::trust::KeyRole;
use serde_json::{json, Map, Value};
use time::OffsetDateTime;

/// The `type` of the evidence entry.
pub const EVIDENCE_TYPE: &str = "TranslationEvidence";

/// What a translation credential says about its predecessor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TranslationEvidence {
    pub predecessor_id: String,
    pub predecessor_sha256: [u8; 32],
    pub table_id: String,
    pub table_version: String,
    /// When the issuing gateway verified the predecessor (Unix seconds).
    pub verified_at: Option<i64>,
}

impl TranslationEvidence {
    pub fn to_json(&self) -> Value {
        let mut v = json!({
            "type": ["Evidence", EVIDENCE_TYPE],
            "predecessorId": self.predecessor_id,
            "predecessorSha256": hex(&self.predecessor_sha256),
            "mappingTableId": self.table_id,
            "mappingTableVersion": self.table_version,
        });
        let at = self
            .verified_at
            .and_then(|t| OffsetDateTime::from_unix_timestamp(t).ok());
        if let (Some(at), Some(obj)) = (at, v.as_object_mut()) {
            obj.insert("verifiedAt".into(), profile::format_time(at).into());
        }
        v
    }

    /// Extracts the single `TranslationEvidence` entry of a payload.
    pub fn from_payload(payload: &Map<String, Value>) -> Result<Self, CredentialError> {
        let entries: Vec<&Map<String, Value>> = match payload.get("evidence") {
            Some(Value::Array(a)) => a.iter().filter_map(Value::as_object).collect(),
            Some(Value::Object(o)) => vec![o],
            _ => return Err(CredentialError::schema("translation credential without evidence")),
        };
        let mut ours = entries.into_iter().filter(|e| {
            e.get("type")
                .and_then(Value::as_array)
                .is_some_and(|t| t.iter().any(|v| v == EVIDENCE_TYPE))
        });
        let (Some(e), None) = (ours.next(), ours.next()) else {
            return Err(CredentialError::schema(
                "exactly one TranslationEvidence entry is required",
            ));
        };
        let text = |name: &str| {
            e.get(name)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty() && s.len() <= 256)
                .map(str::to_owned)
                .ok_or_else(|| CredentialError::schema(format!("evidence.{name} is required")))
        };
        let digest_hex = text("predecessorSha256")?;
        let predecessor_sha256 = parse_hex32(&digest_hex).ok_or_else(|| {
            CredentialError::schema("evidence.predecessorSha256 must be 64 lowercase hex digits")
        })?;
        let verified_at = match e.get("verifiedAt") {
            None => None,
            Some(Value::String(t)) => Some(
                profile::parse_rfc3339(t)
                    .ok_or_else(|| CredentialError::schema("evidence.verifiedAt is not an RFC 3339 time"))?
                    .unix_timestamp(),
            ),
            Some(_) => return Err(CredentialError::schema("evidence.verifiedAt must be a string")),
        };
        Ok(Self {
            predecessor_id: text("predecessorId")?,
            predecessor_sha256,
            table_id: text("mappingTableId")?,
            table_version: text("mappingTableVersion")?,
            verified_at,
        })
    }
}

fn parse_hex32(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64
        || !s
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Issues a translation credential of `pred`, valid from `now` until the
/// predecessor's `validUntil` (a translation never outlives its source).
/// Its evidence attests when `pred` was verified ([`VerifiedCredential::verified_at`]).
/// `issuer` must be a gateway; `subject` is the translated record and must
/// keep the learner `id`.
pub fn issue_translation(
    pred: &VerifiedCredential,
    subject: Value,
    table_id: &str,
    table_version: &str,
    issuer: &IssuerId,
    key: &SigningKey,
    now: OffsetDateTime,
) -> Result<String, CredentialError> {
    if issuer.role() != KeyRole::Gateway {
        return Err(CredentialError::IssuerMismatch(
            "translation credentials are issued by gateways".into(),
        ));
    }
    let evidence = TranslationEvidence {
        predecessor_id: pred.id().to_owned(),
        predecessor_sha256: pred.digest(),
        table_id: table_id.to_owned(),
        table_version: table_version.to_owned(),
        verified_at: Some(pred.verified_at().unix_timestamp()),
    };
    let mut vc = profile::new_learning_credential(issuer, subject, now, pred.valid_until());
    if let Some(obj) = vc.as_object_mut() {
        obj.insert("type".into(), json!([TYPE_VC, TYPE_LEARNING, TYPE_TRANSLATED]));
        obj.insert("evidence".into(), json!([evidence.to_json()]));
    }
    issue_credential(&vc, key)
}
