//! Snapshots: an entity's folded state at a version, kept durably so that state reads fold only
//! the events after it.
//!
//! A snapshot is a fact: the fold of versions `1..=v` of an immutable stream never changes, so a
//! snapshot can never be stale, only old. Reads start from the newest snapshot at or before the
//! point asked for (for `as_of`: whose last folded event has `timestamp <= as_of`) and fold the
//! tail; the answer equals a full fold (property-tested in this module).
//!
//! # Storage
//! Snapshots live in the [`StateStore`] under namespace [`NAMESPACE`], key
//! `<escaped entity id>/<version, 20 digits>`, so that listing with the prefix
//! `<escaped entity id>/` gives one entity's snapshots in version order, and listing the
//! namespace gives all of a tenant's snapshots by entity, then version. The entity id is escaped
//! (`%` → `%25`, `/` → `%2F`) so that no entity's prefix is the prefix of another's keys.
//!
//! # Policy
//! - Manual: `POST /api/v1/snapshots` ([`Snapshots::create`]), optionally at an `as_of` time.
//! - Automatic: [`SnapshotTrigger`], an [`AppendGuard`], sees every acknowledged event and, when
//!   an entity's version reaches a multiple of `every_n_events`, asks the
//!   [`SnapshotScheduler`] for a snapshot at exactly that version. The append never waits for it
//!   and never fails because of it. [`BackgroundSnapshots`] is the scheduler: a bounded,
//!   deduplicating queue worked off by one tokio task.
//! - After every snapshot written, only the `keep_per_entity` newest (by version) are kept.
//! - A snapshot store that cannot answer never fails a state read: the read folds everything.

use std::sync::Arc;

use allsource_domain::{EntityId, EntityState, Event, Position, TenantId, Version};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::append::AppendGuard;
use super::params::{self, Errors, FieldError};
use crate::Caller;
use crate::ports::{
    AppendReceipt, Clock, EventStore, SnapshotScheduler, StateEntry, StateError, StateStore,
    StorageFailure, StoreError, StreamRange,
};

/// The state-store namespace of snapshots.
pub const NAMESPACE: &str = "snapshots";
/// Page size of snapshot listings when the client gives none.
pub const DEFAULT_SNAPSHOT_LIMIT: usize = 100;
/// Largest page of snapshots a client may ask for.
pub const MAX_SNAPSHOT_LIMIT: usize = 1000;
/// Keys listed per state-store call when reading one entity's snapshots.
const LIST_CHUNK: usize = 256;

/// How a snapshot came to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotOrigin {
    /// `POST /api/v1/snapshots`.
    Manual,
    /// Every `snapshots.every_n_events` events of the entity.
    Automatic,
}

impl SnapshotOrigin {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Manual => "manual",
            Self::Automatic => "automatic",
        }
    }

    fn parse(raw: &str) -> Option<Self> {
        match raw {
            "manual" => Some(Self::Manual),
            "automatic" => Some(Self::Automatic),
            _ => None,
        }
    }
}

/// An entity's state folded up to a version, with where that version is in the log.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// The folded state: entity, version and timestamp (`last_updated`) of the last event
    /// folded, number of events, the state itself.
    pub state: EntityState,
    /// Position of the last event folded.
    pub position: Position,
    pub created_at: DateTime<Utc>,
    pub origin: SnapshotOrigin,
}

/// The persisted form of a snapshot (the state store's value).
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredSnapshot {
    /// Format version of this record.
    format: u32,
    entity_id: String,
    version: u64,
    event_count: u64,
    position: u64,
    last_event_at: DateTime<Utc>,
    created_at: DateTime<Utc>,
    origin: String,
    state: Value,
}

const FORMAT: u32 = 1;

impl Snapshot {
    fn to_value(&self) -> Result<Value, StateError> {
        let stored = StoredSnapshot {
            format: FORMAT,
            entity_id: self.state.entity_id.as_str().to_owned(),
            version: self.state.version.get(),
            event_count: self.state.event_count,
            position: self.position.get(),
            last_event_at: self.state.last_updated,
            created_at: self.created_at,
            origin: self.origin.as_str().to_owned(),
            state: self.state.state.clone(),
        };
        serde_json::to_value(stored).map_err(|e| StateError::Internal(e.into()))
    }

    /// `None` for a value that is not a snapshot of this format (skipped, never fatal).
    fn from_value(value: Value) -> Option<Self> {
        let stored: StoredSnapshot = serde_json::from_value(value).ok()?;
        if stored.format != FORMAT {
            return None;
        }
        Some(Self {
            state: EntityState {
                entity_id: EntityId::parse(&stored.entity_id).ok()?,
                version: Version::new(stored.version),
                event_count: stored.event_count,
                last_updated: stored.last_event_at,
                state: stored.state,
            },
            position: Position::new(stored.position),
            created_at: stored.created_at,
            origin: SnapshotOrigin::parse(&stored.origin)?,
        })
    }
}

/// Escapes an entity id for use in a key: no `/` left, and `%` escaped so it stays reversible.
fn escape(entity_id: &EntityId) -> String {
    let raw = entity_id.as_str();
    if !raw.contains(['%', '/']) {
        return raw.to_owned();
    }
    raw.replace('%', "%25").replace('/', "%2F")
}

fn prefix(entity_id: &EntityId) -> String {
    format!("{}/", escape(entity_id))
}

fn key(entity_id: &EntityId, version: Version) -> String {
    format!("{}/{:020}", escape(entity_id), version.get())
}

/// Snapshots over the [`StateStore`]: the storage rules (keys, format, pruning) in one place,
/// shared by the snapshot use cases and the entity-state read.
#[derive(Clone)]
pub struct SnapshotArchive {
    store: Arc<dyn StateStore>,
}

impl SnapshotArchive {
    pub fn new(store: Arc<dyn StateStore>) -> Self {
        Self { store }
    }

    /// The entity's stored entries, in key (= version) order.
    async fn entries(
        &self,
        tenant: &TenantId,
        entity_id: &EntityId,
    ) -> Result<Vec<(String, StateEntry)>, StateError> {
        let prefix = prefix(entity_id);
        let mut after = None;
        let mut found = Vec::new();
        loop {
            let chunk = self
                .store
                .list(
                    tenant,
                    NAMESPACE,
                    Some(prefix.clone()),
                    after.take(),
                    LIST_CHUNK,
                )
                .await?;
            let full = chunk.len() == LIST_CHUNK;
            after = chunk.last().map(|(key, _)| key.clone());
            found.extend(chunk);
            if !full {
                break;
            }
        }
        Ok(found)
    }

    /// All of the entity's snapshots, in version order. Values that are not snapshots of this
    /// entity are skipped.
    ///
    /// # Errors
    /// The state store's.
    pub async fn all(
        &self,
        tenant: &TenantId,
        entity_id: &EntityId,
    ) -> Result<Vec<Snapshot>, StateError> {
        let mut found: Vec<Snapshot> = self
            .entries(tenant, entity_id)
            .await?
            .into_iter()
            .filter_map(|(_, entry)| Snapshot::from_value(entry.value))
            .filter(|s| s.state.entity_id == *entity_id)
            .collect();
        found.sort_by_key(|s| s.state.version);
        Ok(found)
    }

    /// The newest snapshot with `version <= max_version` (when given) and whose last folded
    /// event has `timestamp <= as_of` (when given).
    ///
    /// # Errors
    /// The state store's.
    pub async fn newest(
        &self,
        tenant: &TenantId,
        entity_id: &EntityId,
        max_version: Option<Version>,
        as_of: Option<DateTime<Utc>>,
    ) -> Result<Option<Snapshot>, StateError> {
        // Newest first; only the entries tried are parsed.
        Ok(self
            .entries(tenant, entity_id)
            .await?
            .into_iter()
            .rev()
            .filter_map(|(_, entry)| Snapshot::from_value(entry.value))
            .find(|s| {
                s.state.entity_id == *entity_id
                    && max_version.is_none_or(|max| s.state.version <= max)
                    && as_of.is_none_or(|t| s.state.last_updated <= t)
            }))
    }

    /// Writes the snapshot (replacing one at the same version), then removes all but the
    /// `keep` newest of the entity.
    ///
    /// # Errors
    /// The state store's.
    pub async fn save(
        &self,
        tenant: &TenantId,
        snapshot: &Snapshot,
        keep: usize,
    ) -> Result<(), StateError> {
        let entity_id = &snapshot.state.entity_id;
        self.store
            .put(
                tenant,
                NAMESPACE,
                &key(entity_id, snapshot.state.version),
                snapshot.to_value()?,
                None,
            )
            .await?;
        let all = self.all(tenant, entity_id).await?;
        let excess = all.len().saturating_sub(keep.max(1));
        for old in &all[..excess] {
            self.store
                .delete(tenant, NAMESPACE, &key(entity_id, old.state.version))
                .await?;
        }
        Ok(())
    }

    /// A page of snapshots (one entity's, or the tenant's), by key, after the cursor.
    async fn page(
        &self,
        tenant: &TenantId,
        entity_id: Option<&EntityId>,
        after: Option<String>,
        limit: usize,
    ) -> Result<(Vec<Snapshot>, Option<String>), StateError> {
        let chunk = self
            .store
            .list(tenant, NAMESPACE, entity_id.map(prefix), after, limit + 1)
            .await?;
        let has_more = chunk.len() > limit;
        let mut last_key = None;
        let mut snapshots = Vec::with_capacity(chunk.len().min(limit));
        for (key, entry) in chunk.into_iter().take(limit) {
            if let Some(snapshot) = Snapshot::from_value(entry.value)
                && entity_id.is_none_or(|e| *e == snapshot.state.entity_id)
            {
                snapshots.push(snapshot);
            }
            last_key = Some(key);
        }
        Ok((snapshots, last_key.filter(|_| has_more)))
    }
}

/// A fold of an entity up to a point.
pub(crate) struct Folded {
    pub state: EntityState,
    /// Position of the last event folded.
    pub position: Position,
}

/// Folds the entity's events with `version <= to_version` and `timestamp <= as_of`, starting
/// from the newest usable snapshot when an archive is given. A snapshot store that fails is
/// ignored (the fold starts from the first event). `None` when no event is in range.
pub(crate) async fn fold_from_snapshot(
    events: &dyn EventStore,
    archive: Option<&SnapshotArchive>,
    tenant: &TenantId,
    entity_id: &EntityId,
    to_version: Option<Version>,
    as_of: Option<DateTime<Utc>>,
) -> Result<Option<Folded>, StoreError> {
    let base = match archive {
        Some(archive) => archive
            .newest(tenant, entity_id, to_version, as_of)
            .await
            .unwrap_or(None),
        None => None,
    };
    let from_version = base.as_ref().map_or(1, |s| s.state.version.get() + 1);
    let range = StreamRange {
        from_version,
        to_version: to_version.map(Version::get),
        limit: None,
    };
    let mut tail = if to_version.is_some_and(|to| to.get() < from_version) {
        Vec::new()
    } else {
        events.read_stream(tenant, entity_id, range).await?
    };
    if let Some(as_of) = as_of {
        // Timestamps never decrease along a stream: the events at `as_of` are a prefix.
        let visible = tail.partition_point(|e| e.timestamp <= as_of);
        tail.truncate(visible);
    }
    Ok(fold_tail(base, &tail))
}

fn fold_tail(base: Option<Snapshot>, tail: &[Arc<Event>]) -> Option<Folded> {
    let position = tail.last().map(|e| e.position);
    match base {
        Some(snapshot) => {
            let mut state = snapshot.state;
            for event in tail {
                state.apply(event);
            }
            Some(Folded {
                state,
                position: position.unwrap_or(snapshot.position),
            })
        }
        None => Some(Folded {
            state: EntityState::fold(tail.iter().map(AsRef::as_ref))?,
            position: position?,
        }),
    }
}

/// Why a snapshot call failed.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// 400: invalid input.
    #[error("invalid snapshot request")]
    Invalid(Vec<FieldError>),
    /// 404: no such entity (at `as_of`), or no snapshot of it.
    #[error("{0}")]
    NotFound(String),
    /// 503: the event store or the snapshot store cannot answer now.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// 500.
    #[error(transparent)]
    Internal(anyhow::Error),
}

impl StorageFailure for SnapshotError {
    fn unavailable(why: String) -> Self {
        Self::Unavailable(why)
    }
    fn internal(error: anyhow::Error) -> Self {
        Self::Internal(error)
    }
    // No snapshot write asks for a version, so a conflict is a bug (the default, 500).
}

crate::storage_errors!(SnapshotError);

impl From<Errors> for SnapshotError {
    fn from(e: Errors) -> Self {
        Self::Invalid(e.0)
    }
}

/// When snapshots are taken and how many are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotPolicy {
    /// Take one automatically every this many events of an entity; 0 = never.
    pub every_n_events: u64,
    /// Keep this many newest snapshots per entity (at least 1).
    pub keep_per_entity: usize,
}

impl Default for SnapshotPolicy {
    fn default() -> Self {
        Self {
            every_n_events: 100,
            keep_per_entity: 3,
        }
    }
}

/// Raw body of `POST /api/v1/snapshots`.
#[derive(Debug, Default, Clone)]
pub struct CreateSnapshotInput {
    pub entity_id: String,
    /// Snapshot the state as it was at this time (RFC 3339) instead of now.
    pub as_of: Option<String>,
}

/// Raw parameters of `GET /api/v1/snapshots`.
#[derive(Debug, Default, Clone)]
pub struct ListSnapshotsInput {
    pub entity_id: Option<String>,
    /// The `next_cursor` of the previous page.
    pub after: Option<String>,
    pub limit: Option<String>,
}

/// A page of snapshots.
#[derive(Debug, Clone, PartialEq)]
pub struct SnapshotPage {
    pub snapshots: Vec<Snapshot>,
    /// Where the next page starts; `None` on the last page.
    pub next_cursor: Option<String>,
}

/// The snapshot use cases.
#[derive(Clone)]
pub struct Snapshots {
    events: Arc<dyn EventStore>,
    archive: SnapshotArchive,
    clock: Arc<dyn Clock>,
    policy: SnapshotPolicy,
}

impl Snapshots {
    pub fn new(
        events: Arc<dyn EventStore>,
        state: Arc<dyn StateStore>,
        clock: Arc<dyn Clock>,
        policy: SnapshotPolicy,
    ) -> Self {
        Self {
            events,
            archive: SnapshotArchive::new(state),
            clock,
            policy,
        }
    }

    pub fn policy(&self) -> SnapshotPolicy {
        self.policy
    }

    pub fn archive(&self) -> &SnapshotArchive {
        &self.archive
    }

    /// `POST /api/v1/snapshots`: snapshots the entity's current state (or its state at
    /// `as_of`). Starts from the newest earlier snapshot itself.
    ///
    /// # Errors
    /// `Invalid` for a bad entity id or time, `NotFound` when the entity has no events (at
    /// `as_of`), `Unavailable` when a store cannot answer.
    pub async fn create(
        &self,
        caller: &Caller,
        input: CreateSnapshotInput,
    ) -> Result<Snapshot, SnapshotError> {
        let mut errors = Errors::default();
        let entity_id = errors.check("entity_id", EntityId::parse(&input.entity_id));
        let as_of = errors.optional("as_of", input.as_of.as_deref(), params::timestamp);
        let Some(entity_id) = entity_id.filter(|_| errors.is_empty()) else {
            return Err(errors.into());
        };
        self.take(
            caller.tenant(),
            &entity_id,
            None,
            as_of,
            SnapshotOrigin::Manual,
        )
        .await?
        .ok_or_else(|| {
            SnapshotError::NotFound(match as_of {
                Some(t) => format!(
                    "entity '{entity_id}' has no events at {}",
                    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
                ),
                None => format!("entity '{entity_id}' has no events"),
            })
        })
    }

    /// The automatic snapshot of `entity_id` at exactly `version` (the background job the
    /// [`SnapshotTrigger`] schedules). `None` when the entity has no such version.
    ///
    /// # Errors
    /// `Unavailable`/`Internal` from the stores.
    pub async fn take_automatic(
        &self,
        tenant: &TenantId,
        entity_id: &EntityId,
        version: Version,
    ) -> Result<Option<Snapshot>, SnapshotError> {
        self.take(
            tenant,
            entity_id,
            Some(version),
            None,
            SnapshotOrigin::Automatic,
        )
        .await
    }

    async fn take(
        &self,
        tenant: &TenantId,
        entity_id: &EntityId,
        to_version: Option<Version>,
        as_of: Option<DateTime<Utc>>,
        origin: SnapshotOrigin,
    ) -> Result<Option<Snapshot>, SnapshotError> {
        let Some(folded) = fold_from_snapshot(
            self.events.as_ref(),
            Some(&self.archive),
            tenant,
            entity_id,
            to_version,
            as_of,
        )
        .await?
        else {
            return Ok(None);
        };
        if to_version.is_some_and(|v| v != folded.state.version) {
            // The stream is shorter than asked (cannot happen for acknowledged versions).
            return Ok(None);
        }
        let snapshot = Snapshot {
            state: folded.state,
            position: folded.position,
            created_at: self.clock.now(),
            origin,
        };
        self.archive
            .save(tenant, &snapshot, self.policy.keep_per_entity)
            .await?;
        Ok(Some(snapshot))
    }

    /// `GET /api/v1/snapshots`: the tenant's snapshots (or one entity's), ordered by entity id
    /// then version, paged with an opaque cursor.
    ///
    /// # Errors
    /// `Invalid` for bad parameters, `Unavailable` when the snapshot store cannot answer.
    pub async fn list(
        &self,
        caller: &Caller,
        input: ListSnapshotsInput,
    ) -> Result<SnapshotPage, SnapshotError> {
        let mut errors = Errors::default();
        let entity_id = errors.optional("entity_id", input.entity_id.as_deref(), EntityId::parse);
        let limit = errors
            .optional("limit", input.limit.as_deref(), |raw| {
                params::limit(raw, MAX_SNAPSHOT_LIMIT)
            })
            .unwrap_or(DEFAULT_SNAPSHOT_LIMIT);
        let after = input.after.filter(|a| !a.is_empty());
        if let (Some(entity), Some(after)) = (&entity_id, &after)
            && !after.starts_with(&prefix(entity))
        {
            errors.push("after", "is not a cursor of this entity's snapshots");
        }
        if !errors.is_empty() {
            return Err(errors.into());
        }
        let (snapshots, next_cursor) = self
            .archive
            .page(caller.tenant(), entity_id.as_ref(), after, limit)
            .await?;
        Ok(SnapshotPage {
            snapshots,
            next_cursor,
        })
    }

    /// `GET /api/v1/snapshots/{entity_id}/latest`.
    ///
    /// # Errors
    /// `Invalid` for a bad entity id, `NotFound` when the entity has no snapshot.
    pub async fn latest(
        &self,
        caller: &Caller,
        raw_entity: &str,
    ) -> Result<Snapshot, SnapshotError> {
        let mut errors = Errors::default();
        let Some(entity_id) = errors.check("entity_id", EntityId::parse(raw_entity)) else {
            return Err(errors.into());
        };
        self.archive
            .newest(caller.tenant(), &entity_id, None, None)
            .await?
            .ok_or_else(|| SnapshotError::NotFound(format!("entity '{entity_id}' has no snapshot")))
    }
}

/// The automatic trigger: an [`AppendGuard`] that schedules a snapshot whenever an appended
/// event's version is a multiple of `every_n_events`. Each version is acknowledged once, so
/// each multiple is scheduled once (duplicates, i.e. retries, are ignored).
pub struct SnapshotTrigger {
    every_n_events: u64,
    scheduler: Arc<dyn SnapshotScheduler>,
}

impl SnapshotTrigger {
    /// `every_n_events = 0` never schedules anything.
    pub fn new(every_n_events: u64, scheduler: Arc<dyn SnapshotScheduler>) -> Self {
        Self {
            every_n_events,
            scheduler,
        }
    }

    /// The (entity, version) pairs to snapshot for these receipts: the newest multiple per
    /// entity (a batch that crosses several multiples of one entity needs only the last).
    pub fn due(&self, receipts: &[AppendReceipt]) -> Vec<(EntityId, Version)> {
        let n = self.every_n_events;
        let mut due: Vec<(EntityId, Version)> = Vec::new();
        if n == 0 {
            return due;
        }
        for receipt in receipts {
            if receipt.duplicate || receipt.version.get() % n != 0 {
                continue;
            }
            match due.iter_mut().find(|(e, _)| *e == receipt.entity_id) {
                Some((_, v)) => *v = (*v).max(receipt.version),
                None => due.push((receipt.entity_id.clone(), receipt.version)),
            }
        }
        due
    }
}

#[async_trait]
impl AppendGuard for SnapshotTrigger {
    async fn after_append(&self, caller: &Caller, receipts: &[AppendReceipt], _: &[usize]) {
        for (entity_id, version) in self.due(receipts) {
            // A dropped job only means a later read folds more events.
            let _ = self
                .scheduler
                .schedule(caller.tenant(), &entity_id, version);
        }
    }
}

mod background;
pub use background::{BackgroundSnapshots, SnapshotJobStats};

#[cfg(test)]
mod tests;
