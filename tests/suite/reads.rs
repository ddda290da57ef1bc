//! The read routes' query parameters that existing clients send: `event_type_prefix` and
//! `payload_filter` on the query, `order` on the entity listing, `history` on entity state.

use allsource_tests::problem::{assert_problem, fields};
use allsource_tests::server::TestServer;
use serde_json::{Value, json};

async fn append(server: &TestServer, entity: &str, event_type: &str, payload: Value) {
    let reply = server
        .post_json(
            "/api/v1/events",
            &json!({"entity_id": entity, "event_type": event_type, "payload": payload}),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
}

fn entity_ids(body: &Value, list: &str) -> Vec<String> {
    body[list]
        .as_array()
        .expect("a list")
        .iter()
        .map(|e| e["entity_id"].as_str().expect("entity_id").to_owned())
        .collect()
}

#[tokio::test]
async fn query_by_type_prefix_and_payload_filter() {
    let server = TestServer::start().await;
    append(&server, "o-1", "order.placed", json!({"status": "new"})).await;
    append(
        &server,
        "o-2",
        "order.paid",
        json!({"status": "paid", "n": 2}),
    )
    .await;
    append(
        &server,
        "o-3",
        "orders",
        json!({"status": "paid", "n": 2.0}),
    )
    .await;
    append(&server, "u-1", "user.created", json!({"status": "paid"})).await;

    let reply = server
        .get("/api/v1/events/query?event_type_prefix=order.")
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(entity_ids(&reply.body, "events"), ["o-1", "o-2"]);
    assert!(reply.body.get("total_count").is_none(), "{}", reply.body);

    // {"n":2} URL-encoded: 2 and 2.0 are the same number.
    let reply = server
        .get("/api/v1/events/query?payload_filter=%7B%22n%22%3A2%7D")
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(entity_ids(&reply.body, "events"), ["o-2", "o-3"]);

    let reply = server
        .get("/api/v1/events/query?payload_filter=%7B%22status%22%3A%22paid%22%7D&event_type_prefix=order.")
        .await;
    assert_eq!(entity_ids(&reply.body, "events"), ["o-2"]);

    let reply = server
        .get("/api/v1/events/query?payload_filter=%7B%22status%22%3A%22paid%22%7D&limit=1")
        .await;
    assert_eq!(entity_ids(&reply.body, "events"), ["o-2"]);
    assert_eq!(reply.body["has_more"], true);

    for bad in ["%5B1%5D", "status%3Dpaid", "%7B%22a%22"] {
        let reply = server
            .get(&format!("/api/v1/events/query?payload_filter={bad}"))
            .await;
        assert_problem(&reply, 400, "validation_failed");
        assert_eq!(fields(&reply), ["payload_filter"], "{}", reply.body);
    }
}

#[tokio::test]
async fn entities_are_listed_by_last_change() {
    let server = TestServer::start().await;
    append(&server, "b", "t", json!({})).await;
    append(&server, "a", "t", json!({})).await;
    append(&server, "c", "t", json!({})).await;
    append(&server, "b", "t", json!({})).await;

    let newest_first = server.get("/api/v1/entities").await;
    assert_eq!(newest_first.status, 200, "{}", newest_first.body);
    assert_eq!(entity_ids(&newest_first.body, "entities"), ["b", "c", "a"]);
    let explicit = server.get("/api/v1/entities?order=desc").await;
    assert_eq!(entity_ids(&explicit.body, "entities"), ["b", "c", "a"]);
    let oldest_first = server.get("/api/v1/entities?order=asc&limit=2").await;
    assert_eq!(entity_ids(&oldest_first.body, "entities"), ["a", "c"]);
    assert_eq!(oldest_first.body["has_more"], true);
    assert_eq!(oldest_first.body["total"], 3);

    let bad = server.get("/api/v1/entities?order=newest").await;
    assert_problem(&bad, 400, "validation_failed");
    assert_eq!(fields(&bad), ["order"]);
}

#[tokio::test]
async fn history_is_an_alias_of_include_history() {
    let server = TestServer::start().await;
    append(&server, "e", "t", json!({"a": 1})).await;
    append(&server, "e", "t", json!({"b": 2})).await;
    for query in ["history=true", "include_history=true"] {
        let reply = server
            .get(&format!("/api/v1/entities/e/state?{query}"))
            .await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        assert_eq!(reply.body["current_state"], json!({"a": 1, "b": 2}));
        assert_eq!(reply.body["history"].as_array().map(Vec::len), Some(2));
    }
    let without = server.get("/api/v1/entities/e/state").await;
    assert!(without.body.get("history").is_none(), "{}", without.body);
    let bad = server.get("/api/v1/entities/e/state?history=maybe").await;
    assert_problem(&bad, 400, "validation_failed");
}
