//! The migrations on both backends: every table and index is created,
//! `down` removes them all, and `up` works again; the `usage_daily`
//! migration rebuilds the usage rollup from the messages already stored.

use chatcore::domain::*;
use chatcore::store::*;
use chatcore::testkit::fixtures::{self, SystemWrites};
use chatcore::testkit::pg;
use migration::{Migrator, MigratorTrait};
use sea_orm::{ConnectOptions, Database, DatabaseConnection};

const TABLES: &[&str] = &[
    "ai_providers_master",
    "api_keys",
    "audit_logs",
    "bots",
    "chunks",
    "conversations",
    "datasets",
    "documents",
    "messages",
    "scopes",
    "tenant_ai_providers",
    "tenants",
    "usage_daily",
    "instances",
];

const INDEXES: &[&str] = &[
    "ux_api_keys_prefix",
    "ix_api_keys_tenant",
    "ux_bots_tenant_slug",
    "ix_bots_public_slug",
    "ix_conversations_bot_user",
    "ix_conversations_tenant_time",
    "ix_messages_conversation_time",
    "ix_messages_tenant_time",
    "ix_audit_logs_tenant_time",
    "ix_audit_logs_tenant_action",
    "ux_chunks_document_ordinal",
    "ix_chunks_dataset",
    "ix_documents_status",
    "ix_scopes_bot",
    "idx_messages_pending",
];

async fn check_up_down_up(store: &SeaOrmStore) {
    let objs = store.schema_objects().await.unwrap();
    for t in TABLES {
        assert!(
            objs.tables.contains(&t.to_string()),
            "missing table {t}: {:?}",
            objs.tables
        );
    }
    for i in INDEXES {
        assert!(
            objs.indexes.contains(&i.to_string()),
            "missing index {i}: {:?}",
            objs.indexes
        );
    }
    assert_eq!(store.list_catalog().await.unwrap().len(), 5);

    store.migrate_down().await.expect("down");
    let objs = store.schema_objects().await.unwrap();
    for t in TABLES {
        assert!(!objs.tables.contains(&t.to_string()), "down left table {t}");
    }

    store.migrate().await.expect("up again");
    // Migrating twice is a no-op.
    store.migrate().await.expect("up is idempotent");
    assert_eq!(store.list_catalog().await.unwrap().len(), 5, "seeded once");
}

#[tokio::test]
async fn sqlite_up_down_up() {
    let store = SeaOrmStore::in_memory().await.unwrap();
    assert_eq!(store.backend_name(), "sqlite");
    check_up_down_up(&store).await;
}

#[tokio::test]
async fn postgres_up_down_up() {
    if pg::skip_requested() {
        eprintln!("CHATCORE_TEST_SKIP_POSTGRES=1: skipping postgres_up_down_up");
        return;
    }
    let (store, schema) = pg::fresh_store().await;
    assert_eq!(store.backend_name(), "postgres");
    check_up_down_up(&store).await;
    store.close().await.unwrap();
    SeaOrmStore::drop_schema(&pg::url(), &schema).await.unwrap();
}

/// Turns with every kind of outcome, on one tenant: what the backfill must
/// find again. Returns the tenant.
async fn some_turns(s: &dyn Store) -> TenantId {
    let mut nt = fixtures::new_tenant("backfill");
    nt.slug = format!("backfill-{}", uuid::Uuid::now_v7().simple());
    let t = s.create_tenant(nt).await.unwrap();
    let mut np = fixtures::mock_provider();
    np.name = "m".into();
    np.default_model = None;
    let p = s.create_provider_config(t.id, np).await.unwrap();
    let (_, nk) = fixtures::new_key("k", vec![Permission::Chat]);
    let key = s.create_api_key(t.id, nk).await.unwrap();
    let mut bots = vec![];
    for slug in ["b1", "b2"] {
        let b = s
            .create_bot(
                t.id,
                NewBot {
                    name: slug.into(),
                    slug: slug.into(),
                    system_prompt: String::new(),
                    provider_id: p.id,
                    model: None,
                    fallback_provider_id: None,
                    temperature: None,
                    max_tokens: None,
                    context_tokens: 4000,
                    is_public: false,
                    dataset_ids: vec![],
                },
            )
            .await
            .unwrap();
        bots.push(b.id);
    }
    let outcomes = [
        (MessageStatus::Complete, Some((10, 5))),
        (MessageStatus::Error, None),
        (MessageStatus::Cancelled, Some((7, 1))),
        (MessageStatus::Pending, Some((100, 100))),
    ];
    for (i, (status, tokens)) in outcomes.into_iter().enumerate() {
        let (_, _, a) = s
            .begin_turn(
                t.id,
                NewTurn {
                    conversation: TurnConversation::New(NewConversation {
                        bot_id: bots[i % 2],
                        end_user_id: None,
                        title: None,
                        channel: Channel::Api,
                    }),
                    user_content: "q".into(),
                    tool_results: Vec::new(),
                    api_key_id: (i % 2 == 0).then_some(key.id),
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
                status: Some(status),
                usage: tokens.map(|(p, c)| TokenUsage {
                    prompt_tokens: p,
                    completion_tokens: c,
                    total_tokens: p + c,
                    estimated: false,
                }),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    }
    t.id
}

/// Reverting and reapplying the `usage_daily` migration gives the same
/// usage as the store kept while writing.
async fn check_backfill(store: &SeaOrmStore, raw: &DatabaseConnection) {
    let t = some_turns(store).await;
    let days = UsageDays::covering(now() - chrono::Duration::days(1), now()).unwrap();
    let groups = [UsageGroup::Bot, UsageGroup::ApiKey, UsageGroup::Day];
    let mut kept = vec![];
    for g in groups {
        kept.push(store.usage(t, days, g).await.unwrap());
    }
    let total: u64 = kept[0].iter().map(|r| r.total_tokens).sum();
    assert_eq!(
        (kept[0].iter().map(|r| r.requests).sum::<u64>(), total),
        (3, 23),
        "pending turns are not counted: {kept:?}"
    );
    // Every migration after consolidated_init: usage_daily is the second,
    // so it goes last (whatever later migrations are added).
    let after_init = Migrator::migrations().len() as u32 - 1;
    Migrator::down(raw, Some(after_init)).await.unwrap();
    assert!(
        !store
            .schema_objects()
            .await
            .unwrap()
            .tables
            .contains(&"usage_daily".to_string())
    );
    Migrator::up(raw, None).await.unwrap();
    for (g, kept) in groups.into_iter().zip(kept) {
        assert_eq!(store.usage(t, days, g).await.unwrap(), kept, "{g:?}");
    }
}

#[tokio::test]
async fn sqlite_backfill_rebuilds_usage() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("b.db").display());
    let store = SeaOrmStore::open(&url, StoreOptions::default())
        .await
        .unwrap();
    let raw = Database::connect(&url).await.unwrap();
    check_backfill(&store, &raw).await;
    raw.close().await.unwrap();
    store.close().await.unwrap();
}

#[tokio::test]
async fn postgres_backfill_rebuilds_usage() {
    if pg::skip_requested() {
        eprintln!("CHATCORE_TEST_SKIP_POSTGRES=1: skipping postgres_backfill_rebuilds_usage");
        return;
    }
    let (store, schema) = pg::fresh_store().await;
    let mut opts = ConnectOptions::new(pg::url());
    // `public` holds the pgvector extension.
    opts.set_schema_search_path(format!("{schema},public"))
        .max_connections(1)
        .sqlx_logging(false);
    let raw = Database::connect(opts).await.unwrap();
    check_backfill(&store, &raw).await;
    raw.close().await.unwrap();
    store.close().await.unwrap();
    SeaOrmStore::drop_schema(&pg::url(), &schema).await.unwrap();
}
