//! # allsource-presentation
//!
//! The HTTP face of AllSource: the axum router for the REST contract (`API.md`), the HTTP
//! request and response bodies, the mapping of use-case errors to RFC 9457 problem documents,
//! and the middleware every request goes through.
//!
//! The crate depends on `application` (use cases, ports) and `domain`, never on
//! `infrastructure`: the composition root (`bin`) builds the use cases and hands them over.
//!
//! # Public API
//!
//! ```text
//! pub struct AppServices { pub append: AppendEvents, pub reads: ReadEvents, pub health: Health,
//!                          pub auth: AuthMode, pub admission: Admission,
//!                          pub compaction: Compaction, pub audit: AuditTrail,
//!                          pub policies: Policies, pub projections: Projections,
//!                          pub replays: ReplayJobs, pub schemas: Arc<SchemaRegistry>,
//!                          pub snapshots: Snapshots, pub identity: Option<Identity>,
//!                          pub tenants: Option<Tenants>,
//!                          pub consumer_groups: ConsumerGroups,
//!                          pub webhooks: Webhooks,
//!                          pub pipelines: Pipelines,
//!                          pub analytics: Analytics }          // use cases only
//! pub struct AppState(Arc<AppServices>);   // From<AppServices>, Deref<Target = AppServices>
//! pub struct HttpLimits { pub max_body_bytes: usize,      // Default: 64 MiB
//!                         pub stream_send_timeout: Duration } // Default: 30 s
//! pub fn router(state: AppState, limits: HttpLimits) -> axum::Router;
//! pub fn served_routes() -> Vec<Route>;    // what the router serves: method, path, access, ...
//! pub async fn serve(listener: TcpListener, router: Router,
//!                    shutdown: impl Future<Output = ()>) -> io::Result<()>;
//! ```
//!
//! ```text
//! let app = allsource_presentation::router(state, HttpLimits::default());
//! allsource_presentation::serve(listener, app, shutdown_signal).await?;
//! ```
//!
//! The router is complete: the routes of [`routes::api_routes`], a problem+json answer for
//! unknown routes (404) and wrong methods (405), and these layers, outermost first:
//! 1. `x-request-id`: kept when the client sent one, else a new UUID; copied onto the response.
//! 2. A `tracing` span per request (`request` with `method`, `path`, `request_id`,
//!    `trace_id`), so everything logged while serving the request, including the cause of a
//!    500, carries the id; a `traceparent` header continues the caller's trace, and the
//!    request's trace context is returned on the response ([`trace_context`]).
//! 3. Any error answered below without a problem document becomes one ([`limits`]).
//! 4. The request-head limits: target ≤ 8 KiB (414), headers ≤ 64 KiB and ≤ 100 lines (431).
//! 5. A panic in a handler becomes a 500 problem (logged, never shown).
//! 6. The request body limit ([`HttpLimits::max_body_bytes`]); over it, 413 `payload_too_large`.
//! 7. Per route, after routing, the request layer of [`guard`]: authenticate, admission (tenant
//!    status, rate limit, query quota), authorize, unknown query parameters, policies.
//!
//! # Adding a route
//! Add it to its handler module's `routes()` with its access
//! (`.get("/api/v1/x", Requires(Read), handler)`, or `.add(Route::get(..).with_query(), ..)`
//! when it takes query parameters), and a test. Nothing else lists routes.
//!
//! # Layout
//! - [`routes`]: [`Route`] (a route's declaration) and [`Routes`] (the builder each handler
//!   module returns), [`served_routes`].
//! - [`guard`]: the one request layer, with the route's declaration.
//! - [`openapi`]: the OpenAPI 3.1 document, built from the route table.
//! - [`handlers`]: one function per route, each module with its `routes()`, and the fallbacks.
//! - [`dto`]: request bodies and query parameters (unknown fields refused), response bodies
//!   (field by field as in `API.md`).
//! - [`error`]: [`ApiError`], the one error type of the crate, and its problem documents.
//! - [`extract`]: extractors that fail with problem documents: JSON bodies (content type, size,
//!   field paths of type errors), query parameters, path segments.
//! - [`access`]: [`Access`], [`AuthMode`], the authentication and authorization steps.
//! - [`admission`]: the admission decision as headers and 403/429.
//! - [`enforce`]: the policy step: deny → 403, rate limit → 429, warn → `X-Policy-Warning`.
//! - [`auth`]: [`CallerExtractor`], the caller for handlers.
//! - [`limits`]: the request-head limits and problem documents for bare errors.
//! - [`metrics`]: the HTTP metrics and the `/metrics` exposition ([`MetricsEndpoint`]).
//! - [`mcp`]: the MCP server (tools for AI agents), served at `POST /mcp` and by
//!   `allsource mcp` over stdio.
//! - [`trace_context`]: W3C `traceparent` on requests, responses and appended events.
//! - [`serve`](mod@serve): the server loop (hyper's own limits above ours, graceful shutdown).
#![forbid(unsafe_code)]

pub mod access;
pub mod admission;
pub mod auth;
pub mod dto;
pub mod enforce;
pub mod error;
pub mod extract;
pub mod guard;
pub mod handlers;
pub mod limits;
pub mod mcp;
pub mod metrics;
pub mod openapi;
pub mod routes;
pub mod serve;
pub mod trace_context;

use allsource_application::analytics::Analytics;
use allsource_application::pipelines::Pipelines;
use allsource_application::projections::{Projections, ReplayJobs};
use allsource_application::use_cases::consumer_groups::ConsumerGroups;
use allsource_application::use_cases::{
    Admission, AppendEvents, AuditTrail, Compaction, Consumers, Health, Policies, ReadEvents,
    SchemaRegistry, Snapshots, Tenants,
};
use allsource_application::webhooks::Webhooks;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::HeaderName;
use axum::{Extension, Router, middleware};
use std::sync::Arc;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

pub use access::{Access, AuthMode};
pub use auth::CallerExtractor;
pub use error::ApiError;
pub use limits::HeadLimits;
pub use metrics::{MetricsEndpoint, scrape_only_router, with_metrics};
pub use routes::{Route, Routes, served_routes};
pub use serve::serve;

/// The header that carries the request id.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// What the routes call, shared by every request: [`AppServices`] behind one `Arc`.
///
/// Every route layer and handler takes the state by value; one reference count to bump instead
/// of the dozens of `Arc`s inside the services keeps that cheap (it was ~8% of server CPU on
/// the read path when the services were cloned field by field).
#[derive(Clone)]
pub struct AppState(Arc<AppServices>);

impl From<AppServices> for AppState {
    fn from(services: AppServices) -> Self {
        Self(Arc::new(services))
    }
}

impl std::ops::Deref for AppState {
    type Target = AppServices;

    fn deref(&self) -> &AppServices {
        &self.0
    }
}

/// The use cases the routes call: no ports, no pools and no configuration.
#[derive(Clone)]
pub struct AppServices {
    pub append: AppendEvents,
    pub reads: ReadEvents,
    /// `/health` and `/health/ready`.
    pub health: Health,
    /// How callers are authenticated.
    pub auth: AuthMode,
    /// Tenant status, rate limits and query quotas of every request ([`Admission::off`]
    /// for none).
    pub admission: Admission,
    /// Projections: definitions, status, state.
    pub projections: Projections,
    /// Replay (rebuild) jobs.
    pub replays: ReplayJobs,
    /// The schema registry (`/api/v1/schemas...`).
    pub schemas: Arc<SchemaRegistry>,
    /// The identity use cases (`/api/v1/auth/*`); `None` with authentication off.
    pub identity: Option<allsource_application::use_cases::identity::Identity>,
    /// Snapshots of entity state (`/api/v1/snapshots`).
    pub snapshots: Snapshots,
    /// Compaction of the store's files (over a `NoCompaction` for backends without files).
    pub compaction: Compaction,
    /// The audit log (`GET /api/v1/audit`; refusals are recorded to it).
    pub audit: AuditTrail,
    /// The policy engine (`/api/v1/policies`, and the policy step of every request).
    pub policies: Policies,
    /// The tenant use cases (`/api/v1/tenants...`); `None`: tenancy is off and those routes
    /// answer 404.
    pub tenants: Option<Tenants>,
    /// Durable consumers and the followers of the log (WebSocket, SSE).
    pub consumers: Consumers,
    /// Consumer groups (`/api/v1/consumer-groups...`).
    pub consumer_groups: ConsumerGroups,
    /// Webhooks (`/api/v1/webhooks...`).
    pub webhooks: Webhooks,
    /// Stream pipelines (`/api/v1/pipelines...`).
    pub pipelines: Pipelines,
    /// Analytics, the query DSL and SQL (`/api/v1/analytics/*`, `/api/v1/query`,
    /// `/api/v1/sql`).
    pub analytics: Analytics,
    /// Backups of the whole store (operators only).
    pub backups: allsource_application::use_cases::Backups,
}

/// HTTP-level limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// Largest request body accepted, in bytes; beyond it, 413 `payload_too_large`.
    pub max_body_bytes: usize,
    /// How long a WebSocket client may take to accept one frame before it is closed as too
    /// slow (1008).
    pub stream_send_timeout: std::time::Duration,
}

impl HttpLimits {
    /// 64 MiB: room for a large batch, while one request cannot exhaust memory.
    pub const DEFAULT_MAX_BODY_BYTES: usize = 64 * 1024 * 1024;
    /// 30 s: a client that is merely busy catches up; a stuck one does not hold its
    /// subscription for ever.
    pub const DEFAULT_STREAM_SEND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            max_body_bytes: Self::DEFAULT_MAX_BODY_BYTES,
            stream_send_timeout: Self::DEFAULT_STREAM_SEND_TIMEOUT,
        }
    }
}

/// The complete router of the REST API, with its middleware (see the crate docs).
pub fn router(state: AppState, limits: HttpLimits) -> Router {
    let api = api_router(state, limits);
    // `/mcp`'s tools call the router in process; the router they call is this one without
    // the endpoint (no tool calls `/mcp`), so there is no cycle.
    let endpoint = handlers::mcp::McpEndpoint::new(api.clone(), limits.max_body_bytes);
    api.layer(Extension(endpoint))
}

/// [`router`] without the MCP endpoint's state (`POST /mcp` answers 404 there).
fn api_router(state: AppState, limits: HttpLimits) -> Router {
    let request_id = HeaderName::from_static(REQUEST_ID_HEADER);
    routes::api_routes()
        .into_router(&state)
        // After the routes: it applies to the routes registered so far.
        .method_not_allowed_fallback(handlers::method_not_allowed)
        .fallback(handlers::not_found)
        .with_state(state)
        // `layer` wraps everything added before, so the last layer runs first: the request id
        // is set, then the span (which records it) opens, then panics are caught inside the
        // span, so their log line carries the id too.
        .layer(DefaultBodyLimit::max(limits.max_body_bytes))
        // So that the 413 can name the limit.
        .layer(Extension(limits))
        // One render cache of live events per router (positions are unique per store).
        .layer(Extension(std::sync::Arc::new(
            handlers::stream::RenderedEvents::new(),
        )))
        .layer(CatchPanicLayer::custom(handlers::panicked))
        // Our own limits on the request head (414, 431), and a problem document for any error
        // answered without a body by what is below.
        .layer(middleware::from_fn(limits::head_limits))
        .layer(middleware::from_fn(limits::problem_for_bare_errors))
        // Inside the span: the request's trace context (`traceparent`).
        .layer(middleware::from_fn(trace_context::trace_context))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(request_span)
                // 5xx are logged once, where their cause is known (`ApiError`, `panicked`).
                .on_failure(()),
        )
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
}

/// The span every request is served in.
fn request_span(request: &Request) -> tracing::Span {
    let request_id = request
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let span = tracing::info_span!(
        "request",
        method = %request.method(),
        path = %request.uri().path(),
        request_id = %request_id,
        trace_id = tracing::field::Empty,
    );
    trace_context::continue_trace(&span, request.headers());
    span
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod policy_tests;
