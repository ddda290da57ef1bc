//! `GET /metrics`: the Prometheus text exposition (see [`crate::metrics`]).
//!
//! It needs the `metrics` permission, unless `metrics.public` makes it public on the main port
//! (the route is declared with [`Route::metrics_exposure`], which the request layer reads). It
//! is never rate-limited nor counted, like the health probes: a scraper must not be refused.
//! With metrics off (no [`MetricsEndpoint`] given to the router) it answers 404.

use axum::Extension;
use axum::response::{IntoResponse, Response};

use crate::access::Access::Requires;
use crate::error::ApiError;
use crate::metrics::{MetricsEndpoint, exposition};
use crate::routes::{Route, Routes};
use allsource_domain::Permission::Metrics;

/// The metrics route.
pub fn routes() -> Routes {
    Routes::new().add(
        Route::get("/metrics", Requires(Metrics))
            .unlimited()
            .metrics_exposure()
            .summary("The Prometheus text exposition")
            .media_type("text/plain")
            .problems(&[404]),
        scrape,
    )
}

/// `GET /metrics` → 200 `text/plain; version=0.0.4`.
pub async fn scrape(endpoint: Option<Extension<MetricsEndpoint>>) -> Response {
    match endpoint {
        Some(Extension(endpoint)) => exposition(&endpoint).await,
        None => ApiError::not_found("metrics are off on this server (metrics.enabled = false)")
            .into_response(),
    }
}
