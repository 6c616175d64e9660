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
}

impl Role {
    /// The lowercase name (`system`, `user`, `assistant`).
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
        }
    }
}

/// One message of a chat request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// Who wrote it.
    pub role: Role,
    /// Its text.
    pub content: String,
}

impl ChatMessage {
    /// A message with the given role and text.
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        Self {
            role,
            content: content.into(),
        }
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
}

impl Usage {
    /// Usage reported by a vendor; the total is the sum of both counts.
    pub fn reported(prompt_tokens: u32, completion_tokens: u32) -> Self {
        Self {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens.saturating_add(completion_tokens),
            estimated: false,
        }
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
    /// Any other reason, kept verbatim as the vendor sent it.
    Other(String),
}

impl FinishReason {
    /// A short name to persist: `stop`, `length`, `content_filter`, or the
    /// vendor's verbatim reason.
    pub fn as_str(&self) -> &str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::ContentFilter => "content_filter",
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

/// One event of a streamed chat: text deltas, then exactly one
/// [`ChatEvent::Done`].
#[derive(Debug, Clone, PartialEq)]
pub enum ChatEvent {
    /// A piece of generated text (never empty).
    Delta(String),
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
}

/// A vendor's completion body in our terms, before the provider fills the
/// gaps (model, estimated usage). Returned by the `wire` parsers.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedCompletion {
    /// The text.
    pub content: String,
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
