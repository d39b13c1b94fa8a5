//! Gateway configuration (`gateway.toml`), parsed once into typed structs.
//!
//! Relative paths are resolved against the directory of the config file, so a
//! dev federation directory can be moved as a whole. Environment variables
//! `BASHU_<SECTION>_<KEY>` override single values (see docs/operations.md).

mod env;
mod store;
mod validate;

pub use env::{known_names as known_env_names, unknown_vars as unknown_env_vars, UnknownVar};
pub use store::{redact as redact_url, StoreConfig, StoreUrl, DEFAULT_POOL_SIZE};

pub use env::{Kind as EnvKind, KEYS as ENV_KEYS, PREFIX as ENV_PREFIX};

use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// A member id such as `cq`: lowercase ASCII letters and digits, 2–16 chars.
pub type MemberId = String;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// This gateway's member id.
    pub member: MemberId,
    /// Home framework id of this member's credit bank (e.g. `cqf`).
    pub framework: String,
    /// Directory for the SQLite store and other state.
    pub data_dir: PathBuf,
    pub listen: ListenConfig,
    pub tls: TlsConfig,
    #[serde(default)]
    pub limits: LimitsConfig,
    pub trust: TrustConfig,
    #[serde(default)]
    pub mapping: MappingConfig,
    #[serde(default)]
    pub delivery: DeliveryConfig,
    #[serde(default)]
    pub audit: AuditConfig,
    /// The database: SQLite in `data_dir` by default, or a shared PostgreSQL.
    #[serde(default)]
    pub store: StoreConfig,
    /// Peer gateways by member id. Any number: nothing assumes two members.
    #[serde(default)]
    pub peers: BTreeMap<MemberId, PeerConfig>,
    /// The file this configuration was loaded from; a reload (SIGHUP)
    /// re-reads it. Not a TOML key.
    #[serde(skip)]
    pub source: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenConfig {
    /// mTLS API listener.
    pub api: SocketAddr,
    /// Plain-HTTP metrics/health listener; loopback by default.
    #[serde(default = "default_metrics_addr")]
    pub metrics: SocketAddr,
    /// Allow a non-loopback metrics address (the listener has no TLS and no
    /// authentication).
    #[serde(default)]
    pub allow_public_metrics: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// Federation CA bundle (PEM) that client and peer certificates chain to.
    pub ca: PathBuf,
    /// This gateway's certificate chain (PEM), SAN `spiffe://bashu.federation/<member>/gateway`.
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Certificate revocation lists (PEM or DER).
    #[serde(default)]
    pub crls: Vec<PathBuf>,
    /// Also trust the system roots (openssl-probe) for outbound connections.
    #[serde(default)]
    pub system_roots_outbound: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    pub max_body_bytes: usize,
    pub max_header_bytes: usize,
    pub request_timeout_ms: u64,
    pub max_connections: usize,
    /// Sustained requests per second per client identity.
    pub rate_per_second: u32,
    pub rate_burst: u32,
    /// TLS handshake deadline, counted from `accept`.
    pub handshake_timeout_ms: u64,
    /// The first HTTP request must start within this long after `accept`;
    /// TLS bytes, the HTTP/2 preface and PINGs do not count.
    pub first_request_timeout_ms: u64,
    /// A connection with no request in flight for this long is closed.
    pub idle_timeout_ms: u64,
    /// Open connections per source IP address (including handshakes).
    pub max_connections_per_ip: usize,
    /// Open connections per authenticated client identity.
    pub max_connections_per_identity: usize,
    /// Connections per second per source IP that may fail to authenticate
    /// (failed or timed-out handshake, certificate without a bashu
    /// identity, no request in time); beyond it the address is refused
    /// before the handshake until its bucket refills.
    pub unauthenticated_per_second: u32,
    pub unauthenticated_burst: u32,
    /// Backlog of the API listener: connections the kernel queues for the
    /// accept loop (capped by `net.core.somaxconn`). Large enough that a
    /// reconnect flood does not overflow it, since an overflow drops a
    /// legitimate client's packets and costs it a retransmission timeout.
    pub listen_backlog: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 1024 * 1024,
            max_header_bytes: 16 * 1024,
            request_timeout_ms: 15_000,
            max_connections: 4096,
            rate_per_second: 500,
            rate_burst: 1000,
            handshake_timeout_ms: 5_000,
            first_request_timeout_ms: 10_000,
            idle_timeout_ms: 60_000,
            max_connections_per_ip: 512,
            max_connections_per_identity: 256,
            unauthenticated_per_second: 10,
            unauthenticated_burst: 50,
            listen_backlog: 4096,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustConfig {
    /// The operator key store (JSON) of this member.
    pub keystore: PathBuf,
    /// This member's federation private key (JWK) used to sign its key set.
    pub federation_key: PathBuf,
    /// Lifetime of a published key set (`exp - iat`).
    #[serde(default = "default_keyset_ttl")]
    pub keyset_ttl_secs: u64,
    /// Refresh a cached peer key set this long before its `exp`.
    #[serde(default = "default_refresh_ahead")]
    pub refresh_ahead_secs: u64,
    /// Keep serving the last good set this long past `exp` if the peer is unreachable.
    #[serde(default = "default_stale_grace")]
    pub stale_grace_secs: u64,
    /// Remember "kid not found" this long.
    #[serde(default = "default_negative_ttl")]
    pub negative_ttl_secs: u64,
    /// At most one unknown-kid refetch per member per this interval.
    #[serde(default = "default_refetch_interval")]
    pub refetch_min_interval_ms: u64,
    #[serde(default = "default_skew")]
    pub clock_skew_secs: u64,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MappingConfig {
    /// A mapping table file replacing the embedded reference table as this
    /// member's home ↔ interchange table.
    pub table: Option<PathBuf>,
    /// Further tables (other members' home frameworks, older versions)
    /// that translations received from peers are recomputed with (SPEC §3).
    #[serde(default)]
    pub tables: Vec<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeliveryConfig {
    pub initial_backoff_ms: u64,
    pub max_backoff_ms: u64,
    pub dead_letter_after_secs: u64,
    pub breaker_failure_threshold: u32,
    pub breaker_open_ms: u64,
    pub batch_size: usize,
    pub request_timeout_ms: u64,
    /// Per-destination delivery lease TTL (SPEC §5): a replica killed with
    /// -9 stops blocking its destinations this long after its last renewal.
    /// Renewed every third of it; at least 500.
    pub lease_ttl_ms: u64,
    /// Most envelopes sent to a peer in one batch request (1..=256; 1 sends
    /// single envelopes only). Batches are also capped at 4 MiB.
    pub peer_batch_max: usize,
}

/// Default `peer_batch_max`: the protocol's largest batch. Measured against
/// 64 (docs/performance.md): 64 lowered the accept p99 at peak (37 → 30 ms,
/// median of five bench runs, both gateways on two cores) but delivery fell
/// behind acceptance at peak, so end-to-end throughput dropped; 256 keeps
/// delivery in step with acceptance.
pub const DEFAULT_PEER_BATCH_MAX: usize = crate::wire::MAX_BATCH_ENVELOPES;

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            initial_backoff_ms: 200,
            max_backoff_ms: 30_000,
            dead_letter_after_secs: 7 * 24 * 3600,
            breaker_failure_threshold: 5,
            breaker_open_ms: 5_000,
            batch_size: 64,
            request_timeout_ms: 10_000,
            lease_ttl_ms: 5_000,
            peer_batch_max: DEFAULT_PEER_BATCH_MAX,
        }
    }
}

/// Signed audit checkpoints (SPEC §5, docs/trust.md "Audit checkpoints").
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// Sign a checkpoint of the audit head this often while it moves
    /// (1..=60: the contract requires at least one a minute).
    pub checkpoint_interval_secs: u64,
    /// Fetch and keep every peer's latest checkpoint this often.
    pub witness_interval_secs: u64,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            checkpoint_interval_secs: 60,
            witness_interval_secs: 60,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    /// Base URL of the peer gateway, e.g. `https://127.0.0.1:7444`.
    pub url: String,
    /// The peer's pinned federation public key (JWK file).
    pub federation_key: PathBuf,
}

fn default_metrics_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9464))
}
fn default_keyset_ttl() -> u64 {
    24 * 3600
}
fn default_refresh_ahead() -> u64 {
    300
}
fn default_stale_grace() -> u64 {
    3600
}
fn default_negative_ttl() -> u64 {
    5
}
fn default_refetch_interval() -> u64 {
    1000
}
fn default_skew() -> u64 {
    60
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("invalid config {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{field}: cannot read {path}: {source}")]
    File {
        field: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("environment variable {var}: {message}")]
    Env { var: String, message: String },
    #[error("invalid config {path}: {field}: {message}")]
    Invalid {
        path: PathBuf,
        field: String,
        message: String,
    },
}

impl Config {
    /// Reads `path`, applies `BASHU_*` overrides from the process environment,
    /// resolves relative paths against the file's directory and validates the
    /// values. Referenced files are not opened: see [`Config::check_files`].
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::load_with_env(path, std::env::vars())
    }

    /// [`Config::load`] followed by [`Config::check_files`]: what a gateway
    /// about to serve needs.
    pub fn load_checked(path: &Path) -> Result<Self, ConfigError> {
        let cfg = Self::load(path)?;
        cfg.check_files()?;
        Ok(cfg)
    }

    /// Every file the gateway reads at start (TLS material, key store,
    /// federation keys, mapping table) exists and is readable.
    pub fn check_files(&self) -> Result<(), ConfigError> {
        validate::check_files(self)
    }

    /// [`Config::load`] with an explicit environment (tests, tooling).
    pub fn load_with_env<I>(path: &Path, vars: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = (String, String)>,
    {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml_str(&text, path, vars)
    }

    /// [`Config::load_with_env`] on text already read from `path`: `path`
    /// only names the file in errors and its directory resolves relative
    /// paths. No file is read, so the fuzz target `config` uses this.
    pub fn from_toml_str<I>(text: &str, path: &Path, vars: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = (String, String)>,
    {
        let parse_err = |e: &dyn std::fmt::Display| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        };
        let mut doc: toml::Table = toml::from_str(text).map_err(|e| parse_err(&e))?;
        let applied = env::apply(&mut doc, vars)?;
        if !applied.is_empty() {
            tracing::info!(applied = %applied.join(","), "config overridden from the environment");
        }
        let mut cfg: Config = toml::Value::Table(doc).try_into().map_err(|e| parse_err(&e))?;
        let base = path.parent().unwrap_or_else(|| Path::new("."));
        cfg.resolve_paths(base);
        cfg.source = Some(path.to_owned());
        validate::validate(&cfg, path)?;
        Ok(cfg)
    }

    fn resolve_paths(&mut self, base: &Path) {
        let abs = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        abs(&mut self.data_dir);
        abs(&mut self.tls.ca);
        abs(&mut self.tls.cert);
        abs(&mut self.tls.key);
        self.tls.crls.iter_mut().for_each(abs);
        abs(&mut self.trust.keystore);
        abs(&mut self.trust.federation_key);
        if let Some(t) = self.mapping.table.as_mut() {
            abs(t);
        }
        self.mapping.tables.iter_mut().for_each(abs);
        for peer in self.peers.values_mut() {
            abs(&mut peer.federation_key);
        }
    }
}

#[cfg(test)]
mod tests;
