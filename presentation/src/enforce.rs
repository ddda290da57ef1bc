//! The policy step of the request layer, [`enforce`], which runs after
//! [`authorize`](crate::access::authorize): role-based access has let the request through, and
//! the policy engine now sees it.
//!
//! The request's attributes: `method`, `route` (the matched pattern), `path`, `resource.<name>`
//! for each path parameter, `request.<name>` for each query parameter, and
//! `request.record_count`: the number of records the operation touches, as the route declares
//! it ([`RecordCount`]: 1 for `POST /api/v1/events`, the number of events of
//! `POST /api/v1/events/batch`, else the `limit` query parameter when it is a number). The caller's `role`, `tenant_id`, `user_id`
//! are added by the engine.
//!
//! For a batch, the body is read here (within the body limit), its events counted without
//! building them, and handed on as bytes: it is parsed once more by the handler, but never
//! buffered twice over the network.
//!
//! Answers: a deny → 403 `forbidden` with `policy_id` and `policy_name`; over a rate limit →
//! 429 `rate_limited` with `Retry-After` and `policy_id`; warnings → the request goes on, and
//! the response carries one `X-Policy-Warning: <policy id>` header per warning.
//!
//! Not subject to policies: public routes (health, login), and routes declared
//! [`exempt_from_policies`](crate::routes::Route::exempt_from_policies) (the policy routes
//! themselves, so that a bad policy can always be corrected).

use std::fmt;

use allsource_application::Caller;
use allsource_application::use_cases::{Enforcement, Policies};
use allsource_domain::policy::PolicyContext;
use axum::body::{Body, to_bytes};
use axum::extract::{FromRequestParts, RawPathParams, Request};
use axum::http::{HeaderValue, header};
use serde::Deserializer;
use serde::de::{IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::error::ApiError;
use crate::routes::{PolicyScope, RecordCount, Route};
use crate::{HttpLimits, REQUEST_ID_HEADER};

/// The header naming a policy that warned about the request.
pub const POLICY_WARNING_HEADER: &str = "x-policy-warning";

/// The policy step (see the module docs): the request to serve and the warnings to put on its
/// response.
///
/// # Errors
/// The refusal (403, 429), or a body that cannot be read (413, 400), or 503 when the policies
/// cannot be read.
pub async fn enforce(
    policies: &Policies,
    route: &Route,
    caller: Option<&Caller>,
    request: Request,
) -> Result<(Request, Vec<HeaderValue>), ApiError> {
    let Some(caller) = caller else {
        return Ok((request, Vec::new()));
    };
    if !policies.enabled() || route.policies == PolicyScope::Exempt {
        return Ok((request, Vec::new()));
    }
    let (mut parts, body) = request.into_parts();
    let mut context = PolicyContext::new()
        .with("method", parts.method.as_str())
        .with("route", route.path)
        .with("path", parts.uri.path());
    if let Ok(params) = RawPathParams::from_request_parts(&mut parts, &()).await {
        for (name, value) in &params {
            context.set(format!("resource.{name}"), value);
        }
    }
    let query = parts.uri.query().unwrap_or_default();
    for (name, value) in form_urlencoded::parse(query.as_bytes()) {
        // `record_count` is the server's own count (below); a client cannot set it. A
        // credential (`access_token` of the streams) is never part of the context.
        if name != "record_count" && name != "access_token" {
            context.set(format!("request.{name}"), value.as_ref());
        }
    }
    let limit = context
        .get("request.limit")
        .and_then(|v| v.as_str())
        .and_then(|s| s.parse::<u64>().ok());
    let mut body = body;
    match route.records {
        RecordCount::One => context.set("request.record_count", 1),
        RecordCount::EventsInBody => {
            let max = parts
                .extensions
                .get::<HttpLimits>()
                .map_or(HttpLimits::DEFAULT_MAX_BODY_BYTES, |l| l.max_body_bytes);
            let bytes = read_bounded(&parts, body, max).await?;
            if let Some(n) = count_events(&bytes) {
                context.set("request.record_count", n);
            }
            body = Body::from(bytes);
        }
        RecordCount::FromLimit => {
            if let Some(limit) = limit {
                context.set("request.record_count", limit);
            }
        }
    }
    let request_id = parts
        .headers
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    match policies.enforce(caller, context, request_id).await? {
        Enforcement::Allowed { warnings } => {
            // Policy ids are plain ASCII (checked when a policy is written).
            let warnings = warnings
                .iter()
                .filter_map(|w| HeaderValue::from_str(&w.id).ok())
                .collect();
            Ok((Request::from_parts(parts, body), warnings))
        }
        Enforcement::Denied { policy } => Err(ApiError::forbidden(format!(
            "refused by policy '{}' ({})",
            policy.name, policy.id
        ))
        .with_member("policy_id", policy.id)
        .with_member("policy_name", policy.name)),
        Enforcement::RateLimited {
            policy,
            retry_after_secs,
        } => Err(ApiError::rate_limited(
            format!(
                "over the rate of policy '{}' ({}); retry after {retry_after_secs} s",
                policy.name, policy.id
            ),
            retry_after_secs,
        )
        .with_member("policy_id", policy.id)),
    }
}

/// The body, at most `max` bytes (413 beyond, named as the JSON extractor names it).
async fn read_bounded(
    parts: &axum::http::request::Parts,
    body: Body,
    max: usize,
) -> Result<axum::body::Bytes, ApiError> {
    let too_large = || {
        ApiError::payload_too_large(format!("the request body is over the limit of {max} bytes"))
    };
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return Err(too_large());
    }
    to_bytes(body, max).await.map_err(|e| {
        let over = std::error::Error::source(&e)
            .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
        if over {
            too_large()
        } else {
            ApiError::invalid("body", format!("the request body could not be read: {e}"))
        }
    })
}

/// The number of elements of the top-level `events` array of a JSON object, without building
/// them; `None` when the body is not such an object (the handler will say why).
fn count_events(bytes: &[u8]) -> Option<u64> {
    struct Events;
    impl<'de> Visitor<'de> for Events {
        type Value = Option<u64>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Option<u64>, A::Error> {
            let mut count = None;
            while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                if key == "events" {
                    count = map.next_value::<Counted>()?.0;
                } else {
                    map.next_value::<IgnoredAny>()?;
                }
            }
            Ok(count)
        }
    }
    struct Counted(Option<u64>);
    impl<'de> serde::Deserialize<'de> for Counted {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct Seq;
            impl<'de> Visitor<'de> for Seq {
                type Value = Counted;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("an array")
                }
                fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Counted, A::Error> {
                    let mut n = 0_u64;
                    while seq.next_element::<IgnoredAny>()?.is_some() {
                        n += 1;
                    }
                    Ok(Counted(Some(n)))
                }
                fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Counted, A::Error> {
                    while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                    Ok(Counted(None))
                }
                fn visit_unit<E>(self) -> Result<Counted, E> {
                    Ok(Counted(None))
                }
            }
            d.deserialize_any(Seq)
        }
    }
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    deserializer.deserialize_map(Events).ok().flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_counted_without_being_built() {
        assert_eq!(count_events(br#"{"events": []}"#), Some(0));
        assert_eq!(
            count_events(br#"{"x": {"events": [1]}, "events": [{"a": [1, 2]}, 2, "3"]}"#),
            Some(3)
        );
        assert_eq!(count_events(br#"{"events": {"a": 1}}"#), None);
        assert_eq!(count_events(br#"{"events": null}"#), None);
        assert_eq!(count_events(br#"{"other": 1}"#), None);
        assert_eq!(count_events(b"[1, 2]"), None);
        assert_eq!(count_events(b"{oops"), None);
        assert_eq!(count_events(br#"{"events": "abc"}"#), None);
    }
}
