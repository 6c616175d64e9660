//! The store conformance suite on every backend: SQLite in memory, SQLite in
//! a file (WAL), and PostgreSQL (a fresh schema per test), there both as the
//! role that row-level security binds (the default) and as the tables' owner.

mod sqlite_memory {
    use std::sync::Arc;

    use chatcore::store::SeaOrmStore;
    use chatcore::testkit::store::Fixture;

    async fn fresh() -> Fixture {
        Fixture::new(Arc::new(
            SeaOrmStore::in_memory().await.expect("sqlite in memory"),
        ))
    }

    chatcore::store_conformance_tests!(fresh);
}

mod sqlite_file {
    use std::sync::Arc;

    use chatcore::store::{SeaOrmStore, StoreOptions};
    use chatcore::testkit::store::Fixture;

    async fn fresh() -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("chatcore.db").display()
        );
        let store = SeaOrmStore::open(&url, StoreOptions::default())
            .await
            .expect("sqlite file");
        Fixture::with_cleanup(Arc::new(store.clone()), async move {
            let _ = store.close().await;
            drop(dir);
        })
    }

    chatcore::store_conformance_tests!(fresh);
}

mod postgres {
    use chatcore::testkit::{pg, store::Fixture};

    async fn fresh() -> Fixture {
        if pg::skip_requested() {
            // Explicitly asked for (never under CI): an in-memory store keeps
            // the case meaningful while saying loudly what was skipped.
            eprintln!("CHATCORE_TEST_SKIP_POSTGRES=1: running on SQLite instead of PostgreSQL");
            return Fixture::new(std::sync::Arc::new(
                chatcore::store::SeaOrmStore::in_memory().await.unwrap(),
            ));
        }
        pg::fixture().await
    }

    chatcore::store_conformance_tests!(fresh);
}

/// PostgreSQL run as the login user (the tables' owner): row-level security
/// installed but not binding, the store's statements without tenancy
/// transactions.
mod postgres_as_owner {
    use chatcore::testkit::{pg, store::Fixture};

    async fn fresh() -> Fixture {
        if pg::skip_requested() {
            eprintln!("CHATCORE_TEST_SKIP_POSTGRES=1: running on SQLite instead of PostgreSQL");
            return Fixture::new(std::sync::Arc::new(
                chatcore::store::SeaOrmStore::in_memory().await.unwrap(),
            ));
        }
        pg::fixture_as(None).await
    }

    chatcore::store_conformance_tests!(fresh);
}
