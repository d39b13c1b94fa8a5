//! Delivery metrics, registered in `prometheus::default_registry()`.

use prometheus::{IntCounterVec, IntGaugeVec};
use std::sync::LazyLock;

/// Delivery attempts by `peer` and `outcome` (`delivered`, `rejected`, `transient`).
pub static ATTEMPTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    crate::metrics::counter_vec(
        "bashu_delivery_attempts_total",
        "Envelope delivery attempts by peer and outcome.",
        &["peer", "outcome"],
    )
});

/// Attempts that repeat an earlier failed attempt of the same item.
pub static RETRIES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    crate::metrics::counter_vec(
        "bashu_delivery_retries_total",
        "Delivery attempts that retry an earlier failure.",
        &["peer"],
    )
});

pub static DEAD_LETTERED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    crate::metrics::counter_vec(
        "bashu_delivery_dead_lettered_total",
        "Exchanges dead-lettered after the configured age.",
        &["peer"],
    )
});

/// 0 closed, 1 open, 2 half-open.
pub static BREAKER_STATE: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    crate::metrics::gauge_vec(
        "bashu_delivery_breaker_state",
        "Circuit breaker state per peer: 0 closed, 1 open, 2 half-open.",
        &["peer"],
    )
});

pub static OUTBOX_DEPTH: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    crate::metrics::gauge_vec(
        "bashu_outbox_depth",
        "Exchanges waiting in the outbox per destination.",
        &["peer"],
    )
});

/// 1 while this process holds the destination's delivery lease, else 0.
pub static LEASE_HELD: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    crate::metrics::gauge_vec(
        "bashu_delivery_lease_held",
        "1 while this replica holds the delivery lease of the destination, else 0.",
        &["destination"],
    )
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_defined_and_registered() {
        ATTEMPTS.with_label_values(&["zz", "delivered"]).inc();
        RETRIES.with_label_values(&["zz"]).inc();
        DEAD_LETTERED.with_label_values(&["zz"]).inc();
        BREAKER_STATE.with_label_values(&["zz"]).set(1);
        OUTBOX_DEPTH.with_label_values(&["zz"]).set(3);
        LEASE_HELD.with_label_values(&["zz"]).set(1);
        let names: Vec<String> = prometheus::default_registry()
            .gather()
            .iter()
            .map(|f| f.get_name().to_owned())
            .collect();
        for expected in [
            "bashu_delivery_attempts_total",
            "bashu_delivery_retries_total",
            "bashu_delivery_dead_lettered_total",
            "bashu_delivery_breaker_state",
            "bashu_outbox_depth",
            "bashu_delivery_lease_held",
        ] {
            assert!(
                names.iter().any(|n| n == expected),
                "{expected} missing from {names:?}"
            );
        }
    }
}
