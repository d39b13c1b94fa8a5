//! The member ids of the configured peers, shared between the pipeline
//! (which destinations and origins it accepts) and the reload that may
//! change them at run time (SIGHUP).

use std::collections::BTreeSet;
use std::sync::{Arc, PoisonError, RwLock};

/// A set of member ids that can be replaced as a whole; clones share it.
#[derive(Debug, Clone, Default)]
pub struct PeerSet(Arc<RwLock<Arc<BTreeSet<String>>>>);

impl PeerSet {
    pub fn contains(&self, member: &str) -> bool {
        self.snapshot().contains(member)
    }

    /// The current members.
    pub fn snapshot(&self) -> Arc<BTreeSet<String>> {
        self.0.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Replaces the members for every holder of this set.
    pub fn replace(&self, members: BTreeSet<String>) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(members);
    }
}

impl FromIterator<String> for PeerSet {
    fn from_iter<I: IntoIterator<Item = String>>(iter: I) -> Self {
        Self(Arc::new(RwLock::new(Arc::new(iter.into_iter().collect()))))
    }
}
