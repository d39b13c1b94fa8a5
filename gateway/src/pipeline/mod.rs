//! The exchange pipeline: what happens between an HTTP request being
//! authorised and a durable store write.
//!
//! `api` parses and authorises requests, then calls exactly one method here;
//! every method returns either a typed outcome or a [`Problem`]. The pipeline
//! owns the order of operations that the contract requires: nothing is
//! acknowledged (202) before it is verified, translated, signed and durable.

use crate::problem::{Problem, ProblemType};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `POST /v1/exchanges` body.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubmitRequest {
    pub credential: String,
    pub destination: String,
}

/// Result of a submission: `created` is false for an idempotent replay (200).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubmitOutcome {
    pub exchange_id: String,
    pub status: String,
    pub created: bool,
}

/// `POST /v1/federation/envelopes` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Envelope {
    pub exchange_id: String,
    pub origin: String,
    pub destination: String,
    pub chain: Vec<String>,
}

/// Result of receiving an envelope: `created` is false for a replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiveOutcome {
    pub exchange_id: String,
    pub created: bool,
}

/// The pipeline's entry points, one per API operation.
///
/// Filled in by the pipeline implementation; until a gateway is wired every
/// call answers `unavailable` so that the API layer can be built and tested
/// on its own.
#[derive(Debug, Default)]
pub struct Pipeline {
    _private: (),
}

fn not_wired() -> Problem {
    Problem::new(ProblemType::Unavailable, "pipeline not wired")
}

impl Pipeline {
    /// Credit bank of `caller_member` submits a credential for `destination`.
    pub async fn submit(&self, _caller_member: &str, _req: SubmitRequest) -> Result<SubmitOutcome, Problem> {
        Err(not_wired())
    }

    /// Exchange status document of SPEC §4, or `None` if unknown.
    pub async fn exchange_status(&self, _id: &str) -> Result<Option<Value>, Problem> {
        Err(not_wired())
    }

    /// Inbox page document of SPEC §4.
    pub async fn inbox(&self, _after: Option<u64>, _limit: u32) -> Result<Value, Problem> {
        Err(not_wired())
    }

    /// Acknowledges every inbox item with cursor ≤ `up_to`.
    pub async fn ack(&self, _up_to: u64) -> Result<(), Problem> {
        Err(not_wired())
    }

    /// A peer gateway (`caller_member`) delivers an envelope.
    pub async fn receive(&self, _caller_member: &str, _env: Envelope) -> Result<ReceiveOutcome, Problem> {
        Err(not_wired())
    }

    /// This member's signed trust key set (compact JWS).
    pub async fn keyset(&self) -> Result<String, Problem> {
        Err(not_wired())
    }

    /// Operator: exchanges by status.
    pub async fn admin_exchanges(&self, _status: Option<&str>) -> Result<Value, Problem> {
        Err(not_wired())
    }

    /// Operator: put a dead-lettered or rejected exchange back in the outbox.
    pub async fn admin_retry(&self, _id: &str) -> Result<Value, Problem> {
        Err(not_wired())
    }

    /// Operator: drop cached peer key sets and refetch them.
    pub async fn admin_trust_refresh(&self) -> Result<Value, Problem> {
        Err(not_wired())
    }

    /// Readiness: store reachable and signing keys loaded.
    pub async fn ready(&self) -> bool {
        false
    }
}
