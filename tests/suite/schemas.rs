//! Black-box tests of the schema registry: every route and error, enforcement at append (the
//! whole request refused with 422 and nothing appended), compatibility modes, persistence
//! across a restart.

use allsource_tests::problem::{assert_problem, fields};
use allsource_tests::server::{Reply, TestServer, read};
use serde_json::{Value, json};

async fn put_json(server: &TestServer, path: &str, body: &Value) -> Reply {
    read(
        server
            .client
            .put(server.url(path))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .expect("PUT"),
    )
    .await
}

fn order_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "amount_cents": {"type": "integer", "minimum": 0},
            "currency": {"enum": ["EUR", "USD"]}
        },
        "required": ["amount_cents", "currency"]
    })
}

async fn register(server: &TestServer, subject: &str, schema: Value) -> Reply {
    server
        .post_json(
            "/api/v1/schemas",
            &json!({"subject": subject, "schema": schema}),
        )
        .await
}

async fn total_events(server: &TestServer) -> u64 {
    let stats = server.get("/api/v1/stats").await;
    assert_eq!(stats.status, 200, "{}", stats.body);
    stats.body["total_events"].as_u64().expect("total_events")
}

async fn stream_len(server: &TestServer, entity: &str) -> usize {
    let stream = server
        .get(&format!("/api/v1/entities/{entity}/events"))
        .await;
    assert_eq!(stream.status, 200, "{}", stream.body);
    stream.body["events"].as_array().map_or(0, Vec::len)
}

#[tokio::test]
async fn a_registered_schema_refuses_bad_events_and_appends_nothing() {
    let server = TestServer::start().await;
    let created = register(&server, "order.placed", order_schema()).await;
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(created.body["subject"], "order.placed");
    assert_eq!(created.body["version"], 1);
    assert_eq!(created.body["compatibility"], "BACKWARD");
    assert_eq!(created.body["enforce"], true);
    assert_eq!(created.body["schema"], order_schema());
    assert_eq!(
        created.header("location"),
        Some("/api/v1/schemas/order.placed?version=1")
    );

    let good = json!({"entity_id": "order-1", "event_type": "order.placed",
                      "payload": {"amount_cents": 100, "currency": "EUR"}});
    let ok = server.post_json("/api/v1/events", &good).await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    let before = total_events(&server).await;

    // one bad event
    let bad = server
        .post_json(
            "/api/v1/events",
            &json!({"entity_id": "order-2", "event_type": "order.placed",
                    "payload": {"amount_cents": -5, "currency": "JPY"}}),
        )
        .await;
    assert_problem(&bad, 422, "validation_failed");
    let mut bad_fields = fields(&bad);
    bad_fields.sort();
    assert_eq!(bad_fields, ["payload/amount_cents", "payload/currency"]);
    assert!(
        bad.body["errors"][0]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty())
    );
    // a missing required member is named at the payload's root
    let missing = server
        .post_json(
            "/api/v1/events",
            &json!({"entity_id": "order-2", "event_type": "order.placed",
                    "payload": {"amount_cents": 1}}),
        )
        .await;
    assert_problem(&missing, 422, "validation_failed");
    assert_eq!(fields(&missing), ["payload"]);
    // a payload that is not even an object
    let scalar = server
        .post_json(
            "/api/v1/events",
            &json!({"entity_id": "order-2", "event_type": "order.placed", "payload": 7}),
        )
        .await;
    assert_problem(&scalar, 422, "validation_failed");

    // a batch with one bad event among good ones: none appended
    let batch = server
        .post_json(
            "/api/v1/events/batch",
            &json!({"events": [
                {"entity_id": "order-3", "event_type": "order.placed",
                 "payload": {"amount_cents": 1, "currency": "USD"}},
                {"entity_id": "order-3", "event_type": "order.placed",
                 "payload": {"amount_cents": "12", "currency": "USD"}},
                {"entity_id": "order-4", "event_type": "order.noted", "payload": {"x": 1}}
            ]}),
        )
        .await;
    assert_problem(&batch, 422, "validation_failed");
    assert_eq!(fields(&batch), ["events[1].payload/amount_cents"]);
    assert_eq!(stream_len(&server, "order-2").await, 0);
    assert_eq!(stream_len(&server, "order-3").await, 0);
    assert_eq!(stream_len(&server, "order-4").await, 0);
    assert_eq!(total_events(&server).await, before);

    // good events (and types without a schema) still go in, in batches too
    let batch = server
        .post_json(
            "/api/v1/events/batch",
            &json!({"events": [
                {"entity_id": "order-3", "event_type": "order.placed",
                 "payload": {"amount_cents": 1, "currency": "USD"}},
                {"entity_id": "order-4", "event_type": "order.noted", "payload": "anything"}
            ]}),
        )
        .await;
    assert_eq!(batch.status, 200, "{}", batch.body);
    assert_eq!(total_events(&server).await, before + 2);
}

#[tokio::test]
async fn incompatible_versions_are_refused_under_backward_and_allowed_under_none() {
    let server = TestServer::start().await;
    assert_eq!(
        register(&server, "order.placed", order_schema())
            .await
            .status,
        201
    );
    // a new required property breaks BACKWARD
    let mut v2 = order_schema();
    v2["properties"]["customer"] = json!({"type": "string"});
    v2["required"] = json!(["amount_cents", "currency", "customer"]);
    let refused = register(&server, "order.placed", v2.clone()).await;
    assert_problem(&refused, 409, "conflict");
    assert_eq!(fields(&refused), ["schema/required"]);
    assert!(
        refused.body["errors"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("customer") && m.contains("version 1")),
        "{}",
        refused.body
    );
    assert_eq!(refused.body["compatibility"], "BACKWARD");
    // narrowing a type too
    let mut narrowed = order_schema();
    narrowed["properties"]["amount_cents"]["maximum"] = json!(1000);
    let refused = register(&server, "order.placed", narrowed).await;
    assert_problem(&refused, 409, "conflict");
    assert_eq!(fields(&refused), ["schema/properties/amount_cents/maximum"]);

    // an optional property is fine
    let mut optional = order_schema();
    optional["properties"]["note"] = json!({"type": "string"});
    let v2_ok = register(&server, "order.placed", optional.clone()).await;
    assert_eq!(v2_ok.status, 201, "{}", v2_ok.body);
    assert_eq!(v2_ok.body["version"], 2);

    // NONE lets anything through
    let none = put_json(
        &server,
        "/api/v1/schemas/order.placed/compatibility",
        &json!({"compatibility": "NONE"}),
    )
    .await;
    assert_eq!(none.status, 200, "{}", none.body);
    assert_eq!(
        none.body,
        json!({"subject": "order.placed", "compatibility": "NONE", "enforce": true})
    );
    let v3 = register(&server, "order.placed", v2.clone()).await;
    assert_eq!(v3.status, 201, "{}", v3.body);
    assert_eq!(v3.body["version"], 3);
    assert_eq!(v3.body["compatibility"], "NONE");

    // versions and reads of each
    let versions = server.get("/api/v1/schemas/order.placed/versions").await;
    assert_eq!(versions.status, 200);
    assert_eq!(
        versions.body,
        json!({"subject": "order.placed", "versions": [1, 2, 3]})
    );
    let latest = server.get("/api/v1/schemas/order.placed").await;
    assert_eq!(latest.status, 200);
    assert_eq!(
        (
            latest.body["version"].clone(),
            latest.body["schema"].clone()
        ),
        (json!(3), v2.clone())
    );
    let first = server.get("/api/v1/schemas/order.placed?version=1").await;
    assert_eq!(first.body["schema"], order_schema());
    assert!(
        first.body["registered_at"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z'))
    );

    // enforcement follows the latest version: `customer` is required now
    let old_shape = server
        .post_json(
            "/api/v1/events",
            &json!({"entity_id": "o", "event_type": "order.placed",
                    "payload": {"amount_cents": 1, "currency": "EUR"}}),
        )
        .await;
    assert_problem(&old_shape, 422, "validation_failed");

    // FULL and FORWARD are accepted words; FORWARD refuses dropping a required property
    let forward = put_json(
        &server,
        "/api/v1/schemas/order.placed/compatibility",
        &json!({"compatibility": "forward"}),
    )
    .await;
    assert_eq!(forward.body["compatibility"], "FORWARD");
    let mut dropped = v2.clone();
    dropped["required"] = json!(["amount_cents", "currency"]);
    let refused = register(&server, "order.placed", dropped).await;
    assert_problem(&refused, 409, "conflict");
}

#[tokio::test]
async fn re_registering_the_same_schema_answers_the_existing_version() {
    let server = TestServer::start().await;
    assert_eq!(
        register(&server, "order.placed", order_schema())
            .await
            .status,
        201
    );
    let again = server
        .post_json(
            "/api/v1/schemas",
            &json!({"event_type": "order.placed", "schema": order_schema()}),
        )
        .await;
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(again.body["version"], 1);
    let versions = server.get("/api/v1/schemas/order.placed/versions").await;
    assert_eq!(versions.body["versions"], json!([1]));
}

#[tokio::test]
async fn bad_requests_are_clear_problems() {
    let server = TestServer::start().await;
    let invalid = register(
        &server,
        "a",
        json!({"type": "object", "properties": {"n": {"type": "strin"}}}),
    )
    .await;
    assert_problem(&invalid, 400, "validation_failed");
    assert_eq!(fields(&invalid), ["schema/properties/n/type"]);
    for (body, field) in [
        (json!({"subject": "a"}), "schema"),
        (json!({"schema": {}}), "subject"),
        (json!({"subject": "a b", "schema": {}}), "subject"),
        (json!({"subject": "validate", "schema": {}}), "subject"),
        (json!({"subject": "a", "schema": 5}), "schema"),
        (
            json!({"subject": "a", "schema": {}, "compatibility": "SOME"}),
            "compatibility",
        ),
        (
            json!({"subject": "a", "schema": {}, "enforce": "yes"}),
            "enforce",
        ),
        (json!({"subject": "a", "schema": {}, "extra": 1}), "extra"),
        (
            json!({"subject": "a", "event_type": "b", "schema": {}}),
            "event_type",
        ),
        (
            json!({"subject": "a", "schema": {"$ref": "https://example.com/s.json"}}),
            "schema",
        ),
        (
            json!({"subject": "a",
                   "schema": {"$schema": "http://json-schema.org/draft-07/schema#"}}),
            "schema/$schema",
        ),
    ] {
        let reply = server.post_json("/api/v1/schemas", &body).await;
        assert_problem(&reply, 400, "validation_failed");
        assert_eq!(fields(&reply), [field], "{body}");
    }
    let wrong_type = server
        .post_raw("/api/v1/schemas", "text/plain", "{}".into())
        .await;
    assert_problem(&wrong_type, 415, "unsupported_media_type");
    let not_json = server
        .post_raw("/api/v1/schemas", "application/json", "{".into())
        .await;
    assert_problem(&not_json, 400, "validation_failed");

    assert_eq!(
        register(&server, "a", json!({"type": "object"}))
            .await
            .status,
        201
    );
    assert_problem(
        &server.get("/api/v1/schemas/missing").await,
        404,
        "not_found",
    );
    assert_problem(
        &server.get("/api/v1/schemas/missing/versions").await,
        404,
        "not_found",
    );
    assert_problem(
        &server.get("/api/v1/schemas/a?version=2").await,
        404,
        "not_found",
    );
    for query in ["version=0", "version=x", "version=-1", "other=1"] {
        let reply = server.get(&format!("/api/v1/schemas/a?{query}")).await;
        assert_problem(&reply, 400, "validation_failed");
    }
    assert_problem(
        &server.get("/api/v1/schemas/a..b").await,
        400,
        "validation_failed",
    );
    for (body, status) in [
        (json!({"compatibility": "SOMETIMES"}), 400),
        (json!({}), 400),
        (json!({"compatibility": "FULL", "other": 1}), 400),
        (json!({"enforce": 1}), 400),
    ] {
        let reply = put_json(&server, "/api/v1/schemas/a/compatibility", &body).await;
        assert_eq!(reply.status, status, "{body}: {}", reply.body);
    }
    assert_problem(
        &put_json(
            &server,
            "/api/v1/schemas/missing/compatibility",
            &json!({"compatibility": "FULL"}),
        )
        .await,
        404,
        "not_found",
    );
    // a subject's settings change through PUT, not through a registration
    let reply = server
        .post_json(
            "/api/v1/schemas",
            &json!({"subject": "a", "schema": {"type": "object", "title": "2"},
                    "compatibility": "NONE"}),
        )
        .await;
    assert_problem(&reply, 400, "validation_failed");
    assert_eq!(fields(&reply), ["compatibility"]);
}

#[tokio::test]
async fn validate_answers_a_verdict() {
    let server = TestServer::start().await;
    assert_eq!(
        register(&server, "order.placed", order_schema())
            .await
            .status,
        201
    );
    let valid = server
        .post_json(
            "/api/v1/schemas/validate",
            &json!({"subject": "order.placed",
                    "payload": {"amount_cents": 5, "currency": "USD"}}),
        )
        .await;
    assert_eq!(valid.status, 200, "{}", valid.body);
    assert_eq!(
        valid.body,
        json!({"valid": true, "subject": "order.placed", "version": 1, "errors": []})
    );
    let invalid = server
        .post_json(
            "/api/v1/schemas/validate",
            &json!({"subject": "order.placed", "version": 1,
                    "payload": {"amount_cents": 5.5, "currency": "USD"}}),
        )
        .await;
    assert_eq!(invalid.status, 200, "{}", invalid.body);
    assert_eq!(invalid.body["valid"], false);
    assert_eq!(fields(&invalid), ["payload/amount_cents"]);
    // null is a payload like any other
    let null = server
        .post_json(
            "/api/v1/schemas/validate",
            &json!({"subject": "order.placed", "payload": null}),
        )
        .await;
    assert_eq!(null.status, 200, "{}", null.body);
    assert_eq!(null.body["valid"], false);
    for (body, status) in [
        (json!({"subject": "nope", "payload": {}}), 404),
        (
            json!({"subject": "order.placed", "payload": {}, "version": 2}),
            404,
        ),
        (json!({"subject": "order.placed"}), 400),
        (json!({"payload": {}}), 400),
        (
            json!({"subject": "order.placed", "payload": {}, "version": 0}),
            400,
        ),
        (
            json!({"subject": "order.placed", "payload": {}, "version": -1}),
            400,
        ),
        (
            json!({"subject": "order.placed", "payload": {}, "strict": true}),
            400,
        ),
    ] {
        let reply = server.post_json("/api/v1/schemas/validate", &body).await;
        assert_eq!(reply.status, status, "{body}: {}", reply.body);
    }
    // validate works for subjects that are not enforced too
    let loose = server
        .post_json(
            "/api/v1/schemas",
            &json!({"subject": "loose", "schema": {"type": "string"}, "enforce": false}),
        )
        .await;
    assert_eq!(loose.status, 201, "{}", loose.body);
    let reply = server
        .post_json(
            "/api/v1/schemas/validate",
            &json!({"subject": "loose", "payload": 1}),
        )
        .await;
    assert_eq!(reply.body["valid"], false);
}

#[tokio::test]
async fn listing_subjects() {
    let server = TestServer::start().await;
    let empty = server.get("/api/v1/schemas").await;
    assert_eq!(empty.status, 200);
    assert_eq!(empty.body, json!({"subjects": [], "total": 0}));
    register(&server, "b.second", json!({"type": "object"})).await;
    register(&server, "a.first", json!({"type": "object"})).await;
    register(&server, "a.first", json!({"type": "object", "title": "v2"})).await;
    let list = server.get("/api/v1/schemas").await;
    assert_eq!(list.status, 200);
    assert_eq!(
        list.body,
        json!({"subjects": [
            {"subject": "a.first", "latest_version": 2, "versions": 2,
             "compatibility": "BACKWARD", "enforce": true},
            {"subject": "b.second", "latest_version": 1, "versions": 1,
             "compatibility": "BACKWARD", "enforce": true}
        ], "total": 2})
    );
    assert_problem(
        &server.get("/api/v1/schemas?x=1").await,
        400,
        "validation_failed",
    );
}

#[tokio::test]
async fn enforcement_follows_the_subject_flag() {
    let server = TestServer::start().await;
    let created = server
        .post_json(
            "/api/v1/schemas",
            &json!({"subject": "user.created", "schema": {"type": "object",
                    "required": ["name"]}, "enforce": false}),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(created.body["enforce"], false);
    let event = json!({"entity_id": "u1", "event_type": "user.created", "payload": {}});
    assert_eq!(server.post_json("/api/v1/events", &event).await.status, 200);
    let on = put_json(
        &server,
        "/api/v1/schemas/user.created/compatibility",
        &json!({"enforce": true}),
    )
    .await;
    assert_eq!(on.body["enforce"], true);
    assert_eq!(on.body["compatibility"], "BACKWARD");
    assert_problem(
        &server.post_json("/api/v1/events", &event).await,
        422,
        "validation_failed",
    );
    put_json(
        &server,
        "/api/v1/schemas/user.created/compatibility",
        &json!({"enforce": false}),
    )
    .await;
    assert_eq!(server.post_json("/api/v1/events", &event).await.status, 200);
}

#[tokio::test]
async fn the_default_enforcement_and_mode_come_from_the_settings() {
    let server = TestServer::start_with(|s| {
        s.schemas.enforce_by_default = false;
        s.schemas.default_compatibility = allsource_domain::CompatibilityMode::Full;
    })
    .await;
    let created = register(&server, "t", json!({"type": "string"})).await;
    assert_eq!(created.body["enforce"], false);
    assert_eq!(created.body["compatibility"], "FULL");
    let event = json!({"entity_id": "e", "event_type": "t", "payload": 1});
    assert_eq!(server.post_json("/api/v1/events", &event).await.status, 200);
}

#[tokio::test]
async fn schemas_and_enforcement_survive_a_restart() {
    let server = TestServer::start().await;
    assert_eq!(
        register(&server, "order.placed", order_schema())
            .await
            .status,
        201
    );
    put_json(
        &server,
        "/api/v1/schemas/order.placed/compatibility",
        &json!({"compatibility": "FULL"}),
    )
    .await;
    let dir = server.stop().await;
    let server = TestServer::start_in(dir, |_| {}).await;
    let schema = server.get("/api/v1/schemas/order.placed").await;
    assert_eq!(schema.status, 200, "{}", schema.body);
    assert_eq!(schema.body["schema"], order_schema());
    assert_eq!(schema.body["compatibility"], "FULL");
    let bad = server
        .post_json(
            "/api/v1/events",
            &json!({"entity_id": "o", "event_type": "order.placed", "payload": {}}),
        )
        .await;
    assert_problem(&bad, 422, "validation_failed");
    assert_eq!(stream_len(&server, "o").await, 0);
}

#[tokio::test]
async fn draft_2020_12_schemas_are_enforced() {
    let server = TestServer::start().await;
    let schema = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$defs": {"point": {"type": "array",
                             "prefixItems": [{"type": "number"}, {"type": "number"}],
                             "items": false}},
        "type": "object",
        "properties": {"at": {"$ref": "#/$defs/point"}},
        "required": ["at"]
    });
    assert_eq!(register(&server, "moved", schema).await.status, 201);
    let ok = server
        .post_json(
            "/api/v1/events",
            &json!({"entity_id": "p", "event_type": "moved", "payload": {"at": [1, 2.5]}}),
        )
        .await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    let bad = server
        .post_json(
            "/api/v1/events",
            &json!({"entity_id": "p", "event_type": "moved", "payload": {"at": [1, "2"]}}),
        )
        .await;
    assert_problem(&bad, 422, "validation_failed");
    assert_eq!(fields(&bad), ["payload/at/1"]);
    let long = server
        .post_json(
            "/api/v1/events",
            &json!({"entity_id": "p", "event_type": "moved", "payload": {"at": [1, 2, 3]}}),
        )
        .await;
    assert_problem(&long, 422, "validation_failed");
}

#[tokio::test]
async fn a_retry_of_a_stored_event_gets_its_receipt_after_its_schema_was_enforced() {
    let server = TestServer::start().await;
    let id = "0192f0c4-3a51-7d2c-9a0e-2b7a5c1d9e01";
    let event = json!({"id": id, "entity_id": "order-1", "event_type": "order.placed",
                       "payload": {"amount_cents": "not a number"}});
    let first = server.post_json("/api/v1/events", &event).await;
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(first.body["duplicate"], false);
    // The stored event no longer satisfies the enforced schema...
    let created = register(&server, "order.placed", order_schema()).await;
    assert_eq!(created.status, 201, "{}", created.body);
    // ...yet its retry is answered with the original receipt, not 422.
    let retry = server.post_json("/api/v1/events", &event).await;
    assert_eq!(retry.status, 200, "{}", retry.body);
    assert_eq!(retry.body["duplicate"], true);
    for field in ["event_id", "entity_id", "version", "position", "timestamp"] {
        assert_eq!(retry.body[field], first.body[field], "{field}");
    }
    // In a batch, the retry is answered and the new events are still checked.
    let good = json!({"entity_id": "order-2", "event_type": "order.placed",
                      "payload": {"amount_cents": 5, "currency": "EUR"}});
    let bad = json!({"entity_id": "order-3", "event_type": "order.placed",
                     "payload": {"amount_cents": -1, "currency": "EUR"}});
    let refused = server
        .post_json("/api/v1/events/batch", &json!({"events": [event, bad]}))
        .await;
    assert_problem(&refused, 422, "validation_failed");
    assert_eq!(fields(&refused), ["events[1].payload/amount_cents"]);
    let mixed = server
        .post_json("/api/v1/events/batch", &json!({"events": [event, good]}))
        .await;
    assert_eq!(mixed.status, 200, "{}", mixed.body);
    assert_eq!(mixed.body["ingested"], 1);
    assert_eq!(mixed.body["events"][0]["duplicate"], true);
    assert_eq!(mixed.body["events"][0]["position"], first.body["position"]);
    assert_eq!(stream_len(&server, "order-1").await, 1);
    assert_eq!(stream_len(&server, "order-2").await, 1);
    assert_eq!(total_events(&server).await, 2);
}
