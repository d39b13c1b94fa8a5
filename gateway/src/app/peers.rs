//! The gateway's view of its peers over mTLS: sending envelopes (for the
//! delivery worker), fetching key sets (for the trust cache) and audit
//! checkpoints (for witnessing). All ride the peer's pooled
//! [`PeerHttpClient`], so one connection serves them, and each peer's client
//! accepts only that peer's gateway identity.
//!
//! This is the composition root's adapter: it implements the fetch traits
//! of `delivery`, `trust` and `checkpoint` over `transport`, so none of
//! those modules depends on another. What a peer's answer *means* is
//! delivery's business (`delivery/answers.rs`).

use crate::checkpoint::CheckpointFetcher;
use crate::delivery::answers::{classify_batch_answer, classify_envelope_answer};
use crate::delivery::{BatchAnswer, PeerAnswer, PeerClient, SendError};
use crate::transport::{PeerHttpClient, PeerHttpError};
use crate::trust::{FetchError, KeySetFetcher};
use crate::wire::{BatchRef, Envelope, CHECKPOINT_PATH, ENVELOPES_PATH, KEYS_PATH};
use futures::future::BoxFuture;
use http::StatusCode;
use std::collections::BTreeMap;
use std::sync::{Arc, PoisonError, RwLock};

/// One peer: its base URL and a client pinned to its gateway identity.
#[derive(Clone)]
pub struct Peer {
    pub base_url: String,
    pub client: PeerHttpClient,
}

/// Every configured peer by member id. The map is replaced as a whole when
/// the peers are reloaded (SIGHUP) or the gateway certificate rotates
/// (fresh clients, fresh connection pools); a request in flight keeps the
/// client it started with.
pub struct MtlsPeers {
    peers: RwLock<Arc<BTreeMap<String, Peer>>>,
}

impl MtlsPeers {
    pub fn new(peers: BTreeMap<String, Peer>) -> Self {
        Self {
            peers: RwLock::new(Arc::new(Self::normalise(peers))),
        }
    }

    /// Swaps in a new set of peers.
    pub fn replace(&self, peers: BTreeMap<String, Peer>) {
        *self.peers.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(Self::normalise(peers));
    }

    /// Member ids of the current peers.
    pub fn members(&self) -> Vec<String> {
        self.current().keys().cloned().collect()
    }

    fn current(&self) -> Arc<BTreeMap<String, Peer>> {
        self.peers.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    fn normalise(peers: BTreeMap<String, Peer>) -> BTreeMap<String, Peer> {
        peers
            .into_iter()
            .map(|(m, p)| {
                (
                    m,
                    Peer {
                        base_url: p.base_url.trim_end_matches('/').to_owned(),
                        ..p
                    },
                )
            })
            .collect()
    }

    fn route(&self, member: &str, path: &str) -> Option<(PeerHttpClient, String)> {
        self.current()
            .get(member)
            .map(|p| (p.client.clone(), format!("{}{path}", p.base_url)))
    }
}

impl PeerClient for MtlsPeers {
    fn send<'a>(
        &'a self,
        peer: &'a str,
        envelope: &'a Envelope,
    ) -> BoxFuture<'a, Result<PeerAnswer, SendError>> {
        Box::pin(async move {
            let (client, url) = self
                .route(peer, ENVELOPES_PATH)
                .ok_or_else(|| SendError::Connect(format!("no URL configured for peer {peer}")))?;
            let response = client.post_json(&url, envelope).await.map_err(send_error)?;
            classify_envelope_answer(&response)
        })
    }

    fn send_batch<'a>(
        &'a self,
        peer: &'a str,
        envelopes: &'a [Envelope],
    ) -> BoxFuture<'a, Result<BatchAnswer, SendError>> {
        Box::pin(async move {
            let (client, url) = self
                .route(peer, ENVELOPES_PATH)
                .ok_or_else(|| SendError::Connect(format!("no URL configured for peer {peer}")))?;
            let response = client
                .post_json(&url, &BatchRef { envelopes })
                .await
                .map_err(send_error)?;
            classify_batch_answer(&response, envelopes)
        })
    }
}

impl KeySetFetcher for MtlsPeers {
    fn fetch<'a>(&'a self, member: &'a str) -> BoxFuture<'a, Result<String, FetchError>> {
        Box::pin(async move {
            let (client, url) = self
                .route(member, KEYS_PATH)
                .ok_or_else(|| FetchError::UnknownMember(member.to_owned()))?;
            let response = client
                .get(&url)
                .await
                .map_err(|e| FetchError::unreachable(member, e.to_string()))?;
            if response.status != StatusCode::OK {
                return Err(FetchError::unreachable(
                    member,
                    format!("HTTP {}", response.status),
                ));
            }
            String::from_utf8(response.body.to_vec())
                .map(|s| s.trim().to_owned())
                .map_err(|_| FetchError::unreachable(member, "key set is not UTF-8"))
        })
    }
}

impl CheckpointFetcher for MtlsPeers {
    fn fetch_checkpoint<'a>(&'a self, member: &'a str) -> BoxFuture<'a, Result<Option<String>, String>> {
        Box::pin(async move {
            let (client, url) = self
                .route(member, CHECKPOINT_PATH)
                .ok_or_else(|| format!("no URL configured for peer {member}"))?;
            let response = client.get(&url).await.map_err(|e| e.to_string())?;
            match response.status {
                StatusCode::OK => String::from_utf8(response.body.to_vec())
                    .map(|s| Some(s.trim().to_owned()))
                    .map_err(|_| "checkpoint is not UTF-8".to_owned()),
                // The peer has not signed one yet (an empty audit log).
                StatusCode::NOT_FOUND => Ok(None),
                other => Err(format!("HTTP {other}")),
            }
        })
    }
}

fn send_error(e: PeerHttpError) -> SendError {
    match e {
        PeerHttpError::Timeout { .. } => SendError::Timeout,
        other => SendError::Connect(other.to_string()),
    }
}
