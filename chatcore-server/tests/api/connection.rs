//! The connection and the protocol edges: slow clients are closed by the
//! timeouts, `HEAD` answers on GET routes, a 405 names what is allowed,
//! bytes after a JSON body are refused, and JSON log lines carry the
//! request's span.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::*;

/// A server whose timeouts are short: 1 s for headers, bodies and idle
/// connections (the header timeout at 30 s where a test needs the idle
/// one alone).
async fn impatient(header_secs: u64) -> TestApp {
    spawn_app_with(|c| {
        c.header_read_timeout_secs = header_secs;
        c.body_timeout_secs = 1;
        c.idle_timeout_secs = 1;
    })
    .await
}

/// Reads until the server closes the connection (or `limit` passes):
/// what it sent, and whether it closed.
async fn read_to_close(s: &mut TcpStream, limit: Duration) -> (String, bool) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Err(_) => return (String::from_utf8_lossy(&got).into_owned(), false),
            Ok(Ok(0)) | Ok(Err(_)) => return (String::from_utf8_lossy(&got).into_owned(), true),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

#[tokio::test]
async fn partial_headers_are_closed_by_the_header_timeout() {
    let app = impatient(1).await;
    let mut s = TcpStream::connect(app.addr).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let t = Instant::now();
    let (_, closed) = read_to_close(&mut s, Duration::from_secs(10)).await;
    assert!(closed, "still open after {:?}", t.elapsed());
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    app.stop().await;
}

#[tokio::test]
async fn a_body_announced_and_never_sent_is_a_408_and_the_connection_closes() {
    let app = impatient(1).await;
    let mut s = TcpStream::connect(app.addr).await.unwrap();
    s.write_all(
        b"POST /v1/chat/public HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"bot",
    )
    .await
    .unwrap();
    let t = Instant::now();
    let (reply, closed) = read_to_close(&mut s, Duration::from_secs(10)).await;
    assert!(closed, "still open after {:?}: {reply}", t.elapsed());
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
    assert!(reply.contains("request_timeout"), "{reply}");
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    app.stop().await;
}

#[tokio::test]
async fn a_header_line_now_and_then_does_not_keep_the_connection() {
    let app = impatient(1).await;
    let mut s = TcpStream::connect(app.addr).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\n").await.unwrap();
    let t = Instant::now();
    let mut closed = false;
    let mut buf = [0u8; 1024];
    for i in 0..20 {
        // A header line every 300 ms: each arrives well inside any
        // per-line timeout, but the head as a whole never ends.
        if s.write_all(format!("X-Slow-{i}: 1\r\n").as_bytes())
            .await
            .is_err()
        {
            closed = true;
            break;
        }
        match tokio::time::timeout(Duration::from_millis(300), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed = true;
                break;
            }
            _ => {}
        }
    }
    assert!(closed, "still open after {:?}", t.elapsed());
    assert!(t.elapsed() < Duration::from_secs(4), "{:?}", t.elapsed());
    app.stop().await;
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed() {
    // The header timeout (which hyper also runs between requests) is long
    // here, so it is the idle timeout that closes.
    let app = impatient(30).await;
    let mut s = TcpStream::connect(app.addr).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 4096];
    let n = s.read(&mut buf).await.unwrap();
    let first = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    let t = Instant::now();
    let (_, closed) = read_to_close(&mut s, Duration::from_secs(10)).await;
    assert!(closed, "still open after {:?}", t.elapsed());
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    app.stop().await;
}

#[tokio::test]
async fn a_connection_in_use_is_not_idle() {
    let app = impatient(30).await;
    let client = reqwest::Client::new();
    // Requests every 400 ms for 2.5 s on one kept-alive connection: never
    // idle for the 1 s timeout, so each succeeds.
    for _ in 0..6 {
        let r = client.get(app.url("/healthz")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    app.stop().await;
}

#[tokio::test]
async fn head_answers_on_get_routes() {
    let app = spawn_app().await;
    let t = app.tenant("head", "mock", "echo", None).await;
    let r = app.client.head(app.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().contains_key("x-request-id"));
    assert!(r.bytes().await.unwrap().is_empty());
    let r = app
        .client
        .head(app.url("/v1/bots"))
        .bearer_auth(secrecy::ExposeSecret::expose_secret(&t.key))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.bytes().await.unwrap().is_empty());
    // The guard applies to HEAD as to GET.
    let r = app.client.head(app.url("/v1/bots")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    app.stop().await;
}

#[tokio::test]
async fn a_405_carries_allow_and_the_error_body() {
    let app = spawn_app().await;
    let r = app
        .client
        .delete(app.url("/healthz"))
        .header("x-request-id", "req-405")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    let allow = r.headers()["allow"].to_str().unwrap().to_string();
    assert!(allow.contains("GET") && allow.contains("HEAD"), "{allow}");
    assert_eq!(r.headers()["content-type"], "application/json");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "method_not_allowed");
    assert_eq!(v["error"]["request_id"], "req-405");
    let r = app.client.put(app.url("/v1/bots/x")).send().await.unwrap();
    assert_eq!(r.status(), 405);
    let allow = r.headers()["allow"].to_str().unwrap().to_string();
    for m in ["GET", "PATCH", "DELETE"] {
        assert!(allow.contains(m), "{allow}");
    }
    app.stop().await;
}

#[tokio::test]
async fn bytes_after_a_json_body_are_a_400() {
    let app = spawn_app().await;
    let t = app.tenant("trail", "mock", "echo", None).await;
    let send = |body: String| {
        app.client
            .post(app.url("/v1/chat/public"))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let ok = json!({"bot_id": t.bot.id, "message": "hi"}).to_string();
    for trailing in [" {}", "x", "\n[1]", "}"] {
        let r = send(format!("{ok}{trailing}")).await.unwrap();
        assert_eq!(r.status(), 400, "{trailing:?}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], "invalid_request");
        assert!(
            v["error"]["message"].as_str().unwrap().contains("trailing"),
            "{v}"
        );
    }
    // Whitespace after the value is fine.
    let r = send(format!("{ok} \n")).await.unwrap();
    assert_eq!(r.status(), 200);
    app.stop().await;
}

#[tokio::test]
async fn json_log_lines_carry_the_request_span() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_chatcore-server"))
        .arg("serve")
        .env(
            "CHATCORE_DATABASE_URL",
            format!("sqlite://{}?mode=rwc", dir.path().join("l.db").display()),
        )
        .env("CHATCORE_LISTEN", format!("127.0.0.1:{port}"))
        .env("CHATCORE_LOG_FORMAT", "json")
        .env("RUST_LOG", "info,chatcore_server=debug")
        .env_remove("OPENAI_API_KEY")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let client = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/healthz");
    let mut up = false;
    for _ in 0..200 {
        if let Ok(r) = client
            .get(&url)
            .header("x-request-id", "json-log-1")
            .send()
            .await
        {
            assert_eq!(r.status(), 200);
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(up, "the server did not start");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut found = None;
    let mut seen = vec![];
    while found.is_none() && Instant::now() < deadline {
        let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) else {
            continue;
        };
        if line.trim_start().starts_with('{') {
            let v: Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
            if v["span"]["request_id"] == "json-log-1" {
                found = Some(v);
            }
        }
        seen.push(line);
    }
    let _ = child.kill();
    let _ = child.wait();
    let v = found.unwrap_or_else(|| panic!("no line with the request id: {seen:#?}"));
    assert_eq!(v["span"]["method"], "GET", "{v}");
    assert_eq!(v["span"]["route"], "/healthz", "{v}");
    assert_eq!(v["span"]["status"], 200, "{v}");
    assert!(v["timestamp"].is_string() && v["level"].is_string(), "{v}");
    // Only JSON on stdout besides the first start's banner.
    assert!(
        seen.iter()
            .filter(|l| l.contains("\"level\""))
            .all(|l| serde_json::from_str::<Value>(l).is_ok())
    );
}
