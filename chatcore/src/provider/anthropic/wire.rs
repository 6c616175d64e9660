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
    ChatMessage, ChatRequest, ChatStream, FinishReason, ParsedCompletion, ProviderError,
    ResponseFormat, Role, StreamContext, ToolCall, ToolChoice, Usage, redact,
};

/// The tool through which structured output is asked of Anthropic: a
/// forced call whose input schema is the requested schema. Its input is
/// the answer, unwrapped into text by the parsers.
pub const JSON_TOOL: &str = "chatcore_json_response";

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
    /// Nucleus sampling.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f32>,
    /// Tool definitions.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<WireTool<'a>>,
    /// `{"type": "auto" | "any" | "tool" | "none", ...}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<serde_json::Value>,
}

/// A turn.
#[derive(Debug, Serialize)]
pub struct WireMessage<'a> {
    /// `user` or `assistant`.
    pub role: &'a str,
    /// Text, or content blocks.
    pub content: WireContent<'a>,
}

/// A turn's content: a string, or blocks.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum WireContent<'a> {
    /// Plain text.
    Text(&'a str),
    /// Content blocks.
    Blocks(Vec<WireBlockOut<'a>>),
}

/// A content block of a request.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum WireBlockOut<'a> {
    /// Text.
    Text {
        /// The text.
        text: &'a str,
    },
    /// An image.
    Image {
        /// `{"type": "base64", "media_type", "data"}` or `{"type": "url", "url"}`.
        source: serde_json::Value,
    },
    /// A tool call the model made earlier.
    ToolUse {
        /// Call id.
        id: &'a str,
        /// Tool name.
        name: &'a str,
        /// Arguments as a JSON object.
        input: serde_json::Value,
    },
    /// The result of a call.
    ToolResult {
        /// The call.
        tool_use_id: &'a str,
        /// The result text.
        content: &'a str,
    },
}

/// A tool definition.
#[derive(Debug, Serialize)]
pub struct WireTool<'a> {
    /// Name.
    pub name: &'a str,
    /// Description.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<&'a str>,
    /// JSON Schema of the input.
    pub input_schema: std::borrow::Cow<'a, serde_json::Value>,
}

fn image_source(url: &str, data: Option<(&str, &str)>) -> serde_json::Value {
    match data {
        Some((media_type, data)) => {
            serde_json::json!({"type": "base64", "media_type": media_type, "data": data})
        }
        None => serde_json::json!({"type": "url", "url": url}),
    }
}

fn blocks(m: &ChatMessage) -> Vec<WireBlockOut<'_>> {
    let mut out = Vec::new();
    if m.role == Role::Tool {
        out.push(WireBlockOut::ToolResult {
            tool_use_id: m.tool_call_id.as_deref().unwrap_or_default(),
            content: &m.content,
        });
        return out;
    }
    if !m.content.is_empty() {
        out.push(WireBlockOut::Text { text: &m.content });
    }
    for i in &m.images {
        out.push(WireBlockOut::Image {
            source: image_source(&i.url, i.data()),
        });
    }
    for c in &m.tool_calls {
        let input = serde_json::from_str::<serde_json::Value>(&c.arguments)
            .ok()
            .filter(serde_json::Value::is_object)
            .unwrap_or_else(|| serde_json::json!({}));
        out.push(WireBlockOut::ToolUse {
            id: &c.id,
            name: &c.name,
            input,
        });
    }
    out
}

/// The turns: tool results go in a user turn (consecutive results in one),
/// plain text stays a string.
fn messages(request: &ChatRequest) -> Vec<WireMessage<'_>> {
    let mut out: Vec<WireMessage<'_>> = Vec::new();
    let mut prev_tool = false;
    for m in request.messages.iter().filter(|m| m.role != Role::System) {
        let plain = m.images.is_empty() && m.tool_calls.is_empty() && m.role != Role::Tool;
        let is_tool = m.role == Role::Tool;
        if is_tool
            && prev_tool
            && let Some(WireMessage {
                content: WireContent::Blocks(b),
                ..
            }) = out.last_mut()
        {
            b.extend(blocks(m));
            continue;
        }
        prev_tool = is_tool;
        out.push(WireMessage {
            role: if m.role == Role::Assistant {
                "assistant"
            } else {
                "user"
            },
            content: if plain {
                WireContent::Text(&m.content)
            } else {
                WireContent::Blocks(blocks(m))
            },
        });
    }
    out
}

/// Request metadata.
#[derive(Debug, Serialize)]
pub struct WireMetadata<'a> {
    /// An opaque end-user id.
    pub user_id: &'a str,
}

/// Builds the request body: system messages are joined into `system`.
///
/// Structured output (`json_object`, `json_schema`) is a forced call of
/// [`JSON_TOOL`], whose input schema is the schema.
pub fn request<'a>(request: &'a ChatRequest, model: &'a str, stream: bool) -> WireRequest<'a> {
    use std::borrow::Cow;
    let mut tools: Vec<WireTool<'a>> = request
        .tools
        .iter()
        .map(|t| WireTool {
            name: &t.name,
            description: t.description.as_deref(),
            input_schema: Cow::Borrowed(&t.parameters),
        })
        .collect();
    let schema = match &request.response_format {
        Some(ResponseFormat::JsonSchema { schema, .. }) => Some(Cow::Borrowed(schema)),
        Some(ResponseFormat::JsonObject) => Some(Cow::Owned(serde_json::json!({"type": "object"}))),
        _ => None,
    };
    let no_parallel = request.parallel_tool_calls == Some(false);
    let mut tool_choice = match &request.tool_choice {
        _ if request.tools.is_empty() => None,
        Some(ToolChoice::Auto) => Some(serde_json::json!({"type": "auto"})),
        Some(ToolChoice::None) => Some(serde_json::json!({"type": "none"})),
        Some(ToolChoice::Required) => Some(serde_json::json!({"type": "any"})),
        Some(ToolChoice::Function(name)) => Some(serde_json::json!({"type": "tool", "name": name})),
        None if no_parallel => Some(serde_json::json!({"type": "auto"})),
        None => None,
    };
    if let Some(schema) = schema {
        tools.push(WireTool {
            name: JSON_TOOL,
            description: Some("Give the answer as this tool's input."),
            input_schema: schema,
        });
        tool_choice = Some(serde_json::json!({"type": "tool", "name": JSON_TOOL}));
    }
    if no_parallel
        && let Some(c) = tool_choice.as_mut()
        && c["type"] != "none"
    {
        c["disable_parallel_tool_use"] = true.into();
    }
    let system: Vec<&str> = request
        .messages
        .iter()
        .filter(|m| m.role == Role::System)
        .map(|m| m.content.as_str())
        .collect();
    WireRequest {
        model,
        max_tokens: request.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS),
        messages: messages(request),
        system: (!system.is_empty()).then(|| system.join("\n\n")),
        // Anthropic's range is 0..=1; ours (OpenAI's) is 0..=2.
        temperature: request.temperature.map(|t| t.min(1.0)),
        stop_sequences: &request.stop,
        metadata: request
            .end_user_id
            .as_deref()
            .map(|user_id| WireMetadata { user_id }),
        stream,
        top_p: request.top_p,
        tools,
        tool_choice,
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
    /// Id of a `tool_use` block.
    #[serde(default)]
    pub id: Option<String>,
    /// Tool name of a `tool_use` block.
    #[serde(default)]
    pub name: Option<String>,
    /// Input of a `tool_use` block.
    #[serde(default)]
    pub input: Option<serde_json::Value>,
}

impl WireBlock {
    fn is_tool(&self) -> bool {
        self.kind == "tool_use"
    }

    fn is_json_answer(&self) -> bool {
        self.is_tool() && self.name.as_deref() == Some(JSON_TOOL)
    }
}

/// Maps a stop reason.
pub fn finish_reason(s: &str) -> FinishReason {
    match s {
        "end_turn" | "stop_sequence" => FinishReason::Stop,
        "max_tokens" => FinishReason::Length,
        "refusal" => FinishReason::ContentFilter,
        "tool_use" => FinishReason::ToolCalls,
        other => FinishReason::Other(other.to_owned()),
    }
}

/// Text, finish reason, usage and model of a response body.
pub fn parse_response(provider: &str, body: &[u8]) -> Result<ParsedCompletion, ProviderError> {
    let r: WireResponse = parse_json(provider, body, None)?;
    let mut text = String::new();
    let mut tool_calls = Vec::new();
    let mut json_answer = false;
    for b in &r.content {
        if b.kind == "text" {
            text.push_str(b.text.as_deref().unwrap_or_default());
        } else if b.is_json_answer() {
            json_answer = true;
            let input = b.input.clone().unwrap_or_else(|| serde_json::json!({}));
            text = input.to_string();
        } else if b.is_tool() {
            tool_calls.push(ToolCall {
                id: b.id.clone().unwrap_or_default(),
                name: b.name.clone().unwrap_or_default(),
                arguments: b
                    .input
                    .as_ref()
                    .map_or_else(|| "{}".to_owned(), ToString::to_string),
            });
        }
    }
    if json_answer {
        // Only the answer: text the model wrote around the forced call is
        // not part of it.
        tool_calls.clear();
    }
    let usage = match (r.usage.prompt(), r.usage.output_tokens) {
        (Some(p), Some(c)) => {
            Some(Usage::reported(p, c).with_cached(r.usage.cache_read_input_tokens.unwrap_or(0)))
        }
        _ => None,
    };
    let reason = match r.stop_reason.as_deref() {
        // The forced answer call is the answer, not a call to make.
        Some("tool_use") if json_answer => FinishReason::Stop,
        r => r.map_or(FinishReason::Stop, finish_reason),
    };
    Ok(ParsedCompletion {
        content: text,
        tool_calls,
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
    index: Option<u32>,
    #[serde(default)]
    content_block: Option<WireBlock>,
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
    partial_json: Option<String>,
    #[serde(default)]
    stop_reason: Option<String>,
}

/// What a streamed content block is to us.
#[derive(Debug, Clone, Copy)]
enum BlockUse {
    /// Tool call number `n`, with whether any argument piece came.
    Tool(u32, bool),
    /// The structured answer: its input is text.
    JsonAnswer,
}

/// SSE decoder of Messages stream events.
#[derive(Debug, Default)]
pub(crate) struct AnthropicDecoder {
    model: Option<String>,
    prompt_tokens: Option<u32>,
    output_tokens: Option<u32>,
    stop_reason: Option<String>,
    /// Blocks by their index.
    blocks: Vec<(u32, BlockUse)>,
    json_answer: bool,
    /// Input tokens read from the cache (`cache_read_input_tokens`).
    cached_tokens: Option<u32>,
}

impl AnthropicDecoder {
    fn block(&mut self, index: Option<u32>) -> Option<&mut BlockUse> {
        let i = index?;
        self.blocks
            .iter_mut()
            .find(|(b, _)| *b == i)
            .map(|(_, u)| u)
    }
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
                    self.cached_tokens = m.usage.cache_read_input_tokens;
                    self.output_tokens = m.usage.output_tokens;
                }
            }
            "content_block_start" => {
                if let (Some(i), Some(b)) = (ev.index, ev.content_block) {
                    if b.is_json_answer() {
                        self.json_answer = true;
                        self.blocks.push((i, BlockUse::JsonAnswer));
                    } else if b.is_tool() {
                        let n = sink.tool_start(
                            b.id.unwrap_or_default(),
                            b.name.unwrap_or_default(),
                            "",
                        );
                        self.blocks.push((i, BlockUse::Tool(n, false)));
                    } else if let Some(t) = b.text {
                        sink.delta(&t);
                    }
                }
            }
            "content_block_delta" => {
                let Some(d) = ev.delta else { return Ok(()) };
                match d.kind.as_deref() {
                    Some("text_delta") => {
                        if let Some(t) = d.text {
                            sink.delta(&t);
                        }
                    }
                    Some("input_json_delta") => {
                        let piece = d.partial_json.unwrap_or_default();
                        match self.block(ev.index) {
                            Some(BlockUse::JsonAnswer) => sink.delta(&piece),
                            Some(BlockUse::Tool(n, any)) => {
                                let n = *n;
                                *any |= !piece.is_empty();
                                sink.tool_arguments(n, &piece);
                            }
                            None => {}
                        }
                    }
                    _ => {}
                }
            }
            "content_block_stop" => {
                // A call without input streams no piece: its arguments
                // are the empty object, as OpenAI would send.
                if let Some(BlockUse::Tool(n, false)) = self.block(ev.index).copied() {
                    sink.tool_arguments(n, "{}");
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
                    if let Some(c) = u.cache_read_input_tokens {
                        self.cached_tokens = Some(c);
                    }
                }
            }
            "message_stop" => {
                let usage = match (self.prompt_tokens, self.output_tokens) {
                    (Some(p), Some(c)) => {
                        Some(Usage::reported(p, c).with_cached(self.cached_tokens.unwrap_or(0)))
                    }
                    _ => None,
                };
                let reason = match self.stop_reason.as_deref() {
                    Some("tool_use") if self.json_answer => FinishReason::Stop,
                    r => r.map_or(FinishReason::Stop, finish_reason),
                };
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
            // ping, and event types added later.
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
        // Cache reads are part of the prompt, and counted as cached.
        assert_eq!(p.usage, Some(Usage::reported(2100, 503).with_cached(5)));
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

    #[tokio::test]
    async fn cache_reads_are_counted_in_a_recorded_stream() {
        // Recorded from the Messages API with a cached system prompt.
        let s = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_01\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-sonnet-4-5-20250929\",\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":12,\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":2048,\"output_tokens\":1}}}\n\n\
event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n\
event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi\"}}\n\n\
event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n\
event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":7}}\n\n\
event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";
        let events = collect(s).await;
        let Some(Ok(ChatEvent::Done(end))) = events.last() else {
            panic!("{events:?}")
        };
        assert_eq!(end.usage, Usage::reported(2060, 7).with_cached(2048));
    }
}
