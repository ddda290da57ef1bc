//! The stateless operators: records, `filter`, `map`, `flat_map`, `enrich`, routing.

use std::cmp::Ordering;

use serde_json::{Number, Value};

use super::path::{cmp_numbers, get_in, json_eq, remove_in, set_in};
use super::{
    Condition, Enrich, EnrichSource, FieldPath, FilterOp, MapOp, Operator, Output,
    PipelineDefinition, Record, SourceEvent, Transform,
};
use crate::event::Event;

impl SourceEvent {
    /// The attributes of an event.
    pub fn of(event: &Event) -> Self {
        Self {
            id: event.id.as_uuid(),
            position: event.position.get(),
            entity_id: event.entity_id.as_str().to_owned(),
            event_type: event.event_type.as_str().to_owned(),
            version: event.version.get(),
            timestamp: event.timestamp,
        }
    }

    /// The event's time in milliseconds since the epoch.
    pub fn time_ms(&self) -> i64 {
        self.timestamp.timestamp_millis()
    }
}

impl Record {
    /// The record an event starts as (its payload parsed; origin = its id).
    pub fn from_event(event: &Event) -> Self {
        Self {
            // A stored payload is valid JSON; `null` keeps this total.
            payload: serde_json::from_str(event.payload.get()).unwrap_or(Value::Null),
            source: SourceEvent::of(event),
            origin: event.id.as_uuid().to_string(),
        }
    }
}

impl FilterOp {
    pub const ALL: [FilterOp; 9] = [
        FilterOp::Eq,
        FilterOp::Ne,
        FilterOp::Gt,
        FilterOp::Gte,
        FilterOp::Lt,
        FilterOp::Lte,
        FilterOp::Contains,
        FilterOp::In,
        FilterOp::Exists,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Eq => "eq",
            Self::Ne => "ne",
            Self::Gt => "gt",
            Self::Gte => "gte",
            Self::Lt => "lt",
            Self::Lte => "lte",
            Self::Contains => "contains",
            Self::In => "in",
            Self::Exists => "exists",
        }
    }
}

impl Condition {
    pub fn matches(&self, record: &Record) -> bool {
        let found = self.field.get(record);
        let Some(expected) = &self.value else {
            return match self.op {
                FilterOp::Exists => found.is_some_and(|v| !v.is_null()),
                // Parsing requires a value for every other comparison.
                _ => false,
            };
        };
        match self.op {
            FilterOp::Eq => found.is_some_and(|v| json_eq(&v, expected)),
            FilterOp::Ne => found.is_none_or(|v| !json_eq(&v, expected)),
            FilterOp::Gt | FilterOp::Gte | FilterOp::Lt | FilterOp::Lte => {
                let Some(ordering) = found.and_then(|v| order(&v, expected)) else {
                    return false;
                };
                match self.op {
                    FilterOp::Gt => ordering == Ordering::Greater,
                    FilterOp::Gte => ordering != Ordering::Less,
                    FilterOp::Lt => ordering == Ordering::Less,
                    _ => ordering != Ordering::Greater,
                }
            }
            FilterOp::Contains => match (found, expected) {
                (Some(Value::String(s)), Value::String(part)) => s.contains(part.as_str()),
                (Some(Value::Array(items)), element) => items.iter().any(|v| json_eq(v, element)),
                _ => false,
            },
            FilterOp::In => match (found, expected) {
                (Some(v), Value::Array(items)) => items.iter().any(|item| json_eq(item, &v)),
                _ => false,
            },
            FilterOp::Exists => {
                let present = found.is_some_and(|v| !v.is_null());
                present == expected.as_bool().unwrap_or(true)
            }
        }
    }
}

/// Numbers by value, strings lexicographically (by bytes), anything else: no order.
fn order(a: &Value, b: &Value) -> Option<Ordering> {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => cmp_numbers(x, y),
        (Value::String(x), Value::String(y)) => Some(x.as_bytes().cmp(y.as_bytes())),
        _ => None,
    }
}

impl Transform {
    pub const ALL: [Transform; 8] = [
        Transform::Uppercase,
        Transform::Lowercase,
        Transform::Trim,
        Transform::Multiply,
        Transform::Add,
        Transform::Set,
        Transform::Rename,
        Transform::Remove,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Uppercase => "uppercase",
            Self::Lowercase => "lowercase",
            Self::Trim => "trim",
            Self::Multiply => "multiply",
            Self::Add => "add",
            Self::Set => "set",
            Self::Rename => "rename",
            Self::Remove => "remove",
        }
    }
}

impl MapOp {
    /// Applies the transform to the record's payload.
    ///
    /// # Errors
    /// What went wrong (`$.name is not a string`); the record is then dropped.
    pub fn apply(&self, record: &mut Record) -> Result<(), String> {
        let Some(segments) = self.field.payload_segments() else {
            return Err("map changes payload fields only".into());
        };
        let path = self.field.to_text();
        let payload = &mut record.payload;
        match self.transform {
            Transform::Uppercase | Transform::Lowercase | Transform::Trim => {
                match get_in(payload, segments) {
                    None | Some(Value::Null) => Ok(()),
                    Some(Value::String(s)) => {
                        let changed = match self.transform {
                            Transform::Uppercase => s.to_uppercase(),
                            Transform::Lowercase => s.to_lowercase(),
                            _ => s.trim().to_owned(),
                        };
                        set_in(payload, segments, Value::String(changed))
                    }
                    Some(_) => Err(format!("{path} is not a string")),
                }
            }
            Transform::Multiply | Transform::Add => {
                let Some(Value::Number(operand)) = &self.value else {
                    return Err(format!("{} needs a numeric value", self.transform.as_str()));
                };
                match get_in(payload, segments) {
                    None | Some(Value::Null) => Ok(()),
                    Some(Value::Number(n)) => {
                        let result = if self.transform == Transform::Add {
                            add_numbers(n, operand)
                        } else {
                            multiply_numbers(n, operand)
                        }
                        .ok_or_else(|| format!("{path}: the result is not a finite number"))?;
                        set_in(payload, segments, Value::Number(result))
                    }
                    Some(_) => Err(format!("{path} is not a number")),
                }
            }
            Transform::Set => set_in(payload, segments, self.value.clone().unwrap_or(Value::Null))
                .map_err(|e| format!("cannot set {path}: {e}")),
            Transform::Rename => {
                let target = self
                    .value
                    .as_ref()
                    .and_then(Value::as_str)
                    .and_then(|t| FieldPath::parse(t).ok());
                let Some(FieldPath::Payload(to)) = target else {
                    return Err("rename needs a payload path as its value".into());
                };
                match remove_in(payload, segments) {
                    None => Ok(()),
                    Some(moved) => set_in(payload, &to, moved).map_err(|e| {
                        format!(
                            "cannot rename {path} to {}: {e}",
                            FieldPath::Payload(to.clone()).to_text()
                        )
                    }),
                }
            }
            Transform::Remove => {
                remove_in(payload, segments);
                Ok(())
            }
        }
    }
}

/// `a + b`, exact for integers while the result fits 64 bits, else as floats; `None` when the
/// result is not finite.
pub(super) fn add_numbers(a: &Number, b: &Number) -> Option<Number> {
    if let (Some(x), Some(y)) = (a.as_i64(), b.as_i64())
        && let Some(sum) = x.checked_add(y)
    {
        return Some(sum.into());
    }
    if let (Some(x), Some(y)) = (a.as_u64(), b.as_u64())
        && let Some(sum) = x.checked_add(y)
    {
        return Some(sum.into());
    }
    if let (Some(x), Some(y)) = (int(a), int(b))
        && let Some(n) = int_number(x.checked_add(y)?)
    {
        return Some(n);
    }
    Number::from_f64(a.as_f64()? + b.as_f64()?)
}

fn multiply_numbers(a: &Number, b: &Number) -> Option<Number> {
    if let (Some(x), Some(y)) = (int(a), int(b))
        && let Some(n) = x.checked_mul(y).and_then(int_number)
    {
        return Some(n);
    }
    Number::from_f64(a.as_f64()? * b.as_f64()?)
}

fn int(n: &Number) -> Option<i128> {
    n.as_i64()
        .map(i128::from)
        .or_else(|| n.as_u64().map(i128::from))
}

fn int_number(n: i128) -> Option<Number> {
    i64::try_from(n)
        .map(Number::from)
        .ok()
        .or_else(|| u64::try_from(n).ok().map(Number::from))
}

/// `flat_map`: one record per element of the array at `field` (see the module docs).
///
/// # Errors
/// When the field holds something else than an array (or `null`).
pub fn flat_map(field: &FieldPath, record: Record) -> Result<Vec<Record>, String> {
    let Some(segments) = field.payload_segments() else {
        return Err("flat_map splits payload arrays only".into());
    };
    let items = match get_in(&record.payload, segments) {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(items)) => items.clone(),
        Some(_) => return Err(format!("{} is not an array", field.to_text())),
    };
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let mut payload = record.payload.clone();
        set_in(&mut payload, segments, item)?;
        out.push(Record {
            payload,
            source: record.source.clone(),
            origin: format!("{}/{i}", record.origin),
        });
    }
    Ok(out)
}

impl Enrich {
    /// The field holding the entity id or projection key.
    pub fn key_field(&self) -> &FieldPath {
        match &self.source {
            EnrichSource::EntityState { entity_id_field } => entity_id_field,
            EnrichSource::Projection { key_field, .. } => key_field,
        }
    }

    /// The entity id or projection key to look up for this record (`None`: the field is
    /// missing or not a string/number: the record gets `null`).
    pub fn lookup_key(&self, record: &Record) -> Option<String> {
        match self.key_field().get(record)? {
            Value::String(s) => Some(s),
            v @ (Value::Number(_) | Value::Bool(_)) => Some(v.to_string()),
            _ => None,
        }
    }

    /// Puts the looked-up value into the record; when that is impossible (a value on the way to
    /// `into` is not an object) the record is left as it is: see [`Enrich::try_merge`].
    pub fn merge(&self, record: &mut Record, found: Option<Value>) {
        let _ = self.try_merge(record, found);
    }

    /// Puts the looked-up value (`null` when nothing was found) at `into`, creating missing
    /// objects on the way.
    ///
    /// # Errors
    /// When a value on the way is not an object (the payload is then unchanged).
    pub fn try_merge(&self, record: &mut Record, found: Option<Value>) -> Result<(), String> {
        let Some(segments) = self.into.payload_segments() else {
            return Err("enrich writes into payload fields only".into());
        };
        let mut payload = record.payload.clone();
        set_in(&mut payload, segments, found.unwrap_or(Value::Null))
            .map_err(|e| format!("cannot set {}: {e}", self.into.to_text()))?;
        record.payload = payload;
        Ok(())
    }
}

/// The group key of these group values: their JSON texts joined with `|`, with `%` and `|`
/// escaped as `%25` and `%7C` (so the key is unambiguous).
pub fn group_key(values: &[Value]) -> String {
    values
        .iter()
        .map(|v| v.to_string().replace('%', "%25").replace('|', "%7C"))
        .collect::<Vec<_>>()
        .join("|")
}

impl PipelineDefinition {
    /// The outputs a record that came out of the last operator goes to (several for a branch
    /// whose routes overlap; none when no route takes it and there is no default output).
    pub fn route(&self, record: &Record) -> Vec<&Output> {
        if let Some(Operator::Branch(routes)) = self.operators.last() {
            let taken: Vec<&Output> = routes
                .iter()
                .filter(|r| r.when.matches(record))
                .map(|r| &r.output)
                .collect();
            if !taken.is_empty() {
                return taken;
            }
        }
        self.output.iter().collect()
    }

    /// Every output of the definition, in order (branch routes first, then the default one):
    /// an output's index here names it in derived event ids.
    pub fn outputs(&self) -> Vec<&Output> {
        let mut outputs: Vec<&Output> = match self.operators.last() {
            Some(Operator::Branch(routes)) => routes.iter().map(|r| &r.output).collect(),
            _ => Vec::new(),
        };
        outputs.extend(self.output.iter());
        outputs
    }

    /// The group key of a result for the `table` output: the reduce's group values (and the
    /// window's bounds) joined, or the record's origin without a reduce.
    pub fn table_key(&self, record: &Record) -> String {
        let has_reduce = self
            .operators
            .iter()
            .any(|o| matches!(o, Operator::Reduce(_)));
        if !has_reduce {
            return record.origin.clone();
        }
        if let Some(rest) = record.origin.strip_prefix("window/") {
            let mut parts = rest.splitn(3, '/');
            if let (Some(start), Some(end), Some(group)) =
                (parts.next(), parts.next(), parts.next())
            {
                return format!("{group}@{start}-{end}");
            }
        } else if let Some(at) = record.origin.find("/group/") {
            return record.origin[at + "/group/".len()..].to_owned();
        }
        record.origin.clone()
    }
}
