//! Fuzz target bodies, shared by the cargo-fuzz harness in `fuzz/` (nightly,
//! libFuzzer) and the corpus replay test `gateway/tests/fuzz_corpus_replay.rs`
//! (stable CI), so both run exactly the same code on the same inputs.
//!
//! Each function takes raw bytes, drives one attacker-facing entry point the
//! way the gateway drives it, and asserts cheap invariants that must hold for
//! every input: no panic, a typed error or a value, and for accepted values
//! the properties the rest of the gateway relies on (canonical encodings,
//! stable round trips, translations that never inflate learning). A failed
//! assertion here is a finding: libFuzzer reports it as a crash.
//!
//! Nothing here does I/O or depends on the clock beyond reading it.

use crate::config::Config;
use crate::credential::profile;
use crate::credential::TranslationEvidence;
use crate::jose::json_strict::{self, JsonError, MAX_DEPTH};
use crate::jose::{b64, parse_compact, Alg, HeaderPolicy, SigningKey, VerifyingKey};
use crate::problem::ProblemType;
use crate::trust::keyset::MAX_KEYS;
use crate::trust::KeySet;
use crate::wire::Envelope;
use schema_mapper::{translate, LearningRecord, MapError, MappingTable, Translation};
use serde_json::{Map, Value};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// A fuzz target body: any bytes in, a panic only for a finding.
pub type Target = fn(&[u8]);

/// The fuzz targets, by the name of their `fuzz/fuzz_targets/<name>.rs` and
/// `fuzz/corpus/<name>/` directory.
pub const TARGETS: &[(&str, Target)] = &[
    ("jws", jws),
    ("json_strict", json_strict),
    ("record", record),
    ("envelope", envelope),
    ("keyset", keyset),
    ("config", config),
    ("mapper", mapper),
];

/// The public half of the RFC 8037 A.1 Ed25519 key (also
/// `fixtures/jose/rfc8037-a4-ed25519.jwk`): the RFC's example JWS verifies
/// with it, so a seed can reach the success path of the signature check.
const RFC8037_PUBLIC_JWK: &str =
    r#"{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","kid":"rfc8037"}"#;

/// Verifying keys of both allowed algorithms, built once per process.
fn verifying_keys() -> &'static [VerifyingKey] {
    static KEYS: OnceLock<Vec<VerifyingKey>> = OnceLock::new();
    KEYS.get_or_init(|| {
        let mut keys = Vec::new();
        if let Ok(k) = VerifyingKey::from_jwk_json(RFC8037_PUBLIC_JWK) {
            keys.push(k);
        }
        // A fresh P-256 key: no fuzz input can carry a valid signature for
        // it, but signatures of the right length still reach aws-lc-rs.
        if let Ok(k) = SigningKey::generate(Alg::Es256, "fuzz-es256") {
            keys.push(k.verifying_key().clone());
        }
        keys
    })
}

/// Compact JWS under both header policies, and the same bytes as a
/// credential payload (issuer, VC profile, translation evidence, subject).
///
/// Invariants: an accepted JWS has exactly three canonical base64url
/// segments, its payload re-encodes to the payload segment, its header names
/// the policy's `typ`, and the signature check returns (never panics).
pub fn jws(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for policy in [HeaderPolicy::CREDENTIAL, HeaderPolicy::KEYSET] {
        let parsed = match parse_compact(text, policy) {
            Ok(p) => p,
            Err(e) => {
                // Every refusal maps onto the problem catalogue.
                let _ = e.problem_type();
                continue;
            }
        };
        let segments: Vec<&str> = text.split('.').collect();
        assert_eq!(segments.len(), 3, "accepted JWS must have three segments");
        for seg in &segments {
            let bytes = b64::decode(seg);
            assert!(bytes.is_ok(), "accepted JWS has a non-canonical segment");
            if let Ok(bytes) = bytes {
                assert_eq!(&b64::encode(&bytes), seg, "segment is not canonical");
            }
        }
        assert_eq!(b64::encode(parsed.payload()), segments[1]);
        assert!(!segments[2].is_empty(), "accepted JWS has an empty signature");
        let typ = parsed.header().typ().to_ascii_lowercase();
        assert!(
            typ == policy.typ || typ.strip_prefix("application/") == Some(policy.typ),
            "header typ {typ:?} does not match the policy"
        );
        for key in verifying_keys() {
            let _ = parsed.verify_signature(key);
        }
        if policy == HeaderPolicy::CREDENTIAL {
            if let Ok(Value::Object(payload)) = json_strict::parse(parsed.payload()) {
                credential_payload(&payload);
            }
        } else if let Ok(v) = json_strict::parse(parsed.payload()) {
            let _ = KeySet::from_json(&v);
        }
    }
    // The raw bytes as a payload: mutations reach the profile checks
    // without having to keep a base64 wrapper intact.
    if let Ok(Value::Object(payload)) = json_strict::parse(data) {
        credential_payload(&payload);
    }
}

/// What the verifier and the receiving pipeline do with a credential payload
/// once its signature checked out (SPEC §3): issuer, profile, validity
/// period rendering, translation evidence, and the learning record.
fn credential_payload(payload: &Map<String, Value>) {
    let _ = profile::issuer_of(payload);
    if let Ok(p) = profile::check(payload) {
        assert!(p.id.starts_with("urn:uuid:"));
        // The verifier renders both ends of the period into its errors.
        let from = profile::format_time(p.valid_from);
        assert!(!from.is_empty(), "validFrom did not render");
        if let Some(until) = p.valid_until {
            assert!(until >= p.valid_from);
            let _ = profile::format_time(until);
        }
        if p.translation {
            if let Ok(ev) = TranslationEvidence::from_payload(payload) {
                let _ = ev.to_json();
            }
        }
    }
    // The receiving side strips the subject id and maps the rest.
    if let Some(Value::Object(subject)) = payload.get("credentialSubject") {
        let mut record = subject.clone();
        record.remove("id");
        check_record(&Value::Object(record));
    }
}

/// Strict JSON (duplicate members, depth) against plain `serde_json`.
///
/// Invariants: whatever the strict parser accepts, `serde_json` accepts with
/// the same value; what only `serde_json` accepts is refused for a duplicate
/// member or depth, never as a syntax error; accepted values are at most
/// [`MAX_DEPTH`] deep and survive serialise-and-reparse.
pub fn json_strict(data: &[u8]) {
    let strict = json_strict::parse(data);
    let plain = serde_json::from_slice::<Value>(data);
    match (&strict, &plain) {
        (Ok(s), Ok(p)) => assert_eq!(s, p, "strict and plain parses differ"),
        (Ok(_), Err(e)) => panic!("strict parser accepted what serde_json refuses: {e}"),
        (Err(JsonError::Syntax(e)), Ok(_)) => {
            panic!("strict parser called valid JSON a syntax error: {e}")
        }
        _ => {}
    }
    if let Ok(v) = strict {
        assert!(depth(&v) <= MAX_DEPTH, "accepted value deeper than MAX_DEPTH");
        let text = serde_json::to_vec(&v);
        assert!(text.is_ok(), "accepted value does not serialise");
        if let Ok(text) = text {
            let again = json_strict::parse(&text);
            assert!(again.is_ok(), "re-serialised value is refused: {again:?}");
            if let Ok(again) = again {
                assert!(equivalent(&v, &again), "re-parse changed the value");
            }
        }
        let _ = json_strict::parse_object(data);
    }
}

/// Nesting depth as the strict parser counts it (scalars 0, `[]` 1).
fn depth(v: &Value) -> usize {
    match v {
        Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
        Value::Object(o) => 1 + o.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// Structural equality where floats may differ in the last bits:
/// `serde_json` parses floats best-effort (no `float_roundtrip` feature), so
/// printing and re-reading a float can move it by an ulp.
fn equivalent(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            if x.is_f64() || y.is_f64() {
                match (x.as_f64(), y.as_f64()) {
                    (Some(x), Some(y)) => {
                        x == y || (x - y).abs() <= f64::EPSILON * 4.0 * x.abs().max(y.abs())
                    }
                    _ => false,
                }
            } else {
                x == y
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| equivalent(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .zip(y)
                    .all(|((ka, va), (kb, vb))| ka == kb && equivalent(va, vb))
        }
        _ => a == b,
    }
}

/// A learning record (strict JSON, then [`LearningRecord::from_json`]),
/// translated with the reference table in every direction.
pub fn record(data: &[u8]) {
    if let Ok(v) = json_strict::parse(data) {
        check_record(&v);
    }
}

/// Parses `v` as a record; an accepted record round-trips through JSON and
/// is translated with the reference table between its framework and every
/// framework the table knows.
fn check_record(v: &Value) {
    let record = match LearningRecord::from_json(v) {
        Ok(r) => r,
        Err(e) => {
            check_map_error(&e);
            return;
        }
    };
    assert!(record.validate().is_ok(), "parsed record does not validate");
    let again = LearningRecord::from_json(&record.to_json());
    assert_eq!(again.as_ref().ok(), Some(&record), "record JSON round trip");
    translate_everywhere(&record, reference_table());
}

fn reference_table() -> &'static MappingTable {
    static TABLE: OnceLock<MappingTable> = OnceLock::new();
    TABLE.get_or_init(MappingTable::reference)
}

/// Every mapper error names a problem of the catalogue, as the pipeline's
/// `map_problem` expects.
fn check_map_error(e: &MapError) {
    assert!(
        ProblemType::from_slug(e.slug()).is_some(),
        "map error slug {:?} is not in the problem catalogue",
        e.slug()
    );
}

/// Translates `record` from its own framework (and from the table's
/// frameworks, to exercise mismatches) to every framework of `table` and one
/// it does not know, checking [`check_translation`] on every success.
fn translate_everywhere(record: &LearningRecord, table: &MappingTable) {
    let ids = [
        record.framework.as_str(),
        table.home().id(),
        table.interchange().id(),
        "nope",
    ];
    for from in ids {
        for to in ids {
            match translate(record, from, to, table) {
                Ok(t) => check_translation(record, from, to, table, &t),
                Err(e) => check_map_error(&e),
            }
        }
    }
}

/// What a successful translation promises (SPEC §6): the target framework
/// and version, a level the target has, unchanged non-mapped fields, never
/// more learning hours than the source credits or reported hours stand for,
/// a valid output record, and determinism.
fn check_translation(record: &LearningRecord, from: &str, to: &str, table: &MappingTable, t: &Translation) {
    assert_eq!(
        record.framework, from,
        "translated a record from another framework"
    );
    let (Some(source), Some(target)) = (table.framework(from), table.framework(to)) else {
        panic!("translation between frameworks the table does not know: {from} -> {to}");
    };
    let out = &t.record;
    assert_eq!(out.framework, to);
    assert_eq!(out.framework_version, target.version());
    assert_eq!(
        (t.table_id.as_str(), t.table_version.as_str()),
        (table.id(), table.version())
    );
    assert!(
        out.level >= 1 && out.level <= target.top_level(),
        "level {} outside target",
        out.level
    );
    assert_eq!(out.learning_hours, record.learning_hours);
    assert_eq!(out.title, record.title);
    assert_eq!(out.awarded_on, record.awarded_on);
    assert_eq!(out.awarding_body, record.awarding_body);
    assert_eq!(out.extensions, record.extensions);
    assert!(target.outcome_types().iter().any(|o| o.id == out.outcome_type));
    if from == to {
        assert_eq!(out.level, record.level, "identity changed the level");
        assert_eq!(out.credits, record.credits, "identity changed the credits");
        assert!(t.losses.is_empty(), "identity reported losses");
    } else {
        // Learning hours (thousandths) the credits stand for, never more
        // after translation than before or than the reported hours.
        let before = u128::from(record.credits.millis()) * u128::from(source.hours_per_credit());
        let after = u128::from(out.credits.millis()) * u128::from(target.hours_per_credit());
        assert!(
            after <= before,
            "credits inflated: {before} -> {after} hour-millis"
        );
        assert!(
            after <= u128::from(record.learning_hours.millis()),
            "credits exceed the reported learning hours"
        );
        let step = target.credit_step().millis();
        assert!(
            step > 0 && out.credits.millis() % step == 0,
            "credits off the target step"
        );
    }
    assert!(out.validate().is_ok(), "translation produced an invalid record");
    let reparsed = LearningRecord::from_json(&out.to_json());
    assert_eq!(
        reparsed.as_ref().ok(),
        Some(out),
        "translated record JSON round trip"
    );
    let again = translate(record, from, to, table);
    assert_eq!(again.as_ref().ok(), Some(t), "translation is not deterministic");
    let _ = t.provenance_json();
}

/// `POST /v1/federation/envelopes` body as the API reads it
/// ([`crate::api::request::parse_json`]), then each chain link as the
/// receiving pipeline reads it (compact JWS under the credential policy,
/// strict payload, profile, evidence, record).
///
/// Invariants: a refused body is a `malformed-request` problem; an accepted
/// envelope serialises and reparses to the same fields.
pub fn envelope(data: &[u8]) {
    let mut headers = http::HeaderMap::new();
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    let env: Envelope = match crate::api::request::parse_json(&headers, data) {
        Ok(env) => env,
        Err(p) => {
            assert_eq!(
                p.kind,
                ProblemType::MalformedRequest,
                "bad body gave {:?}",
                p.kind
            );
            return;
        }
    };
    let text = serde_json::to_vec(&env);
    assert!(text.is_ok(), "accepted envelope does not serialise");
    if let Ok(text) = text {
        let back = crate::api::request::parse_json::<Envelope>(&headers, &text);
        assert!(back.is_ok(), "re-serialised envelope is refused");
        if let Ok(back) = back {
            assert_eq!(
                (&back.exchange_id, &back.origin, &back.destination, &back.chain),
                (&env.exchange_id, &env.origin, &env.destination, &env.chain)
            );
        }
    }
    for link in &env.chain {
        jws(link.as_bytes());
    }
}

/// Trust key sets: an unsigned payload as `bashu credential verify --jwks`
/// reads it, and a signed `bashu-keyset+jwt` as peers publish it.
///
/// Invariants: an accepted set has an issuer that is a member id, at most
/// [`MAX_KEYS`] keys with distinct kids, and survives serialise-and-reparse
/// unchanged; signature checks return (never panic).
pub fn keyset(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(set) = KeySet::parse_unsigned(text) {
        assert!(
            crate::ids::is_member_id(&set.iss),
            "iss {:?} is not a member id",
            set.iss
        );
        assert!(set.keys.len() <= MAX_KEYS);
        let mut kids = HashSet::new();
        assert!(
            set.keys.iter().all(|k| kids.insert(k.kid.as_str())),
            "duplicate kid"
        );
        let json = set.to_json().to_string();
        let again = KeySet::parse_unsigned(&json);
        assert!(again.is_ok(), "re-serialised key set is refused: {again:?}");
        if let Ok(again) = again {
            assert_eq!(again, set, "key set JSON round trip");
        }
        for key in &set.keys {
            let _ = key.check_usable(0, 60);
            let _ = key.unusable_since();
        }
        // A signed set must also live at most 30 days (SPEC §2); an unsigned
        // `--jwks` file need not.
        let lifetime = set.exp.checked_sub(set.iat);
        if lifetime.is_some_and(|l| l > 0 && l <= crate::trust::keyset::MAX_LIFETIME_SECS) {
            if let Ok(v) = json_strict::parse(json.as_bytes()) {
                assert!(KeySet::from_json(&v).is_ok(), "from_json refuses a parsed set");
            }
        }
    }
    let now = 1_800_000_000;
    for key in verifying_keys() {
        let _ = KeySet::verify(text.trim(), key, now);
    }
}

/// `gateway.toml` and `BASHU_*` overrides through [`Config::from_toml_str`].
/// Input: the TOML text, optionally followed by a NUL byte and
/// `NAME=value` lines used as the environment.
///
/// Invariants: every path of an accepted config is absolute (relative paths
/// resolve against the config's directory), the member id is valid, and
/// loading is deterministic.
pub fn config(data: &[u8]) {
    let (toml_part, env_part) = split_nul(data);
    let Ok(text) = std::str::from_utf8(toml_part) else {
        return;
    };
    let vars: Vec<(String, String)> = String::from_utf8_lossy(env_part)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let path = Path::new("/nonexistent/bashu-fuzz/gateway.toml");
    let Ok(cfg) = Config::from_toml_str(text, path, vars.clone()) else {
        return;
    };
    assert!(crate::ids::is_member_id(&cfg.member), "member {:?}", cfg.member);
    let mut paths: Vec<&PathBuf> = vec![
        &cfg.data_dir,
        &cfg.tls.ca,
        &cfg.tls.cert,
        &cfg.tls.key,
        &cfg.trust.keystore,
        &cfg.trust.federation_key,
    ];
    paths.extend(cfg.tls.crls.iter());
    paths.extend(cfg.mapping.table.iter());
    paths.extend(cfg.mapping.tables.iter());
    paths.extend(cfg.peers.values().map(|p| &p.federation_key));
    for p in paths {
        assert!(p.is_absolute(), "unresolved relative path {p:?}");
    }
    let again = Config::from_toml_str(text, path, vars);
    assert_eq!(
        again.as_ref().map(|c| format!("{c:?}")).ok(),
        Some(format!("{cfg:?}")),
        "config loading is not deterministic"
    );
}

/// The mapper on arbitrary tables: a mapping table (TOML, or JSON if it is
/// not TOML), a NUL byte, then a learning record (JSON). Without a NUL the
/// whole input is the record and the reference table is used.
///
/// Invariants: table loading and [`translate`] are total (typed errors), and
/// every success satisfies [`check_translation`].
pub fn mapper(data: &[u8]) {
    let (first, rest) = split_nul(data);
    let (table, record_bytes) = if data.contains(&0) {
        let Ok(text) = std::str::from_utf8(first) else {
            return;
        };
        let table = MappingTable::from_toml_str(text).or_else(|_| MappingTable::from_json_str(text));
        match table {
            Ok(t) => (t, rest),
            Err(_) => return,
        }
    } else {
        (reference_table().clone(), data)
    };
    // Every framework the table names has a version and a sane unit.
    for f in [table.home(), table.interchange()] {
        assert!(
            f.hours_per_credit() > 0,
            "table framework without hours per credit"
        );
        assert!(
            f.top_level() as usize == f.levels().len(),
            "top level is not the level count"
        );
        assert!(table.framework(f.id()).is_some());
    }
    let Ok(v) = json_strict::parse(record_bytes) else {
        return;
    };
    match LearningRecord::from_json(&v) {
        Ok(record) => translate_everywhere(&record, &table),
        Err(e) => check_map_error(&e),
    }
}

/// Splits at the first NUL byte (which neither TOML nor JSON text may
/// contain); without one, everything is the first part.
fn split_nul(data: &[u8]) -> (&[u8], &[u8]) {
    match data.iter().position(|b| *b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_target_survives_trivial_inputs() {
        for (name, f) in TARGETS {
            for input in [&b""[..], b"\0", b"{}", b"[]", b"a.b.c", b"\xff\xfe"] {
                f(input);
            }
            assert!(!name.is_empty());
        }
    }

    #[test]
    fn the_rfc8037_key_verifies_the_rfc_example() {
        assert!(!verifying_keys().is_empty());
        jws(include_bytes!("../../fixtures/jose/rfc8037-a4.jws"));
    }

    #[test]
    fn float_equivalence_tolerates_an_ulp_only() {
        let a: Value = serde_json::json!({"x": [1.0, 2]});
        let b: Value = serde_json::json!({"x": [1.000_000_000_000_000_2, 2]});
        let c: Value = serde_json::json!({"x": [1.1, 2]});
        assert!(equivalent(&a, &b));
        assert!(!equivalent(&a, &c));
    }
}
