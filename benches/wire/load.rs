//! `wire-load`: the wire benchmark's load generator, a process of its own
//! so that it never shares a runtime with what it measures.
//!
//! Modes:
//! - `json`: `--connections` keep-alive HTTP/1.1 connections, each sending
//!   the same POST one after another for `--secs` (or `--max-requests` in
//!   all); latency is to the end of the body.
//! - `sse`: the same, reading a server-sent event stream; it also records
//!   the time to the first byte of text (`--sse chatcore`: the first
//!   `event: delta`; `--sse openai`: the first chunk with non-empty
//!   `delta.content`).
//! - `open`: opens `--streams` streams (at most `--open-parallel` being
//!   opened at once), waits until each has shown its first text or failed,
//!   prints `{"hold": ...}` on stdout, keeps them all open for
//!   `--hold-secs`, then closes them. `--http 2` multiplexes them over
//!   HTTP/2 connections (prior knowledge, `--streams-per-conn` each).
//!
//! At the end it prints one JSON object on stdout: counts by status,
//! transport errors, timeouts, and latency percentiles in microseconds.
//! Everything is bounded: by time, by count, and a timeout per request.
//!
//! ```sh
//! wire-load --url http://127.0.0.1:8080/v1/chat --header 'authorization: Bearer ck_...' \
//!     --body '{"bot_id":"bench","message":"hello"}' --connections 64 --secs 5
//! ```

use std::collections::BTreeMap;
use std::io::BufRead;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::{Parser, ValueEnum};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper::{Request, Response, header};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::json;
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, watch};

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
enum Mode {
    Json,
    Sse,
    Open,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
enum SseKind {
    /// chatcore's events: text arrives in `event: delta`, the end is
    /// `event: done`, a failure `event: error`.
    Chatcore,
    /// OpenAI's chunks: text in `delta.content`, the end `data: [DONE]`.
    Openai,
}

#[derive(Parser, Debug)]
#[command(about = "The wire benchmark's load generator")]
struct Args {
    /// `http://host:port/path` (loopback in the benchmark).
    #[arg(long)]
    url: String,
    /// The request body (JSON), sent as it is with every request.
    #[arg(long)]
    body: String,
    /// An extra request header, `name: value` (repeatable).
    #[arg(long = "header")]
    headers: Vec<String>,
    #[arg(long, value_enum, default_value = "json")]
    mode: Mode,
    /// How a stream shows its first text and its end.
    #[arg(long, value_enum, default_value = "chatcore")]
    sse: SseKind,
    /// Concurrent connections (json and sse modes).
    #[arg(long, default_value_t = 1)]
    connections: usize,
    /// How long to send requests (json and sse modes).
    #[arg(long, default_value_t = 5.0)]
    secs: f64,
    /// At most this many requests in all (json and sse modes).
    #[arg(long, default_value_t = 5_000_000)]
    max_requests: u64,
    /// Runtime worker threads (1 means a current-thread runtime).
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// A request that takes longer is abandoned and counted as a timeout.
    #[arg(long, default_value_t = 30.0)]
    timeout_secs: f64,
    /// Open mode: streams to open.
    #[arg(long, default_value_t = 10_000)]
    streams: usize,
    /// Open mode: streams being opened at once.
    #[arg(long, default_value_t = 256)]
    open_parallel: usize,
    /// Open mode: give up on streams not open after this long.
    #[arg(long, default_value_t = 180.0)]
    open_timeout_secs: f64,
    /// Open mode: how long all streams are held open.
    #[arg(long, default_value_t = 5.0)]
    hold_secs: f64,
    /// Open mode: HTTP version, 1 (a connection per stream) or 2.
    #[arg(long, default_value_t = 1)]
    http: u8,
    /// Open mode with HTTP/2: streams per connection.
    #[arg(long, default_value_t = 100)]
    streams_per_conn: usize,
    /// Exit when standard input closes (the benchmark holds a pipe to it).
    #[arg(long)]
    exit_on_stdin_eof: bool,
}

/// What every request shares.
struct Target {
    addr: String,
    /// Origin form (`/path`) for HTTP/1.1.
    path: hyper::Uri,
    /// Absolute form for HTTP/2.
    absolute: hyper::Uri,
    /// With `host` (HTTP/1.1 only) and `content-type`; parsed once.
    headers: header::HeaderMap,
    body: Bytes,
    sse: Option<SseKind>,
    timeout: Duration,
}

impl Target {
    fn request(&self) -> Request<Full<Bytes>> {
        let mut r = Request::new(Full::new(self.body.clone()));
        *r.method_mut() = hyper::Method::POST;
        *r.uri_mut() = self.path.clone();
        *r.headers_mut() = self.headers.clone();
        r
    }

    /// HTTP/2: the authority travels in the URI, not in `host`.
    fn request_h2(&self) -> Request<Full<Bytes>> {
        let mut r = self.request();
        *r.uri_mut() = self.absolute.clone();
        r.headers_mut().remove(header::HOST);
        r
    }
}

fn parse_target(a: &Args) -> Target {
    let rest = a
        .url
        .strip_prefix("http://")
        .expect("--url must start with http://");
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let mut headers = header::HeaderMap::new();
    headers.insert(
        header::HOST,
        header::HeaderValue::from_str(authority).expect("a host"),
    );
    headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    for h in &a.headers {
        let (k, v) = h.split_once(':').expect("--header is `name: value`");
        headers.insert(
            header::HeaderName::from_bytes(k.trim().as_bytes()).expect("a header name"),
            header::HeaderValue::from_str(v.trim()).expect("a header value"),
        );
    }
    Target {
        addr: authority.to_string(),
        path: path.parse().expect("a valid path"),
        absolute: a.url.parse().expect("a valid URL"),
        body: Bytes::from(a.body.clone()),
        headers,
        sse: (a.mode != Mode::Json).then_some(a.sse),
        timeout: Duration::from_secs_f64(a.timeout_secs),
    }
}

/// Finds a stream's first text and its end in the bytes read so far.
#[derive(Default)]
struct SseScan {
    buf: Vec<u8>,
    scanned: usize,
    first_text: bool,
    done: bool,
    error_event: bool,
}

impl SseScan {
    fn push(&mut self, kind: SseKind, data: &[u8]) {
        self.buf.extend_from_slice(data);
        // Look at complete lines only: an event may be split anywhere.
        let end = match self.buf.iter().rposition(|&b| b == b'\n') {
            Some(i) => i + 1,
            None => return,
        };
        for line in self.buf[self.scanned..end].split(|&b| b == b'\n') {
            match kind {
                SseKind::Chatcore => match line {
                    b"event: delta" => self.first_text = true,
                    b"event: done" => self.done = true,
                    b"event: error" => self.error_event = true,
                    _ => {}
                },
                SseKind::Openai => {
                    if line == b"data: [DONE]" {
                        self.done = true;
                    } else if line.starts_with(b"data: ") && has_text(line) {
                        self.first_text = true;
                    } else if line.starts_with(b"data: ") && find(line, b"\"error\":").is_some() {
                        self.error_event = true;
                    }
                }
            }
        }
        self.scanned = end;
        // Keep memory flat on long streams: what is scanned is not needed.
        if self.scanned > 16 * 1024 {
            self.buf.drain(..self.scanned);
            self.scanned = 0;
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// An OpenAI chunk line with a non-empty `"content":"..."`.
fn has_text(line: &[u8]) -> bool {
    const NEEDLE: &[u8] = b"\"content\":\"";
    let mut from = 0;
    while let Some(i) = find(&line[from..], NEEDLE) {
        let at = from + i + NEEDLE.len();
        if line.get(at).is_some_and(|&b| b != b'"') {
            return true;
        }
        from = at;
    }
    false
}

/// What one worker (or one open stream) saw.
#[derive(Default)]
struct Stats {
    status: BTreeMap<u16, u64>,
    /// Connection refused or reset, a body cut off: no HTTP answer.
    transport_errors: u64,
    timeouts: u64,
    /// Streams answered 2xx that carried an error event.
    stream_error_events: u64,
    /// Streams answered 2xx that ended without their final event.
    stream_unfinished: u64,
    lat_us: Vec<u32>,
    ttft_us: Vec<u32>,
    first_error: Option<String>,
}

impl Stats {
    fn note(&mut self, what: impl FnOnce() -> String) {
        if self.first_error.is_none() {
            self.first_error = Some(what());
        }
    }

    fn merge(&mut self, o: Stats) {
        for (k, v) in o.status {
            *self.status.entry(k).or_default() += v;
        }
        self.transport_errors += o.transport_errors;
        self.timeouts += o.timeouts;
        self.stream_error_events += o.stream_error_events;
        self.stream_unfinished += o.stream_unfinished;
        self.lat_us.extend(o.lat_us);
        self.ttft_us.extend(o.ttft_us);
        if self.first_error.is_none() {
            self.first_error = o.first_error;
        }
    }

    fn ok(&self) -> u64 {
        self.status
            .iter()
            .filter(|(s, _)| (200..300).contains(*s))
            .map(|(_, n)| n)
            .sum()
    }
}

fn us(d: Duration) -> u32 {
    d.as_micros().min(u32::MAX as u128) as u32
}

fn percentiles(v: &mut [u32]) -> serde_json::Value {
    if v.is_empty() {
        return json!(null);
    }
    v.sort_unstable();
    let p = |q: f64| v[((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1];
    json!({"p50": p(0.50), "p90": p(0.90), "p99": p(0.99), "max": v[v.len() - 1], "n": v.len()})
}

async fn tcp(t: &Target) -> Result<TokioIo<TcpStream>, String> {
    let s = TcpStream::connect(&t.addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let _ = s.set_nodelay(true);
    Ok(TokioIo::new(s))
}

/// An HTTP/1.1 connection whose driver runs in a task of its own (the
/// open streams).
async fn connect_h1(t: &Target) -> Result<http1::SendRequest<Full<Bytes>>, String> {
    let (sender, conn) = http1::handshake(tcp(t).await?)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

async fn connect_h2(t: &Target) -> Result<http2::SendRequest<Full<Bytes>>, String> {
    let (sender, conn) = http2::handshake(TokioExecutor::new(), tcp(t).await?)
        .await
        .map_err(|e| format!("h2 handshake: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// Reads a whole answer; records its latency (and time to first text).
async fn finish(
    t: &Target,
    started: Instant,
    resp: Response<Incoming>,
    st: &mut Stats,
) -> Result<(), String> {
    let status = resp.status().as_u16();
    *st.status.entry(status).or_default() += 1;
    let ok = (200..300).contains(&status);
    let mut body = resp.into_body();
    let mut scan = SseScan::default();
    let mut first_text = None;
    let mut kept = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| format!("body: {e}"))?;
        let Some(data) = frame.data_ref() else {
            continue;
        };
        if !ok && kept.len() < 400 {
            kept.extend_from_slice(data);
        }
        if let (true, Some(kind)) = (ok, t.sse) {
            scan.push(kind, data);
            if scan.first_text && first_text.is_none() {
                first_text = Some(started.elapsed());
            }
        }
    }
    if !ok {
        st.note(|| format!("{status} {}", String::from_utf8_lossy(&kept)));
        return Ok(());
    }
    st.lat_us.push(us(started.elapsed()));
    if t.sse.is_some() {
        if let Some(f) = first_text {
            st.ttft_us.push(us(f));
        }
        if scan.error_event {
            st.stream_error_events += 1;
            st.note(|| format!("error event: {}", String::from_utf8_lossy(&scan.buf)));
        } else if !scan.done {
            st.stream_unfinished += 1;
            st.note(|| format!("unfinished stream: {}", String::from_utf8_lossy(&scan.buf)));
        }
    }
    Ok(())
}

/// One connection sending requests one after another until the deadline
/// (or the request budget); reconnects when the server closes it.
async fn worker(t: Arc<Target>, deadline: Instant, issued: Arc<AtomicU64>, max: u64) -> Stats {
    let mut st = Stats::default();
    while Instant::now() < deadline {
        let handshake = match tcp(&t).await {
            Ok(io) => http1::handshake(io)
                .await
                .map_err(|e| format!("handshake: {e}")),
            Err(e) => Err(e),
        };
        let (mut sender, conn) = match handshake {
            Ok(c) => c,
            Err(e) => {
                st.transport_errors += 1;
                st.note(|| e);
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        // The connection is driven in this task, beside its requests: no
        // hand-off to another task per request.
        let (st, t, issued) = (&mut st, &t, &issued);
        let requests = async move {
            while Instant::now() < deadline {
                if sender.ready().await.is_err() {
                    // Closed by the server (keep-alive ended): reconnect.
                    return false;
                }
                if issued.fetch_add(1, Relaxed) >= max {
                    return true;
                }
                let started = Instant::now();
                let one = async {
                    let resp = sender
                        .send_request(t.request())
                        .await
                        .map_err(|e| format!("request: {e}"))?;
                    finish(t, started, resp, st).await
                };
                match tokio::time::timeout(t.timeout, one).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        st.transport_errors += 1;
                        st.note(|| e);
                        return false;
                    }
                    Err(_) => {
                        st.timeouts += 1;
                        st.note(|| format!("timeout after {:?}", t.timeout));
                        return false;
                    }
                }
            }
            true
        };
        tokio::pin!(requests, conn);
        let mut conn_done = false;
        // A request in flight when the connection ends fails and is counted
        // by `requests`, so only `requests` ends this loop.
        let done = loop {
            tokio::select! {
                done = &mut requests => break done,
                _ = &mut conn, if !conn_done => conn_done = true,
            }
        };
        if done {
            break;
        }
    }
    st
}

async fn run_load(a: &Args, t: Arc<Target>) -> serde_json::Value {
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(a.secs);
    let issued = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..a.connections)
        .map(|_| tokio::spawn(worker(t.clone(), deadline, issued.clone(), a.max_requests)))
        .collect();
    let mut st = Stats::default();
    for task in tasks {
        st.merge(task.await.expect("a worker does not panic"));
    }
    let secs = started.elapsed().as_secs_f64();
    report(
        st,
        secs,
        json!({"mode": format!("{:?}", a.mode).to_lowercase(), "connections": a.connections}),
    )
}

fn report(mut st: Stats, secs: f64, extra: serde_json::Value) -> serde_json::Value {
    let ok = st.ok();
    let mut v = json!({
        "secs": secs,
        "ok": ok,
        "rps": ok as f64 / secs,
        "status": st.status.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
        "transport_errors": st.transport_errors,
        "timeouts": st.timeouts,
        "stream_error_events": st.stream_error_events,
        "stream_unfinished": st.stream_unfinished,
        "lat_us": percentiles(&mut st.lat_us),
        "ttft_us": percentiles(&mut st.ttft_us),
        "first_error": st.first_error,
    });
    if let (Some(v), Some(e)) = (v.as_object_mut(), extra.as_object()) {
        v.extend(e.clone());
    }
    v
}

/// Counters shared by the open streams.
struct OpenProgress {
    opened: AtomicUsize,
    settled: AtomicUsize,
}

/// Opens one stream, holding one of the `--open-parallel` permits until it
/// shows its first text (or fails), then keeps it open until `release`.
/// Returns whether it ended on its own before the release.
#[allow(clippy::too_many_arguments)]
async fn hold_one(
    t: Arc<Target>,
    h2: Option<Result<http2::SendRequest<Full<Bytes>>, String>>,
    gate: Arc<Semaphore>,
    open_deadline: Instant,
    mut release: watch::Receiver<bool>,
    progress: Arc<OpenProgress>,
    st: &mut Stats,
) -> bool {
    let kind = t.sse.unwrap_or(SseKind::Chatcore);
    let permit = gate.acquire_owned().await.expect("the gate stays open");
    let started = Instant::now();
    let open = async {
        let resp = match h2 {
            None => {
                let mut s = connect_h1(&t).await?;
                s.ready().await.map_err(|e| format!("ready: {e}"))?;
                s.send_request(t.request())
                    .await
                    .map_err(|e| format!("request: {e}"))?
            }
            Some(s) => {
                let mut s = s?;
                s.ready().await.map_err(|e| format!("h2 ready: {e}"))?;
                s.send_request(t.request_h2())
                    .await
                    .map_err(|e| format!("h2 request: {e}"))?
            }
        };
        let status = resp.status().as_u16();
        *st.status.entry(status).or_default() += 1;
        let mut body = resp.into_body();
        if !(200..300).contains(&status) {
            let b = body
                .collect()
                .await
                .map(|c| c.to_bytes())
                .unwrap_or_default();
            return Err(format!(
                "{status} {}",
                String::from_utf8_lossy(&b[..b.len().min(300)])
            ));
        }
        let mut scan = SseScan::default();
        while !scan.first_text {
            match body.frame().await {
                Some(Ok(f)) => {
                    if let Some(d) = f.data_ref() {
                        scan.push(kind, d);
                    }
                }
                Some(Err(e)) => return Err(format!("body: {e}")),
                None => {
                    st.stream_unfinished += 1;
                    return Err(format!(
                        "ended before any text: {}",
                        String::from_utf8_lossy(&scan.buf)
                    ));
                }
            }
        }
        Ok((body, scan))
    };
    let opened = tokio::time::timeout_at(open_deadline.into(), open).await;
    drop(permit);
    progress.settled.fetch_add(1, Relaxed);
    let (mut body, mut scan) = match opened {
        Ok(Ok(b)) => b,
        Ok(Err(e)) => {
            if !e.starts_with(|c: char| c.is_ascii_digit()) {
                st.transport_errors += 1;
            }
            st.note(|| e);
            return false;
        }
        Err(_) => {
            st.timeouts += 1;
            st.note(|| "not open before the open timeout".into());
            return false;
        }
    };
    progress.opened.fetch_add(1, Relaxed);
    st.ttft_us.push(us(started.elapsed()));
    // Held: read what comes (a word every few seconds) until released.
    loop {
        tokio::select! {
            _ = release.changed() => return false,
            f = body.frame() => match f {
                Some(Ok(f)) => {
                    if let Some(d) = f.data_ref() {
                        scan.push(kind, d);
                    }
                }
                Some(Err(e)) => {
                    st.transport_errors += 1;
                    st.note(|| format!("held stream broke: {e}"));
                    return true;
                }
                None => {
                    if scan.error_event {
                        st.stream_error_events += 1;
                    } else if !scan.done {
                        st.stream_unfinished += 1;
                    }
                    st.note(|| format!("held stream ended: {}", String::from_utf8_lossy(&scan.buf)));
                    return true;
                }
            },
        }
    }
}

async fn run_open(a: &Args, t: Arc<Target>) -> serde_json::Value {
    let started = Instant::now();
    let open_deadline = started + Duration::from_secs_f64(a.open_timeout_secs);
    let (release_tx, release_rx) = watch::channel(false);
    let progress = Arc::new(OpenProgress {
        opened: AtomicUsize::new(0),
        settled: AtomicUsize::new(0),
    });
    let gate = Arc::new(Semaphore::new(a.open_parallel.max(1)));
    // HTTP/2: a few connections, opened first; each stream picks one.
    let mut h2 = Vec::new();
    if a.http == 2 {
        for _ in 0..a.streams.div_ceil(a.streams_per_conn.max(1)) {
            h2.push(connect_h2(&t).await);
        }
    }
    let tasks: Vec<_> = (0..a.streams)
        .map(|i| {
            let conn = (!h2.is_empty()).then(|| h2[i % h2.len()].clone());
            let (t, gate, release, progress) = (
                t.clone(),
                gate.clone(),
                release_rx.clone(),
                progress.clone(),
            );
            tokio::spawn(async move {
                let mut st = Stats::default();
                let early =
                    hold_one(t, conn, gate, open_deadline, release, progress, &mut st).await;
                (early, st)
            })
        })
        .collect();
    // Wait until every stream is open or has failed (or the open timeout).
    let mut last_print = Instant::now();
    while progress.settled.load(Relaxed) < a.streams && Instant::now() < open_deadline {
        if last_print.elapsed() >= Duration::from_secs(5) {
            eprintln!(
                "wire-load: {} of {} streams open after {:.0} s",
                progress.opened.load(Relaxed),
                a.streams,
                started.elapsed().as_secs_f64()
            );
            last_print = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let open_secs = started.elapsed().as_secs_f64();
    let opened = progress.opened.load(Relaxed);
    println!(
        "{}",
        json!({"hold": true, "open": opened, "open_secs": open_secs})
    );
    tokio::time::sleep(Duration::from_secs_f64(a.hold_secs)).await;
    let _ = release_tx.send(true);
    let mut st = Stats::default();
    let mut ended_early = 0u64;
    for task in tasks {
        match tokio::time::timeout(Duration::from_secs(30), task).await {
            Ok(Ok((early, s))) => {
                ended_early += u64::from(early);
                st.merge(s);
            }
            Ok(Err(e)) => st.note(|| format!("stream task failed: {e}")),
            Err(_) => st.note(|| "a stream did not close within 30 s".into()),
        }
    }
    let secs = started.elapsed().as_secs_f64();
    report(
        st,
        secs,
        json!({
            "mode": "open",
            "http": a.http,
            "streams": a.streams,
            "opened": opened,
            "ended_early": ended_early,
            "open_secs": open_secs,
        }),
    )
}

fn watch_stdin() {
    std::thread::spawn(|| {
        for line in std::io::stdin().lock().lines() {
            if line.is_err() {
                break;
            }
        }
        std::process::exit(3);
    });
}

fn main() {
    let a = Args::parse();
    if a.exit_on_stdin_eof {
        watch_stdin();
    }
    let mut b = if a.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(a.threads);
        b
    };
    let rt = b.enable_all().build().expect("a tokio runtime");
    let t = Arc::new(parse_target(&a));
    let out = rt.block_on(async {
        match a.mode {
            Mode::Open => run_open(&a, t).await,
            _ => run_load(&a, t).await,
        }
    });
    println!("{out}");
}
