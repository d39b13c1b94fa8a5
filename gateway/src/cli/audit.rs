//! `bashu audit` (SPEC §5, §8): operator checks of the hash-chained audit
//! log against the rows it describes and the signed checkpoints of its head.

use crate::checkpoint::{self, SignedCheckpoint};
use crate::config::Config;
use crate::jose::VerifyingKey;
use crate::store::{self, StoreError};
use crate::trust::keystore::KeyMaterial;
use crate::trust::{KeyRole, KeyStore};
use clap::Subcommand;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// `format` of a witness file written by `bashu audit witnessed`.
pub const WITNESS_FORMAT: &str = "bashu-witnessed-checkpoints/1";

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: AuditCommand,
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Check the hash chain, the rows it describes and every signed
    /// checkpoint of its head; exit 0 if all agree, 1 if anything does not.
    Verify(VerifyArgs),
    /// Print the checkpoints of a peer this gateway witnessed (JSON), for
    /// that peer's `bashu audit verify --witness`.
    Witnessed(WitnessedArgs),
}

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["config", "db"])))]
struct VerifyArgs {
    /// Gateway config; the store is `<data_dir>/bashu.db` and checkpoints
    /// are verified with the gateway keys of the config's key store.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Path of the store database itself (chain and rows only: without the
    /// key store, signed checkpoints cannot be checked).
    #[arg(long)]
    db: Option<PathBuf>,
    /// A peer's copies of this member's checkpoints: a file written by
    /// `bashu audit witnessed`, or a directory of such `.json` files.
    /// Repeatable.
    #[arg(long, requires = "config")]
    witness: Vec<PathBuf>,
}

#[derive(Debug, clap::Args)]
struct WitnessedArgs {
    /// Config of the witnessing gateway.
    #[arg(long)]
    config: PathBuf,
    /// Member whose checkpoints to export.
    #[arg(long)]
    member: String,
    /// Write to this file instead of standard output.
    #[arg(long)]
    out: Option<PathBuf>,
}

pub fn run(args: Args) -> ExitCode {
    match args.command {
        AuditCommand::Verify(v) => verify(v),
        AuditCommand::Witnessed(w) => witnessed(w),
    }
}

/// Every gateway key the member ever had (any status: a checkpoint signed
/// before a rotation stays valid evidence), by kid.
fn gateway_keys(keystore: &Path) -> Result<BTreeMap<String, VerifyingKey>, String> {
    let store = KeyStore::load(keystore).map_err(|e| format!("key store {}: {e}", keystore.display()))?;
    Ok(store
        .list()
        .into_iter()
        .filter(|k| k.role == KeyRole::Gateway)
        .filter_map(|k| match store.get(&k.kid).map(|s| s.material()) {
            Some(KeyMaterial::Gateway(key)) => Some((k.kid, key.verifying_key().clone())),
            _ => None,
        })
        .collect())
}

/// One witness file (or every `.json` file of a directory): the witness's
/// name and the JWS texts it kept.
fn read_witness(path: &Path, member: &str) -> Result<Vec<(String, Vec<String>)>, String> {
    if path.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(|e| format!("{}: {e}", path.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json") && p.is_file())
            .collect();
        files.sort();
        if files.is_empty() {
            return Err(format!("{}: no .json witness files", path.display()));
        }
        let mut out = Vec::new();
        for f in files {
            out.extend(read_witness(&f, member)?);
        }
        return Ok(out);
    }
    let bad = |m: String| format!("witness file {}: {m}", path.display());
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    let doc: Value = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    if doc.get("format").and_then(Value::as_str) != Some(WITNESS_FORMAT) {
        return Err(bad(format!("format is not {WITNESS_FORMAT}")));
    }
    let of = doc.get("member").and_then(Value::as_str).unwrap_or_default();
    if of != member {
        return Err(bad(format!(
            "holds checkpoints of {of:?}, not of this member {member:?}"
        )));
    }
    let witness = doc
        .get("witness")
        .and_then(Value::as_str)
        .unwrap_or("unknown witness")
        .to_owned();
    let jws = doc
        .get("checkpoints")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("no checkpoints array".into()))?
        .iter()
        .map(|c| {
            c.get("jws")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| bad("a checkpoint without jws".into()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(vec![(witness, jws)])
}

/// Checkpoints from one source (own store or one witness), verified.
struct Source {
    name: String,
    checkpoints: Vec<SignedCheckpoint>,
}

impl Source {
    fn latest(&self) -> Option<&SignedCheckpoint> {
        self.checkpoints
            .iter()
            .max_by_key(|c| (c.checkpoint.seq, c.checkpoint.at))
    }

    fn kids(&self) -> String {
        let kids: BTreeSet<&str> = self.checkpoints.iter().map(|c| c.kid.as_str()).collect();
        kids.into_iter().collect::<Vec<_>>().join(", ")
    }
}

fn verify(args: VerifyArgs) -> ExitCode {
    let (path, config) = match (args.db, args.config) {
        (Some(db), _) => (db, None),
        (None, Some(config)) => match Config::load(&config) {
            Ok(cfg) => (store::db_path(&cfg.data_dir), Some(cfg)),
            Err(e) => return super::fail(e),
        },
        // clap's argument group requires exactly one of the two.
        (None, None) => return super::fail("one of --config or --db is required"),
    };
    // Never create a store here: an empty one would "verify" trivially.
    let store = match store::open_for_tools(config.as_ref(), &path) {
        Ok(s) => s,
        Err(e) => return super::fail(e),
    };

    let mut problems = Vec::new();
    let mut own = None;
    let mut witnesses = Vec::new();
    if let Some(cfg) = &config {
        let keys = match gateway_keys(&cfg.trust.keystore) {
            Ok(k) => k,
            Err(e) => return super::fail(e),
        };
        let stored = match store.checkpoints() {
            Ok(s) => s,
            Err(e) => return super::fail(e),
        };
        let mut source = Source {
            name: "own".into(),
            checkpoints: Vec::new(),
        };
        for (n, cp) in (1..).zip(stored) {
            match checkpoint::verify_with_keys(&cp.jws, &cfg.member, &keys) {
                Ok(signed) => source.checkpoints.push(signed),
                Err(e) => problems.push(format!(
                    "own checkpoint #{n} (stored for seq {}) is not a valid checkpoint of {}: {e}",
                    cp.seq, cfg.member
                )),
            }
        }
        own = Some(source);
        for file in &args.witness {
            let sets = match read_witness(file, &cfg.member) {
                Ok(s) => s,
                Err(e) => return super::fail(e),
            };
            for (witness, jws_list) in sets {
                let mut source = Source {
                    name: witness,
                    checkpoints: Vec::new(),
                };
                for (n, jws) in (1..).zip(jws_list) {
                    match checkpoint::verify_with_keys(&jws, &cfg.member, &keys) {
                        Ok(signed) => source.checkpoints.push(signed),
                        Err(e) => problems.push(format!(
                            "checkpoint #{n} witnessed by {} is not a valid checkpoint of {}: {e}",
                            source.name, cfg.member
                        )),
                    }
                }
                witnesses.push(source);
            }
        }
    }

    let seqs: BTreeSet<u64> = own
        .iter()
        .chain(&witnesses)
        .flat_map(|s| s.checkpoints.iter().map(|c| c.checkpoint.seq))
        .collect();
    let (report, hashes) = match store.audit_verify_at(&seqs) {
        Ok(r) => r,
        Err(StoreError::AuditBroken { seq, reason }) => {
            println!("audit log BROKEN at seq {seq}: {reason} ({})", path.display());
            for p in &problems {
                println!("  also: {p}");
            }
            return ExitCode::from(1);
        }
        Err(e) => return super::fail(e),
    };
    for source in own.iter().chain(&witnesses) {
        for cp in &source.checkpoints {
            if let Err(i) = checkpoint::check_consistency(cp, report.entries, &hashes) {
                let whose = match source.name.as_str() {
                    "own" => "own checkpoint".to_owned(),
                    w => format!("checkpoint witnessed by {w}"),
                };
                problems.push(format!("{whose}: {i}"));
            }
        }
    }
    if let Some(source) = &own {
        if source.checkpoints.is_empty() && report.entries > 0 && problems.is_empty() {
            problems.push(format!(
                "the chain has {} entries but no signed checkpoint: the checkpoint table was emptied \
                 (or the gateway never ran long enough to sign one; start it once and verify again)",
                report.entries
            ));
        }
    }

    if !problems.is_empty() {
        println!(
            "audit log INCONSISTENT ({}): the hash chain of {} entries is intact, but",
            path.display(),
            report.entries
        );
        for p in &problems {
            println!("  - {p}");
        }
        return ExitCode::from(1);
    }

    println!(
        "audit log intact: {} entries, head {} ({})",
        report.entries,
        report.head_hash,
        path.display()
    );
    let mut rows = format!(
        "rows: {} exchanges and {} inbox items match the latest audit entry about each, and so does the inbox ack point",
        report.exchanges, report.inbox_items
    );
    if report.rows_predating_digests > 0 {
        rows.push_str(&format!(
            "; {} rows were last audited before entries recorded row digests and are present but not compared",
            report.rows_predating_digests
        ));
    }
    println!("{rows}");
    let mut proved = vec![
        format!("chain of {} entries intact", report.entries),
        format!(
            "{} exchange and {} inbox rows match it",
            report.exchanges, report.inbox_items
        ),
    ];
    let mut covered = 0;
    match &own {
        None => println!(
            "checkpoints: NOT checked (run with --config so the member's gateway keys can verify them); \
             truncation or recomputation of the chain cannot be ruled out"
        ),
        Some(source) => {
            let (short, long) = describe(source, "own checkpoints");
            println!("own checkpoints: {long}");
            proved.push(short);
            covered = covered.max(source.latest().map_or(0, |c| c.checkpoint.seq));
        }
    }
    for source in &witnesses {
        let (short, long) = describe(source, &format!("checkpoints witnessed by {}", source.name));
        println!("witness {}: {long}", source.name);
        proved.push(short);
        covered = covered.max(source.latest().map_or(0, |c| c.checkpoint.seq));
    }
    println!("proved: {}", proved.join("; "));
    if config.is_some() && covered < report.entries {
        println!(
            "not covered: entries {}..{} are newer than every checkpoint; a rewrite of only them would not be detected",
            covered + 1,
            report.entries
        );
    }
    ExitCode::SUCCESS
}

/// `(short, long)` descriptions of what `source` proved: the short one for
/// the summary line, the long one with the latest signing time.
fn describe(source: &Source, what: &str) -> (String, String) {
    match source.latest() {
        None => {
            let s = format!("consistent with 0 {what}");
            (s.clone(), s)
        }
        Some(latest) => {
            let short = format!(
                "consistent with {} {what} up to seq {} signed by kid {}",
                source.checkpoints.len(),
                latest.checkpoint.seq,
                source.kids()
            );
            let long = format!(
                "{short} (latest signed {} by kid {})",
                checkpoint::format_unix(latest.checkpoint.at),
                latest.kid
            );
            (short, long)
        }
    }
}

fn witnessed(args: WitnessedArgs) -> ExitCode {
    let cfg = match Config::load(&args.config) {
        Ok(c) => c,
        Err(e) => return super::fail(e),
    };
    let store = match store::open_for_tools(Some(&cfg), &store::db_path(&cfg.data_dir)) {
        Ok(s) => s,
        Err(e) => return super::fail(e),
    };
    let kept = match store.witnessed(&args.member) {
        Ok(k) => k,
        Err(e) => return super::fail(e),
    };
    if kept.is_empty() {
        eprintln!(
            "bashu: warning: {} has witnessed no checkpoint of {}",
            cfg.member, args.member
        );
    }
    let doc = json!({
        "format": WITNESS_FORMAT,
        "witness": cfg.member,
        "member": args.member,
        "checkpoints": kept
            .iter()
            .map(|c| json!({ "jws": c.jws, "fetchedAt": c.fetched_at }))
            .collect::<Vec<_>>(),
    });
    let text = match serde_json::to_string_pretty(&doc) {
        Ok(t) => t + "\n",
        Err(e) => return super::fail(e),
    };
    match &args.out {
        None => print!("{text}"),
        Some(out) => {
            if let Err(e) = std::fs::write(out, text) {
                return super::fail(format!("{}: {e}", out.display()));
            }
        }
    }
    ExitCode::SUCCESS
}
