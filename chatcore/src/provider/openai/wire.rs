//! OpenAI chat completions and embeddings wire format, and its mapping to
//! our types. Pure: no I/O.
//!
//! Reference: <https://platform.openai.com/docs/api-reference/chat> and
//! `/embeddings`.

use bytes::Bytes;
use eventsource_stream::Event;
use futures::Stream;
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde::{Deserialize, Serialize};

use crate::provider::http::map_status_common;
use crate::provider::sse::{Sink, SseDecoder, drive};
use crate::provider::{
    ChatRequest, ChatStream, FinishReason, ParsedCompletion, ParsedEmbeddings, ProviderError,
    StreamContext, Usage, redact,
};

/// A chat completions request body.
#[derive(Debug, Serialize)]
pub struct WireChatRequest<'a> {
    /// Model id.
    pub model: &'a str,
    /// Messages with `role` and `content`.
    pub messages: Vec<WireMessage<'a>>,
    /// Sampling temperature.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    /// Legacy token bound, the one OpenAI-compatible servers know.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// Token bound of current OpenAI models (`max_tokens` is deprecated
    /// there and rejected by reasoning models).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_completion_tokens: Option<u32>,
    /// Stop sequences.
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    pub stop: &'a [String],
    /// End-user id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<&'a str>,
    /// Whether to stream.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub stream: bool,
    /// Streaming options (usage in the last chunk).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream_options: Option<StreamOptions>,
}

/// One message of a request.
#[derive(Debug, Serialize)]
pub struct WireMessage<'a> {
    /// `system`, `user` or `assistant`.
    pub role: &'a str,
    /// Text.
    pub content: &'a str,
}

/// `stream_options`.
#[derive(Debug, Serialize)]
pub struct StreamOptions {
    /// Asks for a usage chunk at the end of the stream.
    pub include_usage: bool,
}

/// Which token-bound field a server understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// api.openai.com: `max_completion_tokens`.
    OpenAi,
    /// Compatible servers: `max_tokens`.
    Compatible,
}

/// Builds the request body.
pub fn chat_request<'a>(
    request: &'a ChatRequest,
    model: &'a str,
    stream: bool,
    dialect: Dialect,
) -> WireChatRequest<'a> {
    let (max_tokens, max_completion_tokens) = match dialect {
        Dialect::OpenAi => (None, request.max_tokens),
        Dialect::Compatible => (request.max_tokens, None),
    };
    WireChatRequest {
        model,
        messages: request
            .messages
            .iter()
            .map(|m| WireMessage {
                role: m.role.as_str(),
                content: &m.content,
            })
            .collect(),
        temperature: request.temperature,
        max_tokens,
        max_completion_tokens,
        stop: &request.stop,
        user: request.end_user_id.as_deref(),
        stream,
        stream_options: stream.then_some(StreamOptions {
            include_usage: true,
        }),
    }
}

/// `usage` of a completion or of the last chunk.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
pub struct WireUsage {
    /// Input tokens.
    #[serde(default)]
    pub prompt_tokens: u32,
    /// Generated tokens.
    #[serde(default)]
    pub completion_tokens: u32,
    /// Their sum.
    #[serde(default)]
    pub total_tokens: u32,
}

impl From<WireUsage> for Usage {
    fn from(u: WireUsage) -> Self {
        Usage {
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
            total_tokens: if u.total_tokens == 0 {
                u.prompt_tokens + u.completion_tokens
            } else {
                u.total_tokens
            },
            estimated: false,
        }
    }
}

/// A chat completion (not streamed).
#[derive(Debug, Deserialize)]
pub struct WireChatResponse {
    /// Model that answered.
    #[serde(default)]
    pub model: Option<String>,
    /// Choices; we ask for one.
    #[serde(default)]
    pub choices: Vec<WireChoice>,
    /// Usage, absent on some compatible servers.
    #[serde(default)]
    pub usage: Option<WireUsage>,
}

/// A choice of a completion.
#[derive(Debug, Deserialize)]
pub struct WireChoice {
    /// Choice index.
    #[serde(default)]
    pub index: u32,
    /// The assistant message.
    #[serde(default)]
    pub message: Option<WireAssistantMessage>,
    /// Why it ended.
    #[serde(default)]
    pub finish_reason: Option<String>,
}

/// The assistant message of a choice.
#[derive(Debug, Deserialize)]
pub struct WireAssistantMessage {
    /// Its text.
    #[serde(default)]
    pub content: Option<String>,
    /// A refusal, in place of content.
    #[serde(default)]
    pub refusal: Option<String>,
}

/// A chunk of a streamed completion.
#[derive(Debug, Deserialize)]
pub struct WireChunk {
    /// Model that answers.
    #[serde(default)]
    pub model: Option<String>,
    /// Choice deltas (empty in the usage chunk).
    #[serde(default)]
    pub choices: Vec<WireChunkChoice>,
    /// Usage (the last chunk, with `include_usage`).
    #[serde(default)]
    pub usage: Option<WireUsage>,
    /// An error reported mid-stream.
    #[serde(default)]
    pub error: Option<WireErrorDetail>,
}

/// A choice delta.
#[derive(Debug, Deserialize)]
pub struct WireChunkChoice {
    /// Choice index.
    #[serde(default)]
    pub index: u32,
    /// The delta.
    #[serde(default)]
    pub delta: Option<WireDelta>,
    /// Why it ended, on the last content chunk.
    #[serde(default)]
    pub finish_reason: Option<String>,
}

/// Delta of a choice.
#[derive(Debug, Deserialize)]
pub struct WireDelta {
    /// Text piece.
    #[serde(default)]
    pub content: Option<String>,
    /// Refusal piece.
    #[serde(default)]
    pub refusal: Option<String>,
}

/// An error body: `{"error": {...}}`.
#[derive(Debug, Deserialize)]
pub struct WireError {
    /// The detail.
    pub error: WireErrorDetail,
}

/// The detail of an error.
#[derive(Debug, Deserialize)]
pub struct WireErrorDetail {
    /// Human-readable message.
    #[serde(default)]
    pub message: Option<String>,
    /// Error type (`invalid_request_error`, `server_error`, ...).
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    /// Error code (`context_length_exceeded`, `rate_limit_exceeded`, ...);
    /// some compatible servers send a number.
    #[serde(default)]
    pub code: Option<serde_json::Value>,
}

impl WireErrorDetail {
    fn code_str(&self) -> Option<String> {
        match &self.code {
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            Some(serde_json::Value::Number(n)) => Some(n.to_string()),
            _ => None,
        }
    }
}

/// Maps a finish reason.
pub fn finish_reason(s: &str) -> FinishReason {
    match s {
        "stop" => FinishReason::Stop,
        "length" => FinishReason::Length,
        "content_filter" => FinishReason::ContentFilter,
        other => FinishReason::Other(other.to_owned()),
    }
}

/// The text, finish reason, usage and model of a completion body.
pub fn parse_chat_response(provider: &str, body: &[u8]) -> Result<ParsedCompletion, ProviderError> {
    let r: WireChatResponse = crate::provider::http::parse_json(provider, body, None)?;
    let choice = r
        .choices
        .into_iter()
        .find(|c| c.index == 0)
        .ok_or_else(|| ProviderError::InvalidResponse {
            provider: provider.to_owned(),
            message: "no choice in the completion".to_owned(),
        })?;
    let message = choice.message.unwrap_or(WireAssistantMessage {
        content: None,
        refusal: None,
    });
    let refused = message.content.is_none() && message.refusal.is_some();
    let content = message.content.or(message.refusal).unwrap_or_default();
    let reason = match choice.finish_reason.as_deref() {
        Some(r) => finish_reason(r),
        None if refused => FinishReason::ContentFilter,
        None => FinishReason::Stop,
    };
    Ok(ParsedCompletion {
        content,
        finish_reason: reason,
        usage: r.usage.map(Usage::from),
        model: r.model,
    })
}

/// Maps an error detail (from a failure body or a mid-stream error chunk).
fn map_detail(
    provider: &str,
    status: StatusCode,
    headers: &HeaderMap,
    detail: &WireErrorDetail,
    raw: &str,
    secret: Option<&str>,
) -> ProviderError {
    let message = redact(detail.message.as_deref().unwrap_or(raw), secret);
    let code = detail.code_str().unwrap_or_default();
    let kind = detail.kind.as_deref().unwrap_or_default();
    let p = provider.to_owned();
    if code == "context_length_exceeded" || code == "string_above_max_length" {
        return ProviderError::ContextTooLong {
            provider: p,
            message,
        };
    }
    if code == "insufficient_quota" || kind == "insufficient_quota" {
        // A 429 that no wait will fix: the account owner must act.
        return ProviderError::Authentication {
            provider: p,
            message,
        };
    }
    if code == "invalid_api_key" || kind == "authentication_error" {
        return ProviderError::Authentication {
            provider: p,
            message,
        };
    }
    if status == StatusCode::OK {
        // A mid-stream error: its status is in the body's type, if at all.
        let status = match kind {
            "invalid_request_error" => StatusCode::BAD_REQUEST,
            "rate_limit_error" | "rate_limit_exceeded" => StatusCode::TOO_MANY_REQUESTS,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        return map_status_common(provider, status, headers, message, raw, secret);
    }
    map_status_common(provider, status, headers, message, raw, secret)
}

/// Maps a failure status and body.
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

/// SSE decoder of chat completion chunks.
#[derive(Debug, Default)]
pub(crate) struct OpenAiDecoder {
    finish: Option<FinishReason>,
    usage: Option<Usage>,
    model: Option<String>,
}

impl SseDecoder for OpenAiDecoder {
    fn on_event(&mut self, event: &Event, sink: &mut Sink) -> Result<(), ProviderError> {
        let data = event.data.trim();
        if data.is_empty() {
            return Ok(());
        }
        if data == "[DONE]" {
            let reason = self.finish.take().unwrap_or(FinishReason::Stop);
            sink.finish(self.usage, reason, self.model.take());
            return Ok(());
        }
        let provider = sink.ctx.provider.clone();
        let chunk: WireChunk = crate::provider::http::parse_json(&provider, data.as_bytes(), None)?;
        if let Some(detail) = &chunk.error {
            return Err(map_detail(
                &provider,
                StatusCode::OK,
                &HeaderMap::new(),
                detail,
                data,
                None,
            ));
        }
        if let Some(m) = chunk.model
            && !m.is_empty()
        {
            self.model = Some(m);
        }
        // Usage may ride on any chunk, including one with choices.
        if let Some(u) = chunk.usage {
            self.usage = Some(u.into());
        }
        for choice in chunk.choices.iter().filter(|c| c.index == 0) {
            if let Some(d) = &choice.delta {
                if let Some(t) = &d.content {
                    sink.delta(t);
                }
                if let Some(t) = &d.refusal {
                    sink.delta(t);
                }
            }
            if let Some(r) = &choice.finish_reason {
                self.finish = Some(finish_reason(r));
            }
        }
        Ok(())
    }

    fn on_end(&mut self, sink: &mut Sink) {
        // Some compatible servers close without `[DONE]`: a finish reason
        // already says the answer is complete.
        if let Some(reason) = self.finish.take() {
            sink.finish(self.usage, reason, self.model.take());
        }
    }
}

/// Decodes an OpenAI (or compatible) chat completion SSE byte stream into
/// [`crate::provider::ChatEvent`]s. Pure: usable on recorded bytes.
pub fn parse_stream<S>(bytes: S, ctx: StreamContext) -> ChatStream
where
    S: Stream<Item = Result<Bytes, ProviderError>> + Send + 'static,
{
    drive(bytes, OpenAiDecoder::default(), ctx)
}

/// An embeddings request body.
#[derive(Debug, Serialize)]
pub struct WireEmbedRequest<'a> {
    /// Model id.
    pub model: &'a str,
    /// Texts.
    pub input: &'a [String],
    /// Shortened dimension (text-embedding-3 models).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dimensions: Option<u32>,
    /// We read floats.
    pub encoding_format: &'static str,
}

/// An embeddings response.
#[derive(Debug, Deserialize)]
pub struct WireEmbedResponse {
    /// One entry per input.
    pub data: Vec<WireEmbedding>,
    /// Model that embedded.
    #[serde(default)]
    pub model: Option<String>,
    /// Input tokens.
    #[serde(default)]
    pub usage: Option<WireUsage>,
}

/// One embedding.
#[derive(Debug, Deserialize)]
pub struct WireEmbedding {
    /// Input index.
    pub index: usize,
    /// The vector.
    pub embedding: Vec<f32>,
}

/// Vectors (in input order), model and usage of an embeddings body.
pub fn parse_embed_response(
    provider: &str,
    body: &[u8],
    inputs: usize,
) -> Result<ParsedEmbeddings, ProviderError> {
    let mut r: WireEmbedResponse = crate::provider::http::parse_json(provider, body, None)?;
    r.data.sort_by_key(|e| e.index);
    let ok = r.data.len() == inputs && r.data.iter().enumerate().all(|(i, e)| e.index == i);
    if !ok {
        return Err(ProviderError::InvalidResponse {
            provider: provider.to_owned(),
            message: format!(
                "expected {inputs} embeddings indexed 0.., got {}",
                r.data.len()
            ),
        });
    }
    Ok(ParsedEmbeddings {
        vectors: r.data.into_iter().map(|e| e.embedding).collect(),
        model: r.model,
        usage: r.usage.map(Usage::from),
    })
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
        ])
        .with_max_tokens(50)
        .with_stop(vec!["\n".into()])
        .with_end_user_id("u1");
        let v = serde_json::to_value(chat_request(&req, "gpt-4o", true, Dialect::OpenAi)).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "model": "gpt-4o",
                "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
                "max_completion_tokens": 50,
                "stop": ["\n"],
                "user": "u1",
                "stream": true,
                "stream_options": {"include_usage": true}
            })
        );
        let v =
            serde_json::to_value(chat_request(&req, "llama3", false, Dialect::Compatible)).unwrap();
        assert_eq!(v["max_tokens"], 50);
        assert!(v.get("stream").is_none() && v.get("stream_options").is_none());
    }

    #[test]
    fn parses_recorded_completion() {
        let body = br#"{"id":"chatcmpl-123","object":"chat.completion","created":1677652288,"model":"gpt-4o-mini-2024-07-18","system_fingerprint":"fp_44709d6fcb","choices":[{"index":0,"message":{"role":"assistant","content":"Hello there, how may I assist you today?","refusal":null},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":12,"total_tokens":21,"completion_tokens_details":{"reasoning_tokens":0}}}"#;
        let p = parse_chat_response("openai", body).unwrap();
        assert_eq!(p.content, "Hello there, how may I assist you today?");
        assert_eq!(p.finish_reason, FinishReason::Stop);
        assert_eq!(p.usage, Some(Usage::reported(9, 12)));
        assert_eq!(p.model.as_deref(), Some("gpt-4o-mini-2024-07-18"));
    }

    #[test]
    fn unknown_finish_reason_is_kept() {
        assert_eq!(
            finish_reason("tool_calls"),
            FinishReason::Other("tool_calls".into())
        );
    }

    #[test]
    fn maps_error_bodies() {
        let h = HeaderMap::new();
        let ctx = r#"{"error":{"message":"This model's maximum context length is 128000 tokens.","type":"invalid_request_error","param":"messages","code":"context_length_exceeded"}}"#;
        assert!(matches!(
            map_error("openai", StatusCode::BAD_REQUEST, &h, ctx, None),
            ProviderError::ContextTooLong { .. }
        ));
        let auth = r#"{"error":{"message":"Incorrect API key provided: sk-test-1234567890abcdef.","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}"#;
        let e = map_error(
            "openai",
            StatusCode::UNAUTHORIZED,
            &h,
            auth,
            Some("sk-test-1234567890abcdef"),
        );
        assert!(matches!(e, ProviderError::Authentication { .. }));
        assert!(!format!("{e:?}{e}").contains("1234567890abcdef"));
        let e = map_error(
            "openai",
            StatusCode::IM_A_TEAPOT,
            &h,
            "<html>teapot</html>",
            None,
        );
        assert_eq!(
            e,
            ProviderError::Unknown {
                provider: "openai".into(),
                status: 418,
                body: "<html>teapot</html>".into()
            }
        );
    }

    fn recorded_stream(
        with_usage_on_last_content_chunk: bool,
    ) -> Vec<Result<Bytes, ProviderError>> {
        let mut s = String::new();
        s.push_str("data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}],\"usage\":null}\n\n");
        s.push_str("data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"},\"finish_reason\":null}],\"usage\":null}\n\n");
        if with_usage_on_last_content_chunk {
            s.push_str("data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo\"},\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":2,\"total_tokens\":7}}\n\n");
        } else {
            s.push_str("data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo\"},\"finish_reason\":\"stop\"}],\"usage\":null}\n\n");
            s.push_str("data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"model\":\"gpt-4o\",\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":2,\"total_tokens\":7}}\n\n");
        }
        s.push_str("data: [DONE]\n\n");
        // Split at awkward places, as a network would.
        s.as_bytes()
            .chunks(7)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect()
    }

    async fn collect(
        chunks: Vec<Result<Bytes, ProviderError>>,
    ) -> Vec<Result<ChatEvent, ProviderError>> {
        let ctx = StreamContext::new("openai", "gpt-4o", vec![ChatMessage::user("hi")]);
        parse_stream(futures::stream::iter(chunks), ctx)
            .collect()
            .await
    }

    #[tokio::test]
    async fn parses_recorded_stream_with_usage_anywhere() {
        for on_content in [false, true] {
            let events = collect(recorded_stream(on_content)).await;
            let events: Vec<ChatEvent> = events.into_iter().map(Result::unwrap).collect();
            assert_eq!(events[0], ChatEvent::Delta("Hel".into()));
            assert_eq!(events[1], ChatEvent::Delta("lo".into()));
            let ChatEvent::Done(end) = &events[2] else {
                panic!("{events:?}")
            };
            assert_eq!(end.usage, Usage::reported(5, 2));
            assert_eq!(end.finish_reason, FinishReason::Stop);
            assert_eq!(events.len(), 3);
        }
    }

    #[tokio::test]
    async fn cut_stream_is_interrupted_with_partial_text() {
        let mut chunks = recorded_stream(false);
        let all: Vec<u8> = chunks.drain(..).flat_map(|c| c.unwrap().to_vec()).collect();
        let cut = String::from_utf8(all).unwrap();
        let cut = &cut[..cut.find("\"lo\"").unwrap()];
        let events = collect(vec![Ok(Bytes::copy_from_slice(cut.as_bytes()))]).await;
        assert_eq!(events.len(), 2);
        match &events[1] {
            Err(ProviderError::StreamInterrupted {
                partial,
                cause: None,
                ..
            }) => assert_eq!(partial, "Hel"),
            e => panic!("{e:?}"),
        }
    }

    #[tokio::test]
    async fn no_usage_is_estimated() {
        let s = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hello world\"},\"finish_reason\":\"length\"}]}\n\ndata: [DONE]\n\n";
        let events = collect(vec![Ok(Bytes::from(s))]).await;
        let Ok(ChatEvent::Done(end)) = &events[1] else {
            panic!("{events:?}")
        };
        assert!(end.usage.estimated);
        assert_eq!(end.usage.completion_tokens, 2);
        assert_eq!(end.finish_reason, FinishReason::Length);
        assert_eq!(end.model, "gpt-4o");
    }
}
