//! The store contract (tests/store_contract) on SQLite: each case on a
//! fresh database file in a temporary directory.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

mod store_contract;

use bashu_gateway::store::{SqliteStore, Store};
use std::sync::Arc;

fn sqlite() -> store_contract::Backend {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bashu.db");
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&path).unwrap());
    store_contract::Backend {
        store,
        second: Box::new(move || Arc::new(SqliteStore::open(&path).unwrap()) as Arc<dyn Store>),
        keep: Box::new(dir),
    }
}

store_contract_tests!(sqlite);
