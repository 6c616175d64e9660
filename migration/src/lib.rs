//! chatcore's schema. `consolidated_init` creates the twelve tables of the
//! data model and seeds the provider catalog; `usage_daily` adds the daily
//! usage rollup; `rag_search` adds full-text
//! search over chunks (SQLite FTS5, PostgreSQL tsvector) and, where pgvector
//! is available, the vector column with its HNSW indexes; `public_slugs`
//! makes a public bot's slug unique across tenants and adds the tenants'
//! public chat budget; `turn_owner` records which server instance owns a
//! turn being answered; `row_level_security` isolates tenants on
//! PostgreSQL; `message_tools` keeps tool calls and results on messages;
//! `widget` adds the chat widget's settings per bot and feedback on
//! answers; `cost_and_budgets` adds message costs, price overrides, budgets
//! and usage per end user. The same code migrates SQLite and PostgreSQL.

pub use sea_orm_migration::prelude::*;

mod m20260101_000001_consolidated_init;
mod m20260126_000002_usage_daily;
pub mod m20260126_000003_rag_search;
pub mod m20260301_000001_public_slugs;
mod m20260401_000004_turn_owner;
pub mod m20261201_000005_row_level_security;
mod m20261201_000006_message_tools;
pub mod m20261202_000001_widget;
pub mod m20261203_000001_cost_and_budgets;

/// The migrator: apply with `Migrator::up(&db, None)`.
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20260101_000001_consolidated_init::Migration),
            Box::new(m20260126_000002_usage_daily::Migration),
            Box::new(m20260126_000003_rag_search::Migration),
            Box::new(m20260301_000001_public_slugs::Migration),
            Box::new(m20260401_000004_turn_owner::Migration),
            Box::new(m20261201_000005_row_level_security::Migration),
            Box::new(m20261201_000006_message_tools::Migration),
            Box::new(m20261202_000001_widget::Migration),
            Box::new(m20261203_000001_cost_and_budgets::Migration),
        ]
    }
}
