//! A fake of the Gemini API (`generateContent`, `streamGenerateContent`,
//! `batchEmbedContents`), and the tests of the Gemini provider against it.

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

fn error(code: u16, status: &str, message: &str, details: Value) -> hyper::Response<Body> {
    json(
        code,
        json!({"error": {"code": code, "message": message, "status": status, "details": details}}),
    )
}

fn invalid(message: &str) -> hyper::Response<Body> {
    error(400, "INVALID_ARGUMENT", message, json!([]))
}

fn check_generate(body: &Value) -> Result<(), hyper::Response<Body>> {
    let Some(obj) = body.as_object() else {
        return Err(invalid("Invalid JSON payload received."));
    };
    const FIELDS: &[&str] = &[
        "contents",
        "systemInstruction",
        "generationConfig",
        "safetySettings",
        "tools",
        "toolConfig",
    ];
    if let Some(k) = obj.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(invalid(&format!(
            "Invalid JSON payload received. Unknown name \"{k}\": Cannot find field."
        )));
    }
    let Some(contents) = obj
        .get("contents")
        .and_then(Value::as_array)
        .filter(|c| !c.is_empty())
    else {
        return Err(invalid(
            "* GenerateContentRequest.contents: contents is not specified",
        ));
    };
    let declared: Vec<&str> = obj
        .get("tools")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .flat_map(|t| t["functionDeclarations"].as_array().into_iter().flatten())
        .filter_map(|d| d["name"].as_str())
        .collect();
    for c in contents {
        let role = match c["role"].as_str() {
            Some(r @ ("user" | "model")) => r,
            r => {
                return Err(invalid(&format!(
                    "Please use a valid role: user, model. (got {r:?})"
                )));
            }
        };
        let part_ok = |p: &Value| {
            p["text"].is_string()
                || (role == "user"
                    && p["inlineData"]["mimeType"].is_string()
                    && p["inlineData"]["data"].is_string())
                || (role == "user" && p["fileData"]["fileUri"].is_string())
                || (role == "model"
                    && p["functionCall"]["name"].is_string()
                    && p["functionCall"]["args"].is_object())
                || (role == "user"
                    && p["functionResponse"]["name"]
                        .as_str()
                        .is_some_and(|n| declared.contains(&n))
                    && p["functionResponse"]["response"].is_object())
        };
        let parts_ok = c["parts"]
            .as_array()
            .is_some_and(|p| !p.is_empty() && p.iter().all(part_ok));
        if !parts_ok {
            return Err(invalid(&format!(
                "contents.parts: invalid parts {}",
                c["parts"]
            )));
        }
    }
    if let Some(t) = obj.get("tools") {
        let ok = t.as_array().is_some_and(|t| {
            t.iter().all(|t| {
                t["functionDeclarations"].as_array().is_some_and(|d| {
                    d.iter().all(|d| {
                        d["name"].is_string()
                            && (d["parametersJsonSchema"].is_object()
                                || d["parameters"].is_object())
                    })
                })
            })
        });
        if !ok {
            return Err(invalid("tools: invalid function declarations"));
        }
    }
    if let Some(cfg) = obj.get("generationConfig") {
        for k in cfg.as_object().into_iter().flat_map(|o| o.keys()) {
            if ![
                "temperature",
                "maxOutputTokens",
                "stopSequences",
                "topP",
                "topK",
                "seed",
                "presencePenalty",
                "frequencyPenalty",
                "responseMimeType",
                "responseJsonSchema",
            ]
            .contains(&k.as_str())
            {
                return Err(invalid(&format!(
                    "Unknown name \"{k}\" at 'generation_config'"
                )));
            }
        }
    }
    Ok(())
}

pub fn handler() -> Handler {
    Arc::new(|req: Recorded, state: Arc<ServerState>| {
        async move {
            // Our policy (stricter than Google): a key in the URL is a leak.
            if req.query.as_deref().is_some_and(|q| q.split('&').any(|kv| kv.starts_with("key="))) {
                return invalid("API key must not be sent in the query string");
            }
            if req.header("x-goog-api-key") != Some(KEY) {
                return error(
                    400,
                    "INVALID_ARGUMENT",
                    "API key not valid. Please pass a valid API key.",
                    json!([{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID", "domain": "googleapis.com"}]),
                );
            }
            if req.method != "POST" {
                return error(404, "NOT_FOUND", "not found", json!([]));
            }
            let Some(rest) = req.path.strip_prefix("/v1beta/models/") else {
                return error(404, "NOT_FOUND", "not found", json!([]));
            };
            let Some((model, method)) = rest.split_once(':') else {
                return error(404, "NOT_FOUND", "not found", json!([]));
            };
            let body = req.json();
            match method {
                "generateContent" => generate(model, body, false, &state).await,
                "streamGenerateContent" => {
                    if req.query.as_deref() != Some("alt=sse") {
                        return invalid("this fake only streams with alt=sse");
                    }
                    generate(model, body, true, &state).await
                }
                "batchEmbedContents" => embed(model, body),
                _ => error(404, "NOT_FOUND", "method not found", json!([])),
            }
        }
        .boxed()
    })
}

fn chunk(text: &str, finish: Option<&str>, usage: Option<Value>, model: &str) -> String {
    let mut cand = json!({"content": {"parts": [{"text": text}], "role": "model"}, "index": 0});
    if let Some(f) = finish {
        cand["finishReason"] = json!(f);
    }
    let mut v = json!({"candidates": [cand], "modelVersion": model, "responseId": "fake"});
    if let Some(u) = usage {
        v["usageMetadata"] = u;
    }
    format!("data: {v}\r\n\r\n")
}

async fn generate(
    model: &str,
    body: Value,
    stream: bool,
    state: &ServerState,
) -> hyper::Response<Body> {
    if let Err(r) = check_generate(&body) {
        return r;
    }
    let sc = scenario(model);
    match sc {
        Scenario::Unauthorized => {
            return error(
                403,
                "PERMISSION_DENIED",
                "Permission denied on resource",
                json!([]),
            );
        }
        Scenario::RateLimited => {
            return error(
                429,
                "RESOURCE_EXHAUSTED",
                "You exceeded your current quota.",
                json!([{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "7s"}]),
            );
        }
        Scenario::ServerError => {
            return error(
                500,
                "INTERNAL",
                "An internal error has occurred.",
                json!([]),
            );
        }
        Scenario::FlakyTwice if state.attempt(model) <= 2 => {
            return error(
                503,
                "UNAVAILABLE",
                "The model is overloaded. Please try again later.",
                json!([]),
            );
        }
        Scenario::ContextTooLong => {
            return invalid(
                "The input token count (1200000) exceeds the maximum number of tokens allowed (1048576).",
            );
        }
        Scenario::Hang => return hang().await,
        _ => {}
    }
    let contents = body["contents"].as_array().cloned().unwrap_or_default();
    let text_of = |c: &Value| -> String {
        c["parts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p["text"].as_str())
            .collect()
    };
    let last = contents
        .iter()
        .rev()
        .find(|c| c["role"] == "user" && !text_of(c).is_empty())
        .map(text_of)
        .unwrap_or_default();
    if let Some((calls, preamble)) = calls_for(&body, &last) {
        return tool_reply(model, &body, calls, preamble, stream);
    }
    let mut reply = reply_for(&last);
    let cfg = &body["generationConfig"];
    if cfg["responseMimeType"] == "application/json" {
        reply = match cfg.get("responseJsonSchema") {
            Some(schema) => value_for(schema, &reply).to_string(),
            None => json!({ "answer": reply }).to_string(),
        };
    }
    let mut finish = "STOP";
    if let Some(max) = body["generationConfig"]["maxOutputTokens"].as_u64()
        && words(&reply) as u64 > max
    {
        reply = reply
            .split_inclusive(' ')
            .take(max as usize)
            .collect::<String>()
            .trim_end()
            .to_owned();
        finish = "MAX_TOKENS";
    }
    let prompt: u32 = contents.iter().map(|c| words(&text_of(c)) + 1).sum::<u32>()
        + words(
            body["systemInstruction"]["parts"][0]["text"]
                .as_str()
                .unwrap_or_default(),
        );
    let usage = |completion: u32| json!({"promptTokenCount": prompt, "candidatesTokenCount": completion, "totalTokenCount": prompt + completion});
    let version = format!("{model}-001");
    if !stream {
        let mut v = json!({
            "candidates": [{"content": {"parts": [{"text": reply}], "role": "model"}, "finishReason": finish, "index": 0}],
            "modelVersion": version
        });
        if sc != Scenario::NoUsage {
            v["usageMetadata"] = usage(words(&reply));
        }
        return json(200, v);
    }
    let parts = pieces(&reply);
    let n = parts.len();
    let half = n / 2;
    let mut so_far = String::new();
    let chunks: Vec<String> = parts
        .iter()
        .enumerate()
        .map(|(i, p)| {
            so_far.push_str(p);
            let last = i + 1 == n;
            // Gemini sends cumulative usage on chunks; the last one is final.
            let u = (sc != Scenario::NoUsage).then(|| usage(words(&so_far)));
            chunk(p, last.then_some(finish), u, &version)
        })
        .collect();
    match sc {
        Scenario::Cut => sse(
            chunks[..half].to_vec(),
            Duration::from_millis(1),
            End::Clean,
        ),
        Scenario::Abort => sse(
            chunks[..half].to_vec(),
            Duration::from_millis(1),
            End::Abort,
        ),
        Scenario::HangMid => sse(chunks[..half].to_vec(), Duration::from_millis(1), End::Hang),
        Scenario::ErrorMid => {
            let mut c = chunks[..half].to_vec();
            c.push(format!(
                "data: {}\r\n\r\n",
                json!({"error": {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}})
            ));
            sse(c, Duration::from_millis(1), End::Clean)
        }
        _ => sse(chunks, Duration::from_millis(1), End::Clean),
    }
}

fn embed(model: &str, body: Value) -> hyper::Response<Body> {
    let Some(reqs) = body["requests"].as_array().filter(|r| !r.is_empty()) else {
        return invalid("requests must not be empty");
    };
    let mut out = Vec::new();
    for r in reqs {
        if r["model"].as_str() != Some(&format!("models/{model}")) {
            return invalid("model of each request must match the URL's model");
        }
        let Some(text) = r["content"]["parts"][0]["text"].as_str() else {
            return invalid("content.parts[0].text is required");
        };
        let dim = r["outputDimensionality"].as_u64().unwrap_or(12) as usize;
        out.push(json!({"values": mock_embedding(text, dim)}));
    }
    json(200, json!({"embeddings": out}))
}

pub async fn server() -> TestServer {
    TestServer::start(handler()).await
}

pub fn provider(server: &TestServer) -> Arc<dyn Provider> {
    let spec = ProviderSpec::new("google")
        .with_api_key(KEY)
        .with_base_url(server.url())
        .with_egress(local_egress())
        .with_default_model("gemini-test")
        .with_timeouts(test_timeouts())
        .with_retry(RetryPolicy::none());
    ProviderRegistry::with_builtins().build(&spec).unwrap()
}

fn ask(model: &str, text: &str) -> ChatRequest {
    ChatRequest::new(vec![
        ChatMessage::system("be nice"),
        ChatMessage::user(text),
    ])
    .with_model(model)
}

#[tokio::test]
async fn completes_with_system_instruction_and_key_in_header() {
    let server = server().await;
    let p = provider(&server);
    let r = p.complete(&ask("gemini-test", "hello")).await.unwrap();
    assert_eq!(r.content, "Echo from the fake: hello");
    assert_eq!(r.model, "gemini-test-001");
    assert_eq!(
        (
            r.usage.prompt_tokens,
            r.usage.completion_tokens,
            r.usage.total_tokens
        ),
        (4, 5, 9)
    );
    let req = &server.requests()[0];
    assert_eq!(req.path, "/v1beta/models/gemini-test:generateContent");
    assert_eq!(req.query, None);
    assert_eq!(req.header("x-goog-api-key"), Some(KEY));
    assert_eq!(
        req.json()["systemInstruction"]["parts"][0]["text"],
        "be nice"
    );
}

#[tokio::test]
async fn streams_with_usage_from_the_last_chunk() {
    let server = server().await;
    let p = provider(&server);
    let (text, end) = drain(p.stream(&ask("gemini-test", "one two")).await.unwrap()).await;
    let end = end.unwrap();
    assert_eq!(text, "Echo from the fake: one two");
    assert_eq!(
        (end.usage.prompt_tokens, end.usage.completion_tokens),
        (5, 6)
    );
    assert!(!end.usage.estimated);
    let req = &server.requests()[0];
    assert_eq!(req.path, "/v1beta/models/gemini-test:streamGenerateContent");
    assert_eq!(req.query.as_deref(), Some("alt=sse"));
    let r = p
        .complete(&ask("gemini-test", "a b c d e").with_max_tokens(2))
        .await
        .unwrap();
    assert_eq!(r.finish_reason, FinishReason::Length);
}

#[tokio::test]
async fn no_usage_is_estimated() {
    let server = server().await;
    let p = provider(&server);
    let (_, end) = drain(p.stream(&ask("no-usage", "one two")).await.unwrap()).await;
    let end = end.unwrap();
    assert!(end.usage.estimated && end.usage.completion_tokens > 0);
}

#[tokio::test]
async fn fake_rejects_a_key_in_the_query() {
    let server = server().await;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let r = reqwest::Client::new()
        .post(format!(
            "{}/v1beta/models/gemini-test:generateContent?key={KEY}",
            server.url()
        ))
        .header("x-goog-api-key", KEY)
        .json(&json!({"contents": [{"role": "user", "parts": [{"text": "x"}]}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

#[tokio::test]
async fn embeds_a_batch() {
    let server = server().await;
    let p = provider(&server);
    let r = p
        .embed(
            &EmbedRequest::new(vec!["alpha".into(), "beta gamma".into()]).with_model("embed-test"),
        )
        .await
        .unwrap();
    assert_eq!(
        r.vectors,
        vec![
            mock_embedding("alpha", 12),
            mock_embedding("beta gamma", 12)
        ]
    );
    assert_eq!(
        server.requests()[0].path,
        "/v1beta/models/embed-test:batchEmbedContents"
    );
}

#[tokio::test]
async fn maps_each_failure_status() {
    let server = server().await;
    let p = provider(&server);
    let e = p.complete(&ask("rate-limited", "x")).await.unwrap_err();
    assert_clean_error(&e);
    assert_eq!(e.retry_after(), Some(Duration::from_secs(7)), "{e:?}");
    let e = p.complete(&ask("unauthorized", "x")).await.unwrap_err();
    assert_clean_error(&e);
    assert!(matches!(e, ProviderError::Authentication { .. }), "{e:?}");
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
    let e = p.complete(&ask("bad/model?key=x", "x")).await.unwrap_err();
    assert_clean_error(&e);
    assert!(matches!(e, ProviderError::InvalidRequest { .. }), "{e:?}");
    // An invalid key: Gemini answers 400 API_KEY_INVALID.
    let spec = ProviderSpec::new("google")
        .with_api_key("AIzaWRONG-SECRETWRONG-123456")
        .with_base_url(server.url())
        .with_egress(local_egress())
        .with_retry(RetryPolicy::none());
    let p = ProviderRegistry::with_builtins().build(&spec).unwrap();
    let e = p.complete(&ask("gemini-test", "x")).await.unwrap_err();
    assert_clean_error(&e);
    assert!(matches!(e, ProviderError::Authentication { .. }), "{e:?}");
    assert!(!format!("{e:?}{e}{p:?}").contains("SECRETWRONG"));
}

#[tokio::test]
async fn stream_faults() {
    let server = server().await;
    let p = provider(&server);
    for model in ["cut", "abort", "error-mid"] {
        let (text, end) = drain(p.stream(&ask(model, "a b c d")).await.unwrap()).await;
        match end {
            Err(ProviderError::StreamInterrupted { partial, cause, .. }) => {
                assert_eq!(partial, text);
                assert!(!partial.is_empty());
                assert_eq!(cause.is_none(), model == "cut", "{model}: {cause:?}");
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
    let (_, end) = drain(p.stream(&ask("hang-mid", "a b c d")).await.unwrap()).await;
    assert!(end.unwrap_err().is_timeout());
}

#[tokio::test]
async fn conformance_gemini() {
    let server = server().await;
    run_provider_conformance_with(
        provider(&server),
        ConformanceConfig {
            model: "gemini-test".into(),
            embedding_model: Some("embed-test".into()),
            secret: Some(KEY.into()),
            structured_output: true,
        },
    )
    .await
    .assert_ok();
    server.assert_no_key_in_urls();
}

/// The calls to answer with: functions declared, mode not NONE, and the
/// last turn holds no function responses.
fn calls_for(body: &Value, last_user: &str) -> Option<(Vec<FakeCall>, bool)> {
    let tools: Vec<(String, Value)> = body["tools"]
        .as_array()?
        .iter()
        .flat_map(|t| {
            t["functionDeclarations"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .map(|d| {
            (
                d["name"].as_str().unwrap_or_default().to_owned(),
                d.get("parametersJsonSchema")
                    .or(d.get("parameters"))
                    .cloned()
                    .unwrap_or(Value::Null),
            )
        })
        .collect();
    let cfg = &body["toolConfig"]["functionCallingConfig"];
    let responses_last = body["contents"]
        .as_array()
        .and_then(|c| c.last())
        .and_then(|c| c["parts"].as_array())
        .is_some_and(|p| p.iter().any(|p| p.get("functionResponse").is_some()));
    if tools.is_empty() || cfg["mode"] == "NONE" || responses_last {
        return None;
    }
    let allowed = cfg["allowedFunctionNames"]
        .as_array()
        .and_then(|a| a.first())
        .and_then(Value::as_str);
    let preamble = cfg["mode"] != "ANY";
    // Gemini has no parallel switch: it calls what it calls.
    Some((fake_calls(&tools, allowed, true, last_user, ""), preamble))
}

fn tool_reply(
    model: &str,
    body: &Value,
    calls: Vec<FakeCall>,
    preamble: bool,
    stream: bool,
) -> hyper::Response<Body> {
    let version = format!("{model}-001");
    let prompt: u32 = body["contents"].as_array().map_or(0, |c| c.len() as u32) * 4;
    let args: String = calls.iter().map(|c| c.args.to_string()).collect();
    let completion = words(&args) + if preamble { words(PREAMBLE) } else { 0 };
    let usage = json!({"promptTokenCount": prompt, "candidatesTokenCount": completion, "totalTokenCount": prompt + completion});
    // Older API versions send no call ids: the provider makes them.
    let call_parts: Vec<Value> = calls
        .iter()
        .map(|c| json!({"functionCall": {"name": c.name, "args": c.args}}))
        .collect();
    if !stream {
        let mut parts = Vec::new();
        if preamble {
            parts.push(json!({"text": PREAMBLE}));
        }
        parts.extend(call_parts);
        return json(
            200,
            json!({
                "candidates": [{"content": {"parts": parts, "role": "model"}, "finishReason": "STOP", "index": 0}],
                "usageMetadata": usage, "modelVersion": version
            }),
        );
    }
    let mut chunks = Vec::new();
    if preamble {
        chunks.push(chunk(PREAMBLE, None, None, &version));
    }
    let n = call_parts.len();
    for (i, p) in call_parts.into_iter().enumerate() {
        let mut cand = json!({"content": {"parts": [p], "role": "model"}, "index": 0});
        let mut v = json!({"modelVersion": version, "responseId": "fake"});
        if i + 1 == n {
            cand["finishReason"] = json!("STOP");
            v["usageMetadata"] = usage.clone();
        }
        v["candidates"] = json!([cand]);
        chunks.push(format!("data: {v}\r\n\r\n"));
    }
    sse(chunks, Duration::ZERO, End::Clean)
}

#[tokio::test]
async fn tools_round_trip_as_function_calls_and_responses() {
    let server = server().await;
    let p = provider(&server);
    check_two_tool_round_trip(&*p, "gemini-test").await;
    let reqs = server.requests();
    assert_eq!(
        reqs[0].json()["tools"][0]["functionDeclarations"][1],
        json!({"name": "get_time", "parametersJsonSchema": {"type": "object", "properties": {"zone": {"type": "string"}}}})
    );
    let last = reqs.last().unwrap().json();
    let contents = last["contents"].as_array().unwrap();
    assert_eq!(
        contents.len(),
        3,
        "both responses in one turn: {contents:?}"
    );
    assert_eq!(contents[1]["role"], "model");
    assert_eq!(
        contents[1]["parts"][1]["functionCall"]["name"],
        "get_weather"
    );
    let responses = contents[2]["parts"].as_array().unwrap();
    assert_eq!(
        responses[0]["functionResponse"]["name"], "get_weather",
        "the response names the function of its call"
    );
    assert_eq!(
        responses[0]["functionResponse"]["response"],
        json!({"result": {"forecast": "sunny"}})
    );
    assert_eq!(responses[1]["functionResponse"]["name"], "get_time");
    assert_eq!(
        responses[1]["functionResponse"]["response"],
        json!({"result": "12:00"})
    );
}

#[tokio::test]
async fn images_are_inline_data_and_json_schema_is_response_json_schema() {
    use chatcore::provider::{ImagePart, ResponseFormat};
    let server = server().await;
    let mut req = ChatRequest::new(vec![
        ChatMessage::user("describe").with_image(ImagePart::url(PNG_DATA_URL)),
    ])
    .with_model("gemini-test");
    req.response_format = Some(ResponseFormat::JsonObject);
    let r = provider(&server).complete(&req).await.unwrap();
    assert!(
        serde_json::from_str::<Value>(&r.content)
            .unwrap()
            .is_object()
    );
    let body = server.requests()[0].json();
    let png = PNG_DATA_URL.split_once(',').unwrap().1;
    assert_eq!(
        body["contents"][0]["parts"][1],
        json!({"inlineData": {"mimeType": "image/png", "data": png}})
    );
    assert_eq!(
        body["generationConfig"]["responseMimeType"],
        "application/json"
    );
}
