//! HTTP plumbing: the error format `{"error": {"code", "message",
//! "request_id"}}`, JSON replies, and the extractors every handler uses
//! ([`Json`], [`Query`], [`Id`], [`Rid`], [`Peer`]), which reject with
//! that error format.
//!
//! An [`ApiError`] becomes a response carrying the error in its extensions;
//! [`crate::routes`]'s `finish` layer writes the body with the request's
//! id. That layer also gives a JSON body to the error replies that come
//! from axum or tower-http themselves (405 with its `Allow`, 413 of the
//! body limit), so every error a client sees has the same shape.

use std::net::SocketAddr;
use std::str::FromStr;

use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::response::IntoResponse;
use bytes::Bytes;
use chatcore::error::Report;
use http::request::Parts;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::BodyExt;
use serde::Serialize;

/// The response body type of every route (full or streamed).
pub type Body = axum::body::Body;

/// A full body from bytes.
pub fn full(b: impl Into<Bytes>) -> Body {
    Body::from(b.into())
}

/// An error answer: status, machine-readable code and a message for people.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable code, e.g. `invalid_request`.
    pub code: &'static str,
    /// What went wrong, safe to show (never a secret or a stack trace).
    pub message: String,
    /// Seconds to wait, for 429 and 503.
    pub retry_after: Option<u64>,
    /// The request parameter at fault, when one is (OpenAI's `param`).
    pub param: Option<String>,
}

impl ApiError {
    /// A new error.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
            param: None,
        }
    }
    /// 400 `invalid_request`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }
    /// 404 `not_found`.
    pub fn not_found(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} not found"),
        )
    }
    /// 500 `internal`, with a generic message (details go to the log).
    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error",
        )
    }
    /// 503 `unavailable`.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }
    /// 415 `unsupported_media_type`.
    pub fn unsupported_media_type(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            message,
        )
    }

    /// The error a bare status stands for (a reply of axum's or
    /// tower-http's own, without our body).
    pub fn for_status(status: StatusCode) -> Self {
        let (code, message) = match status.as_u16() {
            400 => ("invalid_request", "the request is not valid"),
            401 => ("unauthorized", "authentication required"),
            403 => ("forbidden", "forbidden"),
            404 => ("not_found", "route not found"),
            405 => (
                "method_not_allowed",
                "this path does not answer this method",
            ),
            408 => ("request_timeout", "the request did not arrive in time"),
            413 => ("payload_too_large", "the request body is too large"),
            415 => ("unsupported_media_type", "unsupported media type"),
            429 => ("rate_limited", "too many requests"),
            503 => ("unavailable", "unavailable"),
            _ => return Self::internal(),
        };
        Self::new(status, code, message)
    }

    /// The body of this error.
    pub fn body(&self, request_id: &str) -> ErrorBody {
        ErrorBody::new(self.code, self.message.clone(), request_id)
    }

    /// The body of this error in OpenAI's shape (the OpenAI-compatible
    /// routes): ours, plus `type` and `param`, which the official SDKs read.
    pub fn openai_body(&self, request_id: &str) -> ErrorBody {
        let mut b = self.body(request_id);
        b.error.kind = Some(openai_error_type(self.status));
        b.error.param = Some(
            self.param
                .clone()
                .map_or(serde_json::Value::Null, serde_json::Value::String),
        );
        b
    }

    /// The JSON response, tagged with the request id.
    pub fn into_response_with_id(self, request_id: &str) -> Response<Body> {
        let body = self.body(request_id);
        self.respond(&body)
    }

    /// The JSON response in OpenAI's shape, tagged with the request id.
    pub fn into_openai_response(self, request_id: &str) -> Response<Body> {
        let body = self.openai_body(request_id);
        self.respond(&body)
    }

    fn respond(self, body: &ErrorBody) -> Response<Body> {
        let mut r = json_response(self.status, body);
        if let Some(s) = self.retry_after
            && let Ok(v) = HeaderValue::from_str(&s.to_string())
        {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
        r
    }
}

/// An error response whose body the `finish` layer writes (it knows the
/// request id).
#[derive(Debug, Clone)]
pub struct PendingError(pub ApiError);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response<Body> {
        let mut r = Response::new(Body::empty());
        *r.status_mut() = self.status;
        r.extensions_mut().insert(PendingError(self));
        r
    }
}

/// Every `code` an error body may carry (DESIGN.md's list, plus
/// `method_not_allowed`, `request_timeout` and `conflict`).
pub const ERROR_CODES: &[&str] = &[
    "invalid_request",
    "unauthorized",
    "forbidden",
    "feature_disabled",
    "guardrail_blocked",
    "not_found",
    "method_not_allowed",
    "request_timeout",
    "conflict",
    "payload_too_large",
    "unsupported_media_type",
    "rate_limited",
    "budget_exceeded",
    "provider_error",
    "unavailable",
    "provider_timeout",
    "internal",
];

/// The body of every error reply (and of a stream's `error` event).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorObject,
}

impl ErrorBody {
    /// An error body.
    pub fn new(code: &'static str, message: String, request_id: &str) -> Self {
        Self {
            error: ErrorObject {
                code,
                message,
                request_id: request_id.to_string(),
                kind: None,
                param: None,
            },
        }
    }
}

/// The `error` object of an error body.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ErrorObject {
    /// Stable, machine-readable code.
    #[schema(schema_with = error_code_schema)]
    pub code: &'static str,
    /// What went wrong, for people (never a secret or a stack trace).
    pub message: String,
    /// The request's id (also in the `x-request-id` header), for support.
    pub request_id: String,
    /// OpenAI's error type (`invalid_request_error`,
    /// `authentication_error`, ...): on the OpenAI-compatible routes only.
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<&'static str>,
    /// OpenAI's `param`, the request parameter at fault or null: on the
    /// OpenAI-compatible routes only.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub param: Option<serde_json::Value>,
}

/// OpenAI's error `type` for a status, as its API answers them.
pub fn openai_error_type(status: StatusCode) -> &'static str {
    match status.as_u16() {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        409 => "conflict_error",
        429 => "rate_limit_error",
        500..=599 => "server_error",
        _ => "invalid_request_error",
    }
}

fn error_code_schema() -> utoipa::openapi::ObjectBuilder {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::Type::String)
        .enum_values(Some(ERROR_CODES.iter().copied()))
        .description(Some("Stable, machine-readable code."))
}

/// A JSON response.
pub fn json_response<T: Serialize>(status: StatusCode, value: &T) -> Response<Body> {
    match serde_json::to_vec(value) {
        Ok(bytes) => {
            let mut r = Response::new(full(bytes));
            *r.status_mut() = status;
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            r
        }
        Err(e) => {
            tracing::error!(error = %e, "failed to serialize a response");
            let mut r = Response::new(full(
                r#"{"error":{"code":"internal","message":"internal error","request_id":""}}"#,
            ));
            *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            r
        }
    }
}

/// 200 with a JSON body.
pub fn ok<T: Serialize>(v: &T) -> Response<Body> {
    json_response(StatusCode::OK, v)
}

/// 201 with a JSON body.
pub fn created<T: Serialize>(v: &T) -> Response<Body> {
    json_response(StatusCode::CREATED, v)
}

/// 204.
pub fn no_content() -> Response<Body> {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = StatusCode::NO_CONTENT;
    r
}

/// The one mapping from engine errors to HTTP statuses.
impl From<chatcore::engine::ChatError> for ApiError {
    fn from(e: chatcore::engine::ChatError) -> Self {
        use chatcore::engine::ChatError as E;
        let status = match &e {
            E::InvalidRequest(_) => StatusCode::BAD_REQUEST,
            E::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            E::Forbidden(_) | E::FeatureDisabled(_) | E::GuardrailBlocked(_) => {
                StatusCode::FORBIDDEN
            }
            E::NotFound(_) => StatusCode::NOT_FOUND,
            E::Conflict(_) => StatusCode::CONFLICT,
            E::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            E::Provider(p) if p.is_timeout() => StatusCode::GATEWAY_TIMEOUT,
            E::Provider(chatcore::provider::ProviderError::RateLimited { .. }) => {
                StatusCode::TOO_MANY_REQUESTS
            }
            E::Provider(_) => StatusCode::BAD_GATEWAY,
            E::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            E::Internal { .. } => StatusCode::INTERNAL_SERVER_ERROR,
            E::BudgetExceeded { .. } => StatusCode::TOO_MANY_REQUESTS,
        };
        // The cause goes to the log, with its whole chain; the request's
        // span (the trace layer) carries the request id. The body below
        // says only `public_message`.
        if matches!(e, E::Internal { .. } | E::Unavailable { .. }) {
            tracing::error!(error = %Report(&e), "request failed");
        } else if matches!(e, E::Provider(_)) {
            tracing::warn!(error = %Report(&e), "provider failed");
        }
        let retry_after = e
            .retry_after()
            .map(|d| d.as_secs_f64().ceil().max(1.0) as u64);
        let mut api = ApiError::new(status, e.code(), e.public_message());
        if matches!(e, E::BudgetExceeded { .. }) {
            // Only where a period ends: a rolling budget held by reservations
            // has no time to name.
            api.retry_after = retry_after;
        } else if status == StatusCode::TOO_MANY_REQUESTS {
            api.retry_after = Some(retry_after.unwrap_or(1));
        } else {
            api.retry_after = retry_after;
        }
        api
    }
}

/// Parses a JSON body into `T`: 415 unless the content type is JSON, 400
/// naming the field when it does not fit.
pub fn parse_json<T: serde::de::DeserializeOwned>(
    headers: &http::HeaderMap,
    body: &[u8],
) -> Result<T, ApiError> {
    if mime(headers) != "application/json" {
        return Err(ApiError::unsupported_media_type(
            "send the body as application/json",
        ));
    }
    // Text the database cannot store is refused once, here, for every
    // body, with the field named (see `chatcore::text`).
    chatcore::text::check_json_body(body).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let de = &mut serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut *de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let msg = if path.is_empty() || path == "." || path == "?" {
            format!("invalid JSON body: {inner}")
        } else {
            format!("{path}: {inner}")
        };
        ApiError::bad_request(msg)
    })?;
    // One JSON value, then only whitespace.
    de.end()
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))?;
    Ok(value)
}

/// The MIME type of a request (lower case, without parameters).
pub fn mime(headers: &http::HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

fn chain_has<T: std::error::Error + 'static>(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(e) = cur {
        if e.is::<T>() {
            return true;
        }
        cur = e.source();
    }
    false
}

/// Reads the whole request body (the body limit and the body timeout are
/// layers): 413 beyond the limit, 408 when it stalls, 400 when it breaks.
pub async fn read_body(body: Body) -> Result<Bytes, ApiError> {
    match body.collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) => {
            let e = e.into_inner();
            if chain_has::<http_body_util::LengthLimitError>(&*e) {
                Err(ApiError::for_status(StatusCode::PAYLOAD_TOO_LARGE))
            } else if chain_has::<tower_http::timeout::TimeoutError>(&*e) {
                Err(ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    "request_timeout",
                    "the request body did not arrive in time",
                ))
            } else {
                Err(ApiError::bad_request("could not read the request body"))
            }
        }
    }
}

/// A JSON request body: 415 unless the content type is JSON, 400 naming
/// the field when it does not fit (or when bytes follow the value).
#[derive(Debug)]
pub struct Json<T>(pub T);

impl<T: serde::de::DeserializeOwned, S: Send + Sync> FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _: &S) -> Result<Self, ApiError> {
        let (parts, body) = req.into_parts();
        if mime(&parts.headers) != "application/json" {
            return Err(ApiError::unsupported_media_type(
                "send the body as application/json",
            ));
        }
        let bytes = read_body(body).await?;
        parse_json(&parts.headers, &bytes).map(Json)
    }
}

/// Query parameters as a struct (give it `deny_unknown_fields`): a
/// parameter that is unknown, given twice or malformed is a 400 naming it,
/// and so is text the database cannot store.
#[derive(Debug)]
pub struct Query<T>(pub T);

impl<T: serde::de::DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let q = parts.uri.query().unwrap_or("");
        for (k, v) in form_urlencoded::parse(q.as_bytes()) {
            chatcore::text::check_text(&k, &v).map_err(|e| ApiError::bad_request(e.to_string()))?;
        }
        axum::extract::Query::<T>::try_from_uri(&parts.uri)
            .map(|q| Query(q.0))
            .map_err(|e| {
                let text = e.body_text();
                let msg = text
                    .strip_prefix("Failed to deserialize query string: ")
                    .unwrap_or(&text);
                ApiError::bad_request(msg.to_string())
            })
    }
}

/// A path id type, with the name its 404 uses.
pub trait PathId: FromStr {
    /// What is not found when the id does not parse (`tenant`, ...).
    const WHAT: &'static str;
}

macro_rules! path_ids {
    ($($t:ty => $what:literal),* $(,)?) => {
        $(impl $crate::http::PathId for $t { const WHAT: &'static str = $what; })*
    };
}
pub(crate) use path_ids;

path_ids!(
    chatcore::domain::TenantId => "tenant",
    chatcore::domain::ProviderConfigId => "provider",
    chatcore::domain::ApiKeyId => "api key",
    chatcore::domain::ScopeId => "scope",
    chatcore::domain::ConversationId => "conversation",
    chatcore::domain::DatasetId => "dataset",
    chatcore::domain::DocumentId => "document",
    BotRef => "bot",
);

/// A bot as the path names it: its id or its slug.
#[derive(Debug, Clone)]
pub struct BotRef(pub String);

impl FromStr for BotRef {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_string()))
    }
}

/// The `{id}` of a route, parsed: an id that does not parse names no row,
/// so it is the same 404 as a row that does not exist.
#[derive(Debug)]
pub struct Id<T>(pub T);

impl<T: PathId, S: Send + Sync> FromRequestParts<S> for Id<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let axum::extract::Path(raw) =
            axum::extract::Path::<String>::from_request_parts(parts, state)
                .await
                .map_err(|_| ApiError::not_found(T::WHAT))?;
        raw.parse()
            .map(Id)
            .map_err(|_| ApiError::not_found(T::WHAT))
    }
}

/// The request id (see [`crate::routes`]).
#[derive(Debug, Clone)]
pub struct Rid(pub String);

impl Rid {
    /// The id of a request's extensions.
    pub fn of(ext: &http::Extensions) -> String {
        ext.get::<tower_http::request_id::RequestId>()
            .and_then(|r| r.header_value().to_str().ok())
            .unwrap_or("")
            .to_string()
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Rid {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Rid(Rid::of(&parts.extensions)))
    }
}

/// The client's address.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

impl<S: Send + Sync> FromRequestParts<S> for Peer {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        match parts.extensions.get::<ConnectInfo<SocketAddr>>() {
            Some(ConnectInfo(a)) => Ok(Peer(*a)),
            None => {
                tracing::error!("no client address on the request");
                Err(ApiError::internal())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::ChatBody;
    use chatcore::engine::ChatError;
    use proptest::prelude::*;

    /// A 500 or 503 says something generic, in both body shapes: the cause
    /// (here a driver message naming a table and a host) goes to the log.
    #[test]
    fn an_internal_error_body_does_not_show_its_cause() {
        let cause = "relation \"secret_table\" on db.internal:5432 does not exist";
        let cases = [
            (
                ChatError::internal_from("the store failed", std::io::Error::other(cause)),
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "internal error",
            ),
            (
                ChatError::unavailable_from(
                    "the store is unavailable",
                    std::io::Error::other(cause),
                ),
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "service temporarily unavailable",
            ),
        ];
        for (e, status, code, message) in cases {
            assert!(chatcore::error::Report(&e).to_string().contains(cause));
            let api = ApiError::from(e);
            assert_eq!(api.status, status);
            for body in [api.body("req-1"), api.openai_body("req-1")] {
                let json = serde_json::to_value(&body).unwrap();
                let text = json.to_string();
                assert!(!text.contains("secret_table"), "{text}");
                assert!(!text.contains("db.internal"), "{text}");
                assert!(!text.contains("the store"), "{text}");
                assert_eq!(json["error"]["code"], code);
                assert_eq!(json["error"]["message"], message);
                assert_eq!(json["error"]["request_id"], "req-1");
            }
        }
    }

    fn json_headers() -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        h
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        /// Arbitrary bytes are a body or a 400, never a panic.
        #[test]
        fn arbitrary_bytes_are_parsed_or_refused(body in proptest::collection::vec(any::<u8>(), 0..512)) {
            match parse_json::<ChatBody>(&json_headers(), &body) {
                Ok(_) => {}
                Err(e) => {
                    prop_assert_eq!(e.status, StatusCode::BAD_REQUEST);
                    prop_assert_eq!(e.code, "invalid_request");
                }
            }
            let _ = parse_json::<serde_json::Value>(&json_headers(), &body);
        }

        /// A well-formed body is taken as sent, unless a field holds a NUL:
        /// then it is a 400 naming that field.
        #[test]
        fn text_fields_arrive_intact_or_are_named(
            bot in "\\PC{0,20}|[a\\u{0}]{1,4}",
            message in "\\PC{0,40}|[b\\u{0}\\n]{1,6}",
            user in proptest::option::of("\\PC{0,20}|[\\u{0}c]{1,3}"),
        ) {
            let mut v = serde_json::json!({"bot_id": bot, "message": message});
            if let Some(u) = &user {
                v["user_id"] = serde_json::json!(u);
            }
            let body = serde_json::to_vec(&v).unwrap();
            let nul = |s: &str| s.contains('\0');
            match parse_json::<ChatBody>(&json_headers(), &body) {
                Ok(b) => {
                    prop_assert!(!nul(&bot) && !nul(&message) && !user.as_deref().is_some_and(nul));
                    prop_assert_eq!(b.bot_id, bot);
                    prop_assert_eq!(b.message, message);
                    prop_assert_eq!(b.user_id, user);
                }
                Err(e) => {
                    prop_assert_eq!(e.status, StatusCode::BAD_REQUEST);
                    let field = e.message.split(':').next().unwrap().to_string();
                    let named = match field.as_str() {
                        "bot_id" => nul(&bot),
                        "message" => nul(&message),
                        "user_id" => user.as_deref().is_some_and(nul),
                        _ => false,
                    };
                    prop_assert!(named, "{}", e.message);
                }
            }
        }

        /// Any other content type is a 415, whatever the bytes.
        #[test]
        fn other_content_types_are_415(body in proptest::collection::vec(any::<u8>(), 0..64), ct in "[a-z/+-]{0,20}") {
            prop_assume!(ct != "application/json");
            let mut h = http::HeaderMap::new();
            if let Ok(v) = HeaderValue::from_str(&ct) {
                h.insert(header::CONTENT_TYPE, v);
            }
            let e = parse_json::<ChatBody>(&h, &body).unwrap_err();
            prop_assert_eq!(e.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        }
    }
}
