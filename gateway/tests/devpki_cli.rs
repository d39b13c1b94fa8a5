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

#[test]
fn dev_init_replicas_writes_one_config_per_replica_without_echoing_the_password() {
    let dir = tempfile::tempdir().unwrap();
    let out = bashu()
        .args(["dev", "init", "--dir"])
        .arg(dir.path())
        .args([
            "--replicas",
            "3",
            "--store-url",
            "postgres://bashu:hunter2@127.0.0.1:5432/bashu_sc",
        ])
        .args(["--replicated-member", "sc"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    for i in 1..=3 {
        let config = dir.path().join(format!("sc/replica-{i}/gateway.toml"));
        let text = std::fs::read_to_string(&config).unwrap();
        assert!(text.contains("hunter2"), "the replica needs the URL to connect");
        assert!(
            stdout.contains(&format!("replica {i}: api 127.0.0.1:")),
            "{stdout}"
        );
    }
    assert!(
        !dir.path().join("cq/replica-1").exists(),
        "only the named member runs as replicas"
    );
    assert!(
        stdout.contains("postgres://bashu:***@127.0.0.1:5432/bashu_sc"),
        "{stdout}"
    );
    assert!(
        !stdout.contains("hunter2"),
        "the password must not be printed: {stdout}"
    );

    // --replicas without a database is a usage error.
    let usage = bashu()
        .args(["dev", "init", "--dir"])
        .arg(dir.path().join("other"))
        .args(["--replicas", "2"])
        .output()
        .unwrap();
    assert_eq!(usage.status.code(), Some(2));
}

#[test]
fn store_backup_points_a_postgres_deployment_to_postgres_tools() {
    let dir = tempfile::tempdir().unwrap();
    let init = bashu()
        .args(["dev", "init", "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(init.status.success());
    let config = dir.path().join("cq/gateway.toml");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("\n[store]\nurl = \"postgres://bashu:hunter2@127.0.0.1:1/bashu_cq\"\n");
    std::fs::write(&config, text).unwrap();
    let out = bashu()
        .args(["store", "backup", "--config"])
        .arg(&config)
        .arg("--out")
        .arg(dir.path().join("backup.db"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("pg_basebackup"), "{stderr}");
    assert!(!stderr.contains("hunter2"), "{stderr}");
    assert!(!dir.path().join("backup.db").exists());
}
