//! What `bashu serve` writes for operators: with `--log-format json` every
//! output line is a JSON object (the "listening" line too) with fields as
//! values, never `Some(…)`, and 4xx answers are logged with their problem
//! type; plain text has no ANSI colours when stderr is not a terminal;
//! unknown `BASHU_*` variables are warned about, naming the nearest known
//! one; a key that does not match the certificate is named with both files.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

use bashu_gateway::devfed::CreditBank;
use bashu_gateway::devpki::{self, DevFederation};
use serde_json::Value;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A `bashu serve` child whose stdout and stderr lines are collected.
struct Serve {
    child: Child,
    stderr: Arc<Mutex<Vec<String>>>,
    stdout: Arc<Mutex<Vec<String>>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

fn collect<R: Read + Send + 'static>(stream: R) -> (Arc<Mutex<Vec<String>>>, std::thread::JoinHandle<()>) {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&lines);
    let handle = std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            sink.lock().unwrap().push(line);
        }
    });
    (lines, handle)
}

impl Serve {
    fn spawn(config: &Path, args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_bashu"));
        cmd.args(["serve", "--config"])
            .arg(config)
            .args(args)
            .env("RUST_LOG", "info")
            .env_remove("NO_COLOR")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let (stderr, e) = collect(child.stderr.take().unwrap());
        let (stdout, o) = collect(child.stdout.take().unwrap());
        Self {
            child,
            stderr,
            stdout,
            readers: vec![e, o],
        }
    }

    /// Waits (bounded) until a stderr line satisfies `pred`.
    fn wait_for(&mut self, what: &str, pred: impl Fn(&str) -> bool) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if self.stderr.lock().unwrap().iter().any(|l| pred(l)) {
                return;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "bashu serve exited ({status}) before {what}: {:#?}",
                    self.stderr.lock().unwrap()
                );
            }
            assert!(
                Instant::now() < deadline,
                "no {what} within {START_TIMEOUT:?}: {:#?}",
                self.stderr.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, wait for the drain, and return (stdout, stderr) lines.
    fn stop(mut self) -> (Vec<String>, Vec<String>) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = self.child.kill();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        for r in self.readers.drain(..) {
            r.join().unwrap();
        }
        let out = self.stdout.lock().unwrap().clone();
        let err = self.stderr.lock().unwrap().clone();
        (out, err)
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn federation(dir: &Path) -> DevFederation {
    devpki::init(dir, &["cq", "sc"]).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_json_with_plain_values_and_problem_types() {
    let dir = tempfile::tempdir().unwrap();
    let fed = federation(dir.path());
    let cq = fed.member("cq").unwrap();
    let mut serve = Serve::spawn(&cq.config, &["--log-format", "json"], &[]);
    serve.wait_for("the listening line", |l| l.contains("listening on"));

    // Two 4xx answers of different types.
    let bank = CreditBank::new(cq, &fed.ca_cert).unwrap();
    let missing = bank
        .exchange("00000000-0000-4000-8000-000000000000")
        .await
        .unwrap();
    let bad = bank.submit("not-a-jws", "sc").await.unwrap();
    let mut types = Vec::new();
    for answer in [&missing, &bad] {
        assert!((400..500).contains(&answer.status.as_u16()), "{}", answer.body);
        types.push(answer.body["type"].as_str().unwrap().to_owned());
    }
    for t in &types {
        serve.wait_for("the 4xx request line", |l| l.contains(t.as_str()));
    }
    let (stdout, stderr) = serve.stop();

    let mut parsed = Vec::new();
    for line in stdout.iter().chain(&stderr) {
        let v: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line:?}"));
        assert!(!line.contains("Some("), "Debug-formatted Option in {line}");
        assert!(!line.contains('\u{1b}'), "ANSI escape in {line}");
        parsed.push(v);
    }
    let fields = |v: &Value| v["fields"].clone();
    let listening: Vec<&Value> = parsed
        .iter()
        .filter(|v| {
            fields(v)["message"]
                .as_str()
                .is_some_and(|m| m.contains("listening on"))
        })
        .collect();
    assert_eq!(listening.len(), 1, "{parsed:#?}");
    assert_eq!(fields(listening[0])["member"], "cq");
    assert_eq!(fields(listening[0])["api"], format!("https://{}", cq.api_addr));
    let started = parsed
        .iter()
        .find(|v| fields(v)["message"] == "API listener started")
        .expect("API listener line");
    assert_eq!(fields(started)["addr"], cq.api_addr.to_string());
    for t in &types {
        let line = parsed
            .iter()
            .find(|v| fields(v)["message"] == "request done" && fields(v)["problem"] == t.as_str())
            .unwrap_or_else(|| panic!("no request line with problem {t}: {parsed:#?}"));
        let status = fields(line)["status"].as_u64().unwrap();
        assert!((400..500).contains(&status));
    }
    // Successful answers carry no problem field.
    assert!(parsed
        .iter()
        .filter(|v| fields(v)["message"] == "request done")
        .all(|v| fields(v)["status"].as_u64().unwrap() >= 400 || fields(v).get("problem").is_none()));
}

#[test]
fn text_logs_to_a_pipe_have_no_colours_and_unknown_variables_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let fed = federation(dir.path());
    let cq = fed.member("cq").unwrap();
    let mut serve = Serve::spawn(
        &cq.config,
        &[],
        &[
            ("BASHU_LISTN_API", "127.0.0.1:1"),
            // Known but not a config override: read by the dev PostgreSQL tool.
            ("BASHU_PG_BIN", "/nonexistent"),
        ],
    );
    serve.wait_for("the listening line", |l| l.contains("listening on"));
    let (_, stderr) = serve.stop();
    let text = stderr.join("\n");
    assert!(!text.contains('\u{1b}'), "ANSI escapes written to a pipe: {text}");
    let warning = stderr
        .iter()
        .find(|l| l.contains("BASHU_LISTN_API"))
        .unwrap_or_else(|| panic!("no warning about BASHU_LISTN_API: {text}"));
    assert!(warning.contains("WARN"), "{warning}");
    assert!(warning.contains("did you mean BASHU_LISTEN_API"), "{warning}");
    assert!(
        !text.contains("BASHU_PG_BIN"),
        "a known variable is not warned about: {text}"
    );
}

#[test]
fn a_key_that_does_not_match_the_certificate_names_both_files() {
    let dir = tempfile::tempdir().unwrap();
    let fed = federation(dir.path());
    let cq = fed.member("cq").unwrap();
    // The credit bank's key (mode 0600 already) in place of the gateway's.
    std::fs::copy(&cq.credit_bank_key, &cq.gateway_key).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_bashu"))
        .args(["serve", "--config"])
        .arg(&cq.config)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let (cert, key) = (
        cq.gateway_cert.display().to_string(),
        cq.gateway_key.display().to_string(),
    );
    assert!(
        err.contains(&cert) && err.contains(&key) && err.contains("does not match"),
        "{err}"
    );

    // In JSON mode the same error is an ERROR line of the JSON stream.
    let out = Command::new(env!("CARGO_BIN_EXE_bashu"))
        .args(["serve", "--log-format", "json", "--config"])
        .arg(&cq.config)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stderr)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l:?}")))
        .collect();
    let error = lines
        .iter()
        .find(|v| v["level"] == "ERROR")
        .expect("an ERROR line");
    let text = error["fields"]["error"].as_str().unwrap();
    assert!(text.contains(&cert) && text.contains(&key), "{text}");
}
