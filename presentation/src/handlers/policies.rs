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
use allsource_domain::policy::{self, Decision, Effect, Matched, Operator, Policy};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::Schema;

use crate::AppState;
use crate::access::Access::Requires;
use crate::auth::CallerExtractor;
use crate::dto::DeletedResponse;
use crate::error::ApiError;
use crate::extract::{JsonBody, PathParam};
use crate::openapi::string_enum;
use crate::routes::{Route, Routes};

/// The policy routes, merged into the router.
pub fn routes() -> Routes {
    // Not subject to the policies themselves, so that a bad policy can always be corrected.
    let route = |route: Route| route.exempt_from_policies();
    Routes::new()
        .add(
            route(Route::get("/api/v1/policies", Requires(Admin))).returns::<PolicyListResponse>(),
            list,
        )
        .add(
            route(
                Route::post("/api/v1/policies", Requires(Admin))
                    .body::<PolicyRequest>()
                    .returns::<PolicyResponse>()
                    .responds(&[201])
                    .problems(&[409]),
            ),
            create,
        )
        .add(
            route(
                Route::post("/api/v1/policies/evaluate", Requires(Admin))
                    .body::<EvaluateRequest>()
                    .returns::<DecisionResponse>(),
            ),
            evaluate,
        )
        .add(
            route(Route::get("/api/v1/policies/{id}", Requires(Admin)).returns::<PolicyResponse>()),
            one,
        )
        .add(
            route(
                Route::put("/api/v1/policies/{id}", Requires(Admin))
                    .body::<PolicyRequest>()
                    .returns::<PolicyResponse>()
                    .problems(&[409]),
            ),
            replace,
        )
        .add(
            route(
                Route::delete("/api/v1/policies/{id}", Requires(Admin))
                    .returns::<DeletedResponse>()
                    .problems(&[409]),
            ),
            remove,
        )
}

/// The names of the actions.
const ACTIONS: [&str; 4] = ["allow", "deny", "warn", "rate_limit"];

/// The names of the operators.
const OPERATORS: [Operator; 6] = [
    Operator::Eq,
    Operator::Ne,
    Operator::Gt,
    Operator::Lt,
    Operator::Contains,
    Operator::In,
];

fn action() -> RefOr<Schema> {
    string_enum(ACTIONS, false)
}

fn operator() -> RefOr<Schema> {
    string_enum(OPERATORS.map(Operator::as_str), false)
}

/// A policy as a client sends it.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyRequest {
    name: String,
    description: Option<String>,
    /// Default 0; higher first.
    priority: Option<i64>,
    /// Default `true`.
    enabled: Option<bool>,
    #[schema(schema_with = action)]
    action: String,
    /// With `rate_limit` (required there).
    per_minute: Option<u64>,
    conditions: Vec<ConditionRequest>,
}

/// A condition as a client sends it.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConditionRequest {
    /// A request attribute (`method`, `route`, `role`, `resource.id`, ...).
    attribute: String,
    #[schema(schema_with = operator)]
    operator: String,
    #[schema(schema_with = crate::openapi::any_value)]
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

/// The body of `POST /api/v1/policies/evaluate`: attribute name → value (missing `role`,
/// `tenant_id` and `user_id` are the caller's).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EvaluateRequest {
    #[schema(schema_with = crate::openapi::any_object)]
    context: BTreeMap<String, Value>,
}

/// A condition as the API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ConditionResponse {
    attribute: String,
    #[schema(schema_with = operator)]
    operator: &'static str,
    #[schema(schema_with = crate::openapi::any_value)]
    value: Value,
}

/// A policy as the API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PolicyResponse {
    id: String,
    name: String,
    description: String,
    priority: i64,
    enabled: bool,
    #[schema(schema_with = action)]
    action: &'static str,
    /// Only with `rate_limit`.
    #[serde(skip_serializing_if = "Option::is_none")]
    per_minute: Option<u32>,
    conditions: Vec<ConditionResponse>,
    /// One of the five default policies (editable, not deletable).
    default: bool,
}

/// `GET /api/v1/policies`, in evaluation order.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PolicyListResponse {
    total: usize,
    policies: Vec<PolicyResponse>,
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
                .map(|c| ConditionResponse {
                    attribute: c.attribute,
                    operator: c.operator.as_str(),
                    value: c.value,
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
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MatchedResponse<'a> {
    id: &'a str,
    name: &'a str,
    #[schema(schema_with = action)]
    action: &'static str,
}

impl<'a> From<&'a Matched> for MatchedResponse<'a> {
    fn from(m: &'a Matched) -> Self {
        Self {
            id: &m.id,
            name: &m.name,
            action: m.effect.as_str(),
        }
    }
}

fn decision() -> RefOr<Schema> {
    string_enum(["allow", "deny"], false)
}

/// The answer of `POST /api/v1/policies/evaluate`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DecisionResponse<'a> {
    #[schema(schema_with = decision)]
    decision: &'static str,
    /// The `deny` or `allow` policy that decided, `null` when none matched.
    #[schema(required = true)]
    decided_by: Option<MatchedResponse<'a>>,
    warnings: Vec<MatchedResponse<'a>>,
    rate_limits: Vec<MatchedResponse<'a>>,
    matched: Vec<MatchedResponse<'a>>,
}

impl<'a> From<&'a Decision> for DecisionResponse<'a> {
    fn from(d: &'a Decision) -> Self {
        Self {
            decision: if d.denied() { "deny" } else { "allow" },
            decided_by: d.decided_by.as_ref().map(MatchedResponse::from),
            warnings: d.warnings.iter().map(MatchedResponse::from).collect(),
            rate_limits: d.rate_limits.iter().map(MatchedResponse::from).collect(),
            matched: d.matched().map(MatchedResponse::from).collect(),
        }
    }
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
    Ok(Json(PolicyListResponse {
        total: policies.len(),
        policies,
    })
    .into_response())
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
    Ok(Json(DeletedResponse::new(&id)).into_response())
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
    Ok(Json(DecisionResponse::from(&decision)).into_response())
}
