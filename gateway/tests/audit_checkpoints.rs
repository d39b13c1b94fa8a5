//! Signed audit checkpoints (SPEC §5): truncation, deletion and
//! recomputation of the audit chain, and edits of the rows it describes,
//! are caught by `bashu audit verify`; a peer's witnessed copies catch a
//! rewrite even when the own checkpoints were wiped and re-signed; a
//! running gateway serves its checkpoint and its peer witnesses it.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

use bashu_gateway::checkpoint::{self, Checkpointer};
use bashu_gateway::config::Config;
use bashu_gateway::devfed::{mtls_client, DevCluster, FIXTURES};
use bashu_gateway::devpki::DevFederation;
use bashu_gateway::jose::VerifyingKey;
use bashu_gateway::store::{
    self, CheckpointStore, NewExchange, NewInboxItem, SqliteStore, Store, StoreError, WitnessedCheckpoint,
};
use bashu_gateway::transport::Role;
use bashu_gateway::trust::{KeyStore, LocalKeys, ManualClock};
use rusqlite::{params, Connection};
use serde_json::json;
use sha2::{Digest, Sha256};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::{Duration, Instant};
use time::macros::datetime;
use time::OffsetDateTime;

const T0: OffsetDateTime = datetime!(2026-11-25 01:00:00 UTC);
const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

fn hex_sha256(s: &str) -> String {
    Sha256::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// One member of a dev federation (files only; no gateway running).
struct Member {
    config: PathBuf,
    cfg: Config,
}

impl Member {
    fn of(fed: &DevFederation, id: &str) -> Self {
        let config = fed.member(id).unwrap().config.clone();
        let cfg = Config::load(&config).unwrap();
        std::fs::create_dir_all(&cfg.data_dir).unwrap();
        Self { config, cfg }
    }

    fn db(&self) -> PathBuf {
        store::db_path(&self.cfg.data_dir)
    }

    fn store(&self) -> Arc<SqliteStore> {
        Arc::new(SqliteStore::open(&self.db()).unwrap())
    }

    fn raw(&self) -> Connection {
        Connection::open(self.db()).unwrap()
    }

    /// Signs a checkpoint of the current head, as the running gateway would.
    fn sign(&self, at_secs: i64) -> Option<store::StoredCheckpoint> {
        let keys = LocalKeys::open(
            &self.cfg.trust.keystore,
            &self.cfg.trust.federation_key,
            self.cfg.trust.keyset_ttl_secs,
        )
        .unwrap();
        Checkpointer::new(
            self.cfg.member.clone(),
            self.store(),
            Arc::new(keys),
            Arc::new(ManualClock::at_secs(at_secs)),
        )
        .sign_if_moved()
        .unwrap()
    }

    fn verify(&self, extra: &[&str]) -> (Option<i32>, String) {
        let mut args = vec!["audit", "verify", "--config", self.config.to_str().unwrap()];
        args.extend_from_slice(extra);
        let out = bashu(&args);
        (out.status.code(), format!("{}{}", stdout(&out), stderr(&out)))
    }
}

fn federation(dir: &Path) -> DevFederation {
    bashu_gateway::devpki::init(dir, &["cq", "sc"]).unwrap()
}

fn bashu(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_bashu"))
        .args(args)
        .output()
        .unwrap()
}

/// `bashu audit witnessed`: the witness (`config`) exports what it kept of
/// `member`'s checkpoints to `out`.
fn export_witnessed(config: &Path, member: &str, out: &Path) {
    let result = bashu(&[
        "audit",
        "witnessed",
        "--config",
        config.to_str().unwrap(),
        "--member",
        member,
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(result.status.code(), Some(0), "{result:?}");
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn new_exchange(n: u32) -> NewExchange {
    let original = format!("original-jws-{n}");
    NewExchange {
        exchange_id: format!("ex-{n}"),
        credential_id: format!("urn:uuid:cred-{n}"),
        credential_digest: hex_sha256(&original),
        origin: "cq".into(),
        destination: "sc".into(),
        chain: vec![original, format!("interchange-jws-{n}")],
        accepted_at: T0,
    }
}

fn new_inbox(n: u32) -> NewInboxItem {
    NewInboxItem {
        exchange_id: format!("in-{n}"),
        origin: "sc".into(),
        credential_id: format!("urn:uuid:orig-{n}"),
        received_at: T0,
        chain: vec![format!("orig-{n}"), format!("wfs-{n}"), format!("home-{n}")],
    }
}

/// 3 exchanges (one delivered, one failed once), one inbox item and an ack:
/// 7 entries, then a checkpoint; then one more inbox item and an ack (9
/// entries) and a second checkpoint.
fn populate(m: &Member) {
    let store = m.store();
    for n in 1..=3 {
        assert!(store.insert_exchange(new_exchange(n)).unwrap().is_created());
    }
    let lease = store
        .acquire_lease("sc", "test", std::time::Duration::from_secs(60), T0)
        .unwrap()
        .unwrap();
    store.mark_delivered(&lease, "ex-1", T0).unwrap();
    store
        .record_attempt_failure(&lease, "ex-2", "peer down", T0, T0)
        .unwrap();
    assert!(store.insert_inbox(new_inbox(1)).unwrap().is_created());
    store.ack(1, T0).unwrap();
    assert_eq!(m.sign(1_800_000_000).unwrap().seq, 7);
    assert!(store.insert_inbox(new_inbox(2)).unwrap().is_created());
    store.ack(2, T0).unwrap();
    assert_eq!(m.sign(1_800_000_060).unwrap().seq, 9);
    assert_eq!(m.sign(1_800_000_120), None, "head did not move: nothing to sign");
}

/// What an attacker with write access to the database does after editing
/// entries: recomputes every hash and moves the head.
fn recompute_chain(conn: &Connection) {
    let rows: Vec<(i64, i64, Option<String>, String, String)> = conn
        .prepare("SELECT seq, at, exchange_id, event, detail FROM audit ORDER BY seq")
        .unwrap()
        .query_map([], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let mut prev = GENESIS.to_owned();
    let mut last = 0;
    for (seq, at, id, event, detail) in rows {
        let hash = hex_sha256(&json!([prev, seq, at, id, event, detail]).to_string());
        conn.execute(
            "UPDATE audit SET prev_hash = ?1, hash = ?2 WHERE seq = ?3",
            params![prev, hash, seq],
        )
        .unwrap();
        prev = hash;
        last = seq;
    }
    conn.execute(
        "UPDATE audit_head SET seq = ?1, hash = ?2 WHERE id = 1",
        params![last, prev],
    )
    .unwrap();
}

/// The chain and rows alone now pass: only the checkpoints can tell.
fn chain_alone_passes(m: &Member) {
    let report = m.store().audit_verify().unwrap();
    assert!(report.entries < 10, "{report:?}");
}

// (a)
#[test]
fn truncated_tail_with_moved_head_fails_citing_the_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let cq = Member::of(&federation(dir.path()), "cq");
    populate(&cq);
    let (code, out) = cq.verify(&[]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("consistent with 2 own checkpoints up to seq 9"),
        "{out}"
    );

    // Roll back the last two changes completely: entries 8 and 9, the inbox
    // row they describe and the ack point, and move the head to entry 7.
    let raw = cq.raw();
    raw.execute_batch(
        "DELETE FROM audit WHERE seq > 7;
         DELETE FROM inbox WHERE exchange_id = 'in-2';
         UPDATE inbox_ack SET acked_up_to = 1;
         UPDATE audit_head SET seq = 7, hash = (SELECT hash FROM audit WHERE seq = 7);",
    )
    .unwrap();
    chain_alone_passes(&cq);

    let (code, out) = cq.verify(&[]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("INCONSISTENT"), "{out}");
    assert!(
        out.contains("attests entry 9, but the chain has only 7 entries: the log was truncated"),
        "{out}"
    );
}

// (b)
#[test]
fn deleted_log_with_genesis_head_fails() {
    let dir = tempfile::tempdir().unwrap();
    let cq = Member::of(&federation(dir.path()), "cq");
    populate(&cq);
    cq.raw()
        .execute_batch(&format!(
            "DELETE FROM audit; DELETE FROM outbox; DELETE FROM exchange_chains; DELETE FROM exchanges; DELETE FROM inbox;
             UPDATE inbox_ack SET acked_up_to = 0;
             UPDATE audit_head SET seq = 0, hash = '{GENESIS}';"
        ))
        .unwrap();
    assert_eq!(cq.store().audit_verify().unwrap().entries, 0);

    let (code, out) = cq.verify(&[]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("the chain has only 0 entries"), "{out}");
}

// (c)
#[test]
fn changed_entry_with_recomputed_hashes_fails_on_the_signed_head() {
    let dir = tempfile::tempdir().unwrap();
    let cq = Member::of(&federation(dir.path()), "cq");
    populate(&cq);
    let raw = cq.raw();
    let changed = raw
        .execute(
            "UPDATE audit SET detail = replace(detail, 'peer down', 'peer fine') WHERE event = 'attempt-failed'",
            [],
        )
        .unwrap();
    assert_eq!(changed, 1);
    recompute_chain(&raw);
    chain_alone_passes(&cq);

    let (code, out) = cq.verify(&[]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("attests entry 7 with hash"), "{out}");
    assert!(out.contains("attests entry 9 with hash"), "{out}");
    assert!(
        out.contains("the log was rewritten and its hashes recomputed"),
        "{out}"
    );
}

// (c') a checkpoint forged without the gateway key does not verify.
#[test]
fn forged_checkpoint_signature_fails() {
    let dir = tempfile::tempdir().unwrap();
    let cq = Member::of(&federation(dir.path()), "cq");
    populate(&cq);
    let raw = cq.raw();
    let jws: String = raw
        .query_row(
            "SELECT jws FROM audit_checkpoints ORDER BY id DESC LIMIT 1",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let mut parts: Vec<String> = jws.split('.').map(str::to_owned).collect();
    let other = bashu_gateway::jose::SigningKey::generate(bashu_gateway::jose::Alg::Es256, "x").unwrap();
    let forged = bashu_gateway::jose::sign_compact("bashu-audit+jwt", b"{}", &other).unwrap();
    parts[2] = forged.split('.').nth(2).unwrap().to_owned();
    raw.execute(
        "UPDATE audit_checkpoints SET jws = ?1 WHERE jws = ?2",
        params![parts.join("."), jws],
    )
    .unwrap();
    let (code, out) = cq.verify(&[]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("own checkpoint #2"), "{out}");
    assert!(out.contains("signature does not verify"), "{out}");
}

// (d)
#[test]
fn rows_edited_without_an_audit_entry_fail() {
    let edits: [(&str, &str); 6] = [
        (
            "UPDATE exchange_chains SET chain = '[\"other-original\",\"other-interchange\"]'
             WHERE exchange_seq = (SELECT seq FROM exchanges WHERE exchange_id = 'ex-3')",
            "exchange ex-3 differs from what its latest audit entry (3, accepted) recorded",
        ),
        (
            "DELETE FROM exchange_chains WHERE exchange_seq = (SELECT seq FROM exchanges WHERE exchange_id = 'ex-3')",
            "exchange ex-3 differs from what its latest audit entry (3, accepted) recorded",
        ),
        (
            "UPDATE exchanges SET status = 'delivered', settled_at = updated_at WHERE exchange_id = 'ex-2'",
            "exchange ex-2 differs from what its latest audit entry (5, attempt-failed) recorded",
        ),
        (
            "UPDATE inbox SET chain = '[\"a\",\"b\",\"c\"]' WHERE exchange_id = 'in-1'",
            "inbox item in-1 differs from what its latest audit entry (6, inbox-received) recorded",
        ),
        (
            "INSERT INTO inbox (exchange_id, origin, received_at, chain) VALUES ('in-x', 'sc', 0, '[]')",
            "inbox item in-x has no audit entry",
        ),
        (
            "UPDATE inbox_ack SET acked_up_to = 0",
            "the inbox ack point is 0 but the audit log last recorded 2",
        ),
    ];
    for (sql, expected) in edits {
        let dir = tempfile::tempdir().unwrap();
        let cq = Member::of(&federation(dir.path()), "cq");
        populate(&cq);
        assert_eq!(cq.raw().execute(sql, []).unwrap(), 1, "{sql}");
        match cq.store().audit_verify() {
            Err(StoreError::AuditBroken { reason, .. }) => assert!(reason.contains(expected), "{reason}"),
            other => panic!("{sql}: expected AuditBroken, got {other:?}"),
        }
        let (code, out) = cq.verify(&[]);
        assert_eq!(code, Some(1), "{sql}: {out}");
        assert!(out.contains("BROKEN") && out.contains(expected), "{sql}: {out}");
    }
}

// (d') a deleted exchange row is missed too.
#[test]
fn deleted_exchange_row_fails() {
    let dir = tempfile::tempdir().unwrap();
    let cq = Member::of(&federation(dir.path()), "cq");
    populate(&cq);
    cq.raw()
        .execute_batch(
            "DELETE FROM exchange_chains WHERE exchange_seq = (SELECT seq FROM exchanges WHERE exchange_id = 'ex-1');
             DELETE FROM exchanges WHERE exchange_id = 'ex-1'",
        )
        .unwrap();
    match cq.store().audit_verify() {
        Err(StoreError::AuditBroken { reason, .. }) => assert!(
            reason.contains("exchange ex-1 is recorded by audit entry 4 (delivered) but is missing"),
            "{reason}"
        ),
        other => panic!("expected AuditBroken, got {other:?}"),
    }
}

// (e)
#[test]
fn witness_copy_detects_a_recomputed_chain_after_own_checkpoints_were_wiped() {
    let dir = tempfile::tempdir().unwrap();
    let fed = federation(dir.path());
    let (cq, sc) = (Member::of(&fed, "cq"), Member::of(&fed, "sc"));
    populate(&cq);
    // sc witnessed both of cq's checkpoints (as its witness task would).
    let sc_store = sc.store();
    for (n, cp) in (1..).zip(cq.store().checkpoints().unwrap()) {
        let kept = WitnessedCheckpoint {
            member: "cq".into(),
            seq: cp.seq,
            head: cp.head,
            at: cp.at,
            fetched_at: cp.at + n,
            jws: cp.jws,
        };
        assert!(sc_store.save_witnessed(&kept).unwrap());
        assert!(!sc_store.save_witnessed(&kept).unwrap(), "kept once");
    }
    let witness = dir.path().join("sc-witnessed-cq.json");
    export_witnessed(&sc.config, "cq", &witness);
    let (code, out) = cq.verify(&["--witness", witness.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("consistent with 2 checkpoints witnessed by sc up to seq 9"),
        "{out}"
    );

    // The attacker holds the host: rewrites an entry, recomputes the chain,
    // wipes the own checkpoints and has the gateway sign the forged head.
    let raw = cq.raw();
    raw.execute(
        "UPDATE audit SET detail = replace(detail, 'peer down', 'peer fine') WHERE event = 'attempt-failed'",
        [],
    )
    .unwrap();
    recompute_chain(&raw);
    raw.execute("DELETE FROM audit_checkpoints", []).unwrap();
    assert_eq!(cq.sign(1_800_000_600).unwrap().seq, 9);
    let (code, out) = cq.verify(&[]);
    assert_eq!(code, Some(0), "own evidence alone is fooled: {out}");

    let (code, out) = cq.verify(&["--witness", witness.to_str().unwrap()]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("checkpoint witnessed by sc: the checkpoint signed at"),
        "{out}"
    );
    assert!(out.contains("hashes recomputed"), "{out}");

    // A witness file of another member is refused.
    let (code, out) = sc.verify(&["--witness", witness.to_str().unwrap()]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("not of this member"), "{out}");
}

#[test]
fn chain_without_any_checkpoint_is_not_reported_intact() {
    let dir = tempfile::tempdir().unwrap();
    let cq = Member::of(&federation(dir.path()), "cq");
    populate(&cq);
    cq.raw().execute("DELETE FROM audit_checkpoints", []).unwrap();
    let (code, out) = cq.verify(&[]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("no signed checkpoint"), "{out}");
}

#[test]
fn gateway_refuses_to_sign_over_a_rewritten_chain() {
    let dir = tempfile::tempdir().unwrap();
    let cq = Member::of(&federation(dir.path()), "cq");
    populate(&cq);
    let raw = cq.raw();
    raw.execute(
        "UPDATE audit SET detail = replace(detail, 'peer down', 'peer fine') WHERE event = 'attempt-failed'",
        [],
    )
    .unwrap();
    recompute_chain(&raw);
    // A new entry moves the head; the signer checks the last checkpoint first.
    assert!(cq.store().insert_inbox(new_inbox(3)).unwrap().is_created());
    let keys = LocalKeys::open(
        &cq.cfg.trust.keystore,
        &cq.cfg.trust.federation_key,
        cq.cfg.trust.keyset_ttl_secs,
    )
    .unwrap();
    let signer = Checkpointer::new(
        "cq".into(),
        cq.store(),
        Arc::new(keys),
        Arc::new(ManualClock::at_secs(1_800_000_900)),
    );
    assert!(matches!(
        signer.sign_if_moved(),
        Err(checkpoint::CheckpointError::Inconsistent(
            checkpoint::Inconsistency::HeadMismatch { seq: 9, .. }
        ))
    ));
    assert_eq!(cq.store().checkpoints().unwrap().len(), 2, "nothing signed");
}

// --- (f) two running gateways ------------------------------------------------

const FAST: &str = "
[delivery]
initial_backoff_ms = 20
max_backoff_ms = 300

[audit]
checkpoint_interval_secs = 1
witness_interval_secs = 1
";

fn cq_gateway_keys(cfg: &Config) -> Vec<VerifyingKey> {
    let store = KeyStore::load(&cfg.trust.keystore).unwrap();
    vec![store.active_gateway_key().unwrap().verifying_key().clone()]
}

/// Polls `f` every 50 ms until it returns `Some` or 20 s pass.
async fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_serves_a_verifiable_checkpoint_and_its_peer_witnesses_it() {
    let dir = tempfile::tempdir().unwrap();
    let fed = federation(dir.path());
    for m in &fed.members {
        let mut f = std::fs::OpenOptions::new().append(true).open(&m.config).unwrap();
        f.write_all(FAST.as_bytes()).unwrap();
    }
    let cq = Member::of(&fed, "cq");
    let sc = Member::of(&fed, "sc");
    let cluster = DevCluster::start(fed).await.unwrap();

    let bank = cluster.credit_bank("cq").unwrap();
    let fixture = FIXTURES.iter().find(|f| f.member == "cq").unwrap();
    let mut subject = fixture.subject().unwrap();
    subject["id"] = json!("urn:bashu:learner:cq:audit-0001");
    let answer = bank.submit(&bank.issue(subject).unwrap(), "sc").await.unwrap();
    assert_eq!(answer.status.as_u16(), 202, "{}", answer.body);
    let id = answer.exchange_id().unwrap().to_owned();
    let doc = bank
        .wait_for_status(&id, &["delivered"], Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(doc["status"], "delivered", "{doc}");

    // cq's checkpoint of its head (accepted + delivered), served over mTLS to
    // another member's identity and verifiable with cq's gateway key.
    let sc_dev = cluster.federation.member("sc").unwrap();
    let (cert, key) = sc_dev.identity(Role::Gateway);
    let client = mtls_client(&cluster.federation.ca_cert, cert, key).unwrap();
    let url = format!(
        "{}/v1/federation/audit/checkpoint",
        cluster.federation.member("cq").unwrap().url()
    );
    let cq_store = cq.store();
    let head = eventually("cq's head to settle", || {
        let h = cq_store.audit_head().unwrap();
        (h.seq >= 2).then_some(h)
    })
    .await;
    let served = {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let r = client.get(&url).await.unwrap();
            if r.status.as_u16() == 200 {
                let jws = String::from_utf8(r.body.to_vec()).unwrap();
                if checkpoint::peek(&jws).unwrap().seq == head.seq {
                    assert_eq!(
                        r.headers.get("content-type").unwrap(),
                        "application/jwt",
                        "{:?}",
                        r.headers
                    );
                    break jws;
                }
            }
            assert!(Instant::now() < deadline, "no checkpoint at seq {}", head.seq);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let keys = cq_gateway_keys(&cq.cfg);
    let signed = checkpoint::verify(&served, "cq", &keys[0]).unwrap();
    assert_eq!(signed.checkpoint.head, head.hash);
    assert_eq!(signed.checkpoint.iss, "cq");

    // sc keeps a copy.
    let sc_store = sc.store();
    eventually("sc to witness cq's checkpoint", || {
        sc_store
            .witnessed("cq")
            .unwrap()
            .iter()
            .any(|w| w.jws == served)
            .then_some(())
    })
    .await;

    cluster.shutdown().await;
    // Shutdown signed the final head.
    let last = cq.store().latest_checkpoint().unwrap().unwrap();
    assert_eq!(last.seq, cq.store().audit_head().unwrap().seq);

    let witness = dir.path().join("w.json");
    export_witnessed(&sc.config, "cq", &witness);
    let (code, out) = cq.verify(&["--witness", witness.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("checkpoints witnessed by sc up to seq"), "{out}");
    assert!(out.contains("proved: chain of"), "{out}");
}
