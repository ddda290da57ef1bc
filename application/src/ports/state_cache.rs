//! The `EntityStateCache` port: entity states already folded, kept in memory so that a state
//! read folds only the events appended since.
//!
//! A cached state at version `v` is an immutable fact (events never change), so the cache can
//! never make a read stale: the use case always asks the store for the events after `v`.

use std::sync::Arc;

use allsource_domain::{EntityId, EntityState, TenantId};

/// Folded entity states by (tenant, entity).
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
pub trait EntityStateCache: Send + Sync {
    /// The latest state cached for the entity, if any.
    fn get(&self, tenant: &TenantId, entity_id: &EntityId) -> Option<Arc<EntityState>>;
    /// Remembers a state (replacing an older one).
    fn put(&self, tenant: &TenantId, state: Arc<EntityState>);
}

/// A cache that keeps nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoStateCache;

impl EntityStateCache for NoStateCache {
    fn get(&self, _tenant: &TenantId, _entity_id: &EntityId) -> Option<Arc<EntityState>> {
        None
    }

    fn put(&self, _tenant: &TenantId, _state: Arc<EntityState>) {}
}
