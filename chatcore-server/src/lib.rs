//! chatcore-server: the HTTP adapter over the `chatcore` library.
//!
//! It translates requests into library calls and library results into JSON
//! (or SSE), and holds no business logic of its own. Modules:
//!
//! - [`config`]: environment / TOML configuration.
//! - [`keys`]: where the master key comes from.
//! - [`http`]: the error format, JSON replies, the extractors.
//! - [`auth`]: each route's guard, declared with its operation, enforced
//!   by one layer.
//! - [`routes`]: every route declared once, and the tower-http layers.
//! - [`conn`]: connections: timeouts, the connection cap, idle closing.
//! - [`telemetry`]: logs (text or JSON lines).
//! - [`admin`]: the management endpoints (operator and tenant admin).
//! - [`datasets`]: the dataset, document and retrieval endpoints.
//! - [`metrics`]: the Prometheus registry behind `/metrics`.
//! - [`openapi`]: the OpenAPI document behind `/openapi.json`, generated
//!   from the request and reply types.
//! - [`chat`]: the chat endpoints.
//! - [`widget`]: the chat widget: embed script, demo page, visitor
//!   sessions, feedback, a bot's widget settings.
//!
//! What libraries do here, and what stayed written by hand (issue 12):
//! routing, path/query/body extraction and `HEAD`/405 are axum's (the
//! `ROUTES` table, the string matches and the hand-written query parser
//! are gone); the OpenAPI operations come from the handlers through
//! utoipa-axum (the stub functions that only documented are gone); request
//! ids, the trace span, compression, CORS preflight, body limit and body
//! timeout are tower-http layers; SSE framing is axum's `Sse`; the metrics
//! registry and its text encoding are prometheus-client. Still ours: the
//! accept loop ([`conn`]: hyper-util's builder with the header-read
//! timeout, plus the connection cap and the idle timeout, which neither
//! axum's `serve` nor hyper offers), the request-id acceptance rule, the
//! guard layer (the permission comes from each operation's declaration),
//! and the `finish` layer that gives every error our JSON body.
//!
//! [`run`] serves an [`App`] on a listener the caller bound, until the
//! caller's shutdown future completes; then it stops accepting and lets open
//! connections finish within a grace period.
//!
//! A plugin author's own server (their provider registered) is the
//! library's builder handed to [`serve`]:
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let config = chatcore_server::config::Config::load(None)?;
//! let core = chatcore_server::core_builder(&config)
//!     .await?
//!     // .provider("openai_compatible", |spec| Ok(Arc::new(MyProvider::new(spec)?)))
//!     .build()
//!     .await?;
//! let listener = tokio::net::TcpListener::bind(config.listen).await?;
//! chatcore_server::serve(listener, core, config, async {
//!     let _ = tokio::signal::ctrl_c().await;
//! })
//! .await;
//! # Ok(()) }
//! ```

pub mod admin;
pub mod auth;
pub mod budgets;
pub mod chat;
pub mod completions;
pub mod config;
pub mod conn;
pub mod datasets;
pub mod http;
pub mod keys;
pub mod metrics;
pub mod openapi;
pub mod routes;
pub mod telemetry;
pub mod widget;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chatcore::admin::AdminService;
use chatcore::bootstrap::{Demo, ensure_demo};
use chatcore::engine::{ChatService, ChatSettings};
use chatcore::provider::ProviderRegistry;
use chatcore::ratelimit::{FailoverRateLimiter, LocalRateLimiter, RateLimiter, RedisRateLimiter};
use chatcore::{Chatcore, ChatcoreBuilder};
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
    /// Configuration.
    pub config: Config,
    /// Request and chat metrics.
    pub metrics: metrics::Metrics,
    /// Each route's guard, as the OpenAPI document states it.
    pub guards: auth::Guards,
    /// The chat widget (settings, visitor sessions, feedback).
    pub widget: chatcore::widget::WidgetService,
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
    /// The library's services could not be built.
    #[error(transparent)]
    Build(#[from] chatcore::BuildError),
    /// Redis cannot be reached.
    #[error("{0}")]
    Redis(#[from] chatcore::ratelimit::RateLimitError),
    /// The demo bot's widget could not be set up.
    #[error("demo widget: {0}")]
    Demo(#[source] chatcore::engine::ChatError),
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
        settings: ChatSettings,
    ) -> Result<Arc<Self>, StartError> {
        let core = core_builder(&config)
            .await?
            .registry(registry)
            .settings(settings_for(&config, settings))
            .build()
            .await?;
        core.chat
            .set_budgets(budgets(&config, core.chat.store().clone()).await?);
        Ok(Self::with_core(core, config).await)
    }

    /// The app over services built by the caller (see [`core_builder`]),
    /// with `config`'s HTTP settings; closes turns left pending by a lost
    /// instance, now and every minute. Budgets are the in-process ones
    /// unless the caller set others ([`ChatService::set_budgets`]; the
    /// server's own start shares them through Redis when it has one).
    pub async fn with_core(core: Chatcore, config: Config) -> Arc<Self> {
        let app = Arc::new(Self {
            widget: chatcore::widget::WidgetService::new(core.chat.clone()),
            chat: core.chat,
            admin: core.admin,
            rag: core.rag,
            config,
            metrics: metrics::Metrics::default(),
            guards: auth::guards(openapi::document()),
        });
        app.start_recovery().await;
        app
    }

    /// First start on an empty database: creates the demo tenant and its
    /// public `demo` bot, and returns the admin key to show once.
    pub async fn bootstrap_demo(&self) -> Result<Option<Demo>, StartError> {
        let demo = ensure_demo(
            &**self.chat.store(),
            self.chat.keyring(),
            self.config.openai_api_key.as_ref(),
        )
        .await?;
        if let Some(d) = &demo {
            // `/demo` embeds the bot from this server's own origin.
            let l = self.config.listen;
            let mut origins = vec![format!("http://{l}")];
            if l.ip().is_loopback() || l.ip().is_unspecified() {
                origins.push(format!("http://127.0.0.1:{}", l.port()));
                origins.push(format!("http://localhost:{}", l.port()));
            }
            origins.dedup();
            self.widget
                .setup_demo(d.tenant.id, d.bot.id, origins)
                .await
                .map_err(StartError::Demo)?;
        }
        Ok(demo)
    }

    /// Closes turns left pending by instances that died, now and then
    /// every minute while the app lives.
    pub async fn start_recovery(self: &Arc<Self>) {
        let recover = |chat: Arc<ChatService>| async move {
            match chat.recover_orphaned_turns().await {
                Ok(0) => {}
                Ok(n) => tracing::warn!(turns = n, "closed turns left pending by a lost instance"),
                Err(e) => {
                    tracing::error!(error = %chatcore::error::Report(&e), "could not close orphaned turns")
                }
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
    }
}

/// `settings` with what `config` says about them (egress allowances, the
/// failed-authentication throttle).
pub fn settings_for(config: &Config, mut settings: ChatSettings) -> ChatSettings {
    settings.egress = settings.egress.merged(&config.egress);
    if let Some(n) = config.auth_failures_per_minute {
        settings.auth_failures_per_minute = n;
    }
    settings
}

/// The library's builder as the server configures it: the configured
/// database (with its options), master keyring, rate limiter (Redis when
/// configured, with the in-process fallback) and engine settings. A
/// plugin author adds their provider and builds; [`serve`] then serves it.
pub async fn core_builder(config: &Config) -> Result<ChatcoreBuilder, StartError> {
    let keyring = keys::keyring(config)?;
    let limiter: Arc<dyn RateLimiter> = match &config.redis_url {
        Some(url) => Arc::new(FailoverRateLimiter::with_policy(
            RedisRateLimiter::connect(url.expose_secret()).await?,
            config.redis_failure,
        )),
        None => Arc::new(LocalRateLimiter::new()),
    };
    // The token encoders (tens of MiB each) load on first use: a turn
    // counts tokens only near its budget or when a provider reports no
    // usage, so most processes never need one.
    Ok(Chatcore::builder()
        .store_url(config.database_url.clone())
        .store_options(config.store_options())
        .keyring(keyring)
        .limiter(limiter)
        .settings(settings_for(config, ChatSettings::default())))
}

/// Serves `core` with `config`'s HTTP settings on `listener` until
/// `shutdown` completes, like [`run`]: a plugin author's server in a few
/// lines (see the crate docs).
pub async fn serve(
    listener: TcpListener,
    core: Chatcore,
    config: Config,
    shutdown: impl Future<Output = ()>,
) {
    // Budgets shared through Redis when the config names one, as the
    // server's own start does.
    match budgets(&config, core.chat.store().clone()).await {
        Ok(b) => core.chat.set_budgets(b),
        Err(e) => {
            tracing::error!(error = %chatcore::error::Report(&e), "cannot start: budgets");
            return;
        }
    }
    run(listener, App::with_core(core, config).await, shutdown).await;
}

/// Serves `app` on `listener` until `shutdown` completes, then drains open
/// connections for at most the configured grace period (see [`conn`]).
pub async fn run(listener: TcpListener, app: Arc<App>, shutdown: impl Future<Output = ()>) {
    let router = routes::router(app.clone());
    let settings = conn::Settings::of(&app.config);
    let server = conn::Server::new(settings);
    server.accept_until(&listener, router, shutdown).await;
    drop(listener);
    let grace = Duration::from_secs(app.config.shutdown_grace_secs);
    tracing::info!(
        grace_secs = grace.as_secs(),
        "shutting down: draining open connections"
    );
    // The engine ends the streams still open when the grace is over (each
    // with an `unavailable` event); their connections then finish.
    let connections = async {
        tokio::join!(app.shutdown(), server.drain());
    };
    if tokio::time::timeout(grace + Duration::from_secs(5), connections)
        .await
        .is_err()
    {
        tracing::warn!("grace period over: closing the remaining connections");
        app.chat.audit().flush().await;
        if let Err(e) = app.chat.store().flush().await {
            tracing::error!(error = %chatcore::error::Report(&e), "could not flush the store's writes at shutdown");
        }
    }
}

/// Budgets shared through Redis when `CHATCORE_REDIS_URL` is set, else in
/// this process. `CHATCORE_BUDGETS_FAIL_OPEN=true` admits turns when Redis
/// fails (the default refuses them).
async fn budgets(
    config: &Config,
    store: Arc<dyn chatcore::store::Store>,
) -> Result<Arc<chatcore::budget::BudgetService>, StartError> {
    use chatcore::budget::{BudgetLedger, BudgetService, BudgetSettings, LocalLedger, RedisLedger};
    let fail_open = std::env::var("CHATCORE_BUDGETS_FAIL_OPEN")
        .map(|v| matches!(v.trim(), "1" | "true" | "yes" | "on"))
        .unwrap_or(false);
    let ledger: Arc<dyn BudgetLedger> = match &config.redis_url {
        Some(url) => Arc::new(
            RedisLedger::connect(url.expose_secret())
                .await
                .map_err(|e| StartError::Redis(chatcore::ratelimit::RateLimitError(e.0)))?,
        ),
        None => Arc::new(LocalLedger::new()),
    };
    let settings = BudgetSettings {
        fail_open,
        ..BudgetSettings::default()
    };
    Ok(Arc::new(BudgetService::new(store, ledger, settings)))
}
