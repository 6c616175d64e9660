//! The store conformance suite: every [`Store`] implementation must pass it.
//!
//! Each case is a public async function taking a fresh, migrated, empty
//! store. [`store_conformance_tests!`](crate::store_conformance_tests)
//! turns the whole list into one `#[tokio::test]` per case:
//!
//! ```ignore
//! async fn fresh() -> chatcore::testkit::store::Fixture {
//!     chatcore::testkit::store::Fixture::new(std::sync::Arc::new(MyStore::new().await))
//! }
//! chatcore::store_conformance_tests!(fresh);
//! ```

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use chrono::Duration;
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;

use crate::auth;
use crate::crypto::Keyring;
use crate::domain::*;
use crate::store::*;
use crate::testkit::fixtures::SystemWrites;

/// A store under test and what to do once the case passed (drop a schema,
/// delete a file).
pub struct Fixture {
    /// The store.
    pub store: Arc<dyn Store>,
    cleanup: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
}

impl Fixture {
    /// A fixture with nothing to clean up.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self {
            store,
            cleanup: None,
        }
    }

    /// A fixture whose `cleanup` runs after the case passed.
    pub fn with_cleanup(
        store: Arc<dyn Store>,
        cleanup: impl Future<Output = ()> + Send + 'static,
    ) -> Self {
        Self {
            store,
            cleanup: Some(Box::pin(cleanup)),
        }
    }

    /// Runs the cleanup.
    pub async fn finish(self) {
        drop(self.store);
        if let Some(c) = self.cleanup {
            c.await;
        }
    }
}

/// Generates one `#[tokio::test]` per conformance case. `$make` is an async
/// function returning a [`Fixture`] with a fresh, migrated, empty store.
#[macro_export]
macro_rules! store_conformance_tests {
    ($make:path) => {
        $crate::store_conformance_tests!(@cases $make;
            tenants_crud_and_conflicts,
            tenant_pagination_edges,
            catalog_is_seeded,
            provider_configs_crud,
            provider_in_use_cannot_be_deleted,
            bots_crud_and_slugs,
            bots_reject_foreign_references,
            public_bot_lookup,
            api_keys_lifecycle,
            conversations_and_filters,
            messages_history_and_finish,
            begin_turn_stores_the_turn,
            a_turn_keeps_tool_calls_and_results,
            deleting_cascades,
            datasets_documents_chunks,
            replacing_a_document_is_all_or_nothing,
            chunk_search_by_vector_and_text,
            scopes_crud,
            audit_append_list_filter,
            timestamps_keep_microseconds,
            tenant_isolation,
            apply_writes_the_change_and_its_audit_record_together,
            apply_is_tenant_scoped,
            usage_groups_by_bot_key_and_day,
            usage_counts_each_outcome_once,
            usage_survives_deleting_what_it_counts,
            usage_is_tenant_scoped,
            usage_matches_the_messages,
            concurrent_turns_each_get_their_own_answer,
            widget_settings_and_secret,
            feedback_on_answers
        );
    };
    (@cases $make:path; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $case() {
                let fixture: $crate::testkit::store::Fixture = $make().await;
                $crate::testkit::store::$case(&*fixture.store).await;
                fixture.finish().await;
            }
        )*
    };
}

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        &uuid::Uuid::now_v7().simple().to_string()[20..]
    )
}

fn new_tenant(name: &str) -> NewTenant {
    NewTenant {
        name: name.into(),
        slug: unique(name),
        rate_limit_rpm: Some(60),
        rate_limit_tpm: None,
        features: json!({"rag": true}),
        public_rate_limit_rpm: None,
    }
}

async fn tenant(s: &dyn Store, name: &str) -> Tenant {
    s.create_tenant(new_tenant(name))
        .await
        .expect("create tenant")
}

fn keyring() -> Keyring {
    Keyring::from_raw([9u8; 32], &[])
}

async fn provider(s: &dyn Store, t: TenantId) -> ProviderConfig {
    s.create_provider_config(
        t,
        NewProviderConfig {
            provider: "mock".into(),
            name: "mock".into(),
            api_key: Some(
                keyring().seal(t, &SecretString::from("sk-conformance-1234".to_string())),
            ),
            base_url: None,
            default_model: Some("echo".into()),
            enabled: true,
        },
    )
    .await
    .expect("create provider config")
}

fn new_bot(p: ProviderConfigId, slug: &str) -> NewBot {
    NewBot {
        name: slug.into(),
        slug: slug.into(),
        system_prompt: "You are helpful.".into(),
        provider_id: p,
        model: Some("echo".into()),
        fallback_provider_id: None,
        temperature: Some(0.5),
        max_tokens: Some(256),
        context_tokens: 4000,
        is_public: false,
        dataset_ids: vec![],
    }
}

async fn bot(s: &dyn Store, t: TenantId, p: ProviderConfigId, slug: &str) -> Bot {
    s.create_bot(t, new_bot(p, slug)).await.expect("create bot")
}

async fn conversation(s: &dyn Store, t: TenantId, b: BotId, user: Option<&str>) -> Conversation {
    s.create_conversation(
        t,
        NewConversation {
            bot_id: b,
            end_user_id: user.map(Into::into),
            title: None,
            channel: Channel::Api,
        },
    )
    .await
    .expect("create conversation")
}

fn user_msg(c: ConversationId, text: &str) -> NewMessage {
    NewMessage {
        conversation_id: c,
        role: Role::User,
        content: text.into(),
        status: MessageStatus::Complete,
        api_key_id: None,
        provider: None,
        model: None,
        tool_call_id: None,
    }
}

async fn dataset(s: &dyn Store, t: TenantId, p: ProviderConfigId) -> Dataset {
    s.create_dataset(
        t,
        NewDataset {
            name: "docs".into(),
            provider_id: p,
            embedding_model: "mock-embed".into(),
            embedding_dim: 4,
        },
    )
    .await
    .expect("create dataset")
}

fn new_doc(d: DatasetId, title: &str) -> NewDocument {
    NewDocument {
        dataset_id: d,
        title: title.into(),
        source: Some("test".into()),
        mime_type: "text/plain".into(),
        metadata: json!({"lang": "en"}),
        content: format!("content of {title}"),
        content_hash: format!("hash-{title}"),
    }
}

fn new_key(name: &str) -> (auth::GeneratedKey, NewApiKey) {
    let g = auth::generate_key();
    let n = NewApiKey {
        name: name.into(),
        prefix: g.prefix.clone(),
        secret_hash: g.hash,
        permissions: vec![Permission::Chat, Permission::Read],
        bot_ids: vec![],
        rate_limit_rpm: Some(10),
        expires_at: None,
    };
    (g, n)
}

/// Collects every row of a paginated list, page by page.
async fn collect_pages<T, F, Fut>(limit: u64, mut fetch: F) -> (Vec<T>, usize)
where
    F: FnMut(PageRequest) -> Fut,
    Fut: Future<Output = StoreResult<Page<T>>>,
{
    let mut all = Vec::new();
    let mut cursor = None;
    let mut pages = 0;
    loop {
        let p = fetch(PageRequest {
            limit,
            cursor: cursor.clone(),
        })
        .await
        .expect("page");
        pages += 1;
        assert!(
            p.data.len() as u64 <= limit,
            "a page never exceeds its limit"
        );
        all.extend(p.data);
        match p.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
        assert!(pages < 1000, "pagination does not terminate");
    }
    (all, pages)
}

/// Tenants: create, read by id and slug, update, slug conflict.
pub async fn tenants_crud_and_conflicts(s: &dyn Store) {
    s.ping().await.expect("ping");
    let t = tenant(s, "acme").await;
    assert_eq!(t.status, TenantStatus::Active);
    assert_eq!(t.features, json!({"rag": true}));
    assert_eq!(s.get_tenant(t.id).await.unwrap(), t);
    assert_eq!(s.get_tenant_by_slug(&t.slug).await.unwrap(), t);
    assert!(matches!(
        s.get_tenant(TenantId::new()).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        s.get_tenant_by_slug("nope").await,
        Err(StoreError::NotFound(_))
    ));

    let dup = s
        .create_tenant(NewTenant {
            name: "other".into(),
            slug: t.slug.clone(),
            rate_limit_rpm: None,
            rate_limit_tpm: None,
            features: json!({}),
            public_rate_limit_rpm: None,
        })
        .await;
    assert!(
        matches!(dup, Err(StoreError::Conflict("tenant"))),
        "{dup:?}"
    );

    let u = s
        .update_tenant(
            t.id,
            TenantPatch {
                status: Some(TenantStatus::Suspended),
                rate_limit_rpm: Some(None),
                rate_limit_tpm: Some(Some(1000)),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(u.status, TenantStatus::Suspended);
    assert_eq!(u.rate_limit_rpm, None);
    assert_eq!(u.rate_limit_tpm, Some(1000));
    assert_eq!(u.name, t.name, "untouched fields are kept");
    assert!(u.updated_at >= t.updated_at);
    assert_eq!(s.get_tenant(t.id).await.unwrap(), u);
    assert!(matches!(
        s.update_tenant(TenantId::new(), TenantPatch::default())
            .await,
        Err(StoreError::NotFound(_))
    ));
}

/// Pagination: default limit, exact multiples, last page, bad cursor.
pub async fn tenant_pagination_edges(s: &dyn Store) {
    let empty = s.list_tenants(PageRequest::first(10)).await.unwrap();
    assert!(empty.data.is_empty() && empty.next_cursor.is_none());
    let mut made = Vec::new();
    for i in 0..6 {
        made.push(tenant(s, &format!("t{i}")).await.id);
    }
    // Exact multiple: 6 rows, pages of 3 -> 2 pages (no empty third page).
    let (rows, pages) = collect_pages(3, |p| s.list_tenants(p)).await;
    assert_eq!(
        rows.iter().map(|t| t.id).collect::<Vec<_>>(),
        made,
        "oldest first, nothing lost or repeated"
    );
    assert_eq!(pages, 2);
    let (rows, pages) = collect_pages(4, |p| s.list_tenants(p)).await;
    assert_eq!(rows.len(), 6);
    assert_eq!(pages, 2);
    let (_, pages) = collect_pages(1, |p| s.list_tenants(p)).await;
    assert_eq!(pages, 6);
    // limit 0 means the default.
    let all = s
        .list_tenants(PageRequest {
            limit: 0,
            cursor: None,
        })
        .await
        .unwrap();
    assert_eq!(all.data.len(), 6);
    assert!(all.next_cursor.is_none());
    let bad = s
        .list_tenants(PageRequest {
            limit: 2,
            cursor: Some("not-a-cursor".into()),
        })
        .await;
    assert!(matches!(bad, Err(StoreError::InvalidInput(_))), "{bad:?}");
    // A cursor past the end gives an empty last page.
    let last = s
        .list_tenants(PageRequest {
            limit: 2,
            cursor: Some(made[5].to_string()),
        })
        .await
        .unwrap();
    assert!(last.data.is_empty() && last.next_cursor.is_none());
}

/// The catalog has the five providers.
pub async fn catalog_is_seeded(s: &dyn Store) {
    let keys: Vec<String> = s
        .list_catalog()
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.key)
        .collect();
    for k in ["anthropic", "google", "mock", "openai", "openai_compatible"] {
        assert!(keys.contains(&k.to_string()), "catalog lacks {k}: {keys:?}");
    }
    let openai = s.get_catalog_entry("openai").await.unwrap();
    assert_eq!(openai.auth_style, AuthStyle::Bearer);
    assert!(openai.supports_embeddings && openai.supports_stream);
    let anthropic = s.get_catalog_entry("anthropic").await.unwrap();
    assert_eq!(anthropic.auth_style, AuthStyle::XApiKey);
    assert!(!anthropic.supports_embeddings);
    assert!(matches!(
        s.get_catalog_entry("nope").await,
        Err(StoreError::NotFound(_))
    ));
}

/// Provider configs: sealed key round trip, update with rotation, unknown kind.
pub async fn provider_configs_crud(s: &dyn Store) {
    let t = tenant(s, "p").await;
    let p = provider(s, t.id).await;
    let got = s.get_provider_config(t.id, p.id).await.unwrap();
    assert_eq!(got, p);
    let sealed = got.api_key.clone().expect("key stored");
    assert_eq!(sealed.last4, "1234");
    assert_eq!(
        keyring().open(t.id, &sealed).unwrap().expose_secret(),
        "sk-conformance-1234"
    );

    let rotated = keyring().seal(t.id, &SecretString::from("sk-new-secret-9999".to_string()));
    let u = s
        .update_provider_config(
            t.id,
            p.id,
            ProviderConfigPatch {
                api_key: Some(Some(rotated.clone())),
                base_url: Some(Some("http://127.0.0.1:9".into())),
                enabled: Some(false),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(u.api_key, Some(rotated));
    assert_eq!(u.base_url.as_deref(), Some("http://127.0.0.1:9"));
    assert!(!u.enabled);
    assert_eq!(u.name, p.name);
    let cleared = s
        .update_provider_config(
            t.id,
            p.id,
            ProviderConfigPatch {
                api_key: Some(None),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(cleared.api_key, None);

    let unknown = s
        .create_provider_config(
            t.id,
            NewProviderConfig {
                provider: "no-such-vendor".into(),
                name: "x".into(),
                api_key: None,
                base_url: None,
                default_model: None,
                enabled: true,
            },
        )
        .await;
    assert!(
        matches!(unknown, Err(StoreError::NotFound(_))),
        "{unknown:?}"
    );

    let second = provider(s, t.id).await;
    let (rows, _) = collect_pages(1, |pg| s.list_provider_configs(t.id, pg)).await;
    assert_eq!(
        rows.iter().map(|r| r.id).collect::<Vec<_>>(),
        vec![p.id, second.id]
    );
    s.delete_provider_config(t.id, second.id).await.unwrap();
    assert!(matches!(
        s.get_provider_config(t.id, second.id).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        s.delete_provider_config(t.id, second.id).await,
        Err(StoreError::NotFound(_))
    ));
}

/// A provider config used by a bot, a fallback or a dataset is not deleted.
pub async fn provider_in_use_cannot_be_deleted(s: &dyn Store) {
    let t = tenant(s, "inuse").await;
    let p = provider(s, t.id).await;
    let fb = provider(s, t.id).await;
    let emb = provider(s, t.id).await;
    let mut nb = new_bot(p.id, "b");
    nb.fallback_provider_id = Some(fb.id);
    let b = s.create_bot(t.id, nb).await.unwrap();
    dataset(s, t.id, emb.id).await;
    for id in [p.id, fb.id, emb.id] {
        let r = s.delete_provider_config(t.id, id).await;
        assert!(matches!(r, Err(StoreError::InUse(_))), "{r:?}");
        s.get_provider_config(t.id, id).await.expect("still there");
    }
    s.delete_bot(t.id, b.id).await.unwrap();
    s.delete_provider_config(t.id, p.id).await.unwrap();
    s.delete_provider_config(t.id, fb.id).await.unwrap();
}

/// Bots: CRUD, slug unique per tenant (not across tenants), lookups.
pub async fn bots_crud_and_slugs(s: &dyn Store) {
    let t = tenant(s, "bots").await;
    let p = provider(s, t.id).await;
    let p2 = provider(s, t.id).await;
    let ds = dataset(s, t.id, p.id).await;
    let mut nb = new_bot(p.id, "helper");
    nb.dataset_ids = vec![ds.id];
    nb.fallback_provider_id = Some(p2.id);
    let b = s.create_bot(t.id, nb).await.unwrap();
    assert_eq!(b.dataset_ids, vec![ds.id]);
    assert_eq!(b.temperature, Some(0.5));
    assert_eq!(b.status, BotStatus::Active);
    assert_eq!(s.get_bot(t.id, b.id).await.unwrap(), b);
    assert_eq!(s.get_bot_by_slug(t.id, "helper").await.unwrap(), b);

    let dup = s.create_bot(t.id, new_bot(p.id, "helper")).await;
    assert!(matches!(dup, Err(StoreError::Conflict("bot"))), "{dup:?}");
    // The same slug in another tenant is fine.
    let t2 = tenant(s, "bots2").await;
    let p_2 = provider(s, t2.id).await;
    bot(s, t2.id, p_2.id, "helper").await;

    let u = s
        .update_bot(
            t.id,
            b.id,
            BotPatch {
                system_prompt: Some("Be brief.".into()),
                is_public: Some(true),
                temperature: Some(None),
                fallback_provider_id: Some(None),
                dataset_ids: Some(vec![]),
                status: Some(BotStatus::Disabled),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(u.system_prompt, "Be brief.");
    assert!(u.is_public);
    assert_eq!(u.temperature, None);
    assert_eq!(u.fallback_provider_id, None);
    assert!(u.dataset_ids.is_empty());
    assert_eq!(u.status, BotStatus::Disabled);
    assert_eq!(u.slug, "helper");

    let other = bot(s, t.id, p.id, "other").await;
    let clash = s
        .update_bot(
            t.id,
            other.id,
            BotPatch {
                slug: Some("helper".into()),
                ..Default::default()
            },
        )
        .await;
    assert!(
        matches!(clash, Err(StoreError::Conflict("bot"))),
        "{clash:?}"
    );

    let (rows, _) = collect_pages(1, |pg| s.list_bots(t.id, pg)).await;
    assert_eq!(
        rows.iter().map(|b| b.id).collect::<Vec<_>>(),
        vec![b.id, other.id]
    );
    s.delete_bot(t.id, other.id).await.unwrap();
    assert!(matches!(
        s.get_bot(t.id, other.id).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        s.delete_bot(t.id, other.id).await,
        Err(StoreError::NotFound(_))
    ));
}

/// A bot cannot point at another tenant's provider or dataset.
pub async fn bots_reject_foreign_references(s: &dyn Store) {
    let a = tenant(s, "a").await;
    let b = tenant(s, "b").await;
    let pa = provider(s, a.id).await;
    let pb = provider(s, b.id).await;
    let db = dataset(s, b.id, pb.id).await;
    let r = s.create_bot(a.id, new_bot(pb.id, "x")).await;
    assert!(matches!(r, Err(StoreError::NotFound(_))), "{r:?}");
    let mut nb = new_bot(pa.id, "y");
    nb.fallback_provider_id = Some(pb.id);
    assert!(matches!(
        s.create_bot(a.id, nb).await,
        Err(StoreError::NotFound(_))
    ));
    let mut nb = new_bot(pa.id, "z");
    nb.dataset_ids = vec![db.id];
    assert!(matches!(
        s.create_bot(a.id, nb).await,
        Err(StoreError::NotFound("dataset"))
    ));
    let ok = bot(s, a.id, pa.id, "ok").await;
    let r = s
        .update_bot(
            a.id,
            ok.id,
            BotPatch {
                provider_id: Some(pb.id),
                ..Default::default()
            },
        )
        .await;
    assert!(matches!(r, Err(StoreError::NotFound(_))));
    let r = s
        .update_bot(
            a.id,
            ok.id,
            BotPatch {
                dataset_ids: Some(vec![db.id]),
                ..Default::default()
            },
        )
        .await;
    assert!(matches!(r, Err(StoreError::NotFound(_))));
    assert_eq!(
        s.get_bot(a.id, ok.id).await.unwrap().provider_id,
        pa.id,
        "nothing changed"
    );
    let r = s
        .create_dataset(
            a.id,
            NewDataset {
                name: "x".into(),
                provider_id: pb.id,
                embedding_model: "m".into(),
                embedding_dim: 4,
            },
        )
        .await;
    assert!(matches!(r, Err(StoreError::NotFound(_))));
}

/// Public bots are found by id, by slug or by `tenant-slug/bot-slug`;
/// private ones are not; a public slug has one owner across tenants
/// (`Conflict` for a second public bot with it, created or updated), and
/// is free again once its owner unpublishes it.
pub async fn public_bot_lookup(s: &dyn Store) {
    let a = tenant(s, "pa").await;
    let b = tenant(s, "pb").await;
    let pa = provider(s, a.id).await;
    let pb = provider(s, b.id).await;
    let slug = unique("pub");
    let mut nb = new_bot(pa.id, &slug);
    nb.is_public = true;
    let first = s.create_bot(a.id, nb).await.unwrap();
    let private = bot(s, a.id, pa.id, &unique("private")).await;
    let mut nb = new_bot(pb.id, &slug);
    nb.is_public = true;
    assert!(
        matches!(s.create_bot(b.id, nb).await, Err(StoreError::Conflict(_))),
        "a second tenant cannot publish a taken slug"
    );
    // Privately, the slug is B's to use; publishing it is refused.
    let second = s.create_bot(b.id, new_bot(pb.id, &slug)).await.unwrap();
    let publish = BotPatch {
        is_public: Some(true),
        ..Default::default()
    };
    assert!(matches!(
        s.update_bot(b.id, second.id, publish.clone()).await,
        Err(StoreError::Conflict(_))
    ));
    let mut renamed = new_bot(pb.id, &unique("other"));
    renamed.is_public = true;
    let renamed = s.create_bot(b.id, renamed).await.unwrap();
    assert!(matches!(
        s.update_bot(
            b.id,
            renamed.id,
            BotPatch {
                slug: Some(slug.clone()),
                ..Default::default()
            }
        )
        .await,
        Err(StoreError::Conflict(_))
    ));

    assert_eq!(
        s.find_public_bot(&first.id.to_string()).await.unwrap().id,
        first.id
    );
    assert_eq!(s.find_public_bot(&slug).await.unwrap().id, first.id);
    assert_eq!(
        s.find_public_bot(&format!("{}/{slug}", a.slug))
            .await
            .unwrap()
            .id,
        first.id
    );
    assert!(matches!(
        s.find_public_bot(&format!("{}/{slug}", b.slug)).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        s.find_public_bot(&second.id.to_string()).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        s.find_public_bot(&private.id.to_string()).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        s.find_public_bot(&private.slug).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        s.find_public_bot("no-such-bot").await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        s.find_public_bot("no-such-tenant/bot").await,
        Err(StoreError::NotFound(_))
    ));

    // A gives the slug up: B may publish it.
    s.update_bot(
        a.id,
        first.id,
        BotPatch {
            is_public: Some(false),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    s.update_bot(b.id, second.id, publish).await.unwrap();
    assert_eq!(s.find_public_bot(&slug).await.unwrap().id, second.id);
}

/// API keys: create, find by prefix and by secret, list, touch, revoke.
pub async fn api_keys_lifecycle(s: &dyn Store) {
    let t = tenant(s, "keys").await;
    let p = provider(s, t.id).await;
    let b = bot(s, t.id, p.id, "kb").await;
    let (g, mut nk) = new_key("ci");
    nk.bot_ids = vec![b.id];
    nk.expires_at = Some(now() + Duration::days(30));
    let k = s.create_api_key(t.id, nk.clone()).await.unwrap();
    assert_eq!(k.prefix, g.prefix);
    assert_eq!(k.bot_ids, vec![b.id]);
    assert_eq!(k.permissions, vec![Permission::Chat, Permission::Read]);
    assert!(k.revoked_at.is_none() && k.last_used_at.is_none());

    assert_eq!(
        s.find_api_key_by_prefix(&g.prefix).await.unwrap(),
        Some(k.clone())
    );
    assert_eq!(
        s.find_api_key_by_prefix("cc_0000000000000000")
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        s.find_api_key_by_secret(&g.secret).await.unwrap(),
        Some(k.clone())
    );
    // Right prefix, wrong secret.
    let forged = format!("{}_{}", g.prefix, "A".repeat(43));
    assert_eq!(
        s.find_api_key_by_secret(&SecretString::from(forged))
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        s.find_api_key_by_secret(&SecretString::from("garbage".to_string()))
            .await
            .unwrap(),
        None
    );

    // The same prefix twice is a conflict.
    let dup = s.create_api_key(t.id, nk).await;
    assert!(
        matches!(dup, Err(StoreError::Conflict("api key"))),
        "{dup:?}"
    );

    let at = now();
    s.touch_api_key(t.id, k.id, at).await.unwrap();
    assert_eq!(
        s.get_api_key(t.id, k.id).await.unwrap().last_used_at,
        Some(at)
    );

    let (_, nk2) = new_key("second");
    let k2 = s.create_api_key(t.id, nk2).await.unwrap();
    let (rows, _) = collect_pages(1, |pg| s.list_api_keys(t.id, pg)).await;
    assert_eq!(
        rows.iter().map(|k| k.id).collect::<Vec<_>>(),
        vec![k.id, k2.id]
    );

    let r = s.revoke_api_key(t.id, k.id).await.unwrap();
    let revoked_at = r.revoked_at.expect("revoked");
    assert!(!r.is_usable_at(now()));
    let again = s.revoke_api_key(t.id, k.id).await.unwrap();
    assert_eq!(
        again.revoked_at,
        Some(revoked_at),
        "revocation is idempotent"
    );
    let found = s
        .find_api_key_by_secret(&g.secret)
        .await
        .unwrap()
        .expect("still found");
    assert!(found.revoked_at.is_some(), "callers see it is revoked");
    assert!(matches!(
        s.revoke_api_key(t.id, ApiKeyId::new()).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        s.touch_api_key(t.id, ApiKeyId::new(), at).await,
        Err(StoreError::NotFound(_))
    ));
}

/// Conversations: create, get, list by bot and end user, newest first.
pub async fn conversations_and_filters(s: &dyn Store) {
    let t = tenant(s, "conv").await;
    let p = provider(s, t.id).await;
    let b1 = bot(s, t.id, p.id, "one").await;
    let b2 = bot(s, t.id, p.id, "two").await;
    let mut mine = Vec::new();
    for i in 0..5 {
        mine.push(conversation(s, t.id, b1.id, Some("alice")).await.id);
        conversation(s, t.id, b1.id, Some(&format!("bob{i}"))).await;
    }
    conversation(s, t.id, b2.id, Some("alice")).await;
    let c = s.get_conversation(t.id, mine[0]).await.unwrap();
    assert_eq!(c.bot_id, b1.id);
    assert_eq!(c.end_user_id.as_deref(), Some("alice"));
    assert_eq!(c.channel, Channel::Api);

    let (rows, pages) = collect_pages(2, |pg| {
        s.list_conversations(
            t.id,
            ConversationFilter {
                bot_id: Some(b1.id),
                end_user_id: Some("alice".into()),
                ..Default::default()
            },
            pg,
        )
    })
    .await;
    let mut expect = mine.clone();
    expect.reverse();
    assert_eq!(
        rows.iter().map(|c| c.id).collect::<Vec<_>>(),
        expect,
        "newest first"
    );
    assert_eq!(pages, 3);
    let (all_b1, _) = collect_pages(3, |pg| {
        s.list_conversations(
            t.id,
            ConversationFilter {
                bot_id: Some(b1.id),
                ..Default::default()
            },
            pg,
        )
    })
    .await;
    assert_eq!(all_b1.len(), 10);
    let (all, _) = collect_pages(50, |pg| {
        s.list_conversations(t.id, ConversationFilter::default(), pg)
    })
    .await;
    assert_eq!(all.len(), 11);
    let future = s
        .list_conversations(
            t.id,
            ConversationFilter {
                since: Some(now() + Duration::hours(1)),
                ..Default::default()
            },
            PageRequest::first(10),
        )
        .await
        .unwrap();
    assert!(future.data.is_empty());
    let past = s
        .list_conversations(
            t.id,
            ConversationFilter {
                until: Some(now() - Duration::hours(1)),
                ..Default::default()
            },
            PageRequest::first(10),
        )
        .await
        .unwrap();
    assert!(past.data.is_empty());
    let r = s
        .create_conversation(
            t.id,
            NewConversation {
                bot_id: BotId::new(),
                end_user_id: None,
                title: None,
                channel: Channel::Public,
            },
        )
        .await;
    assert!(matches!(r, Err(StoreError::NotFound(_))));
}

/// Messages: append, recent history, pagination, finishing a stream.
pub async fn messages_history_and_finish(s: &dyn Store) {
    let t = tenant(s, "msg").await;
    let p = provider(s, t.id).await;
    let b = bot(s, t.id, p.id, "m").await;
    let c = conversation(s, t.id, b.id, None).await;
    let mut ids = Vec::new();
    for i in 0..7 {
        let m = s
            .append_message(t.id, user_msg(c.id, &format!("m{i}")))
            .await
            .unwrap();
        assert_eq!(m.status, MessageStatus::Complete);
        assert_eq!(m.usage, None);
        ids.push(m.id);
    }
    let conv = s.get_conversation(t.id, c.id).await.unwrap();
    assert!(
        conv.updated_at >= c.updated_at,
        "appending bumps the conversation"
    );

    let recent = s.recent_messages(t.id, c.id, 3).await.unwrap();
    assert_eq!(
        recent
            .iter()
            .map(|m| m.content.as_str())
            .collect::<Vec<_>>(),
        ["m4", "m5", "m6"],
        "oldest first"
    );
    assert_eq!(s.recent_messages(t.id, c.id, 100).await.unwrap().len(), 7);
    let (rows, pages) = collect_pages(3, |pg| s.list_messages(t.id, c.id, pg)).await;
    assert_eq!(rows.iter().map(|m| m.id).collect::<Vec<_>>(), ids);
    assert_eq!(pages, 3);

    let pending = s
        .append_message(
            t.id,
            NewMessage {
                conversation_id: c.id,
                role: Role::Assistant,
                content: String::new(),
                status: MessageStatus::Pending,
                api_key_id: None,
                provider: Some("mock".into()),
                model: Some("echo".into()),
                tool_call_id: None,
            },
        )
        .await
        .unwrap();
    let chunk = ChunkId::new();
    let done = s
        .finish_message(
            t.id,
            pending.id,
            MessageCompletion {
                content: "partial answer".into(),
                status: Some(MessageStatus::Cancelled),
                usage: Some(TokenUsage {
                    prompt_tokens: 12,
                    completion_tokens: 3,
                    total_tokens: 15,
                    estimated: true,
                }),
                response_time_ms: Some(250),
                time_to_first_token_ms: Some(40),
                provider: None,
                model: Some("echo-2".into()),
                finish_reason: Some("client_disconnect".into()),
                error: None,
                source_chunk_ids: vec![chunk],
                tool_calls: Vec::new(),
                cost: Some(crate::pricing::Cost {
                    micros: 1_234_567,
                    cached_tokens: 4,
                    priced: true,
                }),
            },
        )
        .await
        .unwrap();
    assert_eq!(
        done.cost,
        Some(crate::pricing::Cost {
            micros: 1_234_567,
            cached_tokens: 4,
            priced: true,
        }),
        "the cost is stored with the outcome"
    );
    assert_eq!(done.content, "partial answer");
    assert_eq!(done.status, MessageStatus::Cancelled);
    assert_eq!(
        done.usage,
        Some(TokenUsage {
            prompt_tokens: 12,
            completion_tokens: 3,
            total_tokens: 15,
            estimated: true
        })
    );
    assert_eq!(
        done.provider.as_deref(),
        Some("mock"),
        "kept when not given"
    );
    assert_eq!(done.model.as_deref(), Some("echo-2"));
    assert_eq!(done.response_time_ms, Some(250));
    assert_eq!(done.time_to_first_token_ms, Some(40));
    assert_eq!(done.source_chunk_ids, vec![chunk]);
    assert_eq!(s.get_message(t.id, pending.id).await.unwrap(), done);
    let r = s
        .finish_message(t.id, MessageId::new(), MessageCompletion::default())
        .await;
    assert!(matches!(r, Err(StoreError::NotFound(_))));
    let r = s
        .append_message(t.id, user_msg(ConversationId::new(), "x"))
        .await;
    assert!(matches!(r, Err(StoreError::NotFound(_))));
}

/// A turn starts a conversation (or continues one of the tenant's) with the
/// user's message and a pending assistant message.
pub async fn begin_turn_stores_the_turn(s: &dyn Store) {
    let t = tenant(s, "turn").await;
    let p = provider(s, t.id).await;
    let b = bot(s, t.id, p.id, "turn").await;
    let new_conv = NewConversation {
        bot_id: b.id,
        end_user_id: Some("u".into()),
        title: Some("hi".into()),
        channel: Channel::Public,
    };
    let turn = |conversation| NewTurn {
        conversation,
        user_content: "hello".into(),
        api_key_id: None,
        provider: Some("mock".into()),
        model: Some("echo".into()),
        tool_results: Vec::new(),
    };
    let (c, u, a) = s
        .begin_turn(t.id, turn(TurnConversation::New(new_conv.clone())))
        .await
        .unwrap();
    assert_eq!(
        (c.bot_id, c.channel, c.end_user_id.as_deref()),
        (b.id, Channel::Public, Some("u"))
    );
    assert_eq!(
        (u.role, u.status, u.content.as_str()),
        (Role::User, MessageStatus::Complete, "hello")
    );
    assert_eq!(
        (a.role, a.status, a.content.as_str()),
        (Role::Assistant, MessageStatus::Pending, "")
    );
    assert_eq!(a.provider.as_deref(), Some("mock"));
    let (c2, _, a2) = s
        .begin_turn(t.id, turn(TurnConversation::Existing(c.id)))
        .await
        .unwrap();
    assert_eq!(c2.id, c.id);
    assert!(c2.updated_at >= c.updated_at);
    let all = s
        .list_messages(t.id, c.id, PageRequest::first(10))
        .await
        .unwrap()
        .data;
    assert_eq!(all.iter().map(|m| m.id).collect::<Vec<_>>()[1], a.id);
    assert_eq!(all.len(), 4);
    assert_eq!(all[3].id, a2.id);
    // Another tenant's conversation or bot: nothing is written.
    let x = tenant(s, "turn-x").await;
    let r = s
        .begin_turn(x.id, turn(TurnConversation::Existing(c.id)))
        .await;
    assert!(
        matches!(r, Err(StoreError::NotFound(_))),
        "{:?}",
        r.map(|_| ())
    );
    let r = s
        .begin_turn(x.id, turn(TurnConversation::New(new_conv)))
        .await;
    assert!(matches!(r, Err(StoreError::NotFound(_))));
    assert_eq!(
        s.list_messages(t.id, c.id, PageRequest::first(10))
            .await
            .unwrap()
            .data
            .len(),
        4
    );
    assert!(
        s.list_conversations(x.id, ConversationFilter::default(), PageRequest::first(5))
            .await
            .unwrap()
            .data
            .is_empty()
    );
}

/// A turn with tools: the assistant's tool calls are kept with its
/// outcome, and the next turn's tool results (without a user message) are
/// stored as `tool` messages naming their calls, in order, before the
/// pending answer.
pub async fn a_turn_keeps_tool_calls_and_results(s: &dyn Store) {
    use crate::provider::ToolCall;
    let t = tenant(s, "tools").await;
    let p = provider(s, t.id).await;
    let b = bot(s, t.id, p.id, "tools").await;
    let turn = |conversation, user: &str, results: Vec<ToolResult>| NewTurn {
        conversation,
        user_content: user.into(),
        api_key_id: None,
        provider: Some("mock".into()),
        model: Some("any".into()),
        tool_results: results,
    };
    let (c, u, a) = s
        .begin_turn(
            t.id,
            turn(
                TurnConversation::New(NewConversation {
                    bot_id: b.id,
                    end_user_id: None,
                    title: None,
                    channel: Channel::Api,
                }),
                "weather and time?",
                Vec::new(),
            ),
        )
        .await
        .unwrap();
    assert_eq!((u.role, u.tool_call_id.as_deref()), (Role::User, None));
    let calls = vec![
        ToolCall {
            id: "call_1".into(),
            name: "get_weather".into(),
            arguments: r#"{"city":"Paris","units":"metric"}"#.into(),
        },
        ToolCall {
            id: "call_2".into(),
            name: "get_time".into(),
            arguments: "{}".into(),
        },
    ];
    let done = s
        .finish_message(
            t.id,
            a.id,
            MessageCompletion {
                status: Some(MessageStatus::Complete),
                finish_reason: Some("tool_calls".into()),
                tool_calls: calls.clone(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(done.tool_calls, calls);
    let results = vec![
        ToolResult {
            tool_call_id: "call_1".into(),
            content: "18C".into(),
        },
        ToolResult {
            tool_call_id: "call_2".into(),
            content: "14:05".into(),
        },
    ];
    let (c2, last, a2) = s
        .begin_turn(t.id, turn(TurnConversation::Existing(c.id), "", results))
        .await
        .unwrap();
    assert_eq!(c2.id, c.id);
    assert_eq!(
        (
            last.role,
            last.tool_call_id.as_deref(),
            last.content.as_str()
        ),
        (Role::Tool, Some("call_2"), "14:05")
    );
    assert!(a2.tool_calls.is_empty());
    let all = s
        .list_messages(t.id, c.id, PageRequest::first(10))
        .await
        .unwrap()
        .data;
    let seen: Vec<(Role, &str, Option<&str>)> = all
        .iter()
        .map(|m| (m.role, m.content.as_str(), m.tool_call_id.as_deref()))
        .collect();
    assert_eq!(
        seen,
        [
            (Role::User, "weather and time?", None),
            (Role::Assistant, "", None),
            (Role::Tool, "18C", Some("call_1")),
            (Role::Tool, "14:05", Some("call_2")),
            (Role::Assistant, "", None),
        ]
    );
    assert_eq!(all[1].tool_calls, calls);
    assert_eq!(all[4].id, a2.id);
    let recent = s.recent_messages(t.id, c.id, 10).await.unwrap();
    assert_eq!(recent.len(), 5);
    assert_eq!(recent[1].tool_calls, calls);
    // A turn with tool results and a user message stores both, results first.
    let (_, last, _) = s
        .begin_turn(
            t.id,
            turn(
                TurnConversation::Existing(c.id),
                "and tomorrow?",
                vec![ToolResult {
                    tool_call_id: "call_3".into(),
                    content: "rain".into(),
                }],
            ),
        )
        .await
        .unwrap();
    assert_eq!(
        (last.role, last.content.as_str()),
        (Role::User, "and tomorrow?")
    );
    let all = s
        .list_messages(t.id, c.id, PageRequest::first(10))
        .await
        .unwrap()
        .data;
    assert_eq!(all.len(), 8);
    assert_eq!((all[5].role, all[5].content.as_str()), (Role::Tool, "rain"));
    assert_eq!(all[6].role, Role::User);
}

/// Deleting a conversation, a bot or a document takes what hangs off it.
pub async fn deleting_cascades(s: &dyn Store) {
    let t = tenant(s, "casc").await;
    let p = provider(s, t.id).await;
    let b = bot(s, t.id, p.id, "c").await;
    let keep = bot(s, t.id, p.id, "keep").await;
    let c1 = conversation(s, t.id, b.id, None).await;
    let c2 = conversation(s, t.id, b.id, None).await;
    let c3 = conversation(s, t.id, keep.id, None).await;
    let m1 = s
        .append_message(t.id, user_msg(c1.id, "hello"))
        .await
        .unwrap();
    let m2 = s
        .append_message(t.id, user_msg(c2.id, "hello"))
        .await
        .unwrap();
    let m3 = s
        .append_message(t.id, user_msg(c3.id, "hello"))
        .await
        .unwrap();
    let sc = s
        .create_scope(
            t.id,
            NewScope {
                bot_id: b.id,
                kind: "max_input_length".into(),
                config: json!(100),
            },
        )
        .await
        .unwrap();

    s.delete_conversation(t.id, c1.id).await.unwrap();
    assert!(matches!(
        s.get_conversation(t.id, c1.id).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(
        matches!(
            s.get_message(t.id, m1.id).await,
            Err(StoreError::NotFound(_))
        ),
        "messages go with it"
    );
    assert!(matches!(
        s.delete_conversation(t.id, c1.id).await,
        Err(StoreError::NotFound(_))
    ));

    s.delete_bot(t.id, b.id).await.unwrap();
    assert!(matches!(
        s.get_conversation(t.id, c2.id).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        s.get_message(t.id, m2.id).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        s.get_scope(t.id, sc.id).await,
        Err(StoreError::NotFound(_))
    ));
    // The other bot's data is untouched.
    s.get_conversation(t.id, c3.id).await.unwrap();
    s.get_message(t.id, m3.id).await.unwrap();
}

/// [`RagStore::replace_document`]: the new document takes the old one's place
/// with its chunks gone, or (on failure) nothing changed at all; it never
/// reaches another tenant's documents.
pub async fn replacing_a_document_is_all_or_nothing(s: &dyn Store) {
    let t = tenant(s, "repl").await;
    let p = provider(s, t.id).await;
    let ds = dataset(s, t.id, p.id).await;
    let old = s
        .create_document(t.id, new_doc(ds.id, "Handbook"))
        .await
        .unwrap();
    let chunk = |i: i32| NewChunk {
        ordinal: i,
        text: format!("old chunk {i}"),
        token_count: 3,
        embedding: Some(vec![1.0, 0.0, 0.0, i as f32]),
    };
    s.replace_chunks(t.id, old.id, (0..3).map(chunk).collect())
        .await
        .unwrap();
    // The new row cannot be written (its dataset does not exist): the old
    // document and its chunks stay.
    let r = s
        .replace_document(t.id, new_doc(DatasetId::new(), "Handbook"), &[old.id])
        .await;
    assert!(matches!(r, Err(StoreError::NotFound(_))), "{r:?}");
    assert_eq!(s.get_document(t.id, old.id).await.unwrap().id, old.id);
    assert_eq!(s.count_chunks(t.id, old.id).await.unwrap(), 3);
    // Another tenant cannot replace it away.
    let other = tenant(s, "repl-other").await;
    let op = provider(s, other.id).await;
    let ods = dataset(s, other.id, op.id).await;
    s.replace_document(other.id, new_doc(ods.id, "Handbook"), &[old.id])
        .await
        .unwrap();
    assert_eq!(s.get_document(t.id, old.id).await.unwrap().id, old.id);
    // Success: the new one, alone.
    let mut upd = new_doc(ds.id, "Handbook");
    upd.content = "version two".into();
    let new = s.replace_document(t.id, upd, &[old.id]).await.unwrap();
    assert!(matches!(
        s.get_document(t.id, old.id).await,
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(s.count_chunks(t.id, old.id).await.unwrap(), 0);
    let (docs, _) = collect_pages(10, |pg| s.list_documents(t.id, ds.id, pg)).await;
    assert_eq!(docs.iter().map(|d| d.id).collect::<Vec<_>>(), vec![new.id]);
    assert_eq!(docs[0].content, "version two");
    assert_eq!(docs[0].status, DocumentStatus::Pending);
}

/// Datasets, documents and chunks: batch insert, embeddings round trip,
/// status changes, resume queries, cascades, unlinking from bots.
pub async fn datasets_documents_chunks(s: &dyn Store) {
    let t = tenant(s, "rag").await;
    let p = provider(s, t.id).await;
    let ds = dataset(s, t.id, p.id).await;
    assert_eq!(s.get_dataset(t.id, ds.id).await.unwrap(), ds);
    let d1 = s
        .create_document(t.id, new_doc(ds.id, "one"))
        .await
        .unwrap();
    assert_eq!(d1.status, DocumentStatus::Pending);
    assert_eq!(d1.metadata, json!({"lang": "en"}));
    let d2 = s
        .create_document(t.id, new_doc(ds.id, "two"))
        .await
        .unwrap();
    assert_eq!(s.get_document(t.id, d1.id).await.unwrap(), d1);
    let (docs, _) = collect_pages(1, |pg| s.list_documents(t.id, ds.id, pg)).await;
    assert_eq!(
        docs.iter().map(|d| d.id).collect::<Vec<_>>(),
        vec![d1.id, d2.id]
    );

    s.set_document_status(t.id, d1.id, DocumentStatus::Indexing, None)
        .await
        .unwrap();
    let indexing = s
        .documents_in_status(DocumentStatus::Indexing, 10)
        .await
        .unwrap();
    assert!(indexing.iter().any(|d| d.id == d1.id));
    s.set_document_status(
        t.id,
        d2.id,
        DocumentStatus::Failed,
        Some("embedding failed".into()),
    )
    .await
    .unwrap();
    let f = s.get_document(t.id, d2.id).await.unwrap();
    assert_eq!(
        (f.status, f.error.as_deref()),
        (DocumentStatus::Failed, Some("embedding failed"))
    );

    // 1500 chunks: more than one insert batch.
    let chunks: Vec<NewChunk> = (0..1500)
        .map(|i| NewChunk {
            ordinal: i,
            text: format!("chunk {i} ünïcødé"),
            token_count: 3,
            embedding: Some(vec![i as f32, -0.5, f32::MIN_POSITIVE, 1e-7]),
        })
        .collect();
    s.replace_chunks(t.id, d1.id, chunks).await.unwrap();
    assert_eq!(
        s.get_document(t.id, d1.id).await.unwrap().status,
        DocumentStatus::Ready
    );
    assert_eq!(s.count_chunks(t.id, d1.id).await.unwrap(), 1500);
    let got = s.list_chunks(t.id, d1.id).await.unwrap();
    assert_eq!(got.len(), 1500);
    assert_eq!(got[7].ordinal, 7);
    assert_eq!(got[7].text, "chunk 7 ünïcødé");
    assert_eq!(got[7].dataset_id, ds.id);
    assert_eq!(
        got[7].embedding,
        Some(vec![7.0, -0.5, f32::MIN_POSITIVE, 1e-7]),
        "embeddings are exact"
    );
    // Replacing drops the old chunks.
    s.replace_chunks(
        t.id,
        d1.id,
        vec![NewChunk {
            ordinal: 0,
            text: "only".into(),
            token_count: 1,
            embedding: None,
        }],
    )
    .await
    .unwrap();
    let got = s.list_chunks(t.id, d1.id).await.unwrap();
    assert_eq!((got.len(), got[0].embedding.clone()), (1, None));

    s.delete_document(t.id, d1.id).await.unwrap();
    assert!(matches!(
        s.get_document(t.id, d1.id).await,
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(
        s.count_chunks(t.id, d1.id).await.unwrap(),
        0,
        "chunks go with the document"
    );
    assert!(matches!(
        s.delete_document(t.id, d1.id).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        s.replace_chunks(t.id, d1.id, vec![]).await,
        Err(StoreError::NotFound(_))
    ));

    // A dataset linked to a bot: deleting it unlinks it and drops its documents.
    let mut nb = new_bot(p.id, "rag-bot");
    nb.dataset_ids = vec![ds.id];
    let b = s.create_bot(t.id, nb).await.unwrap();
    let ds2 = dataset(s, t.id, p.id).await;
    let (all, _) = collect_pages(1, |pg| s.list_datasets(t.id, pg)).await;
    assert_eq!(
        all.iter().map(|d| d.id).collect::<Vec<_>>(),
        vec![ds.id, ds2.id]
    );
    s.delete_dataset(t.id, ds.id).await.unwrap();
    assert!(matches!(
        s.get_document(t.id, d2.id).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(s.get_bot(t.id, b.id).await.unwrap().dataset_ids.is_empty());
    assert!(matches!(
        s.delete_dataset(t.id, ds.id).await,
        Err(StoreError::NotFound(_))
    ));
    let r = s.create_document(t.id, new_doc(ds.id, "late")).await;
    assert!(matches!(r, Err(StoreError::NotFound(_))));
}

/// Chunks of `doc`: `(text, embedding)` at ordinals 0, 1, ...
async fn put_chunks(s: &dyn Store, t: TenantId, doc: DocumentId, chunks: &[(&str, [f32; 4])]) {
    s.replace_chunks(
        t,
        doc,
        chunks
            .iter()
            .enumerate()
            .map(|(i, (text, e))| NewChunk {
                ordinal: i as i32,
                text: (*text).into(),
                token_count: 5,
                embedding: Some(e.to_vec()),
            })
            .collect(),
    )
    .await
    .expect("replace chunks");
}

async fn chunk_ids(s: &dyn Store, t: TenantId, doc: DocumentId) -> Vec<ChunkId> {
    s.list_chunks(t, doc)
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.id)
        .collect()
}

/// Vector and full-text search over chunks: ranking, dimensions, document
/// restrictions, datasets, tenants, and changes seen at once.
pub async fn chunk_search_by_vector_and_text(s: &dyn Store) {
    let t = tenant(s, "search").await;
    let o = tenant(s, "search-other").await;
    let p = provider(s, t.id).await;
    let op = provider(s, o.id).await;
    let ds = dataset(s, t.id, p.id).await;
    let ds2 = dataset(s, t.id, p.id).await;
    let ods = dataset(s, o.id, op.id).await;
    let a = s
        .create_document(t.id, new_doc(ds.id, "Refunds"))
        .await
        .unwrap();
    let b = s
        .create_document(t.id, new_doc(ds.id, "Cards"))
        .await
        .unwrap();
    let c = s
        .create_document(t.id, new_doc(ds2.id, "Other dataset"))
        .await
        .unwrap();
    let od = s
        .create_document(o.id, new_doc(ods.id, "Other tenant"))
        .await
        .unwrap();
    put_chunks(
        s,
        t.id,
        a.id,
        &[
            ("The refund policy lasts thirty days.", [1.0, 0.0, 0.0, 0.0]),
            ("Office parking is in the basement.", [0.0, 1.0, 0.0, 0.0]),
        ],
    )
    .await;
    put_chunks(
        s,
        t.id,
        b.id,
        &[
            ("Refunds are paid back to the card.", [0.9, 0.1, 0.0, 0.0]),
            ("Penguins swim in cold water.", [0.0, 0.0, 1.0, 0.0]),
        ],
    )
    .await;
    put_chunks(
        s,
        t.id,
        c.id,
        &[("A refund in another dataset.", [1.0, 0.0, 0.0, 0.0])],
    )
    .await;
    put_chunks(
        s,
        o.id,
        od.id,
        &[("A refund of another tenant.", [1.0, 0.0, 0.0, 0.0])],
    )
    .await;
    let a_ids = chunk_ids(s, t.id, a.id).await;
    let b_ids = chunk_ids(s, t.id, b.id).await;
    let c_ids = chunk_ids(s, t.id, c.id).await;
    let o_ids = chunk_ids(s, o.id, od.id).await;
    let (one, both, theirs) = ([ds.id], [ds.id, ds2.id], [ods.id]);
    fn only(datasets: &[DatasetId]) -> ChunkSearch<'_> {
        ChunkSearch {
            datasets,
            documents: None,
            limit: 10,
        }
    }
    let ids = |v: Vec<ScoredChunk>| v.into_iter().map(|h| h.chunk_id).collect::<Vec<_>>();

    // Vector: by cosine similarity, best first, with the chunk's document.
    let v = s
        .search_chunks_by_vector(
            t.id,
            ChunkSearch {
                limit: 2,
                ..only(&one)
            },
            &[2.0, 0.0, 0.0, 0.0],
        )
        .await
        .unwrap();
    assert_eq!(ids(v.clone()), vec![a_ids[0], b_ids[0]]);
    assert_eq!((v[0].document_id, v[1].document_id), (a.id, b.id));
    assert!((v[0].score - 1.0).abs() < 1e-4, "{v:?}");
    assert!((v[1].score - 0.9 / (0.82f32).sqrt()).abs() < 1e-3, "{v:?}");
    let all = s
        .search_chunks_by_vector(t.id, only(&one), &[0.0, 0.0, 1.0, 0.0])
        .await
        .unwrap();
    assert_eq!(all.len(), 4, "every chunk of the dataset ranks");
    assert_eq!(all[0].chunk_id, b_ids[1]);
    // Another dimension, a zero vector, or no documents: nothing.
    for q in [&[1.0, 0.0, 0.0][..], &[0.0; 4][..]] {
        assert!(
            s.search_chunks_by_vector(t.id, only(&one), q)
                .await
                .unwrap()
                .is_empty()
        );
    }
    let none: &[DocumentId] = &[];
    assert!(
        s.search_chunks_by_vector(
            t.id,
            ChunkSearch {
                documents: Some(none),
                ..only(&one)
            },
            &[1.0, 0.0, 0.0, 0.0]
        )
        .await
        .unwrap()
        .is_empty()
    );
    // Restricted to documents; several datasets.
    let v = s
        .search_chunks_by_vector(
            t.id,
            ChunkSearch {
                documents: Some(&[b.id]),
                ..only(&one)
            },
            &[1.0, 0.0, 0.0, 0.0],
        )
        .await
        .unwrap();
    assert_eq!(ids(v), vec![b_ids[0], b_ids[1]]);
    let v = s
        .search_chunks_by_vector(
            t.id,
            ChunkSearch {
                limit: 3,
                ..only(&both)
            },
            &[1.0, 0.0, 0.0, 0.0],
        )
        .await
        .unwrap();
    let v = ids(v);
    assert!(
        v.contains(&a_ids[0]) && v.contains(&c_ids[0]) && v.contains(&b_ids[0]),
        "{v:?}"
    );

    // Text: any word of the query, stemmed ("refunds" finds "refund").
    let x = ids(s
        .search_chunks_by_text(t.id, only(&one), "refunds")
        .await
        .unwrap());
    assert_eq!(x.len(), 2, "{x:?}");
    assert!(x.contains(&a_ids[0]) && x.contains(&b_ids[0]));
    let x = ids(s
        .search_chunks_by_text(t.id, only(&one), "penguins basement")
        .await
        .unwrap());
    assert_eq!(x.len(), 2);
    assert!(x.contains(&a_ids[1]) && x.contains(&b_ids[1]));
    // A chunk matching more of the query's words ranks first.
    let x = ids(s
        .search_chunks_by_text(t.id, only(&one), "refund card")
        .await
        .unwrap());
    assert_eq!(x[0], b_ids[0]);
    let x = ids(s
        .search_chunks_by_text(
            t.id,
            ChunkSearch {
                documents: Some(&[a.id]),
                ..only(&one)
            },
            "refund",
        )
        .await
        .unwrap());
    assert_eq!(x, vec![a_ids[0]]);
    let x = ids(s
        .search_chunks_by_text(t.id, only(&both), "refund")
        .await
        .unwrap());
    assert_eq!(x.len(), 3);
    // Query syntax is not interpreted: operators and quotes are just noise.
    for q in [
        "refund\" OR *",
        "NEAR(refund card)",
        "refund:* & !card",
        "  ",
        "\"",
        "-",
    ] {
        let r = s.search_chunks_by_text(t.id, only(&one), q).await;
        assert!(r.is_ok(), "{q:?}: {r:?}");
    }
    assert!(
        s.search_chunks_by_text(t.id, only(&one), " ?! ")
            .await
            .unwrap()
            .is_empty()
    );

    // Hits: in the order asked, with titles; unknown and foreign ids left out.
    let h = s
        .chunk_hits(t.id, &[b_ids[0], ChunkId::new(), a_ids[0], o_ids[0]])
        .await
        .unwrap();
    assert_eq!(
        h.iter().map(|h| h.chunk_id).collect::<Vec<_>>(),
        vec![b_ids[0], a_ids[0]]
    );
    assert_eq!((h[0].title.as_str(), h[0].document_id), ("Cards", b.id));
    assert_eq!(h[1].text, "The refund policy lasts thirty days.");

    // Another tenant finds nothing of this tenant's, even with its ids.
    assert!(
        s.search_chunks_by_vector(o.id, only(&one), &[1.0, 0.0, 0.0, 0.0])
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        s.search_chunks_by_text(o.id, only(&one), "refund")
            .await
            .unwrap()
            .is_empty()
    );
    assert!(s.chunk_hits(o.id, &a_ids).await.unwrap().is_empty());
    assert_eq!(
        ids(s
            .search_chunks_by_text(o.id, only(&theirs), "refund")
            .await
            .unwrap()),
        o_ids
    );

    // Changes show at once: a deleted document no longer answers, replaced
    // chunks answer with their new text and vectors.
    s.delete_document(t.id, a.id).await.unwrap();
    let v = ids(s
        .search_chunks_by_vector(t.id, only(&one), &[1.0, 0.0, 0.0, 0.0])
        .await
        .unwrap());
    assert_eq!(v, vec![b_ids[0], b_ids[1]]);
    assert_eq!(
        ids(s
            .search_chunks_by_text(t.id, only(&one), "refund")
            .await
            .unwrap()),
        vec![b_ids[0]]
    );
    assert!(s.chunk_hits(t.id, &a_ids).await.unwrap().is_empty());
    put_chunks(
        s,
        t.id,
        b.id,
        &[("Walruses nap on the ice.", [0.0, 0.0, 0.0, 1.0])],
    )
    .await;
    let b_new = chunk_ids(s, t.id, b.id).await;
    assert!(
        s.search_chunks_by_text(t.id, only(&one), "penguins refund")
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        ids(s
            .search_chunks_by_text(t.id, only(&one), "walruses")
            .await
            .unwrap()),
        b_new
    );
    let v = s
        .search_chunks_by_vector(t.id, only(&one), &[0.0, 0.0, 0.0, 1.0])
        .await
        .unwrap();
    assert_eq!(ids(v.clone()), b_new);
    assert!((v[0].score - 1.0).abs() < 1e-4);
    s.delete_dataset(t.id, ds.id).await.unwrap();
    assert!(
        s.search_chunks_by_vector(t.id, only(&one), &[0.0, 0.0, 0.0, 1.0])
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        s.search_chunks_by_text(t.id, only(&one), "walruses")
            .await
            .unwrap()
            .is_empty()
    );
}

/// Scopes: create, get, list per bot, delete.
pub async fn scopes_crud(s: &dyn Store) {
    let t = tenant(s, "scopes").await;
    let p = provider(s, t.id).await;
    let b = bot(s, t.id, p.id, "s").await;
    let b2 = bot(s, t.id, p.id, "s2").await;
    let a = s
        .create_scope(
            t.id,
            NewScope {
                bot_id: b.id,
                kind: "allowed_origins".into(),
                config: json!(["https://a.example"]),
            },
        )
        .await
        .unwrap();
    let c = s
        .create_scope(
            t.id,
            NewScope {
                bot_id: b.id,
                kind: "blocked_terms".into(),
                config: json!(["secret"]),
            },
        )
        .await
        .unwrap();
    s.create_scope(
        t.id,
        NewScope {
            bot_id: b2.id,
            kind: "max_input_length".into(),
            config: json!(10),
        },
    )
    .await
    .unwrap();
    assert_eq!(s.get_scope(t.id, a.id).await.unwrap(), a);
    assert_eq!(
        s.list_scopes(t.id, b.id).await.unwrap(),
        vec![a.clone(), c.clone()]
    );
    s.delete_scope(t.id, a.id).await.unwrap();
    assert_eq!(s.list_scopes(t.id, b.id).await.unwrap(), vec![c]);
    assert!(matches!(
        s.delete_scope(t.id, a.id).await,
        Err(StoreError::NotFound(_))
    ));
    let r = s
        .create_scope(
            t.id,
            NewScope {
                bot_id: BotId::new(),
                kind: "x".into(),
                config: json!({}),
            },
        )
        .await;
    assert!(matches!(r, Err(StoreError::NotFound(_))));
}

/// Audit: single and batch append, filters, newest first, pagination.
pub async fn audit_append_list_filter(s: &dyn Store) {
    // The operator creates the tenant: its first audit record.
    let created = Change::CreateTenant(new_tenant("audit"), None);
    let by_operator = created.audit_by(Actor {
        kind: ActorKind::Operator,
        id: None,
    });
    let t = s
        .apply(created, by_operator)
        .await
        .unwrap()
        .into_tenant()
        .unwrap();
    let key_actor = Actor {
        kind: ActorKind::ApiKey,
        id: Some("k1".into()),
    };
    let batch: Vec<AuditRecord> = (0..25)
        .map(|i| {
            let mut r = AuditRecord::new(
                Some(t.id),
                key_actor.clone(),
                if i % 5 == 0 {
                    "auth.failed"
                } else {
                    "chat.completed"
                },
            );
            r.request_id = Some(format!("req-{i}"));
            r.ip = Some("127.0.0.1".into());
            r.metadata = json!({"i": i});
            r
        })
        .collect();
    s.append_audit_batch(batch.clone()).await.unwrap();
    s.append_audit_batch(vec![]).await.unwrap();
    // A record without a tenant (an unknown key failed) is stored too, and
    // shows in no tenant's list.
    s.append_audit(AuditRecord::new(
        None,
        Actor {
            kind: ActorKind::PublicVisitor,
            id: None,
        },
        "auth.failed",
    ))
    .await
    .unwrap();

    let (all, pages) = collect_pages(10, |pg| s.list_audit(t.id, AuditFilter::default(), pg)).await;
    assert_eq!(all.len(), 26);
    assert_eq!(pages, 3);
    assert_eq!(all[0].id, batch[24].id, "newest first");
    assert_eq!(all[0], batch[24], "stored as given");
    let (failed, _) = collect_pages(10, |pg| {
        s.list_audit(
            t.id,
            AuditFilter {
                action: Some("auth.failed".into()),
                ..Default::default()
            },
            pg,
        )
    })
    .await;
    assert_eq!(failed.len(), 5);
    let (ops, _) = collect_pages(10, |pg| {
        s.list_audit(
            t.id,
            AuditFilter {
                actor_kind: Some(ActorKind::Operator),
                ..Default::default()
            },
            pg,
        )
    })
    .await;
    assert_eq!(ops.len(), 1);
    assert_eq!(
        ops[0].resource_id.as_deref(),
        Some(t.id.to_string().as_str())
    );
    let (by_id, _) = collect_pages(50, |pg| {
        s.list_audit(
            t.id,
            AuditFilter {
                actor_id: Some("k1".into()),
                ..Default::default()
            },
            pg,
        )
    })
    .await;
    assert_eq!(by_id.len(), 25);
    let none = s
        .list_audit(
            t.id,
            AuditFilter {
                since: Some(now() + Duration::hours(1)),
                ..Default::default()
            },
            PageRequest::first(5),
        )
        .await
        .unwrap();
    assert!(none.data.is_empty());
    let early = s
        .list_audit(
            t.id,
            AuditFilter {
                until: Some(now() - Duration::hours(1)),
                ..Default::default()
            },
            PageRequest::first(5),
        )
        .await
        .unwrap();
    assert!(early.data.is_empty());
}

/// Timestamps come back exactly as written (microseconds).
pub async fn timestamps_keep_microseconds(s: &dyn Store) {
    let t = tenant(s, "time").await;
    let (_, mut nk) = new_key("t");
    let exp = now() + Duration::microseconds(123_457);
    nk.expires_at = Some(exp);
    let k = s.create_api_key(t.id, nk).await.unwrap();
    assert_eq!(
        s.get_api_key(t.id, k.id).await.unwrap().expires_at,
        Some(exp)
    );
    assert_eq!(s.get_tenant(t.id).await.unwrap().created_at, t.created_at);
    let mut r = AuditRecord::new(
        Some(t.id),
        Actor {
            kind: ActorKind::System,
            id: None,
        },
        "x",
    );
    r.created_at = now();
    s.append_audit(r.clone()).await.unwrap();
    let got = s
        .list_audit(t.id, AuditFilter::default(), PageRequest::first(1))
        .await
        .unwrap();
    assert_eq!(got.data[0].created_at, r.created_at);
    // A since-filter at exactly the stored instant includes it.
    let incl = s
        .list_audit(
            t.id,
            AuditFilter {
                since: Some(r.created_at),
                ..Default::default()
            },
            PageRequest::first(5),
        )
        .await
        .unwrap();
    assert_eq!(incl.data.len(), 1);
}

/// Tenant isolation: for every tenant-owned operation, another tenant's id
/// sees nothing and changes nothing.
pub async fn tenant_isolation(s: &dyn Store) {
    let a = tenant(s, "owner").await;
    let x = tenant(s, "intruder").await;
    let px = provider(s, x.id).await; // the intruder's own, valid, provider
    let p = provider(s, a.id).await;
    let ds = dataset(s, a.id, p.id).await;
    let b = bot(s, a.id, p.id, "iso").await;
    let c = conversation(s, a.id, b.id, Some("u")).await;
    let m = s
        .append_message(a.id, user_msg(c.id, "private words"))
        .await
        .unwrap();
    let (g, nk) = new_key("iso");
    let k = s.create_api_key(a.id, nk).await.unwrap();
    let d = s
        .create_document(a.id, new_doc(ds.id, "secret doc"))
        .await
        .unwrap();
    s.replace_chunks(
        a.id,
        d.id,
        vec![NewChunk {
            ordinal: 0,
            text: "t".into(),
            token_count: 1,
            embedding: None,
        }],
    )
    .await
    .unwrap();
    let sc = s
        .create_scope(
            a.id,
            NewScope {
                bot_id: b.id,
                kind: "blocked_terms".into(),
                config: json!([]),
            },
        )
        .await
        .unwrap();
    s.append_audit(AuditRecord::new(
        Some(a.id),
        Actor {
            kind: ActorKind::System,
            id: None,
        },
        "x",
    ))
    .await
    .unwrap();
    // The owner's log as set up (the fixtures' writes are audited too).
    let a_log = s
        .list_audit(a.id, AuditFilter::default(), PageRequest::first(50))
        .await
        .unwrap()
        .data;
    assert!(a_log.iter().any(|r| r.action == "x"));

    let xi = x.id;
    macro_rules! not_found {
        ($e:expr) => {{
            let r = $e.await;
            assert!(
                matches!(r, Err(StoreError::NotFound(_))),
                "{} gave {:?}",
                stringify!($e),
                r.map(|_| ())
            );
        }};
    }
    // Reads.
    not_found!(s.get_provider_config(xi, p.id));
    not_found!(s.get_bot(xi, b.id));
    not_found!(s.get_bot_by_slug(xi, "iso"));
    not_found!(s.get_api_key(xi, k.id));
    not_found!(s.get_conversation(xi, c.id));
    not_found!(s.get_message(xi, m.id));
    not_found!(s.get_dataset(xi, ds.id));
    not_found!(s.get_document(xi, d.id));
    not_found!(s.get_scope(xi, sc.id));
    assert!(
        s.list_provider_configs(xi, PageRequest::first(50))
            .await
            .unwrap()
            .data
            .iter()
            .all(|c| c.tenant_id == xi)
    );
    assert!(
        s.list_bots(xi, PageRequest::first(50))
            .await
            .unwrap()
            .data
            .is_empty()
    );
    assert!(
        s.list_api_keys(xi, PageRequest::first(50))
            .await
            .unwrap()
            .data
            .is_empty()
    );
    assert!(
        s.list_conversations(xi, ConversationFilter::default(), PageRequest::first(50))
            .await
            .unwrap()
            .data
            .is_empty()
    );
    assert!(
        s.list_conversations(
            xi,
            ConversationFilter {
                bot_id: Some(b.id),
                ..Default::default()
            },
            PageRequest::first(50)
        )
        .await
        .unwrap()
        .data
        .is_empty()
    );
    assert!(
        s.list_messages(xi, c.id, PageRequest::first(50))
            .await
            .unwrap()
            .data
            .is_empty()
    );
    assert!(s.recent_messages(xi, c.id, 50).await.unwrap().is_empty());
    assert!(
        s.list_datasets(xi, PageRequest::first(50))
            .await
            .unwrap()
            .data
            .is_empty()
    );
    assert!(
        s.list_documents(xi, ds.id, PageRequest::first(50))
            .await
            .unwrap()
            .data
            .is_empty()
    );
    assert!(s.list_chunks(xi, d.id).await.unwrap().is_empty());
    assert_eq!(s.count_chunks(xi, d.id).await.unwrap(), 0);
    assert!(s.list_scopes(xi, b.id).await.unwrap().is_empty());
    assert!(
        s.list_audit(xi, AuditFilter::default(), PageRequest::first(50))
            .await
            .unwrap()
            .data
            .iter()
            .all(|r| r.tenant_id == Some(xi)),
        "the intruder's log holds its own setup only"
    );

    // Writes.
    not_found!(s.update_provider_config(
        xi,
        p.id,
        ProviderConfigPatch {
            name: Some("pwned".into()),
            ..Default::default()
        }
    ));
    not_found!(s.delete_provider_config(xi, p.id));
    not_found!(s.update_bot(
        xi,
        b.id,
        BotPatch {
            system_prompt: Some("pwned".into()),
            ..Default::default()
        }
    ));
    not_found!(s.delete_bot(xi, b.id));
    not_found!(s.revoke_api_key(xi, k.id));
    not_found!(s.touch_api_key(xi, k.id, now()));
    not_found!(s.create_conversation(
        xi,
        NewConversation {
            bot_id: b.id,
            end_user_id: None,
            title: None,
            channel: Channel::Api
        }
    ));
    not_found!(s.delete_conversation(xi, c.id));
    not_found!(s.append_message(xi, user_msg(c.id, "injected")));
    not_found!(s.finish_message(
        xi,
        m.id,
        MessageCompletion {
            content: "pwned".into(),
            ..Default::default()
        }
    ));
    not_found!(s.delete_dataset(xi, ds.id));
    not_found!(s.create_document(xi, new_doc(ds.id, "injected")));
    not_found!(s.set_document_status(xi, d.id, DocumentStatus::Failed, None));
    not_found!(s.delete_document(xi, d.id));
    not_found!(s.replace_chunks(xi, d.id, vec![]));
    not_found!(s.create_scope(
        xi,
        NewScope {
            bot_id: b.id,
            kind: "x".into(),
            config: json!({})
        }
    ));
    not_found!(s.delete_scope(xi, sc.id));
    // References to the owner's rows from the intruder's own objects.
    not_found!(s.create_bot(xi, new_bot(p.id, "steal")));
    let mut nb = new_bot(px.id, "steal-ds");
    nb.dataset_ids = vec![ds.id];
    not_found!(s.create_bot(xi, nb));

    // Nothing changed.
    assert_eq!(s.get_provider_config(a.id, p.id).await.unwrap(), p);
    assert_eq!(s.get_bot(a.id, b.id).await.unwrap(), b);
    let key = s.get_api_key(a.id, k.id).await.unwrap();
    assert!(key.revoked_at.is_none() && key.last_used_at.is_none());
    assert_eq!(
        s.find_api_key_by_secret(&g.secret)
            .await
            .unwrap()
            .map(|k| k.tenant_id),
        Some(a.id)
    );
    s.get_conversation(a.id, c.id).await.unwrap();
    assert_eq!(s.get_message(a.id, m.id).await.unwrap(), m);
    assert_eq!(
        s.list_messages(a.id, c.id, PageRequest::first(50))
            .await
            .unwrap()
            .data
            .len(),
        1
    );
    assert_eq!(
        s.get_document(a.id, d.id).await.unwrap().status,
        DocumentStatus::Ready
    );
    assert_eq!(s.count_chunks(a.id, d.id).await.unwrap(), 1);
    assert_eq!(s.list_scopes(a.id, b.id).await.unwrap(), vec![sc]);
    assert_eq!(
        s.list_audit(a.id, AuditFilter::default(), PageRequest::first(50))
            .await
            .unwrap()
            .data,
        a_log,
        "the attempts recorded nothing"
    );
}

fn op_record() -> AuditRecord {
    AuditRecord::new(
        None,
        Actor {
            kind: ActorKind::ApiKey,
            id: Some("key-1".into()),
        },
        "set by the test",
    )
}

/// The records of `op_record`'s actor: what the case's own changes wrote
/// (the fixtures' setup is audited too, as the system).
async fn audit_of(s: &dyn Store, t: TenantId) -> Vec<AuditRecord> {
    let mine = AuditFilter {
        actor_id: op_record().actor.id,
        ..Default::default()
    };
    s.list_audit(t, mine, PageRequest::first(200))
        .await
        .unwrap()
        .data
}

/// `apply`: the row and its audit record are written together, with the
/// record's tenant and resource set by the store; a failed change writes
/// no record.
pub async fn apply_writes_the_change_and_its_audit_record_together(s: &dyn Store) {
    let (g, key) = new_key("admin");
    let changed = s
        .apply(
            Change::CreateTenant(
                NewTenant {
                    name: "Applied".into(),
                    slug: unique("applied"),
                    rate_limit_rpm: None,
                    rate_limit_tpm: None,
                    features: json!({}),
                    public_rate_limit_rpm: None,
                },
                Some(key),
            ),
            op_record(),
        )
        .await
        .unwrap();
    let Changed::TenantCreated(t, Some(k)) = changed else {
        panic!("expected TenantCreated, got {changed:?}")
    };
    assert_eq!(k.tenant_id, t.id);
    assert_eq!(k.prefix, g.prefix);
    assert_eq!(s.get_tenant(t.id).await.unwrap(), t);
    let log = audit_of(s, t.id).await;
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].tenant_id, Some(t.id));
    assert_eq!(log[0].resource_type.as_deref(), Some("tenant"));
    assert_eq!(log[0].resource_id, Some(t.id.to_string()));
    assert_eq!(log[0].actor.id.as_deref(), Some("key-1"));

    let p = match s
        .apply(
            Change::CreateProviderConfig(
                t.id,
                NewProviderConfig {
                    provider: "mock".into(),
                    name: "m".into(),
                    api_key: None,
                    base_url: None,
                    default_model: None,
                    enabled: true,
                },
            ),
            op_record(),
        )
        .await
        .unwrap()
    {
        Changed::ProviderConfig(p) => p,
        other => panic!("{other:?}"),
    };
    let b = match s
        .apply(Change::CreateBot(t.id, new_bot(p.id, "b1")), op_record())
        .await
        .unwrap()
    {
        Changed::Bot(b) => b,
        other => panic!("{other:?}"),
    };
    assert_eq!(s.get_bot(t.id, b.id).await.unwrap(), b);
    assert_eq!(audit_of(s, t.id).await.len(), 3);

    // Failures leave neither the row nor a record.
    let before = audit_of(s, t.id).await.len();
    assert!(matches!(
        s.apply(Change::CreateBot(t.id, new_bot(p.id, "b1")), op_record())
            .await,
        Err(StoreError::Conflict("bot"))
    ));
    assert!(matches!(
        s.apply(Change::DeleteProviderConfig(t.id, p.id), op_record())
            .await,
        Err(StoreError::InUse(_))
    ));
    assert!(matches!(
        s.apply(Change::DeleteBot(t.id, BotId::new()), op_record())
            .await,
        Err(StoreError::NotFound("bot"))
    ));
    assert_eq!(
        audit_of(s, t.id).await.len(),
        before,
        "no record for a failed change"
    );
    assert!(s.get_provider_config(t.id, p.id).await.is_ok());

    // Each kind of change.
    let rotated = keyring().seal(t.id, &SecretString::from("sk-rotated-9876".to_string()));
    match s
        .apply(
            Change::UpdateProviderConfig(
                t.id,
                p.id,
                ProviderConfigPatch {
                    api_key: Some(Some(rotated)),
                    ..Default::default()
                },
            ),
            op_record(),
        )
        .await
        .unwrap()
    {
        Changed::ProviderConfig(p) => assert_eq!(p.api_key.unwrap().last4, "9876"),
        other => panic!("{other:?}"),
    }
    let sc = match s
        .apply(
            Change::CreateScope(
                t.id,
                NewScope {
                    bot_id: b.id,
                    kind: "max_input_length".into(),
                    config: json!(100),
                },
            ),
            op_record(),
        )
        .await
        .unwrap()
    {
        Changed::Scope(sc) => sc,
        other => panic!("{other:?}"),
    };
    s.apply(Change::DeleteScope(t.id, sc.id), op_record())
        .await
        .unwrap();
    assert!(matches!(
        s.get_scope(t.id, sc.id).await,
        Err(StoreError::NotFound(_))
    ));
    let c = conversation(s, t.id, b.id, None).await;
    s.append_message(t.id, user_msg(c.id, "hi")).await.unwrap();
    s.apply(Change::DeleteConversation(t.id, c.id), op_record())
        .await
        .unwrap();
    assert!(s.get_conversation(t.id, c.id).await.is_err());
    let (_, nk) = new_key("second");
    let k2 = match s
        .apply(Change::CreateApiKey(t.id, nk), op_record())
        .await
        .unwrap()
    {
        Changed::ApiKey(k) => k,
        other => panic!("{other:?}"),
    };
    match s
        .apply(Change::RevokeApiKey(t.id, k2.id), op_record())
        .await
        .unwrap()
    {
        Changed::ApiKey(k) => assert!(k.revoked_at.is_some()),
        other => panic!("{other:?}"),
    }
    match s
        .apply(
            Change::UpdateBot(
                t.id,
                b.id,
                BotPatch {
                    slug: Some("b2".into()),
                    ..Default::default()
                },
            ),
            op_record(),
        )
        .await
        .unwrap()
    {
        Changed::Bot(b) => assert_eq!(b.slug, "b2"),
        other => panic!("{other:?}"),
    }
    s.apply(Change::DeleteBot(t.id, b.id), op_record())
        .await
        .unwrap();
    s.apply(Change::DeleteProviderConfig(t.id, p.id), op_record())
        .await
        .unwrap();
    let new_slug = unique("renamed");
    match s
        .apply(
            Change::UpdateTenant(
                t.id,
                TenantPatch {
                    slug: Some(new_slug.clone()),
                    status: Some(TenantStatus::Suspended),
                    ..Default::default()
                },
            ),
            op_record(),
        )
        .await
        .unwrap()
    {
        Changed::Tenant(t) => {
            assert_eq!(t.slug, new_slug);
            assert_eq!(t.status, TenantStatus::Suspended);
        }
        other => panic!("{other:?}"),
    }
    let resources: Vec<String> = audit_of(s, t.id)
        .await
        .into_iter()
        .rev()
        .map(|r| r.resource_type.unwrap_or_default())
        .collect();
    assert_eq!(
        resources,
        [
            "tenant",
            "provider",
            "bot",
            "provider",
            "scope",
            "scope",
            "conversation",
            "api_key",
            "api_key",
            "bot",
            "bot",
            "provider",
            "tenant"
        ],
        "one record per change, in order"
    );
}

/// `apply` on another tenant's rows changes nothing and records nothing.
pub async fn apply_is_tenant_scoped(s: &dyn Store) {
    let a = tenant(s, "owner").await;
    let b = tenant(s, "intruder").await;
    let p = provider(s, a.id).await;
    let bt = bot(s, a.id, p.id, "mine").await;
    let (_, nk) = new_key("k");
    let k = s.create_api_key(a.id, nk).await.unwrap();
    let c = conversation(s, a.id, bt.id, None).await;
    let sc = s
        .create_scope(
            a.id,
            NewScope {
                bot_id: bt.id,
                kind: "blocked_terms".into(),
                config: json!(["x"]),
            },
        )
        .await
        .unwrap();
    let attempts = vec![
        Change::UpdateProviderConfig(b.id, p.id, ProviderConfigPatch::default()),
        Change::DeleteProviderConfig(b.id, p.id),
        Change::CreateBot(b.id, new_bot(p.id, "stolen")),
        Change::UpdateBot(b.id, bt.id, BotPatch::default()),
        Change::DeleteBot(b.id, bt.id),
        Change::RevokeApiKey(b.id, k.id),
        Change::CreateScope(
            b.id,
            NewScope {
                bot_id: bt.id,
                kind: "blocked_terms".into(),
                config: json!(["y"]),
            },
        ),
        Change::DeleteScope(b.id, sc.id),
        Change::DeleteConversation(b.id, c.id),
    ];
    for ch in attempts {
        let what = format!("{ch:?}");
        assert!(
            matches!(s.apply(ch, op_record()).await, Err(StoreError::NotFound(_))),
            "{what}"
        );
    }
    assert!(audit_of(s, a.id).await.is_empty());
    assert!(audit_of(s, b.id).await.is_empty());
    assert!(
        s.get_api_key(a.id, k.id)
            .await
            .unwrap()
            .revoked_at
            .is_none()
    );
    assert!(s.get_scope(a.id, sc.id).await.is_ok());
    assert!(s.get_conversation(a.id, c.id).await.is_ok());
    assert!(s.get_bot(a.id, bt.id).await.is_ok());
}

/// The UTC days around now: yesterday (a case may start just after
/// midnight) to tomorrow (or end just after it).
fn usage_days_around_now() -> UsageDays {
    UsageDays::covering(now() - Duration::days(1), now() + Duration::days(1)).unwrap()
}

fn usage_totals(rows: &[UsageRow]) -> (u64, u64, u64, u64) {
    rows.iter().fold((0, 0, 0, 0), |a, r| {
        (
            a.0 + r.requests,
            a.1 + r.prompt_tokens,
            a.2 + r.completion_tokens,
            a.3 + r.total_tokens,
        )
    })
}

fn tokens(prompt: i32, completion: i32) -> Option<TokenUsage> {
    Some(TokenUsage {
        prompt_tokens: prompt,
        completion_tokens: completion,
        total_tokens: prompt + completion,
        estimated: false,
    })
}

/// One chat turn the way the engine stores it: `begin_turn`, then the
/// assistant message's outcome. Returns the conversation and the message.
async fn usage_turn(
    s: &dyn Store,
    t: TenantId,
    conversation: TurnConversation,
    key: Option<ApiKeyId>,
    status: MessageStatus,
    usage: Option<TokenUsage>,
) -> (Conversation, Message) {
    let (c, _, a) = s
        .begin_turn(
            t,
            NewTurn {
                conversation,
                user_content: "q".into(),
                api_key_id: key,
                provider: Some("mock".into()),
                model: Some("echo".into()),
                tool_results: Vec::new(),
            },
        )
        .await
        .expect("begin turn");
    let m = s
        .finish_message(
            t,
            a.id,
            MessageCompletion {
                content: "a".into(),
                status: Some(status),
                usage,
                ..Default::default()
            },
        )
        .await
        .expect("finish");
    (c, m)
}

fn new_conv(bot: BotId) -> TurnConversation {
    TurnConversation::New(NewConversation {
        bot_id: bot,
        end_user_id: None,
        title: None,
        channel: Channel::Api,
    })
}

/// `usage`: assistant turns and tokens per bot, key and UTC day, within
/// the time range and the tenant.
pub async fn usage_groups_by_bot_key_and_day(s: &dyn Store) {
    let t = tenant(s, "usage").await;
    let other = tenant(s, "usage-other").await;
    let p = provider(s, t.id).await;
    let b1 = bot(s, t.id, p.id, "u1").await;
    let b2 = bot(s, t.id, p.id, "u2").await;
    let (_, nk) = new_key("k");
    let k = s.create_api_key(t.id, nk).await.unwrap();
    let start = now();
    let turn = |bot: BotId, key: Option<ApiKeyId>, tokens: i32| async move {
        let c = conversation(s, t.id, bot, None).await;
        s.append_message(
            t.id,
            NewMessage {
                api_key_id: key,
                ..user_msg(c.id, "q")
            },
        )
        .await
        .unwrap();
        let m = s
            .append_message(
                t.id,
                NewMessage {
                    conversation_id: c.id,
                    role: Role::Assistant,
                    content: String::new(),
                    status: MessageStatus::Pending,
                    api_key_id: key,
                    provider: Some("mock".into()),
                    model: Some("echo".into()),
                    tool_call_id: None,
                },
            )
            .await
            .unwrap();
        s.finish_message(
            t.id,
            m.id,
            MessageCompletion {
                content: "a".into(),
                status: Some(MessageStatus::Complete),
                usage: Some(TokenUsage {
                    prompt_tokens: tokens,
                    completion_tokens: 1,
                    total_tokens: tokens + 1,
                    estimated: false,
                }),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    };
    turn(b1.id, Some(k.id), 10).await;
    turn(b1.id, None, 20).await;
    turn(b2.id, Some(k.id), 5).await;
    // Another tenant's traffic is never counted.
    let op = provider(s, other.id).await;
    let ob = bot(s, other.id, op.id, "o").await;
    let oc = conversation(s, other.id, ob.id, None).await;
    s.append_message(
        other.id,
        NewMessage {
            role: Role::Assistant,
            ..user_msg(oc.id, "x")
        },
    )
    .await
    .unwrap();

    let days = UsageDays::covering(start - Duration::hours(1), now() + Duration::hours(1)).unwrap();
    let by_bot = s.usage(t.id, days, UsageGroup::Bot).await.unwrap();
    let find = |rows: &[UsageRow], g: Option<String>| {
        rows.iter()
            .find(|r| r.group == g)
            .cloned()
            .unwrap_or_else(|| panic!("no group {g:?} in {rows:?}"))
    };
    assert_eq!(by_bot.len(), 2);
    let r1 = find(&by_bot, Some(b1.id.to_string()));
    assert_eq!(
        (
            r1.requests,
            r1.prompt_tokens,
            r1.completion_tokens,
            r1.total_tokens
        ),
        (2, 30, 2, 32)
    );
    let r2 = find(&by_bot, Some(b2.id.to_string()));
    assert_eq!((r2.requests, r2.total_tokens), (1, 6));
    let mut sorted = by_bot.clone();
    sorted.sort_by(|a, b| a.group.cmp(&b.group));
    assert_eq!(by_bot, sorted, "ordered by group");

    let by_key = s.usage(t.id, days, UsageGroup::ApiKey).await.unwrap();
    assert_eq!(by_key.len(), 2);
    assert_eq!(find(&by_key, Some(k.id.to_string())).prompt_tokens, 15);
    assert_eq!(find(&by_key, None).prompt_tokens, 20);
    assert_eq!(by_key[0].group, None, "turns without a key come first");

    let by_day = s.usage(t.id, days, UsageGroup::Day).await.unwrap();
    let today = start.format("%Y-%m-%d").to_string();
    let tomorrow_maybe = now().format("%Y-%m-%d").to_string();
    assert_eq!(usage_totals(&by_day), (3, 35, 3, 38));
    assert!(
        by_day
            .iter()
            .all(|r| r.group == Some(today.clone()) || r.group == Some(tomorrow_maybe.clone())),
        "{by_day:?}"
    );

    // Days are half-open and filter: the days before and after count nothing.
    let after = UsageDays::new(days.end, days.end + Duration::days(3)).unwrap();
    assert!(
        s.usage(t.id, after, UsageGroup::Bot)
            .await
            .unwrap()
            .is_empty()
    );
    let before = UsageDays::new(days.start - Duration::days(3), days.start).unwrap();
    assert!(
        s.usage(t.id, before, UsageGroup::Day)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        s.usage(other.id, days, UsageGroup::Bot)
            .await
            .unwrap()
            .len()
            == 1
    );
}

/// A turn counts once it has an outcome, whatever it is (complete, error,
/// cancelled, incomplete), and only once: a pending turn is not counted
/// yet, and a second outcome corrects the tokens without counting again.
pub async fn usage_counts_each_outcome_once(s: &dyn Store) {
    let t = tenant(s, "once").await;
    let p = provider(s, t.id).await;
    let b = bot(s, t.id, p.id, "once").await;
    let days = usage_days_around_now();
    let total = |rows: Vec<UsageRow>| usage_totals(&rows);
    let usage = || async { total(s.usage(t.id, days, UsageGroup::Bot).await.unwrap()) };

    let (c, _, pending) = s
        .begin_turn(
            t.id,
            NewTurn {
                conversation: new_conv(b.id),
                user_content: "q".into(),
                api_key_id: None,
                provider: None,
                model: None,
                tool_results: Vec::new(),
            },
        )
        .await
        .unwrap();
    assert_eq!(usage().await, (0, 0, 0, 0), "a pending turn is not counted");
    // An outcome without a status leaves the message pending: still nothing.
    s.finish_message(
        t.id,
        pending.id,
        MessageCompletion {
            content: "partial".into(),
            usage: tokens(3, 1),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(usage().await, (0, 0, 0, 0));
    let done = |status, usage| MessageCompletion {
        content: "a".into(),
        status: Some(status),
        usage,
        ..Default::default()
    };
    s.finish_message(
        t.id,
        pending.id,
        done(MessageStatus::Complete, tokens(10, 5)),
    )
    .await
    .unwrap();
    assert_eq!(usage().await, (1, 10, 5, 15));
    // A second outcome of the same message replaces its tokens.
    s.finish_message(
        t.id,
        pending.id,
        done(MessageStatus::Complete, tokens(12, 6)),
    )
    .await
    .unwrap();
    assert_eq!(usage().await, (1, 12, 6, 18));
    // Failed and cancelled turns are turns too, with what was recorded.
    usage_turn(
        s,
        t.id,
        TurnConversation::Existing(c.id),
        None,
        MessageStatus::Error,
        None,
    )
    .await;
    usage_turn(
        s,
        t.id,
        TurnConversation::Existing(c.id),
        None,
        MessageStatus::Cancelled,
        tokens(4, 2),
    )
    .await;
    usage_turn(
        s,
        t.id,
        new_conv(b.id),
        None,
        MessageStatus::Incomplete,
        tokens(1, 1),
    )
    .await;
    assert_eq!(usage().await, (4, 17, 9, 26));
    // An assistant message appended with an outcome counts at once; a user
    // message never does.
    s.append_message(
        t.id,
        NewMessage {
            role: Role::Assistant,
            ..user_msg(c.id, "imported answer")
        },
    )
    .await
    .unwrap();
    s.append_message(t.id, user_msg(c.id, "another question"))
        .await
        .unwrap();
    assert_eq!(usage().await, (5, 17, 9, 26));
    // A message of another tenant is not found and counts nothing.
    let x = tenant(s, "once-x").await;
    assert!(matches!(
        s.finish_message(
            x.id,
            pending.id,
            done(MessageStatus::Complete, tokens(99, 99))
        )
        .await,
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(usage().await, (5, 17, 9, 26));
    assert!(
        s.usage(x.id, days, UsageGroup::Bot)
            .await
            .unwrap()
            .is_empty()
    );
}

/// Usage is accounting: deleting a conversation erases its messages but
/// not the turns and tokens they counted, and neither does deleting the
/// bot or revoking the key.
pub async fn usage_survives_deleting_what_it_counts(s: &dyn Store) {
    let t = tenant(s, "keep").await;
    let p = provider(s, t.id).await;
    let b = bot(s, t.id, p.id, "keep").await;
    let (_, nk) = new_key("keep");
    let k = s.create_api_key(t.id, nk).await.unwrap();
    let days = usage_days_around_now();
    let (c1, _) = usage_turn(
        s,
        t.id,
        new_conv(b.id),
        Some(k.id),
        MessageStatus::Complete,
        tokens(10, 5),
    )
    .await;
    let (c2, _) = usage_turn(
        s,
        t.id,
        new_conv(b.id),
        None,
        MessageStatus::Complete,
        tokens(20, 10),
    )
    .await;
    let by_key = s.usage(t.id, days, UsageGroup::ApiKey).await.unwrap();
    assert_eq!(usage_totals(&by_key), (2, 30, 15, 45));

    s.delete_conversation(t.id, c1.id).await.unwrap();
    let audit = || {
        AuditRecord::new(
            Some(t.id),
            Actor {
                kind: ActorKind::Operator,
                id: None,
            },
            "deleted",
        )
    };
    s.apply(Change::DeleteConversation(t.id, c2.id), audit())
        .await
        .unwrap();
    assert!(matches!(
        s.get_conversation(t.id, c1.id).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(
        s.list_messages(t.id, c2.id, PageRequest::first(10))
            .await
            .unwrap()
            .data
            .is_empty(),
        "the messages are gone"
    );
    assert_eq!(
        s.usage(t.id, days, UsageGroup::ApiKey).await.unwrap(),
        by_key,
        "their usage is not"
    );

    s.revoke_api_key(t.id, k.id).await.unwrap();
    s.apply(Change::DeleteBot(t.id, b.id), audit())
        .await
        .unwrap();
    let by_bot = s.usage(t.id, days, UsageGroup::Bot).await.unwrap();
    assert_eq!(by_bot.len(), 1);
    assert_eq!(by_bot[0].group, Some(b.id.to_string()));
    assert_eq!(usage_totals(&by_bot), (2, 30, 15, 45));
    assert_eq!(
        s.usage(t.id, days, UsageGroup::ApiKey).await.unwrap(),
        by_key
    );
}

/// Two tenants with the same traffic shape: each sees only its own usage,
/// and writing through another tenant's id counts nothing.
pub async fn usage_is_tenant_scoped(s: &dyn Store) {
    let days = usage_days_around_now();
    let mut setups = vec![];
    for (name, n) in [("iso-a", 3), ("iso-b", 1)] {
        let t = tenant(s, name).await;
        let p = provider(s, t.id).await;
        let b = bot(s, t.id, p.id, "same-slug").await;
        let (_, nk) = new_key(name);
        let k = s.create_api_key(t.id, nk).await.unwrap();
        let mut last = None;
        for i in 0..n {
            last = Some(
                usage_turn(
                    s,
                    t.id,
                    new_conv(b.id),
                    (i % 2 == 0).then_some(k.id),
                    MessageStatus::Complete,
                    tokens(100, i),
                )
                .await,
            );
        }
        setups.push((t, b, k, last.unwrap()));
    }
    let (a, ab, ak, (ac, am)) = &setups[0];
    let (b, bb, bk, _) = &setups[1];
    for g in [UsageGroup::Bot, UsageGroup::ApiKey, UsageGroup::Day] {
        let ra = s.usage(a.id, days, g).await.unwrap();
        let rb = s.usage(b.id, days, g).await.unwrap();
        assert_eq!(usage_totals(&ra), (3, 300, 3, 303), "{g:?}");
        assert_eq!(usage_totals(&rb), (1, 100, 0, 100), "{g:?}");
        for r in &rb {
            assert_ne!(r.group, Some(ab.id.to_string()));
            assert_ne!(r.group, Some(ak.id.to_string()));
        }
        for r in &ra {
            assert_ne!(r.group, Some(bb.id.to_string()));
            assert_ne!(r.group, Some(bk.id.to_string()));
        }
    }
    // B writing into A's conversation or message: not found, nothing counted.
    assert!(matches!(
        s.append_message(
            b.id,
            NewMessage {
                role: Role::Assistant,
                ..user_msg(ac.id, "x")
            }
        )
        .await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        s.finish_message(
            b.id,
            am.id,
            MessageCompletion {
                status: Some(MessageStatus::Error),
                usage: tokens(1000, 1000),
                ..Default::default()
            }
        )
        .await,
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(
        usage_totals(&s.usage(a.id, days, UsageGroup::Bot).await.unwrap()),
        (3, 300, 3, 303)
    );
    assert_eq!(
        usage_totals(&s.usage(b.id, days, UsageGroup::Bot).await.unwrap()),
        (1, 100, 0, 100)
    );
}

/// For a varied, reproducible set of turns (bots, keys, outcomes, pending
/// turns, corrected outcomes, appended answers, shared conversations),
/// every grouping of `usage` equals the same aggregate computed from the
/// stored messages: assistant messages with an outcome, by bot, key and
/// UTC day of creation.
pub async fn usage_matches_the_messages(s: &dyn Store) {
    use std::collections::BTreeMap;
    let t = tenant(s, "match").await;
    let p = provider(s, t.id).await;
    let mut bots = vec![];
    for i in 0..3 {
        bots.push(bot(s, t.id, p.id, &format!("match{i}")).await.id);
    }
    let mut keys = vec![None];
    for i in 0..2 {
        let (_, nk) = new_key(&format!("match{i}"));
        keys.push(Some(s.create_api_key(t.id, nk).await.unwrap().id));
    }
    // A small linear congruential generator: the same "random" turns on
    // every backend and every run.
    let mut seed: u64 = 0x5eed_cafe;
    let mut next = |n: u64| {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 33) % n
    };
    let statuses = [
        MessageStatus::Complete,
        MessageStatus::Complete,
        MessageStatus::Error,
        MessageStatus::Cancelled,
        MessageStatus::Incomplete,
    ];
    let mut conversations: Vec<(ConversationId, BotId)> = vec![];
    let other = tenant(s, "match-other").await;
    let op = provider(s, other.id).await;
    let ob = bot(s, other.id, op.id, "match0").await;
    for _ in 0..60 {
        let bot = bots[next(3) as usize];
        let key = keys[next(3) as usize];
        // Continue one of this bot's conversations now and then.
        let existing = conversations
            .iter()
            .filter(|(_, b)| *b == bot)
            .map(|(c, _)| *c)
            .nth(next(4) as usize);
        let conversation = match existing {
            Some(c) => TurnConversation::Existing(c),
            None => new_conv(bot),
        };
        let usage = (next(4) > 0)
            .then(|| tokens(next(500) as i32, next(200) as i32))
            .flatten();
        match next(10) {
            // Left pending: the turn is still running.
            0 => {
                let (c, _, _) = s
                    .begin_turn(
                        t.id,
                        NewTurn {
                            conversation,
                            user_content: "q".into(),
                            api_key_id: key,
                            provider: None,
                            model: None,
                            tool_results: Vec::new(),
                        },
                    )
                    .await
                    .unwrap();
                conversations.push((c.id, bot));
            }
            // An answer appended with its outcome.
            1 => {
                let c = match conversation {
                    TurnConversation::Existing(c) => c,
                    TurnConversation::New(_) => conversation_id_for(s, t.id, bot).await,
                };
                s.append_message(
                    t.id,
                    NewMessage {
                        role: Role::Assistant,
                        api_key_id: key,
                        ..user_msg(c, "appended")
                    },
                )
                .await
                .unwrap();
                conversations.push((c, bot));
            }
            // An outcome, then a corrected one.
            2 => {
                let (c, m) =
                    usage_turn(s, t.id, conversation, key, MessageStatus::Incomplete, usage).await;
                s.finish_message(
                    t.id,
                    m.id,
                    MessageCompletion {
                        content: "more".into(),
                        status: Some(MessageStatus::Complete),
                        usage: tokens(next(900) as i32, next(300) as i32),
                        ..Default::default()
                    },
                )
                .await
                .unwrap();
                conversations.push((c.id, bot));
            }
            _ => {
                let status = statuses[next(statuses.len() as u64) as usize];
                let (c, _) = usage_turn(s, t.id, conversation, key, status, usage).await;
                conversations.push((c.id, bot));
            }
        }
        // Noise in another tenant, which is never counted.
        if next(5) == 0 {
            usage_turn(
                s,
                other.id,
                new_conv(ob.id),
                None,
                MessageStatus::Complete,
                tokens(7, 7),
            )
            .await;
        }
    }

    // The same aggregate from the stored messages.
    type Sums = (u64, u64, u64, u64);
    let mut by_bot: BTreeMap<Option<String>, Sums> = BTreeMap::new();
    let mut by_key: BTreeMap<Option<String>, Sums> = BTreeMap::new();
    let mut by_day: BTreeMap<Option<String>, Sums> = BTreeMap::new();
    let mut seen = std::collections::HashSet::new();
    let mut first = now();
    for (c, bot) in &conversations {
        if !seen.insert(*c) {
            continue;
        }
        let (msgs, _) = collect_pages(50, |pg| s.list_messages(t.id, *c, pg)).await;
        for m in msgs {
            first = first.min(m.created_at);
            if m.role != Role::Assistant || m.status == MessageStatus::Pending {
                continue;
            }
            let u = m.usage.unwrap_or(TokenUsage {
                prompt_tokens: 0,
                completion_tokens: 0,
                total_tokens: 0,
                estimated: false,
            });
            for (map, g) in [
                (&mut by_bot, Some(bot.to_string())),
                (&mut by_key, m.api_key_id.map(|k| k.to_string())),
                (
                    &mut by_day,
                    Some(m.created_at.format("%Y-%m-%d").to_string()),
                ),
            ] {
                let e = map.entry(g).or_default();
                e.0 += 1;
                e.1 += u.prompt_tokens as u64;
                e.2 += u.completion_tokens as u64;
                e.3 += u.total_tokens as u64;
            }
        }
    }
    let days = UsageDays::covering(first - Duration::days(1), now() + Duration::days(1)).unwrap();
    for (g, expected) in [
        (UsageGroup::Bot, by_bot),
        (UsageGroup::ApiKey, by_key),
        (UsageGroup::Day, by_day),
    ] {
        let rows = s.usage(t.id, days, g).await.unwrap();
        let got: Vec<(Option<String>, Sums)> = rows
            .into_iter()
            .map(|r| {
                (
                    r.group,
                    (
                        r.requests,
                        r.prompt_tokens,
                        r.completion_tokens,
                        r.total_tokens,
                    ),
                )
            })
            .collect();
        // BTreeMap orders None first, then ids/days as text: the store's order.
        let expected: Vec<_> = expected.into_iter().collect();
        assert_eq!(got, expected, "{g:?}");
    }
}

/// A fresh conversation of `bot` (for turns that append their answer).
async fn conversation_id_for(s: &dyn Store, t: TenantId, bot: BotId) -> ConversationId {
    conversation(s, t, bot, None).await.id
}

/// Many turns written at once (as concurrent requests do, and as a
/// batching store groups them): every caller gets its own answer, a write
/// that concerns another tenant's rows fails alone with `NotFound` and
/// never its neighbours, streamed text reaches pending messages only, and
/// usage counts each turn once.
pub async fn concurrent_turns_each_get_their_own_answer(s: &dyn Store) {
    use futures::FutureExt;
    use futures::future::join_all;
    let t = tenant(s, "busy").await;
    let x = tenant(s, "intruder").await;
    let p = provider(s, t.id).await;
    let b = bot(s, t.id, p.id, "busy").await;
    let existing = conversation(s, t.id, b.id, None).await;
    let n = 60usize;
    let begins = join_all((0..n).map(|i| {
        let conversation = match i % 3 {
            0 => TurnConversation::Existing(existing.id),
            _ => new_conv(b.id),
        };
        // Every tenth start names the conversation under another tenant.
        let owner = if i % 10 == 9 { x.id } else { t.id };
        let conversation = if i % 10 == 9 {
            TurnConversation::Existing(existing.id)
        } else {
            conversation
        };
        async move {
            s.begin_turn(
                owner,
                NewTurn {
                    conversation,
                    user_content: format!("question {i}"),
                    api_key_id: None,
                    provider: Some("mock".into()),
                    model: Some("echo".into()),
                    tool_results: Vec::new(),
                },
            )
            .await
        }
    }))
    .await;
    let mut started = Vec::new();
    for (i, r) in begins.into_iter().enumerate() {
        if i % 10 == 9 {
            assert!(
                matches!(r, Err(StoreError::NotFound("conversation"))),
                "start {i}: {r:?}"
            );
        } else {
            let (c, u, a) = r.unwrap_or_else(|e| panic!("start {i}: {e}"));
            assert_eq!(u.content, format!("question {i}"));
            assert_eq!(u.conversation_id, c.id);
            assert_eq!(a.status, MessageStatus::Pending);
            assert!(u.id < a.id, "the question sorts before the answer");
            if i % 3 == 0 {
                assert_eq!(c.id, existing.id);
            }
            started.push((i, c, a));
        }
    }
    // Streamed text of half of them, then all outcomes at once, mixed with
    // outcomes for another tenant's view of the same messages.
    for (i, _, a) in started.iter().filter(|(i, _, _)| i % 2 == 0) {
        s.record_partial(t.id, a.id, format!("partial {i}"));
    }
    let finishes = join_all(started.iter().flat_map(|(i, _, a)| {
        let ok = async move {
            s.finish_message(
                t.id,
                a.id,
                MessageCompletion {
                    content: format!("answer {i}"),
                    status: Some(MessageStatus::Complete),
                    usage: tokens(2, 3),
                    ..Default::default()
                },
            )
            .await
        };
        let foreign = async move {
            s.finish_message(
                x.id,
                a.id,
                MessageCompletion {
                    content: "hijacked".into(),
                    status: Some(MessageStatus::Error),
                    ..Default::default()
                },
            )
            .await
        };
        [ok.boxed(), foreign.boxed()]
    }))
    .await;
    for (k, r) in finishes.into_iter().enumerate() {
        let (i, _, a) = &started[k / 2];
        if k % 2 == 0 {
            let m = r.unwrap_or_else(|e| panic!("finish {i}: {e}"));
            assert_eq!(
                (m.id, m.content.as_str()),
                (a.id, format!("answer {i}").as_str())
            );
        } else {
            assert!(matches!(r, Err(StoreError::NotFound("message"))), "{r:?}");
        }
    }
    // Streamed text arriving after the outcome does not overwrite it.
    for (_, _, a) in &started {
        s.record_partial(t.id, a.id, "late".into());
    }
    s.flush().await.unwrap();
    for (i, c, a) in &started {
        let m = s.get_message(t.id, a.id).await.unwrap();
        assert_eq!(m.content, format!("answer {i}"));
        assert_eq!(m.status, MessageStatus::Complete);
        assert_eq!(m.conversation_id, c.id);
    }
    let rows = s
        .usage(t.id, usage_days_around_now(), UsageGroup::Bot)
        .await
        .unwrap();
    let k = started.len() as u64;
    assert_eq!(usage_totals(&rows), (k, 2 * k, 3 * k, 5 * k));
    assert!(
        s.usage(x.id, usage_days_around_now(), UsageGroup::Bot)
            .await
            .unwrap()
            .is_empty()
    );
    let history = s
        .list_messages(t.id, existing.id, PageRequest::first(200))
        .await
        .unwrap()
        .data;
    assert_eq!(
        history.len(),
        2 * started
            .iter()
            .filter(|(_, c, _)| c.id == existing.id)
            .count()
    );
}

/// A tenant with at least one row in every tenant-owned table (provider,
/// bot, public bot, key, conversation, messages, usage, dataset, document,
/// chunk, scope, audit record), for tests of the isolation below the store
/// (PostgreSQL row-level security). Everything is committed when it returns.
pub async fn seed_every_table(s: &dyn Store, name: &str) -> Tenant {
    let t = tenant(s, name).await;
    let p = provider(s, t.id).await;
    let b = bot(s, t.id, p.id, "seeded").await;
    let mut public = new_bot(p.id, &unique("public"));
    public.is_public = true;
    s.create_bot(t.id, public).await.expect("public bot");
    let (_, nk) = new_key(name);
    let k = s.create_api_key(t.id, nk).await.expect("api key");
    // One conversation, of an end user (so the per-end-user usage rollup
    // has its row too).
    let (_, answer) = usage_turn(
        s,
        t.id,
        TurnConversation::New(NewConversation {
            bot_id: b.id,
            end_user_id: Some("seeded-user".into()),
            title: None,
            channel: Channel::Api,
        }),
        Some(k.id),
        MessageStatus::Complete,
        tokens(3, 4),
    )
    .await;
    let ds = dataset(s, t.id, p.id).await;
    let d = s
        .create_document(t.id, new_doc(ds.id, "seeded"))
        .await
        .expect("document");
    put_chunks(s, t.id, d.id, &[("seeded words", [1.0, 0.0, 0.0, 0.0])]).await;
    s.create_scope(
        t.id,
        NewScope {
            bot_id: b.id,
            kind: "blocked_terms".into(),
            config: json!(["x"]),
        },
    )
    .await
    .expect("scope");
    s.append_audit(AuditRecord::new(
        Some(t.id),
        Actor {
            kind: ActorKind::System,
            id: None,
        },
        "seeded",
    ))
    .await
    .expect("audit");
    s.put_widget(
        t.id,
        b.id,
        WidgetUpdate {
            settings: Some(json!({"title": "seeded"})),
            secret: None,
        },
        system_audit(t.id),
    )
    .await
    .expect("widget");
    s.put_feedback(t.id, feedback(answer.id, Rating::Up))
        .await
        .expect("feedback");
    // Cost and budgets: a price and a budget.
    s.apply(
        Change::PutPrice(
            t.id,
            NewPrice {
                provider_id: p.id,
                model: "seeded".into(),
                price: crate::pricing::Price {
                    input_per_mtok: 1,
                    cached_input_per_mtok: 1,
                    output_per_mtok: 2,
                },
            },
        ),
        system_audit(t.id),
    )
    .await
    .expect("price");
    s.apply(
        Change::CreateBudget(
            t.id,
            NewBudget {
                scope: BudgetScope::Tenant,
                api_key_id: None,
                bot_id: None,
                end_user_id: None,
                period: BudgetPeriod::Month,
                amount_micros: 1_000_000,
            },
        ),
        system_audit(t.id),
    )
    .await
    .expect("budget");
    s.flush().await.expect("flush");
    t
}

fn system_audit(t: TenantId) -> AuditRecord {
    AuditRecord::new(
        Some(t),
        Actor {
            kind: ActorKind::System,
            id: None,
        },
        "widget.updated",
    )
}

fn feedback(m: MessageId, rating: Rating) -> NewFeedback {
    NewFeedback {
        message_id: m,
        rating,
        comment: None,
        actor: Actor {
            kind: ActorKind::PublicVisitor,
            id: Some("visitor:v1".into()),
        },
    }
}

/// Widget rows: created on first change, settings and secret changed
/// independently, audited in the same transaction, tenant-scoped, gone
/// with their bot.
pub async fn widget_settings_and_secret(s: &dyn Store) {
    let t = tenant(s, "widget").await;
    let other = tenant(s, "widget-other").await;
    let p = provider(s, t.id).await;
    let b = bot(s, t.id, p.id, "widgeted").await;
    assert_eq!(s.get_widget(t.id, b.id).await.unwrap(), None);
    let w = s
        .put_widget(
            t.id,
            b.id,
            WidgetUpdate {
                settings: Some(json!({"title": "Help"})),
                secret: None,
            },
            system_audit(t.id),
        )
        .await
        .expect("create");
    assert_eq!(w.settings, json!({"title": "Help"}));
    assert!(w.secret.is_none());
    let sealed = keyring().seal(t.id, &SecretString::from("cws_secret_value".to_string()));
    let w = s
        .put_widget(
            t.id,
            b.id,
            WidgetUpdate {
                settings: None,
                secret: Some(Some(sealed.clone())),
            },
            system_audit(t.id),
        )
        .await
        .expect("secret");
    assert_eq!(w.settings, json!({"title": "Help"}), "settings kept");
    assert_eq!(w.secret.as_ref().unwrap().ciphertext, sealed.ciphertext);
    assert!(w.secret_created_at.is_some());
    let got = s.get_widget(t.id, b.id).await.unwrap().unwrap();
    assert_eq!(got, w);
    let opened = keyring().open(t.id, got.secret.as_ref().unwrap()).unwrap();
    assert_eq!(opened.expose_secret(), "cws_secret_value");
    // Both changes were audited, on the bot.
    let audit = s
        .list_audit(
            t.id,
            AuditFilter {
                action: Some("widget.updated".into()),
                ..Default::default()
            },
            PageRequest::first(10),
        )
        .await
        .unwrap();
    assert_eq!(audit.data.len(), 2);
    assert_eq!(audit.data[0].resource_id, Some(b.id.to_string()));
    // Another tenant neither sees nor changes it.
    assert_eq!(s.get_widget(other.id, b.id).await.unwrap(), None);
    let e = s
        .put_widget(
            other.id,
            b.id,
            WidgetUpdate::default(),
            system_audit(other.id),
        )
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::NotFound(_)), "{e:?}");
    assert_eq!(
        s.get_widget(t.id, b.id).await.unwrap().unwrap().settings,
        json!({"title": "Help"})
    );
    // Removing the secret, then the bot.
    let w = s
        .put_widget(
            t.id,
            b.id,
            WidgetUpdate {
                settings: None,
                secret: Some(None),
            },
            system_audit(t.id),
        )
        .await
        .unwrap();
    assert!(w.secret.is_none() && w.secret_created_at.is_none());
    s.delete_bot(t.id, b.id).await.unwrap();
    assert_eq!(s.get_widget(t.id, b.id).await.unwrap(), None);
}

/// Feedback: one per assistant message (a later one replaces it), only on
/// the tenant's assistant messages, counted per bot and day.
pub async fn feedback_on_answers(s: &dyn Store) {
    let t = tenant(s, "feedback").await;
    let other = tenant(s, "feedback-other").await;
    let p = provider(s, t.id).await;
    let b1 = bot(s, t.id, p.id, "rated-one").await;
    let b2 = bot(s, t.id, p.id, "rated-two").await;
    let (c1, a1) = usage_turn(
        s,
        t.id,
        new_conv(b1.id),
        None,
        MessageStatus::Complete,
        tokens(1, 1),
    )
    .await;
    let (_, a2) = usage_turn(
        s,
        t.id,
        new_conv(b1.id),
        None,
        MessageStatus::Complete,
        tokens(1, 1),
    )
    .await;
    let (_, a3) = usage_turn(
        s,
        t.id,
        new_conv(b2.id),
        None,
        MessageStatus::Complete,
        tokens(1, 1),
    )
    .await;
    let f = s
        .put_feedback(t.id, feedback(a1.id, Rating::Down))
        .await
        .unwrap();
    assert_eq!(
        (f.rating, f.bot_id, f.conversation_id),
        (Rating::Down, b1.id, c1.id)
    );
    let mut again = feedback(a1.id, Rating::Up);
    again.comment = Some("better now".into());
    let f2 = s.put_feedback(t.id, again).await.unwrap();
    assert_eq!(f2.rating, Rating::Up);
    assert_eq!(f2.comment.as_deref(), Some("better now"));
    assert_eq!(f2.created_at, f.created_at, "replaced, not added");
    s.put_feedback(t.id, feedback(a2.id, Rating::Down))
        .await
        .unwrap();
    s.put_feedback(t.id, feedback(a3.id, Rating::Up))
        .await
        .unwrap();
    let got = s
        .feedback_for(t.id, &[a1.id, a2.id, MessageId::new()])
        .await
        .unwrap();
    assert_eq!(got.len(), 2);
    assert!(s.feedback_for(t.id, &[]).await.unwrap().is_empty());
    // Not on a user message, another tenant's or a missing one.
    let user = s
        .recent_messages(t.id, c1.id, 10)
        .await
        .unwrap()
        .into_iter()
        .find(|m| m.role == Role::User)
        .unwrap();
    for (tenant, m) in [(t.id, user.id), (other.id, a1.id), (t.id, MessageId::new())] {
        let e = s
            .put_feedback(tenant, feedback(m, Rating::Up))
            .await
            .unwrap_err();
        assert!(matches!(e, StoreError::NotFound(_)), "{e:?}");
    }
    assert!(s.feedback_for(other.id, &[a1.id]).await.unwrap().is_empty());
    // Counts per bot, per day, and in one group by key.
    let days = UsageDays::last(1, now()).unwrap();
    let by_bot = s
        .feedback_counts(t.id, days, UsageGroup::Bot)
        .await
        .unwrap();
    let row = |id: BotId| {
        by_bot
            .iter()
            .find(|r| r.group == Some(id.to_string()))
            .cloned()
            .unwrap()
    };
    assert_eq!((row(b1.id).up, row(b1.id).down), (1, 1));
    assert_eq!((row(b2.id).up, row(b2.id).down), (1, 0));
    let by_day = s
        .feedback_counts(t.id, days, UsageGroup::Day)
        .await
        .unwrap();
    assert_eq!(by_day.len(), 1);
    assert_eq!((by_day[0].up, by_day[0].down), (2, 1));
    assert_eq!(by_day[0].group, Some(now().format("%Y-%m-%d").to_string()));
    let by_key = s
        .feedback_counts(t.id, days, UsageGroup::ApiKey)
        .await
        .unwrap();
    assert_eq!(
        by_key,
        vec![FeedbackRow {
            group: None,
            up: 2,
            down: 1
        }]
    );
    assert!(
        s.feedback_counts(other.id, days, UsageGroup::Bot)
            .await
            .unwrap()
            .is_empty()
    );
    // Deleting the conversation deletes its feedback.
    s.delete_conversation(t.id, c1.id).await.unwrap();
    assert!(s.feedback_for(t.id, &[a1.id]).await.unwrap().is_empty());
}
