//! The federation under test: two gateways run as child processes of this
//! executable (`bashu serve --config …`), so CPU time and RSS are read per
//! gateway from `/proc/<pid>` and nothing of the load generator is counted.
//!
//! With a PostgreSQL store (issue 10), the origin member cq runs as N
//! replica processes sharing one database (configs written as by `bashu dev
//! init --replicas`); the receiver sc stays on SQLite, so the figures isolate
//! the origin's store.

use super::procstat::{self, ProcSample};
use super::BenchError;
use crate::config::StoreUrl;
use crate::devfed::CreditBank;
use crate::devpki::{DevFederation, DevMember};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Members of the benchmark federation: credentials flow cq → sc.
pub const ORIGIN: &str = "cq";
pub const DESTINATION: &str = "sc";

/// How long a gateway gets to answer its first request after spawning.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a gateway gets to drain after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Appended to every `gateway.toml`. The per-identity rate limit (default
/// 500 requests/s, burst 1,000) would otherwise cap one credit bank — and the
/// peer gateway's delivery — below what the pipeline can do; the benchmark
/// measures the pipeline, the limit is a policy each operator sets.
const BENCH_CONFIG: &str = "
[limits]
rate_per_second = 1000000
rate_burst = 1000000
max_connections = 8192
";

/// One gateway process.
pub struct ChildGateway {
    pub member: String,
    /// `cq`, or `cq/replica-2` when the member runs as replicas.
    pub label: String,
    /// The member as seen through this process (its addresses).
    pub view: DevMember,
    child: Child,
    pub log: PathBuf,
}

impl ChildGateway {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// CPU and memory counters of the gateway process.
    pub fn sample(&self) -> Result<ProcSample, BenchError> {
        Ok(procstat::sample(&self.pid().to_string())?)
    }

    /// SIGTERM (graceful drain), then SIGKILL if it does not exit in time.
    fn stop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ChildGateway {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A running two-member federation.
pub struct Cluster {
    pub federation: DevFederation,
    pub gateways: Vec<ChildGateway>,
}

/// Where the origin member keeps its state.
#[derive(Debug, Clone)]
pub enum OriginStore {
    /// One gateway on its own SQLite file (the default).
    Sqlite,
    /// `replicas` gateways sharing the PostgreSQL database at `url`.
    Postgres { url: StoreUrl, replicas: usize },
}

impl Cluster {
    /// Writes a dev federation under `dir`, applies [`BENCH_CONFIG`] and
    /// starts one `serve` child per member (per replica of the origin on
    /// PostgreSQL), waiting until each answers.
    pub async fn start(dir: &Path, store: &OriginStore) -> Result<Self, BenchError> {
        let federation = crate::devpki::init(dir, &[ORIGIN, DESTINATION])?;
        let exe = std::env::current_exe().map_err(|e| BenchError::io("locating this executable", e))?;
        let mut gateways = Vec::new();
        for m in &federation.members {
            append_config(m)?;
            match store {
                OriginStore::Postgres { url, replicas } if m.id == ORIGIN => {
                    for r in crate::devpki::write_replicas(&federation, ORIGIN, *replicas, url)? {
                        let label = format!("{}/replica-{}", m.id, r.index);
                        gateways.push(spawn(&exe, r.view(m), label, &r.dir)?);
                    }
                }
                _ => gateways.push(spawn(&exe, m.clone(), m.id.clone(), &m.dir)?),
            }
        }
        let mut cluster = Self { federation, gateways };
        for i in 0..cluster.gateways.len() {
            cluster.wait_ready(i).await?;
        }
        Ok(cluster)
    }

    pub fn member(&self, id: &str) -> Result<&DevMember, BenchError> {
        self.federation
            .member(id)
            .ok_or_else(|| BenchError::Setup(format!("no member {id}")))
    }

    pub fn gateway(&self, id: &str) -> Result<&ChildGateway, BenchError> {
        self.gateways
            .iter()
            .find(|g| g.member == id)
            .ok_or_else(|| BenchError::Setup(format!("no gateway {id}")))
    }

    /// A fresh credit-bank client of `member`: its own connection pool.
    pub fn credit_bank(&self, member: &str) -> Result<CreditBank, BenchError> {
        Ok(CreditBank::new(self.member(member)?, &self.federation.ca_cert)?)
    }

    /// A fresh credit-bank client of process `n` (round-robin) among the
    /// origin's gateways: with replicas, client `n` talks to replica
    /// `n % replicas + 1`, spreading submissions evenly over them.
    pub fn origin_bank(&self, n: usize) -> Result<CreditBank, BenchError> {
        let origins: Vec<&ChildGateway> = self.gateways.iter().filter(|g| g.member == ORIGIN).collect();
        let g = origins
            .get(n % origins.len().max(1))
            .ok_or_else(|| BenchError::Setup(format!("no gateway {ORIGIN}")))?;
        Ok(CreditBank::new(&g.view, &self.federation.ca_cert)?)
    }

    /// Counters of every gateway process, labelled, in start order.
    pub fn samples(&self) -> Result<Vec<(String, ProcSample)>, BenchError> {
        self.gateways
            .iter()
            .map(|g| Ok((g.label.clone(), g.sample()?)))
            .collect()
    }

    /// Saves each gateway's Prometheus text as `<member>/metrics.prom`:
    /// the server-side view (per-route latency, delivery attempts) of the run.
    pub async fn save_metrics(&self) -> Result<(), BenchError> {
        for m in &self.federation.members {
            let text = fetch_metrics(m.metrics_addr).await?;
            std::fs::write(m.dir.join("metrics.prom"), text)
                .map_err(|e| BenchError::io("writing metrics.prom", e))?;
        }
        Ok(())
    }

    /// Polls the key-set endpoint of gateway `index` over mTLS until it
    /// answers; fails at once if the process exits.
    async fn wait_ready(&mut self, index: usize) -> Result<(), BenchError> {
        let id = self.gateways[index].label.clone();
        let view = self.gateways[index].view.clone();
        let url = view.url();
        let bank = CreditBank::new(&view, &self.federation.ca_cert)?;
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if bank.keyset(&url).await.is_ok() {
                return Ok(());
            }
            let g = &mut self.gateways[index];
            let exited = matches!(g.child.try_wait(), Ok(Some(_)));
            if exited || Instant::now() >= deadline {
                let why = if exited { "exited" } else { "did not become ready" };
                return Err(BenchError::Setup(format!(
                    "gateway {id} {why}; see {}",
                    g.log.display()
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn append_config(m: &DevMember) -> Result<(), BenchError> {
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&m.config)
        .map_err(|e| BenchError::io("opening gateway.toml", e))?;
    f.write_all(BENCH_CONFIG.as_bytes())
        .map_err(|e| BenchError::io("writing gateway.toml", e))
}

fn spawn(exe: &Path, m: DevMember, label: String, dir: &Path) -> Result<ChildGateway, BenchError> {
    let log = dir.join("gateway.log");
    let file = std::fs::File::create(&log).map_err(|e| BenchError::io("creating the gateway log", e))?;
    let child = Command::new(exe)
        .arg("serve")
        .arg("--config")
        .arg(&m.config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(file)
        .spawn()
        .map_err(|e| BenchError::io("spawning `bashu serve`", e))?;
    Ok(ChildGateway {
        member: m.id.clone(),
        label,
        view: m,
        child,
        log,
    })
}

/// `GET /metrics` on the plain-HTTP loopback listener (HTTP/1.0, read to EOF).
async fn fetch_metrics(addr: std::net::SocketAddr) -> Result<String, BenchError> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let io = |e| BenchError::io("reading /metrics", e);
    let mut tcp = tokio::net::TcpStream::connect(addr).await.map_err(io)?;
    tcp.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .await
        .map_err(io)?;
    let mut raw = Vec::new();
    tokio::time::timeout(READY_TIMEOUT, tcp.read_to_end(&mut raw))
        .await
        .map_err(|_| BenchError::Setup(format!("/metrics on {addr} timed out")))?
        .map_err(io)?;
    let text = String::from_utf8_lossy(&raw);
    Ok(text
        .split_once("\r\n\r\n")
        .map_or(&*text, |(_, body)| body)
        .to_owned())
}
