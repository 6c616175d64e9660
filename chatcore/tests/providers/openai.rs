//! A fake of OpenAI's chat completions and embeddings API, and the tests of
//! the OpenAI and OpenAI-compatible providers against it.

use std::sync::Arc;
use std::time::Duration;

use chatcore::provider::mock::mock_embedding;
use chatcore::provider::{
    ChatMessage, ChatRequest, EmbedRequest, FinishReason, Provider, ProviderError,
    ProviderRegistry, ProviderSpec, RetryPolicy, TimeoutKind,
};
use chatcore::testkit::provider::{ConformanceConfig, run_provider_conformance_with};
use futures::FutureExt;
use serde_json::{Value, json};

use crate::support::*;

const CHAT_FIELDS: &[&str] = &[
    "model",
    "messages",
    "temperature",
    "max_tokens",
    "max_completion_tokens",
    "stop",
    "user",
    "stream",
    "stream_options",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "response_format",
    "top_p",
    "seed",
    "presence_penalty",
    "frequency_penalty",
];

/// The text of a message's content: a string, or its text parts.
fn content_text(m: &Value) -> String {
    match &m["content"] {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter(|p| p["type"] == "text")
            .filter_map(|p| p["text"].as_str())
            .collect(),
        _ => String::new(),
    }
}

fn message_ok(m: &Value, earlier_calls: &[String]) -> bool {
    let role = m["role"].as_str();
    let content_ok = match &m["content"] {
        Value::String(_) => true,
        Value::Array(parts) => {
            role == Some("user")
                && parts.iter().all(|p| match p["type"].as_str() {
                    Some("text") => p["text"].is_string(),
                    Some("image_url") => p["image_url"]["url"]
                        .as_str()
                        .is_some_and(|u| u.starts_with("https://") || u.starts_with("data:image/")),
                    _ => false,
                })
        }
        Value::Null => role == Some("assistant") && m["tool_calls"].is_array(),
        _ => false,
    };
    let calls_ok = m.get("tool_calls").is_none_or(|c| {
        role == Some("assistant")
            && c.as_array().is_some_and(|c| {
                c.iter().all(|c| {
                    c["id"].is_string()
                        && c["type"] == "function"
                        && c["function"]["name"].is_string()
                        && c["function"]["arguments"].is_string()
                })
            })
    });
    let tool_ok = role != Some("tool")
        || m["tool_call_id"]
            .as_str()
            .is_some_and(|id| earlier_calls.iter().any(|c| c == id));
    content_ok
        && calls_ok
        && tool_ok
        && matches!(
            role,
            Some("system" | "user" | "assistant" | "developer" | "tool")
        )
}

fn error(status: u16, message: &str, kind: &str, code: Value) -> hyper::Response<Body> {
    json(
        status,
        json!({"error": {"message": message, "type": kind, "param": null, "code": code}}),
    )
}

fn bad_request(message: &str) -> hyper::Response<Body> {
    error(400, message, "invalid_request_error", Value::Null)
}

/// Checks a chat request as OpenAI would; `Err` is the response to send.
fn check_chat(body: &Value) -> Result<(), hyper::Response<Body>> {
    let Some(obj) = body.as_object() else {
        return Err(bad_request(
            "We could not parse the JSON body of your request.",
        ));
    };
    if let Some(k) = obj.keys().find(|k| !CHAT_FIELDS.contains(&k.as_str())) {
        return Err(bad_request(&format!(
            "Unrecognized request argument supplied: {k}"
        )));
    }
    if !obj.get("model").is_some_and(Value::is_string) {
        return Err(bad_request("you must provide a model parameter"));
    }
    let msgs = obj.get("messages").and_then(Value::as_array);
    let ok = msgs.is_some_and(|m| {
        let mut calls: Vec<String> = Vec::new();
        !m.is_empty()
            && m.iter().all(|m| {
                let ok = message_ok(m, &calls);
                if let Some(c) = m["tool_calls"].as_array() {
                    calls.extend(c.iter().filter_map(|c| c["id"].as_str()).map(str::to_owned));
                }
                ok
            })
    });
    if !ok {
        return Err(bad_request(
            "Invalid 'messages': expected a non-empty array of {role, content}.",
        ));
    }
    if obj.contains_key("parallel_tool_calls") && !obj.contains_key("tools") {
        return Err(bad_request(
            "Invalid value for 'parallel_tool_calls': 'parallel_tool_calls' is only allowed when 'tools' are specified.",
        ));
    }
    if let Some(tools) = obj.get("tools") {
        let ok = tools.as_array().is_some_and(|t| {
            t.iter().all(|t| {
                t["type"] == "function"
                    && t["function"]["name"].is_string()
                    && t["function"]["parameters"].is_object()
            })
        });
        if !ok {
            return Err(bad_request(
                "Invalid 'tools': expected an array of functions.",
            ));
        }
    }
    if obj.contains_key("stream_options") && obj.get("stream") != Some(&Value::Bool(true)) {
        return Err(bad_request(
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
        ));
    }
    Ok(())
}

/// The reply with `stop` and max tokens applied: (text, finish_reason).
fn generate(body: &Value) -> (String, &'static str) {
    let last = last_user(body);
    let after_tools = body["messages"]
        .as_array()
        .and_then(|m| m.last())
        .is_some_and(|m| m["role"] == "tool");
    let mut reply = if after_tools {
        let results: Vec<String> = body["messages"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["role"] == "tool")
            .map(content_text)
            .collect();
        format!("The tools said: {}", results.join("; "))
    } else {
        reply_for(&last)
    };
    match body["response_format"]["type"].as_str() {
        Some("json_schema") => {
            reply = value_for(&body["response_format"]["json_schema"]["schema"], &reply).to_string()
        }
        Some("json_object") => reply = json!({ "answer": reply }).to_string(),
        _ => {}
    }
    let mut reason = "stop";
    if let Some(stops) = body["stop"].as_array() {
        for s in stops.iter().filter_map(Value::as_str) {
            if let Some(i) = reply.find(s) {
                reply.truncate(i);
            }
        }
    }
    let max = body["max_completion_tokens"]
        .as_u64()
        .or(body["max_tokens"].as_u64());
    if let Some(max) = max
        && words(&reply) as u64 > max
    {
        reply = reply
            .split_inclusive(' ')
            .take(max as usize)
            .collect::<String>()
            .trim_end()
            .to_owned();
        reason = "length";
    }
    (reply, reason)
}

fn last_user(body: &Value) -> String {
    body["messages"]
        .as_array()
        .and_then(|m| m.iter().rev().find(|m| m["role"] == "user"))
        .map(content_text)
        .unwrap_or_default()
}

fn prompt_tokens(body: &Value) -> u32 {
    body["messages"]
        .as_array()
        .map(|m| m.iter().map(|m| words(&content_text(m)) + 1).sum())
        .unwrap_or(0)
}

/// The calls to answer with: tools given, not `none`, and no results yet.
fn calls_for(body: &Value) -> Option<(Vec<FakeCall>, bool)> {
    let tools: Vec<(String, Value)> = body["tools"]
        .as_array()?
        .iter()
        .map(|t| {
            (
                t["function"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                t["function"]["parameters"].clone(),
            )
        })
        .collect();
    let choice = &body["tool_choice"];
    let last_is_tool = body["messages"]
        .as_array()
        .and_then(|m| m.last())
        .is_some_and(|m| m["role"] == "tool");
    if tools.is_empty() || choice == "none" || last_is_tool {
        return None;
    }
    let forced = choice["function"]["name"].as_str();
    let parallel = body["parallel_tool_calls"] != Value::Bool(false);
    let preamble = forced.is_none() && choice != "required";
    Some((
        fake_calls(&tools, forced, parallel, &last_user(body), "call_"),
        preamble,
    ))
}

fn tool_reply(body: &Value, calls: Vec<FakeCall>, preamble: bool) -> hyper::Response<Body> {
    let model = format!("{}-2024-08-06", body["model"].as_str().unwrap_or_default());
    let prompt = prompt_tokens(body);
    let args: String = calls.iter().map(|c| c.args.to_string()).collect();
    let completion = words(&args) + if preamble { words(PREAMBLE) } else { 0 };
    let usage = json!({"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion});
    let wire_calls: Vec<Value> = calls
        .iter()
        .map(|c| json!({"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.args.to_string()}}))
        .collect();
    if body["stream"] != Value::Bool(true) {
        return json(
            200,
            json!({
                "id": "chatcmpl-fake", "object": "chat.completion", "created": 1_700_000_000, "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": if preamble { json!(PREAMBLE) } else { Value::Null }, "tool_calls": wire_calls, "refusal": null}, "logprobs": null, "finish_reason": "tool_calls"}],
                "usage": usage
            }),
        );
    }
    let mut chunks = vec![chunk(
        &model,
        json!({"role": "assistant", "content": if preamble { json!(PREAMBLE) } else { Value::Null }}),
        Value::Null,
        Value::Null,
    )];
    for (i, c) in calls.iter().enumerate() {
        chunks.push(chunk(
            &model,
            json!({"tool_calls": [{"index": i, "id": c.id, "type": "function", "function": {"name": c.name, "arguments": ""}}]}),
            Value::Null,
            Value::Null,
        ));
        for f in fragments(&c.args.to_string(), 3) {
            chunks.push(chunk(
                &model,
                json!({"tool_calls": [{"index": i, "function": {"arguments": f}}]}),
                Value::Null,
                Value::Null,
            ));
        }
    }
    chunks.push(chunk(&model, json!({}), json!("tool_calls"), Value::Null));
    if body["stream_options"]["include_usage"] == Value::Bool(true) {
        let v = json!({"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1, "model": model, "choices": [], "usage": usage});
        chunks.push(format!("data: {v}\n\n"));
    }
    chunks.push("data: [DONE]\n\n".to_owned());
    sse(chunks, Duration::ZERO, End::Clean)
}

fn chunk(model: &str, delta: Value, finish: Value, usage: Value) -> String {
    let v = json!({
        "id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1_700_000_000, "model": model,
        "system_fingerprint": "fp_fake",
        "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
        "usage": usage
    });
    format!("data: {v}\n\n")
}

/// The fake. `require_key`: OpenAI proper; a compatible server may not.
pub fn handler(require_key: bool) -> Handler {
    Arc::new(move |req: Recorded, state: Arc<ServerState>| {
        async move {
            if req.method != "POST" {
                return error(
                    405,
                    "Method not allowed",
                    "invalid_request_error",
                    Value::Null,
                );
            }
            let auth = req.header("authorization").map(str::to_owned);
            let expected = format!("Bearer {KEY}");
            if (require_key || auth.is_some()) && auth.as_deref() != Some(expected.as_str()) {
                let given = auth.unwrap_or_default();
                return error(
                    401,
                    &format!(
                        "Incorrect API key provided: {}.",
                        given.trim_start_matches("Bearer ")
                    ),
                    "invalid_request_error",
                    json!("invalid_api_key"),
                );
            }
            let body = req.json();
            match req.path.as_str() {
                "/v1/chat/completions" => chat(body, &state).await,
                "/v1/embeddings" => embeddings(body),
                p => error(
                    404,
                    &format!("Invalid URL (POST {p})"),
                    "invalid_request_error",
                    Value::Null,
                ),
            }
        }
        .boxed()
    })
}

async fn chat(body: Value, state: &ServerState) -> hyper::Response<Body> {
    if let Err(r) = check_chat(&body) {
        return r;
    }
    let model = body["model"].as_str().unwrap_or_default().to_owned();
    let sc = scenario(&model);
    match sc {
        Scenario::Unauthorized => {
            return error(
                401,
                &format!("Incorrect API key provided: {KEY}."),
                "invalid_request_error",
                json!("invalid_api_key"),
            );
        }
        Scenario::RateLimited => {
            let r = error(
                429,
                "Rate limit reached for requests",
                "requests",
                json!("rate_limit_exceeded"),
            );
            return with_header(r, "retry-after", "7");
        }
        Scenario::ServerError => {
            return error(
                500,
                "The server had an error while processing your request.",
                "server_error",
                Value::Null,
            );
        }
        Scenario::ContextTooLong => {
            return error(
                400,
                "This model's maximum context length is 128000 tokens. However, your messages resulted in 130000 tokens.",
                "invalid_request_error",
                json!("context_length_exceeded"),
            );
        }
        Scenario::FlakyTwice if state.attempt(&model) <= 2 => {
            return error(
                503,
                "The engine is currently overloaded, please try again later.",
                "server_error",
                Value::Null,
            );
        }
        Scenario::Teapot => {
            return json(
                418,
                json!({"oops": format!("I am a teapot; your key was {KEY}")}),
            );
        }
        Scenario::Hang => return hang().await,
        _ => {}
    }
    if let Some((calls, preamble)) = calls_for(&body) {
        return tool_reply(&body, calls, preamble);
    }
    let (reply, reason) = generate(&body);
    let prompt = prompt_tokens(&body);
    let usage = json!({"prompt_tokens": prompt, "completion_tokens": words(&reply), "total_tokens": prompt + words(&reply)});
    let reported_model = format!("{model}-2024-08-06");
    if body["stream"] != Value::Bool(true) {
        let mut v = json!({
            "id": "chatcmpl-fake", "object": "chat.completion", "created": 1_700_000_000, "model": reported_model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": reply, "refusal": null}, "logprobs": null, "finish_reason": reason}],
            "usage": usage
        });
        if sc == Scenario::NoUsage {
            v.as_object_mut().unwrap().remove("usage");
        }
        return json(200, v);
    }
    let include_usage =
        body["stream_options"]["include_usage"] == Value::Bool(true) && sc != Scenario::NoUsage;
    let mut chunks = vec![chunk(
        &reported_model,
        json!({"role": "assistant", "content": ""}),
        Value::Null,
        Value::Null,
    )];
    let parts = pieces(&reply);
    let half = parts.len() / 2;
    let text_chunks: Vec<String> = parts
        .iter()
        .map(|p| {
            chunk(
                &reported_model,
                json!({"content": p}),
                Value::Null,
                Value::Null,
            )
        })
        .collect();
    let server_error = "data: {\"error\":{\"message\":\"The server had an error while processing your request.\",\"type\":\"server_error\",\"param\":null,\"code\":null}}\n\n".to_owned();
    let (end, tail): (End, Vec<String>) = match sc {
        Scenario::Cut => (End::Clean, Vec::new()),
        Scenario::Abort => (End::Abort, Vec::new()),
        Scenario::HangMid => (End::Hang, Vec::new()),
        Scenario::ErrorMid => (End::Clean, vec![server_error.clone()]),
        Scenario::ErrorEarly => {
            return sse(vec![server_error], Duration::ZERO, End::Clean);
        }
        _ => {
            let mut tail: Vec<String> = text_chunks[half..].to_vec();
            tail.push(chunk(
                &reported_model,
                json!({}),
                json!(reason),
                Value::Null,
            ));
            if include_usage {
                let v = json!({"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1, "model": reported_model, "choices": [], "usage": usage});
                tail.push(format!("data: {v}\n\n"));
            }
            tail.push("data: [DONE]\n\n".to_owned());
            (End::Clean, tail)
        }
    };
    chunks.extend(text_chunks[..half].iter().cloned());
    chunks.extend(tail);
    sse(chunks, Duration::from_millis(1), end)
}

fn embeddings(body: Value) -> hyper::Response<Body> {
    let inputs: Vec<String> = match &body["input"] {
        Value::String(s) => vec![s.clone()],
        Value::Array(a) if a.iter().all(Value::is_string) && !a.is_empty() => a
            .iter()
            .map(|v| v.as_str().unwrap_or_default().to_owned())
            .collect(),
        _ => return bad_request("'input' must be a string or a non-empty array of strings"),
    };
    let Some(model) = body["model"].as_str() else {
        return bad_request("you must provide a model parameter");
    };
    let dim = body["dimensions"].as_u64().unwrap_or(16) as usize;
    // Answer out of order: clients must sort by index.
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .rev()
        .map(|(i, t)| json!({"object": "embedding", "index": i, "embedding": mock_embedding(t, dim)}))
        .collect();
    let tokens: u32 = inputs.iter().map(|t| words(t)).sum();
    json(
        200,
        json!({"object": "list", "data": data, "model": model, "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}),
    )
}

pub async fn server(require_key: bool) -> TestServer {
    TestServer::start(handler(require_key)).await
}

pub fn spec(server: &TestServer) -> ProviderSpec {
    ProviderSpec::new("openai")
        .with_api_key(KEY)
        .with_base_url(format!("{}/v1", server.url()))
        .with_egress(local_egress())
        .with_default_model("gpt-test")
        .with_timeouts(test_timeouts())
        .with_retry(RetryPolicy::none())
}

pub fn provider(server: &TestServer) -> Arc<dyn Provider> {
    ProviderRegistry::with_builtins()
        .build(&spec(server))
        .unwrap()
}

fn ask(model: &str, text: &str) -> ChatRequest {
    ChatRequest::new(vec![ChatMessage::system("sys"), ChatMessage::user(text)]).with_model(model)
}

#[tokio::test]
async fn completes_and_sends_what_openai_expects() {
    let server = server(true).await;
    let p = provider(&server);
    let r = p
        .complete(&ask("gpt-test", "hello there").with_end_user_id("user-9"))
        .await
        .unwrap();
    assert_eq!(r.content, "Echo from the fake: hello there");
    assert_eq!(r.provider, "openai");
    assert_eq!(r.model, "gpt-test-2024-08-06");
    assert_eq!(r.finish_reason, FinishReason::Stop);
    assert_eq!(
        (
            r.usage.prompt_tokens,
            r.usage.completion_tokens,
            r.usage.total_tokens
        ),
        (5, 6, 11)
    );
    assert!(!r.usage.estimated);
    let req = &server.requests()[0];
    assert_eq!(req.path, "/v1/chat/completions");
    assert_eq!(
        req.header("authorization"),
        Some(format!("Bearer {KEY}").as_str())
    );
    let body = req.json();
    assert_eq!(body["user"], "user-9");
    assert!(body.get("stream").is_none());
}

#[tokio::test]
async fn streams_with_usage_from_the_last_chunk() {
    let server = server(true).await;
    let p = provider(&server);
    let (text, end) = drain(p.stream(&ask("gpt-test", "one two three")).await.unwrap()).await;
    let end = end.unwrap();
    assert_eq!(text, "Echo from the fake: one two three");
    assert_eq!(
        (end.usage.prompt_tokens, end.usage.completion_tokens),
        (6, 7)
    );
    assert!(!end.usage.estimated);
    assert_eq!(end.model, "gpt-test-2024-08-06");
    let body = server.requests()[0].json();
    assert_eq!(body["stream"], true);
    assert_eq!(body["stream_options"], json!({"include_usage": true}));
}

#[tokio::test]
async fn maps_stop_and_length() {
    let server = server(true).await;
    let p = provider(&server);
    let r = p
        .complete(&ask("gpt-test", "a b c d e f").with_max_tokens(3))
        .await
        .unwrap();
    assert_eq!(r.finish_reason, FinishReason::Length);
    assert_eq!(r.content, "Echo from the");
    let r = p
        .complete(&ask("gpt-test", "a b c").with_stop(vec![":".into()]))
        .await
        .unwrap();
    assert_eq!(r.content, "Echo from the fake");
    assert_eq!(server.requests()[0].json()["max_completion_tokens"], 3);
}

#[tokio::test]
async fn one_connection_pool_is_reused() {
    let server = server(true).await;
    let p = provider(&server);
    for i in 0..3 {
        p.complete(&ask("gpt-test", &format!("n{i}")))
            .await
            .unwrap();
    }
    let (_, end) = drain(p.stream(&ask("gpt-test", "s")).await.unwrap()).await;
    end.unwrap();
    p.complete(&ask("gpt-test", "after stream")).await.unwrap();
    assert_eq!(server.connections(), 1);
}

#[tokio::test]
async fn embeds_in_input_order() {
    let server = server(true).await;
    let p = provider(&server);
    let inputs = vec![
        "alpha beta".to_owned(),
        "gamma".to_owned(),
        "delta epsilon".to_owned(),
    ];
    let mut req = EmbedRequest::new(inputs.clone()).with_model("text-embedding-3-small");
    req.dimensions = Some(8);
    let r = p.embed(&req).await.unwrap();
    assert_eq!(r.vectors.len(), 3);
    for (v, t) in r.vectors.iter().zip(&inputs) {
        assert_eq!(v, &mock_embedding(t, 8));
    }
    assert_eq!(r.usage.prompt_tokens, 5);
    let body = server.requests()[0].json();
    assert_eq!(body["input"], json!(inputs));
    assert_eq!(body["dimensions"], 8);
}

#[tokio::test]
async fn maps_each_failure_status() {
    let server = server(true).await;
    let p = provider(&server);
    let e = p.complete(&ask("unauthorized", "x")).await.unwrap_err();
    assert_clean_error(&e);
    assert!(matches!(e, ProviderError::Authentication { .. }), "{e:?}");
    assert_no_key("401 error", &e);
    assert!(!e.to_string().contains("FAKEKEY"));

    let e = p.complete(&ask("rate-limited", "x")).await.unwrap_err();

    assert_clean_error(&e);
    assert_eq!(e.retry_after(), Some(Duration::from_secs(7)), "{e:?}");

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

    let e = p.complete(&ask("context-too-long", "x")).await.unwrap_err();

    assert_clean_error(&e);
    assert!(matches!(e, ProviderError::ContextTooLong { .. }), "{e:?}");

    let e = p.complete(&ask("teapot", "x")).await.unwrap_err();

    assert_clean_error(&e);
    match &e {
        ProviderError::Unknown {
            status: 418, body, ..
        } => assert!(body.contains("teapot") && !body.contains("FAKEKEY")),
        e => panic!("{e:?}"),
    }
    assert_no_key("418 error", &e);

    // Errors of the stream call map the same way.
    let e = p.stream(&ask("rate-limited", "x")).await.err().unwrap();
    assert_clean_error(&e);
    assert!(matches!(e, ProviderError::RateLimited { .. }));
}

#[tokio::test]
async fn wrong_key_is_rejected_and_not_leaked() {
    let server = server(true).await;
    let spec = spec(&server).with_api_key("sk-wrong-SECRETWRONG-42424242");
    let p = ProviderRegistry::with_builtins().build(&spec).unwrap();
    let e = p.complete(&ask("gpt-test", "x")).await.unwrap_err();
    assert_clean_error(&e);
    assert!(matches!(e, ProviderError::Authentication { .. }), "{e:?}");
    let s = format!("{e:?} {e} {p:?}");
    assert!(!s.contains("SECRETWRONG"), "{s}");
}

#[tokio::test]
async fn stream_faults_map_to_errors() {
    let server = server(true).await;
    let p = provider(&server);
    // Connection closed cleanly without [DONE].
    let (text, end) = drain(p.stream(&ask("cut", "a b c d")).await.unwrap()).await;
    match end {
        Err(ProviderError::StreamInterrupted {
            partial,
            cause: None,
            ..
        }) => {
            assert_eq!(partial, text);
            assert!(!partial.is_empty());
            assert!("Echo from the fake: a b c d".starts_with(&partial));
        }
        e => panic!("{e:?}"),
    }
    // Connection reset midway.
    let (text, end) = drain(p.stream(&ask("abort", "a b c d")).await.unwrap()).await;
    match end {
        Err(ProviderError::StreamInterrupted {
            partial,
            cause: Some(c),
            ..
        }) => {
            assert_eq!(partial, text);
            assert!(matches!(*c, ProviderError::Unavailable { .. }), "{c:?}");
        }
        e => panic!("{e:?}"),
    }
    // A vendor error chunk after text.
    let (_, end) = drain(p.stream(&ask("error-mid", "a b c d")).await.unwrap()).await;
    match end {
        Err(ProviderError::StreamInterrupted {
            cause: Some(c),
            partial,
            ..
        }) => {
            assert!(!partial.is_empty());
            assert!(matches!(*c, ProviderError::Unavailable { .. }), "{c:?}");
        }
        e => panic!("{e:?}"),
    }
    // Before any text: the error itself.
    let (text, end) = drain(p.stream(&ask("error-early", "a")).await.unwrap()).await;
    assert!(text.is_empty());
    assert!(
        matches!(end, Err(ProviderError::Unavailable { .. })),
        "{end:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn hang_hits_the_first_byte_timeout() {
    let _ticker = ticker();
    let server = server(true).await;
    let p = provider(&server);
    let start = tokio::time::Instant::now();
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
    assert!(start.elapsed() >= Duration::from_secs(20));
    let e = p.stream(&ask("hang", "x")).await.err().unwrap();
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
}

#[tokio::test(start_paused = true)]
async fn silence_mid_stream_hits_the_idle_timeout() {
    let _ticker = ticker();
    let server = server(true).await;
    let p = provider(&server);
    let start = tokio::time::Instant::now();
    let (text, end) = drain(p.stream(&ask("hang-mid", "a b c d")).await.unwrap()).await;
    assert!(!text.is_empty());
    match end {
        Err(e @ ProviderError::StreamInterrupted { .. }) => {
            assert!(e.is_timeout());
            let ProviderError::StreamInterrupted { cause: Some(c), .. } = e else {
                unreachable!()
            };
            assert!(matches!(
                *c,
                ProviderError::Timeout {
                    kind: TimeoutKind::Idle,
                    ..
                }
            ));
        }
        e => panic!("{e:?}"),
    }
    assert!(start.elapsed() >= Duration::from_secs(10));
}

#[tokio::test]
async fn connection_refused_is_unavailable() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let spec = ProviderSpec::new("openai")
        .with_api_key(KEY)
        .with_base_url(format!("http://{addr}/v1"))
        .with_egress(local_egress())
        .with_retry(RetryPolicy::none());
    let p = ProviderRegistry::with_builtins().build(&spec).unwrap();
    let e = p.complete(&ask("gpt-test", "x")).await.unwrap_err();
    assert_clean_error(&e);
    assert!(
        matches!(e, ProviderError::Unavailable { status: None, .. }),
        "{e:?}"
    );
    assert!(e.is_retryable());
    assert_no_key("connect error", &e);
}

#[tokio::test]
async fn compatible_server_without_key_or_usage_gets_estimates() {
    let server = server(false).await;
    let spec = ProviderSpec::new("openai_compatible")
        .with_base_url(format!("{}/v1", server.url()))
        .with_egress(local_egress())
        .with_retry(RetryPolicy::none());
    let p = ProviderRegistry::with_builtins().build(&spec).unwrap();
    let r = p.complete(&ask("no-usage", "hello world")).await.unwrap();
    assert!(r.usage.estimated);
    assert!(r.usage.completion_tokens > 0);
    assert_eq!(r.provider, "openai_compatible");
    let (_, end) = drain(p.stream(&ask("no-usage", "hello world")).await.unwrap()).await;
    let end = end.unwrap();
    assert!(end.usage.estimated);
    assert_eq!(end.usage.prompt_tokens, r.usage.prompt_tokens);
    let req = &server.requests()[0];
    assert!(req.header("authorization").is_none());
    assert!(req.json().get("max_completion_tokens").is_none());
}

#[tokio::test]
async fn conformance_openai() {
    let server = server(true).await;
    let report = run_provider_conformance_with(
        provider(&server),
        ConformanceConfig {
            model: "gpt-test".into(),
            secret: Some(KEY.into()),
            structured_output: true,
            ..Default::default()
        },
    )
    .await;
    report.assert_ok();
    server.assert_no_key_in_urls();
}

#[tokio::test]
async fn conformance_openai_compatible_without_usage() {
    let server = server(false).await;
    let spec = ProviderSpec::new("openai_compatible")
        .with_base_url(format!("{}/v1", server.url()))
        .with_egress(local_egress())
        .with_retry(RetryPolicy::none());
    let p = ProviderRegistry::with_builtins().build(&spec).unwrap();
    run_provider_conformance_with(
        p,
        ConformanceConfig {
            model: "no-usage".into(),
            ..Default::default()
        },
    )
    .await
    .assert_ok();
    server.assert_no_key_in_urls();
}

#[tokio::test]
async fn connect_timeout_is_its_own_kind() {
    // A listener that never accepts, with its backlog filled: the kernel
    // drops further SYNs, so our connect hangs until its timeout.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(1).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..8 {
        if let Ok(Ok(s)) = tokio::time::timeout(
            Duration::from_millis(200),
            tokio::net::TcpStream::connect(addr),
        )
        .await
        {
            fillers.push(s);
        }
    }
    let spec = ProviderSpec::new("openai")
        .with_api_key(KEY)
        .with_base_url(format!("http://{addr}/v1"))
        .with_egress(local_egress())
        .with_timeouts(chatcore::provider::Timeouts {
            connect: Duration::from_millis(300),
            first_byte: Duration::from_secs(10),
            idle: Duration::from_secs(10),
        })
        .with_retry(RetryPolicy::none());
    let p = ProviderRegistry::with_builtins().build(&spec).unwrap();
    let e = p.complete(&ask("gpt-test", "x")).await.unwrap_err();
    assert!(
        matches!(
            e,
            ProviderError::Timeout {
                kind: TimeoutKind::Connect,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.is_retryable());
    drop(listener);
}

#[tokio::test]
async fn tools_round_trip_in_openais_format() {
    let server = server(true).await;
    let p = provider(&server);
    check_two_tool_round_trip(&*p, "gpt-test").await;
    let reqs = server.requests();
    let first = reqs[0].json();
    assert_eq!(
        first["tools"][1],
        json!({"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {"zone": {"type": "string"}}}}})
    );
    let last = reqs.last().unwrap().json();
    let msgs = last["messages"].as_array().unwrap();
    assert_eq!(msgs[2]["role"], "assistant");
    assert_eq!(msgs[2]["content"], PREAMBLE);
    assert_eq!(msgs[2]["tool_calls"].as_array().unwrap().len(), 2);
    assert_eq!(
        (msgs[3]["role"].clone(), msgs[3]["tool_call_id"].clone()),
        (json!("tool"), msgs[2]["tool_calls"][0]["id"].clone())
    );
    assert_eq!(msgs[4]["tool_call_id"], msgs[2]["tool_calls"][1]["id"]);
}

#[tokio::test]
async fn images_go_as_image_url_parts() {
    use chatcore::provider::ImagePart;
    let server = server(true).await;
    let req = ChatRequest::new(vec![
        ChatMessage::user("what is this?").with_image(ImagePart::url(PNG_DATA_URL)),
    ])
    .with_model("gpt-test");
    let r = provider(&server).complete(&req).await.unwrap();
    assert_eq!(r.content, reply_for("what is this?"));
    assert_eq!(
        server.requests()[0].json()["messages"][0]["content"],
        json!([{"type": "text", "text": "what is this?"}, {"type": "image_url", "image_url": {"url": PNG_DATA_URL}}])
    );
}
