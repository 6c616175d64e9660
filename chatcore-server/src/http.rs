//! HTTP plumbing: the body type, JSON replies and the error format
//! `{"error": {"code", "message", "request_id"}}`.

use std::convert::Infallible;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use serde::Serialize;

/// The response body type of every route (full or streamed).
pub type Body = BoxBody<Bytes, Infallible>;

/// A full body from bytes.
pub fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).boxed()
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
}

impl ApiError {
    /// A new error.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
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

    /// The body of this error.
    pub fn body(&self, request_id: &str) -> ErrorBody {
        ErrorBody::new(self.code, self.message.clone(), request_id)
    }

    /// The JSON response, tagged with the request id.
    pub fn into_response(self, request_id: &str) -> Response<Body> {
        let mut r = json_response(self.status, &self.body(request_id));
        if let Some(s) = self.retry_after
            && let Ok(v) = HeaderValue::from_str(&s.to_string())
        {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
        r
    }
}

/// Every `code` an error body may carry (DESIGN.md's list, plus
/// `method_not_allowed` and `conflict`).
pub const ERROR_CODES: &[&str] = &[
    "invalid_request",
    "unauthorized",
    "forbidden",
    "feature_disabled",
    "guardrail_blocked",
    "not_found",
    "method_not_allowed",
    "conflict",
    "payload_too_large",
    "unsupported_media_type",
    "rate_limited",
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
            E::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            E::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        if matches!(e, E::Internal(_) | E::Unavailable(_)) {
            tracing::error!(error = %e, "request failed");
        } else if matches!(e, E::Provider(_)) {
            tracing::warn!(error = %e, "provider failed");
        }
        let retry_after = e
            .retry_after()
            .map(|d| d.as_secs_f64().ceil().max(1.0) as u64);
        let mut api = ApiError::new(status, e.code(), e.public_message());
        if status == StatusCode::TOO_MANY_REQUESTS {
            api.retry_after = Some(retry_after.unwrap_or(1));
        } else {
            api.retry_after = retry_after;
        }
        api
    }
}

/// Reads a request body up to `limit` bytes: 413 beyond it.
pub async fn read_body(body: hyper::body::Incoming, limit: usize) -> Result<Bytes, ApiError> {
    let limited = http_body_util::Limited::new(body, limit);
    match limited.collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("request body is larger than {limit} bytes"),
        )),
        Err(_) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "could not read the request body",
        )),
    }
}

/// Parses a JSON body into `T`: 415 unless the content type is JSON, 400
/// naming the field when it does not fit.
pub fn parse_json<T: serde::de::DeserializeOwned>(
    headers: &http::HeaderMap,
    body: &[u8],
) -> Result<T, ApiError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mime = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if mime != "application/json" {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the body as application/json",
        ));
    }
    // Text the database cannot store is refused once, here, for every
    // body, with the field named (see `chatcore::text`).
    chatcore::text::check_json_body(body)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", e.to_string()))?;
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let msg = if path.is_empty() || path == "." || path == "?" {
            format!("invalid JSON body: {inner}")
        } else {
            format!("{path}: {inner}")
        };
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", msg)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::ChatBody;
    use proptest::prelude::*;

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
