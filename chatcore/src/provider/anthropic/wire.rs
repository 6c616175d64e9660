//! Anthropic Messages API wire format and its mapping to our types. Pure:
//! no I/O.
//!
//! Reference: <https://docs.anthropic.com/en/api/messages> and
//! `/en/api/messages-streaming`, `/en/api/errors`.

use bytes::Bytes;
use eventsource_stream::Event;
use futures::Stream;
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde::{Deserialize, Serialize};

use crate::provider::http::{map_status_common, parse_json};
use crate::provider::sse::{Sink, SseDecoder, drive};
use crate::provider::{
    ChatRequest, ChatStream, FinishReason, ParsedCompletion, ProviderError, Role, StreamContext,
    Usage, redact,
};

/// `max_tokens` sent when the request sets none (the API requires it).
pub const DEFAULT_MAX_TOKENS: u32 = 4096;

/// A Messages request body.
#[derive(Debug, Serialize)]
pub struct WireRequest<'a> {
    /// Model id.
    pub model: &'a str,
    /// Required upper bound of generated tokens.
    pub max_tokens: u32,
    /// User and assistant turns (no system role here).
    pub messages: Vec<WireMessage<'a>>,
    /// The system prompt, top level.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    /// Sampling temperature (0..=1 for Anthropic).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    /// Stop sequences.
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    pub stop_sequences: &'a [String],
    /// `{"user_id": ...}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<WireMetadata<'a>>,
    /// Whether to stream.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub stream: bool,
}

/// A turn.
#[derive(Debug, Serialize)]
pub struct WireMessage<'a> {
    /// `user` or `assistant`.
    pub role: &'a str,
    /// Text.
    pub content: &'a str,
}

/// Request metadata.
#[derive(Debug, Serialize)]
pub struct WireMetadata<'a> {
    /// An opaque end-user id.
    pub user_id: &'a str,
}

/// Builds the request body: system messages are joined into `system`.
pub fn request<'a>(request: &'a ChatRequest, model: &'a str, stream: bool) -> WireRequest<'a> {
    let system: Vec<&str> = request
        .messages
        .iter()
        .filter(|m| m.role == Role::System)
        .map(|m| m.content.as_str())
        .collect();
    WireRequest {
        model,
        max_tokens: request.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS),
        messages: request
            .messages
            .iter()
            .filter(|m| m.role != Role::System)
            .map(|m| WireMessage {
                role: m.role.as_str(),
                content: &m.content,
            })
            .collect(),
        system: (!system.is_empty()).then(|| system.join("\n\n")),
        // Anthropic's range is 0..=1; ours (OpenAI's) is 0..=2.
        temperature: request.temperature.map(|t| t.min(1.0)),
        stop_sequences: &request.stop,
        metadata: request
            .end_user_id
            .as_deref()
            .map(|user_id| WireMetadata { user_id }),
        stream,
    }
}

/// `usage` of a message.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
pub struct WireUsage {
    /// Uncached input tokens.
    #[serde(default)]
    pub input_tokens: Option<u32>,
    /// Output tokens (cumulative in `message_delta`).
    #[serde(default)]
    pub output_tokens: Option<u32>,
    /// Input tokens written to the cache.
    #[serde(default)]
    pub cache_creation_input_tokens: Option<u32>,
    /// Input tokens read from the cache.
    #[serde(default)]
    pub cache_read_input_tokens: Option<u32>,
}

impl WireUsage {
    /// All input tokens, cached or not.
    pub fn prompt(&self) -> Option<u32> {
        let parts = [
            self.input_tokens,
            self.cache_creation_input_tokens,
            self.cache_read_input_tokens,
        ];
        parts
            .iter()
            .any(Option::is_some)
            .then(|| parts.iter().flatten().sum())
    }
}

/// A Messages response (also the `message` of `message_start`).
#[derive(Debug, Deserialize)]
pub struct WireResponse {
    /// Model that answered.
    #[serde(default)]
    pub model: Option<String>,
    /// Content blocks; we read `text` ones.
    #[serde(default)]
    pub content: Vec<WireBlock>,
    /// Why it stopped.
    #[serde(default)]
    pub stop_reason: Option<String>,
    /// Usage.
    #[serde(default)]
    pub usage: WireUsage,
}

/// A content block.
#[derive(Debug, Deserialize)]
pub struct WireBlock {
    /// `text`, `thinking`, `tool_use`, ...
    #[serde(rename = "type")]
    pub kind: String,
    /// Text of a `text` block.
    #[serde(default)]
    pub text: Option<String>,
}

/// Maps a stop reason.
pub fn finish_reason(s: &str) -> FinishReason {
    match s {
        "end_turn" | "stop_sequence" => FinishReason::Stop,
        "max_tokens" => FinishReason::Length,
        "refusal" => FinishReason::ContentFilter,
        other => FinishReason::Other(other.to_owned()),
    }
}

/// Text, finish reason, usage and model of a response body.
pub fn parse_response(provider: &str, body: &[u8]) -> Result<ParsedCompletion, ProviderError> {
    let r: WireResponse = parse_json(provider, body, None)?;
    let text: String = r
        .content
        .iter()
        .filter(|b| b.kind == "text")
        .filter_map(|b| b.text.as_deref())
        .collect();
    let usage = match (r.usage.prompt(), r.usage.output_tokens) {
        (Some(p), Some(c)) => Some(Usage::reported(p, c)),
        _ => None,
    };
    let reason = r
        .stop_reason
        .as_deref()
        .map_or(FinishReason::Stop, finish_reason);
    Ok(ParsedCompletion {
        content: text,
        finish_reason: reason,
        usage,
        model: r.model,
    })
}

/// An error body: `{"type": "error", "error": {"type", "message"}}`.
#[derive(Debug, Deserialize)]
pub struct WireError {
    /// The detail.
    pub error: WireErrorDetail,
}

/// Error detail.
#[derive(Debug, Deserialize)]
pub struct WireErrorDetail {
    /// `invalid_request_error`, `overloaded_error`, ...
    #[serde(rename = "type", default)]
    pub kind: String,
    /// Message.
    #[serde(default)]
    pub message: String,
}

fn status_of(kind: &str) -> StatusCode {
    match kind {
        "invalid_request_error" => StatusCode::BAD_REQUEST,
        "authentication_error" => StatusCode::UNAUTHORIZED,
        "permission_error" => StatusCode::FORBIDDEN,
        "not_found_error" => StatusCode::NOT_FOUND,
        "request_too_large" => StatusCode::PAYLOAD_TOO_LARGE,
        "rate_limit_error" => StatusCode::TOO_MANY_REQUESTS,
        "overloaded_error" => StatusCode::from_u16(529).unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn map_detail(
    provider: &str,
    status: StatusCode,
    headers: &HeaderMap,
    d: &WireErrorDetail,
    raw: &str,
    secret: Option<&str>,
) -> ProviderError {
    let message = redact(&format!("{}: {}", d.kind, d.message), secret);
    let lower = d.message.to_ascii_lowercase();
    if d.kind == "invalid_request_error"
        && (lower.contains("prompt is too long") || lower.contains("context window"))
    {
        return ProviderError::ContextTooLong {
            provider: provider.to_owned(),
            message,
        };
    }
    map_status_common(provider, status, headers, message, raw, secret)
}

/// Maps a failure status and body (529 overloaded is unavailable).
pub fn map_error(
    provider: &str,
    status: StatusCode,
    headers: &HeaderMap,
    body: &str,
    secret: Option<&str>,
) -> ProviderError {
    match serde_json::from_str::<WireError>(body) {
        Ok(e) => map_detail(provider, status, headers, &e.error, body, secret),
        Err(_) => map_status_common(
            provider,
            status,
            headers,
            redact(body, secret),
            body,
            secret,
        ),
    }
}

/// A stream event's data; only the fields we read.
#[derive(Debug, Deserialize)]
struct WireEvent {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    message: Option<WireResponse>,
    #[serde(default)]
    delta: Option<WireEventDelta>,
    #[serde(default)]
    usage: Option<WireUsage>,
    #[serde(default)]
    error: Option<WireErrorDetail>,
}

#[derive(Debug, Deserialize)]
struct WireEventDelta {
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    stop_reason: Option<String>,
}

/// SSE decoder of Messages stream events.
#[derive(Debug, Default)]
pub(crate) struct AnthropicDecoder {
    model: Option<String>,
    prompt_tokens: Option<u32>,
    output_tokens: Option<u32>,
    stop_reason: Option<String>,
}

impl SseDecoder for AnthropicDecoder {
    fn on_event(&mut self, event: &Event, sink: &mut Sink) -> Result<(), ProviderError> {
        if event.data.trim().is_empty() {
            return Ok(());
        }
        let provider = sink.ctx.provider.clone();
        let ev: WireEvent = parse_json(&provider, event.data.as_bytes(), None)?;
        match ev.kind.as_str() {
            "message_start" => {
                if let Some(m) = ev.message {
                    self.model = m.model;
                    self.prompt_tokens = m.usage.prompt();
                    self.output_tokens = m.usage.output_tokens;
                }
            }
            "content_block_delta" => {
                if let Some(d) = ev.delta
                    && d.kind.as_deref() == Some("text_delta")
                    && let Some(t) = d.text
                {
                    sink.delta(&t);
                }
            }
            "message_delta" => {
                if let Some(d) = ev.delta
                    && d.stop_reason.is_some()
                {
                    self.stop_reason = d.stop_reason;
                }
                if let Some(u) = ev.usage {
                    // Cumulative counts: the last one wins.
                    if let Some(o) = u.output_tokens {
                        self.output_tokens = Some(o);
                    }
                    if let Some(p) = u.prompt() {
                        self.prompt_tokens = Some(p);
                    }
                }
            }
            "message_stop" => {
                let usage = match (self.prompt_tokens, self.output_tokens) {
                    (Some(p), Some(c)) => Some(Usage::reported(p, c)),
                    _ => None,
                };
                let reason = self
                    .stop_reason
                    .as_deref()
                    .map_or(FinishReason::Stop, finish_reason);
                sink.finish(usage, reason, self.model.take());
            }
            "error" => {
                let d = ev.error.unwrap_or(WireErrorDetail {
                    kind: "api_error".to_owned(),
                    message: String::new(),
                });
                // It arrives after HTTP 200: its type carries the status.
                return Err(map_detail(
                    &provider,
                    status_of(&d.kind),
                    &HeaderMap::new(),
                    &d,
                    &event.data,
                    None,
                ));
            }
            // ping, content_block_start, content_block_stop, and event
            // types added later.
            _ => {}
        }
        Ok(())
    }
}

/// Decodes an Anthropic Messages SSE byte stream into
/// [`crate::provider::ChatEvent`]s. Pure: usable on recorded bytes.
pub fn parse_stream<S>(bytes: S, ctx: StreamContext) -> ChatStream
where
    S: Stream<Item = Result<Bytes, ProviderError>> + Send + 'static,
{
    drive(bytes, AnthropicDecoder::default(), ctx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::{ChatEvent, ChatMessage};
    use futures::StreamExt;

    #[test]
    fn request_body_shape() {
        let req = ChatRequest::new(vec![
            ChatMessage::system("be brief"),
            ChatMessage::user("hi"),
            ChatMessage::assistant("hello"),
            ChatMessage::user("again"),
        ])
        .with_temperature(1.5)
        .with_end_user_id("u1");
        let v = serde_json::to_value(request(&req, "claude-sonnet-4-5", true)).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "model": "claude-sonnet-4-5",
                "max_tokens": DEFAULT_MAX_TOKENS,
                "messages": [
                    {"role": "user", "content": "hi"},
                    {"role": "assistant", "content": "hello"},
                    {"role": "user", "content": "again"}
                ],
                "system": "be brief",
                "temperature": 1.0,
                "metadata": {"user_id": "u1"},
                "stream": true
            })
        );
    }

    #[test]
    fn parses_recorded_response() {
        let body = br#"{"id":"msg_013Zva2CMHLNnXjNJJKqJ2EF","type":"message","role":"assistant","model":"claude-sonnet-4-5-20250929","content":[{"type":"text","text":"Hi! My name is Claude."}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":2095,"output_tokens":503,"cache_read_input_tokens":5}}"#;
        let p = parse_response("anthropic", body).unwrap();
        assert_eq!(p.content, "Hi! My name is Claude.");
        assert_eq!(p.finish_reason, FinishReason::Stop);
        assert_eq!(p.usage, Some(Usage::reported(2100, 503)));
        assert_eq!(p.model.as_deref(), Some("claude-sonnet-4-5-20250929"));
        assert_eq!(
            finish_reason("pause_turn"),
            FinishReason::Other("pause_turn".into())
        );
    }

    #[test]
    fn maps_error_bodies() {
        let h = HeaderMap::new();
        let over = r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;
        let e = map_error(
            "anthropic",
            StatusCode::from_u16(529).unwrap(),
            &h,
            over,
            None,
        );
        assert!(
            matches!(
                e,
                ProviderError::Unavailable {
                    status: Some(529),
                    ..
                }
            ),
            "{e:?}"
        );
        let long = r#"{"type":"error","error":{"type":"invalid_request_error","message":"prompt is too long: 210000 tokens > 200000 maximum"}}"#;
        assert!(matches!(
            map_error("anthropic", StatusCode::BAD_REQUEST, &h, long, None),
            ProviderError::ContextTooLong { .. }
        ));
    }

    const RECORDED: &str = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":\"claude-sonnet-4-5-20250929\",\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":25,\"output_tokens\":1}}}\n\n\
event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n\
event: ping\ndata: {\"type\": \"ping\"}\n\n\
event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hello\"}}\n\n\
event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"!\"}}\n\n\
event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n\
event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":15}}\n\n\
event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";

    async fn collect(s: &str) -> Vec<Result<ChatEvent, ProviderError>> {
        let ctx = StreamContext::new("anthropic", "claude", vec![ChatMessage::user("hi")]);
        let chunks: Vec<Result<Bytes, ProviderError>> = s
            .as_bytes()
            .chunks(5)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        parse_stream(futures::stream::iter(chunks), ctx)
            .collect()
            .await
    }

    #[tokio::test]
    async fn parses_recorded_stream() {
        let events: Vec<ChatEvent> = collect(RECORDED)
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
        assert_eq!(events[0], ChatEvent::Delta("Hello".into()));
        assert_eq!(events[1], ChatEvent::Delta("!".into()));
        let ChatEvent::Done(end) = &events[2] else {
            panic!()
        };
        assert_eq!(end.usage, Usage::reported(25, 15));
        assert_eq!(end.model, "claude-sonnet-4-5-20250929");
        assert_eq!(events.len(), 3);
    }

    #[tokio::test]
    async fn error_event_after_text_interrupts() {
        let cut = &RECORDED[..RECORDED.find("event: content_block_stop").unwrap()];
        let s = format!(
            "{cut}event: error\ndata: {{\"type\":\"error\",\"error\":{{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}}}\n\n"
        );
        let events = collect(&s).await;
        assert_eq!(events.len(), 3);
        match &events[2] {
            Err(ProviderError::StreamInterrupted {
                partial,
                cause: Some(c),
                ..
            }) => {
                assert_eq!(partial, "Hello!");
                assert!(matches!(
                    **c,
                    ProviderError::Unavailable {
                        status: Some(529),
                        ..
                    }
                ));
            }
            e => panic!("{e:?}"),
        }
        // Before any text: the error itself, retryable.
        let early = &RECORDED[..RECORDED.find("event: content_block_delta").unwrap()];
        let s = format!(
            "{early}event: error\ndata: {{\"type\":\"error\",\"error\":{{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}}}\n\n"
        );
        let events = collect(&s).await;
        assert_eq!(events.len(), 1);
        assert!(events[0].as_ref().unwrap_err().is_retryable());
    }
}
