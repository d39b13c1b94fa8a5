//! Durable rollback marks: a key set older than one accepted before a
//! restart is still refused after it; the mark is recorded before the set is
//! served; a mark that cannot be recorded keeps the previous set; the marks
//! file is replaced atomically and a corrupt one stops the start.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

mod trust_support;

use bashu_gateway::trust::metrics::FETCHES;
use bashu_gateway::trust::{
    FileSeqMarks, LookupError, MemorySeqMarks, SeqMarks, SeqMarksError, TrustCache, TrustCacheConfig,
};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use trust_support::*;

fn eager() -> TrustCacheConfig {
    TrustCacheConfig {
        refetch_min_interval_ms: 0,
        ..TrustCacheConfig::default()
    }
}

/// A cache over `fed`'s members, fetcher and clock: what a gateway
/// restarted against the same federation builds.
fn cache_over(fed: &Fed) -> TrustCache {
    let pinned = fed
        .members
        .iter()
        .map(|(id, m)| (id.clone(), m.fed.verifying_key().clone()))
        .collect();
    TrustCache::with_clock(eager(), pinned, fed.fetcher.clone(), fed.clock.clone())
}

fn restart(fed: &Fed, data_dir: &Path) -> TrustCache {
    let marks = FileSeqMarks::in_data_dir(data_dir).unwrap();
    cache_over(fed).with_seq_marks(Arc::new(marks)).unwrap()
}

/// Two sets of `cq`, both unexpired at T0: (older, newer).
fn two_sets(fed: &mut Fed) -> (String, String) {
    let older = fed.member("cq").publish(T0);
    let newer = fed.member("cq").publish(T0);
    (older, newer)
}

#[tokio::test]
async fn rollback_after_restart_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut fed = Fed::new();
    let (older, newer) = two_sets(&mut fed);

    let before = restart(&fed, dir.path());
    fed.fetcher.put("cq", newer);
    let seq = before.refresh("cq").await.unwrap();

    // The gateway restarts; an attacker replays the older, unexpired set.
    let after = restart(&fed, dir.path());
    fed.fetcher.put("cq", older.clone());
    let err = after.refresh("cq").await.unwrap_err();
    assert!(err.to_string().contains("rollback"), "{err}");
    assert!(
        err.to_string().contains(&format!("seq {seq} already seen")),
        "{err}"
    );
    assert!(after.cached_set("cq").await.is_none());
    // Lookups fail closed instead of using the replayed set.
    let kid = fed.members["cq"].issuer.kid().to_owned();
    assert!(matches!(
        after.key("cq", &kid).await.unwrap_err(),
        LookupError::Unavailable { .. }
    ));

    // Control: without durable marks the replay would have been accepted.
    let forgetful = cache_over(&fed);
    assert!(forgetful.refresh("cq").await.unwrap() < seq);
}

#[tokio::test]
async fn equal_seq_refetch_after_restart_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let mut fed = Fed::new();
    let (_, newer) = two_sets(&mut fed);
    fed.fetcher.put("cq", newer);
    let seq = restart(&fed, dir.path()).refresh("cq").await.unwrap();

    let after = restart(&fed, dir.path());
    assert_eq!(after.refresh("cq").await.unwrap(), seq);
    // And again on the same cache.
    assert_eq!(after.refresh("cq").await.unwrap(), seq);
    assert_eq!(after.cached_set("cq").await.unwrap().seq, seq);
}

/// Remembers, at each `record`, which seq the cache was serving then.
#[derive(Default)]
struct WitnessMarks {
    inner: MemorySeqMarks,
    cache: OnceLock<TrustCache>,
    serving_at_record: Mutex<Vec<(u64, Option<u64>)>>,
}

impl SeqMarks for WitnessMarks {
    fn load(&self) -> Result<HashMap<String, u64>, SeqMarksError> {
        self.inner.load()
    }

    fn record(&self, member: &str, seq: u64) -> Result<(), SeqMarksError> {
        let cache = self.cache.get().expect("cache attached");
        let serving = futures::executor::block_on(cache.cached_set(member)).map(|s| s.seq);
        self.serving_at_record.lock().unwrap().push((seq, serving));
        self.inner.record(member, seq)
    }
}

#[tokio::test]
async fn the_mark_is_recorded_before_the_set_is_served() {
    let mut fed = Fed::new();
    let (older, newer) = two_sets(&mut fed);
    let marks = Arc::new(WitnessMarks::default());
    let cache = cache_over(&fed).with_seq_marks(marks.clone()).unwrap();
    assert!(marks.cache.set(cache.clone()).is_ok());

    fed.fetcher.put("cq", older);
    let first = cache.refresh("cq").await.unwrap();
    fed.fetcher.put("cq", newer);
    let second = cache.refresh("cq").await.unwrap();
    cache.refresh("cq").await.unwrap(); // equal seq: no new record

    assert_eq!(
        *marks.serving_at_record.lock().unwrap(),
        vec![(first, None), (second, Some(first))]
    );
    assert_eq!(marks.inner.get("cq"), Some(second));
}

#[tokio::test]
async fn a_mark_that_cannot_be_recorded_keeps_the_previous_set() {
    let mut fed = Fed::new();
    let (older, newer) = two_sets(&mut fed);
    let marks = Arc::new(MemorySeqMarks::new());
    let cache = cache_over(&fed).with_seq_marks(marks.clone()).unwrap();
    let failed = || FETCHES.with_label_values(&["cq", "mark_failed"]).get();
    let failed_before = failed();

    // Nothing cached yet: fail closed.
    marks.set_failing(true);
    fed.fetcher.put("cq", older);
    let err = cache.refresh("cq").await.unwrap_err();
    assert!(err.to_string().contains("not recorded"), "{err}");
    assert!(cache.cached_set("cq").await.is_none());

    marks.set_failing(false);
    let first = cache.refresh("cq").await.unwrap();

    // A newer set whose mark cannot be recorded is not served.
    marks.set_failing(true);
    fed.fetcher.put("cq", newer);
    assert!(cache.refresh("cq").await.is_err());
    assert_eq!(cache.cached_set("cq").await.unwrap().seq, first);
    assert_eq!(marks.get("cq"), Some(first));
    assert_eq!(failed() - failed_before, 2);

    // Once recording works again, the newer set is taken.
    marks.set_failing(false);
    let second = cache.refresh("cq").await.unwrap();
    assert!(second > first);
    assert_eq!(marks.get("cq"), Some(second));
}

#[test]
fn marks_file_is_replaced_atomically_and_reloaded() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("trust-marks.json");
    let marks = FileSeqMarks::in_data_dir(dir.path()).unwrap();
    assert!(marks.load().unwrap().is_empty(), "no file yet: no marks");
    marks.record("cq", 42).unwrap();
    let first = std::fs::metadata(&path).unwrap();
    marks.record("sc", 7).unwrap();
    marks.record("cq", 41).unwrap(); // never lowers a mark

    let on_disk: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(on_disk, serde_json::json!({"cq": 42, "sc": 7}));
    // Replaced by rename (a new inode), not rewritten in place, private,
    // and no temporary file left behind.
    #[cfg(unix)]
    {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let last = std::fs::metadata(&path).unwrap();
        assert_ne!(last.ino(), first.ino());
        assert_eq!(last.permissions().mode() & 0o777, 0o600);
    }
    #[cfg(not(unix))]
    let _ = first;
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("trust-marks.json")]);

    let reopened = FileSeqMarks::open(&path).unwrap();
    assert_eq!(
        reopened.load().unwrap(),
        HashMap::from([("cq".to_owned(), 42), ("sc".to_owned(), 7)])
    );
}

#[tokio::test]
async fn a_corrupt_marks_file_is_a_startup_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("trust-marks.json");
    let fed = Fed::new();
    for corrupt in [
        &b"{\"cq\": 4"[..],
        b"",
        b"{\"cq\": -1}",
        b"{\"cq\": 1, \"cq\": 2}",
    ] {
        std::fs::write(&path, corrupt).unwrap();
        let err = FileSeqMarks::in_data_dir(dir.path()).unwrap_err();
        assert!(matches!(err, SeqMarksError::Corrupt { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        assert!(msg.contains("refusing to start"), "{msg}");
    }

    // Corrupted after opening: attaching it to a cache fails the same way.
    std::fs::write(&path, b"{}").unwrap();
    let marks = FileSeqMarks::in_data_dir(dir.path()).unwrap();
    std::fs::write(&path, b"not json").unwrap();
    let err = cache_over(&fed).with_seq_marks(Arc::new(marks)).unwrap_err();
    assert!(matches!(err, SeqMarksError::Corrupt { .. }), "{err:?}");
}

#[test]
fn marks_must_be_attached_before_the_cache_is_shared() {
    let fed = Fed::new();
    let cache = cache_over(&fed);
    let _shared = cache.clone();
    let err = cache.with_seq_marks(Arc::new(MemorySeqMarks::new())).unwrap_err();
    assert!(matches!(err, SeqMarksError::CacheShared), "{err:?}");
}
