//! Fixtures for tests and benchmarks: the rows most of them start from (a
//! tenant, a provider configuration, a bot, an API key, a dataset), in one
//! place.
//!
//! - [`SystemWrites`]: the management writes as typed calls on any
//!   [`Store`], each one a [`Change`] written with its audit record by
//!   [`AuditStore::apply`] as the system (actor `system`, id `testkit`).
//!   The store has no other way to write these rows; this trait only spares
//!   a test the `Change`/`Changed` wrapping. It lives in the testkit so that
//!   production code writes through the admin service, with an actor of its
//!   own.
//! - [`new_tenant`], [`mock_provider`], [`new_bot`], [`new_key`],
//!   [`new_dataset`]: the rows to create, with the values tests use unless
//!   they say otherwise.
//! - [`Seed`]: a tenant with a mock provider, a bot and an API key (and, if
//!   asked, a dataset) in one call, as [`Seeded`].

use async_trait::async_trait;
use secrecy::SecretString;

use crate::auth::{GeneratedKey, generate_key};
use crate::domain::*;
use crate::store::*;

/// The actor of every fixture write.
pub fn system() -> Actor {
    Actor {
        kind: ActorKind::System,
        id: Some("testkit".into()),
    }
}

/// Applies `change` with an audit record by [`system`].
pub async fn apply<S: Store + ?Sized>(s: &S, change: Change) -> StoreResult<Changed> {
    let audit = change.audit_by(system());
    s.apply(change, audit).await
}

/// The management writes of [`Change`], typed, through
/// [`AuditStore::apply`] as [`system`]. Implemented for every [`Store`].
#[async_trait]
pub trait SystemWrites {
    /// [`Change::CreateTenant`] without a first key; `Conflict("tenant")`
    /// if the slug is taken.
    async fn create_tenant(&self, new: NewTenant) -> StoreResult<Tenant>;
    /// [`Change::UpdateTenant`].
    async fn update_tenant(&self, id: TenantId, patch: TenantPatch) -> StoreResult<Tenant>;
    /// [`Change::CreateProviderConfig`].
    async fn create_provider_config(
        &self,
        tenant: TenantId,
        new: NewProviderConfig,
    ) -> StoreResult<ProviderConfig>;
    /// [`Change::UpdateProviderConfig`].
    async fn update_provider_config(
        &self,
        tenant: TenantId,
        id: ProviderConfigId,
        patch: ProviderConfigPatch,
    ) -> StoreResult<ProviderConfig>;
    /// [`Change::DeleteProviderConfig`].
    async fn delete_provider_config(
        &self,
        tenant: TenantId,
        id: ProviderConfigId,
    ) -> StoreResult<()>;
    /// [`Change::CreateBot`].
    async fn create_bot(&self, tenant: TenantId, new: NewBot) -> StoreResult<Bot>;
    /// [`Change::UpdateBot`].
    async fn update_bot(&self, tenant: TenantId, id: BotId, patch: BotPatch) -> StoreResult<Bot>;
    /// [`Change::DeleteBot`].
    async fn delete_bot(&self, tenant: TenantId, id: BotId) -> StoreResult<()>;
    /// [`Change::CreateApiKey`].
    async fn create_api_key(&self, tenant: TenantId, new: NewApiKey) -> StoreResult<ApiKey>;
    /// [`Change::RevokeApiKey`].
    async fn revoke_api_key(&self, tenant: TenantId, id: ApiKeyId) -> StoreResult<ApiKey>;
    /// [`Change::CreateScope`].
    async fn create_scope(&self, tenant: TenantId, new: NewScope) -> StoreResult<Scope>;
    /// [`Change::DeleteScope`].
    async fn delete_scope(&self, tenant: TenantId, id: ScopeId) -> StoreResult<()>;
    /// [`Change::DeleteConversation`].
    async fn delete_conversation(&self, tenant: TenantId, id: ConversationId) -> StoreResult<()>;
}

#[async_trait]
impl<S: Store + ?Sized> SystemWrites for S {
    async fn create_tenant(&self, new: NewTenant) -> StoreResult<Tenant> {
        apply(self, Change::CreateTenant(new, None))
            .await?
            .into_tenant()
    }
    async fn update_tenant(&self, id: TenantId, patch: TenantPatch) -> StoreResult<Tenant> {
        apply(self, Change::UpdateTenant(id, patch))
            .await?
            .into_tenant()
    }
    async fn create_provider_config(
        &self,
        tenant: TenantId,
        new: NewProviderConfig,
    ) -> StoreResult<ProviderConfig> {
        apply(self, Change::CreateProviderConfig(tenant, new))
            .await?
            .into_provider_config()
    }
    async fn update_provider_config(
        &self,
        tenant: TenantId,
        id: ProviderConfigId,
        patch: ProviderConfigPatch,
    ) -> StoreResult<ProviderConfig> {
        apply(self, Change::UpdateProviderConfig(tenant, id, patch))
            .await?
            .into_provider_config()
    }
    async fn delete_provider_config(
        &self,
        tenant: TenantId,
        id: ProviderConfigId,
    ) -> StoreResult<()> {
        apply(self, Change::DeleteProviderConfig(tenant, id))
            .await?
            .into_deleted()
    }
    async fn create_bot(&self, tenant: TenantId, new: NewBot) -> StoreResult<Bot> {
        apply(self, Change::CreateBot(tenant, new))
            .await?
            .into_bot()
    }
    async fn update_bot(&self, tenant: TenantId, id: BotId, patch: BotPatch) -> StoreResult<Bot> {
        apply(self, Change::UpdateBot(tenant, id, patch))
            .await?
            .into_bot()
    }
    async fn delete_bot(&self, tenant: TenantId, id: BotId) -> StoreResult<()> {
        apply(self, Change::DeleteBot(tenant, id))
            .await?
            .into_deleted()
    }
    async fn create_api_key(&self, tenant: TenantId, new: NewApiKey) -> StoreResult<ApiKey> {
        apply(self, Change::CreateApiKey(tenant, new))
            .await?
            .into_api_key()
    }
    async fn revoke_api_key(&self, tenant: TenantId, id: ApiKeyId) -> StoreResult<ApiKey> {
        apply(self, Change::RevokeApiKey(tenant, id))
            .await?
            .into_api_key()
    }
    async fn create_scope(&self, tenant: TenantId, new: NewScope) -> StoreResult<Scope> {
        apply(self, Change::CreateScope(tenant, new))
            .await?
            .into_scope()
    }
    async fn delete_scope(&self, tenant: TenantId, id: ScopeId) -> StoreResult<()> {
        apply(self, Change::DeleteScope(tenant, id))
            .await?
            .into_deleted()
    }
    async fn delete_conversation(&self, tenant: TenantId, id: ConversationId) -> StoreResult<()> {
        apply(self, Change::DeleteConversation(tenant, id))
            .await?
            .into_deleted()
    }
}

/// A tenant named and slugged `slug`, without limits or features.
pub fn new_tenant(slug: &str) -> NewTenant {
    NewTenant {
        name: slug.into(),
        slug: slug.into(),
        rate_limit_rpm: None,
        rate_limit_tpm: None,
        features: serde_json::json!({}),
        public_rate_limit_rpm: None,
    }
}

/// The offline `mock` provider, enabled, default model `echo`, no key.
pub fn mock_provider() -> NewProviderConfig {
    NewProviderConfig {
        provider: "mock".into(),
        name: "mock".into(),
        api_key: None,
        base_url: None,
        default_model: Some("echo".into()),
        enabled: true,
    }
}

/// A private bot named and slugged `slug` on `provider` with `model`.
pub fn new_bot(provider: ProviderConfigId, slug: &str, model: &str) -> NewBot {
    NewBot {
        name: slug.into(),
        slug: slug.into(),
        system_prompt: "Be brief.".into(),
        provider_id: provider,
        model: Some(model.into()),
        fallback_provider_id: None,
        temperature: None,
        max_tokens: None,
        context_tokens: 2000,
        is_public: false,
        dataset_ids: vec![],
    }
}

/// A turn of `bot` in a new API conversation, asking `text` of the mock
/// provider's `echo` model.
pub fn new_turn(bot: BotId, text: &str) -> NewTurn {
    NewTurn {
        conversation: TurnConversation::New(NewConversation {
            bot_id: bot,
            end_user_id: None,
            title: None,
            channel: Channel::Api,
        }),
        user_content: text.into(),
        api_key_id: None,
        provider: Some("mock".into()),
        model: Some("echo".into()),
        tool_results: Vec::new(),
    }
}

/// A fresh key with `permissions` for every bot, and its secret.
pub fn new_key(name: &str, permissions: Vec<Permission>) -> (GeneratedKey, NewApiKey) {
    let g = generate_key();
    let new = NewApiKey {
        name: name.into(),
        prefix: g.prefix.clone(),
        secret_hash: g.hash,
        permissions,
        bot_ids: vec![],
        rate_limit_rpm: None,
        expires_at: None,
    };
    (g, new)
}

/// A dataset `docs` embedded by `provider` (model `mock-embed`) in `dim`
/// dimensions.
pub fn new_dataset(provider: ProviderConfigId, dim: i32) -> NewDataset {
    NewDataset {
        name: "docs".into(),
        provider_id: provider,
        embedding_model: "mock-embed".into(),
        embedding_dim: dim,
    }
}

/// What [`Seed::create`] made.
#[derive(Debug)]
pub struct Seeded {
    /// The tenant.
    pub tenant: Tenant,
    /// Its provider configuration.
    pub provider: ProviderConfig,
    /// Its bot.
    pub bot: Bot,
    /// Its API key.
    pub key: ApiKey,
    /// The key's secret.
    pub secret: SecretString,
    /// Its dataset, when [`Seed::dataset`] asked for one (created before
    /// the bot, which links it).
    pub dataset: Option<Dataset>,
}

/// A tenant with a provider, a bot and an API key, each changed from the
/// defaults above where a test needs it:
///
/// ```ignore
/// let seeded = Seed::new("acme").model("slow").create(&*store).await?;
/// ```
#[must_use = "a seed creates nothing until `create` runs"]
pub struct Seed {
    tenant: NewTenant,
    provider: NewProviderConfig,
    bot: Box<dyn FnOnce(&mut NewBot) + Send>,
    permissions: Vec<Permission>,
    dataset_dim: Option<i32>,
}

impl std::fmt::Debug for Seed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Seed")
            .field("tenant", &self.tenant.slug)
            .finish_non_exhaustive()
    }
}

impl Seed {
    /// Tenant `slug` ([`new_tenant`]), the [`mock_provider`], a private bot
    /// `bot` on model `echo` ([`new_bot`]) and a `chat` key.
    pub fn new(slug: &str) -> Self {
        Self {
            tenant: new_tenant(slug),
            provider: mock_provider(),
            bot: Box::new(|_| {}),
            permissions: vec![Permission::Chat],
            dataset_dim: None,
        }
    }

    /// Changes the tenant to create.
    pub fn tenant(mut self, f: impl FnOnce(&mut NewTenant)) -> Self {
        f(&mut self.tenant);
        self
    }

    /// Changes the provider configuration to create.
    pub fn provider(mut self, f: impl FnOnce(&mut NewProviderConfig)) -> Self {
        f(&mut self.provider);
        self
    }

    /// Changes the bot to create (after the changes asked before).
    pub fn bot(mut self, f: impl FnOnce(&mut NewBot) + Send + 'static) -> Self {
        let before = self.bot;
        self.bot = Box::new(move |b| {
            before(b);
            f(b)
        });
        self
    }

    /// The bot's slug and name.
    pub fn bot_slug(self, slug: &str) -> Self {
        let slug = slug.to_string();
        self.bot(move |b| {
            b.name = slug.clone();
            b.slug = slug;
        })
    }

    /// The bot's model.
    pub fn model(self, model: &str) -> Self {
        let model = model.to_string();
        self.bot(move |b| b.model = Some(model))
    }

    /// The key's permissions.
    pub fn permissions(mut self, permissions: Vec<Permission>) -> Self {
        self.permissions = permissions;
        self
    }

    /// Also a dataset of `dim` dimensions ([`new_dataset`]), linked to the bot.
    pub fn dataset(mut self, dim: i32) -> Self {
        self.dataset_dim = Some(dim);
        self
    }

    /// Creates it all.
    pub async fn create<S: Store + ?Sized>(self, s: &S) -> StoreResult<Seeded> {
        let tenant = s.create_tenant(self.tenant).await?;
        let provider = s.create_provider_config(tenant.id, self.provider).await?;
        let dataset = match self.dataset_dim {
            Some(dim) => Some(
                s.create_dataset(tenant.id, new_dataset(provider.id, dim))
                    .await?,
            ),
            None => None,
        };
        let mut nb = new_bot(provider.id, "bot", "echo");
        nb.dataset_ids = dataset.iter().map(|d| d.id).collect();
        (self.bot)(&mut nb);
        let bot = s.create_bot(tenant.id, nb).await?;
        let (g, nk) = new_key("test", self.permissions);
        let key = s.create_api_key(tenant.id, nk).await?;
        Ok(Seeded {
            tenant,
            provider,
            bot,
            key,
            secret: g.secret,
            dataset,
        })
    }
}
