//! `--dev-dir D`: everything a run needs, read from a `bashu dev init`
//! directory (SPEC §8): `D/ca.pem`, and per member `D/<m>/gateway.toml`,
//! `credit-bank.crt|.key`, `operator.crt|.key`, `issuer.jwk`. The target is
//! `--member`; the destination member supplies the peer identity and the
//! inbox the DELIVERY and MAP groups read.

use crate::setup::{DestinationSetup, IdentityFiles, PeerSetup, Setup};
use serde::Deserialize;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum DevDirError {
    #[error("dev dir {path}: {message}")]
    Read { path: PathBuf, message: String },
}

/// The few members of `gateway.toml` the suite reads; everything else is
/// the gateway's business.
#[derive(Debug, Deserialize)]
struct GatewayToml {
    listen: Listen,
    tls: Tls,
    trust: Trust,
}

#[derive(Debug, Deserialize)]
struct Listen {
    api: String,
}

#[derive(Debug, Deserialize)]
struct Tls {
    cert: PathBuf,
    key: PathBuf,
}

#[derive(Debug, Deserialize)]
struct Trust {
    federation_key: PathBuf,
    keystore: PathBuf,
}

/// One member's files in the dev dir.
#[derive(Debug)]
pub struct MemberFiles {
    pub dir: PathBuf,
    pub url: String,
    pub gateway: IdentityFiles,
    pub federation_key: PathBuf,
    pub keystore: PathBuf,
}

impl MemberFiles {
    pub fn load(root: &Path, member: &str) -> Result<Self, DevDirError> {
        let dir = root.join(member);
        let path = dir.join("gateway.toml");
        let err = |message: String| DevDirError::Read {
            path: path.clone(),
            message,
        };
        let text = std::fs::read_to_string(&path).map_err(|e| err(e.to_string()))?;
        let cfg: GatewayToml = toml::from_str(&text).map_err(|e| err(e.to_string()))?;
        let abs = |p: PathBuf| if p.is_relative() { dir.join(p) } else { p };
        Ok(Self {
            url: format!("https://{}", cfg.listen.api),
            gateway: IdentityFiles {
                cert: abs(cfg.tls.cert),
                key: abs(cfg.tls.key),
            },
            federation_key: abs(cfg.trust.federation_key),
            keystore: abs(cfg.trust.keystore),
            dir,
        })
    }

    pub fn credit_bank(&self) -> IdentityFiles {
        IdentityFiles {
            cert: self.dir.join("credit-bank.crt"),
            key: self.dir.join("credit-bank.key"),
        }
    }

    pub fn operator(&self) -> IdentityFiles {
        IdentityFiles {
            cert: self.dir.join("operator.crt"),
            key: self.dir.join("operator.key"),
        }
    }

    pub fn issuer_key(&self) -> PathBuf {
        self.dir.join("issuer.jwk")
    }

    /// Where the gateway's private signing key is: its key store, from
    /// which [`crate::craft::SigningKey::load`] takes the active gateway key.
    pub fn gateway_key(&self) -> Option<PathBuf> {
        self.keystore.exists().then(|| self.keystore.clone())
    }
}

/// The full setup for testing `member`, with `destination` as the peer.
pub fn setup(root: &Path, member: &str, destination: &str) -> Result<Setup, DevDirError> {
    let target = MemberFiles::load(root, member)?;
    let dest = MemberFiles::load(root, destination)?;
    let mut setup = Setup::new(target.url.clone(), root.join("ca.pem"), member, destination);
    setup.credit_bank = Some(target.credit_bank());
    setup.issuer_key = Some(target.issuer_key());
    setup.operator = Some(target.operator());
    setup.federation_key = Some(target.federation_key.clone());
    setup.peer = Some(PeerSetup {
        member: destination.to_owned(),
        identity: dest.gateway.clone(),
        gateway_key: dest.gateway_key(),
        issuer_key: Some(dest.issuer_key()),
    });
    setup.dest = Some(DestinationSetup {
        target: dest.url.clone(),
        identity: dest.credit_bank(),
        federation_key: Some(dest.federation_key.clone()),
    });
    let ca_key = root.join("ca.key");
    setup.ca_key = ca_key.exists().then_some(ca_key);
    Ok(setup)
}
