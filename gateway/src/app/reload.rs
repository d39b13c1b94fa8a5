//! Reloading the peers at run time, and keeping outbound connections on
//! the current gateway certificate.
//!
//! On SIGHUP (or [`super::RunningGateway::reload`]) the `[peers]` section
//! of `gateway.toml` is read again: added or changed peers get a client and
//! their pinned federation key, removed peers stop being destinations or
//! accepted origins. Nothing else of the file is applied; other changes
//! need a restart. After every TLS reload (SIGHUP or a changed certificate
//! file) the peer clients are rebuilt, so pooled connections opened with the
//! old certificate are not reused; new connections present the new one in
//! any case (see [`PeerHttpClient::with_reloadable_identity`]).

use super::peers::{MtlsPeers, Peer};
use crate::config::{Config, ConfigError, MemberId, PeerConfig, TlsConfig};
use crate::jose::VerifyingKey;
use crate::pipeline::PeerSet;
use crate::transport::{ClientIdentity, PeerClientOptions, PeerHttpClient, ReloadableTls, Role, TlsError};
use crate::trust::{SeqMarksError, TrustCache};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Notify};

/// Why a reload left the peers as they were.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("the gateway was not started from a configuration file; nothing to re-read")]
    NoSource,
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("the reloaded configuration is for member {found}, this gateway is {running}")]
    OtherMember { running: String, found: String },
    #[error("federation key of peer {member} ({path}): {reason}")]
    PeerKey {
        member: String,
        path: String,
        reason: String,
    },
    #[error("TLS: {0}")]
    Tls(#[from] TlsError),
    #[error("trust marks: {0}")]
    Marks(#[from] SeqMarksError),
    #[error("the configuration reload task failed: {0}")]
    Task(String),
}

/// What a peer reload changed, by member id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerChanges {
    pub added: Vec<String>,
    /// URL or federation key changed.
    pub changed: Vec<String>,
    pub removed: Vec<String>,
}

/// The pinned federation key of peer `member`.
pub(super) fn peer_key(member: &str, peer: &PeerConfig) -> Result<VerifyingKey, ReloadError> {
    VerifyingKey::load(&peer.federation_key).map_err(|e| ReloadError::PeerKey {
        member: member.to_owned(),
        path: peer.federation_key.display().to_string(),
        reason: e.to_string(),
    })
}

/// One client per peer, each accepting only that peer's gateway identity
/// and presenting this gateway's current certificate.
pub(super) fn peer_clients(
    peers: &BTreeMap<MemberId, PeerConfig>,
    tls: &Arc<ReloadableTls>,
    tls_config: &TlsConfig,
    request_timeout: Duration,
) -> Result<BTreeMap<String, Peer>, TlsError> {
    let mut out = BTreeMap::new();
    for (member, peer) in peers {
        let options = PeerClientOptions {
            request_timeout,
            expected_server: Some(ClientIdentity::new(member.clone(), Role::Gateway)),
            ..PeerClientOptions::default()
        };
        let client = PeerHttpClient::with_reloadable_identity(
            &tls_config.ca,
            tls,
            tls_config.system_roots_outbound,
            options,
        )?;
        out.insert(
            member.clone(),
            Peer {
                base_url: peer.url.clone(),
                client,
            },
        );
    }
    Ok(out)
}

/// Everything a peer reload touches.
pub(super) struct PeerReloader {
    pub member: String,
    pub source: Option<PathBuf>,
    pub tls: Arc<ReloadableTls>,
    pub tls_config: TlsConfig,
    pub request_timeout: Duration,
    pub peers: Arc<MtlsPeers>,
    pub peer_set: PeerSet,
    pub cache: Arc<TrustCache>,
    /// Wakes the delivery supervisor, which starts tasks for destinations
    /// with queued work.
    pub delivery: Arc<Notify>,
    /// The peers in force; one reload at a time.
    pub current: tokio::sync::Mutex<BTreeMap<MemberId, PeerConfig>>,
}

fn same(a: &PeerConfig, b: &PeerConfig) -> bool {
    a.url == b.url && a.federation_key == b.federation_key
}

impl PeerReloader {
    /// Re-reads the configuration file and applies its `[peers]`.
    pub(super) async fn reload_config(&self) -> Result<PeerChanges, ReloadError> {
        let source = self.source.clone().ok_or(ReloadError::NoSource)?;
        let config = tokio::task::spawn_blocking(move || Config::load_checked(&source))
            .await
            .map_err(|e| ReloadError::Task(e.to_string()))??;
        if config.member != self.member {
            return Err(ReloadError::OtherMember {
                running: self.member.clone(),
                found: config.member,
            });
        }
        self.apply(config.peers).await
    }

    /// Makes `peers` the configured peers: all keys and clients are built
    /// first, so a bad entry changes nothing.
    pub(super) async fn apply(
        &self,
        peers: BTreeMap<MemberId, PeerConfig>,
    ) -> Result<PeerChanges, ReloadError> {
        let mut current = self.current.lock().await;
        let mut changes = PeerChanges::default();
        let mut keys = Vec::new();
        for (member, peer) in &peers {
            match current.get(member) {
                None => changes.added.push(member.clone()),
                Some(old) if !same(old, peer) => changes.changed.push(member.clone()),
                Some(_) => {}
            }
            // Re-read every key: a key file replaced in place is a change too.
            keys.push((member.clone(), peer_key(member, peer)?));
        }
        changes.removed = current
            .keys()
            .filter(|m| !peers.contains_key(*m))
            .cloned()
            .collect();
        let clients = peer_clients(&peers, &self.tls, &self.tls_config, self.request_timeout)?;
        for (member, key) in keys {
            let repinned = self.cache.pin_member(&member, key).await?;
            let known = changes.added.contains(&member) || changes.changed.contains(&member);
            if repinned && !known {
                changes.changed.push(member);
            }
        }
        self.peers.replace(clients);
        self.peer_set.replace(peers.keys().cloned().collect());
        *current = peers;
        self.delivery.notify_one();
        tracing::info!(
            added = %changes.added.join(","),
            changed = %changes.changed.join(","),
            removed = %changes.removed.join(","),
            "peers reloaded"
        );
        Ok(changes)
    }

    /// Fresh clients (and connection pools) for the current peers.
    pub(super) async fn rebuild_clients(&self) -> Result<(), TlsError> {
        let current = self.current.lock().await;
        let clients = peer_clients(&current, &self.tls, &self.tls_config, self.request_timeout)?;
        self.peers.replace(clients);
        tracing::info!("peer clients rebuilt after a TLS reload");
        Ok(())
    }

    /// Reloads the peers on SIGHUP and rebuilds the clients after each TLS
    /// reload, until `shutdown`. Failures are logged; what was in force
    /// stays in force.
    pub(super) fn spawn_watcher(
        self: Arc<Self>,
        mut shutdown: watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut hup = crate::transport::hangup_signal();
            let mut tls_reloads = self.tls.reloads();
            loop {
                enum Event {
                    Stop,
                    Hangup,
                    TlsReloaded,
                }
                let event = tokio::select! {
                    _ = shutdown.wait_for(|stop| *stop) => Event::Stop,
                    Some(()) = crate::transport::recv_hangup(&mut hup) => Event::Hangup,
                    changed = tls_reloads.changed() => match changed {
                        Ok(()) => Event::TlsReloaded,
                        Err(_) => Event::Stop,
                    },
                };
                match event {
                    Event::Stop => return,
                    Event::Hangup => {
                        if let Err(err) = self.reload_config().await {
                            tracing::error!(%err, "peer reload failed; keeping the previous peers");
                        }
                    }
                    Event::TlsReloaded => {
                        if let Err(err) = self.rebuild_clients().await {
                            tracing::error!(%err, "cannot rebuild peer clients after a TLS reload");
                        }
                    }
                }
            }
        })
    }
}
