//! `bashu dev init` as integrators script it (SPEC §8).

use std::process::Command;

fn bashu() -> Command {
    Command::new(env!("CARGO_BIN_EXE_bashu"))
}

#[test]
fn dev_init_writes_the_federation_and_reports_ports() {
    let dir = tempfile::tempdir().unwrap();
    let out = bashu()
        .args(["dev", "init", "--dir"])
        .arg(dir.path())
        .args(["--members", "cq,sc,gz"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(dir.path().join("ca.pem").is_file());
    for m in ["cq", "sc", "gz"] {
        for f in [
            "gateway.toml",
            "gateway.crt",
            "credit-bank.crt",
            "credit-bank.key",
            "operator.crt",
            "operator.key",
        ] {
            assert!(dir.path().join(m).join(f).is_file(), "{m}/{f}");
        }
        assert!(stdout.contains(&format!("  {m} (")), "{stdout}");
    }
    assert!(stdout.contains("127.0.0.1:"), "{stdout}");
}

#[test]
fn dev_init_defaults_to_cq_and_sc() {
    let dir = tempfile::tempdir().unwrap();
    let out = bashu()
        .args(["dev", "init", "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(dir.path().join("cq/gateway.toml").is_file());
    assert!(dir.path().join("sc/gateway.toml").is_file());
    assert!(!dir.path().join("gz").exists());
}

#[test]
fn dev_init_failures_and_usage_errors_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let bad = bashu()
        .args(["dev", "init", "--dir"])
        .arg(dir.path())
        .args(["--members", "cq,CQ"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("not a member id"));
    let usage = bashu().args(["dev", "init"]).output().unwrap();
    assert_eq!(usage.status.code(), Some(2));
}

/// Issue 13.6: `dev init` on an existing federation refuses (exit 1, files
/// untouched) unless `--force`; `quickstart --dir` does the same.
#[test]
fn dev_init_refuses_a_non_empty_directory_without_force() {
    let dir = tempfile::tempdir().unwrap();
    let first = bashu()
        .args(["dev", "init", "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(first.status.success());
    let ca = std::fs::read(dir.path().join("ca.pem")).unwrap();
    let toml = std::fs::read(dir.path().join("cq/gateway.toml")).unwrap();

    let again = bashu()
        .args(["dev", "init", "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(
        stderr.contains("not empty") && stderr.contains("--force"),
        "{stderr}"
    );
    assert_eq!(std::fs::read(dir.path().join("ca.pem")).unwrap(), ca);
    assert_eq!(std::fs::read(dir.path().join("cq/gateway.toml")).unwrap(), toml);

    let quick = bashu()
        .args(["quickstart", "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(quick.status.code(), Some(1));
    assert_eq!(std::fs::read(dir.path().join("ca.pem")).unwrap(), ca);

    let forced = bashu()
        .args(["dev", "init", "--force", "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(forced.status.success());
    assert_ne!(std::fs::read(dir.path().join("ca.pem")).unwrap(), ca);
}
