//! The suite catches faults: a deliberately broken gateway double (a tiny
//! hyper + rustls server with its own throwaway PKI) must make exactly the
//! matching tests fail, the exit status say so, and the JUnit report show it.
//! A fixed double must make the same tests pass, so the failures are caused
//! by the faults and not by the harness.

// Test-only crate: helpers outside #[test] fns may unwrap too.
#![allow(clippy::unwrap_used)]

use bashu_conformance::cli::{self, Cli, Command};
use bashu_conformance::craft::{sign_json, KeyAlg, SigningKey};
use bashu_conformance::pki::{identity_pem, CaSigner, Names, Validity};
use bashu_conformance::runner::{Outcome, RunReport};
use bytes::Bytes;
use clap::Parser;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use rustls::pki_types::PrivateKeyDer;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use tokio::net::TcpListener;

/// Which bugs the double has.
#[derive(Clone, Copy)]
struct Faults {
    /// Accept `alg: none` credentials with 202.
    accepts_alg_none: bool,
    /// Publish key sets whose `seq` goes down with every fetch.
    seq_backwards: bool,
    /// Let any identity (here: the credit bank) post federation envelopes.
    ignores_roles: bool,
    /// Answer the first submission `429` with `Retry-After: 1` (a client
    /// that does not wait sees a failure).
    rate_limits_first_submit: bool,
}

const FIXED: Faults = Faults {
    accepts_alg_none: false,
    seq_backwards: false,
    ignores_roles: false,
    rate_limits_first_submit: false,
};

struct Double {
    faults: Faults,
    submits: std::sync::atomic::AtomicUsize,
    federation_key: SigningKey,
    issuer_public: Value,
    seq: AtomicI64,
}

fn problem(status: StatusCode, slug: &str) -> Response<Full<Bytes>> {
    let body = json!({
        "type": format!("urn:bashu:problem:{slug}"),
        "title": slug,
        "status": status.as_u16(),
        "detail": "rejected by the test double",
    });
    Response::builder()
        .status(status)
        .header("content-type", "application/problem+json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

fn json_response(status: StatusCode, body: &Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

impl Double {
    fn keyset(&self) -> Response<Full<Bytes>> {
        let step = if self.faults.seq_backwards { -1 } else { 1 };
        let seq = self.seq.fetch_add(step, Ordering::SeqCst);
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let mut issuer = self.issuer_public.clone();
        issuer["use"] = json!("sig");
        issuer["alg"] = json!("ES256");
        issuer["status"] = json!("active");
        issuer["role"] = json!("issuer");
        issuer["nbf"] = json!(now - 60);
        issuer["retire_after"] = Value::Null;
        let payload = json!({"iss": "cq", "iat": now, "exp": now + 3600, "seq": seq, "keys": [issuer]});
        let header = json!({"alg": "EdDSA", "typ": "bashu-keyset+jwt", "kid": "cq-federation"});
        let jws = sign_json(&header, &payload, &self.federation_key).unwrap();
        Response::builder()
            .header("content-type", "application/jwt")
            .body(Full::new(Bytes::from(jws)))
            .unwrap()
    }

    /// Checks only the algorithm — correctly, except for the `alg: none` fault.
    fn submit(&self, body: &[u8]) -> Response<Full<Bytes>> {
        let Ok(req) = serde_json::from_slice::<Value>(body) else {
            return problem(StatusCode::BAD_REQUEST, "malformed-request");
        };
        let jws = req["credential"].as_str().unwrap_or_default();
        let header = jws
            .split('.')
            .next()
            .and_then(bashu_conformance::craft::b64url_decode)
            .and_then(|h| serde_json::from_slice::<Value>(&h).ok())
            .unwrap_or_default();
        let accepted = json!({"exchangeId": uuid::Uuid::new_v4().to_string(), "status": "accepted"});
        match header["alg"].as_str() {
            Some("none") if self.faults.accepts_alg_none => json_response(StatusCode::ACCEPTED, &accepted),
            Some("ES256" | "EdDSA") => json_response(StatusCode::ACCEPTED, &accepted),
            _ => problem(StatusCode::UNPROCESSABLE_ENTITY, "unsupported-algorithm"),
        }
    }

    async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, hyper::Error> {
        let (parts, body) = req.into_parts();
        let body = body.collect().await?.to_bytes();
        Ok(match (parts.method.as_str(), parts.uri.path()) {
            ("GET", "/v1/federation/keys") => self.keyset(),
            ("GET", "/healthz") => json_response(StatusCode::OK, &json!({"status": "ok"})),
            ("POST", "/v1/exchanges")
                if self.faults.rate_limits_first_submit
                    && self.submits.fetch_add(1, Ordering::SeqCst) == 0 =>
            {
                let mut resp = problem(StatusCode::TOO_MANY_REQUESTS, "rate-limited");
                resp.headers_mut()
                    .insert("retry-after", http::HeaderValue::from_static("1"));
                resp
            }
            ("POST", "/v1/exchanges") => self.submit(&body),
            // The only client identity of the double is a credit bank.
            ("POST", "/v1/federation/envelopes") if self.faults.ignores_roles => {
                json_response(StatusCode::ACCEPTED, &json!({"status": "delivered"}))
            }
            ("POST", "/v1/federation/envelopes") => problem(StatusCode::FORBIDDEN, "forbidden-role"),
            _ => problem(StatusCode::NOT_FOUND, "not-found"),
        })
    }
}

/// Files a run needs, written into a temp dir.
struct Fixture {
    dir: tempfile::TempDir,
    url: String,
}

impl Fixture {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

fn write(dir: &Path, name: &str, contents: &str) {
    std::fs::write(dir.join(name), contents).unwrap();
}

/// Starts a double with these faults on 127.0.0.1 and writes the CA,
/// a credit-bank identity, the issuer key and the pinned federation key.
async fn start_double(faults: Faults) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let ca = CaSigner::generate("double federation CA").unwrap();
    let server = ca
        .issue(
            &Names {
                uris: vec!["spiffe://bashu.federation/cq/gateway".into()],
                ips: vec!["127.0.0.1".parse().unwrap()],
                ..Names::default()
            },
            Validity::Current,
        )
        .unwrap();
    let client = ca
        .issue(&Names::spiffe("cq", "credit-bank"), Validity::Current)
        .unwrap();
    let (cert, key) = identity_pem(&client);
    write(dir.path(), "ca.pem", &ca.cert_pem());
    write(dir.path(), "bank.crt", &cert);
    write(dir.path(), "bank.key", &key);

    let mut issuer = josekit::jws::ES256.generate_key_pair().unwrap().to_jwk_key_pair();
    issuer.set_key_id("cq-issuer-1");
    write(dir.path(), "issuer.jwk", &issuer.to_string());
    let issuer_public: Value = serde_json::from_str(&issuer.to_public_key().unwrap().to_string()).unwrap();
    let federation_key = SigningKey::generate(KeyAlg::EdDsa, "cq-federation").unwrap();
    write(
        dir.path(),
        "federation.jwk",
        &federation_key.public_jwk().unwrap().to_string(),
    );

    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.cert_der()).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .unwrap();
    let key: PrivateKeyDer<'static> = server.key.clone_key();
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(server.chain.clone(), key)
        .unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}", listener.local_addr().unwrap());
    let double = Arc::new(Double {
        faults,
        submits: std::sync::atomic::AtomicUsize::new(0),
        federation_key,
        issuer_public,
        seq: AtomicI64::new(10),
    });
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            let double = double.clone();
            tokio::spawn(async move {
                // Refused handshakes are part of the test; nothing to report.
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = hyper::service::service_fn(move |req| double.clone().handle(req));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    Fixture { dir, url }
}

async fn run(fixture: &Fixture, only: &str, report_file: &Path) -> RunReport {
    try_run(fixture, only, report_file, "ca.pem").await.unwrap()
}

async fn try_run(
    fixture: &Fixture,
    only: &str,
    report_file: &Path,
    ca: &str,
) -> Result<RunReport, cli::CliError> {
    let p = |n: &str| fixture.path(n).display().to_string();
    let argv = [
        "bashu-conformance",
        "run",
        "--target",
        &fixture.url,
        "--ca",
        &p(ca),
        "--cert",
        &p("bank.crt"),
        "--key",
        &p("bank.key"),
        "--issuer-key",
        &p("issuer.jwk"),
        "--federation-key",
        &p("federation.jwk"),
        "--only",
        only,
        "--report",
        "junit",
        "--report-file",
        &report_file.display().to_string(),
        "--no-progress",
        "--timeout",
        "5",
    ];
    let Command::Run(args) = Cli::parse_from(argv).command else {
        panic!("not a run command")
    };
    cli::run(&args).await
}

fn outcome(report: &RunReport, id: &str) -> Outcome {
    report
        .results
        .iter()
        .find(|r| r.id == id)
        .unwrap_or_else(|| panic!("{id} did not run"))
        .outcome
}

const SELECTION: &str = "TLS-001,TLS-002,TLS-006,JOSE-001,JOSE-003,TRUST-001,TRUST-002,TRUST-004";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_gateway_fails_the_matching_tests() {
    let fixture = start_double(Faults {
        accepts_alg_none: true,
        seq_backwards: true,
        ignores_roles: true,
        rate_limits_first_submit: false,
    })
    .await;
    let junit_path = fixture.path("report.xml");
    let report = run(&fixture, SELECTION, &junit_path).await;

    assert_eq!(outcome(&report, "JOSE-001"), Outcome::Fail, "alg none accepted");
    assert_eq!(outcome(&report, "TRUST-004"), Outcome::Fail, "seq went backwards");
    assert_eq!(
        outcome(&report, "TLS-006"),
        Outcome::Fail,
        "credit bank posted an envelope"
    );
    for id in ["TLS-001", "TLS-002", "JOSE-003", "TRUST-001", "TRUST-002"] {
        assert_eq!(outcome(&report, id), Outcome::Pass, "{id}: {:?}", report.results);
    }
    assert_eq!(report.must_failures(), 3);
    assert_eq!(report.exit_code(false), 1);

    let reason = |id: &str| {
        report
            .results
            .iter()
            .find(|r| r.id == id)
            .and_then(|r| r.reason.clone())
            .unwrap_or_default()
    };
    assert!(reason("JOSE-001").contains("got 202"), "{}", reason("JOSE-001"));
    assert!(
        reason("TRUST-004").contains("backwards"),
        "{}",
        reason("TRUST-004")
    );

    let xml = std::fs::read_to_string(&junit_path).unwrap();
    assert!(
        xml.contains("<testsuite name=\"bashu.JOSE\" tests=\"2\" failures=\"1\""),
        "{xml}"
    );
    assert!(xml.contains("name=\"JOSE-001 "), "{xml}");
    assert!(xml.contains("<failure type=\"MUST\""), "{xml}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixed_gateway_passes_the_same_tests() {
    let fixture = start_double(FIXED).await;
    let report = run(&fixture, SELECTION, &fixture.path("report.xml")).await;
    for r in &report.results {
        assert_eq!(r.outcome, Outcome::Pass, "{} {:?}", r.id, r.reason);
    }
    assert_eq!(report.exit_code(true), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_material_is_a_skip_not_a_pass() {
    let fixture = start_double(FIXED).await;
    // TLS-003 needs the CA key, VC-020 a peer identity, DELIVERY-002 a destination.
    let report = run(&fixture, "TLS-003,VC-020,DELIVERY-002", &fixture.path("r.xml")).await;
    for r in &report.results {
        assert_eq!(r.outcome, Outcome::Skip, "{}", r.id);
        assert!(
            r.reason.as_deref().is_some_and(|s| s.contains("needs")),
            "{:?}",
            r.reason
        );
    }
    assert_eq!(report.exit_code(true), 0);
}

/// An unreachable target is one root cause, named before any test runs:
/// "no HTTP answer" must not count as a refusal either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_target_stops_at_the_preflight() {
    let mut fixture = start_double(FIXED).await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    fixture.url = format!("https://{}", closed.local_addr().unwrap());
    drop(closed);
    let err = try_run(
        &fixture,
        "TLS-001,TLS-002,TLS-004",
        &fixture.path("r.xml"),
        "ca.pem",
    )
    .await
    .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, cli::CliError::Preflight(_)), "{msg}");
    assert!(msg.contains("not reachable"), "{msg}");
    assert!(!fixture.path("r.xml").exists(), "tests ran anyway");
}

/// With a CA that did not sign the target, TLS-001/002/004 used to pass
/// (every handshake fails) and the rest fail with BadSignature; now the
/// preflight names the wrong --ca and nothing runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_ca_stops_at_the_preflight_with_one_cause() {
    let fixture = start_double(FIXED).await;
    let other = CaSigner::generate("some other CA").unwrap();
    write(fixture.dir.path(), "other-ca.pem", &other.cert_pem());
    let err = try_run(
        &fixture,
        "TLS-001,TLS-002,TLS-004,JOSE-003",
        &fixture.path("r.xml"),
        "other-ca.pem",
    )
    .await
    .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, cli::CliError::Preflight(_)), "{msg}");
    assert!(msg.contains("does not chain to --ca"), "{msg}");
    assert!(!fixture.path("r.xml").exists(), "tests ran anyway");
}

/// A 429 with Retry-After is waited out, not reported as the target's fault.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_on_429_is_honoured() {
    let fixture = start_double(Faults {
        rate_limits_first_submit: true,
        ..FIXED
    })
    .await;
    let started = std::time::Instant::now();
    let report = run(&fixture, "JOSE-003", &fixture.path("r.xml")).await;
    assert_eq!(
        outcome(&report, "JOSE-003"),
        Outcome::Pass,
        "{:?}",
        report.results
    );
    assert!(
        started.elapsed() >= std::time::Duration::from_secs(1),
        "did not wait"
    );
}

/// A TLS-only run (`--target --ca`, no client identity) still gets past the
/// preflight: the server certificate is checked, /healthz cannot be.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preflight_without_an_identity_checks_the_certificate_only() {
    let fixture = start_double(FIXED).await;
    let ca = fixture.path("ca.pem").display().to_string();
    let argv = [
        "bashu-conformance",
        "run",
        "--target",
        &fixture.url,
        "--ca",
        &ca,
        "--only",
        "TLS-001",
        "--no-progress",
        "--timeout",
        "5",
    ];
    let Command::Run(args) = Cli::parse_from(argv).command else {
        panic!("not a run command")
    };
    let report = cli::run(&args).await.unwrap();
    assert_eq!(outcome(&report, "TLS-001"), Outcome::Pass, "{:?}", report.results);
}
