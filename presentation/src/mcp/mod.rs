//! The MCP server: AllSource's tools for AI agents, over the Model Context Protocol (`rmcp`).
//!
//! One handler, [`McpServer`], serves both transports: stdio (`allsource mcp`, a process that
//! talks to a running server over HTTP) and streamable HTTP at `POST /mcp` on the server itself
//! ([`crate::handlers::mcp`]). The difference is only how a tool reaches the REST API
//! ([`rest::Rest`]): over HTTP with the key given to `allsource mcp`, or through the router in
//! process with the `/mcp` request's own credential. Either way every tool call is REST
//! requests that pass the request layer ([`crate::guard`]) like any client's, so tenancy,
//! roles, quotas, rate limits and policies hold unchanged, and answers are the REST answers.
//!
//! - [`catalog`]: the tool table and each tool's input and output JSON Schemas (taken from the
//!   OpenAPI document for the tools that are one route).
//! - [`derived`]: the tools computed from reads (`explain_entity`, `analyze_changes`, ...).
//! - [`rest`]: the port to the REST API and its in-process adapter.
//!
//! What a caller sees: the tools whose route permission its role holds, and with
//! [`McpServer::read_only`] only those that do not write. Failures are tool errors
//! (`isError: true`) whose text says what to fix (the REST problem's title, detail and field
//! errors); an unknown tool or a bad cursor is a protocol error.

pub mod catalog;
pub mod derived;
pub mod rest;

use std::collections::BTreeSet;
use std::sync::{Arc, OnceLock};

use allsource_application::Caller;
use allsource_domain::Permission;
use axum::Router;
use axum::http::request::Parts;
use axum::http::{Method, StatusCode};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    ListResourcesResult, ListToolsResult, PaginatedRequestParams, ReadResourceRequestParams,
    ReadResourceResponse, ReadResourceResult, Resource, ResourceContents, ServerCapabilities,
    ServerConfig, Tool, ToolAnnotations,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, ServerHandler};
use serde_json::{Map, Value, json};

use catalog::{Action, RouteShape, TOOLS, ToolSpec, route_shape};
use rest::{Rest, RestAnswer, RestRequest, RouterRest, query, segment, target};

/// Tools per page of `tools/list`.
pub const TOOLS_PER_PAGE: usize = 50;

/// The resource of the REST reference (this server's docs/API.md).
pub const REFERENCE_URI: &str = "allsource://docs/api";
/// The resource of the OpenAPI document.
pub const OPENAPI_URI: &str = "allsource://docs/openapi.json";
/// The prefix of the resources of the tenant's registered schemas.
pub const SCHEMA_URI_PREFIX: &str = "allsource://schemas/";

const REFERENCE: &str = include_str!("../../../docs/API.md");

/// A tool's failure, in words an agent can act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolError {
    pub message: String,
    /// The REST status, when the failure is the server's answer.
    pub status: Option<u16>,
}

impl ToolError {
    /// A bad argument.
    pub fn argument(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            status: None,
        }
    }

    /// The server could not be reached.
    pub fn unreachable(why: String) -> Self {
        Self {
            message: format!("the AllSource server cannot be reached: {why}"),
            status: None,
        }
    }
}

/// The answer's body when it is a success, else its problem document in words.
///
/// # Errors
/// The problem as a [`ToolError`] with the status.
pub fn answer_or_error(answer: RestAnswer) -> Result<Value, ToolError> {
    if answer.status.is_success() {
        return Ok(answer.body);
    }
    let problem = &answer.body;
    let mut message = format!(
        "{} {}",
        answer.status.as_u16(),
        problem["title"]
            .as_str()
            .or(answer.status.canonical_reason())
            .unwrap_or("error")
    );
    let errors = problem["errors"].as_array().filter(|e| !e.is_empty());
    // With field errors, the detail only repeats them.
    if let (Some(detail), None) = (problem["detail"].as_str(), errors) {
        message.push_str(": ");
        message.push_str(detail);
    }
    for error in errors.into_iter().flatten() {
        message.push_str(&format!(
            "\n- {}: {}",
            error["field"].as_str().unwrap_or("?"),
            error["message"].as_str().unwrap_or("invalid")
        ));
    }
    Err(ToolError {
        message,
        status: Some(answer.status.as_u16()),
    })
}

/// Who calls, as far as the tools need to know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub tenant: String,
    pub permissions: BTreeSet<String>,
}

impl Identity {
    fn can(&self, permission: Option<Permission>) -> bool {
        permission.is_none_or(|p| self.permissions.contains(p.as_str()))
    }
}

/// `GET /api/v1/auth/me`; with authentication off (the identity routes answer 404) the
/// caller is an admin of `default`, as the REST API treats it.
async fn identity(rest: &dyn Rest, tool: &'static str) -> Result<Identity, ToolError> {
    let answer = rest
        .send(RestRequest {
            method: Method::GET,
            target: "/api/v1/auth/me".into(),
            body: None,
            tool,
        })
        .await
        .map_err(ToolError::unreachable)?;
    if answer.status == StatusCode::NOT_FOUND {
        return Ok(Identity {
            tenant: allsource_domain::TenantId::default_tenant()
                .as_str()
                .to_owned(),
            permissions: Permission::ALL
                .iter()
                .map(|p| p.as_str().to_owned())
                .collect(),
        });
    }
    let me = answer_or_error(answer)?;
    Ok(Identity {
        tenant: me["tenant_id"].as_str().unwrap_or_default().to_owned(),
        permissions: me["permissions"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
    })
}

/// Where the REST API is.
#[derive(Clone)]
enum Api {
    /// A fixed client (stdio: HTTP with the key given on the command line).
    Client(Arc<dyn Rest>),
    /// The router itself (`/mcp`), called with each request's credential.
    Router(Router),
}

/// The MCP handler (cheap to clone).
#[derive(Clone)]
pub struct McpServer {
    api: Api,
    read_only: bool,
}

impl McpServer {
    /// A server whose tools call the REST API through `rest` (stdio).
    pub fn over(rest: Arc<dyn Rest>) -> Self {
        Self {
            api: Api::Client(rest),
            read_only: false,
        }
    }

    /// A server whose tools call `router` in process with the credential of each `/mcp`
    /// request.
    pub fn in_process(router: Router) -> Self {
        Self {
            api: Api::Router(router),
            read_only: false,
        }
    }

    /// Hides and refuses every tool that writes.
    #[must_use]
    pub fn read_only(mut self, read_only: bool) -> Self {
        self.read_only = read_only;
        self
    }

    fn rest(&self, context: &RequestContext<RoleServer>) -> Arc<dyn Rest> {
        match &self.api {
            Api::Client(rest) => Arc::clone(rest),
            Api::Router(router) => {
                let parts = context.extensions.get::<Parts>();
                let headers = parts.map(|p| p.headers.clone()).unwrap_or_default();
                let caller = parts.and_then(|p| p.extensions.get::<Caller>().cloned());
                Arc::new(RouterRest::new(router.clone(), &headers, caller))
            }
        }
    }

    /// The tools this caller may use, in table order.
    async fn visible(&self, rest: &dyn Rest) -> Result<Vec<&'static ToolSpec>, ToolError> {
        let me = identity(rest, "tools/list").await?;
        Ok(TOOLS
            .iter()
            .filter(|t| !(self.read_only && t.writes()) && me.can(t.permission()))
            .collect())
    }
}

/// A tool's description for `tools/list`.
fn describe(spec: &ToolSpec) -> Tool {
    Tool::new(spec.name, spec.description, spec.input_schema())
        .with_title(spec.title)
        .with_raw_output_schema(Arc::new(spec.output_schema()))
        .with_annotations(
            ToolAnnotations::with_title(spec.title)
                .read_only(!spec.writes())
                .destructive(false)
                .open_world(false),
        )
}

/// The shapes of the route tools, built once.
fn shape(spec: &ToolSpec) -> Option<&'static RouteShape> {
    static SHAPES: OnceLock<Vec<(&'static str, RouteShape)>> = OnceLock::new();
    SHAPES
        .get_or_init(|| {
            TOOLS
                .iter()
                .filter_map(|t| match t.action {
                    Action::Route {
                        verb,
                        path,
                        own_tenant,
                    } => Some((t.name, route_shape(verb, path, own_tenant))),
                    Action::Derived(_) => None,
                })
                .collect()
        })
        .iter()
        .find(|(name, _)| *name == spec.name)
        .map(|(_, shape)| shape)
}

/// An argument as query-string or path text: strings as they are, JSON otherwise.
fn as_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Calls a tool.
///
/// # Errors
/// A [`ToolError`] that says what to fix.
pub async fn call(
    spec: &'static ToolSpec,
    args: Map<String, Value>,
    rest: &dyn Rest,
) -> Result<Value, ToolError> {
    match spec.action {
        Action::Derived(which) => derived::run(which, spec.name, &args, rest).await,
        Action::Route {
            verb,
            path,
            own_tenant,
        } => {
            let Some(shape) = shape(spec) else {
                return Err(ToolError::argument("this tool has no route"));
            };
            let accepted: BTreeSet<&str> = shape
                .input
                .get("properties")
                .and_then(Value::as_object)
                .map(|p| p.keys().map(String::as_str).collect())
                .unwrap_or_default();
            if let Some(unknown) = args.keys().find(|k| !accepted.contains(k.as_str())) {
                return Err(ToolError::argument(format!(
                    "unknown argument `{unknown}`; {} takes: {}",
                    spec.name,
                    accepted.iter().copied().collect::<Vec<_>>().join(", ")
                )));
            }
            let mut target_path = path.to_owned();
            for name in &shape.path_params {
                let value = match args.get(name).filter(|v| !v.is_null()) {
                    Some(value) => as_text(value),
                    None if own_tenant == Some(name.as_str()) => {
                        identity(rest, spec.name).await?.tenant
                    }
                    None => return Err(ToolError::argument(format!("`{name}` is required"))),
                };
                if value.is_empty() {
                    return Err(ToolError::argument(format!("`{name}` must not be empty")));
                }
                target_path = target_path.replace(&format!("{{{name}}}"), &segment(&value));
            }
            let pairs: Vec<(&str, String)> = args
                .iter()
                .filter(|(k, v)| shape.query_params.contains(k.as_str()) && !v.is_null())
                .map(|(k, v)| (k.as_str(), as_text(v)))
                .collect();
            let body = if shape.body_whole {
                args.get("body").cloned()
            } else {
                shape.body_members.as_ref().map(|members| {
                    Value::Object(
                        args.iter()
                            .filter(|(k, _)| members.contains(k.as_str()))
                            .map(|(k, v)| (k.clone(), v.clone()))
                            .collect(),
                    )
                })
            };
            let answer = rest
                .send(RestRequest {
                    method: verb.method(),
                    target: target(&target_path, &query(pairs)),
                    body,
                    tool: spec.name,
                })
                .await
                .map_err(ToolError::unreachable)?;
            let value = answer_or_error(answer)?;
            Ok(if shape.wrapped {
                json!({"result": value})
            } else if value.is_null() {
                json!({})
            } else {
                value
            })
        }
    }
}

fn tool_error(message: impl Into<String>) -> CallToolResponse {
    CallToolResult::error(vec![ContentBlock::text(message.into())]).into()
}

impl ServerHandler for McpServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_resources()
                .build(),
        )
        .with_server_info(
            Implementation::new("allsource", env!("CARGO_PKG_VERSION")).with_title("AllSource"),
        )
        .with_instructions(
            "AllSource is an event store: events are appended per entity (stream) and read \
             back as streams, queries, states at a moment in time and analyses. Start with \
             `quick_stats` and `sample_events` to see what is stored, then `query_events`, \
             `reconstruct_state`, `explain_entity` or `sql`. Tools answer with the REST \
             API's JSON; the resource allsource://docs/api is the API reference.",
        )
    }

    async fn list_tools(
        &self,
        request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let rest = self.rest(&context);
        let tools = self
            .visible(rest.as_ref())
            .await
            .map_err(|e| ErrorData::invalid_request(e.message, None))?;
        let start = match request.and_then(|p| p.cursor) {
            None => 0,
            Some(cursor) => cursor
                .parse::<usize>()
                .ok()
                .filter(|start| *start <= tools.len())
                .ok_or_else(|| ErrorData::invalid_params("invalid cursor", None))?,
        };
        let page: Vec<Tool> = tools
            .iter()
            .skip(start)
            .take(TOOLS_PER_PAGE)
            .map(|t| describe(t))
            .collect();
        let end = start + page.len();
        Ok(ListToolsResult {
            tools: page,
            next_cursor: (end < tools.len()).then(|| end.to_string()),
            ..Default::default()
        })
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let Some(spec) = catalog::tool(&request.name) else {
            return Err(ErrorData::invalid_params(
                format!("unknown tool `{}`; tools/list names them", request.name),
                None,
            ));
        };
        if self.read_only && spec.writes() {
            return Ok(tool_error(format!(
                "`{}` writes, and this MCP server is read-only",
                spec.name
            )));
        }
        let rest = self.rest(&context);
        match call(spec, request.arguments.unwrap_or_default(), rest.as_ref()).await {
            Ok(value) => Ok(CallToolResult::structured(value).into()),
            Err(error) => Ok(tool_error(error.message)),
        }
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        let mut resources = vec![
            Resource::new(REFERENCE_URI, "api-reference")
                .with_description("The REST API reference of this server (Markdown).")
                .with_mime_type("text/markdown"),
            Resource::new(OPENAPI_URI, "openapi")
                .with_description("The OpenAPI 3.1 document of the REST API.")
                .with_mime_type("application/json"),
        ];
        let rest = self.rest(&context);
        let schemas = list_schemas(rest.as_ref()).await.unwrap_or_default();
        for subject in schemas {
            resources.push(
                Resource::new(format!("{SCHEMA_URI_PREFIX}{subject}"), subject.clone())
                    .with_description(format!("The newest registered JSON Schema of `{subject}`."))
                    .with_mime_type("application/json"),
            );
        }
        Ok(ListResourcesResult::with_all_items(resources))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        let uri = request.uri.as_str();
        let (text, mime) = if uri == REFERENCE_URI {
            (REFERENCE.to_owned(), "text/markdown")
        } else if uri == OPENAPI_URI {
            (
                crate::openapi::document_json().to_owned(),
                "application/json",
            )
        } else if let Some(subject) = uri.strip_prefix(SCHEMA_URI_PREFIX) {
            let rest = self.rest(&context);
            let answer = rest
                .send(RestRequest {
                    method: Method::GET,
                    target: format!("/api/v1/schemas/{}", segment(subject)),
                    body: None,
                    tool: "resources/read",
                })
                .await
                .map_err(|e| ErrorData::internal_error(e, None))?;
            match answer_or_error(answer) {
                Ok(schema) => (schema.to_string(), "application/json"),
                Err(e) if e.status == Some(404) => {
                    return Err(ErrorData::resource_not_found(
                        format!("no schema is registered for `{subject}`"),
                        None,
                    ));
                }
                Err(e) => return Err(ErrorData::invalid_request(e.message, None)),
            }
        } else {
            return Err(ErrorData::resource_not_found(
                format!("no resource `{uri}`; resources/list names them"),
                None,
            ));
        };
        Ok(ReadResourceResult::new(vec![
            ResourceContents::text(text, request.uri.clone()).with_mime_type(mime),
        ])
        .into())
    }
}

/// The subjects of the tenant's registered schemas.
async fn list_schemas(rest: &dyn Rest) -> Result<Vec<String>, ToolError> {
    let answer = rest
        .send(RestRequest {
            method: Method::GET,
            target: target("/api/v1/schemas", ""),
            body: None,
            tool: "resources/list",
        })
        .await
        .map_err(ToolError::unreachable)?;
    let list = answer_or_error(answer)?;
    Ok(list["subjects"]
        .as_array()
        .or_else(|| list["schemas"].as_array())
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().or_else(|| s["subject"].as_str()))
        .map(str::to_owned)
        .collect())
}
