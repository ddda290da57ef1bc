//! Who may call which route: authentication (credential → [`Caller`]) and authorization (the
//! caller's role must hold the route's [`Permission`]).
//!
//! Every route declares its [`Access`] where it is added ([`crate::routes`]); a route cannot
//! be added without one (closed by default). Both steps run in the request layer
//! ([`crate::guard`]), after routing: unknown routes answer 404 without asking for credentials.
//!
//! Refusals go to the audit log: `access.denied` for a 403 of the role table, `auth.rejected`
//! when a credential was sent and refused (401, or 403 from the authenticator); a request
//! without any credential is not recorded: that is every anonymous probe.

use std::sync::Arc;

use allsource_application::Caller;
use allsource_application::auth::{AuthError, Authenticate, Credential};
use allsource_application::ports::{AuditOutcome, AuditRecord};
use allsource_application::use_cases::AuditTrail;
use allsource_domain::Permission;
use axum::extract::Request;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;
use crate::routes::Route;
use crate::{AppState, REQUEST_ID_HEADER};

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

/// The `access_token` query parameter (browsers cannot set headers on a WebSocket handshake
/// or an `EventSource`), for routes that accept it. The span of the request records the path
/// only, so the token is never logged.
fn query_token(query: Option<&str>) -> Option<Credential> {
    form_urlencoded::parse(query?.as_bytes())
        .find(|(name, _)| name == "access_token")
        .map(|(_, value)| value.trim().to_owned())
        .filter(|token| !token.is_empty())
        .map(|token| {
            if token.starts_with("ask_") {
                Credential::ApiKey(token)
            } else {
                Credential::Bearer(token)
            }
        })
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

/// Authentication: puts the request's [`Caller`] into its extensions and returns it (or
/// answers 401/403). Public routes pass without a credential; a credential sent to them is
/// still checked, so a bad one is never silently ignored (with auth on).
///
/// # Errors
/// The response to send instead of serving the request.
pub async fn authenticate(
    state: &AppState,
    route: &Route,
    request: &mut Request,
) -> Result<Option<Caller>, Response> {
    let access = route.access;
    match &state.auth {
        AuthMode::Disabled => {
            // An in-process layer (tests, embedding) may have set the caller already.
            if request.extensions().get::<Caller>().is_none() {
                request.extensions_mut().insert(Caller::default_tenant());
            }
        }
        AuthMode::Enabled(authenticator) => match credential(request.headers()).map(|found| {
            found.or_else(|| {
                route
                    .token_in_query
                    .then(|| query_token(request.uri().query()))
                    .flatten()
            })
        }) {
            Err(e) => return Err(e.into_response()),
            Ok(None) if access == Access::Public => {}
            Ok(None) => {
                return Err(ApiError::unauthorized(
                    "credentials are required: send 'Authorization: Bearer <token>' or \
                     'X-API-Key: ask_...'",
                )
                .into_response());
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
                        audit(&state.audit, request, record).await;
                    }
                    return Err(error.into_response());
                }
            },
        },
    }
    Ok(request.extensions().get::<Caller>().cloned())
}

/// Authorization, after [`authenticate`]: the caller's role must hold the route's permission.
///
/// # Errors
/// 401 without a caller on a non-public route, 403 naming the missing permission.
pub async fn authorize(
    state: &AppState,
    route: &Route,
    caller: Option<&Caller>,
    // `&mut`: a shared reference held across an await would need the body to be `Sync`.
    request: &mut Request,
) -> Result<(), Response> {
    let required = match route.access {
        Access::Public => return Ok(()),
        Access::Authenticated => None,
        Access::Requires(permission) => Some(permission),
    };
    let Some(caller) = caller else {
        return Err(ApiError::unauthorized("credentials are required").into_response());
    };
    if let Some(permission) = required
        && !caller.can(permission)
    {
        let why = format!(
            "role '{}' lacks the '{permission}' permission this route needs",
            caller.role()
        );
        let record = denied(caller, route, request, &why);
        audit(&state.audit, request, record).await;
        return Err(ApiError::forbidden(why)
            .with_member("required_permission", permission.as_str())
            .into_response());
    }
    Ok(())
}

/// An `access.denied` record for the request.
fn denied(caller: &Caller, route: &Route, request: &Request, why: &str) -> AuditRecord {
    AuditRecord::new(
        caller.tenant().as_str(),
        caller.actor(),
        "access.denied",
        AuditOutcome::Denied,
    )
    .resource(format!("{} {}", route.verb.as_str(), route.path))
    .details(serde_json::json!({
        "role": caller.role().as_str(),
        "path": request.uri().path(),
        "reason": why,
    }))
}

/// Records to the audit trail, with the request id. (It takes what it needs from the request
/// before awaiting: a body is not `Sync`.)
fn audit(
    trail: &AuditTrail,
    request: &Request,
    record: AuditRecord,
) -> impl Future<Output = ()> + Send + 'static {
    let trail = trail.clone();
    let request_id = request
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    async move {
        trail.record(record.request_id(request_id)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
