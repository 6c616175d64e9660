//! Shared helpers for the examples in this folder: [`Shout`], a provider
//! written outside the crate (`custom_provider` proves it with the
//! conformance suite, `plugin_server` serves it over HTTP).

use std::sync::Arc;

use async_trait::async_trait;
use chatcore::provider::{
    Capabilities, ChatEvent, ChatRequest, ChatResponse, ChatStream, EmbedRequest, EmbedResponse,
    FinishReason, Provider, ProviderError, ProviderSpec, StreamEnd, Usage, resolve_model,
    validate_chat_request,
};
use futures::StreamExt;

/// The kind `Shout` reports itself as.
pub const KIND: &str = "shout";

/// The custom provider: it answers every message by repeating the last
/// user message in capitals (`YOU SAID: ...`), streams word by word and
/// embeds texts as letter histograms. It keeps its settings, never a
/// client per call.
#[derive(Debug)]
pub struct Shout {
    default_model: String,
}

impl Shout {
    /// The factory to register: a `Shout` with the spec's default model
    /// (`shout-1` without one).
    pub fn build(spec: &ProviderSpec) -> Result<Arc<dyn Provider>, ProviderError> {
        Ok(Arc::new(Shout {
            default_model: spec
                .default_model
                .clone()
                .unwrap_or_else(|| "shout-1".to_owned()),
        }))
    }

    fn answer(&self, request: &ChatRequest) -> Result<(String, String, Usage), ProviderError> {
        // Checklist item 1: validate before any work, resolve the model.
        validate_chat_request(KIND, request)?;
        let model = resolve_model(KIND, request.model.as_deref(), Some(&self.default_model))?;
        let text = format!(
            "YOU SAID: {}",
            request
                .last_user_message()
                .unwrap_or_default()
                .to_uppercase()
        );
        let prompt: usize = request
            .messages
            .iter()
            .map(|m| m.content.split_whitespace().count() + 1)
            .sum();
        let usage = Usage::reported(prompt as u32, text.split_whitespace().count() as u32);
        Ok((text, model, usage))
    }
}

#[async_trait]
impl Provider for Shout {
    fn kind(&self) -> &str {
        KIND
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            chat: true,
            stream: true,
            embeddings: true,
            tools: false,
            images: false,
        }
    }

    fn default_model(&self) -> Option<&str> {
        Some(&self.default_model)
    }

    async fn complete(&self, request: &ChatRequest) -> Result<ChatResponse, ProviderError> {
        let (content, model, usage) = self.answer(request)?;
        Ok(ChatResponse {
            tool_calls: Vec::new(),
            content,
            usage,
            finish_reason: FinishReason::Stop,
            provider: KIND.to_owned(),
            model,
        })
    }

    async fn stream(&self, request: &ChatRequest) -> Result<ChatStream, ProviderError> {
        let (content, model, usage) = self.answer(request)?;
        // Non-empty deltas, then exactly one final event.
        let deltas: Vec<_> = content
            .split_inclusive(' ')
            .map(|w| Ok(ChatEvent::Delta(w.to_owned())))
            .collect();
        let end = ChatEvent::Done(StreamEnd {
            usage,
            finish_reason: FinishReason::Stop,
            provider: KIND.to_owned(),
            model,
        });
        Ok(futures::stream::iter(deltas)
            .chain(futures::stream::once(async { Ok(end) }))
            .boxed())
    }

    async fn embed(&self, request: &EmbedRequest) -> Result<EmbedResponse, ProviderError> {
        let vectors = request
            .inputs
            .iter()
            .map(|t| {
                let mut v = vec![0f32; 26];
                for c in t.chars().filter(char::is_ascii_alphabetic) {
                    v[(c.to_ascii_lowercase() as u8 - b'a') as usize] += 1.0;
                }
                v
            })
            .collect();
        Ok(EmbedResponse {
            vectors,
            model: "letters-26".to_owned(),
            provider: KIND.to_owned(),
            usage: Usage::reported(request.inputs.len() as u32, 0),
        })
    }
}
