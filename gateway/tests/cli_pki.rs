//! `bashu pki`: a federation CA and a member's certificates from the CLI,
//! and the OpenSSL commands it prints for a CA kept elsewhere. What counts
//! is that a real gateway accepts the results: it starts with the issued
//! gateway certificate, and the issued credit-bank and operator
//! certificates get HTTP answers from it.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

use bashu_gateway::app;
use bashu_gateway::config::Config;
use bashu_gateway::devfed::mtls_client;
use bashu_gateway::devpki::{self, DevMember};
use bashu_gateway::transport::{ClientIdentity, Role};
use std::path::Path;
use std::process::{Command, Output};

fn bashu(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_bashu"))
        .args(args)
        .output()
        .unwrap()
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn first_der(path: &Path) -> Vec<u8> {
    let pem = std::fs::read(path).unwrap();
    let der = rustls_pemfile::certs(&mut pem.as_slice())
        .next()
        .unwrap()
        .unwrap()
        .to_vec();
    der
}

/// (serverAuth, clientAuth) of a certificate file.
fn ekus(path: &Path) -> (bool, bool) {
    use x509_parser::prelude::{FromDer, X509Certificate};
    let der = first_der(path);
    let (_, cert) = X509Certificate::from_der(&der).unwrap();
    let eku = cert.extended_key_usage().unwrap().unwrap().value;
    (eku.server_auth, eku.client_auth)
}

fn have_openssl() -> bool {
    Command::new("openssl")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Runs a printed OpenSSL script with `sh -eu`.
fn run_script(script: &str) {
    let out = Command::new("sh").args(["-euc", script]).output().unwrap();
    assert!(
        out.status.success(),
        "script failed: {}\n{script}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Starts `m`'s gateway in-process and checks that its credit-bank and
/// operator certificates get answers: the gateway accepted its own
/// certificate at start and the client certificates at the handshake.
async fn gateway_accepts(ca: &Path, m: &DevMember) {
    let gateway = app::start(Config::load(&m.config).unwrap())
        .await
        .expect("the gateway starts with the issued certificate");
    let (cert, key) = m.identity(Role::CreditBank);
    let bank = mtls_client(ca, cert, key).unwrap();
    let inbox = bank.get(&format!("{}/v1/inbox", m.url())).await.unwrap();
    assert_eq!(inbox.status.as_u16(), 200, "{:?}", inbox.body);
    let (cert, key) = m.identity(Role::Operator);
    let operator = mtls_client(ca, cert, key).unwrap();
    let admin = operator
        .get(&format!("{}/v1/admin/exchanges", m.url()))
        .await
        .unwrap();
    assert_eq!(admin.status.as_u16(), 200, "{:?}", admin.body);
    gateway.shutdown().await;
}

#[test]
fn issue_writes_identities_with_private_keys_0600_and_never_overwrites_without_force() {
    let dir = tempfile::tempdir().unwrap();
    let ca_dir = dir.path().join("ca");
    let out = bashu(&["pki", "ca", "--out-dir", p(&ca_dir)]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(mode(&ca_dir.join("ca.key")), 0o600);
    // A second CA over the first is refused (exit 2) and changes nothing.
    let ca_key = std::fs::read(ca_dir.join("ca.key")).unwrap();
    assert_eq!(
        bashu(&["pki", "ca", "--out-dir", p(&ca_dir)]).status.code(),
        Some(2)
    );
    assert_eq!(std::fs::read(ca_dir.join("ca.key")).unwrap(), ca_key);

    let gz = dir.path().join("gz");
    let (ca_pem, ca_key_path) = (ca_dir.join("ca.pem"), ca_dir.join("ca.key"));
    let issue = |extra: &[&str]| {
        let mut args = vec![
            "pki",
            "issue",
            "--ca-cert",
            p(&ca_pem),
            "--ca-key",
            p(&ca_key_path),
            "--member",
            "gz",
            "--out-dir",
            p(&gz),
        ];
        args.extend_from_slice(extra);
        bashu(&args)
    };
    // A gateway certificate needs the host names peers use.
    let no_host = issue(&[]);
    assert_eq!(no_host.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&no_host.stderr).contains("--dns"));
    assert!(!gz.join("gateway.crt").exists());

    let out = issue(&["--dns", "gz.gateway.example", "--ip", "127.0.0.1"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for role in Role::ALL {
        let (cert, key) = (gz.join(format!("{role}.crt")), gz.join(format!("{role}.key")));
        assert_eq!(mode(&key), 0o600, "{role} key");
        assert_eq!(
            ClientIdentity::from_certificate(&first_der(&cert)).unwrap(),
            ClientIdentity::new("gz", role)
        );
        let expected = if role == Role::Gateway {
            (true, true)
        } else {
            (false, true)
        };
        assert_eq!(ekus(&cert), expected, "{role} EKUs");
    }
    let gateway_text = String::from_utf8_lossy(&std::fs::read(gz.join("gateway.crt")).unwrap()).into_owned();

    // Refused without --force, every file untouched; replaced with it.
    let before = std::fs::read(gz.join("operator.key")).unwrap();
    let again = issue(&["--role", "operator"]);
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));
    assert_eq!(std::fs::read(gz.join("operator.key")).unwrap(), before);
    // A replaced key file ends up 0600 even if it was readable before.
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(gz.join("operator.key"), std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let forced = issue(&["--role", "operator", "--force"]);
    assert!(forced.status.success());
    assert_ne!(std::fs::read(gz.join("operator.key")).unwrap(), before);
    assert_eq!(mode(&gz.join("operator.key")), 0o600);
    assert_eq!(
        String::from_utf8_lossy(&std::fs::read(gz.join("gateway.crt")).unwrap()),
        gateway_text,
        "only the named role is reissued"
    );

    // The wrong key for the CA is refused, naming both files.
    let wrong = bashu(&[
        "pki",
        "issue",
        "--ca-cert",
        p(&ca_dir.join("ca.pem")),
        "--ca-key",
        p(&gz.join("operator.key")),
        "--member",
        "gz",
        "--role",
        "operator",
        "--out-dir",
        p(&dir.path().join("x")),
    ]);
    assert_eq!(wrong.status.code(), Some(1));
    let err = String::from_utf8_lossy(&wrong.stderr);
    assert!(err.contains("ca.pem") && err.contains("operator.key"), "{err}");
}

/// Certificates from `bashu pki issue` (signed by the dev CA that `dev
/// init` wrote) run a gateway and its clients.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issued_certificates_are_accepted_by_a_gateway() {
    let dir = tempfile::tempdir().unwrap();
    let fed = devpki::init(dir.path(), &["cq", "sc"]).unwrap();
    let cq = fed.member("cq").unwrap();
    let out = bashu(&[
        "pki",
        "issue",
        "--ca-cert",
        p(&fed.ca_cert),
        "--ca-key",
        p(&fed.ca_key),
        "--member",
        "cq",
        "--out-dir",
        p(&cq.dir),
        "--ip",
        "127.0.0.1",
        "--force",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    gateway_accepts(&fed.ca_cert, cq).await;
}

/// The commands `--print-openssl` prints, run with the real `openssl`,
/// make certificates the gateway accepts; and a CA made by the printed CA
/// commands signs with `bashu pki issue` (its name is copied exactly).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn printed_openssl_commands_make_certificates_the_gateway_accepts() {
    if !have_openssl() {
        eprintln!("openssl is not installed; skipping");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let fed = devpki::init(dir.path(), &["cq", "sc"]).unwrap();
    let cq = fed.member("cq").unwrap();
    for role in Role::ALL {
        let (cert, key) = cq.identity(role);
        std::fs::remove_file(cert).unwrap();
        std::fs::remove_file(key).unwrap();
    }
    let out = bashu(&[
        "pki",
        "issue",
        "--print-openssl",
        "--ca-cert",
        p(&fed.ca_cert),
        "--ca-key",
        p(&fed.ca_key),
        "--member",
        "cq",
        "--out-dir",
        p(&cq.dir),
        "--dns",
        "localhost",
        "--ip",
        "127.0.0.1",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!cq.gateway_cert.exists(), "--print-openssl writes nothing");
    run_script(&String::from_utf8(out.stdout).unwrap());
    for role in Role::ALL {
        assert_eq!(mode(cq.identity(role).1), 0o600, "{role} key from openssl");
    }
    gateway_accepts(&fed.ca_cert, cq).await;

    // An OpenSSL-made CA, then `bashu pki issue` with it.
    let ca_dir = dir.path().join("openssl-ca");
    let out = bashu(&["pki", "ca", "--print-openssl", "--out-dir", p(&ca_dir)]);
    assert!(out.status.success());
    run_script(&String::from_utf8(out.stdout).unwrap());
    let out = bashu(&[
        "pki",
        "issue",
        "--ca-cert",
        p(&ca_dir.join("ca.pem")),
        "--ca-key",
        p(&ca_dir.join("ca.key")),
        "--member",
        "cq",
        "--out-dir",
        p(&cq.dir),
        "--ip",
        "127.0.0.1",
        "--force",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    std::fs::copy(ca_dir.join("ca.pem"), &fed.ca_cert).unwrap();
    gateway_accepts(&fed.ca_cert, cq).await;
}
