//! The hash-chained audit log's rules: entries, row digests, hashes and
//! verification. Backends store entries and rows; they never hash.
//!
//! Entry `n` stores `hash_n = SHA-256(canonical(prev_hash, seq, at,
//! exchange_id, event, detail))` with `prev_hash = hash_{n-1}` (all zeros for
//! the first). The canonical form is a JSON array, which is unambiguous
//! where plain concatenation is not. The store keeps a head (last seq and
//! hash) next to the log, so editing, deleting, reordering *and* truncating
//! entries are all detected.
//!
//! The chain also vouches for the state it describes: an entry about an
//! exchange or an inbox item carries `rowDigest`, the digest of that row as
//! it stands after the change ([`row_digest`] over the columns
//! [`EXCHANGE_DIGEST_COLUMNS`] / [`INBOX_DIGEST_COLUMNS`]). [`ChainVerifier`]
//! recomputes every row's digest and compares it with the latest entry
//! about the row, so a row edited, inserted or deleted behind the log's back
//! is detected. Truncation and recomputation of the chain itself are caught
//! by the signed checkpoints (`crate::checkpoint`).

use crate::store::{AuditHead, AuditReport, StoreError};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// `prev_hash` of the first entry.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What happened. The wire names are part of the stored log: never rename.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditEvent {
    Accepted,
    AttemptFailed,
    Delivered,
    Rejected,
    DeadLettered,
    Retried,
    InboxReceived,
    InboxAcked,
    Redelivered,
    InboxCursorFloorRaised,
}

impl AuditEvent {
    pub const ALL: [AuditEvent; 10] = [
        Self::Accepted,
        Self::AttemptFailed,
        Self::Delivered,
        Self::Rejected,
        Self::DeadLettered,
        Self::Retried,
        Self::InboxReceived,
        Self::InboxAcked,
        Self::Redelivered,
        Self::InboxCursorFloorRaised,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Accepted => "accepted",
            Self::AttemptFailed => "attempt-failed",
            Self::Delivered => "delivered",
            Self::Rejected => "rejected",
            Self::DeadLettered => "dead-lettered",
            Self::Retried => "retried",
            Self::InboxReceived => "inbox-received",
            Self::InboxAcked => "inbox-acked",
            Self::Redelivered => "redelivered",
            Self::InboxCursorFloorRaised => "inbox-cursor-floor-raised",
        }
    }

    /// The table whose row an entry with an exchange id describes; the
    /// entry records that row's digest. Exhaustive on purpose: a new event
    /// must decide which row it vouches for.
    pub fn row_table(self) -> RowTable {
        match self {
            Self::Accepted
            | Self::AttemptFailed
            | Self::Delivered
            | Self::Rejected
            | Self::DeadLettered
            | Self::Retried
            | Self::Redelivered => RowTable::Exchanges,
            Self::InboxReceived => RowTable::Inbox,
            Self::InboxAcked | Self::InboxCursorFloorRaised => RowTable::None,
        }
    }
}

/// Which state table an audit event is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowTable {
    Exchanges,
    Inbox,
    None,
}

impl RowTable {
    /// The name that starts the row digest.
    pub fn name(self) -> &'static str {
        match self {
            Self::Exchanges => "exchanges",
            Self::Inbox => "inbox",
            Self::None => "",
        }
    }

    /// The columns the digest covers, in digest order.
    pub fn digest_columns(self) -> &'static [&'static str] {
        match self {
            Self::Exchanges => &EXCHANGE_DIGEST_COLUMNS,
            Self::Inbox => &INBOX_DIGEST_COLUMNS,
            Self::None => &[],
        }
    }
}

/// Name of the wire event `name` → its row table (unknown names: none).
fn row_table_of(name: &str) -> RowTable {
    AuditEvent::ALL
        .iter()
        .find(|e| e.as_str() == name)
        .map_or(RowTable::None, |e| e.row_table())
}

/// Key of the row digest inside an entry's `detail`.
const ROW_DIGEST: &str = "rowDigest";

/// The exchange columns a row digest covers, in order. Listed explicitly so
/// a column added later (e.g. bookkeeping) does not change old digests.
/// Values as stored: times in UTC Unix nanoseconds, `chain` and `problem`
/// as JSON text, `status` as its wire name.
pub const EXCHANGE_DIGEST_COLUMNS: [&str; 15] = [
    "seq",
    "exchange_id",
    "origin",
    "credential_id",
    "credential_digest",
    "destination",
    "chain",
    "status",
    "accepted_at",
    "forwarded_at",
    "settled_at",
    "updated_at",
    "attempts",
    "last_error",
    "problem",
];

/// The inbox columns a row digest covers, in order (`credential_id` is
/// NULL for items stored before it existed).
pub const INBOX_DIGEST_COLUMNS: [&str; 6] = [
    "cursor",
    "exchange_id",
    "origin",
    "credential_id",
    "received_at",
    "chain",
];

/// One stored column value, as a row digest sees it. A backend maps its
/// column types onto these: integers to `Int`, text to `Text`, NULL to
/// `Null` (SQLite may also produce `Real` and `Blob`, which no column
/// should hold; they digest differently so a changed type is detected).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Cell<'a> {
    Null,
    Int(i64),
    Real(f64),
    Text(&'a [u8]),
    Blob(&'a [u8]),
}

/// SHA-256 (hex) of a row: the table name and every covered column, each
/// value encoded as a one-byte type tag, an 8-byte length and its bytes
/// (unambiguous, and changing a column's type changes the digest).
/// Streamed into the hasher: this runs under the write lock on every write.
pub fn row_digest<'a>(table: RowTable, cells: impl IntoIterator<Item = Cell<'a>>) -> String {
    fn put(h: &mut Sha256, tag: u8, bytes: &[u8]) {
        h.update([tag]);
        h.update((bytes.len() as u64).to_be_bytes());
        h.update(bytes);
    }
    let mut h = Sha256::new();
    put(&mut h, b't', table.name().as_bytes());
    for cell in cells {
        match cell {
            Cell::Null => put(&mut h, b'n', &[]),
            Cell::Int(n) => put(&mut h, b'i', &n.to_be_bytes()),
            Cell::Real(f) => put(&mut h, b'r', &f.to_be_bytes()),
            Cell::Text(t) => put(&mut h, b's', t),
            Cell::Blob(b) => put(&mut h, b'b', b),
        }
    }
    hex(&h.finalize())
}

/// SHA-256 (hex) of the compact JSON array
/// `[prev_hash, seq, at, exchange_id, event, detail]`, streamed into the
/// hasher instead of building a `Value` first (this runs on every write).
fn entry_hash(
    prev_hash: &str,
    seq: i64,
    at: i64,
    exchange_id: Option<&str>,
    event: &str,
    detail: &str,
) -> String {
    struct Hashing(Sha256);
    impl std::io::Write for Hashing {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.update(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut h = Hashing(Sha256::new());
    // Cannot fail: the writer never does, and strings and integers always
    // serialise. Were it to, the hash would be wrong and verification would
    // report the entry as broken (a false alarm, never a silent pass).
    let _ = serde_json::to_writer(&mut h, &(prev_hash, seq, at, exchange_id, event, detail));
    hex(&h.0.finalize())
}

pub fn hex(bytes: &[u8]) -> String {
    crate::hex::lower(bytes)
}

/// An audit entry before it is chained: what happened, to which exchange.
#[derive(Debug, Clone, PartialEq)]
pub struct Draft {
    pub exchange_id: Option<String>,
    pub event: AuditEvent,
    pub detail: Value,
}

impl Draft {
    /// An entry about one exchange or inbox item.
    pub fn about(exchange_id: &str, event: AuditEvent, detail: Value) -> Self {
        Self {
            exchange_id: Some(exchange_id.to_owned()),
            event,
            detail,
        }
    }

    /// An entry about the store as a whole (acks, cursor floors).
    pub fn general(event: AuditEvent, detail: Value) -> Self {
        Self {
            exchange_id: None,
            event,
            detail,
        }
    }

    /// The table whose row this entry vouches for; the backend computes
    /// that row's digest (after the change) and passes it to
    /// [`AuditEntry::next`].
    pub fn row_table(&self) -> RowTable {
        match self.exchange_id {
            Some(_) => self.event.row_table(),
            None => RowTable::None,
        }
    }
}

/// One audit log entry, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    pub seq: i64,
    /// UTC Unix nanoseconds.
    pub at: i64,
    pub exchange_id: Option<String>,
    pub event: String,
    /// JSON text, hashed as is.
    pub detail: String,
    pub prev_hash: String,
    pub hash: String,
}

impl AuditEntry {
    /// The entry that follows `head`: the backend stores it and moves the
    /// head to `(entry.seq, entry.hash)`, in the transaction of the change.
    /// `row_digest` is the digest of the row the draft is about as it now
    /// stands (`None` if it has none).
    pub fn next(head: &AuditHead, at: i64, draft: Draft, row_digest: Option<String>) -> Self {
        let seq = super::to_i64(head.seq).saturating_add(1);
        let mut detail = draft.detail;
        if let (Some(digest), Value::Object(map)) = (row_digest, &mut detail) {
            map.insert(ROW_DIGEST.into(), Value::from(digest));
        }
        let detail = detail.to_string();
        let event = draft.event.as_str();
        let hash = entry_hash(&head.hash, seq, at, draft.exchange_id.as_deref(), event, &detail);
        Self {
            seq,
            at,
            exchange_id: draft.exchange_id,
            event: event.to_owned(),
            detail,
            prev_hash: head.hash.clone(),
            hash,
        }
    }

    /// The head after this entry.
    pub fn head(&self) -> AuditHead {
        AuditHead {
            seq: u64::try_from(self.seq).unwrap_or_default(),
            hash: self.hash.clone(),
        }
    }
}

fn broken(seq: i64, reason: String) -> StoreError {
    StoreError::AuditBroken {
        seq: u64::try_from(seq).unwrap_or_default(),
        reason,
    }
}

/// The latest entry about one row: what the row must look like now.
struct Latest {
    seq: i64,
    event: String,
    /// `None` for entries written before row digests existed.
    digest: Option<String>,
}

/// Recomputes the chain and holds the state rows to it. A backend feeds it
/// from one read snapshot, in this order: every entry by ascending seq
/// ([`entry`](Self::entry)), the stored head ([`head`](Self::head)), every
/// exchange row's digest ([`row`](Self::row) with `RowTable::Exchanges`),
/// then [`rows_done`](Self::rows_done), the same for the inbox, and finally
/// the ack point ([`finish`](Self::finish)).
pub struct ChainVerifier {
    wanted: BTreeSet<u64>,
    hashes: BTreeMap<u64, String>,
    next_seq: i64,
    prev: String,
    exchanges: HashMap<String, Latest>,
    inbox: HashMap<String, Latest>,
    /// `(seq, upTo)` of the latest `inbox-acked` entry.
    acked: Option<(i64, u64)>,
    exchange_rows: u64,
    inbox_rows: u64,
    uncovered: u64,
}

impl ChainVerifier {
    /// `wanted`: seqs whose hashes [`finish`](Self::finish) returns (seq 0
    /// is the genesis hash), for comparison with signed checkpoints.
    pub fn new(wanted: &BTreeSet<u64>) -> Self {
        let mut hashes = BTreeMap::new();
        if wanted.contains(&0) {
            hashes.insert(0, GENESIS_HASH.to_owned());
        }
        Self {
            wanted: wanted.clone(),
            hashes,
            next_seq: 1,
            prev: GENESIS_HASH.to_owned(),
            exchanges: HashMap::new(),
            inbox: HashMap::new(),
            acked: None,
            exchange_rows: 0,
            inbox_rows: 0,
            uncovered: 0,
        }
    }

    /// The next stored entry, in seq order.
    pub fn entry(&mut self, row: AuditEntry) -> Result<(), StoreError> {
        if row.seq != self.next_seq {
            return Err(broken(
                self.next_seq,
                format!(
                    "entry {} is missing (next stored entry is {})",
                    self.next_seq, row.seq
                ),
            ));
        }
        if row.prev_hash != self.prev {
            return Err(broken(
                row.seq,
                "prev_hash does not match the previous entry".into(),
            ));
        }
        let recomputed = entry_hash(
            &row.prev_hash,
            row.seq,
            row.at,
            row.exchange_id.as_deref(),
            &row.event,
            &row.detail,
        );
        if recomputed != row.hash {
            return Err(broken(row.seq, "hash does not match the entry's content".into()));
        }
        if let Ok(seq) = u64::try_from(row.seq) {
            if self.wanted.contains(&seq) {
                self.hashes.insert(seq, row.hash.clone());
            }
        }
        self.record(&row);
        self.prev = row.hash;
        self.next_seq += 1;
        Ok(())
    }

    fn record(&mut self, row: &AuditEntry) {
        if row.event == AuditEvent::InboxAcked.as_str() {
            let up_to = serde_json::from_str::<Value>(&row.detail)
                .ok()
                .and_then(|d| d.get("upTo").and_then(Value::as_u64));
            if let Some(up_to) = up_to {
                self.acked = Some((row.seq, up_to));
            }
            return;
        }
        let map = match row_table_of(&row.event) {
            RowTable::Exchanges => &mut self.exchanges,
            RowTable::Inbox => &mut self.inbox,
            RowTable::None => return,
        };
        let Some(id) = &row.exchange_id else {
            return;
        };
        let digest = serde_json::from_str::<Value>(&row.detail)
            .ok()
            .and_then(|d| d.get(ROW_DIGEST).and_then(Value::as_str).map(str::to_owned));
        map.insert(
            id.clone(),
            Latest {
                seq: row.seq,
                event: row.event.clone(),
                digest,
            },
        );
    }

    fn entries(&self) -> i64 {
        self.next_seq - 1
    }

    /// The stored head (`None` if the store has none): it must name the
    /// last entry, or the log was truncated.
    pub fn head(&mut self, head: Option<(i64, String)>) -> Result<(), StoreError> {
        let entries = self.entries();
        match head {
            None => Err(broken(entries, "audit head is missing".into())),
            Some((seq, _)) if seq != entries => Err(broken(
                entries + 1,
                format!("log ends at entry {entries} but the head records entry {seq}"),
            )),
            Some((_, hash)) if hash != self.prev => {
                Err(broken(entries, "last entry does not match the head".into()))
            }
            Some(_) => Ok(()),
        }
    }

    /// One stored row of `table`: its exchange id and [`row_digest`].
    pub fn row(&mut self, table: RowTable, exchange_id: &str, digest: &str) -> Result<(), StoreError> {
        let head_seq = self.entries();
        let (what, map, count) = match table {
            RowTable::Exchanges => ("exchange", &mut self.exchanges, &mut self.exchange_rows),
            RowTable::Inbox => ("inbox item", &mut self.inbox, &mut self.inbox_rows),
            RowTable::None => return Ok(()),
        };
        *count += 1;
        match map.remove(exchange_id) {
            None => Err(broken(
                head_seq,
                format!("{what} {exchange_id} has no audit entry: it was inserted behind the log's back"),
            )),
            Some(Latest { digest: None, .. }) => {
                self.uncovered += 1;
                Ok(())
            }
            Some(Latest {
                seq,
                event,
                digest: Some(recorded),
            }) if recorded != digest => Err(broken(
                seq,
                format!(
                    "{what} {exchange_id} differs from what its latest audit entry ({seq}, {event}) \
                     recorded: the stored row was changed without an audit entry"
                ),
            )),
            Some(_) => Ok(()),
        }
    }

    /// Every row of `table` was fed: a row the log records but the table
    /// lacks was deleted behind the log's back.
    pub fn rows_done(&mut self, table: RowTable) -> Result<(), StoreError> {
        let (what, map) = match table {
            RowTable::Exchanges => ("exchange", &mut self.exchanges),
            RowTable::Inbox => ("inbox item", &mut self.inbox),
            RowTable::None => return Ok(()),
        };
        match map.iter().min_by_key(|(_, l)| l.seq) {
            Some((id, l)) => Err(broken(
                l.seq,
                format!(
                    "{what} {id} is recorded by audit entry {} ({}) but is missing from the {} table",
                    l.seq,
                    l.event,
                    table.name()
                ),
            )),
            None => Ok(()),
        }
    }

    /// The stored inbox ack point, which must be the one the log last
    /// recorded; then the report and the wanted hashes.
    pub fn finish(self, acked: i64) -> Result<(AuditReport, BTreeMap<u64, String>), StoreError> {
        let entries = self.entries();
        let (seq, recorded) = self.acked.unwrap_or((entries, 0));
        if u64::try_from(acked).ok() != Some(recorded) {
            return Err(broken(
                seq,
                format!(
                    "the inbox ack point is {acked} but the audit log last recorded {recorded}: \
                     it was changed without an audit entry"
                ),
            ));
        }
        let report = AuditReport {
            entries: u64::try_from(entries).unwrap_or_default(),
            head_hash: self.prev,
            exchanges: self.exchange_rows,
            inbox_items: self.inbox_rows,
            rows_predating_digests: self.uncovered,
        };
        Ok((report, self.hashes))
    }
}
