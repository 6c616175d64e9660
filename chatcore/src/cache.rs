//! The TTL cache for hot lookups (verified keys, bots with their guardrails
//! and providers). Entries expire after the TTL and are invalidated at once
//! by changes made through this instance.
//!
//! It is [moka](https://docs.rs/moka)'s `sync::Cache` (issue 12 item 4):
//! bounded (TinyLFU admission and LRU eviction instead of the hand-written
//! map that cleared itself when full), with reads that take no lock, so the
//! turns of many threads looking up the same bot do not queue on one
//! `RwLock`. What stayed ours is this thin wrapper: the `get` / `insert` /
//! `remove_where` API the engine and the authenticator use, and the choice
//! to invalidate by iterating (see [`TtlCache::remove_where`]).

use std::hash::Hash;
use std::time::Duration;

/// A map whose entries live at most `ttl`, holding at most `max_entries`.
///
/// Clones share the entries: a clone handed to another service sees (and
/// invalidates) the same cache.
#[derive(Clone)]
pub struct TtlCache<K, V> {
    inner: moka::sync::Cache<K, V>,
}

impl<K, V> std::fmt::Debug for TtlCache<K, V>
where
    K: Eq + Hash + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TtlCache")
            .field("ttl", &self.inner.policy().time_to_live())
            .field("max_entries", &self.inner.policy().max_capacity())
            .finish_non_exhaustive()
    }
}

impl<K, V> TtlCache<K, V>
where
    K: Eq + Hash + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// An empty cache.
    pub fn new(ttl: Duration, max_entries: usize) -> Self {
        Self {
            inner: moka::sync::Cache::builder()
                .max_capacity(max_entries as u64)
                .time_to_live(ttl)
                .build(),
        }
    }

    /// A fresh entry, if any.
    pub fn get(&self, k: &K) -> Option<V> {
        self.inner.get(k)
    }

    /// Inserts or replaces an entry.
    pub fn insert(&self, k: K, v: V) {
        self.inner.insert(k, v);
    }

    /// Removes the entries matching `pred`; none of them is returned by
    /// [`TtlCache::get`] once this returns.
    ///
    /// It iterates and invalidates rather than registering the predicate
    /// with moka's `invalidate_entries_if`: that one needs the cache built
    /// with `support_invalidation_closures()`, keeps the predicates until a
    /// background sweep has run, and may fail when too many are pending.
    /// Invalidations are rare (a management change) and the caches small,
    /// so one pass over the entries is the simpler guarantee.
    pub fn remove_where(&self, pred: impl Fn(&K, &V) -> bool) {
        for (k, v) in self.inner.iter() {
            if pred(&k, &v) {
                self.inner.invalidate(&*k);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remove_where_removes_only_the_matches_and_clones_share() {
        let c = TtlCache::new(Duration::from_secs(60), 100);
        let shared = c.clone();
        for i in 0..10 {
            c.insert(i, i * 10);
        }
        shared.remove_where(|k, _| k % 2 == 0);
        for i in 0..10 {
            assert_eq!(c.get(&i).is_some(), i % 2 == 1, "key {i}");
        }
        shared.remove_where(|_, v| *v == 30);
        assert_eq!(c.get(&3), None);
        assert_eq!(c.get(&5), Some(50));
    }

    #[test]
    fn it_stays_bounded() {
        let c = TtlCache::new(Duration::from_secs(60), 50);
        for i in 0..1_000 {
            c.insert(i, i);
        }
        c.inner.run_pending_tasks();
        assert!(c.inner.entry_count() <= 50, "{}", c.inner.entry_count());
    }
}
