//! Start-up validation, with the offending key named in the error.
//!
//! [`validate`] checks values and runs on every load; [`check_files`] checks
//! that referenced files are readable and runs only where they are needed
//! (`bashu serve`), since tools such as `bashu keys generate` load a config
//! whose key store does not exist yet.

use super::{Config, ConfigError};
use crate::ids::is_member_id;
use std::path::Path;

/// Shortest `delivery.lease_ttl_ms`.
pub const MIN_LEASE_TTL_MS: u64 = 500;

/// Collects the first failure with its field name.
struct Check<'a> {
    path: &'a Path,
}

impl Check<'_> {
    fn fail(&self, field: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.to_owned(),
            field: field.into(),
            message: message.into(),
        }
    }

    fn positive(&self, field: &str, value: u64) -> Result<(), ConfigError> {
        if value == 0 {
            return Err(self.fail(field, "must be greater than 0"));
        }
        Ok(())
    }
}

pub(super) fn validate(cfg: &Config, path: &Path) -> Result<(), ConfigError> {
    let c = Check { path };
    if !is_member_id(&cfg.member) {
        return Err(c.fail(
            "member",
            format!("{:?} is not a member id (a-z0-9, 2-16)", cfg.member),
        ));
    }
    if cfg.framework.trim().is_empty() {
        return Err(c.fail("framework", "must not be empty"));
    }
    if cfg.data_dir.exists() && !cfg.data_dir.is_dir() {
        return Err(c.fail(
            "data_dir",
            format!("{} is not a directory", cfg.data_dir.display()),
        ));
    }

    if !cfg.listen.metrics.ip().is_loopback() && !cfg.listen.allow_public_metrics {
        return Err(c.fail(
            "listen.metrics",
            format!(
                "{} is not a loopback address; the metrics listener is plain HTTP \
                 (set listen.allow_public_metrics = true to expose it anyway)",
                cfg.listen.metrics
            ),
        ));
    }
    if cfg.listen.metrics == cfg.listen.api {
        return Err(c.fail("listen.metrics", "must differ from listen.api"));
    }

    let l = &cfg.limits;
    c.positive("limits.max_body_bytes", l.max_body_bytes as u64)?;
    c.positive("limits.max_header_bytes", l.max_header_bytes as u64)?;
    c.positive("limits.request_timeout_ms", l.request_timeout_ms)?;
    c.positive("limits.max_connections", l.max_connections as u64)?;
    c.positive("limits.rate_per_second", u64::from(l.rate_per_second))?;
    c.positive("limits.rate_burst", u64::from(l.rate_burst))?;
    c.positive("limits.handshake_timeout_ms", l.handshake_timeout_ms)?;
    c.positive("limits.first_request_timeout_ms", l.first_request_timeout_ms)?;
    c.positive("limits.idle_timeout_ms", l.idle_timeout_ms)?;
    c.positive("limits.max_connections_per_ip", l.max_connections_per_ip as u64)?;
    c.positive(
        "limits.max_connections_per_identity",
        l.max_connections_per_identity as u64,
    )?;
    c.positive(
        "limits.unauthenticated_per_second",
        u64::from(l.unauthenticated_per_second),
    )?;
    c.positive("limits.unauthenticated_burst", u64::from(l.unauthenticated_burst))?;
    c.positive("limits.listen_backlog", u64::from(l.listen_backlog))?;

    let t = &cfg.trust;
    c.positive("trust.keyset_ttl_secs", t.keyset_ttl_secs)?;
    if t.keyset_ttl_secs > crate::wire::MAX_KEYSET_LIFETIME_SECS.unsigned_abs() {
        return Err(c.fail(
            "trust.keyset_ttl_secs",
            "must be at most 2592000 (30 days): longer-lived key sets are refused",
        ));
    }
    c.positive("trust.refetch_min_interval_ms", t.refetch_min_interval_ms)?;
    if t.refresh_ahead_secs >= t.keyset_ttl_secs {
        return Err(c.fail(
            "trust.refresh_ahead_secs",
            "must be less than trust.keyset_ttl_secs",
        ));
    }

    let d = &cfg.delivery;
    c.positive("delivery.initial_backoff_ms", d.initial_backoff_ms)?;
    c.positive("delivery.batch_size", d.batch_size as u64)?;
    c.positive("delivery.peer_batch_max", d.peer_batch_max as u64)?;
    if d.peer_batch_max > crate::wire::MAX_BATCH_ENVELOPES {
        return Err(c.fail(
            "delivery.peer_batch_max",
            "must be at most 256 (SPEC §4 batch limit)",
        ));
    }
    c.positive("delivery.request_timeout_ms", d.request_timeout_ms)?;
    c.positive("delivery.dead_letter_after_secs", d.dead_letter_after_secs)?;
    c.positive(
        "delivery.breaker_failure_threshold",
        u64::from(d.breaker_failure_threshold),
    )?;
    if d.lease_ttl_ms < MIN_LEASE_TTL_MS {
        return Err(c.fail(
            "delivery.lease_ttl_ms",
            format!("must be at least {MIN_LEASE_TTL_MS}: renewals every third of it must fit around store writes"),
        ));
    }
    if d.max_backoff_ms < d.initial_backoff_ms {
        return Err(c.fail(
            "delivery.max_backoff_ms",
            "must be at least delivery.initial_backoff_ms",
        ));
    }

    let a = &cfg.audit;
    if !(1..=60).contains(&a.checkpoint_interval_secs) {
        return Err(c.fail(
            "audit.checkpoint_interval_secs",
            "must be between 1 and 60 (SPEC §5: a checkpoint at least every 60 s)",
        ));
    }
    c.positive("audit.witness_interval_secs", a.witness_interval_secs)?;

    cfg.store
        .check()
        .map_err(|(field, message)| c.fail(field, message))?;

    for (id, peer) in &cfg.peers {
        if !is_member_id(id) || id == &cfg.member {
            return Err(c.fail("peers", format!("{id:?} is not a valid peer member id")));
        }
        check_peer_url(&peer.url).map_err(|m| c.fail(format!("peers.{id}.url"), m))?;
    }
    Ok(())
}

/// `https://host[:port]` with at most a trailing `/`: routes are appended.
fn check_peer_url(url: &str) -> Result<(), String> {
    let uri: http::Uri = url.parse().map_err(|_| format!("{url:?} is not a URL"))?;
    if uri.scheme_str() != Some("https") {
        return Err("must be an https:// URL".into());
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err("has no host".into());
    }
    if uri.query().is_some() || !matches!(uri.path(), "" | "/") {
        return Err("must be a base URL without path or query (routes are appended)".into());
    }
    if url.contains('@') {
        return Err("must not contain user information".into());
    }
    Ok(())
}

/// The file exists, is a regular file and can be opened for reading.
fn readable(field: &str, file: &Path) -> Result<(), ConfigError> {
    let err = |source| ConfigError::File {
        field: field.to_owned(),
        path: file.to_owned(),
        source,
    };
    let meta = std::fs::metadata(file).map_err(err)?;
    if !meta.is_file() {
        return Err(err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file",
        )));
    }
    std::fs::File::open(file).map_err(err)?;
    Ok(())
}

/// Every file the gateway reads at start: TLS material, key store,
/// federation keys, mapping table.
pub(super) fn check_files(cfg: &Config) -> Result<(), ConfigError> {
    readable("tls.ca", &cfg.tls.ca)?;
    readable("tls.cert", &cfg.tls.cert)?;
    readable("tls.key", &cfg.tls.key)?;
    for (i, crl) in cfg.tls.crls.iter().enumerate() {
        readable(&format!("tls.crls[{i}]"), crl)?;
    }
    readable("trust.keystore", &cfg.trust.keystore)?;
    readable("trust.federation_key", &cfg.trust.federation_key)?;
    for table in &cfg.mapping.tables {
        readable("mapping.tables", table)?;
    }
    if let Some(table) = &cfg.mapping.table {
        readable("mapping.table", table)?;
    }
    for (id, peer) in &cfg.peers {
        readable(&format!("peers.{id}.federation_key"), &peer.federation_key)?;
    }
    Ok(())
}
