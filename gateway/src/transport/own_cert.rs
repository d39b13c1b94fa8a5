//! The gateway's own certificate must be the gateway's identity.
//!
//! A gateway serves its peers and its credit bank with this certificate and
//! presents it as a client to peers, who accept only
//! `spiffe://bashu.federation/<member>/gateway` (see `peer_identity`). A
//! certificate with another identity, or without both the serverAuth and
//! clientAuth EKUs, would start fine and then fail every exchange; it is
//! refused when loaded instead, at start and on reload (where the previous
//! certificate stays in force).

use super::client_eku::{ekus, Ekus};
use super::{ClientIdentity, Role, TlsError};
use rustls_pki_types::CertificateDer;
use std::path::Path;

/// Checks the leaf of `chain` (read from `path`) is `member`'s gateway
/// certificate with the serverAuth and clientAuth EKUs.
pub(crate) fn check(path: &Path, chain: &[CertificateDer<'_>], member: &str) -> Result<(), TlsError> {
    let fail = |reason: String| TlsError::OwnCertificate {
        path: path.to_owned(),
        reason,
    };
    let leaf = chain.first().ok_or_else(|| fail("no certificate".into()))?;
    let expected = ClientIdentity::new(member, Role::Gateway);
    match ClientIdentity::from_certificate(leaf.as_ref()) {
        Ok(found) if found == expected => {}
        Ok(found) => {
            return Err(fail(format!(
                "its identity is {}, this gateway is {}",
                found.spiffe_uri(),
                expected.spiffe_uri()
            )))
        }
        Err(e) => return Err(fail(format!("{e}; {} is required", expected.spiffe_uri()))),
    }
    let Ekus {
        server_auth,
        client_auth,
    } = ekus(leaf.as_ref()).map_err(fail)?;
    let missing: Vec<&str> = [("serverAuth", server_auth), ("clientAuth", client_auth)]
        .into_iter()
        .filter(|(_, present)| !present)
        .map(|(name, _)| name)
        .collect();
    if !missing.is_empty() {
        return Err(fail(format!(
            "extended key usage lacks {} (a gateway needs serverAuth and clientAuth)",
            missing.join(" and ")
        )));
    }
    Ok(())
}
