//! `POST /v1/chat/public` and `POST /v1/chat`: JSON in, JSON or SSE out.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use bytes::Bytes;
use chatcore::engine::{Caller, ChatInput, TurnEvent};
use futures::StreamExt;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use secrecy::SecretString;
use serde::Deserialize;

use crate::App;
use crate::http::{ApiError, Body, json_response, parse_json, read_body};

/// The chat request body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChatBody {
    /// Bot id or slug.
    pub bot_id: String,
    /// The message.
    pub message: String,
    /// Conversation to continue.
    #[serde(default)]
    pub conversation_id: Option<String>,
    /// End user id.
    #[serde(default)]
    pub user_id: Option<String>,
    /// Stream the answer as SSE.
    #[serde(default)]
    pub stream: bool,
}

/// The bearer token of a request, if any.
pub fn bearer(headers: &HeaderMap) -> Option<SecretString> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| SecretString::from(token.trim().to_string()))
}

fn origin(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// CORS preflight of the public endpoint. The bot (and so its allowed
/// origins) is only known from the body of the real request, which is
/// checked there; the preflight lets the browser send it.
pub fn preflight(headers: &HeaderMap) -> Response<Body> {
    let mut r = Response::new(crate::http::full(Bytes::new()));
    *r.status_mut() = StatusCode::NO_CONTENT;
    let h = r.headers_mut();
    if let Some(o) = headers.get(header::ORIGIN) {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, o.clone());
        h.insert(header::VARY, HeaderValue::from_static("Origin"));
    }
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("POST, OPTIONS"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("content-type, x-request-id"),
    );
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("600"),
    );
    r
}

/// Handles a chat request; `public` selects the unauthenticated endpoint.
pub async fn handle(
    app: &Arc<App>,
    req: Request<Incoming>,
    peer: SocketAddr,
    request_id: &str,
    public: bool,
) -> Result<Response<Body>, ApiError> {
    let (parts, body) = req.into_parts();
    let ip = Some(peer.ip().to_string());
    let caller = if public {
        Caller::Public {
            ip: ip.clone(),
            origin: origin(&parts.headers),
        }
    } else {
        let principal = app
            .chat
            .authenticate(
                bearer(&parts.headers).as_ref(),
                ip.as_deref(),
                Some(request_id),
            )
            .await?;
        Caller::Key { principal, ip }
    };
    let bytes = read_body(body, app.config.max_body_bytes).await?;
    let body: ChatBody = parse_json(&parts.headers, &bytes)?;
    let input = ChatInput {
        bot: body.bot_id,
        message: body.message,
        conversation_id: body.conversation_id,
        user_id: body.user_id,
        request_id: Some(request_id.to_string()),
    };
    // The engine has checked the origin against the bot's allowed origins
    // by the time a reply exists; echo it so the browser may read it.
    let cors_origin = if public {
        parts.headers.get(header::ORIGIN).cloned()
    } else {
        None
    };
    let tenant_label = match &caller {
        Caller::Key { principal, .. } => principal.tenant.id.to_string(),
        Caller::Public { .. } => "public".to_string(),
    };
    let result = turn(app, caller, input, body.stream, tenant_label).await;
    if let Err(e) = &result {
        match e.status.as_u16() {
            502 | 504 => app.metrics.provider_errors.fetch_add(1, Relaxed),
            429 => app.metrics.rate_limited.fetch_add(1, Relaxed),
            _ => 0,
        };
    }
    let mut resp = result?;
    if let Some(o) = cors_origin {
        resp.headers_mut()
            .insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, o);
        resp.headers_mut()
            .insert(header::VARY, HeaderValue::from_static("Origin"));
    }
    Ok(resp)
}

/// Runs the turn, JSON or SSE, recording its metrics.
async fn turn(
    app: &Arc<App>,
    caller: Caller,
    input: ChatInput,
    stream: bool,
    tenant_label: String,
) -> Result<Response<Body>, ApiError> {
    Ok(if stream {
        let rx = app
            .chat
            .chat_stream(caller, input)
            .await
            .map_err(ApiError::from)?;
        sse_response(rx, app.clone(), tenant_label)
    } else {
        let timeout = Duration::from_secs(app.config.request_timeout_secs);
        let reply = tokio::time::timeout(timeout, app.chat.chat(caller, input))
            .await
            .map_err(|_| {
                ApiError::new(
                    StatusCode::GATEWAY_TIMEOUT,
                    "provider_timeout",
                    "the request took too long",
                )
            })?
            .map_err(ApiError::from)?;
        app.metrics.chat_latency.observe_ms(reply.response_time_ms);
        app.metrics.tokens(
            &tenant_label,
            &reply.provider,
            reply.usage.total_tokens as u64,
        );
        json_response(StatusCode::OK, &reply)
    })
}

fn sse_event(name: &str, data: &serde_json::Value) -> Bytes {
    Bytes::from(format!("event: {name}\ndata: {data}\n\n"))
}

fn sse_response(
    rx: tokio::sync::mpsc::Receiver<TurnEvent>,
    app: Arc<App>,
    tenant_label: String,
) -> Response<Body> {
    let events = tokio_stream_from(rx).map(move |ev| {
        match &ev {
            TurnEvent::Done(d) => {
                app.metrics.chat_latency.observe_ms(d.response_time_ms);
                app.metrics
                    .time_to_first_token
                    .observe_ms(d.time_to_first_token_ms);
                app.metrics
                    .tokens(&tenant_label, &d.provider, d.usage.total_tokens as u64);
            }
            TurnEvent::Error { .. } => {
                app.metrics.provider_errors.fetch_add(1, Relaxed);
            }
            _ => {}
        }
        let bytes = match ev {
            TurnEvent::Start {
                conversation_id,
                message_id,
            } => sse_event(
                "start",
                &serde_json::json!({"conversation_id": conversation_id, "message_id": message_id}),
            ),
            TurnEvent::Delta(d) => sse_event("delta", &serde_json::json!({"content": d})),
            TurnEvent::Done(done) => {
                sse_event("done", &serde_json::to_value(&*done).unwrap_or_default())
            }
            TurnEvent::Error { code, message } => sse_event(
                "error",
                &serde_json::json!({"error": {"code": code, "message": message}}),
            ),
        };
        Ok::<_, Infallible>(Frame::data(bytes))
    });
    let mut r = Response::new(BodyExt::boxed(StreamBody::new(events)));
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    r
}

fn tokio_stream_from<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures::Stream<Item = T> + Send + 'static {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}
