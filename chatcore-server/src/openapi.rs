//! `GET /openapi.json`: the OpenAPI 3.1 document of the HTTP API, generated
//! by utoipa from the handlers themselves.
//!
//! Each operation is the `#[utoipa::path]` of its handler, collected by
//! utoipa-axum's `routes!` as [`crate::routes::declarations`] declares the
//! routes: its path, method, parameters (the handlers' query structs),
//! request body and success reply (the Rust types, from `chatcore` with its
//! `openapi` feature and from this crate), and the permission it needs (its
//! `security`). What every operation shares is added by [`Conventions`]
//! from that declaration: the security scheme, the permission as
//! `x-chatcore-permission` (the same [`Guard`] that
//! [`crate::auth::authorize`] enforces), and the error replies that apply,
//! all with the [`ErrorBody`] schema.

use chatcore::admin::Access;
use chatcore::engine::StreamDone;
use http::Method;
use serde_json::Value;
use utoipa::openapi::extensions::ExtensionsBuilder;
use utoipa::openapi::header::Header;
use utoipa::openapi::path::{Operation, PathItem};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder, Type};
use utoipa::{Modify, OpenApi};

pub use crate::auth::Guard;
use crate::chat::{StreamDelta, StreamStart};
use crate::http::ErrorBody;

/// The document, as JSON (built once).
pub fn document() -> &'static Value {
    static DOC: std::sync::OnceLock<Value> = std::sync::OnceLock::new();
    DOC.get_or_init(|| serde_json::to_value(openapi()).expect("the OpenAPI document serializes"))
}

/// The document: the routes' operations with [`Conventions`] applied.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let limits = crate::routes::Limits { body: 0, upload: 0 };
    let (_, mut doc) = crate::routes::declarations(limits).split_for_parts();
    Conventions.modify(&mut doc);
    doc
}

/// What the document says besides its operations.
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
    components(schemas(ErrorBody, StreamStart, StreamDelta, StreamDone)),
    tags(
        (name = "chat", description = "Chat with a bot: JSON, or server-sent events."),
        (name = "openai", description = "OpenAI's chat completions protocol, for OpenAI's SDKs and the clients built on them: bots are models. Errors here also carry OpenAI's `type` and `param`."),
        (name = "operations", description = "Health, readiness, metrics, this document."),
        (name = "operator", description = "Tenants, with the operator key."),
        (name = "providers", description = "A tenant's AI provider configurations."),
        (name = "bots", description = "A tenant's bots (by id or slug)."),
        (name = "api-keys", description = "A tenant's API keys."),
        (name = "scopes", description = "Access rules and guardrails of bots."),
        (name = "conversations", description = "Conversations and their messages."),
        (name = "audit", description = "The audit log and usage."),
        (name = "datasets", description = "Datasets, documents and retrieval (RAG)."),
        (name = "budgets", description = "Spending budgets (tenant, API key, bot, end user) and a tenant's model prices."),
        (name = "widget", description = "The chat widget for public bots: embed script, settings, visitor sessions, feedback."),
    ),
)]
pub struct ApiDoc;

// ---------------------------------------------------------------- conventions

/// The guard an operation declares in its `security` (see
/// [`crate::auth`]).
///
/// # Panics
/// When it declares none of the known ones: a mistake in a handler's
/// `#[utoipa::path]`, found when the document is first built (by every
/// test).
pub fn declared_guard(method: &Method, path: &str, op: &Operation) -> Guard {
    let security = op
        .security
        .as_ref()
        .map(|s| serde_json::to_value(s).expect("security serializes"));
    let list = security
        .as_ref()
        .and_then(Value::as_array)
        .map(Vec::as_slice);
    Guard::of_security(list)
        .unwrap_or_else(|| panic!("{method} {path}: unknown security {security:?}"))
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
        "RequestTimeout",
        408,
        "`request_timeout`: the request body stalled for longer than the body timeout",
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
        "`rate_limited`: a rate limit (the tenant's, its public budget, the key's, the visitor's, the provider's), or too many failed authentications from this IP; see Retry-After. Also `budget_exceeded`: a spending budget has no room for the turn's worst case (Retry-After: when its period ends)",
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
fn error_statuses(method: &Method, path: &str, op: &Operation, g: Guard) -> Vec<u16> {
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
    if is_chat || matches!(g, Guard::Tenant(_) | Guard::Chat) {
        s.push(403);
    }
    // OpenAI's model by name.
    let names_model = path.starts_with("/v1/models/");
    if g == Guard::Operator || (path.starts_with("/v1/") && (names_rows || names_model)) {
        s.push(404);
    }
    if matches!(g, Guard::Operator | Guard::Tenant(Access::Write)) && method != Method::GET {
        s.push(409);
    }
    if has_body {
        s.extend([408, 413, 415]);
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

fn permission_note(g: Guard) -> &'static str {
    match g {
        Guard::Open => "No authentication.",
        Guard::Chat => {
            "Needs a tenant API key with the `chat` permission (and, if the key is restricted to some bots, this bot)."
        }
        Guard::Operator => "Needs the operator key.",
        Guard::Tenant(Access::Read) => {
            "Needs a tenant API key with the `read` or `admin` permission."
        }
        Guard::Tenant(Access::Write) => {
            "Needs a tenant API key with the `admin` permission (`read` keys get 403)."
        }
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
                let g = declared_guard(&method, path, op);
                for status in error_statuses(&method, path, op, g) {
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
                let (permission, note) = (g.permission(), permission_note(g));
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
