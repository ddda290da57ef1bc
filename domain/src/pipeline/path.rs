//! Field paths: parsing, printing, reading a record and writing its payload.

use std::cmp::Ordering;

use chrono::SecondsFormat;
use serde_json::{Map, Number, Value};

use super::{Attribute, FieldPath, Record, Segment};

/// Deepest path (members plus indexes).
pub const MAX_PATH_SEGMENTS: usize = 16;
/// Longest member name in a path.
pub const MAX_SEGMENT_LEN: usize = 128;

const FORMS: &str = "must be '$', a payload path like '$.customer.tier' or '$.items[0].sku', \
                     or an event attribute: @id, @entity_id, @event_type, @position, @version, \
                     @timestamp";

impl Attribute {
    pub const ALL: [Attribute; 6] = [
        Attribute::Id,
        Attribute::EntityId,
        Attribute::EventType,
        Attribute::Position,
        Attribute::Version,
        Attribute::Timestamp,
    ];

    /// The name without `@` (`entity_id`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Id => "id",
            Self::EntityId => "entity_id",
            Self::EventType => "event_type",
            Self::Position => "position",
            Self::Version => "version",
            Self::Timestamp => "timestamp",
        }
    }
}

impl FieldPath {
    /// Parses `$`, `$.a.b`, `$.a[0].b` or `@attribute`.
    ///
    /// # Errors
    /// A message naming the allowed forms.
    pub fn parse(raw: &str) -> Result<Self, String> {
        if let Some(name) = raw.strip_prefix('@') {
            return Attribute::ALL
                .into_iter()
                .find(|a| a.as_str() == name)
                .map(Self::Attribute)
                .ok_or_else(|| format!("unknown event attribute '{raw}'; {FORMS}"));
        }
        let Some(mut rest) = raw.strip_prefix('$') else {
            return Err(FORMS.into());
        };
        let mut segments = Vec::new();
        while !rest.is_empty() {
            if let Some(after) = rest.strip_prefix('.') {
                let end = after.find(['.', '[']).unwrap_or(after.len());
                let (name, tail) = after.split_at(end);
                if name.is_empty() || name.len() > MAX_SEGMENT_LEN {
                    return Err(format!(
                        "member names in a path are 1 to {MAX_SEGMENT_LEN} characters long \
                         (as in '$.customer.tier')"
                    ));
                }
                if !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
                {
                    return Err(format!(
                        "'{name}': member names in a path may only contain letters, digits, \
                         '_' and '-'"
                    ));
                }
                segments.push(Segment::Member(name.to_owned()));
                rest = tail;
            } else if let Some(after) = rest.strip_prefix('[') {
                let Some(end) = after.find(']') else {
                    return Err("an index is written '[<number>]', as in '$.items[0]'".into());
                };
                let digits = &after[..end];
                if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(format!(
                        "'[{digits}]': an index is a non-negative whole number, as in '$.items[0]'"
                    ));
                }
                let index = digits
                    .parse::<usize>()
                    .map_err(|_| format!("'[{digits}]': the index is too large"))?;
                segments.push(Segment::Index(index));
                rest = &after[end + 1..];
            } else {
                return Err(format!(
                    "after '$', a path continues with '.member' or '[index]'; {FORMS}"
                ));
            }
        }
        if segments.len() > MAX_PATH_SEGMENTS {
            return Err(format!(
                "paths are at most {MAX_PATH_SEGMENTS} members and indexes deep"
            ));
        }
        Ok(Self::Payload(segments))
    }

    /// The text form (`parse(to_text())` gives `self` back).
    pub fn to_text(&self) -> String {
        match self {
            Self::Attribute(a) => format!("@{}", a.as_str()),
            Self::Payload(segments) => {
                let mut text = String::from("$");
                for segment in segments {
                    match segment {
                        Segment::Member(name) => {
                            text.push('.');
                            text.push_str(name);
                        }
                        Segment::Index(i) => text.push_str(&format!("[{i}]")),
                    }
                }
                text
            }
        }
    }

    /// The value at this path (`None`: missing; JSON `null` is `Some(Null)`).
    pub fn get(&self, record: &Record) -> Option<Value> {
        match self {
            Self::Payload(segments) => get_in(&record.payload, segments).cloned(),
            Self::Attribute(a) => {
                let s = &record.source;
                Some(match a {
                    Attribute::Id => Value::from(s.id.to_string()),
                    Attribute::EntityId => Value::from(s.entity_id.as_str()),
                    Attribute::EventType => Value::from(s.event_type.as_str()),
                    Attribute::Position => Value::from(s.position),
                    Attribute::Version => Value::from(s.version),
                    Attribute::Timestamp => {
                        Value::from(s.timestamp.to_rfc3339_opts(SecondsFormat::Micros, true))
                    }
                })
            }
        }
    }

    /// The value at this path unless it is missing or `null`.
    pub fn get_present(&self, record: &Record) -> Option<Value> {
        self.get(record).filter(|v| !v.is_null())
    }

    /// The payload segments, `None` for an attribute.
    pub fn payload_segments(&self) -> Option<&[Segment]> {
        match self {
            Self::Payload(segments) => Some(segments),
            Self::Attribute(_) => None,
        }
    }

    /// The member name a `group_by` field gets in a result: the last member of a payload path
    /// (`$.customer.id` → `id`), the attribute's name (`@entity_id` → `entity_id`); `None` for
    /// `$` and paths ending with an index.
    pub fn result_name(&self) -> Option<&str> {
        match self {
            Self::Attribute(a) => Some(a.as_str()),
            Self::Payload(segments) => match segments.last() {
                Some(Segment::Member(name)) => Some(name),
                _ => None,
            },
        }
    }
}

pub(super) fn get_in<'v>(mut at: &'v Value, segments: &[Segment]) -> Option<&'v Value> {
    for segment in segments {
        at = match segment {
            Segment::Member(name) => at.as_object()?.get(name)?,
            Segment::Index(i) => at.as_array()?.get(*i)?,
        };
    }
    Some(at)
}

/// The text of a path prefix, for messages.
fn prefix_text(segments: &[Segment]) -> String {
    FieldPath::Payload(segments.to_vec()).to_text()
}

/// Puts `value` at `segments`, creating missing objects on the way (a missing member the next
/// segment indexes is an error; an index may name an existing element or the one just past
/// the end, which appends).
pub(super) fn set_in(root: &mut Value, segments: &[Segment], value: Value) -> Result<(), String> {
    let Some((last, parents)) = segments.split_last() else {
        *root = value;
        return Ok(());
    };
    let mut at = root;
    for (depth, segment) in parents.iter().enumerate() {
        let next_is_member = matches!(segments.get(depth + 1), Some(Segment::Member(_)));
        at = match segment {
            Segment::Member(name) => {
                let Value::Object(map) = at else {
                    return Err(format!(
                        "{} is not an object",
                        prefix_text(&segments[..depth])
                    ));
                };
                if !map.contains_key(name) {
                    if !next_is_member {
                        return Err(format!(
                            "{} is missing: there is no array to index",
                            prefix_text(&segments[..=depth])
                        ));
                    }
                    map.insert(name.clone(), Value::Object(Map::new()));
                }
                map.get_mut(name)
                    .ok_or_else(|| "the member vanished".to_owned())?
            }
            Segment::Index(i) => {
                let Value::Array(items) = at else {
                    return Err(format!(
                        "{} is not an array",
                        prefix_text(&segments[..depth])
                    ));
                };
                let len = items.len();
                items.get_mut(*i).ok_or_else(|| {
                    format!(
                        "{} is out of range (the array has {len} elements)",
                        prefix_text(&segments[..=depth])
                    )
                })?
            }
        };
    }
    let depth = parents.len();
    match last {
        Segment::Member(name) => {
            let Value::Object(map) = at else {
                return Err(format!("{} is not an object", prefix_text(parents)));
            };
            map.insert(name.clone(), value);
        }
        Segment::Index(i) => {
            let Value::Array(items) = at else {
                return Err(format!("{} is not an array", prefix_text(parents)));
            };
            if let Some(slot) = items.get_mut(*i) {
                *slot = value;
            } else if *i == items.len() {
                items.push(value);
            } else {
                return Err(format!(
                    "{} is out of range (the array has {} elements)",
                    prefix_text(&segments[..=depth]),
                    items.len()
                ));
            }
        }
    }
    Ok(())
}

/// Removes and returns the value at `segments` (`None`: it was missing; `$` cannot be removed).
pub(super) fn remove_in(root: &mut Value, segments: &[Segment]) -> Option<Value> {
    let (last, parents) = segments.split_last()?;
    let mut at = root;
    for segment in parents {
        at = match segment {
            Segment::Member(name) => at.as_object_mut()?.get_mut(name)?,
            Segment::Index(i) => at.as_array_mut()?.get_mut(*i)?,
        };
    }
    match last {
        Segment::Member(name) => at.as_object_mut()?.remove(name),
        Segment::Index(i) => {
            let items = at.as_array_mut()?;
            (*i < items.len()).then(|| items.remove(*i))
        }
    }
}

/// Compares two numbers by value: exactly when both are integers, as floats otherwise.
pub(super) fn cmp_numbers(a: &Number, b: &Number) -> Option<Ordering> {
    let int = |n: &Number| {
        n.as_i64()
            .map(i128::from)
            .or_else(|| n.as_u64().map(i128::from))
    };
    match (int(a), int(b)) {
        (Some(x), Some(y)) => Some(x.cmp(&y)),
        _ => a.as_f64()?.partial_cmp(&b.as_f64()?),
    }
}

/// JSON equality where numbers compare by value (`1 == 1.0`), at any depth.
pub(super) fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => cmp_numbers(x, y) == Some(Ordering::Equal),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| json_eq(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w)))
        }
        _ => a == b,
    }
}
