//! Stream pipelines: a tenant defines source filters, operators and outputs; the server runs the
//! definition over the tenant's log, from a checkpoint, durably.
//!
//! # Layout
//! - `allsource_domain::pipeline`: the definition (validated value object) and the pure,
//!   checkpointable execution of operators.
//! - [`records`]: the state-store layout (definitions, checkpoints carrying the operator state
//!   and the lease, result rows) and the ids of derived events.
//! - [`worker`]: execution — one worker per enabled pipeline following the tenant's log through
//!   a [`Subscription`](crate::subscriptions::Subscription), committing state and checkpoint
//!   together — and the [`Workers`](worker::Workers) that run them.
//! - [`lookup`]: what `enrich` reads (entity state, projection state), through the read and
//!   projection use cases.
//! - here: [`Pipelines`], the use cases behind `/api/v1/pipelines`: validation, tenancy (a
//!   caller sees and changes only its tenant's pipelines; another tenant's id is a 404), the
//!   `max_pipelines` quota, audit records `pipeline.create`, `pipeline.update`,
//!   `pipeline.delete`, `pipeline.reset`, stats and results.

pub mod lookup;
pub mod records;
pub mod worker;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use allsource_domain::pipeline::{Output, PipelineDefinition, PipelineSpec, SpecError};
use allsource_domain::{Position, TenantId};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use uuid::Uuid;

use crate::Caller;
use crate::ports::{
    AuditLog, AuditOutcome, AuditRecord, EventQuery, EventStore, SortOrder, StateError, StateStore,
    StorageFailure,
};
use crate::quota::{GateError, QuotaGate, QuotaKind, TenantGate};
use crate::subscriptions::CommitFeed;
use crate::use_cases::{AppendEvents, FieldError, record_or_log};
#[cfg(any(test, feature = "mocks"))]
pub use lookup::MockLookups;
pub use lookup::{LookupError, Lookups, ReadLookups};
pub use records::{Checkpoint, Counters, FAILED_KEPT, Failure, ResultRow, Stored};
pub use worker::{MAX_HOPS, PipelineConfig};
use worker::{Shared, Workers, list_all};

/// Lag is counted up to this many events (`lag_capped` beyond).
pub const LAG_CAP: usize = 10_000;
/// Result rows per page: default and most.
pub const DEFAULT_RESULTS_LIMIT: usize = 100;
pub const MAX_RESULTS_LIMIT: usize = 1000;

/// Why a pipeline use case failed.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// 400 `validation_failed`, every bad field named.
    #[error("invalid pipeline")]
    Invalid(Vec<FieldError>),
    /// 404: no pipeline with that id in the caller's tenant.
    #[error("{0}")]
    NotFound(String),
    /// 409 `conflict`: the id or name is taken, or the pipeline changed concurrently.
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

impl StorageFailure for PipelineError {
    fn unavailable(why: String) -> Self {
        Self::Unavailable(why)
    }

    fn internal(error: anyhow::Error) -> Self {
        Self::Internal(error)
    }

    fn version_conflict(_: u64, _: u64) -> Self {
        Self::Conflict("the pipeline was changed concurrently; retry".into())
    }
}

crate::storage_errors!(PipelineError);

fn invalid(field: &str, message: impl Into<String>) -> PipelineError {
    PipelineError::Invalid(vec![FieldError::new(field, message)])
}

fn not_found(id: &str) -> PipelineError {
    PipelineError::NotFound(format!("no pipeline with id '{id}'"))
}

/// Where a (new generation of a) pipeline starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartFrom {
    /// After this position (0: every stored event).
    After(u64),
    /// After the last event stored now.
    Now,
}

/// The raw body of `POST /api/v1/pipelines` and `PUT /api/v1/pipelines/{id}`.
#[derive(Debug, Clone, Default)]
pub struct PipelineInput {
    /// Create only: a client-chosen id (UUID).
    pub id: Option<String>,
    pub name: Option<String>,
    pub description: Option<String>,
    pub source_event_types: Option<Vec<String>>,
    pub operators: Option<Vec<Value>>,
    pub output: Option<Value>,
    pub on_error: Option<String>,
    pub enabled: Option<bool>,
    /// A position (number), or `"now"`; absent: 0 (every stored event).
    pub from_position: Option<Value>,
}

/// A pipeline as the API shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct PipelineView {
    pub id: Uuid,
    /// The definition's canonical JSON (`name`, `description`, `source_event_types`,
    /// `operators`, `output`, `on_error`).
    pub definition: Value,
    pub enabled: bool,
    /// `running`, `paused` (after an error, `on_error: pause`) or `disabled`.
    pub status: &'static str,
    pub generation: u64,
    /// The checkpoint: every source event at or below it is processed.
    pub position: u64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A pipeline's figures (`GET /api/v1/pipelines/{id}/stats`).
#[derive(Debug, Clone, PartialEq)]
pub struct PipelineStats {
    pub id: Uuid,
    pub name: String,
    pub status: &'static str,
    pub generation: u64,
    pub counters: Counters,
    pub position: u64,
    pub last_processed: Option<DateTime<Utc>>,
    /// Matching events stored after the checkpoint (up to [`LAG_CAP`]).
    pub lag: u64,
    pub lag_capped: bool,
    /// How old the oldest unprocessed matching event is.
    pub lag_seconds: f64,
    /// The newest failures (at most [`FAILED_KEPT`]), oldest first.
    pub failures: Vec<Failure>,
}

/// A page of the `table` output (`GET /api/v1/pipelines/{id}/results`).
#[derive(Debug, Clone, PartialEq)]
pub struct ResultsPage {
    pub id: Uuid,
    pub rows: Vec<ResultRow>,
    pub has_more: bool,
}

/// What the pipelines need.
pub struct PipelineDeps {
    pub store: Arc<dyn EventStore>,
    pub feed: Arc<CommitFeed>,
    pub state: Arc<dyn StateStore>,
    /// Derived events go through the append use case: schemas, quotas and every guard apply.
    pub append: AppendEvents,
    pub lookups: Arc<dyn Lookups>,
    pub quotas: Arc<dyn QuotaGate>,
    pub audit: Arc<dyn AuditLog>,
    /// Whether a tenant may act: a deactivated tenant's pipelines wait.
    pub tenants: Arc<dyn TenantGate>,
}

/// The pipeline use cases, and this node's workers (cheap to clone).
#[derive(Clone)]
pub struct Pipelines {
    workers: Arc<Workers>,
    quotas: Arc<dyn QuotaGate>,
    audit: Arc<dyn AuditLog>,
}

/// The definition a stored record holds.
///
/// # Errors
/// When the stored definition does not parse (a record written by a newer version).
pub(crate) fn definition_of(stored: &Stored) -> Result<PipelineDefinition, String> {
    PipelineDefinition::from_json(&stored.definition).map_err(|errors| {
        errors
            .iter()
            .map(|e| format!("{}: {}", e.field, e.message))
            .collect::<Vec<_>>()
            .join("; ")
    })
}

fn field_errors(errors: Vec<SpecError>) -> Vec<FieldError> {
    errors
        .into_iter()
        .map(|e| FieldError::new(e.field, e.message))
        .collect()
}

/// A checked body.
struct Checked {
    id: Option<Uuid>,
    definition: PipelineDefinition,
    enabled: bool,
    from: StartFrom,
}

fn check(input: PipelineInput) -> Result<Checked, PipelineError> {
    let mut errors = Vec::new();
    let id = match input.id.as_deref() {
        None => None,
        Some(raw) => match Uuid::parse_str(raw) {
            Ok(id) => Some(id),
            Err(_) => {
                errors.push(FieldError::new("id", "must be a UUID"));
                None
            }
        },
    };
    let from = match &input.from_position {
        None | Some(Value::Null) => Some(StartFrom::After(0)),
        Some(Value::String(s)) if s == "now" => Some(StartFrom::Now),
        Some(Value::Number(n)) if n.as_u64().is_some() => n.as_u64().map(StartFrom::After),
        Some(_) => {
            errors.push(FieldError::new(
                "from_position",
                "must be a position (a non-negative integer; 0 = every stored event) or \"now\"",
            ));
            None
        }
    };
    let definition = PipelineDefinition::parse(PipelineSpec {
        name: input.name,
        description: input.description,
        source_event_types: input.source_event_types,
        operators: input.operators,
        output: input.output,
        on_error: input.on_error,
    });
    let definition = match definition {
        Ok(definition) => {
            errors.extend(self_feeding(&definition));
            Some(definition)
        }
        Err(spec_errors) => {
            errors.extend(field_errors(spec_errors));
            None
        }
    };
    match (definition, from) {
        (Some(definition), Some(from)) if errors.is_empty() => Ok(Checked {
            id,
            definition,
            enabled: input.enabled.unwrap_or(true),
            from,
        }),
        _ => Err(PipelineError::Invalid(errors)),
    }
}

/// A pipeline whose source takes its own derived events would feed itself for ever.
fn self_feeding(definition: &PipelineDefinition) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let outputs = definition.outputs();
    for output in outputs {
        if let Output::Events { event_type, .. } = output
            && definition.source.matches(event_type.as_str())
        {
            errors.push(FieldError::new(
                "source_event_types",
                format!(
                    "matches '{}', the type of the events this pipeline derives: it would \
                     process its own output for ever",
                    event_type.as_str()
                ),
            ));
        }
    }
    errors
}

fn parse_id(raw: &str) -> Result<Uuid, PipelineError> {
    Uuid::parse_str(raw).map_err(|_| invalid("id", "must be a pipeline id (a UUID)"))
}

fn status(stored: &Stored, checkpoint: Option<&Checkpoint>) -> &'static str {
    if !stored.enabled {
        "disabled"
    } else if checkpoint.is_some_and(|c| c.paused && c.generation == stored.generation) {
        "paused"
    } else {
        "running"
    }
}

fn name_of(stored: &Stored) -> String {
    stored
        .definition
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

impl Pipelines {
    pub fn new(deps: PipelineDeps, config: PipelineConfig) -> Self {
        let shared = Arc::new(Shared {
            store: deps.store,
            feed: deps.feed,
            state: deps.state,
            append: deps.append,
            lookups: deps.lookups,
            tenants: deps.tenants,
            node: config
                .node
                .clone()
                .unwrap_or_else(|| Uuid::new_v4().to_string()),
            permits: Arc::new(Semaphore::new(config.concurrency.max(1))),
            config,
        });
        Self {
            workers: Arc::new(Workers::new(shared)),
            quotas: deps.quotas,
            audit: deps.audit,
        }
    }

    fn state(&self) -> &dyn StateStore {
        self.workers.fleet().state.as_ref()
    }

    /// Starts running: a worker for every enabled pipeline of every tenant, and the periodic
    /// rescan. Call once storage has recovered.
    pub fn start(&self) {
        self.workers.start();
    }

    /// Stops every worker of this node and gives their leases back.
    pub async fn stop(&self) {
        self.workers.stop().await;
    }

    /// The pipelines with a worker on this node, by tenant.
    pub async fn running(&self) -> Vec<(TenantId, Uuid)> {
        self.workers.running().await
    }

    /// Ends every worker without committing (tests of crash recovery).
    #[cfg(test)]
    pub(crate) async fn crash(&self) {
        self.workers.crash().await;
    }

    async fn start_position(
        &self,
        tenant: &TenantId,
        from: &StartFrom,
    ) -> Result<u64, PipelineError> {
        match from {
            StartFrom::After(p) => Ok(*p),
            StartFrom::Now => {
                // The tenant's last position now; the feed's head may lag behind storage
                // right after a start, the store does not.
                let page = self
                    .workers
                    .fleet()
                    .store
                    .query(
                        tenant,
                        EventQuery {
                            limit: 1,
                            order: SortOrder::Desc,
                            ..EventQuery::default()
                        },
                    )
                    .await
                    .map_err(|e| PipelineError::Unavailable(e.to_string()))?;
                let last = page.events.first().map_or(0, |e| e.position.get());
                Ok(last.max(self.workers.fleet().feed.head()))
            }
        }
    }

    async fn name_taken(
        &self,
        tenant: &TenantId,
        name: &str,
        except: Option<Uuid>,
    ) -> Result<bool, PipelineError> {
        for (_, entry) in list_all(self.state(), tenant, records::DEFINITIONS).await? {
            if let Ok(stored) = Stored::from_json(&entry.value)
                && Some(stored.id) != except
                && name_of(&stored) == name
            {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Registers a pipeline for the caller's tenant (`POST /api/v1/pipelines`); it processes
    /// the stored events after `from_position` (default: all), then the new ones.
    ///
    /// # Errors
    /// `Invalid` (every bad field), `Conflict` (id or name taken), `Gate` (quota
    /// `max_pipelines`), storage failures.
    pub async fn create(
        &self,
        caller: &Caller,
        input: PipelineInput,
    ) -> Result<PipelineView, PipelineError> {
        let checked = check(input)?;
        let tenant = caller.tenant();
        let id = checked.id.unwrap_or_else(Uuid::now_v7);
        let key = id.to_string();
        if self
            .state()
            .get(tenant, records::DEFINITIONS, &key)
            .await?
            .is_some()
        {
            return Err(PipelineError::Conflict(format!(
                "a pipeline with id '{id}' already exists"
            )));
        }
        if self
            .name_taken(tenant, &checked.definition.name, None)
            .await?
        {
            return Err(PipelineError::Conflict(format!(
                "a pipeline named '{}' already exists",
                checked.definition.name
            )));
        }
        let start_position = self.start_position(tenant, &checked.from).await?;
        let now = Utc::now();
        let stored = Stored {
            id,
            incarnation: Uuid::new_v4(),
            definition: checked.definition.to_json(),
            enabled: checked.enabled,
            generation: 1,
            start_position,
            created_at: now,
            updated_at: now,
        };
        self.quotas.consume(tenant, QuotaKind::Pipelines, 1).await?;
        let written = async {
            self.state()
                .put(
                    &records::index_tenant(),
                    records::TENANTS,
                    tenant.as_str(),
                    json!({}),
                    None,
                )
                .await?;
            self.state()
                .put(
                    tenant,
                    records::DEFINITIONS,
                    &key,
                    stored.to_json(),
                    Some(0),
                )
                .await?;
            Ok::<_, StateError>(())
        }
        .await;
        if let Err(e) = written {
            self.quotas.release(tenant, QuotaKind::Pipelines, 1).await;
            return Err(match e {
                StateError::VersionConflict { .. } => {
                    PipelineError::Conflict(format!("a pipeline with id '{id}' already exists"))
                }
                other => other.into(),
            });
        }
        self.audit(caller, "pipeline.create", &stored, json!({}))
            .await;
        self.workers.refresh(tenant, id).await;
        Ok(self.view(&stored, None))
    }

    fn view(&self, stored: &Stored, checkpoint: Option<&Checkpoint>) -> PipelineView {
        let current = checkpoint.filter(|c| c.generation == stored.generation);
        PipelineView {
            id: stored.id,
            definition: stored.definition.clone(),
            enabled: stored.enabled,
            status: status(stored, current),
            generation: stored.generation,
            position: current.map_or(stored.start_position, |c| c.position),
            created_at: stored.created_at,
            updated_at: stored.updated_at,
        }
    }

    async fn read(&self, tenant: &TenantId, id: &str) -> Result<(Stored, u64), PipelineError> {
        let uuid = parse_id(id)?;
        let entry = self
            .state()
            .get(tenant, records::DEFINITIONS, &uuid.to_string())
            .await?
            .ok_or_else(|| not_found(id))?;
        let stored = Stored::from_json(&entry.value)
            .map_err(|e| PipelineError::Internal(anyhow::anyhow!(e)))?;
        Ok((stored, entry.version))
    }

    async fn checkpoint(
        &self,
        tenant: &TenantId,
        id: Uuid,
    ) -> Result<Option<(Checkpoint, u64)>, PipelineError> {
        let entry = self
            .state()
            .get(tenant, records::CHECKPOINTS, &id.to_string())
            .await?;
        Ok(entry.and_then(|e| Checkpoint::from_json(&e.value).ok().map(|c| (c, e.version))))
    }

    /// The caller's tenant's pipelines, oldest first.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn list(&self, caller: &Caller) -> Result<Vec<PipelineView>, PipelineError> {
        let tenant = caller.tenant();
        let mut views = Vec::new();
        for (_, entry) in list_all(self.state(), tenant, records::DEFINITIONS).await? {
            let stored = Stored::from_json(&entry.value)
                .map_err(|e| PipelineError::Internal(anyhow::anyhow!(e)))?;
            let checkpoint = self.checkpoint(tenant, stored.id).await?;
            views.push(self.view(&stored, checkpoint.as_ref().map(|(c, _)| c)));
        }
        views.sort_by_key(|v| (v.created_at, v.id));
        Ok(views)
    }

    /// One pipeline (`GET /api/v1/pipelines/{id}`).
    ///
    /// # Errors
    /// `Invalid` id, `NotFound`, storage failures.
    pub async fn get(&self, caller: &Caller, id: &str) -> Result<PipelineView, PipelineError> {
        let (stored, _) = self.read(caller.tenant(), id).await?;
        let checkpoint = self.checkpoint(caller.tenant(), stored.id).await?;
        Ok(self.view(&stored, checkpoint.as_ref().map(|(c, _)| c)))
    }

    /// Replaces a pipeline (`PUT /api/v1/pipelines/{id}`): the same body as `create` without
    /// `id`. A changed definition starts a new generation — empty state, counters at zero —
    /// after `from_position` (default 0: every stored event; `"now"`: only new events). The
    /// same definition keeps its state and checkpoint (`enabled` may change), and resumes a
    /// paused pipeline.
    ///
    /// # Errors
    /// `Invalid`, `NotFound`, `Conflict` (name taken, changed concurrently), storage failures.
    pub async fn update(
        &self,
        caller: &Caller,
        id: &str,
        input: PipelineInput,
    ) -> Result<PipelineView, PipelineError> {
        let tenant = caller.tenant();
        if input.id.is_some() {
            return Err(invalid(
                "id",
                "is taken from the path; leave it out of the body",
            ));
        }
        let (current, version) = self.read(tenant, id).await?;
        let explicit_start = input.from_position.is_some();
        let checked = check(input)?;
        if checked.definition.name != name_of(&current)
            && self
                .name_taken(tenant, &checked.definition.name, Some(current.id))
                .await?
        {
            return Err(PipelineError::Conflict(format!(
                "a pipeline named '{}' already exists",
                checked.definition.name
            )));
        }
        let definition = checked.definition.to_json();
        let changed = definition != current.definition || explicit_start;
        let stored = Stored {
            id: current.id,
            incarnation: current.incarnation,
            definition,
            enabled: checked.enabled,
            generation: if changed {
                current.generation + 1
            } else {
                current.generation
            },
            start_position: if changed {
                self.start_position(tenant, &checked.from).await?
            } else {
                current.start_position
            },
            created_at: current.created_at,
            updated_at: Utc::now(),
        };
        self.state()
            .put(
                tenant,
                records::DEFINITIONS,
                &stored.id.to_string(),
                stored.to_json(),
                Some(version),
            )
            .await?;
        if !changed {
            self.resume(tenant, stored.id).await?;
        }
        self.audit(
            caller,
            "pipeline.update",
            &stored,
            json!({"restarted": changed, "start_position": stored.start_position}),
        )
        .await;
        self.workers.refresh(tenant, stored.id).await;
        let checkpoint = self.checkpoint(tenant, stored.id).await?;
        Ok(self.view(&stored, checkpoint.as_ref().map(|(c, _)| c)))
    }

    /// Clears `paused` in the checkpoint (a compare-and-swap, retried).
    async fn resume(&self, tenant: &TenantId, id: Uuid) -> Result<(), PipelineError> {
        for _ in 0..16 {
            let Some((mut checkpoint, version)) = self.checkpoint(tenant, id).await? else {
                return Ok(());
            };
            if !checkpoint.paused {
                return Ok(());
            }
            checkpoint.paused = false;
            match self
                .state()
                .put(
                    tenant,
                    records::CHECKPOINTS,
                    &id.to_string(),
                    checkpoint.to_json(),
                    Some(version),
                )
                .await
            {
                Ok(_) => return Ok(()),
                Err(StateError::VersionConflict { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Err(PipelineError::Conflict(
            "the pipeline's checkpoint keeps changing; retry".into(),
        ))
    }

    /// Starts the pipeline over (`PUT /api/v1/pipelines/{id}/reset`): a new generation with
    /// an empty state and counters at zero, after `from_position` (default 0: every stored
    /// event). Its derived events are emitted again, under new ids.
    ///
    /// # Errors
    /// `Invalid`, `NotFound`, `Conflict`, storage failures.
    pub async fn reset(
        &self,
        caller: &Caller,
        id: &str,
        from_position: Option<Value>,
    ) -> Result<PipelineView, PipelineError> {
        let tenant = caller.tenant();
        let (current, version) = self.read(tenant, id).await?;
        let from = match &from_position {
            None | Some(Value::Null) => StartFrom::After(0),
            Some(Value::String(s)) if s == "now" => StartFrom::Now,
            Some(Value::Number(n)) if n.as_u64().is_some() => {
                StartFrom::After(n.as_u64().unwrap_or(0))
            }
            Some(_) => {
                return Err(invalid(
                    "from_position",
                    "must be a position (a non-negative integer; 0 = every stored event) or \
                     \"now\"",
                ));
            }
        };
        let stored = Stored {
            generation: current.generation + 1,
            start_position: self.start_position(tenant, &from).await?,
            updated_at: Utc::now(),
            ..current
        };
        self.state()
            .put(
                tenant,
                records::DEFINITIONS,
                &stored.id.to_string(),
                stored.to_json(),
                Some(version),
            )
            .await?;
        self.audit(
            caller,
            "pipeline.reset",
            &stored,
            json!({"start_position": stored.start_position}),
        )
        .await;
        self.workers.refresh(tenant, stored.id).await;
        Ok(self.view(&stored, None))
    }

    /// Deletes a pipeline with its checkpoint and results (`DELETE /api/v1/pipelines/{id}`);
    /// gives the `max_pipelines` quota back. Its derived events stay in the log.
    ///
    /// # Errors
    /// `Invalid` id, `NotFound`, storage failures.
    pub async fn delete(&self, caller: &Caller, id: &str) -> Result<(), PipelineError> {
        let tenant = caller.tenant();
        let (stored, _) = self.read(tenant, id).await?;
        let key = stored.id.to_string();
        if !self
            .state()
            .delete(tenant, records::DEFINITIONS, &key)
            .await?
        {
            return Err(not_found(id));
        }
        self.quotas.release(tenant, QuotaKind::Pipelines, 1).await;
        self.audit(caller, "pipeline.delete", &stored, json!({}))
            .await;
        self.workers.refresh(tenant, stored.id).await;
        let cleaned = async {
            self.state()
                .delete(tenant, records::CHECKPOINTS, &key)
                .await?;
            let prefix = records::result_prefix(&key);
            loop {
                let page = self
                    .state()
                    .list(tenant, records::RESULTS, Some(prefix.clone()), None, 500)
                    .await?;
                if page.is_empty() {
                    return Ok::<_, StateError>(());
                }
                for (row, _) in page {
                    self.state().delete(tenant, records::RESULTS, &row).await?;
                }
            }
        }
        .await;
        if let Err(e) = cleaned {
            tracing::warn!(pipeline = %key, error = %e,
                           "pipeline deleted, but its checkpoint or results could not all be removed");
        }
        Ok(())
    }

    /// A pipeline's figures.
    ///
    /// # Errors
    /// `Invalid` id, `NotFound`, storage failures.
    pub async fn stats(&self, caller: &Caller, id: &str) -> Result<PipelineStats, PipelineError> {
        let (stored, _) = self.read(caller.tenant(), id).await?;
        self.stats_of(caller.tenant(), &stored).await
    }

    /// Every pipeline's figures (`GET /api/v1/pipelines/stats`), oldest first.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn all_stats(&self, caller: &Caller) -> Result<Vec<PipelineStats>, PipelineError> {
        let tenant = caller.tenant();
        let mut all = Vec::new();
        for (_, entry) in list_all(self.state(), tenant, records::DEFINITIONS).await? {
            let stored = Stored::from_json(&entry.value)
                .map_err(|e| PipelineError::Internal(anyhow::anyhow!(e)))?;
            all.push((stored.created_at, self.stats_of(tenant, &stored).await?));
        }
        all.sort_by_key(|(at, s)| (*at, s.id));
        Ok(all.into_iter().map(|(_, s)| s).collect())
    }

    async fn stats_of(
        &self,
        tenant: &TenantId,
        stored: &Stored,
    ) -> Result<PipelineStats, PipelineError> {
        let checkpoint = self
            .checkpoint(tenant, stored.id)
            .await?
            .map(|(c, _)| c)
            .filter(|c| c.generation == stored.generation);
        let position = checkpoint
            .as_ref()
            .map_or(stored.start_position, |c| c.position);
        let definition =
            definition_of(stored).map_err(|e| PipelineError::Internal(anyhow::anyhow!(e)))?;
        let behind = self
            .workers
            .fleet()
            .store
            .query(
                tenant,
                EventQuery {
                    type_filters: definition.source.clone(),
                    from_position: Some(Position::new(position)),
                    limit: LAG_CAP,
                    order: SortOrder::Asc,
                    ..EventQuery::default()
                },
            )
            .await
            .map_err(|e| PipelineError::Unavailable(e.to_string()))?;
        let lag_seconds = behind.events.first().map_or(0.0, |e| {
            (Utc::now() - e.timestamp)
                .to_std()
                .map_or(0.0, |d| d.as_secs_f64())
        });
        Ok(PipelineStats {
            id: stored.id,
            name: definition.name.clone(),
            status: status(stored, checkpoint.as_ref()),
            generation: stored.generation,
            counters: checkpoint.as_ref().map(|c| c.counters).unwrap_or_default(),
            position,
            last_processed: checkpoint.as_ref().and_then(|c| c.last_processed_at),
            lag: behind.events.len() as u64,
            lag_capped: behind.has_more,
            lag_seconds,
            failures: checkpoint.map(|c| c.failures).unwrap_or_default(),
        })
    }

    /// A page of the latest results per group, in key order
    /// (`GET /api/v1/pipelines/{id}/results?limit&after`).
    ///
    /// # Errors
    /// `Invalid` id, limit or `after`, or a pipeline without a `table` output; `NotFound`;
    /// storage failures.
    pub async fn results(
        &self,
        caller: &Caller,
        id: &str,
        limit: Option<&str>,
        after: Option<&str>,
    ) -> Result<ResultsPage, PipelineError> {
        let limit = match limit {
            None => DEFAULT_RESULTS_LIMIT,
            Some(raw) => match raw.parse::<usize>() {
                Ok(n) if (1..=MAX_RESULTS_LIMIT).contains(&n) => n,
                _ => {
                    return Err(invalid(
                        "limit",
                        format!("must be an integer from 1 to {MAX_RESULTS_LIMIT}"),
                    ));
                }
            },
        };
        if after.is_some_and(str::is_empty) {
            return Err(invalid("after", "must not be empty"));
        }
        let tenant = caller.tenant();
        let (stored, _) = self.read(tenant, id).await?;
        let definition =
            definition_of(&stored).map_err(|e| PipelineError::Internal(anyhow::anyhow!(e)))?;
        if !definition
            .outputs()
            .iter()
            .any(|o| matches!(o, Output::Table))
        {
            return Err(invalid(
                "id",
                "this pipeline has no table output: its results are derived events, read them \
                 with /api/v1/events/query",
            ));
        }
        let key = stored.id.to_string();
        let prefix = records::result_prefix(&key);
        let mut rows = Vec::new();
        let mut cursor = after.map(|a| records::result_key(&key, a));
        let mut has_more = false;
        // Rows of an older generation (being cleared) are skipped.
        'pages: loop {
            let page = self
                .state()
                .list(
                    tenant,
                    records::RESULTS,
                    Some(prefix.clone()),
                    cursor.clone(),
                    limit + 1,
                )
                .await?;
            let done = page.len() <= limit;
            cursor = page.last().map(|(k, _)| k.clone());
            for (_, entry) in page {
                let Ok(row) = serde_json::from_value::<ResultRow>(entry.value) else {
                    continue;
                };
                if row.generation != stored.generation {
                    continue;
                }
                if rows.len() == limit {
                    has_more = true;
                    break 'pages;
                }
                rows.push(row);
            }
            if done {
                break;
            }
        }
        Ok(ResultsPage {
            id: stored.id,
            rows,
            has_more,
        })
    }

    async fn audit(&self, caller: &Caller, action: &str, stored: &Stored, extra: Value) {
        let mut details = json!({
            "name": name_of(stored),
            "enabled": stored.enabled,
            "generation": stored.generation,
        });
        if let (Some(d), Value::Object(extra)) = (details.as_object_mut(), extra) {
            d.extend(extra);
        }
        let record = AuditRecord::new(
            caller.tenant().as_str(),
            caller.actor(),
            action,
            AuditOutcome::Success,
        )
        .resource(stored.id.to_string())
        .details(details);
        record_or_log(self.audit.as_ref(), record).await;
    }
}
