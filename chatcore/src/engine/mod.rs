//! The chat engine: [`ChatService`], the embeddable entry point.
//!
//! One turn: resolve the bot (id or slug) in the tenant; check access (a
//! public bot for public chat; the key's permission and bot restriction for
//! keyed chat; the tenant's status and feature flags); apply the bot's
//! guardrails before any provider call; check rate limits; start or continue
//! the conversation; store the user message; build the prompt (system
//! prompt, retrieved context, history within the budget, the message); call
//! the provider (retries and fallback inside); store the assistant message
//! with tokens and timings; queue the audit record.
//!
//! Nothing here knows HTTP: the server turns requests into [`ChatInput`] and
//! [`Caller`], and [`ChatReply`] / [`TurnEvent`]s into JSON and SSE.

mod caches;
mod completions;
mod error;
pub mod guard;
pub mod prompt;
mod providers;

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::StreamExt;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_util::task::TaskTracker;

pub use caches::Caches;
pub use completions::{CompletionInput, TurnOptions};
pub use error::ChatError;
pub use guard::{GuardViolation, Guardrails};
pub use prompt::{Prompt, Source, build_prompt};
pub use providers::Providers;

use crate::audit::AuditWriter;
use crate::auth::throttle::{AuthThrottle, Credential};
use crate::auth::{Authenticator, Principal};
use crate::cache::TtlCache;
use crate::crypto::Keyring;
use crate::domain::*;
use crate::provider::tokens::{count_message_tokens, count_tokens};
use crate::provider::{
    ChatEvent, ChatRequest, ChatStream, FallbackEntry, FallbackProvider, Provider, ProviderError,
    ToolCall, ToolCallBuffer, ToolCallDelta, Usage,
};
use crate::ratelimit::{Decision, Quota, RateLimiter};
use crate::store::{
    MessageCompletion, NewConversation, NewTurn, Store, StoreError, TurnConversation,
};

/// Retrieves context for a bot's datasets (the RAG seam).
#[async_trait]
pub trait ContextRetriever: Send + Sync + 'static {
    /// The best `top_k` sources for `query` in `datasets` of `tenant`.
    async fn retrieve(
        &self,
        tenant: TenantId,
        datasets: &[DatasetId],
        query: &str,
        top_k: usize,
    ) -> Result<Vec<Source>, ChatError>;
}

/// Engine settings.
#[derive(Debug, Clone)]
pub struct ChatSettings {
    /// Most history messages loaded per turn (then trimmed to the budget).
    pub history_limit: u64,
    /// Longest message accepted, in characters (guardrails may lower it).
    pub max_message_chars: usize,
    /// How long bots, guardrails and verified keys stay cached.
    pub cache_ttl: Duration,
    /// Public chat: requests per minute per visitor (IP), unless the bot's
    /// `visitor_rate_limit` scope says otherwise.
    pub public_visitor_rpm: u32,
    /// Public chat: requests per minute per bot.
    pub public_bot_rpm: u32,
    /// Retrieved chunks per turn for bots with datasets.
    pub rag_top_k: usize,
    /// Retries of provider calls before the first token.
    pub retry: crate::provider::RetryPolicy,
    /// Provider timeouts.
    pub timeouts: crate::provider::Timeouts,
    /// Public chat: requests per minute per tenant, across its public bots,
    /// unless the tenant's `public_rate_limit_rpm` says otherwise. Public
    /// traffic has this budget of its own: it never counts against the
    /// tenant's `rate_limit_rpm`, which is its API keys' budget.
    pub public_tenant_rpm: u32,
    /// Failed authentications admitted per client IP per minute before
    /// 429s (0: no throttle); see [`crate::auth::throttle`].
    pub auth_failures_per_minute: u32,
    /// Which addresses provider calls may connect to.
    pub egress: crate::provider::EgressPolicy,
}

impl Default for ChatSettings {
    fn default() -> Self {
        Self {
            history_limit: 50,
            max_message_chars: 32_000,
            cache_ttl: Duration::from_secs(5),
            public_visitor_rpm: 30,
            public_bot_rpm: 600,
            rag_top_k: 5,
            retry: crate::provider::RetryPolicy::default(),
            timeouts: crate::provider::Timeouts::default(),
            public_tenant_rpm: 1200,
            auth_failures_per_minute: crate::auth::throttle::AuthThrottle::DEFAULT_PER_MINUTE,
            egress: crate::provider::EgressPolicy::default(),
        }
    }
}

/// Who is chatting.
#[derive(Debug, Clone)]
pub enum Caller {
    /// An anonymous visitor of a public bot.
    Public {
        /// Client IP (for per-visitor limits and the audit log).
        ip: Option<String>,
        /// The `Origin` header, checked against the bot's allowed origins.
        origin: Option<String>,
        /// A verified widget visitor session ([`crate::widget`]): its
        /// visitor, not the IP, is the per-visitor limit's key, and it is
        /// good for its own bot only.
        visitor: Option<Visitor>,
    },
    /// A tenant's API key.
    Key {
        /// The verified key and tenant.
        principal: Arc<Principal>,
        /// Client IP.
        ip: Option<String>,
    },
}

impl Caller {
    fn ip(&self) -> Option<&str> {
        match self {
            Caller::Public { ip, .. } | Caller::Key { ip, .. } => ip.as_deref(),
        }
    }
    fn actor(&self) -> Actor {
        match self {
            Caller::Public { ip, .. } => Actor {
                kind: ActorKind::PublicVisitor,
                id: ip.clone(),
            },
            Caller::Key { principal, .. } => Actor {
                kind: ActorKind::ApiKey,
                id: Some(principal.key.id.to_string()),
            },
        }
    }
}

/// A widget visitor, from a verified visitor token ([`crate::widget`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Visitor {
    /// The bot the token was issued for.
    pub bot: BotId,
    /// The visitor's id (stable across the token's renewals).
    pub id: String,
}

/// One chat turn's input.
#[derive(Debug, Clone, Default)]
pub struct ChatInput {
    /// Bot id or slug.
    pub bot: String,
    /// The user's message.
    pub message: String,
    /// Conversation to continue.
    pub conversation_id: Option<String>,
    /// End user id.
    pub user_id: Option<String>,
    /// Request id for the audit log.
    pub request_id: Option<String>,
}

impl ChatInput {
    /// Refuses text the database cannot store ([`crate::text`]).
    fn check_text(&self) -> Result<(), crate::text::TextError> {
        use crate::text::{check_opt, check_text};
        check_text("bot_id", &self.bot)?;
        check_text("message", &self.message)?;
        check_opt("conversation_id", self.conversation_id.as_deref())?;
        check_opt("user_id", self.user_id.as_deref())
    }
}

/// Token counts in replies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UsageReply {
    /// Prompt tokens.
    pub prompt_tokens: u32,
    /// Completion tokens.
    pub completion_tokens: u32,
    /// Total tokens.
    pub total_tokens: u32,
    /// Counted by us (the provider reported none).
    pub estimated: bool,
    /// Prompt tokens the vendor read from its cache.
    pub cached_tokens: u32,
}

impl From<Usage> for UsageReply {
    fn from(u: Usage) -> Self {
        Self {
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
            total_tokens: u.total_tokens,
            estimated: u.estimated,
            cached_tokens: u.cached_tokens,
        }
    }
}

/// What a turn cost, in replies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CostReply {
    /// Micro-units of `currency` (1 000 000 = 1), rounded up.
    pub amount_micros: i64,
    /// The currency (`USD`).
    pub currency: &'static str,
    /// False when no price is known for the model (the cost is then 0).
    pub priced: bool,
}

impl From<crate::pricing::Cost> for CostReply {
    fn from(c: crate::pricing::Cost) -> Self {
        Self {
            amount_micros: c.micros,
            currency: crate::pricing::CURRENCY,
            priced: c.priced,
        }
    }
}

/// A completed turn.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChatReply {
    /// The conversation.
    pub conversation_id: ConversationId,
    /// The assistant message.
    pub message_id: MessageId,
    /// The bot.
    pub bot_id: BotId,
    /// The answer.
    pub content: String,
    /// Provider that answered.
    pub provider: String,
    /// Model that answered.
    pub model: String,
    /// Finish reason, verbatim.
    pub finish_reason: String,
    /// Tokens.
    pub usage: UsageReply,
    /// Time from the request to the answer.
    pub response_time_ms: u64,
    /// Sources the answer may cite.
    pub sources: Vec<Source>,
    /// The bot's tenant, for the adapter's own accounting (metrics). Not
    /// serialized: a public visitor has no use for it.
    #[serde(skip)]
    pub tenant_id: TenantId,
    /// The tools the model called (only turns that offer tools, through
    /// [`ChatService::complete`]; `/v1/chat` offers none). Not serialized:
    /// the OpenAI-compatible adapter writes them in its own shape.
    #[serde(skip)]
    pub tool_calls: Vec<ToolCall>,
    /// What the turn cost.
    pub cost: CostReply,
}

/// The end of a streamed turn.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StreamDone {
    /// Tokens.
    pub usage: UsageReply,
    /// Finish reason.
    pub finish_reason: String,
    /// Time from the request to the last token.
    pub response_time_ms: u64,
    /// Time from the request to the first token.
    pub time_to_first_token_ms: u64,
    /// Provider that answered.
    pub provider: String,
    /// Model that answered.
    pub model: String,
    /// Sources.
    pub sources: Vec<Source>,
    /// The bot's tenant, for the adapter's own accounting (metrics). Not
    /// serialized.
    #[serde(skip)]
    pub tenant_id: TenantId,
    /// What the turn cost.
    pub cost: CostReply,
}

/// Events of a streamed turn, in order: one `Start`, any number of `Delta`,
/// then one `Done` or one `Error`.
#[derive(Debug, Clone)]
pub enum TurnEvent {
    /// The turn started.
    Start {
        /// The conversation.
        conversation_id: ConversationId,
        /// The assistant message being written.
        message_id: MessageId,
    },
    /// A piece of the answer.
    Delta(String),
    /// A piece of a tool call (only turns that offer tools): OpenAI's
    /// streaming shape, id and name first, then argument fragments.
    ToolCall(ToolCallDelta),
    /// The answer is complete.
    Done(Box<StreamDone>),
    /// The provider failed after the start.
    Error {
        /// Stable code (`provider_error`, `provider_timeout`, ...).
        code: &'static str,
        /// Message safe to show.
        message: String,
    },
}

/// Who a limit check is for (to audit a rejection).
struct Who<'a> {
    caller: &'a Caller,
    tenant: TenantId,
    request_id: Option<&'a str>,
}

/// A bot with everything a turn needs, cached.
#[derive(Clone)]
struct BotEntry {
    bot: Bot,
    tenant: Tenant,
    guard: Arc<Guardrails>,
    provider: Arc<dyn Provider>,
    /// For token counting when the provider does not say.
    model_hint: String,
    /// The prices of the bot's providers.
    prices: Arc<crate::pricing::BotPrices>,
}

/// Everything prepared before the provider is called.
struct Turn {
    entry: BotEntry,
    caller: Caller,
    conversation: Conversation,
    /// The pending assistant message.
    assistant: MessageId,
    request: ChatRequest,
    sources: Vec<Source>,
    /// The prompt's token estimate, charged to the TPM limit before the call.
    prompt_estimate: u32,
    started: Instant,
    request_id: Option<String>,
    /// The turn's budget reservation, settled by `finish`.
    budget: Option<crate::budget::Hold>,
    /// The turn's `chat` span ([`chat_span`]), recorded when it ends.
    span: tracing::Span,
}

/// The span of one turn, exported over OTLP when the server is so
/// configured: the tenant, bot and provider once the bot is resolved; the
/// model, tokens, time to first token and status when the turn ends.
fn chat_span() -> tracing::Span {
    use tracing::field::Empty;
    tracing::info_span!(
        "chat",
        tenant = Empty,
        bot = Empty,
        provider = Empty,
        model = Empty,
        prompt_tokens = Empty,
        completion_tokens = Empty,
        total_tokens = Empty,
        ttft_ms = Empty,
        status = Empty,
    )
}

/// Records who answers a turn on the current `chat` span.
fn record_entry(entry: &BotEntry) {
    let span = tracing::Span::current();
    span.record("tenant", tracing::field::display(entry.tenant.id));
    span.record("bot", tracing::field::display(entry.bot.id));
    span.record("provider", entry.provider.kind());
}

/// The chat engine. Build one per process and share it (`Arc`); embedders
/// get one from [`crate::Chatcore::builder`].
pub struct ChatService {
    store: Arc<dyn Store>,
    /// Built providers, shared with RAG.
    providers: Arc<Providers>,
    limiter: Arc<dyn RateLimiter>,
    audit: AuditWriter,
    auth: Authenticator,
    throttle: AuthThrottle,
    settings: ChatSettings,
    /// Context for bots with datasets (RAG), given at construction.
    retriever: Option<Arc<dyn ContextRetriever>>,
    /// Shared with the services that invalidate them; `auth`, `bots` and
    /// `public_bots` are its caches (clones share the entries).
    caches: Caches,
    bots: TtlCache<(TenantId, String), BotEntry>,
    public_bots: TtlCache<String, BotEntry>,
    touched: TtlCache<ApiKeyId, ()>,
    tasks: TaskTracker,
    /// Cancelled when the shutdown grace is over: open streams end.
    stop_streams: tokio_util::sync::CancellationToken,
    /// Spending budgets (in process unless [`ChatService::set_budgets`]).
    budgets: crate::budget::BudgetSlot,
}

impl std::fmt::Debug for ChatService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatService")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl ChatService {
    /// A chat service over `store` with `providers`, reading and filling
    /// `caches`, retrieving context for bots with datasets from `retriever`
    /// (none: such bots answer without context). [`crate::Chatcore::builder`]
    /// wires these.
    pub(crate) fn new(
        store: Arc<dyn Store>,
        providers: Arc<Providers>,
        caches: Caches,
        limiter: Arc<dyn RateLimiter>,
        audit: AuditWriter,
        retriever: Option<Arc<dyn ContextRetriever>>,
        settings: ChatSettings,
    ) -> Self {
        let budgets = crate::budget::BudgetSlot::new(store.clone());
        Self {
            auth: caches.auth.clone(),
            throttle: AuthThrottle::new(
                limiter.clone(),
                audit.clone(),
                settings.auth_failures_per_minute,
            ),
            store,
            providers,
            limiter,
            audit,
            retriever,
            bots: caches.bots.clone(),
            public_bots: caches.public_bots.clone(),
            caches,
            touched: TtlCache::new(Duration::from_secs(60), 100_000),
            tasks: TaskTracker::new(),
            stop_streams: tokio_util::sync::CancellationToken::new(),
            settings,
            budgets,
        }
    }

    /// Uses `budgets` (e.g. with a Redis ledger) instead of the in-process
    /// default. Call before the first turn; later calls are ignored.
    pub fn set_budgets(&self, budgets: Arc<crate::budget::BudgetService>) {
        if !self.budgets.set(budgets) {
            tracing::warn!("budgets were set or used already: the new ones are ignored");
        }
    }

    /// The spending budgets.
    pub fn budgets(&self) -> &Arc<crate::budget::BudgetService> {
        self.budgets.get()
    }

    /// Where the budgets live (shared with the management service).
    pub fn budget_slot(&self) -> &crate::budget::BudgetSlot {
        &self.budgets
    }

    /// The built providers (shared with RAG).
    pub fn providers(&self) -> &Arc<Providers> {
        &self.providers
    }

    /// The caches, to invalidate after a change.
    pub fn caches(&self) -> &Caches {
        &self.caches
    }

    /// The provider built from a tenant's provider config (cached per
    /// config version), e.g. for embeddings.
    pub async fn provider_for_config(
        &self,
        tenant: TenantId,
        id: ProviderConfigId,
    ) -> Result<Arc<dyn Provider>, ChatError> {
        self.providers.get(tenant, id).await
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The rate limiter (for its [`RateLimiter::backend_failures`]).
    pub fn rate_limiter(&self) -> &Arc<dyn RateLimiter> {
        &self.limiter
    }

    /// The key authenticator (with its cache).
    pub fn authenticator(&self) -> &Authenticator {
        &self.auth
    }

    /// The audit writer.
    pub fn audit(&self) -> &AuditWriter {
        &self.audit
    }

    /// The master keyring.
    pub fn keyring(&self) -> &Keyring {
        self.providers.keyring()
    }

    /// The settings.
    pub fn settings(&self) -> &ChatSettings {
        &self.settings
    }

    /// Verifies a presented API key. A client IP that failed too often is
    /// refused (429) before the key is even looked at; a failure is
    /// counted for the IP's throttle and audit record
    /// ([`crate::auth::throttle`]).
    pub async fn authenticate(
        &self,
        presented: Option<&secrecy::SecretString>,
        ip: Option<&str>,
        request_id: Option<&str>,
    ) -> Result<Arc<Principal>, ChatError> {
        self.admit(ip, Credential::ApiKey, request_id).await?;
        let result = match presented {
            Some(k) => self.auth.authenticate(k).await.map_err(ChatError::from),
            None => Err(ChatError::Unauthorized(
                "missing API key: send Authorization: Bearer <key>".into(),
            )),
        };
        if let Err(e) = &result
            && !matches!(e, ChatError::Unavailable { .. })
        {
            self.throttle
                .failed(ip, Credential::ApiKey, e.code(), request_id)
                .await;
        }
        result
    }

    /// Checks the operator key (`expected`) like [`ChatService::authenticate`]
    /// checks tenant keys: throttled per IP, failures audited, compared in
    /// constant time.
    pub async fn authenticate_operator(
        &self,
        presented: Option<&secrecy::SecretString>,
        expected: &secrecy::SecretString,
        ip: Option<&str>,
        request_id: Option<&str>,
    ) -> Result<(), ChatError> {
        self.admit(ip, Credential::Operator, request_id).await?;
        match presented {
            Some(k) if crate::auth::secrets_equal(k, expected) => Ok(()),
            other => {
                let reason = if other.is_some() {
                    "wrong_key"
                } else {
                    "missing_key"
                };
                self.throttle
                    .failed(ip, Credential::Operator, reason, request_id)
                    .await;
                Err(ChatError::Unauthorized(
                    "send the operator key: Authorization: Bearer <CHATCORE_OPERATOR_KEY>".into(),
                ))
            }
        }
    }

    async fn admit(
        &self,
        ip: Option<&str>,
        credential: Credential,
        request_id: Option<&str>,
    ) -> Result<(), ChatError> {
        self.throttle
            .admit(ip, credential, request_id)
            .await
            .map_err(|retry_after| ChatError::RateLimited {
                scope: "auth_failures",
                retry_after,
            })
    }

    /// The failed-authentication throttle.
    pub fn auth_throttle(&self) -> &AuthThrottle {
        &self.throttle
    }

    /// Forgets cached state of a tenant (after a suspension, a limit change,
    /// a bot or provider change).
    pub fn invalidate_tenant(&self, tenant: TenantId) {
        self.budgets().invalidate(tenant);
        self.caches.invalidate_tenant(tenant);
    }

    /// Forgets a cached key (after a revocation).
    pub fn invalidate_key(&self, key: ApiKeyId) {
        self.caches.invalidate_key(key);
    }

    /// Waits for open streams to end, then flushes the audit log.
    ///
    /// Streams still open when `grace` is over are ended: each gets an
    /// `error` event (`unavailable`) and is stored as `cancelled`. Then the
    /// audit log and the store's queued writes are flushed.
    pub async fn shutdown(&self, grace: Duration) {
        self.tasks.close();
        if tokio::time::timeout(grace, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                open_streams = self.tasks.len(),
                "shutdown grace over: ending the open streams"
            );
            self.stop_streams.cancel();
            self.tasks.wait().await;
        }
        self.throttle.flush().await;
        self.audit.flush().await;
        if let Err(e) = self.store.flush().await {
            tracing::error!(error = %e, "could not flush the store's writes at shutdown");
        }
    }

    /// How many streamed turns are running.
    pub fn open_streams(&self) -> usize {
        self.tasks.len()
    }

    // ---- resolving bots and providers ----

    async fn provider_for(
        &self,
        tenant: TenantId,
        id: ProviderConfigId,
    ) -> Result<(Arc<dyn Provider>, ProviderConfig), ChatError> {
        self.providers.get_with_config(tenant, id).await
    }

    async fn load_entry(&self, bot: Bot, tenant: Tenant) -> Result<BotEntry, ChatError> {
        let scopes = self.store.list_scopes(tenant.id, bot.id).await?;
        let guard = Guardrails::from_scopes(&scopes).map_err(|e| {
            tracing::error!(bot = %bot.id, error = %e, "a stored scope does not parse");
            ChatError::internal("bot guardrails are misconfigured")
        })?;
        let (primary, cfg) = self.provider_for(tenant.id, bot.provider_id).await?;
        let model_hint = bot
            .model
            .clone()
            .or(cfg.default_model.clone())
            .unwrap_or_else(|| "gpt-4o-mini".into());
        let mut configs = vec![cfg.clone()];
        let provider: Arc<dyn Provider> = match bot.fallback_provider_id {
            Some(fb) => {
                let (fallback, fb_cfg) = self.provider_for(tenant.id, fb).await?;
                configs.push(fb_cfg);
                Arc::new(FallbackProvider::new(vec![
                    FallbackEntry::new(primary, bot.model.clone()),
                    FallbackEntry::new(fallback, None),
                ]))
            }
            None => primary,
        };
        let overrides = self.store.list_prices(tenant.id).await?;
        let prices = Arc::new(crate::pricing::BotPrices::new(
            &configs,
            bot.model.as_deref(),
            &overrides,
        ));
        Ok(BotEntry {
            bot,
            tenant,
            guard: Arc::new(guard),
            provider,
            model_hint,
            prices,
        })
    }

    async fn resolve(&self, caller: &Caller, bot_ref: &str) -> Result<BotEntry, ChatError> {
        match caller {
            Caller::Public { .. } => {
                if let Some(e) = self.public_bots.get(&bot_ref.to_string()) {
                    return Ok(e);
                }
                let bot = self.store.find_public_bot(bot_ref).await?;
                let tenant = self.store.get_tenant(bot.tenant_id).await?;
                let e = self.load_entry(bot, tenant).await?;
                self.public_bots.insert(bot_ref.to_string(), e.clone());
                Ok(e)
            }
            Caller::Key { principal, .. } => {
                let t = principal.tenant.id;
                let key = (t, bot_ref.to_string());
                if let Some(e) = self.bots.get(&key) {
                    return Ok(e);
                }
                let bot = match bot_ref.parse::<BotId>() {
                    Ok(id) => self.store.get_bot(t, id).await?,
                    Err(_) => self.store.get_bot_by_slug(t, bot_ref).await?,
                };
                let e = self.load_entry(bot, principal.tenant.clone()).await?;
                self.bots.insert(key, e.clone());
                Ok(e)
            }
        }
    }

    // ---- the turn, stage by stage ----

    /// Checks and consumes one limit; a rejection is audited.
    async fn limit(
        &self,
        who: &Who<'_>,
        key: String,
        quota: Option<Quota>,
        cost: u32,
        scope: &'static str,
    ) -> Result<(), ChatError> {
        let Some(q) = quota else { return Ok(()) };
        match self.limiter.check(&key, q, cost).await? {
            Decision::Allowed { .. } => Ok(()),
            Decision::Limited { retry_after } => {
                let mut r =
                    AuditRecord::new(Some(who.tenant), who.caller.actor(), "rate_limit.rejected");
                r.ip = who.caller.ip().map(str::to_string);
                r.request_id = who.request_id.map(str::to_string);
                r.metadata = serde_json::json!({"scope": scope, "retry_after_ms": retry_after.as_millis() as u64});
                self.audit.record(r).await;
                Err(ChatError::RateLimited { scope, retry_after })
            }
        }
    }

    fn quota(n: Option<i32>) -> Option<Quota> {
        n.filter(|n| *n > 0).map(|n| Quota::per_minute(n as u32))
    }

    /// Stage `limit`: requests per minute of the tenant's keys and the key,
    /// or of the tenant's public budget, the visitor and the bot. Nothing is stored for a refused request.
    async fn check_limits(&self, who: &Who<'_>, entry: &BotEntry) -> Result<(), ChatError> {
        let tenant = &entry.tenant;
        match who.caller {
            Caller::Key { principal, .. } => {
                let k = &principal.key;
                self.limit(
                    who,
                    format!("t:{}:rpm", tenant.id),
                    Self::quota(tenant.rate_limit_rpm),
                    1,
                    "tenant",
                )
                .await?;
                self.limit(
                    who,
                    format!("k:{}:rpm", k.id),
                    Self::quota(k.rate_limit_rpm),
                    1,
                    "api_key",
                )
                .await
            }
            Caller::Public { ip, visitor, .. } => {
                let bot = &entry.bot;
                // Visitors have the tenant's public budget, not its keys'.
                self.limit(
                    who,
                    format!("t:{}:public_rpm", tenant.id),
                    Self::quota(tenant.public_rate_limit_rpm)
                        .or(Self::quota(Some(self.settings.public_tenant_rpm as i32))),
                    1,
                    "tenant_public",
                )
                .await?;
                let visitor_rpm = entry
                    .guard
                    .visitor_rpm
                    .unwrap_or(self.settings.public_visitor_rpm);
                // A widget session is one visitor, whatever its IP (an
                // office behind one NAT is many visitors).
                let visitor = match visitor {
                    Some(v) => format!("s:{}", v.id),
                    None => ip.as_deref().unwrap_or("unknown").to_string(),
                };
                self.limit(
                    who,
                    format!("v:{}:{visitor}", bot.id),
                    Some(Quota::per_minute(visitor_rpm)),
                    1,
                    "visitor",
                )
                .await?;
                self.limit(
                    who,
                    format!("b:{}:rpm", bot.id),
                    Some(Quota::per_minute(self.settings.public_bot_rpm)),
                    1,
                    "bot",
                )
                .await
            }
        }
    }

    /// Stage `conversation`: the conversation to continue (it must be this
    /// bot's, this end user's, and public only if the caller is) and its
    /// recent history; a new conversation reads nothing.
    async fn conversation(
        &self,
        entry: &BotEntry,
        channel: Channel,
        input: &Validated<'_>,
    ) -> Result<(Option<Conversation>, Vec<Message>), ChatError> {
        let Some(id) = input.conversation_id else {
            return Ok((None, Vec::new()));
        };
        let c = self
            .owned_conversation(entry, channel, id, input.user_id)
            .await?;
        let history = self
            .store
            .recent_messages(entry.tenant.id, c.id, self.settings.history_limit)
            .await?;
        Ok((Some(c), history))
    }

    /// The conversation `id`, if the turn may continue it: it is this
    /// bot's, this end user's (when the turn names one), and public only if
    /// the caller is. Anything else is not found.
    async fn owned_conversation(
        &self,
        entry: &BotEntry,
        channel: Channel,
        id: ConversationId,
        user_id: Option<&str>,
    ) -> Result<Conversation, ChatError> {
        let c = self.store.get_conversation(entry.tenant.id, id).await?;
        let same_user = user_id.is_none() || c.end_user_id.as_deref() == user_id;
        let public_ok = channel == Channel::Api || c.channel == Channel::Public;
        if c.bot_id != entry.bot.id || !same_user || !public_ok {
            return Err(ChatError::NotFound("conversation"));
        }
        Ok(c)
    }

    /// Stage `retrieve`: context from the bot's datasets, if it has any.
    async fn retrieve(&self, entry: &BotEntry, message: &str) -> Result<Vec<Source>, ChatError> {
        if entry.bot.dataset_ids.is_empty() {
            return Ok(Vec::new());
        }
        match &self.retriever {
            Some(r) => {
                r.retrieve(
                    entry.tenant.id,
                    &entry.bot.dataset_ids,
                    message,
                    self.settings.rag_top_k,
                )
                .await
            }
            None => Ok(Vec::new()),
        }
    }

    /// Everything before the provider is called: validate, resolve,
    /// authorize, limit, conversation, retrieve, prompt, then the user's
    /// message stored (with the conversation and the pending answer).
    async fn prepare(&self, caller: Caller, input: ChatInput) -> Result<Turn, ChatError> {
        let started = Instant::now();
        let valid = validate(&self.settings, &input)?;
        let entry = self.resolve(&caller, valid.bot).await?;
        record_entry(&entry);
        let api_key_id = authorize(&entry, &caller, valid.message)?;
        let who = Who {
            caller: &caller,
            tenant: entry.tenant.id,
            request_id: input.request_id.as_deref(),
        };
        self.check_limits(&who, &entry).await?;
        let channel = match caller {
            Caller::Public { .. } => Channel::Public,
            Caller::Key { .. } => Channel::Api,
        };
        let (existing, history) = self.conversation(&entry, channel, &valid).await?;
        let sources = self.retrieve(&entry, valid.message).await?;
        let bot = &entry.bot;
        let prompt = build_prompt(
            &entry.model_hint,
            &bot.system_prompt,
            sources,
            &history,
            valid.message,
            bot.context_tokens.max(1) as usize,
        );
        // Tokens per minute: the prompt's estimate now; the rest is
        // settled with the provider's usage when the turn ends.
        self.limit(
            &who,
            format!("t:{}:tpm", entry.tenant.id),
            Self::quota(entry.tenant.rate_limit_tpm),
            prompt.tokens as u32,
            "tenant_tokens",
        )
        .await?;

        // The worst case is held on every budget that applies; a refused
        // turn stores nothing.
        let budget = self
            .reserve_budget(
                &entry,
                api_key_id,
                input.user_id.as_deref(),
                prompt.tokens as u32,
                bot.max_tokens.and_then(|m| u32::try_from(m).ok()),
            )
            .await?;

        // The user's words are stored before the provider is called.
        let conversation = match existing {
            Some(c) => TurnConversation::Existing(c.id),
            None => TurnConversation::New(NewConversation {
                bot_id: bot.id,
                end_user_id: input.user_id.clone(),
                title: Some(valid.message.chars().take(80).collect()),
                channel,
            }),
        };
        let (conversation, _user, assistant) = self
            .store
            .begin_turn(
                entry.tenant.id,
                NewTurn {
                    conversation,
                    user_content: valid.message.to_string(),
                    api_key_id,
                    provider: Some(entry.provider.kind().to_string()),
                    model: bot.model.clone(),
                    tool_results: Vec::new(),
                },
            )
            .await?;

        let mut request = ChatRequest::new(prompt.messages);
        request.model = bot.model.clone();
        request.temperature = bot.temperature;
        request.max_tokens = bot.max_tokens.and_then(|m| u32::try_from(m).ok());
        request.end_user_id = input.user_id.clone();
        self.touch(&caller).await;
        Ok(Turn {
            request_id: input.request_id,
            entry,
            caller,
            conversation,
            assistant: assistant.id,
            request,
            sources: prompt.sources,
            prompt_estimate: prompt.tokens as u32,
            started,
            span: tracing::Span::current(),
            budget,
        })
    }

    /// Stage `budget`: reserves the turn's worst case (the prompt's
    /// estimate and `max_tokens`, or the default cap, at the dearest price
    /// of the bot's providers) on every budget that applies to it.
    async fn reserve_budget(
        &self,
        entry: &BotEntry,
        key: Option<ApiKeyId>,
        end_user: Option<&str>,
        prompt_tokens: u32,
        max_tokens: Option<u32>,
    ) -> Result<Option<crate::budget::Hold>, ChatError> {
        let budgets = self.budgets();
        let out = max_tokens.unwrap_or(budgets.settings().default_max_tokens);
        let worst = entry
            .prices
            .worst()
            .map_or(0, |p| p.cost(prompt_tokens, 0, out));
        Ok(budgets
            .reserve(entry.tenant.id, entry.bot.id, key, end_user, worst)
            .await?)
    }

    async fn touch(&self, caller: &Caller) {
        if let Caller::Key { principal, .. } = caller {
            let k = &principal.key;
            if self.touched.get(&k.id).is_none() {
                self.touched.insert(k.id, ());
                let store = self.store.clone();
                let (t, id) = (k.tenant_id, k.id);
                // Off the request path, at most once a minute per key.
                tokio::spawn(async move {
                    if let Err(e) = store.touch_api_key(t, id, now()).await {
                        tracing::warn!(error = %e, "could not record an API key's last use");
                    }
                });
            }
        }
    }

    /// Usage counted by us: the prompt as sent, `completion` and the
    /// tool calls (names and arguments).
    fn estimate(&self, turn: &Turn, completion: &str, calls: &[ToolCall]) -> Usage {
        let prompt = count_message_tokens(&turn.entry.model_hint, &turn.request.messages);
        let completion_tokens = count_tokens(&turn.entry.model_hint, completion)
            + calls
                .iter()
                .map(|c| {
                    count_tokens(&turn.entry.model_hint, &c.name)
                        + count_tokens(&turn.entry.model_hint, &c.arguments)
                })
                .sum::<u32>();
        Usage {
            prompt_tokens: prompt,
            completion_tokens,
            total_tokens: prompt + completion_tokens,
            estimated: true,
            cached_tokens: 0,
        }
    }

    async fn audit_turn(
        &self,
        turn: &Turn,
        message: MessageId,
        action: &str,
        meta: serde_json::Value,
    ) {
        let mut r = AuditRecord::new(Some(turn.entry.tenant.id), turn.caller.actor(), action)
            .resource("message", message);
        r.request_id = turn.request_id.clone();
        r.ip = turn.caller.ip().map(str::to_string);
        r.metadata = meta;
        self.audit.record(r).await;
    }

    /// Settles the tenant's tokens per minute: the turn was charged its
    /// prompt estimate before the call; the rest of its real usage is
    /// charged now.
    async fn settle_tokens(&self, turn: &Turn, usage: &Usage) {
        let rest = usage.total_tokens.saturating_sub(turn.prompt_estimate);
        if rest == 0 {
            return;
        }
        if let Some(q) = Self::quota(turn.entry.tenant.rate_limit_tpm)
            && let Err(e) = self
                .limiter
                .charge(&format!("t:{}:tpm", turn.entry.tenant.id), q, rest)
                .await
        {
            tracing::warn!(error = %e, "could not charge tokens to the tenant's limit");
        }
    }

    /// Every way a turn ends: the outcome stored on the assistant message
    /// (with its usage, estimated where the provider gave none), the
    /// tenant's tokens settled, the audit record queued. `Err` when the
    /// outcome could not be stored.
    async fn finish(&self, turn: &Turn, mut outcome: Outcome) -> Result<Finished, ChatError> {
        let elapsed = turn.started.elapsed();
        let tool_calls = match &mut outcome {
            Outcome::Complete { tool_calls, .. } => std::mem::take(tool_calls),
            _ => Vec::new(),
        };
        let (status, text, reported, ttft, provider, model, finish_reason, error, action) =
            match outcome {
                Outcome::Complete {
                    content,
                    usage,
                    provider,
                    model,
                    finish_reason,
                    ttft,
                    tool_calls: _,
                } => (
                    MessageStatus::Complete,
                    content,
                    Some(usage),
                    Some(ttft.unwrap_or(elapsed)),
                    Some(provider),
                    Some(model),
                    Some(finish_reason),
                    None,
                    "chat.completed",
                ),
                Outcome::Failed {
                    partial,
                    error,
                    ttft,
                } => (
                    if partial.is_empty() {
                        MessageStatus::Error
                    } else {
                        MessageStatus::Incomplete
                    },
                    partial,
                    None,
                    ttft,
                    None,
                    None,
                    None,
                    Some(error),
                    "chat.failed",
                ),
                Outcome::Cancelled {
                    partial,
                    ttft,
                    reason,
                } => (
                    MessageStatus::Cancelled,
                    partial,
                    None,
                    ttft,
                    None,
                    None,
                    Some(reason.to_string()),
                    None,
                    "chat.cancelled",
                ),
            };
        // A turn that produced text or tool calls is never recorded at
        // zero tokens.
        let produced = !text.is_empty() || !tool_calls.is_empty();
        let usage = match reported {
            Some(u) if u.total_tokens > 0 || !produced => Some(u),
            _ if !produced => None,
            _ => Some(self.estimate(turn, &text, &tool_calls)),
        };
        // The cost at the price in force for who answered (a failed or
        // cancelled turn: the bot's provider and model).
        let cost = usage.map(|u| {
            let kind = provider.as_deref().unwrap_or(turn.entry.provider.kind());
            let m = model
                .as_deref()
                .or(turn.request.model.as_deref())
                .unwrap_or(&turn.entry.model_hint);
            crate::pricing::Cost::of(
                turn.entry.prices.price(kind, m),
                u.prompt_tokens,
                u.cached_tokens,
                u.completion_tokens,
            )
        });
        let done = MessageCompletion {
            content: text,
            status: Some(status),
            usage: usage.map(to_domain_usage),
            response_time_ms: Some(ms(elapsed)),
            time_to_first_token_ms: ttft.map(ms),
            provider: provider.clone(),
            model: model.clone(),
            finish_reason: finish_reason.clone(),
            error: error.as_ref().map(|e| e.code().to_string()),
            source_chunk_ids: turn.sources.iter().map(|s| s.chunk_id).collect(),
            tool_calls,
            cost,
        };
        if let Some(e) = &error {
            // The detail (redacted) is for the log, tied to the request id;
            // the caller gets `e.public_message()`.
            tracing::warn!(request_id = turn.request_id.as_deref().unwrap_or(""), tenant = %turn.entry.tenant.id, error = %e, "chat turn failed at the provider");
        }
        let tenant = turn.entry.tenant.id;
        let stored = self
            .store
            .finish_message(tenant, turn.assistant, done.clone())
            .await;
        if let Err(StoreError::Unavailable { .. }) = &stored {
            // The writer retried once already; the turn must not stay
            // pending while this instance lives: keep trying a while.
            self.close_later(tenant, turn.assistant, done);
        }
        let usage = usage.unwrap_or_default();
        let cost = cost.unwrap_or_default();
        // Spent moves by exactly what the message records.
        if let Some(hold) = &turn.budget {
            self.budgets().settle(hold, cost.micros).await;
        }
        let span = &turn.span;
        span.record("status", status.as_str());
        if let Some(m) = &model {
            span.record("model", m.as_str());
        }
        // Signed: OpenTelemetry's integers are i64 (a u64 is exported as text).
        span.record("prompt_tokens", i64::from(usage.prompt_tokens));
        span.record("completion_tokens", i64::from(usage.completion_tokens));
        span.record("total_tokens", i64::from(usage.total_tokens));
        if let Some(t) = ttft {
            span.record("ttft_ms", i64::from(ms(t)));
        }
        self.settle_tokens(turn, &usage).await;
        let mut meta = serde_json::json!({"bot_id": turn.entry.bot.id});
        if let Some(e) = &error {
            meta["code"] = e.code().into();
        }
        if status == MessageStatus::Complete {
            meta["total_tokens"] = usage.total_tokens.into();
            meta["provider"] = provider.clone().into();
        }
        if cost.micros > 0 {
            meta["cost_micros"] = cost.micros.into();
        }
        self.audit_turn(turn, turn.assistant, action, meta).await;
        let message = stored.map_err(|e| {
            tracing::error!(error = %e, message = %turn.assistant, "could not store a turn's outcome");
            ChatError::from(e)
        })?;
        Ok(Finished {
            message,
            usage,
            elapsed,
            ttft: ttft.unwrap_or(elapsed),
            cost,
        })
    }

    /// Stores a turn's outcome in the background once the database is
    /// back (tried for about a minute; after that the orphan sweep of the
    /// next instance start closes it).
    fn close_later(&self, tenant: TenantId, id: MessageId, done: MessageCompletion) {
        let store = self.store.clone();
        tokio::spawn(async move {
            let mut wait = Duration::from_millis(250);
            for _ in 0..8 {
                tokio::time::sleep(wait).await;
                match store.finish_message(tenant, id, done.clone()).await {
                    Ok(_) => return,
                    Err(StoreError::Unavailable { .. }) => {
                        wait = (wait * 2).min(Duration::from_secs(15))
                    }
                    Err(e) => {
                        tracing::error!(error = %e, message = %id, "could not close a turn");
                        return;
                    }
                }
            }
            tracing::error!(message = %id, "a turn stays pending: the database did not come back");
        });
    }

    /// Closes turns left `pending` by instances that are gone (a process
    /// that died mid-answer): each becomes `incomplete` with the text it had
    /// streamed, estimated tokens, and its place in usage. Returns how many
    /// were closed. The server runs it at start and then periodically.
    pub async fn recover_orphaned_turns(&self) -> Result<usize, ChatError> {
        let mut closed = 0;
        loop {
            let orphans = self.store.orphaned_turns(500).await?;
            if orphans.is_empty() {
                return Ok(closed);
            }
            let n = orphans.len();
            for o in orphans {
                let m = &o.message;
                let model = m.model.as_deref().unwrap_or("gpt-4o-mini");
                let prompt_tokens = o
                    .prompt
                    .as_deref()
                    .map(|p| count_tokens(model, p))
                    .unwrap_or(0);
                let completion_tokens = count_tokens(model, &m.content);
                let done = MessageCompletion {
                    content: m.content.clone(),
                    status: Some(MessageStatus::Incomplete),
                    usage: Some(to_domain_usage(Usage {
                        prompt_tokens,
                        completion_tokens,
                        total_tokens: prompt_tokens + completion_tokens,
                        estimated: true,
                        cached_tokens: 0,
                    })),
                    provider: m.provider.clone(),
                    model: m.model.clone(),
                    finish_reason: Some("instance_lost".into()),
                    error: Some("unavailable".into()),
                    ..Default::default()
                };
                self.store.finish_message(m.tenant_id, m.id, done).await?;
                let mut r = AuditRecord::new(
                    Some(m.tenant_id),
                    Actor {
                        kind: ActorKind::Operator,
                        id: Some("recovery".into()),
                    },
                    "chat.recovered",
                )
                .resource("message", m.id);
                r.metadata = serde_json::json!({"conversation_id": m.conversation_id});
                self.audit.record(r).await;
                closed += 1;
            }
            if n < 500 {
                return Ok(closed);
            }
        }
    }

    /// One complete (not streamed) turn.
    pub async fn chat(&self, caller: Caller, input: ChatInput) -> Result<ChatReply, ChatError> {
        use tracing::Instrument as _;
        async {
            let turn = self.prepare(caller, input).await?;
            self.run_complete(turn).await
        }
        .instrument(chat_span())
        .await
    }

    /// One streamed turn. The provider is asked (with retries and fallback)
    /// until its first token before this returns, so a failure before any
    /// text is an `Err` (a proper HTTP error), not an event. After that, the
    /// events come from a task that keeps going if the receiver is slow and
    /// stops the upstream call when the receiver is dropped (the client went
    /// away): the partial answer is then stored as `cancelled`.
    pub async fn chat_stream(
        self: &Arc<Self>,
        caller: Caller,
        input: ChatInput,
    ) -> Result<mpsc::Receiver<TurnEvent>, ChatError> {
        use tracing::Instrument as _;
        async {
            let turn = self.prepare(caller, input).await?;
            self.run_stream(turn).await
        }
        .instrument(chat_span())
        .await
    }

    /// Reads the provider's stream to the client until it ends, the client
    /// goes away, or the shutdown grace is over; then finishes the turn.
    async fn drive(&self, turn: Turn, mut stream: ChatStream, tx: mpsc::Sender<TurnEvent>) {
        let mut text = String::new();
        let mut calls = ToolCallBuffer::default();
        let mut first_token: Option<Duration> = None;
        let mut saved = Instant::now();
        let (outcome, error_event) = loop {
            let next = tokio::select! {
                biased;
                _ = tx.closed() => Step::ClientGone,
                _ = self.stop_streams.cancelled() => Step::Shutdown,
                ev = stream.next() => Step::Event(ev),
            };
            match next {
                // The client went away: stop the upstream call (dropping the
                // stream closes its connection) and keep what was generated.
                Step::ClientGone => {
                    break (
                        Outcome::Cancelled {
                            partial: std::mem::take(&mut text),
                            ttft: first_token,
                            reason: "client_disconnected",
                        },
                        None,
                    );
                }
                Step::Shutdown => {
                    break (
                        Outcome::Cancelled {
                            partial: std::mem::take(&mut text),
                            ttft: first_token,
                            reason: "shutdown",
                        },
                        Some(TurnEvent::Error {
                            code: "unavailable",
                            message: "the server is shutting down".into(),
                        }),
                    );
                }
                Step::Event(Some(Ok(ChatEvent::Delta(d)))) => {
                    if d.is_empty() {
                        continue;
                    }
                    first_token.get_or_insert_with(|| turn.started.elapsed());
                    text.push_str(&d);
                    // What the user has seen reaches the database with the
                    // writer's batches, about once a second.
                    if saved.elapsed() >= PARTIAL_EVERY {
                        saved = Instant::now();
                        self.store.record_partial(
                            turn.entry.tenant.id,
                            turn.assistant,
                            text.clone(),
                        );
                    }
                    // A send to a closed channel is seen as a disconnect on
                    // the next turn of the loop.
                    let _ = tx.send(TurnEvent::Delta(d)).await;
                }
                // Only turns that offer tools get calls; a provider that
                // sends one to a turn without tools is not followed.
                Step::Event(Some(Ok(ChatEvent::ToolCall(d)))) => {
                    if turn.request.tools.is_empty() {
                        continue;
                    }
                    first_token.get_or_insert_with(|| turn.started.elapsed());
                    calls.push(&d);
                    let _ = tx.send(TurnEvent::ToolCall(d)).await;
                }
                Step::Event(Some(Ok(ChatEvent::Done(end)))) => {
                    break (
                        Outcome::Complete {
                            content: std::mem::take(&mut text),
                            usage: end.usage,
                            provider: end.provider,
                            model: end.model,
                            finish_reason: end.finish_reason.as_str().to_string(),
                            ttft: first_token,
                            tool_calls: std::mem::take(&mut calls).finish(),
                        },
                        None,
                    );
                }
                Step::Event(Some(Err(e))) => {
                    let partial = match &e {
                        ProviderError::StreamInterrupted { partial, .. }
                            if partial.len() > text.len() =>
                        {
                            partial.clone()
                        }
                        _ => std::mem::take(&mut text),
                    };
                    let err = ChatError::Provider(e);
                    let event = TurnEvent::Error {
                        code: err.code(),
                        message: err.public_message(),
                    };
                    break (
                        Outcome::Failed {
                            partial,
                            error: err,
                            ttft: first_token,
                        },
                        Some(event),
                    );
                }
                // Ended without a final event: keep the text, say so.
                Step::Event(None) => {
                    let err = ChatError::Provider(ProviderError::StreamInterrupted {
                        provider: turn.entry.provider.kind().to_string(),
                        partial: text.clone(),
                        cause: None,
                    });
                    let event = TurnEvent::Error {
                        code: err.code(),
                        message: err.public_message(),
                    };
                    break (
                        Outcome::Failed {
                            partial: std::mem::take(&mut text),
                            error: err,
                            ttft: first_token,
                        },
                        Some(event),
                    );
                }
            }
        };
        let complete = matches!(outcome, Outcome::Complete { .. });
        // A stream that did not complete is dropped now: that stops the
        // upstream call.
        let rest = complete.then_some(stream);
        let finished = self.finish(&turn, outcome).await;
        let event = match (finished, error_event) {
            (Ok(done), None) if complete => Some(TurnEvent::Done(Box::new(StreamDone {
                usage: done.usage.into(),
                finish_reason: done.message.finish_reason.clone().unwrap_or_default(),
                response_time_ms: done.elapsed.as_millis() as u64,
                time_to_first_token_ms: done.ttft.as_millis() as u64,
                provider: done.message.provider.clone().unwrap_or_default(),
                model: done.message.model.clone().unwrap_or_default(),
                sources: turn.sources.clone(),
                tenant_id: turn.entry.tenant.id,
                cost: done.cost.into(),
            }))),
            (Err(e), None) if complete => Some(TurnEvent::Error {
                code: e.code(),
                message: e.public_message(),
            }),
            (_, event) => event,
        };
        if let Some(ev) = event {
            let _ = tx.send(ev).await;
        }
        if let Some(mut stream) = rest {
            // Read the stream to its end ([DONE], connection close) so that
            // its connection returns to the provider's pool.
            let drain = async { while stream.next().await.is_some() {} };
            let _ = tokio::time::timeout(Duration::from_secs(2), drain).await;
        }
    }
}

/// How often a stream's text so far is handed to the store.
const PARTIAL_EVERY: Duration = Duration::from_secs(1);

/// What the stream loop saw next.
enum Step {
    ClientGone,
    Shutdown,
    Event(Option<Result<ChatEvent, ProviderError>>),
}

/// How a turn ended, for [`ChatService::finish`].
enum Outcome {
    /// The provider answered in full.
    Complete {
        content: String,
        usage: Usage,
        provider: String,
        model: String,
        finish_reason: String,
        /// Time to the first token of a stream.
        ttft: Option<Duration>,
        /// The tools the model called.
        tool_calls: Vec<ToolCall>,
    },
    /// The provider failed, before or after some text.
    Failed {
        partial: String,
        error: ChatError,
        ttft: Option<Duration>,
    },
    /// The client went away, or the server's shutdown grace ended.
    Cancelled {
        partial: String,
        ttft: Option<Duration>,
        reason: &'static str,
    },
}

/// A finished turn as stored.
struct Finished {
    message: Message,
    usage: Usage,
    elapsed: Duration,
    ttft: Duration,
    cost: crate::pricing::Cost,
}

/// A turn's input, checked (stage `validate`).
#[derive(Debug)]
struct Validated<'a> {
    bot: &'a str,
    message: &'a str,
    conversation_id: Option<ConversationId>,
    user_id: Option<&'a str>,
}

/// Stage `validate`: the input's own rules, before anything is read.
fn validate<'a>(settings: &ChatSettings, input: &'a ChatInput) -> Result<Validated<'a>, ChatError> {
    input.check_text()?;
    let message = input.message.trim();
    if message.is_empty() {
        return Err(ChatError::InvalidRequest(
            "message: must not be empty".into(),
        ));
    }
    if message.chars().count() > settings.max_message_chars {
        return Err(ChatError::InvalidRequest(format!(
            "message: longer than {} characters",
            settings.max_message_chars
        )));
    }
    let bot = input.bot.trim();
    if bot.is_empty() {
        return Err(ChatError::InvalidRequest(
            "bot_id: must not be empty".into(),
        ));
    }
    if let Some(u) = &input.user_id
        && (u.is_empty() || u.len() > 256)
    {
        return Err(ChatError::InvalidRequest(
            "user_id: must be 1 to 256 characters".into(),
        ));
    }
    let conversation_id = match &input.conversation_id {
        Some(c) => Some(
            c.parse::<ConversationId>()
                .map_err(|_| ChatError::InvalidRequest("conversation_id: not a valid id".into()))?,
        ),
        None => None,
    };
    Ok(Validated {
        bot,
        message,
        conversation_id,
        user_id: input.user_id.as_deref(),
    })
}

/// Stage `authorize`: may this caller use this bot now, and does the
/// message pass its guardrails. Returns the key to record on the turn.
fn authorize(
    entry: &BotEntry,
    caller: &Caller,
    message: &str,
) -> Result<Option<ApiKeyId>, ChatError> {
    let (bot, tenant) = (&entry.bot, &entry.tenant);
    let feature_off = |f: &str| tenant.features.get(f).and_then(|v| v.as_bool()) == Some(false);
    if feature_off("chat") {
        return Err(ChatError::FeatureDisabled(
            "chat is disabled for this tenant".into(),
        ));
    }
    let key = match caller {
        Caller::Public {
            origin, visitor, ..
        } => {
            if let Some(v) = visitor
                && v.bot != bot.id
            {
                return Err(ChatError::Unauthorized(
                    "the visitor token is for another bot".into(),
                ));
            }
            if tenant.status != TenantStatus::Active || bot.status != BotStatus::Active {
                // A public visitor learns nothing about why.
                return Err(ChatError::NotFound("bot"));
            }
            if feature_off("public_chat") {
                return Err(ChatError::FeatureDisabled(
                    "public chat is disabled for this tenant".into(),
                ));
            }
            if !entry.guard.origin_allowed(origin.as_deref()) {
                return Err(ChatError::Forbidden(
                    "origin not allowed for this bot".into(),
                ));
            }
            None
        }
        Caller::Key { principal, .. } => {
            let key = &principal.key;
            if !key.allows(Permission::Chat) {
                return Err(ChatError::Forbidden(
                    "this API key lacks the chat permission".into(),
                ));
            }
            if (!key.bot_ids.is_empty() && !key.bot_ids.contains(&bot.id))
                || !entry.guard.key_allowed(key.id)
            {
                return Err(ChatError::Forbidden(
                    "this API key may not use this bot".into(),
                ));
            }
            if bot.status != BotStatus::Active {
                return Err(ChatError::Forbidden("bot is disabled".into()));
            }
            Some(key.id)
        }
    };
    entry
        .guard
        .check_message(message)
        .map_err(|v| ChatError::GuardrailBlocked(v.to_string()))?;
    Ok(key)
}

fn ms(d: Duration) -> i32 {
    d.as_millis().min(i32::MAX as u128) as i32
}

fn to_domain_usage(u: Usage) -> TokenUsage {
    let c = |n: u32| n.min(i32::MAX as u32) as i32;
    TokenUsage {
        prompt_tokens: c(u.prompt_tokens),
        completion_tokens: c(u.completion_tokens),
        total_tokens: c(u.total_tokens),
        estimated: u.estimated,
    }
}
