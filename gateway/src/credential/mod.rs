//! See the crate docs for this module's responsibility.
