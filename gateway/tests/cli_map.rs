//! `bashu map` as a process: JSON Lines in, one result line per input line
//! out, exit codes 0 / 1 (bad table) / 2 (usage).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers may panic

use serde_json::Value;
use std::io::Write;
use std::process::{Command, Output, Stdio};

fn bashu(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_bashu"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin_pipe = child.stdin.take().unwrap();
    let input = stdin.to_vec();
    // Write from another thread so a full stdout pipe cannot deadlock us.
    let writer = std::thread::spawn(move || {
        let _ = stdin_pipe.write_all(&input);
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    out
}

fn lines(out: &Output) -> Vec<Value> {
    String::from_utf8(out.stdout.clone())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn fixture(rel: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(rel);
    let v: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    v.to_string()
}

#[test]
fn good_garbage_and_empty_lines_each_get_a_line() {
    let good = fixture("fixtures/records/cq/degree-course.json");
    let mut input = format!("{good}\ngarbage\n\n{{\"framework\":\"cqf\"}}\n").into_bytes();
    input.extend(vec![b' '; 1024 * 1024 + 1]);
    input.extend(format!("\n{good}\n").into_bytes());
    let out = bashu(&["map", "--from", "cqf", "--to", "wfs"], &input);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = lines(&out);
    let kinds: Vec<&str> = got
        .iter()
        .map(|l| {
            l.get("ok")
                .map_or_else(|| l["error"]["type"].as_str().unwrap(), |_| "ok")
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "ok",
            "malformed-request",
            "malformed-request",
            "schema-violation",
            "payload-too-large",
            "ok"
        ]
    );
    let ok = &got[0]["ok"];
    assert_eq!(ok["record"]["id"], "urn:bashu:learner:cq:k7q2m9x4");
    assert_eq!(ok["record"]["framework"], "wfs");
    assert_eq!(ok["record"]["level"], 6);
    assert_eq!(ok["record"]["credits"], 2.6);
    assert_eq!(ok["provenance"]["tableId"], "cqf-ref~wfs-ref");
    assert_eq!(ok["provenance"]["tableVersion"], "1.0.0");
    assert_eq!(got[5], got[0]);
}

#[test]
fn empty_input_gives_empty_output() {
    let out = bashu(&["map", "--from", "wfs", "--to", "cqf"], b"");
    assert_eq!(out.status.code(), Some(0));
    assert!(out.stdout.is_empty());
}

#[test]
fn identity_and_mapping_errors() {
    let sc = fixture("fixtures/records/sc/degree-course.json");
    let out = bashu(
        &["map", "--from", "wfs", "--to", "wfs"],
        format!("{sc}\n").as_bytes(),
    );
    assert_eq!(lines(&out)[0]["ok"]["record"]["credits"], 3);
    let out = bashu(
        &["map", "--from", "cqf", "--to", "wfs"],
        format!("{sc}\n").as_bytes(),
    );
    assert_eq!(lines(&out)[0]["error"]["type"], "unmappable-record");
}

#[test]
fn bad_table_exits_1_and_usage_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("table.toml");
    std::fs::write(
        &bad,
        schema_mapper::REFERENCE_TOML.replace("hours_per_credit = 18", "hours_per_credit = 0"),
    )
    .unwrap();
    let out = bashu(
        &[
            "map",
            "--from",
            "cqf",
            "--to",
            "wfs",
            "--table",
            bad.to_str().unwrap(),
        ],
        b"",
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("hours per credit"));

    let good = dir.path().join("table.toml");
    std::fs::write(&good, schema_mapper::REFERENCE_TOML).unwrap();
    let rec = fixture("fixtures/records/cq/micro-credential.json");
    let out = bashu(
        &[
            "map",
            "--from",
            "cqf",
            "--to",
            "wfs",
            "--table",
            good.to_str().unwrap(),
        ],
        rec.as_bytes(),
    );
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(lines(&out)[0]["ok"]["record"]["credits"], 1);

    assert_eq!(bashu(&["map", "--from", "cqf"], b"").status.code(), Some(2));
    assert_eq!(
        bashu(&["map", "--from", "eqf", "--to", "wfs"], b"").status.code(),
        Some(2)
    );
}
