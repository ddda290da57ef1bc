//! `/api/v1/auth/*`: login, refresh, me, API keys, users.
//!
//! `POST /api/v1/auth/register` does not let anyone register with a role of their choosing:
//! it is the same admin-only user creation as `POST /api/v1/auth/users` (403 for non-admins).
//! Password and key hashes are never returned; an API key is shown once, when created.

use allsource_application::use_cases::identity::{
    ApiKeyView, CreateApiKeyInput, CreateUserInput, Identity, IdentityError, LoginInput, MeView,
    TokenPair, UserView,
};
use allsource_domain::Permission::Admin;
use allsource_domain::{Permission, Role};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::access::Access::{Authenticated, Public, Requires};
use crate::auth::CallerExtractor;
use crate::dto::{DeletedResponse, timestamp};
use crate::error::ApiError;
use crate::extract::{JsonBody, PathParam};
use crate::openapi::{string_enum, string_enum_list};
use crate::routes::{Route, Routes};

/// The identity routes, with the access each needs.
pub fn routes() -> Routes {
    // Every route but `me` needs the identity service: 404 on a server without authentication.
    let identity = |route: Route| route.problems(&[404]);
    Routes::new()
        // There is no self-registration: `register` is admin-only user creation.
        .add(
            identity(Route::post("/api/v1/auth/register", Requires(Admin)))
                .body::<CreateUserRequest>()
                .returns::<UserResponse>()
                .responds(&[201])
                .problems(&[404, 409]),
            create_user,
        )
        .add(
            identity(Route::post("/api/v1/auth/login", Public))
                .body::<LoginRequest>()
                .returns::<TokenResponse>(),
            login,
        )
        .add(
            identity(Route::post("/api/v1/auth/refresh", Public))
                .body::<RefreshRequest>()
                .returns::<TokenResponse>(),
            refresh,
        )
        .add(
            Route::get("/api/v1/auth/me", Authenticated).returns::<MeResponse>(),
            me,
        )
        // Any caller manages its own keys; the use case keeps the role at or below its own.
        .add(
            identity(Route::post("/api/v1/auth/api-keys", Authenticated))
                .body::<CreateApiKeyRequest>()
                .returns::<ApiKeyResponse>()
                .responds(&[201]),
            create_api_key,
        )
        .add(
            identity(Route::get("/api/v1/auth/api-keys", Authenticated))
                .returns::<ApiKeyListResponse>(),
            list_api_keys,
        )
        .add(
            identity(Route::delete("/api/v1/auth/api-keys/{id}", Authenticated))
                .returns::<ApiKeyResponse>(),
            revoke_api_key,
        )
        .add(
            identity(Route::post("/api/v1/auth/users", Requires(Admin)))
                .body::<CreateUserRequest>()
                .returns::<UserResponse>()
                .responds(&[201])
                .problems(&[404, 409]),
            create_user,
        )
        .add(
            identity(Route::get("/api/v1/auth/users", Requires(Admin)))
                .returns::<UserListResponse>(),
            list_users,
        )
        .add(
            identity(Route::get("/api/v1/auth/users/{id}", Requires(Admin)))
                .returns::<UserResponse>(),
            get_user,
        )
        .add(
            identity(Route::delete("/api/v1/auth/users/{id}", Requires(Admin)))
                .returns::<DeletedResponse>(),
            delete_user,
        )
}

impl From<IdentityError> for ApiError {
    fn from(e: IdentityError) -> Self {
        match e {
            IdentityError::Validation(errors) => ApiError::validation(errors),
            IdentityError::Unauthorized(why) => ApiError::unauthorized(why),
            IdentityError::Forbidden(why) => ApiError::forbidden(why),
            IdentityError::NotFound(why) => ApiError::not_found(why),
            IdentityError::Conflict(why) => ApiError::conflict(why),
            IdentityError::Throttled { retry_after_secs } => ApiError::rate_limited(
                "too many failed logins for this username; try again later",
                retry_after_secs,
            ),
            IdentityError::Quota(quota) => ApiError::quota_exceeded(&quota),
            IdentityError::Unavailable(why) => ApiError::unavailable(why),
            IdentityError::Internal(cause) => ApiError::internal(cause),
        }
    }
}

fn identity(state: &AppState) -> Result<&Identity, ApiError> {
    state.identity.as_ref().ok_or_else(|| {
        ApiError::not_found(
            "authentication is disabled on this server (--dev or auth.enabled = false)",
        )
    })
}

/// A role's name.
fn role() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    string_enum(Role::ALL.map(Role::as_str), false)
}

/// A role's name, or `null` (the caller's).
fn role_or_null() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    string_enum(Role::ALL.map(Role::as_str), true)
}

/// The body of `POST /api/v1/auth/login`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    pub username: String,
    pub password: String,
    #[serde(default)]
    pub tenant_id: Option<String>,
}

/// The body of `POST /api/v1/auth/refresh`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    pub refresh_token: String,
}

/// The body of `POST /api/v1/auth/users` (and `register`).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUserRequest {
    pub username: String,
    pub password: String,
    #[schema(schema_with = role)]
    pub role: String,
    /// Default: the creator's tenant (only operators name another).
    #[serde(default)]
    pub tenant_id: Option<String>,
}

/// The body of `POST /api/v1/auth/api-keys`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateApiKeyRequest {
    pub name: String,
    /// Default: the caller's role (never above it).
    #[serde(default)]
    #[schema(schema_with = role_or_null)]
    pub role: Option<String>,
    /// RFC 3339, in the future; absent: no expiry.
    #[serde(default)]
    #[schema(schema_with = crate::openapi::time_or_null)]
    pub expires_at: Option<String>,
}

/// A user (never its password).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UserResponse {
    pub id: String,
    pub username: String,
    pub tenant_id: String,
    #[schema(schema_with = role)]
    pub role: &'static str,
    pub created_at: String,
}

impl From<&UserView> for UserResponse {
    fn from(user: &UserView) -> Self {
        Self {
            id: user.id.clone(),
            username: user.username.clone(),
            tenant_id: user.tenant_id.clone(),
            role: user.role.as_str(),
            created_at: timestamp(user.created_at),
        }
    }
}

/// A login's tokens.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TokenResponse {
    pub access_token: String,
    /// Always `Bearer`.
    #[schema(schema_with = bearer)]
    pub token_type: &'static str,
    pub expires_in: i64,
    pub refresh_token: String,
    pub refresh_expires_in: i64,
    pub user: UserResponse,
}

impl From<&TokenPair> for TokenResponse {
    fn from(pair: &TokenPair) -> Self {
        Self {
            access_token: pair.access_token.clone(),
            token_type: "Bearer",
            expires_in: pair.expires_in,
            refresh_token: pair.refresh_token.clone(),
            refresh_expires_in: pair.refresh_expires_in,
            user: UserResponse::from(&pair.user),
        }
    }
}

fn bearer() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    string_enum(["Bearer"], false)
}

/// An API key (its secret only in the answer to its creation).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ApiKeyResponse {
    pub id: String,
    pub name: String,
    pub tenant_id: String,
    #[schema(schema_with = role)]
    pub role: &'static str,
    pub owner_user_id: String,
    pub prefix: String,
    pub created_at: String,
    #[schema(required = true)]
    pub expires_at: Option<String>,
    #[schema(required = true)]
    pub revoked_at: Option<String>,
    #[schema(required = true)]
    pub last_used_at: Option<String>,
    /// Only in the answer to creation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

impl From<&ApiKeyView> for ApiKeyResponse {
    fn from(key: &ApiKeyView) -> Self {
        Self {
            id: key.id.clone(),
            name: key.name.clone(),
            tenant_id: key.tenant_id.clone(),
            role: key.role.as_str(),
            owner_user_id: key.owner_user_id.clone(),
            prefix: key.prefix.clone(),
            created_at: timestamp(key.created_at),
            expires_at: key.expires_at.map(timestamp),
            revoked_at: key.revoked_at.map(timestamp),
            last_used_at: key.last_used_at.map(timestamp),
            key: None,
        }
    }
}

/// `GET /api/v1/auth/users`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UserListResponse {
    pub total: usize,
    pub users: Vec<UserResponse>,
}

/// `GET /api/v1/auth/api-keys`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ApiKeyListResponse {
    pub total: usize,
    pub api_keys: Vec<ApiKeyResponse>,
}

fn permissions() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    string_enum_list(Permission::ALL.map(Permission::as_str))
}

fn caller_kind() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    string_enum(["user", "api_key", "system"], false)
}

/// Who a credential stands for.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MeResponse {
    pub tenant_id: String,
    #[schema(schema_with = role)]
    pub role: &'static str,
    #[schema(schema_with = permissions)]
    pub permissions: Vec<&'static str>,
    /// `user`, `api_key` or `system` (auth disabled).
    #[serde(rename = "type")]
    #[schema(schema_with = caller_kind)]
    pub kind: &'static str,
    #[schema(required = true)]
    pub user_id: Option<String>,
    #[schema(required = true)]
    pub username: Option<String>,
    #[schema(required = true)]
    pub api_key_id: Option<String>,
    #[schema(required = true)]
    pub api_key_name: Option<String>,
}

impl From<MeView> for MeResponse {
    fn from(me: MeView) -> Self {
        Self {
            tenant_id: me.tenant_id,
            role: me.role.as_str(),
            permissions: me.permissions.iter().map(|p| p.as_str()).collect(),
            kind: me.kind,
            user_id: me.user_id,
            username: me.username,
            api_key_id: me.api_key_id,
            api_key_name: me.api_key_name,
        }
    }
}

/// `POST /api/v1/auth/login` → 200 tokens.
pub async fn login(
    State(state): State<AppState>,
    JsonBody(request): JsonBody<LoginRequest>,
) -> Result<Response, ApiError> {
    let pair = identity(&state)?
        .login(LoginInput {
            username: request.username,
            password: request.password,
            tenant_id: request.tenant_id,
        })
        .await?;
    Ok(Json(TokenResponse::from(&pair)).into_response())
}

/// `POST /api/v1/auth/refresh` → 200 new tokens (the old refresh token is used up).
pub async fn refresh(
    State(state): State<AppState>,
    JsonBody(request): JsonBody<RefreshRequest>,
) -> Result<Response, ApiError> {
    let pair = identity(&state)?.refresh(&request.refresh_token).await?;
    Ok(Json(TokenResponse::from(&pair)).into_response())
}

/// `GET /api/v1/auth/me` → who the credential stands for.
pub async fn me(CallerExtractor(caller): CallerExtractor) -> Json<MeResponse> {
    Json(MeResponse::from(Identity::me(&caller)))
}

/// `POST /api/v1/auth/users` and `POST /api/v1/auth/register` → 201 the user.
pub async fn create_user(
    State(state): State<AppState>,
    CallerExtractor(caller): CallerExtractor,
    JsonBody(request): JsonBody<CreateUserRequest>,
) -> Result<Response, ApiError> {
    let user = identity(&state)?
        .create_user(
            &caller,
            CreateUserInput {
                username: request.username,
                password: request.password,
                role: request.role,
                tenant_id: request.tenant_id,
            },
        )
        .await?;
    Ok((StatusCode::CREATED, Json(UserResponse::from(&user))).into_response())
}

/// `GET /api/v1/auth/users` → the tenant's users.
pub async fn list_users(
    State(state): State<AppState>,
    CallerExtractor(caller): CallerExtractor,
) -> Result<Response, ApiError> {
    let users = identity(&state)?.list_users(&caller).await?;
    let users: Vec<UserResponse> = users.iter().map(UserResponse::from).collect();
    Ok(Json(UserListResponse {
        total: users.len(),
        users,
    })
    .into_response())
}

/// `GET /api/v1/auth/users/{id}`.
pub async fn get_user(
    State(state): State<AppState>,
    CallerExtractor(caller): CallerExtractor,
    PathParam(id): PathParam,
) -> Result<Response, ApiError> {
    let user = identity(&state)?.get_user(&caller, &id).await?;
    Ok(Json(UserResponse::from(&user)).into_response())
}

/// `DELETE /api/v1/auth/users/{id}` → 200; the user's API keys are revoked.
pub async fn delete_user(
    State(state): State<AppState>,
    CallerExtractor(caller): CallerExtractor,
    PathParam(id): PathParam,
) -> Result<Response, ApiError> {
    identity(&state)?.delete_user(&caller, &id).await?;
    Ok(Json(DeletedResponse::new(&id)).into_response())
}

/// `POST /api/v1/auth/api-keys` → 201 with the key, shown this once.
pub async fn create_api_key(
    State(state): State<AppState>,
    CallerExtractor(caller): CallerExtractor,
    JsonBody(request): JsonBody<CreateApiKeyRequest>,
) -> Result<Response, ApiError> {
    let created = identity(&state)?
        .create_api_key(
            &caller,
            CreateApiKeyInput {
                name: request.name,
                role: request.role,
                expires_at: request.expires_at,
            },
        )
        .await?;
    let mut body = ApiKeyResponse::from(&created.view);
    body.key = Some(created.key);
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// `GET /api/v1/auth/api-keys` → the tenant's keys (admins) or one's own.
pub async fn list_api_keys(
    State(state): State<AppState>,
    CallerExtractor(caller): CallerExtractor,
) -> Result<Response, ApiError> {
    let keys = identity(&state)?.list_api_keys(&caller).await?;
    let keys: Vec<ApiKeyResponse> = keys.iter().map(ApiKeyResponse::from).collect();
    Ok(Json(ApiKeyListResponse {
        total: keys.len(),
        api_keys: keys,
    })
    .into_response())
}

/// `DELETE /api/v1/auth/api-keys/{id}` → 200 the revoked key.
pub async fn revoke_api_key(
    State(state): State<AppState>,
    CallerExtractor(caller): CallerExtractor,
    PathParam(id): PathParam,
) -> Result<Response, ApiError> {
    let key = identity(&state)?.revoke_api_key(&caller, &id).await?;
    Ok(Json(ApiKeyResponse::from(&key)).into_response())
}
