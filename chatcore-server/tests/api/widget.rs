//! The chat widget (issue 14): settings, visitor sessions and their limits,
//! identity verification, feedback, CORS and CSP, and what an attacker
//! tries (another tenant's ids, forged and expired tokens, hostile origins,
//! NUL bytes, huge bodies).

use chatcore::domain::*;
use chatcore::store::*;
use chatcore::testkit::fixtures::SystemWrites;
use reqwest::Method;
use secrecy::ExposeSecret;
use serde_json::{Value, json};

use crate::helpers::*;

const SITE: &str = "https://shop.example";
const EVIL: &str = "https://evil.example";

/// A tenant whose public bot may be embedded on [`SITE`].
async fn embeddable(app: &TestApp, slug: &str) -> TestTenant {
    let t = app.tenant(slug, "mock", "echo", None).await;
    app.store()
        .create_scope(
            t.tenant.id,
            NewScope {
                bot_id: t.bot.id,
                kind: "allowed_origins".into(),
                config: json!([SITE]),
            },
        )
        .await
        .unwrap();
    app.app.chat.invalidate_tenant(t.tenant.id);
    t
}

async fn session(app: &TestApp, bot: &str, origin: &str, body: Value) -> reqwest::Response {
    app.client
        .post(app.url(&format!("/v1/widget/{bot}/session")))
        .header("origin", origin)
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn token(app: &TestApp, bot: &str) -> String {
    let r = session(app, bot, SITE, json!({})).await;
    assert_eq!(r.status(), 201);
    r.json::<Value>().await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_string()
}

async fn chat_as(
    app: &TestApp,
    token: &str,
    origin: &str,
    body: Value,
) -> (u16, reqwest::header::HeaderMap, String) {
    let r = app
        .client
        .post(app.url("/v1/chat/public"))
        .header("origin", origin)
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    (status, headers, r.text().await.unwrap())
}

async fn get_as(app: &TestApp, path: &str, token: &str) -> (u16, Value) {
    let r = app
        .client
        .get(app.url(path))
        .header("origin", SITE)
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn settings_round_trip_and_the_public_config_is_cacheable() {
    let app = spawn_app().await;
    let t = embeddable(&app, "wset").await;
    let key = t.key.expose_secret();
    let path = format!("/v1/bots/{}/widget", t.bot.slug);
    let (s, v) = app.call(Method::GET, &path, Some(key), None).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["allowed_origins"], json!([SITE]));
    assert_eq!(v["settings"]["show_sources"], true);
    let body = json!({"title": "Help desk", "greeting": "Hello!", "primary_color": "#0f766e",
        "position": "bottom-left", "launcher_icon": "help", "suggested_questions": ["Prices?"],
        "show_sources": false});
    let (s, v) = app.call(Method::PUT, &path, Some(key), Some(body)).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["settings"]["title"], "Help desk");

    let r = app
        .client
        .get(app.url(&format!("/v1/widget/{}/config", t.bot.slug)))
        .header("origin", SITE)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let h = r.headers().clone();
    assert_eq!(h["cache-control"], "public, max-age=300");
    assert_eq!(h["access-control-allow-origin"], SITE);
    assert_eq!(
        h["content-security-policy"],
        format!("frame-ancestors {SITE}")
    );
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["title"], "Help desk");
    assert_eq!(v["settings"]["position"], "bottom-left");
    assert_eq!(v["embeddable"], true);
    assert_eq!(v["identity_verification"], false);
    // A hostile origin reads nothing (no CORS header for it).
    let r = app
        .client
        .get(app.url(&format!("/v1/widget/{}/config", t.bot.slug)))
        .header("origin", EVIL)
        .send()
        .await
        .unwrap();
    assert!(r.headers().get("access-control-allow-origin").is_none());

    // Bad settings name the field; a read key may look but not change.
    for (bad, field) in [
        (
            json!({"primary_color": "red; background:url(x)"}),
            "primary_color",
        ),
        (json!({"title": "a\u{0}b"}), "title"),
        (
            json!({"suggested_questions": vec!["q"; 7]}),
            "suggested_questions",
        ),
        (json!({"bogus": 1}), "bogus"),
    ] {
        let (s, v) = app.call(Method::PUT, &path, Some(key), Some(bad)).await;
        assert_eq!(s, 400, "{v}");
        assert!(
            v["error"]["message"].as_str().unwrap().contains(field),
            "{v}"
        );
    }
    let (read, _) = app
        .key(t.tenant.id, vec![Permission::Read], vec![], None)
        .await;
    let (s, _) = app
        .call(Method::GET, &path, Some(read.expose_secret()), None)
        .await;
    assert_eq!(s, 200);
    let (s, _) = app
        .call(
            Method::PUT,
            &path,
            Some(read.expose_secret()),
            Some(json!({})),
        )
        .await;
    assert_eq!(s, 403);
    // Another tenant's bot is not found, by id or slug.
    let other = app.tenant("wset-other", "mock", "echo", None).await;
    for b in [t.bot.id.to_string(), t.bot.slug.clone()] {
        let (s, _) = app
            .call(
                Method::GET,
                &format!("/v1/bots/{b}/widget"),
                Some(other.key.expose_secret()),
                None,
            )
            .await;
        assert_eq!(s, 404);
    }
    // The change is audited.
    let (_, v) = app
        .call(
            Method::GET,
            "/v1/audit-logs?action=widget.updated",
            Some(key),
            None,
        )
        .await;
    assert_eq!(v["data"].as_array().unwrap().len(), 1);
    app.stop().await;
}

#[tokio::test]
async fn sessions_need_an_allowed_origin() {
    let app = spawn_app().await;
    let t = embeddable(&app, "worigin").await;
    let slug = t.bot.slug.clone();
    // The allowed origin gets a token, with CORS and CSP for it.
    let r = session(&app, &slug, SITE, json!({})).await;
    assert_eq!(r.status(), 201);
    assert_eq!(r.headers()["access-control-allow-origin"], SITE);
    assert_eq!(r.headers()["cache-control"], "no-store");
    let v: Value = r.json().await.unwrap();
    assert!(v["token"].as_str().unwrap().starts_with("cvt1."));
    // Another origin, a missing one, `null`: 403 and no CORS header.
    for o in [EVIL, "null", "https://shop.example.evil.example"] {
        let r = session(&app, &slug, o, json!({})).await;
        assert_eq!(r.status(), 403, "{o}");
        assert!(r.headers().get("access-control-allow-origin").is_none());
    }
    let r = app
        .client
        .post(app.url(&format!("/v1/widget/{slug}/session")))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // A public bot without allowed origins cannot be embedded at all.
    let bare = app.tenant("wbare", "mock", "echo", None).await;
    let r = session(&app, &bare.bot.slug, SITE, json!({})).await;
    assert_eq!(r.status(), 403);
    let v: Value = r.json().await.unwrap();
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no allowed origins")
    );
    // A private bot, an unknown one, NUL bytes: 404 or 400, never 500.
    let private = app
        .tenant_with(
            "wpriv",
            "mock",
            "echo",
            None,
            |_| {},
            |b| b.is_public = false,
        )
        .await;
    assert_eq!(
        session(&app, &private.bot.slug, SITE, json!({}))
            .await
            .status(),
        404
    );
    assert_eq!(session(&app, "nope", SITE, json!({})).await.status(), 404);
    assert_eq!(session(&app, "a%00b", SITE, json!({})).await.status(), 400);
    let r = session(&app, &slug, SITE, json!({"previous_token": "x\u{0}"})).await;
    assert_eq!(r.status(), 400);
    let r = session(&app, &slug, SITE, json!({"bogus": true})).await;
    assert_eq!(r.status(), 400);
    // A huge body is a 413.
    let huge = json!({"previous_token": "x".repeat(2 << 20)});
    assert_eq!(session(&app, &slug, SITE, huge).await.status(), 413);
    // The preflight is answered (the real answer decides).
    let r = app
        .client
        .request(
            Method::OPTIONS,
            app.url(&format!("/v1/widget/{slug}/session")),
        )
        .header("origin", SITE)
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "content-type, authorization",
        )
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    app.stop().await;
}

#[tokio::test]
async fn a_token_chats_as_its_visitor_and_is_refused_elsewhere() {
    let app = spawn_app().await;
    let t = embeddable(&app, "wchat").await;
    let slug = t.bot.slug.clone();
    let tok = token(&app, &slug).await;

    // Streamed: the proxy headers, and the conversation under the visitor.
    let (s, h, body) = chat_as(
        &app,
        &tok,
        SITE,
        json!({"bot_id": slug, "message": "hello widget", "stream": true}),
    )
    .await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(h["x-accel-buffering"], "no");
    assert_eq!(h["cache-control"], "no-cache");
    assert_eq!(h["access-control-allow-origin"], SITE);
    let events = parse_sse(&body);
    let conv = events[0].1["conversation_id"].as_str().unwrap().to_string();
    let c = app
        .store()
        .get_conversation(t.tenant.id, conv.parse().unwrap())
        .await
        .unwrap();
    assert!(c.end_user_id.as_deref().unwrap().starts_with("visitor:"));

    // The visitor lists and reads it.
    let (s, v) = get_as(&app, &format!("/v1/widget/{slug}/conversations"), &tok).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["data"][0]["id"], conv.as_str());
    let (s, v) = get_as(
        &app,
        &format!("/v1/widget/{slug}/conversations/{conv}/messages"),
        &tok,
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["data"][0]["content"], "hello widget");
    assert_eq!(v["data"][1]["role"], "assistant");
    assert_eq!(
        v["data"][1]["sources"],
        json!([]),
        "no datasets, no sources"
    );

    // Another visitor may neither read nor continue it.
    let other = token(&app, &slug).await;
    let (s, _) = get_as(
        &app,
        &format!("/v1/widget/{slug}/conversations/{conv}/messages"),
        &other,
    )
    .await;
    assert_eq!(s, 404);
    let (s, _, _) = chat_as(
        &app,
        &other,
        SITE,
        json!({"bot_id": slug, "message": "mine now", "conversation_id": conv}),
    )
    .await;
    assert_eq!(s, 404);
    // Nor claim to be that visitor through user_id.
    let (s, _, _) = chat_as(
        &app,
        &other,
        SITE,
        json!({"bot_id": slug, "message": "x", "user_id": c.end_user_id}),
    )
    .await;
    assert_eq!(s, 403);
    let r = app
        .post_json(
            "/v1/chat/public",
            None,
            json!({"bot_id": slug, "message": "x", "conversation_id": conv, "user_id": c.end_user_id}),
        )
        .await;
    assert_eq!(r.status(), 403);

    // From another origin, the token is refused (and its error readable
    // only by the widget's origin).
    let (s, _, _) = chat_as(&app, &tok, EVIL, json!({"bot_id": slug, "message": "x"})).await;
    assert_eq!(s, 401);
    // For another bot: refused.
    let t2 = embeddable(&app, "wchat2").await;
    let (s, _, body) = chat_as(
        &app,
        &tok,
        SITE,
        json!({"bot_id": t2.bot.slug, "message": "x"}),
    )
    .await;
    assert_eq!(s, 401, "{body}");
    let (s, _) = get_as(
        &app,
        &format!("/v1/widget/{}/conversations", t2.bot.slug),
        &tok,
    )
    .await;
    assert_eq!(s, 404);
    // Forged, cut, garbage: 401, never 500.
    let (head, tag) = tok.rsplit_once('.').unwrap();
    let forged = format!("{head}.{}", tag.chars().rev().collect::<String>());
    for bad in [
        forged.as_str(),
        "cvt1.",
        "cvt1.e30.AAAA",
        &tok[..tok.len() - 3],
    ] {
        let (s, _, _) = chat_as(&app, bad, SITE, json!({"bot_id": slug, "message": "x"})).await;
        assert_eq!(s, 401, "{bad}");
        let (s, _) = get_as(&app, &format!("/v1/widget/{slug}/conversations"), bad).await;
        assert_eq!(s, 401, "{bad}");
    }
    let (s, _) = app
        .call(
            Method::GET,
            &format!("/v1/widget/{slug}/conversations"),
            None,
            None,
        )
        .await;
    assert_eq!(s, 401);
    // An API key as the bearer of public chat is not a visitor token: as before.
    let r = app
        .post_json(
            "/v1/chat/public",
            Some(&t.key),
            json!({"bot_id": slug, "message": "x"}),
        )
        .await;
    assert_eq!(r.status(), 403, "the origin is still checked");
    app.stop().await;
}

#[tokio::test]
async fn the_visitor_limit_counts_sessions_not_ips() {
    let app = spawn_app().await;
    let t = embeddable(&app, "wlimit").await;
    app.store()
        .create_scope(
            t.tenant.id,
            NewScope {
                bot_id: t.bot.id,
                kind: "visitor_rate_limit".into(),
                config: json!({"rpm": 2}),
            },
        )
        .await
        .unwrap();
    app.app.chat.invalidate_tenant(t.tenant.id);
    let slug = t.bot.slug.clone();
    let a = token(&app, &slug).await;
    let b = token(&app, &slug).await;
    let msg = json!({"bot_id": slug, "message": "hi"});
    for _ in 0..2 {
        assert_eq!(chat_as(&app, &a, SITE, msg.clone()).await.0, 200);
    }
    assert_eq!(chat_as(&app, &a, SITE, msg.clone()).await.0, 429);
    // Same IP, another visitor: not limited.
    assert_eq!(chat_as(&app, &b, SITE, msg.clone()).await.0, 200);
    // A renewed session is the same visitor (keeps its limit and its
    // conversations).
    let r = session(&app, &slug, SITE, json!({"previous_token": a})).await;
    let renewed: Value = r.json().await.unwrap();
    let first: Value = {
        let (_, v) = get_as(&app, &format!("/v1/widget/{slug}/conversations"), &a).await;
        v
    };
    let (_, again) = get_as(
        &app,
        &format!("/v1/widget/{slug}/conversations"),
        renewed["token"].as_str().unwrap(),
    )
    .await;
    assert_eq!(first["data"], again["data"]);
    assert_eq!(
        chat_as(&app, renewed["token"].as_str().unwrap(), SITE, msg)
            .await
            .0,
        429
    );
    app.stop().await;
}

#[tokio::test]
async fn signed_user_ids_list_their_conversations_and_forged_ones_are_refused() {
    let app = spawn_app().await;
    let t = embeddable(&app, "wident").await;
    let slug = t.bot.slug.clone();
    let key = t.key.expose_secret();
    // Without a secret, a user_id cannot be verified.
    let r = session(
        &app,
        &slug,
        SITE,
        json!({"user_id": "alice", "user_hash": "00"}),
    )
    .await;
    assert_eq!(r.status(), 403);
    let (s, v) = app
        .call(
            Method::POST,
            &format!("/v1/bots/{slug}/widget/secret"),
            Some(key),
            None,
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let secret = v["secret"].as_str().unwrap().to_string();
    let (_, view) = app
        .call(
            Method::GET,
            &format!("/v1/bots/{slug}/widget"),
            Some(key),
            None,
        )
        .await;
    assert_eq!(view["secret_last4"], &secret[secret.len() - 4..]);
    assert!(!view.to_string().contains(&secret), "shown once only");

    let hash = chatcore::widget::user_hash(&secret, "alice");
    let signed = json!({"user_id": "alice", "user_hash": hash});
    let r = session(&app, &slug, SITE, signed.clone()).await;
    assert_eq!(r.status(), 201);
    let s1: Value = r.json().await.unwrap();
    assert_eq!(s1["user_id"], "alice");
    let tok1 = s1["token"].as_str().unwrap();
    let (s, _, body) = chat_as(
        &app,
        tok1,
        SITE,
        json!({"bot_id": slug, "message": "first"}),
    )
    .await;
    assert_eq!(s, 200, "{body}");
    // A later session of the same user (another device) sees it.
    let r = session(&app, &slug, SITE, signed).await;
    let tok2 = r.json::<Value>().await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_string();
    let (_, v) = get_as(&app, &format!("/v1/widget/{slug}/conversations"), &tok2).await;
    assert_eq!(v["data"].as_array().unwrap().len(), 1);
    assert_eq!(v["data"][0]["title"], "first");
    // The admin sees it under the user.
    let (_, v) = app
        .call(
            Method::GET,
            "/v1/conversations?user_id=alice",
            Some(key),
            None,
        )
        .await;
    assert_eq!(v["data"].as_array().unwrap().len(), 1);
    // The tenant's own API conversations with that user are not listed to
    // the visitor.
    let r = app
        .post_json(
            "/v1/chat",
            Some(&t.key),
            json!({"bot_id": slug, "message": "internal note", "user_id": "alice"}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let (_, v) = get_as(&app, &format!("/v1/widget/{slug}/conversations"), &tok2).await;
    assert_eq!(v["data"].as_array().unwrap().len(), 1, "{v}");

    // Forged, missing, for another user, under an old secret: refused.
    for body in [
        json!({"user_id": "alice", "user_hash": chatcore::widget::user_hash("guess", "alice")}),
        json!({"user_id": "alice"}),
        json!({"user_id": "bob", "user_hash": hash}),
        json!({"user_id": "alice", "user_hash": "not hex"}),
        json!({"user_hash": hash}),
    ] {
        let r = session(&app, &slug, SITE, body.clone()).await;
        assert!(
            r.status() == 401 || r.status() == 400,
            "{body}: {}",
            r.status()
        );
    }
    app.app.chat.audit().flush().await;
    let (_, audit) = app
        .call(
            Method::GET,
            "/v1/audit-logs?action=widget.identity_refused",
            Some(key),
            None,
        )
        .await;
    assert!(audit["data"].as_array().unwrap().len() >= 3);
    // Tokenless public chat may not claim a user of a verifying bot.
    let r = app
        .client
        .post(app.url("/v1/chat/public"))
        .header("origin", SITE)
        .json(&json!({"bot_id": slug, "message": "x", "user_id": "alice"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // Rotation: the old secret stops verifying.
    app.call(
        Method::POST,
        &format!("/v1/bots/{slug}/widget/secret"),
        Some(key),
        None,
    )
    .await;
    let r = session(
        &app,
        &slug,
        SITE,
        json!({"user_id": "alice", "user_hash": hash}),
    )
    .await;
    assert_eq!(r.status(), 401);
    app.stop().await;
}

#[tokio::test]
async fn feedback_is_stored_shown_counted_and_audited() {
    let app = spawn_app().await;
    let t = embeddable(&app, "wfb").await;
    let slug = t.bot.slug.clone();
    let key = t.key.expose_secret();
    let tok = token(&app, &slug).await;
    let (_, _, body) = chat_as(
        &app,
        &tok,
        SITE,
        json!({"bot_id": slug, "message": "rate me"}),
    )
    .await;
    let reply: Value = serde_json::from_str(&body).unwrap();
    let msg = reply["message_id"].as_str().unwrap().to_string();
    let conv = reply["conversation_id"].as_str().unwrap().to_string();
    let rate = |token: String, m: String, body: Value| {
        let app = &app;
        async move {
            let r = app
                .client
                .post(app.url(&format!("/v1/messages/{m}/feedback")))
                .header("origin", SITE)
                .bearer_auth(token)
                .json(&body)
                .send()
                .await
                .unwrap();
            (
                r.status().as_u16(),
                r.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    let (s, v) = rate(tok.clone(), msg.clone(), json!({"rating": "down"})).await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = rate(
        tok.clone(),
        msg.clone(),
        json!({"rating": "up", "comment": "clear"}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["rating"], "up");
    assert_eq!(v["actor"]["kind"], "public_visitor");

    // Shown with the message.
    let (_, v) = app
        .call(
            Method::GET,
            &format!("/v1/conversations/{conv}/messages"),
            Some(key),
            None,
        )
        .await;
    let answer = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == msg.as_str())
        .unwrap();
    assert_eq!(answer["feedback"]["rating"], "up");
    assert_eq!(answer["feedback"]["comment"], "clear");
    // Counted per bot and per day.
    let (_, v) = app.call(Method::GET, "/v1/usage", Some(key), None).await;
    let row = &v["data"][0];
    assert_eq!(row["group"], t.bot.id.to_string());
    assert_eq!(row["feedback_up"], 1);
    assert_eq!(row["feedback_down"], 0);
    assert_eq!(row["feedback_share_up"], 1.0);
    let (_, v) = app
        .call(Method::GET, "/v1/usage?group_by=day", Some(key), None)
        .await;
    assert_eq!(v["data"][0]["feedback_up"], 1);
    // Audited.
    app.app.chat.audit().flush().await;
    let (_, v) = app
        .call(
            Method::GET,
            "/v1/audit-logs?action=feedback.recorded",
            Some(key),
            None,
        )
        .await;
    assert_eq!(v["data"].as_array().unwrap().len(), 2);

    // A key of the tenant may rate too; a read key may not.
    let (s, _) = rate(key.to_string(), msg.clone(), json!({"rating": "down"})).await;
    assert_eq!(s, 200);
    let (read, _) = app
        .key(t.tenant.id, vec![Permission::Read], vec![], None)
        .await;
    let (s, _) = rate(
        read.expose_secret().to_string(),
        msg.clone(),
        json!({"rating": "up"}),
    )
    .await;
    assert_eq!(s, 403);
    // Another tenant's key, another visitor, a user message, junk: 404/400/401.
    let other = embeddable(&app, "wfb-other").await;
    let (s, _) = rate(
        other.key.expose_secret().to_string(),
        msg.clone(),
        json!({"rating": "up"}),
    )
    .await;
    assert_eq!(s, 404);
    let stranger = token(&app, &slug).await;
    let (s, _) = rate(stranger, msg.clone(), json!({"rating": "up"})).await;
    assert_eq!(s, 404);
    let msgs = app
        .store()
        .list_messages(t.tenant.id, conv.parse().unwrap(), PageRequest::first(10))
        .await
        .unwrap();
    let user_msg = msgs.data.iter().find(|m| m.role == Role::User).unwrap().id;
    let (s, _) = rate(tok.clone(), user_msg.to_string(), json!({"rating": "up"})).await;
    assert_eq!(s, 404);
    for (m, body, want) in [
        ("not-an-id".to_string(), json!({"rating": "up"}), 404),
        (msg.clone(), json!({"rating": "meh"}), 400),
        (
            msg.clone(),
            json!({"rating": "up", "comment": "a\u{0}"}),
            400,
        ),
        (
            msg.clone(),
            json!({"rating": "up", "comment": "x".repeat(2001)}),
            400,
        ),
    ] {
        let (s, v) = rate(tok.clone(), m, body).await;
        assert_eq!(s, want, "{v}");
    }
    let (s, _) = rate("cc_nope".into(), msg.clone(), json!({"rating": "up"})).await;
    assert_eq!(s, 401);
    let (s, _) = app
        .call(
            Method::POST,
            &format!("/v1/messages/{msg}/feedback"),
            None,
            Some(json!({"rating": "up"})),
        )
        .await;
    assert_eq!(s, 401);
    app.stop().await;
}

#[tokio::test]
async fn the_script_and_the_demo_page_are_served() {
    let app = spawn_app().await;
    let r = app.client.get(app.url("/widget.js")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/javascript")
    );
    let js = r.text().await.unwrap();
    assert!(js.contains("attachShadow"));
    let r = app.client.get(app.url("/demo")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("frame-ancestors 'self'")
    );
    assert!(r.text().await.unwrap().contains("data-bot=\"demo\""));
    app.stop().await;
}

#[tokio::test]
async fn the_demo_bot_can_be_embedded_from_the_server_itself() {
    let app = spawn_app().await;
    let demo = app
        .app
        .bootstrap_demo()
        .await
        .unwrap()
        .expect("first start");
    let listen = app.app.config.listen;
    let origin = format!("http://127.0.0.1:{}", listen.port());
    let r = session(&app, "demo", &origin, json!({})).await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let (s, v) = app
        .call(Method::GET, "/v1/widget/demo/config", None, None)
        .await;
    assert_eq!(s, 200);
    assert!(v["settings"]["greeting"].as_str().unwrap().contains("demo"));
    assert_eq!(v["bot_id"], demo.bot.id.to_string());
    app.stop().await;
}
