//! HTTP calls to the Gemini API. The key travels in the `x-goog-api-key`
//! header, never in the URL (URLs end up in logs and error messages).

use std::fmt;

use async_trait::async_trait;
use secrecy::{ExposeSecret, SecretString};

use super::wire;
use crate::provider::http::{HttpClient, endpoint, scrub, secret_header, secret_str};
use crate::provider::{
    Capabilities, ChatRequest, ChatResponse, ChatStream, EmbedRequest, EmbedResponse, KIND_GOOGLE,
    Provider, ProviderError, ProviderSpec, StreamContext, Usage, resolve_model, tokens,
    validate_chat_request,
};

/// Base URL of the Gemini API.
pub const DEFAULT_BASE_URL: &str = "https://generativelanguage.googleapis.com";
/// Embedding model used when neither request nor spec names one.
pub const DEFAULT_EMBEDDING_MODEL: &str = "gemini-embedding-001";

/// Google Gemini. One connection pool per instance.
pub struct GeminiProvider {
    base_url: reqwest::Url,
    api_key: SecretString,
    default_model: Option<String>,
    embedding_model: String,
    http: HttpClient,
}

impl fmt::Debug for GeminiProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GeminiProvider")
            .field(
                "base_url",
                &crate::provider::redact_url(self.base_url.as_str()),
            )
            .field("api_key", &"[REDACTED]")
            .field("default_model", &self.default_model)
            .finish_non_exhaustive()
    }
}

impl GeminiProvider {
    /// Builds it from a spec; an API key is required.
    pub fn new(spec: &ProviderSpec) -> Result<Self, ProviderError> {
        let api_key = spec.required_api_key("google")?;
        let base_url = spec.base_url_or("google", DEFAULT_BASE_URL)?;
        let http = HttpClient::new(KIND_GOOGLE, spec.timeouts, &spec.egress, &base_url)?;
        Ok(Self {
            base_url,
            api_key,
            default_model: spec.default_model.clone(),
            embedding_model: spec
                .default_embedding_model
                .clone()
                .unwrap_or_else(|| DEFAULT_EMBEDDING_MODEL.to_owned()),
            http,
        })
    }

    fn post(
        &self,
        model: &str,
        method: &str,
        sse: bool,
    ) -> Result<reqwest::RequestBuilder, ProviderError> {
        let model = wire::model_path_segment(KIND_GOOGLE, model)?;
        let mut url = endpoint(&self.base_url, &format!("v1beta/models/{model}:{method}"));
        if sse {
            url.query_pairs_mut().append_pair("alt", "sse");
        }
        Ok(self.http.client().post(url).header(
            "x-goog-api-key",
            secret_header(self.api_key.expose_secret())?,
        ))
    }

    fn model(&self, request: &ChatRequest) -> Result<String, ProviderError> {
        validate_chat_request(KIND_GOOGLE, request)?;
        resolve_model(
            KIND_GOOGLE,
            request.model.as_deref(),
            self.default_model.as_deref(),
        )
    }
}

#[async_trait]
impl Provider for GeminiProvider {
    fn kind(&self) -> &str {
        KIND_GOOGLE
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
        self.default_model.as_deref()
    }

    async fn complete(&self, request: &ChatRequest) -> Result<ChatResponse, ProviderError> {
        let model = self.model(request)?;
        let rb = self
            .post(&model, "generateContent", false)?
            .json(&wire::request(request));
        let resp = self
            .http
            .send(rb, Some(&self.api_key), wire::map_error)
            .await?;
        let bytes = self.http.read_body(resp, Some(&self.api_key)).await?;
        let parsed = wire::parse_response(KIND_GOOGLE, &bytes)
            .map_err(|e| scrub(e, secret_str(Some(&self.api_key))))?;
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
            provider: KIND_GOOGLE.to_owned(),
            model,
        })
    }

    async fn stream(&self, request: &ChatRequest) -> Result<ChatStream, ProviderError> {
        let model = self.model(request)?;
        let rb = self
            .post(&model, "streamGenerateContent", true)?
            .header(reqwest::header::ACCEPT, "text/event-stream")
            .json(&wire::request(request));
        let resp = self
            .http
            .send(rb, Some(&self.api_key), wire::map_error)
            .await?;
        let bytes = self.http.byte_stream(resp, Some(&self.api_key));
        let ctx = StreamContext::new(KIND_GOOGLE, model, request.messages.clone());
        Ok(wire::parse_stream(bytes, ctx))
    }

    async fn embed(&self, request: &EmbedRequest) -> Result<EmbedResponse, ProviderError> {
        let model = request
            .model
            .clone()
            .unwrap_or_else(|| self.embedding_model.clone());
        let segment = wire::model_path_segment(KIND_GOOGLE, &model)?.to_owned();
        if request.inputs.is_empty() {
            return Ok(EmbedResponse {
                vectors: Vec::new(),
                model: segment,
                provider: KIND_GOOGLE.to_owned(),
                usage: Usage::default(),
            });
        }
        let body = wire::embed_request(&segment, &request.inputs, request.dimensions);
        let rb = self
            .post(&segment, "batchEmbedContents", false)?
            .json(&body);
        let resp = self
            .http
            .send(rb, Some(&self.api_key), wire::map_error)
            .await?;
        let bytes = self.http.read_body(resp, Some(&self.api_key)).await?;
        let vectors = wire::parse_embed_response(KIND_GOOGLE, &bytes, request.inputs.len())
            .map_err(|e| scrub(e, secret_str(Some(&self.api_key))))?;
        // batchEmbedContents reports no usage.
        let n = request
            .inputs
            .iter()
            .map(|t| tokens::count_tokens(&segment, t))
            .sum();
        Ok(EmbedResponse {
            vectors,
            model: segment,
            provider: KIND_GOOGLE.to_owned(),
            usage: Usage {
                prompt_tokens: n,
                completion_tokens: 0,
                total_tokens: n,
                estimated: true,
                cached_tokens: 0,
            },
        })
    }
}
