//! `Store::pool_stats` on every backend: which pools there are, and counts
//! that add up.

use chatcore::store::{PoolStats, SQLITE_MAX_READERS, SeaOrmStore, StoreBase, StoreOptions};
use chatcore::testkit::pg;

fn check(stats: &[PoolStats]) {
    for p in stats {
        assert!(p.max >= 1, "{p:?}");
        assert!(p.in_use + p.idle <= p.max, "{p:?}");
    }
}

#[tokio::test]
async fn sqlite_in_memory_has_one_pool_of_one_connection() {
    let store = SeaOrmStore::in_memory().await.unwrap();
    let stats = store.pool_stats();
    check(&stats);
    assert_eq!(stats.len(), 1, "{stats:?}");
    assert_eq!((stats[0].pool, stats[0].max), ("main", 1));
    assert_eq!(stats[0].in_use + stats[0].idle, 1, "kept open: {stats:?}");
}

#[tokio::test]
async fn a_sqlite_file_has_a_reader_pool_and_a_single_writer() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("p.db").display());
    for (asked, got) in [(3, 3), (16, SQLITE_MAX_READERS)] {
        let opts = StoreOptions {
            max_connections: asked,
            ..Default::default()
        };
        let store = SeaOrmStore::open(&url, opts).await.unwrap();
        store.ping().await.unwrap();
        let stats = store.pool_stats();
        check(&stats);
        let names: Vec<_> = stats.iter().map(|p| (p.pool, p.max)).collect();
        assert_eq!(
            names,
            vec![("main", got), ("writer", 1)],
            "asked for {asked}"
        );
        store.close().await.unwrap();
    }
}

#[tokio::test]
async fn postgres_has_one_pool_of_the_configured_size() {
    if pg::skip_requested() {
        eprintln!("CHATCORE_TEST_SKIP_POSTGRES=1: skipping postgres pool stats");
        return;
    }
    let (store, schema) = pg::fresh_store().await;
    store.ping().await.unwrap();
    let stats = store.pool_stats();
    check(&stats);
    assert_eq!(stats.len(), 1, "{stats:?}");
    assert_eq!((stats[0].pool, stats[0].max), ("main", 4));
    assert!(stats[0].in_use + stats[0].idle >= 1, "{stats:?}");
    store.close().await.unwrap();
    SeaOrmStore::drop_schema(&pg::url(), &schema).await.unwrap();
}
