//! `consolidated_init`: every table, foreign key, unique constraint and index.
//!
//! ON DELETE choices:
//! - everything a tenant owns goes with the tenant (CASCADE), except audit
//!   records, which outlive it with `tenant_id` set to NULL (evidence is kept);
//! - a provider config used by a bot or dataset cannot be deleted (RESTRICT:
//!   the API answers 409 rather than leave a bot without a provider);
//! - a bot takes its conversations, messages and scopes with it (CASCADE);
//! - a conversation takes its messages, a dataset its documents, a document
//!   its chunks (CASCADE);
//! - a deleted API key leaves the messages it sent, with `api_key_id` NULL.

use sea_orm_migration::prelude::*;

/// The migration.
pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "consolidated_init"
    }
}

#[derive(DeriveIden)]
enum Tenants {
    Table,
    Id,
    Name,
    Slug,
    Status,
    RateLimitRpm,
    RateLimitTpm,
    Features,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum AiProvidersMaster {
    Table,
    Key,
    DisplayName,
    DefaultBaseUrl,
    AuthStyle,
    SupportsChat,
    SupportsStream,
    SupportsEmbeddings,
    DefaultChatModel,
    DefaultEmbeddingModel,
}

#[derive(DeriveIden)]
enum TenantAiProviders {
    Table,
    Id,
    TenantId,
    Provider,
    Name,
    ApiKeyCiphertext,
    ApiKeyKeyId,
    ApiKeyLast4,
    BaseUrl,
    DefaultModel,
    Enabled,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Bots {
    Table,
    Id,
    TenantId,
    Name,
    Slug,
    SystemPrompt,
    ProviderId,
    Model,
    FallbackProviderId,
    Temperature,
    MaxTokens,
    ContextTokens,
    IsPublic,
    DatasetIds,
    Status,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Conversations {
    Table,
    Id,
    TenantId,
    BotId,
    EndUserId,
    Title,
    Channel,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Messages {
    Table,
    Id,
    TenantId,
    ConversationId,
    BotId,
    Role,
    Content,
    PromptTokens,
    CompletionTokens,
    TotalTokens,
    TokensEstimated,
    ResponseTimeMs,
    TimeToFirstTokenMs,
    Provider,
    Model,
    FinishReason,
    Status,
    Error,
    SourceChunkIds,
    ApiKeyId,
    CreatedAt,
}

#[derive(DeriveIden)]
enum ApiKeys {
    Table,
    Id,
    TenantId,
    Name,
    Prefix,
    SecretHash,
    Permissions,
    BotIds,
    RateLimitRpm,
    ExpiresAt,
    LastUsedAt,
    RevokedAt,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Datasets {
    Table,
    Id,
    TenantId,
    Name,
    ProviderId,
    EmbeddingModel,
    EmbeddingDim,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Documents {
    Table,
    Id,
    TenantId,
    DatasetId,
    Title,
    Source,
    MimeType,
    Metadata,
    Status,
    Error,
    ContentHash,
    Content,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Chunks {
    Table,
    Id,
    TenantId,
    DatasetId,
    DocumentId,
    Ordinal,
    Text,
    TokenCount,
    Embedding,
}

#[derive(DeriveIden)]
enum Scopes {
    Table,
    Id,
    TenantId,
    BotId,
    Kind,
    Config,
    CreatedAt,
}

#[derive(DeriveIden)]
enum AuditLogs {
    Table,
    Id,
    TenantId,
    ActorKind,
    ActorId,
    Action,
    ResourceType,
    ResourceId,
    RequestId,
    Ip,
    Metadata,
    CreatedAt,
}

fn pk(col: impl IntoIden) -> ColumnDef {
    ColumnDef::new(col)
        .uuid()
        .not_null()
        .primary_key()
        .to_owned()
}
fn uuid(col: impl IntoIden) -> ColumnDef {
    ColumnDef::new(col).uuid().not_null().to_owned()
}
fn uuid_null(col: impl IntoIden) -> ColumnDef {
    ColumnDef::new(col).uuid().null().to_owned()
}
fn text(col: impl IntoIden) -> ColumnDef {
    ColumnDef::new(col).text().not_null().to_owned()
}
fn text_null(col: impl IntoIden) -> ColumnDef {
    ColumnDef::new(col).text().null().to_owned()
}
fn int(col: impl IntoIden) -> ColumnDef {
    ColumnDef::new(col).integer().not_null().to_owned()
}
fn int_null(col: impl IntoIden) -> ColumnDef {
    ColumnDef::new(col).integer().null().to_owned()
}
fn boolean(col: impl IntoIden) -> ColumnDef {
    ColumnDef::new(col).boolean().not_null().to_owned()
}
fn json(col: impl IntoIden) -> ColumnDef {
    ColumnDef::new(col).json_binary().not_null().to_owned()
}
fn ts(col: impl IntoIden) -> ColumnDef {
    ColumnDef::new(col)
        .timestamp_with_time_zone()
        .not_null()
        .to_owned()
}
fn ts_null(col: impl IntoIden) -> ColumnDef {
    ColumnDef::new(col)
        .timestamp_with_time_zone()
        .null()
        .to_owned()
}

fn fk(
    name: &str,
    from: (impl IntoIden, impl IntoIden),
    to: (impl IntoIden, impl IntoIden),
    on_delete: ForeignKeyAction,
) -> ForeignKeyCreateStatement {
    ForeignKey::create()
        .name(name)
        .from(from.0, from.1)
        .to(to.0, to.1)
        .on_delete(on_delete)
        .on_update(ForeignKeyAction::Cascade)
        .to_owned()
}

fn index(name: &str, table: impl IntoIden, cols: &[&'static str]) -> IndexCreateStatement {
    let mut i = Index::create();
    i.name(name).table(table);
    for c in cols {
        i.col(Alias::new(*c));
    }
    i.to_owned()
}

use ForeignKeyAction::{Cascade, Restrict, SetNull};

/// The catalog seeded into `ai_providers_master`:
/// key, name, base URL, auth style, chat, stream, embeddings, chat model, embedding model.
type CatalogRow = (
    &'static str,
    &'static str,
    Option<&'static str>,
    &'static str,
    bool,
    bool,
    bool,
    Option<&'static str>,
    Option<&'static str>,
);
const CATALOG: &[CatalogRow] = &[
    (
        "openai",
        "OpenAI",
        Some("https://api.openai.com/v1"),
        "bearer",
        true,
        true,
        true,
        Some("gpt-4o-mini"),
        Some("text-embedding-3-small"),
    ),
    (
        "anthropic",
        "Anthropic",
        Some("https://api.anthropic.com"),
        "x_api_key",
        true,
        true,
        false,
        Some("claude-3-5-haiku-latest"),
        None,
    ),
    (
        "google",
        "Google Gemini",
        Some("https://generativelanguage.googleapis.com"),
        "x_goog_api_key",
        true,
        true,
        true,
        Some("gemini-2.0-flash"),
        Some("text-embedding-004"),
    ),
    (
        "openai_compatible",
        "OpenAI-compatible",
        None,
        "bearer",
        true,
        true,
        true,
        None,
        None,
    ),
    (
        "mock",
        "Mock (offline)",
        None,
        "none",
        true,
        true,
        true,
        Some("echo"),
        Some("mock-embed"),
    ),
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(Tenants::Table)
                .col(pk(Tenants::Id))
                .col(text(Tenants::Name))
                .col(text(Tenants::Slug).unique_key())
                .col(text(Tenants::Status))
                .col(int_null(Tenants::RateLimitRpm))
                .col(int_null(Tenants::RateLimitTpm))
                .col(json(Tenants::Features))
                .col(ts(Tenants::CreatedAt))
                .col(ts(Tenants::UpdatedAt))
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(AiProvidersMaster::Table)
                .col(
                    ColumnDef::new(AiProvidersMaster::Key)
                        .text()
                        .not_null()
                        .primary_key(),
                )
                .col(text(AiProvidersMaster::DisplayName))
                .col(text_null(AiProvidersMaster::DefaultBaseUrl))
                .col(text(AiProvidersMaster::AuthStyle))
                .col(boolean(AiProvidersMaster::SupportsChat))
                .col(boolean(AiProvidersMaster::SupportsStream))
                .col(boolean(AiProvidersMaster::SupportsEmbeddings))
                .col(text_null(AiProvidersMaster::DefaultChatModel))
                .col(text_null(AiProvidersMaster::DefaultEmbeddingModel))
                .to_owned(),
        )
        .await?;
        let mut seed = Query::insert();
        seed.into_table(AiProvidersMaster::Table).columns([
            AiProvidersMaster::Key,
            AiProvidersMaster::DisplayName,
            AiProvidersMaster::DefaultBaseUrl,
            AiProvidersMaster::AuthStyle,
            AiProvidersMaster::SupportsChat,
            AiProvidersMaster::SupportsStream,
            AiProvidersMaster::SupportsEmbeddings,
            AiProvidersMaster::DefaultChatModel,
            AiProvidersMaster::DefaultEmbeddingModel,
        ]);
        for (key, name, url, auth, chat, stream, embed, model, emodel) in CATALOG {
            seed.values_panic([
                (*key).into(),
                (*name).into(),
                url.map(str::to_string).into(),
                (*auth).into(),
                (*chat).into(),
                (*stream).into(),
                (*embed).into(),
                model.map(str::to_string).into(),
                emodel.map(str::to_string).into(),
            ]);
        }
        m.exec_stmt(seed).await?;

        m.create_table(
            Table::create()
                .table(TenantAiProviders::Table)
                .col(pk(TenantAiProviders::Id))
                .col(uuid(TenantAiProviders::TenantId))
                .col(text(TenantAiProviders::Provider))
                .col(text(TenantAiProviders::Name))
                .col(
                    ColumnDef::new(TenantAiProviders::ApiKeyCiphertext)
                        .blob()
                        .null(),
                )
                .col(text_null(TenantAiProviders::ApiKeyKeyId))
                .col(text_null(TenantAiProviders::ApiKeyLast4))
                .col(text_null(TenantAiProviders::BaseUrl))
                .col(text_null(TenantAiProviders::DefaultModel))
                .col(boolean(TenantAiProviders::Enabled))
                .col(ts(TenantAiProviders::CreatedAt))
                .col(ts(TenantAiProviders::UpdatedAt))
                .foreign_key(&mut fk(
                    "fk_tenant_ai_providers_tenant",
                    (TenantAiProviders::Table, TenantAiProviders::TenantId),
                    (Tenants::Table, Tenants::Id),
                    Cascade,
                ))
                .foreign_key(&mut fk(
                    "fk_tenant_ai_providers_catalog",
                    (TenantAiProviders::Table, TenantAiProviders::Provider),
                    (AiProvidersMaster::Table, AiProvidersMaster::Key),
                    Restrict,
                ))
                .to_owned(),
        )
        .await?;
        // Tenant-scoped listing and lookup.
        m.create_index(index(
            "ix_tenant_ai_providers_tenant",
            TenantAiProviders::Table,
            &["tenant_id", "id"],
        ))
        .await?;

        m.create_table(
            Table::create()
                .table(Datasets::Table)
                .col(pk(Datasets::Id))
                .col(uuid(Datasets::TenantId))
                .col(text(Datasets::Name))
                .col(uuid(Datasets::ProviderId))
                .col(text(Datasets::EmbeddingModel))
                .col(int(Datasets::EmbeddingDim))
                .col(ts(Datasets::CreatedAt))
                .foreign_key(&mut fk(
                    "fk_datasets_tenant",
                    (Datasets::Table, Datasets::TenantId),
                    (Tenants::Table, Tenants::Id),
                    Cascade,
                ))
                .foreign_key(&mut fk(
                    "fk_datasets_provider",
                    (Datasets::Table, Datasets::ProviderId),
                    (TenantAiProviders::Table, TenantAiProviders::Id),
                    Restrict,
                ))
                .to_owned(),
        )
        .await?;
        m.create_index(index(
            "ix_datasets_tenant",
            Datasets::Table,
            &["tenant_id", "id"],
        ))
        .await?;
        m.create_index(index(
            "ix_datasets_provider",
            Datasets::Table,
            &["provider_id"],
        ))
        .await?;

        m.create_table(
            Table::create()
                .table(Bots::Table)
                .col(pk(Bots::Id))
                .col(uuid(Bots::TenantId))
                .col(text(Bots::Name))
                .col(text(Bots::Slug))
                .col(text(Bots::SystemPrompt))
                .col(uuid(Bots::ProviderId))
                .col(text_null(Bots::Model))
                .col(uuid_null(Bots::FallbackProviderId))
                .col(ColumnDef::new(Bots::Temperature).float().null())
                .col(int_null(Bots::MaxTokens))
                .col(int(Bots::ContextTokens))
                .col(boolean(Bots::IsPublic))
                .col(json(Bots::DatasetIds))
                .col(text(Bots::Status))
                .col(ts(Bots::CreatedAt))
                .col(ts(Bots::UpdatedAt))
                .foreign_key(&mut fk(
                    "fk_bots_tenant",
                    (Bots::Table, Bots::TenantId),
                    (Tenants::Table, Tenants::Id),
                    Cascade,
                ))
                .foreign_key(&mut fk(
                    "fk_bots_provider",
                    (Bots::Table, Bots::ProviderId),
                    (TenantAiProviders::Table, TenantAiProviders::Id),
                    Restrict,
                ))
                .foreign_key(&mut fk(
                    "fk_bots_fallback_provider",
                    (Bots::Table, Bots::FallbackProviderId),
                    (TenantAiProviders::Table, TenantAiProviders::Id),
                    Restrict,
                ))
                .to_owned(),
        )
        .await?;
        // Bot slug unique per tenant; also serves lookup by slug in a tenant.
        m.create_index(
            index("ux_bots_tenant_slug", Bots::Table, &["tenant_id", "slug"])
                .unique()
                .to_owned(),
        )
        .await?;
        // The public endpoint resolves a slug without a tenant.
        m.create_index(index(
            "ix_bots_public_slug",
            Bots::Table,
            &["slug", "is_public"],
        ))
        .await?;
        // Provider deletion checks whether a bot still uses it.
        m.create_index(index("ix_bots_provider", Bots::Table, &["provider_id"]))
            .await?;
        m.create_index(index(
            "ix_bots_fallback_provider",
            Bots::Table,
            &["fallback_provider_id"],
        ))
        .await?;

        m.create_table(
            Table::create()
                .table(ApiKeys::Table)
                .col(pk(ApiKeys::Id))
                .col(uuid(ApiKeys::TenantId))
                .col(text(ApiKeys::Name))
                .col(text(ApiKeys::Prefix))
                .col(ColumnDef::new(ApiKeys::SecretHash).blob().not_null())
                .col(json(ApiKeys::Permissions))
                .col(json(ApiKeys::BotIds))
                .col(int_null(ApiKeys::RateLimitRpm))
                .col(ts_null(ApiKeys::ExpiresAt))
                .col(ts_null(ApiKeys::LastUsedAt))
                .col(ts_null(ApiKeys::RevokedAt))
                .col(ts(ApiKeys::CreatedAt))
                .foreign_key(&mut fk(
                    "fk_api_keys_tenant",
                    (ApiKeys::Table, ApiKeys::TenantId),
                    (Tenants::Table, Tenants::Id),
                    Cascade,
                ))
                .to_owned(),
        )
        .await?;
        // Key lookup on every authenticated request: by prefix, unique.
        m.create_index(
            index("ux_api_keys_prefix", ApiKeys::Table, &["prefix"])
                .unique()
                .to_owned(),
        )
        .await?;
        m.create_index(index(
            "ix_api_keys_tenant",
            ApiKeys::Table,
            &["tenant_id", "id"],
        ))
        .await?;

        m.create_table(
            Table::create()
                .table(Conversations::Table)
                .col(pk(Conversations::Id))
                .col(uuid(Conversations::TenantId))
                .col(uuid(Conversations::BotId))
                .col(text_null(Conversations::EndUserId))
                .col(text_null(Conversations::Title))
                .col(text(Conversations::Channel))
                .col(ts(Conversations::CreatedAt))
                .col(ts(Conversations::UpdatedAt))
                .foreign_key(&mut fk(
                    "fk_conversations_tenant",
                    (Conversations::Table, Conversations::TenantId),
                    (Tenants::Table, Tenants::Id),
                    Cascade,
                ))
                .foreign_key(&mut fk(
                    "fk_conversations_bot",
                    (Conversations::Table, Conversations::BotId),
                    (Bots::Table, Bots::Id),
                    Cascade,
                ))
                .to_owned(),
        )
        .await?;
        // Conversations of a bot, of one end user, newest first.
        m.create_index(index(
            "ix_conversations_bot_user",
            Conversations::Table,
            &["tenant_id", "bot_id", "end_user_id", "id"],
        ))
        .await?;
        // A tenant's conversations by time (list without a bot filter).
        m.create_index(index(
            "ix_conversations_tenant_time",
            Conversations::Table,
            &["tenant_id", "created_at"],
        ))
        .await?;

        m.create_table(
            Table::create()
                .table(Messages::Table)
                .col(pk(Messages::Id))
                .col(uuid(Messages::TenantId))
                .col(uuid(Messages::ConversationId))
                .col(uuid(Messages::BotId))
                .col(text(Messages::Role))
                .col(text(Messages::Content))
                .col(int_null(Messages::PromptTokens))
                .col(int_null(Messages::CompletionTokens))
                .col(int_null(Messages::TotalTokens))
                .col(boolean(Messages::TokensEstimated))
                .col(int_null(Messages::ResponseTimeMs))
                .col(int_null(Messages::TimeToFirstTokenMs))
                .col(text_null(Messages::Provider))
                .col(text_null(Messages::Model))
                .col(text_null(Messages::FinishReason))
                .col(text(Messages::Status))
                .col(text_null(Messages::Error))
                .col(json(Messages::SourceChunkIds))
                .col(uuid_null(Messages::ApiKeyId))
                .col(ts(Messages::CreatedAt))
                .foreign_key(&mut fk(
                    "fk_messages_tenant",
                    (Messages::Table, Messages::TenantId),
                    (Tenants::Table, Tenants::Id),
                    Cascade,
                ))
                .foreign_key(&mut fk(
                    "fk_messages_conversation",
                    (Messages::Table, Messages::ConversationId),
                    (Conversations::Table, Conversations::Id),
                    Cascade,
                ))
                .foreign_key(&mut fk(
                    "fk_messages_bot",
                    (Messages::Table, Messages::BotId),
                    (Bots::Table, Bots::Id),
                    Cascade,
                ))
                .foreign_key(&mut fk(
                    "fk_messages_api_key",
                    (Messages::Table, Messages::ApiKeyId),
                    (ApiKeys::Table, ApiKeys::Id),
                    SetNull,
                ))
                .to_owned(),
        )
        .await?;
        // History of a conversation, in time order.
        m.create_index(index(
            "ix_messages_conversation_time",
            Messages::Table,
            &["conversation_id", "created_at"],
        ))
        .await?;
        // Usage by tenant and time (per bot / key / day aggregates scan this range).
        m.create_index(index(
            "ix_messages_tenant_time",
            Messages::Table,
            &["tenant_id", "created_at"],
        ))
        .await?;
        // Cascade from bots and api keys without a full scan.
        m.create_index(index("ix_messages_bot", Messages::Table, &["bot_id"]))
            .await?;
        m.create_index(index(
            "ix_messages_api_key",
            Messages::Table,
            &["api_key_id"],
        ))
        .await?;

        m.create_table(
            Table::create()
                .table(Documents::Table)
                .col(pk(Documents::Id))
                .col(uuid(Documents::TenantId))
                .col(uuid(Documents::DatasetId))
                .col(text(Documents::Title))
                .col(text_null(Documents::Source))
                .col(text(Documents::MimeType))
                .col(json(Documents::Metadata))
                .col(text(Documents::Status))
                .col(text_null(Documents::Error))
                .col(text(Documents::ContentHash))
                .col(text(Documents::Content))
                .col(ts(Documents::CreatedAt))
                .col(ts(Documents::UpdatedAt))
                .foreign_key(&mut fk(
                    "fk_documents_tenant",
                    (Documents::Table, Documents::TenantId),
                    (Tenants::Table, Tenants::Id),
                    Cascade,
                ))
                .foreign_key(&mut fk(
                    "fk_documents_dataset",
                    (Documents::Table, Documents::DatasetId),
                    (Datasets::Table, Datasets::Id),
                    Cascade,
                ))
                .to_owned(),
        )
        .await?;
        m.create_index(index(
            "ix_documents_dataset",
            Documents::Table,
            &["tenant_id", "dataset_id", "id"],
        ))
        .await?;
        // Resuming unfinished ingestion after a restart.
        m.create_index(index(
            "ix_documents_status",
            Documents::Table,
            &["status", "id"],
        ))
        .await?;

        m.create_table(
            Table::create()
                .table(Chunks::Table)
                .col(pk(Chunks::Id))
                .col(uuid(Chunks::TenantId))
                .col(uuid(Chunks::DatasetId))
                .col(uuid(Chunks::DocumentId))
                .col(int(Chunks::Ordinal))
                .col(text(Chunks::Text))
                .col(int(Chunks::TokenCount))
                .col(ColumnDef::new(Chunks::Embedding).blob().null())
                .foreign_key(&mut fk(
                    "fk_chunks_tenant",
                    (Chunks::Table, Chunks::TenantId),
                    (Tenants::Table, Tenants::Id),
                    Cascade,
                ))
                .foreign_key(&mut fk(
                    "fk_chunks_dataset",
                    (Chunks::Table, Chunks::DatasetId),
                    (Datasets::Table, Datasets::Id),
                    Cascade,
                ))
                .foreign_key(&mut fk(
                    "fk_chunks_document",
                    (Chunks::Table, Chunks::DocumentId),
                    (Documents::Table, Documents::Id),
                    Cascade,
                ))
                .to_owned(),
        )
        .await?;
        // A document's chunks in order; one chunk per position.
        m.create_index(
            index(
                "ux_chunks_document_ordinal",
                Chunks::Table,
                &["document_id", "ordinal"],
            )
            .unique()
            .to_owned(),
        )
        .await?;
        // Retrieval scans a tenant's dataset.
        m.create_index(index(
            "ix_chunks_dataset",
            Chunks::Table,
            &["tenant_id", "dataset_id"],
        ))
        .await?;

        m.create_table(
            Table::create()
                .table(Scopes::Table)
                .col(pk(Scopes::Id))
                .col(uuid(Scopes::TenantId))
                .col(uuid(Scopes::BotId))
                .col(text(Scopes::Kind))
                .col(json(Scopes::Config))
                .col(ts(Scopes::CreatedAt))
                .foreign_key(&mut fk(
                    "fk_scopes_tenant",
                    (Scopes::Table, Scopes::TenantId),
                    (Tenants::Table, Tenants::Id),
                    Cascade,
                ))
                .foreign_key(&mut fk(
                    "fk_scopes_bot",
                    (Scopes::Table, Scopes::BotId),
                    (Bots::Table, Bots::Id),
                    Cascade,
                ))
                .to_owned(),
        )
        .await?;
        // A bot's rules, loaded on every chat turn (and cached).
        m.create_index(index(
            "ix_scopes_bot",
            Scopes::Table,
            &["tenant_id", "bot_id"],
        ))
        .await?;

        m.create_table(
            Table::create()
                .table(AuditLogs::Table)
                .col(pk(AuditLogs::Id))
                .col(uuid_null(AuditLogs::TenantId))
                .col(text(AuditLogs::ActorKind))
                .col(text_null(AuditLogs::ActorId))
                .col(text(AuditLogs::Action))
                .col(text_null(AuditLogs::ResourceType))
                .col(text_null(AuditLogs::ResourceId))
                .col(text_null(AuditLogs::RequestId))
                .col(text_null(AuditLogs::Ip))
                .col(json(AuditLogs::Metadata))
                .col(ts(AuditLogs::CreatedAt))
                .foreign_key(&mut fk(
                    "fk_audit_logs_tenant",
                    (AuditLogs::Table, AuditLogs::TenantId),
                    (Tenants::Table, Tenants::Id),
                    SetNull,
                ))
                .to_owned(),
        )
        .await?;
        // A tenant's audit trail by time, and filtered by action.
        m.create_index(index(
            "ix_audit_logs_tenant_time",
            AuditLogs::Table,
            &["tenant_id", "created_at"],
        ))
        .await?;
        m.create_index(index(
            "ix_audit_logs_tenant_action",
            AuditLogs::Table,
            &["tenant_id", "action", "created_at"],
        ))
        .await?;
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        // Children before parents.
        for t in [
            AuditLogs::Table.into_iden(),
            Scopes::Table.into_iden(),
            Chunks::Table.into_iden(),
            Documents::Table.into_iden(),
            Messages::Table.into_iden(),
            Conversations::Table.into_iden(),
            ApiKeys::Table.into_iden(),
            Bots::Table.into_iden(),
            Datasets::Table.into_iden(),
            TenantAiProviders::Table.into_iden(),
            AiProvidersMaster::Table.into_iden(),
            Tenants::Table.into_iden(),
        ] {
            m.drop_table(Table::drop().table(t).to_owned()).await?;
        }
        Ok(())
    }
}
