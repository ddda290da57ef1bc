//! How a tool reaches the REST API: the [`Rest`] port, and [`RouterRest`], its in-process
//! adapter for `/mcp` (the stdio server's adapter, over HTTP, is in the binary).
//!
//! Every tool call is one or more REST requests sent with the caller's credential, so the
//! request layer ([`crate::guard`]) authenticates, admits, authorizes and applies policies to
//! each exactly as for any client; each carries [`TOOL_HEADER`], and the request layer
//! records it in the audit log (`mcp.tool_call`).

use std::fmt::Write as _;

use allsource_application::Caller;
use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode, header};
use futures::future::BoxFuture;
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

/// The header that names the MCP tool a REST request is made for.
pub const TOOL_HEADER: &str = "x-allsource-mcp-tool";

/// One REST request of a tool.
#[derive(Debug, Clone, PartialEq)]
pub struct RestRequest {
    pub method: Method,
    /// Path and query string (`/api/v1/events/query?limit=5`).
    pub target: String,
    pub body: Option<Value>,
    /// The tool it is made for.
    pub tool: &'static str,
}

/// The server's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct RestAnswer {
    pub status: StatusCode,
    /// The JSON body (`null` when empty or not JSON).
    pub body: Value,
}

/// Sends REST requests with the caller's credential. `Err` is a transport failure (the
/// server cannot be reached), said in words.
pub trait Rest: Send + Sync {
    fn send(&self, request: RestRequest) -> BoxFuture<'_, Result<RestAnswer, String>>;
}

/// The in-process adapter: requests go through the router itself, with the credential
/// headers of the `/mcp` request that made the tool call.
#[derive(Clone)]
pub struct RouterRest {
    router: Router,
    credentials: HeaderMap,
    /// The caller the `/mcp` request was authenticated as, for authentication off (where
    /// the request layer keeps a caller set in process instead of assuming `default`).
    caller: Option<Caller>,
}

impl RouterRest {
    /// `router` serves the REST API; `incoming` are the `/mcp` request's headers, of which
    /// the credential (`Authorization`, `X-API-Key`) and `x-request-id` are kept.
    pub fn new(router: Router, incoming: &HeaderMap, caller: Option<Caller>) -> Self {
        let mut credentials = HeaderMap::new();
        for name in [header::AUTHORIZATION, X_API_KEY, X_REQUEST_ID] {
            if let Some(value) = incoming.get(&name) {
                credentials.insert(name, value.clone());
            }
        }
        Self {
            router,
            credentials,
            caller,
        }
    }
}

const X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");
const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

impl Rest for RouterRest {
    fn send(&self, request: RestRequest) -> BoxFuture<'_, Result<RestAnswer, String>> {
        Box::pin(async move {
            let mut builder = Request::builder()
                .method(request.method)
                .uri(&request.target)
                .header(TOOL_HEADER, HeaderValue::from_static(request.tool));
            for (name, value) in &self.credentials {
                builder = builder.header(name, value);
            }
            let body = match request.body {
                Some(body) => {
                    builder = builder.header(header::CONTENT_TYPE, "application/json");
                    Body::from(body.to_string())
                }
                None => Body::empty(),
            };
            let mut request = builder.body(body).map_err(|e| e.to_string())?;
            if let Some(caller) = &self.caller {
                request.extensions_mut().insert(caller.clone());
            }
            let response = self
                .router
                .clone()
                .oneshot(request)
                .await
                .map_err(|e| e.to_string())?;
            let status = response.status();
            let bytes = response
                .into_body()
                .collect()
                .await
                .map_err(|e| e.to_string())?
                .to_bytes();
            Ok(RestAnswer {
                status,
                body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            })
        })
    }
}

/// A path segment, percent-encoded (everything but unreserved characters).
pub fn segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

/// A query string (without `?`) of the pairs, form-encoded.
pub fn query<'a>(pairs: impl IntoIterator<Item = (&'a str, String)>) -> String {
    let mut serializer = form_urlencoded::Serializer::new(String::new());
    for (name, value) in pairs {
        serializer.append_pair(name, &value);
    }
    serializer.finish()
}

/// A path and its query string (no `?` when the query is empty).
pub fn target(path: &str, query: &str) -> String {
    if query.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{query}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_and_queries_are_encoded() {
        assert_eq!(segment("order 42/x"), "order%2042%2Fx");
        assert_eq!(segment("é"), "%C3%A9");
        assert_eq!(segment("a-b.c_d~e"), "a-b.c_d~e");
        assert_eq!(
            query([("a", "x y".to_owned()), ("b", "{\"k\":1}".to_owned())]),
            "a=x+y&b=%7B%22k%22%3A1%7D"
        );
        assert_eq!(target("/p", ""), "/p");
        assert_eq!(target("/p", "a=1"), "/p?a=1");
    }
}
