//! Issuer ids: `urn:bashu:<member>:credit-bank` and `urn:bashu:<member>:gateway`.

use super::CredentialError;
use crate::ids::is_member_id;
use crate::trust::KeyRole;
use std::fmt;
use std::str::FromStr;

const PREFIX: &str = "urn:bashu:";

/// Who issued a credential: a member's credit bank (role `Issuer`) or
/// gateway (role `Gateway`). Only valid member ids can be represented.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IssuerId {
    member: String,
    role: KeyRole,
}

impl IssuerId {
    pub fn new(member: &str, role: KeyRole) -> Result<Self, CredentialError> {
        if !is_member_id(member) {
            return Err(CredentialError::schema(format!(
                "{} is not a member id",
                crate::jose::plain(member, 32)
            )));
        }
        Ok(Self {
            member: member.to_owned(),
            role,
        })
    }

    /// `urn:bashu:<member>:credit-bank`.
    pub fn credit_bank(member: &str) -> Result<Self, CredentialError> {
        Self::new(member, KeyRole::Issuer)
    }

    /// `urn:bashu:<member>:gateway`.
    pub fn gateway(member: &str) -> Result<Self, CredentialError> {
        Self::new(member, KeyRole::Gateway)
    }

    pub fn member(&self) -> &str {
        &self.member
    }

    pub fn role(&self) -> KeyRole {
        self.role
    }
}

impl fmt::Display for IssuerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PREFIX}{}:{}", self.member, self.role.issuer_segment())
    }
}

impl FromStr for IssuerId {
    type Err = CredentialError;

    fn from_str(s: &str) -> Result<Self, CredentialError> {
        let bad = || CredentialError::schema("issuer is not urn:bashu:<member>:credit-bank|gateway");
        let rest = s.strip_prefix(PREFIX).ok_or_else(bad)?;
        let (member, role) = rest.split_once(':').ok_or_else(bad)?;
        let role = match role {
            "credit-bank" => KeyRole::Issuer,
            "gateway" => KeyRole::Gateway,
            _ => return Err(bad()),
        };
        Self::new(member, role).map_err(|_| bad())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        for s in [
            "urn:bashu:cq:credit-bank",
            "urn:bashu:sc:gateway",
            "urn:bashu:gz2:gateway",
        ] {
            assert_eq!(s.parse::<IssuerId>().unwrap().to_string(), s);
        }
        let id: IssuerId = "urn:bashu:cq:credit-bank".parse().unwrap();
        assert_eq!((id.member(), id.role()), ("cq", KeyRole::Issuer));
        for s in [
            "urn:bashu:cq:operator",
            "urn:bashu:CQ:gateway",
            "urn:bashu::gateway",
            "urn:bashu:cq:gateway:x",
            "did:web:cq",
            "",
        ] {
            assert!(s.parse::<IssuerId>().is_err(), "{s}");
        }
    }
}
