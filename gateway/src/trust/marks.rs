//! Durable rollback marks: the highest key-set `seq` accepted per member.
//!
//! SPEC §2 asks a gateway to refuse a key set whose `seq` is lower than one
//! it has seen. Held only in memory, that promise ends at a restart: an
//! older, still unexpired set (perhaps one still listing a since-revoked
//! key) could then be replayed by anyone in the network path. The trust
//! cache therefore records a member's new highest `seq` here before it
//! serves that set, and starts from the recorded marks after a restart.

use crate::ids::is_member_id;
use crate::jose::{atomic_file, json_strict};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

/// File name of the marks in the gateway's data directory.
pub const MARKS_FILE: &str = "trust-marks.json";

/// Why marks could not be loaded or recorded.
#[derive(Debug, thiserror::Error)]
pub enum SeqMarksError {
    #[error("cannot read trust rollback marks {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error(
        "trust rollback marks {path} are corrupt ({reason}); refusing to start without them \
         (restore the file from a backup, or delete it to relearn the marks from the peers)"
    )]
    Corrupt { path: PathBuf, reason: String },
    #[error("cannot write trust rollback marks {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("trust rollback marks unavailable: {0}")]
    Unavailable(String),
    #[error("rollback marks must be attached before the trust cache is shared")]
    CacheShared,
}

/// Where the per-member rollback marks live. `record` must be durable when
/// it returns `Ok`: the cache serves the set only afterwards.
pub trait SeqMarks: Send + Sync {
    /// All recorded marks, member id → highest accepted `seq`.
    fn load(&self) -> Result<HashMap<String, u64>, SeqMarksError>;

    /// Records `seq` as `member`'s highest accepted `seq`. A mark never goes
    /// down: recording a lower value than the stored one leaves it unchanged.
    fn record(&self, member: &str, seq: u64) -> Result<(), SeqMarksError>;
}

/// Marks in a JSON file (`{"cq": 42, "sc": 7}`), replaced atomically on
/// every change (temporary file, fsync, rename, directory fsync).
#[derive(Debug)]
pub struct FileSeqMarks {
    path: PathBuf,
    /// The file's content as last read or written. The lock is held across
    /// the write so concurrent records for different members cannot
    /// overwrite each other with stale maps.
    marks: Mutex<BTreeMap<String, u64>>,
}

impl FileSeqMarks {
    /// Opens the marks at `path`. A missing file means "no marks yet" (first
    /// start); an unreadable or malformed one is an error, never ignored.
    pub fn open(path: impl Into<PathBuf>) -> Result<Self, SeqMarksError> {
        let path = path.into();
        let marks = read(&path)?;
        Ok(Self {
            path,
            marks: Mutex::new(marks),
        })
    }

    /// Opens `<data_dir>/trust-marks.json`.
    pub fn in_data_dir(data_dir: &Path) -> Result<Self, SeqMarksError> {
        Self::open(data_dir.join(MARKS_FILE))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl SeqMarks for FileSeqMarks {
    fn load(&self) -> Result<HashMap<String, u64>, SeqMarksError> {
        let fresh = read(&self.path)?;
        let mut marks = self.marks.lock().unwrap_or_else(PoisonError::into_inner);
        marks.clone_from(&fresh);
        Ok(fresh.into_iter().collect())
    }

    fn record(&self, member: &str, seq: u64) -> Result<(), SeqMarksError> {
        let mut marks = self.marks.lock().unwrap_or_else(PoisonError::into_inner);
        if marks.get(member).is_some_and(|&m| m >= seq) {
            return Ok(());
        }
        let mut next = marks.clone();
        next.insert(member.to_owned(), seq);
        let mut text = serde_json::to_vec_pretty(&next).map_err(|e| SeqMarksError::Write {
            path: self.path.clone(),
            source: std::io::Error::other(e),
        })?;
        text.push(b'\n');
        atomic_file::write(&self.path, &text, 0o600).map_err(|source| SeqMarksError::Write {
            path: self.path.clone(),
            source,
        })?;
        *marks = next;
        Ok(())
    }
}

fn read(path: &Path) -> Result<BTreeMap<String, u64>, SeqMarksError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(source) => {
            return Err(SeqMarksError::Read {
                path: path.to_owned(),
                source,
            })
        }
    };
    parse(&bytes).map_err(|reason| SeqMarksError::Corrupt {
        path: path.to_owned(),
        reason,
    })
}

/// Strict parse: one JSON object of member id → non-negative integer, no
/// duplicate names (which would make the effective mark ambiguous).
fn parse(bytes: &[u8]) -> Result<BTreeMap<String, u64>, String> {
    let value = json_strict::parse(bytes).map_err(|e| e.to_string())?;
    let Value::Object(map) = value else {
        return Err("not a JSON object".into());
    };
    map.into_iter()
        .map(|(member, v)| {
            if !is_member_id(&member) {
                return Err(format!("{member:?} is not a member id"));
            }
            let seq = v
                .as_u64()
                .ok_or_else(|| format!("mark of {member} is not a non-negative integer"))?;
            Ok((member, seq))
        })
        .collect()
}

/// Marks held in memory (tests, embedded use). `set_failing(true)` makes
/// every `record` fail, to exercise the fail-closed path.
#[derive(Debug, Default)]
pub struct MemorySeqMarks {
    marks: Mutex<HashMap<String, u64>>,
    failing: std::sync::atomic::AtomicBool,
}

impl MemorySeqMarks {
    pub fn new() -> Self {
        Self::default()
    }

    /// While `true`, `record` fails and changes nothing.
    pub fn set_failing(&self, failing: bool) {
        self.failing.store(failing, std::sync::atomic::Ordering::SeqCst);
    }

    /// The recorded mark of `member`.
    pub fn get(&self, member: &str) -> Option<u64> {
        self.marks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(member)
            .copied()
    }
}

impl SeqMarks for MemorySeqMarks {
    fn load(&self) -> Result<HashMap<String, u64>, SeqMarksError> {
        Ok(self.marks.lock().unwrap_or_else(PoisonError::into_inner).clone())
    }

    fn record(&self, member: &str, seq: u64) -> Result<(), SeqMarksError> {
        if self.failing.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(SeqMarksError::Unavailable("injected failure".into()));
        }
        let mut marks = self.marks.lock().unwrap_or_else(PoisonError::into_inner);
        let mark = marks.entry(member.to_owned()).or_insert(seq);
        *mark = (*mark).max(seq);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_is_strict() {
        assert_eq!(parse(br#"{"cq":42,"sc":0}"#).unwrap().get("cq"), Some(&42));
        for bad in [
            &b""[..],
            b"[]",
            br#"{"cq":-1}"#,
            br#"{"cq":1.5}"#,
            br#"{"cq":"42"}"#,
            br#"{"CQ":42}"#,
            br#"{"cq":1,"cq":2}"#,
            b"{\"cq\":4",
        ] {
            assert!(parse(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn marks_never_go_down() {
        let dir = tempfile::tempdir().unwrap();
        let marks = FileSeqMarks::in_data_dir(dir.path()).unwrap();
        marks.record("cq", 10).unwrap();
        marks.record("cq", 5).unwrap();
        assert_eq!(marks.load().unwrap()["cq"], 10);
        let mem = MemorySeqMarks::new();
        mem.record("cq", 10).unwrap();
        mem.record("cq", 5).unwrap();
        assert_eq!(mem.get("cq"), Some(10));
    }
}
