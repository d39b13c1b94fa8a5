//! Token crafting: the suite assembles every compact JWS itself, segment by
//! segment, so it can produce exactly the malformed inputs SPEC §3 tells a
//! gateway to reject (unsupported algorithms, forbidden headers, padded or
//! non-canonical base64url, duplicate members, oversize and deep payloads).
//! Nothing here uses the gateway's own JOSE code: a shared bug would hide.

use base64::engine::general_purpose::{STANDARD, URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine as _;
use josekit::jwk::Jwk;
use josekit::jws::{EdDSA, JwsSigner, ES256, HS256, RS256};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum CraftError {
    #[error("cannot read key {path}: {message}")]
    Load { path: String, message: String },
    #[error("unsupported signing key (need P-256 EC or Ed25519 OKP with a kid): {0}")]
    KeyType(String),
    #[error("signing failed: {0}")]
    Jose(#[from] josekit::JoseError),
}

/// The two algorithms SPEC §3 allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyAlg {
    Es256,
    EdDsa,
}

impl KeyAlg {
    pub fn name(self) -> &'static str {
        match self {
            KeyAlg::Es256 => "ES256",
            KeyAlg::EdDsa => "EdDSA",
        }
    }
}

/// A private signing key with its `kid`, loaded from or generated as a JWK.
#[derive(Clone)]
pub struct SigningKey {
    kid: String,
    alg: KeyAlg,
    private: Jwk,
}

/// Names the key, never prints it.
impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// Accepts a private P-256 (`kty: EC`) or Ed25519 (`kty: OKP`) JWK with a `kid`.
    pub fn from_jwk(private: Jwk) -> Result<Self, CraftError> {
        let alg = match (private.key_type(), private.curve()) {
            ("EC", Some("P-256")) => KeyAlg::Es256,
            ("OKP", Some("Ed25519")) => KeyAlg::EdDsa,
            (kty, crv) => return Err(CraftError::KeyType(format!("kty {kty}, crv {crv:?}"))),
        };
        if private.parameter("d").is_none() {
            return Err(CraftError::KeyType("JWK has no private part `d`".into()));
        }
        let kid = private
            .key_id()
            .ok_or_else(|| CraftError::KeyType("JWK has no kid".into()))?
            .to_owned();
        Ok(Self { kid, alg, private })
    }

    /// Loads a private JWK file, or — for a peer gateway's key — a Bashu
    /// key store (`keys.json` of `bashu dev init`), taking its active
    /// gateway key.
    pub fn load(path: &Path) -> Result<Self, CraftError> {
        let load_err = |message: String| CraftError::Load {
            path: path.display().to_string(),
            message,
        };
        let bytes = std::fs::read(path).map_err(|e| load_err(e.to_string()))?;
        let json: Value = serde_json::from_slice(&bytes).map_err(|e| load_err(e.to_string()))?;
        let jwk = match json.get("keys").and_then(Value::as_array) {
            Some(keys) => keys
                .iter()
                .find(|k| k["role"] == "gateway" && k["status"] == "active")
                .and_then(|k| k.get("jwk"))
                .ok_or_else(|| load_err("key store has no active gateway key".into()))?
                .clone(),
            None => json,
        };
        let map = match jwk {
            Value::Object(map) => map,
            _ => return Err(load_err("not a JWK object".into())),
        };
        Self::from_jwk(Jwk::from_map(map).map_err(|e| load_err(e.to_string()))?)
    }

    /// A fresh key nobody has published: what an attacker would sign with.
    pub fn generate(alg: KeyAlg, kid: &str) -> Result<Self, CraftError> {
        let mut jwk = match alg {
            KeyAlg::Es256 => ES256.generate_key_pair()?.to_jwk_key_pair(),
            KeyAlg::EdDsa => EdDSA.generate_key_pair(josekit::jwk::Ed25519)?.to_jwk_key_pair(),
        };
        jwk.set_key_id(kid);
        Self::from_jwk(jwk)
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub fn alg(&self) -> KeyAlg {
        self.alg
    }

    /// The public JWK (no `d`), with `kid`.
    pub fn public_jwk(&self) -> Result<Jwk, CraftError> {
        Ok(self.private.to_public_key()?)
    }

    /// The same private key presented under another `kid`.
    pub fn with_kid(&self, kid: &str) -> Self {
        let mut private = self.private.clone();
        private.set_key_id(kid);
        Self {
            kid: kid.to_owned(),
            alg: self.alg,
            private,
        }
    }

    fn signer(&self) -> Result<Box<dyn JwsSigner>, CraftError> {
        Ok(match self.alg {
            KeyAlg::Es256 => Box::new(ES256.signer_from_jwk(&self.private)?),
            KeyAlg::EdDsa => Box::new(EdDSA.signer_from_jwk(&self.private)?),
        })
    }

    /// The profile's protected header for this key: `alg`, `typ`, `cty`, `kid`.
    pub fn vc_header(&self) -> Value {
        json!({"alg": self.alg.name(), "typ": "vc+jwt", "cty": "vc", "kid": self.kid})
    }
}

/// How header and payload segments are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// RFC 7515: base64url without padding.
    Canonical,
    /// base64url with `=` padding.
    Padded,
    /// The standard alphabet (`+` and `/`) with padding.
    StandardAlphabet,
}

/// base64url (or a deliberately wrong variant) of `bytes`.
pub fn encode(bytes: &[u8], encoding: Encoding) -> String {
    match encoding {
        Encoding::Canonical => URL_SAFE_NO_PAD.encode(bytes),
        Encoding::Padded => URL_SAFE.encode(bytes),
        Encoding::StandardAlphabet => STANDARD.encode(bytes),
    }
}

/// Canonical base64url; decoding helper for tests that read responses.
pub fn b64url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Strict base64url decoding (no padding, no `+/`).
pub fn b64url_decode(s: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(s).ok()
}

/// How the signature segment is produced.
#[derive(Debug, Clone)]
pub enum Signature<'a> {
    /// A real signature with the key.
    Key(&'a SigningKey),
    /// An empty signature segment (`alg: none`).
    Empty,
    /// HMAC-SHA256 with this secret.
    Hmac(&'a [u8]),
    /// RSASSA-PKCS1-v1_5 with a freshly generated 2048-bit key.
    Rsa,
}

/// Signs raw header and payload bytes (which need not be valid JSON, or
/// may contain duplicate members) and returns the compact JWS. The
/// signature covers the segments exactly as encoded, so only the defect
/// under test is wrong.
pub fn sign_raw(
    header: &[u8],
    payload: &[u8],
    encoding: Encoding,
    signature: Signature<'_>,
) -> Result<String, CraftError> {
    sign_segments(&encode(header, encoding), &encode(payload, encoding), signature)
}

/// Signs already encoded segments.
pub fn sign_segments(
    header_b64: &str,
    payload_b64: &str,
    signature: Signature<'_>,
) -> Result<String, CraftError> {
    let input = format!("{header_b64}.{payload_b64}");
    let sig = match signature {
        Signature::Key(key) => key.signer()?.sign(input.as_bytes())?,
        Signature::Empty => Vec::new(),
        Signature::Hmac(secret) => HS256.signer_from_bytes(secret)?.sign(input.as_bytes())?,
        Signature::Rsa => {
            let pair = RS256.generate_key_pair(2048)?;
            RS256
                .signer_from_der(pair.to_der_private_key())?
                .sign(input.as_bytes())?
        }
    };
    Ok(format!("{input}.{}", b64url(&sig)))
}

/// The common case: JSON header and payload, canonical encoding, real signature.
pub fn sign_json(header: &Value, payload: &Value, key: &SigningKey) -> Result<String, CraftError> {
    sign_raw(
        header.to_string().as_bytes(),
        payload.to_string().as_bytes(),
        Encoding::Canonical,
        Signature::Key(key),
    )
}

/// A credential signed the way the profile wants it.
pub fn sign_credential(payload: &Value, key: &SigningKey) -> Result<String, CraftError> {
    sign_json(&key.vc_header(), payload, key)
}

/// Flips one bit of the signature; header and payload stay intact.
pub fn corrupt_signature(jws: &str) -> Option<String> {
    let (input, sig) = jws.rsplit_once('.')?;
    let mut bytes = b64url_decode(sig)?;
    let first = bytes.first_mut()?;
    *first ^= 0x01;
    Some(format!("{input}.{}", b64url(&bytes)))
}

/// Re-encodes the signature segment with non-zero unused trailing bits: a
/// lenient decoder yields the same bytes, a strict one refuses. Returns
/// `None` if the segment has no unused bits (length a multiple of 3 bytes).
pub fn non_canonical_signature(jws: &str) -> Option<String> {
    let (input, sig) = jws.rsplit_once('.')?;
    let bytes = b64url_decode(sig)?;
    let tweaked = set_trailing_bits(&b64url(&bytes))?;
    Some(format!("{input}.{tweaked}"))
}

/// Sets the lowest unused bit of the last character of a base64url string.
pub fn set_trailing_bits(segment: &str) -> Option<String> {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    if segment.len() % 4 == 0 {
        return None;
    }
    let last = *segment.as_bytes().last()?;
    let index = ALPHABET.iter().position(|&c| c == last)?;
    let tweaked = *ALPHABET.get(index | 1)?;
    if tweaked == last {
        return None;
    }
    let mut out = segment[..segment.len() - 1].to_owned();
    out.push(char::from(tweaked));
    Some(out)
}

/// Lowercase hex SHA-256 of the exact bytes.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// The encodings of a SHA-256 digest a translation's `evidence` may use
/// (hex, base64url, base64, SRI `sha256-…`): the contract names the digest,
/// not its spelling.
pub fn sha256_spellings(bytes: &[u8]) -> Vec<String> {
    let digest = Sha256::digest(bytes);
    let b64 = STANDARD.encode(digest);
    vec![
        sha256_hex(bytes),
        URL_SAFE_NO_PAD.encode(digest),
        b64.clone(),
        format!("sha256-{b64}"),
    ]
}

/// JSON nested `depth` levels deep: `{"n":{"n":…}}`.
pub fn nested_object(depth: usize) -> Value {
    let mut value = json!(true);
    for _ in 0..depth {
        value = json!({ "n": value });
    }
    value
}

/// Splits a compact JWS and decodes its header and payload as JSON.
pub fn decode_compact(jws: &str) -> Option<(Value, Value)> {
    let mut parts = jws.split('.');
    let header = b64url_decode(parts.next()?)?;
    let payload = b64url_decode(parts.next()?)?;
    parts.next()?;
    if parts.next().is_some() {
        return None;
    }
    Some((
        serde_json::from_slice(&header).ok()?,
        serde_json::from_slice(&payload).ok()?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use josekit::jws::JwsVerifier;

    #[test]
    fn signed_credential_verifies_with_josekit() {
        for alg in [KeyAlg::Es256, KeyAlg::EdDsa] {
            let key = SigningKey::generate(alg, "k1").unwrap();
            let jws = sign_credential(&json!({"id": "x"}), &key).unwrap();
            let (input, sig) = jws.rsplit_once('.').unwrap();
            let public = key.public_jwk().unwrap();
            let sig = b64url_decode(sig).unwrap();
            let verifier: Box<dyn JwsVerifier> = match alg {
                KeyAlg::Es256 => Box::new(ES256.verifier_from_jwk(&public).unwrap()),
                KeyAlg::EdDsa => Box::new(EdDSA.verifier_from_jwk(&public).unwrap()),
            };
            verifier.verify(input.as_bytes(), &sig).unwrap();
            assert!(decode_compact(&jws).is_some());
        }
    }

    #[test]
    fn loads_a_jwk_file_or_the_active_gateway_key_of_a_key_store() {
        let dir = tempfile::tempdir().unwrap();
        let mut jwk = ES256.generate_key_pair().unwrap().to_jwk_key_pair();
        jwk.set_key_id("gw-1");
        let jwk_json: Value = serde_json::from_str(&jwk.to_string()).unwrap();
        std::fs::write(dir.path().join("k.jwk"), jwk.to_string()).unwrap();
        assert_eq!(SigningKey::load(&dir.path().join("k.jwk")).unwrap().kid(), "gw-1");
        let store = json!({"version": 1, "member": "sc", "seq": 3, "keys": [
            {"kid": "cb-1", "role": "issuer", "status": "active", "jwk": {"kty": "EC"}},
            {"kid": "gw-1", "role": "gateway", "status": "active", "jwk": jwk_json},
        ]});
        std::fs::write(dir.path().join("keys.json"), store.to_string()).unwrap();
        let key = SigningKey::load(&dir.path().join("keys.json")).unwrap();
        assert_eq!((key.kid(), key.alg()), ("gw-1", KeyAlg::Es256));
    }

    #[test]
    fn defects_are_what_they_claim() {
        let key = SigningKey::generate(KeyAlg::Es256, "k1").unwrap();
        let jws = sign_credential(&json!({"a": 1}), &key).unwrap();
        let bad = corrupt_signature(&jws).unwrap();
        assert_ne!(bad, jws);
        assert_eq!(bad.rsplit_once('.').unwrap().0, jws.rsplit_once('.').unwrap().0);

        let nc = non_canonical_signature(&jws).unwrap();
        assert_ne!(nc, jws);
        let lenient = base64::engine::GeneralPurpose::new(
            &base64::alphabet::URL_SAFE,
            base64::engine::GeneralPurposeConfig::new()
                .with_decode_allow_trailing_bits(true)
                .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
        );
        assert_eq!(
            lenient.decode(nc.rsplit_once('.').unwrap().1).unwrap(),
            lenient.decode(jws.rsplit_once('.').unwrap().1).unwrap()
        );
        assert!(b64url_decode(nc.rsplit_once('.').unwrap().1).is_none());

        let padded = sign_raw(b"{\"a\":1}", b"{}", Encoding::Padded, Signature::Empty).unwrap();
        assert!(padded.starts_with("eyJhIjoxfQ==."));
        assert_eq!(nested_object(3).to_string(), r#"{"n":{"n":{"n":true}}}"#);
    }
}
