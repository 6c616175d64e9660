//! Plain domain types: what the rest of chatcore (and its users) work with.
//!
//! Ids are newtypes over UUIDv7 (time-ordered, so ordering by id is ordering
//! by creation), parsed once at the edge with [`std::str::FromStr`].
//! Timestamps are UTC with microsecond precision, the precision PostgreSQL
//! keeps, so that a value read back compares equal to the value written.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, SubsecRound, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The current time, truncated to microseconds (what every backend keeps).
pub fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

/// Error returned when a string is not a valid id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} id")]
pub struct InvalidId {
    /// What kind of id was expected (e.g. "bot").
    pub kind: &'static str,
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            /// A new, time-ordered (UUIDv7) id.
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }
            /// The underlying UUID.
            pub fn as_uuid(&self) -> Uuid {
                self.0
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl FromStr for $name {
            type Err = InvalidId;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self).map_err(|_| InvalidId { kind: $kind })
            }
        }

        impl From<Uuid> for $name {
            fn from(u: Uuid) -> Self {
                Self(u)
            }
        }
    };
}

id_type!(
    /// Identifies a tenant.
    TenantId,
    "tenant"
);
id_type!(
    /// Identifies a tenant's configuration of a catalog provider.
    ProviderConfigId,
    "provider"
);
id_type!(
    /// Identifies a bot.
    BotId,
    "bot"
);
id_type!(
    /// Identifies a conversation.
    ConversationId,
    "conversation"
);
id_type!(
    /// Identifies a message.
    MessageId,
    "message"
);
id_type!(
    /// Identifies an API key (not the secret: the row).
    ApiKeyId,
    "api key"
);
id_type!(
    /// Identifies a dataset.
    DatasetId,
    "dataset"
);
id_type!(
    /// Identifies a document.
    DocumentId,
    "document"
);
id_type!(
    /// Identifies a chunk of a document.
    ChunkId,
    "chunk"
);
id_type!(
    /// Identifies a scope (access rule or guardrail of a bot).
    ScopeId,
    "scope"
);
id_type!(
    /// Identifies an audit record.
    AuditId,
    "audit record"
);

/// Implements `as_str` and `FromStr` for a string-backed enum.
macro_rules! str_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident => $s:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
        #[serde(rename_all = "snake_case")]
        pub enum $name {
            $(#[doc = concat!("`", $s, "`")] $(#[$vdoc])* $variant),+
        }

        impl $name {
            /// The stored and serialized name.
            pub fn as_str(&self) -> &'static str {
                match self {
                    $(Self::$variant => $s),+
                }
            }
            /// Every value, in declaration order.
            pub const ALL: &'static [Self] = &[$(Self::$variant),+];
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownVariant;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($s => Ok(Self::$variant),)+
                    _ => Err(UnknownVariant { kind: stringify!($name), value: s.to_string() }),
                }
            }
        }
    };
}

/// Error returned when a string names no variant of an enum.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} value {value:?}")]
pub struct UnknownVariant {
    /// The enum's name.
    pub kind: &'static str,
    /// The value that was given.
    pub value: String,
}

str_enum!(
    /// Whether a tenant may use the service.
    TenantStatus { Active => "active", Suspended => "suspended" }
);
str_enum!(
    /// Whether a bot answers.
    BotStatus { Active => "active", Disabled => "disabled" }
);
str_enum!(
    /// Through which endpoint a conversation was started.
    Channel { Public => "public", Api => "api" }
);
str_enum!(
    /// Who wrote a message.
    Role {
        System => "system",
        User => "user",
        Assistant => "assistant",
        /// A tool's result, sent back by the client of an
        /// OpenAI-compatible turn ([`Message::tool_call_id`] names the call).
        Tool => "tool",
    }
);
str_enum!(
    /// The state of a stored message.
    MessageStatus {
        /// Being generated (an assistant message whose stream is open).
        Pending => "pending",
        /// Fully generated.
        Complete => "complete",
        /// Ended early by the provider (stream cut, length).
        Incomplete => "incomplete",
        /// The provider failed.
        Error => "error",
        /// The client went away; what was generated is kept.
        Cancelled => "cancelled",
    }
);
str_enum!(
    /// What an API key may do.
    Permission { Chat => "chat", Read => "read", Admin => "admin" }
);
str_enum!(
    /// Indexing state of a document.
    DocumentStatus { Pending => "pending", Indexing => "indexing", Ready => "ready", Failed => "failed" }
);
str_enum!(
    /// Who performed an audited action.
    ActorKind {
        /// A tenant's API key.
        ApiKey => "api_key",
        /// The operator (operator key or CLI).
        Operator => "operator",
        /// An anonymous visitor of a public bot.
        PublicVisitor => "public_visitor",
        /// chatcore itself (background jobs, first start).
        System => "system",
    }
);
str_enum!(
    /// How a provider expects its API key.
    AuthStyle {
        /// `Authorization: Bearer <key>`.
        Bearer => "bearer",
        /// `x-api-key: <key>` (Anthropic).
        XApiKey => "x_api_key",
        /// `x-goog-api-key: <key>` (Google).
        XGoogApiKey => "x_goog_api_key",
        /// No key.
        None => "none",
    }
);

/// A tenant: an isolated customer of the service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Tenant {
    /// Id.
    pub id: TenantId,
    /// Display name.
    pub name: String,
    /// Unique, URL-safe name.
    pub slug: String,
    /// Active or suspended.
    pub status: TenantStatus,
    /// Requests per minute across the tenant (None: unlimited).
    pub rate_limit_rpm: Option<i32>,
    /// Tokens per minute across the tenant (None: unlimited).
    pub rate_limit_tpm: Option<i32>,
    /// Public chat requests per minute across the tenant's public bots
    /// (None: the server's default). Counted apart from `rate_limit_rpm`,
    /// the API keys' budget, so visitors cannot use it up.
    #[serde(default)]
    pub public_rate_limit_rpm: Option<i32>,
    /// Feature flags (a JSON object).
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub features: serde_json::Value,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

/// An entry of the provider catalog (`ai_providers_master`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CatalogEntry {
    /// Catalog key: `openai`, `anthropic`, `google`, `openai_compatible`, `mock`.
    pub key: String,
    /// Human-readable name.
    pub display_name: String,
    /// Default base URL (None: must be configured, or no network).
    pub default_base_url: Option<String>,
    /// How the API key is sent.
    pub auth_style: AuthStyle,
    /// Can chat.
    pub supports_chat: bool,
    /// Can stream.
    pub supports_stream: bool,
    /// Can embed.
    pub supports_embeddings: bool,
    /// Default chat model.
    pub default_chat_model: Option<String>,
    /// Default embedding model.
    pub default_embedding_model: Option<String>,
    /// List prices of the vendor's common models ([`crate::pricing`]);
    /// a tenant overrides or adds prices per provider configuration
    /// (`PUT /v1/prices`). Empty for vendors without list prices.
    #[serde(default)]
    pub prices: Vec<ListPrice>,
}

/// A model's list price in the provider catalog, per million tokens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ListPrice {
    /// The model (a dated variant, `gpt-4o-2024-08-06`, takes its price).
    pub model: String,
    /// Micro-units per million uncached input tokens.
    pub input_per_mtok: i64,
    /// Micro-units per million input tokens read from the prompt cache.
    pub cached_input_per_mtok: i64,
    /// Micro-units per million output tokens.
    pub output_per_mtok: i64,
    /// The currency (`USD`).
    pub currency: String,
    /// When the price was taken from the vendor's price page (`YYYY-MM-DD`).
    pub as_of: String,
}

/// A provider API key sealed with the master keyring (see [`crate::crypto`]).
#[derive(Clone, PartialEq, Eq)]
pub struct SealedKey {
    /// Which master key sealed it.
    pub key_id: String,
    /// Nonce followed by the AEAD ciphertext and tag.
    pub ciphertext: Vec<u8>,
    /// The last 4 characters of the plaintext, the only part ever shown.
    pub last4: String,
}

impl fmt::Debug for SealedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SealedKey")
            .field("key_id", &self.key_id)
            .field(
                "ciphertext",
                &format_args!("[{} bytes]", self.ciphertext.len()),
            )
            .field("last4", &self.last4)
            .finish()
    }
}

/// A tenant's configuration of one catalog provider.
#[derive(Debug, Clone, PartialEq)]
pub struct ProviderConfig {
    /// Id.
    pub id: ProviderConfigId,
    /// Owner.
    pub tenant_id: TenantId,
    /// Catalog key.
    pub provider: String,
    /// Display name chosen by the tenant.
    pub name: String,
    /// The sealed API key, if any.
    pub api_key: Option<SealedKey>,
    /// Base URL override.
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

/// A bot: a system prompt, a model and the rules around them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Bot {
    /// Id.
    pub id: BotId,
    /// Owner.
    pub tenant_id: TenantId,
    /// Display name.
    pub name: String,
    /// Unique within the tenant.
    pub slug: String,
    /// System prompt.
    pub system_prompt: String,
    /// Provider configuration used for chat.
    pub provider_id: ProviderConfigId,
    /// Model (None: the provider's default).
    pub model: Option<String>,
    /// Provider configuration tried when the primary fails.
    pub fallback_provider_id: Option<ProviderConfigId>,
    /// Sampling temperature.
    pub temperature: Option<f32>,
    /// Maximum completion tokens.
    pub max_tokens: Option<i32>,
    /// Prompt budget in tokens (system prompt, context, history, message).
    pub context_tokens: i32,
    /// Reachable through the public endpoint.
    pub is_public: bool,
    /// Datasets the bot answers from.
    pub dataset_ids: Vec<DatasetId>,
    /// Active or disabled.
    pub status: BotStatus,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

/// A conversation between an end user and a bot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Conversation {
    /// Id.
    pub id: ConversationId,
    /// Owner.
    pub tenant_id: TenantId,
    /// The bot.
    pub bot_id: BotId,
    /// The end user, as the caller identifies them.
    pub end_user_id: Option<String>,
    /// Title.
    pub title: Option<String>,
    /// Public or API.
    pub channel: Channel,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Time of the last message.
    pub updated_at: DateTime<Utc>,
}

/// Token counts of one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TokenUsage {
    /// Prompt tokens.
    pub prompt_tokens: i32,
    /// Completion tokens.
    pub completion_tokens: i32,
    /// Total tokens.
    pub total_tokens: i32,
    /// Counted by us rather than reported by the provider.
    pub estimated: bool,
}

/// A stored message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// Id.
    pub id: MessageId,
    /// Owner.
    pub tenant_id: TenantId,
    /// The conversation.
    pub conversation_id: ConversationId,
    /// Who wrote it.
    pub role: Role,
    /// Text.
    pub content: String,
    /// Token counts (assistant messages).
    pub usage: Option<TokenUsage>,
    /// Time from the request to the last token, ms.
    pub response_time_ms: Option<i32>,
    /// Time from the request to the first token, ms.
    pub time_to_first_token_ms: Option<i32>,
    /// Catalog key of the provider that answered.
    pub provider: Option<String>,
    /// Model that answered.
    pub model: Option<String>,
    /// Finish reason, verbatim.
    pub finish_reason: Option<String>,
    /// State.
    pub status: MessageStatus,
    /// Error code when status is `error`.
    pub error: Option<String>,
    /// Chunks the answer was grounded on.
    pub source_chunk_ids: Vec<ChunkId>,
    /// The API key that sent it, if any.
    pub api_key_id: Option<ApiKeyId>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// The tools the model called (an assistant message of a turn with
    /// tools); empty otherwise.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<crate::provider::ToolCall>,
    /// The call a `tool` message answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    /// What the answer cost (assistant messages with an outcome).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost: Option<crate::pricing::Cost>,
}

/// A stored API key. The secret itself is never stored: only its hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    /// Id.
    pub id: ApiKeyId,
    /// Owner.
    pub tenant_id: TenantId,
    /// Display name.
    pub name: String,
    /// Public lookup part, e.g. `cc_1a2b3c4d5e6f7a8b`.
    pub prefix: String,
    /// SHA-256 of the whole presented key.
    pub secret_hash: [u8; 32],
    /// What it may do.
    pub permissions: Vec<Permission>,
    /// If not empty, the only bots it may use.
    pub bot_ids: Vec<BotId>,
    /// Requests per minute for this key (None: the tenant's limit only).
    pub rate_limit_rpm: Option<i32>,
    /// Expiry.
    pub expires_at: Option<DateTime<Utc>>,
    /// Last successful use.
    pub last_used_at: Option<DateTime<Utc>>,
    /// Revocation time; a revoked key never authenticates.
    pub revoked_at: Option<DateTime<Utc>>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
}

impl ApiKey {
    /// Whether the key has the given permission (`admin` implies all).
    pub fn allows(&self, p: Permission) -> bool {
        self.permissions.contains(&p) || self.permissions.contains(&Permission::Admin)
    }

    /// Whether the key may be used at `at`: not revoked, not expired.
    pub fn is_usable_at(&self, at: DateTime<Utc>) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|e| e > at)
    }
}

/// A set of documents a bot can answer from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Dataset {
    /// Id.
    pub id: DatasetId,
    /// Owner.
    pub tenant_id: TenantId,
    /// Display name.
    pub name: String,
    /// Provider configuration used for embeddings.
    pub provider_id: ProviderConfigId,
    /// Embedding model.
    pub embedding_model: String,
    /// Embedding dimension.
    pub embedding_dim: i32,
    /// Creation time.
    pub created_at: DateTime<Utc>,
}

/// A document of a dataset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Document {
    /// Id.
    pub id: DocumentId,
    /// Owner.
    pub tenant_id: TenantId,
    /// The dataset.
    pub dataset_id: DatasetId,
    /// Title.
    pub title: String,
    /// Where it came from (URL, file name).
    pub source: Option<String>,
    /// MIME type.
    pub mime_type: String,
    /// Free-form metadata (a JSON object), usable as a retrieval filter.
    pub metadata: serde_json::Value,
    /// Indexing state.
    pub status: DocumentStatus,
    /// Why indexing failed.
    pub error: Option<String>,
    /// SHA-256 of the content, hex.
    pub content_hash: String,
    /// The raw content, kept so that indexing can resume after a restart.
    pub content: String,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

/// A piece of a document, with its embedding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Chunk {
    /// Id.
    pub id: ChunkId,
    /// Owner.
    pub tenant_id: TenantId,
    /// The dataset (denormalised for retrieval).
    pub dataset_id: DatasetId,
    /// The document.
    pub document_id: DocumentId,
    /// Position in the document, from 0.
    pub ordinal: i32,
    /// Text.
    pub text: String,
    /// Token count of the text.
    pub token_count: i32,
    /// Embedding vector, if embedded.
    pub embedding: Option<Vec<f32>>,
}

/// An access rule or guardrail of a bot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Scope {
    /// Id.
    pub id: ScopeId,
    /// Owner.
    pub tenant_id: TenantId,
    /// The bot it applies to.
    pub bot_id: BotId,
    /// Kind: `allowed_origins`, `api_keys`, `blocked_terms`, `blocked_patterns`,
    /// `max_input_length`, `visitor_rate_limit`.
    pub kind: String,
    /// Kind-specific configuration (JSON).
    pub config: serde_json::Value,
    /// Creation time.
    pub created_at: DateTime<Utc>,
}

/// Who performed an audited action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Actor {
    /// Kind of actor.
    pub kind: ActorKind,
    /// Its id (API key id, visitor id), if any.
    pub id: Option<String>,
}

/// An audit record: one action on one resource.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditRecord {
    /// Id.
    pub id: AuditId,
    /// Tenant concerned (None for operator actions outside any tenant,
    /// e.g. an authentication failure with an unknown key).
    pub tenant_id: Option<TenantId>,
    /// Who.
    pub actor: Actor,
    /// What, e.g. `chat.completed`, `api_key.revoked`, `auth.failed`.
    pub action: String,
    /// Resource kind, e.g. `bot`.
    pub resource_type: Option<String>,
    /// Resource id.
    pub resource_id: Option<String>,
    /// Request id.
    pub request_id: Option<String>,
    /// Client IP.
    pub ip: Option<String>,
    /// Extra detail (JSON object). Never a secret.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub metadata: serde_json::Value,
    /// When.
    pub created_at: DateTime<Utc>,
}

impl AuditRecord {
    /// A record for `action` by `actor`, now, with a fresh id.
    pub fn new(tenant_id: Option<TenantId>, actor: Actor, action: impl Into<String>) -> Self {
        Self {
            id: AuditId::new(),
            tenant_id,
            actor,
            action: action.into(),
            resource_type: None,
            resource_id: None,
            request_id: None,
            ip: None,
            metadata: serde_json::Value::Object(Default::default()),
            created_at: now(),
        }
    }

    /// Names the resource acted on.
    pub fn resource(mut self, kind: impl Into<String>, id: impl ToString) -> Self {
        self.resource_type = Some(kind.into());
        self.resource_id = Some(id.to_string());
        self
    }
}

/// Is `s` a valid slug: 1-64 characters of `a-z`, `0-9` and `-`, not
/// starting or ending with `-`.
pub fn is_valid_slug(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// A slug derived from a display name (lowercase, runs of other characters
/// become `-`); falls back to `item` when nothing usable remains.
pub fn slugify(name: &str) -> String {
    let mut out = String::new();
    for c in name.chars().flat_map(|c| c.to_lowercase()) {
        if c.is_ascii_alphanumeric() {
            out.push(c);
        } else if !out.ends_with('-') && !out.is_empty() {
            out.push('-');
        }
        if out.len() >= 64 {
            break;
        }
    }
    let out = out.trim_end_matches('-').to_string();
    if out.is_empty() { "item".into() } else { out }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_order_by_creation() {
        let a = BotId::new();
        let b = BotId::new();
        assert!(a < b, "UUIDv7 ids are time ordered");
        assert_eq!(a.to_string().parse::<BotId>().unwrap(), a);
        assert_eq!("nope".parse::<BotId>(), Err(InvalidId { kind: "bot" }));
    }

    #[test]
    fn enums_round_trip() {
        for s in MessageStatus::ALL {
            assert_eq!(s.as_str().parse::<MessageStatus>().unwrap(), *s);
        }
        assert!("bogus".parse::<Permission>().is_err());
    }

    #[test]
    fn slugs() {
        assert!(is_valid_slug("demo-bot-2"));
        assert!(!is_valid_slug("Demo"));
        assert!(!is_valid_slug("-a"));
        assert!(!is_valid_slug(""));
        assert_eq!(slugify("Hello, World!"), "hello-world");
        assert_eq!(slugify("Ünïcode ☃"), "n-code");
        assert_eq!(slugify("!!!"), "item");
    }

    #[test]
    fn api_key_usability() {
        let t = now();
        let mut k = ApiKey {
            id: ApiKeyId::new(),
            tenant_id: TenantId::new(),
            name: "k".into(),
            prefix: "cc_x".into(),
            secret_hash: [0; 32],
            permissions: vec![Permission::Chat],
            bot_ids: vec![],
            rate_limit_rpm: None,
            expires_at: None,
            last_used_at: None,
            revoked_at: None,
            created_at: t,
        };
        assert!(k.is_usable_at(t));
        assert!(k.allows(Permission::Chat) && !k.allows(Permission::Admin));
        k.expires_at = Some(t);
        assert!(!k.is_usable_at(t));
        k.expires_at = None;
        k.revoked_at = Some(t);
        assert!(!k.is_usable_at(t));
    }
}

id_type!(
    /// Identifies a spending budget.
    BudgetId,
    "budget"
);
id_type!(
    /// Identifies a tenant's price override.
    PriceId,
    "price"
);

str_enum!(
    /// Over which time a budget's amount may be spent (UTC).
    BudgetPeriod {
        /// A UTC calendar day.
        Day => "day",
        /// A UTC calendar month.
        Month => "month",
        /// The last 24 hours, at any moment.
        Rolling24h => "rolling_24h"
    }
);
str_enum!(
    /// Whose spending a budget caps.
    BudgetScope {
        /// Every turn of the tenant.
        Tenant => "tenant",
        /// The turns sent with one API key.
        ApiKey => "api_key",
        /// The turns of one bot.
        Bot => "bot",
        /// The turns of one end user (`user_id`) of one bot.
        EndUser => "end_user"
    }
);

/// A cap on spending: `amount_micros` per `period`, for a scope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Budget {
    /// Id.
    pub id: BudgetId,
    /// Owner.
    pub tenant_id: TenantId,
    /// Whose spending it caps.
    pub scope: BudgetScope,
    /// The key (scope `api_key`).
    pub api_key_id: Option<ApiKeyId>,
    /// The bot (scopes `bot` and `end_user`).
    pub bot_id: Option<BotId>,
    /// The end user (scope `end_user`).
    pub end_user_id: Option<String>,
    /// The period.
    pub period: BudgetPeriod,
    /// The amount, in micro-units of [`crate::pricing::CURRENCY`].
    pub amount_micros: i64,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

impl Budget {
    /// Whether a turn of `bot`, sent with `key` for `end_user`, counts
    /// against this budget.
    pub fn applies(&self, bot: BotId, key: Option<ApiKeyId>, end_user: Option<&str>) -> bool {
        match self.scope {
            BudgetScope::Tenant => true,
            BudgetScope::ApiKey => key.is_some() && self.api_key_id == key,
            BudgetScope::Bot => self.bot_id == Some(bot),
            BudgetScope::EndUser => {
                self.bot_id == Some(bot)
                    && end_user.is_some()
                    && self.end_user_id.as_deref() == end_user
            }
        }
    }
}

/// A tenant's price for a model of one of its provider configurations,
/// overriding the catalog's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PriceOverride {
    /// Id.
    pub id: PriceId,
    /// Owner.
    pub tenant_id: TenantId,
    /// The provider configuration.
    pub provider_id: ProviderConfigId,
    /// The model, exactly as the provider reports it (or as configured).
    pub model: String,
    /// The price.
    pub price: crate::pricing::Price,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}
