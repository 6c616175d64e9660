//! Retries and fallback, against the wire-format fakes, with paused time.

use std::sync::Arc;
use std::time::Duration;

use chatcore::provider::{
    ChatMessage, ChatRequest, FallbackEntry, FallbackProvider, Provider, ProviderError,
    ProviderRegistry, RetryPolicy, RetryingProvider, TimeoutKind,
};
use tokio::time::Instant;

use crate::support::*;
use crate::{anthropic, gemini, openai};

fn ask(model: &str) -> ChatRequest {
    ChatRequest::new(vec![ChatMessage::user("a b c d")]).with_model(model)
}

fn policy(max_attempts: u32) -> RetryPolicy {
    RetryPolicy {
        max_attempts,
        initial_backoff: Duration::from_secs(1),
        max_backoff: Duration::from_secs(60),
        multiplier: 2.0,
        jitter: 0.0,
        max_elapsed: Duration::from_secs(120),
    }
}

fn retrying(p: Arc<dyn Provider>, policy: RetryPolicy) -> Arc<dyn Provider> {
    Arc::new(RetryingProvider::new(p, policy))
}

#[tokio::test(start_paused = true)]
async fn retries_5xx_with_exponential_backoff_then_succeeds() {
    let _ticker = ticker();
    let server = openai::server(true).await;
    let p = retrying(openai::provider(&server), policy(3));
    let start = Instant::now();
    let r = p.complete(&ask("flaky-twice")).await.unwrap();
    assert_eq!(r.content, "Echo from the fake: a b c d");
    assert_eq!(server.requests().len(), 3);
    // 1 s, then 2 s.
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_secs(3) && waited < Duration::from_secs(4),
        "{waited:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn gives_up_after_max_attempts() {
    let _ticker = ticker();
    let server = gemini::server().await;
    let p = retrying(gemini::provider(&server), policy(2));
    let e = p.complete(&ask("flaky-twice")).await.unwrap_err();
    assert!(
        matches!(
            e,
            ProviderError::Unavailable {
                status: Some(503),
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(server.requests().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn honours_retry_after() {
    let _ticker = ticker();
    let server = anthropic::server().await;
    let p = retrying(anthropic::provider(&server), policy(2));
    let start = Instant::now();
    let e = p.complete(&ask("rate-limited")).await.unwrap_err();
    assert!(matches!(e, ProviderError::RateLimited { .. }));
    assert_eq!(server.requests().len(), 2);
    // The server asked for 7 s; our own backoff was 1 s.
    assert!(
        start.elapsed() >= Duration::from_secs(7),
        "{:?}",
        start.elapsed()
    );
}

#[tokio::test(start_paused = true)]
async fn retry_after_beyond_the_budget_returns_at_once() {
    let _ticker = ticker();
    let server = openai::server(true).await;
    let p = retrying(
        openai::provider(&server),
        RetryPolicy {
            max_elapsed: Duration::from_secs(5),
            ..policy(5)
        },
    );
    let start = Instant::now();
    let e = p.complete(&ask("rate-limited")).await.unwrap_err();
    assert_eq!(e.retry_after(), Some(Duration::from_secs(7)));
    assert_eq!(server.requests().len(), 1);
    assert!(start.elapsed() < Duration::from_secs(1));
}

#[tokio::test(start_paused = true)]
async fn does_not_retry_what_cannot_succeed() {
    let _ticker = ticker();
    let server = openai::server(true).await;
    let p = retrying(openai::provider(&server), policy(5));
    for model in ["unauthorized", "context-too-long"] {
        p.complete(&ask(model)).await.unwrap_err();
    }
    assert_eq!(server.requests().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn retries_first_byte_timeouts() {
    let _ticker = ticker();
    let server = openai::server(true).await;
    let p = retrying(openai::provider(&server), policy(2));
    let start = Instant::now();
    let e = p.complete(&ask("hang")).await.unwrap_err();
    assert!(matches!(
        e,
        ProviderError::Timeout {
            kind: TimeoutKind::FirstByte,
            ..
        }
    ));
    assert_eq!(server.requests().len(), 2);
    assert!(
        start.elapsed() >= Duration::from_secs(41),
        "{:?}",
        start.elapsed()
    );
}

#[tokio::test(start_paused = true)]
async fn streams_are_retried_only_before_the_first_token() {
    let _ticker = ticker();
    let server = anthropic::server().await;
    // Timeouts far beyond what the ticker can reach while real I/O waits on
    // a loaded machine (paused time moves 1 ms per tick): this test is about
    // retries, and a 10 s idle timeout was reached under load.
    let patient = chatcore::provider::Timeouts {
        connect: Duration::from_secs(3600),
        first_byte: Duration::from_secs(3600),
        idle: Duration::from_secs(3600),
    };
    let p = retrying(
        anthropic::provider_with_timeouts(&server, patient),
        policy(3),
    );
    // Overloaded event before any text: retried, three attempts in all.
    let e = p.stream(&ask("error-early")).await.err().unwrap();
    assert!(
        matches!(
            e,
            ProviderError::Unavailable {
                status: Some(529),
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(server.requests().len(), 3);
    // Overloaded after text: the caller gets the error, no retry.
    let (text, end) = drain(p.stream(&ask("error-mid")).await.unwrap()).await;
    assert!(!text.is_empty());
    assert!(matches!(end, Err(ProviderError::StreamInterrupted { .. })));
    assert_eq!(server.requests().len(), 4);
    // 529 on the first two attempts, then a full stream.
    let (text, end) = drain(p.stream(&ask("flaky-twice")).await.unwrap()).await;
    end.unwrap();
    assert_eq!(text, "Echo from the fake: a b c d");
    assert_eq!(server.requests().len(), 7);
}

#[tokio::test(start_paused = true)]
async fn registry_wraps_providers_with_their_retry_policy() {
    let _ticker = ticker();
    let server = openai::server(true).await;
    let spec = openai::spec(&server).with_retry(policy(3));
    let p = ProviderRegistry::with_builtins().build(&spec).unwrap();
    assert!(format!("{p:?}").starts_with("RetryingProvider"));
    p.complete(&ask("flaky-twice")).await.unwrap();
    assert_eq!(server.requests().len(), 3);
}

#[tokio::test]
async fn falls_back_to_the_next_provider_and_says_who_answered() {
    let primary = openai::server(true).await;
    let secondary = anthropic::server().await;
    let chain = FallbackProvider::new(vec![
        FallbackEntry::new(openai::provider(&primary), Some("server-error".into())),
        FallbackEntry::new(anthropic::provider(&secondary), Some("claude-test".into())),
    ]);
    let r = chain
        .complete(&ask("ignored-for-entries-with-a-model"))
        .await
        .unwrap();
    assert_eq!(r.provider, "anthropic");
    assert_eq!(r.model, "claude-test-20250929");
    assert_eq!(primary.requests().len(), 1);

    let (text, end) = drain(chain.stream(&ask("x")).await.unwrap()).await;
    let end = end.unwrap();
    assert_eq!(text, "Echo from the fake: a b c d");
    assert_eq!(
        (end.provider.as_str(), end.model.as_str()),
        ("anthropic", "claude-test-20250929")
    );
}

#[tokio::test]
async fn fallback_uses_the_request_model_for_the_first_entry_and_defaults_after() {
    let primary = openai::server(true).await;
    let secondary = gemini::server().await;
    let chain = FallbackProvider::new(vec![
        FallbackEntry::new(openai::provider(&primary), None),
        FallbackEntry::new(gemini::provider(&secondary), None),
    ]);
    let r = chain.complete(&ask("server-error")).await.unwrap();
    assert_eq!(primary.requests()[0].json()["model"], "server-error");
    assert_eq!(
        (r.provider.as_str(), r.model.as_str()),
        ("google", "gemini-test-001")
    );
}

#[tokio::test]
async fn fallback_streams_switch_before_the_first_token_only() {
    let primary = openai::server(true).await;
    let secondary = gemini::server().await;
    let chain = |model: &str| {
        FallbackProvider::new(vec![
            FallbackEntry::new(openai::provider(&primary), Some(model.to_owned())),
            FallbackEntry::new(gemini::provider(&secondary), Some("gemini-test".into())),
        ])
    };
    // Error chunk before any text: the secondary answers.
    let (_, end) = drain(chain("error-early").stream(&ask("x")).await.unwrap()).await;
    assert_eq!(end.unwrap().provider, "google");
    assert_eq!(secondary.requests().len(), 1);
    // Failure after text: the caller sees it; nothing is replayed elsewhere.
    let (text, end) = drain(chain("error-mid").stream(&ask("x")).await.unwrap()).await;
    assert!(!text.is_empty());
    assert!(matches!(end, Err(ProviderError::StreamInterrupted { .. })));
    assert_eq!(secondary.requests().len(), 1);
}

#[tokio::test]
async fn fallback_returns_the_last_error_when_all_fail() {
    let a = openai::server(true).await;
    let b = anthropic::server().await;
    let chain = FallbackProvider::new(vec![
        FallbackEntry::new(openai::provider(&a), Some("server-error".into())),
        FallbackEntry::new(anthropic::provider(&b), Some("context-too-long".into())),
    ]);
    let e = chain.complete(&ask("x")).await.unwrap_err();
    assert!(
        matches!(e, ProviderError::ContextTooLong { ref provider, .. } if provider == "anthropic"),
        "{e:?}"
    );
}
