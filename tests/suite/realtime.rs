//! Following the log over the real server: durable consumers over HTTP, the WebSocket (a real
//! tokio-tungstenite client) with and without a consumer, Server-Sent Events with
//! `Last-Event-ID`, slow readers, tenant isolation of every door, and shutdown with open
//! streams.

use std::time::Duration;

use allsource_tests::server::TestServer;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

fn ws_url(server: &TestServer, query: &str) -> String {
    format!(
        "{}/api/v1/events/stream{query}",
        server.base.replacen("http://", "ws://", 1)
    )
}

async fn connect(server: &TestServer, query: &str, token: Option<&str>) -> Socket {
    let mut request = ws_url(server, query)
        .into_client_request()
        .expect("request");
    if let Some(token) = token {
        request.headers_mut().insert(
            "authorization",
            format!("Bearer {token}").parse().expect("header"),
        );
    }
    let (socket, response) = tokio_tungstenite::connect_async(request)
        .await
        .expect("websocket handshake");
    assert_eq!(response.status(), 101);
    socket
}

/// The next text frame as JSON (pings are skipped), failing after 10 s.
async fn frame(socket: &mut Socket) -> Value {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .expect("a frame within 10 s")
            .expect("the socket is open")
            .expect("a frame");
        match message {
            Message::Text(text) => return serde_json::from_str(&text).expect("a JSON frame"),
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("unexpected frame {other:?}"),
        }
    }
}

/// Nothing but pings for a while.
async fn silent(socket: &mut Socket, for_ms: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_millis(for_ms);
    loop {
        match tokio::time::timeout_at(deadline, socket.next()).await {
            Err(_) => return,
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => {}
            Ok(other) => panic!("unexpected: {other:?}"),
        }
    }
}

async fn subscribe(socket: &mut Socket, message: Value) {
    socket
        .send(Message::Text(message.to_string().into()))
        .await
        .expect("send");
}

async fn append(server: &TestServer, events: &[(&str, &str)]) -> Vec<u64> {
    let body: Vec<Value> = events
        .iter()
        .map(|(entity, ty)| json!({"entity_id": entity, "event_type": ty, "payload": {}}))
        .collect();
    let reply = server
        .post_json("/api/v1/events/batch", &json!({ "events": body }))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    reply.body["events"]
        .as_array()
        .expect("receipts")
        .iter()
        .map(|r| r["position"].as_u64().expect("position"))
        .collect()
}

/// Reads frames until `count` events arrived; returns (positions, frame kinds in order).
async fn read_events(socket: &mut Socket, count: usize) -> (Vec<u64>, Vec<String>) {
    let mut positions = Vec::new();
    let mut kinds = Vec::new();
    while positions.len() < count {
        let f = frame(socket).await;
        match f["type"].as_str() {
            Some("replay") => {
                assert_eq!(f["position"], f["event"]["position"], "{f}");
                positions.push(f["position"].as_u64().expect("position"));
                kinds.push("replay".to_owned());
            }
            Some("replay_complete") => kinds.push(format!("complete:{}", f["replayed"])),
            Some(other) => panic!("unexpected frame type {other}: {f}"),
            None => {
                assert!(f["id"].is_string() && f["entity_id"].is_string(), "{f}");
                positions.push(f["position"].as_u64().expect("position"));
                kinds.push("live".to_owned());
            }
        }
    }
    (positions, kinds)
}

#[tokio::test]
async fn consumers_upsert_poll_ack_and_delete_over_http() {
    let server = TestServer::start().await;
    let created = server
        .post_json(
            "/api/v1/consumers",
            &json!({"consumer_id": "w1", "event_type_filters": ["order.*"]}),
        )
        .await;
    assert_eq!(created.status, 200, "{}", created.body);
    assert_eq!(created.body["consumer_id"], "w1");
    assert_eq!(created.body["event_type_filters"], json!(["order.*"]));
    assert_eq!(created.body["cursor_position"], Value::Null);
    assert!(created.body["created_at"].is_string() && created.body["updated_at"].is_string());

    append(
        &server,
        &[
            ("o1", "order.placed"),
            ("c1", "customer.created"),
            ("o1", "order.paid"),
        ],
    )
    .await;
    let polled = server.get("/api/v1/consumers/w1/events?limit=1").await;
    assert_eq!(polled.status, 200, "{}", polled.body);
    assert_eq!(polled.body["count"], 1);
    assert_eq!(polled.body["has_more"], true);
    assert_eq!(polled.body["events"][0]["position"], 1);
    assert_eq!(polled.body["events"][0]["event_type"], "order.placed");

    let acked = server
        .post_json("/api/v1/consumers/w1/ack", &json!({"position": 1}))
        .await;
    assert_eq!(acked.status, 200, "{}", acked.body);
    assert_eq!(
        acked.body,
        json!({"status": "ok", "consumer_id": "w1", "position": 1})
    );
    let older = server
        .post_json("/api/v1/consumers/w1/ack", &json!({"position": 0}))
        .await;
    assert_eq!(older.body["position"], 1, "monotonic: {}", older.body);
    let past = server
        .post_json("/api/v1/consumers/w1/ack", &json!({"position": 99}))
        .await;
    assert_eq!(past.status, 400, "{}", past.body);
    assert_eq!(past.body["errors"][0]["field"], "position");

    let rest = server.get("/api/v1/consumers/w1/events").await;
    assert_eq!(rest.body["count"], 1);
    assert_eq!(rest.body["events"][0]["position"], 3);
    // The upsert keeps the cursor.
    let updated = server
        .post_json(
            "/api/v1/consumers",
            &json!({"consumer_id": "w1", "event_type_filters": ["customer.*"]}),
        )
        .await;
    assert_eq!(updated.body["cursor_position"], 1);
    let one = server.get("/api/v1/consumers/w1").await;
    assert_eq!(one.body["event_type_filters"], json!(["customer.*"]));
    let list = server.get("/api/v1/consumers").await;
    assert_eq!(list.body["total"], 1);
    assert_eq!(list.body["consumers"][0]["consumer_id"], "w1");

    for (body, field) in [
        (json!({"consumer_id": "a b"}), "consumer_id"),
        (json!({"event_type_filters": []}), "consumer_id"),
        (
            json!({"consumer_id": "w2", "event_type_filters": ["x*"]}),
            "event_type_filters[0]",
        ),
    ] {
        let bad = server.post_json("/api/v1/consumers", &body).await;
        assert_eq!(bad.status, 400, "{body}: {}", bad.body);
        assert_eq!(bad.body["errors"][0]["field"], field, "{}", bad.body);
    }
    let unknown = server
        .post_json(
            "/api/v1/consumers",
            &json!({"consumer_id": "w2", "cursor": 5}),
        )
        .await;
    assert_eq!(unknown.status, 400, "{}", unknown.body);
    let bad_limit = server.get("/api/v1/consumers/w1/events?limit=0").await;
    assert_eq!(bad_limit.status, 400);
    let bad_param = server.get("/api/v1/consumers/w1/events?from=3").await;
    assert_eq!(bad_param.status, 400);

    let deleted = server
        .call(reqwest::Method::DELETE, "/api/v1/consumers/w1", None, None)
        .await;
    assert_eq!(deleted.status, 204);
    assert_eq!(server.get("/api/v1/consumers/w1").await.status, 404);
    assert_eq!(server.get("/api/v1/consumers/w1/events").await.status, 404);
    assert_eq!(
        server
            .post_json("/api/v1/consumers/w1/ack", &json!({"position": 1}))
            .await
            .status,
        404
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_replays_then_goes_live_while_appends_race_the_connect() {
    let server = TestServer::start().await;
    for _ in 0..5 {
        append(&server, &[("e1", "t"); 10]).await;
    }
    let appender = {
        let client = server.client.clone();
        let url = server.url("/api/v1/events/batch");
        tokio::spawn(async move {
            for i in 0..40 {
                let events: Vec<Value> = (0..5)
                    .map(|j| json!({"entity_id": format!("e{}", (i + j) % 3), "event_type": "t", "payload": {"i": i}}))
                    .collect();
                let reply = client
                    .post(&url)
                    .json(&json!({ "events": events }))
                    .send()
                    .await
                    .expect("append");
                assert_eq!(reply.status(), 200);
            }
        })
    };
    let mut socket = connect(&server, "", None).await;
    subscribe(
        &mut socket,
        json!({"type": "subscribe", "filters": [], "from_position": 0}),
    )
    .await;
    appender.await.expect("appender");
    let (positions, kinds) = read_events(&mut socket, 250).await;
    assert_eq!(
        positions,
        (1..=250).collect::<Vec<u64>>(),
        "no gap, no duplicate"
    );
    let complete: Vec<_> = kinds.iter().filter(|k| k.starts_with("complete")).collect();
    assert!(complete.len() <= 1, "{complete:?}");
    // Replay frames, then the marker, then bare events only.
    let first_live = kinds.iter().position(|k| k == "live");
    if let Some(first_live) = first_live {
        assert!(kinds[..first_live].iter().all(|k| k != "live"));
        assert!(kinds[first_live..].iter().all(|k| k == "live"), "{kinds:?}");
        let replayed = kinds.iter().filter(|k| *k == "replay").count();
        assert_eq!(complete, [&format!("complete:{replayed}")]);
    }
    // Live from now on.
    append(&server, &[("e9", "t")]).await;
    let live = frame(&mut socket).await;
    let live = if live["type"] == "replay_complete" {
        frame(&mut socket).await
    } else {
        live
    };
    assert_eq!(live["position"], 251, "{live}");
    assert!(live.get("type").is_none(), "live events are bare: {live}");
    silent(&mut socket, 100).await;
}

#[tokio::test]
async fn websocket_sends_nothing_before_subscribe_and_filters_what_it_sends() {
    let server = TestServer::start().await;
    let mut socket = connect(&server, "", None).await;
    append(&server, &[("o1", "order.placed")]).await;
    silent(&mut socket, 200).await;
    subscribe(
        &mut socket,
        json!({"type": "subscribe", "filters": ["order.*"]}),
    )
    .await;
    // Live only: no replay, no marker; the subscribe is handled before the next append.
    tokio::time::sleep(Duration::from_millis(100)).await;
    append(
        &server,
        &[("o1", "orders.x"), ("o2", "order.paid"), ("c1", "customer")],
    )
    .await;
    let f = frame(&mut socket).await;
    assert_eq!(
        (f["position"].as_u64(), f["event_type"].as_str()),
        (Some(3), Some("order.paid"))
    );
    assert!(f.get("type").is_none(), "{f}");
    // A new subscribe changes the filters of what follows.
    subscribe(
        &mut socket,
        json!({"type": "subscribe", "filters": ["customer"], "entity_id": "c1"}),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    append(
        &server,
        &[("c1", "customer"), ("c2", "customer"), ("o1", "order.x")],
    )
    .await;
    let f = frame(&mut socket).await;
    assert_eq!(f["position"], 5, "{f}");
    silent(&mut socket, 100).await;
    // Messages the server cannot read change nothing and say why.
    subscribe(
        &mut socket,
        json!({"type": "subscribe", "filters": ["bad*"]}),
    )
    .await;
    let e = frame(&mut socket).await;
    assert_eq!(e["type"], "error", "{e}");
    assert!(
        e["message"]
            .as_str()
            .is_some_and(|m| m.contains("filters[0]")),
        "{e}"
    );
    socket
        .send(Message::Text("not json".into()))
        .await
        .expect("send");
    assert_eq!(frame(&mut socket).await["type"], "error");
    append(&server, &[("c1", "customer")]).await;
    assert_eq!(frame(&mut socket).await["position"], 8);
}

#[tokio::test]
async fn a_consumer_connection_resumes_after_the_acked_position() {
    let server = TestServer::start().await;
    append(
        &server,
        &[("e", "a.x"), ("e", "b"), ("e", "a.y"), ("e", "a.z")],
    )
    .await;
    server
        .post_json(
            "/api/v1/consumers",
            &json!({"consumer_id": "proj-1", "event_type_filters": ["a.*"]}),
        )
        .await;
    let mut socket = connect(&server, "?consumer_id=proj-1", None).await;
    // The SDK sends a subscribe with the same filters right away.
    subscribe(
        &mut socket,
        json!({"type": "subscribe", "filters": ["a.*"]}),
    )
    .await;
    let (positions, kinds) = read_events(&mut socket, 3).await;
    assert_eq!(positions, [1, 3, 4]);
    assert!(kinds.iter().all(|k| k == "replay"), "{kinds:?}");
    assert_eq!(
        frame(&mut socket).await,
        json!({"type": "replay_complete", "replayed": 3})
    );
    append(&server, &[("e", "a.live")]).await;
    let live = frame(&mut socket).await;
    assert_eq!(live["position"], 5);
    assert!(live.get("type").is_none());
    let acked = server
        .post_json("/api/v1/consumers/proj-1/ack", &json!({"position": 3}))
        .await;
    assert_eq!(acked.status, 200, "{}", acked.body);
    socket.close(None).await.expect("close");

    append(&server, &[("e", "a.after")]).await;
    let mut again = connect(&server, "?consumer_id=proj-1", None).await;
    let (positions, _) = read_events(&mut again, 3).await;
    assert_eq!(positions, [4, 5, 6], "resumes after the ack");
    assert_eq!(frame(&mut again).await["type"], "replay_complete");

    // A consumer that does not exist yet is created by connecting (with `write`).
    let mut fresh = connect(&server, "?consumer_id=fresh", None).await;
    let (positions, _) = read_events(&mut fresh, 6).await;
    assert_eq!(positions, [1, 2, 3, 4, 5, 6]);
    assert_eq!(server.get("/api/v1/consumers/fresh").await.status, 200);
}

#[tokio::test]
async fn a_websocket_client_that_reads_nothing_for_a_while_misses_nothing() {
    // A feed of 2 commit groups: the reader falls behind it at once.
    let server = TestServer::start_with(|s| s.realtime.feed_capacity = 2).await;
    let mut socket = connect(&server, "", None).await;
    subscribe(
        &mut socket,
        json!({"type": "subscribe", "filters": [], "from_position": 0}),
    )
    .await;
    assert_eq!(frame(&mut socket).await["type"], "replay_complete");
    // Several MiB of frames, more than the socket buffers hold: the server's sends block,
    // its subscription falls behind the 2-group feed and reads from storage.
    let pad = "p".repeat(16 * 1024);
    for _ in 0..100 {
        let events: Vec<Value> = (0..4)
            .map(|i| json!({"entity_id": format!("e{i}"), "event_type": "t", "payload": {"pad": pad}}))
            .collect();
        let reply = server
            .post_json("/api/v1/events/batch", &json!({ "events": events }))
            .await;
        assert_eq!(reply.status, 200);
    }
    let (positions, kinds) = read_events(&mut socket, 400).await;
    assert_eq!(positions, (1..=400).collect::<Vec<u64>>());
    assert!(
        kinds.iter().all(|k| k == "live"),
        "after replay_complete, bare events"
    );
    silent(&mut socket, 100).await;
}

#[tokio::test]
async fn a_plain_get_on_the_websocket_route_is_a_problem() {
    let server = TestServer::start().await;
    let reply = server.get("/api/v1/events/stream").await;
    assert_eq!(reply.status, 400, "{}", reply.body);
    assert_eq!(reply.body["errors"][0]["field"], "upgrade");
    let unknown = server.get("/api/v1/events/stream?from=1").await;
    assert_eq!(unknown.status, 400);
    let missing = server.get("/api/v1/events/stream?consumer_id=a%20b").await;
    assert_eq!(missing.status, 400, "{}", missing.body);
}

/// One parsed Server-Sent Event.
#[derive(Debug, Default, Clone)]
struct Sse {
    event: String,
    id: String,
    data: Value,
}

/// Reads `count` events from an SSE response (comments are skipped).
async fn sse_events(response: &mut reqwest::Response, count: usize) -> Vec<Sse> {
    let mut events = Vec::new();
    let mut buffer = String::new();
    while events.len() < count {
        let chunk = tokio::time::timeout(Duration::from_secs(10), response.chunk())
            .await
            .expect("a chunk within 10 s")
            .expect("read")
            .expect("the stream is open");
        buffer.push_str(std::str::from_utf8(&chunk).expect("utf-8"));
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            let mut sse = Sse::default();
            let mut is_event = false;
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event:") {
                    sse.event = v.trim().to_owned();
                    is_event = true;
                } else if let Some(v) = line.strip_prefix("id:") {
                    sse.id = v.trim().to_owned();
                } else if let Some(v) = line.strip_prefix("data:") {
                    sse.data = serde_json::from_str(v.trim()).expect("JSON data");
                }
            }
            if is_event {
                events.push(sse);
            }
        }
    }
    events
}

async fn open_sse(
    server: &TestServer,
    query: &str,
    last_event_id: Option<u64>,
) -> reqwest::Response {
    let mut request = server
        .client
        .get(server.url(&format!("/api/v1/events/sse{query}")));
    if let Some(id) = last_event_id {
        request = request.header("Last-Event-ID", id.to_string());
    }
    let response = request.send().await.expect("sse");
    assert_eq!(response.status(), 200);
    assert!(
        response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream")),
        "{:?}",
        response.headers()
    );
    response
}

#[tokio::test]
async fn sse_replays_after_last_event_id_then_streams_live() {
    let server = TestServer::start().await;
    append(
        &server,
        &[
            ("o1", "order.placed"),
            ("o1", "order.paid"),
            ("c1", "customer"),
            ("o2", "order.placed"),
        ],
    )
    .await;
    // Last-Event-ID wins over from_position.
    let mut response = open_sse(&server, "?from_position=0&event_type=order.*", Some(1)).await;
    let events = sse_events(&mut response, 2).await;
    assert_eq!(
        events.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(),
        ["2", "4"]
    );
    assert!(events.iter().all(|e| e.event == "event"));
    assert_eq!(events[0].data["position"], 2);
    assert_eq!(events[0].data["event_type"], "order.paid");
    append(&server, &[("c1", "customer"), ("o3", "order.placed")]).await;
    let live = sse_events(&mut response, 1).await;
    assert_eq!(live[0].id, "6");

    // Prefix and entity filters; no start: live only.
    let mut live_only = open_sse(&server, "?event_type_prefix=cust&entity_id=c1", None).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    append(
        &server,
        &[
            ("c2", "customer"),
            ("c1", "order.x"),
            ("c1", "customer.updated"),
        ],
    )
    .await;
    let got = sse_events(&mut live_only, 1).await;
    assert_eq!(got[0].id, "9");

    for (query, field) in [
        ("?from_position=x", "from_position"),
        ("?event_type=a*", "event_type"),
        ("?entity_id=", "entity_id"),
    ] {
        let reply = server.get(&format!("/api/v1/events/sse{query}")).await;
        assert_eq!(reply.status, 400, "{query}: {}", reply.body);
        assert_eq!(reply.body["errors"][0]["field"], field, "{}", reply.body);
    }
    let bad_id = server
        .client
        .get(server.url("/api/v1/events/sse"))
        .header("Last-Event-ID", "nope")
        .send()
        .await
        .expect("send");
    assert_eq!(bad_id.status(), 400);
}

#[tokio::test]
async fn shutdown_ends_open_streams() {
    let server = TestServer::start().await;
    let mut socket = connect(&server, "", None).await;
    subscribe(&mut socket, json!({"type": "subscribe", "filters": []})).await;
    let sse = open_sse(&server, "", None).await;
    let stopped = tokio::time::timeout(Duration::from_secs(10), server.stop()).await;
    assert!(stopped.is_ok(), "the server stopped with streams open");
    drop(sse);
    let closing = tokio::time::timeout(Duration::from_secs(5), socket.next()).await;
    match closing.expect("the socket closes") {
        Some(Ok(Message::Close(Some(frame)))) => assert_eq!(u16::from(frame.code), 1001),
        other => panic!("expected a close frame, got {other:?}"),
    }
}

#[tokio::test]
async fn no_door_delivers_another_tenants_events() {
    let server = TestServer::start_with_auth(|_| {}).await;
    let tokens = allsource_tests::server::tenant_tokens(&server).await;
    let (a, b) = (&tokens["acme"], &tokens["globex"]);
    let append_as = |token: String, entity: &'static str| {
        let server_client = server.client.clone();
        let url = server.url("/api/v1/events");
        async move {
            let r = server_client
                .post(url)
                .bearer_auth(token)
                .json(&json!({"entity_id": entity, "event_type": "secret.thing", "payload": {}}))
                .send()
                .await
                .expect("append");
            assert_eq!(r.status(), 200);
        }
    };
    append_as(a.clone(), "a-1").await;
    // B follows everything, from the beginning, by every door.
    let mut socket = connect(&server, "", Some(b)).await;
    subscribe(
        &mut socket,
        json!({"type": "subscribe", "filters": ["*"], "from_position": 0}),
    )
    .await;
    assert_eq!(frame(&mut socket).await["type"], "replay_complete");
    // The query-string token works for browsers.
    let url = ws_url(&server, &format!("?consumer_id=b-all&access_token={b}"));
    let (mut consumer, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("token in the query");
    assert_eq!(
        frame(&mut consumer).await,
        json!({"type": "replay_complete", "replayed": 0})
    );
    let mut sse = server
        .client
        .get(server.url("/api/v1/events/sse?from_position=0"))
        .bearer_auth(b)
        .send()
        .await
        .expect("sse");
    assert_eq!(sse.status(), 200);

    append_as(a.clone(), "a-2").await;
    append_as(b.clone(), "b-1").await;
    let f = frame(&mut socket).await;
    assert_eq!(
        (f["entity_id"].as_str(), f["tenant_id"].as_str()),
        (Some("b-1"), Some("globex"))
    );
    let f = frame(&mut consumer).await;
    assert_eq!(f["entity_id"], "b-1");
    let got = sse_events(&mut sse, 1).await;
    assert_eq!(got[0].data["entity_id"], "b-1");
    silent(&mut socket, 100).await;

    // A's consumer is not B's.
    let r = server
        .call(
            reqwest::Method::POST,
            "/api/v1/consumers",
            Some(a),
            Some(&json!({"consumer_id": "shared-name"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        server
            .call(
                reqwest::Method::GET,
                "/api/v1/consumers/shared-name",
                Some(b),
                None
            )
            .await
            .status,
        404
    );
    let b_list = server
        .call(reqwest::Method::GET, "/api/v1/consumers", Some(b), None)
        .await;
    assert_eq!(b_list.body["total"], 1, "only b-all: {}", b_list.body);
    // Without credentials: 401 before any upgrade.
    let anonymous = tokio_tungstenite::connect_async(ws_url(&server, "")).await;
    match anonymous {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 401);
        }
        other => panic!("expected 401, got {other:?}"),
    }
}

/// The real binary, killed with SIGKILL while a WebSocket consumer is mid-flight: every ack
/// answered 200 survives, and every event after the last ack is delivered again on reconnect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_keeps_its_acks_across_a_kill_and_gets_the_rest_again() {
    use allsource_tests::process::ServerProcess;
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let env = [("ALLSOURCE__STORAGE__DURABILITY", "fsync")];
    let client = reqwest::Client::new();
    let mut server = ServerProcess::start(&data, &env).await;
    let base = server.base.clone();
    let batch: Vec<Value> = (0..40)
        .map(|i| json!({"entity_id": format!("e{}", i % 4), "event_type": "job.queued", "payload": {"i": i}}))
        .collect();
    let reply = client
        .post(format!("{base}/api/v1/events/batch"))
        .json(&json!({ "events": batch }))
        .send()
        .await
        .expect("append");
    assert_eq!(reply.status(), 200);
    let ws = format!(
        "{}/api/v1/events/stream?consumer_id=worker",
        base.replacen("http://", "ws://", 1)
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(ws.as_str())
        .await
        .expect("handshake");
    let (positions, _) = read_events(&mut socket, 25).await;
    assert_eq!(positions, (1..=25).collect::<Vec<u64>>());
    // Acknowledge up to 17, one ack at a time, as a worker would.
    for p in [5u64, 12, 17] {
        let acked = client
            .post(format!("{base}/api/v1/consumers/worker/ack"))
            .json(&json!({ "position": p }))
            .send()
            .await
            .expect("ack");
        assert_eq!(acked.status(), 200);
    }
    server.kill9();
    drop(socket);

    let server = ServerProcess::start(&data, &env).await;
    let base = server.base.clone();
    let state: Value = client
        .get(format!("{base}/api/v1/consumers/worker"))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(state["cursor_position"], 17, "{state}");
    let ws = format!(
        "{}/api/v1/events/stream?consumer_id=worker",
        base.replacen("http://", "ws://", 1)
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(ws.as_str())
        .await
        .expect("handshake");
    let (positions, kinds) = read_events(&mut socket, 23).await;
    assert_eq!(
        positions,
        (18..=40).collect::<Vec<u64>>(),
        "after the last ack, all again"
    );
    assert!(kinds.iter().all(|k| k == "replay"));
    assert_eq!(frame(&mut socket).await["type"], "replay_complete");
    let polled: Value = client
        .get(format!("{base}/api/v1/consumers/worker/events?limit=1"))
        .send()
        .await
        .expect("poll")
        .json()
        .await
        .expect("json");
    assert_eq!(polled["events"][0]["position"], 18);
}

#[tokio::test]
async fn a_client_that_takes_no_frame_within_the_send_timeout_is_closed_naming_its_position() {
    let server = TestServer::start_with(|s| s.realtime.send_timeout_ms = 300).await;
    let pad = "p".repeat(64 * 1024);
    for _ in 0..100 {
        let events: Vec<Value> = (0..4)
            .map(|i| json!({"entity_id": format!("e{i}"), "event_type": "t", "payload": {"pad": pad}}))
            .collect();
        let reply = server
            .post_json("/api/v1/events/batch", &json!({ "events": events }))
            .await;
        assert_eq!(reply.status, 200);
    }
    let mut socket = connect(&server, "", None).await;
    subscribe(
        &mut socket,
        json!({"type": "subscribe", "filters": [], "from_position": 0}),
    )
    .await;
    // 25 MiB of replay, more than the socket buffers hold, and the client reads nothing for
    // longer than the send timeout.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut positions = Vec::new();
    let reason = loop {
        let message = tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .expect("a frame")
            .expect("open")
            .expect("a frame");
        match message {
            Message::Text(text) => {
                let f: Value = serde_json::from_str(&text).expect("json");
                positions.push(f["position"].as_u64().expect("a replay frame"));
            }
            Message::Close(Some(frame)) => {
                assert_eq!(u16::from(frame.code), 1008, "{frame:?}");
                break frame.reason.to_string();
            }
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    };
    assert!(positions.len() < 400, "closed before the end");
    assert_eq!(positions, (1..=positions.len() as u64).collect::<Vec<_>>());
    let last = positions.last().copied().unwrap_or(0);
    assert!(
        reason.contains(&format!("last position sent {last}"))
            || (last == 0 && reason.contains("nothing sent")),
        "{reason} (received up to {last})"
    );
}
