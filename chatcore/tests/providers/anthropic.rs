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
    "tools",
    "tool_choice",
];

/// The text of a turn's content: a string, or its text blocks.
fn content_text(m: &Value) -> String {
    match &m["content"] {
        Value::String(s) => s.clone(),
        Value::Array(b) => b
            .iter()
            .filter(|b| b["type"] == "text")
            .filter_map(|b| b["text"].as_str())
            .collect(),
        _ => String::new(),
    }
}

fn block_ok(b: &Value, role: &str, open_calls: &[String]) -> bool {
    match (b["type"].as_str(), role) {
        (Some("text"), _) => b["text"].is_string(),
        (Some("image"), "user") => match b["source"]["type"].as_str() {
            Some("base64") => {
                b["source"]["media_type"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("image/"))
                    && b["source"]["data"].is_string()
            }
            Some("url") => b["source"]["url"].is_string(),
            _ => false,
        },
        (Some("tool_use"), "assistant") => {
            b["id"].is_string() && b["name"].is_string() && b["input"].is_object()
        }
        (Some("tool_result"), "user") => b["tool_use_id"]
            .as_str()
            .is_some_and(|id| open_calls.iter().any(|c| c == id)),
        _ => false,
    }
}

/// Blocks, tool calls answered in the very next turn, tools well formed.
fn check_tools(body: &Value) -> Result<(), String> {
    let msgs = body["messages"].as_array().cloned().unwrap_or_default();
    let mut open: Vec<String> = Vec::new();
    for (i, m) in msgs.iter().enumerate() {
        let role = m["role"].as_str().unwrap_or_default();
        if let Some(blocks) = m["content"].as_array() {
            for b in blocks {
                if !block_ok(b, role, &open) {
                    return Err(format!("messages.{i}.content: invalid block {b}"));
                }
            }
            let answered: Vec<&str> = blocks
                .iter()
                .filter_map(|b| b["tool_use_id"].as_str())
                .collect();
            if let Some(missing) = open.iter().find(|c| !answered.contains(&c.as_str())) {
                return Err(format!(
                    "messages.{i}: tool_use ids were found without tool_result blocks immediately after: {missing}"
                ));
            }
            open = blocks
                .iter()
                .filter(|b| b["type"] == "tool_use")
                .filter_map(|b| b["id"].as_str())
                .map(str::to_owned)
                .collect();
        } else if !open.is_empty() {
            return Err(format!(
                "messages.{i}: tool_use ids were found without tool_result blocks immediately after"
            ));
        }
    }
    let names: Vec<&str> = match body.get("tools") {
        None => Vec::new(),
        Some(t) => {
            let Some(t) = t.as_array() else {
                return Err("tools: Input should be a valid list".into());
            };
            for (i, t) in t.iter().enumerate() {
                if !t["name"].is_string() || !t["input_schema"].is_object() {
                    return Err(format!("tools.{i}: name and input_schema are required"));
                }
            }
            t.iter().filter_map(|t| t["name"].as_str()).collect()
        }
    };
    if let Some(c) = body.get("tool_choice") {
        match c["type"].as_str() {
            Some("auto" | "any" | "none") => {}
            Some("tool") if c["name"].as_str().is_some_and(|n| names.contains(&n)) => {}
            _ => return Err(format!("tool_choice: invalid {c}")),
        }
        if names.is_empty() {
            return Err("tool_choice may only be specified while providing tools".into());
        }
    }
    Ok(())
}

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
    check_tools(body).map_err(|m| invalid(&m))?;
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
        .map(content_text)
        .unwrap_or_default();
    if let Some((calls, preamble)) = calls_for(&body, &last) {
        return tool_reply(&body, calls, preamble);
    }
    let mut reply = reply_for(&last);
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
        .map(|m| words(&content_text(m)) + 1)
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
    provider_with_timeouts(server, test_timeouts())
}

pub fn provider_with_timeouts(
    server: &TestServer,
    timeouts: chatcore::provider::Timeouts,
) -> Arc<dyn Provider> {
    let spec = ProviderSpec::new("anthropic")
        .with_api_key(KEY)
        .with_base_url(server.url())
        .with_egress(local_egress())
        .with_default_model("claude-test")
        .with_timeouts(timeouts)
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
            structured_output: true,
            ..Default::default()
        },
    )
    .await
    .assert_ok();
    server.assert_no_key_in_urls();
}

/// The calls to answer with: tools given, not `none`, and the last turn
/// holds no results.
fn calls_for(body: &Value, last_user: &str) -> Option<(Vec<FakeCall>, bool)> {
    let tools: Vec<(String, Value)> = body["tools"]
        .as_array()?
        .iter()
        .map(|t| {
            (
                t["name"].as_str().unwrap_or_default().to_owned(),
                t["input_schema"].clone(),
            )
        })
        .collect();
    let choice = &body["tool_choice"];
    let results_last = body["messages"]
        .as_array()
        .and_then(|m| m.last())
        .and_then(|m| m["content"].as_array())
        .is_some_and(|b| b.iter().any(|b| b["type"] == "tool_result"));
    if tools.is_empty() || choice["type"] == "none" || results_last {
        return None;
    }
    let forced = (choice["type"] == "tool")
        .then(|| choice["name"].as_str())
        .flatten();
    let parallel = choice["disable_parallel_tool_use"] != Value::Bool(true);
    let preamble = forced.is_none() && choice["type"] != "any";
    Some((
        fake_calls(&tools, forced, parallel, last_user, "toolu_"),
        preamble,
    ))
}

fn tool_reply(body: &Value, calls: Vec<FakeCall>, preamble: bool) -> hyper::Response<Body> {
    let model = format!("{}-20250929", body["model"].as_str().unwrap_or_default());
    let input: u32 = body["messages"]
        .as_array()
        .map(|m| m.iter().map(|m| words(&content_text(m)) + 1).sum())
        .unwrap_or(0);
    let args: String = calls.iter().map(|c| c.args.to_string()).collect();
    let output = words(&args) + if preamble { words(PREAMBLE) } else { 0 };
    let mut content: Vec<Value> = Vec::new();
    if preamble {
        content.push(json!({"type": "text", "text": PREAMBLE}));
    }
    content.extend(
        calls
            .iter()
            .map(|c| json!({"type": "tool_use", "id": c.id, "name": c.name, "input": c.args})),
    );
    if body["stream"] != Value::Bool(true) {
        return json(
            200,
            json!({
                "id": "msg_fake", "type": "message", "role": "assistant", "model": model,
                "content": content, "stop_reason": "tool_use", "stop_sequence": null,
                "usage": {"input_tokens": input, "output_tokens": output}
            }),
        );
    }
    let mut events = vec![sse_event(
        "message_start",
        json!({"type": "message_start", "message": {"id": "msg_fake", "type": "message", "role": "assistant", "content": [], "model": model, "stop_reason": null, "stop_sequence": null, "usage": {"input_tokens": input, "output_tokens": 1}}}),
    )];
    let mut index = 0;
    if preamble {
        events.push(sse_event(
            "content_block_start",
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        ));
        events.push(sse_event(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": PREAMBLE}}),
        ));
        events.push(sse_event(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 0}),
        ));
        index = 1;
    }
    for c in &calls {
        events.push(sse_event(
            "content_block_start",
            json!({"type": "content_block_start", "index": index, "content_block": {"type": "tool_use", "id": c.id, "name": c.name, "input": {}}}),
        ));
        events.push(sse_event(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": index, "delta": {"type": "input_json_delta", "partial_json": ""}}),
        ));
        for f in fragments(&c.args.to_string(), 3) {
            events.push(sse_event(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": index, "delta": {"type": "input_json_delta", "partial_json": f}}),
            ));
        }
        events.push(sse_event(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": index}),
        ));
        index += 1;
    }
    events.push(sse_event(
        "message_delta",
        json!({"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": null}, "usage": {"output_tokens": output}}),
    ));
    events.push(sse_event("message_stop", json!({"type": "message_stop"})));
    sse(events, Duration::ZERO, End::Clean)
}

#[tokio::test]
async fn tools_round_trip_as_tool_use_and_tool_result_blocks() {
    let server = server().await;
    let p = provider(&server);
    check_two_tool_round_trip(&*p, "claude-test").await;
    let reqs = server.requests();
    assert_eq!(
        reqs[0].json()["tools"][0],
        json!({"name": "get_weather", "description": "Weather of a city", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}}, "required": ["city"]}})
    );
    let last = reqs.last().unwrap().json();
    let msgs = last["messages"].as_array().unwrap();
    assert_eq!(msgs.len(), 3, "both results in one user turn: {msgs:?}");
    assert_eq!(
        msgs[1]["content"][0],
        json!({"type": "text", "text": PREAMBLE})
    );
    assert_eq!(msgs[1]["content"][1]["type"], "tool_use");
    assert_eq!(msgs[1]["content"][1]["input"]["days"], 1);
    assert_eq!(msgs[2]["role"], "user");
    assert_eq!(msgs[2]["content"][0]["type"], "tool_result");
    assert_eq!(
        msgs[2]["content"][0]["tool_use_id"],
        msgs[1]["content"][1]["id"]
    );
    assert_eq!(
        msgs[2]["content"][1]["tool_use_id"],
        msgs[1]["content"][2]["id"]
    );
}

#[tokio::test]
async fn images_are_image_blocks_and_structured_output_is_a_forced_tool() {
    use chatcore::provider::{ImagePart, ResponseFormat};
    let server = server().await;
    let mut req = ChatRequest::new(vec![
        ChatMessage::user("describe").with_image(ImagePart::url(PNG_DATA_URL)),
        ChatMessage::assistant("A dot."),
        ChatMessage::user("again").with_image(ImagePart::url("https://example.com/a.png")),
    ])
    .with_model("claude-test");
    req.response_format = Some(ResponseFormat::JsonSchema {
        name: "d".into(),
        schema: json!({"type": "object", "properties": {"description": {"type": "string"}}}),
        strict: None,
    });
    let r = provider(&server).complete(&req).await.unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(&r.content).unwrap(),
        json!({"description": "again"})
    );
    assert!(r.tool_calls.is_empty());
    assert_eq!(r.finish_reason, FinishReason::Stop);
    let body = server.requests()[0].json();
    let png = PNG_DATA_URL.split_once(',').unwrap().1;
    assert_eq!(
        body["messages"][0]["content"][1],
        json!({"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": png}})
    );
    assert_eq!(
        body["messages"][2]["content"][1],
        json!({"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}})
    );
    assert_eq!(
        body["tool_choice"],
        json!({"type": "tool", "name": chatcore::provider::anthropic::wire::JSON_TOOL})
    );
}
