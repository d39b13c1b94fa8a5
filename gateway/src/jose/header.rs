//! The protected-header policy: what a JWS header may and must contain.
//!
//! The policy is an allow-list. Besides `alg`, `typ`, `cty` and `kid`
//! nothing is accepted: `crit` and `b64` change how the JWS must be
//! processed, `jku`/`x5u`/`jwk`/`x5c` (and the `x5t` thumbprints) would let
//! the token name its own key, and unknown parameters have no meaning we
//! could rely on. Keys come only from trust key sets.

use super::error::JoseError;
use super::keys::{is_valid_kid, Alg};
use serde_json::{Map, Value};

/// What a caller expects of the header of one kind of JWS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderPolicy {
    /// Required `typ` (compared case-insensitively, `application/` optional).
    pub typ: &'static str,
    /// Allowed `cty`; `None` means `cty` must be absent. An absent `cty` is
    /// always accepted (VC-JOSE-COSE makes it optional).
    pub cty: Option<&'static str>,
}

impl HeaderPolicy {
    /// Credentials (SPEC §3): `typ: vc+jwt`, `cty: vc`.
    pub const CREDENTIAL: HeaderPolicy = HeaderPolicy {
        typ: "vc+jwt",
        cty: Some("vc"),
    };
    /// Trust key sets (SPEC §2): `typ: bashu-keyset+jwt`, no `cty`.
    pub const KEYSET: HeaderPolicy = HeaderPolicy {
        typ: "bashu-keyset+jwt",
        cty: None,
    };
}

/// Header parameters that are refused by name (besides everything else not
/// on the allow-list), listed so error messages can say why.
const FORBIDDEN: &[&str] = &[
    "crit", "b64", "jku", "x5u", "jwk", "x5c", "x5t", "x5t#S256", "zip", "enc",
];
const ALLOWED: &[&str] = &["alg", "typ", "cty", "kid"];

/// A protected header that passed the policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    alg: Alg,
    kid: String,
    typ: String,
    cty: Option<String>,
}

impl Header {
    /// Applies `policy` to a strictly parsed header object. The order of the
    /// checks decides which problem a multiply-broken header gets: algorithm
    /// first, then forbidden parameters, then `kid`, then `typ`/`cty`.
    pub fn check(map: &Map<String, Value>, policy: HeaderPolicy) -> Result<Self, JoseError> {
        let alg = match map.get("alg") {
            Some(Value::String(name)) => {
                Alg::from_name(name).ok_or_else(|| JoseError::UnsupportedAlgorithm(clip(name)))?
            }
            Some(_) => return Err(JoseError::UnsupportedAlgorithm("<not a string>".into())),
            None => return Err(JoseError::UnsupportedAlgorithm("<missing>".into())),
        };
        if let Some(name) = FORBIDDEN.iter().find(|n| map.contains_key(**n)) {
            return Err(JoseError::ForbiddenHeader((*name).to_owned()));
        }
        if let Some(name) = map.keys().find(|k| !ALLOWED.contains(&k.as_str())) {
            return Err(JoseError::ForbiddenHeader(clip(name)));
        }
        let kid = match map.get("kid") {
            Some(Value::String(k)) if is_valid_kid(k) => k.clone(),
            _ => return Err(JoseError::MissingKid),
        };
        let typ = match map.get("typ") {
            Some(Value::String(t)) if media_type_eq(t, policy.typ) => t.clone(),
            other => {
                return Err(JoseError::WrongType {
                    expected: policy.typ,
                    found: other.map(shown),
                })
            }
        };
        let cty = match (map.get("cty"), policy.cty) {
            (None, _) => None,
            (Some(Value::String(c)), Some(allowed)) if media_type_eq(c, allowed) => Some(c.clone()),
            (Some(other), _) => return Err(JoseError::WrongContentType { found: shown(other) }),
        };
        Ok(Header { alg, kid, typ, cty })
    }

    pub fn alg(&self) -> Alg {
        self.alg
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub fn typ(&self) -> &str {
        &self.typ
    }

    pub fn cty(&self) -> Option<&str> {
        self.cty.as_deref()
    }
}

/// RFC 7515 §4.1.9: media type names compare case-insensitively and the
/// `application/` prefix may be omitted.
fn media_type_eq(given: &str, expected: &str) -> bool {
    let lower = given.to_ascii_lowercase();
    let bare = lower.strip_prefix("application/").unwrap_or(&lower);
    bare == expected
}

fn clip(s: &str) -> String {
    super::error::plain(s, 32)
}

/// A header value for a message: a string's own text, other JSON as JSON.
fn shown(v: &Value) -> String {
    match v {
        Value::String(s) => clip(s),
        other => clip(&other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(v: Value) -> Result<Header, JoseError> {
        Header::check(v.as_object().unwrap(), HeaderPolicy::CREDENTIAL)
    }

    #[test]
    fn accepts_the_profile_header() {
        let h = check(json!({"alg":"EdDSA","typ":"vc+jwt","cty":"vc","kid":"cq-1"})).unwrap();
        assert_eq!((h.alg(), h.kid(), h.typ()), (Alg::EdDsa, "cq-1", "vc+jwt"));
        assert!(check(json!({"alg":"ES256","typ":"application/VC+JWT","kid":"k"})).is_ok());
    }

    #[test]
    fn refuses_algorithms_and_parameters() {
        for alg in [
            "none", "HS256", "RS256", "PS256", "ES384", "ES256K", "Ed25519", "es256",
        ] {
            let r = check(json!({"alg":alg,"typ":"vc+jwt","kid":"k"}));
            assert!(matches!(r, Err(JoseError::UnsupportedAlgorithm(_))), "{alg}");
        }
        for p in ["crit", "b64", "jku", "x5u", "jwk", "x5c", "x5t", "foo"] {
            let mut h = json!({"alg":"ES256","typ":"vc+jwt","kid":"k"});
            h[p] = json!(false);
            assert!(
                matches!(check(h), Err(JoseError::ForbiddenHeader(n)) if n == p),
                "{p}"
            );
        }
        assert!(matches!(
            check(json!({"alg":"ES256","typ":"vc+jwt"})),
            Err(JoseError::MissingKid)
        ));
        assert!(matches!(
            check(json!({"alg":"ES256","typ":"vc+jwt","kid":""})),
            Err(JoseError::MissingKid)
        ));
        assert!(matches!(
            check(json!({"alg":"ES256","typ":"JWT","kid":"k"})),
            Err(JoseError::WrongType { .. })
        ));
        assert!(matches!(
            check(json!({"alg":"ES256","kid":"k"})),
            Err(JoseError::WrongType { .. })
        ));
        assert!(matches!(
            check(json!({"alg":"ES256","typ":"vc+jwt","cty":"json","kid":"k"})),
            Err(JoseError::WrongContentType { .. })
        ));
    }

    #[test]
    fn messages_show_plain_values() {
        let text = |h: Value| check(h).unwrap_err().to_string();
        assert_eq!(
            text(json!({"alg":"ES256","typ":"JWT","kid":"k"})),
            "typ is JWT, expected vc+jwt"
        );
        assert_eq!(
            text(json!({"alg":"ES256","kid":"k"})),
            "typ is missing, expected vc+jwt"
        );
        assert_eq!(
            text(json!({"alg":"ES256","typ":7,"kid":"k"})),
            "typ is 7, expected vc+jwt"
        );
        assert_eq!(
            text(json!({"alg":"ES256","typ":"vc+jwt","cty":"json","kid":"k"})),
            "cty json is not allowed here"
        );
        assert_eq!(
            text(json!({"alg":"HS256","typ":"vc+jwt","kid":"k"})),
            "algorithm HS256 is not allowed (only ES256 and EdDSA)"
        );
        assert_eq!(
            text(json!({"alg":"ES256","typ":"vc+jwt","kid":"k","x\ny":1})),
            "header parameter x\u{fffd}y is not allowed"
        );
    }
}
