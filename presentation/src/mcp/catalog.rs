//! The MCP tools: one table, [`TOOLS`], and what each tool's input and output schemas are.
//!
//! Most tools are one REST route ([`Action::Route`]): their input schema is built from the
//! route's path parameters, query parameters and JSON body as the OpenAPI document declares
//! them, their output schema is the route's success answer, and a call is that request. So a
//! tool's arguments, checks and answer are the route's, by construction, and a route that
//! changes changes its tool with it. The tools an agent has and the REST API has not
//! ([`Action::Derived`]) read through the same routes and compute their answer from what they
//! read ([`super::derived`]).
//!
//! Who sees a tool: the route's permission decides (a caller whose role lacks it does not see
//! the tool, and read-only mode keeps only tools whose routes need `read`).

use std::collections::BTreeSet;
use std::sync::OnceLock;

use allsource_domain::Permission;
use serde_json::{Map, Value, json};

use crate::Access;
use crate::routes::{Verb, served_routes};

/// What a tool does when called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// One REST request. Path parameters come from the arguments of the same name; the
    /// others are the query string (`GET`) or the JSON body.
    Route {
        verb: Verb,
        path: &'static str,
        /// The path parameter that names a tenant: it defaults to the caller's own tenant.
        own_tenant: Option<&'static str>,
    },
    /// Computed from one or more read routes ([`super::derived`]).
    Derived(Derived),
}

/// The tools computed from reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Derived {
    QuickStats,
    SampleEvents,
    EventTimeline,
    AnalyzeChanges,
    CompareEntities,
    ExplainEntity,
}

/// One tool.
#[derive(Debug, Clone, Copy)]
pub struct ToolSpec {
    pub name: &'static str,
    pub title: &'static str,
    pub description: &'static str,
    pub action: Action,
}

const fn route(
    name: &'static str,
    title: &'static str,
    description: &'static str,
    verb: Verb,
    path: &'static str,
) -> ToolSpec {
    ToolSpec {
        name,
        title,
        description,
        action: Action::Route {
            verb,
            path,
            own_tenant: None,
        },
    }
}

const fn derived(
    name: &'static str,
    title: &'static str,
    description: &'static str,
    which: Derived,
) -> ToolSpec {
    ToolSpec {
        name,
        title,
        description,
        action: Action::Derived(which),
    }
}

const fn tenant_route(
    name: &'static str,
    title: &'static str,
    description: &'static str,
    path: &'static str,
) -> ToolSpec {
    ToolSpec {
        name,
        title,
        description,
        action: Action::Route {
            verb: Verb::Get,
            path,
            own_tenant: Some("id"),
        },
    }
}

use Verb::{Get, Post};

/// Every tool, in the order `tools/list` gives them.
pub const TOOLS: &[ToolSpec] = &[
    // Discover.
    route(
        "get_stats",
        "Store statistics",
        "Totals of the caller's tenant: events, entities, event types, last position and \
         storage (GET /api/v1/stats).",
        Get,
        "/api/v1/stats",
    ),
    derived(
        "quick_stats",
        "Quick overview",
        "A one-call overview for getting one's bearings: totals, the most frequent event \
         types and the most recently changed entities.",
        Derived::QuickStats,
    ),
    derived(
        "sample_events",
        "Sample events",
        "The newest events (optionally of one type, or with a type prefix), to learn what \
         payloads look like before querying.",
        Derived::SampleEvents,
    ),
    route(
        "list_event_types",
        "List event types",
        "Every event type of the tenant with its count (GET /api/v1/event-types).",
        Get,
        "/api/v1/event-types",
    ),
    route(
        "list_entities",
        "List entities",
        "Entities (streams), most recently changed first, with their event count, version and \
         last event (GET /api/v1/entities). Page with `offset`.",
        Get,
        "/api/v1/entities",
    ),
    route(
        "list_schemas",
        "List schemas",
        "The registered JSON Schemas of event types, by subject (GET /api/v1/schemas).",
        Get,
        "/api/v1/schemas",
    ),
    // Search.
    route(
        "query_events",
        "Query events",
        "Events matching filters (entity, type, type prefix, payload fields, time range), in \
         position order (GET /api/v1/events/query). Page with `from_position` = the answer's \
         `next_position`.",
        Get,
        "/api/v1/events/query",
    ),
    route(
        "query_dsl",
        "Query with the DSL",
        "A query in the JSON query DSL: filters as conditions, projections, grouping and \
         aggregates (POST /api/v1/query).",
        Post,
        "/api/v1/query",
    ),
    route(
        "sql",
        "SQL query",
        "A read-only SQL SELECT over the table `events` of the caller's tenant (POST \
         /api/v1/sql).",
        Post,
        "/api/v1/sql",
    ),
    // Drill down.
    route(
        "get_event",
        "Get an event",
        "One event by its id (GET /api/v1/events/{event_id}).",
        Get,
        "/api/v1/events/{event_id}",
    ),
    route(
        "reconstruct_state",
        "Entity state",
        "An entity's state folded from its events, now or `as_of` a time, optionally with the \
         history (GET /api/v1/entities/{entity_id}/state).",
        Get,
        "/api/v1/entities/{entity_id}/state",
    ),
    route(
        "get_snapshot",
        "Latest snapshot",
        "The newest stored snapshot of an entity's state (GET \
         /api/v1/snapshots/{entity_id}/latest).",
        Get,
        "/api/v1/snapshots/{entity_id}/latest",
    ),
    derived(
        "event_timeline",
        "Event timeline",
        "An entity's events as a timeline: version, position, time, type and the state keys \
         each event set or removed.",
        Derived::EventTimeline,
    ),
    derived(
        "analyze_changes",
        "Analyze changes",
        "How an entity's state changed between two times: keys added, removed and changed, \
         and the events in between.",
        Derived::AnalyzeChanges,
    ),
    derived(
        "compare_entities",
        "Compare entities",
        "Two entities side by side: their versions, event counts and the differences between \
         their current (or `as_of`) states.",
        Derived::CompareEntities,
    ),
    derived(
        "explain_entity",
        "Explain an entity",
        "An entity's history as structured facts: first and last event, counts by type, and \
         each state key's changes (when it was first set, last changed, how often).",
        Derived::ExplainEntity,
    ),
    // Mutate.
    route(
        "ingest_event",
        "Append an event",
        "Appends one event to an entity's stream (POST /api/v1/events). Give an `id` to make \
         retries idempotent and `expected_version` for optimistic concurrency.",
        Post,
        "/api/v1/events",
    ),
    route(
        "ingest_batch",
        "Append a batch",
        "Appends several events atomically: all or none (POST /api/v1/events/batch).",
        Post,
        "/api/v1/events/batch",
    ),
    route(
        "register_schema",
        "Register a schema",
        "Registers a new version of a subject's JSON Schema (POST /api/v1/schemas).",
        Post,
        "/api/v1/schemas",
    ),
    route(
        "validate_payload",
        "Validate a payload",
        "Checks a payload against a subject's schema without appending anything (POST \
         /api/v1/schemas/validate).",
        Post,
        "/api/v1/schemas/validate",
    ),
    route(
        "create_projection",
        "Create a projection",
        "Defines a projection that folds events into keyed state (POST /api/v1/projections).",
        Post,
        "/api/v1/projections",
    ),
    route(
        "rebuild_projection",
        "Rebuild a projection",
        "Rebuilds a projection's state from the log (POST /api/v1/projections/{name}/rebuild).",
        Post,
        "/api/v1/projections/{name}/rebuild",
    ),
    // Analytics.
    route(
        "frequency",
        "Event frequency",
        "Event counts per time bucket (GET /api/v1/analytics/frequency).",
        Get,
        "/api/v1/analytics/frequency",
    ),
    route(
        "summary",
        "Summary",
        "Counts, first and last times, by type and entity (GET /api/v1/analytics/summary).",
        Get,
        "/api/v1/analytics/summary",
    ),
    route(
        "correlation",
        "Correlation",
        "How often two event types occur on the same entity, and in which order (GET \
         /api/v1/analytics/correlation).",
        Get,
        "/api/v1/analytics/correlation",
    ),
    route(
        "time_series",
        "Time series",
        "An aggregate of a payload field per time bucket (POST /api/v1/analytics/time-series).",
        Post,
        "/api/v1/analytics/time-series",
    ),
    route(
        "funnel",
        "Funnel",
        "How many entities pass through a sequence of event types, step by step (POST \
         /api/v1/analytics/funnel).",
        Post,
        "/api/v1/analytics/funnel",
    ),
    route(
        "cohorts",
        "Cohorts",
        "Retention of entities grouped by the period of their first event (POST \
         /api/v1/analytics/cohorts).",
        Post,
        "/api/v1/analytics/cohorts",
    ),
    route(
        "trend",
        "Trend",
        "The trend of a count or aggregate over time: direction and slope (POST \
         /api/v1/analytics/trend).",
        Post,
        "/api/v1/analytics/trend",
    ),
    route(
        "anomalies",
        "Anomalies",
        "Time buckets whose value departs from the rest (POST /api/v1/analytics/anomalies).",
        Post,
        "/api/v1/analytics/anomalies",
    ),
    // Operations.
    route(
        "health",
        "Health",
        "Whether the server is up, its version and storage backend (GET /health).",
        Get,
        "/health",
    ),
    route(
        "storage_stats",
        "Storage statistics",
        "The store's totals with its storage: files, bytes, durability (GET /api/v1/stats).",
        Get,
        "/api/v1/stats",
    ),
    route(
        "compaction_stats",
        "Compaction statistics",
        "What compaction has done and would do (GET /api/v1/compaction/stats).",
        Get,
        "/api/v1/compaction/stats",
    ),
    route(
        "audit_log",
        "Audit log",
        "Security-relevant actions of the tenant, oldest first (GET /api/v1/audit). Page \
         with `after` = the answer's `next_cursor`.",
        Get,
        "/api/v1/audit",
    ),
    route(
        "backup_list",
        "List backups",
        "The store's backups and running backup jobs (GET /api/v1/backups).",
        Get,
        "/api/v1/backups",
    ),
    route(
        "backup_create",
        "Create a backup",
        "Starts a full or incremental backup of the whole store (POST /api/v1/backups).",
        Post,
        "/api/v1/backups",
    ),
    // Tenants.
    tenant_route(
        "tenant_usage",
        "Tenant usage",
        "A tenant's usage: events, storage, keys and quotas in use (GET \
         /api/v1/tenants/{id}/stats). `id` defaults to the caller's tenant.",
        "/api/v1/tenants/{id}/stats",
    ),
    tenant_route(
        "tenant_quotas",
        "Tenant quotas",
        "A tenant's quotas (GET /api/v1/tenants/{id}/quotas). `id` defaults to the caller's \
         tenant.",
        "/api/v1/tenants/{id}/quotas",
    ),
];

/// The tool of that name.
pub fn tool(name: &str) -> Option<&'static ToolSpec> {
    TOOLS.iter().find(|t| t.name == name)
}

impl ToolSpec {
    /// The permission the caller needs: the route's, or `read` for the derived tools (which
    /// only read). `None`: any caller, even anonymous (`health`).
    pub fn permission(&self) -> Option<Permission> {
        match self.action {
            Action::Derived(_) => Some(Permission::Read),
            Action::Route { verb, path, .. } => match route_access(verb, path) {
                Some(Access::Requires(permission)) => Some(permission),
                Some(Access::Public | Access::Authenticated) | None => None,
            },
        }
    }

    /// Whether the tool changes anything: a route other than `GET` that needs more than
    /// `read` (queries and analyses sent as `POST` only read).
    pub fn writes(&self) -> bool {
        match self.action {
            Action::Derived(_) => false,
            Action::Route { verb, .. } => {
                verb != Verb::Get && !matches!(self.permission(), Some(Permission::Read) | None)
            }
        }
    }

    /// The JSON Schema of the tool's arguments.
    pub fn input_schema(&self) -> Map<String, Value> {
        match self.action {
            Action::Route {
                verb,
                path,
                own_tenant,
            } => route_shape(verb, path, own_tenant).input,
            Action::Derived(which) => object(super::derived::input_schema(which)),
        }
    }

    /// The JSON Schema of the tool's structured result (always an object).
    pub fn output_schema(&self) -> Map<String, Value> {
        match self.action {
            Action::Route { verb, path, .. } => route_shape(verb, path, None).output,
            Action::Derived(which) => object(super::derived::output_schema(which)),
        }
    }
}

fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

fn route_access(verb: Verb, path: &str) -> Option<Access> {
    served_routes()
        .into_iter()
        .find(|r| r.verb == verb && r.path == path)
        .map(|r| r.access)
}

/// What a route tool's arguments are, and where each goes.
#[derive(Debug, Clone, Default)]
pub struct RouteShape {
    pub input: Map<String, Value>,
    pub output: Map<String, Value>,
    pub path_params: Vec<String>,
    pub query_params: BTreeSet<String>,
    /// The body's members, when the body is an object; `None` when the route takes no body.
    pub body_members: Option<BTreeSet<String>>,
    /// The body is not an object of known members: it is the `body` argument as a whole.
    pub body_whole: bool,
    /// The answer is not an object: the structured result holds it as `result`.
    pub wrapped: bool,
}

/// The OpenAPI document as JSON, parsed once.
fn document() -> &'static Value {
    static DOCUMENT: OnceLock<Value> = OnceLock::new();
    DOCUMENT.get_or_init(|| {
        serde_json::from_str(crate::openapi::document_json()).unwrap_or(Value::Null)
    })
}

/// Follows a `$ref` into the document's components.
fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema.get("$ref").and_then(Value::as_str) {
        Some(reference) => reference
            .strip_prefix("#/components/schemas/")
            .and_then(|name| doc["components"]["schemas"].get(name))
            .unwrap_or(schema),
        None => schema,
    }
}

/// The names of the components a schema refers to, transitively.
fn referenced(doc: &Value, schema: &Value, into: &mut BTreeSet<String>) {
    match schema {
        Value::Object(map) => {
            if let Some(name) = map
                .get("$ref")
                .and_then(Value::as_str)
                .and_then(|r| r.strip_prefix("#/components/schemas/"))
                && into.insert(name.to_owned())
                && let Some(target) = doc["components"]["schemas"].get(name)
            {
                referenced(doc, target, into);
            }
            for value in map.values() {
                referenced(doc, value, into);
            }
        }
        Value::Array(items) => items.iter().for_each(|v| referenced(doc, v, into)),
        _ => {}
    }
}

/// A schema made standalone: `$ref`s point into its own `$defs`.
fn standalone(doc: &Value, mut schema: Map<String, Value>) -> Map<String, Value> {
    let mut names = BTreeSet::new();
    referenced(doc, &Value::Object(schema.clone()), &mut names);
    if !names.is_empty() {
        let defs: Map<String, Value> = names
            .into_iter()
            .filter_map(|n| doc["components"]["schemas"].get(&n).map(|s| (n, s.clone())))
            .collect();
        schema.insert("$defs".into(), Value::Object(defs));
    }
    let text = Value::Object(schema)
        .to_string()
        .replace("\"#/components/schemas/", "\"#/$defs/");
    object(serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Whether every value a schema admits is an object: `"type": "object"`, or a `oneOf` /
/// `anyOf` whose every branch is.
fn is_object(doc: &Value, schema: &Map<String, Value>) -> bool {
    if schema.get("type") == Some(&json!("object")) {
        return true;
    }
    ["oneOf", "anyOf"].iter().any(|key| {
        schema
            .get(*key)
            .and_then(Value::as_array)
            .is_some_and(|branches| {
                !branches.is_empty()
                    && branches.iter().all(|b| {
                        resolve(doc, b)
                            .as_object()
                            .is_some_and(|b| is_object(doc, b))
                    })
            })
    })
}

/// The shape of a route tool, from the OpenAPI document.
pub fn route_shape(verb: Verb, path: &str, own_tenant: Option<&str>) -> RouteShape {
    let doc = document();
    let method = match verb {
        Verb::Get => "get",
        Verb::Post => "post",
        Verb::Put => "put",
        Verb::Delete => "delete",
    };
    let operation = &doc["paths"][crate::openapi::openapi_path(path)][method];
    let mut shape = RouteShape::default();
    let mut properties = Map::new();
    let mut required: Vec<Value> = Vec::new();
    for parameter in operation["parameters"].as_array().into_iter().flatten() {
        let Some(name) = parameter["name"].as_str() else {
            continue;
        };
        let mut schema = parameter["schema"].clone();
        if let (Some(description), Value::Object(map)) =
            (parameter["description"].as_str(), &mut schema)
        {
            map.entry("description")
                .or_insert_with(|| Value::String(description.to_owned()));
        }
        match parameter["in"].as_str() {
            Some("path") => {
                shape.path_params.push(name.to_owned());
                if own_tenant == Some(name) {
                    schema = json!({"type": "string",
                        "description": "A tenant id; the caller's own tenant when absent."});
                } else {
                    required.push(Value::String(name.to_owned()));
                }
            }
            Some("query") => {
                shape.query_params.insert(name.to_owned());
                if parameter["required"].as_bool() == Some(true) {
                    required.push(Value::String(name.to_owned()));
                }
            }
            _ => continue,
        }
        properties.insert(name.to_owned(), schema);
    }
    if let Some(body) =
        operation["requestBody"]["content"]["application/json"]["schema"].as_object()
    {
        let body = Value::Object(body.clone());
        let target = resolve(doc, &body);
        match target["properties"].as_object() {
            Some(members) if target["type"] == "object" => {
                shape.body_members = Some(members.keys().cloned().collect());
                for (name, schema) in members {
                    properties.insert(name.clone(), schema.clone());
                }
                for name in target["required"].as_array().into_iter().flatten() {
                    required.push(name.clone());
                }
            }
            _ => {
                shape.body_whole = true;
                properties.insert("body".into(), body);
                required.push(Value::String("body".into()));
            }
        }
    }
    let mut input = Map::new();
    input.insert("type".into(), json!("object"));
    input.insert("properties".into(), Value::Object(properties));
    if !required.is_empty() {
        input.insert("required".into(), Value::Array(required));
    }
    input.insert("additionalProperties".into(), json!(false));
    shape.input = standalone(doc, input);

    let answer = operation["responses"]
        .as_object()
        .and_then(|responses| {
            responses
                .iter()
                .filter(|(status, _)| status.starts_with('2'))
                .find_map(|(_, r)| r["content"]["application/json"]["schema"].as_object())
        })
        .cloned();
    // The root is the answer's own schema, not a `$ref` to it: MCP clients look for
    // `"type": "object"` at the root of an output schema.
    let answer = answer.map(|schema| object(resolve(doc, &Value::Object(schema)).clone()));
    let output = match answer {
        Some(schema) if is_object(doc, &schema) => {
            let mut schema = schema;
            schema.insert("type".into(), json!("object"));
            schema
        }
        // MCP's structured content is an object: anything else is wrapped as `result`.
        Some(schema) => {
            shape.wrapped = true;
            object(json!({
                "type": "object",
                "properties": {"result": schema},
                "required": ["result"],
            }))
        }
        None => object(json!({"type": "object"})),
    };
    shape.output = standalone(doc, output);
    shape
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_tool_names_a_served_route() {
        for tool in TOOLS {
            if let Action::Route { verb, path, .. } = tool.action {
                assert!(
                    route_access(verb, path).is_some(),
                    "{}: {verb:?} {path} is not served",
                    tool.name
                );
            }
        }
    }

    #[test]
    fn tool_names_are_unique_and_snake_case() {
        let mut seen = BTreeSet::new();
        for tool in TOOLS {
            assert!(seen.insert(tool.name), "{} twice", tool.name);
            assert!(
                tool.name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c == '_'),
                "{}",
                tool.name
            );
        }
    }

    #[test]
    fn the_query_tool_takes_the_routes_query_parameters() {
        let shape = route_shape(Get, "/api/v1/events/query", None);
        for name in [
            "entity_id",
            "event_type",
            "payload_filter",
            "limit",
            "from_position",
        ] {
            assert!(shape.query_params.contains(name), "{name}: {shape:?}");
            assert!(shape.input["properties"].get(name).is_some(), "{name}");
        }
        assert_eq!(shape.input["additionalProperties"], json!(false));
        assert_eq!(
            shape.output.get("type"),
            Some(&json!("object")),
            "{:?}",
            shape.output
        );
    }

    #[test]
    fn a_body_tool_takes_the_bodys_members_and_its_path_parameters() {
        let shape = route_shape(Post, "/api/v1/events", None);
        let members = shape.body_members.expect("an object body");
        assert!(members.contains("entity_id") && members.contains("payload"));
        let required = shape.input["required"].as_array().expect("required");
        assert!(required.contains(&json!("entity_id")), "{required:?}");
        let state = route_shape(Get, "/api/v1/entities/{entity_id}/state", None);
        assert_eq!(state.path_params, ["entity_id"]);
        assert!(
            state.input["required"]
                .as_array()
                .is_some_and(|r| r.contains(&json!("entity_id")))
        );
    }

    #[test]
    fn schemas_are_standalone() {
        for tool in TOOLS {
            for schema in [tool.input_schema(), tool.output_schema()] {
                let text = Value::Object(schema.clone()).to_string();
                assert!(!text.contains("#/components/"), "{}: {text}", tool.name);
                assert_eq!(
                    schema.get("type"),
                    Some(&json!("object")),
                    "{}: {text}",
                    tool.name
                );
                let mut refs = BTreeSet::new();
                collect_refs(&Value::Object(schema.clone()), &mut refs);
                for r in refs {
                    let name = r.strip_prefix("#/$defs/").expect("a local ref");
                    assert!(
                        schema.get("$defs").and_then(|d| d.get(name)).is_some(),
                        "{}: {r}",
                        tool.name
                    );
                }
            }
        }
    }

    fn collect_refs(value: &Value, into: &mut BTreeSet<String>) {
        match value {
            Value::Object(map) => {
                if let Some(r) = map.get("$ref").and_then(Value::as_str) {
                    into.insert(r.to_owned());
                }
                map.values().for_each(|v| collect_refs(v, into));
            }
            Value::Array(items) => items.iter().for_each(|v| collect_refs(v, into)),
            _ => {}
        }
    }

    #[test]
    fn answers_that_are_objects_are_not_wrapped() {
        for tool in TOOLS {
            if let Action::Route { verb, path, .. } = tool.action {
                let shape = route_shape(verb, path, None);
                assert!(!shape.wrapped, "{}: {:?}", tool.name, shape.output);
            }
        }
    }

    #[test]
    fn writing_tools_are_the_ones_that_need_more_than_read() {
        let writes: BTreeSet<&str> = TOOLS
            .iter()
            .filter(|t| t.writes())
            .map(|t| t.name)
            .collect();
        for name in [
            "ingest_event",
            "ingest_batch",
            "register_schema",
            "create_projection",
            "rebuild_projection",
            "backup_create",
        ] {
            assert!(writes.contains(name), "{name} writes: {writes:?}");
        }
        for name in [
            "query_events",
            "sql",
            "query_dsl",
            "explain_entity",
            "funnel",
            "health",
        ] {
            assert!(!writes.contains(name), "{name} only reads");
        }
    }
}
