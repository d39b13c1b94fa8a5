//! Wiring: builds one running gateway from a validated [`Config`].
//!
//! Everything that talks to the outside world is created here, once, and
//! handed to the modules that use it; no module reaches for globals. The
//! same entry point serves `bashu serve`, the quickstart, the end-to-end
//! tests, the conformance suite's `--spawn` mode and the benchmark.

mod peers;
mod reload;

pub use peers::{MtlsPeers, Peer};
pub use reload::{PeerChanges, ReloadError};

use crate::config::Config;
use crate::credential::Verifier;
use crate::delivery::{DeliveryWorker, SystemClock};
use crate::pipeline::{GatewayService, PeerSet, Pipeline};
use crate::store::{db_path, SqliteStore, Store};
use crate::transport::{ReloadableTls, TlsPaths};
use crate::trust::{FileSeqMarks, LocalKeys, MemberRouter, TrustCache, TrustCacheConfig};
use schema_mapper::MappingTable;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

/// How often certificate files are checked for changes (SIGHUP is immediate).
const TLS_POLL: Duration = Duration::from_secs(5);

/// Why a gateway could not start. Each names what to fix.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot create data directory {path}: {source}")]
    DataDir { path: String, source: std::io::Error },
    #[error("the task opening the store failed: {0}")]
    StoreTask(String),
    #[error("cannot open store: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("mapping table {path}: {reason}")]
    MappingTable { path: String, reason: String },
    #[error("home framework {framework:?} is not covered by mapping table {table}")]
    FrameworkNotInTable { framework: String, table: String },
    #[error("trust keys: {0}")]
    Keys(#[from] crate::trust::KeyStoreError),
    #[error("{0}")]
    TrustMarks(#[from] crate::trust::SeqMarksError),
    #[error("federation key of peer {member} ({path}): {reason}")]
    PeerKey {
        member: String,
        path: String,
        reason: String,
    },
    #[error("TLS: {0}")]
    Tls(#[from] crate::transport::TlsError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// A started gateway. Dropping it does not stop it; call [`shutdown`](Self::shutdown).
pub struct RunningGateway {
    pub member: String,
    pub api_addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    pub service: Arc<dyn GatewayService>,
    shutdown: watch::Sender<bool>,
    tasks: JoinSet<()>,
    tls: Arc<ReloadableTls>,
    reloader: Arc<reload::PeerReloader>,
}

impl RunningGateway {
    /// Stops accepting, lets in-flight requests and the current delivery
    /// attempt finish, then returns.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        while self.tasks.join_next().await.is_some() {}
    }

    /// What SIGHUP does: reloads the TLS files, then the `[peers]` section
    /// of the configuration file (see [`reload`](self::reload)). A TLS
    /// failure keeps the previous certificate and is reported without
    /// touching the peers.
    pub async fn reload(&self) -> Result<PeerChanges, ReloadError> {
        self.tls.reload()?;
        self.reloader.reload_config().await
    }

    /// Waits until a task ends on its own (it should not) or shutdown is asked.
    pub async fn wait(&mut self) {
        let _ = self.tasks.join_next().await;
    }
}

/// Opens the store, loads keys and tables, binds both listeners and starts
/// the API server, the metrics server, the delivery worker and the TLS
/// reload watcher. Must be called inside a tokio runtime.
pub async fn start(config: Config) -> Result<RunningGateway, StartError> {
    std::fs::create_dir_all(&config.data_dir).map_err(|source| StartError::DataDir {
        path: config.data_dir.display().to_string(),
        source,
    })?;
    let db = db_path(&config.data_dir);
    // Opening runs migrations and fsyncs: keep it off the async workers.
    let opened = tokio::task::spawn_blocking(move || SqliteStore::open(&db))
        .await
        .map_err(|e| StartError::StoreTask(e.to_string()))?;
    let store: Arc<dyn Store> = Arc::new(opened?);
    let table = load_table(&config)?;

    let local = Arc::new(LocalKeys::open(
        &config.trust.keystore,
        &config.trust.federation_key,
        config.trust.keyset_ttl_secs,
    )?);
    local.signing_key()?;
    let tls = ReloadableTls::load(TlsPaths::from(&config.tls))?;
    let mut pinned = HashMap::from([(config.member.clone(), local.federation_public())]);
    for (member, peer) in &config.peers {
        let key = reload::peer_key(member, peer).map_err(|e| StartError::PeerKey {
            member: member.clone(),
            path: peer.federation_key.display().to_string(),
            reason: e.to_string(),
        })?;
        pinned.insert(member.clone(), key);
    }
    // Per peer, a client that accepts only that peer's gateway identity
    // and presents this gateway's current (reloadable) certificate.
    let delivery_timeout = Duration::from_millis(config.delivery.request_timeout_ms);
    let peer_clients = reload::peer_clients(&config.peers, &tls, &config.tls, delivery_timeout)?;
    let peers = Arc::new(MtlsPeers::new(peer_clients));

    let fetcher = MemberRouter::new()
        .route(&config.member, local.clone())
        .fallback(peers.clone());
    let marks = Arc::new(FileSeqMarks::in_data_dir(&config.data_dir)?);
    let cache = Arc::new(
        TrustCache::new(TrustCacheConfig::from(&config.trust), pinned, Arc::new(fetcher))
            .with_seq_marks(marks)?,
    );
    let verifier = Verifier::new(cache.clone(), config.trust.clock_skew_secs);

    let worker = DeliveryWorker::new(
        store.clone(),
        peers.clone(),
        config.delivery.clone(),
        Arc::new(SystemClock),
    )
    .with_peers(config.peers.keys());
    let peer_set: PeerSet = config.peers.keys().cloned().collect();
    let reloader = Arc::new(reload::PeerReloader {
        member: config.member.clone(),
        source: config.source.clone(),
        tls: Arc::clone(&tls),
        tls_config: config.tls.clone(),
        request_timeout: delivery_timeout,
        peers,
        peer_set: peer_set.clone(),
        cache,
        delivery: worker.notifier(),
        current: tokio::sync::Mutex::new(config.peers.clone()),
    });
    let pipeline: Arc<dyn GatewayService> = Arc::new(Pipeline {
        member: config.member.clone(),
        framework: config.framework.clone(),
        peers: peer_set,
        table,
        verifier,
        local,
        store,
        delivery: worker.notifier(),
        clock: Arc::new(SystemClock),
    });

    let api_listener = bind(config.listen.api).await?;
    let metrics_listener = bind(config.listen.metrics).await?;
    let api_addr = local_addr(&api_listener, config.listen.api);
    let metrics_addr = local_addr(&metrics_listener, config.listen.metrics);

    let (shutdown, rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    let watcher = tls.spawn_watcher(TLS_POLL, rx.clone());
    tasks.spawn(async move {
        let _ = watcher.await;
    });
    let peer_watcher = Arc::clone(&reloader).spawn_watcher(rx.clone());
    tasks.spawn(async move {
        let _ = peer_watcher.await;
    });
    tasks.spawn(crate::api::serve(
        api_listener,
        Arc::clone(&tls),
        pipeline.clone(),
        config.member.clone(),
        config.limits.clone(),
        rx.clone(),
    ));
    tasks.spawn(crate::metrics::serve(
        metrics_listener,
        crate::metrics::ready_probe(pipeline.clone()),
        rx.clone(),
    ));
    tasks.spawn(worker.run(rx));
    tracing::info!(member = %config.member, api = %api_addr, metrics = %metrics_addr, "gateway started");
    Ok(RunningGateway {
        member: config.member,
        api_addr,
        metrics_addr,
        service: pipeline,
        shutdown,
        tasks,
        tls,
        reloader,
    })
}

fn load_table(config: &Config) -> Result<MappingTable, StartError> {
    let table = match &config.mapping.table {
        None => MappingTable::reference(),
        Some(path) => crate::cli::map::load_table(path).map_err(|reason| StartError::MappingTable {
            path: path.display().to_string(),
            reason,
        })?,
    };
    if table.framework(&config.framework).is_none() {
        return Err(StartError::FrameworkNotInTable {
            framework: config.framework.clone(),
            table: table.id().to_owned(),
        });
    }
    Ok(table)
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { addr, source })
}

fn local_addr(listener: &TcpListener, configured: SocketAddr) -> SocketAddr {
    listener.local_addr().unwrap_or(configured)
}
