//! A tiny HTTP/1 server (hyper 1 on 127.0.0.1:0) to stand in for a vendor,
//! plus helpers shared by the vendor fakes.
//!
//! The server runs on the test's own runtime, so tests with paused time
//! drive it too. Each fake checks requests as the vendor would and answers
//! in the vendor's documented shape; its behaviour follows the model name
//! (see `Scenario`).

use std::collections::HashMap;
use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::HeaderValue;
use hyper::service::service_fn;
use hyper::{HeaderMap, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// The fake API key every fake server expects.
pub const KEY: &str = "sk-test-FAKEKEY-0123456789abcdef";

/// A request as the fake saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Recorded {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

pub type Body = UnsyncBoxBody<Bytes, io::Error>;
pub type Handler =
    Arc<dyn Fn(Recorded, Arc<ServerState>) -> BoxFuture<'static, Response<Body>> + Send + Sync>;

/// What the fake remembers across requests.
#[derive(Default)]
pub struct ServerState {
    pub requests: Mutex<Vec<Recorded>>,
    pub connections: AtomicUsize,
    /// Attempts per model, for "fail N times then succeed" scenarios.
    pub attempts: Mutex<HashMap<String, usize>>,
}

impl ServerState {
    /// Counts an attempt for `model` and returns its number (1-based).
    pub fn attempt(&self, model: &str) -> usize {
        let mut a = self.attempts.lock().unwrap();
        let n = a.entry(model.to_owned()).or_default();
        *n += 1;
        *n
    }
}

pub struct TestServer {
    pub addr: SocketAddr,
    pub state: Arc<ServerState>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TestServer {
    pub async fn start(handler: Handler) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(ServerState::default());
        let st = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                st.connections.fetch_add(1, Ordering::SeqCst);
                let handler = handler.clone();
                let st = st.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let handler = handler.clone();
                        let st = st.clone();
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = body
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            let rec = Recorded {
                                method: parts.method.to_string(),
                                path: parts.uri.path().to_owned(),
                                query: parts.uri.query().map(str::to_owned),
                                headers: parts.headers,
                                body,
                            };
                            st.requests.lock().unwrap().push(rec.clone());
                            Ok::<_, Infallible>(handler(rec, st).await)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Self { addr, state, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.state.requests.lock().unwrap().clone()
    }

    pub fn connections(&self) -> usize {
        self.state.connections.load(Ordering::SeqCst)
    }
}

/// How a scripted stream ends.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum End {
    /// Normally, after the last chunk.
    Clean,
    /// The connection is aborted (a body error makes hyper reset it).
    Abort,
    /// Never: the server goes silent with the connection open.
    Hang,
}

pub fn json(status: u16, value: serde_json::Value) -> Response<Body> {
    let mut r = Response::new(
        Full::new(Bytes::from(value.to_string()))
            .map_err(|never: Infallible| match never {})
            .boxed_unsync(),
    );
    *r.status_mut() = StatusCode::from_u16(status).unwrap();
    r.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/json"));
    r
}

pub fn with_header(mut r: Response<Body>, name: &'static str, value: &str) -> Response<Body> {
    r.headers_mut()
        .insert(name, HeaderValue::from_str(value).unwrap());
    r
}

/// An SSE response: each chunk after `delay` (tokio time), then `end`.
pub fn sse(chunks: Vec<String>, delay: Duration, end: End) -> Response<Body> {
    let body: BoxStream<'static, Result<Frame<Bytes>, io::Error>> = futures::stream::iter(chunks)
        .then(move |c| async move {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            Ok(Frame::data(Bytes::from(c)))
        })
        .chain(
            futures::stream::once(async move {
                match end {
                    End::Clean => Ok(None),
                    End::Abort => Err(io::Error::new(io::ErrorKind::ConnectionReset, "cut")),
                    End::Hang => std::future::pending().await,
                }
            })
            .filter_map(|r: Result<Option<Frame<Bytes>>, io::Error>| async move { r.transpose() }),
        )
        .boxed();
    let mut r = Response::new(BodyExt::boxed_unsync(StreamBody::new(body)));
    r.headers_mut().insert(
        "content-type",
        HeaderValue::from_static("text/event-stream"),
    );
    r
}

/// Never answers.
pub fn hang() -> BoxFuture<'static, Response<Body>> {
    std::future::pending().boxed()
}

/// The deterministic reply of every fake: it depends on the input.
pub fn reply_for(last_user: &str) -> String {
    format!("Echo from the fake: {last_user}")
}

/// Pieces of a reply as streamed (concatenate to the reply).
pub fn pieces(reply: &str) -> Vec<String> {
    reply.split_inclusive(' ').map(str::to_owned).collect()
}

/// Word-based token counts used by the fakes.
pub fn words(s: &str) -> u32 {
    s.split_whitespace().count() as u32
}

/// Behaviour selected by the model name.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Scenario {
    Normal,
    /// 401 regardless of the key.
    Unauthorized,
    /// 429 with `retry-after: 7`.
    RateLimited,
    /// 500.
    ServerError,
    /// Context length exceeded.
    ContextTooLong,
    /// Fails with 503 on the first two attempts, then answers.
    FlakyTwice,
    /// Stream closes cleanly midway, without the final event.
    Cut,
    /// Stream connection is reset midway.
    Abort,
    /// A vendor error event after some deltas.
    ErrorMid,
    /// A vendor error event before any delta.
    ErrorEarly,
    /// No response at all.
    Hang,
    /// Some deltas, then silence.
    HangMid,
    /// Stream/response without usage.
    NoUsage,
    /// An unexpected status (418) with a body echoing the key.
    Teapot,
}

pub fn scenario(model: &str) -> Scenario {
    match model {
        "unauthorized" => Scenario::Unauthorized,
        "rate-limited" => Scenario::RateLimited,
        "server-error" => Scenario::ServerError,
        "context-too-long" => Scenario::ContextTooLong,
        "flaky-twice" => Scenario::FlakyTwice,
        "cut" => Scenario::Cut,
        "abort" => Scenario::Abort,
        "error-mid" => Scenario::ErrorMid,
        "error-early" => Scenario::ErrorEarly,
        "hang" => Scenario::Hang,
        "hang-mid" => Scenario::HangMid,
        "no-usage" => Scenario::NoUsage,
        "teapot" => Scenario::Teapot,
        _ => Scenario::Normal,
    }
}

/// Collects a stream into (text of deltas, final event or error).
pub async fn drain(
    mut s: chatcore::provider::ChatStream,
) -> (
    String,
    Result<chatcore::provider::StreamEnd, chatcore::provider::ProviderError>,
) {
    use chatcore::provider::ChatEvent;
    let mut text = String::new();
    while let Some(item) = s.next().await {
        match item {
            Ok(ChatEvent::Delta(t)) => text.push_str(&t),
            Ok(ChatEvent::ToolCall(_)) => {}
            Ok(ChatEvent::Done(end)) => {
                assert!(
                    s.next().await.is_none(),
                    "an event followed the final event"
                );
                return (text, Ok(end));
            }
            Err(e) => {
                assert_clean_error(&e);
                assert!(s.next().await.is_none(), "an event followed an error");
                return (text, Err(e));
            }
        }
    }
    panic!("the stream ended without a final event or error");
}

/// Asserts that no rendering of `e` contains the fake key.
pub fn assert_no_key<T: std::fmt::Debug>(what: &str, v: &T) {
    let s = format!("{v:?}");
    assert!(!s.contains(KEY), "{what} leaks the key: {s}");
    assert!(!s.contains("FAKEKEY"), "{what} leaks part of the key: {s}");
}

/// Asserts that neither `Debug` nor `Display` of an error shows the key.
pub fn assert_clean_error(e: &chatcore::provider::ProviderError) {
    assert_no_key("error Debug", e);
    let d = e.to_string();
    assert!(!d.contains("FAKEKEY"), "error Display leaks the key: {d}");
}

impl TestServer {
    /// Asserts that no request carried the key in its path or query.
    pub fn assert_no_key_in_urls(&self) {
        for r in self.requests() {
            let url = format!("{}?{}", r.path, r.query.unwrap_or_default());
            assert!(!url.contains("FAKEKEY"), "key in URL {url}");
        }
    }
}

/// The egress policy of the tests: the wire-format servers listen on
/// 127.0.0.1, which the default policy refuses; the allow list names it.
pub fn local_egress() -> chatcore::provider::EgressPolicy {
    chatcore::provider::EgressPolicy::parse("127.0.0.1").expect("a valid allow list")
}

pub fn test_timeouts() -> chatcore::provider::Timeouts {
    chatcore::provider::Timeouts {
        connect: Duration::from_secs(5),
        first_byte: Duration::from_secs(20),
        idle: Duration::from_secs(10),
    }
}

/// Keeps a paused clock moving in 1 ms steps while the test runs.
///
/// With paused time, tokio jumps the clock to the next timer whenever the
/// runtime is idle, even while bytes are in flight on a loopback socket (the
/// kernel may deliver them a moment later). Without a nearer timer, that
/// jump would be straight to a client timeout that should not fire. This
/// ticker is always the nearest timer, so the clock only ever moves 1 ms
/// per idle moment, and a timeout fires only after the wait it measures.
pub struct Ticker(tokio::task::JoinHandle<()>);

impl Drop for Ticker {
    fn drop(&mut self) {
        self.0.abort();
    }
}

pub fn ticker() -> Ticker {
    Ticker(tokio::spawn(async {
        loop {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }))
}

pub use chatcore::provider::mock::value_for;

/// A call a fake makes.
#[derive(Debug, Clone)]
pub struct FakeCall {
    pub id: String,
    pub name: String,
    pub args: serde_json::Value,
}

/// The calls a fake answers with: the forced tool, or every tool (the
/// first only when parallel calls are off), arguments from the schemas.
pub fn fake_calls(
    tools: &[(String, serde_json::Value)],
    forced: Option<&str>,
    parallel: bool,
    text: &str,
    id_prefix: &str,
) -> Vec<FakeCall> {
    let mut picked: Vec<&(String, serde_json::Value)> = match forced {
        Some(name) => tools.iter().filter(|(n, _)| n == name).collect(),
        None => tools.iter().collect(),
    };
    if !parallel {
        picked.truncate(1);
    }
    picked
        .into_iter()
        .enumerate()
        .map(|(i, (name, schema))| FakeCall {
            id: format!("{id_prefix}{i:02}fake{}", words(text)),
            name: name.clone(),
            args: value_for(schema, text),
        })
        .collect()
}

/// `s` in pieces of `n` characters, as vendors stream arguments.
pub fn fragments(s: &str, n: usize) -> Vec<String> {
    let chars: Vec<char> = s.chars().collect();
    chars.chunks(n).map(|c| c.iter().collect()).collect()
}

/// The text before the calls when the model chose to call (not forced).
pub const PREAMBLE: &str = "Let me check.";

/// Two tools, the model free to call them (and to say something first).
pub fn two_tools_request(model: &str) -> chatcore::provider::ChatRequest {
    use chatcore::provider::{ChatMessage, ChatRequest, ToolDefinition};
    let mut r = ChatRequest::new(vec![
        ChatMessage::system("Use the tools."),
        ChatMessage::user("Weather and time in Paris"),
    ])
    .with_model(model);
    r.tools = vec![
        ToolDefinition {
            name: "get_weather".into(),
            description: Some("Weather of a city".into()),
            parameters: serde_json::json!({"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}}, "required": ["city"]}),
        },
        ToolDefinition {
            name: "get_time".into(),
            description: None,
            parameters: serde_json::json!({"type": "object", "properties": {"zone": {"type": "string"}}}),
        },
    ];
    r
}

/// A small PNG as a data URL.
pub const PNG_DATA_URL: &str = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==";

/// Collects a stream into (text, assembled tool calls, final event).
pub async fn drain_tools(
    mut s: chatcore::provider::ChatStream,
) -> (
    String,
    Vec<chatcore::provider::ToolCall>,
    chatcore::provider::StreamEnd,
) {
    use chatcore::provider::{ChatEvent, ToolCallBuffer};
    let mut text = String::new();
    let mut calls = ToolCallBuffer::default();
    let mut seen: Vec<u32> = Vec::new();
    while let Some(item) = s.next().await {
        match item.expect("stream item") {
            ChatEvent::Delta(t) => text.push_str(&t),
            ChatEvent::ToolCall(d) => {
                if !seen.contains(&d.index) {
                    assert!(
                        d.id.is_some() && d.name.is_some(),
                        "first piece without id and name: {d:?}"
                    );
                    seen.push(d.index);
                }
                calls.push(&d);
            }
            ChatEvent::Done(end) => {
                assert!(
                    s.next().await.is_none(),
                    "an event followed the final event"
                );
                return (text, calls.finish(), end);
            }
        }
    }
    panic!("the stream ended without a final event");
}

/// The checks every vendor's tool round trip must pass: text first, two
/// calls in order, the same streamed and complete, results answered.
pub async fn check_two_tool_round_trip(p: &dyn chatcore::provider::Provider, model: &str) {
    use chatcore::provider::{ChatMessage, FinishReason};
    let req = two_tools_request(model);
    let r = p.complete(&req).await.unwrap();
    assert_eq!(r.content, PREAMBLE);
    assert_eq!(r.finish_reason, FinishReason::ToolCalls);
    let names: Vec<&str> = r.tool_calls.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["get_weather", "get_time"]);
    assert_ne!(
        r.tool_calls[0].id, r.tool_calls[1].id,
        "ids tell calls apart"
    );
    let args: serde_json::Value = serde_json::from_str(&r.tool_calls[0].arguments).unwrap();
    assert_eq!(
        args,
        serde_json::json!({"city": "Weather and time in Paris", "days": 1})
    );
    let (text, calls, end) = drain_tools(p.stream(&req).await.unwrap()).await;
    assert_eq!(text, PREAMBLE);
    assert_eq!(end.finish_reason, FinishReason::ToolCalls);
    let shape = |v: &[chatcore::provider::ToolCall]| -> Vec<(String, serde_json::Value)> {
        v.iter()
            .map(|c| (c.name.clone(), serde_json::from_str(&c.arguments).unwrap()))
            .collect()
    };
    assert_eq!(shape(&calls), shape(&r.tool_calls), "streamed as completed");
    // The results go back; the answer is text.
    let mut follow = req.clone();
    follow.messages.push(ChatMessage::assistant_tool_calls(
        r.content.clone(),
        r.tool_calls.clone(),
    ));
    follow.messages.push(ChatMessage::tool_result(
        r.tool_calls[0].id.clone(),
        r#"{"forecast":"sunny"}"#,
    ));
    follow.messages.push(ChatMessage::tool_result(
        r.tool_calls[1].id.clone(),
        "12:00",
    ));
    let answer = p.complete(&follow).await.unwrap();
    assert!(answer.tool_calls.is_empty(), "{:?}", answer.tool_calls);
    assert!(!answer.content.is_empty());
    assert_ne!(answer.finish_reason, FinishReason::ToolCalls);
}
