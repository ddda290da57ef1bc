//! Projections: a named, declarative fold of the log into keyed state.
//!
//! A [`ProjectionDefinition`] says which events it takes (a [`ProjectionFilter`]: event types and
//! an entity-id prefix), which key each event updates (a [`KeySpec`]: the entity id, the event
//! type, or a value in the payload), and how each field of a key's state is reduced from the
//! events of that key ([`FieldSpec`]: a [`Reducer`] and the [`ValuePath`] it reads).
//!
//! Reducers are pure functions over an accumulator kept as JSON, so state can be stored in the
//! state store between batches and folding resumes exactly where it stopped: folding events one
//! at a time equals folding them in chunks with a store round trip in between (property-tested).
//!
//! [`KeyedState`] adds the position of the last event folded into a key. Events at or below it
//! are skipped, which makes re-applying an already applied event (a crash between writing a key
//! and writing the projection's checkpoint) a no-op: no double counting.
//!
//! # The definition's JSON shape ([`ProjectionSpec`])
//!
//! ```json
//! {"name": "revenue_by_customer",
//!  "filter": {"event_types": ["order.placed"], "entity_id_prefix": "order-"},
//!  "key": "$.customer.id",
//!  "fields": {"orders": {"reducer": "count"},
//!             "revenue": {"reducer": "sum", "path": "$.amount"}}}
//! ```
//!
//! - `key`: `"entity_id"` (default), `"event_type"`, a payload path `$.a.b`, or an event
//!   attribute `@entity_id`, `@event_type`, `@version`, `@position`, `@timestamp`. An event whose
//!   key is missing, null, an object or an array is skipped by the projection.
//! - `path`: `$` (the whole payload), `$.a.b` (object members; segments of letters, digits, `_`
//!   and `-`), or an event attribute as above. A missing member or `null` is "no value".
//! - Reducers and their accumulators:
//!   - `count`: events of the key (with a `path`: events where the path has a value). A number.
//!   - `sum`: sum of the numeric values (non-numbers are ignored). Integers stay exact while they
//!     fit in 64 bits, then the sum becomes a float.
//!   - `min`, `max`: of the numeric values; `null` until the first one.
//!   - `avg`: `{"avg": x, "sum": s, "count": n}`; `avg` is `null` until the first value.
//!   - `first`, `last`: the first / latest value (any JSON); `null` until the first one. Path
//!     defaults to `$`.
//!   - `distinct_count`: `{"count": n, "values": [...], "capped": false}`: the distinct values
//!     (compared as JSON text), exact up to [`MAX_DISTINCT_VALUES`]; beyond that, new values are
//!     no longer recognised, `count` stops and `capped` turns `true`.
//!   - `merge`: the top-level merge of the value (path defaults to `$`) as in the entity-state
//!     fold ([`apply_payload`]).
//!
//! Two built-ins are definitions like any other, registered by name ([`builtin`]):
//! `event_counter` (key `event_type`, field `count`) and `entity_snapshots` (key `entity_id`,
//! fields `state` (merge), `version`, `event_count`, `last_updated`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Number, Value};

use crate::{Event, EventType, apply_payload};

/// Distinct values a `distinct_count` accumulator remembers.
pub const MAX_DISTINCT_VALUES: usize = 10_000;
/// Fields of one projection.
pub const MAX_FIELDS: usize = 64;
/// Event types in one filter.
pub const MAX_FILTER_EVENT_TYPES: usize = 100;
/// Bytes of a key value; longer keys are skipped.
pub const MAX_KEY_BYTES: usize = 256;
/// Name of the built-in counting events per type.
pub const EVENT_COUNTER: &str = "event_counter";
/// Name of the built-in keeping the latest state of every entity.
pub const ENTITY_SNAPSHOTS: &str = "entity_snapshots";

/// One invalid part of a definition: `field` is its path in the JSON (`fields.revenue.path`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefinitionError {
    pub field: String,
    pub message: String,
}

impl DefinitionError {
    fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// A projection's name: 1–64 characters of lowercase letters, digits, `_` and `-`, starting
/// with a letter or a digit (it appears in URLs and state-store namespaces).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProjectionName(String);

impl ProjectionName {
    pub const MAX_LEN: usize = 64;

    /// # Errors
    /// A message saying which rule the name breaks.
    pub fn parse(raw: &str) -> Result<Self, String> {
        if raw.is_empty() || raw.len() > Self::MAX_LEN {
            return Err(format!("must be 1 to {} characters long", Self::MAX_LEN));
        }
        if !raw
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        {
            return Err("may only contain lowercase letters, digits, '_' and '-'".into());
        }
        if !raw.as_bytes()[0].is_ascii_alphanumeric() {
            return Err("must start with a letter or a digit".into());
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this is the name of a built-in projection.
    pub fn is_builtin(&self) -> bool {
        self.0 == EVENT_COUNTER || self.0 == ENTITY_SNAPSHOTS
    }
}

impl std::fmt::Display for ProjectionName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// An attribute of the event itself (not of its payload).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventAttribute {
    EntityId,
    EventType,
    Version,
    Position,
    Timestamp,
}

/// Where a reducer or a key reads its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ValuePath {
    /// Object members from the payload's root (empty: the whole payload).
    Payload(Vec<String>),
    Attribute(EventAttribute),
}

impl ValuePath {
    /// Parses `$`, `$.a.b` or `@attribute`.
    ///
    /// # Errors
    /// A message naming the allowed forms.
    pub fn parse(raw: &str) -> Result<Self, String> {
        if let Some(attribute) = raw.strip_prefix('@') {
            return Ok(Self::Attribute(match attribute {
                "entity_id" => EventAttribute::EntityId,
                "event_type" => EventAttribute::EventType,
                "version" => EventAttribute::Version,
                "position" => EventAttribute::Position,
                "timestamp" => EventAttribute::Timestamp,
                _ => {
                    return Err("unknown event attribute; use @entity_id, @event_type, \
                                @version, @position or @timestamp"
                        .into());
                }
            }));
        }
        let Some(rest) = raw.strip_prefix('$') else {
            return Err(
                "must be '$', a path like '$.customer.id', or an event attribute \
                        like '@timestamp'"
                    .into(),
            );
        };
        if rest.is_empty() {
            return Ok(Self::Payload(Vec::new()));
        }
        let Some(rest) = rest.strip_prefix('.') else {
            return Err("path segments are separated by '.', as in '$.customer.id'".into());
        };
        let mut segments = Vec::new();
        for segment in rest.split('.') {
            if segment.is_empty() || segment.len() > 128 {
                return Err("path segments must be 1 to 128 characters long".into());
            }
            if !segment
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            {
                return Err(
                    "path segments may only contain letters, digits, '_' and '-'".to_owned(),
                );
            }
            segments.push(segment.to_owned());
        }
        if segments.len() > 16 {
            return Err("paths are at most 16 segments deep".into());
        }
        Ok(Self::Payload(segments))
    }

    /// The path as written in a definition.
    pub fn to_text(&self) -> String {
        match self {
            Self::Payload(segments) if segments.is_empty() => "$".into(),
            Self::Payload(segments) => format!("$.{}", segments.join(".")),
            Self::Attribute(a) => match a {
                EventAttribute::EntityId => "@entity_id",
                EventAttribute::EventType => "@event_type",
                EventAttribute::Version => "@version",
                EventAttribute::Position => "@position",
                EventAttribute::Timestamp => "@timestamp",
            }
            .into(),
        }
    }

    /// The value at the path, `null` included; `None` when a member is missing.
    pub fn resolve_raw(&self, event: &Event, payload: &Value) -> Option<Value> {
        match self {
            Self::Payload(segments) => {
                let mut at = payload;
                for segment in segments {
                    at = at.as_object()?.get(segment)?;
                }
                Some(at.clone())
            }
            Self::Attribute(a) => Some(match a {
                EventAttribute::EntityId => Value::from(event.entity_id.as_str()),
                EventAttribute::EventType => Value::from(event.event_type.as_str()),
                EventAttribute::Version => Value::from(event.version.get()),
                EventAttribute::Position => Value::from(event.position.get()),
                EventAttribute::Timestamp => Value::from(
                    event
                        .timestamp
                        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
                ),
            }),
        }
    }

    /// The value at the path; `None` when missing or `null`.
    pub fn resolve(&self, event: &Event, payload: &Value) -> Option<Value> {
        self.resolve_raw(event, payload).filter(|v| !v.is_null())
    }
}

/// Which key of the projection an event updates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySpec {
    EntityId,
    EventType,
    Value(ValuePath),
}

impl KeySpec {
    /// Parses `entity_id`, `event_type`, or a [`ValuePath`].
    ///
    /// # Errors
    /// A message naming the allowed forms.
    pub fn parse(raw: &str) -> Result<Self, String> {
        match raw {
            "entity_id" => Ok(Self::EntityId),
            "event_type" => Ok(Self::EventType),
            other => ValuePath::parse(other)
                .map(Self::Value)
                .map_err(|e| format!("must be 'entity_id', 'event_type' or a path: {e}")),
        }
    }

    pub fn to_text(&self) -> String {
        match self {
            Self::EntityId => "entity_id".into(),
            Self::EventType => "event_type".into(),
            Self::Value(path) => path.to_text(),
        }
    }

    /// The key an event updates: strings as they are, numbers and booleans as their JSON text;
    /// `None` (the event is skipped) for missing, null, objects, arrays, empty or over-long keys.
    pub fn key_of(&self, event: &Event, payload: &Value) -> Option<String> {
        let key = match self {
            Self::EntityId => event.entity_id.as_str().to_owned(),
            Self::EventType => event.event_type.as_str().to_owned(),
            Self::Value(path) => match path.resolve(event, payload)? {
                Value::String(s) => s,
                v @ (Value::Number(_) | Value::Bool(_)) => v.to_string(),
                _ => return None,
            },
        };
        (!key.is_empty() && key.len() <= MAX_KEY_BYTES).then_some(key)
    }
}

/// How a field is reduced from the events of its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reducer {
    Count,
    Sum,
    Min,
    Max,
    Avg,
    First,
    Last,
    DistinctCount,
    Merge,
}

impl Reducer {
    pub const ALL: [Reducer; 9] = [
        Reducer::Count,
        Reducer::Sum,
        Reducer::Min,
        Reducer::Max,
        Reducer::Avg,
        Reducer::First,
        Reducer::Last,
        Reducer::DistinctCount,
        Reducer::Merge,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Count => "count",
            Self::Sum => "sum",
            Self::Min => "min",
            Self::Max => "max",
            Self::Avg => "avg",
            Self::First => "first",
            Self::Last => "last",
            Self::DistinctCount => "distinct_count",
            Self::Merge => "merge",
        }
    }

    /// # Errors
    /// A message listing the reducers.
    pub fn parse(raw: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|r| r.as_str() == raw)
            .ok_or_else(|| {
                format!(
                    "unknown reducer '{raw}'; use one of: {}",
                    Self::ALL.map(Reducer::as_str).join(", ")
                )
            })
    }

    /// Whether the reducer needs a `path` (those that have no sensible default).
    fn needs_path(self) -> bool {
        matches!(
            self,
            Self::Sum | Self::Min | Self::Max | Self::Avg | Self::DistinctCount
        )
    }

    /// The accumulator before any event.
    pub fn initial(self) -> Value {
        match self {
            Self::Count | Self::Sum => Value::from(0),
            Self::Min | Self::Max | Self::First | Self::Last => Value::Null,
            Self::Avg => avg_acc(Value::from(0), 0),
            Self::DistinctCount => distinct_acc(0, Vec::new(), false),
            Self::Merge => Value::Object(Map::new()),
        }
    }
}

/// One field of a projection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldSpec {
    pub reducer: Reducer,
    /// `None`: `count` counts every event; `first`, `last` and `merge` read the whole payload.
    pub path: Option<ValuePath>,
}

impl FieldSpec {
    /// Folds one event's value into the accumulator.
    pub fn apply(&self, acc: &mut Value, event: &Event, payload: &Value) {
        let whole = ValuePath::Payload(Vec::new());
        let path = self.path.as_ref().unwrap_or(&whole);
        match self.reducer {
            Reducer::Count => {
                if self.path.is_none() || path.resolve(event, payload).is_some() {
                    let n = acc.as_u64().unwrap_or(0);
                    *acc = Value::from(n.saturating_add(1));
                }
            }
            Reducer::Sum => {
                if let Some(Value::Number(n)) = path.resolve(event, payload)
                    && let Some(sum) = add(acc, &n)
                {
                    *acc = sum;
                }
            }
            Reducer::Min | Reducer::Max => {
                if let Some(Value::Number(n)) = path.resolve(event, payload) {
                    let replace = match acc.as_f64() {
                        None => true,
                        Some(current) => {
                            let new = n.as_f64().unwrap_or(current);
                            if self.reducer == Reducer::Min {
                                new < current
                            } else {
                                new > current
                            }
                        }
                    };
                    if replace {
                        *acc = Value::Number(n);
                    }
                }
            }
            Reducer::Avg => {
                if let Some(Value::Number(n)) = path.resolve(event, payload) {
                    let sum = acc.get("sum").cloned().unwrap_or(Value::from(0));
                    let count = acc.get("count").and_then(Value::as_u64).unwrap_or(0);
                    if let Some(sum) = add(&sum, &n) {
                        *acc = avg_acc(sum, count.saturating_add(1));
                    }
                }
            }
            Reducer::First => {
                if acc.is_null()
                    && let Some(v) = path.resolve(event, payload)
                {
                    *acc = v;
                }
            }
            Reducer::Last => {
                if let Some(v) = path.resolve(event, payload) {
                    *acc = v;
                }
            }
            Reducer::DistinctCount => {
                if let Some(v) = path.resolve(event, payload) {
                    apply_distinct(acc, v.to_string());
                }
            }
            Reducer::Merge => {
                if let Some(v) = path.resolve_raw(event, payload) {
                    apply_payload(acc, v);
                }
            }
        }
    }
}

fn avg_acc(sum: Value, count: u64) -> Value {
    let avg = if count == 0 {
        Value::Null
    } else {
        sum.as_f64()
            .and_then(|s| Number::from_f64(s / count as f64))
            .map_or(Value::Null, Value::Number)
    };
    let mut acc = Map::new();
    acc.insert("avg".into(), avg);
    acc.insert("count".into(), Value::from(count));
    acc.insert("sum".into(), sum);
    Value::Object(acc)
}

fn distinct_acc(count: u64, values: Vec<Value>, capped: bool) -> Value {
    let mut acc = Map::new();
    acc.insert("capped".into(), Value::Bool(capped));
    acc.insert("count".into(), Value::from(count));
    acc.insert("values".into(), Value::Array(values));
    Value::Object(acc)
}

fn apply_distinct(acc: &mut Value, text: String) {
    let well_formed = acc.get("values").is_some_and(Value::is_array)
        && acc.get("count").is_some_and(Value::is_u64)
        && acc.get("capped").is_some_and(Value::is_boolean);
    if !well_formed {
        *acc = Reducer::DistinctCount.initial();
    }
    let Some(fields) = acc.as_object_mut() else {
        return;
    };
    let mut capped = fields
        .get("capped")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let count = {
        let Some(Value::Array(values)) = fields.get_mut("values") else {
            return;
        };
        // Kept sorted, so the accumulator is the same whatever order the values came in, and
        // a value is found without scanning.
        match values.binary_search_by(|v| v.as_str().unwrap_or_default().cmp(text.as_str())) {
            Ok(_) => {}
            Err(_) if values.len() >= MAX_DISTINCT_VALUES => capped = true,
            Err(at) => values.insert(at, Value::String(text)),
        }
        values.len() as u64
    };
    fields.insert("count".into(), Value::from(count));
    fields.insert("capped".into(), Value::Bool(capped));
}

/// `a + b`, exact for integers that fit in 64 bits, else as floats; `None` when the result is
/// not a finite number (the value is then ignored).
fn add(a: &Value, b: &Number) -> Option<Value> {
    if let (Some(x), Some(y)) = (a.as_i64(), b.as_i64())
        && let Some(sum) = x.checked_add(y)
    {
        return Some(Value::from(sum));
    }
    if let (Some(x), Some(y)) = (a.as_u64(), b.as_u64())
        && let Some(sum) = x.checked_add(y)
    {
        return Some(Value::from(sum));
    }
    let sum = a.as_f64().unwrap_or(0.0) + b.as_f64()?;
    Number::from_f64(sum).map(Value::Number)
}

/// Which events a projection takes. Empty `event_types` = all types.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProjectionFilter {
    pub event_types: Vec<EventType>,
    pub entity_id_prefix: Option<String>,
}

impl ProjectionFilter {
    pub fn matches(&self, event: &Event) -> bool {
        (self.event_types.is_empty() || self.event_types.contains(&event.event_type))
            && self
                .entity_id_prefix
                .as_deref()
                .is_none_or(|p| event.entity_id.as_str().starts_with(p))
    }
}

/// A validated projection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectionDefinition {
    pub name: ProjectionName,
    pub filter: ProjectionFilter,
    pub key: KeySpec,
    pub fields: BTreeMap<String, FieldSpec>,
}

impl ProjectionDefinition {
    /// The key an event updates, if the projection takes it.
    pub fn route(&self, event: &Event, payload: &Value) -> Option<String> {
        if !self.filter.matches(event) {
            return None;
        }
        self.key.key_of(event, payload)
    }

    /// A key's state before any event: every field's initial accumulator.
    pub fn initial_state(&self) -> Value {
        Value::Object(
            self.fields
                .iter()
                .map(|(name, field)| (name.clone(), field.reducer.initial()))
                .collect(),
        )
    }

    /// Folds one event (already routed to this key) into a key's state.
    pub fn apply(&self, state: &mut Value, event: &Event, payload: &Value) {
        if !state.is_object() {
            *state = self.initial_state();
        }
        if let Value::Object(fields) = state {
            for (name, field) in &self.fields {
                let acc = fields
                    .entry(name.clone())
                    .or_insert_with(|| field.reducer.initial());
                field.apply(acc, event, payload);
            }
        }
    }

    /// The definition in its JSON shape.
    pub fn to_spec(&self) -> ProjectionSpec {
        ProjectionSpec {
            name: Some(self.name.to_string()),
            filter: Some(FilterSpec {
                event_types: Some(
                    self.filter
                        .event_types
                        .iter()
                        .map(|t| t.as_str().to_owned())
                        .collect(),
                ),
                entity_id_prefix: self.filter.entity_id_prefix.clone(),
            }),
            key: Some(self.key.to_text()),
            fields: Some(
                self.fields
                    .iter()
                    .map(|(name, f)| {
                        (
                            name.clone(),
                            FieldSpecDoc {
                                reducer: Some(f.reducer.as_str().to_owned()),
                                path: f.path.as_ref().map(ValuePath::to_text),
                            },
                        )
                    })
                    .collect(),
            ),
        }
    }
}

/// A projection definition in its JSON shape (request bodies, persisted form). Every member is
/// optional so that a missing one is reported as a field error by [`ProjectionSpec::parse`].
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectionSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<FilterSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fields: Option<BTreeMap<String, FieldSpecDoc>>,
}

/// The `filter` member.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_types: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entity_id_prefix: Option<String>,
}

/// One member of `fields`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldSpecDoc {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reducer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

impl ProjectionSpec {
    /// Validates the definition, reporting every invalid part. A spec holding only the name of
    /// a built-in registers that built-in; any other spec may not use a built-in's name.
    ///
    /// # Errors
    /// Every invalid member, named by its path in the JSON.
    pub fn parse(&self) -> Result<ProjectionDefinition, Vec<DefinitionError>> {
        let mut errors = Vec::new();
        let name = match self.name.as_deref() {
            None => {
                errors.push(DefinitionError::new("name", "is required"));
                None
            }
            Some(raw) => match ProjectionName::parse(raw) {
                Ok(name) => Some(name),
                Err(e) => {
                    errors.push(DefinitionError::new("name", e));
                    None
                }
            },
        };
        if let Some(name) = &name
            && name.is_builtin()
        {
            if self.filter.is_none() && self.key.is_none() && self.fields.is_none() {
                return builtin(name.as_str()).ok_or_else(Vec::new);
            }
            errors.push(DefinitionError::new(
                "name",
                format!(
                    "'{name}' is a built-in projection: register it with its name alone, or \
                     choose another name"
                ),
            ));
        }
        let mut filter = ProjectionFilter::default();
        if let Some(spec) = &self.filter {
            let types = spec.event_types.as_deref().unwrap_or_default();
            if types.len() > MAX_FILTER_EVENT_TYPES {
                errors.push(DefinitionError::new(
                    "filter.event_types",
                    format!("at most {MAX_FILTER_EVENT_TYPES} event types"),
                ));
            }
            for (i, raw) in types.iter().enumerate() {
                match EventType::parse(raw) {
                    Ok(t) if !filter.event_types.contains(&t) => filter.event_types.push(t),
                    Ok(_) => {}
                    Err(e) => errors.push(DefinitionError::new(
                        format!("filter.event_types[{i}]"),
                        e.0,
                    )),
                }
            }
            if let Some(prefix) = &spec.entity_id_prefix {
                if prefix.is_empty() || prefix.len() > 256 {
                    errors.push(DefinitionError::new(
                        "filter.entity_id_prefix",
                        "must be 1 to 256 bytes long (omit it to take every entity)",
                    ));
                } else {
                    filter.entity_id_prefix = Some(prefix.clone());
                }
            }
        }
        let key = match KeySpec::parse(self.key.as_deref().unwrap_or("entity_id")) {
            Ok(key) => Some(key),
            Err(e) => {
                errors.push(DefinitionError::new("key", e));
                None
            }
        };
        let mut fields = BTreeMap::new();
        match &self.fields {
            None => errors.push(DefinitionError::new("fields", "is required")),
            Some(specs) if specs.is_empty() => {
                errors.push(DefinitionError::new("fields", "needs at least one field"));
            }
            Some(specs) if specs.len() > MAX_FIELDS => errors.push(DefinitionError::new(
                "fields",
                format!("at most {MAX_FIELDS} fields"),
            )),
            Some(specs) => {
                for (name, spec) in specs {
                    let at = format!("fields.{name}");
                    if name.is_empty()
                        || name.len() > 64
                        || !name
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
                    {
                        errors.push(DefinitionError::new(
                            at.clone(),
                            "field names are 1 to 64 letters, digits, '_' or '-'",
                        ));
                    }
                    let reducer = match spec.reducer.as_deref() {
                        None => {
                            errors
                                .push(DefinitionError::new(format!("{at}.reducer"), "is required"));
                            None
                        }
                        Some(raw) => match Reducer::parse(raw) {
                            Ok(r) => Some(r),
                            Err(e) => {
                                errors.push(DefinitionError::new(format!("{at}.reducer"), e));
                                None
                            }
                        },
                    };
                    let path = match spec.path.as_deref().map(ValuePath::parse) {
                        None => None,
                        Some(Ok(path)) => Some(path),
                        Some(Err(e)) => {
                            errors.push(DefinitionError::new(format!("{at}.path"), e));
                            None
                        }
                    };
                    if let Some(reducer) = reducer {
                        if reducer.needs_path() && spec.path.is_none() {
                            errors.push(DefinitionError::new(
                                format!("{at}.path"),
                                format!("is required for the '{}' reducer", reducer.as_str()),
                            ));
                        }
                        fields.insert(name.clone(), FieldSpec { reducer, path });
                    }
                }
            }
        }
        match (name, key) {
            (Some(name), Some(key)) if errors.is_empty() => Ok(ProjectionDefinition {
                name,
                filter,
                key,
                fields,
            }),
            _ => Err(errors),
        }
    }
}

/// The built-in projection of that name, if there is one.
pub fn builtin(name: &str) -> Option<ProjectionDefinition> {
    let field = |reducer, path: Option<&str>| FieldSpec {
        reducer,
        path: path.and_then(|p| ValuePath::parse(p).ok()),
    };
    let (key, fields) = match name {
        EVENT_COUNTER => (
            KeySpec::EventType,
            BTreeMap::from([("count".to_owned(), field(Reducer::Count, None))]),
        ),
        ENTITY_SNAPSHOTS => (
            KeySpec::EntityId,
            BTreeMap::from([
                ("state".to_owned(), field(Reducer::Merge, None)),
                ("event_count".to_owned(), field(Reducer::Count, None)),
                ("version".to_owned(), field(Reducer::Last, Some("@version"))),
                (
                    "last_updated".to_owned(),
                    field(Reducer::Last, Some("@timestamp")),
                ),
            ]),
        ),
        _ => return None,
    };
    Some(ProjectionDefinition {
        name: ProjectionName(name.to_owned()),
        filter: ProjectionFilter::default(),
        key,
        fields,
    })
}

/// A key's state with the position of the last event folded into it. Stored per key, it makes
/// applying events idempotent: an event at or below `position` is already in `state`.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyedState {
    pub position: u64,
    pub state: Value,
}

impl KeyedState {
    /// A key no event has touched yet.
    pub fn new(definition: &ProjectionDefinition) -> Self {
        Self {
            position: 0,
            state: definition.initial_state(),
        }
    }

    /// Folds the event unless it is already in the state; `true` if it was folded. Events must
    /// come in position order (the log's order).
    pub fn apply(
        &mut self,
        definition: &ProjectionDefinition,
        event: &Event,
        payload: &Value,
    ) -> bool {
        if event.position.get() <= self.position {
            return false;
        }
        definition.apply(&mut self.state, event, payload);
        self.position = event.position.get();
        true
    }

    /// The stored form: `{"position": p, "state": {...}}`.
    pub fn to_json(&self) -> Value {
        let mut map = Map::new();
        map.insert("position".into(), Value::from(self.position));
        map.insert("state".into(), self.state.clone());
        Value::Object(map)
    }

    /// Reads the stored form; `None` if it is not one.
    pub fn from_json(value: &Value) -> Option<Self> {
        Some(Self {
            position: value.get("position")?.as_u64()?,
            state: value.get("state")?.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EntityState;
    use crate::event::fixtures::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn spec(value: Value) -> ProjectionSpec {
        serde_json::from_value(value).expect("spec in test")
    }

    fn def(value: Value) -> ProjectionDefinition {
        spec(value).parse().expect("valid definition in test")
    }

    fn errors(value: Value) -> Vec<String> {
        spec(value)
            .parse()
            .expect_err("invalid in test")
            .into_iter()
            .map(|e| e.field)
            .collect()
    }

    fn ev(entity: &str, ty: &str, payload: &str, version: u64, position: u64) -> Event {
        stored(proposed(entity, ty, payload), version, position)
    }

    fn fold(definition: &ProjectionDefinition, events: &[Event]) -> BTreeMap<String, KeyedState> {
        let mut keys: BTreeMap<String, KeyedState> = BTreeMap::new();
        for e in events {
            let payload: Value = serde_json::from_str(e.payload.get()).unwrap();
            if let Some(key) = definition.route(e, &payload) {
                keys.entry(key)
                    .or_insert_with(|| KeyedState::new(definition))
                    .apply(definition, e, &payload);
            }
        }
        keys
    }

    #[test]
    fn names_follow_the_rules() {
        assert!(ProjectionName::parse("orders_by-day2").is_ok());
        assert!(ProjectionName::parse("9lives").is_ok());
        assert!(ProjectionName::parse("").is_err());
        assert!(ProjectionName::parse(&"a".repeat(65)).is_err());
        assert!(ProjectionName::parse(&"a".repeat(64)).is_ok());
        assert!(ProjectionName::parse("Orders").is_err());
        assert!(ProjectionName::parse("_x").is_err());
        assert!(ProjectionName::parse("a b").is_err());
        assert!(ProjectionName::parse("a/b").is_err());
        assert!(ProjectionName::parse("a:b").is_err());
        assert!(ProjectionName::parse("event_counter").unwrap().is_builtin());
    }

    #[test]
    fn paths_parse_and_print_back() {
        for p in [
            "$",
            "$.a",
            "$.customer.id",
            "@entity_id",
            "@timestamp",
            "@version",
        ] {
            assert_eq!(ValuePath::parse(p).unwrap().to_text(), p);
        }
        for bad in [
            "", "a", "$.", "$..a", "$a", "$.a b", "$.a[0]", "@nope", "$.a.", "@",
        ] {
            assert!(ValuePath::parse(bad).is_err(), "{bad:?} should be refused");
        }
        let deep = format!("${}", ".a".repeat(17));
        assert!(ValuePath::parse(&deep).is_err());
        assert_eq!(KeySpec::parse("entity_id").unwrap(), KeySpec::EntityId);
        assert_eq!(KeySpec::parse("event_type").unwrap(), KeySpec::EventType);
        assert!(KeySpec::parse("customer").is_err());
    }

    #[test]
    fn paths_resolve_members_and_attributes() {
        let e = ev(
            "order-1",
            "order.placed",
            r#"{"c":{"id":"x","n":null},"a":3}"#,
            2,
            9,
        );
        let p: Value = serde_json::from_str(e.payload.get()).unwrap();
        let at = |s: &str| ValuePath::parse(s).unwrap().resolve(&e, &p);
        assert_eq!(at("$.c.id"), Some(json!("x")));
        assert_eq!(at("$.c.n"), None);
        assert_eq!(at("$.c.missing"), None);
        assert_eq!(at("$.a.deeper"), None);
        assert_eq!(at("$.a"), Some(json!(3)));
        assert_eq!(at("@entity_id"), Some(json!("order-1")));
        assert_eq!(at("@event_type"), Some(json!("order.placed")));
        assert_eq!(at("@version"), Some(json!(2)));
        assert_eq!(at("@position"), Some(json!(9)));
        assert!(at("@timestamp").unwrap().as_str().unwrap().ends_with('Z'));
        assert_eq!(
            ValuePath::parse("$.c.n").unwrap().resolve_raw(&e, &p),
            Some(Value::Null)
        );
    }

    #[test]
    fn keys_come_from_the_spec() {
        let e = ev(
            "o-1",
            "t",
            r#"{"k":"a","n":5,"b":true,"o":{},"s":"","z":null}"#,
            1,
            1,
        );
        let p: Value = serde_json::from_str(e.payload.get()).unwrap();
        let key = |s: &str| KeySpec::parse(s).unwrap().key_of(&e, &p);
        assert_eq!(key("entity_id").as_deref(), Some("o-1"));
        assert_eq!(key("event_type").as_deref(), Some("t"));
        assert_eq!(key("$.k").as_deref(), Some("a"));
        assert_eq!(key("$.n").as_deref(), Some("5"));
        assert_eq!(key("$.b").as_deref(), Some("true"));
        assert_eq!(key("$.o"), None);
        assert_eq!(key("$.s"), None);
        assert_eq!(key("$.z"), None);
        assert_eq!(key("$.missing"), None);
    }

    #[test]
    fn every_invalid_part_is_reported_with_its_path() {
        let fields = errors(json!({
            "name": "Bad Name",
            "filter": {"event_types": ["ok", "bad..type"], "entity_id_prefix": ""},
            "key": "customer",
            "fields": {
                "a": {"reducer": "median", "path": "$.x"},
                "b": {"reducer": "sum"},
                "c": {"path": "$.x"},
                "d": {"reducer": "max", "path": "x"},
                "bad name": {"reducer": "count"}
            }
        }));
        assert_eq!(
            fields,
            vec![
                "name",
                "filter.event_types[1]",
                "filter.entity_id_prefix",
                "key",
                "fields.a.reducer",
                "fields.b.path",
                "fields.bad name",
                "fields.c.reducer",
                "fields.d.path",
            ]
        );
        assert_eq!(errors(json!({})), vec!["name", "fields"]);
        assert_eq!(errors(json!({"name": "x", "fields": {}})), vec!["fields"]);
        let many: serde_json::Map<String, Value> = (0..=MAX_FIELDS)
            .map(|i| (format!("f{i}"), json!({"reducer": "count"})))
            .collect();
        assert_eq!(errors(json!({"name": "x", "fields": many})), vec!["fields"]);
    }

    #[test]
    fn unknown_members_are_refused_by_serde() {
        assert!(serde_json::from_value::<ProjectionSpec>(json!({"nme": "x"})).is_err());
        assert!(
            serde_json::from_value::<ProjectionSpec>(json!({"fields": {"a": {"reducr": "count"}}}))
                .is_err()
        );
    }

    #[test]
    fn builtins_register_by_name_alone() {
        let counter = spec(json!({"name": "event_counter"})).parse().unwrap();
        assert_eq!(counter, builtin(EVENT_COUNTER).unwrap());
        let snapshots = spec(json!({"name": "entity_snapshots"})).parse().unwrap();
        assert_eq!(snapshots.key, KeySpec::EntityId);
        assert_eq!(
            errors(json!({"name": "event_counter", "fields": {"a": {"reducer": "count"}}})),
            vec!["name"]
        );
        assert!(builtin("nope").is_none());
    }

    #[test]
    fn definitions_round_trip_through_their_json_shape() {
        let d = def(json!({
            "name": "rev",
            "filter": {"event_types": ["a", "b", "a"], "entity_id_prefix": "o-"},
            "key": "$.customer.id",
            "fields": {"n": {"reducer": "count"}, "s": {"reducer": "sum", "path": "$.amount"}}
        }));
        assert_eq!(d.filter.event_types.len(), 2, "duplicates are dropped");
        let back = serde_json::to_value(d.to_spec()).unwrap();
        assert_eq!(spec(back).parse().unwrap(), d);
        for name in [EVENT_COUNTER, ENTITY_SNAPSHOTS] {
            let b = builtin(name).unwrap();
            let back = serde_json::to_value(b.to_spec()).unwrap();
            // The full shape of a built-in uses its reserved name: only the name-alone form parses.
            assert!(spec(back).parse().is_err());
        }
    }

    #[test]
    fn filter_takes_types_and_prefix() {
        let d = def(
            json!({"name": "x", "filter": {"event_types": ["a"], "entity_id_prefix": "o-"},
                           "fields": {"n": {"reducer": "count"}}}),
        );
        assert!(d.filter.matches(&ev("o-1", "a", "{}", 1, 1)));
        assert!(!d.filter.matches(&ev("o-1", "b", "{}", 1, 1)));
        assert!(!d.filter.matches(&ev("x-1", "a", "{}", 1, 1)));
        assert!(ProjectionFilter::default().matches(&ev("x", "y", "{}", 1, 1)));
    }

    fn all_reducers() -> ProjectionDefinition {
        def(json!({"name": "all", "key": "$.k", "fields": {
            "count": {"reducer": "count"},
            "count_x": {"reducer": "count", "path": "$.x"},
            "sum": {"reducer": "sum", "path": "$.x"},
            "min": {"reducer": "min", "path": "$.x"},
            "max": {"reducer": "max", "path": "$.x"},
            "avg": {"reducer": "avg", "path": "$.x"},
            "first": {"reducer": "first", "path": "$.x"},
            "last": {"reducer": "last", "path": "$.x"},
            "distinct": {"reducer": "distinct_count", "path": "$.x"},
            "merge": {"reducer": "merge"},
            "merge_m": {"reducer": "merge", "path": "$.m"}
        }}))
    }

    #[test]
    fn every_reducer_folds_as_documented() {
        let d = all_reducers();
        let events = [
            ev("e", "t", r#"{"k":"a","x":5,"m":{"p":1}}"#, 1, 1),
            ev("e", "t", r#"{"k":"a","x":"str"}"#, 2, 2),
            ev("e", "t", r#"{"k":"a","x":-2.5,"m":{"q":2,"p":null}}"#, 3, 3),
            ev("e", "t", r#"{"k":"a"}"#, 4, 4),
            ev("e", "t", r#"{"k":"a","x":5}"#, 5, 5),
            ev("e", "t", r#"{"k":"b","x":1}"#, 6, 6),
            ev("e", "t", r#"{"x":1}"#, 7, 7),
        ];
        let keys = fold(&d, &events);
        assert_eq!(keys.len(), 2, "the event without a key is skipped");
        let a = &keys["a"];
        assert_eq!(a.position, 5);
        let s = &a.state;
        assert_eq!(s["count"], json!(5));
        assert_eq!(s["count_x"], json!(4));
        assert_eq!(s["sum"], json!(7.5));
        assert_eq!(s["min"], json!(-2.5));
        assert_eq!(s["max"], json!(5));
        assert_eq!(s["avg"], json!({"avg": 2.5, "sum": 7.5, "count": 3}));
        assert_eq!(s["first"], json!(5));
        assert_eq!(s["last"], json!(5));
        assert_eq!(
            s["distinct"],
            json!({"count": 3, "values": ["\"str\"", "-2.5", "5"], "capped": false})
        );
        assert_eq!(
            s["merge"],
            json!({"k": "a", "m": {"q": 2, "p": null}, "x": 5})
        );
        assert_eq!(s["merge_m"], json!({"q": 2}));
        let b = &keys["b"].state;
        assert_eq!(b["count"], json!(1));
        assert_eq!(b["sum"], json!(1));
        assert_eq!(b["avg"]["avg"], json!(1.0));
    }

    #[test]
    fn initial_accumulators() {
        let d = all_reducers();
        let s = d.initial_state();
        assert_eq!(s["count"], json!(0));
        assert_eq!(s["sum"], json!(0));
        assert_eq!(s["min"], Value::Null);
        assert_eq!(s["avg"], json!({"avg": null, "sum": 0, "count": 0}));
        assert_eq!(s["merge"], json!({}));
    }

    #[test]
    fn sums_stay_exact_for_integers_and_fall_back_to_floats() {
        let f = FieldSpec {
            reducer: Reducer::Sum,
            path: Some(ValuePath::parse("$.x").unwrap()),
        };
        let mut acc = json!(i64::MAX - 1);
        let e = ev("e", "t", r#"{"x":1}"#, 1, 1);
        f.apply(&mut acc, &e, &json!({"x": 1}));
        assert_eq!(acc, json!(i64::MAX));
        f.apply(&mut acc, &e, &json!({"x": 1}));
        assert_eq!(acc, json!(u64::try_from(i64::MAX).unwrap() + 1));
        f.apply(&mut acc, &e, &json!({"x": u64::MAX}));
        assert!(acc.is_f64());
        f.apply(&mut acc, &e, &json!({"x": 1e308}));
        f.apply(&mut acc, &e, &json!({"x": 1e308}));
        assert!(
            acc.as_f64().unwrap().is_finite(),
            "an overflowing value is ignored"
        );
    }

    #[test]
    fn distinct_count_is_bounded() {
        let f = FieldSpec {
            reducer: Reducer::DistinctCount,
            path: Some(ValuePath::parse("$.x").unwrap()),
        };
        let e = ev("e", "t", "{}", 1, 1);
        let mut acc = Reducer::DistinctCount.initial();
        for i in 0..MAX_DISTINCT_VALUES + 5 {
            f.apply(&mut acc, &e, &json!({"x": i}));
        }
        f.apply(&mut acc, &e, &json!({"x": 0}));
        assert_eq!(acc["count"], json!(MAX_DISTINCT_VALUES));
        assert_eq!(acc["capped"], json!(true));
        assert_eq!(acc["values"].as_array().unwrap().len(), MAX_DISTINCT_VALUES);
    }

    #[test]
    fn keyed_state_skips_events_already_folded() {
        let d = all_reducers();
        let e1 = ev("e", "t", r#"{"k":"a","x":1}"#, 1, 10);
        let e2 = ev("e", "t", r#"{"k":"a","x":2}"#, 2, 11);
        let p = |e: &Event| serde_json::from_str::<Value>(e.payload.get()).unwrap();
        let mut k = KeyedState::new(&d);
        assert!(k.apply(&d, &e1, &p(&e1)));
        assert!(k.apply(&d, &e2, &p(&e2)));
        let once = k.clone();
        assert!(!k.apply(&d, &e1, &p(&e1)));
        assert!(!k.apply(&d, &e2, &p(&e2)));
        assert_eq!(k, once);
        assert_eq!(k.state["sum"], json!(3));
        assert_eq!(KeyedState::from_json(&k.to_json()), Some(k));
        assert_eq!(KeyedState::from_json(&json!({"state": {}})), None);
    }

    #[test]
    fn entity_snapshots_equals_the_entity_state_fold() {
        let d = builtin(ENTITY_SNAPSHOTS).unwrap();
        let events = [
            ev("e", "t", r#"{"a":1,"b":2}"#, 1, 1),
            ev("e", "t", r#"{"a":null,"c":[1]}"#, 2, 2),
            ev("e", "t", r#"{"d":{"x":1}}"#, 3, 3),
        ];
        let keys = fold(&d, &events);
        let folded = EntityState::fold(events.iter()).unwrap();
        let s = &keys["e"].state;
        assert_eq!(s["state"], folded.state);
        assert_eq!(s["version"], json!(3));
        assert_eq!(s["event_count"], json!(folded.event_count));
        assert_eq!(
            s["last_updated"],
            json!(
                folded
                    .last_updated
                    .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
            )
        );
    }

    #[test]
    fn event_counter_counts_per_type() {
        let d = builtin(EVENT_COUNTER).unwrap();
        let keys = fold(
            &d,
            &[
                ev("a", "x", "{}", 1, 1),
                ev("b", "x", "1", 1, 2),
                ev("a", "y", "[]", 2, 3),
            ],
        );
        assert_eq!(keys["x"].state, json!({"count": 2}));
        assert_eq!(keys["y"].state, json!({"count": 1}));
    }

    fn leaf() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            (-1000i64..1000).prop_map(Value::from),
            (-1000.0f64..1000.0).prop_map(Value::from),
            "[a-c]{0,2}".prop_map(Value::from),
        ]
    }

    fn payload() -> impl Strategy<Value = Value> {
        prop_oneof![
            4 => (prop::option::of("[ab]"), leaf(), prop::collection::btree_map("[m-o]", leaf(), 0..3))
                .prop_map(|(k, x, m)| {
                    let mut o = Map::new();
                    if let Some(k) = k { o.insert("k".into(), Value::from(k)); }
                    o.insert("x".into(), x);
                    o.insert("m".into(), Value::Object(m.into_iter().collect()));
                    Value::Object(o)
                }),
            1 => leaf(),
        ]
    }

    fn events_of(payloads: &[Value]) -> Vec<Event> {
        payloads
            .iter()
            .enumerate()
            .map(|(i, p)| ev("e", "t", &p.to_string(), i as u64 + 1, i as u64 + 1))
            .collect()
    }

    proptest! {
        /// Folding one event at a time equals folding in chunks with the state written to JSON
        /// text and read back between chunks (what the runner does with the state store).
        #[test]
        fn folding_in_chunks_with_round_trips_equals_folding_one_by_one(
            payloads in prop::collection::vec(payload(), 0..30),
            chunk in 1usize..8,
        ) {
            let d = all_reducers();
            let events = events_of(&payloads);
            let whole = fold(&d, &events);
            let mut stored: BTreeMap<String, String> = BTreeMap::new();
            for part in events.chunks(chunk) {
                let mut keys: BTreeMap<String, KeyedState> = stored
                    .iter()
                    .map(|(k, v)| (k.clone(), KeyedState::from_json(&serde_json::from_str(v).unwrap()).unwrap()))
                    .collect();
                for e in part {
                    let p: Value = serde_json::from_str(e.payload.get()).unwrap();
                    if let Some(key) = d.route(e, &p) {
                        keys.entry(key).or_insert_with(|| KeyedState::new(&d)).apply(&d, e, &p);
                    }
                }
                stored = keys.into_iter().map(|(k, v)| (k, v.to_json().to_string())).collect();
            }
            let chunked: BTreeMap<String, KeyedState> = stored
                .iter()
                .map(|(k, v)| (k.clone(), KeyedState::from_json(&serde_json::from_str(v).unwrap()).unwrap()))
                .collect();
            prop_assert_eq!(chunked, whole);
        }

        /// Re-applying any prefix of already applied events (a crash before the checkpoint was
        /// written) changes nothing: no double counting.
        #[test]
        fn replaying_a_prefix_never_double_counts(
            payloads in prop::collection::vec(payload(), 1..30),
            crash_at in 0usize..30,
            replay_from in 0usize..30,
        ) {
            let d = all_reducers();
            let events = events_of(&payloads);
            let whole = fold(&d, &events);
            let crash_at = crash_at.min(events.len());
            let replay_from = replay_from.min(crash_at);
            let mut replayed = events[..crash_at].to_vec();
            replayed.extend(events[replay_from..].iter().cloned());
            prop_assert_eq!(fold(&d, &replayed), whole);
        }
    }
}
