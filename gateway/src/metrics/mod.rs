//! Prometheus metrics: a leaf module every other module records into.
//!
//! Everything registers in [`prometheus::default_registry`]; other modules
//! declare their own metrics as `LazyLock` statics registered there, and
//! [`render`] prints whatever is registered for the operations listener
//! (`api::serve_ops`). Labels carry no secrets: no payloads, no identities
//! beyond member/role labels.

mod http_metrics;

pub use http_metrics::{observe_http, observe_tls_handshake_failure, set_open_connections};

use prometheus::core::Collector;
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
};

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

// Metric definitions are constants (name, help, labels, buckets); the only
// way their construction fails is an invalid constant, which each module's
// unit test catches by touching every metric it defines. So the helpers
// below treat a failure as a bug, not as a run-time condition.

/// A counter family, registered.
#[allow(clippy::expect_used)]
pub fn counter_vec(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    register(IntCounterVec::new(Opts::new(name, help), labels).expect("constant metric definition"))
}

/// A gauge family, registered.
#[allow(clippy::expect_used)]
pub fn gauge_vec(name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    register(IntGaugeVec::new(Opts::new(name, help), labels).expect("constant metric definition"))
}

/// A histogram family, registered.
#[allow(clippy::expect_used)]
pub fn histogram_vec(name: &str, help: &str, labels: &[&str], buckets: Vec<f64>) -> HistogramVec {
    register(
        HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels)
            .expect("constant metric definition"),
    )
}

/// A counter without labels, registered.
#[allow(clippy::expect_used)]
pub fn counter(name: &str, help: &str) -> IntCounter {
    register(IntCounter::new(name, help).expect("constant metric definition"))
}

/// A gauge without labels, registered.
#[allow(clippy::expect_used)]
pub fn gauge(name: &str, help: &str) -> IntGauge {
    register(IntGauge::new(name, help).expect("constant metric definition"))
}

/// A histogram without labels, registered.
#[allow(clippy::expect_used)]
pub fn histogram(name: &str, help: &str, buckets: Vec<f64>) -> Histogram {
    register(
        Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))
            .expect("constant metric definition"),
    )
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
