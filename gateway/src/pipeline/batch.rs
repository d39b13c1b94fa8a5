//! The receiving side of a batch of envelopes (SPEC §4): every envelope is
//! judged on its own, the accepted ones are stored in one commit in
//! request order, and the answer has one result per envelope.
//!
//! Order across a transient failure: if envelope k fails transiently
//! (`unavailable`, `mapping-version-unknown`: the sender retries it), none
//! of the envelopes after it is stored in this request — each is answered
//! `503 unavailable` instead — because storing k+1 now and k on the retry
//! would put them in the inbox out of acceptance order. A terminal result
//! (409, 422) for k does not hold the others back: k will not come again
//! (unless an operator retries it, which is an explicit re-send).

use super::error::PipelineError;
use super::exchange::{translate_and_sign, INTERCHANGE_FRAMEWORK};
use super::{blocking, metrics, Envelope, Pipeline};
use crate::store::{Inserted, NewInboxItem};
use crate::wire::EnvelopeResult;
use std::sync::Arc;

/// Where one envelope of a batch stands while the batch is processed.
enum Step {
    /// Answered already (a resend: `Ok(false)`; an error).
    Done(Result<bool, PipelineError>),
    /// Verified, translated and signed: to be stored.
    Ready(NewInboxItem),
    /// Not looked at yet.
    Pending,
}

impl Pipeline {
    pub(super) async fn receive_batch_inner(
        &self,
        caller_member: &str,
        envelopes: Vec<Envelope>,
    ) -> Result<Vec<EnvelopeResult>, PipelineError> {
        let ids: Vec<String> = envelopes.iter().map(|e| e.exchange_id.clone()).collect();
        let mut steps: Vec<Step> = envelopes
            .iter()
            .map(|env| match self.check_envelope(caller_member, env) {
                Ok(()) => Step::Pending,
                Err(e) => Step::Done(Err(e)),
            })
            .collect();

        // Resends are answered from the inbox before any cryptography, like
        // a single envelope: one store call for the whole batch.
        let lookup: Vec<String> = ids.clone();
        let held = blocking(&self.store, move |s| s.inbox_by_exchanges(&lookup)).await?;
        for ((step, env), item) in steps.iter_mut().zip(&envelopes).zip(held) {
            if let (Step::Pending, Some(item)) = (&step, item) {
                let same = item.origin == env.origin && item.chain.first() == env.chain.first();
                *step = Step::Done(if same {
                    Ok(false)
                } else {
                    Err(PipelineError::EnvelopeConflict {
                        existing_exchange_id: item.exchange_id,
                    })
                });
            }
        }

        // Verify, translate and sign the rest in parallel on the runtime's
        // workers, at most one task per core at a time (`verify_pool`).
        let received_at = self.clock.now();
        let mut tasks = tokio::task::JoinSet::new();
        for (index, (step, env)) in steps.iter().zip(envelopes).enumerate() {
            if !matches!(step, Step::Pending) {
                continue;
            }
            let job = self.receive_job();
            tasks.spawn(async move { (index, job.run(env, received_at).await) });
        }
        while let Some(joined) = tasks.join_next().await {
            let (index, outcome) = joined.map_err(|e| {
                tracing::error!(error = %e, "envelope verification task failed");
                PipelineError::TaskFailed
            })?;
            if let Some(step) = steps.get_mut(index) {
                *step = match outcome {
                    Ok(item) => Step::Ready(item),
                    Err(e) => Step::Done(Err(e)),
                };
            }
        }

        // Hold back everything after the first transient failure (module docs).
        let mut blocked = false;
        for step in &mut steps {
            if blocked && matches!(step, Step::Ready(_)) {
                *step = Step::Done(Err(PipelineError::HeldBack));
            }
            if let Step::Done(Err(e)) = step {
                blocked |= e.is_transient();
            }
        }

        // One commit for every accepted envelope, in request order.
        let mut ready = Vec::new();
        let mut slots = Vec::new();
        for (index, step) in steps.iter_mut().enumerate() {
            if matches!(step, Step::Ready(_)) {
                if let Step::Ready(item) = std::mem::replace(step, Step::Pending) {
                    ready.push(item);
                    slots.push(index);
                }
            }
        }
        let stored = blocking(&self.store, move |s| s.insert_inbox_batch(ready)).await?;
        for (index, inserted) in slots.into_iter().zip(stored) {
            let result = match inserted {
                Inserted::Created(item) => {
                    metrics::exchange_event("received");
                    tracing::info!(exchange_id = %item.exchange_id, origin = %item.origin, cursor = item.cursor, "envelope stored in inbox");
                    Ok(true)
                }
                Inserted::Existing(_) => Ok(false),
                Inserted::Conflict { existing_exchange_id } => {
                    Err(PipelineError::EnvelopeConflict { existing_exchange_id })
                }
            };
            if let Some(step) = steps.get_mut(index) {
                *step = Step::Done(result);
            }
        }

        Ok(steps
            .into_iter()
            .zip(ids)
            .map(|(step, exchange_id)| match step {
                Step::Done(Ok(created)) => EnvelopeResult::stored(exchange_id, created),
                Step::Done(Err(e)) => EnvelopeResult::refused(exchange_id, e.into()),
                // Every envelope reached `Done` above; answer a gap as transient.
                Step::Ready(_) | Step::Pending => {
                    EnvelopeResult::refused(exchange_id, PipelineError::NotProcessed.into())
                }
            })
            .collect())
    }
}

impl Pipeline {
    /// What receiving one envelope needs, owned so it can run on any worker.
    pub(super) fn receive_job(&self) -> ReceiveJob {
        ReceiveJob {
            verifier: self.verifier.clone(),
            table: Arc::clone(&self.table),
            local: Arc::clone(&self.local),
            member: self.member.clone(),
            framework: self.framework.clone(),
            pool: Arc::clone(&self.verify_pool),
        }
    }
}

/// What one receive task needs, owned so it can run on any worker.
pub(super) struct ReceiveJob {
    verifier: crate::credential::Verifier,
    table: Arc<schema_mapper::MappingTable>,
    local: Arc<crate::trust::LocalKeys>,
    member: String,
    framework: String,
    pool: Arc<tokio::sync::Semaphore>,
}

impl ReceiveJob {
    /// [`inbox_item`](Self::inbox_item) holding a permit of the verify
    /// pool, so a batch's envelopes never occupy every runtime worker.
    async fn run(
        self,
        env: Envelope,
        received_at: time::OffsetDateTime,
    ) -> Result<NewInboxItem, PipelineError> {
        let pool = Arc::clone(&self.pool);
        let _permit = pool.acquire().await.map_err(|_| PipelineError::ShuttingDown)?;
        self.inbox_item(env, received_at).await
    }

    /// Verifies the chain, checks its origin, signs the home translation:
    /// the inbox item for `env`, for a single envelope and a batch alike.
    pub(super) async fn inbox_item(
        self,
        env: Envelope,
        received_at: time::OffsetDateTime,
    ) -> Result<NewInboxItem, PipelineError> {
        let chain = self.verifier.verify_chain(&env.chain).await?;
        if chain.original().issuer().member() != env.origin {
            return Err(PipelineError::OriginIsNotIssuer);
        }
        let home = translate_and_sign(
            &self.table,
            &self.local,
            &self.member,
            chain.last(),
            INTERCHANGE_FRAMEWORK,
            &self.framework,
            received_at,
        )?;
        let credential_id = chain.original().id().to_owned();
        let mut links = env.chain;
        links.push(home);
        Ok(NewInboxItem {
            exchange_id: env.exchange_id,
            origin: env.origin,
            credential_id,
            received_at,
            chain: links,
        })
    }
}
