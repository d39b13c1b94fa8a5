//! Trust-cache metrics, registered in `prometheus::default_registry()`.
//! Labelled by member id only: pinned members are a small, fixed set, so
//! no caller can grow the label space.

use prometheus::{IntCounterVec, IntGaugeVec};
use std::sync::LazyLock;

/// Key-set fetch attempts by `member` and `outcome` (see [`FetchOutcome`]).
pub static FETCHES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    crate::metrics::counter_vec(
        "bashu_trust_fetches_total",
        "Trust key-set fetch attempts by member and outcome.",
        &["member", "outcome"],
    )
});

/// `seq` of the key set currently served per member.
pub static KEYSET_SEQ: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    crate::metrics::gauge_vec(
        "bashu_trust_keyset_seq",
        "Seq of the trust key set currently served per member.",
        &["member"],
    )
});

/// Lookups answered from a set past its `exp`, within the stale grace.
pub static STALE_SERVED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    crate::metrics::counter_vec(
        "bashu_trust_stale_served_total",
        "Key lookups answered from an expired key set within the stale grace.",
        &["member"],
    )
});

/// Fetches started because a credential named a kid the cached set lacks.
pub static UNKNOWN_KID_REFETCH: LazyLock<IntCounterVec> = LazyLock::new(|| {
    crate::metrics::counter_vec(
        "bashu_trust_unknown_kid_refetch_total",
        "Key-set fetches caused by an unknown kid (after single flight and rate limit).",
        &["member"],
    )
});

/// How one fetch attempt ended; the `outcome` label of [`FETCHES`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchOutcome {
    /// Verified and installed.
    Ok,
    /// The peer could not be reached (or has no key-set source).
    Unreachable,
    /// Bad signature, wrong `typ`/`iss`, malformed payload, issued in the future.
    Invalid,
    /// `seq` lower than the recorded high-water mark.
    Rollback,
    /// `exp` already passed.
    Expired,
    /// Verified, but the new rollback mark could not be recorded durably.
    MarkFailed,
}

impl FetchOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            FetchOutcome::Ok => "ok",
            FetchOutcome::Unreachable => "unreachable",
            FetchOutcome::Invalid => "invalid",
            FetchOutcome::Rollback => "rollback",
            FetchOutcome::Expired => "expired",
            FetchOutcome::MarkFailed => "mark_failed",
        }
    }
}

pub(crate) fn fetched(member: &str, outcome: FetchOutcome) {
    FETCHES.with_label_values(&[member, outcome.as_str()]).inc();
}

pub(crate) fn serving_seq(member: &str, seq: u64) {
    KEYSET_SEQ
        .with_label_values(&[member])
        .set(i64::try_from(seq).unwrap_or(i64::MAX));
}

pub(crate) fn stale_served(member: &str) {
    STALE_SERVED.with_label_values(&[member]).inc();
}

pub(crate) fn unknown_kid_refetch(member: &str) {
    UNKNOWN_KID_REFETCH.with_label_values(&[member]).inc();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_defined_and_registered() {
        fetched("zzunit", FetchOutcome::MarkFailed);
        serving_seq("zzunit", u64::MAX);
        stale_served("zzunit");
        unknown_kid_refetch("zzunit");
        assert_eq!(KEYSET_SEQ.with_label_values(&["zzunit"]).get(), i64::MAX);
        let names: Vec<String> = prometheus::default_registry()
            .gather()
            .iter()
            .map(|f| f.get_name().to_owned())
            .collect();
        for expected in [
            "bashu_trust_fetches_total",
            "bashu_trust_keyset_seq",
            "bashu_trust_stale_served_total",
            "bashu_trust_unknown_kid_refetch_total",
        ] {
            assert!(
                names.iter().any(|n| n == expected),
                "{expected} missing from {names:?}"
            );
        }
    }
}
