//! CRL admission: the checks a CRL must pass before the listener uses it, at
//! start and on every reload.
//!
//! rustls/webpki alone parses a CRL when the verifier is built but looks at
//! its signature and `nextUpdate` only during handshakes. So an out-of-date
//! CRL used to be installed (revoked certificates were accepted again, since
//! `nextUpdate` was not enforced), and a CRL signed by a foreign key was
//! installed too (then every client of that CA, the credit bank included,
//! failed the handshake). Here every CRL must:
//! - parse with webpki's parser (the one the handshake uses);
//! - name as issuer a certificate of the CA file (exact DER name match, which
//!   is how webpki picks the CRL for a certificate);
//! - verify with that certificate's key, through the provider's webpki
//!   signature algorithms (exactly what the handshake verifier accepts), the
//!   CA's keyUsage, if present, allowing cRLSign;
//! - carry a `nextUpdate` that has not passed.
//!
//! The `nextUpdate` of every admitted CRL is kept in a [`CrlSet`]. The
//! handshake verifier enforces `nextUpdate` (so a CRL that goes out of date
//! at run time fails closed for the clients of its CA), and the readiness
//! probe reports such a CRL through [`CrlSet::check_current`].

use super::{pem, TlsError};
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;
use rustls_pki_types::{CertificateRevocationListDer, SignatureVerificationAlgorithm};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::revocation_list::CertificateRevocationList;

/// An admitted CRL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrlEntry {
    /// The file it came from.
    pub path: PathBuf,
    /// Issuer distinguished name, as text (for messages).
    pub issuer: String,
    /// `nextUpdate`, Unix seconds.
    pub next_update: i64,
}

/// The CRLs in force in one listener configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CrlSet {
    entries: Vec<CrlEntry>,
}

impl CrlSet {
    pub fn entries(&self) -> &[CrlEntry] {
        &self.entries
    }

    /// `Err` naming every CRL whose `nextUpdate` is at or before `now` (Unix
    /// seconds): the handshake refuses the clients of those CAs (webpki treats
    /// `now >= nextUpdate` as expired; so does this).
    pub fn check_current(&self, now: i64) -> Result<(), String> {
        let stale: Vec<String> = self
            .entries
            .iter()
            .filter(|e| e.next_update <= now)
            .map(|e| {
                format!(
                    "CRL {} of {} passed its nextUpdate {}; client certificates from that CA are refused until a current CRL is installed",
                    e.path.display(),
                    e.issuer,
                    unix_to_rfc3339(e.next_update)
                )
            })
            .collect();
        if stale.is_empty() {
            Ok(())
        } else {
            Err(stale.join("; "))
        }
    }
}

/// A certificate of the CA file, as far as CRL checks need it.
struct Ca {
    subject: Vec<u8>,
    spki: Vec<u8>,
    may_sign_crls: bool,
}

fn parse_cas(ca_path: &Path) -> Result<Vec<Ca>, TlsError> {
    let mut out = Vec::new();
    for der in pem::load_certs(ca_path)? {
        // load_roots has accepted the file already; a certificate that
        // x509-parser cannot read simply cannot issue an admitted CRL.
        let Ok((_, cert)) = X509Certificate::from_der(der.as_ref()) else {
            continue;
        };
        let may_sign_crls = match cert.key_usage() {
            Ok(Some(ku)) => ku.value.crl_sign(),
            Ok(None) => true,
            Err(_) => false,
        };
        out.push(Ca {
            subject: cert.subject().as_raw().to_vec(),
            spki: cert.public_key().raw.to_vec(),
            may_sign_crls,
        });
    }
    Ok(out)
}

/// Loads the CRL files and admits each CRL (see the module docs) at `now`
/// (Unix seconds). Returns the CRLs for the verifier and what is in force.
pub(crate) fn load(
    ca_path: &Path,
    roots: &Arc<RootCertStore>,
    crl_paths: &[PathBuf],
    provider: &Arc<CryptoProvider>,
    now: i64,
) -> Result<(Vec<CertificateRevocationListDer<'static>>, CrlSet), TlsError> {
    if crl_paths.is_empty() {
        return Ok((Vec::new(), CrlSet::default()));
    }
    let cas = parse_cas(ca_path)?;
    let algs = provider.signature_verification_algorithms.all;
    let mut all = Vec::new();
    let mut set = CrlSet::default();
    for path in crl_paths {
        let crls = pem::load_crls(std::slice::from_ref(path))?;
        // webpki's own parse, per file so the error names the file.
        WebPkiClientVerifier::builder_with_provider(Arc::clone(roots), Arc::clone(provider))
            .with_crls(crls.iter().cloned())
            .build()
            .map_err(|e| TlsError::CrlInvalid {
                path: path.clone(),
                reason: e.to_string(),
            })?;
        for crl in &crls {
            set.entries
                .push(admit(path, ca_path, crl.as_ref(), &cas, algs, now)?);
        }
        all.extend(crls);
    }
    Ok((all, set))
}

fn admit(
    path: &Path,
    ca_path: &Path,
    der: &[u8],
    cas: &[Ca],
    algs: &[&dyn SignatureVerificationAlgorithm],
    now: i64,
) -> Result<CrlEntry, TlsError> {
    let (_, crl) = CertificateRevocationList::from_der(der).map_err(|e| TlsError::CrlInvalid {
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    let issuer_raw = crl.issuer().as_raw();
    let issuer = crl.issuer().to_string();
    let candidates: Vec<&Ca> = cas.iter().filter(|ca| ca.subject == issuer_raw).collect();
    if candidates.is_empty() {
        return Err(TlsError::CrlUnknownIssuer {
            path: path.to_owned(),
            issuer,
            ca: ca_path.to_owned(),
        });
    }
    // Several CA certificates may share a name (a CA key rollover): one of
    // them must have signed the CRL.
    let mut failure = String::new();
    let signed = candidates.iter().any(|ca| {
        let outcome = if ca.may_sign_crls {
            verify_signed_data(der, &ca.spki, algs)
        } else {
            Err("the CA certificate's keyUsage does not allow cRLSign".to_owned())
        };
        outcome.map_err(|reason| failure = reason).is_ok()
    });
    if !signed {
        return Err(TlsError::CrlSignature {
            path: path.to_owned(),
            issuer,
            reason: failure,
        });
    }
    let Some(next_update) = crl.next_update().map(|t| t.timestamp()) else {
        return Err(TlsError::CrlNoNextUpdate {
            path: path.to_owned(),
            issuer,
        });
    };
    if next_update <= now {
        return Err(TlsError::CrlExpired {
            path: path.to_owned(),
            issuer,
            next_update: unix_to_rfc3339(next_update),
        });
    }
    Ok(CrlEntry {
        path: path.to_owned(),
        issuer,
        next_update,
    })
}

const SEQUENCE: u8 = 0x30;
const BIT_STRING: u8 = 0x03;

/// One DER element.
#[derive(Clone, Copy)]
struct Tlv<'a> {
    tag: u8,
    contents: &'a [u8],
    /// Tag, length and contents: what a signature covers.
    whole: &'a [u8],
}

/// The DER element at the start of `input`, and what follows it. Low tag
/// numbers and lengths up to 4 bytes only (all a CRL needs).
fn tlv(input: &[u8]) -> Option<(Tlv<'_>, &[u8])> {
    let (&tag, rest) = input.split_first()?;
    if tag & 0x1f == 0x1f {
        return None;
    }
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 {
            return None;
        }
        let bytes = rest.get(..n)?;
        let len = bytes.iter().fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, rest.get(n..)?)
    };
    let header = input.len() - rest.len();
    let element = Tlv {
        tag,
        contents: rest.get(..len)?,
        whole: input.get(..header.checked_add(len)?)?,
    };
    Some((element, rest.get(len..)?))
}

/// The elements of a DER SEQUENCE that spans all of `der` (at most `max`).
fn sequence(der: &[u8], max: usize) -> Option<Vec<Tlv<'_>>> {
    let (outer, rest) = tlv(der)?;
    if outer.tag != SEQUENCE || !rest.is_empty() {
        return None;
    }
    let mut items = Vec::new();
    let mut input = outer.contents;
    while !input.is_empty() {
        if items.len() == max {
            return None;
        }
        let (item, r) = tlv(input)?;
        items.push(item);
        input = r;
    }
    Some(items)
}

/// A BIT STRING's bytes; only whole bytes (no unused bits) are meaningful
/// for keys and signatures.
fn bit_string_bytes(contents: &[u8]) -> Option<&[u8]> {
    match contents.split_first()? {
        (0, bytes) => Some(bytes),
        _ => None,
    }
}

/// Verifies a signed X.509 structure (`SEQUENCE { tbs, signatureAlgorithm,
/// signatureValue }`, here a CRL) with the key of a SubjectPublicKeyInfo,
/// choosing the algorithm as webpki does: the signature's and the key's
/// AlgorithmIdentifier must both match one algorithm of `algs`.
fn verify_signed_data(
    signed: &[u8],
    spki: &[u8],
    algs: &[&dyn SignatureVerificationAlgorithm],
) -> Result<(), String> {
    let items = sequence(signed, 3).ok_or("not a DER-encoded signed structure")?;
    let [tbs, sig_alg, sig_bits] = items.as_slice() else {
        return Err("not a DER-encoded signed structure".into());
    };
    if (sig_alg.tag, sig_bits.tag) != (SEQUENCE, BIT_STRING) {
        return Err("not a DER-encoded signed structure".into());
    }
    let (tbs, sig_alg) = (tbs.whole, sig_alg.contents);
    let signature = bit_string_bytes(sig_bits.contents).ok_or("malformed signature value")?;
    let key_items = sequence(spki, 2).ok_or("CA public key does not parse")?;
    let [key_alg, key_bits] = key_items.as_slice() else {
        return Err("CA public key does not parse".into());
    };
    if (key_alg.tag, key_bits.tag) != (SEQUENCE, BIT_STRING) {
        return Err("CA public key does not parse".into());
    }
    let key_alg = key_alg.contents;
    let public_key = bit_string_bytes(key_bits.contents).ok_or("CA public key does not parse")?;
    let mut usable = algs.iter().filter(|alg| {
        alg.signature_alg_id().as_ref() == sig_alg && alg.public_key_alg_id().as_ref() == key_alg
    });
    let Some(first) = usable.next() else {
        return Err("signature algorithm unsupported or not matching the CA key".into());
    };
    // Some algorithm identifiers map to several implementations (key sizes).
    if std::iter::once(first)
        .chain(usable)
        .any(|alg| alg.verify_signature(public_key, tbs, signature).is_ok())
    {
        Ok(())
    } else {
        Err("signature is invalid for the CA key (signed by another key?)".into())
    }
}

fn unix_to_rfc3339(secs: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| format!("@{secs}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devpki::DevCa;

    fn der_of(pem_text: &str) -> Vec<u8> {
        rustls_pemfile::crls(&mut pem_text.as_bytes())
            .next()
            .unwrap()
            .unwrap()
            .to_vec()
    }

    fn spki_of(ca: &DevCa) -> Vec<u8> {
        let pem_text = ca.cert_pem();
        let der = rustls_pemfile::certs(&mut pem_text.as_bytes())
            .next()
            .unwrap()
            .unwrap();
        let (_, cert) = X509Certificate::from_der(der.as_ref()).unwrap();
        cert.public_key().raw.to_vec()
    }

    #[test]
    fn crl_signature_verifies_only_with_the_issuing_key() {
        let algs = super::super::provider().signature_verification_algorithms.all;
        let ca = DevCa::generate("unit CA").unwrap();
        let other = DevCa::generate("unit CA").unwrap();
        let crl = der_of(&ca.crl(&[&[1, 2, 3]]).unwrap());
        assert_eq!(verify_signed_data(&crl, &spki_of(&ca), algs), Ok(()));
        let err = verify_signed_data(&crl, &spki_of(&other), algs).unwrap_err();
        assert!(err.contains("invalid"), "{err}");
        // One flipped bit in the signed part.
        let mut tampered = crl.clone();
        let at = tampered.len() / 3;
        tampered[at] ^= 0x01;
        assert!(verify_signed_data(&tampered, &spki_of(&ca), algs).is_err());
        // Truncated input is an error, never a panic.
        for cut in [0, 1, 2, 10, crl.len() - 1] {
            assert!(verify_signed_data(&crl[..cut], &spki_of(&ca), algs).is_err());
        }
    }

    #[test]
    fn stale_crls_are_named_at_the_boundary() {
        let set = CrlSet {
            entries: vec![CrlEntry {
                path: "/etc/bashu/ca.crl".into(),
                issuer: "CN=unit CA".into(),
                next_update: 1_000,
            }],
        };
        assert_eq!(set.check_current(999), Ok(()));
        let err = set.check_current(1_000).unwrap_err();
        assert!(
            err.contains("/etc/bashu/ca.crl") && err.contains("CN=unit CA"),
            "{err}"
        );
        assert!(err.contains("1970-01-01T00:16:40Z"), "{err}");
    }
}
