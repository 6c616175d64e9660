//! The engine's error: what a chat turn can end with. The server maps each
//! variant to one HTTP status (and nothing else does).

use std::time::Duration;

use crate::auth::AuthError;
use crate::provider::ProviderError;
use crate::ratelimit::RateLimitError;
use crate::store::StoreError;

/// Why a chat turn (or an engine call) failed.
#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    /// Malformed input; the message names the field.
    #[error("{0}")]
    InvalidRequest(String),
    /// No valid credentials.
    #[error("{0}")]
    Unauthorized(String),
    /// Authenticated but not allowed.
    #[error("{0}")]
    Forbidden(String),
    /// A tenant feature flag turns this off.
    #[error("feature disabled: {0}")]
    FeatureDisabled(String),
    /// A bot guardrail refused the message.
    #[error("{0}")]
    GuardrailBlocked(String),
    /// The resource does not exist (or belongs to another tenant).
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The request conflicts with the current state: a taken slug, a row
    /// still in use. The message names the field or resource.
    #[error("{0}")]
    Conflict(String),
    /// A rate limit (ours) refused the request.
    #[error("rate limit exceeded ({scope})")]
    RateLimited {
        /// Which limit: `tenant`, `api_key`, `visitor`, `bot`, `tenant_tokens`.
        scope: &'static str,
        /// When to retry.
        retry_after: Duration,
    },
    /// The provider failed (after retries and fallback).
    #[error(transparent)]
    Provider(#[from] ProviderError),
    /// A dependency (database, rate limiter) is unavailable.
    #[error("service unavailable: {0}")]
    Unavailable(String),
    /// A bug or an unexpected state; the detail is for logs only.
    #[error("internal error: {0}")]
    Internal(String),
    /// A spending budget has no room for the turn's worst case.
    #[error("budget exceeded ({scope}, {period})")]
    BudgetExceeded {
        /// Whose budget: `tenant`, `api_key`, `bot`, `end_user`.
        scope: &'static str,
        /// Its period: `day`, `month`, `rolling_24h`.
        period: &'static str,
        /// When its period ends (or rolling spend ages out), if known.
        retry_after: Option<Duration>,
    },
}

impl From<crate::budget::BudgetError> for ChatError {
    fn from(e: crate::budget::BudgetError) -> Self {
        match e {
            crate::budget::BudgetError::Exceeded {
                scope,
                period,
                retry_after,
                ..
            } => ChatError::BudgetExceeded {
                scope: scope.as_str(),
                period: period.as_str(),
                retry_after,
            },
            crate::budget::BudgetError::Unavailable(m) => ChatError::Unavailable(m),
        }
    }
}

impl From<StoreError> for ChatError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(what) => ChatError::NotFound(what),
            StoreError::InvalidInput(m) => ChatError::InvalidRequest(m),
            StoreError::Conflict(what) => ChatError::Conflict(format!("{what} already exists")),
            StoreError::InUse(what) => ChatError::Conflict(format!("{what} is in use")),
            StoreError::Unavailable(m) => ChatError::Unavailable(m),
            other => ChatError::Internal(other.to_string()),
        }
    }
}

impl From<AuthError> for ChatError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::InvalidKey => ChatError::Unauthorized("invalid or missing API key".into()),
            AuthError::TenantSuspended => ChatError::Forbidden("tenant is suspended".into()),
            AuthError::Unavailable => ChatError::Unavailable("authentication unavailable".into()),
        }
    }
}

impl From<RateLimitError> for ChatError {
    fn from(e: RateLimitError) -> Self {
        ChatError::Unavailable(e.to_string())
    }
}

impl ChatError {
    /// The stable code of DESIGN.md's error format.
    pub fn code(&self) -> &'static str {
        match self {
            ChatError::InvalidRequest(_) => "invalid_request",
            ChatError::Unauthorized(_) => "unauthorized",
            ChatError::Forbidden(_) => "forbidden",
            ChatError::FeatureDisabled(_) => "feature_disabled",
            ChatError::GuardrailBlocked(_) => "guardrail_blocked",
            ChatError::NotFound(_) => "not_found",
            ChatError::Conflict(_) => "conflict",
            ChatError::RateLimited { .. } => "rate_limited",
            ChatError::Provider(p) if p.is_timeout() => "provider_timeout",
            ChatError::Provider(ProviderError::RateLimited { .. }) => "rate_limited",
            ChatError::Provider(_) => "provider_error",
            ChatError::Unavailable(_) => "unavailable",
            ChatError::Internal(_) => "internal",
            ChatError::BudgetExceeded { .. } => "budget_exceeded",
        }
    }

    /// Seconds a client should wait, when the error says.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ChatError::RateLimited { retry_after, .. } => Some(*retry_after),
            ChatError::BudgetExceeded { retry_after, .. } => *retry_after,
            ChatError::Provider(p) => p.retry_after(),
            _ => None,
        }
    }

    /// A message safe to show to the caller. Internal details stay in logs;
    /// a provider failure says only the provider kind, the kind of failure
    /// and the upstream status ([`ProviderError::public_message`]): never a
    /// vendor's body, a URL or an address, whoever the caller is.
    pub fn public_message(&self) -> String {
        match self {
            ChatError::Internal(_) => "internal error".into(),
            ChatError::Unavailable(_) => "service temporarily unavailable".into(),
            ChatError::Provider(p) => p.public_message(),
            other => other.to_string(),
        }
    }
}
