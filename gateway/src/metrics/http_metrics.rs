//! Metrics of the mTLS API listener.

use super::{counter, counter_vec, gauge, histogram_vec};
use prometheus::{HistogramVec, IntCounter, IntCounterVec, IntGauge};
use std::sync::LazyLock;
use std::time::Duration;

static REQUESTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "bashu_http_requests_total",
        "API requests by route pattern, method and status",
        &["route", "method", "status"],
    )
});

static LATENCY: LazyLock<HistogramVec> = LazyLock::new(|| {
    histogram_vec(
        "bashu_http_request_duration_seconds",
        "API request latency by route pattern and method",
        &["route", "method"],
        vec![
            0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ],
    )
});

static HANDSHAKE_FAILURES: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        "bashu_tls_handshake_failures_total",
        "Inbound TLS handshakes that failed (no or untrusted client certificate, timeouts)",
    )
});

static OPEN_CONNECTIONS: LazyLock<IntGauge> = LazyLock::new(|| {
    gauge(
        "bashu_api_open_connections",
        "Open connections on the mTLS API listener",
    )
});

/// Records one finished API request. `route` is the route pattern (never the
/// concrete path, which would make label cardinality unbounded).
pub fn observe_http(route: &str, method: &str, status: u16, elapsed: Duration) {
    let status = status.to_string();
    REQUESTS.with_label_values(&[route, method, &status]).inc();
    LATENCY
        .with_label_values(&[route, method])
        .observe(elapsed.as_secs_f64());
}

pub fn observe_tls_handshake_failure() {
    HANDSHAKE_FAILURES.inc();
}

pub fn set_open_connections(open: i64) {
    OPEN_CONNECTIONS.set(open);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_constructible_and_rendered() {
        observe_http("/healthz", "GET", 200, Duration::from_millis(3));
        observe_tls_handshake_failure();
        set_open_connections(1);
        let text = super::super::render();
        assert!(text.contains("bashu_http_requests_total{method=\"GET\",route=\"/healthz\",status=\"200\"}"));
        assert!(text.contains("bashu_tls_handshake_failures_total"));
        assert!(text.contains("bashu_api_open_connections"));
    }
}
