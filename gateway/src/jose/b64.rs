//! Canonical base64url (RFC 7515 §2): URL-safe alphabet, no padding, and no
//! non-zero trailing bits, so every byte string has exactly one encoding.
//! A JWS whose segments could be re-encoded differently would let two
//! different strings carry "the same" signature, which breaks digests over
//! exact JWS bytes.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

/// Why a segment is not canonical base64url.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum B64Error {
    #[error("character U+{:04X} outside the base64url alphabet (padding and '+/' are not allowed)", u32::from(*.0))]
    Alphabet(char),
    #[error("length {0} cannot be unpadded base64url")]
    Length(usize),
    #[error("non-zero trailing bits")]
    TrailingBits,
}

/// Encodes without padding.
pub fn encode(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Decodes `s`, accepting only its canonical encoding.
pub fn decode(s: &str) -> Result<Vec<u8>, B64Error> {
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
    {
        return Err(B64Error::Alphabet(c));
    }
    if s.len() % 4 == 1 {
        return Err(B64Error::Length(s.len()));
    }
    let bytes = URL_SAFE_NO_PAD.decode(s).map_err(|_| B64Error::TrailingBits)?;
    // The engine already refuses trailing bits; re-encoding makes the
    // canonical-form guarantee independent of engine configuration.
    if encode(&bytes) != s {
        return Err(B64Error::TrailingBits);
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for n in 0..40u8 {
            let data: Vec<u8> = (0..n).collect();
            assert_eq!(decode(&encode(&data)).as_deref(), Ok(&data[..]));
        }
    }

    #[test]
    fn rejects_non_canonical_forms() {
        assert_eq!(decode("QQ=="), Err(B64Error::Alphabet('=')));
        assert_eq!(decode("a+b/"), Err(B64Error::Alphabet('+')));
        assert_eq!(decode("QR"), Err(B64Error::TrailingBits)); // "QQ" is canonical for "A"
        assert_eq!(decode("QUJ"), Err(B64Error::TrailingBits)); // "QUI" is canonical for "AB"
        assert_eq!(decode("QUJDR"), Err(B64Error::Length(5)));
        assert_eq!(decode("QQ"), Ok(b"A".to_vec()));
    }
}
