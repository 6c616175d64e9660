//! Request, response and event types of the provider layer.
//!
//! These are ours, not a vendor's: every provider translates them to and
//! from its own wire format.

use std::fmt;
use std::pin::Pin;

use futures::Stream;
use serde::{Deserialize, Serialize};

use super::ProviderError;

/// Who wrote a message of a conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Instructions for the model (a bot's system prompt).
    System,
    /// The end user.
    User,
    /// The model.
    Assistant,
    /// The result of a tool the model called ([`ChatMessage::tool_call_id`]
    /// names the call).
    Tool,
}

impl Role {
    /// The lowercase name (`system`, `user`, `assistant`, `tool`).
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool => "tool",
        }
    }
}

/// One message of a chat request.
///
/// Its text is `content`; a user message may carry images, an assistant
/// message the tool calls the model made, and a [`Role::Tool`] message
/// answers one of those calls by id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// Who wrote it.
    pub role: Role,
    /// Its text.
    pub content: String,
    /// Images given with the text (user messages), in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<ImagePart>,
    /// Tools the model called in this message (assistant messages).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// The call a [`Role::Tool`] message answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
}

impl ChatMessage {
    /// A message with the given role and text.
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        Self {
            role,
            content: content.into(),
            images: Vec::new(),
            tool_calls: Vec::new(),
            tool_call_id: None,
        }
    }

    /// An assistant message that called tools (with or without text).
    pub fn assistant_tool_calls(content: impl Into<String>, calls: Vec<ToolCall>) -> Self {
        Self {
            tool_calls: calls,
            ..Self::new(Role::Assistant, content)
        }
    }

    /// The result of the tool call `call_id`.
    pub fn tool_result(call_id: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            tool_call_id: Some(call_id.into()),
            ..Self::new(Role::Tool, content)
        }
    }

    /// This message with an image appended.
    pub fn with_image(mut self, image: ImagePart) -> Self {
        self.images.push(image);
        self
    }

    /// A system message.
    pub fn system(content: impl Into<String>) -> Self {
        Self::new(Role::System, content)
    }

    /// A user message.
    pub fn user(content: impl Into<String>) -> Self {
        Self::new(Role::User, content)
    }

    /// An assistant message.
    pub fn assistant(content: impl Into<String>) -> Self {
        Self::new(Role::Assistant, content)
    }
}

/// An image given to the model: an `https:` URL or a `data:` URL with
/// base64 content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImagePart {
    /// The URL.
    pub url: String,
    /// OpenAI's `detail` (`low`, `high`, `auto`), passed where understood.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl ImagePart {
    /// An image at `url`.
    pub fn url(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            detail: None,
        }
    }

    /// The media type and base64 data of a `data:<type>;base64,<data>`
    /// URL; `None` for any other URL.
    pub fn data(&self) -> Option<(&str, &str)> {
        let rest = self.url.strip_prefix("data:")?;
        let (meta, data) = rest.split_once(',')?;
        let media = meta.strip_suffix(";base64")?;
        (!media.is_empty()).then_some((media, data))
    }
}

/// A tool (function) the model may call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolDefinition {
    /// Its name (`[a-zA-Z0-9_-]{1,64}` for every vendor).
    pub name: String,
    /// What it does, for the model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// JSON Schema of its arguments (an object schema).
    pub parameters: serde_json::Value,
}

/// Whether and which tool the model must call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToolChoice {
    /// The model decides (the default when tools are given).
    Auto,
    /// No tool call.
    None,
    /// At least one tool call.
    Required,
    /// A call of this tool.
    Function(String),
}

/// A call of a tool by the model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolCall {
    /// The call's id, which its [`Role::Tool`] result names.
    pub id: String,
    /// The tool.
    pub name: String,
    /// Its arguments: a JSON object, as text.
    pub arguments: String,
}

/// A piece of a streamed tool call, the way OpenAI streams them: the first
/// piece of a call carries its id and name, later ones fragments of its
/// arguments; `index` tells the calls of one answer apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolCallDelta {
    /// Which call of the answer (0, 1, ... in the order they start).
    pub index: u32,
    /// The call's id (first piece only).
    pub id: Option<String>,
    /// The tool's name (first piece only).
    pub name: Option<String>,
    /// A fragment of the arguments (may be empty).
    pub arguments: String,
}

/// Assembles [`ToolCallDelta`]s into [`ToolCall`]s.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ToolCallBuffer {
    calls: Vec<ToolCall>,
}

impl ToolCallBuffer {
    /// Adds a piece.
    pub fn push(&mut self, d: &ToolCallDelta) {
        let i = d.index as usize;
        while self.calls.len() <= i {
            self.calls.push(ToolCall {
                id: String::new(),
                name: String::new(),
                arguments: String::new(),
            });
        }
        let c = &mut self.calls[i];
        if let Some(id) = &d.id {
            c.id.clone_from(id);
        }
        if let Some(n) = &d.name {
            c.name.push_str(n);
        }
        c.arguments.push_str(&d.arguments);
    }

    /// Whether no piece was added.
    pub fn is_empty(&self) -> bool {
        self.calls.is_empty()
    }

    /// The calls, in index order.
    pub fn finish(self) -> Vec<ToolCall> {
        self.calls
    }
}

/// The shape the answer must take.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResponseFormat {
    /// Free text (the default).
    Text,
    /// A JSON object.
    JsonObject,
    /// JSON matching a schema.
    JsonSchema {
        /// The schema's name.
        name: String,
        /// The JSON Schema.
        schema: serde_json::Value,
        /// Whether the vendor must follow the schema exactly (OpenAI).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        strict: Option<bool>,
    },
}

/// A chat completion request, streamed or not.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChatRequest {
    /// The model; `None` uses the provider's default model.
    pub model: Option<String>,
    /// The conversation, oldest first. System messages may appear anywhere;
    /// providers with a separate system field gather them there.
    pub messages: Vec<ChatMessage>,
    /// Sampling temperature.
    pub temperature: Option<f32>,
    /// Upper bound on generated tokens.
    pub max_tokens: Option<u32>,
    /// Sequences that end generation.
    pub stop: Vec<String>,
    /// An opaque id of the end user, passed to vendors that accept one
    /// (OpenAI `user`, Anthropic `metadata.user_id`) for abuse monitoring.
    pub end_user_id: Option<String>,
    /// Nucleus sampling.
    #[serde(default)]
    pub top_p: Option<f32>,
    /// Seed for repeatable sampling (OpenAI, Gemini).
    #[serde(default)]
    pub seed: Option<i64>,
    /// Presence penalty (OpenAI, Gemini).
    #[serde(default)]
    pub presence_penalty: Option<f32>,
    /// Frequency penalty (OpenAI, Gemini).
    #[serde(default)]
    pub frequency_penalty: Option<f32>,
    /// Tools the model may call.
    #[serde(default)]
    pub tools: Vec<ToolDefinition>,
    /// Whether and which tool the model must call (`None`: the vendor's
    /// default, which is `auto` when tools are given).
    #[serde(default)]
    pub tool_choice: Option<ToolChoice>,
    /// Whether the model may call several tools in one answer.
    #[serde(default)]
    pub parallel_tool_calls: Option<bool>,
    /// The shape of the answer.
    #[serde(default)]
    pub response_format: Option<ResponseFormat>,
}

impl ChatRequest {
    /// A request for these messages with every option unset.
    pub fn new(messages: Vec<ChatMessage>) -> Self {
        Self {
            messages,
            ..Self::default()
        }
    }

    /// Sets the model.
    pub fn with_model(mut self, model: impl Into<String>) -> Self {
        self.model = Some(model.into());
        self
    }

    /// Sets the temperature.
    pub fn with_temperature(mut self, temperature: f32) -> Self {
        self.temperature = Some(temperature);
        self
    }

    /// Sets the maximum number of generated tokens.
    pub fn with_max_tokens(mut self, max_tokens: u32) -> Self {
        self.max_tokens = Some(max_tokens);
        self
    }

    /// Sets the stop sequences.
    pub fn with_stop(mut self, stop: Vec<String>) -> Self {
        self.stop = stop;
        self
    }

    /// Sets the end-user id.
    pub fn with_end_user_id(mut self, id: impl Into<String>) -> Self {
        self.end_user_id = Some(id.into());
        self
    }

    /// The text of the last user message, if any.
    pub fn last_user_message(&self) -> Option<&str> {
        self.messages
            .iter()
            .rev()
            .find(|m| m.role == Role::User)
            .map(|m| m.content.as_str())
    }
}

/// Token usage of one call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Tokens of the input (messages, system prompt).
    pub prompt_tokens: u32,
    /// Tokens generated.
    pub completion_tokens: u32,
    /// Their sum, as the vendor reports it.
    pub total_tokens: u32,
    /// True when we counted the tokens ourselves (with tiktoken) because
    /// the vendor reported none.
    pub estimated: bool,
    /// Input tokens read from the vendor's prompt cache (part of
    /// `prompt_tokens`, billed at the cached-input price): OpenAI's
    /// `prompt_tokens_details.cached_tokens`, Anthropic's
    /// `cache_read_input_tokens`, Gemini's `cachedContentTokenCount`.
    #[serde(default)]
    pub cached_tokens: u32,
}

impl Usage {
    /// Usage reported by a vendor; the total is the sum of both counts.
    pub fn reported(prompt_tokens: u32, completion_tokens: u32) -> Self {
        Self {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens.saturating_add(completion_tokens),
            estimated: false,
            cached_tokens: 0,
        }
    }

    /// This usage with `n` of its prompt tokens read from the cache.
    pub fn with_cached(mut self, n: u32) -> Self {
        self.cached_tokens = n.min(self.prompt_tokens);
        self
    }
}

/// Why generation ended.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum FinishReason {
    /// The model finished its answer or met a stop sequence.
    Stop,
    /// The token limit was reached.
    Length,
    /// A safety or content filter ended the answer.
    ContentFilter,
    /// The model called tools and waits for their results.
    ToolCalls,
    /// Any other reason, kept verbatim as the vendor sent it.
    Other(String),
}

impl FinishReason {
    /// A short name to persist: `stop`, `length`, `content_filter`,
    /// `tool_calls`, or the vendor's verbatim reason.
    pub fn as_str(&self) -> &str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::ContentFilter => "content_filter",
            FinishReason::ToolCalls => "tool_calls",
            FinishReason::Other(s) => s,
        }
    }
}

impl fmt::Display for FinishReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The answer to a [`ChatRequest`] that was not streamed.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatResponse {
    /// The generated text.
    pub content: String,
    /// Tools the model called, in order.
    pub tool_calls: Vec<ToolCall>,
    /// Token usage.
    pub usage: Usage,
    /// Why generation ended.
    pub finish_reason: FinishReason,
    /// Kind of the provider that answered (`openai`, `anthropic`, ...).
    pub provider: String,
    /// Model that answered, as the vendor reports it when it does.
    pub model: String,
}

/// The final event of a stream.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamEnd {
    /// Token usage of the whole call.
    pub usage: Usage,
    /// Why generation ended.
    pub finish_reason: FinishReason,
    /// Kind of the provider that answered.
    pub provider: String,
    /// Model that answered.
    pub model: String,
}

/// One event of a streamed chat: text deltas and tool-call pieces, then
/// exactly one [`ChatEvent::Done`].
#[derive(Debug, Clone, PartialEq)]
pub enum ChatEvent {
    /// A piece of generated text (never empty).
    Delta(String),
    /// A piece of a tool call.
    ToolCall(ToolCallDelta),
    /// The end of the answer, with usage and finish reason.
    Done(StreamEnd),
}

/// A streamed chat: [`ChatEvent::Delta`]s, then one [`ChatEvent::Done`];
/// or an error, after which the stream ends.
pub type ChatStream = Pin<Box<dyn Stream<Item = Result<ChatEvent, ProviderError>> + Send>>;

/// A batch of texts to embed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmbedRequest {
    /// The embedding model; `None` uses the provider's default.
    pub model: Option<String>,
    /// Texts, one vector each.
    pub inputs: Vec<String>,
    /// Requested dimension, for models that can shorten their vectors.
    pub dimensions: Option<u32>,
}

impl EmbedRequest {
    /// A request for these texts with the default model.
    pub fn new(inputs: Vec<String>) -> Self {
        Self {
            inputs,
            ..Self::default()
        }
    }

    /// Sets the model.
    pub fn with_model(mut self, model: impl Into<String>) -> Self {
        self.model = Some(model.into());
        self
    }
}

/// Vectors of an [`EmbedRequest`], in input order.
#[derive(Debug, Clone, PartialEq)]
pub struct EmbedResponse {
    /// One vector per input, in order.
    pub vectors: Vec<Vec<f32>>,
    /// Model that embedded them.
    pub model: String,
    /// Kind of the provider that answered.
    pub provider: String,
    /// Input tokens (completion tokens are zero).
    pub usage: Usage,
}

/// What a provider can do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capabilities {
    /// Answers [`ChatRequest`]s.
    pub chat: bool,
    /// Streams answers.
    pub stream: bool,
    /// Embeds texts.
    pub embeddings: bool,
    /// Calls tools ([`ChatRequest::tools`]).
    #[serde(default)]
    pub tools: bool,
    /// Reads images ([`ChatMessage::images`]).
    #[serde(default)]
    pub images: bool,
}

/// A vendor's completion body in our terms, before the provider fills the
/// gaps (model, estimated usage). Returned by the `wire` parsers.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedCompletion {
    /// The text.
    pub content: String,
    /// Tool calls, in order.
    pub tool_calls: Vec<ToolCall>,
    /// Why it ended.
    pub finish_reason: FinishReason,
    /// Usage, if the vendor reported it.
    pub usage: Option<Usage>,
    /// Model, if the vendor named it.
    pub model: Option<String>,
}

/// A vendor's embeddings body in our terms. Returned by the `wire` parsers.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedEmbeddings {
    /// One vector per input, in order.
    pub vectors: Vec<Vec<f32>>,
    /// Model, if the vendor named it.
    pub model: Option<String>,
    /// Usage, if the vendor reported it.
    pub usage: Option<Usage>,
}
