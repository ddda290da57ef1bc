//! The JSON query language of `POST /api/v1/query`: a validated [`DslQuery`] and the naive
//! evaluator [`Condition::matches`] that defines what a query means.
//!
//! # The body
//! `{"select"?: [fields], "where"?: condition, "order_by"?: ..., "limit"?: n}`; any other
//! member is an error at its name, and a member set to `null` is as if it were absent.
//!
//! # Fields
//! `id`, `entity_id`, `event_type`, `timestamp`, `position`, `version` (the event's
//! attributes), `payload` (the whole payload), a payload path such as `payload.a.b`,
//! `payload.items[0].sku` or `payload.items[0]`, and `metadata` or a metadata path such as
//! `metadata.x`. A key is non-empty and may hold any character but `.`, `[` and `]`; an index
//! is a decimal number.
//!
//! # Conditions
//! A condition is a JSON array whose first element is the operator:
//! - `["and", c1, c2, ...]`, `["or", c1, ...]` (at least one operand), `["not", c]`;
//! - `["=", field, v]`, `["!=", field, v]`, `[">", field, v]`, `[">=", field, v]`,
//!   `["<", field, v]`, `["<=", field, v]`;
//! - `["in", field, [v1, v2, ...]]` (1 to [`MAX_IN_VALUES`] values);
//! - `["contains", field, "text"]`;
//! - `["exists", field]`.
//!
//! A value is a JSON string, number or bool (`null` is an error: test presence with
//! `exists`). On `timestamp` a value is a time: an RFC 3339 string, `"now"`, `{"days_ago": n}`
//! or `{"hours_ago": n}` (n ≥ 0, fractions allowed), resolved against the `now` given to
//! [`DslQuery::parse`] and truncated to microseconds. `id`, `entity_id` and `event_type` take
//! strings, `position` and `version` numbers, payload and metadata paths any of the three
//! (a string there is only a string, never a time). `>`, `>=`, `<` and `<=` take no bools, and
//! `contains` is not for `timestamp`, `position` or `version`.
//!
//! A condition has at most [`MAX_NODES`] nodes (operators, leaves included) and nests at
//! most [`MAX_DEPTH`] deep (`where` itself is depth 1).
//!
//! # Where errors are reported
//! Each error names the member of the body it is about: `where` is the condition and
//! `where[i]` the i-th element of its array (`where[0]` is the operator), so in
//! `["and", c1, ["=", f, v]]` the field `f` is `where[2][1]`, its value `where[2][2]` and the
//! j-th value of an `in` is `where[...][2][j]`. Likewise `select[i]`, `order_by`,
//! `order_by[i]`, `order_by[i].field`, `order_by[i].direction`, `limit`. Every error found is
//! reported, not only the first.
//!
//! # Meaning
//! Logic is two-valued. A field is absent when its path does not exist (a missing key, an
//! index out of range, a step into a value that is not an object or array), when there is no
//! metadata, or when the payload or metadata is not valid JSON. A JSON `null` is present.
//! - A comparison with a string holds only when the value is a JSON string (the `id`,
//!   `entity_id` and `event_type` are strings) and compares with the literal as the operator
//!   says, by byte-wise (UTF-8) order. With a number, the value must be a JSON number
//!   (`position` and `version` are numbers), compared as `f64`. With a bool, the value must be
//!   a JSON bool. With a time, the event's timestamp is compared. Any other value, absent
//!   included, makes every comparison false, `!=` included.
//! - `in` holds when `=` holds for one of its values; `contains` when the value is a JSON
//!   string holding the text (case-sensitive); `exists` when the value is present (always for
//!   the attributes and for `payload` itself).
//! - `and`, `or` and `not` are the usual operators over those leaves, so `not` of a
//!   comparison on an absent field holds.

use std::cell::OnceCell;
use std::cmp::Ordering;
use std::collections::HashMap;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Map, Value};

use crate::event::Event;

/// Rows returned when the body gives no `limit`.
pub const DEFAULT_LIMIT: usize = 100;
/// Largest `limit`.
pub const MAX_LIMIT: usize = 10_000;
/// Most nodes (operators and leaves) in a condition, in all.
pub const MAX_NODES: usize = 1000;
/// Deepest nesting of a condition (`where` itself is depth 1).
pub const MAX_DEPTH: usize = 32;
/// Most values of an `in`.
pub const MAX_IN_VALUES: usize = 1000;
/// Most fields of a `select`.
pub const MAX_SELECT_FIELDS: usize = 64;
/// Most keys of an `order_by`.
pub const MAX_ORDER_KEYS: usize = 8;

/// A validated query.
#[derive(Debug, Clone, PartialEq)]
pub struct DslQuery {
    /// `None`: whole events.
    pub select: Option<Vec<DslField>>,
    /// `None`: every event.
    pub condition: Option<Condition>,
    /// Empty: position ascending.
    pub order_by: Vec<OrderKey>,
    pub limit: usize,
}

/// One key of an `order_by`.
#[derive(Debug, Clone, PartialEq)]
pub struct OrderKey {
    pub field: DslField,
    pub descending: bool,
}

/// What a query reads from an event.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum DslField {
    Id,
    EntityId,
    EventType,
    Timestamp,
    Position,
    Version,
    /// A path into the payload (empty: the whole payload).
    Payload(Vec<PathSegment>),
    /// A path into the metadata (empty: the whole metadata).
    Metadata(Vec<PathSegment>),
}

/// One step of a payload or metadata path.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PathSegment {
    Key(String),
    Index(usize),
}

/// A value in a condition.
#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    Bool(bool),
    Number(f64),
    String(String),
    /// Only on `timestamp`; microsecond-exact when it comes from [`DslQuery::parse`].
    Time(DateTime<Utc>),
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareOp {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
}

/// A condition on an event.
#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    And(Vec<Condition>),
    Or(Vec<Condition>),
    Not(Box<Condition>),
    Compare {
        field: DslField,
        op: CompareOp,
        value: Literal,
    },
    In {
        field: DslField,
        values: Vec<Literal>,
    },
    Contains {
        field: DslField,
        value: String,
    },
    Exists {
        field: DslField,
    },
}

/// Field errors: (member path as in the body, e.g. "where[1][2]", "order_by[0].direction",
/// "limit"; message).
pub type DslErrors = Vec<(String, String)>;

const FIELD_FORMS: &str = "fields are id, entity_id, event_type, timestamp, position, version, \
                           payload, a payload path like payload.a.b or payload.items[0].sku, \
                           metadata or a metadata path like metadata.x";

const OPERATORS: &str = "and, or, not, =, !=, >, >=, <, <=, in, contains, exists";

impl DslField {
    /// Parses a field name (see the module documentation).
    ///
    /// # Errors
    /// A message naming the field and the allowed forms.
    pub fn parse(text: &str) -> Result<DslField, String> {
        let builtin = match text {
            "id" => Some(Self::Id),
            "entity_id" => Some(Self::EntityId),
            "event_type" => Some(Self::EventType),
            "timestamp" => Some(Self::Timestamp),
            "position" => Some(Self::Position),
            "version" => Some(Self::Version),
            _ => None,
        };
        if let Some(field) = builtin {
            return Ok(field);
        }
        let (make, rest): (fn(Vec<PathSegment>) -> DslField, &str) =
            if let Some(rest) = text.strip_prefix("payload") {
                (Self::Payload, rest)
            } else if let Some(rest) = text.strip_prefix("metadata") {
                (Self::Metadata, rest)
            } else {
                return Err(format!("unknown field '{text}'; {FIELD_FORMS}"));
            };
        parse_segments(rest)
            .map(make)
            .map_err(|e| format!("field '{text}': {e}"))
    }

    /// The canonical text (`DslField::parse(&f.name())` gives `f` back).
    pub fn name(&self) -> String {
        let (root, segments) = match self {
            Self::Id => return "id".into(),
            Self::EntityId => return "entity_id".into(),
            Self::EventType => return "event_type".into(),
            Self::Timestamp => return "timestamp".into(),
            Self::Position => return "position".into(),
            Self::Version => return "version".into(),
            Self::Payload(segments) => ("payload", segments),
            Self::Metadata(segments) => ("metadata", segments),
        };
        let mut text = String::from(root);
        for segment in segments {
            match segment {
                PathSegment::Key(key) => {
                    text.push('.');
                    text.push_str(key);
                }
                PathSegment::Index(i) => {
                    text.push('[');
                    text.push_str(&i.to_string());
                    text.push(']');
                }
            }
        }
        text
    }

    fn is_builtin(&self) -> bool {
        !matches!(self, Self::Payload(_) | Self::Metadata(_))
    }
}

/// The segments after `payload` or `metadata`: `.key` and `[index]`, in any order.
fn parse_segments(mut rest: &str) -> Result<Vec<PathSegment>, String> {
    let mut segments = Vec::new();
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix('.') {
            let end = after.find(['.', '[', ']']).unwrap_or(after.len());
            let (key, tail) = after.split_at(end);
            if key.is_empty() {
                return Err("a key after '.' must not be empty".into());
            }
            if tail.starts_with(']') {
                return Err(format!("']' after '{key}' closes no index"));
            }
            segments.push(PathSegment::Key(key.to_owned()));
            rest = tail;
        } else if let Some(after) = rest.strip_prefix('[') {
            let Some(end) = after.find(']') else {
                return Err("an index is written '[<number>]', as in 'payload.items[0]'".into());
            };
            let digits = &after[..end];
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(format!(
                    "'[{digits}]': an index is a non-negative decimal number, as in \
                     'payload.items[0]'"
                ));
            }
            let index = digits
                .parse::<usize>()
                .map_err(|_| format!("'[{digits}]': the index is too large"))?;
            segments.push(PathSegment::Index(index));
            rest = &after[end + 1..];
        } else {
            return Err("a path continues with '.key' or '[index]'".into());
        }
    }
    Ok(segments)
}

impl CompareOp {
    fn parse(op: &str) -> Option<Self> {
        Some(match op {
            "=" => Self::Eq,
            "!=" => Self::Ne,
            ">" => Self::Gt,
            ">=" => Self::Ge,
            "<" => Self::Lt,
            "<=" => Self::Le,
            _ => return None,
        })
    }

    /// The operator's text in a condition (`>=`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Eq => "=",
            Self::Ne => "!=",
            Self::Gt => ">",
            Self::Ge => ">=",
            Self::Lt => "<",
            Self::Le => "<=",
        }
    }

    /// Whether `a op b` holds when `a.cmp(b)` is `ordering`.
    pub fn holds(self, ordering: Ordering) -> bool {
        match self {
            Self::Eq => ordering == Ordering::Equal,
            Self::Ne => ordering != Ordering::Equal,
            Self::Gt => ordering == Ordering::Greater,
            Self::Ge => ordering != Ordering::Less,
            Self::Lt => ordering == Ordering::Less,
            Self::Le => ordering != Ordering::Greater,
        }
    }

    fn is_order(self) -> bool {
        !matches!(self, Self::Eq | Self::Ne)
    }
}

// ---------------------------------------------------------------------------------------------
// Parsing
// ---------------------------------------------------------------------------------------------

impl DslQuery {
    /// Validates a request body. `now` resolves the time helpers.
    ///
    /// # Errors
    /// Every error found, each with the member path it is about.
    pub fn parse(body: &Value, now: DateTime<Utc>) -> Result<DslQuery, DslErrors> {
        let Value::Object(map) = body else {
            return Err(vec![(
                String::new(),
                "the query must be a JSON object with select, where, order_by and limit, \
                 all optional"
                    .into(),
            )]);
        };
        let mut errors = DslErrors::new();
        for key in map.keys() {
            if !matches!(key.as_str(), "select" | "where" | "order_by" | "limit") {
                errors.push((
                    key.clone(),
                    format!("unknown member '{key}' (allowed: select, where, order_by, limit)"),
                ));
            }
        }
        let present = |name: &str| map.get(name).filter(|v| !v.is_null());
        let select = present("select").and_then(|v| parse_select(v, &mut errors));
        let condition = present("where").and_then(|v| {
            let mut parser = ConditionParser {
                now,
                nodes: 0,
                errors: &mut errors,
            };
            parser.condition(v, "where".into(), 1)
        });
        let order_by = present("order_by")
            .map(|v| parse_order_by(v, &mut errors))
            .unwrap_or_default();
        let limit = match present("limit") {
            None => DEFAULT_LIMIT,
            Some(v) => match v.as_u64().and_then(|n| usize::try_from(n).ok()) {
                Some(n) if (1..=MAX_LIMIT).contains(&n) => n,
                _ => {
                    errors.push((
                        "limit".into(),
                        format!("must be a whole number from 1 to {MAX_LIMIT}"),
                    ));
                    DEFAULT_LIMIT
                }
            },
        };
        if errors.is_empty() {
            Ok(DslQuery {
                select,
                condition,
                order_by,
                limit,
            })
        } else {
            Err(errors)
        }
    }
}

fn parse_select(value: &Value, errors: &mut DslErrors) -> Option<Vec<DslField>> {
    let Some(items) = value.as_array() else {
        errors.push(("select".into(), "must be an array of field names".into()));
        return None;
    };
    if items.is_empty() || items.len() > MAX_SELECT_FIELDS {
        errors.push((
            "select".into(),
            format!("must name 1 to {MAX_SELECT_FIELDS} fields"),
        ));
    }
    let mut fields = Vec::new();
    let mut seen: HashMap<DslField, usize> = HashMap::new();
    for (i, item) in items.iter().take(MAX_SELECT_FIELDS + 1).enumerate() {
        let at = format!("select[{i}]");
        let Some(text) = item.as_str() else {
            errors.push((at, "must be a field name (a string)".into()));
            continue;
        };
        match DslField::parse(text) {
            Err(e) => errors.push((at, e)),
            Ok(field) => {
                if let Some(first) = seen.get(&field) {
                    errors.push((
                        at,
                        format!("'{}' is already selected at select[{first}]", field.name()),
                    ));
                } else {
                    seen.insert(field.clone(), i);
                    fields.push(field);
                }
            }
        }
    }
    Some(fields)
}

fn parse_order_by(value: &Value, errors: &mut DslErrors) -> Vec<OrderKey> {
    match value {
        Value::Array(items) => {
            if items.len() > MAX_ORDER_KEYS {
                errors.push(("order_by".into(), format!("at most {MAX_ORDER_KEYS} keys")));
            }
            items
                .iter()
                .take(MAX_ORDER_KEYS + 1)
                .enumerate()
                .filter_map(|(i, item)| parse_order_key(item, &format!("order_by[{i}]"), errors))
                .collect()
        }
        _ => parse_order_key(value, "order_by", errors)
            .into_iter()
            .collect(),
    }
}

fn parse_order_key(value: &Value, at: &str, errors: &mut DslErrors) -> Option<OrderKey> {
    let field_at = |text: &str, at: String, errors: &mut DslErrors| {
        DslField::parse(text).map_err(|e| errors.push((at, e))).ok()
    };
    match value {
        Value::String(text) => Some(OrderKey {
            field: field_at(text, at.to_owned(), errors)?,
            descending: false,
        }),
        Value::Object(map) => order_key_object(map, at, errors),
        _ => {
            errors.push((
                at.to_owned(),
                "must be a field name or {\"field\": ..., \"direction\": \"asc\" | \"desc\"}"
                    .into(),
            ));
            None
        }
    }
}

fn order_key_object(
    map: &Map<String, Value>,
    at: &str,
    errors: &mut DslErrors,
) -> Option<OrderKey> {
    for key in map.keys() {
        if key != "field" && key != "direction" {
            errors.push((
                format!("{at}.{key}"),
                format!("unknown member '{key}' (allowed: field, direction)"),
            ));
        }
    }
    let field = match map.get("field") {
        None => {
            errors.push((format!("{at}.field"), "is required".into()));
            None
        }
        Some(Value::String(text)) => DslField::parse(text)
            .map_err(|e| errors.push((format!("{at}.field"), e)))
            .ok(),
        Some(_) => {
            errors.push((
                format!("{at}.field"),
                "must be a field name (a string)".into(),
            ));
            None
        }
    };
    let descending = match map.get("direction") {
        None => Some(false),
        Some(Value::String(d)) if d == "asc" => Some(false),
        Some(Value::String(d)) if d == "desc" => Some(true),
        Some(_) => {
            errors.push((
                format!("{at}.direction"),
                "must be \"asc\" or \"desc\"".into(),
            ));
            None
        }
    };
    Some(OrderKey {
        field: field?,
        descending: descending?,
    })
}

/// What kind of value a condition's operator takes, for the messages.
#[derive(Clone, Copy)]
enum Use {
    Compare(CompareOp),
    In,
}

struct ConditionParser<'e> {
    now: DateTime<Utc>,
    nodes: usize,
    errors: &'e mut DslErrors,
}

impl ConditionParser<'_> {
    fn error(&mut self, at: impl Into<String>, message: impl Into<String>) {
        self.errors.push((at.into(), message.into()));
    }

    /// The condition at `at`, nested `depth` deep (checked before anything below is read).
    fn condition(&mut self, value: &Value, at: String, depth: usize) -> Option<Condition> {
        if self.nodes >= MAX_NODES {
            if self.nodes == MAX_NODES {
                self.error(
                    at,
                    format!("a condition has at most {MAX_NODES} nodes in all"),
                );
                // Reported once: further nodes are not read.
                self.nodes += 1;
            }
            return None;
        }
        self.nodes += 1;
        if depth > MAX_DEPTH {
            self.error(at, format!("conditions nest at most {MAX_DEPTH} deep"));
            return None;
        }
        let Some(items) = value.as_array().filter(|items| !items.is_empty()) else {
            self.error(
                at,
                "must be a condition: an array whose first element is the operator, as in \
                 [\"=\", \"event_type\", \"order.placed\"]",
            );
            return None;
        };
        let Some(op) = items[0].as_str() else {
            self.error(
                format!("{at}[0]"),
                format!("the operator must be a string, one of {OPERATORS}"),
            );
            return None;
        };
        let operands = &items[1..];
        match op {
            "and" | "or" => {
                if operands.is_empty() {
                    self.error(at.clone(), format!("'{op}' needs at least one condition"));
                }
                let mut parsed = Vec::new();
                let mut ok = !operands.is_empty();
                for (i, operand) in operands.iter().enumerate() {
                    if self.nodes > MAX_NODES {
                        return None;
                    }
                    match self.condition(operand, format!("{at}[{}]", i + 1), depth + 1) {
                        Some(c) => parsed.push(c),
                        None => ok = false,
                    }
                }
                if !ok {
                    return None;
                }
                Some(if op == "and" {
                    Condition::And(parsed)
                } else {
                    Condition::Or(parsed)
                })
            }
            "not" => {
                if operands.len() != 1 {
                    self.error(at.clone(), "'not' takes exactly one condition");
                }
                let inner = self.condition(operands.first()?, format!("{at}[1]"), depth + 1);
                if operands.len() != 1 {
                    return None;
                }
                Some(Condition::Not(Box::new(inner?)))
            }
            "exists" => {
                if operands.len() != 1 {
                    self.error(
                        at.clone(),
                        "'exists' takes exactly one field: [\"exists\", field]",
                    );
                }
                let field = self.field(operands.first()?, &at);
                if operands.len() != 1 {
                    return None;
                }
                Some(Condition::Exists { field: field? })
            }
            "contains" => {
                let (field, value) = self.field_and_value(operands, &at, op)?;
                let field = field.filter(|f| {
                    let ok = !matches!(
                        f,
                        DslField::Timestamp | DslField::Position | DslField::Version
                    );
                    if !ok {
                        self.error(
                            format!("{at}[1]"),
                            format!("'contains' is for strings, not for {}", f.name()),
                        );
                    }
                    ok
                });
                let value = match value {
                    Value::String(s) => Some(s.clone()),
                    _ => {
                        self.error(format!("{at}[2]"), "the text to look for must be a string");
                        None
                    }
                };
                Some(Condition::Contains {
                    field: field?,
                    value: value?,
                })
            }
            "in" => {
                let (field, value) = self.field_and_value(operands, &at, op)?;
                let values_at = format!("{at}[2]");
                let Some(items) = value.as_array() else {
                    self.error(values_at, "must be an array of values");
                    return None;
                };
                if items.is_empty() || items.len() > MAX_IN_VALUES {
                    self.error(
                        values_at.clone(),
                        format!("'in' takes 1 to {MAX_IN_VALUES} values"),
                    );
                    return None;
                }
                let mut values = Vec::new();
                let mut ok = true;
                for (j, item) in items.iter().enumerate() {
                    match self.literal(item, field.as_ref(), Use::In, format!("{values_at}[{j}]")) {
                        Some(v) => values.push(v),
                        None => ok = false,
                    }
                }
                let field = field?;
                ok.then_some(Condition::In { field, values })
            }
            _ => {
                let Some(cmp) = CompareOp::parse(op) else {
                    self.error(
                        format!("{at}[0]"),
                        format!("unknown operator '{op}' (one of {OPERATORS})"),
                    );
                    return None;
                };
                let (field, value) = self.field_and_value(operands, &at, op)?;
                let literal =
                    self.literal(value, field.as_ref(), Use::Compare(cmp), format!("{at}[2]"));
                Some(Condition::Compare {
                    field: field?,
                    op: cmp,
                    value: literal?,
                })
            }
        }
    }

    /// The field (parsed; `None` if it is wrong) and the raw value of a three-element leaf.
    fn field_and_value<'v>(
        &mut self,
        operands: &'v [Value],
        at: &str,
        op: &str,
    ) -> Option<(Option<DslField>, &'v Value)> {
        if operands.len() != 2 {
            self.error(
                at.to_owned(),
                format!("'{op}' takes a field and a value: [\"{op}\", field, value]"),
            );
            if let Some(field) = operands.first() {
                self.field(field, at);
            }
            return None;
        }
        Some((self.field(&operands[0], at), &operands[1]))
    }

    /// The field at `{at}[1]`.
    fn field(&mut self, value: &Value, at: &str) -> Option<DslField> {
        let at = format!("{at}[1]");
        let Some(text) = value.as_str() else {
            self.error(at, "must be a field name (a string)");
            return None;
        };
        DslField::parse(text).map_err(|e| self.error(at, e)).ok()
    }

    /// A literal for `field` (`None`: the field is wrong, so only its form is checked).
    fn literal(
        &mut self,
        value: &Value,
        field: Option<&DslField>,
        usage: Use,
        at: String,
    ) -> Option<Literal> {
        let is_time = matches!(field, Some(DslField::Timestamp));
        let name = field.map(DslField::name).unwrap_or_default();
        let order_op = match usage {
            Use::Compare(op) if op.is_order() => Some(op),
            _ => None,
        };
        match value {
            Value::Null => {
                self.error(
                    at,
                    "null is not a value; to test presence use [\"exists\", field] or \
                     [\"not\", [\"exists\", field]]",
                );
                None
            }
            Value::Array(_) => {
                self.error(at, "must be a string, a number or a bool");
                None
            }
            Value::Object(map) => {
                if field.is_some() && !is_time {
                    let helper = map.keys().any(|k| k == "days_ago" || k == "hours_ago");
                    self.error(
                        at,
                        if helper {
                            format!("a time is only compared with timestamp, not {name}")
                        } else {
                            "must be a string, a number or a bool".to_owned()
                        },
                    );
                    return None;
                }
                self.time_helper(map, &at).map(Literal::Time)
            }
            Value::Bool(b) => {
                if let Some(op) = order_op {
                    self.error(
                        at,
                        format!("'{}' orders values, it takes no bool", op.as_str()),
                    );
                    return None;
                }
                match field {
                    Some(f) if f.is_builtin() => {
                        self.error(at, format!("{name} {}", expected_kind(f)));
                        None
                    }
                    _ => Some(Literal::Bool(*b)),
                }
            }
            Value::Number(n) => {
                let Some(x) = n.as_f64().filter(|x| x.is_finite()) else {
                    self.error(at, "the number is out of range");
                    return None;
                };
                match field {
                    Some(f @ (DslField::Id | DslField::EntityId | DslField::EventType)) => {
                        self.error(at, format!("{name} {}", expected_kind(f)));
                        None
                    }
                    Some(DslField::Timestamp) => {
                        self.error(
                            at,
                            format!("timestamp {}", expected_kind(&DslField::Timestamp)),
                        );
                        None
                    }
                    _ => Some(Literal::Number(x)),
                }
            }
            Value::String(s) => match field {
                Some(DslField::Timestamp) => {
                    if s == "now" {
                        return Some(Literal::Time(truncate_micros(self.now)));
                    }
                    match DateTime::parse_from_rfc3339(s) {
                        Ok(t) => Some(Literal::Time(truncate_micros(t.with_timezone(&Utc)))),
                        Err(_) => {
                            self.error(
                                at,
                                format!(
                                    "'{s}' is not a time: timestamp {}",
                                    expected_kind(&DslField::Timestamp)
                                ),
                            );
                            None
                        }
                    }
                }
                Some(f @ (DslField::Position | DslField::Version)) => {
                    self.error(at, format!("{name} {}", expected_kind(f)));
                    None
                }
                Some(DslField::Id | DslField::EntityId | DslField::EventType) if s == "now" => {
                    self.error(
                        at,
                        format!("\"now\" is a time, only compared with timestamp, not {name}"),
                    );
                    None
                }
                _ => Some(Literal::String(s.clone())),
            },
        }
    }

    /// `{"days_ago": n}` or `{"hours_ago": n}`, resolved against `now`.
    fn time_helper(&mut self, map: &Map<String, Value>, at: &str) -> Option<DateTime<Utc>> {
        const FORM: &str = "a time helper is {\"days_ago\": n} or {\"hours_ago\": n}, n a \
                            non-negative number";
        let mut members = map.iter();
        let (Some((unit, amount)), None) = (members.next(), members.next()) else {
            self.error(at.to_owned(), FORM);
            return None;
        };
        let unit_nanos: f64 = match unit.as_str() {
            "days_ago" => 86_400e9,
            "hours_ago" => 3_600e9,
            _ => {
                self.error(
                    format!("{at}.{unit}"),
                    format!("unknown member '{unit}'; {FORM}"),
                );
                return None;
            }
        };
        let Some(n) = amount.as_f64().filter(|n| *n >= 0.0 && n.is_finite()) else {
            self.error(format!("{at}.{unit}"), "must be a non-negative number");
            return None;
        };
        let resolved = time_ago(self.now, n * unit_nanos);
        if resolved.is_none() {
            self.error(format!("{at}.{unit}"), "reaches too far into the past");
        }
        resolved
    }
}

/// What a built-in field is compared with, for the messages.
fn expected_kind(field: &DslField) -> &'static str {
    match field {
        DslField::Id | DslField::EntityId | DslField::EventType => "is compared with strings",
        DslField::Position | DslField::Version => "is compared with numbers",
        DslField::Timestamp => {
            "is compared with times: an RFC 3339 string, \"now\", {\"days_ago\": n} or \
             {\"hours_ago\": n}"
        }
        DslField::Payload(_) | DslField::Metadata(_) => "is compared with strings, numbers, bools",
    }
}

/// `now` minus `nanos` nanoseconds (rounded to the nanosecond), truncated to microseconds.
fn time_ago(now: DateTime<Utc>, nanos: f64) -> Option<DateTime<Utc>> {
    // Well beyond chrono's range (±262,000 years) yet far inside i128.
    if nanos > 1e22 {
        return None;
    }
    let delta = nanos.round() as i128;
    let now_nanos =
        i128::from(now.timestamp()) * 1_000_000_000 + i128::from(now.timestamp_subsec_nanos());
    let micros = (now_nanos - delta).div_euclid(1000);
    DateTime::from_timestamp_micros(i64::try_from(micros).ok()?)
}

fn truncate_micros(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(t.timestamp_micros()).unwrap_or(t)
}

// ---------------------------------------------------------------------------------------------
// Evaluation
// ---------------------------------------------------------------------------------------------

/// The value of a field in an event, as JSON (None = absent): strings for id (UUID text,
/// hyphenated lowercase)/entity_id/event_type, numbers for position/version, an RFC 3339 string
/// (microseconds, `Z`) for timestamp, the JSON value at the path for payload/metadata.
pub fn field_value(field: &DslField, event: &Event) -> Option<Value> {
    EventView::new(event).value(field).map(|v| v.into_owned())
}

/// An event whose payload and metadata are parsed once, when first needed.
struct EventView<'e> {
    event: &'e Event,
    payload: OnceCell<Option<Value>>,
    metadata: OnceCell<Option<Value>>,
}

impl<'e> EventView<'e> {
    fn new(event: &'e Event) -> Self {
        Self {
            event,
            payload: OnceCell::new(),
            metadata: OnceCell::new(),
        }
    }

    fn value(&self, field: &DslField) -> Option<std::borrow::Cow<'_, Value>> {
        use std::borrow::Cow;
        let e = self.event;
        let owned = |v: Value| Some(Cow::Owned(v));
        match field {
            DslField::Id => owned(Value::from(e.id.to_string())),
            DslField::EntityId => owned(Value::from(e.entity_id.as_str())),
            DslField::EventType => owned(Value::from(e.event_type.as_str())),
            DslField::Timestamp => owned(Value::from(
                e.timestamp.to_rfc3339_opts(SecondsFormat::Micros, true),
            )),
            DslField::Position => owned(Value::from(e.position.get())),
            DslField::Version => owned(Value::from(e.version.get())),
            DslField::Payload(path) => {
                let root = self
                    .payload
                    .get_or_init(|| serde_json::from_str(e.payload.get()).ok());
                get_in(root.as_ref()?, path).map(Cow::Borrowed)
            }
            DslField::Metadata(path) => {
                let root = self.metadata.get_or_init(|| {
                    e.metadata
                        .as_ref()
                        .and_then(|m| serde_json::from_str(m.get()).ok())
                });
                get_in(root.as_ref()?, path).map(Cow::Borrowed)
            }
        }
    }

    fn matches(&self, condition: &Condition) -> bool {
        match condition {
            Condition::And(cs) => cs.iter().all(|c| self.matches(c)),
            Condition::Or(cs) => cs.iter().any(|c| self.matches(c)),
            Condition::Not(c) => !self.matches(c),
            Condition::Compare { field, op, value } => self.compare(field, *op, value),
            Condition::In { field, values } => {
                values.iter().any(|v| self.compare(field, CompareOp::Eq, v))
            }
            Condition::Contains { field, value } => self
                .value(field)
                .is_some_and(|v| v.as_str().is_some_and(|s| s.contains(value.as_str()))),
            Condition::Exists { field } => match field {
                DslField::Payload(path) if path.is_empty() => true,
                _ => self.value(field).is_some(),
            },
        }
    }

    fn compare(&self, field: &DslField, op: CompareOp, literal: &Literal) -> bool {
        if let Literal::Time(t) = literal {
            return matches!(field, DslField::Timestamp) && op.holds(self.event.timestamp.cmp(t));
        }
        let Some(value) = self.value(field) else {
            return false;
        };
        let ordering = match (literal, value.as_ref()) {
            (Literal::String(s), Value::String(v)) => Some(v.as_str().cmp(s.as_str())),
            (Literal::Number(n), Value::Number(v)) => v.as_f64().and_then(|v| v.partial_cmp(n)),
            (Literal::Bool(b), Value::Bool(v)) if !op.is_order() => Some(v.cmp(b)),
            _ => None,
        };
        ordering.is_some_and(|o| op.holds(o))
    }
}

fn get_in<'v>(mut at: &'v Value, path: &[PathSegment]) -> Option<&'v Value> {
    for segment in path {
        at = match segment {
            PathSegment::Key(key) => at.as_object()?.get(key)?,
            PathSegment::Index(i) => at.as_array()?.get(*i)?,
        };
    }
    Some(at)
}

impl Condition {
    /// The naive evaluator: exactly the semantics of the module documentation. Another
    /// engineer's SQL compilation must agree with it (property tests will compare them).
    ///
    /// A [`Literal::Time`] is compared with the event's timestamp and only holds on
    /// [`DslField::Timestamp`] (the parser puts times nowhere else).
    pub fn matches(&self, event: &Event) -> bool {
        EventView::new(event).matches(self)
    }
}

#[cfg(test)]
mod tests;
