//! `bashu credential issue|verify` (SPEC §8).
//!
//! `issue` reads a learning record (the `credentialSubject`) on stdin and
//! prints a signed credential. `verify` reads a compact JWS on stdin and
//! prints the verified payload (exit 0) or the problem JSON (exit 1). Bad
//! arguments and unreadable key files are usage errors (exit 2).

use crate::credential::{issue_credential, new_learning_credential, IssuerId, Verifier};
use crate::jose::{json_strict, SigningKey, VerifyingKey};
use crate::problem::{Lang, Problem, ProblemType};
use crate::trust::{Clock, KeySet, StaticFetcher, SystemClock, TrustCache, TrustCacheConfig};
use clap::{ArgGroup, Subcommand};
use serde_json::Value;
use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

/// Most we read from stdin: well past the 256 KiB JWS limit, so oversized
/// input is still reported as `payload-too-large` rather than cut short.
const STDIN_LIMIT: u64 = 4 * 1024 * 1024;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: CredentialCommand,
}

#[derive(Debug, Subcommand)]
enum CredentialCommand {
    /// Sign the learning record on stdin as a credential; prints the JWS.
    Issue {
        /// The issuer's private signing key (JWK).
        #[arg(long)]
        key: PathBuf,
        /// Issuer id, e.g. urn:bashu:cq:credit-bank.
        #[arg(long, value_parser = parse_issuer)]
        issuer: IssuerId,
        /// validUntil = now + N days (default: no validUntil).
        #[arg(long)]
        valid_days: Option<u32>,
        /// Mapping table the record's framework is checked against
        /// (default: the bundled reference table).
        #[arg(long)]
        table: Option<PathBuf>,
        /// Sign without checking the record against the profile and its
        /// framework (for producing deliberately invalid test input).
        #[arg(long)]
        no_check: bool,
    },
    /// Verify the credential JWS on stdin; prints the payload or a problem.
    #[command(group(ArgGroup::new("trust").required(true).args(["jwks", "keyset"])))]
    Verify {
        /// Unsigned key-set payload(s) {"iss":…,"keys":[…]}; repeatable.
        #[arg(long)]
        jwks: Vec<PathBuf>,
        /// A signed key set (compact JWS), checked against --federation-key.
        #[arg(long, requires = "federation_key", conflicts_with = "jwks")]
        keyset: Option<PathBuf>,
        /// The member's federation public key (JWK).
        #[arg(long, requires = "keyset")]
        federation_key: Option<PathBuf>,
        /// Language of a printed problem's title (and fixed details): `zh`
        /// or `en`. Default: from LC_ALL, LC_MESSAGES or LANG, else English.
        #[arg(long)]
        lang: Option<String>,
    },
}

fn parse_issuer(s: &str) -> Result<IssuerId, String> {
    s.parse()
        .map_err(|_| format!("{s:?} is not urn:bashu:<member>:credit-bank|gateway"))
}

pub fn run(args: Args) -> ExitCode {
    match args.command {
        CredentialCommand::Issue {
            key,
            issuer,
            valid_days,
            table,
            no_check,
        } => {
            let table = match table.as_deref().map(crate::mapping::read_table).transpose() {
                Ok(t) => t.unwrap_or_else(schema_mapper::MappingTable::reference),
                Err(e) => return usage(e),
            };
            issue(&key, &issuer, valid_days, (!no_check).then_some(&table))
        }
        CredentialCommand::Verify {
            jwks,
            keyset,
            federation_key,
            lang,
        } => {
            let lang = Lang::from_cli(lang.as_deref(), |name| std::env::var(name).ok());
            verify(&jwks, keyset.as_deref().zip(federation_key.as_deref()), lang)
        }
    }
}

fn usage(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("bashu credential: {msg}");
    ExitCode::from(2)
}

fn read_stdin() -> Result<Vec<u8>, std::io::Error> {
    let mut buf = Vec::new();
    std::io::stdin().take(STDIN_LIMIT).read_to_end(&mut buf)?;
    Ok(buf)
}

/// What a gateway would refuse about `subject` before any signature is
/// checked: a learning record the profile does not allow (unknown or
/// missing fields, bad values) or one its framework does not define (level,
/// outcome type, framework version).
fn check_record(subject: &Value, table: &schema_mapper::MappingTable) -> Result<(), Problem> {
    let (_, parsed) = crate::credential::split_subject(subject).map_err(Problem::from)?;
    schema_mapper::translate(&parsed, &parsed.framework, &parsed.framework, table)
        .map(|_| ())
        .map_err(Problem::from)
}

fn issue(
    key: &Path,
    issuer: &IssuerId,
    valid_days: Option<u32>,
    check: Option<&schema_mapper::MappingTable>,
) -> ExitCode {
    let key = match SigningKey::load(key) {
        Ok(k) => k,
        Err(e) => return usage(e),
    };
    let subject = match read_stdin()
        .map_err(|e| e.to_string())
        .and_then(|b| json_strict::parse(&b).map_err(|e| format!("record on stdin: {e}")))
    {
        Ok(v @ Value::Object(_)) => v,
        Ok(_) => return super::fail("record on stdin must be a JSON object"),
        Err(e) => return super::fail(e),
    };
    if let Some(table) = check {
        if let Err(problem) = check_record(&subject, table) {
            println!("{}", problem.to_json());
            eprintln!(
                "bashu credential: the gateway would refuse this record (use --no-check to sign it anyway)"
            );
            return ExitCode::from(1);
        }
    }
    let now = time::OffsetDateTime::now_utc();
    let until = valid_days.map(|d| now + time::Duration::days(i64::from(d)));
    let payload = new_learning_credential(issuer, subject, now, until);
    match issue_credential(&payload, &key) {
        Ok(jws) => {
            println!("{jws}");
            ExitCode::SUCCESS
        }
        Err(e) => super::fail(e),
    }
}

fn verify(jwks: &[PathBuf], signed: Option<(&Path, &Path)>, lang: Lang) -> ExitCode {
    let input = match read_stdin() {
        Ok(b) => b,
        Err(e) => return super::fail(e),
    };
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return super::fail(e),
    };
    rt.block_on(async {
        let cache = match signed {
            Some((keyset, fed)) => from_signed_keyset(keyset, fed),
            None => from_jwks(jwks).await,
        };
        let cache = match cache {
            Ok(c) => c,
            Err(Outcome::Usage(msg)) => return usage(msg),
            Err(Outcome::Problem(p)) => return problem(&p, lang),
        };
        let jws = match std::str::from_utf8(&input) {
            Ok(s) => s.trim_matches(|c: char| c.is_ascii_whitespace()),
            Err(_) => {
                return problem(
                    &Problem::new(ProblemType::MalformedRequest, "input is not UTF-8"),
                    lang,
                )
            }
        };
        let verifier = Verifier::new(Arc::new(cache), 60);
        match verifier.verify(jws).await {
            Ok(v) => match serde_json::to_string_pretty(v.payload()) {
                Ok(text) => {
                    println!("{text}");
                    ExitCode::SUCCESS
                }
                Err(e) => super::fail(e),
            },
            Err(e) => problem(&e.problem(), lang),
        }
    })
}

enum Outcome {
    Usage(String),
    Problem(Problem),
}

fn problem(p: &Problem, lang: Lang) -> ExitCode {
    println!("{}", p.to_json_in(lang));
    ExitCode::from(1)
}

async fn from_jwks(files: &[PathBuf]) -> Result<TrustCache, Outcome> {
    let mut sets = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(f).map_err(|e| Outcome::Usage(format!("{}: {e}", f.display())))?;
        let set =
            KeySet::parse_unsigned(&text).map_err(|e| Outcome::Usage(format!("{}: {e}", f.display())))?;
        sets.push(set);
    }
    Ok(TrustCache::preloaded(TrustCacheConfig::default(), sets, Arc::new(SystemClock)).await)
}

fn from_signed_keyset(keyset: &Path, fed: &Path) -> Result<TrustCache, Outcome> {
    let jws = std::fs::read_to_string(keyset)
        .map_err(|e| Outcome::Usage(format!("{}: {e}", keyset.display())))?
        .trim()
        .to_owned();
    let fed_key = VerifyingKey::load(fed).map_err(|e| Outcome::Usage(e.to_string()))?;
    // Verified here once to learn whose set it is; the cache verifies again
    // on its own path before using it.
    let set = KeySet::verify(&jws, &fed_key, SystemClock.now_secs()).map_err(|e| {
        Outcome::Problem(Problem::new(
            ProblemType::UnknownKey,
            format!("key set does not verify against the federation key: {e}"),
        ))
    })?;
    let fetcher = StaticFetcher::new();
    fetcher.put(&set.iss, jws);
    let pinned = HashMap::from([(set.iss.clone(), fed_key)]);
    Ok(TrustCache::new(
        TrustCacheConfig::default(),
        pinned,
        Arc::new(fetcher),
    ))
}
