//! The member's signing keys (federation key, key store, issuer key).
//!
//! Written with the trust module's key types once they are available.

use super::layout::DevMember;
use super::DevPkiError;

pub(crate) fn write_member_keys(_member: &DevMember) -> Result<(), DevPkiError> {
    Ok(())
}
