//! `spawn_app()`: the server on port 0 with a fresh database per test;
//! logs are captured (and printed when `TEST_LOG` is set) so tests can check
//! that no secret reaches them.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use chatcore::domain::*;
use chatcore::engine::ChatSettings;
use chatcore::provider::mock::MockProvider;
use chatcore::provider::{ProviderRegistry, RetryPolicy, Timeouts};
use chatcore::store::*;
use chatcore::testkit::fixtures::{self, SystemWrites};
use chatcore_server::config::Config;
use chatcore_server::{App, run};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::oneshot;

/// Everything the server logged in this test binary.
pub fn captured_logs() -> String {
    String::from_utf8_lossy(&LOGS.get_or_init(Default::default).lock().unwrap()).into_owned()
}

static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();

struct Capture;
impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOGS.get_or_init(Default::default)
            .lock()
            .unwrap()
            .extend_from_slice(buf);
        if std::env::var("TEST_LOG").is_ok() {
            std::io::stderr().write_all(buf)?;
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

pub fn init() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                "debug,sqlx=warn,sea_orm=warn,sea_orm_migration=warn,hyper_util=info,h2=info",
            )
            .with_ansi(false)
            .with_writer(|| Capture)
            .try_init();
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

pub struct TestApp {
    pub addr: SocketAddr,
    pub client: reqwest::Client,
    pub app: Arc<App>,
    shutdown: Option<oneshot::Sender<()>>,
    pub server: Option<tokio::task::JoinHandle<()>>,
    /// The PostgreSQL schema of this app, dropped by `stop()`.
    pub pg_schema: Option<String>,
}

/// A tenant with a provider, a bot and an admin+chat key.
pub struct TestTenant {
    pub tenant: Tenant,
    pub bot: Bot,
    pub key: SecretString,
    pub key_id: ApiKeyId,
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        self.app.chat.store()
    }

    /// Stops the server and waits for it to finish draining.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.server.take() {
            h.await.unwrap();
        }
        if let Some(schema) = self.pg_schema.take() {
            chatcore::store::SeaOrmStore::drop_schema(&chatcore::testkit::pg::url(), &schema)
                .await
                .expect("drop test schema");
        }
    }

    /// Asks the server to stop, without waiting.
    pub fn begin_stop(&mut self) -> tokio::task::JoinHandle<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.server.take().unwrap()
    }

    pub async fn post_json(
        &self,
        path: &str,
        key: Option<&SecretString>,
        body: serde_json::Value,
    ) -> reqwest::Response {
        let mut r = self.client.post(self.url(path)).json(&body);
        if let Some(k) = key {
            r = r.bearer_auth(k.expose_secret());
        }
        r.send().await.unwrap()
    }

    /// A tenant whose bot talks to `provider_kind` with `model`.
    pub async fn tenant(
        &self,
        slug: &str,
        provider_kind: &str,
        model: &str,
        base_url: Option<String>,
    ) -> TestTenant {
        self.tenant_with(slug, provider_kind, model, base_url, |_| {}, |_| {})
            .await
    }

    pub async fn tenant_with(
        &self,
        slug: &str,
        provider_kind: &str,
        model: &str,
        base_url: Option<String>,
        tweak_tenant: impl FnOnce(&mut NewTenant),
        tweak_bot: impl FnOnce(&mut NewBot),
    ) -> TestTenant {
        let s = self.store();
        let mut nt = NewTenant {
            name: slug.into(),
            slug: format!(
                "{slug}-{}",
                &uuid::Uuid::now_v7().simple().to_string()[24..]
            ),
            rate_limit_rpm: None,
            rate_limit_tpm: None,
            features: serde_json::json!({}),
            public_rate_limit_rpm: None,
        };
        tweak_tenant(&mut nt);
        let tenant = s.create_tenant(nt).await.unwrap();
        let sealed = self
            .app
            .chat
            .keyring()
            .seal(tenant.id, &SecretString::from(PROVIDER_SECRET.to_string()));
        let provider = s
            .create_provider_config(
                tenant.id,
                NewProviderConfig {
                    provider: provider_kind.into(),
                    name: provider_kind.into(),
                    api_key: Some(sealed),
                    base_url,
                    default_model: Some(model.into()),
                    enabled: true,
                },
            )
            .await
            .unwrap();
        let mut nb = NewBot {
            name: "Bot".into(),
            slug: format!("bot-{slug}"),
            system_prompt: "You are a test bot.".into(),
            provider_id: provider.id,
            model: Some(model.into()),
            fallback_provider_id: None,
            temperature: Some(0.2),
            max_tokens: Some(100),
            context_tokens: 4000,
            is_public: true,
            dataset_ids: vec![],
        };
        tweak_bot(&mut nb);
        let bot = s.create_bot(tenant.id, nb).await.unwrap();
        let (key, key_id) = self
            .key(
                tenant.id,
                vec![Permission::Admin, Permission::Chat],
                vec![],
                None,
            )
            .await;
        TestTenant {
            tenant,
            bot,
            key,
            key_id,
        }
    }

    pub async fn key(
        &self,
        tenant: TenantId,
        permissions: Vec<Permission>,
        bot_ids: Vec<BotId>,
        rpm: Option<i32>,
    ) -> (SecretString, ApiKeyId) {
        let (g, mut nk) = fixtures::new_key("test", permissions);
        nk.bot_ids = bot_ids;
        nk.rate_limit_rpm = rpm;
        let k = self.store().create_api_key(tenant, nk).await.unwrap();
        (g.secret, k.id)
    }
}

/// The provider key every test tenant uses: it must never be logged.
pub const PROVIDER_SECRET: &str = "sk-test-PROVIDERSECRET-0123456789abcdef";

pub fn test_settings() -> ChatSettings {
    ChatSettings {
        retry: RetryPolicy::none(),
        timeouts: Timeouts {
            connect: Duration::from_secs(2),
            first_byte: Duration::from_millis(500),
            idle: Duration::from_millis(500),
        },
        ..ChatSettings::default()
    }
}

/// The built-in providers, with the mock's `slow` model slowed to 150 ms a
/// delta (disconnect and shutdown tests need time to act mid-stream).
pub fn test_registry() -> ProviderRegistry {
    let mut r = ProviderRegistry::with_builtins();
    r.register("mock", |spec| {
        let mut spec = spec.clone();
        spec.options
            .insert("delay_ms".into(), serde_json::json!(150));
        Ok(Arc::new(MockProvider::from_spec(&spec)?))
    });
    r
}

/// The allow list of the test apps (the egress tests use narrower ones).
pub const TEST_EGRESS_ALLOW: &str = "127.0.0.1";

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(tweak: impl FnOnce(&mut Config)) -> TestApp {
    init();
    let mut config = Config::load_from(None, |k| match k {
        "CHATCORE_DATABASE_URL" => Some("sqlite::memory:".into()),
        "CHATCORE_LISTEN" => Some("127.0.0.1:0".into()),
        "CHATCORE_SHUTDOWN_GRACE_SECS" => Some("10".into()),
        // The wire-format mock upstreams listen on 127.0.0.1, which the
        // egress policy refuses unless the allow list names it.
        "CHATCORE_EGRESS_ALLOW" => Some(TEST_EGRESS_ALLOW.into()),
        _ => None,
    })
    .unwrap();
    tweak(&mut config);
    let app = App::build_with(config, test_registry(), test_settings())
        .await
        .expect("app builds");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    let server = tokio::spawn(run(listener, app.clone(), async {
        let _ = rx.await;
    }));
    TestApp {
        addr,
        client: reqwest::Client::new(),
        app,
        shutdown: Some(tx),
        server: Some(server),
        pg_schema: None,
    }
}

/// The app on PostgreSQL (the test database, a fresh schema that `stop()`
/// drops). `None` when PostgreSQL tests are skipped, which CI refuses.
pub async fn spawn_app_pg() -> Option<TestApp> {
    if chatcore::testkit::pg::skip_requested() {
        eprintln!("CHATCORE_TEST_SKIP_POSTGRES=1: skipping a PostgreSQL API test");
        return None;
    }
    let schema = chatcore::testkit::pg::fresh_schema_name();
    let mut app = spawn_app_with(|c| {
        c.database_url = chatcore::testkit::pg::url();
        c.database_schema = Some(schema.clone());
        // Off SQLite there is no key file: the master key must be given.
        c.master_key = Some(SecretString::from(
            "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=".to_string(),
        ));
    })
    .await;
    app.pg_schema = Some(schema);
    Some(app)
}

/// Reads an SSE body into (event, data) pairs.
pub fn parse_sse(body: &str) -> Vec<(String, serde_json::Value)> {
    body.split("\n\n")
        .filter(|b| !b.trim().is_empty())
        .map(|block| {
            let mut event = String::new();
            let mut data = String::new();
            for line in block.lines() {
                if let Some(e) = line.strip_prefix("event: ") {
                    event = e.to_string();
                } else if let Some(d) = line.strip_prefix("data: ") {
                    data.push_str(d);
                }
            }
            (
                event,
                serde_json::from_str(&data).unwrap_or(serde_json::Value::Null),
            )
        })
        .collect()
}

/// Polls `check` until it returns Some (bounded; for effects that happen in
/// background tasks, never to measure time).
pub async fn eventually<T, F, Fut>(mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    for _ in 0..200 {
        if let Some(v) = check().await {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("condition not reached in time");
}

/// The operator key the admin tests configure.
pub const OPERATOR_KEY: &str = "op-test-key-0123456789";

impl TestApp {
    /// A request with an optional bearer key and JSON body; returns the
    /// status and the JSON reply (Null when empty).
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        key: Option<&str>,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let mut r = self.client.request(method, self.url(path));
        if let Some(k) = key {
            r = r.bearer_auth(k);
        }
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        let json = if text.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text))
        };
        (status, json)
    }
}

/// The app with an operator key configured.
pub async fn spawn_app_with_operator() -> TestApp {
    spawn_app_with(|c| c.operator_key = Some(SecretString::from(OPERATOR_KEY.to_string()))).await
}

/// Every routed operation (method, path template), from the OpenAPI
/// document the router is built from.
pub fn routes() -> Vec<(reqwest::Method, &'static str)> {
    let mut out = vec![];
    for (path, item) in chatcore_server::openapi::document()["paths"]
        .as_object()
        .unwrap()
    {
        for (m, _) in item.as_object().unwrap() {
            out.push((
                reqwest::Method::from_bytes(m.to_ascii_uppercase().as_bytes()).unwrap(),
                path.as_str(),
            ));
        }
    }
    out
}
