//! The `SnapshotScheduler` port: hands "take a snapshot of this entity at this version" to
//! whatever runs snapshots in the background, without waiting for it.
//!
//! The automatic snapshot trigger calls it from inside an append (after the store
//! acknowledged), so an implementation must return at once: it may queue the job, merge it with
//! one already waiting for the same entity, or drop it when its queue is full. Snapshots are an
//! optimisation; losing one only means a later read folds more events.

use allsource_domain::{EntityId, TenantId, Version};

/// Runs snapshot jobs in the background.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
pub trait SnapshotScheduler: Send + Sync {
    /// Asks for a snapshot of `entity_id` folded up to `version`. Never blocks, never fails:
    /// returns `false` when the job was dropped (queue full or scheduler stopped).
    fn schedule(&self, tenant: &TenantId, entity_id: &EntityId, version: Version) -> bool;
}
