//! The policy routes (all `Requires(Admin)`; changes are for operators, admins of tenant
//! `default`):
//!
//! - `GET /api/v1/policies` → `200 {"policies": [Policy...], "total": n}` in evaluation order.
//! - `POST /api/v1/policies` with a policy body → `201` Policy (the server assigns the id).
//! - `GET /api/v1/policies/{id}` → Policy, or 404.
//! - `PUT /api/v1/policies/{id}` with a policy body → `200` Policy (replaces it; defaults too).
//! - `DELETE /api/v1/policies/{id}` → `200 {"id", "deleted": true}`; 409 for a default policy.
//! - `POST /api/v1/policies/evaluate` with `{"context": {"method": "DELETE", "route":
//!   "/api/v1/tenants/{id}", "resource.id": "default", ...}}` → `200 {"decision": "allow"|"deny",
//!   "decided_by": Match|null, "warnings": [Match], "rate_limits": [Match], "matched": [Match]}`.
//!   A dry run: nothing is counted, recorded or refused. Missing `role`, `tenant_id` and
//!   `user_id` are the caller's.
//!
//! A policy body: `{"name", "description"?, "priority"? (default 0), "enabled"? (default true),
//! "action": "allow"|"deny"|"warn"|"rate_limit", "per_minute"? (with rate_limit),
//! "conditions": [{"attribute", "operator": "eq"|"ne"|"gt"|"lt"|"contains"|"in", "value"}]}`.

use std::collections::BTreeMap;

use allsource_application::use_cases::{ConditionInput, PolicyError, PolicyInput};
use allsource_domain::Permission::Admin;
use allsource_domain::policy::{self, Decision, Effect, Matched, Policy};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::AppState;
use crate::access::Access::Requires;
use crate::auth::CallerExtractor;
use crate::error::ApiError;
use crate::extract::{JsonBody, PathParam};
use crate::routes::{Route, Routes};

/// The policy routes, merged into the router.
pub fn routes() -> Routes {
    // Not subject to the policies themselves, so that a bad policy can always be corrected.
    let route = |route: Route| route.exempt_from_policies();
    Routes::new()
        .add(route(Route::get("/api/v1/policies", Requires(Admin))), list)
        .add(
            route(Route::post("/api/v1/policies", Requires(Admin)).responds(&[201])),
            create,
        )
        .add(
            route(Route::post("/api/v1/policies/evaluate", Requires(Admin))),
            evaluate,
        )
        .add(
            route(Route::get("/api/v1/policies/{id}", Requires(Admin))),
            one,
        )
        .add(
            route(Route::put("/api/v1/policies/{id}", Requires(Admin))),
            replace,
        )
        .add(
            route(Route::delete("/api/v1/policies/{id}", Requires(Admin))),
            remove,
        )
}

/// A policy as a client sends it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyRequest {
    name: String,
    description: Option<String>,
    priority: Option<i64>,
    enabled: Option<bool>,
    action: String,
    per_minute: Option<u64>,
    conditions: Vec<ConditionRequest>,
}

/// A condition as a client sends it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConditionRequest {
    attribute: String,
    operator: String,
    value: Value,
}

impl From<PolicyRequest> for PolicyInput {
    fn from(r: PolicyRequest) -> Self {
        Self {
            name: r.name,
            description: r.description,
            priority: r.priority,
            enabled: r.enabled,
            action: r.action,
            per_minute: r.per_minute,
            conditions: r
                .conditions
                .into_iter()
                .map(|c| ConditionInput {
                    attribute: c.attribute,
                    operator: c.operator,
                    value: c.value,
                })
                .collect(),
        }
    }
}

/// The body of `POST /api/v1/policies/evaluate`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvaluateRequest {
    context: BTreeMap<String, Value>,
}

/// A policy as the API shows it.
#[derive(Debug, Serialize)]
pub struct PolicyResponse {
    id: String,
    name: String,
    description: String,
    priority: i64,
    enabled: bool,
    action: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    per_minute: Option<u32>,
    conditions: Vec<Value>,
    /// One of the five default policies (editable, not deletable).
    default: bool,
}

impl From<Policy> for PolicyResponse {
    fn from(p: Policy) -> Self {
        Self {
            default: policy::is_default(&p.id),
            action: p.effect.as_str(),
            per_minute: match p.effect {
                Effect::RateLimit { per_minute } => Some(per_minute),
                _ => None,
            },
            conditions: p
                .conditions
                .into_iter()
                .map(|c| {
                    json!({"attribute": c.attribute, "operator": c.operator.as_str(),
                           "value": c.value})
                })
                .collect(),
            id: p.id,
            name: p.name,
            description: p.description,
            priority: p.priority,
            enabled: p.enabled,
        }
    }
}

/// A policy named in a decision.
pub fn matched_json(m: &Matched) -> Value {
    json!({"id": m.id, "name": m.name, "action": m.effect.as_str()})
}

fn decision_json(d: &Decision) -> Value {
    json!({
        "decision": if d.denied() { "deny" } else { "allow" },
        "decided_by": d.decided_by.as_ref().map(matched_json),
        "warnings": d.warnings.iter().map(matched_json).collect::<Vec<_>>(),
        "rate_limits": d.rate_limits.iter().map(matched_json).collect::<Vec<_>>(),
        "matched": d.matched().map(matched_json).collect::<Vec<_>>(),
    })
}

impl From<PolicyError> for ApiError {
    fn from(e: PolicyError) -> Self {
        match e {
            PolicyError::Invalid(errors) => Self::validation(errors),
            PolicyError::Forbidden(why) => Self::forbidden(why),
            PolicyError::NotFound(id) => Self::not_found(format!("no policy with id '{id}'")),
            PolicyError::Conflict(why) => Self::conflict(why),
            PolicyError::Unavailable(why) => Self::unavailable(why),
            PolicyError::Internal(cause) => Self::internal(cause),
        }
    }
}

/// `GET /api/v1/policies`.
pub async fn list(
    State(state): State<AppState>,
    CallerExtractor(caller): CallerExtractor,
) -> Result<Response, ApiError> {
    let policies: Vec<PolicyResponse> = state
        .policies
        .list(&caller)
        .await?
        .into_iter()
        .map(Into::into)
        .collect();
    Ok(Json(json!({"total": policies.len(), "policies": policies})).into_response())
}

/// `POST /api/v1/policies` → 201.
pub async fn create(
    State(state): State<AppState>,
    CallerExtractor(caller): CallerExtractor,
    JsonBody(request): JsonBody<PolicyRequest>,
) -> Result<Response, ApiError> {
    let policy = state.policies.create(&caller, request.into()).await?;
    Ok((StatusCode::CREATED, Json(PolicyResponse::from(policy))).into_response())
}

/// `GET /api/v1/policies/{id}`.
pub async fn one(
    State(state): State<AppState>,
    CallerExtractor(caller): CallerExtractor,
    PathParam(id): PathParam,
) -> Result<Response, ApiError> {
    let policy = state.policies.get(&caller, &id).await?;
    Ok(Json(PolicyResponse::from(policy)).into_response())
}

/// `PUT /api/v1/policies/{id}`.
pub async fn replace(
    State(state): State<AppState>,
    CallerExtractor(caller): CallerExtractor,
    PathParam(id): PathParam,
    JsonBody(request): JsonBody<PolicyRequest>,
) -> Result<Response, ApiError> {
    let policy = state.policies.update(&caller, &id, request.into()).await?;
    Ok(Json(PolicyResponse::from(policy)).into_response())
}

/// `DELETE /api/v1/policies/{id}`.
pub async fn remove(
    State(state): State<AppState>,
    CallerExtractor(caller): CallerExtractor,
    PathParam(id): PathParam,
) -> Result<Response, ApiError> {
    state.policies.delete(&caller, &id).await?;
    Ok(Json(json!({"id": id, "deleted": true})).into_response())
}

/// `POST /api/v1/policies/evaluate`: a dry run.
pub async fn evaluate(
    State(state): State<AppState>,
    CallerExtractor(caller): CallerExtractor,
    JsonBody(request): JsonBody<EvaluateRequest>,
) -> Result<Response, ApiError> {
    let decision = state
        .policies
        .evaluate(&caller, request.context.into_iter().collect())
        .await?;
    Ok(Json(decision_json(&decision)).into_response())
}
