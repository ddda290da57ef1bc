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

use allsource_application::ports::AuditRecord;
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
        Route::get("/api/v1/audit", Requires(Admin)).params::<AuditParams>(),
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

/// One record as the API shows it.
#[derive(Debug, Serialize)]
pub struct AuditRecordResponse {
    id: String,
    timestamp: String,
    tenant_id: String,
    actor: String,
    action: String,
    outcome: &'static str,
    resource: Option<String>,
    details: Value,
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

#[derive(Debug, Serialize)]
struct AuditPageResponse {
    records: Vec<AuditRecordResponse>,
    count: usize,
    has_more: bool,
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
