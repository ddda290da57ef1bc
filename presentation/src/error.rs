//! [`ApiError`]: the one error type of the HTTP layer. Every failure a client can see is one of
//! its [`ErrorCode`]s, answered as an RFC 9457 problem document
//! (`Content-Type: application/problem+json`):
//!
//! ```json
//! {"type": "https://allsource.dev/problems/version-conflict", "title": "Version conflict",
//!  "status": 409, "detail": "...", "error": "version_conflict",
//!  "entity_id": "order-42", "expected_version": 1, "current_version": 2}
//! ```
//!
//! `error` is the stable snake_case code clients branch on; `type` is derived from it
//! (`https://allsource.dev/problems/<code with dashes>`), `title` is fixed per code, `detail`
//! explains this occurrence. Field-level problems are listed in `errors: [{"field", "message"}]`
//! with the field's path as the client wrote it (`events[3].entity_id`).
//!
//! A 5xx never carries internal text (API.md): the cause is logged here, inside the request's
//! span, which holds the request id, and the client gets a generic `detail` and the id in the
//! `x-request-id` header.

use allsource_application::use_cases::{AppendError, FieldError, QuotaExceeded, ReadError};
use allsource_domain::ExpectedVersion;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Map, Value};

/// The stable error codes of the API, with their status, title and problem type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// 400: malformed or invalid input.
    ValidationFailed,
    /// 404: unknown resource or route.
    NotFound,
    /// 405: the route exists, the method does not (an extension: API.md lists no code for it).
    MethodNotAllowed,
    /// 409: an `expected_version` did not hold.
    VersionConflict,
    /// 409: the event id is taken by an event with other content.
    DuplicateEventId,
    /// 413: request body, event or batch too large.
    PayloadTooLarge,
    /// 415: the body is not `application/json`.
    UnsupportedMediaType,
    /// 414: the request target is over the server's limit (an extension).
    UriTooLong,
    /// 431: the request's headers are over the server's limit (an extension).
    HeaderFieldsTooLarge,
    /// Any other 4xx/5xx answered below the router without a body, made a problem document
    /// with its own status (an extension; its status is the one answered, 400 nominally).
    HttpError,
    /// 401: no credential, or one that is invalid, expired or revoked.
    Unauthorized,
    /// 403: authenticated, but not allowed (role, tenant deactivated, policy).
    Forbidden,
    /// 409: the resource exists already or is in a state that forbids the change (an
    /// extension: API.md names codes only for event conflicts).
    Conflict,
    /// 422: valid JSON that fails a registered schema. Its `error` is `validation_failed`
    /// (API.md's list has no code of its own for 422); the status tells the two apart.
    SchemaValidationFailed,
    /// 429: the rate limit is exhausted; answered with `Retry-After`.
    RateLimited,
    /// 429: a quota of the tenant is exhausted; answered with `Retry-After`.
    QuotaExceeded,
    /// 408: a query ran past its time limit and was cancelled (an extension).
    QueryTimeout,
    /// 422: a query's answer or working memory is over its bound (an extension).
    QueryTooLarge,
    /// 503: storage unavailable or not ready; answered with `Retry-After`.
    Unavailable,
    /// 500: a bug or an unexpected failure; details only in the log.
    Internal,
}

impl ErrorCode {
    /// The `error` member.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::ValidationFailed => "validation_failed",
            Self::NotFound => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::VersionConflict => "version_conflict",
            Self::DuplicateEventId => "duplicate_event_id",
            Self::PayloadTooLarge => "payload_too_large",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::UriTooLong => "uri_too_long",
            Self::HeaderFieldsTooLarge => "header_fields_too_large",
            Self::HttpError => "http_error",
            Self::Unauthorized => "unauthorized",
            Self::Forbidden => "forbidden",
            Self::Conflict => "conflict",
            Self::SchemaValidationFailed => "validation_failed",
            Self::RateLimited => "rate_limited",
            Self::QuotaExceeded => "quota_exceeded",
            Self::QueryTimeout => "query_timeout",
            Self::QueryTooLarge => "query_too_large",
            Self::Unavailable => "unavailable",
            Self::Internal => "internal",
        }
    }

    pub const fn status(self) -> StatusCode {
        match self {
            Self::ValidationFailed => StatusCode::BAD_REQUEST,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::VersionConflict | Self::DuplicateEventId => StatusCode::CONFLICT,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::UriTooLong => StatusCode::URI_TOO_LONG,
            Self::HeaderFieldsTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Self::HttpError => StatusCode::BAD_REQUEST,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Forbidden => StatusCode::FORBIDDEN,
            Self::Conflict => StatusCode::CONFLICT,
            Self::SchemaValidationFailed => StatusCode::UNPROCESSABLE_ENTITY,
            Self::RateLimited | Self::QuotaExceeded => StatusCode::TOO_MANY_REQUESTS,
            Self::QueryTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::QueryTooLarge => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The `title` member: the same for every occurrence of the code.
    pub const fn title(self) -> &'static str {
        match self {
            Self::ValidationFailed => "Validation failed",
            Self::NotFound => "Not found",
            Self::MethodNotAllowed => "Method not allowed",
            Self::VersionConflict => "Version conflict",
            Self::DuplicateEventId => "Duplicate event id",
            Self::PayloadTooLarge => "Payload too large",
            Self::UnsupportedMediaType => "Unsupported media type",
            Self::UriTooLong => "URI too long",
            Self::HeaderFieldsTooLarge => "Request header fields too large",
            Self::HttpError => "HTTP error",
            Self::Unauthorized => "Unauthorized",
            Self::Forbidden => "Forbidden",
            Self::Conflict => "Conflict",
            Self::SchemaValidationFailed => "Schema validation failed",
            Self::RateLimited => "Rate limited",
            Self::QuotaExceeded => "Quota exceeded",
            Self::QueryTimeout => "Query timeout",
            Self::QueryTooLarge => "Query too large",
            Self::Unavailable => "Service unavailable",
            Self::Internal => "Internal server error",
        }
    }

    /// The `type` member.
    pub const fn type_uri(self) -> &'static str {
        match self {
            Self::ValidationFailed => "https://allsource.dev/problems/validation-failed",
            Self::NotFound => "https://allsource.dev/problems/not-found",
            Self::MethodNotAllowed => "https://allsource.dev/problems/method-not-allowed",
            Self::VersionConflict => "https://allsource.dev/problems/version-conflict",
            Self::DuplicateEventId => "https://allsource.dev/problems/duplicate-event-id",
            Self::PayloadTooLarge => "https://allsource.dev/problems/payload-too-large",
            Self::UnsupportedMediaType => "https://allsource.dev/problems/unsupported-media-type",
            Self::UriTooLong => "https://allsource.dev/problems/uri-too-long",
            Self::HeaderFieldsTooLarge => "https://allsource.dev/problems/header-fields-too-large",
            Self::HttpError => "https://allsource.dev/problems/http-error",
            Self::Unauthorized => "https://allsource.dev/problems/unauthorized",
            Self::Forbidden => "https://allsource.dev/problems/forbidden",
            Self::Conflict => "https://allsource.dev/problems/conflict",
            Self::SchemaValidationFailed => {
                "https://allsource.dev/problems/schema-validation-failed"
            }
            Self::RateLimited => "https://allsource.dev/problems/rate-limited",
            Self::QueryTimeout => "https://allsource.dev/problems/query-timeout",
            Self::QueryTooLarge => "https://allsource.dev/problems/query-too-large",
            Self::QuotaExceeded => "https://allsource.dev/problems/quota-exceeded",
            Self::Unavailable => "https://allsource.dev/problems/unavailable",
            Self::Internal => "https://allsource.dev/problems/internal",
        }
    }
}

/// Seconds a client should wait before retrying a 503.
const RETRY_AFTER_SECONDS: u32 = 1;

/// What is logged for a 5xx (never sent to the client).
#[derive(Debug)]
enum Cause {
    Internal(anyhow::Error),
    Unavailable(String),
}

/// An error answered as a problem document.
#[derive(Debug)]
pub struct ApiError {
    code: ErrorCode,
    detail: String,
    errors: Vec<FieldError>,
    /// Extension members (`entity_id`, `expected_version`, ...).
    members: Map<String, Value>,
    cause: Option<Cause>,
    /// `Retry-After` seconds (429; 503 always carries one).
    retry_after: Option<u64>,
    /// The status answered when it is not the code's own ([`ErrorCode::HttpError`]).
    status: Option<StatusCode>,
}

impl ApiError {
    fn new(code: ErrorCode, detail: impl Into<String>) -> Self {
        Self {
            code,
            detail: detail.into(),
            errors: Vec::new(),
            members: Map::new(),
            cause: None,
            retry_after: None,
            status: None,
        }
    }

    /// 414 `uri_too_long`.
    pub fn uri_too_long(detail: impl Into<String>) -> Self {
        Self::new(ErrorCode::UriTooLong, detail)
    }

    /// 431 `header_fields_too_large`.
    pub fn header_fields_too_large(detail: impl Into<String>) -> Self {
        Self::new(ErrorCode::HeaderFieldsTooLarge, detail)
    }

    /// The problem document for an error status answered without one below the router: the
    /// code of that status when there is one, else `http_error` with the status kept.
    pub fn for_status(status: StatusCode) -> Self {
        let reason = status.canonical_reason().unwrap_or("error");
        let detail = format!("the request could not be served: {reason}");
        let code = match status {
            StatusCode::BAD_REQUEST => ErrorCode::ValidationFailed,
            StatusCode::UNAUTHORIZED => ErrorCode::Unauthorized,
            StatusCode::FORBIDDEN => ErrorCode::Forbidden,
            StatusCode::NOT_FOUND => ErrorCode::NotFound,
            StatusCode::METHOD_NOT_ALLOWED => ErrorCode::MethodNotAllowed,
            StatusCode::CONFLICT => ErrorCode::Conflict,
            StatusCode::PAYLOAD_TOO_LARGE => ErrorCode::PayloadTooLarge,
            StatusCode::URI_TOO_LONG => ErrorCode::UriTooLong,
            StatusCode::UNSUPPORTED_MEDIA_TYPE => ErrorCode::UnsupportedMediaType,
            StatusCode::TOO_MANY_REQUESTS => ErrorCode::RateLimited,
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => ErrorCode::HeaderFieldsTooLarge,
            StatusCode::INTERNAL_SERVER_ERROR => ErrorCode::Internal,
            StatusCode::SERVICE_UNAVAILABLE => ErrorCode::Unavailable,
            _ => {
                let mut error = Self::new(ErrorCode::HttpError, detail);
                error.status = Some(status);
                return error;
            }
        };
        Self::new(code, detail)
    }

    /// 401 `unauthorized`. The detail says what is wrong with the credential, never whether
    /// a user exists.
    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unauthorized, detail)
    }

    /// 403 `forbidden`.
    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(ErrorCode::Forbidden, detail)
    }

    /// 408 `query_timeout`.
    pub fn query_timeout(detail: impl Into<String>) -> Self {
        Self::new(ErrorCode::QueryTimeout, detail)
    }

    /// 422 `query_too_large`.
    pub fn query_too_large(detail: impl Into<String>) -> Self {
        Self::new(ErrorCode::QueryTooLarge, detail)
    }

    /// 409 `conflict` (not about events: an existing name, a resource in the wrong state).
    pub fn conflict(detail: impl Into<String>) -> Self {
        Self::new(ErrorCode::Conflict, detail)
    }

    /// 422 with the failing fields (`error` is `validation_failed`).
    pub fn schema_violation(errors: Vec<FieldError>) -> Self {
        let detail = match errors.as_slice() {
            [one] => format!("{}: {}", one.field, one.message),
            many => format!(
                "{} schema violations; see errors (nothing was appended)",
                many.len()
            ),
        };
        Self {
            errors,
            ..Self::new(ErrorCode::SchemaValidationFailed, detail)
        }
    }

    /// 429 `rate_limited` with `Retry-After`.
    pub fn rate_limited(detail: impl Into<String>, retry_after_secs: u64) -> Self {
        Self {
            retry_after: Some(retry_after_secs.max(1)),
            ..Self::new(ErrorCode::RateLimited, detail)
        }
    }

    /// 429 `quota_exceeded` naming the quota, with `Retry-After`.
    pub fn quota_exceeded(quota: &QuotaExceeded) -> Self {
        Self {
            retry_after: Some(quota.retry_after_secs.max(1)),
            ..Self::new(
                ErrorCode::QuotaExceeded,
                format!(
                    "the tenant's quota '{}' is exhausted: {} of {} used",
                    quota.quota, quota.used, quota.limit
                ),
            )
        }
        .member("quota", quota.quota.clone())
        .member("limit", quota.limit)
        .member("used", quota.used)
    }

    /// Adds field-level problems to the `errors` member (a 409 listing what conflicts, say).
    #[must_use]
    pub fn with_errors(mut self, errors: Vec<FieldError>) -> Self {
        self.errors.extend(errors);
        self
    }

    /// Adds an extension member to the problem document.
    #[must_use]
    pub fn with_member(self, name: &str, value: impl Into<Value>) -> Self {
        self.member(name, value)
    }

    /// 400 `validation_failed` listing the invalid fields.
    pub fn validation(errors: Vec<FieldError>) -> Self {
        let detail = match errors.as_slice() {
            [one] => format!("{}: {}", one.field, one.message),
            many => format!("{} fields are invalid; see errors", many.len()),
        };
        Self {
            errors,
            ..Self::new(ErrorCode::ValidationFailed, detail)
        }
    }

    /// 400 `validation_failed` for one field.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::validation(vec![FieldError::new(field, message)])
    }

    /// 404 `not_found`.
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, detail)
    }

    /// 405 `method_not_allowed`.
    pub fn method_not_allowed() -> Self {
        Self::new(
            ErrorCode::MethodNotAllowed,
            "this route does not support this method; the Allow header lists those it does",
        )
    }

    /// 413 `payload_too_large`.
    pub fn payload_too_large(detail: impl Into<String>) -> Self {
        Self::new(ErrorCode::PayloadTooLarge, detail)
    }

    /// 415 `unsupported_media_type`.
    pub fn unsupported_media_type() -> Self {
        Self::new(
            ErrorCode::UnsupportedMediaType,
            "the request body must be JSON sent with Content-Type: application/json",
        )
    }

    /// 503 `unavailable` because storage cannot serve. The reason may hold internal text
    /// (driver errors, hosts), so it is logged, not sent.
    pub fn unavailable(reason: impl Into<String>) -> Self {
        Self {
            cause: Some(Cause::Unavailable(reason.into())),
            ..Self::new(
                ErrorCode::Unavailable,
                "the storage is unavailable right now; retry shortly",
            )
        }
    }

    /// 503 `unavailable` from `/health/ready` before recovery has finished (not logged: load
    /// balancers ask often).
    pub fn not_ready() -> Self {
        Self::new(
            ErrorCode::Unavailable,
            "the store has not finished recovery yet",
        )
    }

    /// 500 `internal`. The cause chain is logged with the request id, never sent.
    pub fn internal(cause: anyhow::Error) -> Self {
        Self {
            cause: Some(Cause::Internal(cause)),
            ..Self::new(
                ErrorCode::Internal,
                "an internal error occurred; the server log has the details under this \
                 response's x-request-id",
            )
        }
    }

    pub fn code(&self) -> ErrorCode {
        self.code
    }

    pub fn status(&self) -> StatusCode {
        self.status.unwrap_or(self.code.status())
    }

    pub fn detail(&self) -> &str {
        &self.detail
    }

    pub fn errors(&self) -> &[FieldError] {
        &self.errors
    }

    fn member(mut self, name: &str, value: impl Into<Value>) -> Self {
        self.members.insert(name.to_owned(), value.into());
        self
    }

    /// Adds a field error naming the `index`-th event of a batch (nothing for a single event:
    /// there, the problem's own members say it all).
    fn at_event(mut self, index: Option<usize>, field: &str) -> Self {
        if let Some(index) = index {
            self.errors.push(FieldError::new(
                format!("events[{index}].{field}"),
                self.detail.clone(),
            ));
        }
        self
    }
}

/// `expected_version` as the client sent it: an integer, or the word.
fn expected_json(expected: ExpectedVersion) -> Value {
    match expected {
        ExpectedVersion::Exact(v) => Value::from(v),
        word => Value::from(word.to_string()),
    }
}

impl From<AppendError> for ApiError {
    fn from(e: AppendError) -> Self {
        match e {
            AppendError::Invalid(errors) => Self::validation(errors),
            AppendError::EventTooLarge {
                index,
                bytes,
                limit,
            } => Self::payload_too_large(format!(
                "the event's payload and metadata are {bytes} bytes, over the limit of {limit}"
            ))
            .at_event(index, "payload"),
            AppendError::BatchTooLarge { count, limit } => {
                let detail = format!("the batch has {count} events, over the limit of {limit}");
                Self {
                    errors: vec![FieldError::new("events", detail.clone())],
                    ..Self::payload_too_large(detail)
                }
            }
            AppendError::VersionConflict {
                index,
                entity_id,
                expected,
                current,
            } => Self::new(
                ErrorCode::VersionConflict,
                format!(
                    "entity '{entity_id}' is at version {current}, the event expected {expected}"
                ),
            )
            .member("entity_id", entity_id.as_str())
            .member("expected_version", expected_json(expected))
            .member("current_version", current)
            .at_event(index, "expected_version"),
            AppendError::DuplicateEventId { index, event_id } => Self::new(
                ErrorCode::DuplicateEventId,
                format!(
                    "event id {event_id} is already taken by an event with another entity, type \
                     or payload"
                ),
            )
            .member("event_id", event_id.to_string())
            .at_event(index, "id"),
            AppendError::SchemaViolation(errors) => Self::schema_violation(errors),
            AppendError::QuotaExceeded(quota) => Self::quota_exceeded(&quota),
            AppendError::Forbidden(why) => Self::forbidden(why),
            AppendError::Unavailable(reason) => Self::unavailable(reason),
            AppendError::Internal(cause) => Self::internal(cause),
        }
    }
}

impl From<ReadError> for ApiError {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::Invalid(errors) => Self::validation(errors),
            ReadError::NotFound(what) => Self::not_found(what),
            ReadError::Unavailable(reason) => Self::unavailable(reason),
            ReadError::Internal(cause) => Self::internal(cause),
        }
    }
}

#[derive(Serialize)]
struct FieldErrorBody<'a> {
    field: &'a str,
    message: &'a str,
}

#[derive(Serialize)]
struct ProblemBody<'a> {
    #[serde(rename = "type")]
    type_uri: &'static str,
    title: &'static str,
    status: u16,
    detail: &'a str,
    error: &'static str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    errors: Vec<FieldErrorBody<'a>>,
    #[serde(flatten)]
    members: &'a Map<String, Value>,
}

impl ApiError {
    /// The problem document, serialized.
    pub fn body_bytes(&self) -> Vec<u8> {
        let code = self.code;
        let body = ProblemBody {
            type_uri: code.type_uri(),
            title: code.title(),
            status: self.status().as_u16(),
            detail: &self.detail,
            error: code.as_str(),
            errors: self
                .errors
                .iter()
                .map(|e| FieldErrorBody {
                    field: &e.field,
                    message: &e.message,
                })
                .collect(),
            members: &self.members,
        };
        // Serializing strings and numbers cannot fail; should it, the status still tells.
        serde_json::to_vec(&body).unwrap_or_default()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        // Logged here, inside the request's span, so the line carries the request id.
        match &self.cause {
            Some(Cause::Internal(cause)) => {
                tracing::error!(error = %format_args!("{cause:#}"), "internal error");
            }
            Some(Cause::Unavailable(reason)) => {
                tracing::warn!(%reason, "storage unavailable");
            }
            None => {}
        }
        let code = self.code;
        crate::metrics::record_problem(code);
        let status = self.status();
        let bytes = self.body_bytes();
        let mut response = (status, bytes).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(seconds) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        } else if code == ErrorCode::Unavailable {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECONDS));
        }
        response
    }
}

impl From<allsource_application::quota::GateError> for ApiError {
    fn from(e: allsource_application::quota::GateError) -> Self {
        use allsource_application::quota::GateError;
        match e {
            GateError::QuotaExceeded(quota) => Self::quota_exceeded(&quota),
            GateError::TenantInactive(why) => Self::forbidden(why),
            GateError::Unavailable(why) => Self::unavailable(why),
            GateError::Internal(cause) => Self::internal(cause),
        }
    }
}
