//! `bashu quickstart --replicas N [--store-url URL]`: the quickstart with
//! member cq as N `bashu serve` processes sharing one PostgreSQL database
//! (docs/operations.md "High availability"), sc as one gateway. Every cq
//! fixture is submitted to the replicas in turn, every sc fixture to sc
//! (which delivers to cq's replica 1, the address its config names); each
//! exchange must end delivered, and each receiving credit bank verifies
//! every chain in its inbox, cq's read through its last replica.
//!
//! Without `--store-url`, a throwaway PostgreSQL 15 cluster is started with
//! `devpg` when its binaries exist (and the output says so); otherwise the
//! command asks for a URL.

use crate::app;
use crate::config::{Config, StoreUrl};
use crate::devfed::{CreditBank, DevCluster, DevFedError, FIXTURES};
use crate::devpg::DevPostgres;
use crate::devpki::{DevFederation, DevReplica};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A replica process; asked to stop (SIGTERM) when dropped, killed if it
/// does not within a few seconds.
struct ReplicaProcess {
    child: Child,
}

impl ReplicaProcess {
    fn start(config: &Path) -> Result<Self, DevFedError> {
        let exe = std::env::current_exe().map_err(|e| DevFedError::Client(format!("own executable: {e}")))?;
        let mut child = Command::new(exe)
            .args(["serve", "--config"])
            .arg(config)
            .env("RUST_LOG", "error")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| DevFedError::Client(format!("starting a replica: {e}")))?;
        let stderr = child
            .stderr
            .take()
            .ok_or_else(|| DevFedError::Client("replica without stderr".into()))?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = Vec::new();
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("listening on") {
                    let _ = tx.send(Ok(()));
                } else if lines.len() < 20 {
                    lines.push(line);
                }
            }
            let _ = tx.send(Err(lines.join("\n")));
        });
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(Ok(())) => Ok(Self { child }),
            Ok(Err(output)) => Err(DevFedError::Client(format!("replica exited: {output}"))),
            Err(_) => Err(DevFedError::Client("replica did not start within 60 s".into())),
        }
    }
}

impl Drop for ReplicaProcess {
    fn drop(&mut self) {
        #[cfg(unix)]
        {
            if let Some(pid) = i32::try_from(self.child.id())
                .ok()
                .and_then(rustix::process::Pid::from_raw)
            {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
            }
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if matches!(self.child.try_wait(), Ok(Some(_))) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One exchange as the summary reports it.
struct Row {
    route: String,
    fixture: &'static str,
    status: String,
    chain: Result<String, String>,
}

/// Runs the replicated quickstart in `dir`; `Ok(true)` if every exchange
/// was delivered and verified.
pub async fn run(
    dir: &Path,
    replicas: usize,
    store_url: Option<String>,
    timeout: Duration,
) -> Result<bool, DevFedError> {
    let started = Instant::now();
    let client = |e: &dyn std::fmt::Display| DevFedError::Client(e.to_string());
    // Keeps a throwaway cluster alive until the end (stopped when dropped).
    let mut dev_pg = None;
    let url = match store_url {
        Some(u) => StoreUrl::new(u),
        None => {
            let pg = DevPostgres::start().map_err(|e| {
                DevFedError::Client(format!(
                    "--replicas needs a PostgreSQL database: give --store-url postgres://… \
                     (no throwaway cluster could be started: {e})"
                ))
            })?;
            println!(
                "  no --store-url: started a throwaway PostgreSQL 15 cluster (devpg) on 127.0.0.1:{} \
                 in {}; it is stopped and removed at exit",
                pg.port(),
                pg.dir().display()
            );
            let url = StoreUrl::new(pg.create_database().map_err(|e| client(&e))?);
            dev_pg = Some(pg);
            url
        }
    };
    let fed = crate::devpki::init(dir, &["cq", "sc"])?;
    let written = crate::devpki::write_replicas(&fed, "cq", replicas, &url)?;
    println!("  member cq as {replicas} replicas sharing {url}");
    let sc_member = fed
        .member("sc")
        .cloned()
        .ok_or_else(|| DevFedError::Client("no member sc".into()))?;
    let mut procs = Vec::with_capacity(written.len());
    for r in &written {
        let config = r.config.clone();
        procs.push(
            tokio::task::spawn_blocking(move || ReplicaProcess::start(&config))
                .await
                .map_err(|e| client(&e))??,
        );
        println!(
            "  gateway cq replica {} (pid {}) on https://{}",
            r.index,
            procs.last().map_or(0, |p| p.child.id()),
            r.api_addr
        );
    }

    let sc_gw = app::start(Config::load(&sc_member.config)?)
        .await
        .map_err(|source| DevFedError::Start {
            member: "sc".into(),
            source,
        })?;
    println!(
        "  gateway sc (home framework wfs, SQLite) on https://{}",
        sc_gw.api_addr
    );
    let result = exchange_all(&fed, &written, &sc_member, timeout).await;
    // Stopping waits for each process (SIGTERM, then a bounded wait).
    let _ = tokio::task::spawn_blocking(move || drop(procs)).await;
    sc_gw.shutdown().await;
    let rows = result?;

    println!();
    println!("  {:<24} {:<26} {:<10}  chain", "route", "record", "status");
    for r in &rows {
        let chain = match &r.chain {
            Ok(s) => format!("verified: {s}"),
            Err(e) => format!("NOT VERIFIED: {e}"),
        };
        println!("  {:<24} {:<26} {:<10}  {chain}", r.route, r.fixture, r.status);
    }
    let ok = rows
        .iter()
        .filter(|r| r.status == "delivered" && r.chain.is_ok())
        .count();
    println!();
    println!(
        "  {ok}/{} exchanges delivered and verified, cq served by {replicas} replicas on PostgreSQL, in {:.1} s",
        rows.len(),
        started.elapsed().as_secs_f64()
    );
    drop(dev_pg);
    Ok(ok == rows.len() && !rows.is_empty())
}

async fn exchange_all(
    fed: &DevFederation,
    replicas: &[DevReplica],
    sc_member: &crate::devpki::DevMember,
    timeout: Duration,
) -> Result<Vec<Row>, DevFedError> {
    let cq_member = fed
        .member("cq")
        .ok_or_else(|| DevFedError::Client("no member cq".into()))?;
    let cq_banks: Vec<CreditBank> = replicas
        .iter()
        .map(|r| CreditBank::new(&r.view(cq_member), &fed.ca_cert))
        .collect::<Result<_, _>>()?;
    let sc_bank = CreditBank::new(sc_member, &fed.ca_cert)?;
    let mut pending = Vec::new();
    let mut next_replica = 0;
    for fixture in FIXTURES {
        let subject = fixture
            .subject()
            .map_err(|e| DevFedError::Client(format!("{}: {e}", fixture.name)))?;
        let (bank, to, route) = if fixture.member == "cq" {
            let i = next_replica % cq_banks.len();
            next_replica += 1;
            (&cq_banks[i], "sc", format!("cq (replica {}) → sc", i + 1))
        } else {
            (&sc_bank, "cq", "sc → cq (replicas)".to_owned())
        };
        let credential = bank.issue(subject)?;
        let answer = bank.submit(&credential, to).await?;
        let id = answer.exchange_id().unwrap_or_default().to_owned();
        if answer.status.as_u16() != 202 || id.is_empty() {
            return Err(DevFedError::Client(format!(
                "{} via {route}: HTTP {} {}",
                fixture.name, answer.status, answer.body
            )));
        }
        pending.push((fixture.name, bank, route, id));
    }
    let mut rows = Vec::new();
    for (fixture, bank, route, id) in pending {
        let status = bank.wait_until_settled(&id, timeout).await?;
        rows.push((fixture, route, id, status));
    }

    // Each receiving credit bank verifies its inbox; cq's is read through
    // its last replica, whichever replica received the envelopes.
    let cluster = DevCluster {
        federation: fed.clone(),
        gateways: Vec::new(),
    };
    let readers: Vec<&CreditBank> = [&sc_bank].into_iter().chain(cq_banks.last()).collect();
    let mut chains = std::collections::HashMap::new();
    for receiver in readers {
        let verifier = cluster.chain_verifier(receiver).await?;
        for entry in receiver.inbox_entries(None, 500).await? {
            let verdict = match verifier.verify_chain(&entry.chain).await {
                Ok(chain) if chain.len() == 3 => Ok(format!("{} links", chain.len())),
                Ok(chain) => Err(format!("{} links, expected 3", chain.len())),
                Err(e) => Err(e.problem().to_string()),
            };
            chains.insert(entry.exchange_id.clone(), verdict);
        }
    }
    Ok(rows
        .into_iter()
        .map(|(fixture, route, id, status)| Row {
            route,
            fixture,
            status,
            chain: chains
                .remove(&id)
                .unwrap_or_else(|| Err("not in the destination inbox".into())),
        })
        .collect())
}
