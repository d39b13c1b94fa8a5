//! The member's signing keys: federation key, key store, credit-bank key.

use super::files::write;
use super::layout::DevMember;
use super::DevPkiError;
use crate::jose::{Alg, SigningKey};
use crate::trust::{KeyRole, KeyStore};
use serde_json::Value;

/// Writes, for one member:
/// - `federation.jwk` (Ed25519, private, 0600) and `federation.pub.jwk`, the
///   half every other member pins;
/// - `keys.json`: one active ES256 gateway signing key and the credit bank's
///   public issuer key (active);
/// - `issuer.jwk`: the credit bank's private ES256 signing key (0600).
pub(crate) fn write_member_keys(m: &DevMember) -> Result<(), DevPkiError> {
    let now = unix_now();
    let federation = SigningKey::generate(Alg::EdDsa, &format!("{}-federation-1", m.id))?;
    federation.save_private(&m.federation_key)?;
    let mut public = Value::Object(federation.public_jwk()).to_string();
    public.push('\n');
    write(&m.federation_public_key, public.as_bytes(), false)?;

    let mut store = KeyStore::create(&m.id)?;
    store.generate(KeyRole::Gateway, Alg::Es256, now)?;
    let issuer = store.generate_issuer(Alg::Es256, now)?;
    issuer.save_private(&m.issuer_key)?;
    store.save(&m.keystore)?;
    Ok(())
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
