//! `wire-mock`: a local OpenAI upstream for the wire benchmark
//! (`benches/wire/main.rs`). It answers `POST /v1/chat/completions` at once
//! in OpenAI's wire format: a `chat.completion` object, or with
//! `"stream": true` server-sent `chat.completion.chunk`s, a final usage chunk
//! when `stream_options.include_usage` is set, and `data: [DONE]`.
//!
//! A model whose name starts with `slow` streams slowly instead: the role
//! chunk and a first word at once, then one word every `--slow-interval-ms`,
//! for at most `--slow-chunks` words. The open-streams phase holds thousands
//! of these open.
//!
//! ```sh
//! cargo run --release -p chatcore-benches --bin wire-mock -- --listen 127.0.0.1:9100
//! ```
//!
//! It prints `listening <addr>` on stdout once bound. With
//! `--exit-on-stdin-eof` it exits when its standard input closes, killing the
//! processes named by `watch <pid>` lines read there first: the benchmark
//! starts it with a pipe, so the mock and the server die with the benchmark
//! even when it is killed with SIGKILL.

use std::borrow::Cow;
use std::convert::Infallible;
use std::io::BufRead;
use std::time::Duration;

use bytes::Bytes;
use clap::Parser;
use futures::StreamExt;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode, header};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Deserialize;

/// The answer, split in words for streaming.
const REPLY: &str = "Hello! This is a short answer from the mock upstream.";
/// Tokens reported in `usage` (what a tokenizer would roughly say).
const PROMPT_TOKENS: u32 = 20;
const COMPLETION_TOKENS: u32 = 12;
const CREATED: u64 = 1_767_225_600;

#[derive(Parser, Debug, Clone)]
#[command(about = "A local OpenAI upstream that answers at once (or slowly)")]
struct Args {
    /// Address to bind; port 0 picks a free one.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: String,
    /// Worker threads of the runtime.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Slow models: time between two words.
    #[arg(long, default_value_t = 3000)]
    slow_interval_ms: u64,
    /// Slow models: words sent before the stream ends (bounds its length).
    #[arg(long, default_value_t = 100)]
    slow_chunks: u32,
    /// Exit when standard input closes (see the module docs).
    #[arg(long)]
    exit_on_stdin_eof: bool,
}

/// The part of OpenAI's request the mock looks at.
#[derive(Deserialize)]
struct ChatRequest<'a> {
    #[serde(borrow)]
    model: Cow<'a, str>,
    #[serde(default)]
    stream: bool,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
}

#[derive(Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

type Body = BoxBody<Bytes, Infallible>;

fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).boxed()
}

/// OpenAI's error shape.
fn error(status: StatusCode, kind: &str, message: &str) -> Response<Body> {
    let body = serde_json::json!({
        "error": {"message": message, "type": kind, "param": null, "code": null}
    });
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(full(body.to_string()))
        .expect("a valid response")
}

fn completion(model: &str) -> String {
    let model = serde_json::to_string(model).expect("a string serializes");
    let content = serde_json::to_string(REPLY).expect("a string serializes");
    format!(
        concat!(
            r#"{{"id":"chatcmpl-bench","object":"chat.completion","created":{created},"model":{model},"#,
            r#""choices":[{{"index":0,"message":{{"role":"assistant","content":{content},"refusal":null,"annotations":[]}},"logprobs":null,"finish_reason":"stop"}}],"#,
            r#""usage":{{"prompt_tokens":{p},"completion_tokens":{c},"total_tokens":{t},"#,
            r#""prompt_tokens_details":{{"cached_tokens":0,"audio_tokens":0}},"completion_tokens_details":{{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}}}},"#,
            r#""service_tier":"default","system_fingerprint":"fp_bench"}}"#
        ),
        created = CREATED,
        model = model,
        content = content,
        p = PROMPT_TOKENS,
        c = COMPLETION_TOKENS,
        t = PROMPT_TOKENS + COMPLETION_TOKENS,
    )
}

/// One `data:` line of a stream; `delta` and `finish` are JSON already.
fn chunk(model: &str, delta: &str, finish: &str, usage: bool) -> String {
    let model = serde_json::to_string(model).expect("a string serializes");
    let usage_field = if usage { r#","usage":null"# } else { "" };
    format!(
        r#"data: {{"id":"chatcmpl-bench","object":"chat.completion.chunk","created":{CREATED},"model":{model},"service_tier":"default","system_fingerprint":"fp_bench","choices":[{{"index":0,"delta":{delta},"logprobs":null,"finish_reason":{finish}}}]{usage_field}}}"#,
    ) + "\n\n"
}

fn word(model: &str, w: &str, usage: bool) -> String {
    let content = serde_json::to_string(w).expect("a string serializes");
    chunk(model, &format!(r#"{{"content":{content}}}"#), "null", usage)
}

fn stream_end(model: &str, usage: bool) -> String {
    let mut out = chunk(model, "{}", r#""stop""#, usage);
    if usage {
        let m = serde_json::to_string(model).expect("a string serializes");
        out.push_str(&format!(
            r#"data: {{"id":"chatcmpl-bench","object":"chat.completion.chunk","created":{CREATED},"model":{m},"service_tier":"default","system_fingerprint":"fp_bench","choices":[],"usage":{{"prompt_tokens":{PROMPT_TOKENS},"completion_tokens":{COMPLETION_TOKENS},"total_tokens":{t},"prompt_tokens_details":{{"cached_tokens":0,"audio_tokens":0}},"completion_tokens_details":{{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}}}}}}"#,
            t = PROMPT_TOKENS + COMPLETION_TOKENS
        ));
        out.push_str("\n\n");
    }
    out.push_str("data: [DONE]\n\n");
    out
}

fn stream_start(model: &str, usage: bool) -> String {
    chunk(
        model,
        r#"{"role":"assistant","content":"","refusal":null}"#,
        "null",
        usage,
    )
}

fn sse(body: Body) -> Response<Body> {
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream; charset=utf-8")
        .header(header::CACHE_CONTROL, "no-cache")
        .header("x-request-id", "req_bench")
        .body(body)
        .expect("a valid response")
}

/// The whole stream at once, in one chunk of a chunked body (OpenAI's
/// framing: no content length).
fn fast_stream(model: &str, usage: bool) -> Response<Body> {
    let mut out = stream_start(model, usage);
    for w in REPLY.split_inclusive(' ') {
        out.push_str(&word(model, w, usage));
    }
    out.push_str(&stream_end(model, usage));
    let frames = futures::stream::iter([Ok::<_, Infallible>(Frame::data(Bytes::from(out)))]);
    sse(BodyExt::boxed(StreamBody::new(frames)))
}

/// The role chunk and a first word at once, then a word every `interval`.
fn slow_stream(model: &str, usage: bool, interval: Duration, chunks: u32) -> Response<Body> {
    let model = model.to_string();
    let first = stream_start(&model, usage) + &word(&model, "Hello ", usage);
    let frames = futures::stream::unfold(0u32, move |i| {
        let model = model.clone();
        let first = first.clone();
        async move {
            if i == 0 {
                return Some((Bytes::from(first), 1));
            }
            if i > chunks {
                return None;
            }
            tokio::time::sleep(interval).await;
            if i == chunks {
                Some((Bytes::from(stream_end(&model, usage)), i + 1))
            } else {
                Some((Bytes::from(word(&model, "and ", usage)), i + 1))
            }
        }
    })
    .map(|b| Ok::<_, Infallible>(Frame::data(b)));
    sse(BodyExt::boxed(StreamBody::new(frames)))
}

async fn answer(args: &Args, req: Request<Incoming>) -> Response<Body> {
    if req.method() != Method::POST || req.uri().path() != "/v1/chat/completions" {
        return error(StatusCode::NOT_FOUND, "invalid_request_error", "not found");
    }
    if !req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("Bearer ") && v.len() > 7)
    {
        return error(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            "You didn't provide an API key.",
        );
    }
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return error(StatusCode::BAD_REQUEST, "invalid_request_error", "body"),
    };
    let r: ChatRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                &format!("We could not parse the JSON body of your request: {e}"),
            );
        }
    };
    let usage = r.stream_options.is_some_and(|o| o.include_usage);
    match (r.stream, r.model.starts_with("slow")) {
        (true, true) => slow_stream(
            &r.model,
            usage,
            Duration::from_millis(args.slow_interval_ms),
            args.slow_chunks,
        ),
        (true, false) => fast_stream(&r.model, usage),
        (false, _) => Response::builder()
            .header(header::CONTENT_TYPE, "application/json")
            .header("x-request-id", "req_bench")
            .body(full(completion(&r.model)))
            .expect("a valid response"),
    }
}

/// Kills the watched processes and exits once standard input closes.
fn watch_stdin() {
    std::thread::spawn(|| {
        let mut watched: Vec<String> = Vec::new();
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            let mut words = line.split_whitespace();
            match (words.next(), words.next()) {
                (Some("watch"), Some(pid)) => watched.push(pid.to_string()),
                (Some("unwatch"), Some(pid)) => watched.retain(|p| p != pid),
                _ => {}
            }
        }
        for pid in &watched {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", pid])
                .status();
        }
        std::process::exit(0);
    });
}

fn main() {
    let args = Args::parse();
    if args.exit_on_stdin_eof {
        watch_stdin();
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()
        .expect("a tokio runtime");
    rt.block_on(serve(args));
}

async fn serve(args: Args) {
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .unwrap_or_else(|e| panic!("cannot listen on {}: {e}", args.listen));
    println!(
        "listening {}",
        listener.local_addr().expect("a bound address")
    );
    let args = std::sync::Arc::new(args);
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of file descriptors, most likely: say so, keep going.
                eprintln!("wire-mock: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let args = args.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let args = args.clone();
                async move { Ok::<_, Infallible>(answer(&args, req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}
