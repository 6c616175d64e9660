//! The `consolidated_init` migration on both backends: every table and
//! index is created, `down` removes them all, and `up` works again.

use chatcore::store::{SeaOrmStore, Store};
use chatcore::testkit::pg;

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
