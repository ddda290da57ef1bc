//! Route handlers. Each one extracts its input (the caller, the body or parameters, with
//! problem documents for anything malformed), calls one use case with the caller, and shapes the
//! answer with the [`dto`](crate::dto) types.
//!
//! - [`events`]: appending, querying, one event by id.
//! - [`entities`]: an entity's stream and state, and the catalog (entities, event types, stats).
//! - [`health`]: liveness and readiness.
//! - here: the fallbacks for unknown routes (404) and methods (405), and panics (500), so that
//!   every answer of the server is JSON.

pub mod entities;
pub mod events;
pub mod health;

use std::any::Any;

use axum::response::{IntoResponse, Response};

use crate::error::ApiError;

/// Any path no route matches.
pub async fn not_found() -> ApiError {
    ApiError::not_found("no route matches this path")
}

/// A known path with a method it does not support (axum adds the `Allow` header).
pub async fn method_not_allowed() -> ApiError {
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
