//! Projections: declarative folds of a tenant's log into keyed state, kept up to date
//! asynchronously, durable across restarts, and rebuilt by replay jobs.
//!
//! # Layout
//! - [`engine`]: the storage layout (head records, generations, checkpoints), folding batches
//!   idempotently, catching up. The no-double-counting invariant is documented there.
//! - [`runner`]: the task that keeps projections caught up, and the append guard that wakes it.
//! - [`replay`]: rebuild / replay jobs that build a new generation aside and swap it in.
//! - here: [`Projections`], the use cases behind `/api/v1/projections`.

pub mod engine;
pub mod replay;
pub mod runner;

use std::sync::Arc;

use allsource_domain::TenantId;
use allsource_domain::projection::{ProjectionDefinition, ProjectionName, ProjectionSpec};
use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::Caller;
use crate::quota::{GateError, QuotaGate, QuotaKind};
use crate::use_cases::FieldError;
pub use engine::{EngineError, ProjectionEngine, ProjectionHead};
pub use replay::{ReplayError, ReplayInput, ReplayJobs, ReplayStatus, ReplayView};
pub use runner::{ProjectionNotifier, ProjectionRunner, RunnerHandle};

/// Default and largest page of a state listing.
pub const DEFAULT_STATE_LIMIT: usize = 1000;
pub const MAX_STATE_LIMIT: usize = 10_000;

/// Why a projection use case failed.
#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    /// 400: invalid definition or parameters.
    #[error("invalid projection request")]
    Invalid(Vec<FieldError>),
    /// 404: no projection (or key) of that name for the caller's tenant.
    #[error("{0}")]
    NotFound(String),
    /// 409 `conflict`: the name is taken, or the projection changed concurrently.
    #[error("{0}")]
    Conflict(String),
    /// 429 / 403 / 503 from the tenant's quotas and status.
    #[error(transparent)]
    Gate(#[from] GateError),
    /// 503.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// 500.
    #[error(transparent)]
    Internal(anyhow::Error),
}

impl From<EngineError> for ProjectionError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::Conflict => {
                Self::Conflict("the projection was changed concurrently; retry".into())
            }
            EngineError::Unavailable(why) => Self::Unavailable(why),
            EngineError::Internal(e) => Self::Internal(e),
        }
    }
}

/// How far a projection is.
#[derive(Debug, Clone, PartialEq)]
pub struct ProjectionStatus {
    /// Last log position folded in.
    pub checkpoint: u64,
    /// The tenant's newest position.
    pub head_position: u64,
    /// Events after the checkpoint (counted up to 1 000; `lag_capped` beyond).
    pub lag_events: u64,
    pub lag_capped: bool,
    /// Keys in the state.
    pub keys: u64,
    /// The last catch-up failure, cleared by the next success.
    pub last_error: Option<String>,
}

/// A projection as the API shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct ProjectionView {
    pub definition: ProjectionDefinition,
    pub builtin: bool,
    pub created_at: DateTime<Utc>,
    pub generation: String,
    pub status: ProjectionStatus,
}

/// A page of a projection's state.
#[derive(Debug, Clone, PartialEq)]
pub struct StatePage {
    pub name: String,
    /// Checkpoint of the state read.
    pub checkpoint: u64,
    /// `(key, state)` in key order.
    pub entries: Vec<(String, Value)>,
    pub has_more: bool,
}

/// One key's state.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyView {
    pub name: String,
    pub key: String,
    /// Position of the last event folded into this key.
    pub position: u64,
    pub state: Value,
}

/// Raw parameters of a state listing.
#[derive(Debug, Clone, Default)]
pub struct StateInput {
    pub limit: Option<String>,
    /// Keys after this one (the previous page's last key).
    pub after: Option<String>,
}

/// The projection use cases.
#[derive(Clone)]
pub struct Projections {
    engine: Arc<ProjectionEngine>,
    quotas: Arc<dyn QuotaGate>,
}

fn invalid(field: &str, message: impl Into<String>) -> ProjectionError {
    ProjectionError::Invalid(vec![FieldError::new(field, message)])
}

fn parse_name(raw: &str) -> Result<ProjectionName, ProjectionError> {
    ProjectionName::parse(raw).map_err(|e| invalid("name", e))
}

impl Projections {
    pub fn new(engine: Arc<ProjectionEngine>, quotas: Arc<dyn QuotaGate>) -> Self {
        Self { engine, quotas }
    }

    pub fn engine(&self) -> &Arc<ProjectionEngine> {
        &self.engine
    }

    /// Registers a projection for the caller's tenant (`POST /api/v1/projections`); it starts
    /// empty at position 0 and the runner folds the whole log into it.
    ///
    /// # Errors
    /// `Invalid` (every bad member), `Conflict` (name taken), `Gate` (quota `max_projections`),
    /// storage failures.
    pub async fn create(
        &self,
        caller: &Caller,
        spec: ProjectionSpec,
    ) -> Result<ProjectionView, ProjectionError> {
        let definition = spec.parse().map_err(|errors| {
            ProjectionError::Invalid(
                errors
                    .into_iter()
                    .map(|e| FieldError::new(e.field, e.message))
                    .collect(),
            )
        })?;
        let tenant = caller.tenant();
        let name = definition.name.as_str().to_owned();
        if self.engine.head(tenant, &name).await?.is_some() {
            return Err(already_exists(&name));
        }
        self.quotas
            .consume(tenant, QuotaKind::Projections, 1)
            .await?;
        let head = ProjectionHead {
            definition,
            generation: engine::new_generation(),
            created_at: Utc::now(),
            version: 1,
        };
        let stored = async {
            self.engine.remember_tenant(tenant).await?;
            self.engine
                .state
                .put(tenant, engine::DEFINITIONS, &name, head.to_json(), Some(0))
                .await
                .map_err(EngineError::from)
        }
        .await;
        if let Err(e) = stored {
            self.quotas.release(tenant, QuotaKind::Projections, 1).await;
            return Err(match e {
                EngineError::Conflict => already_exists(&name),
                other => other.into(),
            });
        }
        self.engine.wake();
        self.view(tenant, head).await
    }

    /// The caller's tenant's projections with their status, by name.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn list(&self, caller: &Caller) -> Result<Vec<ProjectionView>, ProjectionError> {
        let tenant = caller.tenant();
        let mut views = Vec::new();
        for head in self.engine.heads(tenant).await? {
            views.push(self.view(tenant, head).await?);
        }
        Ok(views)
    }

    /// One projection with its status (`GET /api/v1/projections/{name}`).
    ///
    /// # Errors
    /// `Invalid` name, `NotFound`, storage failures.
    pub async fn get(
        &self,
        caller: &Caller,
        name: &str,
    ) -> Result<ProjectionView, ProjectionError> {
        let head = self.head(caller.tenant(), name).await?;
        self.view(caller.tenant(), head).await
    }

    async fn head(&self, tenant: &TenantId, name: &str) -> Result<ProjectionHead, ProjectionError> {
        let name = parse_name(name)?;
        self.engine
            .head(tenant, name.as_str())
            .await?
            .ok_or_else(|| not_found(name.as_str()))
    }

    async fn view(
        &self,
        tenant: &TenantId,
        head: ProjectionHead,
    ) -> Result<ProjectionView, ProjectionError> {
        let name = head.definition.name.as_str();
        let checkpoint = self
            .engine
            .checkpoint(tenant, name, &head.generation)
            .await?;
        let head_position = self.engine.head_position(tenant).await?;
        let (lag_events, lag_capped) = self
            .engine
            .events_after(tenant, checkpoint.position)
            .await?;
        let keys = self
            .engine
            .key_count(tenant, &engine::state_namespace(name, &head.generation))
            .await?;
        Ok(ProjectionView {
            builtin: head.definition.name.is_builtin(),
            status: ProjectionStatus {
                checkpoint: checkpoint.position,
                head_position,
                lag_events,
                lag_capped,
                keys,
                last_error: self.engine.last_error(tenant, name),
            },
            created_at: head.created_at,
            generation: head.generation,
            definition: head.definition,
        })
    }

    /// Unregisters a projection and deletes its state (`DELETE /api/v1/projections/{name}`);
    /// gives the `max_projections` quota back.
    ///
    /// # Errors
    /// `Invalid` name, `NotFound`, storage failures.
    pub async fn delete(&self, caller: &Caller, name: &str) -> Result<(), ProjectionError> {
        let tenant = caller.tenant();
        let name = parse_name(name)?;
        let name = name.as_str();
        let outcome = self.delete_locked(tenant, name).await;
        // The lock is released: drop what this node kept about the projection.
        self.engine.forget(tenant, name, outcome.is_ok());
        outcome
    }

    async fn delete_locked(&self, tenant: &TenantId, name: &str) -> Result<(), ProjectionError> {
        let lock = self.engine.lock(tenant, name);
        let _held = lock.lock().await;
        // Read under the lock: a rebuild may have swapped generations just before.
        let head = self
            .engine
            .head(tenant, name)
            .await?
            .ok_or_else(|| not_found(name))?;
        let deleted = self
            .engine
            .state
            .delete(tenant, engine::DEFINITIONS, name)
            .await
            .map_err(EngineError::from)?;
        if !deleted {
            return Err(not_found(name));
        }
        self.quotas.release(tenant, QuotaKind::Projections, 1).await;
        self.engine
            .drop_generation(tenant, name, &head.generation)
            .await;
        Ok(())
    }

    /// A page of the projection's state, in key order
    /// (`GET /api/v1/projections/{name}/state?limit&after`).
    ///
    /// # Errors
    /// `Invalid` name or parameters, `NotFound`, storage failures.
    pub async fn state(
        &self,
        caller: &Caller,
        name: &str,
        input: StateInput,
    ) -> Result<StatePage, ProjectionError> {
        let limit = match input.limit.as_deref() {
            None => DEFAULT_STATE_LIMIT,
            Some(raw) => match raw.parse::<usize>() {
                Ok(n) if (1..=MAX_STATE_LIMIT).contains(&n) => n,
                _ => {
                    return Err(invalid(
                        "limit",
                        format!("must be an integer from 1 to {MAX_STATE_LIMIT}"),
                    ));
                }
            },
        };
        if input.after.as_deref().is_some_and(str::is_empty) {
            return Err(invalid("after", "must not be empty"));
        }
        let tenant = caller.tenant();
        let head = self.head(tenant, name).await?;
        let name = head.definition.name.as_str();
        let checkpoint = self
            .engine
            .checkpoint(tenant, name, &head.generation)
            .await?;
        let mut page = self
            .engine
            .state
            .list(
                tenant,
                &engine::state_namespace(name, &head.generation),
                None,
                input.after,
                limit + 1,
            )
            .await
            .map_err(EngineError::from)?;
        let has_more = page.len() > limit;
        page.truncate(limit);
        Ok(StatePage {
            name: name.to_owned(),
            checkpoint: checkpoint.position,
            entries: page
                .into_iter()
                .map(|(key, entry)| {
                    let state = entry.value.get("state").cloned().unwrap_or(Value::Null);
                    (key, state)
                })
                .collect(),
            has_more,
        })
    }

    /// One key's state (`GET /api/v1/projections/{name}/state/{key}`).
    ///
    /// # Errors
    /// `Invalid` name, `NotFound` (projection or key), storage failures.
    pub async fn state_of(
        &self,
        caller: &Caller,
        name: &str,
        key: &str,
    ) -> Result<KeyView, ProjectionError> {
        let tenant = caller.tenant();
        let head = self.head(tenant, name).await?;
        let name = head.definition.name.as_str();
        let entry = self
            .engine
            .state
            .get(
                tenant,
                &engine::state_namespace(name, &head.generation),
                key,
            )
            .await
            .map_err(EngineError::from)?
            .ok_or_else(|| {
                ProjectionError::NotFound(format!("projection '{name}' has no key '{key}'"))
            })?;
        let keyed =
            allsource_domain::projection::KeyedState::from_json(&entry.value).ok_or_else(|| {
                ProjectionError::Internal(anyhow::anyhow!("bad projection state under '{key}'"))
            })?;
        Ok(KeyView {
            name: name.to_owned(),
            key: key.to_owned(),
            position: keyed.position,
            state: keyed.state,
        })
    }
}

fn not_found(name: &str) -> ProjectionError {
    ProjectionError::NotFound(format!("no projection named '{name}'"))
}

fn already_exists(name: &str) -> ProjectionError {
    ProjectionError::Conflict(format!("a projection named '{name}' already exists"))
}

#[cfg(test)]
mod tests;
