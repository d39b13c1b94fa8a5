//! `bashu map` (SPEC §6, §8): translate JSON Lines on stdin to JSON Lines on
//! stdout, one output line per input line, in order.
//!
//! Output lines are `{"ok":{"record":…,"provenance":{tableId,tableVersion,losses}}}`
//! or `{"error":{"type":<SPEC §4 slug>,"detail":…}}`. A bad line never stops
//! the stream; memory stays bounded because a line longer than
//! [`MAX_LINE_BYTES`] is skipped as it is read, never buffered whole. If the
//! input record carries the subject `id`, it is set aside for the
//! translation and put back first in the output record. Exit codes: 0 the
//! stream was processed, 1 the table file or an I/O stream failed, 2 usage.

use schema_mapper::{translate, LearningRecord, MappingTable};
use serde_json::{json, Map, Value};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

/// Longest accepted input line (without its newline).
pub const MAX_LINE_BYTES: usize = 1024 * 1024;

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
    match map_stream(&mut input, &mut output, &args.from, &args.to, &table) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => super::fail(format!("bashu map: {e}")),
    }
}

/// Reads a table file, by the same rule as the gateway's `[mapping]` tables.
pub fn load_table(path: &std::path::Path) -> Result<MappingTable, String> {
    crate::mapping::read_table(path).map_err(|e| e.to_string())
}

/// Translates every line of `input` into one line of `output`. Only I/O
/// errors end it early. Output is flushed whenever input has to be waited
/// for, so a slow producer still sees results line by line.
pub fn map_stream<R: Read, W: Write>(
    input: &mut BufReader<R>,
    output: &mut W,
    from: &str,
    to: &str,
    table: &MappingTable,
) -> io::Result<()> {
    let mut line = Vec::new();
    loop {
        if input.buffer().is_empty() {
            output.flush()?;
        }
        let result = match read_line_capped(input, &mut line, MAX_LINE_BYTES)? {
            Line::Eof => break,
            Line::TooLong => error_line(
                "payload-too-large",
                format!("line exceeds {MAX_LINE_BYTES} bytes"),
            ),
            Line::Complete => map_line(&line, from, to, table),
        };
        serde_json::to_writer(&mut *output, &result)?;
        output.write_all(b"\n")?;
    }
    output.flush()
}

fn map_line(line: &[u8], from: &str, to: &str, table: &MappingTable) -> Value {
    if line.iter().all(u8::is_ascii_whitespace) {
        return error_line("malformed-request", "empty line".into());
    }
    let mut value: Value = match serde_json::from_slice(line) {
        Ok(v) => v,
        Err(e) => return error_line("malformed-request", format!("not JSON: {e}")),
    };
    let subject_id = value.as_object_mut().and_then(|o| o.shift_remove("id"));
    match LearningRecord::from_json(&value).and_then(|r| translate(&r, from, to, table)) {
        Ok(t) => {
            let mut record = Map::new();
            if let Some(id) = subject_id {
                record.insert("id".into(), id);
            }
            if let Value::Object(fields) = t.record.to_json() {
                record.extend(fields);
            }
            json!({"ok": {"record": record, "provenance": t.provenance_json()}})
        }
        Err(e) => error_line(e.slug(), e.to_string()),
    }
}

fn error_line(slug: &str, detail: String) -> Value {
    json!({"error": {"type": slug, "detail": detail}})
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
        map_stream(&mut reader, &mut out, "cqf", "wfs", &MappingTable::reference()).unwrap();
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
