//! Bashu conformance suite: a catalogue of tests that check a federation
//! gateway against the contract (SPEC §1–§6) through its public surface
//! only — HTTP over mTLS and the signed key set — so it can test any
//! implementation. Tokens, certificates and envelopes are crafted here,
//! never by the gateway under test.
//!
//! - [`catalogue`]: the tests as data (id, title, section, severity, role).
//! - [`suite`]: the test functions, one module per group.
//! - [`setup`], [`context`]: what a run is configured with, and what it
//!   knows once loaded (target, identities, keys, capabilities).
//! - [`client`]: the mTLS HTTP client with deadlines.
//! - [`craft`], [`chain`], [`fixtures`], [`pki`]: crafting tokens, chains,
//!   credentials and certificates.
//! - [`keyset`]: the suite's own key-set and signature checks.
//! - [`runner`], [`report`]: running and reporting (text, JSON, JUnit).
//! - [`cli`], [`devdir`], [`spawn`]: the command line and its setups.

pub mod catalogue;
pub mod chain;
pub mod cleanup;
pub mod cli;
pub mod client;
pub mod context;
pub mod craft;
pub mod devdir;
pub mod fixtures;
pub mod keyset;
pub mod pki;
pub mod preflight;
pub mod report;
pub mod runner;
pub mod setup;
pub mod spawn;
pub mod suite;
