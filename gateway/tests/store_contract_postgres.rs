//! The store contract (tests/store_contract) on PostgreSQL: each case on a
//! fresh database of one throwaway PostgreSQL 15 cluster per test binary
//! (`bashu_gateway::devpg`). `second` opens another `PgStore` on the same
//! database, as another replica would. Skipped with a `SKIPPED` line when
//! PostgreSQL is not installed, unless `BASHU_REQUIRE_POSTGRES=1`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

mod store_contract;

use bashu_gateway::config::StoreUrl;
use bashu_gateway::devpg::DevPostgres;
use bashu_gateway::store::{PgOptions, PgStore, Store};
use std::sync::Arc;

fn postgres() -> Option<store_contract::Backend> {
    let pg = DevPostgres::for_tests("the PostgreSQL store contract case")?;
    let url = StoreUrl::new(pg.create_database().unwrap());
    let options = PgOptions {
        pool_size: 4,
        ..PgOptions::default()
    };
    let store: Arc<dyn Store> = Arc::new(PgStore::connect(&url, options).unwrap());
    Some(store_contract::Backend {
        store,
        second: Box::new(move || Arc::new(PgStore::connect(&url, options).unwrap()) as Arc<dyn Store>),
        keep: Box::new(pg),
    })
}

store_contract_tests!(optional postgres);
