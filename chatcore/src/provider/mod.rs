//! LLM providers: one [`Provider`] trait, its implementations, and what
//! makes them dependable.
//!
//! - [`Provider`]: complete a chat, stream it ([`ChatEvent`]s: text deltas,
//!   then one final event with usage and finish reason), embed texts, report
//!   [`Capabilities`]. Used as `Arc<dyn Provider>`.
//! - Implementations, one folder each, with the HTTP call in `client.rs`
//!   and the pure wire translation (unit-tested against recorded bodies) in
//!   `wire.rs`: [`openai`] (also every OpenAI-compatible server),
//!   [`anthropic`], [`gemini`]; and [`mock`], offline and deterministic.
//! - [`ProviderRegistry`]: builds a provider from a tenant's
//!   [`ProviderSpec`]; applications register their own kinds.
//! - [`RetryingProvider`] (with a [`RetryPolicy`]) and [`FallbackProvider`]:
//!   retries and a fallback chain for failures before the first token.
//! - [`tokens`]: offline token counting (tiktoken) to estimate usage when a
//!   vendor reports none.
//! - [`ProviderError`]: what went wrong, typed, without secrets.
//! - [`egress`]: the policy on which addresses provider calls may reach
//!   (public ones, plus what the operator allows), enforced when the
//!   connection is opened; no redirects are followed.
//!
//! # Adding a provider
//!
//! Outside the crate: implement [`Provider`] and register a factory with
//! [`ProviderRegistry::register`] (see `examples/custom_provider.rs`).
//! Inside: add `provider/<vendor>/{mod.rs, client.rs, wire.rs}` and a
//! catalog entry in [`ProviderRegistry::with_builtins`]. Either way:
//!
//! 1. **Map the request.** Roles (system messages go wherever the vendor
//!    wants them: a top-level field for Anthropic and Gemini), model (the
//!    request's, else the spec's default; [`ProviderError::InvalidRequest`]
//!    if neither), temperature, max tokens (default it if the vendor requires
//!    it), stop sequences, end-user id where the vendor has a field for it.
//!    Reject a request without messages before any network call
//!    ([`validate_chat_request`]).
//! 2. **Map the response.** Text; usage (prompt, completion, total; if the
//!    vendor reports none, estimate with [`tokens::estimate_usage`] and mark
//!    it `estimated`); finish reason (known ones to [`FinishReason`], others
//!    kept verbatim in [`FinishReason::Other`]); the model that answered and
//!    the provider kind.
//! 3. **Map the stream** to [`ChatEvent`]s: non-empty deltas, then exactly
//!    one [`ChatEvent::Done`], nothing after it. A stream that ends without
//!    its final event, or fails after text arrived, yields
//!    [`ProviderError::StreamInterrupted`] with the partial text.
//! 4. **Map the errors**: 401/403 authentication, 429 rate limited with the
//!    vendor's retry-after (header or body), context-length codes, 5xx and
//!    overload unavailable, each timeout ([`Timeouts`]: connect, first byte,
//!    idle) to its [`TimeoutKind`]; anything else to
//!    [`ProviderError::Unknown`] with the status and a redacted body.
//! 5. **Redact.** Hold the key as a `SecretString`; put it in a header
//!    marked sensitive, never in a URL; pass every vendor message through
//!    [`redact`]; write `Debug` by hand or make sure it derives only through
//!    `SecretString`. Never log a request body or header.
//! 6. **Pass the conformance suite**: `chatcore::testkit::provider::
//!    run_provider_conformance` (feature `testkit`) against a deterministic
//!    upstream (a wire-format server of your own, like the ones in
//!    `chatcore/tests/providers/`), plus tests of each fault above.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use futures::StreamExt;

pub mod anthropic;
pub mod egress;
mod error;
mod fallback;
pub mod gemini;
mod http;
pub mod mock;
pub mod openai;
mod registry;
mod retry;
mod spec;
mod sse;
pub mod tokens;
mod types;

pub use egress::{EgressError, EgressPolicy, EgressRule, redact_url};
pub use error::{
    MAX_ERROR_BODY, ProviderError, TimeoutKind, parse_proto_duration, parse_retry_after,
    parse_retry_after_value, redact,
};
pub use fallback::{FallbackEntry, FallbackProvider};
pub use registry::{ProviderFactory, ProviderRegistry};
pub use retry::{RetryPolicy, RetryingProvider};
pub use spec::{
    KIND_ANTHROPIC, KIND_GOOGLE, KIND_MOCK, KIND_OPENAI, KIND_OPENAI_COMPATIBLE, ProviderSpec,
    Timeouts,
};
pub use sse::StreamContext;
pub use types::{
    Capabilities, ChatEvent, ChatMessage, ChatRequest, ChatResponse, ChatStream, EmbedRequest,
    EmbedResponse, FinishReason, ImagePart, ParsedCompletion, ParsedEmbeddings, ResponseFormat,
    Role, StreamEnd, ToolCall, ToolCallBuffer, ToolCallDelta, ToolChoice, ToolDefinition, Usage,
};

/// An LLM vendor (or anything that answers like one).
///
/// Object safe: the engine holds providers as `Arc<dyn Provider>`.
/// Implementations must be cheap to share across tasks and keep one
/// connection pool per instance.
#[async_trait]
pub trait Provider: Send + Sync + fmt::Debug {
    /// Catalog key of this provider (`openai`, `anthropic`, ...), reported
    /// in responses and errors.
    fn kind(&self) -> &str;

    /// What this provider can do.
    fn capabilities(&self) -> Capabilities;

    /// Model used when a request names none.
    fn default_model(&self) -> Option<&str> {
        None
    }

    /// Answers a chat request in one piece.
    async fn complete(&self, request: &ChatRequest) -> Result<ChatResponse, ProviderError>;

    /// Answers a chat request as a stream of [`ChatEvent`]s.
    ///
    /// Errors before the stream starts (status, connection) are returned
    /// here; later ones are items of the stream. The default answers with
    /// [`Provider::complete`] as a single delta, for providers that cannot
    /// stream.
    async fn stream(&self, request: &ChatRequest) -> Result<ChatStream, ProviderError> {
        let r = self.complete(request).await?;
        let mut events = Vec::with_capacity(2 + r.tool_calls.len());
        if !r.content.is_empty() {
            events.push(Ok(ChatEvent::Delta(r.content)));
        }
        for (i, c) in r.tool_calls.into_iter().enumerate() {
            events.push(Ok(ChatEvent::ToolCall(ToolCallDelta {
                index: i as u32,
                id: Some(c.id),
                name: Some(c.name),
                arguments: c.arguments,
            })));
        }
        events.push(Ok(ChatEvent::Done(StreamEnd {
            usage: r.usage,
            finish_reason: r.finish_reason,
            provider: r.provider,
            model: r.model,
        })));
        Ok(futures::stream::iter(events).boxed())
    }

    /// Embeds a batch of texts. The default reports
    /// [`ProviderError::Unsupported`].
    async fn embed(&self, request: &EmbedRequest) -> Result<EmbedResponse, ProviderError> {
        let _ = request;
        Err(ProviderError::Unsupported {
            provider: self.kind().to_owned(),
            operation: "embeddings".to_owned(),
        })
    }
}

/// Checks what every provider requires of a chat request before any
/// network call: at least one message that is not a system message.
pub fn validate_chat_request(provider: &str, request: &ChatRequest) -> Result<(), ProviderError> {
    if !request.messages.iter().any(|m| m.role != Role::System) {
        return Err(ProviderError::InvalidRequest {
            provider: provider.to_owned(),
            message: "a chat request needs at least one user or assistant message".to_owned(),
        });
    }
    if let Some(t) = request.temperature
        && !(0.0..=2.0).contains(&t)
    {
        return Err(ProviderError::InvalidRequest {
            provider: provider.to_owned(),
            message: format!("temperature {t} is outside 0..=2"),
        });
    }
    let invalid = |message: String| ProviderError::InvalidRequest {
        provider: provider.to_owned(),
        message,
    };
    for t in &request.tools {
        let ok_name = !t.name.is_empty()
            && t.name.len() <= 64
            && t.name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !ok_name {
            return Err(invalid(format!(
                "tool name {:?} must be 1 to 64 letters, digits, _ or -",
                t.name
            )));
        }
        if !t.parameters.is_object() {
            return Err(invalid(format!(
                "the parameters of tool {} must be a JSON Schema object",
                t.name
            )));
        }
    }
    if let Some(ToolChoice::Function(name)) = &request.tool_choice
        && !request.tools.iter().any(|t| &t.name == name)
    {
        return Err(invalid(format!(
            "tool_choice names {name}, which is not among the tools"
        )));
    }
    if request
        .messages
        .iter()
        .any(|m| m.role == Role::Tool && m.tool_call_id.as_deref().is_none_or(str::is_empty))
    {
        return Err(invalid(
            "a tool message needs the tool_call_id it answers".to_owned(),
        ));
    }
    Ok(())
}

/// The model of a request: its own, else the default; an error if neither.
pub fn resolve_model(
    provider: &str,
    requested: Option<&str>,
    default: Option<&str>,
) -> Result<String, ProviderError> {
    requested
        .filter(|m| !m.is_empty())
        .or(default)
        .map(str::to_owned)
        .ok_or_else(|| ProviderError::InvalidRequest {
            provider: provider.to_owned(),
            message: "no model given and the provider has no default model".to_owned(),
        })
}

/// Reads a stream up to its first delta (or final event). A failure before
/// that is returned as an error, so that a caller may retry or fall back:
/// nothing has reached the user yet. After it, the stream is returned whole
/// (the events read so far first).
pub async fn await_first_token(mut stream: ChatStream) -> Result<ChatStream, ProviderError> {
    match stream.next().await {
        Some(Ok(first)) => Ok(futures::stream::once(async move { Ok(first) })
            .chain(stream)
            .boxed()),
        Some(Err(e)) => Err(e),
        None => Err(ProviderError::InvalidResponse {
            source: None,
            provider: "unknown".to_owned(),
            message: "the stream ended without any event".to_owned(),
        }),
    }
}

/// A provider shared across tasks.
pub type SharedProvider = Arc<dyn Provider>;
