//! The directory layout of a dev federation and its `gateway.toml` files.

use super::ca::DevCa;
use super::files::{free_ports, write};
use super::DevPkiError;
use crate::ids::is_member_id;
use crate::transport::Role;
use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

/// One member to create; a port of 0 means "pick a free one".
#[derive(Debug, Clone)]
pub struct MemberSpec {
    pub id: String,
    /// Home framework; `cqf` for `cq` and `wfs` otherwise when `None`.
    pub framework: Option<String>,
    pub api_port: u16,
    pub metrics_port: u16,
}

impl MemberSpec {
    pub fn new(id: &str) -> Self {
        Self {
            id: id.to_owned(),
            framework: None,
            api_port: 0,
            metrics_port: 0,
        }
    }
}

/// Paths and addresses of one member of a dev federation.
#[derive(Debug, Clone)]
pub struct DevMember {
    pub id: String,
    pub framework: String,
    pub dir: PathBuf,
    pub config: PathBuf,
    pub api_addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    pub gateway_cert: PathBuf,
    pub gateway_key: PathBuf,
    pub credit_bank_cert: PathBuf,
    pub credit_bank_key: PathBuf,
    pub operator_cert: PathBuf,
    pub operator_key: PathBuf,
    /// The member's federation private key (signs its trust key set).
    pub federation_key: PathBuf,
    /// Its public half, pinned by every other member.
    pub federation_public_key: PathBuf,
    /// The operator key store (gateway signing key, imported issuer key).
    pub keystore: PathBuf,
    /// The credit bank's private credential-signing key.
    pub issuer_key: PathBuf,
    pub data_dir: PathBuf,
}

impl DevMember {
    /// `https://127.0.0.1:<port>`: the base URL peers use.
    pub fn url(&self) -> String {
        format!("https://{}", self.api_addr)
    }

    /// Certificate and key of `role`.
    pub fn identity(&self, role: Role) -> (&Path, &Path) {
        match role {
            Role::Gateway => (&self.gateway_cert, &self.gateway_key),
            Role::CreditBank => (&self.credit_bank_cert, &self.credit_bank_key),
            Role::Operator => (&self.operator_cert, &self.operator_key),
        }
    }
}

/// What [`init`] wrote.
#[derive(Debug, Clone)]
pub struct DevFederation {
    pub dir: PathBuf,
    pub ca_cert: PathBuf,
    pub ca_key: PathBuf,
    pub members: Vec<DevMember>,
}

impl DevFederation {
    pub fn member(&self, id: &str) -> Option<&DevMember> {
        self.members.iter().find(|m| m.id == id)
    }
}

/// Writes a dev federation for `members` under `dir`, with free ports.
pub fn init(dir: &Path, members: &[&str]) -> Result<DevFederation, DevPkiError> {
    let specs: Vec<MemberSpec> = members.iter().map(|m| MemberSpec::new(m)).collect();
    init_with(dir, &specs)
}

/// Writes a dev federation with explicit frameworks and ports.
pub fn init_with(dir: &Path, specs: &[MemberSpec]) -> Result<DevFederation, DevPkiError> {
    check_members(specs)?;
    let mut ports = free_ports(
        specs
            .iter()
            .map(|s| usize::from(s.api_port == 0) + usize::from(s.metrics_port == 0))
            .sum(),
    )?
    .into_iter();
    let mut port = |fixed: u16| {
        if fixed == 0 {
            ports.next().unwrap_or(0)
        } else {
            fixed
        }
    };
    let ca = DevCa::generate("Bashu dev federation CA")?;
    let fed = DevFederation {
        dir: dir.to_owned(),
        ca_cert: dir.join("ca.pem"),
        ca_key: dir.join("ca.key"),
        members: specs
            .iter()
            .map(|s| {
                let api = port(s.api_port);
                let metrics = port(s.metrics_port);
                member_paths(dir, s, api, metrics)
            })
            .collect(),
    };
    write(&fed.ca_cert, ca.cert_pem().as_bytes(), false)?;
    write(&fed.ca_key, ca.key_pem().as_bytes(), true)?;
    for m in &fed.members {
        for role in Role::ALL {
            let issued = ca.issue_identity(&m.id, role)?;
            let (cert, key) = m.identity(role);
            write(cert, issued.cert_pem.as_bytes(), false)?;
            write(key, issued.key_pem.as_bytes(), true)?;
        }
        std::fs::create_dir_all(&m.data_dir).map_err(|source| DevPkiError::Write {
            path: m.data_dir.clone(),
            source,
        })?;
        super::keys::write_member_keys(m)?;
    }
    for m in &fed.members {
        write(&m.config, gateway_toml(m, &fed.members).as_bytes(), false)?;
    }
    Ok(fed)
}

fn check_members(specs: &[MemberSpec]) -> Result<(), DevPkiError> {
    if specs.is_empty() {
        return Err(DevPkiError::NoMembers);
    }
    let mut seen = BTreeSet::new();
    for s in specs {
        if !is_member_id(&s.id) {
            return Err(DevPkiError::BadMember(s.id.clone()));
        }
        if !seen.insert(s.id.as_str()) {
            return Err(DevPkiError::DuplicateMember(s.id.clone()));
        }
    }
    Ok(())
}

fn member_paths(root: &Path, spec: &MemberSpec, api_port: u16, metrics_port: u16) -> DevMember {
    let dir = root.join(&spec.id);
    let framework = spec
        .framework
        .clone()
        .unwrap_or_else(|| if spec.id == "cq" { "cqf" } else { "wfs" }.to_owned());
    DevMember {
        id: spec.id.clone(),
        framework,
        config: dir.join("gateway.toml"),
        api_addr: SocketAddr::from((Ipv4Addr::LOCALHOST, api_port)),
        metrics_addr: SocketAddr::from((Ipv4Addr::LOCALHOST, metrics_port)),
        gateway_cert: dir.join("gateway.crt"),
        gateway_key: dir.join("gateway.key"),
        credit_bank_cert: dir.join("credit-bank.crt"),
        credit_bank_key: dir.join("credit-bank.key"),
        operator_cert: dir.join("operator.crt"),
        operator_key: dir.join("operator.key"),
        federation_key: dir.join("federation.jwk"),
        federation_public_key: dir.join("federation.pub.jwk"),
        keystore: dir.join("keys.json"),
        issuer_key: dir.join("issuer.jwk"),
        data_dir: dir.join("data"),
        dir,
    }
}

/// TOML string literal (the paths and ids written here are plain, but quote
/// properly anyway).
fn quoted(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

/// The member's `gateway.toml`, paths relative to its directory.
fn gateway_toml(m: &DevMember, all: &[DevMember]) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "# Development gateway of member {} (written by `bashu dev init`).",
        m.id
    );
    let _ = writeln!(t, "member = {}", quoted(&m.id));
    let _ = writeln!(t, "framework = {}", quoted(&m.framework));
    let _ = writeln!(t, "data_dir = \"data\"\n");
    let _ = writeln!(t, "[listen]");
    let _ = writeln!(t, "api = {}", quoted(&m.api_addr.to_string()));
    let _ = writeln!(t, "metrics = {}\n", quoted(&m.metrics_addr.to_string()));
    let _ = writeln!(t, "[tls]");
    let _ = writeln!(t, "ca = \"../ca.pem\"");
    let _ = writeln!(t, "cert = \"gateway.crt\"");
    let _ = writeln!(t, "key = \"gateway.key\"\n");
    let _ = writeln!(t, "[trust]");
    let _ = writeln!(t, "keystore = \"keys.json\"");
    let _ = writeln!(t, "federation_key = \"federation.jwk\"");
    for peer in all.iter().filter(|p| p.id != m.id) {
        let _ = writeln!(t, "\n[peers.{}]", peer.id);
        let _ = writeln!(t, "url = {}", quoted(&peer.url()));
        let _ = writeln!(
            t,
            "federation_key = {}",
            quoted(&format!("../{}/federation.pub.jwk", peer.id))
        );
    }
    t
}
