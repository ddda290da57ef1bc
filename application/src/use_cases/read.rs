//! Reading: queries with paging, single events, entity streams, entity state at a point in time,
//! and the catalog views (entities, event types, stats).

use std::sync::Arc;

use allsource_domain::{EntityId, EntityState, Event, EventId, EventType, InvalidValue, Position};
use chrono::{DateTime, Utc};

use super::params::{self, Errors, FieldError};
use super::snapshots::{SnapshotArchive, fold_from_snapshot};
use crate::Caller;
use crate::ports::{
    EntityListQuery, EntityOrder, EntityPage, EntityStateCache, EventQuery, EventStore,
    EventTypeCount, NoStateCache, QueryPage, SortOrder, StoreStats, StreamRange,
};

/// Page size of queries when the client gives none.
pub const DEFAULT_QUERY_LIMIT: usize = 1000;
/// Largest page a client may ask for (queries, streams, entity listings).
pub const MAX_PAGE_LIMIT: usize = 10_000;
/// Page size of entity listings when the client gives none.
const DEFAULT_ENTITY_LIMIT: usize = 100;

/// Why a read failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// 400: invalid parameters.
    #[error("invalid parameters")]
    Invalid(Vec<FieldError>),
    /// 404: the named resource does not exist (for this tenant).
    #[error("{0}")]
    NotFound(String),
    /// 503: storage cannot answer now.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// 500.
    #[error(transparent)]
    Internal(anyhow::Error),
}

impl crate::ports::StorageFailure for ReadError {
    fn unavailable(why: String) -> Self {
        Self::Unavailable(why)
    }
    fn internal(error: anyhow::Error) -> Self {
        Self::Internal(error)
    }
}

crate::storage_errors!(ReadError);

impl From<Errors> for ReadError {
    fn from(e: Errors) -> Self {
        Self::Invalid(e.0)
    }
}

/// Raw parameters of `GET /api/v1/events/query`.
#[derive(Debug, Default, Clone)]
pub struct QueryInput {
    pub entity_id: Option<String>,
    pub event_type: Option<String>,
    pub event_type_prefix: Option<String>,
    /// A JSON object, as text.
    pub payload_filter: Option<String>,
    pub since: Option<String>,
    pub until: Option<String>,
    pub as_of: Option<String>,
    pub from_position: Option<String>,
    pub offset: Option<String>,
    pub limit: Option<String>,
    pub order: Option<String>,
}

/// Raw parameters of `GET /api/v1/entities/{id}/events`.
#[derive(Debug, Default, Clone)]
pub struct StreamInput {
    pub from_version: Option<String>,
    pub to_version: Option<String>,
    pub limit: Option<String>,
}

/// Raw parameters of `GET /api/v1/entities/{id}/state`.
#[derive(Debug, Default, Clone)]
pub struct EntityStateInput {
    pub as_of: Option<String>,
    pub include_history: Option<String>,
}

/// Raw parameters of `GET /api/v1/entities`.
#[derive(Debug, Default, Clone)]
pub struct EntityListInput {
    pub limit: Option<String>,
    pub offset: Option<String>,
    pub event_type_prefix: Option<String>,
    /// `asc` or `desc` (default) by the last event's time.
    pub order: Option<String>,
}

/// An entity's state, with what it was computed from.
#[derive(Debug, Clone, PartialEq)]
pub struct EntityStateView {
    pub state: Arc<EntityState>,
    pub as_of: Option<DateTime<Utc>>,
    /// The events folded in, when asked for.
    pub history: Option<Vec<Arc<Event>>>,
}

/// A page of one entity's stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamPage {
    pub events: Vec<Arc<Event>>,
    pub has_more: bool,
}

/// The read use cases.
#[derive(Clone)]
pub struct ReadEvents {
    store: Arc<dyn EventStore>,
    states: Arc<dyn EntityStateCache>,
    snapshots: Option<SnapshotArchive>,
}

impl ReadEvents {
    /// Reads without a state cache: every state read folds the whole stream.
    pub fn new(store: Arc<dyn EventStore>) -> Self {
        Self::with_state_cache(store, Arc::new(NoStateCache))
    }

    /// Reads with a cache of folded states: a current-state read folds only the events after
    /// the cached version.
    pub fn with_state_cache(store: Arc<dyn EventStore>, states: Arc<dyn EntityStateCache>) -> Self {
        Self {
            store,
            states,
            snapshots: None,
        }
    }

    /// State reads start from the newest snapshot at or before the point asked for and fold
    /// only the events after it (after the cache, before a full fold).
    #[must_use]
    pub fn with_snapshots(mut self, snapshots: SnapshotArchive) -> Self {
        self.snapshots = Some(snapshots);
        self
    }

    /// `GET /api/v1/events/query`.
    ///
    /// # Errors
    /// `Invalid` for bad parameters, `Unavailable`/`Internal` from the store.
    pub async fn query(&self, caller: &Caller, input: QueryInput) -> Result<QueryPage, ReadError> {
        let mut errors = Errors::default();
        let query = EventQuery {
            entity_id: errors.optional("entity_id", input.entity_id.as_deref(), EntityId::parse),
            event_type: errors.optional(
                "event_type",
                input.event_type.as_deref(),
                EventType::parse,
            ),
            event_type_prefix: input.event_type_prefix.filter(|p| !p.is_empty()),
            type_filters: allsource_domain::TypeFilters::any(),
            payload_filter: errors.optional(
                "payload_filter",
                input.payload_filter.as_deref(),
                parse_payload_filter,
            ),
            since: errors.optional("since", input.since.as_deref(), params::timestamp),
            until: errors.optional("until", input.until.as_deref(), params::timestamp),
            as_of: errors.optional("as_of", input.as_of.as_deref(), params::timestamp),
            from_position: errors
                .optional(
                    "from_position",
                    input.from_position.as_deref(),
                    params::unsigned,
                )
                .map(Position::new),
            offset: errors
                .optional("offset", input.offset.as_deref(), params::unsigned)
                .map_or(0, |o| usize::try_from(o).unwrap_or(usize::MAX)),
            limit: errors
                .optional("limit", input.limit.as_deref(), |raw| {
                    params::limit(raw, MAX_PAGE_LIMIT)
                })
                .unwrap_or(DEFAULT_QUERY_LIMIT),
            order: match input.order.as_deref() {
                None | Some("asc") => SortOrder::Asc,
                Some("desc") => SortOrder::Desc,
                Some(_) => {
                    errors.push("order", "must be asc or desc");
                    SortOrder::Asc
                }
            },
        };
        if !errors.is_empty() {
            return Err(errors.into());
        }
        Ok(self.store.query(caller.tenant(), query).await?)
    }

    /// `GET /api/v1/events/{event_id}`.
    ///
    /// # Errors
    /// `Invalid` for a malformed id, `NotFound` when the tenant has no such event.
    pub async fn event(&self, caller: &Caller, raw_id: &str) -> Result<Arc<Event>, ReadError> {
        let mut errors = Errors::default();
        let Some(id) = errors.check("event_id", EventId::parse(raw_id)) else {
            return Err(errors.into());
        };
        self.store
            .get_event(caller.tenant(), id)
            .await?
            .ok_or_else(|| ReadError::NotFound(format!("no event with id {id}")))
    }

    /// `GET /api/v1/entities/{entity_id}/events`: the stream in version order. An entity with no
    /// events gives an empty stream.
    ///
    /// # Errors
    /// `Invalid` for bad parameters.
    pub async fn stream(
        &self,
        caller: &Caller,
        raw_entity: &str,
        input: StreamInput,
    ) -> Result<StreamPage, ReadError> {
        let mut errors = Errors::default();
        let entity_id = errors.check("entity_id", EntityId::parse(raw_entity));
        let from_version = errors
            .optional(
                "from_version",
                input.from_version.as_deref(),
                params::unsigned,
            )
            .unwrap_or(1)
            .max(1);
        let to_version =
            errors.optional("to_version", input.to_version.as_deref(), params::unsigned);
        let limit = errors
            .optional("limit", input.limit.as_deref(), |raw| {
                params::limit(raw, MAX_PAGE_LIMIT)
            })
            .unwrap_or(MAX_PAGE_LIMIT);
        if let Some(to) = to_version
            && to < from_version
        {
            errors.push("to_version", "must not be less than from_version");
        }
        let Some(entity_id) = entity_id.filter(|_| errors.is_empty()) else {
            return Err(errors.into());
        };
        // One more than asked tells whether the stream goes on.
        let range = StreamRange {
            from_version,
            to_version,
            limit: Some(limit + 1),
        };
        let mut events = self
            .store
            .read_stream(caller.tenant(), &entity_id, range)
            .await?;
        let has_more = events.len() > limit;
        events.truncate(limit);
        Ok(StreamPage { events, has_more })
    }

    /// `GET /api/v1/entities/{entity_id}/state`: the fold of the entity's events with
    /// `timestamp <= as_of` (all events without `as_of`).
    ///
    /// # Errors
    /// `Invalid` for bad parameters, `NotFound` when the entity has no events (at `as_of`).
    pub async fn entity_state(
        &self,
        caller: &Caller,
        raw_entity: &str,
        input: EntityStateInput,
    ) -> Result<EntityStateView, ReadError> {
        let mut errors = Errors::default();
        let entity_id = errors.check("entity_id", EntityId::parse(raw_entity));
        let as_of = errors.optional("as_of", input.as_of.as_deref(), params::timestamp);
        let include_history = errors
            .optional(
                "include_history",
                input.include_history.as_deref(),
                params::boolean,
            )
            .unwrap_or(false);
        let Some(entity_id) = entity_id.filter(|_| errors.is_empty()) else {
            return Err(errors.into());
        };
        let tenant = caller.tenant();
        if as_of.is_none()
            && !include_history
            && let Some(cached) = self.states.get(tenant, &entity_id)
        {
            // The cached state is a fact at its version; fold only what came after.
            let after = StreamRange {
                from_version: cached.version.get() + 1,
                to_version: None,
                limit: None,
            };
            let tail = self.store.read_stream(tenant, &entity_id, after).await?;
            let state = if tail.is_empty() {
                cached
            } else {
                let mut state = (*cached).clone();
                for event in &tail {
                    state.apply(event);
                }
                let state = Arc::new(state);
                self.states.put(tenant, Arc::clone(&state));
                state
            };
            return Ok(EntityStateView {
                state,
                as_of: None,
                history: None,
            });
        }
        let not_found = || {
            ReadError::NotFound(match as_of {
                Some(t) => format!(
                    "entity '{entity_id}' has no events at {}",
                    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
                ),
                None => format!("entity '{entity_id}' has no events"),
            })
        };
        let (state, events) = if include_history {
            // The history is every event: nothing to gain from a snapshot.
            let mut events = self
                .store
                .read_stream(tenant, &entity_id, StreamRange::ALL)
                .await?;
            if let Some(as_of) = as_of {
                // Timestamps are non-decreasing along the stream, so the events at `as_of` are
                // a prefix.
                let visible = events.partition_point(|e| e.timestamp <= as_of);
                events.truncate(visible);
            }
            let state =
                EntityState::fold(events.iter().map(|e| e.as_ref())).ok_or_else(not_found)?;
            (state, Some(events))
        } else {
            // From the newest snapshot at or before the point asked for (if snapshots are
            // configured and their store answers), folding only the tail.
            let folded = fold_from_snapshot(
                self.store.as_ref(),
                self.snapshots.as_ref(),
                tenant,
                &entity_id,
                None,
                as_of,
            )
            .await?
            .ok_or_else(not_found)?;
            (folded.state, None)
        };
        let state = Arc::new(state);
        if as_of.is_none() {
            self.states.put(tenant, Arc::clone(&state));
        }
        Ok(EntityStateView {
            state,
            as_of,
            history: events,
        })
    }

    /// `GET /api/v1/entities`.
    ///
    /// # Errors
    /// `Invalid` for bad parameters.
    pub async fn entities(
        &self,
        caller: &Caller,
        input: EntityListInput,
    ) -> Result<EntityPage, ReadError> {
        let mut errors = Errors::default();
        let limit = errors
            .optional("limit", input.limit.as_deref(), |raw| {
                params::limit(raw, MAX_PAGE_LIMIT)
            })
            .unwrap_or(DEFAULT_ENTITY_LIMIT);
        let offset = errors
            .optional("offset", input.offset.as_deref(), params::unsigned)
            .map_or(0, |o| usize::try_from(o).unwrap_or(usize::MAX));
        let order = match input.order.as_deref() {
            None | Some("desc") => EntityOrder::Desc,
            Some("asc") => EntityOrder::Asc,
            Some(_) => {
                errors.push("order", "must be asc or desc");
                EntityOrder::Desc
            }
        };
        if !errors.is_empty() {
            return Err(errors.into());
        }
        let query = EntityListQuery {
            limit,
            offset,
            event_type_prefix: input.event_type_prefix.filter(|p| !p.is_empty()),
            order,
        };
        Ok(self.store.list_entities(caller.tenant(), query).await?)
    }

    /// `GET /api/v1/event-types`.
    ///
    /// # Errors
    /// `Unavailable`/`Internal` from the store.
    pub async fn event_types(&self, caller: &Caller) -> Result<Vec<EventTypeCount>, ReadError> {
        Ok(self.store.event_types(caller.tenant()).await?)
    }

    /// `GET /api/v1/stats`.
    ///
    /// # Errors
    /// `Unavailable`/`Internal` from the store.
    pub async fn stats(&self, caller: &Caller) -> Result<StoreStats, ReadError> {
        Ok(self.store.stats(caller.tenant()).await?)
    }
}

/// `payload_filter`: a JSON object of top-level keys and the values they must equal.
fn parse_payload_filter(
    raw: &str,
) -> Result<serde_json::Map<String, serde_json::Value>, InvalidValue> {
    match serde_json::from_str::<serde_json::Value>(raw) {
        Ok(serde_json::Value::Object(filter)) => Ok(filter),
        Ok(_) => Err(InvalidValue(
            "must be a JSON object, e.g. {\"status\":\"paid\"}".into(),
        )),
        Err(e) => Err(InvalidValue(format!("is not valid JSON: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::{MockEventStore, StoreError};
    use allsource_domain::{ProposedEvent, TenantId, Version};
    use chrono::TimeZone;
    use serde_json::json;
    use serde_json::value::RawValue;

    fn event(entity: &str, version: u64, second: u32, payload: &str) -> Arc<Event> {
        Arc::new(
            ProposedEvent {
                id: EventId::generate(),
                entity_id: EntityId::parse(entity).unwrap(),
                event_type: EventType::parse("t").unwrap(),
                payload: RawValue::from_string(payload.into()).unwrap(),
                metadata: None,
                expected_version: Default::default(),
            }
            .into_event(
                TenantId::default_tenant(),
                Version::new(version),
                Position::new(version),
                Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, second).unwrap(),
            ),
        )
    }

    fn reads(store: MockEventStore) -> ReadEvents {
        ReadEvents::new(Arc::new(store))
    }

    fn caller() -> Caller {
        Caller::default_tenant()
    }

    fn fields(err: ReadError) -> Vec<String> {
        match err {
            ReadError::Invalid(e) => e.into_iter().map(|e| e.field).collect(),
            other => panic!("expected invalid, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn query_defaults_and_full_translation() {
        let mut store = MockEventStore::new();
        store
            .expect_query()
            .withf(|tenant, q| {
                tenant.as_str() == "default"
                    && q.limit == DEFAULT_QUERY_LIMIT
                    && q.offset == 0
                    && q.order == SortOrder::Asc
                    && q.entity_id.is_none()
            })
            .returning(|_, _| Ok(QueryPage::default()));
        reads(store)
            .query(&caller(), QueryInput::default())
            .await
            .unwrap();

        let mut store = MockEventStore::new();
        store
            .expect_query()
            .withf(|_, q| {
                q.entity_id.as_ref().map(|e| e.as_str()) == Some("o-1")
                    && q.event_type.as_ref().map(|e| e.as_str()) == Some("order.placed")
                    && q.since == Some(Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap())
                    && q.until.is_some()
                    && q.as_of.is_some()
                    && q.from_position == Some(Position::new(5))
                    && q.offset == 2
                    && q.limit == 10
                    && q.order == SortOrder::Desc
                    && q.event_type_prefix.as_deref() == Some("order.")
                    && q.payload_filter.as_ref().map(|f| f.len()) == Some(1)
            })
            .returning(|_, _| Ok(QueryPage::default()));
        let input = QueryInput {
            entity_id: Some("o-1".into()),
            event_type: Some("order.placed".into()),
            event_type_prefix: Some("order.".into()),
            payload_filter: Some(r#"{"status":"paid"}"#.into()),
            since: Some("2026-01-01T00:00:00Z".into()),
            until: Some("2026-01-02T00:00:00Z".into()),
            as_of: Some("2026-01-03T00:00:00.5Z".into()),
            from_position: Some("5".into()),
            offset: Some("2".into()),
            limit: Some("10".into()),
            order: Some("desc".into()),
        };
        reads(store).query(&caller(), input).await.unwrap();
    }

    #[tokio::test]
    async fn query_reports_all_bad_parameters() {
        let mut store = MockEventStore::new();
        store.expect_query().never();
        let input = QueryInput {
            entity_id: Some("".into()),
            event_type: Some("bad type".into()),
            since: Some("noon".into()),
            from_position: Some("-3".into()),
            limit: Some("10001".into()),
            order: Some("up".into()),
            payload_filter: Some("[1]".into()),
            ..Default::default()
        };
        assert_eq!(
            fields(reads(store).query(&caller(), input).await.unwrap_err()),
            [
                "entity_id",
                "event_type",
                "payload_filter",
                "since",
                "from_position",
                "limit",
                "order"
            ]
        );
    }

    #[tokio::test]
    async fn event_by_id_not_found_and_invalid() {
        let mut store = MockEventStore::new();
        store.expect_get_event().returning(|_, _| Ok(None));
        let uc = reads(store);
        let id = EventId::generate().to_string();
        assert!(matches!(
            uc.event(&caller(), &id).await,
            Err(ReadError::NotFound(_))
        ));
        assert_eq!(
            fields(uc.event(&caller(), "x").await.unwrap_err()),
            ["event_id"]
        );
    }

    #[tokio::test]
    async fn stream_asks_one_more_to_know_if_more_follow() {
        let mut store = MockEventStore::new();
        store
            .expect_read_stream()
            .withf(|_, e, r| {
                e.as_str() == "a"
                    && r.from_version == 2
                    && r.to_version == Some(9)
                    && r.limit == Some(3)
            })
            .returning(|_, _, _| {
                Ok(vec![
                    event("a", 2, 0, "1"),
                    event("a", 3, 0, "1"),
                    event("a", 4, 0, "1"),
                ])
            });
        let page = reads(store)
            .stream(
                &caller(),
                "a",
                StreamInput {
                    from_version: Some("2".into()),
                    to_version: Some("9".into()),
                    limit: Some("2".into()),
                },
            )
            .await
            .unwrap();
        assert_eq!(page.events.len(), 2);
        assert!(page.has_more);
    }

    #[tokio::test]
    async fn stream_rejects_inverted_range() {
        let mut store = MockEventStore::new();
        store.expect_read_stream().never();
        let input = StreamInput {
            from_version: Some("5".into()),
            to_version: Some("4".into()),
            limit: None,
        };
        assert_eq!(
            fields(
                reads(store)
                    .stream(&caller(), "a", input)
                    .await
                    .unwrap_err()
            ),
            ["to_version"]
        );
    }

    fn three_events_store() -> MockEventStore {
        let mut store = MockEventStore::new();
        store.expect_read_stream().returning(|_, _, _| {
            Ok(vec![
                event("a", 1, 10, r#"{"status":"new","n":1}"#),
                event("a", 2, 20, r#"{"status":"paid"}"#),
                event("a", 3, 30, r#"{"n":null}"#),
            ])
        });
        store
    }

    #[tokio::test]
    async fn entity_state_folds_everything_without_as_of() {
        let view = reads(three_events_store())
            .entity_state(&caller(), "a", EntityStateInput::default())
            .await
            .unwrap();
        assert_eq!(view.state.state, json!({"status": "paid"}));
        assert_eq!(view.state.version, Version::new(3));
        assert!(view.history.is_none());
        assert!(view.as_of.is_none());
    }

    #[tokio::test]
    async fn entity_state_as_of_folds_only_events_up_to_that_time() {
        let input = EntityStateInput {
            as_of: Some("2026-01-01T00:00:20Z".into()),
            include_history: Some("true".into()),
        };
        let view = reads(three_events_store())
            .entity_state(&caller(), "a", input)
            .await
            .unwrap();
        assert_eq!(view.state.state, json!({"status": "paid", "n": 1}));
        assert_eq!(view.state.version, Version::new(2));
        assert_eq!(view.history.unwrap().len(), 2);
    }

    #[tokio::test]
    async fn entity_state_before_first_event_or_of_unknown_entity_is_not_found() {
        let input = EntityStateInput {
            as_of: Some("2025-01-01T00:00:00Z".into()),
            include_history: None,
        };
        assert!(matches!(
            reads(three_events_store())
                .entity_state(&caller(), "a", input)
                .await,
            Err(ReadError::NotFound(_))
        ));
        let mut store = MockEventStore::new();
        store.expect_read_stream().returning(|_, _, _| Ok(vec![]));
        assert!(matches!(
            reads(store)
                .entity_state(&caller(), "nobody", EntityStateInput::default())
                .await,
            Err(ReadError::NotFound(_))
        ));
    }

    #[tokio::test]
    async fn entity_state_folds_only_the_tail_after_a_cached_state() {
        use crate::ports::MockEntityStateCache;
        let cached = EntityState::fold([
            event("a", 1, 10, r#"{"status":"new","n":1}"#).as_ref(),
            event("a", 2, 20, r#"{"status":"paid"}"#).as_ref(),
        ])
        .unwrap();
        let mut cache = MockEntityStateCache::new();
        cache
            .expect_get()
            .return_once(move |_, _| Some(Arc::new(cached)));
        cache
            .expect_put()
            .withf(|_, s| s.version == Version::new(3) && s.state == json!({"status": "paid"}))
            .times(1)
            .return_const(());
        let mut store = MockEventStore::new();
        store
            .expect_read_stream()
            .withf(|_, _, r| r.from_version == 3 && r.to_version.is_none())
            .times(1)
            .returning(|_, _, _| Ok(vec![event("a", 3, 30, r#"{"n":null}"#)]));
        let view = ReadEvents::with_state_cache(Arc::new(store), Arc::new(cache))
            .entity_state(&caller(), "a", EntityStateInput::default())
            .await
            .unwrap();
        assert_eq!(view.state.state, json!({"status": "paid"}));
        assert_eq!(view.state.event_count, 3);
    }

    #[tokio::test]
    async fn entity_state_as_of_bypasses_the_cache() {
        use crate::ports::MockEntityStateCache;
        let mut cache = MockEntityStateCache::new();
        cache.expect_get().never();
        cache.expect_put().never();
        let input = EntityStateInput {
            as_of: Some("2026-01-01T00:00:20Z".into()),
            include_history: None,
        };
        let view = ReadEvents::with_state_cache(Arc::new(three_events_store()), Arc::new(cache))
            .entity_state(&caller(), "a", input)
            .await
            .unwrap();
        assert_eq!(view.state.version, Version::new(2));
    }

    #[tokio::test]
    async fn entity_state_rejects_bad_parameters_without_reading() {
        let mut store = MockEventStore::new();
        store.expect_read_stream().never();
        let input = EntityStateInput {
            as_of: Some("soon".into()),
            include_history: Some("maybe".into()),
        };
        assert_eq!(
            fields(
                reads(store)
                    .entity_state(&caller(), "a", input)
                    .await
                    .unwrap_err()
            ),
            ["as_of", "include_history"]
        );
    }

    #[tokio::test]
    async fn store_unavailability_is_reported() {
        let mut store = MockEventStore::new();
        store
            .expect_stats()
            .returning(|_| Err(StoreError::Unavailable("recovering".into())));
        assert!(matches!(
            reads(store).stats(&caller()).await,
            Err(ReadError::Unavailable(_))
        ));
    }

    #[tokio::test]
    async fn entities_defaults_and_validation() {
        let mut store = MockEventStore::new();
        store
            .expect_list_entities()
            .withf(|_, q| {
                q.limit == 100 && q.offset == 0 && q.event_type_prefix.as_deref() == Some("order.")
            })
            .returning(|_, _| Ok(EntityPage::default()));
        let uc = reads(store);
        uc.entities(
            &caller(),
            EntityListInput {
                event_type_prefix: Some("order.".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        let bad = EntityListInput {
            limit: Some("0".into()),
            offset: Some("x".into()),
            event_type_prefix: None,
            order: Some("newest".into()),
        };
        assert_eq!(
            fields(uc.entities(&caller(), bad).await.unwrap_err()),
            ["limit", "offset", "order"]
        );
        let _ = json!(null);
    }
}
