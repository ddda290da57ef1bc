//! Tenants: `GET|POST /api/v1/tenants`, `GET|PUT|DELETE /api/v1/tenants/{id}`,
//! `GET /api/v1/tenants/{id}/stats`, `GET|PUT /api/v1/tenants/{id}/quotas`,
//! `POST /api/v1/tenants/{id}/{activate,deactivate}`, with their bodies.
//!
//! Who may call what is the use case's business ([`Tenants`]): operators (admins of tenant
//! `default`) manage every tenant; an admin of another tenant reads its own tenant only; any
//! reader reads its own tenant's stats. Another tenant's id answers 404.
//!
//! Quotas are JSON numbers, `null` meaning unlimited. `PUT .../quotas` replaces the tenant's
//! overrides: a quota given (a number, or `null` for unlimited) overrides the tier's, a quota
//! left out follows the tier again.

use allsource_application::use_cases::{
    CreateTenantInput, TenantError, TenantStats, Tenants, UpdateTenantInput, quota_limit,
};
use allsource_domain::Permission::{ManageTenants, Read};
use allsource_domain::{QuotaOverrides, Quotas, Tenant};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value, json};

use crate::AppState;
use crate::access::Access::Requires;
use crate::auth::CallerExtractor;
use crate::dto::timestamp;
use crate::error::ApiError;
use crate::extract::{JsonBody, PathParam};
use crate::routes::{Route, Routes};

/// The tenant routes, merged into the router by `router()`.
pub fn routes() -> Routes {
    Routes::new()
        .get("/api/v1/tenants", Requires(ManageTenants), list)
        .add(
            Route::post("/api/v1/tenants", Requires(ManageTenants)).responds(&[201]),
            create,
        )
        .get("/api/v1/tenants/{id}", Requires(ManageTenants), read)
        .put("/api/v1/tenants/{id}", Requires(ManageTenants), update)
        .delete("/api/v1/tenants/{id}", Requires(ManageTenants), delete)
        .get("/api/v1/tenants/{id}/stats", Requires(Read), stats)
        .get(
            "/api/v1/tenants/{id}/quotas",
            Requires(ManageTenants),
            quotas,
        )
        .put(
            "/api/v1/tenants/{id}/quotas",
            Requires(ManageTenants),
            set_quotas,
        )
        .add(
            Route::post("/api/v1/tenants/{id}/activate", Requires(ManageTenants)).no_body(),
            activate,
        )
        .add(
            Route::post("/api/v1/tenants/{id}/deactivate", Requires(ManageTenants)).no_body(),
            deactivate,
        )
}

impl From<TenantError> for ApiError {
    fn from(e: TenantError) -> Self {
        match e {
            TenantError::Invalid(errors) => Self::validation(errors),
            TenantError::Forbidden(why) => Self::forbidden(why),
            TenantError::NotFound(why) => Self::not_found(why),
            TenantError::Conflict(why) => Self::conflict(why),
            TenantError::Unavailable(why) => Self::unavailable(why),
            TenantError::Internal(cause) => Self::internal(cause),
        }
    }
}

fn tenants(state: &AppState) -> Result<&Tenants, ApiError> {
    state
        .tenants
        .as_ref()
        .ok_or_else(|| ApiError::not_found("tenancy is not enabled on this server"))
}

// ---------------------------------------------------------------------------------------------
// Bodies

/// `POST /api/v1/tenants`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateTenantRequest {
    pub id: Option<String>,
    pub name: Option<String>,
    pub tier: Option<String>,
}

/// `PUT /api/v1/tenants/{id}`: fields left out are kept.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateTenantRequest {
    pub name: Option<String>,
    pub tier: Option<String>,
}

/// A member that may be absent (`None`), `null` (`Some(None)`) or a value.
fn nullable<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<u64>>, D::Error> {
    Option::<u64>::deserialize(d).map(Some)
}

/// `PUT /api/v1/tenants/{id}/quotas`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuotasRequest {
    #[serde(default, deserialize_with = "nullable")]
    pub max_events_per_day: Option<Option<u64>>,
    #[serde(default, deserialize_with = "nullable")]
    pub max_storage_bytes: Option<Option<u64>>,
    #[serde(default, deserialize_with = "nullable")]
    pub max_queries_per_hour: Option<Option<u64>>,
    #[serde(default, deserialize_with = "nullable")]
    pub max_api_keys: Option<Option<u64>>,
    #[serde(default, deserialize_with = "nullable")]
    pub max_projections: Option<Option<u64>>,
    #[serde(default, deserialize_with = "nullable")]
    pub max_pipelines: Option<Option<u64>>,
    #[serde(default, deserialize_with = "nullable")]
    pub max_subscriptions: Option<Option<u64>>,
    #[serde(default, deserialize_with = "nullable")]
    pub max_webhooks: Option<Option<u64>>,
}

impl From<QuotasRequest> for QuotaOverrides {
    fn from(r: QuotasRequest) -> Self {
        QuotaOverrides {
            max_events_per_day: r.max_events_per_day,
            max_storage_bytes: r.max_storage_bytes,
            max_queries_per_hour: r.max_queries_per_hour,
            max_api_keys: r.max_api_keys,
            max_projections: r.max_projections,
            max_pipelines: r.max_pipelines,
            max_subscriptions: r.max_subscriptions,
            max_webhooks: r.max_webhooks,
        }
    }
}

/// Quotas as the API shows them (`null`: unlimited).
#[derive(Debug, Serialize)]
pub struct QuotasBody {
    pub max_events_per_day: Option<u64>,
    pub max_storage_bytes: Option<u64>,
    pub max_queries_per_hour: Option<u64>,
    pub max_api_keys: Option<u64>,
    pub max_projections: Option<u64>,
    pub max_pipelines: Option<u64>,
    pub max_subscriptions: Option<u64>,
    pub max_webhooks: Option<u64>,
}

impl From<Quotas> for QuotasBody {
    fn from(q: Quotas) -> Self {
        Self {
            max_events_per_day: q.max_events_per_day,
            max_storage_bytes: q.max_storage_bytes,
            max_queries_per_hour: q.max_queries_per_hour,
            max_api_keys: q.max_api_keys,
            max_projections: q.max_projections,
            max_pipelines: q.max_pipelines,
            max_subscriptions: q.max_subscriptions,
            max_webhooks: q.max_webhooks,
        }
    }
}

/// The overrides only: quota name → number or `null`.
fn overrides_body(o: &QuotaOverrides) -> Map<String, Value> {
    [
        ("max_events_per_day", o.max_events_per_day),
        ("max_storage_bytes", o.max_storage_bytes),
        ("max_queries_per_hour", o.max_queries_per_hour),
        ("max_api_keys", o.max_api_keys),
        ("max_projections", o.max_projections),
        ("max_pipelines", o.max_pipelines),
        ("max_subscriptions", o.max_subscriptions),
        ("max_webhooks", o.max_webhooks),
    ]
    .into_iter()
    .filter_map(|(name, value)| value.map(|v| (name.to_owned(), json!(v))))
    .collect()
}

/// A tenant.
#[derive(Debug, Serialize)]
pub struct TenantResponse {
    pub id: String,
    pub name: String,
    pub tier: &'static str,
    pub active: bool,
    /// The quotas that hold (tier with overrides).
    pub quotas: QuotasBody,
    /// The tier's rate limit.
    pub rate_limit: Value,
    pub created_at: String,
    pub updated_at: String,
}

impl From<&Tenant> for TenantResponse {
    fn from(t: &Tenant) -> Self {
        let limit = t.rate_limit();
        Self {
            id: t.id.as_str().to_owned(),
            name: t.name.as_str().to_owned(),
            tier: t.tier.as_str(),
            active: t.active,
            quotas: t.quotas().into(),
            rate_limit: json!({"requests_per_second": limit.per_second, "burst": limit.burst}),
            created_at: timestamp(t.created_at),
            updated_at: timestamp(t.updated_at),
        }
    }
}

fn quotas_response(t: &Tenant) -> Value {
    json!({
        "tenant_id": t.id.as_str(),
        "tier": t.tier.as_str(),
        "quotas": QuotasBody::from(t.quotas()),
        "overrides": overrides_body(&t.overrides),
    })
}

fn stats_response(s: &TenantStats) -> Value {
    let quotas = s.tenant.quotas();
    let usage: Map<String, Value> = s
        .usage
        .iter()
        .map(|u| {
            debug_assert_eq!(u.limit, quota_limit(&quotas, u.kind));
            (
                u.kind.as_str().to_owned(),
                json!({"used": u.used, "limit": u.limit}),
            )
        })
        .collect();
    json!({
        "tenant_id": s.tenant.id.as_str(),
        "tier": s.tenant.tier.as_str(),
        "active": s.tenant.active,
        "usage": usage,
        "events": {
            "total_events": s.events.total_events,
            "total_entities": s.events.total_entities,
            "total_event_types": s.events.total_event_types,
            "last_position": s.events.last_position,
        },
    })
}

// ---------------------------------------------------------------------------------------------
// Handlers

/// `GET /api/v1/tenants`.
pub async fn list(
    State(state): State<AppState>,
    CallerExtractor(caller): CallerExtractor,
) -> Result<Response, ApiError> {
    let list = tenants(&state)?.list(&caller).await?;
    let body: Vec<TenantResponse> = list.iter().map(TenantResponse::from).collect();
    Ok(Json(json!({"total": body.len(), "tenants": body})).into_response())
}

/// `POST /api/v1/tenants` → 201.
pub async fn create(
    State(state): State<AppState>,
    CallerExtractor(caller): CallerExtractor,
    JsonBody(request): JsonBody<CreateTenantRequest>,
) -> Result<Response, ApiError> {
    let tenant = tenants(&state)?
        .create(
            &caller,
            CreateTenantInput {
                id: request.id,
                name: request.name,
                tier: request.tier,
            },
        )
        .await?;
    Ok((StatusCode::CREATED, Json(TenantResponse::from(&tenant))).into_response())
}

/// `GET /api/v1/tenants/{id}`.
pub async fn read(
    State(state): State<AppState>,
    CallerExtractor(caller): CallerExtractor,
    PathParam(id): PathParam,
) -> Result<Response, ApiError> {
    let tenant = tenants(&state)?.get(&caller, &id).await?;
    Ok(Json(TenantResponse::from(&tenant)).into_response())
}

/// `PUT /api/v1/tenants/{id}`: name and tier.
pub async fn update(
    State(state): State<AppState>,
    CallerExtractor(caller): CallerExtractor,
    PathParam(id): PathParam,
    JsonBody(request): JsonBody<UpdateTenantRequest>,
) -> Result<Response, ApiError> {
    let tenant = tenants(&state)?
        .update(
            &caller,
            &id,
            UpdateTenantInput {
                name: request.name,
                tier: request.tier,
            },
        )
        .await?;
    Ok(Json(TenantResponse::from(&tenant)).into_response())
}

/// `DELETE /api/v1/tenants/{id}`.
pub async fn delete(
    State(state): State<AppState>,
    CallerExtractor(caller): CallerExtractor,
    PathParam(id): PathParam,
) -> Result<Response, ApiError> {
    tenants(&state)?.delete(&caller, &id).await?;
    Ok(Json(json!({"id": id, "deleted": true})).into_response())
}

/// `GET /api/v1/tenants/{id}/stats`.
pub async fn stats(
    State(state): State<AppState>,
    CallerExtractor(caller): CallerExtractor,
    PathParam(id): PathParam,
) -> Result<Response, ApiError> {
    let stats = tenants(&state)?.stats(&caller, &id).await?;
    Ok(Json(stats_response(&stats)).into_response())
}

/// `GET /api/v1/tenants/{id}/quotas`.
pub async fn quotas(
    State(state): State<AppState>,
    CallerExtractor(caller): CallerExtractor,
    PathParam(id): PathParam,
) -> Result<Response, ApiError> {
    let tenant = tenants(&state)?.get(&caller, &id).await?;
    Ok(Json(quotas_response(&tenant)).into_response())
}

/// `PUT /api/v1/tenants/{id}/quotas`: replaces the overrides.
pub async fn set_quotas(
    State(state): State<AppState>,
    CallerExtractor(caller): CallerExtractor,
    PathParam(id): PathParam,
    JsonBody(request): JsonBody<QuotasRequest>,
) -> Result<Response, ApiError> {
    let tenant = tenants(&state)?
        .set_quotas(&caller, &id, request.into())
        .await?;
    Ok(Json(quotas_response(&tenant)).into_response())
}

/// `POST /api/v1/tenants/{id}/activate`.
pub async fn activate(
    State(state): State<AppState>,
    CallerExtractor(caller): CallerExtractor,
    PathParam(id): PathParam,
) -> Result<Response, ApiError> {
    let tenant = tenants(&state)?.set_active(&caller, &id, true).await?;
    Ok(Json(TenantResponse::from(&tenant)).into_response())
}

/// `POST /api/v1/tenants/{id}/deactivate`.
pub async fn deactivate(
    State(state): State<AppState>,
    CallerExtractor(caller): CallerExtractor,
    PathParam(id): PathParam,
) -> Result<Response, ApiError> {
    let tenant = tenants(&state)?.set_active(&caller, &id, false).await?;
    Ok(Json(TenantResponse::from(&tenant)).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quota_bodies_tell_absent_from_null() {
        let r: QuotasRequest =
            serde_json::from_str(r#"{"max_api_keys": 3, "max_storage_bytes": null}"#).unwrap();
        assert_eq!(r.max_api_keys, Some(Some(3)));
        assert_eq!(r.max_storage_bytes, Some(None));
        assert_eq!(r.max_events_per_day, None);
        assert!(serde_json::from_str::<QuotasRequest>(r#"{"max_keys": 3}"#).is_err());
        assert!(serde_json::from_str::<QuotasRequest>(r#"{"max_api_keys": -1}"#).is_err());
        assert!(serde_json::from_str::<QuotasRequest>(r#"{"max_api_keys": "3"}"#).is_err());
    }
}
