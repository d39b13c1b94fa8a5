//! How a run treats the deployment it tests: explicit flags override what
//! `--dev-dir` found, and afterwards the suite acknowledges its own (marked)
//! inbox items and never anyone else's.

// Test-only crate: helpers outside #[test] fns may unwrap too.
#![allow(clippy::unwrap_used)]

use bashu_conformance::cleanup::ack_test_items;
use bashu_conformance::cli::{setup_for, Cli, Command};
use bashu_conformance::context::Ctx;
use bashu_conformance::fixtures::TEST_MARKER;
use bashu_gateway::devfed::{CreditBank, DevCluster};
use clap::Parser;
use serde_json::{json, Value};
use std::time::Duration;

fn run_args(extra: &[&str]) -> Box<bashu_conformance::cli::RunArgs> {
    let mut argv = vec!["bashu-conformance", "run"];
    argv.extend_from_slice(extra);
    let Command::Run(args) = Cli::parse_from(argv).command else {
        panic!("not a run command")
    };
    args
}

#[test]
fn explicit_flags_override_the_dev_dir() {
    let dir = tempfile::tempdir().unwrap();
    let fed = bashu_gateway::devpki::init(dir.path(), &["cq", "sc"]).unwrap();
    let d = dir.path().to_str().unwrap();
    let plain = setup_for(&run_args(&["--dev-dir", d])).unwrap();
    assert_eq!(plain.revoked_issuer_key, None);
    assert_eq!(
        plain.issuer_key.as_deref(),
        Some(fed.member("cq").unwrap().issuer_key.as_path())
    );

    let revoked = dir.path().join("revoked.jwk");
    let other_ca = dir.path().join("other-ca.pem");
    let issuer = dir.path().join("my-issuer.jwk");
    let (r, c, i) = (
        revoked.to_str().unwrap(),
        other_ca.to_str().unwrap(),
        issuer.to_str().unwrap(),
    );
    let s = setup_for(&run_args(&[
        "--dev-dir",
        d,
        "--target",
        "https://127.0.0.1:1",
        "--revoked-issuer-key",
        r,
        "--ca",
        c,
        "--issuer-key",
        i,
        "--federation-key",
        r,
    ]))
    .unwrap();
    assert_eq!(s.revoked_issuer_key.as_deref(), Some(revoked.as_path()));
    assert_eq!(
        s.target, "https://127.0.0.1:1",
        "--target overrides the member's URL"
    );
    assert_ne!(plain.target, s.target);
    assert_eq!(s.ca, other_ca);
    assert_eq!(s.issuer_key.as_deref(), Some(issuer.as_path()));
    assert_eq!(s.federation_key.as_deref(), Some(revoked.as_path()));
    // What was not overridden still comes from the dev dir.
    assert_eq!(s.operator.unwrap().cert, plain.operator.unwrap().cert);
}

async fn deliver(bank: &CreditBank, subject: Value) -> String {
    let jws = bank.issue(subject).unwrap();
    let answer = bank.submit(&jws, "sc").await.unwrap();
    assert_eq!(answer.status.as_u16(), 202, "{}", answer.body);
    let id = answer.body["exchangeId"].as_str().unwrap().to_owned();
    let doc = bank
        .wait_for_status(
            &id,
            &["delivered", "rejected", "dead-lettered"],
            Duration::from_secs(30),
        )
        .await
        .unwrap();
    assert_eq!(doc["status"], "delivered", "{doc}");
    id
}

fn subject(n: usize, marked: bool) -> Value {
    let mut s: Value = serde_json::from_str(bashu_gateway::devfed::FIXTURES[0].subject_json).unwrap();
    s["id"] = json!(format!("urn:bashu:learner:cq:hygiene-{n}"));
    if marked {
        s["extensions"][TEST_MARKER] = json!(true);
    }
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_suites_own_leading_items_are_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = DevCluster::init_and_start(dir.path(), &["cq", "sc"])
        .await
        .unwrap();
    let cq = cluster.credit_bank("cq").unwrap();
    let sc = cluster.credit_bank("sc").unwrap();
    // Inbox order at sc: test, test, a real credential, test.
    let mut ids = Vec::new();
    for (n, marked) in [(0, true), (1, true), (2, false), (3, true)] {
        ids.push(deliver(&cq, subject(n, marked)).await);
    }

    let setup = setup_for(&run_args(&["--dev-dir", dir.path().to_str().unwrap()])).unwrap();
    let ctx = Ctx::from_setup(&setup).unwrap();
    let summaries = ack_test_items(&ctx).await;
    let sc_summary = summaries
        .iter()
        .filter_map(|s| s.as_ref().ok())
        .find(|s| s.inbox == "sc")
        .unwrap();
    assert_eq!(sc_summary.acknowledged, 2);
    assert!(sc_summary.stopped_at_foreign_item);

    // The real credential and everything after it are still unacknowledged.
    let left: Vec<String> = sc
        .inbox_entries(None, 500)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.exchange_id)
        .collect();
    assert_eq!(left, ids[2..].to_vec());
    cluster.shutdown().await;
}
