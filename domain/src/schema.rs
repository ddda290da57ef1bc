//! The schema registry's pure rules: subject names, compatibility modes, and the compatibility
//! checker between two JSON Schemas (draft 2020-12).
//!
//! # The checker
//! [`covers`]`(wide, narrow)` proves that every document `narrow` accepts is accepted by `wide`
//! too, on a documented subset of JSON Schema, and reports what it cannot prove. It is
//! **conservative**: it never calls a pair compatible unless the subset rules prove it, so a
//! pair it cannot decide is reported as incompatible with a message naming the keyword.
//!
//! - BACKWARD (the new schema reads every old event): `covers(new, old)`.
//! - FORWARD (the old schema reads every new event): `covers(old, new)`.
//! - FULL: both. NONE: nothing checked.
//!
//! Rules, applied at each schema location (`narrow` = N, `wide` = W):
//! - Equal (sub)schemas are compatible. `true`/`{}` in W accepts everything; `false` in N
//!   accepts nothing. `false` in W, or an unconstrained N against a constraining W, fails.
//! - Annotations never matter: `title`, `description`, `$comment`, `examples`, `default`,
//!   `deprecated`, `readOnly`, `writeOnly`, `$schema`, `$id`, `$anchor`, `$defs`, `format`
//!   (an annotation in 2020-12 unless format assertion is turned on, which this server does not),
//!   `contentMediaType`, `contentEncoding`, `contentSchema`.
//! - `type`: N's types must be among W's (`integer` is within `number`). Without `type`, N's
//!   types are those of its `enum`/`const` values, else every type.
//! - `enum`/`const`: when W has them, N must have them too and every N value must be a W value.
//! - Numbers (when N admits numbers): W's `minimum`/`exclusiveMinimum` must not be above N's,
//!   W's `maximum`/`exclusiveMaximum` not below N's; a bound W has and N lacks fails.
//! - Strings: `minLength`/`maxLength` likewise; `pattern` in W must be equal in N.
//! - Arrays: `minItems`/`maxItems`, `uniqueItems` (W `true` needs N `true`), `prefixItems` and
//!   `items` position by position, recursively.
//! - Objects: every name W `required` must be required by N; each property named in either's
//!   `properties` is checked recursively against the other's schema for that name (its
//!   `properties` entry, else its `additionalProperties`, else anything); the remaining names
//!   compare the two `additionalProperties`; `minProperties`/`maxProperties` like lengths.
//!   **One deliberate assumption**: a property W names that N neither names nor constrains (N
//!   has no `additionalProperties`, or `true`) is taken to be unused by N's documents, so W may
//!   give it any schema. Strictly, `{"note": 5}` passes an open N and may fail W's
//!   `"note": {"type": "string"}`; without the assumption, adding an optional property would
//!   never be backward compatible, which is the evolution schemas exist to allow. An N whose
//!   `additionalProperties` is a schema is checked strictly.
//! - Other keywords (`allOf`, `anyOf`, `oneOf`, `not`, `if`/`then`/`else`, `multipleOf`,
//!   `dependentRequired`, `dependentSchemas`, `propertyNames`, `contains`, `minContains`,
//!   `maxContains`): each only narrows the schema holding it, so in N alone it is ignored (N
//!   only gets smaller), and in W it passes only when N has the same value.
//! - `$ref`/`$dynamicRef` in W, and `patternProperties`/`unevaluatedProperties`/
//!   `unevaluatedItems` in W or N (they change what sibling keywords mean), are not decided:
//!   reported as incompatible unless the two (sub)schemas are equal. (`$ref` in N alone is
//!   ignored: it only narrows N.)

use std::fmt;

use serde_json::{Map, Value};

use crate::values::{EventType, InvalidValue};

/// A subject: the name schemas are registered under. By default the event type, and it obeys
/// the same rules (events of type `T` are checked against subject `T`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Subject(EventType);

impl Subject {
    /// # Errors
    /// The rules of event types: 1–128 characters of `[A-Za-z0-9._-]`, no leading or trailing
    /// `.`, no `..`.
    pub fn parse(raw: &str) -> Result<Self, InvalidValue> {
        EventType::parse(raw).map(Self)
    }

    /// The subject events of this type are checked against.
    pub fn of(event_type: &EventType) -> Self {
        Self(event_type.clone())
    }

    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A schema version of a subject: 1, 2, ...
pub type SchemaVersion = u32;

/// How a new version of a subject must relate to its previous versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum CompatibilityMode {
    /// No check.
    None,
    /// The new schema accepts every document the previous ones accepted (the default: readers
    /// that use the newest schema can read every stored event).
    #[default]
    Backward,
    /// The previous schemas accept every document the new one accepts.
    Forward,
    /// Both.
    Full,
}

impl CompatibilityMode {
    /// `NONE`, `BACKWARD`, `FORWARD` or `FULL` (case-insensitive).
    ///
    /// # Errors
    /// Any other word.
    pub fn parse(raw: &str) -> Result<Self, InvalidValue> {
        match raw.to_ascii_uppercase().as_str() {
            "NONE" => Ok(Self::None),
            "BACKWARD" => Ok(Self::Backward),
            "FORWARD" => Ok(Self::Forward),
            "FULL" => Ok(Self::Full),
            _ => Err(InvalidValue(
                "must be one of NONE, BACKWARD, FORWARD, FULL".into(),
            )),
        }
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::None => "NONE",
            Self::Backward => "BACKWARD",
            Self::Forward => "FORWARD",
            Self::Full => "FULL",
        }
    }
}

impl fmt::Display for CompatibilityMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One reason two schemas are not (provably) compatible. `path` is a JSON pointer into the
/// schema (`/properties/amount/type`); empty for the root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incompatibility {
    pub path: String,
    pub message: String,
}

/// Why `new` cannot follow `previous` under `mode` (empty = compatible).
pub fn check_compatibility(
    mode: CompatibilityMode,
    previous: &Value,
    new: &Value,
) -> Vec<Incompatibility> {
    let mut out = Vec::new();
    if matches!(mode, CompatibilityMode::Backward | CompatibilityMode::Full) {
        for mut i in covers(new, previous) {
            i.message = format!("backward: {}", i.message);
            out.push(i);
        }
    }
    if matches!(mode, CompatibilityMode::Forward | CompatibilityMode::Full) {
        for mut i in covers(previous, new) {
            i.message = format!("forward: {}", i.message);
            out.push(i);
        }
    }
    out
}

/// What keeps `wide` from provably accepting every document `narrow` accepts (empty = it does).
/// See the module docs for the rules.
pub fn covers(wide: &Value, narrow: &Value) -> Vec<Incompatibility> {
    let mut checker = Checker { out: Vec::new() };
    if narrow != wide {
        checker.references(narrow, wide);
    }
    checker.subset(narrow, wide, "");
    checker.out
}

/// Every `$ref`/`$dynamicRef`/`$recursiveRef` target in a schema.
fn references(schema: &Value, found: &mut Vec<String>) {
    match schema {
        Value::Object(map) => {
            for (key, value) in map {
                if UNDECIDED_WIDE.contains(&key.as_str()) {
                    found.push(value.as_str().unwrap_or_default().to_owned());
                } else {
                    references(value, found);
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| references(v, found)),
        _ => {}
    }
}

fn definitions(schema: &Value) -> (Option<&Value>, Option<&Value>) {
    (schema.get("$defs"), schema.get("definitions"))
}

const ANNOTATIONS: &[&str] = &[
    "title",
    "description",
    "$comment",
    "examples",
    "default",
    "deprecated",
    "readOnly",
    "writeOnly",
    "$schema",
    "$id",
    "$anchor",
    "$defs",
    "definitions",
    "$vocabulary",
    "format",
    "contentMediaType",
    "contentEncoding",
    "contentSchema",
];

/// Keywords the checker reasons about.
const UNDERSTOOD: &[&str] = &[
    "type",
    "enum",
    "const",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "pattern",
    "minItems",
    "maxItems",
    "uniqueItems",
    "items",
    "prefixItems",
    "required",
    "properties",
    "additionalProperties",
    "minProperties",
    "maxProperties",
];

/// Keywords that only ever narrow the schema holding them, independently of their siblings.
const NARROWING: &[&str] = &[
    "allOf",
    "anyOf",
    "oneOf",
    "not",
    "if",
    "then",
    "else",
    "multipleOf",
    "dependentRequired",
    "dependentSchemas",
    "propertyNames",
    "contains",
    "minContains",
    "maxContains",
];

/// Keywords that change what their siblings mean: not decided unless the schemas are equal.
const UNDECIDED_EITHER: &[&str] = &[
    "patternProperties",
    "unevaluatedProperties",
    "unevaluatedItems",
];

/// Keywords not decided in the wide schema (in the narrow one they only narrow it).
const UNDECIDED_WIDE: &[&str] = &["$ref", "$dynamicRef", "$recursiveRef"];

const ALL_TYPES: &[&str] = &[
    "null", "boolean", "object", "array", "number", "integer", "string",
];

struct Checker {
    out: Vec<Incompatibility>,
}

/// A schema location seen as an object; `true` is `{}`, `false` is `None`.
enum Shape<'a> {
    Nothing,
    Object(&'a Map<String, Value>),
    Anything,
}

fn shape(schema: &Value) -> Option<Shape<'_>> {
    match schema {
        Value::Bool(false) => Some(Shape::Nothing),
        Value::Bool(true) => Some(Shape::Anything),
        Value::Object(map) if map.keys().all(|k| ANNOTATIONS.contains(&k.as_str())) => {
            Some(Shape::Anything)
        }
        Value::Object(map) => Some(Shape::Object(map)),
        _ => None,
    }
}

static EMPTY: std::sync::LazyLock<Map<String, Value>> = std::sync::LazyLock::new(Map::new);

fn pointer_escape(segment: &str) -> String {
    segment.replace('~', "~0").replace('/', "~1")
}

/// A numeric bound: value and whether it is exclusive.
#[derive(Debug, Clone, Copy)]
struct Bound {
    value: f64,
    exclusive: bool,
}

fn lower_bound(schema: &Map<String, Value>) -> Option<Bound> {
    let inclusive = schema.get("minimum").and_then(Value::as_f64);
    let exclusive = schema.get("exclusiveMinimum").and_then(Value::as_f64);
    match (inclusive, exclusive) {
        (None, None) => None,
        (Some(v), None) => Some(Bound {
            value: v,
            exclusive: false,
        }),
        (None, Some(v)) => Some(Bound {
            value: v,
            exclusive: true,
        }),
        // The tighter of the two; on a tie the exclusive one.
        (Some(i), Some(e)) => Some(if e >= i {
            Bound {
                value: e,
                exclusive: true,
            }
        } else {
            Bound {
                value: i,
                exclusive: false,
            }
        }),
    }
}

fn upper_bound(schema: &Map<String, Value>) -> Option<Bound> {
    let inclusive = schema.get("maximum").and_then(Value::as_f64);
    let exclusive = schema.get("exclusiveMaximum").and_then(Value::as_f64);
    match (inclusive, exclusive) {
        (None, None) => None,
        (Some(v), None) => Some(Bound {
            value: v,
            exclusive: false,
        }),
        (None, Some(v)) => Some(Bound {
            value: v,
            exclusive: true,
        }),
        (Some(i), Some(e)) => Some(if e <= i {
            Bound {
                value: e,
                exclusive: true,
            }
        } else {
            Bound {
                value: i,
                exclusive: false,
            }
        }),
    }
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Object(_) => "object",
        Value::Array(_) => "array",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(n) if n.as_f64().is_some_and(|f| f.fract() == 0.0) => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
    }
}

/// The enum of a schema (`const` is a one-value enum).
fn enum_values(schema: &Map<String, Value>) -> Option<Vec<&Value>> {
    match (schema.get("const"), schema.get("enum")) {
        (Some(c), _) => Some(vec![c]),
        (None, Some(Value::Array(values))) => Some(values.iter().collect()),
        _ => None,
    }
}

/// The types a schema admits (before other keywords narrow it further).
fn types(schema: &Map<String, Value>) -> Vec<&'static str> {
    let declared: Option<Vec<&'static str>> = match schema.get("type") {
        Some(Value::String(t)) => ALL_TYPES.iter().find(|a| **a == t).map(|a| vec![*a]),
        Some(Value::Array(ts)) => Some(
            ts.iter()
                .filter_map(Value::as_str)
                .filter_map(|t| ALL_TYPES.iter().find(|a| **a == t).copied())
                .collect(),
        ),
        _ => None,
    };
    if let Some(declared) = declared {
        return declared;
    }
    if let Some(values) = enum_values(schema) {
        let mut found: Vec<&'static str> = values.iter().map(|v| json_type(v)).collect();
        found.sort_unstable();
        found.dedup();
        return found;
    }
    ALL_TYPES.to_vec()
}

fn admits(types: &[&str], t: &str) -> bool {
    types.contains(&t) || (t == "integer" && types.contains(&"number"))
}

impl Checker {
    /// Equal `$ref`s mean the same only when they point into equal `$defs`: a wide schema
    /// with other references is not decided.
    fn references(&mut self, narrow: &Value, wide: &Value) {
        let mut found = Vec::new();
        references(wide, &mut found);
        if found.is_empty() {
            return;
        }
        let local = found
            .iter()
            .all(|r| r.starts_with("#/$defs/") || r.starts_with("#/definitions/"));
        if !local {
            self.fail(
                "",
                "only references into the schema's own $defs ('#/$defs/...') can be checked \
                 for compatibility",
            );
        } else if definitions(narrow) != definitions(wide) {
            self.fail(
                "/$defs",
                "$defs changed in a schema that uses $ref: such changes cannot be checked for \
                 compatibility (use mode NONE)",
            );
        }
    }

    fn fail(&mut self, path: &str, message: impl Into<String>) {
        self.out.push(Incompatibility {
            path: path.to_owned(),
            message: message.into(),
        });
    }

    /// Records why `narrow` ⊆ `wide` cannot be proven at `path`.
    fn subset(&mut self, narrow: &Value, wide: &Value, path: &str) {
        if narrow == wide {
            return;
        }
        let (Some(n), Some(w)) = (shape(narrow), shape(wide)) else {
            self.fail(path, "a schema must be an object or a boolean");
            return;
        };
        let (n, w) = match (n, w) {
            (_, Shape::Anything) | (Shape::Nothing, _) => return,
            (_, Shape::Nothing) => {
                self.fail(path, "no longer accepts any value here");
                return;
            }
            (Shape::Anything, Shape::Object(w)) => (&*EMPTY, w),
            (Shape::Object(n), Shape::Object(w)) => (n, w),
        };
        self.keywords(n, w, path);
        self.types(n, w, path);
        self.enums(n, w, path);
        let n_types = types(n);
        if admits(&n_types, "number") || admits(&n_types, "integer") {
            self.numbers(n, w, path);
        }
        if n_types.contains(&"string") {
            self.size(n, w, path, "minLength", "maxLength", "string length");
            if let Some(pattern) = w.get("pattern")
                && n.get("pattern") != Some(pattern)
            {
                self.fail(
                    &format!("{path}/pattern"),
                    "the pattern was added or changed (patterns are compared for equality)",
                );
            }
        }
        if n_types.contains(&"array") {
            self.arrays(n, w, path);
        }
        if n_types.contains(&"object") {
            self.objects(n, w, path);
        }
    }

    /// Keywords outside what the checker reasons about.
    fn keywords(&mut self, n: &Map<String, Value>, w: &Map<String, Value>, path: &str) {
        for (key, value) in w {
            let key = key.as_str();
            if ANNOTATIONS.contains(&key) || UNDERSTOOD.contains(&key) {
                continue;
            }
            if NARROWING.contains(&key) && n.get(key) == Some(value) {
                continue;
            }
            let why = if NARROWING.contains(&key) {
                "was added or changed; its effect cannot be compared"
            } else if UNDECIDED_EITHER.contains(&key) || UNDECIDED_WIDE.contains(&key) {
                "cannot be checked for compatibility (use mode NONE, or keep the schema the same \
                 at this place)"
            } else {
                "is not a keyword this server can check for compatibility"
            };
            self.fail(
                &format!("{path}/{}", pointer_escape(key)),
                format!("'{key}' {why}"),
            );
        }
        for key in n.keys() {
            let key = key.as_str();
            if UNDECIDED_EITHER.contains(&key) && !w.contains_key(key) {
                self.fail(
                    &format!("{path}/{}", pointer_escape(key)),
                    format!(
                        "'{key}' cannot be checked for compatibility (use mode NONE, or keep \
                         the schema the same at this place)"
                    ),
                );
            }
        }
    }

    fn types(&mut self, n: &Map<String, Value>, w: &Map<String, Value>, path: &str) {
        if !w.contains_key("type") {
            return;
        }
        let wide = types(w);
        let lost: Vec<&str> = types(n).into_iter().filter(|t| !admits(&wide, t)).collect();
        if !lost.is_empty() {
            self.fail(
                &format!("{path}/type"),
                format!("no longer accepts type {}", lost.join(", ")),
            );
        }
    }

    fn enums(&mut self, n: &Map<String, Value>, w: &Map<String, Value>, path: &str) {
        let Some(wide) = enum_values(w) else {
            return;
        };
        let key = if w.contains_key("const") {
            "const"
        } else {
            "enum"
        };
        match enum_values(n) {
            None => self.fail(
                &format!("{path}/{key}"),
                format!("'{key}' restricts values that were free before"),
            ),
            Some(narrow) => {
                let lost: Vec<String> = narrow
                    .into_iter()
                    .filter(|v| !wide.contains(v))
                    .map(Value::to_string)
                    .collect();
                if !lost.is_empty() {
                    self.fail(
                        &format!("{path}/{key}"),
                        format!("no longer accepts {}", lost.join(", ")),
                    );
                }
            }
        }
    }

    fn numbers(&mut self, n: &Map<String, Value>, w: &Map<String, Value>, path: &str) {
        if let Some(wb) = lower_bound(w) {
            let ok = lower_bound(n).is_some_and(|nb| {
                wb.value < nb.value || (wb.value == nb.value && (!wb.exclusive || nb.exclusive))
            });
            if !ok {
                let key = if wb.exclusive {
                    "exclusiveMinimum"
                } else {
                    "minimum"
                };
                self.fail(
                    &format!("{path}/{key}"),
                    "the lower bound was added or raised",
                );
            }
        }
        if let Some(wb) = upper_bound(w) {
            let ok = upper_bound(n).is_some_and(|nb| {
                wb.value > nb.value || (wb.value == nb.value && (!wb.exclusive || nb.exclusive))
            });
            if !ok {
                let key = if wb.exclusive {
                    "exclusiveMaximum"
                } else {
                    "maximum"
                };
                self.fail(
                    &format!("{path}/{key}"),
                    "the upper bound was added or lowered",
                );
            }
        }
    }

    /// `min`/`max` count keywords (lengths, items, properties).
    fn size(
        &mut self,
        n: &Map<String, Value>,
        w: &Map<String, Value>,
        path: &str,
        min: &str,
        max: &str,
        what: &str,
    ) {
        let get = |s: &Map<String, Value>, k: &str| s.get(k).and_then(Value::as_f64);
        if let Some(wmin) = get(w, min)
            && get(n, min).unwrap_or(0.0) < wmin
        {
            self.fail(
                &format!("{path}/{min}"),
                format!("the minimum {what} was added or raised"),
            );
        }
        if let Some(wmax) = get(w, max)
            && get(n, max).is_none_or(|nmax| nmax > wmax)
        {
            self.fail(
                &format!("{path}/{max}"),
                format!("the maximum {what} was added or lowered"),
            );
        }
    }

    fn arrays(&mut self, n: &Map<String, Value>, w: &Map<String, Value>, path: &str) {
        self.size(n, w, path, "minItems", "maxItems", "number of items");
        if w.get("uniqueItems") == Some(&Value::Bool(true))
            && n.get("uniqueItems") != Some(&Value::Bool(true))
        {
            self.fail(&format!("{path}/uniqueItems"), "items must now be unique");
        }
        let prefix = |s: &Map<String, Value>| -> Vec<Value> {
            s.get("prefixItems")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
        };
        let rest = |s: &Map<String, Value>| s.get("items").cloned().unwrap_or(Value::Bool(true));
        let (n_prefix, w_prefix) = (prefix(n), prefix(w));
        let (n_rest, w_rest) = (rest(n), rest(w));
        let at = |items: &[Value], rest: &Value, i: usize| items.get(i).unwrap_or(rest).clone();
        for i in 0..n_prefix.len().max(w_prefix.len()) {
            let (ns, ws) = (at(&n_prefix, &n_rest, i), at(&w_prefix, &w_rest, i));
            let place = if i < w_prefix.len() {
                format!("{path}/prefixItems/{i}")
            } else {
                format!("{path}/items")
            };
            self.subset(&ns, &ws, &place);
        }
        self.subset(&n_rest, &w_rest, &format!("{path}/items"));
    }

    fn objects(&mut self, n: &Map<String, Value>, w: &Map<String, Value>, path: &str) {
        let required = |s: &Map<String, Value>| -> Vec<String> {
            s.get("required")
                .and_then(Value::as_array)
                .map(|r| {
                    r.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default()
        };
        let n_required = required(n);
        for name in required(w) {
            if !n_required.contains(&name) {
                self.fail(
                    &format!("{path}/required"),
                    format!("property '{name}' is newly required"),
                );
            }
        }
        self.size(
            n,
            w,
            path,
            "minProperties",
            "maxProperties",
            "number of properties",
        );
        let props =
            |s: &Map<String, Value>| s.get("properties").and_then(Value::as_object).cloned();
        let (n_props, w_props) = (props(n).unwrap_or_default(), props(w).unwrap_or_default());
        let additional = |s: &Map<String, Value>| {
            s.get("additionalProperties")
                .cloned()
                .unwrap_or(Value::Bool(true))
        };
        let (n_add, w_add) = (additional(n), additional(w));
        let mut names: Vec<&String> = n_props.keys().chain(w_props.keys()).collect();
        names.sort_unstable();
        names.dedup();
        for name in names {
            // The one assumption beyond strict proof (see the module docs): a name the narrow
            // schema neither lists nor constrains is taken to be unused by its documents.
            if !n_props.contains_key(name) && n_add == Value::Bool(true) {
                continue;
            }
            let ns = n_props.get(name).unwrap_or(&n_add);
            let ws = w_props.get(name).unwrap_or(&w_add);
            let place = if w_props.contains_key(name) {
                format!("{path}/properties/{}", pointer_escape(name))
            } else {
                format!("{path}/additionalProperties")
            };
            let before = self.out.len();
            self.subset(ns, ws, &place);
            if self.out.len() > before && !w_props.contains_key(name) {
                for i in &mut self.out[before..] {
                    i.message = format!("property '{name}': {}", i.message);
                }
            }
        }
        if w_add == Value::Bool(false) && n_add != Value::Bool(false) {
            self.fail(
                &format!("{path}/additionalProperties"),
                "additionalProperties: false was added: properties not listed are refused",
            );
        } else {
            self.subset(&n_add, &w_add, &format!("{path}/additionalProperties"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ok(wide: Value, narrow: Value) {
        let found = covers(&wide, &narrow);
        assert!(found.is_empty(), "{wide} should cover {narrow}: {found:?}");
    }

    /// Asserts `wide` does not cover `narrow`, with a reason at `path`.
    fn refused(wide: Value, narrow: Value, path: &str) {
        let found = covers(&wide, &narrow);
        assert!(
            found.iter().any(|i| i.path == path),
            "{wide} should not cover {narrow} at '{path}': {found:?}"
        );
    }

    fn object(properties: Value, required: &[&str]) -> Value {
        json!({"type": "object", "properties": properties, "required": required})
    }

    #[test]
    fn subjects_follow_event_type_rules() {
        assert_eq!(
            Subject::parse("order.placed").unwrap().as_str(),
            "order.placed"
        );
        for bad in ["", ".a", "a.", "a..b", "a b", "é", &"x".repeat(129)] {
            assert!(Subject::parse(bad).is_err(), "{bad}");
        }
        let t = EventType::parse("user.created").unwrap();
        assert_eq!(Subject::of(&t).to_string(), "user.created");
    }

    #[test]
    fn modes_parse_case_insensitively_and_print_upper_case() {
        for (raw, mode) in [
            ("NONE", CompatibilityMode::None),
            ("backward", CompatibilityMode::Backward),
            ("Forward", CompatibilityMode::Forward),
            ("FULL", CompatibilityMode::Full),
        ] {
            assert_eq!(CompatibilityMode::parse(raw).unwrap(), mode);
            assert_eq!(mode.as_str(), raw.to_ascii_uppercase());
        }
        for bad in ["", "FULL_TRANSITIVE", "back", " NONE"] {
            assert!(CompatibilityMode::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(CompatibilityMode::default(), CompatibilityMode::Backward);
    }

    #[test]
    fn identical_and_trivial_schemas() {
        let s = object(json!({"a": {"type": "string"}}), &["a"]);
        ok(s.clone(), s.clone());
        ok(json!(true), s.clone());
        ok(json!({}), s.clone());
        ok(json!({"description": "anything"}), s.clone());
        ok(s.clone(), json!(false));
        refused(s.clone(), json!(true), "/type");
        refused(json!(false), s.clone(), "");
        refused(json!({"type": "string"}), json!({}), "/type");
    }

    #[test]
    fn annotations_never_matter() {
        ok(
            json!({"type": "string", "title": "B", "description": "new", "examples": ["x"],
                   "format": "email", "$comment": "c", "default": "d", "deprecated": true}),
            json!({"type": "string", "title": "A"}),
        );
    }

    #[test]
    fn types_widen_but_never_narrow() {
        ok(
            json!({"type": ["string", "null"]}),
            json!({"type": "string"}),
        );
        ok(json!({"type": "number"}), json!({"type": "integer"}));
        refused(
            json!({"type": "integer"}),
            json!({"type": "number"}),
            "/type",
        );
        refused(
            json!({"type": "string"}),
            json!({"type": ["string", "null"]}),
            "/type",
        );
        refused(
            json!({"type": "string"}),
            json!({"type": "integer"}),
            "/type",
        );
        // types inferred from enum values
        ok(json!({"type": "string"}), json!({"enum": ["a", "b"]}));
        refused(
            json!({"type": "string"}),
            json!({"enum": ["a", 1]}),
            "/type",
        );
        ok(json!({"type": "integer"}), json!({"const": 3}));
    }

    #[test]
    fn enums_may_grow_but_not_shrink() {
        ok(
            json!({"enum": ["a", "b", "c"]}),
            json!({"enum": ["a", "b"]}),
        );
        ok(json!({"enum": ["a", "b"]}), json!({"const": "a"}));
        ok(json!({"const": "a"}), json!({"enum": ["a"]}));
        refused(json!({"enum": ["a"]}), json!({"enum": ["a", "b"]}), "/enum");
        refused(json!({"enum": ["a"]}), json!({"type": "string"}), "/enum");
        refused(json!({"const": 1}), json!({"const": 2}), "/const");
    }

    #[test]
    fn numeric_bounds_may_loosen_but_not_tighten() {
        ok(
            json!({"type": "integer", "minimum": 0}),
            json!({"type": "integer", "minimum": 1}),
        );
        ok(
            json!({"type": "integer", "minimum": 1}),
            json!({"type": "integer", "minimum": 1}),
        );
        ok(
            json!({"type": "number"}),
            json!({"type": "number", "maximum": 10}),
        );
        ok(
            json!({"type": "number", "minimum": 0}),
            json!({"type": "number", "exclusiveMinimum": 0}),
        );
        refused(
            json!({"type": "number", "exclusiveMinimum": 0}),
            json!({"type": "number", "minimum": 0}),
            "/exclusiveMinimum",
        );
        refused(
            json!({"type": "integer", "minimum": 5}),
            json!({"type": "integer", "minimum": 1}),
            "/minimum",
        );
        refused(
            json!({"type": "integer", "minimum": 0}),
            json!({"type": "integer"}),
            "/minimum",
        );
        refused(
            json!({"type": "number", "maximum": 9}),
            json!({"type": "number", "maximum": 10}),
            "/maximum",
        );
        refused(
            json!({"type": "number", "exclusiveMaximum": 10}),
            json!({"type": "number", "maximum": 10}),
            "/exclusiveMaximum",
        );
        ok(
            json!({"type": "number", "maximum": 10}),
            json!({"type": "number", "exclusiveMaximum": 10}),
        );
        // bounds are irrelevant when no numbers are admitted
        ok(json!({"minimum": 5}), json!({"type": "string"}));
    }

    #[test]
    fn string_constraints() {
        ok(
            json!({"type": "string", "maxLength": 10}),
            json!({"type": "string", "maxLength": 5}),
        );
        ok(
            json!({"type": "string"}),
            json!({"type": "string", "minLength": 1}),
        );
        refused(
            json!({"type": "string", "maxLength": 5}),
            json!({"type": "string", "maxLength": 10}),
            "/maxLength",
        );
        refused(
            json!({"type": "string", "minLength": 1}),
            json!({"type": "string"}),
            "/minLength",
        );
        ok(
            json!({"type": "string", "pattern": "^a"}),
            json!({"type": "string", "pattern": "^a"}),
        );
        refused(
            json!({"type": "string", "pattern": "^a"}),
            json!({"type": "string"}),
            "/pattern",
        );
        refused(
            json!({"type": "string", "pattern": "^a"}),
            json!({"type": "string", "pattern": "^b"}),
            "/pattern",
        );
    }

    #[test]
    fn new_required_properties_break_backward_compatibility() {
        let old = object(json!({"a": {"type": "string"}}), &["a"]);
        let new = object(
            json!({"a": {"type": "string"}, "b": {"type": "integer"}}),
            &["a", "b"],
        );
        refused(new.clone(), old.clone(), "/required");
        // ...but not forward: every new document is an old one.
        ok(old.clone(), new.clone());
        // an optional new property is fine both ways
        let optional = object(
            json!({"a": {"type": "string"}, "b": {"type": "integer"}}),
            &["a"],
        );
        ok(optional.clone(), old.clone());
        ok(old, optional);
    }

    #[test]
    fn an_open_schema_may_gain_a_typed_optional_property() {
        let old = json!({"type": "object"});
        let new = object(json!({"note": {"type": "string"}}), &[]);
        ok(new.clone(), old.clone());
        ok(old.clone(), new.clone());
        // but a required one is still refused
        refused(
            object(json!({"note": {"type": "string"}}), &["note"]),
            old,
            "/required",
        );
    }

    #[test]
    fn dropping_a_requirement_is_backward_but_not_forward() {
        let old = object(json!({"a": {"type": "string"}}), &["a"]);
        let new = object(json!({"a": {"type": "string"}}), &[]);
        ok(new.clone(), old.clone());
        refused(old, new, "/required");
    }

    #[test]
    fn property_types_are_checked_recursively() {
        let old = object(json!({"amount": {"type": "number"}}), &[]);
        let new = object(json!({"amount": {"type": "integer"}}), &[]);
        refused(new.clone(), old.clone(), "/properties/amount/type");
        ok(old, new);
        let deep_old = object(
            json!({"a": object(json!({"b": {"type": "string"}}), &[])}),
            &[],
        );
        let deep_new = object(
            json!({"a": object(json!({"b": {"type": "string", "maxLength": 3}}), &[])}),
            &[],
        );
        refused(deep_new, deep_old, "/properties/a/properties/b/maxLength");
    }

    #[test]
    fn additional_properties_false() {
        let open = object(json!({"a": {"type": "string"}}), &[]);
        let mut closed = open.clone();
        closed["additionalProperties"] = json!(false);
        refused(closed.clone(), open.clone(), "/additionalProperties");
        ok(open.clone(), closed.clone());
        // a closed schema may gain an optional property (backward)...
        let mut wider = object(
            json!({"a": {"type": "string"}, "b": {"type": "string"}}),
            &[],
        );
        wider["additionalProperties"] = json!(false);
        ok(wider.clone(), closed.clone());
        // ...but removing a property from a closed schema refuses what was accepted
        refused(closed, wider, "/additionalProperties");
        // a property new in the wide schema must accept what the narrow one's
        // additionalProperties allowed
        let typed_additional =
            json!({"type": "object", "additionalProperties": {"type": "string"}});
        ok(
            json!({"type": "object", "properties": {"x": {"type": ["string", "null"]}}}),
            typed_additional.clone(),
        );
        refused(
            json!({"type": "object", "properties": {"x": {"type": "integer"}}}),
            typed_additional,
            "/properties/x/type",
        );
    }

    #[test]
    fn object_property_counts() {
        refused(
            json!({"type": "object", "maxProperties": 2}),
            json!({"type": "object"}),
            "/maxProperties",
        );
        ok(
            json!({"type": "object", "minProperties": 1}),
            json!({"type": "object", "minProperties": 2}),
        );
    }

    #[test]
    fn arrays() {
        let items = |s: Value| json!({"type": "array", "items": s});
        ok(
            items(json!({"type": "number"})),
            items(json!({"type": "integer"})),
        );
        refused(
            items(json!({"type": "integer"})),
            items(json!({"type": "number"})),
            "/items/type",
        );
        refused(
            json!({"type": "array", "maxItems": 2}),
            json!({"type": "array", "maxItems": 3}),
            "/maxItems",
        );
        refused(
            json!({"type": "array", "uniqueItems": true}),
            json!({"type": "array"}),
            "/uniqueItems",
        );
        ok(
            json!({"type": "array"}),
            json!({"type": "array", "uniqueItems": true}),
        );
        let tuple = |a: Value, b: Value| json!({"type": "array", "prefixItems": [a, b]});
        ok(
            tuple(json!({"type": "number"}), json!({"type": "string"})),
            tuple(json!({"type": "integer"}), json!({"type": "string"})),
        );
        refused(
            tuple(json!({"type": "integer"}), json!({"type": "string"})),
            tuple(json!({"type": "number"}), json!({"type": "string"})),
            "/prefixItems/0/type",
        );
        // a wide tuple with a closed tail refuses longer arrays
        let mut closed = tuple(json!({"type": "number"}), json!({"type": "string"}));
        closed["items"] = json!(false);
        refused(
            closed.clone(),
            json!({"type": "array"}),
            "/prefixItems/0/type",
        );
        refused(
            closed.clone(),
            tuple(json!({"type": "number"}), json!({"type": "string"})),
            "/items",
        );
    }

    #[test]
    fn narrowing_keywords_are_ignored_in_the_narrow_schema_only() {
        let plain = json!({"type": "integer"});
        let with = json!({"type": "integer", "multipleOf": 5, "not": {"const": 10},
                          "anyOf": [{"minimum": 0}, {"maximum": -10}]});
        ok(plain.clone(), with.clone());
        refused(with.clone(), plain, "/multipleOf");
        ok(with.clone(), with.clone());
        let mut changed = with.clone();
        changed["multipleOf"] = json!(3);
        refused(changed, with, "/multipleOf");
    }

    #[test]
    fn refs_and_pattern_properties_are_undecided_unless_equal() {
        let with_ref = json!({"$defs": {"a": {"type": "string"}}, "type": "object",
                              "properties": {"x": {"$ref": "#/$defs/a"}}});
        ok(with_ref.clone(), with_ref.clone());
        // equal references into equal $defs are equal
        let mut changed = with_ref.clone();
        changed["properties"]["y"] = json!({"type": "string"});
        ok(changed.clone(), with_ref.clone());
        // a reference where there was a plain schema is not decided
        let mut replaced = with_ref.clone();
        replaced["properties"]["x"] = json!({"type": "string"});
        refused(with_ref.clone(), replaced, "/properties/x/$ref");
        // changed $defs are not decided
        let mut redefined = with_ref.clone();
        redefined["$defs"]["a"] = json!({"type": ["string", "null"]});
        refused(redefined, with_ref.clone(), "/$defs");
        // references outside $defs are not decided
        refused(
            json!({"type": "object", "properties": {"x": {"$ref": "other.json"}}}),
            json!({"type": "object"}),
            "",
        );
        // $ref in the narrow schema only narrows it
        ok(json!({"type": "object"}), with_ref);
        let pattern = json!({"type": "object", "patternProperties": {"^x": {"type": "string"}},
                             "additionalProperties": false});
        refused(
            json!({"type": "object"}),
            pattern.clone(),
            "/patternProperties",
        );
        refused(pattern, json!({"type": "object"}), "/patternProperties");
    }

    #[test]
    fn unknown_keywords_are_not_trusted() {
        refused(
            json!({"type": "string", "x-custom-rule": 1}),
            json!({"type": "string"}),
            "/x-custom-rule",
        );
    }

    #[test]
    fn modes() {
        let old = object(json!({"a": {"type": "string"}}), &["a"]);
        let new = object(
            json!({"a": {"type": "string"}, "b": {"type": "string"}}),
            &["a", "b"],
        );
        assert!(check_compatibility(CompatibilityMode::None, &old, &new).is_empty());
        let backward = check_compatibility(CompatibilityMode::Backward, &old, &new);
        assert_eq!(backward.len(), 1);
        assert!(
            backward[0].message.starts_with("backward: property 'b'"),
            "{backward:?}"
        );
        assert!(check_compatibility(CompatibilityMode::Forward, &old, &new).is_empty());
        let full = check_compatibility(CompatibilityMode::Full, &old, &new);
        assert_eq!(full, backward);
        // dropping a required property: forward breaks
        let forward = check_compatibility(CompatibilityMode::Forward, &new, &old);
        assert!(forward[0].message.starts_with("forward:"), "{forward:?}");
        assert!(check_compatibility(CompatibilityMode::Backward, &new, &old).is_empty());
    }

    #[test]
    fn a_realistic_evolution() {
        let v1 = json!({
            "type": "object",
            "properties": {
                "amount_cents": {"type": "integer", "minimum": 0},
                "currency": {"enum": ["EUR", "USD"]}
            },
            "required": ["amount_cents", "currency"]
        });
        // adds an optional field, a currency, and loosens a bound: backward compatible
        let v2 = json!({
            "type": "object",
            "properties": {
                "amount_cents": {"type": "integer", "minimum": -100},
                "currency": {"enum": ["EUR", "USD", "GBP"]},
                "note": {"type": "string"}
            },
            "required": ["amount_cents", "currency"]
        });
        assert!(check_compatibility(CompatibilityMode::Backward, &v1, &v2).is_empty());
        // but not forward: v1 readers do not know GBP or negative amounts
        let forward = check_compatibility(CompatibilityMode::Forward, &v1, &v2);
        let paths: Vec<&str> = forward.iter().map(|i| i.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "/properties/amount_cents/minimum",
                "/properties/currency/enum"
            ]
        );
    }
}
