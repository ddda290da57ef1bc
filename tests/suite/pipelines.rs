//! Black-box tests of stream pipelines over HTTP: the routes and their problems; a pipeline
//! that counts orders per customer per hour into derived events, SIGKILLed in the middle of its
//! windows and restarted, gives the same results as an uninterrupted run (and as a count by
//! hand); enrich from a projection's state; tenant isolation; the table output and its paging.
//!
//! Pipelines run asynchronously: tests poll a pipeline's stats until it has processed what
//! was appended, with a deadline, never for a fixed time.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use allsource_tests::problem::{assert_problem, fields};
use allsource_tests::process::ServerProcess;
use allsource_tests::server::{Reply, TestServer, read, tenant_tokens};
use reqwest::Method;
use serde_json::{Value, json};

/// A client over a base URL, for both the in-process server and the child process.
struct Api {
    base: String,
    client: reqwest::Client,
    token: Option<String>,
}

impl Api {
    fn new(base: &str) -> Self {
        Self {
            base: base.to_owned(),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("client"),
            token: None,
        }
    }

    fn with_token(base: &str, token: &str) -> Self {
        Self {
            token: Some(token.to_owned()),
            ..Self::new(base)
        }
    }

    async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> Reply {
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        read(request.send().await.expect("request")).await
    }

    async fn get(&self, path: &str) -> Reply {
        self.call(Method::GET, path, None).await
    }

    async fn post(&self, path: &str, body: &Value) -> Reply {
        self.call(Method::POST, path, Some(body)).await
    }

    async fn append(&self, events: &[Value]) {
        let reply = self
            .post("/api/v1/events/batch", &json!({ "events": events }))
            .await;
        assert_eq!(reply.status, 200, "{}", reply.body);
    }

    /// Waits until the pipeline has processed `events` source events and has no lag.
    async fn processed(&self, id: &str, events: u64) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let reply = self.get(&format!("/api/v1/pipelines/{id}/stats")).await;
            assert_eq!(reply.status, 200, "{}", reply.body);
            if reply.body["events_processed"] == events && reply.body["lag"] == 0 {
                return reply.body;
            }
            assert!(
                Instant::now() < deadline,
                "pipeline {id} did not process {events} events: {}",
                reply.body
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Events of a type, oldest first.
    async fn events_of(&self, event_type: &str) -> Vec<Value> {
        let reply = self
            .get(&format!(
                "/api/v1/events/query?event_type={event_type}&limit=10000"
            ))
            .await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        reply.body["events"].as_array().cloned().unwrap_or_default()
    }
}

/// Orders per customer per hour of the client's own time (`placed_at`), with 30 minutes of
/// allowed lateness.
fn hourly() -> Value {
    json!({
        "name": "orders_per_customer_per_hour",
        "source_event_types": ["order.placed"],
        "operators": [
            {"type": "window", "kind": "tumbling", "size_ms": 3_600_000,
             "allowed_lateness_ms": 1_800_000, "time_field": "$.placed_at"},
            {"type": "reduce", "group_by": ["$.customer"],
             "aggregations": [{"name": "orders", "fn": "count"},
                              {"name": "revenue", "fn": "sum", "field": "$.amount"}]}
        ],
        "output": {"type": "events", "event_type": "orders.hourly", "entity_id_field": "$.customer"}
    })
}

fn at(hour: i64, minute: i64) -> String {
    let base = chrono::DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z").expect("time");
    (base + chrono::Duration::minutes(hour * 60 + minute))
        .with_timezone(&chrono::Utc)
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

fn order(n: usize, customer: &str, amount: i64, placed_at: String) -> Value {
    json!({"entity_id": format!("order-{n}"), "event_type": "order.placed",
           "payload": {"customer": customer, "amount": amount, "placed_at": placed_at}})
}

/// The orders of hours `0..hours`, in arrival order, in batches: ten per hour in time order,
/// plus, after each hour's first order, one order of the previous hour 10 minutes before its
/// end (late, but within the allowed lateness: counted), and at hour 4 one order of hour 1
/// (closed long ago: late, not counted). Then one order far ahead closes every window.
fn order_batches(hours: i64) -> Vec<Vec<Value>> {
    let customers = ["alice", "bob", "carol"];
    let mut n = 0;
    let mut batches = Vec::new();
    for hour in 0..hours {
        let mut batch = Vec::new();
        for i in 0..10 {
            n += 1;
            let customer = customers[(hour as usize + i) % 3];
            batch.push(order(
                n,
                customer,
                hour * 10 + i as i64,
                at(hour, i as i64 * 5),
            ));
            if i == 0 && hour > 0 {
                n += 1;
                batch.push(order(n, "dave", 1, at(hour - 1, 50)));
            }
            if i == 1 && hour == 4 {
                n += 1;
                batch.push(order(n, "erin", 1000, at(1, 0)));
            }
        }
        batches.push(batch);
    }
    n += 1;
    batches.push(vec![order(n, "zed", 0, at(100, 0))]);
    batches
}

/// The expected derived results by hand: (hour, customer) → (orders, revenue).
fn expected_hourly(batches: &[Vec<Value>]) -> BTreeMap<(String, String), (u64, i64)> {
    let mut expected = BTreeMap::new();
    for event in batches.iter().flatten() {
        let p = &event["payload"];
        let customer = p["customer"].as_str().expect("customer").to_owned();
        let placed = p["placed_at"].as_str().expect("time");
        // The far-ahead order's window never closes; erin's order is too late.
        if customer == "zed" || customer == "erin" {
            continue;
        }
        let hour = placed[..13].to_owned();
        let entry = expected.entry((hour, customer)).or_insert((0, 0));
        entry.0 += 1;
        entry.1 += p["amount"].as_i64().expect("amount");
    }
    expected
}

/// The derived events as (hour, customer) → (orders, revenue); every pair at most once.
fn derived_hourly(events: &[Value]) -> BTreeMap<(String, String), (u64, i64)> {
    let mut derived = BTreeMap::new();
    for event in events {
        let p = &event["payload"];
        let hour = p["window_start"].as_str().expect("window_start")[..13].to_owned();
        let customer = p["customer"].as_str().expect("customer").to_owned();
        assert_eq!(event["entity_id"], customer.as_str());
        let value = (
            p["orders"].as_u64().expect("orders"),
            p["revenue"].as_i64().expect("revenue"),
        );
        assert!(
            derived
                .insert((hour.clone(), customer.clone()), value)
                .is_none(),
            "({hour}, {customer}) derived twice"
        );
    }
    derived
}

const PROCESS_ENV: &[(&str, &str)] = &[
    ("ALLSOURCE__DEV", "true"),
    // Many small commits: a kill lands between them, not after the last one.
    ("ALLSOURCE__PIPELINES__BATCH_EVENTS", "3"),
    ("ALLSOURCE__PIPELINES__COMMIT_INTERVAL_MS", "5"),
];

/// The black-box case: counted per customer per hour into derived events, SIGKILLed
/// in the middle of open windows three times, the results equal an uninterrupted run's and
/// the count by hand, with every source event processed exactly once.
#[tokio::test]
async fn hourly_counts_after_sigkills_equal_an_uninterrupted_run() {
    let batches = order_batches(6);
    let total: u64 = batches.iter().map(|b| b.len() as u64).sum();
    let expected = expected_hourly(&batches);

    // Uninterrupted, in process.
    let reference = TestServer::start().await;
    let api = Api::new(&reference.base);
    let created = api.post("/api/v1/pipelines", &hourly()).await;
    assert_eq!(created.status, 201, "{}", created.body);
    let id = created.body["id"].as_str().expect("id").to_owned();
    for batch in &batches {
        api.append(batch).await;
    }
    let stats = api.processed(&id, total).await;
    assert_eq!(stats["late"], 1, "{stats}");
    assert_eq!(stats["failed"], 0, "{stats}");
    let uninterrupted = derived_hourly(&api.events_of("orders.hourly").await);
    assert_eq!(uninterrupted, expected);

    // The same events to the real binary, killed with SIGKILL in the middle.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = ServerProcess::start(dir.path(), PROCESS_ENV).await;
    let api = Api::new(&server.base);
    let created = api.post("/api/v1/pipelines", &hourly()).await;
    assert_eq!(created.status, 201, "{}", created.body);
    let id = created.body["id"].as_str().expect("id").to_owned();
    let mut appended = 0;
    for (i, batch) in batches.iter().enumerate() {
        // Hours 1, 3 and 5 go in one event at a time, and the kill comes mid-hour.
        if i % 2 == 1 {
            for (j, event) in batch.iter().enumerate() {
                let api = Api::new(&server.base);
                api.append(std::slice::from_ref(event)).await;
                appended += 1;
                if j == batch.len() / 2 {
                    // Let the pipeline get part of the way, then kill it.
                    let deadline = Instant::now() + Duration::from_secs(10);
                    while api.get(&format!("/api/v1/pipelines/{id}/stats")).await.body
                        ["events_processed"]
                        .as_u64()
                        .unwrap_or(0)
                        < appended - 3
                        && Instant::now() < deadline
                    {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    server.kill9();
                    server = ServerProcess::start(dir.path(), PROCESS_ENV).await;
                }
            }
        } else {
            Api::new(&server.base).append(batch).await;
            appended += batch.len() as u64;
        }
    }
    let api = Api::new(&server.base);
    let stats = api.processed(&id, total).await;
    assert_eq!(stats["late"], 1, "{stats}");
    assert_eq!(stats["failed"], 0, "{stats}");
    let after_crashes = derived_hourly(&api.events_of("orders.hourly").await);
    assert_eq!(after_crashes, uninterrupted);
    // A graceful restart changes nothing either.
    assert!(server.terminate().success());
    let server = ServerProcess::start(dir.path(), PROCESS_ENV).await;
    let api = Api::new(&server.base);
    let stats = api.processed(&id, total).await;
    assert_eq!(stats["emitted"], expected.len() as u64, "{stats}");
    assert_eq!(
        derived_hourly(&api.events_of("orders.hourly").await),
        expected
    );
}

#[tokio::test]
async fn the_routes_answer_as_documented() {
    let server = TestServer::start().await;
    let api = Api::new(&server.base);
    // Every bad field at once, named as in the body; nothing is created.
    let bad = api
        .post(
            "/api/v1/pipelines",
            &json!({"name": "", "source_event_types": ["*"],
                    "operators": [{"type": "window", "kind": "tumbling", "size_ms": 0},
                                  {"type": "filter", "field": "$.a", "op": "between"}],
                    "output": {"type": "table", "extra": 1}}),
        )
        .await;
    assert_problem(&bad, 400, "validation_failed");
    let bad_fields = fields(&bad);
    for field in [
        "name",
        "operators[0].size_ms",
        "operators[1].op",
        "output.extra",
    ] {
        assert!(
            bad_fields.iter().any(|f| f == field),
            "{field} not in {bad_fields:?}"
        );
    }
    assert_problem(
        &api.post("/api/v1/pipelines", &json!({"name": "x", "typo": 1}))
            .await,
        400,
        "validation_failed",
    );
    assert_eq!(api.get("/api/v1/pipelines").await.body["total"], 0);

    // Create, read, list.
    let body = json!({
        "name": "big_orders", "description": "orders of 100 or more",
        "source_event_types": ["order.*"],
        "operators": [{"type": "filter", "field": "$.amount", "op": "gte", "value": 100}],
        "output": {"type": "table"}
    });
    let created = api.post("/api/v1/pipelines", &body).await;
    assert_eq!(created.status, 201, "{}", created.body);
    let id = created.body["id"].as_str().expect("id").to_owned();
    assert_eq!(
        created.header("location"),
        Some(format!("/api/v1/pipelines/{id}").as_str())
    );
    for member in [
        "name",
        "description",
        "source_event_types",
        "operators",
        "output",
    ] {
        assert_eq!(created.body[member], body[member], "{member}");
    }
    assert_eq!(created.body["enabled"], true);
    assert_eq!(created.body["status"], "running");
    assert_eq!(created.body["on_error"], "skip");
    let one = api.get(&format!("/api/v1/pipelines/{id}")).await;
    assert_eq!(one.status, 200);
    assert_eq!(one.body["id"], id.as_str());
    assert_eq!(one.body["operators"], body["operators"]);
    assert_problem(&api.post("/api/v1/pipelines", &body).await, 409, "conflict");
    let list = api.get("/api/v1/pipelines").await;
    assert_eq!(list.body["total"], 1);

    // Results of the table output, paged.
    let events: Vec<Value> = (0..5)
        .map(|i| {
            json!({"entity_id": format!("order-{i}"), "event_type": "order.placed",
                   "payload": {"amount": 50 * i}})
        })
        .collect();
    api.append(&events).await;
    let stats = api.processed(&id, 5).await;
    assert_eq!(stats["filtered"], 2);
    assert_eq!(stats["emitted"], 3);
    assert_eq!(stats["failed"], 0);
    assert_eq!(stats["last_error"], Value::Null);
    assert!(stats["last_processed"].is_string());
    let first = api
        .get(&format!("/api/v1/pipelines/{id}/results?limit=2"))
        .await;
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(first.body["count"], 2);
    assert_eq!(first.body["has_more"], true);
    let after = first.body["next_after"].as_str().expect("next_after");
    let rest = api
        .get(&format!(
            "/api/v1/pipelines/{id}/results?limit=2&after={}",
            urlencode(after)
        ))
        .await;
    assert_eq!(rest.body["count"], 1, "{}", rest.body);
    assert_eq!(rest.body["has_more"], false);
    let mut amounts: Vec<i64> = first.body["results"]
        .as_array()
        .into_iter()
        .chain(rest.body["results"].as_array())
        .flatten()
        .map(|r| r["value"]["amount"].as_i64().expect("amount"))
        .collect();
    amounts.sort_unstable();
    assert_eq!(amounts, vec![100, 150, 200]);
    assert_problem(
        &api.get(&format!("/api/v1/pipelines/{id}/results?limit=0"))
            .await,
        400,
        "validation_failed",
    );
    let all = api.get("/api/v1/pipelines/stats").await;
    assert_eq!(all.body["total"], 1);
    assert_eq!(all.body["pipelines"][0]["pipeline_id"], id.as_str());

    // A reset counts everything again, in a new generation.
    let reset = api
        .call(Method::PUT, &format!("/api/v1/pipelines/{id}/reset"), None)
        .await;
    assert_eq!(reset.status, 200, "{}", reset.body);
    assert_eq!(reset.body["generation"], 2);
    let stats = api.processed(&id, 5).await;
    assert_eq!(stats["emitted"], 3);
    // An update with a new definition from now on.
    let mut changed = body.clone();
    changed["operators"][0]["value"] = json!(150);
    changed["from_position"] = json!("now");
    let updated = api
        .call(
            Method::PUT,
            &format!("/api/v1/pipelines/{id}"),
            Some(&changed),
        )
        .await;
    assert_eq!(updated.status, 200, "{}", updated.body);
    assert_eq!(updated.body["generation"], 3);
    let stats = api.processed(&id, 0).await;
    assert_eq!(stats["emitted"], 0);
    // Disabled: it stops, and says so.
    changed["enabled"] = json!(false);
    changed
        .as_object_mut()
        .expect("object")
        .remove("from_position");
    let disabled = api
        .call(
            Method::PUT,
            &format!("/api/v1/pipelines/{id}"),
            Some(&changed),
        )
        .await;
    assert_eq!(disabled.body["status"], "disabled", "{}", disabled.body);

    // Unknown and malformed ids; then delete.
    let unknown = "0193a5b4-7c1e-7d2a-9f00-1c2d3e4f5a6b";
    for path in [
        format!("/api/v1/pipelines/{unknown}"),
        format!("/api/v1/pipelines/{unknown}/stats"),
        format!("/api/v1/pipelines/{unknown}/results"),
    ] {
        assert_problem(&api.get(&path).await, 404, "not_found");
    }
    assert_problem(
        &api.get("/api/v1/pipelines/not-a-uuid").await,
        400,
        "validation_failed",
    );
    let deleted = api
        .call(Method::DELETE, &format!("/api/v1/pipelines/{id}"), None)
        .await;
    assert_eq!(deleted.status, 204);
    assert_problem(
        &api.get(&format!("/api/v1/pipelines/{id}")).await,
        404,
        "not_found",
    );
    // Every change is audited.
    let audit = api.get("/api/v1/audit?action=pipeline.").await;
    assert_eq!(audit.status, 200, "{}", audit.body);
    let actions: Vec<&str> = audit.body["records"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["resource"] == id.as_str())
        .filter_map(|r| r["action"].as_str())
        .collect();
    assert_eq!(
        actions,
        [
            "pipeline.create",
            "pipeline.reset",
            "pipeline.update",
            "pipeline.update",
            "pipeline.delete"
        ]
    );
}

/// Percent-encodes everything but unreserved characters.
fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[tokio::test]
async fn enrich_from_a_projection_gives_the_looked_up_value() {
    let server = TestServer::start_with(|s| s.projections.poll_interval_ms = 20).await;
    let api = Api::new(&server.base);
    let projection = api
        .post(
            "/api/v1/projections",
            &json!({"name": "customers",
                    "filter": {"event_types": ["customer.updated"]},
                    "key": "$.id",
                    "fields": {"tier": {"reducer": "last", "path": "$.tier"}}}),
        )
        .await;
    assert_eq!(projection.status, 201, "{}", projection.body);
    api.append(&[
        json!({"entity_id": "customer-a", "event_type": "customer.updated",
               "payload": {"id": "alice", "tier": "gold"}}),
        json!({"entity_id": "customer-b", "event_type": "customer.updated",
               "payload": {"id": "bob", "tier": "silver"}}),
    ])
    .await;
    // Wait until the projection has both keys.
    let deadline = Instant::now() + Duration::from_secs(10);
    while api
        .get("/api/v1/projections/customers/state/bob")
        .await
        .status
        != 200
    {
        assert!(Instant::now() < deadline, "the projection did not catch up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let created = api
        .post(
            "/api/v1/pipelines",
            &json!({"name": "orders_with_tier",
                    "source_event_types": ["order.placed"],
                    "operators": [
                        {"type": "enrich", "from": "projection", "name": "customers",
                         "key_field": "$.customer", "into": "$.customer_profile"},
                        {"type": "enrich", "from": "entity_state",
                         "entity_id_field": "$.customer_entity", "into": "$.customer_state"}
                    ],
                    "output": {"type": "events", "event_type": "order.enriched"}}),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let id = created.body["id"].as_str().expect("id").to_owned();
    api.append(&[
        json!({"entity_id": "order-1", "event_type": "order.placed",
               "payload": {"customer": "alice", "customer_entity": "customer-a"}}),
        json!({"entity_id": "order-2", "event_type": "order.placed",
               "payload": {"customer": "nobody", "customer_entity": "customer-z"}}),
    ])
    .await;
    api.processed(&id, 2).await;
    let enriched = api.events_of("order.enriched").await;
    assert_eq!(enriched.len(), 2);
    assert_eq!(
        enriched[0]["payload"]["customer_profile"],
        json!({"tier": "gold"})
    );
    assert_eq!(
        enriched[0]["payload"]["customer_state"],
        json!({"id": "alice", "tier": "gold"})
    );
    assert_eq!(enriched[1]["payload"]["customer_profile"], Value::Null);
    assert_eq!(enriched[1]["payload"]["customer_state"], Value::Null);
    assert_eq!(enriched[0]["entity_id"], "pipeline-orders_with_tier");
    assert_eq!(enriched[0]["metadata"]["pipeline_id"], id.as_str());
}

#[tokio::test]
async fn a_pipeline_of_one_tenant_never_sees_another_tenants_events() {
    let server = TestServer::start_with_auth(|_| {}).await;
    let tokens = tenant_tokens(&server).await;
    let acme = Api::with_token(&server.base, &tokens["acme"]);
    let globex = Api::with_token(&server.base, &tokens["globex"]);
    let counting = json!({
        "name": "count_all", "source_event_types": [],
        "operators": [{"type": "reduce", "group_by": ["@event_type"],
                       "aggregations": [{"name": "n", "fn": "count"}]}],
        "output": {"type": "table"}
    });
    let created = acme.post("/api/v1/pipelines", &counting).await;
    assert_eq!(created.status, 201, "{}", created.body);
    let id = created.body["id"].as_str().expect("id").to_owned();
    globex
        .append(&[json!({"entity_id": "g-1", "event_type": "secret.thing", "payload": {}})])
        .await;
    acme.append(&[json!({"entity_id": "a-1", "event_type": "public.thing", "payload": {}})])
        .await;
    acme.processed(&id, 1).await;
    let results = acme.get(&format!("/api/v1/pipelines/{id}/results")).await;
    assert_eq!(results.body["count"], 1, "{}", results.body);
    assert_eq!(
        results.body["results"][0]["value"],
        json!({"event_type": "public.thing", "n": 1})
    );
    // The other tenant cannot see, read, change, reset or delete it.
    for (method, path) in [
        (Method::GET, format!("/api/v1/pipelines/{id}")),
        (Method::GET, format!("/api/v1/pipelines/{id}/stats")),
        (Method::GET, format!("/api/v1/pipelines/{id}/results")),
        (Method::PUT, format!("/api/v1/pipelines/{id}/reset")),
        (Method::DELETE, format!("/api/v1/pipelines/{id}")),
    ] {
        assert_problem(&globex.call(method, &path, None).await, 404, "not_found");
    }
    let put = globex
        .call(
            Method::PUT,
            &format!("/api/v1/pipelines/{id}"),
            Some(&counting),
        )
        .await;
    assert_problem(&put, 404, "not_found");
    assert_eq!(globex.get("/api/v1/pipelines").await.body["total"], 0);
    assert_eq!(globex.get("/api/v1/pipelines/stats").await.body["total"], 0);
    // The same name is free in the other tenant, and counts only its events.
    let theirs = globex.post("/api/v1/pipelines", &counting).await;
    assert_eq!(theirs.status, 201, "{}", theirs.body);
    let theirs = theirs.body["id"].as_str().expect("id").to_owned();
    globex.processed(&theirs, 1).await;
    let results = globex
        .get(&format!("/api/v1/pipelines/{theirs}/results"))
        .await;
    assert_eq!(
        results.body["results"][0]["value"],
        json!({"event_type": "secret.thing", "n": 1})
    );
}

/// Two nodes on one PostgreSQL database: both run a worker for the pipeline, one holds its
/// lease; appends on both nodes are counted exactly once; when the holder is SIGKILLed, the
/// other takes over after the lease and goes on from the checkpoint (skipped without
/// PostgreSQL).
#[tokio::test]
async fn two_postgres_nodes_count_once_and_one_takes_over_from_a_killed_node() {
    let Some(db) = allsource_tests::pg::TestDatabase::create().await else {
        return;
    };
    let dir = tempfile::tempdir().expect("dir");
    let env = [
        ("ALLSOURCE__DEV", "true"),
        ("ALLSOURCE__STORAGE__BACKEND", "postgres"),
        ("ALLSOURCE__STORAGE__POSTGRES__URL", db.url()),
        ("ALLSOURCE__REALTIME__POSTGRES_POLL_INTERVAL_MS", "50"),
        ("ALLSOURCE__PIPELINES__LEASE_MS", "1000"),
        ("ALLSOURCE__PIPELINES__RESCAN_INTERVAL_MS", "100"),
        ("ALLSOURCE__PIPELINES__BATCH_EVENTS", "3"),
        ("ALLSOURCE__PIPELINES__COMMIT_INTERVAL_MS", "5"),
    ];
    let mut node_a = ServerProcess::start(&dir.path().join("a"), &env).await;
    let node_b = ServerProcess::start(&dir.path().join("b"), &env).await;
    let (a, b) = (Api::new(&node_a.base), Api::new(&node_b.base));
    let created = a
        .post(
            "/api/v1/pipelines",
            &json!({"name": "per_customer", "source_event_types": ["order.placed"],
                    "operators": [{"type": "reduce", "group_by": ["$.customer"],
                                   "aggregations": [{"name": "orders", "fn": "count"},
                                                    {"name": "revenue", "fn": "sum",
                                                     "field": "$.amount"}]}],
                    "output": {"type": "table"}}),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let id = created.body["id"].as_str().expect("id").to_owned();
    let customers = ["alice", "bob", "carol"];
    let orders = |from: usize, to: usize| -> Vec<Value> {
        (from..to)
            .map(|n| order(n, customers[n % 3], n as i64, at(0, 0)))
            .collect()
    };
    let expected = |to: usize| -> BTreeMap<String, (u64, i64)> {
        let mut e = BTreeMap::new();
        for n in 0..to {
            let entry = e.entry(customers[n % 3].to_owned()).or_insert((0, 0));
            entry.0 += 1;
            entry.1 += n as i64;
        }
        e
    };
    for round in 0..4 {
        let node = if round % 2 == 0 { &a } else { &b };
        node.append(&orders(round * 10, round * 10 + 10)).await;
    }
    b.processed(&id, 40).await;
    assert_eq!(customer_table(&b, &id).await, expected(40));
    assert_eq!(customer_table(&a, &id).await, expected(40));
    // The holder may be either node: kill A, and B (holder or not) finishes the work.
    node_a.kill9();
    b.append(&orders(40, 55)).await;
    let stats = b.processed(&id, 55).await;
    assert_eq!(stats["failed"], 0, "{stats}");
    assert_eq!(customer_table(&b, &id).await, expected(55));
}

/// A running reduce's table as customer → (orders, revenue).
async fn customer_table(api: &Api, id: &str) -> BTreeMap<String, (u64, i64)> {
    let reply = api
        .get(&format!("/api/v1/pipelines/{id}/results?limit=1000"))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    reply.body["results"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            let v = &r["value"];
            (
                v["customer"].as_str().expect("customer").to_owned(),
                (
                    v["orders"].as_u64().expect("orders"),
                    v["revenue"].as_i64().expect("revenue"),
                ),
            )
        })
        .collect()
}
