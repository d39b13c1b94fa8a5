//! Helpers shared by the end-to-end tests: dev federations with fast
//! delivery timings, and learner subjects.
//!
//! This crate exists only for tests (`publish = false`), so a broken fixture
//! may panic here like in any test body.
#![allow(clippy::expect_used)]

use bashu_gateway::devfed::{DevCluster, FIXTURES};
use bashu_gateway::devpki::DevFederation;
use serde_json::Value;
use std::io::Write as _;
use std::path::Path;

/// Delivery timings for tests: short backoff so a peer that comes back is
/// retried within a fraction of a second.
pub const FAST_DELIVERY: &str = "
[delivery]
initial_backoff_ms = 20
max_backoff_ms = 300
breaker_failure_threshold = 50
breaker_open_ms = 100
";

/// Appends [`FAST_DELIVERY`] to every member's `gateway.toml`.
pub fn fast_delivery(fed: &DevFederation) -> anyhow::Result<()> {
    for m in &fed.members {
        let mut f = std::fs::OpenOptions::new().append(true).open(&m.config)?;
        f.write_all(FAST_DELIVERY.as_bytes())?;
    }
    Ok(())
}

/// A dev federation with fast delivery written under `dir` (not started).
pub fn init_federation(dir: &Path, members: &[&str]) -> anyhow::Result<DevFederation> {
    let fed = bashu_gateway::devpki::init(dir, members)?;
    fast_delivery(&fed)?;
    Ok(fed)
}

/// Writes and starts a federation of `members`.
pub async fn start_cluster(dir: &Path, members: &[&str]) -> anyhow::Result<DevCluster> {
    let fed = init_federation(dir, members)?;
    Ok(DevCluster::start(fed).await?)
}

/// A valid learning-record subject for a credit bank of `member`, with a
/// unique learner id. cq records are CQF; every other member records WFS.
pub fn subject(member: &str, n: usize) -> Value {
    let source = if member == "cq" { "cq" } else { "sc" };
    let candidates: Vec<_> = FIXTURES.iter().filter(|f| f.member == source).collect();
    let fixture = candidates[n % candidates.len()];
    let mut subject = fixture.subject().expect("fixtures parse");
    subject["id"] = Value::String(format!("urn:bashu:learner:{member}:e2e-{n:05}"));
    subject
}

/// The `type` slug of a problem body, e.g. `invalid-signature`.
pub fn problem_slug(body: &Value) -> String {
    body.get("type")
        .and_then(Value::as_str)
        .and_then(|t| t.strip_prefix("urn:bashu:problem:"))
        .unwrap_or_default()
        .to_owned()
}

/// The `exchangeId` of a JSON body.
pub fn exchange_id(body: &Value) -> String {
    body.get("exchangeId")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

/// A `serve` child process of the e2e gateway binary, killed when dropped so
/// a failing test leaves nothing running. Tests pass the binary's path
/// (`env!("CARGO_BIN_EXE_e2e-gateway")`, known only to integration tests).
pub struct GatewayProcess {
    child: std::process::Child,
}

impl GatewayProcess {
    /// Starts `<bin> serve --config <config>` with `RUST_LOG=warn` and
    /// `envs`, and returns once it reports that it listens. Error lines
    /// of its log are echoed to the test's stderr.
    pub fn start(bin: &str, config: &Path, envs: &[(&str, &str)]) -> anyhow::Result<Self> {
        use std::io::{BufRead, BufReader};
        use std::process::{Command, Stdio};
        let mut child = Command::new(bin)
            .args(["serve", "--config"])
            .arg(config)
            .env("RUST_LOG", "warn")
            .envs(envs.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        let stderr = child
            .stderr
            .take()
            .ok_or_else(|| anyhow::anyhow!("no stderr pipe"))?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("listening on") {
                    let _ = tx.send(());
                }
                if line.contains("ERROR") || line.contains("error") {
                    eprintln!("gateway: {line}");
                }
            }
        });
        let process = Self { child };
        rx.recv_timeout(std::time::Duration::from_secs(60))
            .map_err(|_| anyhow::anyhow!("gateway {} did not report listening", config.display()))?;
        Ok(process)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: no shutdown hooks, no flush.
    pub fn kill9(&mut self) -> anyhow::Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
