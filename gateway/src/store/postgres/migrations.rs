//! Schema migrations of the PostgreSQL store, tracked in its own table
//! `bashu_schema_migrations`.
//!
//! Version `n` here is the same logical schema as SQLite's version `n`
//! (`store/migrations.rs`): the same tables, columns, keys and checks, in
//! PostgreSQL's types. Times are UTC Unix nanoseconds (`BIGINT`), chains
//! and problems JSON text, exactly as SQLite stores them, so both backends
//! compute the same audit row digests. Append-only, like SQLite's list.
//!
//! What PostgreSQL adds for replicas: every exchange `seq` and inbox
//! `cursor` comes from a sequence that is only advanced while the audit head
//! row is locked (see the module docs of `postgres`), and `UNIQUE`
//! constraints hold idempotency whatever any replica's code checked.
//!
//! Replicas starting together migrate one at a time: each migration runs
//! in a transaction holding a transaction-level advisory lock, and re-reads
//! the version under it.

use super::{backend_error, BACKEND};
use crate::store::StoreError;
use tokio_postgres::Client;

/// The advisory lock key serialising migrations (any constant; "bashu").
const MIGRATION_LOCK: i64 = 0x62_6173_6875;

/// Every migration, in order.
pub(super) const MIGRATIONS: &[&str] = &[
    // 1: exchanges + outbox, inbox + ack point, audit log + its head.
    r#"
    CREATE TABLE exchanges (
        seq               BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        exchange_id       TEXT    NOT NULL UNIQUE,
        origin            TEXT    NOT NULL,
        credential_id     TEXT    NOT NULL,
        credential_digest TEXT    NOT NULL,
        destination       TEXT    NOT NULL,
        chain             TEXT    NOT NULL,
        status            TEXT    NOT NULL CHECK (status IN
                              ('accepted', 'forwarded', 'delivered', 'rejected', 'dead-lettered')),
        accepted_at       BIGINT  NOT NULL,
        forwarded_at      BIGINT,
        settled_at        BIGINT,
        updated_at        BIGINT  NOT NULL,
        attempts          BIGINT  NOT NULL DEFAULT 0 CHECK (attempts >= 0),
        last_error        TEXT,
        problem           TEXT,
        UNIQUE (origin, credential_id),
        CHECK ((status IN ('accepted', 'forwarded')) = (settled_at IS NULL)),
        CHECK ((status = 'rejected') = (problem IS NOT NULL))
    );
    CREATE INDEX exchanges_by_status ON exchanges (status, seq);
    CREATE INDEX exchanges_by_destination_settled ON exchanges (destination, status, settled_at);

    CREATE TABLE outbox (
        exchange_seq    BIGINT  PRIMARY KEY REFERENCES exchanges (seq),
        destination     TEXT    NOT NULL,
        queued_at       BIGINT  NOT NULL,
        next_attempt_at BIGINT  NOT NULL,
        attempts        BIGINT  NOT NULL DEFAULT 0 CHECK (attempts >= 0)
    );
    CREATE INDEX outbox_by_destination ON outbox (destination, exchange_seq);

    -- Cursors: handed out only under the audit head lock, so in commit order.
    CREATE SEQUENCE inbox_cursor AS BIGINT MINVALUE 1;
    CREATE TABLE inbox (
        cursor      BIGINT  PRIMARY KEY DEFAULT nextval('inbox_cursor'),
        exchange_id TEXT    NOT NULL UNIQUE,
        origin      TEXT    NOT NULL,
        received_at BIGINT  NOT NULL,
        chain       TEXT    NOT NULL
    );
    ALTER SEQUENCE inbox_cursor OWNED BY inbox.cursor;

    CREATE TABLE inbox_ack (
        id          INTEGER PRIMARY KEY CHECK (id = 1),
        acked_up_to BIGINT  NOT NULL CHECK (acked_up_to >= 0)
    );
    INSERT INTO inbox_ack (id, acked_up_to) VALUES (1, 0);

    CREATE TABLE audit (
        seq         BIGINT  PRIMARY KEY,
        at          BIGINT  NOT NULL,
        exchange_id TEXT,
        event       TEXT    NOT NULL,
        detail      TEXT    NOT NULL,
        prev_hash   TEXT    NOT NULL,
        hash        TEXT    NOT NULL
    );

    -- The last entry. Every writing transaction locks this row first
    -- (SELECT ... FOR UPDATE): that one lock orders the audit chain, the
    -- exchange sequence and the inbox cursors across all replicas.
    CREATE TABLE audit_head (
        id   INTEGER PRIMARY KEY CHECK (id = 1),
        seq  BIGINT  NOT NULL,
        hash TEXT    NOT NULL
    );
    INSERT INTO audit_head (id, seq, hash)
        VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');
    "#,
    // 2: the receiver's inbox is also keyed by the original credential.
    r#"
    ALTER TABLE inbox ADD COLUMN credential_id TEXT;
    CREATE UNIQUE INDEX inbox_by_original ON inbox (origin, credential_id);
    "#,
    // 3: dead-letter sweep index, readiness probe row, store identity.
    r#"
    CREATE INDEX outbox_by_queued_at ON outbox (queued_at);

    CREATE TABLE health (
        id        INTEGER PRIMARY KEY CHECK (id = 1),
        probed_at BIGINT  NOT NULL
    );
    INSERT INTO health (id, probed_at) VALUES (1, 0);

    CREATE TABLE store_identity (
        id         INTEGER PRIMARY KEY CHECK (id = 1),
        store_id   TEXT    NOT NULL,
        member     TEXT    NOT NULL,
        created_at BIGINT  NOT NULL
    );
    "#,
    // 4: signed checkpoints of the audit head (own, and peers' as witnessed).
    // Witnessed JWS are unique per member by their digest (a btree entry
    // cannot hold arbitrarily long text).
    r#"
    CREATE TABLE audit_checkpoints (
        id   BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        seq  BIGINT  NOT NULL CHECK (seq >= 0),
        head TEXT    NOT NULL,
        at   BIGINT  NOT NULL,
        jws  TEXT    NOT NULL
    );

    CREATE TABLE witnessed_checkpoints (
        id         BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        member     TEXT    NOT NULL,
        seq        BIGINT  NOT NULL CHECK (seq >= 0),
        head       TEXT    NOT NULL,
        at         BIGINT  NOT NULL,
        fetched_at BIGINT  NOT NULL,
        jws        TEXT    NOT NULL
    );
    CREATE UNIQUE INDEX witnessed_once ON witnessed_checkpoints (member, md5(jws));
    CREATE INDEX witnessed_by_member ON witnessed_checkpoints (member, id);
    "#,
    // 5: per-destination delivery leases (SPEC v1.1 §5). `token` is the
    // fencing token: it only grows; a released or expired lease keeps its row.
    r#"
    CREATE TABLE delivery_leases (
        destination TEXT    PRIMARY KEY,
        holder      TEXT    NOT NULL,
        token       BIGINT  NOT NULL CHECK (token > 0),
        expires_at  BIGINT  NOT NULL
    );
    "#,
];

fn migration_error(version: i64) -> impl Fn(tokio_postgres::Error) -> StoreError {
    move |source| StoreError::Migration {
        backend: BACKEND,
        version,
        source: Box::new(source),
    }
}

/// Applies every migration the database has not seen yet; a database
/// newer than this binary is refused.
pub(super) async fn migrate(client: &mut Client) -> Result<(), StoreError> {
    let latest = i64::try_from(MIGRATIONS.len()).unwrap_or(i64::MAX);
    {
        let setup = migration_error(0);
        let tx = client.transaction().await.map_err(&setup)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await
            .map_err(&setup)?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS bashu_schema_migrations (
                 version    BIGINT      PRIMARY KEY,
                 applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
             )",
        )
        .await
        .map_err(&setup)?;
        tx.commit().await.map_err(&setup)?;
    }
    for (version, sql) in (1_i64..).zip(MIGRATIONS) {
        let failed = migration_error(version);
        let tx = client.transaction().await.map_err(&failed)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await
            .map_err(&failed)?;
        let current = current_version(&tx).await?;
        if current > latest {
            return Err(StoreError::SchemaTooNew {
                found: current,
                supported: MIGRATIONS.len(),
            });
        }
        if current >= version {
            continue;
        }
        tx.batch_execute(sql).await.map_err(&failed)?;
        tx.execute(
            "INSERT INTO bashu_schema_migrations (version) VALUES ($1)",
            &[&version],
        )
        .await
        .map_err(&failed)?;
        tx.commit().await.map_err(&failed)?;
        tracing::info!(backend = BACKEND, version, "store schema migrated");
    }
    Ok(())
}

/// The highest applied version (0 for a new database).
pub(super) async fn current_version(client: &impl tokio_postgres::GenericClient) -> Result<i64, StoreError> {
    client
        .query_one(
            "SELECT COALESCE(MAX(version), 0)::BIGINT FROM bashu_schema_migrations",
            &[],
        )
        .await
        .map(|row| row.get(0))
        .map_err(backend_error("reading the schema version"))
}
