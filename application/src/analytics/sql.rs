//! SQL text for the analytics and the query DSL: literals quoted, JSON paths as the engine's
//! path functions, and the DSL's conditions compiled with the meaning
//! [`Condition::matches`](allsource_domain::query_dsl::Condition::matches) gives them.
//!
//! Every value that reaches SQL text from a client goes through [`string`], [`number`] or
//! [`time`]; identifiers are fixed by this module (the `events` columns). Statements built here
//! run through the same [`SqlEngine`](crate::ports::SqlEngine) as the client's own SQL, so the
//! tenant scoping is the engine's, not this text's.

use std::fmt::Write;

use allsource_domain::query_dsl::{CompareOp, Condition, DslField, Literal, PathSegment};
use chrono::{DateTime, SecondsFormat, Utc};

/// A string literal: `'it''s'`.
pub fn string(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// A number literal (integers without a fraction; non-finite numbers as NULL).
pub fn number(value: f64) -> String {
    if !value.is_finite() {
        "NULL".to_owned()
    } else if value.fract() == 0.0 && value.abs() < 9.0e15 {
        format!("{value:.0}")
    } else {
        format!("{value:?}")
    }
}

/// A timestamp literal in UTC with microseconds.
pub fn time(t: DateTime<Utc>) -> String {
    format!(
        "TIMESTAMP {}",
        string(&t.to_rfc3339_opts(SecondsFormat::Micros, true))
    )
}

/// The path arguments of the JSON functions: `, 'customer', 'tier', 0`.
fn path_args(path: &[PathSegment]) -> String {
    let mut out = String::new();
    for segment in path {
        match segment {
            PathSegment::Key(key) => {
                let _ = write!(out, ", {}", string(key));
            }
            PathSegment::Index(i) => {
                let _ = write!(out, ", {i}");
            }
        }
    }
    out
}

/// What a field is read as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum As {
    Text,
    Number,
    Bool,
    /// The value as JSON text (payload/metadata paths), the column itself otherwise.
    Json,
}

/// A field as an SQL expression read as `kind`.
pub fn field(field: &DslField, kind: As) -> String {
    let (column, path) = match field {
        DslField::Id => return "id".into(),
        DslField::EntityId => return "entity_id".into(),
        DslField::EventType => return "event_type".into(),
        DslField::Timestamp => return "\"timestamp\"".into(),
        DslField::Position => {
            return if kind == As::Number {
                "CAST(position AS DOUBLE)".into()
            } else {
                "position".into()
            };
        }
        DslField::Version => {
            return if kind == As::Number {
                "CAST(version AS DOUBLE)".into()
            } else {
                "version".into()
            };
        }
        DslField::Payload(path) => ("payload", path),
        DslField::Metadata(path) => ("metadata", path),
    };
    let function = match kind {
        As::Text => "json_get_str",
        As::Number => "json_get_float",
        As::Bool => "json_get_bool",
        As::Json => {
            if path.is_empty() {
                return column.into();
            }
            "json_get_json"
        }
    };
    format!("{function}({column}{})", path_args(path))
}

fn operator(op: CompareOp) -> &'static str {
    match op {
        CompareOp::Eq => "=",
        CompareOp::Ne => "<>",
        CompareOp::Gt => ">",
        CompareOp::Ge => ">=",
        CompareOp::Lt => "<",
        CompareOp::Le => "<=",
    }
}

/// One comparison, two-valued (`COALESCE(..., false)`: an absent value compares false).
fn compare(f: &DslField, op: CompareOp, value: &Literal) -> String {
    let (left, right) = match value {
        Literal::String(s) => (field(f, As::Text), string(s)),
        Literal::Number(n) => {
            if !n.is_finite() {
                return "false".into();
            }
            (field(f, As::Number), number(*n))
        }
        Literal::Bool(b) => {
            if !matches!(op, CompareOp::Eq | CompareOp::Ne) {
                return "false".into();
            }
            (field(f, As::Bool), b.to_string())
        }
        Literal::Time(t) => {
            if *f != DslField::Timestamp {
                return "false".into();
            }
            (field(f, As::Text), time(*t))
        }
    };
    format!("COALESCE({left} {} {right}, false)", operator(op))
}

/// A DSL condition as an SQL boolean expression with the evaluator's meaning.
pub fn condition(c: &Condition) -> String {
    match c {
        Condition::And(parts) => join(parts, "AND", "true"),
        Condition::Or(parts) => join(parts, "OR", "false"),
        Condition::Not(inner) => format!("(NOT {})", condition(inner)),
        Condition::Compare { field, op, value } => compare(field, *op, value),
        Condition::In { field, values } => {
            let parts: Vec<String> = values
                .iter()
                .map(|v| compare(field, CompareOp::Eq, v))
                .collect();
            if parts.is_empty() {
                "false".into()
            } else {
                format!("({})", parts.join(" OR "))
            }
        }
        Condition::Contains { field: f, value } => match f {
            DslField::Timestamp | DslField::Position | DslField::Version => "false".into(),
            _ => format!(
                "COALESCE(strpos({}, {}) > 0, false)",
                field(f, As::Text),
                string(value)
            ),
        },
        Condition::Exists { field: f } => match f {
            DslField::Payload(path) if !path.is_empty() => {
                format!("COALESCE(json_contains(payload{}), false)", path_args(path))
            }
            DslField::Metadata(path) if path.is_empty() => "(metadata IS NOT NULL)".into(),
            DslField::Metadata(path) => {
                format!(
                    "COALESCE(json_contains(metadata{}), false)",
                    path_args(path)
                )
            }
            _ => "true".into(),
        },
    }
}

fn join(parts: &[Condition], op: &str, empty: &str) -> String {
    if parts.is_empty() {
        return empty.into();
    }
    let parts: Vec<String> = parts.iter().map(condition).collect();
    format!("({})", parts.join(&format!(" {op} ")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use allsource_domain::query_dsl::DslQuery;
    use chrono::TimeZone;
    use serde_json::json;

    fn compiled(body: serde_json::Value) -> String {
        let now = Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap();
        let query = DslQuery::parse(&body, now).expect("valid");
        condition(&query.condition.expect("condition"))
    }

    #[test]
    fn literals_are_quoted() {
        assert_eq!(string("it's"), "'it''s'");
        assert_eq!(
            string("'; DROP TABLE events; --"),
            "'''; DROP TABLE events; --'"
        );
        assert_eq!(number(3.0), "3");
        assert_eq!(number(2.5), "2.5");
        assert_eq!(number(f64::NAN), "NULL");
        assert_eq!(
            time(Utc.with_ymd_and_hms(2026, 2, 1, 0, 0, 0).unwrap()),
            "TIMESTAMP '2026-02-01T00:00:00.000000Z'"
        );
    }

    #[test]
    fn conditions_compile_with_two_valued_leaves() {
        assert_eq!(
            compiled(json!({"where": ["=", "payload.customer.tier", "gold"]})),
            "COALESCE(json_get_str(payload, 'customer', 'tier') = 'gold', false)"
        );
        assert_eq!(
            compiled(json!({"where": ["not", [">", "payload.items[0].qty", 2]]})),
            "(NOT COALESCE(json_get_float(payload, 'items', 0, 'qty') > 2, false))"
        );
        assert_eq!(
            compiled(
                json!({"where": ["and", ["=", "event_type", "a"], ["exists", "metadata.trace"]]})
            ),
            "(COALESCE(event_type = 'a', false) AND COALESCE(json_contains(metadata, 'trace'), false))"
        );
        assert_eq!(
            compiled(json!({"where": [">=", "timestamp", {"days_ago": 1}]})),
            "COALESCE(\"timestamp\" >= TIMESTAMP '2026-02-28T00:00:00.000000Z', false)"
        );
        assert_eq!(
            compiled(json!({"where": ["in", "entity_id", ["a", "b'c"]]})),
            "(COALESCE(entity_id = 'a', false) OR COALESCE(entity_id = 'b''c', false))"
        );
    }
}
