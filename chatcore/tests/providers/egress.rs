//! The egress policy against real connections: an internal target is
//! refused before any byte reaches it (IP literals, short and decimal IPv4
//! forms, names that resolve to loopback), for chat, stream and embeddings;
//! redirects are not followed; refusals are not retried; the allow list
//! opens exactly what it names; a base URL's query string stays a query.

use std::sync::Arc;
use std::time::Duration;

use chatcore::provider::{
    ChatMessage, ChatRequest, EgressPolicy, EmbedRequest, Provider, ProviderError,
    ProviderRegistry, ProviderSpec, RetryPolicy,
};
use futures::FutureExt;

use crate::support::*;

fn ask() -> ChatRequest {
    ChatRequest::new(vec![ChatMessage::user("hello")]).with_model("gpt-test")
}

fn build(kind: &str, base: &str, egress: EgressPolicy) -> Arc<dyn Provider> {
    let spec = ProviderSpec::new(kind)
        .with_api_key(KEY)
        .with_base_url(base)
        .with_egress(egress)
        .with_default_model("gpt-test")
        .with_timeouts(test_timeouts())
        .with_retry(RetryPolicy {
            initial_backoff: Duration::from_millis(1),
            ..RetryPolicy::default()
        });
    ProviderRegistry::with_builtins().build(&spec).unwrap()
}

fn refused(e: &ProviderError) -> bool {
    matches!(e, ProviderError::EgressRefused { .. })
}

#[tokio::test]
async fn internal_targets_are_refused_before_connecting() {
    let server = crate::openai::server(true).await;
    let port = server.addr.port();
    for base in [
        format!("http://127.0.0.1:{port}/v1"),
        format!("http://127.1:{port}/v1"),
        format!("http://2130706433:{port}/v1"),
        format!("http://0x7f000001:{port}/v1"),
        format!("http://localhost:{port}/v1"),
        format!("http://[::ffff:127.0.0.1]:{port}/v1"),
        format!("http://0.0.0.0:{port}/v1"),
        format!("http://[::1]:{port}/v1"),
        "http://169.254.169.254/latest".to_string(),
    ] {
        for kind in ["openai", "openai_compatible", "anthropic", "google"] {
            let p = build(kind, &base, EgressPolicy::default());
            let e = p.complete(&ask()).await.unwrap_err();
            assert!(refused(&e), "{kind} {base}: {e:?}");
            let shown = e.public_message();
            assert!(shown.contains("egress policy"), "{shown}");
            assert!(
                !shown.contains("127.") && !shown.contains(&port.to_string()),
                "no address in {shown}"
            );
            assert!(!e.is_retryable(), "a refusal is never retried");
            match p.stream(&ask()).await {
                Err(e) => assert!(refused(&e), "{kind} stream {base}: {e:?}"),
                Ok(_) => panic!("{kind} stream {base}: connected"),
            }
            if kind != "anthropic" {
                let e = p
                    .embed(&EmbedRequest::new(vec!["x".into()]))
                    .await
                    .unwrap_err();
                assert!(refused(&e), "{kind} embed {base}: {e:?}");
            }
        }
    }
    assert_eq!(server.requests().len(), 0, "nothing reached the target");
    assert_eq!(server.connections(), 0, "not even a connection");
}

#[tokio::test]
async fn the_allow_list_opens_exactly_what_it_names() {
    let server = crate::openai::server(true).await;
    let port = server.addr.port();
    let base = format!("http://127.0.0.1:{port}/v1");
    let exact = EgressPolicy::parse(&format!("127.0.0.1:{port}")).unwrap();
    let r = build("openai", &base, exact.clone())
        .complete(&ask())
        .await
        .unwrap();
    assert!(!r.content.is_empty());
    // The same rule does not open another port.
    let other = EgressPolicy::parse(&format!("127.0.0.1:{}", port.wrapping_add(1))).unwrap();
    let e = build("openai", &base, other)
        .complete(&ask())
        .await
        .unwrap_err();
    assert!(refused(&e), "{e:?}");
    // A host rule lets that name through (the resolver checks it).
    let by_name = EgressPolicy::parse(&format!("localhost:{port}")).unwrap();
    let r = build("openai", &format!("http://localhost:{port}/v1"), by_name)
        .complete(&ask())
        .await;
    // localhost may resolve to ::1 first where the fake is not listening;
    // what matters is that the policy did not refuse it.
    if let Err(e) = &r {
        assert!(!refused(e), "{e:?}");
    }
    assert!(!server.requests().is_empty());
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let target = crate::openai::server(true).await;
    let location = format!("{}/v1/chat/completions", target.url());
    let redirector = TestServer::start(Arc::new(move |_rec, _st| {
        let location = location.clone();
        async move { with_header(json(307, serde_json::json!({})), "location", &location) }.boxed()
    }))
    .await;
    // Both on loopback and both allowed: only the redirect is in the way.
    let p = build(
        "openai",
        &format!("{}/v1", redirector.url()),
        local_egress(),
    );
    let e = p.complete(&ask()).await.unwrap_err();
    assert_eq!(e.status(), Some(307), "{e:?}");
    assert_eq!(target.requests().len(), 0, "the redirect was not followed");
    assert_eq!(redirector.requests().len(), 1, "and not retried");
}

#[tokio::test]
async fn a_query_string_in_the_base_url_stays_the_query() {
    let server = crate::openai::server(true).await;
    let p = build(
        "openai",
        &format!("{}/v1?deployment=prod&sig=abc#frag", server.url()),
        local_egress(),
    );
    p.complete(&ask()).await.unwrap();
    let rec = &server.requests()[0];
    assert_eq!(rec.path, "/v1/chat/completions");
    assert_eq!(rec.query.as_deref(), Some("deployment=prod&sig=abc"));
}

#[test]
fn userinfo_in_the_base_url_is_refused() {
    let spec = ProviderSpec::new("openai")
        .with_api_key(KEY)
        .with_base_url("https://user:pass@api.example.com/v1");
    let e = ProviderRegistry::with_builtins().build(&spec).unwrap_err();
    assert!(e.to_string().contains("user name or password"), "{e}");
    assert!(!e.to_string().contains("pass@"), "{e}");
}
