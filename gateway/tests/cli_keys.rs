//! `bashu keys …` end to end through the binary.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

use bashu_gateway::jose::{Alg, SigningKey, VerifyingKey};
use bashu_gateway::trust::KeySet;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("gateway.toml"),
            r#"
member = "cq"
framework = "cqf"
data_dir = "data"
[listen]
api = "127.0.0.1:7443"
[tls]
ca = "ca.pem"
cert = "gateway.crt"
key = "gateway.key"
[trust]
keystore = "keystore.json"
federation_key = "federation.jwk"
keyset_ttl_secs = 600
[delivery]
dead_letter_after_secs = 5000
"#,
        )
        .unwrap();
        SigningKey::generate(Alg::EdDsa, "cq-fed")
            .unwrap()
            .save_private(&dir.path().join("federation.jwk"))
            .unwrap();
        Self { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn keys(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_bashu"));
        cmd.arg("keys")
            .args(args)
            .arg("--config")
            .arg(self.path("gateway.toml"));
        let out = cmd.output().unwrap();
        // Private key material never reaches the terminal.
        let secrets = std::fs::read_to_string(self.path("keystore.json")).unwrap_or_default();
        let v: Value = serde_json::from_str(&secrets).unwrap_or(Value::Null);
        for k in v["keys"].as_array().into_iter().flatten() {
            if let Some(d) = k["jwk"]["d"].as_str() {
                assert!(!String::from_utf8_lossy(&out.stdout).contains(d));
                assert!(!String::from_utf8_lossy(&out.stderr).contains(d));
            }
        }
        out
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.keys(args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    fn list(&self) -> Vec<Value> {
        serde_json::from_str::<Value>(&self.ok(&["list", "--json"]))
            .unwrap()
            .as_array()
            .unwrap()
            .clone()
    }

    fn status(&self, kid: &str) -> (String, Value) {
        let row = self.list().into_iter().find(|r| r["kid"] == kid).unwrap();
        (
            row["status"].as_str().unwrap().to_owned(),
            row["retire_after"].clone(),
        )
    }
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn generate_import_list_and_file_mode() {
    let env = Env::new();
    let k1 = env.ok(&["generate"]);
    assert!(k1.starts_with("cq-gw-"), "{k1}");
    assert_eq!(mode(&env.path("keystore.json")), 0o600);
    let k2 = env.ok(&["generate", "--alg", "eddsa"]);

    let bank = SigningKey::generate(Alg::Es256, "cq-cb-bank1").unwrap();
    std::fs::write(
        env.path("bank.pub.jwk"),
        Value::Object(bank.public_jwk()).to_string(),
    )
    .unwrap();
    assert_eq!(
        env.ok(&["import", "--jwk", env.path("bank.pub.jwk").to_str().unwrap()]),
        "cq-cb-bank1"
    );
    // A private JWK is refused.
    bank.save_private(&env.path("bank.jwk")).unwrap();
    let out = env.keys(&["import", "--jwk", env.path("bank.jwk").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));

    let table = env.ok(&["list"]);
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("KID") && lines[0].contains("RETIRE_AFTER"),
        "{table}"
    );
    assert!(lines
        .iter()
        .any(|l| l.contains(&k1) && l.contains("active") && l.contains("ES256")));
    assert!(lines
        .iter()
        .any(|l| l.contains(&k2) && l.contains("next") && l.contains("EdDSA")));
    assert!(lines
        .iter()
        .any(|l| l.contains("cq-cb-bank1") && l.contains("issuer")));
}

#[test]
fn rotate_promotes_after_the_wait_and_publishes() {
    let env = Env::new();
    let old = env.ok(&["generate"]);
    let before = now();
    let new = env.ok(&["rotate", "--wait", "0", "--retire-window", "100"]);
    assert_ne!(new, old);
    assert_eq!(env.status(&new).0, "active");
    let (status, retire_after) = env.status(&old);
    assert_eq!(status, "retiring");
    let t = retire_after.as_i64().unwrap();
    assert!(t >= before + 100 && t <= now() + 100, "{t}");

    // The rotation published twice; a later publish continues the sequence.
    let fed = VerifyingKey::load(&env.path("federation.jwk")).unwrap();
    let out = env.path("keyset.jws");
    let jws = env.ok(&["publish", "--out", out.to_str().unwrap()]);
    assert_eq!(std::fs::read_to_string(&out).unwrap().trim(), jws);
    // Also next to the key store, for gateways whose federation key is offline.
    assert_eq!(
        std::fs::read_to_string(env.path("keystore.keyset.jws"))
            .unwrap()
            .trim(),
        jws
    );
    let set = KeySet::verify(&jws, &fed, now()).unwrap();
    assert_eq!(set.iss, "cq");
    assert_eq!(set.exp - set.iat, 600);
    assert_eq!(set.key(&new).unwrap().status.as_str(), "active");
    let again = KeySet::verify(&env.ok(&["publish"]), &fed, now()).unwrap();
    assert_eq!(again.seq, set.seq + 1);
}

#[test]
fn promote_retire_revoke() {
    let env = Env::new();
    let a = env.ok(&["generate"]);
    let b = env.ok(&["generate"]);
    // The only active key cannot be retired.
    assert_eq!(env.keys(&["retire", &a]).status.code(), Some(1));
    env.ok(&["promote", &b]);
    // Default window comes from delivery.dead_letter_after_secs.
    let (status, after) = env.status(&a);
    assert_eq!(status, "retiring");
    assert!(after.as_i64().unwrap() >= now() + 5000 - 5);
    env.ok(&["revoke", &a]);
    assert_eq!(env.status(&a).0, "revoked");
    assert_eq!(env.keys(&["promote", &a]).status.code(), Some(1));
    assert_eq!(env.keys(&["revoke", "no-such-kid"]).status.code(), Some(1));
}

#[test]
fn usage_errors_exit_2() {
    let out = Command::new(env!("CARGO_BIN_EXE_bashu"))
        .args(["keys", "list"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = Command::new(env!("CARGO_BIN_EXE_bashu"))
        .args(["keys", "frobnicate"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let env = Env::new();
    assert_eq!(env.keys(&["generate", "--alg", "rs256"]).status.code(), Some(2));
}

/// `bashu keys issuer-keypair`: private 0600, public 0644, never
/// overwrites, and the public half imports into the operator's key store.
#[test]
fn issuer_keypair_writes_both_halves_and_refuses_to_overwrite() {
    let env = Env::new();
    let (private, public) = (env.path("issuer.jwk"), env.path("issuer.pub.jwk"));
    let run = |extra: &[&str]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_bashu"));
        cmd.args(["keys", "issuer-keypair", "--out-private"])
            .arg(&private)
            .arg("--out-public")
            .arg(&public)
            .args(extra);
        cmd.output().unwrap()
    };
    let out = run(&["--alg", "eddsa", "--member", "cq"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let kid = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(kid.starts_with("cq-cb-"), "{kid}");
    assert_eq!(mode(&private), 0o600);
    assert_eq!(mode(&public), 0o644);
    let key = SigningKey::load(&private).unwrap();
    assert_eq!((key.kid(), key.alg()), (kid.as_str(), Alg::EdDsa));
    let pub_jwk: Value = serde_json::from_str(&std::fs::read_to_string(&public).unwrap()).unwrap();
    assert!(pub_jwk.get("d").is_none(), "public file holds the private part");
    assert_eq!(Value::Object(key.public_jwk()), pub_jwk);
    assert!(!String::from_utf8_lossy(&out.stderr).contains(key.private_jwk()["d"].as_str().unwrap()));

    // Refuses to overwrite either file; the existing key is untouched.
    let before = std::fs::read(&private).unwrap();
    let again = run(&[]);
    assert_eq!(
        again.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert_eq!(std::fs::read(&private).unwrap(), before);

    // The operator imports the public half as the credit bank's key.
    assert_eq!(env.ok(&["import", "--jwk", public.to_str().unwrap()]), kid);
    let default_alg = {
        let (p, q) = (env.path("b.jwk"), env.path("b.pub.jwk"));
        let out = Command::new(env!("CARGO_BIN_EXE_bashu"))
            .args(["keys", "issuer-keypair", "--out-private"])
            .arg(&p)
            .arg("--out-public")
            .arg(&q)
            .output()
            .unwrap();
        assert!(out.status.success());
        SigningKey::load(&p).unwrap().alg()
    };
    assert_eq!(default_alg, Alg::Es256);
}

/// `bashu keys federation-keypair`: the private half (0600) signs the
/// member's key set, the public half (0644) is what peers pin, and the
/// set `keys publish` signs with it verifies with the public file.
#[test]
fn federation_keypair_signs_key_sets_that_its_public_half_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let (private, public) = (
        dir.path().join("federation.jwk"),
        dir.path().join("federation.pub.jwk"),
    );
    let keystore = dir.path().join("keys.json");
    let bashu = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_bashu"))
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8(out.stderr).unwrap(),
        )
    };
    let p = |path: &Path| path.to_str().unwrap().to_owned();
    let pair = [
        "keys",
        "federation-keypair",
        "--member",
        "gz",
        "--out-private",
        &p(&private),
        "--out-public",
        &p(&public),
    ];
    let (code, kid, err) = bashu(&pair);
    assert_eq!(code, Some(0), "{err}");
    let kid = kid.trim();
    assert!(kid.starts_with("gz-federation-"), "{kid}");
    assert_eq!((mode(&private), mode(&public)), (0o600, 0o644));
    let key = SigningKey::load(&private).unwrap();
    assert_eq!((key.kid(), key.alg()), (kid, Alg::EdDsa));
    assert!(!std::fs::read_to_string(&public).unwrap().contains("\"d\""));
    assert!(err.contains("trust.federation_key"), "{err}");

    // Never overwrites.
    let before = std::fs::read(&private).unwrap();
    assert_eq!(bashu(&pair).0, Some(2));
    assert_eq!(std::fs::read(&private).unwrap(), before);

    // A key set signed with it verifies with the public half.
    let (code, _, err) = bashu(&["keys", "generate", "--member", "gz", "--keystore", &p(&keystore)]);
    assert_eq!(code, Some(0), "{err}");
    let (code, jws, err) = bashu(&[
        "keys",
        "publish",
        "--keystore",
        &p(&keystore),
        "--federation-key",
        &p(&private),
    ]);
    assert_eq!(code, Some(0), "{err}");
    let set = KeySet::verify(jws.trim(), &VerifyingKey::load(&public).unwrap(), now()).unwrap();
    assert_eq!(set.iss, "gz");
}
