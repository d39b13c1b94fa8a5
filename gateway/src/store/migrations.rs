//! Schema migrations, tracked by `PRAGMA user_version`.
//!
//! The schema is data: migration `i` (0-based) brings the database from
//! version `i` to `i + 1`. Migrations are append-only; never edit one that
//! has shipped. Each runs in its own transaction together with the version
//! bump, so a crash leaves the database at a whole version.

use super::{BackendSource, StoreError};
use rusqlite::{Connection, TransactionBehavior};

/// One step of the schema.
pub(super) enum Migration {
    /// Statements run as one batch.
    Sql(&'static str),
    /// A step SQL cannot express on its own.
    Code(fn(&Connection) -> Result<(), BackendSource>),
}

impl Migration {
    pub(super) fn apply(&self, conn: &Connection) -> Result<(), BackendSource> {
        match self {
            Migration::Sql(sql) => Ok(conn.execute_batch(sql)?),
            Migration::Code(step) => step(conn),
        }
    }
}

/// Every migration, in order. Timestamps are UTC Unix nanoseconds.
pub(super) const MIGRATIONS: &[Migration] = &[
    // 1: exchanges + outbox, inbox + ack point, audit log + its head.
    Migration::Sql(
        r#"
    CREATE TABLE exchanges (
        seq               INTEGER PRIMARY KEY AUTOINCREMENT,
        exchange_id       TEXT    NOT NULL UNIQUE,
        origin            TEXT    NOT NULL,
        credential_id     TEXT    NOT NULL,
        credential_digest TEXT    NOT NULL,
        destination       TEXT    NOT NULL,
        chain             TEXT    NOT NULL,
        status            TEXT    NOT NULL CHECK (status IN
                              ('accepted', 'forwarded', 'delivered', 'rejected', 'dead-lettered')),
        accepted_at       INTEGER NOT NULL,
        forwarded_at      INTEGER,
        settled_at        INTEGER,
        updated_at        INTEGER NOT NULL,
        attempts          INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
        last_error        TEXT,
        problem           TEXT,
        UNIQUE (origin, credential_id),
        CHECK ((status IN ('accepted', 'forwarded')) = (settled_at IS NULL)),
        CHECK ((status = 'rejected') = (problem IS NOT NULL))
    );
    CREATE INDEX exchanges_by_status ON exchanges (status, seq);

    CREATE TABLE outbox (
        exchange_seq    INTEGER PRIMARY KEY REFERENCES exchanges (seq),
        destination     TEXT    NOT NULL,
        queued_at       INTEGER NOT NULL,
        next_attempt_at INTEGER NOT NULL,
        attempts        INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0)
    );
    CREATE INDEX outbox_by_destination ON outbox (destination, exchange_seq);

    CREATE TABLE inbox (
        cursor      INTEGER PRIMARY KEY AUTOINCREMENT,
        exchange_id TEXT    NOT NULL UNIQUE,
        origin      TEXT    NOT NULL,
        received_at INTEGER NOT NULL,
        chain       TEXT    NOT NULL
    );

    CREATE TABLE inbox_ack (
        id          INTEGER PRIMARY KEY CHECK (id = 1),
        acked_up_to INTEGER NOT NULL CHECK (acked_up_to >= 0)
    );
    INSERT INTO inbox_ack (id, acked_up_to) VALUES (1, 0);

    CREATE TABLE audit (
        seq         INTEGER PRIMARY KEY,
        at          INTEGER NOT NULL,
        exchange_id TEXT,
        event       TEXT    NOT NULL,
        detail      TEXT    NOT NULL,
        prev_hash   TEXT    NOT NULL,
        hash        TEXT    NOT NULL
    );

    -- The last entry, written with every append: verification compares the
    -- chain's end against it, so truncating the log is detected too.
    CREATE TABLE audit_head (
        id   INTEGER PRIMARY KEY CHECK (id = 1),
        seq  INTEGER NOT NULL,
        hash TEXT    NOT NULL
    );
    INSERT INTO audit_head (id, seq, hash)
        VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');
    "#,
    ),
    // 2: the receiver's inbox is also keyed by the original credential
    // (SPEC v1.1 §4): the same original from one origin enters it once,
    // whatever exchangeId it comes under. Rows stored before this version
    // keep NULL here and are not covered (NULLs never collide).
    Migration::Sql(
        r#"
    ALTER TABLE inbox ADD COLUMN credential_id TEXT;
    CREATE UNIQUE INDEX inbox_by_original ON inbox (origin, credential_id);
    "#,
    ),
    // 3: the dead-letter sweep finds expired outbox items by
    // age; readiness probes write to `health`; the data directory's
    // identity marker is checked against `store_identity`.
    Migration::Sql(
        r#"
    CREATE INDEX outbox_by_queued_at ON outbox (queued_at);

    CREATE TABLE health (
        id        INTEGER PRIMARY KEY CHECK (id = 1),
        probed_at INTEGER NOT NULL
    );
    INSERT INTO health (id, probed_at) VALUES (1, 0);

    CREATE TABLE store_identity (
        id         INTEGER PRIMARY KEY CHECK (id = 1),
        store_id   TEXT    NOT NULL,
        member     TEXT    NOT NULL,
        created_at INTEGER NOT NULL
    );
    "#,
    ),
    // 4: signed checkpoints of the audit head (own, and peers' as witnessed).
    // The JWS is the evidence; the other columns are copies of its payload
    // for ordering and lookup, never trusted by `bashu audit verify`.
    Migration::Sql(
        r#"
    CREATE TABLE audit_checkpoints (
        id   INTEGER PRIMARY KEY AUTOINCREMENT,
        seq  INTEGER NOT NULL CHECK (seq >= 0),
        head TEXT    NOT NULL,
        at   INTEGER NOT NULL,
        jws  TEXT    NOT NULL
    );

    CREATE TABLE witnessed_checkpoints (
        id         INTEGER PRIMARY KEY AUTOINCREMENT,
        member     TEXT    NOT NULL,
        seq        INTEGER NOT NULL CHECK (seq >= 0),
        head       TEXT    NOT NULL,
        at         INTEGER NOT NULL,
        fetched_at INTEGER NOT NULL,
        jws        TEXT    NOT NULL,
        UNIQUE (member, jws)
    );
    CREATE INDEX witnessed_by_member ON witnessed_checkpoints (member, id);
    "#,
    ),
    // 5: per-destination delivery leases (SPEC v1.1 §5). `token` is the
    // fencing token: it only grows, so a released or expired lease keeps
    // its row and the next holder gets a greater one.
    Migration::Sql(
        r#"
    CREATE TABLE delivery_leases (
        destination TEXT    PRIMARY KEY,
        holder      TEXT    NOT NULL,
        token       INTEGER NOT NULL CHECK (token > 0),
        expires_at  INTEGER NOT NULL
    );
    "#,
    ),
    // 6: an exchange's chain (~3 KB) moves to a table of its own. It is
    // written once, while the exchange row changes on every settle and
    // attempt: with the chain inline each row filled a page of its own, so
    // each settle rewrote a page per exchange. Row digests still cover the
    // chain (audit.rs joins it back), so old audit entries verify unchanged.
    Migration::Sql(
        r#"
    CREATE TABLE exchange_chains (
        exchange_seq INTEGER PRIMARY KEY REFERENCES exchanges (seq),
        chain        TEXT    NOT NULL
    );
    INSERT INTO exchange_chains (exchange_seq, chain) SELECT seq, chain FROM exchanges;
    ALTER TABLE exchanges DROP COLUMN chain;
    "#,
    ),
    // 7: the `exchanges.status` CHECK, same values, evaluated inline.
    Migration::Code(status_check_inline),
];

/// Migration 1's CHECK on `exchanges.status`, as stored in `sqlite_schema`.
const STATUS_CHECK_IN: &str = "CHECK (status IN
                              ('accepted', 'forwarded', 'delivered', 'rejected', 'dead-lettered'))";
/// The same constraint as migration 7 stores it.
const STATUS_CHECK_OR: &str = "CHECK (status = 'accepted' OR status = 'forwarded' OR status = 'delivered'
                              OR status = 'rejected' OR status = 'dead-lettered')";

/// Migration 7. SQLite compiles an `IN` list of more than two constants
/// into an ephemeral table that every INSERT and every status UPDATE of
/// `exchanges` builds and tears down (13 % of the store bench's
/// instructions, measured before and after); a chain of `=`
/// is evaluated inline. The constraint allows exactly the same rows and the
/// table's content does not change, so this is the procedure SQLite
/// documents for such changes ("Making Other Kinds Of Table Schema
/// Changes", lang_altertable.html): edit the stored `CREATE TABLE` under
/// `writable_schema` and bump the schema cookie so that every connection,
/// in any process, parses the table again. It refuses a schema whose text
/// it does not recognise rather than guess.
fn status_check_inline(conn: &Connection) -> Result<(), BackendSource> {
    let cookie: i64 = conn.query_row("PRAGMA schema_version", [], |r| r.get(0))?;
    conn.pragma_update(None, "writable_schema", true)?;
    let edited = conn
        .execute(
            "UPDATE sqlite_schema SET sql = replace(sql, ?1, ?2)
             WHERE type = 'table' AND name = 'exchanges' AND instr(sql, ?1) > 0",
            [STATUS_CHECK_IN, STATUS_CHECK_OR],
        )
        .and_then(|n| {
            conn.pragma_update(None, "schema_version", cookie + 1)?;
            Ok(n)
        });
    // Off again whatever happened: the transaction rolls back on error.
    conn.pragma_update(None, "writable_schema", false)?;
    match edited? {
        1 => Ok(()),
        n => Err(format!("expected the status CHECK of migration 1 in one table, found {n}").into()),
    }
}

/// Applies every migration the database has not seen yet. Safe to call on
/// every open; a database newer than this binary is refused.
pub(super) fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let latest = i64::try_from(MIGRATIONS.len()).unwrap_or(i64::MAX);
    for (version, step) in (1_i64..).zip(MIGRATIONS) {
        let migration = |source: rusqlite::Error| StoreError::Migration {
            backend: super::sqlite::BACKEND,
            version,
            source: Box::new(source),
        };
        // IMMEDIATE: two processes opening a fresh database at once must not
        // both decide to apply the same migration.
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(migration)?;
        let current: i64 = tx
            .query_row("PRAGMA user_version", [], |row| row.get(0))
            .map_err(migration)?;
        if current > latest {
            return Err(StoreError::SchemaTooNew {
                found: current,
                supported: MIGRATIONS.len(),
            });
        }
        if current >= version {
            continue;
        }
        step.apply(&tx).map_err(|source| StoreError::Migration {
            backend: super::sqlite::BACKEND,
            version,
            source,
        })?;
        tx.pragma_update(None, "user_version", version)
            .map_err(migration)?;
        tx.commit().map_err(migration)?;
    }
    Ok(())
}

/// The schema version of an open database.
pub(super) fn schema_version(conn: &Connection) -> Result<i64, StoreError> {
    conn.query_row("PRAGMA user_version", [], |row| row.get(0))
        .map_err(super::sqlite::sqlite("reading the schema version"))
}

#[cfg(test)]
mod tests {
    use super::{Connection, MIGRATIONS, STATUS_CHECK_IN, STATUS_CHECK_OR};
    use crate::store::audit;
    use crate::store::domain::audit::{AuditEntry, RowTable, GENESIS_HASH};
    use crate::store::domain::entries;
    use crate::store::{AuditHead, NewExchange, SqliteStore, Store};
    use rusqlite::params;
    use time::OffsetDateTime;

    /// A database as a binary of `version` left it.
    fn at_version(path: &std::path::Path, version: usize) -> Connection {
        let conn = Connection::open(path).unwrap();
        for (v, step) in (1_i64..).zip(&MIGRATIONS[..version]) {
            step.apply(&conn).unwrap();
            conn.pragma_update(None, "user_version", v).unwrap();
        }
        conn
    }

    const STATUSES: [&str; 5] = ["accepted", "forwarded", "delivered", "rejected", "dead-lettered"];

    /// An exchange row in `status`, meeting the table's other CHECKs.
    fn insert(conn: &Connection, id: &str, status: &str) -> rusqlite::Result<usize> {
        let settled = (!matches!(status, "accepted" | "forwarded")).then_some(2_i64);
        let problem = (status == "rejected").then_some("{}");
        conn.execute(
            "INSERT INTO exchanges (exchange_id, origin, credential_id, credential_digest, destination,
                                    status, accepted_at, settled_at, updated_at, problem)
             VALUES (?1, 'cq', ?1, 'd', 'sc', ?2, 1, ?3, 1, ?4)",
            params![id, status, settled, problem],
        )
    }

    /// `OpenEphemeral` instructions in the programs of an exchange insert
    /// and a status update: the temporary table an `IN` list compiles to.
    fn ephemeral_tables(conn: &Connection) -> usize {
        [
            "INSERT INTO exchanges (exchange_id, origin, credential_id, credential_digest, destination,
                                    status, accepted_at, updated_at)
             VALUES ('x', 'cq', 'x', 'd', 'sc', 'accepted', 1, 1)",
            "UPDATE exchanges SET status = 'forwarded' WHERE seq = 1",
        ]
        .iter()
        .map(|sql| {
            let mut explain = conn.prepare(&format!("EXPLAIN {sql}")).unwrap();
            let ops = explain.query_map([], |r| r.get::<_, String>(1)).unwrap();
            ops.filter(|op| op.as_deref() == Ok("OpenEphemeral")).count()
        })
        .sum()
    }

    fn exchanges_sql(conn: &Connection) -> String {
        conn.query_row(
            "SELECT sql FROM sqlite_schema WHERE type = 'table' AND name = 'exchanges'",
            [],
            |r| r.get(0),
        )
        .unwrap()
    }

    /// Migration 7 keeps every row and allows exactly the statuses it
    /// allowed before, and no insert or status update builds a temporary
    /// table for the check any more.
    #[test]
    fn the_status_check_allows_the_same_values_and_is_evaluated_inline() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v6.db");
        let conn = at_version(&path, 6);
        for status in STATUSES {
            insert(&conn, &format!("old-{status}"), status).unwrap();
        }
        assert_eq!(ephemeral_tables(&conn), 2, "one per statement before");
        drop(conn);

        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(store.schema_version().unwrap(), 7);
        drop(store);
        let conn = Connection::open(&path).unwrap();
        assert_eq!(ephemeral_tables(&conn), 0);
        assert!(exchanges_sql(&conn).contains(STATUS_CHECK_OR));
        let check: String = conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(check, "ok");
        let rows: i64 = conn
            .query_row("SELECT count(*) FROM exchanges", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, 5);
        for status in STATUSES {
            insert(&conn, &format!("new-{status}"), status).unwrap();
        }
        for bad in ["lost", "Accepted", "accepted ", ""] {
            let err = insert(&conn, "bad", bad).unwrap_err();
            assert!(
                err.to_string().contains("CHECK constraint failed"),
                "{bad:?}: {err}"
            );
        }
    }

    /// A `CREATE TABLE` text migration 7 does not know is refused, and the
    /// database stays at version 6 with its schema untouched.
    #[test]
    fn migration_7_refuses_a_status_check_it_does_not_recognise() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v6.db");
        let conn = at_version(&path, 6);
        let cookie: i64 = conn.query_row("PRAGMA schema_version", [], |r| r.get(0)).unwrap();
        conn.pragma_update(None, "writable_schema", true).unwrap();
        conn.execute(
            "UPDATE sqlite_schema SET sql = replace(sql, ?1, ?2) WHERE name = 'exchanges'",
            [
                STATUS_CHECK_IN,
                "CHECK (status IN ('accepted', 'forwarded', 'delivered', 'rejected', 'dead-lettered'))",
            ],
        )
        .unwrap();
        conn.pragma_update(None, "schema_version", cookie + 1).unwrap();
        conn.pragma_update(None, "writable_schema", false).unwrap();
        let before = exchanges_sql(&conn);
        assert!(!before.contains(STATUS_CHECK_IN));
        drop(conn);

        let err = SqliteStore::open(&path).expect_err("migration 7 must refuse");
        assert!(
            matches!(err, crate::store::StoreError::Migration { version: 7, .. }),
            "{err:?}"
        );
        let conn = Connection::open(&path).unwrap();
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
        assert_eq!(version, 6);
        assert_eq!(exchanges_sql(&conn), before);
    }

    /// A database a version-5 binary wrote (the chain inline, its audit
    /// entry's digest taken over that row) opens under the current schema:
    /// the chain moves to its table, the old entry still verifies and the
    /// delivery worker reads the chain.
    #[test]
    fn chains_leave_version_5_rows_and_their_digests_still_verify() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v5.db");
        let conn = at_version(&path, 5);
        let new = NewExchange {
            exchange_id: "ex-1".into(),
            credential_id: "urn:uuid:c-1".into(),
            credential_digest: "ab".repeat(32),
            origin: "cq".into(),
            destination: "sc".into(),
            chain: vec!["original-jws".into(), "interchange-jws".into()],
            accepted_at: OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap(),
        };
        let at = 1_700_000_000_000_000_000_i64;
        conn.execute(
            "INSERT INTO exchanges (exchange_id, origin, credential_id, credential_digest, destination,
                                    chain, status, accepted_at, updated_at)
             VALUES ('ex-1', 'cq', 'urn:uuid:c-1', ?1, 'sc', ?2, 'accepted', ?3, ?3)",
            params![
                new.credential_digest,
                serde_json::to_string(&new.chain).unwrap(),
                at
            ],
        )
        .unwrap();
        conn.execute(
            "INSERT INTO outbox (exchange_seq, destination, queued_at, next_attempt_at) VALUES (1, 'sc', ?1, ?1)",
            params![at],
        )
        .unwrap();
        let digest = conn
            .query_row(
                "SELECT seq, exchange_id, origin, credential_id, credential_digest, destination, chain,
                        status, accepted_at, forwarded_at, settled_at, updated_at, attempts, last_error, problem
                 FROM exchanges",
                [],
                |r| audit::row_digest(RowTable::Exchanges, r),
            )
            .unwrap();
        let genesis = AuditHead {
            seq: 0,
            hash: GENESIS_HASH.into(),
        };
        let entry = AuditEntry::next(&genesis, at, entries::accepted(&new, 1), Some(digest));
        audit::store_entry(&conn, &entry).unwrap();
        drop(conn);

        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(store.schema_version().unwrap(), 7);
        assert_eq!(store.audit_verify().unwrap().entries, 1);
        let outbox = store.pending_outbox("sc", 10).unwrap();
        assert_eq!(outbox.len(), 1);
        assert_eq!(outbox[0].chain, new.chain);
        let columns: Vec<String> = Connection::open(&path)
            .unwrap()
            .prepare("SELECT name FROM pragma_table_info('exchanges')")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert!(!columns.iter().any(|c| c == "chain"), "{columns:?}");
    }
}
