//! Wiring: builds one running gateway from a validated [`Config`].
//!
//! Everything that talks to the outside world is created here, once, and
//! handed to the modules that use it; no module reaches for globals. The
//! same entry point serves `bashu serve`, the quickstart, the end-to-end
//! tests, the conformance suite's `--spawn` mode and the benchmark.

mod peers;
mod reload;
mod secrets;

pub use peers::{MtlsPeers, Peer};
pub use reload::{PeerChanges, ReloadError};
pub use secrets::{check_private_file, check_private_key_files, KeyFileError};

use crate::checkpoint::{Checkpointer, Witness};
use crate::config::Config;
use crate::credential::Verifier;
use crate::delivery::{DeliveryWorker, SystemClock};
use crate::mapping::MappingTables;
use crate::pipeline::{GatewayService, PeerSet, Pipeline};
use crate::store::{open_configured, CheckpointStore, Store};
use crate::transport::{ReloadableTls, TlsPaths};
use crate::trust::local::{sync_own_keys, watch_own_keys, OWN_KEYS_POLL};
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

/// How often the store's housekeeping (WAL checkpoint when idle) runs.
const STORE_MAINTENANCE: Duration = Duration::from_secs(10);

/// Why a gateway could not start. Each names what to fix.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot create data directory {path}: {source}")]
    DataDir { path: String, source: std::io::Error },
    #[error("the task opening the store failed: {0}")]
    StoreTask(String),
    #[error("cannot open store: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("{0}")]
    KeyFile(#[from] KeyFileError),
    #[error(transparent)]
    MappingTable(#[from] crate::mapping::TablesError),
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
    checkpointer: Arc<Checkpointer>,
    tls: Arc<ReloadableTls>,
    reloader: Arc<reload::PeerReloader>,
}

impl RunningGateway {
    /// Stops accepting, lets in-flight requests and the current delivery
    /// attempt finish, then returns.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        while self.tasks.join_next().await.is_some() {}
        // Every writer has stopped: this checkpoint covers the whole log.
        let _ = self.checkpointer.sign_now().await;
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
    // --- store safety (resil-store): key file modes, then the data
    // directory's lock, identity marker, permissions and health checks.
    check_private_key_files(&config)?;
    // Opening runs checks, migrations and a durable write: off the async
    // workers. SQLite in data_dir, or the PostgreSQL of `[store] url`.
    let store_config = config.clone();
    let opened = tokio::task::spawn_blocking(move || open_configured(&store_config))
        .await
        .map_err(|e| StartError::StoreTask(e.to_string()))??;
    let checkpoints: Arc<dyn CheckpointStore> = opened.checkpoints;
    let store: Arc<dyn Store> = opened.store;
    raise_cursor_floor(&store).await?;
    // --- end store safety
    let (table, tables) = load_tables(&config)?;

    let local = Arc::new(LocalKeys::open(
        &config.trust.keystore,
        &config.trust.federation_key,
        config.trust.keyset_ttl_secs,
    )?);
    local.signing_key()?;
    // Refuses a certificate that is not this member's gateway identity and
    // CRLs that are out of date or not signed by their CA (naming the file).
    let tls = ReloadableTls::load_gateway(TlsPaths::from(&config.tls), &config.member)?;
    let tls_ready = Arc::clone(&tls);
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
    let witness = Arc::new(Witness::new(
        config.peers.keys().cloned().collect(),
        peers.clone(),
        cache.clone(),
        checkpoints.clone(),
        Arc::new(crate::trust::SystemClock),
    ));
    let checkpointer = Arc::new(Checkpointer::new(
        config.member.clone(),
        checkpoints,
        local.clone(),
        Arc::new(crate::trust::SystemClock),
    ));
    // Own revocations apply before the first request is served.
    sync_own_keys(&config.member, &local, &cache).await;
    let verifier = Verifier::new(cache.clone(), config.trust.clock_skew_secs).with_tables(Arc::new(tables));

    let store_for_maintenance = store.clone();
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
        cache: cache.clone(),
        delivery: worker.notifier(),
        current: tokio::sync::Mutex::new(config.peers.clone()),
    });
    let pipeline: Arc<dyn GatewayService> = Arc::new(Pipeline {
        member: config.member.clone(),
        framework: config.framework.clone(),
        peers: peer_set,
        table: Arc::new(table),
        verifier,
        local: local.clone(),
        store,
        delivery: worker.notifier(),
        clock: Arc::new(SystemClock),
        // Batch verification runs on the runtime's workers (one worker per
        // core): leave one free, so a 256-envelope batch never holds every
        // worker and starves the connections' I/O.
        verify_pool: Arc::new(tokio::sync::Semaphore::new(
            std::thread::available_parallelism()
                .map_or(1, |n| n.get().saturating_sub(1))
                .max(1),
        )),
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
    let ready = crate::api::ready_probe_with(crate::api::ready_probe(pipeline.clone()), move || {
        tls_ready.readiness()
    });
    tasks.spawn(crate::api::serve_ops(metrics_listener, ready, rx.clone()));
    tasks.spawn(watch_own_keys(local, cache, OWN_KEYS_POLL, rx.clone()));
    tasks.spawn(crate::store::maintain_periodically(
        store_for_maintenance,
        STORE_MAINTENANCE,
        rx.clone(),
    ));
    tasks.spawn(checkpointer.clone().run(
        Duration::from_secs(config.audit.checkpoint_interval_secs),
        rx.clone(),
    ));
    tasks.spawn(witness.run(
        Duration::from_secs(config.audit.witness_interval_secs),
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
        checkpointer,
        tls,
        reloader,
    })
}

/// Inbox cursors continue above the current time in microseconds, raised
/// at every start, so a store restored from a backup (even by copying files
/// by hand) never hands out a cursor a credit bank has already seen (SPEC
/// v1.1 §5), as long as the clock does not step back.
async fn raise_cursor_floor(store: &Arc<dyn Store>) -> Result<(), StartError> {
    let now = time::OffsetDateTime::now_utc();
    let floor = crate::store::cursor_floor_at(now);
    crate::store::blocking(store.clone(), move |s| s.raise_inbox_cursor_floor(floor, now))
        .await
        .map(|_| ())
        .map_err(StartError::Store)
}

/// This member's home table, and every table translations from peers are
/// recomputed with: the reference table, the home table and
/// `[mapping] tables`.
fn load_tables(config: &Config) -> Result<(MappingTable, MappingTables), StartError> {
    let mut tables = MappingTables::reference();
    for path in &config.mapping.tables {
        tables.load_file(path)?;
    }
    let table = match &config.mapping.table {
        None => MappingTable::reference(),
        Some(path) => tables.load_file(path)?,
    };
    if table.framework(&config.framework).is_none() {
        return Err(StartError::FrameworkNotInTable {
            framework: config.framework.clone(),
            table: table.id().to_owned(),
        });
    }
    Ok((table, tables))
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { addr, source })
}

fn local_addr(listener: &TcpListener, configured: SocketAddr) -> SocketAddr {
    listener.local_addr().unwrap_or(configured)
}
