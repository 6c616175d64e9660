//! The group-commit writer on PostgreSQL: a thread, runtime and pool of
//! its own, with several batches in flight at once
//! (`StoreOptions::writer_transactions`).

use std::time::Duration;

use chatcore::store::{ChatStore, SeaOrmStore, StoreOptions};
use chatcore::testkit::fixtures::{Seed, SystemWrites, new_key, new_turn};
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

/// Batches far larger than one statement used to hold (200 rows), with
/// NULLs, quotes and placeholders in the text, end users and none: every
/// column of every row comes back as written, and the rollups (by bot and
/// by end user) are the sums of the outcomes. On PostgreSQL the writer
/// sends a batch's rows as arrays, one statement for any number of rows
/// (`store::sea::unnest`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_of_hundreds_of_rows_store_every_column() {
    use chatcore::domain::{MessageStatus, TokenUsage};
    use chatcore::pricing::Cost;
    use chatcore::store::{AuditStore, MessageCompletion, TurnConversation, UsageDays, UsageGroup};
    if pg::skip_requested() {
        eprintln!("CHATCORE_TEST_SKIP_POSTGRES=1: skipping the PostgreSQL writer test");
        return;
    }
    const TURNS: usize = 600;
    let schema = pg::fresh_schema_name();
    let opts = StoreOptions {
        schema: Some(schema.clone()),
        ..Default::default()
    };
    let store = std::sync::Arc::new(SeaOrmStore::open(&pg::url(), opts).await.unwrap());
    let seeded = Seed::new("wide").create(&*store).await.unwrap();
    let (t, bot) = (seeded.tenant.id, seeded.bot.id);
    // Six keys: a batch adds to several rows of the rollup at once.
    let mut keys = Vec::new();
    for k in 0..6 {
        let (_, nk) = new_key(&format!("wide{k}"), vec![]);
        keys.push(store.create_api_key(t, nk).await.unwrap().id);
    }
    let text = |i: usize| {
        format!(
            "q{i} 'quoted' \"double\" \\ $1 $$ ∑ 🦀 {}",
            "x".repeat(i % 7)
        )
    };
    let begins = (0..TURNS).map(|i| {
        let store = store.clone();
        let mut turn = new_turn(bot, &text(i));
        turn.api_key_id = Some(keys[i % 6]);
        if let TurnConversation::New(n) = &mut turn.conversation {
            n.end_user_id = (i % 3 == 0).then(|| format!("user-{}", i % 5));
        }
        async move { store.begin_turn(t, turn).await.unwrap() }
    });
    let turns = futures::future::join_all(begins).await;
    let finishes = turns.iter().enumerate().map(|(i, (_, user, a))| {
        let store = store.clone();
        assert_eq!(user.content, text(i));
        let done = MessageCompletion {
            content: format!("a{i} '{}'", "y".repeat(i % 5)),
            status: Some(if i % 4 == 0 {
                MessageStatus::Error
            } else {
                MessageStatus::Complete
            }),
            usage: (i % 2 == 0).then_some(TokenUsage {
                prompt_tokens: i as i32,
                completion_tokens: 2,
                total_tokens: i as i32 + 2,
                estimated: i % 6 == 0,
            }),
            error: (i % 4 == 0).then(|| "upstream".to_owned()),
            cost: (i % 2 == 0).then_some(Cost {
                micros: i as i64 * 3,
                cached_tokens: 1,
                priced: true,
            }),
            ..Default::default()
        };
        let id = a.id;
        async move { store.finish_message(t, id, done).await.unwrap() }
    });
    futures::future::join_all(finishes).await;
    store.flush().await.unwrap();
    for (i, (_, user, a)) in turns.iter().enumerate() {
        let u = store.get_message(t, user.id).await.unwrap();
        assert_eq!(u.content, text(i));
        let m = store.get_message(t, a.id).await.unwrap();
        assert_eq!(m.content, format!("a{i} '{}'", "y".repeat(i % 5)));
        assert_eq!(m.error.as_deref(), (i % 4 == 0).then_some("upstream"));
        assert_eq!(
            m.usage.map(|u| u.prompt_tokens),
            (i % 2 == 0).then_some(i as i32)
        );
        assert_eq!(
            m.usage.map(|u| u.estimated),
            (i % 2 == 0).then_some(i % 6 == 0)
        );
    }
    let today = chrono::Utc::now().date_naive();
    let days = UsageDays::new(today, today + chrono::Days::new(1)).unwrap();
    let by_bot = store.usage(t, days, UsageGroup::Bot).await.unwrap();
    let even = (0..TURNS).filter(|i| i % 2 == 0);
    assert_eq!(by_bot.len(), 1);
    assert_eq!(by_bot[0].requests, TURNS as u64);
    assert_eq!(
        by_bot[0].prompt_tokens,
        even.clone().map(|i| i as u64).sum::<u64>()
    );
    assert_eq!(
        by_bot[0].cost_micros,
        even.map(|i| i as i64 * 3).sum::<i64>()
    );
    let by_key = store.usage(t, days, UsageGroup::ApiKey).await.unwrap();
    for (k, key) in keys.iter().enumerate() {
        let row = by_key
            .iter()
            .find(|r| r.group.as_deref() == Some(key.0.to_string().as_str()))
            .unwrap_or_else(|| panic!("no usage row for key {k}: {by_key:?}"));
        let mine = (0..TURNS).filter(|i| i % 6 == k);
        assert_eq!(row.requests, mine.clone().count() as u64);
        let micros: i64 = mine.filter(|i| i % 2 == 0).map(|i| i as i64 * 3).sum();
        assert_eq!(row.cost_micros, micros);
    }
    let by_user = store.usage(t, days, UsageGroup::EndUser).await.unwrap();
    for u in 0..5 {
        let mine: Vec<usize> = (0..TURNS).filter(|i| i % 3 == 0 && i % 5 == u).collect();
        let row = by_user
            .iter()
            .find(|r| r.group.as_deref() == Some(format!("user-{u}").as_str()))
            .unwrap_or_else(|| panic!("no usage row for user-{u}: {by_user:?}"));
        assert_eq!(row.requests, mine.len() as u64);
        let micros: i64 = mine
            .iter()
            .filter(|i| *i % 2 == 0)
            .map(|i| *i as i64 * 3)
            .sum();
        assert_eq!(row.cost_micros, micros);
    }
    SeaOrmStore::drop_schema(&pg::url(), &schema).await.unwrap();
}
