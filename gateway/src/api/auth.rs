//! Per-route authorisation by client identity.

use super::routes::Access;
use crate::problem::{Problem, ProblemType};
use crate::transport::{ClientIdentity, Role};

/// Whether `who` may use a route with `access` on the gateway of `local_member`.
pub fn authorize(access: Access, who: &ClientIdentity, local_member: &str) -> Result<(), Problem> {
    let own = who.member == local_member;
    let allowed = match access {
        Access::OwnCreditBank => own && who.role == Role::CreditBank,
        Access::OwnOperator => own && who.role == Role::Operator,
        Access::PeerGateway => !own && who.role == Role::Gateway,
        Access::Authenticated => true,
    };
    if allowed {
        Ok(())
    } else {
        Err(Problem::new(
            ProblemType::ForbiddenRole,
            format!("{who} may not call this endpoint of the {local_member} gateway"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_checked_against_the_local_member() {
        let cq_bank = ClientIdentity::new("cq", Role::CreditBank);
        let sc_gw = ClientIdentity::new("sc", Role::Gateway);
        let cq_gw = ClientIdentity::new("cq", Role::Gateway);
        let cq_op = ClientIdentity::new("cq", Role::Operator);
        assert!(authorize(Access::OwnCreditBank, &cq_bank, "cq").is_ok());
        assert!(authorize(Access::OwnCreditBank, &cq_bank, "sc").is_err());
        assert!(authorize(Access::PeerGateway, &sc_gw, "cq").is_ok());
        assert!(authorize(Access::PeerGateway, &cq_gw, "cq").is_err());
        assert!(authorize(Access::PeerGateway, &cq_bank, "sc").is_err());
        assert!(authorize(Access::OwnOperator, &cq_op, "cq").is_ok());
        assert!(authorize(Access::OwnOperator, &cq_op, "sc").is_err());
        assert!(authorize(Access::OwnOperator, &cq_bank, "cq").is_err());
        assert!(authorize(Access::Authenticated, &sc_gw, "cq").is_ok());
    }
}
