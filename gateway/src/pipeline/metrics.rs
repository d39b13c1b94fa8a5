//! Pipeline metrics, registered in the process-wide Prometheus registry.

use prometheus::{Histogram, HistogramOpts, IntCounterVec, Opts};
use std::sync::LazyLock;
use std::time::Duration;

static EXCHANGES: LazyLock<Option<IntCounterVec>> = LazyLock::new(|| {
    let c = IntCounterVec::new(
        Opts::new(
            "bashu_exchanges_total",
            "Exchanges by pipeline event (accepted, received)",
        ),
        &["event"],
    )
    .ok()?;
    prometheus::default_registry()
        .register(Box::new(c.clone()))
        .ok()?;
    Some(c)
});

static ACCEPT_LATENCY: LazyLock<Option<Histogram>> = LazyLock::new(|| {
    let h = Histogram::with_opts(
        HistogramOpts::new(
            "bashu_accept_duration_seconds",
            "Time from request parsed to exchange durably accepted",
        )
        .buckets(vec![
            0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0,
        ]),
    )
    .ok()?;
    prometheus::default_registry()
        .register(Box::new(h.clone()))
        .ok()?;
    Some(h)
});

pub(super) fn exchange_event(event: &str) {
    if let Some(c) = EXCHANGES.as_ref() {
        c.with_label_values(&[event]).inc();
    }
}

pub(super) fn observe_accept(elapsed: Duration) {
    if let Some(h) = ACCEPT_LATENCY.as_ref() {
        h.observe(elapsed.as_secs_f64());
    }
}
