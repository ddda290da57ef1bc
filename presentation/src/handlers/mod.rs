//! Route handlers. Each one extracts its input (the caller, the body or parameters, with
//! problem documents for anything malformed), calls one use case with the caller, and shapes the
//! answer with the [`dto`](crate::dto) types.
//!
//! - [`events`]: appending, querying, one event by id.
//! - [`entities`]: an entity's stream and state, and the catalog (entities, event types, stats).
//! - [`compaction`]: triggering compaction of the store's files, and its figures.
//! - [`consumers`]: durable consumers (cursor, poll, ack).
//! - [`stream`]: following the log over WebSocket and Server-Sent Events.
//! - [`health`]: liveness and readiness.
//! - [`schemas`]: the schema registry (its own `routes()`).
//! - [`snapshots`]: manual snapshots, listing, the latest of an entity (with their routes).
//! - [`audit`]: the audit log; [`policies`]: the policy engine's routes.
//! - [`projections`]: projections, their state, rebuilds.
//! - [`consumer_groups`]: consumer groups (competing consumers): polls, acks, parked messages.
//! - [`replay`]: replay jobs.
//! - [`tenants`]: tenants, their quotas and stats.
//! - [`webhooks`]: webhooks and their delivery logs.
//! - [`pipelines`]: stream pipelines, their figures and result tables.
//! - [`analytics`]: the analytics routes, the query DSL and SQL.
//! - [`metrics`]: the Prometheus exposition.
//! - [`docs`]: the OpenAPI document and the docs page.
//! - [`console`]: the web console (its page and files, compiled in).
//! - here: the fallbacks for unknown routes (404) and methods (405), and panics (500), so that
//!   every answer of the server is JSON.

pub mod analytics;
pub mod audit;
pub mod auth;
pub mod backups;
pub mod compaction;
pub mod console;
pub mod consumer_groups;
pub mod consumers;
pub mod docs;
pub mod entities;
pub mod events;
pub mod health;
pub mod mcp;
pub mod metrics;
pub mod pipelines;
pub mod policies;
pub mod projections;
pub mod replay;
pub mod schemas;
pub mod snapshots;
pub mod stream;
pub mod tenants;
pub mod webhooks;

use std::any::Any;

use axum::response::{IntoResponse, Response};

use crate::error::ApiError;

/// Any path no route matches.
pub async fn not_found(method: axum::http::Method) -> ApiError {
    crate::metrics::record_unmatched(
        &method,
        axum::http::StatusCode::NOT_FOUND,
        std::time::Instant::now(),
    );
    ApiError::not_found("no route matches this path")
}

/// A known path with a method it does not support (axum adds the `Allow` header).
pub async fn method_not_allowed(method: axum::http::Method) -> ApiError {
    crate::metrics::record_unmatched(
        &method,
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        std::time::Instant::now(),
    );
    ApiError::method_not_allowed()
}

/// The answer when a handler panics: a 500 whose cause (the panic message) is only logged.
pub fn panicked(panic: Box<dyn Any + Send + 'static>) -> Response {
    let message = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned());
    ApiError::internal(anyhow::anyhow!("handler panicked: {message}")).into_response()
}
