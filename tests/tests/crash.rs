//! `kill -9` of the receiving gateway in the middle of a batch of 200
//! exchanges: after a restart every exchange is delivered exactly once.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

use bashu_e2e::{exchange_id, init_federation, subject, GatewayProcess};
use bashu_gateway::app;
use bashu_gateway::config::Config;
use bashu_gateway::devfed::{mtls_client, CreditBank};
use bashu_gateway::store::{db_path, SqliteStore, Store};
use bashu_gateway::transport::Role;
use serde_json::Value;
use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

const BATCH: usize = 200;
const SUBMITTERS: usize = 8;

fn start_gateway(config: &Path) -> GatewayProcess {
    GatewayProcess::start(env!("CARGO_BIN_EXE_e2e-gateway"), config, &[]).unwrap()
}

async fn inbox_len(bank: &CreditBank) -> usize {
    bank.inbox(Some(0), 500)
        .await
        .map(|a| a.body["items"].as_array().map_or(0, Vec::len))
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receiver_killed_mid_batch_delivers_every_exchange_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let fed = init_federation(dir.path(), &["cq", "sc"]).unwrap();
    let cq_member = fed.member("cq").unwrap().clone();
    let sc_member = fed.member("sc").unwrap().clone();
    let cq_gw = app::start(Config::load(&cq_member.config).unwrap())
        .await
        .unwrap();
    let mut sc_proc = start_gateway(&sc_member.config);

    let cq = Arc::new(CreditBank::new(&cq_member, &fed.ca_cert).unwrap());
    let sc = CreditBank::new(&sc_member, &fed.ca_cert).unwrap();

    // Submit the batch from several concurrent clients.
    let mut submitters = tokio::task::JoinSet::new();
    for s in 0..SUBMITTERS {
        let cq = Arc::clone(&cq);
        submitters.spawn(async move {
            let mut ids = Vec::new();
            for n in (s..BATCH).step_by(SUBMITTERS) {
                let jws = cq.issue(subject("cq", n)).unwrap();
                let answer = cq.submit(&jws, "sc").await.unwrap();
                assert_eq!(answer.status.as_u16(), 202, "{}", answer.body);
                ids.push(exchange_id(&answer.body));
            }
            ids
        });
    }

    // Kill the receiver once part of the batch has reached its inbox.
    let deadline = Instant::now() + Duration::from_secs(60);
    while inbox_len(&sc).await < 20 {
        assert!(Instant::now() < deadline, "no deliveries before the kill");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    sc_proc.kill9().unwrap();
    let delivered_before_restart = count_delivered(&fed.ca_cert, &cq_member).await;
    assert!(delivered_before_restart < BATCH, "the kill must land mid-batch");

    let mut sc_proc = start_gateway(&sc_member.config);
    let mut submitted = HashSet::new();
    while let Some(ids) = submitters.join_next().await {
        submitted.extend(ids.unwrap());
    }
    assert_eq!(submitted.len(), BATCH);

    // Everything ends delivered on the origin side...
    let deadline = Instant::now() + Duration::from_secs(120);
    while count_delivered(&fed.ca_cert, &cq_member).await < BATCH {
        assert!(Instant::now() < deadline, "not all exchanges were delivered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // ... and exactly once in the destination inbox.
    let mut seen = Vec::new();
    let mut after = 0;
    loop {
        let page = sc.inbox(Some(after), 100).await.unwrap();
        let items = page.body["items"].as_array().unwrap().clone();
        if items.is_empty() {
            break;
        }
        for item in &items {
            seen.push(item["exchangeId"].as_str().unwrap().to_owned());
            assert_eq!(item["chain"].as_array().unwrap().len(), 3);
        }
        after = items.last().unwrap()["cursor"].as_u64().unwrap();
    }
    let unique: HashSet<_> = seen.iter().cloned().collect();
    assert_eq!(seen.len(), BATCH, "inbox must hold each exchange once");
    assert_eq!(unique, submitted);

    sc_proc.kill9().unwrap();
    cq_gw.shutdown().await;

    // The receiver's durable state agrees: 200 rows, intact audit chain.
    let store = SqliteStore::open_existing(&db_path(&sc_member.data_dir)).unwrap();
    assert_eq!(store.inbox_page(Some(0), 1000).unwrap().len(), BATCH);
    store.audit_verify().unwrap();
}

/// Exchanges the cq operator sees as delivered.
async fn count_delivered(ca: &Path, cq: &bashu_gateway::devpki::DevMember) -> usize {
    let (cert, key) = cq.identity(Role::Operator);
    let operator = mtls_client(ca, cert, key).unwrap();
    let r = operator
        .get(&format!("{}/v1/admin/exchanges?status=delivered", cq.url()))
        .await
        .unwrap();
    let body: Value = serde_json::from_slice(&r.body).unwrap();
    body["items"].as_array().map_or(0, Vec::len)
}
