//! `ApiError`: the one type that turns use-case errors into RFC 9457 problem documents
//! (`application/problem+json`) with the stable `error` codes existing clients read.
//!
//! A 5xx never carries internal text: the cause chain is logged (inside the request's span,
//! which holds the request id) and the client gets a generic detail.

use allsource_application::use_cases::{AppendError, FieldError, ReadError};
use allsource_domain::ExpectedVersion;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

/// A problem response.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    detail: String,
    errors: Vec<FieldError>,
    members: Map<String, Value>,
    retry_after: Option<u32>,
    internal: Option<anyhow::Error>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        Self {
            status,
            code,
            detail: detail.into(),
            errors: Vec::new(),
            members: Map::new(),
            retry_after: None,
            internal: None,
        }
    }

    /// 400 `validation_failed` with field errors.
    pub fn validation(errors: Vec<FieldError>) -> Self {
        let detail = match errors.as_slice() {
            [one] => format!("{}: {}", one.field, one.message),
            many => format!("{} fields are invalid", many.len()),
        };
        let mut e = Self::new(StatusCode::BAD_REQUEST, "validation_failed", detail);
        e.errors = errors;
        e
    }

    /// 400 `validation_failed` for one field.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::validation(vec![FieldError::new(field, message)])
    }

    /// 404 `not_found`.
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", detail)
    }

    /// 405, as a problem document.
    pub fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "this route does not accept this method",
        )
    }

    /// 413 `payload_too_large`.
    pub fn payload_too_large(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", detail)
    }

    /// 415 `unsupported_media_type`.
    pub fn unsupported_media_type() -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "the body must be JSON, sent with content-type: application/json",
        )
    }

    /// 503 `unavailable`, with `Retry-After`.
    pub fn unavailable(detail: impl Into<String>) -> Self {
        let mut e = Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", detail);
        e.retry_after = Some(1);
        e
    }

    /// 500 `internal`; the cause is logged, never sent.
    pub fn internal(cause: anyhow::Error) -> Self {
        let mut e = Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "an internal error occurred; the server's log holds the details under this \
             response's x-request-id",
        );
        e.internal = Some(cause);
        e
    }

    fn member(mut self, name: &str, value: impl Into<Value>) -> Self {
        self.members.insert(name.to_owned(), value.into());
        self
    }

    fn at(mut self, field: String, message: impl Into<String>) -> Self {
        self.errors.push(FieldError::new(field, message));
        self
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub fn code(&self) -> &'static str {
        self.code
    }
}

fn title(code: &str) -> &'static str {
    match code {
        "validation_failed" => "Validation failed",
        "not_found" => "Not found",
        "method_not_allowed" => "Method not allowed",
        "version_conflict" => "Version conflict",
        "duplicate_event_id" => "Duplicate event id",
        "payload_too_large" => "Payload too large",
        "unsupported_media_type" => "Unsupported media type",
        "unavailable" => "Service unavailable",
        _ => "Internal error",
    }
}

fn field_name(index: Option<usize>, field: &str) -> String {
    match index {
        Some(i) => format!("events[{i}].{field}"),
        None => field.to_owned(),
    }
}

fn expected_json(expected: ExpectedVersion) -> Value {
    match expected {
        ExpectedVersion::Exact(v) => json!(v),
        word => json!(word.to_string()),
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
            } => {
                let message = format!(
                    "payload and metadata are {bytes} bytes, over the limit of {limit} \
                     (limits.max_event_bytes)"
                );
                Self::payload_too_large(message.clone()).at(field_name(index, "payload"), message)
            }
            AppendError::BatchTooLarge { count, limit } => {
                let message = format!(
                    "the batch has {count} events, over the limit of {limit} \
                     (limits.max_batch_events)"
                );
                Self::payload_too_large(message.clone()).at("events".into(), message)
            }
            AppendError::VersionConflict {
                index,
                entity_id,
                expected,
                current,
            } => {
                let message =
                    format!("expected version {expected} of '{entity_id}', current is {current}");
                let mut e = Self::new(StatusCode::CONFLICT, "version_conflict", message.clone())
                    .member("entity_id", entity_id.as_str())
                    .member("expected_version", expected_json(expected))
                    .member("current_version", current);
                if index.is_some() {
                    e = e.at(field_name(index, "expected_version"), message);
                }
                e
            }
            AppendError::DuplicateEventId { index, event_id } => {
                let message = format!(
                    "an event with id {event_id} already exists with a different entity, type \
                     or payload"
                );
                let mut e = Self::new(StatusCode::CONFLICT, "duplicate_event_id", message.clone())
                    .member("event_id", event_id.to_string());
                if index.is_some() {
                    e = e.at(field_name(index, "id"), message);
                }
                e
            }
            AppendError::Unavailable(why) => Self::unavailable(why),
            AppendError::Internal(cause) => Self::internal(cause),
        }
    }
}

impl From<ReadError> for ApiError {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::Invalid(errors) => Self::validation(errors),
            ReadError::NotFound(what) => Self::not_found(what),
            ReadError::Unavailable(why) => Self::unavailable(why),
            ReadError::Internal(cause) => Self::internal(cause),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let Some(cause) = &self.internal {
            tracing::error!(error = format!("{cause:#}"), "internal error");
        } else if self.status.is_server_error() {
            tracing::warn!(status = self.status.as_u16(), detail = %self.detail, "request failed");
        }
        let mut body = Map::new();
        body.insert(
            "type".into(),
            format!(
                "https://allsource.dev/problems/{}",
                self.code.replace('_', "-")
            )
            .into(),
        );
        body.insert("title".into(), title(self.code).into());
        body.insert("status".into(), self.status.as_u16().into());
        body.insert("detail".into(), self.detail.into());
        body.insert("error".into(), self.code.into());
        if !self.errors.is_empty() {
            body.insert(
                "errors".into(),
                self.errors
                    .iter()
                    .map(|e| json!({"field": e.field, "message": e.message}))
                    .collect(),
            );
        }
        body.extend(self.members);
        let bytes = serde_json::to_vec(&Value::Object(body)).unwrap_or_default();
        let mut response = (self.status, bytes).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(seconds) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}
