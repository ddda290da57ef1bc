//! Payload safety against the real server (embedded backend, temp data dir): payloads and
//! metadata that some reader could not read (nesting over the limit, numbers beyond a finite
//! float, lone surrogate escapes) are refused at append with the field named and nothing stored;
//! what is accepted, up to the nesting limit, reads back the same through `/events`, entity
//! state, snapshots and projections, and keeps doing so after a restart (a deep payload once
//! made the state log unreadable and the server refuse to start); a state log that still holds
//! such a record starts, its users intact, the record set aside.

use std::time::{Duration, Instant};

use allsource_domain::MAX_NESTING;
use allsource_tests::problem::{assert_problem, fields};
use allsource_tests::server::{Reply, TestServer};
use serde_json::{Value, json};

/// `depth` levels of objects and arrays, alternating, around a scalar.
fn nested(depth: usize) -> String {
    let mut text = "1".to_owned();
    for level in 0..depth {
        text = if level % 2 == 0 {
            format!("[{text}]")
        } else {
            format!(r#"{{"x":{text}}}"#)
        };
    }
    text
}

/// An event's JSON text with the given payload and metadata texts.
fn event(entity: &str, payload: &str, metadata: Option<&str>) -> String {
    let metadata = metadata.map_or(String::new(), |m| format!(r#","metadata":{m}"#));
    format!(
        r#"{{"entity_id":"{entity}","event_type":"thing.changed","payload":{payload}{metadata}}}"#
    )
}

async fn append(server: &TestServer, body: String) -> Reply {
    server
        .post_raw("/api/v1/events", "application/json", body)
        .await
}

async fn append_batch(server: &TestServer, events: &[String]) -> Reply {
    let body = format!(r#"{{"events":[{}]}}"#, events.join(","));
    server
        .post_raw("/api/v1/events/batch", "application/json", body)
        .await
}

async fn events_of(server: &TestServer, entity: &str) -> Value {
    let reply = server
        .get(&format!("/api/v1/events/query?entity_id={entity}"))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    reply.body
}

/// The 400 names exactly `field`, and its message says why.
fn assert_refused(reply: &Reply, field: &str, why: &str) {
    assert_problem(reply, 400, "validation_failed");
    assert_eq!(fields(reply), [field], "{}", reply.body);
    let message = reply.body["errors"][0]["message"].as_str().unwrap_or("");
    assert!(message.contains(why), "{field}: {message}");
}

/// Payload texts no reader could read, with a word of the refusal's message.
fn unreadable_payloads() -> Vec<(String, &'static str)> {
    vec![
        (nested(MAX_NESTING + 1), "levels deep"),
        (nested(127), "levels deep"),
        (nested(128), "levels deep"),
        (nested(5000), "levels deep"),
        ("1e999".into(), "finite 64-bit float"),
        (r#"{"n":-1e999}"#.into(), "finite 64-bit float"),
        (r#"{"n":[1e400000000]}"#.into(), "finite 64-bit float"),
        (
            format!(r#"{{"n":{}}}"#, "9".repeat(400)),
            "finite 64-bit float",
        ),
        (r#""\ud800""#.into(), "lone UTF-16 surrogate"),
        (r#"{"s":"a\udc00b"}"#.into(), "lone UTF-16 surrogate"),
        (r#"{"\ud83d":1}"#.into(), "lone UTF-16 surrogate"),
    ]
}

#[tokio::test]
async fn unreadable_payloads_and_metadata_are_refused_by_field_and_nothing_is_stored() {
    let server = TestServer::start().await;
    for (payload, why) in unreadable_payloads() {
        let reply = append(&server, event("odd", &payload, None)).await;
        assert_refused(&reply, "payload", why);

        let reply = append_batch(
            &server,
            &[event("odd", "{}", None), event("odd", &payload, None)],
        )
        .await;
        assert_refused(&reply, "events[1].payload", why);

        // Metadata is an object: the same text one level down.
        let metadata = format!(r#"{{"m":{payload}}}"#);
        let reply = append(&server, event("odd", "{}", Some(&metadata))).await;
        assert_refused(&reply, "metadata", why);
        let reply = append_batch(&server, &[event("odd", "{}", Some(&metadata))]).await;
        assert_refused(&reply, "events[0].metadata", why);
    }
    assert_eq!(events_of(&server, "odd").await["count"], 0);
    assert_eq!(
        server.get("/api/v1/entities/odd/state").await.status,
        404,
        "nothing was stored"
    );
}

/// Every read path of one entity, and of a projection over it.
async fn read_paths(server: &TestServer, entity: &str) -> Vec<Value> {
    let state = server
        .get(&format!("/api/v1/entities/{entity}/state"))
        .await;
    assert_eq!(state.status, 200, "{}", state.body);
    let snapshot = server
        .get(&format!("/api/v1/snapshots/{entity}/latest"))
        .await;
    assert_eq!(snapshot.status, 200, "{}", snapshot.body);
    let projected = server
        .get(&format!("/api/v1/projections/keep/state/{entity}"))
        .await;
    assert_eq!(projected.status, 200, "{}", projected.body);
    let snapshots = server
        .get(&format!("/api/v1/snapshots?entity_id={entity}"))
        .await;
    assert_eq!(snapshots.status, 200, "{}", snapshots.body);
    vec![
        events_of(server, entity).await,
        state.body,
        snapshot.body,
        projected.body,
        snapshots.body,
    ]
}

async fn caught_up(server: &TestServer, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let reply = server.get(&format!("/api/v1/projections/{name}")).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        let status = &reply.body["status"];
        if status["lag_events"] == 0 && status["checkpoint"] == status["head_position"] {
            return;
        }
        assert!(Instant::now() < deadline, "not caught up: {}", reply.body);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn payloads_at_the_limit_read_back_the_same_everywhere_and_across_a_restart() {
    // An automatic snapshot at version 3, a manual one at 4, and no state cache: reads go
    // through snapshots.
    let adjust = |s: &mut allsource::Settings| {
        s.snapshots.every_n_events = 3;
        s.cache.max_states = 0;
    };
    let server = TestServer::start_with(adjust).await;
    let projection = json!({
        "name": "keep",
        "fields": {"last": {"reducer": "last"}, "merged": {"reducer": "merge"}}
    });
    let reply = server.post_json("/api/v1/projections", &projection).await;
    assert_eq!(reply.status, 201, "{}", reply.body);

    // At the limit, as the whole payload, inside an object, in metadata; and the edge values
    // that are kept.
    let deep = nested(MAX_NESTING);
    let in_object = format!(r#"{{"deep":{}}}"#, nested(MAX_NESTING - 1));
    let edges = r#"{"big":18446744073709551615,"beyond":18446744073709551616,"neg":-0,"max":1e308,"tiny":1e-400,"emoji":"\ud83d\ude00","kept":true}"#;
    let deep_metadata = format!(r#"{{"m":{}}}"#, nested(MAX_NESTING - 1));
    for payload in [&deep, &in_object] {
        let reply = append(&server, event("deep", payload, Some(&deep_metadata))).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
    }
    let reply = append_batch(
        &server,
        &[event("deep", edges, None), event("deep", &in_object, None)],
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    // Refused beside it: the rest of the server is untouched by the refusals.
    assert_refused(
        &append(&server, event("deep", &nested(127), None)).await,
        "payload",
        "levels deep",
    );

    let snapshot = server
        .post_json("/api/v1/snapshots", &json!({"entity_id": "deep"}))
        .await;
    assert_eq!(snapshot.status, 201, "{}", snapshot.body);
    caught_up(&server, "keep").await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let list = server.get("/api/v1/snapshots?entity_id=deep").await;
        let versions: Vec<u64> = list.body["snapshots"]
            .as_array()
            .map(|s| s.iter().filter_map(|s| s["version"].as_u64()).collect())
            .unwrap_or_default();
        if versions.contains(&3) && versions.contains(&4) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no automatic snapshot: {}",
            list.body
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let before = read_paths(&server, "deep").await;

    // The readers agree on what the payloads are.
    let events = before[0]["events"].as_array().expect("events").clone();
    assert_eq!(events.len(), 4);
    let payloads: Vec<Value> = events.iter().map(|e| e["payload"].clone()).collect();
    let sent = |text: &str| serde_json::from_str::<Value>(text).expect("sent JSON");
    assert_eq!(payloads[0], sent(&deep));
    assert_eq!(payloads[2], sent(edges));
    assert_eq!(events[0]["metadata"], sent(&deep_metadata));
    let mut expected_state = sent(edges);
    // The first payload is `{"x": ...}` (64 levels with the object), the others add keys.
    expected_state["x"] = sent(&nested(MAX_NESTING - 1));
    expected_state["deep"] = sent(&nested(MAX_NESTING - 1));
    assert_eq!(before[1]["current_state"], expected_state);
    assert_eq!(before[2]["state"], expected_state, "{}", before[2]);
    assert_eq!(before[2]["version"], 4);
    assert_eq!(before[3]["state"]["merged"], expected_state);
    assert_eq!(before[3]["state"]["last"], sent(&in_object));

    let dir = server.stop().await;
    let server = TestServer::start_in(dir, adjust).await;
    caught_up(&server, "keep").await;
    let after = read_paths(&server, "deep").await;
    assert_eq!(
        after, before,
        "every read path answers the same after a restart"
    );
    // And the restarted server takes writes.
    let reply = append(&server, event("deep", r#"{"again":1}"#, None)).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
}

/// The PostgreSQL state store refuses what it could not read back, and a row it cannot read
/// (written by an older version, or by hand) fails only reads of its own key.
#[tokio::test]
async fn postgres_state_refuses_unreadable_values_and_an_unreadable_row_fails_only_its_key() {
    use std::sync::Arc;

    use allsource_application::ports::{StateError, StateStore};
    use allsource_domain::TenantId;
    use allsource_infrastructure::SystemClock;
    use allsource_infrastructure::postgres::{PostgresConfig, PostgresStore};
    use allsource_infrastructure::state::{PostgresStateStore, READABLE_NESTING};
    use allsource_tests::pg::TestDatabase;

    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let config = PostgresConfig {
        url: db.url().to_owned(),
        max_connections: 2,
        ..Default::default()
    };
    let events = PostgresStore::connect(&config, Arc::new(SystemClock))
        .await
        .expect("connect");
    let state = PostgresStateStore::new(events.pool().clone());
    let tenant = TenantId::default_tenant();
    let tree = |depth: usize| (0..depth).fold(json!(1), |v, _| Value::Array(vec![v]));

    state
        .put(&tenant, "snapshots", "a", tree(READABLE_NESTING), None)
        .await
        .expect("the deepest readable value is stored");
    let refused = state
        .put(&tenant, "snapshots", "b", tree(READABLE_NESTING + 1), None)
        .await
        .unwrap_err();
    assert!(
        matches!(&refused, StateError::Internal(e) if e.to_string().contains("default/snapshots/b cannot be stored")),
        "{refused}"
    );
    state
        .put(&tenant, "snapshots", "c", json!({"n": 1}), None)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO allsource_state (tenant_id, namespace, key, value, version) \
         VALUES ('default', 'snapshots', 'b', $1::jsonb, 1)",
    )
    .bind(nested(200))
    .execute(events.pool())
    .await
    .expect("a row written by hand");

    let listed: Vec<String> = state
        .list(&tenant, "snapshots", None, None, 10)
        .await
        .expect("the listing is not failed by one row")
        .into_iter()
        .map(|(key, _)| key)
        .collect();
    assert_eq!(listed, ["a", "c"]);
    let a = state.get(&tenant, "snapshots", "a").await.unwrap().unwrap();
    assert_eq!(a.value, tree(READABLE_NESTING));
    let err = state.get(&tenant, "snapshots", "b").await.unwrap_err();
    assert!(
        err.to_string()
            .contains("state entry default/snapshots/b cannot be read"),
        "{err}"
    );
}

/// CRC32C (Castagnoli), bit by bit: the state log's record checksum.
fn crc32c(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A whole state-log put record (`u32 len | u32 crc | body`) with the value's text as given.
fn state_record(tenant: &str, namespace: &str, key: &str, version: u64, value: &str) -> Vec<u8> {
    let mut body = vec![1u8];
    for s in [tenant, namespace, key] {
        body.extend_from_slice(&(s.len() as u32).to_le_bytes());
        body.extend_from_slice(s.as_bytes());
    }
    body.extend_from_slice(&version.to_le_bytes());
    body.extend_from_slice(&(value.len() as u32).to_le_bytes());
    body.extend_from_slice(value.as_bytes());
    let mut record = (body.len() as u32).to_le_bytes().to_vec();
    record.extend_from_slice(&crc32c(&body).to_le_bytes());
    record.extend_from_slice(&body);
    record
}

/// A state log holding a whole record that cannot be read (as versions without the nesting
/// limit wrote for deep snapshots) still starts the server, with its users intact; the record
/// is set aside in the quarantine file.
#[tokio::test]
async fn a_state_log_with_an_unreadable_record_starts_with_users_intact() {
    use allsource_tests::server::{ADMIN_PASSWORD, ADMIN_USERNAME};
    use reqwest::Method;

    let server = TestServer::start_with_auth(|_| {}).await;
    let admin = json!({"username": ADMIN_USERNAME, "password": ADMIN_PASSWORD});
    let reply = server
        .call(Method::POST, "/api/v1/auth/login", None, Some(&admin))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let token = reply.body["access_token"].as_str().unwrap().to_owned();
    let alice = json!({"username": "alice", "password": "alice password 123", "role": "developer"});
    let reply = server
        .call(
            Method::POST,
            "/api/v1/auth/users",
            Some(&token),
            Some(&alice),
        )
        .await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    let dir = server.stop().await;

    let log = dir.path().join("state").join("state.log");
    let bad = state_record("default", "snapshots", "deep/1", 1, &nested(200));
    let mut bytes = std::fs::read(&log).expect("the state log");
    bytes.extend_from_slice(&bad);
    // Later writes follow it: before quarantining, this was "corrupt" and the start failed.
    bytes.extend_from_slice(&state_record("default", "markers", "after", 1, "{}"));
    std::fs::write(&log, &bytes).unwrap();

    let server = TestServer::start_in(dir, allsource_tests::server::enable_auth).await;
    let alice_login = json!({"username": "alice", "password": "alice password 123"});
    let reply = server
        .call(Method::POST, "/api/v1/auth/login", None, Some(&alice_login))
        .await;
    assert_eq!(reply.status, 200, "users survive: {}", reply.body);
    let dir = server.stop().await;
    let quarantined = std::fs::read(dir.path().join("state").join("state.log.quarantine"))
        .expect("the quarantine file");
    assert_eq!(quarantined, bad);
}
