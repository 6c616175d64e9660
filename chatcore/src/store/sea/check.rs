//! `SeaOrmStore::check`: the consistency checks a deployer runs
//! (`chatcore-server check`): schema version, foreign keys and orphaned
//! rows, turns left pending by dead instances, and the usage rollup against
//! the messages it counts. Read-only.

use migration::{Migrator, MigratorTrait};
use sea_orm::{ConnectionTrait, DbBackend, Statement};

use super::scope::Tenancy;
use super::{SeaOrmStore, db_err};
use crate::store::{ChatStore, StoreResult};

/// Every foreign key of the schema: (child table, column, parent table, column).
const REFERENCES: [(&str, &str, &str, &str); 22] = [
    ("tenant_ai_providers", "tenant_id", "tenants", "id"),
    (
        "tenant_ai_providers",
        "provider",
        "ai_providers_master",
        "key",
    ),
    ("datasets", "tenant_id", "tenants", "id"),
    ("datasets", "provider_id", "tenant_ai_providers", "id"),
    ("bots", "tenant_id", "tenants", "id"),
    ("bots", "provider_id", "tenant_ai_providers", "id"),
    ("bots", "fallback_provider_id", "tenant_ai_providers", "id"),
    ("api_keys", "tenant_id", "tenants", "id"),
    ("conversations", "tenant_id", "tenants", "id"),
    ("conversations", "bot_id", "bots", "id"),
    ("messages", "tenant_id", "tenants", "id"),
    ("messages", "conversation_id", "conversations", "id"),
    ("messages", "bot_id", "bots", "id"),
    ("messages", "api_key_id", "api_keys", "id"),
    ("documents", "tenant_id", "tenants", "id"),
    ("documents", "dataset_id", "datasets", "id"),
    ("chunks", "tenant_id", "tenants", "id"),
    ("chunks", "dataset_id", "datasets", "id"),
    ("chunks", "document_id", "documents", "id"),
    ("scopes", "tenant_id", "tenants", "id"),
    ("scopes", "bot_id", "bots", "id"),
    ("audit_logs", "tenant_id", "tenants", "id"),
];

impl SeaOrmStore {
    /// Checks the database and describes every problem found, one line
    /// each (empty: all is well).
    pub async fn check(&self) -> StoreResult<Vec<String>> {
        let mut problems = Vec::new();
        // Read-only: the role the store may run as cannot create tables.
        let pending = Migrator::get_pending_migrations_read_only(&self.db)
            .await
            .map_err(db_err)?;
        if !pending.is_empty() {
            let names: Vec<String> = pending.iter().map(|m| m.name().to_string()).collect();
            problems.push(format!(
                "schema: {} migration(s) not applied: {} (run `chatcore-server migrate`)",
                names.len(),
                names.join(", ")
            ));
            // The other checks read the current schema.
            return Ok(problems);
        }
        // Cross-tenant by nature: the counts cover every tenant's rows.
        let db = self.scoped(Tenancy::All).await?;
        let db = &db;
        let count = |sql: String| async move {
            let row = db
                .query_one_raw(Statement::from_string(self.backend, sql))
                .await
                .map_err(db_err)?;
            Ok::<i64, crate::store::StoreError>(
                row.and_then(|r| r.try_get_by_index::<i64>(0).ok())
                    .unwrap_or(0),
            )
        };
        // Foreign keys: SQLite's own check, and on PostgreSQL constraints
        // that are not validated (added NOT VALID, or disabled triggers).
        match self.backend {
            DbBackend::Sqlite => {
                let rows = self
                    .db
                    .query_all_raw(Statement::from_string(
                        self.backend,
                        "PRAGMA foreign_key_check",
                    ))
                    .await
                    .map_err(db_err)?;
                for r in rows {
                    let table: String = r.try_get_by_index(0).unwrap_or_default();
                    let parent: String = r.try_get_by_index(2).unwrap_or_default();
                    problems.push(format!(
                        "foreign key: a row of {table} refers to a missing row of {parent}"
                    ));
                }
            }
            _ => {
                let n = count(
                    "SELECT count(*) FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace \
                     WHERE c.contype = 'f' AND NOT c.convalidated AND n.nspname = current_schema()"
                        .into(),
                )
                .await?;
                if n > 0 {
                    problems.push(format!(
                        "foreign key: {n} constraint(s) not validated (ALTER TABLE ... VALIDATE CONSTRAINT)"
                    ));
                }
            }
        }
        // Orphaned rows, counted per reference (also what SQLite's check
        // finds, with the counts; and what disabled triggers let through).
        for (child, col, parent, pcol) in REFERENCES {
            let n = count(format!(
                "SELECT count(*) FROM {child} c WHERE c.{col} IS NOT NULL AND NOT EXISTS \
                 (SELECT 1 FROM {parent} p WHERE p.{pcol} = c.{col})"
            ))
            .await?;
            if n > 0 {
                problems.push(format!(
                    "orphaned rows: {n} row(s) of {child} whose {col} names no row of {parent}"
                ));
            }
        }
        // Turns left pending by instances that are gone.
        let orphans = self.orphaned_turns(10_000).await?;
        if !orphans.is_empty() {
            problems.push(format!(
                "pending turns: {} assistant message(s) left pending by a lost instance \
                 (a running server closes them within a minute; first: {})",
                orphans.len(),
                orphans[0].message.id
            ));
        }
        // The usage rollup against the messages.
        let (day, no_key) = match self.backend {
            DbBackend::Postgres => (
                "((created_at AT TIME ZONE 'UTC')::date)",
                "'00000000-0000-0000-0000-000000000000'::uuid",
            ),
            _ => ("substr(created_at, 1, 10)", "zeroblob(16)"),
        };
        let sql = format!(
            "WITH m AS (SELECT tenant_id, {day} AS day, bot_id, COALESCE(api_key_id, {no_key}) AS k, \
               COUNT(*) AS requests, COALESCE(SUM(total_tokens), 0) AS tokens FROM messages \
               WHERE role = 'assistant' AND status <> 'pending' GROUP BY 1, 2, 3, 4), \
             u AS (SELECT tenant_id, day, bot_id, api_key_id AS k, SUM(requests) AS requests, \
               SUM(total_tokens) AS tokens FROM usage_daily GROUP BY 1, 2, 3, 4) \
             SELECT count(*) FROM m FULL OUTER JOIN u ON m.tenant_id = u.tenant_id \
               AND m.day = {u_day} AND m.bot_id = u.bot_id AND m.k = u.k \
             WHERE COALESCE(m.requests, 0) <> COALESCE(u.requests, 0) \
               OR COALESCE(m.tokens, 0) <> COALESCE(u.tokens, 0)",
            // SQLite keeps the day as text.
            u_day = if self.backend == DbBackend::Postgres {
                "u.day"
            } else {
                "substr(u.day, 1, 10)"
            },
        );
        let n = count(sql).await?;
        if n > 0 {
            problems.push(format!(
                "usage: {n} (tenant, day, bot, key) group(s) of the usage rollup disagree with the messages"
            ));
        }
        Ok(problems)
    }
}
