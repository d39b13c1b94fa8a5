//! What a peer's answer to `POST /v1/federation/envelopes` means for
//! delivery (SPEC §4): accepted, rejected for good, or to be retried; and
//! for the batch form, the same per envelope, or "send singles instead".

use super::{BatchAnswer, PeerAnswer, SendError};
use crate::problem::{Problem, ProblemType};
use crate::transport::PeerResponse;
use crate::wire::{BatchResults, Envelope};
use http::StatusCode;
use std::time::Duration;

/// Maps the peer's HTTP answer onto the delivery outcome.
///
/// 2xx is acceptance. A problem the contract makes terminal (the chain does
/// not verify, conflicting duplicate, malformed or oversize envelope) is a
/// rejection; everything else — including 401/403/404, which mean a
/// misconfigured peer an operator can fix — is retried.
pub(crate) fn classify_envelope_answer(response: &PeerResponse) -> Result<PeerAnswer, SendError> {
    let problem = || {
        serde_json::from_slice(&response.body)
            .ok()
            .and_then(|v| Problem::from_json(&v))
    };
    classify(response.status, problem, || retry_after(response))
}

fn retry_after(response: &PeerResponse) -> Option<Duration> {
    response
        .headers
        .get(http::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
}

/// Maps the peer's answer to a batch: `200` with one result per envelope
/// (same exchange ids, same order) or a refusal of the batch form.
pub(crate) fn classify_batch_answer(
    response: &PeerResponse,
    sent: &[Envelope],
) -> Result<BatchAnswer, SendError> {
    match response.status {
        StatusCode::OK => {}
        // A v1 peer: the batch body is not an envelope (400), or it does
        // not know the form at all; 413: its body limit is smaller.
        StatusCode::BAD_REQUEST
        | StatusCode::NOT_FOUND
        | StatusCode::UNSUPPORTED_MEDIA_TYPE
        | StatusCode::PAYLOAD_TOO_LARGE => return Ok(BatchAnswer::Unsupported),
        other => {
            return classify(other, || None, || retry_after(response)).and_then(|_| {
                Err(SendError::Protocol(format!(
                    "peer answered HTTP {other} to a batch"
                )))
            })
        }
    }
    let parsed: BatchResults = serde_json::from_slice(&response.body)
        .map_err(|e| SendError::Protocol(format!("batch results are not valid: {e}")))?;
    if parsed.results.len() != sent.len()
        || parsed
            .results
            .iter()
            .zip(sent)
            .any(|(r, e)| r.exchange_id != e.exchange_id)
    {
        return Err(SendError::Protocol(
            "batch results do not match the envelopes sent".into(),
        ));
    }
    Ok(BatchAnswer::Results(
        parsed
            .results
            .into_iter()
            .map(|r| match StatusCode::from_u16(r.status) {
                Ok(status) => {
                    let problem = r.problem;
                    classify(status, || problem.as_ref().and_then(Problem::from_json), || None)
                }
                Err(_) => Err(SendError::Protocol(format!("invalid status {}", r.status))),
            })
            .collect(),
    ))
}

/// The contract's meaning of an envelope's status and problem.
fn classify(
    status: StatusCode,
    problem: impl FnOnce() -> Option<Problem>,
    retry_after: impl FnOnce() -> Option<Duration>,
) -> Result<PeerAnswer, SendError> {
    if status.is_success() {
        return Ok(PeerAnswer::Accepted);
    }
    match status {
        StatusCode::UNPROCESSABLE_ENTITY
        | StatusCode::CONFLICT
        | StatusCode::BAD_REQUEST
        | StatusCode::PAYLOAD_TOO_LARGE => {
            let problem = problem().unwrap_or_else(|| {
                Problem::new(
                    ProblemType::ChainBroken,
                    format!("peer answered HTTP {status} without a known problem"),
                )
            });
            // Transient at the peer: its store or keys are unavailable, or it
            // lacks the mapping table we used until its operator installs it.
            if problem.kind.is_transient() {
                return Err(SendError::Status {
                    status: status.as_u16(),
                });
            }
            Ok(PeerAnswer::Rejected(problem))
        }
        StatusCode::TOO_MANY_REQUESTS => Err(SendError::RateLimited {
            retry_after: retry_after(),
        }),
        other => Err(SendError::Status {
            status: other.as_u16(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http::HeaderMap;

    fn answer(status: u16, body: &str) -> PeerResponse {
        PeerResponse {
            status: StatusCode::from_u16(status).unwrap(),
            version: http::Version::HTTP_11,
            headers: HeaderMap::new(),
            body: Bytes::from(body.to_owned()),
        }
    }

    #[test]
    fn envelope_answers_are_classified_by_contract() {
        assert_eq!(
            classify_envelope_answer(&answer(202, "{}")),
            Ok(PeerAnswer::Accepted)
        );
        assert_eq!(
            classify_envelope_answer(&answer(200, "{}")),
            Ok(PeerAnswer::Accepted)
        );
        let p = Problem::new(ProblemType::InvalidSignature, "x")
            .to_json()
            .to_string();
        match classify_envelope_answer(&answer(422, &p)) {
            Ok(PeerAnswer::Rejected(problem)) => assert_eq!(problem.kind, ProblemType::InvalidSignature),
            other => panic!("unexpected {other:?}"),
        }
        let unavailable = Problem::new(ProblemType::Unavailable, "x").to_json().to_string();
        assert_eq!(
            classify_envelope_answer(&answer(422, &unavailable)),
            Err(SendError::Status { status: 422 })
        );
        let no_table = Problem::new(ProblemType::MappingVersionUnknown, "x")
            .to_json()
            .to_string();
        assert_eq!(
            classify_envelope_answer(&answer(422, &no_table)),
            Err(SendError::Status { status: 422 })
        );
        assert_eq!(
            classify_envelope_answer(&answer(503, "")),
            Err(SendError::Status { status: 503 })
        );
        assert_eq!(
            classify_envelope_answer(&answer(403, "")),
            Err(SendError::Status { status: 403 })
        );
        assert!(matches!(
            classify_envelope_answer(&answer(429, "")),
            Err(SendError::RateLimited { retry_after: None })
        ));
    }

    fn env(id: &str) -> Envelope {
        Envelope {
            exchange_id: id.into(),
            origin: "cq".into(),
            destination: "sc".into(),
            chain: vec!["a".into(), "b".into()],
        }
    }

    #[test]
    fn batch_answers_map_per_envelope_and_a_v1_refusal_to_unsupported() {
        let sent = [env("e1"), env("e2"), env("e3")];
        let problem = Problem::new(ProblemType::InvalidSignature, "x").to_json();
        let unavailable = Problem::new(ProblemType::Unavailable, "x").to_json();
        let body = serde_json::json!({"results": [
            {"exchangeId": "e1", "status": 202},
            {"exchangeId": "e2", "status": 422, "problem": problem},
            {"exchangeId": "e3", "status": 503, "problem": unavailable},
        ]})
        .to_string();
        match classify_batch_answer(&answer(200, &body), &sent) {
            Ok(BatchAnswer::Results(r)) => {
                assert_eq!(r[0], Ok(PeerAnswer::Accepted));
                assert!(
                    matches!(&r[1], Ok(PeerAnswer::Rejected(p)) if p.kind == ProblemType::InvalidSignature)
                );
                assert_eq!(r[2], Err(SendError::Status { status: 503 }));
            }
            other => panic!("unexpected {other:?}"),
        }
        // A v1 peer: the batch body is not an envelope, or the form is unknown.
        for status in [400, 404, 415, 413] {
            assert_eq!(
                classify_batch_answer(&answer(status, "{}"), &sent),
                Ok(BatchAnswer::Unsupported),
                "{status}"
            );
        }
        // Results that do not match what was sent are a protocol error.
        let short = r#"{"results":[{"exchangeId":"e1","status":202}]}"#;
        assert!(matches!(
            classify_batch_answer(&answer(200, short), &sent),
            Err(SendError::Protocol(_))
        ));
        let swapped = r#"{"results":[{"exchangeId":"e2","status":202},{"exchangeId":"e1","status":202},{"exchangeId":"e3","status":202}]}"#;
        assert!(matches!(
            classify_batch_answer(&answer(200, swapped), &sent),
            Err(SendError::Protocol(_))
        ));
        assert_eq!(
            classify_batch_answer(&answer(503, ""), &sent),
            Err(SendError::Status { status: 503 })
        );
        assert!(matches!(
            classify_batch_answer(&answer(429, ""), &sent),
            Err(SendError::RateLimited { .. })
        ));
    }
}
