//! `GET /openapi.json`: the OpenAPI 3.1 document of the HTTP API, generated
//! by utoipa from the Rust types the handlers parse and serialize.
//!
//! Each operation is declared once below, with `#[utoipa::path]` on a
//! function that only documents it (the router is [`crate::routes`]): its
//! request body and success reply name the Rust types (from `chatcore` with
//! its `openapi` feature, and from this crate), so a field added to one of
//! them shows up here. What every operation shares is added by
//! [`Conventions`] from the route's method, path and guard: the security
//! scheme, the permission a tenant key needs (the same
//! [`crate::admin::access`] the server enforces), and the error replies that
//! apply, all with the [`ErrorBody`] schema.
//!
//! Query parameters are described by the `*Params` types here; the handlers
//! read the query string with [`crate::admin::Query`], which refuses any
//! parameter they do not take.

use chatcore::admin::{
    Access, ApiKeyView, CreateApiKey, CreateBot, CreateProvider, CreateScope, CreateTenant,
    CreatedApiKey, CreatedTenant, List, MessageView, ProviderView, UpdateBot, UpdateProvider,
    UpdateTenant, UsageReport,
};
use chatcore::domain::{
    ActorKind, ApiKeyId, AuditRecord, Bot, CatalogEntry, Conversation, ConversationId, Dataset,
    DatasetId, DocumentId, ProviderConfigId, Scope, ScopeId, Tenant, TenantId,
};
use chatcore::engine::{ChatReply, StreamDone};
use chatcore::rag::DocumentView;
use http::Method;
use serde_json::Value;
use utoipa::openapi::extensions::ExtensionsBuilder;
use utoipa::openapi::header::Header;
use utoipa::openapi::path::{Operation, PathItem};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder, Type};
use utoipa::{IntoParams, Modify, OpenApi};

use crate::chat::{ChatBody, StreamDelta, StreamStart};
use crate::datasets::{CreateDataset, Search, SearchResult, UploadDocument};
use crate::http::ErrorBody;
use crate::routes::Status;

/// The document, as JSON (built once).
pub fn document() -> &'static Value {
    static DOC: std::sync::OnceLock<Value> = std::sync::OnceLock::new();
    DOC.get_or_init(|| {
        serde_json::to_value(ApiDoc::openapi()).expect("the OpenAPI document serializes")
    })
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "chatcore",
        description = "Multi-tenant, multi-provider chatbot engine.\n\n\
            Errors are JSON: `{\"error\": {\"code\", \"message\", \"request_id\"}}` (schema `ErrorBody`). \
            Lists are pages: `{\"data\": [...], \"next_cursor\"}`; pass `?cursor=` with the last \
            `next_cursor` for the next page, `?limit=` (1 to 200, default 50) for its size.\n\n\
            Tenant API keys carry permissions: `chat` may chat, `read` may use every management \
            `GET` (API keys included: they never show a secret) and try retrieval on a dataset, \
            `admin` may also change things. Each operation names the permission it needs in \
            `x-chatcore-permission`."
    ),
    paths(
        ops::chat_public,
        ops::chat_public_preflight,
        ops::chat,
        ops::healthz,
        ops::readyz,
        ops::metrics,
        ops::openapi_json,
        ops::create_tenant,
        ops::list_tenants,
        ops::get_tenant,
        ops::update_tenant,
        ops::provider_catalog,
        ops::create_provider,
        ops::list_providers,
        ops::get_provider,
        ops::update_provider,
        ops::delete_provider,
        ops::create_bot,
        ops::list_bots,
        ops::get_bot,
        ops::update_bot,
        ops::delete_bot,
        ops::create_api_key,
        ops::list_api_keys,
        ops::get_api_key,
        ops::revoke_api_key,
        ops::create_scope,
        ops::list_scopes,
        ops::get_scope,
        ops::delete_scope,
        ops::list_conversations,
        ops::get_conversation,
        ops::delete_conversation,
        ops::list_messages,
        ops::audit_logs,
        ops::usage,
        ops::create_dataset,
        ops::list_datasets,
        ops::get_dataset,
        ops::delete_dataset,
        ops::upload_document,
        ops::list_documents,
        ops::search_dataset,
        ops::get_document,
        ops::delete_document,
    ),
    components(schemas(ErrorBody, StreamStart, StreamDelta, StreamDone)),
    modifiers(&Conventions),
    tags(
        (name = "chat", description = "Chat with a bot: JSON, or server-sent events."),
        (name = "operations", description = "Health, readiness, metrics, this document."),
        (name = "operator", description = "Tenants, with the operator key."),
        (name = "providers", description = "A tenant's AI provider configurations."),
        (name = "bots", description = "A tenant's bots (by id or slug)."),
        (name = "api-keys", description = "A tenant's API keys."),
        (name = "scopes", description = "Access rules and guardrails of bots."),
        (name = "conversations", description = "Conversations and their messages."),
        (name = "audit", description = "The audit log and usage."),
        (name = "datasets", description = "Datasets, documents and retrieval (RAG)."),
    ),
)]
struct ApiDoc;

/// The operations and their query parameters: documentation only (the
/// router is [`crate::routes`], the query strings are read by
/// [`crate::admin::Query`]), hence never called or built.
#[allow(dead_code)]
mod ops {
    use super::*;

    // ---------------------------------------------------------------- parameters

    /// `?limit=&cursor=` of every list.
    #[derive(IntoParams)]
    #[into_params(parameter_in = Query)]
    struct PageParams {
        /// Items per page, 1 to 200 (default 50).
        #[param(minimum = 1, maximum = 200)]
        limit: Option<u64>,
        /// `next_cursor` of the previous page.
        cursor: Option<String>,
    }

    /// Which bot's scopes to list.
    #[derive(IntoParams)]
    #[into_params(parameter_in = Query)]
    struct ScopeParams {
        /// The bot (id or slug).
        bot_id: String,
    }

    /// Filters of the conversation list.
    #[derive(IntoParams)]
    #[into_params(parameter_in = Query)]
    struct ConversationParams {
        /// Of this bot (id or slug).
        bot_id: Option<String>,
        /// Of this end user.
        user_id: Option<String>,
        /// Created at or after (RFC 3339).
        since: Option<chrono::DateTime<chrono::Utc>>,
        /// Created before (RFC 3339).
        until: Option<chrono::DateTime<chrono::Utc>>,
    }

    /// Filters of the audit log.
    #[derive(IntoParams)]
    #[into_params(parameter_in = Query)]
    struct AuditParams {
        /// Only this action, e.g. `bot.created`.
        action: Option<String>,
        /// Only this kind of actor.
        #[param(inline)]
        actor_kind: Option<ActorKind>,
        /// Only this actor (an API key id, ...).
        actor_id: Option<String>,
        /// At or after (RFC 3339).
        since: Option<chrono::DateTime<chrono::Utc>>,
        /// Before (RFC 3339).
        until: Option<chrono::DateTime<chrono::Utc>>,
    }

    /// Range and grouping of the usage report.
    #[derive(IntoParams)]
    #[into_params(parameter_in = Query)]
    struct UsageParams {
        /// Start (RFC 3339, inclusive; default: 30 days before `until`).
        since: Option<chrono::DateTime<chrono::Utc>>,
        /// End (RFC 3339, exclusive; default: now).
        until: Option<chrono::DateTime<chrono::Utc>>,
        /// `bot` (default), `key` or `day`.
        #[param(pattern = "^(bot|key|day)$")]
        group_by: Option<String>,
    }

    /// The title of a raw (non-JSON) document upload.
    #[derive(IntoParams)]
    #[into_params(parameter_in = Query)]
    struct UploadParams {
        /// Title; required with a raw `text/*` body, refused with JSON.
        title: Option<String>,
    }

    // ---------------------------------------------------------------- chat

    /// Chat with a public bot
    ///
    /// No authentication: the bot must be public, and the `Origin` must be one
    /// of its allowed origins when it names any. With `"stream": true` the
    /// reply is `text/event-stream`: `start` (`StreamStart`), `delta`
    /// (`StreamDelta`) per piece, then `done` (`StreamDone`) or `error`
    /// (`ErrorBody`).
    #[utoipa::path(post, path = "/v1/chat/public", tag = "chat", request_body = ChatBody,
        responses((status = 200, description = "The answer", content(
            (ChatReply = "application/json"),
            (String = "text/event-stream"),
        ))))]
    fn chat_public() {}

    /// CORS preflight of public chat
    #[utoipa::path(options, path = "/v1/chat/public", tag = "chat",
        responses((status = 204, description = "The browser may send the request")))]
    fn chat_public_preflight() {}

    /// Chat with a bot of the key's tenant
    ///
    /// With `"stream": true` the reply is `text/event-stream`: `start`
    /// (`StreamStart`), `delta` (`StreamDelta`) per piece, then `done`
    /// (`StreamDone`) or `error` (`ErrorBody`).
    #[utoipa::path(post, path = "/v1/chat", tag = "chat", request_body = ChatBody,
        responses((status = 200, description = "The answer", content(
            (ChatReply = "application/json"),
            (String = "text/event-stream"),
        ))))]
    fn chat() {}

    // ---------------------------------------------------------------- operations

    /// Liveness
    #[utoipa::path(get, path = "/healthz", tag = "operations",
        responses((status = 200, description = "The process runs", body = Status)))]
    fn healthz() {}

    /// Readiness (the database answers)
    #[utoipa::path(get, path = "/readyz", tag = "operations",
        responses((status = 200, description = "Ready", body = Status)))]
    fn readyz() {}

    /// Prometheus metrics (text exposition format)
    ///
    /// With `CHATCORE_METRICS_KEY` set, send it as a bearer; without it,
    /// only clients on loopback are answered.
    #[utoipa::path(get, path = "/metrics", tag = "operations",
        responses((status = 200, description = "Metrics", content_type = "text/plain", body = String)))]
    fn metrics() {}

    /// This document
    #[utoipa::path(get, path = "/openapi.json", tag = "operations",
        responses((status = 200, description = "The OpenAPI 3.1 document", body = Object)))]
    fn openapi_json() {}

    // ---------------------------------------------------------------- operator

    /// Create a tenant and its first admin key (shown once)
    #[utoipa::path(post, path = "/v1/admin/tenants", tag = "operator", request_body = CreateTenant,
        responses((status = 201, description = "The tenant and its admin key", body = CreatedTenant)))]
    fn create_tenant() {}

    /// List tenants, oldest first
    #[utoipa::path(get, path = "/v1/admin/tenants", tag = "operator", params(PageParams),
        responses((status = 200, description = "A page of tenants", body = List<Tenant>)))]
    fn list_tenants() {}

    /// Get a tenant
    #[utoipa::path(get, path = "/v1/admin/tenants/{id}", tag = "operator",
        params(("id" = TenantId, Path, description = "Tenant id")),
        responses((status = 200, description = "The tenant", body = Tenant)))]
    fn get_tenant() {}

    /// Change a tenant (a suspension stops its keys at once)
    #[utoipa::path(patch, path = "/v1/admin/tenants/{id}", tag = "operator",
        params(("id" = TenantId, Path, description = "Tenant id")), request_body = UpdateTenant,
        responses((status = 200, description = "The tenant", body = Tenant)))]
    fn update_tenant() {}

    // ---------------------------------------------------------------- providers

    /// The provider catalog
    #[utoipa::path(get, path = "/v1/providers/catalog", tag = "providers",
        responses((status = 200, description = "Every catalog provider (one page)", body = List<CatalogEntry>)))]
    fn provider_catalog() {}

    /// Configure a catalog provider (its key is stored encrypted)
    #[utoipa::path(post, path = "/v1/providers", tag = "providers", request_body = CreateProvider,
        responses((status = 201, description = "The configuration (the key only as api_key_last4)", body = ProviderView)))]
    fn create_provider() {}

    /// List provider configurations
    #[utoipa::path(get, path = "/v1/providers", tag = "providers", params(PageParams),
        responses((status = 200, description = "A page of configurations", body = List<ProviderView>)))]
    fn list_providers() {}

    /// Get a provider configuration
    #[utoipa::path(get, path = "/v1/providers/{id}", tag = "providers",
        params(("id" = ProviderConfigId, Path, description = "Provider configuration id")),
        responses((status = 200, description = "The configuration", body = ProviderView)))]
    fn get_provider() {}

    /// Change a provider configuration (a new api_key rotates the key)
    #[utoipa::path(patch, path = "/v1/providers/{id}", tag = "providers",
        params(("id" = ProviderConfigId, Path, description = "Provider configuration id")),
        request_body = UpdateProvider,
        responses((status = 200, description = "The configuration", body = ProviderView)))]
    fn update_provider() {}

    /// Delete a provider configuration (409 while a bot or dataset uses it)
    #[utoipa::path(delete, path = "/v1/providers/{id}", tag = "providers",
        params(("id" = ProviderConfigId, Path, description = "Provider configuration id")),
        responses((status = 204, description = "Deleted")))]
    fn delete_provider() {}

    // ---------------------------------------------------------------- bots

    /// Create a bot
    #[utoipa::path(post, path = "/v1/bots", tag = "bots", request_body = CreateBot,
        responses((status = 201, description = "The bot", body = Bot)))]
    fn create_bot() {}

    /// List bots
    #[utoipa::path(get, path = "/v1/bots", tag = "bots", params(PageParams),
        responses((status = 200, description = "A page of bots", body = List<Bot>)))]
    fn list_bots() {}

    /// Get a bot
    #[utoipa::path(get, path = "/v1/bots/{id}", tag = "bots",
        params(("id" = String, Path, description = "Bot id or slug")),
        responses((status = 200, description = "The bot", body = Bot)))]
    fn get_bot() {}

    /// Change a bot
    #[utoipa::path(patch, path = "/v1/bots/{id}", tag = "bots",
        params(("id" = String, Path, description = "Bot id or slug")), request_body = UpdateBot,
        responses((status = 200, description = "The bot", body = Bot)))]
    fn update_bot() {}

    /// Delete a bot with its conversations and scopes
    #[utoipa::path(delete, path = "/v1/bots/{id}", tag = "bots",
        params(("id" = String, Path, description = "Bot id or slug")),
        responses((status = 204, description = "Deleted")))]
    fn delete_bot() {}

    // ---------------------------------------------------------------- API keys

    /// Create an API key (its secret is returned once, as key)
    #[utoipa::path(post, path = "/v1/api-keys", tag = "api-keys", request_body = CreateApiKey,
        responses((status = 201, description = "The key, with its secret this once", body = CreatedApiKey)))]
    fn create_api_key() {}

    /// List API keys (revoked ones included; never a secret)
    #[utoipa::path(get, path = "/v1/api-keys", tag = "api-keys", params(PageParams),
        responses((status = 200, description = "A page of keys", body = List<ApiKeyView>)))]
    fn list_api_keys() {}

    /// Get an API key (never its secret)
    #[utoipa::path(get, path = "/v1/api-keys/{id}", tag = "api-keys",
        params(("id" = ApiKeyId, Path, description = "API key id")),
        responses((status = 200, description = "The key", body = ApiKeyView)))]
    fn get_api_key() {}

    /// Revoke an API key (it stops working at once)
    #[utoipa::path(delete, path = "/v1/api-keys/{id}", tag = "api-keys",
        params(("id" = ApiKeyId, Path, description = "API key id")),
        responses((status = 204, description = "Revoked")))]
    fn revoke_api_key() {}

    // ---------------------------------------------------------------- scopes

    /// Create a scope (an access rule or guardrail of a bot)
    #[utoipa::path(post, path = "/v1/scopes", tag = "scopes", request_body = CreateScope,
        responses((status = 201, description = "The scope", body = Scope)))]
    fn create_scope() {}

    /// List a bot's scopes, oldest first
    #[utoipa::path(get, path = "/v1/scopes", tag = "scopes", params(ScopeParams, PageParams),
        responses((status = 200, description = "A page of scopes", body = List<Scope>)))]
    fn list_scopes() {}

    /// Get a scope
    #[utoipa::path(get, path = "/v1/scopes/{id}", tag = "scopes",
        params(("id" = ScopeId, Path, description = "Scope id")),
        responses((status = 200, description = "The scope", body = Scope)))]
    fn get_scope() {}

    /// Delete a scope
    #[utoipa::path(delete, path = "/v1/scopes/{id}", tag = "scopes",
        params(("id" = ScopeId, Path, description = "Scope id")),
        responses((status = 204, description = "Deleted")))]
    fn delete_scope() {}

    // ---------------------------------------------------------------- conversations

    /// List conversations, newest first
    #[utoipa::path(get, path = "/v1/conversations", tag = "conversations",
        params(ConversationParams, PageParams),
        responses((status = 200, description = "A page of conversations", body = List<Conversation>)))]
    fn list_conversations() {}

    /// Get a conversation
    #[utoipa::path(get, path = "/v1/conversations/{id}", tag = "conversations",
        params(("id" = ConversationId, Path, description = "Conversation id")),
        responses((status = 200, description = "The conversation", body = Conversation)))]
    fn get_conversation() {}

    /// Delete a conversation and its messages
    #[utoipa::path(delete, path = "/v1/conversations/{id}", tag = "conversations",
        params(("id" = ConversationId, Path, description = "Conversation id")),
        responses((status = 204, description = "Deleted")))]
    fn delete_conversation() {}

    /// A conversation's messages, oldest first
    #[utoipa::path(get, path = "/v1/conversations/{id}/messages", tag = "conversations",
        params(("id" = ConversationId, Path, description = "Conversation id"), PageParams),
        responses((status = 200, description = "A page of messages", body = List<MessageView>)))]
    fn list_messages() {}

    // ---------------------------------------------------------------- audit and usage

    /// The audit log, newest first
    #[utoipa::path(get, path = "/v1/audit-logs", tag = "audit", params(AuditParams, PageParams),
        responses((status = 200, description = "A page of audit records", body = List<AuditRecord>)))]
    fn audit_logs() {}

    /// Chat turns and tokens per bot, key or day
    #[utoipa::path(get, path = "/v1/usage", tag = "audit", params(UsageParams),
        responses((status = 200, description = "The report", body = UsageReport)))]
    fn usage() {}

    // ---------------------------------------------------------------- datasets

    /// Create a dataset (embedding provider, model, dimension)
    #[utoipa::path(post, path = "/v1/datasets", tag = "datasets", request_body = CreateDataset,
        responses((status = 201, description = "The dataset", body = Dataset)))]
    fn create_dataset() {}

    /// List datasets
    #[utoipa::path(get, path = "/v1/datasets", tag = "datasets", params(PageParams),
        responses((status = 200, description = "A page of datasets", body = List<Dataset>)))]
    fn list_datasets() {}

    /// Get a dataset
    #[utoipa::path(get, path = "/v1/datasets/{id}", tag = "datasets",
        params(("id" = DatasetId, Path, description = "Dataset id")),
        responses((status = 200, description = "The dataset", body = Dataset)))]
    fn get_dataset() {}

    /// Delete a dataset with its documents
    #[utoipa::path(delete, path = "/v1/datasets/{id}", tag = "datasets",
        params(("id" = DatasetId, Path, description = "Dataset id")),
        responses((status = 204, description = "Deleted")))]
    fn delete_dataset() {}

    /// Upload a document; it is indexed in the background
    ///
    /// JSON, or a raw `text/plain`, `text/markdown`, `text/html` or
    /// `application/pdf` body with `?title=`. The reply's `status` moves from `pending` through `indexing`
    /// to `ready` or `failed` (with `error`).
    #[utoipa::path(post, path = "/v1/datasets/{id}/documents", tag = "datasets",
        params(("id" = DatasetId, Path, description = "Dataset id"), UploadParams),
        request_body(content(
            (UploadDocument = "application/json"),
            (String = "text/plain"),
            (String = "text/markdown"),
            (String = "text/html"),
            (String = "application/pdf"),
        )),
        responses((status = 201, description = "The document, pending", body = DocumentView)))]
    fn upload_document() {}

    /// List a dataset's documents with status and chunk count
    #[utoipa::path(get, path = "/v1/datasets/{id}/documents", tag = "datasets",
        params(("id" = DatasetId, Path, description = "Dataset id"), PageParams),
        responses((status = 200, description = "A page of documents", body = List<DocumentView>)))]
    fn list_documents() {}

    /// Try retrieval: hybrid (vector and full text, fused by RRF) by default,
    /// or one side alone with `mode`
    #[utoipa::path(post, path = "/v1/datasets/{id}/search", tag = "datasets",
        params(("id" = DatasetId, Path, description = "Dataset id")), request_body = Search,
        responses((status = 200, description = "The best chunks, best first", body = SearchResult)))]
    fn search_dataset() {}

    /// Get a document (status, failure reason, chunk count)
    #[utoipa::path(get, path = "/v1/documents/{id}", tag = "datasets",
        params(("id" = DocumentId, Path, description = "Document id")),
        responses((status = 200, description = "The document", body = DocumentView)))]
    fn get_document() {}

    /// Delete a document and its chunks
    #[utoipa::path(delete, path = "/v1/documents/{id}", tag = "datasets",
        params(("id" = DocumentId, Path, description = "Document id")),
        responses((status = 204, description = "Deleted")))]
    fn delete_document() {}
}

// ---------------------------------------------------------------- conventions

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guard {
    /// Anyone (public chat, health, metrics, this document).
    Open,
    /// A tenant key with the `chat` permission.
    Chat,
    /// The operator key.
    Operator,
    /// A tenant key allowed this access (see [`chatcore::admin::Access`]).
    Tenant(Access),
}

/// The guard of a route, as the server applies it.
pub fn guard(method: &Method, path: &str) -> Guard {
    if path == "/v1/chat" {
        Guard::Chat
    } else if path.starts_with("/v1/admin/") {
        Guard::Operator
    } else if path.starts_with("/v1/") && !path.starts_with("/v1/chat") {
        Guard::Tenant(crate::admin::access(method, path))
    } else {
        Guard::Open
    }
}

/// The error replies, as reusable `components.responses`: (name, status,
/// description).
const ERRORS: &[(&str, u16, &str)] = &[
    (
        "BadRequest",
        400,
        "`invalid_request`: the body, a query parameter or the path is not valid; the message names the field",
    ),
    (
        "Unauthorized",
        401,
        "`unauthorized`: no key, or a wrong, revoked or expired one",
    ),
    (
        "Forbidden",
        403,
        "`forbidden` (the key lacks the permission this operation needs, see `x-chatcore-permission`; a suspended tenant; a bot the key may not use), `feature_disabled` or `guardrail_blocked`",
    ),
    (
        "NotFound",
        404,
        "`not_found`: no such row in the caller's tenant (another tenant's rows are not found either), including rows named in the body or query; operator routes are not found while no operator key is configured",
    ),
    (
        "Conflict",
        409,
        "`conflict`: a slug that is taken (a public bot's slug is unique across tenants), a row still in use",
    ),
    (
        "PayloadTooLarge",
        413,
        "`payload_too_large`: the body is over the configured limit",
    ),
    (
        "UnsupportedMediaType",
        415,
        "`unsupported_media_type`: the body is not of an accepted content type",
    ),
    (
        "RateLimited",
        429,
        "`rate_limited`: a rate limit (the tenant's, its public budget, the key's, the visitor's, the provider's), or too many failed authentications from this IP; see Retry-After",
    ),
    (
        "Internal",
        500,
        "`internal`: an unexpected error (details are in the server log only)",
    ),
    (
        "ProviderError",
        502,
        "`provider_error`: the AI provider failed (after retries and the fallback)",
    ),
    (
        "Unavailable",
        503,
        "`unavailable`: the database or the rate limiter cannot be reached",
    ),
    (
        "ProviderTimeout",
        504,
        "`provider_timeout`: the AI provider did not answer in time",
    ),
];

/// Adds to every operation what follows from its route: security, the
/// permission it needs, and the error replies that apply.
struct Conventions;

fn operations(item: &mut PathItem) -> impl Iterator<Item = (Method, &mut Operation)> {
    [
        (Method::GET, &mut item.get),
        (Method::POST, &mut item.post),
        (Method::PATCH, &mut item.patch),
        (Method::PUT, &mut item.put),
        (Method::DELETE, &mut item.delete),
        (Method::OPTIONS, &mut item.options),
    ]
    .into_iter()
    .filter_map(|(m, op)| op.as_mut().map(|op| (m, op)))
}

/// The statuses of the errors an operation may answer.
fn error_statuses(method: &Method, path: &str, op: &Operation) -> Vec<u16> {
    let g = guard(method, path);
    let has_body = op.request_body.is_some();
    let has_params = op.parameters.as_ref().is_some_and(|p| !p.is_empty());
    let names_rows = path.contains("{id}")
        || has_body
        || op.parameters.iter().flatten().any(|p| p.name == "bot_id");
    let is_chat = path.starts_with("/v1/chat");
    let calls_provider = is_chat
        || (method == Method::POST && path == "/v1/datasets")
        || path == "/v1/datasets/{id}/search";
    let mut s = vec![];
    if method == Method::OPTIONS || matches!(path, "/healthz" | "/openapi.json") {
        return s;
    }
    if path == "/metrics" {
        // The metrics key when one is set; loopback clients otherwise.
        return vec![401, 403];
    }
    if has_body || has_params {
        s.push(400);
    }
    if g != Guard::Open {
        s.push(401);
    }
    if is_chat || matches!(g, Guard::Tenant(_)) {
        s.push(403);
    }
    if g == Guard::Operator || (path.starts_with("/v1/") && names_rows) {
        s.push(404);
    }
    if matches!(g, Guard::Operator | Guard::Tenant(Access::Write)) && method != Method::GET {
        s.push(409);
    }
    if has_body {
        s.extend([413, 415]);
    }
    // Chat has rate limits; every authenticated route answers 429 to an IP
    // that failed authentication too often.
    if is_chat || g != Guard::Open {
        s.push(429);
    }
    s.push(500);
    if calls_provider {
        s.push(502);
    }
    s.push(503);
    if calls_provider {
        s.push(504);
    }
    s
}

fn permission_note(g: Guard) -> (&'static str, &'static str) {
    match g {
        Guard::Open => ("none", "No authentication."),
        Guard::Chat => (
            "chat",
            "Needs a tenant API key with the `chat` permission (and, if the key is restricted to some bots, this bot).",
        ),
        Guard::Operator => ("operator", "Needs the operator key."),
        Guard::Tenant(Access::Read) => (
            "read",
            "Needs a tenant API key with the `read` or `admin` permission.",
        ),
        Guard::Tenant(Access::Write) => (
            "admin",
            "Needs a tenant API key with the `admin` permission (`read` keys get 403).",
        ),
    }
}

impl Modify for Conventions {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.security_schemes.insert(
            "apiKey".into(),
            SecurityScheme::Http(
                Http::builder()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("A tenant API key (`cc_...`)"))
                    .build(),
            ),
        );
        components.security_schemes.insert(
            "operatorKey".into(),
            SecurityScheme::Http(
                Http::builder()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("The operator key (`CHATCORE_OPERATOR_KEY`)"))
                    .build(),
            ),
        );
        for (name, status, description) in ERRORS {
            let mut r = ResponseBuilder::new().description(*description).content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("ErrorBody")))
                    .build(),
            );
            if *status == 429 {
                r = r.header(
                    "Retry-After",
                    Header::builder()
                        .schema(utoipa::openapi::ObjectBuilder::new().schema_type(Type::Integer))
                        .description(Some("Seconds to wait"))
                        .build(),
                );
            }
            components
                .responses
                .insert((*name).to_string(), RefOr::T(r.build()));
        }
        for (path, item) in doc.paths.paths.iter_mut() {
            for (method, op) in operations(item) {
                let g = guard(&method, path);
                for status in error_statuses(&method, path, op) {
                    let name = ERRORS
                        .iter()
                        .find(|(_, s, _)| *s == status)
                        .map(|(n, _, _)| *n)
                        .expect("every status has a reusable response");
                    op.responses
                        .responses
                        .insert(status.to_string(), Ref::from_response_name(name).into());
                }
                op.security = Some(match g {
                    Guard::Open => vec![],
                    Guard::Operator => {
                        vec![SecurityRequirement::new(
                            "operatorKey",
                            Vec::<String>::new(),
                        )]
                    }
                    Guard::Chat | Guard::Tenant(_) => {
                        vec![SecurityRequirement::new("apiKey", Vec::<String>::new())]
                    }
                });
                let (permission, note) = permission_note(g);
                op.description = Some(match op.description.take() {
                    Some(d) if !d.is_empty() => format!("{d}\n\n{note}"),
                    _ => note.to_string(),
                });
                let ext = ExtensionsBuilder::new()
                    .add("x-chatcore-permission", permission)
                    .build();
                match &mut op.extensions {
                    Some(e) => e.merge(ext),
                    None => op.extensions = Some(ext),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
