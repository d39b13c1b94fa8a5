//! Client identity from the SPIFFE URI SAN of a verified certificate.
//!
//! Follows the X.509-SVID rule: a leaf carries exactly one URI SAN, and for
//! Bashu it must be `spiffe://bashu.federation/<member>/<role>`. Anything else
//! (no URI, several URIs, another trust domain, an unknown role) leaves the
//! caller unauthenticated, even though its certificate chained to the CA.

use crate::ids::is_member_id;
use std::fmt;
use std::str::FromStr;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

/// SPIFFE trust domain of the federation.
pub const TRUST_DOMAIN: &str = "bashu.federation";

/// What a client certificate allows its holder to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    CreditBank,
    Gateway,
    Operator,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::CreditBank, Role::Gateway, Role::Operator];

    /// Path segment used in SPIFFE URIs and file names (`credit-bank`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Role::CreditBank => "credit-bank",
            Role::Gateway => "gateway",
            Role::Operator => "operator",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        Role::ALL.into_iter().find(|r| r.as_str() == s).ok_or(())
    }
}

/// The authenticated caller of a connection.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClientIdentity {
    pub member: String,
    pub role: Role,
}

/// Why a certificate does not yield an identity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("no client certificate")]
    NoCertificate,
    #[error("client certificate does not parse: {0}")]
    Unparsable(String),
    #[error("client certificate has no URI SAN")]
    NoUri,
    #[error("client certificate has {0} URI SANs, exactly one is allowed")]
    SeveralUris(usize),
    #[error("URI SAN {uri} is not a bashu SPIFFE id: {reason}")]
    NotBashu { uri: String, reason: &'static str },
}

impl ClientIdentity {
    pub fn new(member: impl Into<String>, role: Role) -> Self {
        Self {
            member: member.into(),
            role,
        }
    }

    /// `spiffe://bashu.federation/<member>/<role>`.
    pub fn spiffe_uri(&self) -> String {
        format!("spiffe://{TRUST_DOMAIN}/{}/{}", self.member, self.role)
    }

    /// Parses a SPIFFE id; strict: no query, fragment, port, extra segments.
    pub fn from_spiffe_uri(uri: &str) -> Result<Self, IdentityError> {
        let fail = |reason| IdentityError::NotBashu {
            uri: crate::jose::plain(uri, 256),
            reason,
        };
        let rest = uri
            .strip_prefix("spiffe://")
            .ok_or_else(|| fail("scheme is not spiffe"))?;
        let path = rest
            .strip_prefix(TRUST_DOMAIN)
            .and_then(|p| p.strip_prefix('/'))
            .ok_or_else(|| fail("trust domain is not bashu.federation"))?;
        let mut segments = path.split('/');
        let (Some(member), Some(role), None) = (segments.next(), segments.next(), segments.next()) else {
            return Err(fail("path must be /<member>/<role>"));
        };
        if !is_member_id(member) {
            return Err(fail("member is not a member id"));
        }
        let role = role.parse().map_err(|()| fail("unknown role"))?;
        Ok(Self::new(member, role))
    }

    /// Identity of a DER leaf certificate that rustls has already verified.
    pub fn from_certificate(der: &[u8]) -> Result<Self, IdentityError> {
        let (_, cert) =
            X509Certificate::from_der(der).map_err(|e| IdentityError::Unparsable(e.to_string()))?;
        let san = cert
            .subject_alternative_name()
            .map_err(|e| IdentityError::Unparsable(e.to_string()))?;
        let uris: Vec<&str> = san
            .iter()
            .flat_map(|ext| ext.value.general_names.iter())
            .filter_map(|name| match name {
                GeneralName::URI(uri) => Some(*uri),
                _ => None,
            })
            .collect();
        match uris.as_slice() {
            [] => Err(IdentityError::NoUri),
            [uri] => Self::from_spiffe_uri(uri),
            many => Err(IdentityError::SeveralUris(many.len())),
        }
    }

    /// Identity of a TLS connection from its verified peer chain (leaf first).
    pub fn from_peer_chain(
        chain: Option<&[rustls_pki_types::CertificateDer<'_>]>,
    ) -> Result<Self, IdentityError> {
        let leaf = chain.and_then(<[_]>::first).ok_or(IdentityError::NoCertificate)?;
        Self::from_certificate(leaf.as_ref())
    }
}

impl fmt::Display for ClientIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.member, self.role)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_exact_spiffe_ids_only() {
        let id = ClientIdentity::from_spiffe_uri("spiffe://bashu.federation/cq/credit-bank").unwrap();
        assert_eq!(id, ClientIdentity::new("cq", Role::CreditBank));
        assert_eq!(id.spiffe_uri(), "spiffe://bashu.federation/cq/credit-bank");
        for bad in [
            "https://bashu.federation/cq/gateway",
            "spiffe://other.federation/cq/gateway",
            "spiffe://bashu.federation.evil/cq/gateway",
            "spiffe://bashu.federation:443/cq/gateway",
            "spiffe://bashu.federation/cq/gateway/extra",
            "spiffe://bashu.federation/cq/",
            "spiffe://bashu.federation/CQ/gateway",
            "spiffe://bashu.federation/cq/admin",
            "spiffe://bashu.federation/cq/gateway?x=1",
            "spiffe://bashu.federation//gateway",
        ] {
            assert!(ClientIdentity::from_spiffe_uri(bad).is_err(), "{bad}");
        }
    }
}
