//! A development federation in one process: `devpki` files, gateways
//! started through [`crate::app::start`], and a credit-bank client.
//!
//! Shared by `bashu quickstart`, the end-to-end tests, the conformance
//! suite's `--spawn` mode and the benchmark, so they all exercise the same
//! code path an operator runs with `bashu serve`.

mod client;
mod fixtures;

pub use client::{CreditBank, HttpAnswer, InboxEntry};
pub use fixtures::{Fixture, FIXTURES};

use crate::app::{start, RunningGateway, StartError};
use crate::config::{Config, ConfigError};
use crate::credential::Verifier;
use crate::devpki::{DevFederation, DevPkiError};
use crate::jose::VerifyingKey;
use crate::transport::PeerHttpClient;
use crate::trust::{KeySet, SystemClock, TrustCache, TrustCacheConfig};
use std::path::Path;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum DevFedError {
    #[error("dev PKI: {0}")]
    Pki(#[from] DevPkiError),
    #[error("config: {0}")]
    Config(#[from] ConfigError),
    #[error("gateway {member} did not start: {source}")]
    Start { member: String, source: StartError },
    #[error("{0}")]
    Client(String),
}

/// Running gateways of a dev federation.
pub struct DevCluster {
    pub federation: DevFederation,
    pub gateways: Vec<RunningGateway>,
}

impl DevCluster {
    /// Writes a dev federation for `members` under `dir` and starts every gateway.
    pub async fn init_and_start(dir: &Path, members: &[&str]) -> Result<Self, DevFedError> {
        let federation = crate::devpki::init(dir, members)?;
        Self::start(federation).await
    }

    /// Starts a gateway for every member of an existing dev federation.
    pub async fn start(federation: DevFederation) -> Result<Self, DevFedError> {
        let mut gateways = Vec::with_capacity(federation.members.len());
        for member in &federation.members {
            let config = Config::load(&member.config)?;
            let gw = start(config).await.map_err(|source| DevFedError::Start {
                member: member.id.clone(),
                source,
            })?;
            gateways.push(gw);
        }
        Ok(Self { federation, gateways })
    }

    pub fn gateway(&self, member: &str) -> Option<&RunningGateway> {
        self.gateways.iter().find(|g| g.member == member)
    }

    /// The credit-bank client of `member`.
    pub fn credit_bank(&self, member: &str) -> Result<CreditBank, DevFedError> {
        let m = self
            .federation
            .member(member)
            .ok_or_else(|| DevFedError::Client(format!("no member {member}")))?;
        CreditBank::new(m, &self.federation.ca_cert)
    }

    /// A verifier that trusts every member's published key set, fetched over
    /// mTLS as `via` and checked against the pinned federation keys: what a
    /// credit bank uses to check the chains in its inbox.
    pub async fn chain_verifier(&self, via: &CreditBank) -> Result<Verifier, DevFedError> {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let mut sets = Vec::new();
        for m in &self.federation.members {
            let fed = VerifyingKey::load(&m.federation_public_key)
                .map_err(|e| DevFedError::Client(format!("federation key of {}: {e}", m.id)))?;
            let jws = via.keyset(&m.url()).await?;
            let set = KeySet::verify(&jws, &fed, now)
                .map_err(|e| DevFedError::Client(format!("key set of {}: {e}", m.id)))?;
            sets.push(set);
        }
        let cache = TrustCache::preloaded(TrustCacheConfig::default(), sets, Arc::new(SystemClock)).await;
        Ok(Verifier::new(Arc::new(cache), 60))
    }

    /// Stops every gateway gracefully.
    pub async fn shutdown(self) {
        for g in self.gateways {
            g.shutdown().await;
        }
    }
}

/// An mTLS client for an identity of the dev federation.
pub fn mtls_client(ca: &Path, cert: &Path, key: &Path) -> Result<PeerHttpClient, DevFedError> {
    PeerHttpClient::new(ca, cert, key, false).map_err(|e| DevFedError::Client(format!("TLS client: {e}")))
}
