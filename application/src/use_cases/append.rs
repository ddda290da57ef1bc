//! Appending events: validation (payload and metadata follow the rules every reader honours,
//! [`allsource_domain::payload`]), size limits, id assignment, duplicate ids within a batch, the
//! guards (schemas, quotas; see [`AppendGuard`] for how retries of stored events keep their
//! receipts whatever the guards say), and the mapping of the store's verdict to errors the API
//! reports.

use std::collections::HashSet;
use std::sync::Arc;

use allsource_domain::{
    AppendRejection, EntityId, EventId, EventType, ExpectedVersion, JsonPayload, ProposedEvent,
    check_payload, same_content,
};
use serde_json::value::RawValue;

use super::params::{Errors, FieldError};
use crate::Caller;
use crate::ports::{AppendReceipt, EventStore, StoreAppendError};
pub use crate::quota::QuotaExceeded;

/// Size limits of appends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendLimits {
    /// Payload plus metadata, serialized, per event.
    pub max_event_bytes: usize,
    /// Events per batch.
    pub max_batch_events: usize,
}

impl Default for AppendLimits {
    fn default() -> Self {
        Self {
            max_event_bytes: 1024 * 1024,
            max_batch_events: 10_000,
        }
    }
}

/// One event as the client sent it. Required fields are optional here so that their absence is
/// reported as a field error rather than a parse failure.
#[derive(Debug, Default)]
pub struct AppendEventInput {
    pub id: Option<String>,
    pub entity_id: Option<String>,
    pub event_type: Option<String>,
    pub payload: Option<JsonPayload>,
    pub metadata: Option<JsonPayload>,
    /// `"any"`, `"no_stream"`, `"stream_exists"`, a non-negative integer, or absent/null.
    pub expected_version: Option<serde_json::Value>,
}

/// The outcome of an append: one receipt per event, in request order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendReply {
    pub receipts: Vec<AppendReceipt>,
}

impl AppendReply {
    /// Events actually appended (not duplicates).
    pub fn ingested(&self) -> usize {
        self.receipts.iter().filter(|r| !r.duplicate).count()
    }
}

/// Why an append was refused. `index` is the offending event's place in a batch (`None` for
/// the single-event route).
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// 400: invalid input; nothing appended.
    #[error("invalid events")]
    Invalid(Vec<FieldError>),
    /// 413: one event's payload plus metadata exceeds the limit.
    #[error("event is {bytes} bytes, over the limit of {limit}")]
    EventTooLarge {
        index: Option<usize>,
        bytes: usize,
        limit: usize,
    },
    /// 413: too many events in one batch.
    #[error("batch has {count} events, over the limit of {limit}")]
    BatchTooLarge { count: usize, limit: usize },
    /// 409: an expectation failed; nothing appended.
    #[error("version conflict on '{entity_id}': expected {expected}, current {current}")]
    VersionConflict {
        index: Option<usize>,
        entity_id: EntityId,
        expected: ExpectedVersion,
        current: u64,
    },
    /// 409: the id is stored with different content; nothing appended.
    #[error("event id {event_id} already exists with different content")]
    DuplicateEventId {
        index: Option<usize>,
        event_id: EventId,
    },
    /// 422: valid JSON that fails a registered schema; nothing appended. Fields are named like
    /// [`AppendError::Invalid`]'s (`events[3].payload` in a batch).
    #[error("events fail their registered schema")]
    SchemaViolation(Vec<FieldError>),
    /// 429: a quota of the caller's tenant would be exceeded; nothing appended.
    #[error(transparent)]
    QuotaExceeded(QuotaExceeded),
    /// 403: the caller's tenant is deactivated or gone; nothing appended.
    #[error("{0}")]
    Forbidden(String),
    /// 503: storage cannot take writes; nothing acknowledged, safe to retry.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// 500.
    #[error(transparent)]
    Internal(anyhow::Error),
}

/// What an [`AppendGuard`] sees of one event before the append: borrowed fields and sizes,
/// never a copy of the event.
#[derive(Debug, Clone, Copy)]
pub struct GuardedEvent<'a> {
    /// The event's place in the request (fields are named `events[index].…` in a batch).
    pub index: usize,
    pub entity_id: &'a EntityId,
    pub event_type: &'a EventType,
    /// The payload, borrowed (for validators).
    pub payload: &'a RawValue,
    /// Payload plus metadata, serialized (what quotas count).
    pub body_bytes: usize,
}

impl<'a> GuardedEvent<'a> {
    /// The view of the event at `index` of a request.
    pub fn of(index: usize, event: &'a ProposedEvent) -> Self {
        Self {
            index,
            entity_id: &event.entity_id,
            event_type: &event.event_type,
            payload: &event.payload,
            body_bytes: event.body_bytes(),
        }
    }

    /// Views of every event of a request, in request order.
    pub fn all(events: &'a [ProposedEvent]) -> Vec<Self> {
        events
            .iter()
            .enumerate()
            .map(|(i, e)| Self::of(i, e))
            .collect()
    }
}

/// A check that runs on every append after the events are validated and before the store sees
/// them (schema enforcement, quotas), and is told what was appended afterwards (usage counting,
/// snapshots, projections). The use case knows nothing of what the guards check; the
/// composition root installs them. Both methods do nothing unless a guard says otherwise.
///
/// Retries: a request's events that are exact retries of stored events (same id, same content)
/// are answered with their original receipts whatever the guards think of them now. When a
/// guard refuses with [`AppendError::SchemaViolation`] or [`AppendError::QuotaExceeded`], the
/// use case looks the request's client-chosen ids up in the store and asks the guards again
/// about the new events only; a request made only of retries is not put to the guards again.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait::async_trait]
pub trait AppendGuard: Send + Sync {
    /// Refuses the whole append by returning an error (usually `SchemaViolation` or
    /// `QuotaExceeded`). `events` are the events to check, in request order (retries of stored
    /// events may be left out); `batch` says how to name fields: `events[i].payload` or
    /// `payload`.
    ///
    /// # Errors
    /// Any [`AppendError`]; the append is not made.
    async fn before_append<'a>(
        &self,
        _caller: &Caller,
        _events: &[GuardedEvent<'a>],
        _batch: bool,
    ) -> Result<(), AppendError> {
        Ok(())
    }

    /// Called after the store acknowledged the append, with the receipts in request order
    /// (duplicates included, marked) and, in the same order, each event's payload plus
    /// metadata size. Must not fail the append: it has happened.
    async fn after_append(
        &self,
        _caller: &Caller,
        _receipts: &[AppendReceipt],
        _body_bytes: &[usize],
    ) {
    }
}

/// The append use case.
#[derive(Clone)]
pub struct AppendEvents {
    store: Arc<dyn EventStore>,
    limits: AppendLimits,
    guards: Vec<Arc<dyn AppendGuard>>,
    metrics: AppendMetrics,
}

/// The use case's measurements (see docs/OPERATIONS.md, "Metrics"): handles taken when it is
/// built (after the binary installed its recorder), so an append records with a few atomic
/// operations and no lookup in the recorder's registry.
#[derive(Clone)]
struct AppendMetrics {
    duration_seconds: metrics::Histogram,
    events_appended: metrics::Counter,
}

impl AppendMetrics {
    fn new() -> Self {
        Self {
            duration_seconds: metrics::histogram!("allsource_append_duration_seconds"),
            events_appended: metrics::counter!("allsource_events_appended_total"),
        }
    }
}

impl AppendEvents {
    /// Takes the metrics handles of the recorder installed now (none: they record nothing).
    pub fn new(store: Arc<dyn EventStore>, limits: AppendLimits) -> Self {
        Self {
            store,
            limits,
            guards: Vec::new(),
            metrics: AppendMetrics::new(),
        }
    }

    /// Adds a guard; guards run in the order they were added.
    #[must_use]
    pub fn with_guard(mut self, guard: Arc<dyn AppendGuard>) -> Self {
        self.guards.push(guard);
        self
    }

    pub fn limits(&self) -> AppendLimits {
        self.limits
    }

    /// Appends one event (`POST /api/v1/events`). Field errors name fields without a prefix.
    ///
    /// # Errors
    /// See [`AppendError`].
    pub async fn one(
        &self,
        caller: &Caller,
        input: AppendEventInput,
    ) -> Result<AppendReceipt, AppendError> {
        let mut reply = self.append(caller, vec![input], false).await?;
        reply
            .receipts
            .pop()
            .ok_or_else(|| AppendError::Internal(anyhow::anyhow!("store answered no receipt")))
    }

    /// Appends a batch atomically (`POST /api/v1/events/batch`). Field errors are named
    /// `events[i].field`.
    ///
    /// # Errors
    /// See [`AppendError`].
    pub async fn batch(
        &self,
        caller: &Caller,
        inputs: Vec<AppendEventInput>,
    ) -> Result<AppendReply, AppendError> {
        self.append(caller, inputs, true).await
    }

    #[tracing::instrument(name = "append", skip_all, fields(tenant = %caller.tenant(), events = inputs.len()))]
    async fn append(
        &self,
        caller: &Caller,
        inputs: Vec<AppendEventInput>,
        batch: bool,
    ) -> Result<AppendReply, AppendError> {
        if inputs.is_empty() {
            return Err(AppendError::Invalid(vec![FieldError::new(
                "events",
                "must contain at least one event",
            )]));
        }
        if inputs.len() > self.limits.max_batch_events {
            return Err(AppendError::BatchTooLarge {
                count: inputs.len(),
                limit: self.limits.max_batch_events,
            });
        }
        let at = |index: usize| batch.then_some(index);
        // Which ids the client chose (only those can be retries of stored events).
        let client_ids: Vec<bool> = inputs.iter().map(|i| i.id.is_some()).collect();
        let events = self.validate(inputs, batch)?;
        let expected_count = events.len();
        if !self.guards.is_empty() {
            self.guard(caller, &events, &client_ids, batch).await?;
        }
        // What the guards are told afterwards: sizes, not copies of the events.
        let body_bytes: Vec<usize> = if self.guards.is_empty() {
            Vec::new()
        } else {
            events.iter().map(ProposedEvent::body_bytes).collect()
        };
        // The store's part of an append (the commit group and its fsync on the embedded store,
        // the transaction on PostgreSQL), measured for `allsource_append_duration_seconds`.
        let started = std::time::Instant::now();
        let stored = self.store.append(caller.tenant(), events).await;
        self.metrics
            .duration_seconds
            .record(started.elapsed().as_secs_f64());
        let receipts = stored.map_err(|e| match e {
            StoreAppendError::Rejected(AppendRejection::VersionConflict {
                index,
                entity_id,
                expected,
                current,
            }) => AppendError::VersionConflict {
                index: at(index),
                entity_id,
                expected,
                current,
            },
            StoreAppendError::Rejected(AppendRejection::DuplicateEventId { index, event_id }) => {
                AppendError::DuplicateEventId {
                    index: at(index),
                    event_id,
                }
            }
            StoreAppendError::Unavailable(why) => AppendError::Unavailable(why),
            StoreAppendError::Internal(e) => AppendError::Internal(e),
        })?;
        if receipts.len() != expected_count {
            return Err(AppendError::Internal(anyhow::anyhow!(
                "store answered {} receipts for {} events",
                receipts.len(),
                expected_count
            )));
        }
        self.metrics
            .events_appended
            .increment(receipts.len() as u64);
        for guard in &self.guards {
            guard.after_append(caller, &receipts, &body_bytes).await;
        }
        Ok(AppendReply { receipts })
    }

    /// Runs the guards. A refusal that a retry could cause (a schema or a quota that changed
    /// since the first attempt) is looked at again without the events that are exact retries
    /// of stored ones: they are answered by the store with their original receipts, whatever
    /// the guards say about them now. Costs nothing while the guards accept.
    async fn guard(
        &self,
        caller: &Caller,
        events: &[ProposedEvent],
        client_ids: &[bool],
        batch: bool,
    ) -> Result<(), AppendError> {
        let all = GuardedEvent::all(events);
        let refusal = match self.run_guards(caller, &all, batch).await {
            Ok(()) => return Ok(()),
            Err(e @ (AppendError::SchemaViolation(_) | AppendError::QuotaExceeded(_))) => e,
            Err(other) => return Err(other),
        };
        let mut fresh = Vec::with_capacity(events.len());
        let mut retries = 0usize;
        for (view, (event, client_id)) in all.iter().zip(events.iter().zip(client_ids)) {
            if *client_id && self.is_retry(caller, event).await {
                retries += 1;
            } else {
                fresh.push(*view);
            }
        }
        if retries == 0 {
            return Err(refusal);
        }
        if fresh.is_empty() {
            return Ok(());
        }
        self.run_guards(caller, &fresh, batch).await
    }

    async fn run_guards(
        &self,
        caller: &Caller,
        events: &[GuardedEvent<'_>],
        batch: bool,
    ) -> Result<(), AppendError> {
        for guard in &self.guards {
            guard.before_append(caller, events, batch).await?;
        }
        Ok(())
    }

    /// Whether the event is stored already with the same content. A store that cannot answer
    /// says no: the refusal then stands.
    async fn is_retry(&self, caller: &Caller, event: &ProposedEvent) -> bool {
        match self.store.get_event(caller.tenant(), event.id).await {
            Ok(Some(stored)) => same_content(&stored, event),
            Ok(None) => false,
            Err(e) => {
                tracing::debug!(error = %e, "could not look a possible retry up");
                false
            }
        }
    }

    /// Validates every event, reporting all field errors at once; size is checked per event and
    /// reported as 413 (after field errors, which are the client's first problem).
    fn validate(
        &self,
        inputs: Vec<AppendEventInput>,
        batch: bool,
    ) -> Result<Vec<ProposedEvent>, AppendError> {
        let mut errors = Errors::default();
        let mut too_large = None;
        let mut seen_ids = HashSet::with_capacity(inputs.len());
        let mut events = Vec::with_capacity(inputs.len());
        for (index, input) in inputs.into_iter().enumerate() {
            let name = |field: &str| {
                if batch {
                    format!("events[{index}].{field}")
                } else {
                    field.to_owned()
                }
            };
            let id = match input.id.as_deref() {
                None => Some(EventId::generate()),
                Some(raw) => errors.check_named(|| name("id"), EventId::parse(raw)),
            };
            if let Some(id) = id
                && !seen_ids.insert(id)
            {
                errors.push(name("id"), "appears twice in the batch");
            }
            let entity_id = match input.entity_id.as_deref() {
                None => {
                    errors.push(name("entity_id"), "is required");
                    None
                }
                Some(raw) => errors.check_named(|| name("entity_id"), EntityId::parse(raw)),
            };
            let event_type = match input.event_type.as_deref() {
                None => {
                    errors.push(name("event_type"), "is required");
                    None
                }
                Some(raw) => errors.check_named(|| name("event_type"), EventType::parse(raw)),
            };
            let payload = match input.payload {
                None => {
                    errors.push(name("payload"), "is required");
                    None
                }
                Some(p) => readable(p, || name("payload"), &mut errors),
            };
            let metadata = match input.metadata {
                Some(m) if m.get() == "null" => None,
                Some(m) if !m.get().trim_start().starts_with('{') => {
                    errors.push(name("metadata"), "must be a JSON object");
                    None
                }
                Some(m) => readable(m, || name("metadata"), &mut errors),
                None => None,
            };
            let expected_version = match parse_expected(input.expected_version.as_ref()) {
                Ok(v) => Some(v),
                Err(message) => {
                    errors.push(name("expected_version"), message);
                    None
                }
            };
            let (Some(id), Some(entity_id), Some(event_type), Some(payload), Some(expected)) =
                (id, entity_id, event_type, payload, expected_version)
            else {
                continue;
            };
            let event = ProposedEvent {
                id,
                entity_id,
                event_type,
                payload,
                metadata,
                expected_version: expected,
            };
            let bytes = event.body_bytes();
            if bytes > self.limits.max_event_bytes && too_large.is_none() {
                too_large = Some(AppendError::EventTooLarge {
                    index: batch.then_some(index),
                    bytes,
                    limit: self.limits.max_event_bytes,
                });
            }
            events.push(event);
        }
        if !errors.is_empty() {
            return Err(AppendError::Invalid(errors.0));
        }
        if let Some(e) = too_large {
            return Err(e);
        }
        Ok(events)
    }
}

/// The JSON if every reader can read it (see [`allsource_domain::payload`]); otherwise a field
/// error.
fn readable(
    json: JsonPayload,
    field: impl FnOnce() -> String,
    errors: &mut Errors,
) -> Option<JsonPayload> {
    match check_payload(json.get()) {
        Ok(()) => Some(json),
        Err(problem) => {
            errors.push(field(), problem.to_string());
            None
        }
    }
}

fn parse_expected(raw: Option<&serde_json::Value>) -> Result<ExpectedVersion, &'static str> {
    const MESSAGE: &str =
        "must be \"any\", \"no_stream\", \"stream_exists\" or a non-negative integer";
    match raw {
        None | Some(serde_json::Value::Null) => Ok(ExpectedVersion::Any),
        Some(serde_json::Value::String(word)) => ExpectedVersion::from_word(word).ok_or(MESSAGE),
        Some(serde_json::Value::Number(n)) => n.as_u64().map(ExpectedVersion::Exact).ok_or(MESSAGE),
        Some(_) => Err(MESSAGE),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::MockEventStore;
    use allsource_domain::{Position, Version};
    use chrono::Utc;
    use serde_json::json;
    use serde_json::value::RawValue;

    fn raw(json: &str) -> JsonPayload {
        RawValue::from_string(json.to_owned()).unwrap()
    }

    fn input(entity: &str, event_type: &str) -> AppendEventInput {
        AppendEventInput {
            entity_id: Some(entity.into()),
            event_type: Some(event_type.into()),
            payload: Some(raw(r#"{"a":1}"#)),
            ..Default::default()
        }
    }

    /// The receipts of a store that appends every event, numbered from 1.
    fn fresh_receipts(events: &[ProposedEvent]) -> Vec<AppendReceipt> {
        events
            .iter()
            .enumerate()
            .map(|(i, e)| AppendReceipt {
                event_id: e.id,
                entity_id: e.entity_id.clone(),
                version: Version::new(i as u64 + 1),
                position: Position::new(i as u64 + 1),
                timestamp: Utc::now(),
                duplicate: false,
            })
            .collect()
    }

    /// A store that accepts everything and numbers events from 1.
    fn accepting_store() -> MockEventStore {
        let mut store = MockEventStore::new();
        store
            .expect_append()
            .returning(|_, events| Ok(fresh_receipts(&events)));
        store
    }

    fn use_case(store: MockEventStore) -> AppendEvents {
        AppendEvents::new(Arc::new(store), AppendLimits::default())
    }

    fn never_called() -> MockEventStore {
        let mut store = MockEventStore::new();
        store.expect_append().never();
        store
    }

    #[tokio::test]
    async fn assigns_v7_ids_and_passes_events_in_order() {
        let mut store = MockEventStore::new();
        store
            .expect_append()
            .withf(|tenant, events| {
                tenant.as_str() == "default"
                    && events.len() == 2
                    && events[0].entity_id.as_str() == "a"
                    && events[1].entity_id.as_str() == "b"
                    && events[0].id.as_uuid().get_version_num() == 7
                    && events[1].expected_version == ExpectedVersion::Exact(0)
            })
            .returning(|_, events| Ok(fresh_receipts(&events)));
        let mut second = input("b", "t");
        second.expected_version = Some(json!(0));
        let reply = use_case(store)
            .batch(&Caller::default_tenant(), vec![input("a", "t"), second])
            .await
            .unwrap();
        assert_eq!(reply.receipts.len(), 2);
        assert_eq!(reply.ingested(), 2);
    }

    #[tokio::test]
    async fn keeps_client_ids() {
        let id = uuid::Uuid::new_v4();
        let mut store = MockEventStore::new();
        store
            .expect_append()
            .withf(move |_, events| events[0].id.as_uuid() == id)
            .returning(|_, events| {
                Ok(vec![AppendReceipt {
                    event_id: events[0].id,
                    entity_id: events[0].entity_id.clone(),
                    version: Version::new(1),
                    position: Position::new(1),
                    timestamp: Utc::now(),
                    duplicate: true,
                }])
            });
        let mut one = input("a", "t");
        one.id = Some(id.to_string());
        let receipt = use_case(store)
            .one(&Caller::default_tenant(), one)
            .await
            .unwrap();
        assert!(receipt.duplicate);
    }

    #[tokio::test]
    async fn reports_every_field_error_with_batch_paths_and_appends_nothing() {
        let bad = AppendEventInput {
            id: Some("nope".into()),
            entity_id: Some(" padded".into()),
            event_type: Some("a..b".into()),
            payload: None,
            metadata: Some(raw("[1]")),
            expected_version: Some(json!("sometimes")),
        };
        let err = use_case(never_called())
            .batch(&Caller::default_tenant(), vec![input("ok", "t"), bad])
            .await
            .unwrap_err();
        let AppendError::Invalid(errors) = err else {
            panic!("expected invalid, got {err:?}")
        };
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "events[1].id",
                "events[1].entity_id",
                "events[1].event_type",
                "events[1].payload",
                "events[1].metadata",
                "events[1].expected_version"
            ]
        );
    }

    #[tokio::test]
    async fn single_event_errors_have_plain_field_names() {
        let err = use_case(never_called())
            .one(&Caller::default_tenant(), AppendEventInput::default())
            .await
            .unwrap_err();
        let AppendError::Invalid(errors) = err else {
            panic!()
        };
        assert_eq!(errors[0].field, "entity_id");
        assert_eq!(errors[0].message, "is required");
    }

    #[tokio::test]
    async fn expected_version_forms() {
        for (raw, expected) in [
            (None, Ok(ExpectedVersion::Any)),
            (Some(json!(null)), Ok(ExpectedVersion::Any)),
            (Some(json!("no_stream")), Ok(ExpectedVersion::NoStream)),
            (
                Some(json!("stream_exists")),
                Ok(ExpectedVersion::StreamExists),
            ),
            (Some(json!(7)), Ok(ExpectedVersion::Exact(7))),
        ] {
            assert_eq!(parse_expected(raw.as_ref()), expected);
        }
        for bad in [json!(-1), json!(1.5), json!("ANY"), json!([1]), json!(true)] {
            assert!(parse_expected(Some(&bad)).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn null_metadata_is_absent_and_object_metadata_is_kept() {
        let mut store = MockEventStore::new();
        store
            .expect_append()
            .withf(|_, events| {
                events[0].metadata.is_none()
                    && events[1].metadata.as_ref().map(|m| m.get()) == Some(r#"{"c":1}"#)
            })
            .returning(|_, events| Ok(fresh_receipts(&events)));
        let mut a = input("a", "t");
        a.metadata = Some(raw("null"));
        let mut b = input("b", "t");
        b.metadata = Some(raw(r#"{"c":1}"#));
        use_case(store)
            .batch(&Caller::default_tenant(), vec![a, b])
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn payloads_and_metadata_no_reader_could_read_are_refused_by_field() {
        let deep = |depth: usize| format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
        let too_deep = deep(allsource_domain::MAX_NESTING + 1);
        let deep_metadata = format!(r#"{{"m":{}}}"#, deep(allsource_domain::MAX_NESTING));
        for (payload, metadata, field, message) in [
            (
                too_deep.as_str(),
                None,
                "payload",
                "more than 64 levels deep",
            ),
            ("1e999", None, "payload", "finite 64-bit float: 1e999"),
            (r#"{"n":-1e400000000}"#, None, "payload", "finite"),
            (
                r#"{"s":"\ud800"}"#,
                None,
                "payload",
                "lone UTF-16 surrogate",
            ),
            (
                "{}",
                Some(deep_metadata.as_str()),
                "metadata",
                "more than 64 levels deep",
            ),
            ("{}", Some(r#"{"n":1e999}"#), "metadata", "finite"),
            ("{}", Some(r#"{"\udc00":1}"#), "metadata", "surrogate"),
        ] {
            let mut bad = input("b", "t");
            bad.payload = Some(raw(payload));
            bad.metadata = metadata.map(raw);
            let err = use_case(never_called())
                .batch(&Caller::default_tenant(), vec![input("a", "t"), bad])
                .await
                .unwrap_err();
            let AppendError::Invalid(errors) = err else {
                panic!("{payload}: expected invalid, got {err:?}")
            };
            assert_eq!(errors.len(), 1, "{payload}: {errors:?}");
            assert_eq!(errors[0].field, format!("events[1].{field}"));
            assert!(
                errors[0].message.contains(message),
                "{payload}: {}",
                errors[0].message
            );

            let mut one = input("a", "t");
            one.payload = Some(raw(payload));
            one.metadata = metadata.map(raw);
            let err = use_case(never_called())
                .one(&Caller::default_tenant(), one)
                .await
                .unwrap_err();
            assert!(
                matches!(&err, AppendError::Invalid(e) if e[0].field == field),
                "{err:?}"
            );
        }
    }

    #[tokio::test]
    async fn payloads_at_the_edges_of_the_rules_are_stored_as_sent() {
        let deep = format!(
            "{}1{}",
            "[".repeat(allsource_domain::MAX_NESTING),
            "]".repeat(allsource_domain::MAX_NESTING)
        );
        let edgy =
            r#"{"big":18446744073709551615,"z":-0,"max":1e308,"tiny":1e-400,"s":"\ud83d\ude00"}"#;
        let sent = [deep.clone(), edgy.to_owned()];
        let expected = sent.clone();
        let mut store = MockEventStore::new();
        store
            .expect_append()
            .withf(move |_, events| {
                events.iter().map(|e| e.payload.get()).eq(expected.iter())
                    && events[1].metadata.as_ref().map(|m| m.get()) == Some(edgy)
            })
            .returning(|_, events| Ok(fresh_receipts(&events)));
        let inputs = sent
            .iter()
            .map(|p| {
                let mut i = input("a", "t");
                i.payload = Some(raw(p));
                i.metadata = Some(raw(edgy));
                i
            })
            .collect();
        use_case(store)
            .batch(&Caller::default_tenant(), inputs)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn duplicate_ids_within_a_batch_are_invalid() {
        let id = uuid::Uuid::now_v7().to_string();
        let mut a = input("a", "t");
        a.id = Some(id.clone());
        let mut b = input("b", "t");
        b.id = Some(id);
        let err = use_case(never_called())
            .batch(&Caller::default_tenant(), vec![a, b])
            .await
            .unwrap_err();
        assert!(
            matches!(&err, AppendError::Invalid(e) if e[0].field == "events[1].id"),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn empty_and_oversized_batches_are_refused() {
        let uc = AppendEvents::new(
            Arc::new(never_called()),
            AppendLimits {
                max_event_bytes: 16,
                max_batch_events: 2,
            },
        );
        let caller = Caller::default_tenant();
        assert!(matches!(
            uc.batch(&caller, vec![]).await,
            Err(AppendError::Invalid(_))
        ));
        assert!(matches!(
            uc.batch(&caller, (0..3).map(|_| input("a", "t")).collect())
                .await,
            Err(AppendError::BatchTooLarge { count: 3, limit: 2 })
        ));
        let mut big = input("a", "t");
        big.payload = Some(raw(r#"{"data":"0123456789"}"#));
        assert!(matches!(
            uc.batch(&caller, vec![input("a", "t"), big]).await,
            Err(AppendError::EventTooLarge {
                index: Some(1),
                bytes: 21,
                limit: 16
            })
        ));
    }

    #[tokio::test]
    async fn store_rejections_map_to_use_case_errors_with_batch_index() {
        let entity = EntityId::parse("a").unwrap();
        let mut store = MockEventStore::new();
        let e = entity.clone();
        store.expect_append().returning(move |_, _| {
            Err(StoreAppendError::Rejected(
                AppendRejection::VersionConflict {
                    index: 1,
                    entity_id: e.clone(),
                    expected: ExpectedVersion::NoStream,
                    current: 3,
                },
            ))
        });
        let err = use_case(store)
            .batch(
                &Caller::default_tenant(),
                vec![input("b", "t"), input("a", "t")],
            )
            .await
            .unwrap_err();
        assert!(matches!(
            err,
            AppendError::VersionConflict {
                index: Some(1),
                current: 3,
                expected: ExpectedVersion::NoStream,
                ..
            }
        ));

        let mut store = MockEventStore::new();
        let id = EventId::generate();
        store.expect_append().returning(move |_, _| {
            Err(StoreAppendError::Rejected(
                AppendRejection::DuplicateEventId {
                    index: 0,
                    event_id: id,
                },
            ))
        });
        let err = use_case(store)
            .one(&Caller::default_tenant(), input("a", "t"))
            .await
            .unwrap_err();
        assert!(matches!(
            err,
            AppendError::DuplicateEventId { index: None, .. }
        ));

        let mut store = MockEventStore::new();
        store
            .expect_append()
            .returning(|_, _| Err(StoreAppendError::Unavailable("shutting down".into())));
        assert!(matches!(
            use_case(store)
                .one(&Caller::default_tenant(), input("a", "t"))
                .await,
            Err(AppendError::Unavailable(_))
        ));
    }

    #[tokio::test]
    async fn a_store_that_loses_receipts_is_an_internal_error() {
        let mut store = MockEventStore::new();
        store.expect_append().returning(|_, _| Ok(vec![]));
        assert!(matches!(
            use_case(store)
                .one(&Caller::default_tenant(), input("a", "t"))
                .await,
            Err(AppendError::Internal(_))
        ));
        // and the accepting store is fine
        assert!(
            use_case(accepting_store())
                .one(&Caller::default_tenant(), input("a", "t"))
                .await
                .is_ok()
        );
    }
    fn quota_exceeded() -> AppendError {
        AppendError::QuotaExceeded(QuotaExceeded {
            quota: "max_events_per_day".into(),
            limit: 1,
            used: 1,
            retry_after_secs: 60,
        })
    }

    /// The stored form of `input` (as if appended earlier at version 1).
    fn stored(id: EventId, input: &AppendEventInput) -> Arc<allsource_domain::Event> {
        Arc::new(
            ProposedEvent {
                id,
                entity_id: EntityId::parse(input.entity_id.as_deref().unwrap()).unwrap(),
                event_type: EventType::parse(input.event_type.as_deref().unwrap()).unwrap(),
                payload: input.payload.clone().unwrap(),
                metadata: None,
                expected_version: ExpectedVersion::Any,
            }
            .into_event(
                allsource_domain::TenantId::default_tenant(),
                Version::new(1),
                Position::new(7),
                Utc::now(),
            ),
        )
    }

    /// A store holding `stored`; appends answer duplicates for it and new receipts otherwise.
    fn store_holding(stored: Arc<allsource_domain::Event>) -> MockEventStore {
        let mut store = MockEventStore::new();
        let held = stored.clone();
        store
            .expect_get_event()
            .returning(move |_, id| Ok((id == held.id).then(|| held.clone())));
        store.expect_append().times(1).returning(move |_, events| {
            Ok(events
                .iter()
                .enumerate()
                .map(|(i, e)| {
                    if e.id == stored.id {
                        AppendReceipt::for_event(&stored, true)
                    } else {
                        AppendReceipt {
                            event_id: e.id,
                            entity_id: e.entity_id.clone(),
                            version: Version::new(2),
                            position: Position::new(8 + i as u64),
                            timestamp: Utc::now(),
                            duplicate: false,
                        }
                    }
                })
                .collect())
        });
        store
    }

    #[tokio::test]
    async fn a_retry_refused_by_a_quota_gets_its_original_receipt() {
        let id = EventId::generate();
        let mut retry = input("a", "t");
        retry.id = Some(id.to_string());
        let original = stored(id, &retry);
        let mut guard = MockAppendGuard::new();
        // Asked once, about the whole request; not again once it is known to be a retry.
        guard
            .expect_before_append()
            .times(1)
            .returning(|_, _, _| Err(quota_exceeded()));
        guard.expect_after_append().times(1).return_const(());
        let uc = use_case(store_holding(original.clone())).with_guard(Arc::new(guard));
        let receipt = uc.one(&Caller::default_tenant(), retry).await.unwrap();
        assert_eq!(receipt, AppendReceipt::for_event(&original, true));
    }

    #[tokio::test]
    async fn a_mixed_batch_puts_only_its_new_events_to_the_guards_again() {
        let id = EventId::generate();
        let mut retry = input("a", "t");
        retry.id = Some(id.to_string());
        let original = stored(id, &retry);
        let mut guard = MockAppendGuard::new();
        let mut seq = mockall::Sequence::new();
        guard
            .expect_before_append()
            .withf(|_, events, batch| events.len() == 2 && *batch)
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_, _, _| {
                Err(AppendError::SchemaViolation(vec![FieldError::new(
                    "events[0].payload/a",
                    "must be a string",
                )]))
            });
        guard
            .expect_before_append()
            .withf(|_, events, _| {
                events.len() == 1 && events[0].index == 1 && events[0].entity_id.as_str() == "b"
            })
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_, _, _| Ok(()));
        guard
            .expect_after_append()
            .withf(|_, receipts, sizes| {
                receipts.len() == 2
                    && receipts[0].duplicate
                    && !receipts[1].duplicate
                    && sizes == [7, 7]
            })
            .times(1)
            .return_const(());
        let uc = use_case(store_holding(original.clone())).with_guard(Arc::new(guard));
        let reply = uc
            .batch(&Caller::default_tenant(), vec![retry, input("b", "t")])
            .await
            .unwrap();
        assert_eq!(reply.receipts[0], AppendReceipt::for_event(&original, true));
        assert_eq!(reply.ingested(), 1);
    }

    #[tokio::test]
    async fn a_mixed_batch_whose_new_events_are_refused_appends_nothing() {
        let id = EventId::generate();
        let mut retry = input("a", "t");
        retry.id = Some(id.to_string());
        let original = stored(id, &retry);
        let mut store = MockEventStore::new();
        store
            .expect_get_event()
            .returning(move |_, _| Ok(Some(original.clone())));
        store.expect_append().never();
        let mut guard = MockAppendGuard::new();
        guard
            .expect_before_append()
            .times(2)
            .returning(|_, _, _| Err(quota_exceeded()));
        let uc = use_case(store).with_guard(Arc::new(guard));
        let err = uc
            .batch(&Caller::default_tenant(), vec![retry, input("b", "t")])
            .await
            .unwrap_err();
        assert!(matches!(err, AppendError::QuotaExceeded(_)), "{err:?}");
    }

    #[tokio::test]
    async fn a_refusal_stands_for_new_ids_other_content_and_other_errors() {
        let caller = Caller::default_tenant();
        // An id the store does not hold, and one it holds with other content: not retries.
        let unknown = EventId::generate();
        let taken = EventId::generate();
        let mut other = input("a", "t");
        other.payload = Some(raw(r#"{"a":2}"#));
        let held = stored(taken, &other);
        let mut store = MockEventStore::new();
        store
            .expect_get_event()
            .returning(move |_, id| Ok((id == taken).then(|| held.clone())));
        store.expect_append().never();
        let mut guard = MockAppendGuard::new();
        guard
            .expect_before_append()
            .times(1)
            .returning(|_, _, _| Err(quota_exceeded()));
        let uc = use_case(store).with_guard(Arc::new(guard));
        let (mut a, mut b) = (input("a", "t"), input("a", "t"));
        a.id = Some(unknown.to_string());
        b.id = Some(taken.to_string());
        assert!(matches!(
            uc.batch(&caller, vec![a, b]).await,
            Err(AppendError::QuotaExceeded(_))
        ));
        // Generated ids are never looked up, and a refusal a retry cannot explain (here a
        // deactivated tenant) is not looked into.
        let mut store = MockEventStore::new();
        store.expect_get_event().never();
        store.expect_append().never();
        let mut guard = MockAppendGuard::new();
        guard
            .expect_before_append()
            .times(1)
            .returning(|_, _, _| Err(quota_exceeded()));
        let uc = use_case(store).with_guard(Arc::new(guard));
        assert!(uc.one(&caller, input("a", "t")).await.is_err());
        let mut store = MockEventStore::new();
        store.expect_get_event().never();
        let mut guard = MockAppendGuard::new();
        guard
            .expect_before_append()
            .returning(|_, _, _| Err(AppendError::Forbidden("deactivated".into())));
        let uc = use_case(store).with_guard(Arc::new(guard));
        let mut c = input("a", "t");
        c.id = Some(EventId::generate().to_string());
        assert!(matches!(
            uc.one(&caller, c).await,
            Err(AppendError::Forbidden(_))
        ));
    }
}
