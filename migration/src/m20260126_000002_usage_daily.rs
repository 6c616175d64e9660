//! `usage_daily`: chat turns and tokens per tenant, UTC day, bot and API key,
//! kept up to date by the store in the transaction that records each turn's
//! outcome, so that `GET /v1/usage` reads a few hundred rows instead of
//! aggregating every message.
//!
//! What a row counts: the tenant's assistant messages (one per chat turn)
//! that have an outcome (any status but `pending`), created on `day` (UTC),
//! and the tokens recorded on them. The migration backfills it from the
//! messages already stored.
//!
//! Choices:
//! - accounting outlives what it counts: `bot_id` and `api_key_id` carry no
//!   foreign key, so deleting a conversation, a bot or a key keeps its usage.
//!   Only the tenant takes its rows with it (CASCADE), like everything else
//!   it owns;
//! - a turn without an API key (public chat) is recorded under the nil UUID:
//!   the key columns are part of the primary key, which must be NOT NULL
//!   (and two NULLs would never conflict for the upsert);
//! - `slot` spreads the writes of one tenant/day/bot/key over several rows.
//!   On PostgreSQL every turn of a busy bot would otherwise update the same
//!   row and wait for the previous turn's commit (its row lock is held until
//!   then): throughput would fall to one commit at a time. Each connection
//!   writes its own slot (`pg_backend_pid() % 64`), so concurrent turns never
//!   queue on each other. SQLite has one writer at a time and uses slot 0.
//!   Readers sum over slots.
//! - the primary key leads with `(tenant_id, day)`: the usage query is a
//!   range scan of one tenant's days.

use sea_orm_migration::prelude::*;

/// The migration.
pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20260126_000002_usage_daily"
    }
}

#[derive(DeriveIden)]
enum UsageDaily {
    Table,
    TenantId,
    Day,
    BotId,
    ApiKeyId,
    Slot,
    Requests,
    PromptTokens,
    CompletionTokens,
    TotalTokens,
}

#[derive(DeriveIden)]
enum Tenants {
    Table,
    Id,
}

fn counter(col: UsageDaily) -> ColumnDef {
    ColumnDef::new(col)
        .big_integer()
        .not_null()
        .default(0)
        .to_owned()
}

/// Aggregates the assistant messages that have an outcome; `{day}` and
/// `{no_key}` are the backend's UTC day of `created_at` and nil UUID.
const BACKFILL: &str = "INSERT INTO usage_daily (tenant_id, day, bot_id, api_key_id, slot, \
     requests, prompt_tokens, completion_tokens, total_tokens) \
     SELECT tenant_id, {day}, bot_id, COALESCE(api_key_id, {no_key}), 0, COUNT(*), \
     COALESCE(SUM(prompt_tokens), 0), COALESCE(SUM(completion_tokens), 0), \
     COALESCE(SUM(total_tokens), 0) \
     FROM messages WHERE role = 'assistant' AND status <> 'pending' \
     GROUP BY tenant_id, {day}, bot_id, COALESCE(api_key_id, {no_key})";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(UsageDaily::Table)
                .col(ColumnDef::new(UsageDaily::TenantId).uuid().not_null())
                .col(ColumnDef::new(UsageDaily::Day).date().not_null())
                .col(ColumnDef::new(UsageDaily::BotId).uuid().not_null())
                .col(ColumnDef::new(UsageDaily::ApiKeyId).uuid().not_null())
                .col(
                    ColumnDef::new(UsageDaily::Slot)
                        .small_integer()
                        .not_null()
                        .default(0),
                )
                .col(counter(UsageDaily::Requests))
                .col(counter(UsageDaily::PromptTokens))
                .col(counter(UsageDaily::CompletionTokens))
                .col(counter(UsageDaily::TotalTokens))
                .primary_key(
                    Index::create()
                        .name("pk_usage_daily")
                        .col(UsageDaily::TenantId)
                        .col(UsageDaily::Day)
                        .col(UsageDaily::BotId)
                        .col(UsageDaily::ApiKeyId)
                        .col(UsageDaily::Slot),
                )
                .foreign_key(
                    ForeignKey::create()
                        .name("fk_usage_daily_tenant")
                        .from(UsageDaily::Table, UsageDaily::TenantId)
                        .to(Tenants::Table, Tenants::Id)
                        .on_delete(ForeignKeyAction::Cascade)
                        .on_update(ForeignKeyAction::Cascade),
                )
                .to_owned(),
        )
        .await?;

        let (day, no_key) = match m.get_database_backend() {
            sea_orm::DbBackend::Postgres => (
                "((created_at AT TIME ZONE 'UTC')::date)",
                "'00000000-0000-0000-0000-000000000000'::uuid",
            ),
            // Timestamps are RFC 3339 text in UTC (the day is the first ten
            // characters) and UUIDs 16-byte blobs.
            _ => ("substr(created_at, 1, 10)", "zeroblob(16)"),
        };
        m.get_connection()
            .execute_unprepared(&BACKFILL.replace("{day}", day).replace("{no_key}", no_key))
            .await?;
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table(UsageDaily::Table).to_owned())
            .await
    }
}
