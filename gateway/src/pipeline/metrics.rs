//! Pipeline metrics, registered in the process-wide Prometheus registry.

use crate::metrics::{counter_vec, histogram};
use prometheus::{Histogram, IntCounterVec};
use std::sync::LazyLock;
use std::time::Duration;

static EXCHANGES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "bashu_exchanges_total",
        "Exchanges by pipeline event (accepted at the origin, received at the destination)",
        &["event"],
    )
});

static ACCEPT_LATENCY: LazyLock<Histogram> = LazyLock::new(|| {
    histogram(
        "bashu_accept_duration_seconds",
        "Time from a parsed submission to its exchange being durably accepted",
        vec![0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0],
    )
});

pub(super) fn exchange_event(event: &str) {
    EXCHANGES.with_label_values(&[event]).inc();
}

pub(super) fn observe_accept(elapsed: Duration) {
    ACCEPT_LATENCY.observe(elapsed.as_secs_f64());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_defined_and_registered() {
        exchange_event("unit-test");
        observe_accept(Duration::from_millis(3));
        let names: Vec<String> = prometheus::default_registry()
            .gather()
            .iter()
            .map(|f| f.get_name().to_owned())
            .collect();
        assert!(names.iter().any(|n| n == "bashu_exchanges_total"));
        assert!(names.iter().any(|n| n == "bashu_accept_duration_seconds"));
    }
}
