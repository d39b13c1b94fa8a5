//! Outbound mTLS HTTP client for peer gateways.

use super::peer_identity::ExpectedPeer;
use super::{pem, provider, TlsError, PROTOCOL_VERSIONS};
use bytes::Bytes;
use http::{header, HeaderMap, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls::client::{ResolvesClientCert, WebPkiServerVerifier};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, SignatureScheme};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Timeouts and limits of a [`PeerHttpClient`].
#[derive(Debug, Clone)]
pub struct PeerClientOptions {
    /// TCP connect timeout (the TLS handshake counts against `request_timeout`).
    pub connect_timeout: Duration,
    /// Whole exchange: connection checkout, request, response headers and body.
    pub request_timeout: Duration,
    /// Idle pooled connections are closed after this long.
    pub pool_idle_timeout: Duration,
    /// Responses larger than this are an error, never buffered in full.
    pub max_response_bytes: usize,
    /// When set, the server must present exactly this SPIFFE identity, on
    /// top of chaining to a trusted root (see `peer_identity`). Gateways
    /// always set it for peers; generic clients (tests, the quickstart's
    /// credit bank) may leave it unset.
    pub expected_server: Option<super::ClientIdentity>,
}

impl Default for PeerClientOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            // Below the listener's default idle deadline (60 s), so the
            // pool drops a connection before the peer closes it under us.
            pool_idle_timeout: Duration::from_secs(30),
            max_response_bytes: 8 * 1024 * 1024,
            expected_server: None,
        }
    }
}

/// A buffered peer response.
#[derive(Debug, Clone)]
pub struct PeerResponse {
    pub status: StatusCode,
    /// HTTP version negotiated (ALPN) with the peer.
    pub version: http::Version,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// Why a peer request produced no response.
#[derive(Debug, thiserror::Error)]
pub enum PeerHttpError {
    #[error("invalid peer URL {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("request to {url} timed out after {after:?}")]
    Timeout { url: String, after: Duration },
    #[error("request to {url} failed: {source}")]
    Request {
        url: String,
        source: hyper_util::client::legacy::Error,
    },
    #[error("reading the response of {url} failed: {reason}")]
    Body { url: String, reason: String },
    #[error("response of {url} exceeds {limit} bytes")]
    TooLarge { url: String, limit: usize },
    #[error("cannot encode request body: {0}")]
    Encode(#[from] serde_json::Error),
}

/// mTLS client presenting this gateway's certificate to peers.
///
/// Built on hyper-util's pooled client: connections are reused per origin,
/// HTTP/2 is used when the peer offers it over ALPN, HTTP/1.1 otherwise.
/// Only `https://` URLs are accepted. Cheap to clone (the pool is shared).
#[derive(Clone, Debug)]
pub struct PeerHttpClient {
    inner: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    options: PeerClientOptions,
}

impl PeerHttpClient {
    /// Client trusting the federation CA (plus the system roots when
    /// `system_roots`) with default timeouts.
    pub fn new(ca: &Path, cert: &Path, key: &Path, system_roots: bool) -> Result<Self, TlsError> {
        Self::with_options(ca, cert, key, system_roots, PeerClientOptions::default())
    }

    /// Client for the gateway's `[tls]` section.
    pub fn from_config(tls: &crate::config::TlsConfig, options: PeerClientOptions) -> Result<Self, TlsError> {
        Self::with_options(&tls.ca, &tls.cert, &tls.key, tls.system_roots_outbound, options)
    }

    pub fn with_options(
        ca: &Path,
        cert: &Path,
        key: &Path,
        system_roots: bool,
        options: PeerClientOptions,
    ) -> Result<Self, TlsError> {
        let auth = ClientAuth::Files { cert, key };
        let tls = client_tls_config(ca, auth, system_roots, options.expected_server.clone())?;
        Ok(Self::with_tls(tls, options))
    }

    /// Client presenting the gateway certificate held by `identity`: each
    /// new connection presents whatever was loaded last, so a rotated
    /// certificate (SIGHUP or file change) is used for outbound connections
    /// too, without rebuilding the client.
    pub fn with_reloadable_identity(
        ca: &Path,
        identity: &Arc<super::ReloadableTls>,
        system_roots: bool,
        options: PeerClientOptions,
    ) -> Result<Self, TlsError> {
        let resolver = Arc::new(ReloadingClientCert(Arc::clone(identity)));
        let auth = ClientAuth::Resolver(resolver);
        let tls = client_tls_config(ca, auth, system_roots, options.expected_server.clone())?;
        Ok(Self::with_tls(tls, options))
    }

    fn with_tls(tls: ClientConfig, options: PeerClientOptions) -> Self {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(options.connect_timeout));
        http.set_nodelay(true);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        let inner = Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(options.pool_idle_timeout)
            .build(https);
        Self { inner, options }
    }

    /// `POST url` with `body` as `application/json`.
    pub async fn post_json<T: serde::Serialize + ?Sized>(
        &self,
        url: &str,
        body: &T,
    ) -> Result<PeerResponse, PeerHttpError> {
        let bytes = Bytes::from(serde_json::to_vec(body)?);
        self.send(Method::POST, url, Some(bytes)).await
    }

    /// `POST url` with a JSON content type and `body` sent as is, even if it
    /// is not valid JSON (tests and the conformance suite probe with it).
    pub async fn post_raw(&self, url: &str, body: Bytes) -> Result<PeerResponse, PeerHttpError> {
        self.send(Method::POST, url, Some(body)).await
    }

    /// `GET url`.
    pub async fn get(&self, url: &str) -> Result<PeerResponse, PeerHttpError> {
        self.send(Method::GET, url, None).await
    }

    async fn send(
        &self,
        method: Method,
        url: &str,
        body: Option<Bytes>,
    ) -> Result<PeerResponse, PeerHttpError> {
        let uri = parse_url(url)?;
        let mut req = Request::builder().method(method).uri(uri).header(
            header::ACCEPT,
            "application/json, application/jwt, application/problem+json",
        );
        if body.is_some() {
            req = req.header(header::CONTENT_TYPE, "application/json");
        }
        let req = req
            .body(Full::new(body.unwrap_or_default()))
            .map_err(|e| PeerHttpError::InvalidUrl {
                url: url.to_owned(),
                reason: e.to_string(),
            })?;
        let after = self.options.request_timeout;
        tokio::time::timeout(after, self.exchange(url, req))
            .await
            .map_err(|_| PeerHttpError::Timeout {
                url: url.to_owned(),
                after,
            })?
    }

    async fn exchange(&self, url: &str, req: Request<Full<Bytes>>) -> Result<PeerResponse, PeerHttpError> {
        let resp = self
            .inner
            .request(req)
            .await
            .map_err(|source| PeerHttpError::Request {
                url: url.to_owned(),
                source,
            })?;
        let (parts, body) = resp.into_parts();
        let limit = self.options.max_response_bytes;
        let body = Limited::new(body, limit)
            .collect()
            .await
            .map_err(|e| {
                if e.is::<http_body_util::LengthLimitError>() {
                    PeerHttpError::TooLarge {
                        url: url.to_owned(),
                        limit,
                    }
                } else {
                    PeerHttpError::Body {
                        url: url.to_owned(),
                        reason: e.to_string(),
                    }
                }
            })?
            .to_bytes();
        Ok(PeerResponse {
            status: parts.status,
            version: parts.version,
            headers: parts.headers,
            body,
        })
    }
}

fn parse_url(url: &str) -> Result<Uri, PeerHttpError> {
    let invalid = |reason: &str| PeerHttpError::InvalidUrl {
        url: url.to_owned(),
        reason: reason.to_owned(),
    };
    let uri: Uri = url.parse().map_err(|_| invalid("not a URI"))?;
    if uri.scheme_str() != Some("https") {
        return Err(invalid("only https:// is allowed"));
    }
    if uri.host().is_none() {
        return Err(invalid("no host"));
    }
    Ok(uri)
}

/// How the client proves its identity.
enum ClientAuth<'a> {
    /// A fixed chain and key read once.
    Files { cert: &'a Path, key: &'a Path },
    /// Whatever the resolver holds when a connection is made.
    Resolver(Arc<dyn ResolvesClientCert>),
}

/// The gateway certificate of a [`super::ReloadableTls`], for outbound use.
#[derive(Debug)]
struct ReloadingClientCert(Arc<super::ReloadableTls>);

impl ResolvesClientCert for ReloadingClientCert {
    fn resolve(&self, _root_hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.0.certified_key())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

fn client_tls_config(
    ca: &Path,
    auth: ClientAuth<'_>,
    system_roots: bool,
    expected_server: Option<super::ClientIdentity>,
) -> Result<ClientConfig, TlsError> {
    let mut roots = pem::load_roots(ca)?;
    if system_roots {
        let added = pem::add_system_roots(&mut roots);
        tracing::debug!(added, "system roots added for outbound TLS");
    }
    if roots.is_empty() {
        return Err(TlsError::NoRoots);
    }
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(PROTOCOL_VERSIONS)
        .map_err(|source| TlsError::Rustls {
            context: "protocol versions",
            source,
        })?;
    let builder = match expected_server {
        None => builder.with_root_certificates(roots),
        Some(expected) => {
            let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .map_err(|e| TlsError::Rustls {
                    context: "server certificate verifier",
                    source: rustls::Error::General(e.to_string()),
                })?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(ExpectedPeer::new(webpki, expected)))
        }
    };
    match auth {
        ClientAuth::Files { cert, key } => builder
            .with_client_auth_cert(pem::load_certs(cert)?, pem::load_key(key)?)
            .map_err(|source| super::server::key_error(cert, key, "client certificate and key", source)),
        ClientAuth::Resolver(resolver) => Ok(builder.with_client_cert_resolver(resolver)),
    }
}
