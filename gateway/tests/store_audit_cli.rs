//! `bashu audit verify`: exit codes and output for intact, tampered and
//! missing stores, addressed by `--db` or by `--config`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

use bashu_gateway::store::{self, NewInboxItem, SqliteStore, Store};
use std::path::Path;
use std::process::{Command, Output};
use time::macros::datetime;

fn populate(db: &Path, items: u32) {
    let store = SqliteStore::open(db).unwrap();
    for n in 0..items {
        let item = NewInboxItem {
            exchange_id: format!("ex-{n}"),
            origin: "sc".into(),
            credential_id: format!("urn:uuid:orig-{n}"),
            received_at: datetime!(2026-11-25 03:00 UTC),
            chain: vec![format!("o-{n}"), format!("w-{n}"), format!("h-{n}")],
        };
        assert!(store.insert_inbox(item).unwrap().is_created());
    }
}

fn bashu(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_bashu"))
        .args(args)
        .output()
        .unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn verify_reports_intact_and_broken_logs() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("bashu.db");
    populate(&db, 3);
    let db_arg = db.to_str().unwrap();

    let ok = bashu(&["audit", "verify", "--db", db_arg]);
    assert_eq!(ok.status.code(), Some(0), "{ok:?}");
    assert!(stdout(&ok).contains("intact: 3 entries"), "{}", stdout(&ok));
    assert!(
        stdout(&ok).contains("checkpoints: NOT checked"),
        "{}",
        stdout(&ok)
    );

    rusqlite::Connection::open(&db)
        .unwrap()
        .execute("UPDATE audit SET detail = '{}' WHERE seq = 2", [])
        .unwrap();
    let broken = bashu(&["audit", "verify", "--db", db_arg]);
    assert_eq!(broken.status.code(), Some(1));
    assert!(stdout(&broken).contains("BROKEN at seq 2"), "{}", stdout(&broken));
}

#[test]
fn verify_finds_the_store_and_keys_through_the_config() {
    let dir = tempfile::tempdir().unwrap();
    let fed = bashu_gateway::devpki::init(dir.path(), &["cq", "sc"]).unwrap();
    let config = fed.member("cq").unwrap().config.clone();
    let cfg = bashu_gateway::config::Config::load(&config).unwrap();
    std::fs::create_dir_all(&cfg.data_dir).unwrap();
    let db = store::db_path(&cfg.data_dir);
    populate(&db, 2);
    let config_arg = config.to_str().unwrap();

    // Entries but no signed checkpoint: nothing rules out a rewrite.
    let out = bashu(&["audit", "verify", "--config", config_arg]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(stdout(&out).contains("no signed checkpoint"), "{}", stdout(&out));

    let keys = bashu_gateway::trust::LocalKeys::open(
        &cfg.trust.keystore,
        &cfg.trust.federation_key,
        cfg.trust.keyset_ttl_secs,
    )
    .unwrap();
    let signer = bashu_gateway::checkpoint::Checkpointer::new(
        "cq".into(),
        std::sync::Arc::new(SqliteStore::open(&db).unwrap()),
        std::sync::Arc::new(keys),
        std::sync::Arc::new(bashu_gateway::trust::SystemClock),
    );
    assert_eq!(signer.sign_if_moved().unwrap().unwrap().seq, 2);
    let out = bashu(&["audit", "verify", "--config", config_arg]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let text = stdout(&out);
    assert!(text.contains("intact: 2 entries"), "{text}");
    assert!(
        text.contains("consistent with 1 own checkpoints up to seq 2"),
        "{text}"
    );
}

#[test]
fn verify_refuses_missing_store_and_bad_usage() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.db");
    let out = bashu(&["audit", "verify", "--db", missing.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(!missing.exists(), "verify must not create a store");

    assert_eq!(bashu(&["audit", "verify"]).status.code(), Some(2));
    let both = bashu(&["audit", "verify", "--db", "a", "--config", "b"]);
    assert_eq!(both.status.code(), Some(2));
}
