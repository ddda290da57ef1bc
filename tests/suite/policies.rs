//! Black-box tests of the policy engine and the audit log against the real server (auth off:
//! every request is an admin of tenant `default`, an operator): the five defaults, CRUD and
//! its validation, the dry run, policies that deny, warn and rate-limit real routes, the audit
//! log recording the decisions and its filters, and durability across a restart.

use allsource_tests::problem::{assert_problem, fields};
use allsource_tests::server::{Reply, TestServer, read};
use serde_json::{Value, json};

const DEFAULT_IDS: [&str; 5] = [
    "default-protect-default-tenant",
    "default-admin-creates-tenants",
    "default-warn-large-operations",
    "default-no-self-deletion",
    "default-rate-limit-expensive",
];

async fn put(server: &TestServer, path: &str, body: &Value) -> Reply {
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

async fn delete(server: &TestServer, path: &str) -> Reply {
    read(
        server
            .client
            .delete(server.url(path))
            .send()
            .await
            .expect("DELETE"),
    )
    .await
}

/// Creates a policy and returns its id.
async fn create(server: &TestServer, body: Value) -> String {
    let reply = server.post_json("/api/v1/policies", &body).await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    reply.body["id"].as_str().expect("id").to_owned()
}

fn event(entity: &str) -> Value {
    json!({"entity_id": entity, "event_type": "thing.happened", "payload": {"n": 1}})
}

async fn audit(server: &TestServer, query: &str) -> Reply {
    let reply = server.get(&format!("/api/v1/audit{query}")).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    reply
}

fn records(reply: &Reply) -> Vec<Value> {
    reply.body["records"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[tokio::test]
async fn the_five_defaults_are_seeded_listed_editable_and_not_deletable() {
    let server = TestServer::start().await;
    let list = server.get("/api/v1/policies").await;
    assert_eq!(list.status, 200, "{}", list.body);
    assert_eq!(list.body["total"], 5);
    let mut ids: Vec<&str> = list.body["policies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            assert_eq!(p["default"], true);
            assert_eq!(p["enabled"], true);
            p["id"].as_str().unwrap()
        })
        .collect();
    ids.sort_unstable();
    let mut expected = DEFAULT_IDS.to_vec();
    expected.sort_unstable();
    assert_eq!(ids, expected);

    let rate = server
        .get("/api/v1/policies/default-rate-limit-expensive")
        .await;
    assert_eq!(rate.status, 200);
    assert_eq!(rate.body["action"], "rate_limit");
    assert_eq!(rate.body["per_minute"], 10);

    for id in DEFAULT_IDS {
        let reply = delete(&server, &format!("/api/v1/policies/{id}")).await;
        assert_problem(&reply, 409, "conflict");
    }
    // Editable: disable the warning.
    let mut warn = server
        .get("/api/v1/policies/default-warn-large-operations")
        .await
        .body;
    let body = json!({"name": warn["name"], "description": warn["description"],
                      "priority": warn["priority"], "enabled": false, "action": "warn",
                      "conditions": warn["conditions"].take()});
    let reply = put(
        &server,
        "/api/v1/policies/default-warn-large-operations",
        &body,
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.body["enabled"], false);
    assert_eq!(reply.body["default"], true);
    let again = server
        .get("/api/v1/policies/default-warn-large-operations")
        .await;
    assert_eq!(again.body["enabled"], false);
}

#[tokio::test]
async fn crud_with_validation() {
    let server = TestServer::start().await;
    let body = json!({"name": "no writes to the sandbox", "priority": 50, "action": "deny",
                      "conditions": [{"attribute": "resource.entity_id", "operator": "eq",
                                      "value": "sandbox"}]});
    let id = create(&server, body.clone()).await;
    assert_eq!(uuid::Uuid::parse_str(&id).unwrap().get_version_num(), 7);
    let one = server.get(&format!("/api/v1/policies/{id}")).await;
    assert_eq!(one.status, 200);
    assert_eq!(one.body["name"], "no writes to the sandbox");
    assert_eq!(one.body["priority"], 50);
    assert_eq!(one.body["enabled"], true);
    assert_eq!(one.body["default"], false);
    assert_eq!(one.body["description"], "");
    assert_eq!(one.body["conditions"][0]["operator"], "eq");

    let mut changed = body.clone();
    changed["action"] = json!("warn");
    let reply = put(&server, &format!("/api/v1/policies/{id}"), &changed).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.body["action"], "warn");
    assert_eq!(server.get("/api/v1/policies").await.body["total"], 6);

    let gone = delete(&server, &format!("/api/v1/policies/{id}")).await;
    assert_eq!(gone.status, 200, "{}", gone.body);
    assert_eq!(gone.body, json!({"id": id, "deleted": true}));
    assert_problem(
        &server.get(&format!("/api/v1/policies/{id}")).await,
        404,
        "not_found",
    );
    assert_problem(
        &delete(&server, &format!("/api/v1/policies/{id}")).await,
        404,
        "not_found",
    );
    assert_problem(
        &put(&server, "/api/v1/policies/nope", &body).await,
        404,
        "not_found",
    );

    // Invalid policies, each naming its field.
    let cases = [
        (
            json!({"name": "x", "action": "explode", "conditions": []}),
            vec!["action"],
        ),
        (
            json!({"name": "x", "action": "deny",
                   "conditions": [{"attribute": "colour", "operator": "eq", "value": 1}]}),
            vec!["conditions[0].attribute"],
        ),
        (
            json!({"name": "x", "action": "deny",
                   "conditions": [{"attribute": "role", "operator": "like", "value": 1}]}),
            vec!["conditions[0].operator"],
        ),
        (
            json!({"name": "x", "action": "deny",
                   "conditions": [{"attribute": "request.limit", "operator": "gt",
                                   "value": "lots"}]}),
            vec!["conditions[0].value"],
        ),
        (
            json!({"name": "x", "action": "rate_limit", "conditions": []}),
            vec!["per_minute"],
        ),
        (
            json!({"name": "", "action": "deny", "priority": 9_999_999, "conditions": []}),
            vec!["name", "priority"],
        ),
        (
            json!({"name": "x", "action": "deny", "conditions": [], "colour": "red"}),
            vec!["colour"],
        ),
        (json!({"name": "x", "action": "deny"}), vec!["body"]),
        (
            json!({"name": "x", "action": "deny", "conditions": {}}),
            vec!["conditions"],
        ),
    ];
    for (body, expected) in cases {
        let reply = server.post_json("/api/v1/policies", &body).await;
        assert_problem(&reply, 400, "validation_failed");
        assert_eq!(fields(&reply), expected, "{body}");
    }
    let reply = server
        .post_raw("/api/v1/policies", "text/plain", "{}".into())
        .await;
    assert_problem(&reply, 415, "unsupported_media_type");
    let reply = server
        .post_raw("/api/v1/policies", "application/json", "{oops".into())
        .await;
    assert_problem(&reply, 400, "validation_failed");
    // Nothing invalid was stored.
    assert_eq!(server.get("/api/v1/policies").await.body["total"], 5);
}

#[tokio::test]
async fn the_dry_run_answers_the_decision_and_changes_nothing() {
    let server = TestServer::start().await;
    let evaluate = |context: Value| {
        let server = &server;
        async move {
            let reply = server
                .post_json("/api/v1/policies/evaluate", &json!({ "context": context }))
                .await;
            assert_eq!(reply.status, 200, "{}", reply.body);
            reply.body
        }
    };
    let tenant = evaluate(json!({"method": "DELETE", "route": "/api/v1/tenants/{id}",
                                  "resource.id": "default"}))
    .await;
    assert_eq!(tenant["decision"], "deny");
    assert_eq!(tenant["decided_by"]["id"], "default-protect-default-tenant");
    let other = evaluate(json!({"method": "DELETE", "route": "/api/v1/tenants/{id}",
                                 "resource.id": "acme"}))
    .await;
    assert_eq!(other["decision"], "allow");
    assert_eq!(other["decided_by"], Value::Null);

    let developer = evaluate(json!({"method": "POST", "route": "/api/v1/tenants",
                                     "role": "developer"}))
    .await;
    assert_eq!(
        developer["decided_by"]["id"],
        "default-admin-creates-tenants"
    );
    let admin = evaluate(json!({"method": "POST", "route": "/api/v1/tenants"})).await;
    assert_eq!(admin["decision"], "allow");

    let myself = evaluate(
        json!({"method": "DELETE", "route": "/api/v1/auth/users/{id}",
                                  "user_id": "u1", "resource.id": "u1"}),
    )
    .await;
    assert_eq!(myself["decided_by"]["id"], "default-no-self-deletion");

    let big = evaluate(json!({"method": "POST", "route": "/api/v1/events/batch",
                               "request.record_count": 10_001}))
    .await;
    assert_eq!(big["decision"], "allow");
    assert_eq!(big["warnings"][0]["id"], "default-warn-large-operations");

    // Rate limits are reported, not counted.
    for _ in 0..12 {
        let replay = evaluate(json!({"method": "POST", "route": "/api/v1/replay"})).await;
        assert_eq!(replay["decision"], "allow");
        assert_eq!(
            replay["rate_limits"][0]["id"],
            "default-rate-limit-expensive"
        );
        assert_eq!(replay["matched"].as_array().unwrap().len(), 1);
    }

    let bad = server
        .post_json(
            "/api/v1/policies/evaluate",
            &json!({"context": {"colour": "red"}}),
        )
        .await;
    assert_problem(&bad, 400, "validation_failed");
    assert_eq!(fields(&bad), ["context.colour"]);
    let missing = server
        .post_json("/api/v1/policies/evaluate", &json!({}))
        .await;
    assert_problem(&missing, 400, "validation_failed");
    // A dry run records nothing.
    let decisions = audit(&server, "?action=policy.decision").await;
    assert!(records(&decisions).is_empty(), "{}", decisions.body);
}

#[tokio::test]
async fn a_deny_policy_blocks_a_real_route_and_is_audited() {
    let server = TestServer::start().await;
    let id = create(
        &server,
        json!({"name": "small batches only", "action": "deny", "priority": 10,
               "conditions": [
                   {"attribute": "route", "operator": "eq", "value": "/api/v1/events/batch"},
                   {"attribute": "request.record_count", "operator": "gt", "value": 2}]}),
    )
    .await;
    let three = json!({"events": [event("a"), event("b"), event("c")]});
    let refused = server.post_json("/api/v1/events/batch", &three).await;
    assert_problem(&refused, 403, "forbidden");
    assert_eq!(refused.body["policy_id"], id.as_str());
    assert_eq!(refused.body["policy_name"], "small batches only");
    let two = json!({"events": [event("a"), event("b")]});
    let ok = server.post_json("/api/v1/events/batch", &two).await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    // The refused batch appended nothing.
    let query = server.get("/api/v1/events/query").await;
    assert_eq!(query.body["count"], 2);
    // A body the handler refuses is still refused by the handler, not by the policy.
    let malformed = server
        .post_raw("/api/v1/events/batch", "application/json", "{oops".into())
        .await;
    assert_problem(&malformed, 400, "validation_failed");

    // Deny single appends for the caller's own tenant, via a variable; then disable it.
    let tenant_rule = json!({"name": "read-only default tenant", "action": "deny",
        "conditions": [
            {"attribute": "route", "operator": "eq", "value": "/api/v1/events"},
            {"attribute": "tenant_id", "operator": "eq", "value": "${tenant_id}"},
            {"attribute": "tenant_id", "operator": "in", "value": ["default", "other"]}]});
    let tenant_id = create(&server, tenant_rule.clone()).await;
    let refused = server.post_json("/api/v1/events", &event("x")).await;
    assert_problem(&refused, 403, "forbidden");
    assert_eq!(refused.body["policy_id"], tenant_id.as_str());
    let mut disabled = tenant_rule;
    disabled["enabled"] = json!(false);
    let reply = put(&server, &format!("/api/v1/policies/{tenant_id}"), &disabled).await;
    assert_eq!(reply.status, 200);
    let ok = server.post_json("/api/v1/events", &event("x")).await;
    assert_eq!(ok.status, 200, "{}", ok.body);

    let denied = audit(&server, "?action=policy.decision&outcome=denied").await;
    let denied = records(&denied);
    assert_eq!(denied.len(), 2, "{denied:?}");
    assert_eq!(denied[0]["details"]["policy_id"], id.as_str());
    assert_eq!(denied[0]["resource"], "POST /api/v1/events/batch");
    assert_eq!(denied[0]["tenant_id"], "default");
    assert_eq!(denied[0]["actor"], "system");
    assert_eq!(denied[0]["outcome"], "denied");
    assert!(
        denied[0]["request_id"]
            .as_str()
            .is_some_and(|r| !r.is_empty())
    );
    assert_eq!(denied[1]["details"]["policy_id"], tenant_id.as_str());
}

#[tokio::test]
async fn a_deny_all_policy_spares_health_and_the_policy_routes() {
    let server = TestServer::start().await;
    let id = create(
        &server,
        json!({"name": "lock down", "action": "deny", "conditions": []}),
    )
    .await;
    assert_problem(&server.get("/api/v1/stats").await, 403, "forbidden");
    assert_problem(&server.get("/api/v1/audit").await, 403, "forbidden");
    assert_eq!(server.get("/health").await.status, 200);
    assert_eq!(server.get("/health/ready").await.status, 200);
    assert_eq!(server.get("/api/v1/policies").await.status, 200);
    let gone = delete(&server, &format!("/api/v1/policies/{id}")).await;
    assert_eq!(gone.status, 200);
    assert_eq!(server.get("/api/v1/stats").await.status, 200);
}

#[tokio::test]
async fn warnings_let_the_request_through_with_a_header() {
    let server = TestServer::start().await;
    let id = create(
        &server,
        json!({"name": "big reads", "action": "warn",
               "conditions": [{"attribute": "request.limit", "operator": "gt", "value": 5}]}),
    )
    .await;
    let big = server.get("/api/v1/events/query?limit=6").await;
    assert_eq!(big.status, 200, "{}", big.body);
    assert_eq!(big.header("x-policy-warning"), Some(id.as_str()));
    let small = server.get("/api/v1/events/query?limit=5").await;
    assert_eq!(small.status, 200);
    assert_eq!(small.header("x-policy-warning"), None);
    // request.record_count is the query's limit, too: the default warning over 1,000.
    let huge = server.get("/api/v1/events/query?limit=10001").await;
    let warned: Vec<&str> = huge
        .headers
        .get_all("x-policy-warning")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert!(
        warned.contains(&"default-warn-large-operations"),
        "{warned:?}"
    );
    assert!(warned.contains(&id.as_str()), "{warned:?}");

    let warned = audit(&server, "?action=policy.decision&outcome=warned").await;
    let warned = records(&warned);
    assert_eq!(warned.len(), 3, "{warned:?}");
    assert_eq!(warned[0]["details"]["policy_id"], id.as_str());
    assert_eq!(warned[0]["details"]["path"], "/api/v1/events/query");
}

#[tokio::test]
async fn the_large_operation_warning_fires_on_requests_that_are_accepted() {
    let server = TestServer::start().await;
    let batch = |n: usize| {
        let events: Vec<Value> = (0..n).map(|i| event(&format!("e{}", i % 10))).collect();
        json!({ "events": events })
    };
    let warning = "default-warn-large-operations";
    let large = server
        .post_json("/api/v1/events/batch", &batch(1_001))
        .await;
    assert_eq!(large.status, 200, "{}", large.body);
    assert_eq!(large.header("x-policy-warning"), Some(warning));
    let ordinary = server
        .post_json("/api/v1/events/batch", &batch(1_000))
        .await;
    assert_eq!(ordinary.status, 200, "{}", ordinary.body);
    assert_eq!(ordinary.header("x-policy-warning"), None);
    // The largest page a read may ask for is accepted, with the warning.
    let large = server.get("/api/v1/events/query?limit=10000").await;
    assert_eq!(large.status, 200, "{}", large.body);
    assert_eq!(large.body["count"], 2_001);
    assert_eq!(large.header("x-policy-warning"), Some(warning));
    for ordinary in ["/api/v1/events/query", "/api/v1/events/query?limit=1000"] {
        let reply = server.get(ordinary).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        assert_eq!(reply.header("x-policy-warning"), None, "{ordinary}");
    }
    let warned = audit(&server, "?action=policy.decision&outcome=warned").await;
    assert_eq!(records(&warned).len(), 2, "{}", warned.body);
}

#[tokio::test]
async fn a_rate_limit_policy_answers_429_with_retry_after() {
    let server = TestServer::start().await;
    let id = create(
        &server,
        json!({"name": "stats once a minute", "action": "rate_limit", "per_minute": 1,
               "conditions": [{"attribute": "route", "operator": "eq",
                               "value": "/api/v1/stats"}]}),
    )
    .await;
    // With one request a minute, one of three requests is refused even if a minute starts
    // between them.
    let mut refused = None;
    for _ in 0..3 {
        let reply = server.get("/api/v1/stats").await;
        if reply.status == 429 {
            refused = Some(reply);
            break;
        }
        assert_eq!(reply.status, 200, "{}", reply.body);
    }
    let refused = refused.expect("a 429 within three requests");
    assert_problem(&refused, 429, "rate_limited");
    assert_eq!(refused.body["policy_id"], id.as_str());
    let retry: u64 = refused.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    // Other routes are not limited.
    assert_eq!(server.get("/api/v1/event-types").await.status, 200);
    let audited = audit(&server, "?action=policy.decision&outcome=denied").await;
    assert_eq!(records(&audited)[0]["details"]["effect"], "rate_limit");
}

#[tokio::test]
async fn the_audit_log_filters_and_pages() {
    let server = TestServer::start().await;
    for i in 0..3 {
        create(
            &server,
            json!({"name": format!("p{i}"), "action": "warn", "conditions": [
                {"attribute": "method", "operator": "eq", "value": "PATCH"}]}),
        )
        .await;
    }
    let all = audit(&server, "?action=policy.").await;
    assert_eq!(all.body["count"], 3);
    assert_eq!(all.body["has_more"], false);
    assert_eq!(all.body["next_cursor"], Value::Null);
    let ids: Vec<String> = records(&all)
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect();
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(ids, sorted, "oldest first");
    for r in records(&all) {
        assert_eq!(r["action"], "policy.create");
        assert_eq!(r["outcome"], "success");
        assert!(r["timestamp"].as_str().unwrap().ends_with('Z'));
    }

    let first = audit(&server, "?action=policy.create&limit=2").await;
    assert_eq!(first.body["count"], 2);
    assert_eq!(first.body["has_more"], true);
    let cursor = first.body["next_cursor"].as_str().unwrap().to_owned();
    assert_eq!(cursor, ids[1]);
    let second = audit(&server, &format!("?action=policy.create&after={cursor}")).await;
    assert_eq!(records(&second).len(), 1);
    assert_eq!(records(&second)[0]["id"], ids[2].as_str());

    assert_eq!(audit(&server, "?action=policy").await.body["count"], 0);
    assert_eq!(audit(&server, "?actor=system").await.body["count"], 3);
    assert_eq!(audit(&server, "?actor=user:nobody").await.body["count"], 0);
    assert_eq!(audit(&server, "?outcome=failure").await.body["count"], 0);
    assert_eq!(
        audit(&server, "?since=2999-01-01T00:00:00Z").await.body["count"],
        0
    );
    assert_eq!(
        audit(&server, "?until=2000-01-01T00:00:00Z").await.body["count"],
        0
    );
    assert_eq!(
        audit(
            &server,
            "?since=2000-01-01T00:00:00Z&until=2999-01-01T00:00:00Z"
        )
        .await
        .body["count"],
        3
    );
    // Operators (admins of `default`) may read other tenants, or all.
    assert_eq!(audit(&server, "?tenant_id=acme").await.body["count"], 0);
    assert_eq!(audit(&server, "?tenant_id=*").await.body["count"], 3);

    let bad = server
        .get("/api/v1/audit?outcome=meh&since=yesterday&limit=0&after=x")
        .await;
    assert_problem(&bad, 400, "validation_failed");
    let mut bad_fields = fields(&bad);
    bad_fields.sort();
    assert_eq!(bad_fields, ["after", "limit", "outcome", "since"]);
    assert_problem(
        &server.get("/api/v1/audit?limit=1001").await,
        400,
        "validation_failed",
    );
    assert_problem(
        &server.get("/api/v1/audit?colour=red").await,
        400,
        "validation_failed",
    );
}

#[tokio::test]
async fn policies_and_audit_records_survive_a_restart() {
    let server = TestServer::start().await;
    let id = create(
        &server,
        json!({"name": "kept", "action": "deny", "conditions": [
            {"attribute": "route", "operator": "eq", "value": "/api/v1/entities"}]}),
    )
    .await;
    assert_problem(&server.get("/api/v1/entities").await, 403, "forbidden");
    let dir = server.stop().await;
    let server = TestServer::start_in(dir, |_| {}).await;
    assert_eq!(
        server.get(&format!("/api/v1/policies/{id}")).await.status,
        200
    );
    assert_eq!(server.get("/api/v1/policies").await.body["total"], 6);
    assert_problem(&server.get("/api/v1/entities").await, 403, "forbidden");
    let decisions = audit(&server, "?action=policy.decision").await;
    assert_eq!(decisions.body["count"], 2, "{}", decisions.body);
    assert_eq!(
        audit(&server, "?action=policy.create").await.body["count"],
        1
    );
}

#[tokio::test]
async fn with_policies_disabled_nothing_is_enforced_but_management_works() {
    let server = TestServer::start_with(|s| s.policies.enabled = false).await;
    let id = create(
        &server,
        json!({"name": "lock down", "action": "deny", "conditions": []}),
    )
    .await;
    assert_eq!(server.get("/api/v1/stats").await.status, 200);
    let dry = server
        .post_json(
            "/api/v1/policies/evaluate",
            &json!({"context": {"method": "GET"}}),
        )
        .await;
    assert_eq!(dry.body["decided_by"]["id"], id.as_str());
}

#[tokio::test]
async fn the_memory_backend_keeps_policies_and_audit_too() {
    let server =
        TestServer::start_with(|s| s.storage.backend = allsource::settings::Backend::Memory).await;
    assert_eq!(server.get("/api/v1/policies").await.body["total"], 5);
    create(
        &server,
        json!({"name": "x", "action": "warn", "conditions": []}),
    )
    .await;
    let reply = server.get("/api/v1/stats").await;
    assert_eq!(reply.status, 200);
    assert!(reply.header("x-policy-warning").is_some());
    // The audit query is warned about too, before it reads: two warnings.
    assert_eq!(audit(&server, "?outcome=warned").await.body["count"], 2);
}

#[tokio::test]
async fn on_postgres_policies_and_audit_are_shared_by_the_database() {
    let Some(db) = allsource_tests::pg::TestDatabase::create().await else {
        return;
    };
    let url = db.url().to_owned();
    let on_postgres = |url: String| {
        move |s: &mut allsource::Settings| {
            s.storage.backend = allsource::settings::Backend::Postgres;
            s.storage.postgres.url = url;
        }
    };
    let server = TestServer::start_with(on_postgres(url.clone())).await;
    assert_eq!(server.get("/api/v1/policies").await.body["total"], 5);
    let id = create(
        &server,
        json!({"name": "no stats", "action": "deny", "conditions": [
            {"attribute": "route", "operator": "eq", "value": "/api/v1/stats"}]}),
    )
    .await;
    assert_problem(&server.get("/api/v1/stats").await, 403, "forbidden");
    // A second node on the same database: same policies (seeding again changes nothing),
    // same audit log.
    let other = TestServer::start_with(on_postgres(url)).await;
    assert_eq!(other.get("/api/v1/policies").await.body["total"], 6);
    let refused = other.get("/api/v1/stats").await;
    assert_problem(&refused, 403, "forbidden");
    assert_eq!(refused.body["policy_id"], id.as_str());
    let decisions = audit(&other, "?action=policy.decision").await;
    assert_eq!(decisions.body["count"], 2, "{}", decisions.body);
    drop(server);
    drop(other);
    drop(db);
}
