//! What `allsource admin` prints: `--output json` prints the server's JSON exactly as it was
//! sent (one document per command, so scripts can pipe it to `jq`; `tail` prints one event per
//! line), `--output table` renders it for people: lists as aligned columns, single resources
//! as `key: value` lines with nested members under dotted keys.
//!
//! Text from the server is shown with control characters escaped, so a name holding a newline
//! or a terminal escape sequence can neither break the table nor drive the terminal.

use std::io::Write as _;

use serde_json::Value;

use super::client::{Answer, CliError};

/// `--output`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// Aligned columns and `key: value` lines.
    Table,
    /// The server's JSON, unchanged.
    Json,
}

/// A column of a list: its header and where its value is in each item (a JSON pointer).
#[derive(Debug, Clone, Copy)]
pub struct Column {
    pub header: &'static str,
    pub pointer: &'static str,
}

/// A column (`pointer` is a JSON pointer such as `/quotas/max_api_keys`).
pub const fn col(header: &'static str, pointer: &'static str) -> Column {
    Column { header, pointer }
}

/// How an answer is shown as a table.
#[derive(Debug, Clone, Copy)]
pub enum View {
    /// The array under `key` as rows; `noun` names them when there are none.
    List {
        key: &'static str,
        noun: &'static str,
        columns: &'static [Column],
    },
    /// One resource as `key: value` lines; the top-level members named in `compact` are shown
    /// as one line of JSON rather than spread over dotted keys (a JSON Schema, a definition).
    Object { compact: &'static [&'static str] },
}

/// A single resource, nothing kept compact.
pub const OBJECT: View = View::Object { compact: &[] };

/// The text to print for an answer.
pub fn render(output: Output, answer: &Answer, view: View) -> String {
    match output {
        Output::Json => json_text(&answer.text, &answer.body),
        Output::Table => table_text(&answer.body, view),
    }
}

/// The server's text as sent (with a final newline), or the value's JSON for an empty body.
pub fn json_text(text: &str, body: &Value) -> String {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        format!("{body}\n")
    } else {
        format!("{trimmed}\n")
    }
}

/// A value as a table.
pub fn table_text(body: &Value, view: View) -> String {
    match view {
        View::List { key, noun, columns } => match body
            .get(key)
            .and_then(Value::as_array)
            .or_else(|| body.as_array())
        {
            Some(items) => list(items, noun, columns),
            None => object(body, &[]),
        },
        View::Object { compact } => object(body, compact),
    }
}

/// Rows under headers, columns aligned; `(no <noun>)` under the headers when empty.
pub fn list(items: &[Value], noun: &str, columns: &[Column]) -> String {
    let headers: Vec<String> = columns.iter().map(|c| c.header.to_owned()).collect();
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|item| {
            columns
                .iter()
                .map(|c| item.pointer(c.pointer).map_or_else(|| "-".to_owned(), cell))
                .collect()
        })
        .collect();
    let mut text = grid(&headers, &rows);
    if rows.is_empty() {
        text.push_str(&format!("(no {noun})\n"));
    }
    text
}

/// Aligned columns, two spaces apart, no trailing blanks.
pub fn grid(headers: &[String], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| width(h)).collect();
    for row in rows {
        for (i, value) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(width(value));
            }
        }
    }
    let mut text = String::new();
    for line in std::iter::once(headers).chain(rows.iter().map(Vec::as_slice)) {
        let mut out = String::new();
        for (i, value) in line.iter().enumerate() {
            if i + 1 == line.len() {
                out.push_str(value);
            } else {
                let pad = widths
                    .get(i)
                    .copied()
                    .unwrap_or(0)
                    .saturating_sub(width(value));
                out.push_str(value);
                out.push_str(&" ".repeat(pad + 2));
            }
        }
        text.push_str(out.trim_end());
        text.push('\n');
    }
    text
}

fn width(s: &str) -> usize {
    s.chars().count()
}

/// Members shown first, in this order, when a resource has them; the others follow by name.
const FIRST: &[&str] = &[
    "id",
    "backup_id",
    "consumer_id",
    "group",
    "subject",
    "name",
    "username",
    "tenant_id",
];

/// One resource as `key: value` lines (nested objects under dotted keys).
pub fn object(body: &Value, compact: &[&str]) -> String {
    let mut pairs = Vec::new();
    match body {
        Value::Object(map) => {
            // serde_json's map is sorted by key; names come first, as people look for them.
            let mut members: Vec<(&String, &Value)> = map.iter().collect();
            members.sort_by_key(|(key, _)| {
                FIRST
                    .iter()
                    .position(|first| first == key)
                    .unwrap_or(FIRST.len())
            });
            for (key, value) in members {
                if compact.contains(&key.as_str()) {
                    pairs.push((clean(key), clean(&value.to_string())));
                } else {
                    flatten(&clean(key), value, &mut pairs);
                }
            }
        }
        other => pairs.push((String::new(), cell(other))),
    }
    let key_width = pairs.iter().map(|(k, _)| width(k)).max().unwrap_or(0);
    let mut text = String::new();
    for (key, value) in pairs {
        if key.is_empty() {
            text.push_str(&value);
        } else {
            let pad = key_width - width(&key);
            text.push_str(&format!("{key}:{} {value}", " ".repeat(pad)));
        }
        text.push('\n');
    }
    text
}

/// Nested objects become dotted keys; an empty object stays one `{}` value.
fn flatten(prefix: &str, value: &Value, out: &mut Vec<(String, String)>) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (key, inner) in map {
                flatten(&format!("{prefix}.{}", clean(key)), inner, out);
            }
        }
        other => out.push((prefix.to_owned(), cell(other))),
    }
}

/// A value in one cell: text as is, `-` for null, scalars' lists joined by commas, anything
/// else as one line of JSON.
pub fn cell(value: &Value) -> String {
    match value {
        Value::Null => "-".to_owned(),
        Value::String(s) => clean(s),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::Array(items) if items.iter().all(|v| !v.is_object() && !v.is_array()) => {
            if items.is_empty() {
                "-".to_owned()
            } else {
                items.iter().map(cell).collect::<Vec<_>>().join(",")
            }
        }
        other => clean(&other.to_string()),
    }
}

/// Control characters escaped (`\n`, `\u{1b}`).
pub fn clean(s: &str) -> String {
    if !s.chars().any(char::is_control) {
        return s.to_owned();
    }
    s.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// Writes to stdout and flushes. A closed pipe (`| head -1`) ends output quietly.
///
/// # Errors
/// Any other write error.
pub fn print(text: &str) -> Result<(), CliError> {
    write_stdout(text).map(|_| ())
}

/// Writes to stdout and flushes; `false` when stdout is a closed pipe.
///
/// # Errors
/// Any other write error.
pub fn write_stdout(text: &str) -> Result<bool, CliError> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(CliError::Other(format!(
            "cannot write to standard output: {e}"
        ))),
    }
}

/// Writes a note to stderr (never part of what scripts parse).
pub fn note(text: &str) {
    let _ = writeln!(std::io::stderr(), "{text}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const COLUMNS: &[Column] = &[
        col("ID", "/id"),
        col("TIER", "/tier"),
        col("EVENTS/DAY", "/quotas/max_events_per_day"),
    ];

    fn tenants() -> Answer {
        let body = json!({"tenants": [
            {"id": "default", "tier": "unlimited", "quotas": {"max_events_per_day": null}},
            {"id": "acme", "tier": "professional", "quotas": {"max_events_per_day": 1000000}},
        ], "total": 2});
        Answer {
            status: 200,
            text: body.to_string(),
            body,
        }
    }

    #[test]
    fn lists_are_aligned_columns() {
        let text = render(
            Output::Table,
            &tenants(),
            View::List {
                key: "tenants",
                noun: "tenants",
                columns: COLUMNS,
            },
        );
        assert_eq!(
            text,
            "ID       TIER          EVENTS/DAY\n\
             default  unlimited     -\n\
             acme     professional  1000000\n"
        );
    }

    #[test]
    fn an_empty_list_says_so() {
        let text = list(&[], "tenants", COLUMNS);
        assert_eq!(text, "ID  TIER  EVENTS/DAY\n(no tenants)\n");
    }

    #[test]
    fn json_is_the_servers_text_unchanged() {
        let answer = Answer {
            status: 200,
            text: "{\"z\":1,\"a\":[1, 2]}".into(),
            body: json!({"z": 1, "a": [1, 2]}),
        };
        assert_eq!(
            render(Output::Json, &answer, OBJECT),
            "{\"z\":1,\"a\":[1, 2]}\n"
        );
        let empty = Answer {
            status: 204,
            text: String::new(),
            body: json!({"id": "c", "deleted": true}),
        };
        assert_eq!(
            render(Output::Json, &empty, OBJECT),
            "{\"deleted\":true,\"id\":\"c\"}\n"
        );
    }

    #[test]
    fn objects_are_key_value_lines_with_dotted_nested_keys() {
        let body = json!({"id": "acme", "active": true, "quotas": {"max_api_keys": 50,
            "max_pipelines": null}, "tags": ["a", "b"], "empty": {}});
        let text = object(&body, &[]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            [
                "id:                   acme",
                "active:               true",
                "empty:                {}",
                "quotas.max_api_keys:  50",
                "quotas.max_pipelines: -",
                "tags:                 a,b",
            ]
        );
    }

    #[test]
    fn compact_members_stay_one_line() {
        let body = json!({"subject": "order.placed", "schema": {"type": "object",
            "required": ["total"]}});
        assert_eq!(
            object(&body, &["schema"]),
            "subject: order.placed\nschema:  {\"required\":[\"total\"],\"type\":\"object\"}\n"
        );
    }

    #[test]
    fn control_characters_cannot_break_a_table() {
        assert_eq!(cell(&json!("a\nb\u{1b}[31m")), "a\\nb\\u{1b}[31m");
        let text = list(&[json!({"id": "x\ny"})], "rows", &[col("ID", "/id")]);
        assert_eq!(text.lines().count(), 2, "{text}");
    }

    #[test]
    fn cells_render_every_kind_of_value() {
        assert_eq!(cell(&json!(null)), "-");
        assert_eq!(cell(&json!([])), "-");
        assert_eq!(
            cell(&json!(["order.*", "user.signed_up"])),
            "order.*,user.signed_up"
        );
        assert_eq!(cell(&json!([{"a": 1}])), "[{\"a\":1}]");
        assert_eq!(cell(&json!(1.5)), "1.5");
        assert_eq!(cell(&json!(false)), "false");
    }

    #[test]
    fn a_missing_list_falls_back_to_the_object() {
        let body = json!({"detail": "x"});
        assert_eq!(
            table_text(
                &body,
                View::List {
                    key: "tenants",
                    noun: "tenants",
                    columns: COLUMNS
                }
            ),
            "detail: x\n"
        );
    }
}
