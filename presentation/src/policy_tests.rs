//! Router-level tests of the policy layer, the policy and audit routes, and the audit records
//! of refusals, with callers of every kind (through `MockAuthenticate`, or an outer
//! `Extension(Caller)` on routes with the patterns of the tenant and user routes).

use std::sync::{Arc, Mutex};

use allsource_application::auth::{AuthError, Credential, MockAuthenticate};
use allsource_application::ports::clock::MockClock;
use allsource_application::ports::{
    AuditOutcome, AuditRecord, EventStore, MockAuditLog, MockEventStore, MockStateStore,
    NoCompaction, StateEntry, StateError,
};
use allsource_application::use_cases::{
    AppendEvents, AppendLimits, AuditTrail, Policies, ReadEvents,
};
use allsource_application::{Caller, Principal};
use allsource_domain::policy::{self, Policy};
use allsource_domain::{Role, TenantId};
use axum::body::{Body, Bytes, to_bytes};
use axum::http::{Request, StatusCode};
use axum::routing::{delete, post};
use axum::{Extension, Router, middleware};
use chrono::{TimeZone, Utc};
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::{AppState, AuthMode, HttpLimits, router};

type Recorded = Arc<Mutex<Vec<AuditRecord>>>;

fn recording_audit() -> (Arc<MockAuditLog>, Recorded) {
    let recorded: Recorded = Arc::default();
    let mut log = MockAuditLog::new();
    let sink = Arc::clone(&recorded);
    log.expect_record().returning(move |r| {
        sink.lock().unwrap().push(r);
        Ok(())
    });
    log.expect_query().returning(|_| Ok(vec![]));
    (Arc::new(log), recorded)
}

fn stored(policies: &[Policy]) -> Vec<(String, StateEntry)> {
    policies
        .iter()
        .map(|p| {
            (
                p.id.clone(),
                StateEntry {
                    value: serde_json::to_value(p).unwrap(),
                    version: 1,
                },
            )
        })
        .collect()
}

fn engine(policies: Vec<Policy>, audit: Arc<MockAuditLog>) -> Policies {
    let mut state = MockStateStore::new();
    let listed = stored(&policies);
    state
        .expect_list()
        .returning(move |_, _, _, _, _| Ok(listed.clone()));
    state.expect_put().never();
    let mut clock = MockClock::new();
    // A fixed instant, 10 s into a minute: rate windows never roll over during a test.
    clock
        .expect_now()
        .returning(|| Utc.timestamp_opt(1_764_000_010, 0).unwrap());
    Policies::new(Arc::new(state), audit, Arc::new(clock), true)
}

fn user(tenant: &str, role: Role, id: &str) -> Caller {
    Caller::authenticated(
        TenantId::parse(tenant).unwrap(),
        role,
        Principal::User {
            user_id: id.into(),
            username: id.into(),
        },
    )
}

/// The full router with authentication by token: `root` (admin of default), `acme-admin`,
/// `dev` (developer of acme); any other token is rejected.
fn authenticated_app() -> (Router, Recorded) {
    let mut auth = MockAuthenticate::new();
    auth.expect_authenticate().returning(|credential| {
        let Credential::Bearer(token) = credential else {
            return Err(AuthError::Unauthorized("bad".into()));
        };
        match token.as_str() {
            "root" => Ok(user("default", Role::Admin, "root")),
            "acme-admin" => Ok(user("acme", Role::Admin, "ann")),
            "dev" => Ok(user("acme", Role::Developer, "dev")),
            "inactive" => Err(AuthError::Forbidden("the tenant is deactivated".into())),
            _ => Err(AuthError::Unauthorized("invalid or expired token".into())),
        }
    });
    let (audit, recorded) = recording_audit();
    let store: Arc<dyn EventStore> = Arc::new(MockEventStore::new());
    let (projections, replays) = crate::tests::idle_projections(&store);
    let consumers = crate::tests::idle_consumers(&store);
    let app = router(
        AppState::from(crate::AppServices {
            append: AppendEvents::new(Arc::clone(&store), AppendLimits::default()),
            reads: ReadEvents::new(Arc::clone(&store)),
            webhooks: crate::tests::idle_webhooks(&store),
            pipelines: crate::tests::idle_pipelines(&store),
            analytics: crate::tests::idle_analytics(),
            backups: allsource_application::use_cases::Backups::disabled(
                "no backup target in these tests",
            ),
            snapshots: crate::tests::quiet_snapshots(Arc::clone(&store)),
            health: allsource_application::use_cases::Health::new("0", store),
            auth: AuthMode::Enabled(Arc::new(auth)),
            projections,
            replays,
            identity: None,
            compaction: allsource_application::use_cases::Compaction::new(Arc::new(
                NoCompaction::new("memory"),
            )),
            admission: allsource_application::use_cases::Admission::off(),
            tenants: None,
            consumer_groups: crate::tests::idle_consumer_groups(),
            schemas: crate::tests::no_schemas(),
            audit: AuditTrail::new(audit.clone()),
            policies: engine(policy::defaults(), audit),
            consumers,
        }),
        HttpLimits::default(),
    );
    (app, recorded)
}

async fn send(app: Router, request: Request<Body>) -> (StatusCode, axum::http::HeaderMap, Value) {
    let response = app.oneshot(request).await.expect("infallible");
    let status = response.status();
    let headers = response.headers().clone();
    let raw = to_bytes(response.into_body(), usize::MAX).await.unwrap();
    let body = serde_json::from_slice(&raw).unwrap_or(Value::Null);
    (status, headers, body)
}

fn with_token(method: &str, path: &str, token: Option<&str>, body: Option<Value>) -> Request<Body> {
    let mut builder = Request::builder()
        .method(method)
        .uri(path)
        .header("x-request-id", "req-7");
    if let Some(token) = token {
        builder = builder.header("authorization", format!("Bearer {token}"));
    }
    match body {
        Some(body) => builder
            .header("content-type", "application/json")
            .body(Body::from(body.to_string())),
        None => builder.body(Body::empty()),
    }
    .unwrap()
}

#[tokio::test]
async fn a_403_from_the_role_table_is_audited_as_access_denied() {
    let (app, recorded) = authenticated_app();
    let (status, _, body) = send(
        app,
        with_token("GET", "/api/v1/policies", Some("dev"), None),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["required_permission"], "admin");
    let records = recorded.lock().unwrap().clone();
    assert_eq!(records.len(), 1);
    let r = &records[0];
    assert_eq!(r.action, "access.denied");
    assert_eq!(r.outcome, AuditOutcome::Denied);
    assert_eq!(r.tenant_id, "acme");
    assert_eq!(r.actor, "user:dev");
    assert_eq!(r.resource.as_deref(), Some("GET /api/v1/policies"));
    assert_eq!(r.request_id.as_deref(), Some("req-7"));
    assert_eq!(r.details["role"], "developer");
}

#[tokio::test]
async fn a_rejected_credential_is_audited_and_a_missing_one_is_not() {
    let (app, recorded) = authenticated_app();
    let (status, _, _) = send(
        app.clone(),
        with_token("GET", "/api/v1/stats", Some("forged"), None),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _, _) = send(app.clone(), with_token("GET", "/api/v1/stats", None, None)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _, _) = send(
        app,
        with_token("GET", "/api/v1/stats", Some("inactive"), None),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let records = recorded.lock().unwrap().clone();
    assert_eq!(records.len(), 2, "{records:?}");
    assert_eq!(records[1].action, "auth.rejected");
    assert_eq!(records[1].outcome, AuditOutcome::Denied);
    assert_eq!(records[1].tenant_id, "default");
    assert_eq!(records[0].action, "auth.rejected");
    assert_eq!(records[0].actor, "anonymous");
    assert_eq!(records[0].outcome, AuditOutcome::Failure);
    assert_eq!(records[0].details["reason"], "invalid or expired token");
}

#[tokio::test]
async fn tenant_admins_read_policies_but_only_operators_change_them() {
    let (app, _) = authenticated_app();
    let policy = json!({"name": "x", "action": "deny", "conditions": []});
    let (status, _, body) = send(
        app.clone(),
        with_token("GET", "/api/v1/policies", Some("acme-admin"), None),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["total"], 5);
    let (status, _, body) = send(
        app.clone(),
        with_token("POST", "/api/v1/policies", Some("acme-admin"), Some(policy)),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, _, _) = send(
        app.clone(),
        with_token(
            "DELETE",
            "/api/v1/policies/whatever",
            Some("acme-admin"),
            None,
        ),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // The audit log: own tenant yes, another no; operators may name one.
    let (status, _, _) = send(
        app.clone(),
        with_token("GET", "/api/v1/audit", Some("acme-admin"), None),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, _) = send(
        app.clone(),
        with_token(
            "GET",
            "/api/v1/audit?tenant_id=globex",
            Some("acme-admin"),
            None,
        ),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _, _) = send(
        app,
        with_token("GET", "/api/v1/audit?tenant_id=globex", Some("root"), None),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
}

/// Routes with the patterns of the tenant, user, batch and replay routes, behind the policy
/// layer, for the caller given.
fn guarded(caller: Caller, policies: Policies) -> Router {
    async fn ok(body: Bytes) -> String {
        format!("ok {}", body.len())
    }
    Router::new()
        .route("/api/v1/tenants", post(ok))
        .route("/api/v1/tenants/{id}", delete(ok))
        .route("/api/v1/auth/users/{id}", delete(ok))
        .route("/api/v1/events/batch", post(ok))
        .route("/api/v1/replay", post(ok))
        .route_layer(middleware::from_fn_with_state(policies, policy_step))
        .layer(Extension(caller))
}

/// The policy step of the request layer, with the served route's declaration.
async fn policy_step(
    axum::extract::State(policies): axum::extract::State<Policies>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let path = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let route = crate::served_routes()
        .into_iter()
        .find(|r| r.path == path && r.verb.method() == *request.method())
        .expect("a served route");
    let caller = request.extensions().get::<Caller>().cloned();
    match crate::enforce::enforce(&policies, &route, caller.as_ref(), request).await {
        Ok((request, warnings)) => {
            let mut response = next.run(request).await;
            for warning in warnings {
                response
                    .headers_mut()
                    .append(crate::enforce::POLICY_WARNING_HEADER, warning);
            }
            response
        }
        Err(e) => e.into_response(),
    }
}

async fn status_of(app: &Router, method: &str, path: &str) -> (StatusCode, Value) {
    let (status, _, body) = send(app.clone(), with_token(method, path, None, None)).await;
    (status, body)
}

#[tokio::test]
async fn the_defaults_guard_the_tenant_and_user_routes() {
    let (audit, recorded) = recording_audit();
    let policies = engine(policy::defaults(), audit);
    let admin = guarded(user("default", Role::Admin, "u1"), policies.clone());
    let developer = guarded(user("acme", Role::Developer, "u9"), policies.clone());

    let (status, body) = status_of(&admin, "DELETE", "/api/v1/tenants/default").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["policy_id"], "default-protect-default-tenant");
    assert_eq!(body["error"], "forbidden");
    assert_eq!(
        status_of(&admin, "DELETE", "/api/v1/tenants/acme").await.0,
        StatusCode::OK
    );

    let (status, body) = status_of(&developer, "POST", "/api/v1/tenants").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["policy_id"], "default-admin-creates-tenants");
    assert_eq!(
        status_of(&admin, "POST", "/api/v1/tenants").await.0,
        StatusCode::OK
    );

    let (status, body) = status_of(&admin, "DELETE", "/api/v1/auth/users/u1").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["policy_id"], "default-no-self-deletion");
    assert_eq!(
        status_of(&admin, "DELETE", "/api/v1/auth/users/u2").await.0,
        StatusCode::OK
    );
    // An API key acts for its owner: it cannot delete its owner either.
    let key = guarded(
        Caller::authenticated(
            TenantId::parse("acme").unwrap(),
            Role::Admin,
            Principal::ApiKey {
                key_id: "k1".into(),
                name: "ci".into(),
                owner_user_id: "u5".into(),
            },
        ),
        policies.clone(),
    );
    assert_eq!(
        status_of(&key, "DELETE", "/api/v1/auth/users/u5").await.0,
        StatusCode::FORBIDDEN
    );
    // A system caller has no user: self-deletion cannot apply.
    let system = guarded(Caller::default_tenant(), policies);
    assert_eq!(
        status_of(&system, "DELETE", "/api/v1/auth/users/u5")
            .await
            .0,
        StatusCode::OK
    );

    let records = recorded.lock().unwrap().clone();
    let denied: Vec<_> = records
        .iter()
        .map(|r| (r.action.as_str(), r.outcome, r.details["policy_id"].clone()))
        .collect();
    assert_eq!(denied.len(), 4, "{denied:?}");
    assert!(
        denied
            .iter()
            .all(|(a, o, _)| *a == "policy.decision" && *o == AuditOutcome::Denied)
    );
    assert_eq!(records[1].actor, "user:u9");
    assert_eq!(records[1].tenant_id, "acme");
    assert_eq!(records[3].actor, "api_key:k1");
}

#[tokio::test]
async fn a_large_batch_is_warned_about_and_reaches_the_handler_whole() {
    let (audit, recorded) = recording_audit();
    let app = guarded(Caller::default_tenant(), engine(policy::defaults(), audit));
    let events: Vec<Value> = (0..10_001).map(|i| json!({"i": i})).collect();
    let body = json!({ "events": events }).to_string();
    let length = body.len();
    let request = Request::post("/api/v1/events/batch")
        .header("content-type", "application/json")
        .body(Body::from(body))
        .unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers().get("x-policy-warning").unwrap(),
        "default-warn-large-operations"
    );
    let text = to_bytes(response.into_body(), usize::MAX).await.unwrap();
    assert_eq!(text, format!("ok {length}"));
    assert_eq!(recorded.lock().unwrap()[0].outcome, AuditOutcome::Warned);

    let small = json!({"events": [{"i": 1}]}).to_string();
    let request = Request::post("/api/v1/events/batch")
        .body(Body::from(small))
        .unwrap();
    let response = app.oneshot(request).await.unwrap();
    assert!(response.headers().get("x-policy-warning").is_none());
}

#[tokio::test]
async fn a_body_over_the_limit_is_413_before_any_policy() {
    let (audit, _) = recording_audit();
    let app = guarded(Caller::default_tenant(), engine(policy::defaults(), audit)).layer(
        Extension(HttpLimits {
            max_body_bytes: 16,
            ..HttpLimits::default()
        }),
    );
    let request = Request::post("/api/v1/events/batch")
        .body(Body::from(
            json!({"events": [1, 2, 3, 4, 5, 6]}).to_string(),
        ))
        .unwrap();
    let (status, _, body) = send(app, request).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(body["error"], "payload_too_large");
}

#[tokio::test]
async fn expensive_operations_are_rate_limited_per_caller() {
    let (audit, _) = recording_audit();
    let policies = engine(policy::defaults(), audit);
    let ann = guarded(user("acme", Role::Admin, "ann"), policies.clone());
    let bob = guarded(user("acme", Role::Admin, "bob"), policies);
    for _ in 0..policy::EXPENSIVE_PER_MINUTE {
        assert_eq!(
            status_of(&ann, "POST", "/api/v1/replay").await.0,
            StatusCode::OK
        );
    }
    let response = ann
        .clone()
        .oneshot(with_token("POST", "/api/v1/replay", None, None))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(response.headers().get("retry-after").unwrap(), "50");
    assert_eq!(
        status_of(&bob, "POST", "/api/v1/replay").await.0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn unreadable_policy_storage_fails_closed() {
    let mut state = MockStateStore::new();
    state
        .expect_list()
        .returning(|_, _, _, _, _| Err(StateError::Unavailable("recovering".into())));
    let mut clock = MockClock::new();
    clock.expect_now().returning(Utc::now);
    let policies = Policies::new(
        Arc::new(state),
        Arc::new(MockAuditLog::new()),
        Arc::new(clock),
        true,
    );
    let app = guarded(Caller::default_tenant(), policies);
    let (status, body) = status_of(&app, "POST", "/api/v1/tenants").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["error"], "unavailable");
}
