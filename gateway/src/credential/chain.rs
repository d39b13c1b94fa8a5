//! Chains `[original, interchange, home, …]`: every link verifies on its
//! own, and every translation names its predecessor by id and by the
//! SHA-256 of its exact JWS bytes.

use super::{recompute, CredentialError, VerifiedCredential, Verifier};
use crate::trust::KeyRole;
use std::collections::HashSet;

/// Longest accepted chain. SPEC §3 chains have three links; the bound keeps
/// a hostile envelope from making us verify without end.
pub const MAX_CHAIN_LEN: usize = 8;

/// A chain whose links all verified and link up.
#[derive(Debug, Clone)]
pub struct VerifiedChain {
    links: Vec<VerifiedCredential>,
}

impl VerifiedChain {
    pub fn links(&self) -> &[VerifiedCredential] {
        &self.links
    }

    /// The original credential issued by a credit bank.
    pub fn original(&self) -> &VerifiedCredential {
        &self.links[0]
    }

    /// The newest link.
    pub fn last(&self) -> &VerifiedCredential {
        &self.links[self.links.len() - 1]
    }

    pub fn len(&self) -> usize {
        self.links.len()
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    pub fn into_links(self) -> Vec<VerifiedCredential> {
        self.links
    }
}

impl Verifier {
    /// Verifies `chain` link by link. The original must be a credit-bank
    /// credential; every later link a gateway translation whose evidence
    /// names the previous link's id and digest and a mapping table, and
    /// whose record equals the translation recomputed from the previous
    /// link with that table; the first translation is signed by the origin
    /// member's gateway; the learner id never changes; no credential appears
    /// twice. An original signed by a key revoked (or retired) since is
    /// accepted only if the interchange attests it was verified before.
    pub async fn verify_chain(&self, chain: &[String]) -> Result<VerifiedChain, CredentialError> {
        let broken = |index: usize, reason: &str| CredentialError::ChainBroken {
            index,
            reason: reason.to_owned(),
        };
        let in_link = |index: usize| {
            move |e: CredentialError| CredentialError::ChainLink {
                index,
                source: Box::new(e),
            }
        };
        if chain.is_empty() {
            return Err(broken(0, "empty chain"));
        }
        if chain.len() > MAX_CHAIN_LEN {
            return Err(broken(MAX_CHAIN_LEN, "chain too long"));
        }
        let mut links: Vec<VerifiedCredential> = Vec::with_capacity(chain.len());
        let mut superseded = None;
        let mut ids = HashSet::new();
        for (index, jws) in chain.iter().enumerate() {
            let link = if index == 0 {
                let (link, s) = self.verify_allowing_superseded(jws).await.map_err(in_link(0))?;
                superseded = s;
                link
            } else {
                self.verify(jws).await.map_err(in_link(index))?
            };
            if !ids.insert(link.id().to_owned()) {
                return Err(broken(index, "credential id repeated in the chain"));
            }
            match links.last() {
                None => {
                    if link.is_translation() || link.issuer().role() != KeyRole::Issuer {
                        return Err(broken(index, "the first link must be a credit-bank credential"));
                    }
                }
                Some(prev) => {
                    check_link(index, prev, &link, &links[0])?;
                    recompute::check(index, prev, &link, self.tables())?;
                }
            }
            links.push(link);
        }
        if let Some(s) = superseded {
            // The interchange is the origin gateway's signed attestation of
            // when it verified the original (SPEC §2).
            let attested = links
                .get(1)
                .and_then(VerifiedCredential::evidence)
                .and_then(|e| e.verified_at);
            let verified_before = matches!(attested, Some(t) if t < s.since);
            if !verified_before {
                return Err(in_link(0)(s.into_error(links[0].issuer())));
            }
        }
        Ok(VerifiedChain { links })
    }
}

fn check_link(
    index: usize,
    prev: &VerifiedCredential,
    link: &VerifiedCredential,
    original: &VerifiedCredential,
) -> Result<(), CredentialError> {
    let broken = |reason: &str| CredentialError::ChainBroken {
        index,
        reason: reason.to_owned(),
    };
    let Some(ev) = link.evidence() else {
        return Err(broken("a later link must be a translation credential"));
    };
    if ev.predecessor_id != prev.id() {
        return Err(broken("evidence names a different predecessor id"));
    }
    if ev.predecessor_sha256 != prev.digest() {
        return Err(broken(
            "evidence digest does not match the predecessor's JWS bytes",
        ));
    }
    if index == 1 && link.issuer().member() != original.issuer().member() {
        return Err(broken(
            "the interchange must be signed by the origin member's gateway",
        ));
    }
    if link.subject().get("id") != prev.subject().get("id") {
        return Err(broken("learner id changed along the chain"));
    }
    Ok(())
}
