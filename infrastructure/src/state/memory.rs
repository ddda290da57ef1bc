//! `MemoryStateStore`, and [`StateMap`], the versioned map both it and the file store use.

use std::collections::BTreeMap;

use allsource_application::ports::{StateEntry, StateError, StateStore};
use allsource_domain::TenantId;
use async_trait::async_trait;
use parking_lot::RwLock;
use serde_json::Value;

/// (tenant, namespace, key).
pub type StateKey = (String, String, String);

/// A versioned map with the port's rules (versions, expectations, ordered listing).
#[derive(Debug, Default)]
pub struct StateMap {
    entries: BTreeMap<StateKey, StateEntry>,
}

impl StateMap {
    pub fn key(tenant: &TenantId, namespace: &str, key: &str) -> StateKey {
        (
            tenant.as_str().to_owned(),
            namespace.to_owned(),
            key.to_owned(),
        )
    }

    pub fn get(&self, key: &StateKey) -> Option<&StateEntry> {
        self.entries.get(key)
    }

    /// The version a write would give the key.
    ///
    /// # Errors
    /// `VersionConflict` when `expected` does not hold.
    pub fn next_version(&self, key: &StateKey, expected: Option<u64>) -> Result<u64, StateError> {
        let current = self.entries.get(key).map_or(0, |e| e.version);
        match expected {
            Some(expected) if expected != current => {
                Err(StateError::VersionConflict { expected, current })
            }
            _ => Ok(current + 1),
        }
    }

    /// Stores an entry as is (the version was decided by [`next_version`](Self::next_version)
    /// or comes from a replayed log).
    pub fn set(&mut self, key: StateKey, entry: StateEntry) {
        self.entries.insert(key, entry);
    }

    pub fn remove(&mut self, key: &StateKey) -> bool {
        self.entries.remove(key).is_some()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&StateKey, &StateEntry)> {
        self.entries.iter()
    }

    pub fn list(
        &self,
        tenant: &TenantId,
        namespace: &str,
        prefix: Option<&str>,
        after: Option<&str>,
        limit: usize,
    ) -> Vec<(String, StateEntry)> {
        // Keys sharing a prefix are contiguous in key order: start at the later of `after` and
        // the prefix and stop at the first key without it, so a lookup by prefix (the newest
        // snapshot of one entity, on every state read) costs its matches, not the namespace.
        let from = match (after, prefix) {
            (Some(a), Some(p)) => a.max(p),
            (Some(a), None) => a,
            (None, Some(p)) => p,
            (None, None) => "",
        };
        self.entries
            .range(Self::key(tenant, namespace, from)..)
            .take_while(|((t, n, k), _)| {
                t == tenant.as_str() && n == namespace && prefix.is_none_or(|p| k.starts_with(p))
            })
            .filter(|((_, _, k), _)| after.is_none_or(|a| k.as_str() > a))
            .take(limit)
            .map(|((_, _, k), e)| (k.clone(), e.clone()))
            .collect()
    }
}

/// State kept in memory only.
#[derive(Debug, Default)]
pub struct MemoryStateStore {
    map: RwLock<StateMap>,
}

impl MemoryStateStore {
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl StateStore for MemoryStateStore {
    async fn get(
        &self,
        tenant: &TenantId,
        namespace: &str,
        key: &str,
    ) -> Result<Option<StateEntry>, StateError> {
        Ok(self
            .map
            .read()
            .get(&StateMap::key(tenant, namespace, key))
            .cloned())
    }

    async fn put(
        &self,
        tenant: &TenantId,
        namespace: &str,
        key: &str,
        value: Value,
        expected: Option<u64>,
    ) -> Result<u64, StateError> {
        let mut map = self.map.write();
        let key = StateMap::key(tenant, namespace, key);
        let version = map.next_version(&key, expected)?;
        map.set(key, StateEntry { value, version });
        Ok(version)
    }

    async fn delete(
        &self,
        tenant: &TenantId,
        namespace: &str,
        key: &str,
    ) -> Result<bool, StateError> {
        Ok(self
            .map
            .write()
            .remove(&StateMap::key(tenant, namespace, key)))
    }

    async fn list(
        &self,
        tenant: &TenantId,
        namespace: &str,
        prefix: Option<String>,
        after: Option<String>,
        limit: usize,
    ) -> Result<Vec<(String, StateEntry)>, StateError> {
        Ok(self.map.read().list(
            tenant,
            namespace,
            prefix.as_deref(),
            after.as_deref(),
            limit,
        ))
    }
}
