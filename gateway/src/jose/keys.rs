//! Signing and verifying keys (JWK) for the two allowed algorithms.
//!
//! Keys are validated once, when they are loaded (josekit parses and
//! checks the JWK), and hold a ready-made aws-lc-rs signer/verifier so the
//! hot path does no key parsing. Cloning is
//! cheap (`Arc`). `Debug` never prints key material.

use super::error::JoseError;
use super::{atomic_file, b64, json_strict};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{EcdsaKeyPair, Ed25519KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use aws_lc_rs::signature::{UnparsedPublicKey, VerificationAlgorithm, ECDSA_P256_SHA256_FIXED, ED25519};
use josekit::jwk::alg::ec::{EcCurve, EcKeyPair};
use josekit::jwk::alg::ed::{EdCurve, EdKeyPair};
use josekit::jwk::{Jwk, KeyPair};
use josekit::jws::{EdDSA, ES256};
use serde_json::{Map, Value};
use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

/// The only two signature algorithms of the federation (SPEC §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Alg {
    /// ECDSA over P-256 with SHA-256.
    Es256,
    /// Ed25519 (RFC 8037). Ed448 is not accepted.
    EdDsa,
}

impl Alg {
    /// The JOSE `alg` name.
    pub fn as_str(self) -> &'static str {
        match self {
            Alg::Es256 => "ES256",
            Alg::EdDsa => "EdDSA",
        }
    }

    /// Parses a JOSE `alg` name; everything but the two allowed names fails.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "ES256" => Some(Alg::Es256),
            "EdDSA" => Some(Alg::EdDsa),
            _ => None,
        }
    }

    /// Raw signature length in bytes (both are 64).
    pub fn signature_len(self) -> usize {
        64
    }

    fn kty_crv(self) -> (&'static str, &'static str) {
        match self {
            Alg::Es256 => ("EC", "P-256"),
            Alg::EdDsa => ("OKP", "Ed25519"),
        }
    }

    fn from_kty_crv(map: &Map<String, Value>) -> Result<Self, JoseError> {
        let kty = map.get("kty").and_then(Value::as_str);
        let crv = map.get("crv").and_then(Value::as_str);
        match (kty, crv) {
            (Some("EC"), Some("P-256")) => Ok(Alg::Es256),
            (Some("OKP"), Some("Ed25519")) => Ok(Alg::EdDsa),
            _ => Err(JoseError::InvalidKey(
                "only EC P-256 (ES256) and OKP Ed25519 (EdDSA) keys are supported".into(),
            )),
        }
    }
}

impl fmt::Display for Alg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Alg {
    type Err = JoseError;

    fn from_str(s: &str) -> Result<Self, JoseError> {
        // CLI spelling is forgiving; the wire spelling (`from_name`) is not.
        match s.to_ascii_lowercase().as_str() {
            "es256" => Ok(Alg::Es256),
            "eddsa" | "ed25519" => Ok(Alg::EdDsa),
            _ => Err(JoseError::UnsupportedAlgorithm(s.chars().take(32).collect())),
        }
    }
}

/// Whether `kid` is an acceptable key id: 1–128 chars of `[A-Za-z0-9._:-]`.
/// Key ids travel in headers, logs and file names, so they are kept boring.
pub fn is_valid_kid(kid: &str) -> bool {
    (1..=128).contains(&kid.len())
        && kid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// Signing runs on aws-lc-rs, like verification: several times cheaper
/// per call than josekit's OpenSSL path, and every exchange signs a
/// translation at both gateways. ES256 signatures come out as the fixed
/// 64-byte `r || s` that JWS wants.
enum Signer {
    Es256(EcdsaKeyPair),
    EdDsa(Ed25519KeyPair),
}

impl Signer {
    /// Builds the signer from a private JWK's (validated) coordinates.
    fn from_jwk(alg: Alg, jwk: &Map<String, Value>) -> Result<Self, JoseError> {
        let coord = |name: &str| -> Result<Vec<u8>, JoseError> {
            jwk.get(name)
                .and_then(Value::as_str)
                .and_then(|v| b64::decode(v).ok())
                .ok_or_else(|| JoseError::InvalidKey(format!("private JWK has no usable {name}")))
        };
        let rejected = |e: aws_lc_rs::error::KeyRejected| JoseError::InvalidKey(e.to_string());
        let d = coord("d")?;
        match alg {
            Alg::Es256 => {
                let mut public = vec![0x04];
                public.extend(coord("x")?);
                public.extend(coord("y")?);
                EcdsaKeyPair::from_private_key_and_public_key(&ECDSA_P256_SHA256_FIXED_SIGNING, &d, &public)
                    .map(Signer::Es256)
                    .map_err(rejected)
            }
            Alg::EdDsa => Ed25519KeyPair::from_seed_and_public_key(&d, &coord("x")?)
                .map(Signer::EdDsa)
                .map_err(rejected),
        }
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, JoseError> {
        match self {
            // aws-lc-rs draws its own nonce; the `rng` argument is unused.
            Signer::Es256(k) => k
                .sign(&SystemRandom::new(), message)
                .map(|sig| sig.as_ref().to_vec())
                .map_err(|_| JoseError::Signing("ES256 signing failed".into())),
            Signer::EdDsa(k) => Ok(k.sign(message).as_ref().to_vec()),
        }
    }
}

#[derive(Clone)]
/// Signature verification runs on aws-lc-rs (already the TLS provider):
/// it verifies several times faster than the OpenSSL path behind josekit,
/// and verification is the gateway's hottest crypto. josekit still parses
/// and validates the key when it is loaded.
struct Verifier(UnparsedPublicKey<Vec<u8>>);

/// A private signing key with its kid and algorithm.
#[derive(Clone)]
pub struct SigningKey {
    inner: Arc<SigningInner>,
}

struct SigningInner {
    kid: String,
    /// The private JWK as written to disk (`kty crv x [y] d kid alg use`).
    private_jwk: Map<String, Value>,
    public: VerifyingKey,
    signer: Signer,
}

impl SigningKey {
    /// Generates a fresh key pair.
    pub fn generate(alg: Alg, kid: &str) -> Result<Self, JoseError> {
        let pair: Box<dyn KeyPair> = match alg {
            Alg::Es256 => Box::new(
                EcKeyPair::generate(EcCurve::P256).map_err(|e| JoseError::KeyGeneration(e.to_string()))?,
            ),
            Alg::EdDsa => Box::new(
                EdKeyPair::generate(EdCurve::Ed25519).map_err(|e| JoseError::KeyGeneration(e.to_string()))?,
            ),
        };
        Self::from_pair(alg, kid, pair.as_ref())
    }

    /// Parses a private JWK. `kid` is required; `alg`, if present, must match
    /// the key type; `x`/`y`, if present, must match the private scalar.
    pub fn from_jwk_json(text: &str) -> Result<Self, JoseError> {
        let map =
            json_strict::parse_object(text.as_bytes()).map_err(|e| JoseError::InvalidKey(e.to_string()))?;
        Self::from_jwk_map(&map)
    }

    /// Like [`SigningKey::from_jwk_json`] for an already parsed JWK.
    pub fn from_jwk_map(map: &Map<String, Value>) -> Result<Self, JoseError> {
        let alg = Alg::from_kty_crv(map)?;
        check_alg_and_use(map, alg)?;
        let kid = map
            .get("kid")
            .and_then(Value::as_str)
            .filter(|k| is_valid_kid(k))
            .ok_or_else(|| JoseError::InvalidKey("private JWK needs a valid kid".into()))?;
        let d = map
            .get("d")
            .and_then(Value::as_str)
            .ok_or_else(|| JoseError::InvalidKey("private JWK has no d".into()))?;
        b64::decode(d).map_err(|_| JoseError::InvalidKey("d is not canonical base64url".into()))?;
        // Derive the public half from `d` alone, then compare: a file whose
        // x/y do not belong to d would otherwise publish a key that can
        // never verify what we sign.
        let (kty, crv) = alg.kty_crv();
        let mut only_d = Jwk::new(kty);
        set(&mut only_d, "crv", crv)?;
        set(&mut only_d, "d", d)?;
        let pair: Box<dyn KeyPair> = match alg {
            Alg::Es256 => Box::new(EcKeyPair::from_jwk(&only_d).map_err(invalid)?),
            Alg::EdDsa => Box::new(EdKeyPair::from_jwk(&only_d).map_err(invalid)?),
        };
        let key = Self::from_pair(alg, kid, pair.as_ref())?;
        for coord in ["x", "y"] {
            if let Some(given) = map.get(coord) {
                if key.inner.private_jwk.get(coord) != Some(given) {
                    return Err(JoseError::InvalidKey(format!("{coord} does not belong to d")));
                }
            }
        }
        Ok(key)
    }

    fn from_pair(alg: Alg, kid: &str, pair: &dyn KeyPair) -> Result<Self, JoseError> {
        if !is_valid_kid(kid) {
            return Err(JoseError::InvalidKey(
                "kid must be 1-128 chars of [A-Za-z0-9._:-]".into(),
            ));
        }
        let full = pair.to_jwk_key_pair();
        let (kty, crv) = alg.kty_crv();
        let mut private_jwk = Map::new();
        private_jwk.insert("kty".into(), kty.into());
        private_jwk.insert("crv".into(), crv.into());
        for coord in ["x", "y", "d"] {
            if let Some(v) = full.parameter(coord) {
                private_jwk.insert(coord.into(), v.clone());
            }
        }
        private_jwk.insert("kid".into(), kid.into());
        private_jwk.insert("alg".into(), alg.as_str().into());
        private_jwk.insert("use".into(), "sig".into());
        // josekit validates the complete JWK; aws-lc-rs signs with it.
        Jwk::from_map(private_jwk.clone()).map_err(invalid)?;
        let signer = Signer::from_jwk(alg, &private_jwk)?;
        let mut public_map = private_jwk.clone();
        public_map.remove("d");
        let public = VerifyingKey::from_jwk(&public_map)?;
        Ok(Self {
            inner: Arc::new(SigningInner {
                kid: kid.to_owned(),
                private_jwk,
                public,
                signer,
            }),
        })
    }

    /// Reads a private JWK file.
    pub fn load(path: &Path) -> Result<Self, JoseError> {
        let text = std::fs::read_to_string(path).map_err(|source| JoseError::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::from_jwk_json(&text)
    }

    /// Writes the private JWK atomically with mode 0600.
    pub fn save_private(&self, path: &Path) -> Result<(), JoseError> {
        let mut text = Value::Object(self.inner.private_jwk.clone()).to_string();
        text.push('\n');
        atomic_file::write(path, text.as_bytes(), 0o600).map_err(|source| JoseError::Io {
            path: path.to_owned(),
            source,
        })
    }

    pub fn kid(&self) -> &str {
        &self.inner.kid
    }

    pub fn alg(&self) -> Alg {
        self.inner.public.alg()
    }

    /// The public JWK (`kty crv x [y] kid alg use`), as published in key sets.
    pub fn public_jwk(&self) -> Map<String, Value> {
        self.inner.public.jwk().clone()
    }

    /// The private JWK, for persisting in the operator key store.
    pub fn private_jwk(&self) -> &Map<String, Value> {
        &self.inner.private_jwk
    }

    /// The matching verifying key.
    pub fn verifying_key(&self) -> &VerifyingKey {
        &self.inner.public
    }

    /// Raw signature (64 bytes) over `message`.
    pub fn sign_raw(&self, message: &[u8]) -> Result<Vec<u8>, JoseError> {
        self.inner.signer.sign(message)
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.inner.kid)
            .field("alg", &self.alg())
            .finish_non_exhaustive()
    }
}

/// A public key that verifies signatures of one algorithm.
#[derive(Clone)]
pub struct VerifyingKey {
    inner: Arc<VerifyingInner>,
}

struct VerifyingInner {
    alg: Alg,
    kid: Option<String>,
    /// Normalised public JWK: `kty crv x [y] [kid] alg use`.
    jwk: Map<String, Value>,
    verifier: Verifier,
}

impl VerifyingKey {
    /// Accepts only public EC P-256 or OKP Ed25519 JWKs with canonical
    /// coordinates; refuses any JWK carrying private material (`d`).
    pub fn from_jwk(map: &Map<String, Value>) -> Result<Self, JoseError> {
        let alg = Alg::from_kty_crv(map)?;
        check_alg_and_use(map, alg)?;
        if map.contains_key("d") {
            return Err(JoseError::InvalidKey(
                "public JWK carries private material".into(),
            ));
        }
        let kid = match map.get("kid") {
            None => None,
            Some(Value::String(k)) if is_valid_kid(k) => Some(k.clone()),
            Some(_) => {
                return Err(JoseError::InvalidKey(
                    "kid must be 1-128 chars of [A-Za-z0-9._:-]".into(),
                ))
            }
        };
        let (kty, crv) = alg.kty_crv();
        let mut jwk = Map::new();
        jwk.insert("kty".into(), kty.into());
        jwk.insert("crv".into(), crv.into());
        let coords: &[&str] = match alg {
            Alg::Es256 => &["x", "y"],
            Alg::EdDsa => &["x"],
        };
        for coord in coords {
            let text = map
                .get(*coord)
                .and_then(Value::as_str)
                .ok_or_else(|| JoseError::InvalidKey(format!("missing {coord}")))?;
            let bytes = b64::decode(text).map_err(|e| JoseError::InvalidKey(format!("{coord}: {e}")))?;
            if bytes.len() != 32 {
                return Err(JoseError::InvalidKey(format!("{coord} must be 32 bytes")));
            }
            jwk.insert((*coord).into(), text.into());
        }
        if let Some(k) = &kid {
            jwk.insert("kid".into(), k.clone().into());
        }
        jwk.insert("alg".into(), alg.as_str().into());
        jwk.insert("use".into(), "sig".into());
        // josekit rejects points off the curve and malformed keys up front;
        // aws-lc-rs does the per-signature work.
        let jj = Jwk::from_map(jwk.clone()).map_err(invalid)?;
        let (algorithm, key_bytes): (&'static dyn VerificationAlgorithm, Vec<u8>) = match alg {
            Alg::Es256 => {
                ES256.verifier_from_jwk(&jj).map_err(invalid)?;
                // SEC1 uncompressed point: 0x04 || x || y.
                let mut point = vec![0x04];
                point.extend(coord_bytes(&jwk, "x")?);
                point.extend(coord_bytes(&jwk, "y")?);
                (&ECDSA_P256_SHA256_FIXED, point)
            }
            Alg::EdDsa => {
                EdDSA.verifier_from_jwk(&jj).map_err(invalid)?;
                (&ED25519, coord_bytes(&jwk, "x")?)
            }
        };
        let verifier = Verifier(UnparsedPublicKey::new(algorithm, key_bytes));
        Ok(Self {
            inner: Arc::new(VerifyingInner {
                alg,
                kid,
                jwk,
                verifier,
            }),
        })
    }

    /// Parses a public JWK from text (strict JSON).
    pub fn from_jwk_json(text: &str) -> Result<Self, JoseError> {
        let map =
            json_strict::parse_object(text.as_bytes()).map_err(|e| JoseError::InvalidKey(e.to_string()))?;
        Self::from_jwk(&map)
    }

    /// Reads a JWK file. A private JWK is accepted and reduced to its public
    /// half, so an operator can point at either file.
    pub fn load(path: &Path) -> Result<Self, JoseError> {
        let text = std::fs::read_to_string(path).map_err(|source| JoseError::Io {
            path: path.to_owned(),
            source,
        })?;
        let map =
            json_strict::parse_object(text.as_bytes()).map_err(|e| JoseError::InvalidKey(e.to_string()))?;
        if map.contains_key("d") {
            return Ok(SigningKey::from_jwk_map(&map)?.verifying_key().clone());
        }
        Self::from_jwk(&map)
    }

    pub fn alg(&self) -> Alg {
        self.inner.alg
    }

    pub fn kid(&self) -> Option<&str> {
        self.inner.kid.as_deref()
    }

    /// The normalised public JWK.
    pub fn jwk(&self) -> &Map<String, Value> {
        &self.inner.jwk
    }

    /// Checks a raw signature over `message`. The length is checked first:
    /// both algorithms produce exactly 64 bytes.
    pub fn verify_raw(&self, message: &[u8], signature: &[u8]) -> Result<(), JoseError> {
        if signature.len() != self.inner.alg.signature_len() {
            return Err(JoseError::BadSignature);
        }
        self.inner
            .verifier
            .0
            .verify(message, signature)
            .map_err(|_| JoseError::BadSignature)
    }
}

impl fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifyingKey")
            .field("kid", &self.inner.kid)
            .field("alg", &self.inner.alg)
            .finish_non_exhaustive()
    }
}

impl PartialEq for VerifyingKey {
    fn eq(&self, other: &Self) -> bool {
        self.inner.jwk == other.inner.jwk
    }
}

/// A base64url coordinate of a normalised JWK (already checked: 32 bytes).
fn coord_bytes(jwk: &Map<String, Value>, coord: &str) -> Result<Vec<u8>, JoseError> {
    let text = jwk
        .get(coord)
        .and_then(Value::as_str)
        .ok_or_else(|| JoseError::InvalidKey(format!("missing {coord}")))?;
    b64::decode(text).map_err(|e| JoseError::InvalidKey(format!("{coord}: {e}")))
}

fn check_alg_and_use(map: &Map<String, Value>, alg: Alg) -> Result<(), JoseError> {
    match map.get("alg") {
        None => {}
        Some(Value::String(a)) if a == alg.as_str() => {}
        Some(_) => return Err(JoseError::InvalidKey(format!("alg does not match a {alg} key"))),
    }
    match map.get("use") {
        None => Ok(()),
        Some(Value::String(u)) if u == "sig" => Ok(()),
        Some(_) => Err(JoseError::InvalidKey("use must be sig".into())),
    }
}

fn set(jwk: &mut Jwk, name: &str, value: &str) -> Result<(), JoseError> {
    jwk.set_parameter(name, Some(Value::String(value.to_owned())))
        .map_err(invalid)
}

fn invalid(e: josekit::JoseError) -> JoseError {
    // josekit's messages describe the structure, never the key bytes.
    JoseError::InvalidKey(e.to_string())
}
