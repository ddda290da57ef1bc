//! Router tests with a mocked store: status codes, problem documents, response shapes and
//! middleware, without any real storage.

use std::sync::Arc;

use allsource_application::ports::{
    AppendReceipt, MockEventStore, QueryPage, StoreAppendError, StoreError,
};
use allsource_application::use_cases::{AppendEvents, AppendLimits, ReadEvents};
use allsource_domain::{
    AppendRejection, EntityId, Event, EventId, EventType, ExpectedVersion, Position, TenantId,
    Version,
};
use axum::body::{Body, to_bytes};
use axum::http::{Request, StatusCode};
use chrono::{TimeZone, Utc};
use serde_json::value::RawValue;
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::{AppState, HealthInfo, HttpLimits, router};

fn app_with(store: MockEventStore, limits: AppendLimits, body_limit: usize) -> axum::Router {
    let store: Arc<dyn allsource_application::ports::EventStore> = Arc::new(store);
    router(
        AppState {
            append: AppendEvents::new(store.clone(), limits),
            reads: ReadEvents::new(store.clone()),
            health: HealthInfo {
                version: "9.9.9",
                store,
            },
        },
        HttpLimits {
            max_body_bytes: body_limit,
        },
    )
}

fn app(store: MockEventStore) -> axum::Router {
    app_with(store, AppendLimits::default(), 1024 * 1024)
}

struct Reply {
    status: StatusCode,
    content_type: String,
    request_id: String,
    retry_after: Option<String>,
    body: Value,
}

async fn send(app: axum::Router, request: Request<Body>) -> Reply {
    let response = app.oneshot(request).await.unwrap();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    };
    let status = response.status();
    let content_type = header("content-type").unwrap_or_default();
    let request_id = header("x-request-id").unwrap_or_default();
    let retry_after = header("retry-after");
    let bytes = to_bytes(response.into_body(), usize::MAX).await.unwrap();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Reply {
        status,
        content_type,
        request_id,
        retry_after,
        body,
    }
}

fn post(path: &str, body: &str) -> Request<Body> {
    Request::post(path)
        .header("content-type", "application/json")
        .body(Body::from(body.to_owned()))
        .unwrap()
}

fn get(path: &str) -> Request<Body> {
    Request::get(path).body(Body::empty()).unwrap()
}

fn stored(entity: &str, version: u64) -> Arc<Event> {
    Arc::new(Event {
        id: EventId::generate(),
        tenant_id: TenantId::default_tenant(),
        entity_id: EntityId::parse(entity).unwrap(),
        event_type: EventType::parse("order.placed").unwrap(),
        version: Version::new(version),
        position: Position::new(version + 10),
        timestamp: Utc.with_ymd_and_hms(2026, 11, 22, 10, 15, 0).unwrap()
            + chrono::Duration::microseconds(123_456),
        payload: RawValue::from_string(r#"{"amount":1}"#.into()).unwrap(),
        metadata: None,
    })
}

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
                timestamp: Utc.with_ymd_and_hms(2026, 11, 22, 10, 0, 0).unwrap(),
                duplicate: false,
            })
            .collect())
    });
    store
}

fn assert_problem(reply: &Reply, status: u16, code: &str) {
    assert_eq!(reply.status.as_u16(), status, "{}", reply.body);
    assert_eq!(reply.content_type, "application/problem+json");
    assert_eq!(reply.body["status"], status);
    assert_eq!(reply.body["error"], code);
    assert!(reply.body["type"].as_str().unwrap().starts_with("https://"));
    assert!(reply.body["title"].is_string());
    assert!(reply.body["detail"].is_string());
    assert!(!reply.request_id.is_empty());
}

#[tokio::test]
async fn append_one_answers_the_receipt() {
    let reply = send(
        app(accepting()),
        post(
            "/api/v1/events",
            r#"{"entity_id":"order-42","event_type":"order.placed","payload":{"a":1}}"#,
        ),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body["entity_id"], "order-42");
    assert_eq!(reply.body["version"], 1);
    assert_eq!(reply.body["position"], 1);
    assert_eq!(reply.body["duplicate"], false);
    assert_eq!(reply.body["timestamp"], "2026-11-22T10:00:00.000000Z");
    assert!(EventId::parse(reply.body["event_id"].as_str().unwrap()).is_ok());
}

#[tokio::test]
async fn batch_answers_totals_in_request_order() {
    let reply = send(
        app(accepting()),
        post(
            "/api/v1/events/batch",
            r#"{"events":[{"entity_id":"a","event_type":"t","payload":1},{"entity_id":"b","event_type":"t","payload":null}]}"#,
        ),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body["total"], 2);
    assert_eq!(reply.body["ingested"], 2);
    assert_eq!(reply.body["events"][0]["entity_id"], "a");
    assert_eq!(reply.body["events"][1]["entity_id"], "b");
}

#[tokio::test]
async fn field_errors_name_the_field() {
    let mut store = MockEventStore::new();
    store.expect_append().never();
    let reply = send(
        app(store),
        post(
            "/api/v1/events/batch",
            r#"{"events":[{"entity_id":"a","event_type":"t","payload":1},{"entity_id":"a","event_type":"bad type"}]}"#,
        ),
    )
    .await;
    assert_problem(&reply, 400, "validation_failed");
    let fields: Vec<&str> = reply.body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["events[1].event_type", "events[1].payload"]);
}

#[tokio::test]
async fn unknown_fields_and_wrong_types_are_refused_with_their_path() {
    let mut store = MockEventStore::new();
    store.expect_append().never();
    let app = app(store);
    let reply = send(
        app.clone(),
        post(
            "/api/v1/events",
            r#"{"entity_id":"a","event_type":"t","payload":1,"entity":"typo"}"#,
        ),
    )
    .await;
    assert_problem(&reply, 400, "validation_failed");
    assert!(
        reply.body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("entity")
    );
    let reply = send(
        app.clone(),
        post(
            "/api/v1/events/batch",
            r#"{"events":[{"entity_id":5,"event_type":"t","payload":1}]}"#,
        ),
    )
    .await;
    assert_problem(&reply, 400, "validation_failed");
    assert_eq!(reply.body["errors"][0]["field"], "events[0].entity_id");
    let reply = send(app, post("/api/v1/events", "{not json")).await;
    assert_problem(&reply, 400, "validation_failed");
}

#[tokio::test]
async fn wrong_content_type_is_415() {
    let mut store = MockEventStore::new();
    store.expect_append().never();
    let request = Request::post("/api/v1/events")
        .header("content-type", "text/plain")
        .body(Body::from(
            r#"{"entity_id":"a","event_type":"t","payload":1}"#,
        ))
        .unwrap();
    assert_problem(
        &send(app(store), request).await,
        415,
        "unsupported_media_type",
    );
}

#[tokio::test]
async fn oversized_bodies_and_events_are_413() {
    let mut store = MockEventStore::new();
    store.expect_append().never();
    let app = app_with(
        store,
        AppendLimits {
            max_event_bytes: 32,
            max_batch_events: 10,
        },
        256,
    );
    let big_body = format!(
        r#"{{"entity_id":"a","event_type":"t","payload":"{}"}}"#,
        "x".repeat(300)
    );
    assert_problem(
        &send(app.clone(), post("/api/v1/events", &big_body)).await,
        413,
        "payload_too_large",
    );
    let big_event = format!(
        r#"{{"entity_id":"a","event_type":"t","payload":"{}"}}"#,
        "x".repeat(40)
    );
    let reply = send(app, post("/api/v1/events", &big_event)).await;
    assert_problem(&reply, 413, "payload_too_large");
}

#[tokio::test]
async fn version_conflicts_carry_their_members() {
    let mut store = MockEventStore::new();
    store.expect_append().returning(|_, _| {
        Err(StoreAppendError::Rejected(
            AppendRejection::VersionConflict {
                index: 1,
                entity_id: EntityId::parse("a").unwrap(),
                expected: ExpectedVersion::NoStream,
                current: 3,
            },
        ))
    });
    let reply = send(
        app(store),
        post(
            "/api/v1/events/batch",
            r#"{"events":[{"entity_id":"b","event_type":"t","payload":1},{"entity_id":"a","event_type":"t","payload":1,"expected_version":"no_stream"}]}"#,
        ),
    )
    .await;
    assert_problem(&reply, 409, "version_conflict");
    assert_eq!(reply.body["entity_id"], "a");
    assert_eq!(reply.body["expected_version"], "no_stream");
    assert_eq!(reply.body["current_version"], 3);
    assert_eq!(
        reply.body["errors"][0]["field"],
        "events[1].expected_version"
    );
}

#[tokio::test]
async fn exact_expected_version_is_an_integer_in_the_conflict() {
    let mut store = MockEventStore::new();
    store.expect_append().returning(|_, _| {
        Err(StoreAppendError::Rejected(
            AppendRejection::VersionConflict {
                index: 0,
                entity_id: EntityId::parse("a").unwrap(),
                expected: ExpectedVersion::Exact(1),
                current: 2,
            },
        ))
    });
    let reply = send(
        app(store),
        post(
            "/api/v1/events",
            r#"{"entity_id":"a","event_type":"t","payload":1,"expected_version":1}"#,
        ),
    )
    .await;
    assert_problem(&reply, 409, "version_conflict");
    assert_eq!(reply.body["expected_version"], 1);
    assert!(reply.body.get("errors").is_none());
}

#[tokio::test]
async fn duplicate_ids_with_other_content_are_409() {
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
    let reply = send(
        app(store),
        post(
            "/api/v1/events",
            &format!(r#"{{"id":"{id}","entity_id":"a","event_type":"t","payload":1}}"#),
        ),
    )
    .await;
    assert_problem(&reply, 409, "duplicate_event_id");
    assert_eq!(reply.body["event_id"], id.to_string());
}

#[tokio::test]
async fn unavailable_store_is_503_with_retry_after() {
    let mut store = MockEventStore::new();
    store
        .expect_query()
        .returning(|_, _| Err(StoreError::Unavailable("recovering".into())));
    let reply = send(app(store), get("/api/v1/events/query")).await;
    assert_problem(&reply, 503, "unavailable");
    assert_eq!(reply.retry_after.as_deref(), Some("1"));
}

#[tokio::test]
async fn internal_errors_do_not_leak() {
    let mut store = MockEventStore::new();
    store.expect_stats().returning(|_| {
        Err(StoreError::Internal(anyhow::anyhow!(
            "secret disk path /x/y"
        )))
    });
    let reply = send(app(store), get("/api/v1/stats")).await;
    assert_problem(&reply, 500, "internal");
    assert!(!reply.body.to_string().contains("secret"));
}

#[tokio::test]
async fn query_shape_and_next_position() {
    let mut store = MockEventStore::new();
    store.expect_query().returning(|_, _| {
        Ok(QueryPage {
            events: vec![stored("a", 1), stored("a", 2)],
            has_more: true,
        })
    });
    let reply = send(app(store), get("/api/v1/events/query?entity_id=a&limit=2")).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body["count"], 2);
    assert_eq!(reply.body["has_more"], true);
    assert_eq!(reply.body["next_position"], 12);
    let event = &reply.body["events"][0];
    assert_eq!(event["timestamp"], "2026-11-22T10:15:00.123456Z");
    assert_eq!(event["payload"], json!({"amount": 1}));
    assert_eq!(event["metadata"], Value::Null);
    assert_eq!(event["tenant_id"], "default");
}

#[tokio::test]
async fn unknown_query_parameters_are_refused() {
    let mut store = MockEventStore::new();
    store.expect_query().never();
    let reply = send(app(store), get("/api/v1/events/query?entityId=a")).await;
    assert_problem(&reply, 400, "validation_failed");
    assert_eq!(reply.body["errors"][0]["field"], "query");
}

#[tokio::test]
async fn unknown_event_and_route_are_404_and_wrong_method_405() {
    let mut store = MockEventStore::new();
    store.expect_get_event().returning(|_, _| Ok(None));
    let app = app(store);
    let path = format!("/api/v1/events/{}", EventId::generate());
    assert_problem(&send(app.clone(), get(&path)).await, 404, "not_found");
    assert_problem(
        &send(app.clone(), get("/api/v1/nothing")).await,
        404,
        "not_found",
    );
    let delete = Request::delete("/api/v1/events/query")
        .body(Body::empty())
        .unwrap();
    assert_problem(&send(app, delete).await, 405, "method_not_allowed");
}

#[tokio::test]
async fn request_ids_are_echoed_or_generated() {
    let mut store = MockEventStore::new();
    store.expect_backend().return_const("memory");
    let app = app(store);
    let request = Request::get("/health")
        .header("x-request-id", "client-chosen-1")
        .body(Body::empty())
        .unwrap();
    assert_eq!(
        send(app.clone(), request).await.request_id,
        "client-chosen-1"
    );
    let generated = send(app, get("/health")).await.request_id;
    assert!(uuid::Uuid::parse_str(&generated).is_ok(), "{generated}");
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
    assert_eq!(
        health.body,
        json!({"status": "healthy", "version": "9.9.9", "storage": {"backend": "embedded"}})
    );
    assert_problem(
        &send(app.clone(), get("/health/ready")).await,
        503,
        "unavailable",
    );
    assert_eq!(send(app, get("/health/ready")).await.status, StatusCode::OK);
}

#[tokio::test]
async fn entity_state_shape() {
    let mut store = MockEventStore::new();
    store
        .expect_read_stream()
        .returning(|_, _, _| Ok(vec![stored("a", 1)]));
    let reply = send(
        app(store),
        get("/api/v1/entities/a/state?include_history=true"),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body["entity_id"], "a");
    assert_eq!(reply.body["version"], 1);
    assert_eq!(reply.body["event_count"], 1);
    assert_eq!(reply.body["as_of"], Value::Null);
    assert_eq!(reply.body["current_state"], json!({"amount": 1}));
    assert_eq!(reply.body["history"].as_array().unwrap().len(), 1);
}
