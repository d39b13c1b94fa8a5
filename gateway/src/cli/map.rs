//! `bashu map` (SPEC §6, §8): translate learning records on stdin to one
//! JSON result line per record on stdout, in order.
//!
//! Input forms (detected from the first non-blank line, after a UTF-8 BOM
//! is stripped, and named on stderr): **JSON Lines** (one record per line;
//! a bad line gets an error line and the stream goes on; a line longer than
//! [`MAX_LINE_BYTES`] is skipped as it is read, never buffered whole), a
//! **JSON array** of records, or **pretty-printed JSON** (one or more
//! records, each spread over lines, as in `fixtures/records/`). The last two
//! are read whole, up to [`MAX_DOCUMENT_BYTES`].
//!
//! Output lines are `{"ok":{"record":…,"provenance":{tableId,tableVersion,losses}}}`
//! or `{"error":{"type":<SPEC §4 slug>,"detail":…}}`; errors about a level
//! or an outcome type also carry `valid` (the framework's values) and, when
//! one is close, `suggestion`. Loss notes about credits carry their units
//! (`sourceUnit`/`targetUnit`: `credits` or `hours`) and a `note`. If the
//! input record carries the subject `id`, it is set aside for the
//! translation and put back first in the output record. Exit codes: 0 every
//! record translated, 1 any record failed (every result line is still
//! written) or the table file or an I/O stream failed, 2 usage.

use crate::suggest;
use schema_mapper::{translate, Framework, LearningRecord, MapError, MappingTable};
use serde_json::{json, Map, Value};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

/// Longest accepted input line (without its newline).
pub const MAX_LINE_BYTES: usize = 1024 * 1024;

/// Largest JSON array or pretty-printed document read whole.
pub const MAX_DOCUMENT_BYTES: usize = 64 * 1024 * 1024;

const BOM: &[u8] = b"\xEF\xBB\xBF";

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Framework of the input records (e.g. `cqf`).
    #[arg(long)]
    pub from: String,
    /// Framework to translate to (e.g. `wfs`).
    #[arg(long)]
    pub to: String,
    /// Mapping table file replacing the bundled reference table (TOML, or
    /// JSON if the name ends in `.json`).
    #[arg(long, value_name = "PATH")]
    pub table: Option<PathBuf>,
}

pub fn run(args: Args) -> ExitCode {
    let table = match &args.table {
        None => MappingTable::reference(),
        Some(path) => match load_table(path) {
            Ok(t) => t,
            Err(e) => return super::fail(format!("mapping table {}: {e}", path.display())),
        },
    };
    for id in [&args.from, &args.to] {
        if table.framework(id).is_none() {
            eprintln!(
                "bashu: error: framework `{id}` is not in mapping table {} {} (it covers `{}` and `{}`)",
                table.id(),
                table.version(),
                table.home().id(),
                table.interchange().id()
            );
            return ExitCode::from(2);
        }
    }
    let mut input = BufReader::with_capacity(64 * 1024, io::stdin().lock());
    let mut output = io::BufWriter::new(io::stdout().lock());
    let mapper = Mapper {
        from: &args.from,
        to: &args.to,
        table: &table,
    };
    match map_input(&mut input, &mut output, &mapper) {
        Ok(summary) => {
            eprintln!("bashu map: {summary}");
            if summary.failed > 0 {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => super::fail(format!("bashu map: {e}")),
    }
}

/// Reads a table file, by the same rule as the gateway's `[mapping]` tables.
pub fn load_table(path: &std::path::Path) -> Result<MappingTable, String> {
    crate::mapping::read_table(path).map_err(|e| e.to_string())
}

/// How the input was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputForm {
    JsonLines,
    JsonArray,
    PrettyJson,
}

impl InputForm {
    fn describe(self) -> &'static str {
        match self {
            InputForm::JsonLines => "JSON Lines (one record per line)",
            InputForm::JsonArray => "a JSON array",
            InputForm::PrettyJson => "pretty-printed JSON (records spread over lines)",
        }
    }
}

/// What [`map_input`] read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub form: InputForm,
    pub bom: bool,
    pub records: usize,
    pub failed: usize,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "read {}{}: {} record(s), {} translated, {} failed",
            self.form.describe(),
            if self.bom {
                " after a UTF-8 byte order mark"
            } else {
                ""
            },
            self.records,
            self.records - self.failed,
            self.failed
        )
    }
}

/// The translation every record goes through.
pub struct Mapper<'a> {
    pub from: &'a str,
    pub to: &'a str,
    pub table: &'a MappingTable,
}

/// Counts results as they are written.
struct Results<'w, W: Write> {
    out: &'w mut W,
    records: usize,
    failed: usize,
}

impl<W: Write> Results<'_, W> {
    fn push(&mut self, result: &Value) -> io::Result<()> {
        self.records += 1;
        if result.get("ok").is_none() {
            self.failed += 1;
        }
        serde_json::to_writer(&mut *self.out, result)?;
        self.out.write_all(b"\n")
    }
}

/// Detects the input form and writes one result line per record. Only I/O
/// errors (and a whole document beyond [`MAX_DOCUMENT_BYTES`]) end it early.
pub fn map_input<R: Read, W: Write>(
    input: &mut BufReader<R>,
    output: &mut W,
    mapper: &Mapper<'_>,
) -> io::Result<Summary> {
    let mut results = Results {
        out: output,
        records: 0,
        failed: 0,
    };
    let mut line = Vec::new();
    let mut blank_lines = 0usize;
    let mut bom = false;
    // The first non-blank line decides the form.
    let (form, first) = loop {
        match read_line_capped(input, &mut line, MAX_LINE_BYTES)? {
            Line::Eof => {
                return Ok(Summary {
                    form: InputForm::JsonLines,
                    bom,
                    records: 0,
                    failed: 0,
                })
            }
            Line::TooLong => break (InputForm::JsonLines, Line::TooLong),
            Line::Complete => {
                if blank_lines == 0 && line.starts_with(BOM) {
                    line.drain(..BOM.len());
                    bom = true;
                }
                if line.iter().all(u8::is_ascii_whitespace) {
                    blank_lines += 1;
                    continue;
                }
                break (detect(&line), Line::Complete);
            }
        }
    };
    if form != InputForm::JsonLines {
        let mut doc = std::mem::take(&mut line);
        doc.push(b'\n');
        read_rest(input, &mut doc)?;
        match form {
            InputForm::JsonArray => map_array(&doc, mapper, &mut results)?,
            _ => map_documents(&doc, mapper, &mut results)?,
        }
        results.out.flush()?;
        return Ok(Summary {
            form,
            bom,
            records: results.records,
            failed: results.failed,
        });
    }
    for _ in 0..blank_lines {
        results.push(&error_line("malformed-request", "empty line".into()))?;
    }
    let mut current = first;
    loop {
        let result = match current {
            Line::Eof => break,
            Line::TooLong => error_line(
                "payload-too-large",
                format!("line exceeds {MAX_LINE_BYTES} bytes"),
            ),
            Line::Complete => map_line(&line, mapper),
        };
        results.push(&result)?;
        if input.buffer().is_empty() {
            results.out.flush()?;
        }
        current = read_line_capped(input, &mut line, MAX_LINE_BYTES)?;
    }
    results.out.flush()?;
    Ok(Summary {
        form,
        bom,
        records: results.records,
        failed: results.failed,
    })
}

/// `[` starts an array; a line that is a whole JSON value is JSON Lines;
/// a `{` that does not close on its line starts pretty-printed JSON.
fn detect(first_line: &[u8]) -> InputForm {
    let trimmed = first_line.trim_ascii_start();
    if trimmed.starts_with(b"[") {
        InputForm::JsonArray
    } else if serde_json::from_slice::<serde::de::IgnoredAny>(first_line).is_ok() {
        InputForm::JsonLines
    } else if trimmed.starts_with(b"{") {
        InputForm::PrettyJson
    } else {
        InputForm::JsonLines
    }
}

/// Appends the rest of `input` to `doc`, refusing more than
/// [`MAX_DOCUMENT_BYTES`] in all.
fn read_rest<R: Read>(input: &mut BufReader<R>, doc: &mut Vec<u8>) -> io::Result<()> {
    let room = MAX_DOCUMENT_BYTES.saturating_sub(doc.len()) as u64;
    input.take(room + 1).read_to_end(doc)?;
    if doc.len() > MAX_DOCUMENT_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "the JSON document exceeds {} MiB; give larger inputs as JSON Lines (one record per line)",
                MAX_DOCUMENT_BYTES / (1024 * 1024)
            ),
        ));
    }
    Ok(())
}

fn map_array<W: Write>(doc: &[u8], mapper: &Mapper<'_>, results: &mut Results<'_, W>) -> io::Result<()> {
    match serde_json::from_slice::<Vec<Value>>(doc) {
        Ok(records) => {
            for record in records {
                results.push(&map_value(record, mapper))?;
            }
            Ok(())
        }
        Err(e) => results.push(&error_line(
            "malformed-request",
            format!("not a JSON array of records: {e}"),
        )),
    }
}

/// One or more JSON values separated by whitespace. A syntax error ends
/// the input (there is no line to resynchronise on).
fn map_documents<W: Write>(doc: &[u8], mapper: &Mapper<'_>, results: &mut Results<'_, W>) -> io::Result<()> {
    for value in serde_json::Deserializer::from_slice(doc).into_iter::<Value>() {
        match value {
            Ok(v) => results.push(&map_value(v, mapper))?,
            Err(e) => {
                return results.push(&error_line(
                    "malformed-request",
                    format!("not JSON: {e} (the rest of the input was not read)"),
                ))
            }
        }
    }
    Ok(())
}

fn map_line(line: &[u8], mapper: &Mapper<'_>) -> Value {
    if line.iter().all(u8::is_ascii_whitespace) {
        return error_line("malformed-request", "empty line".into());
    }
    match serde_json::from_slice(line) {
        Ok(v) => map_value(v, mapper),
        Err(e) => error_line("malformed-request", format!("not JSON: {e}")),
    }
}

fn map_value(mut value: Value, m: &Mapper<'_>) -> Value {
    let original = value.clone();
    let subject_id = value.as_object_mut().and_then(|o| o.shift_remove("id"));
    match LearningRecord::from_json(&value).and_then(|r| translate(&r, m.from, m.to, m.table)) {
        Ok(t) => {
            let mut record = Map::new();
            if let Some(id) = subject_id {
                record.insert("id".into(), id);
            }
            if let Value::Object(fields) = t.record.to_json() {
                record.extend(fields);
            }
            let mut provenance = t.provenance_json();
            if let Some(losses) = provenance.get_mut("losses").and_then(Value::as_array_mut) {
                for loss in losses.iter_mut().filter_map(Value::as_object_mut) {
                    annotate_loss(loss, m);
                }
            }
            json!({"ok": {"record": record, "provenance": provenance}})
        }
        Err(e) => explain(&e, &original, m),
    }
}

fn error_line(slug: &str, detail: String) -> Value {
    json!({"error": {"type": slug, "detail": detail}})
}

/// Units and a sentence for a loss note, so `3 → 40` is not read as
/// "3 credits became 40 credits".
fn annotate_loss(loss: &mut Map<String, Value>, m: &Mapper<'_>) {
    let reason = loss
        .get("reason")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let to = m.table.framework(m.to);
    let (source, target) = (
        loss.get("source").cloned().unwrap_or(Value::Null),
        loss.get("target").cloned().unwrap_or(Value::Null),
    );
    let (source_unit, target_unit, note) = match reason.as_str() {
        "credits-capped-by-hours" => (
            "credits",
            "hours",
            format!(
                "{source} {} credits stand for more than the {target} learning hours the record reports; the {target} hours were converted instead",
                m.from
            ),
        ),
        "credits-rounded-down" => (
            "credits",
            "credits",
            format!(
                "{source} {} credits, converted through learning hours at {} hours per {} credit, fall between two steps of {} {} credits; rounded down to {target} {} credits",
                m.from,
                to.map_or(0, Framework::hours_per_credit),
                m.to,
                to.map_or(Value::Null, |f| f.credit_step().to_json()),
                m.to,
                m.to
            ),
        ),
        "level-band-merged" => (
            "level",
            "level",
            format!(
                "several {} levels map to {} level {target}; {} level {source} cannot be recovered from it",
                m.from, m.to, m.from
            ),
        ),
        "outcome-type-merged" => (
            "outcome type",
            "outcome type",
            format!(
                "several {} outcome types map to {target} in {}; {source} cannot be recovered from it",
                m.from, m.to
            ),
        ),
        _ => return,
    };
    loss.insert("sourceUnit".into(), source_unit.into());
    loss.insert("targetUnit".into(), target_unit.into());
    loss.insert("note".into(), note.into());
}

/// An error line that, for levels and outcome types, lists the valid
/// values of the framework and suggests the nearest one.
fn explain(e: &MapError, record: &Value, m: &Mapper<'_>) -> Value {
    let mut line = error_line(e.slug(), e.to_string());
    let (detail, valid, suggestion) = match e {
        MapError::UnknownLevel { framework, level } => {
            let Some(fw) = m.table.framework(framework) else {
                return line;
            };
            let near = nearest_level(fw, *level);
            (
                format!(
                    "{e}; valid levels of `{framework}`: {}; did you mean {near}?",
                    level_range(fw)
                ),
                level_values(fw),
                Some(Value::from(near)),
            )
        }
        MapError::Schema { field, .. } if field == "level" => {
            let Some(fw) = m.table.framework(m.from) else {
                return line;
            };
            let near = record
                .get("level")
                .and_then(Value::as_str)
                .and_then(digits)
                .map(|n| nearest_level(fw, n));
            let mut detail = format!(
                "{e}; valid levels of `{}`: {} (a JSON integer)",
                m.from,
                level_range(fw)
            );
            if let Some(n) = near {
                detail.push_str(&format!("; did you mean {n}?"));
            }
            (detail, level_values(fw), near.map(Value::from))
        }
        MapError::UnknownOutcomeType {
            framework,
            outcome_type,
        } => {
            let Some(fw) = m.table.framework(framework) else {
                return line;
            };
            let listed: Vec<String> = fw
                .outcome_types()
                .iter()
                .map(|o| format!("{} ({})", o.id, o.zh))
                .collect();
            let mut detail = format!("{e}; valid outcome types of `{framework}`: {}", listed.join(", "));
            let near = nearest_outcome(fw, outcome_type);
            if let Some((id, zh)) = &near {
                detail.push_str(&format!("; did you mean `{id}` ({zh})?"));
                if outcome_type.trim() != outcome_type
                    && (outcome_type.trim() == id || outcome_type.trim() == zh)
                {
                    detail.push_str(" (the value has leading or trailing whitespace)");
                }
            }
            let valid = fw
                .outcome_types()
                .iter()
                .map(|o| json!({"id": o.id, "zh": o.zh}))
                .collect();
            (detail, valid, near.map(|(id, _)| Value::from(id)))
        }
        MapError::FrameworkMismatch { record, .. } if m.table.framework(record).is_some() => {
            let detail = format!("{e}; to translate it, run with --from {record}");
            if let Some(err) = line.get_mut("error").and_then(Value::as_object_mut) {
                err.insert("detail".into(), detail.into());
            }
            return line;
        }
        _ => return line,
    };
    if let Some(err) = line.get_mut("error").and_then(Value::as_object_mut) {
        err.insert("detail".into(), detail.into());
        err.insert("valid".into(), Value::Array(valid));
        if let Some(s) = suggestion {
            err.insert("suggestion".into(), s);
        }
    }
    line
}

fn level_range(fw: &Framework) -> String {
    format!("1..{}", fw.top_level())
}

fn level_values(fw: &Framework) -> Vec<Value> {
    (1..=fw.top_level()).map(Value::from).collect()
}

/// The valid level closest to `level`.
fn nearest_level(fw: &Framework, level: u64) -> u32 {
    let top = fw.top_level().max(1);
    u32::try_from(level).unwrap_or(top).clamp(1, top)
}

/// The number in `L11`, `11`, `7级`: its ASCII digits, if any.
fn digits(s: &str) -> Option<u64> {
    let d: String = s.chars().filter(char::is_ascii_digit).collect();
    d.parse().ok()
}

/// The outcome type (id, zh label) whose id or label is nearest to `name`.
fn nearest_outcome(fw: &Framework, name: &str) -> Option<(String, String)> {
    let limit = (name.trim().chars().count() / 2 + 1).max(2);
    let names = fw
        .outcome_types()
        .iter()
        .flat_map(|o| [o.id.as_str(), o.zh.as_str()]);
    let hit = suggest::nearest(name, names, limit)?;
    fw.outcome_types()
        .iter()
        .find(|o| o.id == hit || o.zh == hit)
        .map(|o| (o.id.clone(), o.zh.clone()))
}

enum Line {
    Complete,
    TooLong,
    Eof,
}

/// Reads one `\n`-terminated line (a trailing `\r` is dropped) into `buf`.
/// Past `cap` bytes the rest of the line is consumed and discarded, so
/// memory is bounded by `cap` plus the reader's buffer.
fn read_line_capped<R: BufRead>(r: &mut R, buf: &mut Vec<u8>, cap: usize) -> io::Result<Line> {
    buf.clear();
    let mut too_long = false;
    let mut read_any = false;
    loop {
        let chunk = match r.fill_buf() {
            Ok(c) => c,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if chunk.is_empty() {
            break;
        }
        read_any = true;
        let newline = chunk.iter().position(|&b| b == b'\n');
        let part = &chunk[..newline.unwrap_or(chunk.len())];
        if !too_long && buf.len() + part.len() > cap + 1 {
            too_long = true;
            buf.clear();
        }
        if !too_long {
            buf.extend_from_slice(part);
        }
        let used = newline.map_or(chunk.len(), |i| i + 1);
        r.consume(used);
        if newline.is_some() {
            break;
        }
    }
    if buf.last() == Some(&b'\r') {
        buf.pop();
    }
    Ok(match (read_any, too_long || buf.len() > cap) {
        (false, _) => Line::Eof,
        (true, true) => Line::TooLong,
        (true, false) => Line::Complete,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_lines(input: &[u8]) -> Vec<Value> {
        let mut reader = BufReader::with_capacity(16, input);
        let mut out = Vec::new();
        let table = MappingTable::reference();
        let mapper = Mapper {
            from: "cqf",
            to: "wfs",
            table: &table,
        };
        map_input(&mut reader, &mut out, &mapper).unwrap();
        String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn capped_reader_skips_long_lines_and_keeps_going() {
        let mut input = vec![b'x'; 100];
        input.extend_from_slice(b"\nok\r\n\nlast");
        let mut r = BufReader::with_capacity(8, input.as_slice());
        let mut buf = Vec::new();
        assert!(matches!(
            read_line_capped(&mut r, &mut buf, 10).unwrap(),
            Line::TooLong
        ));
        assert!(matches!(
            read_line_capped(&mut r, &mut buf, 10).unwrap(),
            Line::Complete
        ));
        assert_eq!(buf, b"ok");
        assert!(matches!(
            read_line_capped(&mut r, &mut buf, 10).unwrap(),
            Line::Complete
        ));
        assert_eq!(buf, b"");
        assert!(matches!(
            read_line_capped(&mut r, &mut buf, 10).unwrap(),
            Line::Complete
        ));
        assert_eq!(buf, b"last");
        assert!(matches!(
            read_line_capped(&mut r, &mut buf, 10).unwrap(),
            Line::Eof
        ));
    }

    #[test]
    fn exactly_cap_bytes_is_accepted() {
        let mut r = BufReader::with_capacity(4, &b"0123456789\n"[..]);
        let mut buf = Vec::new();
        assert!(matches!(
            read_line_capped(&mut r, &mut buf, 10).unwrap(),
            Line::Complete
        ));
        let mut r = BufReader::with_capacity(4, &b"0123456789\r\n"[..]);
        assert!(matches!(
            read_line_capped(&mut r, &mut buf, 10).unwrap(),
            Line::Complete
        ));
        let mut r = BufReader::with_capacity(4, &b"0123456789A\n"[..]);
        assert!(matches!(
            read_line_capped(&mut r, &mut buf, 10).unwrap(),
            Line::TooLong
        ));
    }

    #[test]
    fn one_output_line_per_input_line_with_id_kept() {
        let good = r#"{"id":"urn:bashu:learner:cq:a1","framework":"cqf","frameworkVersion":"1.0.0","level":6,"credits":3,"learningHours":54,"outcomeType":"degree-education","title":{"zh":"高等数学"},"awardedOn":"2026-07-01","awardingBody":"重庆大学"}"#;
        let input = format!("{good}\n{{not json\n\n[1,2]\n{good}");
        let out = run_lines(input.as_bytes());
        assert_eq!(out.len(), 5);
        assert_eq!(out[0]["ok"]["record"]["id"], "urn:bashu:learner:cq:a1");
        assert_eq!(out[0]["ok"]["record"]["level"], 5);
        assert_eq!(out[0]["ok"]["record"]["credits"], 2);
        assert_eq!(out[0]["ok"]["provenance"]["tableId"], "cqf-ref~wfs-ref");
        assert_eq!(out[1]["error"]["type"], "malformed-request");
        assert_eq!(out[2]["error"]["type"], "malformed-request");
        assert_eq!(out[3]["error"]["type"], "schema-violation");
        assert_eq!(out[4], out[0]);
    }
}
