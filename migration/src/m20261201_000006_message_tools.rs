//! `message_tools`: tool calls and tool results on stored messages, so a
//! conversation held by an OpenAI-compatible client (`/v1/chat/completions`
//! with `tools`) reads true in the conversation API.
//!
//! - `messages.tool_calls`: on an assistant message, the calls the model
//!   made (a JSON array of `{"id", "name", "arguments"}`); NULL when none.
//! - `messages.tool_call_id`: on a `tool` message, the call it answers.
//!
//! Both are nullable and need no backfill. Row-level security is per table,
//! so the existing policies on `messages` cover the new columns.

use sea_orm_migration::prelude::*;

/// The migration.
pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261201_000006_message_tools"
    }
}

#[derive(DeriveIden)]
enum Messages {
    Table,
    ToolCalls,
    ToolCallId,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        // One column per statement: SQLite's ALTER TABLE adds one at a time.
        m.alter_table(
            Table::alter()
                .table(Messages::Table)
                .add_column(ColumnDef::new(Messages::ToolCalls).json_binary().null())
                .to_owned(),
        )
        .await?;
        m.alter_table(
            Table::alter()
                .table(Messages::Table)
                .add_column(ColumnDef::new(Messages::ToolCallId).text().null())
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for col in [Messages::ToolCallId, Messages::ToolCalls] {
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
