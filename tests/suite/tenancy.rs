//! Tenancy, black-box: tenant CRUD and (de)activation, quota exhaustion and recovery (and the
//! counters surviving a restart), rate-limit exhaustion and recovery (memory and Redis, two
//! nodes sharing one Redis budget), and the two-tenant isolation matrix over every route the
//! router serves (`served_routes`).
//!
//! The real server runs with authentication off (every request is an admin of `default`, the
//! operator). The isolation matrix needs callers of two tenants, so it serves the real router
//! with the real use cases over memory adapters and a mocked authenticator that maps tokens to
//! callers of chosen tenants and roles.

use std::sync::Arc;
use std::time::{Duration, Instant};

use allsource_application::auth::{AuthError, Credential, MockAuthenticate};
use allsource_application::ports::{Clock, EventStore, RateLimiter, StateStore};
use allsource_application::use_cases::{AppendEvents, AppendLimits, ReadEvents, Tenants};
use allsource_application::{Caller, Principal};
use allsource_domain::{RateLimit, Role, TenantId};
use allsource_infrastructure::audit::MemoryAuditLog;
use allsource_infrastructure::rate_limit::{MemoryRateLimiter, RedisRateLimiter};
use allsource_infrastructure::state::MemoryStateStore;
use allsource_infrastructure::{MemoryStore, SystemClock};
use allsource_presentation::{Access, AppState, AuthMode, HttpLimits, served_routes};
use allsource_tests::problem::assert_problem;
use allsource_tests::server::{Reply, TestServer, read};
use serde_json::{Value, json};

async fn send(
    client: &reqwest::Client,
    base: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> Reply {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let mut request = client.request(method, format!("{base}{path}"));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(body.to_string());
    }
    read(request.send().await.expect("request")).await
}

async fn call(server: &TestServer, method: &str, path: &str, body: Option<Value>) -> Reply {
    send(
        &server.client,
        &server.base,
        method,
        path,
        None,
        body.as_ref(),
    )
    .await
}

fn assert_rate_headers(reply: &Reply) {
    for name in [
        "x-ratelimit-limit",
        "x-ratelimit-remaining",
        "x-ratelimit-reset",
    ] {
        assert!(
            reply.header(name).is_some_and(|v| v.parse::<u64>().is_ok()),
            "{name} missing or not a number: {:?}",
            reply.headers
        );
    }
}

fn event(entity: &str, payload: Value) -> Value {
    json!({"entity_id": entity, "event_type": "thing.happened", "payload": payload})
}

#[tokio::test]
async fn tenants_are_created_read_changed_deactivated_and_deleted() {
    let server = TestServer::start().await;

    let list = call(&server, "GET", "/api/v1/tenants", None).await;
    assert_eq!(list.status, 200, "{}", list.body);
    assert_rate_headers(&list);
    assert_eq!(list.body["total"], 1);
    assert_eq!(list.body["tenants"][0]["id"], "default");
    assert_eq!(list.body["tenants"][0]["tier"], "unlimited");
    assert_eq!(
        list.body["tenants"][0]["quotas"]["max_events_per_day"],
        Value::Null
    );

    let created = call(
        &server,
        "POST",
        "/api/v1/tenants",
        Some(json!({"id": "acme", "name": "Acme Corp", "tier": "professional"})),
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.body);
    assert_rate_headers(&created);
    assert_eq!(created.body["id"], "acme");
    assert_eq!(created.body["name"], "Acme Corp");
    assert_eq!(created.body["active"], true);
    assert_eq!(created.body["quotas"]["max_events_per_day"], 1_000_000);
    assert_eq!(created.body["rate_limit"]["requests_per_second"], 500);
    assert!(
        created.body["created_at"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z'))
    );

    let again = call(
        &server,
        "POST",
        "/api/v1/tenants",
        Some(json!({"id": "acme"})),
    )
    .await;
    assert_problem(&again, 409, "conflict");
    let again = call(
        &server,
        "POST",
        "/api/v1/tenants",
        Some(json!({"id": "default"})),
    )
    .await;
    assert_problem(&again, 409, "conflict");
    let bad = call(
        &server,
        "POST",
        "/api/v1/tenants",
        Some(json!({"id": "a b", "tier": "gold"})),
    )
    .await;
    assert_problem(&bad, 400, "validation_failed");
    let fields: Vec<&str> = bad.body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["id", "tier"]);
    let unknown = call(
        &server,
        "POST",
        "/api/v1/tenants",
        Some(json!({"id": "x", "plan": "free"})),
    )
    .await;
    assert_problem(&unknown, 400, "validation_failed");
    let wrong = call(&server, "POST", "/api/v1/tenants", Some(json!({"id": 7}))).await;
    assert_problem(&wrong, 400, "validation_failed");

    let got = call(&server, "GET", "/api/v1/tenants/acme", None).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.body["tier"], "professional");
    assert_problem(
        &call(&server, "GET", "/api/v1/tenants/nobody", None).await,
        404,
        "not_found",
    );
    assert_problem(
        &call(&server, "GET", "/api/v1/tenants/bad%20id", None).await,
        400,
        "validation_failed",
    );

    let updated = call(
        &server,
        "PUT",
        "/api/v1/tenants/acme",
        Some(json!({"tier": "free"})),
    )
    .await;
    assert_eq!(updated.status, 200, "{}", updated.body);
    assert_eq!(updated.body["tier"], "free");
    assert_eq!(updated.body["name"], "Acme Corp");
    assert_eq!(updated.body["quotas"]["max_api_keys"], 2);

    let quotas = call(
        &server,
        "PUT",
        "/api/v1/tenants/acme/quotas",
        Some(json!({"max_api_keys": 7, "max_storage_bytes": null})),
    )
    .await;
    assert_eq!(quotas.status, 200, "{}", quotas.body);
    assert_eq!(quotas.body["quotas"]["max_api_keys"], 7);
    assert_eq!(quotas.body["quotas"]["max_storage_bytes"], Value::Null);
    assert_eq!(quotas.body["quotas"]["max_projections"], 5, "tier's value");
    assert_eq!(
        quotas.body["overrides"],
        json!({"max_api_keys": 7, "max_storage_bytes": null})
    );
    let read_back = call(&server, "GET", "/api/v1/tenants/acme/quotas", None).await;
    assert_eq!(read_back.body, quotas.body);
    let negative = call(
        &server,
        "PUT",
        "/api/v1/tenants/acme/quotas",
        Some(json!({"max_api_keys": -1})),
    )
    .await;
    assert_problem(&negative, 400, "validation_failed");

    let stats = call(&server, "GET", "/api/v1/tenants/acme/stats", None).await;
    assert_eq!(stats.status, 200, "{}", stats.body);
    assert_eq!(stats.body["tenant_id"], "acme");
    assert_eq!(
        stats.body["usage"]["max_api_keys"],
        json!({"used": 0, "limit": 7})
    );
    assert_eq!(stats.body["events"]["total_events"], 0);

    let off = call(&server, "POST", "/api/v1/tenants/acme/deactivate", None).await;
    assert_eq!(off.status, 200, "{}", off.body);
    assert_eq!(off.body["active"], false);
    let on = call(&server, "POST", "/api/v1/tenants/acme/activate", None).await;
    assert_eq!(on.body["active"], true);
    assert_problem(
        &call(&server, "POST", "/api/v1/tenants/default/deactivate", None).await,
        409,
        "conflict",
    );
    // The default policy "no deletion of the default tenant" refuses first (403); without
    // policies the use case refuses too (409, below).
    let refused = call(&server, "DELETE", "/api/v1/tenants/default", None).await;
    assert_problem(&refused, 403, "forbidden");
    assert_eq!(refused.body["policy_id"], "default-protect-default-tenant");
    let server_without_policies = TestServer::start_with(|s| s.policies.enabled = false).await;
    assert_problem(
        &call(
            &server_without_policies,
            "DELETE",
            "/api/v1/tenants/default",
            None,
        )
        .await,
        409,
        "conflict",
    );

    let deleted = call(&server, "DELETE", "/api/v1/tenants/acme", None).await;
    assert_eq!(deleted.status, 200, "{}", deleted.body);
    assert_problem(
        &call(&server, "GET", "/api/v1/tenants/acme", None).await,
        404,
        "not_found",
    );
    assert_problem(
        &call(&server, "DELETE", "/api/v1/tenants/acme", None).await,
        404,
        "not_found",
    );
    // Health is never limited and carries no rate-limit headers.
    let health = server.get("/health").await;
    assert_eq!(health.status, 200);
    assert!(health.header("x-ratelimit-limit").is_none());
}

#[tokio::test]
async fn quotas_refuse_with_429_naming_the_quota_and_recover_when_raised() {
    let server = TestServer::start().await;
    let set = |body: Value| {
        let server = &server;
        async move {
            let r = call(server, "PUT", "/api/v1/tenants/default/quotas", Some(body)).await;
            assert_eq!(r.status, 200, "{}", r.body);
        }
    };
    set(json!({"max_events_per_day": 3})).await;
    let first = json!({"id": "0193a5b4-7c1e-7d2a-9f00-1c2d3e4f5a6b", "entity_id": "e", "event_type": "t", "payload": {"n": 1}});
    let r = server.post_json("/api/v1/events", &first).await;
    assert_eq!(r.status, 200, "{}", r.body);
    // A re-sent duplicate is answered and not counted.
    let r = server.post_json("/api/v1/events", &first).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["duplicate"], true);
    let batch = server
        .post_json(
            "/api/v1/events/batch",
            &json!({"events": [event("e", json!(2)), event("e", json!(3))]}),
        )
        .await;
    assert_eq!(batch.status, 200, "{}", batch.body);
    let refused = server
        .post_json("/api/v1/events", &event("e", json!(4)))
        .await;
    assert_problem(&refused, 429, "quota_exceeded");
    assert_eq!(refused.body["quota"], "max_events_per_day");
    assert_eq!(refused.body["limit"], 3);
    assert_eq!(refused.body["used"], 3);
    assert!(
        refused
            .header("retry-after")
            .and_then(|v| v.parse::<u64>().ok())
            .is_some_and(|s| (1..=86_400).contains(&s))
    );
    assert_rate_headers(&refused);
    // With the quota used up, a retry of a stored event still gets its original receipt.
    let retry = server.post_json("/api/v1/events", &first).await;
    assert_eq!(retry.status, 200, "{}", retry.body);
    assert_eq!(retry.body["duplicate"], true);
    assert_eq!(retry.body["version"], 1);
    // Nothing was appended by the refused requests.
    let stream = server.get("/api/v1/entities/e/events").await;
    assert_eq!(stream.body["count"], 3);

    set(json!({"max_events_per_day": 10})).await;
    let recovered = server
        .post_json("/api/v1/events", &event("e", json!(4)))
        .await;
    assert_eq!(recovered.status, 200, "{}", recovered.body);

    // Storage bytes.
    let stats = server.get("/api/v1/tenants/default/stats").await;
    let used = stats.body["usage"]["max_storage_bytes"]["used"]
        .as_u64()
        .unwrap();
    assert_eq!(used, "{\"n\":1}".len() as u64 + 3);
    set(json!({"max_storage_bytes": used + 5})).await;
    let big = server
        .post_json("/api/v1/events", &event("e", json!("0123456789")))
        .await;
    assert_problem(&big, 429, "quota_exceeded");
    assert_eq!(big.body["quota"], "max_storage_bytes");
    let small = server
        .post_json("/api/v1/events", &event("e", json!(5)))
        .await;
    assert_eq!(small.status, 200, "{}", small.body);

    // Queries per hour: every GET that reads counts.
    set(json!({"max_queries_per_hour": 0})).await;
    let query = server.get("/api/v1/events/query").await;
    assert_problem(&query, 429, "quota_exceeded");
    assert_eq!(query.body["quota"], "max_queries_per_hour");
    set(json!({})).await;
    assert_eq!(server.get("/api/v1/events/query").await.status, 200);

    // The counters survive a restart.
    let dir = server.stop().await;
    let server = TestServer::start_in(dir, |_| {}).await;
    let stats = server.get("/api/v1/tenants/default/stats").await;
    assert_eq!(stats.status, 200, "{}", stats.body);
    assert_eq!(stats.body["usage"]["max_events_per_day"]["used"], 5);
    assert_eq!(stats.body["usage"]["max_storage_bytes"]["used"], used + 1);
    assert_eq!(stats.body["events"]["total_events"], 5);
}

/// Sends `n` reads and returns (allowed, the first refusal).
async fn hammer(server: &TestServer, n: usize) -> (usize, Option<Reply>) {
    let mut allowed = 0;
    let mut refusal = None;
    for _ in 0..n {
        let r = server.get("/api/v1/stats").await;
        assert_rate_headers(&r);
        match r.status {
            200 => allowed += 1,
            429 => {
                refusal.get_or_insert(r);
            }
            other => panic!("unexpected {other}: {}", r.body),
        }
    }
    (allowed, refusal)
}

#[tokio::test]
async fn the_rate_limit_refuses_with_retry_after_and_recovers() {
    let server = TestServer::start().await;
    let r = call(
        &server,
        "PUT",
        "/api/v1/tenants/default",
        Some(json!({"tier": "free"})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let (allowed, refusal) = hammer(&server, 40).await;
    assert!(
        (20..=25).contains(&allowed),
        "free tier burst is 20: {allowed}"
    );
    let refusal = refusal.expect("a refusal");
    assert_problem(&refusal, 429, "rate_limited");
    assert_eq!(refusal.header("x-ratelimit-limit"), Some("20"));
    assert_eq!(refusal.header("x-ratelimit-remaining"), Some("0"));
    let retry: u64 = refusal
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .expect("Retry-After");
    assert!((1..=2).contains(&retry));
    tokio::time::sleep(Duration::from_secs(retry)).await;
    let again = server.get("/api/v1/stats").await;
    assert_eq!(again.status, 200, "{}", again.body);
    // Limiting off: no headers, no refusals.
    let off = TestServer::start_with(|s| s.rate_limit.enabled = false).await;
    let r = off.get("/api/v1/stats").await;
    assert_eq!(r.status, 200);
    assert!(r.header("x-ratelimit-limit").is_none());
}

#[tokio::test]
async fn redis_buckets_are_shared_by_limiter_instances() {
    let Some(url) = allsource_tests::redis::url().await else {
        return;
    };
    let prefix = format!("allsource:test:{}:", uuid::Uuid::new_v4().simple());
    let a = RedisRateLimiter::with_prefix(&url, &prefix).unwrap();
    let b = RedisRateLimiter::with_prefix(&url, &prefix).unwrap();
    let limit = RateLimit {
        per_second: 1,
        burst: 4,
    };
    let mut allowed = 0;
    for i in 0..8 {
        let limiter = if i % 2 == 0 { &a } else { &b };
        let d = limiter.check("t:acme", limit).await.expect("redis answers");
        assert_eq!(d.limit, 4);
        if d.allowed {
            allowed += 1;
        } else {
            assert_eq!(d.retry_after_secs, 1);
            assert_eq!(d.remaining, 0);
        }
    }
    assert!(
        (4..=5).contains(&allowed),
        "one budget of 4 for both: {allowed}"
    );
    assert!(
        a.check("t:other", limit).await.unwrap().allowed,
        "keys are apart"
    );
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    assert!(b.check("t:acme", limit).await.unwrap().allowed, "refilled");

    // Redis away: an error (the HTTP layer fails open), quickly.
    let gone = RedisRateLimiter::with_prefix("redis://127.0.0.1:1", &prefix).unwrap();
    let started = Instant::now();
    assert!(gone.check("t:acme", limit).await.is_err());
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(gone.backend(), "redis");
}

#[tokio::test]
async fn two_nodes_on_one_redis_share_the_tenants_budget() {
    let Some(url) = allsource_tests::redis::url().await else {
        return;
    };
    let redis = |s: &mut allsource::Settings| {
        s.rate_limit.backend = allsource::settings::RateLimitBackend::Redis;
        s.rate_limit.redis_url = url.clone();
    };
    let (one, two) = (
        TestServer::start_with(redis).await,
        TestServer::start_with(redis).await,
    );
    // Both nodes' tenant `default` on the free tier (each node has its own data dir here).
    for server in [&one, &two] {
        let r = call(
            server,
            "PUT",
            "/api/v1/tenants/default",
            Some(json!({"tier": "free"})),
        )
        .await;
        assert_eq!(r.status, 200);
    }
    // Let the shared bucket fill up (burst 20 at 10/s).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let started = Instant::now();
    let (a, _) = hammer(&one, 15).await;
    let (b, refusal) = hammer(&two, 15).await;
    let refill = (started.elapsed().as_secs_f64() * 10.0).ceil() as usize;
    assert!(
        a + b <= 20 + refill + 1,
        "one shared budget of 20 (+{refill}): {a} + {b}"
    );
    // Node two made 15 requests, under its burst of 20: only a shared bucket refuses it.
    assert_problem(&refusal.expect("node two refuses"), 429, "rate_limited");
    // Redis unreachable: requests pass (fail open).
    let lost = TestServer::start_with(|s| {
        s.rate_limit.backend = allsource::settings::RateLimitBackend::Redis;
        s.rate_limit.redis_url = "redis://127.0.0.1:1".into();
    })
    .await;
    let r = lost.get("/api/v1/stats").await;
    assert_eq!(r.status, 200, "{}", r.body);
}

#[tokio::test]
async fn settings_of_the_rate_limit_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("allsource.toml");
    std::fs::write(&file, "[rate_limit]\nbackend = \"memcached\"\n").unwrap();
    let dev = allsource::Overrides {
        dev: true,
        ..allsource::Overrides::default()
    };
    let e = allsource::Settings::load(Some(&file), dev)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("rate_limit.backend") && e.contains("memory, redis"),
        "{e}"
    );
    let mut settings = allsource::Settings::for_tests(dir.path());
    settings.rate_limit.backend = allsource::settings::RateLimitBackend::Redis;
    settings.rate_limit.redis_url = "http://localhost".into();
    let e = settings.validate().unwrap_err().to_string();
    assert!(e.contains("rate_limit.redis_url"), "{e}");
}

// ---------------------------------------------------------------------------------------------
// Two tenants × every route

/// Callers by token: the operator, tenant `acme` (A) and tenant `globex` (B).
fn caller_for(token: &str) -> Result<Caller, AuthError> {
    let user = |tenant: &str, role: Role| {
        Caller::authenticated(
            TenantId::parse(tenant).unwrap(),
            role,
            Principal::User {
                user_id: format!("{tenant}-{role}"),
                username: format!("{tenant}-{role}"),
            },
        )
    };
    Ok(match token {
        "op" => user("default", Role::Admin),
        "a-admin" => user("acme", Role::Admin),
        "a-reader" => user("acme", Role::Readonly),
        "b-admin" => user("globex", Role::Admin),
        "b-dev" => user("globex", Role::Developer),
        "b-key" => Caller::authenticated(
            TenantId::parse("globex").unwrap(),
            Role::ServiceAccount,
            Principal::ApiKey {
                key_id: "kb".into(),
                name: "ci".into(),
                owner_user_id: "globex-admin".into(),
            },
        ),
        _ => return Err(AuthError::Unauthorized("unknown token".into())),
    })
}

struct Matrix {
    base: String,
    client: reqwest::Client,
}

impl Matrix {
    async fn start() -> Self {
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let feed = Arc::new(allsource_application::subscriptions::CommitFeed::default());
        let store: Arc<dyn EventStore> =
            Arc::new(MemoryStore::new(clock.clone()).with_feed(feed.clone()));
        let state: Arc<dyn StateStore> = Arc::new(MemoryStateStore::new());
        let audit: Arc<dyn allsource_application::ports::AuditLog> =
            Arc::new(MemoryAuditLog::new());
        let reads = ReadEvents::new(store.clone());
        let tenants = Tenants::new(state.clone(), audit.clone(), reads.clone(), clock.clone());
        // Every other feature, real and over the same memory stores, so that the matrix walks
        // working routes.
        let engine = Arc::new(allsource_application::projections::ProjectionEngine::new(
            store.clone(),
            state.clone(),
            100,
        ));
        let snapshots = allsource_application::use_cases::Snapshots::new(
            store.clone(),
            state.clone(),
            clock.clone(),
            allsource_application::use_cases::SnapshotPolicy {
                every_n_events: 0,
                keep_per_entity: 3,
            },
        );
        let mut auth = MockAuthenticate::new();
        auth.expect_authenticate().returning(|credential| {
            let (Credential::Bearer(token) | Credential::ApiKey(token)) = credential;
            caller_for(&token)
        });
        let limiter: Arc<dyn RateLimiter> = Arc::new(MemoryRateLimiter::new(clock.clone()));
        let consumer_groups =
            allsource_application::use_cases::consumer_groups::ConsumerGroups::new(
                store.clone(),
                Arc::new(allsource_application::subscriptions::CommitFeed::default()),
                state.clone(),
                audit.clone(),
                clock.clone(),
            );
        let webhook_store = store.clone();
        let analytics_store = store.clone();
        let pipelines = allsource_application::pipelines::Pipelines::new(
            allsource_application::pipelines::PipelineDeps {
                store: store.clone(),
                feed: feed.clone(),
                state: state.clone(),
                append: AppendEvents::new(store.clone(), AppendLimits::default())
                    .with_guard(Arc::new(tenants.clone())),
                lookups: Arc::new(allsource_application::pipelines::ReadLookups::new(
                    reads.clone(),
                    allsource_application::projections::Projections::new(
                        engine.clone(),
                        Arc::new(tenants.clone()),
                    ),
                )),
                quotas: Arc::new(tenants.clone()),
                audit: audit.clone(),
                tenants: Arc::new(tenants.clone()),
            },
            allsource_application::pipelines::PipelineConfig::default(),
        );
        let router = allsource_presentation::router(
            AppState::from(allsource_presentation::AppServices {
                append: AppendEvents::new(store.clone(), AppendLimits::default())
                    .with_guard(Arc::new(tenants.clone())),
                reads,
                health: allsource_application::use_cases::Health::new("test", store.clone()),
                consumers: allsource_application::use_cases::Consumers::new(
                    allsource_application::use_cases::ConsumersDeps {
                        store,
                        state: state.clone(),
                        feed,
                        audit: audit.clone(),
                        clock: clock.clone(),
                        quotas: Arc::new(tenants.clone()),
                    },
                ),
                auth: AuthMode::Enabled(Arc::new(auth)),
                identity: None,
                projections: allsource_application::projections::Projections::new(
                    engine.clone(),
                    Arc::new(tenants.clone()),
                ),
                replays: allsource_application::projections::ReplayJobs::new(engine),
                schemas: Arc::new(allsource_application::use_cases::SchemaRegistry::new(
                    state.clone(),
                    Arc::new(allsource_infrastructure::JsonSchemaValidator::new()),
                    clock.clone(),
                    allsource_application::use_cases::SchemaSettings::default(),
                )),
                snapshots,
                compaction: allsource_application::use_cases::Compaction::new(Arc::new(
                    allsource_application::ports::NoCompaction::new("memory"),
                )),
                audit: allsource_application::use_cases::AuditTrail::new(audit.clone()),
                policies: allsource_application::use_cases::Policies::new(
                    state.clone(),
                    audit.clone(),
                    clock.clone(),
                    true,
                ),
                admission: allsource_application::use_cases::Admission::for_tenants(
                    Some(tenants.clone()),
                    Some(limiter),
                ),
                webhooks: allsource_application::webhooks::Webhooks::new(
                    allsource_application::webhooks::WebhookDeps {
                        store: webhook_store,
                        feed: Arc::new(allsource_application::subscriptions::CommitFeed::default()),
                        state: state.clone(),
                        sender: Arc::new(
                            allsource_infrastructure::webhooks::HttpWebhookSender::new(
                                Default::default(),
                            )
                            .unwrap(),
                        ),
                        encoder: Arc::new(allsource_presentation::handlers::webhooks::EventJson),
                        quotas: Arc::new(tenants.clone()),
                        audit: audit.clone(),
                        tenants: Arc::new(tenants.clone()),
                    },
                    allsource_application::webhooks::WebhookConfig::default(),
                ),
                tenants: Some(tenants),
                consumer_groups,
                pipelines,
                analytics: allsource_application::analytics::Analytics::new(
                    Arc::new(
                        allsource_infrastructure::sql::DataFusionEngine::new(
                            analytics_store,
                            None,
                            allsource_infrastructure::sql::SqlEngineConfig::default(),
                        )
                        .expect("engine"),
                    ),
                    clock.clone(),
                    allsource_application::analytics::AnalyticsConfig::default(),
                ),
                backups: allsource_application::use_cases::Backups::disabled("no backup target"),
            }),
            HttpLimits::default(),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(allsource_presentation::serve(
            listener,
            router,
            std::future::pending(),
        ));
        Self {
            base,
            client: reqwest::Client::new(),
        }
    }

    async fn send(&self, token: &str, method: &str, path: &str, body: Option<Value>) -> Reply {
        send(
            &self.client,
            &self.base,
            method,
            path,
            Some(token),
            body.as_ref(),
        )
        .await
    }
}

/// Every route the router serves: method, path pattern, access. Streams that stay open
/// (WebSocket, SSE) have their own isolation tests in `realtime`.
fn served() -> Vec<(&'static str, &'static str, Access)> {
    served_routes()
        .iter()
        .filter(|r| !r.long_lived)
        .map(|r| (r.verb.as_str(), r.path, r.access))
        .collect()
}

/// Tenant A's secrets: never in any answer to tenant B.
const A_TYPE: &str = "acmeonly.placed";
const A_SECRET: &str = "acme-payload-secret";

/// A route's path with tenant A's identifiers in its parameters.
fn with_a_ids(pattern: &str, a_event: &str) -> String {
    let mut path = pattern
        .replace("{event_id}", a_event)
        .replace("{entity_id}", "order-1")
        .replace("{id}", "acme")
        .replace("{tenant_id}", "acme");
    // Parameters of routes added later: any value.
    while let (Some(open), Some(close)) = (path.find('{'), path.find('}')) {
        path.replace_range(open..=close, "x");
    }
    path
}

/// A body that would do harm to A if tenancy leaked.
fn body_for(method: &str, pattern: &str) -> Option<Value> {
    match (method, pattern) {
        ("POST", "/api/v1/events") => Some(event("order-1", json!({"b": "writes"}))),
        ("POST", "/api/v1/events/batch") => {
            Some(json!({"events": [event("order-1", json!({"b": "writes"}))]}))
        }
        ("POST", "/api/v1/tenants") => Some(json!({"id": "acme", "tier": "unlimited"})),
        ("PUT", "/api/v1/tenants/{id}") => Some(json!({"tier": "unlimited", "name": "pwned"})),
        ("PUT", "/api/v1/tenants/{id}/quotas") => Some(json!({"max_events_per_day": 1})),
        ("POST" | "PUT" | "PATCH", _) => Some(json!({})),
        _ => None,
    }
}

#[tokio::test]
async fn two_tenants_across_every_route_see_and_touch_nothing_of_each_other() {
    let m = Matrix::start().await;
    for (id, tier) in [("acme", "professional"), ("globex", "professional")] {
        let r = m
            .send(
                "op",
                "POST",
                "/api/v1/tenants",
                Some(json!({"id": id, "tier": tier})),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.body);
    }
    let a_event = m
        .send(
            "a-admin",
            "POST",
            "/api/v1/events",
            Some(json!({"entity_id": "order-1", "event_type": A_TYPE, "payload": {"note": A_SECRET}})),
        )
        .await;
    assert_eq!(a_event.status, 200, "{}", a_event.body);
    let a_event_id = a_event.body["event_id"].as_str().unwrap().to_owned();
    let a_before = m.send("op", "GET", "/api/v1/tenants/acme", None).await.body;

    for token in ["b-admin", "b-dev", "b-key"] {
        for (method, pattern, access) in &served() {
            let path = with_a_ids(pattern, &a_event_id);
            let r = m
                .send(token, method, &path, body_for(method, pattern))
                .await;
            let what = format!("{token} {method} {path} -> {} {}", r.status, r.body);
            let text = r.body.to_string();
            assert!(!text.contains(A_SECRET), "A's payload leaked: {what}");
            assert!(!text.contains(A_TYPE), "A's event type leaked: {what}");
            assert!(r.status < 500, "{what}");
            if *access != Access::Public {
                assert!(r.header("x-ratelimit-limit").is_some(), "{what}");
            }
            let success = (200..300).contains(&r.status);
            if pattern.contains("{id}") || pattern.contains("{event_id}") {
                assert!(!success, "B reached A's resource: {what}");
            }
            if pattern.contains("{entity_id}") && success {
                // A's stream is invisible: B's own `order-1` (written by this matrix) only.
                for e in r.body["events"].as_array().into_iter().flatten() {
                    assert_ne!(e["tenant_id"], "acme", "{what}");
                }
                assert_ne!(r.body["current_state"]["note"], A_SECRET, "{what}");
            }
            if (*method, *pattern) == ("POST", "/api/v1/tenants") {
                assert_eq!(r.status, 403, "{what}");
            }
        }
    }

    // A is untouched: one event in its stream, tenant record unchanged, stats its own.
    let stream = m
        .send("a-reader", "GET", "/api/v1/entities/order-1/events", None)
        .await;
    assert_eq!(stream.body["count"], 1, "{}", stream.body);
    assert_eq!(stream.body["events"][0]["payload"]["note"], A_SECRET);
    let a_after = m.send("op", "GET", "/api/v1/tenants/acme", None).await.body;
    assert_eq!(a_before, a_after);
    let a_stats = m.send("a-reader", "GET", "/api/v1/stats", None).await;
    assert_eq!(a_stats.body["total_events"], 1);
    let a_tenant_stats = m
        .send("a-reader", "GET", "/api/v1/tenants/acme/stats", None)
        .await;
    assert_eq!(a_tenant_stats.status, 200, "{}", a_tenant_stats.body);
    assert_eq!(
        a_tenant_stats.body["usage"]["max_events_per_day"]["used"],
        1
    );
    // B wrote its own events (single and batch, three callers) and sees only those.
    let b_stats = m.send("b-admin", "GET", "/api/v1/stats", None).await;
    assert_eq!(b_stats.body["total_events"], 6, "{}", b_stats.body);
    let b_list = m.send("b-admin", "GET", "/api/v1/tenants", None).await;
    assert_eq!(b_list.body["total"], 1);
    assert_eq!(b_list.body["tenants"][0]["id"], "globex");
    // An admin of A reads its own tenant but changes nothing, even its own.
    let own = m.send("a-admin", "GET", "/api/v1/tenants/acme", None).await;
    assert_eq!(own.status, 200);
    let raise = m
        .send(
            "a-admin",
            "PUT",
            "/api/v1/tenants/acme/quotas",
            Some(json!({"max_events_per_day": null})),
        )
        .await;
    assert_problem(&raise, 403, "forbidden");
    // Readers may not manage tenants at all.
    let reader = m.send("a-reader", "GET", "/api/v1/tenants", None).await;
    assert_problem(&reader, 403, "forbidden");
}

#[tokio::test]
async fn a_deactivated_tenants_credentials_get_403_on_every_route_until_reactivated() {
    let m = Matrix::start().await;
    for id in ["acme", "globex"] {
        let r = m
            .send("op", "POST", "/api/v1/tenants", Some(json!({"id": id})))
            .await;
        assert_eq!(r.status, 201, "{}", r.body);
    }
    let off = m
        .send("op", "POST", "/api/v1/tenants/globex/deactivate", None)
        .await;
    assert_eq!(off.status, 200, "{}", off.body);
    for token in ["b-admin", "b-key"] {
        for (method, pattern, access) in &served() {
            if *access == Access::Public {
                continue;
            }
            let path = with_a_ids(pattern, "0193a5b4-7c1e-7d2a-9f00-1c2d3e4f5a6b");
            let r = m
                .send(token, method, &path, body_for(method, pattern))
                .await;
            assert_problem(&r, 403, "forbidden");
            assert!(
                r.body["detail"].as_str().unwrap().contains("deactivated"),
                "{}",
                r.body
            );
        }
    }
    // Other tenants are unaffected.
    let a = m.send("a-admin", "GET", "/api/v1/stats", None).await;
    assert_eq!(a.status, 200);
    let on = m
        .send("op", "POST", "/api/v1/tenants/globex/activate", None)
        .await;
    assert_eq!(on.status, 200);
    let back = m.send("b-key", "GET", "/api/v1/stats", None).await;
    assert_eq!(back.status, 200, "{}", back.body);
    // Deleted: the tenant's credentials are refused too.
    let gone = m.send("op", "DELETE", "/api/v1/tenants/globex", None).await;
    assert_eq!(gone.status, 200);
    let r = m.send("b-admin", "GET", "/api/v1/stats", None).await;
    assert_problem(&r, 403, "forbidden");
    // Unknown tokens are 401 before any tenancy check.
    let r = m.send("nobody", "GET", "/api/v1/stats", None).await;
    assert_problem(&r, 401, "unauthorized");
}

#[tokio::test]
async fn api_keys_have_a_bucket_of_their_own_inside_the_tenants() {
    let m = Matrix::start().await;
    let r = m
        .send(
            "op",
            "POST",
            "/api/v1/tenants",
            Some(json!({"id": "globex", "tier": "free"})),
        )
        .await;
    assert_eq!(r.status, 201);
    // Free: tenant bucket 20, a key's bucket 10.
    let mut key_allowed = 0;
    let started = Instant::now();
    for _ in 0..15 {
        if m.send("b-key", "GET", "/api/v1/stats", None).await.status == 200 {
            key_allowed += 1;
        }
    }
    // A key refills at 5/s.
    let refill = (started.elapsed().as_secs_f64() * 5.0).ceil() as usize;
    assert!(
        (10..=11 + refill).contains(&key_allowed) && key_allowed < 15,
        "{key_allowed} (+{refill})"
    );
    let user = m.send("b-admin", "GET", "/api/v1/stats", None).await;
    assert_eq!(user.status, 200, "the tenant's budget is not spent yet");
    let remaining: u64 = user
        .header("x-ratelimit-remaining")
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        remaining < 10,
        "the key's requests came out of the tenant's bucket: {remaining}"
    );
}

#[tokio::test]
async fn reserved_tenant_ids_are_refused_naming_the_field() {
    let server = TestServer::start().await;
    for reserved in ["_identity", "_system", "_anything"] {
        let refused = call(
            &server,
            "POST",
            "/api/v1/tenants",
            Some(json!({"id": reserved})),
        )
        .await;
        assert_problem(&refused, 400, "validation_failed");
        assert_eq!(refused.body["errors"][0]["field"], "id", "{}", refused.body);
        let listed = call(&server, "GET", "/api/v1/tenants", None).await;
        assert!(
            !listed.body.to_string().contains(reserved),
            "{}",
            listed.body
        );
    }
}

#[tokio::test]
async fn a_deleted_tenant_takes_its_identities_and_a_recreated_one_starts_empty() {
    use allsource_tests::server::{ADMIN_PASSWORD, ADMIN_USERNAME};
    let server = TestServer::start_with_auth(|_| {}).await;
    let as_user = |method: &'static str, path: String, token: String, body: Option<Value>| {
        let server = &server;
        async move {
            send(
                &server.client,
                &server.base,
                method,
                &path,
                Some(&token),
                body.as_ref(),
            )
            .await
        }
    };
    let login = |username: &'static str, password: &'static str| {
        let server = &server;
        async move {
            let body = json!({"username": username, "password": password});
            send(
                &server.client,
                &server.base,
                "POST",
                "/api/v1/auth/login",
                None,
                Some(&body),
            )
            .await
        }
    };
    let root = login(ADMIN_USERNAME, ADMIN_PASSWORD).await.body["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let tenant = json!({"id": "acme"});
    let created = as_user(
        "POST",
        "/api/v1/tenants".into(),
        root.clone(),
        Some(tenant.clone()),
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let carol = json!({"username": "carol", "password": "carol password 123", "role": "admin",
                       "tenant_id": "acme"});
    let user = as_user(
        "POST",
        "/api/v1/auth/users".into(),
        root.clone(),
        Some(carol.clone()),
    )
    .await;
    assert_eq!(user.status, 201, "{}", user.body);
    let session = login("carol", "carol password 123").await;
    assert_eq!(session.status, 200, "{}", session.body);
    let token = session.body["access_token"].as_str().unwrap().to_owned();
    let refresh = session.body["refresh_token"].as_str().unwrap().to_owned();
    let key = as_user(
        "POST",
        "/api/v1/auth/api-keys".into(),
        token.clone(),
        Some(json!({"name": "ci"})),
    )
    .await;
    assert_eq!(key.status, 201, "{}", key.body);
    let key = key.body["key"].as_str().unwrap().to_owned();
    let me = |credential: String| as_user("GET", "/api/v1/auth/me".into(), credential, None);
    assert_eq!(me(token.clone()).await.status, 200);
    assert_eq!(me(key.clone()).await.status, 200);

    let deleted = as_user("DELETE", "/api/v1/tenants/acme".into(), root.clone(), None).await;
    assert_eq!(deleted.status, 200, "{}", deleted.body);
    // Re-created with the same id: nothing of the old tenant's identities works.
    let again = as_user("POST", "/api/v1/tenants".into(), root.clone(), Some(tenant)).await;
    assert_eq!(again.status, 201, "{}", again.body);
    assert_problem(&me(token.clone()).await, 401, "unauthorized");
    assert_problem(&me(key.clone()).await, 401, "unauthorized");
    assert_problem(
        &login("carol", "carol password 123").await,
        401,
        "unauthorized",
    );
    let refreshed = send(
        &server.client,
        &server.base,
        "POST",
        "/api/v1/auth/refresh",
        None,
        Some(&json!({"refresh_token": refresh})),
    )
    .await;
    assert_problem(&refreshed, 401, "unauthorized");
    // The username is free again, and the new tenant's first user starts afresh.
    let user = as_user("POST", "/api/v1/auth/users".into(), root, Some(carol)).await;
    assert_eq!(user.status, 201, "{}", user.body);
}
