//! Limits on the request head, answered as problem documents with the request id, and a
//! problem document for any error answered without one by the layers below the router.
//!
//! The server ([`serve`](fn@crate::serve)) sets hyper's own parser limits well above these, so that the
//! documented limits are ours and answer like every other error:
//!
//! | What | Limit | Answer |
//! |---|---|---|
//! | request target (path and query) | [`HeadLimits::MAX_URI_BYTES`] (8 KiB) | 414 `uri_too_long` |
//! | header section (`name: value\r\n` of every header) | [`HeadLimits::MAX_HEADER_BYTES`] (64 KiB) | 431 `header_fields_too_large` |
//! | header lines | [`HeadLimits::MAX_HEADERS`] (100) | 431 `header_fields_too_large` |
//!
//! Beyond hyper's own limits ([`crate::serve::MAX_HEAD_BUFFER_BYTES`] for the whole head,
//! [`crate::serve::MAX_HEADER_LINES`] header lines, and its fixed 65,534 bytes for the request
//! target) and for a request head that does not parse as HTTP/1.1, hyper answers itself (400,
//! 414 or 431) before any request exists; [`crate::serve::ParserAnswers`] turns those answers
//! into problem documents with a fresh `x-request-id` too. Not covered: when a client goes on
//! sending a head over 1 MiB after that answer, the server closes a socket with unread data,
//! and the client's TCP stack may discard the answer on the reset that follows.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;

/// The limits on the request head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadLimits;

impl HeadLimits {
    /// Longest request target (path and query, or the absolute form), in bytes.
    pub const MAX_URI_BYTES: usize = 8 * 1024;
    /// Largest header section, in bytes (`name: value\r\n` of every header).
    pub const MAX_HEADER_BYTES: usize = 64 * 1024;
    /// Most header lines.
    pub const MAX_HEADERS: usize = 100;
}

/// The request target's length as the client sent it (near enough: the origin form's path and
/// query, plus scheme and authority of an absolute form).
fn target_len(request: &Request) -> usize {
    let uri = request.uri();
    uri.path_and_query().map_or(0, |pq| pq.as_str().len())
        + uri.authority().map_or(0, |a| a.as_str().len())
        + uri.scheme_str().map_or(0, |s| s.len() + 3)
}

/// Middleware: 414 and 431 problem documents for request heads over [`HeadLimits`].
pub async fn head_limits(request: Request, next: Next) -> Response {
    let target = target_len(&request);
    if target > HeadLimits::MAX_URI_BYTES {
        return ApiError::uri_too_long(format!(
            "the request target is {target} bytes, over the limit of {} bytes",
            HeadLimits::MAX_URI_BYTES
        ))
        .into_response();
    }
    let headers = request.headers();
    if headers.len() > HeadLimits::MAX_HEADERS {
        return ApiError::header_fields_too_large(format!(
            "the request has {} header lines, over the limit of {}",
            headers.len(),
            HeadLimits::MAX_HEADERS
        ))
        .into_response();
    }
    let bytes: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    if bytes > HeadLimits::MAX_HEADER_BYTES {
        return ApiError::header_fields_too_large(format!(
            "the request's headers are {bytes} bytes, over the limit of {} bytes",
            HeadLimits::MAX_HEADER_BYTES
        ))
        .into_response();
    }
    next.run(request).await
}

fn is_problem(response: &Response) -> bool {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/problem+json"))
}

/// Middleware: an error response (4xx, 5xx) that is not a problem document (a layer below
/// answered with a bare status) becomes one, for its status; its other headers (`Allow`,
/// `Retry-After`, ...) are kept.
pub async fn problem_for_bare_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) || is_problem(&response) {
        return response;
    }
    let (parts, _body) = response.into_parts();
    let mut problem = ApiError::for_status(status).into_response();
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            problem.headers_mut().insert(name.clone(), value.clone());
        }
    }
    problem
}

/// A bare response of `status`, as a layer below the router might answer (tests).
#[doc(hidden)]
pub fn bare(status: StatusCode) -> Response {
    let mut response = Response::new(Body::empty());
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert("x-bare", HeaderValue::from_static("1"));
    response
}

#[cfg(test)]
mod tests {
    use axum::Router;
    use axum::http::Request;
    use axum::routing::get;
    use tower::ServiceExt;

    use super::*;

    fn app() -> Router {
        Router::new()
            .route(
                "/timeout",
                get(|| async { bare(StatusCode::REQUEST_TIMEOUT) }),
            )
            .route("/gone", get(|| async { bare(StatusCode::BAD_GATEWAY) }))
            .route(
                "/text",
                get(|| async { (StatusCode::BAD_REQUEST, "plain text").into_response() }),
            )
            .route("/ok", get(|| async { "fine" }))
            .layer(axum::middleware::from_fn(head_limits))
            .layer(axum::middleware::from_fn(problem_for_bare_errors))
    }

    async fn call(
        request: Request<Body>,
    ) -> (StatusCode, axum::http::HeaderMap, serde_json::Value) {
        let response = app().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        let body = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
        (status, headers, body)
    }

    fn get_(uri: &str) -> Request<Body> {
        Request::builder().uri(uri).body(Body::empty()).unwrap()
    }

    #[tokio::test]
    async fn bare_errors_below_become_problems_with_their_status_and_headers() {
        for (path, status) in [
            ("/timeout", StatusCode::REQUEST_TIMEOUT),
            ("/gone", StatusCode::BAD_GATEWAY),
            ("/text", StatusCode::BAD_REQUEST),
        ] {
            let (got, headers, body) = call(get_(path)).await;
            assert_eq!(got, status, "{path}");
            assert_eq!(headers[header::CONTENT_TYPE], "application/problem+json");
            assert_eq!(body["status"], status.as_u16(), "{path}: {body}");
            assert!(body["type"].as_str().unwrap().starts_with("https://"));
            if path != "/text" {
                assert_eq!(headers["x-bare"], "1");
            }
        }
        let (ok, headers, _) = call(get_("/ok")).await;
        assert_eq!(ok, StatusCode::OK);
        assert_ne!(headers[header::CONTENT_TYPE], "application/problem+json");
    }

    #[tokio::test]
    async fn over_long_targets_and_header_sections_are_problems() {
        let long = format!("/ok?q={}", "a".repeat(HeadLimits::MAX_URI_BYTES));
        let (status, _, body) = call(get_(&long)).await;
        assert_eq!(status, StatusCode::URI_TOO_LONG);
        assert_eq!(body["error"], "uri_too_long");
        let just = format!("/ok?q={}", "a".repeat(HeadLimits::MAX_URI_BYTES - 6));
        assert_eq!(call(get_(&just)).await.0, StatusCode::OK);

        let mut request = get_("/ok");
        for i in 0..9 {
            request.headers_mut().insert(
                axum::http::HeaderName::from_bytes(format!("x-big-{i}").as_bytes()).unwrap(),
                HeaderValue::from_str(&"v".repeat(8 * 1024)).unwrap(),
            );
        }
        let (status, _, body) = call(request).await;
        assert_eq!(status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
        assert_eq!(body["error"], "header_fields_too_large");

        let mut request = get_("/ok");
        for i in 0..=HeadLimits::MAX_HEADERS {
            request.headers_mut().insert(
                axum::http::HeaderName::from_bytes(format!("x-h-{i}").as_bytes()).unwrap(),
                HeaderValue::from_static("1"),
            );
        }
        let (status, _, body) = call(request).await;
        assert_eq!(
            status,
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "{body}"
        );
    }
}
