//! The `StateStore` port: a small durable key-value store for state derived from events
//! (projection state and checkpoints, snapshots, registries). Keys live in a namespace of a
//! tenant; values are JSON with a version that counts writes, for optimistic concurrency.
//!
//! # Contract (checked by the state-store contract suite for every adapter)
//! - `put` with `expected: None` always writes; with `Some(v)` it writes only if the current
//!   version is `v` (0 = the key must not exist), else `StateError::VersionConflict`.
//! - Versions start at 1 and grow by one per write of a key; a delete resets the key.
//! - `list` returns keys in ascending order, after the `after` cursor, at most `limit`.
//! - Tenants and namespaces never see each other's keys.
//! - A successful `put`/`delete` is durable under the adapter's durability.

use async_trait::async_trait;
use serde_json::Value;

use allsource_domain::TenantId;

/// A stored value with its version.
#[derive(Debug, Clone, PartialEq)]
pub struct StateEntry {
    pub value: Value,
    /// Number of writes of the key since it was created (≥ 1).
    pub version: u64,
}

/// Why a state-store call failed.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The key's version was not the expected one; nothing written.
    #[error("state version conflict: expected {expected}, current {current}")]
    VersionConflict { expected: u64, current: u64 },
    /// Storage cannot answer now.
    #[error("state storage unavailable: {0}")]
    Unavailable(String),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

/// Durable key-value state, partitioned by tenant and namespace.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait StateStore: Send + Sync {
    /// The entry under the key, if any.
    ///
    /// # Errors
    /// `Unavailable`/`Internal` only.
    async fn get(
        &self,
        tenant: &TenantId,
        namespace: &str,
        key: &str,
    ) -> Result<Option<StateEntry>, StateError>;

    /// Writes the value and returns the key's new version.
    ///
    /// # Errors
    /// [`StateError::VersionConflict`] when `expected` is given and does not hold.
    async fn put(
        &self,
        tenant: &TenantId,
        namespace: &str,
        key: &str,
        value: Value,
        expected: Option<u64>,
    ) -> Result<u64, StateError>;

    /// Removes the key; `true` if it existed.
    ///
    /// # Errors
    /// `Unavailable`/`Internal` only.
    async fn delete(
        &self,
        tenant: &TenantId,
        namespace: &str,
        key: &str,
    ) -> Result<bool, StateError>;

    /// Keys of the namespace in ascending order, starting after `after`, at most `limit`,
    /// optionally only those starting with `prefix`.
    ///
    /// # Errors
    /// `Unavailable`/`Internal` only.
    async fn list(
        &self,
        tenant: &TenantId,
        namespace: &str,
        prefix: Option<String>,
        after: Option<String>,
        limit: usize,
    ) -> Result<Vec<(String, StateEntry)>, StateError>;
}
