//! CRL admission and enforcement, the clientAuth EKU, and the gateway's own
//! certificate (issue 11 items 6, 7a, 7f): what is refused at start and on
//! reload (keeping the previous configuration), and what fails closed at
//! run time.
#![allow(clippy::unwrap_used, clippy::expect_used)] // helpers outside #[test] fns

mod api_support;

use api_support::{client_config, connect, limits, CertFiles, Pki, Server};
use bashu_gateway::devpki::{DevCa, LeafSpec};
use bashu_gateway::pipeline::Unwired;
use bashu_gateway::transport::{ClientIdentity, ReloadableTls, Role, TlsError, TlsPaths};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Whether a client with `cert` gets an HTTP answer (the handshake, which
/// in TLS 1.3 may fail only at the first read, went through).
async fn gets_http(addr: SocketAddr, ca: &Path, cert: &CertFiles) -> bool {
    let attempt = async {
        let mut tls = connect(addr, client_config(ca, Some(cert), &[b"http/1.1"])).await?;
        tls.write_all(b"GET /healthz HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
            .await?;
        let mut out = Vec::new();
        tls.read_to_end(&mut out).await?;
        Ok::<_, std::io::Error>(out)
    };
    matches!(attempt.await, Ok(bytes) if bytes.starts_with(b"HTTP/1.1 200"))
}

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

fn write_crl(pki: &Pki, name: &str, pem: &str) -> PathBuf {
    let path = pki.dir.path().join(name);
    std::fs::write(&path, pem).unwrap();
    path
}

/// A CRL past its nextUpdate, revoking nothing.
fn stale_crl(ca: &DevCa) -> String {
    ca.crl_valid(
        &[],
        now() - time::Duration::days(8),
        now() - time::Duration::days(1),
    )
    .unwrap()
}

fn reload_failures(reason: &str) -> u64 {
    let needle = format!("bashu_tls_reload_failures_total{{reason=\"{reason}\"}} ");
    bashu_gateway::metrics::render()
        .lines()
        .find_map(|l| l.strip_prefix(&needle))
        .map_or(0, |v| v.trim().parse().unwrap())
}

#[tokio::test]
async fn reload_refuses_an_out_of_date_crl_and_keeps_revocations_in_force() {
    let pki = Pki::new();
    let revoked = pki.identity("cq", Role::CreditBank);
    let good = pki.identity("cq", Role::Operator);
    let crl = write_crl(&pki, "ca.crl", &pki.ca.crl(&[&revoked.serial]).unwrap());
    let mut paths = pki.server_paths("cq");
    paths.crls = vec![crl.clone()];
    let server = Server::start_with(paths, "cq", Arc::new(Unwired), limits()).await;
    assert!(!gets_http(server.addr, &pki.ca_path, &revoked).await);
    assert!(gets_http(server.addr, &pki.ca_path, &good).await);

    // The reproduction: an expired CRL (that no longer lists the revoked
    // certificate) arrives and the gateway is told to reload.
    let before = reload_failures("crl_expired");
    std::fs::write(&crl, stale_crl(&pki.ca)).unwrap();
    let err = server.tls.reload().unwrap_err();
    assert!(
        matches!(err, TlsError::CrlExpired { ref path, .. } if *path == crl),
        "{err}"
    );
    assert!(err.to_string().contains(&crl.display().to_string()), "{err}");
    assert!(reload_failures("crl_expired") > before);
    // Previous configuration in force: still revoked, still served, ready.
    assert!(!gets_http(server.addr, &pki.ca_path, &revoked).await);
    assert!(gets_http(server.addr, &pki.ca_path, &good).await);
    assert_eq!(server.tls.readiness(), Ok(()));
    server.stop().await;
}

#[tokio::test]
async fn reload_refuses_a_crl_signed_by_a_foreign_key() {
    let pki = Pki::new();
    let bank = pki.identity("cq", Role::CreditBank);
    let crl = write_crl(&pki, "ca.crl", &pki.ca.crl(&[]).unwrap());
    let mut paths = pki.server_paths("cq");
    paths.crls = vec![crl.clone()];
    let server = Server::start_with(paths, "cq", Arc::new(Unwired), limits()).await;
    assert!(gets_http(server.addr, &pki.ca_path, &bank).await);

    // Same issuer name ("test CA"), another key: webpki would pick it for
    // every client of the CA and fail them all at the handshake.
    let impostor = DevCa::generate("test CA").unwrap();
    let before = reload_failures("crl_signature");
    std::fs::write(&crl, impostor.crl(&[]).unwrap()).unwrap();
    let err = server.tls.reload().unwrap_err();
    assert!(
        matches!(err, TlsError::CrlSignature { ref path, .. } if *path == crl),
        "{err}"
    );
    assert!(reload_failures("crl_signature") > before);
    // The credit bank still gets in.
    assert!(gets_http(server.addr, &pki.ca_path, &bank).await);

    // A CRL from a CA that is not in the CA file at all.
    let stranger = DevCa::generate("stranger CA").unwrap();
    std::fs::write(&crl, stranger.crl(&[]).unwrap()).unwrap();
    let err = server.tls.reload().unwrap_err();
    assert!(matches!(err, TlsError::CrlUnknownIssuer { .. }), "{err}");
    assert!(gets_http(server.addr, &pki.ca_path, &bank).await);

    // A good new CRL is taken.
    std::fs::write(&crl, pki.ca.crl(&[&bank.serial]).unwrap()).unwrap();
    server.tls.reload().unwrap();
    assert!(!gets_http(server.addr, &pki.ca_path, &bank).await);
    server.stop().await;
}

#[test]
fn start_refuses_bad_crls_naming_the_file() {
    let pki = Pki::new();
    let with_crl = |name: &str, pem: String| {
        let mut paths = pki.server_paths("cq");
        paths.crls = vec![write_crl(&pki, name, &pem)];
        ReloadableTls::load_gateway(paths, "cq").unwrap_err()
    };
    let stale = with_crl("stale.crl", stale_crl(&pki.ca));
    assert!(matches!(stale, TlsError::CrlExpired { .. }), "{stale}");
    assert!(stale.to_string().contains("stale.crl"), "{stale}");
    let foreign = with_crl(
        "foreign.crl",
        DevCa::generate("test CA").unwrap().crl(&[]).unwrap(),
    );
    assert!(matches!(foreign, TlsError::CrlSignature { .. }), "{foreign}");
    assert!(foreign.to_string().contains("foreign.crl"), "{foreign}");
    let garbage = with_crl(
        "garbage.crl",
        "-----BEGIN X509 CRL-----\nMAMCAQE=\n-----END X509 CRL-----\n".into(),
    );
    assert!(matches!(garbage, TlsError::CrlInvalid { .. }), "{garbage}");
    assert!(garbage.to_string().contains("garbage.crl"), "{garbage}");
    // A current CRL of the right CA starts.
    let mut paths = pki.server_paths("cq");
    paths.crls = vec![write_crl(&pki, "ok.crl", &pki.ca.crl(&[]).unwrap())];
    ReloadableTls::load_gateway(paths, "cq").unwrap();
}

#[tokio::test]
async fn a_crl_passing_next_update_at_run_time_fails_closed_and_shows_in_readiness() {
    let pki = Pki::new();
    let bank = pki.identity("cq", Role::CreditBank);
    // nextUpdate two seconds from now (whole seconds in the encoding).
    let next_update = now() + time::Duration::seconds(2);
    let crl = write_crl(
        &pki,
        "short.crl",
        &pki.ca
            .crl_valid(&[], now() - time::Duration::hours(1), next_update)
            .unwrap(),
    );
    let mut paths = pki.server_paths("cq");
    paths.crls = vec![crl.clone()];
    let server = Server::start_with(paths, "cq", Arc::new(Unwired), limits()).await;
    assert_eq!(server.tls.readiness(), Ok(()));
    let due = next_update.unix_timestamp();
    assert_eq!(server.tls.readiness_at(due - 1), Ok(()));
    assert!(server.tls.readiness_at(due).is_err());

    // Served until nextUpdate, refused from then on (the only signal is the
    // clock: poll with a bound).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while gets_http(server.addr, &pki.ca_path, &bank).await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "still accepted after nextUpdate"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        OffsetDateTime::now_utc().unix_timestamp() >= due,
        "refused before nextUpdate"
    );
    let why = server.tls.readiness().unwrap_err();
    assert!(
        why.contains(&crl.display().to_string()) && why.contains("nextUpdate"),
        "{why}"
    );

    // /readyz as the gateway wires it: not ready, with the reason.
    let probe = bashu_gateway::api::ready_probe_with(Arc::new(|| Box::pin(async { Ok(()) })), {
        let tls = Arc::clone(&server.tls);
        move || tls.readiness()
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let metrics_addr = listener.local_addr().unwrap();
    let (stop, rx) = tokio::sync::watch::channel(false);
    let metrics = tokio::spawn(bashu_gateway::api::serve_ops(listener, probe, rx));
    let mut tcp = tokio::net::TcpStream::connect(metrics_addr).await.unwrap();
    tcp.write_all(b"GET /readyz HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    tcp.read_to_string(&mut out).await.unwrap();
    assert!(out.starts_with("HTTP/1.1 503"), "{out}");
    assert!(
        out.contains("gateway is not ready: CRL ") && out.contains("short.crl"),
        "{out}"
    );

    // A current CRL restores service on reload.
    std::fs::write(&crl, pki.ca.crl(&[]).unwrap()).unwrap();
    server.tls.reload().unwrap();
    assert!(gets_http(server.addr, &pki.ca_path, &bank).await);
    assert_eq!(server.tls.readiness(), Ok(()));
    stop.send(true).unwrap();
    metrics.await.unwrap();
    server.stop().await;
}

#[tokio::test]
async fn a_client_certificate_without_client_auth_eku_gets_no_http() {
    let pki = Pki::new();
    let server = Server::start(&pki, "cq", Arc::new(Unwired), limits()).await;
    let uri = ClientIdentity::new("cq", Role::Operator).spiffe_uri();
    let no_eku = pki.custom(
        "no-eku",
        &LeafSpec {
            common_name: "cq operator without EKU".into(),
            uris: vec![uri.clone()],
            omit_eku: true,
            ..LeafSpec::default()
        },
    );
    assert!(!gets_http(server.addr, &pki.ca_path, &no_eku).await);
    // The same identity with clientAuth is served.
    let with_eku = pki.custom(
        "with-eku",
        &LeafSpec {
            common_name: "cq operator".into(),
            uris: vec![uri],
            ..LeafSpec::default()
        },
    );
    assert!(gets_http(server.addr, &pki.ca_path, &with_eku).await);
    server.stop().await;
}

/// Paths serving `files` as the gateway's own certificate.
fn own_paths(pki: &Pki, files: &CertFiles) -> TlsPaths {
    TlsPaths {
        ca: pki.ca_path.clone(),
        cert: files.cert.clone(),
        key: files.key.clone(),
        crls: Vec::new(),
    }
}

#[test]
fn the_gateway_refuses_a_certificate_that_is_not_its_gateway_identity() {
    let pki = Pki::new();
    let gateway_spec = |server: bool| LeafSpec {
        server,
        ..LeafSpec::for_identity("cq", Role::Gateway)
    };
    let refused = [
        (
            "credit bank",
            pki.identity("cq", Role::CreditBank),
            "is spiffe://bashu.federation/cq/credit-bank",
        ),
        (
            "other member",
            pki.identity("sc", Role::Gateway),
            "is spiffe://bashu.federation/sc/gateway",
        ),
        (
            "no serverAuth",
            pki.custom("no-server", &gateway_spec(false)),
            "lacks serverAuth",
        ),
        (
            "no EKU",
            pki.custom(
                "no-eku",
                &LeafSpec {
                    omit_eku: true,
                    ..gateway_spec(true)
                },
            ),
            "lacks serverAuth and clientAuth",
        ),
    ];
    for (what, files, expected) in refused {
        let err = ReloadableTls::load_gateway(own_paths(&pki, &files), "cq").unwrap_err();
        assert!(matches!(err, TlsError::OwnCertificate { .. }), "{what}: {err}");
        let text = err.to_string();
        assert!(text.contains(&files.cert.display().to_string()), "{what}: {text}");
        assert!(text.contains(expected), "{what}: {text}");
    }
    ReloadableTls::load_gateway(own_paths(&pki, &pki.identity("cq", Role::Gateway)), "cq").unwrap();
}

#[tokio::test]
async fn reload_refuses_a_certificate_that_is_not_the_gateway_identity() {
    let pki = Pki::new();
    let live = pki.dir.path().join("live");
    std::fs::create_dir(&live).unwrap();
    let install = |files: &CertFiles| {
        std::fs::copy(&files.cert, live.join("gw.crt")).unwrap();
        std::fs::copy(&files.key, live.join("gw.key")).unwrap();
    };
    let first = pki.identity("cq", Role::Gateway);
    install(&first);
    let paths = TlsPaths {
        ca: pki.ca_path.clone(),
        cert: live.join("gw.crt"),
        key: live.join("gw.key"),
        crls: vec![],
    };
    let tls = ReloadableTls::load_gateway(paths, "cq").unwrap();
    let in_force = tls.current();
    let before = reload_failures("own_certificate");
    install(&pki.identity("cq", Role::CreditBank));
    let err = tls.reload().unwrap_err();
    assert!(matches!(err, TlsError::OwnCertificate { .. }), "{err}");
    assert!(reload_failures("own_certificate") > before);
    assert!(
        Arc::ptr_eq(&tls.current(), &in_force),
        "the old configuration stays"
    );
    assert_eq!(*tls.reloads().borrow(), 0);
    install(&pki.identity("cq", Role::Gateway));
    tls.reload().unwrap();
    assert!(!Arc::ptr_eq(&tls.current(), &in_force));
    assert_eq!(*tls.reloads().borrow(), 1);
}

/// `bashu serve` on a dev federation member whose `[tls]` was edited.
async fn start_with_tls(
    edit: impl FnOnce(&mut bashu_gateway::config::TlsConfig, &bashu_gateway::devpki::DevMember),
) -> String {
    let dir = tempfile::tempdir().unwrap();
    let fed = bashu_gateway::devpki::init(dir.path(), &["cq", "sc"]).unwrap();
    let member = fed.member("cq").unwrap();
    let mut config = bashu_gateway::config::Config::load(&member.config).unwrap();
    edit(&mut config.tls, member);
    match bashu_gateway::app::start(config).await {
        Ok(gateway) => {
            gateway.shutdown().await;
            panic!("the gateway started");
        }
        Err(err) => err.to_string(),
    }
}

#[tokio::test]
async fn the_gateway_does_not_start_with_a_foreign_crl_or_a_wrong_certificate() {
    // The dev CA's name, another key.
    let impostor = DevCa::generate("Bashu dev federation CA").unwrap();
    let crl_pem = impostor.crl(&[]).unwrap();
    let err = start_with_tls(|tls, member| {
        let crl = member.dir.join("foreign.crl");
        std::fs::write(&crl, &crl_pem).unwrap();
        tls.crls = vec![crl];
    })
    .await;
    assert!(
        err.contains("foreign.crl") && err.contains("CRL signature does not verify"),
        "{err}"
    );

    let err = start_with_tls(|tls, member| {
        tls.cert = member.credit_bank_cert.clone();
        tls.key = member.credit_bank_key.clone();
    })
    .await;
    assert!(
        err.contains("credit-bank.crt") && err.contains("not usable as this gateway's certificate"),
        "{err}"
    );
}
