//! The key cache: verified keys are served from memory, and a revocation or
//! suspension through this instance takes effect at once.

use std::sync::Arc;
use std::time::Duration;

use chatcore::auth::{AuthError, Authenticator};
use chatcore::domain::{Permission, TenantStatus};
use chatcore::store::*;
use chatcore::testkit::fixtures::{self, SystemWrites};
use secrecy::SecretString;

async fn setup() -> (
    Arc<SeaOrmStore>,
    chatcore::domain::Tenant,
    chatcore::auth::GeneratedKey,
    chatcore::domain::ApiKey,
) {
    let store = Arc::new(SeaOrmStore::in_memory().await.unwrap());
    let t = store
        .create_tenant(fixtures::new_tenant("a"))
        .await
        .unwrap();
    let (g, nk) = fixtures::new_key("k", vec![Permission::Chat]);
    let k = store.create_api_key(t.id, nk).await.unwrap();
    (store, t, g, k)
}

#[tokio::test]
async fn genuine_keys_pass_and_everything_else_is_one_error() {
    let (store, t, g, _) = setup().await;
    let auth = Authenticator::new(store, Authenticator::DEFAULT_TTL);
    let p = auth.authenticate(&g.secret).await.unwrap();
    assert_eq!(p.tenant.id, t.id);
    for bad in [
        "",
        "Bearer x",
        "cc_0123456789abcdef_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    ] {
        assert_eq!(
            auth.authenticate(&SecretString::from(bad.to_string()))
                .await
                .unwrap_err(),
            AuthError::InvalidKey
        );
    }
    let forged = format!("{}_{}", g.prefix, "B".repeat(43));
    assert_eq!(
        auth.authenticate(&SecretString::from(forged))
            .await
            .unwrap_err(),
        AuthError::InvalidKey
    );
}

#[tokio::test]
async fn revocation_and_suspension_through_this_instance_apply_at_once() {
    let (store, t, g, k) = setup().await;
    let auth = Authenticator::new(store.clone(), Duration::from_secs(3600));
    auth.authenticate(&g.secret).await.unwrap();
    store.revoke_api_key(t.id, k.id).await.unwrap();
    // Cached for an hour, but invalidated by the revocation path.
    auth.invalidate_key(k.id);
    assert_eq!(
        auth.authenticate(&g.secret).await.unwrap_err(),
        AuthError::InvalidKey
    );

    let (store, t, g, _) = setup().await;
    let auth = Authenticator::new(store.clone(), Duration::from_secs(3600));
    auth.authenticate(&g.secret).await.unwrap();
    store
        .update_tenant(
            t.id,
            TenantPatch {
                status: Some(TenantStatus::Suspended),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    auth.invalidate_tenant(t.id);
    assert_eq!(
        auth.authenticate(&g.secret).await.unwrap_err(),
        AuthError::TenantSuspended
    );
}

#[tokio::test]
async fn another_instances_revocation_is_seen_once_the_entry_expires() {
    // Within the TTL the cached entry is served (no database round trip)...
    let (store, t, g, k) = setup().await;
    let auth = Authenticator::new(store.clone(), Duration::from_secs(3600));
    auth.authenticate(&g.secret).await.unwrap();
    store.revoke_api_key(t.id, k.id).await.unwrap(); // by "another instance": no invalidation here
    assert!(
        auth.authenticate(&g.secret).await.is_ok(),
        "served from the cache within the TTL"
    );
    // ...and once an entry is older than the TTL the database decides.
    let (store, t, g, k) = setup().await;
    let auth = Authenticator::new(store.clone(), Duration::ZERO);
    auth.authenticate(&g.secret).await.unwrap(); // cached, and at once stale
    store.revoke_api_key(t.id, k.id).await.unwrap();
    assert_eq!(
        auth.authenticate(&g.secret).await.unwrap_err(),
        AuthError::InvalidKey
    );
}
