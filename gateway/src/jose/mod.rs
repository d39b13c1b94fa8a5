//! Strict compact-JWS handling, independent of what the payload means.
//!
//! Everything an attacker controls passes through [`parse_compact`] first:
//! size limit, canonical base64url, strict JSON (no duplicate members,
//! bounded depth) and the header policy (algorithm allow-list, no `crit`,
//! `b64`, `jku`, `x5u`, `jwk`, `x5c`, a `kid`). Only a [`ParsedJws`] that
//! passed all of that is handed to the signature math (josekit / OpenSSL).

pub mod atomic_file;
pub mod b64;
mod error;
pub mod header;
pub mod json_strict;
mod keys;
mod parse;
mod sign;

pub(crate) use error::plain;
pub use error::{JoseError, Segment};
pub use header::{Header, HeaderPolicy};
pub use keys::{Alg, SigningKey, VerifyingKey};
pub use parse::{parse_compact, ParsedJws, MAX_JWS_BYTES};
pub use sign::sign_compact;
