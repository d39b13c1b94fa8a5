//! Extended key usage checks.
//!
//! webpki accepts a client certificate that carries no EKU extension at all
//! (RFC 5280 reads an absent EKU as "any purpose"). The federation's profile
//! is stricter: a client certificate must name `clientAuth`, so a leaf issued
//! for something else (say a signing-only certificate of the same CA) opens no
//! connection. [`RequireClientAuth`] enforces this at the handshake, after
//! webpki's own verification: no `clientAuth`, no TLS session, no HTTP.

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};
use std::sync::Arc;
use x509_parser::prelude::{FromDer, X509Certificate};

/// The EKUs of a certificate that matter to the federation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Ekus {
    pub server_auth: bool,
    pub client_auth: bool,
}

/// Reads the EKU extension of a DER certificate. An absent extension gives
/// neither purpose (`anyExtendedKeyUsage` does not count either): the
/// federation requires the purposes to be named.
pub(crate) fn ekus(der: &[u8]) -> Result<Ekus, String> {
    let (_, cert) = X509Certificate::from_der(der).map_err(|e| format!("certificate does not parse: {e}"))?;
    match cert.extended_key_usage() {
        Ok(Some(eku)) => Ok(Ekus {
            server_auth: eku.value.server_auth,
            client_auth: eku.value.client_auth,
        }),
        Ok(None) => Ok(Ekus::default()),
        Err(e) => Err(format!("extended key usage does not parse: {e}")),
    }
}

/// A client-certificate verifier that runs `inner` (webpki: chain, validity,
/// CRLs) and then requires the `clientAuth` EKU in the leaf.
#[derive(Debug)]
pub(crate) struct RequireClientAuth {
    inner: Arc<dyn ClientCertVerifier>,
}

impl RequireClientAuth {
    pub(crate) fn new(inner: Arc<dyn ClientCertVerifier>) -> Self {
        Self { inner }
    }
}

impl ClientCertVerifier for RequireClientAuth {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self.inner.verify_client_cert(end_entity, intermediates, now)?;
        match ekus(end_entity.as_ref()) {
            Ok(Ekus {
                client_auth: true, ..
            }) => Ok(verified),
            // The listener logs the handshake failure with this error.
            Ok(_) => Err(rustls::Error::InvalidCertificate(
                CertificateError::InvalidPurpose,
            )),
            Err(reason) => {
                tracing::debug!(%reason, "client certificate refused");
                Err(rustls::Error::InvalidCertificate(CertificateError::BadEncoding))
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }

    fn requires_raw_public_keys(&self) -> bool {
        self.inner.requires_raw_public_keys()
    }
}
