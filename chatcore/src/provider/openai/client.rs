//! HTTP calls to an OpenAI (or compatible) server.

use std::fmt;

use async_trait::async_trait;
use secrecy::{ExposeSecret, SecretString};

use super::wire::{self, Dialect};
use crate::provider::http::{HttpClient, endpoint, scrub, secret_header, secret_str};
use crate::provider::{
    Capabilities, ChatRequest, ChatResponse, ChatStream, EmbedRequest, EmbedResponse, KIND_OPENAI,
    KIND_OPENAI_COMPATIBLE, Provider, ProviderError, ProviderSpec, StreamContext, Usage,
    resolve_model, tokens, validate_chat_request,
};

/// Base URL of api.openai.com.
pub const DEFAULT_BASE_URL: &str = "https://api.openai.com/v1";
/// Embedding model used when neither request nor spec names one.
pub const DEFAULT_EMBEDDING_MODEL: &str = "text-embedding-3-small";

/// OpenAI, or an OpenAI-compatible server.
///
/// One instance holds one connection pool, reused by every call.
pub struct OpenAiProvider {
    kind: &'static str,
    dialect: Dialect,
    base_url: reqwest::Url,
    api_key: Option<SecretString>,
    default_model: Option<String>,
    embedding_model: String,
    http: HttpClient,
}

impl fmt::Debug for OpenAiProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenAiProvider")
            .field("kind", &self.kind)
            .field(
                "base_url",
                &crate::provider::redact_url(self.base_url.as_str()),
            )
            .field("api_key", &self.api_key.as_ref().map(|_| "[REDACTED]"))
            .field("default_model", &self.default_model)
            .finish_non_exhaustive()
    }
}

impl OpenAiProvider {
    /// OpenAI itself: an API key is required; the base URL defaults to
    /// [`DEFAULT_BASE_URL`].
    pub fn openai(spec: &ProviderSpec) -> Result<Self, ProviderError> {
        spec.required_api_key(KIND_OPENAI)?;
        Self::build(spec, KIND_OPENAI, Dialect::OpenAi, DEFAULT_BASE_URL)
    }

    /// Any OpenAI-compatible server: the base URL is required (e.g.
    /// `http://localhost:11434/v1` for Ollama), the key optional.
    pub fn compatible(spec: &ProviderSpec) -> Result<Self, ProviderError> {
        let Some(base) = spec.base_url.as_deref() else {
            return Err(ProviderError::Config {
                source: None,
                message: "openai_compatible: a base URL is required".to_owned(),
            });
        };
        Self::build(spec, KIND_OPENAI_COMPATIBLE, Dialect::Compatible, base)
    }

    fn build(
        spec: &ProviderSpec,
        kind: &'static str,
        dialect: Dialect,
        default_base: &str,
    ) -> Result<Self, ProviderError> {
        let base_url = spec.base_url_or(kind, default_base)?;
        let http = HttpClient::new(kind, spec.timeouts, &spec.egress, &base_url)?;
        Ok(Self {
            kind,
            dialect,
            base_url,
            api_key: spec
                .api_key
                .clone()
                .filter(|k| !k.expose_secret().is_empty()),
            default_model: spec.default_model.clone(),
            embedding_model: spec
                .default_embedding_model
                .clone()
                .unwrap_or_else(|| DEFAULT_EMBEDDING_MODEL.to_owned()),
            http,
        })
    }

    fn post(&self, path: &str) -> Result<reqwest::RequestBuilder, ProviderError> {
        let mut rb = self.http.client().post(endpoint(&self.base_url, path));
        if let Some(key) = &self.api_key {
            rb = rb.header(
                reqwest::header::AUTHORIZATION,
                secret_header(&format!("Bearer {}", key.expose_secret()))?,
            );
        }
        Ok(rb)
    }

    fn model(&self, request: &ChatRequest) -> Result<String, ProviderError> {
        validate_chat_request(self.kind, request)?;
        resolve_model(
            self.kind,
            request.model.as_deref(),
            self.default_model.as_deref(),
        )
    }
}

#[async_trait]
impl Provider for OpenAiProvider {
    fn kind(&self) -> &str {
        self.kind
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            chat: true,
            stream: true,
            embeddings: true,
            tools: true,
            // Compatible servers often serve text-only models.
            images: self.kind == KIND_OPENAI,
        }
    }

    fn default_model(&self) -> Option<&str> {
        self.default_model.as_deref()
    }

    async fn complete(&self, request: &ChatRequest) -> Result<ChatResponse, ProviderError> {
        let model = self.model(request)?;
        let body = wire::chat_request(request, &model, false, self.dialect);
        let rb = self.post("chat/completions")?.json(&body);
        let resp = self
            .http
            .send(rb, self.api_key.as_ref(), wire::map_error)
            .await?;
        let bytes = self.http.read_body(resp, self.api_key.as_ref()).await?;
        let parsed = wire::parse_chat_response(self.kind, &bytes)
            .map_err(|e| scrub(e, secret_str(self.api_key.as_ref())))?;
        let (content, tool_calls, finish_reason, usage, answered) = (
            parsed.content,
            parsed.tool_calls,
            parsed.finish_reason,
            parsed.usage,
            parsed.model,
        );
        let model = answered.filter(|m| !m.is_empty()).unwrap_or(model);
        let usage =
            usage.unwrap_or_else(|| tokens::estimate_usage(&model, &request.messages, &content));
        Ok(ChatResponse {
            content,
            tool_calls,
            usage,
            finish_reason,
            provider: self.kind.to_owned(),
            model,
        })
    }

    async fn stream(&self, request: &ChatRequest) -> Result<ChatStream, ProviderError> {
        let model = self.model(request)?;
        let body = wire::chat_request(request, &model, true, self.dialect);
        let rb = self
            .post("chat/completions")?
            .header(reqwest::header::ACCEPT, "text/event-stream")
            .json(&body);
        let resp = self
            .http
            .send(rb, self.api_key.as_ref(), wire::map_error)
            .await?;
        let bytes = self.http.byte_stream(resp, self.api_key.as_ref());
        let ctx = StreamContext::new(self.kind, model, request.messages.clone());
        Ok(wire::parse_stream(bytes, ctx))
    }

    async fn embed(&self, request: &EmbedRequest) -> Result<EmbedResponse, ProviderError> {
        let model = request
            .model
            .clone()
            .unwrap_or_else(|| self.embedding_model.clone());
        if request.inputs.is_empty() {
            return Ok(EmbedResponse {
                vectors: Vec::new(),
                model,
                provider: self.kind.to_owned(),
                usage: Usage::default(),
            });
        }
        let body = wire::WireEmbedRequest {
            model: &model,
            input: &request.inputs,
            dimensions: request.dimensions,
            encoding_format: "float",
        };
        let rb = self.post("embeddings")?.json(&body);
        let resp = self
            .http
            .send(rb, self.api_key.as_ref(), wire::map_error)
            .await?;
        let bytes = self.http.read_body(resp, self.api_key.as_ref()).await?;
        let parsed = wire::parse_embed_response(self.kind, &bytes, request.inputs.len())
            .map_err(|e| scrub(e, secret_str(self.api_key.as_ref())))?;
        let (vectors, answered, usage) = (parsed.vectors, parsed.model, parsed.usage);
        let model = answered.filter(|m| !m.is_empty()).unwrap_or(model);
        let usage = usage.unwrap_or_else(|| {
            let n = request
                .inputs
                .iter()
                .map(|t| tokens::count_tokens(&model, t))
                .sum();
            Usage {
                prompt_tokens: n,
                completion_tokens: 0,
                total_tokens: n,
                estimated: true,
                cached_tokens: 0,
            }
        });
        Ok(EmbedResponse {
            vectors,
            model,
            provider: self.kind.to_owned(),
            usage,
        })
    }
}
