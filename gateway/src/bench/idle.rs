//! Memory of a gateway holding many idle mTLS connections: K clients each
//! open a connection (handshake plus one request), keep it in their pool,
//! and the gateway's RSS and open descriptors are read while they are held.

use super::cluster::{Cluster, ORIGIN};
use super::BenchError;
use crate::devfed::mtls_client;
use crate::transport::{PeerHttpClient, Role};
use futures::StreamExt;
use serde::Serialize;
use std::time::Duration;

/// Connections opened at once; more would only queue in the accept backlog.
const OPEN_CONCURRENCY: usize = 32;
/// Pause before a sample so freed or touched memory settles.
const SETTLE: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Serialize)]
pub struct IdleResult {
    pub requested: usize,
    pub opened: usize,
    pub failed: usize,
    /// Open descriptors of the gateway process before, with, and after.
    pub gateway_fds_before: usize,
    pub gateway_fds_held: usize,
    pub rss_before_kib: u64,
    pub rss_held_kib: u64,
    pub rss_after_kib: u64,
    /// Per-connection cost: (held − before) / opened.
    pub kib_per_connection: f64,
}

/// Opens `k` idle connections to the origin gateway, measures, closes them.
pub async fn hold(cluster: &Cluster, k: usize) -> Result<IdleResult, BenchError> {
    let gateway = cluster.gateway(ORIGIN)?;
    let member = cluster.member(ORIGIN)?;
    let (cert, key) = member.identity(Role::CreditBank);
    let url = format!("{}/v1/exchanges/bench-idle", member.url());
    tokio::time::sleep(SETTLE).await;
    let before = gateway.sample()?;

    let mut clients: Vec<PeerHttpClient> = Vec::with_capacity(k);
    for _ in 0..k {
        clients.push(mtls_client(&cluster.federation.ca_cert, cert, key)?);
    }
    let answers: Vec<bool> = futures::stream::iter(clients.iter())
        .map(|c| {
            let url = url.clone();
            async move { c.get(&url).await.is_ok() }
        })
        .buffer_unordered(OPEN_CONCURRENCY)
        .collect()
        .await;
    let opened = answers.iter().filter(|ok| **ok).count();
    tokio::time::sleep(SETTLE).await;
    let held = gateway.sample()?;
    drop(clients);
    tokio::time::sleep(SETTLE).await;
    let after = gateway.sample()?;
    Ok(IdleResult {
        requested: k,
        opened,
        failed: k - opened,
        gateway_fds_before: before.fds,
        gateway_fds_held: held.fds,
        rss_before_kib: before.rss_kib,
        rss_held_kib: held.rss_kib,
        rss_after_kib: after.rss_kib,
        kib_per_connection: held.rss_kib.saturating_sub(before.rss_kib) as f64 / opened.max(1) as f64,
    })
}
