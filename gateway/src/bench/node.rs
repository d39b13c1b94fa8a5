//! Peer comparison: the same ES256 and EdDSA credentials verified by
//! Node's `jose` package and by ours, one core each, so "fast" has a
//! reference point someone else maintains.

use super::ceiling::{crypto, signed_credentials, timed_loop};
use super::BenchError;
use crate::jose::{parse_compact, Alg, HeaderPolicy};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::path::Path;
use std::time::Duration;
use tokio::process::Command;

const PACKAGE_JSON: &str = include_str!("../../../scripts/bench-node-jose/package.json");
const VERIFY_MJS: &str = include_str!("../../../scripts/bench-node-jose/verify.mjs");

/// `npm install` and the timed Node run each get at most this long.
const NPM_TIMEOUT: Duration = Duration::from_secs(180);

/// One algorithm, verified three ways.
#[derive(Debug, Clone, Serialize)]
pub struct PeerRow {
    pub alg: String,
    /// Node `jose` `compactVerify` with an imported key: signature only.
    pub node_jose_per_sec: f64,
    /// `jose::parse_compact` + `verify_signature`: the same work as Node's.
    pub bashu_jws_per_sec: f64,
    /// `credential::Verifier::verify`, cache preloaded: signature plus the
    /// strict profile and validity checks Node's call does not do.
    pub bashu_credential_per_sec: f64,
    /// `bashu_jws_per_sec / node_jose_per_sec`.
    pub ratio_jws: f64,
    pub ratio_credential: f64,
}

/// The comparison, or why it was skipped.
#[derive(Debug, Clone, Serialize, Default)]
pub struct PeerComparison {
    pub skipped: Option<String>,
    pub node_version: Option<String>,
    pub jose_version: Option<String>,
    pub rows: Vec<PeerRow>,
}

impl PeerComparison {
    fn skipped(reason: impl Into<String>) -> Self {
        Self {
            skipped: Some(reason.into()),
            ..Self::default()
        }
    }
}

#[derive(Deserialize)]
struct NodeOutput {
    node: String,
    jose: String,
    results: Vec<NodeResult>,
}

#[derive(Deserialize)]
struct NodeResult {
    alg: String,
    #[serde(rename = "perSec")]
    per_sec: f64,
}

/// Installs `jose` into a temporary directory and runs the comparison for
/// `duration` per measurement. Missing Node/npm or a failed install is not
/// an error of the benchmark: the result says it was skipped and why.
pub async fn compare(duration: Duration) -> Result<PeerComparison, BenchError> {
    let dir = tempfile::tempdir().map_err(|e| BenchError::io("temporary directory", e))?;
    let (signed, verifier) = signed_credentials(&[Alg::Es256, Alg::EdDsa]).await?;
    if let Err(reason) = install(dir.path()).await {
        return Ok(PeerComparison::skipped(reason));
    }
    let cases: Vec<_> = signed
        .iter()
        .map(|s| {
            json!({"name": s.alg.as_str(), "alg": s.alg.as_str(),
                   "jwk": s.key.public_jwk(), "token": s.token})
        })
        .collect();
    let input = dir.path().join("cases.json");
    let body = json!({ "durationMs": duration.as_millis() as u64, "cases": cases });
    std::fs::write(&input, body.to_string()).map_err(|e| BenchError::io("writing cases.json", e))?;
    let node = match run(Command::new("node")
        .arg(dir.path().join("verify.mjs"))
        .arg(&input))
    .await
    {
        Ok(stdout) => match serde_json::from_str::<NodeOutput>(&stdout) {
            Ok(o) => o,
            Err(e) => return Ok(PeerComparison::skipped(format!("unreadable Node output: {e}"))),
        },
        Err(reason) => return Ok(PeerComparison::skipped(format!("Node run failed: {reason}"))),
    };

    let mut rows = Vec::new();
    for s in signed {
        let Some(theirs) = node.results.iter().find(|r| r.alg == s.alg.as_str()) else {
            continue;
        };
        let verifier = verifier.clone();
        let (jws, full) = tokio::task::spawn_blocking(move || -> Result<(f64, f64), BenchError> {
            let key = s.key.verifying_key().clone();
            let jws = timed_loop(duration, &mut || {
                let parsed = parse_compact(&s.token, HeaderPolicy::CREDENTIAL).map_err(crypto)?;
                parsed.verify_signature(&key).map_err(crypto)
            })?;
            let rt = tokio::runtime::Builder::new_current_thread()
                .build()
                .map_err(crypto)?;
            let full = timed_loop(duration, &mut || {
                rt.block_on(verifier.verify(&s.token)).map(drop).map_err(crypto)
            })?;
            Ok((jws, full))
        })
        .await
        .map_err(crypto)??;
        rows.push(PeerRow {
            alg: theirs.alg.clone(),
            node_jose_per_sec: theirs.per_sec,
            bashu_jws_per_sec: jws,
            bashu_credential_per_sec: full,
            ratio_jws: jws / theirs.per_sec.max(f64::MIN_POSITIVE),
            ratio_credential: full / theirs.per_sec.max(f64::MIN_POSITIVE),
        });
    }
    Ok(PeerComparison {
        skipped: None,
        node_version: Some(node.node),
        jose_version: Some(node.jose),
        rows,
    })
}

/// Writes the script and `package.json` into `dir` and runs `npm install`.
async fn install(dir: &Path) -> Result<(), String> {
    run(Command::new("node").arg("--version"))
        .await
        .map_err(|e| format!("node is not available ({e})"))?;
    run(Command::new("npm").arg("--version"))
        .await
        .map_err(|e| format!("npm is not available ({e})"))?;
    std::fs::write(dir.join("package.json"), PACKAGE_JSON).map_err(|e| e.to_string())?;
    std::fs::write(dir.join("verify.mjs"), VERIFY_MJS).map_err(|e| e.to_string())?;
    run(Command::new("npm")
        .args([
            "install",
            "--no-audit",
            "--no-fund",
            "--loglevel=error",
            "--prefix",
        ])
        .arg(dir))
    .await
    .map_err(|e| format!("`npm install jose` failed: {e}"))?;
    Ok(())
}

/// Runs a command with a time limit; its stdout on success, a short reason otherwise.
async fn run(cmd: &mut Command) -> Result<String, String> {
    cmd.kill_on_drop(true).stdin(std::process::Stdio::null());
    let out = tokio::time::timeout(NPM_TIMEOUT, cmd.output())
        .await
        .map_err(|_| format!("timed out after {NPM_TIMEOUT:?}"))?
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let last = stderr.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("");
        return Err(format!("{}: {last}", out.status));
    }
    String::from_utf8(out.stdout).map_err(|e| e.to_string())
}
