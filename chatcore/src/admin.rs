//! Management: the operator's tenants and a tenant admin's providers, bots,
//! API keys, scopes, conversations, audit log and usage.
//!
//! [`AdminService`] owns the rules (validation, permission (see [`Access`]:
//! `read` keys read, `admin` keys also change), tenant scoping,
//! secrets shown once, cache invalidation, one audit record per change
//! written in the same transaction as the change through
//! [`AuditStore::apply`](crate::store::AuditStore::apply)); the HTTP server
//! and the CLI only translate to it.
//!
//! Inputs are plain serde types that refuse unknown fields, so an adapter can
//! deserialize a request body straight into them; replies are serializable
//! views that never carry a secret (provider keys show their last 4
//! characters, API keys their prefix; a new API key's secret is returned
//! once, at creation).

mod budgets;
pub use budgets::{CreateBudget, SetPrice, TenantCap, UpdateBudget};

use std::sync::Arc;

use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer, Serialize};

use crate::auth::{Principal, generate_key};
use crate::crypto::Keyring;
use crate::domain::*;
use crate::engine::{Caches, ChatError, ChatService, guard};
use crate::store::*;

/// Result of a management operation.
pub type AdminResult<T> = Result<T, ChatError>;

/// Deserializes a field that may be absent (`None`), `null` (`Some(None)`)
/// or a value (`Some(Some(v))`): PATCH bodies use it for clearable fields.
fn nullable<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

// ---------------------------------------------------------------- callers

/// What a management call does to a tenant's data, for permission checks.
///
/// A key with the `admin` permission may do both; a key with `read` (and
/// not `admin`) may only read: list and get providers, bots, API keys
/// (which never show a secret), scopes, datasets, documents,
/// conversations, messages, the audit log and usage, and try retrieval on a
/// dataset, which changes nothing. A key with `chat` alone may do neither.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Access {
    /// Reads: lists, gets, retrieval trials.
    Read,
    /// Changes: creation, updates, deletion, revocation.
    Write,
}

impl Access {
    /// Whether a key with `permissions` may do this.
    pub fn allowed_by(self, permissions: &[Permission]) -> bool {
        permissions.contains(&Permission::Admin)
            || (self == Access::Read && permissions.contains(&Permission::Read))
    }

    /// The permissions that allow this, for messages and documentation.
    pub fn needs(self) -> &'static str {
        match self {
            Access::Read => "read or admin",
            Access::Write => "admin",
        }
    }
}

const READ_ONLY: &str = "this API key may only read: changes need the admin permission";

/// Who is calling, for permission checks and the audit log.
#[derive(Debug, Clone)]
pub struct AdminCaller {
    /// The tenant acted on.
    pub tenant: TenantId,
    /// The actor recorded in the audit log.
    pub actor: Actor,
    /// Request id, for the audit log.
    pub request_id: Option<String>,
    /// Client IP, for the audit log.
    pub ip: Option<String>,
    /// What the caller was allowed to do when it was checked.
    pub access: Access,
}

impl AdminCaller {
    /// A tenant API key doing something that needs `access` (403 when its
    /// permissions do not allow it, see [`Access`]); everything it does is
    /// scoped to its tenant.
    pub fn from_principal(
        principal: &Principal,
        access: Access,
        request_id: Option<String>,
        ip: Option<String>,
    ) -> AdminResult<Self> {
        let permissions = &principal.key.permissions;
        if !access.allowed_by(permissions) {
            return Err(ChatError::Forbidden(
                if Access::Read.allowed_by(permissions) {
                    READ_ONLY.into()
                } else {
                    format!("this API key lacks the {} permission", access.needs())
                },
            ));
        }
        Ok(Self {
            tenant: principal.tenant.id,
            actor: Actor {
                kind: ActorKind::ApiKey,
                id: Some(principal.key.id.to_string()),
            },
            request_id,
            ip,
            access,
        })
    }

    /// The caller as one that may change the tenant's data, or 403 unless
    /// it was checked for changes ([`Access::Write`]). Every change of
    /// [`AdminService`] and [`crate::rag::RagService`] takes the
    /// [`Writer`] this returns, so a change without the check does not
    /// compile.
    pub fn writer(&self) -> AdminResult<Writer<'_>> {
        match self.access {
            Access::Write => Ok(Writer(self)),
            Access::Read => Err(ChatError::Forbidden(READ_ONLY.into())),
        }
    }

    /// The operator acting inside a tenant (e.g. the CLI creating a key).
    pub fn operator_in(tenant: TenantId, op: &Operator) -> Self {
        Self {
            tenant,
            actor: op.actor(),
            request_id: op.request_id.clone(),
            ip: op.ip.clone(),
            access: Access::Write,
        }
    }

    fn audit(&self, action: &str) -> AuditRecord {
        let mut r = AuditRecord::new(Some(self.tenant), self.actor.clone(), action);
        r.request_id = self.request_id.clone();
        r.ip = self.ip.clone();
        r
    }
}

/// A caller that may change its tenant's data: only
/// [`AdminCaller::writer`] makes one, after checking the permission. It
/// reads as the [`AdminCaller`] it came from.
///
/// A change without the check does not compile:
///
/// ```compile_fail
/// # async fn f(admin: &chatcore::admin::AdminService, c: &chatcore::admin::AdminCaller) {
/// admin.delete_bot(c, "support").await; // an AdminCaller is not a Writer
/// # }
/// ```
///
/// ```compile_fail
/// # fn f(c: &chatcore::admin::AdminCaller) {
/// let w = chatcore::admin::Writer(c); // nor can one be made but by the check
/// # }
/// ```
///
/// ```
/// # async fn f(admin: &chatcore::admin::AdminService, c: &chatcore::admin::AdminCaller)
/// # -> Result<(), chatcore::engine::ChatError> {
/// admin.delete_bot(c.writer()?, "support").await?; // 403 for a read key
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Writer<'a>(&'a AdminCaller);

impl std::ops::Deref for Writer<'_> {
    type Target = AdminCaller;

    fn deref(&self) -> &AdminCaller {
        self.0
    }
}

/// The operator (the operator key over HTTP, or the CLI), already
/// authenticated by the adapter.
#[derive(Debug, Clone, Default)]
pub struct Operator {
    /// How the operator came in, recorded as the actor id (`http`, `cli`).
    pub via: Option<String>,
    /// Request id, for the audit log.
    pub request_id: Option<String>,
    /// Client IP, for the audit log.
    pub ip: Option<String>,
}

impl Operator {
    fn actor(&self) -> Actor {
        Actor {
            kind: ActorKind::Operator,
            id: self.via.clone(),
        }
    }

    fn audit(&self, action: &str) -> AuditRecord {
        let mut r = AuditRecord::new(None, self.actor(), action);
        r.request_id = self.request_id.clone();
        r.ip = self.ip.clone();
        r
    }
}

// ---------------------------------------------------------------- replies

/// A page of a list reply: `{"data": [...], "next_cursor": ...}`.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct List<T> {
    /// The items.
    pub data: Vec<T>,
    /// Cursor of the next page (`?cursor=`), or null on the last page.
    pub next_cursor: Option<String>,
}

impl<T> List<T> {
    fn map<U>(page: Page<T>, f: impl FnMut(T) -> U) -> List<U> {
        List {
            data: page.data.into_iter().map(f).collect(),
            next_cursor: page.next_cursor,
        }
    }
}

/// A provider configuration as shown: the key only by its last 4 characters
/// (none at all for a key under 12 characters), the base URL without
/// userinfo and with its query values replaced by `REDACTED` (an Azure-style
/// `?sig=` token is a secret too).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ProviderView {
    /// Id.
    pub id: ProviderConfigId,
    /// Catalog key.
    pub provider: String,
    /// Display name.
    pub name: String,
    /// The last 4 characters of the API key, if one is set and is at least
    /// 12 characters long (null otherwise).
    pub api_key_last4: Option<String>,
    /// Base URL override, redacted (userinfo removed, query values
    /// replaced by `REDACTED`).
    pub base_url: Option<String>,
    /// Default model override.
    pub default_model: Option<String>,
    /// Whether bots may use it.
    pub enabled: bool,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

impl From<ProviderConfig> for ProviderView {
    fn from(p: ProviderConfig) -> Self {
        Self {
            id: p.id,
            provider: p.provider,
            name: p.name,
            // Keys sealed before short keys were hidden kept all of a key of
            // 4 characters or fewer: never show those.
            api_key_last4: p
                .api_key
                .map(|k| k.last4)
                .filter(|l| l.chars().count() == 4),
            base_url: p.base_url.as_deref().map(crate::provider::redact_url),
            default_model: p.default_model,
            enabled: p.enabled,
            created_at: p.created_at,
            updated_at: p.updated_at,
        }
    }
}

/// An API key as shown: prefix, never the secret or its hash.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ApiKeyView {
    /// Id.
    pub id: ApiKeyId,
    /// Display name.
    pub name: String,
    /// Public prefix (`cc_<16 hex>`), the part of the key one may show.
    pub prefix: String,
    /// Permissions.
    pub permissions: Vec<Permission>,
    /// Bot restriction (empty: every bot).
    pub bot_ids: Vec<BotId>,
    /// Per-key requests per minute.
    pub rate_limit_rpm: Option<i32>,
    /// Expiry.
    pub expires_at: Option<DateTime<Utc>>,
    /// Last use.
    pub last_used_at: Option<DateTime<Utc>>,
    /// Revocation time.
    pub revoked_at: Option<DateTime<Utc>>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
}

impl From<ApiKey> for ApiKeyView {
    fn from(k: ApiKey) -> Self {
        Self {
            id: k.id,
            name: k.name,
            prefix: k.prefix,
            permissions: k.permissions,
            bot_ids: k.bot_ids,
            rate_limit_rpm: k.rate_limit_rpm,
            expires_at: k.expires_at,
            last_used_at: k.last_used_at,
            revoked_at: k.revoked_at,
            created_at: k.created_at,
        }
    }
}

/// A new API key: the stored key and, once, its secret.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreatedApiKey {
    /// The stored key.
    #[serde(flatten)]
    pub api_key: ApiKeyView,
    /// The whole key, shown this once and never again.
    pub key: String,
}

/// A new tenant and its first admin key, shown once.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreatedTenant {
    /// The tenant.
    pub tenant: Tenant,
    /// The admin API key, shown this once and never again.
    pub admin_key: String,
}

/// A stored message as shown in a conversation's history.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MessageView {
    /// Id.
    pub id: MessageId,
    /// The conversation.
    pub conversation_id: ConversationId,
    /// Who wrote it.
    pub role: Role,
    /// Text.
    pub content: String,
    /// State.
    pub status: MessageStatus,
    /// Prompt tokens (assistant messages).
    pub prompt_tokens: Option<i32>,
    /// Completion tokens (assistant messages).
    pub completion_tokens: Option<i32>,
    /// Total tokens (assistant messages).
    pub total_tokens: Option<i32>,
    /// Whether the tokens were counted by chatcore rather than reported.
    pub tokens_estimated: Option<bool>,
    /// Time to the last token, ms.
    pub response_time_ms: Option<i32>,
    /// Time to the first token, ms.
    pub time_to_first_token_ms: Option<i32>,
    /// Provider that answered.
    pub provider: Option<String>,
    /// Model that answered.
    pub model: Option<String>,
    /// Finish reason, verbatim.
    pub finish_reason: Option<String>,
    /// Error code, for status `error`.
    pub error: Option<String>,
    /// The API key that sent it.
    pub api_key_id: Option<ApiKeyId>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Feedback on it (assistant messages), if any.
    pub feedback: Option<crate::store::Feedback>,
    /// The tools the model called (assistant messages of turns with
    /// tools, through the OpenAI-compatible API); empty otherwise.
    pub tool_calls: Vec<ToolCallView>,
    /// The call a `tool` message answers.
    pub tool_call_id: Option<String>,
}

/// A tool call the model made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ToolCallView {
    /// The call's id (its `tool` result names it).
    pub id: String,
    /// The tool.
    pub name: String,
    /// The arguments: a JSON object, as text.
    pub arguments: String,
}

impl From<Message> for MessageView {
    fn from(m: Message) -> Self {
        Self {
            id: m.id,
            conversation_id: m.conversation_id,
            role: m.role,
            content: m.content,
            status: m.status,
            prompt_tokens: m.usage.map(|u| u.prompt_tokens),
            completion_tokens: m.usage.map(|u| u.completion_tokens),
            total_tokens: m.usage.map(|u| u.total_tokens),
            tokens_estimated: m.usage.map(|u| u.estimated),
            response_time_ms: m.response_time_ms,
            time_to_first_token_ms: m.time_to_first_token_ms,
            provider: m.provider,
            model: m.model,
            finish_reason: m.finish_reason,
            error: m.error,
            api_key_id: m.api_key_id,
            created_at: m.created_at,
            feedback: None,
            tool_calls: m
                .tool_calls
                .into_iter()
                .map(|c| ToolCallView {
                    id: c.id,
                    name: c.name,
                    arguments: c.arguments,
                })
                .collect(),
            tool_call_id: m.tool_call_id,
        }
    }
}

/// Usage over whole UTC days.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UsageReport {
    /// Start of the range counted (inclusive): a midnight, UTC.
    pub since: DateTime<Utc>,
    /// End of the range counted (exclusive): a midnight, UTC.
    pub until: DateTime<Utc>,
    /// `bot`, `key` or `day`.
    #[cfg_attr(feature = "openapi", schema(schema_with = openapi::usage_group))]
    pub group_by: &'static str,
    /// One entry per group, ordered by group.
    pub data: Vec<UsageEntry>,
}

/// Turns (assistant answers with an outcome: complete, incomplete, error or
/// cancelled) and tokens of one group.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UsageEntry {
    /// Bot id, API key id or day (`YYYY-MM-DD`, UTC); null for public chat
    /// when grouping by key.
    pub group: Option<String>,
    /// Chat turns.
    pub requests: u64,
    /// Prompt tokens.
    pub prompt_tokens: u64,
    /// Completion tokens.
    pub completion_tokens: u64,
    /// Total tokens.
    pub total_tokens: u64,
    /// What they cost, micro-units of USD (1 000 000 = $1).
    pub cost_micros: i64,
    /// Thumbs up given on the group's answers (by bot or day; 0 by key).
    pub feedback_up: u64,
    /// Thumbs down.
    pub feedback_down: u64,
    /// Share of thumbs up among the ratings (null without any).
    pub feedback_share_up: Option<f64>,
}

// ---------------------------------------------------------------- inputs

/// `POST /v1/admin/tenants`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreateTenant {
    /// Display name (1 to 200 characters).
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 200))]
    pub name: String,
    /// Slug (default: derived from the name).
    #[serde(default)]
    #[cfg_attr(
        feature = "openapi",
        schema(pattern = "^[a-z0-9]([a-z0-9-]{0,62}[a-z0-9])?$")
    )]
    pub slug: Option<String>,
    /// Requests per minute across the tenant.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 10_000_000))]
    pub rate_limit_rpm: Option<i32>,
    /// Tokens per minute across the tenant.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(minimum = 1))]
    pub rate_limit_tpm: Option<i32>,
    /// Public chat requests per minute across the tenant's public bots
    /// (default: the server's); counted apart from `rate_limit_rpm`.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 10_000_000))]
    pub public_rate_limit_rpm: Option<i32>,
    /// Feature flags (a JSON object, e.g. `{"public_chat": false}`).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub features: Option<serde_json::Value>,
}

impl CreateTenant {
    /// A tenant named `name`, everything else default.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            slug: None,
            rate_limit_rpm: None,
            rate_limit_tpm: None,
            public_rate_limit_rpm: None,
            features: None,
        }
    }
}

/// `PATCH /v1/admin/tenants/{id}`: only the fields to change.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UpdateTenant {
    /// New name.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 200))]
    pub name: Option<String>,
    /// New slug.
    #[serde(default)]
    #[cfg_attr(
        feature = "openapi",
        schema(pattern = "^[a-z0-9]([a-z0-9-]{0,62}[a-z0-9])?$")
    )]
    pub slug: Option<String>,
    /// `active` or `suspended`; a suspended tenant's keys stop at once.
    #[serde(default)]
    pub status: Option<TenantStatus>,
    /// New requests-per-minute limit (null removes it).
    #[serde(default, deserialize_with = "nullable")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 10_000_000))]
    pub rate_limit_rpm: Option<Option<i32>>,
    /// New tokens-per-minute limit (null removes it).
    #[serde(default, deserialize_with = "nullable")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1))]
    pub rate_limit_tpm: Option<Option<i32>>,
    /// New public chat budget (null: the server's default).
    #[serde(default, deserialize_with = "nullable")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 10_000_000))]
    pub public_rate_limit_rpm: Option<Option<i32>>,
    /// New feature flags (a JSON object; replaces the old one).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub features: Option<serde_json::Value>,
}

/// `POST /v1/providers`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreateProvider {
    /// Catalog key (`openai`, `anthropic`, `google`, `openai_compatible`, `mock`).
    pub provider: String,
    /// Display name.
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 200))]
    pub name: String,
    /// The vendor API key (stored encrypted; never shown again).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, write_only))]
    pub api_key: Option<SecretString>,
    /// Base URL override (`http://` or `https://`).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(format = "uri"))]
    pub base_url: Option<String>,
    /// Default model override.
    #[serde(default)]
    pub default_model: Option<String>,
    /// Whether bots may use it (default true).
    #[serde(default)]
    pub enabled: Option<bool>,
}

impl CreateProvider {
    /// A configuration of catalog provider `provider` named `name`,
    /// everything else default.
    pub fn new(provider: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            provider: provider.into(),
            name: name.into(),
            api_key: None,
            base_url: None,
            default_model: None,
            enabled: None,
        }
    }
}

/// `PATCH /v1/providers/{id}`: only the fields to change; a new `api_key`
/// rotates the key (bots use it from their next turn).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UpdateProvider {
    /// New name.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 200))]
    pub name: Option<String>,
    /// New API key (null removes it).
    #[serde(default, deserialize_with = "nullable")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, write_only))]
    pub api_key: Option<Option<SecretString>>,
    /// New base URL (null: the catalog default).
    #[serde(default, deserialize_with = "nullable")]
    #[cfg_attr(feature = "openapi", schema(format = "uri"))]
    pub base_url: Option<Option<String>>,
    /// New default model (null: the catalog default).
    #[serde(default, deserialize_with = "nullable")]
    pub default_model: Option<Option<String>>,
    /// Enable or disable.
    #[serde(default)]
    pub enabled: Option<bool>,
}

/// `POST /v1/bots`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreateBot {
    /// Display name.
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 200))]
    pub name: String,
    /// Slug, unique in the tenant (default: derived from the name).
    #[serde(default)]
    #[cfg_attr(
        feature = "openapi",
        schema(pattern = "^[a-z0-9]([a-z0-9-]{0,62}[a-z0-9])?$")
    )]
    pub slug: Option<String>,
    /// System prompt.
    #[serde(default)]
    pub system_prompt: Option<String>,
    /// Provider configuration used for chat.
    pub provider_id: ProviderConfigId,
    /// Model (default: the provider's).
    #[serde(default)]
    pub model: Option<String>,
    /// Provider configuration tried when the first fails.
    #[serde(default)]
    pub fallback_provider_id: Option<ProviderConfigId>,
    /// Temperature, 0 to 2.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(minimum = 0, maximum = 2))]
    pub temperature: Option<f32>,
    /// Maximum completion tokens, 1 to 1,000,000.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 1_000_000))]
    pub max_tokens: Option<i32>,
    /// Prompt budget in tokens, 256 to 2,000,000 (default 8,000).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(minimum = 256, maximum = 2_000_000))]
    pub context_tokens: Option<i32>,
    /// Reachable through the public endpoint (default false).
    #[serde(default)]
    pub is_public: Option<bool>,
    /// Datasets to answer from.
    #[serde(default)]
    pub dataset_ids: Option<Vec<DatasetId>>,
}

impl CreateBot {
    /// A bot named `name` answering through `provider_id`, everything else
    /// default.
    pub fn new(name: impl Into<String>, provider_id: ProviderConfigId) -> Self {
        Self {
            name: name.into(),
            slug: None,
            system_prompt: None,
            provider_id,
            model: None,
            fallback_provider_id: None,
            temperature: None,
            max_tokens: None,
            context_tokens: None,
            is_public: None,
            dataset_ids: None,
        }
    }
}

/// `PATCH /v1/bots/{id or slug}`: only the fields to change.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UpdateBot {
    /// New name.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 200))]
    pub name: Option<String>,
    /// New slug.
    #[serde(default)]
    #[cfg_attr(
        feature = "openapi",
        schema(pattern = "^[a-z0-9]([a-z0-9-]{0,62}[a-z0-9])?$")
    )]
    pub slug: Option<String>,
    /// New system prompt.
    #[serde(default)]
    pub system_prompt: Option<String>,
    /// New provider.
    #[serde(default)]
    pub provider_id: Option<ProviderConfigId>,
    /// New model (null: the provider's default).
    #[serde(default, deserialize_with = "nullable")]
    pub model: Option<Option<String>>,
    /// New fallback provider (null removes it).
    #[serde(default, deserialize_with = "nullable")]
    pub fallback_provider_id: Option<Option<ProviderConfigId>>,
    /// New temperature (null: the provider's default).
    #[serde(default, deserialize_with = "nullable")]
    #[cfg_attr(feature = "openapi", schema(minimum = 0, maximum = 2))]
    pub temperature: Option<Option<f32>>,
    /// New max tokens (null: the provider's default).
    #[serde(default, deserialize_with = "nullable")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 1_000_000))]
    pub max_tokens: Option<Option<i32>>,
    /// New prompt budget.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(minimum = 256, maximum = 2_000_000))]
    pub context_tokens: Option<i32>,
    /// New visibility.
    #[serde(default)]
    pub is_public: Option<bool>,
    /// New datasets.
    #[serde(default)]
    pub dataset_ids: Option<Vec<DatasetId>>,
    /// `active` or `disabled`.
    #[serde(default)]
    pub status: Option<BotStatus>,
}

/// `POST /v1/api-keys`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreateApiKey {
    /// Display name.
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 200))]
    pub name: String,
    /// Permissions (`chat`, `read`, `admin`), at least one.
    #[cfg_attr(feature = "openapi", schema(min_items = 1))]
    pub permissions: Vec<Permission>,
    /// Only these bots (default: every bot of the tenant).
    #[serde(default)]
    pub bot_ids: Option<Vec<BotId>>,
    /// Requests per minute for this key, 1 to 1,000,000.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 1_000_000))]
    pub rate_limit_rpm: Option<i32>,
    /// Expiry (RFC 3339, in the future).
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
}

impl CreateApiKey {
    /// A key named `name` with `permissions`, for every bot, without a
    /// limit of its own or an expiry.
    pub fn new(name: impl Into<String>, permissions: Vec<Permission>) -> Self {
        Self {
            name: name.into(),
            permissions,
            bot_ids: None,
            rate_limit_rpm: None,
            expires_at: None,
        }
    }
}

/// `POST /v1/scopes`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreateScope {
    /// The bot (id or slug).
    pub bot_id: String,
    /// Kind: `allowed_origins`, `api_keys`, `blocked_terms`,
    /// `blocked_patterns`, `max_input_length` or `visitor_rate_limit`.
    #[cfg_attr(feature = "openapi", schema(schema_with = openapi::scope_kind))]
    pub kind: String,
    /// Kind-specific configuration.
    pub config: serde_json::Value,
}

/// Filters of `GET /v1/conversations`.
#[derive(Debug, Clone, Default)]
pub struct ConversationQuery {
    /// Of this bot (id or slug).
    pub bot: Option<String>,
    /// Of this end user.
    pub user_id: Option<String>,
    /// Created at or after.
    pub since: Option<DateTime<Utc>>,
    /// Created before.
    pub until: Option<DateTime<Utc>>,
}

/// Schemas of fields whose Rust type is a plain string but whose values
/// are a closed set.
#[cfg(feature = "openapi")]
mod openapi {
    use utoipa::openapi::{ObjectBuilder, Type};

    fn string_enum(values: &[&'static str], description: &str) -> ObjectBuilder {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(values.iter().copied()))
            .description(Some(description))
    }

    pub(super) fn usage_group() -> ObjectBuilder {
        string_enum(
            &["bot", "key", "day", "end_user"],
            "How the usage is grouped.",
        )
    }

    pub(super) fn scope_kind() -> ObjectBuilder {
        string_enum(
            crate::engine::guard::SCOPE_KINDS,
            "Kind of rule; the config's shape depends on it.",
        )
    }
}

// ---------------------------------------------------------------- checks

fn text(field: &str, v: &str, max: usize) -> AdminResult<()> {
    crate::text::check_text(field, v)?;
    let n = v.chars().count();
    if v.trim().is_empty() || n > max {
        return Err(ChatError::InvalidRequest(format!(
            "{field}: must be 1 to {max} characters"
        )));
    }
    Ok(())
}

fn slug(field: &str, v: &str) -> AdminResult<()> {
    if !is_valid_slug(v) {
        return Err(ChatError::InvalidRequest(format!(
            "{field}: must be 1 to 64 characters of a-z, 0-9 and '-', not starting or ending with '-'"
        )));
    }
    Ok(())
}

fn range_i32(field: &str, v: Option<i32>, min: i32, max: i32) -> AdminResult<()> {
    match v {
        Some(n) if n < min || n > max => Err(ChatError::InvalidRequest(format!(
            "{field}: must be between {min} and {max}"
        ))),
        _ => Ok(()),
    }
}

fn temperature(v: Option<f32>) -> AdminResult<()> {
    match v {
        Some(t) if !(0.0..=2.0).contains(&t) => Err(ChatError::InvalidRequest(
            "temperature: must be between 0 and 2".into(),
        )),
        _ => Ok(()),
    }
}

fn features(v: &serde_json::Value) -> AdminResult<()> {
    crate::text::check_json("features", v)?;
    if !v.is_object() {
        return Err(ChatError::InvalidRequest(
            "features: must be a JSON object".into(),
        ));
    }
    Ok(())
}

/// Parses a base URL: `http(s)`, a host, no userinfo, no whitespace, at
/// most 2048 characters.
fn base_url(v: &str) -> AdminResult<url::Url> {
    crate::text::check_text("base_url", v)?;
    let bad = || ChatError::InvalidRequest("base_url: must be an http:// or https:// URL".into());
    if v.len() > 2048 || v.chars().any(char::is_whitespace) {
        return Err(bad());
    }
    let url = url::Url::parse(v).map_err(|_| bad())?;
    match crate::provider::EgressPolicy::new().check_url(&url) {
        Ok(()) | Err(crate::provider::EgressError::Refused) => Ok(url),
        Err(crate::provider::EgressError::Userinfo) => Err(ChatError::InvalidRequest(
            "base_url: must not contain a user name or password (put the credential in api_key)"
                .into(),
        )),
        Err(crate::provider::EgressError::Scheme) => Err(bad()),
    }
}

/// How long a base URL's host may take to resolve when it is configured.
const RESOLVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

fn provider_key(v: &SecretString) -> AdminResult<()> {
    let k = v.expose_secret();
    crate::text::check_text("api_key", k)?;
    if k.trim().is_empty() || k.len() > 4096 {
        return Err(ChatError::InvalidRequest(
            "api_key: must be 1 to 4096 characters".into(),
        ));
    }
    Ok(())
}

/// A store `NotFound` about a row named in the body, reported with the
/// field that named it.
fn referenced(e: StoreError) -> ChatError {
    match e {
        StoreError::NotFound("provider") => ChatError::NotFound("provider_id: provider"),
        StoreError::NotFound("fallback provider") => {
            ChatError::NotFound("fallback_provider_id: provider")
        }
        StoreError::NotFound("dataset") => ChatError::NotFound("dataset_ids: dataset"),
        StoreError::NotFound("bot") => ChatError::NotFound("bot_id: bot"),
        StoreError::Conflict("bot") => {
            ChatError::Conflict("slug: a bot with this slug exists".into())
        }
        StoreError::Conflict("public bot") => ChatError::Conflict(
            "slug: a public bot (of this or another tenant) has this slug; public slugs are unique across tenants, choose another"
                .into(),
        ),
        StoreError::Conflict("tenant") => {
            ChatError::Conflict("slug: a tenant with this slug exists".into())
        }
        other => other.into(),
    }
}

fn page(limit: Option<u64>, cursor: Option<String>) -> AdminResult<PageRequest> {
    if let Some(l) = limit
        && (l == 0 || l > PageRequest::MAX_LIMIT)
    {
        return Err(ChatError::InvalidRequest(format!(
            "limit: must be between 1 and {}",
            PageRequest::MAX_LIMIT
        )));
    }
    Ok(PageRequest {
        limit: limit.unwrap_or(0),
        cursor,
    })
}

fn time_range(since: Option<DateTime<Utc>>, until: Option<DateTime<Utc>>) -> AdminResult<()> {
    if let (Some(s), Some(u)) = (since, until)
        && s >= u
    {
        return Err(ChatError::InvalidRequest(
            "since: must be before until".into(),
        ));
    }
    Ok(())
}

/// A page request from `?limit=&cursor=` (limit 1 to 200, default 50).
pub fn page_request(limit: Option<u64>, cursor: Option<String>) -> AdminResult<PageRequest> {
    page(limit, cursor)
}

// ---------------------------------------------------------------- service

/// The management logic, shared by the HTTP server and the CLI.
pub struct AdminService {
    store: Arc<dyn Store>,
    keyring: Keyring,
    /// The running engine's caches, which changes invalidate (None in the
    /// CLI, which has none; a server sees CLI changes within its cache
    /// lifetime).
    caches: Option<Caches>,
    /// Which addresses a provider's base URL may point at.
    egress: crate::provider::EgressPolicy,
    /// The running engine's budgets (None in the CLI).
    budgets: Option<crate::budget::BudgetSlot>,
}

impl std::fmt::Debug for AdminService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminService").finish_non_exhaustive()
    }
}

impl AdminService {
    /// Management over the store and keyring of a running chat service,
    /// invalidating its caches after changes.
    pub fn for_chat(chat: &ChatService) -> Self {
        Self {
            store: chat.store().clone(),
            keyring: chat.keyring().clone(),
            caches: Some(chat.caches().clone()),
            egress: chat.settings().egress.clone(),
            budgets: Some(chat.budget_slot().clone()),
        }
    }

    /// Management straight on a store (the CLI).
    pub fn new(store: Arc<dyn Store>, keyring: Keyring) -> Self {
        Self {
            store,
            keyring,
            caches: None,
            egress: crate::provider::EgressPolicy::default(),
            budgets: None,
        }
    }

    fn invalidate_tenant(&self, t: TenantId) {
        if let Some(c) = &self.caches {
            c.invalidate_tenant(t);
        }
    }

    /// Checks a provider's base URL against the egress policy now: a host
    /// that resolves to a refused address is a 400 (one that does not
    /// resolve yet is checked at every call).
    async fn check_egress(&self, url: &url::Url) -> AdminResult<()> {
        self.egress
            .check_target(url, RESOLVE_TIMEOUT)
            .await
            .map_err(|e| ChatError::InvalidRequest(format!("base_url: {e}")))
    }

    // ---- operator: tenants ----

    /// Creates a tenant and its first admin key (returned once).
    pub async fn create_tenant(
        &self,
        op: &Operator,
        input: CreateTenant,
    ) -> AdminResult<CreatedTenant> {
        text("name", &input.name, 200)?;
        let slug_v = match input.slug {
            Some(s) => {
                slug("slug", &s)?;
                s
            }
            None => slugify(&input.name),
        };
        range_i32("rate_limit_rpm", input.rate_limit_rpm, 1, 10_000_000)?;
        range_i32("rate_limit_tpm", input.rate_limit_tpm, 1, i32::MAX)?;
        range_i32(
            "public_rate_limit_rpm",
            input.public_rate_limit_rpm,
            1,
            10_000_000,
        )?;
        let feats = input.features.unwrap_or_else(|| serde_json::json!({}));
        features(&feats)?;
        let g = generate_key();
        let key = NewApiKey {
            name: "admin".into(),
            prefix: g.prefix.clone(),
            secret_hash: g.hash,
            permissions: vec![Permission::Admin, Permission::Chat, Permission::Read],
            bot_ids: vec![],
            rate_limit_rpm: None,
            expires_at: None,
        };
        let mut audit = op.audit("tenant.created");
        audit.metadata = serde_json::json!({"slug": slug_v, "admin_key_prefix": g.prefix});
        let change = Change::CreateTenant(
            NewTenant {
                name: input.name,
                slug: slug_v,
                rate_limit_rpm: input.rate_limit_rpm,
                rate_limit_tpm: input.rate_limit_tpm,
                features: feats,
                public_rate_limit_rpm: input.public_rate_limit_rpm,
            },
            Some(key),
        );
        match self.store.apply(change, audit).await.map_err(referenced)? {
            Changed::TenantCreated(tenant, _) => Ok(CreatedTenant {
                tenant,
                admin_key: g.secret.expose_secret().to_string(),
            }),
            other => Err(unexpected(other)),
        }
    }

    /// All tenants, oldest first.
    pub async fn list_tenants(&self, page: PageRequest) -> AdminResult<List<Tenant>> {
        Ok(List::map(self.store.list_tenants(page).await?, |t| t))
    }

    /// One tenant.
    pub async fn get_tenant(&self, id: TenantId) -> AdminResult<Tenant> {
        Ok(self.store.get_tenant(id).await?)
    }

    /// A tenant by slug.
    pub async fn get_tenant_by_slug(&self, slug: &str) -> AdminResult<Tenant> {
        Ok(self.store.get_tenant_by_slug(slug).await?)
    }

    /// Changes a tenant; a suspension stops its keys at once (on this
    /// instance; others within their cache lifetime).
    pub async fn update_tenant(
        &self,
        op: &Operator,
        id: TenantId,
        input: UpdateTenant,
    ) -> AdminResult<Tenant> {
        let mut fields = vec![];
        if let Some(n) = &input.name {
            text("name", n, 200)?;
            fields.push("name");
        }
        if let Some(s) = &input.slug {
            slug("slug", s)?;
            fields.push("slug");
        }
        if let Some(Some(n)) = input.rate_limit_rpm {
            range_i32("rate_limit_rpm", Some(n), 1, 10_000_000)?;
        }
        if let Some(Some(n)) = input.rate_limit_tpm {
            range_i32("rate_limit_tpm", Some(n), 1, i32::MAX)?;
        }
        if let Some(n) = input.public_rate_limit_rpm {
            range_i32("public_rate_limit_rpm", n, 1, 10_000_000)?;
            fields.push("public_rate_limit_rpm");
        }
        if let Some(f) = &input.features {
            features(f)?;
            fields.push("features");
        }
        if input.status.is_some() {
            fields.push("status");
        }
        if input.rate_limit_rpm.is_some() {
            fields.push("rate_limit_rpm");
        }
        if input.rate_limit_tpm.is_some() {
            fields.push("rate_limit_tpm");
        }
        let mut audit = op.audit("tenant.updated");
        audit.metadata = serde_json::json!({"fields": fields, "status": input.status});
        let patch = TenantPatch {
            name: input.name,
            slug: input.slug,
            status: input.status,
            rate_limit_rpm: input.rate_limit_rpm,
            rate_limit_tpm: input.rate_limit_tpm,
            public_rate_limit_rpm: input.public_rate_limit_rpm,
            features: input.features,
        };
        let r = self
            .store
            .apply(Change::UpdateTenant(id, patch), audit)
            .await
            .map_err(referenced)?;
        self.invalidate_tenant(id);
        match r {
            Changed::Tenant(t) => Ok(t),
            other => Err(unexpected(other)),
        }
    }

    // ---- providers ----

    /// The provider catalog.
    pub async fn catalog(&self) -> AdminResult<Vec<CatalogEntry>> {
        Ok(self.store.list_catalog().await?)
    }

    /// Configures a catalog provider for the tenant; the key is sealed.
    pub async fn create_provider(
        &self,
        c: Writer<'_>,
        input: CreateProvider,
    ) -> AdminResult<ProviderView> {
        text("name", &input.name, 200)?;
        crate::text::check_text("provider", &input.provider)?;
        match self.store.get_catalog_entry(&input.provider).await {
            Ok(_) => {}
            Err(StoreError::NotFound(_)) => {
                return Err(ChatError::InvalidRequest(format!(
                    "provider: unknown catalog provider {:?} (see GET /v1/providers/catalog)",
                    input.provider
                )));
            }
            Err(e) => return Err(e.into()),
        }
        if let Some(k) = &input.api_key {
            provider_key(k)?;
        }
        if let Some(u) = &input.base_url {
            self.check_egress(&base_url(u)?).await?;
        }
        if let Some(m) = &input.default_model {
            text("default_model", m, 200)?;
        }
        let mut audit = c.audit("provider.created");
        audit.metadata = serde_json::json!({"provider": input.provider, "name": input.name});
        let new = NewProviderConfig {
            provider: input.provider,
            name: input.name,
            api_key: input.api_key.map(|k| self.keyring.seal(c.tenant, &k)),
            base_url: input.base_url,
            default_model: input.default_model,
            enabled: input.enabled.unwrap_or(true),
        };
        match self
            .store
            .apply(Change::CreateProviderConfig(c.tenant, new), audit)
            .await?
        {
            Changed::ProviderConfig(p) => Ok(p.into()),
            other => Err(unexpected(other)),
        }
    }

    /// The tenant's provider configurations.
    pub async fn list_providers(
        &self,
        c: &AdminCaller,
        page: PageRequest,
    ) -> AdminResult<List<ProviderView>> {
        let p = self.store.list_provider_configs(c.tenant, page).await?;
        Ok(List::map(p, ProviderView::from))
    }

    /// One provider configuration.
    pub async fn get_provider(
        &self,
        c: &AdminCaller,
        id: ProviderConfigId,
    ) -> AdminResult<ProviderView> {
        Ok(self.store.get_provider_config(c.tenant, id).await?.into())
    }

    /// Changes a provider configuration; a new key is sealed and used from
    /// the next turn of every bot on it.
    pub async fn update_provider(
        &self,
        c: Writer<'_>,
        id: ProviderConfigId,
        input: UpdateProvider,
    ) -> AdminResult<ProviderView> {
        let mut fields = vec![];
        if let Some(n) = &input.name {
            text("name", n, 200)?;
            fields.push("name");
        }
        if let Some(k) = &input.api_key {
            if let Some(k) = k {
                provider_key(k)?;
            }
            fields.push("api_key");
        }
        if let Some(u) = &input.base_url {
            if let Some(u) = u {
                self.check_egress(&base_url(u)?).await?;
            }
            fields.push("base_url");
        }
        if let Some(m) = &input.default_model {
            if let Some(m) = m {
                text("default_model", m, 200)?;
            }
            fields.push("default_model");
        }
        if input.enabled.is_some() {
            fields.push("enabled");
        }
        let mut audit = c.audit("provider.updated");
        audit.metadata = serde_json::json!({"fields": fields});
        let patch = ProviderConfigPatch {
            name: input.name,
            api_key: input
                .api_key
                .map(|k| k.map(|k| self.keyring.seal(c.tenant, &k))),
            base_url: input.base_url,
            default_model: input.default_model,
            enabled: input.enabled,
        };
        let r = self
            .store
            .apply(Change::UpdateProviderConfig(c.tenant, id, patch), audit)
            .await?;
        self.invalidate_tenant(c.tenant);
        match r {
            Changed::ProviderConfig(p) => Ok(p.into()),
            other => Err(unexpected(other)),
        }
    }

    /// Deletes a provider configuration; 409 while a bot or dataset uses it.
    pub async fn delete_provider(&self, c: Writer<'_>, id: ProviderConfigId) -> AdminResult<()> {
        let audit = c.audit("provider.deleted");
        match self
            .store
            .apply(Change::DeleteProviderConfig(c.tenant, id), audit)
            .await
        {
            Ok(_) => {}
            Err(StoreError::InUse(_)) => {
                return Err(ChatError::Conflict(
                    "provider is in use by a bot or dataset; change or delete those first".into(),
                ));
            }
            Err(e) => return Err(e.into()),
        }
        self.invalidate_tenant(c.tenant);
        Ok(())
    }

    // ---- bots ----

    async fn find_bot(&self, t: TenantId, id_or_slug: &str) -> Result<Bot, StoreError> {
        if crate::text::check_text("bot", id_or_slug).is_err() {
            // No slug holds a NUL: such a bot does not exist.
            return Err(StoreError::NotFound("bot"));
        }
        match id_or_slug.parse::<BotId>() {
            Ok(id) => self.store.get_bot(t, id).await,
            Err(_) => self.store.get_bot_by_slug(t, id_or_slug).await,
        }
    }

    /// Creates a bot.
    pub async fn create_bot(&self, c: Writer<'_>, input: CreateBot) -> AdminResult<Bot> {
        text("name", &input.name, 200)?;
        let slug_v = match input.slug {
            Some(s) => {
                slug("slug", &s)?;
                s
            }
            None => slugify(&input.name),
        };
        crate::text::check_opt("system_prompt", input.system_prompt.as_deref())?;
        if let Some(p) = &input.system_prompt
            && p.chars().count() > 100_000
        {
            return Err(ChatError::InvalidRequest(
                "system_prompt: longer than 100000 characters".into(),
            ));
        }
        if let Some(m) = &input.model {
            text("model", m, 200)?;
        }
        temperature(input.temperature)?;
        range_i32("max_tokens", input.max_tokens, 1, 1_000_000)?;
        range_i32("context_tokens", input.context_tokens, 256, 2_000_000)?;
        let mut audit = c.audit("bot.created");
        audit.metadata = serde_json::json!({"slug": slug_v});
        let new = NewBot {
            name: input.name,
            slug: slug_v,
            system_prompt: input
                .system_prompt
                .unwrap_or_else(|| "You are a helpful assistant.".into()),
            provider_id: input.provider_id,
            model: input.model,
            fallback_provider_id: input.fallback_provider_id,
            temperature: input.temperature,
            max_tokens: input.max_tokens,
            context_tokens: input.context_tokens.unwrap_or(8000),
            is_public: input.is_public.unwrap_or(false),
            dataset_ids: input.dataset_ids.unwrap_or_default(),
        };
        match self
            .store
            .apply(Change::CreateBot(c.tenant, new), audit)
            .await
            .map_err(referenced)?
        {
            Changed::Bot(b) => Ok(b),
            other => Err(unexpected(other)),
        }
    }

    /// The tenant's bots.
    pub async fn list_bots(&self, c: &AdminCaller, page: PageRequest) -> AdminResult<List<Bot>> {
        Ok(List::map(
            self.store.list_bots(c.tenant, page).await?,
            |b| b,
        ))
    }

    /// One bot, by id or slug.
    pub async fn get_bot(&self, c: &AdminCaller, id_or_slug: &str) -> AdminResult<Bot> {
        Ok(self.find_bot(c.tenant, id_or_slug).await?)
    }

    /// Changes a bot (by id or slug).
    pub async fn update_bot(
        &self,
        c: Writer<'_>,
        id_or_slug: &str,
        input: UpdateBot,
    ) -> AdminResult<Bot> {
        let bot = self.find_bot(c.tenant, id_or_slug).await?;
        let mut fields = vec![];
        if let Some(n) = &input.name {
            text("name", n, 200)?;
            fields.push("name");
        }
        if let Some(s) = &input.slug {
            slug("slug", s)?;
            fields.push("slug");
        }
        crate::text::check_opt("system_prompt", input.system_prompt.as_deref())?;
        if let Some(p) = &input.system_prompt {
            if p.chars().count() > 100_000 {
                return Err(ChatError::InvalidRequest(
                    "system_prompt: longer than 100000 characters".into(),
                ));
            }
            fields.push("system_prompt");
        }
        if let Some(m) = &input.model {
            if let Some(m) = m {
                text("model", m, 200)?;
            }
            fields.push("model");
        }
        if let Some(t) = input.temperature {
            temperature(t)?;
            fields.push("temperature");
        }
        if let Some(m) = input.max_tokens {
            range_i32("max_tokens", m, 1, 1_000_000)?;
            fields.push("max_tokens");
        }
        range_i32("context_tokens", input.context_tokens, 256, 2_000_000)?;
        for (set, name) in [
            (input.provider_id.is_some(), "provider_id"),
            (input.fallback_provider_id.is_some(), "fallback_provider_id"),
            (input.context_tokens.is_some(), "context_tokens"),
            (input.is_public.is_some(), "is_public"),
            (input.dataset_ids.is_some(), "dataset_ids"),
            (input.status.is_some(), "status"),
        ] {
            if set {
                fields.push(name);
            }
        }
        let mut audit = c.audit("bot.updated");
        audit.metadata = serde_json::json!({"fields": fields});
        let patch = BotPatch {
            name: input.name,
            slug: input.slug,
            system_prompt: input.system_prompt,
            provider_id: input.provider_id,
            model: input.model,
            fallback_provider_id: input.fallback_provider_id,
            temperature: input.temperature,
            max_tokens: input.max_tokens,
            context_tokens: input.context_tokens,
            is_public: input.is_public,
            dataset_ids: input.dataset_ids,
            status: input.status,
        };
        let r = self
            .store
            .apply(Change::UpdateBot(c.tenant, bot.id, patch), audit)
            .await
            .map_err(referenced)?;
        self.invalidate_tenant(c.tenant);
        match r {
            Changed::Bot(b) => Ok(b),
            other => Err(unexpected(other)),
        }
    }

    /// Deletes a bot (by id or slug) with its conversations and scopes.
    pub async fn delete_bot(&self, c: Writer<'_>, id_or_slug: &str) -> AdminResult<()> {
        let bot = self.find_bot(c.tenant, id_or_slug).await?;
        let mut audit = c.audit("bot.deleted");
        audit.metadata = serde_json::json!({"slug": bot.slug});
        self.store
            .apply(Change::DeleteBot(c.tenant, bot.id), audit)
            .await?;
        self.invalidate_tenant(c.tenant);
        Ok(())
    }

    // ---- API keys ----

    /// Creates an API key; the reply carries the secret, once.
    pub async fn create_api_key(
        &self,
        c: Writer<'_>,
        input: CreateApiKey,
    ) -> AdminResult<CreatedApiKey> {
        text("name", &input.name, 200)?;
        if input.permissions.is_empty() {
            return Err(ChatError::InvalidRequest(
                "permissions: at least one of chat, read, admin".into(),
            ));
        }
        let mut permissions = input.permissions;
        permissions.sort_by_key(|p| p.as_str());
        permissions.dedup();
        let bot_ids = input.bot_ids.unwrap_or_default();
        for b in &bot_ids {
            self.store
                .get_bot(c.tenant, *b)
                .await
                .map_err(|e| match e {
                    StoreError::NotFound(_) => ChatError::NotFound("bot_ids: bot"),
                    e => e.into(),
                })?;
        }
        range_i32("rate_limit_rpm", input.rate_limit_rpm, 1, 1_000_000)?;
        if let Some(e) = input.expires_at
            && e <= now()
        {
            return Err(ChatError::InvalidRequest(
                "expires_at: must be in the future".into(),
            ));
        }
        let g = generate_key();
        let mut audit = c.audit("api_key.created");
        audit.metadata = serde_json::json!({
            "name": input.name, "prefix": g.prefix, "permissions": permissions,
        });
        let new = NewApiKey {
            name: input.name,
            prefix: g.prefix.clone(),
            secret_hash: g.hash,
            permissions,
            bot_ids,
            rate_limit_rpm: input.rate_limit_rpm,
            expires_at: input.expires_at,
        };
        match self
            .store
            .apply(Change::CreateApiKey(c.tenant, new), audit)
            .await?
        {
            Changed::ApiKey(k) => Ok(CreatedApiKey {
                api_key: k.into(),
                key: g.secret.expose_secret().to_string(),
            }),
            other => Err(unexpected(other)),
        }
    }

    /// The tenant's API keys (revoked ones included).
    pub async fn list_api_keys(
        &self,
        c: &AdminCaller,
        page: PageRequest,
    ) -> AdminResult<List<ApiKeyView>> {
        let p = self.store.list_api_keys(c.tenant, page).await?;
        Ok(List::map(p, ApiKeyView::from))
    }

    /// One API key.
    pub async fn get_api_key(&self, c: &AdminCaller, id: ApiKeyId) -> AdminResult<ApiKeyView> {
        Ok(self.store.get_api_key(c.tenant, id).await?.into())
    }

    /// Revokes an API key; it stops working at once on this instance.
    pub async fn revoke_api_key(&self, c: Writer<'_>, id: ApiKeyId) -> AdminResult<ApiKeyView> {
        let r = self
            .store
            .apply(
                Change::RevokeApiKey(c.tenant, id),
                c.audit("api_key.revoked"),
            )
            .await?;
        if let Some(caches) = &self.caches {
            caches.invalidate_key(id);
        }
        match r {
            Changed::ApiKey(k) => Ok(k.into()),
            other => Err(unexpected(other)),
        }
    }

    // ---- scopes ----

    /// Creates a scope after checking its configuration.
    pub async fn create_scope(&self, c: Writer<'_>, input: CreateScope) -> AdminResult<Scope> {
        crate::text::check_text("bot_id", &input.bot_id)?;
        crate::text::check_json("config", &input.config)?;
        if !guard::SCOPE_KINDS.contains(&input.kind.as_str()) {
            return Err(ChatError::InvalidRequest(format!(
                "kind: must be one of {}",
                guard::SCOPE_KINDS.join(", ")
            )));
        }
        guard::validate_scope(&input.kind, &input.config)
            .map_err(|m| ChatError::InvalidRequest(format!("config: {m}")))?;
        let bot = self
            .find_bot(c.tenant, &input.bot_id)
            .await
            .map_err(referenced)?;
        let mut audit = c.audit("scope.created");
        audit.metadata = serde_json::json!({"bot_id": bot.id, "kind": input.kind});
        let new = NewScope {
            bot_id: bot.id,
            kind: input.kind,
            config: input.config,
        };
        let r = self
            .store
            .apply(Change::CreateScope(c.tenant, new), audit)
            .await
            .map_err(referenced)?;
        self.invalidate_tenant(c.tenant);
        match r {
            Changed::Scope(s) => Ok(s),
            other => Err(unexpected(other)),
        }
    }

    /// A bot's scopes, oldest first, paginated.
    pub async fn list_scopes(
        &self,
        c: &AdminCaller,
        bot: &str,
        page: PageRequest,
    ) -> AdminResult<List<Scope>> {
        let bot = self.find_bot(c.tenant, bot).await.map_err(referenced)?;
        let all = self.store.list_scopes(c.tenant, bot.id).await?;
        // A bot has a handful of scopes: page them here.
        let after = match &page.cursor {
            Some(cur) => Some(
                cur.parse::<ScopeId>()
                    .map_err(|_| ChatError::InvalidRequest("cursor: not valid".into()))?,
            ),
            None => None,
        };
        let limit = page.effective_limit() as usize;
        let mut data: Vec<Scope> = all
            .into_iter()
            .filter(|s| after.is_none_or(|a| s.id > a))
            .take(limit + 1)
            .collect();
        let next_cursor = if data.len() > limit {
            data.truncate(limit);
            data.last().map(|s| s.id.to_string())
        } else {
            None
        };
        Ok(List { data, next_cursor })
    }

    /// One scope.
    pub async fn get_scope(&self, c: &AdminCaller, id: ScopeId) -> AdminResult<Scope> {
        Ok(self.store.get_scope(c.tenant, id).await?)
    }

    /// Deletes a scope.
    pub async fn delete_scope(&self, c: Writer<'_>, id: ScopeId) -> AdminResult<()> {
        self.store
            .apply(Change::DeleteScope(c.tenant, id), c.audit("scope.deleted"))
            .await?;
        self.invalidate_tenant(c.tenant);
        Ok(())
    }

    // ---- conversations ----

    /// Conversations, newest first, filtered.
    pub async fn list_conversations(
        &self,
        c: &AdminCaller,
        q: ConversationQuery,
        page: PageRequest,
    ) -> AdminResult<List<Conversation>> {
        time_range(q.since, q.until)?;
        crate::text::check_opt("bot_id", q.bot.as_deref())?;
        crate::text::check_opt("user_id", q.user_id.as_deref())?;
        let bot_id = match &q.bot {
            Some(b) => Some(self.find_bot(c.tenant, b).await.map_err(referenced)?.id),
            None => None,
        };
        let filter = ConversationFilter {
            bot_id,
            end_user_id: q.user_id,
            since: q.since,
            until: q.until,
        };
        let p = self
            .store
            .list_conversations(c.tenant, filter, page)
            .await?;
        Ok(List::map(p, |c| c))
    }

    /// One conversation.
    pub async fn get_conversation(
        &self,
        c: &AdminCaller,
        id: ConversationId,
    ) -> AdminResult<Conversation> {
        Ok(self.store.get_conversation(c.tenant, id).await?)
    }

    /// A conversation's messages, oldest first.
    pub async fn list_messages(
        &self,
        c: &AdminCaller,
        id: ConversationId,
        page: PageRequest,
    ) -> AdminResult<List<MessageView>> {
        self.store.get_conversation(c.tenant, id).await?;
        let p = self.store.list_messages(c.tenant, id, page).await?;
        let mut list = List::map(p, MessageView::from);
        let ids: Vec<MessageId> = list.data.iter().map(|m| m.id).collect();
        let feedback = self.store.feedback_for(c.tenant, &ids).await?;
        for m in &mut list.data {
            m.feedback = feedback.iter().find(|f| f.message_id == m.id).cloned();
        }
        Ok(list)
    }

    /// Deletes a conversation and its messages.
    pub async fn delete_conversation(&self, c: Writer<'_>, id: ConversationId) -> AdminResult<()> {
        self.store
            .apply(
                Change::DeleteConversation(c.tenant, id),
                c.audit("conversation.deleted"),
            )
            .await?;
        Ok(())
    }

    // ---- audit and usage ----

    /// The tenant's audit log, newest first.
    pub async fn audit_logs(
        &self,
        c: &AdminCaller,
        filter: AuditFilter,
        page: PageRequest,
    ) -> AdminResult<List<AuditRecord>> {
        time_range(filter.since, filter.until)?;
        crate::text::check_opt("action", filter.action.as_deref())?;
        crate::text::check_opt("actor_id", filter.actor_id.as_deref())?;
        Ok(List::map(
            self.store.list_audit(c.tenant, filter, page).await?,
            |r| r,
        ))
    }

    /// Turns and tokens per bot, key or UTC day over whole UTC days.
    ///
    /// Usage is kept per UTC day, so the range is widened to the days it
    /// touches: `since` is rounded down to its day's midnight (UTC), `until`
    /// up to the next midnight unless it is one; the report gives the range
    /// actually counted. Without `until`, the range ends with today; without
    /// `since`, it starts 30 days before its end (the last 30 days, today
    /// included, by default). A turn counts on the day it started, once it
    /// has an outcome; deleting its conversation does not uncount it.
    pub async fn usage(
        &self,
        c: &AdminCaller,
        since: Option<DateTime<Utc>>,
        until: Option<DateTime<Utc>>,
        group_by: UsageGroup,
    ) -> AdminResult<UsageReport> {
        time_range(since, until)?;
        let until = until.unwrap_or_else(now);
        let days = match since {
            Some(since) => UsageDays::covering(since, until),
            None => UsageDays::last(30, until),
        }
        .ok_or_else(|| {
            ChatError::InvalidRequest("since: must be before until (default: now)".into())
        })?;
        let rows = self.store.usage(c.tenant, days, group_by).await?;
        let ratings = self.store.feedback_counts(c.tenant, days, group_by).await?;
        let rated = |g: &Option<String>| {
            ratings
                .iter()
                .find(|r| &r.group == g && group_by != UsageGroup::ApiKey)
                .map_or((0, 0), |r| (r.up, r.down))
        };
        Ok(UsageReport {
            since: days.since(),
            until: days.until(),
            group_by: match group_by {
                UsageGroup::Bot => "bot",
                UsageGroup::ApiKey => "key",
                UsageGroup::Day => "day",
                UsageGroup::EndUser => "end_user",
            },
            data: rows
                .into_iter()
                .map(|r| {
                    let (up, down) = rated(&r.group);
                    UsageEntry {
                        feedback_up: up,
                        feedback_down: down,
                        feedback_share_up: (up + down > 0).then(|| up as f64 / (up + down) as f64),
                        group: r.group,
                        requests: r.requests,
                        prompt_tokens: r.prompt_tokens,
                        completion_tokens: r.completion_tokens,
                        total_tokens: r.total_tokens,
                        cost_micros: r.cost_micros,
                    }
                })
                .collect(),
        })
    }
}

fn unexpected(c: Changed) -> ChatError {
    ChatError::internal(format!("the store answered a change with {c:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patch_bodies_tell_absent_from_null() {
        let u: UpdateProvider = serde_json::from_str(r#"{"base_url": null}"#).unwrap();
        assert_eq!(u.base_url, Some(None));
        assert!(u.default_model.is_none());
        let u: UpdateProvider = serde_json::from_str(r#"{"base_url": "http://x"}"#).unwrap();
        assert_eq!(u.base_url, Some(Some("http://x".into())));
        assert!(serde_json::from_str::<UpdateProvider>(r#"{"bogus": 1}"#).is_err());
    }

    #[test]
    fn read_keys_read_admin_keys_change_chat_keys_neither() {
        use Permission::*;
        assert!(Access::Read.allowed_by(&[Read]));
        assert!(!Access::Write.allowed_by(&[Read, Chat]));
        assert!(Access::Read.allowed_by(&[Admin]) && Access::Write.allowed_by(&[Admin]));
        assert!(!Access::Read.allowed_by(&[Chat]) && !Access::Write.allowed_by(&[Chat]));
        let reader = AdminCaller {
            tenant: TenantId::new(),
            actor: Actor {
                kind: ActorKind::ApiKey,
                id: None,
            },
            request_id: None,
            ip: None,
            access: Access::Read,
        };
        assert!(matches!(reader.writer(), Err(ChatError::Forbidden(_))));
        let op = AdminCaller::operator_in(TenantId::new(), &Operator::default());
        assert!(op.writer().is_ok());
    }

    #[test]
    fn checks_name_the_field() {
        let e = slug("slug", "Bad Slug").unwrap_err();
        assert!(e.to_string().starts_with("slug:"));
        assert!(range_i32("max_tokens", Some(0), 1, 10).is_err());
        assert!(range_i32("max_tokens", Some(10), 1, 10).is_ok());
        assert!(temperature(Some(2.5)).is_err());
        assert!(base_url("ftp://x").is_err() && base_url("https://x").is_ok());
        assert!(page(Some(0), None).is_err() && page(Some(201), None).is_err());
        assert_eq!(page(None, None).unwrap().effective_limit(), 50);
    }
}
