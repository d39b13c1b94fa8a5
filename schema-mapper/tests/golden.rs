//! Golden cases: every `fixtures/mapping/*.json` file holds an input record,
//! the direction, and the expected output (record + provenance) or error
//! slug. The expected values were computed by an independent oracle
//! (`fixtures/mapping/generate.py`, exact rational arithmetic), not by this
//! crate.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers may panic

use schema_mapper::{translate, LearningRecord, MappingTable};
use serde_json::{json, Value};
use std::path::PathBuf;

fn cases() -> Vec<(String, Value)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/mapping");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (
                name,
                serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap(),
            )
        })
        .collect()
}

fn outcome(case: &Value) -> Value {
    let table = MappingTable::reference();
    let (from, to) = (case["from"].as_str().unwrap(), case["to"].as_str().unwrap());
    match LearningRecord::from_json(&case["input"]).and_then(|r| translate(&r, from, to, &table)) {
        Ok(t) => json!({"record": t.record.to_json(), "provenance": t.provenance_json()}),
        Err(e) => json!({"error": e.slug()}),
    }
}

#[test]
fn golden_cases_match() {
    let cases = cases();
    assert!(cases.len() >= 26, "fixtures missing: {}", cases.len());
    let mut failures = Vec::new();
    for (name, case) in &cases {
        // Compare serialized text: key order and integer-vs-float matter.
        let (want, got) = (case["expected"].to_string(), outcome(case).to_string());
        if want != got {
            failures.push(format!("{name}:\n  want {want}\n  got  {got}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn golden_cases_cover_every_level_and_outcome_type_both_ways() {
    let table = MappingTable::reference();
    let cases = cases();
    let ok = |from: &'static str, to: &'static str| {
        cases
            .iter()
            .filter(move |(_, c)| c["from"] == from && c["to"] == to && c["expected"].get("record").is_some())
            .map(|(_, c)| c.clone())
            .collect::<Vec<_>>()
    };
    let mut cqf_levels: Vec<u64> = ok("cqf", "wfs")
        .into_iter()
        .map(|c| c["input"]["level"].as_u64().unwrap())
        .collect();
    cqf_levels.sort();
    assert_eq!(cqf_levels, (1..=10).collect::<Vec<_>>());
    let mut wfs_levels: Vec<u64> = ok("wfs", "cqf")
        .into_iter()
        .map(|c| c["input"]["level"].as_u64().unwrap())
        .collect();
    wfs_levels.sort();
    assert_eq!(wfs_levels, (1..=8).collect::<Vec<_>>());
    for (from, to, fw) in [("cqf", "wfs", table.home()), ("wfs", "cqf", table.interchange())] {
        for o in fw.outcome_types() {
            assert!(
                ok(from, to)
                    .iter()
                    .any(|c| c["input"]["outcomeType"] == o.id.as_str()),
                "{from}->{to} {}",
                o.id
            );
        }
    }
}

/// The quickstart's credential subjects are valid records of their member's
/// home framework and translate to the other framework without error.
#[test]
fn record_fixtures_translate() {
    let table = MappingTable::reference();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/records");
    let mut seen = 0;
    for (member, from, to) in [("cq", "cqf", "wfs"), ("sc", "wfs", "cqf")] {
        for entry in std::fs::read_dir(root.join(member)).unwrap() {
            let path = entry.unwrap().path();
            let mut subject: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            let id = subject.as_object_mut().unwrap().remove("id").unwrap();
            assert!(
                id.as_str()
                    .unwrap()
                    .starts_with(&format!("urn:bashu:learner:{member}:")),
                "{path:?}"
            );
            let record = LearningRecord::from_json(&subject).unwrap();
            assert_eq!(record.to_json(), subject, "{path:?} is not in normal form");
            let t = translate(&record, from, to, &table).unwrap();
            assert!(translate(&t.record, to, from, &table).is_ok(), "{path:?}");
            seen += 1;
        }
    }
    assert_eq!(seen, 7);
}
