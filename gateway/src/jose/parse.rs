//! Compact-JWS parsing: everything that can be checked before any key is
//! looked up or any signature math runs.

use super::error::{JoseError, Segment};
use super::header::{Header, HeaderPolicy};
use super::keys::VerifyingKey;
use super::{b64, json_strict};

/// Largest accepted compact JWS, in bytes (SPEC §3).
pub const MAX_JWS_BYTES: usize = 256 * 1024;

/// A compact JWS whose encoding and header passed the policy. The signature
/// has NOT been checked yet; only [`ParsedJws::verify_signature`] does that.
pub struct ParsedJws<'a> {
    header: Header,
    signing_input: &'a str,
    payload: Vec<u8>,
    signature: Vec<u8>,
}

/// Parses `jws` under `policy`, in this order: size, shape (three
/// segments), header (base64url, strict JSON, policy), a non-empty
/// signature, payload and signature (base64url). The payload is returned as bytes; callers that
/// expect JSON parse it with [`json_strict`].
pub fn parse_compact(jws: &str, policy: HeaderPolicy) -> Result<ParsedJws<'_>, JoseError> {
    if jws.len() > MAX_JWS_BYTES {
        return Err(JoseError::TooLarge {
            len: jws.len(),
            limit: MAX_JWS_BYTES,
        });
    }
    let mut parts = jws.split('.');
    let (Some(h), Some(p), Some(s), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(JoseError::Malformed(
            "expected exactly three dot-separated segments",
        ));
    };
    let header_bytes = b64::decode(h).map_err(|source| JoseError::Base64 {
        segment: Segment::Header,
        source,
    })?;
    let header_map = json_strict::parse_object(&header_bytes).map_err(|source| JoseError::Json {
        segment: Segment::Header,
        source,
    })?;
    let header = Header::check(&header_map, policy)?;
    // After the header check, so that an unsigned `alg: none` token is
    // reported as the algorithm problem it is.
    if s.is_empty() {
        return Err(JoseError::Malformed("empty signature segment"));
    }
    let payload = b64::decode(p).map_err(|source| JoseError::Base64 {
        segment: Segment::Payload,
        source,
    })?;
    let signature = b64::decode(s).map_err(|source| JoseError::Base64 {
        segment: Segment::Signature,
        source,
    })?;
    let signing_input = &jws[..h.len() + 1 + p.len()];
    Ok(ParsedJws {
        header,
        signing_input,
        payload,
        signature,
    })
}

impl std::fmt::Debug for ParsedJws<'_> {
    /// Header and sizes only: payloads are not for logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParsedJws")
            .field("header", &self.header)
            .field("payload_len", &self.payload.len())
            .field("signature_len", &self.signature.len())
            .finish()
    }
}

impl ParsedJws<'_> {
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Decoded payload bytes (unverified until `verify_signature` succeeds).
    pub fn payload(&self) -> &[u8] {
        &self.payload
    }

    /// Checks the signature with `key`, whose algorithm must be the one the
    /// header names (no algorithm substitution).
    pub fn verify_signature(&self, key: &VerifyingKey) -> Result<(), JoseError> {
        if key.alg() != self.header.alg() {
            return Err(JoseError::AlgMismatch {
                header: self.header.alg().as_str(),
                key: key.alg().as_str(),
            });
        }
        key.verify_raw(self.signing_input.as_bytes(), &self.signature)
    }
}
