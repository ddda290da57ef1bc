//! The tenancy route layer, between authentication and authorization:
//!
//! 1. **Tenant status**: the caller's tenant must exist and be active, else 403 (a deactivated
//!    or deleted tenant's credentials stop working at once on the node that changed it, within
//!    [`TENANT_CACHE_MILLIS`](allsource_application::use_cases::TENANT_CACHE_MILLIS) elsewhere).
//! 2. **Rate limit**: a token bucket per tenant (`t:<tenant>`), sized by the tenant's tier, and
//!    for API keys one more per key (`k:<tenant>:<key id>`) at half the tier's rate, so one
//!    runaway key cannot spend its tenant's whole budget. Every response of a limited route
//!    carries `X-RateLimit-Limit` (bucket size), `X-RateLimit-Remaining` (whole tokens left) and
//!    `X-RateLimit-Reset` (seconds until the bucket is full), from the tighter bucket; a refusal
//!    is 429 `rate_limited` with `Retry-After`. Requests without a caller (public routes called
//!    without credentials, such as login) share one bucket per client address (when the server
//!    knows it, else one for all) at the `free` tier's rate. `/health` and `/health/ready` are
//!    never limited and carry no headers: load balancers probe them and must not be refused.
//!    When the limiter's store fails (Redis down), requests pass (fail open) with a warning.
//! 3. **Queries per hour**: every `GET` route that needs `read` counts one query of the
//!    tenant's `max_queries_per_hour` quota; over it, 429 `quota_exceeded`.

use std::net::SocketAddr;
use std::sync::Arc;

use allsource_application::Caller;
use allsource_application::Principal;
use allsource_application::ports::{RateDecision, RateLimiter};
use allsource_application::quota::{QuotaGate, QuotaKind};
use allsource_application::use_cases::Tenants;
use allsource_domain::{Permission, RateLimit, Tier};
use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::AppState;
use crate::access::{Access, access_for};
use crate::error::ApiError;

/// Tenancy of the router: the tenant use cases (tenant status, tiers, quotas) and the rate
/// limiter. Both optional: [`Tenancy::off`] serves every caller with no limits (tests of other
/// features, embedding).
#[derive(Clone, Default)]
pub struct Tenancy {
    /// `None`: every tenant is active and unlimited, and the tenant routes answer 404.
    pub tenants: Option<Tenants>,
    /// `None`: no rate limiting and no `X-RateLimit-*` headers (`rate_limit.enabled = false`).
    pub rate_limiter: Option<Arc<dyn RateLimiter>>,
}

impl Tenancy {
    /// No tenant checks, no quotas on reads, no rate limits.
    pub fn off() -> Self {
        Self::default()
    }
}

/// The route layer (see the module docs).
pub async fn guard(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let tenancy = &state.tenancy;
    let Some(path) = request.extensions().get::<MatchedPath>() else {
        return next.run(request).await;
    };
    if path.as_str().starts_with("/health") {
        return next.run(request).await;
    }
    let access = access_for(request.method(), path.as_str());
    let caller = request.extensions().get::<Caller>().cloned();
    let mut decision = None;
    match &caller {
        Some(caller) => {
            let mut limit = Tier::Unlimited.rate_limit();
            if let Some(tenants) = &tenancy.tenants {
                match tenants.active_rate_limit(caller.tenant()).await {
                    Ok(l) => limit = l,
                    Err(e) => return ApiError::from(e).into_response(),
                }
            }
            if let Some(limiter) = &tenancy.rate_limiter {
                decision = limit_caller(limiter.as_ref(), caller, limit).await;
            }
        }
        None => {
            if let Some(limiter) = &tenancy.rate_limiter {
                let client = request
                    .extensions()
                    .get::<ConnectInfo<SocketAddr>>()
                    .map_or_else(|| "unknown".to_owned(), |c| c.0.ip().to_string());
                decision = checked(
                    limiter.as_ref(),
                    &format!("anon:{client}"),
                    Tier::Free.rate_limit(),
                )
                .await;
            }
        }
    }
    if let Some(d) = decision
        && !d.allowed
    {
        let response = ApiError::rate_limited(
            format!(
                "rate limit exceeded: {} requests at once, retry in {} s",
                d.limit, d.retry_after_secs
            ),
            d.retry_after_secs,
        )
        .into_response();
        return with_headers(response, &d);
    }
    if let (Some(caller), Some(tenants)) = (&caller, &tenancy.tenants)
        && request.method() == Method::GET
        && access == Some(Access::Requires(Permission::Read))
        && let Err(e) = tenants
            .consume(caller.tenant(), QuotaKind::QueriesPerHour, 1)
            .await
    {
        let response = ApiError::from(e).into_response();
        return match decision {
            Some(d) => with_headers(response, &d),
            None => response,
        };
    }
    let response = next.run(request).await;
    match decision {
        Some(d) => with_headers(response, &d),
        None => response,
    }
}

/// The tenant's bucket, and the API key's when the caller is one; the tighter answer wins.
async fn limit_caller(
    limiter: &dyn RateLimiter,
    caller: &Caller,
    limit: RateLimit,
) -> Option<RateDecision> {
    let tenant = checked(limiter, &format!("t:{}", caller.tenant().as_str()), limit).await;
    let Principal::ApiKey { key_id, .. } = caller.principal() else {
        return tenant;
    };
    if tenant.is_some_and(|d| !d.allowed) {
        return tenant;
    }
    let per_key = RateLimit {
        per_second: (limit.per_second / 2).max(1),
        burst: (limit.burst / 2).max(1),
    };
    let key = checked(
        limiter,
        &format!("k:{}:{key_id}", caller.tenant().as_str()),
        per_key,
    )
    .await;
    match (tenant, key) {
        (Some(t), Some(k)) => Some(if !k.allowed || k.remaining < t.remaining {
            k
        } else {
            t
        }),
        (t, k) => t.or(k),
    }
}

/// One bucket; a failing limiter lets the request through (fail open) and says so in the log.
async fn checked(limiter: &dyn RateLimiter, key: &str, limit: RateLimit) -> Option<RateDecision> {
    match limiter.check(key, limit).await {
        Ok(d) => Some(d),
        Err(e) => {
            tracing::warn!(error = %e, backend = limiter.backend(), "rate limiter failed; request let through");
            None
        }
    }
}

fn with_headers(mut response: Response, d: &RateDecision) -> Response {
    let headers = response.headers_mut();
    headers.insert("x-ratelimit-limit", HeaderValue::from(d.limit));
    headers.insert("x-ratelimit-remaining", HeaderValue::from(d.remaining));
    headers.insert("x-ratelimit-reset", HeaderValue::from(d.reset_secs));
    response
}
