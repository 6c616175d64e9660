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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::TimeoutKind;
    use std::error::Error as _;

    fn provider_rate_limited() -> ProviderError {
        ProviderError::RateLimited {
            provider: "openai".into(),
            retry_after: Some(Duration::from_secs(7)),
            message: "slow down".into(),
        }
    }

    fn provider_timeout() -> ProviderError {
        ProviderError::Timeout {
            provider: "openai".into(),
            kind: TimeoutKind::FirstByte,
            after: Duration::from_secs(30),
        }
    }

    fn provider_500() -> ProviderError {
        ProviderError::Unavailable {
            provider: "openai".into(),
            status: Some(500),
            message: "upstream said: secret body".into(),
            source: None,
        }
    }

    #[test]
    fn each_error_has_its_stable_code() {
        let rate_limited = ChatError::RateLimited {
            scope: "tenant",
            retry_after: Duration::from_secs(3),
        };
        let budget = ChatError::BudgetExceeded {
            scope: "tenant",
            period: "day",
            retry_after: None,
        };
        let cases = [
            (ChatError::InvalidRequest("x".into()), "invalid_request"),
            (ChatError::Unauthorized("x".into()), "unauthorized"),
            (ChatError::Forbidden("x".into()), "forbidden"),
            (ChatError::FeatureDisabled("x".into()), "feature_disabled"),
            (ChatError::GuardrailBlocked("x".into()), "guardrail_blocked"),
            (ChatError::NotFound("bot"), "not_found"),
            (ChatError::Conflict("x".into()), "conflict"),
            (rate_limited, "rate_limited"),
            (ChatError::Provider(provider_timeout()), "provider_timeout"),
            (
                ChatError::Provider(ProviderError::StreamInterrupted {
                    provider: "openai".into(),
                    partial: "Once".into(),
                    cause: Some(Box::new(provider_timeout())),
                }),
                "provider_timeout",
            ),
            (ChatError::Provider(provider_rate_limited()), "rate_limited"),
            (ChatError::Provider(provider_500()), "provider_error"),
            (ChatError::unavailable("db"), "unavailable"),
            (ChatError::internal("bug"), "internal"),
            (budget, "budget_exceeded"),
        ];
        for (e, code) in cases {
            assert_eq!(e.code(), code, "{e:?}");
        }
    }

    #[test]
    fn retry_after_is_said_by_limits_budgets_and_rate_limiting_providers_only() {
        let wait = Duration::from_millis(1500);
        assert_eq!(
            ChatError::RateLimited {
                scope: "visitor",
                retry_after: wait
            }
            .retry_after(),
            Some(wait)
        );
        let budget = |retry_after| ChatError::BudgetExceeded {
            scope: "bot",
            period: "month",
            retry_after,
        };
        assert_eq!(budget(Some(wait)).retry_after(), Some(wait));
        assert_eq!(budget(None).retry_after(), None);
        assert_eq!(
            ChatError::Provider(provider_rate_limited()).retry_after(),
            Some(Duration::from_secs(7))
        );
        assert_eq!(ChatError::Provider(provider_500()).retry_after(), None);
        assert_eq!(ChatError::unavailable("db").retry_after(), None);
        assert_eq!(ChatError::Forbidden("no".into()).retry_after(), None);
    }

    #[test]
    fn public_messages_keep_internals_in_the_logs() {
        let internal = ChatError::internal_from("the store failed", StoreError::internal("row 7"));
        assert_eq!(internal.public_message(), "internal error");
        assert!(internal.source().is_some(), "the cause is kept for the log");
        assert!(internal.to_string().contains("the store failed"));
        let unavailable = ChatError::unavailable_from(
            "the store is unavailable",
            RateLimitError("redis://:pw@host".into()),
        );
        assert_eq!(
            unavailable.public_message(),
            "service temporarily unavailable"
        );
        assert!(unavailable.source().is_some());
        let p = provider_500();
        assert_eq!(
            ChatError::Provider(p.clone()).public_message(),
            p.public_message()
        );
        assert!(
            !ChatError::Provider(p)
                .public_message()
                .contains("secret body")
        );
        assert_eq!(
            ChatError::InvalidRequest("message: must not be empty".into()).public_message(),
            "message: must not be empty"
        );
        assert_eq!(ChatError::NotFound("bot").public_message(), "bot not found");
        assert!(ChatError::internal("x").source().is_none());
        assert!(ChatError::unavailable("x").source().is_none());
        assert_eq!(
            ChatError::unavailable("the ledger").to_string(),
            "service unavailable: the ledger"
        );
    }

    #[test]
    fn lower_layer_errors_become_the_matching_chat_errors() {
        let e = ChatError::from(StoreError::NotFound("conversation"));
        assert!(matches!(e, ChatError::NotFound("conversation")), "{e:?}");
        let e = ChatError::from(StoreError::InvalidInput("slug: too long".into()));
        assert!(
            matches!(&e, ChatError::InvalidRequest(m) if m == "slug: too long"),
            "{e:?}"
        );
        let e = ChatError::from(StoreError::Conflict("slug"));
        assert!(
            matches!(&e, ChatError::Conflict(m) if m == "slug already exists"),
            "{e:?}"
        );
        let e = ChatError::from(StoreError::InUse("provider config"));
        assert!(
            matches!(&e, ChatError::Conflict(m) if m == "provider config is in use"),
            "{e:?}"
        );
        let e = ChatError::from(StoreError::Unavailable {
            message: "pool timed out".into(),
            source: None,
        });
        assert_eq!(e.code(), "unavailable");
        assert!(e.source().is_some());
        let e = ChatError::from(StoreError::internal("bad row"));
        assert_eq!(e.code(), "internal");
        assert!(e.source().is_some());

        assert!(matches!(
            ChatError::from(AuthError::InvalidKey),
            ChatError::Unauthorized(_)
        ));
        assert!(matches!(
            ChatError::from(AuthError::TenantSuspended),
            ChatError::Forbidden(m) if m == "tenant is suspended"
        ));
        let e = ChatError::from(AuthError::Unavailable(Cause::new(StoreError::internal(
            "x",
        ))));
        assert_eq!(e.code(), "unavailable");
        assert!(e.source().is_some());

        let e = ChatError::from(RateLimitError("Redis script failed: Io".into()));
        assert_eq!(e.code(), "unavailable");
        assert_eq!(
            e.source().map(|s| s.to_string()),
            Some("rate limiter unavailable: Redis script failed: Io".into())
        );

        let wait = Some(Duration::from_secs(3600));
        let e = ChatError::from(crate::budget::BudgetError::Exceeded {
            budget: crate::domain::BudgetId::new(),
            scope: crate::domain::BudgetScope::EndUser,
            period: crate::domain::BudgetPeriod::Rolling24h,
            retry_after: wait,
        });
        assert!(
            matches!(
                e,
                ChatError::BudgetExceeded {
                    scope: "end_user",
                    period: "rolling_24h",
                    retry_after
                } if retry_after == wait
            ),
            "{e:?}"
        );
        let e = ChatError::from(crate::budget::BudgetError::Unavailable {
            message: "ledger down".into(),
            source: None,
        });
        assert_eq!(e.code(), "unavailable");
        assert!(e.source().is_some());
    }
}
