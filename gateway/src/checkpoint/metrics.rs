//! Checkpoint metrics, registered in `prometheus::default_registry()`.
//! Labels are fixed outcome names and configured peer member ids only.

use prometheus::{IntCounterVec, IntGauge, IntGaugeVec};
use std::sync::LazyLock;

/// Signing rounds that did something, by `outcome`: `signed`, `refused`
/// (the chain contradicts the last checkpoint: alert on this) or `failed`.
pub static CHECKPOINTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    crate::metrics::counter_vec(
        "bashu_audit_checkpoints_total",
        "Audit checkpoint signing rounds by outcome (signed, refused, failed).",
        &["outcome"],
    )
});

/// `seq` of the latest own checkpoint signed by this process.
pub static CHECKPOINT_SEQ: LazyLock<IntGauge> = LazyLock::new(|| {
    crate::metrics::gauge(
        "bashu_audit_checkpoint_seq",
        "Audit seq covered by the latest checkpoint this gateway signed.",
    )
});

/// Witness fetches by `member` and `outcome`: `new`, `unchanged`,
/// `contradiction` (lower seq, or another head at the same seq: alert on
/// this) or `failed`.
pub static WITNESS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    crate::metrics::counter_vec(
        "bashu_audit_witness_total",
        "Peer audit checkpoint fetches by member and outcome (new, unchanged, contradiction, failed).",
        &["member", "outcome"],
    )
});

/// `seq` of the latest checkpoint witnessed per peer.
pub static WITNESSED_SEQ: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    crate::metrics::gauge_vec(
        "bashu_audit_witnessed_seq",
        "Audit seq covered by the latest checkpoint witnessed per peer.",
        &["member"],
    )
});

pub(super) fn seq_value(seq: u64) -> i64 {
    i64::try_from(seq).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_is_constructible() {
        CHECKPOINTS.with_label_values(&["signed"]).inc();
        CHECKPOINT_SEQ.set(1);
        WITNESS.with_label_values(&["sc", "new"]).inc();
        WITNESSED_SEQ.with_label_values(&["sc"]).set(1);
    }
}
