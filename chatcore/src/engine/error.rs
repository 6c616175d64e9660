//! The services' error: what a chat turn (or an admin or RAG call) can end
//! with. The server maps each variant to one HTTP status (and nothing else
//! does).
//!
//! It wraps the lower layers' errors rather than flattening them: a
//! provider failure stays a [`ProviderError`], and a store, Redis, JSON or
//! decryption failure behind [`ChatError::Internal`] or
//! [`ChatError::Unavailable`] is kept as the `source()` (see
//! [`crate::error`] for why the errors are per layer and how a log line
//! prints the chain).

use std::time::Duration;

use crate::auth::AuthError;
use crate::error::Cause;
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
    /// A dependency (database, rate limiter) is unavailable. The message
    /// and the cause are for logs only; callers are told "service
    /// temporarily unavailable".
    #[error("service unavailable: {message}")]
    Unavailable {
        /// What is unavailable, in a few words.
        message: String,
        /// The dependency's own error, when there is one.
        #[source]
        source: Option<Cause>,
    },
    /// A bug or an unexpected state; the message and the cause are for
    /// logs only (callers are told "internal error").
    #[error("internal error: {message}")]
    Internal {
        /// What went wrong, in a few words.
        message: String,
        /// The error underneath (the store's, a decoder's, a task's), when
        /// there is one.
        #[source]
        source: Option<Cause>,
    },
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
            e @ crate::budget::BudgetError::Unavailable { .. } => {
                ChatError::unavailable_from("the budget ledger is unavailable", e)
            }
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
            e @ StoreError::Unavailable { .. } => {
                ChatError::unavailable_from("the store is unavailable", e)
            }
            e @ StoreError::Internal { .. } => ChatError::internal_from("the store failed", e),
        }
    }
}

impl From<AuthError> for ChatError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::InvalidKey => ChatError::Unauthorized("invalid or missing API key".into()),
            AuthError::TenantSuspended => ChatError::Forbidden("tenant is suspended".into()),
            AuthError::Unavailable(cause) => ChatError::Unavailable {
                message: "authentication unavailable".into(),
                source: Some(cause),
            },
        }
    }
}

impl From<RateLimitError> for ChatError {
    fn from(e: RateLimitError) -> Self {
        ChatError::unavailable_from("the rate limiter is unavailable", e)
    }
}

impl ChatError {
    /// [`ChatError::Internal`] without a cause: a state that should not be.
    pub fn internal(message: impl Into<String>) -> Self {
        ChatError::Internal {
            message: message.into(),
            source: None,
        }
    }

    /// [`ChatError::Internal`] caused by `source`.
    pub fn internal_from(
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        ChatError::Internal {
            message: message.into(),
            source: Some(Cause::new(source)),
        }
    }

    /// [`ChatError::Unavailable`] without a cause.
    pub fn unavailable(message: impl Into<String>) -> Self {
        ChatError::Unavailable {
            message: message.into(),
            source: None,
        }
    }

    /// [`ChatError::Unavailable`] caused by `source`.
    pub fn unavailable_from(
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        ChatError::Unavailable {
            message: message.into(),
            source: Some(Cause::new(source)),
        }
    }

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
            ChatError::Unavailable { .. } => "unavailable",
            ChatError::Internal { .. } => "internal",
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
            ChatError::Internal { .. } => "internal error".into(),
            ChatError::Unavailable { .. } => "service temporarily unavailable".into(),
            ChatError::Provider(p) => p.public_message(),
            other => other.to_string(),
        }
    }
}
