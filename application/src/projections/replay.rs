//! Replay jobs (`/api/v1/replay`, `POST /api/v1/projections/{name}/rebuild`): re-run the log,
//! or the part of it from a position or a time on, into a projection.
//!
//! A job folds the events into a **new generation** of the projection's state, written aside
//! while the live generation keeps serving and updating. When it has read everything, it takes
//! the projection's lock (so no live batch is in flight on this node), folds what was appended
//! meanwhile, writes the new generation's checkpoint, and swaps the head record to the new
//! generation with the version it read at the start (a projection deleted, recreated or rebuilt
//! meanwhile makes the swap fail instead of mixing states). The old generation is then deleted.
//!
//! So a rebuild is built by the same fold as the live state and equals it, and replaying twice
//! equals replaying once: each job starts from an empty generation, never from the live state.
//!
//! A range is open at the end: the projection keeps covering every event after it, so after a
//! replay from `from_position` / `since`, the state is the fold of the events from there on.
//!
//! Jobs and their progress are kept in memory (a restart forgets them; an unfinished job's
//! generation is never swapped in and is left unreferenced); their effect, once completed, is
//! durable. A finished job (completed, cancelled or failed) is kept for
//! [`FINISHED_JOB_RETENTION`], and at most the [`MAX_FINISHED_JOBS`] newest per tenant are kept:
//! older ones are forgotten as if deleted. Running jobs are never forgotten (at most one runs
//! per projection).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use allsource_domain::{Position, TenantId};
use chrono::{DateTime, Utc};

use super::engine::{self, EngineError, ProjectionEngine};
use crate::Caller;
use crate::ports::EventQuery;
use crate::use_cases::FieldError;

/// At most this many finished jobs are kept per tenant (the newest).
pub const MAX_FINISHED_JOBS: usize = 100;

/// A finished job is forgotten this long after it finished.
pub const FINISHED_JOB_RETENTION: Duration = Duration::from_secs(24 * 3600);

/// What a job does now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayStatus {
    Running,
    Completed,
    Cancelled,
    Failed,
}

impl ReplayStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Completed => "completed",
            Self::Cancelled => "cancelled",
            Self::Failed => "failed",
        }
    }
}

/// A job as the API shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplayView {
    pub id: String,
    pub projection: String,
    pub from_position: Option<u64>,
    pub since: Option<DateTime<Utc>>,
    pub status: ReplayStatus,
    /// Events read so far.
    pub processed: u64,
    /// Events in the range when the job started (more may arrive while it runs).
    pub total: u64,
    pub events_per_second: f64,
    /// 0–100.
    pub percent: f64,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// Why a failed job failed.
    pub error: Option<String>,
}

/// The body of `POST /api/v1/replay`.
#[derive(Debug, Clone, Default)]
pub struct ReplayInput {
    pub projection: Option<String>,
    /// Only events after this position (exclusive, like query paging).
    pub from_position: Option<u64>,
    /// Only events with `timestamp >= since` (RFC 3339).
    pub since: Option<String>,
}

/// Why a replay call failed.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// 400.
    #[error("invalid replay request")]
    Invalid(Vec<FieldError>),
    /// 404: no such job or projection for the caller's tenant.
    #[error("{0}")]
    NotFound(String),
    /// 409 `conflict`: a job already runs for the projection; a running job cannot be deleted;
    /// a finished one cannot be cancelled.
    #[error("{0}")]
    Conflict(String),
    /// 503.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// 500.
    #[error(transparent)]
    Internal(anyhow::Error),
}

impl From<EngineError> for ReplayError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::Conflict => Self::Conflict("the projection changed concurrently".into()),
            EngineError::Unavailable(why) => Self::Unavailable(why),
            EngineError::Internal(e) => Self::Internal(e),
        }
    }
}

struct Job {
    tenant: TenantId,
    cancel: Arc<AtomicBool>,
    view: Arc<parking_lot::Mutex<ReplayView>>,
}

/// The replay jobs of every tenant.
#[derive(Clone)]
pub struct ReplayJobs {
    engine: Arc<ProjectionEngine>,
    jobs: Arc<parking_lot::Mutex<HashMap<String, Job>>>,
    retention: Retention,
}

/// How many finished jobs are kept, and how long.
#[derive(Debug, Clone, Copy)]
struct Retention {
    per_tenant: usize,
    age: Duration,
}

impl ReplayJobs {
    pub fn new(engine: Arc<ProjectionEngine>) -> Self {
        Self::with_retention(engine, MAX_FINISHED_JOBS, FINISHED_JOB_RETENTION)
    }

    /// Keeps at most `per_tenant` finished jobs per tenant, each for at most `age`.
    pub fn with_retention(engine: Arc<ProjectionEngine>, per_tenant: usize, age: Duration) -> Self {
        Self {
            engine,
            jobs: Arc::new(parking_lot::Mutex::new(HashMap::new())),
            retention: Retention { per_tenant, age },
        }
    }

    /// Starts a job (`POST /api/v1/replay`, and `rebuild` with no range).
    ///
    /// # Errors
    /// `Invalid` input, `NotFound` projection, `Conflict` when a job already runs for it.
    pub async fn start(
        &self,
        caller: &Caller,
        input: ReplayInput,
    ) -> Result<ReplayView, ReplayError> {
        let mut errors = Vec::new();
        let name = match input.projection.as_deref() {
            None => {
                errors.push(FieldError::new("projection", "is required"));
                None
            }
            Some(raw) => match allsource_domain::projection::ProjectionName::parse(raw) {
                Ok(n) => Some(n),
                Err(e) => {
                    errors.push(FieldError::new("projection", e));
                    None
                }
            },
        };
        let since = match input.since.as_deref() {
            None => None,
            Some(raw) => match DateTime::parse_from_rfc3339(raw) {
                Ok(t) => Some(t.with_timezone(&Utc)),
                Err(_) => {
                    errors.push(FieldError::new(
                        "since",
                        "must be an RFC 3339 timestamp, like 2026-11-22T10:15:00Z",
                    ));
                    None
                }
            },
        };
        let Some(name) = name.filter(|_| errors.is_empty()) else {
            return Err(ReplayError::Invalid(errors));
        };
        let tenant = caller.tenant().clone();
        if self.engine.head(&tenant, name.as_str()).await?.is_none() {
            return Err(ReplayError::NotFound(format!(
                "no projection named '{name}'"
            )));
        }
        // A start past the log's end would become the new checkpoint and make the live runner
        // skip the events still to come up to it.
        if let Some(from) = input.from_position {
            let last = self.engine.head_position(&tenant).await?;
            if from > last {
                return Err(ReplayError::Invalid(vec![FieldError::new(
                    "from_position",
                    format!("is past the end of the log (the last position is {last})"),
                )]));
            }
        }
        let id = uuid::Uuid::now_v7().to_string();
        let view = ReplayView {
            id: id.clone(),
            projection: name.to_string(),
            from_position: input.from_position,
            since,
            status: ReplayStatus::Running,
            processed: 0,
            total: 0,
            events_per_second: 0.0,
            percent: 0.0,
            started_at: Utc::now(),
            finished_at: None,
            error: None,
        };
        let shared = Arc::new(parking_lot::Mutex::new(view.clone()));
        let cancel = Arc::new(AtomicBool::new(false));
        {
            let mut jobs = self.jobs.lock();
            prune(&mut jobs, self.retention);
            let busy = jobs.values().any(|j| {
                let v = j.view.lock();
                j.tenant == tenant
                    && v.projection == name.as_str()
                    && v.status == ReplayStatus::Running
            });
            if busy {
                return Err(ReplayError::Conflict(format!(
                    "a replay of '{name}' is already running"
                )));
            }
            jobs.insert(
                id,
                Job {
                    tenant: tenant.clone(),
                    cancel: cancel.clone(),
                    view: shared.clone(),
                },
            );
        }
        let engine = self.engine.clone();
        let (jobs, retention) = (Arc::clone(&self.jobs), self.retention);
        tokio::spawn(async move {
            let started = Instant::now();
            let outcome = run(&engine, &tenant, &shared, &cancel, started).await;
            let mut v = shared.lock();
            v.finished_at = Some(Utc::now());
            let secs = started.elapsed().as_secs_f64();
            if secs > 0.0 {
                v.events_per_second = v.processed as f64 / secs;
            }
            match outcome {
                Ok(true) => {
                    v.status = ReplayStatus::Completed;
                    v.percent = 100.0;
                }
                Ok(false) => v.status = ReplayStatus::Cancelled,
                Err(e) => {
                    tracing::warn!(job = %v.id, projection = %v.projection, error = %e, "replay failed");
                    v.status = ReplayStatus::Failed;
                    v.error = Some(match e {
                        EngineError::Conflict => {
                            "the projection was deleted, recreated or rebuilt while the replay ran"
                                .to_owned()
                        }
                        other => other.to_string(),
                    });
                }
            }
            drop(v);
            prune(&mut jobs.lock(), retention);
        });
        Ok(view)
    }

    /// The caller's tenant's jobs, oldest first.
    pub fn list(&self, caller: &Caller) -> Vec<ReplayView> {
        let mut jobs = self.jobs.lock();
        prune(&mut jobs, self.retention);
        let mut views: Vec<ReplayView> = jobs
            .values()
            .filter(|j| &j.tenant == caller.tenant())
            .map(|j| j.view.lock().clone())
            .collect();
        views.sort_by(|a, b| a.id.cmp(&b.id));
        views
    }

    /// One job.
    ///
    /// # Errors
    /// `NotFound` (also for another tenant's job).
    pub fn get(&self, caller: &Caller, id: &str) -> Result<ReplayView, ReplayError> {
        self.jobs
            .lock()
            .get(id)
            .filter(|j| &j.tenant == caller.tenant())
            .map(|j| j.view.lock().clone())
            .ok_or_else(|| job_not_found(id))
    }

    /// Asks a running job to stop; its new generation is discarded and the projection keeps
    /// its live state.
    ///
    /// # Errors
    /// `NotFound`; `Conflict` when the job has finished.
    pub fn cancel(&self, caller: &Caller, id: &str) -> Result<ReplayView, ReplayError> {
        let jobs = self.jobs.lock();
        let job = jobs
            .get(id)
            .filter(|j| &j.tenant == caller.tenant())
            .ok_or_else(|| job_not_found(id))?;
        let view = job.view.lock().clone();
        if view.status != ReplayStatus::Running {
            return Err(ReplayError::Conflict(format!(
                "the replay has finished ({}); only running replays can be cancelled",
                view.status.as_str()
            )));
        }
        job.cancel.store(true, Ordering::SeqCst);
        Ok(view)
    }

    /// Forgets a finished job.
    ///
    /// # Errors
    /// `NotFound`; `Conflict` when it still runs (cancel it first).
    pub fn delete(&self, caller: &Caller, id: &str) -> Result<(), ReplayError> {
        let mut jobs = self.jobs.lock();
        let job = jobs
            .get(id)
            .filter(|j| &j.tenant == caller.tenant())
            .ok_or_else(|| job_not_found(id))?;
        if job.view.lock().status == ReplayStatus::Running {
            return Err(ReplayError::Conflict(
                "the replay is running; cancel it first".into(),
            ));
        }
        jobs.remove(id);
        Ok(())
    }
}

/// Forgets finished jobs past their retention, and beyond the newest `per_tenant` of each
/// tenant.
fn prune(jobs: &mut HashMap<String, Job>, retention: Retention) {
    let now = Utc::now();
    let age = chrono::Duration::from_std(retention.age).unwrap_or(chrono::Duration::MAX);
    let mut finished: HashMap<TenantId, Vec<(DateTime<Utc>, String)>> = HashMap::new();
    for (id, job) in jobs.iter() {
        if let Some(at) = job.view.lock().finished_at {
            finished
                .entry(job.tenant.clone())
                .or_default()
                .push((at, id.clone()));
        }
    }
    for (_, mut done) in finished {
        // Newest first; ids (v7) break ties in start order.
        done.sort_by(|a, b| b.cmp(a));
        for (rank, (at, id)) in done.into_iter().enumerate() {
            if rank >= retention.per_tenant || now.signed_duration_since(at) > age {
                jobs.remove(&id);
            }
        }
    }
}

fn job_not_found(id: &str) -> ReplayError {
    ReplayError::NotFound(format!("no replay job with id '{id}'"))
}

/// Runs a job; `Ok(false)` when cancelled.
async fn run(
    engine: &ProjectionEngine,
    tenant: &TenantId,
    view: &parking_lot::Mutex<ReplayView>,
    cancel: &AtomicBool,
    started: Instant,
) -> Result<bool, EngineError> {
    let (name, from, since) = {
        let v = view.lock();
        (v.projection.clone(), v.from_position.unwrap_or(0), v.since)
    };
    let Some(head) = engine.head(tenant, &name).await? else {
        return Err(EngineError::Conflict);
    };
    let query = |cursor: u64, limit: usize| EventQuery {
        from_position: Some(Position::new(cursor)),
        since,
        limit,
        ..EventQuery::default()
    };
    // Total: the events in the range now.
    let mut total = 0;
    let mut cursor = from;
    loop {
        let page = engine.events.query(tenant, query(cursor, 10_000)).await?;
        total += page.events.len() as u64;
        match page.events.last() {
            Some(last) if page.has_more => cursor = last.position.get(),
            _ => break,
        }
    }
    view.lock().total = total;

    let generation = engine::new_generation();
    let namespace = engine::state_namespace(&name, &generation);
    let outcome = async {
        let mut cursor = from;
        // Fold the range into the new generation, page by page.
        loop {
            if cancel.load(Ordering::SeqCst) {
                return Ok(false);
            }
            let page = engine
                .events
                .query(tenant, query(cursor, engine.batch_size()))
                .await?;
            let Some(last) = page.events.last().map(|e| e.position.get()) else {
                break;
            };
            engine
                .apply(tenant, &head.definition, &namespace, &page.events)
                .await?;
            cursor = last;
            let mut v = view.lock();
            v.processed += page.events.len() as u64;
            v.percent = if v.total == 0 {
                100.0
            } else {
                (v.processed as f64 * 100.0 / v.total as f64).min(100.0)
            };
            let secs = started.elapsed().as_secs_f64();
            if secs > 0.0 {
                v.events_per_second = v.processed as f64 / secs;
            }
            if !page.has_more {
                break;
            }
        }
        // Swap under the projection's lock: no live batch of this node is in flight.
        let lock = engine.lock(tenant, &name);
        let _held = lock.lock().await;
        let head_position = engine.head_position(tenant).await?;
        loop {
            let page = engine
                .events
                .query(tenant, query(cursor, engine.batch_size()))
                .await?;
            let Some(last) = page.events.last().map(|e| e.position.get()) else {
                break;
            };
            engine
                .apply(tenant, &head.definition, &namespace, &page.events)
                .await?;
            cursor = last;
            view.lock().processed += page.events.len() as u64;
            if !page.has_more {
                break;
            }
        }
        // Every event up to the head read above is in the new generation (or outside the
        // range on purpose); events after it are left to the live runner.
        let checkpoint = cursor.max(head_position).max(from);
        engine
            .write_checkpoint(tenant, &name, &generation, checkpoint, 0)
            .await?;
        let swapped = engine::ProjectionHead {
            generation: generation.clone(),
            ..head.clone()
        };
        engine
            .state
            .put(
                tenant,
                engine::DEFINITIONS,
                &name,
                swapped.to_json(),
                Some(head.version),
            )
            .await?;
        engine
            .drop_generation(tenant, &name, &head.generation)
            .await;
        Ok(true)
    }
    .await;
    if !matches!(outcome, Ok(true)) {
        engine.drop_generation(tenant, &name, &generation).await;
    }
    outcome
}
