//! [`Caches`]: what the engine keeps in memory about tenants, shared with
//! the services whose changes must be seen at once.

use std::sync::Arc;
use std::time::Duration;

use super::BotEntry;
use crate::auth::Authenticator;
use crate::cache::TtlCache;
use crate::domain::*;
use crate::store::Store;

/// The engine's hot lookups: verified API keys and resolved bots (with
/// their tenant, guardrails and provider). Entries live at most the
/// settings' `cache_ttl`.
///
/// Clones share the entries: [`super::ChatService`] reads them, and
/// [`crate::admin::AdminService`] and [`crate::rag::RagService`] hold a
/// clone to invalidate what a change of theirs makes stale, so the next
/// turn sees it. (A change made by another instance is seen within the
/// TTL.)
#[derive(Clone, Debug)]
pub struct Caches {
    pub(super) auth: Authenticator,
    pub(super) bots: TtlCache<(TenantId, String), BotEntry>,
    pub(super) public_bots: TtlCache<String, BotEntry>,
}

impl Caches {
    /// Empty caches whose entries live `ttl`; keys are verified against
    /// `store`.
    pub fn new(store: Arc<dyn Store>, ttl: Duration) -> Self {
        Self {
            auth: Authenticator::new(store, ttl),
            bots: TtlCache::new(ttl, 10_000),
            public_bots: TtlCache::new(ttl, 10_000),
        }
    }

    /// Forgets cached state of a tenant (after a suspension, a limit change,
    /// a bot, provider, scope or dataset change).
    pub fn invalidate_tenant(&self, tenant: TenantId) {
        self.auth.invalidate_tenant(tenant);
        self.bots.remove_where(|(t, _), _| *t == tenant);
        self.public_bots.remove_where(|_, e| e.tenant.id == tenant);
    }

    /// Forgets a cached key (after a revocation).
    pub fn invalidate_key(&self, key: ApiKeyId) {
        self.auth.invalidate_key(key);
    }
}
