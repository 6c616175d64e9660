//! `row_level_security` (PostgreSQL only; nothing on SQLite): a second wall
//! behind the `tenant_id` filter of every store query.
//!
//! - Every tenant-owned table (the ones with `tenant_id`, and `tenants`
//!   itself by `id`) gets row-level security with two permissive policies:
//!   - `chatcore_tenant`: a row is visible, and may be written, when its
//!     tenant is in the transaction's setting `chatcore.tenant_ids` (a
//!     comma-separated list of tenant ids; the store sets one id for a
//!     tenant's statements, and the group-commit writer the ids of the
//!     tenants in its batch);
//!   - `chatcore_all_tenants`: every row, when the transaction's setting
//!     `chatcore.all_tenants` is `on`. The store sets it only for the named
//!     operations that are cross-tenant by nature (key lookup by hash
//!     prefix, public bot lookup, operator endpoints, orphaned turns, the
//!     indexing queue, `check`).
//!
//!   With neither setting a statement sees no row and may write none.
//!   `audit_logs` also takes inserts of anonymous records (`tenant_id` NULL:
//!   failed authentications), which only the all-tenants scope can read.
//! - A role `chatcore_app` (NOLOGIN) that the server runs as (`SET ROLE` at
//!   connect, see the store's `database_role`): it owns nothing, so the
//!   policies bind it (table owners and superusers bypass them; the owner
//!   still migrates and runs maintenance). It is created if missing (roles
//!   are cluster-wide: every database and schema shares it), granted to the
//!   migrating user so that user can `SET ROLE` to it, and given DML on this
//!   schema's tables (the catalog and the migration table read-only). A user
//!   that may not create roles gets a notice and no role: the policies are
//!   still installed, and a store configured with the role says at connect
//!   that it is missing.
//!
//! A later migration that adds a table grants `chatcore_app` on it (and
//! adds the policies if the table is tenant-owned).

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DbBackend;

/// The migration.
pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261201_000005_row_level_security"
    }
}

/// The role the server runs as.
pub const APP_ROLE: &str = "chatcore_app";

/// Tenant-owned tables and the column that names the tenant.
pub const TENANT_TABLES: [(&str, &str); 12] = [
    ("tenants", "id"),
    ("tenant_ai_providers", "tenant_id"),
    ("bots", "tenant_id"),
    ("conversations", "tenant_id"),
    ("messages", "tenant_id"),
    ("api_keys", "tenant_id"),
    ("datasets", "tenant_id"),
    ("documents", "tenant_id"),
    ("chunks", "tenant_id"),
    ("scopes", "tenant_id"),
    ("audit_logs", "tenant_id"),
    ("usage_daily", "tenant_id"),
];

/// Tables the role reads and writes that have no tenant.
const SHARED_TABLES: [&str; 1] = ["instances"];
/// Tables the role only reads.
const READ_ONLY_TABLES: [&str; 2] = ["ai_providers_master", "seaql_migrations"];

/// The tenants of the transaction, as a `uuid[]` (NULL when unset).
const TENANTS_EXPR: &str =
    "string_to_array(NULLIF(current_setting('chatcore.tenant_ids', true), ''), ',')::uuid[]";
const ALL_EXPR: &str = "current_setting('chatcore.all_tenants', true) = 'on'";

fn role_sql() -> String {
    let dml = TENANT_TABLES
        .iter()
        .map(|(t, _)| *t)
        .chain(SHARED_TABLES)
        .collect::<Vec<_>>()
        .join(", ");
    let ro = READ_ONLY_TABLES.join(", ");
    // A role is cluster-wide: concurrent migrations of other schemas may
    // create it at the same moment (the loser sees a duplicate).
    format!(
        "DO $rls$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{APP_ROLE}') THEN
    BEGIN
      CREATE ROLE {APP_ROLE} NOLOGIN;
    EXCEPTION
      WHEN duplicate_object OR unique_violation THEN NULL;
      WHEN insufficient_privilege THEN
        RAISE NOTICE 'chatcore: cannot create role {APP_ROLE} (needs CREATEROLE): row-level security is installed but no role is bound by it; see the README';
        RETURN;
    END;
  END IF;
  IF NOT pg_has_role(current_user, '{APP_ROLE}', 'MEMBER') THEN
    BEGIN
      EXECUTE format('GRANT {APP_ROLE} TO %I', current_user);
    EXCEPTION
      WHEN duplicate_object OR unique_violation THEN NULL;
      WHEN insufficient_privilege OR invalid_grant_operation THEN
        RAISE NOTICE 'chatcore: cannot grant {APP_ROLE} to %: grant it to the login user that runs the server', current_user;
    END;
  END IF;
  EXECUTE format('GRANT USAGE ON SCHEMA %I TO {APP_ROLE}', current_schema());
  GRANT SELECT, INSERT, UPDATE, DELETE ON {dml} TO {APP_ROLE};
  GRANT SELECT ON {ro} TO {APP_ROLE};
END
$rls$"
    )
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        let db = m.get_connection();
        if db.get_database_backend() != DbBackend::Postgres {
            return Ok(());
        }
        for (table, col) in TENANT_TABLES {
            let mine = format!("{col} = ANY ({TENANTS_EXPR})");
            db.execute_unprepared(&format!("ALTER TABLE {table} ENABLE ROW LEVEL SECURITY"))
                .await?;
            db.execute_unprepared(&format!(
                "CREATE POLICY chatcore_tenant ON {table} USING ({mine}) WITH CHECK ({mine})"
            ))
            .await?;
            db.execute_unprepared(&format!(
                "CREATE POLICY chatcore_all_tenants ON {table} USING ({ALL_EXPR}) WITH CHECK ({ALL_EXPR})"
            ))
            .await?;
        }
        db.execute_unprepared(
            "CREATE POLICY chatcore_anonymous_audit ON audit_logs FOR INSERT \
             WITH CHECK (tenant_id IS NULL)",
        )
        .await?;
        db.execute_unprepared(&role_sql()).await?;
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        let db = m.get_connection();
        if db.get_database_backend() != DbBackend::Postgres {
            return Ok(());
        }
        db.execute_unprepared("DROP POLICY IF EXISTS chatcore_anonymous_audit ON audit_logs")
            .await?;
        for (table, _) in TENANT_TABLES {
            for p in ["chatcore_tenant", "chatcore_all_tenants"] {
                db.execute_unprepared(&format!("DROP POLICY IF EXISTS {p} ON {table}"))
                    .await?;
            }
            db.execute_unprepared(&format!("ALTER TABLE {table} DISABLE ROW LEVEL SECURITY"))
                .await?;
        }
        // The role and its grants stay: other databases and schemas may use
        // the role, and without the policies the grants only let it do what
        // the owner does (a store configured with it keeps working).
        Ok(())
    }
}
