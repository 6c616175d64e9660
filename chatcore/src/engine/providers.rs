//! [`Providers`]: the tenants' provider configurations, built into
//! [`Provider`]s once per config version, shared by chat and RAG.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::{ChatError, ChatSettings};
use crate::crypto::Keyring;
use crate::domain::*;
use crate::provider::{
    EgressPolicy, Provider, ProviderRegistry, ProviderSpec, RetryPolicy, Timeouts,
};
use crate::store::TenantStore;

/// Built providers by config, with the config's `updated_at` (a rotated key
/// or changed URL rebuilds it; an unchanged one reuses its connection pool).
type Built = Mutex<HashMap<ProviderConfigId, (chrono::DateTime<chrono::Utc>, Arc<dyn Provider>)>>;

/// Turns a tenant's provider configuration into a working [`Provider`]:
/// the registry's factory for its kind, its API key opened with the
/// keyring, the engine's timeouts, retries and egress policy. Built
/// providers are kept per config and rebuilt when the config changes.
///
/// One per process, shared (`Arc`) by [`super::ChatService`] (chat) and
/// [`crate::rag::RagService`] (embeddings), so neither needs the other.
pub struct Providers {
    /// Only the tenants-and-keys part of the store (provider configs).
    store: Arc<dyn TenantStore>,
    registry: Arc<ProviderRegistry>,
    keyring: Keyring,
    timeouts: Timeouts,
    retry: RetryPolicy,
    egress: EgressPolicy,
    built: Built,
}

impl std::fmt::Debug for Providers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Providers")
            .field("registry", &self.registry)
            .finish_non_exhaustive()
    }
}

impl Providers {
    /// Providers of the configs in `store`, built by `registry` with the
    /// timeouts, retries and egress policy of `settings`; stored API keys
    /// are opened with `keyring`.
    pub fn new(
        store: Arc<dyn TenantStore>,
        registry: Arc<ProviderRegistry>,
        keyring: Keyring,
        settings: &ChatSettings,
    ) -> Self {
        Self {
            store,
            registry,
            keyring,
            timeouts: settings.timeouts,
            retry: settings.retry,
            egress: settings.egress.clone(),
            built: Mutex::new(HashMap::new()),
        }
    }

    /// The provider of config `id` of `tenant` (403 when it is disabled).
    pub async fn get(
        &self,
        tenant: TenantId,
        id: ProviderConfigId,
    ) -> Result<Arc<dyn Provider>, ChatError> {
        Ok(self.get_with_config(tenant, id).await?.0)
    }

    /// [`Providers::get`], with the config it was built from.
    pub async fn get_with_config(
        &self,
        tenant: TenantId,
        id: ProviderConfigId,
    ) -> Result<(Arc<dyn Provider>, ProviderConfig), ChatError> {
        let cfg = self.store.get_provider_config(tenant, id).await?;
        if !cfg.enabled {
            return Err(ChatError::Forbidden(
                "the provider configuration is disabled".into(),
            ));
        }
        if let Some((at, p)) = self.built.lock().expect("provider cache poisoned").get(&id)
            && *at == cfg.updated_at
        {
            return Ok((p.clone(), cfg));
        }
        let mut spec = ProviderSpec::new(cfg.provider.clone());
        spec.api_key = match &cfg.api_key {
            Some(sealed) => Some(self.keyring.open(tenant, sealed).map_err(|e| {
                tracing::error!(provider_config = %id, error = %crate::error::Report(&e), "cannot open a stored provider key");
                ChatError::internal_from("provider key cannot be decrypted", e)
            })?),
            None => None,
        };
        spec.base_url = cfg.base_url.clone();
        spec.default_model = cfg.default_model.clone();
        spec.timeouts = self.timeouts;
        spec.retry = self.retry;
        spec.egress = self.egress.clone();
        let p = self.registry.build(&spec).map_err(ChatError::Provider)?;
        self.built
            .lock()
            .expect("provider cache poisoned")
            .insert(id, (cfg.updated_at, p.clone()));
        Ok((p, cfg))
    }

    /// The registry providers are built with.
    pub fn registry(&self) -> &ProviderRegistry {
        &self.registry
    }

    /// The master keyring that opens stored provider keys.
    pub fn keyring(&self) -> &Keyring {
        &self.keyring
    }

    /// Which addresses provider calls may connect to.
    pub fn egress(&self) -> &EgressPolicy {
        &self.egress
    }
}
