//! The chat endpoints end to end.

use chatcore::domain::*;
use chatcore::store::*;
use chatcore::testkit::fixtures::SystemWrites;
use futures::StreamExt;
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

#[tokio::test]
async fn public_chat_answers_and_stores_both_messages_with_usage() {
    let app = spawn_app().await;
    let t = app.tenant("pub", "mock", "echo", None).await;
    let r = app
        .post_json(
            "/v1/chat/public",
            None,
            json!({"bot_id": t.bot.slug, "message": "hello world"}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["content"], "hello world");
    assert_eq!(body["bot_id"], t.bot.id.to_string());
    assert_eq!(body["provider"], "mock");
    assert_eq!(body["model"], "echo");
    assert_eq!(body["finish_reason"], "stop");
    assert!(body["usage"]["total_tokens"].as_u64().unwrap() > 0);
    assert!(body["response_time_ms"].is_u64());
    assert!(body["sources"].as_array().unwrap().is_empty());

    let msgs = messages(&app, t.tenant.id, body["conversation_id"].as_str().unwrap()).await;
    assert_eq!(msgs.len(), 2);
    assert_eq!(
        (msgs[0].role, msgs[0].content.as_str()),
        (Role::User, "hello world")
    );
    let a = &msgs[1];
    assert_eq!(a.id.to_string(), body["message_id"].as_str().unwrap());
    assert_eq!(
        (a.role, a.status, a.content.as_str()),
        (Role::Assistant, MessageStatus::Complete, "hello world")
    );
    let u = a.usage.unwrap();
    assert_eq!(
        u.total_tokens as u64,
        body["usage"]["total_tokens"].as_u64().unwrap()
    );
    assert!(a.response_time_ms.is_some() && a.time_to_first_token_ms.is_some());
    assert_eq!(a.provider.as_deref(), Some("mock"));
    assert_eq!(a.finish_reason.as_deref(), Some("stop"));
    let conv = app
        .store()
        .get_conversation(t.tenant.id, a.conversation_id)
        .await
        .unwrap();
    assert_eq!(conv.channel, Channel::Public);
    app.stop().await;
}

#[tokio::test]
async fn keyed_chat_through_the_openai_wire_format_carries_history() {
    let (fake, base) = FakeOpenAi::start().await;
    let app = spawn_app().await;
    let t = app
        .tenant("hist", "openai", "gpt-4o-mini", Some(base))
        .await;
    let r = app
        .post_json(
            "/v1/chat",
            Some(&t.key),
            json!({"bot_id": t.bot.id.to_string(), "message": "my name is Ada", "user_id": "u1"}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let first: Value = r.json().await.unwrap();
    assert_eq!(first["content"], "fake says: my name is Ada");
    assert_eq!(
        first["usage"],
        json!({"prompt_tokens": 42, "completion_tokens": 7, "total_tokens": 49, "cached_tokens": 0, "estimated": false})
    );
    let conv = first["conversation_id"].as_str().unwrap();
    let r = app
        .post_json(
            "/v1/chat",
            Some(&t.key),
            json!({"bot_id": t.bot.slug, "message": "what is my name?", "conversation_id": conv, "user_id": "u1"}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let second: Value = r.json().await.unwrap();
    assert_eq!(second["conversation_id"], conv);

    let reqs = fake.requests();
    assert_eq!(reqs.len(), 2);
    let (auth, body) = &reqs[1];
    assert_eq!(
        auth,
        &format!("Bearer {PROVIDER_SECRET}"),
        "the decrypted provider key is sent"
    );
    let roles: Vec<&str> = body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["system", "user", "assistant", "user"]);
    assert_eq!(body["messages"][1]["content"], "my name is Ada");
    assert_eq!(body["messages"][2]["content"], "fake says: my name is Ada");
    assert_eq!(body["messages"][3]["content"], "what is my name?");
    assert_eq!(body["model"], "gpt-4o-mini");
    assert_eq!(body["user"], "u1");
    let msgs = messages(&app, t.tenant.id, conv).await;
    assert_eq!(msgs.len(), 4);
    assert_eq!(msgs[3].usage.unwrap().prompt_tokens, 42);
    assert_eq!(msgs[0].api_key_id, Some(t.key_id));
    app.stop().await;
}

#[tokio::test]
async fn streaming_on_both_endpoints_sends_start_deltas_done_and_stores_the_text() {
    let (_fake, base) = FakeOpenAi::start().await;
    let app = spawn_app().await;
    let t = app
        .tenant("stream", "openai", "gpt-4o-mini", Some(base))
        .await;
    for (path, key) in [("/v1/chat/public", None), ("/v1/chat", Some(&t.key))] {
        let r = app
            .post_json(
                path,
                key,
                json!({"bot_id": t.bot.slug, "message": "tell me more", "stream": true}),
            )
            .await;
        assert_eq!(r.status(), 200, "{path}");
        assert_eq!(r.headers()["content-type"], "text/event-stream");
        let events = parse_sse(&r.text().await.unwrap());
        assert_eq!(events[0].0, "start");
        let conv = events[0].1["conversation_id"].as_str().unwrap().to_string();
        let text: String = events
            .iter()
            .filter(|(e, _)| e == "delta")
            .map(|(_, d)| d["content"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(text, "fake says: tell me more");
        let (last, done) = events.last().unwrap();
        assert_eq!(last, "done");
        // The usage chunk came after the finish reason, with empty choices.
        assert_eq!(done["usage"]["total_tokens"], 49);
        assert_eq!(done["finish_reason"], "stop");
        assert!(done["time_to_first_token_ms"].is_u64());
        let msgs = messages(&app, t.tenant.id, &conv).await;
        assert_eq!(msgs[1].content, text);
        assert_eq!(msgs[1].status, MessageStatus::Complete);
        assert_eq!(msgs[1].usage.unwrap().total_tokens, 49);
        assert_eq!(
            msgs[1].id.to_string(),
            events[0].1["message_id"].as_str().unwrap()
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn wrong_absent_or_revoked_keys_are_401_and_audited() {
    let app = spawn_app().await;
    let t = app.tenant("auth", "mock", "echo", None).await;
    let body = json!({"bot_id": t.bot.slug, "message": "hi"});
    let r = app.post_json("/v1/chat", None, body.clone()).await;
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "unauthorized"
    );
    let wrong = SecretString::from(format!(
        "{}x",
        &t.key.expose_secret()[..t.key.expose_secret().len() - 1]
    ));
    assert_eq!(
        app.post_json("/v1/chat", Some(&wrong), body.clone())
            .await
            .status(),
        401
    );
    let junk = SecretString::from("not-a-key".to_string());
    assert_eq!(
        app.post_json("/v1/chat", Some(&junk), body.clone())
            .await
            .status(),
        401
    );
    assert_eq!(
        app.post_json("/v1/chat", Some(&t.key), body.clone())
            .await
            .status(),
        200
    );
    app.store()
        .revoke_api_key(t.tenant.id, t.key_id)
        .await
        .unwrap();
    app.app.chat.invalidate_key(t.key_id);
    assert_eq!(
        app.post_json("/v1/chat", Some(&t.key), body.clone())
            .await
            .status(),
        401
    );
    // A suspended tenant's keys stop working.
    let t2 = app.tenant("susp", "mock", "echo", None).await;
    app.store()
        .update_tenant(
            t2.tenant.id,
            TenantPatch {
                status: Some(TenantStatus::Suspended),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    app.app.chat.invalidate_tenant(t2.tenant.id);
    let r = app
        .post_json(
            "/v1/chat",
            Some(&t2.key),
            json!({"bot_id": t2.bot.slug, "message": "hi"}),
        )
        .await;
    assert_eq!(r.status(), 403);
    app.app.chat.audit().flush().await;
    let failures = app
        .store()
        .list_audit(
            t.tenant.id,
            AuditFilter {
                action: Some("auth.failed".into()),
                ..Default::default()
            },
            PageRequest::first(10),
        )
        .await
        .unwrap();
    assert!(
        failures.data.is_empty(),
        "failures with unknown keys belong to no tenant"
    );
    app.stop().await;
}

#[tokio::test]
async fn another_tenants_bot_or_conversation_is_404_and_a_private_bot_is_not_public() {
    let app = spawn_app().await;
    let a = app.tenant("a", "mock", "echo", None).await;
    let b = app
        .tenant_with(
            "b",
            "mock",
            "echo",
            None,
            |_| {},
            |bot| bot.is_public = false,
        )
        .await;
    // A's key, B's bot (by id and by slug).
    for bot in [b.bot.id.to_string(), b.bot.slug.clone()] {
        let r = app
            .post_json(
                "/v1/chat",
                Some(&a.key),
                json!({"bot_id": bot, "message": "hi"}),
            )
            .await;
        assert_eq!(r.status(), 404);
        assert_eq!(
            r.json::<Value>().await.unwrap()["error"]["code"],
            "not_found"
        );
    }
    // B's conversation through A's bot.
    let r = app
        .post_json(
            "/v1/chat",
            Some(&b.key),
            json!({"bot_id": b.bot.slug, "message": "secret"}),
        )
        .await;
    let conv = r.json::<Value>().await.unwrap()["conversation_id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = app
        .post_json(
            "/v1/chat",
            Some(&a.key),
            json!({"bot_id": a.bot.slug, "message": "hi", "conversation_id": conv}),
        )
        .await;
    assert_eq!(r.status(), 404);
    // B's private bot on the public endpoint.
    for bot in [b.bot.id.to_string(), b.bot.slug.clone()] {
        let r = app
            .post_json(
                "/v1/chat/public",
                None,
                json!({"bot_id": bot, "message": "hi"}),
            )
            .await;
        assert_eq!(r.status(), 404);
    }
    // B's API conversation cannot be continued publicly through a public bot.
    let r = app
        .post_json(
            "/v1/chat/public",
            None,
            json!({"bot_id": a.bot.slug, "message": "hi", "conversation_id": conv}),
        )
        .await;
    assert_eq!(r.status(), 404);
    // Nothing was added to B's conversation.
    assert_eq!(messages(&app, b.tenant.id, &conv).await.len(), 2);
    app.stop().await;
}

#[tokio::test]
async fn guardrails_and_key_restrictions_are_403_before_any_provider_call() {
    let (fake, base) = FakeOpenAi::start().await;
    let app = spawn_app().await;
    let t = app
        .tenant("guard", "openai", "gpt-4o-mini", Some(base))
        .await;
    let s = app.store();
    s.create_scope(
        t.tenant.id,
        NewScope {
            bot_id: t.bot.id,
            kind: "blocked_terms".into(),
            config: json!(["forbidden"]),
        },
    )
    .await
    .unwrap();
    s.create_scope(
        t.tenant.id,
        NewScope {
            bot_id: t.bot.id,
            kind: "max_input_length".into(),
            config: json!(10),
        },
    )
    .await
    .unwrap();
    s.create_scope(
        t.tenant.id,
        NewScope {
            bot_id: t.bot.id,
            kind: "allowed_origins".into(),
            config: json!(["https://ok.example"]),
        },
    )
    .await
    .unwrap();
    app.app.chat.invalidate_tenant(t.tenant.id);
    let r = app
        .post_json(
            "/v1/chat",
            Some(&t.key),
            json!({"bot_id": t.bot.slug, "message": "forbidden"}),
        )
        .await;
    assert_eq!(r.status(), 403);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "guardrail_blocked"
    );
    let r = app
        .post_json(
            "/v1/chat",
            Some(&t.key),
            json!({"bot_id": t.bot.slug, "message": "far too long a message"}),
        )
        .await;
    assert_eq!(r.status(), 403);
    // Public chat from a foreign origin, from none, and from the allowed one.
    let body = json!({"bot_id": t.bot.slug, "message": "hi"});
    let r = app
        .client
        .post(app.url("/v1/chat/public"))
        .header("origin", "https://evil.example")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(
        app.post_json("/v1/chat/public", None, body.clone())
            .await
            .status(),
        403
    );
    let r = app
        .client
        .post(app.url("/v1/chat/public"))
        .header("origin", "https://ok.example")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "https://ok.example"
    );
    // A key restricted to another bot, and a key without chat permission.
    let (other_bot_key, _) = app
        .key(
            t.tenant.id,
            vec![Permission::Chat],
            vec![BotId::new()],
            None,
        )
        .await;
    assert_eq!(
        app.post_json("/v1/chat", Some(&other_bot_key), body.clone())
            .await
            .status(),
        403
    );
    let (read_key, _) = app
        .key(t.tenant.id, vec![Permission::Read], vec![], None)
        .await;
    let r = app
        .post_json("/v1/chat", Some(&read_key), body.clone())
        .await;
    assert_eq!(r.status(), 403);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "forbidden"
    );
    assert_eq!(
        fake.requests().len(),
        1,
        "only the allowed request reached the provider"
    );
    // A feature flag.
    s.update_tenant(
        t.tenant.id,
        TenantPatch {
            features: Some(json!({"chat": false})),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    app.app.chat.invalidate_tenant(t.tenant.id);
    let r = app
        .post_json(
            "/v1/chat",
            Some(&t.key),
            json!({"bot_id": t.bot.slug, "message": "hi"}),
        )
        .await;
    assert_eq!(r.status(), 403);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "feature_disabled"
    );
    app.stop().await;
}

#[tokio::test]
async fn rate_limits_answer_429_with_retry_after_and_store_nothing() {
    let app = spawn_app().await;
    let t = app
        .tenant_with(
            "rl",
            "mock",
            "echo",
            None,
            |nt| nt.rate_limit_rpm = Some(3),
            |_| {},
        )
        .await;
    let body = json!({"bot_id": t.bot.slug, "message": "hi", "user_id": "limited"});
    for _ in 0..3 {
        assert_eq!(
            app.post_json("/v1/chat", Some(&t.key), body.clone())
                .await
                .status(),
            200
        );
    }
    let r = app.post_json("/v1/chat", Some(&t.key), body.clone()).await;
    assert_eq!(r.status(), 429);
    let ra: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=20).contains(&ra), "{ra}");
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "rate_limited"
    );
    let convs = app
        .store()
        .list_conversations(
            t.tenant.id,
            ConversationFilter::default(),
            PageRequest::first(50),
        )
        .await
        .unwrap();
    assert_eq!(convs.data.len(), 3, "the refused request stored nothing");
    app.app.chat.audit().flush().await;
    let rejected = app
        .store()
        .list_audit(
            t.tenant.id,
            AuditFilter {
                action: Some("rate_limit.rejected".into()),
                ..Default::default()
            },
            PageRequest::first(5),
        )
        .await
        .unwrap();
    assert_eq!(rejected.data.len(), 1, "the rejection is audited");
    assert_eq!(rejected.data[0].metadata["scope"], "tenant");

    // A per-key limit.
    let t2 = app.tenant("rlk", "mock", "echo", None).await;
    let (k, _) = app
        .key(t2.tenant.id, vec![Permission::Chat], vec![], Some(1))
        .await;
    let body = json!({"bot_id": t2.bot.slug, "message": "hi"});
    assert_eq!(
        app.post_json("/v1/chat", Some(&k), body.clone())
            .await
            .status(),
        200
    );
    assert_eq!(
        app.post_json("/v1/chat", Some(&k), body.clone())
            .await
            .status(),
        429
    );
    assert_eq!(
        app.post_json("/v1/chat", Some(&t2.key), body.clone())
            .await
            .status(),
        200,
        "other keys are unaffected"
    );

    // Per visitor on the public endpoint.
    let t3 = app.tenant("rlv", "mock", "echo", None).await;
    app.store()
        .create_scope(
            t3.tenant.id,
            NewScope {
                bot_id: t3.bot.id,
                kind: "visitor_rate_limit".into(),
                config: json!({"rpm": 2}),
            },
        )
        .await
        .unwrap();
    let body = json!({"bot_id": t3.bot.slug, "message": "hi"});
    assert_eq!(
        app.post_json("/v1/chat/public", None, body.clone())
            .await
            .status(),
        200
    );
    assert_eq!(
        app.post_json("/v1/chat/public", None, body.clone())
            .await
            .status(),
        200
    );
    assert_eq!(
        app.post_json("/v1/chat/public", None, body.clone())
            .await
            .status(),
        429
    );
    app.app.chat.audit().flush().await;
    app.stop().await;
}

#[tokio::test]
async fn malformed_requests_get_json_4xx_naming_the_problem() {
    let app = spawn_app_with(|c| c.max_body_bytes = 1024).await;
    let t = app.tenant("bad", "mock", "echo", None).await;
    let send = |body: &'static str, ct: &'static str| {
        app.client
            .post(app.url("/v1/chat/public"))
            .header("content-type", ct)
            .body(body)
            .send()
    };
    let cases: Vec<(reqwest::Response, u16, &str, &str)> = vec![
        (
            send("{not json", "application/json").await.unwrap(),
            400,
            "invalid_request",
            "invalid JSON",
        ),
        (
            send(r#"{"bot_id": 5, "message": "x"}"#, "application/json")
                .await
                .unwrap(),
            400,
            "invalid_request",
            "bot_id",
        ),
        (
            send(r#"{"bot_id": "b"}"#, "application/json")
                .await
                .unwrap(),
            400,
            "invalid_request",
            "message",
        ),
        (
            send(
                r#"{"bot_id": "b", "message": "x", "extra": 1}"#,
                "application/json",
            )
            .await
            .unwrap(),
            400,
            "invalid_request",
            "extra",
        ),
        (
            send(r#"{"bot_id": "b", "message": "x"}"#, "text/plain")
                .await
                .unwrap(),
            415,
            "unsupported_media_type",
            "json",
        ),
    ];
    for (r, status, code, mention) in cases {
        assert_eq!(r.status(), status);
        assert_eq!(r.headers()["content-type"], "application/json");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], code);
        assert!(
            v["error"]["message"].as_str().unwrap().contains(mention),
            "{v}"
        );
        assert!(v["error"]["request_id"].is_string());
    }
    let r = app
        .post_json(
            "/v1/chat/public",
            None,
            json!({"bot_id": t.bot.slug, "message": "   "}),
        )
        .await;
    assert_eq!(r.status(), 400);
    assert!(
        r.json::<Value>().await.unwrap()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("message")
    );
    let r = app
        .post_json(
            "/v1/chat/public",
            None,
            json!({"bot_id": t.bot.slug, "message": "x", "conversation_id": "nope"}),
        )
        .await;
    assert_eq!(r.status(), 400);
    let r = app
        .post_json(
            "/v1/chat/public",
            None,
            json!({"bot_id": t.bot.slug, "message": "x".repeat(5000)}),
        )
        .await;
    assert_eq!(r.status(), 413);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "payload_too_large"
    );
    app.stop().await;
}

#[tokio::test]
async fn provider_faults_keep_the_user_message_and_map_to_clear_codes() {
    let app = spawn_app().await;
    for (model, status, code) in [
        ("error-500", 502, "provider_error"),
        ("hang", 504, "provider_timeout"),
        ("rate-limited", 429, "rate_limited"),
    ] {
        let t = app.tenant(model, "mock", model, None).await;
        let r = app
            .post_json(
                "/v1/chat",
                Some(&t.key),
                json!({"bot_id": t.bot.slug, "message": "please answer"}),
            )
            .await;
        assert_eq!(r.status(), status, "{model}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], code, "{model}");
        let convs = app
            .store()
            .list_conversations(
                t.tenant.id,
                ConversationFilter::default(),
                PageRequest::first(5),
            )
            .await
            .unwrap();
        let msgs = messages(&app, t.tenant.id, &convs.data[0].id.to_string()).await;
        assert_eq!(
            msgs[0].content, "please answer",
            "the user's words are kept"
        );
        assert_eq!(msgs[1].status, MessageStatus::Error);
        assert_eq!(msgs[1].error.as_deref(), Some(code));
    }
    // A stream that fails after some text: an SSE error event, the partial text kept.
    let t = app.tenant("ste", "mock", "stream-then-error", None).await;
    let r = app
        .post_json(
            "/v1/chat",
            Some(&t.key),
            json!({"bot_id": t.bot.slug, "message": "go", "stream": true}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let events = parse_sse(&r.text().await.unwrap());
    assert_eq!(events.first().unwrap().0, "start");
    assert!(events.iter().any(|(e, _)| e == "delta"));
    let (last, err) = events.last().unwrap();
    assert_eq!(last, "error");
    assert_eq!(err["error"]["code"], "provider_error");
    let conv = events[0].1["conversation_id"].as_str().unwrap();
    let msgs = messages(&app, t.tenant.id, conv).await;
    assert_eq!(msgs[1].status, MessageStatus::Incomplete);
    assert!(!msgs[1].content.is_empty());
    assert!(msgs[1].usage.unwrap().estimated);
    // A stream that fails before any text: a plain 502.
    let t = app.tenant("s500", "mock", "error-500", None).await;
    let r = app
        .post_json(
            "/v1/chat",
            Some(&t.key),
            json!({"bot_id": t.bot.slug, "message": "go", "stream": true}),
        )
        .await;
    assert_eq!(r.status(), 502);
    app.stop().await;
}

#[tokio::test]
async fn a_client_that_disconnects_mid_stream_cancels_and_keeps_the_partial_answer() {
    let app = spawn_app().await;
    let t = app.tenant("dc", "mock", "slow", None).await;
    let r = app
        .post_json(
            "/v1/chat",
            Some(&t.key),
            json!({"bot_id": t.bot.slug, "message": "a long answer please", "stream": true}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let mut body = r.bytes_stream();
    let mut seen = String::new();
    while !seen.contains("event: delta") {
        seen.push_str(&String::from_utf8_lossy(
            &body.next().await.unwrap().unwrap(),
        ));
    }
    drop(body); // the client goes away
    let conv = parse_sse(&seen)[0].1["conversation_id"]
        .as_str()
        .unwrap()
        .to_string();
    let msg = eventually(|| {
        let app = &app;
        let conv = conv.clone();
        let tenant = t.tenant.id;
        async move {
            let msgs = messages(app, tenant, &conv).await;
            msgs.get(1)
                .filter(|m| m.status == MessageStatus::Cancelled)
                .cloned()
        }
    })
    .await;
    assert!(!msg.content.is_empty(), "what was generated is kept");
    let u = msg.usage.expect("tokens recorded");
    assert!(u.estimated && u.completion_tokens > 0);
    assert_eq!(msg.finish_reason.as_deref(), Some("client_disconnected"));
    app.app.chat.audit().flush().await;
    let cancelled = app
        .store()
        .list_audit(
            t.tenant.id,
            AuditFilter {
                action: Some("chat.cancelled".into()),
                ..Default::default()
            },
            PageRequest::first(5),
        )
        .await
        .unwrap();
    assert_eq!(cancelled.data.len(), 1);
    app.stop().await;
}

#[tokio::test]
async fn shutdown_lets_an_open_stream_finish() {
    let mut app = spawn_app().await;
    let t = app.tenant("grace", "mock", "slow", None).await;
    let r = app
        .post_json(
            "/v1/chat",
            Some(&t.key),
            json!({"bot_id": t.bot.slug, "message": "finish me", "stream": true}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let server = app.begin_stop();
    let events = parse_sse(&r.text().await.unwrap());
    assert_eq!(
        events.last().unwrap().0,
        "done",
        "the stream finished despite the shutdown"
    );
    server.await.unwrap();
    let conv = events[0].1["conversation_id"].as_str().unwrap();
    let msgs = messages(&app, t.tenant.id, conv).await;
    assert_eq!(msgs[1].status, MessageStatus::Complete);
    // The audit record of that turn was flushed before the server returned.
    let done = app
        .store()
        .list_audit(
            t.tenant.id,
            AuditFilter {
                action: Some("chat.completed".into()),
                ..Default::default()
            },
            PageRequest::first(5),
        )
        .await
        .unwrap();
    assert_eq!(done.data.len(), 1);
}

#[tokio::test]
async fn chats_leave_audit_records_naming_the_actor() {
    let app = spawn_app().await;
    let t = app.tenant("aud", "mock", "echo", None).await;
    app.post_json(
        "/v1/chat",
        Some(&t.key),
        json!({"bot_id": t.bot.slug, "message": "hi"}),
    )
    .await;
    app.post_json(
        "/v1/chat/public",
        None,
        json!({"bot_id": t.bot.slug, "message": "hi"}),
    )
    .await;
    app.app.chat.audit().flush().await;
    let recs = app
        .store()
        .list_audit(
            t.tenant.id,
            AuditFilter {
                action: Some("chat.completed".into()),
                ..Default::default()
            },
            PageRequest::first(5),
        )
        .await
        .unwrap()
        .data;
    assert_eq!(recs.len(), 2);
    assert_eq!(recs[0].actor.kind, ActorKind::PublicVisitor);
    assert_eq!(recs[0].ip.as_deref(), Some("127.0.0.1"));
    assert_eq!(
        recs[1].actor,
        Actor {
            kind: ActorKind::ApiKey,
            id: Some(t.key_id.to_string())
        }
    );
    assert!(recs[1].request_id.is_some());
    app.stop().await;
}

#[tokio::test]
async fn no_secret_reaches_the_logs() {
    let (_fake, base) = FakeOpenAi::start().await;
    let app = spawn_app().await;
    let t = app
        .tenant("logs", "openai", "gpt-4o-mini", Some(base))
        .await;
    let bad = app
        .tenant(
            "logs-bad",
            "openai",
            "gpt-4o-mini",
            Some("http://127.0.0.1:1/v1".into()),
        )
        .await;
    app.post_json(
        "/v1/chat",
        Some(&t.key),
        json!({"bot_id": t.bot.slug, "message": "hi"}),
    )
    .await;
    app.post_json(
        "/v1/chat",
        Some(&t.key),
        json!({"bot_id": t.bot.slug, "message": "hi", "stream": true}),
    )
    .await;
    let r = app
        .post_json(
            "/v1/chat",
            Some(&bad.key),
            json!({"bot_id": bad.bot.slug, "message": "hi"}),
        )
        .await;
    assert_eq!(r.status(), 502);
    let text = r.text().await.unwrap();
    assert!(!text.contains(PROVIDER_SECRET));
    let wrong = SecretString::from(format!(
        "{}_{}",
        &t.key.expose_secret()[..19],
        "Z".repeat(43)
    ));
    app.post_json(
        "/v1/chat",
        Some(&wrong),
        json!({"bot_id": t.bot.slug, "message": "hi"}),
    )
    .await;
    app.app.chat.audit().flush().await;
    let logs = captured_logs();
    assert!(!logs.is_empty(), "logs were captured");
    assert!(logs.contains("provider failed"), "the failure was logged");
    for secret in [
        PROVIDER_SECRET,
        t.key.expose_secret(),
        &wrong.expose_secret()[20..],
        "PROVIDERSECRET",
    ] {
        assert!(!logs.contains(secret), "a secret reached the logs");
    }
    app.stop().await;
}

#[tokio::test]
async fn two_instances_on_redis_share_one_limit() {
    // Two servers on one database and one Redis, as behind a load balancer.
    let dir = tempfile::tempdir().unwrap();
    let db = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("shared.db").display()
    );
    let redis = std::env::var("CHATCORE_TEST_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let key_file = dir.path().join("mk");
    std::fs::write(
        &key_file,
        chatcore::crypto::Keyring::generate_base64().expose_secret(),
    )
    .unwrap();
    let master = std::fs::read_to_string(&key_file).unwrap();
    let configure = |c: &mut chatcore_server::config::Config| {
        c.database_url = db.clone();
        c.redis_url = Some(SecretString::from(redis.clone()));
        c.master_key = Some(SecretString::from(master.clone()));
    };
    let a = spawn_app_with(configure).await;
    let b = spawn_app_with(configure).await;
    let t = a
        .tenant_with(
            "redis",
            "mock",
            "echo",
            None,
            |nt| nt.rate_limit_rpm = Some(10),
            |_| {},
        )
        .await;
    let mut admitted = 0;
    let mut limited = 0;
    let mut tasks = Vec::new();
    for i in 0..40 {
        let (url, client, key, slug) = (
            if i % 2 == 0 {
                a.url("/v1/chat")
            } else {
                b.url("/v1/chat")
            },
            a.client.clone(),
            t.key.expose_secret().to_string(),
            t.bot.slug.clone(),
        );
        tasks.push(tokio::spawn(async move {
            client
                .post(url)
                .bearer_auth(key)
                .json(&json!({"bot_id": slug, "message": "hi"}))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }));
    }
    for task in tasks {
        match task.await.unwrap() {
            200 => admitted += 1,
            429 => limited += 1,
            s => panic!("unexpected status {s}"),
        }
    }
    // 40 requests in far less than the 6 s one request takes to refill.
    assert!(
        admitted <= 11,
        "admitted {admitted} with a limit of 10 across two instances"
    );
    assert!(admitted >= 10, "admitted only {admitted}");
    assert_eq!(admitted + limited, 40);
    a.stop().await;
    b.stop().await;
}
