//! A tenant's configuration of one provider, as the registry consumes it.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};

use super::{EgressPolicy, RetryPolicy};

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
    /// Which addresses the provider's HTTP client may connect to. The
    /// default refuses every internal address (loopback, private,
    /// link-local, ...): a local model server must be allowed explicitly.
    pub egress: EgressPolicy,
}

impl ProviderSpec {
    /// The API key, an error naming `kind` when it is absent or empty.
    pub fn required_api_key(&self, kind: &str) -> Result<SecretString, super::ProviderError> {
        self.api_key
            .clone()
            .filter(|k| !k.expose_secret().is_empty())
            .ok_or_else(|| super::ProviderError::Config {
                source: None,
                message: format!("{kind}: an API key is required"),
            })
    }

    /// The configured base URL or `default`, parsed: an `http(s)` URL
    /// without userinfo; its fragment is dropped (paths are appended to it
    /// as segments, and its query string stays the query string).
    pub fn base_url_or(
        &self,
        kind: &str,
        default: &str,
    ) -> Result<reqwest::Url, super::ProviderError> {
        let text = self.base_url.as_deref().unwrap_or(default);
        let mut url = reqwest::Url::parse(text).map_err(|e| super::ProviderError::Config {
            message: format!("{kind}: invalid base URL: {e}"),
            source: Some(crate::error::Cause::new(e)),
        })?;
        super::egress::EgressPolicy::new()
            .check_url(&url)
            .or_else(|e| match e {
                super::egress::EgressError::Refused => Ok(()),
                e => Err(e),
            })
            .map_err(|e| super::ProviderError::Config {
                message: format!("{kind}: {e}"),
                source: Some(crate::error::Cause::new(e)),
            })?;
        url.set_fragment(None);
        Ok(url)
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
            egress: EgressPolicy::default(),
        }
    }

    /// Sets the egress policy (e.g. to allow a local model server).
    pub fn with_egress(mut self, egress: EgressPolicy) -> Self {
        self.egress = egress;
        self
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
