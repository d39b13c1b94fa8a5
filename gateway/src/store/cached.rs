//! Statements through SQLite's prepared-statement cache: the hot paths run
//! the same few statements thousands of times a second, and parsing their
//! SQL text again on every call showed up in profiles.

use rusqlite::{Connection, Params, Row};

/// How many prepared statements each connection keeps (the store has fewer
/// distinct statements than this, so none is parsed twice).
pub(super) const STATEMENT_CACHE: usize = 96;

/// `execute` and `query_row` with cached statements.
pub(super) trait Cached {
    fn exec<P: Params>(&self, sql: &str, params: P) -> rusqlite::Result<usize>;
    fn row<T, P, F>(&self, sql: &str, params: P, f: F) -> rusqlite::Result<T>
    where
        P: Params,
        F: FnOnce(&Row<'_>) -> rusqlite::Result<T>;
}

impl Cached for Connection {
    fn exec<P: Params>(&self, sql: &str, params: P) -> rusqlite::Result<usize> {
        self.prepare_cached(sql)?.execute(params)
    }

    fn row<T, P, F>(&self, sql: &str, params: P, f: F) -> rusqlite::Result<T>
    where
        P: Params,
        F: FnOnce(&Row<'_>) -> rusqlite::Result<T>,
    {
        self.prepare_cached(sql)?.query_row(params, f)
    }
}
