//! Retries with exponential backoff and jitter, for failures before the
//! first token.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rand::Rng;
use tokio::time::Instant;

use super::{
    Capabilities, ChatRequest, ChatResponse, ChatStream, EmbedRequest, EmbedResponse, Provider,
    ProviderError, await_first_token,
};

/// How failures before the first token are retried.
///
/// Retried: [`ProviderError::is_retryable`] errors (rate limits, 5xx and
/// overload, connect errors, timeouts, a stream cut before any text). The
/// delay before retry `n` (1-based) is `initial_backoff * multiplier^(n-1)`,
/// capped at `max_backoff`, shortened by up to `jitter` (a fraction), and
/// never shorter than the vendor's retry-after. No retry starts once
/// `max_elapsed` would be exceeded: the last error is returned instead
/// (with its retry-after, for the caller's own `Retry-After`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (1 disables retries).
    pub max_attempts: u32,
    /// Delay before the first retry.
    pub initial_backoff: Duration,
    /// Longest delay between attempts (before honouring a retry-after).
    pub max_backoff: Duration,
    /// Growth factor of the delay.
    pub multiplier: f64,
    /// Fraction (0..=1) by which a delay may be randomly shortened.
    pub jitter: f64,
    /// Bound on the time spent on one call, all attempts and waits included.
    pub max_elapsed: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(8),
            multiplier: 2.0,
            jitter: 0.2,
            max_elapsed: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// A policy that never retries.
    pub fn none() -> Self {
        Self {
            max_attempts: 1,
            ..Self::default()
        }
    }

    /// The delay before retry number `retry` (1-based), without jitter.
    pub fn backoff(&self, retry: u32) -> Duration {
        let factor = self
            .multiplier
            .max(1.0)
            .powi(retry.saturating_sub(1).min(64) as i32);
        let secs =
            (self.initial_backoff.as_secs_f64() * factor).min(self.max_backoff.as_secs_f64());
        Duration::from_secs_f64(secs.max(0.0))
    }

    /// The delay before retry `retry` after `error`, with jitter and the
    /// vendor's retry-after.
    pub fn delay(&self, retry: u32, error: &ProviderError) -> Duration {
        let base = self.backoff(retry);
        let jitter = self.jitter.clamp(0.0, 1.0);
        let cut = if jitter > 0.0 {
            rand::rng().random_range(0.0..jitter)
        } else {
            0.0
        };
        let jittered = base.mul_f64(1.0 - cut);
        match error.retry_after() {
            Some(ra) => jittered.max(ra),
            None => jittered,
        }
    }
}

/// Runs `attempt` under `policy`: retries retryable errors while attempts
/// and time remain.
pub(crate) async fn with_retries<T, F, Fut>(
    policy: &RetryPolicy,
    kind: &str,
    mut attempt: F,
) -> Result<T, ProviderError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ProviderError>>,
{
    let start = Instant::now();
    let mut n = 1;
    loop {
        let err = match attempt().await {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        if !err.is_retryable() || n >= policy.max_attempts.max(1) {
            return Err(err);
        }
        let delay = policy.delay(n, &err);
        if start.elapsed() + delay > policy.max_elapsed {
            tracing::info!(
                provider = kind,
                attempt = n,
                ?delay,
                "retry budget exhausted"
            );
            return Err(err);
        }
        tracing::info!(provider = kind, attempt = n, ?delay, error = %crate::error::Report(&err), "retrying provider call");
        tokio::time::sleep(delay).await;
        n += 1;
    }
}

/// Wraps a provider with a [`RetryPolicy`].
///
/// Streams are retried only until their first token: a failure before it
/// starts a new attempt; after it, the error reaches the caller.
pub struct RetryingProvider {
    inner: Arc<dyn Provider>,
    policy: RetryPolicy,
}

impl RetryingProvider {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn Provider>, policy: RetryPolicy) -> Self {
        Self { inner, policy }
    }

    /// The policy in force.
    pub fn policy(&self) -> &RetryPolicy {
        &self.policy
    }

    /// The wrapped provider.
    pub fn inner(&self) -> &Arc<dyn Provider> {
        &self.inner
    }
}

impl fmt::Debug for RetryingProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryingProvider")
            .field("inner", &self.inner)
            .field("policy", &self.policy)
            .finish()
    }
}

#[async_trait]
impl Provider for RetryingProvider {
    fn kind(&self) -> &str {
        self.inner.kind()
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    fn default_model(&self) -> Option<&str> {
        self.inner.default_model()
    }

    async fn complete(&self, request: &ChatRequest) -> Result<ChatResponse, ProviderError> {
        with_retries(&self.policy, self.inner.kind(), || {
            self.inner.complete(request)
        })
        .await
    }

    async fn stream(&self, request: &ChatRequest) -> Result<ChatStream, ProviderError> {
        with_retries(&self.policy, self.inner.kind(), || async move {
            await_first_token(self.inner.stream(request).await?).await
        })
        .await
    }

    async fn embed(&self, request: &EmbedRequest) -> Result<EmbedResponse, ProviderError> {
        with_retries(&self.policy, self.inner.kind(), || {
            self.inner.embed(request)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_caps() {
        let p = RetryPolicy {
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(5),
            multiplier: 2.0,
            jitter: 0.0,
            ..RetryPolicy::default()
        };
        let secs: Vec<u64> = (1..=5).map(|n| p.backoff(n).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 5, 5]);
    }

    #[test]
    fn jitter_only_shortens_and_retry_after_wins() {
        let p = RetryPolicy {
            initial_backoff: Duration::from_secs(2),
            jitter: 0.5,
            ..RetryPolicy::default()
        };
        let e = ProviderError::Unavailable {
            source: None,
            provider: "x".into(),
            status: Some(503),
            message: String::new(),
        };
        for _ in 0..100 {
            let d = p.delay(1, &e);
            assert!(
                d <= Duration::from_secs(2) && d >= Duration::from_secs(1),
                "{d:?}"
            );
        }
        let rl = ProviderError::RateLimited {
            provider: "x".into(),
            retry_after: Some(Duration::from_secs(9)),
            message: String::new(),
        };
        assert_eq!(p.delay(1, &rl), Duration::from_secs(9));
    }
}
