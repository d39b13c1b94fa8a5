//! Replays the committed fuzz corpora (`fuzz/corpus/<target>/`) and crash
//! regressions (`fuzz/regressions/<target>/`) through the same target bodies
//! libFuzzer runs (`bashu_gateway::fuzzing`), on stable, as an ordinary
//! test. A panic or failed invariant on any file fails the test and names
//! the file.
//!
//! `write_seed_corpus` (ignored) regenerates the seed inputs from a fresh
//! dev federation; see fuzz/README.md.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bashu_gateway::credential::{issue_credential, new_learning_credential, IssuerId};
use bashu_gateway::devpki;
use bashu_gateway::fuzzing::TARGETS;
use bashu_gateway::jose::SigningKey;
use bashu_gateway::trust::LocalKeys;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::Instant;
use time::OffsetDateTime;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

/// Regular files directly under `dir`, sorted (an absent dir is empty).
fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = rd.map(|e| e.unwrap().path()).filter(|p| p.is_file()).collect();
    out.sort();
    out
}

#[test]
fn committed_corpora_and_regressions_replay_cleanly() {
    let started = Instant::now();
    let mut failures = Vec::new();
    let mut total = 0;
    for (name, target) in TARGETS {
        let corpus = files(&fuzz_dir().join("corpus").join(name));
        assert!(
            !corpus.is_empty(),
            "fuzz/corpus/{name}/ is missing or empty: every target keeps a corpus"
        );
        let regressions = files(&fuzz_dir().join("regressions").join(name));
        for path in corpus.iter().chain(&regressions) {
            let data = std::fs::read(path).unwrap();
            total += 1;
            let result = std::panic::catch_unwind(|| target(&data));
            if result.is_err() {
                failures.push(path.display().to_string());
            }
        }
    }
    assert!(failures.is_empty(), "fuzz inputs that fail: {failures:#?}");
    eprintln!("replayed {total} fuzz inputs in {:?}", started.elapsed());
}

#[test]
fn every_target_has_a_libfuzzer_entry_point() {
    for (name, _) in TARGETS {
        let src = std::fs::read_to_string(fuzz_dir().join(format!("fuzz_targets/{name}.rs"))).unwrap();
        assert!(
            src.contains(&format!("bashu_gateway::fuzzing::{name}(data)")),
            "fuzz/fuzz_targets/{name}.rs must call bashu_gateway::fuzzing::{name}"
        );
    }
}

/// Writes `data` as `fuzz/corpus/<target>/seed-<name>`.
fn seed(target: &str, name: &str, data: impl AsRef<[u8]>) {
    let dir = fuzz_dir().join("corpus").join(target);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("seed-{name}")), data).unwrap();
}

/// Regenerates the seed files from a fresh dev federation (keys, key sets,
/// credentials, configs), the record fixtures and the reference table:
/// `cargo test -p bashu-gateway --test fuzz_corpus_replay -- --ignored`.
#[test]
#[ignore = "writes into fuzz/corpus; run by hand to refresh seeds"]
fn write_seed_corpus() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let tmp = tempfile::tempdir().unwrap();
    let fed = devpki::init(tmp.path(), &["cq", "sc"]).unwrap();

    // Records: the fixtures (subject id removed, as the pipeline does).
    let mut records = Vec::new();
    for member in ["cq", "sc"] {
        for path in files(&root.join("fixtures/records").join(member)) {
            let mut v: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
            let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
            let subject = v.clone();
            v.as_object_mut().unwrap().remove("id");
            let text = serde_json::to_string_pretty(&v).unwrap();
            seed("record", &format!("{member}-{stem}.json"), &text);
            seed("json_strict", &format!("record-{member}-{stem}.json"), &text);
            records.push((format!("{member}-{stem}"), subject, text));
        }
    }

    // Mapper: the reference table as TOML and as JSON, each with records.
    let toml_text = schema_mapper::REFERENCE_TOML;
    let toml_value: toml::Value = toml::from_str(toml_text).unwrap();
    let json_table = serde_json::to_string(&toml_value).unwrap();
    for (name, _, record) in records.iter().take(4) {
        seed(
            "mapper",
            &format!("toml-{name}"),
            format!("{toml_text}\0{record}"),
        );
        seed(
            "mapper",
            &format!("json-{name}"),
            format!("{json_table}\0{record}"),
        );
    }
    seed("mapper", "reference-only-record", &records[0].2);
    seed("json_strict", "reference-table.json", &json_table);

    // Credentials: one signed by each credit bank, plus an unsigned
    // translation payload (the jws target also reads raw payloads).
    let now = OffsetDateTime::now_utc();
    let mut credentials = Vec::new();
    for (i, member) in ["cq", "sc"].iter().enumerate() {
        let m = fed.member(member).unwrap();
        let key = SigningKey::load(&m.issuer_key).unwrap();
        let (_, subject, _) = records.iter().find(|(n, _, _)| n.starts_with(member)).unwrap();
        let payload = new_learning_credential(
            &IssuerId::credit_bank(member).unwrap(),
            subject.clone(),
            now,
            Some(now + time::Duration::days(365)),
        );
        let jws = issue_credential(&payload, &key).unwrap();
        seed("jws", &format!("credential-{member}.jws"), &jws);
        seed(
            "jws",
            &format!("credential-payload-{member}.json"),
            payload.to_string(),
        );
        seed(
            "json_strict",
            &format!("credential-payload-{member}.json"),
            payload.to_string(),
        );
        let mut translated = payload.clone();
        translated["type"] = json!([
            "VerifiableCredential",
            "LearningCredential",
            "TranslatedLearningCredential"
        ]);
        translated["issuer"] = json!(IssuerId::gateway(member).unwrap().to_string());
        translated["evidence"] = json!([{
            "type": ["Evidence", "TranslationEvidence"],
            "predecessorId": payload["id"],
            "predecessorSha256": "0".repeat(64),
            "mappingTableId": "cqf-ref~wfs-ref",
            "mappingTableVersion": "1.0.0",
            "verifiedAt": "2026-11-28T10:00:00Z"
        }]);
        seed(
            "jws",
            &format!("translation-payload-{member}.json"),
            translated.to_string(),
        );
        credentials.push(jws);
        let _ = i;
    }
    seed(
        "jws",
        "rfc8037-a4.jws",
        std::fs::read(root.join("fixtures/jose/rfc8037-a4.jws")).unwrap(),
    );

    // Envelopes as a peer gateway posts them.
    let envelope = json!({
        "exchangeId": "ex-0001",
        "origin": "cq",
        "destination": "sc",
        "chain": [credentials[0], credentials[1]],
    });
    seed("envelope", "two-links.json", envelope.to_string());
    seed("json_strict", "envelope.json", envelope.to_string());
    seed(
        "envelope",
        "empty-chain.json",
        json!({"exchangeId": "x", "origin": "sc", "destination": "cq", "chain": []}).to_string(),
    );

    // Key sets: each member's signed set and its payload.
    for member in ["cq", "sc"] {
        let m = fed.member(member).unwrap();
        let local = LocalKeys::open(&m.keystore, &m.federation_key, 3600).unwrap();
        let signed = local.signed_keyset().unwrap();
        seed("keyset", &format!("signed-{member}.jws"), &signed);
        seed("jws", &format!("keyset-{member}.jws"), &signed);
        let payload = serde_json::to_string_pretty(&local.keyset().to_json()).unwrap();
        seed("keyset", &format!("payload-{member}.json"), &payload);
        seed("json_strict", &format!("keyset-{member}.json"), &payload);
    }

    // gateway.toml as `bashu dev init` writes it, alone and with overrides.
    for member in ["cq", "sc"] {
        let m = fed.member(member).unwrap();
        let text = std::fs::read_to_string(&m.config).unwrap();
        seed("config", &format!("{member}.toml"), &text);
        seed(
            "config",
            &format!("{member}-env.toml"),
            format!(
                "{text}\0BASHU_LIMITS_RATE_BURST=7\nBASHU_TLS_CRLS=a.pem,b.pem\nBASHU_PEERS_GZ_URL=https://127.0.0.1:1\n"
            ),
        );
    }
}
