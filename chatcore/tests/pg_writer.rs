//! The group-commit writer on PostgreSQL: a thread, runtime and pool of
//! its own, with several batches in flight at once
//! (`StoreOptions::writer_transactions`).

use std::time::Duration;

use chatcore::store::{ChatStore, SeaOrmStore, StoreOptions};
use chatcore::testkit::fixtures::{Seed, new_turn};
use chatcore::testkit::pg;

/// A batch in flight waits for a row another connection has locked (an
/// outcome written by another instance, say). A flush queued after it,
/// and after batches that finish at once, is answered only once that
/// batch commits too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flush_waits_for_a_batch_held_up_in_another_lane() {
    use sea_orm::{ConnectionTrait, Database, TransactionTrait};
    if pg::skip_requested() {
        eprintln!("CHATCORE_TEST_SKIP_POSTGRES=1: skipping the PostgreSQL writer test");
        return;
    }
    let schema = pg::fresh_schema_name();
    let opts = StoreOptions {
        max_connections: 4,
        schema: Some(schema.clone()),
        writer_transactions: 4,
        ..Default::default()
    };
    let store = std::sync::Arc::new(
        SeaOrmStore::open(&pg::url(), opts)
            .await
            .expect("PostgreSQL test database"),
    );
    let seeded = Seed::new("held").create(&*store).await.unwrap();
    let t = seeded.tenant.id;
    let mut pending = Vec::new();
    for i in 0..11 {
        let (_, _, a) = store
            .begin_turn(t, new_turn(seeded.bot.id, &format!("q{i}")))
            .await
            .unwrap();
        pending.push(a.id);
    }
    let raw = Database::connect(pg::url()).await.unwrap();
    let lock = raw.begin().await.unwrap();
    let held = pending[0];
    lock.execute_unprepared(&format!(
        "SELECT 1 FROM {schema}.messages WHERE id = '{}' FOR UPDATE",
        held.0
    ))
    .await
    .unwrap();
    store.record_partial(t, held, "held up".into());
    // Its batch is in flight, waiting for the lock.
    tokio::time::sleep(Duration::from_millis(100)).await;
    for id in &pending[1..] {
        store.record_partial(t, *id, format!("free {id}"));
    }
    let flushing = tokio::spawn({
        let store = store.clone();
        async move { store.flush().await }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !flushing.is_finished(),
        "the flush was answered while a batch queued before it was uncommitted"
    );
    lock.commit().await.unwrap();
    flushing.await.unwrap().unwrap();
    assert_eq!(store.get_message(t, held).await.unwrap().content, "held up");
    for id in &pending[1..] {
        let m = store.get_message(t, *id).await.unwrap();
        assert_eq!(m.content, format!("free {id}"));
    }
    drop(raw);
    SeaOrmStore::drop_schema(&pg::url(), &schema).await.unwrap();
}
