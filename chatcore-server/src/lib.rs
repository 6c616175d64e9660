//! chatcore-server: the HTTP adapter over the `chatcore` library.
//!
//! It translates requests into library calls and library results into JSON
//! (or SSE), and holds no business logic of its own. Modules:
//!
//! - [`config`]: environment / TOML configuration.
//! - [`keys`]: where the master key comes from.
//! - [`http`]: body type, JSON replies, the error format.
//! - [`routes`]: the route table and router.
//! - [`admin`]: the management endpoints (operator and tenant admin).
//! - [`datasets`]: the dataset, document and retrieval endpoints.
//! - [`metrics`]: the Prometheus registry behind `/metrics`.
//! - [`openapi`]: the OpenAPI document behind `/openapi.json`, generated
//!   from the request and reply types.
//! - [`chat`]: the chat endpoints.
//!
//! [`run`] serves an [`App`] on a listener the caller bound, until the
//! caller's shutdown future completes; then it stops accepting and lets open
//! connections finish within a grace period.

pub mod admin;
pub mod chat;
pub mod config;
pub mod datasets;
pub mod http;
pub mod keys;
pub mod metrics;
pub mod openapi;
pub mod routes;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chatcore::admin::AdminService;
use chatcore::audit::{AuditConfig, AuditWriter};
use chatcore::bootstrap::{Demo, ensure_demo};
use chatcore::engine::{ChatService, ChatSettings};
use chatcore::provider::ProviderRegistry;
use chatcore::ratelimit::{FailoverRateLimiter, LocalRateLimiter, RateLimiter, RedisRateLimiter};
use chatcore::store::{SeaOrmStore, Store};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use secrecy::ExposeSecret;
use tokio::net::TcpListener;

use crate::config::Config;

/// Everything a request handler needs, shared by all connections.
pub struct App {
    /// The chat engine (and through it the store, keyring, audit writer).
    pub chat: Arc<ChatService>,
    /// Management (tenants, providers, bots, keys, ...).
    pub admin: AdminService,
    /// Datasets, documents, ingestion and retrieval.
    pub rag: Arc<chatcore::rag::RagService>,
    /// Persistence.
    pub store: Arc<dyn Store>,
    /// Configuration.
    pub config: Config,
    /// Request and chat metrics.
    pub metrics: metrics::Metrics,
    audit_task: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Bad configuration.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// No usable master key.
    #[error(transparent)]
    Key(#[from] keys::KeyError),
    /// The database cannot be opened or migrated.
    #[error("database: {0}")]
    Store(#[from] chatcore::store::StoreError),
    /// Unfinished document indexing could not be resumed.
    #[error("resuming document indexing: {0}")]
    Rag(String),
    /// Redis cannot be reached.
    #[error("{0}")]
    Redis(#[from] chatcore::ratelimit::RateLimitError),
}

impl App {
    /// Opens the database (migrating it) and builds the app with the
    /// built-in providers.
    pub async fn build(config: Config) -> Result<Arc<Self>, StartError> {
        Self::build_with(
            config,
            ProviderRegistry::with_builtins(),
            ChatSettings::default(),
        )
        .await
    }

    /// Like [`App::build`], with a provider registry and engine settings of
    /// the caller's (tests point providers at local servers this way).
    pub async fn build_with(
        config: Config,
        registry: ProviderRegistry,
        mut settings: ChatSettings,
    ) -> Result<Arc<Self>, StartError> {
        settings.egress = settings.egress.merged(&config.egress);
        if let Some(n) = config.auth_failures_per_minute {
            settings.auth_failures_per_minute = n;
        }
        let keyring = keys::keyring(&config)?;
        let store: Arc<dyn Store> =
            Arc::new(SeaOrmStore::open(&config.database_url, config.store_options()).await?);
        let limiter: Arc<dyn RateLimiter> = match &config.redis_url {
            Some(url) => Arc::new(FailoverRateLimiter::new(
                RedisRateLimiter::connect(url.expose_secret()).await?,
            )),
            None => Arc::new(LocalRateLimiter::new()),
        };
        // Load the token encoders now rather than on the first request.
        tokio::task::spawn_blocking(|| {
            chatcore::provider::tokens::count_tokens("gpt-4o-mini", "warm up");
            chatcore::provider::tokens::count_tokens("gpt-4", "warm up");
        });
        let (audit, audit_task) = AuditWriter::spawn(store.clone(), AuditConfig::default());
        let chat = ChatService::new(
            store.clone(),
            Arc::new(registry),
            keyring,
            limiter,
            audit,
            settings,
        );
        let chat = Arc::new(chat);
        let rag = chatcore::rag::RagService::start(chat.clone())
            .await
            .map_err(|e| StartError::Rag(e.to_string()))?;
        let retriever: Arc<dyn chatcore::engine::ContextRetriever> = rag.clone();
        chat.set_retriever(&retriever);
        Ok(Arc::new(Self {
            rag,
            admin: AdminService::for_chat(chat.clone()),
            chat,
            store,
            config,
            metrics: metrics::Metrics::default(),
            audit_task: std::sync::Mutex::new(Some(audit_task)),
        }))
    }

    /// First start on an empty database: creates the demo tenant and its
    /// public `demo` bot, and returns the admin key to show once.
    pub async fn bootstrap_demo(&self) -> Result<Option<Demo>, StartError> {
        Ok(ensure_demo(
            &*self.store,
            self.chat.keyring(),
            self.config.openai_api_key.as_ref(),
        )
        .await?)
    }

    /// Waits for open streams, flushes pending writes (the audit log).
    pub async fn shutdown(&self) {
        self.chat.shutdown().await;
        let task = self.audit_task.lock().expect("lock poisoned").take();
        drop(task); // the writer ends with the service; its queue is flushed above
    }
}

/// Serves `app` on `listener` until `shutdown` completes, then drains open
/// connections for at most the configured grace period.
pub async fn run(listener: TcpListener, app: Arc<App>, shutdown: impl Future<Output = ()>) {
    let graceful = GracefulShutdown::new();
    let builder = auto::Builder::new(TokioExecutor::new());
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(c) => c,
                    Err(e) => {
                        // E.g. out of file descriptors: back off, keep serving.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let app = app.clone();
                let svc = service_fn(move |req| {
                    let app = app.clone();
                    async move { Ok::<_, std::convert::Infallible>(routes::handle(app, req, peer).await) }
                });
                let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), svc);
                let conn = graceful.watch(conn.into_owned());
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                });
            }
            _ = &mut shutdown => break,
        }
    }
    drop(listener);
    let grace = Duration::from_secs(app.config.shutdown_grace_secs);
    tracing::info!(
        grace_secs = grace.as_secs(),
        "shutting down: draining open connections"
    );
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("grace period over: closing the remaining connections");
    }
    // Streams cut by the deadline record themselves as cancelled; give them
    // a moment, then flush the audit log whatever happens.
    if tokio::time::timeout(Duration::from_secs(5), app.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("some streamed turns did not finish recording in time");
        app.chat.audit().flush().await;
    }
}
