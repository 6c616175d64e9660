//! The management API end to end: operator tenants, and a tenant admin's
//! providers, bots, API keys, scopes, conversations, audit log and usage.

use reqwest::Method;
use secrecy::ExposeSecret;
use serde_json::{Value, json};

use crate::fake_openai::FakeOpenAi;
use crate::helpers::*;

const GET: Method = Method::GET;
const POST: Method = Method::POST;
const PATCH: Method = Method::PATCH;
const DELETE: Method = Method::DELETE;
const PUT: Method = Method::PUT;

fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("")
}

fn message(v: &Value) -> &str {
    v["error"]["message"].as_str().unwrap_or("")
}

/// Creates a tenant through the operator API; returns (tenant, admin key).
async fn operator_tenant(app: &TestApp, name: &str) -> (Value, String) {
    let (s, v) = app
        .call(
            POST,
            "/v1/admin/tenants",
            Some(OPERATOR_KEY),
            Some(json!({"name": name})),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    (
        v["tenant"].clone(),
        v["admin_key"].as_str().unwrap().to_string(),
    )
}

/// A provider (mock) and a public bot on it, through the API.
async fn provider_and_bot(app: &TestApp, key: &str, slug: &str) -> (Value, Value) {
    let (s, p) = app
        .call(
            POST,
            "/v1/providers",
            Some(key),
            Some(json!({"provider": "mock", "name": "Mock", "default_model": "echo"})),
        )
        .await;
    assert_eq!(s, 201, "{p}");
    let (s, b) = app
        .call(
            POST,
            "/v1/bots",
            Some(key),
            Some(json!({"name": "Helper", "slug": slug, "provider_id": p["id"], "model": "echo", "is_public": true})),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    (p, b)
}

async fn chat(app: &TestApp, key: &str, bot: &str, msg: &str, user: Option<&str>) -> (u16, Value) {
    let mut body = json!({"bot_id": bot, "message": msg});
    if let Some(u) = user {
        body["user_id"] = json!(u);
    }
    app.call(POST, "/v1/chat", Some(key), Some(body)).await
}

/// The tenant's audit log, newest first, without the fixtures' setup
/// (the helpers write it through `apply` as the system).
async fn audit_actions(app: &TestApp, key: &str) -> Vec<Value> {
    let (s, v) = app
        .call(GET, "/v1/audit-logs?limit=200", Some(key), None)
        .await;
    assert_eq!(s, 200, "{v}");
    v["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["actor"]["kind"] != "system")
        .cloned()
        .collect()
}

/// Follows `next_cursor` to the end; returns every item and the page count.
async fn all_pages(app: &TestApp, key: &str, path: &str, limit: u64) -> (Vec<Value>, usize) {
    let mut out = vec![];
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let sep = if path.contains('?') { '&' } else { '?' };
        let url = match &cursor {
            Some(c) => format!("{path}{sep}limit={limit}&cursor={c}"),
            None => format!("{path}{sep}limit={limit}"),
        };
        let (s, v) = app.call(GET, &url, Some(key), None).await;
        assert_eq!(s, 200, "{v}");
        let data = v["data"].as_array().unwrap();
        assert!(data.len() as u64 <= limit);
        out.extend(data.iter().cloned());
        pages += 1;
        match v["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
        assert!(pages < 100);
    }
    (out, pages)
}

#[tokio::test]
async fn operator_routes_do_not_exist_without_an_operator_key() {
    let app = spawn_app().await;
    let (s, v) = app
        .call(GET, "/v1/admin/tenants", Some(OPERATOR_KEY), None)
        .await;
    assert_eq!(s, 404, "{v}");
    assert_eq!(code(&v), "not_found");
    app.stop().await;
}

#[tokio::test]
async fn operator_creates_lists_reads_and_updates_tenants() {
    let app = spawn_app_with_operator().await;
    // Wrong or missing operator key.
    for k in [None, Some("wrong"), Some("op-test-key-012345678")] {
        let (s, v) = app.call(GET, "/v1/admin/tenants", k, None).await;
        assert_eq!(s, 401, "{v}");
        assert_eq!(code(&v), "unauthorized");
    }
    let (tenant, admin_key) = operator_tenant(&app, "Acme Corp").await;
    assert_eq!(tenant["slug"], "acme-corp");
    assert_eq!(tenant["status"], "active");
    assert!(admin_key.starts_with("cc_"));
    // The admin key works at once.
    let (s, v) = app.call(GET, "/v1/bots", Some(&admin_key), None).await;
    assert_eq!((s, v["data"].as_array().unwrap().len()), (200, 0));

    // Validation: unknown field, wrong type, bad slug, out of range, taken slug.
    for (body, field, status) in [
        (json!({"name": "x", "color": "red"}), "color", 400),
        (json!({"name": 5}), "name", 400),
        (json!({"name": "x", "slug": "Bad Slug"}), "slug", 400),
        (
            json!({"name": "x", "rate_limit_rpm": 0}),
            "rate_limit_rpm",
            400,
        ),
        (json!({"name": "x", "features": [1]}), "features", 400),
        (json!({"name": "x", "slug": "acme-corp"}), "slug", 409),
    ] {
        let (s, v) = app
            .call(
                POST,
                "/v1/admin/tenants",
                Some(OPERATOR_KEY),
                Some(body.clone()),
            )
            .await;
        assert_eq!(s, status, "{body} -> {v}");
        assert!(message(&v).contains(field), "{body} -> {v}");
    }

    // Get, patch, list with pagination.
    let id = tenant["id"].as_str().unwrap();
    let (s, v) = app
        .call(
            GET,
            &format!("/v1/admin/tenants/{id}"),
            Some(OPERATOR_KEY),
            None,
        )
        .await;
    assert_eq!((s, v["id"].as_str()), (200, Some(id)));
    let (s, v) = app
        .call(
            PATCH,
            &format!("/v1/admin/tenants/{id}"),
            Some(OPERATOR_KEY),
            Some(json!({"name": "Acme", "slug": "acme", "rate_limit_rpm": 100, "features": {"public_chat": false}})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        (
            &v["name"],
            &v["slug"],
            &v["rate_limit_rpm"],
            &v["features"]["public_chat"]
        ),
        (&json!("Acme"), &json!("acme"), &json!(100), &json!(false))
    );
    let (s, v) = app
        .call(
            PATCH,
            &format!("/v1/admin/tenants/{id}"),
            Some(OPERATOR_KEY),
            Some(json!({"rate_limit_rpm": null, "status": "paused"})),
        )
        .await;
    assert_eq!(s, 400, "{v}");
    assert!(message(&v).contains("status"));
    let (s, v) = app
        .call(
            GET,
            &format!("/v1/admin/tenants/{}", chatcore::domain::TenantId::new()),
            Some(OPERATOR_KEY),
            None,
        )
        .await;
    assert_eq!((s, code(&v)), (404, "not_found"));
    for i in 0..4 {
        operator_tenant(&app, &format!("T{i}")).await;
    }
    let mut ids = vec![];
    let mut cursor = String::new();
    let mut pages = 0;
    loop {
        let (s, v) = app
            .call(
                GET,
                &format!("/v1/admin/tenants?limit=2{cursor}"),
                Some(OPERATOR_KEY),
                None,
            )
            .await;
        assert_eq!(s, 200);
        pages += 1;
        ids.extend(
            v["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["id"].clone()),
        );
        match v["next_cursor"].as_str() {
            Some(c) => cursor = format!("&cursor={c}"),
            None => break,
        }
    }
    assert_eq!((ids.len(), pages), (5, 3));

    // Each operator change is audited in the tenant, naming the operator.
    let log = audit_actions(&app, &admin_key).await;
    let ops: Vec<_> = log
        .iter()
        .filter(|r| r["actor"]["kind"] == "operator")
        .map(|r| r["action"].as_str().unwrap())
        .collect();
    assert_eq!(ops, ["tenant.updated", "tenant.created"]);
    app.stop().await;
}

#[tokio::test]
async fn suspension_stops_a_tenants_keys_at_once_and_reactivation_restores_them() {
    let app = spawn_app_with_operator().await;
    let (tenant, key) = operator_tenant(&app, "Sus").await;
    let (_, bot) = provider_and_bot(&app, &key, "sus-bot").await;
    // Warm the key and bot caches.
    let (s, v) = chat(&app, &key, "sus-bot", "hello", None).await;
    assert_eq!(s, 200, "{v}");
    let id = tenant["id"].as_str().unwrap();
    let (s, _) = app
        .call(
            PATCH,
            &format!("/v1/admin/tenants/{id}"),
            Some(OPERATOR_KEY),
            Some(json!({"status": "suspended"})),
        )
        .await;
    assert_eq!(s, 200);
    let (s, v) = chat(&app, &key, "sus-bot", "hello", None).await;
    assert_eq!((s, code(&v)), (403, "forbidden"), "{v}");
    let (s, _) = app.call(GET, "/v1/bots", Some(&key), None).await;
    assert_eq!(s, 403);
    // Public chat with its bot stops too.
    let (s, _) = app
        .call(
            POST,
            "/v1/chat/public",
            None,
            Some(json!({"bot_id": bot["id"], "message": "hi"})),
        )
        .await;
    assert_eq!(s, 404);
    app.call(
        PATCH,
        &format!("/v1/admin/tenants/{id}"),
        Some(OPERATOR_KEY),
        Some(json!({"status": "active"})),
    )
    .await;
    let (s, _) = chat(&app, &key, "sus-bot", "hello", None).await;
    assert_eq!(s, 200);
    app.stop().await;
}

#[tokio::test]
async fn a_chat_only_key_gets_403_on_every_management_route() {
    let app = spawn_app().await;
    let t = app.tenant("perm", "mock", "echo", None).await;
    let (chat_key, _) = app
        .key(
            t.tenant.id,
            vec![chatcore::domain::Permission::Chat],
            vec![],
            None,
        )
        .await;
    let k = chat_key.expose_secret();
    for (m, pattern) in &crate::helpers::routes() {
        // Chat routes (the OpenAI-compatible `/v1/models` too) take a chat
        // key; the operator's take the operator key.
        if !pattern.starts_with("/v1/")
            || pattern.starts_with("/v1/chat")
            || pattern.starts_with("/v1/models")
            || pattern.starts_with("/v1/admin")
            // The widget's public routes (visitor token or any tenant key).
            || pattern.starts_with("/v1/widget/")
            || pattern.starts_with("/v1/messages/")
        {
            continue;
        }
        let path = pattern.replace("{id}", &t.bot.id.to_string());
        let method = Method::from_bytes(m.as_str().as_bytes()).unwrap();
        let body = (method == POST || method == PATCH).then(|| json!({}));
        let (s, v) = app.call(method, &path, Some(k), body).await;
        assert_eq!((s, code(&v)), (403, "forbidden"), "{m} {path}: {v}");
    }
    // No key at all: 401.
    let (s, _) = app.call(GET, "/v1/bots", None, None).await;
    assert_eq!(s, 401);
    app.stop().await;
}

#[tokio::test]
async fn a_read_key_reads_every_management_route_and_changes_nothing() {
    use chatcore::domain::Permission;
    let app = spawn_app().await;
    let t = app.tenant("reader", "mock", "echo", None).await;
    let admin = t.key.expose_secret();
    // One row of each kind, made by the admin key.
    let (s, scope) = app
        .call(
            POST,
            "/v1/scopes",
            Some(admin),
            Some(json!({"bot_id": t.bot.id, "kind": "blocked_terms", "config": ["nope"]})),
        )
        .await;
    assert_eq!(s, 201, "{scope}");
    let (s, reply) = chat(&app, admin, &t.bot.slug, "hello", Some("u1")).await;
    assert_eq!(s, 200, "{reply}");
    let (s, ds) = app
        .call(
            POST,
            "/v1/datasets",
            Some(admin),
            Some(json!({"name": "docs", "provider_id": t.bot.provider_id})),
        )
        .await;
    assert_eq!(s, 201, "{ds}");
    let (s, doc) = app
        .call(
            POST,
            &format!("/v1/datasets/{}/documents", ds["id"].as_str().unwrap()),
            Some(admin),
            Some(json!({"title": "Refunds", "content": "Refunds take five days."})),
        )
        .await;
    assert_eq!(s, 201, "{doc}");
    let (s, budget) = app
        .call(
            POST,
            "/v1/budgets",
            Some(admin),
            Some(json!({"scope": "tenant", "period": "month", "amount_micros": 5_000_000})),
        )
        .await;
    assert_eq!(s, 201, "{budget}");
    let (s, price) = app
        .call(
            PUT,
            "/v1/prices",
            Some(admin),
            Some(json!({"provider_id": t.bot.provider_id, "model": "echo",
                        "input_per_mtok": 1_000_000, "output_per_mtok": 2_000_000})),
        )
        .await;
    assert!(s == 200 || s == 201, "{s} {price}");
    let (read_key, read_key_id) = app
        .key(t.tenant.id, vec![Permission::Read], vec![], None)
        .await;
    let reader = read_key.expose_secret();
    let id_for = |pattern: &str| -> String {
        let s = |v: &Value| v.as_str().unwrap().to_string();
        match pattern.split('/').nth(2).unwrap() {
            "providers" => t.bot.provider_id.to_string(),
            "bots" => t.bot.slug.clone(),
            "api-keys" => read_key_id.to_string(),
            "scopes" => s(&scope["id"]),
            "conversations" => s(&reply["conversation_id"]),
            "datasets" => s(&ds["id"]),
            "documents" => s(&doc["id"]),
            "budgets" => s(&budget["id"]),
            "prices" => s(&price["id"]),
            other => panic!("no id for {other}"),
        }
    };
    let mut reads = 0;
    let mut refused = 0;
    for (m, pattern) in &crate::helpers::routes() {
        // Chat routes (the OpenAI-compatible `/v1/models` too) take a chat
        // key; the operator's take the operator key.
        if !pattern.starts_with("/v1/")
            || pattern.starts_with("/v1/chat")
            || pattern.starts_with("/v1/models")
            || pattern.starts_with("/v1/admin")
            // The widget's public routes (visitor token or any tenant key).
            || pattern.starts_with("/v1/widget/")
            || pattern.starts_with("/v1/messages/")
        {
            continue;
        }
        let mut path = pattern.to_string();
        if pattern.contains("{id}") {
            path = pattern.replace("{id}", &id_for(pattern));
        }
        if *pattern == "/v1/scopes" {
            path.push_str(&format!("?bot_id={}", t.bot.id));
        }
        let method = Method::from_bytes(m.as_str().as_bytes()).unwrap();
        if method == GET {
            let (s, v) = app.call(GET, &path, Some(reader), None).await;
            assert_eq!(s, 200, "GET {path}: {v}");
            if v.get("data").is_some() && *pattern != "/v1/usage" {
                assert!(v["data"].is_array(), "GET {path}: {v}");
            }
            reads += 1;
        } else if *pattern == "/v1/datasets/{id}/search" {
            // Trying retrieval changes nothing: a read.
            let (s, v) = app
                .call(
                    method,
                    &path,
                    Some(reader),
                    Some(json!({"query": "refunds"})),
                )
                .await;
            assert_eq!(s, 200, "POST {path}: {v}");
            reads += 1;
        } else {
            // Refused before the body is looked at: a valid one, an empty
            // one or none at all get the same 403.
            for body in [None, Some(json!({}))] {
                let (s, v) = app.call(method.clone(), &path, Some(reader), body).await;
                assert_eq!((s, code(&v)), (403, "forbidden"), "{m} {path}: {v}");
                assert!(message(&v).contains("admin"), "{v}");
            }
            refused += 1;
        }
    }
    assert_eq!(
        (reads, refused),
        // The bot's widget: one read (GET), two changes (PUT, the secret).
        // Budgets and prices: three reads (the lists, one budget), five
        // changes (create, change, delete a budget; set, delete a price).
        (19 + 1 + 3, 15 + 2 + 5),
        "every management route was tried"
    );
    // Nothing changed: the rows are all still there, and no key was made.
    let (_, keys) = app.call(GET, "/v1/api-keys", Some(reader), None).await;
    assert_eq!(keys["data"].as_array().unwrap().len(), 2, "{keys}");
    assert!(keys.to_string().contains(&read_key_id.to_string()));
    assert!(
        !keys.to_string().contains("\"key\""),
        "no secret in a list: {keys}"
    );
    for p in [
        "/v1/bots/{id}",
        "/v1/scopes/{id}",
        "/v1/datasets/{id}",
        "/v1/documents/{id}",
        "/v1/conversations/{id}",
        "/v1/providers/{id}",
    ] {
        let path = p.replace("{id}", &id_for(p));
        let (s, v) = app.call(GET, &path, Some(reader), None).await;
        assert_eq!(s, 200, "{path}: {v}");
    }
    // The admin key may still change things; the read key may not chat.
    let (s, _) = app
        .call(
            PATCH,
            &format!("/v1/bots/{}", t.bot.slug),
            Some(admin),
            Some(json!({"name": "Renamed"})),
        )
        .await;
    assert_eq!(s, 200);
    let (s, v) = chat(&app, reader, &t.bot.slug, "hello", None).await;
    assert_eq!((s, code(&v)), (403, "forbidden"), "{v}");
    app.stop().await;
}

#[tokio::test]
async fn providers_crud_never_show_the_key_and_refuse_deleting_one_in_use() {
    let app = spawn_app().await;
    let t = app.tenant("prov", "mock", "echo", None).await;
    let k = t.key.expose_secret();
    let (s, cat) = app.call(GET, "/v1/providers/catalog", Some(k), None).await;
    assert_eq!(s, 200);
    let keys: Vec<_> = cat["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["key"].as_str().unwrap())
        .collect();
    assert!(
        keys.contains(&"openai") && keys.contains(&"mock"),
        "{keys:?}"
    );

    let (s, p) = app
        .call(
            POST,
            "/v1/providers",
            Some(k),
            Some(json!({"provider": "openai", "name": "OpenAI", "api_key": "sk-live-SECRET-abcd"})),
        )
        .await;
    assert_eq!(s, 201, "{p}");
    assert_eq!(p["api_key_last4"], "abcd");
    assert!(p.get("api_key").is_none());
    assert!(!p.to_string().contains("SECRET"));
    let pid = p["id"].as_str().unwrap();
    let (s, g) = app
        .call(GET, &format!("/v1/providers/{pid}"), Some(k), None)
        .await;
    assert_eq!((s, &g), (200, &p));
    let (s, l) = app.call(GET, "/v1/providers", Some(k), None).await;
    assert_eq!(s, 200);
    assert_eq!(l["data"].as_array().unwrap().len(), 2);
    assert!(!l.to_string().contains("SECRET"));
    let (s, u) = app
        .call(
            PATCH,
            &format!("/v1/providers/{pid}"),
            Some(k),
            Some(json!({"api_key": "sk-new-SECRET-wxyz", "enabled": false, "base_url": "https://proxy.example/v1"})),
        )
        .await;
    assert_eq!(s, 200, "{u}");
    assert_eq!(
        (&u["api_key_last4"], &u["enabled"]),
        (&json!("wxyz"), &json!(false))
    );
    assert_eq!(u["base_url"], "https://proxy.example/v1");

    for (body, field) in [
        (json!({"provider": "acme", "name": "x"}), "provider"),
        (
            json!({"provider": "mock", "name": "x", "extra": 1}),
            "extra",
        ),
        (json!({"provider": "mock", "name": 1}), "name"),
        (
            json!({"provider": "mock", "name": "x", "base_url": "ftp://x"}),
            "base_url",
        ),
        (json!({"provider": "mock", "name": ""}), "name"),
    ] {
        let (s, v) = app
            .call(POST, "/v1/providers", Some(k), Some(body.clone()))
            .await;
        assert_eq!((s, code(&v)), (400, "invalid_request"), "{body}");
        assert!(message(&v).contains(field), "{body} -> {v}");
    }
    let (s, v) = app
        .call(
            PATCH,
            &format!("/v1/providers/{pid}"),
            Some(k),
            Some(json!({"enabled": "yes"})),
        )
        .await;
    assert_eq!(s, 400);
    assert!(message(&v).contains("enabled"), "{v}");

    // In use by the test bot: 409; unused: 204, then 404.
    let (s, v) = app
        .call(
            DELETE,
            &format!("/v1/providers/{}", t.bot.provider_id),
            Some(k),
            None,
        )
        .await;
    assert_eq!((s, code(&v)), (409, "conflict"), "{v}");
    let (s, _) = app
        .call(DELETE, &format!("/v1/providers/{pid}"), Some(k), None)
        .await;
    assert_eq!(s, 204);
    let (s, _) = app
        .call(GET, &format!("/v1/providers/{pid}"), Some(k), None)
        .await;
    assert_eq!(s, 404);
    let (s, _) = app
        .call(GET, "/v1/providers/not-an-id", Some(k), None)
        .await;
    assert_eq!(s, 404);

    let log = audit_actions(&app, k).await;
    let acts: Vec<_> = log.iter().map(|r| r["action"].as_str().unwrap()).collect();
    assert_eq!(
        acts,
        ["provider.deleted", "provider.updated", "provider.created"]
    );
    for r in &log {
        assert_eq!(r["actor"]["kind"], "api_key");
        assert_eq!(r["actor"]["id"], t.key_id.to_string());
        assert!(!r.to_string().contains("SECRET"));
    }
    assert!(!captured_logs().contains("sk-live-SECRET-abcd"));
    app.stop().await;
}

#[tokio::test]
async fn rotating_a_provider_key_keeps_the_bot_working_with_the_new_key() {
    let (fake, base) = FakeOpenAi::start().await;
    let app = spawn_app().await;
    let t = app.tenant("rot", "openai", "gpt-4o-mini", Some(base)).await;
    let k = t.key.expose_secret();
    let (s, v) = chat(&app, k, &t.bot.slug, "before", None).await;
    assert_eq!(s, 200, "{v}");
    let (s, _) = app
        .call(
            PATCH,
            &format!("/v1/providers/{}", t.bot.provider_id),
            Some(k),
            Some(json!({"api_key": "sk-rotated-0000-NEWKEY"})),
        )
        .await;
    assert_eq!(s, 200);
    let (s, v) = chat(&app, k, &t.bot.slug, "after", None).await;
    assert_eq!(s, 200, "{v}");
    let auths: Vec<String> = fake.requests().into_iter().map(|(a, _)| a).collect();
    assert_eq!(auths.len(), 2);
    assert_eq!(auths[0], format!("Bearer {PROVIDER_SECRET}"));
    assert_eq!(auths[1], "Bearer sk-rotated-0000-NEWKEY");
    app.stop().await;
}

#[tokio::test]
async fn bots_crud_by_id_or_slug_with_validation() {
    let app = spawn_app().await;
    let t = app.tenant("bots", "mock", "echo", None).await;
    let other = app.tenant("bots-other", "mock", "echo", None).await;
    let k = t.key.expose_secret();
    let pid = t.bot.provider_id.to_string();
    let (s, b) = app
        .call(
            POST,
            "/v1/bots",
            Some(k),
            Some(json!({"name": "Support Bot", "provider_id": pid})),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    assert_eq!(
        (&b["slug"], &b["is_public"], &b["status"]),
        (&json!("support-bot"), &json!(false), &json!("active"))
    );
    let id = b["id"].as_str().unwrap();
    for r in [id, "support-bot"] {
        let (s, v) = app.call(GET, &format!("/v1/bots/{r}"), Some(k), None).await;
        assert_eq!((s, v["id"].as_str()), (200, Some(id)));
    }
    let (s, v) = app
        .call(
            PATCH,
            "/v1/bots/support-bot",
            Some(k),
            Some(json!({"system_prompt": "Be terse.", "temperature": null, "status": "disabled"})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        (&v["system_prompt"], &v["temperature"], &v["status"]),
        (&json!("Be terse."), &Value::Null, &json!("disabled"))
    );

    for (body, status, field) in [
        (
            json!({"name": "x", "provider_id": pid, "slug": "Nope!"}),
            400,
            "slug",
        ),
        (
            json!({"name": "x", "provider_id": pid, "temperature": 3.0}),
            400,
            "temperature",
        ),
        (
            json!({"name": "x", "provider_id": pid, "max_tokens": 0}),
            400,
            "max_tokens",
        ),
        (
            json!({"name": "x", "provider_id": pid, "context_tokens": "big"}),
            400,
            "context_tokens",
        ),
        (
            json!({"name": "x", "provider_id": "zzz"}),
            400,
            "provider_id",
        ),
        (
            json!({"name": "x", "provider_id": pid, "unknown": true}),
            400,
            "unknown",
        ),
        (json!({"provider_id": pid}), 400, "name"),
        (
            json!({"name": "x", "provider_id": chatcore::domain::ProviderConfigId::new()}),
            404,
            "provider_id",
        ),
        (
            json!({"name": "x", "provider_id": other.bot.provider_id}),
            404,
            "provider_id",
        ),
        (
            json!({"name": "x", "provider_id": pid, "fallback_provider_id": other.bot.provider_id}),
            404,
            "fallback_provider_id",
        ),
        (
            json!({"name": "x", "provider_id": pid, "dataset_ids": [chatcore::domain::DatasetId::new()]}),
            404,
            "dataset_ids",
        ),
        (
            json!({"name": "x", "provider_id": pid, "slug": "support-bot"}),
            409,
            "slug",
        ),
    ] {
        let (s, v) = app
            .call(POST, "/v1/bots", Some(k), Some(body.clone()))
            .await;
        assert_eq!(s, status, "{body} -> {v}");
        assert!(message(&v).contains(field), "{body} -> {v}");
    }
    let (s, v) = app
        .call(
            PATCH,
            &format!("/v1/bots/{id}"),
            Some(k),
            Some(json!({"slug": t.bot.slug})),
        )
        .await;
    assert_eq!(s, 409, "{v}");
    let (s, _) = app
        .call(DELETE, "/v1/bots/support-bot", Some(k), None)
        .await;
    assert_eq!(s, 204);
    let (s, _) = app
        .call(GET, &format!("/v1/bots/{id}"), Some(k), None)
        .await;
    assert_eq!(s, 404);
    let acts: Vec<_> = audit_actions(&app, k)
        .await
        .iter()
        .map(|r| {
            (
                r["action"].as_str().unwrap().to_string(),
                r["resource_id"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        acts,
        [
            ("bot.deleted".to_string(), id.to_string()),
            ("bot.updated".to_string(), id.to_string()),
            ("bot.created".to_string(), id.to_string())
        ]
    );
    app.stop().await;
}

#[tokio::test]
async fn api_keys_show_the_secret_once_and_revocation_is_immediate() {
    let app = spawn_app().await;
    let t = app.tenant("keys", "mock", "echo", None).await;
    let k = t.key.expose_secret();
    let (s, created) = app
        .call(
            POST,
            "/v1/api-keys",
            Some(k),
            Some(json!({"name": "widget", "permissions": ["chat"], "bot_ids": [t.bot.id], "rate_limit_rpm": 60})),
        )
        .await;
    assert_eq!(s, 201, "{created}");
    let secret = created["key"].as_str().unwrap().to_string();
    assert!(secret.starts_with(created["prefix"].as_str().unwrap()));
    assert!(created.get("secret_hash").is_none());
    let kid = created["id"].as_str().unwrap();
    let (s, v) = chat(&app, &secret, &t.bot.slug, "hi", None).await;
    assert_eq!(s, 200, "{v}");
    let (s, listed) = app.call(GET, "/v1/api-keys", Some(k), None).await;
    assert_eq!(s, 200);
    assert!(!listed.to_string().contains(&secret));
    let mine = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["id"] == kid)
        .unwrap()
        .clone();
    assert_eq!(
        (&mine["name"], &mine["permissions"]),
        (&json!("widget"), &json!(["chat"]))
    );
    assert!(mine.get("key").is_none());
    let (s, one) = app
        .call(GET, &format!("/v1/api-keys/{kid}"), Some(k), None)
        .await;
    assert_eq!(s, 200);
    assert!(one["last_used_at"].is_string(), "last use is shown: {one}");

    for (body, status, field) in [
        (json!({"name": "x", "permissions": []}), 400, "permissions"),
        (
            json!({"name": "x", "permissions": ["root"]}),
            400,
            "permissions",
        ),
        (
            json!({"name": "x", "permissions": ["chat"], "rate_limit_rpm": -1}),
            400,
            "rate_limit_rpm",
        ),
        (
            json!({"name": "x", "permissions": ["chat"], "expires_at": "2001-01-01T00:00:00Z"}),
            400,
            "expires_at",
        ),
        (
            json!({"name": "x", "permissions": ["chat"], "expires_at": "soon"}),
            400,
            "expires_at",
        ),
        (
            json!({"name": "x", "permissions": ["chat"], "bot_ids": [chatcore::domain::BotId::new()]}),
            404,
            "bot_ids",
        ),
    ] {
        let (s, v) = app
            .call(POST, "/v1/api-keys", Some(k), Some(body.clone()))
            .await;
        assert_eq!(s, status, "{body} -> {v}");
        assert!(message(&v).contains(field), "{body} -> {v}");
    }

    let (s, _) = app
        .call(DELETE, &format!("/v1/api-keys/{kid}"), Some(k), None)
        .await;
    assert_eq!(s, 204);
    let (s, v) = chat(&app, &secret, &t.bot.slug, "hi", None).await;
    assert_eq!(
        (s, code(&v)),
        (401, "unauthorized"),
        "revoked at once (the key was cached)"
    );
    let (s, one) = app
        .call(GET, &format!("/v1/api-keys/{kid}"), Some(k), None)
        .await;
    assert_eq!(s, 200);
    assert!(one["revoked_at"].is_string());
    let log = audit_actions(&app, k).await;
    let acts: Vec<_> = log
        .iter()
        .filter(|r| r["action"].as_str().unwrap().starts_with("api_key."))
        .map(|r| r["action"].as_str().unwrap())
        .collect();
    assert_eq!(acts, ["api_key.revoked", "api_key.created"]);
    assert!(!log.iter().any(|r| r.to_string().contains(&secret)));
    app.stop().await;
}

#[tokio::test]
async fn api_key_lists_paginate_across_pages() {
    let app = spawn_app().await;
    let t = app.tenant("pages", "mock", "echo", None).await;
    let k = t.key.expose_secret();
    for i in 0..6 {
        let (s, _) = app
            .call(
                POST,
                "/v1/api-keys",
                Some(k),
                Some(json!({"name": format!("k{i}"), "permissions": ["read"]})),
            )
            .await;
        assert_eq!(s, 201);
    }
    let (items, pages) = all_pages(&app, k, "/v1/api-keys", 3).await;
    assert_eq!((items.len(), pages), (7, 3));
    let mut ids: Vec<_> = items
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_string())
        .collect();
    ids.dedup();
    assert_eq!(ids.len(), 7, "no item twice");
    let (audits, apages) = all_pages(
        &app,
        k,
        // The keys created through the API (not the fixture's, by the system).
        "/v1/audit-logs?action=api_key.created&actor_kind=api_key",
        4,
    )
    .await;
    assert_eq!((audits.len(), apages), (6, 2));
    for (q, field) in [
        ("limit=0", "limit"),
        ("limit=500", "limit"),
        ("limit=x", "limit"),
        ("cursor=zzz", "cursor"),
        ("colour=red", "colour"),
    ] {
        let (s, v) = app
            .call(GET, &format!("/v1/api-keys?{q}"), Some(k), None)
            .await;
        assert_eq!(s, 400, "{q}: {v}");
        assert!(message(&v).contains(field), "{q}: {v}");
    }
    app.stop().await;
}

#[tokio::test]
async fn scopes_are_validated_and_apply_to_the_next_turn() {
    let app = spawn_app().await;
    let t = app.tenant("scopes", "mock", "echo", None).await;
    let k = t.key.expose_secret();
    let (s, _) = chat(&app, k, &t.bot.slug, "say banana", None).await;
    assert_eq!(s, 200, "bot cached");
    for (body, field) in [
        (
            json!({"bot_id": t.bot.id, "kind": "nope", "config": []}),
            "kind",
        ),
        (
            json!({"bot_id": t.bot.id, "kind": "blocked_terms", "config": 5}),
            "config",
        ),
        (
            json!({"bot_id": t.bot.id, "kind": "blocked_patterns", "config": ["("]}),
            "config",
        ),
        (
            json!({"bot_id": t.bot.id, "kind": "blocked_terms"}),
            "config",
        ),
    ] {
        let (s, v) = app
            .call(POST, "/v1/scopes", Some(k), Some(body.clone()))
            .await;
        assert_eq!(s, 400, "{body} -> {v}");
        assert!(message(&v).contains(field), "{body} -> {v}");
    }
    let (s, v) = app
        .call(POST, "/v1/scopes", Some(k), Some(json!({"bot_id": chatcore::domain::BotId::new(), "kind": "blocked_terms", "config": ["x"]})))
        .await;
    assert_eq!(s, 404, "{v}");
    assert!(message(&v).contains("bot_id"));
    let (s, sc) = app
        .call(
            POST,
            "/v1/scopes",
            Some(k),
            Some(json!({"bot_id": t.bot.slug, "kind": "blocked_terms", "config": ["banana"]})),
        )
        .await;
    assert_eq!(s, 201, "{sc}");
    let (s, v) = chat(&app, k, &t.bot.slug, "say banana", None).await;
    assert_eq!((s, code(&v)), (403, "guardrail_blocked"), "{v}");
    let sid = sc["id"].as_str().unwrap();
    let (s, l) = app
        .call(
            GET,
            &format!("/v1/scopes?bot_id={}", t.bot.id),
            Some(k),
            None,
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(l["data"][0]["id"], sid);
    let (s, v) = app.call(GET, "/v1/scopes", Some(k), None).await;
    assert_eq!(s, 400);
    assert!(message(&v).contains("bot_id"));
    let (s, g) = app
        .call(GET, &format!("/v1/scopes/{sid}"), Some(k), None)
        .await;
    assert_eq!((s, &g["kind"]), (200, &json!("blocked_terms")));
    let (s, _) = app
        .call(DELETE, &format!("/v1/scopes/{sid}"), Some(k), None)
        .await;
    assert_eq!(s, 204);
    let (s, _) = chat(&app, k, &t.bot.slug, "say banana", None).await;
    assert_eq!(s, 200, "the guardrail is gone at once");
    let (s, _) = app
        .call(GET, &format!("/v1/scopes/{sid}"), Some(k), None)
        .await;
    assert_eq!(s, 404);
    app.stop().await;
}

#[tokio::test]
async fn conversations_list_filter_show_messages_and_delete() {
    let app = spawn_app().await;
    let t = app.tenant("conv", "mock", "echo", None).await;
    let k = t.key.expose_secret();
    let (_, a) = chat(&app, k, &t.bot.slug, "first", Some("alice")).await;
    let cid = a["conversation_id"].as_str().unwrap().to_string();
    let (s, _) = app
        .call(
            POST,
            "/v1/chat",
            Some(k),
            Some(json!({"bot_id": t.bot.slug, "message": "second", "conversation_id": cid})),
        )
        .await;
    assert_eq!(s, 200);
    chat(&app, k, &t.bot.slug, "other", Some("bob")).await;

    let (s, l) = app.call(GET, "/v1/conversations", Some(k), None).await;
    assert_eq!((s, l["data"].as_array().unwrap().len()), (200, 2));
    let (_, l) = app
        .call(GET, "/v1/conversations?user_id=alice", Some(k), None)
        .await;
    assert_eq!(l["data"].as_array().unwrap().len(), 1);
    assert_eq!(l["data"][0]["id"], cid.as_str());
    let (_, l) = app
        .call(
            GET,
            &format!("/v1/conversations?bot_id={}", t.bot.id),
            Some(k),
            None,
        )
        .await;
    assert_eq!(l["data"].as_array().unwrap().len(), 2);
    let (_, l) = app
        .call(
            GET,
            "/v1/conversations?since=2999-01-01T00:00:00Z",
            Some(k),
            None,
        )
        .await;
    assert_eq!(l["data"].as_array().unwrap().len(), 0);
    let (_, l) = app
        .call(
            GET,
            "/v1/conversations?until=2999-01-01T00:00:00Z&since=2000-01-01T00:00:00Z",
            Some(k),
            None,
        )
        .await;
    assert_eq!(l["data"].as_array().unwrap().len(), 2);
    for q in [
        "since=yesterday",
        "until=2000-01-01T00:00:00Z&since=2001-01-01T00:00:00Z",
    ] {
        let (s, v) = app
            .call(GET, &format!("/v1/conversations?{q}"), Some(k), None)
            .await;
        assert_eq!(s, 400, "{q}: {v}");
        assert!(
            message(&v).contains("since") || message(&v).contains("until"),
            "{v}"
        );
    }
    let (s, v) = app
        .call(GET, "/v1/conversations?bot_id=no-such-bot", Some(k), None)
        .await;
    assert_eq!(s, 404, "{v}");

    let (s, c) = app
        .call(GET, &format!("/v1/conversations/{cid}"), Some(k), None)
        .await;
    assert_eq!((s, &c["end_user_id"]), (200, &json!("alice")));
    let (s, m) = app
        .call(
            GET,
            &format!("/v1/conversations/{cid}/messages"),
            Some(k),
            None,
        )
        .await;
    assert_eq!(s, 200);
    let msgs = m["data"].as_array().unwrap();
    let roles: Vec<_> = msgs
        .iter()
        .map(|m| (m["role"].as_str().unwrap(), m["content"].as_str().unwrap()))
        .collect();
    assert_eq!(
        roles,
        [
            ("user", "first"),
            ("assistant", "first"),
            ("user", "second"),
            ("assistant", "second")
        ]
    );
    let a = &msgs[1];
    assert_eq!(a["status"], "complete");
    assert!(a["prompt_tokens"].as_i64().unwrap() > 0);
    assert!(a["completion_tokens"].as_i64().unwrap() > 0);
    assert!(a["total_tokens"].as_i64().unwrap() > 0);
    assert!(a["response_time_ms"].is_i64());
    let (_, p1) = app
        .call(
            GET,
            &format!("/v1/conversations/{cid}/messages?limit=3"),
            Some(k),
            None,
        )
        .await;
    assert_eq!(p1["data"].as_array().unwrap().len(), 3);
    assert!(p1["next_cursor"].is_string());

    let (s, _) = app
        .call(DELETE, &format!("/v1/conversations/{cid}"), Some(k), None)
        .await;
    assert_eq!(s, 204);
    let (s, _) = app
        .call(
            GET,
            &format!("/v1/conversations/{cid}/messages"),
            Some(k),
            None,
        )
        .await;
    assert_eq!(s, 404);
    let id: chatcore::domain::ConversationId = cid.parse().unwrap();
    let left = app
        .store()
        .list_messages(t.tenant.id, id, chatcore::store::PageRequest::first(10))
        .await
        .unwrap();
    assert!(left.data.is_empty(), "messages are erased");
    let log = audit_actions(&app, k).await;
    assert_eq!(log[0]["action"], "conversation.deleted");
    assert_eq!(log[0]["resource_id"], cid.as_str());
    app.stop().await;
}

#[tokio::test]
async fn audit_logs_filter_by_action_actor_and_time() {
    let app = spawn_app().await;
    let t = app.tenant("aud", "mock", "echo", None).await;
    let k = t.key.expose_secret();
    app.call(
        POST,
        "/v1/api-keys",
        Some(k),
        Some(json!({"name": "a", "permissions": ["chat"]})),
    )
    .await;
    app.call(
        PATCH,
        &format!("/v1/bots/{}", t.bot.id),
        Some(k),
        Some(json!({"name": "B"})),
    )
    .await;
    let (s, v) = app
        .call(GET, "/v1/audit-logs?action=bot.updated", Some(k), None)
        .await;
    assert_eq!(s, 200);
    let d = v["data"].as_array().unwrap();
    assert_eq!(d.len(), 1);
    assert_eq!(d[0]["metadata"]["fields"], json!(["name"]));
    assert_eq!(d[0]["request_id"].as_str().map(str::len), Some(36));
    let (_, v) = app
        .call(
            GET,
            &format!("/v1/audit-logs?actor_kind=api_key&actor_id={}", t.key_id),
            Some(k),
            None,
        )
        .await;
    assert_eq!(v["data"].as_array().unwrap().len(), 2);
    let (_, v) = app
        .call(GET, "/v1/audit-logs?actor_kind=operator", Some(k), None)
        .await;
    assert_eq!(v["data"].as_array().unwrap().len(), 0);
    let (_, v) = app
        .call(
            GET,
            "/v1/audit-logs?since=2999-01-01T00:00:00Z",
            Some(k),
            None,
        )
        .await;
    assert_eq!(v["data"].as_array().unwrap().len(), 0);
    let (s, v) = app
        .call(GET, "/v1/audit-logs?actor_kind=robot", Some(k), None)
        .await;
    assert_eq!(s, 400);
    assert!(message(&v).contains("actor_kind"));
    app.stop().await;
}

#[tokio::test]
async fn usage_counts_turns_and_tokens_per_bot_key_and_day() {
    let app = spawn_app().await;
    let t = app.tenant("use", "mock", "echo", None).await;
    let k = t.key.expose_secret();
    let mut total = 0;
    let mut conversations = vec![];
    for m in ["one", "two two", "three three three"] {
        let (s, v) = chat(&app, k, &t.bot.slug, m, None).await;
        assert_eq!(s, 200);
        total += v["usage"]["total_tokens"].as_u64().unwrap();
        conversations.push(v["conversation_id"].as_str().unwrap().to_string());
    }
    // Deleting a conversation erases its messages, not its usage.
    let (s, _) = app
        .call(
            DELETE,
            &format!("/v1/conversations/{}", conversations[0]),
            Some(k),
            None,
        )
        .await;
    assert_eq!(s, 204);
    app.call(
        POST,
        "/v1/chat/public",
        None,
        Some(json!({"bot_id": t.bot.slug, "message": "pub"})),
    )
    .await;
    let (s, v) = app.call(GET, "/v1/usage?group_by=key", Some(k), None).await;
    assert_eq!(s, 200, "{v}");
    let d = v["data"].as_array().unwrap();
    assert_eq!(d.len(), 2, "{v}");
    let mine = d
        .iter()
        .find(|r| r["group"] == t.key_id.to_string())
        .unwrap();
    assert_eq!(
        (mine["requests"].as_u64(), mine["total_tokens"].as_u64()),
        (Some(3), Some(total))
    );
    assert!(d.iter().any(|r| r["group"].is_null() && r["requests"] == 1));
    let (_, v) = app.call(GET, "/v1/usage", Some(k), None).await;
    assert_eq!(v["group_by"], "bot");
    // The last 30 UTC days, today included, at midnights.
    let tomorrow = (chrono::Utc::now().date_naive() + chrono::Days::new(1))
        .format("%Y-%m-%dT00:00:00Z")
        .to_string();
    assert_eq!(v["until"], tomorrow.as_str(), "{v}");
    assert_eq!(v["data"][0]["group"], t.bot.id.to_string());
    assert_eq!(v["data"][0]["requests"], 4);
    let (_, v) = app.call(GET, "/v1/usage?group_by=day", Some(k), None).await;
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    assert_eq!(v["data"][0]["group"], today.as_str(), "{v}");
    let (_, v) = app
        .call(
            GET,
            "/v1/usage?since=2999-01-01T00:00:00Z&until=2999-02-01T00:00:00Z",
            Some(k),
            None,
        )
        .await;
    assert_eq!(v["data"].as_array().unwrap().len(), 0);
    // Times are widened to whole UTC days; bare days are accepted.
    let (s, v) = app
        .call(
            GET,
            "/v1/usage?since=2026-01-10T13:00:00Z&until=2026-01-12T00:00:01%2B01:00",
            Some(k),
            None,
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        (v["since"].as_str(), v["until"].as_str()),
        (Some("2026-01-10T00:00:00Z"), Some("2026-01-12T00:00:00Z"))
    );
    let today = chrono::Utc::now().date_naive();
    let (s, v) = app
        .call(
            GET,
            &format!(
                "/v1/usage?group_by=day&since={today}&until={}",
                today + chrono::Days::new(1)
            ),
            Some(k),
            None,
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["data"][0]["requests"], 4, "{v}");
    for bad in [
        "since=2026-01-02&until=2026-01-01",
        "since=2026-01-02&until=2026-01-02",
        "since=yesterday",
    ] {
        let (s, v) = app
            .call(GET, &format!("/v1/usage?{bad}"), Some(k), None)
            .await;
        assert_eq!(s, 400, "{bad}: {v}");
        assert!(message(&v).contains("since"), "{v}");
    }
    let (s, v) = app
        .call(GET, "/v1/usage?group_by=hour", Some(k), None)
        .await;
    assert_eq!(s, 400);
    assert!(message(&v).contains("group_by"));
    app.stop().await;
}

#[tokio::test]
async fn another_tenants_ids_are_404_on_every_route() {
    let app = spawn_app().await;
    let a = app.tenant("owner", "mock", "echo", None).await;
    let b = app.tenant("intruder", "mock", "echo", None).await;
    let ak = a.key.expose_secret();
    let bk = b.key.expose_secret();
    let (_, reply) = chat(&app, ak, &a.bot.slug, "private", None).await;
    let conv = reply["conversation_id"].as_str().unwrap().to_string();
    let (_, sc) = app
        .call(
            POST,
            "/v1/scopes",
            Some(ak),
            Some(json!({"bot_id": a.bot.id, "kind": "max_input_length", "config": 100})),
        )
        .await;
    let sid = sc["id"].as_str().unwrap().to_string();
    let bot = a.bot.id.to_string();
    let prov = a.bot.provider_id.to_string();
    let key = a.key_id.to_string();
    let cases: Vec<(Method, String, Option<Value>)> = vec![
        (GET, format!("/v1/providers/{prov}"), None),
        (
            PATCH,
            format!("/v1/providers/{prov}"),
            Some(json!({"name": "x"})),
        ),
        (DELETE, format!("/v1/providers/{prov}"), None),
        (GET, format!("/v1/bots/{bot}"), None),
        (PATCH, format!("/v1/bots/{bot}"), Some(json!({"name": "x"}))),
        (DELETE, format!("/v1/bots/{bot}"), None),
        (
            POST,
            "/v1/bots".into(),
            Some(json!({"name": "x", "provider_id": prov})),
        ),
        (GET, format!("/v1/api-keys/{key}"), None),
        (DELETE, format!("/v1/api-keys/{key}"), None),
        (
            POST,
            "/v1/api-keys".into(),
            Some(json!({"name": "x", "permissions": ["chat"], "bot_ids": [bot]})),
        ),
        (GET, format!("/v1/scopes/{sid}"), None),
        (DELETE, format!("/v1/scopes/{sid}"), None),
        (GET, format!("/v1/scopes?bot_id={bot}"), None),
        (
            POST,
            "/v1/scopes".into(),
            Some(json!({"bot_id": bot, "kind": "blocked_terms", "config": ["x"]})),
        ),
        (GET, format!("/v1/conversations/{conv}"), None),
        (GET, format!("/v1/conversations/{conv}/messages"), None),
        (DELETE, format!("/v1/conversations/{conv}"), None),
        (GET, format!("/v1/conversations?bot_id={bot}"), None),
    ];
    for (m, path, body) in cases {
        let (s, v) = app.call(m.clone(), &path, Some(bk), body).await;
        assert_eq!((s, code(&v)), (404, "not_found"), "{m} {path}: {v}");
    }
    // Lists show nothing of A's.
    for path in ["/v1/conversations", "/v1/audit-logs", "/v1/usage"] {
        let (_, v) = app.call(GET, path, Some(bk), None).await;
        assert!(!v.to_string().contains(&bot), "{path}");
        assert!(!v.to_string().contains(&conv), "{path}");
    }
    // A's rows are untouched.
    let (s, _) = chat(&app, ak, &a.bot.slug, "still here", None).await;
    assert_eq!(s, 200);
    let (s, v) = app
        .call(GET, &format!("/v1/scopes/{sid}"), Some(ak), None)
        .await;
    assert_eq!(s, 200, "{v}");
    app.stop().await;
}

#[tokio::test]
async fn the_catalog_shows_list_prices_with_the_date_taken() {
    let app = spawn_app().await;
    let t = app.tenant("prices", "mock", "echo", None).await;
    let (s, v) = app
        .call(
            GET,
            "/v1/providers/catalog",
            Some(t.key.expose_secret()),
            None,
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let entry = |key: &str| {
        v["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["key"] == key)
            .unwrap_or_else(|| panic!("{key} in {v}"))
            .clone()
    };
    let openai = entry("openai");
    let mini = openai["prices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["model"] == "gpt-4o-mini")
        .expect("gpt-4o-mini has a list price")
        .clone();
    assert!(mini["input_per_mtok"].as_i64().unwrap() > 0);
    assert!(mini["output_per_mtok"].as_i64().unwrap() > mini["input_per_mtok"].as_i64().unwrap());
    assert_eq!(mini["currency"], "USD");
    assert!(chrono::NaiveDate::parse_from_str(mini["as_of"].as_str().unwrap(), "%Y-%m-%d").is_ok());
    assert!(!entry("anthropic")["prices"].as_array().unwrap().is_empty());
    assert!(!entry("google")["prices"].as_array().unwrap().is_empty());
    // Vendors without list prices: none (their models are unpriced until
    // a tenant prices them).
    assert!(entry("mock")["prices"].as_array().unwrap().is_empty());
    assert!(
        entry("openai_compatible")["prices"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    app.stop().await;
}
