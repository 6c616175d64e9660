//! `SeaOrmStore::check` (behind `chatcore-server check`) on databases
//! damaged on purpose: each kind of damage is found and named; an intact
//! database has no problem.

use chatcore::domain::*;
use chatcore::store::*;
use chatcore::testkit::fixtures::{self, SystemWrites};
use chatcore::testkit::pg;
use migration::MigratorTrait;
use sea_orm::{ConnectionTrait, Database, DatabaseConnection};

async fn some_turns(s: &dyn Store) -> (TenantId, BotId) {
    let mut nt = fixtures::new_tenant("check");
    nt.name = "Check".into();
    nt.slug = format!("check-{}", &uuid::Uuid::now_v7().simple().to_string()[20..]);
    let t = s.create_tenant(nt).await.unwrap();
    let mut np = fixtures::mock_provider();
    np.name = "m".into();
    np.default_model = None;
    let p = s.create_provider_config(t.id, np).await.unwrap();
    let mut nb = fixtures::new_bot(p.id, "b", "echo");
    nb.system_prompt = String::new();
    nb.context_tokens = 1000;
    let b = s.create_bot(t.id, nb).await.unwrap();
    for i in 0..3 {
        let (_, _, a) = s
            .begin_turn(
                t.id,
                NewTurn {
                    conversation: TurnConversation::New(NewConversation {
                        bot_id: b.id,
                        end_user_id: None,
                        title: None,
                        channel: Channel::Api,
                    }),
                    user_content: format!("q{i}"),
                    tool_results: Vec::new(),
                    api_key_id: None,
                    provider: None,
                    model: None,
                },
            )
            .await
            .unwrap();
        s.finish_message(
            t.id,
            a.id,
            MessageCompletion {
                content: "a".into(),
                status: Some(MessageStatus::Complete),
                usage: Some(TokenUsage {
                    prompt_tokens: 2,
                    completion_tokens: 1,
                    total_tokens: 3,
                    estimated: false,
                }),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    }
    (t.id, b.id)
}

async fn damage_and_check(store: &SeaOrmStore, raw: &DatabaseConnection, sqlite: bool) {
    let (t, b) = some_turns(store).await;
    store.flush().await.unwrap();
    assert_eq!(store.check().await.unwrap(), Vec::<String>::new());

    // 1. The rollup disagrees with the messages.
    raw.execute_unprepared("UPDATE usage_daily SET requests = requests + 5")
        .await
        .unwrap();
    // 2. A pending answer whose instance is gone.
    let tid = if sqlite {
        format!("x'{}'", t.0.simple())
    } else {
        format!("'{}'", t.0)
    };
    let bid = if sqlite {
        format!("x'{}'", b.0.simple())
    } else {
        format!("'{}'", b.0)
    };
    let conv = uuid::Uuid::now_v7();
    let cid = if sqlite {
        format!("x'{}'", conv.simple())
    } else {
        format!("'{conv}'")
    };
    let lost = uuid::Uuid::now_v7();
    let lid = if sqlite {
        format!("x'{}'", lost.simple())
    } else {
        format!("'{lost}'")
    };
    let ts = if sqlite {
        format!("'{}'", now().to_rfc3339())
    } else {
        "now()".to_string()
    };
    let json = if sqlite { "'[]'" } else { "'[]'::jsonb" };
    raw.execute_unprepared(&format!(
        "INSERT INTO conversations (id, tenant_id, bot_id, channel, created_at, updated_at) \
         VALUES ({cid}, {tid}, {bid}, 'api', {ts}, {ts})"
    ))
    .await
    .unwrap();
    let msg = |id: uuid::Uuid, conv: &str| {
        let mid = if sqlite {
            format!("x'{}'", id.simple())
        } else {
            format!("'{id}'")
        };
        format!(
            "INSERT INTO messages (id, tenant_id, conversation_id, bot_id, role, content, \
             tokens_estimated, status, source_chunk_ids, created_at, instance_id) VALUES \
             ({mid}, {tid}, {conv}, {bid}, 'assistant', 'half an ans', false, 'pending', {json}, {ts}, {lid})"
        )
    };
    raw.execute_unprepared(&msg(uuid::Uuid::now_v7(), &cid))
        .await
        .unwrap();
    // 3. An orphaned message: its conversation does not exist (foreign
    //    keys switched off, as a careless manual repair would).
    let ghost = uuid::Uuid::now_v7();
    let gid = if sqlite {
        format!("x'{}'", ghost.simple())
    } else {
        format!("'{ghost}'")
    };
    if sqlite {
        raw.execute_unprepared("PRAGMA foreign_keys = OFF")
            .await
            .unwrap();
        raw.execute_unprepared(&msg(uuid::Uuid::now_v7(), &gid))
            .await
            .unwrap();
    } else {
        raw.execute_unprepared("SET session_replication_role = replica")
            .await
            .unwrap();
        raw.execute_unprepared(&msg(uuid::Uuid::now_v7(), &gid))
            .await
            .unwrap();
        raw.execute_unprepared("SET session_replication_role = DEFAULT")
            .await
            .unwrap();
    }
    let problems = store.check().await.unwrap();
    let has = |needle: &str| problems.iter().any(|p| p.contains(needle));
    assert!(has("usage"), "{problems:?}");
    assert!(has("pending turns: 2"), "{problems:?}");
    assert!(
        has("orphaned rows: 1 row(s) of messages whose conversation_id"),
        "{problems:?}"
    );
    if sqlite {
        assert!(has("foreign key: a row of messages"), "{problems:?}");
    }
    // 4. The schema behind the code.
    migration::Migrator::down(raw, Some(1)).await.unwrap();
    let problems = store.check().await.unwrap();
    assert_eq!(problems.len(), 1, "{problems:?}");
    // Only the last one, named.
    let last = {
        migration::Migrator::migrations()
            .last()
            .unwrap()
            .name()
            .to_string()
    };
    assert!(
        problems[0].contains(&format!("1 migration(s) not applied: {last} ")),
        "{problems:?}"
    );
}

#[tokio::test]
async fn sqlite_check_finds_each_damage() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("c.db").display());
    let store = SeaOrmStore::open(&url, StoreOptions::default())
        .await
        .unwrap();
    let raw = Database::connect(&url).await.unwrap();
    damage_and_check(&store, &raw, true).await;
}

#[tokio::test]
async fn postgres_check_finds_each_damage() {
    if pg::skip_requested() {
        return;
    }
    let (store, schema) = pg::fresh_store().await;
    let mut opts = sea_orm::ConnectOptions::new(pg::url());
    opts.set_schema_search_path(format!("{schema},public"))
        .max_connections(1)
        .sqlx_logging(false);
    let raw = Database::connect(opts).await.unwrap();
    damage_and_check(&store, &raw, false).await;
    raw.close().await.unwrap();
    store.close().await.unwrap();
    SeaOrmStore::drop_schema(&pg::url(), &schema).await.unwrap();
}
