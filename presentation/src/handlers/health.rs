//! `GET /health` (the process answers) and `GET /health/ready` (the store has recovered and
//! serves). Both are public, never rate-limited and carry no rate headers: load balancers probe
//! them and must not be refused.

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};

use crate::AppState;
use crate::access::Access::Public;
use crate::dto::{HealthResponse, HealthStorage, ReadyResponse};
use crate::error::ApiError;
use crate::routes::{Route, Routes};

/// The health routes.
pub fn routes() -> Routes {
    Routes::new()
        .add(
            Route::get("/health", Public)
                .unlimited()
                .returns::<HealthResponse>(),
            health,
        )
        .add(
            Route::get("/health/ready", Public)
                .unlimited()
                .returns::<ReadyResponse>(),
            ready,
        )
}

/// `GET /health` → 200 `{"status": "healthy", "version", "storage": {"backend"}}`.
pub async fn health(State(state): State<AppState>) -> Json<HealthResponse> {
    let report = state.health.report();
    Json(HealthResponse {
        status: "healthy",
        version: report.version,
        storage: HealthStorage {
            backend: report.backend,
        },
    })
}

/// `GET /health/ready` → 200 `{"status": "ready"}` once recovery has finished, 503 before.
pub async fn ready(State(state): State<AppState>) -> Response {
    if state.health.is_ready() {
        Json(ReadyResponse { status: "ready" }).into_response()
    } else {
        ApiError::not_ready().into_response()
    }
}
