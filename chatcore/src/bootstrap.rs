//! First start: a demo tenant with a public `demo` bot, so that a newcomer
//! can chat in one step.

use secrecy::SecretString;

use crate::auth::generate_key;
use crate::crypto::Keyring;
use crate::domain::*;
use crate::store::*;

/// What the first start created; the admin key is shown once.
#[derive(Debug)]
pub struct Demo {
    /// The demo tenant.
    pub tenant: Tenant,
    /// The public bot.
    pub bot: Bot,
    /// An admin API key of the demo tenant (shown once, never stored).
    pub admin_key: SecretString,
}

/// When the database has no tenant: creates the demo tenant, a provider
/// (OpenAI when `openai_key` is given, else the offline mock), the public
/// bot `demo` and an admin key. Returns None when tenants already exist.
pub async fn ensure_demo(
    store: &dyn Store,
    keyring: &Keyring,
    openai_key: Option<&SecretString>,
) -> StoreResult<Option<Demo>> {
    if !store
        .list_tenants(PageRequest::first(1))
        .await?
        .data
        .is_empty()
    {
        return Ok(None);
    }
    // Written as the system (`bootstrap`), each change with its audit
    // record, like any management write.
    let apply = |change: Change| {
        let audit = change.audit_by(Actor {
            kind: ActorKind::System,
            id: Some("bootstrap".into()),
        });
        store.apply(change, audit)
    };
    let tenant = apply(Change::CreateTenant(
        NewTenant {
            name: "Demo".into(),
            slug: "demo".into(),
            rate_limit_rpm: None,
            rate_limit_tpm: None,
            features: serde_json::json!({}),
            public_rate_limit_rpm: None,
        },
        None,
    ))
    .await?
    .into_tenant()?;
    let (provider, model, name, key) = match openai_key {
        Some(k) => (
            "openai",
            "gpt-4o-mini",
            "OpenAI",
            Some(keyring.seal(tenant.id, k)),
        ),
        // `slow-echo` repeats the message word by word, 50 ms apart: the
        // demo page shows an answer streaming in.
        None => ("mock", "slow-echo", "Mock (offline)", None),
    };
    let pc = apply(Change::CreateProviderConfig(
        tenant.id,
        NewProviderConfig {
            provider: provider.into(),
            name: name.into(),
            api_key: key,
            base_url: None,
            default_model: Some(model.into()),
            enabled: true,
        },
    ))
    .await?
    .into_provider_config()?;
    let bot = apply(Change::CreateBot(
        tenant.id,
        NewBot {
            name: "Demo bot".into(),
            slug: "demo".into(),
            system_prompt: "You are a friendly assistant. Answer briefly.".into(),
            provider_id: pc.id,
            model: Some(model.into()),
            fallback_provider_id: None,
            temperature: None,
            max_tokens: Some(512),
            context_tokens: 4000,
            is_public: true,
            dataset_ids: vec![],
        },
    ))
    .await?
    .into_bot()?;
    let g = generate_key();
    apply(Change::CreateApiKey(
        tenant.id,
        NewApiKey {
            name: "demo admin".into(),
            prefix: g.prefix.clone(),
            secret_hash: g.hash,
            permissions: vec![Permission::Admin, Permission::Chat, Permission::Read],
            bot_ids: vec![],
            rate_limit_rpm: None,
            expires_at: None,
        },
    ))
    .await?
    .into_api_key()?;
    Ok(Some(Demo {
        tenant,
        bot,
        admin_key: g.secret,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn demo_is_created_once() {
        let store = SeaOrmStore::in_memory().await.unwrap();
        let ring = Keyring::from_raw([1; 32], &[]);
        let demo = ensure_demo(&store, &ring, None)
            .await
            .unwrap()
            .expect("created");
        assert!(demo.bot.is_public);
        assert_eq!(store.find_public_bot("demo").await.unwrap().id, demo.bot.id);
        let key = store
            .find_api_key_by_secret(&demo.admin_key)
            .await
            .unwrap()
            .unwrap();
        assert!(key.allows(Permission::Admin));
        assert!(ensure_demo(&store, &ring, None).await.unwrap().is_none());
    }
}
