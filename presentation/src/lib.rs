//! # allsource-presentation
//!
//! The HTTP face of AllSource: the axum router for the REST contract (`API.md`), request and
//! response DTOs, the mapping of use-case errors to RFC 9457 problem documents, and the
//! middleware every request goes through (request id, tracing span, body limit).
//!
//! The crate depends on `application` (use cases, ports) and `domain`, never on
//! `infrastructure`: the composition root hands it use-case handles.
//!
//! ```text
//! let router = allsource_presentation::router(AppState { append, reads, health }, HttpLimits { max_body_bytes });
//! axum::serve(listener, router).await?;
//! ```
//!
//! # Layout
//! - [`handlers`]: one function per route.
//! - [`dto`]: request/response bodies and query parameters.
//! - [`error`]: `ApiError` (problem+json).
//! - [`extract`]: JSON body and query extractors that fail with problem documents.
//! - [`auth`]: the caller of a request (tenant `default` until authentication exists).
#![forbid(unsafe_code)]

pub mod auth;
pub mod dto;
pub mod error;
pub mod extract;
pub mod handlers;

use std::sync::Arc;

use allsource_application::ports::EventStore;
use allsource_application::use_cases::{AppendEvents, ReadEvents};
use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::routing::{get, post};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

pub use error::ApiError;

/// What `/health` reports.
#[derive(Clone)]
pub struct HealthInfo {
    /// The server's version.
    pub version: &'static str,
    /// The store, for its backend name and readiness.
    pub store: Arc<dyn EventStore>,
}

/// Use-case handles the routes call (no pools, no configuration).
#[derive(Clone)]
pub struct AppState {
    pub append: AppendEvents,
    pub reads: ReadEvents,
    pub health: HealthInfo,
}

/// HTTP-level limits.
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    /// Largest request body accepted (413 beyond).
    pub max_body_bytes: usize,
}

/// The complete router with its middleware.
pub fn router(state: AppState, limits: HttpLimits) -> Router {
    let api = Router::new()
        .route("/api/v1/events", post(handlers::append_one))
        .route("/api/v1/events/batch", post(handlers::append_batch))
        .route("/api/v1/events/query", get(handlers::query))
        .route("/api/v1/events/{event_id}", get(handlers::event))
        .route("/api/v1/entities", get(handlers::entities))
        .route("/api/v1/entities/{entity_id}/events", get(handlers::stream))
        .route(
            "/api/v1/entities/{entity_id}/state",
            get(handlers::entity_state),
        )
        .route("/api/v1/event-types", get(handlers::event_types))
        .route("/api/v1/stats", get(handlers::stats))
        .route("/health", get(handlers::health))
        .route("/health/ready", get(handlers::ready))
        .fallback(handlers::not_found)
        .method_not_allowed_fallback(handlers::method_not_allowed)
        .with_state(state);
    api.layer(DefaultBodyLimit::max(limits.max_body_bytes))
        // Layers run outside-in from the last added: the id is set first, the span sees it,
        // and the response gets it back.
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(
            TraceLayer::new_for_http().make_span_with(|request: &Request| {
                let request_id = request
                    .headers()
                    .get("x-request-id")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default();
                tracing::info_span!(
                    "request",
                    method = %request.method(),
                    path = %request.uri().path(),
                    request_id = %request_id,
                )
            }),
        )
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
}

#[cfg(test)]
mod tests;
