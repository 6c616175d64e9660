//! PostgreSQL for tests: a fresh schema per test in the database named by
//! `CHATCORE_TEST_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432/test`).
//!
//! A test that cannot connect fails. Set `CHATCORE_TEST_SKIP_POSTGRES=1` to
//! skip PostgreSQL tests on a machine without it; that switch is refused
//! when `CI=true`, so CI never skips them silently.

use std::sync::Arc;

use crate::store::{SeaOrmStore, StoreOptions};
use crate::testkit::store::Fixture;

/// The default test database.
pub const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// The test database URL.
pub fn url() -> String {
    std::env::var("CHATCORE_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_URL.to_string())
}

/// Whether PostgreSQL tests were asked to skip (never under `CI=true`).
pub fn skip_requested() -> bool {
    let skip = std::env::var("CHATCORE_TEST_SKIP_POSTGRES").is_ok_and(|v| v == "1");
    let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
    if skip && ci {
        panic!("CHATCORE_TEST_SKIP_POSTGRES is not honoured under CI=true");
    }
    skip
}

/// A fresh schema name, unique per call.
pub fn fresh_schema_name() -> String {
    format!("cc_test_{}", uuid::Uuid::now_v7().simple())
}

/// A migrated store in a fresh schema; the schema is dropped when the case
/// passed (a failing case leaves it for inspection).
pub async fn fresh_store() -> (SeaOrmStore, String) {
    fresh_store_as(Some(crate::store::DEFAULT_DATABASE_ROLE)).await
}

/// [`fresh_store`] whose pools run as `role` (`None`: as the login user,
/// whom row-level security does not bind).
pub async fn fresh_store_as(role: Option<&str>) -> (SeaOrmStore, String) {
    let url = url();
    let schema = fresh_schema_name();
    let opts = StoreOptions {
        max_connections: 4,
        schema: Some(schema.clone()),
        database_role: role.map(str::to_string),
        ..Default::default()
    };
    let store = SeaOrmStore::open(&url, opts)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL test database unreachable at {url}: {e}"));
    (store, schema)
}

/// A [`Fixture`] for the store conformance suite.
pub async fn fixture() -> Fixture {
    fixture_as(Some(crate::store::DEFAULT_DATABASE_ROLE)).await
}

/// [`fixture`] with the pools run as `role` (see [`fresh_store_as`]).
pub async fn fixture_as(role: Option<&str>) -> Fixture {
    let (store, schema) = fresh_store_as(role).await;
    let url = url();
    Fixture::with_cleanup(Arc::new(store.clone()), async move {
        let _ = store.close().await;
        SeaOrmStore::drop_schema(&url, &schema)
            .await
            .expect("drop test schema");
    })
}
