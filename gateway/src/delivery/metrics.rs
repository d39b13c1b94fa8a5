//! Delivery metrics, registered in `prometheus::default_registry()`.

use prometheus::{IntCounterVec, IntGaugeVec, Opts};
use std::sync::LazyLock;

/// Delivery attempts by `peer` and `outcome` (`delivered`, `rejected`, `transient`).
pub static ATTEMPTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "bashu_delivery_attempts_total",
        "Envelope delivery attempts by peer and outcome.",
        &["peer", "outcome"],
    )
});

/// Attempts that repeat an earlier failed attempt of the same item.
pub static RETRIES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "bashu_delivery_retries_total",
        "Delivery attempts that retry an earlier failure.",
        &["peer"],
    )
});

pub static DEAD_LETTERED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "bashu_delivery_dead_lettered_total",
        "Exchanges dead-lettered after the configured age.",
        &["peer"],
    )
});

/// 0 closed, 1 open, 2 half-open.
pub static BREAKER_STATE: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    gauge(
        "bashu_delivery_breaker_state",
        "Circuit breaker state per peer: 0 closed, 1 open, 2 half-open.",
        &["peer"],
    )
});

pub static OUTBOX_DEPTH: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    gauge(
        "bashu_outbox_depth",
        "Exchanges waiting in the outbox per destination.",
        &["peer"],
    )
});

// The names, help texts and labels above are constants checked by the unit
// test below, so construction cannot fail at run time; a failed
// registration (a duplicate name) only costs exposure, not delivery.
#[allow(clippy::expect_used)]
fn counter(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let metric = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric definition");
    register(Box::new(metric.clone()), name);
    metric
}

#[allow(clippy::expect_used)]
fn gauge(name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let metric = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric definition");
    register(Box::new(metric.clone()), name);
    metric
}

fn register(metric: Box<dyn prometheus::core::Collector>, name: &str) {
    if let Err(e) = prometheus::default_registry().register(metric) {
        tracing::warn!(metric = name, error = %e, "cannot register delivery metric");
    }
}

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
        ] {
            assert!(
                names.iter().any(|n| n == expected),
                "{expected} missing from {names:?}"
            );
        }
    }
}
