//! The VC 2.0 payload profile of SPEC §3: building a learning credential and
//! checking that a payload has every field the federation relies on.

use super::{CredentialError, IssuerId};
use crate::jose::{self, SigningKey};
use crate::trust::KeyRole;
use serde_json::{json, Map, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// First `@context` entry of every credential.
pub const VC_CONTEXT_V2: &str = "https://www.w3.org/ns/credentials/v2";
pub const TYPE_VC: &str = "VerifiableCredential";
pub const TYPE_LEARNING: &str = "LearningCredential";
pub const TYPE_TRANSLATED: &str = "TranslatedLearningCredential";
/// JWS `typ` of credentials.
pub const CREDENTIAL_TYP: &str = "vc+jwt";

/// Builds an unsigned learning credential: `@context`, `type`, a fresh
/// `urn:uuid:` id, `issuer`, `validFrom`, optional `validUntil`, and
/// `credentialSubject` (the learning record, `id` included).
pub fn new_learning_credential(
    issuer: &IssuerId,
    subject: Value,
    valid_from: OffsetDateTime,
    valid_until: Option<OffsetDateTime>,
) -> Value {
    let mut vc = json!({
        "@context": [VC_CONTEXT_V2],
        "type": [TYPE_VC, TYPE_LEARNING],
        "id": format!("urn:uuid:{}", uuid::Uuid::new_v4()),
        "issuer": issuer.to_string(),
        "validFrom": format_time(valid_from),
    });
    if let (Some(until), Some(obj)) = (valid_until, vc.as_object_mut()) {
        obj.insert("validUntil".into(), format_time(until).into());
    }
    if let Some(obj) = vc.as_object_mut() {
        obj.insert("credentialSubject".into(), subject);
    }
    vc
}

/// Signs a credential payload as a `vc+jwt` compact JWS. The payload must
/// follow the profile (checked here too: we never sign what a verifier
/// would refuse); validity times are not checked.
pub fn issue_credential(payload: &Value, key: &SigningKey) -> Result<String, CredentialError> {
    let obj = payload
        .as_object()
        .ok_or_else(|| CredentialError::schema("credential must be a JSON object"))?;
    let profile = check(obj)?;
    if profile.translation {
        super::translation::TranslationEvidence::from_payload(obj)?;
    }
    let bytes = serde_json::to_vec(payload).map_err(|e| CredentialError::schema(e.to_string()))?;
    let jws = jose::sign_compact(CREDENTIAL_TYP, &bytes, key)?;
    if jws.len() > jose::MAX_JWS_BYTES {
        return Err(jose::JoseError::TooLarge {
            len: jws.len(),
            limit: jose::MAX_JWS_BYTES,
        }
        .into());
    }
    Ok(jws)
}

/// RFC 3339 in UTC with whole seconds, e.g. `2026-11-25T02:00:00Z`.
///
/// An instant whose UTC date is past year 9999 (`9999-12-31T23:30:00-01:00`
/// parses, but is in year 10000 in UTC) keeps its own offset: `to_offset`
/// would panic there, and validity times are issuer-controlled (found while
/// writing the `jws` fuzz target; see docs/security.md).
pub fn format_time(t: OffsetDateTime) -> String {
    let t = t.checked_to_offset(time::UtcOffset::UTC).unwrap_or(t);
    let t = t.replace_nanosecond(0).unwrap_or(t);
    t.format(&Rfc3339).unwrap_or_default()
}

/// What the verifier relies on, extracted from a payload that follows the
/// profile.
#[derive(Debug, Clone)]
pub(crate) struct Profile {
    pub id: String,
    pub translation: bool,
    pub valid_from: OffsetDateTime,
    pub valid_until: Option<OffsetDateTime>,
}

/// The issuer of a payload: `issuer` (a string, or an object with `id`),
/// and `iss`, if present, equal to it.
pub(crate) fn issuer_of(payload: &Map<String, Value>) -> Result<IssuerId, CredentialError> {
    let text = match payload.get("issuer") {
        Some(Value::String(s)) => s.as_str(),
        Some(Value::Object(o)) => o
            .get("id")
            .and_then(Value::as_str)
            .ok_or_else(|| CredentialError::schema("issuer object has no id"))?,
        Some(_) => return Err(CredentialError::schema("issuer must be a string or an object")),
        None => return Err(CredentialError::schema("missing issuer")),
    };
    let issuer: IssuerId = text.parse()?;
    match payload.get("iss") {
        None => {}
        Some(Value::String(iss)) if iss == text => {}
        Some(_) => return Err(CredentialError::IssuerMismatch("iss differs from issuer".into())),
    }
    Ok(issuer)
}

/// Checks the structure of the profile (not the validity period).
pub(crate) fn check(payload: &Map<String, Value>) -> Result<Profile, CredentialError> {
    let issuer = issuer_of(payload)?;
    match payload.get("@context").and_then(Value::as_array) {
        Some(ctx) if ctx.first().and_then(Value::as_str) == Some(VC_CONTEXT_V2) => {
            if !ctx.iter().all(|c| c.is_string() || c.is_object()) {
                return Err(CredentialError::schema(
                    "@context entries must be strings or objects",
                ));
            }
        }
        _ => {
            return Err(CredentialError::schema(
                "@context must be an array starting with the VC 2.0 context",
            ))
        }
    }
    let types: Vec<&str> = payload
        .get("type")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .ok_or_else(|| CredentialError::schema("type must be an array"))?;
    if !types.contains(&TYPE_VC) || !types.contains(&TYPE_LEARNING) {
        return Err(CredentialError::schema(
            "type must include VerifiableCredential and LearningCredential",
        ));
    }
    let translation = types.contains(&TYPE_TRANSLATED);
    match (translation, issuer.role()) {
        (true, KeyRole::Issuer) => {
            return Err(CredentialError::IssuerMismatch(
                "translation credentials are issued by gateways".into(),
            ))
        }
        (false, KeyRole::Gateway) => {
            return Err(CredentialError::schema(
                "a gateway issues only translation credentials",
            ))
        }
        _ => {}
    }
    let id = payload
        .get("id")
        .and_then(Value::as_str)
        .filter(|id| is_urn_uuid(id))
        .ok_or_else(|| CredentialError::schema("id must be a urn:uuid: URN"))?;
    let valid_from =
        parse_time(payload, "validFrom")?.ok_or_else(|| CredentialError::schema("missing validFrom"))?;
    let valid_until = parse_time(payload, "validUntil")?;
    if valid_until.is_some_and(|u| u < valid_from) {
        return Err(CredentialError::schema("validUntil is before validFrom"));
    }
    let subject = payload
        .get("credentialSubject")
        .and_then(Value::as_object)
        .ok_or_else(|| CredentialError::schema("credentialSubject must be an object"))?;
    let subject_id = subject
        .get("id")
        .and_then(Value::as_str)
        .ok_or_else(|| CredentialError::schema("credentialSubject.id is required"))?;
    if !is_learner_id(subject_id) {
        return Err(CredentialError::schema(
            "credentialSubject.id must be a DID or urn:bashu:learner:<member>:<opaque>",
        ));
    }
    // SPEC §3: no national ID numbers in clear, not even inside the opaque part.
    if super::national_id::contains_national_id(subject_id) {
        return Err(CredentialError::schema(
            "credentialSubject.id contains a national ID number (GB 11643-1999); use an opaque learner id",
        ));
    }
    Ok(Profile {
        id: id.to_owned(),
        translation,
        valid_from,
        valid_until,
    })
}

fn is_urn_uuid(s: &str) -> bool {
    s.strip_prefix("urn:uuid:")
        .is_some_and(|u| u.len() == 36 && uuid::Uuid::parse_str(u).is_ok())
}

/// A learner id: a DID (`did:<method>:<id>`) or
/// `urn:bashu:learner:<member>:<opaque>`.
fn is_learner_id(s: &str) -> bool {
    if let Some(rest) = s.strip_prefix("urn:bashu:learner:") {
        return rest
            .split_once(':')
            .is_some_and(|(m, opaque)| crate::ids::is_member_id(m) && !opaque.is_empty());
    }
    if let Some(rest) = s.strip_prefix("did:") {
        return rest
            .split_once(':')
            .is_some_and(|(method, id)| !method.is_empty() && !id.is_empty());
    }
    false
}

fn parse_time(payload: &Map<String, Value>, field: &str) -> Result<Option<OffsetDateTime>, CredentialError> {
    match payload.get(field) {
        None => Ok(None),
        Some(Value::String(s)) => OffsetDateTime::parse(s, &Rfc3339)
            .map(Some)
            .map_err(|_| CredentialError::schema(format!("{field} is not an RFC 3339 date-time"))),
        Some(_) => Err(CredentialError::schema(format!("{field} must be a string"))),
    }
}

/// An RFC 3339 date-time, as every time in the profile is written.
pub(crate) fn parse_rfc3339(s: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(s, &Rfc3339).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_time_renders_instants_outside_the_utc_year_range() {
        // Year 10000 in UTC: rendering used to panic in `to_offset`.
        let late = parse_rfc3339("9999-12-31T23:30:00-01:00").unwrap();
        assert_eq!(format_time(late), "9999-12-31T23:30:00-01:00");
        let early = parse_rfc3339("-0000-01-01T00:30:00+01:00");
        assert!(early.is_none(), "RFC 3339 has no negative years");
        let normal = parse_rfc3339("2026-11-25T10:00:00.5+08:00").unwrap();
        assert_eq!(format_time(normal), "2026-11-25T02:00:00Z");
    }
}
