//! HTTP calls to the Anthropic Messages API.

use std::fmt;

use async_trait::async_trait;
use secrecy::{ExposeSecret, SecretString};

use super::wire;
use crate::provider::http::{HttpClient, endpoint, scrub, secret_header, secret_str};
use crate::provider::{
    Capabilities, ChatRequest, ChatResponse, ChatStream, EmbedRequest, EmbedResponse,
    KIND_ANTHROPIC, Provider, ProviderError, ProviderSpec, StreamContext, resolve_model, tokens,
    validate_chat_request,
};

/// Base URL of the Anthropic API.
pub const DEFAULT_BASE_URL: &str = "https://api.anthropic.com";
/// The `anthropic-version` header we speak.
pub const API_VERSION: &str = "2023-06-01";

/// Anthropic (Claude models). One connection pool per instance.
pub struct AnthropicProvider {
    base_url: reqwest::Url,
    api_key: SecretString,
    default_model: Option<String>,
    http: HttpClient,
}

impl fmt::Debug for AnthropicProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AnthropicProvider")
            .field(
                "base_url",
                &crate::provider::redact_url(self.base_url.as_str()),
            )
            .field("api_key", &"[REDACTED]")
            .field("default_model", &self.default_model)
            .finish_non_exhaustive()
    }
}

impl AnthropicProvider {
    /// Builds it from a spec; an API key is required.
    pub fn new(spec: &ProviderSpec) -> Result<Self, ProviderError> {
        let api_key = spec.required_api_key("anthropic")?;
        let base_url = spec.base_url_or("anthropic", DEFAULT_BASE_URL)?;
        let http = HttpClient::new(KIND_ANTHROPIC, spec.timeouts, &spec.egress, &base_url)?;
        Ok(Self {
            base_url,
            api_key,
            default_model: spec.default_model.clone(),
            http,
        })
    }

    fn post(&self, stream: bool) -> Result<reqwest::RequestBuilder, ProviderError> {
        let rb = self
            .http
            .client()
            .post(endpoint(&self.base_url, "v1/messages"))
            .header("x-api-key", secret_header(self.api_key.expose_secret())?)
            .header("anthropic-version", API_VERSION);
        Ok(if stream {
            rb.header(reqwest::header::ACCEPT, "text/event-stream")
        } else {
            rb
        })
    }

    fn model(&self, request: &ChatRequest) -> Result<String, ProviderError> {
        validate_chat_request(KIND_ANTHROPIC, request)?;
        resolve_model(
            KIND_ANTHROPIC,
            request.model.as_deref(),
            self.default_model.as_deref(),
        )
    }
}

#[async_trait]
impl Provider for AnthropicProvider {
    fn kind(&self) -> &str {
        KIND_ANTHROPIC
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            chat: true,
            stream: true,
            embeddings: false,
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
            .post(false)?
            .json(&wire::request(request, &model, false));
        let resp = self
            .http
            .send(rb, Some(&self.api_key), wire::map_error)
            .await?;
        let bytes = self.http.read_body(resp, Some(&self.api_key)).await?;
        let parsed = wire::parse_response(KIND_ANTHROPIC, &bytes)
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
            provider: KIND_ANTHROPIC.to_owned(),
            model,
        })
    }

    async fn stream(&self, request: &ChatRequest) -> Result<ChatStream, ProviderError> {
        let model = self.model(request)?;
        let rb = self.post(true)?.json(&wire::request(request, &model, true));
        let resp = self
            .http
            .send(rb, Some(&self.api_key), wire::map_error)
            .await?;
        let bytes = self.http.byte_stream(resp, Some(&self.api_key));
        let ctx = StreamContext::new(KIND_ANTHROPIC, model, request.messages.clone());
        Ok(wire::parse_stream(bytes, ctx))
    }

    async fn embed(&self, _request: &EmbedRequest) -> Result<EmbedResponse, ProviderError> {
        Err(ProviderError::Unsupported {
            provider: KIND_ANTHROPIC.to_owned(),
            operation: "embeddings (Anthropic has no embeddings API)".to_owned(),
        })
    }
}
