//! `CachedStore`: a moka-backed caching decorator of any [`EventStore`] for the hot read paths
//! (event by id, entity streams, and through them entity state).
//!
//! # Why it is never stale
//! Events are immutable and streams only grow at the end. So the cache holds only facts that
//! stay true forever: an event by id (only found events are cached, never "not found"), and a
//! *prefix* of each stream (versions `1..=n`). A stream read asks the store only for versions
//! after the cached prefix — one cheap indexed query that usually returns nothing — and serves
//! the rest from memory. An append on this node or on any other node can therefore never make a
//! cached answer wrong: there is nothing to invalidate, and several nodes on one PostgreSQL see
//! each other's appends on the next read. The TTL only bounds memory held by cold entries.
//!
//! Reads bounded by `to_version` or `limit` that the prefix already covers are answered without
//! touching the store at all.
//!
//! [`MokaStateCache`] is the adapter of the `EntityStateCache` port (folded entity states), on
//! the same reasoning: a state at version `v` stays true; readers fold only what follows.

use std::sync::Arc;
use std::time::Duration;

use allsource_application::ports::{
    AppendReceipt, EntityListQuery, EntityPage, EntityStateCache, EventQuery, EventStore,
    EventTypeCount, QueryPage, StoreAppendError, StoreError, StoreStats, StreamRange,
};
use allsource_domain::{EntityId, EntityState, Event, EventId, ProposedEvent, TenantId};
use async_trait::async_trait;
use moka::future::Cache;

/// Settings of the cache (`cache.*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheConfig {
    /// `cache.max_capacity`: events held, counting each cached event once per place it sits.
    pub max_capacity: u64,
    /// `cache.ttl_seconds`: entries expire this long after being written (bounds memory held by
    /// cold entries; correctness does not depend on it).
    pub ttl: Duration,
}

type StreamKey = (TenantId, EntityId);
type EventKey = (TenantId, EventId);

/// Caches immutable facts of the wrapped store; see the module docs.
pub struct CachedStore {
    inner: Arc<dyn EventStore>,
    events: Cache<EventKey, Arc<Event>>,
    /// Versions `1..=len` of a stream.
    streams: Cache<StreamKey, Arc<Vec<Arc<Event>>>>,
}

impl CachedStore {
    pub fn new(inner: Arc<dyn EventStore>, config: CacheConfig) -> Self {
        let half = (config.max_capacity / 2).max(1);
        Self {
            inner,
            events: Cache::builder()
                .max_capacity(half)
                .time_to_live(config.ttl)
                .build(),
            streams: Cache::builder()
                .max_capacity(half)
                .weigher(|_, prefix: &Arc<Vec<Arc<Event>>>| {
                    u32::try_from(prefix.len()).unwrap_or(u32::MAX).max(1)
                })
                .time_to_live(config.ttl)
                .build(),
        }
    }

    /// Serves `range` from the cached prefix when it covers it.
    fn from_prefix(prefix: &[Arc<Event>], range: StreamRange) -> Option<Vec<Arc<Event>>> {
        let len = prefix.len() as u64;
        let start = range.from_version.max(1) - 1;
        let wanted_end = match (range.to_version, range.limit) {
            (Some(to), Some(limit)) => to.min(start.saturating_add(limit as u64)),
            (Some(to), None) => to,
            (None, Some(limit)) => start.saturating_add(limit as u64),
            // Up to the head: only the store knows where the head is now.
            (None, None) => return None,
        };
        if wanted_end > len {
            return None;
        }
        if start >= wanted_end {
            return Some(Vec::new());
        }
        Some(prefix[start as usize..wanted_end as usize].to_vec())
    }
}

#[async_trait]
impl EventStore for CachedStore {
    async fn append(
        &self,
        tenant: &TenantId,
        events: Vec<ProposedEvent>,
    ) -> Result<Vec<AppendReceipt>, StoreAppendError> {
        // Nothing cached can become wrong through an append: see the module docs.
        self.inner.append(tenant, events).await
    }

    async fn read_stream(
        &self,
        tenant: &TenantId,
        entity_id: &EntityId,
        range: StreamRange,
    ) -> Result<Vec<Arc<Event>>, StoreError> {
        let key = (tenant.clone(), entity_id.clone());
        let prefix = self.streams.get(&key).await.unwrap_or_default();
        if let Some(hit) = Self::from_prefix(&prefix, range) {
            cache_lookup("streams", true);
            return Ok(hit);
        }
        cache_lookup("streams", false);
        // Fetch what follows the prefix, extend the prefix, then answer from it.
        let known = prefix.len() as u64;
        let tail = self
            .inner
            .read_stream(
                tenant,
                entity_id,
                StreamRange {
                    from_version: known + 1,
                    to_version: range.to_version,
                    limit: None,
                },
            )
            .await?;
        let extended: Arc<Vec<Arc<Event>>> = if tail.is_empty() {
            prefix
        } else {
            let mut all = Vec::with_capacity(prefix.len() + tail.len());
            all.extend(prefix.iter().cloned());
            all.extend(tail);
            // Only a gapless prefix may be cached.
            if all
                .iter()
                .enumerate()
                .all(|(i, e)| e.version.get() == i as u64 + 1)
            {
                let all = Arc::new(all);
                self.streams.insert(key, Arc::clone(&all)).await;
                all
            } else {
                Arc::new(all)
            }
        };
        let start = (range.from_version.max(1) - 1) as usize;
        let mut end = range
            .to_version
            .map_or(extended.len(), |to| (to as usize).min(extended.len()));
        if let Some(limit) = range.limit {
            end = end.min(start.saturating_add(limit));
        }
        if start >= end {
            return Ok(Vec::new());
        }
        Ok(extended[start..end].to_vec())
    }

    async fn query(&self, tenant: &TenantId, query: EventQuery) -> Result<QueryPage, StoreError> {
        self.inner.query(tenant, query).await
    }

    async fn get_event(
        &self,
        tenant: &TenantId,
        id: EventId,
    ) -> Result<Option<Arc<Event>>, StoreError> {
        let key = (tenant.clone(), id);
        if let Some(hit) = self.events.get(&key).await {
            cache_lookup("events", true);
            return Ok(Some(hit));
        }
        cache_lookup("events", false);
        let found = self.inner.get_event(tenant, id).await?;
        if let Some(event) = &found {
            self.events.insert(key, Arc::clone(event)).await;
        }
        Ok(found)
    }

    async fn list_entities(
        &self,
        tenant: &TenantId,
        query: EntityListQuery,
    ) -> Result<EntityPage, StoreError> {
        self.inner.list_entities(tenant, query).await
    }

    async fn event_types(&self, tenant: &TenantId) -> Result<Vec<EventTypeCount>, StoreError> {
        self.inner.event_types(tenant).await
    }

    async fn stats(&self, tenant: &TenantId) -> Result<StoreStats, StoreError> {
        let mut stats = self.inner.stats(tenant).await?;
        stats.storage.insert(
            "cache".into(),
            serde_json::json!({
                "cached_events": self.events.entry_count(),
                "cached_streams": self.streams.entry_count(),
            }),
        );
        Ok(stats)
    }

    fn is_ready(&self) -> bool {
        self.inner.is_ready()
    }

    fn backend(&self) -> &'static str {
        self.inner.backend()
    }

    async fn shutdown(&self) -> Result<(), StoreError> {
        self.inner.shutdown().await
    }
}

/// Counts one lookup of `cache` in `allsource_cache_lookups_total{cache,result}` (the hit
/// ratio is `hit / (hit + miss)`).
fn cache_lookup(cache: &'static str, hit: bool) {
    let result = if hit { "hit" } else { "miss" };
    metrics::counter!("allsource_cache_lookups_total", "cache" => cache, "result" => result)
        .increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;
    use allsource_application::ports::MockEventStore;
    use allsource_domain::{EventType, ExpectedVersion, Position, Version};
    use chrono::Utc;
    use serde_json::value::RawValue;

    fn event(version: u64) -> Arc<Event> {
        Arc::new(Event {
            id: EventId::generate(),
            tenant_id: TenantId::default_tenant(),
            entity_id: EntityId::parse("e").unwrap(),
            event_type: EventType::parse("t").unwrap(),
            version: Version::new(version),
            position: Position::new(version),
            timestamp: Utc::now(),
            payload: RawValue::from_string("{}".into()).unwrap(),
            metadata: None,
        })
    }

    fn config() -> CacheConfig {
        CacheConfig {
            max_capacity: 1000,
            ttl: Duration::from_secs(60),
        }
    }

    #[tokio::test]
    async fn stream_reads_fetch_only_the_tail_after_the_cached_prefix() {
        let mut inner = MockEventStore::new();
        let mut seq = mockall::Sequence::new();
        inner
            .expect_read_stream()
            .withf(|_, _, r| r.from_version == 1 && r.to_version.is_none())
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_, _, _| Ok(vec![event(1), event(2)]));
        // Another node appended version 3 meanwhile: the next read must see it.
        inner
            .expect_read_stream()
            .withf(|_, _, r| r.from_version == 3 && r.to_version.is_none())
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_, _, _| Ok(vec![event(3)]));
        let cached = CachedStore::new(Arc::new(inner), config());
        let t = TenantId::default_tenant();
        let e = EntityId::parse("e").unwrap();
        assert_eq!(
            cached
                .read_stream(&t, &e, StreamRange::ALL)
                .await
                .unwrap()
                .len(),
            2
        );
        let all = cached.read_stream(&t, &e, StreamRange::ALL).await.unwrap();
        assert_eq!(
            all.iter().map(|e| e.version.get()).collect::<Vec<_>>(),
            [1, 2, 3]
        );
        // Covered by the prefix: no store call at all (the mock would panic on a third call).
        let bounded = StreamRange {
            from_version: 2,
            to_version: Some(3),
            limit: None,
        };
        assert_eq!(cached.read_stream(&t, &e, bounded).await.unwrap().len(), 2);
        let limited = StreamRange {
            from_version: 1,
            to_version: None,
            limit: Some(2),
        };
        assert_eq!(cached.read_stream(&t, &e, limited).await.unwrap().len(), 2);
    }

    #[tokio::test]
    async fn only_found_events_are_cached() {
        let mut inner = MockEventStore::new();
        let stored = event(1);
        let id = stored.id;
        let missing = EventId::generate();
        inner
            .expect_get_event()
            .withf(move |_, asked| *asked == id)
            .times(1)
            .returning(move |_, _| Ok(Some(Arc::clone(&stored))));
        inner
            .expect_get_event()
            .withf(move |_, asked| *asked == missing)
            .times(2)
            .returning(|_, _| Ok(None));
        let cached = CachedStore::new(Arc::new(inner), config());
        let t = TenantId::default_tenant();
        for _ in 0..3 {
            assert!(cached.get_event(&t, id).await.unwrap().is_some());
        }
        for _ in 0..2 {
            assert!(cached.get_event(&t, missing).await.unwrap().is_none());
        }
    }

    #[tokio::test]
    async fn tenants_do_not_share_cache_entries() {
        let mut inner = MockEventStore::new();
        inner
            .expect_read_stream()
            .withf(|t, _, _| t.as_str() == "default")
            .returning(|_, _, _| Ok(vec![event(1)]));
        inner
            .expect_read_stream()
            .withf(|t, _, _| t.as_str() == "other")
            .returning(|_, _, _| Ok(vec![]));
        let cached = CachedStore::new(Arc::new(inner), config());
        let e = EntityId::parse("e").unwrap();
        assert_eq!(
            cached
                .read_stream(&TenantId::default_tenant(), &e, StreamRange::ALL)
                .await
                .unwrap()
                .len(),
            1
        );
        let other = TenantId::parse("other").unwrap();
        assert!(
            cached
                .read_stream(&other, &e, StreamRange::ALL)
                .await
                .unwrap()
                .is_empty()
        );
        let _ = ExpectedVersion::Any;
    }
}

/// `EntityStateCache` on a moka cache: folded entity states, bounded in number.
pub struct MokaStateCache {
    states: moka::sync::Cache<StreamKey, Arc<EntityState>>,
}

impl MokaStateCache {
    /// Keeps at most `max_states` states, dropping the least recently used.
    pub fn new(max_states: u64) -> Self {
        Self {
            states: moka::sync::Cache::new(max_states),
        }
    }
}

impl EntityStateCache for MokaStateCache {
    fn get(&self, tenant: &TenantId, entity_id: &EntityId) -> Option<Arc<EntityState>> {
        let found = self.states.get(&(tenant.clone(), entity_id.clone()));
        cache_lookup("states", found.is_some());
        found
    }

    fn put(&self, tenant: &TenantId, state: Arc<EntityState>) {
        let key = (tenant.clone(), state.entity_id.clone());
        // Never replace a newer state with an older one (two readers may race).
        if self
            .states
            .get(&key)
            .is_some_and(|cached| cached.version >= state.version)
        {
            return;
        }
        self.states.insert(key, state);
    }
}

#[cfg(test)]
mod state_cache_tests {
    use super::*;
    use allsource_domain::{EntityState, Version};
    use chrono::Utc;

    fn state(version: u64) -> Arc<EntityState> {
        Arc::new(EntityState {
            entity_id: EntityId::parse("e").unwrap(),
            version: Version::new(version),
            event_count: version,
            last_updated: Utc::now(),
            state: serde_json::json!({"v": version}),
        })
    }

    #[test]
    fn keeps_the_newest_state_per_tenant_and_entity() {
        let cache = MokaStateCache::new(100);
        let (a, b) = (TenantId::default_tenant(), TenantId::parse("b").unwrap());
        let e = EntityId::parse("e").unwrap();
        cache.put(&a, state(3));
        cache.put(&a, state(2));
        assert_eq!(cache.get(&a, &e).unwrap().version, Version::new(3));
        cache.put(&a, state(4));
        assert_eq!(cache.get(&a, &e).unwrap().version, Version::new(4));
        assert!(cache.get(&b, &e).is_none());
    }
}
