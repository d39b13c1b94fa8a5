//! Rendering a run: a text table for people, JSON for scripts, JUnit XML for
//! CI systems (one `<testsuite>` per group, skipped and failed tests marked
//! the way JUnit consumers expect).

use crate::runner::{Outcome, RunReport, TestResult};
use serde_json::json;
use std::fmt::Write as _;

/// Output format of a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
    Junit,
}

pub fn render(report: &RunReport, format: Format) -> String {
    match format {
        Format::Text => text(report),
        Format::Json => json(report),
        Format::Junit => junit(report),
    }
}

fn secs(r: &TestResult) -> f64 {
    r.duration.as_secs_f64()
}

/// A fixed-width table, then a summary line.
pub fn text(report: &RunReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<13} {:<6} {:<6} {:>8}  reason",
        "id", "sev", "result", "time"
    );
    for r in &report.results {
        let reason = r.reason.as_deref().unwrap_or("");
        let _ = writeln!(
            out,
            "{:<13} {:<6} {:<6} {:>7.2}s  {}",
            r.id,
            r.severity.to_string(),
            r.outcome.as_str(),
            secs(r),
            reason.replace('\n', " ")
        );
    }
    let _ = writeln!(
        out,
        "\n{} tests against {} in {:.1}s: {} passed, {} failed ({} MUST), {} skipped",
        report.results.len(),
        report.target,
        report.duration.as_secs_f64(),
        report.count(Outcome::Pass),
        report.count(Outcome::Fail),
        report.must_failures(),
        report.count(Outcome::Skip),
    );
    out
}

pub fn json(report: &RunReport) -> String {
    let results: Vec<_> = report
        .results
        .iter()
        .map(|r| {
            json!({
                "id": r.id,
                "title": r.title,
                "section": r.section,
                "severity": r.severity.to_string(),
                "role": r.role.to_string(),
                "result": r.outcome.as_str(),
                "reason": r.reason,
                "durationMs": r.duration.as_millis() as u64,
            })
        })
        .collect();
    let doc = json!({
        "target": report.target,
        "startedAt": report.started_at,
        "durationMs": report.duration.as_millis() as u64,
        "summary": {
            "total": report.results.len(),
            "passed": report.count(Outcome::Pass),
            "failed": report.count(Outcome::Fail),
            "mustFailed": report.must_failures(),
            "skipped": report.count(Outcome::Skip),
        },
        "results": results,
    });
    serde_json::to_string_pretty(&doc).unwrap_or_default()
}

/// XML attribute/text escaping.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if (c as u32) < 0x20 && !matches!(c, '\n' | '\t' | '\r') => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// JUnit XML: `<testsuites>` → one `<testsuite name="bashu.GROUP">` per group
/// → `<testcase classname="bashu.GROUP" name="ID title">`. A failed SHOULD
/// test is a `<failure type="SHOULD">`, so CI can tell it from a MUST.
pub fn junit(report: &RunReport) -> String {
    let mut groups: Vec<&str> = Vec::new();
    for r in &report.results {
        if !groups.contains(&r.group()) {
            groups.push(r.group());
        }
    }
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        out,
        "<testsuites name=\"bashu-conformance\" tests=\"{}\" failures=\"{}\" skipped=\"{}\" time=\"{:.3}\">",
        report.results.len(),
        report.count(Outcome::Fail),
        report.count(Outcome::Skip),
        report.duration.as_secs_f64()
    );
    for group in groups {
        let rows: Vec<&TestResult> = report.results.iter().filter(|r| r.group() == group).collect();
        let count = |o: Outcome| rows.iter().filter(|r| r.outcome == o).count();
        let time: f64 = rows.iter().map(|r| secs(r)).sum();
        let _ = writeln!(
            out,
            "  <testsuite name=\"bashu.{group}\" tests=\"{}\" failures=\"{}\" skipped=\"{}\" time=\"{time:.3}\" timestamp=\"{}\">",
            rows.len(),
            count(Outcome::Fail),
            count(Outcome::Skip),
            esc(&report.started_at)
        );
        let _ = writeln!(
            out,
            "    <properties><property name=\"target\" value=\"{}\"/></properties>",
            esc(&report.target)
        );
        for r in rows {
            let _ = write!(
                out,
                "    <testcase classname=\"bashu.{group}\" name=\"{} {}\" time=\"{:.3}\">",
                r.id,
                esc(r.title),
                secs(r)
            );
            let reason = esc(r.reason.as_deref().unwrap_or(""));
            match r.outcome {
                Outcome::Pass => {}
                Outcome::Fail => {
                    let _ = write!(
                        out,
                        "<failure type=\"{}\" message=\"{reason}\">{} {} ({}): {reason}</failure>",
                        r.severity, r.id, r.section, r.severity
                    );
                }
                Outcome::Skip => {
                    let _ = write!(out, "<skipped message=\"{reason}\"/>");
                }
            }
            out.push_str("</testcase>\n");
        }
        out.push_str("  </testsuite>\n");
    }
    out.push_str("</testsuites>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalogue::{Role, Severity};
    use std::time::Duration;

    fn sample() -> RunReport {
        let row = |id, outcome, severity, reason: Option<&str>| TestResult {
            id,
            title: "a <title> & more",
            section: "§3",
            severity,
            role: Role::CreditBank,
            outcome,
            reason: reason.map(str::to_owned),
            duration: Duration::from_millis(12),
        };
        RunReport {
            target: "https://127.0.0.1:1".into(),
            started_at: "2026-11-25T00:00:00Z".into(),
            duration: Duration::from_millis(40),
            results: vec![
                row(
                    "JOSE-001",
                    Outcome::Fail,
                    Severity::Must,
                    Some("expected 422, got 202"),
                ),
                row("JOSE-025", Outcome::Fail, Severity::Should, Some("x")),
                row("TLS-003", Outcome::Skip, Severity::Must, Some("needs --ca-key")),
                row("TLS-001", Outcome::Pass, Severity::Must, None),
            ],
        }
    }

    #[test]
    fn exit_code_counts_must_failures_only() {
        let mut r = sample();
        assert_eq!(r.exit_code(false), 1);
        r.results.remove(0);
        assert_eq!(r.exit_code(false), 0);
        assert_eq!(r.exit_code(true), 1);
    }

    #[test]
    fn junit_is_escaped_and_grouped() {
        let xml = junit(&sample());
        assert!(xml.contains("<testsuite name=\"bashu.JOSE\" tests=\"2\" failures=\"2\""));
        assert!(xml.contains("<testsuite name=\"bashu.TLS\" tests=\"2\" failures=\"0\" skipped=\"1\""));
        assert!(xml.contains("a &lt;title&gt; &amp; more"));
        assert!(xml.contains("<failure type=\"MUST\" message=\"expected 422, got 202\">"));
        assert!(xml.contains("<skipped message=\"needs --ca-key\"/>"));
    }

    #[test]
    fn json_and_text_summaries() {
        let j: serde_json::Value = serde_json::from_str(&json(&sample())).unwrap();
        assert_eq!(j["summary"]["mustFailed"], 1);
        assert_eq!(j["results"][0]["result"], "fail");
        assert!(text(&sample()).contains("4 tests against https://127.0.0.1:1"));
    }
}
