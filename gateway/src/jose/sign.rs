//! Producing compact JWS.

use super::b64;
use super::error::JoseError;
use super::keys::SigningKey;
use serde_json::{Map, Value};

/// Signs `payload` as a compact JWS with the protected header
/// `{"alg", "typ", ["cty": "vc",] "kid"}`; `cty: vc` is added exactly when
/// `typ` is `vc+jwt` (VC-JOSE-COSE).
pub fn sign_compact(typ: &str, payload: &[u8], key: &SigningKey) -> Result<String, JoseError> {
    let mut header = Map::new();
    header.insert("alg".into(), key.alg().as_str().into());
    header.insert("typ".into(), typ.into());
    if typ == "vc+jwt" {
        header.insert("cty".into(), "vc".into());
    }
    header.insert("kid".into(), key.kid().into());
    let header = serde_json::to_vec(&Value::Object(header)).map_err(|e| JoseError::Signing(e.to_string()))?;
    let mut out = b64::encode(&header);
    out.push('.');
    out.push_str(&b64::encode(payload));
    let signature = key.sign_raw(out.as_bytes())?;
    out.push('.');
    out.push_str(&b64::encode(&signature));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::{parse_compact, Alg, HeaderPolicy, SigningKey};
    use super::*;

    #[test]
    fn sign_then_parse_and_verify_both_algorithms() {
        for alg in [Alg::Es256, Alg::EdDsa] {
            let key = SigningKey::generate(alg, "k-1").unwrap();
            let jws = sign_compact("vc+jwt", br#"{"a":1}"#, &key).unwrap();
            let parsed = parse_compact(&jws, HeaderPolicy::CREDENTIAL).unwrap();
            assert_eq!(parsed.header().cty(), Some("vc"));
            assert_eq!(parsed.payload(), br#"{"a":1}"#);
            parsed.verify_signature(key.verifying_key()).unwrap();
            let other = SigningKey::generate(alg, "k-2").unwrap();
            assert!(matches!(
                parsed.verify_signature(other.verifying_key()),
                Err(JoseError::BadSignature)
            ));
        }
    }

    #[test]
    fn private_jwk_round_trips_and_public_jwk_has_no_d() {
        for alg in [Alg::Es256, Alg::EdDsa] {
            let key = SigningKey::generate(alg, "k-1").unwrap();
            let text = Value::Object(key.private_jwk().clone()).to_string();
            let again = SigningKey::from_jwk_json(&text).unwrap();
            assert_eq!(again.public_jwk(), key.public_jwk());
            let public = key.public_jwk();
            assert!(!public.contains_key("d"));
            assert_eq!(public["kid"], "k-1");
            assert_eq!(public["alg"], alg.as_str());
            assert_eq!(public["use"], "sig");
            assert!(!format!("{key:?}").contains(key.private_jwk()["d"].as_str().unwrap()));
        }
    }
}
