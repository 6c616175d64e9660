//! `public_slugs`: a public bot's slug has one owner across tenants, and a
//! tenant's public traffic has a budget of its own.
//!
//! - A partial unique index on `bots(slug) WHERE is_public`: two public
//!   bots can never share a slug, whatever tenants they belong to, so a
//!   public slug names one bot (the store answers a taken one with a
//!   conflict; the index settles races). Private bots keep per-tenant
//!   slugs. Before the index is built, public bots that share a slug with
//!   an older public bot (lower id: created earlier) are made private: the
//!   oldest one is the one public chat already answered with, so no
//!   visitor changes bot; the others' owners publish them under another
//!   slug.
//! - `tenants.public_rate_limit_rpm` (NULL: the server's default): requests
//!   per minute of public chat across the tenant's public bots, counted
//!   apart from `rate_limit_rpm`, its API keys' budget.

use sea_orm_migration::prelude::*;

/// The migration.
pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20260301_000001_public_slugs"
    }
}

#[derive(DeriveIden)]
enum Tenants {
    Table,
    PublicRateLimitRpm,
}

/// The index's name.
pub const PUBLIC_SLUG_INDEX: &str = "ux_bots_public_slug";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        db.execute_unprepared(
            "UPDATE bots SET is_public = false \
             WHERE is_public AND EXISTS (SELECT 1 FROM bots older \
               WHERE older.is_public AND older.slug = bots.slug AND older.id < bots.id)",
        )
        .await?;
        db.execute_unprepared(&format!(
            "CREATE UNIQUE INDEX {PUBLIC_SLUG_INDEX} ON bots (slug) WHERE is_public"
        ))
        .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Tenants::Table)
                    .add_column(ColumnDef::new(Tenants::PublicRateLimitRpm).integer().null())
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Tenants::Table)
                    .drop_column(Tenants::PublicRateLimitRpm)
                    .to_owned(),
            )
            .await?;
        manager
            .get_connection()
            .execute_unprepared(&format!("DROP INDEX IF EXISTS {PUBLIC_SLUG_INDEX}"))
            .await?;
        Ok(())
    }
}
