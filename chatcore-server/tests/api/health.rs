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
    let catalog = app.store().list_catalog().await.unwrap();
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
async fn metrics_label_public_chat_tokens_with_the_bots_tenant_and_show_the_pool() {
    let app = spawn_app().await;
    let t = app.tenant("pubmet", "mock", "echo", None).await;
    for stream in [false, true] {
        let r = app
            .post_json(
                "/v1/chat/public",
                None,
                serde_json::json!({"bot_id": t.bot.id, "message": "hello there", "stream": stream}),
            )
            .await;
        assert_eq!(r.status(), 200);
        r.text().await.unwrap();
    }
    let text = crate::helpers::eventually(|| async {
        let r = app.client.get(app.url("/metrics")).send().await.unwrap();
        let text = r.text().await.unwrap();
        text.contains("chatcore_chat_time_to_first_token_seconds_count 1")
            .then_some(text)
    })
    .await;
    let line = text
        .lines()
        .find(|l| l.starts_with("chatcore_tokens_total{"))
        .unwrap_or_else(|| panic!("no token counter: {text}"));
    assert!(
        line.starts_with(&format!(
            "chatcore_tokens_total{{tenant=\"{}\",provider=\"mock\"}} ",
            t.tenant.id
        )),
        "{line}"
    );
    let tokens: u64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(tokens > 0, "{line}");
    assert!(!text.contains("tenant=\"public\""), "{text}");
    // The test database is SQLite in memory: one pool of one connection.
    assert!(
        text.contains("# TYPE chatcore_db_pool_connections gauge"),
        "{text}"
    );
    assert!(
        text.contains("chatcore_db_pool_max_connections{pool=\"main\"} 1"),
        "{text}"
    );
    let gauge = |state: &str| -> u64 {
        let prefix = format!("chatcore_db_pool_connections{{pool=\"main\",state=\"{state}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("no {state} gauge: {text}"))
            .parse()
            .unwrap()
    };
    assert_eq!(gauge("in_use") + gauge("idle"), 1, "{text}");
    app.stop().await;
}

#[tokio::test]
async fn pool_gauges_of_a_sqlite_file_show_its_writer_pool_too() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("m.db");
    let app = crate::helpers::spawn_app_with(|c| {
        c.database_url = format!("sqlite://{}?mode=rwc", db.display());
    })
    .await;
    let metrics = || async {
        let r = app.client.get(app.url("/metrics")).send().await.unwrap();
        r.text().await.unwrap()
    };
    let text = metrics().await;
    for pool in ["main", "writer"] {
        assert!(
            text.contains(&format!(
                "chatcore_db_pool_max_connections{{pool=\"{pool}\"}} "
            )),
            "{text}"
        );
    }
    assert!(
        text.contains("chatcore_db_pool_max_connections{pool=\"writer\"} 1"),
        "{text}"
    );
    let stats = app.store().pool_stats();
    let main = stats.iter().find(|p| p.pool == "main").unwrap();
    assert!(
        main.max >= 1 && main.in_use + main.idle <= main.max,
        "{stats:?}"
    );
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
