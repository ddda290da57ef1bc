//! Who may call which route: authentication (credential → [`Caller`]) and authorization (the
//! caller's role must hold the route's [`Permission`]).
//!
//! Every route of the router is listed in [`ROUTE_ACCESS`] with the access it needs. The list
//! is the one place to read who can do what over HTTP; a test checks that every route of the
//! router is in it, and another walks every route × every role. A route missing from the list
//! is refused (closed by default), never served.
//!
//! Both middlewares are route layers, so they run after routing: unknown routes answer 404
//! without asking for credentials, and `MatchedPath` names the route's pattern.
//!
//! Refusals go to the audit log (through the [`AuditTrail`] the router puts into every
//! request's extensions): `access.denied` for a 403 of the role table, `auth.rejected` when a
//! credential was sent and refused (401, or 403 from the authenticator); a request without any
//! credential is not recorded: that is every anonymous probe.

use std::sync::Arc;

use allsource_application::Caller;
use allsource_application::auth::{AuthError, Authenticate, Credential};
use allsource_application::ports::{AuditOutcome, AuditRecord};
use allsource_application::use_cases::AuditTrail;
use allsource_domain::Permission;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::REQUEST_ID_HEADER;
use crate::error::ApiError;

/// What a route needs from its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No credential needed (health checks, login).
    Public,
    /// Any valid credential, whatever its role (`/auth/me`, changing one's own keys).
    Authenticated,
    /// A credential whose role holds the permission.
    Requires(Permission),
}

/// Every route, by method and path pattern (as registered with axum), with its access.
pub const ROUTE_ACCESS: &[(&str, &str, Access)] = {
    use Access::*;
    use Permission::*;
    &[
        ("GET", "/health", Public),
        ("GET", "/health/ready", Public),
        ("POST", "/api/v1/events", Requires(Write)),
        ("POST", "/api/v1/events/batch", Requires(Write)),
        ("GET", "/api/v1/events/query", Requires(Read)),
        ("GET", "/api/v1/events/{event_id}", Requires(Read)),
        ("GET", "/api/v1/entities", Requires(Read)),
        ("GET", "/api/v1/entities/{entity_id}/events", Requires(Read)),
        ("GET", "/api/v1/entities/{entity_id}/state", Requires(Read)),
        ("GET", "/api/v1/event-types", Requires(Read)),
        ("GET", "/api/v1/stats", Requires(Read)),
        ("GET", "/api/v1/projections", Requires(Read)),
        ("POST", "/api/v1/projections", Requires(ManagePipelines)),
        ("GET", "/api/v1/projections/{name}", Requires(Read)),
        (
            "DELETE",
            "/api/v1/projections/{name}",
            Requires(ManagePipelines),
        ),
        ("GET", "/api/v1/projections/{name}/state", Requires(Read)),
        (
            "GET",
            "/api/v1/projections/{name}/state/{key}",
            Requires(Read),
        ),
        (
            "POST",
            "/api/v1/projections/{name}/rebuild",
            Requires(ManagePipelines),
        ),
        ("GET", "/api/v1/replay", Requires(Read)),
        ("POST", "/api/v1/replay", Requires(ManagePipelines)),
        ("GET", "/api/v1/replay/{id}", Requires(Read)),
        ("DELETE", "/api/v1/replay/{id}", Requires(ManagePipelines)),
        (
            "POST",
            "/api/v1/replay/{id}/cancel",
            Requires(ManagePipelines),
        ),
        ("POST", "/api/v1/schemas", Requires(ManageSchemas)),
        ("GET", "/api/v1/schemas", Requires(Read)),
        ("POST", "/api/v1/schemas/validate", Requires(Read)),
        ("GET", "/api/v1/schemas/{subject}", Requires(Read)),
        ("GET", "/api/v1/schemas/{subject}/versions", Requires(Read)),
        (
            "PUT",
            "/api/v1/schemas/{subject}/compatibility",
            Requires(ManageSchemas),
        ),
        // Identity: there is no self-registration; `register` is admin-only user creation.
        ("POST", "/api/v1/auth/register", Requires(Admin)),
        ("POST", "/api/v1/auth/login", Public),
        ("POST", "/api/v1/auth/refresh", Public),
        ("GET", "/api/v1/auth/me", Authenticated),
        // Any caller manages its own keys; the use case keeps the role at or below its own.
        ("POST", "/api/v1/auth/api-keys", Authenticated),
        ("GET", "/api/v1/auth/api-keys", Authenticated),
        ("DELETE", "/api/v1/auth/api-keys/{id}", Authenticated),
        ("POST", "/api/v1/auth/users", Requires(Admin)),
        ("GET", "/api/v1/auth/users", Requires(Admin)),
        ("GET", "/api/v1/auth/users/{id}", Requires(Admin)),
        ("DELETE", "/api/v1/auth/users/{id}", Requires(Admin)),
        ("POST", "/api/v1/snapshots", Requires(Write)),
        ("GET", "/api/v1/snapshots", Requires(Read)),
        (
            "GET",
            "/api/v1/snapshots/{entity_id}/latest",
            Requires(Read),
        ),
        ("POST", "/api/v1/compaction/trigger", Requires(Admin)),
        ("GET", "/api/v1/compaction/stats", Requires(Admin)),
        ("GET", "/api/v1/audit", Requires(Admin)),
        ("GET", "/api/v1/policies", Requires(Admin)),
        ("POST", "/api/v1/policies", Requires(Admin)),
        ("POST", "/api/v1/policies/evaluate", Requires(Admin)),
        ("GET", "/api/v1/policies/{id}", Requires(Admin)),
        ("PUT", "/api/v1/policies/{id}", Requires(Admin)),
        ("DELETE", "/api/v1/policies/{id}", Requires(Admin)),
        ("GET", "/api/v1/tenants", Requires(ManageTenants)),
        ("POST", "/api/v1/tenants", Requires(ManageTenants)),
        ("GET", "/api/v1/tenants/{id}", Requires(ManageTenants)),
        ("PUT", "/api/v1/tenants/{id}", Requires(ManageTenants)),
        ("DELETE", "/api/v1/tenants/{id}", Requires(ManageTenants)),
        ("GET", "/api/v1/tenants/{id}/stats", Requires(Read)),
        (
            "GET",
            "/api/v1/tenants/{id}/quotas",
            Requires(ManageTenants),
        ),
        (
            "PUT",
            "/api/v1/tenants/{id}/quotas",
            Requires(ManageTenants),
        ),
        (
            "POST",
            "/api/v1/tenants/{id}/activate",
            Requires(ManageTenants),
        ),
        (
            "POST",
            "/api/v1/tenants/{id}/deactivate",
            Requires(ManageTenants),
        ),
    ]
};

/// The access declared for a route, if it is declared.
pub fn access_for(method: &Method, path: &str) -> Option<Access> {
    ROUTE_ACCESS
        .iter()
        .find(|(m, p, _)| *p == path && *m == method.as_str())
        .map(|(_, _, access)| *access)
}

/// How requests are authenticated.
#[derive(Clone)]
pub enum AuthMode {
    /// Authentication off (`--dev`, `auth.enabled = false`): every request is an admin of
    /// tenant `default`; credentials sent anyway are ignored.
    Disabled,
    /// Credentials are checked by the authenticator.
    Enabled(Arc<dyn Authenticate>),
}

/// The credential of a request: `Authorization: Bearer ...`, else `X-API-Key`.
///
/// # Errors
/// 401 for an `Authorization` header that is not `Bearer <token>`.
pub fn credential(headers: &HeaderMap) -> Result<Option<Credential>, ApiError> {
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let value = value
            .to_str()
            .map_err(|_| ApiError::unauthorized("the Authorization header is not valid text"))?;
        let token = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                ApiError::unauthorized("the Authorization header must be 'Bearer <token>'")
            })?;
        return Ok(Some(Credential::Bearer(token.to_owned())));
    }
    if let Some(value) = headers.get("x-api-key") {
        let key = value
            .to_str()
            .ok()
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .ok_or_else(|| ApiError::unauthorized("the X-API-Key header is empty or not text"))?;
        return Ok(Some(Credential::ApiKey(key.to_owned())));
    }
    Ok(None)
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::Unauthorized(why) => ApiError::unauthorized(why),
            AuthError::Forbidden(why) => ApiError::forbidden(why),
            AuthError::Unavailable(why) => ApiError::unavailable(why),
            AuthError::Internal(cause) => ApiError::internal(cause),
        }
    }
}

/// Route layer: puts the request's [`Caller`] into its extensions (or answers 401/403).
/// Public routes pass without a credential; a credential sent to them is still checked, so a
/// bad one is never silently ignored (with auth on).
pub async fn authenticate(
    State(mode): State<AuthMode>,
    mut request: Request,
    next: Next,
) -> Response {
    match &mode {
        AuthMode::Disabled => {
            // An in-process layer (tests, embedding) may have set the caller already.
            if request.extensions().get::<Caller>().is_none() {
                request.extensions_mut().insert(Caller::default_tenant());
            }
        }
        AuthMode::Enabled(authenticator) => {
            let public = route_access(&request) == Some(Access::Public);
            match credential(request.headers()) {
                Err(e) => return e.into_response(),
                Ok(None) if public => {}
                Ok(None) => {
                    return ApiError::unauthorized(
                        "credentials are required: send 'Authorization: Bearer <token>' or \
                         'X-API-Key: ask_...'",
                    )
                    .into_response();
                }
                Ok(Some(credential)) => match authenticator.authenticate(credential).await {
                    Ok(caller) => {
                        request.extensions_mut().insert(caller);
                    }
                    Err(e) => {
                        let error = ApiError::from(e);
                        // 401: a bad credential; 403: a valid one that may not act (its
                        // tenant is deactivated). The tenant is not known: `default` keeps
                        // these records, for the operators.
                        let outcome = match error.status() {
                            axum::http::StatusCode::UNAUTHORIZED => Some(AuditOutcome::Failure),
                            axum::http::StatusCode::FORBIDDEN => Some(AuditOutcome::Denied),
                            _ => None,
                        };
                        if let Some(outcome) = outcome {
                            let record = AuditRecord::new(
                                allsource_domain::TenantId::default_tenant().as_str(),
                                "anonymous",
                                "auth.rejected",
                                outcome,
                            )
                            .details(serde_json::json!({"reason": error.detail()}));
                            audit(&request, record).await;
                        }
                        return error.into_response();
                    }
                },
            }
        }
    }
    next.run(request).await
}

fn route_access(request: &Request) -> Option<Access> {
    let path = request.extensions().get::<MatchedPath>()?;
    access_for(request.method(), path.as_str())
}

/// Route layer, inside [`authenticate`]: the caller's role must hold the route's permission.
pub async fn authorize(request: Request, next: Next) -> Response {
    let Some(access) = route_access(&request) else {
        let path = request
            .extensions()
            .get::<MatchedPath>()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_default();
        tracing::error!(method = %request.method(), %path, "route has no declared access; refused");
        let why = "this route has no declared access and is refused";
        let record = request
            .extensions()
            .get::<Caller>()
            .map(|caller| denied(caller, &request, why));
        if let Some(record) = record {
            audit(&request, record).await;
        }
        return ApiError::forbidden(why).into_response();
    };
    let required = match access {
        Access::Public => return next.run(request).await,
        Access::Authenticated => None,
        Access::Requires(permission) => Some(permission),
    };
    let Some(caller) = request.extensions().get::<Caller>().cloned() else {
        return ApiError::unauthorized("credentials are required").into_response();
    };
    if let Some(permission) = required
        && !caller.can(permission)
    {
        let why = format!(
            "role '{}' lacks the '{permission}' permission this route needs",
            caller.role()
        );
        let record = denied(&caller, &request, &why);
        audit(&request, record).await;
        return ApiError::forbidden(why)
            .with_member("required_permission", permission.as_str())
            .into_response();
    }
    next.run(request).await
}

/// An `access.denied` record for the request.
fn denied(caller: &Caller, request: &Request, why: &str) -> AuditRecord {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("", MatchedPath::as_str);
    AuditRecord::new(
        caller.tenant().as_str(),
        caller.actor(),
        "access.denied",
        AuditOutcome::Denied,
    )
    .resource(format!("{} {route}", request.method()))
    .details(serde_json::json!({
        "role": caller.role().as_str(),
        "path": request.uri().path(),
        "reason": why,
    }))
}

/// Records to the request's audit trail, if the router gave it one, with the request id.
/// (It takes what it needs from the request before awaiting: a body is not `Sync`.)
fn audit(request: &Request, record: AuditRecord) -> impl Future<Output = ()> + Send + 'static {
    let trail = request.extensions().get::<AuditTrail>().cloned();
    let request_id = request
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    async move {
        if let Some(trail) = trail {
            trail.record(record.request_id(request_id)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_declared_route_is_declared_once() {
        for (i, (m, p, _)) in ROUTE_ACCESS.iter().enumerate() {
            let again = ROUTE_ACCESS[i + 1..]
                .iter()
                .any(|(m2, p2, _)| m == m2 && p == p2);
            assert!(!again, "{m} {p} is declared twice");
        }
    }

    #[test]
    fn credentials_are_read_from_either_header() {
        let mut headers = HeaderMap::new();
        assert_eq!(credential(&headers).unwrap(), None);
        headers.insert("x-api-key", "ask_abc".parse().unwrap());
        assert_eq!(
            credential(&headers).unwrap(),
            Some(Credential::ApiKey("ask_abc".into()))
        );
        headers.insert(header::AUTHORIZATION, "Bearer tok".parse().unwrap());
        assert_eq!(
            credential(&headers).unwrap(),
            Some(Credential::Bearer("tok".into()))
        );
        headers.insert(header::AUTHORIZATION, "Basic dXNlcg==".parse().unwrap());
        assert!(credential(&headers).is_err());
        headers.insert(header::AUTHORIZATION, "Bearer ".parse().unwrap());
        assert!(credential(&headers).is_err());
    }
}
