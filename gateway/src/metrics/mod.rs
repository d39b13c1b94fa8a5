//! Prometheus metrics and the plain-HTTP health/metrics listener.
//!
//! Everything registers in [`prometheus::default_registry`]; other modules
//! declare their own metrics as `LazyLock` statics registered there, and
//! [`serve`] exposes whatever is registered. The listener speaks plain HTTP
//! and is meant for loopback (config validation enforces that unless the
//! operator opts out), so it carries no secrets: no payloads, no identities
//! beyond member/role labels.

mod http_metrics;
mod server;

pub use http_metrics::{observe_http, observe_tls_handshake_failure, set_open_connections};
pub use server::{ready_probe, serve, ReadyProbe};

use prometheus::core::Collector;

/// Registers `collector` in the default registry and returns it.
///
/// Registration only fails for a duplicate name, which is a programming
/// error caught by the tests; it is logged rather than aborting the process.
pub fn register<C: Collector + Clone + 'static>(collector: C) -> C {
    if let Err(err) = prometheus::default_registry().register(Box::new(collector.clone())) {
        tracing::error!(%err, "metric registration failed");
    }
    collector
}

/// The default registry in the Prometheus text format.
pub fn render() -> String {
    let families = prometheus::default_registry().gather();
    let mut out = String::new();
    if let Err(err) = prometheus::TextEncoder::new().encode_utf8(&families, &mut out) {
        tracing::error!(%err, "metrics encoding failed");
    }
    out
}
