//! `POST /v1/chat/public` and `POST /v1/chat`: JSON in, JSON or SSE out.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use bytes::Bytes;
use chatcore::domain::{ConversationId, MessageId};
use chatcore::engine::{Caller, ChatInput, TurnEvent};
use futures::StreamExt;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::App;
use crate::http::{ApiError, Body, ErrorBody, json_response, parse_json, read_body};

/// The chat request body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChatBody {
    /// Bot id or slug.
    pub bot_id: String,
    /// The message.
    pub message: String,
    /// Conversation to continue (it must belong to the bot); none starts one.
    #[serde(default)]
    #[schema(format = Uuid)]
    pub conversation_id: Option<String>,
    /// End user id, as the caller knows them.
    #[serde(default)]
    pub user_id: Option<String>,
    /// Stream the answer as server-sent events (default false).
    #[serde(default)]
    pub stream: bool,
}

/// Data of a stream's `start` event.
#[derive(Debug, Serialize, ToSchema)]
pub struct StreamStart {
    /// The conversation.
    pub conversation_id: ConversationId,
    /// The assistant message being written.
    pub message_id: MessageId,
}

/// Data of a stream's `delta` event: the next piece of the answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct StreamDelta {
    /// Text to append.
    pub content: String,
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
    let result = turn(app, caller, input, body.stream, request_id).await;
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

/// Runs the turn, JSON or SSE, recording its metrics (tokens under the
/// bot's tenant, which the engine reports, for public chat too).
async fn turn(
    app: &Arc<App>,
    caller: Caller,
    input: ChatInput,
    stream: bool,
    request_id: &str,
) -> Result<Response<Body>, ApiError> {
    Ok(if stream {
        let rx = app
            .chat
            .chat_stream(caller, input)
            .await
            .map_err(ApiError::from)?;
        sse_response(rx, app.clone(), request_id.to_string())
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
            &reply.tenant_id.to_string(),
            &reply.provider,
            reply.usage.total_tokens as u64,
        );
        json_response(StatusCode::OK, &reply)
    })
}

fn sse_event<T: Serialize>(name: &str, data: &T) -> Bytes {
    let data = serde_json::to_string(data).unwrap_or_else(|e| {
        tracing::error!(error = %e, "failed to serialize a stream event");
        "{}".into()
    });
    Bytes::from(format!("event: {name}\ndata: {data}\n\n"))
}

fn sse_response(
    rx: tokio::sync::mpsc::Receiver<TurnEvent>,
    app: Arc<App>,
    request_id: String,
) -> Response<Body> {
    let events = tokio_stream_from(rx).map(move |ev| {
        match &ev {
            TurnEvent::Done(d) => {
                app.metrics.chat_latency.observe_ms(d.response_time_ms);
                app.metrics
                    .time_to_first_token
                    .observe_ms(d.time_to_first_token_ms);
                app.metrics.tokens(
                    &d.tenant_id.to_string(),
                    &d.provider,
                    d.usage.total_tokens as u64,
                );
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
                &StreamStart {
                    conversation_id,
                    message_id,
                },
            ),
            TurnEvent::Delta(content) => sse_event("delta", &StreamDelta { content }),
            TurnEvent::Done(done) => sse_event("done", &*done),
            TurnEvent::Error { code, message } => {
                sse_event("error", &ErrorBody::new(code, message, &request_id))
            }
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Reads SSE bytes with a standard parser (the one the providers use).
    fn parse(bytes: Bytes) -> Vec<(String, String)> {
        use eventsource_stream::Eventsource;
        futures::executor::block_on(async move {
            futures::stream::iter([Ok::<_, std::io::Error>(bytes)])
                .eventsource()
                .map(|e| {
                    let e = e.expect("valid SSE");
                    (e.event, e.data)
                })
                .collect()
                .await
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        /// Whatever a delta holds (newlines, CR, NUL, any Unicode), it is
        /// one event that reads back as exactly that text.
        #[test]
        fn a_delta_is_one_event_whatever_it_holds(content in "\\PC*|[\\r\\n\\u{0}\\u{2028} a-z:]{0,40}") {
            let bytes = sse_event("delta", &StreamDelta { content: content.clone() });
            let events = parse(bytes.clone());
            prop_assert_eq!(events.len(), 1);
            prop_assert_eq!(&events[0].0, "delta");
            let v: serde_json::Value = serde_json::from_str(&events[0].1).unwrap();
            prop_assert_eq!(v["content"].as_str().unwrap(), content.as_str());
            let text = std::str::from_utf8(&bytes).unwrap();
            prop_assert!(text.ends_with("\n\n"));
            prop_assert_eq!(text.matches('\n').count(), 3, "no line break inside the data");
            prop_assert!(!text.contains('\r'));
        }

        /// An error event reads back as the error body.
        #[test]
        fn an_error_event_reads_back(message in "\\PC*", rid in "[a-z0-9-]{0,20}") {
            let bytes = sse_event("error", &ErrorBody::new("provider_error", message.clone(), &rid));
            let events = parse(bytes);
            prop_assert_eq!(events.len(), 1);
            let v: serde_json::Value = serde_json::from_str(&events[0].1).unwrap();
            prop_assert_eq!(v["error"]["message"].as_str().unwrap(), message.as_str());
            prop_assert_eq!(v["error"]["request_id"].as_str().unwrap(), rid.as_str());
        }
    }
}
