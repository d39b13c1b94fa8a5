//! The batch form of `POST /v1/federation/envelopes` (SPEC v1.1 §4) against
//! a real gateway on 127.0.0.1: one result per envelope in request order,
//! one bad envelope rejects only itself, a duplicate inside a batch is a
//! resend, a transient failure holds back what follows, limits are 413.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

use bashu_e2e::{init_federation, problem_slug, subject};
use bashu_gateway::credential::{issue_translation, IssuerId, Verifier};
use bashu_gateway::devfed::{mtls_client, CreditBank, DevCluster};
use bashu_gateway::devpki::DevFederation;
use bashu_gateway::jose::SigningKey;
use bashu_gateway::transport::{PeerHttpClient, Role};
use bashu_gateway::trust::KeyStore;
use serde_json::{json, Value};

/// The sc gateway as cq sees it: sc's gateway certificate and signing key.
struct ScGateway {
    http: PeerHttpClient,
    key: SigningKey,
    url: String,
    bank: CreditBank,
    verifier: Verifier,
}

impl ScGateway {
    async fn new(cluster: &DevCluster, fed: &DevFederation) -> Self {
        let m = fed.member("sc").unwrap();
        let (cert, key) = m.identity(Role::Gateway);
        let store = KeyStore::load(&m.keystore).unwrap();
        let bank = cluster.credit_bank("sc").unwrap();
        let verifier = cluster.chain_verifier(&bank).await.unwrap();
        Self {
            http: mtls_client(&fed.ca_cert, cert, key).unwrap(),
            key: store.active_gateway_key().unwrap().clone(),
            url: format!("{}/v1/federation/envelopes", fed.member("cq").unwrap().url()),
            bank,
            verifier,
        }
    }

    /// An honest `[original, interchange]` chain for learner `n`, with the
    /// interchange signed under table version `version`.
    async fn chain(&self, n: usize, version: &str) -> Vec<String> {
        let original = self.bank.issue(subject("sc", n)).unwrap();
        let orig = self.verifier.verify(&original).await.unwrap();
        let gateway = IssuerId::gateway("sc").unwrap();
        let link = issue_translation(
            &orig,
            orig.subject().clone(),
            "cqf-ref~wfs-ref",
            version,
            &gateway,
            &self.key,
            time::OffsetDateTime::now_utc(),
        )
        .unwrap();
        vec![original, link]
    }

    async fn post(&self, body: &Value) -> (u16, Value) {
        let r = self.http.post_json(&self.url, body).await.unwrap();
        let body = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
        (r.status.as_u16(), body)
    }
}

/// cq and sc running on loopback, cq's credit bank (to read what reached
/// the inbox) and sc's gateway as cq sees it (the tests post as it). The
/// directory must outlive the cluster.
async fn start() -> (tempfile::TempDir, DevCluster, CreditBank, ScGateway) {
    let dir = tempfile::tempdir().unwrap();
    let fed = init_federation(dir.path(), &["cq", "sc"]).unwrap();
    let cluster = DevCluster::start(fed.clone()).await.unwrap();
    let cq = cluster.credit_bank("cq").unwrap();
    let sc = ScGateway::new(&cluster, &fed).await;
    (dir, cluster, cq, sc)
}

fn envelope(id: &str, chain: &[String]) -> Value {
    json!({"exchangeId": id, "origin": "sc", "destination": "cq", "chain": chain})
}

/// (exchangeId, status, problem slug) of every result, in order.
fn results(body: &Value) -> Vec<(String, u64, String)> {
    body["results"]
        .as_array()
        .unwrap_or_else(|| panic!("no results: {body}"))
        .iter()
        .map(|r| {
            (
                r["exchangeId"].as_str().unwrap().to_owned(),
                r["status"].as_u64().unwrap(),
                r.get("problem").map(problem_slug).unwrap_or_default(),
            )
        })
        .collect()
}

async fn inbox_ids(cq: &CreditBank) -> Vec<String> {
    let page = cq.inbox(Some(0), 500).await.unwrap();
    page.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["exchangeId"].as_str().unwrap().to_owned())
        .collect()
}

fn flip_signature(jws: &str) -> String {
    let mut s = jws.to_owned();
    let last = s.pop().unwrap();
    s.push(if last == 'A' { 'B' } else { 'A' });
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_envelope_in_the_middle_rejects_only_itself_and_order_is_kept() {
    let (_dir, cluster, cq, sc) = start().await;

    let mut envelopes = Vec::new();
    for n in 0..5 {
        let mut chain = sc.chain(n, "1.0.0").await;
        if n == 2 {
            chain[1] = flip_signature(&chain[1]);
        }
        envelopes.push(envelope(&format!("batch-{n}"), &chain));
    }
    let (status, body) = sc.post(&json!({ "envelopes": envelopes })).await;
    assert_eq!(status, 200, "{body}");
    let got = results(&body);
    let statuses: Vec<u64> = got.iter().map(|r| r.1).collect();
    assert_eq!(statuses, [202, 202, 422, 202, 202], "{body}");
    assert_eq!(got[2].0, "batch-2");
    assert_eq!(got[2].2, "chain-broken", "{body}");
    assert_eq!(inbox_ids(&cq).await, ["batch-0", "batch-1", "batch-3", "batch-4"]);

    // The same batch again is a resend: 200 for the stored ones, nothing new.
    let (status, body) = sc.post(&json!({ "envelopes": envelopes })).await;
    assert_eq!(status, 200, "{body}");
    let statuses: Vec<u64> = results(&body).iter().map(|r| r.1).collect();
    assert_eq!(statuses, [200, 200, 422, 200, 200], "{body}");
    assert_eq!(inbox_ids(&cq).await.len(), 4);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_inside_one_batch_is_a_resend_and_a_changed_one_a_conflict() {
    let (_dir, cluster, cq, sc) = start().await;

    let a = sc.chain(1, "1.0.0").await;
    let b = sc.chain(2, "1.0.0").await;
    let other = sc.chain(3, "1.0.0").await;
    let batch = json!({ "envelopes": [
        envelope("dup-a", &a),
        envelope("dup-a", &a),
        envelope("dup-b", &b),
        envelope("dup-a", &other),
        envelope("dup-c", &a),
    ]});
    let (status, body) = sc.post(&batch).await;
    assert_eq!(status, 200, "{body}");
    let got: Vec<(u64, String)> = results(&body).into_iter().map(|r| (r.1, r.2)).collect();
    assert_eq!(
        got,
        [
            (202, String::new()),
            (200, String::new()),
            (202, String::new()),
            (409, "duplicate-conflict".to_owned()),
            (409, "duplicate-conflict".to_owned()),
        ],
        "{body}"
    );
    // As on the single form, a conflict's problem names the exchange it
    // collides with: dup-c carries dup-a's original.
    let problems: Vec<&Value> = body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["problem"]["exchangeId"])
        .collect();
    assert_eq!(problems[3], "dup-a", "{body}");
    assert_eq!(problems[4], "dup-a", "{body}");
    assert_eq!(body["results"][4]["exchangeId"], "dup-c", "{body}");
    assert_eq!(inbox_ids(&cq).await, ["dup-a", "dup-b"]);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transient_failure_holds_back_the_rest_of_the_batch() {
    let (_dir, cluster, cq, sc) = start().await;

    let batch = json!({ "envelopes": [
        envelope("held-0", &sc.chain(0, "1.0.0").await),
        envelope("held-1", &sc.chain(1, "7.0.0").await),
        envelope("held-2", &sc.chain(2, "1.0.0").await),
    ]});
    let (status, body) = sc.post(&batch).await;
    assert_eq!(status, 200, "{body}");
    let got: Vec<(u64, String)> = results(&body).into_iter().map(|r| (r.1, r.2)).collect();
    assert_eq!(
        got,
        [
            (202, String::new()),
            (422, "mapping-version-unknown".to_owned()),
            (503, "unavailable".to_owned()),
        ],
        "{body}"
    );
    assert_eq!(
        inbox_ids(&cq).await,
        ["held-0"],
        "held-2 must not overtake held-1"
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_beyond_the_limits_are_refused() {
    let (_dir, cluster, cq, sc) = start().await;

    let chain = sc.chain(0, "1.0.0").await;
    let many: Vec<Value> = (0..257).map(|n| envelope(&format!("big-{n}"), &chain)).collect();
    let (status, body) = sc.post(&json!({ "envelopes": many })).await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(problem_slug(&body), "payload-too-large");

    // More than 4 MiB of body, even in few envelopes.
    let filler = "A".repeat(200 * 1024);
    let fat: Vec<Value> = (0..11)
        .map(|n| envelope(&format!("fat-{n}"), &[filler.clone(), filler.clone()]))
        .collect();
    let (status, body) = sc.post(&json!({ "envelopes": fat })).await;
    assert_eq!(status, 413, "{body}");

    let (status, body) = sc.post(&json!({ "envelopes": [] })).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(problem_slug(&body), "malformed-request");
    assert!(inbox_ids(&cq).await.is_empty());
    cluster.shutdown().await;
}

/// The exchange-id and sender rules are one (`ids`, `Envelope::check_sender`):
/// the batch form judges each envelope exactly as the single form judges it
/// alone, including ids the OpenAPI pattern allows but ours never use.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_envelope_of_a_batch_meets_the_single_forms_id_and_sender_rules() {
    let (_dir, cluster, cq, sc) = start().await;

    let mut foreign = envelope("batch-foreign", &sc.chain(2, "1.0.0").await);
    foreign["origin"] = json!("gz");
    let cases = [
        (envelope("sc_0.a:b", &sc.chain(0, "1.0.0").await), 202, ""),
        (
            envelope("bad/id", &sc.chain(1, "1.0.0").await),
            400,
            "malformed-request",
        ),
        (foreign, 403, "forbidden-role"),
    ];
    let batch: Vec<Value> = cases.iter().map(|c| c.0.clone()).collect();
    let (status, body) = sc.post(&json!({ "envelopes": batch })).await;
    assert_eq!(status, 200, "{body}");
    let got: Vec<(u64, String)> = results(&body).into_iter().map(|r| (r.1, r.2)).collect();
    let want: Vec<(u64, String)> = cases.iter().map(|c| (c.1, c.2.to_owned())).collect();
    assert_eq!(got, want, "{body}");
    assert_eq!(inbox_ids(&cq).await, ["sc_0.a:b"]);

    // Alone, each envelope gets the same answer (the stored one is a resend).
    for (env, status, slug) in &cases {
        let (got, body) = sc.post(env).await;
        let want = if *status == 202 { 200 } else { *status };
        assert_eq!(got, u16::try_from(want).unwrap(), "{body}");
        if !slug.is_empty() {
            assert_eq!(problem_slug(&body), *slug, "{body}");
        }
    }
    cluster.shutdown().await;
}
