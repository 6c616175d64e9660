//! Management endpoints: the operator's `/v1/admin/tenants` and a tenant
//! admin's providers, bots, API keys, scopes, conversations, audit log and
//! usage. Each handler takes its checked caller (see [`crate::auth`]), its
//! path id, query and body, and calls [`chatcore::admin::AdminService`];
//! the rules live there.

use std::sync::Arc;

use axum::extract::State;
use axum::response::Response;
use chatcore::admin::{
    ApiKeyView, ConversationQuery, CreateApiKey, CreateBot, CreateProvider, CreateScope,
    CreateTenant, CreatedApiKey, CreatedTenant, List, MessageView, ProviderView, UpdateBot,
    UpdateProvider, UpdateTenant, UsageReport, page_request,
};
use chatcore::domain::{
    ActorKind, ApiKeyId, AuditRecord, Bot, CatalogEntry, Conversation, ConversationId,
    ProviderConfigId, Scope, ScopeId, Tenant, TenantId,
};
use chatcore::store::{AuditFilter, PageRequest, UsageGroup};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use utoipa::IntoParams;

use crate::App;
use crate::auth::{OperatorCaller, TenantCaller};
use crate::http::{ApiError, BotRef, Id, Json, Query, created, no_content, ok};

type Reply = Result<Response, ApiError>;

// ---------------------------------------------------------------- queries

/// `?limit=&cursor=` of every list.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Items per page, 1 to 200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<u64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

impl PageQuery {
    /// The page asked for (400 naming `limit` or `cursor`).
    pub fn page(self) -> Result<PageRequest, ApiError> {
        Ok(page_request(self.limit, self.cursor)?)
    }
}

/// A page of a bot's scopes.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ScopeQuery {
    /// The bot (id or slug) whose scopes to list.
    pub bot_id: String,
    /// Items per page, 1 to 200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<u64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// Filters and page of the conversation list.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ConversationsQuery {
    /// Of this bot (id or slug).
    pub bot_id: Option<String>,
    /// Of this end user.
    pub user_id: Option<String>,
    /// Created at or after (RFC 3339).
    pub since: Option<DateTime<Utc>>,
    /// Created before (RFC 3339).
    pub until: Option<DateTime<Utc>>,
    /// Items per page, 1 to 200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<u64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// Filters and page of the audit log.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Only this action, e.g. `bot.created`.
    pub action: Option<String>,
    /// Only this kind of actor.
    #[param(inline)]
    pub actor_kind: Option<ActorKind>,
    /// Only this actor (an API key id, ...).
    pub actor_id: Option<String>,
    /// At or after (RFC 3339).
    pub since: Option<DateTime<Utc>>,
    /// Before (RFC 3339).
    pub until: Option<DateTime<Utc>>,
    /// Items per page, 1 to 200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<u64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// How the usage report groups.
#[derive(Debug, Clone, Copy, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum GroupBy {
    /// Per bot (default).
    #[default]
    Bot,
    /// Per API key.
    Key,
    /// Per UTC day.
    Day,
    /// Per end user (`user_id` of the turns that sent one).
    EndUser,
}

/// Range and grouping of the usage report.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct UsageQuery {
    /// Start (RFC 3339 or a UTC day, inclusive; default: 30 days before
    /// `until`).
    #[serde(default, deserialize_with = "time_or_day")]
    #[param(value_type = Option<DateTime<Utc>>)]
    pub since: Option<DateTime<Utc>>,
    /// End (RFC 3339 or a UTC day, exclusive; default: now).
    #[serde(default, deserialize_with = "time_or_day")]
    #[param(value_type = Option<DateTime<Utc>>)]
    pub until: Option<DateTime<Utc>>,
    /// `bot` (default), `key`, `day` or `end_user`.
    #[param(inline)]
    pub group_by: Option<GroupBy>,
}

/// An RFC 3339 time or a UTC day (`YYYY-MM-DD`, its midnight).
fn time_or_day<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
    let v = String::deserialize(d)?;
    match chrono::NaiveDate::parse_from_str(&v, "%Y-%m-%d") {
        Ok(day) => Ok(Some(day.and_time(chrono::NaiveTime::MIN).and_utc())),
        Err(_) => DateTime::parse_from_rfc3339(&v)
            .map(|t| Some(t.with_timezone(&Utc)))
            .map_err(|_| {
                serde::de::Error::custom(
                    "must be a day (2026-01-31) or an RFC 3339 time (2026-01-31T00:00:00Z)",
                )
            }),
    }
}

/// No query parameters.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoQuery {}

// ---------------------------------------------------------------- operator

/// Create a tenant and its first admin key (shown once)
#[utoipa::path(post, path = "/v1/admin/tenants", tag = "operator", request_body = CreateTenant,
    security(("operatorKey" = [])),
    responses((status = 201, description = "The tenant and its admin key", body = CreatedTenant)))]
pub async fn create_tenant(
    State(app): State<Arc<App>>,
    OperatorCaller(op): OperatorCaller,
    _: Query<NoQuery>,
    Json(body): Json<CreateTenant>,
) -> Reply {
    Ok(created(&app.admin.create_tenant(&op, body).await?))
}

/// List tenants, oldest first
#[utoipa::path(get, path = "/v1/admin/tenants", tag = "operator", params(PageQuery),
    security(("operatorKey" = [])),
    responses((status = 200, description = "A page of tenants", body = List<Tenant>)))]
pub async fn list_tenants(
    State(app): State<Arc<App>>,
    _: OperatorCaller,
    Query(q): Query<PageQuery>,
) -> Reply {
    Ok(ok(&app.admin.list_tenants(q.page()?).await?))
}

/// Get a tenant
#[utoipa::path(get, path = "/v1/admin/tenants/{id}", tag = "operator",
    params(("id" = TenantId, Path, description = "Tenant id")),
    security(("operatorKey" = [])),
    responses((status = 200, description = "The tenant", body = Tenant)))]
pub async fn get_tenant(
    State(app): State<Arc<App>>,
    _: OperatorCaller,
    _: Query<NoQuery>,
    Id(id): Id<TenantId>,
) -> Reply {
    Ok(ok(&app.admin.get_tenant(id).await?))
}

/// Change a tenant (a suspension stops its keys at once)
#[utoipa::path(patch, path = "/v1/admin/tenants/{id}", tag = "operator",
    params(("id" = TenantId, Path, description = "Tenant id")), request_body = UpdateTenant,
    security(("operatorKey" = [])),
    responses((status = 200, description = "The tenant", body = Tenant)))]
pub async fn update_tenant(
    State(app): State<Arc<App>>,
    OperatorCaller(op): OperatorCaller,
    _: Query<NoQuery>,
    Id(id): Id<TenantId>,
    Json(body): Json<UpdateTenant>,
) -> Reply {
    Ok(ok(&app.admin.update_tenant(&op, id, body).await?))
}

// ---------------------------------------------------------------- providers

/// The provider catalog
#[utoipa::path(get, path = "/v1/providers/catalog", tag = "providers",
    security(("apiKey" = ["read"])),
    responses((status = 200, description = "Every catalog provider (one page)", body = List<CatalogEntry>)))]
pub async fn provider_catalog(
    State(app): State<Arc<App>>,
    _: TenantCaller,
    _: Query<NoQuery>,
) -> Reply {
    Ok(ok(&List {
        data: app.admin.catalog().await?,
        next_cursor: None,
    }))
}

/// Configure a catalog provider (its key is stored encrypted)
#[utoipa::path(post, path = "/v1/providers", tag = "providers", request_body = CreateProvider,
    security(("apiKey" = ["admin"])),
    responses((status = 201, description = "The configuration (the key only as api_key_last4)", body = ProviderView)))]
pub async fn create_provider(
    State(app): State<Arc<App>>,
    TenantCaller(c): TenantCaller,
    _: Query<NoQuery>,
    Json(body): Json<CreateProvider>,
) -> Reply {
    Ok(created(
        &app.admin.create_provider(c.writer()?, body).await?,
    ))
}

/// List provider configurations
#[utoipa::path(get, path = "/v1/providers", tag = "providers", params(PageQuery),
    security(("apiKey" = ["read"])),
    responses((status = 200, description = "A page of configurations", body = List<ProviderView>)))]
pub async fn list_providers(
    State(app): State<Arc<App>>,
    TenantCaller(c): TenantCaller,
    Query(q): Query<PageQuery>,
) -> Reply {
    Ok(ok(&app.admin.list_providers(&c, q.page()?).await?))
}

/// Get a provider configuration
#[utoipa::path(get, path = "/v1/providers/{id}", tag = "providers",
    params(("id" = ProviderConfigId, Path, description = "Provider configuration id")),
    security(("apiKey" = ["read"])),
    responses((status = 200, description = "The configuration", body = ProviderView)))]
pub async fn get_provider(
    State(app): State<Arc<App>>,
    TenantCaller(c): TenantCaller,
    _: Query<NoQuery>,
    Id(id): Id<ProviderConfigId>,
) -> Reply {
    Ok(ok(&app.admin.get_provider(&c, id).await?))
}

/// Change a provider configuration (a new api_key rotates the key)
#[utoipa::path(patch, path = "/v1/providers/{id}", tag = "providers",
    params(("id" = ProviderConfigId, Path, description = "Provider configuration id")),
    request_body = UpdateProvider,
    security(("apiKey" = ["admin"])),
    responses((status = 200, description = "The configuration", body = ProviderView)))]
pub async fn update_provider(
    State(app): State<Arc<App>>,
    TenantCaller(c): TenantCaller,
    _: Query<NoQuery>,
    Id(id): Id<ProviderConfigId>,
    Json(body): Json<UpdateProvider>,
) -> Reply {
    Ok(ok(&app
        .admin
        .update_provider(c.writer()?, id, body)
        .await?))
}

/// Delete a provider configuration (409 while a bot or dataset uses it)
#[utoipa::path(delete, path = "/v1/providers/{id}", tag = "providers",
    params(("id" = ProviderConfigId, Path, description = "Provider configuration id")),
    security(("apiKey" = ["admin"])),
    responses((status = 204, description = "Deleted")))]
pub async fn delete_provider(
    State(app): State<Arc<App>>,
    TenantCaller(c): TenantCaller,
    _: Query<NoQuery>,
    Id(id): Id<ProviderConfigId>,
) -> Reply {
    app.admin.delete_provider(c.writer()?, id).await?;
    Ok(no_content())
}

// ---------------------------------------------------------------- bots

/// Create a bot
#[utoipa::path(post, path = "/v1/bots", tag = "bots", request_body = CreateBot,
    security(("apiKey" = ["admin"])),
    responses((status = 201, description = "The bot", body = Bot)))]
pub async fn create_bot(
    State(app): State<Arc<App>>,
    TenantCaller(c): TenantCaller,
    _: Query<NoQuery>,
    Json(body): Json<CreateBot>,
) -> Reply {
    Ok(created(&app.admin.create_bot(c.writer()?, body).await?))
}

/// List bots
#[utoipa::path(get, path = "/v1/bots", tag = "bots", params(PageQuery),
    security(("apiKey" = ["read"])),
    responses((status = 200, description = "A page of bots", body = List<Bot>)))]
pub async fn list_bots(
    State(app): State<Arc<App>>,
    TenantCaller(c): TenantCaller,
    Query(q): Query<PageQuery>,
) -> Reply {
    Ok(ok(&app.admin.list_bots(&c, q.page()?).await?))
}

/// Get a bot
#[utoipa::path(get, path = "/v1/bots/{id}", tag = "bots",
    params(("id" = String, Path, description = "Bot id or slug")),
    security(("apiKey" = ["read"])),
    responses((status = 200, description = "The bot", body = Bot)))]
pub async fn get_bot(
    State(app): State<Arc<App>>,
    TenantCaller(c): TenantCaller,
    _: Query<NoQuery>,
    Id(BotRef(bot)): Id<BotRef>,
) -> Reply {
    Ok(ok(&app.admin.get_bot(&c, &bot).await?))
}

/// Change a bot
#[utoipa::path(patch, path = "/v1/bots/{id}", tag = "bots",
    params(("id" = String, Path, description = "Bot id or slug")), request_body = UpdateBot,
    security(("apiKey" = ["admin"])),
    responses((status = 200, description = "The bot", body = Bot)))]
pub async fn update_bot(
    State(app): State<Arc<App>>,
    TenantCaller(c): TenantCaller,
    _: Query<NoQuery>,
    Id(BotRef(bot)): Id<BotRef>,
    Json(body): Json<UpdateBot>,
) -> Reply {
    Ok(ok(&app.admin.update_bot(c.writer()?, &bot, body).await?))
}

/// Delete a bot with its conversations and scopes
#[utoipa::path(delete, path = "/v1/bots/{id}", tag = "bots",
    params(("id" = String, Path, description = "Bot id or slug")),
    security(("apiKey" = ["admin"])),
    responses((status = 204, description = "Deleted")))]
pub async fn delete_bot(
    State(app): State<Arc<App>>,
    TenantCaller(c): TenantCaller,
    _: Query<NoQuery>,
    Id(BotRef(bot)): Id<BotRef>,
) -> Reply {
    app.admin.delete_bot(c.writer()?, &bot).await?;
    Ok(no_content())
}

// ---------------------------------------------------------------- API keys

/// Create an API key (its secret is returned once, as key)
#[utoipa::path(post, path = "/v1/api-keys", tag = "api-keys", request_body = CreateApiKey,
    security(("apiKey" = ["admin"])),
    responses((status = 201, description = "The key, with its secret this once", body = CreatedApiKey)))]
pub async fn create_api_key(
    State(app): State<Arc<App>>,
    TenantCaller(c): TenantCaller,
    _: Query<NoQuery>,
    Json(body): Json<CreateApiKey>,
) -> Reply {
    Ok(created(&app.admin.create_api_key(c.writer()?, body).await?))
}

/// List API keys (revoked ones included; never a secret)
#[utoipa::path(get, path = "/v1/api-keys", tag = "api-keys", params(PageQuery),
    security(("apiKey" = ["read"])),
    responses((status = 200, description = "A page of keys", body = List<ApiKeyView>)))]
pub async fn list_api_keys(
    State(app): State<Arc<App>>,
    TenantCaller(c): TenantCaller,
    Query(q): Query<PageQuery>,
) -> Reply {
    Ok(ok(&app.admin.list_api_keys(&c, q.page()?).await?))
}

/// Get an API key (never its secret)
#[utoipa::path(get, path = "/v1/api-keys/{id}", tag = "api-keys",
    params(("id" = ApiKeyId, Path, description = "API key id")),
    security(("apiKey" = ["read"])),
    responses((status = 200, description = "The key", body = ApiKeyView)))]
pub async fn get_api_key(
    State(app): State<Arc<App>>,
    TenantCaller(c): TenantCaller,
    _: Query<NoQuery>,
    Id(id): Id<ApiKeyId>,
) -> Reply {
    Ok(ok(&app.admin.get_api_key(&c, id).await?))
}

/// Revoke an API key (it stops working at once)
#[utoipa::path(delete, path = "/v1/api-keys/{id}", tag = "api-keys",
    params(("id" = ApiKeyId, Path, description = "API key id")),
    security(("apiKey" = ["admin"])),
    responses((status = 204, description = "Revoked")))]
pub async fn revoke_api_key(
    State(app): State<Arc<App>>,
    TenantCaller(c): TenantCaller,
    _: Query<NoQuery>,
    Id(id): Id<ApiKeyId>,
) -> Reply {
    app.admin.revoke_api_key(c.writer()?, id).await?;
    Ok(no_content())
}

// ---------------------------------------------------------------- scopes

/// Create a scope (an access rule or guardrail of a bot)
#[utoipa::path(post, path = "/v1/scopes", tag = "scopes", request_body = CreateScope,
    security(("apiKey" = ["admin"])),
    responses((status = 201, description = "The scope", body = Scope)))]
pub async fn create_scope(
    State(app): State<Arc<App>>,
    TenantCaller(c): TenantCaller,
    _: Query<NoQuery>,
    Json(body): Json<CreateScope>,
) -> Reply {
    Ok(created(&app.admin.create_scope(c.writer()?, body).await?))
}

/// List a bot's scopes, oldest first
#[utoipa::path(get, path = "/v1/scopes", tag = "scopes", params(ScopeQuery),
    security(("apiKey" = ["read"])),
    responses((status = 200, description = "A page of scopes", body = List<Scope>)))]
pub async fn list_scopes(
    State(app): State<Arc<App>>,
    TenantCaller(c): TenantCaller,
    Query(q): Query<ScopeQuery>,
) -> Reply {
    let page = page_request(q.limit, q.cursor)?;
    Ok(ok(&app.admin.list_scopes(&c, &q.bot_id, page).await?))
}

/// Get a scope
#[utoipa::path(get, path = "/v1/scopes/{id}", tag = "scopes",
    params(("id" = ScopeId, Path, description = "Scope id")),
    security(("apiKey" = ["read"])),
    responses((status = 200, description = "The scope", body = Scope)))]
pub async fn get_scope(
    State(app): State<Arc<App>>,
    TenantCaller(c): TenantCaller,
    _: Query<NoQuery>,
    Id(id): Id<ScopeId>,
) -> Reply {
    Ok(ok(&app.admin.get_scope(&c, id).await?))
}

/// Delete a scope
#[utoipa::path(delete, path = "/v1/scopes/{id}", tag = "scopes",
    params(("id" = ScopeId, Path, description = "Scope id")),
    security(("apiKey" = ["admin"])),
    responses((status = 204, description = "Deleted")))]
pub async fn delete_scope(
    State(app): State<Arc<App>>,
    TenantCaller(c): TenantCaller,
    _: Query<NoQuery>,
    Id(id): Id<ScopeId>,
) -> Reply {
    app.admin.delete_scope(c.writer()?, id).await?;
    Ok(no_content())
}

// ---------------------------------------------------------------- conversations

/// List conversations, newest first
#[utoipa::path(get, path = "/v1/conversations", tag = "conversations",
    params(ConversationsQuery),
    security(("apiKey" = ["read"])),
    responses((status = 200, description = "A page of conversations", body = List<Conversation>)))]
pub async fn list_conversations(
    State(app): State<Arc<App>>,
    TenantCaller(c): TenantCaller,
    Query(q): Query<ConversationsQuery>,
) -> Reply {
    let filter = ConversationQuery {
        bot: q.bot_id,
        user_id: q.user_id,
        since: q.since,
        until: q.until,
    };
    let page = page_request(q.limit, q.cursor)?;
    Ok(ok(&app.admin.list_conversations(&c, filter, page).await?))
}

/// Get a conversation
#[utoipa::path(get, path = "/v1/conversations/{id}", tag = "conversations",
    params(("id" = ConversationId, Path, description = "Conversation id")),
    security(("apiKey" = ["read"])),
    responses((status = 200, description = "The conversation", body = Conversation)))]
pub async fn get_conversation(
    State(app): State<Arc<App>>,
    TenantCaller(c): TenantCaller,
    _: Query<NoQuery>,
    Id(id): Id<ConversationId>,
) -> Reply {
    Ok(ok(&app.admin.get_conversation(&c, id).await?))
}

/// Delete a conversation and its messages
#[utoipa::path(delete, path = "/v1/conversations/{id}", tag = "conversations",
    params(("id" = ConversationId, Path, description = "Conversation id")),
    security(("apiKey" = ["admin"])),
    responses((status = 204, description = "Deleted")))]
pub async fn delete_conversation(
    State(app): State<Arc<App>>,
    TenantCaller(c): TenantCaller,
    _: Query<NoQuery>,
    Id(id): Id<ConversationId>,
) -> Reply {
    app.admin.delete_conversation(c.writer()?, id).await?;
    Ok(no_content())
}

/// A conversation's messages, oldest first
#[utoipa::path(get, path = "/v1/conversations/{id}/messages", tag = "conversations",
    params(("id" = ConversationId, Path, description = "Conversation id"), PageQuery),
    security(("apiKey" = ["read"])),
    responses((status = 200, description = "A page of messages", body = List<MessageView>)))]
pub async fn list_messages(
    State(app): State<Arc<App>>,
    TenantCaller(c): TenantCaller,
    Query(q): Query<PageQuery>,
    Id(id): Id<ConversationId>,
) -> Reply {
    Ok(ok(&app.admin.list_messages(&c, id, q.page()?).await?))
}

// ---------------------------------------------------------------- audit and usage

/// The audit log, newest first
#[utoipa::path(get, path = "/v1/audit-logs", tag = "audit", params(AuditQuery),
    security(("apiKey" = ["read"])),
    responses((status = 200, description = "A page of audit records", body = List<AuditRecord>)))]
pub async fn audit_logs(
    State(app): State<Arc<App>>,
    TenantCaller(c): TenantCaller,
    Query(q): Query<AuditQuery>,
) -> Reply {
    let filter = AuditFilter {
        action: q.action,
        actor_kind: q.actor_kind,
        actor_id: q.actor_id,
        since: q.since,
        until: q.until,
    };
    let page = page_request(q.limit, q.cursor)?;
    Ok(ok(&app.admin.audit_logs(&c, filter, page).await?))
}

/// Chat turns and tokens per bot, key or day
#[utoipa::path(get, path = "/v1/usage", tag = "audit", params(UsageQuery),
    security(("apiKey" = ["read"])),
    responses((status = 200, description = "The report", body = UsageReport)))]
pub async fn usage(
    State(app): State<Arc<App>>,
    TenantCaller(c): TenantCaller,
    Query(q): Query<UsageQuery>,
) -> Reply {
    // Usage is kept per UTC day: a time is widened to its day (see
    // `AdminService::usage`), and a bare day is accepted.
    let group = match q.group_by.unwrap_or_default() {
        GroupBy::Bot => UsageGroup::Bot,
        GroupBy::Key => UsageGroup::ApiKey,
        GroupBy::Day => UsageGroup::Day,
        GroupBy::EndUser => UsageGroup::EndUser,
    };
    Ok(ok(&app.admin.usage(&c, q.since, q.until, group).await?))
}
