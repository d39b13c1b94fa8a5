//! Replica configurations of one member (`bashu dev init --replicas N
//! --store-url URL`): N gateways of the member sharing one PostgreSQL
//! database, as in a high-availability deployment.
//!
//! Each replica gets `<member>/replica-<i>/gateway.toml` with its own API
//! and metrics ports and its own `data_dir`, and shares everything that
//! makes it the member: certificates, the key store (gateway signing key),
//! the federation key, peers, and `[store] url`. Replica 1 listens on the
//! member's own address, which the other members' configs already name as
//! the peer URL; in production a load balancer or DNS name in front of all
//! replicas plays that part (docs/operations.md "High availability").
//!
//! The replica configs are derived from the member's `gateway.toml` as it
//! stands (so sections appended to it, e.g. fast test timings, carry
//! over), with relative paths rewritten for the deeper directory. They
//! hold the database URL and so its password: they are written 0600.

use super::files::{free_ports, write};
use super::{DevFederation, DevPkiError};
use crate::config::StoreUrl;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use toml::{Table, Value};

/// Most replicas `dev init` writes for one member.
pub const MAX_REPLICAS: usize = 16;

/// One replica of a member, as written.
#[derive(Debug, Clone)]
pub struct DevReplica {
    pub member: String,
    /// 1-based.
    pub index: usize,
    pub dir: PathBuf,
    pub config: PathBuf,
    pub api_addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    pub data_dir: PathBuf,
}

impl DevReplica {
    pub fn url(&self) -> String {
        format!("https://{}", self.api_addr)
    }

    /// `member` as seen through this replica: its certificates and keys,
    /// this replica's addresses, config and data directory (what a credit
    /// bank or operator client of this replica needs).
    pub fn view(&self, member: &super::DevMember) -> super::DevMember {
        let mut view = member.clone();
        view.api_addr = self.api_addr;
        view.metrics_addr = self.metrics_addr;
        view.config = self.config.clone();
        view.data_dir = self.data_dir.clone();
        view
    }
}

/// Keys whose values are paths relative to the config file's directory.
const PATH_KEYS: &[(&str, &str)] = &[
    ("tls", "ca"),
    ("tls", "cert"),
    ("tls", "key"),
    ("trust", "keystore"),
    ("trust", "federation_key"),
    ("mapping", "table"),
];

/// Writes `count` replica configs of `member` sharing `store_url`.
pub fn write_replicas(
    fed: &DevFederation,
    member: &str,
    count: usize,
    store_url: &StoreUrl,
) -> Result<Vec<DevReplica>, DevPkiError> {
    if !(1..=MAX_REPLICAS).contains(&count) {
        return Err(DevPkiError::Replicas(format!(
            "--replicas must be between 1 and {MAX_REPLICAS}"
        )));
    }
    if !store_url.is_postgres() {
        return Err(DevPkiError::Replicas(format!(
            "replicas share a PostgreSQL database: {} is not a postgres:// URL",
            store_url.redacted()
        )));
    }
    let m = fed
        .member(member)
        .ok_or_else(|| DevPkiError::Replicas(format!("{member} is not a member of this federation")))?;
    let text = std::fs::read_to_string(&m.config).map_err(|source| DevPkiError::Read {
        path: m.config.clone(),
        source,
    })?;
    let base: Table =
        toml::from_str(&text).map_err(|e| DevPkiError::Replicas(format!("{}: {e}", m.config.display())))?;
    let mut ports = free_ports(2 * count - 1)?.into_iter();
    let mut replicas = Vec::with_capacity(count);
    for index in 1..=count {
        let (api_addr, metrics_addr) = if index == 1 {
            (m.api_addr, m.metrics_addr)
        } else {
            let mut next = || SocketAddr::from((Ipv4Addr::LOCALHOST, ports.next().unwrap_or(0)));
            (next(), next())
        };
        let dir = m.dir.join(format!("replica-{index}"));
        let replica = DevReplica {
            member: member.to_owned(),
            index,
            config: dir.join("gateway.toml"),
            data_dir: dir.join("data"),
            dir,
            api_addr,
            metrics_addr,
        };
        let doc = replica_toml(&base, &replica, store_url);
        let mut out = format!(
            "# Replica {index} of member {member} (written by `bashu dev init --replicas`).\n\
             # Holds the database URL with its password: keep it private.\n"
        );
        out.push_str(&toml::to_string(&doc).map_err(|e| DevPkiError::Replicas(e.to_string()))?);
        write(&replica.config, out.as_bytes(), true)?;
        std::fs::create_dir_all(&replica.data_dir).map_err(|source| DevPkiError::Write {
            path: replica.data_dir.clone(),
            source,
        })?;
        replicas.push(replica);
    }
    Ok(replicas)
}

/// The member's config, moved one directory down, on the replica's
/// addresses and data directory, with the shared store.
fn replica_toml(base: &Table, r: &DevReplica, store_url: &StoreUrl) -> Table {
    let mut doc = base.clone();
    doc.insert("data_dir".into(), Value::String("data".into()));
    let mut listen = take_section(&mut doc, "listen");
    listen.insert("api".into(), Value::String(r.api_addr.to_string()));
    listen.insert("metrics".into(), Value::String(r.metrics_addr.to_string()));
    doc.insert("listen".into(), Value::Table(listen));
    for (sec, key) in PATH_KEYS {
        if let Some(Value::String(p)) = doc
            .get_mut(*sec)
            .and_then(Value::as_table_mut)
            .and_then(|t| t.get_mut(*key))
        {
            *p = up_one(p);
        }
    }
    if let Some(Value::Array(tables)) = doc
        .get_mut("mapping")
        .and_then(Value::as_table_mut)
        .and_then(|t| t.get_mut("tables"))
    {
        for t in tables.iter_mut() {
            if let Value::String(p) = t {
                *p = up_one(p);
            }
        }
    }
    if let Some(Value::Array(crls)) = doc
        .get_mut("tls")
        .and_then(Value::as_table_mut)
        .and_then(|t| t.get_mut("crls"))
    {
        for c in crls.iter_mut() {
            if let Value::String(p) = c {
                *p = up_one(p);
            }
        }
    }
    if let Some(peers) = doc.get_mut("peers").and_then(Value::as_table_mut) {
        for (_, peer) in peers.iter_mut() {
            if let Some(Value::String(p)) = peer.as_table_mut().and_then(|t| t.get_mut("federation_key")) {
                *p = up_one(p);
            }
        }
    }
    let mut store = take_section(&mut doc, "store");
    store.insert("url".into(), Value::String(store_url.expose().to_owned()));
    doc.insert("store".into(), Value::Table(store));
    doc
}

/// Takes section `name` out of `doc` (a new table if absent or not a table).
fn take_section(doc: &mut Table, name: &str) -> Table {
    match doc.remove(name) {
        Some(Value::Table(t)) => t,
        _ => Table::new(),
    }
}

/// A relative path seen from one directory further down.
fn up_one(p: &str) -> String {
    if Path::new(p).is_absolute() {
        p.to_owned()
    } else {
        format!("../{p}")
    }
}
