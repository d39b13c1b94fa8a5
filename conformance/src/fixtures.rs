//! Credential payloads the suite signs: a valid SPEC §3 credential around a
//! learning record, which individual tests then bend in one place.

use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime};

/// Records shipped with the suite (one per home framework).
pub const DEFAULT_RECORDS: &str = include_str!("../data/records.json");

/// Golden mapping expectations shipped with the suite.
pub const DEFAULT_GOLDENS: &str = include_str!("../data/goldens.json");

/// The home framework of a member when not configured: Chongqing records
/// in CQF, every other member in the interchange framework WFS.
pub fn default_framework(member: &str) -> &'static str {
    if member == "cq" {
        "cqf"
    } else {
        "wfs"
    }
}

/// `urn:bashu:<member>:<role>` (SPEC §2).
pub fn issuer_id(member: &str, role: &str) -> String {
    format!("urn:bashu:{member}:{role}")
}

/// RFC 3339 in UTC, seconds precision.
pub fn rfc3339(t: OffsetDateTime) -> String {
    let t = t.replace_nanosecond(0).unwrap_or(t);
    t.format(&Rfc3339).unwrap_or_default()
}

/// A learner id that is neither a DID nor a national id number.
pub fn learner_id(member: &str) -> String {
    format!("urn:bashu:learner:{member}:{}", uuid::Uuid::new_v4().simple())
}

/// The `credentialSubject.extensions` key that marks every credential the
/// suite sends as a test credential, so a receiving credit bank can drop it
/// and the suite can acknowledge its own inbox items (docs/conformance.md).
pub const TEST_MARKER: &str = "x-bashu-conformance";

/// Whether a credential payload carries [`TEST_MARKER`] = `true`.
pub fn is_test_credential(payload: &Value) -> bool {
    payload
        .pointer("/credentialSubject/extensions")
        .and_then(|e| e.get(TEST_MARKER))
        == Some(&Value::Bool(true))
}

/// A valid credential: fresh URN UUID id, valid from a minute ago for a
/// year, marked as a test credential ([`TEST_MARKER`]).
pub fn credential(issuer: &str, learner_member: &str, record: &Value) -> Value {
    let now = OffsetDateTime::now_utc();
    let mut subject = json!({ "id": learner_id(learner_member) });
    if let (Some(s), Some(r)) = (subject.as_object_mut(), record.as_object()) {
        s.extend(
            r.iter()
                .filter(|(k, _)| !k.starts_with('_'))
                .map(|(k, v)| (k.clone(), v.clone())),
        );
        let extensions = s.entry("extensions").or_insert_with(|| json!({}));
        if let Some(ext) = extensions.as_object_mut() {
            ext.insert(TEST_MARKER.into(), Value::Bool(true));
        }
    }
    json!({
        "@context": ["https://www.w3.org/ns/credentials/v2"],
        "id": format!("urn:uuid:{}", uuid::Uuid::new_v4()),
        "type": ["VerifiableCredential", "LearningCredential"],
        "issuer": issuer,
        "validFrom": rfc3339(now - Duration::minutes(1)),
        "validUntil": rfc3339(now + Duration::days(365)),
        "credentialSubject": subject,
    })
}

/// Shifts `validFrom`/`validUntil` relative to now (seconds; `None` removes).
pub fn set_window(credential: &mut Value, from: Option<i64>, until: Option<i64>) {
    let now = OffsetDateTime::now_utc();
    if let Some(obj) = credential.as_object_mut() {
        for (name, offset) in [("validFrom", from), ("validUntil", until)] {
            match offset {
                Some(s) => obj.insert(name.into(), Value::String(rfc3339(now + Duration::seconds(s)))),
                None => obj.remove(name),
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_credential_is_marked_as_a_test_credential() {
        let plain = credential("urn:bashu:cq:credit-bank", "cq", &json!({"framework": "cqf"}));
        assert!(is_test_credential(&plain), "{plain}");
        let with_ext = credential(
            "urn:bashu:cq:credit-bank",
            "cq",
            &json!({"framework": "cqf", "extensions": {"cq:courseCode": "X"}}),
        );
        assert_eq!(with_ext["credentialSubject"]["extensions"]["cq:courseCode"], "X");
        assert!(is_test_credential(&with_ext));
        assert!(!is_test_credential(
            &json!({"credentialSubject": {"extensions": {}}})
        ));
    }

    #[test]
    fn default_records_cover_the_reference_frameworks() {
        let records: Value = serde_json::from_str(DEFAULT_RECORDS).unwrap();
        for fw in ["cqf", "wfs"] {
            assert_eq!(records[fw]["framework"], fw);
        }
        let c = credential("urn:bashu:cq:credit-bank", "cq", &records["cqf"]);
        assert_eq!(c["credentialSubject"]["level"], 4);
        assert!(c["id"].as_str().unwrap().starts_with("urn:uuid:"));
        assert!(c["validFrom"].as_str().unwrap().ends_with('Z'));
    }
}
