//! The suite's own reading of trust key sets (SPEC §2) and of signed links:
//! split the compact JWS, check the signature with josekit against a key
//! the suite chose (the pinned federation key, or a key-set entry). It is
//! deliberately small and independent of the gateway's verifier.

use crate::catalogue::Verdict;
use crate::client::Client;
use crate::craft::{b64url_decode, decode_compact};
use josekit::jwk::Jwk;
use josekit::jws::{EdDSA, JwsVerifier, ES256};
use serde_json::Value;

pub const KEYS_PATH: &str = "/v1/federation/keys";

/// A fetched key set: the exact JWS and its decoded parts.
#[derive(Debug, Clone)]
pub struct KeySet {
    pub jws: String,
    pub header: Value,
    pub payload: Value,
}

impl KeySet {
    /// Decodes (does not verify) a compact key-set JWS.
    pub fn parse(jws: &str) -> Result<Self, String> {
        let (header, payload) =
            decode_compact(jws).ok_or("not a compact JWS with base64url JSON header and payload")?;
        Ok(Self {
            jws: jws.to_owned(),
            header,
            payload,
        })
    }

    pub fn seq(&self) -> Option<u64> {
        self.payload.get("seq")?.as_u64()
    }

    pub fn iat(&self) -> Option<i64> {
        self.payload.get("iat")?.as_i64()
    }

    pub fn exp(&self) -> Option<i64> {
        self.payload.get("exp")?.as_i64()
    }

    pub fn keys(&self) -> &[Value] {
        self.payload
            .get("keys")
            .and_then(Value::as_array)
            .map_or(&[], Vec::as_slice)
    }

    pub fn key(&self, kid: &str) -> Option<&Value> {
        self.keys()
            .iter()
            .find(|k| k.get("kid").and_then(Value::as_str) == Some(kid))
    }

    /// Keys with this role and one of these statuses.
    pub fn keys_with(&self, role: &str, statuses: &[&str]) -> Vec<&Value> {
        self.keys()
            .iter()
            .filter(|k| k.get("role").and_then(Value::as_str) == Some(role))
            .filter(|k| {
                k.get("status")
                    .and_then(Value::as_str)
                    .is_some_and(|s| statuses.contains(&s))
            })
            .collect()
    }
}

/// Verifies the signature of a compact JWS with `key`; the header `alg`
/// must be ES256 or EdDSA and fit the key type.
pub fn verify_signature(jws: &str, key: &Jwk) -> Result<(), String> {
    let (input, sig) = jws.rsplit_once('.').ok_or("not a compact JWS")?;
    let (header, _) = decode_compact(jws).ok_or("undecodable header or payload")?;
    let sig = b64url_decode(sig).ok_or("signature is not canonical base64url")?;
    let alg = header.get("alg").and_then(Value::as_str).unwrap_or_default();
    let verifier: Box<dyn JwsVerifier> = match alg {
        "ES256" => Box::new(
            ES256
                .verifier_from_jwk(key)
                .map_err(|e| format!("key unusable for ES256: {e}"))?,
        ),
        "EdDSA" => Box::new(
            EdDSA
                .verifier_from_jwk(key)
                .map_err(|e| format!("key unusable for EdDSA: {e}"))?,
        ),
        other => return Err(format!("alg {other:?} is neither ES256 nor EdDSA")),
    };
    verifier
        .verify(input.as_bytes(), &sig)
        .map_err(|_| "signature does not verify".to_owned())
}

/// A key-set entry as a josekit public JWK (private members dropped).
pub fn entry_jwk(entry: &Value) -> Result<Jwk, String> {
    let mut map = entry.as_object().cloned().ok_or("key entry is not an object")?;
    for extra in ["status", "nbf", "retire_after", "role", "d"] {
        map.remove(extra);
    }
    Jwk::from_map(map).map_err(|e| format!("key entry is not a JWK: {e}"))
}

/// `GET /v1/federation/keys`, decoded; a non-200 answer is a failure.
pub async fn fetch(client: &Client) -> Result<KeySet, Verdict> {
    let resp = client
        .get(KEYS_PATH)
        .await
        .map_err(|e| Verdict::Fail(format!("GET {KEYS_PATH}: {e}")))?;
    if resp.status != http::StatusCode::OK {
        return Err(Verdict::Fail(format!(
            "GET {KEYS_PATH} answered {}, expected 200",
            resp.status
        )));
    }
    let text = resp.text();
    KeySet::parse(text.trim()).map_err(|e| Verdict::Fail(format!("key set: {e}")))
}

/// Fetches the key set and checks its signature against the pinned key.
pub async fn fetch_verified(client: &Client, federation_key: &Jwk) -> Result<KeySet, Verdict> {
    let set = fetch(client).await?;
    verify_signature(&set.jws, federation_key)
        .map_err(|e| Verdict::Fail(format!("key set signature with the pinned federation key: {e}")))?;
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::craft::{sign_json, KeyAlg, SigningKey};
    use serde_json::json;

    #[test]
    fn verifies_with_the_right_key_only() {
        let fed = SigningKey::generate(KeyAlg::EdDsa, "fed").unwrap();
        let other = SigningKey::generate(KeyAlg::EdDsa, "fed").unwrap();
        let jws = sign_json(
            &json!({"alg":"EdDSA","typ":"bashu-keyset+jwt","kid":"fed"}),
            &json!({"iss":"cq","seq":3,"keys":[{"kid":"a","role":"issuer","status":"active"}]}),
            &fed,
        )
        .unwrap();
        verify_signature(&jws, &fed.public_jwk().unwrap()).unwrap();
        assert!(verify_signature(&jws, &other.public_jwk().unwrap()).is_err());
        let set = KeySet::parse(&jws).unwrap();
        assert_eq!(set.seq(), Some(3));
        assert_eq!(set.keys_with("issuer", &["active"]).len(), 1);
        let public = serde_json::to_value(fed.public_jwk().unwrap().as_ref()).unwrap();
        let mut entry = public.clone();
        entry["status"] = json!("active");
        verify_signature(&jws, &entry_jwk(&entry).unwrap()).unwrap();
    }
}
