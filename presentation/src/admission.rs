//! Admission's answers over HTTP: the [`Admission`](allsource_application::use_cases::Admission)
//! use case decides (tenant status, rate limit, query quota); here its decision becomes headers
//! and status.
//!
//! - Every response of a rate-limited route carries `X-RateLimit-Limit` (bucket size),
//!   `X-RateLimit-Remaining` (whole tokens left) and `X-RateLimit-Reset` (seconds until the
//!   bucket is full), from the tighter bucket, refusals included.
//! - An empty bucket is 429 `rate_limited` with `Retry-After`; a spent query quota 429
//!   `quota_exceeded`; a deactivated or deleted tenant 403 `forbidden`.
//! - Health probes are never limited and carry no headers.

use allsource_application::ports::RateDecision;
use allsource_application::use_cases::{Refusal, Refused};
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;

/// The answer to a refused request.
pub fn refusal(refused: Refused) -> Response {
    let response = match refused.refusal {
        Refusal::RateLimited {
            limit,
            retry_after_secs,
        } => ApiError::rate_limited(
            format!("rate limit exceeded: {limit} requests at once, retry in {retry_after_secs} s"),
            retry_after_secs,
        ),
        Refusal::Gate(e) => ApiError::from(e),
    }
    .into_response();
    with_rate_headers(response, refused.rate.as_ref())
}

/// `X-RateLimit-*` of the decision, when a limiter decided.
pub fn with_rate_headers(mut response: Response, decision: Option<&RateDecision>) -> Response {
    if let Some(d) = decision {
        let headers = response.headers_mut();
        headers.insert("x-ratelimit-limit", HeaderValue::from(d.limit));
        headers.insert("x-ratelimit-remaining", HeaderValue::from(d.remaining));
        headers.insert("x-ratelimit-reset", HeaderValue::from(d.reset_secs));
    }
    response
}
