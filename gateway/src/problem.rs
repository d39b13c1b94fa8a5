//! The fixed problem-type catalogue of the federation contract (SPEC §4).
//!
//! Every error that crosses a boundary — HTTP response, CLI output, conformance
//! assertion — is one of these. The catalogue is data: slug, HTTP status and
//! title live in one table so the API, the CLI and the docs cannot drift apart.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::fmt;

/// Prefix of every problem `type` URI.
pub const PROBLEM_URI_PREFIX: &str = "urn:bashu:problem:";

/// Media type of every error body (RFC 9457).
pub const PROBLEM_CONTENT_TYPE: &str = "application/problem+json";

/// One entry per problem type of SPEC §4. Adding a type means adding a row to
/// [`CATALOGUE`] as well; the `catalogue_is_complete` test enforces it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProblemType {
    Unauthenticated,
    ForbiddenRole,
    MalformedRequest,
    PayloadTooLarge,
    UnsupportedAlgorithm,
    InvalidSignature,
    UnknownKey,
    RevokedKey,
    IssuerMismatch,
    CredentialExpired,
    CredentialNotYetValid,
    SchemaViolation,
    UnmappableRecord,
    MappingVersionUnknown,
    ChainBroken,
    UnknownDestination,
    DuplicateConflict,
    RateLimited,
    Unavailable,
    /// Not in the SPEC §4 list: used for routes that do not exist, so that
    /// even a 404 is problem+json. Integrators should treat it like any
    /// other 4xx.
    NotFound,
}

/// Catalogue row: the wire slug, HTTP status and human title of a type.
#[derive(Debug, Clone, Copy)]
pub struct ProblemInfo {
    pub kind: ProblemType,
    pub slug: &'static str,
    pub status: u16,
    pub title: &'static str,
}

/// The whole catalogue, in SPEC order.
pub const CATALOGUE: &[ProblemInfo] = &[
    row(
        ProblemType::Unauthenticated,
        "unauthenticated",
        401,
        "Client certificate missing or not trusted",
    ),
    row(
        ProblemType::ForbiddenRole,
        "forbidden-role",
        403,
        "Client identity may not use this endpoint",
    ),
    row(
        ProblemType::MalformedRequest,
        "malformed-request",
        400,
        "Request is not well-formed",
    ),
    row(
        ProblemType::PayloadTooLarge,
        "payload-too-large",
        413,
        "Request body exceeds the limit",
    ),
    row(
        ProblemType::UnsupportedAlgorithm,
        "unsupported-algorithm",
        422,
        "JWS algorithm or header not allowed",
    ),
    row(
        ProblemType::InvalidSignature,
        "invalid-signature",
        422,
        "Signature does not verify",
    ),
    row(
        ProblemType::UnknownKey,
        "unknown-key",
        422,
        "Signing key is not in the issuer's trust key set",
    ),
    row(
        ProblemType::RevokedKey,
        "revoked-key",
        422,
        "Signing key has been revoked or retired",
    ),
    row(
        ProblemType::IssuerMismatch,
        "issuer-mismatch",
        422,
        "Issuer does not match the signing key's member or role",
    ),
    row(
        ProblemType::CredentialExpired,
        "credential-expired",
        422,
        "Credential is past its validUntil",
    ),
    row(
        ProblemType::CredentialNotYetValid,
        "credential-not-yet-valid",
        422,
        "Credential is before its validFrom",
    ),
    row(
        ProblemType::SchemaViolation,
        "schema-violation",
        422,
        "Credential or record violates the profile",
    ),
    row(
        ProblemType::UnmappableRecord,
        "unmappable-record",
        422,
        "Record cannot be mapped to the target framework",
    ),
    row(
        ProblemType::MappingVersionUnknown,
        "mapping-version-unknown",
        422,
        "Framework or mapping table version is not known",
    ),
    row(
        ProblemType::ChainBroken,
        "chain-broken",
        422,
        "Credential chain does not verify link by link",
    ),
    row(
        ProblemType::UnknownDestination,
        "unknown-destination",
        422,
        "Destination member is not configured",
    ),
    row(
        ProblemType::DuplicateConflict,
        "duplicate-conflict",
        409,
        "Same credential id submitted with different bytes",
    ),
    row(ProblemType::RateLimited, "rate-limited", 429, "Too many requests"),
    row(
        ProblemType::Unavailable,
        "unavailable",
        503,
        "Service temporarily unavailable",
    ),
    row(ProblemType::NotFound, "not-found", 404, "No such resource"),
];

const fn row(kind: ProblemType, slug: &'static str, status: u16, title: &'static str) -> ProblemInfo {
    ProblemInfo {
        kind,
        slug,
        status,
        title,
    }
}

impl ProblemType {
    /// Catalogue row of this type.
    pub fn info(self) -> &'static ProblemInfo {
        // The catalogue is indexed by declaration order; the test below keeps
        // the two in step, so a miss is impossible in a built binary.
        &CATALOGUE[self as usize]
    }

    pub fn slug(self) -> &'static str {
        self.info().slug
    }

    pub fn status(self) -> u16 {
        self.info().status
    }

    pub fn title(self) -> &'static str {
        self.info().title
    }

    /// Full `type` URI, e.g. `urn:bashu:problem:invalid-signature`.
    pub fn uri(self) -> String {
        format!("{PROBLEM_URI_PREFIX}{}", self.slug())
    }

    /// Parses a slug or a full `urn:bashu:problem:` URI.
    pub fn from_slug(s: &str) -> Option<Self> {
        let slug = s.strip_prefix(PROBLEM_URI_PREFIX).unwrap_or(s);
        CATALOGUE.iter().find(|p| p.slug == slug).map(|p| p.kind)
    }
}

impl fmt::Display for ProblemType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.slug())
    }
}

/// An RFC 9457 problem: a catalogue type plus a detail safe to show the
/// caller. `detail` must never contain secrets or whole payloads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub kind: ProblemType,
    pub detail: String,
    pub exchange_id: Option<String>,
}

impl Problem {
    pub fn new(kind: ProblemType, detail: impl Into<String>) -> Self {
        Self {
            kind,
            detail: detail.into(),
            exchange_id: None,
        }
    }

    pub fn with_exchange(mut self, exchange_id: impl Into<String>) -> Self {
        self.exchange_id = Some(exchange_id.into());
        self
    }

    pub fn status(&self) -> u16 {
        self.kind.status()
    }

    /// The problem+json body.
    pub fn to_json(&self) -> Value {
        let mut body = json!({
            "type": self.kind.uri(),
            "title": self.kind.title(),
            "status": self.kind.status(),
            "detail": self.detail,
        });
        if let (Some(id), Some(obj)) = (&self.exchange_id, body.as_object_mut()) {
            obj.insert("exchangeId".into(), Value::String(id.clone()));
        }
        body
    }

    /// Parses a problem+json body received from a peer (delivery worker,
    /// conformance suite). Unknown types are reported as `None`.
    pub fn from_json(body: &Value) -> Option<Self> {
        let kind = ProblemType::from_slug(body.get("type")?.as_str()?)?;
        let detail = body
            .get("detail")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let exchange_id = body.get("exchangeId").and_then(Value::as_str).map(str::to_owned);
        Some(Self {
            kind,
            detail,
            exchange_id,
        })
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind.slug(), self.detail)
    }
}

impl std::error::Error for Problem {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalogue_is_indexed_by_declaration_order() {
        for (i, row) in CATALOGUE.iter().enumerate() {
            assert_eq!(row.kind as usize, i, "row {} out of order", row.slug);
        }
        assert_eq!(CATALOGUE.len(), ProblemType::NotFound as usize + 1);
    }

    #[test]
    fn slugs_round_trip_and_are_unique() {
        for row in CATALOGUE {
            assert_eq!(ProblemType::from_slug(row.slug), Some(row.kind));
            assert_eq!(ProblemType::from_slug(&row.kind.uri()), Some(row.kind));
            assert_eq!(CATALOGUE.iter().filter(|r| r.slug == row.slug).count(), 1);
            let serde_slug = serde_json::to_value(row.kind).ok();
            assert_eq!(serde_slug, Some(Value::String(row.slug.into())));
        }
    }

    #[test]
    fn problem_json_has_required_members() {
        let p = Problem::new(ProblemType::InvalidSignature, "bad").with_exchange("ex-1");
        let v = p.to_json();
        assert_eq!(v["type"], "urn:bashu:problem:invalid-signature");
        assert_eq!(v["status"], 422);
        assert_eq!(v["exchangeId"], "ex-1");
        assert_eq!(Problem::from_json(&v), Some(p));
    }
}
