//! The offline, deterministic `mock` provider, for demos and engine tests.
//!
//! No network. Its behaviour follows the model name:
//!
//! | model | behaviour |
//! | --- | --- |
//! | `echo` | replies with the last user message |
//! | `slow` | the canned reply, each delta delayed by `delay_ms` (default 50 ms, `tokio::time`) |
//! | `slow-echo` | the last user message, word by word, each delayed like `slow` (streams as long as the message) |
//! | `error-500` | [`ProviderError::Unavailable`] with status 500 |
//! | `stream-then-error` | three deltas, then [`ProviderError::StreamInterrupted`] |
//! | `rate-limited` | [`ProviderError::RateLimited`], retry after 1 s |
//! | `hang` | never answers; the first-byte timeout ends the call |
//! | anything else | a canned reply derived from the input |
//!
//! Given tools, every answering model calls them (each, or the one
//! `tool_choice` names; only the first when `parallel_tool_calls` is false)
//! with arguments made from their schemas, streamed as OpenAI streams
//! them; after tool results it answers `The tools said: ...`.
//!
//! With a JSON `response_format`, every answering model replies with a
//! JSON object: made from the schema's properties, or `{"answer": ...}`.
//!
//! Usage counts words (plus 3 per message), reported as the vendor's own.
//! Embeddings hash a bag of words into `embedding_dimension` (default 384)
//! dimensions and L2-normalise, so texts sharing words are similar.

use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;

use super::{
    Capabilities, ChatEvent, ChatMessage, ChatRequest, ChatResponse, ChatStream, EmbedRequest,
    EmbedResponse, FinishReason, KIND_MOCK, Provider, ProviderError, ProviderSpec, ResponseFormat,
    Role, StreamEnd, TimeoutKind, Timeouts, ToolCall, ToolCallDelta, ToolChoice, Usage,
    resolve_model, validate_chat_request,
};

/// Default dimension of mock embeddings.
pub const DEFAULT_EMBEDDING_DIMENSION: usize = 384;
/// Default model of the mock.
pub const DEFAULT_MODEL: &str = "mock-1";
/// Deltas the `stream-then-error` model yields before failing.
pub const DELTAS_BEFORE_ERROR: usize = 3;

/// The offline mock provider.
#[derive(Debug, Clone)]
pub struct MockProvider {
    default_model: String,
    embedding_dimension: usize,
    delay: Duration,
    timeouts: Timeouts,
}

impl Default for MockProvider {
    fn default() -> Self {
        Self::new()
    }
}

impl MockProvider {
    /// A mock with default settings.
    pub fn new() -> Self {
        Self {
            default_model: DEFAULT_MODEL.to_owned(),
            embedding_dimension: DEFAULT_EMBEDDING_DIMENSION,
            delay: Duration::from_millis(50),
            timeouts: Timeouts::default(),
        }
    }

    /// A mock configured by a spec: `default_model`, `timeouts`, and the
    /// options `embedding_dimension` and `delay_ms`.
    pub fn from_spec(spec: &ProviderSpec) -> Result<Self, ProviderError> {
        let mut m = Self::new();
        if let Some(model) = &spec.default_model {
            m.default_model = model.clone();
        }
        m.timeouts = spec.timeouts;
        if let Some(v) = spec.options.get("embedding_dimension") {
            let d = v
                .as_u64()
                .filter(|d| (1..=65_536).contains(d))
                .ok_or_else(|| ProviderError::Config {
                    source: None,
                    message: "mock: embedding_dimension must be an integer in 1..=65536".to_owned(),
                })?;
            m.embedding_dimension = d as usize;
        }
        if let Some(v) = spec.options.get("delay_ms") {
            let ms = v.as_u64().ok_or_else(|| ProviderError::Config {
                source: None,
                message: "mock: delay_ms must be a non-negative integer".to_owned(),
            })?;
            m.delay = Duration::from_millis(ms);
        }
        Ok(m)
    }

    /// Sets the embedding dimension.
    pub fn with_embedding_dimension(mut self, dimension: usize) -> Self {
        self.embedding_dimension = dimension.max(1);
        self
    }

    /// Sets the per-delta delay of the `slow` model.
    pub fn with_delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// Sets the timeouts (the `hang` model waits for the first-byte one).
    pub fn with_timeouts(mut self, timeouts: Timeouts) -> Self {
        self.timeouts = timeouts;
        self
    }

    fn err(&self, model: &str, partial: &str) -> Option<ProviderError> {
        let provider = KIND_MOCK.to_owned();
        match model {
            "error-500" => Some(ProviderError::Unavailable {
                source: None,
                provider,
                status: Some(500),
                message: "mock internal server error".to_owned(),
            }),
            "rate-limited" => Some(ProviderError::RateLimited {
                provider,
                retry_after: Some(Duration::from_secs(1)),
                message: "mock rate limit".to_owned(),
            }),
            "stream-then-error" => Some(ProviderError::StreamInterrupted {
                provider: provider.clone(),
                partial: partial.to_owned(),
                cause: Some(Box::new(ProviderError::Unavailable {
                    source: None,
                    provider,
                    status: None,
                    message: "mock connection reset".to_owned(),
                })),
            }),
            _ => None,
        }
    }

    async fn hang(&self) -> ProviderError {
        let _ = tokio::time::timeout(self.timeouts.first_byte, std::future::pending::<()>()).await;
        ProviderError::Timeout {
            provider: KIND_MOCK.to_owned(),
            kind: TimeoutKind::FirstByte,
            after: self.timeouts.first_byte,
        }
    }
}

/// A JSON value shaped by a JSON Schema: each property of an object
/// schema filled with `text`, a number, `true`, or an empty value (the
/// mock's tool arguments and structured answers; the vendor fakes of the
/// tests use it too).
pub fn value_for(schema: &serde_json::Value, text: &str) -> serde_json::Value {
    use serde_json::{Value, json};
    match schema.get("type").and_then(Value::as_str) {
        Some("object") | None if schema.get("properties").is_some() => {
            let mut out = serde_json::Map::new();
            if let Some(Value::Object(props)) = schema.get("properties") {
                for (k, v) in props {
                    out.insert(k.clone(), value_for(v, text));
                }
            }
            Value::Object(out)
        }
        Some("object") => json!({}),
        Some("string") => match schema.get("enum").and_then(Value::as_array) {
            Some(e) if !e.is_empty() => e[0].clone(),
            _ => text.into(),
        },
        Some("integer") | Some("number") => 1.into(),
        Some("boolean") => true.into(),
        Some("array") => json!([]),
        _ => Value::Null,
    }
}

/// The tool calls of the mock, or none when it answers in
/// text (no tools, `tool_choice: none`, or tool results to read).
pub fn mock_tool_calls(request: &ChatRequest) -> Vec<ToolCall> {
    let after_results = request
        .messages
        .last()
        .is_some_and(|m| m.role == Role::Tool);
    if request.tools.is_empty() || after_results || request.tool_choice == Some(ToolChoice::None) {
        return Vec::new();
    }
    let last = request.last_user_message().unwrap_or_default();
    let mut tools: Vec<_> = match &request.tool_choice {
        Some(ToolChoice::Function(name)) => {
            request.tools.iter().filter(|t| &t.name == name).collect()
        }
        _ => request.tools.iter().collect(),
    };
    if request.parallel_tool_calls == Some(false) {
        tools.truncate(1);
    }
    let h = fnv1a(last.bytes());
    tools
        .into_iter()
        .enumerate()
        .map(|(i, t)| ToolCall {
            id: format!("call_{:012x}{i}", h & 0xffff_ffff_ffff),
            name: t.name.clone(),
            arguments: value_for(&t.parameters, last).to_string(),
        })
        .collect()
}

/// The reply of the mock to `request` under `model` (without faults),
/// shaped by the request's `response_format`.
pub fn mock_reply(model: &str, request: &ChatRequest) -> String {
    let text = mock_text(model, request);
    match &request.response_format {
        Some(ResponseFormat::JsonSchema { schema, .. }) => value_for(schema, &text).to_string(),
        Some(ResponseFormat::JsonObject) => serde_json::json!({ "answer": text }).to_string(),
        _ => text,
    }
}

fn mock_text(model: &str, request: &ChatRequest) -> String {
    {
        let results: Vec<&str> = request
            .messages
            .iter()
            .rev()
            .take_while(|m| m.role == Role::Tool)
            .map(|m| m.content.as_str())
            .collect();
        if !results.is_empty() {
            let mut results = results;
            results.reverse();
            return format!("The tools said: {}", results.join("; "));
        }
    }
    let last = request.last_user_message().unwrap_or_default();
    if model == "echo" || model == "slow-echo" {
        return last.to_owned();
    }
    const OPENINGS: [&str; 4] = [
        "Here is a mock answer.",
        "This reply comes from the offline mock.",
        "Mock response follows.",
        "Thanks for your message.",
    ];
    let h = fnv1a(request.messages.iter().flat_map(|m| m.content.bytes()));
    let words = last.split_whitespace().count();
    let quoted: String = last.chars().take(60).collect();
    format!(
        "{} You said \"{}\" ({} words, {} messages).",
        OPENINGS[(h % OPENINGS.len() as u64) as usize],
        quoted,
        words,
        request.messages.len()
    )
}

/// Word-based usage of the mock.
fn mock_usage(messages: &[ChatMessage], reply: &str) -> Usage {
    let prompt: usize = messages
        .iter()
        .map(|m| m.content.split_whitespace().count() + 3)
        .sum();
    let completion = reply.split_whitespace().count();
    Usage::reported(prompt as u32, completion as u32)
}

fn fnv1a(bytes: impl IntoIterator<Item = u8>) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The mock's embedding of `text`: a hashed bag of lowercase words, L2
/// normalised (all zeros for a text without words).
pub fn mock_embedding(text: &str, dimension: usize) -> Vec<f32> {
    let dimension = dimension.max(1);
    let mut v = vec![0f32; dimension];
    for word in text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
    {
        let h = fnv1a(word.to_lowercase().bytes());
        let sign = if h >> 63 == 1 { -1.0 } else { 1.0 };
        v[(h % dimension as u64) as usize] += sign;
    }
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
    v
}

#[async_trait]
impl Provider for MockProvider {
    fn kind(&self) -> &str {
        KIND_MOCK
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            chat: true,
            stream: true,
            embeddings: true,
            tools: true,
            images: true,
        }
    }

    fn default_model(&self) -> Option<&str> {
        Some(&self.default_model)
    }

    async fn complete(&self, request: &ChatRequest) -> Result<ChatResponse, ProviderError> {
        validate_chat_request(KIND_MOCK, request)?;
        let model = resolve_model(
            KIND_MOCK,
            request.model.as_deref(),
            Some(&self.default_model),
        )?;
        if model == "hang" {
            return Err(self.hang().await);
        }
        let content = mock_reply(&model, request);
        if let Some(e) = self.err(&model, "") {
            return Err(e);
        }
        if model == "slow" || model == "slow-echo" {
            let pieces = content.split_inclusive(' ').count() as u32;
            tokio::time::sleep(self.delay * pieces).await;
        }
        let tool_calls = mock_tool_calls(request);
        if !tool_calls.is_empty() {
            let args: String = tool_calls.iter().map(|c| c.arguments.as_str()).collect();
            return Ok(ChatResponse {
                usage: mock_usage(&request.messages, &args),
                content: String::new(),
                tool_calls,
                finish_reason: FinishReason::ToolCalls,
                provider: KIND_MOCK.to_owned(),
                model,
            });
        }
        Ok(ChatResponse {
            usage: mock_usage(&request.messages, &content),
            content,
            tool_calls: Vec::new(),
            finish_reason: FinishReason::Stop,
            provider: KIND_MOCK.to_owned(),
            model,
        })
    }

    async fn stream(&self, request: &ChatRequest) -> Result<ChatStream, ProviderError> {
        validate_chat_request(KIND_MOCK, request)?;
        let model = resolve_model(
            KIND_MOCK,
            request.model.as_deref(),
            Some(&self.default_model),
        )?;
        match model.as_str() {
            "hang" => return Err(self.hang().await),
            "error-500" | "rate-limited" => {
                return Err(self.err(&model, "").unwrap_or_else(|| unreachable!()));
            }
            _ => {}
        }
        let calls = if model == "stream-then-error" {
            Vec::new()
        } else {
            mock_tool_calls(request)
        };
        if !calls.is_empty() {
            // As OpenAI streams them: id and name first, then the
            // arguments in small pieces.
            let args: String = calls.iter().map(|c| c.arguments.as_str()).collect();
            let mut events = Vec::new();
            for (i, c) in calls.into_iter().enumerate() {
                let index = i as u32;
                events.push(ChatEvent::ToolCall(ToolCallDelta {
                    index,
                    id: Some(c.id),
                    name: Some(c.name),
                    arguments: String::new(),
                }));
                let chars: Vec<char> = c.arguments.chars().collect();
                for piece in chars.chunks(8) {
                    events.push(ChatEvent::ToolCall(ToolCallDelta {
                        index,
                        id: None,
                        name: None,
                        arguments: piece.iter().collect(),
                    }));
                }
            }
            events.push(ChatEvent::Done(StreamEnd {
                usage: mock_usage(&request.messages, &args),
                finish_reason: FinishReason::ToolCalls,
                provider: KIND_MOCK.to_owned(),
                model,
            }));
            return Ok(futures::stream::iter(events.into_iter().map(Ok)).boxed());
        }
        let content = mock_reply(&model, request);
        let pieces: Vec<String> = content.split_inclusive(' ').map(str::to_owned).collect();
        let usage = mock_usage(&request.messages, &content);
        if model == "stream-then-error" {
            let head: Vec<String> = pieces.into_iter().take(DELTAS_BEFORE_ERROR).collect();
            let partial = head.concat();
            let err = self.err(&model, &partial).unwrap_or_else(|| unreachable!());
            let events = head
                .into_iter()
                .map(|p| Ok(ChatEvent::Delta(p)))
                .chain([Err(err)]);
            return Ok(futures::stream::iter(events.collect::<Vec<_>>()).boxed());
        }
        let end = ChatEvent::Done(StreamEnd {
            usage,
            finish_reason: FinishReason::Stop,
            provider: KIND_MOCK.to_owned(),
            model: model.clone(),
        });
        let events = pieces.into_iter().map(ChatEvent::Delta).chain([end]);
        let delay = if model == "slow" || model == "slow-echo" {
            self.delay
        } else {
            Duration::ZERO
        };
        Ok(futures::stream::iter(events)
            .then(move |ev| async move {
                if !delay.is_zero() && matches!(ev, ChatEvent::Delta(_)) {
                    tokio::time::sleep(delay).await;
                }
                Ok(ev)
            })
            .boxed())
    }

    async fn embed(&self, request: &EmbedRequest) -> Result<EmbedResponse, ProviderError> {
        let dimension = request
            .dimensions
            .map_or(self.embedding_dimension, |d| d as usize);
        if dimension == 0 {
            return Err(ProviderError::InvalidRequest {
                provider: KIND_MOCK.to_owned(),
                message: "dimensions must be positive".to_owned(),
            });
        }
        let vectors = request
            .inputs
            .iter()
            .map(|t| mock_embedding(t, dimension))
            .collect();
        let tokens: usize = request
            .inputs
            .iter()
            .map(|t| t.split_whitespace().count())
            .sum();
        Ok(EmbedResponse {
            vectors,
            model: request
                .model
                .clone()
                .unwrap_or_else(|| "mock-embedding".to_owned()),
            provider: KIND_MOCK.to_owned(),
            usage: Usage::reported(tokens as u32, 0),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cosine(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    #[test]
    fn embeddings_are_normalised_and_similar_when_words_are_shared() {
        let a = mock_embedding("the quick brown fox", 384);
        let b = mock_embedding("The quick brown dog", 384);
        let c = mock_embedding("stock market prices today", 384);
        assert_eq!(a.len(), 384);
        assert!((cosine(&a, &a) - 1.0).abs() < 1e-5);
        assert!(cosine(&a, &b) > 0.5, "{}", cosine(&a, &b));
        assert!(cosine(&a, &c).abs() < cosine(&a, &b));
        assert_eq!(mock_embedding("", 8), vec![0.0; 8]);
    }

    #[test]
    fn canned_reply_is_deterministic_and_depends_on_input() {
        let r1 = ChatRequest::new(vec![ChatMessage::user("hello there")]);
        let r2 = ChatRequest::new(vec![ChatMessage::user("something else entirely")]);
        assert_eq!(mock_reply("m", &r1), mock_reply("m", &r1));
        assert_ne!(mock_reply("m", &r1), mock_reply("m", &r2));
        assert_eq!(mock_reply("echo", &r1), "hello there");
    }
}
