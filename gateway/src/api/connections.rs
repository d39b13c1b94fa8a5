//! Admission control for API connections: a global cap, a cap per source
//! address and a cap per authenticated identity, so no single client can
//! take the listener.
//!
//! A connection is *pending* from `accept` until its first HTTP request
//! starts (TLS handshake, identity check, waiting for the request). When the
//! global cap is reached, a new connection evicts the oldest pending one
//! instead of waiting: sockets that hold a slot without ever asking for
//! anything (an idle-connection or raw TCP flood) are the first to go, and a
//! legitimate client that completes its handshake and sends a request in
//! time is never locked out by them. Connections that have sent a request
//! are never evicted; they end by their idle deadline. Only when every slot
//! holds such a connection does the accept loop stop accepting, leaving new
//! clients in the kernel backlog until a slot frees.

use crate::metrics;
use crate::transport::ClientIdentity;
use prometheus::IntCounterVec;
use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, PoisonError};
use tokio::sync::Notify;

/// Connections closed by the listener before or instead of serving them.
static CLOSED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    metrics::counter_vec(
        "bashu_connections_closed_total",
        "API connections refused or closed by the listener's limits, by reason",
        &["reason"],
    )
});

/// Why the listener closed a connection without serving it (metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Closed {
    /// The source address has `max_connections_per_ip` open.
    PerIp,
    /// The identity has `max_connections_per_identity` open.
    PerIdentity,
    /// Every slot holds a connection that has sent a request.
    Full,
    /// Evicted while pending to make room for a new connection.
    Evicted,
    /// The source address failed to authenticate too often.
    SourceRateLimited,
    HandshakeFailed,
    HandshakeTimeout,
    /// Trusted certificate without a bashu identity.
    NoIdentity,
    /// No request started within `first_request_timeout_ms`.
    NoRequest,
    /// No request in flight for `idle_timeout_ms`.
    Idle,
}

impl Closed {
    fn label(self) -> &'static str {
        match self {
            Closed::PerIp => "per_ip_limit",
            Closed::PerIdentity => "per_identity_limit",
            Closed::Full => "listener_full",
            Closed::Evicted => "evicted",
            Closed::SourceRateLimited => "source_rate_limited",
            Closed::HandshakeFailed => "handshake_failed",
            Closed::HandshakeTimeout => "handshake_timeout",
            Closed::NoIdentity => "no_identity",
            Closed::NoRequest => "no_request",
            Closed::Idle => "idle",
        }
    }

    pub(super) fn count(self) {
        CLOSED.with_label_values(&[self.label()]).inc();
    }
}

/// The caps, from `[limits]`; each floored at 1.
#[derive(Debug, Clone, Copy)]
pub(super) struct Caps {
    pub total: usize,
    pub per_ip: usize,
    pub per_identity: usize,
}

/// Every open connection of one listener.
#[derive(Debug)]
pub(super) struct ConnTable {
    caps: Caps,
    state: Mutex<State>,
    /// Signalled whenever a slot frees.
    freed: Notify,
}

#[derive(Debug, Default)]
struct State {
    next_id: u64,
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
    per_identity: HashMap<ClientIdentity, usize>,
    entries: HashMap<u64, Entry>,
    /// Ids of pending connections; ids grow with accept time, so the first
    /// is the oldest.
    pending: BTreeSet<u64>,
}

#[derive(Debug)]
struct Entry {
    ip: IpAddr,
    identity: Option<ClientIdentity>,
    evict: Arc<Notify>,
}

fn decrement<K: std::hash::Hash + Eq>(map: &mut HashMap<K, usize>, key: &K) {
    if let Some(n) = map.get_mut(key) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            map.remove(key);
        }
    }
}

impl State {
    /// Forgets `id` and gives its slot back; `None` if already gone.
    fn remove(&mut self, id: u64) -> Option<Entry> {
        let entry = self.entries.remove(&id)?;
        self.pending.remove(&id);
        self.total = self.total.saturating_sub(1);
        decrement(&mut self.per_ip, &entry.ip);
        if let Some(who) = &entry.identity {
            decrement(&mut self.per_identity, who);
        }
        Some(entry)
    }
}

impl ConnTable {
    pub(super) fn new(caps: Caps) -> Arc<Self> {
        Arc::new(Self {
            caps: Caps {
                total: caps.total.max(1),
                per_ip: caps.per_ip.max(1),
                per_identity: caps.per_identity.max(1),
            },
            state: Mutex::new(State::default()),
            freed: Notify::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Open connections (including evicted ones not yet closed: none).
    pub(super) fn open(&self) -> usize {
        self.lock().total
    }

    /// Whether every slot holds a connection that has sent a request, so a
    /// new connection could neither be admitted nor make room.
    fn full_of_active(&self) -> bool {
        let state = self.lock();
        state.total >= self.caps.total && state.pending.is_empty()
    }

    /// Returns once a new connection could be admitted (or make room).
    pub(super) async fn wait_for_room(&self) {
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if !self.full_of_active() {
                return;
            }
            freed.await;
        }
    }

    /// Admits a connection from `ip`, evicting the oldest pending connection
    /// if the listener is full.
    pub(super) fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, Closed> {
        let mut state = self.lock();
        if state.per_ip.get(&ip).copied().unwrap_or(0) >= self.caps.per_ip {
            return Err(Closed::PerIp);
        }
        if state.total >= self.caps.total {
            let oldest = state.pending.first().copied().ok_or(Closed::Full)?;
            if let Some(victim) = state.remove(oldest) {
                victim.evict.notify_one();
                Closed::Evicted.count();
            }
        }
        let id = state.next_id;
        state.next_id += 1;
        let evict = Arc::new(Notify::new());
        state.entries.insert(
            id,
            Entry {
                ip,
                identity: None,
                evict: Arc::clone(&evict),
            },
        );
        state.pending.insert(id);
        state.total += 1;
        *state.per_ip.entry(ip).or_insert(0) += 1;
        Ok(Slot {
            table: Arc::clone(self),
            id,
            evict,
        })
    }
}

/// One admitted connection's place in the table; gives it back on drop.
#[derive(Debug)]
pub(super) struct Slot {
    table: Arc<ConnTable>,
    id: u64,
    evict: Arc<Notify>,
}

impl Slot {
    /// Counts the connection against `who`'s cap, or refuses it.
    pub(super) fn identify(&self, who: &ClientIdentity) -> Result<(), Closed> {
        let mut state = self.table.lock();
        let state = &mut *state;
        let Some(entry) = state.entries.get_mut(&self.id) else {
            return Err(Closed::Evicted);
        };
        let count = state.per_identity.entry(who.clone()).or_insert(0);
        if *count >= self.table.caps.per_identity {
            return Err(Closed::PerIdentity);
        }
        *count += 1;
        entry.identity = Some(who.clone());
        Ok(())
    }

    /// The first request started: the connection can no longer be evicted.
    pub(super) fn started_request(&self) {
        self.table.lock().pending.remove(&self.id);
    }

    /// Resolves when the connection was evicted to make room.
    pub(super) async fn evicted(&self) {
        self.evict.notified().await;
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let removed = self.table.lock().remove(self.id);
        if removed.is_some() {
            self.table.freed.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::Role;

    fn caps(total: usize, per_ip: usize, per_identity: usize) -> Caps {
        Caps {
            total,
            per_ip,
            per_identity,
        }
    }

    #[test]
    fn per_ip_cap_refuses_and_frees_on_drop() {
        let table = ConnTable::new(caps(10, 2, 10));
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        let a = table.admit(ip).unwrap();
        let _b = table.admit(ip).unwrap();
        assert_eq!(table.admit(ip).unwrap_err(), Closed::PerIp);
        assert!(table.admit(other).is_ok());
        drop(a);
        assert!(table.admit(ip).is_ok());
    }

    #[test]
    fn full_listener_evicts_the_oldest_pending_connection_only() {
        let table = ConnTable::new(caps(2, 10, 10));
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let active = table.admit(ip).unwrap();
        active.started_request();
        let pending = table.admit(ip).unwrap();
        let newcomer = table.admit(ip).unwrap();
        // `pending` lost its place; its eviction signal is stored.
        assert_eq!(table.open(), 2);
        let signalled = futures::FutureExt::now_or_never(pending.evicted());
        assert!(signalled.is_some());
        drop(pending);
        assert_eq!(table.open(), 2, "an evicted slot is not given back twice");
        newcomer.started_request();
        assert_eq!(table.admit(ip).unwrap_err(), Closed::Full);
        assert!(table.full_of_active());
        drop(active);
        assert!(!table.full_of_active());
    }

    #[test]
    fn per_identity_cap() {
        let table = ConnTable::new(caps(10, 10, 1));
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let who = ClientIdentity::new("cq", Role::CreditBank);
        let a = table.admit(ip).unwrap();
        a.identify(&who).unwrap();
        let b = table.admit(ip).unwrap();
        assert_eq!(b.identify(&who).unwrap_err(), Closed::PerIdentity);
        b.identify(&ClientIdentity::new("cq", Role::Operator)).unwrap();
        drop(a);
        let c = table.admit(ip).unwrap();
        c.identify(&who).unwrap();
    }
}
