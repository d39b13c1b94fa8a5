//! `bashu map` as a process: JSON Lines, a JSON array or pretty-printed
//! JSON in, one result line per record out, exit codes 0 / 1 (a record
//! failed, or a bad table) / 2 (usage).

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
    // Failed lines make the exit code 1, yet every line got its result.
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("JSON Lines"));
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

fn fixture_text(rel: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(rel);
    std::fs::read_to_string(path).unwrap()
}

const CQ_FIXTURES: [&str; 4] = [
    "fixtures/records/cq/community-course.json",
    "fixtures/records/cq/degree-course.json",
    "fixtures/records/cq/micro-credential.json",
    "fixtures/records/cq/vocational-skill.json",
];

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The repository's own pretty-printed fixtures map as they are, one at a
/// time or several in a row, as an array, as JSON Lines, and after a BOM;
/// stderr says which form was read.
#[test]
fn pretty_json_arrays_and_json_lines_all_map() {
    let map = |input: &[u8]| bashu(&["map", "--from", "cqf", "--to", "wfs"], input);
    let expect_all_ok = |out: &Output, n: usize, form: &str| {
        assert_eq!(out.status.code(), Some(0), "{}", stderr(out));
        let got = lines(out);
        assert_eq!(got.len(), n, "{}", String::from_utf8_lossy(&out.stdout));
        assert!(got.iter().all(|l| l.get("ok").is_some()), "{got:?}");
        assert!(stderr(out).contains(form), "{}", stderr(out));
        got
    };
    let one = expect_all_ok(
        &map(fixture_text(CQ_FIXTURES[1]).as_bytes()),
        1,
        "pretty-printed JSON",
    );
    assert_eq!(one[0]["ok"]["record"]["id"], "urn:bashu:learner:cq:k7q2m9x4");

    let pretty: String = CQ_FIXTURES.iter().map(|f| fixture_text(f)).collect();
    let all = expect_all_ok(&map(pretty.as_bytes()), 4, "pretty-printed JSON");

    let array = format!(
        "[\n{}\n]\n",
        CQ_FIXTURES
            .iter()
            .map(|f| fixture_text(f))
            .collect::<Vec<_>>()
            .join(",\n")
    );
    assert_eq!(expect_all_ok(&map(array.as_bytes()), 4, "a JSON array"), all);

    let jsonl: String = CQ_FIXTURES.iter().map(|f| fixture(f) + "\n").collect();
    assert_eq!(expect_all_ok(&map(jsonl.as_bytes()), 4, "JSON Lines"), all);

    let mut bom = b"\xEF\xBB\xBF".to_vec();
    bom.extend_from_slice(pretty.as_bytes());
    let out = map(&bom);
    assert_eq!(expect_all_ok(&out, 4, "pretty-printed JSON"), all);
    assert!(stderr(&out).contains("byte order mark"));
    let mut bom_jsonl = b"\xEF\xBB\xBF".to_vec();
    bom_jsonl.extend_from_slice(jsonl.as_bytes());
    assert_eq!(expect_all_ok(&map(&bom_jsonl), 4, "JSON Lines"), all);
}

/// Any failed record makes the exit code 1; every record still gets its line.
#[test]
fn a_failed_record_exits_1_after_writing_every_result() {
    let good = fixture(CQ_FIXTURES[1]);
    let input = format!("[{good}, {{\"framework\":\"cqf\"}}, {good}]");
    let out = bashu(&["map", "--from", "cqf", "--to", "wfs"], input.as_bytes());
    assert_eq!(out.status.code(), Some(1));
    let got = lines(&out);
    assert_eq!(got.len(), 3);
    assert!(got[0].get("ok").is_some() && got[2].get("ok").is_some());
    assert_eq!(got[1]["error"]["type"], "schema-violation");
    assert!(stderr(&out).contains("1 failed"), "{}", stderr(&out));

    // A broken pretty document: what was read is mapped, then one error.
    let broken = format!("{}\n{{\n  \"framework\": ", fixture_text(CQ_FIXTURES[0]));
    let out = bashu(&["map", "--from", "cqf", "--to", "wfs"], broken.as_bytes());
    assert_eq!(out.status.code(), Some(1));
    let got = lines(&out);
    assert_eq!(got.len(), 2);
    assert!(got[0].get("ok").is_some());
    assert_eq!(got[1]["error"]["type"], "malformed-request");
}

/// Unknown levels and outcome types list the framework's valid values and
/// suggest the nearest one.
#[test]
fn invalid_values_list_the_valid_ones_and_suggest_the_nearest() {
    let base: Value = serde_json::from_str(&fixture(CQ_FIXTURES[1])).unwrap();
    let with = |field: &str, v: Value| {
        let mut r = base.clone();
        r[field] = v;
        r
    };
    let records = [
        with("level", Value::from("L11")),
        with("level", Value::from(11)),
        with("outcomeType", Value::from("学分课程")),
        with("outcomeType", Value::from("职业技能等级 ")),
        with("outcomeType", Value::from("degre-education")),
    ];
    let input: String = records.iter().map(|r| format!("{r}\n")).collect();
    let out = bashu(&["map", "--from", "cqf", "--to", "wfs"], input.as_bytes());
    assert_eq!(out.status.code(), Some(1));
    let got = lines(&out);
    let levels: Vec<Value> = (1..=10).map(Value::from).collect();
    for l in &got[..2] {
        let err = &l["error"];
        assert_eq!(err["valid"], Value::Array(levels.clone()), "{l}");
        assert_eq!(err["suggestion"], 10, "{l}");
        let detail = err["detail"].as_str().unwrap();
        assert!(
            detail.contains("1..10") && detail.contains("did you mean 10"),
            "{detail}"
        );
    }
    let expect = [
        (2, "degree-education", "学历教育"),
        (3, "vocational-skill-level", "职业技能等级"),
        (4, "degree-education", "学历教育"),
    ];
    for (i, id, zh) in expect {
        let err = &got[i]["error"];
        assert_eq!(err["type"], "unmappable-record");
        assert_eq!(err["suggestion"], id, "{err}");
        assert_eq!(err["valid"].as_array().unwrap().len(), 5, "{err}");
        let detail = err["detail"].as_str().unwrap();
        assert!(
            detail.contains(&format!("did you mean `{id}` ({zh})?")),
            "{detail}"
        );
        assert!(
            detail.contains("micro-credential (微证书)"),
            "valid values listed: {detail}"
        );
    }
    assert!(got[3]["error"]["detail"].as_str().unwrap().contains("whitespace"));
}

/// Loss notes say which numbers are credits and which are hours.
#[test]
fn loss_notes_state_their_units() {
    let case: Value = serde_json::from_str(&fixture_text(
        "fixtures/mapping/cqf-wfs-L05-micro-credential.json",
    ))
    .unwrap();
    let out = bashu(
        &["map", "--from", "cqf", "--to", "wfs"],
        format!("{}\n", case["input"]).as_bytes(),
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let losses = lines(&out)[0]["ok"]["provenance"]["losses"].clone();
    assert_eq!(losses[0]["reason"], "credits-capped-by-hours");
    assert_eq!(
        (losses[0]["sourceUnit"].as_str(), losses[0]["targetUnit"].as_str()),
        (Some("credits"), Some("hours"))
    );
    assert!(losses[0]["note"].as_str().unwrap().contains("40 learning hours"));
    assert_eq!(losses[1]["reason"], "credits-rounded-down");
    assert_eq!(
        (losses[1]["sourceUnit"].as_str(), losses[1]["targetUnit"].as_str()),
        (Some("credits"), Some("credits"))
    );
    // The golden fields are unchanged.
    for (got, want) in losses
        .as_array()
        .unwrap()
        .iter()
        .zip(case["expected"]["provenance"]["losses"].as_array().unwrap())
    {
        for k in ["field", "reason", "source", "target"] {
            assert_eq!(got[k], want[k]);
        }
    }
}
