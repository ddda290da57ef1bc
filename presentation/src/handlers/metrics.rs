//! `GET /metrics`: the Prometheus text exposition (see [`crate::metrics`]).
//!
//! The figures cover every tenant (requests per route, events in the store), so with a
//! credential it needs the `metrics` permission *and* a caller of the operators' tenant
//! `default`; another tenant's credential gets 403. `metrics.public` makes it public on the
//! main port (the route is declared with [`Route::metrics_exposure`], which the request layer
//! reads). It is rate-limited like every route (a deactivated tenant's credential gets 403
//! there), and not counted as a query. With metrics off (no [`MetricsEndpoint`] given to the
//! router) it answers 404.

use axum::Extension;
use axum::response::{IntoResponse, Response};

use crate::access::Access::Requires;
use crate::error::ApiError;
use crate::metrics::{MetricsEndpoint, exposition};
use crate::routes::{Route, Routes};
use allsource_application::Caller;
use allsource_domain::Permission::Metrics;
use allsource_domain::TenantId;

/// The metrics route.
pub fn routes() -> Routes {
    Routes::new().add(
        Route::get("/metrics", Requires(Metrics))
            .metrics_exposure()
            .summary("The Prometheus text exposition")
            .media_type("text/plain")
            .problems(&[404]),
        scrape,
    )
}

/// `GET /metrics` → 200 `text/plain; version=0.0.4`.
pub async fn scrape(
    endpoint: Option<Extension<MetricsEndpoint>>,
    caller: Option<Extension<Caller>>,
) -> Response {
    let Some(Extension(endpoint)) = endpoint else {
        return ApiError::not_found("metrics are off on this server (metrics.enabled = false)")
            .into_response();
    };
    let operator = caller.is_some_and(|Extension(c)| *c.tenant() == TenantId::default_tenant());
    if !endpoint.is_public() && !operator {
        return ApiError::forbidden(
            "the metrics cover every tenant: only callers of the operators' tenant 'default' \
             may read them",
        )
        .into_response();
    }
    exposition(&endpoint).await
}
