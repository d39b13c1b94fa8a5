//! Trust key sets (SPEC §2): the list of a member's credential-signing keys,
//! signed by the member's federation key as a `bashu-keyset+jwt` JWS.

use super::{KeyRole, KeyStatus};
use crate::ids::is_member_id;
use crate::jose::json_strict::{self, JsonError};
use crate::jose::{self, HeaderPolicy, JoseError, SigningKey, VerifyingKey};
use serde_json::{Map, Value};
use std::collections::HashSet;

/// The `typ` of a key-set JWS.
pub const KEYSET_TYP: &str = "bashu-keyset+jwt";

/// A key set may be issued at most this far in the verifier's future.
pub const MAX_IAT_SKEW_SECS: i64 = 60;

pub use crate::wire::MAX_KEYSET_LIFETIME_SECS as MAX_LIFETIME_SECS;

/// Upper bound on keys per set; a member never needs more, and a peer must
/// not be able to make us hold arbitrary amounts of key material.
pub const MAX_KEYS: usize = 256;

/// One key of a key set: the public JWK plus its lifecycle metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct TrustKey {
    pub kid: String,
    pub role: KeyRole,
    pub status: KeyStatus,
    /// Unix seconds before which the key does not verify.
    pub nbf: i64,
    /// For `retiring` keys: Unix seconds after which the key no longer verifies.
    pub retire_after: Option<i64>,
    /// For `revoked` keys: Unix seconds of the revocation (SPEC §2). A revoked
    /// key without it (a v1 publisher) counts as revoked since forever.
    pub revoked_at: Option<i64>,
    pub key: VerifyingKey,
}

/// Why a key that is present in a set may not verify at a given time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyUnusable {
    #[error("key is revoked")]
    Revoked,
    #[error("key retired at {retire_after}")]
    Retired { retire_after: i64 },
    #[error("key is not valid before {nbf}")]
    NotYetValid { nbf: i64 },
}

impl TrustKey {
    /// Whether the key verifies at `now` (Unix seconds) with `skew` seconds
    /// of tolerance: `next`, `active` and `retiring` until `retire_after`
    /// verify; `revoked` never does.
    pub fn check_usable(&self, now: i64, skew: i64) -> Result<(), KeyUnusable> {
        match self.status {
            KeyStatus::Revoked => return Err(KeyUnusable::Revoked),
            KeyStatus::Retiring => {
                if let Some(t) = self.retire_after {
                    if now > t.saturating_add(skew) {
                        return Err(KeyUnusable::Retired { retire_after: t });
                    }
                }
            }
            KeyStatus::Next | KeyStatus::Active => {}
        }
        if self.nbf > now.saturating_add(skew) {
            return Err(KeyUnusable::NotYetValid { nbf: self.nbf });
        }
        Ok(())
    }

    /// The key-set member object: public JWK plus `role`, `status`, `nbf`,
    /// `retire_after`.
    pub fn to_json(&self) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("kid".into(), self.kid.clone().into());
        for (k, v) in self.key.jwk() {
            if k != "kid" {
                m.insert(k.clone(), v.clone());
            }
        }
        m.insert("role".into(), self.role.as_str().into());
        m.insert("status".into(), self.status.as_str().into());
        m.insert("nbf".into(), self.nbf.into());
        m.insert(
            "retire_after".into(),
            self.retire_after.map_or(Value::Null, Value::from),
        );
        if let Some(at) = self.revoked_at {
            m.insert("revoked_at".into(), at.into());
        }
        m
    }

    /// The moment from which this key no longer verifies anything new:
    /// `revoked_at` for revoked keys (the distant past when a v1 publisher
    /// left it out), `retire_after` for retiring keys, `None` otherwise.
    /// An exchange the origin gateway attests it verified before this moment
    /// stays accepted (SPEC §2).
    pub fn unusable_since(&self) -> Option<i64> {
        match self.status {
            KeyStatus::Revoked => Some(self.revoked_at.unwrap_or(i64::MIN)),
            KeyStatus::Retiring => self.retire_after,
            KeyStatus::Next | KeyStatus::Active => None,
        }
    }

    /// Parses one key-set member object.
    pub fn from_json(m: &Map<String, Value>) -> Result<Self, TrustError> {
        let kid = m
            .get("kid")
            .and_then(Value::as_str)
            .ok_or_else(|| TrustError::Invalid("key without kid".into()))?;
        let role = parse_enum(m, "role", kid)?;
        let status = parse_enum(m, "status", kid)?;
        let nbf = m
            .get("nbf")
            .and_then(Value::as_i64)
            .ok_or_else(|| TrustError::Invalid(format!("key {kid}: nbf must be an integer")))?;
        let retire_after =
            match m.get("retire_after") {
                None | Some(Value::Null) => None,
                Some(v) => Some(v.as_i64().ok_or_else(|| {
                    TrustError::Invalid(format!("key {kid}: retire_after must be an integer"))
                })?),
            };
        let revoked_at =
            match m.get("revoked_at") {
                None | Some(Value::Null) => None,
                Some(v) => Some(v.as_i64().ok_or_else(|| {
                    TrustError::Invalid(format!("key {kid}: revoked_at must be an integer"))
                })?),
            };
        if revoked_at.is_some() && status != KeyStatus::Revoked {
            return Err(TrustError::Invalid(format!(
                "key {kid}: revoked_at on a key that is not revoked"
            )));
        }
        let key = VerifyingKey::from_jwk(m).map_err(|e| TrustError::Invalid(format!("key {kid}: {e}")))?;
        Ok(TrustKey {
            kid: kid.to_owned(),
            role,
            status,
            nbf,
            retire_after,
            revoked_at,
            key,
        })
    }
}

fn parse_enum<T: serde::de::DeserializeOwned>(
    m: &Map<String, Value>,
    field: &str,
    kid: &str,
) -> Result<T, TrustError> {
    let v = m
        .get(field)
        .ok_or_else(|| TrustError::Invalid(format!("key {kid}: missing {field}")))?;
    serde_json::from_value(v.clone()).map_err(|_| TrustError::Invalid(format!("key {kid}: invalid {field}")))
}

/// A member's key set: the payload of a `bashu-keyset+jwt` JWS.
#[derive(Debug, Clone, PartialEq)]
pub struct KeySet {
    /// Member id whose keys these are.
    pub iss: String,
    pub iat: i64,
    pub exp: i64,
    /// Publication counter; never decreases for a member (rollback protection).
    pub seq: u64,
    pub keys: Vec<TrustKey>,
}

/// Why a key set was refused.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("key set JWS: {0}")]
    Jose(#[from] JoseError),
    #[error("key set payload: {0}")]
    Json(#[from] JsonError),
    #[error("key set: {0}")]
    Invalid(String),
    #[error("key set is for {found}, expected {expected}")]
    WrongIssuer { expected: String, found: String },
    #[error("key set lifetime exp - iat = {lifetime} s exceeds the limit of {max} s (30 days)")]
    TooLong { lifetime: i64, max: i64 },
    #[error("key set expired at {exp}")]
    Expired { exp: i64 },
    #[error("key set issued in the future (iat {iat})")]
    NotYetIssued { iat: i64 },
    #[error("key set seq {got} is lower than seq {seen} already seen (rollback)")]
    Rollback { seen: u64, got: u64 },
}

impl KeySet {
    /// The key with `kid`, if any.
    pub fn key(&self, kid: &str) -> Option<&TrustKey> {
        self.keys.iter().find(|k| k.kid == kid)
    }

    /// The JSON payload.
    pub fn to_json(&self) -> Value {
        let keys: Vec<Value> = self.keys.iter().map(|k| Value::Object(k.to_json())).collect();
        serde_json::json!({
            "iss": self.iss,
            "iat": self.iat,
            "exp": self.exp,
            "seq": self.seq,
            "keys": keys,
        })
    }

    /// Parses and validates a key-set payload (all of `iss iat exp seq keys`).
    pub fn from_json(v: &Value) -> Result<Self, TrustError> {
        let m = v
            .as_object()
            .ok_or_else(|| TrustError::Invalid("payload is not an object".into()))?;
        let int = |name: &str| {
            m.get(name)
                .and_then(Value::as_i64)
                .ok_or_else(|| TrustError::Invalid(format!("{name} must be an integer")))
        };
        let (iat, exp) = (int("iat")?, int("exp")?);
        let seq = m
            .get("seq")
            .and_then(Value::as_u64)
            .ok_or_else(|| TrustError::Invalid("seq must be a non-negative integer".into()))?;
        if exp <= iat {
            return Err(TrustError::Invalid("exp must be after iat".into()));
        }
        let lifetime = exp.saturating_sub(iat);
        if lifetime > MAX_LIFETIME_SECS {
            return Err(TrustError::TooLong {
                lifetime,
                max: MAX_LIFETIME_SECS,
            });
        }
        Self::build(m, iat, exp, seq)
    }

    /// Parses an unsigned key-set payload as accepted by
    /// `bashu credential verify --jwks`: `iat`, `exp` and `seq` are optional
    /// (an absent `exp` means "no expiry"; the file is trusted as given).
    pub fn parse_unsigned(text: &str) -> Result<Self, TrustError> {
        let v = json_strict::parse(text.as_bytes())?;
        let m = v
            .as_object()
            .ok_or_else(|| TrustError::Invalid("payload is not an object".into()))?;
        let iat = m.get("iat").and_then(Value::as_i64).unwrap_or(0);
        let exp = m.get("exp").and_then(Value::as_i64).unwrap_or(i64::MAX);
        let seq = m.get("seq").and_then(Value::as_u64).unwrap_or(0);
        Self::build(m, iat, exp, seq)
    }

    fn build(m: &Map<String, Value>, iat: i64, exp: i64, seq: u64) -> Result<Self, TrustError> {
        let iss = m
            .get("iss")
            .and_then(Value::as_str)
            .filter(|s| is_member_id(s))
            .ok_or_else(|| TrustError::Invalid("iss must be a member id".into()))?;
        let list = m
            .get("keys")
            .and_then(Value::as_array)
            .ok_or_else(|| TrustError::Invalid("keys must be an array".into()))?;
        if list.len() > MAX_KEYS {
            return Err(TrustError::Invalid(format!("more than {MAX_KEYS} keys")));
        }
        let mut seen = HashSet::new();
        let mut keys = Vec::with_capacity(list.len());
        for k in list {
            let obj = k
                .as_object()
                .ok_or_else(|| TrustError::Invalid("key is not an object".into()))?;
            let key = TrustKey::from_json(obj)?;
            if !seen.insert(key.kid.clone()) {
                return Err(TrustError::Invalid(format!("duplicate kid {}", key.kid)));
            }
            keys.push(key);
        }
        Ok(KeySet {
            iss: iss.to_owned(),
            iat,
            exp,
            seq,
            keys,
        })
    }

    /// Signs the set with the member's federation key.
    pub fn sign(&self, fed: &SigningKey) -> Result<String, TrustError> {
        let payload = serde_json::to_vec(&self.to_json()).map_err(|e| TrustError::Invalid(e.to_string()))?;
        // Round-trip through the parser so we never publish what we would
        // refuse to accept.
        Self::from_json(&json_strict::parse(&payload)?)?;
        Ok(jose::sign_compact(KEYSET_TYP, &payload, fed)?)
    }

    /// Verifies a key-set JWS against the member's pinned federation key and
    /// checks its time window at `now` (Unix seconds). The caller checks that
    /// `iss` is the member it asked for and applies rollback protection.
    pub fn verify(jws: &str, fed_pub: &VerifyingKey, now: i64) -> Result<KeySet, TrustError> {
        let parsed = jose::parse_compact(jws, HeaderPolicy::KEYSET)?;
        parsed.verify_signature(fed_pub)?;
        let set = Self::from_json(&json_strict::parse(parsed.payload())?)?;
        if set.exp <= now {
            return Err(TrustError::Expired { exp: set.exp });
        }
        if set.iat > now.saturating_add(MAX_IAT_SKEW_SECS) {
            return Err(TrustError::NotYetIssued { iat: set.iat });
        }
        Ok(set)
    }

    /// [`KeySet::verify`] plus the `iss` check.
    pub fn verify_for(
        member: &str,
        jws: &str,
        fed_pub: &VerifyingKey,
        now: i64,
    ) -> Result<KeySet, TrustError> {
        let set = Self::verify(jws, fed_pub, now)?;
        if set.iss != member {
            return Err(TrustError::WrongIssuer {
                expected: member.to_owned(),
                found: set.iss,
            });
        }
        Ok(set)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jose::Alg;

    fn key(status: KeyStatus, nbf: i64, retire_after: Option<i64>) -> TrustKey {
        let signing = SigningKey::generate(Alg::EdDsa, "k").unwrap();
        TrustKey {
            kid: "k".into(),
            role: KeyRole::Gateway,
            status,
            nbf,
            retire_after,
            revoked_at: None,
            key: signing.verifying_key().clone(),
        }
    }

    #[test]
    fn status_semantics_at_the_boundaries() {
        let skew = 60;
        assert_eq!(key(KeyStatus::Next, 0, None).check_usable(1000, skew), Ok(()));
        assert_eq!(key(KeyStatus::Active, 0, None).check_usable(1000, skew), Ok(()));
        let retiring = key(KeyStatus::Retiring, 0, Some(1000));
        assert_eq!(retiring.check_usable(1060, skew), Ok(()));
        assert_eq!(
            retiring.check_usable(1061, skew),
            Err(KeyUnusable::Retired { retire_after: 1000 })
        );
        // Retiring without a date keeps verifying until revoked.
        assert_eq!(
            key(KeyStatus::Retiring, 0, None).check_usable(i64::MAX, skew),
            Ok(())
        );
        assert_eq!(
            key(KeyStatus::Revoked, 0, None).check_usable(0, skew),
            Err(KeyUnusable::Revoked)
        );
        let future = key(KeyStatus::Active, 2000, None);
        assert_eq!(future.check_usable(1940, skew), Ok(()));
        assert_eq!(
            future.check_usable(1939, skew),
            Err(KeyUnusable::NotYetValid { nbf: 2000 })
        );
    }

    fn payload(iat: i64, exp: i64) -> Value {
        let mut jwk = key(KeyStatus::Active, 0, None).to_json();
        jwk.insert("kid".into(), "cq-1".into());
        serde_json::json!({"iss": "cq", "iat": iat, "exp": exp, "seq": 1, "keys": [jwk]})
    }

    #[test]
    fn key_sets_live_at_most_thirty_days() {
        let iat = 1_767_225_600;
        let month = 30 * 24 * 3600;
        assert_eq!(
            KeySet::from_json(&payload(iat, iat + month)).unwrap().exp,
            iat + month
        );
        assert!(matches!(
            KeySet::from_json(&payload(iat, iat + month + 1)),
            Err(TrustError::TooLong { lifetime, max }) if lifetime == month + 1 && max == month
        ));
        // The report: a set that expires in a hundred years.
        let century = iat + 100 * 365 * 24 * 3600;
        assert!(matches!(
            KeySet::from_json(&payload(iat, century)),
            Err(TrustError::TooLong { .. })
        ));
        // No overflow at the extremes.
        assert!(matches!(
            KeySet::from_json(&payload(i64::MIN, i64::MAX)),
            Err(TrustError::TooLong { .. })
        ));
        // Verification refuses it too, and signing never publishes it.
        let fed = SigningKey::generate(Alg::EdDsa, "fed").unwrap();
        let mut long = KeySet::from_json(&payload(iat, iat + month)).unwrap();
        long.exp = century;
        assert!(matches!(long.sign(&fed), Err(TrustError::TooLong { .. })));
        let jws = jose::sign_compact(
            KEYSET_TYP,
            &serde_json::to_vec(&payload(iat, century)).unwrap(),
            &fed,
        )
        .unwrap();
        assert!(matches!(
            KeySet::verify(&jws, fed.verifying_key(), iat),
            Err(TrustError::TooLong { .. })
        ));
    }

    #[test]
    fn key_json_round_trips() {
        let k = key(KeyStatus::Retiring, 5, Some(99));
        let json = k.to_json();
        assert_eq!(json["role"], "gateway");
        assert_eq!(json["retire_after"], 99);
        assert_eq!(TrustKey::from_json(&json).unwrap(), k);
    }
}
