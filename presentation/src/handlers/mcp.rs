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
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use rmcp::transport::streamable_http_server::session::never::NeverSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use serde_json::Value;
use tower::ServiceExt;

use crate::HttpLimits;
use crate::access::Access::Authenticated;
use crate::error::ApiError;
use crate::extract::is_json_content_type;
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
            .problems(&[406]),
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

/// `POST /mcp`: the body is checked to be one JSON-RPC 2.0 message before the transport
/// sees it, so bad input gets a problem document that says what is wrong (the transport's own
/// refusals are bare statuses).
pub async fn mcp(
    endpoint: Option<Extension<McpEndpoint>>,
    limits: Option<Extension<HttpLimits>>,
    request: Request,
) -> Response {
    let Some(Extension(endpoint)) = endpoint else {
        return ApiError::not_found("the MCP endpoint is not served here").into_response();
    };
    let (mut parts, body) = request.into_parts();
    if !is_json_content_type(&parts.headers) {
        return ApiError::unsupported_media_type().into_response();
    }
    let limit = limits.map_or(HttpLimits::DEFAULT_MAX_BODY_BYTES, |l| l.max_body_bytes);
    let Ok(bytes) = axum::body::to_bytes(body, limit).await else {
        return ApiError::payload_too_large(format!("the body exceeds {limit} bytes"))
            .into_response();
    };
    if let Err(error) = check_message(&bytes) {
        return error.into_response();
    }
    // MCP asks clients to accept both JSON and an event stream; this transport answers JSON
    // only, so a client that accepts anything (or says nothing) is served too.
    let accept = parts
        .headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("*/*");
    if accept.contains("*/*") || accept.contains("application/json") {
        parts.headers.insert(
            header::ACCEPT,
            HeaderValue::from_static("application/json, text/event-stream"),
        );
    } else {
        return ApiError::for_status(axum::http::StatusCode::NOT_ACCEPTABLE).into_response();
    }
    let request = Request::from_parts(parts, Body::from(bytes));
    match endpoint.service.oneshot(request).await {
        Ok(response) => response.map(Body::new),
        Err(never) => match never {},
    }
}

/// One JSON-RPC 2.0 message: a request or notification (`method`), or a response (`id` with
/// `result` or `error`).
fn check_message(bytes: &[u8]) -> Result<(), ApiError> {
    let message: Value = serde_json::from_slice(bytes)
        .map_err(|e| ApiError::invalid("body", format!("is not JSON: {e}")))?;
    let Some(object) = message.as_object() else {
        return Err(ApiError::invalid(
            "body",
            "must be one JSON-RPC 2.0 message (an object)",
        ));
    };
    if object.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Err(ApiError::invalid("jsonrpc", "must be \"2.0\""));
    }
    match object.get("method") {
        Some(Value::String(_)) => Ok(()),
        Some(_) => Err(ApiError::invalid("method", "must be a string")),
        None if object.contains_key("id")
            && (object.contains_key("result") || object.contains_key("error")) =>
        {
            Ok(())
        }
        None => Err(ApiError::invalid(
            "method",
            "is required (a request or notification), or `id` with `result` or `error` (a \
             response)",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_json_rpc_messages_pass() {
        for good in [
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#,
            r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
            r#"{"jsonrpc":"2.0","id":1,"result":{}}"#,
        ] {
            assert!(check_message(good.as_bytes()).is_ok(), "{good}");
        }
        for (bad, field) in [
            ("{", "body"),
            ("[]", "body"),
            (r#"{"id":1,"method":"x"}"#, "jsonrpc"),
            (r#"{"jsonrpc":"1.0","method":"x"}"#, "jsonrpc"),
            (r#"{"jsonrpc":"2.0","method":7}"#, "method"),
            (r#"{"jsonrpc":"2.0","id":1}"#, "method"),
        ] {
            let error = check_message(bad.as_bytes()).expect_err(bad);
            assert_eq!(error.status(), axum::http::StatusCode::BAD_REQUEST, "{bad}");
            assert_eq!(error.errors()[0].field, field, "{bad}");
        }
    }
}
