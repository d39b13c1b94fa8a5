//! Shared fixtures of the API and transport tests: a dev PKI, a gateway API
//! listener on 127.0.0.1:0 with a fake service, and a raw mTLS HTTP client
//! that picks HTTP/1.1 or HTTP/2 explicitly.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)] // test fixtures: a failure is a test failure

use bashu_gateway::api;
use bashu_gateway::config::LimitsConfig;
use bashu_gateway::devpki::{DevCa, IssuedCert, LeafSpec};
use bashu_gateway::pipeline::{
    Envelope, GatewayService, ReceiveOutcome, ServiceFuture, SubmitOutcome, SubmitRequest,
};
use bashu_gateway::problem::{Problem, ProblemType};
use bashu_gateway::transport::{ReloadableTls, Role, TlsPaths};
use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;

/// A CA and certificates written to a temporary directory.
pub struct Pki {
    pub dir: tempfile::TempDir,
    pub ca: DevCa,
    pub ca_path: PathBuf,
}

/// Paths of an issued certificate and key.
#[derive(Clone, Debug)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub serial: Vec<u8>,
}

impl Pki {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ca = DevCa::generate("test CA").unwrap();
        let ca_path = dir.path().join("ca.pem");
        std::fs::write(&ca_path, ca.cert_pem()).unwrap();
        Self { dir, ca, ca_path }
    }

    pub fn write(&self, name: &str, issued: &IssuedCert) -> CertFiles {
        let cert = self.dir.path().join(format!("{name}.crt"));
        let key = self.dir.path().join(format!("{name}.key"));
        std::fs::write(&cert, &issued.cert_pem).unwrap();
        std::fs::write(&key, &issued.key_pem).unwrap();
        CertFiles {
            cert,
            key,
            serial: issued.serial.clone(),
        }
    }

    pub fn identity(&self, member: &str, role: Role) -> CertFiles {
        let issued = self.ca.issue_identity(member, role).unwrap();
        self.write(&format!("{member}-{role}-{}", hex(&issued.serial)), &issued)
    }

    pub fn custom(&self, name: &str, spec: &LeafSpec) -> CertFiles {
        self.write(name, &self.ca.issue(spec).unwrap())
    }

    pub fn server_paths(&self, member: &str) -> TlsPaths {
        let gw = self.identity(member, Role::Gateway);
        TlsPaths {
            ca: self.ca_path.clone(),
            cert: gw.cert,
            key: gw.key,
            crls: Vec::new(),
        }
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A running API listener.
pub struct Server {
    pub addr: SocketAddr,
    pub tls: Arc<ReloadableTls>,
    pub shutdown: watch::Sender<bool>,
    pub task: JoinHandle<()>,
}

impl Server {
    pub async fn start(
        pki: &Pki,
        member: &str,
        service: Arc<dyn GatewayService>,
        limits: LimitsConfig,
    ) -> Self {
        Self::start_with(pki.server_paths(member), member, service, limits).await
    }

    pub async fn start_with(
        paths: TlsPaths,
        member: &str,
        service: Arc<dyn GatewayService>,
        limits: LimitsConfig,
    ) -> Self {
        let tls = ReloadableTls::load(paths).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (shutdown, rx) = watch::channel(false);
        let task = tokio::spawn(api::serve(
            listener,
            Arc::clone(&tls),
            service,
            member.to_owned(),
            limits,
            rx,
        ));
        Self {
            addr,
            tls,
            shutdown,
            task,
        }
    }

    pub async fn stop(self) {
        self.shutdown.send(true).unwrap();
        self.task.await.unwrap();
    }
}

/// rustls client config trusting `ca`, optionally presenting `client`.
pub fn client_config(ca: &Path, client: Option<&CertFiles>, alpn: &[&[u8]]) -> rustls::ClientConfig {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut std::fs::read(ca).unwrap().as_slice()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let mut cfg = match client {
        Some(c) => {
            let certs = rustls_pemfile::certs(&mut std::fs::read(&c.cert).unwrap().as_slice())
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
            let key = rustls_pemfile::private_key(&mut std::fs::read(&c.key).unwrap().as_slice())
                .unwrap()
                .unwrap();
            builder.with_client_auth_cert(certs, key).unwrap()
        }
        None => builder.with_no_client_auth(),
    };
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    cfg
}

/// An open TLS connection to the server.
pub async fn connect(
    addr: SocketAddr,
    cfg: rustls::ClientConfig,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    TlsConnector::from(Arc::new(cfg))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
}

/// A client bound to one identity and one HTTP version.
#[derive(Clone)]
pub struct Client {
    pub addr: SocketAddr,
    pub ca: PathBuf,
    pub cert: Option<CertFiles>,
    pub version: Version,
}

/// A buffered response.
#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub version: Version,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }

    pub fn content_type(&self) -> &str {
        self.headers
            .get(http::header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap())
            .unwrap_or("")
    }

    /// Asserts a problem+json body of `kind` whose `status` matches.
    pub fn assert_problem(&self, kind: ProblemType) -> Value {
        assert_eq!(self.content_type(), "application/problem+json", "{self:?}");
        let body = self.json();
        assert_eq!(body["type"], kind.uri(), "{body}");
        assert_eq!(body["status"], self.status.as_u16(), "{body}");
        assert!(body["title"].is_string() && body["detail"].is_string(), "{body}");
        body
    }
}

impl Client {
    pub fn new(server: &Server, pki: &Pki, cert: Option<CertFiles>, version: Version) -> Self {
        Self {
            addr: server.addr,
            ca: pki.ca_path.clone(),
            cert,
            version,
        }
    }

    /// A client with a fresh certificate for `member` in `role`.
    pub fn of(server: &Server, pki: &Pki, member: &str, role: Role, version: Version) -> Self {
        Self::new(server, pki, Some(pki.identity(member, role)), version)
    }

    fn alpn(&self) -> &'static [&'static [u8]] {
        if self.version == Version::HTTP_2 {
            &[b"h2"]
        } else {
            &[b"http/1.1"]
        }
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.send(Method::GET, path, None, &[]).await
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> Resp {
        self.send(
            Method::POST,
            path,
            Some(Bytes::from(body.to_string())),
            &[("content-type", "application/json")],
        )
        .await
    }

    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
        headers: &[(&str, &str)],
    ) -> Resp {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("https://localhost:{}{path}", self.addr.port()));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(Full::new(body.unwrap_or_default())).unwrap();
        self.request(req).await
    }

    /// Sends one request on a fresh connection.
    pub async fn request<B>(&self, req: Request<B>) -> Resp
    where
        B: hyper::body::Body + Send + Unpin + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let cfg = client_config(&self.ca, self.cert.as_ref(), self.alpn());
        let tls = connect(self.addr, cfg).await.expect("TLS connect");
        let io = TokioIo::new(tls);
        let resp = if self.version == Version::HTTP_2 {
            let (mut sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                .await
                .unwrap();
            tokio::spawn(conn);
            sender.send_request(req).await.unwrap()
        } else {
            let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
            tokio::spawn(conn);
            sender.send_request(req).await.unwrap()
        };
        let (parts, body) = resp.into_parts();
        Resp {
            status: parts.status,
            version: parts.version,
            headers: parts.headers,
            body: body.collect().await.unwrap().to_bytes(),
        }
    }
}

/// A scripted [`GatewayService`] that records who called it.
#[derive(Default)]
pub struct Fake {
    pub calls: Mutex<Vec<String>>,
}

impl Fake {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn log(&self, call: String) {
        self.calls.lock().unwrap().push(call);
    }

    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }
}

fn done<'a, T: Send + 'a>(r: Result<T, Problem>) -> ServiceFuture<'a, T> {
    Box::pin(async move { r })
}

impl GatewayService for Fake {
    /// `credential` drives the answer: "new" → created, "replay" → replay,
    /// "conflict" → duplicate-conflict naming the exchange, "bad" → invalid-signature.
    fn submit<'a>(&'a self, caller: &'a str, req: SubmitRequest) -> ServiceFuture<'a, SubmitOutcome> {
        self.log(format!("submit {caller} {} {}", req.credential, req.destination));
        let outcome = |created| {
            Ok(SubmitOutcome {
                exchange_id: "ex-1".into(),
                status: "accepted".into(),
                created,
            })
        };
        done(match req.credential.as_str() {
            "new" => outcome(true),
            "replay" => outcome(false),
            "conflict" => {
                Err(Problem::new(ProblemType::DuplicateConflict, "different bytes").with_exchange("ex-1"))
            }
            _ => Err(Problem::new(
                ProblemType::InvalidSignature,
                "signature does not verify",
            )),
        })
    }

    fn exchange_status<'a>(&'a self, id: &'a str) -> ServiceFuture<'a, Option<Value>> {
        self.log(format!("status {id}"));
        match id {
            "slow" => Box::pin(futures::future::pending()),
            "ex-1" => done(Ok(Some(json!({"exchangeId": "ex-1", "status": "delivered"})))),
            _ => done(Ok(None)),
        }
    }

    fn inbox(&self, after: Option<u64>, limit: u32) -> ServiceFuture<'_, Value> {
        self.log(format!("inbox {after:?} {limit}"));
        done(Ok(json!({"items": [], "next": null})))
    }

    /// Clamps like a store whose highest cursor is 41.
    fn ack(&self, up_to: u64) -> ServiceFuture<'_, u64> {
        self.log(format!("ack {up_to}"));
        done(Ok(up_to.min(41)))
    }

    /// `exchangeId` drives the answer: "ex-new" → created, "ex-replay" →
    /// replay, anything else → chain-broken without an exchange id.
    fn receive<'a>(&'a self, caller: &'a str, env: Envelope) -> ServiceFuture<'a, ReceiveOutcome> {
        self.log(format!("receive {caller} {}", env.exchange_id));
        done(match env.exchange_id.as_str() {
            "ex-new" => Ok(ReceiveOutcome {
                exchange_id: env.exchange_id.clone(),
                created: true,
            }),
            "ex-replay" => Ok(ReceiveOutcome {
                exchange_id: env.exchange_id.clone(),
                created: false,
            }),
            _ => Err(Problem::new(
                ProblemType::ChainBroken,
                "link 2 does not name link 1",
            )),
        })
    }

    fn keyset(&self) -> ServiceFuture<'_, String> {
        done(Ok("eyJhbGciOiJFUzI1NiJ9.e30.c2ln".into()))
    }

    fn admin_exchanges<'a>(&'a self, status: Option<&'a str>) -> ServiceFuture<'a, Value> {
        self.log(format!("admin_exchanges {status:?}"));
        done(Ok(json!({"items": []})))
    }

    fn admin_retry<'a>(&'a self, id: &'a str) -> ServiceFuture<'a, Value> {
        self.log(format!("admin_retry {id}"));
        done(Ok(json!({"exchangeId": id, "status": "accepted"})))
    }

    fn admin_trust_refresh(&self) -> ServiceFuture<'_, Value> {
        done(Ok(json!({"refreshed": []})))
    }

    fn ready(&self) -> futures::future::BoxFuture<'_, bool> {
        Box::pin(async { true })
    }
}

pub fn limits() -> LimitsConfig {
    LimitsConfig::default()
}
