//! The suite's mTLS HTTP client.
//!
//! One TLS connection per request: no pooled connection carries state from
//! one test into the next, and every test can pick its own TLS parameters
//! (client identity, protocol versions, ALPN). Every step — TCP connect, TLS
//! handshake, request, response body — runs under one deadline, so a target
//! that hangs fails the test instead of hanging the run.

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// Longest `Retry-After` the client waits out on a `429`.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(10);

/// How often one request is re-sent after a `429`.
pub const RATE_LIMIT_RETRIES: u32 = 3;

/// The wait a `429` asks for: `Retry-After` in seconds (0 counts as 1),
/// `None` for other statuses, a missing or non-numeric header, or a wait
/// above [`MAX_RETRY_AFTER`].
pub fn retry_after(resp: &Response) -> Option<Duration> {
    if resp.status != StatusCode::TOO_MANY_REQUESTS {
        return None;
    }
    let secs: u64 = resp
        .headers
        .get(header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let wait = Duration::from_secs(secs.max(1));
    (wait <= MAX_RETRY_AFTER).then_some(wait)
}

/// Responses larger than this are a target fault, not something to buffer.
const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: {message}")]
    Pem { path: PathBuf, message: String },
    #[error("invalid target URL {0:?}: expected https://host:port")]
    Url(String),
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
    #[error("connect to {addr}: {source}")]
    Connect { addr: String, source: std::io::Error },
    #[error("TLS handshake failed: {0}")]
    Handshake(std::io::Error),
    #[error("HTTP exchange failed: {0}")]
    Http(#[from] hyper::Error),
    #[error("invalid request: {0}")]
    Request(#[from] http::Error),
    #[error("response body unreadable or larger than {MAX_RESPONSE_BYTES} bytes")]
    Body,
    #[error("timed out after {0:?}")]
    Timeout(Duration),
}

/// Where the gateway under test listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub host: String,
    pub port: u16,
}

impl Target {
    /// Parses `https://host:port` (a trailing `/` is allowed; paths are not).
    pub fn parse(url: &str) -> Result<Self, ClientError> {
        let bad = || ClientError::Url(url.to_owned());
        let uri: http::Uri = url.parse().map_err(|_| bad())?;
        if uri.scheme_str() != Some("https") || !matches!(uri.path(), "" | "/") {
            return Err(bad());
        }
        let host = uri.host().ok_or_else(bad)?;
        let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
        Ok(Self {
            host,
            port: uri.port_u16().unwrap_or(443),
        })
    }

    pub fn url(&self) -> String {
        if self.host.contains(':') {
            format!("https://[{}]:{}", self.host, self.port)
        } else {
            format!("https://{}:{}", self.host, self.port)
        }
    }

    fn addr(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// A client certificate chain and its private key.
#[derive(Debug)]
pub struct Identity {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

impl Clone for Identity {
    fn clone(&self) -> Self {
        Self {
            chain: self.chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

impl Identity {
    /// Loads a PEM certificate chain and a PEM private key (PKCS#8, SEC1 or PKCS#1).
    pub fn load(cert: &Path, key: &Path) -> Result<Self, ClientError> {
        let chain = load_certs(cert)?;
        let key_pem = read(key)?;
        let key = rustls_pemfile::private_key(&mut key_pem.as_slice())
            .map_err(|e| pem_error(key, e.to_string()))?
            .ok_or_else(|| pem_error(key, "no private key found".into()))?;
        Ok(Self { chain, key })
    }
}

/// Loads every certificate of a PEM bundle.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, ClientError> {
    let pem = read(path)?;
    let certs = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(path, e.to_string()))?;
    if certs.is_empty() {
        return Err(pem_error(path, "no certificate found".into()));
    }
    Ok(certs)
}

/// Builds a root store from a PEM CA bundle.
pub fn load_roots(path: &Path) -> Result<RootCertStore, ClientError> {
    roots_from(load_certs(path)?).map_err(|e| pem_error(path, e.to_string()))
}

/// Builds a root store from DER certificates.
pub fn roots_from(certs: Vec<CertificateDer<'static>>) -> Result<RootCertStore, rustls::Error> {
    let mut roots = RootCertStore::empty();
    for cert in certs {
        roots.add(cert)?;
    }
    Ok(roots)
}

fn read(path: &Path) -> Result<Vec<u8>, ClientError> {
    std::fs::read(path).map_err(|source| ClientError::Read {
        path: path.to_owned(),
        source,
    })
}

fn pem_error(path: &Path, message: String) -> ClientError {
    ClientError::Pem {
        path: path.to_owned(),
        message,
    }
}

/// TLS protocol versions the client offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsVersions {
    Any,
    Tls12Only,
    Tls13Only,
}

/// Everything that shapes one TLS client configuration.
#[derive(Debug, Clone)]
pub struct TlsSettings {
    pub roots: Arc<RootCertStore>,
    pub identity: Option<Identity>,
    pub versions: TlsVersions,
    pub alpn: Vec<Vec<u8>>,
}

impl TlsSettings {
    pub fn new(roots: Arc<RootCertStore>, identity: Option<Identity>) -> Self {
        Self {
            roots,
            identity,
            versions: TlsVersions::Any,
            alpn: vec![b"http/1.1".to_vec()],
        }
    }

    fn build(&self) -> Result<ClientConfig, ClientError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let versions: &[&'static rustls::SupportedProtocolVersion] = match self.versions {
            TlsVersions::Any => rustls::ALL_VERSIONS,
            TlsVersions::Tls12Only => &[&rustls::version::TLS12],
            TlsVersions::Tls13Only => &[&rustls::version::TLS13],
        };
        let builder = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)?
            .with_root_certificates(self.roots.clone());
        let mut config = match &self.identity {
            Some(id) => builder.with_client_auth_cert(id.chain.clone(), id.key.clone_key())?,
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = self.alpn.clone();
        Ok(config)
    }
}

/// What a completed handshake negotiated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandshakeInfo {
    pub version: Option<rustls::ProtocolVersion>,
    pub alpn: Option<Vec<u8>>,
}

/// A response, fully buffered.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Response {
    /// The media type without parameters, lower-cased.
    pub fn media_type(&self) -> Option<String> {
        let value = self.headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
        let media = value.split(';').next().unwrap_or_default().trim();
        Some(media.to_ascii_lowercase())
    }

    pub fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// An HTTP/1.1 (or HTTP/2) client bound to one target and one TLS configuration.
#[derive(Debug, Clone)]
pub struct Client {
    target: Target,
    server_name: ServerName<'static>,
    config: Arc<ClientConfig>,
    timeout: Duration,
}

impl Client {
    /// `server_name` overrides the name checked against the target's
    /// certificate (defaults to the target host).
    pub fn new(
        target: &Target,
        server_name: Option<&str>,
        settings: &TlsSettings,
        timeout: Duration,
    ) -> Result<Self, ClientError> {
        let name = server_name.unwrap_or(&target.host).to_owned();
        let server_name = ServerName::try_from(name.clone()).map_err(|_| ClientError::Url(name))?;
        Ok(Self {
            target: target.clone(),
            server_name,
            config: Arc::new(settings.build()?),
            timeout,
        })
    }

    /// The same target and timeout with different TLS settings.
    pub fn with_settings(&self, settings: &TlsSettings) -> Result<Self, ClientError> {
        Ok(Self {
            config: Arc::new(settings.build()?),
            ..self.clone()
        })
    }

    pub fn target(&self) -> &Target {
        &self.target
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Connects and completes the TLS handshake only.
    pub async fn handshake(&self) -> Result<HandshakeInfo, ClientError> {
        let stream = self.deadline(self.connect()).await?;
        let (_, conn) = stream.get_ref();
        Ok(HandshakeInfo {
            version: conn.protocol_version(),
            alpn: conn.alpn_protocol().map(<[u8]>::to_vec),
        })
    }

    /// Connects, completes the handshake and returns the server's
    /// certificate chain (leaf first).
    pub async fn server_certificates(&self) -> Result<Vec<CertificateDer<'static>>, ClientError> {
        let stream = self.deadline(self.connect()).await?;
        let (_, conn) = stream.get_ref();
        Ok(conn
            .peer_certificates()
            .map(|c| c.iter().map(|d| d.clone().into_owned()).collect())
            .unwrap_or_default())
    }

    /// The name the target's certificate is checked against.
    pub fn server_name(&self) -> String {
        self.server_name.to_str().into_owned()
    }

    pub async fn get(&self, path: &str) -> Result<Response, ClientError> {
        self.send(Method::GET, path, None, Bytes::new()).await
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> Result<Response, ClientError> {
        let bytes = Bytes::from(body.to_string());
        self.send(Method::POST, path, Some("application/json"), bytes)
            .await
    }

    /// Sends one request over a fresh HTTP/1.1 connection. A `429` with a
    /// `Retry-After` of at most [`MAX_RETRY_AFTER`] is waited out and the
    /// request sent again (at most [`RATE_LIMIT_RETRIES`] times), so the
    /// suite's own pace never fails a test; the last answer is returned.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        body: Bytes,
    ) -> Result<Response, ClientError> {
        let mut attempt = 0;
        loop {
            let resp = self
                .send_once(method.clone(), path, content_type, body.clone())
                .await?;
            match retry_after(&resp) {
                Some(wait) if attempt < RATE_LIMIT_RETRIES => {
                    attempt += 1;
                    tokio::time::sleep(wait).await;
                }
                _ => return Ok(resp),
            }
        }
    }

    /// [`Client::send`] without waiting out a `429`.
    pub async fn send_once(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        body: Bytes,
    ) -> Result<Response, ClientError> {
        let request = self.request(method, path, content_type, body)?;
        self.deadline(async {
            let stream = self.connect().await?;
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            let driver = tokio::spawn(conn);
            let response = sender.send_request(request).await;
            let out = collect(response?).await;
            driver.abort();
            out
        })
        .await
    }

    /// Sends one request over a fresh HTTP/2 connection (ALPN `h2` must be
    /// among the configured protocols).
    pub async fn send_h2(&self, method: Method, path: &str) -> Result<Response, ClientError> {
        let request = self.request(method, path, None, Bytes::new())?;
        self.deadline(async {
            let stream = self.connect().await?;
            let (mut sender, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await?;
            let driver = tokio::spawn(conn);
            let response = sender.send_request(request).await;
            let out = collect(response?).await;
            driver.abort();
            out
        })
        .await
    }

    /// Sends an HTTP/1.1 request whose body the server may refuse before
    /// reading it (`413` on `Content-Length`): the body is written in the
    /// background and the answer read as soon as it comes, so a server that
    /// answers early and closes is seen answering, not as a broken pipe.
    pub async fn send_oversized(
        &self,
        path: &str,
        content_type: &str,
        body: Bytes,
    ) -> Result<Response, ClientError> {
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            self.target.addr(),
            body.len()
        );
        self.deadline(async {
            let stream = self.connect().await?;
            let (mut reader, mut writer) = tokio::io::split(stream);
            let upload = tokio::spawn(async move {
                use tokio::io::AsyncWriteExt as _;
                // A write error here is the server closing early: its answer is what counts.
                if writer.write_all(head.as_bytes()).await.is_ok() {
                    let _ = writer.write_all(&body).await;
                }
                writer
            });
            let answer = read_early_response(&mut reader).await;
            upload.abort();
            answer
        })
        .await
    }

    fn request(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        body: Bytes,
    ) -> Result<Request<Full<Bytes>>, ClientError> {
        let uri = format!("{}{}", self.target.url(), path);
        let mut builder = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::HOST, self.target.addr())
            .header(header::ACCEPT, "application/json, application/problem+json, */*");
        if let Some(ct) = content_type {
            builder = builder.header(
                header::CONTENT_TYPE,
                HeaderValue::from_str(ct).map_err(http::Error::from)?,
            );
        }
        Ok(builder.body(Full::new(body))?)
    }

    async fn connect(&self) -> Result<TlsStream<TcpStream>, ClientError> {
        let addr = self.target.addr();
        let tcp = TcpStream::connect(&addr)
            .await
            .map_err(|source| ClientError::Connect { addr, source })?;
        TlsConnector::from(self.config.clone())
            .connect(self.server_name.clone(), tcp)
            .await
            .map_err(ClientError::Handshake)
    }

    async fn deadline<T>(
        &self,
        fut: impl std::future::Future<Output = Result<T, ClientError>>,
    ) -> Result<T, ClientError> {
        tokio::time::timeout(self.timeout, fut)
            .await
            .map_err(|_| ClientError::Timeout(self.timeout))?
    }
}

/// Reads one HTTP/1.1 response (headers, then `Content-Length` bytes or
/// everything up to EOF).
async fn read_early_response<R: tokio::io::AsyncRead + Unpin>(
    reader: &mut R,
) -> Result<Response, ClientError> {
    use tokio::io::AsyncReadExt as _;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let n = reader.read(&mut chunk).await.map_err(|_| ClientError::Body)?;
        buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut parsed = httparse::Response::new(&mut headers);
        match parsed.parse(&buf) {
            Ok(httparse::Status::Complete(head_len)) => {
                let status = StatusCode::from_u16(parsed.code.unwrap_or(0)).map_err(|_| ClientError::Body)?;
                let mut map = HeaderMap::new();
                for h in parsed.headers.iter() {
                    if let (Ok(name), Ok(value)) = (
                        http::HeaderName::from_bytes(h.name.as_bytes()),
                        HeaderValue::from_bytes(h.value),
                    ) {
                        map.append(name, value);
                    }
                }
                let want = map
                    .get(header::CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<usize>().ok());
                let mut body = buf.get(head_len..).unwrap_or_default().to_vec();
                while want.is_none_or(|w| body.len() < w) && body.len() <= MAX_RESPONSE_BYTES {
                    let n = reader.read(&mut chunk).await.map_err(|_| ClientError::Body)?;
                    if n == 0 {
                        break;
                    }
                    body.extend_from_slice(chunk.get(..n).unwrap_or_default());
                }
                if let Some(w) = want {
                    body.truncate(w);
                }
                return Ok(Response {
                    status,
                    headers: map,
                    body: Bytes::from(body),
                });
            }
            Ok(httparse::Status::Partial) if n > 0 && buf.len() < 64 * 1024 => continue,
            _ => return Err(ClientError::Body),
        }
    }
}

async fn collect(response: http::Response<hyper::body::Incoming>) -> Result<Response, ClientError> {
    let (parts, body) = response.into_parts();
    let body = Limited::new(body, MAX_RESPONSE_BYTES)
        .collect()
        .await
        .map_err(|_| ClientError::Body)?
        .to_bytes();
    Ok(Response {
        status: parts.status,
        headers: parts.headers,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_parsing() {
        let t = Target::parse("https://127.0.0.1:7443").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("127.0.0.1", 7443));
        assert_eq!(t.url(), "https://127.0.0.1:7443");
        assert!(Target::parse("http://127.0.0.1:7443").is_err());
        assert!(Target::parse("https://127.0.0.1:7443/v1").is_err());
        assert_eq!(
            Target::parse("https://[::1]:8443/").unwrap().url(),
            "https://[::1]:8443"
        );
    }
}
