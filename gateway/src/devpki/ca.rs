//! A throwaway federation CA and the leaf certificates it issues (rcgen).

use super::DevPkiError;
use crate::transport::{ClientIdentity, Role};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyIdMethod, KeyPair, KeyUsagePurpose, RevokedCertParams, SanType,
    SerialNumber,
};
use std::net::{IpAddr, Ipv4Addr};
use time::{Duration, OffsetDateTime};

/// Validity of dev leaf certificates.
const LEAF_DAYS: i64 = 397;
/// Validity of the dev CA.
const CA_DAYS: i64 = 3650;
/// Backdating of `notBefore`, so clocks slightly behind still accept the cert.
const BACKDATE: Duration = Duration::hours(1);

/// A federation CA that issues leaf certificates: a fresh self-signed
/// development CA ([`DevCa::generate`]) or one an operator holds
/// ([`DevCa::from_pem`], used by `bashu pki issue`).
pub struct DevCa {
    cert: rcgen::Certificate,
    key: KeyPair,
    /// Organization put in the subject of issued leaves.
    organization: String,
}

/// Organization of development CAs and their leaves.
const DEV_ORGANIZATION: &str = "Bashu federation (development)";

/// What to put in a leaf certificate.
#[derive(Debug, Clone, Default)]
pub struct LeafSpec {
    pub common_name: String,
    pub uris: Vec<String>,
    pub dns: Vec<String>,
    pub ips: Vec<IpAddr>,
    /// Adds the serverAuth EKU (gateways are servers and clients).
    pub server: bool,
    /// Leaves out the EKU extension entirely (only to test that such a
    /// certificate is refused; every real Bashu certificate names its EKUs).
    pub omit_eku: bool,
}

impl LeafSpec {
    /// The certificate of `member`'s `role`: its SPIFFE URI, and for gateways
    /// the names a loopback peer URL uses (`localhost`, `127.0.0.1`).
    pub fn for_identity(member: &str, role: Role) -> Self {
        let server = role == Role::Gateway;
        Self {
            common_name: format!("{member} {role}"),
            uris: vec![ClientIdentity::new(member, role).spiffe_uri()],
            dns: if server {
                vec!["localhost".into()]
            } else {
                Vec::new()
            },
            ips: if server {
                vec![IpAddr::V4(Ipv4Addr::LOCALHOST)]
            } else {
                Vec::new()
            },
            server,
            omit_eku: false,
        }
    }
}

/// A leaf certificate and its private key, PEM encoded.
#[derive(Clone)]
pub struct IssuedCert {
    pub cert_pem: String,
    pub key_pem: String,
    /// Serial number, big-endian, for CRLs.
    pub serial: Vec<u8>,
}

impl std::fmt::Debug for IssuedCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedCert")
            .field("serial", &self.serial)
            .finish_non_exhaustive()
    }
}

fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] &= 0x7f; // positive INTEGER
    bytes[0] |= 0x01; // and no leading zero byte to strip
    SerialNumber::from_slice(&bytes)
}

/// The DER of the first certificate in `pem`.
fn first_cert_der(pem: &str) -> Result<Vec<u8>, DevPkiError> {
    match rustls_pemfile::certs(&mut pem.as_bytes()).next() {
        Some(Ok(der)) => Ok(der.to_vec()),
        _ => Err(DevPkiError::Certificate(rcgen::Error::CouldNotParseCertificate)),
    }
}

/// The subject organization of `der` (empty if it has none) and whether
/// the certificate's public key is `public_key`.
fn ca_subject_and_key(der: &[u8], public_key: &[u8]) -> Result<(String, bool), DevPkiError> {
    use x509_parser::prelude::{FromDer, X509Certificate};
    let (_, cert) = X509Certificate::from_der(der)
        .map_err(|_| DevPkiError::Certificate(rcgen::Error::CouldNotParseCertificate))?;
    let organization = cert
        .subject()
        .iter_organization()
        .next()
        .and_then(|o| o.as_str().ok())
        .unwrap_or_default()
        .to_owned();
    let matches = cert.public_key().subject_public_key.data.as_ref() == public_key;
    Ok((organization, matches))
}

fn dn(organization: &str, common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    if !organization.is_empty() {
        dn.push(DnType::OrganizationName, organization);
    }
    dn.push(DnType::CommonName, common_name);
    dn
}

impl DevCa {
    /// A fresh P-256 development CA named `common_name`.
    pub fn generate(common_name: &str) -> Result<Self, DevPkiError> {
        Self::generate_in(DEV_ORGANIZATION, common_name)
    }

    /// A fresh P-256 CA `O=<organization>, CN=<common_name>`, valid ten
    /// years, that may sign leaves only (path length 0).
    pub fn generate_in(organization: &str, common_name: &str) -> Result<Self, DevPkiError> {
        let key = KeyPair::generate()?;
        let now = OffsetDateTime::now_utc();
        let mut params = CertificateParams::default();
        params.distinguished_name = dn(organization, common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.serial_number = Some(random_serial());
        params.not_before = now - BACKDATE;
        params.not_after = now + Duration::days(CA_DAYS);
        let cert = params.self_signed(&key)?;
        Ok(Self {
            cert,
            key,
            organization: organization.to_owned(),
        })
    }

    /// An existing CA (`ca.pem` of [`super::init`], or an operator's own
    /// CA: certificate PEM and PKCS#8 key PEM, P-256/P-384/Ed25519/RSA), to
    /// issue more certificates. The issuer name and key identifier of the
    /// leaves are taken from the CA certificate byte for byte (string types
    /// included), so they chain to the original. Refuses a key that is not
    /// the certificate's.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, DevPkiError> {
        let key = KeyPair::from_pem(key_pem)?;
        let der = first_cert_der(cert_pem)?;
        let (organization, matches) = ca_subject_and_key(&der, key.public_key_raw())?;
        if !matches {
            return Err(DevPkiError::CaKeyMismatch);
        }
        let params = CertificateParams::from_ca_cert_der(&der.into())?;
        let cert = params.self_signed(&key)?;
        Ok(Self {
            cert,
            key,
            organization,
        })
    }

    pub fn cert_pem(&self) -> String {
        self.cert.pem()
    }

    pub fn key_pem(&self) -> String {
        self.key.serialize_pem()
    }

    /// Issues a leaf certificate with a fresh P-256 key.
    pub fn issue(&self, spec: &LeafSpec) -> Result<IssuedCert, DevPkiError> {
        let key = KeyPair::generate()?;
        let now = OffsetDateTime::now_utc();
        let serial = random_serial();
        let mut params = CertificateParams::default();
        params.distinguished_name = dn(&self.organization, &spec.common_name);
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        if spec.server {
            params
                .extended_key_usages
                .push(ExtendedKeyUsagePurpose::ServerAuth);
        }
        if spec.omit_eku {
            params.extended_key_usages.clear();
        }
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(serial.clone());
        params.not_before = now - BACKDATE;
        params.not_after = now + Duration::days(LEAF_DAYS);
        for uri in &spec.uris {
            params
                .subject_alt_names
                .push(SanType::URI(uri.as_str().try_into()?));
        }
        for dns in &spec.dns {
            params
                .subject_alt_names
                .push(SanType::DnsName(dns.as_str().try_into()?));
        }
        params
            .subject_alt_names
            .extend(spec.ips.iter().copied().map(SanType::IpAddress));
        let cert = params.signed_by(&key, &self.cert, &self.key)?;
        Ok(IssuedCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            serial: serial.to_bytes(),
        })
    }

    /// Issues the certificate of `member`'s `role`.
    pub fn issue_identity(&self, member: &str, role: Role) -> Result<IssuedCert, DevPkiError> {
        self.issue(&LeafSpec::for_identity(member, role))
    }

    /// A CRL (PEM) revoking `serials`, valid for a week.
    pub fn crl(&self, serials: &[&[u8]]) -> Result<String, DevPkiError> {
        let now = OffsetDateTime::now_utc();
        self.crl_valid(serials, now - BACKDATE, now + Duration::days(7))
    }

    /// A CRL (PEM) revoking `serials` with the given `thisUpdate` and
    /// `nextUpdate` (tests use past and imminent `nextUpdate`s).
    pub fn crl_valid(
        &self,
        serials: &[&[u8]],
        this_update: OffsetDateTime,
        next_update: OffsetDateTime,
    ) -> Result<String, DevPkiError> {
        let now = OffsetDateTime::now_utc();
        let params = CertificateRevocationListParams {
            this_update,
            next_update,
            crl_number: SerialNumber::from(now.unix_timestamp().unsigned_abs()),
            issuing_distribution_point: None,
            revoked_certs: serials
                .iter()
                .map(|s| RevokedCertParams {
                    serial_number: SerialNumber::from_slice(s),
                    revocation_time: this_update,
                    reason_code: None,
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        };
        Ok(params.signed_by(&self.cert, &self.key)?.pem()?)
    }
}
