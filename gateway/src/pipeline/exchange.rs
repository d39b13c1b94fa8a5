//! The exchange pipeline proper: the origin side (`submit`) and the
//! receiving side (`receive`) of SPEC §3–§5.
//!
//! Order matters and is the point of this module: nothing is acknowledged
//! before it is verified, translated, signed and durable. Replays are
//! answered from the store before any signing, so a resubmission never
//! produces new bytes.

use super::error::PipelineError;
use super::{blocking, metrics, Envelope, ReceiveOutcome, SubmitOutcome, SubmitRequest};
use crate::clock::Clock;
use crate::credential::{issue_translation, split_subject, IssuerId, VerifiedCredential, Verifier};
use crate::store::{Inserted, NewExchange, Store};
use crate::trust::{KeyRole, LocalKeys};
use schema_mapper::{translate, MappingTable};
use serde_json::{Map, Value};
use std::sync::Arc;
use time::OffsetDateTime;
use tokio::sync::Notify;

/// The interchange framework every envelope carries (SPEC §3).
pub const INTERCHANGE_FRAMEWORK: &str = "wfs";

/// Everything the pipeline needs, built once at start-up by the app. It
/// holds no state of its own beyond these handles, so the fields are plain.
pub struct Pipeline {
    pub member: String,
    /// Home framework id of this member's credit bank.
    pub framework: String,
    /// Configured peers; replaced when a SIGHUP reloads them.
    pub peers: super::PeerSet,
    pub table: Arc<MappingTable>,
    pub verifier: Verifier,
    pub local: Arc<LocalKeys>,
    pub store: Arc<dyn Store>,
    /// Woken after every new outbox row so delivery starts at once.
    pub delivery: Arc<Notify>,
    pub clock: Arc<dyn Clock>,
    /// Bounds how many chain verifications of received batches run at once
    /// on the runtime's workers (one permit per core but one, at least one), so a big batch
    /// cannot crowd out the tasks serving connections.
    pub verify_pool: Arc<tokio::sync::Semaphore>,
}

impl Pipeline {
    pub fn member(&self) -> &str {
        &self.member
    }

    /// Origin side: verify the credit bank's credential, map home → WFS,
    /// sign the interchange and store exchange + outbox atomically.
    pub(super) async fn submit_inner(
        &self,
        caller_member: &str,
        req: SubmitRequest,
    ) -> Result<SubmitOutcome, PipelineError> {
        let started = std::time::Instant::now();
        if caller_member != self.member {
            return Err(PipelineError::ForeignCreditBank);
        }
        if !self.peers.contains(&req.destination) {
            return Err(PipelineError::UnknownDestination {
                destination: req.destination,
                member: self.member.clone(),
            });
        }
        let original = self.verifier.verify(&req.credential).await?;
        let own_bank = IssuerId::new(&self.member, KeyRole::Issuer)?;
        if original.is_translation() || original.issuer() != &own_bank {
            return Err(PipelineError::NotOwnCreditBank {
                expected: own_bank.to_string(),
                found: original.issuer().to_string(),
            });
        }

        // One store round trip: the insert itself answers a replay (same
        // credential id) with the stored exchange, and the interchange
        // signed here for it is dropped unseen, so a resubmission never
        // produces new bytes.
        let interchange = self.translate_and_sign(
            &original,
            &self.framework,
            INTERCHANGE_FRAMEWORK,
            self.clock.now(),
        )?;
        let new = NewExchange {
            // Time-ordered (UUIDv7): the exchange-id indexes on both sides
            // grow at their end instead of at a random leaf per insert.
            exchange_id: uuid::Uuid::now_v7().to_string(),
            credential_id: original.id().to_owned(),
            credential_digest: original.digest_hex(),
            origin: self.member.clone(),
            destination: req.destination.clone(),
            chain: vec![original.jws().to_owned(), interchange],
            accepted_at: self.clock.now(),
        };
        let inserted = crate::store::insert_exchange(&self.store, new).await?;
        let outcome = match inserted {
            Inserted::Created(ex) => {
                self.delivery.notify_one();
                metrics::exchange_event("accepted");
                // DEBUG: the request's own INFO line already names the
                // exchange (`record_exchange` in api/handlers.rs).
                tracing::debug!(exchange_id = %ex.exchange_id, destination = %ex.destination, "exchange accepted");
                SubmitOutcome {
                    status: ex.status().as_str().into(),
                    exchange_id: ex.exchange_id,
                    created: true,
                }
            }
            // A replay, or an identical submission that won a race.
            Inserted::Existing(ex) => return replay_outcome(ex, &original, &req.destination),
            Inserted::Conflict { existing_exchange_id } => {
                return Err(PipelineError::SubmissionConflict { existing_exchange_id })
            }
        };
        metrics::observe_accept(started.elapsed());
        Ok(outcome)
    }

    /// Receiving side: verify the whole chain, map WFS → home, sign the home
    /// translation and store the three-link chain in the inbox atomically.
    pub(super) async fn receive_inner(
        &self,
        caller_member: &str,
        env: Envelope,
    ) -> Result<ReceiveOutcome, PipelineError> {
        self.check_envelope(caller_member, &env)?;
        let id = env.exchange_id.clone();
        if let Some(item) = blocking(&self.store, move |s| s.inbox_by_exchange(&id)).await? {
            let same = item.origin == env.origin && item.chain.first() == env.chain.first();
            return if same {
                Ok(ReceiveOutcome {
                    exchange_id: item.exchange_id,
                    created: false,
                })
            } else {
                Err(PipelineError::EnvelopeConflict {
                    existing_exchange_id: item.exchange_id,
                })
            };
        }

        let new = self.receive_job().inbox_item(env, self.clock.now()).await?;
        match blocking(&self.store, move |s| s.insert_inbox(new)).await? {
            Inserted::Created(item) => {
                metrics::exchange_event("received");
                tracing::info!(exchange_id = %item.exchange_id, origin = %item.origin, cursor = item.cursor, "envelope stored in inbox");
                Ok(ReceiveOutcome {
                    exchange_id: item.exchange_id,
                    created: true,
                })
            }
            Inserted::Existing(item) => Ok(ReceiveOutcome {
                exchange_id: item.exchange_id,
                created: false,
            }),
            Inserted::Conflict { existing_exchange_id } => {
                Err(PipelineError::EnvelopeConflict { existing_exchange_id })
            }
        }
    }

    /// The checks of an envelope that need no store and no cryptography:
    /// identifier, origin, destination, peer, chain length.
    pub(super) fn check_envelope(&self, caller_member: &str, env: &Envelope) -> Result<(), PipelineError> {
        env.check_sender(caller_member)?;
        if env.destination != self.member {
            return Err(PipelineError::NotThisGateway {
                member: self.member.clone(),
                destination: env.destination.clone(),
            });
        }
        if !self.peers.contains(&env.origin) {
            return Err(PipelineError::UnknownPeer {
                origin: env.origin.clone(),
            });
        }
        if env.chain.len() != 2 {
            return Err(PipelineError::ChainLength {
                links: env.chain.len(),
            });
        }
        Ok(())
    }

    /// Translates `pred`'s learning record `from` → `to` and signs the
    /// result as a translation credential of this member's gateway.
    fn translate_and_sign(
        &self,
        pred: &VerifiedCredential,
        from: &str,
        to: &str,
        now: OffsetDateTime,
    ) -> Result<String, PipelineError> {
        translate_and_sign(&self.table, &self.local, &self.member, pred, from, to, now)
    }
}

/// Translates `pred`'s learning record `from` → `to` with `table` and signs
/// the result as a translation credential of `member`'s gateway, valid from
/// `now` (the pipeline's clock). A free function so that receive tasks can
/// run it off the request's task.
pub(super) fn translate_and_sign(
    table: &MappingTable,
    local: &LocalKeys,
    member: &str,
    pred: &VerifiedCredential,
    from: &str,
    to: &str,
    now: OffsetDateTime,
) -> Result<String, PipelineError> {
    let (learner, record) = split_subject(pred.subject())?;
    let translation = translate(&record, from, to, table)?;

    let mut subject = Map::new();
    subject.insert("id".into(), learner);
    if let Value::Object(fields) = translation.record.to_json() {
        subject.extend(fields);
    }
    let issuer = IssuerId::gateway(member)?;
    let key = local.signing_key().map_err(|e| {
        tracing::error!(error = %e, "no usable gateway signing key");
        PipelineError::SigningKeyUnavailable
    })?;
    Ok(issue_translation(
        pred,
        Value::Object(subject),
        &translation.table_id,
        &translation.table_version,
        &issuer,
        &key,
        now,
    )?)
}

/// Answer to a resubmission of a credential id that is already stored.
fn replay_outcome(
    existing: crate::store::Exchange,
    original: &VerifiedCredential,
    destination: &str,
) -> Result<SubmitOutcome, PipelineError> {
    if existing.credential_digest != original.digest_hex() || existing.destination != destination {
        return Err(PipelineError::SubmissionConflict {
            existing_exchange_id: existing.exchange_id,
        });
    }
    Ok(SubmitOutcome {
        exchange_id: existing.exchange_id.clone(),
        status: existing.status().as_str().into(),
        created: false,
    })
}
