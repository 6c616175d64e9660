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
async fn postgres_has_a_pool_of_the_configured_size_and_the_writers_own() {
    if pg::skip_requested() {
        eprintln!("CHATCORE_TEST_SKIP_POSTGRES=1: skipping postgres pool stats");
        return;
    }
    let (store, schema) = pg::fresh_store().await;
    store.ping().await.unwrap();
    let stats = store.pool_stats();
    check(&stats);
    let names: Vec<_> = stats.iter().map(|p| (p.pool, p.max)).collect();
    assert_eq!(
        names,
        vec![
            ("main", 4),
            (
                "writer",
                chatcore::store::DEFAULT_WRITER_TRANSACTIONS as u32
            )
        ]
    );
    assert!(stats[0].in_use + stats[0].idle >= 1, "{stats:?}");
    assert!(stats[1].in_use + stats[1].idle >= 1, "kept open: {stats:?}");
    store.close().await.unwrap();
    SeaOrmStore::drop_schema(&pg::url(), &schema).await.unwrap();
}

/// After a flush (the server flushes at shutdown) the database file alone
/// holds every write of the group-commit writer: a backup that copies only
/// the `.db` file misses nothing.
#[tokio::test]
async fn after_a_flush_the_sqlite_file_alone_holds_the_writers_writes() {
    use chatcore::domain::AuditRecord;
    use chatcore::store::{AuditStore, PageRequest};
    use chatcore::testkit::fixtures::{self, SystemWrites};
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("w.db");
    let url = format!("sqlite://{}?mode=rwc", db.display());
    let store = SeaOrmStore::open(&url, StoreOptions::default())
        .await
        .unwrap();
    let tenant = store
        .create_tenant(fixtures::new_tenant("backup"))
        .await
        .unwrap();
    let records: Vec<AuditRecord> = (0..50)
        .map(|i| AuditRecord::new(Some(tenant.id), fixtures::system(), format!("test.{i}")))
        .collect();
    // Through the group-commit writer, as every turn's audit records go.
    store.append_audit_batch(records).await.unwrap();
    store.flush().await.unwrap();
    // Only the database file, as a naive backup would copy it.
    let copy = dir.path().join("copy.db");
    std::fs::copy(&db, &copy).unwrap();
    let copy_url = format!("sqlite://{}?mode=rwc", copy.display());
    let restored = SeaOrmStore::connect(&copy_url, StoreOptions::default())
        .await
        .unwrap();
    let page = restored
        .list_audit(
            tenant.id,
            Default::default(),
            PageRequest {
                limit: 100,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let ours = page
        .data
        .iter()
        .filter(|r| r.action.starts_with("test."))
        .count();
    assert_eq!(ours, 50, "the copy of the .db file alone has every record");
    store.close().await.unwrap();
}
