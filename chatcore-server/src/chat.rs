//! `POST /v1/chat/public` and `POST /v1/chat`: JSON in, JSON or SSE out.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use chatcore::domain::{ConversationId, MessageId};
use chatcore::engine::{Caller, ChatInput, ChatReply, TurnEvent};
use futures::StreamExt;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::App;
use crate::auth::ChatKey;
use crate::http::{ApiError, ErrorBody, Json, Peer, Rid, json_response};

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

/// One server-sent event of a `text/event-stream` reply, as a client's SSE
/// parser reads it: its name and its data.
#[derive(Debug, ToSchema)]
pub struct SseEvent {
    /// `start`, `delta`, `done` or `error` (`/v1/chat`, `/v1/chat/public`);
    /// none on the OpenAI-compatible stream.
    pub event: Option<String>,
    /// JSON text: `StreamStart`, `StreamDelta`, `StreamDone` or `ErrorBody`
    /// by event; a `chat.completion.chunk`, an error or `[DONE]` on the
    /// OpenAI-compatible stream.
    pub data: String,
    /// Not sent.
    pub id: Option<String>,
    /// Not sent.
    pub retry: Option<u64>,
}

/// Data of a stream's `delta` event: the next piece of the answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct StreamDelta {
    /// Text to append.
    pub content: String,
}

/// Chat with a public bot
///
/// No authentication: the bot must be public, and the `Origin` must be one
/// of its allowed origins when it names any. With `"stream": true` the
/// reply is `text/event-stream`: `start` (`StreamStart`), `delta`
/// (`StreamDelta`) per piece, then `done` (`StreamDone`) or `error`
/// (`ErrorBody`).
///
/// A widget visitor sends its session token (`POST
/// /v1/widget/{bot}/session`) as `Authorization: Bearer <token>`: the
/// conversation is then the visitor's (or its verified user's), and the
/// per-visitor limit counts the session, not the IP.
#[utoipa::path(post, path = "/v1/chat/public", tag = "chat", request_body = ChatBody,
    responses(
        (status = 200, description = "The answer", content(
            (ChatReply = "application/json"),
            (SseEvent = "text/event-stream"),
        )),
        (status = 401, description = "`unauthorized`: a bad or expired visitor token, or one issued to another origin or bot", body = ErrorBody),
    ))]
pub async fn chat_public(
    State(app): State<Arc<App>>,
    Peer(peer): Peer,
    Rid(rid): Rid,
    headers: HeaderMap,
    Json(mut body): Json<ChatBody>,
) -> Result<Response, ApiError> {
    let origin = headers.get(header::ORIGIN).cloned();
    let token = crate::widget::visitor_token(&headers);
    let result = async {
        use secrecy::ExposeSecret;
        let (caller, user_id) = app
            .widget
            .public_caller(
                &body.bot_id,
                token.as_ref().map(|t| t.expose_secret()),
                Some(peer.ip().to_string()),
                origin
                    .as_ref()
                    .and_then(|o| o.to_str().ok())
                    .map(str::to_string),
                body.user_id.take(),
            )
            .await?;
        body.user_id = user_id;
        turn(&app, caller, body, rid).await
    }
    .await;
    // A widget (its token was issued to this origin) may read why it failed.
    let mut resp = match result {
        Ok(r) => r,
        Err(e) if token.is_some() => e.into_response(),
        Err(e) => return Err(e),
    };
    // The engine has checked the origin against the bot's allowed origins
    // by the time a reply exists; echo it so the browser may read it.
    if let Some(o) = origin {
        resp.headers_mut()
            .insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, o);
        resp.headers_mut()
            .insert(header::VARY, HeaderValue::from_static("Origin"));
    }
    Ok(resp)
}

/// CORS preflight of public chat
///
/// The bot (and so its allowed origins) is only known from the body of the
/// real request, which is checked there; the preflight lets the browser
/// send it. The public routes' CORS layer answers it (see
/// [`crate::routes`]); this handler is what a plain `OPTIONS` without the
/// layer would get.
#[utoipa::path(options, path = "/v1/chat/public", tag = "chat",
    responses((status = 204, description = "The browser may send the request")))]
pub async fn chat_public_preflight() -> StatusCode {
    StatusCode::NO_CONTENT
}

/// Chat with a bot of the key's tenant
///
/// With `"stream": true` the reply is `text/event-stream`: `start`
/// (`StreamStart`), `delta` (`StreamDelta`) per piece, then `done`
/// (`StreamDone`) or `error` (`ErrorBody`).
#[utoipa::path(post, path = "/v1/chat", tag = "chat", request_body = ChatBody,
    security(("apiKey" = ["chat"])),
    responses((status = 200, description = "The answer", content(
        (ChatReply = "application/json"),
        (SseEvent = "text/event-stream"),
    ))))]
pub async fn chat(
    State(app): State<Arc<App>>,
    Peer(peer): Peer,
    Rid(rid): Rid,
    ChatKey(principal): ChatKey,
    Json(body): Json<ChatBody>,
) -> Result<Response, ApiError> {
    let caller = Caller::Key {
        principal,
        ip: Some(peer.ip().to_string()),
    };
    turn(&app, caller, body, rid).await
}

/// Runs the turn, JSON or SSE, recording its metrics (tokens under the
/// bot's tenant, which the engine reports, for public chat too).
async fn turn(
    app: &Arc<App>,
    caller: Caller,
    body: ChatBody,
    request_id: String,
) -> Result<Response, ApiError> {
    let stream = body.stream;
    let input = ChatInput {
        bot: body.bot_id,
        message: body.message,
        conversation_id: body.conversation_id,
        user_id: body.user_id,
        request_id: Some(request_id.clone()),
    };
    let result = if stream {
        app.chat
            .chat_stream(caller, input)
            .await
            .map(|rx| sse_response(rx, app.clone(), request_id))
            .map_err(ApiError::from)
    } else {
        let timeout = Duration::from_secs(app.config.request_timeout_secs);
        match tokio::time::timeout(timeout, app.chat.chat(caller, input)).await {
            Err(_) => Err(ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "provider_timeout",
                "the request took too long",
            )),
            Ok(r) => r.map_err(ApiError::from).map(|reply| {
                app.metrics.chat_latency(reply.response_time_ms);
                app.metrics.tokens(
                    &reply.tenant_id.to_string(),
                    &reply.provider,
                    reply.usage.total_tokens as u64,
                );
                app.metrics.cost(
                    &reply.tenant_id.to_string(),
                    &reply.provider,
                    reply.cost.amount_micros,
                );
                json_response(StatusCode::OK, &reply)
            }),
        }
    };
    if let Err(e) = &result {
        match e.status.as_u16() {
            502 | 504 => app.metrics.provider_error(),
            429 => app.metrics.rate_limited(),
            _ => {}
        }
    }
    result
}

/// One server-sent event, its data JSON.
fn sse_event<T: Serialize>(name: &str, data: &T) -> Event {
    Event::default()
        .event(name)
        .json_data(data)
        .unwrap_or_else(|e| {
            tracing::error!(error = %e, "failed to serialize a stream event");
            Event::default().event(name).data("{}")
        })
}

fn sse_response(
    mut rx: tokio::sync::mpsc::Receiver<TurnEvent>,
    app: Arc<App>,
    request_id: String,
) -> Response {
    let events = futures::stream::poll_fn(move |cx| rx.poll_recv(cx)).map(move |ev| {
        match &ev {
            TurnEvent::Done(d) => {
                app.metrics.chat_latency(d.response_time_ms);
                app.metrics.time_to_first_token(d.time_to_first_token_ms);
                app.metrics.tokens(
                    &d.tenant_id.to_string(),
                    &d.provider,
                    d.usage.total_tokens as u64,
                );
                app.metrics
                    .cost(&d.tenant_id.to_string(), &d.provider, d.cost.amount_micros);
            }
            TurnEvent::Error { .. } => app.metrics.provider_error(),
            _ => {}
        }
        let event = match ev {
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
            // `/v1/chat` offers the model no tools, so no call comes; the
            // stream keeps its shape if a provider sends one anyway.
            TurnEvent::ToolCall(_) => Event::default().comment(""),
            TurnEvent::Done(done) => sse_event("done", &*done),
            TurnEvent::Error { code, message } => {
                sse_event("error", &ErrorBody::new(code, message, &request_id))
            }
        };
        Ok::<_, Infallible>(event)
    });
    let mut r = Sse::new(events).into_response();
    // Proxies (nginx) must pass each event on at once.
    r.headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use proptest::prelude::*;

    /// The bytes of one event as the response writes them.
    fn wire(event: Event) -> Bytes {
        use http_body_util::BodyExt;
        futures::executor::block_on(async move {
            let stream = futures::stream::iter([Ok::<_, Infallible>(event)]);
            Sse::new(stream)
                .into_response()
                .into_body()
                .collect()
                .await
                .unwrap()
                .to_bytes()
        })
    }

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
            let bytes = wire(sse_event("delta", &StreamDelta { content: content.clone() }));
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
            let bytes = wire(sse_event("error", &ErrorBody::new("provider_error", message.clone(), &rid)));
            let events = parse(bytes);
            prop_assert_eq!(events.len(), 1);
            let v: serde_json::Value = serde_json::from_str(&events[0].1).unwrap();
            prop_assert_eq!(v["error"]["message"].as_str().unwrap(), message.as_str());
            prop_assert_eq!(v["error"]["request_id"].as_str().unwrap(), rid.as_str());
        }
    }
}
