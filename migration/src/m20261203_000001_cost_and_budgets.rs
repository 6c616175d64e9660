//! `cost_and_budgets`: the cost of every assistant message, tenant price
//! overrides, spending budgets, and usage per end user.
//!
//! Money is integer micro-units (`BIGINT`, 1 000 000 = one unit of the
//! currency), never a float.
//!
//! - `messages`: `cost_micros` (NULL until the turn has an outcome),
//!   `cached_tokens` (prompt tokens the vendor read from its cache),
//!   `priced` (false: no price was known, the cost is 0) and
//!   `end_user_id` (the conversation's end user, copied onto the assistant
//!   message so that the rollup needs no join).
//! - `usage_daily.cost_micros`: cost next to tokens in the rollup (0 for
//!   what was counted before: no message had a cost then).
//! - `usage_daily_end_users`: the same rollup per tenant, UTC day, bot and
//!   end user (only turns that name one), with write slots like
//!   `usage_daily`; its primary key leads with `(tenant_id, day)`, so
//!   `GET /v1/usage?group_by=end_user` is a range scan of one tenant's days,
//!   never a scan of messages.
//! - `model_prices`: a tenant's price per provider configuration and model,
//!   overriding the catalog's list price (unique per configuration and
//!   model; deleted with the configuration).
//! - `budgets`: an amount per period (`day`, `month`, `rolling_24h`) and a
//!   scope (`tenant`, `api_key`, `bot`, `end_user` of a bot). No foreign
//!   key to the key or bot: a budget of a deleted key simply never applies
//!   again, and it is deleted with its tenant.
//!
//! On PostgreSQL the three new tables get row-level security with the two
//! policies of `row_level_security`, and `chatcore_app` gets DML on them.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DbBackend;

use crate::m20261201_000005_row_level_security::APP_ROLE;

/// The migration.
pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261203_000001_cost_and_budgets"
    }
}

/// Tenant-owned tables this migration adds, and the column naming the
/// tenant (row-level security as in `row_level_security`).
pub const TENANT_TABLES: [(&str, &str); 3] = [
    ("model_prices", "tenant_id"),
    ("budgets", "tenant_id"),
    ("usage_daily_end_users", "tenant_id"),
];

#[derive(DeriveIden)]
enum Messages {
    Table,
    CostMicros,
    CachedTokens,
    Priced,
    EndUserId,
}

#[derive(DeriveIden)]
enum UsageDaily {
    Table,
    CostMicros,
}

#[derive(DeriveIden)]
enum UsageDailyEndUsers {
    Table,
    TenantId,
    Day,
    BotId,
    EndUserId,
    Slot,
    Requests,
    PromptTokens,
    CompletionTokens,
    TotalTokens,
    CostMicros,
}

#[derive(DeriveIden)]
enum ModelPrices {
    Table,
    Id,
    TenantId,
    ProviderConfigId,
    Model,
    InputPerMtok,
    CachedInputPerMtok,
    OutputPerMtok,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Budgets {
    Table,
    Id,
    TenantId,
    Scope,
    ApiKeyId,
    BotId,
    EndUserId,
    Period,
    AmountMicros,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Tenants {
    Table,
    Id,
}

#[derive(DeriveIden)]
enum TenantAiProviders {
    Table,
    Id,
}

fn counter(col: impl IntoIden) -> ColumnDef {
    ColumnDef::new(col)
        .big_integer()
        .not_null()
        .default(0)
        .to_owned()
}

fn ts(col: impl IntoIden) -> ColumnDef {
    ColumnDef::new(col)
        .timestamp_with_time_zone()
        .not_null()
        .to_owned()
}

fn tenant_fk(
    table: impl IntoIden + 'static,
    name: &str,
    col: impl IntoIden,
) -> ForeignKeyCreateStatement {
    ForeignKey::create()
        .name(name)
        .from(table, col)
        .to(Tenants::Table, Tenants::Id)
        .on_delete(ForeignKeyAction::Cascade)
        .on_update(ForeignKeyAction::Cascade)
        .to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        // One column per statement: SQLite's ALTER TABLE adds one at a time.
        for col in [
            ColumnDef::new(Messages::CostMicros)
                .big_integer()
                .null()
                .to_owned(),
            ColumnDef::new(Messages::CachedTokens)
                .integer()
                .null()
                .to_owned(),
            ColumnDef::new(Messages::Priced).boolean().null().to_owned(),
            ColumnDef::new(Messages::EndUserId).text().null().to_owned(),
        ] {
            m.alter_table(
                Table::alter()
                    .table(Messages::Table)
                    .add_column(col)
                    .to_owned(),
            )
            .await?;
        }
        m.alter_table(
            Table::alter()
                .table(UsageDaily::Table)
                .add_column(counter(UsageDaily::CostMicros))
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(UsageDailyEndUsers::Table)
                .col(
                    ColumnDef::new(UsageDailyEndUsers::TenantId)
                        .uuid()
                        .not_null(),
                )
                .col(ColumnDef::new(UsageDailyEndUsers::Day).date().not_null())
                .col(ColumnDef::new(UsageDailyEndUsers::BotId).uuid().not_null())
                .col(
                    ColumnDef::new(UsageDailyEndUsers::EndUserId)
                        .text()
                        .not_null(),
                )
                .col(
                    ColumnDef::new(UsageDailyEndUsers::Slot)
                        .small_integer()
                        .not_null()
                        .default(0),
                )
                .col(counter(UsageDailyEndUsers::Requests))
                .col(counter(UsageDailyEndUsers::PromptTokens))
                .col(counter(UsageDailyEndUsers::CompletionTokens))
                .col(counter(UsageDailyEndUsers::TotalTokens))
                .col(counter(UsageDailyEndUsers::CostMicros))
                .primary_key(
                    Index::create()
                        .name("pk_usage_daily_end_users")
                        .col(UsageDailyEndUsers::TenantId)
                        .col(UsageDailyEndUsers::Day)
                        .col(UsageDailyEndUsers::BotId)
                        .col(UsageDailyEndUsers::EndUserId)
                        .col(UsageDailyEndUsers::Slot),
                )
                .foreign_key(&mut tenant_fk(
                    UsageDailyEndUsers::Table,
                    "fk_usage_daily_end_users_tenant",
                    UsageDailyEndUsers::TenantId,
                ))
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(ModelPrices::Table)
                .col(
                    ColumnDef::new(ModelPrices::Id)
                        .uuid()
                        .not_null()
                        .primary_key(),
                )
                .col(ColumnDef::new(ModelPrices::TenantId).uuid().not_null())
                .col(
                    ColumnDef::new(ModelPrices::ProviderConfigId)
                        .uuid()
                        .not_null(),
                )
                .col(ColumnDef::new(ModelPrices::Model).text().not_null())
                .col(
                    ColumnDef::new(ModelPrices::InputPerMtok)
                        .big_integer()
                        .not_null(),
                )
                .col(
                    ColumnDef::new(ModelPrices::CachedInputPerMtok)
                        .big_integer()
                        .not_null(),
                )
                .col(
                    ColumnDef::new(ModelPrices::OutputPerMtok)
                        .big_integer()
                        .not_null(),
                )
                .col(ts(ModelPrices::CreatedAt))
                .col(ts(ModelPrices::UpdatedAt))
                .foreign_key(&mut tenant_fk(
                    ModelPrices::Table,
                    "fk_model_prices_tenant",
                    ModelPrices::TenantId,
                ))
                .foreign_key(
                    ForeignKey::create()
                        .name("fk_model_prices_provider")
                        .from(ModelPrices::Table, ModelPrices::ProviderConfigId)
                        .to(TenantAiProviders::Table, TenantAiProviders::Id)
                        .on_delete(ForeignKeyAction::Cascade)
                        .on_update(ForeignKeyAction::Cascade),
                )
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ux_model_prices_config_model")
                .table(ModelPrices::Table)
                .col(ModelPrices::TenantId)
                .col(ModelPrices::ProviderConfigId)
                .col(ModelPrices::Model)
                .unique()
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(Budgets::Table)
                .col(ColumnDef::new(Budgets::Id).uuid().not_null().primary_key())
                .col(ColumnDef::new(Budgets::TenantId).uuid().not_null())
                .col(ColumnDef::new(Budgets::Scope).text().not_null())
                .col(ColumnDef::new(Budgets::ApiKeyId).uuid().null())
                .col(ColumnDef::new(Budgets::BotId).uuid().null())
                .col(ColumnDef::new(Budgets::EndUserId).text().null())
                .col(ColumnDef::new(Budgets::Period).text().not_null())
                .col(
                    ColumnDef::new(Budgets::AmountMicros)
                        .big_integer()
                        .not_null(),
                )
                .col(ts(Budgets::CreatedAt))
                .col(ts(Budgets::UpdatedAt))
                .foreign_key(&mut tenant_fk(
                    Budgets::Table,
                    "fk_budgets_tenant",
                    Budgets::TenantId,
                ))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ix_budgets_tenant")
                .table(Budgets::Table)
                .col(Budgets::TenantId)
                .col(Budgets::Id)
                .to_owned(),
        )
        .await?;

        let db = m.get_connection();
        if db.get_database_backend() == DbBackend::Postgres {
            for (table, col) in TENANT_TABLES {
                let tenants = "string_to_array(NULLIF(current_setting('chatcore.tenant_ids', true), ''), ',')::uuid[]";
                let all = "current_setting('chatcore.all_tenants', true) = 'on'";
                let mine = format!("{col} = ANY ({tenants})");
                db.execute_unprepared(&format!("ALTER TABLE {table} ENABLE ROW LEVEL SECURITY"))
                    .await?;
                db.execute_unprepared(&format!(
                    "CREATE POLICY chatcore_tenant ON {table} USING ({mine}) WITH CHECK ({mine})"
                ))
                .await?;
                db.execute_unprepared(&format!(
                    "CREATE POLICY chatcore_all_tenants ON {table} USING ({all}) WITH CHECK ({all})"
                ))
                .await?;
            }
            // Only where the role exists (a user that may not create roles
            // has none: see `row_level_security`).
            let tables = TENANT_TABLES.map(|(t, _)| t).join(", ");
            db.execute_unprepared(&format!(
                "DO $g$ BEGIN \
                   IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{APP_ROLE}') THEN \
                     GRANT SELECT, INSERT, UPDATE, DELETE ON {tables} TO {APP_ROLE}; \
                   END IF; \
                 END $g$"
            ))
            .await?;
        }
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for t in [
            Budgets::Table.into_iden(),
            ModelPrices::Table.into_iden(),
            UsageDailyEndUsers::Table.into_iden(),
        ] {
            m.drop_table(Table::drop().table(t).to_owned()).await?;
        }
        m.alter_table(
            Table::alter()
                .table(UsageDaily::Table)
                .drop_column(UsageDaily::CostMicros)
                .to_owned(),
        )
        .await?;
        for col in [
            Messages::EndUserId,
            Messages::Priced,
            Messages::CachedTokens,
            Messages::CostMicros,
        ] {
            m.alter_table(
                Table::alter()
                    .table(Messages::Table)
                    .drop_column(col)
                    .to_owned(),
            )
            .await?;
        }
        Ok(())
    }
}
