//! The state-store layout of pipelines (every record is JSON; all but the tenant index live in
//! the pipeline's own tenant):
//!
//! - namespace `pipelines`, key = the pipeline's id: [`Stored`] — the definition's canonical
//!   JSON, `enabled`, the generation, and the times;
//! - namespace `pipeline_checkpoints`, key = the pipeline's id: [`Checkpoint`] — the position
//!   of the last event processed, **the operators' state and the counters as of that
//!   position**, and the processing lease (which node runs it, until when). Written as one
//!   value with a compare-and-swap on the version the holder last wrote: state, counters and
//!   position move together or not at all, and a node that lost the lease finds out at its next
//!   write and stops;
//! - namespace `pipeline_results`, key = `<pipeline id>/<result key>`: [`ResultRow`], the
//!   latest result of a group for the `table` output, tagged with its generation;
//! - tenant `_system`, namespace `pipeline-tenants`, key = a tenant that has had pipelines, so
//!   every tenant's pipelines can be found after a restart.
//!
//! A **generation** numbers the runs of a definition: creating a pipeline starts generation 1;
//! changing its definition or resetting it starts the next one, with an empty state. Derived
//! events are named by `(pipeline, incarnation, generation, output, record origin)`
//! ([`derived_event_id`]),
//! so re-emitting after a crash appends nothing new, while a new generation emits afresh.

use allsource_domain::TenantId;
use allsource_domain::pipeline::PipelineState;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

pub const DEFINITIONS: &str = "pipelines";
pub const CHECKPOINTS: &str = "pipeline_checkpoints";
pub const RESULTS: &str = "pipeline_results";
pub const TENANTS: &str = "pipeline-tenants";

/// Failed events kept per pipeline (the newest).
pub const FAILED_KEPT: usize = 20;

/// The tenant that holds the index of tenants with pipelines.
pub fn index_tenant() -> TenantId {
    TenantId::system()
}

/// The key of a result row.
pub fn result_key(pipeline: &str, key: &str) -> String {
    format!("{pipeline}/{key}")
}

/// The key prefix of a pipeline's result rows.
pub fn result_prefix(pipeline: &str) -> String {
    format!("{pipeline}/")
}

/// The id of the event a pipeline derives from a record: UUIDv5 in the namespace of the
/// pipeline's id, of `<incarnation>/<generation>/<output index>/<record origin>`. The
/// incarnation is drawn when the pipeline is created, so a pipeline created again under the
/// id of a deleted one emits afresh. The same record of the same
/// run always gets the same id, across restarts and nodes, so the store's idempotency turns a
/// re-emission into a no-op.
pub fn derived_event_id(
    pipeline: Uuid,
    incarnation: Uuid,
    generation: u64,
    output: usize,
    origin: &str,
) -> Uuid {
    Uuid::new_v5(
        &pipeline,
        format!("{incarnation}/{generation}/{output}/{origin}").as_bytes(),
    )
}

/// A stored pipeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stored {
    pub id: Uuid,
    /// Drawn at creation, kept by updates and resets: names this pipeline's derived events
    /// apart from those of an earlier pipeline that had the same id.
    #[serde(default)]
    pub incarnation: Uuid,
    /// The definition's canonical JSON (`PipelineDefinition::to_json`).
    pub definition: Value,
    pub enabled: bool,
    pub generation: u64,
    /// Where the generation starts: after this position (0: every stored event).
    #[serde(default)]
    pub start_position: u64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// The counters of a generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Counters {
    /// Source events that entered the pipeline.
    pub processed: u64,
    /// Records dropped by `filter`, `dedupe`, `throttle`, an empty `flat_map`, or no route.
    pub filtered: u64,
    /// Records an operator or an output failed on.
    pub failed: u64,
    /// Derived events appended and result rows written.
    pub emitted: u64,
    /// Records that arrived after their window had closed.
    pub late: u64,
}

/// One failure, as the stats show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    pub position: u64,
    pub event_id: Uuid,
    /// The operator's index, `None` for an output.
    pub operator: Option<usize>,
    pub message: String,
    pub at: DateTime<Utc>,
}

/// The checkpoint of a pipeline (see the module docs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub generation: u64,
    /// Every source event at or below it has been processed; the state includes them.
    pub position: u64,
    pub state: PipelineState,
    pub counters: Counters,
    #[serde(default)]
    pub last_processed_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub failures: Vec<Failure>,
    /// Stopped by an error under `on_error: pause`; an update or a reset resumes it.
    #[serde(default)]
    pub paused: bool,
    #[serde(default)]
    pub holder: Option<String>,
    #[serde(default)]
    pub lease_until_ms: i64,
}

impl Checkpoint {
    /// A generation's first checkpoint: nothing processed after `position`.
    pub fn fresh(generation: u64, position: u64, state: PipelineState) -> Self {
        Self {
            generation,
            position,
            state,
            counters: Counters::default(),
            last_processed_at: None,
            failures: Vec::new(),
            paused: false,
            holder: None,
            lease_until_ms: 0,
        }
    }

    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    /// # Errors
    /// When the value is not a checkpoint.
    pub fn from_json(value: &Value) -> Result<Self, String> {
        serde_json::from_value(value.clone()).map_err(|e| format!("bad pipeline checkpoint: {e}"))
    }

    /// Records a failure, keeping the newest [`FAILED_KEPT`].
    pub fn record_failure(&mut self, failure: Failure) {
        self.counters.failed = self.counters.failed.saturating_add(1);
        self.failures.push(failure);
        if self.failures.len() > FAILED_KEPT {
            let extra = self.failures.len() - FAILED_KEPT;
            self.failures.drain(..extra);
        }
    }
}

impl Stored {
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    /// # Errors
    /// When the value is not a stored pipeline.
    pub fn from_json(value: &Value) -> Result<Self, String> {
        serde_json::from_value(value.clone()).map_err(|e| format!("bad pipeline record: {e}"))
    }
}

/// A result row of the `table` output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResultRow {
    pub generation: u64,
    /// The key within the pipeline (the group).
    pub key: String,
    pub value: Value,
    /// The source position the result includes.
    pub position: u64,
    pub updated_at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_ids_depend_on_pipeline_incarnation_generation_output_and_origin_only() {
        let (p, i) = (Uuid::new_v4(), Uuid::new_v4());
        let a = derived_event_id(p, i, 1, 0, "e1");
        assert_eq!(a, derived_event_id(p, i, 1, 0, "e1"));
        assert_ne!(a, derived_event_id(p, Uuid::new_v4(), 1, 0, "e1"));
        assert_ne!(a, derived_event_id(p, i, 2, 0, "e1"));
        assert_ne!(a, derived_event_id(p, i, 1, 1, "e1"));
        assert_ne!(a, derived_event_id(p, i, 1, 0, "e2"));
        assert_ne!(a, derived_event_id(Uuid::new_v4(), i, 1, 0, "e1"));
    }

    #[test]
    fn failures_keep_the_newest_and_count_all() {
        let mut c = Checkpoint::fresh(1, 0, PipelineState::default());
        for i in 0..(FAILED_KEPT as u64 + 5) {
            c.record_failure(Failure {
                position: i,
                event_id: Uuid::nil(),
                operator: Some(0),
                message: "x".into(),
                at: Utc::now(),
            });
        }
        assert_eq!(c.counters.failed, FAILED_KEPT as u64 + 5);
        assert_eq!(c.failures.len(), FAILED_KEPT);
        assert_eq!(c.failures[0].position, 5);
        let back = Checkpoint::from_json(&c.to_json()).unwrap();
        assert_eq!(back, c);
    }
}
