//! The conformance suite itself must catch broken providers.

use std::sync::Arc;

use async_trait::async_trait;
use chatcore::provider::{
    Capabilities, ChatEvent, ChatRequest, ChatResponse, ChatStream, EmbedRequest, EmbedResponse,
    FinishReason, Provider, ProviderError, StreamEnd, Usage,
};
use chatcore::testkit::provider::{ConformanceConfig, run_provider_conformance_with};
use futures::StreamExt;

/// Wrong in every way the suite checks.
struct Broken {
    key: String,
}

impl std::fmt::Debug for Broken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Leaks its key.
        write!(f, "Broken {{ key: {} }}", self.key)
    }
}

#[async_trait]
impl Provider for Broken {
    fn kind(&self) -> &str {
        "broken"
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            chat: true,
            stream: true,
            embeddings: true,
            tools: false,
            images: false,
        }
    }
    async fn complete(&self, _r: &ChatRequest) -> Result<ChatResponse, ProviderError> {
        // Accepts requests without messages; total != prompt + completion.
        Ok(ChatResponse {
            tool_calls: Vec::new(),
            content: "complete text".into(),
            usage: Usage {
                prompt_tokens: 3,
                completion_tokens: 2,
                total_tokens: 9,
                estimated: false,
                cached_tokens: 0,
            },
            finish_reason: FinishReason::Stop,
            provider: "broken".into(),
            model: "m".into(),
        })
    }
    async fn stream(&self, _r: &ChatRequest) -> Result<ChatStream, ProviderError> {
        // Different text, and an event after the final one.
        let end = StreamEnd {
            usage: Usage::reported(3, 2),
            finish_reason: FinishReason::Stop,
            provider: "broken".into(),
            model: "m".into(),
        };
        Ok(futures::stream::iter(vec![
            Ok(ChatEvent::Delta("other text".into())),
            Ok(ChatEvent::Done(end)),
            Ok(ChatEvent::Delta("late".into())),
        ])
        .boxed())
    }
    async fn embed(&self, r: &EmbedRequest) -> Result<EmbedResponse, ProviderError> {
        // One vector too few.
        Ok(EmbedResponse {
            vectors: vec![vec![1.0]; r.inputs.len() - 1],
            model: "e".into(),
            provider: "broken".into(),
            usage: Usage::default(),
        })
    }
}

#[tokio::test]
async fn catches_a_broken_provider() {
    let report = run_provider_conformance_with(
        Arc::new(Broken {
            key: "sk-broken-KEY".into(),
        }),
        ConformanceConfig {
            model: "m".into(),
            secret: Some("sk-broken-KEY".into()),
            ..Default::default()
        },
    )
    .await;
    assert!(!report.is_ok());
    let failed: Vec<&str> = report.failures().iter().map(|c| c.name).collect();
    for expected in [
        "complete: text, provider, model, usage",
        "stream: deltas, then exactly one final event, same text as complete",
        "complete: a request without messages is InvalidRequest",
        "embed: one vector per input, same dimension (or Unsupported)",
        "redaction: no key in Debug or errors",
    ] {
        assert!(
            failed.contains(&expected),
            "{expected} not caught:\n{report}"
        );
    }
    assert!(report.to_string().contains("FAIL"));
}
