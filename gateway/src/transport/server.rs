//! Server-side TLS: client-certificate verification and hot reload.

use super::client_eku::RequireClientAuth;
use super::crl::{self, CrlSet};
use super::{own_cert, pem, provider, tls_metrics, TlsError, PROTOCOL_VERSIONS};
use crate::config::TlsConfig;
use rustls::server::WebPkiClientVerifier;
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, SystemTime};
use tokio::sync::watch;

/// ALPN ids offered by the listener, HTTP/2 preferred.
const ALPN: &[&[u8]] = &[b"h2", b"http/1.1"];

/// Builds the listener configuration: our chain and key, client certificates
/// required and verified against the federation CA and `crls`.
///
/// With CRLs configured, revocation is checked for the whole chain and an
/// unknown status is a failure, so every issuing CA needs a CRL. Each CRL
/// must pass the admission checks of `crl` (signed by its CA, `nextUpdate`
/// in the future); at handshake time `nextUpdate` is enforced, and the leaf
/// must carry the clientAuth EKU.
pub fn server_tls_config(
    ca: &Path,
    cert: &Path,
    key: &Path,
    crls: &[PathBuf],
) -> Result<Arc<ServerConfig>, TlsError> {
    let paths = TlsPaths {
        ca: ca.to_owned(),
        cert: cert.to_owned(),
        key: key.to_owned(),
        crls: crls.to_vec(),
    };
    Ok(build(&paths, None)?.config)
}

/// A built listener configuration and the CRLs it enforces.
struct Built {
    config: Arc<ServerConfig>,
    crls: Arc<CrlSet>,
}

/// Builds from `paths`; with `own_member`, our certificate must be that
/// member's gateway certificate (see `own_cert`).
fn build(paths: &TlsPaths, own_member: Option<&str>) -> Result<Built, TlsError> {
    let provider = provider();
    let roots = Arc::new(pem::load_roots(&paths.ca)?);
    let (crl_ders, crls) = crl::load(&paths.ca, &roots, &paths.crls, &provider, unix_now())?;
    let webpki = WebPkiClientVerifier::builder_with_provider(roots, provider.clone())
        .with_crls(crl_ders)
        .enforce_revocation_expiration()
        .build()?;
    let verifier = Arc::new(RequireClientAuth::new(webpki));
    let chain = pem::load_certs(&paths.cert)?;
    if let Some(member) = own_member {
        own_cert::check(&paths.cert, &chain, member)?;
    }
    let key = pem::load_key(&paths.key)?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(PROTOCOL_VERSIONS)
        .map_err(|source| TlsError::Rustls {
            context: "protocol versions",
            source,
        })?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|source| key_error(&paths.cert, &paths.key, "server certificate and key", source))?;
    config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    Ok(Built {
        config: Arc::new(config),
        crls: Arc::new(crls),
    })
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// The files a [`ReloadableTls`] is built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsPaths {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub crls: Vec<PathBuf>,
}

impl From<&TlsConfig> for TlsPaths {
    fn from(tls: &TlsConfig) -> Self {
        Self {
            ca: tls.ca.clone(),
            cert: tls.cert.clone(),
            key: tls.key.clone(),
            crls: tls.crls.clone(),
        }
    }
}

impl TlsPaths {
    fn all(&self) -> impl Iterator<Item = &Path> {
        [&self.ca, &self.cert, &self.key]
            .into_iter()
            .chain(self.crls.iter())
            .map(PathBuf::as_path)
    }

    /// Latest modification time over every file; `None` if one is missing,
    /// which is typical half-way through a non-atomic replacement.
    fn newest_mtime(&self) -> Option<SystemTime> {
        self.all()
            .map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
            .try_fold(SystemTime::UNIX_EPOCH, |acc, m| m.map(|m| acc.max(m)))
    }
}

/// The listener's TLS configuration, swappable at run time.
///
/// The accept loop takes [`ReloadableTls::current`] once per connection, so a
/// reload affects new connections only; established connections keep the
/// configuration they were accepted with and are never dropped. A reload that
/// fails (bad PEM, key not matching, CA missing) keeps the previous
/// configuration: a botched certificate rollout does not take the gateway down.
/// So does a reload with an out-of-date or foreign-signed CRL, or (for a
/// gateway, [`ReloadableTls::load_gateway`]) a certificate that is not the
/// member's gateway identity; each refusal is logged at ERROR and counted in
/// `bashu_tls_reload_failures_total{reason}`.
#[derive(Debug)]
pub struct ReloadableTls {
    paths: TlsPaths,
    /// Member whose gateway certificate `paths.cert` must be, if checked.
    own_member: Option<String>,
    current: RwLock<Arc<ServerConfig>>,
    /// The CRLs enforced by `current` (swapped together with it).
    crls: RwLock<Arc<CrlSet>>,
    /// The same certificate and key for outbound connections (see
    /// [`ReloadableTls::certified_key`]), swapped with `current`.
    client_key: RwLock<Arc<CertifiedKey>>,
    /// Count of successful reloads, observable by [`ReloadableTls::reloads`].
    generation: watch::Sender<u64>,
    /// Newest file modification time seen before the last load attempt; the
    /// watcher reloads when the files are newer than this.
    stamp: Mutex<Option<SystemTime>>,
}

impl ReloadableTls {
    /// Loads the initial configuration; fails if it cannot be built. The
    /// certificate's identity is not checked (tests, tools); a gateway uses
    /// [`ReloadableTls::load_gateway`].
    pub fn load(paths: TlsPaths) -> Result<Arc<Self>, TlsError> {
        Self::load_with(paths, None)
    }

    /// Like [`ReloadableTls::load`], and the certificate must be `member`'s
    /// gateway certificate (SPIFFE id, serverAuth and clientAuth EKUs), now
    /// and on every reload.
    pub fn load_gateway(paths: TlsPaths, member: &str) -> Result<Arc<Self>, TlsError> {
        Self::load_with(paths, Some(member.to_owned()))
    }

    fn load_with(paths: TlsPaths, own_member: Option<String>) -> Result<Arc<Self>, TlsError> {
        // Stamped before reading, so a change racing with the read is seen later.
        let stamp = Mutex::new(paths.newest_mtime());
        let built = build(&paths, own_member.as_deref())?;
        let client_key = certified_key(&paths.cert, &paths.key)?;
        tls_metrics::crls_in_force(&built.crls);
        Ok(Arc::new(Self {
            paths,
            own_member,
            current: RwLock::new(built.config),
            crls: RwLock::new(built.crls),
            client_key: RwLock::new(client_key),
            generation: watch::Sender::new(0),
            stamp,
        }))
    }

    /// `Err` with the reason when client certificates of some CA are refused
    /// because its CRL passed `nextUpdate` (the handshake fails closed for
    /// them); used by `/readyz`.
    pub fn readiness(&self) -> Result<(), String> {
        self.readiness_at(unix_now())
    }

    /// [`ReloadableTls::readiness`] at `now` (Unix seconds).
    pub fn readiness_at(&self, now: i64) -> Result<(), String> {
        self.crls
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .check_current(now)
    }

    pub fn paths(&self) -> &TlsPaths {
        &self.paths
    }

    /// The configuration for the next accepted connection.
    pub fn current(&self) -> Arc<ServerConfig> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Re-reads every file and swaps the configuration in, all or nothing.
    /// A refusal is logged at ERROR and counted; the previous configuration
    /// stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        self.reload_on("request")
    }

    fn reload_on(&self, trigger: &'static str) -> Result<(), TlsError> {
        let p = &self.paths;
        *self.stamp.lock().unwrap_or_else(PoisonError::into_inner) = p.newest_mtime();
        let fresh = match build(p, self.own_member.as_deref())
            .and_then(|built| Ok((built, certified_key(&p.cert, &p.key)?)))
        {
            Ok(fresh) => fresh,
            Err(err) => {
                tls_metrics::reload_failed(err.reason());
                tracing::error!(%err, reason = err.reason(), trigger, "TLS reload refused; keeping the previous configuration");
                return Err(err);
            }
        };
        let (fresh, fresh_client) = fresh;
        tls_metrics::crls_in_force(&fresh.crls);
        {
            // All under the config lock, so no reader pairs old and new.
            let mut current = self.current.write().unwrap_or_else(PoisonError::into_inner);
            *self.crls.write().unwrap_or_else(PoisonError::into_inner) = fresh.crls;
            *self.client_key.write().unwrap_or_else(PoisonError::into_inner) = fresh_client;
            *current = fresh.config;
        }
        self.generation.send_modify(|g| *g += 1);
        tracing::info!(cert = %p.cert.display(), trigger, "TLS configuration reloaded");
        Ok(())
    }

    /// This gateway's certificate chain and key as last (re)loaded, for
    /// outbound connections: peers must see the same identity the listener
    /// presents, including right after a rotation.
    pub fn certified_key(&self) -> Arc<CertifiedKey> {
        self.client_key
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Changes with every successful reload (the value counts them).
    pub fn reloads(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }

    /// Reloads on SIGHUP and whenever a file's modification time changes
    /// (checked every `poll`), until `shutdown` turns true. Failures are
    /// logged and the previous configuration stays in force.
    pub fn spawn_watcher(
        self: &Arc<Self>,
        poll: Duration,
        mut shutdown: watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let mut hup = hangup_signal();
            let mut tick = tokio::time::interval(poll);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut crls_were_current = true;
            loop {
                let reason = tokio::select! {
                    _ = shutdown.wait_for(|stop| *stop) => return,
                    Some(()) = recv_hangup(&mut hup) => "SIGHUP",
                    _ = tick.tick() => {
                        // Say once, loudly, when a CRL goes out of date.
                        let current = this.readiness();
                        if let (true, Err(why)) = (crls_were_current, &current) {
                            tracing::error!(%why, "a CRL passed its nextUpdate; refusing that CA's client certificates");
                        }
                        crls_were_current = current.is_ok();
                        let now = this.paths.newest_mtime();
                        let seen = *this.stamp.lock().unwrap_or_else(PoisonError::into_inner);
                        if now.is_none() || now == seen {
                            continue;
                        }
                        "file change"
                    }
                };
                // A failed reload (logged and counted by reload_on) is not
                // retried until the files change again.
                let _ = this.reload_on(reason);
            }
        })
    }
}

/// The chain and key of `cert`/`key` as a rustls [`CertifiedKey`].
fn certified_key(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, TlsError> {
    let chain = pem::load_certs(cert)?;
    let signing = provider()
        .key_provider
        .load_private_key(pem::load_key(key)?)
        .map_err(|source| TlsError::Rustls {
            context: "gateway key",
            source,
        })?;
    let certified = CertifiedKey::new(chain, signing);
    certified
        .keys_match()
        .map_err(|source| key_error(cert, key, "gateway certificate and key", source))?;
    Ok(Arc::new(certified))
}

/// A key/certificate mismatch names both files; other errors keep `context`.
pub(super) fn key_error(cert: &Path, key: &Path, context: &'static str, source: rustls::Error) -> TlsError {
    match source {
        rustls::Error::InconsistentKeys(_) => TlsError::KeyMismatch {
            cert: cert.to_owned(),
            key: key.to_owned(),
            reason: source.to_string(),
        },
        source => TlsError::Rustls { context, source },
    }
}

#[cfg(unix)]
pub(crate) type Hangup = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
pub(crate) type Hangup = Option<()>;

#[cfg(unix)]
pub(crate) fn hangup_signal() -> Hangup {
    use tokio::signal::unix::{signal, SignalKind};
    signal(SignalKind::hangup())
        .map_err(|err| tracing::warn!(%err, "cannot listen for SIGHUP; relying on file polling"))
        .ok()
}

#[cfg(not(unix))]
pub(crate) fn hangup_signal() -> Hangup {
    None
}

#[cfg(unix)]
pub(crate) async fn recv_hangup(hup: &mut Hangup) -> Option<()> {
    match hup {
        Some(sig) => sig.recv().await,
        None => std::future::pending().await,
    }
}

#[cfg(not(unix))]
pub(crate) async fn recv_hangup(_: &mut Hangup) -> Option<()> {
    std::future::pending().await
}
