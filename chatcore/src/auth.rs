//! API keys: generation, hashing and verification.
//!
//! A key looks like `cc_<public id>_<secret>`: `cc_` and 16 hex characters of
//! public id (the stored, shown `prefix`, used to find the row), then 43
//! base64url characters encoding 32 bytes (256 bits) from the operating
//! system's CSPRNG. Only the SHA-256 of the whole key is stored; a presented
//! key is checked by hashing it and comparing the hashes in constant time.
//!
//! [`throttle`]: failed authentications are throttled per client IP and
//! audited as one counted record per IP and minute.

pub mod throttle;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::TryRngCore as _;
use rand::rngs::OsRng;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The fixed beginning of every chatcore API key.
pub const KEY_TAG: &str = "cc_";
const PUBLIC_ID_HEX: usize = 16;
const SECRET_BYTES: usize = 32;

/// A freshly generated API key: the secret, to show once, and what to store.
pub struct GeneratedKey {
    /// The whole key, shown to its owner once and never stored.
    pub secret: SecretString,
    /// The public lookup part (`cc_<public id>`), stored and shown.
    pub prefix: String,
    /// SHA-256 of the whole key, stored.
    pub hash: [u8; 32],
}

impl std::fmt::Debug for GeneratedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeneratedKey")
            .field("secret", &"[REDACTED]")
            .field("prefix", &self.prefix)
            .finish()
    }
}

/// Generates a new API key from the OS CSPRNG.
pub fn generate_key() -> GeneratedKey {
    let mut public = [0u8; PUBLIC_ID_HEX / 2];
    let mut secret = [0u8; SECRET_BYTES];
    OsRng
        .try_fill_bytes(&mut public)
        .and_then(|_| OsRng.try_fill_bytes(&mut secret))
        .expect("the operating system's random number generator failed");
    let prefix = format!("{KEY_TAG}{}", hex::encode(public));
    let full = format!("{prefix}_{}", URL_SAFE_NO_PAD.encode(secret));
    let hash = hash_key(&full);
    GeneratedKey {
        secret: SecretString::from(full),
        prefix,
        hash,
    }
}

/// SHA-256 of a presented key.
pub fn hash_key(presented: &str) -> [u8; 32] {
    Sha256::digest(presented.as_bytes()).into()
}

/// The lookup prefix of a presented key, if it has the right shape.
/// Shape only: whether the key is genuine is decided by [`verify_key`].
pub fn key_prefix(presented: &str) -> Option<&str> {
    let rest = presented.strip_prefix(KEY_TAG)?;
    let (public, secret) = rest.split_once('_')?;
    let shape_ok = public.len() == PUBLIC_ID_HEX
        && public.bytes().all(|b| b.is_ascii_hexdigit())
        && secret.len() == 43
        && secret
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    shape_ok.then(|| &presented[..KEY_TAG.len() + PUBLIC_ID_HEX])
}

/// Whether `presented` hashes to `stored_hash`, compared in constant time.
pub fn verify_key(presented: &SecretString, stored_hash: &[u8; 32]) -> bool {
    let h = hash_key(presented.expose_secret());
    h.ct_eq(stored_hash).into()
}

/// Compares two secrets (e.g. the operator key) in constant time with
/// respect to their contents (hashing first hides their lengths too).
pub fn secrets_equal(a: &SecretString, b: &SecretString) -> bool {
    hash_key(a.expose_secret())
        .ct_eq(&hash_key(b.expose_secret()))
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_have_the_documented_shape_and_verify() {
        let k = generate_key();
        let s = k.secret.expose_secret();
        assert_eq!(key_prefix(s), Some(k.prefix.as_str()));
        assert!(s.starts_with("cc_"));
        assert_eq!(s.len(), 3 + 16 + 1 + 43);
        assert!(verify_key(&k.secret, &k.hash));
        let mut wrong = s.to_string();
        wrong.pop();
        wrong.push(if s.ends_with('A') { 'B' } else { 'A' });
        assert!(!verify_key(&SecretString::from(wrong), &k.hash));
    }

    #[test]
    fn keys_are_unique() {
        let a = generate_key();
        let b = generate_key();
        assert_ne!(a.prefix, b.prefix);
        assert_ne!(a.hash, b.hash);
    }

    #[test]
    fn debug_redacts_the_secret() {
        let k = generate_key();
        let dbg = format!("{k:?}");
        assert!(!dbg.contains(k.secret.expose_secret()));
        assert!(dbg.contains(&k.prefix));
        assert!(!format!("{:?}", k.secret).contains(k.secret.expose_secret()));
    }

    #[test]
    fn malformed_keys_have_no_prefix() {
        for bad in [
            "",
            "cc_",
            "sk-abc",
            "cc_zzzzzzzzzzzzzzzz_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            "cc_0123456789abcdef_short",
        ] {
            assert_eq!(key_prefix(bad), None, "{bad}");
        }
    }

    #[test]
    fn secrets_equal_compares_contents() {
        assert!(secrets_equal(
            &"op".to_string().into(),
            &"op".to_string().into()
        ));
        assert!(!secrets_equal(
            &"op".to_string().into(),
            &"oq".to_string().into()
        ));
    }
}

/// A verified caller: the API key and its tenant, as of the last lookup.
#[derive(Debug, Clone)]
pub struct Principal {
    /// The key.
    pub key: crate::domain::ApiKey,
    /// Its tenant.
    pub tenant: crate::domain::Tenant,
}

/// Why a presented key was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// Absent, malformed, unknown, wrong, revoked or expired: one answer
    /// for all, so a caller learns nothing about which.
    #[error("invalid API key")]
    InvalidKey,
    /// The key's tenant is suspended.
    #[error("tenant is suspended")]
    TenantSuspended,
    /// The store failed; its error is the `source()`.
    #[error("authentication unavailable")]
    Unavailable(#[source] crate::error::Cause),
}

/// Verifies API keys, with an in-process cache of verified keys.
///
/// The cache is keyed by the SHA-256 of the presented key (never the key)
/// and holds an entry for at most `ttl`. A revocation, a tenant suspension
/// or a tenant change made through this instance invalidates the entries at
/// once ([`Authenticator::invalidate_key`], [`Authenticator::invalidate_tenant`]);
/// one made through another instance is seen here within `ttl`. Clones
/// share the cache.
#[derive(Clone)]
pub struct Authenticator {
    /// Only the tenants-and-keys part of the store.
    store: std::sync::Arc<dyn crate::store::TenantStore>,
    ttl: std::time::Duration,
    cache: crate::cache::TtlCache<[u8; 32], std::sync::Arc<Principal>>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl Authenticator {
    /// Default cache lifetime of a verified key.
    pub const DEFAULT_TTL: std::time::Duration = std::time::Duration::from_secs(5);

    /// An authenticator over `store` caching verified keys for `ttl`.
    pub fn new(
        store: std::sync::Arc<dyn crate::store::TenantStore>,
        ttl: std::time::Duration,
    ) -> Self {
        Self {
            store,
            ttl,
            cache: crate::cache::TtlCache::new(ttl, 100_000),
        }
    }

    /// The principal behind a presented key, if the key is genuine and
    /// usable and its tenant active.
    pub async fn authenticate(
        &self,
        presented: &SecretString,
    ) -> Result<std::sync::Arc<Principal>, AuthError> {
        let digest = hash_key(presented.expose_secret());
        let cached = self.cache.get(&digest);
        let principal = match cached {
            Some(p) => p,
            None => {
                let key = self
                    .store
                    .find_api_key_by_secret(presented)
                    .await
                    .map_err(|e| AuthError::Unavailable(crate::error::Cause::new(e)))?
                    .ok_or(AuthError::InvalidKey)?;
                let tenant = match self.store.get_tenant(key.tenant_id).await {
                    Ok(t) => t,
                    Err(crate::store::StoreError::NotFound(_)) => {
                        return Err(AuthError::InvalidKey);
                    }
                    Err(e) => return Err(AuthError::Unavailable(crate::error::Cause::new(e))),
                };
                let p = std::sync::Arc::new(Principal { key, tenant });
                self.cache.insert(digest, p.clone());
                p
            }
        };
        if !principal.key.is_usable_at(crate::domain::now()) {
            return Err(AuthError::InvalidKey);
        }
        if principal.tenant.status != crate::domain::TenantStatus::Active {
            return Err(AuthError::TenantSuspended);
        }
        Ok(principal)
    }

    /// Forgets a key (after a revocation or change).
    pub fn invalidate_key(&self, id: crate::domain::ApiKeyId) {
        self.cache.remove_where(|_, p| p.key.id == id);
    }

    /// Forgets every key of a tenant (after a suspension or limit change).
    pub fn invalidate_tenant(&self, id: crate::domain::TenantId) {
        self.cache.remove_where(|_, p| p.tenant.id == id);
    }
}
