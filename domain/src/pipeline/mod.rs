//! Stream pipelines: a definition (source filters, ordered operators, outputs) validated as a
//! value object, and the pure, checkpointable execution of its operators over records.
//!
//! SKELETON: the signatures below are the contract between the domain and the pipeline
//! worker in `application`; the bodies are filled in by the domain work.
//!
//! # Records and paths
//! A [`Record`] is what flows between operators: a JSON `payload` (the event's payload at the
//! start) and the [`SourceEvent`] it came from. Fields are [`FieldPath`]s: `$` (the whole
//! payload), `$.customer.tier`, `$.items[0].sku` (payload members and array indexes), or the
//! source event's attributes `@entity_id`, `@event_type`, `@position`, `@version`, `@timestamp`,
//! `@id`.
//!
//! # Execution
//! The worker (in `application`) runs each event's record through the operators in order:
//! [`PipelineState::apply`] for every operator but `enrich` (which needs a lookup through a
//! port: [`Enrich::lookup_key`], then [`Enrich::merge`]) and `branch` (the last operator, if
//! any: [`PipelineDefinition::route`]). Windows are closed by the watermark, which events move
//! (their time) and which [`PipelineState::advance`] moves with the clock when the window's time
//! is the events' own `@timestamp` (assigned by the server, never decreasing).
//!
//! Everything an operator remembers (dedupe keys, throttle counts, open windows, reducer
//! accumulators, the watermark) is in [`PipelineState`], which serializes to JSON: the worker
//! stores it together with its checkpoint, so a restart resumes exactly where the last commit
//! stopped. Every record carries an [`Record::origin`], a deterministic name of what it is (the
//! source event, the flat_map element, the window and group), from which the worker derives
//! the ids of the events it appends: re-emitting after a crash is idempotent.

mod aggregate;
mod operators;
mod path;
mod spec;
mod state;
#[cfg(test)]
mod tests;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::subscription::TypeFilters;
use crate::values::EventType;

pub use operators::{flat_map, group_key};
pub use path::{MAX_PATH_SEGMENTS, MAX_SEGMENT_LEN};
pub use spec::{
    MAX_AGGREGATION_NAME_LEN, MAX_AGGREGATIONS, MAX_DURATION_MS, MAX_KEY_FIELDS,
    MAX_WINDOWS_PER_RECORD, WINDOW_MEMBERS,
};
pub use state::{
    KeyCounts, KeyTimes, MAX_OPEN_WINDOWS, MAX_TIME_MS, MIN_TIME_MS, OpenWindows, OperatorState,
    RunningGroups, record_time, windows_of,
};

/// Longest pipeline name; names are 1–128 characters of `[A-Za-z0-9._:-]`.
pub const MAX_NAME_LEN: usize = 128;
/// Longest description.
pub const MAX_DESCRIPTION_LEN: usize = 1000;
/// Most operators in one pipeline.
pub const MAX_OPERATORS: usize = 32;
/// Most routes of a branch.
pub const MAX_ROUTES: usize = 16;
/// Most groups (per window, or in total without a window) a reduce keeps; a record that would
/// open one more is an operator error.
pub const MAX_GROUPS: usize = 10_000;
/// Most values a `distinct` or `percentile` accumulator keeps per group.
pub const MAX_VALUES_PER_GROUP: usize = 10_000;
/// Most keys a `dedupe` or `throttle` remembers (the oldest are forgotten first).
pub const MAX_KEYS: usize = 100_000;

/// A field of a definition that is wrong, named as in the request body
/// (`operators[2].field`, `output.event_type`, `operators[4].routes[1].when.op`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecError {
    pub field: String,
    pub message: String,
}

/// What to do with an event an operator fails on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnError {
    /// Record it (stats, last error, the bounded list of failed events) and go on.
    #[default]
    Skip,
    /// Record it and pause the pipeline (it stays disabled until updated or reset).
    Pause,
}

/// The raw members of a pipeline body that define it (`id` and `enabled` are the use case's).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PipelineSpec {
    pub name: Option<String>,
    pub description: Option<String>,
    pub source_event_types: Option<Vec<String>>,
    pub operators: Option<Vec<Value>>,
    pub output: Option<Value>,
    /// `"skip"` (default) or `"pause"`.
    pub on_error: Option<String>,
}

/// A path to a field of a record.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum FieldPath {
    /// Members and indexes from the payload's root (empty: the whole payload).
    Payload(Vec<Segment>),
    /// An attribute of the source event.
    Attribute(Attribute),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Segment {
    Member(String),
    Index(usize),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Attribute {
    Id,
    EntityId,
    EventType,
    Position,
    Version,
    Timestamp,
}

/// The event a record came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceEvent {
    pub id: Uuid,
    pub position: u64,
    pub entity_id: String,
    pub event_type: String,
    pub version: u64,
    pub timestamp: DateTime<Utc>,
}

/// What flows between operators.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub payload: Value,
    /// The source event (for a window's or reduce's result: the event that completed it).
    pub source: SourceEvent,
    /// A deterministic name of this record within the pipeline: the source event's id, plus
    /// `/<i>` per flat_map element, or `window/<start_ms>/<end_ms>/<group>` for a window's
    /// result, or `<event id>/group/<group>` for a running reduce's update.
    pub origin: String,
}

/// A failure of one operator on one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatorError {
    /// The operator's index in the definition.
    pub operator: usize,
    pub message: String,
}

/// What happened while applying operators, besides the records that come out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Effects {
    /// Records dropped by `filter`, `dedupe` or `throttle`.
    pub filtered: u64,
    /// Records whose window had closed (beyond `allowed_lateness_ms`): counted, not used.
    pub late: u64,
    pub errors: Vec<OperatorError>,
}

/// Comparison of a `filter` (and a branch route's `when`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilterOp {
    Eq,
    Ne,
    Gt,
    Gte,
    Lt,
    Lte,
    Contains,
    In,
    Exists,
}

/// `filter`: `{"type": "filter", "field", "op", "value"?}`.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    pub field: FieldPath,
    pub op: FilterOp,
    /// Absent only for `exists` (where it may be `false` to ask for absence).
    pub value: Option<Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transform {
    Uppercase,
    Lowercase,
    Trim,
    Multiply,
    Add,
    Set,
    /// `value` is the new path (a payload path).
    Rename,
    Remove,
}

/// `map`: `{"type": "map", "field", "transform", "value"?}`.
#[derive(Debug, Clone, PartialEq)]
pub struct MapOp {
    /// A payload path (attributes cannot be changed).
    pub field: FieldPath,
    pub transform: Transform,
    pub value: Option<Value>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum EnrichSource {
    /// The current state of the entity whose id is at `entity_id_field`.
    EntityState { entity_id_field: FieldPath },
    /// The state of projection `name` at the key found at `key_field`.
    Projection { name: String, key_field: FieldPath },
}

/// `enrich`: `{"type": "enrich", "from": "entity_state", "entity_id_field", "into"}` or
/// `{"type": "enrich", "from": "projection", "name", "key_field", "into"}`.
#[derive(Debug, Clone, PartialEq)]
pub struct Enrich {
    pub source: EnrichSource,
    /// A payload path where the looked-up value goes (`null` when nothing was found).
    pub into: FieldPath,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowKind {
    Tumbling,
    Sliding,
    Session,
}

/// `window`: `{"type": "window", "kind", "size_ms"?, "slide_ms"?, "gap_ms"?,
/// "allowed_lateness_ms"?, "time_field"?}`; always followed by a `reduce`.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowSpec {
    pub kind: WindowKind,
    /// Tumbling and sliding.
    pub size_ms: u64,
    /// Sliding (`0 < slide_ms <= size_ms`).
    pub slide_ms: u64,
    /// Session.
    pub gap_ms: u64,
    pub allowed_lateness_ms: u64,
    /// Where a record's time is: `@timestamp` (default) or a payload path holding an RFC 3339
    /// string or milliseconds since the epoch.
    pub time_field: FieldPath,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AggregateFn {
    Count,
    Sum,
    Avg,
    Min,
    Max,
    Distinct,
    First,
    Last,
    Percentile,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Aggregation {
    /// The result's member name.
    pub name: String,
    pub function: AggregateFn,
    /// Required by every function but `count`.
    pub field: Option<FieldPath>,
    /// `percentile` only: 0 to 100.
    pub p: Option<f64>,
}

/// `reduce`: `{"type": "reduce", "group_by": [...], "aggregations": [...]}`.
#[derive(Debug, Clone, PartialEq)]
pub struct ReduceSpec {
    pub group_by: Vec<FieldPath>,
    pub aggregations: Vec<Aggregation>,
}

/// One route of a `branch`.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    pub when: Condition,
    pub output: Output,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Operator {
    Filter(Condition),
    Map(MapOp),
    FlatMap {
        field: FieldPath,
    },
    Enrich(Enrich),
    Dedupe {
        key_fields: Vec<FieldPath>,
        within_ms: u64,
    },
    Throttle {
        per_key: Vec<FieldPath>,
        max: u64,
        per_ms: u64,
    },
    Window(WindowSpec),
    Reduce(ReduceSpec),
    /// Always the last operator.
    Branch(Vec<Route>),
}

/// Where results go.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Derived events appended to the tenant's store: type `event_type`, entity id from
    /// `entity_id_field` (default: `pipeline-<pipeline name>`), payload = the record's payload.
    Events {
        event_type: EventType,
        entity_id_field: Option<FieldPath>,
    },
    /// The latest result per group (the reduce's group key; without a reduce, the record's
    /// origin), readable at `/results`.
    Table,
}

/// A validated pipeline definition.
#[derive(Debug, Clone, PartialEq)]
pub struct PipelineDefinition {
    pub name: String,
    pub description: Option<String>,
    pub source: TypeFilters,
    pub operators: Vec<Operator>,
    /// Where records go; optional only when the last operator is a `branch` (records no route
    /// takes go here when present, otherwise they are counted as filtered).
    pub output: Option<Output>,
    pub on_error: OnError,
}

/// Everything the operators remember between records; serializable, so the worker commits it
/// with its checkpoint.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct PipelineState {
    /// Per operator index, what that operator remembers ([`OperatorState::Stateless`] for
    /// the operators that remember nothing).
    #[serde(default)]
    pub operators: Vec<OperatorState>,
    /// The highest record time seen by the window, in ms since the epoch.
    #[serde(default)]
    pub watermark_ms: Option<i64>,
}
