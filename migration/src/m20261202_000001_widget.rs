//! `widget` (issue 14): the chat widget's settings per bot and feedback on
//! answers.
//!
//! - `widget_settings`: one row per bot that has widget settings. `settings`
//!   is the JSON the library validates (title, greeting, colours, ...);
//!   the widget secret (identity verification of the host site's users) is
//!   sealed with the master key like provider keys: only its last 4
//!   characters are ever shown again.
//! - `message_feedback`: at most one rating per assistant message (a later
//!   one replaces it), with the UTC day it was given for the usage report.
//!   Both go with their bot, message and tenant (foreign keys, cascade).
//!
//! Both tables are tenant-owned: on PostgreSQL they get row-level security
//! with the same two policies as the others and the grants to
//! `chatcore_app` (see `row_level_security`).

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DbBackend;

use crate::m20261201_000005_row_level_security::APP_ROLE;

/// The migration.
pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261202_000001_widget"
    }
}

/// The tenant-owned tables this migration adds, with their tenant column.
pub const WIDGET_TENANT_TABLES: [(&str, &str); 2] = [
    ("widget_settings", "tenant_id"),
    ("message_feedback", "tenant_id"),
];

#[derive(DeriveIden)]
enum WidgetSettings {
    Table,
    BotId,
    TenantId,
    Settings,
    SecretCiphertext,
    SecretKeyId,
    SecretLast4,
    SecretCreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum MessageFeedback {
    Table,
    MessageId,
    TenantId,
    BotId,
    ConversationId,
    Rating,
    Comment,
    ActorKind,
    ActorId,
    Day,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Tenants {
    Table,
    Id,
}

#[derive(DeriveIden)]
enum Bots {
    Table,
    Id,
}

#[derive(DeriveIden)]
enum Messages {
    Table,
    Id,
}

fn ts(col: impl IntoIden, null: bool) -> ColumnDef {
    let mut c = ColumnDef::new(col);
    c.timestamp_with_time_zone();
    if null {
        c.null()
    } else {
        c.not_null()
    };
    c.to_owned()
}

fn fk(
    name: &str,
    from: (impl IntoIden, impl IntoIden),
    to: (impl IntoIden, impl IntoIden),
) -> ForeignKeyCreateStatement {
    ForeignKey::create()
        .name(name)
        .from(from.0, from.1)
        .to(to.0, to.1)
        .on_delete(ForeignKeyAction::Cascade)
        .on_update(ForeignKeyAction::Cascade)
        .to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(WidgetSettings::Table)
                .col(
                    ColumnDef::new(WidgetSettings::BotId)
                        .uuid()
                        .not_null()
                        .primary_key(),
                )
                .col(ColumnDef::new(WidgetSettings::TenantId).uuid().not_null())
                .col(
                    ColumnDef::new(WidgetSettings::Settings)
                        .json_binary()
                        .not_null(),
                )
                .col(
                    ColumnDef::new(WidgetSettings::SecretCiphertext)
                        .blob()
                        .null(),
                )
                .col(ColumnDef::new(WidgetSettings::SecretKeyId).text().null())
                .col(ColumnDef::new(WidgetSettings::SecretLast4).text().null())
                .col(ts(WidgetSettings::SecretCreatedAt, true))
                .col(ts(WidgetSettings::UpdatedAt, false))
                .foreign_key(&mut fk(
                    "fk_widget_settings_tenant",
                    (WidgetSettings::Table, WidgetSettings::TenantId),
                    (Tenants::Table, Tenants::Id),
                ))
                .foreign_key(&mut fk(
                    "fk_widget_settings_bot",
                    (WidgetSettings::Table, WidgetSettings::BotId),
                    (Bots::Table, Bots::Id),
                ))
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(MessageFeedback::Table)
                .col(
                    ColumnDef::new(MessageFeedback::MessageId)
                        .uuid()
                        .not_null()
                        .primary_key(),
                )
                .col(ColumnDef::new(MessageFeedback::TenantId).uuid().not_null())
                .col(ColumnDef::new(MessageFeedback::BotId).uuid().not_null())
                .col(
                    ColumnDef::new(MessageFeedback::ConversationId)
                        .uuid()
                        .not_null(),
                )
                .col(ColumnDef::new(MessageFeedback::Rating).text().not_null())
                .col(ColumnDef::new(MessageFeedback::Comment).text().null())
                .col(ColumnDef::new(MessageFeedback::ActorKind).text().not_null())
                .col(ColumnDef::new(MessageFeedback::ActorId).text().null())
                .col(ColumnDef::new(MessageFeedback::Day).text().not_null())
                .col(ts(MessageFeedback::CreatedAt, false))
                .col(ts(MessageFeedback::UpdatedAt, false))
                .foreign_key(&mut fk(
                    "fk_message_feedback_tenant",
                    (MessageFeedback::Table, MessageFeedback::TenantId),
                    (Tenants::Table, Tenants::Id),
                ))
                .foreign_key(&mut fk(
                    "fk_message_feedback_message",
                    (MessageFeedback::Table, MessageFeedback::MessageId),
                    (Messages::Table, Messages::Id),
                ))
                .to_owned(),
        )
        .await?;
        // The usage report counts a tenant's ratings by day.
        m.create_index(
            Index::create()
                .name("ix_message_feedback_tenant_day")
                .table(MessageFeedback::Table)
                .col(MessageFeedback::TenantId)
                .col(MessageFeedback::Day)
                .to_owned(),
        )
        .await?;

        let db = m.get_connection();
        if db.get_database_backend() != DbBackend::Postgres {
            return Ok(());
        }
        // Row-level security exactly as `row_level_security` sets it up.
        let tenants = "string_to_array(NULLIF(current_setting('chatcore.tenant_ids', true), ''), ',')::uuid[]";
        let all = "current_setting('chatcore.all_tenants', true) = 'on'";
        for (table, col) in WIDGET_TENANT_TABLES {
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
        // The role may be missing (a user without CREATEROLE): then there
        // is nothing to grant, as in `row_level_security`.
        db.execute_unprepared(&format!(
            "DO $w$
BEGIN
  IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{APP_ROLE}') THEN
    GRANT SELECT, INSERT, UPDATE, DELETE ON widget_settings, message_feedback TO {APP_ROLE};
  END IF;
END
$w$"
        ))
        .await?;
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table(MessageFeedback::Table).to_owned())
            .await?;
        m.drop_table(Table::drop().table(WidgetSettings::Table).to_owned())
            .await
    }
}
