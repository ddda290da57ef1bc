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

use std::collections::BTreeMap;

use allsource_application::use_cases::{
    CreateTenantInput, TenantError, TenantStats, Tenants, UpdateTenantInput, quota_limit,
};
use allsource_domain::Permission::{ManageTenants, Read};
use allsource_domain::{QuotaOverrides, Quotas, Tenant, Tier};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::Schema;

use crate::AppState;
use crate::access::Access::Requires;
use crate::auth::CallerExtractor;
use crate::dto::{DeletedResponse, timestamp};
use crate::error::ApiError;
use crate::extract::{JsonBody, PathParam};
use crate::openapi::string_enum;
use crate::routes::{Route, Routes};

/// The tenant routes, merged into the router by `router()`.
pub fn routes() -> Routes {
    Routes::new()
        .add(
            Route::get("/api/v1/tenants", Requires(ManageTenants))
                .returns::<TenantListResponse>()
                .problems(&[404]),
            list,
        )
        .add(
            Route::post("/api/v1/tenants", Requires(ManageTenants))
                .body::<CreateTenantRequest>()
                .returns::<TenantResponse>()
                .responds(&[201])
                .problems(&[404, 409]),
            create,
        )
        .add(
            Route::get("/api/v1/tenants/{id}", Requires(ManageTenants)).returns::<TenantResponse>(),
            read,
        )
        .add(
            Route::put("/api/v1/tenants/{id}", Requires(ManageTenants))
                .body::<UpdateTenantRequest>()
                .returns::<TenantResponse>()
                .problems(&[409]),
            update,
        )
        .add(
            Route::delete("/api/v1/tenants/{id}", Requires(ManageTenants))
                .returns::<DeletedResponse>()
                .problems(&[409]),
            delete,
        )
        .add(
            Route::get("/api/v1/tenants/{id}/stats", Requires(Read))
                .returns::<TenantStatsResponse>(),
            stats,
        )
        .add(
            Route::get("/api/v1/tenants/{id}/quotas", Requires(ManageTenants))
                .returns::<TenantQuotasResponse>(),
            quotas,
        )
        .add(
            Route::put("/api/v1/tenants/{id}/quotas", Requires(ManageTenants))
                .body::<QuotasRequest>()
                .returns::<TenantQuotasResponse>()
                .problems(&[409]),
            set_quotas,
        )
        .add(
            Route::post("/api/v1/tenants/{id}/activate", Requires(ManageTenants))
                .no_body()
                .returns::<TenantResponse>()
                .problems(&[409]),
            activate,
        )
        .add(
            Route::post("/api/v1/tenants/{id}/deactivate", Requires(ManageTenants))
                .no_body()
                .returns::<TenantResponse>()
                .problems(&[409]),
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

/// A tenant id.
fn tenant_id() -> RefOr<Schema> {
    crate::openapi::pattern_string("^[A-Za-z0-9-][A-Za-z0-9_-]{0,63}$", 64, false)
}

/// A tier's name.
fn tier() -> RefOr<Schema> {
    string_enum(Tier::ALL.map(Tier::as_str), false)
}

/// A tier's name, or `null` (the default).
fn tier_or_null() -> RefOr<Schema> {
    string_enum(Tier::ALL.map(Tier::as_str), true)
}

/// `POST /api/v1/tenants`. `id` and `name` are required (the use case names them when
/// missing).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTenantRequest {
    /// 1–64 of `A-Z a-z 0-9 _ -`, not starting with `_`.
    #[schema(schema_with = tenant_id, required = true)]
    pub id: Option<String>,
    #[schema(value_type = String, required = true)]
    pub name: Option<String>,
    /// Default `free`.
    #[schema(schema_with = tier_or_null)]
    pub tier: Option<String>,
}

/// `PUT /api/v1/tenants/{id}`: fields left out are kept.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateTenantRequest {
    pub name: Option<String>,
    #[schema(schema_with = tier_or_null)]
    pub tier: Option<String>,
}

/// A member that may be absent (`None`), `null` (`Some(None)`) or a value.
fn nullable<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<u64>>, D::Error> {
    Option::<u64>::deserialize(d).map(Some)
}

/// `PUT /api/v1/tenants/{id}/quotas`: each quota a number, `null` (unlimited) or left out
/// (the tier's).
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QuotasRequest {
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<u64>)]
    pub max_events_per_day: Option<Option<u64>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<u64>)]
    pub max_storage_bytes: Option<Option<u64>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<u64>)]
    pub max_queries_per_hour: Option<Option<u64>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<u64>)]
    pub max_api_keys: Option<Option<u64>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<u64>)]
    pub max_projections: Option<Option<u64>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<u64>)]
    pub max_pipelines: Option<Option<u64>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<u64>)]
    pub max_subscriptions: Option<Option<u64>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<u64>)]
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
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct QuotasBody {
    #[schema(required = true)]
    pub max_events_per_day: Option<u64>,
    #[schema(required = true)]
    pub max_storage_bytes: Option<u64>,
    #[schema(required = true)]
    pub max_queries_per_hour: Option<u64>,
    #[schema(required = true)]
    pub max_api_keys: Option<u64>,
    #[schema(required = true)]
    pub max_projections: Option<u64>,
    #[schema(required = true)]
    pub max_pipelines: Option<u64>,
    #[schema(required = true)]
    pub max_subscriptions: Option<u64>,
    #[schema(required = true)]
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

/// The overrides only: a quota overridden is a number or `null` (unlimited); a quota that
/// follows the tier is absent.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct OverridesBody {
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<u64>)]
    pub max_events_per_day: Option<Option<u64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<u64>)]
    pub max_storage_bytes: Option<Option<u64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<u64>)]
    pub max_queries_per_hour: Option<Option<u64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<u64>)]
    pub max_api_keys: Option<Option<u64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<u64>)]
    pub max_projections: Option<Option<u64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<u64>)]
    pub max_pipelines: Option<Option<u64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<u64>)]
    pub max_subscriptions: Option<Option<u64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<u64>)]
    pub max_webhooks: Option<Option<u64>>,
}

impl From<&QuotaOverrides> for OverridesBody {
    fn from(o: &QuotaOverrides) -> Self {
        Self {
            max_events_per_day: o.max_events_per_day,
            max_storage_bytes: o.max_storage_bytes,
            max_queries_per_hour: o.max_queries_per_hour,
            max_api_keys: o.max_api_keys,
            max_projections: o.max_projections,
            max_pipelines: o.max_pipelines,
            max_subscriptions: o.max_subscriptions,
            max_webhooks: o.max_webhooks,
        }
    }
}

/// A tier's rate limit.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RateLimitBody {
    pub requests_per_second: u32,
    pub burst: u32,
}

/// A tenant.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TenantResponse {
    pub id: String,
    pub name: String,
    #[schema(schema_with = tier)]
    pub tier: &'static str,
    pub active: bool,
    /// The quotas that hold (tier with overrides).
    pub quotas: QuotasBody,
    /// The tier's rate limit.
    pub rate_limit: RateLimitBody,
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
            rate_limit: RateLimitBody {
                requests_per_second: limit.per_second,
                burst: limit.burst,
            },
            created_at: timestamp(t.created_at),
            updated_at: timestamp(t.updated_at),
        }
    }
}

/// `GET /api/v1/tenants`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TenantListResponse {
    pub total: usize,
    pub tenants: Vec<TenantResponse>,
}

/// A tenant's quotas: those that hold, and its overrides of its tier's.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TenantQuotasResponse {
    pub tenant_id: String,
    #[schema(schema_with = tier)]
    pub tier: &'static str,
    pub quotas: QuotasBody,
    pub overrides: OverridesBody,
}

fn quotas_response(t: &Tenant) -> TenantQuotasResponse {
    TenantQuotasResponse {
        tenant_id: t.id.as_str().to_owned(),
        tier: t.tier.as_str(),
        quotas: QuotasBody::from(t.quotas()),
        overrides: OverridesBody::from(&t.overrides),
    }
}

/// One quota's use: `limit` `null` is unlimited.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UsageBody {
    pub used: u64,
    #[schema(required = true)]
    pub limit: Option<u64>,
}

/// The tenant's events.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TenantEventsBody {
    pub total_events: u64,
    pub total_entities: u64,
    pub total_event_types: u64,
    pub last_position: u64,
}

/// `GET /api/v1/tenants/{id}/stats`. `usage` maps each quota's name (`max_events_per_day`,
/// ...) to its use.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TenantStatsResponse {
    pub tenant_id: String,
    #[schema(schema_with = tier)]
    pub tier: &'static str,
    pub active: bool,
    pub usage: BTreeMap<&'static str, UsageBody>,
    pub events: TenantEventsBody,
}

fn stats_response(s: &TenantStats) -> TenantStatsResponse {
    let quotas = s.tenant.quotas();
    let usage = s
        .usage
        .iter()
        .map(|u| {
            debug_assert_eq!(u.limit, quota_limit(&quotas, u.kind));
            (
                u.kind.as_str(),
                UsageBody {
                    used: u.used,
                    limit: u.limit,
                },
            )
        })
        .collect();
    TenantStatsResponse {
        tenant_id: s.tenant.id.as_str().to_owned(),
        tier: s.tenant.tier.as_str(),
        active: s.tenant.active,
        usage,
        events: TenantEventsBody {
            total_events: s.events.total_events,
            total_entities: s.events.total_entities,
            total_event_types: s.events.total_event_types,
            last_position: s.events.last_position,
        },
    }
}

// ---------------------------------------------------------------------------------------------
// Handlers

/// `GET /api/v1/tenants`.
pub async fn list(
    State(state): State<AppState>,
    CallerExtractor(caller): CallerExtractor,
) -> Result<Response, ApiError> {
    let list = tenants(&state)?.list(&caller).await?;
    let tenants: Vec<TenantResponse> = list.iter().map(TenantResponse::from).collect();
    Ok(Json(TenantListResponse {
        total: tenants.len(),
        tenants,
    })
    .into_response())
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
    Ok(Json(DeletedResponse::new(&id)).into_response())
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
