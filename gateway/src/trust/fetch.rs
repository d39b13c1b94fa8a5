//! The seam through which the trust cache obtains a member's key set.
//!
//! Production implements it over mTLS (`GET /v1/federation/keys`) for peers
//! and with [`super::LocalKeys`] for the gateway's own member; tests inject
//! fakes that count calls or fail on purpose. The fetcher only transports
//! bytes: verification is the cache's job.

use futures::future::BoxFuture;
use std::collections::HashMap;
use std::sync::RwLock;

/// Why a key set could not be obtained.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    #[error("key set of {member} unreachable: {reason}")]
    Unreachable { member: String, reason: String },
    #[error("no key set source for member {0}")]
    UnknownMember(String),
}

impl FetchError {
    pub fn unreachable(member: &str, reason: impl Into<String>) -> Self {
        FetchError::Unreachable {
            member: member.to_owned(),
            reason: reason.into(),
        }
    }
}

/// Returns the compact key-set JWS currently published by `member`.
pub trait KeySetFetcher: Send + Sync {
    fn fetch<'a>(&'a self, member: &'a str) -> BoxFuture<'a, Result<String, FetchError>>;
}

/// A fetcher serving fixed JWS strings (CLI `--keyset`, tests).
#[derive(Debug, Default)]
pub struct StaticFetcher {
    sets: RwLock<HashMap<String, String>>,
}

impl StaticFetcher {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets (or replaces) the JWS served for `member`.
    pub fn put(&self, member: &str, jws: String) {
        let mut sets = self
            .sets
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        sets.insert(member.to_owned(), jws);
    }
}

impl KeySetFetcher for StaticFetcher {
    fn fetch<'a>(&'a self, member: &'a str) -> BoxFuture<'a, Result<String, FetchError>> {
        let sets = self
            .sets
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let r = sets
            .get(member)
            .cloned()
            .ok_or_else(|| FetchError::UnknownMember(member.to_owned()));
        Box::pin(async move { r })
    }
}

/// Routes each member to its own fetcher (the gateway's own member to
/// [`super::LocalKeys`], peers to the mTLS client), with an optional
/// fallback for members without a route.
#[derive(Default)]
pub struct MemberRouter {
    routes: HashMap<String, std::sync::Arc<dyn KeySetFetcher>>,
    fallback: Option<std::sync::Arc<dyn KeySetFetcher>>,
}

impl MemberRouter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Fetches `member`'s set through `fetcher`.
    pub fn route(mut self, member: &str, fetcher: std::sync::Arc<dyn KeySetFetcher>) -> Self {
        self.routes.insert(member.to_owned(), fetcher);
        self
    }

    /// Fetches every other member's set through `fetcher`.
    pub fn fallback(mut self, fetcher: std::sync::Arc<dyn KeySetFetcher>) -> Self {
        self.fallback = Some(fetcher);
        self
    }
}

impl KeySetFetcher for MemberRouter {
    fn fetch<'a>(&'a self, member: &'a str) -> BoxFuture<'a, Result<String, FetchError>> {
        match self.routes.get(member).or(self.fallback.as_ref()) {
            Some(f) => f.fetch(member),
            None => Box::pin(async move { Err(FetchError::UnknownMember(member.to_owned())) }),
        }
    }
}
