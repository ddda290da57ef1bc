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
//!
//! The request metrics are on every request's path, so their handles are resolved once per
//! thread and (method, route, status) and kept ([`record_request`]), once the binary has said
//! that the process's recorder is installed ([`recorder_installed`]). Resolving them on every
//! answer (what the facade's macros do) allocates the labels, hashes them and looks them up in
//! the recorder's registry behind a lock, twice per request.

use std::cell::RefCell;
use std::collections::HashMap;
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
///
/// One `Arc`: the router hands a clone to every request (an extension).
#[derive(Clone)]
pub struct MetricsEndpoint {
    inner: Arc<Endpoint>,
}

struct Endpoint {
    handle: PrometheusHandle,
    public: AtomicBool,
    collectors: Vec<Collector>,
}

impl MetricsEndpoint {
    /// `public`: the main port serves `/metrics` without a credential (`metrics.public`).
    pub fn new(handle: PrometheusHandle, public: bool, collectors: Vec<Collector>) -> Self {
        Self {
            inner: Arc::new(Endpoint {
                handle,
                public: AtomicBool::new(public),
                collectors,
            }),
        }
    }

    /// Whether `/metrics` on the main port is served without a credential.
    pub fn is_public(&self) -> bool {
        self.inner.public.load(Ordering::Acquire)
    }

    /// Changes the exposure (configuration reload); takes effect on the next request.
    pub fn set_public(&self, public: bool) {
        self.inner.public.store(public, Ordering::Release);
    }

    /// The text exposition, after running the collectors.
    pub async fn render(&self) -> String {
        for collect in &self.inner.collectors {
            collect().await;
        }
        self.inner.handle.render()
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

/// Whether the process's global recorder is installed ([`recorder_installed`]).
static RECORDER_INSTALLED: AtomicBool = AtomicBool::new(false);

/// Says that the process's global recorder is installed (it stays for the process): from now
/// on [`record_request`] keeps the handles it resolves. Before, the facade hands out no-op
/// handles, which must not be kept: they would stay no-ops once a recorder is installed.
pub fn recorder_installed() {
    RECORDER_INSTALLED.store(true, Ordering::Release);
}

thread_local! {
    /// This thread's handles of the request metrics, by route (its method, and the address of
    /// its `&'static` path: routes are declared once, and a path declared twice only gets two
    /// entries with the same handles) and status.
    static ANSWERS: RefCell<Answers> = RefCell::new(HashMap::new());
}

/// Handles of the request metrics, by route and status ([`ANSWERS`]).
type Answers = HashMap<(u8, usize, u16), Answer>;

/// Records one answer of `route` (see the module docs).
pub fn record_request(route: &Route, status: StatusCode, started: Instant) {
    if RECORDER_INSTALLED.load(Ordering::Acquire) {
        ANSWERS.with_borrow_mut(|answers| record_kept(answers, route, status, started));
    } else {
        Answer::resolve(route.verb.as_str(), route.path, status).record(started);
    }
}

/// Records one answer with the handles kept in `answers`, resolving them on the route's first
/// answer of `status`.
fn record_kept(answers: &mut Answers, route: &Route, status: StatusCode, started: Instant) {
    let key = (
        route.verb as u8,
        route.path.as_ptr() as usize,
        status.as_u16(),
    );
    answers
        .entry(key)
        .or_insert_with(|| Answer::resolve(route.verb.as_str(), route.path, status))
        .record(started);
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
    Answer::resolve(method, "unmatched", status).record(started);
}

/// The handles one answer records into: its status's counter, its error class's counter
/// (4xx and 5xx only) and its route's duration.
struct Answer {
    requests: metrics::Counter,
    errors: Option<metrics::Counter>,
    duration: metrics::Histogram,
}

impl Answer {
    fn resolve(method: &'static str, route: &'static str, status: StatusCode) -> Self {
        let requests = metrics::counter!(
            "allsource_http_requests_total",
            "method" => method, "route" => route, "status" => status_label(status)
        );
        let errors = error_class(status).map(|class| {
            metrics::counter!(
                "allsource_http_request_errors_total",
                "method" => method, "route" => route, "class" => class
            )
        });
        let duration = metrics::histogram!(
            "allsource_http_request_duration_seconds",
            "method" => method, "route" => route
        );
        Self {
            requests,
            errors,
            duration,
        }
    }

    fn record(&self, started: Instant) {
        self.requests.increment(1);
        if let Some(errors) = &self.errors {
            errors.increment(1);
        }
        self.duration.record(started.elapsed().as_secs_f64());
    }
}

/// The `class` of an error answer: `server` (5xx) or `client` (4xx); none for the others.
fn error_class(status: StatusCode) -> Option<&'static str> {
    if status.is_server_error() {
        Some("server")
    } else if status.is_client_error() {
        Some("client")
    } else {
        None
    }
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
    use crate::Access;
    use crate::routes::Verb;
    use allsource_domain::Permission;
    use metrics_exporter_prometheus::PrometheusBuilder;

    const APPEND: Route = Route::new(
        Verb::Post,
        "/api/v1/events",
        Access::Requires(Permission::Write),
    );

    /// The exposition of a recorder of its own after `record` (a local recorder: the process
    /// has no global one in these tests).
    fn rendered(record: impl FnOnce()) -> String {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, record);
        handle.render()
    }

    const STATUSES: [StatusCode; 4] = [
        StatusCode::CREATED,
        StatusCode::CREATED,
        StatusCode::CONFLICT,
        StatusCode::SERVICE_UNAVAILABLE,
    ];

    fn assert_recorded(exposition: &str) {
        let labels = r#"method="POST",route="/api/v1/events""#;
        for line in [
            format!(r#"allsource_http_requests_total{{{labels},status="201"}} 2"#),
            format!(r#"allsource_http_requests_total{{{labels},status="409"}} 1"#),
            format!(r#"allsource_http_requests_total{{{labels},status="503"}} 1"#),
            format!(r#"allsource_http_request_errors_total{{{labels},class="client"}} 1"#),
            format!(r#"allsource_http_request_errors_total{{{labels},class="server"}} 1"#),
            format!(r"allsource_http_request_duration_seconds_count{{{labels}}} 4"),
        ] {
            assert!(
                exposition.lines().any(|l| l == line),
                "{line} missing from:\n{exposition}"
            );
        }
    }

    #[test]
    fn answers_are_counted_by_route_status_and_error_class() {
        let started = Instant::now();
        let exposition = rendered(|| {
            for status in STATUSES {
                record_request(&APPEND, status, started);
            }
        });
        assert_recorded(&exposition);
    }

    #[test]
    fn kept_handles_record_what_resolving_every_time_records() {
        let started = Instant::now();
        let mut answers = Answers::new();
        let exposition = rendered(|| {
            for status in STATUSES {
                record_kept(&mut answers, &APPEND, status, started);
            }
        });
        assert_recorded(&exposition);
        // One entry per status; the second 201 reused the first one's handles.
        assert_eq!(answers.len(), 3);
    }

    #[test]
    fn successes_have_no_error_series() {
        let exposition = rendered(|| {
            record_kept(
                &mut Answers::new(),
                &APPEND,
                StatusCode::CREATED,
                Instant::now(),
            );
        });
        assert!(!exposition.contains("allsource_http_request_errors_total{"));
    }

    #[test]
    fn status_labels_are_the_codes_or_their_class() {
        assert_eq!(status_label(StatusCode::OK), "200");
        assert_eq!(status_label(StatusCode::TOO_MANY_REQUESTS), "429");
        assert_eq!(status_label(StatusCode::IM_A_TEAPOT), "4xx");
        assert_eq!(status_label(StatusCode::LOOP_DETECTED), "5xx");
        assert_eq!(status_label(StatusCode::PERMANENT_REDIRECT), "3xx");
    }
}
