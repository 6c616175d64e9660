//! Budgets over HTTP: a turn that does not fit answers 429
//! `budget_exceeded` with `Retry-After` until the period ends, on
//! `/v1/chat` and on the OpenAI-compatible route, and stores nothing; one
//! that fits is charged exactly its stored cost.

use chatcore::domain::*;
use chatcore::store::*;
use secrecy::ExposeSecret;
use serde_json::{Value, json};

use crate::helpers::*;

async fn conversations(app: &TestApp, t: TenantId) -> usize {
    app.store()
        .list_conversations(t, ConversationFilter::default(), PageRequest::first(50))
        .await
        .unwrap()
        .data
        .len()
}

#[tokio::test]
async fn a_turn_over_budget_is_refused_with_retry_after_and_nothing_is_stored() {
    let app = spawn_app().await;
    let t = app.tenant("budget", "mock", "echo", None).await;
    let k = t.key.expose_secret();
    // 1 micro-unit per output token: the bot's worst case is its cap (100).
    let (s, price) = app
        .call(
            reqwest::Method::PUT,
            "/v1/prices",
            Some(k),
            Some(json!({"provider_id": t.bot.provider_id, "model": "echo",
                        "input_per_mtok": 0, "output_per_mtok": 1_000_000})),
        )
        .await;
    assert!(s == 200 || s == 201, "{s} {price}");
    let (s, budget) = app
        .call(
            reqwest::Method::POST,
            "/v1/budgets",
            Some(k),
            Some(json!({"scope": "tenant", "period": "day", "amount_micros": 50})),
        )
        .await;
    assert_eq!(s, 201, "{budget}");
    let id = budget["id"]
        .as_str()
        .or(budget["budget"]["id"].as_str())
        .unwrap()
        .to_string();

    let ask = json!({"bot_id": t.bot.slug, "message": "hello budget"});
    let r = app.post_json("/v1/chat", Some(&t.key), ask.clone()).await;
    assert_eq!(r.status(), 429);
    let after: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (1..=86_400).contains(&after),
        "until the UTC day ends: {after}"
    );
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["code"], "budget_exceeded");
    // The same through OpenAI's protocol, in its shape.
    let r = app
        .client
        .post(app.url("/v1/chat/completions"))
        .bearer_auth(k)
        .json(&json!({"model": t.bot.slug, "messages": [{"role": "user", "content": "hello"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    let e: Value = r.json().await.unwrap();
    assert_eq!(
        (e["error"]["type"].as_str(), e["error"]["code"].as_str()),
        (Some("rate_limit_error"), Some("budget_exceeded"))
    );
    assert_eq!(conversations(&app, t.tenant.id).await, 0, "nothing stored");

    // Room for the worst case: the turn runs and is charged its real cost.
    let (s, v) = app
        .call(
            reqwest::Method::PATCH,
            &format!("/v1/budgets/{id}"),
            Some(k),
            Some(json!({"amount_micros": 1_000})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let r = app.post_json("/v1/chat", Some(&t.key), ask).await;
    assert_eq!(r.status(), 200);
    let reply: Value = r.json().await.unwrap();
    let cost = reply["cost"]["amount_micros"]
        .as_i64()
        .unwrap_or_else(|| panic!("the reply carries its cost: {reply}"));
    assert!(cost > 0);
    assert_eq!(
        (&reply["cost"]["currency"], &reply["cost"]["priced"]),
        (&json!("USD"), &json!(true))
    );
    app.store().flush().await.unwrap();
    let (s, state) = app
        .call(
            reqwest::Method::GET,
            &format!("/v1/budgets/{id}"),
            Some(k),
            None,
        )
        .await;
    assert_eq!(s, 200, "{state}");
    assert_eq!(state["spent_micros"], cost, "{state}");
    assert_eq!(state["reserved_micros"], 0, "{state}");
    assert_eq!(state["remaining_micros"], 1_000 - cost, "{state}");
    app.stop().await;
}

#[tokio::test]
async fn the_operator_caps_a_tenant_and_its_admins_see_it() {
    let app = spawn_app_with_operator().await;
    let op = OPERATOR_KEY;
    let t = app.tenant("capped", "mock", "echo", None).await;
    let path = format!("/v1/admin/tenants/{}/budgets", t.tenant.id);
    let cap = json!({"period": "month", "amount_micros": 25_000_000});
    // Only the operator.
    let (s, _) = app
        .call(
            reqwest::Method::POST,
            &path,
            Some(t.key.expose_secret()),
            Some(cap.clone()),
        )
        .await;
    assert!(s == 401 || s == 403, "{s}");
    let (s, v) = app
        .call(reqwest::Method::POST, &path, Some(op), Some(cap.clone()))
        .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(
        (v["scope"].as_str(), v["period"].as_str()),
        (Some("tenant"), Some("month"))
    );
    assert_eq!(v["amount_micros"], 25_000_000);
    // The tenant's admins see it.
    let (s, list) = app
        .call(
            reqwest::Method::GET,
            "/v1/budgets",
            Some(t.key.expose_secret()),
            None,
        )
        .await;
    assert_eq!(s, 200, "{list}");
    assert_eq!(list["data"][0]["id"], v["id"]);
    // Another tenant's budgets are untouched; an unknown tenant is 404.
    let other = app.tenant("uncapped", "mock", "echo", None).await;
    let (_, list) = app
        .call(
            reqwest::Method::GET,
            "/v1/budgets",
            Some(other.key.expose_secret()),
            None,
        )
        .await;
    assert_eq!(list["data"], json!([]));
    let (s, _) = app
        .call(
            reqwest::Method::POST,
            &format!("/v1/admin/tenants/{}/budgets", TenantId::new()),
            Some(op),
            Some(cap),
        )
        .await;
    assert_eq!(s, 404);
    // Bad input: a clear 400.
    let (s, e) = app
        .call(
            reqwest::Method::POST,
            &path,
            Some(op),
            Some(json!({"period": "year", "amount_micros": 0})),
        )
        .await;
    assert_eq!(s, 400, "{e}");
    app.stop().await;
}
