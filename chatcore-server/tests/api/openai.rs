//! The OpenAI-compatible API (`/v1/chat/completions`, `/v1/models`) end to
//! end: shapes as OpenAI's SDKs read them, the stored turn, tools, errors.

use chatcore::domain::*;
use chatcore::store::*;
use chatcore::testkit::fixtures::SystemWrites;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};

use crate::fake_openai::FakeOpenAi;
use crate::helpers::*;

async fn messages(app: &TestApp, t: TenantId, c: &str) -> Vec<Message> {
    let id: ConversationId = c.parse().unwrap();
    app.store()
        .list_messages(t, id, PageRequest::first(100))
        .await
        .unwrap()
        .data
}

async fn post(
    app: &TestApp,
    key: Option<&SecretString>,
    conversation: Option<&str>,
    body: Value,
) -> reqwest::Response {
    let mut r = app.client.post(app.url("/v1/chat/completions")).json(&body);
    if let Some(k) = key {
        r = r.bearer_auth(k.expose_secret());
    }
    if let Some(c) = conversation {
        r = r.header("x-chatcore-conversation-id", c);
    }
    r.send().await.unwrap()
}

fn conversation_of(r: &reqwest::Response) -> String {
    r.headers()
        .get("x-chatcore-conversation-id")
        .expect("the reply names the conversation")
        .to_str()
        .unwrap()
        .to_string()
}

/// The `data:` payloads of an OpenAI stream, in order.
fn data_lines(body: &str) -> Vec<String> {
    body.lines()
        .filter_map(|l| l.strip_prefix("data: ").or_else(|| l.strip_prefix("data:")))
        .map(|d| d.trim().to_string())
        .collect()
}

#[tokio::test]
async fn a_completion_in_openai_shape_is_one_stored_turn_after_the_bots_prompt() {
    let (fake, base) = FakeOpenAi::start().await;
    let app = spawn_app().await;
    let t = app.tenant("oa", "openai", "gpt-test", Some(base)).await;
    let r = post(
        &app,
        Some(&t.key),
        None,
        json!({"model": t.bot.slug, "max_tokens": 64, "user": "end-user-7", "messages": [
            {"role": "system", "content": "Answer in English."},
            {"role": "user", "content": "hello there"}
        ]}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let conv = conversation_of(&r);
    let b: Value = r.json().await.unwrap();
    assert_eq!(b["object"], "chat.completion");
    assert!(b["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert!(b["created"].as_i64().unwrap() > 1_700_000_000);
    assert_eq!(b["model"], t.bot.slug);
    assert_eq!(b["choices"][0]["index"], 0);
    assert_eq!(b["choices"][0]["message"]["role"], "assistant");
    assert_eq!(
        b["choices"][0]["message"]["content"],
        "fake says: hello there"
    );
    assert_eq!(b["choices"][0]["finish_reason"], "stop");
    let u = &b["usage"];
    assert_eq!(
        (
            &u["prompt_tokens"],
            &u["completion_tokens"],
            &u["total_tokens"]
        ),
        (&json!(42), &json!(7), &json!(49))
    );
    assert_eq!(u["prompt_tokens_details"]["cached_tokens"], 0);
    // chatcore's extension: the cost (gpt-test has no list price).
    assert_eq!(
        (&u["cost_micros"], &u["cost_priced"]),
        (&json!(0), &json!(false))
    );

    // Upstream: the bot's system prompt first, then the client's messages;
    // the client's max_tokens under the bot's cap (100); the end user.
    let (_, sent) = fake.requests().pop().unwrap();
    let roles: Vec<&str> = sent["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["system", "system", "user"]);
    assert_eq!(sent["messages"][0]["content"], "You are a test bot.");
    assert_eq!(sent["messages"][1]["content"], "Answer in English.");
    assert_eq!(sent["max_completion_tokens"], 64, "{sent}");
    assert_eq!(sent["user"], "end-user-7");

    // Stored: the user message and the reply, under the end user.
    let msgs = messages(&app, t.tenant.id, &conv).await;
    assert_eq!(msgs.len(), 2);
    assert_eq!(
        (msgs[0].role, msgs[0].content.as_str()),
        (Role::User, "hello there")
    );
    assert_eq!(msgs[1].role, Role::Assistant);
    assert_eq!(msgs[1].status, MessageStatus::Complete);
    assert_eq!(msgs[1].content, "fake says: hello there");
    assert_eq!(msgs[1].usage.unwrap().total_tokens, 49);
    let c = app
        .store()
        .get_conversation(t.tenant.id, conv.parse().unwrap())
        .await
        .unwrap();
    assert_eq!(c.end_user_id.as_deref(), Some("end-user-7"));
    assert_eq!(c.bot_id, t.bot.id);
    app.stop().await;
}

#[tokio::test]
async fn the_conversation_header_adds_each_turn_to_the_same_conversation() {
    let app = spawn_app().await;
    let t = app.tenant("oa2", "mock", "echo", None).await;
    let r = post(
        &app,
        Some(&t.key),
        None,
        json!({"model": t.bot.slug, "messages": [{"role": "user", "content": "one"}]}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let conv = conversation_of(&r);
    let first: Value = r.json().await.unwrap();
    let answer = first["choices"][0]["message"]["content"].clone();
    let r = post(
        &app,
        Some(&t.key),
        Some(&conv),
        json!({"model": t.bot.id.to_string(), "messages": [
            {"role": "user", "content": "one"},
            {"role": "assistant", "content": answer},
            {"role": "user", "content": "two"}
        ]}),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(conversation_of(&r), conv);
    let msgs = messages(&app, t.tenant.id, &conv).await;
    let seen: Vec<(Role, &str)> = msgs.iter().map(|m| (m.role, m.content.as_str())).collect();
    assert_eq!(
        seen,
        [
            (Role::User, "one"),
            (Role::Assistant, "one"),
            (Role::User, "two"),
            (Role::Assistant, "two")
        ]
    );

    // Another tenant's conversation id is not found, and nothing is stored.
    let other = app.tenant("oa2b", "mock", "echo", None).await;
    let r = post(
        &app,
        Some(&other.key),
        Some(&conv),
        json!({"model": other.bot.slug, "messages": [{"role": "user", "content": "x"}]}),
    )
    .await;
    assert_eq!(r.status(), 404);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["type"], "not_found_error");
    assert_eq!(messages(&app, t.tenant.id, &conv).await.len(), 4);
    let r = post(
        &app,
        Some(&t.key),
        Some("not-an-id"),
        json!({"model": t.bot.slug, "messages": [{"role": "user", "content": "x"}]}),
    )
    .await;
    assert_eq!(r.status(), 400);
    app.stop().await;
}

#[tokio::test]
async fn a_stream_has_openai_chunks_usage_last_and_done() {
    let app = spawn_app().await;
    let t = app.tenant("oa3", "mock", "echo", None).await;
    let r = post(
        &app,
        Some(&t.key),
        None,
        json!({"model": t.bot.slug, "stream": true, "stream_options": {"include_usage": true},
               "messages": [{"role": "user", "content": "stream these words please"}]}),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    assert_eq!(r.headers()["x-accel-buffering"], "no");
    let conv = conversation_of(&r);
    let body = r.text().await.unwrap();
    let data = data_lines(&body);
    assert_eq!(data.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let id = chunks[0]["id"].clone();
    assert!(chunks.iter().all(|c| c["id"] == id));
    assert!(
        chunks
            .iter()
            .all(|c| c["object"] == "chat.completion.chunk")
    );
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let (usage, rest) = chunks.split_last().unwrap();
    assert_eq!(usage["choices"], json!([]));
    assert!(usage["usage"]["total_tokens"].as_u64().unwrap() > 0);
    assert!(
        rest.iter()
            .all(|c| c["usage"].is_null() && c.get("usage").is_some())
    );
    let text: String = rest
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "stream these words please");
    assert_eq!(rest.last().unwrap()["choices"][0]["finish_reason"], "stop");
    assert!(
        rest[..rest.len() - 1]
            .iter()
            .all(|c| c["choices"][0]["finish_reason"].is_null())
    );
    let msgs = eventually(|| async {
        let m = messages(&app, t.tenant.id, &conv).await;
        (m.len() == 2 && m[1].status == MessageStatus::Complete).then_some(m)
    })
    .await;
    assert_eq!(msgs[1].content, "stream these words please");
    assert_eq!(
        msgs[1].usage.unwrap().total_tokens as u64,
        usage["usage"]["total_tokens"].as_u64().unwrap()
    );

    // Without include_usage: no usage key and no usage chunk.
    let r = post(
        &app,
        Some(&t.key),
        None,
        json!({"model": t.bot.slug, "stream": true,
               "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    let data = data_lines(&r.text().await.unwrap());
    for d in &data[..data.len() - 1] {
        let c: Value = serde_json::from_str(d).unwrap();
        assert!(c.get("usage").is_none(), "{c}");
        assert_eq!(c["choices"].as_array().unwrap().len(), 1);
    }
    app.stop().await;
}

#[tokio::test]
async fn tools_round_trip_and_the_stored_history_reads_true() {
    let app = spawn_app().await;
    let t = app.tenant("oa4", "mock", "any", None).await;
    let tools = json!([
        {"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
          "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}},
        {"type": "function", "function": {"name": "get_time",
          "parameters": {"type": "object", "properties": {"zone": {"type": "string"}}}}}
    ]);
    let ask = json!({"role": "user", "content": "Weather and time in Paris?"});
    let r = post(
        &app,
        Some(&t.key),
        None,
        json!({"model": t.bot.slug, "tools": tools, "messages": [ask]}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let conv = conversation_of(&r);
    let b: Value = r.json().await.unwrap();
    assert_eq!(b["choices"][0]["finish_reason"], "tool_calls");
    let msg = &b["choices"][0]["message"];
    assert!(msg["content"].is_null());
    let calls = msg["tool_calls"].as_array().unwrap();
    assert_eq!(calls.len(), 2, "parallel calls: {msg}");
    assert_eq!(calls[0]["type"], "function");
    assert_eq!(calls[0]["function"]["name"], "get_weather");
    let args: Value =
        serde_json::from_str(calls[0]["function"]["arguments"].as_str().unwrap()).unwrap();
    assert!(args["city"].is_string());
    let ids: Vec<String> = calls
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_string())
        .collect();
    assert_ne!(ids[0], ids[1]);

    // The results go back as tool messages; the model answers from them.
    let r = post(
        &app,
        Some(&t.key),
        Some(&conv),
        json!({"model": t.bot.slug, "tools": tools, "messages": [
            ask, msg,
            {"role": "tool", "tool_call_id": ids[0], "content": "18C and sunny"},
            {"role": "tool", "tool_call_id": ids[1], "content": "14:05"}
        ]}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let b: Value = r.json().await.unwrap();
    let answer = b["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(
        answer.contains("18C and sunny") && answer.contains("14:05"),
        "{answer}"
    );
    assert_eq!(b["choices"][0]["finish_reason"], "stop");

    let msgs = messages(&app, t.tenant.id, &conv).await;
    let roles: Vec<Role> = msgs.iter().map(|m| m.role).collect();
    assert_eq!(
        roles,
        [
            Role::User,
            Role::Assistant,
            Role::Tool,
            Role::Tool,
            Role::Assistant
        ]
    );
    let stored_calls = &msgs[1].tool_calls;
    assert_eq!(stored_calls.len(), 2);
    assert_eq!(stored_calls[0].id, ids[0]);
    assert_eq!(stored_calls[0].name, "get_weather");
    assert_eq!(msgs[1].finish_reason.as_deref(), Some("tool_calls"));
    assert!(msgs[1].usage.unwrap().total_tokens > 0);
    assert_eq!(msgs[2].tool_call_id.as_deref(), Some(ids[0].as_str()));
    assert_eq!(msgs[2].content, "18C and sunny");
    assert_eq!(msgs[3].tool_call_id.as_deref(), Some(ids[1].as_str()));
    assert_eq!(msgs[4].content, answer);

    // The conversation API shows them.
    let r = app
        .client
        .get(app.url(&format!("/v1/conversations/{conv}/messages")))
        .bearer_auth(t.key.expose_secret())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let page: Value = r.json().await.unwrap();
    assert_eq!(page["data"][1]["tool_calls"][0]["name"], "get_weather");
    assert_eq!(page["data"][2]["role"], "tool");
    assert_eq!(page["data"][2]["tool_call_id"], ids[0].as_str());
    app.stop().await;
}

#[tokio::test]
async fn streamed_tool_calls_come_as_openai_deltas_by_index() {
    let app = spawn_app().await;
    let t = app.tenant("oa5", "mock", "any", None).await;
    let r = post(
        &app,
        Some(&t.key),
        None,
        json!({"model": t.bot.slug, "stream": true, "tool_choice": {"type": "function", "function": {"name": "lookup"}},
               "tools": [{"type": "function", "function": {"name": "lookup",
                 "parameters": {"type": "object", "properties": {"query": {"type": "string"}, "limit": {"type": "integer"}}}}}],
               "messages": [{"role": "user", "content": "find chatcore"}]}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let conv = conversation_of(&r);
    let data = data_lines(&r.text().await.unwrap());
    assert_eq!(data.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let deltas: Vec<&Value> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["tool_calls"].as_array())
        .flatten()
        .collect();
    assert!(deltas.len() >= 2, "arguments in pieces: {deltas:?}");
    assert_eq!(deltas[0]["index"], 0);
    assert!(deltas[0]["id"].is_string());
    assert_eq!(deltas[0]["type"], "function");
    assert_eq!(deltas[0]["function"]["name"], "lookup");
    assert!(deltas[1..].iter().all(|d| d.get("id").is_none()));
    let args: String = deltas
        .iter()
        .map(|d| d["function"]["arguments"].as_str().unwrap())
        .collect();
    let args: Value = serde_json::from_str(&args).unwrap();
    assert!(
        args["query"].is_string() && args["limit"].is_i64(),
        "{args}"
    );
    assert_eq!(
        chunks.last().unwrap()["choices"][0]["finish_reason"],
        "tool_calls"
    );
    let msgs = eventually(|| async {
        let m = messages(&app, t.tenant.id, &conv).await;
        (m.len() == 2 && m[1].status == MessageStatus::Complete).then_some(m)
    })
    .await;
    assert_eq!(msgs[1].tool_calls.len(), 1);
    assert_eq!(msgs[1].tool_calls[0].name, "lookup");
    assert_eq!(
        serde_json::from_str::<Value>(&msgs[1].tool_calls[0].arguments).unwrap(),
        args
    );
    app.stop().await;
}

#[tokio::test]
async fn structured_output_answers_json_of_the_schema() {
    let app = spawn_app().await;
    let t = app.tenant("oa6", "mock", "any", None).await;
    let r = post(
        &app,
        Some(&t.key),
        None,
        json!({"model": t.bot.slug, "messages": [{"role": "user", "content": "a city"}],
               "response_format": {"type": "json_schema", "json_schema": {"name": "city", "strict": true,
                 "schema": {"type": "object", "properties": {"name": {"type": "string"}, "population": {"type": "integer"}},
                            "required": ["name", "population"]}}}}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let b: Value = r.json().await.unwrap();
    let v: Value =
        serde_json::from_str(b["choices"][0]["message"]["content"].as_str().unwrap()).unwrap();
    assert!(v["name"].is_string() && v["population"].is_i64(), "{v}");
    app.stop().await;
}

#[tokio::test]
async fn errors_have_openai_shape_and_the_statuses_sdks_map() {
    let app = spawn_app().await;
    let t = app.tenant("oa7", "mock", "echo", None).await;
    let ok = json!({"model": t.bot.slug, "messages": [{"role": "user", "content": "hi"}]});
    let check = |status: u16, kind: &'static str| {
        move |r: (u16, Value)| {
            assert_eq!(r.0, status, "{}", r.1);
            let e = &r.1["error"];
            assert_eq!(e["type"], kind, "{e}");
            assert!(e["message"].is_string() && e["code"].is_string());
            assert!(e.get("param").is_some(), "param is always there: {e}");
            e.clone()
        }
    };
    async fn call(app: &TestApp, key: Option<&SecretString>, body: Value) -> (u16, Value) {
        let r = post(app, key, None, body).await;
        (r.status().as_u16(), r.json().await.unwrap())
    }
    check(401, "authentication_error")(call(&app, None, ok.clone()).await);
    let bad = SecretString::from("cc_0000000000000000_nope".to_string());
    check(401, "authentication_error")(call(&app, Some(&bad), ok.clone()).await);
    let (read_key, _) = app
        .key(t.tenant.id, vec![Permission::Read], vec![], None)
        .await;
    check(403, "permission_error")(call(&app, Some(&read_key), ok.clone()).await);
    check(404, "not_found_error")(
        call(
            &app,
            Some(&t.key),
            json!({"model": "no-such-bot", "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await,
    );
    let e = check(400, "invalid_request_error")(
        call(
            &app,
            Some(&t.key),
            json!({"model": t.bot.slug, "n": 2, "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await,
    );
    assert_eq!(e["param"], "n");
    let e = check(400, "invalid_request_error")(
        call(
            &app,
            Some(&t.key),
            json!({"model": t.bot.slug, "temperature": 7, "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await,
    );
    assert_eq!(e["param"], "temperature");
    let e = check(400, "invalid_request_error")(
        call(
            &app,
            Some(&t.key),
            json!({"model": t.bot.slug, "messages": [{"role": "wizard", "content": "hi"}]}),
        )
        .await,
    );
    assert_eq!(e["param"], "messages[0].role");
    // Unknown fields are ignored, as OpenAI's clients expect.
    let (s, _) = call(
        &app,
        Some(&t.key),
        json!({"model": t.bot.slug, "logprobs": false, "metadata": {"a": "b"}, "store": false,
               "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(s, 200);
    // A NUL byte, trailing garbage, not JSON: 400 (never a 500).
    let r = app
        .client
        .post(app.url("/v1/chat/completions"))
        .bearer_auth(t.key.expose_secret())
        .header("content-type", "application/json")
        .body(r#"{"model": "x\u0000", "messages": []}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = app
        .client
        .post(app.url("/v1/chat/completions"))
        .bearer_auth(t.key.expose_secret())
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["type"], "invalid_request_error");

    // 429 with Retry-After once the key's limit is spent.
    let (limited, _) = app
        .key(t.tenant.id, vec![Permission::Chat], vec![], Some(1))
        .await;
    assert_eq!(call(&app, Some(&limited), ok.clone()).await.0, 200);
    let r = post(&app, Some(&limited), None, ok.clone()).await;
    assert_eq!(r.status(), 429);
    let after: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&after));
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["type"], "rate_limit_error");

    // A provider failure is a 5xx or 429 in the same shape, with nothing of
    // the upstream in it.
    let broken = app.tenant("oa7b", "mock", "error-500", None).await;
    let (s, e) = call(
        &app,
        Some(&broken.key),
        json!({"model": broken.bot.slug, "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(s, 502);
    assert_eq!(e["error"]["type"], "server_error");
    app.stop().await;
}

#[tokio::test]
async fn a_failure_mid_stream_is_an_error_event_then_done() {
    let app = spawn_app().await;
    let t = app.tenant("oa8", "mock", "stream-then-error", None).await;
    let r = post(
        &app,
        Some(&t.key),
        None,
        json!({"model": t.bot.slug, "stream": true, "messages": [{"role": "user", "content": "go"}]}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let conv = conversation_of(&r);
    let data = data_lines(&r.text().await.unwrap());
    assert_eq!(data.last().unwrap(), "[DONE]");
    let err: Value = serde_json::from_str(&data[data.len() - 2]).unwrap();
    assert_eq!(err["error"]["type"], "server_error");
    assert!(err["error"]["message"].is_string());
    let text: String = data[..data.len() - 2]
        .iter()
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|c| {
            c["choices"][0]["delta"]["content"]
                .as_str()
                .map(String::from)
        })
        .collect();
    assert!(!text.is_empty());
    let msgs = eventually(|| async {
        let m = messages(&app, t.tenant.id, &conv).await;
        (m.len() == 2 && m[1].status != MessageStatus::Pending).then_some(m)
    })
    .await;
    assert_eq!(msgs[1].status, MessageStatus::Incomplete);
    assert_eq!(msgs[1].content, text);
    assert!(
        msgs[1].usage.unwrap().total_tokens > 0,
        "cut streams are estimated"
    );
    app.stop().await;
}

#[tokio::test]
async fn images_go_to_providers_that_read_them_and_are_refused_elsewhere() {
    let (fake, base) = FakeOpenAi::start().await;
    let app = spawn_app().await;
    let image = json!({"role": "user", "content": [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
    ]});
    let openai = app
        .tenant("oa9", "openai", "gpt-test", Some(base.clone()))
        .await;
    let r = post(
        &app,
        Some(&openai.key),
        None,
        json!({"model": openai.bot.slug, "messages": [image]}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let (_, sent) = fake.requests().pop().unwrap();
    let parts = sent["messages"][1]["content"].as_array().unwrap();
    assert!(
        parts
            .iter()
            .any(|p| p["image_url"]["url"] == "data:image/png;base64,iVBORw0KGgo=")
    );
    let compat = app
        .tenant("oa9b", "openai_compatible", "local-model", Some(base))
        .await;
    let before = fake.requests().len();
    let r = post(
        &app,
        Some(&compat.key),
        None,
        json!({"model": compat.bot.slug, "messages": [{"role": "user", "content": "hi"}, image]}),
    )
    .await;
    assert_eq!(r.status(), 400);
    let e: Value = r.json().await.unwrap();
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("messages[1].content"),
        "{e}"
    );
    assert_eq!(fake.requests().len(), before, "nothing was sent upstream");
    app.stop().await;
}

#[tokio::test]
async fn models_are_the_bots_the_key_may_use() {
    let app = spawn_app().await;
    let t = app.tenant("oa10", "mock", "echo", None).await;
    let other = app.tenant("oa10b", "mock", "echo", None).await;
    let second = app
        .store()
        .create_bot(
            t.tenant.id,
            NewBot {
                name: "Second".into(),
                slug: "second".into(),
                system_prompt: String::new(),
                provider_id: t.bot.provider_id,
                model: Some("echo".into()),
                fallback_provider_id: None,
                temperature: None,
                max_tokens: None,
                context_tokens: 1000,
                is_public: false,
                dataset_ids: vec![],
            },
        )
        .await
        .unwrap();
    let get = |path: String, key: SecretString| {
        let req = app
            .client
            .get(app.url(&path))
            .bearer_auth(key.expose_secret());
        async move {
            let r = req.send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let (s, list) = get("/v1/models".into(), t.key.clone()).await;
    assert_eq!(s, 200);
    assert_eq!(list["object"], "list");
    let ids: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [t.bot.slug.as_str(), "second"]);
    assert_eq!(list["data"][0]["object"], "model");
    assert_eq!(list["data"][0]["owned_by"], t.tenant.slug);

    // A key restricted to one bot sees that one; the other is not found.
    let (narrow, _) = app
        .key(t.tenant.id, vec![Permission::Chat], vec![second.id], None)
        .await;
    let (_, list) = get("/v1/models".into(), narrow.clone()).await;
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
    assert_eq!(list["data"][0]["id"], "second");
    let (s, m) = get(format!("/v1/models/{}", second.id), narrow.clone()).await;
    assert_eq!((s, m["id"].as_str()), (200, Some("second")));
    let (s, e) = get(format!("/v1/models/{}", t.bot.slug), narrow).await;
    assert_eq!(s, 404);
    assert_eq!(e["error"]["type"], "not_found_error");

    // Another tenant's bot is not a model of this key.
    let (s, _) = get(format!("/v1/models/{}", other.bot.slug), t.key.clone()).await;
    assert_eq!(s, 404);
    // A read key may not chat, so it has no models.
    let (read, _) = app
        .key(t.tenant.id, vec![Permission::Read], vec![], None)
        .await;
    let (s, e) = get("/v1/models".into(), read).await;
    assert_eq!(s, 403);
    assert_eq!(e["error"]["type"], "permission_error");
    app.stop().await;
}
