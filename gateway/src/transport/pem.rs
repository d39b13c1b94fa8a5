//! Loading certificates, keys, CRLs and trust anchors from PEM (or DER) files.

use super::TlsError;
use rustls::RootCertStore;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use std::path::Path;

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Every certificate of a PEM file, leaf first.
pub(crate) fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read(path)?;
    let certs = rustls_pemfile::certs(&mut bytes.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Pem {
            path: path.to_owned(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

/// The first private key (PKCS#8, SEC1 or PKCS#1) of a PEM file.
pub(crate) fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = read(path)?;
    rustls_pemfile::private_key(&mut bytes.as_slice())
        .map_err(|source| TlsError::Pem {
            path: path.to_owned(),
            source,
        })?
        .ok_or_else(|| TlsError::NoPrivateKey {
            path: path.to_owned(),
        })
}

/// CRLs from PEM files (any number of `X509 CRL` blocks) or a single DER CRL.
pub(crate) fn load_crls<P: AsRef<Path>>(
    paths: &[P],
) -> Result<Vec<CertificateRevocationListDer<'static>>, TlsError> {
    let mut out = Vec::new();
    for path in paths {
        let path = path.as_ref();
        let bytes = read(path)?;
        let crls = if bytes.windows(10).any(|w| w == b"-----BEGIN") {
            rustls_pemfile::crls(&mut bytes.as_slice())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|source| TlsError::Pem {
                    path: path.to_owned(),
                    source,
                })?
        } else {
            vec![CertificateRevocationListDer::from(bytes)]
        };
        if crls.is_empty() {
            return Err(TlsError::NoCrl {
                path: path.to_owned(),
            });
        }
        out.extend(crls);
    }
    Ok(out)
}

/// The federation CA bundle as a root store.
pub(crate) fn load_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(path)? {
        roots.add(cert).map_err(|source| TlsError::BadCa {
            path: path.to_owned(),
            source,
        })?;
    }
    Ok(roots)
}

/// Adds the operating system's roots, located the way OpenSSL would
/// (`openssl-probe`). Unparsable entries are skipped: system bundles
/// routinely contain certificates webpki cannot use.
pub(crate) fn add_system_roots(roots: &mut RootCertStore) -> usize {
    let probe = openssl_probe::probe();
    let mut files: Vec<std::path::PathBuf> = probe.cert_file.into_iter().collect();
    if let Some(dir) = probe.cert_dir {
        if let Ok(entries) = std::fs::read_dir(dir) {
            files.extend(entries.flatten().map(|e| e.path()).filter(|p| p.is_file()));
        }
    }
    let mut added = 0;
    for file in files {
        let Ok(bytes) = std::fs::read(&file) else { continue };
        let mut reader = bytes.as_slice();
        let certs = rustls_pemfile::certs(&mut reader).flatten();
        let (ok, _) = roots.add_parsable_certificates(certs);
        added += ok;
    }
    added
}
