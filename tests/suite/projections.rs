//! Black-box tests of projections and replay: every route and its errors against the real
//! server, restarts (in process, SIGTERM and SIGKILL of the real binary) between projection
//! updates with exact counts, rebuilds equal to the live state, replays that never double count.
//!
//! The runner is asynchronous: tests wait until a projection's checkpoint reaches the log's
//! head (polling its status with a deadline), never for a fixed time.

use std::time::{Duration, Instant};

use allsource_tests::problem::{assert_problem, fields};
use allsource_tests::process::ServerProcess;
use allsource_tests::server::{Reply, TestServer, read};
use serde_json::{Value, json};

/// A minimal client over a base URL, for both the in-process server and the child process.
struct Api {
    base: String,
    client: reqwest::Client,
}

impl Api {
    fn new(base: &str) -> Self {
        Self {
            base: base.to_owned(),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("client"),
        }
    }

    async fn get(&self, path: &str) -> Reply {
        read(
            self.client
                .get(format!("{}{path}", self.base))
                .send()
                .await
                .expect("GET"),
        )
        .await
    }

    async fn post(&self, path: &str, body: &Value) -> Reply {
        read(
            self.client
                .post(format!("{}{path}", self.base))
                .header("content-type", "application/json")
                .body(body.to_string())
                .send()
                .await
                .expect("POST"),
        )
        .await
    }

    async fn post_empty(&self, path: &str) -> Reply {
        read(
            self.client
                .post(format!("{}{path}", self.base))
                .send()
                .await
                .expect("POST"),
        )
        .await
    }

    async fn delete(&self, path: &str) -> Reply {
        read(
            self.client
                .delete(format!("{}{path}", self.base))
                .send()
                .await
                .expect("DELETE"),
        )
        .await
    }

    async fn append_orders(&self, from: usize, to: usize) {
        let events: Vec<Value> = (from..to)
            .flat_map(|i| {
                let customer = ["alice", "bob", "carol"][i % 3];
                [
                    json!({"entity_id": format!("order-{i}"), "event_type": "order.placed",
                           "payload": {"customer": customer, "amount": i, "status": "placed"}}),
                    json!({"entity_id": format!("order-{i}"), "event_type": "order.shipped",
                           "payload": {"status": "shipped"}}),
                ]
            })
            .collect();
        let reply = self
            .post("/api/v1/events/batch", &json!({ "events": events }))
            .await;
        assert_eq!(reply.status, 200, "{}", reply.body);
    }

    /// Waits until the projection's checkpoint is the log's head.
    async fn caught_up(&self, name: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let reply = self.get(&format!("/api/v1/projections/{name}")).await;
            assert_eq!(reply.status, 200, "{}", reply.body);
            let status = &reply.body["status"];
            if status["lag_events"] == 0 && status["checkpoint"] == status["head_position"] {
                return reply.body;
            }
            assert!(
                Instant::now() < deadline,
                "projection '{name}' did not catch up: {}",
                reply.body
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn state(&self, name: &str) -> Value {
        let reply = self
            .get(&format!("/api/v1/projections/{name}/state?limit=10000"))
            .await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        reply.body["state"].clone()
    }

    /// Waits for a replay job to finish and returns it.
    async fn finished(&self, id: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let reply = self.get(&format!("/api/v1/replay/{id}")).await;
            assert_eq!(reply.status, 200, "{}", reply.body);
            if reply.body["status"] != "running" {
                return reply.body;
            }
            assert!(Instant::now() < deadline, "replay {id} did not finish");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn revenue() -> Value {
    json!({
        "name": "revenue",
        "filter": {"event_types": ["order.placed"], "entity_id_prefix": "order-"},
        "key": "$.customer",
        "fields": {
            "orders": {"reducer": "count"},
            "total": {"reducer": "sum", "path": "$.amount"},
            "biggest": {"reducer": "max", "path": "$.amount"},
            "orders_seen": {"reducer": "distinct_count", "path": "@entity_id"}
        }
    })
}

/// What `revenue` must hold after orders `0..n` (amount = i, customer = i % 3).
fn expected_revenue(n: usize) -> Value {
    let mut state = serde_json::Map::new();
    for (c, customer) in ["alice", "bob", "carol"].iter().enumerate() {
        let mine: Vec<usize> = (0..n).filter(|i| i % 3 == c).collect();
        if mine.is_empty() {
            continue;
        }
        let mut seen: Vec<String> = mine.iter().map(|i| format!("\"order-{i}\"")).collect();
        seen.sort();
        state.insert(
            (*customer).to_owned(),
            json!({
                "orders": mine.len(),
                "total": mine.iter().sum::<usize>(),
                "biggest": mine.iter().max(),
                "orders_seen": {"count": mine.len(), "values": seen, "capped": false},
            }),
        );
    }
    Value::Object(state)
}

async fn fast_server() -> TestServer {
    TestServer::start_with(|s| s.projections.poll_interval_ms = 50).await
}

#[tokio::test]
async fn define_append_read_state_whole_and_by_key() {
    let server = fast_server().await;
    let api = Api::new(&server.base);
    let created = api.post("/api/v1/projections", &revenue()).await;
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(
        created.header("location"),
        Some("/api/v1/projections/revenue")
    );
    assert_eq!(created.body["name"], "revenue");
    assert_eq!(created.body["builtin"], false);
    assert_eq!(created.body["definition"]["key"], "$.customer");
    assert_eq!(
        created.body["definition"]["fields"]["total"],
        json!({"reducer": "sum", "path": "$.amount"})
    );
    api.append_orders(0, 10).await;
    // Events outside the filter (other prefix, other type) are ignored.
    let other = api
        .post(
            "/api/v1/events",
            &json!({"entity_id": "cart-1", "event_type": "order.placed",
                    "payload": {"customer": "alice", "amount": 1000}}),
        )
        .await;
    assert_eq!(other.status, 200);
    let status = api.caught_up("revenue").await;
    assert_eq!(status["status"]["keys"], 3);
    assert_eq!(status["status"]["head_position"], 21);
    assert_eq!(status["status"]["caught_up"], true);
    assert_eq!(status["status"]["last_error"], Value::Null);
    assert_eq!(api.state("revenue").await, expected_revenue(10));

    let key = api.get("/api/v1/projections/revenue/state/bob").await;
    assert_eq!(key.status, 200, "{}", key.body);
    assert_eq!(key.body["key"], "bob");
    assert_eq!(key.body["state"], expected_revenue(10)["bob"]);
    assert_eq!(key.body["position"], 15, "order-7 placed is the 15th event");

    let page = api.get("/api/v1/projections/revenue/state?limit=2").await;
    assert_eq!(page.body["count"], 2);
    assert_eq!(page.body["has_more"], true);
    assert_eq!(page.body["next_after"], "bob");
    assert_eq!(page.body["checkpoint"], 21);
    let rest = api.get("/api/v1/projections/revenue/state?after=bob").await;
    assert_eq!(
        rest.body["state"],
        json!({"carol": expected_revenue(10)["carol"]})
    );
    assert_eq!(rest.body["has_more"], false);
    assert_eq!(rest.body["next_after"], Value::Null);

    let list = api.get("/api/v1/projections").await;
    assert_eq!(list.status, 200);
    assert_eq!(list.body["total"], 1);
    assert_eq!(list.body["projections"][0]["name"], "revenue");
}

#[tokio::test]
async fn builtins_count_types_and_snapshot_entities() {
    let server = fast_server().await;
    let api = Api::new(&server.base);
    for name in ["event_counter", "entity_snapshots"] {
        let r = api
            .post("/api/v1/projections", &json!({ "name": name }))
            .await;
        assert_eq!(r.status, 201, "{}", r.body);
        assert_eq!(r.body["builtin"], true);
    }
    api.append_orders(0, 4).await;
    api.post(
        "/api/v1/events",
        &json!({"entity_id": "order-1", "event_type": "order.noted",
                "payload": {"note": "fragile", "status": null}}),
    )
    .await;
    api.caught_up("event_counter").await;
    api.caught_up("entity_snapshots").await;
    assert_eq!(
        api.state("event_counter").await,
        json!({"order.noted": {"count": 1}, "order.placed": {"count": 4},
               "order.shipped": {"count": 4}})
    );
    let snapshot = api
        .get("/api/v1/projections/entity_snapshots/state/order-1")
        .await;
    let entity = api.get("/api/v1/entities/order-1/state").await;
    assert_eq!(
        snapshot.body["state"]["state"],
        entity.body["current_state"]
    );
    assert_eq!(snapshot.body["state"]["version"], entity.body["version"]);
    assert_eq!(
        snapshot.body["state"]["event_count"],
        entity.body["event_count"]
    );
    assert_eq!(
        snapshot.body["state"]["last_updated"],
        entity.body["last_updated"]
    );
    // A built-in's name cannot be reused with a definition of one's own.
    let r = api
        .post(
            "/api/v1/projections",
            &json!({"name": "event_counter", "fields": {"n": {"reducer": "count"}}}),
        )
        .await;
    assert_problem(&r, 400, "validation_failed");
    assert_eq!(fields(&r), ["name"]);
}

#[tokio::test]
async fn projection_errors() {
    let server = fast_server().await;
    let api = Api::new(&server.base);
    assert_eq!(
        api.post("/api/v1/projections", &revenue()).await.status,
        201
    );
    let dup = api.post("/api/v1/projections", &revenue()).await;
    assert_problem(&dup, 409, "conflict");

    let bad = api
        .post(
            "/api/v1/projections",
            &json!({"name": "Bad!", "key": "customer", "filter": {"event_types": ["a..b"]},
                    "fields": {"a": {"reducer": "median"}, "b": {"reducer": "sum"},
                               "c": {"reducer": "max", "path": "amount"}}}),
        )
        .await;
    assert_problem(&bad, 400, "validation_failed");
    assert_eq!(
        fields(&bad),
        [
            "name",
            "filter.event_types[0]",
            "key",
            "fields.a.reducer",
            "fields.b.path",
            "fields.c.path"
        ]
    );
    let missing = api.post("/api/v1/projections", &json!({})).await;
    assert_eq!(fields(&missing), ["name", "fields"]);
    let unknown = api
        .post("/api/v1/projections", &json!({"name": "x", "fieldz": {}}))
        .await;
    assert_problem(&unknown, 400, "validation_failed");
    let typed = api
        .post("/api/v1/projections", &json!({"name": 7, "fields": {}}))
        .await;
    assert_problem(&typed, 400, "validation_failed");
    assert_eq!(fields(&typed), ["name"]);
    let not_json = server
        .post_raw("/api/v1/projections", "text/plain", "{}".into())
        .await;
    assert_problem(&not_json, 415, "unsupported_media_type");
    let array = api.post("/api/v1/projections", &json!([1])).await;
    assert_problem(&array, 400, "validation_failed");

    assert_problem(&api.get("/api/v1/projections/nope").await, 404, "not_found");
    assert_problem(
        &api.get("/api/v1/projections/Bad%20Name").await,
        400,
        "validation_failed",
    );
    assert_problem(
        &api.get("/api/v1/projections/nope/state").await,
        404,
        "not_found",
    );
    assert_problem(
        &api.get("/api/v1/projections/nope/state/k").await,
        404,
        "not_found",
    );
    assert_problem(
        &api.post_empty("/api/v1/projections/nope/rebuild").await,
        404,
        "not_found",
    );
    assert_problem(
        &api.delete("/api/v1/projections/nope").await,
        404,
        "not_found",
    );
    assert_problem(
        &api.get("/api/v1/projections/revenue/state/nobody").await,
        404,
        "not_found",
    );
    for query in ["limit=0", "limit=10001", "limit=x", "after=", "bogus=1"] {
        let r = api
            .get(&format!("/api/v1/projections/revenue/state?{query}"))
            .await;
        assert_problem(&r, 400, "validation_failed");
    }
    assert_problem(
        &api.get("/api/v1/projections?x=1").await,
        400,
        "validation_failed",
    );
    let put = read(
        server
            .client
            .put(server.url("/api/v1/projections/revenue"))
            .send()
            .await
            .expect("PUT"),
    )
    .await;
    assert_eq!(put.status, 405);

    let deleted = api.delete("/api/v1/projections/revenue").await;
    assert_eq!(deleted.status, 200, "{}", deleted.body);
    assert_eq!(deleted.body, json!({"name": "revenue", "deleted": true}));
    assert_problem(
        &api.get("/api/v1/projections/revenue").await,
        404,
        "not_found",
    );
    assert_problem(
        &api.delete("/api/v1/projections/revenue").await,
        404,
        "not_found",
    );
    // The name is free again, and the new projection starts from scratch.
    api.append_orders(0, 3).await;
    assert_eq!(
        api.post("/api/v1/projections", &revenue()).await.status,
        201
    );
    api.caught_up("revenue").await;
    assert_eq!(api.state("revenue").await, expected_revenue(3));
}

#[tokio::test]
async fn rebuild_equals_live_and_replaying_twice_equals_once() {
    let server = fast_server().await;
    let api = Api::new(&server.base);
    api.post("/api/v1/projections", &revenue()).await;
    api.post("/api/v1/projections", &json!({"name": "entity_snapshots"}))
        .await;
    api.append_orders(0, 30).await;
    api.caught_up("revenue").await;
    api.caught_up("entity_snapshots").await;
    let live = api.state("revenue").await;
    assert_eq!(live, expected_revenue(30));
    let live_snapshots = api.state("entity_snapshots").await;

    let rebuild = api.post_empty("/api/v1/projections/revenue/rebuild").await;
    assert_eq!(rebuild.status, 202, "{}", rebuild.body);
    let id = rebuild.body["id"].as_str().expect("job id").to_owned();
    assert_eq!(
        rebuild.header("location").map(str::to_owned),
        Some(format!("/api/v1/replay/{id}"))
    );
    let job = api.finished(&id).await;
    assert_eq!(job["status"], "completed", "{job}");
    assert_eq!(job["processed"], 60);
    assert_eq!(job["total"], 60);
    assert_eq!(job["percent"], 100.0);
    assert!(job["events_per_second"].as_f64().is_some());
    assert!(job["finished_at"].is_string());
    assert_eq!(api.state("revenue").await, live);

    for _ in 0..2 {
        let r = api
            .post("/api/v1/replay", &json!({"projection": "revenue"}))
            .await;
        assert_eq!(r.status, 202, "{}", r.body);
        let job = api.finished(r.body["id"].as_str().unwrap()).await;
        assert_eq!(job["status"], "completed");
        assert_eq!(
            api.state("revenue").await,
            live,
            "replaying twice never double counts"
        );
    }
    let r = api
        .post("/api/v1/replay", &json!({"projection": "entity_snapshots"}))
        .await;
    api.finished(r.body["id"].as_str().unwrap()).await;
    assert_eq!(api.state("entity_snapshots").await, live_snapshots);

    // After the swap, live updates continue exactly.
    api.append_orders(30, 33).await;
    api.caught_up("revenue").await;
    assert_eq!(api.state("revenue").await, expected_revenue(33));

    let jobs = api.get("/api/v1/replay").await;
    assert_eq!(jobs.status, 200);
    assert_eq!(jobs.body["total"], 4);
    assert_problem(
        &api.post_empty(&format!("/api/v1/replay/{id}/cancel")).await,
        409,
        "conflict",
    );
    let deleted = api.delete(&format!("/api/v1/replay/{id}")).await;
    assert_eq!(deleted.status, 200, "{}", deleted.body);
    assert_problem(
        &api.get(&format!("/api/v1/replay/{id}")).await,
        404,
        "not_found",
    );
    assert_problem(
        &api.delete(&format!("/api/v1/replay/{id}")).await,
        404,
        "not_found",
    );
    assert_eq!(api.get("/api/v1/replay").await.body["total"], 3);
}

#[tokio::test]
async fn replay_ranges_and_errors() {
    let server = fast_server().await;
    let api = Api::new(&server.base);
    api.post("/api/v1/projections", &json!({"name": "event_counter"}))
        .await;
    api.append_orders(0, 5).await;
    api.caught_up("event_counter").await;
    // From position 6 on: orders 3 and 4 (positions 7..10).
    let r = api
        .post(
            "/api/v1/replay",
            &json!({"projection": "event_counter", "from_position": 6}),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(r.body["from_position"], 6);
    let job = api.finished(r.body["id"].as_str().unwrap()).await;
    assert_eq!(job["status"], "completed");
    assert_eq!(job["total"], 4);
    assert_eq!(
        api.state("event_counter").await,
        json!({"order.placed": {"count": 2}, "order.shipped": {"count": 2}})
    );
    // A time range starting after every event leaves an empty state, and the live runner does
    // not bring the older events back.
    let r = api
        .post(
            "/api/v1/replay",
            &json!({"projection": "event_counter", "since": "2999-01-01T00:00:00Z"}),
        )
        .await;
    let job = api.finished(r.body["id"].as_str().unwrap()).await;
    assert_eq!(job["status"], "completed", "{job}");
    assert_eq!(job["total"], 0);
    let view = api.caught_up("event_counter").await;
    assert_eq!(view["status"]["keys"], 0);
    assert_eq!(api.state("event_counter").await, json!({}));

    let bad = api
        .post("/api/v1/replay", &json!({"since": "yesterday"}))
        .await;
    assert_problem(&bad, 400, "validation_failed");
    assert_eq!(fields(&bad), ["projection", "since"]);
    let bad = api
        .post(
            "/api/v1/replay",
            &json!({"projection": "event_counter", "from_position": -1}),
        )
        .await;
    assert_problem(&bad, 400, "validation_failed");
    assert_eq!(fields(&bad), ["from_position"]);
    // A start past the log's end is refused: it would make the live runner skip what comes.
    let bad = api
        .post(
            "/api/v1/replay",
            &json!({"projection": "event_counter", "from_position": 1_000_000}),
        )
        .await;
    assert_problem(&bad, 400, "validation_failed");
    assert_eq!(fields(&bad), ["from_position"]);
    let bad = api
        .post(
            "/api/v1/replay",
            &json!({"projection": "event_counter", "speed": 2}),
        )
        .await;
    assert_problem(&bad, 400, "validation_failed");
    let missing = api
        .post("/api/v1/replay", &json!({"projection": "nope"}))
        .await;
    assert_problem(&missing, 404, "not_found");
    for path in [
        "/api/v1/replay/nope",
        "/api/v1/replay/0193a5b4-7c1e-7d2a-9f00-1c2d3e4f5a6b",
    ] {
        assert_problem(&api.get(path).await, 404, "not_found");
        assert_problem(&api.delete(path).await, 404, "not_found");
        assert_problem(
            &api.post_empty(&format!("{path}/cancel")).await,
            404,
            "not_found",
        );
    }
    assert_problem(
        &api.get("/api/v1/replay?limit=1").await,
        400,
        "validation_failed",
    );
}

#[tokio::test]
async fn a_long_replay_can_be_cancelled_and_leaves_the_live_state() {
    let server = TestServer::start_with(|s| {
        s.projections.poll_interval_ms = 50;
        s.projections.batch_size = 1;
    })
    .await;
    let api = Api::new(&server.base);
    api.post("/api/v1/projections", &revenue()).await;
    api.append_orders(0, 300).await;
    api.caught_up("revenue").await;
    let live = api.state("revenue").await;
    let r = api
        .post("/api/v1/replay", &json!({"projection": "revenue"}))
        .await;
    let id = r.body["id"].as_str().unwrap().to_owned();
    let again = api
        .post("/api/v1/replay", &json!({"projection": "revenue"}))
        .await;
    if again.status != 202 {
        assert_problem(&again, 409, "conflict");
    }
    let cancel = api.post_empty(&format!("/api/v1/replay/{id}/cancel")).await;
    let job = api.finished(&id).await;
    if cancel.status == 200 {
        assert_eq!(cancel.body["cancel_requested"], true);
        assert!(
            job["status"] == "cancelled" || job["status"] == "completed",
            "{job}"
        );
    }
    if job["status"] == "cancelled" {
        assert_problem(
            &api.post_empty(&format!("/api/v1/replay/{id}/cancel")).await,
            409,
            "conflict",
        );
    }
    // Either way the state is the live one: a cancelled job is never half swapped in.
    assert_eq!(api.state("revenue").await, live);
}

#[tokio::test]
async fn an_in_process_restart_keeps_the_state_without_double_counting() {
    let server = fast_server().await;
    let api = Api::new(&server.base);
    api.post("/api/v1/projections", &revenue()).await;
    api.append_orders(0, 10).await;
    api.caught_up("revenue").await;
    let dir = server.stop().await;

    let server = TestServer::start_in(dir, |s| s.projections.poll_interval_ms = 50).await;
    let api = Api::new(&server.base);
    let view = api.caught_up("revenue").await;
    assert_eq!(view["status"]["checkpoint"], 20);
    assert_eq!(api.state("revenue").await, expected_revenue(10));
    api.append_orders(10, 15).await;
    api.caught_up("revenue").await;
    assert_eq!(api.state("revenue").await, expected_revenue(15));
}

const PROCESS_ENV: &[(&str, &str)] = &[
    ("ALLSOURCE__DEV", "true"),
    ("ALLSOURCE__PROJECTIONS__POLL_INTERVAL_MS", "50"),
    ("ALLSOURCE__PROJECTIONS__BATCH_SIZE", "7"),
];

/// The "done when": define a projection, append, read its state, restart (gracefully,
/// then with SIGKILL while the runner is busy), read the same state, append more, rebuild, and
/// get exact counts every time.
#[tokio::test]
async fn the_real_binary_survives_sigterm_and_sigkill_without_double_counting() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = ServerProcess::start(dir.path(), PROCESS_ENV).await;
    let api = Api::new(&server.base);
    assert_eq!(
        api.post("/api/v1/projections", &revenue()).await.status,
        201
    );
    api.post("/api/v1/projections", &json!({"name": "event_counter"}))
        .await;
    api.append_orders(0, 20).await;
    api.caught_up("revenue").await;
    assert_eq!(api.state("revenue").await, expected_revenue(20));

    // Graceful restart.
    assert!(server.terminate().success());
    let mut server = ServerProcess::start(dir.path(), PROCESS_ENV).await;
    let api = Api::new(&server.base);
    assert_eq!(
        api.state("revenue").await,
        expected_revenue(20),
        "same state after restart"
    );
    api.append_orders(20, 25).await;
    api.caught_up("revenue").await;
    assert_eq!(api.state("revenue").await, expected_revenue(25));

    // SIGKILL at several moments of the runner's work (small batches: many checkpoints).
    let mut n = 25;
    for round in 0..3 {
        api_append_then_kill(&mut server, n, n + 40, round).await;
        n += 40;
        server = ServerProcess::start(dir.path(), PROCESS_ENV).await;
        let api = Api::new(&server.base);
        api.caught_up("revenue").await;
        api.caught_up("event_counter").await;
        assert_eq!(
            api.state("revenue").await,
            expected_revenue(n),
            "round {round}"
        );
        assert_eq!(
            api.state("event_counter").await,
            json!({"order.placed": {"count": n}, "order.shipped": {"count": n}}),
            "round {round}"
        );
    }

    // Rebuild equals the live state, and survives a restart.
    let api = Api::new(&server.base);
    let r = api.post_empty("/api/v1/projections/revenue/rebuild").await;
    let job = api.finished(r.body["id"].as_str().unwrap()).await;
    assert_eq!(job["status"], "completed");
    assert_eq!(api.state("revenue").await, expected_revenue(n));
    server.kill9();
    let server = ServerProcess::start(dir.path(), PROCESS_ENV).await;
    let api = Api::new(&server.base);
    api.caught_up("revenue").await;
    assert_eq!(api.state("revenue").await, expected_revenue(n));
}

/// Appends orders `from..to` and SIGKILLs the server at a moment that depends on `round`
/// (at once, a little later, after the runner caught up).
async fn api_append_then_kill(server: &mut ServerProcess, from: usize, to: usize, round: usize) {
    let api = Api::new(&server.base);
    api.append_orders(from, to).await;
    match round {
        0 => {}
        1 => {
            // Let the runner get part of the way.
            let _ = api.get("/api/v1/projections/revenue").await;
        }
        _ => {
            api.caught_up("revenue").await;
        }
    }
    server.kill9();
}

/// Two nodes on one PostgreSQL database run the same projection at the same time: their
/// runners race on every page, and the expected versions of the state store make the loser
/// retry, so the state is exact and equal on both nodes (skipped without PostgreSQL).
#[tokio::test]
async fn two_postgres_nodes_share_a_projection_without_double_counting() {
    let Some(db) = allsource_tests::pg::TestDatabase::create().await else {
        return;
    };
    let dir = tempfile::tempdir().expect("dir");
    let env = [
        ("ALLSOURCE__DEV", "true"),
        ("ALLSOURCE__STORAGE__BACKEND", "postgres"),
        ("ALLSOURCE__STORAGE__POSTGRES__URL", db.url()),
        ("ALLSOURCE__PROJECTIONS__POLL_INTERVAL_MS", "20"),
        ("ALLSOURCE__PROJECTIONS__BATCH_SIZE", "5"),
    ];
    let node_a = ServerProcess::start(&dir.path().join("a"), &env).await;
    let node_b = ServerProcess::start(&dir.path().join("b"), &env).await;
    let (a, b) = (Api::new(&node_a.base), Api::new(&node_b.base));
    assert_eq!(a.post("/api/v1/projections", &revenue()).await.status, 201);
    assert_problem(
        &b.post("/api/v1/projections", &revenue()).await,
        409,
        "conflict",
    );
    let mut n = 0;
    for round in 0..6 {
        let node = if round % 2 == 0 { &a } else { &b };
        node.append_orders(n, n + 15).await;
        n += 15;
    }
    for node in [&a, &b] {
        node.caught_up("revenue").await;
        assert_eq!(node.state("revenue").await, expected_revenue(n));
    }
    // A rebuild on one node is seen by the other.
    let r = b.post_empty("/api/v1/projections/revenue/rebuild").await;
    let job = b.finished(r.body["id"].as_str().unwrap()).await;
    assert_eq!(job["status"], "completed", "{job}");
    a.append_orders(n, n + 3).await;
    n += 3;
    for node in [&a, &b] {
        node.caught_up("revenue").await;
        assert_eq!(node.state("revenue").await, expected_revenue(n));
    }
}
