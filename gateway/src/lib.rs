//! Bashu: the Chengdu–Chongqing credential federation gateway.
//!
//! Module map (each owns one responsibility; see docs/architecture.md):
//! - [`problem`]: the fixed error catalogue shared by API, CLI and conformance.
//! - [`jose`]: strict compact-JWS parsing, signing keys, signature checks.
//! - [`credential`]: the VC 2.0 credential profile, translation credentials and chains.
//! - [`mapping`]: the mapping tables this gateway holds, by id and version.
//! - [`trust`]: signed trust key sets, the moka trust cache, the operator key store.
//! - [`config`]: gateway configuration, parsed and validated once.
//! - [`transport`]: mTLS server and client, client identity from SPIFFE SAN URIs.
//! - [`api`]: the HTTP routes of SPEC §4 and problem+json rendering.
//! - [`store`]: the durable store trait and its SQLite implementation, audit log.
//! - [`checkpoint`]: signed checkpoints of the audit head, and witnessing peers'.
//! - [`delivery`]: the outbox worker that forwards envelopes to peers.
//! - [`pipeline`]: accept → verify → map → sign, and the receiving side.
//! - [`metrics`]: the Prometheus registry (a leaf; `api` serves it on the loopback listener).
//! - [`devpki`]: the development federation written by `bashu dev init`.
//! - [`devpg`]: a throwaway PostgreSQL cluster for tests and demos.
//! - [`cli`]: the `bashu` command line.
//! - [`suggest`]: nearest valid names (edit distance) for error messages.
//! - [`wire`]: the federation wire shapes (envelope, batch, results) of SPEC §4.
//! - [`clock`]: injectable wall-clock time, one for the whole gateway.
//! - [`ids`]: the member-id and exchange-id rules, one home each.

pub mod api;
pub mod app;
pub mod bench;
pub mod checkpoint;
pub mod cli;
pub mod clock;
pub mod config;
pub mod credential;
pub mod delivery;
pub mod devfed;
pub mod devpg;
pub mod devpki;
#[doc(hidden)]
pub mod fuzzing;
pub mod hex;
pub mod ids;
pub mod jose;
pub mod mapping;
pub mod metrics;
pub mod pipeline;
pub mod problem;
pub mod store;
pub mod suggest;
pub mod transport;
pub mod trust;
pub mod wire;
