//! A tenant's configuration of one provider, as the registry consumes it.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};

use super::RetryPolicy;

/// Catalog key of OpenAI.
pub const KIND_OPENAI: &str = "openai";
/// Catalog key of Anthropic.
pub const KIND_ANTHROPIC: &str = "anthropic";
/// Catalog key of Google Gemini.
pub const KIND_GOOGLE: &str = "google";
/// Catalog key of any OpenAI-compatible server (vLLM, Ollama, Groq, ...).
pub const KIND_OPENAI_COMPATIBLE: &str = "openai_compatible";
/// Catalog key of the offline mock.
pub const KIND_MOCK: &str = "mock";

/// Timeouts of provider calls. Each is enforced with `tokio::time`, so
/// tests with paused time drive them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Opening a connection (TCP and TLS).
    pub connect: Duration,
    /// From sending the request to the response head.
    pub first_byte: Duration,
    /// Longest silence between two chunks of a body or stream (SSE pings
    /// count as chunks).
    pub idle: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(10),
            first_byte: Duration::from_secs(60),
            idle: Duration::from_secs(30),
        }
    }
}

/// Everything needed to build a provider: a tenant's configuration of one
/// catalog entry (`tenant_ai_providers`), decrypted.
///
/// `Debug` never shows the key (it is a [`SecretString`]).
#[derive(Debug, Clone)]
pub struct ProviderSpec {
    /// Catalog key: `openai`, `anthropic`, `google`, `openai_compatible`,
    /// `mock`, or a kind registered by the application.
    pub kind: String,
    /// The API key, if the provider needs one.
    pub api_key: Option<SecretString>,
    /// Overrides the vendor's base URL (required for `openai_compatible`).
    pub base_url: Option<String>,
    /// Model used when a request names none.
    pub default_model: Option<String>,
    /// Embedding model used when an embed request names none.
    pub default_embedding_model: Option<String>,
    /// Timeouts of each call.
    pub timeouts: Timeouts,
    /// Retries of failures before the first token. The registry wraps the
    /// provider in a [`super::RetryingProvider`] when it allows more than one
    /// attempt.
    pub retry: RetryPolicy,
    /// Kind-specific options (e.g. the mock's `embedding_dimension`,
    /// `delay_ms`).
    pub options: serde_json::Map<String, serde_json::Value>,
}

impl ProviderSpec {
    /// The API key, an error naming `kind` when it is absent or empty.
    pub fn required_api_key(&self, kind: &str) -> Result<SecretString, super::ProviderError> {
        self.api_key
            .clone()
            .filter(|k| !k.expose_secret().is_empty())
            .ok_or_else(|| super::ProviderError::Config {
                message: format!("{kind}: an API key is required"),
            })
    }

    /// The configured base URL or `default`, checked to parse as a URL.
    pub fn base_url_or(&self, kind: &str, default: &str) -> Result<String, super::ProviderError> {
        let base_url = self.base_url.clone().unwrap_or_else(|| default.to_owned());
        reqwest::Url::parse(&base_url).map_err(|e| super::ProviderError::Config {
            message: format!("{kind}: invalid base URL: {e}"),
        })?;
        Ok(base_url)
    }

    /// A spec of this kind with every option at its default.
    pub fn new(kind: impl Into<String>) -> Self {
        Self {
            kind: kind.into(),
            api_key: None,
            base_url: None,
            default_model: None,
            default_embedding_model: None,
            timeouts: Timeouts::default(),
            retry: RetryPolicy::default(),
            options: serde_json::Map::new(),
        }
    }

    /// Sets the API key.
    pub fn with_api_key(mut self, key: impl Into<String>) -> Self {
        self.api_key = Some(SecretString::from(key.into()));
        self
    }

    /// Sets the base URL.
    pub fn with_base_url(mut self, url: impl Into<String>) -> Self {
        self.base_url = Some(url.into());
        self
    }

    /// Sets the default model.
    pub fn with_default_model(mut self, model: impl Into<String>) -> Self {
        self.default_model = Some(model.into());
        self
    }

    /// Sets the timeouts.
    pub fn with_timeouts(mut self, timeouts: Timeouts) -> Self {
        self.timeouts = timeouts;
        self
    }

    /// Sets the retry policy.
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Sets one kind-specific option.
    pub fn with_option(mut self, key: &str, value: serde_json::Value) -> Self {
        self.options.insert(key.to_owned(), value);
        self
    }
}
