//! Google Gemini API (`generateContent`, `streamGenerateContent`,
//! `batchEmbedContents`) wire format and its mapping to our types. Pure:
//! no I/O.
//!
//! Reference: <https://ai.google.dev/api/generate-content> and
//! `/api/embeddings`.

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
    ResponseFormat, Role, StreamContext, ToolCall, ToolChoice, Usage, parse_proto_duration, redact,
};

/// A `generateContent` request body.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WireRequest<'a> {
    /// Turns, roles `user` and `model`.
    pub contents: Vec<WireContent<'a>>,
    /// The system prompt.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system_instruction: Option<WireContent<'a>>,
    /// Sampling settings.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub generation_config: Option<WireGenerationConfig<'a>>,
    /// `[{"functionDeclarations": [...]}]`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<serde_json::Value>,
    /// `{"functionCallingConfig": {"mode", "allowedFunctionNames"}}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_config: Option<serde_json::Value>,
}

/// A turn (or the system instruction, without role).
#[derive(Debug, Serialize)]
pub struct WireContent<'a> {
    /// `user` or `model`; absent in `systemInstruction`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<&'a str>,
    /// Text parts.
    pub parts: Vec<WirePart<'a>>,
}

/// A part of a request: text, an image, a function call or its result.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum WirePart<'a> {
    /// `{"inlineData": {"mimeType", "data"}}`.
    InlineData {
        /// Media type.
        #[serde(rename = "mimeType")]
        mime_type: &'a str,
        /// Base64 data.
        data: &'a str,
    },
    /// `{"fileData": {"fileUri"}}`.
    FileData {
        /// The image URL.
        #[serde(rename = "fileUri")]
        file_uri: &'a str,
    },
    /// `{"functionCall": {"id", "name", "args"}}`.
    FunctionCall {
        /// Call id.
        id: &'a str,
        /// Function name.
        name: &'a str,
        /// Arguments object.
        args: serde_json::Value,
    },
    /// `{"functionResponse": {"id", "name", "response"}}`.
    FunctionResponse {
        /// Call id.
        id: &'a str,
        /// Function name (from the call it answers).
        name: &'a str,
        /// The result: `{"result": <JSON or text>}`.
        response: serde_json::Value,
    },
    /// `{"text": ...}`.
    #[serde(untagged)]
    Text {
        /// Text.
        text: &'a str,
    },
}

fn parts<'a>(m: &'a ChatMessage, history: &'a [ChatMessage]) -> Vec<WirePart<'a>> {
    let mut out = Vec::new();
    if m.role == Role::Tool {
        let id = m.tool_call_id.as_deref().unwrap_or_default();
        // Gemini names the function a result answers: find the call.
        let name = history
            .iter()
            .flat_map(|h| &h.tool_calls)
            .find(|c| c.id == id)
            .map_or("", |c| c.name.as_str());
        let result = serde_json::from_str::<serde_json::Value>(&m.content)
            .unwrap_or_else(|_| m.content.clone().into());
        out.push(WirePart::FunctionResponse {
            id,
            name,
            response: serde_json::json!({ "result": result }),
        });
        return out;
    }
    if !m.content.is_empty() || (m.images.is_empty() && m.tool_calls.is_empty()) {
        out.push(WirePart::Text { text: &m.content });
    }
    for i in &m.images {
        out.push(match i.data() {
            Some((mime_type, data)) => WirePart::InlineData { mime_type, data },
            None => WirePart::FileData { file_uri: &i.url },
        });
    }
    for c in &m.tool_calls {
        out.push(WirePart::FunctionCall {
            id: &c.id,
            name: &c.name,
            args: serde_json::from_str(&c.arguments)
                .ok()
                .filter(serde_json::Value::is_object)
                .unwrap_or_else(|| serde_json::json!({})),
        });
    }
    out
}

/// `generationConfig`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WireGenerationConfig<'a> {
    /// Temperature.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    /// Output token bound.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_output_tokens: Option<u32>,
    /// Stop sequences.
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    pub stop_sequences: &'a [String],
    /// Nucleus sampling.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f32>,
    /// Sampling seed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<i64>,
    /// Presence penalty.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub presence_penalty: Option<f32>,
    /// Frequency penalty.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frequency_penalty: Option<f32>,
    /// `application/json` for structured output.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_mime_type: Option<&'static str>,
    /// The JSON Schema the answer follows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_json_schema: Option<&'a serde_json::Value>,
}

/// Builds the request body. Gemini has no end-user field: the id is not
/// sent.
pub fn request(request: &ChatRequest) -> WireRequest<'_> {
    let system: Vec<WirePart<'_>> = request
        .messages
        .iter()
        .filter(|m| m.role == Role::System)
        .map(|m| WirePart::Text { text: &m.content })
        .collect();
    let mut contents: Vec<WireContent<'_>> = Vec::new();
    for m in request.messages.iter().filter(|m| m.role != Role::System) {
        let role = if m.role == Role::Assistant {
            "model"
        } else {
            "user"
        };
        let p = parts(m, &request.messages);
        // Results of parallel calls go back together, in one turn.
        if m.role == Role::Tool
            && let Some(last) = contents.last_mut()
            && last
                .parts
                .iter()
                .all(|p| matches!(p, WirePart::FunctionResponse { .. }))
        {
            last.parts.extend(p);
            continue;
        }
        contents.push(WireContent {
            role: Some(role),
            parts: p,
        });
    }
    let (mime, schema) = match &request.response_format {
        Some(ResponseFormat::JsonSchema { schema, .. }) => (Some("application/json"), Some(schema)),
        Some(ResponseFormat::JsonObject) => (Some("application/json"), None),
        _ => (None, None),
    };
    let config = WireGenerationConfig {
        temperature: request.temperature,
        max_output_tokens: request.max_tokens,
        stop_sequences: &request.stop,
        top_p: request.top_p,
        seed: request.seed,
        presence_penalty: request.presence_penalty,
        frequency_penalty: request.frequency_penalty,
        response_mime_type: mime,
        response_json_schema: schema,
    };
    let any_config = config.temperature.is_some()
        || config.max_output_tokens.is_some()
        || !config.stop_sequences.is_empty()
        || config.top_p.is_some()
        || config.seed.is_some()
        || config.presence_penalty.is_some()
        || config.frequency_penalty.is_some()
        || config.response_mime_type.is_some();
    let tools = if request.tools.is_empty() {
        Vec::new()
    } else {
        let decls: Vec<serde_json::Value> = request
            .tools
            .iter()
            .map(|t| {
                let mut d =
                    serde_json::json!({"name": t.name, "parametersJsonSchema": t.parameters});
                if let Some(desc) = &t.description {
                    d["description"] = desc.clone().into();
                }
                d
            })
            .collect();
        vec![serde_json::json!({ "functionDeclarations": decls })]
    };
    let tool_config = match &request.tool_choice {
        _ if request.tools.is_empty() => None,
        None => None,
        Some(ToolChoice::Auto) => Some(serde_json::json!({"mode": "AUTO"})),
        Some(ToolChoice::None) => Some(serde_json::json!({"mode": "NONE"})),
        Some(ToolChoice::Required) => Some(serde_json::json!({"mode": "ANY"})),
        Some(ToolChoice::Function(name)) => {
            Some(serde_json::json!({"mode": "ANY", "allowedFunctionNames": [name]}))
        }
    }
    .map(|c| serde_json::json!({ "functionCallingConfig": c }));
    WireRequest {
        contents,
        system_instruction: (!system.is_empty()).then_some(WireContent {
            role: None,
            parts: system,
        }),
        generation_config: any_config.then_some(config),
        tools,
        tool_config,
    }
}

/// A `GenerateContentResponse` (also each streamed chunk).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WireResponse {
    /// Candidates; we ask for one.
    #[serde(default)]
    pub candidates: Vec<WireCandidate>,
    /// Usage (cumulative; the last chunk's is the total).
    #[serde(default)]
    pub usage_metadata: Option<WireUsage>,
    /// Set when the prompt itself was blocked.
    #[serde(default)]
    pub prompt_feedback: Option<WirePromptFeedback>,
    /// Model version that answered.
    #[serde(default)]
    pub model_version: Option<String>,
    /// An error sent inside a stream.
    #[serde(default)]
    pub error: Option<WireErrorDetail>,
}

/// A candidate.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WireCandidate {
    /// Its content.
    #[serde(default)]
    pub content: Option<WireResponseContent>,
    /// Why it ended.
    #[serde(default)]
    pub finish_reason: Option<String>,
}

/// Content of a candidate.
#[derive(Debug, Deserialize)]
pub struct WireResponseContent {
    /// Parts.
    #[serde(default)]
    pub parts: Vec<WireResponsePart>,
}

/// A part of a candidate.
#[derive(Debug, Deserialize)]
pub struct WireResponsePart {
    /// Text.
    #[serde(default)]
    pub text: Option<String>,
    /// True for thought summaries, which are not part of the answer.
    #[serde(default)]
    pub thought: Option<bool>,
    /// A function call.
    #[serde(default, rename = "functionCall")]
    pub function_call: Option<WireFunctionCall>,
}

/// A function call of a candidate.
#[derive(Debug, Deserialize)]
pub struct WireFunctionCall {
    /// Call id (recent API versions; else we make one).
    #[serde(default)]
    pub id: Option<String>,
    /// Function name.
    #[serde(default)]
    pub name: String,
    /// Arguments object.
    #[serde(default)]
    pub args: Option<serde_json::Value>,
}

/// `usageMetadata`.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WireUsage {
    /// Prompt tokens.
    #[serde(default)]
    pub prompt_token_count: u32,
    /// Answer tokens.
    #[serde(default)]
    pub candidates_token_count: u32,
    /// Thinking tokens (billed as output).
    #[serde(default)]
    pub thoughts_token_count: u32,
    /// Total.
    #[serde(default)]
    pub total_token_count: u32,
    /// Prompt tokens read from a context cache (part of the prompt).
    #[serde(default)]
    pub cached_content_token_count: u32,
}

impl From<WireUsage> for Usage {
    fn from(u: WireUsage) -> Self {
        let completion = u.candidates_token_count + u.thoughts_token_count;
        Usage {
            prompt_tokens: u.prompt_token_count,
            completion_tokens: completion,
            total_tokens: if u.total_token_count == 0 {
                u.prompt_token_count + completion
            } else {
                u.total_token_count
            },
            estimated: false,
            cached_tokens: u.cached_content_token_count.min(u.prompt_token_count),
        }
    }
}

/// `promptFeedback`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WirePromptFeedback {
    /// Why the prompt was blocked.
    #[serde(default)]
    pub block_reason: Option<String>,
}

/// Maps a finish reason.
pub fn finish_reason(s: &str) -> FinishReason {
    match s {
        "STOP" => FinishReason::Stop,
        "MAX_TOKENS" => FinishReason::Length,
        "SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII" | "IMAGE_SAFETY" => {
            FinishReason::ContentFilter
        }
        other => FinishReason::Other(other.to_owned()),
    }
}

impl WireResponse {
    /// Text of the first candidate, without thoughts.
    pub fn text(&self) -> String {
        self.candidates
            .first()
            .and_then(|c| c.content.as_ref())
            .map(|c| {
                c.parts
                    .iter()
                    .filter(|p| p.thought != Some(true))
                    .filter_map(|p| p.text.as_deref())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Function calls of the first candidate; `first` numbers the ids
    /// made for calls that carry none.
    pub fn tool_calls(&self, first: usize) -> Vec<ToolCall> {
        self.candidates
            .first()
            .and_then(|c| c.content.as_ref())
            .map(|c| {
                c.parts
                    .iter()
                    .filter_map(|p| p.function_call.as_ref())
                    .enumerate()
                    .map(|(i, f)| ToolCall {
                        id: f
                            .id
                            .clone()
                            .filter(|id| !id.is_empty())
                            .unwrap_or_else(|| format!("call_{}", first + i)),
                        name: f.name.clone(),
                        arguments: f
                            .args
                            .as_ref()
                            .map_or_else(|| "{}".to_owned(), ToString::to_string),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Finish reason of the first candidate, or of a blocked prompt.
    pub fn finish(&self) -> Option<FinishReason> {
        if let Some(r) = self
            .candidates
            .first()
            .and_then(|c| c.finish_reason.as_deref())
        {
            return Some(finish_reason(r));
        }
        self.prompt_feedback
            .as_ref()
            .and_then(|f| f.block_reason.as_ref())
            .map(|_| FinishReason::ContentFilter)
    }
}

/// Text, finish reason, usage and model of a response body.
pub fn parse_response(provider: &str, body: &[u8]) -> Result<ParsedCompletion, ProviderError> {
    let r: WireResponse = parse_json(provider, body, None)?;
    let tool_calls = r.tool_calls(0);
    // Gemini ends a turn of calls with STOP: in OpenAI's terms it is
    // `tool_calls`.
    let finish = match r.finish().unwrap_or(FinishReason::Stop) {
        FinishReason::Stop if !tool_calls.is_empty() => FinishReason::ToolCalls,
        f => f,
    };
    Ok(ParsedCompletion {
        content: r.text(),
        tool_calls,
        finish_reason: finish,
        usage: r.usage_metadata.map(Usage::from),
        model: r.model_version,
    })
}

/// An error body: `{"error": {"code", "message", "status", "details"}}`.
#[derive(Debug, Deserialize)]
pub struct WireError {
    /// The detail.
    pub error: WireErrorDetail,
}

/// Error detail (google.rpc.Status).
#[derive(Debug, Deserialize)]
pub struct WireErrorDetail {
    /// HTTP status.
    #[serde(default)]
    pub code: Option<u16>,
    /// Message.
    #[serde(default)]
    pub message: String,
    /// Canonical code (`RESOURCE_EXHAUSTED`, ...).
    #[serde(default)]
    pub status: Option<String>,
    /// Typed details (`RetryInfo`, `ErrorInfo`, ...).
    #[serde(default)]
    pub details: Vec<serde_json::Value>,
}

fn map_detail(
    provider: &str,
    status: StatusCode,
    headers: &HeaderMap,
    d: &WireErrorDetail,
    raw: &str,
    secret: Option<&str>,
) -> ProviderError {
    let message = redact(
        &format!("{}: {}", d.status.as_deref().unwrap_or("ERROR"), d.message),
        secret,
    );
    let p = provider.to_owned();
    let detail_of = |suffix: &str| {
        d.details.iter().find(|v| {
            v.get("@type")
                .and_then(|t| t.as_str())
                .is_some_and(|t| t.ends_with(suffix))
        })
    };
    // An invalid key is a 400 INVALID_ARGUMENT with reason API_KEY_INVALID.
    if let Some(info) = detail_of("google.rpc.ErrorInfo")
        && info
            .get("reason")
            .and_then(|r| r.as_str())
            .is_some_and(|r| r.starts_with("API_KEY"))
    {
        return ProviderError::Authentication {
            provider: p,
            message,
        };
    }
    let status = d
        .code
        .and_then(|c| StatusCode::from_u16(c).ok())
        .filter(|_| status == StatusCode::OK)
        .unwrap_or(status);
    if status == StatusCode::TOO_MANY_REQUESTS {
        let retry_after = detail_of("google.rpc.RetryInfo")
            .and_then(|i| i.get("retryDelay"))
            .and_then(|d| d.as_str())
            .and_then(parse_proto_duration)
            .or_else(|| crate::provider::parse_retry_after(headers));
        return ProviderError::RateLimited {
            provider: p,
            retry_after,
            message,
        };
    }
    let lower = d.message.to_ascii_lowercase();
    if status == StatusCode::BAD_REQUEST
        && (lower.contains("exceeds the maximum number of tokens")
            || lower.contains("input token count"))
    {
        return ProviderError::ContextTooLong {
            provider: p,
            message,
        };
    }
    map_status_common(provider, status, headers, message, raw, secret)
}

/// Maps a failure status and body (with `RetryInfo` for rate limits).
pub fn map_error(
    provider: &str,
    status: StatusCode,
    headers: &HeaderMap,
    body: &str,
    secret: Option<&str>,
) -> ProviderError {
    // Errors come as an object, or (from some endpoints) an array of one.
    let parsed = serde_json::from_str::<WireError>(body).ok().or_else(|| {
        serde_json::from_str::<Vec<WireError>>(body)
            .ok()
            .and_then(|v| v.into_iter().next())
    });
    match parsed {
        Some(e) => map_detail(provider, status, headers, &e.error, body, secret),
        None => map_status_common(
            provider,
            status,
            headers,
            redact(body, secret),
            body,
            secret,
        ),
    }
}

/// SSE decoder of `streamGenerateContent?alt=sse` chunks.
#[derive(Debug, Default)]
pub(crate) struct GeminiDecoder {
    finish: Option<FinishReason>,
    usage: Option<Usage>,
    model: Option<String>,
}

impl SseDecoder for GeminiDecoder {
    fn on_event(&mut self, event: &Event, sink: &mut Sink) -> Result<(), ProviderError> {
        if event.data.trim().is_empty() {
            return Ok(());
        }
        let provider = sink.ctx.provider.clone();
        let chunk: WireResponse = parse_json(&provider, event.data.as_bytes(), None)?;
        if let Some(d) = &chunk.error {
            return Err(map_detail(
                &provider,
                StatusCode::OK,
                &HeaderMap::new(),
                d,
                &event.data,
                None,
            ));
        }
        sink.delta(&chunk.text());
        // Gemini sends each call whole, in one chunk.
        for c in chunk.tool_calls(sink.tool_calls_started() as usize) {
            sink.tool_start(c.id, c.name, &c.arguments);
        }
        if let Some(f) = chunk.finish() {
            self.finish = Some(match f {
                FinishReason::Stop if sink.tool_calls_started() > 0 => FinishReason::ToolCalls,
                f => f,
            });
        }
        if let Some(u) = chunk.usage_metadata {
            self.usage = Some(u.into());
        }
        if chunk.model_version.is_some() {
            self.model = chunk.model_version;
        }
        Ok(())
    }

    fn on_end(&mut self, sink: &mut Sink) {
        // Gemini has no end marker: the stream is complete when the last
        // chunk carried a finish reason.
        if let Some(f) = self.finish.take() {
            sink.finish(self.usage, f, self.model.take());
        }
    }
}

/// Decodes a Gemini `streamGenerateContent?alt=sse` byte stream into
/// [`crate::provider::ChatEvent`]s. Pure: usable on recorded bytes.
pub fn parse_stream<S>(bytes: S, ctx: StreamContext) -> ChatStream
where
    S: Stream<Item = Result<Bytes, ProviderError>> + Send + 'static,
{
    drive(bytes, GeminiDecoder::default(), ctx)
}

/// A `batchEmbedContents` request body.
#[derive(Debug, Serialize)]
pub struct WireEmbedRequest<'a> {
    /// One request per text.
    pub requests: Vec<WireEmbedOne<'a>>,
}

/// One text to embed.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WireEmbedOne<'a> {
    /// `models/{model}`.
    pub model: String,
    /// The text.
    pub content: WireContent<'a>,
    /// Shortened dimension.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_dimensionality: Option<u32>,
}

/// Builds a `batchEmbedContents` body.
pub fn embed_request<'a>(
    model: &str,
    inputs: &'a [String],
    dimensions: Option<u32>,
) -> WireEmbedRequest<'a> {
    WireEmbedRequest {
        requests: inputs
            .iter()
            .map(|t| WireEmbedOne {
                model: format!("models/{model}"),
                content: WireContent {
                    role: None,
                    parts: vec![WirePart::Text { text: t }],
                },
                output_dimensionality: dimensions,
            })
            .collect(),
    }
}

/// A `batchEmbedContents` response.
#[derive(Debug, Deserialize)]
pub struct WireEmbedResponse {
    /// One per request, in order.
    #[serde(default)]
    pub embeddings: Vec<WireEmbedding>,
}

/// One embedding.
#[derive(Debug, Deserialize)]
pub struct WireEmbedding {
    /// The vector.
    #[serde(default)]
    pub values: Vec<f32>,
}

/// Vectors of a `batchEmbedContents` body.
pub fn parse_embed_response(
    provider: &str,
    body: &[u8],
    inputs: usize,
) -> Result<Vec<Vec<f32>>, ProviderError> {
    let r: WireEmbedResponse = parse_json(provider, body, None)?;
    if r.embeddings.len() != inputs {
        return Err(ProviderError::InvalidResponse {
            source: None,
            provider: provider.to_owned(),
            message: format!("expected {inputs} embeddings, got {}", r.embeddings.len()),
        });
    }
    Ok(r.embeddings.into_iter().map(|e| e.values).collect())
}

/// Checks a model id before it goes into a URL path; strips `models/`.
pub fn model_path_segment<'a>(provider: &str, model: &'a str) -> Result<&'a str, ProviderError> {
    let m = model.strip_prefix("models/").unwrap_or(model);
    let ok = !m.is_empty()
        && m.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'));
    if ok {
        Ok(m)
    } else {
        Err(ProviderError::InvalidRequest {
            provider: provider.to_owned(),
            message: format!("invalid model id {model:?}"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::{ChatEvent, ChatMessage};
    use futures::StreamExt;
    use std::time::Duration;

    #[test]
    fn request_body_shape() {
        let req = ChatRequest::new(vec![
            ChatMessage::system("be brief"),
            ChatMessage::user("hi"),
            ChatMessage::assistant("hello"),
            ChatMessage::user("again"),
        ])
        .with_max_tokens(20)
        .with_stop(vec!["END".into()]);
        let v = serde_json::to_value(request(&req)).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "contents": [
                    {"role": "user", "parts": [{"text": "hi"}]},
                    {"role": "model", "parts": [{"text": "hello"}]},
                    {"role": "user", "parts": [{"text": "again"}]}
                ],
                "systemInstruction": {"parts": [{"text": "be brief"}]},
                "generationConfig": {"maxOutputTokens": 20, "stopSequences": ["END"]}
            })
        );
    }

    #[test]
    fn parses_recorded_response() {
        let body = br#"{"candidates":[{"content":{"parts":[{"text":"thinking...","thought":true},{"text":"Hello! How can I help?"}],"role":"model"},"finishReason":"STOP","index":0}],"usageMetadata":{"promptTokenCount":5,"candidatesTokenCount":7,"totalTokenCount":12},"modelVersion":"gemini-2.0-flash","responseId":"abc"}"#;
        let p = parse_response("google", body).unwrap();
        assert_eq!(p.content, "Hello! How can I help?");
        assert_eq!(p.finish_reason, FinishReason::Stop);
        assert_eq!(p.usage, Some(Usage::reported(5, 7)));
        assert_eq!(p.model.as_deref(), Some("gemini-2.0-flash"));
        let blocked = br#"{"promptFeedback":{"blockReason":"SAFETY"},"usageMetadata":{"promptTokenCount":5,"totalTokenCount":5}}"#;
        let p = parse_response("google", blocked).unwrap();
        assert_eq!(
            (p.content.as_str(), p.finish_reason),
            ("", FinishReason::ContentFilter)
        );
        assert_eq!(
            finish_reason("LANGUAGE"),
            FinishReason::Other("LANGUAGE".into())
        );
    }

    #[test]
    fn maps_error_bodies_with_retry_info() {
        let h = HeaderMap::new();
        let rl = r#"{"error":{"code":429,"message":"Resource has been exhausted (e.g. check quota).","status":"RESOURCE_EXHAUSTED","details":[{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"17s"}]}}"#;
        match map_error("google", StatusCode::TOO_MANY_REQUESTS, &h, rl, None) {
            ProviderError::RateLimited { retry_after, .. } => {
                assert_eq!(retry_after, Some(Duration::from_secs(17)))
            }
            e => panic!("{e:?}"),
        }
        let bad_key = r#"{"error":{"code":400,"message":"API key not valid. Please pass a valid API key.","status":"INVALID_ARGUMENT","details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"API_KEY_INVALID","domain":"googleapis.com"}]}}"#;
        assert!(matches!(
            map_error("google", StatusCode::BAD_REQUEST, &h, bad_key, None),
            ProviderError::Authentication { .. }
        ));
        assert!(model_path_segment("google", "../x?key=1").is_err());
        assert_eq!(
            model_path_segment("google", "models/gemini-2.0-flash").unwrap(),
            "gemini-2.0-flash"
        );
    }

    #[tokio::test]
    async fn parses_recorded_stream_usage_from_last_chunk() {
        let s = "data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"Hel\"}],\"role\": \"model\"},\"index\": 0}],\"usageMetadata\": {\"promptTokenCount\": 4,\"candidatesTokenCount\": 1,\"totalTokenCount\": 5},\"modelVersion\": \"gemini-2.0-flash\"}\r\n\r\n\
data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"lo\"}],\"role\": \"model\"},\"finishReason\": \"STOP\",\"index\": 0}],\"usageMetadata\": {\"promptTokenCount\": 4,\"candidatesTokenCount\": 2,\"totalTokenCount\": 6},\"modelVersion\": \"gemini-2.0-flash\"}\r\n\r\n";
        let ctx = StreamContext::new("google", "gemini-2.0-flash", vec![ChatMessage::user("hi")]);
        let chunks: Vec<Result<Bytes, ProviderError>> = s
            .as_bytes()
            .chunks(3)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        let events: Vec<ChatEvent> = parse_stream(futures::stream::iter(chunks), ctx)
            .map(Result::unwrap)
            .collect()
            .await;
        assert_eq!(events.len(), 3);
        assert_eq!(events[0], ChatEvent::Delta("Hel".into()));
        let ChatEvent::Done(end) = &events[2] else {
            panic!()
        };
        assert_eq!(end.usage, Usage::reported(4, 2));
    }

    #[test]
    fn cached_content_tokens_are_read_from_a_recorded_body() {
        let body = br#"{"candidates":[{"content":{"parts":[{"text":"Sure."}],"role":"model"},"finishReason":"STOP","index":0}],"usageMetadata":{"promptTokenCount":4140,"candidatesTokenCount":2,"totalTokenCount":4142,"cachedContentTokenCount":4096,"promptTokensDetails":[{"modality":"TEXT","tokenCount":4140}],"cacheTokensDetails":[{"modality":"TEXT","tokenCount":4096}]},"modelVersion":"gemini-2.5-flash","responseId":"xyz"}"#;
        let p = parse_response("google", body).unwrap();
        assert_eq!(p.usage, Some(Usage::reported(4140, 2).with_cached(4096)));
    }
}
