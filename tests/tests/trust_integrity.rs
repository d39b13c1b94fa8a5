//! Trust and integrity between two real gateways on 127.0.0.1 (issue 11,
//! SPEC v1.1 §2–§4): revocation bites at the member's own gateway without
//! an operator, exchanges accepted before a revocation stay accepted, a
//! peer gateway cannot inflate a learner's record, and an original enters
//! an inbox at most once.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

use bashu_e2e::{exchange_id, init_federation, problem_slug, subject};
use bashu_gateway::app::{self, RunningGateway};
use bashu_gateway::config::Config;
use bashu_gateway::credential::{issue_translation, IssuerId};
use bashu_gateway::devfed::{mtls_client, CreditBank, DevCluster};
use bashu_gateway::devpki::DevFederation;
use bashu_gateway::jose::SigningKey;
use bashu_gateway::transport::{PeerHttpClient, Role};
use bashu_gateway::trust::KeyStore;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const DELIVERY_TIMEOUT: Duration = Duration::from_secs(30);
/// The contract says 1 s; the bound here only keeps a broken build from
/// hanging the suite, and the measured delay is printed.
const REVOCATION_DEADLINE: Duration = Duration::from_secs(5);

async fn start(fed: &DevFederation, member: &str) -> RunningGateway {
    app::start(Config::load(&fed.member(member).unwrap().config).unwrap())
        .await
        .unwrap()
}

fn bank(fed: &DevFederation, member: &str) -> CreditBank {
    CreditBank::new(fed.member(member).unwrap(), &fed.ca_cert).unwrap()
}

/// `bashu keys revoke` as the CLI does it: edit the key store file.
fn revoke_issuer_key(fed: &DevFederation, member: &str) -> String {
    let m = fed.member(member).unwrap();
    let kid = SigningKey::load(&m.issuer_key).unwrap().kid().to_owned();
    let mut store = KeyStore::load(&m.keystore).unwrap();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    store.revoke(&kid, now).unwrap();
    store.save(&m.keystore).unwrap();
    kid
}

/// Waits until the wall clock has moved into a later second than `t`, so a
/// revocation recorded now is strictly after anything verified at `t`.
async fn next_second_after(t: i64) {
    while time::OffsetDateTime::now_utc().unix_timestamp() <= t {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn assert_status(bank: &CreditBank, id: &str, wanted: &str) -> Value {
    let doc = bank
        .wait_for_status(id, &["delivered", "rejected", "dead-lettered"], DELIVERY_TIMEOUT)
        .await
        .unwrap();
    assert_eq!(doc["status"], wanted, "{doc}");
    doc
}

/// Issue 11.1: `bashu keys revoke` on cq's issuer key makes cq refuse new
/// credentials signed with it within the contract's second, with no
/// operator refresh (before: 202 for the cache lifetime, about a day).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_issuer_key_is_refused_at_once_by_its_own_gateway() {
    let dir = tempfile::tempdir().unwrap();
    let fed = init_federation(dir.path(), &["cq", "sc"]).unwrap();
    let cq_gw = start(&fed, "cq").await;
    let cq = bank(&fed, "cq");
    let first = cq
        .submit(&cq.issue(subject("cq", 0)).unwrap(), "sc")
        .await
        .unwrap();
    assert_eq!(first.status.as_u16(), 202, "{}", first.body);

    let kid = revoke_issuer_key(&fed, "cq");
    let revoked = Instant::now();
    let mut n = 1;
    let answer = loop {
        let a = cq
            .submit(&cq.issue(subject("cq", n)).unwrap(), "sc")
            .await
            .unwrap();
        n += 1;
        if a.status.as_u16() != 202 || revoked.elapsed() > REVOCATION_DEADLINE {
            break a;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    println!("revocation of {kid} effective after {:?}", revoked.elapsed());
    assert_eq!(answer.status.as_u16(), 422, "{}", answer.body);
    assert_eq!(problem_slug(&answer.body), "revoked-key", "{}", answer.body);
    // The published key set says so too, with the time of revocation.
    let set = cq.keyset(&fed.member("cq").unwrap().url()).await.unwrap();
    let payload = bashu_gateway::jose::b64::decode(set.split('.').nth(1).unwrap()).unwrap();
    let payload: Value = serde_json::from_slice(&payload).unwrap();
    let key = payload["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == kid.as_str())
        .unwrap();
    assert_eq!(key["status"], "revoked");
    assert!(key["revoked_at"].as_i64().unwrap() > 0, "{key}");
    cq_gw.shutdown().await;
}

/// Issue 11.2: exchanges accepted before the revocation of their issuer key,
/// while the destination was down, are delivered when it returns (the
/// interchange's `verifiedAt` precedes `revoked_at`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exchanges_accepted_before_a_revocation_stay_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let fed = init_federation(dir.path(), &["cq", "sc"]).unwrap();
    let cq_gw = start(&fed, "cq").await;
    let cq = bank(&fed, "cq");
    let mut ids = Vec::new();
    for n in 0..4 {
        let a = cq
            .submit(&cq.issue(subject("cq", n)).unwrap(), "sc")
            .await
            .unwrap();
        assert_eq!(a.status.as_u16(), 202, "{}", a.body);
        ids.push(exchange_id(&a.body));
    }
    next_second_after(time::OffsetDateTime::now_utc().unix_timestamp()).await;
    revoke_issuer_key(&fed, "cq");

    let sc_gw = start(&fed, "sc").await;
    for id in &ids {
        assert_status(&cq, id, "delivered").await;
    }
    let cluster = DevCluster {
        federation: fed.clone(),
        gateways: vec![cq_gw, sc_gw],
    };
    let sc = cluster.credit_bank("sc").unwrap();
    let inbox = sc.inbox(Some(0), 100).await.unwrap();
    let got: Vec<String> = inbox.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["exchangeId"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(got, ids);
    cluster.shutdown().await;
}

/// A hostile sc gateway: sc's gateway certificate and signing key.
struct HostilePeer {
    http: PeerHttpClient,
    key: SigningKey,
    target: String,
}

impl HostilePeer {
    fn new(fed: &DevFederation, as_member: &str, target: &str) -> Self {
        let m = fed.member(as_member).unwrap();
        let (cert, key) = m.identity(Role::Gateway);
        let store = KeyStore::load(&m.keystore).unwrap();
        Self {
            http: mtls_client(&fed.ca_cert, cert, key).unwrap(),
            key: store.active_gateway_key().unwrap().clone(),
            target: fed.member(target).unwrap().url(),
        }
    }

    async fn post(&self, envelope: &Value) -> (u16, Value) {
        let r = self
            .http
            .post_json(&format!("{}/v1/federation/envelopes", self.target), envelope)
            .await
            .unwrap();
        let body = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
        (r.status.as_u16(), body)
    }
}

fn envelope(id: &str, origin: &str, destination: &str, chain: &[String]) -> Value {
    json!({"exchangeId": id, "origin": origin, "destination": destination, "chain": chain})
}

/// Issue 11.3: an interchange signed by sc's real gateway key but not the
/// translation the table gives (level, credits, hours, extensions) is
/// `chain-broken` naming the field; an unknown table version is
/// `mapping-version-unknown`. Nothing enters cq's inbox.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_gateway_cannot_inflate_a_learners_record() {
    let dir = tempfile::tempdir().unwrap();
    let fed = init_federation(dir.path(), &["cq", "sc"]).unwrap();
    let cluster = DevCluster::start(fed.clone()).await.unwrap();
    let cq = cluster.credit_bank("cq").unwrap();
    let sc = cluster.credit_bank("sc").unwrap();
    let verifier = cluster.chain_verifier(&sc).await.unwrap();
    let hostile = HostilePeer::new(&fed, "sc", "cq");
    let gateway = IssuerId::gateway("sc").unwrap();

    let original = sc.issue(subject("sc", 3)).unwrap();
    let orig = verifier.verify(&original).await.unwrap();
    let honest = orig.subject().clone();
    let inflations: [(&str, Value); 4] = [
        ("level", json!(8)),
        ("credits", json!(60)),
        ("learningHours", json!(1620)),
        ("extensions", json!({"x-forged": true})),
    ];
    for (n, (field, value)) in inflations.into_iter().enumerate() {
        let mut inflated = honest.clone();
        assert_ne!(inflated[field], value);
        inflated[field] = value;
        let interchange = issue_translation(
            &orig,
            inflated,
            "cqf-ref~wfs-ref",
            "1.0.0",
            &gateway,
            &hostile.key,
            time::OffsetDateTime::now_utc(),
        )
        .unwrap();
        let id = format!("hostile-{n}");
        let (status, body) = hostile
            .post(&envelope(&id, "sc", "cq", &[original.clone(), interchange]))
            .await;
        assert_eq!(status, 422, "{field}: {body}");
        assert_eq!(problem_slug(&body), "chain-broken", "{field}: {body}");
        let detail = body["detail"].as_str().unwrap();
        assert!(detail.contains(&format!("{field} differs")), "{field}: {detail}");
    }
    let unknown_table = issue_translation(
        &orig,
        honest.clone(),
        "cqf-ref~wfs-ref",
        "7.0.0",
        &gateway,
        &hostile.key,
        time::OffsetDateTime::now_utc(),
    )
    .unwrap();
    let (status, body) = hostile
        .post(&envelope(
            "hostile-table",
            "sc",
            "cq",
            &[original.clone(), unknown_table],
        ))
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(problem_slug(&body), "mapping-version-unknown", "{body}");

    // The honest translation of the same original goes through.
    let honest_link = issue_translation(
        &orig,
        honest,
        "cqf-ref~wfs-ref",
        "1.0.0",
        &gateway,
        &hostile.key,
        time::OffsetDateTime::now_utc(),
    )
    .unwrap();
    let (status, body) = hostile
        .post(&envelope("honest-1", "sc", "cq", &[original, honest_link]))
        .await;
    assert_eq!(status, 202, "{body}");
    let items = cq.inbox(Some(0), 100).await.unwrap().body["items"].clone();
    assert_eq!(items.as_array().unwrap().len(), 1, "{items}");
    assert_eq!(items[0]["exchangeId"], "honest-1");
    cluster.shutdown().await;
}

/// Issue 11.4: the same [original, interchange] under new exchange ids, or
/// under the id of cq's own outgoing exchange, is `409 duplicate-conflict`,
/// never a second inbox item.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_original_enters_the_inbox_once_whatever_its_exchange_id() {
    let dir = tempfile::tempdir().unwrap();
    let fed = init_federation(dir.path(), &["cq", "sc"]).unwrap();
    let cluster = DevCluster::start(fed.clone()).await.unwrap();
    let cq = cluster.credit_bank("cq").unwrap();
    let sc = cluster.credit_bank("sc").unwrap();
    let hostile = HostilePeer::new(&fed, "sc", "cq");

    let sent = sc
        .submit(&sc.issue(subject("sc", 1)).unwrap(), "cq")
        .await
        .unwrap();
    let delivered_id = exchange_id(&sent.body);
    assert_status(&sc, &delivered_id, "delivered").await;
    let own = cq
        .submit(&cq.issue(subject("cq", 2)).unwrap(), "sc")
        .await
        .unwrap();
    let own_id = exchange_id(&own.body);

    let item = cq.inbox(Some(0), 10).await.unwrap().body["items"][0].clone();
    let chain: Vec<String> = item["chain"].as_array().unwrap()[..2]
        .iter()
        .map(|l| l.as_str().unwrap().to_owned())
        .collect();
    // Exact replay under the same id: idempotent.
    let (status, body) = hostile.post(&envelope(&delivered_id, "sc", "cq", &chain)).await;
    assert!(status == 200 || status == 202, "{status} {body}");
    for n in 0..5 {
        let (status, body) = hostile
            .post(&envelope(&format!("replay-{n}"), "sc", "cq", &chain))
            .await;
        assert_eq!(status, 409, "{body}");
        assert_eq!(problem_slug(&body), "duplicate-conflict", "{body}");
        assert_eq!(body["exchangeId"], delivered_id.as_str(), "{body}");
    }
    // A fresh original under the id of cq's own outgoing exchange.
    let verifier = cluster.chain_verifier(&sc).await.unwrap();
    let fresh = sc.issue(subject("sc", 9)).unwrap();
    let orig = verifier.verify(&fresh).await.unwrap();
    let link = issue_translation(
        &orig,
        orig.subject().clone(),
        "cqf-ref~wfs-ref",
        "1.0.0",
        &IssuerId::gateway("sc").unwrap(),
        &hostile.key,
        time::OffsetDateTime::now_utc(),
    )
    .unwrap();
    let (status, body) = hostile.post(&envelope(&own_id, "sc", "cq", &[fresh, link])).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(problem_slug(&body), "duplicate-conflict", "{body}");

    let items = cq.inbox(Some(0), 100).await.unwrap().body["items"].clone();
    let ids: Vec<&str> = items
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["exchangeId"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [delivered_id.as_str()]);
    let status = cq.exchange(&own_id).await.unwrap().body;
    assert_eq!(status["exchangeId"], own_id.as_str(), "{status}");
    assert_eq!(status["destination"], "sc", "{status}");
    cluster.shutdown().await;
}

/// Waits until cq's published key set lists `kid`.
async fn wait_until_published(bank: &CreditBank, fed: &DevFederation, kid: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let set = bank.keyset(&fed.member("cq").unwrap().url()).await.unwrap();
        let payload = bashu_gateway::jose::b64::decode(set.split('.').nth(1).unwrap()).unwrap();
        if String::from_utf8_lossy(&payload).contains(kid) || Instant::now() > deadline {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits (bounded) until cq's served key set lists `kid` as its active
/// gateway key: the signing key comes from the same snapshot.
async fn wait_until_active(bank: &CreditBank, fed: &DevFederation, kid: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let set = bank.keyset(&fed.member("cq").unwrap().url()).await.unwrap();
        let payload = bashu_gateway::jose::b64::decode(set.split('.').nth(1).unwrap()).unwrap();
        let payload: serde_json::Value = serde_json::from_slice(&payload).unwrap();
        let active = payload["keys"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k["kid"] == kid && k["status"] == "active");
        assert!(
            Instant::now() < deadline,
            "{kid} not active within 10 s: {payload}"
        );
        if active {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn edit_keystore<T>(fed: &DevFederation, member: &str, f: impl FnOnce(&mut KeyStore, i64) -> T) -> T {
    let path = &fed.member(member).unwrap().keystore;
    let mut store = KeyStore::load(path).unwrap();
    let out = f(&mut store, time::OffsetDateTime::now_utc().unix_timestamp());
    store.save(path).unwrap();
    out
}

/// Issue 11 acceptance: while cq's credit bank submits continuously, cq's
/// operator rotates the gateway key (generate → next, promote, old key
/// retiring) and revokes a spare issuer key. Every submission is accepted,
/// every exchange delivered, and every delivered chain verifies: zero
/// failed verifications anywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_and_an_unrelated_revocation_under_load_fail_nothing() {
    const TOTAL: usize = 48;
    let dir = tempfile::tempdir().unwrap();
    let fed = init_federation(dir.path(), &["cq", "sc"]).unwrap();
    let spare = edit_keystore(&fed, "cq", |s, now| {
        s.generate_issuer(bashu_gateway::jose::Alg::Es256, now)
            .unwrap()
            .kid()
            .to_owned()
    });
    let cluster = DevCluster::start(fed.clone()).await.unwrap();
    let cq = std::sync::Arc::new(cluster.credit_bank("cq").unwrap());
    let sc = cluster.credit_bank("sc").unwrap();

    let (progress_tx, mut progress) = tokio::sync::watch::channel(0usize);
    // The second half waits until cq signs with the promoted key: the
    // gateway picks key store changes up within a few hundred ms, and
    // without the gate a fast machine could finish the second half sooner.
    let (promoted_tx, promoted) = tokio::sync::watch::channel(false);
    let load = {
        let cq = cq.clone();
        let mut promoted = promoted.clone();
        tokio::spawn(async move {
            let mut answers = Vec::new();
            for n in 0..TOTAL {
                if n == TOTAL / 2 {
                    promoted.wait_for(|p| *p).await.unwrap();
                }
                let a = cq
                    .submit(&cq.issue(subject("cq", n)).unwrap(), "sc")
                    .await
                    .unwrap();
                answers.push((a.status.as_u16(), a.body));
                let _ = progress_tx.send(n + 1);
            }
            answers
        })
    };
    let old_kid = KeyStore::load(&fed.member("cq").unwrap().keystore)
        .unwrap()
        .active_gateway_key()
        .unwrap()
        .kid()
        .to_owned();
    progress.wait_for(|n| *n >= TOTAL / 4).await.unwrap();
    let new_kid = edit_keystore(&fed, "cq", |s, now| {
        s.generate(
            bashu_gateway::trust::KeyRole::Gateway,
            bashu_gateway::jose::Alg::Es256,
            now,
        )
        .unwrap()
    });
    // The documented procedure promotes only after one cache lifetime, when
    // every peer holds the set listing the new key as `next`; sc's operator
    // refresh stands in for waiting out `keyset_ttl_secs`.
    wait_until_published(&cq, &fed, &new_kid).await;
    let m = fed.member("sc").unwrap();
    let (cert, key) = m.identity(Role::Operator);
    let sc_operator = mtls_client(&fed.ca_cert, cert, key).unwrap();
    let r = sc_operator
        .post_json(&format!("{}/v1/admin/trust/refresh", m.url()), &json!({}))
        .await
        .unwrap();
    assert_eq!(r.status.as_u16(), 200);
    progress.wait_for(|n| *n >= TOTAL / 2).await.unwrap();
    edit_keystore(&fed, "cq", |s, now| s.promote(&new_kid, now, 3600).unwrap());
    wait_until_active(&cq, &fed, &new_kid).await;
    promoted_tx.send(true).unwrap();
    progress.wait_for(|n| *n >= 3 * TOTAL / 4).await.unwrap();
    edit_keystore(&fed, "cq", |s, now| s.revoke(&spare, now).unwrap());

    let answers = load.await.unwrap();
    let mut ids = Vec::new();
    for (status, body) in &answers {
        assert_eq!(*status, 202, "{body}");
        ids.push(exchange_id(body));
    }
    for id in &ids {
        assert_status(&cq, id, "delivered").await;
    }
    let verifier = cluster.chain_verifier(&sc).await.unwrap();
    let mut signed_by = std::collections::BTreeSet::new();
    let mut after = Some(0);
    let mut seen = Vec::new();
    while let Some(cursor) = after {
        let page = sc.inbox(Some(cursor), 500).await.unwrap().body;
        let items = page["items"].as_array().unwrap().clone();
        for item in &items {
            let chain: Vec<String> = item["chain"]
                .as_array()
                .unwrap()
                .iter()
                .map(|l| l.as_str().unwrap().to_owned())
                .collect();
            let verified = verifier.verify_chain(&chain).await.unwrap();
            signed_by.insert(verified.links()[1].kid().to_owned());
            seen.push(item["exchangeId"].as_str().unwrap().to_owned());
        }
        after = page["next"].as_u64();
    }
    assert_eq!(seen, ids, "every exchange once, in acceptance order");
    assert!(
        signed_by.contains(&old_kid) && signed_by.contains(&new_kid),
        "interchanges were signed by {signed_by:?}; expected both {old_kid} and {new_kid}"
    );
    cluster.shutdown().await;
}
