//! Black-box tests of snapshots against the real server (embedded backend, temp data dir):
//! manual snapshots, latest, listing with paging, automatic snapshots every N events with K kept,
//! entity state (with and without `as_of`) identical with and without snapshots, and snapshots
//! surviving a restart.

use std::time::Duration;

use allsource_tests::problem::assert_problem;
use allsource_tests::server::{Reply, TestServer};
use serde_json::{Value, json};

async fn append(server: &TestServer, entity: &str, payload: Value) -> Reply {
    let reply = server
        .post_json(
            "/api/v1/events",
            &json!({"event_type": "thing.changed", "entity_id": entity, "payload": payload}),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    reply
}

/// Snapshots off unless a test turns them on; no state cache, so reads go through snapshots.
async fn server(every_n_events: u64, keep: usize) -> TestServer {
    TestServer::start_with(|s| {
        s.snapshots.every_n_events = every_n_events;
        s.snapshots.keep_per_entity = keep;
        s.cache.max_states = 0;
    })
    .await
}

async fn eventually(mut check: impl AsyncFnMut() -> bool) {
    for _ in 0..500 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("condition never held");
}

fn versions(list: &Reply) -> Vec<u64> {
    list.body["snapshots"]
        .as_array()
        .map(|s| s.iter().filter_map(|s| s["version"].as_u64()).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn manual_snapshot_is_201_then_latest_and_listed() {
    let server = server(0, 3).await;
    append(&server, "order-1", json!({"status": "new", "amount": 5})).await;
    append(&server, "order-1", json!({"status": "paid"})).await;
    let third = append(&server, "order-1", json!({"amount": null})).await;

    let created = server
        .post_json("/api/v1/snapshots", &json!({"entity_id": "order-1"}))
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(created.body["entity_id"], "order-1");
    assert_eq!(created.body["version"], 3);
    assert_eq!(created.body["event_count"], 3);
    assert_eq!(created.body["position"], third.body["position"]);
    assert_eq!(created.body["last_event_at"], third.body["timestamp"]);
    assert_eq!(created.body["origin"], "manual");
    assert_eq!(created.body["state"], json!({"status": "paid"}));
    assert!(created.body["created_at"].is_string());

    let latest = server.get("/api/v1/snapshots/order-1/latest").await;
    assert_eq!(latest.status, 200, "{}", latest.body);
    assert_eq!(latest.body, created.body);

    let list = server.get("/api/v1/snapshots?entity_id=order-1").await;
    assert_eq!(list.status, 200, "{}", list.body);
    assert_eq!(list.body["count"], 1);
    assert_eq!(list.body["has_more"], false);
    assert_eq!(list.body["snapshots"][0], created.body);

    // The state read answers the same as before the snapshot.
    let state = server.get("/api/v1/entities/order-1/state").await;
    assert_eq!(state.body["current_state"], json!({"status": "paid"}));
    assert_eq!(state.body["version"], 3);
}

#[tokio::test]
async fn snapshot_errors_are_problems() {
    let server = server(0, 3).await;
    append(&server, "a", json!({"x": 1})).await;
    let none = server
        .post_json("/api/v1/snapshots", &json!({"entity_id": "nobody"}))
        .await;
    assert_problem(&none, 404, "not_found");
    let before = server
        .post_json(
            "/api/v1/snapshots",
            &json!({"entity_id": "a", "as_of": "2000-01-01T00:00:00Z"}),
        )
        .await;
    assert_problem(&before, 404, "not_found");
    for body in [
        json!({}),
        json!({"entity_id": "a", "version": 3}),
        json!({"entity_id": ""}),
        json!({"entity_id": ["a"]}),
        json!({"entity_id": "a", "as_of": "noon"}),
        json!("a"),
    ] {
        let reply = server.post_json("/api/v1/snapshots", &body).await;
        assert_problem(&reply, 400, "validation_failed");
    }
    let wrong_type = server
        .post_raw(
            "/api/v1/snapshots",
            "text/plain",
            r#"{"entity_id":"a"}"#.into(),
        )
        .await;
    assert_problem(&wrong_type, 415, "unsupported_media_type");
    assert_problem(
        &server.get("/api/v1/snapshots/a/latest").await,
        404,
        "not_found",
    );
    for path in [
        "/api/v1/snapshots?limit=0",
        "/api/v1/snapshots?limit=1001",
        "/api/v1/snapshots?entity_id=a&after=b%2F1",
        "/api/v1/snapshots?entity=a",
    ] {
        assert_problem(&server.get(path).await, 400, "validation_failed");
    }
    let list = server.get("/api/v1/snapshots").await;
    assert_eq!(list.status, 200);
    assert_eq!(list.body["snapshots"], json!([]));
    assert_eq!(list.body["next_cursor"], Value::Null);
}

#[tokio::test]
async fn entities_whose_ids_share_a_prefix_or_hold_slashes_never_mix() {
    let server = server(0, 3).await;
    append(&server, "a", json!({"who": "a"})).await;
    append(&server, "a/b", json!({"who": "a/b"})).await;
    append(&server, "a%2Fb", json!({"who": "a%2Fb"})).await;
    for entity in ["a", "a/b", "a%2Fb"] {
        let reply = server
            .post_json("/api/v1/snapshots", &json!({"entity_id": entity}))
            .await;
        assert_eq!(reply.status, 201, "{}", reply.body);
    }
    for (path, who) in [
        ("/api/v1/snapshots/a/latest", "a"),
        ("/api/v1/snapshots/a%2Fb/latest", "a/b"),
        ("/api/v1/snapshots/a%252Fb/latest", "a%2Fb"),
    ] {
        let reply = server.get(path).await;
        assert_eq!(reply.status, 200, "{path}: {}", reply.body);
        assert_eq!(reply.body["state"]["who"], who, "{path}");
    }
    let only_a = server.get("/api/v1/snapshots?entity_id=a").await;
    assert_eq!(only_a.body["count"], 1, "{}", only_a.body);
}

#[tokio::test]
async fn listing_pages_with_a_cursor() {
    let server = server(0, 10).await;
    for entity in ["p-1", "p-2", "p-3"] {
        for n in 0..2 {
            append(&server, entity, json!({"n": n})).await;
            let reply = server
                .post_json("/api/v1/snapshots", &json!({"entity_id": entity}))
                .await;
            assert_eq!(reply.status, 201);
        }
    }
    let mut seen = Vec::new();
    let mut path = "/api/v1/snapshots?limit=4".to_owned();
    loop {
        let page = server.get(&path).await;
        assert_eq!(page.status, 200, "{}", page.body);
        for s in page.body["snapshots"].as_array().unwrap() {
            seen.push(format!(
                "{}@{}",
                s["entity_id"].as_str().unwrap(),
                s["version"]
            ));
        }
        match page.body["next_cursor"].as_str() {
            Some(cursor) => {
                assert_eq!(page.body["has_more"], true);
                let cursor: String =
                    url::form_urlencoded::byte_serialize(cursor.as_bytes()).collect();
                path = format!("/api/v1/snapshots?limit=4&after={cursor}");
            }
            None => break,
        }
    }
    assert_eq!(seen, ["p-1@1", "p-1@2", "p-2@1", "p-2@2", "p-3@1", "p-3@2"]);
}

#[tokio::test]
async fn automatic_snapshots_every_n_events_keep_the_newest_k() {
    let server = server(5, 2).await;
    for n in 1..=23 {
        append(&server, "counter", json!({"n": n})).await;
    }
    eventually(async || {
        let latest = server.get("/api/v1/snapshots/counter/latest").await;
        latest.status == 200 && latest.body["version"] == 20
    })
    .await;
    let latest = server.get("/api/v1/snapshots/counter/latest").await;
    assert_eq!(latest.body["origin"], "automatic");
    assert_eq!(latest.body["state"], json!({"n": 20}));
    let list = server.get("/api/v1/snapshots?entity_id=counter").await;
    let kept = versions(&list);
    assert!(
        (1..=2).contains(&kept.len())
            && kept.iter().all(|v| v % 5 == 0)
            && kept.last() == Some(&20),
        "{}",
        list.body
    );
    // A batch crossing a multiple is snapshotted at it; the batch itself is untouched.
    let batch: Vec<Value> = (0..12)
        .map(|n| json!({"event_type": "t", "entity_id": "counter", "payload": {"m": n}}))
        .collect();
    let reply = server
        .post_json("/api/v1/events/batch", &json!({"events": batch}))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    eventually(async || server.get("/api/v1/snapshots/counter/latest").await.body["version"] == 35)
        .await;
    let state = server.get("/api/v1/entities/counter/state").await;
    assert_eq!(state.body["version"], 35);
    assert_eq!(state.body["current_state"], json!({"n": 23, "m": 11}));
}

#[tokio::test]
async fn many_entities_with_snapshots_every_event_never_fail_appends() {
    let server = server(1, 1).await;
    let batch: Vec<Value> = (0..2000)
        .map(|n| {
            json!({"event_type": "t", "entity_id": format!("e-{}", n % 200), "payload": {"n": n}})
        })
        .collect();
    let reply = server
        .post_json("/api/v1/events/batch", &json!({"events": batch}))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.body["ingested"], 2000);
    // Every entity ends with one snapshot at its head version (jobs may have been merged).
    eventually(async || server.get("/api/v1/snapshots/e-199/latest").await.body["version"] == 10)
        .await;
    let state = server.get("/api/v1/entities/e-7/state").await;
    assert_eq!(state.body["current_state"], json!({"n": 1807}));
}

/// Payloads that exercise every merge rule: overwrite, removal with null, replacement by a
/// non-object, floats.
fn payload(n: u64) -> Value {
    match n % 7 {
        0 => json!({"k": n, "f": n as f64 / 3.0}),
        1 => json!({"a": null, "b": [n]}),
        2 => json!({"a": {"deep": n}}),
        3 => json!(n),
        4 => json!({"k": null, "c": "x"}),
        5 => json!([n, "y"]),
        _ => json!({"a": n, "z": 0.1}),
    }
}

async fn states(server: &TestServer, entity: &str, as_ofs: &[Value]) -> Vec<Reply> {
    let mut out = vec![
        server
            .get(&format!("/api/v1/entities/{entity}/state"))
            .await,
    ];
    for as_of in as_ofs {
        let as_of: String =
            url::form_urlencoded::byte_serialize(as_of.as_str().unwrap().as_bytes()).collect();
        out.push(
            server
                .get(&format!("/api/v1/entities/{entity}/state?as_of={as_of}"))
                .await,
        );
    }
    out
}

#[tokio::test]
async fn state_with_and_without_as_of_is_the_same_with_snapshots() {
    let server = server(0, 10).await;
    let mut timestamps = vec![json!("2000-01-01T00:00:00Z")];
    for n in 1..=40 {
        let receipt = append(&server, "mixed", payload(n)).await;
        if n % 3 == 0 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        timestamps.push(receipt.body["timestamp"].clone());
    }
    let expected = states(&server, "mixed", &timestamps).await;
    assert_eq!(expected[0].status, 200);
    // Snapshots at several points in time, and now.
    for i in [5usize, 13, 26, 39] {
        let reply = server
            .post_json(
                "/api/v1/snapshots",
                &json!({"entity_id": "mixed", "as_of": timestamps[i]}),
            )
            .await;
        assert_eq!(reply.status, 201, "{}", reply.body);
    }
    let now = server
        .post_json("/api/v1/snapshots", &json!({"entity_id": "mixed"}))
        .await;
    assert_eq!(now.body["version"], 40);
    let actual = states(&server, "mixed", &timestamps).await;
    for (i, (e, a)) in expected.iter().zip(&actual).enumerate() {
        assert_eq!(e.status, a.status, "as_of #{i}");
        assert_eq!(e.body, a.body, "as_of #{i}");
    }
    // And with the state cache on: cache, then snapshot, then full fold agree.
    let dir = server.stop().await;
    let cached = TestServer::start_in(dir, |s| s.snapshots.every_n_events = 0).await;
    let again = states(&cached, "mixed", &timestamps).await;
    for (i, (e, a)) in expected.iter().zip(&again).enumerate() {
        assert_eq!(e.body, a.body, "as_of #{i} after restart");
    }
}

#[tokio::test]
async fn snapshots_survive_a_restart() {
    let server = server(4, 3).await;
    for n in 1..=9 {
        append(&server, "durable", json!({"n": n})).await;
    }
    let manual = server
        .post_json("/api/v1/snapshots", &json!({"entity_id": "durable"}))
        .await;
    assert_eq!(manual.status, 201);
    eventually(async || {
        versions(&server.get("/api/v1/snapshots?entity_id=durable").await).ends_with(&[8, 9])
    })
    .await;
    let before = server.get("/api/v1/snapshots?entity_id=durable").await;
    let dir = server.stop().await;
    let server = TestServer::start_in(dir, |s| s.cache.max_states = 0).await;
    let after = server.get("/api/v1/snapshots?entity_id=durable").await;
    assert_eq!(after.status, 200);
    assert_eq!(after.body, before.body);
    let latest = server.get("/api/v1/snapshots/durable/latest").await;
    assert_eq!(latest.body, manual.body);
    let state = server.get("/api/v1/entities/durable/state").await;
    assert_eq!(state.body["current_state"], json!({"n": 9}));
}
