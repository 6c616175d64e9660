//! The load benchmark: a local mock OpenAI upstream that answers at once,
//! the chatcore server in front of it with every message persisted
//! (SQLite file, WAL), and a load generator, all in this process on this
//! machine. It reports the server side by side with calling the mock
//! directly, in the same run.
//!
//! ```sh
//! cargo bench -p chatcore-benches --bench load
//! LOAD_SECS=10 LOAD_DB=postgres://postgres@127.0.0.1:5432/test cargo bench -p chatcore-benches --bench load
//! ```
//!
//! `LOAD_LOG=warn` (a tracing filter) prints the server's logs; the first
//! failed request, if any, is printed with its status and body.
//!
//! Phases: 64 concurrent complete requests (req/s, p50, p99), 1 concurrent
//! (latency added by the server at p50), 32 concurrent streams (time to
//! first token), then peak resident memory of the process.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chatcore::domain::Permission;
use chatcore::engine::ChatSettings;
use chatcore::provider::ProviderRegistry;
use chatcore::store::*;
use chatcore::testkit::fixtures::{self, SystemWrites};
use chatcore_server::config::Config;
use chatcore_server::{App, run};
use futures::StreamExt;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Request, Response, body::Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use secrecy::ExposeSecret;

const REPLY: &str = "Hello! This is a short answer from the mock upstream.";

async fn mock_answer(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    use http_body_util::BodyExt;
    let body = req
        .into_body()
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let stream = memchr_stream(&body);
    if stream {
        let mut out = String::new();
        for w in REPLY.split_inclusive(' ') {
            out.push_str(&format!(
                "data: {{\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"model\":\"gpt-4o-mini\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":{}}},\"finish_reason\":null}}]}}\n\n",
                serde_json::to_string(w).unwrap()
            ));
        }
        out.push_str("data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n");
        out.push_str("data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"model\":\"gpt-4o-mini\",\"choices\":[],\"usage\":{\"prompt_tokens\":20,\"completion_tokens\":12,\"total_tokens\":32}}\n\ndata: [DONE]\n\n");
        return Ok(Response::builder()
            .header("content-type", "text/event-stream")
            .body(Full::new(Bytes::from(out)))
            .unwrap());
    }
    let body = format!(
        "{{\"id\":\"c\",\"object\":\"chat.completion\",\"model\":\"gpt-4o-mini\",\"choices\":[{{\"index\":0,\"message\":{{\"role\":\"assistant\",\"content\":\"{REPLY}\"}},\"finish_reason\":\"stop\"}}],\"usage\":{{\"prompt_tokens\":20,\"completion_tokens\":12,\"total_tokens\":32}}}}"
    );
    Ok(Response::builder()
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap())
}

fn memchr_stream(body: &[u8]) -> bool {
    body.windows(13).any(|w| w == b"\"stream\":true")
}

async fn start_mock() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = listener.accept().await else {
                return;
            };
            let _ = s.set_nodelay(true);
            tokio::spawn(async move {
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(s), service_fn(mock_answer))
                    .await;
            });
        }
    });
    format!("http://{addr}/v1")
}

static FIRST_ERROR_SHOWN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

struct Stats {
    n: usize,
    errors: usize,
    secs: f64,
    lat: Vec<Duration>,
}

impl Stats {
    fn pct(&self, p: f64) -> Duration {
        if self.lat.is_empty() {
            return Duration::ZERO;
        }
        let i = ((self.lat.len() as f64 * p).ceil() as usize).clamp(1, self.lat.len()) - 1;
        self.lat[i]
    }
    fn rps(&self) -> f64 {
        self.n as f64 / self.secs
    }
}

/// Runs `concurrency` workers for `secs`, each sending requests built by
/// `make` one after another; latency is to the full body (or, with
/// `first_chunk`, to the first body chunk that carries text).
async fn load(
    client: &reqwest::Client,
    concurrency: usize,
    secs: f64,
    make: Arc<dyn Fn(&reqwest::Client) -> reqwest::RequestBuilder + Send + Sync>,
    first_chunk: bool,
) -> Stats {
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let client = client.clone();
        let make = make.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0;
            while Instant::now() < deadline {
                let t = Instant::now();
                match make(&client).send().await {
                    Ok(r) if r.status().is_success() => {
                        let mut s = r.bytes_stream();
                        let mut first = None;
                        while let Some(chunk) = s.next().await {
                            let Ok(c) = chunk else { break };
                            if first.is_none()
                                && (!first_chunk || c.windows(7).any(|w| w == b"content"))
                            {
                                first = Some(t.elapsed());
                            }
                        }
                        lat.push(if first_chunk {
                            first.unwrap_or_else(|| t.elapsed())
                        } else {
                            t.elapsed()
                        });
                    }
                    other => {
                        errors += 1;
                        // Say once why requests fail: an error count alone
                        // does not tell a bug from an overload.
                        if !FIRST_ERROR_SHOWN.swap(true, std::sync::atomic::Ordering::Relaxed) {
                            match other {
                                Ok(r) => {
                                    let status = r.status();
                                    let body = r.text().await.unwrap_or_default();
                                    eprintln!("first failed request: {status} {body}");
                                }
                                Err(e) => eprintln!("first failed request: {e}"),
                            }
                        }
                    }
                }
            }
            (lat, errors)
        }));
    }
    let mut lat = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await.unwrap();
        lat.extend(l);
        errors += e;
    }
    let secs = started.elapsed().as_secs_f64();
    lat.sort();
    Stats {
        n: lat.len(),
        errors,
        secs,
        lat,
    }
}

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    kb / 1024.0
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(bench());
}

async fn bench() {
    // LOAD_LOG=warn (an env filter) shows the server's logs, e.g. why
    // requests fail.
    if let Ok(filter) = std::env::var("LOAD_LOG") {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .init();
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let secs: f64 = std::env::var("LOAD_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5.0);
    let dir = tempfile::tempdir().unwrap();
    let db = std::env::var("LOAD_DB")
        .unwrap_or_else(|_| format!("sqlite://{}?mode=rwc", dir.path().join("load.db").display()));
    let upstream = start_mock().await;

    let mut config = Config::load_from(None, |k| match k {
        "CHATCORE_LISTEN" => Some("127.0.0.1:0".into()),
        // The mock upstream is on loopback: the egress policy must allow it.
        "CHATCORE_EGRESS_ALLOW" => Some("127.0.0.1".into()),
        _ => None,
    })
    .unwrap();
    config.database_url = db.clone();
    config.master_key = Some(chatcore::crypto::Keyring::generate_base64());
    let app = App::build_with(
        config,
        ProviderRegistry::with_builtins(),
        ChatSettings::default(),
    )
    .await
    .unwrap();
    let store = app.chat.store().clone();
    let mut nt = fixtures::new_tenant("load");
    nt.slug = format!("load-{}", std::process::id());
    let tenant = store.create_tenant(nt).await.unwrap();
    let sealed = app.chat.keyring().seal(
        tenant.id,
        &secrecy::SecretString::from("sk-load".to_string()),
    );
    let pc = store
        .create_provider_config(
            tenant.id,
            NewProviderConfig {
                provider: "openai".into(),
                name: "mock upstream".into(),
                api_key: Some(sealed),
                base_url: Some(upstream.clone()),
                default_model: Some("gpt-4o-mini".into()),
                enabled: true,
            },
        )
        .await
        .unwrap();
    let bot = store
        .create_bot(
            tenant.id,
            NewBot {
                name: "load".into(),
                slug: "load".into(),
                system_prompt: "You are a benchmark.".into(),
                provider_id: pc.id,
                model: Some("gpt-4o-mini".into()),
                fallback_provider_id: None,
                temperature: None,
                max_tokens: None,
                context_tokens: 4000,
                is_public: true,
                dataset_ids: vec![],
            },
        )
        .await
        .unwrap();
    let (g, nk) = fixtures::new_key("load", vec![Permission::Chat]);
    store.create_api_key(tenant.id, nk).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = format!("http://{}", listener.local_addr().unwrap());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server_task = tokio::spawn(run(listener, app.clone(), async {
        let _ = stop_rx.await;
    }));

    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()
        .unwrap();
    let key = g.secret.expose_secret().to_string();
    let bot_slug = bot.slug.clone();
    let direct =
        |stream: bool| -> Arc<dyn Fn(&reqwest::Client) -> reqwest::RequestBuilder + Send + Sync> {
            let url = format!("{upstream}/chat/completions");
            Arc::new(move |c: &reqwest::Client| {
                c.post(&url)
                    .bearer_auth("sk-load")
                    .json(&serde_json::json!({
                        "model": "gpt-4o-mini", "stream": stream,
                        "messages": [{"role": "user", "content": "hello"}]
                    }))
            })
        };
    let via =
        |stream: bool| -> Arc<dyn Fn(&reqwest::Client) -> reqwest::RequestBuilder + Send + Sync> {
            let url = format!("{server}/v1/chat");
            let key = key.clone();
            let slug = bot_slug.clone();
            Arc::new(move |c: &reqwest::Client| {
                c.post(&url).bearer_auth(&key).json(
                    &serde_json::json!({"bot_id": slug, "message": "hello", "stream": stream}),
                )
            })
        };

    // Warm up both paths (connections, caches, encoders).
    load(&client, 8, 1.0, direct(false), false).await;
    load(&client, 8, 1.0, via(false), false).await;

    println!(
        "chatcore load benchmark: {secs} s per phase, database {}",
        if db.starts_with("postgres") {
            "PostgreSQL"
        } else {
            "SQLite (file, WAL)"
        }
    );
    println!(
        "{:<44} {:>10} {:>10} {:>10} {:>8}",
        "phase", "req/s", "p50 ms", "p99 ms", "errors"
    );
    let row = |name: &str, s: &Stats| {
        println!(
            "{:<44} {:>10.0} {:>10.3} {:>10.3} {:>8}",
            name,
            s.rps(),
            ms(s.pct(0.5)),
            ms(s.pct(0.99)),
            s.errors
        )
    };
    let d64 = load(&client, 64, secs, direct(false), false).await;
    row("direct to mock, 64 concurrent", &d64);
    let s64 = load(&client, 64, secs, via(false), false).await;
    row("through chatcore, 64 concurrent", &s64);
    let d1 = load(&client, 1, secs, direct(false), false).await;
    row("direct to mock, 1 concurrent", &d1);
    let s1 = load(&client, 1, secs, via(false), false).await;
    row("through chatcore, 1 concurrent", &s1);
    let dst = load(&client, 32, secs, direct(true), true).await;
    row("direct to mock, 32 streams (TTFT)", &dst);
    let sst = load(&client, 32, secs, via(true), true).await;
    row("through chatcore, 32 streams (TTFT)", &sst);
    println!();
    println!(
        "added at 1 concurrent, p50:           {:.3} ms",
        ms(s1.pct(0.5)) - ms(d1.pct(0.5))
    );
    println!(
        "added to time to first token, p50:    {:.3} ms",
        ms(sst.pct(0.5)) - ms(dst.pct(0.5))
    );
    println!(
        "throughput through chatcore vs direct: {:.1}%",
        100.0 * s64.rps() / d64.rps()
    );
    println!(
        "peak resident memory (whole process: mock, server, load generator): {:.1} MiB",
        peak_rss_mib()
    );

    app.chat.audit().flush().await;
    let stored = store
        .list_conversations(
            tenant.id,
            ConversationFilter::default(),
            PageRequest::first(1),
        )
        .await
        .unwrap();
    assert!(!stored.data.is_empty(), "turns were persisted");
    let _ = stop_tx.send(());
    let _ = server_task.await;
}
