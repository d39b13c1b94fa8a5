//! Real responses match docs/openapi.yaml: a dev federation answers every
//! route, and each JSON body (and the key-set JWS) is checked against the
//! schema the spec documents for that path, method, status and media type.
//!
//! The checker is small and hand-written: it understands `$ref`, `type`
//! (also a list of types), `required`, `properties`,
//! `additionalProperties: false`, `items`, `oneOf`, `enum`, `const`,
//! `minItems`/`maxItems` and `minimum` — every keyword our schemas use to
//! constrain a value. Formats and patterns are documentation only here.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

use bashu_e2e::{exchange_id, start_cluster, subject};
use bashu_gateway::api::ROUTES;
use bashu_gateway::devfed::mtls_client;
use bashu_gateway::transport::{PeerHttpClient, PeerResponse, Role};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::time::Duration;

fn spec() -> Value {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/openapi.yaml")).unwrap();
    serde_yaml::from_str(&text).unwrap()
}

/// Follows a local `$ref` (`#/components/...`).
fn resolve<'a>(spec: &'a Value, node: &'a Value) -> &'a Value {
    let mut node = node;
    for _ in 0..16 {
        match node.get("$ref").and_then(Value::as_str) {
            Some(r) => {
                let pointer = r
                    .strip_prefix('#')
                    .unwrap_or_else(|| panic!("non-local $ref {r}"));
                node = spec
                    .pointer(pointer)
                    .unwrap_or_else(|| panic!("dangling $ref {r}"));
            }
            None => return node,
        }
    }
    panic!("$ref chain too long")
}

fn type_matches(ty: &str, v: &Value) -> bool {
    match ty {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "boolean" => v.is_boolean(),
        "null" => v.is_null(),
        "integer" => v.is_i64() || v.is_u64(),
        "number" => v.is_number(),
        other => panic!("schema uses unknown type {other}"),
    }
}

/// Appends to `errors` every way `value` breaks `schema` (JSON-pointer paths).
fn check(spec: &Value, schema: &Value, value: &Value, at: &str, errors: &mut Vec<String>) {
    let schema = resolve(spec, schema);
    if let Some(alternatives) = schema.get("oneOf").and_then(Value::as_array) {
        let matching = alternatives
            .iter()
            .filter(|alt| {
                let mut e = Vec::new();
                check(spec, alt, value, at, &mut e);
                e.is_empty()
            })
            .count();
        if matching != 1 {
            errors.push(format!(
                "{at}: matches {matching} of the oneOf alternatives, not 1"
            ));
        }
    }
    if let Some(ty) = schema.get("type") {
        let ok = match ty {
            Value::String(t) => type_matches(t, value),
            Value::Array(ts) => ts.iter().any(|t| type_matches(t.as_str().unwrap(), value)),
            _ => panic!("bad type in schema at {at}"),
        };
        if !ok {
            errors.push(format!("{at}: {value} is not of type {ty}"));
            return;
        }
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array) {
        if !allowed.contains(value) {
            errors.push(format!("{at}: {value} not in {allowed:?}"));
        }
    }
    if let Some(c) = schema.get("const") {
        if c != value {
            errors.push(format!("{at}: {value} is not {c}"));
        }
    }
    if let (Some(min), Some(n)) = (schema.get("minimum").and_then(Value::as_f64), value.as_f64()) {
        if n < min {
            errors.push(format!("{at}: {n} < minimum {min}"));
        }
    }
    if let Value::Object(obj) = value {
        for name in schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let name = name.as_str().unwrap();
            if !obj.contains_key(name) {
                errors.push(format!("{at}: required member {name} missing"));
            }
        }
        let props = schema.get("properties").and_then(Value::as_object);
        for (name, v) in obj {
            match props.and_then(|p| p.get(name)) {
                Some(sub) => check(spec, sub, v, &format!("{at}/{name}"), errors),
                None if schema.get("additionalProperties") == Some(&Value::Bool(false)) => {
                    errors.push(format!("{at}: member {name} is not in the schema"));
                }
                None => {}
            }
        }
    }
    if let Value::Array(items) = value {
        let len = items.len() as u64;
        if let Some(min) = schema.get("minItems").and_then(Value::as_u64) {
            if len < min {
                errors.push(format!("{at}: {len} items < minItems {min}"));
            }
        }
        if let Some(max) = schema.get("maxItems").and_then(Value::as_u64) {
            if len > max {
                errors.push(format!("{at}: {len} items > maxItems {max}"));
            }
        }
        if let Some(sub) = schema.get("items") {
            for (i, v) in items.iter().enumerate() {
                check(spec, sub, v, &format!("{at}/{i}"), errors);
            }
        }
    }
}

/// The schema documented for a response, or a panic naming what is missing.
fn response_schema<'a>(spec: &'a Value, path: &str, method: &str, status: u16, media: &str) -> &'a Value {
    let op = spec["paths"]
        .get(path)
        .and_then(|p| p.get(method))
        .unwrap_or_else(|| panic!("{method} {path} not documented"));
    let resp = op["responses"]
        .get(status.to_string())
        .unwrap_or_else(|| panic!("{method} {path}: status {status} not documented"));
    let resp = resolve(spec, resp);
    resp["content"]
        .get(media)
        .and_then(|c| c.get("schema"))
        .unwrap_or_else(|| panic!("{method} {path} {status}: no {media} schema"))
}

struct Checker {
    spec: Value,
    exercised: BTreeSet<(String, String)>,
}

impl Checker {
    /// Checks one real response against the spec; returns its JSON body.
    fn check(&mut self, method: &str, path: &str, resp: &PeerResponse) -> Value {
        let status = resp.status.as_u16();
        let media = resp
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let schema = response_schema(&self.spec, path, method, status, &media);
        let body = if media == "application/jwt" {
            Value::String(String::from_utf8(resp.body.to_vec()).unwrap())
        } else {
            serde_json::from_slice(&resp.body).unwrap()
        };
        let mut errors = Vec::new();
        check(&self.spec, schema, &body, "", &mut errors);
        assert!(
            errors.is_empty(),
            "{method} {path} {status} does not match docs/openapi.yaml:\n{}\nbody: {body}",
            errors.join("\n")
        );
        if status == 405 {
            assert!(resp.headers.contains_key(http::header::ALLOW));
        }
        self.exercised.insert((method.to_owned(), path.to_owned()));
        body
    }
}

/// Routes this test does not call, each with the reason. A route added to
/// the table must either be called below or named here.
const NOT_EXERCISED: &[(&str, &str, &str)] = &[];

#[test]
fn the_checker_rejects_what_the_spec_forbids() {
    let spec = spec();
    let schema = json!({"$ref": "#/components/schemas/ExchangeStatus"});
    let good = json!({
        "exchangeId": "ex-1", "status": "delivered", "credentialId": "urn:uuid:1",
        "origin": "cq", "destination": "sc", "acceptedAt": "2026-01-01T00:00:00Z",
        "updatedAt": "2026-01-01T00:00:00Z", "attempts": 0, "x-future": true
    });
    let errs = |v: &Value| {
        let mut e = Vec::new();
        check(&spec, &schema, v, "", &mut e);
        e
    };
    assert_eq!(errs(&good), Vec::<String>::new());
    let mut missing = good.clone();
    missing.as_object_mut().unwrap().remove("attempts");
    assert_eq!(errs(&missing), vec![": required member attempts missing"]);
    let mut wrong = good.clone();
    wrong["status"] = json!("lost");
    assert_eq!(errs(&wrong).len(), 1);
    wrong["attempts"] = json!("1");
    assert_eq!(errs(&wrong).len(), 2);
    // additionalProperties: false, nested $ref, oneOf.
    let list = json!({"$ref": "#/components/schemas/ExchangeList"});
    let mut e = Vec::new();
    check(&spec, &list, &json!({"items": [missing], "extra": 1}), "", &mut e);
    assert_eq!(e.len(), 2, "{e:?}");
    let refresh = json!({"$ref": "#/components/schemas/TrustRefresh"});
    let mut e = Vec::new();
    check(
        &spec,
        &refresh,
        &json!({"members": [{"member": "sc"}]}),
        "",
        &mut e,
    );
    assert_eq!(e, vec!["/members/0: matches 0 of the oneOf alternatives, not 1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_answers_as_documented() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = start_cluster(dir.path(), &["cq", "sc"]).await.unwrap();
    let fed = &cluster.federation;
    let (cq, sc) = (fed.member("cq").unwrap(), fed.member("sc").unwrap());
    let client = |m: &bashu_gateway::devpki::DevMember, role: Role| -> PeerHttpClient {
        let (cert, key) = m.identity(role);
        mtls_client(&fed.ca_cert, cert, key).unwrap()
    };
    let (cq_bank, sc_bank) = (client(cq, Role::CreditBank), client(sc, Role::CreditBank));
    let cq_op = client(cq, Role::Operator);
    let sc_gw = client(sc, Role::Gateway);
    let (cq_url, sc_url) = (cq.url(), sc.url());
    let mut c = Checker {
        spec: spec(),
        exercised: BTreeSet::new(),
    };

    // Credit bank → own gateway.
    let bank = cluster.credit_bank("cq").unwrap();
    let jws = bank.issue(subject("cq", 0)).unwrap();
    let submit = json!({"credential": jws, "destination": "sc"});
    let r = cq_bank
        .post_json(&format!("{cq_url}/v1/exchanges"), &submit)
        .await
        .unwrap();
    assert_eq!(r.status.as_u16(), 202);
    let id = exchange_id(&c.check("post", "/v1/exchanges", &r));
    let r = cq_bank
        .post_json(&format!("{cq_url}/v1/exchanges"), &submit)
        .await
        .unwrap();
    assert_eq!(r.status.as_u16(), 200);
    c.check("post", "/v1/exchanges", &r);
    let bad = json!({"credential": "a.b.c", "destination": "sc"});
    let r = cq_bank
        .post_json(&format!("{cq_url}/v1/exchanges"), &bad)
        .await
        .unwrap();
    assert!(r.status.is_client_error());
    c.check("post", "/v1/exchanges", &r);
    let r = cq_bank
        .post_json(&format!("{cq_url}/v1/exchanges"), &json!({"credential": "x"}))
        .await
        .unwrap();
    assert_eq!(r.status.as_u16(), 400);
    c.check("post", "/v1/exchanges", &r);

    let doc = bank
        .wait_for_status(
            &id,
            &["delivered", "rejected", "dead-lettered"],
            Duration::from_secs(30),
        )
        .await
        .unwrap();
    assert_eq!(doc["status"], "delivered", "{doc}");
    let r = cq_bank.get(&format!("{cq_url}/v1/exchanges/{id}")).await.unwrap();
    let status = c.check("get", "/v1/exchanges/{id}", &r);
    assert!(status["deliveredAt"].is_string(), "{status}");
    let r = cq_bank
        .get(&format!("{cq_url}/v1/exchanges/ex-unknown"))
        .await
        .unwrap();
    assert_eq!(r.status.as_u16(), 404);
    c.check("get", "/v1/exchanges/{id}", &r);

    // The receiving credit bank.
    let r = sc_bank.get(&format!("{sc_url}/v1/inbox?limit=10")).await.unwrap();
    let page = c.check("get", "/v1/inbox", &r);
    assert_eq!(page["items"].as_array().unwrap().len(), 1, "{page}");
    let r = sc_bank.get(&format!("{sc_url}/v1/inbox?limit=0")).await.unwrap();
    c.check("get", "/v1/inbox", &r);
    let r = sc_bank
        .post_json(&format!("{sc_url}/v1/inbox/ack"), &json!({"upTo": u64::MAX}))
        .await
        .unwrap();
    let ack = c.check("post", "/v1/inbox/ack", &r);
    assert_eq!(
        ack["upTo"], page["items"][0]["cursor"],
        "ack answers the clamped point"
    );
    let r = sc_bank.get(&format!("{sc_url}/v1/inbox/ack")).await.unwrap();
    assert_eq!(r.status.as_u16(), 405);
    c.check("post", "/v1/inbox/ack", &r);

    // Gateway → peer gateway: a chain that does not verify, alone and in a
    // batch (200 with per-envelope results), and an empty batch (400).
    let env = json!({"exchangeId": "ex-probe", "origin": "sc", "destination": "cq", "chain": ["a.b.c"]});
    let r = sc_gw
        .post_json(&format!("{cq_url}/v1/federation/envelopes"), &env)
        .await
        .unwrap();
    assert!(r.status.is_client_error(), "{:?}", r.status);
    c.check("post", "/v1/federation/envelopes", &r);
    let batch = json!({"envelopes": [env]});
    let r = sc_gw
        .post_json(&format!("{cq_url}/v1/federation/envelopes"), &batch)
        .await
        .unwrap();
    assert_eq!(r.status.as_u16(), 200);
    let results = c.check("post", "/v1/federation/envelopes", &r);
    assert_eq!(results["results"][0]["exchangeId"], "ex-probe", "{results}");
    assert_eq!(results["results"][0]["status"], 422, "{results}");
    let r = sc_gw
        .post_json(
            &format!("{cq_url}/v1/federation/envelopes"),
            &json!({"envelopes": []}),
        )
        .await
        .unwrap();
    assert_eq!(r.status.as_u16(), 400);
    c.check("post", "/v1/federation/envelopes", &r);
    let r = sc_gw.get(&format!("{cq_url}/v1/federation/keys")).await.unwrap();
    assert_eq!(r.status.as_u16(), 200);
    c.check("get", "/v1/federation/keys", &r);
    // 200 with the JWS once a checkpoint was signed, 404 before the first.
    let r = sc_gw
        .get(&format!("{cq_url}/v1/federation/audit/checkpoint"))
        .await
        .unwrap();
    assert!(matches!(r.status.as_u16(), 200 | 404), "{}", r.status);
    c.check("get", "/v1/federation/audit/checkpoint", &r);

    // Operator.
    let r = cq_op.get(&format!("{cq_url}/v1/admin/exchanges")).await.unwrap();
    let list = c.check("get", "/v1/admin/exchanges", &r);
    assert_eq!(list["items"].as_array().unwrap().len(), 1, "{list}");
    let r = cq_op
        .get(&format!("{cq_url}/v1/admin/exchanges?status=weird"))
        .await
        .unwrap();
    assert_eq!(r.status.as_u16(), 400);
    c.check("get", "/v1/admin/exchanges", &r);
    let r = cq_op
        .post_json(&format!("{cq_url}/v1/admin/exchanges/{id}/retry"), &json!({}))
        .await
        .unwrap();
    assert!(
        r.status.is_client_error(),
        "retrying a delivered exchange: {:?}",
        r.status
    );
    c.check("post", "/v1/admin/exchanges/{id}/retry", &r);
    let r = cq_op
        .post_json(
            &format!("{cq_url}/v1/admin/redeliver"),
            &json!({"destination": "sc", "since": "2100-01-01T00:00:00Z"}),
        )
        .await
        .unwrap();
    assert_eq!(r.status.as_u16(), 200);
    c.check("post", "/v1/admin/redeliver", &r);
    let r = cq_op
        .post_json(&format!("{cq_url}/v1/admin/trust/refresh"), &json!({}))
        .await
        .unwrap();
    assert_eq!(r.status.as_u16(), 200);
    c.check("post", "/v1/admin/trust/refresh", &r);

    // Everyone.
    for path in ["/healthz", "/readyz"] {
        let r = cq_op.get(&format!("{cq_url}{path}")).await.unwrap();
        assert_eq!(r.status.as_u16(), 200);
        c.check("get", path, &r);
    }
    // Role refused.
    let r = cq_op.get(&format!("{cq_url}/v1/inbox")).await.unwrap();
    assert_eq!(r.status.as_u16(), 403);
    c.check("get", "/v1/inbox", &r);

    for route in ROUTES {
        let key = (route.method.as_str().to_ascii_lowercase(), route.path.to_owned());
        let skipped = NOT_EXERCISED
            .iter()
            .any(|(m, p, _)| m.eq_ignore_ascii_case(route.method.as_str()) && *p == route.path);
        assert!(
            skipped || c.exercised.contains(&key),
            "{} {} was not called: add a call above or a reason to NOT_EXERCISED",
            route.method,
            route.path
        );
    }
    cluster.shutdown().await;
}
