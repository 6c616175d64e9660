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

mod error;
pub mod guard;
pub mod prompt;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::StreamExt;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_util::task::TaskTracker;

pub use error::ChatError;
pub use guard::{GuardViolation, Guardrails};
pub use prompt::{Prompt, Source, build_prompt};

use crate::audit::AuditWriter;
use crate::auth::throttle::{AuthThrottle, Credential};
use crate::auth::{Authenticator, Principal};
use crate::cache::TtlCache;
use crate::crypto::Keyring;
use crate::domain::*;
use crate::provider::tokens::count_tokens;
use crate::provider::{
    ChatEvent, ChatRequest, ChatStream, FallbackEntry, FallbackProvider, Provider, ProviderError,
    ProviderRegistry, ProviderSpec, Usage, await_first_token,
};
use crate::ratelimit::{Decision, Quota, RateLimiter};
use crate::store::{MessageCompletion, NewConversation, NewTurn, Store, TurnConversation};

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
}

impl From<Usage> for UsageReply {
    fn from(u: Usage) -> Self {
        Self {
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
            total_tokens: u.total_tokens,
            estimated: u.estimated,
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
    prompt_tokens: usize,
    started: Instant,
    request_id: Option<String>,
}

/// Built providers by config, with the config's `updated_at` (a rotated key
/// or changed URL rebuilds it; an unchanged one reuses its connection pool).
type ProviderCache =
    Mutex<HashMap<ProviderConfigId, (chrono::DateTime<chrono::Utc>, Arc<dyn Provider>)>>;

/// The chat engine. Build one per process and share it (`Arc`).
pub struct ChatService {
    store: Arc<dyn Store>,
    registry: Arc<ProviderRegistry>,
    keyring: Keyring,
    limiter: Arc<dyn RateLimiter>,
    audit: AuditWriter,
    auth: Authenticator,
    throttle: AuthThrottle,
    settings: ChatSettings,
    /// Weak: the retriever (RAG) holds the service, not the reverse.
    retriever: std::sync::OnceLock<std::sync::Weak<dyn ContextRetriever>>,
    bots: TtlCache<(TenantId, String), BotEntry>,
    public_bots: TtlCache<String, BotEntry>,
    providers: ProviderCache,
    touched: TtlCache<ApiKeyId, ()>,
    tasks: TaskTracker,
}

impl std::fmt::Debug for ChatService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatService")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl ChatService {
    /// A chat service over `store`, building providers with `registry` and
    /// opening provider keys with `keyring`.
    pub fn new(
        store: Arc<dyn Store>,
        registry: Arc<ProviderRegistry>,
        keyring: Keyring,
        limiter: Arc<dyn RateLimiter>,
        audit: AuditWriter,
        settings: ChatSettings,
    ) -> Self {
        let ttl = settings.cache_ttl;
        Self {
            auth: Authenticator::new(store.clone(), ttl),
            throttle: AuthThrottle::new(
                limiter.clone(),
                audit.clone(),
                settings.auth_failures_per_minute,
            ),
            store,
            registry,
            keyring,
            limiter,
            audit,
            retriever: std::sync::OnceLock::new(),
            bots: TtlCache::new(ttl, 10_000),
            public_bots: TtlCache::new(ttl, 10_000),
            providers: Mutex::new(HashMap::new()),
            touched: TtlCache::new(Duration::from_secs(60), 100_000),
            tasks: TaskTracker::new(),
            settings,
        }
    }

    /// Plugs in retrieval for bots with datasets (once; later calls are
    /// ignored). The service keeps a weak reference.
    pub fn set_retriever(&self, r: &Arc<dyn ContextRetriever>) {
        let _ = self.retriever.set(Arc::downgrade(r));
    }

    /// The provider built from a tenant's provider config (cached per
    /// config version), e.g. for embeddings.
    pub async fn provider_for_config(
        &self,
        tenant: TenantId,
        id: ProviderConfigId,
    ) -> Result<Arc<dyn Provider>, ChatError> {
        Ok(self.provider_for(tenant, id).await?.0)
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
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
        &self.keyring
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
            && !matches!(e, ChatError::Unavailable(_))
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
        self.auth.invalidate_tenant(tenant);
        self.bots.remove_where(|(t, _), _| *t == tenant);
        self.public_bots.remove_where(|_, e| e.tenant.id == tenant);
    }

    /// Forgets a cached key (after a revocation).
    pub fn invalidate_key(&self, key: ApiKeyId) {
        self.auth.invalidate_key(key);
    }

    /// Waits for open streams to end, then flushes the audit log.
    pub async fn shutdown(&self) {
        self.tasks.close();
        self.tasks.wait().await;
        self.throttle.flush().await;
        self.audit.flush().await;
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
        let cfg = self.store.get_provider_config(tenant, id).await?;
        if !cfg.enabled {
            return Err(ChatError::Forbidden(
                "the provider configuration is disabled".into(),
            ));
        }
        if let Some((at, p)) = self
            .providers
            .lock()
            .expect("provider cache poisoned")
            .get(&id)
            && *at == cfg.updated_at
        {
            return Ok((p.clone(), cfg));
        }
        let mut spec = ProviderSpec::new(cfg.provider.clone());
        spec.api_key = match &cfg.api_key {
            Some(sealed) => Some(self.keyring.open(tenant, sealed).map_err(|e| {
                tracing::error!(provider_config = %id, error = %e, "cannot open a stored provider key");
                ChatError::Internal("provider key cannot be decrypted".into())
            })?),
            None => None,
        };
        spec.base_url = cfg.base_url.clone();
        spec.default_model = cfg.default_model.clone();
        spec.timeouts = self.settings.timeouts;
        spec.retry = self.settings.retry;
        spec.egress = self.settings.egress.clone();
        let p = self.registry.build(&spec).map_err(ChatError::Provider)?;
        self.providers
            .lock()
            .expect("provider cache poisoned")
            .insert(id, (cfg.updated_at, p.clone()));
        Ok((p, cfg))
    }

    async fn load_entry(&self, bot: Bot, tenant: Tenant) -> Result<BotEntry, ChatError> {
        let scopes = self.store.list_scopes(tenant.id, bot.id).await?;
        let guard = Guardrails::from_scopes(&scopes).map_err(|e| {
            tracing::error!(bot = %bot.id, error = %e, "a stored scope does not parse");
            ChatError::Internal("bot guardrails are misconfigured".into())
        })?;
        let (primary, cfg) = self.provider_for(tenant.id, bot.provider_id).await?;
        let model_hint = bot
            .model
            .clone()
            .or(cfg.default_model.clone())
            .unwrap_or_else(|| "gpt-4o-mini".into());
        let provider: Arc<dyn Provider> = match bot.fallback_provider_id {
            Some(fb) => {
                let (fallback, _) = self.provider_for(tenant.id, fb).await?;
                Arc::new(FallbackProvider::new(vec![
                    FallbackEntry::new(primary, bot.model.clone()),
                    FallbackEntry::new(fallback, None),
                ]))
            }
            None => primary,
        };
        Ok(BotEntry {
            bot,
            tenant,
            guard: Arc::new(guard),
            provider,
            model_hint,
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

    // ---- the turn ----

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

    async fn prepare(&self, caller: Caller, input: ChatInput) -> Result<Turn, ChatError> {
        let started = Instant::now();
        input.check_text()?;
        let message = input.message.trim();
        if message.is_empty() {
            return Err(ChatError::InvalidRequest(
                "message: must not be empty".into(),
            ));
        }
        if message.chars().count() > self.settings.max_message_chars {
            return Err(ChatError::InvalidRequest(format!(
                "message: longer than {} characters",
                self.settings.max_message_chars
            )));
        }
        if input.bot.trim().is_empty() {
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
            Some(c) => Some(c.parse::<ConversationId>().map_err(|_| {
                ChatError::InvalidRequest("conversation_id: not a valid id".into())
            })?),
            None => None,
        };

        let entry = self.resolve(&caller, input.bot.trim()).await?;
        let (bot, tenant) = (&entry.bot, &entry.tenant);
        let feature_off = |f: &str| tenant.features.get(f).and_then(|v| v.as_bool()) == Some(false);
        if feature_off("chat") {
            return Err(ChatError::FeatureDisabled(
                "chat is disabled for this tenant".into(),
            ));
        }
        let api_key_id = match &caller {
            Caller::Public { origin, .. } => {
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

        // Limits: nothing is stored for a refused request.
        let who = Who {
            caller: &caller,
            tenant: tenant.id,
            request_id: input.request_id.as_deref(),
        };
        match &caller {
            Caller::Key { principal, .. } => {
                let k = &principal.key;
                self.limit(
                    &who,
                    format!("t:{}:rpm", tenant.id),
                    Self::quota(tenant.rate_limit_rpm),
                    1,
                    "tenant",
                )
                .await?;
                self.limit(
                    &who,
                    format!("k:{}:rpm", k.id),
                    Self::quota(k.rate_limit_rpm),
                    1,
                    "api_key",
                )
                .await?;
            }
            Caller::Public { ip, .. } => {
                // Visitors have the tenant's public budget, not its keys'.
                self.limit(
                    &who,
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
                let visitor = ip.as_deref().unwrap_or("unknown");
                self.limit(
                    &who,
                    format!("v:{}:{visitor}", bot.id),
                    Some(Quota::per_minute(visitor_rpm)),
                    1,
                    "visitor",
                )
                .await?;
                self.limit(
                    &who,
                    format!("b:{}:rpm", bot.id),
                    Some(Quota::per_minute(self.settings.public_bot_rpm)),
                    1,
                    "bot",
                )
                .await?;
            }
        }

        // The conversation.
        let channel = match caller {
            Caller::Public { .. } => Channel::Public,
            Caller::Key { .. } => Channel::Api,
        };
        let existing = match conversation_id {
            Some(id) => {
                let c = self.store.get_conversation(tenant.id, id).await?;
                let same_user = input.user_id.is_none() || c.end_user_id == input.user_id;
                let public_ok = channel == Channel::Api || c.channel == Channel::Public;
                if c.bot_id != bot.id || !same_user || !public_ok {
                    return Err(ChatError::NotFound("conversation"));
                }
                Some(c)
            }
            None => None,
        };
        let history = match &existing {
            Some(c) => {
                self.store
                    .recent_messages(tenant.id, c.id, self.settings.history_limit)
                    .await?
            }
            None => Vec::new(),
        };

        let retriever = self.retriever.get().and_then(|w| w.upgrade());
        let sources = match (&retriever, bot.dataset_ids.is_empty()) {
            (Some(r), false) => {
                r.retrieve(
                    tenant.id,
                    &bot.dataset_ids,
                    message,
                    self.settings.rag_top_k,
                )
                .await?
            }
            _ => Vec::new(),
        };
        let prompt = build_prompt(
            &entry.model_hint,
            &bot.system_prompt,
            sources,
            &history,
            message,
            bot.context_tokens.max(1) as usize,
        );

        // Tokens per minute: the prompt is known now; the completion is
        // charged when it is.
        self.limit(
            &who,
            format!("t:{}:tpm", tenant.id),
            Self::quota(tenant.rate_limit_tpm),
            prompt.tokens as u32,
            "tenant_tokens",
        )
        .await?;

        // The user's words are stored before the provider is called, with
        // the conversation and the (pending) assistant message, in one
        // transaction.
        let conversation = match existing {
            Some(c) => TurnConversation::Existing(c.id),
            None => TurnConversation::New(NewConversation {
                bot_id: bot.id,
                end_user_id: input.user_id.clone(),
                title: Some(message.chars().take(80).collect()),
                channel,
            }),
        };
        let (conversation, _user, assistant) = self
            .store
            .begin_turn(
                tenant.id,
                NewTurn {
                    conversation,
                    user_content: message.to_string(),
                    api_key_id,
                    provider: Some(entry.provider.kind().to_string()),
                    model: bot.model.clone(),
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
            prompt_tokens: prompt.tokens,
            started,
        })
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

    fn estimate(&self, turn: &Turn, completion: &str) -> Usage {
        let completion_tokens = count_tokens(&turn.entry.model_hint, completion);
        let prompt = turn.prompt_tokens as u32;
        Usage {
            prompt_tokens: prompt,
            completion_tokens,
            total_tokens: prompt + completion_tokens,
            estimated: true,
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

    async fn charge_tokens(&self, turn: &Turn, completion_tokens: u32) {
        if let Some(q) = Self::quota(turn.entry.tenant.rate_limit_tpm)
            && let Err(e) = self
                .limiter
                .charge(
                    &format!("t:{}:tpm", turn.entry.tenant.id),
                    q,
                    completion_tokens,
                )
                .await
        {
            tracing::warn!(error = %e, "could not charge tokens to the tenant's limit");
        }
    }

    /// Records a provider failure on the assistant message and the audit log.
    async fn fail(&self, turn: &Turn, msg: MessageId, partial: String, e: &ChatError) {
        let status = if partial.is_empty() {
            MessageStatus::Error
        } else {
            MessageStatus::Incomplete
        };
        let usage = (!partial.is_empty()).then(|| self.estimate(turn, &partial));
        let done = MessageCompletion {
            content: partial,
            status: Some(status),
            usage: usage.map(to_domain_usage),
            response_time_ms: Some(ms(turn.started.elapsed())),
            error: Some(e.code().to_string()),
            ..Default::default()
        };
        // The detail (redacted) is for the log, tied to the request id;
        // the caller gets `e.public_message()`.
        tracing::warn!(request_id = turn.request_id.as_deref().unwrap_or(""), tenant = %turn.entry.tenant.id, error = %e, "chat turn failed at the provider");
        if let Err(se) = self
            .store
            .finish_message(turn.entry.tenant.id, msg, done)
            .await
        {
            tracing::error!(error = %se, "could not record a failed assistant message");
        }
        self.audit_turn(
            turn,
            msg,
            "chat.failed",
            serde_json::json!({"code": e.code(), "bot_id": turn.entry.bot.id}),
        )
        .await;
    }

    /// One complete (not streamed) turn.
    pub async fn chat(&self, caller: Caller, input: ChatInput) -> Result<ChatReply, ChatError> {
        let turn = self.prepare(caller, input).await?;
        let msg = turn.assistant;
        let result = turn.entry.provider.complete(&turn.request).await;
        let resp = match result {
            Ok(r) => r,
            Err(e) => {
                let e = ChatError::Provider(e);
                self.fail(&turn, msg, String::new(), &e).await;
                return Err(e);
            }
        };
        let elapsed = turn.started.elapsed();
        let usage = if resp.usage.total_tokens == 0 && !resp.content.is_empty() {
            self.estimate(&turn, &resp.content)
        } else {
            resp.usage
        };
        let tenant = turn.entry.tenant.id;
        self.store
            .finish_message(
                tenant,
                msg,
                MessageCompletion {
                    content: resp.content.clone(),
                    status: Some(MessageStatus::Complete),
                    usage: Some(to_domain_usage(usage)),
                    response_time_ms: Some(ms(elapsed)),
                    time_to_first_token_ms: Some(ms(elapsed)),
                    provider: Some(resp.provider.clone()),
                    model: Some(resp.model.clone()),
                    finish_reason: Some(resp.finish_reason.as_str().to_string()),
                    error: None,
                    source_chunk_ids: turn.sources.iter().map(|s| s.chunk_id).collect(),
                },
            )
            .await?;
        self.charge_tokens(&turn, usage.completion_tokens).await;
        self.audit_turn(
            &turn,
            msg,
            "chat.completed",
            serde_json::json!({"bot_id": turn.entry.bot.id, "total_tokens": usage.total_tokens, "provider": resp.provider}),
        )
        .await;
        Ok(ChatReply {
            conversation_id: turn.conversation.id,
            message_id: msg,
            bot_id: turn.entry.bot.id,
            content: resp.content,
            provider: resp.provider,
            model: resp.model,
            finish_reason: resp.finish_reason.as_str().to_string(),
            usage: usage.into(),
            response_time_ms: elapsed.as_millis() as u64,
            sources: turn.sources,
            tenant_id: tenant,
        })
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
        let turn = self.prepare(caller, input).await?;
        let msg = turn.assistant;
        let opened = match turn.entry.provider.stream(&turn.request).await {
            Ok(s) => await_first_token(s).await,
            Err(e) => Err(e),
        };
        let stream = match opened {
            Ok(s) => s,
            Err(e) => {
                let e = ChatError::Provider(e);
                self.fail(&turn, msg, String::new(), &e).await;
                return Err(e);
            }
        };
        let (tx, rx) = mpsc::channel(64);
        let _ = tx.try_send(TurnEvent::Start {
            conversation_id: turn.conversation.id,
            message_id: msg,
        });
        let this = self.clone();
        self.tasks
            .spawn(async move { this.drive(turn, msg, stream, tx).await });
        Ok(rx)
    }

    async fn drive(
        &self,
        turn: Turn,
        msg: MessageId,
        mut stream: ChatStream,
        tx: mpsc::Sender<TurnEvent>,
    ) {
        let mut text = String::new();
        let mut first_token: Option<Duration> = None;
        let tenant = turn.entry.tenant.id;
        loop {
            let next = tokio::select! {
                biased;
                _ = tx.closed() => None,
                ev = stream.next() => Some(ev),
            };
            match next {
                // The client went away: stop the upstream call (dropping the
                // stream closes its connection) and keep what was generated.
                None => {
                    drop(stream);
                    let usage = self.estimate(&turn, &text);
                    let done = MessageCompletion {
                        content: text,
                        status: Some(MessageStatus::Cancelled),
                        usage: Some(to_domain_usage(usage)),
                        response_time_ms: Some(ms(turn.started.elapsed())),
                        time_to_first_token_ms: first_token.map(ms),
                        finish_reason: Some("client_disconnected".into()),
                        source_chunk_ids: turn.sources.iter().map(|s| s.chunk_id).collect(),
                        ..Default::default()
                    };
                    if let Err(e) = self.store.finish_message(tenant, msg, done).await {
                        tracing::error!(error = %e, "could not store a cancelled message");
                    }
                    self.charge_tokens(&turn, usage.completion_tokens).await;
                    self.audit_turn(
                        &turn,
                        msg,
                        "chat.cancelled",
                        serde_json::json!({"bot_id": turn.entry.bot.id}),
                    )
                    .await;
                    return;
                }
                Some(Some(Ok(ChatEvent::Delta(d)))) => {
                    if d.is_empty() {
                        continue;
                    }
                    first_token.get_or_insert_with(|| turn.started.elapsed());
                    text.push_str(&d);
                    if tx.send(TurnEvent::Delta(d)).await.is_err() {
                        // Closed while sending: handled as a disconnect on the next turn of the loop.
                        continue;
                    }
                }
                Some(Some(Ok(ChatEvent::Done(end)))) => {
                    let elapsed = turn.started.elapsed();
                    let ttft = first_token.unwrap_or(elapsed);
                    let usage = if end.usage.total_tokens == 0 && !text.is_empty() {
                        self.estimate(&turn, &text)
                    } else {
                        end.usage
                    };
                    let stored = self
                        .store
                        .finish_message(
                            tenant,
                            msg,
                            MessageCompletion {
                                content: text,
                                status: Some(MessageStatus::Complete),
                                usage: Some(to_domain_usage(usage)),
                                response_time_ms: Some(ms(elapsed)),
                                time_to_first_token_ms: Some(ms(ttft)),
                                provider: Some(end.provider.clone()),
                                model: Some(end.model.clone()),
                                finish_reason: Some(end.finish_reason.as_str().to_string()),
                                error: None,
                                source_chunk_ids: turn.sources.iter().map(|s| s.chunk_id).collect(),
                            },
                        )
                        .await;
                    if let Err(e) = stored {
                        tracing::error!(error = %e, "could not store a streamed answer");
                        let _ = tx
                            .send(TurnEvent::Error {
                                code: "internal",
                                message: "the answer could not be stored".into(),
                            })
                            .await;
                        return;
                    }
                    self.charge_tokens(&turn, usage.completion_tokens).await;
                    self.audit_turn(
                        &turn,
                        msg,
                        "chat.completed",
                        serde_json::json!({"bot_id": turn.entry.bot.id, "total_tokens": usage.total_tokens, "provider": end.provider, "stream": true}),
                    )
                    .await;
                    let _ = tx
                        .send(TurnEvent::Done(Box::new(StreamDone {
                            usage: usage.into(),
                            finish_reason: end.finish_reason.as_str().to_string(),
                            response_time_ms: elapsed.as_millis() as u64,
                            time_to_first_token_ms: ttft.as_millis() as u64,
                            provider: end.provider,
                            model: end.model,
                            sources: turn.sources.clone(),
                            tenant_id: tenant,
                        })))
                        .await;
                    // Read the stream to its end ([DONE], connection close)
                    // so that its connection returns to the provider's pool.
                    let drain = async { while stream.next().await.is_some() {} };
                    let _ = tokio::time::timeout(Duration::from_secs(2), drain).await;
                    return;
                }
                Some(Some(Err(e))) => {
                    let partial = match &e {
                        ProviderError::StreamInterrupted { partial, .. }
                            if partial.len() > text.len() =>
                        {
                            partial.clone()
                        }
                        _ => text.clone(),
                    };
                    let err = ChatError::Provider(e);
                    self.fail(&turn, msg, partial, &err).await;
                    let _ = tx
                        .send(TurnEvent::Error {
                            code: err.code(),
                            message: err.public_message(),
                        })
                        .await;
                    return;
                }
                // Ended without a final event: keep the text, say so.
                Some(None) => {
                    let err = ChatError::Provider(ProviderError::StreamInterrupted {
                        provider: turn.entry.provider.kind().to_string(),
                        partial: text.clone(),
                        cause: None,
                    });
                    self.fail(&turn, msg, text.clone(), &err).await;
                    let _ = tx
                        .send(TurnEvent::Error {
                            code: err.code(),
                            message: err.public_message(),
                        })
                        .await;
                    return;
                }
            }
        }
    }
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
