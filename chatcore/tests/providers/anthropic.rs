//! A fake of Anthropic's Messages API, and the tests of the Anthropic
//! provider against it.

use std::sync::Arc;
use std::time::Duration;

use chatcore::provider::{
    ChatMessage, ChatRequest, EmbedRequest, FinishReason, Provider, ProviderError,
    ProviderRegistry, ProviderSpec, RetryPolicy, TimeoutKind,
};
use chatcore::testkit::provider::{ConformanceConfig, run_provider_conformance_with};
use futures::FutureExt;
use serde_json::{Value, json};

use crate::support::*;

const FIELDS: &[&str] = &[
    "model",
    "max_tokens",
    "messages",
    "system",
    "temperature",
    "stop_sequences",
    "metadata",
    "stream",
    "top_p",
    "top_k",
];

fn error(status: u16, kind: &str, message: &str) -> hyper::Response<Body> {
    json(
        status,
        json!({"type": "error", "error": {"type": kind, "message": message}}),
    )
}

fn invalid(message: &str) -> hyper::Response<Body> {
    error(400, "invalid_request_error", message)
}

fn check(req: &Recorded, body: &Value) -> Result<(), hyper::Response<Body>> {
    if req.header("x-api-key") != Some(KEY) {
        return Err(error(401, "authentication_error", "invalid x-api-key"));
    }
    if req.header("anthropic-version") != Some("2023-06-01") {
        return Err(invalid("anthropic-version: header is required"));
    }
    if req.header("authorization").is_some() {
        return Err(invalid("Authorization header is not used by this API"));
    }
    let Some(obj) = body.as_object() else {
        return Err(invalid("Request body must be a JSON object"));
    };
    if let Some(k) = obj.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(invalid(&format!("{k}: Extra inputs are not permitted")));
    }
    if !obj.get("model").is_some_and(Value::is_string) {
        return Err(invalid("model: Field required"));
    }
    if !obj.get("max_tokens").is_some_and(Value::is_u64) {
        return Err(invalid("max_tokens: Field required"));
    }
    let Some(msgs) = obj
        .get("messages")
        .and_then(Value::as_array)
        .filter(|m| !m.is_empty())
    else {
        return Err(invalid("messages: Field required"));
    };
    for (i, m) in msgs.iter().enumerate() {
        match m["role"].as_str() {
            Some("user" | "assistant") => {}
            Some(r) => {
                return Err(invalid(&format!(
                    "messages.{i}.role: Input should be 'user' or 'assistant' (got {r:?}); use the top-level `system` parameter for system prompts"
                )));
            }
            None => return Err(invalid(&format!("messages.{i}.role: Field required"))),
        }
        if !m["content"].is_string() && !m["content"].is_array() {
            return Err(invalid(&format!("messages.{i}.content: Field required")));
        }
    }
    if let Some(s) = obj.get("system")
        && !s.is_string()
        && !s.is_array()
    {
        return Err(invalid("system: Input should be a valid string"));
    }
    if let Some(t) = obj.get("temperature").and_then(Value::as_f64)
        && !(0.0..=1.0).contains(&t)
    {
        return Err(invalid("temperature: range: 0..1"));
    }
    Ok(())
}

fn sse_event(kind: &str, data: Value) -> String {
    format!("event: {kind}\ndata: {data}\n\n")
}

pub fn handler() -> Handler {
    Arc::new(|req: Recorded, state: Arc<ServerState>| {
        async move {
            if req.method != "POST" || req.path != "/v1/messages" {
                return error(404, "not_found_error", "Not found");
            }
            let body = req.json();
            if let Err(r) = check(&req, &body) {
                return r;
            }
            messages(body, &state).await
        }
        .boxed()
    })
}

async fn messages(body: Value, state: &ServerState) -> hyper::Response<Body> {
    let model = body["model"].as_str().unwrap_or_default().to_owned();
    let sc = scenario(&model);
    match sc {
        Scenario::Unauthorized => return error(401, "authentication_error", "invalid x-api-key"),
        Scenario::RateLimited => {
            return with_header(
                error(
                    429,
                    "rate_limit_error",
                    "Number of request tokens has exceeded your per-minute rate limit",
                ),
                "retry-after",
                "7",
            );
        }
        Scenario::ServerError => return error(500, "api_error", "Internal server error"),
        Scenario::FlakyTwice if state.attempt(&model) <= 2 => {
            return error(529, "overloaded_error", "Overloaded");
        }
        Scenario::ContextTooLong => {
            return invalid("prompt is too long: 210000 tokens > 200000 maximum");
        }
        Scenario::Hang => return hang().await,
        _ => {}
    }
    let msgs = body["messages"].as_array().cloned().unwrap_or_default();
    let last = msgs
        .iter()
        .rev()
        .find(|m| m["role"] == "user")
        .and_then(|m| m["content"].as_str())
        .unwrap_or_default();
    let mut reply = reply_for(last);
    let mut stop_reason = "end_turn";
    let max = body["max_tokens"].as_u64().unwrap_or(0);
    if words(&reply) as u64 > max {
        reply = reply
            .split_inclusive(' ')
            .take(max as usize)
            .collect::<String>()
            .trim_end()
            .to_owned();
        stop_reason = "max_tokens";
    }
    let input: u32 = msgs
        .iter()
        .map(|m| words(m["content"].as_str().unwrap_or_default()) + 1)
        .sum::<u32>()
        + words(body["system"].as_str().unwrap_or_default());
    let reported = format!("{model}-20250929");
    if body["stream"] != Value::Bool(true) {
        return json(
            200,
            json!({
                "id": "msg_fake", "type": "message", "role": "assistant", "model": reported,
                "content": [{"type": "text", "text": reply}],
                "stop_reason": stop_reason, "stop_sequence": null,
                "usage": {"input_tokens": input, "output_tokens": words(&reply)}
            }),
        );
    }
    let parts = pieces(&reply);
    let half = parts.len() / 2;
    let mut head = vec![
        sse_event(
            "message_start",
            json!({"type": "message_start", "message": {"id": "msg_fake", "type": "message", "role": "assistant", "content": [], "model": reported, "stop_reason": null, "stop_sequence": null, "usage": {"input_tokens": input, "output_tokens": 1}}}),
        ),
        sse_event(
            "content_block_start",
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        ),
        sse_event("ping", json!({"type": "ping"})),
    ];
    let deltas: Vec<String> = parts
        .iter()
        .map(|p| {
            sse_event(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": p}}),
            )
        })
        .collect();
    let overloaded = sse_event(
        "error",
        json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
    );
    let end = match sc {
        Scenario::ErrorEarly => {
            head.push(overloaded);
            End::Clean
        }
        Scenario::ErrorMid => {
            head.extend(deltas[..half].iter().cloned());
            head.push(overloaded);
            End::Clean
        }
        Scenario::Cut | Scenario::Abort | Scenario::HangMid => {
            head.extend(deltas[..half].iter().cloned());
            match sc {
                Scenario::Cut => End::Clean,
                Scenario::Abort => End::Abort,
                _ => End::Hang,
            }
        }
        _ => {
            head.extend(deltas);
            head.push(sse_event(
                "content_block_stop",
                json!({"type": "content_block_stop", "index": 0}),
            ));
            head.push(sse_event(
                "message_delta",
                json!({"type": "message_delta", "delta": {"stop_reason": stop_reason, "stop_sequence": null}, "usage": {"output_tokens": words(&reply)}}),
            ));
            head.push(sse_event("message_stop", json!({"type": "message_stop"})));
            End::Clean
        }
    };
    sse(head, Duration::from_millis(1), end)
}

pub async fn server() -> TestServer {
    TestServer::start(handler()).await
}

pub fn provider(server: &TestServer) -> Arc<dyn Provider> {
    let spec = ProviderSpec::new("anthropic")
        .with_api_key(KEY)
        .with_base_url(server.url())
        .with_egress(local_egress())
        .with_default_model("claude-test")
        .with_timeouts(test_timeouts())
        .with_retry(RetryPolicy::none());
    ProviderRegistry::with_builtins().build(&spec).unwrap()
}

fn ask(model: &str, text: &str) -> ChatRequest {
    ChatRequest::new(vec![
        ChatMessage::system("be nice"),
        ChatMessage::user("first"),
        ChatMessage::assistant("ok"),
        ChatMessage::user(text),
    ])
    .with_model(model)
}

#[tokio::test]
async fn completes_with_system_on_top_and_default_max_tokens() {
    let server = server().await;
    let p = provider(&server);
    let r = p
        .complete(&ask("claude-test", "hi you").with_temperature(0.2))
        .await
        .unwrap();
    assert_eq!(r.content, "Echo from the fake: hi you");
    assert_eq!(r.model, "claude-test-20250929");
    assert_eq!(r.finish_reason, FinishReason::Stop);
    assert_eq!(
        (
            r.usage.prompt_tokens,
            r.usage.completion_tokens,
            r.usage.total_tokens
        ),
        (9, 6, 15)
    );
    let body = server.requests()[0].json();
    assert_eq!(body["system"], "be nice");
    assert_eq!(body["max_tokens"], 4096);
    assert_eq!(body["messages"].as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn streams_with_cumulative_output_tokens() {
    let server = server().await;
    let p = provider(&server);
    let (text, end) = drain(p.stream(&ask("claude-test", "a b c")).await.unwrap()).await;
    let end = end.unwrap();
    assert_eq!(text, "Echo from the fake: a b c");
    assert_eq!(
        (end.usage.prompt_tokens, end.usage.completion_tokens),
        (10, 7)
    );
    assert_eq!(end.finish_reason, FinishReason::Stop);
    let r = p
        .complete(&ask("claude-test", "a b c d e").with_max_tokens(2))
        .await
        .unwrap();
    assert_eq!(r.finish_reason, FinishReason::Length);
}

#[tokio::test]
async fn fake_rejects_what_anthropic_rejects() {
    // The fake is strict: prove it, so that the provider tests mean something.
    let server = server().await;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::new();
    let post = |body: Value| {
        client
            .post(format!("{}/v1/messages", server.url()))
            .header("x-api-key", KEY)
            .header("anthropic-version", "2023-06-01")
            .json(&body)
            .send()
    };
    let r = post(json!({"model": "m", "messages": [{"role": "user", "content": "x"}]}))
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("max_tokens"));
    let r = post(json!({"model": "m", "max_tokens": 5, "messages": [{"role": "system", "content": "x"}, {"role": "user", "content": "x"}]}))
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

#[tokio::test]
async fn has_no_embeddings() {
    let server = server().await;
    let p = provider(&server);
    assert!(!p.capabilities().embeddings);
    let e = p
        .embed(&EmbedRequest::new(vec!["x".into()]))
        .await
        .unwrap_err();
    assert!(matches!(e, ProviderError::Unsupported { .. }), "{e:?}");
    assert!(server.requests().is_empty());
}

#[tokio::test]
async fn maps_each_failure_status() {
    let server = server().await;
    let p = provider(&server);
    let e = p.complete(&ask("unauthorized", "x")).await.unwrap_err();
    assert_clean_error(&e);
    assert!(matches!(e, ProviderError::Authentication { .. }), "{e:?}");
    assert_no_key("401", &e);
    let e = p.complete(&ask("rate-limited", "x")).await.unwrap_err();
    assert_clean_error(&e);
    assert_eq!(e.retry_after(), Some(Duration::from_secs(7)));
    let e = p.complete(&ask("server-error", "x")).await.unwrap_err();
    assert_clean_error(&e);
    assert!(
        matches!(
            e,
            ProviderError::Unavailable {
                status: Some(500),
                ..
            }
        ),
        "{e:?}"
    );
    let e = p.complete(&ask("flaky-twice", "x")).await.unwrap_err();
    assert_clean_error(&e);
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
    let e = p.complete(&ask("context-too-long", "x")).await.unwrap_err();
    assert_clean_error(&e);
    assert!(matches!(e, ProviderError::ContextTooLong { .. }), "{e:?}");
    // A wrong key.
    let spec = ProviderSpec::new("anthropic")
        .with_api_key("sk-ant-wrong-SECRETWRONG-1")
        .with_base_url(server.url())
        .with_egress(local_egress())
        .with_retry(RetryPolicy::none());
    let p = ProviderRegistry::with_builtins().build(&spec).unwrap();
    let e = p.complete(&ask("claude-test", "x")).await.unwrap_err();
    assert_clean_error(&e);
    assert!(matches!(e, ProviderError::Authentication { .. }));
    assert!(!format!("{e:?}{e}{p:?}").contains("SECRETWRONG"));
}

#[tokio::test]
async fn error_event_after_200() {
    let server = server().await;
    let p = provider(&server);
    let (text, end) = drain(p.stream(&ask("error-mid", "a b c d")).await.unwrap()).await;
    match end {
        Err(ProviderError::StreamInterrupted {
            partial,
            cause: Some(c),
            ..
        }) => {
            assert_eq!(partial, text);
            assert!(!text.is_empty());
            assert!(
                matches!(
                    *c,
                    ProviderError::Unavailable {
                        status: Some(529),
                        ..
                    }
                ),
                "{c:?}"
            );
        }
        e => panic!("{e:?}"),
    }
    let (text, end) = drain(p.stream(&ask("error-early", "a")).await.unwrap()).await;
    assert!(text.is_empty());
    let e = end.unwrap_err();
    assert_clean_error(&e);
    assert!(
        matches!(
            e,
            ProviderError::Unavailable {
                status: Some(529),
                ..
            }
        ) && e.is_retryable(),
        "{e:?}"
    );
}

#[tokio::test]
async fn cut_and_reset_streams_are_interrupted() {
    let server = server().await;
    let p = provider(&server);
    for model in ["cut", "abort"] {
        let (text, end) = drain(p.stream(&ask(model, "a b c d")).await.unwrap()).await;
        match end {
            Err(ProviderError::StreamInterrupted { partial, .. }) => {
                assert_eq!(partial, text);
                assert!(!partial.is_empty());
            }
            e => panic!("{model}: {e:?}"),
        }
    }
}

#[tokio::test(start_paused = true)]
async fn timeouts() {
    let _ticker = ticker();
    let server = server().await;
    let p = provider(&server);
    let e = p.complete(&ask("hang", "x")).await.unwrap_err();
    assert_clean_error(&e);
    assert!(
        matches!(
            e,
            ProviderError::Timeout {
                kind: TimeoutKind::FirstByte,
                ..
            }
        ),
        "{e:?}"
    );
    let (_, end) = drain(p.stream(&ask("hang-mid", "a b c d")).await.unwrap()).await;
    assert!(end.unwrap_err().is_timeout());
}

#[tokio::test]
async fn conformance_anthropic() {
    let server = server().await;
    run_provider_conformance_with(
        provider(&server),
        ConformanceConfig {
            model: "claude-test".into(),
            secret: Some(KEY.into()),
            ..Default::default()
        },
    )
    .await
    .assert_ok();
    server.assert_no_key_in_urls();
}
