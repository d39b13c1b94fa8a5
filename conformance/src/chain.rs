//! Translation credentials and chains (SPEC §3): crafting envelopes as a
//! peer gateway would send them, and checking delivered chains link by link.
//!
//! The SPEC fixes what `evidence` must say (predecessor `id`, SHA-256 of its
//! exact JWS bytes, mapping table id and version) but not the member names;
//! [`evidence`] writes the shape this suite sends, and [`names_predecessor`]
//! accepts any entry that carries the id and the digest in a common spelling.

use crate::craft::{self, sha256_spellings, CraftError, SigningKey};
use serde_json::{json, Value};

/// The mapping table a crafted interchange link claims to have used.
#[derive(Debug, Clone)]
pub struct TableRef {
    pub id: String,
    pub version: String,
}

/// An `evidence` entry naming `pred_jws` as the predecessor; `verified_at`
/// (RFC 3339) is the gateway's attestation of when it verified it (SPEC
/// v1.1 §2), left out when `None`.
pub fn evidence(pred_id: &str, pred_jws: &str, table: &TableRef, verified_at: Option<&str>) -> Value {
    let mut ev = json!({
        "type": ["Evidence", "TranslationEvidence"],
        "predecessorId": pred_id,
        "predecessorSha256": craft::sha256_hex(pred_jws.as_bytes()),
        "mappingTableId": table.id,
        "mappingTableVersion": table.version,
    });
    if let (Some(at), Some(obj)) = (verified_at, ev.as_object_mut()) {
        obj.insert("verifiedAt".into(), at.into());
    }
    ev
}

/// `t` (Unix seconds) as an RFC 3339 UTC date-time.
pub fn rfc3339(t: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default()
}

/// A translation credential issued by `issuer` over `pred`, with `subject`,
/// attesting verification of `pred` now.
pub fn translation(
    pred_jws: &str,
    pred: &Value,
    subject: Value,
    issuer: &str,
    table: &TableRef,
    key: &SigningKey,
) -> Result<String, CraftError> {
    let now = rfc3339(time::OffsetDateTime::now_utc().unix_timestamp());
    translation_attested(pred_jws, pred, subject, issuer, table, key, Some(&now))
}

/// [`translation`] with an explicit `verifiedAt` (or none).
pub fn translation_attested(
    pred_jws: &str,
    pred: &Value,
    subject: Value,
    issuer: &str,
    table: &TableRef,
    key: &SigningKey,
    verified_at: Option<&str>,
) -> Result<String, CraftError> {
    let pred_id = pred.get("id").and_then(Value::as_str).unwrap_or_default();
    let payload = json!({
        "@context": ["https://www.w3.org/ns/credentials/v2"],
        "id": format!("urn:uuid:{}", uuid::Uuid::new_v4()),
        "type": ["VerifiableCredential", "LearningCredential", "TranslatedLearningCredential"],
        "issuer": issuer,
        "validFrom": pred.get("validFrom").cloned().unwrap_or(Value::Null),
        "validUntil": pred.get("validUntil").cloned().unwrap_or(Value::Null),
        "credentialSubject": subject,
        "evidence": [evidence(pred_id, pred_jws, table, verified_at)],
    });
    craft::sign_credential(&payload, key)
}

/// The honest interchange subject: `subject`'s record translated from
/// `framework` into WFS with `table`, the learner `id` kept. SPEC v1.1 §3
/// makes receivers recompute this, so a crafted interchange must match it
/// exactly. The suite can translate only with tables it holds: the bundled
/// reference table; for any other it answers `None` (the test is skipped).
pub fn interchange_subject(
    subject: &Value,
    framework: &str,
    table: &TableRef,
) -> Option<Result<Value, String>> {
    let reference = schema_mapper::MappingTable::reference();
    if table.id != reference.id() || table.version != reference.version() {
        return None;
    }
    let mut record = subject.as_object()?.clone();
    let learner = record.remove("id");
    let translated = schema_mapper::LearningRecord::from_json(&Value::Object(record))
        .and_then(|r| schema_mapper::translate(&r, framework, "wfs", &reference))
        .map(|t| {
            let mut out = t.record.to_json();
            if let (Some(id), Some(obj)) = (learner, out.as_object_mut()) {
                obj.insert("id".into(), id);
            }
            out
        })
        .map_err(|e| format!("the suite's own record does not translate: {e}"));
    Some(translated)
}

/// `POST /v1/federation/envelopes` body.
pub fn envelope(exchange_id: &str, origin: &str, destination: &str, chain: &[String]) -> Value {
    json!({
        "exchangeId": exchange_id,
        "origin": origin,
        "destination": destination,
        "chain": chain,
    })
}

/// The `evidence` entries of a translation payload (object or array).
pub fn evidence_entries(payload: &Value) -> Vec<&Value> {
    match payload.get("evidence") {
        Some(Value::Array(items)) => items.iter().collect(),
        Some(obj @ Value::Object(_)) => vec![obj],
        _ => Vec::new(),
    }
}

/// True if some evidence entry names the predecessor by id and by the
/// SHA-256 of its exact bytes.
pub fn names_predecessor(payload: &Value, pred_id: &str, pred_jws: &str) -> bool {
    let digests = sha256_spellings(pred_jws.as_bytes());
    evidence_entries(payload).into_iter().any(|entry| {
        let mut strings = Vec::new();
        collect_strings(entry, &mut strings);
        strings.contains(&pred_id)
            && strings
                .iter()
                .any(|s| digests.iter().any(|d| s.ends_with(d.as_str())))
    })
}

/// True if some evidence entry records a mapping table version.
pub fn records_table_version(payload: &Value) -> bool {
    evidence_entries(payload).into_iter().any(|entry| {
        let text = entry.to_string().to_ascii_lowercase();
        text.contains("version") && (text.contains("table") || text.contains("mapping"))
    })
}

fn collect_strings<'a>(value: &'a Value, out: &mut Vec<&'a str>) {
    match value {
        Value::String(s) => out.push(s),
        Value::Array(items) => items.iter().for_each(|v| collect_strings(v, out)),
        Value::Object(map) => map.values().for_each(|v| collect_strings(v, out)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::craft::KeyAlg;

    #[test]
    fn crafted_translation_names_its_predecessor() {
        let key = SigningKey::generate(KeyAlg::Es256, "gw").unwrap();
        let pred_payload = json!({"id": "urn:uuid:1", "validFrom": "2026-01-01T00:00:00Z"});
        let pred = craft::sign_credential(&pred_payload, &key).unwrap();
        let table = TableRef {
            id: "cqf-wfs".into(),
            version: "1.0.0".into(),
        };
        let t = translation(
            &pred,
            &pred_payload,
            json!({}),
            "urn:bashu:sc:gateway",
            &table,
            &key,
        )
        .unwrap();
        let (_, payload) = craft::decode_compact(&t).unwrap();
        assert!(names_predecessor(&payload, "urn:uuid:1", &pred));
        assert!(!names_predecessor(&payload, "urn:uuid:1", &format!("{pred}x")));
        assert!(!names_predecessor(&payload, "urn:uuid:2", &pred));
        assert!(records_table_version(&payload));
    }
}
