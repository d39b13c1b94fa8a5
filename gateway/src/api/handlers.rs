//! One function per route: parse, call the [`GatewayService`], render.

use super::request::{
    admin_status_param, check_exchange_id, inbox_params, malformed, parse_json, parse_query, read_body,
};
use super::response::{self, Body};
use super::routes::Handler;
use crate::pipeline::{GatewayService, SubmitRequest};
use crate::problem::{Problem, ProblemType};
use crate::transport::ClientIdentity;
use crate::wire::{BatchResults, BodyError, EnvelopeBody, EnvelopeRequest, MAX_BATCH_BYTES};
use bytes::Bytes;
use http::{HeaderMap, Response, StatusCode};
use serde::Deserialize;
use serde_json::json;

/// Everything a handler may look at.
pub struct Call<'a, B> {
    pub service: &'a dyn GatewayService,
    pub caller: &'a ClientIdentity,
    pub param: Option<&'a str>,
    pub query: Option<&'a str>,
    pub headers: &'a HeaderMap,
    pub body: B,
    pub max_body: usize,
    /// Bounds the envelope requests each peer has in flight.
    pub envelope_slots: &'a super::ratelimit::EnvelopeSlots,
}

/// `POST /v1/inbox/ack` body.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct AckRequest {
    up_to: u64,
}

/// `POST /v1/admin/redeliver` body.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RedeliverRequest {
    destination: String,
    /// RFC 3339: exchanges delivered at or after this moment are re-sent.
    since: String,
}

/// Records the exchange id on the request span (never the payload).
fn record_exchange(id: &str) {
    tracing::Span::current().record("exchange_id", id);
}

/// Attaches `id` to a problem that does not name an exchange yet.
fn about(id: &str) -> impl FnOnce(Problem) -> Problem + '_ {
    move |p| p.about_exchange(id)
}

fn created_or_replayed(created: bool) -> StatusCode {
    if created {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    }
}

pub async fn dispatch<B>(handler: Handler, call: Call<'_, B>) -> Result<Response<Body>, Problem>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let svc = call.service;
    if !matches!(handler, Handler::Inbox | Handler::AdminExchanges) {
        parse_query(call.query, &[])?;
    }
    match handler {
        Handler::Submit => {
            let bytes = read_body(call.headers, call.body, call.max_body).await?;
            let req: SubmitRequest = parse_json(call.headers, &bytes)?;
            let out = svc.submit(&call.caller.member, req).await.inspect_err(|p| {
                if let Some(id) = &p.exchange_id {
                    record_exchange(id);
                }
            })?;
            record_exchange(&out.exchange_id);
            let body = json!({"exchangeId": out.exchange_id, "status": out.status});
            Ok(response::json(created_or_replayed(out.created), &body))
        }
        Handler::ExchangeStatus => {
            let id = check_exchange_id(call.param.unwrap_or_default())?;
            record_exchange(id);
            match svc.exchange_status(id).await.map_err(about(id))? {
                Some(doc) => Ok(response::json(StatusCode::OK, &doc)),
                None => Err(Problem::new(ProblemType::NotFound, "no such exchange").with_exchange(id)),
            }
        }
        Handler::Inbox => {
            let (after, limit) = inbox_params(call.query)?;
            let page = svc.inbox(after, limit).await?;
            Ok(response::json(StatusCode::OK, &page))
        }
        Handler::InboxAck => {
            let bytes = read_body(call.headers, call.body, call.max_body).await?;
            let ack: AckRequest = parse_json(call.headers, &bytes)?;
            let point = svc.ack(ack.up_to).await?;
            Ok(response::json(StatusCode::OK, &json!({"upTo": point})))
        }
        Handler::ReceiveEnvelope => {
            let Some(_slot) = call.envelope_slots.try_take(&call.caller.member) else {
                return Err(Problem::new(
                    ProblemType::RateLimited,
                    format!(
                        "the {} gateway already has {} envelope requests in flight",
                        call.caller.member,
                        super::ratelimit::ENVELOPE_REQUESTS_PER_PEER
                    ),
                ));
            };
            // A batch may be up to 4 MiB whatever the general body limit.
            let limit = call.max_body.max(MAX_BATCH_BYTES);
            let bytes = read_body(call.headers, call.body, limit).await?;
            let body: EnvelopeBody = parse_json(call.headers, &bytes)?;
            let env = match body.into_request() {
                Ok(EnvelopeRequest::Single(env)) => env,
                Ok(EnvelopeRequest::Batch(envelopes)) => {
                    let results = svc.receive_batch(&call.caller.member, envelopes).await?;
                    let doc = serde_json::to_value(BatchResults { results }).map_err(|e| {
                        Problem::new(
                            ProblemType::Unavailable,
                            format!("cannot render batch results: {e}"),
                        )
                    })?;
                    return Ok(response::json(StatusCode::OK, &doc));
                }
                Err(e @ BodyError::TooMany) => {
                    return Err(Problem::new(ProblemType::PayloadTooLarge, e.to_string()))
                }
                Err(e) => return Err(malformed(format!("request body: {e}"))),
            };
            env.check_sender(&call.caller.member)?;
            let id = env.exchange_id.clone();
            record_exchange(&id);
            let out = svc.receive(&call.caller.member, env).await.map_err(about(&id))?;
            let body = json!({"exchangeId": out.exchange_id, "status": "delivered"});
            Ok(response::json(created_or_replayed(out.created), &body))
        }
        Handler::KeySet => Ok(response::jwt(svc.keyset().await?)),
        Handler::AuditCheckpoint => Ok(response::jwt(svc.audit_checkpoint().await?)),
        Handler::AdminExchanges => {
            let status = admin_status_param(call.query)?;
            Ok(response::json(
                StatusCode::OK,
                &svc.admin_exchanges(status).await?,
            ))
        }
        Handler::AdminRetry => {
            let id = check_exchange_id(call.param.unwrap_or_default())?;
            record_exchange(id);
            let doc = svc.admin_retry(id).await.map_err(about(id))?;
            Ok(response::json(StatusCode::OK, &doc))
        }
        Handler::AdminRedeliver => {
            let bytes = read_body(call.headers, call.body, call.max_body).await?;
            let req: RedeliverRequest = parse_json(call.headers, &bytes)?;
            let since =
                time::OffsetDateTime::parse(&req.since, &time::format_description::well_known::Rfc3339)
                    .map_err(|_| {
                        Problem::new(
                            ProblemType::MalformedRequest,
                            "since must be an RFC 3339 date-time",
                        )
                    })?;
            let doc = svc.admin_redeliver(&req.destination, since).await?;
            Ok(response::json(StatusCode::OK, &doc))
        }
        Handler::AdminTrustRefresh => Ok(response::json(StatusCode::OK, &svc.admin_trust_refresh().await?)),
        Handler::Healthz => Ok(response::json(StatusCode::OK, &json!({"status": "ok"}))),
        Handler::Readyz => {
            if svc.ready().await {
                Ok(response::json(StatusCode::OK, &json!({"status": "ready"})))
            } else {
                Err(Problem::new(ProblemType::Unavailable, "gateway is not ready"))
            }
        }
    }
}
