//! Traces over OTLP: the real binary, pointed at a small in-process OTLP/HTTP
//! receiver by `OTEL_EXPORTER_OTLP_ENDPOINT`, exports its request spans and
//! a `chat` span per turn with tenant, bot, provider, model, tokens and time
//! to first token; what is queued is sent when the server stops.

use std::convert::Infallible;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};

/// Receives `POST /v1/traces` (OTLP/HTTP, JSON bodies) and keeps each body.
async fn receiver() -> (String, Arc<Mutex<Vec<(String, Value)>>>) {
    let got: Arc<Mutex<Vec<(String, Value)>>> = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let g = got.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let g = g.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let g = g.clone();
                    async move {
                        let path = req.uri().path().to_string();
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                        g.lock().unwrap().push((path, v));
                        Ok::<_, Infallible>(
                            hyper::Response::builder()
                                .header("content-type", "application/json")
                                .body(Full::new(Bytes::from_static(b"{}")))
                                .unwrap(),
                        )
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (format!("http://{addr}"), got)
}

/// A span's attributes as `key -> value` (OTLP JSON `AnyValue`s unwrapped).
fn attributes(span: &Value) -> serde_json::Map<String, Value> {
    span["attributes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| {
            let v = &a["value"];
            let v = v
                .get("stringValue")
                .cloned()
                .or_else(|| {
                    v.get("intValue").map(|i| {
                        json!(
                            i.as_str()
                                .and_then(|s| s.parse::<i64>().ok())
                                .or(i.as_i64())
                        )
                    })
                })
                .or_else(|| v.get("boolValue").cloned())
                .unwrap_or(Value::Null);
            (a["key"].as_str().unwrap().to_string(), v)
        })
        .collect()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn chat_spans_reach_an_otlp_receiver_with_tenant_bot_model_tokens_and_ttft() {
    crate::helpers::init();
    let (endpoint, got) = receiver().await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut server = Command::new(env!("CARGO_BIN_EXE_chatcore-server"))
        .env(
            "CHATCORE_DATABASE_URL",
            format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display()),
        )
        .env("CHATCORE_LISTEN", format!("127.0.0.1:{port}"))
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)
        .env("OTEL_SERVICE_NAME", "chatcore-test")
        .env("RUST_LOG", "info")
        .env_remove("OPENAI_API_KEY")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let mut up = false;
    for _ in 0..100 {
        if http.get(format!("{base}/healthz")).send().await.is_ok() {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(up, "the server did not start");
    for stream in [false, true] {
        let r = http
            .post(format!("{base}/v1/chat/public"))
            .header("x-request-id", format!("otlp-test-{stream}"))
            // The demo bot answers its own server's origin (its widget).
            .header("origin", format!("http://127.0.0.1:{port}"))
            .json(&json!({"bot_id": "demo", "message": "hello traces", "stream": stream}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let _ = r.text().await.unwrap();
    }
    // A graceful stop sends what is still queued.
    let pid = server.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = tokio::task::spawn_blocking(move || server.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");

    let bodies = got.lock().unwrap().clone();
    assert!(!bodies.is_empty(), "no export reached the receiver");
    assert!(bodies.iter().all(|(path, _)| path == "/v1/traces"));
    let mut spans = Vec::new();
    for (_, b) in &bodies {
        for rs in b["resourceSpans"].as_array().into_iter().flatten() {
            let service = attributes(&rs["resource"])
                .get("service.name")
                .cloned()
                .unwrap_or_default();
            assert_eq!(service, "chatcore-test");
            for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
                spans.extend(ss["spans"].as_array().into_iter().flatten().cloned());
            }
        }
    }
    let chats: Vec<_> = spans.iter().filter(|s| s["name"] == "chat").collect();
    assert_eq!(chats.len(), 2, "one chat span per turn: {spans:?}");
    for c in &chats {
        let a = attributes(c);
        assert!(a["tenant"].as_str().is_some_and(|t| t.len() == 36), "{a:?}");
        assert!(a["bot"].as_str().is_some_and(|t| t.len() == 36), "{a:?}");
        assert_eq!(a["provider"], "mock");
        assert_eq!(a["model"], "slow-echo");
        assert_eq!(a["status"], "complete");
        assert!(
            a["prompt_tokens"].as_i64().is_some_and(|n| n > 0),
            "{a:?} in {c}"
        );
        assert!(a["completion_tokens"].as_i64().unwrap() > 0, "{a:?}");
        assert!(a.contains_key("ttft_ms"), "{a:?}");
    }
    // Each chat span sits inside its request's span, which carries the id.
    let requests: Vec<_> = spans
        .iter()
        .filter(|s| {
            s["name"] == "request" && attributes(s).get("route") == Some(&json!("/v1/chat/public"))
        })
        .collect();
    assert_eq!(requests.len(), 2, "{spans:?}");
    for r in &requests {
        let a = attributes(r);
        assert!(a["request_id"].as_str().unwrap().starts_with("otlp-test-"));
        assert!(
            chats
                .iter()
                .any(|c| c["parentSpanId"] == r["spanId"] && c["traceId"] == r["traceId"]),
            "a chat span under {a:?}"
        );
    }
}
