//! chatcore-server: the HTTP adapter over the `chatcore` library.
//!
//! It translates requests into library calls and library results into JSON
//! (or SSE), and holds no business logic of its own. Modules:
//!
//! - [`config`]: environment / TOML configuration.
//! - [`keys`]: where the master key comes from.
//! - [`http`]: body type, JSON replies, the error format.
//! - [`routes`]: the router.
//!
//! [`run`] serves an [`App`] on a listener the caller bound, until the
//! caller's shutdown future completes; then it stops accepting and lets open
//! connections finish within a grace period.

pub mod config;
pub mod http;
pub mod keys;
pub mod routes;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chatcore::crypto::Keyring;
use chatcore::store::{SeaOrmStore, Store, StoreOptions};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use crate::config::Config;

/// Everything a request handler needs, shared by all connections.
pub struct App {
    /// Persistence.
    pub store: Arc<dyn Store>,
    /// Master keyring (provider keys at rest).
    pub keyring: Keyring,
    /// Configuration.
    pub config: Config,
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
}

impl App {
    /// Opens the database (migrating it) and builds the app.
    pub async fn build(config: Config) -> Result<Arc<Self>, StartError> {
        let keyring = keys::keyring(&config)?;
        let store = SeaOrmStore::open(&config.database_url, StoreOptions::default()).await?;
        Ok(Arc::new(Self {
            store: Arc::new(store),
            keyring,
            config,
        }))
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
}
