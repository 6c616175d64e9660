//! The chat widget's routes (issue 14): the embed script, the demo page,
//! a public bot's widget configuration, visitor sessions and their
//! conversations, feedback on answers, and a bot's widget settings for its
//! admin. The rules are [`chatcore::widget`]'s; this only translates.
//!
//! Browsers: the widget's public routes answer any origin's preflight (the
//! bot, and so its allowed origins, is only known when the real request is
//! handled); a real answer carries `Access-Control-Allow-Origin` only for an
//! origin the bot allows (or the one a visitor token was issued to), and
//! `Content-Security-Policy: frame-ancestors` with the bot's allowed
//! origins.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use chatcore::admin::List;
use chatcore::domain::{ConversationId, MessageId};
use chatcore::store::Feedback;
use chatcore::widget::{
    FeedbackBody, Rater, Session, SessionRequest, TOKEN_PREFIX, VisitorConversation,
    VisitorMessage, VisitorSession, WidgetConfig, WidgetSecret, WidgetSettings, WidgetView,
    frame_ancestors, origin_allowed,
};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::limit::RequestBodyLimitLayer;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::App;
use crate::admin::{NoQuery, PageQuery};
use crate::auth::{TenantCaller, bearer};
use crate::http::{ApiError, BotRef, ErrorBody, Id, Json, Peer, Query, Rid, json_response};

/// The embed script, compiled into the binary (no build step).
pub const WIDGET_JS: &str = include_str!("../widget/widget.js");
/// The demo page.
pub const DEMO_HTML: &str = include_str!("../widget/demo.html");

/// The widget's routes, with their body limit and CORS.
pub fn routes(body_limit: usize) -> OpenApiRouter<Arc<App>> {
    let public = OpenApiRouter::new()
        .routes(routes!(widget_config))
        .routes(routes!(start_session))
        .routes(routes!(visitor_conversations))
        .routes(routes!(visitor_messages))
        .routes(routes!(feedback))
        .layer(RequestBodyLimitLayer::new(body_limit))
        .layer(cors());
    let pages = OpenApiRouter::new()
        .routes(routes!(widget_js))
        .routes(routes!(demo_page));
    let admin = OpenApiRouter::new()
        .routes(routes!(get_widget, put_widget))
        .routes(routes!(rotate_widget_secret))
        .layer(RequestBodyLimitLayer::new(body_limit));
    public.merge(pages).merge(admin)
}

/// Preflights are answered for any origin (see the module docs).
fn cors() -> CorsLayer {
    CorsLayer::new()
        .allow_origin(AllowOrigin::predicate(|_, parts| {
            parts.method == Method::OPTIONS
        }))
        .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
        .allow_headers([
            header::CONTENT_TYPE,
            header::AUTHORIZATION,
            HeaderName::from_static("x-request-id"),
        ])
        .max_age(Duration::from_secs(600))
}

fn origin(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::ORIGIN)
        .and_then(|o| o.to_str().ok())
        .map(str::to_string)
}

/// The visitor token of a request (`Authorization: Bearer cvt1.…`), if it
/// carries one; an API key or anything else is not one.
pub fn visitor_token(headers: &HeaderMap) -> Option<SecretString> {
    bearer(headers).filter(|t| t.expose_secret().starts_with(TOKEN_PREFIX))
}

/// The verified visitor of a request: 401 without a good token, and when
/// the browser's origin is not the one the token was issued to.
fn visitor(app: &App, headers: &HeaderMap) -> Result<VisitorSession, ApiError> {
    let token = visitor_token(headers).ok_or_else(|| {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "send the visitor token: Authorization: Bearer <token from /v1/widget/{bot}/session>",
        )
    })?;
    let s = app.widget.verify(token.expose_secret())?;
    if let Some(o) = origin(headers)
        && !o.trim_end_matches('/').eq_ignore_ascii_case(&s.origin)
    {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "the visitor token was issued to another origin",
        ));
    }
    Ok(s)
}

/// Lets the browser read the answer when `origin` is allowed.
fn allow(mut r: Response, origin: Option<&str>, ok: bool) -> Response {
    if let Some(o) = origin
        && ok
        && let Ok(v) = HeaderValue::from_str(o)
    {
        r.headers_mut()
            .insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
    }
    r.headers_mut()
        .append(header::VARY, HeaderValue::from_static("Origin"));
    r
}

fn csp(mut r: Response, allowed: &[String]) -> Response {
    if let Ok(v) = HeaderValue::from_str(&format!("frame-ancestors {}", frame_ancestors(allowed))) {
        r.headers_mut().insert(header::CONTENT_SECURITY_POLICY, v);
    }
    r
}

/// Sends the CORS header on errors too, so that the widget can read why.
fn with_cors(
    result: Result<Response, ApiError>,
    origin: Option<&str>,
    ok: bool,
) -> Result<Response, ApiError> {
    match result {
        Ok(r) => Ok(allow(r, origin, ok)),
        Err(e) => Ok(allow(e.into_response(), origin, ok)),
    }
}

// ---------------------------------------------------------------- pages

/// The embed script
///
/// `<script src="https://HOST/widget.js" data-bot="SLUG_OR_ID" async></script>`
/// opens a launcher and a chat panel in a shadow root. Optional attributes:
/// `data-user-id` with `data-user-hash` (identity verification), `data-open`
/// (`true`: open at load).
#[utoipa::path(get, path = "/widget.js", tag = "widget",
    responses((status = 200, description = "The script", content_type = "text/javascript", body = String)))]
pub async fn widget_js() -> Response {
    let mut r = (StatusCode::OK, WIDGET_JS).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/javascript; charset=utf-8"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    // Any site may load the script; what it may do is the session's rule.
    h.insert(
        HeaderName::from_static("cross-origin-resource-policy"),
        HeaderValue::from_static("cross-origin"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    r
}

/// A page with the demo bot
///
/// The demo bot created on first start, embedded through the widget.
#[utoipa::path(get, path = "/demo", tag = "widget",
    responses((status = 200, description = "The page", content_type = "text/html", body = String)))]
pub async fn demo_page() -> Response {
    let mut r = (StatusCode::OK, DEMO_HTML).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'self'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    r
}

// ---------------------------------------------------------------- public

/// A public bot's widget configuration
///
/// Public and cacheable (5 minutes): title, greeting, placeholder,
/// colours, position, launcher icon, suggested questions, whether sources
/// are shown, and whether the bot can be embedded at all.
#[utoipa::path(get, path = "/v1/widget/{bot}/config", tag = "widget",
    params(("bot" = String, Path, description = "Bot id or slug (a public bot)")),
    responses(
        (status = 200, description = "The configuration", body = WidgetConfig),
        (status = 404, description = "`not_found`: no such public bot", body = ErrorBody),
    ))]
pub async fn widget_config(
    State(app): State<Arc<App>>,
    Path(bot): Path<String>,
    headers: HeaderMap,
    _: Query<NoQuery>,
) -> Result<Response, ApiError> {
    let o = origin(&headers);
    let (config, allowed) = app.widget.config(&bot).await?;
    let ok = origin_allowed(&allowed, o.as_deref());
    let mut r = json_response(StatusCode::OK, &config);
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    Ok(allow(csp(r, &allowed), o.as_deref(), ok))
}

/// Start a visitor session
///
/// The `Origin` must be one of the bot's allowed origins (a bot without
/// any cannot be embedded: 403). The token (one hour) goes with public
/// chat and the widget's routes as `Authorization: Bearer <token>`; the
/// visitor, not the IP, is then the per-visitor rate limit's key. With
/// `user_id`, `user_hash` must be the hex HMAC-SHA256 of it under the bot's
/// widget secret (401 otherwise). `previous_token` (up to 30 days expired)
/// keeps the visitor id. 30 sessions per IP, bot and minute.
#[utoipa::path(post, path = "/v1/widget/{bot}/session", tag = "widget",
    params(("bot" = String, Path, description = "Bot id or slug (a public bot)")),
    request_body = SessionRequest,
    responses(
        (status = 201, description = "The session", body = Session),
        (status = 401, description = "`unauthorized`: a `user_id` without a good `user_hash`", body = ErrorBody),
        (status = 403, description = "`forbidden`: the origin is not allowed, the bot has no allowed origins, or it verifies no users", body = ErrorBody),
        (status = 404, description = "`not_found`: no such public bot", body = ErrorBody),
        (status = 429, description = "`rate_limited`: too many sessions from this IP", body = ErrorBody),
    ))]
pub async fn start_session(
    State(app): State<Arc<App>>,
    Peer(peer): Peer,
    Rid(rid): Rid,
    Path(bot): Path<String>,
    headers: HeaderMap,
    _: Query<NoQuery>,
    Json(body): Json<SessionRequest>,
) -> Result<Response, ApiError> {
    let o = origin(&headers);
    let allowed = app.widget.allowed_origins(&bot).await;
    let ok = origin_allowed(&allowed, o.as_deref());
    let ip = peer.ip().to_string();
    let result = app
        .widget
        .start_session(&bot, body, o.as_deref(), Some(&ip), Some(&rid))
        .await
        .map(|s| {
            let mut r = json_response(StatusCode::CREATED, &s);
            r.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            csp(r, &allowed)
        })
        .map_err(ApiError::from);
    with_cors(result, o.as_deref(), ok)
}

/// The visitor's conversations with the bot, newest first
///
/// With the visitor token: an anonymous visitor's, or a verified user's
/// (theirs from any earlier session).
#[utoipa::path(get, path = "/v1/widget/{bot}/conversations", tag = "widget",
    params(("bot" = String, Path, description = "Bot id or slug"), PageQuery),
    responses(
        (status = 200, description = "A page of conversations", body = List<VisitorConversation>),
        (status = 401, description = "`unauthorized`: no visitor token, or a bad or expired one", body = ErrorBody),
        (status = 404, description = "`not_found`: the token is for another bot", body = ErrorBody),
    ))]
pub async fn visitor_conversations(
    State(app): State<Arc<App>>,
    Path(bot): Path<String>,
    headers: HeaderMap,
    Query(q): Query<PageQuery>,
) -> Result<Response, ApiError> {
    let o = origin(&headers);
    let result: Result<Response, ApiError> = async {
        let s = visitor(&app, &headers)?;
        same_bot(&app, &s, &bot).await?;
        let page = q.page()?;
        let list = app.widget.conversations(&s, page).await?;
        Ok(json_response(StatusCode::OK, &list))
    }
    .await;
    let ok = o.is_some();
    with_cors(result, o.as_deref(), ok)
}

/// Messages of a conversation, as its visitor sees them.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct VisitorMessages {
    /// Oldest first (the last 200).
    pub data: Vec<VisitorMessage>,
}

/// A conversation of the visitor's, oldest message first
#[utoipa::path(get, path = "/v1/widget/{bot}/conversations/{id}/messages", tag = "widget",
    params(
        ("bot" = String, Path, description = "Bot id or slug"),
        ("id" = ConversationId, Path, description = "Conversation id"),
    ),
    responses(
        (status = 200, description = "The messages", body = VisitorMessages),
        (status = 401, description = "`unauthorized`: no visitor token, or a bad or expired one", body = ErrorBody),
        (status = 404, description = "`not_found`: not a conversation of this visitor", body = ErrorBody),
    ))]
pub async fn visitor_messages(
    State(app): State<Arc<App>>,
    Path((bot, id)): Path<(String, String)>,
    headers: HeaderMap,
    _: Query<NoQuery>,
) -> Result<Response, ApiError> {
    let o = origin(&headers);
    let result: Result<Response, ApiError> = async {
        let s = visitor(&app, &headers)?;
        same_bot(&app, &s, &bot).await?;
        let id: ConversationId = id
            .parse()
            .map_err(|_| ApiError::not_found("conversation"))?;
        let data = app.widget.messages(&s, id).await?;
        Ok(json_response(StatusCode::OK, &VisitorMessages { data }))
    }
    .await;
    let ok = o.is_some();
    with_cors(result, o.as_deref(), ok)
}

/// The token's bot must be the path's (404 otherwise: the path names
/// nothing this visitor may see).
async fn same_bot(app: &App, s: &VisitorSession, bot: &str) -> Result<(), ApiError> {
    let (config, _) = app.widget.config(bot).await?;
    if config.bot_id != s.bot {
        return Err(ApiError::not_found("bot"));
    }
    Ok(())
}

/// Rate an answer
///
/// Thumbs up or down, with an optional comment, on an assistant message:
/// by the visitor whose conversation it is (the visitor token), or by an API
/// key of the tenant (`chat` or `admin`). A later rating of the same
/// message replaces the earlier one. Stored, audited
/// (`feedback.recorded`), shown with the message in
/// `GET /v1/conversations/{id}/messages` and counted in `GET /v1/usage`.
#[utoipa::path(post, path = "/v1/messages/{id}/feedback", tag = "widget",
    params(("id" = MessageId, Path, description = "Message id (an assistant message)")),
    request_body = FeedbackBody,
    responses(
        (status = 200, description = "The feedback as stored", body = Feedback),
        (status = 401, description = "`unauthorized`: no visitor token or API key, or a bad one", body = ErrorBody),
        (status = 403, description = "`forbidden`: a key without the chat or admin permission", body = ErrorBody),
        (status = 404, description = "`not_found`: no such assistant message of this visitor or tenant", body = ErrorBody),
        (status = 429, description = "`rate_limited`: too many ratings", body = ErrorBody),
    ))]
pub async fn feedback(
    State(app): State<Arc<App>>,
    Peer(peer): Peer,
    Rid(rid): Rid,
    Path(id): Path<String>,
    headers: HeaderMap,
    _: Query<NoQuery>,
    Json(body): Json<FeedbackBody>,
) -> Result<Response, ApiError> {
    let o = origin(&headers);
    let ip = peer.ip().to_string();
    let mut browser = false;
    let result: Result<Response, ApiError> = async {
        let rater = if visitor_token(&headers).is_some() {
            browser = true;
            Rater::Visitor(visitor(&app, &headers)?)
        } else {
            let key = bearer(&headers);
            Rater::Key(
                app.chat
                    .authenticate(key.as_ref(), Some(&ip), Some(&rid))
                    .await?,
            )
        };
        let id: MessageId = id.parse().map_err(|_| ApiError::not_found("message"))?;
        let f = app
            .widget
            .feedback(rater, id, body, Some(&ip), Some(&rid))
            .await?;
        Ok(json_response(StatusCode::OK, &f))
    }
    .await;
    with_cors(result, o.as_deref(), browser && o.is_some())
}

// ---------------------------------------------------------------- admin

/// A bot's widget
///
/// Its settings, the origins that may embed it (its `allowed_origins`
/// scopes), the last 4 characters of its widget secret, and the tag to put
/// on a page.
#[utoipa::path(get, path = "/v1/bots/{id}/widget", tag = "widget",
    params(("id" = String, Path, description = "Bot id or slug")),
    security(("apiKey" = ["read"])),
    responses((status = 200, description = "The widget", body = WidgetView)))]
pub async fn get_widget(
    State(app): State<Arc<App>>,
    TenantCaller(c): TenantCaller,
    _: Query<NoQuery>,
    Id(BotRef(bot)): Id<BotRef>,
) -> Result<Response, ApiError> {
    Ok(json_response(
        StatusCode::OK,
        &app.widget.get_settings(&c, &bot).await?,
    ))
}

/// Set a bot's widget settings
///
/// Replaces them; a field left out takes its default. Colours are `#rgb`
/// or `#rrggbb`. Audited (`widget.updated`).
#[utoipa::path(put, path = "/v1/bots/{id}/widget", tag = "widget",
    params(("id" = String, Path, description = "Bot id or slug")),
    request_body = WidgetSettings,
    security(("apiKey" = ["admin"])),
    responses((status = 200, description = "The widget", body = WidgetView)))]
pub async fn put_widget(
    State(app): State<Arc<App>>,
    TenantCaller(c): TenantCaller,
    _: Query<NoQuery>,
    Id(BotRef(bot)): Id<BotRef>,
    Json(body): Json<WidgetSettings>,
) -> Result<Response, ApiError> {
    let view = app.widget.put_settings(c.writer()?, &bot, body).await?;
    Ok(json_response(StatusCode::OK, &view))
}

/// Set a new widget secret
///
/// The secret signs the host site's user ids (`user_hash` = hex
/// HMAC-SHA256 of the user id under it); it is shown in this reply only.
/// The previous secret stops verifying at once. Audited
/// (`widget.secret_rotated`).
#[utoipa::path(post, path = "/v1/bots/{id}/widget/secret", tag = "widget",
    params(("id" = String, Path, description = "Bot id or slug")),
    security(("apiKey" = ["admin"])),
    responses((status = 201, description = "The new secret, shown once", body = WidgetSecret)))]
pub async fn rotate_widget_secret(
    State(app): State<Arc<App>>,
    TenantCaller(c): TenantCaller,
    _: Query<NoQuery>,
    Id(BotRef(bot)): Id<BotRef>,
) -> Result<Response, ApiError> {
    let s = app.widget.rotate_secret(c.writer()?, &bot).await?;
    let mut r = json_response(StatusCode::CREATED, &s);
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_visitor_tokens_are_visitor_tokens() {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer cc_abc"),
        );
        assert!(visitor_token(&h).is_none());
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer cvt1.abc.def"),
        );
        assert!(visitor_token(&h).is_some());
    }

    #[test]
    fn the_script_and_page_are_compiled_in() {
        assert!(WIDGET_JS.contains("attachShadow"));
        assert!(
            !WIDGET_JS.contains("innerHTML"),
            "the widget builds DOM nodes, never markup"
        );
        assert!(DEMO_HTML.contains("/widget.js"));
    }
}
