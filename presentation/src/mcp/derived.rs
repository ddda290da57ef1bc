//! The tools only an agent-facing server has, computed from what the read routes answer:
//! `quick_stats`, `sample_events`, `event_timeline`, `analyze_changes`, `compare_entities`,
//! `explain_entity`. Each reads through [`Rest`] (so with the caller's credential, tenancy and
//! limits) and folds states with the same rule as the server (a payload's top-level keys
//! overwrite, a key set to `null` is removed, a non-object payload replaces the state).

use std::collections::BTreeMap;

use axum::http::Method;
use serde_json::{Map, Value, json};

use super::catalog::Derived;
use super::rest::{Rest, RestRequest, query, segment, target};
use super::{ToolError, answer_or_error};

/// The most events `explain_entity` and `event_timeline` read (ten pages of the entity route).
pub const MAX_EVENTS_READ: usize = 10_000;

/// The input schema of a derived tool.
pub fn input_schema(which: Derived) -> Value {
    let entity = json!({"type": "string", "description": "The entity (stream) id."});
    let time = json!({"type": "string", "format": "date-time",
        "description": "An RFC 3339 time, `2026-11-22T10:15:00Z`."});
    let (properties, required): (Value, Vec<&str>) = match which {
        Derived::QuickStats => (json!({}), vec![]),
        Derived::SampleEvents => (
            json!({
                "event_type": {"type": "string", "description": "Only events of this type."},
                "event_type_prefix": {"type": "string",
                    "description": "Only types starting with this text (`order.`)."},
                "entity_id": entity,
                "limit": {"type": "integer", "minimum": 1, "maximum": 100, "default": 10,
                    "description": "How many events (newest first)."},
            }),
            vec![],
        ),
        Derived::EventTimeline => (
            json!({
                "entity_id": entity,
                "from_version": {"type": "integer", "minimum": 1},
                "to_version": {"type": "integer", "minimum": 1},
                "limit": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100},
            }),
            vec!["entity_id"],
        ),
        Derived::AnalyzeChanges => (
            json!({
                "entity_id": entity,
                "from": time,
                "to": {"type": "string", "format": "date-time",
                    "description": "An RFC 3339 time; now when absent."},
            }),
            vec!["entity_id", "from"],
        ),
        Derived::CompareEntities => (
            json!({
                "entity_a": entity,
                "entity_b": entity,
                "as_of": {"type": "string", "format": "date-time",
                    "description": "Compare the states at this time; now when absent."},
            }),
            vec!["entity_a", "entity_b"],
        ),
        Derived::ExplainEntity => (json!({"entity_id": entity}), vec!["entity_id"]),
    };
    json!({
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": false,
    })
}

/// The output schema of a derived tool.
pub fn output_schema(which: Derived) -> Value {
    let event_ref = json!({"type": "object", "properties": {
        "version": {"type": "integer"}, "position": {"type": "integer"},
        "event_type": {"type": "string"}, "timestamp": {"type": "string"}}});
    let (properties, required): (Value, Vec<&str>) = match which {
        Derived::QuickStats => (
            json!({
                "total_events": {"type": "integer"},
                "total_entities": {"type": "integer"},
                "total_event_types": {"type": "integer"},
                "last_position": {"type": ["integer", "null"]},
                "top_event_types": {"type": "array", "items": {"type": "object"}},
                "recent_entities": {"type": "array", "items": {"type": "object"}},
            }),
            vec!["total_events", "top_event_types", "recent_entities"],
        ),
        Derived::SampleEvents => (
            json!({"events": {"type": "array", "items": {"type": "object"}},
                   "count": {"type": "integer"}}),
            vec!["events", "count"],
        ),
        Derived::EventTimeline => (
            json!({
                "entity_id": {"type": "string"},
                "count": {"type": "integer"},
                "has_more": {"type": "boolean"},
                "timeline": {"type": "array", "items": {"type": "object", "properties": {
                    "version": {"type": "integer"}, "position": {"type": "integer"},
                    "timestamp": {"type": "string"}, "event_type": {"type": "string"},
                    "keys_set": {"type": "array", "items": {"type": "string"}},
                    "keys_removed": {"type": "array", "items": {"type": "string"}},
                    "replaced_state": {"type": "boolean"}}}},
            }),
            vec!["entity_id", "count", "has_more", "timeline"],
        ),
        Derived::AnalyzeChanges => (
            json!({
                "entity_id": {"type": "string"},
                "from": {"type": "string"}, "to": {"type": ["string", "null"]},
                "version_from": {"type": "integer"}, "version_to": {"type": "integer"},
                "added": {"type": "object"}, "removed": {"type": "object"},
                "changed": {"type": "object"},
                "events": {"type": "array", "items": event_ref},
            }),
            vec![
                "entity_id",
                "version_from",
                "version_to",
                "added",
                "removed",
                "changed",
                "events",
            ],
        ),
        Derived::CompareEntities => (
            json!({
                "a": {"type": "object"}, "b": {"type": "object"},
                "only_in_a": {"type": "object"}, "only_in_b": {"type": "object"},
                "different": {"type": "object"},
                "same": {"type": "array", "items": {"type": "string"}},
            }),
            vec!["a", "b", "only_in_a", "only_in_b", "different", "same"],
        ),
        Derived::ExplainEntity => (
            json!({
                "entity_id": {"type": "string"},
                "event_count": {"type": "integer"},
                "version": {"type": "integer"},
                "first_event": {"type": ["object", "null"]},
                "last_event": {"type": ["object", "null"]},
                "event_types": {"type": "array", "items": {"type": "object", "properties": {
                    "event_type": {"type": "string"}, "count": {"type": "integer"}}}},
                "keys": {"type": "array", "items": {"type": "object", "properties": {
                    "key": {"type": "string"}, "first_set_version": {"type": "integer"},
                    "last_changed_version": {"type": "integer"}, "changes": {"type": "integer"},
                    "present": {"type": "boolean"}, "current": {}}}},
                "truncated": {"type": "boolean"},
            }),
            vec![
                "entity_id",
                "event_count",
                "version",
                "event_types",
                "keys",
                "truncated",
            ],
        ),
    };
    json!({"type": "object", "properties": properties, "required": required})
}

/// Runs a derived tool.
///
/// # Errors
/// A [`ToolError`] that says what to fix (bad arguments, or the REST answer's problem).
pub async fn run(
    which: Derived,
    tool: &'static str,
    args: &Map<String, Value>,
    rest: &dyn Rest,
) -> Result<Value, ToolError> {
    let reader = Reader { rest, tool };
    match which {
        Derived::QuickStats => quick_stats(&reader).await,
        Derived::SampleEvents => sample_events(&reader, args).await,
        Derived::EventTimeline => event_timeline(&reader, args).await,
        Derived::AnalyzeChanges => analyze_changes(&reader, args).await,
        Derived::CompareEntities => compare_entities(&reader, args).await,
        Derived::ExplainEntity => explain_entity(&reader, args).await,
    }
}

struct Reader<'a> {
    rest: &'a dyn Rest,
    tool: &'static str,
}

impl Reader<'_> {
    async fn get(&self, path: &str, pairs: Vec<(&str, String)>) -> Result<Value, ToolError> {
        let answer = self
            .rest
            .send(RestRequest {
                method: Method::GET,
                target: target(path, &query(pairs)),
                body: None,
                tool: self.tool,
            })
            .await
            .map_err(ToolError::unreachable)?;
        answer_or_error(answer)
    }

    /// The entity's state at `as_of` (now when `None`); `None` when it had no events then.
    async fn state(&self, entity: &str, as_of: Option<&str>) -> Result<Option<Value>, ToolError> {
        let path = format!("/api/v1/entities/{}/state", segment(entity));
        let pairs = as_of
            .map(|t| vec![("as_of", t.to_owned())])
            .unwrap_or_default();
        match self.get(&path, pairs).await {
            Ok(state) => Ok(Some(state)),
            Err(e) if e.status == Some(404) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// An entity's events from `from_version`, up to `max`, and whether there are more.
    async fn events(
        &self,
        entity: &str,
        from_version: u64,
        to_version: Option<u64>,
        max: usize,
    ) -> Result<(Vec<Value>, bool), ToolError> {
        let path = format!("/api/v1/entities/{}/events", segment(entity));
        let mut events: Vec<Value> = Vec::new();
        let mut next = from_version;
        loop {
            let page = max.saturating_sub(events.len()).min(1000);
            if page == 0 {
                // Full: more exist if the stream goes on.
                let more = self
                    .get(
                        &path,
                        vec![("from_version", next.to_string()), ("limit", "1".into())],
                    )
                    .await?;
                let more = more["count"].as_u64().unwrap_or(0) > 0
                    && to_version.is_none_or(|to| next <= to);
                return Ok((events, more));
            }
            let mut pairs = vec![
                ("from_version", next.to_string()),
                ("limit", page.to_string()),
            ];
            if let Some(to) = to_version {
                pairs.push(("to_version", to.to_string()));
            }
            let answer = self.get(&path, pairs).await?;
            let batch = answer["events"].as_array().cloned().unwrap_or_default();
            let has_more = answer["has_more"].as_bool().unwrap_or(false);
            let Some(last) = batch.last().and_then(|e| e["version"].as_u64()) else {
                return Ok((events, false));
            };
            next = last + 1;
            events.extend(batch);
            if !has_more {
                return Ok((events, false));
            }
        }
    }
}

fn text<'a>(args: &'a Map<String, Value>, name: &str) -> Result<Option<&'a str>, ToolError> {
    match args.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.as_str())),
        Some(_) => Err(ToolError::argument(format!("`{name}` must be a string"))),
    }
}

fn required_text<'a>(args: &'a Map<String, Value>, name: &str) -> Result<&'a str, ToolError> {
    text(args, name)?
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ToolError::argument(format!("`{name}` is required")))
}

fn integer(
    args: &Map<String, Value>,
    name: &str,
    min: u64,
    max: u64,
) -> Result<Option<u64>, ToolError> {
    match args.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => value
            .as_u64()
            .filter(|n| (min..=max).contains(n))
            .map(Some)
            .ok_or_else(|| {
                ToolError::argument(format!("`{name}` must be an integer from {min} to {max}"))
            }),
    }
}

async fn quick_stats(reader: &Reader<'_>) -> Result<Value, ToolError> {
    let stats = reader.get("/api/v1/stats", vec![]).await?;
    let types = reader.get("/api/v1/event-types", vec![]).await?;
    let entities = reader
        .get("/api/v1/entities", vec![("limit", "5".into())])
        .await?;
    let mut top: Vec<Value> = types["event_types"].as_array().cloned().unwrap_or_default();
    top.sort_by(|a, b| {
        b["count"]
            .as_u64()
            .cmp(&a["count"].as_u64())
            .then_with(|| a["event_type"].as_str().cmp(&b["event_type"].as_str()))
    });
    top.truncate(10);
    Ok(json!({
        "total_events": stats["total_events"],
        "total_entities": stats["total_entities"],
        "total_event_types": stats["total_event_types"],
        "last_position": stats["last_position"],
        "top_event_types": top,
        "recent_entities": entities["entities"],
    }))
}

async fn sample_events(reader: &Reader<'_>, args: &Map<String, Value>) -> Result<Value, ToolError> {
    let limit = integer(args, "limit", 1, 100)?.unwrap_or(10);
    let mut pairs = vec![("order", "desc".to_owned()), ("limit", limit.to_string())];
    for name in ["event_type", "event_type_prefix", "entity_id"] {
        if let Some(value) = text(args, name)? {
            pairs.push((name, value.to_owned()));
        }
    }
    let page = reader.get("/api/v1/events/query", pairs).await?;
    Ok(json!({"events": page["events"], "count": page["count"]}))
}

/// The state keys an event's payload sets and removes (`None`: it replaces the state).
fn keys_of(payload: &Value) -> Option<(Vec<String>, Vec<String>)> {
    let object = payload.as_object()?;
    let mut set = Vec::new();
    let mut removed = Vec::new();
    for (key, value) in object {
        if value.is_null() {
            removed.push(key.clone());
        } else {
            set.push(key.clone());
        }
    }
    Some((set, removed))
}

/// The server's fold, one payload at a time.
fn fold(state: &mut Value, payload: &Value) {
    match (state.as_object_mut(), payload.as_object()) {
        (Some(current), Some(changes)) => {
            for (key, value) in changes {
                if value.is_null() {
                    current.remove(key);
                } else {
                    current.insert(key.clone(), value.clone());
                }
            }
        }
        (None, Some(changes)) => {
            *state = Value::Object(
                changes
                    .iter()
                    .filter(|(_, v)| !v.is_null())
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            );
        }
        (_, None) => *state = payload.clone(),
    }
}

fn brief(event: &Value) -> Value {
    json!({
        "version": event["version"],
        "position": event["position"],
        "event_type": event["event_type"],
        "timestamp": event["timestamp"],
    })
}

async fn event_timeline(
    reader: &Reader<'_>,
    args: &Map<String, Value>,
) -> Result<Value, ToolError> {
    let entity = required_text(args, "entity_id")?;
    let from = integer(args, "from_version", 1, u64::MAX)?.unwrap_or(1);
    let to = integer(args, "to_version", 1, u64::MAX)?;
    let limit = integer(args, "limit", 1, 1000)?.unwrap_or(100);
    let limit = usize::try_from(limit).unwrap_or(1000);
    let (events, has_more) = reader.events(entity, from, to, limit).await?;
    Ok(timeline(entity, &events, has_more))
}

/// The timeline of events (pure, for tests).
pub fn timeline(entity: &str, events: &[Value], has_more: bool) -> Value {
    let timeline: Vec<Value> = events
        .iter()
        .map(|event| {
            let mut entry = brief(event);
            let (set, removed, replaced) = match keys_of(&event["payload"]) {
                Some((set, removed)) => (set, removed, false),
                None => (Vec::new(), Vec::new(), true),
            };
            entry["keys_set"] = json!(set);
            entry["keys_removed"] = json!(removed);
            entry["replaced_state"] = json!(replaced);
            entry
        })
        .collect();
    json!({
        "entity_id": entity,
        "count": timeline.len(),
        "has_more": has_more,
        "timeline": timeline,
    })
}

/// What [`diff`] finds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StateDiff {
    pub only_a: Map<String, Value>,
    pub only_b: Map<String, Value>,
    /// `{key: {"a": .., "b": ..}}`.
    pub different: Map<String, Value>,
    pub same: Vec<String>,
}

/// The differences between two states: keys only in `a`, only in `b`, in both with
/// different values, and the same. A state that is not an object counts as the one key `$`.
pub fn diff(a: &Value, b: &Value) -> StateDiff {
    fn keyed(state: &Value) -> Map<String, Value> {
        match state {
            Value::Object(map) => map.clone(),
            Value::Null => Map::new(),
            other => Map::from_iter([("$".to_owned(), other.clone())]),
        }
    }
    let (a, b) = (keyed(a), keyed(b));
    let mut only_a = Map::new();
    let mut only_b = Map::new();
    let mut different = Map::new();
    let mut same = Vec::new();
    for (key, value) in &a {
        match b.get(key) {
            None => {
                only_a.insert(key.clone(), value.clone());
            }
            Some(other) if other == value => same.push(key.clone()),
            Some(other) => {
                different.insert(key.clone(), json!({"a": value, "b": other}));
            }
        }
    }
    for (key, value) in &b {
        if !a.contains_key(key) {
            only_b.insert(key.clone(), value.clone());
        }
    }
    StateDiff {
        only_a,
        only_b,
        different,
        same,
    }
}

async fn analyze_changes(
    reader: &Reader<'_>,
    args: &Map<String, Value>,
) -> Result<Value, ToolError> {
    let entity = required_text(args, "entity_id")?;
    let from = required_text(args, "from")?;
    let to = text(args, "to")?;
    let before = reader.state(entity, Some(from)).await?;
    let after = reader.state(entity, to).await?;
    let version = |state: &Option<Value>| {
        state
            .as_ref()
            .and_then(|s| s["version"].as_u64())
            .unwrap_or(0)
    };
    let (version_from, version_to) = (version(&before), version(&after));
    let null = Value::Null;
    let state = |s: &Option<Value>| {
        s.as_ref()
            .map_or(null.clone(), |s| s["current_state"].clone())
    };
    let StateDiff {
        only_a: removed,
        only_b: added,
        different: changed,
        ..
    } = diff(&state(&before), &state(&after));
    let changed: Map<String, Value> = changed
        .into_iter()
        .map(|(k, v)| (k, json!({"from": v["a"], "to": v["b"]})))
        .collect();
    let events = if version_to > version_from {
        let max = usize::try_from(version_to - version_from).unwrap_or(MAX_EVENTS_READ);
        reader
            .events(
                entity,
                version_from + 1,
                Some(version_to),
                max.min(MAX_EVENTS_READ),
            )
            .await?
            .0
    } else {
        Vec::new()
    };
    Ok(json!({
        "entity_id": entity,
        "from": from,
        "to": to,
        "version_from": version_from,
        "version_to": version_to,
        "added": added,
        "removed": removed,
        "changed": changed,
        "events": events.iter().map(brief).collect::<Vec<_>>(),
    }))
}

async fn compare_entities(
    reader: &Reader<'_>,
    args: &Map<String, Value>,
) -> Result<Value, ToolError> {
    let a = required_text(args, "entity_a")?;
    let b = required_text(args, "entity_b")?;
    let as_of = text(args, "as_of")?;
    let summary = |id: &str, state: &Option<Value>| match state {
        Some(s) => json!({
            "entity_id": id, "exists": true, "version": s["version"],
            "event_count": s["event_count"], "last_updated": s["last_updated"],
            "state": s["current_state"],
        }),
        None => json!({"entity_id": id, "exists": false, "version": 0, "event_count": 0,
            "last_updated": null, "state": null}),
    };
    let state_a = reader.state(a, as_of).await?;
    let state_b = reader.state(b, as_of).await?;
    let StateDiff {
        only_a,
        only_b,
        different,
        same,
    } = diff(
        state_a
            .as_ref()
            .map_or(&Value::Null, |s| &s["current_state"]),
        state_b
            .as_ref()
            .map_or(&Value::Null, |s| &s["current_state"]),
    );
    Ok(json!({
        "a": summary(a, &state_a),
        "b": summary(b, &state_b),
        "only_in_a": only_a,
        "only_in_b": only_b,
        "different": different,
        "same": same,
    }))
}

async fn explain_entity(
    reader: &Reader<'_>,
    args: &Map<String, Value>,
) -> Result<Value, ToolError> {
    let entity = required_text(args, "entity_id")?;
    let (events, truncated) = reader.events(entity, 1, None, MAX_EVENTS_READ).await?;
    Ok(explain(entity, &events, truncated))
}

/// An entity's history as facts (pure, for tests).
pub fn explain(entity: &str, events: &[Value], truncated: bool) -> Value {
    #[derive(Default)]
    struct Key {
        first_set: u64,
        last_changed: u64,
        changes: u64,
    }
    let mut types: BTreeMap<String, u64> = BTreeMap::new();
    let mut keys: BTreeMap<String, Key> = BTreeMap::new();
    let mut state = Value::Null;
    for event in events {
        let version = event["version"].as_u64().unwrap_or(0);
        *types
            .entry(event["event_type"].as_str().unwrap_or_default().to_owned())
            .or_default() += 1;
        let before = state.clone();
        fold(&mut state, &event["payload"]);
        let StateDiff {
            only_a: removed,
            only_b: added,
            different,
            ..
        } = diff(&before, &state);
        for key in different.keys().chain(added.keys()).chain(removed.keys()) {
            let entry = keys.entry(key.clone()).or_insert_with(|| Key {
                first_set: version,
                ..Key::default()
            });
            entry.last_changed = version;
            entry.changes += 1;
        }
    }
    let current = match &state {
        Value::Object(map) => map.clone(),
        Value::Null => Map::new(),
        other => Map::from_iter([("$".to_owned(), other.clone())]),
    };
    let mut event_types: Vec<Value> = types
        .into_iter()
        .map(|(event_type, count)| json!({"event_type": event_type, "count": count}))
        .collect();
    event_types.sort_by(|a, b| b["count"].as_u64().cmp(&a["count"].as_u64()));
    json!({
        "entity_id": entity,
        "event_count": events.len(),
        "version": events.last().map_or(json!(0), |e| e["version"].clone()),
        "first_event": events.first().map(brief),
        "last_event": events.last().map(brief),
        "event_types": event_types,
        "keys": keys.into_iter().map(|(key, k)| json!({
            "key": key,
            "first_set_version": k.first_set,
            "last_changed_version": k.last_changed,
            "changes": k.changes,
            "present": current.contains_key(&key),
            "current": current.get(&key).cloned().unwrap_or(Value::Null),
        })).collect::<Vec<_>>(),
        "truncated": truncated,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(version: u64, event_type: &str, payload: Value) -> Value {
        json!({"version": version, "position": version * 10, "event_type": event_type,
            "timestamp": format!("2026-11-22T10:00:0{version}Z"), "payload": payload})
    }

    #[test]
    fn the_fold_matches_the_servers_rule() {
        let mut state = Value::Null;
        fold(&mut state, &json!({"a": 1, "b": null}));
        assert_eq!(state, json!({"a": 1}));
        fold(&mut state, &json!({"b": 2, "a": null}));
        assert_eq!(state, json!({"b": 2}));
        fold(&mut state, &json!([1, 2]));
        assert_eq!(state, json!([1, 2]));
        fold(&mut state, &json!({"c": 3}));
        assert_eq!(state, json!({"c": 3}));
    }

    #[test]
    fn diffs_name_every_key_once() {
        let StateDiff {
            only_a,
            only_b,
            different,
            same,
        } = diff(
            &json!({"x": 1, "y": 2, "z": 3}),
            &json!({"y": 2, "z": 4, "w": 5}),
        );
        assert_eq!(Value::Object(only_a), json!({"x": 1}));
        assert_eq!(Value::Object(only_b), json!({"w": 5}));
        assert_eq!(Value::Object(different), json!({"z": {"a": 3, "b": 4}}));
        assert_eq!(same, ["y"]);
        let StateDiff { only_b, .. } = diff(&Value::Null, &json!(7));
        assert_eq!(Value::Object(only_b), json!({"$": 7}));
    }

    #[test]
    fn an_explanation_counts_types_and_follows_keys() {
        let events = [
            event(1, "order.placed", json!({"status": "new", "total": 10})),
            event(2, "order.paid", json!({"status": "paid"})),
            event(3, "order.noted", json!({"total": 10, "note": "gift"})),
            event(4, "order.paid", json!({"note": null})),
        ];
        let facts = explain("o-1", &events, false);
        assert_eq!(facts["event_count"], 4);
        assert_eq!(facts["version"], 4);
        assert_eq!(facts["first_event"]["event_type"], "order.placed");
        assert_eq!(facts["last_event"]["version"], 4);
        assert_eq!(
            facts["event_types"][0],
            json!({"event_type": "order.paid", "count": 2})
        );
        let keys = facts["keys"].as_array().unwrap();
        let key = |name: &str| keys.iter().find(|k| k["key"] == name).unwrap().clone();
        assert_eq!(key("status")["changes"], 2);
        assert_eq!(key("status")["last_changed_version"], 2);
        assert_eq!(key("status")["current"], "paid");
        // Setting the same value again is not a change.
        assert_eq!(key("total")["changes"], 1);
        assert_eq!(key("note")["first_set_version"], 3);
        assert_eq!(key("note")["present"], false);
        assert_eq!(key("note")["changes"], 2);
    }

    #[test]
    fn a_timeline_says_what_each_event_set_and_removed() {
        let events = [
            event(1, "a", json!({"x": 1, "y": null})),
            event(2, "b", json!("replaced")),
        ];
        let t = timeline("e", &events, true);
        assert_eq!(t["count"], 2);
        assert_eq!(t["has_more"], true);
        assert_eq!(t["timeline"][0]["keys_set"], json!(["x"]));
        assert_eq!(t["timeline"][0]["keys_removed"], json!(["y"]));
        assert_eq!(t["timeline"][1]["replaced_state"], true);
    }

    #[test]
    fn schemas_are_objects_with_their_required_members_declared() {
        for which in [
            Derived::QuickStats,
            Derived::SampleEvents,
            Derived::EventTimeline,
            Derived::AnalyzeChanges,
            Derived::CompareEntities,
            Derived::ExplainEntity,
        ] {
            for schema in [input_schema(which), output_schema(which)] {
                assert_eq!(schema["type"], "object");
                for name in schema["required"].as_array().unwrap() {
                    let name = name.as_str().unwrap();
                    assert!(
                        schema["properties"].get(name).is_some(),
                        "{which:?}: {name}"
                    );
                }
            }
        }
    }
}
