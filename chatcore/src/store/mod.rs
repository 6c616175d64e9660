//! Persistence: the [`Store`] trait and its SeaORM implementation.
//!
//! Every operation on a tenant-owned row takes the tenant id and filters by
//! it: asking with another tenant's id behaves exactly as if the row did not
//! exist ([`StoreError::NotFound`], an empty list, or nothing changed).
//!
//! Lists are paginated by cursor. Ids are UUIDv7 and so ordered by creation;
//! a page is the `limit` rows after the cursor in the list's order, and
//! `next_cursor` is set when more rows follow.

mod sea;
pub mod widget;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, NaiveTime, Utc};
use secrecy::SecretString;

use crate::domain::*;
use crate::error::Cause;

pub use sea::{
    DEFAULT_DATABASE_ROLE, DEFAULT_WRITER_TRANSACTIONS, SQLITE_MAX_READERS, SchemaObjects,
    SeaOrmStore, StoreOptions,
};
pub use widget::{Feedback, FeedbackRow, NewFeedback, Rating, WidgetRecord, WidgetUpdate};

/// Errors of a store. No database driver type crosses this boundary: a
/// driver's error is kept only as the `source()` of
/// [`StoreError::Internal`] or [`StoreError::Unavailable`] (a [`Cause`],
/// shared, so the error stays `Clone` for the group-commit writer, which
/// answers every job of a failed batch with it).
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The row does not exist (or belongs to another tenant).
    #[error("{0} not found")]
    NotFound(&'static str),
    /// A unique constraint would be violated (e.g. a taken slug).
    #[error("{0} already exists")]
    Conflict(&'static str),
    /// The row is still referenced (e.g. a provider config used by a bot).
    #[error("{0} is in use")]
    InUse(&'static str),
    /// The request is malformed (e.g. a bad cursor).
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// The database cannot be reached or timed out.
    #[error("database unavailable: {message}")]
    Unavailable {
        /// What could not be done, in a few words.
        message: String,
        /// The driver's (or the file system's) error, when there is one.
        #[source]
        source: Option<Cause>,
    },
    /// Anything else; the message and its cause are for logs, not for end
    /// users.
    #[error("store error: {message}")]
    Internal {
        /// What went wrong, in a few words.
        message: String,
        /// The driver's (or a decoder's) error, when there is one.
        #[source]
        source: Option<Cause>,
    },
}

impl StoreError {
    /// [`StoreError::Internal`] without a cause: a state the store should
    /// never be in.
    pub fn internal(message: impl Into<String>) -> Self {
        StoreError::Internal {
            message: message.into(),
            source: None,
        }
    }

    /// [`StoreError::Internal`] caused by `source`.
    pub fn internal_from(
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        StoreError::Internal {
            message: message.into(),
            source: Some(Cause::new(source)),
        }
    }

    /// [`StoreError::Unavailable`] without a cause.
    pub fn unavailable(message: impl Into<String>) -> Self {
        StoreError::Unavailable {
            message: message.into(),
            source: None,
        }
    }

    /// [`StoreError::Unavailable`] caused by `source`.
    pub fn unavailable_from(
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        StoreError::Unavailable {
            message: message.into(),
            source: Some(Cause::new(source)),
        }
    }
}

/// Result of a store operation.
pub type StoreResult<T> = Result<T, StoreError>;

/// A page request: at most `limit` rows after `cursor`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PageRequest {
    /// How many rows (clamped to 1..=[`PageRequest::MAX_LIMIT`]; 0 means the default).
    pub limit: u64,
    /// Cursor from a previous page's `next_cursor`.
    pub cursor: Option<String>,
}

impl PageRequest {
    /// Default page size.
    pub const DEFAULT_LIMIT: u64 = 50;
    /// Largest page size.
    pub const MAX_LIMIT: u64 = 200;

    /// The first page of `limit` rows.
    pub fn first(limit: u64) -> Self {
        Self {
            limit,
            cursor: None,
        }
    }

    /// The effective limit.
    pub fn effective_limit(&self) -> u64 {
        match self.limit {
            0 => Self::DEFAULT_LIMIT,
            n => n.min(Self::MAX_LIMIT),
        }
    }
}

/// A page of results.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    /// The rows.
    pub data: Vec<T>,
    /// Cursor of the next page, if there is one.
    pub next_cursor: Option<String>,
}

/// A new tenant.
#[derive(Debug, Clone, Default)]
pub struct NewTenant {
    /// Display name.
    pub name: String,
    /// Unique slug.
    pub slug: String,
    /// Requests per minute.
    pub rate_limit_rpm: Option<i32>,
    /// Tokens per minute.
    pub rate_limit_tpm: Option<i32>,
    /// Feature flags (JSON object).
    pub features: serde_json::Value,
    /// Public chat requests per minute (None: the server's default).
    pub public_rate_limit_rpm: Option<i32>,
}

/// Changes to a tenant; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct TenantPatch {
    /// New name.
    pub name: Option<String>,
    /// New slug; `Conflict("tenant")` if taken.
    pub slug: Option<String>,
    /// New status.
    pub status: Option<TenantStatus>,
    /// New requests-per-minute limit (`Some(None)` removes it).
    pub rate_limit_rpm: Option<Option<i32>>,
    /// New tokens-per-minute limit (`Some(None)` removes it).
    pub rate_limit_tpm: Option<Option<i32>>,
    /// New public chat budget (`Some(None)`: the server's default).
    pub public_rate_limit_rpm: Option<Option<i32>>,
    /// New feature flags.
    pub features: Option<serde_json::Value>,
}

/// A new provider configuration.
#[derive(Debug, Clone)]
pub struct NewProviderConfig {
    /// Catalog key.
    pub provider: String,
    /// Display name.
    pub name: String,
    /// Sealed API key.
    pub api_key: Option<SealedKey>,
    /// Base URL override.
    pub base_url: Option<String>,
    /// Default model override.
    pub default_model: Option<String>,
    /// Enabled.
    pub enabled: bool,
}

/// Changes to a provider configuration.
#[derive(Debug, Clone, Default)]
pub struct ProviderConfigPatch {
    /// New name.
    pub name: Option<String>,
    /// New sealed key (rotation); `Some(None)` removes the key.
    pub api_key: Option<Option<SealedKey>>,
    /// New base URL.
    pub base_url: Option<Option<String>>,
    /// New default model.
    pub default_model: Option<Option<String>>,
    /// Enable or disable.
    pub enabled: Option<bool>,
}

/// A new bot.
#[derive(Debug, Clone)]
pub struct NewBot {
    /// Display name.
    pub name: String,
    /// Unique slug within the tenant.
    pub slug: String,
    /// System prompt.
    pub system_prompt: String,
    /// Chat provider configuration.
    pub provider_id: ProviderConfigId,
    /// Model.
    pub model: Option<String>,
    /// Fallback provider configuration.
    pub fallback_provider_id: Option<ProviderConfigId>,
    /// Temperature.
    pub temperature: Option<f32>,
    /// Max completion tokens.
    pub max_tokens: Option<i32>,
    /// Prompt budget.
    pub context_tokens: i32,
    /// Public.
    pub is_public: bool,
    /// Linked datasets.
    pub dataset_ids: Vec<DatasetId>,
}

/// Changes to a bot.
#[derive(Debug, Clone, Default)]
pub struct BotPatch {
    /// New name.
    pub name: Option<String>,
    /// New slug.
    pub slug: Option<String>,
    /// New system prompt.
    pub system_prompt: Option<String>,
    /// New provider.
    pub provider_id: Option<ProviderConfigId>,
    /// New model.
    pub model: Option<Option<String>>,
    /// New fallback provider.
    pub fallback_provider_id: Option<Option<ProviderConfigId>>,
    /// New temperature.
    pub temperature: Option<Option<f32>>,
    /// New max tokens.
    pub max_tokens: Option<Option<i32>>,
    /// New context budget.
    pub context_tokens: Option<i32>,
    /// New visibility.
    pub is_public: Option<bool>,
    /// New datasets.
    pub dataset_ids: Option<Vec<DatasetId>>,
    /// New status.
    pub status: Option<BotStatus>,
}

/// A new API key, already hashed (see [`crate::auth::generate_key`]).
#[derive(Debug, Clone)]
pub struct NewApiKey {
    /// Display name.
    pub name: String,
    /// Public lookup prefix.
    pub prefix: String,
    /// SHA-256 of the whole key.
    pub secret_hash: [u8; 32],
    /// Permissions.
    pub permissions: Vec<Permission>,
    /// Bot restriction (empty: all bots).
    pub bot_ids: Vec<BotId>,
    /// Per-key rate limit.
    pub rate_limit_rpm: Option<i32>,
    /// Expiry.
    pub expires_at: Option<DateTime<Utc>>,
}

/// A new conversation.
#[derive(Debug, Clone)]
pub struct NewConversation {
    /// The bot.
    pub bot_id: BotId,
    /// End user.
    pub end_user_id: Option<String>,
    /// Title.
    pub title: Option<String>,
    /// Channel.
    pub channel: Channel,
}

/// Which conversations to list (all filters are optional and combine).
#[derive(Debug, Clone, Default)]
pub struct ConversationFilter {
    /// Of this bot.
    pub bot_id: Option<BotId>,
    /// Of this end user.
    pub end_user_id: Option<String>,
    /// Created at or after.
    pub since: Option<DateTime<Utc>>,
    /// Created before.
    pub until: Option<DateTime<Utc>>,
}

/// A new message.
#[derive(Debug, Clone)]
pub struct NewMessage {
    /// The conversation.
    pub conversation_id: ConversationId,
    /// Role.
    pub role: Role,
    /// Text.
    pub content: String,
    /// Initial status (`complete` for user messages, `pending` for an
    /// assistant message about to stream).
    pub status: MessageStatus,
    /// Sending API key.
    pub api_key_id: Option<ApiKeyId>,
    /// Provider (assistant messages).
    pub provider: Option<String>,
    /// Model (assistant messages).
    pub model: Option<String>,
    /// The call a `tool` message answers.
    pub tool_call_id: Option<String>,
}

/// Which conversation a turn goes to.
#[derive(Debug, Clone)]
pub enum TurnConversation {
    /// Start this one.
    New(NewConversation),
    /// Continue this one (it must belong to the tenant).
    Existing(ConversationId),
}

/// A tool's result that the caller sends back in a turn (the client of an
/// OpenAI-compatible turn ran a tool the model called).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolResult {
    /// The call it answers.
    pub tool_call_id: String,
    /// What the tool returned.
    pub content: String,
}

/// The start of a chat turn: what the caller sends (tool results, then the
/// user's message) and the assistant message that will hold the answer.
#[derive(Debug, Clone)]
pub struct NewTurn {
    /// The conversation.
    pub conversation: TurnConversation,
    /// The user's message; empty when the turn only sends `tool_results`.
    pub user_content: String,
    /// Tool results, stored as `tool` messages before the user's message.
    pub tool_results: Vec<ToolResult>,
    /// Sending API key.
    pub api_key_id: Option<ApiKeyId>,
    /// Provider asked.
    pub provider: Option<String>,
    /// Model asked.
    pub model: Option<String>,
}

impl NewTurn {
    /// What the caller sends, in order: `(role, content, tool_call_id)` of
    /// each tool result, then of the user's message (always stored when
    /// there are no tool results).
    pub fn inputs(&self) -> Vec<(Role, String, Option<String>)> {
        let mut v: Vec<_> = self
            .tool_results
            .iter()
            .map(|r| (Role::Tool, r.content.clone(), Some(r.tool_call_id.clone())))
            .collect();
        if !self.user_content.is_empty() || v.is_empty() {
            v.push((Role::User, self.user_content.clone(), None));
        }
        v
    }
}

/// An assistant message left `pending` by an instance that is gone.
#[derive(Debug, Clone)]
pub struct OrphanedTurn {
    /// The assistant message, with the text streamed until the crash.
    pub message: Message,
    /// The user message it answers, if it is still there.
    pub prompt: Option<String>,
}

/// The outcome of an assistant message, written when it ends.
#[derive(Debug, Clone, Default)]
pub struct MessageCompletion {
    /// Final text.
    pub content: String,
    /// Final status.
    pub status: Option<MessageStatus>,
    /// Tokens.
    pub usage: Option<TokenUsage>,
    /// Response time, ms.
    pub response_time_ms: Option<i32>,
    /// Time to first token, ms.
    pub time_to_first_token_ms: Option<i32>,
    /// Provider that answered.
    pub provider: Option<String>,
    /// Model that answered.
    pub model: Option<String>,
    /// Finish reason, verbatim.
    pub finish_reason: Option<String>,
    /// Error code.
    pub error: Option<String>,
    /// Chunks used.
    pub source_chunk_ids: Vec<ChunkId>,
    /// The tools the model called.
    pub tool_calls: Vec<crate::provider::ToolCall>,
    /// The cost of the answer and its cached tokens.
    pub cost: Option<crate::pricing::Cost>,
}

/// A new budget.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewBudget {
    /// Whose spending it caps.
    pub scope: BudgetScope,
    /// The key (scope `api_key`).
    pub api_key_id: Option<ApiKeyId>,
    /// The bot (scopes `bot`, `end_user`).
    pub bot_id: Option<BotId>,
    /// The end user (scope `end_user`).
    pub end_user_id: Option<String>,
    /// The period.
    pub period: BudgetPeriod,
    /// The amount, micro-units.
    pub amount_micros: i64,
}

/// A change of a budget.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BudgetPatch {
    /// A new amount.
    pub amount_micros: Option<i64>,
    /// A new period.
    pub period: Option<BudgetPeriod>,
}

/// A tenant's price of a model of one of its provider configurations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewPrice {
    /// The provider configuration.
    pub provider_id: ProviderConfigId,
    /// The model.
    pub model: String,
    /// The price.
    pub price: crate::pricing::Price,
}

/// A new dataset.
#[derive(Debug, Clone)]
pub struct NewDataset {
    /// Display name.
    pub name: String,
    /// Embedding provider configuration.
    pub provider_id: ProviderConfigId,
    /// Embedding model.
    pub embedding_model: String,
    /// Embedding dimension.
    pub embedding_dim: i32,
}

/// A new document.
#[derive(Debug, Clone)]
pub struct NewDocument {
    /// The dataset.
    pub dataset_id: DatasetId,
    /// Title.
    pub title: String,
    /// Source.
    pub source: Option<String>,
    /// MIME type.
    pub mime_type: String,
    /// Metadata (JSON object).
    pub metadata: serde_json::Value,
    /// Raw content.
    pub content: String,
    /// SHA-256 of the content, hex.
    pub content_hash: String,
}

/// A new chunk (the document and tenant come from the call).
#[derive(Debug, Clone)]
pub struct NewChunk {
    /// Position.
    pub ordinal: i32,
    /// Text.
    pub text: String,
    /// Token count.
    pub token_count: i32,
    /// Embedding.
    pub embedding: Option<Vec<f32>>,
}

/// Where a chunk search looks: some datasets of one tenant, optionally only
/// some of their documents; `limit` results at most.
#[derive(Debug, Clone, Copy)]
pub struct ChunkSearch<'a> {
    /// Datasets to search (each checked to be the tenant's by the caller or
    /// filtered by tenant in the query).
    pub datasets: &'a [DatasetId],
    /// Only chunks of these documents (e.g. those matching a metadata
    /// filter); `None` means every document.
    pub documents: Option<&'a [DocumentId]>,
    /// How many results at most.
    pub limit: usize,
}

/// A chunk found by a search, best first. Scores rank results of one search
/// only: cosine similarity for vectors, the backend's full-text rank for text.
#[derive(Debug, Clone, PartialEq)]
pub struct ScoredChunk {
    /// The chunk.
    pub chunk_id: ChunkId,
    /// Its document.
    pub document_id: DocumentId,
    /// Higher is better.
    pub score: f32,
}

/// What an answer cites of a chunk.
#[derive(Debug, Clone, PartialEq)]
pub struct ChunkHit {
    /// The chunk.
    pub chunk_id: ChunkId,
    /// Its document.
    pub document_id: DocumentId,
    /// The document's title.
    pub title: String,
    /// The chunk's text.
    pub text: String,
}

/// A new scope.
#[derive(Debug, Clone)]
pub struct NewScope {
    /// The bot.
    pub bot_id: BotId,
    /// Kind.
    pub kind: String,
    /// Configuration.
    pub config: serde_json::Value,
}

/// Which audit records to list.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// This action.
    pub action: Option<String>,
    /// This actor kind.
    pub actor_kind: Option<ActorKind>,
    /// This actor id.
    pub actor_id: Option<String>,
    /// At or after.
    pub since: Option<DateTime<Utc>>,
    /// Before.
    pub until: Option<DateTime<Utc>>,
}

/// A management change, persisted together with its audit record in one
/// transaction by [`AuditStore::apply`]. Every tenant-owned change names its
/// tenant and touches only that tenant's rows.
#[derive(Debug, Clone)]
pub enum Change {
    /// Creates a tenant and, when given, its first API key (normally an
    /// admin key) in the same transaction.
    CreateTenant(NewTenant, Option<NewApiKey>),
    /// Changes a tenant.
    UpdateTenant(TenantId, TenantPatch),
    /// Creates a provider configuration.
    CreateProviderConfig(TenantId, NewProviderConfig),
    /// Changes a provider configuration (key rotation included).
    UpdateProviderConfig(TenantId, ProviderConfigId, ProviderConfigPatch),
    /// Deletes a provider configuration (`InUse` while a bot uses it).
    DeleteProviderConfig(TenantId, ProviderConfigId),
    /// Creates a bot.
    CreateBot(TenantId, NewBot),
    /// Changes a bot.
    UpdateBot(TenantId, BotId, BotPatch),
    /// Deletes a bot with its conversations, messages and scopes.
    DeleteBot(TenantId, BotId),
    /// Stores a new API key (hash only).
    CreateApiKey(TenantId, NewApiKey),
    /// Revokes an API key.
    RevokeApiKey(TenantId, ApiKeyId),
    /// Creates a scope.
    CreateScope(TenantId, NewScope),
    /// Deletes a scope.
    DeleteScope(TenantId, ScopeId),
    /// Deletes a conversation and its messages.
    DeleteConversation(TenantId, ConversationId),
    /// Creates a budget.
    CreateBudget(TenantId, NewBudget),
    /// Changes a budget's amount or period.
    UpdateBudget(TenantId, BudgetId, BudgetPatch),
    /// Deletes a budget.
    DeleteBudget(TenantId, BudgetId),
    /// Sets the price of a model of a provider configuration (creates or
    /// replaces it).
    PutPrice(TenantId, NewPrice),
    /// Deletes a price override (the catalog's price applies again).
    DeletePrice(TenantId, PriceId),
}

impl Change {
    /// The audit action this change records, e.g. `bot.created`.
    pub fn action(&self) -> &'static str {
        match self {
            Change::CreateTenant(..) => "tenant.created",
            Change::UpdateTenant(..) => "tenant.updated",
            Change::CreateProviderConfig(..) => "provider.created",
            Change::UpdateProviderConfig(..) => "provider.updated",
            Change::DeleteProviderConfig(..) => "provider.deleted",
            Change::CreateBot(..) => "bot.created",
            Change::UpdateBot(..) => "bot.updated",
            Change::DeleteBot(..) => "bot.deleted",
            Change::CreateApiKey(..) => "api_key.created",
            Change::RevokeApiKey(..) => "api_key.revoked",
            Change::CreateScope(..) => "scope.created",
            Change::DeleteScope(..) => "scope.deleted",
            Change::DeleteConversation(..) => "conversation.deleted",
            Change::CreateBudget(..) => "budget.created",
            Change::UpdateBudget(..) => "budget.updated",
            Change::DeleteBudget(..) => "budget.deleted",
            Change::PutPrice(..) => "price.set",
            Change::DeletePrice(..) => "price.deleted",
        }
    }

    /// The tenant the change concerns (None: a tenant still to be created).
    pub fn tenant(&self) -> Option<TenantId> {
        match self {
            Change::CreateTenant(..) => None,
            Change::UpdateTenant(t, ..)
            | Change::CreateProviderConfig(t, ..)
            | Change::UpdateProviderConfig(t, ..)
            | Change::DeleteProviderConfig(t, ..)
            | Change::CreateBot(t, ..)
            | Change::UpdateBot(t, ..)
            | Change::DeleteBot(t, ..)
            | Change::CreateApiKey(t, ..)
            | Change::RevokeApiKey(t, ..)
            | Change::CreateScope(t, ..)
            | Change::DeleteScope(t, ..)
            | Change::DeleteConversation(t, ..)
            | Change::CreateBudget(t, ..)
            | Change::UpdateBudget(t, ..)
            | Change::DeleteBudget(t, ..)
            | Change::PutPrice(t, ..)
            | Change::DeletePrice(t, ..) => Some(*t),
        }
    }
}

impl Change {
    /// The audit record of this change by `actor` (its action; the store
    /// fills in the tenant and resource).
    pub fn audit_by(&self, actor: Actor) -> AuditRecord {
        AuditRecord::new(self.tenant(), actor, self.action())
    }
}

/// What [`AuditStore::apply`] wrote.
#[derive(Debug, Clone, PartialEq)]
pub enum Changed {
    /// A new tenant and its first key, if one was asked for.
    TenantCreated(Tenant, Option<ApiKey>),
    /// A tenant as it now is.
    Tenant(Tenant),
    /// A provider configuration as it now is.
    ProviderConfig(ProviderConfig),
    /// A bot as it now is.
    Bot(Bot),
    /// An API key as it now is.
    ApiKey(ApiKey),
    /// A new scope.
    Scope(Scope),
    /// The row is gone.
    Deleted,
    /// A budget as it now is.
    Budget(Budget),
    /// A price override as it now is.
    Price(PriceOverride),
}

/// What a caller that knows which change it applied takes out of
/// [`Changed`]; another variant is [`StoreError::Internal`] (a store that
/// answered a different change).
macro_rules! changed_into {
    ($($(#[$doc:meta])* $fn:ident -> $t:ty { $($pat:pat => $v:expr),+ })*) => {
        impl Changed {
            $(
                $(#[$doc])*
                pub fn $fn(self) -> StoreResult<$t> {
                    match self {
                        $($pat => Ok($v),)+
                        other => Err(StoreError::internal(format!(
                            "the store answered {other:?} to a change that expected {}",
                            stringify!($t)
                        ))),
                    }
                }
            )*
        }
    };
}

changed_into! {
    /// The tenant of [`Changed::Tenant`] or [`Changed::TenantCreated`].
    into_tenant -> Tenant { Changed::Tenant(t) => t, Changed::TenantCreated(t, _) => t }
    /// The provider configuration of [`Changed::ProviderConfig`].
    into_provider_config -> ProviderConfig { Changed::ProviderConfig(p) => p }
    /// The bot of [`Changed::Bot`].
    into_bot -> Bot { Changed::Bot(b) => b }
    /// The key of [`Changed::ApiKey`].
    into_api_key -> ApiKey { Changed::ApiKey(k) => k }
    /// The scope of [`Changed::Scope`].
    into_scope -> Scope { Changed::Scope(s) => s }
    /// Nothing, from [`Changed::Deleted`].
    into_deleted -> () { Changed::Deleted => () }
}

/// How [`AuditStore::usage`] groups chat turns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsageGroup {
    /// By bot id.
    Bot,
    /// By sending API key id (public chat has none).
    ApiKey,
    /// By UTC day, `YYYY-MM-DD`.
    Day,
    /// By end user (`user_id` of the turn; turns without one are not
    /// counted in this grouping).
    EndUser,
}

/// One group of [`AuditStore::usage`]: chat turns (assistant messages with an
/// outcome) and their tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageRow {
    /// The bot id, key id or day; None for turns without an API key.
    pub group: Option<String>,
    /// Chat turns.
    pub requests: u64,
    /// Prompt tokens.
    pub prompt_tokens: u64,
    /// Completion tokens.
    pub completion_tokens: u64,
    /// Total tokens.
    pub total_tokens: u64,
    /// Cost, in micro-units.
    pub cost_micros: i64,
}

/// How busy one database connection pool is (for metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStats {
    /// Which pool: `main`, or `writer` for SQLite's single-writer pool.
    pub pool: &'static str,
    /// Connections lent out.
    pub in_use: u32,
    /// Connections open and waiting.
    pub idle: u32,
    /// The most the pool opens.
    pub max: u32,
}

/// A half-open range of UTC days, `[start, end)`: what [`AuditStore::usage`]
/// reads. Usage is kept per UTC day, so a range of times is answered by the
/// days it touches (see [`UsageDays::covering`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UsageDays {
    /// First day counted.
    pub start: NaiveDate,
    /// First day not counted.
    pub end: NaiveDate,
}

impl UsageDays {
    /// The days from `start` to `end`, `end` excluded; `None` unless
    /// `start < end`.
    pub fn new(start: NaiveDate, end: NaiveDate) -> Option<Self> {
        (start < end).then_some(Self { start, end })
    }

    /// The UTC days that the times `[since, until)` touch: `since` is
    /// rounded down to the start of its day and `until` up to the next
    /// midnight (unless it is one). A range given at midnights is exact.
    /// `None` unless `since < until`.
    pub fn covering(since: DateTime<Utc>, until: DateTime<Utc>) -> Option<Self> {
        if since >= until {
            return None;
        }
        Self::new(since.date_naive(), Self::end_day(until)?)
    }

    /// The `n` whole days that end where a range ending at `until` ends
    /// (see [`UsageDays::covering`]): with `until` now, the last `n` days,
    /// today included.
    pub fn last(n: u64, until: DateTime<Utc>) -> Option<Self> {
        let end = Self::end_day(until)?;
        Self::new(end.checked_sub_days(chrono::Days::new(n))?, end)
    }

    /// The first day that starts at or after `t`.
    fn end_day(t: DateTime<Utc>) -> Option<NaiveDate> {
        let d = t.date_naive();
        if t.time() == NaiveTime::MIN {
            Some(d)
        } else {
            d.succ_opt()
        }
    }

    /// The start of the first day, as a time.
    pub fn since(&self) -> DateTime<Utc> {
        self.start.and_time(NaiveTime::MIN).and_utc()
    }

    /// The start of the first day not counted, as a time.
    pub fn until(&self) -> DateTime<Utc> {
        self.end.and_time(NaiveTime::MIN).and_utc()
    }
}

/// Everything chatcore persists.
///
/// Used as `Arc<dyn Store>`: the backend is chosen at run time from
/// configuration (a database URL), the engine and server hold one store for
/// their whole life, and a virtual call costs nothing next to a database
/// round trip. `dyn` also keeps the engine's and server's types free of a
/// store parameter and lets plugin authors hand in their own implementation
/// without generics spreading through their code. Hence `async_trait`.
///
/// It is made of five parts, each a trait of its own; each part's docs name
/// the services that use it. A component that needs one part takes only
/// that part (an `Arc<dyn Store>` coerces to `Arc<dyn TenantStore>` and the
/// like): the [`crate::auth::Authenticator`] and
/// [`crate::engine::Providers`] take a [`TenantStore`], the
/// [`crate::audit::AuditWriter`] an [`AuditStore`]. The services that use
/// several parts (chat, admin, RAG, budgets) keep `Arc<dyn Store>`:
///
/// | part | keeps |
/// | --- | --- |
/// | [`StoreBase`] | liveness, pool statistics, flushing queued writes |
/// | [`TenantStore`] | tenants, catalog, provider configs, bots, API keys, scopes, widget rows (reads) |
/// | [`ChatStore`] | conversations, messages, chat turns |
/// | [`RagStore`] | datasets, documents, chunks, chunk search |
/// | [`AuditStore`] | audited management writes ([`AuditStore::apply`]), audit log, usage, feedback, budgets, prices |
///
/// A plugin author implements the five parts; `Store` comes with them (a
/// blanket implementation), and the conformance suite (`testkit::store`,
/// feature `testkit`) checks them together.
pub trait Store: StoreBase + TenantStore + ChatStore + RagStore + AuditStore {}

impl<T: StoreBase + TenantStore + ChatStore + RagStore + AuditStore + ?Sized> Store for T {}

/// What every store has, whatever it keeps: a liveness check, pool
/// statistics and a flush of queued writes. Used by the server's `/readyz`,
/// `/metrics` and graceful shutdown.
#[async_trait]
pub trait StoreBase: Send + Sync + 'static {
    /// Checks that the database answers (for `/readyz`).
    async fn ping(&self) -> StoreResult<()>;

    /// Occupancy of the store's connection pools, for metrics; empty for a
    /// store without pools to describe.
    fn pool_stats(&self) -> Vec<PoolStats> {
        Vec::new()
    }

    /// Waits until every write queued before the call is committed (a
    /// store that writes synchronously has nothing to wait for).
    async fn flush(&self) -> StoreResult<()> {
        Ok(())
    }
}

/// Tenants and what configures them: the provider catalog, provider
/// configurations, bots, API keys, scopes and a bot's widget row.
///
/// Reads only, apart from [`TenantStore::touch_api_key`] (a use of a key) and
/// [`TenantStore::put_widget`]: creating, changing and deleting tenants,
/// provider configurations, bots, keys and scopes is a [`Change`] written
/// with its audit record by [`AuditStore::apply`].
///
/// Used by the authenticator ([`crate::auth`]), the engine's resolve and
/// authorize stages ([`crate::engine`]), the admin service's reads
/// ([`crate::admin`]) and the widget service ([`crate::widget`]).
#[async_trait]
pub trait TenantStore: Send + Sync + 'static {
    // ---- tenants (not tenant-owned: the operator's view) ----

    /// A tenant by id.
    async fn get_tenant(&self, id: TenantId) -> StoreResult<Tenant>;

    /// A tenant by slug.
    async fn get_tenant_by_slug(&self, slug: &str) -> StoreResult<Tenant>;

    /// All tenants, oldest first.
    async fn list_tenants(&self, page: PageRequest) -> StoreResult<Page<Tenant>>;

    // ---- provider catalog ----

    /// The provider catalog, by key.
    async fn list_catalog(&self) -> StoreResult<Vec<CatalogEntry>>;

    /// One catalog entry.
    async fn get_catalog_entry(&self, key: &str) -> StoreResult<CatalogEntry>;

    // ---- tenant provider configs ----

    /// One provider config.
    async fn get_provider_config(
        &self,
        tenant: TenantId,
        id: ProviderConfigId,
    ) -> StoreResult<ProviderConfig>;

    /// The tenant's provider configs, oldest first.
    async fn list_provider_configs(
        &self,
        tenant: TenantId,
        page: PageRequest,
    ) -> StoreResult<Page<ProviderConfig>>;

    // ---- bots ----

    /// One bot by id.
    async fn get_bot(&self, tenant: TenantId, id: BotId) -> StoreResult<Bot>;

    /// One bot by slug.
    async fn get_bot_by_slug(&self, tenant: TenantId, slug: &str) -> StoreResult<Bot>;

    /// Finds a public bot by id or slug across tenants (the public endpoint
    /// has no tenant). Slugs are unique per tenant only: a slug is resolved
    /// when exactly one public bot has it.
    async fn find_public_bot(&self, id_or_slug: &str) -> StoreResult<Bot>;

    /// The tenant's bots, oldest first.
    async fn list_bots(&self, tenant: TenantId, page: PageRequest) -> StoreResult<Page<Bot>>;

    // ---- API keys ----

    /// A key by its public prefix, in any tenant (authentication starts here).
    async fn find_api_key_by_prefix(&self, prefix: &str) -> StoreResult<Option<ApiKey>>;

    /// One key.
    async fn get_api_key(&self, tenant: TenantId, id: ApiKeyId) -> StoreResult<ApiKey>;

    /// The tenant's keys, oldest first (revoked ones included).
    async fn list_api_keys(&self, tenant: TenantId, page: PageRequest)
    -> StoreResult<Page<ApiKey>>;

    /// Records a use of the key.
    async fn touch_api_key(
        &self,
        tenant: TenantId,
        id: ApiKeyId,
        at: DateTime<Utc>,
    ) -> StoreResult<()>;

    /// The key a presented secret belongs to, if the secret is genuine: looks
    /// the row up by prefix and compares SHA-256 hashes in constant time.
    /// Revoked and expired keys are returned too; callers check
    /// [`ApiKey::is_usable_at`].
    async fn find_api_key_by_secret(
        &self,
        presented: &SecretString,
    ) -> StoreResult<Option<ApiKey>> {
        use secrecy::ExposeSecret;
        let Some(prefix) = crate::auth::key_prefix(presented.expose_secret()) else {
            return Ok(None);
        };
        let Some(key) = self.find_api_key_by_prefix(prefix).await? else {
            return Ok(None);
        };
        Ok(crate::auth::verify_key(presented, &key.secret_hash).then_some(key))
    }

    // ---- scopes ----

    /// One scope.
    async fn get_scope(&self, tenant: TenantId, id: ScopeId) -> StoreResult<Scope>;

    /// A bot's scopes, oldest first.
    async fn list_scopes(&self, tenant: TenantId, bot: BotId) -> StoreResult<Vec<Scope>>;

    // ---- the chat widget (see [`widget`]) ----

    /// A bot's widget row, if it has one. The default (a store without
    /// widget support) has none.
    async fn get_widget(&self, tenant: TenantId, bot: BotId) -> StoreResult<Option<WidgetRecord>> {
        let _ = (tenant, bot);
        Ok(None)
    }

    /// Creates or changes a bot's widget row and appends `audit` in the same
    /// transaction; `NotFound("bot")` when the tenant has no such bot.
    async fn put_widget(
        &self,
        tenant: TenantId,
        bot: BotId,
        update: WidgetUpdate,
        audit: AuditRecord,
    ) -> StoreResult<WidgetRecord> {
        let _ = (tenant, bot, update, audit);
        Err(StoreError::internal("this store keeps no widget settings"))
    }
}

/// Conversations and messages: the writes and reads of a chat turn.
///
/// Deleting a conversation is a [`Change::DeleteConversation`] (see
/// [`AuditStore::apply`]). Used by the engine ([`crate::engine`]: begin and
/// finish a turn, history) and the admin service's conversation reads.
#[async_trait]
pub trait ChatStore: Send + Sync + 'static {
    /// Starts a conversation; `NotFound("bot")` if the bot is not the tenant's.
    async fn create_conversation(
        &self,
        tenant: TenantId,
        new: NewConversation,
    ) -> StoreResult<Conversation>;

    /// One conversation.
    async fn get_conversation(
        &self,
        tenant: TenantId,
        id: ConversationId,
    ) -> StoreResult<Conversation>;

    /// Conversations matching the filter, newest first.
    async fn list_conversations(
        &self,
        tenant: TenantId,
        filter: ConversationFilter,
        page: PageRequest,
    ) -> StoreResult<Page<Conversation>>;

    /// Appends a message (and bumps the conversation's `updated_at`). An
    /// assistant message appended with an outcome (any status but
    /// `pending`) counts as a turn in [`AuditStore::usage`] at once.
    async fn append_message(&self, tenant: TenantId, new: NewMessage) -> StoreResult<Message>;

    /// Starts a chat turn: creates or continues the conversation, stores the
    /// turn's tool results (`tool` messages) and the user's message (all
    /// `complete`), then a `pending` assistant message. Returns the
    /// conversation, the last message the caller sent and the assistant
    /// message.
    /// Implementations should do this in one transaction (the default
    /// implementation makes separate calls).
    async fn begin_turn(
        &self,
        tenant: TenantId,
        turn: NewTurn,
    ) -> StoreResult<(Conversation, Message, Message)> {
        let inputs = turn.inputs();
        let conversation = match turn.conversation {
            TurnConversation::New(n) => self.create_conversation(tenant, n).await?,
            TurnConversation::Existing(id) => self.get_conversation(tenant, id).await?,
        };
        let mut last = None;
        for (role, content, tool_call_id) in inputs {
            last = Some(
                self.append_message(
                    tenant,
                    NewMessage {
                        conversation_id: conversation.id,
                        role,
                        content,
                        status: MessageStatus::Complete,
                        api_key_id: turn.api_key_id,
                        provider: None,
                        model: None,
                        tool_call_id,
                    },
                )
                .await?,
            );
        }
        let user = last.ok_or_else(|| StoreError::internal("a turn without an input message"))?;
        let assistant = self
            .append_message(
                tenant,
                NewMessage {
                    conversation_id: conversation.id,
                    role: Role::Assistant,
                    content: String::new(),
                    status: MessageStatus::Pending,
                    api_key_id: turn.api_key_id,
                    provider: turn.provider,
                    model: turn.model,
                    tool_call_id: None,
                },
            )
            .await?;
        Ok((conversation, user, assistant))
    }

    /// Writes the outcome of a message (end of a stream, failure, cancel).
    ///
    /// Usage accounting ([`AuditStore::usage`]) is updated in the same
    /// transaction: the first outcome of an assistant message counts one
    /// turn with its tokens; a later one only corrects the tokens.
    async fn finish_message(
        &self,
        tenant: TenantId,
        id: MessageId,
        done: MessageCompletion,
    ) -> StoreResult<Message>;

    /// Writes the text streamed so far onto a pending assistant message,
    /// with the store's next batch of writes: nothing waits for it, and a
    /// message that has an outcome already is left alone. After a crash the
    /// stored text is what the user saw, up to the time since the last
    /// call. A store that cannot do this cheaply may ignore it (the
    /// default): a crash then loses the partial text, never the message.
    fn record_partial(&self, tenant: TenantId, id: MessageId, content: String) {
        let _ = (tenant, id, content);
    }

    /// Assistant messages still `pending` whose instance is gone (it
    /// stopped heartbeating, or an instance of the same name started
    /// again), oldest first, at most `limit`, each with the user message
    /// that asked for it. The engine closes them as `incomplete`. A store
    /// with no notion of instances finds none (the default).
    async fn orphaned_turns(&self, limit: u64) -> StoreResult<Vec<OrphanedTurn>> {
        let _ = limit;
        Ok(Vec::new())
    }

    /// One message.
    async fn get_message(&self, tenant: TenantId, id: MessageId) -> StoreResult<Message>;

    /// The last `limit` messages of a conversation, oldest first.
    async fn recent_messages(
        &self,
        tenant: TenantId,
        conversation: ConversationId,
        limit: u64,
    ) -> StoreResult<Vec<Message>>;

    /// A conversation's messages, oldest first.
    async fn list_messages(
        &self,
        tenant: TenantId,
        conversation: ConversationId,
        page: PageRequest,
    ) -> StoreResult<Page<Message>>;
}

/// Datasets, documents and their chunks, and chunk search.
///
/// Used by the RAG service ([`crate::rag`]: datasets, ingestion, indexing)
/// and the engine's retrieve stage.
#[async_trait]
pub trait RagStore: Send + Sync + 'static {
    // ---- datasets ----

    /// Creates a dataset; `NotFound("provider")` if the provider is not the tenant's.
    async fn create_dataset(&self, tenant: TenantId, new: NewDataset) -> StoreResult<Dataset>;

    /// One dataset.
    async fn get_dataset(&self, tenant: TenantId, id: DatasetId) -> StoreResult<Dataset>;

    /// The tenant's datasets, oldest first.
    async fn list_datasets(
        &self,
        tenant: TenantId,
        page: PageRequest,
    ) -> StoreResult<Page<Dataset>>;

    /// Deletes a dataset with its documents and chunks (and unlinks it from bots).
    async fn delete_dataset(&self, tenant: TenantId, id: DatasetId) -> StoreResult<()>;

    // ---- documents ----

    /// Creates a document with status `pending`.
    async fn create_document(&self, tenant: TenantId, new: NewDocument) -> StoreResult<Document>;

    /// One document.
    async fn get_document(&self, tenant: TenantId, id: DocumentId) -> StoreResult<Document>;

    /// A dataset's documents, oldest first.
    async fn list_documents(
        &self,
        tenant: TenantId,
        dataset: DatasetId,
        page: PageRequest,
    ) -> StoreResult<Page<Document>>;

    /// Documents in a status across all tenants, oldest first (to resume
    /// indexing after a restart).
    async fn documents_in_status(
        &self,
        status: DocumentStatus,
        limit: u64,
    ) -> StoreResult<Vec<Document>>;

    /// Sets a document's status (and failure reason).
    async fn set_document_status(
        &self,
        tenant: TenantId,
        id: DocumentId,
        status: DocumentStatus,
        error: Option<String>,
    ) -> StoreResult<()>;

    /// Deletes a document and its chunks.
    async fn delete_document(&self, tenant: TenantId, id: DocumentId) -> StoreResult<()>;

    /// Creates a document in place of `replaced` (documents of the same
    /// tenant, e.g. an earlier upload with the same title): all or nothing,
    /// a failure leaves the replaced documents as they were. The default
    /// creates first and deletes after (a failure to create changes
    /// nothing); stores with transactions should do both in one.
    async fn replace_document(
        &self,
        tenant: TenantId,
        new: NewDocument,
        replaced: &[DocumentId],
    ) -> StoreResult<Document> {
        let doc = self.create_document(tenant, new).await?;
        for id in replaced {
            match self.delete_document(tenant, *id).await {
                Ok(()) | Err(StoreError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(doc)
    }

    // ---- chunks and search ----

    /// Replaces a document's chunks with `chunks` and marks it `ready`, in one
    /// transaction.
    async fn replace_chunks(
        &self,
        tenant: TenantId,
        document: DocumentId,
        chunks: Vec<NewChunk>,
    ) -> StoreResult<()>;

    /// A document's chunks, by ordinal.
    async fn list_chunks(&self, tenant: TenantId, document: DocumentId) -> StoreResult<Vec<Chunk>>;

    /// How many chunks a document has.
    async fn count_chunks(&self, tenant: TenantId, document: DocumentId) -> StoreResult<u64>;

    /// The `search.limit` chunks most similar to `vector` (cosine), best
    /// first, among chunks whose embedding has the same dimension.
    ///
    /// The default scans every chunk through [`RagStore::list_documents`] and
    /// [`RagStore::list_chunks`]: correct, and slow on large datasets.
    async fn search_chunks_by_vector(
        &self,
        tenant: TenantId,
        search: ChunkSearch<'_>,
        vector: &[f32],
    ) -> StoreResult<Vec<ScoredChunk>> {
        let chunks = default_chunks(self, tenant, search).await?;
        let docs: std::collections::HashMap<ChunkId, DocumentId> =
            chunks.iter().map(|c| (c.id, c.document_id)).collect();
        Ok(crate::rag::cosine_top_k(
            vector,
            chunks
                .iter()
                .filter_map(|c| c.embedding.as_deref().map(|e| (c.id, e))),
            search.limit,
        )
        .into_iter()
        .map(|(id, score)| ScoredChunk {
            chunk_id: id,
            document_id: docs[&id],
            score,
        })
        .collect())
    }

    /// The `search.limit` chunks that best match `query` as full text
    /// (any of its words, stemmed), best first. No words, no results.
    ///
    /// The default ranks every chunk by BM25 in process.
    async fn search_chunks_by_text(
        &self,
        tenant: TenantId,
        search: ChunkSearch<'_>,
        query: &str,
    ) -> StoreResult<Vec<ScoredChunk>> {
        let chunks = default_chunks(self, tenant, search).await?;
        let docs: std::collections::HashMap<ChunkId, DocumentId> =
            chunks.iter().map(|c| (c.id, c.document_id)).collect();
        let mut ranked =
            crate::rag::bm25_scores(query, chunks.iter().map(|c| (c.id, c.text.as_str())));
        ranked.truncate(search.limit);
        Ok(ranked
            .into_iter()
            .map(|(id, score)| ScoredChunk {
                chunk_id: id,
                document_id: docs[&id],
                score,
            })
            .collect())
    }

    /// The chunks `ids` of the tenant with their documents' titles, in the
    /// order asked; ids that are not the tenant's (or gone) are left out.
    async fn chunk_hits(&self, tenant: TenantId, ids: &[ChunkId]) -> StoreResult<Vec<ChunkHit>>;

    /// How [`RagStore::search_chunks_by_vector`] finds neighbours, for logs and
    /// benchmarks: `"scan"` (exact, in process) or `"pgvector-hnsw"`.
    fn vector_search_kind(&self) -> &'static str {
        "scan"
    }
}

/// The record of what happened and what it cost: audited management
/// writes ([`AuditStore::apply`]), the audit log, usage, feedback, budgets
/// and prices.
///
/// Used by the admin service ([`crate::admin`]: every management write,
/// audit and usage reads), the audit writer ([`crate::audit`]), budgets
/// ([`crate::budget`]) and the widget service's feedback.
#[async_trait]
pub trait AuditStore: Send + Sync + 'static {
    // ---- audit ----

    /// Appends one audit record.
    async fn append_audit(&self, record: AuditRecord) -> StoreResult<()> {
        self.append_audit_batch(vec![record]).await
    }

    /// Appends many audit records in one transaction.
    async fn append_audit_batch(&self, records: Vec<AuditRecord>) -> StoreResult<()>;

    /// A tenant's audit records matching the filter, newest first.
    async fn list_audit(
        &self,
        tenant: TenantId,
        filter: AuditFilter,
        page: PageRequest,
    ) -> StoreResult<Page<AuditRecord>>;

    // ---- management writes and usage ----

    /// Applies a management change and appends `audit` in the same
    /// transaction: either both are stored or neither. The store sets the
    /// record's tenant to the change's (the new tenant's, for a creation)
    /// and its resource type and id to the row changed.
    async fn apply(&self, change: Change, audit: AuditRecord) -> StoreResult<Changed>;

    /// A tenant's chat turns and tokens on the UTC days `days`, grouped by
    /// bot, key or day, ordered by group (turns without a key first).
    ///
    /// A turn is an assistant message with an outcome (any status but
    /// `pending`: complete, incomplete, error or cancelled), counted on the
    /// UTC day its message was created, with the tokens recorded on it.
    /// Deleting its conversation, bot or API key does not remove it from
    /// the count. Stores keep a daily rollup, written in the transaction
    /// that records each outcome, so this reads a few rows per day rather
    /// than every message.
    async fn usage(
        &self,
        tenant: TenantId,
        days: UsageDays,
        group_by: UsageGroup,
    ) -> StoreResult<Vec<UsageRow>>;

    // ---- feedback on answers (see [`widget`]) ----

    /// Stores feedback on an assistant message of the tenant (replacing
    /// earlier feedback on it): `NotFound("message")` for a message of
    /// another tenant, none, or one that is not an assistant's answer.
    async fn put_feedback(&self, tenant: TenantId, new: NewFeedback) -> StoreResult<Feedback> {
        let _ = (tenant, new);
        Err(StoreError::internal("this store keeps no feedback"))
    }

    /// The feedback on those of `messages` that have some.
    async fn feedback_for(
        &self,
        tenant: TenantId,
        messages: &[MessageId],
    ) -> StoreResult<Vec<Feedback>> {
        let _ = (tenant, messages);
        Ok(Vec::new())
    }

    /// Ratings given on the UTC days `days`, grouped by bot or day (by key:
    /// one group, `None`), ordered by group.
    async fn feedback_counts(
        &self,
        tenant: TenantId,
        days: UsageDays,
        group_by: UsageGroup,
    ) -> StoreResult<Vec<FeedbackRow>> {
        let _ = (tenant, days, group_by);
        Ok(Vec::new())
    }

    // ---- cost and budgets ----

    /// A tenant's budgets, oldest first (few per tenant: not paginated).
    async fn list_budgets(&self, tenant: TenantId) -> StoreResult<Vec<Budget>>;

    /// One budget.
    async fn get_budget(&self, tenant: TenantId, id: BudgetId) -> StoreResult<Budget>;

    /// A tenant's price overrides.
    async fn list_prices(&self, tenant: TenantId) -> StoreResult<Vec<PriceOverride>>;

    /// What the assistant messages that count against `budget` cost from
    /// `since` on: the record a budget's spent amount is rebuilt from when
    /// no live counter has it (an instance start, a Redis restart). A range
    /// scan of the tenant's messages by time (`ix_messages_tenant_time`).
    async fn budget_spent(
        &self,
        tenant: TenantId,
        budget: &Budget,
        since: DateTime<Utc>,
    ) -> StoreResult<i64>;
}

/// Every chunk a [`ChunkSearch`] covers, for the default search methods.
async fn default_chunks<S: RagStore + ?Sized>(
    store: &S,
    tenant: TenantId,
    search: ChunkSearch<'_>,
) -> StoreResult<Vec<Chunk>> {
    let wanted: Option<std::collections::HashSet<DocumentId>> =
        search.documents.map(|d| d.iter().copied().collect());
    let mut out = Vec::new();
    for &dataset in search.datasets {
        let mut cursor = None;
        loop {
            let page = store
                .list_documents(
                    tenant,
                    dataset,
                    PageRequest {
                        limit: PageRequest::MAX_LIMIT,
                        cursor: cursor.take(),
                    },
                )
                .await?;
            for d in &page.data {
                if wanted.as_ref().is_none_or(|w| w.contains(&d.id)) {
                    out.extend(store.list_chunks(tenant, d.id).await?);
                }
            }
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }
    fn d(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    #[test]
    fn usage_days_cover_the_days_a_range_touches() {
        let days = |a, b| UsageDays::covering(t(a), t(b)).map(|r| (r.start, r.end));
        // Midnights are exact.
        assert_eq!(
            days("2026-01-10T00:00:00Z", "2026-01-12T00:00:00Z"),
            Some((d("2026-01-10"), d("2026-01-12")))
        );
        // Anything else widens to whole days.
        assert_eq!(
            days("2026-01-10T13:00:00Z", "2026-01-11T00:00:00.000001Z"),
            Some((d("2026-01-10"), d("2026-01-12")))
        );
        // In UTC, whatever the offset given.
        assert_eq!(
            days("2026-01-10T01:00:00+02:00", "2026-01-10T03:00:00+02:00"),
            Some((d("2026-01-09"), d("2026-01-11")))
        );
        assert_eq!(
            days("2026-01-10T01:00:00+02:00", "2026-01-10T02:00:00+02:00"),
            Some((d("2026-01-09"), d("2026-01-10")))
        );
        // An hour inside one day is that day.
        assert_eq!(
            days("2026-01-10T05:00:00Z", "2026-01-10T06:00:00Z"),
            Some((d("2026-01-10"), d("2026-01-11")))
        );
        // Empty or reversed ranges are refused.
        assert_eq!(days("2026-01-10T05:00:00Z", "2026-01-10T05:00:00Z"), None);
        assert_eq!(days("2026-01-11T00:00:00Z", "2026-01-10T00:00:00Z"), None);
        let r = UsageDays::covering(t("2026-01-10T13:00:00Z"), t("2026-01-11T13:00:00Z")).unwrap();
        assert_eq!(
            (r.since(), r.until()),
            (t("2026-01-10T00:00:00Z"), t("2026-01-12T00:00:00Z"))
        );
    }

    #[test]
    fn usage_days_last_n_end_with_today() {
        let r = UsageDays::last(30, t("2026-01-31T15:00:00Z")).unwrap();
        assert_eq!((r.start, r.end), (d("2026-01-02"), d("2026-02-01")));
        let r = UsageDays::last(1, t("2026-02-01T00:00:00Z")).unwrap();
        assert_eq!((r.start, r.end), (d("2026-01-31"), d("2026-02-01")));
        assert_eq!(UsageDays::last(0, t("2026-02-01T00:00:00Z")), None);
        assert_eq!(UsageDays::new(d("2026-01-02"), d("2026-01-02")), None);
    }
}
