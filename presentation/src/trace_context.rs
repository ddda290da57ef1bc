//! W3C Trace Context (`traceparent`) on requests, responses and appended events.
//!
//! - A request's valid `traceparent` header continues its trace: the request's span becomes
//!   a child of the caller's span (exported when OTLP export is on; see the binary's
//!   `telemetry.otlp.*` settings). An invalid header is ignored, as the W3C recommendation
//!   says (a new trace starts, or none).
//! - The request's own trace context, the [`RequestTrace`], is:
//!   - with export on: the server span's context (same trace id as the caller's, the server's
//!     span id; a new trace when the caller sent none);
//!   - with export off and a valid header: the caller's context as it came (the server is
//!     not a hop of the trace then, so the caller's span is the one that made the request);
//!   - with export off and no header: none.
//! - It is returned as the response's `traceparent`, recorded as the span's `trace_id` (so log
//!   lines carry it), and stored as `metadata.traceparent` of every event the request appends,
//!   unless the client's metadata has a `traceparent` of its own or is not a JSON object.
//!   Idempotency compares entity, type and payload only, so a retry whose trace differs is
//!   still the same event (the stored one, with the first attempt's trace, is answered).

use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use serde_json::value::RawValue;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use allsource_domain::JsonPayload;

/// The header's name.
pub const TRACEPARENT: &str = "traceparent";

/// The trace context of one request (see the module docs), in `traceparent` form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestTrace(pub String);

/// Parses a `traceparent` value: `00-<32 hex trace id>-<16 hex span id>-<2 hex flags>`, ids
/// not all zero. Versions above `00` are read by their first four fields, as the
/// recommendation asks; version `ff` is invalid.
pub fn parse(value: &str) -> Option<SpanContext> {
    let mut parts = value.trim().split('-');
    let (version, trace, span, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let lower_hex = |s: &str, len: usize| {
        s.len() == len
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    if !lower_hex(version, 2) || version == "ff" || !lower_hex(trace, 32) || !lower_hex(span, 16) {
        return None;
    }
    if version == "00" && parts.next().is_some() {
        return None;
    }
    if !lower_hex(flags, 2) {
        return None;
    }
    let trace_id = TraceId::from_hex(trace).ok()?;
    let span_id = SpanId::from_hex(span).ok()?;
    if trace_id == TraceId::INVALID || span_id == SpanId::INVALID {
        return None;
    }
    let flags = u8::from_str_radix(flags, 16).ok()?;
    Some(SpanContext::new(
        trace_id,
        span_id,
        TraceFlags::new(flags),
        true,
        TraceState::default(),
    ))
}

/// The `traceparent` form of a span context.
pub fn format(context: &SpanContext) -> String {
    format!(
        "00-{}-{}-{:02x}",
        context.trace_id(),
        context.span_id(),
        context.trace_flags().to_u8()
    )
}

/// The caller's span context, from a valid `traceparent` header.
pub fn incoming(headers: &HeaderMap) -> Option<SpanContext> {
    headers
        .get(TRACEPARENT)
        .and_then(|v| v.to_str().ok())
        .and_then(parse)
}

/// Makes `span` (the request's) a child of the caller's span, when the request has one.
pub fn continue_trace(span: &tracing::Span, headers: &HeaderMap) {
    if let Some(remote) = incoming(headers) {
        // Fails only without an OpenTelemetry layer (export off): nothing to continue then.
        let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(remote));
    }
}

/// The request layer inside the request's span: finds the [`RequestTrace`], records it on the
/// span, hands it to the handlers and returns it on the response.
pub async fn trace_context(mut request: Request, next: Next) -> Response {
    let span = tracing::Span::current();
    let exported = span.context().span().span_context().clone();
    let trace = if exported.is_valid() {
        Some(exported)
    } else {
        incoming(request.headers())
    };
    let Some(trace) = trace else {
        return next.run(request).await;
    };
    span.record("trace_id", tracing::field::display(trace.trace_id()));
    let value = format(&trace);
    request.extensions_mut().insert(RequestTrace(value.clone()));
    let mut response = next.run(request).await;
    if let Ok(header) = HeaderValue::from_str(&value) {
        response.headers_mut().insert(TRACEPARENT, header);
    }
    response
}

/// `metadata` with `traceparent` added (see the module docs): the client's JSON text is kept
/// byte for byte, the member is put first.
pub fn with_traceparent(
    metadata: Option<JsonPayload>,
    trace: &RequestTrace,
) -> Option<JsonPayload> {
    let member = serde_json::to_string(&trace.0).unwrap_or_default();
    let Some(metadata) = metadata else {
        return RawValue::from_string(format!("{{\"traceparent\":{member}}}")).ok();
    };
    let text = metadata.get();
    let trimmed = text.trim_start();
    if !trimmed.starts_with('{') {
        return Some(metadata);
    }
    // Only the top-level names are read; the values stay raw.
    let Ok(members) = serde_json::from_str::<
        std::collections::HashMap<std::borrow::Cow<'_, str>, &RawValue>,
    >(text) else {
        return Some(metadata);
    };
    if members.contains_key("traceparent") {
        return Some(metadata);
    }
    let rest = trimmed[1..].trim_start();
    let spliced = if members.is_empty() {
        format!("{{\"traceparent\":{member}}}")
    } else {
        format!("{{\"traceparent\":{member},{rest}")
    };
    RawValue::from_string(spliced).ok().or(Some(metadata))
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn raw(s: &str) -> JsonPayload {
        RawValue::from_string(s.to_owned()).expect("valid JSON")
    }

    #[test]
    fn a_valid_traceparent_parses_and_formats_back() {
        let context = parse(VALID).expect("valid");
        assert_eq!(
            context.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert!(context.is_sampled());
        assert_eq!(format(&context), VALID);
    }

    #[test]
    fn invalid_traceparents_are_ignored() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
        ] {
            assert!(parse(bad).is_none(), "{bad:?} must be refused");
        }
        // A later version may carry more fields.
        assert!(parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x").is_some());
    }

    #[test]
    fn the_traceparent_is_added_to_metadata_unless_set_or_not_an_object() {
        let trace = RequestTrace(VALID.to_owned());
        let added =
            |m: Option<&str>| with_traceparent(m.map(raw), &trace).map(|m| m.get().to_owned());
        assert_eq!(
            added(None).as_deref(),
            Some(format!("{{\"traceparent\":\"{VALID}\"}}").as_str())
        );
        assert_eq!(
            added(Some("{}")).as_deref(),
            Some(format!("{{\"traceparent\":\"{VALID}\"}}").as_str())
        );
        assert_eq!(
            added(Some(r#"{"user": {"id": 1}}"#)).as_deref(),
            Some(format!("{{\"traceparent\":\"{VALID}\",\"user\": {{\"id\": 1}}}}").as_str())
        );
        let own = r#"{"traceparent":"00-11111111111111111111111111111111-2222222222222222-00"}"#;
        assert_eq!(added(Some(own)).as_deref(), Some(own));
        assert_eq!(added(Some("null")).as_deref(), Some("null"));
        assert_eq!(added(Some("[1,2]")).as_deref(), Some("[1,2]"));
        let spliced = added(Some(r#" { "a" : 1 } "#)).expect("kept");
        let value: serde_json::Value = serde_json::from_str(&spliced).expect("valid JSON");
        assert_eq!(value["a"], 1);
        assert_eq!(value["traceparent"], VALID);
    }
}
