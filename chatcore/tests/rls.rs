//! PostgreSQL row-level security, the second wall: as the role the store
//! runs as (`chatcore_app`), deliberately unfiltered statements on every
//! tenant-owned table see and change only the rows of the transaction's
//! tenant, and none without a tenant; writes of another tenant's rows are
//! refused. The whole store conformance suite also runs as that role
//! (`tests/store.rs`).

use chatcore::domain::TenantId;
use chatcore::store::{ChatStore, DEFAULT_DATABASE_ROLE, SeaOrmStore, StoreOptions, TenantStore};
use chatcore::testkit::{pg, store::seed_every_table};
use migration::m20261201_000005_row_level_security::TENANT_TABLES as BASE_TABLES;
use migration::m20261202_000001_widget::WIDGET_TENANT_TABLES;
use migration::m20261203_000001_cost_and_budgets::TENANT_TABLES as COST_TABLES;

/// Every tenant-owned table: the first wall's, and the ones added since.
const TENANT_TABLES: [(&str, &str); 17] = {
    let mut all = [("", ""); 17];
    let mut i = 0;
    while i < BASE_TABLES.len() {
        all[i] = BASE_TABLES[i];
        i += 1;
    }
    let mut j = 0;
    while j < WIDGET_TENANT_TABLES.len() {
        all[i + j] = WIDGET_TENANT_TABLES[j];
        j += 1;
    }
    let mut k = 0;
    while k < COST_TABLES.len() {
        all[i + j + k] = COST_TABLES[k];
        k += 1;
    }
    all
};
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DatabaseTransaction, DbBackend,
    Statement, TransactionTrait,
};

/// A connection to `schema` as `role` (`None`: the login user, the owner).
async fn connect_as(schema: &str, role: Option<&str>) -> DatabaseConnection {
    let mut co = ConnectOptions::new(format!("{}?sslmode=disable", pg::url()));
    co.max_connections(1).sqlx_logging(false);
    co.set_schema_search_path(format!("{schema},public"));
    if let Some(r) = role {
        let r = r.to_string();
        co.map_sqlx_postgres_opts(move |o| o.options([("role", r.as_str())]));
    }
    Database::connect(co).await.expect("connect")
}

async fn exec(
    txn: &DatabaseTransaction,
    sql: String,
) -> Result<sea_orm::ExecResult, sea_orm::DbErr> {
    txn.execute_raw(Statement::from_string(DbBackend::Postgres, sql))
        .await
}

async fn set(txn: &DatabaseTransaction, setting: &str, value: &str) {
    txn.execute_raw(Statement::from_sql_and_values(
        DbBackend::Postgres,
        "SELECT set_config($1, $2, true)",
        [setting.into(), value.into()],
    ))
    .await
    .expect("set_config");
}

/// The tenant column of every row of `table`, unfiltered.
async fn tenants_of(db: &impl ConnectionTrait, table: &str, col: &str) -> Vec<Option<String>> {
    db.query_all_raw(Statement::from_string(
        DbBackend::Postgres,
        format!("SELECT {col}::text AS t FROM {table}"),
    ))
    .await
    .unwrap_or_else(|e| panic!("SELECT from {table}: {e}"))
    .iter()
    .map(|r| r.try_get::<Option<String>>("", "t").unwrap())
    .collect()
}

struct Seeded {
    store: SeaOrmStore,
    schema: String,
    a: TenantId,
    b: TenantId,
}

async fn seeded() -> Option<Seeded> {
    if pg::skip_requested() {
        eprintln!("CHATCORE_TEST_SKIP_POSTGRES=1: row-level security is PostgreSQL's, skipped");
        return None;
    }
    let (store, schema) = pg::fresh_store().await;
    let a = seed_every_table(&store, "alpha").await.id;
    let b = seed_every_table(&store, "beta").await.id;
    Some(Seeded {
        store,
        schema,
        a,
        b,
    })
}

async fn cleanup(s: Seeded) {
    s.store.close().await.unwrap();
    SeaOrmStore::drop_schema(&pg::url(), &s.schema)
        .await
        .unwrap();
}

#[tokio::test]
async fn unfiltered_reads_as_the_app_role_see_only_the_tenant_set() {
    let Some(s) = seeded().await else { return };
    let (a, b) = (s.a.to_string(), s.b.to_string());
    let owner = connect_as(&s.schema, None).await;
    let app = connect_as(&s.schema, Some(DEFAULT_DATABASE_ROLE)).await;
    for (table, col) in TENANT_TABLES {
        // The owner is not bound: both tenants' rows are there.
        let all = tenants_of(&owner, table, col).await;
        for t in [&a, &b] {
            assert!(
                all.contains(&Some(t.clone())),
                "{table}: the seed wrote no row of {t}"
            );
        }

        // As the app role with tenant A's setting: A's rows, and only them.
        let txn = app.begin().await.unwrap();
        set(&txn, "chatcore.tenant_ids", &a).await;
        let seen = tenants_of(&txn, table, col).await;
        assert!(!seen.is_empty(), "{table}: tenant A sees none of its rows");
        assert!(
            seen.iter().all(|t| t.as_deref() == Some(a.as_str())),
            "{table}: tenant A sees rows of others: {seen:?}"
        );
        txn.commit().await.unwrap();

        // With no setting, in a transaction and outside one: nothing.
        let txn = app.begin().await.unwrap();
        assert_eq!(
            tenants_of(&txn, table, col).await,
            Vec::<Option<String>>::new()
        );
        txn.commit().await.unwrap();
        assert_eq!(
            tenants_of(&app, table, col).await,
            Vec::<Option<String>>::new(),
            "{table}: rows visible without a tenant"
        );

        // A setting from an earlier transaction on the same connection
        // does not outlive it.
        assert!(
            tenants_of(&app, table, col).await.is_empty(),
            "{table}: the tenant setting leaked out of its transaction"
        );

        // The cross-tenant scope sees both.
        let txn = app.begin().await.unwrap();
        set(&txn, "chatcore.all_tenants", "on").await;
        let seen = tenants_of(&txn, table, col).await;
        assert!(seen.contains(&Some(a.clone())) && seen.contains(&Some(b.clone())));
        txn.commit().await.unwrap();
    }
    app.close().await.unwrap();
    owner.close().await.unwrap();
    cleanup(s).await;
}

#[tokio::test]
async fn writes_of_another_tenants_rows_are_refused() {
    let Some(s) = seeded().await else { return };
    let (a, b) = (s.a.to_string(), s.b.to_string());
    let app = connect_as(&s.schema, Some(DEFAULT_DATABASE_ROLE)).await;
    let refused = |r: Result<sea_orm::ExecResult, sea_orm::DbErr>, what: &str| {
        let e = r.expect_err(what).to_string();
        assert!(e.contains("row-level security"), "{what}: {e}");
    };

    // WITH CHECK: inserting a row of B, or moving A's row to B, as A.
    let txn = app.begin().await.unwrap();
    set(&txn, "chatcore.tenant_ids", &a).await;
    refused(
        exec(
            &txn,
            format!(
                "INSERT INTO scopes (id, tenant_id, bot_id, kind, config, created_at) \
                 SELECT gen_random_uuid(), '{b}', bot_id, kind, config, created_at FROM scopes"
            ),
        )
        .await,
        "insert of B's row as A",
    );
    txn.rollback().await.unwrap();
    let txn = app.begin().await.unwrap();
    set(&txn, "chatcore.tenant_ids", &a).await;
    refused(
        exec(&txn, format!("UPDATE bots SET tenant_id = '{b}'")).await,
        "moving A's rows to B",
    );
    txn.rollback().await.unwrap();
    // With no tenant at all, nothing may be written (anonymous audit
    // records excepted).
    let txn = app.begin().await.unwrap();
    refused(
        exec(
            &txn,
            format!(
                "INSERT INTO audit_logs (id, tenant_id, actor_kind, action, metadata, created_at) \
                 VALUES (gen_random_uuid(), '{a}', 'system', 'x', '{{}}', now())"
            ),
        )
        .await,
        "insert without a tenant",
    );
    txn.rollback().await.unwrap();
    let txn = app.begin().await.unwrap();
    exec(
        &txn,
        "INSERT INTO audit_logs (id, tenant_id, actor_kind, action, metadata, created_at) \
         VALUES (gen_random_uuid(), NULL, 'anonymous', 'auth.failed', '{}', now())"
            .into(),
    )
    .await
    .expect("anonymous audit records may be written");
    txn.rollback().await.unwrap();

    // Unfiltered UPDATE and DELETE as A touch A's rows only.
    let txn = app.begin().await.unwrap();
    set(&txn, "chatcore.tenant_ids", &a).await;
    let r = exec(&txn, "UPDATE bots SET name = 'renamed'".into())
        .await
        .unwrap();
    assert_eq!(r.rows_affected(), 2, "A has two bots");
    let r = exec(&txn, "DELETE FROM conversations".into())
        .await
        .unwrap();
    assert_eq!(r.rows_affected(), 1, "A has one conversation");
    txn.commit().await.unwrap();
    let txn = app.begin().await.unwrap();
    let r = exec(&txn, "DELETE FROM messages".into()).await.unwrap();
    assert_eq!(r.rows_affected(), 0, "no tenant: nothing to delete");
    txn.commit().await.unwrap();
    // B's rows are untouched.
    let bots = s
        .store
        .list_bots(s.b, Default::default())
        .await
        .unwrap()
        .data;
    assert!(bots.iter().all(|x| x.name != "renamed"));
    assert_eq!(
        s.store
            .list_conversations(s.b, Default::default(), Default::default())
            .await
            .unwrap()
            .data
            .len(),
        1
    );
    app.close().await.unwrap();
    cleanup(s).await;
}

#[tokio::test]
async fn the_role_owns_nothing_and_migrating_twice_is_harmless() {
    if pg::skip_requested() {
        return;
    }
    let (store, schema) = pg::fresh_store().await;
    // Opening again migrates (nothing pending) and creates nothing twice.
    let again = SeaOrmStore::open(
        &pg::url(),
        StoreOptions {
            schema: Some(schema.clone()),
            max_connections: 2,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let owner = connect_as(&schema, None).await;
    let rows = owner
        .query_all_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT c.relname::text AS name, c.relrowsecurity AS rls, \
               pg_get_userbyid(c.relowner)::text AS owner \
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relkind = 'r'",
            [schema.clone().into()],
        ))
        .await
        .unwrap();
    for (table, _) in TENANT_TABLES {
        let r = rows
            .iter()
            .find(|r| r.try_get::<String>("", "name").unwrap() == table)
            .unwrap_or_else(|| panic!("{table} missing"));
        assert!(r.try_get::<bool>("", "rls").unwrap(), "{table}: RLS off");
        assert_ne!(
            r.try_get::<String>("", "owner").unwrap(),
            DEFAULT_DATABASE_ROLE,
            "{table} is owned by the app role"
        );
    }
    // The store's own connections are the role; as the owner they are not.
    assert_eq!(
        store.current_role().await.unwrap().as_deref(),
        Some(DEFAULT_DATABASE_ROLE)
    );
    let (as_owner, owner_schema) = pg::fresh_store_as(None).await;
    assert_ne!(
        as_owner.current_role().await.unwrap().as_deref(),
        Some(DEFAULT_DATABASE_ROLE)
    );
    as_owner.close().await.unwrap();
    SeaOrmStore::drop_schema(&pg::url(), &owner_schema)
        .await
        .unwrap();
    // `check` (cross-tenant counts) runs as the role.
    assert!(store.check().await.unwrap().is_empty());
    owner.close().await.unwrap();
    again.close().await.unwrap();
    store.close().await.unwrap();
    SeaOrmStore::drop_schema(&pg::url(), &schema).await.unwrap();
}

#[tokio::test]
async fn an_unknown_role_is_a_clear_error() {
    if pg::skip_requested() {
        return;
    }
    let schema = pg::fresh_schema_name();
    let e = SeaOrmStore::connect(
        &pg::url(),
        StoreOptions {
            schema: Some(schema.clone()),
            database_role: Some("chatcore_no_such_role".into()),
            ..Default::default()
        },
    )
    .await
    .expect_err("no such role");
    let text = e.to_string();
    assert!(
        text.contains("chatcore_no_such_role") && text.contains("GRANT"),
        "{text}"
    );
    SeaOrmStore::drop_schema(&pg::url(), &schema).await.unwrap();
}

/// What row-level security costs a read: `get_bot` (one indexed row) as
/// the tables' owner (a statement on the pool) and as the role (a tenancy
/// transaction: BEGIN, set_config, the read, COMMIT), one at a time and 16
/// at once. A measurement, not a check:
/// `cargo test --release -p chatcore --test rls -- --ignored --nocapture read_cost`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn read_cost() {
    const N: u32 = 4000;
    for role in [None, Some(DEFAULT_DATABASE_ROLE)] {
        let (store, schema) = pg::fresh_store_as(role).await;
        let t = seed_every_table(&store, "cost").await.id;
        let bot = store.list_bots(t, Default::default()).await.unwrap().data[0].id;
        for _ in 0..200 {
            store.get_bot(t, bot).await.unwrap();
        }
        let start = std::time::Instant::now();
        for _ in 0..N {
            store.get_bot(t, bot).await.unwrap();
        }
        let serial = start.elapsed() / N;
        let start = std::time::Instant::now();
        let tasks: Vec<_> = (0..16)
            .map(|_| {
                let s = store.clone();
                tokio::spawn(async move {
                    for _ in 0..N / 16 {
                        s.get_bot(t, bot).await.unwrap();
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        let per_sec = f64::from(N) / start.elapsed().as_secs_f64();
        println!(
            "get_bot as {}: {serial:?} per read one at a time, {per_sec:.0} reads/s 16 at once",
            role.unwrap_or("the owner (no RLS)")
        );
        store.close().await.unwrap();
        SeaOrmStore::drop_schema(&pg::url(), &schema).await.unwrap();
    }
}
