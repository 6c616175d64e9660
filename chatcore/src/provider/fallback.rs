//! A fallback chain: when a provider fails (after its own retries) before
//! the first token, the next one is tried.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;

use super::{
    Capabilities, ChatRequest, ChatResponse, ChatStream, EmbedRequest, EmbedResponse, Provider,
    ProviderError, await_first_token,
};

/// One link of a fallback chain: a provider and the model to ask it for.
#[derive(Debug, Clone)]
pub struct FallbackEntry {
    /// The provider (usually a [`super::RetryingProvider`]).
    pub provider: Arc<dyn Provider>,
    /// The model for this provider. `None`: the request's model for the
    /// first entry, the provider's default model for the others (a model
    /// name rarely means anything to another vendor).
    pub model: Option<String>,
}

impl FallbackEntry {
    /// An entry asking `provider` for `model`.
    pub fn new(provider: Arc<dyn Provider>, model: Option<String>) -> Self {
        Self { provider, model }
    }
}

/// Tries each entry in turn until one answers.
///
/// Any failure before the first token moves on to the next entry (a bad key
/// or an unknown model at the primary is exactly what a fallback is for);
/// the last entry's error is returned when all fail. Once a stream has
/// yielded text, its failure reaches the caller: nothing is replayed.
/// Responses and final events name the provider and model that answered.
#[derive(Clone)]
pub struct FallbackProvider {
    chain: Vec<FallbackEntry>,
}

impl FallbackProvider {
    /// A chain of these entries, tried in order.
    ///
    /// # Panics
    /// If `chain` is empty.
    pub fn new(chain: Vec<FallbackEntry>) -> Self {
        assert!(
            !chain.is_empty(),
            "a fallback chain needs at least one provider"
        );
        Self { chain }
    }

    /// The entries, in order.
    pub fn chain(&self) -> &[FallbackEntry] {
        &self.chain
    }

    fn request_for(&self, i: usize, request: &ChatRequest) -> ChatRequest {
        let entry = &self.chain[i];
        let mut r = request.clone();
        r.model = entry
            .model
            .clone()
            .or_else(|| if i == 0 { request.model.clone() } else { None });
        r
    }

    fn give_up_or_continue(&self, i: usize, e: ProviderError) -> Result<(), ProviderError> {
        if i + 1 == self.chain.len() {
            return Err(e);
        }
        tracing::warn!(
            provider = self.chain[i].provider.kind(),
            next = self.chain[i + 1].provider.kind(),
            error = %crate::error::Report(&e),
            "provider failed, falling back"
        );
        Ok(())
    }
}

impl fmt::Debug for FallbackProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FallbackProvider")
            .field("chain", &self.chain)
            .finish()
    }
}

#[async_trait]
impl Provider for FallbackProvider {
    fn kind(&self) -> &str {
        self.chain[0].provider.kind()
    }

    fn capabilities(&self) -> Capabilities {
        let first = self.chain[0].provider.capabilities();
        self.chain.iter().fold(
            Capabilities {
                chat: false,
                stream: false,
                embeddings: first.embeddings,
                tools: true,
                images: true,
            },
            |acc, e| {
                let c = e.provider.capabilities();
                Capabilities {
                    chat: acc.chat || c.chat,
                    stream: acc.stream || c.stream,
                    embeddings: acc.embeddings,
                    // A request may land on any entry: all must take it.
                    tools: acc.tools && c.tools,
                    images: acc.images && c.images,
                }
            },
        )
    }

    fn default_model(&self) -> Option<&str> {
        self.chain[0]
            .model
            .as_deref()
            .or_else(|| self.chain[0].provider.default_model())
    }

    async fn complete(&self, request: &ChatRequest) -> Result<ChatResponse, ProviderError> {
        for i in 0..self.chain.len() {
            match self.chain[i]
                .provider
                .complete(&self.request_for(i, request))
                .await
            {
                Ok(r) => return Ok(r),
                Err(e) => self.give_up_or_continue(i, e)?,
            }
        }
        unreachable!("the last entry returns its error")
    }

    async fn stream(&self, request: &ChatRequest) -> Result<ChatStream, ProviderError> {
        for i in 0..self.chain.len() {
            let req = self.request_for(i, request);
            let attempt =
                async { await_first_token(self.chain[i].provider.stream(&req).await?).await };
            match attempt.await {
                Ok(s) => return Ok(s),
                Err(e) => self.give_up_or_continue(i, e)?,
            }
        }
        unreachable!("the last entry returns its error")
    }

    /// Embeddings never fall back: vectors of another model live in
    /// another space and would silently corrupt a dataset. The first entry
    /// answers (with its own retries).
    async fn embed(&self, request: &EmbedRequest) -> Result<EmbedResponse, ProviderError> {
        self.chain[0].provider.embed(request).await
    }
}
