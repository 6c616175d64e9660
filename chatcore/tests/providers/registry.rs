//! The registry: built-in kinds, configuration errors, kinds of one's own.

use std::sync::Arc;

use async_trait::async_trait;
use chatcore::provider::{
    Capabilities, ChatMessage, ChatRequest, ChatResponse, FinishReason, Provider, ProviderError,
    ProviderRegistry, ProviderSpec, RetryPolicy, Usage,
};

#[test]
fn lists_the_catalog() {
    assert_eq!(
        ProviderRegistry::with_builtins().kinds(),
        ["anthropic", "google", "mock", "openai", "openai_compatible"]
    );
}

#[test]
fn configuration_errors_are_typed() {
    let r = ProviderRegistry::with_builtins();
    let err = |spec: ProviderSpec| match r.build(&spec) {
        Err(ProviderError::Config { message, .. }) => message,
        Err(e) => panic!("{e:?}"),
        Ok(p) => panic!("built {p:?}"),
    };
    assert!(err(ProviderSpec::new("nope")).contains("unknown provider kind"));
    assert!(err(ProviderSpec::new("openai")).contains("API key"));
    assert!(err(ProviderSpec::new("anthropic")).contains("API key"));
    assert!(err(ProviderSpec::new("google").with_api_key("")).contains("API key"));
    assert!(err(ProviderSpec::new("openai_compatible")).contains("base URL"));
    assert!(
        err(ProviderSpec::new("openai")
            .with_api_key("k")
            .with_base_url("not a url"))
        .contains("base URL")
    );
}

#[test]
fn debug_never_shows_keys() {
    let key = "sk-live-VERYSECRET-0000000000";
    let spec = ProviderSpec::new("openai").with_api_key(key);
    assert!(!format!("{spec:?}").contains("VERYSECRET"));
    let r = ProviderRegistry::with_builtins();
    for kind in ["openai", "anthropic", "google", "openai_compatible"] {
        let spec = ProviderSpec::new(kind)
            .with_api_key(key)
            .with_base_url("http://127.0.0.1:9");
        let p = r.build(&spec).unwrap();
        let s = format!("{p:?}");
        assert!(!s.contains("VERYSECRET"), "{kind}: {s}");
    }
}

#[derive(Debug)]
struct Constant;

#[async_trait]
impl Provider for Constant {
    fn kind(&self) -> &str {
        "constant"
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            chat: true,
            stream: true,
            embeddings: false,
            tools: false,
            images: false,
        }
    }
    async fn complete(&self, _request: &ChatRequest) -> Result<ChatResponse, ProviderError> {
        Ok(ChatResponse {
            tool_calls: Vec::new(),
            content: "constant".into(),
            usage: Usage::reported(1, 1),
            finish_reason: FinishReason::Stop,
            provider: "constant".into(),
            model: "c".into(),
        })
    }
}

#[tokio::test]
async fn applications_register_their_own_kinds() {
    let mut r = ProviderRegistry::with_builtins();
    r.register("constant", |_spec| {
        Ok(Arc::new(Constant) as Arc<dyn Provider>)
    });
    assert!(r.contains("constant"));
    let p = r
        .build(&ProviderSpec::new("constant").with_retry(RetryPolicy::none()))
        .unwrap();
    let req = ChatRequest::new(vec![ChatMessage::user("x")]);
    assert_eq!(p.complete(&req).await.unwrap().content, "constant");
    // The default stream answers with one delta and the final event.
    let (text, end) = crate::support::drain(p.stream(&req).await.unwrap()).await;
    assert_eq!(text, "constant");
    assert_eq!(end.unwrap().usage.total_tokens, 2);
    // The default embed is Unsupported.
    let e = p
        .embed(&chatcore::provider::EmbedRequest::new(vec!["x".into()]))
        .await
        .unwrap_err();
    assert!(matches!(e, ProviderError::Unsupported { .. }));
}
