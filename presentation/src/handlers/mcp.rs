//! `POST /mcp`: the MCP server ([`crate::mcp`]) over MCP's streamable HTTP transport.
//!
//! The transport runs stateless (no `Mcp-Session-Id`; every POST is answered on its own, as
//! JSON), so any node of a deployment can answer any request and each request is
//! authenticated like every other: the route needs a credential (any role; each tool's REST
//! requests need the route's permission), and the tools call the router in process with
//! that credential. `GET /mcp` (a server-initiated event stream) is not offered: 405.

use std::sync::Arc;

use axum::Extension;
use axum::body::Body;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use rmcp::transport::streamable_http_server::session::never::NeverSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use tower::ServiceExt;

use crate::access::Access::Authenticated;
use crate::error::ApiError;
use crate::mcp::McpServer;
use crate::routes::{Route, Routes};

/// The MCP route.
pub fn routes() -> Routes {
    Routes::new().add(
        Route::post("/mcp", Authenticated)
            .summary("The MCP server (streamable HTTP transport)")
            .body::<JsonRpcMessage>()
            .returns_any_json()
            .responds(&[200, 202])
            .problems(&[406, 415]),
        mcp,
    )
}

/// A JSON-RPC 2.0 message of the Model Context Protocol (a request, a notification or a
/// response; see the MCP specification for each method's `params`).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // documentation only: rmcp reads the message.
pub struct JsonRpcMessage {
    /// `2.0`.
    jsonrpc: String,
    /// `initialize`, `tools/list`, `tools/call`, `resources/list`, `resources/read`, ...
    method: Option<String>,
    #[schema(schema_with = crate::openapi::any_value)]
    id: (),
    #[schema(schema_with = crate::openapi::any_value)]
    params: (),
}

/// The streamable HTTP service, with the router its tools call (set by [`crate::router`]).
#[derive(Clone)]
pub struct McpEndpoint {
    service: StreamableHttpService<McpServer, NeverSessionManager>,
}

impl McpEndpoint {
    /// The endpoint whose tools call `api` (the router without this endpoint).
    pub fn new(api: axum::Router, max_body_bytes: usize) -> Self {
        let server = McpServer::in_process(api);
        let config = StreamableHttpServerConfig::default()
            .with_legacy_session_mode(false)
            .with_json_response(true)
            // The route is behind the request layer's authentication; the Host check is for
            // servers that have none.
            .disable_allowed_hosts()
            .with_max_request_body_bytes(max_body_bytes);
        Self {
            service: StreamableHttpService::new(
                move || Ok(server.clone()),
                Arc::new(NeverSessionManager::default()),
                config,
            ),
        }
    }
}

/// `POST /mcp`.
pub async fn mcp(endpoint: Option<Extension<McpEndpoint>>, request: Request) -> Response {
    let Some(Extension(endpoint)) = endpoint else {
        return ApiError::not_found("the MCP endpoint is not served here").into_response();
    };
    match endpoint.service.oneshot(request).await {
        Ok(response) => response.map(Body::new),
        Err(never) => match never {},
    }
}
