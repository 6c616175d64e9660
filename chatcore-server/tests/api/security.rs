//! Hostile tenants and the open internet (issue 11): SSRF through a
//! provider's base URL, upstream details in errors, public slug squatting,
//! NUL bytes, brute force, public traffic starving keys, and operations
//! (metrics, what views show, file permissions).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use chatcore::domain::*;
use chatcore::provider::EgressPolicy;
use chatcore::store::*;
use chatcore::testkit::fixtures::SystemWrites;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, body::Incoming, service::service_fn};
use hyper_util::rt::{TokioExecutor, TokioIo};
use reqwest::Method;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};

use crate::helpers::*;

/// Requests an `Internal` saw: path and query.
type Seen = Arc<Mutex<Vec<(String, Option<String>)>>>;

/// One NUL case: method, path, key, body, the field the 400 must name.
type NulCase<'a> = (Method, String, Option<&'a str>, Option<Value>, &'a str);

/// An "internal service": answers every request with a fixed status,
/// content type and body, and records the path and query it was asked.
#[derive(Clone)]
struct Internal {
    seen: Seen,
    addr: SocketAddr,
}

const INTERNAL_BODY: &str = "INTERNAL-ONLY-DATA: admin panel token=tok-SECRET-INTERNAL-42";

impl Internal {
    async fn start(status: u16, content_type: &'static str) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen: Seen = Arc::default();
        let s = seen.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let s = s.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let s = s.clone();
                        async move {
                            s.lock().unwrap().push((
                                req.uri().path().to_string(),
                                req.uri().query().map(str::to_string),
                            ));
                            let _ = req.into_body().collect().await;
                            Ok::<_, Infallible>(
                                Response::builder()
                                    .status(status)
                                    .header("content-type", content_type)
                                    .body(Full::new(Bytes::from(INTERNAL_BODY)))
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
        Self { seen, addr }
    }

    fn seen(&self) -> Vec<(String, Option<String>)> {
        self.seen.lock().unwrap().clone()
    }
}

fn key(t: &TestTenant) -> &str {
    t.key.expose_secret()
}

fn chat_body(bot: &str) -> Value {
    json!({"bot_id": bot, "message": "hello"})
}

/// Nothing a caller is told may name the upstream's body, URL or address.
fn assert_leaks_nothing(v: &Value, port: u16) {
    let text = v.to_string();
    for needle in [
        "INTERNAL",
        "tok-SECRET",
        "127.0.0.1",
        "localhost",
        "sig=",
        "SIGSECRET",
        &format!(":{port}"),
    ] {
        assert!(!text.contains(needle), "{needle:?} leaked in {text}");
    }
}

// ------------------------------------------------------------------ SSRF

#[tokio::test]
async fn internal_base_urls_are_refused_when_configured_and_when_called() {
    // No allow list at all: the default policy.
    let app = spawn_app_with(|c| c.egress = EgressPolicy::default()).await;
    let internal = Internal::start(418, "text/plain").await;
    let port = internal.addr.port();
    let admin = app.tenant("ssrf", "mock", "echo", None).await;
    let own = app.addr.port();
    for base in [
        format!("http://127.0.0.1:{port}/internal/admin#"),
        format!("http://localhost:{port}/v1"),
        format!("http://[::1]:{port}/v1"),
        format!("http://0.0.0.0:{port}/v1"),
        format!("http://2130706433:{port}/v1"),
        format!("http://127.1:{port}/v1"),
        format!("http://127.0.0.1:{own}/v1/chat/public#"),
        "http://169.254.169.254/latest/meta-data".to_string(),
        "http://10.0.0.1/v1".to_string(),
    ] {
        let (s, v) = app
            .call(
                Method::POST,
                "/v1/providers",
                Some(key(&admin)),
                Some(json!({"provider": "openai_compatible", "name": "x", "base_url": base})),
            )
            .await;
        assert_eq!(s, 400, "{base}: {v}");
        let m = v["error"]["message"].as_str().unwrap();
        assert!(
            m.starts_with("base_url:") && m.contains("egress policy"),
            "{m}"
        );
        assert!(!m.contains(&port.to_string()), "no address in {m}");
    }
    let (s, v) = app
        .call(
            Method::POST,
            "/v1/providers",
            Some(key(&admin)),
            Some(
                json!({"provider": "openai", "name": "x", "api_key": "sk-abcdefghijklmnop",
                        "base_url": "https://user:secret@api.example.com/v1"}),
            ),
        )
        .await;
    assert_eq!(s, 400, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("user name or password")
    );
    // Updating a good provider to an internal address is refused too.
    let (s, p) = app
        .call(
            Method::POST,
            "/v1/providers",
            Some(key(&admin)),
            Some(json!({"provider": "openai_compatible", "name": "ok",
                        "base_url": "http://no-such-host.invalid/v1"})),
        )
        .await;
    assert_eq!(
        s, 201,
        "a name that does not resolve now is checked per call: {p}"
    );
    let (s, v) = app
        .call(
            Method::PATCH,
            &format!("/v1/providers/{}", p["id"].as_str().unwrap()),
            Some(key(&admin)),
            Some(json!({"base_url": format!("http://127.0.0.1:{port}/")})),
        )
        .await;
    assert_eq!(s, 400, "{v}");

    // A provider stored before (or whose name resolves inward later):
    // refused at call time, for keyed, public and streamed chat and for
    // the embedding call of a dataset.
    let t = app
        .tenant(
            "ssrf-stored",
            "openai_compatible",
            "m",
            Some(format!("http://127.0.0.1:{port}/internal/admin#")),
        )
        .await;
    for (path, k, body) in [
        ("/v1/chat", Some(key(&t)), chat_body(&t.bot.slug)),
        ("/v1/chat/public", None, chat_body(&t.bot.slug)),
        (
            "/v1/chat",
            Some(key(&t)),
            json!({"bot_id": t.bot.slug, "message": "hi", "stream": true}),
        ),
        (
            "/v1/datasets",
            Some(key(&t)),
            json!({"name": "d", "provider_id": t.bot.provider_id, "embedding_model": "e"}),
        ),
    ] {
        let (s, v) = app.call(Method::POST, path, k, Some(body)).await;
        assert_eq!(s, 502, "{path}: {v}");
        assert_eq!(v["error"]["code"], "provider_error");
        let m = v["error"]["message"].as_str().unwrap();
        assert!(m.contains("egress policy"), "{m}");
        assert_leaks_nothing(&v, port);
    }
    assert!(
        internal.seen().is_empty(),
        "the internal service was never called"
    );
    app.stop().await;
}

// ------------------------------------------------- errors that leak nothing

#[tokio::test]
async fn provider_failures_show_the_kind_and_status_only() {
    let app = spawn_app().await;
    for (status, ct, shown) in [
        (
            418,
            "text/plain",
            "openai_compatible: the provider failed (upstream status 418)",
        ),
        (
            200,
            "text/plain",
            "openai_compatible: the provider's answer could not be read",
        ),
        (
            500,
            "application/json",
            "openai_compatible: the provider is unavailable (upstream status 500)",
        ),
    ] {
        let internal = Internal::start(status, ct).await;
        let port = internal.addr.port();
        let t = app
            .tenant(
                &format!("leak{status}"),
                "openai_compatible",
                "m",
                Some(format!(
                    "http://127.0.0.1:{port}/v1?deployment=prod&sig=SIGSECRET"
                )),
            )
            .await;
        for (path, k, stream) in [
            ("/v1/chat", Some(key(&t)), false),
            ("/v1/chat/public", None, false),
            ("/v1/chat/public", None, true),
        ] {
            let mut r = app
                .client
                .post(app.url(path))
                .json(&json!({"bot_id": t.bot.slug, "message": "hello", "stream": stream}));
            if let Some(k) = k {
                r = r.bearer_auth(k);
            }
            let r = r.send().await.unwrap();
            assert_eq!(r.status(), 502, "{path}");
            let rid = r.headers()["x-request-id"].to_str().unwrap().to_string();
            let v: Value = r.json().await.unwrap();
            assert_eq!(v["error"]["code"], "provider_error");
            if !stream {
                assert_eq!(v["error"]["message"], shown, "{path}");
            }
            assert_leaks_nothing(&v, port);
            // The detail is in the log, under the request id.
            let logs = captured_logs();
            assert!(
                logs.lines()
                    .any(|l| l.contains(&rid) && l.contains("provider")),
                "no log line for {rid}"
            );
            assert!(
                !logs.contains("SIGSECRET"),
                "the URL's query reached the log"
            );
        }
        // The base URL's query stayed the query; the path was appended.
        let seen = internal.seen();
        assert!(!seen.is_empty());
        for (p, q) in seen {
            assert_eq!(p, "/v1/chat/completions");
            assert_eq!(q.as_deref(), Some("deployment=prod&sig=SIGSECRET"));
        }
    }
    app.stop().await;
}

// --------------------------------------------------- one owner per slug

#[tokio::test]
async fn a_public_slug_has_one_owner() {
    let app = spawn_app().await;
    let b = app
        .tenant_with(
            "b",
            "mock",
            "echo",
            None,
            |_| {},
            |bot| {
                bot.slug = "helpdesk".into();
            },
        )
        .await;
    let a = app.tenant("a", "mock", "echo", None).await;
    let pid = a.bot.provider_id.to_string();
    // A cannot publish B's slug: not at creation, not by renaming its public
    // bot, not by publishing a private bot of that slug.
    let (s, _) = app
        .call(
            Method::PATCH,
            &format!("/v1/bots/{}", a.bot.id),
            Some(key(&a)),
            Some(json!({"slug": "helpdesk"})),
        )
        .await;
    assert_eq!(s, 409, "renaming a public bot into a taken public slug");
    let (s, v) = app
        .call(
            Method::POST,
            "/v1/bots",
            Some(key(&a)),
            Some(json!({"name": "H", "slug": "helpdesk", "provider_id": pid, "is_public": true})),
        )
        .await;
    assert_eq!(s, 409, "{v}");
    assert_eq!(v["error"]["code"], "conflict");
    assert!(v["error"]["message"].as_str().unwrap().starts_with("slug:"));
    let (s, private) = app
        .call(
            Method::POST,
            "/v1/bots",
            Some(key(&a)),
            Some(json!({"name": "H", "slug": "helpdesk", "provider_id": pid})),
        )
        .await;
    assert_eq!(s, 201, "private slugs are per tenant: {private}");
    let (s, _) = app
        .call(
            Method::PATCH,
            "/v1/bots/helpdesk",
            Some(key(&a)),
            Some(json!({"is_public": true})),
        )
        .await;
    assert_eq!(s, 409);

    // B's visitors reach B's bot, by slug and by tenant-slug/bot-slug.
    let (s, v) = app
        .call(
            Method::POST,
            "/v1/chat/public",
            None,
            Some(chat_body("helpdesk")),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["bot_id"], b.bot.id.to_string());
    let conv = v["conversation_id"].as_str().unwrap().to_string();
    let (s, v) = app
        .call(
            Method::POST,
            "/v1/chat/public",
            None,
            Some(chat_body(&format!("{}/helpdesk", b.tenant.slug))),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["bot_id"], b.bot.id.to_string());

    // B gives the slug up; A may now claim it, but B's conversations never
    // continue in A's tenant.
    let (s, _) = app
        .call(
            Method::PATCH,
            "/v1/bots/helpdesk",
            Some(key(&b)),
            Some(json!({"is_public": false})),
        )
        .await;
    assert_eq!(s, 200);
    let (s, v) = app
        .call(
            Method::PATCH,
            "/v1/bots/helpdesk",
            Some(key(&a)),
            Some(json!({"is_public": true})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let (s, _) = app
        .call(
            Method::POST,
            "/v1/chat/public",
            None,
            Some(json!({"bot_id": "helpdesk", "message": "hi", "conversation_id": conv})),
        )
        .await;
    assert_eq!(s, 404, "B's conversation does not land in A's tenant");
    let (s, v) = app
        .call(
            Method::POST,
            "/v1/chat/public",
            None,
            Some(chat_body(&format!("{}/helpdesk", b.tenant.slug))),
        )
        .await;
    assert_eq!(s, 404, "B's bot is private now: {v}");
    // The store refuses a second public owner even when asked directly.
    let r = app
        .store()
        .update_bot(
            b.tenant.id,
            b.bot.id,
            BotPatch {
                is_public: Some(true),
                ..Default::default()
            },
        )
        .await;
    assert!(matches!(r, Err(StoreError::Conflict(_))), "{r:?}");
    app.stop().await;
}

// ------------------------------------------------------------ text at the edge

async fn nul_everywhere(app: TestApp) {
    let t = app.tenant("nul", "mock", "echo", None).await;
    let k = key(&t);
    let (_, ds) = app
        .call(
            Method::POST,
            "/v1/datasets",
            Some(k),
            Some(json!({"name": "d", "provider_id": t.bot.provider_id, "embedding_dim": 8})),
        )
        .await;
    let ds = ds["id"].as_str().unwrap().to_string();
    let pid = t.bot.provider_id.to_string();
    let n = "a\u{0}b";
    let cases: Vec<NulCase> = vec![
        (
            Method::POST,
            "/v1/chat/public".into(),
            None,
            Some(json!({"bot_id": t.bot.slug, "message": n})),
            "message",
        ),
        (
            Method::POST,
            "/v1/chat/public".into(),
            None,
            Some(json!({"bot_id": n, "message": "hi"})),
            "bot_id",
        ),
        (
            Method::POST,
            "/v1/chat".into(),
            Some(k),
            Some(json!({"bot_id": t.bot.slug, "message": "hi", "user_id": n})),
            "user_id",
        ),
        (
            Method::POST,
            "/v1/chat".into(),
            Some(k),
            Some(json!({"bot_id": t.bot.slug, "message": n, "stream": true})),
            "message",
        ),
        (
            Method::POST,
            "/v1/bots".into(),
            Some(k),
            Some(json!({"name": n, "provider_id": pid})),
            "name",
        ),
        (
            Method::POST,
            "/v1/bots".into(),
            Some(k),
            Some(json!({"name": "x", "provider_id": pid, "system_prompt": n})),
            "system_prompt",
        ),
        (
            Method::PATCH,
            format!("/v1/bots/{}", t.bot.id),
            Some(k),
            Some(json!({"model": n})),
            "model",
        ),
        (
            Method::POST,
            "/v1/providers".into(),
            Some(k),
            Some(json!({"provider": "mock", "name": n})),
            "name",
        ),
        (
            Method::POST,
            "/v1/api-keys".into(),
            Some(k),
            Some(json!({"name": n, "permissions": ["chat"]})),
            "name",
        ),
        (
            Method::POST,
            "/v1/scopes".into(),
            Some(k),
            Some(
                json!({"bot_id": t.bot.slug, "kind": "blocked_terms", "config": {"terms": ["ok", n]}}),
            ),
            "config.terms[1]",
        ),
        (
            Method::POST,
            "/v1/scopes".into(),
            Some(k),
            Some(json!({"bot_id": n, "kind": "blocked_terms", "config": {"terms": ["x"]}})),
            "bot_id",
        ),
        (
            Method::POST,
            format!("/v1/datasets/{ds}/documents"),
            Some(k),
            Some(json!({"title": n, "content": "text"})),
            "title",
        ),
        (
            Method::POST,
            format!("/v1/datasets/{ds}/documents"),
            Some(k),
            Some(json!({"title": "t", "content": "text", "metadata": {"lang": n}})),
            "metadata.lang",
        ),
        (
            Method::POST,
            format!("/v1/datasets/{ds}/search"),
            Some(k),
            Some(json!({"query": n})),
            "query",
        ),
        (
            Method::POST,
            "/v1/datasets".into(),
            Some(k),
            Some(json!({"name": n, "provider_id": pid})),
            "name",
        ),
        (
            Method::GET,
            "/v1/conversations?user_id=a%00b".into(),
            Some(k),
            None,
            "user_id",
        ),
        (
            Method::GET,
            "/v1/conversations?bot_id=%00".into(),
            Some(k),
            None,
            "bot_id",
        ),
        (
            Method::GET,
            "/v1/audit-logs?action=x%00".into(),
            Some(k),
            None,
            "action",
        ),
        (
            Method::GET,
            "/v1/audit-logs?actor_id=%00".into(),
            Some(k),
            None,
            "actor_id",
        ),
        (
            Method::GET,
            "/v1/scopes?bot_id=%00".into(),
            Some(k),
            None,
            "bot_id",
        ),
        (
            Method::POST,
            format!("/v1/datasets/{ds}/documents?title=a%00"),
            Some(k),
            None,
            "title",
        ),
    ];
    for (method, path, k, body, field) in cases {
        let (s, v) = app.call(method.clone(), &path, k, body).await;
        assert_eq!(s, 400, "{method} {path}: {v}");
        assert_eq!(v["error"]["code"], "invalid_request");
        let m = v["error"]["message"].as_str().unwrap();
        assert!(m.starts_with(&format!("{field}:")), "{method} {path}: {m}");
    }
    // A raw upload with a NUL in its text.
    let r = app
        .client
        .post(app.url(&format!("/v1/datasets/{ds}/documents?title=raw")))
        .bearer_auth(k)
        .header("content-type", "text/plain")
        .body("before\0after")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("content:"),
        "{v}"
    );

    // The operator's routes too.
    app.stop().await;
}

#[tokio::test]
async fn nul_bytes_are_a_400_naming_the_field_sqlite() {
    nul_everywhere(spawn_app().await).await;
}

#[tokio::test]
async fn nul_bytes_are_a_400_naming_the_field_postgres() {
    if let Some(app) = spawn_app_pg().await {
        nul_everywhere(app).await;
    }
}

async fn reupload_keeps_the_original(app: TestApp) {
    let t = app.tenant("reup", "mock", "echo", None).await;
    let k = key(&t);
    let (_, ds) = app
        .call(
            Method::POST,
            "/v1/datasets",
            Some(k),
            Some(json!({"name": "d", "provider_id": t.bot.provider_id, "embedding_dim": 8})),
        )
        .await;
    let ds = ds["id"].as_str().unwrap().to_string();
    let path = format!("/v1/datasets/{ds}/documents");
    let (s, doc) = app
        .call(
            Method::POST,
            &path,
            Some(k),
            Some(json!({"title": "Handbook", "content": "version one"})),
        )
        .await;
    assert_eq!(s, 201);
    let (s, v) = app
        .call(
            Method::POST,
            &path,
            Some(k),
            Some(
                json!({"title": "Handbook", "content": "version two", "metadata": {"k": "\u{0}"}}),
            ),
        )
        .await;
    assert_eq!(s, 400, "{v}");
    let (s, list) = app.call(Method::GET, &path, Some(k), None).await;
    assert_eq!(s, 200);
    let data = list["data"].as_array().unwrap();
    assert_eq!(data.len(), 1, "{list}");
    assert_eq!(data[0]["id"], doc["id"], "the original is untouched");
    app.stop().await;
}

#[tokio::test]
async fn a_failed_reupload_keeps_the_original_sqlite() {
    reupload_keeps_the_original(spawn_app().await).await;
}

#[tokio::test]
async fn a_failed_reupload_keeps_the_original_postgres() {
    if let Some(app) = spawn_app_pg().await {
        reupload_keeps_the_original(app).await;
    }
}

#[tokio::test]
async fn the_operator_routes_refuse_nul_too() {
    let app = spawn_app_with_operator().await;
    let (s, v) = app
        .call(
            Method::POST,
            "/v1/admin/tenants",
            Some(OPERATOR_KEY),
            Some(json!({"name": "a\u{0}"})),
        )
        .await;
    assert_eq!(s, 400, "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().starts_with("name:"),
        "{v}"
    );
    app.stop().await;
}

// -------------------------------------------------------------- brute force

#[tokio::test]
async fn failed_authentications_are_throttled_per_ip_and_counted_once_a_minute() {
    let app = spawn_app().await;
    let t = app.tenant("bf", "mock", "echo", None).await;
    let written = || {
        app.app
            .chat
            .audit()
            .stats()
            .written
            .load(std::sync::atomic::Ordering::SeqCst)
    };
    app.app.chat.audit().flush().await;
    let before = written();
    let burst = chatcore::auth::throttle::AuthThrottle::DEFAULT_PER_MINUTE as usize;
    let mut statuses = vec![];
    for i in 0..burst + 10 {
        let wrong = format!("cc_0123456789abcdef_{:0>43}", i);
        let r = app
            .client
            .get(app.url("/v1/bots"))
            .bearer_auth(&wrong)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        if status == 429 {
            let ra: u64 = r.headers()["retry-after"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            assert!((1..=60).contains(&ra), "{ra}");
            let v: Value = r.json().await.unwrap();
            assert_eq!(v["error"]["code"], "rate_limited");
        }
        statuses.push(status);
    }
    let first_429 = statuses.iter().position(|s| *s == 429).expect("throttled");
    assert!(
        statuses[..first_429].iter().all(|s| *s == 401),
        "{statuses:?}"
    );
    assert!(first_429 >= burst && first_429 <= burst + 1, "{statuses:?}");
    assert!(
        statuses[first_429..].iter().all(|s| *s == 429),
        "{statuses:?}"
    );
    // Throttled means not even a genuine key is looked at from this IP.
    let (s, _) = app.call(Method::GET, "/v1/bots", Some(key(&t)), None).await;
    assert_eq!(s, 429);
    // One counted record (two if the minute turned meanwhile), not 30.
    app.app.chat.auth_throttle().flush().await;
    app.app.chat.audit().flush().await;
    let n = written() - before;
    assert!(
        (1..=2).contains(&n),
        "{n} audit rows for {} failures",
        statuses.len()
    );
    app.stop().await;
}

#[tokio::test]
async fn operator_key_failures_are_throttled_and_audited() {
    let app = spawn_app_with_operator().await;
    let written = || {
        app.app
            .chat
            .audit()
            .stats()
            .written
            .load(std::sync::atomic::Ordering::SeqCst)
    };
    let before = written();
    let burst = chatcore::auth::throttle::AuthThrottle::DEFAULT_PER_MINUTE as usize;
    let mut statuses = vec![];
    for i in 0..burst + 5 {
        let (s, _) = app
            .call(
                Method::GET,
                "/v1/admin/tenants",
                Some(&format!("wrong-{i}")),
                None,
            )
            .await;
        statuses.push(s);
    }
    assert_eq!(statuses[0], 401);
    assert_eq!(*statuses.last().unwrap(), 429, "{statuses:?}");
    app.app.chat.auth_throttle().flush().await;
    app.app.chat.audit().flush().await;
    let n = written() - before;
    assert!((1..=2).contains(&n), "operator failures audited: {n}");
    app.stop().await;
}

// -------------------------------------------------------- public budget

#[tokio::test]
async fn visitors_have_their_own_budget_and_cannot_starve_keys() {
    let app = spawn_app().await;
    let t = app
        .tenant_with(
            "budget",
            "mock",
            "echo",
            None,
            |nt| {
                nt.rate_limit_rpm = Some(3);
                nt.public_rate_limit_rpm = Some(2);
            },
            |_| {},
        )
        .await;
    let mut public = vec![];
    for _ in 0..4 {
        let (s, v) = app
            .call(
                Method::POST,
                "/v1/chat/public",
                None,
                Some(chat_body(&t.bot.slug)),
            )
            .await;
        public.push((s, v["error"]["message"].clone()));
    }
    assert_eq!(public[0].0, 200);
    assert_eq!(public[1].0, 200);
    assert_eq!(public[2].0, 429, "{public:?}");
    assert!(
        public[2].1.as_str().unwrap().contains("tenant_public"),
        "{public:?}"
    );
    // The keys' budget is whole.
    for i in 0..3 {
        let (s, v) = app
            .call(
                Method::POST,
                "/v1/chat",
                Some(key(&t)),
                Some(chat_body(&t.bot.slug)),
            )
            .await;
        assert_eq!(s, 200, "key turn {i}: {v}");
    }
    let (s, _) = app
        .call(
            Method::POST,
            "/v1/chat",
            Some(key(&t)),
            Some(chat_body(&t.bot.slug)),
        )
        .await;
    assert_eq!(s, 429, "and its own limit still holds");
    app.stop().await;
}

#[tokio::test]
async fn the_operator_sets_the_public_budget() {
    let app = spawn_app_with_operator().await;
    let (s, v) = app
        .call(
            Method::POST,
            "/v1/admin/tenants",
            Some(OPERATOR_KEY),
            Some(json!({"name": "Pub", "public_rate_limit_rpm": 30})),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["tenant"]["public_rate_limit_rpm"], 30);
    let id = v["tenant"]["id"].as_str().unwrap();
    let (s, v) = app
        .call(
            Method::PATCH,
            &format!("/v1/admin/tenants/{id}"),
            Some(OPERATOR_KEY),
            Some(json!({"public_rate_limit_rpm": null})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["public_rate_limit_rpm"], Value::Null);
    let (s, _) = app
        .call(
            Method::PATCH,
            &format!("/v1/admin/tenants/{id}"),
            Some(OPERATOR_KEY),
            Some(json!({"public_rate_limit_rpm": 0})),
        )
        .await;
    assert_eq!(s, 400);
    app.stop().await;
}

// ------------------------------------------------------------- operations

#[tokio::test]
async fn metrics_need_the_metrics_key_when_one_is_set() {
    let app = spawn_app_with(|c| {
        c.metrics_key = Some(SecretString::from("m-key-0123456789".to_string()))
    })
    .await;
    let (s, _) = app.call(Method::GET, "/metrics", None, None).await;
    assert_eq!(s, 401);
    let (s, _) = app.call(Method::GET, "/metrics", Some("wrong"), None).await;
    assert_eq!(s, 401);
    let (s, v) = app
        .call(Method::GET, "/metrics", Some("m-key-0123456789"), None)
        .await;
    assert_eq!(s, 200);
    assert!(v.as_str().unwrap().contains("chatcore_http_requests_total"));
    app.stop().await;
    // Without a key: loopback only (the test client is on loopback).
    let app = spawn_app().await;
    let (s, _) = app.call(Method::GET, "/metrics", None, None).await;
    assert_eq!(s, 200);
    let config = app.app.config.clone();
    let headers = http::HeaderMap::new();
    for peer in ["10.1.2.3:5000", "[2001:db8::1]:5000", "203.0.113.9:1"] {
        let e = chatcore_server::metrics::authorize(&config, &headers, peer.parse().unwrap())
            .unwrap_err();
        assert_eq!(e.status.as_u16(), 403, "{peer}");
    }
    for peer in ["127.0.0.1:1", "[::1]:1", "[::ffff:127.0.0.1]:1"] {
        assert!(
            chatcore_server::metrics::authorize(&config, &headers, peer.parse().unwrap()).is_ok(),
            "{peer}"
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn provider_views_redact_the_base_url_and_short_keys() {
    let app = spawn_app().await;
    let t = app.tenant("view", "mock", "echo", None).await;
    let (s, p) = app
        .call(
            Method::POST,
            "/v1/providers",
            Some(key(&t)),
            Some(
                json!({"provider": "openai_compatible", "name": "gw", "api_key": "abcd",
                        "base_url": "https://gw.example.com/v1?deployment=prod&sig=SIGSECRET"}),
            ),
        )
        .await;
    assert_eq!(s, 201, "{p}");
    assert_eq!(
        p["api_key_last4"],
        Value::Null,
        "a 4-character key is not shown at all"
    );
    assert_eq!(
        p["base_url"],
        "https://gw.example.com/v1?deployment=REDACTED&sig=REDACTED"
    );
    let (read, _) = app
        .key(t.tenant.id, vec![Permission::Read], vec![], None)
        .await;
    let (s, list) = app
        .call(
            Method::GET,
            "/v1/providers",
            Some(read.expose_secret()),
            None,
        )
        .await;
    assert_eq!(s, 200);
    assert!(!list.to_string().contains("SIGSECRET"), "{list}");
    let (s, p) = app
        .call(
            Method::POST,
            "/v1/providers",
            Some(key(&t)),
            Some(json!({"provider": "openai", "name": "o", "api_key": "sk-abcdefgh12"})),
        )
        .await;
    assert_eq!(s, 201);
    assert_eq!(
        p["api_key_last4"], "gh12",
        "12 characters and more: the last 4"
    );
    let (_, p) = app
        .call(
            Method::POST,
            "/v1/providers",
            Some(key(&t)),
            Some(json!({"provider": "openai", "name": "o", "api_key": "sk-abcdefg1"})),
        )
        .await;
    assert_eq!(p["api_key_last4"], Value::Null, "11 characters: nothing");
    // A URL with userinfo stored before it was refused is shown without it.
    let sealed = app
        .app
        .chat
        .keyring()
        .seal(t.tenant.id, &SecretString::from("xy".to_string()));
    let stored = app
        .store()
        .create_provider_config(
            t.tenant.id,
            NewProviderConfig {
                provider: "openai_compatible".into(),
                name: "old".into(),
                api_key: Some(chatcore::domain::SealedKey {
                    last4: "xy".into(),
                    ..sealed
                }),
                base_url: Some("https://user:pw@old.example.com/v1?key=k".into()),
                default_model: None,
                enabled: true,
            },
        )
        .await
        .unwrap();
    let (_, p) = app
        .call(
            Method::GET,
            &format!("/v1/providers/{}", stored.id),
            Some(read.expose_secret()),
            None,
        )
        .await;
    assert_eq!(p["base_url"], "https://old.example.com/v1?key=REDACTED");
    assert_eq!(p["api_key_last4"], Value::Null);
    app.stop().await;
}

#[tokio::test]
async fn sqlite_database_files_are_0600() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("perm.db");
    let app = spawn_app_with(|c| {
        c.database_url = format!("sqlite://{}?mode=rwc", db.display());
    })
    .await;
    let t = app.tenant("perm", "mock", "echo", None).await;
    let (s, _) = app
        .call(
            Method::POST,
            "/v1/chat",
            Some(key(&t)),
            Some(chat_body(&t.bot.slug)),
        )
        .await;
    assert_eq!(s, 200);
    let mode = |suffix: &str| {
        let p = format!("{}{suffix}", db.display());
        std::fs::metadata(&p).map(|m| m.permissions().mode() & 0o777)
    };
    assert_eq!(mode("").unwrap(), 0o600);
    assert_eq!(mode("-wal").unwrap(), 0o600, "WAL");
    assert_eq!(mode("-shm").unwrap(), 0o600, "SHM");
    app.stop().await;
    // An existing database with wider permissions is tightened at start.
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
    let app = spawn_app_with(|c| {
        c.database_url = format!("sqlite://{}?mode=rwc", db.display());
    })
    .await;
    assert_eq!(mode("").unwrap(), 0o600);
    app.stop().await;
}
