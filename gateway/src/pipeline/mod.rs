//! The exchange pipeline: what happens between an HTTP request being
//! authorised and a durable store write.
//!
//! `api` parses and authorises requests, then calls exactly one method of
//! [`GatewayService`]; every method returns either a typed outcome or a
//! [`Problem`]. Inside, the pipeline works with [`PipelineError`], which
//! its `GatewayService` implementation renders into a `Problem` once, at
//! that boundary. The pipeline
//! owns the order of operations that the contract requires: nothing is
//! acknowledged (202) before it is verified, translated, signed and durable.

use crate::problem::{Problem, ProblemType};
use crate::store::{ExchangeStatus, Store, StoreError};
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;
use time::OffsetDateTime;

mod batch;
mod error;
mod exchange;
mod metrics;
mod peer_set;
pub mod views;

pub use error::PipelineError;
pub use exchange::{Pipeline, INTERCHANGE_FRAMEWORK};
pub use peer_set::PeerSet;

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

pub use crate::wire::{Envelope, EnvelopeResult};

/// Result of receiving an envelope: `created` is false for a replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiveOutcome {
    pub exchange_id: String,
    pub created: bool,
}

/// Boxed future returned by [`GatewayService`] methods (object safety).
pub type ServiceFuture<'a, T> = futures::future::BoxFuture<'a, Result<T, Problem>>;

/// What the HTTP API asks of a gateway: one method per operation of SPEC §4.
///
/// `api` authenticates and authorises the caller and parses the request;
/// the implementation does the rest. It is a trait so that the API layer,
/// the conformance suite's fault-injecting doubles and the real pipeline
/// can be swapped behind the same router.
pub trait GatewayService: Send + Sync + 'static {
    /// Credit bank of `caller_member` submits a credential for `destination`.
    fn submit<'a>(&'a self, caller_member: &'a str, req: SubmitRequest) -> ServiceFuture<'a, SubmitOutcome>;

    /// Exchange status document of SPEC §4, or `None` if unknown.
    fn exchange_status<'a>(&'a self, id: &'a str) -> ServiceFuture<'a, Option<Value>>;

    /// Inbox page document of SPEC §4 (`limit` already clamped to 1..=500).
    fn inbox(&self, after: Option<u64>, limit: u32) -> ServiceFuture<'_, Value>;

    /// Acknowledges every inbox item with cursor ≤ `up_to` and returns the
    /// acknowledged point afterwards: `up_to` clamped to the highest cursor
    /// handed out, and never lower than an earlier acknowledgement.
    fn ack(&self, up_to: u64) -> ServiceFuture<'_, u64>;

    /// A peer gateway (`caller_member`) delivers an envelope.
    fn receive<'a>(&'a self, caller_member: &'a str, env: Envelope) -> ServiceFuture<'a, ReceiveOutcome>;

    /// A peer gateway delivers a batch of envelopes (SPEC §4): one result
    /// per envelope, in request order. The default receives them one by one
    /// through [`GatewayService::receive`] and, like the pipeline, stores
    /// nothing after the first transient failure (see `pipeline/batch.rs`);
    /// the pipeline overrides it with one commit for the whole batch.
    fn receive_batch<'a>(
        &'a self,
        caller_member: &'a str,
        envelopes: Vec<Envelope>,
    ) -> ServiceFuture<'a, Vec<EnvelopeResult>> {
        Box::pin(async move {
            let mut results = Vec::with_capacity(envelopes.len());
            let mut blocked = false;
            for env in envelopes {
                let exchange_id = env.exchange_id.clone();
                let answer = if blocked {
                    Err(Problem::from(PipelineError::HeldBack))
                } else {
                    self.receive(caller_member, env).await
                };
                results.push(match answer {
                    Ok(out) => EnvelopeResult::stored(exchange_id, out.created),
                    Err(p) => {
                        blocked |= p.kind.is_transient();
                        EnvelopeResult::refused(exchange_id, p)
                    }
                });
            }
            Ok(results)
        })
    }

    /// This member's signed trust key set (compact JWS).
    fn keyset(&self) -> ServiceFuture<'_, String>;

    /// Operator: exchanges, optionally filtered by status.
    fn admin_exchanges<'a>(&'a self, status: Option<&'a str>) -> ServiceFuture<'a, Value>;

    /// Operator: put a dead-lettered or rejected exchange back in the outbox.
    fn admin_retry<'a>(&'a self, id: &'a str) -> ServiceFuture<'a, Value>;

    /// Operator: re-send every exchange delivered to `destination` since
    /// `since` (the destination restored its store from a backup).
    fn admin_redeliver<'a>(
        &'a self,
        destination: &'a str,
        since: OffsetDateTime,
    ) -> ServiceFuture<'a, Value> {
        let _ = (destination, since);
        not_wired()
    }

    /// Operator: drop cached peer key sets and refetch them.
    fn admin_trust_refresh(&self) -> ServiceFuture<'_, Value>;

    /// Readiness: the store can commit (see `Store::ping`) and signing keys are loaded.
    fn ready(&self) -> futures::future::BoxFuture<'_, bool>;

    /// The latest signed checkpoint of this gateway's audit head (compact
    /// JWS, SPEC §5). The default has none: doubles need not implement it.
    fn audit_checkpoint(&self) -> ServiceFuture<'_, String> {
        Box::pin(async { Err(no_checkpoint()) })
    }
}

fn no_checkpoint() -> Problem {
    Problem::from(PipelineError::NoCheckpoint)
}

/// A service that answers `unavailable` to everything: lets the API layer
/// be exercised (authentication, limits, routing) without a pipeline.
#[derive(Debug, Default, Clone, Copy)]
pub struct Unwired;

fn not_wired<'a, T: Send + 'a>() -> ServiceFuture<'a, T> {
    Box::pin(async { Err(Problem::new(ProblemType::Unavailable, "pipeline not wired")) })
}

impl GatewayService for Unwired {
    fn submit<'a>(&'a self, _: &'a str, _: SubmitRequest) -> ServiceFuture<'a, SubmitOutcome> {
        not_wired()
    }
    fn exchange_status<'a>(&'a self, _: &'a str) -> ServiceFuture<'a, Option<Value>> {
        not_wired()
    }
    fn inbox(&self, _: Option<u64>, _: u32) -> ServiceFuture<'_, Value> {
        not_wired()
    }
    fn ack(&self, _: u64) -> ServiceFuture<'_, u64> {
        not_wired()
    }
    fn receive<'a>(&'a self, _: &'a str, _: Envelope) -> ServiceFuture<'a, ReceiveOutcome> {
        not_wired()
    }
    fn keyset(&self) -> ServiceFuture<'_, String> {
        not_wired()
    }
    fn admin_exchanges<'a>(&'a self, _: Option<&'a str>) -> ServiceFuture<'a, Value> {
        not_wired()
    }
    fn admin_retry<'a>(&'a self, _: &'a str) -> ServiceFuture<'a, Value> {
        not_wired()
    }
    fn admin_trust_refresh(&self) -> ServiceFuture<'_, Value> {
        not_wired()
    }
    fn ready(&self) -> futures::future::BoxFuture<'_, bool> {
        Box::pin(async { false })
    }
}

/// [`crate::store::blocking`] with store failures as pipeline errors.
async fn blocking<T, F>(store: &Arc<dyn Store>, f: F) -> Result<T, PipelineError>
where
    T: Send + 'static,
    F: FnOnce(&dyn Store) -> Result<T, StoreError> + Send + 'static,
{
    Ok(crate::store::blocking(Arc::clone(store), f).await?)
}

/// Runs one pipeline operation and renders its error for the API: the one
/// place where a [`PipelineError`] becomes a [`Problem`].
fn answer<'a, T: Send + 'a>(
    op: impl std::future::Future<Output = Result<T, PipelineError>> + Send + 'a,
) -> ServiceFuture<'a, T> {
    Box::pin(async move { op.await.map_err(Problem::from) })
}

/// Most exchanges one admin listing returns.
const ADMIN_LIST_LIMIT: u32 = 500;

impl GatewayService for Pipeline {
    fn submit<'a>(&'a self, caller_member: &'a str, req: SubmitRequest) -> ServiceFuture<'a, SubmitOutcome> {
        answer(self.submit_inner(caller_member, req))
    }

    fn exchange_status<'a>(&'a self, id: &'a str) -> ServiceFuture<'a, Option<Value>> {
        answer(async move {
            let id = id.to_owned();
            let ex = blocking(&self.store, move |s| s.exchange(&id)).await?;
            Ok(ex.as_ref().map(views::exchange_status))
        })
    }

    fn inbox(&self, after: Option<u64>, limit: u32) -> ServiceFuture<'_, Value> {
        answer(async move {
            let fetch = limit.saturating_add(1);
            let items = blocking(&self.store, move |s| s.inbox_page(after, fetch)).await?;
            Ok(views::inbox_page(items, limit))
        })
    }

    fn ack(&self, up_to: u64) -> ServiceFuture<'_, u64> {
        answer(async move {
            let now = self.clock.now();
            // The store clamps; read the point back under the same call so
            // the caller learns where it actually stands.
            blocking(&self.store, move |s| {
                s.ack(up_to, now)?;
                s.acked_up_to()
            })
            .await
        })
    }

    fn receive<'a>(&'a self, caller_member: &'a str, env: Envelope) -> ServiceFuture<'a, ReceiveOutcome> {
        answer(self.receive_inner(caller_member, env))
    }

    fn receive_batch<'a>(
        &'a self,
        caller_member: &'a str,
        envelopes: Vec<Envelope>,
    ) -> ServiceFuture<'a, Vec<EnvelopeResult>> {
        answer(self.receive_batch_inner(caller_member, envelopes))
    }

    fn keyset(&self) -> ServiceFuture<'_, String> {
        answer(async move {
            self.local.signed_keyset().map_err(|e| {
                tracing::error!(error = %e, "cannot publish key set");
                PipelineError::KeySetUnavailable
            })
        })
    }

    fn admin_exchanges<'a>(&'a self, status: Option<&'a str>) -> ServiceFuture<'a, Value> {
        answer(async move {
            let status = match status {
                None => None,
                Some(s) => Some(
                    s.parse::<ExchangeStatus>()
                        .map_err(|_| PipelineError::UnknownStatus(s.to_owned()))?,
                ),
            };
            let list = blocking(&self.store, move |s| s.list_exchanges(status, ADMIN_LIST_LIMIT)).await?;
            Ok(json!({ "items": list.iter().map(views::exchange_status).collect::<Vec<_>>() }))
        })
    }

    fn admin_retry<'a>(&'a self, id: &'a str) -> ServiceFuture<'a, Value> {
        answer(async move {
            let (id, now) = (id.to_owned(), self.clock.now());
            let ex = blocking(&self.store, move |s| s.retry(&id, now)).await?;
            self.delivery.notify_one();
            tracing::info!(exchange_id = %ex.exchange_id, "operator retry");
            Ok(views::exchange_status(&ex))
        })
    }

    fn admin_redeliver<'a>(
        &'a self,
        destination: &'a str,
        since: OffsetDateTime,
    ) -> ServiceFuture<'a, Value> {
        answer(async move {
            if !self.peers.contains(destination) {
                return Err(PipelineError::UnknownDestination {
                    destination: destination.to_owned(),
                    member: self.member.clone(),
                });
            }
            let (dest, now) = (destination.to_owned(), self.clock.now());
            let n = blocking(&self.store, move |s| s.redeliver(&dest, since, now)).await?;
            self.delivery.notify_one();
            tracing::warn!(destination, requeued = n, "operator redelivery");
            Ok(json!({ "destination": destination, "requeued": n }))
        })
    }

    fn admin_trust_refresh(&self) -> ServiceFuture<'_, Value> {
        Box::pin(async move {
            let results = self.verifier.cache().refresh_all().await;
            let members: Vec<Value> = results
                .into_iter()
                .map(|(member, r)| match r {
                    Ok(seq) => json!({ "member": member, "seq": seq }),
                    Err(e) => json!({ "member": member, "error": e.problem_type().slug() }),
                })
                .collect();
            Ok(json!({ "members": members }))
        })
    }

    fn audit_checkpoint(&self) -> ServiceFuture<'_, String> {
        answer(async move {
            let latest = blocking(&self.store, |s| match s.checkpoint_store() {
                Some(c) => c.latest_checkpoint(),
                None => Ok(None),
            })
            .await?;
            latest.map(|c| c.jws).ok_or(PipelineError::NoCheckpoint)
        })
    }

    fn ready(&self) -> futures::future::BoxFuture<'_, bool> {
        Box::pin(async move {
            let store_ok = blocking(&self.store, |s| s.ping()).await.is_ok();
            store_ok && self.local.signing_key().is_ok()
        })
    }
}
