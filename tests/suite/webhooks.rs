//! Webhooks, black-box: the real server delivering to a real HTTP receiver started by the test
//! (axum on 127.0.0.1, so these servers set `webhooks.allow_private_destinations`), which
//! fails chosen attempts. Checked: the signature (with the test's own HMAC), the headers, the
//! body's event (the same JSON as `GET /api/v1/events/{id}`), the order, the retries and their
//! backoff, failure after the last attempt, the delivery log, a restart resuming from the
//! cursor; the refusal of private destinations with the setting off (400 naming the rule);
//! the secret never returned; validation; tenant isolation and the `max_webhooks` quota.

use std::sync::Arc;
use std::time::{Duration, Instant};

use allsource_tests::problem::{assert_problem, fields};
use allsource_tests::server::{ADMIN_PASSWORD, ADMIN_USERNAME, Reply, TestServer};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use hmac::{Hmac, Mac};
use parking_lot::Mutex;
use reqwest::Method;
use serde_json::{Value, json};
use sha2::Sha256;

const SECRET: &str = "webhook-test-secret-0123456789";

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    headers: HeaderMap,
    body: Bytes,
    at: Instant,
}

impl Seen {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// A webhook receiver: answers `500` to the first `payload.fail` attempts of each delivery
/// (by `delivery_id`), then `200`.
struct Receiver {
    base: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Receiver {
    async fn start() -> Self {
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let app = axum::Router::new()
            .route("/{*path}", axum::routing::post(receive))
            .with_state(seen.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the receiver");
        let base = format!("http://{}", listener.local_addr().expect("address"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { base, seen }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().clone()
    }

    fn at(&self, path: &str) -> Vec<Seen> {
        self.seen().into_iter().filter(|s| s.path == path).collect()
    }

    async fn wait_for(&self, path: &str, n: usize) -> Vec<Seen> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let seen = self.at(path);
            if seen.len() >= n {
                return seen;
            }
            assert!(
                Instant::now() < deadline,
                "{path}: {} of {n} requests arrived",
                seen.len()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

async fn receive(
    State(seen): State<Arc<Mutex<Vec<Seen>>>>,
    axum::extract::Path(path): axum::extract::Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let parsed: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let fail = parsed["event"]["payload"]["fail"].as_u64().unwrap_or(0);
    let mut seen = seen.lock();
    let earlier = seen
        .iter()
        .filter(|s| {
            serde_json::from_slice::<Value>(&s.body)
                .ok()
                .is_some_and(|b| b["delivery_id"] == parsed["delivery_id"])
        })
        .count() as u64;
    seen.push(Seen {
        path: format!("/{path}"),
        headers,
        body,
        at: Instant::now(),
    });
    if earlier < fail {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::OK
    }
}

fn hex_hmac(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(body);
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Fast retries, a local receiver allowed.
fn quick(settings: &mut allsource::Settings) {
    settings.webhooks.allow_private_destinations = true;
    settings.webhooks.max_attempts = 5;
    settings.webhooks.backoff_base_ms = 50;
    settings.webhooks.backoff_max_ms = 300;
    settings.webhooks.timeout_ms = 2000;
    settings.webhooks.lease_ms = 5000;
    settings.webhooks.rescan_interval_ms = 100;
}

async fn call(server: &TestServer, method: Method, path: &str, body: Option<Value>) -> Reply {
    server.call(method, path, None, body.as_ref()).await
}

async fn append(server: &TestServer, entity: &str, event_type: &str, payload: Value) -> Value {
    let r = server
        .post_json(
            "/api/v1/events",
            &json!({"entity_id": entity, "event_type": event_type, "payload": payload}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.body
}

#[tokio::test]
async fn deliveries_are_signed_in_order_retried_with_backoff_and_failures_are_listed() {
    let receiver = Receiver::start().await;
    let server = TestServer::start_with(quick).await;
    append(&server, "o0", "order.placed", json!({"before": true})).await;
    let created = call(
        &server,
        Method::POST,
        "/api/v1/webhooks",
        Some(
            json!({"url": format!("{}/hook", receiver.base), "event_types": ["order.*"],
                    "secret": SECRET, "description": "orders"}),
        ),
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let id = created.body["id"].as_str().unwrap().to_owned();
    assert_eq!(
        created.header("location"),
        Some(format!("/api/v1/webhooks/{id}").as_str())
    );
    assert_eq!(created.body["has_secret"], true);
    assert_eq!(created.body["active"], true);
    assert_eq!(created.body["event_types"], json!(["order.*"]));
    assert!(!created.body.to_string().contains(SECRET));

    // Fails twice then succeeds; not matching; fails every attempt; succeeds at once.
    let first = append(&server, "o1", "order.placed", json!({"fail": 2})).await;
    append(&server, "c1", "customer.created", json!({})).await;
    let doomed = append(&server, "o1", "order.paid", json!({"fail": 99})).await;
    let last = append(&server, "o2", "order.shipped", json!({})).await;
    let seen = receiver.wait_for("/hook", 3 + 5 + 1).await;
    // Nothing more arrives.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(receiver.seen().len(), 9, "{:?}", receiver.seen());

    let positions: Vec<u64> = seen
        .iter()
        .map(|s| s.json()["event"]["position"].as_u64().unwrap())
        .collect();
    let p = |receipt: &Value| receipt["position"].as_u64().unwrap();
    let expected: Vec<u64> = [vec![p(&first); 3], vec![p(&doomed); 5], vec![p(&last)]].concat();
    assert_eq!(
        positions, expected,
        "in order; a failing event holds back the next"
    );

    for s in &seen {
        let body = s.json();
        assert_eq!(
            s.header("x-allsource-signature"),
            Some(format!("sha256={}", hex_hmac(SECRET, &s.body)).as_str()),
            "the signature is the HMAC-SHA256 of the exact body"
        );
        assert_eq!(s.header("content-type"), Some("application/json"));
        assert_eq!(s.header("x-allsource-webhook-id"), Some(id.as_str()));
        assert_eq!(body["webhook_id"], id);
        assert_eq!(
            s.header("x-allsource-delivery-id"),
            body["delivery_id"].as_str()
        );
        assert_eq!(
            s.header("x-allsource-event-type"),
            body["event"]["event_type"].as_str()
        );
        assert!(body["delivered_at"].as_str().unwrap().ends_with('Z'));
        // The event is exactly what the REST API shows.
        let event_id = body["event"]["id"].as_str().unwrap();
        let stored = server.get(&format!("/api/v1/events/{event_id}")).await;
        assert_eq!(body["event"], stored.body);
    }
    // One delivery id per event, across its attempts.
    let ids = |range: std::ops::Range<usize>| -> Vec<Value> {
        seen[range]
            .iter()
            .map(|s| s.json()["delivery_id"].clone())
            .collect()
    };
    assert!(ids(0..3).windows(2).all(|w| w[0] == w[1]));
    assert!(ids(3..8).windows(2).all(|w| w[0] == w[1]));
    assert_ne!(ids(0..1), ids(3..4));
    // Exponential backoff: 50, 100, 200, then the 300 ms cap (lower bounds only).
    let gaps: Vec<Duration> = seen[3..8].windows(2).map(|w| w[1].at - w[0].at).collect();
    for (gap, at_least) in gaps.iter().zip([50u64, 100, 200, 300]) {
        assert!(*gap >= Duration::from_millis(at_least * 9 / 10), "{gaps:?}");
    }

    let log = call(
        &server,
        Method::GET,
        &format!("/api/v1/webhooks/{id}/deliveries"),
        None,
    )
    .await;
    assert_eq!(log.status, 200, "{}", log.body);
    assert_eq!(log.body["webhook_id"], id);
    assert_eq!(log.body["count"], 3);
    let d = &log.body["deliveries"];
    assert_eq!(d[0]["position"], p(&last));
    assert_eq!(d[0]["status"], "delivered");
    assert_eq!(d[0]["attempts"], 1);
    assert_eq!(d[1]["position"], p(&doomed));
    assert_eq!(d[1]["status"], "failed");
    assert_eq!(d[1]["attempts"], 5);
    assert_eq!(d[1]["last_status_code"], 500);
    assert_eq!(d[1]["next_attempt_at"], Value::Null);
    assert!(d[1]["completed_at"].is_string());
    assert_eq!(d[1]["event_id"], doomed["event_id"]);
    assert_eq!(d[2]["position"], p(&first));
    assert_eq!(d[2]["status"], "delivered");
    assert_eq!(d[2]["attempts"], 3);
    assert_eq!(d[2]["last_status_code"], 200);
    assert_eq!(d[2]["delivery_id"], seen[0].json()["delivery_id"]);
    let one = call(
        &server,
        Method::GET,
        &format!("/api/v1/webhooks/{id}/deliveries?limit=1"),
        None,
    )
    .await;
    assert_eq!(one.body["count"], 1);
    for bad in ["limit=0", "limit=101", "limit=x", "since=1"] {
        let r = call(
            &server,
            Method::GET,
            &format!("/api/v1/webhooks/{id}/deliveries?{bad}"),
            None,
        )
        .await;
        assert_problem(&r, 400, "validation_failed");
    }
    let shown = call(
        &server,
        Method::GET,
        &format!("/api/v1/webhooks/{id}"),
        None,
    )
    .await;
    assert_eq!(shown.body["cursor_position"], p(&last));
}

#[tokio::test]
async fn a_restart_resumes_after_the_cursor_without_losing_or_repeating_events() {
    let receiver = Receiver::start().await;
    let server = TestServer::start_with(quick).await;
    let created = call(
        &server,
        Method::POST,
        "/api/v1/webhooks",
        Some(json!({"url": format!("{}/r", receiver.base), "event_types": []})),
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let id = created.body["id"].as_str().unwrap().to_owned();
    for i in 0..3 {
        append(&server, "e", "thing.happened", json!({"i": i})).await;
    }
    receiver.wait_for("/r", 3).await;
    let dir = server.stop().await;
    let server = TestServer::start_in(dir, quick).await;
    for i in 3..5 {
        append(&server, "e", "thing.happened", json!({"i": i})).await;
    }
    receiver.wait_for("/r", 5).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got: Vec<u64> = receiver
        .at("/r")
        .iter()
        .map(|s| s.json()["event"]["payload"]["i"].as_u64().unwrap())
        .collect();
    assert_eq!(got, [0, 1, 2, 3, 4]);
    let log = call(
        &server,
        Method::GET,
        &format!("/api/v1/webhooks/{id}/deliveries"),
        None,
    )
    .await;
    assert_eq!(
        log.body["count"], 5,
        "the delivery log survived the restart"
    );
}

#[tokio::test]
async fn private_destinations_are_refused_naming_the_rule_while_the_setting_is_off() {
    let receiver = Receiver::start().await;
    let server = TestServer::start().await;
    let port = receiver.base.rsplit(':').next().unwrap().to_owned();
    for (url, rule) in [
        (format!("{}/hook", receiver.base), "loopback"),
        (format!("http://localhost:{port}/hook"), "loopback"),
        ("http://[::1]/".to_owned(), "loopback"),
        ("http://[::ffff:127.0.0.1]/".to_owned(), "loopback"),
        ("http://2130706433/".to_owned(), "loopback"),
        ("http://10.1.2.3/".to_owned(), "private"),
        ("http://192.168.0.10/".to_owned(), "private"),
        (
            "http://169.254.169.254/latest/meta-data".to_owned(),
            "link_local",
        ),
        ("http://[fe80::1]/".to_owned(), "link_local"),
        ("http://[fd00::1]/".to_owned(), "unique_local"),
        ("http://0.0.0.0/".to_owned(), "unspecified"),
        ("http://224.0.0.1/".to_owned(), "multicast"),
    ] {
        let r = call(
            &server,
            Method::POST,
            "/api/v1/webhooks",
            Some(json!({"url": url, "event_types": ["*"]})),
        )
        .await;
        assert_problem(&r, 400, "validation_failed");
        assert_eq!(fields(&r), ["url"], "{url}: {}", r.body);
        assert_eq!(r.body["rule"], rule, "{url}: {}", r.body);
        assert!(
            r.body["detail"]
                .as_str()
                .unwrap()
                .contains(&format!("rule '{rule}'")),
            "{}",
            r.body
        );
    }
    let listed = call(&server, Method::GET, "/api/v1/webhooks", None).await;
    assert_eq!(listed.body["total"], 0);
    assert!(receiver.seen().is_empty());
}

#[tokio::test]
async fn the_secret_is_never_returned_and_bad_requests_are_400s_naming_the_field() {
    let receiver = Receiver::start().await;
    let server = TestServer::start_with(quick).await;
    let url = format!("{}/s", receiver.base);
    let created = call(
        &server,
        Method::POST,
        "/api/v1/webhooks",
        Some(json!({"url": url, "event_types": ["a"], "secret": SECRET})),
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let id = created.body["id"].as_str().unwrap().to_owned();
    let path = format!("/api/v1/webhooks/{id}");
    let kept = call(
        &server,
        Method::PUT,
        &path,
        Some(json!({"url": url, "event_types": ["b"]})),
    )
    .await;
    assert_eq!(kept.status, 200, "{}", kept.body);
    assert_eq!(kept.body["has_secret"], true, "an absent secret is kept");
    for reply in [
        &created,
        &kept,
        &call(&server, Method::GET, &path, None).await,
        &call(&server, Method::GET, "/api/v1/webhooks", None).await,
        &call(&server, Method::GET, "/api/v1/audit?action=webhook.", None).await,
    ] {
        let text = reply.body.to_string();
        assert!(!text.contains(SECRET), "{text}");
        assert!(
            reply.body.get("secret").is_none() && reply.body["webhooks"][0].get("secret").is_none(),
            "{text}"
        );
    }
    let audit = call(&server, Method::GET, "/api/v1/audit?action=webhook.", None).await;
    let actions: Vec<&str> = audit.body["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["webhook.create", "webhook.update"]);
    let removed = call(
        &server,
        Method::PUT,
        &path,
        Some(json!({"url": url, "event_types": ["b"], "secret": null})),
    )
    .await;
    assert_eq!(removed.body["has_secret"], false);
    // With no secret, deliveries carry no signature.
    append(&server, "e", "b", json!({})).await;
    let seen = receiver.wait_for("/s", 1).await;
    assert_eq!(seen[0].header("x-allsource-signature"), None);

    for (body, field) in [
        (json!({"event_types": ["a"]}), "url"),
        (
            json!({"url": "ftp://example.com/", "event_types": ["a"]}),
            "url",
        ),
        (json!({"url": url}), "event_types"),
        (
            json!({"url": url, "event_types": ["a", "b c"]}),
            "event_types[1]",
        ),
        (json!({"url": url, "event_types": "a"}), "event_types"),
        (
            json!({"url": url, "event_types": ["a"], "secret": "short"}),
            "secret",
        ),
        (
            json!({"url": url, "event_types": ["a"], "entity_ids": [""]}),
            "entity_ids[0]",
        ),
        (
            json!({"url": url, "event_types": ["a"], "active": "yes"}),
            "active",
        ),
        (
            json!({"url": url, "event_types": ["a"], "surprise": 1}),
            "surprise",
        ),
    ] {
        let r = call(
            &server,
            Method::POST,
            "/api/v1/webhooks",
            Some(body.clone()),
        )
        .await;
        assert_problem(&r, 400, "validation_failed");
        assert!(
            fields(&r).contains(&field.to_owned())
                || r.body["detail"].as_str().unwrap().contains(field),
            "{body}: {}",
            r.body
        );
    }
    let not_json = server
        .post_raw("/api/v1/webhooks", "text/plain", "{}".into())
        .await;
    assert_problem(&not_json, 415, "unsupported_media_type");
    let bad_id = call(&server, Method::GET, "/api/v1/webhooks/not-a-uuid", None).await;
    assert_problem(&bad_id, 400, "validation_failed");
    let unknown = "/api/v1/webhooks/0193a5b4-7c1e-7d2a-9f00-1c2d3e4f5a6b";
    assert_problem(
        &call(&server, Method::GET, unknown, None).await,
        404,
        "not_found",
    );
    assert_problem(
        &call(
            &server,
            Method::PUT,
            unknown,
            Some(json!({"url": url, "event_types": ["a"]})),
        )
        .await,
        404,
        "not_found",
    );
    assert_problem(
        &call(&server, Method::DELETE, unknown, None).await,
        404,
        "not_found",
    );
    let deleted = call(&server, Method::DELETE, &path, None).await;
    assert_eq!(deleted.status, 200, "{}", deleted.body);
    assert_eq!(deleted.body, json!({"id": id, "deleted": true}));
    assert_problem(
        &call(&server, Method::GET, &path, None).await,
        404,
        "not_found",
    );
}

/// Logs in and answers the access token.
async fn login(server: &TestServer, username: &str, password: &str) -> String {
    let r = server
        .post_json(
            "/api/v1/auth/login",
            &json!({"username": username, "password": password}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.body["access_token"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn tenants_see_and_touch_only_their_own_webhooks_and_events_and_the_quota_holds() {
    let receiver = Receiver::start().await;
    let server = TestServer::start_with_auth(|s| {
        quick(s);
        s.rate_limit.enabled = false;
    })
    .await;
    let root = login(&server, ADMIN_USERNAME, ADMIN_PASSWORD).await;
    let as_ = |token: String, method: Method, path: String, body: Option<Value>| {
        let server = &server;
        async move {
            server
                .call(method, &path, Some(&token), body.as_ref())
                .await
        }
    };
    let mut tokens = Vec::new();
    for (tenant, user) in [("acme", "alice"), ("globex", "bob")] {
        let t = as_(
            root.clone(),
            Method::POST,
            "/api/v1/tenants".into(),
            Some(json!({"id": tenant, "tier": "free"})),
        )
        .await;
        assert_eq!(t.status, 201, "{}", t.body);
        let u = as_(
            root.clone(),
            Method::POST,
            "/api/v1/auth/users".into(),
            Some(json!({"username": user, "password": "a password for tests",
                        "role": "admin", "tenant_id": tenant})),
        )
        .await;
        assert_eq!(u.status, 201, "{}", u.body);
        tokens.push(login(&server, user, "a password for tests").await);
    }
    let (a, b) = (tokens[0].clone(), tokens[1].clone());
    let hook =
        |path: &str| json!({"url": format!("{}{path}", receiver.base), "event_types": ["*"]});
    let a_hook = as_(
        a.clone(),
        Method::POST,
        "/api/v1/webhooks".into(),
        Some(hook("/a")),
    )
    .await;
    assert_eq!(a_hook.status, 201, "{}", a_hook.body);
    let a_id = a_hook.body["id"].as_str().unwrap().to_owned();
    let b_hook = as_(
        b.clone(),
        Method::POST,
        "/api/v1/webhooks".into(),
        Some(hook("/b")),
    )
    .await;
    assert_eq!(b_hook.status, 201, "{}", b_hook.body);

    // B cannot read, change, delete or list A's webhook, nor read its deliveries.
    let a_path = format!("/api/v1/webhooks/{a_id}");
    for (method, path, body) in [
        (Method::GET, a_path.clone(), None),
        (Method::PUT, a_path.clone(), Some(hook("/stolen"))),
        (Method::DELETE, a_path.clone(), None),
        (Method::GET, format!("{a_path}/deliveries"), None),
    ] {
        let r = as_(b.clone(), method.clone(), path.clone(), body).await;
        assert_problem(&r, 404, "not_found");
    }
    let b_list = as_(b.clone(), Method::GET, "/api/v1/webhooks".into(), None).await;
    assert_eq!(b_list.body["total"], 1);
    assert_eq!(b_list.body["webhooks"][0]["id"], b_hook.body["id"]);
    let a_now = as_(a.clone(), Method::GET, a_path.clone(), None).await;
    assert_eq!(a_now.body["url"], a_hook.body["url"], "unchanged");

    // Each receives its own tenant's events only.
    for (token, entity) in [(&a, "a-1"), (&b, "b-1"), (&a, "a-2")] {
        let r = as_(
            token.clone(),
            Method::POST,
            "/api/v1/events".into(),
            Some(json!({"entity_id": entity, "event_type": "t", "payload": {}})),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let to_a = receiver.wait_for("/a", 2).await;
    let to_b = receiver.wait_for("/b", 1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.at("/a").len(), 2);
    assert_eq!(receiver.at("/b").len(), 1);
    assert!(receiver.at("/stolen").is_empty());
    for s in &to_a {
        assert_eq!(s.json()["event"]["tenant_id"], "acme");
    }
    assert_eq!(to_b[0].json()["event"]["tenant_id"], "globex");
    assert_eq!(to_b[0].json()["event"]["entity_id"], "b-1");

    // Free tier: two webhooks; a third is refused until one is deleted.
    let second = as_(
        a.clone(),
        Method::POST,
        "/api/v1/webhooks".into(),
        Some(hook("/a2")),
    )
    .await;
    assert_eq!(second.status, 201, "{}", second.body);
    let third = as_(
        a.clone(),
        Method::POST,
        "/api/v1/webhooks".into(),
        Some(hook("/a3")),
    )
    .await;
    assert_problem(&third, 429, "quota_exceeded");
    assert_eq!(third.body["quota"], "max_webhooks");
    let gone = as_(a.clone(), Method::DELETE, a_path.clone(), None).await;
    assert_eq!(gone.status, 200, "{}", gone.body);
    let again = as_(
        a.clone(),
        Method::POST,
        "/api/v1/webhooks".into(),
        Some(hook("/a3")),
    )
    .await;
    assert_eq!(again.status, 201, "{}", again.body);
}
