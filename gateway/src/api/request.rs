//! Reading request bodies and query strings strictly and within limits.

use crate::problem::{Problem, ProblemType};
use bytes::Bytes;
use http::{header, HeaderMap};
use http_body_util::BodyExt;
use serde::de::DeserializeOwned;
use std::time::Duration;

/// Reads at most `limit` bytes of body: a declared `Content-Length` above the
/// limit is refused before reading, and a chunked body is cut off as soon as
/// it crosses the limit, so no more than `limit` bytes are ever buffered.
///
/// Before a 413 is answered, the rest of the body is read and discarded
/// (see [`drain`]), so the client sees the answer rather than a reset.
pub async fn read_body<B>(headers: &HeaderMap, body: B, limit: usize) -> Result<Bytes, Problem>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    if let Some(len) = headers.get(header::CONTENT_LENGTH) {
        let len: u64 = len
            .to_str()
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| malformed("invalid Content-Length"))?;
        if len > limit as u64 {
            // Pointless when the client announced more than we would skip.
            if len <= drain_budget(limit) as u64 {
                drain(body, limit).await;
            }
            return Err(too_large(limit));
        }
    }
    let mut body = std::pin::pin!(body);
    let mut buf = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| malformed("request body could not be read"))?;
        let Ok(data) = frame.into_data() else { continue };
        if buf.len().saturating_add(data.len()) > limit {
            drain(body, limit).await;
            return Err(too_large(limit));
        }
        buf.extend_from_slice(&data);
    }
    Ok(buf.freeze())
}

/// Longest time spent discarding a body before an early answer.
pub const DRAIN_TIME: Duration = Duration::from_secs(1);
/// Bytes discarded at least (bodies up to `max_body_bytes` are always drained).
const MIN_DRAIN_BYTES: usize = 64 * 1024;

fn drain_budget(max_body: usize) -> usize {
    max_body.max(MIN_DRAIN_BYTES)
}

/// Reads and discards the rest of a request body, at most
/// `max(max_body, 64 KiB)` bytes and for at most [`DRAIN_TIME`]; returns
/// whether the body ended within those bounds.
///
/// An answer sent while the client is still sending (a 403, a 413) ends
/// with the server abandoning the request stream: HTTP/2 resets it,
/// HTTP/1.1 closes the connection with unread data, which the peer's kernel
/// turns into a TCP reset. Some clients then lose the answer itself (curl
/// reports a stream error). Reading the body first lets every client see the
/// status; the bounds keep a client from holding the server with it.
pub async fn drain<B>(body: B, max_body: usize) -> bool
where
    B: hyper::body::Body<Data = Bytes>,
{
    if body.is_end_stream() {
        return true;
    }
    let mut left = drain_budget(max_body);
    let read = async move {
        let mut body = std::pin::pin!(body);
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else { return false };
            if let Some(data) = frame.data_ref() {
                if data.len() > left {
                    return false;
                }
                left -= data.len();
            }
        }
        true
    };
    tokio::time::timeout(DRAIN_TIME, read).await.unwrap_or(false)
}

/// Parses a JSON body of type `T` after checking the media type.
///
/// The error detail names the position, never the content: request bodies
/// carry credentials and must not be echoed.
pub fn parse_json<T: DeserializeOwned>(headers: &HeaderMap, body: &[u8]) -> Result<T, Problem> {
    if !is_json(headers) {
        return Err(malformed("Content-Type must be application/json"));
    }
    serde_json::from_slice(body).map_err(|e| {
        let what = match e.classify() {
            serde_json::error::Category::Data => data_error(&e),
            serde_json::error::Category::Eof => "truncated JSON".to_owned(),
            _ => "not valid JSON".to_owned(),
        };
        malformed(format!(
            "request body: {what} (line {}, column {})",
            e.line(),
            e.column()
        ))
    })
}

/// Longest field name from the request echoed back in a detail.
const MAX_ECHOED_FIELD: usize = 64;

/// Says which field is wrong without echoing any value.
///
/// serde's messages name fields (`unknown field `x`, expected one of …`,
/// `missing field `x``), which is what an integrator needs; but its
/// type errors quote the offending value (`invalid type: string "…"`),
/// which may be a credential, so those keep only the kind of value.
fn data_error(e: &serde_json::Error) -> String {
    let full = e.to_string();
    // serde_json appends " at line L column C"; the caller adds its own.
    let msg = full.rsplit_once(" at line ").map_or(full.as_str(), |(m, _)| m);
    if let Some(rest) = msg.strip_prefix("unknown field `") {
        // The name is request data: bound it and drop control characters.
        if let Some((name, expected)) = rest.split_once('`') {
            let name: String = name
                .chars()
                .filter(|c| !c.is_control())
                .take(MAX_ECHOED_FIELD)
                .collect();
            return format!("unknown field `{name}`{expected}");
        }
        return "unknown field".to_owned();
    }
    if msg.starts_with("missing field `") {
        // The name comes from our own type, never from the request.
        return msg.to_owned();
    }
    for prefix in ["invalid type: ", "invalid value: "] {
        if let Some(rest) = msg.strip_prefix(prefix) {
            let (got, expected) = rest.split_once(", expected ").unwrap_or((rest, "another type"));
            // `string "secret"` / `integer `5`` → just the kind.
            let kind = got.split([' ', '`', '"']).next().unwrap_or("value");
            return format!("{prefix}{kind}, expected {expected}");
        }
    }
    "fields or types do not match".to_owned()
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("application/json"))
}

/// Query parameters; each name at most once and only from `allowed`.
pub fn parse_query<'q>(query: Option<&'q str>, allowed: &[&str]) -> Result<Vec<(&'q str, &'q str)>, Problem> {
    let mut out: Vec<(&str, &str)> = Vec::new();
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        if !allowed.contains(&name) {
            return Err(malformed(if allowed.is_empty() {
                "this route takes no query parameters".to_owned()
            } else {
                format!("unknown query parameter (allowed: {})", allowed.join(", "))
            }));
        }
        if out.iter().any(|(n, _)| *n == name) {
            return Err(malformed(format!("query parameter {name} given twice")));
        }
        out.push((name, value));
    }
    Ok(out)
}

pub fn query_value<'q>(params: &[(&'q str, &'q str)], name: &str) -> Option<&'q str> {
    params.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
}

/// `GET /v1/inbox` parameters: `after` a cursor, `limit` in 1..=500 (100).
pub fn inbox_params(query: Option<&str>) -> Result<(Option<u64>, u32), Problem> {
    let params = parse_query(query, &["after", "limit"])?;
    let after = query_value(&params, "after")
        .map(|v| parse_digits::<u64>(v).ok_or_else(|| malformed("after must be a cursor (unsigned integer)")))
        .transpose()?;
    let limit = match query_value(&params, "limit") {
        None => 100,
        Some(v) => parse_digits::<u32>(v)
            .filter(|n| (1..=500).contains(n))
            .ok_or_else(|| malformed("limit must be an integer from 1 to 500"))?,
    };
    Ok((after, limit))
}

/// Statuses an exchange can have (SPEC §4).
pub const EXCHANGE_STATUSES: &[&str] = &["accepted", "forwarded", "delivered", "rejected", "dead-lettered"];

/// `GET /v1/admin/exchanges?status=`.
pub fn admin_status_param(query: Option<&str>) -> Result<Option<&str>, Problem> {
    let params = parse_query(query, &["status"])?;
    match query_value(&params, "status") {
        None => Ok(None),
        Some(s) if EXCHANGE_STATUSES.contains(&s) => Ok(Some(s)),
        Some(_) => Err(malformed(format!(
            "status must be one of {}",
            EXCHANGE_STATUSES.join(", ")
        ))),
    }
}

/// Plain decimal digits only: no sign, no whitespace, no percent-encoding.
fn parse_digits<T: std::str::FromStr>(s: &str) -> Option<T> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Exchange ids in paths, by the one rule of [`crate::ids`].
pub fn check_exchange_id(id: &str) -> Result<&str, Problem> {
    if crate::ids::is_exchange_id(id) {
        Ok(id)
    } else {
        Err(malformed(format!(
            "exchange id must be {}",
            crate::ids::EXCHANGE_ID_RULE
        )))
    }
}

pub fn malformed(detail: impl Into<String>) -> Problem {
    Problem::new(ProblemType::MalformedRequest, detail)
}

fn too_large(limit: usize) -> Problem {
    Problem::new(
        ProblemType::PayloadTooLarge,
        format!("request body exceeds {limit} bytes"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inbox_params_are_strict() {
        assert_eq!(inbox_params(None).unwrap(), (None, 100));
        assert_eq!(inbox_params(Some("after=7&limit=500")).unwrap(), (Some(7), 500));
        for bad in [
            "limit=0",
            "limit=501",
            "limit=-1",
            "limit=",
            "after=x",
            "after=+1",
            "foo=1",
            "limit=1&limit=2",
        ] {
            let p = inbox_params(Some(bad)).unwrap_err();
            assert_eq!(p.kind, ProblemType::MalformedRequest, "{bad}");
        }
    }

    #[test]
    fn admin_status_is_from_the_spec_set() {
        assert_eq!(
            admin_status_param(Some("status=dead-lettered")).unwrap(),
            Some("dead-lettered")
        );
        assert!(admin_status_param(Some("status=weird")).is_err());
    }

    #[test]
    fn json_requires_media_type() {
        let mut h = HeaderMap::new();
        assert!(parse_json::<serde_json::Value>(&h, b"{}").is_err());
        h.insert(
            header::CONTENT_TYPE,
            "application/json; charset=utf-8".parse().unwrap(),
        );
        assert!(parse_json::<serde_json::Value>(&h, b"{}").is_ok());
        assert!(parse_json::<serde_json::Value>(&h, b"{").is_err());
    }
}
