//! `GET /health` (the process answers) and `GET /health/ready` (the store has recovered and
//! serves). Neither takes a caller: they are never behind authentication.

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};

use crate::AppState;
use crate::dto::{HealthResponse, HealthStorage, ReadyResponse};
use crate::error::ApiError;

/// `GET /health` → 200 `{"status": "healthy", "version", "storage": {"backend"}}`.
pub async fn health(State(state): State<AppState>) -> Json<HealthResponse> {
    Json(HealthResponse {
        status: "healthy",
        version: state.health.version,
        storage: HealthStorage {
            backend: state.health.store.backend(),
        },
    })
}

/// `GET /health/ready` → 200 `{"status": "ready"}` once recovery has finished, 503 before.
pub async fn ready(State(state): State<AppState>) -> Response {
    if state.health.store.is_ready() {
        Json(ReadyResponse { status: "ready" }).into_response()
    } else {
        ApiError::not_ready().into_response()
    }
}
