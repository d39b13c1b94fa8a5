//! Response construction: JSON, JWS and RFC 9457 problems.

use crate::problem::{Lang, Problem, PROBLEM_CONTENT_TYPE};
use bytes::Bytes;
use http::{header, HeaderValue, Method, Response, StatusCode};
use http_body_util::Full;
use serde_json::Value;
use std::time::Duration;

pub type Body = Full<Bytes>;

/// Media type of `GET /v1/federation/keys` (a compact JWS, RFC 7519 §10.3.1).
pub const JWT_CONTENT_TYPE: &str = "application/jwt";

fn build(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<Body> {
    let mut resp = Response::new(Full::new(body));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

pub fn json(status: StatusCode, value: &Value) -> Response<Body> {
    build(status, "application/json", Bytes::from(value.to_string()))
}

pub fn jwt(token: String) -> Response<Body> {
    build(StatusCode::OK, JWT_CONTENT_TYPE, Bytes::from(token))
}

pub fn text(status: StatusCode, content_type: &'static str, body: String) -> Response<Body> {
    build(status, content_type, Bytes::from(body))
}

/// A problem+json response with the catalogue status of its type, in English.
pub fn problem(p: &Problem) -> Response<Body> {
    problem_in(p, Lang::En)
}

/// A problem+json response whose `title` (and fixed `detail`) are in
/// `lang`, with `Content-Language` saying so.
pub fn problem_in(p: &Problem, lang: Lang) -> Response<Body> {
    let status = StatusCode::from_u16(p.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    problem_body(status, p.to_json_in(lang), lang)
}

/// The `type` of a problem response, kept as a response extension so the
/// request log line can name it without parsing the body.
#[derive(Debug, Clone)]
pub struct LoggedProblemType(pub String);

fn problem_body(status: StatusCode, body: Value, lang: Lang) -> Response<Body> {
    let problem_type = body.get("type").and_then(Value::as_str).map(str::to_owned);
    let mut resp = build(status, PROBLEM_CONTENT_TYPE, Bytes::from(body.to_string()));
    if let Some(t) = problem_type {
        resp.extensions_mut().insert(LoggedProblemType(t));
    }
    resp.headers_mut()
        .insert(header::CONTENT_LANGUAGE, HeaderValue::from_static(lang.tag()));
    resp
}

/// 429 with `Retry-After` in whole seconds, rounded up (never 0), in `lang`.
pub fn rate_limited_in(p: &Problem, retry_after: Duration, lang: Lang) -> Response<Body> {
    let mut resp = problem_in(p, lang);
    let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
    resp
}

/// 405 Method Not Allowed with an `Allow` header. The body is a
/// `malformed-request` problem whose `status` member says 405, as RFC 9457
/// requires the member to match the response status.
pub fn method_not_allowed(p: &Problem, allowed: &[Method]) -> Response<Body> {
    method_not_allowed_in(p, allowed, Lang::En)
}

/// [`method_not_allowed`] in `lang`.
pub fn method_not_allowed_in(p: &Problem, allowed: &[Method], lang: Lang) -> Response<Body> {
    let mut body = p.to_json_in(lang);
    if let Some(obj) = body.as_object_mut() {
        obj.insert("status".into(), Value::from(405));
    }
    let mut resp = problem_body(StatusCode::METHOD_NOT_ALLOWED, body, lang);
    let allow = allowed.iter().map(Method::as_str).collect::<Vec<_>>().join(", ");
    if let Ok(v) = HeaderValue::from_str(&allow) {
        resp.headers_mut().insert(header::ALLOW, v);
    }
    resp
}
