//! A small TTL cache for hot lookups (bots with their guardrails and
//! providers). Entries expire after the TTL and are invalidated at once by
//! changes made through this instance.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::RwLock;
use std::time::{Duration, Instant};

/// A map whose entries live at most `ttl`.
#[derive(Debug)]
pub struct TtlCache<K, V> {
    ttl: Duration,
    map: RwLock<HashMap<K, (V, Instant)>>,
    max_entries: usize,
}

impl<K: Eq + Hash + Clone, V: Clone> TtlCache<K, V> {
    /// An empty cache.
    pub fn new(ttl: Duration, max_entries: usize) -> Self {
        Self {
            ttl,
            map: RwLock::new(HashMap::new()),
            max_entries,
        }
    }

    /// A fresh entry, if any.
    pub fn get(&self, k: &K) -> Option<V> {
        let map = self.map.read().expect("cache lock poisoned");
        map.get(k)
            .filter(|(_, at)| at.elapsed() < self.ttl)
            .map(|(v, _)| v.clone())
    }

    /// Inserts or replaces an entry.
    pub fn insert(&self, k: K, v: V) {
        let mut map = self.map.write().expect("cache lock poisoned");
        if map.len() >= self.max_entries {
            let ttl = self.ttl;
            map.retain(|_, (_, at)| at.elapsed() < ttl);
            if map.len() >= self.max_entries {
                map.clear();
            }
        }
        map.insert(k, (v, Instant::now()));
    }

    /// Removes the entries matching `pred`.
    pub fn remove_where(&self, pred: impl Fn(&K, &V) -> bool) {
        self.map
            .write()
            .expect("cache lock poisoned")
            .retain(|k, (v, _)| !pred(k, v));
    }
}
