//! Runs selected tests one after another against a context, each under its
//! own deadline, with a live progress bar on a terminal.

use crate::catalogue::{Role, Severity, TestCase, Verdict};
use crate::context::Ctx;
use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal as _;
use std::time::{Duration, Instant};

/// The result of one test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Pass,
    Fail,
    Skip,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Pass => "pass",
            Outcome::Fail => "fail",
            Outcome::Skip => "skip",
        }
    }
}

/// One row of the report.
#[derive(Debug, Clone)]
pub struct TestResult {
    pub id: &'static str,
    pub title: &'static str,
    pub section: &'static str,
    pub severity: Severity,
    pub role: Role,
    pub outcome: Outcome,
    pub reason: Option<String>,
    pub duration: Duration,
}

impl TestResult {
    pub fn group(&self) -> &'static str {
        self.id.split_once('-').map_or(self.id, |(g, _)| g)
    }
}

/// Everything a run produced.
#[derive(Debug, Clone)]
pub struct RunReport {
    pub target: String,
    pub started_at: String,
    pub duration: Duration,
    pub results: Vec<TestResult>,
}

impl RunReport {
    pub fn count(&self, outcome: Outcome) -> usize {
        self.results.iter().filter(|r| r.outcome == outcome).count()
    }

    /// Failures of MUST tests: these make the run fail.
    pub fn must_failures(&self) -> usize {
        self.results
            .iter()
            .filter(|r| r.outcome == Outcome::Fail && r.severity == Severity::Must)
            .count()
    }

    /// Process exit code: 1 on any MUST failure (or any failure when
    /// `strict`), 0 otherwise.
    pub fn exit_code(&self, strict: bool) -> u8 {
        let failing = if strict {
            self.count(Outcome::Fail)
        } else {
            self.must_failures()
        };
        u8::from(failing > 0)
    }
}

/// How a run behaves.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Deadline of a single test, on top of per-request timeouts.
    pub test_timeout: Duration,
    /// Show the progress bar (only ever drawn on a terminal).
    pub progress: bool,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            test_timeout: Duration::from_secs(120),
            progress: true,
        }
    }
}

fn progress_bar(len: usize, enabled: bool) -> ProgressBar {
    if !enabled || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len as u64);
    if let Ok(style) = ProgressStyle::with_template("{spinner} [{bar:30}] {pos}/{len} {elapsed} {wide_msg}") {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

/// Runs `cases` in order and collects the report.
pub async fn run(ctx: &Ctx, cases: &[TestCase], options: &RunOptions) -> RunReport {
    let started_at = crate::fixtures::rfc3339(time::OffsetDateTime::now_utc());
    let start = Instant::now();
    let bar = progress_bar(cases.len(), options.progress);
    let mut results = Vec::with_capacity(cases.len());
    for case in cases {
        bar.set_message(format!("{} {}", case.id, case.title));
        let result = run_one(ctx, case, options.test_timeout).await;
        if result.outcome == Outcome::Fail {
            bar.println(format!(
                "FAIL {} {}",
                case.id,
                result.reason.as_deref().unwrap_or_default()
            ));
        }
        results.push(result);
        bar.inc(1);
    }
    bar.finish_and_clear();
    RunReport {
        target: ctx.target().url(),
        started_at,
        duration: start.elapsed(),
        results,
    }
}

async fn run_one(ctx: &Ctx, case: &TestCase, deadline: Duration) -> TestResult {
    let start = Instant::now();
    let verdict = match tokio::time::timeout(deadline, (case.run)(ctx)).await {
        Ok(v) => v,
        Err(_) => Err(Verdict::Fail(format!("test did not finish within {deadline:?}"))),
    };
    let (outcome, reason) = match verdict {
        Ok(()) => (Outcome::Pass, None),
        Err(Verdict::Fail(r)) => (Outcome::Fail, Some(r)),
        Err(Verdict::Skip(r)) => (Outcome::Skip, Some(r)),
    };
    TestResult {
        id: case.id,
        title: case.title,
        section: case.section,
        severity: case.severity,
        role: case.role,
        outcome,
        reason,
        duration: start.elapsed(),
    }
}
