//! The test catalogue as data: stable id, title, SPEC section, severity, the
//! identity a test needs, and the function that runs it. Ids never change
//! meaning once published; retired tests leave a gap rather than a reuse.

use crate::context::Ctx;
use crate::suite;
use std::fmt;
use std::future::Future;
use std::pin::Pin;

/// How strongly the SPEC demands the behaviour under test. Only `Must`
/// failures make the run fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Must,
    Should,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Must => "MUST",
            Severity::Should => "SHOULD",
        })
    }
}

/// The identity (and material) a test acts with. A test whose role is not
/// configured is skipped with the reason, never passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Any client the federation CA trusts, or none at all (TLS tests).
    Any,
    /// The target member's credit bank, with its issuer signing key.
    CreditBank,
    /// A peer gateway, with that peer's gateway and issuer signing keys.
    Peer,
    /// The target member's operator.
    Operator,
    /// The credit bank of the destination member, reading its own inbox.
    Destination,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Any => "any",
            Role::CreditBank => "credit-bank",
            Role::Peer => "peer",
            Role::Operator => "operator",
            Role::Destination => "destination",
        })
    }
}

/// Why a test did not pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The target violated the contract; the string says how.
    Fail(String),
    /// The test could not run (missing identity, missing capability).
    Skip(String),
}

/// What every test returns: `Ok(())` is a pass.
pub type CheckResult = Result<(), Verdict>;

/// Boxed future of one test run, borrowing the context.
pub type TestFuture<'a> = Pin<Box<dyn Future<Output = CheckResult> + Send + 'a>>;

/// The function behind a catalogue entry.
pub type TestFn = for<'a> fn(&'a Ctx) -> TestFuture<'a>;

/// One catalogue entry.
#[derive(Clone, Copy)]
pub struct TestCase {
    pub id: &'static str,
    pub title: &'static str,
    /// SPEC section, e.g. `§3`.
    pub section: &'static str,
    pub severity: Severity,
    pub role: Role,
    pub run: TestFn,
}

impl TestCase {
    /// The group prefix of the id (`JOSE` for `JOSE-007`).
    pub fn group(&self) -> &'static str {
        self.id.split_once('-').map_or(self.id, |(g, _)| g)
    }

    /// True if `pattern` is this id or a prefix of it (`JOSE`, `JOSE-0`).
    pub fn matches(&self, pattern: &str) -> bool {
        let pattern = pattern.trim().to_ascii_uppercase();
        !pattern.is_empty() && self.id.starts_with(&pattern)
    }
}

impl fmt::Debug for TestCase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestCase")
            .field("id", &self.id)
            .field("severity", &self.severity)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

/// Builds a catalogue entry from an `async fn(&Ctx) -> CheckResult`.
#[macro_export]
macro_rules! case {
    ($id:literal, $sev:ident, $section:literal, $role:ident, $title:literal, $f:path) => {
        $crate::catalogue::TestCase {
            id: $id,
            title: $title,
            section: $section,
            severity: $crate::catalogue::Severity::$sev,
            role: $crate::catalogue::Role::$role,
            run: |ctx| Box::pin($f(ctx)),
        }
    };
}

/// The whole catalogue, in run order: transport first (nothing else can
/// work without it), then trust, the credential checks, and the flows.
pub fn all() -> Vec<TestCase> {
    [
        suite::tls::cases(),
        suite::trust::cases(),
        suite::jose::cases(),
        suite::vc::cases(),
        suite::api::cases(),
        suite::idem::cases(),
        suite::delivery::cases(),
        suite::map::cases(),
    ]
    .concat()
}

/// The catalogue filtered by `--only` and `--skip` patterns (ids or prefixes).
pub fn select(only: &[String], skip: &[String]) -> Vec<TestCase> {
    all()
        .into_iter()
        .filter(|t| only.is_empty() || only.iter().any(|p| t.matches(p)))
        .filter(|t| !skip.iter().any(|p| t.matches(p)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn ids_are_unique_well_formed_and_plentiful() {
        let cases = all();
        let mut seen = HashSet::new();
        for case in &cases {
            assert!(seen.insert(case.id), "duplicate id {}", case.id);
            let (group, number) = case.id.split_once('-').unwrap();
            assert!(
                ["TLS", "JOSE", "VC", "TRUST", "MAP", "API", "IDEM", "DELIVERY"].contains(&group),
                "{}",
                case.id
            );
            assert!(
                number.len() == 3 && number.bytes().all(|b| b.is_ascii_digit()),
                "{}",
                case.id
            );
            assert!(case.section.starts_with('§'), "{}", case.id);
            assert!(!case.title.is_empty());
        }
        assert!(cases.len() >= 60, "catalogue has {} tests", cases.len());
    }

    #[test]
    fn selection_by_prefix() {
        let jose = select(&["jose".into()], &[]);
        assert!(!jose.is_empty() && jose.iter().all(|t| t.group() == "JOSE"));
        let without = select(&["JOSE".into()], &["JOSE-001".into()]);
        assert_eq!(without.len(), jose.len() - 1);
        assert!(select(&["NOPE".into()], &[]).is_empty());
    }
}
