//! Consumer groups, black-box: two members competing (no message held by both, every message
//! delivered), redelivery after the ack timeout, nack, parking after `max_deliveries` and the
//! replay of parked messages, validation, tenant isolation with authentication on, SIGKILL of
//! the real binary while members are mid-flight (acked stays acked, unacked is delivered
//! again), and two PostgreSQL nodes sharing one group.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use allsource_tests::pg::TestDatabase;
use allsource_tests::problem::{assert_problem, fields};
use allsource_tests::process::ServerProcess;
use allsource_tests::server::{ADMIN_PASSWORD, ADMIN_USERNAME, Reply, TestServer, read};
use parking_lot::Mutex;
use serde_json::{Value, json};

/// A client of one server, optionally with a bearer token.
#[derive(Clone)]
struct Api {
    client: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Api {
    fn new(base: &str) -> Self {
        Self {
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .expect("client"),
            base: base.to_owned(),
            token: None,
        }
    }

    fn with_token(&self, token: &str) -> Self {
        Self {
            token: Some(token.to_owned()),
            ..self.clone()
        }
    }

    /// The reply, or `None` when the server could not be reached (killed).
    async fn try_send(&self, method: &str, path: &str, body: Option<&Value>) -> Option<Reply> {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        match request.send().await {
            Ok(response) => Some(read(response).await),
            Err(_) => None,
        }
    }

    async fn send(&self, method: &str, path: &str, body: Option<Value>) -> Reply {
        self.try_send(method, path, body.as_ref())
            .await
            .unwrap_or_else(|| panic!("{method} {path}: no answer"))
    }

    async fn ok(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let reply = self.send(method, path, body).await;
        assert!(
            (200..300).contains(&reply.status),
            "{method} {path}: {} {}",
            reply.status,
            reply.body
        );
        reply.body
    }

    /// Appends `n` events of `event_type` in one batch; their positions.
    async fn append(&self, n: usize, event_type: &str) -> Vec<u64> {
        let events: Vec<Value> = (0..n)
            .map(|i| {
                json!({"entity_id": format!("e-{}", i % 7), "event_type": event_type,
                       "payload": {"i": i}})
            })
            .collect();
        let reply = self
            .ok(
                "POST",
                "/api/v1/events/batch",
                Some(json!({"events": events})),
            )
            .await;
        reply["events"]
            .as_array()
            .expect("receipts")
            .iter()
            .map(|r| r["position"].as_u64().expect("position"))
            .collect()
    }

    async fn create_group(&self, body: Value) -> Value {
        let reply = self
            .send("POST", "/api/v1/consumer-groups", Some(body))
            .await;
        assert_eq!(reply.status, 201, "{}", reply.body);
        reply.body
    }

    async fn poll(&self, group: &str, member: &str, max: u64, wait_ms: u64) -> Vec<Value> {
        let body = self
            .ok(
                "POST",
                &format!("/api/v1/consumer-groups/{group}/poll"),
                Some(json!({"member": member, "max": max, "wait_ms": wait_ms})),
            )
            .await;
        body["messages"].as_array().expect("messages").clone()
    }

    async fn settle(&self, group: &str, verb: &str, ids: &[String]) -> Value {
        self.ok(
            "POST",
            &format!("/api/v1/consumer-groups/{group}/{verb}"),
            Some(json!({"delivery_ids": ids})),
        )
        .await
    }

    async fn stats(&self, group: &str) -> Value {
        self.ok(
            "GET",
            &format!("/api/v1/consumer-groups/{group}/stats"),
            None,
        )
        .await
    }
}

fn position(message: &Value) -> u64 {
    message["event"]["position"].as_u64().expect("position")
}

fn positions(messages: &[Value]) -> Vec<u64> {
    messages.iter().map(position).collect()
}

fn delivery_ids(messages: &[Value]) -> Vec<String> {
    messages
        .iter()
        .map(|m| m["delivery_id"].as_str().expect("delivery id").to_owned())
        .collect()
}

fn attempts(messages: &[Value]) -> Vec<u64> {
    messages
        .iter()
        .map(|m| m["attempt"].as_u64().expect("attempt"))
        .collect()
}

async fn server() -> (TestServer, Api) {
    let server = TestServer::start().await;
    let api = Api::new(&server.base);
    (server, api)
}

#[tokio::test]
async fn two_members_compete_and_every_message_is_delivered_once() {
    let (_server, api) = server().await;
    let all: BTreeSet<u64> = api.append(120, "job.created").await.into_iter().collect();
    api.append(10, "noise.other").await;
    let created = api
        .create_group(json!({"group": "workers", "event_type_filters": ["job.*"],
                             "max_in_flight": 16}))
        .await;
    assert_eq!(created["event_type_filters"], json!(["job.*"]));
    assert_eq!(created["ack_timeout_ms"], 30_000);

    // Deliveries by member, and the messages each member holds right now.
    let seen = Arc::new(Mutex::new(Vec::<(String, u64)>::new()));
    let held: Arc<Mutex<BTreeMap<u64, String>>> = Arc::default();
    let mut members = Vec::new();
    for member in ["alpha", "beta"] {
        let (api, seen, held) = (api.clone(), seen.clone(), held.clone());
        members.push(tokio::spawn(async move {
            let mut empty = 0;
            while empty < 3 {
                let got = api.poll("workers", member, 5, 100).await;
                if got.is_empty() {
                    empty += 1;
                    continue;
                }
                empty = 0;
                for m in &got {
                    let previous = held.lock().insert(position(m), member.to_owned());
                    assert!(
                        previous.is_none(),
                        "{member} got {} while {previous:?} holds it",
                        position(m)
                    );
                    seen.lock().push((member.to_owned(), position(m)));
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
                for m in &got {
                    held.lock().remove(&position(m));
                }
                let acked = api.settle("workers", "ack", &delivery_ids(&got)).await;
                assert_eq!(acked["acked"], got.len(), "{acked}");
                assert_eq!(acked["ignored"], 0);
            }
        }));
    }
    for member in members {
        member.await.expect("member");
    }
    let seen = seen.lock().clone();
    let delivered: BTreeSet<u64> = seen.iter().map(|(_, p)| *p).collect();
    assert_eq!(delivered, all, "every job delivered, no noise");
    assert_eq!(seen.len(), all.len(), "no message delivered twice");
    for member in ["alpha", "beta"] {
        assert!(
            seen.iter().any(|(m, _)| m == member),
            "{member} got nothing"
        );
    }
    let stats = api.stats("workers").await;
    assert_eq!(stats["acked"], 120);
    assert_eq!(stats["delivered"], 120);
    assert_eq!(stats["in_flight"], 0);
    assert_eq!(stats["lag"], 0);
    assert_eq!(
        stats["committed_position"],
        *all.iter().max().expect("some")
    );
    let names: Vec<&str> = stats["members"]
        .as_array()
        .expect("members")
        .iter()
        .map(|m| m["member"].as_str().expect("name"))
        .collect();
    assert_eq!(names, ["alpha", "beta"]);
}

#[tokio::test]
async fn a_message_carries_the_event_exactly_as_the_other_routes_show_it() {
    let (_server, api) = server().await;
    let receipt = api
        .ok(
            "POST",
            "/api/v1/events",
            Some(json!({"entity_id": "order-1", "event_type": "order.placed",
                        "payload": {"amount": 12.5, "tags": ["a"]}, "metadata": {"c": 1}})),
        )
        .await;
    api.create_group(json!({"group": "g"})).await;
    let got = api.poll("g", "m", 10, 0).await;
    assert_eq!(got.len(), 1);
    let id = receipt["event_id"].as_str().expect("id");
    let event = api.ok("GET", &format!("/api/v1/events/{id}"), None).await;
    assert_eq!(got[0]["event"], event);
    assert_eq!(got[0]["attempt"], 1);
    let keys: BTreeSet<&str> = got[0]
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, BTreeSet::from(["attempt", "delivery_id", "event"]));
}

#[tokio::test]
async fn redelivery_nack_parking_and_replay() {
    let (_server, api) = server().await;
    let p = api.append(3, "t").await;
    api.create_group(json!({"group": "g", "ack_timeout_ms": 300, "max_deliveries": 2}))
        .await;
    let first = api.poll("g", "a", 10, 0).await;
    assert_eq!(positions(&first), p);
    assert_eq!(attempts(&first), [1, 1, 1]);
    assert!(
        api.poll("g", "b", 10, 0).await.is_empty(),
        "held by a until the ack timeout"
    );
    // After the ack timeout, the long poll of b gets them all, second attempts, new ids.
    let second = api.poll("g", "b", 10, 5000).await;
    assert_eq!(positions(&second), p);
    assert_eq!(attempts(&second), [2, 2, 2]);
    let late = api.settle("g", "ack", &delivery_ids(&first)).await;
    assert_eq!(late["acked"], 0);
    assert_eq!(late["ignored"], 3);
    assert_eq!(late["ignored_ids"], json!(delivery_ids(&first)));
    // b acks the second; nacks the first, which has had its two attempts: parked at once.
    let ids = delivery_ids(&second);
    assert_eq!(api.settle("g", "ack", &ids[1..2]).await["acked"], 1);
    assert_eq!(api.settle("g", "nack", &ids[0..1]).await["nacked"], 1);
    // The third runs out of time: parked too once its timeout passes.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(api.poll("g", "c", 10, 0).await.is_empty());
    let parked = api
        .ok("GET", "/api/v1/consumer-groups/g/parked", None)
        .await;
    assert_eq!(parked["total"], 2, "{parked}");
    let listed: Vec<(u64, u64)> = parked["parked"]
        .as_array()
        .expect("parked")
        .iter()
        .map(|m| {
            (
                m["position"].as_u64().unwrap(),
                m["attempts"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(listed, [(p[0], 2), (p[2], 2)]);
    assert_eq!(parked["parked"][0]["event"]["position"], p[0]);
    assert_eq!(parked["parked"][0]["last_member"], "b");
    let page = api
        .ok("GET", "/api/v1/consumer-groups/g/parked?limit=1", None)
        .await;
    assert_eq!(
        (page["count"].as_u64(), page["has_more"].as_bool()),
        (Some(1), Some(true))
    );
    let next = page["next_after"].as_u64().expect("cursor");
    let rest = api
        .ok(
            "GET",
            &format!("/api/v1/consumer-groups/g/parked?limit=1&after={next}"),
            None,
        )
        .await;
    assert_eq!(rest["parked"][0]["position"], p[2]);
    let stats = api.stats("g").await;
    assert_eq!(
        (stats["parked"].as_u64(), stats["expired"].as_u64()),
        (Some(2), Some(4))
    );

    let replayed = api
        .ok("POST", "/api/v1/consumer-groups/g/parked/replay", None)
        .await;
    assert_eq!(replayed["replayed"], 2);
    let again = api.poll("g", "c", 10, 0).await;
    assert_eq!(positions(&again), [p[0], p[2]]);
    assert_eq!(attempts(&again), [1, 1], "fresh attempts after a replay");
    api.settle("g", "ack", &delivery_ids(&again)).await;
    let stats = api.stats("g").await;
    assert_eq!(stats["acked"], 3);
    assert_eq!(stats["parked"], 0);
    assert_eq!(stats["parked_total"], 2);
    assert_eq!(stats["replayed"], 2);
    assert_eq!(stats["committed_position"], p[2]);
}

#[tokio::test]
async fn a_nack_redelivers_at_once_counting_an_attempt() {
    let (_server, api) = server().await;
    let p = api.append(1, "t").await;
    api.create_group(json!({"group": "g"})).await;
    let first = api.poll("g", "a", 1, 0).await;
    // A member waiting for work gets the nacked message as soon as it is nacked.
    let waiting = {
        let api = api.clone();
        tokio::spawn(async move { api.poll("g", "b", 1, 20_000).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let nacked = api.settle("g", "nack", &delivery_ids(&first)).await;
    assert_eq!(nacked["nacked"], 1);
    let started = Instant::now();
    let got = waiting.await.expect("poll");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "woken by the nack"
    );
    assert_eq!(positions(&got), p);
    assert_eq!(attempts(&got), [2]);
    assert_ne!(delivery_ids(&got), delivery_ids(&first));
}

#[tokio::test]
async fn bad_requests_are_400_naming_the_field_and_change_nothing() {
    let (_server, api) = server().await;
    let cases = [
        (json!({}), vec!["group"]),
        (json!({"group": "a b"}), vec!["group"]),
        (json!({"group": "x".repeat(129)}), vec!["group"]),
        (
            json!({"group": "g", "event_type_filters": ["ok", "no good"]}),
            vec!["event_type_filters[1]"],
        ),
        (
            json!({"group": "g", "ack_timeout_ms": 99}),
            vec!["ack_timeout_ms"],
        ),
        (
            json!({"group": "g", "ack_timeout_ms": 3_600_001}),
            vec!["ack_timeout_ms"],
        ),
        (
            json!({"group": "g", "max_in_flight": 0}),
            vec!["max_in_flight"],
        ),
        (
            json!({"group": "g", "max_in_flight": 1001}),
            vec!["max_in_flight"],
        ),
        (
            json!({"group": "g", "max_deliveries": 0}),
            vec!["max_deliveries"],
        ),
        (
            json!({"group": "g", "max_deliveries": -1}),
            vec!["max_deliveries"],
        ),
        (
            json!({"group": "g", "start_position": 99}),
            vec!["start_position"],
        ),
        (
            json!({"group": "g", "ack_timeout_ms": "soon"}),
            vec!["ack_timeout_ms"],
        ),
        (json!({"group": "g", "colour": "red"}), vec!["body"]),
    ];
    for (body, expected) in cases {
        let reply = api
            .send("POST", "/api/v1/consumer-groups", Some(body.clone()))
            .await;
        assert_problem(&reply, 400, "validation_failed");
        let named = fields(&reply);
        if expected == ["body"] {
            assert!(
                reply.body["detail"].to_string().contains("colour")
                    || reply.body.to_string().contains("colour"),
                "{body}: {}",
                reply.body
            );
        } else {
            assert_eq!(named, expected, "{body}: {}", reply.body);
        }
    }
    let list = api.ok("GET", "/api/v1/consumer-groups", None).await;
    assert_eq!(list["total"], 0, "nothing was created: {list}");

    api.create_group(json!({"group": "g"})).await;
    assert_problem(
        &api.send(
            "POST",
            "/api/v1/consumer-groups",
            Some(json!({"group": "g"})),
        )
        .await,
        409,
        "conflict",
    );
    let polls = [
        (json!({}), vec!["member"]),
        (json!({"member": "m", "max": 0}), vec!["max"]),
        (json!({"member": "m", "max": 1001}), vec!["max"]),
        (json!({"member": "m", "wait_ms": 30_001}), vec!["wait_ms"]),
        (json!({"member": "no/slash"}), vec!["member"]),
    ];
    for (body, expected) in polls {
        let reply = api
            .send("POST", "/api/v1/consumer-groups/g/poll", Some(body.clone()))
            .await;
        assert_problem(&reply, 400, "validation_failed");
        assert_eq!(fields(&reply), expected, "{body}");
    }
    for (body, expected) in [
        (json!({}), "delivery_ids"),
        (json!({"delivery_ids": []}), "delivery_ids"),
        (json!({"delivery_ids": ["x"]}), "delivery_ids[0]"),
    ] {
        for verb in ["ack", "nack"] {
            let reply = api
                .send(
                    "POST",
                    &format!("/api/v1/consumer-groups/g/{verb}"),
                    Some(body.clone()),
                )
                .await;
            assert_problem(&reply, 400, "validation_failed");
            assert_eq!(fields(&reply), [expected], "{verb} {body}");
        }
    }
    let unknown = uuid::Uuid::new_v4().to_string();
    let ignored = api.settle("g", "ack", std::slice::from_ref(&unknown)).await;
    assert_eq!(
        ignored,
        json!({"acked": 0, "ignored": 1, "ignored_ids": [unknown]})
    );
    for path in [
        "/api/v1/consumer-groups/g/parked?limit=0",
        "/api/v1/consumer-groups/g/parked?after=-1",
        "/api/v1/consumer-groups/g/parked?colour=red",
        "/api/v1/consumer-groups/g/stats?x=1",
    ] {
        assert_problem(&api.send("GET", path, None).await, 400, "validation_failed");
    }
    for (method, body) in [
        ("PUT", json!({"start_position": 5})),
        ("PUT", json!({"group": "other"})),
        ("PUT", json!({"max_deliveries": 101})),
    ] {
        let reply = api
            .send(method, "/api/v1/consumer-groups/g", Some(body.clone()))
            .await;
        assert_problem(&reply, 400, "validation_failed");
    }
    let changed = api
        .ok(
            "PUT",
            "/api/v1/consumer-groups/g",
            Some(json!({"max_deliveries": 9, "event_type_filters": ["a.*"]})),
        )
        .await;
    assert_eq!(changed["max_deliveries"], 9);
    assert_eq!(changed["ack_timeout_ms"], 30_000, "kept");
    assert_eq!(
        api.ok("GET", "/api/v1/consumer-groups/g", None).await,
        changed
    );
    for (method, path) in [
        ("GET", "/api/v1/consumer-groups/nope"),
        ("GET", "/api/v1/consumer-groups/nope/stats"),
        ("GET", "/api/v1/consumer-groups/nope/parked"),
        ("POST", "/api/v1/consumer-groups/nope/parked/replay"),
        ("DELETE", "/api/v1/consumer-groups/nope"),
    ] {
        assert_problem(&api.send(method, path, None).await, 404, "not_found");
    }
    assert_problem(
        &api.send(
            "POST",
            "/api/v1/consumer-groups/nope/poll",
            Some(json!({"member": "m"})),
        )
        .await,
        404,
        "not_found",
    );
    let deleted = api.ok("DELETE", "/api/v1/consumer-groups/g", None).await;
    assert_eq!(deleted, json!({"group": "g", "deleted": true}));
    assert_problem(
        &api.send("GET", "/api/v1/consumer-groups/g", None).await,
        404,
        "not_found",
    );
}

/// Logs in and returns the access token.
async fn login(api: &Api, username: &str, password: &str) -> String {
    let reply = api
        .ok(
            "POST",
            "/api/v1/auth/login",
            Some(json!({"username": username, "password": password})),
        )
        .await;
    reply["access_token"].as_str().expect("token").to_owned()
}

const PASSWORD: &str = "a long enough password";

/// A user of `tenant` with `role`, logged in.
async fn user(operator: &Api, tenant: &str, role: &str) -> Api {
    let username = format!("{tenant}-{role}");
    operator
        .ok(
            "POST",
            "/api/v1/auth/users",
            Some(
                json!({"username": username, "password": PASSWORD, "role": role,
                        "tenant_id": tenant}),
            ),
        )
        .await;
    let token = login(operator, &username, PASSWORD).await;
    operator.with_token(&token)
}

#[tokio::test]
async fn tenant_b_never_sees_tenant_a_s_groups_nor_its_events() {
    let server = TestServer::start_with_auth(|_| {}).await;
    let anonymous = Api::new(&server.base);
    let operator = anonymous.with_token(&login(&anonymous, ADMIN_USERNAME, ADMIN_PASSWORD).await);
    for id in ["acme", "globex"] {
        operator
            .ok(
                "POST",
                "/api/v1/tenants",
                Some(json!({"id": id, "tier": "unlimited"})),
            )
            .await;
    }
    let a = user(&operator, "acme", "admin").await;
    let a_reader = user(&operator, "acme", "readonly").await;
    let a_worker = user(&operator, "acme", "service_account").await;
    let b = user(&operator, "globex", "admin").await;

    a.append(4, "acmesecret.created").await;
    a.create_group(json!({"group": "shared-name"})).await;
    let a_messages = a_worker.poll("shared-name", "w", 2, 0).await;
    assert_eq!(a_messages.len(), 2);

    // B: no groups, A's group is unknown on every route, and acks of A's deliveries do nothing.
    let list = b.ok("GET", "/api/v1/consumer-groups", None).await;
    assert_eq!(list["total"], 0, "{list}");
    for (method, path, body) in [
        ("GET", "/api/v1/consumer-groups/shared-name", None),
        ("GET", "/api/v1/consumer-groups/shared-name/stats", None),
        ("GET", "/api/v1/consumer-groups/shared-name/parked", None),
        (
            "POST",
            "/api/v1/consumer-groups/shared-name/parked/replay",
            None,
        ),
        (
            "POST",
            "/api/v1/consumer-groups/shared-name/poll",
            Some(json!({"member": "x"})),
        ),
        (
            "POST",
            "/api/v1/consumer-groups/shared-name/ack",
            Some(json!({"delivery_ids": delivery_ids(&a_messages)})),
        ),
        (
            "PUT",
            "/api/v1/consumer-groups/shared-name",
            Some(json!({"max_deliveries": 1})),
        ),
        ("DELETE", "/api/v1/consumer-groups/shared-name", None),
    ] {
        let reply = b.send(method, path, body).await;
        assert_problem(&reply, 404, "not_found");
        assert!(
            !reply.body.to_string().contains("acmesecret"),
            "{}",
            reply.body
        );
    }
    // B's group of the same name delivers B's events only.
    b.create_group(json!({"group": "shared-name"})).await;
    assert!(
        b.poll("shared-name", "x", 100, 0).await.is_empty(),
        "B has no events"
    );
    let b_events = b.append(2, "globex.thing").await;
    let got = b.poll("shared-name", "x", 100, 0).await;
    assert_eq!(positions(&got), b_events);
    assert!(got.iter().all(|m| m["event"]["tenant_id"] == "globex"));
    let cross = b
        .settle("shared-name", "ack", &delivery_ids(&a_messages))
        .await;
    assert_eq!(cross["acked"], 0);
    // A's group is untouched by all of it.
    let stats = a.stats("shared-name").await;
    assert_eq!(
        (stats["in_flight"].as_u64(), stats["acked"].as_u64()),
        (Some(2), Some(0))
    );
    assert_eq!(stats["lag"], 2);
    assert_eq!(
        a.ok("GET", "/api/v1/consumer-groups/shared-name", None)
            .await["max_deliveries"],
        5
    );

    // Roles: readers read, members (write) poll and ack, managing needs manage_pipelines.
    assert_eq!(a_reader.stats("shared-name").await["group"], "shared-name");
    for (api, method, path, body) in [
        (
            &a_reader,
            "POST",
            "/api/v1/consumer-groups/shared-name/poll",
            json!({"member": "r"}),
        ),
        (
            &a_reader,
            "POST",
            "/api/v1/consumer-groups/shared-name/parked/replay",
            json!({}),
        ),
        (
            &a_worker,
            "POST",
            "/api/v1/consumer-groups",
            json!({"group": "mine"}),
        ),
        (
            &a_worker,
            "PUT",
            "/api/v1/consumer-groups/shared-name",
            json!({"max_deliveries": 1}),
        ),
    ] {
        assert_problem(&api.send(method, path, Some(body)).await, 403, "forbidden");
    }
    assert_problem(
        &a_worker
            .send("DELETE", "/api/v1/consumer-groups/shared-name", None)
            .await,
        403,
        "forbidden",
    );
    let acked = a_worker
        .settle("shared-name", "ack", &delivery_ids(&a_messages))
        .await;
    assert_eq!(acked["acked"], 2);

    // Group changes are audited in A's tenant.
    let audit = a
        .ok("GET", "/api/v1/audit?action=consumer_group.", None)
        .await;
    let actions: Vec<&str> = audit["records"]
        .as_array()
        .expect("records")
        .iter()
        .map(|r| r["action"].as_str().expect("action"))
        .collect();
    assert_eq!(actions, ["consumer_group.create"], "{audit}");
}

/// What the members of the crash test saw: each delivery with the time its poll was sent, and
/// each ack with the time its answer came.
#[derive(Default)]
struct Ledger {
    deliveries: Vec<(Instant, u64)>,
    acked: BTreeMap<u64, Instant>,
    /// Positions of acks that were sent but never answered (the server died): each may or may
    /// not have been applied, so it may or may not be delivered again.
    unanswered: BTreeSet<u64>,
}

/// Members polling `group` until `stop` or until the server goes away; every fourth batch is
/// left unacked (it must be delivered again).
fn members(
    api: &Api,
    group: &str,
    names: &[&str],
    ledger: &Arc<Mutex<Ledger>>,
    stop: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    names
        .iter()
        .map(|name| {
            let (api, group, name) = (api.clone(), group.to_owned(), (*name).to_owned());
            let (ledger, stop) = (ledger.clone(), stop.clone());
            tokio::spawn(async move {
                let mut batch = 0u64;
                while !stop.load(Ordering::Acquire) {
                    let sent = Instant::now();
                    let Some(reply) = api
                        .try_send(
                            "POST",
                            &format!("/api/v1/consumer-groups/{group}/poll"),
                            Some(&json!({"member": name, "max": 4, "wait_ms": 200})),
                        )
                        .await
                    else {
                        return;
                    };
                    if reply.status != 200 {
                        // Starting up again (503) or stopping.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                    let got = reply.body["messages"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default();
                    if got.is_empty() {
                        continue;
                    }
                    ledger
                        .lock()
                        .deliveries
                        .extend(got.iter().map(|m| (sent, position(m))));
                    batch += 1;
                    if batch.is_multiple_of(4) {
                        continue;
                    }
                    let ids = delivery_ids(&got);
                    let positions: Vec<u64> = got.iter().map(position).collect();
                    let Some(answer) = api
                        .try_send(
                            "POST",
                            &format!("/api/v1/consumer-groups/{group}/ack"),
                            Some(&json!({"delivery_ids": ids})),
                        )
                        .await
                    else {
                        ledger.lock().unanswered.extend(positions);
                        return;
                    };
                    if answer.status != 200 {
                        continue;
                    }
                    let answered = Instant::now();
                    let ignored: BTreeSet<String> = answer.body["ignored_ids"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|v| v.as_str().map(str::to_owned))
                        .collect();
                    let mut ledger = ledger.lock();
                    for m in &got {
                        let id = m["delivery_id"].as_str().unwrap_or_default();
                        if !ignored.contains(id) {
                            ledger.acked.entry(position(m)).or_insert(answered);
                        }
                    }
                }
            })
        })
        .collect()
}

/// No message was delivered by a poll sent after an ack of it was answered.
fn assert_acked_stay_acked(ledger: &Ledger) {
    for (sent, position) in &ledger.deliveries {
        if let Some(acked_at) = ledger.acked.get(position) {
            assert!(
                sent < acked_at,
                "position {position} was delivered by a poll sent after its ack was answered"
            );
        }
    }
}

#[tokio::test]
async fn sigkill_mid_flight_keeps_every_ack_and_delivers_every_unacked_message_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut process = ServerProcess::start(dir.path(), &[]).await;
    let api = Api::new(&process.base);
    let all: BTreeSet<u64> = api.append(300, "work.item").await.into_iter().collect();
    // Members leave every fourth batch unacked: with enough attempts, nothing gets parked.
    api.create_group(
        json!({"group": "crash", "ack_timeout_ms": 1000, "max_in_flight": 40,
                            "max_deliveries": 100}),
    )
    .await;
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let tasks = members(&api, "crash", &["m1", "m2", "m3"], &ledger, &stop);
    // Kill while members hold messages and acks are on the wire.
    let deadline = Instant::now() + Duration::from_secs(30);
    while ledger.lock().acked.len() < 60 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    process.kill9();
    for task in tasks {
        task.await.expect("member");
    }
    let (acked_before, delivered_before) = {
        let ledger = ledger.lock();
        let delivered: BTreeSet<u64> = ledger.deliveries.iter().map(|(_, p)| *p).collect();
        (ledger.acked.len(), delivered)
    };
    assert!(
        acked_before >= 60,
        "the members did not get going: {acked_before} acks"
    );
    let unacked_before: Vec<u64> = delivered_before
        .iter()
        .filter(|p| {
            let ledger = ledger.lock();
            !ledger.acked.contains_key(p) && !ledger.unanswered.contains(p)
        })
        .copied()
        .collect();
    assert!(
        !unacked_before.is_empty(),
        "nothing was in flight at the kill"
    );

    // Restart on the same data dir; new members finish the work.
    let process = ServerProcess::start(dir.path(), &[]).await;
    let api = Api::new(&process.base);
    let stop = Arc::new(AtomicBool::new(false));
    let tasks = members(&api, "crash", &["n1", "n2"], &ledger, &stop);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        // Done when every message is acked: by an answered ack, or (the server says so) by
        // an ack whose answer the kill swallowed.
        let done = all.iter().all(|p| {
            let ledger = ledger.lock();
            ledger.acked.contains_key(p) || ledger.unanswered.contains(p)
        }) && api.stats("crash").await["acked"].as_u64() == Some(all.len() as u64);
        if done {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not everything was acked after the restart: missing {:?}",
            all.iter()
                .filter(|p| {
                    let ledger = ledger.lock();
                    !ledger.acked.contains_key(p) && !ledger.unanswered.contains(p)
                })
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::Release);
    for task in tasks {
        task.await.expect("member");
    }
    {
        let ledger = ledger.lock();
        assert_acked_stay_acked(&ledger);
        // What was held but not acked at the kill came again after the restart.
        for p in &unacked_before {
            assert!(
                ledger.deliveries.iter().filter(|(_, q)| q == p).count() >= 2,
                "position {p} was not delivered again"
            );
        }
    }
    let stats = api.stats("crash").await;
    assert_eq!(stats["acked"].as_u64(), Some(all.len() as u64), "{stats}");
    assert_eq!(
        stats["committed_position"],
        *all.iter().max().expect("some")
    );
}

#[tokio::test]
async fn two_postgres_nodes_share_a_group_and_never_lease_a_message_twice() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let env = [
        ("ALLSOURCE__STORAGE__BACKEND", "postgres"),
        ("ALLSOURCE__STORAGE__POSTGRES__URL", db.url()),
    ];
    let node_a = ServerProcess::start(&dir.path().join("a"), &env).await;
    let node_b = ServerProcess::start(&dir.path().join("b"), &env).await;
    let (a, b) = (Api::new(&node_a.base), Api::new(&node_b.base));
    let all: BTreeSet<u64> = a.append(200, "pg.job").await.into_iter().collect();
    // Created on one node, served by both.
    a.create_group(json!({"group": "pg", "max_in_flight": 50}))
        .await;
    assert_eq!(
        b.ok("GET", "/api/v1/consumer-groups/pg", None).await["group"],
        "pg"
    );
    let seen = Arc::new(Mutex::new(Vec::<u64>::new()));
    let mut tasks = Vec::new();
    for (api, names) in [(&a, ["a1", "a2"]), (&b, ["b1", "b2"])] {
        for name in names {
            let (api, seen) = (api.clone(), seen.clone());
            tasks.push(tokio::spawn(async move {
                let mut empty = 0;
                while empty < 3 {
                    let got = api.poll("pg", name, 5, 100).await;
                    if got.is_empty() {
                        empty += 1;
                        continue;
                    }
                    empty = 0;
                    seen.lock().extend(positions(&got));
                    let acked = api.settle("pg", "ack", &delivery_ids(&got)).await;
                    assert_eq!(acked["acked"], got.len(), "{acked}");
                }
            }));
        }
    }
    for task in tasks {
        task.await.expect("member");
    }
    let seen = seen.lock().clone();
    assert_eq!(seen.iter().copied().collect::<BTreeSet<_>>(), all);
    assert_eq!(seen.len(), all.len(), "a message was leased twice");
    let stats = b.stats("pg").await;
    assert_eq!(
        (stats["acked"].as_u64(), stats["delivered"].as_u64()),
        (Some(200), Some(200))
    );
    let members: BTreeSet<&str> = stats["members"]
        .as_array()
        .expect("members")
        .iter()
        .map(|m| m["member"].as_str().expect("member"))
        .collect();
    assert_eq!(members, BTreeSet::from(["a1", "a2", "b1", "b2"]));
}
