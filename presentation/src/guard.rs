//! The one request layer every route is served behind. It receives the route's declaration
//! ([`Route`]) with the state, so every step reads the route's access, admission and policy
//! scope from it, with no lookup by path:
//!
//! 1. **Authentication** ([`access::authenticate`]): the credential becomes the request's
//!    [`Caller`](allsource_application::Caller) (401/403 for a bad one; public routes pass without one).
//! 2. **Admission** (the [`Admission`](allsource_application::use_cases::Admission) use case):
//!    tenant status (403), rate limit (429 `rate_limited`), query quota (429
//!    `quota_exceeded`). Every answer from here on, refusals included, carries the
//!    `X-RateLimit-*` headers of the decision ([`admission`]).
//! 3. **Authorization** ([`access::authorize`]): the caller's role must hold the route's
//!    permission (403 naming it).
//! 4. **Query parameters**: a route that declares none refuses any (400 naming the first).
//! 5. **Policies** ([`enforce::enforce`]): deny → 403, rate limit → 429, warn →
//!    `X-Policy-Warning` on the response.
//!
//! A request an MCP tool makes ([`crate::mcp`]) is recorded in the audit log as
//! `mcp.tool_call` once it is authenticated, with the tool, the route and the status.
//!
//! Every answer, refusals included, is counted in the route's metrics ([`metrics`]). A route
//! declared with [`Route::metrics_exposure`] is served as public while metrics are public by
//! configuration.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::HeaderName;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use allsource_application::ports::{AuditOutcome, AuditRecord};

use crate::dto::NoParams;
use crate::extract::parse_query;
use crate::metrics::{MetricsEndpoint, record_request};
use crate::routes::Route;
use crate::{AppState, access, admission, enforce};

/// The state of the request layer: the services and the route it guards.
#[derive(Clone)]
pub struct Guarded {
    pub state: AppState,
    pub route: Route,
}

/// The request layer (see the module docs).
pub async fn guard(
    State(Guarded { state, route }): State<Guarded>,
    request: Request,
    next: Next,
) -> Response {
    let started = std::time::Instant::now();
    let route = if route.metrics_exposure
        && request
            .extensions()
            .get::<MetricsEndpoint>()
            .is_some_and(MetricsEndpoint::is_public)
    {
        route.as_public()
    } else {
        route
    };
    let response = guarded(&state, &route, request, next).await;
    record_request(&route, response.status(), started);
    response
}

/// Steps 1 and 2, then the rest.
async fn guarded(state: &AppState, route: &Route, mut request: Request, next: Next) -> Response {
    let route = *route;
    let caller = match access::authenticate(state, &route, &mut request).await {
        Ok(caller) => caller,
        Err(response) => return response,
    };
    let client = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let rate = match state
        .admission
        .admit(caller.as_ref(), client, route.admission)
        .await
    {
        Ok(admitted) => admitted.rate,
        Err(refused) => return admission::refusal(refused),
    };
    // Only a tool's request pays for the clone (this runs on every request).
    let tool_call = mcp_tool(&request).and_then(|tool| Some((tool, caller.clone()?)));
    let request_id = tool_call.as_ref().and_then(|_| {
        request
            .headers()
            .get(crate::REQUEST_ID_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    });
    let response = match admitted(state, &route, caller, request, next).await {
        Ok(response) | Err(response) => response,
    };
    if let Some((tool, caller)) = tool_call {
        let status = response.status();
        let outcome = if status.is_success() {
            AuditOutcome::Success
        } else if matches!(status.as_u16(), 401 | 403) {
            AuditOutcome::Denied
        } else {
            AuditOutcome::Failure
        };
        let record = AuditRecord::new(
            caller.tenant().as_str(),
            caller.actor(),
            "mcp.tool_call",
            outcome,
        )
        .resource(tool)
        .details(serde_json::json!({
            "route": format!("{} {}", route.verb.as_str(), route.path),
            "status": status.as_u16(),
        }))
        .request_id(request_id);
        state.audit.record(record).await;
    }
    admission::with_rate_headers(response, rate.as_ref())
}

/// The MCP tool a request is made for ([`crate::mcp::rest::TOOL_HEADER`]), when it names one
/// of the tools.
fn mcp_tool(request: &Request) -> Option<&'static str> {
    let name = request
        .headers()
        .get(crate::mcp::rest::TOOL_HEADER)?
        .to_str()
        .ok()?;
    crate::mcp::catalog::tool(name).map(|spec| spec.name)
}

/// Steps 3 to 5, and the handler.
async fn admitted(
    state: &AppState,
    route: &Route,
    caller: Option<allsource_application::Caller>,
    mut request: Request,
    next: Next,
) -> Result<Response, Response> {
    access::authorize(state, route, caller.as_ref(), &mut request).await?;
    if !route.takes_query && request.uri().query().is_some() {
        parse_query::<NoParams>(request.uri().query()).map_err(IntoResponse::into_response)?;
    }
    let (request, warnings) = enforce::enforce(&state.policies, route, caller.as_ref(), request)
        .await
        .map_err(IntoResponse::into_response)?;
    let mut response = next.run(request).await;
    let name = HeaderName::from_static(enforce::POLICY_WARNING_HEADER);
    for warning in warnings {
        response.headers_mut().append(name.clone(), warning);
    }
    Ok(response)
}
