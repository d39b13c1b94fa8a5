//! The HTTP API of SPEC §4 over mTLS, HTTP/1.1 and HTTP/2.
//!
//! Connection path ([`connections`] and `server`): admission at `accept`
//! (per-address cap, failed-authentication budget per address, global cap
//! with eviction of connections that never sent a request), the TLS
//! handshake under its own deadline, then the identity: a certificate
//! without a bashu identity, or an identity over its connection cap, is
//! closed without HTTP. First-request and idle deadlines close connections
//! that hold a slot without using it.
//!
//! Request path, in order, each step failing closed with a problem+json:
//! 1. TLS handshake with a client certificate from the federation CA
//!    ([`crate::transport`]); without one there is no HTTP at all.
//! 2. Identity from the certificate's SPIFFE URI, else the connection is
//!    closed (no HTTP).
//! 3. Per-identity token bucket, else `429 rate-limited` with `Retry-After`.
//! 4. Route lookup in [`ROUTES`]: `404 not-found`, or `405` (a
//!    `malformed-request` problem with an `Allow` header) for a known path
//!    with another method.
//! 5. Role check for the route, else `403 forbidden-role`.
//! 6. The handler, under the request deadline (`503 unavailable` when it
//!    expires): strict JSON, bodies limited while reading (`413`), then one
//!    call to the [`GatewayService`](crate::pipeline::GatewayService).
//!
//! Answers given before the body was read (steps 3–5, and `413`) first read
//! and discard it within bounds, so every HTTP/2 client sees them.

mod auth;
mod connections;
mod handlers;
mod ops;
mod ratelimit;
pub(crate) mod request;
pub(crate) mod response;
mod routes;
mod server;

pub use auth::authorize;
pub use ops::{ready_probe, ready_probe_with, serve as serve_ops, ReadyProbe};
pub use ratelimit::{RateLimiter, SourceLimiter};
pub use request::EXCHANGE_STATUSES;
pub use response::JWT_CONTENT_TYPE;
pub use routes::{lookup, Access, Handler, Lookup, Route, ROUTES};
pub use server::serve;
