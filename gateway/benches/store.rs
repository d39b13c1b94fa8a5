//! The SQLite store's write path alone: what one accepted and settled
//! exchange costs the origin's store, without TLS, HTTP or crypto around it
//! (the end-to-end `bashu bench` is too noisy on small machines to show a
//! change of a few percent in one of its parts).
//!
//! One round is what a busy origin does: 16 accepts arrive together and
//! share one group commit through the write queue, the delivery worker
//! reads them from the outbox and settles them as one batch. The database
//! lives on tmpfs (`/dev/shm`) when there is one, so the figure is CPU, not
//! the disk's fsync latency.

use bashu_gateway::store::{self, NewExchange, SettleOutcome, Settlement, SqliteStore, Store};
use criterion::{criterion_group, Criterion};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Accepts per group commit, and exchanges per settled batch.
const ROUND: usize = 16;

/// A base64url-looking link of `len` characters (a chain link's size).
fn link(tag: char, len: usize) -> String {
    std::iter::once(tag)
        .chain("aB3-_x9Z".chars().cycle())
        .take(len)
        .collect()
}

fn new_exchange(n: u64, chain: &[String]) -> NewExchange {
    NewExchange {
        exchange_id: uuid::Uuid::now_v7().to_string(),
        credential_id: format!("urn:uuid:{}", uuid::Uuid::new_v4()),
        credential_digest: format!("{n:064x}"),
        origin: "cq".into(),
        destination: "sc".into(),
        chain: chain.to_vec(),
        accepted_at: time::OffsetDateTime::now_utc(),
    }
}

fn scratch_dir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(dir) = tempfile::tempdir_in(shm) {
            return dir;
        }
    }
    tempfile::tempdir().unwrap_or_else(|e| panic!("temporary directory: {e}"))
}

/// An open store and the runtime and lease one round needs.
struct Bench {
    _dir: tempfile::TempDir,
    store: Arc<dyn Store>,
    rt: tokio::runtime::Runtime,
    lease: bashu_gateway::store::Lease,
    /// The sizes of a fixture credential and its signed translation.
    chain: [String; 2],
    n: u64,
}

impl Bench {
    fn new() -> Self {
        let dir = scratch_dir();
        let store: Arc<dyn Store> =
            Arc::new(SqliteStore::open(&dir.path().join("bench.db")).unwrap_or_else(|e| panic!("{e}")));
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
        let lease = store
            .acquire_lease(
                "sc",
                "bench",
                Duration::from_secs(24 * 3600),
                time::OffsetDateTime::now_utc(),
            )
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("the lease is free"));
        Self {
            _dir: dir,
            store,
            rt,
            lease,
            chain: [link('o', 1_400), link('i', 1_600)],
            n: 0,
        }
    }

    /// 16 accepts sharing a group commit, the outbox read, one settle batch.
    fn round(&mut self) {
        let news: Vec<_> = (0..ROUND)
            .map(|_| {
                self.n += 1;
                new_exchange(self.n, &self.chain)
            })
            .collect();
        let store = &self.store;
        self.rt.block_on(async {
            let answers = futures::future::join_all(news.into_iter().map(|new| {
                let store = Arc::clone(store);
                async move { store::insert_exchange(&store, new).await }
            }))
            .await;
            for a in answers {
                a.unwrap_or_else(|e| panic!("{e}"));
            }
        });
        let due = store
            .pending_outbox("sc", ROUND)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(due.len(), ROUND, "the outbox holds the round");
        let outcomes: Vec<_> = due
            .into_iter()
            .map(|item| Settlement {
                exchange_id: item.exchange_id,
                outcome: SettleOutcome::Delivered,
            })
            .collect();
        store
            .settle_batch(&self.lease, &outcomes, time::OffsetDateTime::now_utc())
            .unwrap_or_else(|e| panic!("{e}"));
    }
}

fn accept_and_settle(c: &mut Criterion) {
    let mut bench = Bench::new();
    let mut group = c.benchmark_group("store");
    group.throughput(criterion::Throughput::Elements(ROUND as u64));
    group.bench_function(
        "sqlite: 16 accepts (one group) + outbox read + one settle batch",
        |b| {
            b.iter_custom(|rounds| {
                let start = Instant::now();
                for _ in 0..rounds {
                    bench.round();
                }
                start.elapsed()
            });
        },
    );
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(8));
    targets = accept_and_settle
}

/// `BASHU_STORE_BENCH_ROUNDS=N` runs exactly N rounds and nothing else, for
/// instruction counts that repeat whatever else the machine does
/// (`valgrind --tool=callgrind`; see docs/performance.md). Otherwise the
/// criterion benchmark runs.
fn main() {
    match std::env::var("BASHU_STORE_BENCH_ROUNDS").map(|v| v.parse::<u64>()) {
        Ok(Ok(rounds)) => {
            let mut bench = Bench::new();
            for _ in 0..rounds {
                bench.round();
            }
            println!("{rounds} rounds of {ROUND} exchanges");
        }
        Ok(Err(e)) => panic!("BASHU_STORE_BENCH_ROUNDS: {e}"),
        Err(_) => {
            benches();
            Criterion::default().configure_from_args().final_summary();
        }
    }
}
