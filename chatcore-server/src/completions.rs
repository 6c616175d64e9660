//! The OpenAI-compatible API: `POST /v1/chat/completions`, `GET /v1/models`
//! and `GET /v1/models/{id}`, so that OpenAI's SDKs and the clients built on
//! them talk to chatcore bots. Bots are models; a chatcore API key is the
//! bearer. The protocol's shapes are [`chatcore::openai_compat`]'s; this
//! module only translates HTTP. Errors on these routes carry OpenAI's
//! `type` and `param` next to our `code`, `message` and `request_id`
//! (the `finish` layer writes them, see [`is_openai_route`]).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use chatcore::engine::{Caller, ChatReply, CompletionInput, TurnEvent, TurnOptions};
use chatcore::openai_compat::{self as oa, CompletionRequest, ParamError, ReplyHead};
use chatcore::provider::Usage;
use futures::StreamExt;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use serde::Serialize;
use serde_json::{Value, json};
use utoipa::ToSchema;

use crate::App;
use crate::auth::ChatKey;
use crate::chat::SseEvent;
use crate::http::{ApiError, Peer, Rid, json_response, mime};

/// The header that names the stored conversation a request adds its turn
/// to (and that every reply carries).
pub const CONVERSATION_HEADER: HeaderName = HeaderName::from_static("x-chatcore-conversation-id");

/// Whether `route` (a matched route template) is one of this module's, whose
/// errors take OpenAI's shape.
pub fn is_openai_route(route: &str) -> bool {
    route == "/v1/chat/completions" || route == "/v1/models" || route.starts_with("/v1/models/")
}

/// An OpenAI `model` object: one bot.
#[derive(Debug, Serialize, ToSchema)]
pub struct Model {
    /// The bot's slug (its id works too, in requests).
    pub id: String,
    /// Always `model`.
    #[schema(inline, schema_with = model_object_schema)]
    pub object: &'static str,
    /// When the bot was created, Unix seconds.
    pub created: i64,
    /// The tenant's slug.
    pub owned_by: String,
}

fn model_object_schema() -> utoipa::openapi::ObjectBuilder {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::Type::String)
        .enum_values(Some(["model"]))
}

fn list_object_schema() -> utoipa::openapi::ObjectBuilder {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::Type::String)
        .enum_values(Some(["list"]))
}

/// The bots a key may use, as OpenAI lists models.
#[derive(Debug, Serialize, ToSchema)]
pub struct ModelList {
    /// Always `list`.
    #[schema(inline, schema_with = list_object_schema)]
    pub object: &'static str,
    /// The models.
    pub data: Vec<Model>,
}

fn model_of(bot: &chatcore::domain::Bot, owner: &str) -> Model {
    Model {
        id: bot.slug.clone(),
        object: "model",
        created: bot.created_at.timestamp(),
        owned_by: owner.to_string(),
    }
}

/// List the bots as models
///
/// OpenAI's `GET /v1/models`: the active bots of the key's tenant that the
/// key may chat with (its bot list and each bot's `api_key_access`).
#[utoipa::path(get, path = "/v1/models", tag = "openai",
    security(("apiKey" = ["chat"])),
    responses((status = 200, description = "The models", body = ModelList)))]
pub async fn list_models(
    State(app): State<Arc<App>>,
    ChatKey(principal): ChatKey,
) -> Result<Response, ApiError> {
    let bots = app.chat.models(&principal).await?;
    let owner = &principal.tenant.slug;
    let list = ModelList {
        object: "list",
        data: bots.iter().map(|b| model_of(b, owner)).collect(),
    };
    Ok(json_response(StatusCode::OK, &list))
}

/// One bot as a model
///
/// OpenAI's `GET /v1/models/{model}`, by the bot's slug or id; 404 when the
/// key may not use it.
#[utoipa::path(get, path = "/v1/models/{model}", tag = "openai",
    params(("model" = String, Path, description = "The bot's slug or id")),
    security(("apiKey" = ["chat"])),
    responses((status = 200, description = "The model", body = Model)))]
pub async fn get_model(
    State(app): State<Arc<App>>,
    ChatKey(principal): ChatKey,
    Path(model): Path<String>,
) -> Result<Response, ApiError> {
    chatcore::text::check_text("model", &model)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let bot = app.chat.model(&principal, &model).await?;
    Ok(json_response(
        StatusCode::OK,
        &model_of(&bot, &principal.tenant.slug),
    ))
}

fn param_error(e: ParamError) -> ApiError {
    let mut api = ApiError::bad_request(e.message);
    api.param = (!e.param.is_empty()).then_some(e.param);
    api
}

/// Create a chat completion
///
/// OpenAI's chat completions protocol
/// (<https://platform.openai.com/docs/api-reference/chat/create>): `model`
/// is one of the key's bots (slug or id), `messages` the conversation as
/// the client holds it. The bot applies as in `/v1/chat`: its system prompt
/// first, then its retrieved context, guardrails, limits, retries and
/// fallback. Each request is one stored turn (what the client sent after
/// the last assistant message, and the reply) in the conversation that the
/// `X-Chatcore-Conversation-Id` header names, or in a new one; the reply
/// carries the header. With `"stream": true` the reply is
/// `chat.completion.chunk` events, then `data: [DONE]`; a failure mid-stream
/// is an `{"error": ...}` event, then `[DONE]`. `n` other than 1 is refused;
/// fields chatcore does not know are ignored.
#[utoipa::path(post, path = "/v1/chat/completions", tag = "openai",
    request_body(content = Object, description = "OpenAI's chat completion request", content_type = "application/json"),
    params(("X-Chatcore-Conversation-Id" = Option<String>, Header,
        description = "The stored conversation to add this turn to (the reply names it)")),
    security(("apiKey" = ["chat"])),
    responses((status = 200, description = "A `chat.completion`, or a stream of `chat.completion.chunk`s",
        headers(("X-Chatcore-Conversation-Id" = String, description = "The stored conversation")),
        content((Object = "application/json"), (SseEvent = "text/event-stream")))))]
pub async fn chat_completions(
    State(app): State<Arc<App>>,
    Peer(peer): Peer,
    Rid(rid): Rid,
    ChatKey(principal): ChatKey,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    if mime(&headers) != "application/json" {
        return Err(ApiError::unsupported_media_type(
            "send the body as application/json",
        ));
    }
    chatcore::text::check_json_body(&body).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let parsed = CompletionRequest::from_json(&body)
        .and_then(CompletionRequest::parse)
        .map_err(param_error)?;
    if !parsed.ignored.is_empty() {
        tracing::debug!(fields = ?parsed.ignored, "chat completion: fields ignored");
    }
    let conversation_id = match headers.get(&CONVERSATION_HEADER) {
        Some(v) => Some(
            v.to_str()
                .map_err(|_| {
                    let mut e = ApiError::bad_request(
                        "X-Chatcore-Conversation-Id: not a valid conversation id",
                    );
                    e.param = Some("X-Chatcore-Conversation-Id".into());
                    e
                })?
                .to_string(),
        ),
        None => None,
    };
    let head = ReplyHead {
        id: format!("chatcmpl-{}", uuid::Uuid::now_v7().simple()),
        created: chrono::Utc::now().timestamp(),
        model: parsed.model.clone(),
    };
    let (stream, include_usage) = (parsed.stream, parsed.include_usage);
    let input = CompletionInput {
        bot: parsed.model,
        messages: parsed.messages,
        options: TurnOptions {
            temperature: parsed.temperature,
            top_p: parsed.top_p,
            max_tokens: parsed.max_tokens,
            stop: parsed.stop,
            seed: parsed.seed,
            presence_penalty: parsed.presence_penalty,
            frequency_penalty: parsed.frequency_penalty,
            tools: parsed.tools,
            tool_choice: parsed.tool_choice,
            parallel_tool_calls: parsed.parallel_tool_calls,
            response_format: parsed.response_format,
        },
        conversation_id,
        user_id: parsed.user,
        request_id: Some(rid.clone()),
    };
    let caller = Caller::Key {
        principal,
        ip: Some(peer.ip().to_string()),
    };
    let result = if stream {
        match app.chat.complete_stream(caller, input).await {
            Ok(rx) => Ok(sse_response(rx, app.clone(), head, include_usage, rid).await),
            Err(e) => Err(ApiError::from(e)),
        }
    } else {
        let timeout = Duration::from_secs(app.config.request_timeout_secs);
        match tokio::time::timeout(timeout, app.chat.complete(caller, input)).await {
            Err(_) => Err(ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "provider_timeout",
                "the request took too long",
            )),
            Ok(Err(e)) => Err(ApiError::from(e)),
            Ok(Ok(reply)) => Ok(completion_response(&app, &head, reply)),
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

fn usage_of(u: &chatcore::engine::UsageReply) -> Usage {
    Usage {
        prompt_tokens: u.prompt_tokens,
        completion_tokens: u.completion_tokens,
        total_tokens: u.total_tokens,
        estimated: u.estimated,
        cached_tokens: u.cached_tokens,
    }
}

/// Adds chatcore's extension to OpenAI's `usage`: the turn's cost
/// (`cost_micros`, `cost_currency`, `cost_priced`) and the cached prompt
/// tokens in OpenAI's own `prompt_tokens_details.cached_tokens`.
fn with_cost(
    mut v: Value,
    u: &chatcore::engine::UsageReply,
    cost: &chatcore::engine::CostReply,
) -> Value {
    if let Some(usage) = v.get_mut("usage").filter(|u| u.is_object()) {
        usage["prompt_tokens_details"] = json!({"cached_tokens": u.cached_tokens});
        usage["cost_micros"] = json!(cost.amount_micros);
        usage["cost_currency"] = json!(cost.currency);
        usage["cost_priced"] = json!(cost.priced);
    }
    v
}

fn conversation_header(r: &mut Response, id: impl std::fmt::Display) {
    if let Ok(v) = HeaderValue::from_str(&id.to_string()) {
        r.headers_mut().insert(CONVERSATION_HEADER, v);
    }
}

fn completion_response(app: &App, head: &ReplyHead, reply: ChatReply) -> Response {
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
    let body = oa::completion(
        head,
        &reply.content,
        &reply.tool_calls,
        &reply.finish_reason,
        &usage_of(&reply.usage),
    );
    let body = with_cost(body, &reply.usage, &reply.cost);
    let mut r = json_response(StatusCode::OK, &body);
    conversation_header(&mut r, reply.conversation_id);
    r
}

fn data(v: &Value) -> Event {
    Event::default().data(v.to_string())
}

/// The stream in OpenAI's shape: a first chunk with the role, the pieces,
/// a last chunk with the finish reason, the usage chunk when asked, then
/// `[DONE]`; an error is an `{"error": ...}` event, then `[DONE]`.
async fn sse_response(
    mut rx: tokio::sync::mpsc::Receiver<TurnEvent>,
    app: Arc<App>,
    head: ReplyHead,
    include_usage: bool,
    request_id: String,
) -> Response {
    // The engine queues `Start` before it returns the receiver.
    let conversation = match rx.recv().await {
        Some(TurnEvent::Start {
            conversation_id, ..
        }) => Some(conversation_id),
        _ => None,
    };
    let first = oa::chunk(
        &head,
        json!({"role": "assistant", "content": ""}),
        None,
        include_usage,
    );
    let head2 = head.clone();
    let events = futures::stream::poll_fn(move |cx| rx.poll_recv(cx)).flat_map(move |ev| {
        let out: Vec<Event> = match ev {
            TurnEvent::Start { .. } => Vec::new(),
            TurnEvent::Delta(text) => vec![data(&oa::chunk(
                &head2,
                json!({"content": text}),
                None,
                include_usage,
            ))],
            TurnEvent::ToolCall(d) => vec![data(&oa::chunk(
                &head2,
                oa::tool_delta(&d),
                None,
                include_usage,
            ))],
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
                let mut v = vec![data(&oa::chunk(
                    &head2,
                    json!({}),
                    Some(&d.finish_reason),
                    include_usage,
                ))];
                if include_usage {
                    v.push(data(&with_cost(
                        oa::usage_chunk(&head2, &usage_of(&d.usage)),
                        &d.usage,
                        &d.cost,
                    )));
                }
                v.push(Event::default().data("[DONE]"));
                v
            }
            TurnEvent::Error { code, message } => {
                app.metrics.provider_error();
                let mut e = ApiError::new(StatusCode::BAD_GATEWAY, code, message);
                e.status = stream_error_status(code);
                let body = serde_json::to_value(e.openai_body(&request_id))
                    .unwrap_or_else(|_| json!({"error": {"message": "error"}}));
                vec![data(&body), Event::default().data("[DONE]")]
            }
        };
        futures::stream::iter(out.into_iter().map(Ok::<_, Infallible>))
    });
    let events = futures::stream::iter([Ok::<_, Infallible>(data(&first))]).chain(events);
    let mut r = Sse::new(events).into_response();
    r.headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    r.headers_mut().insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache"),
    );
    if let Some(c) = conversation {
        conversation_header(&mut r, c);
    }
    r
}

/// The status an error event's `type` follows (a stream has answered 200
/// already; the event says what the status would have been).
fn stream_error_status(code: &str) -> StatusCode {
    match code {
        "provider_timeout" => StatusCode::GATEWAY_TIMEOUT,
        "rate_limited" => StatusCode::TOO_MANY_REQUESTS,
        "unavailable" => StatusCode::SERVICE_UNAVAILABLE,
        "internal" => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::BAD_GATEWAY,
    }
}
