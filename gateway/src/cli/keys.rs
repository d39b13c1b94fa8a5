//! `bashu keys` (SPEC §8): the operator's key lifecycle.
//!
//! Every command loads the key store, applies one change and saves it
//! atomically (mode 0600). A running gateway notices the new file within a
//! second and re-publishes its key set with a higher `seq`. `publish` signs
//! the set here and writes it next to the key store (for gateways whose
//! federation key is kept offline, see `trust::local`) and to stdout.
//! Private keys are never printed.

use crate::config::Config;
use crate::jose::{Alg, SigningKey};
use crate::trust::{published_keyset_path, Clock, KeyInfo, KeyRole, KeyStatus, KeyStore, SystemClock};
use clap::Subcommand;
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

/// Default retire window when neither `--retire-window` nor a config is
/// given: the default dead-letter age, i.e. the longest an exchange can
/// still be in flight.
const DEFAULT_RETIRE_WINDOW_SECS: u64 = 7 * 24 * 3600;
const DEFAULT_TTL_SECS: u64 = 24 * 3600;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Gateway config; `trust.keystore` and `trust.federation_key` are used.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Key store file (instead of, or overriding, the config).
    #[arg(long, global = true)]
    keystore: Option<PathBuf>,
    /// Federation private key (JWK) for `publish`/`rotate` (overrides the config).
    #[arg(long, global = true)]
    federation_key: Option<PathBuf>,
    /// Member id, needed only to create a new key store without a config.
    #[arg(long, global = true)]
    member: Option<String>,
    #[command(subcommand)]
    command: KeysCommand,
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// List keys: kid, role, status, alg, nbf, retire_after.
    List {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Generate a gateway signing key (`active` if there is none, else `next`).
    Generate {
        #[arg(long, default_value = "es256", value_parser = parse_alg)]
        alg: Alg,
    },
    /// Import the credit bank's public issuer key (JWK file).
    Import {
        /// Public JWK file of the credit bank's signing key.
        #[arg(long)]
        jwk: PathBuf,
        /// Initial status.
        #[arg(long, default_value = "active", value_parser = parse_import_status)]
        status: KeyStatus,
    },
    /// Generate a successor, publish it as `next`, wait, promote it, publish.
    Rotate {
        #[arg(long, default_value = "es256", value_parser = parse_alg)]
        alg: Alg,
        /// Seconds to wait between publishing `next` and promoting it
        /// (default: one key-set TTL, so every peer's cache has the key).
        #[arg(long)]
        wait: Option<u64>,
        /// Seconds the old key keeps verifying after promotion.
        #[arg(long)]
        retire_window: Option<u64>,
    },
    /// Promote a `next` key to `active` (the old gateway key starts retiring).
    Promote {
        kid: String,
        #[arg(long)]
        retire_window: Option<u64>,
    },
    /// Move a key to `retiring`; it stops verifying after the window.
    Retire {
        kid: String,
        #[arg(long)]
        retire_window: Option<u64>,
    },
    /// Revoke a key: it never verifies again.
    Revoke { kid: String },
    /// Make a credit bank's credential-signing key pair: the private JWK
    /// stays with the bank (0600), the public JWK (0644) goes to the
    /// operator for `bashu keys import`. Needs no key store; never
    /// overwrites a file. Prints the kid.
    IssuerKeypair {
        /// Where to write the private JWK (created with mode 0600).
        #[arg(long)]
        out_private: PathBuf,
        /// Where to write the public JWK (created with mode 0644).
        #[arg(long)]
        out_public: PathBuf,
        #[arg(long, default_value = "es256", value_parser = parse_alg)]
        alg: Alg,
        /// Key id (default: `[<member>-]cb-<yyyymmdd>-<random>`).
        #[arg(long)]
        kid: Option<String>,
    },
    /// Make this member's federation key pair: the private JWK (0600) is
    /// the gateway's `trust.federation_key` (it signs the member's key
    /// sets), the public JWK (0644) is what every other member pins as
    /// `[peers.<member>].federation_key`. Needs no key store; never
    /// overwrites a file. Prints the kid.
    FederationKeypair {
        /// Where to write the private JWK (created with mode 0600).
        #[arg(long)]
        out_private: PathBuf,
        /// Where to write the public JWK (created with mode 0644).
        #[arg(long)]
        out_public: PathBuf,
        #[arg(long, default_value = "eddsa", value_parser = parse_alg)]
        alg: Alg,
        /// Key id (default: `[<member>-]federation-<yyyymmdd>-<random>`).
        #[arg(long)]
        kid: Option<String>,
    },
    /// Sign the key set with the federation key (seq + 1) and print it.
    Publish {
        /// Also write the signed key set to this file.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

fn parse_alg(s: &str) -> Result<Alg, String> {
    s.parse()
        .map_err(|_| format!("unsupported algorithm {s:?} (es256|eddsa)"))
}

fn parse_import_status(s: &str) -> Result<KeyStatus, String> {
    match s {
        "next" => Ok(KeyStatus::Next),
        "active" => Ok(KeyStatus::Active),
        _ => Err(format!("imported keys start as next or active, not {s:?}")),
    }
}

/// Where things are, from `--config` and/or the explicit flags.
struct Paths {
    keystore: PathBuf,
    federation_key: Option<PathBuf>,
    member: Option<String>,
    ttl_secs: u64,
    retire_window_secs: u64,
}

/// A usage error (exit 2) or a domain failure (exit 1).
enum Failure {
    Usage(String),
    Failed(String),
}

impl<E: std::fmt::Display> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure::Failed(e.to_string())
    }
}

pub fn run(args: Args) -> ExitCode {
    match execute(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(msg)) => {
            eprintln!("bashu keys: {msg}");
            ExitCode::from(2)
        }
        Err(Failure::Failed(msg)) => super::fail(msg),
    }
}

fn resolve(args: &Args) -> Result<Paths, Failure> {
    let cfg = match &args.config {
        Some(path) => Some(Config::load(path)?),
        None => None,
    };
    let keystore = args
        .keystore
        .clone()
        .or_else(|| cfg.as_ref().map(|c| c.trust.keystore.clone()))
        .ok_or_else(|| Failure::Usage("give --config or --keystore".into()))?;
    Ok(Paths {
        keystore,
        federation_key: args
            .federation_key
            .clone()
            .or_else(|| cfg.as_ref().map(|c| c.trust.federation_key.clone())),
        member: args
            .member
            .clone()
            .or_else(|| cfg.as_ref().map(|c| c.member.clone())),
        ttl_secs: cfg.as_ref().map_or(DEFAULT_TTL_SECS, |c| c.trust.keyset_ttl_secs),
        retire_window_secs: cfg
            .as_ref()
            .map_or(DEFAULT_RETIRE_WINDOW_SECS, |c| c.delivery.dead_letter_after_secs),
    })
}

fn now() -> i64 {
    SystemClock.now_secs()
}

fn secs(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn execute(args: Args) -> Result<(), Failure> {
    let pair = match &args.command {
        KeysCommand::IssuerKeypair {
            out_private,
            out_public,
            alg,
            kid,
        } => Some((out_private, out_public, *alg, kid, ISSUER_PAIR)),
        KeysCommand::FederationKeypair {
            out_private,
            out_public,
            alg,
            kid,
        } => Some((out_private, out_public, *alg, kid, FEDERATION_PAIR)),
        _ => None,
    };
    if let Some((private, public, alg, kid, what)) = pair {
        let kid = kid
            .clone()
            .unwrap_or_else(|| fresh_kid(args.member.as_deref(), what.kid_tag, now()));
        return write_keypair(private, public, alg, &kid, what);
    }
    let paths = resolve(&args)?;
    match args.command {
        KeysCommand::List { json } => {
            let store = KeyStore::load(&paths.keystore)?;
            print_list(&store.list(), json);
        }
        KeysCommand::Generate { alg } => {
            let mut store = load_or_create(&paths)?;
            let kid = store.generate(KeyRole::Gateway, alg, now())?;
            store.save(&paths.keystore)?;
            let status = store.get(&kid).map_or(KeyStatus::Next, |k| k.status());
            eprintln!("generated gateway key {kid} ({alg}, {status})");
            println!("{kid}");
        }
        KeysCommand::Import { jwk, status } => {
            let text = std::fs::read_to_string(&jwk).map_err(|e| format!("{}: {e}", jwk.display()))?;
            let map: Map<String, Value> = match crate::jose::json_strict::parse(text.as_bytes())? {
                Value::Object(m) => m,
                _ => return Err(Failure::Failed("JWK file is not a JSON object".into())),
            };
            if map.contains_key("d") {
                return Err(Failure::Failed(
                    "this is a private key; import only the credit bank's public JWK".into(),
                ));
            }
            let mut store = load_or_create(&paths)?;
            let kid = store.import_issuer_with(&map, status, now())?;
            store.save(&paths.keystore)?;
            eprintln!("imported issuer key {kid} ({status})");
            println!("{kid}");
        }
        KeysCommand::Rotate {
            alg,
            wait,
            retire_window,
        } => rotate(&paths, alg, wait.unwrap_or(paths.ttl_secs), retire_window)?,
        KeysCommand::Promote { kid, retire_window } => {
            let mut store = KeyStore::load(&paths.keystore)?;
            store.promote(
                &kid,
                now(),
                secs(retire_window.unwrap_or(paths.retire_window_secs)),
            )?;
            store.save(&paths.keystore)?;
            eprintln!("promoted {kid} to active");
        }
        KeysCommand::Retire { kid, retire_window } => {
            let mut store = KeyStore::load(&paths.keystore)?;
            let after = now().saturating_add(secs(retire_window.unwrap_or(paths.retire_window_secs)));
            store.retire(&kid, after)?;
            store.save(&paths.keystore)?;
            eprintln!(
                "{kid} is retiring; it stops verifying after {}",
                fmt_time(Some(after))
            );
        }
        KeysCommand::Revoke { kid } => {
            let mut store = KeyStore::load(&paths.keystore)?;
            store.revoke(&kid, now())?;
            store.save(&paths.keystore)?;
            eprintln!("revoked {kid}");
        }
        KeysCommand::Publish { out } => {
            let jws = publish(&paths)?;
            if let Some(out) = out {
                crate::jose::atomic_file::write(&out, format!("{jws}\n").as_bytes(), 0o644)
                    .map_err(|e| format!("{}: {e}", out.display()))?;
            }
            println!("{jws}");
        }
        // Handled before the key store is resolved.
        KeysCommand::IssuerKeypair { .. } | KeysCommand::FederationKeypair { .. } => {}
    }
    Ok(())
}

/// A fresh kid: `[<member>-]<what>-<yyyymmdd>-<6 hex>` (`cb` for an issuer
/// pair, `federation` for a federation pair).
fn fresh_kid(member: Option<&str>, what: &str, now: i64) -> String {
    let date = time::OffsetDateTime::from_unix_timestamp(now)
        .map(|t| format!("{:04}{:02}{:02}", t.year(), u8::from(t.month()), t.day()))
        .unwrap_or_else(|_| "00000000".into());
    let tail = format!("{what}-{date}-{:06x}", rand::random::<u32>() & 0xff_ffff);
    match member {
        Some(m) => format!("{m}-{tail}"),
        None => tail,
    }
}

/// What the two halves of a generated key pair are for (printed after writing).
struct PairUse {
    /// The `<what>` of a kid made up for the pair (see [`fresh_kid`]).
    kid_tag: &'static str,
    private: &'static str,
    public: &'static str,
}

const ISSUER_PAIR: PairUse = PairUse {
    kid_tag: "cb",
    private: "private, keep it with the credit bank",
    public: "public, give it to the operator for `bashu keys import --jwk`",
};

const FEDERATION_PAIR: PairUse = PairUse {
    kid_tag: "federation",
    private: "private, this gateway's trust.federation_key",
    public: "public, every other member pins it as [peers.<member>].federation_key",
};

/// Writes a new key pair; refuses (usage error) if either file exists, and
/// creates each file exclusively so a race cannot overwrite.
fn write_keypair(private: &Path, public: &Path, alg: Alg, kid: &str, what: PairUse) -> Result<(), Failure> {
    if private == public {
        return Err(Failure::Usage(
            "--out-private and --out-public must differ".into(),
        ));
    }
    for path in [private, public] {
        if path.exists() {
            return Err(Failure::Usage(format!(
                "{} exists; refusing to overwrite a key file",
                path.display()
            )));
        }
    }
    let key = SigningKey::generate(alg, kid)?;
    let private_text = format!("{}\n", Value::Object(key.private_jwk().clone()));
    let public_text = format!("{}\n", Value::Object(key.public_jwk()));
    create_new(private, private_text.as_bytes(), 0o600)?;
    if let Err(e) = create_new(public, public_text.as_bytes(), 0o644) {
        // Do not leave half a pair behind.
        let _ = std::fs::remove_file(private);
        return Err(e);
    }
    eprintln!(
        "wrote {} ({}) and {} ({})",
        private.display(),
        what.private,
        public.display(),
        what.public
    );
    println!("{kid}");
    Ok(())
}

/// Creates `path` exclusively with `mode` and writes `bytes` (synced).
fn create_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), Failure> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let ctx = |e: std::io::Error| Failure::Failed(format!("{}: {e}", path.display()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(ctx)?;
    // The umask may have narrowed the mode; the public key must be readable.
    use std::os::unix::fs::PermissionsExt as _;
    f.set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(ctx)?;
    f.write_all(bytes).map_err(ctx)?;
    f.sync_all().map_err(ctx)
}

fn load_or_create(paths: &Paths) -> Result<KeyStore, Failure> {
    if paths.keystore.exists() {
        return Ok(KeyStore::load(&paths.keystore)?);
    }
    let member = paths
        .member
        .as_deref()
        .ok_or_else(|| Failure::Usage("new key store: give --member or --config".into()))?;
    Ok(KeyStore::create(member)?)
}

fn federation_key(paths: &Paths) -> Result<SigningKey, Failure> {
    let path = paths
        .federation_key
        .as_deref()
        .ok_or_else(|| Failure::Usage("give --config or --federation-key".into()))?;
    Ok(SigningKey::load(path)?)
}

/// Signs the current key set with a bumped `seq`, persisting the new `seq`
/// before the set is shown to anyone.
fn publish(paths: &Paths) -> Result<String, Failure> {
    let fed = federation_key(paths)?;
    let mut store = KeyStore::load(&paths.keystore)?;
    let jws = store.publish(&fed, now(), secs(paths.ttl_secs))?;
    store.save(&paths.keystore)?;
    // What an offline-mode gateway serves (see trust::local).
    let published = published_keyset_path(&paths.keystore);
    crate::jose::atomic_file::write(&published, format!("{jws}\n").as_bytes(), 0o644)
        .map_err(|e| format!("{}: {e}", published.display()))?;
    eprintln!(
        "published key set of {} with seq {} ({})",
        store.member(),
        store.seq(),
        published.display()
    );
    Ok(jws)
}

fn rotate(paths: &Paths, alg: Alg, wait: u64, retire_window: Option<u64>) -> Result<(), Failure> {
    // Fail before changing anything if we could not publish at the end.
    federation_key(paths)?;
    let mut store = KeyStore::load(&paths.keystore)?;
    let kid = match store.next_gateway_kid() {
        Some(existing) => {
            eprintln!("resuming rotation with existing next key {existing}");
            existing.to_owned()
        }
        None => {
            let kid = store.generate(KeyRole::Gateway, alg, now())?;
            store.save(&paths.keystore)?;
            kid
        }
    };
    publish(paths)?;
    eprintln!("{kid} published as next; waiting {wait} s for peers' caches to pick it up");
    std::thread::sleep(Duration::from_secs(wait));
    // Reload: the store may have been edited while we waited.
    let mut store = KeyStore::load(&paths.keystore)?;
    store.promote(
        &kid,
        now(),
        secs(retire_window.unwrap_or(paths.retire_window_secs)),
    )?;
    store.save(&paths.keystore)?;
    publish(paths)?;
    eprintln!("{kid} is now active; the previous key is retiring");
    println!("{kid}");
    Ok(())
}

fn fmt_time(t: Option<i64>) -> String {
    match t.and_then(|t| time::OffsetDateTime::from_unix_timestamp(t).ok()) {
        Some(t) => crate::credential::profile::format_time(t),
        None => "-".into(),
    }
}

fn print_list(keys: &[KeyInfo], json: bool) {
    if json {
        let rows: Vec<Value> = keys
            .iter()
            .map(|k| {
                serde_json::json!({
                    "kid": k.kid, "role": k.role.as_str(), "status": k.status.as_str(),
                    "alg": k.alg.as_str(), "nbf": k.nbf, "retire_after": k.retire_after,
                })
            })
            .collect();
        println!("{}", Value::Array(rows));
        return;
    }
    let w = keys.iter().map(|k| k.kid.len()).max().unwrap_or(3).max(3);
    println!(
        "{:<w$}  {:<7}  {:<8}  {:<5}  {:<20}  RETIRE_AFTER",
        "KID", "ROLE", "STATUS", "ALG", "NBF"
    );
    for k in keys {
        println!(
            "{:<w$}  {:<7}  {:<8}  {:<5}  {:<20}  {}",
            k.kid,
            k.role.as_str(),
            k.status.as_str(),
            k.alg.as_str(),
            fmt_time(Some(k.nbf)),
            fmt_time(k.retire_after),
        );
    }
}
