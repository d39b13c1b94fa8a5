//! Refuses to start with private key files that group or others can read.
//!
//! A private key readable beyond its owner may already have leaked (a
//! backup, a shared account, a container image layer); starting anyway
//! would hide that. The check is on the file the path resolves to, so a
//! secret mounted through a symlink is judged by its real mode.

use crate::config::Config;
use std::path::Path;

/// Mode bits that must be clear on a private key file.
const GROUP_OTHER: u32 = 0o077;

/// A private key file whose mode lets group or others read or write it.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error(
        "{what} {path} has mode {mode:04o}: a private key must not be accessible to group or others \
         (chmod 600 {path})"
    )]
    TooOpen {
        what: &'static str,
        path: String,
        mode: u32,
    },
    #[error("{what} {path}: {source}")]
    Unreadable {
        what: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Checks every private key file the gateway loads: the TLS key, the key
/// store (it holds the gateway signing key) and the federation key when it
/// is a private JWK. Peers' federation keys are public and not checked.
pub fn check_private_key_files(config: &Config) -> Result<(), KeyFileError> {
    check_private_file("TLS key", &config.tls.key)?;
    check_private_file("key store", &config.trust.keystore)?;
    if is_private_jwk(&config.trust.federation_key) {
        check_private_file("federation key", &config.trust.federation_key)?;
    }
    Ok(())
}

/// Refuses `path` if group or others have any access to it (unix only).
pub fn check_private_file(what: &'static str, path: &Path) -> Result<(), KeyFileError> {
    let meta = std::fs::metadata(path).map_err(|source| KeyFileError::Unreadable {
        what,
        path: path.display().to_string(),
        source,
    })?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o7777;
        if mode & GROUP_OTHER != 0 {
            return Err(KeyFileError::TooOpen {
                what,
                path: path.display().to_string(),
                mode,
            });
        }
    }
    #[cfg(not(unix))]
    let _ = (meta, GROUP_OTHER);
    Ok(())
}

/// A JWK with a private part (`d`). Unreadable or unparsable files count as
/// private: the key loader reports their real problem, and checking too
/// much is the safe side.
fn is_private_jwk(path: &Path) -> bool {
    let Ok(bytes) = std::fs::read(path) else {
        return true;
    };
    match serde_json::from_slice::<serde_json::Value>(&bytes) {
        Ok(serde_json::Value::Object(jwk)) => jwk.contains_key("d"),
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn group_or_other_access_is_refused_naming_the_path() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("gateway.key");
        std::fs::write(&key, b"-----BEGIN PRIVATE KEY-----").unwrap();
        for (mode, ok) in [
            (0o600, true),
            (0o400, true),
            (0o640, false),
            (0o644, false),
            (0o604, false),
        ] {
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(mode)).unwrap();
            let result = check_private_file("TLS key", &key);
            assert_eq!(result.is_ok(), ok, "mode {mode:o}: {result:?}");
            if let Err(e) = result {
                let text = e.to_string();
                assert!(text.contains(&key.display().to_string()), "{text}");
                assert!(text.contains(&format!("{mode:04o}")), "{text}");
            }
        }
    }

    #[test]
    fn only_private_jwks_count_as_private() {
        let dir = tempfile::tempdir().unwrap();
        let public = dir.path().join("pub.jwk");
        std::fs::write(&public, br#"{"kty":"OKP","crv":"Ed25519","x":"AA"}"#).unwrap();
        let private = dir.path().join("priv.jwk");
        std::fs::write(&private, br#"{"kty":"OKP","crv":"Ed25519","x":"AA","d":"BB"}"#).unwrap();
        assert!(!is_private_jwk(&public));
        assert!(is_private_jwk(&private));
        assert!(is_private_jwk(&dir.path().join("missing.jwk")));
    }
}
