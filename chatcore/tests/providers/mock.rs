//! The offline mock provider: behaviours by model name, embeddings,
//! conformance.

use std::sync::Arc;
use std::time::Duration;

use chatcore::provider::mock::{DELTAS_BEFORE_ERROR, MockProvider};
use chatcore::provider::{
    ChatMessage, ChatRequest, EmbedRequest, Provider, ProviderError, ProviderRegistry,
    ProviderSpec, TimeoutKind, Timeouts,
};
use chatcore::testkit::provider::run_provider_conformance;
use tokio::time::Instant;

use crate::support::drain;

fn ask(model: &str, text: &str) -> ChatRequest {
    ChatRequest::new(vec![
        ChatMessage::user("earlier"),
        ChatMessage::assistant("ok"),
        ChatMessage::user(text),
    ])
    .with_model(model)
}

fn mock() -> Arc<dyn Provider> {
    ProviderRegistry::with_builtins()
        .build_unwrapped(&ProviderSpec::new("mock"))
        .unwrap()
}

#[tokio::test]
async fn conformance_mock() {
    run_provider_conformance(mock(), "mock-1").await.assert_ok();
    run_provider_conformance(mock(), "echo").await.assert_ok();
}

#[tokio::test]
async fn echo_replies_with_the_last_user_message() {
    let r = mock().complete(&ask("echo", "say it back")).await.unwrap();
    assert_eq!(r.content, "say it back");
    let (text, end) = drain(mock().stream(&ask("echo", "say it back")).await.unwrap()).await;
    assert_eq!(text, "say it back");
    assert_eq!(end.unwrap().usage.completion_tokens, 3);
}

#[tokio::test]
async fn canned_replies_depend_on_the_input() {
    let a = mock()
        .complete(&ask("anything", "first question"))
        .await
        .unwrap();
    let b = mock()
        .complete(&ask("anything", "second question"))
        .await
        .unwrap();
    let a2 = mock()
        .complete(&ask("anything", "first question"))
        .await
        .unwrap();
    assert_ne!(a.content, b.content);
    assert_eq!(a, a2);
}

#[tokio::test(start_paused = true)]
async fn slow_delays_each_delta_in_tokio_time() {
    let p = MockProvider::new().with_delay(Duration::from_millis(100));
    let start = Instant::now();
    let mut s = p.stream(&ask("slow", "x")).await.unwrap();
    use futures::StreamExt;
    let mut deltas = 0u32;
    while let Some(ev) = s.next().await {
        if let chatcore::provider::ChatEvent::Delta(_) = ev.unwrap() {
            deltas += 1;
            assert_eq!(start.elapsed(), Duration::from_millis(100) * deltas);
        }
    }
    assert!(deltas > 3);
}

#[tokio::test]
async fn fault_models() {
    let e = mock().complete(&ask("error-500", "x")).await.unwrap_err();
    assert!(matches!(
        e,
        ProviderError::Unavailable {
            status: Some(500),
            ..
        }
    ));
    let e = mock()
        .stream(&ask("rate-limited", "x"))
        .await
        .err()
        .unwrap();
    assert_eq!(e.retry_after(), Some(Duration::from_secs(1)));
    let mut s = mock().stream(&ask("stream-then-error", "x")).await.unwrap();
    use futures::StreamExt;
    let mut text = String::new();
    for _ in 0..DELTAS_BEFORE_ERROR {
        match s.next().await.unwrap().unwrap() {
            chatcore::provider::ChatEvent::Delta(t) => text.push_str(&t),
            e => panic!("{e:?}"),
        }
    }
    match s.next().await.unwrap() {
        Err(ProviderError::StreamInterrupted { partial, .. }) => assert_eq!(partial, text),
        e => panic!("{e:?}"),
    }
    assert!(s.next().await.is_none());
}

#[tokio::test(start_paused = true)]
async fn hang_waits_for_the_first_byte_timeout() {
    let p = MockProvider::new().with_timeouts(Timeouts {
        first_byte: Duration::from_secs(42),
        ..Timeouts::default()
    });
    let start = Instant::now();
    let e = p.complete(&ask("hang", "x")).await.unwrap_err();
    assert!(matches!(
        e,
        ProviderError::Timeout {
            kind: TimeoutKind::FirstByte,
            ..
        }
    ));
    assert_eq!(start.elapsed(), Duration::from_secs(42));
}

#[tokio::test]
async fn embeddings_follow_shared_words_and_configured_dimension() {
    let spec = ProviderSpec::new("mock").with_option("embedding_dimension", serde_json::json!(64));
    let p = ProviderRegistry::with_builtins().build(&spec).unwrap();
    let r = p
        .embed(&EmbedRequest::new(vec![
            "refund policy for orders".into(),
            "what is the refund policy".into(),
            "weather in paris".into(),
        ]))
        .await
        .unwrap();
    assert!(r.vectors.iter().all(|v| v.len() == 64));
    let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();
    assert!(dot(&r.vectors[0], &r.vectors[1]) > dot(&r.vectors[0], &r.vectors[2]));
    let bad = ProviderSpec::new("mock").with_option("embedding_dimension", serde_json::json!(0));
    assert!(matches!(
        ProviderRegistry::with_builtins().build(&bad),
        Err(ProviderError::Config { .. })
    ));
}
