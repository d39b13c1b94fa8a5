//! `bashu credential issue|verify` end to end through the binary.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

use bashu_gateway::jose::{Alg, SigningKey};
use bashu_gateway::trust::{KeyRole, KeyStore};
use serde_json::{json, Value};
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
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    /// A member `cq` with an issuer key (private file for the bank), a key
    /// store, an unsigned key-set file and a signed key set.
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let mut store = KeyStore::create("cq").unwrap();
        let issuer = store.generate_issuer(Alg::Es256, now).unwrap();
        store.generate(KeyRole::Gateway, Alg::EdDsa, now).unwrap();
        issuer.save_private(&dir.path().join("issuer.jwk")).unwrap();
        let set = store.keyset(now, 600);
        let mut unsigned = set.to_json();
        for f in ["iat", "exp", "seq"] {
            unsigned.as_object_mut().unwrap().remove(f);
        }
        std::fs::write(dir.path().join("keys.json"), unsigned.to_string()).unwrap();
        let fed = SigningKey::generate(Alg::EdDsa, "cq-fed").unwrap();
        std::fs::write(
            dir.path().join("fed.pub.jwk"),
            Value::Object(fed.public_jwk()).to_string(),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("keyset.jws"),
            store.publish(&fed, now, 600).unwrap(),
        )
        .unwrap();
        let other = SigningKey::generate(Alg::EdDsa, "xx-fed").unwrap();
        std::fs::write(
            dir.path().join("other.pub.jwk"),
            Value::Object(other.public_jwk()).to_string(),
        )
        .unwrap();
        Self { dir }
    }

    fn p(&self, name: &str) -> String {
        self.dir.path().join(name).to_str().unwrap().to_owned()
    }

    fn issue(&self, record: &Value) -> String {
        let out = bashu(
            &[
                "credential",
                "issue",
                "--key",
                &self.p("issuer.jwk"),
                "--issuer",
                "urn:bashu:cq:credit-bank",
                "--valid-days",
                "30",
            ],
            record.to_string().as_bytes(),
        );
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    fn verify_jwks(&self, jws: &str) -> Output {
        bashu(
            &["credential", "verify", "--jwks", &self.p("keys.json")],
            format!("{jws}\n").as_bytes(),
        )
    }
}

fn record() -> Value {
    json!({
        "id": "urn:bashu:learner:cq:0001",
        "framework": "cqf", "frameworkVersion": "1.0.0", "level": 4, "credits": 6,
        "learningHours": 180, "outcomeType": "微证书", "title": {"zh": "茶艺"},
        "awardedOn": "2025-06-30", "awardingBody": "重庆开放大学", "extensions": {}
    })
}

fn problem_type(out: &Output) -> String {
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["type"].as_str().unwrap().to_owned()
}

#[test]
fn issue_then_verify_with_jwks_and_with_a_signed_keyset() {
    let env = Env::new();
    let jws = env.issue(&record());
    assert_eq!(jws.split('.').count(), 3);

    let out = env.verify_jwks(&jws);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    let payload: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(payload["issuer"], "urn:bashu:cq:credit-bank");
    assert_eq!(payload["credentialSubject"], record());
    assert!(payload["validUntil"].is_string());

    let out = bashu(
        &[
            "credential",
            "verify",
            "--keyset",
            &env.p("keyset.jws"),
            "--federation-key",
            &env.p("fed.pub.jwk"),
        ],
        jws.as_bytes(),
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
}

#[test]
fn failures_print_the_problem_and_exit_1() {
    let env = Env::new();
    let jws = env.issue(&record());
    let (input, sig) = jws.rsplit_once('.').unwrap();
    let flipped = if sig.starts_with('A') { "B" } else { "A" };
    let tampered = format!("{input}.{flipped}{}", &sig[1..]);
    assert_eq!(
        problem_type(&env.verify_jwks(&tampered)),
        "urn:bashu:problem:invalid-signature"
    );
    assert_eq!(
        problem_type(&env.verify_jwks("not a jws")),
        "urn:bashu:problem:malformed-request"
    );

    // A credential by a key the key set does not contain.
    let stranger = SigningKey::generate(Alg::Es256, "cq-cb-stranger").unwrap();
    stranger
        .save_private(&env.dir.path().join("stranger.jwk"))
        .unwrap();
    let out = bashu(
        &[
            "credential",
            "issue",
            "--key",
            &env.p("stranger.jwk"),
            "--issuer",
            "urn:bashu:cq:credit-bank",
        ],
        record().to_string().as_bytes(),
    );
    let foreign = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        problem_type(&env.verify_jwks(foreign.trim())),
        "urn:bashu:problem:unknown-key"
    );

    // A key set that the given federation key did not sign.
    let out = bashu(
        &[
            "credential",
            "verify",
            "--keyset",
            &env.p("keyset.jws"),
            "--federation-key",
            &env.p("other.pub.jwk"),
        ],
        jws.as_bytes(),
    );
    assert_eq!(problem_type(&out), "urn:bashu:problem:unknown-key");

    // A record that is not JSON cannot be issued.
    let out = bashu(
        &[
            "credential",
            "issue",
            "--key",
            &env.p("issuer.jwk"),
            "--issuer",
            "urn:bashu:cq:credit-bank",
        ],
        b"{oops",
    );
    assert_eq!(out.status.code(), Some(1));
    // Neither can one without a learner id.
    let out = bashu(
        &[
            "credential",
            "issue",
            "--key",
            &env.p("issuer.jwk"),
            "--issuer",
            "urn:bashu:cq:credit-bank",
        ],
        br#"{"level":4}"#,
    );
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn usage_errors_exit_2() {
    let env = Env::new();
    let cases: Vec<Vec<String>> = vec![
        vec!["credential".into(), "verify".into()],
        vec![
            "credential".into(),
            "verify".into(),
            "--keyset".into(),
            env.p("keyset.jws"),
        ],
        vec![
            "credential".into(),
            "verify".into(),
            "--jwks".into(),
            env.p("missing.json"),
        ],
        vec![
            "credential".into(),
            "issue".into(),
            "--key".into(),
            env.p("issuer.jwk"),
            "--issuer".into(),
            "urn:bashu:cq:operator".into(),
        ],
        vec![
            "credential".into(),
            "issue".into(),
            "--key".into(),
            env.p("missing.jwk"),
            "--issuer".into(),
            "urn:bashu:cq:credit-bank".into(),
        ],
    ];
    for args in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = bashu(&args, b"");
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Issue 13.9: `credential issue` refuses records the gateway would refuse
/// (level 42, an unknown top-level field, no learner id) with the problem
/// and exit 1; `--no-check` signs them anyway.
#[test]
fn issue_checks_the_record_against_the_profile_and_framework() {
    let env = Env::new();
    let issue = |record: &Value, extra: &[&str]| {
        let key = env.p("issuer.jwk");
        let mut args = vec![
            "credential",
            "issue",
            "--key",
            key.as_str(),
            "--issuer",
            "urn:bashu:cq:credit-bank",
        ];
        args.extend_from_slice(extra);
        bashu(&args, record.to_string().as_bytes())
    };
    let mut level = record();
    level["level"] = json!(42);
    assert_eq!(
        problem_type(&issue(&level, &[])),
        "urn:bashu:problem:unmappable-record"
    );
    let mut unknown = record();
    unknown["grade"] = json!("A");
    let out = issue(&unknown, &[]);
    assert_eq!(problem_type(&out), "urn:bashu:problem:schema-violation");
    assert!(String::from_utf8_lossy(&out.stdout).contains("grade"));
    let mut anonymous = record();
    anonymous.as_object_mut().unwrap().remove("id");
    assert_eq!(
        problem_type(&issue(&anonymous, &[])),
        "urn:bashu:problem:schema-violation"
    );

    let forced = issue(&level, &["--no-check"]);
    assert!(
        forced.status.success(),
        "{}",
        String::from_utf8_lossy(&forced.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&forced.stdout).trim().split('.').count(),
        3
    );
}

/// `--lang` and LANG choose the language of the printed problem's title;
/// `type` stays the same.
#[test]
fn verify_problems_are_localized_by_flag_or_lang() {
    let env = Env::new();
    let run = |extra: &[&str], lang_env: Option<&str>| -> Value {
        let mut args = vec!["credential", "verify", "--jwks"];
        let keys = env.p("keys.json");
        args.push(&keys);
        args.extend_from_slice(extra);
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_bashu"));
        cmd.args(&args)
            .env_remove("LC_ALL")
            .env_remove("LC_MESSAGES")
            .env_remove("LANG")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(l) = lang_env {
            cmd.env("LANG", l);
        }
        let mut child = cmd.spawn().unwrap();
        child.stdin.take().unwrap().write_all(b"not a jws\n").unwrap();
        let out = child.wait_with_output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(1),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let en = run(&[], None);
    assert_eq!(en["title"], "Request is not well-formed");
    let zh = run(&["--lang", "zh"], None);
    assert_eq!(zh["title"], "请求格式不正确");
    assert_eq!(zh["type"], en["type"]);
    assert_eq!(run(&[], Some("zh_CN.UTF-8"))["title"], "请求格式不正确");
    assert_eq!(
        run(&["--lang", "en"], Some("zh_CN.UTF-8"))["title"],
        "Request is not well-formed"
    );
}
