//! The one error type of the JOSE layer and its mapping to SPEC §4.

use super::b64::B64Error;
use super::json_strict::JsonError;
use crate::problem::ProblemType;
use std::fmt;
use std::path::PathBuf;

/// Which of the three compact-JWS segments an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Segment {
    Header,
    Payload,
    Signature,
}

impl fmt::Display for Segment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Segment::Header => "protected header",
            Segment::Payload => "payload",
            Segment::Signature => "signature",
        })
    }
}

/// Why a JWS or a key was refused. Messages never contain key material or
/// whole payloads: at most a header parameter name or a truncated value.
#[derive(Debug, thiserror::Error)]
pub enum JoseError {
    #[error("JWS is {len} bytes, over the {limit}-byte limit")]
    TooLarge { len: usize, limit: usize },
    #[error("not a compact JWS: {0}")]
    Malformed(&'static str),
    #[error("{segment} is not canonical base64url: {source}")]
    Base64 { segment: Segment, source: B64Error },
    #[error("{segment} is not acceptable JSON: {source}")]
    Json { segment: Segment, source: JsonError },
    #[error("algorithm {0} is not allowed (only ES256 and EdDSA)")]
    UnsupportedAlgorithm(String),
    #[error("header parameter {0} is not allowed")]
    ForbiddenHeader(String),
    #[error("protected header has no usable kid")]
    MissingKid,
    #[error("typ is {}, expected {expected}", .found.as_deref().unwrap_or("missing"))]
    WrongType {
        expected: &'static str,
        /// The value as sent (a string's text, other JSON as JSON), clipped.
        found: Option<String>,
    },
    #[error("cty {found} is not allowed here")]
    WrongContentType { found: String },
    #[error("header alg {header} does not match the key's alg {key}")]
    AlgMismatch { header: &'static str, key: &'static str },
    #[error("signature does not verify")]
    BadSignature,
    #[error("invalid key: {0}")]
    InvalidKey(String),
    #[error("key generation failed: {0}")]
    KeyGeneration(String),
    #[error("signing failed: {0}")]
    Signing(String),
    #[error("key file {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

/// `s` as plain text for an error message (these reach problem `detail`s
/// and logs): at most `max` characters, control characters replaced by
/// U+FFFD so a value cannot forge log lines. Never Rust `Debug` quoting.
pub(crate) fn plain(s: &str, max: usize) -> String {
    s.chars()
        .take(max)
        .map(|c| if c.is_control() { '\u{fffd}' } else { c })
        .collect()
}

impl JoseError {
    /// The SPEC §4 problem type a caller should see for this error.
    ///
    /// Encoding-level defects (bad segment count, non-canonical base64url,
    /// duplicate members, excessive depth, invalid JSON) are all
    /// `malformed-request`: the token is not a well-formed compact JWS, so we
    /// never get as far as asking whether the signature is right.
    pub fn problem_type(&self) -> ProblemType {
        match self {
            JoseError::TooLarge { .. } => ProblemType::PayloadTooLarge,
            JoseError::Malformed(_) | JoseError::Base64 { .. } | JoseError::Json { .. } => {
                ProblemType::MalformedRequest
            }
            JoseError::UnsupportedAlgorithm(_) | JoseError::ForbiddenHeader(_) => {
                ProblemType::UnsupportedAlgorithm
            }
            JoseError::MissingKid => ProblemType::UnknownKey,
            JoseError::WrongType { .. } | JoseError::WrongContentType { .. } => ProblemType::SchemaViolation,
            JoseError::AlgMismatch { .. } | JoseError::BadSignature => ProblemType::InvalidSignature,
            JoseError::InvalidKey(_) => ProblemType::UnknownKey,
            JoseError::KeyGeneration(_) | JoseError::Signing(_) | JoseError::Io { .. } => {
                ProblemType::Unavailable
            }
        }
    }
}
