//! Router tests with a mocked store: every route's answer, every problem shape, the extractors
//! and the middleware, through `tower::ServiceExt::oneshot` on the real router.

use std::sync::{Arc, Mutex};

use allsource_application::Caller;
use allsource_application::ports::clock::MockClock;
use allsource_application::ports::{
    AppendReceipt, EntityPage, EntitySummary, EventStore, EventTypeCount, MockEventStore,
    NoCompaction, QueryPage, SortOrder, StoreAppendError, StoreError, StoreStats,
};
use allsource_application::ports::{MockStateStore, StateEntry, StateError};
use allsource_application::use_cases::{
    AppendEvents, AppendLimits, ReadEvents, SnapshotPolicy, Snapshots,
};
use allsource_domain::{
    AppendRejection, EntityId, Event, EventId, EventType, ExpectedVersion, Position, TenantId,
    Version,
};
use axum::body::{Body, Bytes, to_bytes};
use axum::http::{HeaderMap, Request, StatusCode};
use axum::{Extension, Router};
use chrono::{DateTime, Duration, TimeZone, Utc};
use serde_json::value::RawValue;
use serde_json::{Value, json};
use tower::ServiceExt;
use uuid::Uuid;

use crate::{AppState, HttpLimits, router};

// ---------------------------------------------------------------------------------------------
// Helpers

const ID_1: &str = "0193a5b4-7c1e-7d2a-9f00-1c2d3e4f5a6b";
const ID_2: &str = "0193a5b4-7c1e-7d2a-9f00-000000000002";

/// Projections and replays over a state store no call may reach (router tests that are not
/// about projections).
pub(crate) fn idle_projections(
    store: &Arc<dyn EventStore>,
) -> (
    allsource_application::projections::Projections,
    allsource_application::projections::ReplayJobs,
) {
    let engine = Arc::new(allsource_application::projections::ProjectionEngine::new(
        Arc::clone(store),
        Arc::new(allsource_application::ports::MockStateStore::new()),
        100,
    ));
    (
        allsource_application::projections::Projections::new(
            Arc::clone(&engine),
            Arc::new(allsource_application::quota::Unlimited),
        ),
        allsource_application::projections::ReplayJobs::new(engine),
    )
}

/// Consumer groups over mocks that are never called (their routes are tested in `tests/`).
pub(crate) fn idle_consumer_groups()
-> allsource_application::use_cases::consumer_groups::ConsumerGroups {
    use allsource_application::ports::clock::MockClock;
    use allsource_application::ports::{MockAuditLog, MockStateStore};
    allsource_application::use_cases::consumer_groups::ConsumerGroups::new(
        Arc::new(MockEventStore::new()),
        Arc::new(allsource_application::subscriptions::CommitFeed::default()),
        Arc::new(MockStateStore::new()),
        Arc::new(MockAuditLog::new()),
        Arc::new(MockClock::new()),
    )
}

/// Webhooks over a state store and a sender no call may reach (router tests that are not
/// about webhooks; theirs are in `tests/`).
pub(crate) fn idle_webhooks(
    store: &Arc<dyn EventStore>,
) -> allsource_application::webhooks::Webhooks {
    use allsource_application::webhooks::{WebhookConfig, WebhookDeps, Webhooks};
    let mut audit = allsource_application::ports::MockAuditLog::new();
    audit.expect_record().returning(|_| Ok(()));
    Webhooks::new(
        WebhookDeps {
            store: Arc::clone(store),
            feed: Arc::new(allsource_application::subscriptions::CommitFeed::default()),
            state: Arc::new(allsource_application::ports::MockStateStore::new()),
            sender: Arc::new(allsource_application::ports::MockWebhookSender::new()),
            encoder: Arc::new(crate::handlers::webhooks::EventJson),
            quotas: Arc::new(allsource_application::quota::Unlimited),
            audit: Arc::new(audit),
            tenants: Arc::new(allsource_application::quota::Unlimited),
        },
        WebhookConfig::default(),
    )
}

/// Analytics over an engine no test here calls (the analytics routes are tested in `tests/`).
pub(crate) fn idle_analytics() -> allsource_application::analytics::Analytics {
    allsource_application::analytics::Analytics::new(
        Arc::new(allsource_application::ports::MockSqlEngine::new()),
        Arc::new(MockClock::new()),
        allsource_application::analytics::AnalyticsConfig::default(),
    )
}

/// Pipelines over a state store no call may reach (router tests that are not about
/// pipelines; theirs are in `tests/`).
pub(crate) fn idle_pipelines(
    store: &Arc<dyn EventStore>,
) -> allsource_application::pipelines::Pipelines {
    use allsource_application::pipelines::{MockLookups, PipelineConfig, PipelineDeps, Pipelines};
    use allsource_application::use_cases::{AppendEvents, AppendLimits};
    Pipelines::new(
        PipelineDeps {
            store: Arc::clone(store),
            feed: Arc::new(allsource_application::subscriptions::CommitFeed::default()),
            state: Arc::new(allsource_application::ports::MockStateStore::new()),
            append: AppendEvents::new(Arc::clone(store), AppendLimits::default()),
            lookups: Arc::new(MockLookups::new()),
            quotas: Arc::new(allsource_application::quota::Unlimited),
            audit: Arc::new(allsource_application::ports::MockAuditLog::new()),
            tenants: Arc::new(allsource_application::quota::Unlimited),
        },
        PipelineConfig::default(),
    )
}

/// Consumers over `store` and a state store no test call may reach.
pub(crate) fn idle_consumers(
    store: &Arc<dyn EventStore>,
) -> allsource_application::use_cases::Consumers {
    use allsource_application::use_cases::{Consumers, ConsumersDeps};
    Consumers::new(ConsumersDeps {
        store: Arc::clone(store),
        state: Arc::new(untouched_state()),
        feed: Arc::new(allsource_application::subscriptions::CommitFeed::default()),
        audit: Arc::new(allsource_application::ports::MockAuditLog::new()),
        clock: Arc::new(allsource_application::ports::clock::MockClock::new()),
        quotas: Arc::new(allsource_application::quota::Unlimited),
    })
}

/// A schema registry over mocks that are never called (the router tests do not use it).
pub(crate) fn no_schemas() -> Arc<allsource_application::use_cases::SchemaRegistry> {
    use allsource_application::ports::clock::MockClock;
    use allsource_application::ports::{MockSchemaValidator, MockStateStore};
    use allsource_application::use_cases::{SchemaRegistry, SchemaSettings};
    Arc::new(SchemaRegistry::new(
        Arc::new(MockStateStore::new()),
        Arc::new(MockSchemaValidator::new()),
        Arc::new(MockClock::new()),
        SchemaSettings::default(),
    ))
}

fn app_with(store: MockEventStore, limits: AppendLimits, max_body_bytes: usize) -> Router {
    let store: Arc<dyn EventStore> = Arc::new(store);
    // The router tests do not touch projections; their own tests are in `tests/`.
    let engine = Arc::new(allsource_application::projections::ProjectionEngine::new(
        Arc::clone(&store),
        Arc::new(allsource_application::ports::MockStateStore::new()),
        100,
    ));
    router(
        AppState::from(crate::AppServices {
            append: AppendEvents::new(Arc::clone(&store), limits),
            reads: ReadEvents::new(Arc::clone(&store)),
            webhooks: idle_webhooks(&store),
            pipelines: idle_pipelines(&store),
            analytics: idle_analytics(),
            backups: allsource_application::use_cases::Backups::disabled(
                "no backup target in these tests",
            ),
            health: allsource_application::use_cases::Health::new("9.9.9", Arc::clone(&store)),
            auth: crate::AuthMode::Disabled,
            projections: allsource_application::projections::Projections::new(
                Arc::clone(&engine),
                Arc::new(allsource_application::quota::Unlimited),
            ),
            replays: allsource_application::projections::ReplayJobs::new(engine),
            schemas: no_schemas(),
            identity: None,
            snapshots: snapshots_with(Arc::clone(&store), untouched_state()),
            compaction: allsource_application::use_cases::Compaction::new(Arc::new(
                NoCompaction::new("memory"),
            )),
            audit: quiet_audit(),
            policies: no_policies(),
            admission: allsource_application::use_cases::Admission::off(),
            tenants: None,
            consumers: idle_consumers(&store),
            consumer_groups: crate::tests::idle_consumer_groups(),
        }),
        HttpLimits {
            max_body_bytes,
            ..HttpLimits::default()
        },
    )
}

/// A state store no test call may reach.
fn untouched_state() -> MockStateStore {
    let mut state = MockStateStore::new();
    state.expect_put().never();
    state.expect_list().never();
    state
}

fn snapshots_with(store: Arc<dyn EventStore>, state: MockStateStore) -> Snapshots {
    let mut clock = MockClock::new();
    clock.expect_now().returning(|| at(60));
    Snapshots::new(
        store,
        Arc::new(state),
        Arc::new(clock),
        SnapshotPolicy::default(),
    )
}

/// An audit trail that accepts everything and finds nothing.
pub(crate) fn quiet_audit() -> allsource_application::use_cases::AuditTrail {
    let mut log = allsource_application::ports::MockAuditLog::new();
    log.expect_record().returning(|_| Ok(()));
    log.expect_query().returning(|_| Ok(vec![]));
    allsource_application::use_cases::AuditTrail::new(Arc::new(log))
}

/// Snapshots over a state store no test call may reach.
pub(crate) fn quiet_snapshots(store: Arc<dyn EventStore>) -> Snapshots {
    snapshots_with(store, untouched_state())
}

/// A policy engine without policies.
pub(crate) fn no_policies() -> allsource_application::use_cases::Policies {
    let mut state = allsource_application::ports::MockStateStore::new();
    state.expect_list().returning(|_, _, _, _, _| Ok(vec![]));
    let mut clock = allsource_application::ports::clock::MockClock::new();
    clock.expect_now().returning(Utc::now);
    allsource_application::use_cases::Policies::new(
        Arc::new(state),
        Arc::new(allsource_application::ports::MockAuditLog::new()),
        Arc::new(clock),
        true,
    )
}

fn app(store: MockEventStore) -> Router {
    app_with(store, AppendLimits::default(), 1024 * 1024)
}

/// A store no test call may reach.
fn untouched() -> MockEventStore {
    let mut store = MockEventStore::new();
    store.expect_append().never();
    store.expect_query().never();
    store.expect_read_stream().never();
    store
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    raw: Bytes,
    body: Value,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn fields(&self) -> Vec<(String, String)> {
        self.body["errors"]
            .as_array()
            .map(|errors| {
                errors
                    .iter()
                    .map(|e| {
                        (
                            e["field"].as_str().unwrap_or("?").to_owned(),
                            e["message"].as_str().unwrap_or("?").to_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    fn field_names(&self) -> Vec<String> {
        self.fields().into_iter().map(|(f, _)| f).collect()
    }
}

async fn send(app: Router, request: Request<Body>) -> Reply {
    let response = app.oneshot(request).await.expect("infallible");
    let status = response.status();
    let headers = response.headers().clone();
    let raw = to_bytes(response.into_body(), usize::MAX)
        .await
        .expect("body");
    let body = serde_json::from_slice(&raw).unwrap_or(Value::Null);
    Reply {
        status,
        headers,
        raw,
        body,
    }
}

fn post(path: &str, body: impl Into<String>) -> Request<Body> {
    post_as(path, "application/json", body)
}

fn post_as(path: &str, content_type: &str, body: impl Into<String>) -> Request<Body> {
    Request::post(path)
        .header("content-type", content_type)
        .body(Body::from(body.into()))
        .expect("request")
}

fn get(path: &str) -> Request<Body> {
    Request::get(path).body(Body::empty()).expect("request")
}

/// 2026-11-22T10:15:00.123456Z plus `seconds`.
fn at(seconds: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 22, 10, 15, 0).unwrap()
        + Duration::microseconds(123_456)
        + Duration::seconds(seconds)
}

fn raw(json: &str) -> Box<RawValue> {
    RawValue::from_string(json.to_owned()).expect("valid JSON in test")
}

fn event(id: &str, entity: &str, version: u64, payload: &str) -> Arc<Event> {
    Arc::new(Event {
        id: EventId::parse(id).unwrap(),
        tenant_id: TenantId::default_tenant(),
        entity_id: EntityId::parse(entity).unwrap(),
        event_type: EventType::parse("order.placed").unwrap(),
        version: Version::new(version),
        position: Position::new(version + 10),
        timestamp: at(version as i64),
        payload: raw(payload),
        metadata: None,
    })
}

/// A store that accepts every append, numbering from version 1 / position 1.
fn accepting() -> MockEventStore {
    let mut store = MockEventStore::new();
    store.expect_append().returning(|_, events| {
        Ok(events
            .iter()
            .enumerate()
            .map(|(i, e)| AppendReceipt {
                event_id: e.id,
                entity_id: e.entity_id.clone(),
                version: Version::new(i as u64 + 1),
                position: Position::new(i as u64 + 1),
                timestamp: at(0),
                duplicate: false,
            })
            .collect())
    });
    store
}

/// Asserts the full problem frame: status, media type, type, title, error code, a detail, and a
/// request id.
fn assert_problem(reply: &Reply, status: u16, code: &str, title: &str) {
    assert_eq!(reply.status.as_u16(), status, "{}", reply.body);
    assert_eq!(
        reply.header("content-type"),
        Some("application/problem+json")
    );
    assert_eq!(
        reply.body["type"],
        format!("https://allsource.dev/problems/{}", code.replace('_', "-"))
    );
    assert_eq!(reply.body["title"], title);
    assert_eq!(reply.body["status"], status);
    assert_eq!(reply.body["error"], code);
    assert!(
        reply.body["detail"].as_str().is_some_and(|d| !d.is_empty()),
        "{}",
        reply.body
    );
    assert!(
        reply
            .header("x-request-id")
            .is_some_and(|id| !id.is_empty())
    );
}

fn assert_validation(reply: &Reply, fields: &[(&str, &str)]) {
    assert_problem(reply, 400, "validation_failed", "Validation failed");
    let expected: Vec<(String, String)> = fields
        .iter()
        .map(|(f, m)| ((*f).to_owned(), (*m).to_owned()))
        .collect();
    assert_eq!(reply.fields(), expected, "{}", reply.body);
}

/// Like [`assert_validation`], for messages that come from serde: only their beginning is
/// pinned (serde adds the position in the document).
fn assert_validation_prefix(reply: &Reply, field: &str, message_start: &str) {
    assert_problem(reply, 400, "validation_failed", "Validation failed");
    let fields = reply.fields();
    assert_eq!(fields.len(), 1, "{}", reply.body);
    assert_eq!(fields[0].0, field, "{}", reply.body);
    assert!(
        fields[0].1.starts_with(message_start),
        "{:?} should start with {message_start:?}",
        fields[0].1
    );
}

// ---------------------------------------------------------------------------------------------
// Appending

#[tokio::test]
async fn append_one_answers_the_receipt() {
    let reply = send(
        app(accepting()),
        post(
            "/api/v1/events",
            format!(
                r#"{{"id":"{ID_1}","entity_id":"order-42","event_type":"order.placed","payload":{{"a":1}}}}"#
            ),
        ),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert_eq!(
        reply.body,
        json!({
            "event_id": ID_1,
            "entity_id": "order-42",
            "version": 1,
            "position": 1,
            "timestamp": "2026-11-22T10:15:00.123456Z",
            "duplicate": false
        })
    );
}

#[tokio::test]
async fn append_passes_the_event_through_as_sent() {
    let mut store = MockEventStore::new();
    store
        .expect_append()
        .withf(|tenant, events| {
            let [e] = events.as_slice() else {
                return false;
            };
            tenant.as_str() == "default"
                && e.id.to_string() == ID_1
                && e.entity_id.as_str() == "order-42"
                && e.event_type.as_str() == "order.placed"
                // a JSON null payload is a payload, kept as the text "null"
                && e.payload.get() == "null"
                // metadata is the client's text, spacing included
                && e.metadata.as_ref().map(|m| m.get()) == Some(r#"{ "k" : "v" }"#)
                && e.expected_version == ExpectedVersion::Exact(3)
        })
        .times(1)
        .returning(|_, events| {
            Ok(vec![AppendReceipt::for_event(
                &events[0].clone().into_event(
                    TenantId::default_tenant(),
                    Version::new(4),
                    Position::new(9),
                    at(0),
                ),
                false,
            )])
        });
    let reply = send(
        app(store),
        post(
            "/api/v1/events",
            format!(
                r#"{{"id":"{ID_1}","entity_id":"order-42","event_type":"order.placed",
                    "payload":null,"metadata":{{ "k" : "v" }},"expected_version":3}}"#
            ),
        ),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body["version"], 4);
    assert_eq!(reply.body["position"], 9);
}

#[tokio::test]
async fn batch_answers_totals_and_receipts_in_request_order() {
    let mut store = MockEventStore::new();
    store
        .expect_append()
        .withf(|_, events| {
            events.len() == 2
                && events[0].entity_id.as_str() == "a"
                && events[1].entity_id.as_str() == "b"
                && events[1].expected_version == ExpectedVersion::NoStream
        })
        .returning(|_, events| {
            Ok(vec![
                AppendReceipt {
                    event_id: events[0].id,
                    entity_id: events[0].entity_id.clone(),
                    version: Version::new(7),
                    position: Position::new(70),
                    timestamp: at(-60),
                    duplicate: true,
                },
                AppendReceipt {
                    event_id: events[1].id,
                    entity_id: events[1].entity_id.clone(),
                    version: Version::new(1),
                    position: Position::new(71),
                    timestamp: at(0),
                    duplicate: false,
                },
            ])
        });
    let reply = send(
        app(store),
        post(
            "/api/v1/events/batch",
            format!(
                r#"{{"events":[
                    {{"id":"{ID_1}","entity_id":"a","event_type":"t","payload":1}},
                    {{"id":"{ID_2}","entity_id":"b","event_type":"t","payload":[],"expected_version":"no_stream"}}
                ]}}"#
            ),
        ),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(
        reply.body,
        json!({
            "total": 2,
            "ingested": 1,
            "events": [
                {"event_id": ID_1, "entity_id": "a", "version": 7, "position": 70,
                 "timestamp": "2026-11-22T10:14:00.123456Z", "duplicate": true},
                {"event_id": ID_2, "entity_id": "b", "version": 1, "position": 71,
                 "timestamp": "2026-11-22T10:15:00.123456Z", "duplicate": false}
            ]
        })
    );
}

#[tokio::test]
async fn missing_fields_are_required() {
    let reply = send(app(untouched()), post("/api/v1/events", "{}")).await;
    assert_validation(
        &reply,
        &[
            ("entity_id", "is required"),
            ("event_type", "is required"),
            ("payload", "is required"),
        ],
    );
    assert_eq!(reply.body["detail"], "3 fields are invalid; see errors");
}

#[tokio::test]
async fn invalid_values_are_reported_by_field_and_batch_index() {
    let reply = send(
        app(untouched()),
        post(
            "/api/v1/events/batch",
            r#"{"events":[
                {"entity_id":"a","event_type":"t","payload":1},
                {"entity_id":"a","event_type":"bad type","metadata":[1],"expected_version":"maybe"}
            ]}"#,
        ),
    )
    .await;
    assert_validation(
        &reply,
        &[
            (
                "events[1].event_type",
                "may only contain letters, digits, '.', '_' and '-'",
            ),
            ("events[1].payload", "is required"),
            ("events[1].metadata", "must be a JSON object"),
            (
                "events[1].expected_version",
                "must be \"any\", \"no_stream\", \"stream_exists\" or a non-negative integer",
            ),
        ],
    );
    let one = send(
        app(untouched()),
        post(
            "/api/v1/events",
            r#"{"id":"nope","entity_id":" a","event_type":"t","payload":1}"#,
        ),
    )
    .await;
    assert_validation(
        &one,
        &[
            ("id", "must be a UUID"),
            ("entity_id", "must not start or end with whitespace"),
        ],
    );
}

#[tokio::test]
async fn a_batch_needs_events() {
    for body in ["{}", r#"{"events":null}"#] {
        let reply = send(app(untouched()), post("/api/v1/events/batch", body)).await;
        assert_validation(&reply, &[("events", "is required")]);
        assert_eq!(reply.body["detail"], "events: is required");
    }
    let empty = send(
        app(untouched()),
        post("/api/v1/events/batch", r#"{"events":[]}"#),
    )
    .await;
    assert_validation(&empty, &[("events", "must contain at least one event")]);
}

#[tokio::test]
async fn unknown_fields_are_refused_with_their_path() {
    let app = app(untouched());
    let one = send(
        app.clone(),
        post(
            "/api/v1/events",
            r#"{"entity_id":"a","event_type":"t","payload":1,"paylod":2}"#,
        ),
    )
    .await;
    assert_validation_prefix(&one, "paylod", "unknown field `paylod`, expected one of");
    assert!(one.body["detail"].as_str().unwrap().contains("paylod"));

    let nested = send(
        app.clone(),
        post(
            "/api/v1/events/batch",
            r#"{"events":[{"entity_id":"a","event_type":"t","payload":1},
                          {"entity_id":"a","event_type":"t","payload":1},
                          {"entity_id":"a","event_type":"t","payload":1,"colour":"red"}]}"#,
        ),
    )
    .await;
    assert_validation_prefix(&nested, "events[2].colour", "unknown field `colour`");

    let top = send(
        app,
        post("/api/v1/events/batch", r#"{"events":[],"tenant_id":"x"}"#),
    )
    .await;
    assert_validation_prefix(&top, "tenant_id", "unknown field `tenant_id`");
}

#[tokio::test]
async fn type_errors_name_the_field_path() {
    let app = app(untouched());
    let batch = send(
        app.clone(),
        post(
            "/api/v1/events/batch",
            r#"{"events":[{"entity_id":"a","event_type":"t","payload":1},
                          {"entity_id":"b","event_type":"t","payload":{"deep":[1,{"x":null}]}},
                          {"entity_id":"c","event_type":"t","payload":"s"},
                          {"payload":{"before":"the bad field"},"entity_id":5,"event_type":"t"}]}"#,
        ),
    )
    .await;
    assert_validation_prefix(
        &batch,
        "events[3].entity_id",
        "invalid type: integer `5`, expected a string",
    );
    let one = send(
        app.clone(),
        post(
            "/api/v1/events",
            r#"{"id":5,"entity_id":"a","event_type":"t","payload":1}"#,
        ),
    )
    .await;
    assert_validation_prefix(&one, "id", "invalid type: integer `5`, expected a string");
    let not_a_list = send(
        app.clone(),
        post("/api/v1/events/batch", r#"{"events":{}}"#),
    )
    .await;
    assert_validation_prefix(
        &not_a_list,
        "events",
        "invalid type: map, expected a sequence",
    );
    let not_an_object = send(
        app,
        post(
            "/api/v1/events/batch",
            r#"{"events":[{"entity_id":"a"},[null,"a","t",1]]}"#,
        ),
    )
    .await;
    assert_validation_prefix(
        &not_an_object,
        "events[1]",
        "invalid type: sequence, expected a JSON object",
    );
}

#[tokio::test]
async fn malformed_json_is_a_validation_failure_of_the_body() {
    let app = app(untouched());
    for (body, message_start) in [
        ("{not json", "key must be a string"),
        ("", "EOF while parsing a value"),
        (r#"{"entity_id":"#, "EOF while parsing a value"),
        (
            r#"{"entity_id":"a","event_type":"t","payload":1} trailing"#,
            "trailing characters",
        ),
        (
            r#"[null,"a","t",1]"#,
            "invalid type: sequence, expected a JSON object",
        ),
        ("42", "invalid type: integer `42`, expected a JSON object"),
    ] {
        let reply = send(app.clone(), post("/api/v1/events", body)).await;
        assert_validation_prefix(&reply, "body", message_start);
    }
}

#[tokio::test]
async fn only_json_bodies_are_accepted() {
    let mut store = MockEventStore::new();
    store.expect_append().times(1).returning(|_, events| {
        Ok(vec![AppendReceipt {
            event_id: events[0].id,
            entity_id: events[0].entity_id.clone(),
            version: Version::new(1),
            position: Position::new(1),
            timestamp: at(0),
            duplicate: false,
        }])
    });
    let app = app(store);
    let body = r#"{"entity_id":"a","event_type":"t","payload":1}"#;
    for content_type in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "application/cloudevents+json",
        "application/json; charset=iso-8859-1",
    ] {
        let reply = send(app.clone(), post_as("/api/v1/events", content_type, body)).await;
        assert_problem(
            &reply,
            415,
            "unsupported_media_type",
            "Unsupported media type",
        );
        assert!(reply.body.get("errors").is_none());
    }
    let without = Request::post("/api/v1/events")
        .body(Body::from(body))
        .unwrap();
    assert_problem(
        &send(app.clone(), without).await,
        415,
        "unsupported_media_type",
        "Unsupported media type",
    );
    let charset = send(
        app,
        post_as("/api/v1/events", "application/json; charset=UTF-8", body),
    )
    .await;
    assert_eq!(charset.status, StatusCode::OK, "{}", charset.body);
}

#[tokio::test]
async fn a_body_over_the_limit_is_413() {
    let app = app_with(untouched(), AppendLimits::default(), 256);
    for path in ["/api/v1/events", "/api/v1/events/batch"] {
        let body = format!(r#"{{"payload":"{}"}}"#, "x".repeat(300));
        let reply = send(app.clone(), post(path, body)).await;
        assert_problem(&reply, 413, "payload_too_large", "Payload too large");
        assert_eq!(
            reply.body["detail"],
            "the request body is over the limit of 256 bytes"
        );
    }
    // Just under the limit is read (and then judged on its content).
    let body = format!(r#"{{"entity_id":"a","payload":"{}"}}"#, "x".repeat(200));
    let reply = send(app, post("/api/v1/events", body)).await;
    assert_validation(&reply, &[("event_type", "is required")]);
}

#[tokio::test]
async fn an_event_over_the_event_limit_is_413() {
    let limits = AppendLimits {
        max_event_bytes: 32,
        max_batch_events: 2,
    };
    let big = format!(r#""{}""#, "x".repeat(40));
    let one = send(
        app_with(untouched(), limits, 1 << 20),
        post(
            "/api/v1/events",
            format!(r#"{{"entity_id":"a","event_type":"t","payload":{big}}}"#),
        ),
    )
    .await;
    assert_problem(&one, 413, "payload_too_large", "Payload too large");
    assert_eq!(
        one.body["detail"],
        "the event's payload and metadata are 42 bytes, over the limit of 32"
    );
    assert!(one.body.get("errors").is_none());

    let batch = send(
        app_with(untouched(), limits, 1 << 20),
        post(
            "/api/v1/events/batch",
            format!(
                r#"{{"events":[{{"entity_id":"a","event_type":"t","payload":1}},
                               {{"entity_id":"a","event_type":"t","payload":{big}}}]}}"#
            ),
        ),
    )
    .await;
    assert_problem(&batch, 413, "payload_too_large", "Payload too large");
    assert_eq!(
        batch.fields(),
        [(
            "events[1].payload".to_owned(),
            "the event's payload and metadata are 42 bytes, over the limit of 32".to_owned()
        )]
    );

    let too_many = send(
        app_with(untouched(), limits, 1 << 20),
        post(
            "/api/v1/events/batch",
            r#"{"events":[{"entity_id":"a","event_type":"t","payload":1},
                          {"entity_id":"a","event_type":"t","payload":1},
                          {"entity_id":"a","event_type":"t","payload":1}]}"#,
        ),
    )
    .await;
    assert_problem(&too_many, 413, "payload_too_large", "Payload too large");
    assert_eq!(too_many.field_names(), ["events"]);
}

fn rejecting(rejection: AppendRejection) -> MockEventStore {
    let mut store = MockEventStore::new();
    store
        .expect_append()
        .times(1)
        .returning(move |_, _| Err(StoreAppendError::Rejected(rejection.clone())));
    store
}

#[tokio::test]
async fn a_version_conflict_in_a_batch_names_the_event() {
    let store = rejecting(AppendRejection::VersionConflict {
        index: 1,
        entity_id: EntityId::parse("a").unwrap(),
        expected: ExpectedVersion::NoStream,
        current: 3,
    });
    let reply = send(
        app(store),
        post(
            "/api/v1/events/batch",
            r#"{"events":[{"entity_id":"b","event_type":"t","payload":1},
                          {"entity_id":"a","event_type":"t","payload":1,"expected_version":"no_stream"}]}"#,
        ),
    )
    .await;
    assert_problem(&reply, 409, "version_conflict", "Version conflict");
    let detail = "entity 'a' is at version 3, the event expected no_stream";
    assert_eq!(
        reply.body,
        json!({
            "type": "https://allsource.dev/problems/version-conflict",
            "title": "Version conflict",
            "status": 409,
            "detail": detail,
            "error": "version_conflict",
            "entity_id": "a",
            "expected_version": "no_stream",
            "current_version": 3,
            "errors": [{"field": "events[1].expected_version", "message": detail}]
        })
    );
}

#[tokio::test]
async fn a_version_conflict_on_one_event_has_an_integer_expectation() {
    let store = rejecting(AppendRejection::VersionConflict {
        index: 0,
        entity_id: EntityId::parse("order-42").unwrap(),
        expected: ExpectedVersion::Exact(1),
        current: 2,
    });
    let reply = send(
        app(store),
        post(
            "/api/v1/events",
            r#"{"entity_id":"order-42","event_type":"t","payload":1,"expected_version":1}"#,
        ),
    )
    .await;
    assert_problem(&reply, 409, "version_conflict", "Version conflict");
    assert_eq!(reply.body["entity_id"], "order-42");
    assert_eq!(reply.body["expected_version"], json!(1));
    assert_eq!(reply.body["current_version"], json!(2));
    assert!(reply.body.get("errors").is_none());
}

#[tokio::test]
async fn a_reused_event_id_is_409() {
    let id = EventId::parse(ID_1).unwrap();
    let one = send(
        app(rejecting(AppendRejection::DuplicateEventId {
            index: 0,
            event_id: id,
        })),
        post(
            "/api/v1/events",
            format!(r#"{{"id":"{ID_1}","entity_id":"a","event_type":"t","payload":1}}"#),
        ),
    )
    .await;
    let detail = format!(
        "event id {ID_1} is already taken by an event with another entity, type or payload"
    );
    assert_eq!(
        one.body,
        json!({
            "type": "https://allsource.dev/problems/duplicate-event-id",
            "title": "Duplicate event id",
            "status": 409,
            "detail": detail,
            "error": "duplicate_event_id",
            "event_id": ID_1
        })
    );
    assert_problem(&one, 409, "duplicate_event_id", "Duplicate event id");

    let batch = send(
        app(rejecting(AppendRejection::DuplicateEventId {
            index: 1,
            event_id: id,
        })),
        post(
            "/api/v1/events/batch",
            format!(
                r#"{{"events":[{{"entity_id":"a","event_type":"t","payload":1}},
                               {{"id":"{ID_1}","entity_id":"a","event_type":"t","payload":2}}]}}"#
            ),
        ),
    )
    .await;
    assert_problem(&batch, 409, "duplicate_event_id", "Duplicate event id");
    assert_eq!(batch.body["event_id"], ID_1);
    assert_eq!(batch.fields(), [("events[1].id".to_owned(), detail)]);
}

// ---------------------------------------------------------------------------------------------
// Reading

#[tokio::test]
async fn query_answers_events_count_has_more_and_next_position() {
    let mut store = MockEventStore::new();
    store
        .expect_query()
        .withf(|tenant, q| {
            tenant.as_str() == "default"
                && q.entity_id.as_ref().map(|e| e.as_str()) == Some("order-42")
                && q.event_type.as_ref().map(|t| t.as_str()) == Some("order.placed")
                && q.since == Some(Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap())
                && q.from_position == Some(Position::new(5))
                && q.offset == 1
                && q.limit == 2
                && q.order == SortOrder::Desc
        })
        .times(1)
        .returning(|_, _| {
            let mut with_metadata = Event::clone(&event(ID_2, "order-42", 2, r#"{"b":2}"#));
            with_metadata.metadata = Some(raw(r#"{"correlation_id": "c-1"}"#));
            Ok(QueryPage {
                events: vec![
                    event(ID_1, "order-42", 1, r#"{ "amount_cents" : 129900 }"#),
                    Arc::new(with_metadata),
                ],
                has_more: true,
            })
        });
    let reply = send(
        app(store),
        get(
            "/api/v1/events/query?entity_id=order-42&event_type=order.placed\
             &since=2026-01-01T00:00:00Z&from_position=5&offset=1&limit=2&order=desc",
        ),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert_eq!(
        reply.body,
        json!({
            "events": [
                {"id": ID_1, "tenant_id": "default", "entity_id": "order-42",
                 "event_type": "order.placed", "version": 1, "position": 11,
                 "timestamp": "2026-11-22T10:15:01.123456Z",
                 "payload": {"amount_cents": 129900}, "metadata": null},
                {"id": ID_2, "tenant_id": "default", "entity_id": "order-42",
                 "event_type": "order.placed", "version": 2, "position": 12,
                 "timestamp": "2026-11-22T10:15:02.123456Z",
                 "payload": {"b": 2}, "metadata": {"correlation_id": "c-1"}}
            ],
            "count": 2,
            "has_more": true,
            "next_position": 12
        })
    );
    // Payload and metadata are written as stored, not re-serialized.
    let text = std::str::from_utf8(&reply.raw).unwrap();
    assert!(
        text.contains(r#""payload":{ "amount_cents" : 129900 }"#),
        "{text}"
    );
    assert!(
        text.contains(r#""metadata":{"correlation_id": "c-1"}"#),
        "{text}"
    );
}

#[tokio::test]
async fn an_empty_query_has_no_next_position() {
    let mut store = MockEventStore::new();
    store
        .expect_query()
        .withf(|_, q| {
            q.limit == 1000
                && q.offset == 0
                && q.order == SortOrder::Asc
                && q.entity_id.is_none()
                && q.from_position.is_none()
        })
        .returning(|_, _| Ok(QueryPage::default()));
    let reply = send(app(store), get("/api/v1/events/query")).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply.body,
        json!({"events": [], "count": 0, "has_more": false, "next_position": null})
    );
}

#[tokio::test]
async fn unknown_and_repeated_query_parameters_are_refused() {
    let app = app(untouched());
    let typo = send(app.clone(), get("/api/v1/events/query?entityId=a")).await;
    assert_validation_prefix(
        &typo,
        "entityId",
        "unknown field `entityId`, expected one of",
    );
    let twice = send(app.clone(), get("/api/v1/events/query?limit=1&limit=2")).await;
    assert_validation_prefix(&twice, "query", "duplicate field `limit`");
    for path in [
        "/api/v1/stats?tenant=x",
        "/api/v1/event-types?tenant=x",
        "/api/v1/entities?type=x",
        "/api/v1/entities/a/events?from=1",
        "/api/v1/entities/a/state?at=now",
        &format!("/api/v1/events/{ID_1}?x=1"),
    ] {
        let reply = send(app.clone(), get(path)).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{path}");
        assert_eq!(reply.body["error"], "validation_failed", "{path}");
    }
    let on_post = send(
        app,
        post(
            "/api/v1/events?sync=true",
            r#"{"entity_id":"a","event_type":"t","payload":1}"#,
        ),
    )
    .await;
    assert_validation_prefix(&on_post, "sync", "unknown field `sync`");
}

#[tokio::test]
async fn invalid_query_values_are_reported_by_parameter() {
    let reply = send(
        app(untouched()),
        get("/api/v1/events/query?limit=0&order=up&since=yesterday&entity_id="),
    )
    .await;
    assert_validation(
        &reply,
        &[
            ("entity_id", "must not be empty"),
            (
                "since",
                "must be an RFC 3339 timestamp, like 2026-11-22T10:15:00Z",
            ),
            ("limit", "must be an integer from 1 to 10000"),
            ("order", "must be asc or desc"),
        ],
    );
}

#[tokio::test]
async fn one_event_by_id() {
    let mut store = MockEventStore::new();
    store
        .expect_get_event()
        .withf(|tenant, id| tenant.as_str() == "default" && id.to_string() == ID_1)
        .returning(|_, _| Ok(Some(event(ID_1, "order-42", 3, "[1,2]"))));
    let reply = send(app(store), get(&format!("/api/v1/events/{ID_1}"))).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(
        reply.body,
        json!({"id": ID_1, "tenant_id": "default", "entity_id": "order-42",
               "event_type": "order.placed", "version": 3, "position": 13,
               "timestamp": "2026-11-22T10:15:03.123456Z", "payload": [1, 2], "metadata": null})
    );
}

#[tokio::test]
async fn an_unknown_event_is_404_and_a_malformed_id_400() {
    let mut store = MockEventStore::new();
    store.expect_get_event().times(1).returning(|_, _| Ok(None));
    let app = app(store);
    let missing = send(app.clone(), get(&format!("/api/v1/events/{ID_1}"))).await;
    assert_problem(&missing, 404, "not_found", "Not found");
    assert_eq!(missing.body["detail"], format!("no event with id {ID_1}"));
    let malformed = send(app, get("/api/v1/events/not-a-uuid")).await;
    assert_validation(&malformed, &[("event_id", "must be a UUID")]);
}

#[tokio::test]
async fn an_entity_stream_with_paging() {
    let mut store = MockEventStore::new();
    store
        .expect_read_stream()
        .withf(|tenant, entity, range| {
            tenant.as_str() == "default"
                && entity.as_str() == "order/42"
                && range.from_version == 2
                && range.to_version == Some(5)
                // one more than asked, to know whether the stream goes on
                && range.limit == Some(3)
        })
        .times(1)
        .returning(|_, _, _| {
            Ok(vec![
                event(ID_1, "order/42", 2, "{}"),
                event(ID_2, "order/42", 3, "{}"),
                event(ID_2, "order/42", 4, "{}"),
            ])
        });
    // A percent-encoded slash stays inside the entity id.
    let reply = send(
        app(store),
        get("/api/v1/entities/order%2F42/events?from_version=2&to_version=5&limit=2"),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let keys: Vec<&String> = reply.body.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["count", "events", "has_more"]);
    assert_eq!(reply.body["count"], 2);
    assert_eq!(reply.body["has_more"], true);
    assert_eq!(reply.body["events"][0]["version"], 2);
    assert_eq!(reply.body["events"][1]["version"], 3);
    assert_eq!(reply.body["events"][1]["entity_id"], "order/42");
}

fn two_event_stream() -> MockEventStore {
    let mut store = MockEventStore::new();
    store.expect_read_stream().returning(|_, _, _| {
        Ok(vec![
            event(ID_1, "order-42", 1, r#"{"status":"placed","amount":5}"#),
            event(ID_2, "order-42", 2, r#"{"status":"paid","amount":null}"#),
        ])
    });
    store
}

#[tokio::test]
async fn entity_state_without_history() {
    let reply = send(
        app(two_event_stream()),
        get("/api/v1/entities/order-42/state"),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(
        reply.body,
        json!({
            "entity_id": "order-42",
            "version": 2,
            "event_count": 2,
            "last_updated": "2026-11-22T10:15:02.123456Z",
            "as_of": null,
            "current_state": {"status": "paid"}
        })
    );
}

#[tokio::test]
async fn entity_state_as_of_with_history() {
    // 10:15:01.5 at +00:00, written with an offset: only the first event is visible.
    let reply = send(
        app(two_event_stream()),
        get("/api/v1/entities/order-42/state?as_of=2026-11-22T12:15:01.5%2B02:00&include_history=true"),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body["as_of"], "2026-11-22T10:15:01.500000Z");
    assert_eq!(reply.body["version"], 1);
    assert_eq!(reply.body["event_count"], 1);
    assert_eq!(
        reply.body["current_state"],
        json!({"status": "placed", "amount": 5})
    );
    let history = reply.body["history"].as_array().unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0]["id"], ID_1);
}

#[tokio::test]
async fn entity_state_of_an_entity_without_events_is_404() {
    let mut store = MockEventStore::new();
    store.expect_read_stream().returning(|_, _, _| Ok(vec![]));
    let reply = send(app(store), get("/api/v1/entities/nobody/state")).await;
    assert_problem(&reply, 404, "not_found", "Not found");
    assert_eq!(reply.body["detail"], "entity 'nobody' has no events");
}

#[tokio::test]
async fn entities_listing() {
    let mut store = MockEventStore::new();
    store
        .expect_list_entities()
        .withf(|_, q| {
            q.limit == 2 && q.offset == 1 && q.event_type_prefix.as_deref() == Some("order.")
        })
        .returning(|_, _| {
            let summary = |entity: &str, count: u64| EntitySummary {
                entity_id: EntityId::parse(entity).unwrap(),
                event_count: count,
                version: Version::new(count),
                last_event_type: EventType::parse("order.paid").unwrap(),
                last_event_at: at(0),
            };
            Ok(EntityPage {
                entities: vec![summary("b", 2), summary("c", 1)],
                total: 4,
            })
        });
    let reply = send(
        app(store),
        get("/api/v1/entities?limit=2&offset=1&event_type_prefix=order."),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(
        reply.body,
        json!({
            "entities": [
                {"entity_id": "b", "event_count": 2, "version": 2,
                 "last_event_type": "order.paid", "last_event_at": "2026-11-22T10:15:00.123456Z"},
                {"entity_id": "c", "event_count": 1, "version": 1,
                 "last_event_type": "order.paid", "last_event_at": "2026-11-22T10:15:00.123456Z"}
            ],
            "total": 4,
            "has_more": true
        })
    );
}

#[tokio::test]
async fn entities_last_page_has_no_more() {
    let mut store = MockEventStore::new();
    store.expect_list_entities().returning(|_, _| {
        Ok(EntityPage {
            entities: vec![],
            total: 3,
        })
    });
    let reply = send(app(store), get("/api/v1/entities?offset=3")).await;
    assert_eq!(
        reply.body,
        json!({"entities": [], "total": 3, "has_more": false})
    );
}

#[tokio::test]
async fn event_types_and_stats() {
    let mut store = MockEventStore::new();
    store.expect_event_types().returning(|_| {
        Ok(vec![
            EventTypeCount {
                event_type: EventType::parse("order.paid").unwrap(),
                count: 1,
            },
            EventTypeCount {
                event_type: EventType::parse("order.placed").unwrap(),
                count: 2,
            },
        ])
    });
    store.expect_stats().returning(|_| {
        let mut storage = serde_json::Map::new();
        storage.insert("backend".into(), json!("memory"));
        storage.insert("bytes_per_event".into(), json!(180));
        Ok(StoreStats {
            total_events: 3,
            total_entities: 2,
            total_event_types: 2,
            last_position: 3,
            storage,
        })
    });
    let app = app(store);
    let types = send(app.clone(), get("/api/v1/event-types")).await;
    assert_eq!(types.status, StatusCode::OK);
    assert_eq!(
        types.body,
        json!({
            "event_types": [
                {"event_type": "order.paid", "count": 1},
                {"event_type": "order.placed", "count": 2}
            ],
            "total": 2
        })
    );
    let stats = send(app, get("/api/v1/stats")).await;
    assert_eq!(stats.status, StatusCode::OK);
    assert_eq!(
        stats.body,
        json!({
            "total_events": 3,
            "total_entities": 2,
            "total_event_types": 2,
            "last_position": 3,
            "storage": {"backend": "memory", "bytes_per_event": 180}
        })
    );
}

// ---------------------------------------------------------------------------------------------
// Server-side failures

#[tokio::test]
async fn unavailable_storage_is_503_with_retry_after_and_no_internal_text() {
    let mut store = MockEventStore::new();
    store
        .expect_query()
        .returning(|_, _| Err(StoreError::Unavailable("db at 10.1.2.3 refused".into())));
    store
        .expect_append()
        .returning(|_, _| Err(StoreAppendError::Unavailable("db at 10.1.2.3 gone".into())));
    let app = app(store);
    let read = send(app.clone(), get("/api/v1/events/query")).await;
    let write = send(
        app,
        post(
            "/api/v1/events",
            r#"{"entity_id":"a","event_type":"t","payload":1}"#,
        ),
    )
    .await;
    for reply in [read, write] {
        assert_problem(&reply, 503, "unavailable", "Service unavailable");
        assert_eq!(reply.header("retry-after"), Some("1"));
        assert_eq!(
            reply.body["detail"],
            "the storage is unavailable right now; retry shortly"
        );
        assert!(!String::from_utf8_lossy(&reply.raw).contains("10.1.2.3"));
    }
}

/// Collects what the fmt subscriber writes.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Logs {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

thread_local! {
    /// Where the global test subscriber writes on this thread, if anywhere.
    static CAPTURED: std::cell::RefCell<Option<Logs>> = const { std::cell::RefCell::new(None) };
}

/// Writes to the current thread's captured logs (or nowhere).
struct ThreadLogs;

impl std::io::Write for ThreadLogs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        CAPTURED.with(|c| {
            if let Some(logs) = c.borrow_mut().as_mut() {
                logs.0.lock().unwrap().extend_from_slice(buf);
            }
        });
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Captures what is logged on this thread from now on. A global subscriber (installed once)
/// rather than a scoped one: tracing caches each callsite's interest process-wide, and a test
/// running on another thread without a subscriber could otherwise disable the callsites this
/// test needs.
fn capture_logs() -> Logs {
    static INSTALL: std::sync::Once = std::sync::Once::new();
    INSTALL.call_once(|| {
        let subscriber = tracing_subscriber::fmt()
            .with_writer(|| ThreadLogs)
            .with_ansi(false)
            .finish();
        let _ = tracing::subscriber::set_global_default(subscriber);
    });
    let logs = Logs::default();
    CAPTURED.with(|c| *c.borrow_mut() = Some(logs.clone()));
    logs
}

#[tokio::test]
async fn internal_errors_are_500_logged_with_the_request_id_and_never_shown() {
    let logs = capture_logs();

    let failing = || {
        let mut store = MockEventStore::new();
        store.expect_stats().returning(|_| {
            Err(StoreError::Internal(
                anyhow::anyhow!("secret disk path /x/y").context("reading the manifest"),
            ))
        });
        store
    };
    let request = || {
        Request::get("/api/v1/stats")
            .header("x-request-id", "req-500")
            .body(Body::empty())
            .unwrap()
    };
    // Warm up, then recompute the callsites' interest: other tests of this binary log on other
    // threads without a subscriber, and one registering the request span or the error event at
    // the same moment as this test can leave it cached as disabled.
    send(app(failing()), request()).await;
    tracing::callsite::rebuild_interest_cache();
    logs.0.lock().unwrap().clear();

    let reply = send(app(failing()), request()).await;
    assert_problem(&reply, 500, "internal", "Internal server error");
    assert_eq!(reply.header("x-request-id"), Some("req-500"));
    assert_eq!(
        reply.body["detail"],
        "an internal error occurred; the server log has the details under this response's \
         x-request-id"
    );
    let raw = String::from_utf8_lossy(&reply.raw);
    assert!(
        !raw.contains("secret") && !raw.contains("manifest"),
        "{raw}"
    );

    let logged = logs.text();
    let line = logged
        .lines()
        .find(|l| l.contains("internal error"))
        .unwrap_or_else(|| panic!("no error line in {logged}"));
    assert!(line.contains("ERROR"), "{line}");
    assert!(line.contains("request_id=req-500"), "{line}");
    assert!(line.contains("method=GET"), "{line}");
    assert!(line.contains("path=/api/v1/stats"), "{line}");
    assert!(
        line.contains("reading the manifest: secret disk path /x/y"),
        "{line}"
    );
}

#[tokio::test]
async fn a_panicking_handler_is_a_500_problem() {
    let mut store = MockEventStore::new();
    store
        .expect_event_types()
        .returning(|_| panic!("secret invariant broken"));
    let reply = send(app(store), get("/api/v1/event-types")).await;
    assert_problem(&reply, 500, "internal", "Internal server error");
    assert!(!String::from_utf8_lossy(&reply.raw).contains("secret"));
}

// ---------------------------------------------------------------------------------------------
// Routing, middleware, health, caller

#[tokio::test]
async fn unknown_routes_are_404_and_wrong_methods_405_problems() {
    let app = app(untouched());
    let unknown = send(app.clone(), get("/api/v1/nothing")).await;
    assert_problem(&unknown, 404, "not_found", "Not found");
    assert_eq!(unknown.body["detail"], "no route matches this path");
    assert_problem(
        &send(app.clone(), get("/api/v1/events/query/extra")).await,
        404,
        "not_found",
        "Not found",
    );
    for (request, allow) in [
        (
            Request::delete("/api/v1/events/query")
                .body(Body::empty())
                .unwrap(),
            "GET,HEAD",
        ),
        (get("/api/v1/events"), "POST"),
        (post("/health", "{}"), "GET,HEAD"),
    ] {
        let reply = send(app.clone(), request).await;
        assert_problem(&reply, 405, "method_not_allowed", "Method not allowed");
        assert_eq!(reply.header("allow"), Some(allow));
    }
}

#[tokio::test]
async fn request_ids_are_echoed_or_generated_on_every_answer() {
    let mut store = MockEventStore::new();
    store.expect_backend().return_const("memory");
    let app = app(store);
    for path in ["/health", "/api/v1/nothing"] {
        let request = Request::get(path)
            .header("x-request-id", "client-chosen-1")
            .body(Body::empty())
            .unwrap();
        let reply = send(app.clone(), request).await;
        assert_eq!(
            reply.header("x-request-id"),
            Some("client-chosen-1"),
            "{path}"
        );
        let generated = send(app.clone(), get(path)).await;
        let id = generated.header("x-request-id").unwrap_or_default();
        assert!(Uuid::parse_str(id).is_ok(), "{path}: {id:?}");
    }
    let first = send(app.clone(), get("/health")).await;
    let second = send(app, get("/health")).await;
    assert_ne!(first.header("x-request-id"), second.header("x-request-id"));
}

#[tokio::test]
async fn health_and_readiness() {
    let mut store = MockEventStore::new();
    store.expect_backend().return_const("embedded");
    store.expect_is_ready().times(1).return_const(false);
    store.expect_is_ready().return_const(true);
    let app = app(store);
    let health = send(app.clone(), get("/health")).await;
    assert_eq!(health.status, StatusCode::OK);
    assert_eq!(health.header("content-type"), Some("application/json"));
    assert_eq!(
        health.body,
        json!({"status": "healthy", "version": "9.9.9", "storage": {"backend": "embedded"}})
    );
    let recovering = send(app.clone(), get("/health/ready")).await;
    assert_problem(&recovering, 503, "unavailable", "Service unavailable");
    assert_eq!(recovering.header("retry-after"), Some("1"));
    assert_eq!(
        recovering.body["detail"],
        "the store has not finished recovery yet"
    );
    let ready = send(app, get("/health/ready")).await;
    assert_eq!(ready.status, StatusCode::OK);
    assert_eq!(ready.body, json!({"status": "ready"}));
}

#[tokio::test]
async fn requests_act_as_the_default_tenant_without_auth() {
    let mut store = MockEventStore::new();
    store
        .expect_event_types()
        .withf(|tenant| tenant.as_str() == "default")
        .times(1)
        .returning(|_| Ok(vec![]));
    let reply = send(app(store), get("/api/v1/event-types")).await;
    assert_eq!(reply.body, json!({"event_types": [], "total": 0}));
}

#[tokio::test]
async fn a_caller_set_by_an_outer_layer_is_the_one_used() {
    // What the authentication middleware will do: put the credential's caller in the request.
    let mut store = MockEventStore::new();
    store
        .expect_event_types()
        .withf(|tenant| tenant.as_str() == "acme")
        .times(1)
        .returning(|_| Ok(vec![]));
    let app = app(store).layer(Extension(Caller::new(TenantId::parse("acme").unwrap())));
    let reply = send(app, get("/api/v1/event-types")).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
}

#[test]
fn default_body_limit_is_64_mib() {
    assert_eq!(HttpLimits::default().max_body_bytes, 64 * 1024 * 1024);
}

#[tokio::test]
async fn projection_and_replay_routes_need_their_permissions() {
    use allsource_application::Principal;
    use allsource_domain::{Permission, Role};

    use crate::Access;

    // Reads need `read`; everything that changes projections or jobs needs `manage_pipelines`.
    let routes: [(&str, &str, &str, Access); 12] = [
        (
            "GET",
            "/api/v1/projections",
            "/api/v1/projections",
            Access::Requires(Permission::Read),
        ),
        (
            "POST",
            "/api/v1/projections",
            "/api/v1/projections",
            Access::Requires(Permission::ManagePipelines),
        ),
        (
            "GET",
            "/api/v1/projections/{name}",
            "/api/v1/projections/p",
            Access::Requires(Permission::Read),
        ),
        (
            "DELETE",
            "/api/v1/projections/{name}",
            "/api/v1/projections/p",
            Access::Requires(Permission::ManagePipelines),
        ),
        (
            "GET",
            "/api/v1/projections/{name}/state",
            "/api/v1/projections/p/state",
            Access::Requires(Permission::Read),
        ),
        (
            "GET",
            "/api/v1/projections/{name}/state/{key}",
            "/api/v1/projections/p/state/k",
            Access::Requires(Permission::Read),
        ),
        (
            "POST",
            "/api/v1/projections/{name}/rebuild",
            "/api/v1/projections/p/rebuild",
            Access::Requires(Permission::ManagePipelines),
        ),
        (
            "GET",
            "/api/v1/replay",
            "/api/v1/replay",
            Access::Requires(Permission::Read),
        ),
        (
            "POST",
            "/api/v1/replay",
            "/api/v1/replay",
            Access::Requires(Permission::ManagePipelines),
        ),
        (
            "GET",
            "/api/v1/replay/{id}",
            "/api/v1/replay/j",
            Access::Requires(Permission::Read),
        ),
        (
            "DELETE",
            "/api/v1/replay/{id}",
            "/api/v1/replay/j",
            Access::Requires(Permission::ManagePipelines),
        ),
        (
            "POST",
            "/api/v1/replay/{id}/cancel",
            "/api/v1/replay/j/cancel",
            Access::Requires(Permission::ManagePipelines),
        ),
    ];
    let readonly = Caller::authenticated(
        TenantId::parse("acme").unwrap(),
        Role::Readonly,
        Principal::User {
            user_id: "u1".into(),
            username: "reader".into(),
        },
    );
    for (method, pattern, path, access) in routes {
        assert_eq!(
            crate::served_routes()
                .iter()
                .find(|r| r.verb.as_str() == method && r.path == pattern)
                .map(|r| r.access),
            Some(access),
            "{method} {pattern}"
        );
        if access != Access::Requires(Permission::ManagePipelines) {
            continue;
        }
        // The readonly caller is refused before anything is read or written.
        let app = app(untouched()).layer(Extension(readonly.clone()));
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header("content-type", "application/json")
            .body(Body::from("{}"))
            .unwrap();
        let reply = send(app, request).await;
        assert_eq!(
            reply.status,
            StatusCode::FORBIDDEN,
            "{method} {path}: {}",
            reply.body
        );
        assert_eq!(reply.body["required_permission"], "manage_pipelines");
    }
}
// ---------------------------------------------------------------------------------------------
// Snapshots

fn app_with_snapshots(store: MockEventStore, state: MockStateStore) -> Router {
    let store: Arc<dyn EventStore> = Arc::new(store);
    let (projections, replays) = idle_projections(&store);
    router(
        AppState::from(crate::AppServices {
            append: AppendEvents::new(Arc::clone(&store), AppendLimits::default()),
            reads: ReadEvents::new(Arc::clone(&store)),
            webhooks: idle_webhooks(&store),
            pipelines: idle_pipelines(&store),
            analytics: idle_analytics(),
            backups: allsource_application::use_cases::Backups::disabled(
                "no backup target in these tests",
            ),
            health: allsource_application::use_cases::Health::new("9.9.9", Arc::clone(&store)),
            auth: crate::AuthMode::Disabled,
            snapshots: snapshots_with(Arc::clone(&store), state),
            projections,
            replays,
            schemas: no_schemas(),
            identity: None,
            admission: allsource_application::use_cases::Admission::off(),
            tenants: None,
            consumer_groups: crate::tests::idle_consumer_groups(),
            compaction: allsource_application::use_cases::Compaction::new(Arc::new(
                NoCompaction::new("memory"),
            )),
            audit: quiet_audit(),
            policies: no_policies(),
            consumers: idle_consumers(&store),
        }),
        HttpLimits::default(),
    )
}

/// A stored snapshot of `order-42` at version 2, in the persisted format.
fn stored_snapshot() -> (String, StateEntry) {
    (
        "order-42/00000000000000000002".into(),
        StateEntry {
            value: json!({
                "format": 1, "entity_id": "order-42", "version": 2, "event_count": 2,
                "position": 12, "last_event_at": "2026-11-22T10:15:02.123456Z",
                "created_at": "2026-11-22T10:16:00.123456Z", "origin": "automatic",
                "state": {"status": "paid"}
            }),
            version: 1,
        },
    )
}

#[tokio::test]
async fn create_snapshot_is_201_with_the_snapshot() {
    let mut state = MockStateStore::new();
    state.expect_list().returning(|_, _, _, _, _| Ok(vec![]));
    state
        .expect_put()
        .withf(|t, ns, key, value, expected| {
            t.as_str() == "default"
                && ns == "snapshots"
                && key == "order-42/00000000000000000002"
                && value["state"] == json!({"status": "paid"})
                && expected.is_none()
        })
        .times(1)
        .returning(|_, _, _, _, _| Ok(1));
    let reply = send(
        app_with_snapshots(two_event_stream(), state),
        post("/api/v1/snapshots", r#"{"entity_id":"order-42"}"#),
    )
    .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    assert_eq!(
        reply.body,
        json!({
            "entity_id": "order-42",
            "version": 2,
            "event_count": 2,
            "position": 12,
            "last_event_at": "2026-11-22T10:15:02.123456Z",
            "created_at": "2026-11-22T10:16:00.123456Z",
            "origin": "manual",
            "state": {"status": "paid"}
        })
    );
}

#[tokio::test]
async fn create_snapshot_refuses_bad_bodies_with_field_errors() {
    for (body, field) in [
        (r#"{"entity_id":"order-42","extra":1}"#, None),
        (r#"{}"#, None),
        (r#"{"entity_id":5}"#, Some("entity_id")),
        (r#"{"entity_id":""}"#, Some("entity_id")),
        (r#"{"entity_id":"a","as_of":"tomorrow"}"#, Some("as_of")),
        (r#"[1]"#, None),
    ] {
        let reply = send(
            app_with_snapshots(untouched(), untouched_state()),
            post("/api/v1/snapshots", body),
        )
        .await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{body}: {}",
            reply.body
        );
        assert_eq!(reply.body["error"], "validation_failed", "{body}");
        if let Some(field) = field {
            assert_eq!(reply.field_names(), [field], "{body}");
        }
    }
    let reply = send(
        app_with_snapshots(untouched(), untouched_state()),
        post_as("/api/v1/snapshots", "text/plain", r#"{"entity_id":"a"}"#),
    )
    .await;
    assert_eq!(reply.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
}

#[tokio::test]
async fn create_snapshot_of_an_entity_without_events_is_404() {
    let mut store = MockEventStore::new();
    store.expect_read_stream().returning(|_, _, _| Ok(vec![]));
    let mut state = MockStateStore::new();
    state.expect_list().returning(|_, _, _, _, _| Ok(vec![]));
    state.expect_put().never();
    let reply = send(
        app_with_snapshots(store, state),
        post("/api/v1/snapshots", r#"{"entity_id":"nobody"}"#),
    )
    .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND, "{}", reply.body);
    assert_eq!(reply.body["error"], "not_found");
}

#[tokio::test]
async fn latest_snapshot_and_its_404() {
    let mut state = MockStateStore::new();
    state
        .expect_list()
        .withf(|_, _, prefix, _, _| prefix.as_deref() == Some("order-42/"))
        .returning(|_, _, _, _, _| Ok(vec![stored_snapshot()]));
    state.expect_list().returning(|_, _, _, _, _| Ok(vec![]));
    let app = app_with_snapshots(untouched(), state);
    let reply = send(app.clone(), get("/api/v1/snapshots/order-42/latest")).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body["version"], 2);
    assert_eq!(reply.body["origin"], "automatic");
    assert_eq!(reply.body["state"], json!({"status": "paid"}));
    let reply = send(app, get("/api/v1/snapshots/other/latest")).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND, "{}", reply.body);
}

#[tokio::test]
async fn list_snapshots_pages_and_validates() {
    let mut state = MockStateStore::new();
    state
        .expect_list()
        .withf(|_, ns, prefix, after, limit| {
            ns == "snapshots" && prefix.is_none() && after.is_none() && *limit == 101
        })
        .returning(|_, _, _, _, _| Ok(vec![stored_snapshot()]));
    let app = app_with_snapshots(untouched(), state);
    let reply = send(app.clone(), get("/api/v1/snapshots")).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body["count"], 1);
    assert_eq!(reply.body["has_more"], false);
    assert_eq!(reply.body["next_cursor"], Value::Null);
    assert_eq!(reply.body["snapshots"][0]["entity_id"], "order-42");
    for path in [
        "/api/v1/snapshots?limit=0",
        "/api/v1/snapshots?limit=abc",
        "/api/v1/snapshots?entity_id=",
        "/api/v1/snapshots?entity=a",
    ] {
        let reply = send(app.clone(), get(path)).await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{path}: {}",
            reply.body
        );
    }
}

#[tokio::test]
async fn snapshot_store_unavailable_is_503() {
    let mut state = MockStateStore::new();
    state
        .expect_list()
        .returning(|_, _, _, _, _| Err(StateError::Unavailable("recovering".into())));
    let reply = send(
        app_with_snapshots(untouched(), state),
        get("/api/v1/snapshots/order-42/latest"),
    )
    .await;
    assert_eq!(
        reply.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        reply.body
    );
    assert_eq!(reply.body["error"], "unavailable");
}

// ---------------------------------------------------------------------------------------------
// The route table

/// A request of `route`'s method to a path of its pattern (parameters filled in).
fn request_for(route: &crate::Route, query: &str) -> Request<Body> {
    let path: String = route
        .path
        .split('/')
        .map(|seg| if seg.starts_with('{') { "x" } else { seg })
        .collect::<Vec<_>>()
        .join("/");
    Request::builder()
        .method(route.verb.method())
        .uri(format!("{path}{query}"))
        .header("content-type", "application/json")
        .body(Body::from("{}"))
        .expect("request")
}

#[tokio::test]
async fn the_router_serves_every_declared_route_and_each_refuses_unknown_query_parameters() {
    let app = app(untouched());
    let routes = crate::served_routes();
    for route in &routes {
        // Refused before any handler runs (the store is untouched), naming the parameter:
        // routes without parameters in the request layer, the others by their `Params`.
        let reply = send(app.clone(), request_for(route, "?bogus=1")).await;
        let what = format!("{} {}", route.verb.as_str(), route.path);
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{what}: {}",
            reply.body
        );
        let fields = reply.fields();
        assert_eq!(fields.len(), 1, "{what}: {}", reply.body);
        assert_eq!(fields[0].0, "bogus", "{what}: {}", reply.body);
        assert!(fields[0].1.contains("bogus"), "{what}: {}", reply.body);
    }
    // Nothing else is served: a method no route declares for a path is 405.
    for route in &routes {
        let undeclared = [
            crate::routes::Verb::Get,
            crate::routes::Verb::Post,
            crate::routes::Verb::Put,
            crate::routes::Verb::Delete,
        ]
        .into_iter()
        .find(|v| !routes.iter().any(|r| r.path == route.path && r.verb == *v));
        let Some(verb) = undeclared else { continue };
        let other = crate::Route::new(verb, route.path, route.access);
        let reply = send(app.clone(), request_for(&other, "")).await;
        assert_eq!(
            reply.status,
            StatusCode::METHOD_NOT_ALLOWED,
            "{} {}",
            verb.as_str(),
            route.path
        );
    }
}

#[test]
fn route_declarations_carry_their_defaults_and_properties() {
    use crate::routes::{PolicyScope, RecordCount};
    use allsource_application::use_cases::RequestKind;
    let routes = crate::served_routes();
    let find = |verb: &str, path: &str| {
        *routes
            .iter()
            .find(|r| r.verb.as_str() == verb && r.path == path)
            .unwrap_or_else(|| panic!("{verb} {path} is served"))
    };
    // Reads that need `read` count as queries; health probes are never limited.
    assert_eq!(find("GET", "/api/v1/stats").admission, RequestKind::Query);
    assert_eq!(
        find("POST", "/api/v1/events").admission,
        RequestKind::Limited
    );
    assert_eq!(find("GET", "/health").admission, RequestKind::Unlimited);
    assert_eq!(
        find("GET", "/health/ready").admission,
        RequestKind::Unlimited
    );
    assert_eq!(
        find("GET", "/api/v1/tenants").admission,
        RequestKind::Limited,
        "manage_tenants reads are not queries"
    );
    // Public routes and the policy routes are not subject to policies.
    assert_eq!(
        find("POST", "/api/v1/auth/login").policies,
        PolicyScope::Exempt
    );
    for (verb, path) in [
        ("GET", "/api/v1/policies"),
        ("POST", "/api/v1/policies"),
        ("POST", "/api/v1/policies/evaluate"),
        ("GET", "/api/v1/policies/{id}"),
        ("PUT", "/api/v1/policies/{id}"),
        ("DELETE", "/api/v1/policies/{id}"),
    ] {
        assert_eq!(
            find(verb, path).policies,
            PolicyScope::Exempt,
            "{verb} {path}"
        );
    }
    assert_eq!(
        find("DELETE", "/api/v1/tenants/{id}").policies,
        PolicyScope::Enforced
    );
    // Record counts of the append routes.
    assert_eq!(find("POST", "/api/v1/events").records, RecordCount::One);
    assert_eq!(
        find("POST", "/api/v1/events/batch").records,
        RecordCount::EventsInBody
    );
    assert_eq!(
        find("GET", "/api/v1/events/query").records,
        RecordCount::FromLimit
    );
    // Exactly the routes that parse parameters take a query string.
    let with_query: Vec<_> = routes
        .iter()
        .filter(|r| r.takes_query)
        .map(|r| format!("{} {}", r.verb.as_str(), r.path))
        .collect();
    assert_eq!(
        with_query,
        [
            "GET /api/v1/events/query",
            "GET /api/v1/entities",
            "GET /api/v1/entities/{entity_id}/events",
            "GET /api/v1/entities/{entity_id}/state",
            "GET /api/v1/schemas/{subject}",
            "GET /api/v1/snapshots",
            "GET /api/v1/audit",
            "GET /api/v1/projections/{name}/state",
            "GET /api/v1/consumers/{consumer_id}/events",
            "GET /api/v1/events/stream",
            "GET /api/v1/events/sse",
            "GET /api/v1/consumer-groups/{group}/parked",
            "GET /api/v1/webhooks/{id}/deliveries",
            "GET /api/v1/pipelines/{id}/results",
            "GET /api/v1/analytics/frequency",
            "GET /api/v1/analytics/summary",
            "GET /api/v1/analytics/correlation",
        ]
    );
    // The streams: long-lived, credentials also in the query, no query quota.
    let long_lived: Vec<_> = routes
        .iter()
        .filter(|r| r.long_lived)
        .map(|r| (r.path, r.token_in_query, r.admission))
        .collect();
    assert_eq!(
        long_lived,
        [
            ("/api/v1/events/stream", true, RequestKind::Limited),
            ("/api/v1/events/sse", true, RequestKind::Limited),
        ]
    );
    assert!(
        routes
            .iter()
            .filter(|r| !r.long_lived)
            .all(|r| !r.token_in_query)
    );
}

#[test]
#[should_panic(expected = "GET /api/v1/stats is declared twice")]
fn a_route_declared_twice_cannot_be_built() {
    use crate::access::Access;
    use allsource_domain::Permission;
    async fn h() {}
    let _ = crate::Routes::new()
        .get("/api/v1/stats", Access::Requires(Permission::Read), h)
        .merge(crate::Routes::new().get("/api/v1/stats", Access::Public, h));
}
