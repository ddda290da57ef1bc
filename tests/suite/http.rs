//! Black-box HTTP tests: the real server (embedded backend, temp data dir, port 0) through
//! every route, status code and error shape of the REST contract's core.

use allsource_tests::problem::{assert_problem, fields};
use allsource_tests::server::{Reply, TestServer};
use serde_json::{Value, json};

fn is_api_timestamp(value: &Value) -> bool {
    let Some(s) = value.as_str() else {
        return false;
    };
    // 2026-11-22T10:15:00.123456Z
    s.len() == 27
        && s.ends_with('Z')
        && s.as_bytes()[19] == b'.'
        && chrono::DateTime::parse_from_rfc3339(s).is_ok()
}

async fn append(server: &TestServer, body: Value) -> Reply {
    server.post_json("/api/v1/events", &body).await
}

#[tokio::test]
async fn append_then_read_back_every_way() {
    let server = TestServer::start().await;
    let first = append(
        &server,
        json!({"entity_id": "order-42", "event_type": "order.placed",
               "payload": {"amount_cents": 129900, "status": "placed", "note": "x"},
               "metadata": {"correlation_id": "c-1"}}),
    )
    .await;
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(first.body["entity_id"], "order-42");
    assert_eq!(first.body["version"], 1);
    assert_eq!(first.body["duplicate"], false);
    assert!(is_api_timestamp(&first.body["timestamp"]), "{}", first.body);
    let id = first.body["event_id"].as_str().unwrap().to_owned();
    assert_eq!(uuid::Uuid::parse_str(&id).unwrap().get_version_num(), 7);

    let second = append(
        &server,
        json!({"entity_id": "order-42", "event_type": "order.paid",
        "payload": {"status": "paid", "note": null}, "expected_version": 1}),
    )
    .await;
    assert_eq!(second.status, 200, "{}", second.body);
    assert_eq!(second.body["version"], 2);
    assert!(second.body["position"].as_u64() > first.body["position"].as_u64());

    let event = server.get(&format!("/api/v1/events/{id}")).await;
    assert_eq!(event.status, 200);
    for (k, v) in [
        ("id", json!(id)),
        ("tenant_id", json!("default")),
        ("entity_id", json!("order-42")),
        ("event_type", json!("order.placed")),
        ("version", json!(1)),
        ("metadata", json!({"correlation_id": "c-1"})),
    ] {
        assert_eq!(event.body[k], v, "{k}");
    }
    assert_eq!(event.body["payload"]["amount_cents"], 129900);
    assert_eq!(event.body["timestamp"], first.body["timestamp"]);

    let stream = server.get("/api/v1/entities/order-42/events").await;
    assert_eq!(stream.status, 200);
    assert_eq!(stream.body["count"], 2);
    assert_eq!(stream.body["events"][1]["version"], 2);
    let ranged = server
        .get("/api/v1/entities/order-42/events?from_version=2&to_version=2")
        .await;
    assert_eq!(ranged.body["count"], 1);
    let limited = server.get("/api/v1/entities/order-42/events?limit=1").await;
    assert_eq!(
        (
            limited.body["count"].clone(),
            limited.body["has_more"].clone()
        ),
        (json!(1), json!(true))
    );

    let state = server.get("/api/v1/entities/order-42/state").await;
    assert_eq!(state.status, 200, "{}", state.body);
    assert_eq!(
        state.body["current_state"],
        json!({"amount_cents": 129900, "status": "paid"})
    );
    assert_eq!(state.body["version"], 2);
    assert_eq!(state.body["event_count"], 2);
    assert_eq!(state.body["as_of"], Value::Null);
    assert_eq!(state.body["last_updated"], second.body["timestamp"]);
    assert!(state.body.get("history").is_none());

    let as_of = first.body["timestamp"].as_str().unwrap();
    let past = server
        .get(&format!(
            "/api/v1/entities/order-42/state?as_of={as_of}&include_history=true"
        ))
        .await;
    assert_eq!(past.status, 200, "{}", past.body);
    assert_eq!(
        past.body["current_state"],
        json!({"amount_cents": 129900, "status": "placed", "note": "x"})
    );
    assert_eq!(past.body["as_of"], json!(as_of));
    assert_eq!(past.body["history"].as_array().unwrap().len(), 1);
    let before = server
        .get("/api/v1/entities/order-42/state?as_of=2000-01-01T00:00:00Z")
        .await;
    assert_problem(&before, 404, "not_found");
}

#[tokio::test]
async fn non_object_payloads_replace_the_state() {
    let server = TestServer::start().await;
    for payload in [json!({"a": 1}), json!([1, 2]), json!({"b": 2, "c": null})] {
        assert_eq!(
            append(
                &server,
                json!({"entity_id": "s", "event_type": "t", "payload": payload})
            )
            .await
            .status,
            200
        );
    }
    let state = server.get("/api/v1/entities/s/state").await;
    assert_eq!(state.body["current_state"], json!({"b": 2}));
    assert_eq!(
        append(
            &server,
            json!({"entity_id": "n", "event_type": "t", "payload": null})
        )
        .await
        .status,
        200
    );
    assert_eq!(
        server.get("/api/v1/entities/n/state").await.body["current_state"],
        Value::Null
    );
}

#[tokio::test]
async fn batches_are_atomic_and_report_the_offender() {
    let server = TestServer::start().await;
    let ok = server
        .post_json(
            "/api/v1/events/batch",
            &json!({"events": [
                {"entity_id": "a", "event_type": "t", "payload": 1},
                {"entity_id": "b", "event_type": "t", "payload": 2},
                {"entity_id": "a", "event_type": "t", "payload": 3, "expected_version": 1},
            ]}),
        )
        .await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(
        (ok.body["total"].clone(), ok.body["ingested"].clone()),
        (json!(3), json!(3))
    );
    let versions: Vec<(Value, Value)> = ok.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["entity_id"].clone(), e["version"].clone()))
        .collect();
    assert_eq!(
        versions,
        [
            (json!("a"), json!(1)),
            (json!("b"), json!(1)),
            (json!("a"), json!(2))
        ]
    );

    let conflict = server.post_json("/api/v1/events/batch", &json!({"events": [
        {"entity_id": "c", "event_type": "t", "payload": 1},
        {"entity_id": "a", "event_type": "t", "payload": 1, "expected_version": "no_stream"},
    ]})).await;
    assert_problem(&conflict, 409, "version_conflict");
    assert_eq!(conflict.body["entity_id"], "a");
    assert_eq!(conflict.body["expected_version"], "no_stream");
    assert_eq!(conflict.body["current_version"], 2);
    assert_eq!(fields(&conflict), ["events[1].expected_version"]);
    let c = server.get("/api/v1/entities/c/events").await;
    assert_eq!(
        c.body["count"], 0,
        "nothing of the failed batch was appended"
    );

    let invalid = server
        .post_json(
            "/api/v1/events/batch",
            &json!({"events": [
                {"entity_id": "d", "event_type": "t", "payload": 1},
                {"entity_id": "d", "event_type": ".bad", "payload": 1},
            ]}),
        )
        .await;
    assert_problem(&invalid, 400, "validation_failed");
    assert_eq!(fields(&invalid), ["events[1].event_type"]);
    assert_eq!(server.get("/api/v1/stats").await.body["total_events"], 3);
    let empty = server
        .post_json("/api/v1/events/batch", &json!({"events": []}))
        .await;
    assert_problem(&empty, 400, "validation_failed");
}

#[tokio::test]
async fn expected_version_forms_and_conflict_members() {
    let server = TestServer::start().await;
    let send = |expected: Value| {
        append(
            &server,
            json!({"entity_id": "e", "event_type": "t", "payload": {}, "expected_version": expected}),
        )
    };
    let r = send(json!("stream_exists")).await;
    assert_problem(&r, 409, "version_conflict");
    assert_eq!(
        (
            r.body["expected_version"].clone(),
            r.body["current_version"].clone()
        ),
        (json!("stream_exists"), json!(0))
    );
    assert_eq!(send(json!("no_stream")).await.status, 200);
    assert_eq!(send(json!(1)).await.status, 200);
    assert_eq!(send(json!("any")).await.status, 200);
    assert_eq!(send(json!("stream_exists")).await.status, 200);
    let stale = send(json!(2)).await;
    assert_problem(&stale, 409, "version_conflict");
    assert_eq!(
        (
            stale.body["expected_version"].clone(),
            stale.body["current_version"].clone()
        ),
        (json!(2), json!(4))
    );
    assert_eq!(stale.body["entity_id"], "e");
    for bad in [json!(-1), json!("sometimes"), json!(1.5)] {
        let r = send(bad).await;
        assert_problem(&r, 400, "validation_failed");
        assert_eq!(fields(&r), ["expected_version"]);
    }
}

#[tokio::test]
async fn idempotent_resends_and_conflicting_ids() {
    let server = TestServer::start().await;
    let id = uuid::Uuid::new_v4().to_string();
    let body = json!({"id": id, "entity_id": "i", "event_type": "t", "payload": {"x": 1}});
    let first = append(&server, body.clone()).await;
    assert_eq!(first.status, 200);
    let again = append(&server, body.clone()).await;
    assert_eq!(again.status, 200);
    assert_eq!(again.body["duplicate"], true);
    for k in ["event_id", "version", "position", "timestamp"] {
        assert_eq!(again.body[k], first.body[k], "{k}");
    }
    let batch = server
        .post_json(
            "/api/v1/events/batch",
            &json!({"events": [body.clone(), {"entity_id": "i", "event_type": "t", "payload": 2}]}),
        )
        .await;
    assert_eq!(batch.status, 200);
    assert_eq!(
        (batch.body["total"].clone(), batch.body["ingested"].clone()),
        (json!(2), json!(1))
    );
    assert_eq!(batch.body["events"][0]["duplicate"], true);
    let other = append(
        &server,
        json!({"id": id, "entity_id": "i", "event_type": "t", "payload": {"x": 2}}),
    )
    .await;
    assert_problem(&other, 409, "duplicate_event_id");
    assert_eq!(other.body["event_id"], json!(id));
    assert_eq!(
        server.get("/api/v1/entities/i/events").await.body["count"],
        2
    );
}

#[tokio::test]
async fn validation_errors_name_fields() {
    let server = TestServer::start().await;
    let cases = [
        (json!({"event_type": "t", "payload": 1}), "entity_id"),
        (
            json!({"entity_id": "", "event_type": "t", "payload": 1}),
            "entity_id",
        ),
        (
            json!({"entity_id": " lead", "event_type": "t", "payload": 1}),
            "entity_id",
        ),
        (
            json!({"entity_id": "a\u{1}b", "event_type": "t", "payload": 1}),
            "entity_id",
        ),
        (
            json!({"entity_id": "x".repeat(257), "event_type": "t", "payload": 1}),
            "entity_id",
        ),
        (json!({"entity_id": "a", "payload": 1}), "event_type"),
        (
            json!({"entity_id": "a", "event_type": "a..b", "payload": 1}),
            "event_type",
        ),
        (
            json!({"entity_id": "a", "event_type": "x".repeat(129), "payload": 1}),
            "event_type",
        ),
        (
            json!({"entity_id": "a", "event_type": "sp ace", "payload": 1}),
            "event_type",
        ),
        (json!({"entity_id": "a", "event_type": "t"}), "payload"),
        (
            json!({"entity_id": "a", "event_type": "t", "payload": 1, "metadata": [1]}),
            "metadata",
        ),
        (
            json!({"entity_id": "a", "event_type": "t", "payload": 1, "id": "nope"}),
            "id",
        ),
        (
            json!({"entity_id": 7, "event_type": "t", "payload": 1}),
            "entity_id",
        ),
    ];
    for (body, field) in cases {
        let r = append(&server, body.clone()).await;
        assert_problem(&r, 400, "validation_failed");
        assert_eq!(fields(&r), [field], "{body}");
    }
    let unknown = append(
        &server,
        json!({"entity_id": "a", "event_type": "t", "payload": 1, "paylod": 2}),
    )
    .await;
    assert_problem(&unknown, 400, "validation_failed");
    assert!(unknown.body["detail"].as_str().unwrap().contains("paylod"));
    let malformed = server
        .post_raw(
            "/api/v1/events",
            "application/json",
            "{\"entity_id\":".into(),
        )
        .await;
    assert_problem(&malformed, 400, "validation_failed");
    assert_eq!(
        server.get("/api/v1/stats").await.body["total_events"],
        0,
        "nothing appended"
    );
}

#[tokio::test]
async fn content_type_and_size_limits() {
    let server = TestServer::start_with(|s| {
        s.limits.max_event_bytes = 1024;
        s.server.max_body_bytes = 8192;
    })
    .await;
    let wrong = server
        .post_raw(
            "/api/v1/events",
            "text/plain",
            json!({"entity_id": "a", "event_type": "t", "payload": 1}).to_string(),
        )
        .await;
    assert_problem(&wrong, 415, "unsupported_media_type");
    let big_event = append(
        &server,
        json!({"entity_id": "a", "event_type": "t", "payload": "x".repeat(1100)}),
    )
    .await;
    assert_problem(&big_event, 413, "payload_too_large");
    let big_body = append(
        &server,
        json!({"entity_id": "a", "event_type": "t", "payload": "x".repeat(9000)}),
    )
    .await;
    assert_problem(&big_body, 413, "payload_too_large");
    let in_batch = server
        .post_json(
            "/api/v1/events/batch",
            &json!({"events": [
                {"entity_id": "a", "event_type": "t", "payload": 1},
                {"entity_id": "a", "event_type": "t", "payload": "y".repeat(1100)},
            ]}),
        )
        .await;
    assert_problem(&in_batch, 413, "payload_too_large");
    assert_eq!(fields(&in_batch), ["events[1].payload"]);
    let charset = server
        .post_raw(
            "/api/v1/events",
            "application/json; charset=utf-8",
            json!({"entity_id": "a", "event_type": "t", "payload": 1}).to_string(),
        )
        .await;
    assert_eq!(charset.status, 200);
}

#[tokio::test]
async fn queries_filter_page_and_order() {
    let server = TestServer::start().await;
    let mut positions = Vec::new();
    for i in 0..12 {
        let r = append(&server, json!({"entity_id": format!("q{}", i % 3), "event_type": if i % 2 == 0 { "even" } else { "odd" }, "payload": i})).await;
        positions.push(r.body["position"].as_u64().unwrap());
    }
    let page = server.get("/api/v1/events/query?limit=5").await;
    assert_eq!(page.status, 200);
    assert_eq!(
        (page.body["count"].clone(), page.body["has_more"].clone()),
        (json!(5), json!(true))
    );
    assert_eq!(page.body["next_position"], positions[4]);
    let next = server
        .get(&format!(
            "/api/v1/events/query?limit=10&from_position={}",
            positions[4]
        ))
        .await;
    assert_eq!(next.body["count"], 7);
    assert_eq!(next.body["has_more"], false);
    let desc = server.get("/api/v1/events/query?order=desc&limit=2").await;
    let got: Vec<u64> = desc.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["position"].as_u64().unwrap())
        .collect();
    assert_eq!(got, [positions[11], positions[10]]);
    let typed = server
        .get("/api/v1/events/query?event_type=odd&entity_id=q1")
        .await;
    assert_eq!(typed.body["count"], 2);
    let skipped = server
        .get("/api/v1/events/query?event_type=even&offset=4")
        .await;
    assert_eq!(skipped.body["count"], 2);
    let none = server.get("/api/v1/events/query?entity_id=never").await;
    assert_eq!(none.status, 200);
    assert_eq!(
        (
            none.body["count"].clone(),
            none.body["next_position"].clone()
        ),
        (json!(0), Value::Null)
    );
    let first_ts = server.get("/api/v1/events/query?limit=1").await.body["events"][0]["timestamp"]
        .as_str()
        .unwrap()
        .to_owned();
    let as_of = server
        .get(&format!("/api/v1/events/query?as_of={first_ts}"))
        .await;
    assert!(as_of.body["count"].as_u64().unwrap() >= 1);
    let since = server
        .get(&format!("/api/v1/events/query?since={first_ts}"))
        .await;
    assert_eq!(since.body["count"], 12);
    let until = server
        .get(&format!("/api/v1/events/query?until={first_ts}"))
        .await;
    assert_eq!(until.body["count"], 0);
    for bad in [
        "limit=0",
        "limit=10001",
        "order=up",
        "since=yesterday",
        "from_position=-1",
        "entityid=q1",
    ] {
        let r = server.get(&format!("/api/v1/events/query?{bad}")).await;
        assert_problem(&r, 400, "validation_failed");
    }
}

#[tokio::test]
async fn catalog_routes() {
    let server = TestServer::start().await;
    for (entity, ty) in [
        ("b", "order.placed"),
        ("a", "user.created"),
        ("a", "order.placed"),
        ("c", "order.paid"),
    ] {
        assert_eq!(
            append(
                &server,
                json!({"entity_id": entity, "event_type": ty, "payload": {}})
            )
            .await
            .status,
            200
        );
    }
    let entities = server.get("/api/v1/entities?limit=2").await;
    assert_eq!(entities.status, 200);
    assert_eq!(entities.body["total"], 3);
    assert_eq!(entities.body["has_more"], true);
    // Most recently changed first: c, then a.
    assert_eq!(entities.body["entities"][0]["entity_id"], "c");
    let first = &entities.body["entities"][1];
    assert_eq!(
        (
            first["entity_id"].clone(),
            first["event_count"].clone(),
            first["version"].clone(),
            first["last_event_type"].clone()
        ),
        (json!("a"), json!(2), json!(2), json!("order.placed"))
    );
    assert!(is_api_timestamp(&first["last_event_at"]));
    let users = server.get("/api/v1/entities?event_type_prefix=user.").await;
    assert_eq!(users.body["total"], 1);
    let types = server.get("/api/v1/event-types").await;
    assert_eq!(types.body["total"], 3);
    assert_eq!(
        types.body["event_types"][1],
        json!({"event_type": "order.placed", "count": 2})
    );
    let stats = server.get("/api/v1/stats").await;
    assert_eq!(
        (
            stats.body["total_events"].clone(),
            stats.body["total_entities"].clone(),
            stats.body["total_event_types"].clone()
        ),
        (json!(4), json!(3), json!(3))
    );
    assert_eq!(stats.body["last_position"], 4);
    assert_eq!(stats.body["storage"]["backend"], "embedded");
}

#[tokio::test]
async fn not_found_health_and_request_ids() {
    let server = TestServer::start().await;
    assert_problem(
        &server
            .get(&format!("/api/v1/events/{}", uuid::Uuid::new_v4()))
            .await,
        404,
        "not_found",
    );
    assert_problem(
        &server.get("/api/v1/events/not-a-uuid").await,
        400,
        "validation_failed",
    );
    assert_problem(
        &server.get("/api/v1/entities/nobody/state").await,
        404,
        "not_found",
    );
    assert_problem(&server.get("/api/v1/nothing-here").await, 404, "not_found");
    let health = server.get("/health").await;
    assert_eq!(health.status, 200);
    assert_eq!(health.body["status"], "healthy");
    assert_eq!(health.body["storage"]["backend"], "embedded");
    assert!(health.body["version"].is_string());
    assert_eq!(server.get("/health/ready").await.status, 200);
    let echoed = server
        .client
        .get(server.url("/health"))
        .header("x-request-id", "trace-me-42")
        .send()
        .await
        .unwrap();
    assert_eq!(echoed.headers()["x-request-id"], "trace-me-42");
    let echoed_error = server
        .client
        .get(server.url("/api/v1/entities/x/state"))
        .header("x-request-id", "err-7")
        .send()
        .await
        .unwrap();
    assert_eq!(echoed_error.headers()["x-request-id"], "err-7");
    let generated = server.get("/api/v1/stats").await;
    assert!(uuid::Uuid::parse_str(generated.header("x-request-id").unwrap()).is_ok());
}

#[tokio::test]
async fn a_restarted_server_serves_the_same_events() {
    let server = TestServer::start().await;
    for i in 0..20 {
        assert_eq!(
            append(
                &server,
                json!({"entity_id": format!("r{}", i % 4), "event_type": "t", "payload": {"i": i}})
            )
            .await
            .status,
            200
        );
    }
    let before = server.get("/api/v1/events/query").await.body;
    let dir = server.stop().await;
    let server = TestServer::start_in(dir, |_| {}).await;
    assert_eq!(server.get("/api/v1/events/query").await.body, before);
    let next = append(
        &server,
        json!({"entity_id": "r0", "event_type": "t", "payload": {}}),
    )
    .await;
    assert_eq!(next.body["position"], 21);
    assert_eq!(next.body["version"], 6);
}

#[tokio::test]
async fn state_reads_see_every_new_event() {
    let server = TestServer::start().await;
    for i in 0..5 {
        assert_eq!(append(&server, json!({"entity_id": "live", "event_type": "t", "payload": {"n": i, format!("k{i}"): true}})).await.status, 200);
        let state = server.get("/api/v1/entities/live/state").await;
        assert_eq!(state.body["version"], i + 1);
        assert_eq!(state.body["current_state"]["n"], i);
        assert_eq!(state.body["current_state"][format!("k{i}")], true);
    }
    let history = server
        .get("/api/v1/entities/live/state?include_history=true")
        .await;
    assert_eq!(history.body["history"].as_array().map(Vec::len), Some(5));
}

// ---------------------------------------------------------------------------------------------
// The HTTP layer's own answers

/// A raw HTTP/1.1 exchange: `head` (request line and headers, without the final blank line)
/// sent as is, with `Connection: close`; the status, lower-cased headers and body answered.
async fn raw(server: &TestServer, head: &str) -> (u16, Vec<(String, String)>, Vec<u8>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = server.base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("{head}\r\nHost: test\r\nConnection: close\r\n\r\n");
    // The server may answer and close before reading all of an over-long head.
    let _ = stream.write_all(request.as_bytes()).await;
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer).await;
    let end = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no response head in {:?}", String::from_utf8_lossy(&answer)));
    let head = String::from_utf8_lossy(&answer[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    (status, headers, answer[end + 4..].to_vec())
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// The raw answer is a problem document of `status`/`code` with a request id.
fn assert_raw_problem(answer: &(u16, Vec<(String, String)>, Vec<u8>), status: u16, code: &str) {
    let (got, headers, body) = answer;
    let text = String::from_utf8_lossy(body);
    assert_eq!(*got, status, "{headers:?} {text}");
    assert_eq!(
        header(headers, "content-type"),
        Some("application/problem+json"),
        "{headers:?}"
    );
    assert!(
        header(headers, "x-request-id").is_some_and(|id| !id.is_empty()),
        "{headers:?}"
    );
    let problem: Value = serde_json::from_slice(body).unwrap_or_else(|e| panic!("{e}: {text}"));
    assert_eq!(problem["status"], status, "{problem}");
    assert_eq!(problem["error"], code, "{problem}");
    assert!(problem["detail"].is_string(), "{problem}");
}

#[tokio::test]
async fn oversized_uris_and_headers_are_problem_documents_with_a_request_id() {
    let server = TestServer::start().await;
    // Request targets over 8 KiB: 414 from the server's own limit, up to hyper's fixed limit.
    for len in [8 * 1024 + 1, 60 * 1024] {
        let uri = format!("/health?q={}", "a".repeat(len));
        let answer = raw(&server, &format!("GET {uri} HTTP/1.1")).await;
        assert_raw_problem(&answer, 414, "uri_too_long");
    }
    // Header sections over 64 KiB (up to hyper's 1 MiB buffer), and over 100 header lines.
    for (count, size) in [(10, 7 * 1024), (60, 8 * 1024), (150, 1)] {
        let headers: Vec<String> = (0..count)
            .map(|i| format!("x-filler-{i}: {}", "v".repeat(size)))
            .collect();
        let head = format!("GET /health HTTP/1.1\r\n{}", headers.join("\r\n"));
        let answer = raw(&server, &head).await;
        assert_raw_problem(&answer, 431, "header_fields_too_large");
    }
    // A client's own request id is kept on the answer.
    let head = format!(
        "GET /health?q={} HTTP/1.1\r\nx-request-id: mine-1",
        "a".repeat(9000)
    );
    let answer = raw(&server, &head).await;
    assert_raw_problem(&answer, 414, "uri_too_long");
    assert_eq!(header(&answer.1, "x-request-id"), Some("mine-1"));
    // Just under the limits, served.
    let uri = format!("/health/ready?q={}", "a".repeat(100));
    let ok = raw(&server, &format!("GET {uri} HTTP/1.1")).await;
    assert_raw_problem(&ok, 400, "validation_failed");
    let ok = raw(&server, "GET /health HTTP/1.1\r\nx-one: 1").await;
    assert_eq!(ok.0, 200, "{:?}", ok.1);
    // Beyond hyper's own limits (a target over its fixed 65,534 bytes, more than 1,024 header
    // lines) and for a head that does not parse, hyper answers before any request exists:
    // those answers are problem documents too.
    let uri = format!("/health?q={}", "a".repeat(70 * 1024));
    let answer = raw(&server, &format!("GET {uri} HTTP/1.1")).await;
    assert_raw_problem(&answer, 414, "uri_too_long");
    let headers: Vec<String> = (0..1100).map(|i| format!("x-h-{i}: 1")).collect();
    let answer = raw(
        &server,
        &format!("GET /health HTTP/1.1\r\n{}", headers.join("\r\n")),
    )
    .await;
    assert_raw_problem(&answer, 431, "header_fields_too_large");
    let answer = raw(&server, "GET /health HTTP/1.1\r\nbad header line").await;
    assert_raw_problem(&answer, 400, "validation_failed");
    // The server goes on serving.
    let ok = raw(&server, "GET /health HTTP/1.1").await;
    assert_eq!(ok.0, 200, "{:?}", ok.1);
}

#[tokio::test]
async fn every_route_refuses_unknown_query_parameters_naming_them() {
    let server = TestServer::start().await;
    let routes = allsource_presentation::served_routes();
    assert!(routes.len() > 50, "{}", routes.len());
    for route in routes {
        // Path parameters filled with a value no resource has.
        let path: String = route
            .path
            .split('/')
            .map(|seg| {
                if seg.starts_with('{') {
                    "no-such-thing"
                } else {
                    seg
                }
            })
            .collect::<Vec<_>>()
            .join("/");
        let method = reqwest::Method::from_bytes(route.verb.as_str().as_bytes()).unwrap();
        let body =
            matches!(method, reqwest::Method::POST | reqwest::Method::PUT).then(|| json!({}));
        let reply = server
            .call(method, &format!("{path}?bogus=1"), None, body.as_ref())
            .await;
        let what = format!("{} {}", route.verb.as_str(), route.path);
        assert_problem(&reply, 400, "validation_failed");
        assert_eq!(fields(&reply), ["bogus"], "{what}: {}", reply.body);
        assert!(
            reply.body["errors"][0]["message"]
                .as_str()
                .is_some_and(|m| m.contains("bogus")),
            "{what}: {}",
            reply.body
        );
    }
}
