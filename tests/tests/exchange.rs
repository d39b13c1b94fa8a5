//! End-to-end exchanges between real gateways on 127.0.0.1 with a dev PKI:
//! both directions, a third member by configuration alone, idempotency,
//! typed errors, authorisation, and store-and-forward across a peer outage.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

use bashu_e2e::{exchange_id, init_federation, problem_slug, start_cluster, subject};
use bashu_gateway::app;
use bashu_gateway::config::Config;
use bashu_gateway::devfed::{mtls_client, CreditBank, DevCluster};
use bashu_gateway::transport::Role;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::time::Duration;

const DELIVERY_TIMEOUT: Duration = Duration::from_secs(30);

/// Submits a fresh credential from `bank` to `dest` and returns its exchange id.
async fn submit_new(bank: &CreditBank, dest: &str, n: usize) -> String {
    let jws = bank.issue(subject(&bank.member, n)).unwrap();
    let answer = bank.submit(&jws, dest).await.unwrap();
    assert_eq!(answer.status.as_u16(), 202, "{}", answer.body);
    assert_eq!(answer.body["status"], "accepted");
    exchange_id(&answer.body)
}

async fn assert_delivered(bank: &CreditBank, id: &str) {
    let doc = bank
        .wait_for_status(id, &["delivered", "rejected", "dead-lettered"], DELIVERY_TIMEOUT)
        .await
        .unwrap();
    assert_eq!(doc["status"], "delivered", "{doc}");
    assert!(doc["deliveredAt"].is_string(), "{doc}");
}

/// Reads the whole inbox of `bank` and verifies every chain as its credit
/// bank would; returns (exchange id, home subject) in inbox order.
async fn verified_inbox(cluster: &DevCluster, bank: &CreditBank) -> Vec<(String, Value)> {
    let verifier = cluster.chain_verifier(bank).await.unwrap();
    let page = bank.inbox(None, 500).await.unwrap();
    assert_eq!(page.status.as_u16(), 200, "{}", page.body);
    let mut out = Vec::new();
    for item in page.body["items"].as_array().unwrap() {
        let chain: Vec<String> = item["chain"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l.as_str().unwrap().to_owned())
            .collect();
        assert_eq!(chain.len(), 3);
        assert_eq!(item["credential"].as_str(), Some(chain[2].as_str()));
        let verified = verifier.verify_chain(&chain).await.unwrap();
        let home = verified.last();
        assert_eq!(
            home.issuer().to_string(),
            format!("urn:bashu:{}:gateway", bank.member)
        );
        out.push((
            item["exchangeId"].as_str().unwrap().to_owned(),
            home.subject().clone(),
        ));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exchanges_arrive_both_ways_as_verified_three_link_chains() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = start_cluster(dir.path(), &["cq", "sc"]).await.unwrap();
    let cq = cluster.credit_bank("cq").unwrap();
    let sc = cluster.credit_bank("sc").unwrap();

    let to_sc = submit_new(&cq, "sc", 0).await;
    let to_cq = submit_new(&sc, "cq", 1).await;
    assert_delivered(&cq, &to_sc).await;
    assert_delivered(&sc, &to_cq).await;

    let sc_inbox = verified_inbox(&cluster, &sc).await;
    assert_eq!(sc_inbox.len(), 1);
    assert_eq!(sc_inbox[0].0, to_sc);
    assert_eq!(sc_inbox[0].1["framework"], "wfs", "sc's home framework is WFS");
    let cq_inbox = verified_inbox(&cluster, &cq).await;
    assert_eq!(cq_inbox.len(), 1);
    assert_eq!(cq_inbox[0].0, to_cq);
    assert_eq!(cq_inbox[0].1["framework"], "cqf", "cq's home framework is CQF");
    assert_eq!(
        cq_inbox[0].1["id"], "urn:bashu:learner:sc:e2e-00001",
        "learner id survives"
    );

    // Acknowledged items are not served again without an explicit cursor.
    let cursor = sc.inbox(None, 10).await.unwrap().body["items"][0]["cursor"]
        .as_u64()
        .unwrap();
    assert_eq!(sc.ack(cursor).await.unwrap().status.as_u16(), 200);
    let after_ack = sc.inbox(None, 10).await.unwrap();
    assert_eq!(
        after_ack.body["items"].as_array().unwrap().len(),
        0,
        "{}",
        after_ack.body
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_third_member_works_by_configuration_alone() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = start_cluster(dir.path(), &["cq", "sc", "gz"]).await.unwrap();
    let cq = cluster.credit_bank("cq").unwrap();
    let gz = cluster.credit_bank("gz").unwrap();
    let sc = cluster.credit_bank("sc").unwrap();

    let cq_to_gz = submit_new(&cq, "gz", 0).await;
    let gz_to_sc = submit_new(&gz, "sc", 1).await;
    let gz_to_cq = submit_new(&gz, "cq", 2).await;
    assert_delivered(&cq, &cq_to_gz).await;
    assert_delivered(&gz, &gz_to_sc).await;
    assert_delivered(&gz, &gz_to_cq).await;

    assert_eq!(
        verified_inbox(&cluster, &gz)
            .await
            .iter()
            .map(|(id, _)| id.clone())
            .collect::<Vec<_>>(),
        [cq_to_gz]
    );
    assert_eq!(
        verified_inbox(&cluster, &sc)
            .await
            .iter()
            .map(|(id, _)| id.clone())
            .collect::<Vec<_>>(),
        [gz_to_sc]
    );
    assert_eq!(
        verified_inbox(&cluster, &cq)
            .await
            .iter()
            .map(|(id, _)| id.clone())
            .collect::<Vec<_>>(),
        [gz_to_cq]
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resubmission_is_idempotent_and_changed_bytes_conflict() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = start_cluster(dir.path(), &["cq", "sc"]).await.unwrap();
    let cq = cluster.credit_bank("cq").unwrap();

    let jws = cq.issue(subject("cq", 0)).unwrap();
    let first = cq.submit(&jws, "sc").await.unwrap();
    assert_eq!(first.status.as_u16(), 202);
    let again = cq.submit(&jws, "sc").await.unwrap();
    assert_eq!(again.status.as_u16(), 200, "{}", again.body);
    assert_eq!(exchange_id(&again.body), exchange_id(&first.body));

    // Same credential id, different bytes: re-sign the payload with a changed title.
    let payload = credential_payload(&jws);
    let mut changed = payload.clone();
    changed["credentialSubject"]["title"]["zh"] = json!("改动过的标题");
    let key =
        bashu_gateway::jose::SigningKey::load(&cluster.federation.member("cq").unwrap().issuer_key).unwrap();
    let forged = bashu_gateway::credential::issue_credential(&changed, &key).unwrap();
    let conflict = cq.submit(&forged, "sc").await.unwrap();
    assert_eq!(conflict.status.as_u16(), 409, "{}", conflict.body);
    assert_eq!(problem_slug(&conflict.body), "duplicate-conflict");
    assert_eq!(exchange_id(&conflict.body), exchange_id(&first.body));

    // Exactly one exchange exists for that credential.
    assert_delivered(&cq, &exchange_id(&first.body)).await;
    let sc = cluster.credit_bank("sc").unwrap();
    assert_eq!(verified_inbox(&cluster, &sc).await.len(), 1);
    cluster.shutdown().await;
}

fn credential_payload(jws: &str) -> Value {
    use base64::Engine as _;
    let payload = jws.split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_the_right_problem_type() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = start_cluster(dir.path(), &["cq", "sc"]).await.unwrap();
    let cq = cluster.credit_bank("cq").unwrap();

    let malformed = cq
        .post_raw("/v1/exchanges", b"{\"credential\": ".to_vec())
        .await
        .unwrap();
    assert_eq!(
        (malformed.status.as_u16(), problem_slug(&malformed.body).as_str()),
        (400, "malformed-request")
    );

    let huge = "a".repeat(2 * 1024 * 1024);
    let oversize = cq.submit(&huge, "sc").await.unwrap();
    assert_eq!(
        (oversize.status.as_u16(), problem_slug(&oversize.body).as_str()),
        (413, "payload-too-large")
    );

    let jws = cq.issue(subject("cq", 0)).unwrap();
    let tampered = flip_signature_char(&jws);
    let bad_sig = cq.submit(&tampered, "sc").await.unwrap();
    assert_eq!(
        (bad_sig.status.as_u16(), problem_slug(&bad_sig.body).as_str()),
        (422, "invalid-signature")
    );

    let nowhere = cq.submit(&jws, "xx").await.unwrap();
    assert_eq!(
        (nowhere.status.as_u16(), problem_slug(&nowhere.body).as_str()),
        (422, "unknown-destination")
    );

    let missing = cq.exchange("00000000-0000-4000-8000-000000000000").await.unwrap();
    assert_eq!(missing.status.as_u16(), 404);
    assert_eq!(missing.body["status"], 404);

    // None of the refused submissions created an exchange.
    let sc = cluster.credit_bank("sc").unwrap();
    assert_eq!(
        sc.inbox(None, 10).await.unwrap().body["items"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
    cluster.shutdown().await;
}

/// Changes one character in the middle of the signature, keeping it
/// canonical base64url, so only the signature check can catch it.
fn flip_signature_char(jws: &str) -> String {
    let sig_start = jws.rfind('.').unwrap() + 1;
    let i = sig_start + 10;
    let mut bytes = jws.as_bytes().to_vec();
    bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
    String::from_utf8(bytes).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identities_are_authorised_by_role_and_member() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = start_cluster(dir.path(), &["cq", "sc"]).await.unwrap();
    let fed = &cluster.federation;
    let cq = fed.member("cq").unwrap();
    let sc = fed.member("sc").unwrap();

    // The cq operator may not submit exchanges.
    let (cert, key) = cq.identity(Role::Operator);
    let operator = mtls_client(&fed.ca_cert, cert, key).unwrap();
    let r = operator
        .post_json(
            &format!("{}/v1/exchanges", cq.url()),
            &json!({"credential": "x", "destination": "sc"}),
        )
        .await
        .unwrap();
    assert_eq!(r.status.as_u16(), 403);
    let body: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(problem_slug(&body), "forbidden-role");
    // ... but may use the admin API.
    let admin = operator
        .get(&format!("{}/v1/admin/exchanges", cq.url()))
        .await
        .unwrap();
    assert_eq!(admin.status.as_u16(), 200);

    // sc's credit bank may not use cq's gateway.
    let (cert, key) = sc.identity(Role::CreditBank);
    let foreign_bank = mtls_client(&fed.ca_cert, cert, key).unwrap();
    let r = foreign_bank.get(&format!("{}/v1/inbox", cq.url())).await.unwrap();
    assert_eq!(r.status.as_u16(), 403);

    // A credit bank may not post envelopes.
    let (cert, key) = cq.identity(Role::CreditBank);
    let own_bank = mtls_client(&fed.ca_cert, cert, key).unwrap();
    let r = own_bank
        .post_json(
            &format!("{}/v1/federation/envelopes", cq.url()),
            &json!({"exchangeId": "x", "origin": "cq", "destination": "cq", "chain": []}),
        )
        .await
        .unwrap();
    assert_eq!(r.status.as_u16(), 403);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_without_certificate_gets_no_http_at_all() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = start_cluster(dir.path(), &["cq", "sc"]).await.unwrap();
    let addr = cluster.gateway("cq").unwrap().api_addr;
    let got = bashu_e2e_no_cert_probe(&cluster.federation.ca_cert, addr).await;
    assert!(
        !got.starts_with(b"HTTP/"),
        "server answered HTTP without a client certificate"
    );
    cluster.shutdown().await;
}

/// Connects with TLS but no client certificate, sends a request and
/// returns whatever bytes come back before the connection fails.
async fn bashu_e2e_no_cert_probe(ca: &std::path::Path, addr: std::net::SocketAddr) -> Vec<u8> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(ca).unwrap();
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let Ok(mut tls) = connector.connect(name, tcp).await else {
        return Vec::new(); // handshake refused: the expected outcome
    };
    let _ = tls
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await;
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut buf)).await;
    buf
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exchanges_wait_for_a_peer_that_is_down_and_drain_in_acceptance_order() {
    let dir = tempfile::tempdir().unwrap();
    let fed = init_federation(dir.path(), &["cq", "sc"]).unwrap();
    // Only cq runs; sc is down.
    let cq_gw = app::start(Config::load(&fed.member("cq").unwrap().config).unwrap())
        .await
        .unwrap();
    let cq = CreditBank::new(fed.member("cq").unwrap(), &fed.ca_cert).unwrap();
    let mut ids = Vec::new();
    for n in 0..8 {
        ids.push(submit_new(&cq, "sc", n).await);
    }
    // Wait until delivery has been attempted and failed at least once.
    let doc = cq
        .wait_for_status(&ids[0], &["forwarded"], DELIVERY_TIMEOUT)
        .await
        .unwrap();
    assert_eq!(doc["status"], "forwarded", "{doc}");
    assert!(doc["attempts"].as_u64().unwrap() >= 1);
    for id in &ids[1..] {
        let status = cq.exchange(id).await.unwrap().body["status"].clone();
        assert!(status == "accepted" || status == "forwarded", "{status}");
    }

    // sc comes up: everything is delivered, in acceptance order.
    let sc_gw = app::start(Config::load(&fed.member("sc").unwrap().config).unwrap())
        .await
        .unwrap();
    for id in &ids {
        assert_delivered(&cq, id).await;
    }
    let cluster = DevCluster {
        federation: fed.clone(),
        gateways: vec![cq_gw, sc_gw],
    };
    let sc = cluster.credit_bank("sc").unwrap();
    let inbox: Vec<String> = verified_inbox(&cluster, &sc)
        .await
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(inbox, ids, "inbox order must be acceptance order");
    assert_eq!(inbox.iter().collect::<HashSet<_>>().len(), ids.len());
    cluster.shutdown().await;
}
