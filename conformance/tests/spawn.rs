//! The whole catalogue against our own gateway: `--spawn` starts a dev
//! federation (cq, sc) in-process and every test must pass — none skipped,
//! because the suite holds every identity and key of its own federation.

use bashu_conformance::cli::{self, Cli, Command};
use bashu_conformance::runner::Outcome;
use clap::Parser;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_test_passes_against_our_gateway() {
    let dir = tempfile::tempdir().unwrap();
    let junit = dir.path().join("conformance.xml");
    let argv = [
        "bashu-conformance",
        "run",
        "--spawn",
        "--no-progress",
        "--report",
        "junit",
        "--report-file",
        junit.to_str().unwrap(),
    ];
    let Command::Run(args) = Cli::parse_from(argv).command else {
        panic!("not a run command")
    };
    let report = cli::run(&args).await.unwrap();

    let not_passed: Vec<String> = report
        .results
        .iter()
        .filter(|r| r.outcome != Outcome::Pass)
        .map(|r| {
            format!(
                "{} {}: {}",
                r.id,
                r.outcome.as_str(),
                r.reason.as_deref().unwrap_or("")
            )
        })
        .collect();
    assert!(not_passed.is_empty(), "{}", not_passed.join("\n"));
    assert_eq!(report.exit_code(true), 0);
    assert!(report.results.len() >= 60);
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(xml.contains("failures=\"0\" skipped=\"0\""), "{xml}");
}
