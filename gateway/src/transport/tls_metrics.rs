//! Metrics of the listener's TLS configuration, registered in the default
//! registry. Labels are a fixed reason set and the configured CRL files.

use super::crl::CrlSet;
use prometheus::{IntCounterVec, IntGaugeVec};
use std::sync::LazyLock;

/// Reloads refused (the previous configuration stayed), by [`super::TlsError::reason`].
static RELOAD_FAILURES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    crate::metrics::counter_vec(
        "bashu_tls_reload_failures_total",
        "TLS configuration reloads refused (the previous configuration stays in force), by reason.",
        &["reason"],
    )
});

/// `nextUpdate` of each CRL in force; alert well before `time()` reaches it.
static CRL_NEXT_UPDATE: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    crate::metrics::gauge_vec(
        "bashu_tls_crl_next_update_timestamp_seconds",
        "nextUpdate (Unix seconds) of each CRL in force; from then on the clients of its CA are refused.",
        &["file"],
    )
});

pub(super) fn reload_failed(reason: &str) {
    RELOAD_FAILURES.with_label_values(&[reason]).inc();
}

/// Replaces the per-CRL gauges with those of the configuration now in force.
pub(super) fn crls_in_force(set: &CrlSet) {
    CRL_NEXT_UPDATE.reset();
    for entry in set.entries() {
        CRL_NEXT_UPDATE
            .with_label_values(&[&entry.path.display().to_string()])
            .set(entry.next_update);
    }
}

#[cfg(test)]
pub(super) fn reload_failures(reason: &str) -> u64 {
    RELOAD_FAILURES.with_label_values(&[reason]).get()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_defined_and_registered() {
        reload_failed("zzunit");
        assert!(reload_failures("zzunit") >= 1);
        crls_in_force(&CrlSet::default());
        let names: Vec<String> = prometheus::default_registry()
            .gather()
            .iter()
            .map(|f| f.get_name().to_owned())
            .collect();
        assert!(
            names.iter().any(|n| n == "bashu_tls_reload_failures_total"),
            "{names:?}"
        );
    }
}
