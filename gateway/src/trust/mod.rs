//! Federation trust: signed key sets (SPEC §2), the cache that holds peers'
//! key sets, the operator key store and the gateway's own published keys.
//!
//! - [`keyset`]: `KeySet`/`TrustKey`, signing and verifying a key-set JWS.
//! - [`cache`]: `TrustCache`, the moka cache of verified key sets per member.
//! - [`fetch`]: the `KeySetFetcher` seam (mTLS in production, fakes in tests).
//! - [`keystore`]: the operator's key file and the lifecycle operations.
//! - [`local`]: `LocalKeys`, what a running gateway signs and publishes with.
//! - [`marks`]: durable rollback marks (highest accepted `seq` per member).
//! - [`metrics`]: Prometheus metrics of the trust cache.
//!
//! Time comes from the gateway-wide [`crate::clock`] (re-exported here).

pub mod cache;
pub mod fetch;
pub mod keyset;
pub mod keystore;
pub mod local;
pub mod marks;
pub mod metrics;

pub use crate::clock::{Clock, ManualClock, SystemClock};
pub use cache::{LookupError, TrustCache, TrustCacheConfig};
pub use fetch::{FetchError, KeySetFetcher, MemberRouter, StaticFetcher};
pub use keyset::{KeySet, KeyUnusable, TrustError, TrustKey};
pub use keystore::{KeyInfo, KeyStore, KeyStoreError};
pub use local::{published_keyset_path, LocalKeys};
pub use marks::{FileSeqMarks, MemorySeqMarks, SeqMarks, SeqMarksError};

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Who a key signs for: the credit bank (`issuer`, credentials) or the
/// gateway (`gateway`, translation credentials).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyRole {
    Issuer,
    Gateway,
}

impl KeyRole {
    /// Spelling in key sets and the key store.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyRole::Issuer => "issuer",
            KeyRole::Gateway => "gateway",
        }
    }

    /// Last segment of the issuer URN `urn:bashu:<member>:<segment>`.
    pub fn issuer_segment(self) -> &'static str {
        match self {
            KeyRole::Issuer => "credit-bank",
            KeyRole::Gateway => "gateway",
        }
    }
}

impl fmt::Display for KeyRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for KeyRole {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "issuer" => Ok(KeyRole::Issuer),
            "gateway" => Ok(KeyRole::Gateway),
            _ => Err(format!("unknown key role {s:?} (issuer|gateway)")),
        }
    }
}

/// Lifecycle status of a key (SPEC §2). See docs/trust.md for what each
/// status means to a verifier: `next`, `active` and `retiring` (until
/// `retire_after`) verify; `revoked` never does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyStatus {
    Next,
    Active,
    Retiring,
    Revoked,
}

impl KeyStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyStatus::Next => "next",
            KeyStatus::Active => "active",
            KeyStatus::Retiring => "retiring",
            KeyStatus::Revoked => "revoked",
        }
    }
}

impl fmt::Display for KeyStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
