//! `POST /api/v1/compaction/trigger` and `GET /api/v1/compaction/stats`: merging the embedded
//! engine's small Parquet files, on demand, and its figures. Both are operator routes (they
//! need the `admin` permission once permissions are enforced).
//!
//! A backend without files to compact (memory, postgres) answers the trigger with 200 and
//! `{"compacted": false, "reason": "..."}` rather than an error: asking is not a mistake, and
//! the same script can run against every node.

use allsource_application::ports::{CompactionError, CompactionReport, CompactionStats};
use allsource_application::use_cases::CompactionRequestError;
use allsource_domain::Permission::Admin;
use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::AppState;
use crate::access::Access::Requires;
use crate::auth::CallerExtractor;
use crate::dto::timestamp;
use crate::error::ApiError;
use crate::routes::{Route, Routes};

impl From<CompactionError> for ApiError {
    fn from(e: CompactionError) -> Self {
        match e {
            CompactionError::Unavailable(reason) => ApiError::unavailable(reason),
            CompactionError::Internal(cause) => ApiError::internal(cause),
        }
    }
}

impl From<CompactionRequestError> for ApiError {
    fn from(e: CompactionRequestError) -> Self {
        match e {
            CompactionRequestError::Forbidden(why) => ApiError::forbidden(why),
            CompactionRequestError::Compaction(e) => e.into(),
        }
    }
}

/// Files and their bytes at one moment.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct FilesDto {
    pub files: u64,
    pub bytes: u64,
}

/// The body of `POST /api/v1/compaction/trigger` (and `last_run` in the stats).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CompactionReportDto {
    pub backend: String,
    pub compacted: bool,
    /// Why nothing was merged; `null` when `compacted`.
    #[schema(required = true)]
    pub reason: Option<String>,
    /// `api` or `policy`.
    pub trigger: String,
    pub started_at: String,
    pub duration_ms: u64,
    pub before: FilesDto,
    pub after: FilesDto,
    pub files_merged: u64,
    pub files_written: u64,
    pub bytes_written: u64,
    pub events_rewritten: u64,
}

impl From<&CompactionReport> for CompactionReportDto {
    fn from(r: &CompactionReport) -> Self {
        Self {
            backend: r.backend.clone(),
            compacted: r.compacted,
            reason: r.reason.clone(),
            trigger: r.trigger.clone(),
            started_at: timestamp(r.started_at),
            duration_ms: r.duration_millis,
            before: FilesDto {
                files: r.files_before,
                bytes: r.bytes_before,
            },
            after: FilesDto {
                files: r.files_after,
                bytes: r.bytes_after,
            },
            files_merged: r.files_merged,
            files_written: r.files_written,
            bytes_written: r.bytes_written,
            events_rewritten: r.events_rewritten,
        }
    }
}

/// The background policy in the stats.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CompactionPolicyDto {
    pub enabled: bool,
    pub interval_seconds: u64,
    pub min_files: u64,
    pub target_file_bytes: u64,
    pub max_small_file_age_seconds: u64,
}

/// The body of `GET /api/v1/compaction/stats`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CompactionStatsDto {
    pub backend: String,
    /// False for backends without files to compact (memory, postgres).
    pub applicable: bool,
    /// `null` for backends without files to compact.
    #[schema(required = true)]
    pub policy: Option<CompactionPolicyDto>,
    /// Parquet files now.
    pub current: FilesDto,
    /// Passes that merged files since the process started.
    pub runs: u64,
    pub failures: u64,
    pub files_merged: u64,
    pub files_written: u64,
    pub bytes_written: u64,
    pub events_rewritten: u64,
    #[schema(required = true)]
    pub last_checked_at: Option<String>,
    #[schema(required = true)]
    pub last_run: Option<CompactionReportDto>,
    #[schema(required = true)]
    pub last_error: Option<String>,
}

impl From<&CompactionStats> for CompactionStatsDto {
    fn from(s: &CompactionStats) -> Self {
        Self {
            backend: s.backend.clone(),
            applicable: s.applicable,
            policy: s.policy.as_ref().map(|p| CompactionPolicyDto {
                enabled: p.enabled,
                interval_seconds: p.interval_seconds,
                min_files: p.min_files,
                target_file_bytes: p.target_file_bytes,
                max_small_file_age_seconds: p.max_small_file_age_seconds,
            }),
            current: FilesDto {
                files: s.files,
                bytes: s.bytes,
            },
            runs: s.runs,
            failures: s.failures,
            files_merged: s.files_merged,
            files_written: s.files_written,
            bytes_written: s.bytes_written,
            events_rewritten: s.events_rewritten,
            last_checked_at: s.last_checked_at.map(timestamp),
            last_run: s.last_run.as_ref().map(CompactionReportDto::from),
            last_error: s.last_error.clone(),
        }
    }
}

/// The compaction routes (operator routes: `admin`).
pub fn routes() -> Routes {
    Routes::new()
        .add(
            Route::post("/api/v1/compaction/trigger", Requires(Admin))
                .no_body()
                .returns::<CompactionReportDto>(),
            trigger,
        )
        .add(
            Route::get("/api/v1/compaction/stats", Requires(Admin)).returns::<CompactionStatsDto>(),
            stats,
        )
}

/// `POST /api/v1/compaction/trigger`: compacts now and answers what was done (200, also when
/// nothing was merged). A request body, if any, is ignored.
pub async fn trigger(
    State(state): State<AppState>,
    CallerExtractor(caller): CallerExtractor,
) -> Result<Response, ApiError> {
    let report = state.compaction.trigger(&caller).await?;
    Ok(Json(CompactionReportDto::from(&report)).into_response())
}

/// `GET /api/v1/compaction/stats`: figures since the process started.
pub async fn stats(
    State(state): State<AppState>,
    CallerExtractor(caller): CallerExtractor,
) -> Result<Response, ApiError> {
    let stats = state.compaction.stats(&caller).await?;
    Ok(Json(CompactionStatsDto::from(&stats)).into_response())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use allsource_application::ports::{
        CompactionPolicy, EventStore, MockCompactor, MockEventStore, NoCompaction,
    };
    use allsource_application::use_cases::{AppendEvents, AppendLimits, ReadEvents};
    use axum::body::{Body, to_bytes};
    use axum::http::{Request, StatusCode};
    use chrono::TimeZone;
    use serde_json::Value;
    use tower::ServiceExt;

    use super::*;
    use crate::{AppState, HttpLimits, router};

    fn app(compaction: Arc<dyn allsource_application::ports::Compactor>) -> axum::Router {
        let store: Arc<dyn EventStore> = Arc::new(MockEventStore::new());
        let consumers_store = Arc::clone(&store);
        let engine = Arc::new(allsource_application::projections::ProjectionEngine::new(
            Arc::clone(&store),
            Arc::new(allsource_application::ports::MockStateStore::new()),
            100,
        ));
        router(
            AppState::from(crate::AppServices {
                append: AppendEvents::new(Arc::clone(&store), AppendLimits::default()),
                reads: ReadEvents::new(Arc::clone(&store)),
                webhooks: crate::tests::idle_webhooks(&store),
                pipelines: crate::tests::idle_pipelines(&store),
                analytics: crate::tests::idle_analytics(),
                backups: allsource_application::use_cases::Backups::disabled(
                    "no backup target in these tests",
                ),
                snapshots: crate::tests::quiet_snapshots(Arc::clone(&store)),
                health: allsource_application::use_cases::Health::new("9.9.9", store),
                auth: crate::AuthMode::Disabled,
                identity: None,
                admission: allsource_application::use_cases::Admission::off(),
                tenants: None,
                consumer_groups: crate::tests::idle_consumer_groups(),
                compaction: allsource_application::use_cases::Compaction::new(compaction),
                schemas: crate::tests::no_schemas(),
                audit: crate::tests::quiet_audit(),
                policies: crate::tests::no_policies(),
                projections: allsource_application::projections::Projections::new(
                    Arc::clone(&engine),
                    Arc::new(allsource_application::quota::Unlimited),
                ),
                replays: allsource_application::projections::ReplayJobs::new(engine),
                consumers: crate::tests::idle_consumers(&consumers_store),
            }),
            HttpLimits::default(),
        )
    }

    async fn call(app: axum::Router, method: &str, path: &str) -> (StatusCode, Value) {
        let response = app
            .oneshot(
                Request::builder()
                    .method(method)
                    .uri(path)
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        let status = response.status();
        let bytes = to_bytes(response.into_body(), usize::MAX).await.unwrap();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    fn report() -> CompactionReport {
        CompactionReport {
            backend: "embedded".into(),
            compacted: true,
            reason: None,
            trigger: "api".into(),
            started_at: chrono::Utc
                .timestamp_micros(1_795_342_500_123_456)
                .single()
                .unwrap(),
            duration_millis: 12,
            files_before: 10,
            bytes_before: 5000,
            files_after: 1,
            bytes_after: 4000,
            files_merged: 10,
            files_written: 1,
            bytes_written: 4000,
            events_rewritten: 700,
        }
    }

    #[tokio::test]
    async fn trigger_answers_the_report() {
        let mut compactor = MockCompactor::new();
        compactor
            .expect_trigger()
            .times(1)
            .returning(|| Ok(report()));
        let (status, body) = call(
            app(Arc::new(compactor)),
            "POST",
            "/api/v1/compaction/trigger",
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["compacted"], true);
        assert_eq!(body["reason"], Value::Null);
        assert_eq!(body["before"]["files"], 10);
        assert_eq!(body["after"]["files"], 1);
        assert_eq!(body["files_merged"], 10);
        assert_eq!(body["started_at"], "2026-11-22T10:15:00.123456Z");
        assert_eq!(body["duration_ms"], 12);
    }

    #[tokio::test]
    async fn stats_answer_the_figures() {
        let mut compactor = MockCompactor::new();
        compactor.expect_stats().times(1).returning(|| {
            Ok(CompactionStats {
                policy: Some(CompactionPolicy {
                    enabled: true,
                    interval_seconds: 60,
                    min_files: 8,
                    target_file_bytes: 1 << 27,
                    max_small_file_age_seconds: 3600,
                }),
                applicable: true,
                files: 1,
                bytes: 4000,
                runs: 1,
                last_run: Some(report()),
                ..CompactionStats::not_applicable("embedded")
            })
        });
        let (status, body) =
            call(app(Arc::new(compactor)), "GET", "/api/v1/compaction/stats").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["applicable"], true);
        assert_eq!(
            body["current"],
            serde_json::json!({"files": 1, "bytes": 4000})
        );
        assert_eq!(body["policy"]["min_files"], 8);
        assert_eq!(body["last_run"]["files_written"], 1);
        assert_eq!(body["last_error"], Value::Null);
    }

    #[tokio::test]
    async fn backends_without_files_answer_200_not_compacted() {
        let (status, body) = call(
            app(Arc::new(NoCompaction::new("postgres"))),
            "POST",
            "/api/v1/compaction/trigger",
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["backend"], "postgres");
        assert_eq!(body["compacted"], false);
        assert!(body["reason"].as_str().unwrap().contains("embedded"));
        let (status, body) = call(
            app(Arc::new(NoCompaction::new("memory"))),
            "GET",
            "/api/v1/compaction/stats",
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["applicable"], false);
        assert_eq!(body["policy"], Value::Null);
    }

    /// Mapping only, without a response: a 5xx response is logged through `ApiError`'s
    /// callsites, which another test of this crate captures with a scoped subscriber, and
    /// logging from concurrent tests makes that capture flaky.
    #[test]
    fn errors_map_to_503_and_500() {
        let error = ApiError::from(CompactionError::Unavailable("recovering".into()));
        assert_eq!(error.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(!error.detail().contains("recovering"));
        let error = ApiError::from(CompactionError::Internal(anyhow::anyhow!("disk")));
        assert_eq!(error.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!error.detail().contains("disk"));
    }

    #[tokio::test]
    async fn wrong_methods_and_parameters_are_refused() {
        let (status, _) = call(
            app(Arc::new(NoCompaction::new("memory"))),
            "GET",
            "/api/v1/compaction/trigger",
        )
        .await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        let (status, body) = call(
            app(Arc::new(NoCompaction::new("memory"))),
            "GET",
            "/api/v1/compaction/stats?verbose=1",
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    }
}
