//! The `bashu-conformance` command line: `list` and `run`.
//!
//! Exit codes: 0 when no MUST test failed, 1 when one did (or any test with
//! `--strict`), 2 for usage and setup errors (bad flags, unreadable files,
//! an empty selection).

use crate::catalogue;
use crate::context::Ctx;
use crate::report::{self, Format};
use crate::runner::{self, RunOptions, RunReport};
use crate::setup::{DestinationSetup, IdentityFiles, PeerSetup, Setup, SetupError};
use crate::{devdir, spawn};
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Conformance tests for Bashu federation gateways, over mTLS, against any implementation.
#[derive(Debug, Parser)]
#[command(name = "bashu-conformance", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the catalogue: id, severity, SPEC section, role, title.
    List(ListArgs),
    /// Run the catalogue (or a selection) against a gateway.
    Run(Box<RunArgs>),
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only these ids or prefixes (repeatable, comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
}

/// Which identity `--cert/--key` belong to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PrimaryRole {
    /// The target member's credit bank (`spiffe://…/<member>/credit-bank`).
    CreditBank,
    /// A peer gateway (`spiffe://…/<peer>/gateway`).
    Peer,
    /// The target member's operator.
    Operator,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Base URL of the gateway under test, e.g. https://127.0.0.1:7443.
    #[arg(long)]
    pub target: Option<String>,
    /// Federation CA bundle (PEM).
    #[arg(long)]
    pub ca: Option<PathBuf>,
    /// Client certificate (PEM) of the identity named by --role.
    #[arg(long, requires = "key")]
    pub cert: Option<PathBuf>,
    /// Private key (PEM) of --cert.
    #[arg(long, requires = "cert")]
    pub key: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "credit-bank")]
    pub role: PrimaryRole,
    /// Member id of the gateway under test.
    #[arg(long, default_value = "cq")]
    pub member: String,
    /// Member that submissions are sent to.
    #[arg(long, default_value = "sc")]
    pub destination: String,
    /// Member the peer identity belongs to (default: --destination).
    #[arg(long)]
    pub peer_member: Option<String>,
    /// Home framework of the target's credit bank (default: cqf for cq, wfs otherwise).
    #[arg(long)]
    pub framework: Option<String>,
    /// Private issuer JWK of the credit bank of the --role identity's member.
    #[arg(long)]
    pub issuer_key: Option<PathBuf>,
    /// Private translation-signing JWK of the peer gateway (--role peer).
    #[arg(long)]
    pub gateway_key: Option<PathBuf>,
    /// Pinned federation public key (JWK) of the target member.
    #[arg(long)]
    pub federation_key: Option<PathBuf>,
    #[arg(long, requires = "operator_key")]
    pub operator_cert: Option<PathBuf>,
    #[arg(long, requires = "operator_cert")]
    pub operator_key: Option<PathBuf>,
    /// Destination gateway URL, to read the destination inbox (DELIVERY, MAP).
    #[arg(long, requires_all = ["dest_cert", "dest_key"])]
    pub dest_target: Option<String>,
    /// Destination credit bank certificate (PEM).
    #[arg(long)]
    pub dest_cert: Option<PathBuf>,
    #[arg(long)]
    pub dest_key: Option<PathBuf>,
    /// Pinned federation public key (JWK) of the destination member.
    #[arg(long)]
    pub dest_federation_key: Option<PathBuf>,
    /// Federation CA private key (PEM): enables expired/role-less certificate tests.
    #[arg(long)]
    pub ca_key: Option<PathBuf>,
    /// An issuer private JWK the target lists as revoked.
    #[arg(long)]
    pub revoked_issuer_key: Option<PathBuf>,
    /// Learning records file (see conformance/data/records.json).
    #[arg(long)]
    pub records: Option<PathBuf>,
    /// Golden mapping file (see conformance/data/goldens.json).
    #[arg(long)]
    pub goldens: Option<PathBuf>,
    /// Name to check the target's certificate against (default: the URL host).
    #[arg(long)]
    pub server_name: Option<String>,
    /// Read every identity, key and URL from a `bashu dev init` directory.
    /// With `--target`, the suite tests that address instead of the
    /// member's own (e.g. one replica of a member that runs several).
    #[arg(long, conflicts_with = "spawn")]
    pub dev_dir: Option<PathBuf>,
    /// Start our own dev federation (cq, sc) in-process and test it.
    #[arg(long, conflicts_with = "target")]
    pub spawn: bool,
    /// Only these ids or prefixes (repeatable, comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// Skip these ids or prefixes (repeatable, comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub skip: Vec<String>,
    /// Report format on stdout, or in --report-file.
    #[arg(long, value_enum, default_value = "text")]
    pub report: Format,
    /// Write the report here (the text table still goes to stdout).
    #[arg(long)]
    pub report_file: Option<PathBuf>,
    /// Exit 1 on SHOULD failures too.
    #[arg(long)]
    pub strict: bool,
    /// Per-request timeout in seconds.
    #[arg(long, default_value_t = 10)]
    pub timeout: u64,
    /// How long an exchange may take to be delivered, in seconds.
    #[arg(long, default_value_t = 30)]
    pub delivery_timeout: u64,
    /// Deadline of a single test, in seconds.
    #[arg(long, default_value_t = 120)]
    pub test_timeout: u64,
    /// Never draw the progress bar.
    #[arg(long)]
    pub no_progress: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Setup(#[from] SetupError),
    #[error(transparent)]
    DevDir(#[from] devdir::DevDirError),
    #[error(transparent)]
    Spawn(#[from] spawn::SpawnError),
    #[error("preflight failed, no test was run: {0}")]
    Preflight(#[from] crate::preflight::PreflightError),
    #[error("cannot write report {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::List(args) => {
            print!("{}", list(&args));
            ExitCode::SUCCESS
        }
        Command::Run(args) => {
            let runtime = match tokio::runtime::Runtime::new() {
                Ok(rt) => rt,
                Err(e) => return usage_error(&format!("cannot start the runtime: {e}")),
            };
            match runtime.block_on(run(&args)) {
                Ok(report) => ExitCode::from(report.exit_code(args.strict)),
                Err(e) => usage_error(&e.to_string()),
            }
        }
    }
}

fn usage_error(msg: &str) -> ExitCode {
    eprintln!("bashu-conformance: error: {msg}");
    ExitCode::from(2)
}

/// The catalogue as a table.
pub fn list(args: &ListArgs) -> String {
    let mut out = String::new();
    for t in catalogue::select(&args.only, &[]) {
        out.push_str(&format!(
            "{:<13} {:<6} {:<3} {:<11} {}\n",
            t.id,
            t.severity.to_string(),
            t.section,
            t.role.to_string(),
            t.title
        ));
    }
    out
}

/// Builds the setup the flags describe (`--target` mode).
fn setup_from_flags(args: &RunArgs) -> Result<Setup, CliError> {
    let (Some(target), Some(ca)) = (&args.target, &args.ca) else {
        return Err(CliError::Usage(
            "give --target and --ca (or --dev-dir D, or --spawn)".into(),
        ));
    };
    let mut setup = Setup::new(target.clone(), ca.clone(), &args.member, &args.destination);
    let primary = match (&args.cert, &args.key) {
        (Some(cert), Some(key)) => Some(IdentityFiles {
            cert: cert.clone(),
            key: key.clone(),
        }),
        _ => None,
    };
    match args.role {
        PrimaryRole::CreditBank => {
            setup.credit_bank = primary;
            setup.issuer_key = args.issuer_key.clone();
        }
        PrimaryRole::Peer => {
            setup.peer = primary.map(|identity| PeerSetup {
                member: args
                    .peer_member
                    .clone()
                    .unwrap_or_else(|| args.destination.clone()),
                identity,
                gateway_key: args.gateway_key.clone(),
                issuer_key: args.issuer_key.clone(),
            });
        }
        PrimaryRole::Operator => setup.operator = primary,
    }
    if let (Some(cert), Some(key)) = (&args.operator_cert, &args.operator_key) {
        setup.operator = Some(IdentityFiles {
            cert: cert.clone(),
            key: key.clone(),
        });
    }
    if let (Some(target), Some(cert), Some(key)) = (&args.dest_target, &args.dest_cert, &args.dest_key) {
        setup.dest = Some(DestinationSetup {
            target: target.clone(),
            identity: IdentityFiles {
                cert: cert.clone(),
                key: key.clone(),
            },
            federation_key: args.dest_federation_key.clone(),
        });
    }
    setup.federation_key = args.federation_key.clone();
    setup.ca_key = args.ca_key.clone();
    setup.revoked_issuer_key = args.revoked_issuer_key.clone();
    Ok(setup)
}

/// Explicit material flags override what `--dev-dir` (or `--spawn`) found:
/// a flag the user typed always wins over a file the suite guessed.
fn override_from_flags(setup: &mut Setup, args: &RunArgs) {
    if let Some(target) = &args.target {
        setup.target = target.clone();
    }
    if let Some(ca) = &args.ca {
        setup.ca = ca.clone();
    }
    if let (Some(cert), Some(key)) = (&args.cert, &args.key) {
        let identity = IdentityFiles {
            cert: cert.clone(),
            key: key.clone(),
        };
        match args.role {
            PrimaryRole::CreditBank => setup.credit_bank = Some(identity),
            PrimaryRole::Operator => setup.operator = Some(identity),
            PrimaryRole::Peer => {
                let member = args
                    .peer_member
                    .clone()
                    .unwrap_or_else(|| args.destination.clone());
                let old = setup.peer.take();
                setup.peer = Some(PeerSetup {
                    member,
                    identity,
                    gateway_key: old.as_ref().and_then(|p| p.gateway_key.clone()),
                    issuer_key: old.and_then(|p| p.issuer_key),
                });
            }
        }
    }
    if let Some(key) = &args.issuer_key {
        match (args.role, setup.peer.as_mut()) {
            (PrimaryRole::Peer, Some(peer)) => peer.issuer_key = Some(key.clone()),
            _ => setup.issuer_key = Some(key.clone()),
        }
    }
    if let (Some(key), Some(peer)) = (&args.gateway_key, setup.peer.as_mut()) {
        peer.gateway_key = Some(key.clone());
    }
    if let Some(member) = &args.peer_member {
        if let Some(peer) = setup.peer.as_mut() {
            peer.member = member.clone();
        }
    }
    if let (Some(cert), Some(key)) = (&args.operator_cert, &args.operator_key) {
        setup.operator = Some(IdentityFiles {
            cert: cert.clone(),
            key: key.clone(),
        });
    }
    if let (Some(target), Some(cert), Some(key)) = (&args.dest_target, &args.dest_cert, &args.dest_key) {
        let federation_key = args
            .dest_federation_key
            .clone()
            .or_else(|| setup.dest.as_ref().and_then(|d| d.federation_key.clone()));
        setup.dest = Some(DestinationSetup {
            target: target.clone(),
            identity: IdentityFiles {
                cert: cert.clone(),
                key: key.clone(),
            },
            federation_key,
        });
    } else if let (Some(fk), Some(dest)) = (&args.dest_federation_key, setup.dest.as_mut()) {
        dest.federation_key = Some(fk.clone());
    }
    if args.federation_key.is_some() {
        setup.federation_key = args.federation_key.clone();
    }
    if args.ca_key.is_some() {
        setup.ca_key = args.ca_key.clone();
    }
    if args.revoked_issuer_key.is_some() {
        setup.revoked_issuer_key = args.revoked_issuer_key.clone();
    }
}

/// The setup the flags describe, before refinement (not `--spawn`).
pub fn setup_for(args: &RunArgs) -> Result<Setup, CliError> {
    match &args.dev_dir {
        Some(dir) => {
            let mut setup = devdir::setup(dir, &args.member, &args.destination)?;
            override_from_flags(&mut setup, args);
            Ok(setup)
        }
        None => setup_from_flags(args),
    }
}

/// Flags that refine any setup, whichever way it was made.
fn refine(setup: &mut Setup, args: &RunArgs) {
    if args.framework.is_some() {
        setup.framework = args.framework.clone();
    }
    if args.records.is_some() {
        setup.records = args.records.clone();
    }
    if args.goldens.is_some() {
        setup.goldens = args.goldens.clone();
    }
    if args.server_name.is_some() {
        setup.server_name = args.server_name.clone();
    }
    setup.request_timeout = Duration::from_secs(args.timeout.max(1));
    setup.delivery_timeout = Duration::from_secs(args.delivery_timeout.max(1));
}

/// Runs the selected tests as the flags say, prints and writes the report.
pub async fn run(args: &RunArgs) -> Result<RunReport, CliError> {
    let cases = catalogue::select(&args.only, &args.skip);
    if cases.is_empty() {
        return Err(CliError::Usage("--only/--skip select no test".into()));
    }
    // Keeps spawned gateways (and their temp dir) alive for the run.
    let mut spawned = None;
    let mut setup = if args.spawn {
        let s = spawn::start(&args.member, &args.destination).await?;
        let setup = s.setup.clone();
        spawned = Some(s);
        setup
    } else {
        setup_for(args)?
    };
    refine(&mut setup, args);
    let mut ctx = Ctx::from_setup(&setup)?;
    if let Some(control) = spawned.as_ref().and_then(|s| s.control.clone()) {
        ctx = ctx.with_control(control);
    }
    if let Err(e) = crate::preflight::check(&ctx).await {
        drop(ctx);
        if let Some(s) = spawned {
            s.shutdown().await;
        }
        return Err(e.into());
    }
    let options = RunOptions {
        test_timeout: Duration::from_secs(args.test_timeout.max(1)),
        progress: !args.no_progress,
    };
    let report = runner::run(&ctx, &cases, &options).await;
    for summary in crate::cleanup::ack_test_items(&ctx).await {
        match summary {
            Ok(s) => eprintln!(
                "acknowledged {} test item(s) in the {} inbox{}",
                s.acknowledged,
                s.inbox,
                if s.stopped_at_foreign_item {
                    "; stopped at an item the suite did not send (left unacknowledged)"
                } else {
                    ""
                }
            ),
            Err(e) => eprintln!("could not acknowledge test items: {e}"),
        }
    }
    drop(ctx);
    if let Some(s) = spawned {
        s.shutdown().await;
    }
    match &args.report_file {
        Some(path) => {
            std::fs::write(path, report::render(&report, args.report)).map_err(|source| CliError::Write {
                path: path.clone(),
                source,
            })?;
            print!("{}", report::text(&report));
        }
        None => print!("{}", report::render(&report, args.report)),
    }
    Ok(report)
}
