//! Parsing a definition (every error with its field) and printing its canonical JSON.

use std::collections::BTreeSet;

use serde_json::{Map, Number, Value};

use super::{
    AggregateFn, Aggregation, Condition, Enrich, EnrichSource, FieldPath, FilterOp,
    MAX_DESCRIPTION_LEN, MAX_NAME_LEN, MAX_OPERATORS, MAX_ROUTES, MapOp, OnError, Operator, Output,
    PipelineDefinition, PipelineSpec, ReduceSpec, Route, SpecError, Transform, WindowKind,
    WindowSpec,
};
use crate::projection::ProjectionName;
use crate::subscription::{TypeFilter, TypeFilters};
use crate::values::EventType;

/// Longest duration (`size_ms`, `gap_ms`, `within_ms`, ...): 30 days.
pub const MAX_DURATION_MS: u64 = 30 * 24 * 60 * 60 * 1000;
/// Most windows a sliding window puts one record in (`size_ms / slide_ms`, rounded up).
pub const MAX_WINDOWS_PER_RECORD: u64 = 1000;
/// Most fields of a `group_by`, a dedupe's `key_fields` or a throttle's `per_key`.
pub const MAX_KEY_FIELDS: usize = 8;
/// Most aggregations of a reduce.
pub const MAX_AGGREGATIONS: usize = 16;
/// Longest aggregation name (`[A-Za-z0-9_]`).
pub const MAX_AGGREGATION_NAME_LEN: usize = 128;
/// Result members a reduce writes itself (aggregations may not use these names).
pub const WINDOW_MEMBERS: [&str; 2] = ["window_start", "window_end"];

impl SpecError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl std::fmt::Display for SpecError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

impl OnError {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Skip => "skip",
            Self::Pause => "pause",
        }
    }
}

impl WindowKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tumbling => "tumbling",
            Self::Sliding => "sliding",
            Self::Session => "session",
        }
    }
}

impl AggregateFn {
    pub const ALL: [AggregateFn; 9] = [
        AggregateFn::Count,
        AggregateFn::Sum,
        AggregateFn::Avg,
        AggregateFn::Min,
        AggregateFn::Max,
        AggregateFn::Distinct,
        AggregateFn::First,
        AggregateFn::Last,
        AggregateFn::Percentile,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Count => "count",
            Self::Sum => "sum",
            Self::Avg => "avg",
            Self::Min => "min",
            Self::Max => "max",
            Self::Distinct => "distinct",
            Self::First => "first",
            Self::Last => "last",
            Self::Percentile => "percentile",
        }
    }
}

impl Operator {
    /// The operator's `type` in a definition.
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::Filter(_) => "filter",
            Self::Map(_) => "map",
            Self::FlatMap { .. } => "flat_map",
            Self::Enrich(_) => "enrich",
            Self::Dedupe { .. } => "dedupe",
            Self::Throttle { .. } => "throttle",
            Self::Window(_) => "window",
            Self::Reduce(_) => "reduce",
            Self::Branch(_) => "branch",
        }
    }
}

const OPERATOR_TYPES: &str =
    "filter, map, flat_map, enrich, dedupe, throttle, window, reduce, branch";

impl PipelineSpec {
    /// Reads the members of a request body (or of [`PipelineDefinition::to_json`]): `id` and
    /// `enabled` are ignored (they are the use case's), any other unknown member is an error.
    ///
    /// # Errors
    /// A body that is not an object, members of the wrong JSON type, unknown members.
    pub fn from_json(body: &Value) -> Result<Self, Vec<SpecError>> {
        let Value::Object(map) = body else {
            return Err(vec![SpecError::new(
                "",
                "the definition must be a JSON object",
            )]);
        };
        let mut errors = Vec::new();
        let mut spec = Self::default();
        let text = |name: &str, errors: &mut Vec<SpecError>| match map.get(name) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => {
                errors.push(SpecError::new(name, "must be a string"));
                None
            }
        };
        spec.name = text("name", &mut errors);
        spec.description = text("description", &mut errors);
        spec.on_error = text("on_error", &mut errors);
        match map.get("source_event_types") {
            None | Some(Value::Null) => {}
            Some(Value::Array(items)) => {
                let mut types = Vec::new();
                for (i, item) in items.iter().enumerate() {
                    match item {
                        Value::String(s) => types.push(s.clone()),
                        _ => errors.push(SpecError::new(
                            format!("source_event_types[{i}]"),
                            "must be a string",
                        )),
                    }
                }
                spec.source_event_types = Some(types);
            }
            Some(_) => errors.push(SpecError::new(
                "source_event_types",
                "must be an array of event-type filters",
            )),
        }
        match map.get("operators") {
            None | Some(Value::Null) => {}
            Some(Value::Array(items)) => spec.operators = Some(items.clone()),
            Some(_) => errors.push(SpecError::new("operators", "must be an array")),
        }
        spec.output = map.get("output").filter(|v| !v.is_null()).cloned();
        for key in map.keys() {
            if !matches!(
                key.as_str(),
                "id" | "name"
                    | "description"
                    | "source_event_types"
                    | "operators"
                    | "output"
                    | "on_error"
                    | "enabled"
            ) {
                errors.push(SpecError::new(
                    key.clone(),
                    format!("unknown member '{key}'"),
                ));
            }
        }
        if errors.is_empty() {
            Ok(spec)
        } else {
            Err(errors)
        }
    }
}

/// The members of one JSON object being read, with the errors found so far.
struct Obj<'a> {
    at: String,
    map: &'a Map<String, Value>,
}

impl<'a> Obj<'a> {
    fn field(&self, name: &str) -> String {
        if self.at.is_empty() {
            name.to_owned()
        } else {
            format!("{}.{name}", self.at)
        }
    }

    /// Reports members not in `allowed`.
    fn only(&self, allowed: &[&str], errors: &mut Vec<SpecError>) {
        for key in self.map.keys() {
            if !allowed.contains(&key.as_str()) {
                errors.push(SpecError::new(
                    self.field(key),
                    format!("unknown member '{key}' (allowed: {})", allowed.join(", ")),
                ));
            }
        }
    }

    fn get(&self, name: &str) -> Option<&'a Value> {
        self.map.get(name)
    }

    fn required(&self, name: &str, errors: &mut Vec<SpecError>) -> Option<&'a Value> {
        let value = self.get(name);
        if value.is_none() {
            errors.push(SpecError::new(self.field(name), "is required"));
        }
        value
    }

    fn string(&self, name: &str, required: bool, errors: &mut Vec<SpecError>) -> Option<&'a str> {
        let value = if required {
            self.required(name, errors)?
        } else {
            self.get(name)?
        };
        let s = value.as_str();
        if s.is_none() {
            errors.push(SpecError::new(self.field(name), "must be a string"));
        }
        s
    }

    fn path(&self, name: &str, required: bool, errors: &mut Vec<SpecError>) -> Option<FieldPath> {
        let raw = self.string(name, required, errors)?;
        FieldPath::parse(raw)
            .map_err(|e| errors.push(SpecError::new(self.field(name), e)))
            .ok()
    }

    /// A payload path (not an attribute; not `$` unless `whole` is allowed).
    fn payload_path(
        &self,
        name: &str,
        whole: bool,
        errors: &mut Vec<SpecError>,
    ) -> Option<FieldPath> {
        let path = self.path(name, true, errors)?;
        check_payload_path(&path, whole)
            .map_err(|e| errors.push(SpecError::new(self.field(name), e)))
            .ok()?;
        Some(path)
    }

    fn paths(
        &self,
        name: &str,
        required: bool,
        max: usize,
        errors: &mut Vec<SpecError>,
    ) -> Option<Vec<FieldPath>> {
        let value = if required {
            self.required(name, errors)?
        } else {
            let Some(value) = self.get(name) else {
                return Some(Vec::new());
            };
            value
        };
        let Some(items) = value.as_array() else {
            errors.push(SpecError::new(
                self.field(name),
                "must be an array of field paths",
            ));
            return None;
        };
        let mut ok = true;
        if items.len() > max {
            errors.push(SpecError::new(
                self.field(name),
                format!("at most {max} fields"),
            ));
            ok = false;
        }
        let mut paths = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let at = format!("{}[{i}]", self.field(name));
            match item.as_str().map(FieldPath::parse) {
                None => {
                    errors.push(SpecError::new(at, "must be a field path string"));
                    ok = false;
                }
                Some(Err(e)) => {
                    errors.push(SpecError::new(at, e));
                    ok = false;
                }
                Some(Ok(p)) => paths.push(p),
            }
        }
        ok.then_some(paths)
    }

    /// A whole number of milliseconds in `min..=MAX_DURATION_MS`.
    fn duration(
        &self,
        name: &str,
        required: bool,
        min: u64,
        errors: &mut Vec<SpecError>,
    ) -> Option<u64> {
        let value = if required {
            self.required(name, errors)?
        } else {
            self.get(name)?
        };
        let n = value
            .as_u64()
            .filter(|n| (min..=MAX_DURATION_MS).contains(n));
        if n.is_none() {
            let lower = if min == 0 { ">= 0" } else { "> 0" };
            errors.push(SpecError::new(
                self.field(name),
                format!(
                    "must be a whole number of milliseconds, {lower} and at most \
                     {MAX_DURATION_MS} (30 days)"
                ),
            ));
        }
        n
    }

    fn refuse(&self, names: &[&str], why: &str, errors: &mut Vec<SpecError>) {
        for name in names {
            if self.map.contains_key(*name) {
                errors.push(SpecError::new(
                    self.field(name),
                    format!("is not allowed {why}"),
                ));
            }
        }
    }
}

fn check_payload_path(path: &FieldPath, whole: bool) -> Result<(), String> {
    match path {
        FieldPath::Attribute(_) => Err(
            "must be a payload path like '$.customer.tier' (event attributes cannot be written)"
                .into(),
        ),
        FieldPath::Payload(segments) if segments.is_empty() && !whole => {
            Err("must name a field inside the payload, not '$'".into())
        }
        FieldPath::Payload(_) => Ok(()),
    }
}

fn object<'a>(value: &'a Value, at: &str, errors: &mut Vec<SpecError>) -> Option<Obj<'a>> {
    match value {
        Value::Object(map) => Some(Obj {
            at: at.to_owned(),
            map,
        }),
        _ => {
            errors.push(SpecError::new(at, "must be a JSON object"));
            None
        }
    }
}

fn one_of<T: Copy>(
    obj: &Obj<'_>,
    name: &str,
    all: &[T],
    text: fn(T) -> &'static str,
    errors: &mut Vec<SpecError>,
) -> Option<T> {
    let raw = obj.string(name, true, errors)?;
    let found = all.iter().copied().find(|t| text(*t) == raw);
    if found.is_none() {
        let names: Vec<&str> = all.iter().map(|t| text(*t)).collect();
        errors.push(SpecError::new(
            obj.field(name),
            format!("unknown {name} '{raw}'; use one of: {}", names.join(", ")),
        ));
    }
    found
}

fn parse_condition(obj: &Obj<'_>, errors: &mut Vec<SpecError>) -> Option<Condition> {
    let before = errors.len();
    let field = obj.path("field", true, errors);
    let op = one_of(obj, "op", &FilterOp::ALL, FilterOp::as_str, errors);
    let value = obj.get("value").cloned();
    if let Some(op) = op {
        let at = obj.field("value");
        match (op, &value) {
            (FilterOp::Exists, None | Some(Value::Bool(_))) => {}
            (FilterOp::Exists, Some(_)) => {
                errors.push(SpecError::new(at, "must be true or false for 'exists'"));
            }
            (_, None) => errors.push(SpecError::new(
                at,
                format!("is required for '{}'", op.as_str()),
            )),
            (FilterOp::In, Some(v)) if !v.is_array() => {
                errors.push(SpecError::new(at, "must be an array for 'in'"));
            }
            (FilterOp::Gt | FilterOp::Gte | FilterOp::Lt | FilterOp::Lte, Some(v))
                if !(v.is_number() || v.is_string()) =>
            {
                errors.push(SpecError::new(
                    at,
                    format!("must be a number or a string for '{}'", op.as_str()),
                ));
            }
            _ => {}
        }
    }
    if errors.len() != before {
        return None;
    }
    Some(Condition {
        field: field?,
        op: op?,
        value,
    })
}

fn parse_output(value: &Value, at: &str, errors: &mut Vec<SpecError>) -> Option<Output> {
    let obj = object(value, at, errors)?;
    let before = errors.len();
    let kind = obj.string("type", true, errors)?;
    match kind {
        "events" => {
            obj.only(&["type", "event_type", "entity_id_field"], errors);
            let event_type = obj.string("event_type", true, errors).and_then(|raw| {
                EventType::parse(raw)
                    .map_err(|e| errors.push(SpecError::new(obj.field("event_type"), e.0)))
                    .ok()
            });
            let entity_id_field = obj.path("entity_id_field", false, errors);
            if errors.len() != before {
                return None;
            }
            Some(Output::Events {
                event_type: event_type?,
                entity_id_field,
            })
        }
        "table" => {
            obj.only(&["type"], errors);
            (errors.len() == before).then_some(Output::Table)
        }
        other => {
            errors.push(SpecError::new(
                obj.field("type"),
                format!("unknown output type '{other}'; use 'events' or 'table'"),
            ));
            None
        }
    }
}

fn parse_map(obj: &Obj<'_>, errors: &mut Vec<SpecError>) -> Option<Operator> {
    obj.only(&["type", "field", "transform", "value"], errors);
    let before = errors.len();
    let field = obj.payload_path("field", false, errors);
    let transform = one_of(obj, "transform", &Transform::ALL, Transform::as_str, errors);
    let value = obj.get("value").cloned();
    if let Some(transform) = transform {
        let at = obj.field("value");
        let name = transform.as_str();
        match transform {
            Transform::Uppercase | Transform::Lowercase | Transform::Trim | Transform::Remove => {
                if value.is_some() {
                    errors.push(SpecError::new(at, format!("is not allowed for '{name}'")));
                }
            }
            Transform::Multiply | Transform::Add => {
                if !value.as_ref().is_some_and(Value::is_number) {
                    errors.push(SpecError::new(at, format!("must be a number for '{name}'")));
                }
            }
            Transform::Set => {
                if value.is_none() {
                    errors.push(SpecError::new(at, "is required for 'set' (any JSON value)"));
                }
            }
            Transform::Rename => match value.as_ref().and_then(Value::as_str) {
                None => errors.push(SpecError::new(
                    at,
                    "must be the new payload path for 'rename' (like '$.customer.name')",
                )),
                Some(raw) => {
                    if let Err(e) =
                        FieldPath::parse(raw).and_then(|p| check_payload_path(&p, false))
                    {
                        errors.push(SpecError::new(at, e));
                    }
                }
            },
        }
    }
    if errors.len() != before {
        return None;
    }
    Some(Operator::Map(MapOp {
        field: field?,
        transform: transform?,
        value,
    }))
}

fn parse_enrich(obj: &Obj<'_>, errors: &mut Vec<SpecError>) -> Option<Operator> {
    let before = errors.len();
    let from = obj.string("from", true, errors);
    let source = match from {
        Some("entity_state") => {
            obj.only(&["type", "from", "entity_id_field", "into"], errors);
            obj.path("entity_id_field", true, errors)
                .map(|entity_id_field| EnrichSource::EntityState { entity_id_field })
        }
        Some("projection") => {
            obj.only(&["type", "from", "name", "key_field", "into"], errors);
            let name = obj.string("name", true, errors).and_then(|raw| {
                ProjectionName::parse(raw)
                    .map_err(|e| errors.push(SpecError::new(obj.field("name"), e)))
                    .ok()
            });
            let key_field = obj.path("key_field", true, errors);
            match (name, key_field) {
                (Some(name), Some(key_field)) => Some(EnrichSource::Projection {
                    name: name.as_str().to_owned(),
                    key_field,
                }),
                _ => None,
            }
        }
        Some(other) => {
            errors.push(SpecError::new(
                obj.field("from"),
                format!("unknown source '{other}'; use 'entity_state' or 'projection'"),
            ));
            None
        }
        None => None,
    };
    let into = obj.payload_path("into", false, errors);
    if errors.len() != before {
        return None;
    }
    Some(Operator::Enrich(Enrich {
        source: source?,
        into: into?,
    }))
}

fn parse_window(obj: &Obj<'_>, errors: &mut Vec<SpecError>) -> Option<Operator> {
    obj.only(
        &[
            "type",
            "kind",
            "size_ms",
            "slide_ms",
            "gap_ms",
            "allowed_lateness_ms",
            "time_field",
        ],
        errors,
    );
    let before = errors.len();
    let kind = one_of(
        obj,
        "kind",
        &[
            WindowKind::Tumbling,
            WindowKind::Sliding,
            WindowKind::Session,
        ],
        WindowKind::as_str,
        errors,
    );
    let (mut size_ms, mut slide_ms, mut gap_ms) = (0, 0, 0);
    match kind {
        Some(WindowKind::Tumbling) => {
            size_ms = obj.duration("size_ms", true, 1, errors).unwrap_or(0);
            obj.refuse(&["slide_ms", "gap_ms"], "for a tumbling window", errors);
        }
        Some(WindowKind::Sliding) => {
            size_ms = obj.duration("size_ms", true, 1, errors).unwrap_or(0);
            slide_ms = obj.duration("slide_ms", true, 1, errors).unwrap_or(0);
            obj.refuse(&["gap_ms"], "for a sliding window", errors);
            if size_ms > 0 && slide_ms > 0 {
                if slide_ms > size_ms {
                    errors.push(SpecError::new(
                        obj.field("slide_ms"),
                        "must be at most size_ms",
                    ));
                } else if size_ms.div_ceil(slide_ms) > MAX_WINDOWS_PER_RECORD {
                    errors.push(SpecError::new(
                        obj.field("slide_ms"),
                        format!(
                            "size_ms / slide_ms puts each record in more than \
                             {MAX_WINDOWS_PER_RECORD} windows: use a longer slide"
                        ),
                    ));
                }
            }
        }
        Some(WindowKind::Session) => {
            gap_ms = obj.duration("gap_ms", true, 1, errors).unwrap_or(0);
            obj.refuse(&["size_ms", "slide_ms"], "for a session window", errors);
        }
        None => {}
    }
    let allowed_lateness_ms = obj
        .duration("allowed_lateness_ms", false, 0, errors)
        .unwrap_or(0);
    let time_field = match obj.get("time_field") {
        None => Some(FieldPath::Attribute(super::Attribute::Timestamp)),
        Some(_) => obj.path("time_field", false, errors).and_then(|p| match p {
            FieldPath::Attribute(a) if a != super::Attribute::Timestamp => {
                errors.push(SpecError::new(
                    obj.field("time_field"),
                    "must be @timestamp or a payload path holding an RFC 3339 time or \
                     milliseconds since the epoch",
                ));
                None
            }
            p => Some(p),
        }),
    };
    if errors.len() != before {
        return None;
    }
    Some(Operator::Window(WindowSpec {
        kind: kind?,
        size_ms,
        slide_ms,
        gap_ms,
        allowed_lateness_ms,
        time_field: time_field?,
    }))
}

fn parse_reduce(obj: &Obj<'_>, errors: &mut Vec<SpecError>) -> Option<Operator> {
    obj.only(&["type", "group_by", "aggregations"], errors);
    let before = errors.len();
    let group_by = obj.paths("group_by", false, MAX_KEY_FIELDS, errors);
    let mut names: BTreeSet<String> = BTreeSet::new();
    if let Some(group_by) = &group_by {
        for (i, path) in group_by.iter().enumerate() {
            let at = format!("{}[{i}]", obj.field("group_by"));
            match path.result_name() {
                None => errors.push(SpecError::new(
                    at,
                    "a group_by field needs a name in the result: use an attribute or a path \
                     ending with a member (not '$' or an index)",
                )),
                Some(name) if WINDOW_MEMBERS.contains(&name) => errors.push(SpecError::new(
                    at,
                    format!("'{name}' is a name the reduce uses for the window's bounds"),
                )),
                Some(name) => {
                    if !names.insert(name.to_owned()) {
                        errors.push(SpecError::new(
                            at,
                            format!("another group_by field is also named '{name}' in the result"),
                        ));
                    }
                }
            }
        }
    }
    let mut aggregations = Vec::new();
    match obj.required("aggregations", errors) {
        None => {}
        Some(Value::Array(items)) => {
            if items.is_empty() || items.len() > MAX_AGGREGATIONS {
                errors.push(SpecError::new(
                    obj.field("aggregations"),
                    format!("needs 1 to {MAX_AGGREGATIONS} aggregations"),
                ));
            }
            for (i, item) in items.iter().enumerate() {
                let at = format!("{}[{i}]", obj.field("aggregations"));
                if let Some(a) = parse_aggregation(item, &at, &mut names, errors) {
                    aggregations.push(a);
                }
            }
        }
        Some(_) => errors.push(SpecError::new(
            obj.field("aggregations"),
            "must be an array of aggregations",
        )),
    }
    if errors.len() != before {
        return None;
    }
    Some(Operator::Reduce(ReduceSpec {
        group_by: group_by?,
        aggregations,
    }))
}

fn parse_aggregation(
    value: &Value,
    at: &str,
    names: &mut BTreeSet<String>,
    errors: &mut Vec<SpecError>,
) -> Option<Aggregation> {
    let obj = object(value, at, errors)?;
    obj.only(&["name", "fn", "field", "p"], errors);
    let before = errors.len();
    let name = obj.string("name", true, errors);
    if let Some(name) = name {
        let at = obj.field("name");
        if name.is_empty()
            || name.len() > MAX_AGGREGATION_NAME_LEN
            || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            errors.push(SpecError::new(
                at,
                format!(
                    "aggregation names are 1 to {MAX_AGGREGATION_NAME_LEN} letters, digits or '_'"
                ),
            ));
        } else if WINDOW_MEMBERS.contains(&name) {
            errors.push(SpecError::new(
                at,
                format!("'{name}' is a name the reduce uses for the window's bounds"),
            ));
        } else if !names.insert(name.to_owned()) {
            errors.push(SpecError::new(
                at,
                format!("'{name}' is already a member of the result (another aggregation or a group_by field)"),
            ));
        }
    }
    let function = one_of(&obj, "fn", &AggregateFn::ALL, AggregateFn::as_str, errors);
    let field = obj.path("field", false, errors);
    let p = match obj.get("p") {
        None => None,
        Some(v) => {
            let p = v.as_f64().filter(|p| (0.0..=100.0).contains(p));
            if p.is_none() {
                errors.push(SpecError::new(
                    obj.field("p"),
                    "must be a number from 0 to 100",
                ));
            }
            p
        }
    };
    if let Some(function) = function {
        if function != AggregateFn::Count && !obj.map.contains_key("field") {
            errors.push(SpecError::new(
                obj.field("field"),
                format!("is required for '{}'", function.as_str()),
            ));
        }
        if function == AggregateFn::Percentile {
            if !obj.map.contains_key("p") {
                errors.push(SpecError::new(
                    obj.field("p"),
                    "is required for 'percentile'",
                ));
            }
        } else if obj.map.contains_key("p") {
            errors.push(SpecError::new(
                obj.field("p"),
                "is allowed for 'percentile' only",
            ));
        }
    }
    if errors.len() != before {
        return None;
    }
    Some(Aggregation {
        name: name?.to_owned(),
        function: function?,
        field,
        p,
    })
}

fn parse_branch(obj: &Obj<'_>, errors: &mut Vec<SpecError>) -> Option<Operator> {
    obj.only(&["type", "routes"], errors);
    let before = errors.len();
    let mut routes = Vec::new();
    match obj.required("routes", errors) {
        None => {}
        Some(Value::Array(items)) => {
            if items.is_empty() || items.len() > MAX_ROUTES {
                errors.push(SpecError::new(
                    obj.field("routes"),
                    format!("needs 1 to {MAX_ROUTES} routes"),
                ));
            }
            for (i, item) in items.iter().enumerate() {
                let at = format!("{}[{i}]", obj.field("routes"));
                let Some(route) = object(item, &at, errors) else {
                    continue;
                };
                route.only(&["when", "output"], errors);
                let when = route.required("when", errors).and_then(|w| {
                    let when = object(w, &route.field("when"), errors)?;
                    when.only(&["type", "field", "op", "value"], errors);
                    if let Some(t) = when.get("type")
                        && t.as_str() != Some("filter")
                    {
                        errors.push(SpecError::new(
                            when.field("type"),
                            "a route's condition is a filter: omit 'type' or write \"filter\"",
                        ));
                    }
                    parse_condition(&when, errors)
                });
                let output = route
                    .required("output", errors)
                    .and_then(|o| parse_output(o, &route.field("output"), errors));
                if let (Some(when), Some(output)) = (when, output) {
                    routes.push(Route { when, output });
                }
            }
        }
        Some(_) => errors.push(SpecError::new(
            obj.field("routes"),
            "must be an array of routes",
        )),
    }
    (errors.len() == before).then_some(Operator::Branch(routes))
}

fn parse_operator(value: &Value, at: &str, errors: &mut Vec<SpecError>) -> Option<Operator> {
    let obj = object(value, at, errors)?;
    let kind = obj.string("type", true, errors)?;
    let before = errors.len();
    let operator = match kind {
        "filter" => {
            obj.only(&["type", "field", "op", "value"], errors);
            parse_condition(&obj, errors).map(Operator::Filter)
        }
        "map" => parse_map(&obj, errors),
        "flat_map" => {
            obj.only(&["type", "field"], errors);
            obj.payload_path("field", true, errors)
                .map(|field| Operator::FlatMap { field })
        }
        "enrich" => parse_enrich(&obj, errors),
        "dedupe" => {
            obj.only(&["type", "key_fields", "within_ms"], errors);
            let key_fields = obj.paths("key_fields", true, MAX_KEY_FIELDS, errors);
            if key_fields.as_ref().is_some_and(Vec::is_empty) {
                errors.push(SpecError::new(
                    obj.field("key_fields"),
                    "needs at least one field",
                ));
            }
            let within_ms = obj.duration("within_ms", true, 1, errors);
            match (key_fields, within_ms) {
                (Some(key_fields), Some(within_ms)) => Some(Operator::Dedupe {
                    key_fields,
                    within_ms,
                }),
                _ => None,
            }
        }
        "throttle" => {
            obj.only(&["type", "per_key", "max", "per_ms"], errors);
            let per_key = obj.paths("per_key", false, MAX_KEY_FIELDS, errors);
            let max = obj.required("max", errors).and_then(|v| {
                let max = v.as_u64().filter(|m| *m >= 1);
                if max.is_none() {
                    errors.push(SpecError::new(
                        obj.field("max"),
                        "must be a whole number >= 1",
                    ));
                }
                max
            });
            let per_ms = obj.duration("per_ms", true, 1, errors);
            match (per_key, max, per_ms) {
                (Some(per_key), Some(max), Some(per_ms)) => Some(Operator::Throttle {
                    per_key,
                    max,
                    per_ms,
                }),
                _ => None,
            }
        }
        "window" => parse_window(&obj, errors),
        "reduce" => parse_reduce(&obj, errors),
        "branch" => parse_branch(&obj, errors),
        other => {
            errors.push(SpecError::new(
                obj.field("type"),
                format!("unknown operator type '{other}'; use one of: {OPERATOR_TYPES}"),
            ));
            None
        }
    };
    if errors.len() != before {
        return None;
    }
    operator
}

/// Structure: one window at most, immediately followed by a reduce; one reduce at most; a
/// branch only last. `kinds` holds each operator's type (`None` where it did not parse).
fn check_structure(kinds: &[Option<&str>], errors: &mut Vec<SpecError>) {
    let mut window_seen = false;
    let mut reduce_seen = false;
    for (i, kind) in kinds.iter().enumerate() {
        let at = format!("operators[{i}]");
        match *kind {
            Some("window") => {
                if window_seen {
                    errors.push(SpecError::new(at.clone(), "only one window per pipeline"));
                }
                window_seen = true;
                if kinds.get(i + 1).copied().flatten() != Some("reduce") {
                    errors.push(SpecError::new(
                        at,
                        "a window must be immediately followed by a reduce",
                    ));
                }
            }
            Some("reduce") => {
                if reduce_seen {
                    errors.push(SpecError::new(at, "only one reduce per pipeline"));
                }
                reduce_seen = true;
            }
            Some("branch") if i + 1 != kinds.len() => {
                errors.push(SpecError::new(at, "a branch must be the last operator"));
            }
            _ => {}
        }
    }
}

impl PipelineDefinition {
    /// Validates a definition: every error names its field (`operators[2].op`).
    ///
    /// # Errors
    /// Every bad field at once.
    pub fn parse(spec: PipelineSpec) -> Result<Self, Vec<SpecError>> {
        let mut errors = Vec::new();
        let name = match spec.name {
            None => {
                errors.push(SpecError::new("name", "is required"));
                None
            }
            Some(name) => {
                if name.is_empty() || name.len() > MAX_NAME_LEN {
                    errors.push(SpecError::new(
                        "name",
                        format!("must be 1 to {MAX_NAME_LEN} characters long"),
                    ));
                    None
                } else if !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
                {
                    errors.push(SpecError::new(
                        "name",
                        "may only contain letters, digits, '.', '_', ':' and '-'",
                    ));
                    None
                } else {
                    Some(name)
                }
            }
        };
        if let Some(description) = &spec.description
            && description.chars().count() > MAX_DESCRIPTION_LEN
        {
            errors.push(SpecError::new(
                "description",
                format!("at most {MAX_DESCRIPTION_LEN} characters"),
            ));
        }
        let source = match &spec.source_event_types {
            None => {
                errors.push(SpecError::new(
                    "source_event_types",
                    "is required (an empty list takes every event type)",
                ));
                None
            }
            Some(types) => {
                let before = errors.len();
                if types.len() > TypeFilters::MAX {
                    errors.push(SpecError::new(
                        "source_event_types",
                        format!("at most {} filters", TypeFilters::MAX),
                    ));
                }
                for (i, raw) in types.iter().enumerate() {
                    if let Err(e) = TypeFilter::parse(raw) {
                        errors.push(SpecError::new(format!("source_event_types[{i}]"), e.0));
                    }
                }
                if errors.len() == before {
                    TypeFilters::parse(types).ok()
                } else {
                    None
                }
            }
        };
        let mut operators = Vec::new();
        let mut kinds: Vec<Option<&str>> = Vec::new();
        match &spec.operators {
            None => errors.push(SpecError::new(
                "operators",
                "is required (an empty list passes events through)",
            )),
            Some(items) => {
                if items.len() > MAX_OPERATORS {
                    errors.push(SpecError::new(
                        "operators",
                        format!("at most {MAX_OPERATORS} operators"),
                    ));
                }
                for (i, item) in items.iter().enumerate() {
                    kinds.push(item.get("type").and_then(Value::as_str));
                    if let Some(operator) =
                        parse_operator(item, &format!("operators[{i}]"), &mut errors)
                    {
                        operators.push(operator);
                    }
                }
                check_structure(&kinds, &mut errors);
            }
        }
        let ends_with_branch = kinds.last().copied().flatten() == Some("branch");
        let output = match &spec.output {
            None => {
                if !ends_with_branch {
                    errors.push(SpecError::new(
                        "output",
                        "is required (unless the last operator is a branch)",
                    ));
                }
                None
            }
            Some(value) => parse_output(value, "output", &mut errors),
        };
        let on_error = match spec.on_error.as_deref() {
            None | Some("skip") => OnError::Skip,
            Some("pause") => OnError::Pause,
            Some(other) => {
                errors.push(SpecError::new(
                    "on_error",
                    format!("unknown value '{other}'; use 'skip' or 'pause'"),
                ));
                OnError::Skip
            }
        };
        match (name, source) {
            (Some(name), Some(source)) if errors.is_empty() => Ok(Self {
                name,
                description: spec.description,
                source,
                operators,
                output,
                on_error,
            }),
            _ => Err(errors),
        }
    }

    /// The definition's canonical JSON (`name`, `description`, `source_event_types`,
    /// `operators`, `output`, `on_error`): parsing it gives the same definition.
    pub fn to_json(&self) -> Value {
        let mut body = Map::new();
        body.insert("name".into(), Value::from(self.name.as_str()));
        if let Some(description) = &self.description {
            body.insert("description".into(), Value::from(description.as_str()));
        }
        body.insert(
            "source_event_types".into(),
            Value::from(self.source.to_strings()),
        );
        body.insert(
            "operators".into(),
            Value::Array(self.operators.iter().map(operator_json).collect()),
        );
        if let Some(output) = &self.output {
            body.insert("output".into(), output_json(output));
        }
        body.insert("on_error".into(), Value::from(self.on_error.as_str()));
        Value::Object(body)
    }

    /// [`PipelineSpec::from_json`] then [`PipelineDefinition::parse`].
    ///
    /// # Errors
    /// As those two.
    pub fn from_json(body: &Value) -> Result<Self, Vec<SpecError>> {
        Self::parse(PipelineSpec::from_json(body)?)
    }
}

fn paths_json(paths: &[FieldPath]) -> Value {
    Value::Array(paths.iter().map(|p| Value::from(p.to_text())).collect())
}

fn condition_json(c: &Condition, body: &mut Map<String, Value>) {
    body.insert("field".into(), Value::from(c.field.to_text()));
    body.insert("op".into(), Value::from(c.op.as_str()));
    if let Some(value) = &c.value {
        body.insert("value".into(), value.clone());
    }
}

fn output_json(output: &Output) -> Value {
    let mut body = Map::new();
    match output {
        Output::Events {
            event_type,
            entity_id_field,
        } => {
            body.insert("type".into(), Value::from("events"));
            body.insert("event_type".into(), Value::from(event_type.as_str()));
            if let Some(field) = entity_id_field {
                body.insert("entity_id_field".into(), Value::from(field.to_text()));
            }
        }
        Output::Table => {
            body.insert("type".into(), Value::from("table"));
        }
    }
    Value::Object(body)
}

fn operator_json(operator: &Operator) -> Value {
    let mut body = Map::new();
    body.insert("type".into(), Value::from(operator.type_name()));
    match operator {
        Operator::Filter(c) => condition_json(c, &mut body),
        Operator::Map(m) => {
            body.insert("field".into(), Value::from(m.field.to_text()));
            body.insert("transform".into(), Value::from(m.transform.as_str()));
            if let Some(value) = &m.value {
                body.insert("value".into(), value.clone());
            }
        }
        Operator::FlatMap { field } => {
            body.insert("field".into(), Value::from(field.to_text()));
        }
        Operator::Enrich(e) => {
            match &e.source {
                EnrichSource::EntityState { entity_id_field } => {
                    body.insert("from".into(), Value::from("entity_state"));
                    body.insert(
                        "entity_id_field".into(),
                        Value::from(entity_id_field.to_text()),
                    );
                }
                EnrichSource::Projection { name, key_field } => {
                    body.insert("from".into(), Value::from("projection"));
                    body.insert("name".into(), Value::from(name.as_str()));
                    body.insert("key_field".into(), Value::from(key_field.to_text()));
                }
            }
            body.insert("into".into(), Value::from(e.into.to_text()));
        }
        Operator::Dedupe {
            key_fields,
            within_ms,
        } => {
            body.insert("key_fields".into(), paths_json(key_fields));
            body.insert("within_ms".into(), Value::from(*within_ms));
        }
        Operator::Throttle {
            per_key,
            max,
            per_ms,
        } => {
            body.insert("per_key".into(), paths_json(per_key));
            body.insert("max".into(), Value::from(*max));
            body.insert("per_ms".into(), Value::from(*per_ms));
        }
        Operator::Window(w) => {
            body.insert("kind".into(), Value::from(w.kind.as_str()));
            match w.kind {
                WindowKind::Tumbling => {
                    body.insert("size_ms".into(), Value::from(w.size_ms));
                }
                WindowKind::Sliding => {
                    body.insert("size_ms".into(), Value::from(w.size_ms));
                    body.insert("slide_ms".into(), Value::from(w.slide_ms));
                }
                WindowKind::Session => {
                    body.insert("gap_ms".into(), Value::from(w.gap_ms));
                }
            }
            body.insert(
                "allowed_lateness_ms".into(),
                Value::from(w.allowed_lateness_ms),
            );
            body.insert("time_field".into(), Value::from(w.time_field.to_text()));
        }
        Operator::Reduce(r) => {
            body.insert("group_by".into(), paths_json(&r.group_by));
            let aggregations = r
                .aggregations
                .iter()
                .map(|a| {
                    let mut agg = Map::new();
                    agg.insert("name".into(), Value::from(a.name.as_str()));
                    agg.insert("fn".into(), Value::from(a.function.as_str()));
                    if let Some(field) = &a.field {
                        agg.insert("field".into(), Value::from(field.to_text()));
                    }
                    if let Some(p) = a.p.and_then(Number::from_f64) {
                        agg.insert("p".into(), Value::Number(p));
                    }
                    Value::Object(agg)
                })
                .collect();
            body.insert("aggregations".into(), Value::Array(aggregations));
        }
        Operator::Branch(routes) => {
            let routes = routes
                .iter()
                .map(|r| {
                    let mut when = Map::new();
                    condition_json(&r.when, &mut when);
                    let mut route = Map::new();
                    route.insert("when".into(), Value::Object(when));
                    route.insert("output".into(), output_json(&r.output));
                    Value::Object(route)
                })
                .collect();
            body.insert("routes".into(), Value::Array(routes));
        }
    }
    Value::Object(body)
}
