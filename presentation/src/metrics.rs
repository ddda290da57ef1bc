//! Prometheus metrics of the HTTP layer, and what `GET /metrics` serves.
//!
//! Measurements go through the [`metrics`] facade: a counter or histogram recorded here (or by
//! the use cases and the engine) is a few atomic operations on the recorder the binary
//! installed, and nothing at all when none is (`metrics.enabled = false`). The binary hands
//! the rendering side, a [`MetricsEndpoint`], to the router with [`with_metrics`].
//!
//! Recorded here, per route template (never the raw path) and method:
//! - `allsource_http_requests_total{method,route,status}`: every answer, refusals included;
//! - `allsource_http_request_errors_total{method,route,class}`: answers of 4xx (`client`)
//!   and 5xx (`server`);
//! - `allsource_http_request_duration_seconds{method,route}`: from the request layer to the
//!   response head (a stream's duration is its opening);
//! - `allsource_problems_total{code}`: problem documents by `code`;
//! - `allsource_refusals_total{reason}`: `rate_limited` and `quota_exceeded` answers.
//!
//! Requests no route matches count under `route="unmatched"`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use axum::Extension;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::future::BoxFuture;
use metrics_exporter_prometheus::PrometheusHandle;

use crate::error::ErrorCode;
use crate::routes::Route;

/// Work done just before a scrape is rendered: figures that are cheaper to read when asked
/// than to keep current (lags, store totals), set as gauges.
pub type Collector = Arc<dyn Fn() -> BoxFuture<'static, ()> + Send + Sync>;

/// What `GET /metrics` renders, and whether it needs a credential.
#[derive(Clone)]
pub struct MetricsEndpoint {
    handle: PrometheusHandle,
    public: Arc<AtomicBool>,
    collectors: Arc<Vec<Collector>>,
}

impl MetricsEndpoint {
    /// `public`: the main port serves `/metrics` without a credential (`metrics.public`).
    pub fn new(handle: PrometheusHandle, public: bool, collectors: Vec<Collector>) -> Self {
        Self {
            handle,
            public: Arc::new(AtomicBool::new(public)),
            collectors: Arc::new(collectors),
        }
    }

    /// Whether `/metrics` on the main port is served without a credential.
    pub fn is_public(&self) -> bool {
        self.public.load(Ordering::Acquire)
    }

    /// Changes the exposure (configuration reload); takes effect on the next request.
    pub fn set_public(&self, public: bool) {
        self.public.store(public, Ordering::Release);
    }

    /// The text exposition, after running the collectors.
    pub async fn render(&self) -> String {
        for collect in self.collectors.iter() {
            collect().await;
        }
        self.handle.render()
    }
}

/// Serves `GET /metrics` from `endpoint` on `router`.
pub fn with_metrics(router: axum::Router, endpoint: MetricsEndpoint) -> axum::Router {
    router.layer(Extension(endpoint))
}

/// A router that serves only `GET /metrics`, without a credential: for `metrics.listen`, a
/// separate address that only the scraper can reach.
pub fn scrape_only_router(endpoint: MetricsEndpoint) -> axum::Router {
    axum::Router::new()
        .route(
            "/metrics",
            axum::routing::get(
                |Extension(endpoint): Extension<MetricsEndpoint>| async move {
                    exposition(&endpoint).await
                },
            ),
        )
        .fallback(crate::handlers::not_found)
        .layer(Extension(endpoint))
}

/// The Prometheus text exposition (format 0.0.4) as a response.
pub async fn exposition(endpoint: &MetricsEndpoint) -> Response {
    let body = endpoint.render().await;
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        body,
    )
        .into_response()
}

/// Records one answer of `route` (see the module docs).
pub fn record_request(route: &Route, status: StatusCode, started: Instant) {
    record(route.verb.as_str(), route.path, status, started);
}

/// Records one answer to a request that no route matched.
pub fn record_unmatched(method: &axum::http::Method, status: StatusCode, started: Instant) {
    let method = match *method {
        axum::http::Method::GET => "GET",
        axum::http::Method::POST => "POST",
        axum::http::Method::PUT => "PUT",
        axum::http::Method::DELETE => "DELETE",
        axum::http::Method::PATCH => "PATCH",
        axum::http::Method::HEAD => "HEAD",
        axum::http::Method::OPTIONS => "OPTIONS",
        _ => "other",
    };
    record(method, "unmatched", status, started);
}

fn record(method: &'static str, route: &'static str, status: StatusCode, started: Instant) {
    let code = status_label(status);
    metrics::counter!(
        "allsource_http_requests_total",
        "method" => method, "route" => route, "status" => code
    )
    .increment(1);
    let class = if status.is_server_error() {
        Some("server")
    } else if status.is_client_error() {
        Some("client")
    } else {
        None
    };
    if let Some(class) = class {
        metrics::counter!(
            "allsource_http_request_errors_total",
            "method" => method, "route" => route, "class" => class
        )
        .increment(1);
    }
    metrics::histogram!(
        "allsource_http_request_duration_seconds",
        "method" => method, "route" => route
    )
    .record(started.elapsed().as_secs_f64());
}

/// Records a problem document of `code`.
pub fn record_problem(code: ErrorCode) {
    metrics::counter!("allsource_problems_total", "code" => code.as_str()).increment(1);
    if matches!(code, ErrorCode::RateLimited | ErrorCode::QuotaExceeded) {
        metrics::counter!("allsource_refusals_total", "reason" => code.as_str()).increment(1);
    }
}

/// The status as a label without allocating: the codes the server answers, else the class.
fn status_label(status: StatusCode) -> &'static str {
    match status.as_u16() {
        101 => "101",
        200 => "200",
        201 => "201",
        202 => "202",
        204 => "204",
        304 => "304",
        400 => "400",
        401 => "401",
        403 => "403",
        404 => "404",
        405 => "405",
        406 => "406",
        408 => "408",
        409 => "409",
        410 => "410",
        412 => "412",
        413 => "413",
        414 => "414",
        415 => "415",
        422 => "422",
        428 => "428",
        429 => "429",
        431 => "431",
        500 => "500",
        501 => "501",
        502 => "502",
        503 => "503",
        504 => "504",
        s if s < 200 => "1xx",
        s if s < 300 => "2xx",
        s if s < 400 => "3xx",
        s if s < 500 => "4xx",
        _ => "5xx",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_labels_are_the_codes_or_their_class() {
        assert_eq!(status_label(StatusCode::OK), "200");
        assert_eq!(status_label(StatusCode::TOO_MANY_REQUESTS), "429");
        assert_eq!(status_label(StatusCode::IM_A_TEAPOT), "4xx");
        assert_eq!(status_label(StatusCode::LOOP_DETECTED), "5xx");
        assert_eq!(status_label(StatusCode::PERMANENT_REDIRECT), "3xx");
    }
}
