//! `bashu pki`: the federation CA and a member's certificates, without
//! Python, node or hand-written OpenSSL configuration.
//!
//! - `pki ca` creates a federation CA (P-256, ten years, path length 0) for
//!   a federation that has none; `dev init` makes one the same way.
//! - `pki issue` issues a member's gateway, credit-bank and operator
//!   certificates from a CA certificate and key the operator holds, with
//!   the SPIFFE URI SAN and extended key usages the transport requires
//!   (gateway: `serverAuth` + `clientAuth` and the host names peers use;
//!   credit bank and operator: `clientAuth`).
//!
//! Private keys are written with mode 0600 from creation on. Nothing is
//! overwritten without `--force`, and every target is checked before the
//! first file is written. `--print-openssl` prints the equivalent OpenSSL
//! commands instead (for a CA kept elsewhere, e.g. in an HSM-backed
//! OpenSSL setup); they produce certificates the gateway accepts.

use crate::devpki::{self, DevCa, LeafSpec};
use crate::ids::is_member_id;
use crate::transport::{ClientIdentity, Role};
use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Organization in the subject of a CA made by `pki ca`.
const DEFAULT_ORGANIZATION: &str = "Bashu federation";
/// Validity of leaves printed for OpenSSL (as `DevCa::issue`).
const LEAF_DAYS: u32 = 397;
/// Validity of a CA printed for OpenSSL (as `DevCa::generate`).
const CA_DAYS: u32 = 3650;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: PkiCommand,
}

#[derive(Debug, clap::Subcommand)]
enum PkiCommand {
    /// Create a federation CA: `<out-dir>/ca.pem` and `<out-dir>/ca.key` (0600).
    Ca {
        /// Directory to write into (created if missing).
        #[arg(long)]
        out_dir: PathBuf,
        /// Subject organization (O).
        #[arg(long, default_value = DEFAULT_ORGANIZATION)]
        organization: String,
        /// Subject common name (CN).
        #[arg(long, default_value = "Bashu federation CA")]
        name: String,
        /// Replace existing files.
        #[arg(long)]
        force: bool,
        /// Print the equivalent OpenSSL commands instead of writing files.
        #[arg(long)]
        print_openssl: bool,
    },
    /// Issue a member's certificates from a CA you hold:
    /// `<out-dir>/<role>.crt` and `<out-dir>/<role>.key` (0600) per role.
    Issue {
        /// CA certificate (PEM).
        #[arg(long)]
        ca_cert: PathBuf,
        /// CA private key (PKCS#8 PEM).
        #[arg(long)]
        ca_key: PathBuf,
        /// Member id, e.g. `gz`.
        #[arg(long)]
        member: String,
        /// Roles to issue (comma-separated): gateway, credit-bank, operator.
        #[arg(long, value_delimiter = ',', default_value = "gateway,credit-bank,operator", value_parser = parse_role)]
        role: Vec<Role>,
        /// Directory to write into (created if missing).
        #[arg(long)]
        out_dir: PathBuf,
        /// DNS name peers and the credit bank use to reach the gateway
        /// (repeatable; gateway certificates need a --dns or an --ip).
        #[arg(long)]
        dns: Vec<String>,
        /// IP address peers and the credit bank use to reach the gateway (repeatable).
        #[arg(long)]
        ip: Vec<IpAddr>,
        /// Replace existing files.
        #[arg(long)]
        force: bool,
        /// Print the equivalent OpenSSL commands instead of writing files.
        #[arg(long)]
        print_openssl: bool,
    },
}

fn parse_role(s: &str) -> Result<Role, String> {
    s.parse()
        .map_err(|()| format!("unknown role {s:?} (gateway, credit-bank, operator)"))
}

/// A usage error (exit 2) or a failure (exit 1).
enum Failure {
    Usage(String),
    Failed(String),
}

pub fn run(args: Args) -> ExitCode {
    let result = match args.command {
        PkiCommand::Ca {
            out_dir,
            organization,
            name,
            force,
            print_openssl,
        } => {
            if print_openssl {
                print!("{}", openssl_ca(&out_dir, &organization, &name));
                Ok(())
            } else {
                create_ca(&out_dir, &organization, &name, force)
            }
        }
        PkiCommand::Issue {
            ca_cert,
            ca_key,
            member,
            role,
            out_dir,
            dns,
            ip,
            force,
            print_openssl,
        } => check_issue(&member, &role, &dns, &ip).and_then(|roles| {
            let req = IssueRequest {
                member: &member,
                roles,
                dns: &dns,
                ips: &ip,
            };
            if print_openssl {
                print!("{}", openssl_issue(&ca_cert, &ca_key, &out_dir, &req));
                Ok(())
            } else {
                issue(&ca_cert, &ca_key, &out_dir, &req, force)
            }
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(msg)) => {
            eprintln!("bashu pki: {msg}");
            ExitCode::from(2)
        }
        Err(Failure::Failed(msg)) => super::fail(msg),
    }
}

/// What to issue for one member.
struct IssueRequest<'a> {
    member: &'a str,
    roles: Vec<Role>,
    dns: &'a [String],
    ips: &'a [IpAddr],
}

impl IssueRequest<'_> {
    /// The leaf of `role`: its SPIFFE id; gateways also their host names
    /// and the serverAuth EKU (they serve their credit bank and peers).
    fn spec(&self, role: Role) -> LeafSpec {
        let mut spec = LeafSpec::for_identity(self.member, role);
        if role == Role::Gateway {
            spec.dns = self.dns.to_vec();
            spec.ips = self.ips.to_vec();
        }
        spec
    }
}

/// Member id, roles without duplicates, host names for a gateway.
fn check_issue(member: &str, roles: &[Role], dns: &[String], ips: &[IpAddr]) -> Result<Vec<Role>, Failure> {
    if !is_member_id(member) {
        return Err(Failure::Usage(format!(
            "{member:?} is not a member id (a-z0-9, 2-16 characters)"
        )));
    }
    let mut unique = Vec::new();
    for r in roles {
        if !unique.contains(r) {
            unique.push(*r);
        }
    }
    if unique.contains(&Role::Gateway) && dns.is_empty() && ips.is_empty() {
        return Err(Failure::Usage(
            "a gateway certificate needs the host names peers use in their `url`: \
             give --dns <name> and/or --ip <address> (e.g. --dns gz.gateway.example, or --ip 127.0.0.1 for a local test)"
                .into(),
        ));
    }
    if let Some(bad) = dns.iter().find(|d| d.is_empty() || d.contains(['/', ' ', ','])) {
        return Err(Failure::Usage(format!("{bad:?} is not a DNS name")));
    }
    Ok(unique)
}

/// Refuses existing targets unless `force`; checks all before writing any.
fn check_targets(paths: &[&Path], force: bool) -> Result<(), Failure> {
    if force {
        return Ok(());
    }
    for p in paths {
        if p.exists() {
            return Err(Failure::Usage(format!(
                "{} exists; refusing to overwrite (use --force to replace it)",
                p.display()
            )));
        }
    }
    Ok(())
}

fn write(path: &Path, contents: &str, private: bool) -> Result<(), Failure> {
    devpki::write_file(path, contents.as_bytes(), private).map_err(|e| Failure::Failed(e.to_string()))
}

fn create_ca(dir: &Path, organization: &str, name: &str, force: bool) -> Result<(), Failure> {
    let (cert, key) = (dir.join("ca.pem"), dir.join("ca.key"));
    check_targets(&[&cert, &key], force)?;
    let ca = DevCa::generate_in(organization, name).map_err(|e| Failure::Failed(e.to_string()))?;
    write(&key, &ca.key_pem(), true)?;
    write(&cert, &ca.cert_pem(), false)?;
    eprintln!(
        "wrote {} (give it to every member as tls.ca) and {} (private, 0600: keep it offline)",
        cert.display(),
        key.display()
    );
    Ok(())
}

fn read(path: &Path) -> Result<String, Failure> {
    std::fs::read_to_string(path).map_err(|e| Failure::Failed(format!("cannot read {}: {e}", path.display())))
}

fn issue(
    ca_cert: &Path,
    ca_key: &Path,
    dir: &Path,
    req: &IssueRequest<'_>,
    force: bool,
) -> Result<(), Failure> {
    let targets: Vec<(Role, PathBuf, PathBuf)> = req
        .roles
        .iter()
        .map(|&r| (r, dir.join(format!("{r}.crt")), dir.join(format!("{r}.key"))))
        .collect();
    let all: Vec<&Path> = targets
        .iter()
        .flat_map(|(_, c, k)| [c.as_path(), k.as_path()])
        .collect();
    check_targets(&all, force)?;
    let ca = DevCa::from_pem(&read(ca_cert)?, &read(ca_key)?).map_err(|e| {
        Failure::Failed(format!(
            "CA {} with key {}: {e}",
            ca_cert.display(),
            ca_key.display()
        ))
    })?;
    for (role, cert, key) in &targets {
        let spec = req.spec(*role);
        let issued = ca.issue(&spec).map_err(|e| Failure::Failed(e.to_string()))?;
        write(key, &issued.key_pem, true)?;
        write(cert, &issued.cert_pem, false)?;
        eprintln!(
            "wrote {} ({}; EKU {}{}) and {} (0600)",
            cert.display(),
            ClientIdentity::new(req.member, *role).spiffe_uri(),
            ekus(*role),
            hosts(&spec),
            key.display()
        );
    }
    Ok(())
}

fn ekus(role: Role) -> &'static str {
    if role == Role::Gateway {
        "serverAuth, clientAuth"
    } else {
        "clientAuth"
    }
}

fn hosts(spec: &LeafSpec) -> String {
    let names: Vec<String> = spec
        .dns
        .iter()
        .map(|d| format!("DNS {d}"))
        .chain(spec.ips.iter().map(|i| format!("IP {i}")))
        .collect();
    if names.is_empty() {
        String::new()
    } else {
        format!("; {}", names.join(", "))
    }
}

/// A path quoted for a POSIX shell.
fn sh(path: &Path) -> String {
    sh_str(&path.display().to_string())
}

fn sh_str(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// An OpenSSL config value: the subject fields and host names here are
/// plain, but escape what OpenSSL treats specially anyway.
fn cnf(s: &str) -> String {
    s.replace('\\', r"\\")
        .replace('"', "\\\"")
        .replace(['\n', '\r'], " ")
}

/// The commands that make the same CA as `pki ca`.
fn openssl_ca(dir: &Path, organization: &str, name: &str) -> String {
    let (cert, key, conf) = (dir.join("ca.pem"), dir.join("ca.key"), dir.join("ca.cnf"));
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# Federation CA (OpenSSL 1.1.1 or later). Keep ca.key offline."
    );
    let _ = writeln!(s, "set -eu");
    let _ = writeln!(s, "mkdir -p {}", sh(dir));
    let _ = writeln!(
        s,
        "(umask 077 && openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out {})",
        sh(&key)
    );
    let _ = writeln!(s, "cat > {} <<'EOF'", sh(&conf));
    let _ = writeln!(
        s,
        "[req]\nprompt = no\ndistinguished_name = dn\nx509_extensions = ca_ext"
    );
    let _ = writeln!(s, "[dn]\nO = {}\nCN = {}", cnf(organization), cnf(name));
    let _ = writeln!(
        s,
        "[ca_ext]\nbasicConstraints = critical, CA:TRUE, pathlen:0\nkeyUsage = critical, keyCertSign, cRLSign, digitalSignature\nsubjectKeyIdentifier = hash"
    );
    let _ = writeln!(s, "EOF");
    let _ = writeln!(
        s,
        "openssl req -x509 -new -config {} -key {} -days {CA_DAYS} -sha256 -out {}",
        sh(&conf),
        sh(&key),
        sh(&cert)
    );
    let _ = writeln!(s, "rm {}", sh(&conf));
    s
}

/// The commands that issue the same certificates as `pki issue`.
fn openssl_issue(ca_cert: &Path, ca_key: &Path, dir: &Path, req: &IssueRequest<'_>) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# Certificates of member {} signed by {} (OpenSSL 1.1.1 or later).",
        req.member,
        ca_cert.display()
    );
    let _ = writeln!(s, "set -eu");
    let _ = writeln!(s, "mkdir -p {}", sh(dir));
    for &role in &req.roles {
        let spec = req.spec(role);
        let cert = dir.join(format!("{role}.crt"));
        let key = dir.join(format!("{role}.key"));
        let csr = dir.join(format!("{role}.csr"));
        let conf = dir.join(format!("{role}.cnf"));
        let mut sans: Vec<String> = spec.uris.iter().map(|u| format!("URI:{u}")).collect();
        sans.extend(spec.dns.iter().map(|d| format!("DNS:{}", cnf(d))));
        sans.extend(spec.ips.iter().map(|i| format!("IP:{i}")));
        let _ = writeln!(s, "\n# {role}: {} (EKU {})", spec.uris.join(", "), ekus(role));
        let _ = writeln!(
            s,
            "(umask 077 && openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out {})",
            sh(&key)
        );
        let _ = writeln!(s, "cat > {} <<'EOF'", sh(&conf));
        let _ = writeln!(s, "[req]\nprompt = no\ndistinguished_name = dn");
        let _ = writeln!(
            s,
            "[dn]\nO = {DEFAULT_ORGANIZATION}\nCN = {}",
            cnf(&spec.common_name)
        );
        let _ = writeln!(
            s,
            "[leaf]\nbasicConstraints = critical, CA:FALSE\nkeyUsage = critical, digitalSignature\nextendedKeyUsage = {}\nsubjectAltName = {}\nsubjectKeyIdentifier = hash\nauthorityKeyIdentifier = keyid",
            if role == Role::Gateway {
                "serverAuth, clientAuth"
            } else {
                "clientAuth"
            },
            sans.join(", ")
        );
        let _ = writeln!(s, "EOF");
        let _ = writeln!(
            s,
            "openssl req -new -config {} -key {} -out {}",
            sh(&conf),
            sh(&key),
            sh(&csr)
        );
        let _ = writeln!(
            s,
            "openssl x509 -req -in {} -CA {} -CAkey {} -set_serial \"0x$(openssl rand -hex 16)\" -days {LEAF_DAYS} -sha256 -extfile {} -extensions leaf -out {}",
            sh(&csr),
            sh(ca_cert),
            sh(ca_key),
            sh(&conf),
            sh(&cert)
        );
        let _ = writeln!(s, "rm {} {}", sh(&csr), sh(&conf));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_quoting_survives_quotes() {
        assert_eq!(sh(Path::new("a'b c")), r"'a'\''b c'");
    }

    #[test]
    fn gateway_needs_a_host_name_and_roles_are_deduplicated() {
        assert!(matches!(
            check_issue("gz", &[Role::Gateway], &[], &[]),
            Err(Failure::Usage(m)) if m.contains("--dns")
        ));
        assert!(matches!(
            check_issue("GZ", &[Role::Operator], &[], &[]),
            Err(Failure::Usage(_))
        ));
        let roles = check_issue("gz", &[Role::Operator, Role::Operator], &[], &[])
            .ok()
            .unwrap_or_default();
        assert_eq!(roles, [Role::Operator]);
    }

    #[test]
    fn printed_openssl_names_the_identity_and_ekus() {
        let dns = vec!["gz.example".to_owned()];
        let req = IssueRequest {
            member: "gz",
            roles: vec![Role::Gateway, Role::CreditBank],
            dns: &dns,
            ips: &[],
        };
        let text = openssl_issue(Path::new("ca.pem"), Path::new("ca.key"), Path::new("out"), &req);
        assert!(text.contains("subjectAltName = URI:spiffe://bashu.federation/gz/gateway, DNS:gz.example"));
        assert!(text.contains("extendedKeyUsage = serverAuth, clientAuth"));
        assert!(text.contains("subjectAltName = URI:spiffe://bashu.federation/gz/credit-bank\n"));
        assert!(text.contains("extendedKeyUsage = clientAuth\n"));
    }
}
