//! Certificates the suite mints itself: client certificates from a foreign
//! CA (must be refused), and — when the operator hands over the federation
//! CA key — expired or wrong-role certificates the real CA signed. The
//! fault-injection tests also use it to build a whole throwaway PKI.

use crate::client::Identity;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
    SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::path::Path;
use time::{Duration, OffsetDateTime};

/// A certificate authority the suite can issue from.
pub struct CaSigner {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl std::fmt::Debug for CaSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaSigner").finish_non_exhaustive()
    }
}

/// Validity window of a minted certificate.
#[derive(Debug, Clone, Copy)]
pub enum Validity {
    /// Valid from an hour ago for a day.
    Current,
    /// Expired a day ago.
    Expired,
}

/// Subject alternative names of a minted certificate.
#[derive(Debug, Clone, Default)]
pub struct Names {
    pub uris: Vec<String>,
    pub dns: Vec<String>,
    pub ips: Vec<std::net::IpAddr>,
}

impl Names {
    /// A client certificate naming a SPIFFE identity.
    pub fn spiffe(member: &str, role: &str) -> Self {
        Self {
            uris: vec![spiffe_uri(member, role)],
            ..Self::default()
        }
    }
}

/// `spiffe://bashu.federation/<member>/<role>` (SPEC §1).
pub fn spiffe_uri(member: &str, role: &str) -> String {
    format!("spiffe://bashu.federation/{member}/{role}")
}

impl CaSigner {
    /// A brand-new CA nobody trusts (or everybody, in a test double).
    pub fn generate(name: &str) -> Result<Self, String> {
        let key = KeyPair::generate().map_err(|e| e.to_string())?;
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(|e| e.to_string())?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key).map_err(|e| e.to_string())?;
        Ok(Self { cert, key })
    }

    /// The federation CA, from its certificate and private key (PEM).
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Self, String> {
        let read = |p: &Path| std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()));
        let key = KeyPair::from_pem(&read(key_path)?).map_err(|e| format!("{}: {e}", key_path.display()))?;
        let params = CertificateParams::from_ca_cert_pem(&read(cert_path)?)
            .map_err(|e| format!("{}: {e}", cert_path.display()))?;
        // Re-signing the parsed parameters yields an issuer with the same
        // name and key, which is all that issuing from it needs.
        let cert = params.self_signed(&key).map_err(|e| e.to_string())?;
        Ok(Self { cert, key })
    }

    pub fn cert_der(&self) -> CertificateDer<'static> {
        self.cert.der().clone()
    }

    pub fn cert_pem(&self) -> String {
        self.cert.pem()
    }

    /// Issues a leaf certificate for `names` with a fresh P-256 key.
    pub fn issue(&self, names: &Names, validity: Validity) -> Result<Identity, String> {
        let key = KeyPair::generate().map_err(|e| e.to_string())?;
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(|e| e.to_string())?;
        params.distinguished_name.push(
            DnType::CommonName,
            names.uris.first().map_or("bashu-conformance", String::as_str),
        );
        for uri in &names.uris {
            let uri = uri.clone().try_into().map_err(|e: rcgen::Error| e.to_string())?;
            params.subject_alt_names.push(SanType::URI(uri));
        }
        for dns in &names.dns {
            let dns = dns.clone().try_into().map_err(|e: rcgen::Error| e.to_string())?;
            params.subject_alt_names.push(SanType::DnsName(dns));
        }
        params
            .subject_alt_names
            .extend(names.ips.iter().copied().map(SanType::IpAddress));
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ClientAuth,
            ExtendedKeyUsagePurpose::ServerAuth,
        ];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.use_authority_key_identifier_extension = true;
        let now = OffsetDateTime::now_utc();
        (params.not_before, params.not_after) = match validity {
            Validity::Current => (now - Duration::hours(1), now + Duration::days(1)),
            Validity::Expired => (now - Duration::days(3), now - Duration::days(1)),
        };
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .map_err(|e| e.to_string())?;
        Ok(Identity {
            chain: vec![cert.der().clone()],
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        })
    }
}

/// PEM encoding of an identity (certificate chain, PKCS#8 key), for tools
/// that want files.
pub fn identity_pem(identity: &Identity) -> (String, String) {
    use base64::Engine as _;
    let wrap = |label: &str, der: &[u8]| {
        let b64 = base64::engine::general_purpose::STANDARD.encode(der);
        let lines: Vec<&str> = b64
            .as_bytes()
            .chunks(64)
            .filter_map(|c| std::str::from_utf8(c).ok())
            .collect();
        format!(
            "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
            lines.join("\n")
        )
    };
    let certs = identity
        .chain
        .iter()
        .map(|c| wrap("CERTIFICATE", c.as_ref()))
        .collect::<String>();
    let key = wrap("PRIVATE KEY", identity.key.secret_der());
    (certs, key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_certificates_round_trip_through_pem() {
        let ca = CaSigner::generate("test ca").unwrap();
        let id = ca
            .issue(&Names::spiffe("cq", "credit-bank"), Validity::Expired)
            .unwrap();
        let (cert, key) = identity_pem(&id);
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("c.pem"), cert).unwrap();
        std::fs::write(dir.path().join("k.pem"), key).unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.cert_pem()).unwrap();
        let loaded = Identity::load(&dir.path().join("c.pem"), &dir.path().join("k.pem")).unwrap();
        assert_eq!(loaded.chain, id.chain);
        std::fs::write(dir.path().join("ca.key"), ca.key.serialize_pem()).unwrap();
        let again = CaSigner::load(&dir.path().join("ca.pem"), &dir.path().join("ca.key")).unwrap();
        again
            .issue(&Names::spiffe("cq", "operator"), Validity::Current)
            .unwrap();
    }
}
