//! The chat widget for public bots (issue 14): what a website embeds.
//!
//! - **Settings per bot** ([`WidgetSettings`]): title, greeting,
//!   placeholder, colours, position, launcher icon, suggested first
//!   questions, whether to show sources. A tenant admin sets them
//!   ([`WidgetService::put_settings`]); anyone reads the public part
//!   ([`WidgetService::config`]).
//! - **Visitor sessions** ([`WidgetService::start_session`]): the page's
//!   `Origin` must be one of the bot's `allowed_origins` (a bot without
//!   any cannot be embedded). The session is a short-lived token signed
//!   with HMAC-SHA256 under a key derived from the master key
//!   ([`crate::crypto::Keyring::derive_key`]); it names the bot, the
//!   origin, a visitor id and, when verified, the site's user. Public chat
//!   takes it (the engine's [`Caller::Public`] `visitor`): the visitor, not
//!   the IP, is then the per-visitor limit's key, and conversations are
//!   stored under that visitor (or user) and only they can continue them.
//!   An expired token may be handed back within [`RENEW_WITHIN`] to get a
//!   new one for the same visitor, so a visitor keeps their conversation.
//! - **Identity verification**: the host site passes `user_id` with
//!   `user_hash` = hex HMAC-SHA256 of it under the bot's widget secret
//!   (shown once to the admin, rotatable). A `user_id` without a good
//!   hash is refused, and so is a `user_id` on tokenless public chat of a
//!   bot that has a secret (else anyone could claim to be that user).
//! - **Feedback** ([`WidgetService::feedback`]): thumbs up or down with an
//!   optional comment on an assistant message, by the visitor that owns the
//!   conversation or by an API key of the tenant; stored, audited, shown
//!   with the message and counted in usage.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use rand::TryRngCore as _;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::admin::{AdminCaller, List, MessageView, Writer};
use crate::auth::Principal;
use crate::cache::TtlCache;
use crate::domain::*;
use crate::engine::{Caller, ChatError, ChatService, Guardrails, Visitor};
use crate::ratelimit::{Decision, Quota};
use crate::store::{
    Change, ConversationFilter, Feedback, NewFeedback, NewScope, PageRequest, Rating, WidgetRecord,
    WidgetUpdate,
};

type HmacSha256 = Hmac<Sha256>;

/// How long a visitor token is good for.
pub const SESSION_TTL: Duration = Duration::from_secs(3600);
/// How long after its expiry a token may be handed back for a new one of
/// the same visitor.
pub const RENEW_WITHIN: Duration = Duration::from_secs(30 * 24 * 3600);
/// Sessions a client IP may start per bot and minute.
pub const SESSIONS_PER_IP_PER_MINUTE: u32 = 30;
/// Ratings a visitor may give per minute.
pub const FEEDBACK_PER_VISITOR_PER_MINUTE: u32 = 30;
/// The prefix of visitor tokens (public chat tells them from API keys by it).
pub const TOKEN_PREFIX: &str = "cvt1.";
/// The prefix of the end-user id of an anonymous visitor's conversations.
pub const VISITOR_USER_PREFIX: &str = "visitor:";
const MAX_TOKEN_LEN: usize = 2048;

// ---------------------------------------------------------------- settings

/// Where the launcher sits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "kebab-case")]
pub enum WidgetPosition {
    /// Bottom right corner (default).
    #[default]
    BottomRight,
    /// Bottom left corner.
    BottomLeft,
}

/// The launcher button's icon (drawn by the widget itself: no image is
/// fetched from anywhere).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum LauncherIcon {
    /// A speech bubble (default).
    #[default]
    Chat,
    /// A question mark.
    Help,
    /// A sparkle.
    Sparkle,
    /// A headset.
    Support,
}

/// A bot's widget settings. Every field has a default, so a partial body
/// is a complete setting.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(default, deny_unknown_fields)]
pub struct WidgetSettings {
    /// The panel's title (1 to 80 characters; default: the bot's name).
    #[cfg_attr(feature = "openapi", schema(max_length = 80))]
    pub title: Option<String>,
    /// The first message the visitor sees (at most 500 characters).
    #[cfg_attr(feature = "openapi", schema(max_length = 500))]
    pub greeting: Option<String>,
    /// The input's placeholder (at most 120 characters).
    #[cfg_attr(feature = "openapi", schema(max_length = 120))]
    pub placeholder: Option<String>,
    /// Launcher, header and visitor bubbles: `#rgb` or `#rrggbb`.
    #[cfg_attr(
        feature = "openapi",
        schema(pattern = "^#([0-9a-fA-F]{3}|[0-9a-fA-F]{6})$")
    )]
    pub primary_color: String,
    /// Text on the primary colour: `#rgb` or `#rrggbb`.
    #[cfg_attr(
        feature = "openapi",
        schema(pattern = "^#([0-9a-fA-F]{3}|[0-9a-fA-F]{6})$")
    )]
    pub primary_text_color: String,
    /// Where the launcher sits.
    pub position: WidgetPosition,
    /// The launcher's icon.
    pub launcher_icon: LauncherIcon,
    /// Questions offered before the first message (at most 6, each at most
    /// 200 characters).
    #[cfg_attr(feature = "openapi", schema(max_items = 6))]
    pub suggested_questions: Vec<String>,
    /// Whether the bot's sources (RAG) are shown under its answers.
    pub show_sources: bool,
}

impl Default for WidgetSettings {
    fn default() -> Self {
        Self {
            title: None,
            greeting: None,
            placeholder: None,
            primary_color: "#2563eb".into(),
            primary_text_color: "#ffffff".into(),
            position: WidgetPosition::BottomRight,
            launcher_icon: LauncherIcon::Chat,
            suggested_questions: Vec::new(),
            show_sources: true,
        }
    }
}

fn colour(field: &str, v: &str) -> Result<(), ChatError> {
    let hex = v.strip_prefix('#').unwrap_or("");
    if (hex.len() == 3 || hex.len() == 6) && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(())
    } else {
        Err(ChatError::InvalidRequest(format!(
            "{field}: must be a colour as #rgb or #rrggbb"
        )))
    }
}

fn short(field: &str, v: Option<&str>, min: usize, max: usize) -> Result<(), ChatError> {
    let Some(v) = v else { return Ok(()) };
    crate::text::check_text(field, v)?;
    let n = v.trim().chars().count();
    if n < min || v.chars().count() > max {
        return Err(ChatError::InvalidRequest(format!(
            "{field}: must be {min} to {max} characters"
        )));
    }
    Ok(())
}

impl WidgetSettings {
    /// Checks every field; the error names the field.
    pub fn validate(&self) -> Result<(), ChatError> {
        short("title", self.title.as_deref(), 1, 80)?;
        short("greeting", self.greeting.as_deref(), 0, 500)?;
        short("placeholder", self.placeholder.as_deref(), 0, 120)?;
        colour("primary_color", &self.primary_color)?;
        colour("primary_text_color", &self.primary_text_color)?;
        if self.suggested_questions.len() > 6 {
            return Err(ChatError::InvalidRequest(
                "suggested_questions: at most 6".into(),
            ));
        }
        for q in &self.suggested_questions {
            short("suggested_questions", Some(q), 1, 200)?;
        }
        Ok(())
    }

    /// The stored settings (defaults for what an older row lacks; the
    /// defaults when the row does not parse, with a log line).
    fn of(record: Option<&WidgetRecord>) -> Self {
        match record {
            None => Self::default(),
            Some(r) => serde_json::from_value(r.settings.clone()).unwrap_or_else(|e| {
                tracing::error!(bot = %r.bot_id, error = %e, "stored widget settings do not parse");
                Self::default()
            }),
        }
    }
}

// ---------------------------------------------------------------- replies

/// `GET /v1/widget/{bot}/config`: what the widget shows. Public.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WidgetConfig {
    /// The bot.
    pub bot_id: BotId,
    /// The panel's title (the settings' or the bot's name).
    pub title: String,
    /// The settings.
    pub settings: WidgetSettings,
    /// Whether the bot may be embedded at all (it has allowed origins).
    pub embeddable: bool,
    /// Whether the bot verifies the host site's users (has a widget secret).
    pub identity_verification: bool,
}

/// A bot's widget as its admin sees it.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WidgetView {
    /// The bot.
    pub bot_id: BotId,
    /// The settings.
    pub settings: WidgetSettings,
    /// The origins that may embed it (the bot's `allowed_origins` scopes);
    /// empty: it cannot be embedded.
    pub allowed_origins: Vec<String>,
    /// The last 4 characters of the widget secret, if one is set.
    pub secret_last4: Option<String>,
    /// When the secret was set.
    pub secret_created_at: Option<DateTime<Utc>>,
    /// The tag to put on a page.
    pub embed_snippet: String,
    /// Last change of the settings (null: never set).
    pub updated_at: Option<DateTime<Utc>>,
}

/// A new widget secret, shown this once.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WidgetSecret {
    /// The bot.
    pub bot_id: BotId,
    /// The secret: sign user ids with it (hex HMAC-SHA256 of the user id);
    /// never shown again.
    pub secret: String,
    /// When it was set.
    pub created_at: DateTime<Utc>,
}

/// `POST /v1/widget/{bot}/session` body.
#[derive(Debug, Clone, Default, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SessionRequest {
    /// The host site's user id (1 to 256 characters), with `user_hash`.
    #[serde(default)]
    pub user_id: Option<String>,
    /// Hex HMAC-SHA256 of `user_id` under the bot's widget secret.
    #[serde(default)]
    pub user_hash: Option<String>,
    /// An earlier token of this visitor (it may have expired, up to 30
    /// days ago): the new session keeps its visitor id, and so its
    /// conversations.
    #[serde(default)]
    pub previous_token: Option<String>,
}

/// A visitor session.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Session {
    /// Send as `Authorization: Bearer <token>` to public chat and the
    /// widget's routes.
    pub token: String,
    /// When it stops being accepted.
    pub expires_at: DateTime<Utc>,
    /// The visitor.
    pub visitor_id: String,
    /// The verified user, if any.
    pub user_id: Option<String>,
    /// The bot.
    pub bot_id: BotId,
}

/// A conversation as its visitor sees it.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct VisitorConversation {
    /// Id.
    pub id: ConversationId,
    /// Title (the first message's start).
    pub title: Option<String>,
    /// Started.
    pub created_at: DateTime<Utc>,
    /// Last message.
    pub updated_at: DateTime<Utc>,
}

/// A message as its visitor sees it.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct VisitorMessage {
    /// Id.
    pub id: MessageId,
    /// `user` or `assistant`.
    pub role: Role,
    /// Text.
    pub content: String,
    /// State.
    pub status: MessageStatus,
    /// The visitor's rating, if any.
    pub rating: Option<Rating>,
    /// The documents the answer drew on (RAG), once each.
    pub sources: Vec<VisitorSource>,
    /// Written.
    pub created_at: DateTime<Utc>,
}

/// A document an answer drew on.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct VisitorSource {
    /// The document.
    pub document_id: DocumentId,
    /// Its title.
    pub title: String,
}

/// `POST /v1/messages/{id}/feedback` body.
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct FeedbackBody {
    /// Up or down.
    pub rating: Rating,
    /// What was good or bad (at most 2000 characters).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(max_length = 2000))]
    pub comment: Option<String>,
}

// ---------------------------------------------------------------- tokens

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Claims {
    /// Tenant.
    ten: uuid::Uuid,
    /// Bot.
    bot: uuid::Uuid,
    /// Visitor.
    vis: String,
    /// Verified user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    uid: Option<String>,
    /// Origin it was issued to.
    org: String,
    /// Expiry, Unix seconds.
    exp: i64,
}

/// A verified visitor token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VisitorSession {
    /// The bot's tenant.
    pub tenant: TenantId,
    /// The bot.
    pub bot: BotId,
    /// The visitor.
    pub visitor_id: String,
    /// The verified user, if any.
    pub user_id: Option<String>,
    /// The origin the token was issued to.
    pub origin: String,
    /// Expiry.
    pub expires_at: DateTime<Utc>,
}

impl VisitorSession {
    /// The end-user id its conversations are stored under: the verified
    /// user, else `visitor:<visitor id>`.
    pub fn owner(&self) -> String {
        match &self.user_id {
            Some(u) => u.clone(),
            None => format!("{VISITOR_USER_PREFIX}{}", self.visitor_id),
        }
    }

    /// The engine's visitor.
    pub fn visitor(&self) -> Visitor {
        Visitor {
            bot: self.bot,
            id: self.visitor_id.clone(),
        }
    }
}

fn bad_token() -> ChatError {
    ChatError::Unauthorized("the visitor token is not valid: start a new session".into())
}

fn random_id() -> String {
    let mut b = [0u8; 16];
    rand::rngs::OsRng
        .try_fill_bytes(&mut b)
        .expect("the operating system's random number generator failed");
    hex::encode(b)
}

/// Hex HMAC-SHA256 of `user_id` under `secret`: what a host site sends as
/// `user_hash`.
pub fn user_hash(secret: &str, user_id: &str) -> String {
    let mut mac = <HmacSha256 as Mac>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(user_id.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

fn hash_matches(secret: &str, user_id: &str, presented: &str) -> bool {
    let Ok(bytes) = hex::decode(presented.trim()) else {
        return false;
    };
    let mut mac = <HmacSha256 as Mac>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(user_id.as_bytes());
    mac.verify_slice(&bytes).is_ok()
}

/// Signs and checks visitor tokens.
#[derive(Clone)]
struct Signer {
    key: [u8; 32],
}

impl Signer {
    fn mac(&self, payload: &str) -> HmacSha256 {
        let mut mac = <HmacSha256 as Mac>::new_from_slice(&self.key).expect("any key length");
        mac.update(TOKEN_PREFIX.as_bytes());
        mac.update(payload.as_bytes());
        mac
    }

    fn sign(&self, claims: &Claims) -> String {
        let json = serde_json::to_vec(claims).expect("claims serialize");
        let payload = URL_SAFE_NO_PAD.encode(json);
        let tag = URL_SAFE_NO_PAD.encode(self.mac(&payload).finalize().into_bytes());
        format!("{TOKEN_PREFIX}{payload}.{tag}")
    }

    /// The claims of a token signed by us; `grace` accepts one that expired
    /// at most that long ago.
    fn open(&self, token: &str, grace: Duration) -> Result<Claims, ChatError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(bad_token());
        }
        let rest = token.strip_prefix(TOKEN_PREFIX).ok_or_else(bad_token)?;
        let (payload, tag) = rest.split_once('.').ok_or_else(bad_token)?;
        let tag = URL_SAFE_NO_PAD.decode(tag).map_err(|_| bad_token())?;
        self.mac(payload)
            .verify_slice(&tag)
            .map_err(|_| bad_token())?;
        let json = URL_SAFE_NO_PAD.decode(payload).map_err(|_| bad_token())?;
        let claims: Claims = serde_json::from_slice(&json).map_err(|_| bad_token())?;
        let deadline = claims.exp.saturating_add(grace.as_secs() as i64);
        if Utc::now().timestamp() >= deadline {
            return Err(ChatError::Unauthorized(
                "the visitor token has expired: start a new session".into(),
            ));
        }
        Ok(claims)
    }
}

// ---------------------------------------------------------------- origins

/// Whether `origin` may embed a bot with these allowed origins: never
/// without any (or without an `Origin`), `*` allows every origin.
pub fn origin_allowed(allowed: &[String], origin: Option<&str>) -> bool {
    let Some(o) = origin.map(|o| o.trim_end_matches('/')) else {
        return false;
    };
    if o.is_empty() || o.eq_ignore_ascii_case("null") {
        return false;
    }
    allowed
        .iter()
        .any(|a| a == "*" || a.eq_ignore_ascii_case(o))
}

/// The `frame-ancestors` sources of a CSP for these allowed origins: only
/// well-formed `http(s)://host[:port]` values (and `*`) are kept, so that no
/// stored value can add a directive; `'none'` when nothing remains.
pub fn frame_ancestors(allowed: &[String]) -> String {
    let ok = |a: &str| {
        if a == "*" {
            return true;
        }
        let Some(rest) = a
            .strip_prefix("https://")
            .or_else(|| a.strip_prefix("http://"))
        else {
            return false;
        };
        !rest.is_empty()
            && rest
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b':')
    };
    let list: Vec<&str> = allowed
        .iter()
        .map(String::as_str)
        .filter(|a| ok(a))
        .collect();
    if list.is_empty() {
        "'none'".into()
    } else {
        list.join(" ")
    }
}

// ---------------------------------------------------------------- service

/// A public bot with what the widget needs, cached briefly.
struct Entry {
    bot: Bot,
    tenant: Tenant,
    allowed_origins: Vec<String>,
    record: Option<WidgetRecord>,
}

impl Entry {
    fn settings(&self) -> WidgetSettings {
        WidgetSettings::of(self.record.as_ref())
    }
}

/// Who rates an answer.
#[derive(Debug, Clone)]
pub enum Rater {
    /// The visitor of the conversation (a verified token).
    Visitor(VisitorSession),
    /// An API key of the tenant (`chat` or `admin`).
    Key(Arc<Principal>),
}

/// The widget's logic, over the chat service's store, keyring, limiter and
/// audit writer.
pub struct WidgetService {
    chat: Arc<ChatService>,
    signer: Signer,
    entries: TtlCache<String, Arc<Entry>>,
}

impl std::fmt::Debug for WidgetService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WidgetService").finish_non_exhaustive()
    }
}

impl WidgetService {
    /// The widget over `chat` (its token key derived from the master key).
    pub fn new(chat: Arc<ChatService>) -> Self {
        let key = chat
            .keyring()
            .derive_key("chatcore widget visitor tokens v1");
        let ttl = chat.settings().cache_ttl;
        Self {
            chat,
            signer: Signer { key },
            entries: TtlCache::new(ttl, 10_000),
        }
    }

    async fn entry(&self, bot_ref: &str) -> Result<Arc<Entry>, ChatError> {
        crate::text::check_text("bot", bot_ref)?;
        if let Some(e) = self.entries.get(&bot_ref.to_string()) {
            return Ok(e);
        }
        let store = self.chat.store();
        let bot = store.find_public_bot(bot_ref).await?;
        let tenant = store.get_tenant(bot.tenant_id).await?;
        let scopes = store.list_scopes(tenant.id, bot.id).await?;
        let guard = Guardrails::from_scopes(&scopes).map_err(|e| {
            tracing::error!(bot = %bot.id, error = %e, "a stored scope does not parse");
            ChatError::internal("bot guardrails are misconfigured")
        })?;
        let record = store.get_widget(tenant.id, bot.id).await?;
        let e = Arc::new(Entry {
            allowed_origins: guard.allowed_origins.unwrap_or_default(),
            bot,
            tenant,
            record,
        });
        self.entries.insert(bot_ref.to_string(), e.clone());
        Ok(e)
    }

    /// A public bot that answers: inactive tenants and bots are not found,
    /// as public chat has them.
    async fn live(&self, bot_ref: &str) -> Result<Arc<Entry>, ChatError> {
        let e = self.entry(bot_ref).await?;
        let off = |f: &str| e.tenant.features.get(f).and_then(|v| v.as_bool()) == Some(false);
        if e.tenant.status != TenantStatus::Active
            || e.bot.status != BotStatus::Active
            || off("chat")
            || off("public_chat")
        {
            return Err(ChatError::NotFound("bot"));
        }
        Ok(e)
    }

    /// The public configuration of a public bot, and its allowed origins
    /// (for the adapter's CORS and CSP answers).
    pub async fn config(&self, bot_ref: &str) -> Result<(WidgetConfig, Vec<String>), ChatError> {
        let e = self.live(bot_ref).await?;
        let settings = e.settings();
        Ok((
            WidgetConfig {
                bot_id: e.bot.id,
                title: settings.title.clone().unwrap_or_else(|| e.bot.name.clone()),
                settings,
                embeddable: !e.allowed_origins.is_empty(),
                identity_verification: e.record.as_ref().is_some_and(|r| r.secret.is_some()),
            },
            e.allowed_origins.clone(),
        ))
    }

    /// The allowed origins of a public bot (empty when it is not found).
    pub async fn allowed_origins(&self, bot_ref: &str) -> Vec<String> {
        match self.live(bot_ref).await {
            Ok(e) => e.allowed_origins.clone(),
            Err(_) => Vec::new(),
        }
    }

    /// Starts a visitor session from `origin` (see the module docs).
    pub async fn start_session(
        &self,
        bot_ref: &str,
        req: SessionRequest,
        origin: Option<&str>,
        ip: Option<&str>,
        request_id: Option<&str>,
    ) -> Result<Session, ChatError> {
        crate::text::check_opt("user_id", req.user_id.as_deref())?;
        crate::text::check_opt("user_hash", req.user_hash.as_deref())?;
        crate::text::check_opt("previous_token", req.previous_token.as_deref())?;
        let e = self.live(bot_ref).await?;
        if e.allowed_origins.is_empty() {
            return Err(ChatError::Forbidden(
                "this bot cannot be embedded: it has no allowed origins".into(),
            ));
        }
        if !origin_allowed(&e.allowed_origins, origin) {
            return Err(ChatError::Forbidden(
                "origin not allowed for this bot".into(),
            ));
        }
        let origin = origin.unwrap_or_default().trim_end_matches('/').to_string();
        let ip_key = ip.unwrap_or("unknown");
        let limited = self
            .chat
            .rate_limiter()
            .check(
                &format!("ws:{}:{ip_key}", e.bot.id),
                Quota::per_minute(SESSIONS_PER_IP_PER_MINUTE),
                1,
            )
            .await?;
        if let Decision::Limited { retry_after } = limited {
            return Err(ChatError::RateLimited {
                scope: "widget_sessions",
                retry_after,
            });
        }
        let user_id = match (&req.user_id, &req.user_hash) {
            (None, None) => None,
            (None, Some(_)) => {
                return Err(ChatError::InvalidRequest(
                    "user_hash: given without user_id".into(),
                ));
            }
            (Some(u), hash) => {
                if u.is_empty() || u.chars().count() > 256 {
                    return Err(ChatError::InvalidRequest(
                        "user_id: must be 1 to 256 characters".into(),
                    ));
                }
                if u.starts_with(VISITOR_USER_PREFIX) {
                    return Err(ChatError::InvalidRequest(format!(
                        "user_id: must not start with {VISITOR_USER_PREFIX:?}"
                    )));
                }
                let secret = match e.record.as_ref().and_then(|r| r.secret.as_ref()) {
                    Some(s) => self.chat.keyring().open(e.tenant.id, s).map_err(|err| {
                        tracing::error!(bot = %e.bot.id, error = %crate::error::Report(&err), "cannot open a widget secret");
                        ChatError::internal_from("the widget secret cannot be decrypted", err)
                    })?,
                    None => {
                        return Err(ChatError::Forbidden(
                            "user_id: this bot does not verify users (it has no widget secret)"
                                .into(),
                        ));
                    }
                };
                let ok = hash
                    .as_deref()
                    .is_some_and(|h| hash_matches(secret.expose_secret(), u, h));
                if !ok {
                    let mut r = AuditRecord::new(
                        Some(e.tenant.id),
                        Actor {
                            kind: ActorKind::PublicVisitor,
                            id: ip.map(str::to_string),
                        },
                        "widget.identity_refused",
                    )
                    .resource("bot", e.bot.id);
                    r.ip = ip.map(str::to_string);
                    r.request_id = request_id.map(str::to_string);
                    r.metadata = serde_json::json!({"reason": if hash.is_some() { "wrong_hash" } else { "missing_hash" }});
                    self.chat.audit().record(r).await;
                    return Err(ChatError::Unauthorized(
                        "user_id: missing or wrong user_hash".into(),
                    ));
                }
                Some(u.clone())
            }
        };
        // An earlier token of this bot keeps its visitor id.
        let visitor_id = match &req.previous_token {
            Some(t) => match self.signer.open(t, RENEW_WITHIN) {
                Ok(c) if c.bot == e.bot.id.0 && c.ten == e.tenant.id.0 => c.vis,
                _ => random_id(),
            },
            None => random_id(),
        };
        let expires_at = Utc::now() + SESSION_TTL;
        let claims = Claims {
            ten: e.tenant.id.0,
            bot: e.bot.id.0,
            vis: visitor_id.clone(),
            uid: user_id.clone(),
            org: origin,
            exp: expires_at.timestamp(),
        };
        Ok(Session {
            token: self.signer.sign(&claims),
            expires_at,
            visitor_id,
            user_id,
            bot_id: e.bot.id,
        })
    }

    /// Checks a visitor token (signature, expiry).
    pub fn verify(&self, token: &str) -> Result<VisitorSession, ChatError> {
        let c = self.signer.open(token, Duration::ZERO)?;
        Ok(VisitorSession {
            tenant: TenantId(c.ten),
            bot: BotId(c.bot),
            visitor_id: c.vis,
            user_id: c.uid,
            origin: c.org,
            expires_at: DateTime::from_timestamp(c.exp, 0).unwrap_or_default(),
        })
    }

    /// The public chat caller and end-user id of a turn: with a visitor
    /// token, its visitor (from the origin it was issued to, under its
    /// owner; a different `user_id` in the body is refused); without one,
    /// the IP, and a `user_id` only for bots that do not verify users.
    pub async fn public_caller(
        &self,
        bot_ref: &str,
        token: Option<&str>,
        ip: Option<String>,
        origin: Option<String>,
        user_id: Option<String>,
    ) -> Result<(Caller, Option<String>), ChatError> {
        let Some(token) = token else {
            if let Some(u) = &user_id {
                if u.starts_with(VISITOR_USER_PREFIX) {
                    return Err(ChatError::Forbidden(
                        "user_id: visitor ids come with a visitor token".into(),
                    ));
                }
                if let Ok(e) = self.entry(bot_ref).await
                    && e.record.as_ref().is_some_and(|r| r.secret.is_some())
                {
                    return Err(ChatError::Forbidden(
                        "user_id: this bot verifies users: start a widget session with user_hash"
                            .into(),
                    ));
                }
            }
            let caller = Caller::Public {
                ip,
                origin,
                visitor: None,
            };
            return Ok((caller, user_id));
        };
        let s = self.verify(token)?;
        let same_origin = origin
            .as_deref()
            .is_some_and(|o| o.trim_end_matches('/').eq_ignore_ascii_case(&s.origin));
        if !same_origin {
            return Err(ChatError::Unauthorized(
                "the visitor token was issued to another origin".into(),
            ));
        }
        let owner = s.owner();
        if user_id.as_deref().is_some_and(|u| u != owner) {
            return Err(ChatError::Forbidden(
                "user_id: differs from the visitor session's".into(),
            ));
        }
        let caller = Caller::Public {
            ip,
            origin,
            visitor: Some(s.visitor()),
        };
        Ok((caller, Some(owner)))
    }

    /// The visitor's conversations with the bot, newest first.
    pub async fn conversations(
        &self,
        s: &VisitorSession,
        page: PageRequest,
    ) -> Result<List<VisitorConversation>, ChatError> {
        let filter = ConversationFilter {
            bot_id: Some(s.bot),
            end_user_id: Some(s.owner()),
            since: None,
            until: None,
        };
        let p = self
            .chat
            .store()
            .list_conversations(s.tenant, filter, page)
            .await?;
        Ok(List {
            // Only the widget's: the tenant's own API conversations with the
            // same user id are not the visitor's to see.
            data: p
                .data
                .into_iter()
                .filter(|c| c.channel == Channel::Public)
                .map(|c| VisitorConversation {
                    id: c.id,
                    title: c.title,
                    created_at: c.created_at,
                    updated_at: c.updated_at,
                })
                .collect(),
            next_cursor: p.next_cursor,
        })
    }

    async fn owned(
        &self,
        s: &VisitorSession,
        id: ConversationId,
    ) -> Result<Conversation, ChatError> {
        let c = self.chat.store().get_conversation(s.tenant, id).await?;
        if c.bot_id != s.bot
            || c.channel != Channel::Public
            || c.end_user_id.as_deref() != Some(s.owner().as_str())
        {
            return Err(ChatError::NotFound("conversation"));
        }
        Ok(c)
    }

    /// A conversation of the visitor's, oldest message first (its last 200).
    pub async fn messages(
        &self,
        s: &VisitorSession,
        id: ConversationId,
    ) -> Result<Vec<VisitorMessage>, ChatError> {
        let c = self.owned(s, id).await?;
        let store = self.chat.store();
        let msgs = store.recent_messages(s.tenant, c.id, 200).await?;
        let ids: Vec<MessageId> = msgs.iter().map(|m| m.id).collect();
        let ratings = store.feedback_for(s.tenant, &ids).await?;
        let chunks: Vec<ChunkId> = msgs
            .iter()
            .flat_map(|m| m.source_chunk_ids.iter().copied())
            .collect();
        let hits = if chunks.is_empty() {
            Vec::new()
        } else {
            store.chunk_hits(s.tenant, &chunks).await?
        };
        let sources_of = |m: &Message| {
            let mut out: Vec<VisitorSource> = Vec::new();
            for c in &m.source_chunk_ids {
                if let Some(h) = hits.iter().find(|h| h.chunk_id == *c)
                    && !out.iter().any(|s| s.document_id == h.document_id)
                {
                    out.push(VisitorSource {
                        document_id: h.document_id,
                        title: h.title.clone(),
                    });
                }
            }
            out
        };
        Ok(msgs
            .into_iter()
            .filter(|m| m.role != Role::System)
            .map(|m| VisitorMessage {
                sources: sources_of(&m),
                rating: ratings
                    .iter()
                    .find(|f| f.message_id == m.id)
                    .map(|f| f.rating),
                id: m.id,
                role: m.role,
                content: m.content,
                status: m.status,
                created_at: m.created_at,
            })
            .collect())
    }

    /// Rates an assistant message (see [`Rater`]); audited.
    pub async fn feedback(
        &self,
        rater: Rater,
        message: MessageId,
        body: FeedbackBody,
        ip: Option<&str>,
        request_id: Option<&str>,
    ) -> Result<Feedback, ChatError> {
        short("comment", body.comment.as_deref(), 0, 2000)?;
        let comment = body
            .comment
            .map(|c| c.trim().to_string())
            .filter(|c| !c.is_empty());
        let store = self.chat.store();
        let (tenant, actor) = match &rater {
            Rater::Visitor(s) => {
                let limited = self
                    .chat
                    .rate_limiter()
                    .check(
                        &format!("fb:{}", s.visitor_id),
                        Quota::per_minute(FEEDBACK_PER_VISITOR_PER_MINUTE),
                        1,
                    )
                    .await?;
                if let Decision::Limited { retry_after } = limited {
                    return Err(ChatError::RateLimited {
                        scope: "feedback",
                        retry_after,
                    });
                }
                let m = store.get_message(s.tenant, message).await?;
                self.owned(s, m.conversation_id)
                    .await
                    .map_err(|_| ChatError::NotFound("message"))?;
                (
                    s.tenant,
                    Actor {
                        kind: ActorKind::PublicVisitor,
                        id: Some(s.owner()),
                    },
                )
            }
            Rater::Key(p) => {
                let k = &p.key;
                if !k.allows(Permission::Chat) && !k.allows(Permission::Admin) {
                    return Err(ChatError::Forbidden(
                        "feedback needs a key with the chat or admin permission".into(),
                    ));
                }
                let m = store.get_message(p.tenant.id, message).await?;
                let c = store
                    .get_conversation(p.tenant.id, m.conversation_id)
                    .await?;
                if !k.bot_ids.is_empty() && !k.bot_ids.contains(&c.bot_id) {
                    return Err(ChatError::NotFound("message"));
                }
                (
                    p.tenant.id,
                    Actor {
                        kind: ActorKind::ApiKey,
                        id: Some(k.id.to_string()),
                    },
                )
            }
        };
        let f = store
            .put_feedback(
                tenant,
                NewFeedback {
                    message_id: message,
                    rating: body.rating,
                    comment,
                    actor: actor.clone(),
                },
            )
            .await?;
        let mut r =
            AuditRecord::new(Some(tenant), actor, "feedback.recorded").resource("message", message);
        r.ip = ip.map(str::to_string);
        r.request_id = request_id.map(str::to_string);
        r.metadata = serde_json::json!({
            "rating": f.rating.as_str(),
            "bot_id": f.bot_id,
            "conversation_id": f.conversation_id,
            "has_comment": f.comment.is_some(),
        });
        self.chat.audit().record(r).await;
        Ok(f)
    }

    // ---- management ----

    async fn admin_bot(&self, c: &AdminCaller, bot_ref: &str) -> Result<Bot, ChatError> {
        crate::text::check_text("bot", bot_ref)?;
        let store = self.chat.store();
        Ok(match bot_ref.parse::<BotId>() {
            Ok(id) => store.get_bot(c.tenant, id).await?,
            Err(_) => store.get_bot_by_slug(c.tenant, bot_ref).await?,
        })
    }

    fn audit(c: &AdminCaller, action: &str) -> AuditRecord {
        let mut r = AuditRecord::new(Some(c.tenant), c.actor.clone(), action);
        r.request_id = c.request_id.clone();
        r.ip = c.ip.clone();
        r
    }

    async fn view(
        &self,
        tenant: TenantId,
        bot: &Bot,
        record: Option<WidgetRecord>,
    ) -> Result<WidgetView, ChatError> {
        let scopes = self.chat.store().list_scopes(tenant, bot.id).await?;
        let origins = Guardrails::from_scopes(&scopes)
            .map(|g| g.allowed_origins.unwrap_or_default())
            .unwrap_or_default();
        Ok(WidgetView {
            bot_id: bot.id,
            settings: WidgetSettings::of(record.as_ref()),
            allowed_origins: origins,
            secret_last4: record
                .as_ref()
                .and_then(|r| r.secret.as_ref())
                .map(|s| s.last4.clone()),
            secret_created_at: record.as_ref().and_then(|r| r.secret_created_at),
            embed_snippet: format!(
                "<script src=\"https://YOUR-CHATCORE-HOST/widget.js\" data-bot=\"{}\" async></script>",
                bot.slug
            ),
            updated_at: record.map(|r| r.updated_at),
        })
    }

    fn forget(&self, bot: BotId) {
        self.entries.remove_where(|_, e| e.bot.id == bot);
    }

    /// A bot's widget (settings, allowed origins, secret's last 4).
    pub async fn get_settings(
        &self,
        c: &AdminCaller,
        bot_ref: &str,
    ) -> Result<WidgetView, ChatError> {
        let bot = self.admin_bot(c, bot_ref).await?;
        let record = self.chat.store().get_widget(c.tenant, bot.id).await?;
        self.view(c.tenant, &bot, record).await
    }

    /// Replaces a bot's widget settings (admin; audited).
    pub async fn put_settings(
        &self,
        c: Writer<'_>,
        bot_ref: &str,
        settings: WidgetSettings,
    ) -> Result<WidgetView, ChatError> {
        settings.validate()?;
        let bot = self.admin_bot(&c, bot_ref).await?;
        let value = serde_json::to_value(&settings)
            .map_err(|e| ChatError::internal_from("widget settings do not serialize", e))?;
        let record = self
            .chat
            .store()
            .put_widget(
                c.tenant,
                bot.id,
                WidgetUpdate {
                    settings: Some(value),
                    secret: None,
                },
                Self::audit(&c, "widget.updated"),
            )
            .await?;
        self.forget(bot.id);
        self.view(c.tenant, &bot, Some(record)).await
    }

    /// Sets a new widget secret (the old one stops verifying), shown once
    /// (admin; audited).
    pub async fn rotate_secret(
        &self,
        c: Writer<'_>,
        bot_ref: &str,
    ) -> Result<WidgetSecret, ChatError> {
        let bot = self.admin_bot(&c, bot_ref).await?;
        let mut raw = [0u8; 32];
        rand::rngs::OsRng
            .try_fill_bytes(&mut raw)
            .expect("the operating system's random number generator failed");
        let secret = format!("cws_{}", URL_SAFE_NO_PAD.encode(raw));
        let sealed = self
            .chat
            .keyring()
            .seal(c.tenant, &SecretString::from(secret.clone()));
        let record = self
            .chat
            .store()
            .put_widget(
                c.tenant,
                bot.id,
                WidgetUpdate {
                    settings: None,
                    secret: Some(Some(sealed)),
                },
                Self::audit(&c, "widget.secret_rotated"),
            )
            .await?;
        self.forget(bot.id);
        Ok(WidgetSecret {
            bot_id: bot.id,
            secret,
            created_at: record.secret_created_at.unwrap_or_else(now),
        })
    }

    /// Adds each message's feedback to a page of the conversation API.
    pub async fn with_feedback(
        &self,
        tenant: TenantId,
        mut page: List<MessageView>,
    ) -> Result<List<MessageView>, ChatError> {
        let ids: Vec<MessageId> = page.data.iter().map(|m| m.id).collect();
        let all = self.chat.store().feedback_for(tenant, &ids).await?;
        for m in &mut page.data {
            m.feedback = all.iter().find(|f| f.message_id == m.id).cloned();
        }
        Ok(page)
    }

    /// First start: lets the demo bot be embedded from `origins` (the
    /// server's own `/demo` page) and gives it a greeting.
    pub async fn setup_demo(
        &self,
        tenant: TenantId,
        bot: BotId,
        origins: Vec<String>,
    ) -> Result<(), ChatError> {
        let store = self.chat.store();
        let system = Actor {
            kind: ActorKind::System,
            id: None,
        };
        let change = Change::CreateScope(
            tenant,
            NewScope {
                bot_id: bot,
                kind: "allowed_origins".into(),
                config: serde_json::json!(origins),
            },
        );
        let audit = change.audit_by(system.clone());
        store.apply(change, audit).await?;
        let settings = WidgetSettings {
            title: Some("Demo bot".into()),
            greeting: Some(
                "Hi! I am chatcore's demo bot. Ask me anything: my answers stream in as they are written."
                    .into(),
            ),
            placeholder: Some("Type a message…".into()),
            suggested_questions: vec![
                "What can you do?".into(),
                "Show me some **markdown**".into(),
            ],
            ..WidgetSettings::default()
        };
        let value = serde_json::to_value(&settings)
            .map_err(|e| ChatError::internal_from("widget settings do not serialize", e))?;
        store
            .put_widget(
                tenant,
                bot,
                WidgetUpdate {
                    settings: Some(value),
                    secret: None,
                },
                AuditRecord::new(Some(tenant), system, "widget.updated"),
            )
            .await?;
        self.chat.invalidate_tenant(tenant);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer() -> Signer {
        Signer { key: [7; 32] }
    }

    fn claims(exp: i64) -> Claims {
        Claims {
            ten: uuid::Uuid::now_v7(),
            bot: uuid::Uuid::now_v7(),
            vis: "v1".into(),
            uid: Some("alice".into()),
            org: "https://shop.example".into(),
            exp,
        }
    }

    #[test]
    fn tokens_verify_and_forgeries_do_not() {
        let s = signer();
        let t = s.sign(&claims(Utc::now().timestamp() + 60));
        let c = s.open(&t, Duration::ZERO).unwrap();
        assert_eq!(c.uid.as_deref(), Some("alice"));
        // Another key, a changed payload, a cut tag, garbage: refused.
        assert!(Signer { key: [8; 32] }.open(&t, Duration::ZERO).is_err());
        let (head, tag) = t.rsplit_once('.').unwrap();
        let mut forged = claims(Utc::now().timestamp() + 60);
        forged.uid = Some("mallory".into());
        let other = s.sign(&forged);
        let (other_head, _) = other.rsplit_once('.').unwrap();
        assert!(
            s.open(&format!("{other_head}.{tag}"), Duration::ZERO)
                .is_err()
        );
        assert!(
            s.open(&format!("{head}.{}", &tag[1..]), Duration::ZERO)
                .is_err()
        );
        for junk in ["", "cvt1.", "cvt1..", "cvt1.a.b", "cc_abc", "cvt1.\0.\0"] {
            assert!(s.open(junk, Duration::ZERO).is_err(), "{junk:?}");
        }
        assert!(s.open(&"x".repeat(5000), Duration::ZERO).is_err());
    }

    #[test]
    fn expired_tokens_renew_only_within_the_grace() {
        let s = signer();
        let t = s.sign(&claims(Utc::now().timestamp() - 10));
        assert!(s.open(&t, Duration::ZERO).is_err());
        assert!(s.open(&t, Duration::from_secs(60)).is_ok());
    }

    #[test]
    fn user_hashes_are_hex_hmac() {
        let h = user_hash("secret", "alice");
        assert_eq!(h.len(), 64);
        assert!(hash_matches("secret", "alice", &h));
        assert!(hash_matches("secret", "alice", &h.to_uppercase()));
        assert!(!hash_matches("secret", "bob", &h));
        assert!(!hash_matches("other", "alice", &h));
        assert!(!hash_matches("secret", "alice", "zz"));
    }

    #[test]
    fn origins_and_frame_ancestors() {
        let allowed = vec!["https://shop.example".to_string()];
        assert!(origin_allowed(&allowed, Some("https://shop.example/")));
        assert!(origin_allowed(&allowed, Some("HTTPS://SHOP.EXAMPLE")));
        assert!(!origin_allowed(&allowed, Some("https://evil.example")));
        assert!(!origin_allowed(&allowed, Some("null")));
        assert!(!origin_allowed(&allowed, None));
        assert!(!origin_allowed(&[], Some("https://shop.example")));
        assert!(origin_allowed(&["*".into()], Some("https://any.example")));
        assert_eq!(frame_ancestors(&[]), "'none'");
        assert_eq!(
            frame_ancestors(&[
                "https://a.example".into(),
                "https://x; script-src *".into(),
                "http://127.0.0.1:8080".into()
            ]),
            "https://a.example http://127.0.0.1:8080"
        );
    }

    #[test]
    fn settings_are_checked_field_by_field() {
        assert!(WidgetSettings::default().validate().is_ok());
        let bad = |f: fn(&mut WidgetSettings)| {
            let mut s = WidgetSettings::default();
            f(&mut s);
            s.validate().unwrap_err().to_string()
        };
        assert!(bad(|s| s.primary_color = "red".into()).starts_with("primary_color"));
        assert!(bad(|s| s.primary_color = "#12345g".into()).starts_with("primary_color"));
        assert!(bad(|s| s.title = Some("".into())).starts_with("title"));
        assert!(bad(|s| s.title = Some("a\0b".into())).contains("title"));
        assert!(bad(|s| s.suggested_questions = vec!["q".into(); 7]).starts_with("suggested"));
        let parsed: WidgetSettings =
            serde_json::from_str(r#"{"title": "Help", "position": "bottom-left"}"#).unwrap();
        assert_eq!(parsed.position, WidgetPosition::BottomLeft);
        assert!(parsed.show_sources);
        assert!(serde_json::from_str::<WidgetSettings>(r#"{"bogus": 1}"#).is_err());
    }
}
