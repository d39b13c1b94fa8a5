//! `bashu quickstart` (SPEC §8): a dev federation in a temporary directory,
//! gateways cq and sc on 127.0.0.1, every fixture credential exchanged in
//! both directions, each delivered chain verified as the receiving credit
//! bank would, and a readable summary. Exit 0 only if all of it worked.

use crate::devfed::{CreditBank, DevCluster, DevFedError, FIXTURES};
use serde_json::Value;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Keep the dev federation in this directory instead of a temporary one
    /// (it must be empty or missing, unless --force).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// With --dir: write even if the directory is not empty.
    #[arg(long)]
    pub force: bool,
    /// Give up on an exchange that is not delivered within this many seconds.
    #[arg(long, default_value_t = 20)]
    pub timeout_secs: u64,
    /// Run member cq as this many `bashu serve` replicas sharing one
    /// PostgreSQL database (high availability; see docs/operations.md).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=16))]
    pub replicas: Option<u16>,
    /// With --replicas: the database they share (`postgres://…`, an empty
    /// database). Without it, a throwaway PostgreSQL 15 cluster is started
    /// when its binaries are installed.
    #[arg(long, requires = "replicas")]
    pub store_url: Option<String>,
}

/// Members of the quickstart federation; fixtures exist for both.
const MEMBERS: [&str; 2] = ["cq", "sc"];

/// One exchange as the summary reports it.
struct Row {
    direction: String,
    fixture: &'static str,
    status: String,
    chain: Result<String, String>,
    elapsed: Duration,
}

impl Row {
    fn ok(&self) -> bool {
        self.status == "delivered" && self.chain.is_ok()
    }
}

pub fn run(args: Args) -> ExitCode {
    super::init_tracing_quiet();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return super::fail(format!("cannot start the async runtime: {e}")),
    };
    match runtime.block_on(quickstart(args)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => super::fail(e),
    }
}

async fn quickstart(args: Args) -> Result<bool, DevFedError> {
    let started = Instant::now();
    let temp;
    let dir = match args.dir {
        Some(d) => {
            if !args.force {
                crate::devpki::ensure_empty(&d)?;
            }
            d
        }
        None => {
            temp =
                tempfile::tempdir().map_err(|e| DevFedError::Client(format!("temporary directory: {e}")))?;
            temp.path().to_owned()
        }
    };
    println!("Bashu quickstart");
    println!(
        "  dev federation (CA, certificates, federation and signing keys) in {}",
        dir.display()
    );
    if let Some(n) = args.replicas {
        let timeout = Duration::from_secs(args.timeout_secs);
        return super::quickstart_ha::run(&dir, usize::from(n), args.store_url, timeout).await;
    }
    let cluster = DevCluster::init_and_start(&dir, &MEMBERS).await?;
    for gw in &cluster.gateways {
        let framework = cluster
            .federation
            .member(&gw.member)
            .map(|m| m.framework.as_str())
            .unwrap_or("?");
        println!(
            "  gateway {} (home framework {framework}) on https://{}",
            gw.member, gw.api_addr
        );
    }

    let result = exchange_all(&cluster, Duration::from_secs(args.timeout_secs)).await;
    cluster.shutdown().await;
    let rows = result?;

    println!();
    println!(
        "  {:<9} {:<26} {:<10} {:>7}  chain (framework level/credits per link)",
        "route", "record", "status", "ms"
    );
    for r in &rows {
        let chain = match &r.chain {
            Ok(s) => format!("verified: {s}"),
            Err(e) => format!("NOT VERIFIED: {e}"),
        };
        println!(
            "  {:<9} {:<26} {:<10} {:>7}  {chain}",
            r.direction,
            r.fixture,
            r.status,
            r.elapsed.as_millis()
        );
    }
    let ok = rows.iter().filter(|r| r.ok()).count();
    println!();
    println!(
        "  {ok}/{} exchanges delivered and verified as 3-link chains in {:.1} s",
        rows.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(ok == rows.len() && !rows.is_empty())
}

/// Submits every fixture to its member's gateway for the other member,
/// waits for delivery, then reads and verifies each destination inbox.
async fn exchange_all(cluster: &DevCluster, timeout: Duration) -> Result<Vec<Row>, DevFedError> {
    let banks: Vec<CreditBank> = MEMBERS
        .iter()
        .map(|m| cluster.credit_bank(m))
        .collect::<Result<_, _>>()?;
    let bank = |m: &str| banks.iter().find(|b| b.member == m);
    let mut pending = Vec::new();
    for fixture in FIXTURES {
        let (Some(from), Some(to)) = (
            bank(fixture.member),
            MEMBERS.iter().find(|m| **m != fixture.member),
        ) else {
            continue;
        };
        let subject = fixture
            .subject()
            .map_err(|e| DevFedError::Client(format!("{}: {e}", fixture.name)))?;
        let credential = from.issue(subject)?;
        let t0 = Instant::now();
        let answer = from.submit(&credential, to).await?;
        let id = answer.exchange_id().unwrap_or_default().to_owned();
        if answer.status.as_u16() != 202 || id.is_empty() {
            return Err(DevFedError::Client(format!(
                "{} from {}: HTTP {} {}",
                fixture.name, fixture.member, answer.status, answer.body
            )));
        }
        pending.push((fixture, from, *to, id, t0));
    }

    let mut rows = Vec::new();
    for (fixture, from, to, id, t0) in pending {
        let status = from.wait_until_settled(&id, timeout).await?;
        rows.push((fixture, from.member.clone(), to, id, status, t0.elapsed()));
    }

    // Each destination credit bank reads its inbox and verifies every chain.
    let mut chains = std::collections::HashMap::new();
    for receiver in &banks {
        let verifier = cluster.chain_verifier(receiver).await?;
        let entries = receiver.inbox_entries(None, 500).await?;
        for entry in &entries {
            let verdict = match verifier.verify_chain(&entry.chain).await {
                Ok(chain) if chain.len() == 3 => Ok(chain
                    .links()
                    .iter()
                    .map(|l| describe(l.subject()))
                    .collect::<Vec<_>>()
                    .join(" → ")),
                Ok(chain) => Err(format!("{} links, expected 3", chain.len())),
                Err(e) => Err(e.problem().to_string()),
            };
            chains.insert(entry.exchange_id.clone(), verdict);
        }
        if let Some(cursor) = entries.last().map(|e| e.cursor) {
            receiver.ack(cursor).await?;
        }
    }

    Ok(rows
        .into_iter()
        .map(|(fixture, from, to, id, status, elapsed)| Row {
            direction: format!("{from} → {to}"),
            fixture: fixture.name,
            status,
            chain: chains
                .remove(&id)
                .unwrap_or_else(|| Err("not in the destination inbox".into())),
            elapsed,
        })
        .collect())
}

/// `cqf L6 4cr` for a learning record subject.
fn describe(subject: &Value) -> String {
    let framework = subject.get("framework").and_then(Value::as_str).unwrap_or("?");
    let level = subject.get("level").map(Value::to_string).unwrap_or_default();
    let credits = subject.get("credits").map(Value::to_string).unwrap_or_default();
    format!("{framework} L{level} {credits}cr")
}
