//! The group-commit writer of a SQLite file: writes in place while it is
//! idle without ever blocking the caller's runtime on another connection's
//! lock, and a WAL checkpointed off the turn's path.

use std::path::Path;
use std::time::{Duration, Instant};

use chatcore::store::{ChatStore, SeaOrmStore, StoreOptions, TenantStore};
use chatcore::testkit::fixtures::{Seed, new_turn};

async fn open(db: &Path) -> SeaOrmStore {
    let url = format!("sqlite://{}?mode=rwc", db.display());
    SeaOrmStore::open(&url, StoreOptions::default())
        .await
        .expect("sqlite file")
}

/// User messages in the database file alone (not its WAL), as a backup
/// that copies only `chatcore.db` would find them; `None` for a copy taken
/// while a checkpoint was writing the file.
fn in_file_alone(db: &Path, copy: &Path) -> Option<i64> {
    std::fs::copy(db, copy).expect("copy the database file");
    let _ = std::fs::remove_file(copy.with_extension("db-wal"));
    let c = rusqlite::Connection::open(copy).ok()?;
    c.query_row(
        "SELECT count(*) FROM messages WHERE role = 'user'",
        [],
        |r| r.get(0),
    )
    .ok()
}

/// The WAL is checkpointed into the database file while the store runs,
/// without a flush: the file alone soon holds what was committed (the
/// checkpoint runs on a thread of its own, so no turn waits for it).
#[tokio::test]
async fn the_wal_reaches_the_database_file_without_a_flush() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("chatcore.db");
    let store = open(&db).await;
    let seeded = Seed::new("wal").create(&store).await.unwrap();
    for i in 0..20 {
        store
            .begin_turn(seeded.tenant.id, new_turn(seeded.bot.id, &format!("m{i}")))
            .await
            .unwrap();
    }
    let copy = dir.path().join("copy.db");
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = in_file_alone(&db, &copy);
    while seen != Some(20) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        seen = in_file_alone(&db, &copy);
    }
    assert_eq!(
        seen,
        Some(20),
        "every committed user message is in the file"
    );
    store.close().await.unwrap();
}

/// Another connection holds SQLite's write lock (a second process, an
/// admin write through the store's pool): a turn's start waits for it on
/// the writer's thread, not on the caller's. The caller's runtime, here
/// a single thread, goes on running its other tasks meanwhile, and the
/// turn is written once the lock is released.
#[tokio::test]
async fn a_turn_waiting_for_another_connections_lock_does_not_block_the_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("chatcore.db");
    let store = open(&db).await;
    let seeded = Seed::new("lock").create(&store).await.unwrap();
    // A turn first, so the writer is warm and idle.
    store
        .begin_turn(seeded.tenant.id, new_turn(seeded.bot.id, "first"))
        .await
        .unwrap();

    let other = rusqlite::Connection::open(&db).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();
    let (s, t, b) = (store.clone(), seeded.tenant.id, seeded.bot.id);
    let pending = tokio::spawn(async move { s.begin_turn(t, new_turn(b, "second")).await });
    // Let the turn's task run: were it to wait for the lock on this
    // thread, this task would not run again before SQLite's busy timeout
    // (5 s) ran out.
    let asleep = Instant::now();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let slept = asleep.elapsed();
    assert!(
        slept < Duration::from_millis(2500),
        "the runtime was blocked for {slept:?} while the turn waited for the lock"
    );
    assert!(!pending.is_finished(), "the lock is still held");
    other.execute_batch("COMMIT").unwrap();
    let (conversation, user, _) = pending.await.unwrap().expect("written after the release");
    assert_eq!(user.content, "second");
    assert_eq!(
        store
            .get_conversation(seeded.tenant.id, conversation.id)
            .await
            .unwrap()
            .id,
        conversation.id
    );
    // The tenant's data reads back through the store's own pool.
    assert_eq!(
        store.get_tenant(seeded.tenant.id).await.unwrap().id,
        seeded.tenant.id
    );
    store.close().await.unwrap();
}

/// Under sustained writes the WAL still starts over: SQLite resets it only
/// when a transaction begins with every frame copied into the database
/// file, which a checkpoint running beside a busy writer never achieves
/// alone. Sixteen writers keep the writer busy for at least 1.5 s and
/// 32 MiB of text. Without the reset the WAL holds all of it, about 2.7
/// times the text (each 8 KiB text spans three pages); with it, the WAL
/// file stays below the text written (0.2-0.4 times it here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wal_starts_over_under_sustained_writes() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("chatcore.db");
    let store = open(&db).await;
    let seeded = Seed::new("sustained").create(&store).await.unwrap();
    let text = "x".repeat(8 * 1024);
    let started = Instant::now();
    let written = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (s, t, b, text, written) = (
            store.clone(),
            seeded.tenant.id,
            seeded.bot.id,
            text.clone(),
            written.clone(),
        );
        tasks.push(tokio::spawn(async move {
            use std::sync::atomic::Ordering::Relaxed;
            while started.elapsed() < Duration::from_millis(1500)
                || written.load(Relaxed) < 32 << 20
            {
                s.begin_turn(t, new_turn(b, &text)).await.unwrap();
                written.fetch_add(text.len(), Relaxed);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let written = written.load(std::sync::atomic::Ordering::Relaxed) as u64;
    let wal = std::fs::metadata(db.with_extension("db-wal"))
        .unwrap()
        .len();
    assert!(
        wal < written,
        "the WAL grew to {wal} bytes for {written} bytes of text written"
    );
    store.close().await.unwrap();
}
