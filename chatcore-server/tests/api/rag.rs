//! Datasets, documents and answers with cited sources.

use chatcore::domain::*;
use chatcore::store::*;
use chatcore::testkit::fixtures::SystemWrites;
use secrecy::ExposeSecret;
use serde_json::{Value, json};

use crate::helpers::*;

async fn wait_status(app: &TestApp, key: &secrecy::SecretString, doc: &str, want: &str) -> Value {
    eventually(|| async {
        let r = app
            .client
            .get(app.url(&format!("/v1/documents/{doc}")))
            .bearer_auth(key.expose_secret())
            .send()
            .await
            .unwrap();
        let v: Value = r.json().await.unwrap();
        (v["status"] == want).then_some(v)
    })
    .await
}

const DOCS: &[(&str, &str)] = &[
    (
        "Billing",
        "# Billing\n\nInvoices are sent on the first day of each month. Refunds take five business days.",
    ),
    (
        "Security",
        "# Security\n\nAll data is encrypted at rest with AES-256. Passwords are hashed with argon2.",
    ),
    (
        "Office",
        "# Office\n\nThe Lisbon office is open from nine to six. Parking is available in the basement.",
    ),
];

#[tokio::test]
async fn upload_index_search_and_answer_with_sources_sqlite() {
    upload_index_search_and_answer_with_sources(spawn_app().await).await;
}

#[tokio::test]
async fn upload_index_search_and_answer_with_sources_postgres() {
    if let Some(app) = spawn_app_pg().await {
        // CI installs pgvector (.ci/pgvector.sh): its path is the one tested.
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            assert_eq!(app.store().vector_search_kind(), "pgvector-hnsw");
        }
        upload_index_search_and_answer_with_sources(app).await;
    }
}

async fn upload_index_search_and_answer_with_sources(app: TestApp) {
    let t = app.tenant("rag", "mock", "echo", None).await;
    let other = app.tenant("rag-other", "mock", "echo", None).await;
    let key = &t.key;
    let pc = app
        .store()
        .list_provider_configs(t.tenant.id, PageRequest::first(5))
        .await
        .unwrap()
        .data[0]
        .clone();
    let r = app
        .post_json(
            "/v1/datasets",
            Some(key),
            json!({"name": "handbook", "provider_id": pc.id}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let ds: Value = r.json().await.unwrap();
    assert_eq!(ds["embedding_dim"], 384, "learned from the provider");
    let ds_id = ds["id"].as_str().unwrap().to_string();

    let mut ids = Vec::new();
    for (title, content) in DOCS {
        let r = app
            .post_json(
                &format!("/v1/datasets/{ds_id}/documents"),
                Some(key),
                json!({"title": title, "content": content, "mime_type": "text/markdown", "metadata": {"team": title.to_lowercase()}}),
            )
            .await;
        assert_eq!(r.status(), 201);
        let d: Value = r.json().await.unwrap();
        assert!(["pending", "indexing", "ready"].contains(&d["status"].as_str().unwrap()));
        ids.push(d["id"].as_str().unwrap().to_string());
    }
    // A raw upload with its content type.
    let r = app
        .client
        .post(app.url(&format!("/v1/datasets/{ds_id}/documents?title=Raw")))
        .bearer_auth(key.expose_secret())
        .header("content-type", "text/plain")
        .body("Plain words about penguins.")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    for id in &ids {
        let d = wait_status(&app, key, id, "ready").await;
        assert!(d["chunk_count"].as_u64().unwrap() >= 1);
    }
    // Uploading the same content again is a no-op (same document, not re-indexed).
    let again = app
        .post_json(
            &format!("/v1/datasets/{ds_id}/documents"),
            Some(key),
            json!({"title": "Billing", "content": DOCS[0].1, "mime_type": "text/markdown", "metadata": {"team": "billing"}}),
        )
        .await;
    assert_eq!(again.json::<Value>().await.unwrap()["id"], ids[0].as_str());

    // Retrieval: the document with the query's words comes first.
    let r = app
        .post_json(
            &format!("/v1/datasets/{ds_id}/search"),
            Some(key),
            json!({"query": "how long do refunds take", "top_k": 3}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let hits: Value = r.json().await.unwrap();
    assert_eq!(hits["data"][0]["title"], "Billing", "{hits}");
    let r = app
        .post_json(
            &format!("/v1/datasets/{ds_id}/search"),
            Some(key),
            json!({"query": "is the office parking in the basement", "top_k": 3, "filter": {"team": "office"}}),
        )
        .await;
    let hits: Value = r.json().await.unwrap();
    assert!(
        hits["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|h| h["title"] == "Office"),
        "{hits}"
    );

    // A bot linked to the dataset answers with cited sources.
    let bot = app
        .store()
        .create_bot(
            t.tenant.id,
            NewBot {
                name: "Helpdesk".into(),
                slug: "helpdesk".into(),
                system_prompt: "Answer from the sources.".into(),
                provider_id: pc.id,
                model: Some("echo".into()),
                fallback_provider_id: None,
                temperature: None,
                max_tokens: None,
                context_tokens: 4000,
                is_public: false,
                dataset_ids: vec![ds_id.parse().unwrap()],
            },
        )
        .await
        .unwrap();
    let r = app
        .post_json(
            "/v1/chat",
            Some(key),
            json!({"bot_id": bot.slug, "message": "how long do refunds take?"}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let reply: Value = r.json().await.unwrap();
    let sources = reply["sources"].as_array().unwrap();
    assert!(!sources.is_empty());
    assert_eq!(sources[0]["title"], "Billing");
    assert!(sources[0]["snippet"].as_str().unwrap().contains("Refunds"));
    let conv: ConversationId = reply["conversation_id"].as_str().unwrap().parse().unwrap();
    let msgs = app
        .store()
        .list_messages(t.tenant.id, conv, PageRequest::first(5))
        .await
        .unwrap()
        .data;
    assert_eq!(
        msgs[1].source_chunk_ids.len(),
        sources.len(),
        "the answer records the chunks it used"
    );
    // Streamed: the sources come in the done event.
    let r = app
        .post_json(
            "/v1/chat",
            Some(key),
            json!({"bot_id": bot.slug, "message": "refunds?", "stream": true}),
        )
        .await;
    let events = parse_sse(&r.text().await.unwrap());
    assert!(
        !events.last().unwrap().1["sources"]
            .as_array()
            .unwrap()
            .is_empty()
    );

    // Another tenant sees none of it.
    let r = app
        .client
        .get(app.url(&format!("/v1/datasets/{ds_id}")))
        .bearer_auth(other.key.expose_secret())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = app
        .post_json(
            &format!("/v1/datasets/{ds_id}/search"),
            Some(&other.key),
            json!({"query": "refunds"}),
        )
        .await;
    assert_eq!(r.status(), 404);
    let r = app
        .client
        .get(app.url(&format!("/v1/documents/{}", ids[0])))
        .bearer_auth(other.key.expose_secret())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    // A deleted document no longer answers.
    let r = app
        .client
        .delete(app.url(&format!("/v1/documents/{}", ids[0])))
        .bearer_auth(key.expose_secret())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let r = app
        .post_json(
            &format!("/v1/datasets/{ds_id}/search"),
            Some(key),
            json!({"query": "how long do refunds take", "top_k": 5}),
        )
        .await;
    let hits: Value = r.json().await.unwrap();
    assert!(
        hits["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|h| h["title"] != "Billing"),
        "{hits}"
    );
    app.stop().await;
}

#[tokio::test]
async fn ingestion_failures_are_marked_failed_with_a_reason() {
    let app = spawn_app().await;
    let t = app.tenant("ragfail", "mock", "echo", None).await;
    // An OpenAI provider whose upstream is unreachable: embeddings fail.
    let dead = app
        .store()
        .create_provider_config(
            t.tenant.id,
            NewProviderConfig {
                provider: "openai".into(),
                name: "dead".into(),
                api_key: Some(app.app.chat.keyring().seal(
                    t.tenant.id,
                    &secrecy::SecretString::from(PROVIDER_SECRET.to_string()),
                )),
                base_url: Some("http://127.0.0.1:1/v1".into()),
                default_model: None,
                enabled: true,
            },
        )
        .await
        .unwrap();
    let r = app
        .post_json(
            "/v1/datasets",
            Some(&t.key),
            json!({"name": "x", "provider_id": dead.id, "embedding_dim": 8}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let ds = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = app
        .post_json(
            &format!("/v1/datasets/{ds}/documents"),
            Some(&t.key),
            json!({"title": "a", "content": "some text"}),
        )
        .await;
    let id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let d = wait_status(&app, &t.key, &id, "failed").await;
    assert!(!d["error"].as_str().unwrap().is_empty());
    assert!(!d["error"].as_str().unwrap().contains(PROVIDER_SECRET));
    // Bad input is a clear 4xx.
    let r = app
        .post_json(
            &format!("/v1/datasets/{ds}/documents"),
            Some(&t.key),
            json!({"title": "b", "content": "x", "mime_type": "application/pdf"}),
        )
        .await;
    assert_eq!(r.status(), 400);
    let r = app
        .post_json(
            &format!("/v1/datasets/{ds}/documents"),
            Some(&t.key),
            json!({"title": "", "content": "x"}),
        )
        .await;
    assert_eq!(r.status(), 400);
    app.stop().await;
}

/// A one-page PDF whose page says `text` (Helvetica, one line per `\n`),
/// with a correct cross-reference table.
fn tiny_pdf(text: &str) -> Vec<u8> {
    let mut content = String::from("BT /F1 14 Tf 72 720 Td 16 TL\n");
    for line in text.lines() {
        let escaped = line
            .replace('\\', "\\\\")
            .replace('(', "\\(")
            .replace(')', "\\)");
        content.push_str(&format!("({escaped}) Tj T*\n"));
    }
    content.push_str("ET");
    let objects = [
        "<< /Type /Catalog /Pages 2 0 R >>".to_string(),
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_string(),
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R \
         /Resources << /Font << /F1 5 0 R >> >> >>"
            .to_string(),
        format!(
            "<< /Length {} >>\nstream\n{content}\nendstream",
            content.len()
        ),
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>"
            .to_string(),
    ];
    let mut pdf = b"%PDF-1.4\n".to_vec();
    let mut offsets = Vec::new();
    for (i, body) in objects.iter().enumerate() {
        offsets.push(pdf.len());
        pdf.extend_from_slice(format!("{} 0 obj\n{body}\nendobj\n", i + 1).as_bytes());
    }
    let xref = pdf.len();
    pdf.extend_from_slice(
        format!("xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1).as_bytes(),
    );
    for o in offsets {
        pdf.extend_from_slice(format!("{o:010} 00000 n \n").as_bytes());
    }
    pdf.extend_from_slice(
        format!(
            "trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n",
            objects.len() + 1
        )
        .as_bytes(),
    );
    pdf
}

#[tokio::test]
async fn pdf_uploads_are_read_and_answer() {
    let app = spawn_app().await;
    let t = app.tenant("ragpdf", "mock", "echo", None).await;
    let pc = app
        .store()
        .list_provider_configs(t.tenant.id, PageRequest::first(5))
        .await
        .unwrap()
        .data[0]
        .clone();
    let r = app
        .post_json(
            "/v1/datasets",
            Some(&t.key),
            json!({"name": "pdfs", "provider_id": pc.id}),
        )
        .await;
    let ds = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let upload = |title: &str, body: Vec<u8>| {
        app.client
            .post(app.url(&format!("/v1/datasets/{ds}/documents?title={title}")))
            .bearer_auth(t.key.expose_secret())
            .header("content-type", "application/pdf")
            .body(body)
            .send()
    };
    let r = upload(
        "Warranty",
        tiny_pdf("Warranty terms\nEvery kettle carries a warranty of (two) years."),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 201);
    let d: Value = r.json().await.unwrap();
    assert_eq!(d["mime_type"], "application/pdf");
    let id = d["id"].as_str().unwrap().to_string();
    let d = wait_status(&app, &t.key, &id, "ready").await;
    assert!(d["chunk_count"].as_u64().unwrap() >= 1);
    let r = app
        .post_json(
            &format!("/v1/datasets/{ds}/search"),
            Some(&t.key),
            json!({"query": "kettle warranty", "top_k": 1, "mode": "text"}),
        )
        .await;
    let hits: Value = r.json().await.unwrap();
    assert_eq!(hits["data"][0]["title"], "Warranty", "{hits}");
    let text = hits["data"][0]["text"].as_str().unwrap();
    assert!(
        text.contains("kettle carries a warranty of (two) years"),
        "{text}"
    );

    // Not a PDF, or a broken one: a 400 naming the body, nothing stored.
    for body in [
        b"just some text".to_vec(),
        b"%PDF-1.4\n1 0 obj << /Type /Catalog >> garbage".to_vec(),
        tiny_pdf("x")[..60].to_vec(),
    ] {
        let r = upload("Broken", body).await.unwrap();
        assert_eq!(r.status(), 400);
        let e: Value = r.json().await.unwrap();
        assert!(
            e["error"]["message"].as_str().unwrap().starts_with("body:"),
            "{e}"
        );
    }
    let r = app
        .client
        .get(app.url(&format!("/v1/datasets/{ds}/documents")))
        .bearer_auth(t.key.expose_secret())
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.json::<Value>().await.unwrap()["data"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    app.stop().await;
}
