//! docs/operations.md "Adding a member", end to end: `cq` and `sc` run as
//! real `bashu serve` processes; `gz` is added with the `bashu` commands of
//! the procedure alone (certificates from the federation CA, federation key
//! pair, key store, credit-bank key); `cq` and `sc` learn about it by an
//! edit of `[peers]` and SIGHUP, without a restart (same processes); then
//! credentials travel cq → gz and gz → sc.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

use bashu_e2e::{exchange_id, init_federation, subject, FAST_DELIVERY};
use bashu_gateway::devfed::CreditBank;
use bashu_gateway::devpki::{free_ports, DevMember};
use std::io::{BufRead, BufReader, Write as _};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const TIMEOUT: Duration = Duration::from_secs(60);

/// The `bashu` binary (under its e2e name).
fn bashu(args: &[&str]) {
    let out = Command::new(env!("CARGO_BIN_EXE_e2e-gateway"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "bashu {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A `bashu serve` process whose stderr lines are kept; killed on drop.
struct Gateway {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Gateway {
    fn start(config: &Path) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_e2e-gateway"))
            .args(["serve", "--config"])
            .arg(config)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&lines);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let mut g = Self { child, lines };
        g.wait_for("listening on", 1);
        g
    }

    /// Waits (bounded) until `n` stderr lines contain `needle`.
    fn wait_for(&mut self, needle: &str, n: usize) {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let count = self
                .lines
                .lock()
                .unwrap()
                .iter()
                .filter(|l| l.contains(needle))
                .count();
            if count >= n {
                return;
            }
            assert!(
                self.child.try_wait().unwrap().is_none(),
                "gateway exited: {:#?}",
                self.lines.lock().unwrap()
            );
            assert!(
                Instant::now() < deadline,
                "no {needle:?}: {:#?}",
                self.lines.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `kill -HUP <pid>`, as the docs say.
    fn hangup(&self) {
        let status = Command::new("kill")
            .args(["-HUP", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    fn assert_running(&mut self, pid: u32) {
        assert_eq!(self.child.id(), pid);
        assert!(
            self.child.try_wait().unwrap().is_none(),
            "gateway {pid} exited: {:#?}",
            self.lines.lock().unwrap()
        );
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn append(path: &Path, text: &str) {
    let mut f = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

async fn delivered(bank: &CreditBank, id: &str) {
    let doc = bank
        .wait_for_status(id, &["delivered", "rejected", "dead-lettered"], TIMEOUT)
        .await
        .unwrap();
    assert_eq!(doc["status"], "delivered", "{doc}");
}

/// The single inbox item of `bank`: its exchange id and chain length.
async fn inbox(bank: &CreditBank) -> Vec<(String, usize)> {
    let page = bank.inbox(None, 100).await.unwrap();
    assert_eq!(page.status.as_u16(), 200, "{}", page.body);
    page.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["exchangeId"].as_str().unwrap().to_owned(),
                i["chain"].as_array().unwrap().len(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_is_added_with_the_cli_and_sighup_without_restarting_anyone() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let fed = init_federation(root, &["cq", "sc"]).unwrap();
    let (cq, sc) = (fed.member("cq").unwrap(), fed.member("sc").unwrap());
    let mut cq_gw = Gateway::start(&cq.config);
    let mut sc_gw = Gateway::start(&sc.config);
    let (cq_pid, sc_pid) = (cq_gw.child.id(), sc_gw.child.id());

    // 1. The federation CA issues gz's certificates.
    let gz = root.join("gz");
    bashu(&[
        "pki",
        "issue",
        "--ca-cert",
        s(&fed.ca_cert),
        "--ca-key",
        s(&fed.ca_key),
        "--member",
        "gz",
        "--out-dir",
        s(&gz),
        "--ip",
        "127.0.0.1",
    ]);
    // 2. gz's federation key pair, key store and the credit bank's key.
    bashu(&[
        "keys",
        "federation-keypair",
        "--member",
        "gz",
        "--out-private",
        s(&gz.join("federation.jwk")),
        "--out-public",
        s(&gz.join("federation.pub.jwk")),
    ]);
    bashu(&[
        "keys",
        "generate",
        "--member",
        "gz",
        "--keystore",
        s(&gz.join("keys.json")),
    ]);
    bashu(&[
        "keys",
        "issuer-keypair",
        "--member",
        "gz",
        "--out-private",
        s(&gz.join("issuer.jwk")),
        "--out-public",
        s(&gz.join("issuer.pub.jwk")),
    ]);
    bashu(&[
        "keys",
        "import",
        "--keystore",
        s(&gz.join("keys.json")),
        "--jwk",
        s(&gz.join("issuer.pub.jwk")),
    ]);
    // 3. gz's gateway.toml (as in the docs), and gz starts.
    let ports = free_ports(2).unwrap();
    let api = SocketAddr::from((Ipv4Addr::LOCALHOST, ports[0]));
    let metrics = SocketAddr::from((Ipv4Addr::LOCALHOST, ports[1]));
    std::fs::write(
        gz.join("gateway.toml"),
        format!(
            r#"member = "gz"
framework = "wfs"
data_dir = "data"

[listen]
api = "{api}"
metrics = "{metrics}"

[tls]
ca = "../ca.pem"
cert = "gateway.crt"
key = "gateway.key"

[trust]
keystore = "keys.json"
federation_key = "federation.jwk"

[peers.cq]
url = "{cq_url}"
federation_key = "../cq/federation.pub.jwk"

[peers.sc]
url = "{sc_url}"
federation_key = "../sc/federation.pub.jwk"
{FAST_DELIVERY}"#,
            cq_url = cq.url(),
            sc_url = sc.url(),
        ),
    )
    .unwrap();
    let _gz_gw = Gateway::start(&gz.join("gateway.toml"));

    // 4. cq and sc add [peers.gz] and reload on SIGHUP.
    let peer =
        format!("\n[peers.gz]\nurl = \"https://{api}\"\nfederation_key = \"../gz/federation.pub.jwk\"\n");
    for (m, gw) in [(cq, &mut cq_gw), (sc, &mut sc_gw)] {
        append(&m.config, &peer);
        gw.hangup();
        gw.wait_for("added=gz", 1);
    }
    cq_gw.assert_running(cq_pid);
    sc_gw.assert_running(sc_pid);

    // 5. Credentials travel cq → gz and gz → sc.
    let gz_member = DevMember {
        id: "gz".into(),
        framework: "wfs".into(),
        config: gz.join("gateway.toml"),
        api_addr: api,
        metrics_addr: metrics,
        gateway_cert: gz.join("gateway.crt"),
        gateway_key: gz.join("gateway.key"),
        credit_bank_cert: gz.join("credit-bank.crt"),
        credit_bank_key: gz.join("credit-bank.key"),
        operator_cert: gz.join("operator.crt"),
        operator_key: gz.join("operator.key"),
        federation_key: gz.join("federation.jwk"),
        federation_public_key: gz.join("federation.pub.jwk"),
        keystore: gz.join("keys.json"),
        issuer_key: gz.join("issuer.jwk"),
        data_dir: gz.join("data"),
        dir: gz.clone(),
    };
    let cq_bank = CreditBank::new(cq, &fed.ca_cert).unwrap();
    let gz_bank = CreditBank::new(&gz_member, &fed.ca_cert).unwrap();
    let sc_bank = CreditBank::new(sc, &fed.ca_cert).unwrap();

    let answer = cq_bank
        .submit(&cq_bank.issue(subject("cq", 0)).unwrap(), "gz")
        .await
        .unwrap();
    assert_eq!(answer.status.as_u16(), 202, "{}", answer.body);
    let cq_to_gz = exchange_id(&answer.body);
    let answer = gz_bank
        .submit(&gz_bank.issue(subject("gz", 1)).unwrap(), "sc")
        .await
        .unwrap();
    assert_eq!(answer.status.as_u16(), 202, "{}", answer.body);
    let gz_to_sc = exchange_id(&answer.body);

    delivered(&cq_bank, &cq_to_gz).await;
    delivered(&gz_bank, &gz_to_sc).await;
    assert_eq!(inbox(&gz_bank).await, [(cq_to_gz, 3)]);
    assert_eq!(inbox(&sc_bank).await, [(gz_to_sc, 3)]);

    // Nobody was restarted.
    cq_gw.assert_running(cq_pid);
    sc_gw.assert_running(sc_pid);
}
