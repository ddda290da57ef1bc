//! Stream pipelines: a definition (source filters, ordered operators, outputs) validated as a
//! value object, and the pure, checkpointable execution of its operators over records.
//!
//! # Records and paths
//! A [`Record`] is what flows between operators: a JSON `payload` (the event's payload at the
//! start) and the [`SourceEvent`] it came from. Fields are [`FieldPath`]s: `$` (the whole
//! payload), `$.customer.tier`, `$.items[0].sku` (payload members and array indexes; member
//! names are 1–128 letters, digits, `_` or `-`; at most 16 members and indexes), or the source
//! event's attributes `@id`, `@entity_id`, `@event_type`, `@position`, `@version`, `@timestamp`
//! (an RFC 3339 string with microseconds and `Z`, e.g. `2024-05-01T12:00:00.000000Z`). A path
//! through a missing member, an index past the end, or a member of a non-object is *missing*;
//! JSON `null` is a value, but every operator below treats `null` like missing unless it says
//! otherwise.
//!
//! # The definition ([`PipelineDefinition::parse`])
//! `{"name", "description"?, "source_event_types": [...], "operators": [...], "output"?,
//! "on_error"?}`. Every error is reported at once, each naming its field as in the body
//! (`operators[2].field`, `operators[3].aggregations[0].fn`,
//! `operators[5].routes[1].when.op`, `output.event_type`). A member an object does not define
//! is an error at its own name (`operators[0].feild`: "unknown member 'feild'").
//! - `name`: 1–128 characters of `[A-Za-z0-9._:-]`. `description`: at most 1000 characters.
//! - `source_event_types`: required; type filters as everywhere (`x`, `x.*`, `*`; at most 100;
//!   duplicates collapse); an empty list takes every event type.
//! - `operators`: required, may be empty; at most [`MAX_OPERATORS`]; each an object with a
//!   `type`. At most one `window`, which must be immediately followed by a `reduce`; at most
//!   one `reduce`; a `branch` only as the last operator.
//! - `output`: `{"type": "events", "event_type", "entity_id_field"?}` or `{"type": "table"}`;
//!   required unless the last operator is a branch.
//! - `on_error`: `"skip"` (default) or `"pause"`.
//! - Durations (`size_ms`, `slide_ms`, `gap_ms`, `within_ms`, `per_ms`) are whole numbers of
//!   milliseconds, > 0 and at most 30 days ([`MAX_DURATION_MS`]); `allowed_lateness_ms` may be
//!   0. Lists of fields (`group_by`, `key_fields`, `per_key`) hold at most 8 paths.
//!
//! [`PipelineDefinition::to_json`] prints the canonical body (every default written out,
//! members a kind does not use left out); parsing it gives the same definition.
//!
//! # Operators
//! Records an operator drops count in [`Effects::filtered`]; a record an operator fails on is
//! dropped and one [`OperatorError`] (the operator's index and a message) is reported.
//!
//! - **`filter`** `{"field", "op", "value"}`: keeps the records that match.
//!   - `eq` / `ne`: JSON equality where numbers compare by value at any depth (`1` equals
//!     `1.0`). A missing field never equals anything (`null` included); `ne` on a missing field
//!     matches.
//!   - `gt`, `gte`, `lt`, `lte` (value: a number or a string): numbers by value, strings by
//!     their bytes (lexicographically); a missing field or different types never match.
//!   - `contains`: a string field containing the value as a substring, or an array field with
//!     an element equal to the value.
//!   - `in` (value: an array): the value holds an element equal to the field's value.
//!   - `exists` (value optional, `true` or `false`, default `true`): the field is present and
//!     not `null`; with `false`, it is missing or `null`.
//! - **`map`** `{"field", "transform", "value"?}`: `field` is a payload path other than `$`.
//!   - `uppercase`, `lowercase`, `trim` (no value): on a string; a missing or `null` field is
//!     left alone; any other value is an error (`$.name is not a string`).
//!   - `add`, `multiply` (value: a number): on a number; missing or `null`: left alone; other
//!     values: error. Integers stay exact while the result fits 64 bits, then become floats;
//!     a result that is not a finite number is an error.
//!   - `set` (value: any JSON): puts the value there, creating missing objects on the way. An
//!     index may name an existing element or the one just past the end (appended). A value on
//!     the way that is not an object (or not an array, for an index), or a missing member the
//!     next step indexes, is an error.
//!   - `rename` (value: the new payload path): moves the value (`null` included); a missing
//!     field is left alone; the new path is written as by `set`.
//!   - `remove` (no value): deletes the member (or the array element, shifting the next ones);
//!     missing: nothing happens.
//! - **`flat_map`** `{"field"}` (a payload path, `$` allowed): the array there becomes one
//!   record per element, in order: each record is the original payload with the array
//!   replaced by the element, and its origin is the original's plus `/<index>`. An empty
//!   array, a missing field or `null` yields no record (counted as filtered); any other value
//!   is an error.
//! - **`enrich`** `{"from": "entity_state", "entity_id_field", "into"}` or `{"from":
//!   "projection", "name", "key_field", "into"}`: the worker looks up the entity's current
//!   state (or the projection's state at the key) and puts it at `into` (a payload path other
//!   than `$`; missing objects are created), or `null` when nothing was found. The key is the
//!   field's string as it is, a number's or boolean's JSON text; any other value (or a
//!   missing field) looks nothing up and gives `null`. [`PipelineState::apply`] passes records
//!   through an enrich unchanged: the worker does the lookup ([`Enrich::lookup_key`],
//!   [`Enrich::merge`]; [`Enrich::try_merge`] says when `into` cannot be written because a value
//!   on the way is not an object).
//! - **`dedupe`** `{"key_fields": [...], "within_ms"}` (at least one key field): the key is the
//!   JSON array of the fields' values (a missing field reads `null`; values compare as JSON
//!   text, so `1` and `1.0` differ). A record whose key passed less than `within_ms` before it
//!   (by the source event's timestamp) is dropped; duplicates do not extend that time (the
//!   window starts at the record that passed). Keys are forgotten once `within_ms` has passed,
//!   and beyond [`MAX_KEYS`] the oldest are forgotten first.
//! - **`throttle`** `{"per_key": [...]?, "max", "per_ms"}`: per key (as for dedupe; no fields:
//!   one key for every record), at most `max` records pass per fixed window
//!   `[k * per_ms, (k + 1) * per_ms)` of the source event's timestamp (aligned to the epoch);
//!   the others are dropped. At most [`MAX_KEYS`] keys are remembered (the oldest window's go
//!   first).
//! - **`window`** `{"kind", "size_ms"?, "slide_ms"?, "gap_ms"?, "allowed_lateness_ms"?,
//!   "time_field"?}`, always immediately followed by a `reduce`, which aggregates per window
//!   and group. A record's time is `time_field`: `@timestamp` (default), or a payload path
//!   holding an RFC 3339 time or milliseconds since the epoch (a fractional part is dropped);
//!   a missing or unusable time (or one outside years 0000–9999) is an error of the window.
//!   All bounds are in milliseconds since the epoch, windows are half-open `[start, end)`.
//!   - `tumbling` (`size_ms`; no `slide_ms` or `gap_ms`): the one window
//!     `[floor(t / size) * size, + size)`.
//!   - `sliding` (`size_ms`, `slide_ms` ≤ `size_ms`, at most 1000 windows per record; no
//!     `gap_ms`): every window starting at a multiple `s` of `slide_ms` with
//!     `s <= t < s + size_ms`.
//!   - `session` (`gap_ms`; no `size_ms` or `slide_ms`): per group of the reduce, a session is
//!     the window `[first time, last time + gap_ms)`. A record joins the group's sessions its
//!     own window `[t, t + gap_ms)` overlaps: records less than `gap_ms` apart are in one
//!     session, a gap of `gap_ms` or more starts a new one, and a record bridging two sessions
//!     merges them.
//!
//!   The watermark ([`PipelineState::watermark_ms`]) is the highest time of any record the
//!   window has seen (whether or not it could be aggregated). A window closes when
//!   `watermark >= end + allowed_lateness_ms` (default 0): its results are emitted, one record
//!   per group, and it is forgotten. A record is folded into its windows that are still open;
//!   when none is (for a session: it joins no open session and its own window would already
//!   be closed), it is late: counted in [`Effects::late`] and not aggregated. Each record is
//!   folded before the watermark moves to its time, and the windows it closes are emitted
//!   right after it. [`PipelineState::advance`] moves the watermark to the clock (when
//!   `time_field` is `@timestamp` only) and closes what that closes: the worker calls it with
//!   a time no unprocessed event can precede (when it has caught up with the log).
//!   Results come out by window end, then start, then group key. At most
//!   [`MAX_OPEN_WINDOWS`] windows (or sessions) are open at once and [`MAX_GROUPS`] groups per
//!   window (for sessions: groups with open sessions); a record that would go beyond is an
//!   error of the reduce.
//! - **`reduce`** `{"group_by": [...]?, "aggregations": [{"name", "fn", "field"?, "p"?}]}`:
//!   groups by the `group_by` values (missing reads `null`). A group_by field's name in the
//!   result is its last member (`$.customer.id` → `id`) or the attribute's name (`@entity_id`
//!   → `entity_id`): `$`, paths ending with an index and two fields with the same name are
//!   refused. 1–16 aggregations, named by 1–128 letters, digits or `_`, unique, different from
//!   the group_by names and from `window_start` / `window_end`. A result's payload is
//!   `{<group_by names>: values, <aggregation names>: results}`, plus `"window_start"` and
//!   `"window_end"` (RFC 3339, microseconds, `Z`) after a window.
//!   - After a window: see above; a result's `origin` is `window/<start_ms>/<end_ms>/<group
//!     key>` and its `source` is the source of the last record folded into it.
//!   - Without a window: a running aggregation. Every record updates its group and emits the
//!     group's current result, with origin `<record origin>/group/<group key>` and the
//!     record's source. At most [`MAX_GROUPS`] groups: a record opening one more is an error.
//!   - The group key is the group values' JSON texts joined with `|`, each with `%` written
//!     `%25` and `|` written `%7C` (empty without group_by) ([`group_key`]).
//!   - Functions (`field` is required by all but `count`; `p`, 0 to 100, by `percentile`
//!     only; `null` and missing values are skipped by all):
//!     - `count`: records; with a `field`, records where it is present and not `null`.
//!     - `sum`: of the numbers (other values are ignored); `0` for none. Integers stay exact
//!       while the sum fits 64 bits, then it becomes a float.
//!     - `avg`: of the numbers, a float; `null` for none.
//!     - `min`, `max`: of the numbers only (strings are ignored), as they were written;
//!       `null` for none.
//!     - `distinct`: how many distinct values (compared as JSON text). At most
//!       [`MAX_VALUES_PER_GROUP`] per group: a record bringing one more is an error.
//!     - `first`, `last`: the value of the first / last record (in processing order) that has
//!       one; `null` for none.
//!     - `percentile`: nearest rank over the numbers: the value at rank `ceil(p / 100 * n)`
//!       (at least 1) of the sorted numbers; exact, at most [`MAX_VALUES_PER_GROUP`] numbers
//!       per group (one more is an error); `null` for none.
//!
//!   A record an aggregation cannot take fails as a whole: no aggregation (and no window, for
//!   a sliding window) counts it.
//! - **`branch`** `{"routes": [{"when": {"field", "op", "value"}, "output"}]}` (1–16 routes;
//!   `when` is a filter condition, with an optional `"type": "filter"`): the last operator.
//!   [`PipelineDefinition::route`] sends a record to the output of every route whose condition
//!   matches, in route order; when none matches, to the top-level `output` if there is one,
//!   else nowhere. [`PipelineState::apply`] passes records through a branch unchanged.
//!
//! # Outputs
//! `events` appends a derived event of `event_type` (entity id from `entity_id_field`), whose
//! payload is the record's. `table` keeps the latest result per key
//! ([`PipelineDefinition::table_key`]): with a reduce, the group key (followed by
//! `@<start_ms>-<end_ms>` after a window); without, the record's origin.
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
//! stopped (property-tested: results are the same whether or not the state went through JSON
//! text between records). Every record carries an [`Record::origin`], a deterministic name of
//! what it is (the source event, the flat_map element, the window and group), from which the
//! worker derives the ids of the events it appends: re-emitting after a crash is idempotent.

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
