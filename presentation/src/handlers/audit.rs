//! `GET /api/v1/audit`: the audit log, for admins (see
//! [`AuditTrail`](allsource_application::use_cases::AuditTrail) for who sees which tenant).
//!
//! Query parameters, all optional: `tenant_id` (operators only; `*` = every tenant), `actor`
//! (`user:<id>`, `api_key:<id>`, `system`, `anonymous`), `action` (exact, or a prefix ending
//! with `.`: `policy.`), `outcome` (`success|failure|denied|warned`), `since` (inclusive),
//! `until` (exclusive), `after` (the `next_cursor` of the previous page), `limit` (1-1000,
//! default 100).
//!
//! → `200 {"records": [...], "count": n, "has_more": bool, "next_cursor": "<id>"|null}`,
//! oldest first.

use allsource_application::ports::{AuditOutcome, AuditRecord};
use allsource_application::use_cases::{AuditQueryError, AuditQueryInput};
use allsource_domain::Permission::Admin;
use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::AppState;
use crate::access::Access::Requires;
use crate::auth::CallerExtractor;
use crate::dto::timestamp;
use crate::error::ApiError;
use crate::extract::Params;
use crate::routes::{Route, Routes};

/// The audit routes, merged into the router.
pub fn routes() -> Routes {
    Routes::new().add(
        Route::get("/api/v1/audit", Requires(Admin))
            .params::<AuditParams>()
            .returns::<AuditPageResponse>(),
        query,
    )
}

/// Query parameters of `GET /api/v1/audit`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AuditParams {
    tenant_id: Option<String>,
    actor: Option<String>,
    action: Option<String>,
    outcome: Option<String>,
    since: Option<String>,
    until: Option<String>,
    after: Option<String>,
    limit: Option<String>,
}

fn outcome() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    crate::openapi::string_enum(
        [
            AuditOutcome::Success,
            AuditOutcome::Failure,
            AuditOutcome::Denied,
            AuditOutcome::Warned,
        ]
        .map(AuditOutcome::as_str),
        false,
    )
}

/// One record as the API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AuditRecordResponse {
    id: String,
    timestamp: String,
    tenant_id: String,
    /// `user:<id>`, `api_key:<id>`, `system` or `anonymous`.
    actor: String,
    action: String,
    #[schema(schema_with = outcome)]
    outcome: &'static str,
    #[schema(required = true)]
    resource: Option<String>,
    /// What the action was about (per action).
    #[schema(schema_with = crate::openapi::any_value)]
    details: Value,
    #[schema(required = true)]
    request_id: Option<String>,
}

impl From<AuditRecord> for AuditRecordResponse {
    fn from(r: AuditRecord) -> Self {
        Self {
            id: r.id,
            timestamp: timestamp(r.timestamp),
            tenant_id: r.tenant_id,
            actor: r.actor,
            action: r.action,
            outcome: r.outcome.as_str(),
            resource: r.resource,
            details: r.details,
            request_id: r.request_id,
        }
    }
}

/// `GET /api/v1/audit`: oldest first; `next_cursor` is `null` on the last page.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct AuditPageResponse {
    records: Vec<AuditRecordResponse>,
    count: usize,
    has_more: bool,
    #[schema(required = true)]
    next_cursor: Option<String>,
}

impl From<AuditQueryError> for ApiError {
    fn from(e: AuditQueryError) -> Self {
        match e {
            AuditQueryError::Invalid(errors) => Self::validation(errors),
            AuditQueryError::Forbidden(why) => Self::forbidden(why),
            AuditQueryError::Unavailable(why) => Self::unavailable(why),
            AuditQueryError::Internal(cause) => Self::internal(cause),
        }
    }
}

/// `GET /api/v1/audit`.
pub async fn query(
    State(state): State<AppState>,
    CallerExtractor(caller): CallerExtractor,
    Params(p): Params<AuditParams>,
) -> Result<Response, ApiError> {
    let page = state
        .audit
        .query(
            &caller,
            AuditQueryInput {
                tenant_id: p.tenant_id,
                actor: p.actor,
                action: p.action,
                outcome: p.outcome,
                since: p.since,
                until: p.until,
                after: p.after,
                limit: p.limit,
            },
        )
        .await?;
    let records: Vec<AuditRecordResponse> = page.records.into_iter().map(Into::into).collect();
    Ok(Json(AuditPageResponse {
        count: records.len(),
        records,
        has_more: page.has_more,
        next_cursor: page.next_cursor,
    })
    .into_response())
}
