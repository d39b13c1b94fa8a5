//! Backup and restore (issue 12.5, SPEC v1.1 §5) with two real gateways on
//! 127.0.0.1: restoring a receiver loses no inbox item for good (origins
//! redeliver, idempotency absorbs repeats) and never reuses a cursor;
//! restoring an origin never puts a second copy of an original into the
//! receiver's inbox.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

use bashu_e2e::{exchange_id, init_federation, problem_slug, subject};
use bashu_gateway::app::{self, RunningGateway};
use bashu_gateway::cli::store::{backup, restore};
use bashu_gateway::config::Config;
use bashu_gateway::devfed::{mtls_client, CreditBank};
use bashu_gateway::devpki::DevFederation;
use bashu_gateway::store::db_path;
use bashu_gateway::transport::Role;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;
use time::format_description::well_known::Rfc3339;

const DELIVERY_TIMEOUT: Duration = Duration::from_secs(30);

async fn start(fed: &DevFederation, member: &str) -> RunningGateway {
    app::start(Config::load(&fed.member(member).unwrap().config).unwrap())
        .await
        .unwrap()
}

fn bank(fed: &DevFederation, member: &str) -> CreditBank {
    CreditBank::new(fed.member(member).unwrap(), &fed.ca_cert).unwrap()
}

fn db(fed: &DevFederation, member: &str) -> PathBuf {
    db_path(&fed.member(member).unwrap().data_dir)
}

/// Submits `n` fresh credentials and waits until each is delivered;
/// returns (exchange id, credential JWS) in acceptance order.
async fn exchange(bank: &CreditBank, dest: &str, from: usize, n: usize) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for i in from..from + n {
        let jws = bank.issue(subject(&bank.member, i)).unwrap();
        let a = bank.submit(&jws, dest).await.unwrap();
        assert_eq!(a.status.as_u16(), 202, "{}", a.body);
        out.push((exchange_id(&a.body), jws));
    }
    for (id, _) in &out {
        let doc = bank
            .wait_for_status(id, &["delivered", "rejected", "dead-lettered"], DELIVERY_TIMEOUT)
            .await
            .unwrap();
        assert_eq!(doc["status"], "delivered", "{doc}");
    }
    out
}

/// Every inbox item after `after`: (cursor, exchange id), oldest first.
async fn inbox_after(bank: &CreditBank, after: u64) -> Vec<(u64, String)> {
    let mut out = Vec::new();
    let mut cursor = Some(after);
    while let Some(c) = cursor {
        let page = bank.inbox(Some(c), 500).await.unwrap().body;
        for item in page["items"].as_array().unwrap() {
            out.push((
                item["cursor"].as_u64().unwrap(),
                item["exchangeId"].as_str().unwrap().to_owned(),
            ));
        }
        cursor = page["next"].as_u64();
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restored_receiver_gets_everything_back_with_new_cursors() {
    let dir = tempfile::tempdir().unwrap();
    let fed = init_federation(dir.path(), &["cq", "sc"]).unwrap();
    let cq_gw = start(&fed, "cq").await;
    let mut sc_gw = start(&fed, "sc").await;
    let (cq, sc) = (bank(&fed, "cq"), bank(&fed, "sc"));

    let before = exchange(&cq, "sc", 0, 4).await;
    let file = dir.path().join("sc-backup.db");
    let summary = backup(&db(&fed, "sc"), &file).unwrap();
    let backup_time = summary.last_change.unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "backups are owner-only");
    }
    let after = exchange(&cq, "sc", 4, 4).await;
    let seen = inbox_after(&sc, 0).await;
    assert_eq!(seen.len(), 8);
    let highest = seen.last().unwrap().0;

    sc_gw.shutdown().await;
    let (_, aside) = restore(&db(&fed, "sc"), &file).unwrap();
    assert!(aside.unwrap().exists(), "the replaced store is kept");
    sc_gw = start(&fed, "sc").await;
    assert!(
        inbox_after(&sc, highest).await.is_empty(),
        "the backup predates the last four"
    );

    // cq's operator redelivers what sc received since its backup.
    let m = fed.member("cq").unwrap();
    let (cert, key) = m.identity(Role::Operator);
    let operator = mtls_client(&fed.ca_cert, cert, key).unwrap();
    let body = json!({"destination": "sc", "since": backup_time.format(&Rfc3339).unwrap()});
    let r = operator
        .post_json(&format!("{}/v1/admin/redeliver", m.url()), &body)
        .await
        .unwrap();
    assert_eq!(r.status.as_u16(), 200);
    let answer: Value = serde_json::from_slice(&r.body).unwrap();
    assert!(answer["requeued"].as_u64().unwrap() >= 4, "{answer}");
    for (id, _) in &after {
        let doc = cq
            .wait_for_status(id, &["delivered", "rejected", "dead-lettered"], DELIVERY_TIMEOUT)
            .await
            .unwrap();
        assert_eq!(doc["status"], "delivered", "{doc}");
    }

    // A credit bank that had read up to `highest` misses nothing by asking
    // for what follows it, and sees each exchange once.
    let resumed: Vec<String> = inbox_after(&sc, highest)
        .await
        .into_iter()
        .map(|(_, id)| id)
        .collect();
    let want: Vec<String> = after.iter().map(|(id, _)| id.clone()).collect();
    assert_eq!(resumed, want);
    let all = inbox_after(&sc, 0).await;
    let unique: HashSet<&String> = all.iter().map(|(_, id)| id).collect();
    assert_eq!(unique.len(), all.len(), "no duplicates: {all:?}");
    assert_eq!(all.len(), before.len() + after.len());
    assert!(all.windows(2).all(|w| w[0].0 < w[1].0), "cursors only grow");

    cq_gw.shutdown().await;
    sc_gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restored_origin_cannot_duplicate_what_the_receiver_holds() {
    let dir = tempfile::tempdir().unwrap();
    let fed = init_federation(dir.path(), &["cq", "sc"]).unwrap();
    let mut cq_gw = start(&fed, "cq").await;
    let sc_gw = start(&fed, "sc").await;
    let (cq, sc) = (bank(&fed, "cq"), bank(&fed, "sc"));

    exchange(&cq, "sc", 0, 3).await;
    let file = dir.path().join("cq-backup.db");
    backup(&db(&fed, "cq"), &file).unwrap();
    let forgotten = exchange(&cq, "sc", 3, 3).await;

    cq_gw.shutdown().await;
    restore(&db(&fed, "cq"), &file).unwrap();
    cq_gw = start(&fed, "cq").await;

    // The credit bank resubmits what the restored origin forgot.
    for (old_id, jws) in &forgotten {
        let lost = cq.exchange(old_id).await.unwrap();
        assert_eq!(lost.status.as_u16(), 404, "{}", lost.body);
        let a = cq.submit(jws, "sc").await.unwrap();
        assert_eq!(a.status.as_u16(), 202, "{}", a.body);
        let doc = cq
            .wait_for_status(
                &exchange_id(&a.body),
                &["delivered", "rejected", "dead-lettered"],
                DELIVERY_TIMEOUT,
            )
            .await
            .unwrap();
        assert_eq!(doc["status"], "rejected", "{doc}");
        assert_eq!(problem_slug(&doc["problem"]), "duplicate-conflict", "{doc}");
        assert_eq!(doc["problem"]["exchangeId"], old_id.as_str(), "{doc}");
    }
    let inbox = inbox_after(&sc, 0).await;
    assert_eq!(inbox.len(), 6, "{inbox:?}");
    let unique: HashSet<&String> = inbox.iter().map(|(_, id)| id).collect();
    assert_eq!(unique.len(), 6);

    cq_gw.shutdown().await;
    sc_gw.shutdown().await;
}
