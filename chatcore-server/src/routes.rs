//! The router: every route declared once, with utoipa-axum's `routes!`
//! over handlers that carry their `#[utoipa::path]` (path, method,
//! permission and OpenAPI operation in one place), and the layers every
//! request goes through.
//!
//! Layers, outermost first: the request id (the caller's `x-request-id`
//! when it is short and plain, else a fresh UUIDv7; echoed on the reply),
//! the trace span (`request_id`, `method`, `route` as the matched template,
//! `status`), compression (gzip, bodies over 1 KiB, never SSE), `finish`
//! (writes every error body with the request id and counts the request by
//! route template and status), the body timeout, the guard of the route
//! ([`crate::auth::authorize`]); per route, the body limit
//! (`CHATCORE_MAX_UPLOAD_BYTES` for document uploads,
//! `CHATCORE_MAX_BODY_BYTES` elsewhere) and, on the public chat routes,
//! CORS for the browser's preflight (the engine checks each bot's allowed
//! origins on the real request).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::middleware::{Next, from_fn, from_fn_with_state};
use axum::response::Response;
use http::{HeaderName, HeaderValue, Method, StatusCode, header};
use tower_http::compression::CompressionLayer;
use tower_http::compression::predicate::{DefaultPredicate, Predicate, SizeAbove};
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::timeout::RequestBodyTimeoutLayer;
use tower_http::trace::TraceLayer;
use utoipa::OpenApi as _;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::http::{ApiError, PendingError, Rid, json_response};
use crate::{App, admin, budgets, chat, completions, datasets};

/// The reply of `/healthz` and `/readyz`.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Status {
    /// `ok` (the process runs) or `ready` (the database answers).
    #[schema(schema_with = status_schema)]
    pub status: &'static str,
}

fn status_schema() -> utoipa::openapi::ObjectBuilder {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::Type::String)
        .enum_values(Some(["ok", "ready"]))
}

/// Body limits of the routes.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Every JSON body.
    pub body: usize,
    /// Document uploads.
    pub upload: usize,
}

/// Every route, with its operation (the document is [`crate::openapi`]'s).
pub fn declarations(limits: Limits) -> OpenApiRouter<Arc<App>> {
    let public = OpenApiRouter::new()
        .routes(routes!(chat::chat_public, chat::chat_public_preflight))
        .layer(RequestBodyLimitLayer::new(limits.body))
        .layer(public_cors())
        .layer(from_fn(preflight_status));
    let uploads = OpenApiRouter::new()
        .routes(routes!(datasets::upload_document, datasets::list_documents))
        .layer(RequestBodyLimitLayer::new(limits.upload));
    let rest = OpenApiRouter::new()
        .routes(routes!(chat::chat))
        .routes(routes!(completions::chat_completions))
        .routes(routes!(completions::list_models))
        .routes(routes!(completions::get_model))
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(metrics))
        .routes(routes!(openapi_json))
        .routes(routes!(admin::create_tenant, admin::list_tenants))
        .routes(routes!(admin::get_tenant, admin::update_tenant))
        .routes(routes!(admin::provider_catalog))
        .routes(routes!(admin::create_provider, admin::list_providers))
        .routes(routes!(
            admin::get_provider,
            admin::update_provider,
            admin::delete_provider
        ))
        .routes(routes!(admin::create_bot, admin::list_bots))
        .routes(routes!(
            admin::get_bot,
            admin::update_bot,
            admin::delete_bot
        ))
        .routes(routes!(admin::create_api_key, admin::list_api_keys))
        .routes(routes!(admin::get_api_key, admin::revoke_api_key))
        .routes(routes!(admin::create_scope, admin::list_scopes))
        .routes(routes!(admin::get_scope, admin::delete_scope))
        .routes(routes!(budgets::create_budget, budgets::list_budgets))
        .routes(routes!(
            budgets::get_budget,
            budgets::update_budget,
            budgets::delete_budget
        ))
        .routes(routes!(budgets::cap_tenant))
        .routes(routes!(budgets::set_price, budgets::list_prices))
        .routes(routes!(budgets::delete_price))
        .routes(routes!(admin::list_conversations))
        .routes(routes!(admin::get_conversation, admin::delete_conversation))
        .routes(routes!(admin::list_messages))
        .routes(routes!(admin::audit_logs))
        .routes(routes!(admin::usage))
        .routes(routes!(datasets::create_dataset, datasets::list_datasets))
        .routes(routes!(datasets::get_dataset, datasets::delete_dataset))
        .routes(routes!(datasets::search_dataset))
        .routes(routes!(datasets::get_document, datasets::delete_document))
        .layer(RequestBodyLimitLayer::new(limits.body));
    OpenApiRouter::with_openapi(crate::openapi::ApiDoc::openapi())
        .merge(public)
        .merge(uploads)
        .merge(rest)
        .merge(crate::widget::routes(limits.body))
}

/// CORS of the public chat routes: the preflight is answered for any
/// origin (the bot, and so its allowed origins, is only known from the
/// real request's body, which the engine checks); the real reply's
/// `Access-Control-Allow-Origin` is the handler's, on success only.
fn public_cors() -> CorsLayer {
    CorsLayer::new()
        .allow_origin(AllowOrigin::predicate(|_, parts| {
            parts.method == Method::OPTIONS
        }))
        .allow_methods([Method::POST, Method::OPTIONS])
        .allow_headers([
            header::CONTENT_TYPE,
            // The widget's visitor token.
            header::AUTHORIZATION,
            HeaderName::from_static("x-request-id"),
        ])
        .max_age(Duration::from_secs(600))
}

/// The preflight answers 204, as it always has.
async fn preflight_status(req: Request, next: Next) -> Response {
    let options = req.method() == Method::OPTIONS;
    let mut r = next.run(req).await;
    if options && r.status() == StatusCode::OK {
        *r.status_mut() = StatusCode::NO_CONTENT;
    }
    r
}

/// The server's router over `app`, with every layer.
pub fn router(app: Arc<App>) -> Router {
    let limits = Limits {
        body: app.config.max_body_bytes,
        upload: app.config.max_upload_bytes,
    };
    let (router, _) = declarations(limits).split_for_parts();
    let body_timeout = Duration::from_secs(app.config.body_timeout_secs.max(1));
    // Innermost first: each `layer` call wraps what is above it.
    router
        .fallback(fallback)
        .layer(from_fn_with_state(app.clone(), crate::auth::authorize))
        .layer(DefaultBodyLimit::disable())
        .layer(RequestBodyTimeoutLayer::new(body_timeout))
        .layer(from_fn_with_state(app.clone(), finish))
        .layer(
            CompressionLayer::new()
                .compress_when(DefaultPredicate::new().and(SizeAbove::new(1024))),
        )
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(make_span)
                .on_response(on_response)
                .on_failure(()),
        )
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(MakeV7))
        .layer(tower::util::MapRequestLayer::new(drop_unusable_request_id))
        .with_state(app)
}

async fn fallback() -> ApiError {
    ApiError::not_found("route")
}

/// The caller's `x-request-id` is kept when it is 1 to 64 characters of
/// letters, digits, `-` and `_`; any other is dropped (a fresh id replaces
/// it), so logs and replies never carry what a caller smuggled in.
fn drop_unusable_request_id<B>(mut req: http::Request<B>) -> http::Request<B> {
    let usable = match req.headers().get("x-request-id") {
        None => return req,
        Some(v) => {
            let b = v.as_bytes();
            !b.is_empty()
                && b.len() <= 64
                && b.iter()
                    .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_')
        }
    };
    if !usable {
        req.headers_mut().remove("x-request-id");
    }
    req
}

#[derive(Clone, Copy)]
struct MakeV7;

impl MakeRequestId for MakeV7 {
    fn make_request_id<B>(&mut self, _: &http::Request<B>) -> Option<RequestId> {
        HeaderValue::from_str(&uuid::Uuid::now_v7().to_string())
            .ok()
            .map(RequestId::new)
    }
}

fn make_span<B>(req: &http::Request<B>) -> tracing::Span {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(MatchedPath::as_str)
        .unwrap_or("unmatched");
    tracing::info_span!(
        "request",
        request_id = %Rid::of(req.extensions()),
        method = %req.method(),
        route,
        status = tracing::field::Empty,
    )
}

fn on_response<B>(res: &http::Response<B>, latency: Duration, span: &tracing::Span) {
    span.record("status", res.status().as_u16());
    tracing::debug!(latency_us = latency.as_micros() as u64, "answered");
}

/// Writes the body of every error reply (ours, and axum's or tower-http's
/// own, not JSON: 405 keeps its `Allow`, the body limit's 413 becomes
/// `payload_too_large`) with the request id, and counts the request.
async fn finish(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let route = req.extensions().get::<MatchedPath>().cloned();
    let rid = Rid::of(req.extensions());
    let mut resp = next.run(req).await;
    let status = resp.status();
    let pending = resp.extensions_mut().remove::<PendingError>();
    if pending.is_some()
        || ((status.is_client_error() || status.is_server_error())
            && resp.headers().get(header::CONTENT_TYPE)
                != Some(&HeaderValue::from_static("application/json")))
    {
        let e = pending
            .map(|p| p.0)
            .unwrap_or_else(|| ApiError::for_status(status));
        let old = std::mem::take(resp.headers_mut());
        let openai = route
            .as_ref()
            .is_some_and(|r| crate::completions::is_openai_route(r.as_str()));
        resp = if openai {
            e.into_openai_response(&rid)
        } else {
            e.into_response_with_id(&rid)
        };
        for (k, v) in old.iter() {
            if k != header::CONTENT_LENGTH
                && k != header::CONTENT_TYPE
                && !resp.headers().contains_key(k)
            {
                resp.headers_mut().append(k.clone(), v.clone());
            }
        }
    }
    app.metrics.request(
        &method,
        route.as_ref().map(MatchedPath::as_str),
        resp.status(),
    );
    resp
}

// ---------------------------------------------------------------- operations

/// Liveness
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "The process runs", body = Status)))]
async fn healthz() -> Response {
    json_response(StatusCode::OK, &Status { status: "ok" })
}

/// Readiness (the database answers)
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, description = "Ready", body = Status)))]
async fn readyz(State(app): State<Arc<App>>) -> Result<Response, ApiError> {
    match app.chat.store().ping().await {
        Ok(()) => Ok(json_response(StatusCode::OK, &Status { status: "ready" })),
        Err(e) => {
            tracing::warn!(error = %chatcore::error::Report(&e), "readiness check failed");
            Err(ApiError::unavailable("database unreachable"))
        }
    }
}

/// Prometheus metrics (text exposition format)
///
/// With `CHATCORE_METRICS_KEY` set, send it as a bearer; without it,
/// only clients on loopback are answered.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Metrics", content_type = "text/plain", body = String)))]
async fn metrics(
    State(app): State<Arc<App>>,
    crate::http::Peer(peer): crate::http::Peer,
    headers: http::HeaderMap,
) -> Result<Response, ApiError> {
    crate::metrics::authorize(&app.config, &headers, peer)?;
    Ok(crate::metrics::render(&app, &headers))
}

/// This document
#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "The OpenAPI 3.1 document", body = Object)))]
async fn openapi_json() -> Response {
    json_response(StatusCode::OK, crate::openapi::document())
}
