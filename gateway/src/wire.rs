//! The federation wire shapes of SPEC §4: an envelope, a batch of
//! envelopes, and the per-envelope results of a batch; and the contract's
//! limits that more than one module enforces.
//!
//! Both sides use them — `pipeline` receives envelopes, `delivery` sends
//! them, `config` validates against the limits that `trust` enforces — so
//! they live here, below all of them, instead of in any.

use crate::ids;
use crate::problem::{Problem, ProblemType};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The federation routes of SPEC §4, as the API serves them
/// (`api/routes.rs`) and the peer client calls them (`app/peers.rs`).
pub const ENVELOPES_PATH: &str = "/v1/federation/envelopes";
pub const KEYS_PATH: &str = "/v1/federation/keys";
pub const CHECKPOINT_PATH: &str = "/v1/federation/audit/checkpoint";

/// Longest allowed key-set lifetime, `exp - iat` (SPEC §2: 30 days). A
/// longer-lived set would keep a compromised or retired key trusted for that
/// long with no way to take it back, so `trust` refuses it, never clamps it,
/// and `config` refuses a cache TTL beyond it.
pub const MAX_KEYSET_LIFETIME_SECS: i64 = 30 * 24 * 3600;

/// Most envelopes one batch request may carry (SPEC §4).
pub const MAX_BATCH_ENVELOPES: usize = 256;

/// Largest batch request body in bytes (SPEC §4: 4 MiB).
pub const MAX_BATCH_BYTES: usize = 4 * 1024 * 1024;

/// `POST /v1/federation/envelopes` body, single form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Envelope {
    pub exchange_id: String,
    pub origin: String,
    pub destination: String,
    pub chain: Vec<String>,
}

impl Envelope {
    /// The checks every receiver makes first, on the single form at the API
    /// and on each envelope of a batch in the pipeline: the exchange id is
    /// one [`ids::is_exchange_id`] allows, and the envelope comes from the
    /// member whose gateway is calling (a peer never speaks for another).
    pub fn check_sender(&self, caller_member: &str) -> Result<(), SenderError> {
        if !ids::is_exchange_id(&self.exchange_id) {
            return Err(SenderError::ExchangeId);
        }
        if self.origin != caller_member {
            return Err(SenderError::NotOwnMember {
                caller: caller_member.to_owned(),
                exchange_id: self.exchange_id.clone(),
            });
        }
        Ok(())
    }

    /// Bytes this envelope adds to a batch body, near enough for sizing
    /// batches (JSON framing is counted generously).
    pub fn wire_size(&self) -> usize {
        let fixed = 64 + self.exchange_id.len() + self.origin.len() + self.destination.len();
        self.chain
            .iter()
            .fold(fixed, |n, link| n.saturating_add(link.len()).saturating_add(4))
    }
}

/// Why [`Envelope::check_sender`] refused an envelope.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SenderError {
    #[error("exchangeId must be {}", ids::EXCHANGE_ID_RULE)]
    ExchangeId,
    #[error("the {caller} gateway may only deliver envelopes from its own member")]
    NotOwnMember { caller: String, exchange_id: String },
}

impl SenderError {
    pub fn kind(&self) -> ProblemType {
        match self {
            SenderError::ExchangeId => ProblemType::MalformedRequest,
            SenderError::NotOwnMember { .. } => ProblemType::ForbiddenRole,
        }
    }
}

impl From<SenderError> for Problem {
    fn from(e: SenderError) -> Self {
        let problem = Problem::new(e.kind(), e.to_string());
        match e {
            SenderError::ExchangeId => problem,
            SenderError::NotOwnMember { exchange_id, .. } => problem.with_exchange(exchange_id),
        }
    }
}

/// The batch form, as a sender writes it (borrowing its envelopes).
#[derive(Debug, Serialize)]
pub struct BatchRef<'a> {
    pub envelopes: &'a [Envelope],
}

/// One result of a batch, in request order: the HTTP status the envelope
/// would have been answered with on its own, and its problem if any.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EnvelopeResult {
    pub exchange_id: String,
    pub status: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<Value>,
}

impl EnvelopeResult {
    /// The envelope was stored now (`202`) or had been before (`200`).
    pub fn stored(exchange_id: String, created: bool) -> Self {
        EnvelopeResult {
            exchange_id,
            status: if created { 202 } else { 200 },
            problem: None,
        }
    }

    /// The envelope was refused: the status and problem it would have got
    /// on its own, naming the envelope unless the problem already names the
    /// exchange it collides with.
    pub fn refused(exchange_id: String, problem: Problem) -> Self {
        let problem = problem.about_exchange(exchange_id.clone());
        EnvelopeResult {
            exchange_id,
            status: problem.status(),
            problem: Some(problem.to_json()),
        }
    }
}

/// `200` answer to a batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchResults {
    pub results: Vec<EnvelopeResult>,
}

/// What a receiver parsed from `POST /v1/federation/envelopes`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvelopeRequest {
    Single(Envelope),
    Batch(Vec<Envelope>),
}

/// Either form of the request body, parsed in one pass: the batch key and
/// the single envelope's members are all optional here, and
/// [`EnvelopeBody::into_request`] insists on exactly one form.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EnvelopeBody {
    envelopes: Option<Vec<Envelope>>,
    exchange_id: Option<String>,
    origin: Option<String>,
    destination: Option<String>,
    chain: Option<Vec<String>>,
}

/// Why an envelope body is neither form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    #[error(
        "a batch carries only `envelopes`; an envelope carries exchangeId, origin, destination and chain"
    )]
    Mixed,
    #[error("missing field `{0}`")]
    Missing(&'static str),
    #[error("a batch carries 1 to {MAX_BATCH_ENVELOPES} envelopes")]
    Empty,
    #[error("a batch carries at most {MAX_BATCH_ENVELOPES} envelopes")]
    TooMany,
}

impl EnvelopeBody {
    pub fn into_request(self) -> Result<EnvelopeRequest, BodyError> {
        let single_fields = self.exchange_id.is_some()
            || self.origin.is_some()
            || self.destination.is_some()
            || self.chain.is_some();
        match self.envelopes {
            Some(_) if single_fields => Err(BodyError::Mixed),
            Some(list) if list.is_empty() => Err(BodyError::Empty),
            Some(list) if list.len() > MAX_BATCH_ENVELOPES => Err(BodyError::TooMany),
            Some(list) => Ok(EnvelopeRequest::Batch(list)),
            None => Ok(EnvelopeRequest::Single(Envelope {
                exchange_id: self.exchange_id.ok_or(BodyError::Missing("exchangeId"))?,
                origin: self.origin.ok_or(BodyError::Missing("origin"))?,
                destination: self.destination.ok_or(BodyError::Missing("destination"))?,
                chain: self.chain.ok_or(BodyError::Missing("chain"))?,
            })),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<EnvelopeRequest, BodyError> {
        serde_json::from_str::<EnvelopeBody>(text).unwrap().into_request()
    }

    #[test]
    fn both_forms_parse_and_mixed_or_empty_bodies_do_not() {
        let one = r#"{"exchangeId":"a","origin":"cq","destination":"sc","chain":["x","y"]}"#;
        let Ok(EnvelopeRequest::Single(env)) = parse(one) else {
            panic!("single form")
        };
        assert_eq!(env.exchange_id, "a");
        let batch = format!(r#"{{"envelopes":[{one},{one}]}}"#);
        match parse(&batch) {
            Ok(EnvelopeRequest::Batch(list)) => assert_eq!(list.len(), 2),
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(parse(r#"{"envelopes":[]}"#), Err(BodyError::Empty));
        assert_eq!(parse(r#"{"envelopes":[],"origin":"cq"}"#), Err(BodyError::Mixed));
        assert_eq!(
            parse(r#"{"exchangeId":"a","origin":"cq","chain":[]}"#),
            Err(BodyError::Missing("destination"))
        );
        let many = format!(
            r#"{{"envelopes":[{}]}}"#,
            vec![one; MAX_BATCH_ENVELOPES + 1].join(",")
        );
        assert_eq!(parse(&many), Err(BodyError::TooMany));
        assert!(serde_json::from_str::<EnvelopeBody>(r#"{"other":1}"#).is_err());
    }

    #[test]
    fn results_round_trip_without_an_absent_problem() {
        let r = BatchResults {
            results: vec![EnvelopeResult {
                exchange_id: "a".into(),
                status: 202,
                problem: None,
            }],
        };
        let text = serde_json::to_string(&r).unwrap();
        assert_eq!(text, r#"{"results":[{"exchangeId":"a","status":202}]}"#);
        assert_eq!(serde_json::from_str::<BatchResults>(&text).unwrap(), r);
    }
}
