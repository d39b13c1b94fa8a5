//! Server-certificate check for outbound connections to peer gateways.
//!
//! Chaining to the federation CA is not enough: every credit bank and
//! operator certificate chains there too. A gateway only hands an envelope
//! (or trusts a key set) to the one identity it meant to reach,
//! `spiffe://bashu.federation/<peer>/gateway`, so a federation member that
//! captures a peer's address still cannot pose as that peer.

use super::ClientIdentity;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use std::sync::Arc;

/// WebPKI verification, then the end entity's SPIFFE id must equal `expected`.
#[derive(Debug)]
pub(super) struct ExpectedPeer {
    inner: Arc<WebPkiServerVerifier>,
    expected: ClientIdentity,
}

impl ExpectedPeer {
    pub(super) fn new(inner: Arc<WebPkiServerVerifier>, expected: ClientIdentity) -> Self {
        Self { inner, expected }
    }
}

impl ServerCertVerifier for ExpectedPeer {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verified =
            self.inner
                .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)?;
        match ClientIdentity::from_certificate(end_entity.as_ref()) {
            Ok(found) if found == self.expected => Ok(verified),
            Ok(found) => Err(rustls::Error::General(format!(
                "peer presented {} where {} was expected",
                found.spiffe_uri(),
                self.expected.spiffe_uri()
            ))),
            Err(e) => Err(rustls::Error::General(format!(
                "peer certificate has no bashu identity: {e}"
            ))),
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
}
