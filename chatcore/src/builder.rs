//! [`Chatcore`] and its builder: the services, wired, in a line or two.
//!
//! ```no_run
//! # async fn demo() -> Result<(), chatcore::BuildError> {
//! let core = chatcore::Chatcore::builder()
//!     .store_url("sqlite://chat.db?mode=rwc")
//!     .build()
//!     .await?;
//! // core.chat: turns; core.admin: tenants, providers, bots, keys; core.rag: datasets.
//! # Ok(()) }
//! ```
//!
//! What is built, and from what (each has a default):
//!
//! - the [`Store`]: given, or opened (and migrated) from a URL;
//! - [`Providers`]: the [`ProviderRegistry`] (the built-ins, plus what the
//!   caller registers) and the [`Keyring`] that opens stored provider keys,
//!   shared by chat (answers) and RAG (embeddings);
//! - the [`Caches`] of keys and bots, shared by chat (reads) and admin and
//!   RAG (which invalidate them);
//! - the [`RateLimiter`] (in process unless given), the [`AuditWriter`]
//!   (spawned on the store unless given);
//! - [`RagService`], then [`ChatService`] with it as its retriever (or the
//!   caller's [`ContextRetriever`]), then [`AdminService`].
//!
//! Nothing refers back: RAG needs providers and the store, not the chat
//! service, so there is no cycle to tie at run time.

use std::sync::Arc;

use crate::admin::AdminService;
use crate::audit::{AuditConfig, AuditWriter};
use crate::crypto::Keyring;
use crate::engine::{Caches, ChatError, ChatService, ChatSettings, ContextRetriever, Providers};
use crate::provider::{Provider, ProviderError, ProviderRegistry, ProviderSpec};
use crate::rag::RagService;
use crate::ratelimit::{LocalRateLimiter, RateLimiter};
use crate::store::{SeaOrmStore, Store, StoreError, StoreOptions};

/// The services of one chatcore instance, wired together. Build it once
/// per process with [`Chatcore::builder`] and share it.
#[non_exhaustive]
pub struct Chatcore {
    /// Chat turns (in process: no HTTP).
    pub chat: Arc<ChatService>,
    /// Management: tenants, providers, bots, API keys, scopes,
    /// conversations, the audit log, usage.
    pub admin: AdminService,
    /// Datasets, documents, ingestion and retrieval.
    pub rag: Arc<RagService>,
    /// The built providers, shared by chat and RAG.
    pub providers: Arc<Providers>,
}

impl std::fmt::Debug for Chatcore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chatcore")
            .field("chat", &self.chat)
            .field("providers", &self.providers)
            .finish_non_exhaustive()
    }
}

impl Chatcore {
    /// A builder with the defaults: built-in providers, default
    /// [`ChatSettings`], in-process rate limits, an audit writer on the
    /// store. Only the store must be given.
    pub fn builder() -> ChatcoreBuilder {
        ChatcoreBuilder::default()
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        self.chat.store()
    }

    /// Lets open streams finish within `grace`, then flushes the audit log
    /// and the store's queued writes ([`ChatService::shutdown`]).
    pub async fn shutdown(&self, grace: std::time::Duration) {
        self.chat.shutdown(grace).await;
    }
}

enum StoreSource {
    Url(String),
    Given(Arc<dyn Store>),
}

/// Builds a [`Chatcore`]; see [`Chatcore::builder`].
#[derive(Default)]
pub struct ChatcoreBuilder {
    store: Option<StoreSource>,
    store_options: StoreOptions,
    /// Its default is the built-ins.
    registry: ProviderRegistry,
    keyring: Option<Keyring>,
    settings: ChatSettings,
    limiter: Option<Arc<dyn RateLimiter>>,
    audit: Option<AuditWriter>,
    audit_config: AuditConfig,
    retriever: Option<Arc<dyn ContextRetriever>>,
    budgets: Option<Arc<crate::budget::BudgetService>>,
}

impl std::fmt::Debug for ChatcoreBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatcoreBuilder")
            .field("registry", &self.registry)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// Why [`ChatcoreBuilder::build`] failed.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// Neither [`ChatcoreBuilder::store_url`] nor [`ChatcoreBuilder::store`]
    /// was called.
    #[error("no store: call store_url(...) or store(...)")]
    NoStore,
    /// The database cannot be opened or migrated.
    #[error("database: {0}")]
    Store(#[source] StoreError),
    /// Unfinished document indexing could not be resumed.
    #[error("resuming document indexing: {0}")]
    Rag(#[source] ChatError),
}

impl ChatcoreBuilder {
    /// Opens (and migrates) the database at `url` (`sqlite://...`,
    /// `sqlite::memory:`, `postgres://...`) when built.
    pub fn store_url(mut self, url: impl Into<String>) -> Self {
        self.store = Some(StoreSource::Url(url.into()));
        self
    }

    /// Pool, schema and cache options for [`ChatcoreBuilder::store_url`].
    pub fn store_options(mut self, options: StoreOptions) -> Self {
        self.store_options = options;
        self
    }

    /// A store of the caller's (another database, a test double).
    pub fn store(mut self, store: Arc<dyn Store>) -> Self {
        self.store = Some(StoreSource::Given(store));
        self
    }

    /// The provider registry (default: the built-ins).
    pub fn registry(mut self, registry: ProviderRegistry) -> Self {
        self.registry = registry;
        self
    }

    /// Registers (or replaces) the factory of a provider kind: a
    /// plugin's provider, used by the provider configs of that catalog
    /// kind.
    pub fn provider<F>(mut self, kind: impl Into<String>, factory: F) -> Self
    where
        F: Fn(&ProviderSpec) -> Result<Arc<dyn Provider>, ProviderError> + Send + Sync + 'static,
    {
        self.registry.register(kind, factory);
        self
    }

    /// The master keyring that seals provider API keys. Without one, a
    /// random key is made for this process only (a warning is logged):
    /// keys sealed with it cannot be opened after a restart, which suits
    /// an in-memory store and nothing else.
    pub fn keyring(mut self, keyring: Keyring) -> Self {
        self.keyring = Some(keyring);
        self
    }

    /// Engine settings (default: [`ChatSettings::default`]).
    pub fn settings(mut self, settings: ChatSettings) -> Self {
        self.settings = settings;
        self
    }

    /// The rate limiter (default: in process; give a Redis one to share
    /// limits between instances).
    pub fn limiter(mut self, limiter: Arc<dyn RateLimiter>) -> Self {
        self.limiter = Some(limiter);
        self
    }

    /// The audit writer (default: one spawned on the store with
    /// [`ChatcoreBuilder::audit_config`]).
    pub fn audit(mut self, audit: AuditWriter) -> Self {
        self.audit = Some(audit);
        self
    }

    /// Tuning of the default audit writer.
    pub fn audit_config(mut self, config: AuditConfig) -> Self {
        self.audit_config = config;
        self
    }

    /// Context for bots with datasets from the caller's retriever instead
    /// of the built [`RagService`].
    pub fn retriever(mut self, retriever: Arc<dyn ContextRetriever>) -> Self {
        self.retriever = Some(retriever);
        self
    }

    /// Spending budgets with a ledger of the caller's (e.g.
    /// [`crate::budget::RedisLedger`], shared by several instances) instead
    /// of the in-process default.
    pub fn budgets(mut self, budgets: Arc<crate::budget::BudgetService>) -> Self {
        self.budgets = Some(budgets);
        self
    }

    /// Opens the store and wires the services (in a Tokio runtime: the
    /// audit writer and the document indexer are tasks).
    pub async fn build(self) -> Result<Chatcore, BuildError> {
        let store: Arc<dyn Store> = match self.store {
            None => return Err(BuildError::NoStore),
            Some(StoreSource::Given(s)) => s,
            Some(StoreSource::Url(url)) => Arc::new(
                SeaOrmStore::open(&url, self.store_options)
                    .await
                    .map_err(BuildError::Store)?,
            ),
        };
        let keyring = self.keyring.unwrap_or_else(|| {
            tracing::warn!(
                "no master keyring given: provider keys are sealed with a key of this process only"
            );
            Keyring::from_base64(&Keyring::generate_base64(), &[])
                .expect("a generated key is valid")
        });
        let limiter = self
            .limiter
            .unwrap_or_else(|| Arc::new(LocalRateLimiter::new()));
        // The writer task ends when the last writer is dropped, after
        // writing what was queued; nothing needs its handle.
        let audit = self
            .audit
            .unwrap_or_else(|| AuditWriter::spawn(store.clone(), self.audit_config).0);
        let settings = self.settings;
        let providers = Arc::new(Providers::new(
            store.clone(),
            Arc::new(self.registry),
            keyring,
            &settings,
        ));
        let caches = Caches::new(store.clone(), settings.cache_ttl);
        let rag = RagService::start(
            store.clone(),
            providers.clone(),
            audit.clone(),
            caches.clone(),
        )
        .await
        .map_err(BuildError::Rag)?;
        let retriever = self.retriever.unwrap_or_else(|| rag.clone());
        let chat = Arc::new(ChatService::new(
            store,
            providers.clone(),
            caches,
            limiter,
            audit,
            Some(retriever),
            settings,
        ));
        if let Some(b) = self.budgets {
            chat.set_budgets(b);
        }
        let admin = AdminService::for_chat(&chat);
        Ok(Chatcore {
            chat,
            admin,
            rag,
            providers,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_store_is_the_one_thing_to_give() {
        assert!(matches!(
            Chatcore::builder().build().await,
            Err(BuildError::NoStore)
        ));
        let core = Chatcore::builder()
            .store_url("sqlite::memory:")
            .build()
            .await
            .unwrap();
        // One set of providers, shared by chat and RAG.
        assert!(Arc::ptr_eq(core.chat.providers(), &core.providers));
        assert!(core.providers.registry().contains("mock"));
    }
}
