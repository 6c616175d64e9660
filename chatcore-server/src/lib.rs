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
        // The token encoders (tens of MiB each) load on first use: a turn
        // counts tokens only near its budget or when a provider reports no
        // usage, so most processes never need one.
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
        let app = Arc::new(Self {
            rag,
            admin: AdminService::for_chat(chat.clone()),
            chat,
            store,
            config,
            metrics: metrics::Metrics::default(),
            audit_task: std::sync::Mutex::new(Some(audit_task)),
        });
        app.start_recovery().await;
        Ok(app)
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

    /// Closes turns left pending by instances that died, now and then
    /// every minute while the app lives.
    pub async fn start_recovery(self: &Arc<Self>) {
        let recover = |chat: Arc<ChatService>| async move {
            match chat.recover_orphaned_turns().await {
                Ok(0) => {}
                Ok(n) => tracing::warn!(turns = n, "closed turns left pending by a lost instance"),
                Err(e) => tracing::error!(error = %e, "could not close orphaned turns"),
            }
        };
        recover(self.chat.clone()).await;
        let chat = Arc::downgrade(&self.chat);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(chat) = chat.upgrade() else { break };
                recover(chat).await;
            }
        });
    }

    /// Lets open streams finish within the grace period (then ends them
    /// with an `unavailable` event, stored as cancelled), and flushes
    /// pending writes (the audit log, the store's queue).
    pub async fn shutdown(&self) {
        self.chat
            .shutdown(Duration::from_secs(self.config.shutdown_grace_secs))
            .await;
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
    // The engine ends the streams still open when the grace is over (each
    // with an `unavailable` event); their connections then finish.
    let connections = async {
        tokio::join!(app.shutdown(), graceful.shutdown());
    };
    if tokio::time::timeout(grace + Duration::from_secs(5), connections)
        .await
        .is_err()
    {
        tracing::warn!("grace period over: closing the remaining connections");
        app.chat.audit().flush().await;
        if let Err(e) = app.store.flush().await {
            tracing::error!(error = %e, "could not flush the store's writes at shutdown");
        }
    }
}
