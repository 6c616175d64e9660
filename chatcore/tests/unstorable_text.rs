//! Text PostgreSQL cannot store (NUL in `text` and `jsonb`) that reaches
//! the store anyway (the edge refuses it first, naming the field) is an
//! invalid-input error, never an internal one: a 400, not a 500.

use chatcore::store::*;
use chatcore::testkit::fixtures::SystemWrites;
use chatcore::testkit::pg;

#[tokio::test]
async fn nul_in_text_or_json_is_invalid_input_on_postgres() {
    if pg::skip_requested() {
        eprintln!("CHATCORE_TEST_SKIP_POSTGRES=1: skipping a PostgreSQL test");
        return;
    }
    let (store, schema) = pg::fresh_store().await;
    let r = store
        .create_tenant(NewTenant {
            name: "a\0b".into(),
            slug: "nul-text".into(),
            features: serde_json::json!({}),
            ..Default::default()
        })
        .await;
    assert!(matches!(r, Err(StoreError::InvalidInput(_))), "text: {r:?}");
    let r = store
        .create_tenant(NewTenant {
            name: "fine".into(),
            slug: "nul-json".into(),
            features: serde_json::json!({"k": "v\u{0}"}),
            ..Default::default()
        })
        .await;
    assert!(
        matches!(r, Err(StoreError::InvalidInput(_))),
        "jsonb: {r:?}"
    );
    let r = store.get_tenant_by_slug("x\0").await;
    assert!(
        matches!(r, Err(StoreError::InvalidInput(_))),
        "query: {r:?}"
    );
    store.close().await.unwrap();
    SeaOrmStore::drop_schema(&pg::url(), &schema).await.unwrap();
}
