//! Signed checkpoints of the audit chain head (SPEC §5).
//!
//! A hash chain alone proves only that the rows agree with each other:
//! whoever can write the database can truncate it, delete it, or change a
//! row and recompute every hash after it. A checkpoint pins the head from
//! the outside: a compact JWS, `typ` `bashu-audit+jwt`, signed with the
//! member's active gateway key, over
//! `{"iss": member, "seq": n, "head": hash of entry n, "at": unix secs}`.
//! The gateway signs one at least every `audit.checkpoint_interval_secs`
//! while the head moves and once at graceful shutdown ([`Checkpointer`]),
//! keeps them in its store, serves the latest at
//! `GET /v1/federation/audit/checkpoint`, and keeps its peers' checkpoints
//! as a witness ([`Witness`]). `bashu audit verify` then checks the chain
//! against every checkpoint ([`check_consistency`]): a later chain must
//! contain entry `seq` with hash `head`, which a truncated, deleted or
//! recomputed chain does not.

pub mod metrics;
mod task;

pub use task::{CheckpointFetcher, Checkpointer, Witness};

use crate::jose::{self, json_strict, HeaderPolicy, JoseError, SigningKey, VerifyingKey};
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// The `typ` of a checkpoint JWS.
pub const CHECKPOINT_TYP: &str = "bashu-audit+jwt";

/// Header policy of a checkpoint JWS: `typ: bashu-audit+jwt`, no `cty`.
pub const CHECKPOINT_POLICY: HeaderPolicy = HeaderPolicy {
    typ: CHECKPOINT_TYP,
    cty: None,
};

/// Why a checkpoint could not be made, read or trusted.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("checkpoint JWS: {0}")]
    Jose(#[from] JoseError),
    #[error("checkpoint payload: {0}")]
    Payload(String),
    #[error("checkpoint is issued by {found:?}, expected {expected:?}")]
    WrongIssuer { expected: String, found: String },
    #[error("checkpoint is signed by kid {kid:?}, which is not a gateway key of {member}")]
    UnknownKey { member: String, kid: String },
    #[error("store: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("the store has no checkpoint tables")]
    NoCheckpointStore,
    #[error("signing key: {0}")]
    Keys(#[from] crate::trust::KeyStoreError),
    /// The chain no longer contains what an earlier checkpoint signed: the
    /// gateway refuses to sign over it (it would bless a rewritten log).
    #[error("{0}")]
    Inconsistent(Inconsistency),
    #[error("the task signing the checkpoint failed: {0}")]
    Task(String),
}

/// The signed statement: entry `seq` of `iss`'s audit chain has hash `head`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub iss: String,
    pub seq: u64,
    /// Lowercase hex SHA-256 of entry `seq` (all zeros for `seq` 0).
    pub head: String,
    /// Unix seconds when it was signed.
    pub at: i64,
}

impl Checkpoint {
    pub fn to_json(&self) -> Value {
        json!({ "iss": self.iss, "seq": self.seq, "head": self.head, "at": self.at })
    }

    /// Signs the checkpoint as a compact JWS with `key` (the active gateway key).
    pub fn sign(&self, key: &SigningKey) -> Result<String, CheckpointError> {
        Ok(jose::sign_compact(
            CHECKPOINT_TYP,
            self.to_json().to_string().as_bytes(),
            key,
        )?)
    }

    /// Parses a payload strictly: exactly the four members, typed.
    fn from_payload(bytes: &[u8]) -> Result<Self, CheckpointError> {
        let bad = |m: &str| CheckpointError::Payload(m.to_owned());
        let map = json_strict::parse_object(bytes).map_err(|e| CheckpointError::Payload(e.to_string()))?;
        if let Some(extra) = map
            .keys()
            .find(|k| !matches!(k.as_str(), "iss" | "seq" | "head" | "at"))
        {
            return Err(CheckpointError::Payload(format!("unexpected member {extra:?}")));
        }
        let iss = map
            .get("iss")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("iss must be a string"))?;
        let seq = map
            .get("seq")
            .and_then(Value::as_u64)
            .ok_or_else(|| bad("seq must be a non-negative integer"))?;
        let head = map
            .get("head")
            .and_then(Value::as_str)
            .filter(|h| is_hash_hex(h))
            .ok_or_else(|| bad("head must be 64 lowercase hex digits"))?;
        let at = map
            .get("at")
            .and_then(Value::as_i64)
            .ok_or_else(|| bad("at must be an integer"))?;
        Ok(Self {
            iss: iss.to_owned(),
            seq,
            head: head.to_owned(),
            at,
        })
    }
}

fn is_hash_hex(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A checkpoint whose signature verified, with the key id and the JWS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedCheckpoint {
    pub checkpoint: Checkpoint,
    pub kid: String,
    pub jws: String,
}

/// The `kid` of a checkpoint JWS (header checked, signature not).
pub fn kid_of(jws: &str) -> Result<String, CheckpointError> {
    let parsed = jose::parse_compact(jws, CHECKPOINT_POLICY)?;
    Ok(parsed.header().kid().to_owned())
}

/// The payload of a checkpoint JWS without checking its signature: only for
/// the gateway's own store, which it wrote itself.
pub fn peek(jws: &str) -> Result<Checkpoint, CheckpointError> {
    let parsed = jose::parse_compact(jws, CHECKPOINT_POLICY)?;
    Checkpoint::from_payload(parsed.payload())
}

/// Verifies `jws` as a checkpoint of `member` signed with `key`.
pub fn verify(jws: &str, member: &str, key: &VerifyingKey) -> Result<SignedCheckpoint, CheckpointError> {
    let parsed = jose::parse_compact(jws, CHECKPOINT_POLICY)?;
    parsed.verify_signature(key)?;
    let checkpoint = Checkpoint::from_payload(parsed.payload())?;
    if checkpoint.iss != member {
        return Err(CheckpointError::WrongIssuer {
            expected: member.to_owned(),
            found: checkpoint.iss,
        });
    }
    Ok(SignedCheckpoint {
        kid: parsed.header().kid().to_owned(),
        checkpoint,
        jws: jws.to_owned(),
    })
}

/// Verifies `jws` as a checkpoint of `member` with whichever of `keys`
/// (kid → gateway key) its header names.
pub fn verify_with_keys(
    jws: &str,
    member: &str,
    keys: &BTreeMap<String, VerifyingKey>,
) -> Result<SignedCheckpoint, CheckpointError> {
    let kid = kid_of(jws)?;
    let key = keys.get(&kid).ok_or_else(|| CheckpointError::UnknownKey {
        member: member.to_owned(),
        kid: kid.clone(),
    })?;
    verify(jws, member, key)
}

/// A checkpoint the chain does not agree with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inconsistency {
    /// The chain is shorter than a signed checkpoint: truncated or deleted.
    BeyondEnd {
        seq: u64,
        at: i64,
        kid: String,
        entries: u64,
    },
    /// Entry `seq` exists but is not the one that was signed: rewritten.
    HeadMismatch {
        seq: u64,
        at: i64,
        kid: String,
        signed: String,
        found: String,
    },
}

impl std::fmt::Display for Inconsistency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::BeyondEnd {
                seq,
                at,
                kid,
                entries,
            } => write!(
                f,
                "the checkpoint signed at {} by kid {kid} attests entry {seq}, but the chain has only \
                 {entries} entries: the log was truncated or deleted",
                format_unix(*at)
            ),
            Self::HeadMismatch {
                seq,
                at,
                kid,
                signed,
                found,
            } => write!(
                f,
                "the checkpoint signed at {} by kid {kid} attests entry {seq} with hash {signed}, but \
                 entry {seq} now has hash {found}: the log was rewritten and its hashes recomputed",
                format_unix(*at)
            ),
        }
    }
}

/// Unix seconds as RFC 3339 UTC, or the number if out of range.
pub fn format_unix(secs: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| secs.to_string())
}

/// Checks one checkpoint against a chain of `entries` entries whose hashes
/// at the checkpoints' seqs are `hashes` (as returned by
/// `CheckpointStore::audit_verify_at`).
pub fn check_consistency(
    cp: &SignedCheckpoint,
    entries: u64,
    hashes: &BTreeMap<u64, String>,
) -> Result<(), Inconsistency> {
    let c = &cp.checkpoint;
    match hashes.get(&c.seq) {
        _ if c.seq > entries => Err(Inconsistency::BeyondEnd {
            seq: c.seq,
            at: c.at,
            kid: cp.kid.clone(),
            entries,
        }),
        Some(found) if *found == c.head => Ok(()),
        found => Err(Inconsistency::HeadMismatch {
            seq: c.seq,
            at: c.at,
            kid: cp.kid.clone(),
            signed: c.head.clone(),
            found: found.cloned().unwrap_or_else(|| "<missing>".into()),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jose::Alg;

    fn cp(seq: u64, head: &str) -> Checkpoint {
        Checkpoint {
            iss: "cq".into(),
            seq,
            head: head.into(),
            at: 1_800_000_000,
        }
    }

    #[test]
    fn sign_verify_round_trip_and_refusals() {
        let key = SigningKey::generate(Alg::Es256, "gw-1").unwrap();
        let h = "ab".repeat(32);
        let jws = cp(7, &h).sign(&key).unwrap();
        let ok = verify(&jws, "cq", key.verifying_key()).unwrap();
        assert_eq!(ok.checkpoint, cp(7, &h));
        assert_eq!(ok.kid, "gw-1");
        assert_eq!(kid_of(&jws).unwrap(), "gw-1");
        assert!(matches!(
            verify(&jws, "sc", key.verifying_key()),
            Err(CheckpointError::WrongIssuer { .. })
        ));
        let other = SigningKey::generate(Alg::Es256, "gw-2").unwrap();
        assert!(matches!(
            verify(&jws, "cq", other.verifying_key()),
            Err(CheckpointError::Jose(JoseError::BadSignature))
        ));
        // A key set is not a checkpoint, even when signed by the right key.
        let wrong_typ = jose::sign_compact(
            "bashu-keyset+jwt",
            cp(7, &h).to_json().to_string().as_bytes(),
            &key,
        )
        .unwrap();
        assert!(matches!(
            verify(&wrong_typ, "cq", key.verifying_key()),
            Err(CheckpointError::Jose(JoseError::WrongType { .. }))
        ));
        let keys = BTreeMap::from([("gw-2".to_owned(), other.verifying_key().clone())]);
        assert!(matches!(
            verify_with_keys(&jws, "cq", &keys),
            Err(CheckpointError::UnknownKey { .. })
        ));
    }

    #[test]
    fn payload_is_parsed_strictly() {
        let key = SigningKey::generate(Alg::EdDsa, "gw-1").unwrap();
        for payload in [
            r#"{"iss":"cq","seq":1,"head":"00","at":1}"#.to_owned(),
            format!(r#"{{"iss":"cq","seq":-1,"head":"{}","at":1}}"#, "0".repeat(64)),
            format!(
                r#"{{"iss":"cq","seq":1,"head":"{}","at":1,"x":1}}"#,
                "0".repeat(64)
            ),
            format!(r#"{{"iss":"cq","seq":1,"head":"{}"}}"#, "0".repeat(64)),
            format!(r#"{{"iss":"cq","seq":1,"head":"{}","at":1}}"#, "A".repeat(64)),
        ] {
            let jws = jose::sign_compact(CHECKPOINT_TYP, payload.as_bytes(), &key).unwrap();
            assert!(
                matches!(
                    verify(&jws, "cq", key.verifying_key()),
                    Err(CheckpointError::Payload(_))
                ),
                "{payload}"
            );
        }
    }

    #[test]
    fn consistency_names_truncation_and_rewrite() {
        let key = SigningKey::generate(Alg::Es256, "gw-1").unwrap();
        let h = "ab".repeat(32);
        let signed = verify(&cp(5, &h).sign(&key).unwrap(), "cq", key.verifying_key()).unwrap();
        let good = BTreeMap::from([(5, h.clone())]);
        assert_eq!(check_consistency(&signed, 5, &good), Ok(()));
        assert_eq!(check_consistency(&signed, 9, &good), Ok(()));
        assert!(matches!(
            check_consistency(&signed, 4, &BTreeMap::new()),
            Err(Inconsistency::BeyondEnd {
                seq: 5,
                entries: 4,
                ..
            })
        ));
        let other = BTreeMap::from([(5, "cd".repeat(32))]);
        let err = check_consistency(&signed, 5, &other).unwrap_err();
        assert!(matches!(err, Inconsistency::HeadMismatch { seq: 5, .. }));
        assert!(err.to_string().contains("recomputed"), "{err}");
    }
}
