use crate::helpers::spawn_app;

#[tokio::test]
async fn healthz_and_readyz_answer_json() {
    let app = spawn_app().await;
    let r = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().contains_key("x-request-id"));
    assert_eq!(r.json::<serde_json::Value>().await.unwrap()["status"], "ok");
    let r = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["status"],
        "ready"
    );
    app.stop().await;
}

#[tokio::test]
async fn unknown_routes_get_the_json_error_format_with_the_request_id() {
    let app = spawn_app().await;
    let r = app
        .client
        .get(app.url("/nope"))
        .header("x-request-id", "req-123")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.headers()["x-request-id"], "req-123");
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "not_found");
    assert_eq!(body["error"]["request_id"], "req-123");
    let r = app.client.post(app.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 405);
    app.stop().await;
}

#[tokio::test]
async fn the_database_is_migrated_on_start() {
    let app = spawn_app().await;
    let catalog = app.app.store.list_catalog().await.unwrap();
    assert_eq!(catalog.len(), 5);
    app.stop().await;
}

#[tokio::test]
async fn shutdown_stops_accepting() {
    let app = spawn_app().await;
    let url = app.url("/healthz");
    let client = app.client.clone();
    app.stop().await;
    assert!(client.get(url).send().await.is_err(), "no longer listening");
}

#[tokio::test]
async fn metrics_count_requests_latency_and_tokens() {
    let app = spawn_app().await;
    let t = app.tenant("met", "mock", "echo", None).await;
    let r = app
        .post_json(
            "/v1/chat",
            Some(&t.key),
            serde_json::json!({"bot_id": t.bot.slug, "message": "hello"}),
        )
        .await;
    assert_eq!(r.status(), 200);
    app.client.get(app.url("/nope")).send().await.unwrap();
    let r = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = r.text().await.unwrap();
    assert!(
        text.contains(
            r#"chatcore_http_requests_total{method="POST",route="/v1/chat",status="200"} 1"#
        ),
        "{text}"
    );
    assert!(text.contains(
        r#"chatcore_http_requests_total{method="any",route="unmatched",status="404"} 1"#
    ));
    assert!(text.contains("chatcore_chat_duration_seconds_count 1"));
    assert!(text.contains(&format!(
        "chatcore_tokens_total{{tenant=\"{}\",provider=\"mock\"}}",
        t.tenant.id
    )));
    assert!(text.contains("chatcore_open_streams 0"));
    app.stop().await;
}

#[tokio::test]
async fn the_openapi_document_is_served() {
    let app = spawn_app().await;
    let r = app
        .client
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let doc: serde_json::Value = r.json().await.unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    assert!(doc["paths"]["/v1/bots/{id}"]["patch"]["requestBody"].is_object());
    app.stop().await;
}
