//! mTLS for the gateway, both directions.
//!
//! - [`server_tls_config`] / [`ReloadableTls`]: the inbound listener's rustls
//!   configuration. Every client must present a certificate chaining to the
//!   federation CA (and not revoked by a configured CRL); without one the
//!   handshake fails and no HTTP is ever spoken.
//! - [`ClientIdentity`]: who the verified client is, read from the single
//!   SPIFFE URI SAN of its leaf certificate. Authorisation uses only this.
//! - [`PeerHttpClient`]: the outbound mTLS HTTP client used to reach peer
//!   gateways (envelopes, key sets).
//!
//! All TLS goes through the aws-lc-rs provider explicitly, so the process-wide
//! default provider (ambiguous when several rustls backends are linked) never
//! matters.

mod client;
mod client_eku;
mod crl;
mod identity;
mod own_cert;
mod peer_identity;
mod pem;
mod server;
mod tls_metrics;

pub use client::{PeerClientOptions, PeerHttpClient, PeerHttpError, PeerResponse};
pub use identity::{ClientIdentity, IdentityError, Role, TRUST_DOMAIN};
pub(crate) use server::{hangup_signal, recv_hangup};
pub use server::{server_tls_config, ReloadableTls, TlsPaths};

use std::path::PathBuf;
use std::sync::Arc;

/// Errors building a TLS configuration from files on disk.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: invalid PEM: {source}")]
    Pem { path: PathBuf, source: std::io::Error },
    #[error("{path}: no certificate found")]
    NoCertificate { path: PathBuf },
    #[error("{path}: no private key found")]
    NoPrivateKey { path: PathBuf },
    #[error("{path}: CA certificate rejected: {source}")]
    BadCa { path: PathBuf, source: rustls::Error },
    #[error("{path}: no usable CRL found")]
    NoCrl { path: PathBuf },
    #[error("client certificate verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    #[error("{context}: {source}")]
    Rustls {
        context: &'static str,
        source: rustls::Error,
    },
    #[error("no trust anchors: neither the federation CA nor system roots yielded a certificate")]
    NoRoots,
    // CRL checks (see `crl`): a CRL the handshake verifier would reject (or
    // apply to nobody) is refused when loaded, naming the file.
    #[error("{path}: CRL does not parse: {reason}")]
    CrlInvalid { path: PathBuf, reason: String },
    #[error("{path}: CRL issuer {issuer} is not a certificate of the CA file {ca}")]
    CrlUnknownIssuer {
        path: PathBuf,
        issuer: String,
        ca: PathBuf,
    },
    #[error("{path}: CRL signature does not verify against CA {issuer}: {reason}")]
    CrlSignature {
        path: PathBuf,
        issuer: String,
        reason: String,
    },
    #[error("{path}: CRL of {issuer} has no nextUpdate")]
    CrlNoNextUpdate { path: PathBuf, issuer: String },
    #[error("{path}: CRL of {issuer} is out of date: its nextUpdate {next_update} has passed")]
    CrlExpired {
        path: PathBuf,
        issuer: String,
        next_update: String,
    },
    /// The private key is not the key of the certificate: names both
    /// files, since either may be the wrong one.
    #[error("private key {key} does not match the certificate {cert} (is one of them from another pair?): {reason}")]
    KeyMismatch {
        cert: PathBuf,
        key: PathBuf,
        reason: String,
    },
    /// The gateway's own certificate cannot serve as its identity.
    #[error("{path}: not usable as this gateway's certificate: {reason}")]
    OwnCertificate { path: PathBuf, reason: String },
}

impl TlsError {
    /// Short machine-readable cause, the `reason` label of
    /// `bashu_tls_reload_failures_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            TlsError::Read { .. } | TlsError::Pem { .. } => "unreadable_file",
            TlsError::NoCertificate { .. } | TlsError::NoPrivateKey { .. } => "missing_pem_item",
            TlsError::BadCa { .. } | TlsError::NoRoots => "ca",
            TlsError::NoCrl { .. } | TlsError::CrlInvalid { .. } => "crl_invalid",
            TlsError::CrlUnknownIssuer { .. } => "crl_unknown_issuer",
            TlsError::CrlSignature { .. } => "crl_signature",
            TlsError::CrlNoNextUpdate { .. } | TlsError::CrlExpired { .. } => "crl_expired",
            TlsError::OwnCertificate { .. } => "own_certificate",
            TlsError::KeyMismatch { .. } => "key_mismatch",
            TlsError::Verifier(_) | TlsError::Rustls { .. } => "tls_config",
        }
    }
}

/// The crypto provider used for every TLS configuration of the gateway.
pub(crate) fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// TLS 1.3 and 1.2 only; older versions are not offered.
pub(crate) const PROTOCOL_VERSIONS: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];
