//! `turn_owner`: which server instance owns a turn that is still being
//! answered, so that turns left `pending` by a process that died can be
//! closed without touching a live instance's turns.
//!
//! - `instances`: one row per running store (a server process). `name` is
//!   stable across restarts of the same deployment slot (the server uses
//!   host and listen address), `heartbeat_at` is refreshed every few
//!   seconds by the store's writer. An instance whose heartbeat is stale, or
//!   an earlier incarnation with the same name, is dead.
//! - `messages.instance_id`: the instance that created the message. No
//!   foreign key: instance rows are pruned while messages stay.
//! - a partial index over pending messages: the sweep for orphaned turns
//!   reads only those, however many messages are stored.

use sea_orm_migration::prelude::*;

/// The migration.
pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20260401_000004_turn_owner"
    }
}

#[derive(DeriveIden)]
enum Instances {
    Table,
    Id,
    Name,
    StartedAt,
    HeartbeatAt,
}

#[derive(DeriveIden)]
enum Messages {
    Table,
    InstanceId,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(Instances::Table)
                .col(
                    ColumnDef::new(Instances::Id)
                        .uuid()
                        .not_null()
                        .primary_key(),
                )
                .col(ColumnDef::new(Instances::Name).string().not_null())
                .col(
                    ColumnDef::new(Instances::StartedAt)
                        .timestamp_with_time_zone()
                        .not_null(),
                )
                .col(
                    ColumnDef::new(Instances::HeartbeatAt)
                        .timestamp_with_time_zone()
                        .not_null(),
                )
                .to_owned(),
        )
        .await?;
        m.alter_table(
            Table::alter()
                .table(Messages::Table)
                .add_column(ColumnDef::new(Messages::InstanceId).uuid().null())
                .to_owned(),
        )
        .await?;
        // Same syntax on SQLite and PostgreSQL.
        m.get_connection()
            .execute_unprepared(
                "CREATE INDEX idx_messages_pending ON messages (status, instance_id) \
                 WHERE status = 'pending'",
            )
            .await?;
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.get_connection()
            .execute_unprepared("DROP INDEX idx_messages_pending")
            .await?;
        m.alter_table(
            Table::alter()
                .table(Messages::Table)
                .drop_column(Messages::InstanceId)
                .to_owned(),
        )
        .await?;
        m.drop_table(Table::drop().table(Instances::Table).to_owned())
            .await
    }
}
