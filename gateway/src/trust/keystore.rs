//! The operator key store: one JSON file per member holding the gateway's
//! private translation-signing keys, the credit bank's imported public
//! issuer keys, their lifecycle status and the key-set publication counter.
//!
//! Writes are atomic (temporary file + fsync + rename + directory fsync) and
//! the file is mode 0600 because it holds private keys. Every operation
//! keeps the invariant that at most one gateway key is `active`: that key
//! is the one the gateway signs with.

use super::keyset::{KeySet, TrustError, TrustKey};
use super::{KeyRole, KeyStatus};
use crate::ids::is_member_id;
use crate::jose::{atomic_file, json_strict, Alg, JoseError, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::HashSet;
use std::path::{Path, PathBuf};

const FORMAT_VERSION: u32 = 1;

/// Why a key-store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum KeyStoreError {
    #[error("key store {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("key store {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("key store: {0}")]
    Invalid(String),
    #[error(transparent)]
    Key(#[from] JoseError),
    #[error(transparent)]
    KeySet(#[from] TrustError),
    #[error("no key with kid {0:?}")]
    UnknownKid(String),
    #[error("kid {0:?} already exists")]
    DuplicateKid(String),
    #[error("cannot {op} key {kid}: its status is {status}")]
    InvalidTransition {
        kid: String,
        status: KeyStatus,
        op: &'static str,
    },
    #[error("{0} keys cannot be generated here")]
    WrongRole(KeyRole),
    #[error("no active gateway key (generate and promote one)")]
    NoActiveGatewayKey,
    #[error("retiring {0} would leave no active gateway key; promote a successor first")]
    LastActiveKey(String),
    #[error("no next gateway key to promote; generate one first")]
    NoNextKey,
}

impl KeyStoreError {
    /// Seen by an API caller only when the gateway cannot sign (no active
    /// key, unreadable store): a server-side condition, so `unavailable`.
    pub fn problem(&self) -> crate::problem::Problem {
        crate::problem::Problem::new(
            crate::problem::ProblemType::Unavailable,
            "gateway signing key unavailable",
        )
    }
}

/// Key material, tied to the role: gateway keys are ours (private), issuer
/// keys belong to the credit bank (we only ever hold the public half).
#[derive(Debug, Clone)]
pub enum KeyMaterial {
    Gateway(SigningKey),
    Issuer(VerifyingKey),
}

impl KeyMaterial {
    pub fn role(&self) -> KeyRole {
        match self {
            KeyMaterial::Gateway(_) => KeyRole::Gateway,
            KeyMaterial::Issuer(_) => KeyRole::Issuer,
        }
    }

    fn verifying(&self) -> &VerifyingKey {
        match self {
            KeyMaterial::Gateway(k) => k.verifying_key(),
            KeyMaterial::Issuer(k) => k,
        }
    }
}

/// One key of the store.
#[derive(Debug, Clone)]
pub struct StoredKey {
    kid: String,
    status: KeyStatus,
    nbf: i64,
    retire_after: Option<i64>,
    /// Unix seconds of revocation, for `revoked` keys (SPEC §2 `revoked_at`).
    revoked_at: Option<i64>,
    material: KeyMaterial,
}

impl StoredKey {
    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub fn status(&self) -> KeyStatus {
        self.status
    }

    pub fn material(&self) -> &KeyMaterial {
        &self.material
    }

    fn info(&self) -> KeyInfo {
        KeyInfo {
            kid: self.kid.clone(),
            role: self.material.role(),
            status: self.status,
            alg: self.material.verifying().alg(),
            nbf: self.nbf,
            retire_after: self.retire_after,
        }
    }

    fn trust_key(&self) -> TrustKey {
        TrustKey {
            kid: self.kid.clone(),
            role: self.material.role(),
            status: self.status,
            nbf: self.nbf,
            retire_after: self.retire_after,
            revoked_at: self.revoked_at,
            key: self.material.verifying().clone(),
        }
    }
}

/// Public summary of a key, for `bashu keys list`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInfo {
    pub kid: String,
    pub role: KeyRole,
    pub status: KeyStatus,
    pub alg: Alg,
    pub nbf: i64,
    pub retire_after: Option<i64>,
}

/// On-disk form.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileForm {
    version: u32,
    member: String,
    seq: u64,
    keys: Vec<FileKey>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileKey {
    kid: String,
    role: KeyRole,
    status: KeyStatus,
    nbf: i64,
    retire_after: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    revoked_at: Option<i64>,
    jwk: Map<String, Value>,
}

/// The operator key store of one member.
#[derive(Debug, Clone)]
pub struct KeyStore {
    member: String,
    seq: u64,
    keys: Vec<StoredKey>,
}

impl KeyStore {
    /// An empty store for `member`.
    pub fn create(member: &str) -> Result<Self, KeyStoreError> {
        if !is_member_id(member) {
            return Err(KeyStoreError::Invalid(format!("{member:?} is not a member id")));
        }
        Ok(Self {
            member: member.to_owned(),
            seq: 0,
            keys: Vec::new(),
        })
    }

    /// Reads and validates a key store file.
    pub fn load(path: &Path) -> Result<Self, KeyStoreError> {
        let text = std::fs::read(path).map_err(|source| KeyStoreError::Io {
            path: path.to_owned(),
            source,
        })?;
        let parse_err = |message: String| KeyStoreError::Parse {
            path: path.to_owned(),
            message,
        };
        let value = json_strict::parse(&text).map_err(|e| parse_err(e.to_string()))?;
        let form: FileForm = serde_json::from_value(value).map_err(|e| parse_err(e.to_string()))?;
        if form.version != FORMAT_VERSION {
            return Err(parse_err(format!("unsupported version {}", form.version)));
        }
        let mut store = Self::create(&form.member)?;
        store.seq = form.seq;
        for k in form.keys {
            let material = match k.role {
                KeyRole::Gateway => KeyMaterial::Gateway(SigningKey::from_jwk_map(&k.jwk)?),
                KeyRole::Issuer => KeyMaterial::Issuer(VerifyingKey::from_jwk(&k.jwk)?),
            };
            if material.verifying().kid().is_some_and(|kid| kid != k.kid) {
                return Err(parse_err(format!("key {}: jwk kid differs", k.kid)));
            }
            store.push(StoredKey {
                kid: k.kid,
                status: k.status,
                nbf: k.nbf,
                retire_after: k.retire_after,
                revoked_at: k.revoked_at,
                material,
            })?;
        }
        if store.active_gateway_keys().count() > 1 {
            return Err(parse_err("more than one active gateway key".into()));
        }
        Ok(store)
    }

    /// Writes the store atomically, mode 0600.
    pub fn save(&self, path: &Path) -> Result<(), KeyStoreError> {
        let form = FileForm {
            version: FORMAT_VERSION,
            member: self.member.clone(),
            seq: self.seq,
            keys: self
                .keys
                .iter()
                .map(|k| FileKey {
                    kid: k.kid.clone(),
                    role: k.material.role(),
                    status: k.status,
                    nbf: k.nbf,
                    retire_after: k.retire_after,
                    revoked_at: k.revoked_at,
                    jwk: match &k.material {
                        KeyMaterial::Gateway(s) => s.private_jwk().clone(),
                        KeyMaterial::Issuer(v) => v.jwk().clone(),
                    },
                })
                .collect(),
        };
        let mut text = serde_json::to_vec_pretty(&form).map_err(|e| KeyStoreError::Invalid(e.to_string()))?;
        text.push(b'\n');
        atomic_file::write(path, &text, 0o600).map_err(|source| KeyStoreError::Io {
            path: path.to_owned(),
            source,
        })
    }

    pub fn member(&self) -> &str {
        &self.member
    }

    /// Publication counter of the last published key set.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// All keys, in insertion order.
    pub fn list(&self) -> Vec<KeyInfo> {
        self.keys.iter().map(StoredKey::info).collect()
    }

    pub fn get(&self, kid: &str) -> Option<&StoredKey> {
        self.keys.iter().find(|k| k.kid == kid)
    }

    /// Generates a gateway key. It is `active` if the store has no active
    /// gateway key yet, `next` otherwise (publish it, wait one cache TTL,
    /// then promote). Issuer keys belong to the credit bank: see
    /// [`KeyStore::generate_issuer`] and [`KeyStore::import_issuer`].
    pub fn generate(&mut self, role: KeyRole, alg: Alg, now: i64) -> Result<String, KeyStoreError> {
        if role != KeyRole::Gateway {
            return Err(KeyStoreError::WrongRole(role));
        }
        let kid = self.fresh_kid("gw", now);
        let key = SigningKey::generate(alg, &kid)?;
        let status = if self.active_gateway_keys().next().is_some() {
            KeyStatus::Next
        } else {
            KeyStatus::Active
        };
        self.push(StoredKey {
            kid: kid.clone(),
            status,
            nbf: now,
            retire_after: None,
            revoked_at: None,
            material: KeyMaterial::Gateway(key),
        })?;
        Ok(kid)
    }

    /// Generates a credit-bank signing key (dev federations): the store keeps
    /// the public half as an `active` issuer key, the caller gets the private
    /// key to hand to the credit bank.
    pub fn generate_issuer(&mut self, alg: Alg, now: i64) -> Result<SigningKey, KeyStoreError> {
        let kid = self.fresh_kid("cb", now);
        let key = SigningKey::generate(alg, &kid)?;
        self.import_issuer_with(&key.public_jwk(), KeyStatus::Active, now)?;
        Ok(key)
    }

    /// Imports a credit-bank public key as an `active` issuer key.
    pub fn import_issuer(&mut self, jwk: &Map<String, Value>, now: i64) -> Result<String, KeyStoreError> {
        self.import_issuer_with(jwk, KeyStatus::Active, now)
    }

    /// Imports a credit-bank public key with an explicit initial status
    /// (`next` or `active`). A JWK without `kid` gets a fresh one.
    pub fn import_issuer_with(
        &mut self,
        jwk: &Map<String, Value>,
        status: KeyStatus,
        now: i64,
    ) -> Result<String, KeyStoreError> {
        if !matches!(status, KeyStatus::Next | KeyStatus::Active) {
            return Err(KeyStoreError::Invalid(
                "imported keys start as next or active".into(),
            ));
        }
        let mut jwk = jwk.clone();
        let kid = match jwk.get("kid").and_then(Value::as_str) {
            Some(k) => k.to_owned(),
            None => {
                let k = self.fresh_kid("cb", now);
                jwk.insert("kid".into(), k.clone().into());
                k
            }
        };
        let key = VerifyingKey::from_jwk(&jwk)?;
        self.push(StoredKey {
            kid: kid.clone(),
            status,
            nbf: now,
            retire_after: None,
            revoked_at: None,
            material: KeyMaterial::Issuer(key),
        })?;
        Ok(kid)
    }

    /// Makes `kid` (status `next`) active. For a gateway key the previously
    /// active gateway key becomes `retiring` until `now + retire_window`.
    pub fn promote(&mut self, kid: &str, now: i64, retire_window_secs: i64) -> Result<(), KeyStoreError> {
        let idx = self.index(kid)?;
        let key = &self.keys[idx];
        if key.status != KeyStatus::Next {
            return Err(KeyStoreError::InvalidTransition {
                kid: kid.to_owned(),
                status: key.status,
                op: "promote",
            });
        }
        if key.material.role() == KeyRole::Gateway {
            let retire_after = now.saturating_add(retire_window_secs);
            for k in self.keys.iter_mut() {
                if k.material.role() == KeyRole::Gateway && k.status == KeyStatus::Active {
                    k.status = KeyStatus::Retiring;
                    k.retire_after = Some(retire_after);
                }
            }
        }
        self.keys[idx].status = KeyStatus::Active;
        Ok(())
    }

    /// The newest `next` gateway key, the one `rotate` promotes.
    pub fn next_gateway_kid(&self) -> Option<&str> {
        self.keys
            .iter()
            .rev()
            .find(|k| k.material.role() == KeyRole::Gateway && k.status == KeyStatus::Next)
            .map(|k| k.kid.as_str())
    }

    /// Moves `kid` (next or active) to `retiring` until `retire_after`.
    /// Refuses to retire the only active gateway key.
    pub fn retire(&mut self, kid: &str, retire_after: i64) -> Result<(), KeyStoreError> {
        let idx = self.index(kid)?;
        let key = &self.keys[idx];
        match key.status {
            KeyStatus::Next => {}
            KeyStatus::Active if key.material.role() == KeyRole::Gateway => {
                return Err(KeyStoreError::LastActiveKey(kid.to_owned()))
            }
            KeyStatus::Active => {}
            status => {
                return Err(KeyStoreError::InvalidTransition {
                    kid: kid.to_owned(),
                    status,
                    op: "retire",
                })
            }
        }
        let key = &mut self.keys[idx];
        key.status = KeyStatus::Retiring;
        key.retire_after = Some(retire_after);
        Ok(())
    }

    /// Revokes `kid` for good, as of `at` (Unix seconds; published as
    /// `revoked_at`). Revoking the active gateway key is allowed
    /// (compromise): the gateway then refuses to sign until a successor is
    /// promoted, which fails closed. Revoking again keeps the first time:
    /// `revoked_at` only ever moves earlier, never later.
    pub fn revoke(&mut self, kid: &str, at: i64) -> Result<(), KeyStoreError> {
        let idx = self.index(kid)?;
        let key = &mut self.keys[idx];
        key.status = KeyStatus::Revoked;
        key.revoked_at = Some(key.revoked_at.map_or(at, |t| t.min(at)));
        Ok(())
    }

    /// Every revoked key with its `revoked_at` (the distant past if it was
    /// revoked before `revoked_at` was recorded).
    pub fn revocations(&self) -> std::collections::HashMap<String, i64> {
        self.keys
            .iter()
            .filter(|k| k.status == KeyStatus::Revoked)
            .map(|k| (k.kid.clone(), k.revoked_at.unwrap_or(i64::MIN)))
            .collect()
    }

    /// The gateway key to sign translations with.
    pub fn active_gateway_key(&self) -> Result<&SigningKey, KeyStoreError> {
        self.active_gateway_keys()
            .next()
            .ok_or(KeyStoreError::NoActiveGatewayKey)
    }

    /// The key set as it would be published at `now` with lifetime `ttl`.
    pub fn keyset(&self, now: i64, ttl_secs: i64) -> KeySet {
        KeySet {
            iss: self.member.clone(),
            iat: now,
            exp: now.saturating_add(ttl_secs.max(1)),
            seq: self.seq,
            keys: self.keys.iter().map(StoredKey::trust_key).collect(),
        }
    }

    /// Bumps `seq` and signs the key set. `seq` becomes
    /// `max(seq + 1, now)`: a counter that is also never behind the clock,
    /// so a publisher that lost its counter (restart, restored backup) still
    /// never goes backwards. The caller must [`KeyStore::save`] before
    /// serving the result.
    pub fn publish(&mut self, fed: &SigningKey, now: i64, ttl_secs: i64) -> Result<String, KeyStoreError> {
        self.seq = next_seq(self.seq, now);
        Ok(self.keyset(now, ttl_secs).sign(fed)?)
    }

    fn active_gateway_keys(&self) -> impl Iterator<Item = &SigningKey> {
        self.keys.iter().filter_map(|k| match (&k.material, k.status) {
            (KeyMaterial::Gateway(s), KeyStatus::Active) => Some(s),
            _ => None,
        })
    }

    fn index(&self, kid: &str) -> Result<usize, KeyStoreError> {
        self.keys
            .iter()
            .position(|k| k.kid == kid)
            .ok_or_else(|| KeyStoreError::UnknownKid(kid.to_owned()))
    }

    fn push(&mut self, key: StoredKey) -> Result<(), KeyStoreError> {
        if self.keys.iter().any(|k| k.kid == key.kid) {
            return Err(KeyStoreError::DuplicateKid(key.kid));
        }
        self.keys.push(key);
        Ok(())
    }

    /// `<member>-<tag>-<yyyymmdd>-<6 hex>`: sortable, unique, and naming the
    /// member so a kid in a log line says whose it is.
    fn fresh_kid(&self, tag: &str, now: i64) -> String {
        let date = time::OffsetDateTime::from_unix_timestamp(now)
            .map(|t| format!("{:04}{:02}{:02}", t.year(), u8::from(t.month()), t.day()))
            .unwrap_or_else(|_| "00000000".into());
        let taken: HashSet<&str> = self.keys.iter().map(|k| k.kid.as_str()).collect();
        loop {
            let kid = format!(
                "{}-{tag}-{date}-{:06x}",
                self.member,
                rand::random::<u32>() & 0xff_ffff
            );
            if !taken.contains(kid.as_str()) {
                return kid;
            }
        }
    }
}

/// The publication counter rule shared by the CLI and [`super::LocalKeys`].
pub fn next_seq(previous: u64, now: i64) -> u64 {
    previous.saturating_add(1).max(u64::try_from(now).unwrap_or(0))
}
