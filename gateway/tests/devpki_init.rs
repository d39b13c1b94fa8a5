//! `bashu dev init` output: certificates with the right SPIFFE identities
//! chaining to the written CA, private files 0600, configs that load and
//! point at each other.
#![allow(clippy::unwrap_used, clippy::expect_used)] // helpers outside #[test] fns

use bashu_gateway::config::Config;
use bashu_gateway::devpki::{self, DevPkiError, MemberSpec};
use bashu_gateway::jose::{SigningKey, VerifyingKey};
use bashu_gateway::transport::{ClientIdentity, Role};
use bashu_gateway::trust::{KeyRole, KeyStatus, KeyStore};
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use std::path::Path;
use std::sync::Arc;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

fn der(path: &Path) -> Vec<u8> {
    let pem = std::fs::read(path).unwrap();
    let mut reader = pem.as_slice();
    let cert = rustls_pemfile::certs(&mut reader).next().unwrap().unwrap();
    cert.to_vec()
}

/// (URIs, DNS names, IPs) of a certificate's SAN.
fn sans(der: &[u8]) -> (Vec<String>, Vec<String>, Vec<Vec<u8>>) {
    let (_, cert) = X509Certificate::from_der(der).unwrap();
    let (mut uris, mut dns, mut ips) = (vec![], vec![], vec![]);
    for name in &cert
        .subject_alternative_name()
        .unwrap()
        .unwrap()
        .value
        .general_names
    {
        match name {
            GeneralName::URI(u) => uris.push((*u).to_owned()),
            GeneralName::DNSName(d) => dns.push((*d).to_owned()),
            GeneralName::IPAddress(ip) => ips.push(ip.to_vec()),
            _ => {}
        }
    }
    (uris, dns, ips)
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn certificates_carry_their_spiffe_identities_and_chain_to_the_ca() {
    let dir = tempfile::tempdir().unwrap();
    let fed = devpki::init(dir.path(), &["cq", "sc", "gz"]).unwrap();
    assert_eq!(fed.ca_cert, dir.path().join("ca.pem"));
    let ca_der = der(&fed.ca_cert);
    let (_, ca) = X509Certificate::from_der(&ca_der).unwrap();
    assert!(ca.is_ca());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from(ca_der.clone())).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .unwrap();

    for m in &fed.members {
        for role in Role::ALL {
            let (cert, key) = m.identity(role);
            assert_eq!(cert, m.dir.join(format!("{role}.crt")));
            let leaf_der = der(cert);
            assert_eq!(
                ClientIdentity::from_certificate(&leaf_der).unwrap(),
                ClientIdentity::new(&m.id, role)
            );
            let (uris, dns, ips) = sans(&leaf_der);
            assert_eq!(uris, vec![format!("spiffe://bashu.federation/{}/{role}", m.id)]);
            if role == Role::Gateway {
                assert_eq!(dns, vec!["localhost"]);
                assert_eq!(ips, vec![vec![127, 0, 0, 1]]);
            } else {
                assert!(dns.is_empty() && ips.is_empty());
            }
            verifier
                .verify_client_cert(&CertificateDer::from(leaf_der.clone()), &[], UnixTime::now())
                .unwrap_or_else(|e| panic!("{} does not chain to the CA: {e}", cert.display()));
            #[cfg(unix)]
            assert_eq!(mode(key), 0o600, "{}", key.display());
        }
    }
    #[cfg(unix)]
    assert_eq!(mode(&fed.ca_key), 0o600);
    // Distinct free ports for every listener.
    let mut ports: Vec<u16> = fed
        .members
        .iter()
        .flat_map(|m| [m.api_addr.port(), m.metrics_addr.port()])
        .collect();
    ports.sort_unstable();
    ports.dedup();
    assert_eq!(ports.len(), 6);
    assert!(ports.iter().all(|p| *p != 0));
}

#[test]
fn explicit_ports_and_frameworks_are_written() {
    let dir = tempfile::tempdir().unwrap();
    let mut cq = MemberSpec::new("cq");
    cq.api_port = 17443;
    cq.metrics_port = 19464;
    let mut gz = MemberSpec::new("gz");
    gz.framework = Some("gzf".into());
    let fed = devpki::init_with(dir.path(), &[cq, gz]).unwrap();
    let cq = fed.member("cq").unwrap();
    assert_eq!(cq.api_addr.to_string(), "127.0.0.1:17443");
    assert_eq!(cq.framework, "cqf");
    assert_eq!(fed.member("gz").unwrap().framework, "gzf");
    let toml = std::fs::read_to_string(&cq.config).unwrap();
    assert!(toml.contains("api = \"127.0.0.1:17443\""), "{toml}");
    assert!(toml.contains("[peers.gz]"), "{toml}");
}

#[test]
fn bad_member_lists_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(
        devpki::init(dir.path(), &[]),
        Err(DevPkiError::NoMembers)
    ));
    assert!(matches!(
        devpki::init(dir.path(), &["cq", "cq"]),
        Err(DevPkiError::DuplicateMember(_))
    ));
    assert!(matches!(
        devpki::init(dir.path(), &["CQ"]),
        Err(DevPkiError::BadMember(_))
    ));
    assert!(matches!(
        devpki::init(dir.path(), &["../x"]),
        Err(DevPkiError::BadMember(_))
    ));
}

#[test]
fn configs_load_and_point_at_every_peer() {
    let dir = tempfile::tempdir().unwrap();
    let fed = devpki::init(dir.path(), &["cq", "sc", "gz"]).unwrap();
    for m in &fed.members {
        let cfg = Config::load_with_env(&m.config, std::iter::empty())
            .and_then(|c| c.check_files().map(|()| c))
            .unwrap_or_else(|e| panic!("{}: {e}", m.config.display()));
        assert_eq!(cfg.member, m.id);
        assert_eq!(cfg.framework, if m.id == "cq" { "cqf" } else { "wfs" });
        assert_eq!(cfg.listen.api, m.api_addr);
        assert_eq!(cfg.listen.metrics, m.metrics_addr);
        assert_eq!(cfg.tls.ca, m.dir.join("../ca.pem"));
        assert_eq!(cfg.tls.cert, m.gateway_cert);
        assert_eq!(cfg.trust.keystore, m.keystore);
        assert_eq!(cfg.trust.federation_key, m.federation_key);
        let peers: Vec<&str> = cfg.peers.keys().map(String::as_str).collect();
        let others: Vec<&str> = fed
            .members
            .iter()
            .map(|p| p.id.as_str())
            .filter(|p| *p != m.id)
            .collect();
        let mut others_sorted = others.clone();
        others_sorted.sort_unstable();
        assert_eq!(peers, others_sorted);
        for (id, peer) in &cfg.peers {
            let other = fed.member(id).unwrap();
            assert_eq!(peer.url, format!("https://{}", other.api_addr));
            assert_eq!(
                std::fs::canonicalize(&peer.federation_key).unwrap(),
                std::fs::canonicalize(&other.federation_public_key).unwrap()
            );
        }
    }
}

#[test]
fn keys_are_written_and_consistent() {
    let dir = tempfile::tempdir().unwrap();
    let fed = devpki::init(dir.path(), &["cq", "sc"]).unwrap();
    for m in &fed.members {
        let store = KeyStore::load(&m.keystore).unwrap();
        assert_eq!(store.member(), m.id);
        let keys = store.list();
        let active_gateway: Vec<_> = keys
            .iter()
            .filter(|k| k.role == KeyRole::Gateway && k.status == KeyStatus::Active)
            .collect();
        assert_eq!(active_gateway.len(), 1, "{keys:?}");
        assert!(store.active_gateway_key().is_ok());

        // The credit bank's private key is the issuer key imported in the store.
        let issuer = SigningKey::load(&m.issuer_key).unwrap();
        let imported = keys
            .iter()
            .find(|k| k.role == KeyRole::Issuer && k.kid == issuer.kid())
            .unwrap_or_else(|| panic!("issuer key {} not in {keys:?}", issuer.kid()));
        assert_eq!(imported.status, KeyStatus::Active);

        // The pinned public federation key is the private one's public half.
        let federation = SigningKey::load(&m.federation_key).unwrap();
        let pinned = VerifyingKey::load(&m.federation_public_key).unwrap();
        assert_eq!(&pinned, federation.verifying_key());
        assert!(!std::fs::read_to_string(&m.federation_public_key)
            .unwrap()
            .contains("\"d\""));
        #[cfg(unix)]
        for private in [&m.federation_key, &m.issuer_key, &m.keystore] {
            assert_eq!(mode(private), 0o600, "{}", private.display());
        }
    }
}
