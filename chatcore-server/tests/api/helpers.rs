//! `spawn_app()`: the server on port 0 with a fresh SQLite database in
//! memory; logs are silent unless `TEST_LOG` is set.

use std::net::SocketAddr;
use std::sync::{Arc, Once};

use chatcore_server::config::Config;
use chatcore_server::{App, run};
use tokio::sync::oneshot;

pub struct TestApp {
    pub addr: SocketAddr,
    pub client: reqwest::Client,
    pub app: Arc<App>,
    shutdown: Option<oneshot::Sender<()>>,
    pub server: Option<tokio::task::JoinHandle<()>>,
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Stops the server and waits for it to finish draining.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.server.take() {
            h.await.unwrap();
        }
    }
}

fn init_logs() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if std::env::var("TEST_LOG").is_ok() {
            tracing_subscriber::fmt()
                .with_env_filter("debug")
                .with_test_writer()
                .init();
        }
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(tweak: impl FnOnce(&mut Config)) -> TestApp {
    init_logs();
    let mut config = Config::load_from(None, |k| match k {
        "CHATCORE_DATABASE_URL" => Some("sqlite::memory:".into()),
        "CHATCORE_LISTEN" => Some("127.0.0.1:0".into()),
        "CHATCORE_SHUTDOWN_GRACE_SECS" => Some("5".into()),
        _ => None,
    })
    .unwrap();
    tweak(&mut config);
    let app = App::build(config).await.expect("app builds");
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
    }
}
