//! The OpenAPI 3.1 document of the API, built from the route table.
//!
//! Routes are declared once, in their handler modules' `routes()` ([`crate::routes`]); the
//! document is derived from those declarations, so a served route cannot be missing from it
//! and a documented operation cannot be unserved:
//!
//! - **paths and methods**: every [`Route`] of [`served_routes`]; path parameters come from the
//!   path pattern (`{event_id}`; a tail `{*file}` is the parameter `file`).
//! - **text**: the operation's description is the route's section of `docs/API.md` (the user's
//!   reference, whose headings a test already holds equal to the served routes), so the page
//!   and the document cannot disagree; the summary is [`Route::summary`] when declared.
//! - **tag**: the path's first segment after `/api/v1/` (`events`, `tenants`, ...), or its
//!   first segment for the others (`health`, `docs`).
//! - **security**: routes that are not public accept a bearer token (a JWT or an API key) or an
//!   `X-API-Key` header.
//! - **bodies, answers, query parameters**: the types declared with [`Route::body`],
//!   [`Route::returns`] and [`Route::params`] (`utoipa::ToSchema` / `IntoParams` derives),
//!   mostly derived on the very types the handlers read and write, so the document cannot
//!   drift from the code. A JSON answer that really is arbitrary JSON is declared so
//!   ([`Route::returns_any_json`]). A test refuses a route that reads a JSON body or answers
//!   JSON without declaring its type (undeclared, they would be any JSON object or value).
//! - **problem answers** (`application/problem+json`, the one [`Problem`] schema), derived from
//!   the declaration: `400` always (a route refuses unknown query parameters), `500` and `503`
//!   always, `401`/`403` unless public, `429` unless never limited, `404` when a path parameter
//!   names a thing, `413`/`415` when a body is read, and the route's own [`Route::problems`].
//!
//! The document is built once per process and served by [`crate::handlers::docs`].

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;

use utoipa::openapi::path::{
    HttpMethod, Operation, OperationBuilder, ParameterBuilder, ParameterIn, PathItem,
};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::schema::{ObjectBuilder, Schema, SchemaType, Type};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::tag::TagBuilder;
use utoipa::openapi::{
    ComponentsBuilder, ContentBuilder, InfoBuilder, OpenApi, OpenApiBuilder, PathsBuilder, Ref,
    RefOr, Required, ResponseBuilder, SecurityRequirement,
};
use utoipa::{PartialSchema, ToSchema};

use crate::access::Access;
use crate::routes::{Answer, Route, Verb, served_routes};
use allsource_application::use_cases::RequestKind;

/// The user's API reference: each route's section is its operation's description.
const API_REFERENCE: &str = include_str!("../../docs/API.md");

/// Where the document is served.
pub const DOCUMENT_PATH: &str = "/api-docs/openapi.json";

/// An RFC 9457 problem document, as every error of the API is answered
/// (`Content-Type: application/problem+json`). Routes add extension members (`entity_id`,
/// `current_version`, `policy_id`, ...).
#[derive(ToSchema)]
#[allow(dead_code)] // documentation only: `ApiError` writes the documents.
pub struct Problem {
    /// `https://allsource.dev/problems/<code with dashes>`.
    #[schema(rename = "type")]
    type_uri: String,
    /// Fixed per `error` code.
    title: String,
    /// The HTTP status.
    status: u16,
    /// What went wrong this time (generic for a 5xx).
    detail: String,
    /// The stable snake_case code clients branch on (`validation_failed`, `not_found`, ...).
    error: String,
    /// Every field-level problem, with the field's path as the client wrote it.
    #[schema(nullable = false)]
    errors: Option<Vec<FieldProblem>>,
}

/// One field-level problem of a `validation_failed` answer.
#[derive(ToSchema)]
#[allow(dead_code)] // documentation only
pub struct FieldProblem {
    /// The field's path (`events[3].entity_id`).
    field: String,
    message: String,
}

/// The document, built once (the route table does not change while the process runs).
pub fn document_json() -> &'static str {
    static DOCUMENT: OnceLock<String> = OnceLock::new();
    DOCUMENT.get_or_init(|| {
        // Serializing the document's own types cannot fail; should it, the test would.
        document().to_pretty_json().unwrap_or_default()
    })
}

/// The OpenAPI document of every served route.
pub fn document() -> OpenApi {
    let sections = reference_sections();
    let mut schemas: Vec<(String, RefOr<Schema>)> = vec![
        (Problem::name().into_owned(), Problem::schema()),
        (FieldProblem::name().into_owned(), FieldProblem::schema()),
    ];
    let mut paths: BTreeMap<String, Vec<(HttpMethod, Operation)>> = BTreeMap::new();
    let mut tags = BTreeSet::new();
    for route in served_routes() {
        let tag = tag_of(route.path);
        tags.insert(tag.clone());
        let operation = operation(&route, tag, &sections, &mut schemas);
        paths
            .entry(openapi_path(route.path))
            .or_default()
            .push((method_of(route.verb), operation));
    }
    let mut builder = PathsBuilder::new();
    for (path, operations) in paths {
        let mut item: Option<PathItem> = None;
        for (method, operation) in operations {
            item = Some(match item {
                None => PathItem::new(method, operation),
                Some(mut item) => {
                    item.merge_operations(PathItem::new(method, operation));
                    item
                }
            });
        }
        if let Some(item) = item {
            builder = builder.path(path, item);
        }
    }
    let components = ComponentsBuilder::new()
        .schemas_from_iter(schemas)
        .security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An access token from `POST /api/v1/auth/login`, or an API key \
                         (`ask_...`).",
                    ))
                    .build(),
            ),
        )
        .security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-API-Key",
                "An API key (`ask_...`).",
            ))),
        )
        .build();
    OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("AllSource")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some(
                    "The REST API of AllSource, an event store. Generated from the server's \
                     route table; the text of each operation is its section of docs/API.md.",
                ))
                .build(),
        )
        .paths(builder.build())
        .components(Some(components))
        .tags(Some(
            tags.into_iter().map(|t| TagBuilder::new().name(t).build()),
        ))
        .build()
}

/// The operation of one route.
fn operation(
    route: &Route,
    tag: String,
    sections: &BTreeMap<(String, String), String>,
    schemas: &mut Vec<(String, RefOr<Schema>)>,
) -> Operation {
    let doc = route.doc;
    let description = sections
        .get(&(route.verb.as_str().to_owned(), route.path.to_owned()))
        .cloned();
    let mut builder = OperationBuilder::new()
        .operation_id(Some(operation_id(route)))
        .tag(tag)
        .summary(doc.summary)
        .description(description);

    for name in path_parameters(route.path) {
        builder = builder.parameter(
            ParameterBuilder::new()
                .name(name)
                .parameter_in(ParameterIn::Path)
                .required(Required::True)
                .schema(Some(string_schema())),
        );
    }
    if let Some(params) = doc.params {
        for parameter in (params.0)() {
            builder = builder.parameter(parameter);
        }
    }

    if doc.takes_body {
        let schema = match doc.body {
            Some(body) => component(body, schemas),
            None => RefOr::T(Schema::Object(
                ObjectBuilder::new().schema_type(Type::Object).build(),
            )),
        };
        builder = builder.request_body(Some(
            RequestBodyBuilder::new()
                .content(
                    "application/json",
                    ContentBuilder::new().schema(Some(schema)).build(),
                )
                .required(Some(if doc.body_optional {
                    Required::False
                } else {
                    Required::True
                }))
                .build(),
        ));
    }

    let success_schema = match doc.response {
        Answer::Typed(response) => component(response, schemas),
        // Text, a page, an asset, a stream of events: not JSON.
        Answer::Undeclared if !doc.media_type.contains("json") => string_schema(),
        Answer::Undeclared | Answer::AnyJson => any_value(),
    };
    for status in doc.success {
        let mut response = ResponseBuilder::new().description(success_description(*status));
        if has_content(*status) {
            response = response.content(
                doc.media_type,
                ContentBuilder::new()
                    .schema(Some(success_schema.clone()))
                    .build(),
            );
        }
        builder = builder.response(status.to_string(), response.build());
    }
    for status in problem_statuses(route) {
        builder = builder.response(
            status.to_string(),
            ResponseBuilder::new()
                .description(problem_description(status))
                .content(
                    "application/problem+json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("Problem")))
                        .build(),
                )
                .build(),
        );
    }
    if !matches!(route.access, Access::Public) {
        builder = builder
            .security(SecurityRequirement::new("bearer", Vec::<String>::new()))
            .security(SecurityRequirement::new("api_key", Vec::<String>::new()));
    }
    builder.build()
}

/// A reference to `schema`'s component, registering it and what it refers to.
fn component(
    schema: crate::routes::SchemaOf,
    schemas: &mut Vec<(String, RefOr<Schema>)>,
) -> RefOr<Schema> {
    let name = (schema.name)().into_owned();
    if !schemas.iter().any(|(n, _)| *n == name) {
        schemas.push((name.clone(), (schema.schema)()));
        let mut referred = Vec::new();
        (schema.schemas)(&mut referred);
        for (n, s) in referred {
            if !schemas.iter().any(|(known, _)| *known == n) {
                schemas.push((n, s));
            }
        }
    }
    RefOr::Ref(Ref::from_schema_name(name))
}

/// Any JSON value. Spelled as the list of every type rather than `{}`, which utoipa's model
/// does not read back. (Also for `#[schema(schema_with = ..)]` on DTO fields.)
pub fn any_value() -> RefOr<Schema> {
    RefOr::T(Schema::Object(
        ObjectBuilder::new()
            .schema_type(SchemaType::Array(vec![
                Type::Object,
                Type::Array,
                Type::String,
                Type::Number,
                Type::Boolean,
                Type::Null,
            ]))
            .build(),
    ))
}

/// Any JSON object (`#[schema(schema_with = ..)]`).
pub fn any_object() -> RefOr<Schema> {
    RefOr::T(Schema::Object(
        ObjectBuilder::new().schema_type(Type::Object).build(),
    ))
}

/// A list of JSON objects, each of any members (rows of a query's answer).
pub fn list_of_objects() -> RefOr<Schema> {
    RefOr::T(Schema::Array(
        utoipa::openapi::schema::ArrayBuilder::new()
            .items(any_object())
            .build(),
    ))
}

/// A JSON object or `null` (an event's `metadata`).
pub fn object_or_null() -> RefOr<Schema> {
    RefOr::T(Schema::Object(
        ObjectBuilder::new()
            .schema_type(SchemaType::Array(vec![Type::Object, Type::Null]))
            .build(),
    ))
}

/// `"any"`, `"no_stream"`, `"stream_exists"` or a version number (`expected_version`).
pub fn expected_version() -> RefOr<Schema> {
    use utoipa::openapi::schema::OneOfBuilder;
    RefOr::T(Schema::OneOf(
        OneOfBuilder::new()
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .enum_values(Some(["any", "no_stream", "stream_exists"])),
            )
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .minimum(Some(0)),
            )
            .build(),
    ))
}

/// A string, one of `values` (the names the domain gives a closed set of values); with
/// `nullable`, `null` too (`#[schema(schema_with = ..)]` of a field).
pub fn string_enum<'a>(values: impl IntoIterator<Item = &'a str>, nullable: bool) -> RefOr<Schema> {
    let mut items: Vec<serde_json::Value> = values.into_iter().map(Into::into).collect();
    let schema_type = if nullable {
        items.push(serde_json::Value::Null);
        SchemaType::Array(vec![Type::String, Type::Null])
    } else {
        SchemaType::Type(Type::String)
    };
    RefOr::T(Schema::Object(
        ObjectBuilder::new()
            .schema_type(schema_type)
            .enum_values(Some(items))
            .build(),
    ))
}

/// A name of consumers, consumer groups, their members and pipelines: 1–128 of
/// `A-Z a-z 0-9 . _ : -`.
pub const NAME_PATTERN: &str = "^[A-Za-z0-9._:-]{1,128}$";
/// An event type (also a schema subject): 1–128 of `A-Z a-z 0-9 . _ -`, no leading or trailing
/// `.`, no `..`.
pub const EVENT_TYPE_PATTERN: &str = "^[A-Za-z0-9_-]+(\\.[A-Za-z0-9_-]+)*$";
/// An event-type filter: a type, `type.*` or `*`.
pub const TYPE_FILTER_PATTERN: &str = "^(\\*|[A-Za-z0-9_-]+(\\.[A-Za-z0-9_-]+)*(\\.\\*)?)$";

/// A string matching `pattern`, at most `max_length` characters; with `nullable`, `null` too.
pub fn pattern_string(pattern: &str, max_length: usize, nullable: bool) -> RefOr<Schema> {
    RefOr::T(Schema::Object(
        ObjectBuilder::new()
            .schema_type(if nullable {
                SchemaType::Array(vec![Type::String, Type::Null])
            } else {
                SchemaType::Type(Type::String)
            })
            .pattern(Some(pattern))
            .max_length(Some(max_length))
            .build(),
    ))
}

/// A name ([`NAME_PATTERN`]).
pub fn name() -> RefOr<Schema> {
    pattern_string(NAME_PATTERN, 128, false)
}

/// A name ([`NAME_PATTERN`]) or `null`.
pub fn name_or_null() -> RefOr<Schema> {
    pattern_string(NAME_PATTERN, 128, true)
}

/// An event type ([`EVENT_TYPE_PATTERN`]).
pub fn event_type() -> RefOr<Schema> {
    pattern_string(EVENT_TYPE_PATTERN, 128, false)
}

/// An event type ([`EVENT_TYPE_PATTERN`]) or `null`.
pub fn event_type_or_null() -> RefOr<Schema> {
    pattern_string(EVENT_TYPE_PATTERN, 128, true)
}

/// At most 100 event-type filters ([`TYPE_FILTER_PATTERN`]); `[]` matches every type. With
/// `nullable`, `null` too (the default).
fn filters(nullable: bool) -> RefOr<Schema> {
    RefOr::T(Schema::Array(
        utoipa::openapi::schema::ArrayBuilder::new()
            .schema_type(if nullable {
                SchemaType::Array(vec![Type::Array, Type::Null])
            } else {
                SchemaType::Type(Type::Array)
            })
            .items(pattern_string(TYPE_FILTER_PATTERN, 130, false))
            .max_items(Some(100))
            .build(),
    ))
}

/// Event-type filters (see [`filters`]).
pub fn type_filters() -> RefOr<Schema> {
    filters(false)
}

/// Event-type filters or `null` (see [`filters`]).
pub fn type_filters_or_null() -> RefOr<Schema> {
    filters(true)
}

/// An RFC 3339 time, or `null`.
pub fn time_or_null() -> RefOr<Schema> {
    RefOr::T(Schema::Object(
        ObjectBuilder::new()
            .schema_type(SchemaType::Array(vec![Type::String, Type::Null]))
            .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
                utoipa::openapi::KnownFormat::DateTime,
            )))
            .build(),
    ))
}

/// A list of strings, each one of `values`.
pub fn string_enum_list<'a>(values: impl IntoIterator<Item = &'a str>) -> RefOr<Schema> {
    RefOr::T(Schema::Array(
        utoipa::openapi::schema::ArrayBuilder::new()
            .items(string_enum(values, false))
            .build(),
    ))
}

/// Always `true` (`"deleted": true`).
pub fn always_true() -> RefOr<Schema> {
    RefOr::T(Schema::Object(
        ObjectBuilder::new()
            .schema_type(Type::Boolean)
            .enum_values(Some([true]))
            .build(),
    ))
}

/// A JSON object or array (a DSL condition is an array; some members take either).
pub fn object_or_array() -> RefOr<Schema> {
    RefOr::T(Schema::Object(
        ObjectBuilder::new()
            .schema_type(SchemaType::Array(vec![Type::Object, Type::Array]))
            .build(),
    ))
}

/// Any JSON value but `null`.
pub fn any_but_null() -> RefOr<Schema> {
    RefOr::T(Schema::Object(
        ObjectBuilder::new()
            .schema_type(SchemaType::Array(vec![
                Type::Object,
                Type::Array,
                Type::String,
                Type::Number,
                Type::Boolean,
            ]))
            .build(),
    ))
}

fn string_schema() -> RefOr<Schema> {
    RefOr::T(Schema::Object(
        ObjectBuilder::new().schema_type(Type::String).build(),
    ))
}

/// The problem statuses a route can answer (see the module docs), ascending.
pub fn problem_statuses(route: &Route) -> BTreeSet<u16> {
    let mut statuses: BTreeSet<u16> = [400, 500, 503].into_iter().collect();
    if !matches!(route.access, Access::Public) {
        statuses.extend([401, 403]);
    }
    if route.admission != RequestKind::Unlimited {
        statuses.insert(429);
    }
    if !path_parameters(route.path).is_empty() {
        statuses.insert(404);
    }
    if route.doc.takes_body {
        statuses.extend([413, 415]);
    }
    statuses.extend(route.doc.problems.iter().copied());
    statuses
}

/// Whether a success answer of this status has a body (`204` and `101` have none).
pub fn has_content(status: u16) -> bool {
    !matches!(status, 101 | 204)
}

fn success_description(status: u16) -> &'static str {
    match status {
        101 => "Switching protocols: the connection is upgraded (a WebSocket).",
        201 => "Created.",
        202 => "Accepted: a job was started.",
        204 => "Done; no content.",
        _ => "Success.",
    }
}

/// The description of a problem status: the `error` codes it carries.
fn problem_description(status: u16) -> &'static str {
    match status {
        400 => "`validation_failed`: malformed or invalid input (every field named).",
        401 => "`unauthorized`: no credential, or one invalid, expired or revoked.",
        403 => {
            "`forbidden`: the role lacks the permission, the tenant is deactivated, or a \
                policy denies."
        }
        404 => "`not_found`: nothing by that name (in the caller's tenant).",
        408 => "`query_timeout`: the query ran past its time limit.",
        409 => {
            "`version_conflict`, `duplicate_event_id` or `conflict`: the change conflicts \
                with what is stored."
        }
        413 => "`payload_too_large`: body, event or batch over its limit.",
        415 => "`unsupported_media_type`: the body is not `application/json`.",
        422 => {
            "`validation_failed` (a payload fails a registered schema) or \
                `query_too_large`."
        }
        429 => "`rate_limited` or `quota_exceeded`, with `Retry-After`.",
        500 => "`internal`: a bug; details only in the server's log.",
        503 => {
            "`unavailable`: storage unavailable, recovering, or shutting down \
                (with `Retry-After`)."
        }
        _ => "A problem document.",
    }
}

/// The names of a path pattern's parameters (`{name}`, `{*tail}`), in order.
pub fn path_parameters(path: &str) -> Vec<String> {
    path.split('/')
        .filter_map(|segment| segment.strip_prefix('{')?.strip_suffix('}'))
        .map(|name| name.trim_start_matches('*').to_owned())
        .collect()
}

/// The path as OpenAPI writes it (`{*file}` → `{file}`).
pub fn openapi_path(path: &str) -> String {
    path.replace("{*", "{")
}

fn method_of(verb: Verb) -> HttpMethod {
    match verb {
        Verb::Get => HttpMethod::Get,
        Verb::Post => HttpMethod::Post,
        Verb::Put => HttpMethod::Put,
        Verb::Delete => HttpMethod::Delete,
    }
}

/// `get_api_v1_events_event_id`: unique, since a method and path is declared once.
fn operation_id(route: &Route) -> String {
    let mut id = route.verb.as_str().to_ascii_lowercase();
    for c in route.path.chars() {
        if c.is_ascii_alphanumeric() {
            id.push(c);
        } else if !id.ends_with('_') {
            id.push('_');
        }
    }
    id.trim_end_matches('_').to_owned()
}

/// `events` for `/api/v1/events/query`, `health` for `/health/ready`.
fn tag_of(path: &str) -> String {
    let rest = path.strip_prefix("/api/v1/").unwrap_or(path);
    rest.trim_start_matches('/')
        .split('/')
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// The sections of `docs/API.md` under `### METHOD /path` headings, by method and path: the
/// text up to the next heading, outside code fences.
pub fn reference_sections() -> BTreeMap<(String, String), String> {
    let mut sections = BTreeMap::new();
    let mut current: Option<((String, String), Vec<&str>)> = None;
    let mut in_fence = false;
    for line in API_REFERENCE.lines() {
        if line.trim_start().starts_with("```") {
            in_fence = !in_fence;
        }
        if !in_fence && line.starts_with('#') {
            if let Some((key, text)) = current.take() {
                sections.insert(key, text.join("\n").trim().to_owned());
            }
            if let Some((method, path)) = line
                .strip_prefix("### ")
                .and_then(|heading| heading.split_once(' '))
            {
                current = Some(((method.to_owned(), path.trim().to_owned()), Vec::new()));
            }
            continue;
        }
        if let Some((_, text)) = current.as_mut() {
            text.push(line);
        }
    }
    if let Some((key, text)) = current {
        sections.insert(key, text.join("\n").trim().to_owned());
    }
    sections
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use serde_json::Value;

    use super::*;

    fn document_value() -> Value {
        serde_json::from_str(document_json()).expect("the document is JSON")
    }

    /// Method and OpenAPI path of every operation of the document.
    fn documented_operations(doc: &Value) -> BTreeSet<(String, String)> {
        let mut operations = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for method in item.as_object().expect("path item").keys() {
                if ["get", "post", "put", "delete", "patch"].contains(&method.as_str()) {
                    operations.insert((method.to_ascii_uppercase(), path.clone()));
                }
            }
        }
        operations
    }

    #[test]
    fn every_served_route_is_documented_and_every_operation_is_served() {
        let doc = document_value();
        let served: BTreeSet<(String, String)> = served_routes()
            .iter()
            .map(|r| (r.verb.as_str().to_owned(), openapi_path(r.path)))
            .collect();
        let documented = documented_operations(&doc);
        let missing: Vec<_> = served.difference(&documented).collect();
        let unserved: Vec<_> = documented.difference(&served).collect();
        assert!(
            missing.is_empty(),
            "served but not in the OpenAPI document: {missing:?}. The document is built from \
             the route table (presentation/src/openapi.rs); a route declared in a handler \
             module's routes() must appear here."
        );
        assert!(
            unserved.is_empty(),
            "in the OpenAPI document but not served: {unserved:?}"
        );
        assert!(served.len() > 100, "only {} routes", served.len());
    }

    #[test]
    fn every_operation_has_its_section_of_the_api_reference() {
        let sections = reference_sections();
        let without: Vec<_> = served_routes()
            .iter()
            .filter(|r| {
                sections
                    .get(&(r.verb.as_str().to_owned(), r.path.to_owned()))
                    .is_none_or(|text| text.is_empty())
            })
            .map(|r| format!("{} {}", r.verb.as_str(), r.path))
            .collect();
        assert!(
            without.is_empty(),
            "routes without a section in docs/API.md (add `### METHOD /path` and its text; it \
             becomes the operation's description): {without:?}"
        );
        let doc = document_value();
        let text = doc["paths"]["/api/v1/events"]["post"]["description"]
            .as_str()
            .expect("a description");
        assert!(text.starts_with("Access: `write`."), "{text}");
    }

    #[test]
    fn every_path_parameter_and_every_query_parameter_is_documented() {
        let doc = document_value();
        let mut problems = Vec::new();
        for route in served_routes() {
            let method = route.verb.as_str().to_ascii_lowercase();
            let operation = &doc["paths"][openapi_path(route.path)][&method];
            let parameters: Vec<(String, String)> = operation["parameters"]
                .as_array()
                .map(|ps| {
                    ps.iter()
                        .map(|p| {
                            (
                                p["in"].as_str().unwrap_or_default().to_owned(),
                                p["name"].as_str().unwrap_or_default().to_owned(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            for name in path_parameters(route.path) {
                if !parameters.contains(&("path".to_owned(), name.clone())) {
                    problems.push(format!("{} {}: path parameter {name}", method, route.path));
                }
            }
            if route.takes_query && route.doc.params.is_none() {
                problems.push(format!(
                    "{} {} takes query parameters but declares none: use \
                     `Route::..(..).params::<TheParams>()` (derive `utoipa::IntoParams` on it) \
                     instead of `.with_query()`",
                    method, route.path
                ));
            }
            if route.doc.params.is_some() && !parameters.iter().any(|(at, _)| at == "query") {
                problems.push(format!("{} {}: no query parameter", method, route.path));
            }
        }
        assert!(problems.is_empty(), "{problems:#?}");
        // A known one, with its name as the handler reads it.
        let query = &doc["paths"]["/api/v1/events/query"]["get"]["parameters"];
        assert!(
            query
                .as_array()
                .expect("parameters")
                .iter()
                .any(|p| p["name"] == "payload_filter" && p["in"] == "query"),
            "{query}"
        );
    }

    #[test]
    fn every_json_body_and_every_json_answer_declares_its_type() {
        let mut untyped = Vec::new();
        for route in served_routes() {
            let name = format!("{} {}", route.verb.as_str(), route.path);
            if route.doc.takes_body && route.doc.body.is_none() {
                untyped.push(format!(
                    "{name} reads a JSON body but declares no type: add `.body::<T>()` with \
                     `T` the request struct the handler deserializes (derive `utoipa::ToSchema` \
                     on it), or `.no_body()` when it reads none"
                ));
            }
            let answers_json = route.doc.media_type.contains("json")
                && route.doc.success.iter().any(|status| has_content(*status));
            if answers_json && route.doc.response == Answer::Undeclared {
                untyped.push(format!(
                    "{name} answers JSON but declares no type: add `.returns::<U>()` with `U` \
                     the struct the handler serializes (derive `utoipa::ToSchema` on it), or, \
                     only for an answer that really is arbitrary JSON, `.returns_any_json()`"
                ));
            }
        }
        assert!(untyped.is_empty(), "{untyped:#?}");

        // In the document: every JSON body and every JSON success answer is a component.
        let doc = document_value();
        let mut problems = Vec::new();
        for route in served_routes() {
            let method = route.verb.as_str().to_ascii_lowercase();
            let operation = &doc["paths"][openapi_path(route.path)][&method];
            let name = format!("{} {}", route.verb.as_str(), route.path);
            if route.doc.takes_body
                && operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
                    .as_str()
                    .is_none()
            {
                problems.push(format!("{name}: body"));
            }
            for status in route.doc.success {
                let schema = &operation["responses"][status.to_string()]["content"]
                    [route.doc.media_type]["schema"];
                let typed = schema["$ref"].as_str().is_some();
                if has_content(*status)
                    && route.doc.media_type.contains("json")
                    && !typed
                    && route.doc.response != Answer::AnyJson
                {
                    problems.push(format!("{name}: answer {status}"));
                }
            }
        }
        assert!(problems.is_empty(), "{problems:#?}");

        // Required members are required, and a body that refuses unknown members says so.
        let login = &doc["components"]["schemas"]["LoginRequest"];
        assert_eq!(
            login["required"],
            serde_json::json!(["username", "password"]),
            "{login}"
        );
        assert_eq!(login["additionalProperties"], false, "{login}");
    }

    /// Where `a` and `b` first differ (a JSON pointer), with both values there.
    fn first_difference(a: &Value, b: &Value, at: String) -> Option<String> {
        match (a, b) {
            (Value::Object(x), Value::Object(y)) => {
                let keys: BTreeSet<&String> = x.keys().chain(y.keys()).collect();
                keys.into_iter().find_map(|k| match (x.get(k), y.get(k)) {
                    (Some(v), Some(w)) => first_difference(v, w, format!("{at}/{k}")),
                    (v, w) => Some(format!("{at}/{k}: {v:?} != {w:?}")),
                })
            }
            (Value::Array(x), Value::Array(y)) if x.len() == y.len() => x
                .iter()
                .zip(y)
                .enumerate()
                .find_map(|(i, (v, w))| first_difference(v, w, format!("{at}/{i}"))),
            _ => (a != b).then(|| format!("{at}: {a} != {b}")),
        }
    }

    /// Every `$ref` of `value`.
    fn refs(value: &Value, out: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                for (key, v) in map {
                    if key == "$ref" {
                        if let Some(r) = v.as_str() {
                            out.push(r.to_owned());
                        }
                    } else {
                        refs(v, out);
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }

    #[test]
    fn the_document_is_openapi_3_1_and_every_reference_resolves() {
        let doc = document_value();
        assert_eq!(doc["openapi"], "3.1.0");
        // It parses back into the OpenAPI model, and nothing is lost on the way.
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for (method, operation) in item.as_object().expect("item") {
                if let Err(e) = serde_json::from_value::<Operation>(operation.clone()) {
                    panic!("{method} {path} does not parse as an operation: {e}\n{operation:#}");
                }
            }
        }
        for (name, schema) in doc["components"]["schemas"].as_object().expect("schemas") {
            if let Err(e) = serde_json::from_value::<RefOr<Schema>>(schema.clone()) {
                panic!("schema {name} does not parse: {e}\n{schema:#}");
            }
        }
        let parsed: OpenApi =
            serde_json::from_value(doc.clone()).expect("the document parses as OpenAPI");
        let back = serde_json::to_value(&parsed).expect("serializes");
        assert!(
            back == doc,
            "the document does not survive a round trip through the OpenAPI model: {}",
            first_difference(&doc, &back, String::new()).unwrap_or_default()
        );
        let mut all = Vec::new();
        refs(&doc, &mut all);
        assert!(all.iter().any(|r| r == "#/components/schemas/Problem"));
        let unresolved: Vec<_> = all
            .iter()
            .filter(|r| {
                r.strip_prefix('#')
                    .is_none_or(|pointer| doc.pointer(pointer).is_none())
            })
            .collect();
        assert!(
            unresolved.is_empty(),
            "unresolved references: {unresolved:?}"
        );
        // Operation ids are unique (clients generate method names from them).
        let mut ids = BTreeSet::new();
        for item in doc["paths"].as_object().expect("paths").values() {
            for operation in item.as_object().expect("item").values() {
                if let Some(id) = operation["operationId"].as_str() {
                    assert!(ids.insert(id.to_owned()), "operationId {id} twice");
                }
            }
        }
    }

    #[test]
    fn problem_answers_follow_the_declaration() {
        let doc = document_value();
        let statuses = |path: &str, method: &str| -> BTreeSet<String> {
            doc["paths"][path][method]["responses"]
                .as_object()
                .expect("responses")
                .keys()
                .cloned()
                .collect()
        };
        let health = statuses("/health", "get");
        assert_eq!(
            health,
            ["200", "400", "500", "503"].map(String::from).into()
        );
        let append = statuses("/api/v1/events", "post");
        for s in [
            "200", "400", "401", "403", "409", "413", "415", "422", "429", "500",
        ] {
            assert!(
                append.contains(s),
                "POST /api/v1/events lacks {s}: {append:?}"
            );
        }
        assert!(!append.contains("404"), "{append:?}");
        let event = statuses("/api/v1/events/{event_id}", "get");
        assert!(event.contains("404") && !event.contains("413"), "{event:?}");
        let problem = &doc["paths"]["/api/v1/events/{event_id}"]["get"]["responses"]["404"]["content"]
            ["application/problem+json"]["schema"]["$ref"];
        assert_eq!(problem, "#/components/schemas/Problem");
        // Public routes carry no security requirement, the others both schemes.
        assert!(doc["paths"]["/api/v1/auth/login"]["post"]["security"].is_null());
        assert_eq!(
            doc["paths"]["/api/v1/stats"]["get"]["security"],
            serde_json::json!([{"bearer": []}, {"api_key": []}])
        );
    }
}
