//! Extractors whose failures are problem documents (axum's own rejections are plain text):
//!
//! - [`JsonBody`]: a JSON request body. The content type must be `application/json` (parameters
//!   allowed; a `charset` other than UTF-8 is refused) → else 415. A body over the limit → 413.
//!   Malformed JSON, unknown fields and type errors → 400 naming the field's path
//!   (`events[3].entity_id`).
//! - [`Params`]: query parameters into a struct with `deny_unknown_fields`, so an unknown or
//!   repeated parameter is a 400 (a typo must never silently widen a query); [`parse_query`],
//!   the same for the request layer, which refuses any parameter on routes that declare none.
//! - [`PathParam`]: the one path segment of a route.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use serde::de::DeserializeOwned;
use serde_path_to_error::Segment;

use crate::HttpLimits;
use crate::dto::Object;
use crate::error::ApiError;

/// A JSON request body of type `T`, which must be a JSON object.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

/// Whether the request says its body is JSON: `application/json`, with any parameters, but no
/// `charset` other than UTF-8 (JSON is UTF-8, RFC 8259).
pub fn is_json_content_type(headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let mut parts = value.split(';');
    let essence = parts.next().unwrap_or_default().trim();
    if !essence.eq_ignore_ascii_case("application/json") {
        return false;
    }
    parts.all(|parameter| match parameter.split_once('=') {
        Some((name, charset)) if name.trim().eq_ignore_ascii_case("charset") => {
            let charset = charset.trim().trim_matches('"');
            charset.eq_ignore_ascii_case("utf-8") || charset.eq_ignore_ascii_case("utf8")
        }
        _ => true,
    })
}

/// The field a serde path names (`events[3].entity_id`), or `root` for the whole document. The
/// name stops at a segment serde could not name (a key that is not a string), so it is the
/// closest field known.
fn field_name(path: &serde_path_to_error::Path, root: &str) -> String {
    let mut name = String::new();
    for segment in path {
        match segment {
            Segment::Seq { index } => {
                name.push('[');
                name.push_str(&index.to_string());
                name.push(']');
            }
            Segment::Map { key } | Segment::Enum { variant: key } => {
                if !name.is_empty() {
                    name.push('.');
                }
                name.push_str(key);
            }
            Segment::Unknown => break,
        }
    }
    if name.is_empty() {
        root.to_owned()
    } else {
        name
    }
}

impl<T, S> FromRequest<S> for JsonBody<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json_content_type(req.headers()) {
            return Err(ApiError::unsupported_media_type());
        }
        let limit = req
            .extensions()
            .get::<HttpLimits>()
            .map(|l| l.max_body_bytes);
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            // axum answers an over-long body (`DefaultBodyLimit`) with a plain-text 413.
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::payload_too_large(match limit {
                    Some(limit) => format!("the request body is over the limit of {limit} bytes"),
                    None => "the request body is over the limit".to_owned(),
                })
            } else {
                ApiError::invalid("body", rejection.body_text())
            }
        })?;
        // Plain serde first: tracking the path costs a good part of the parse, and is needed
        // only to name the bad field of a body that fails.
        if let Ok(Object(value)) = serde_json::from_slice(&bytes) {
            return Ok(Self(value));
        }
        let mut deserializer = serde_json::Deserializer::from_slice(&bytes);
        let Object(value) = serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
            // Malformed JSON is a problem of the body; a value that does not fit (wrong type,
            // unknown field) is a problem of its field.
            let field = if e.inner().is_syntax() || e.inner().is_eof() {
                "body".to_owned()
            } else {
                field_name(e.path(), "body")
            };
            ApiError::invalid(field, e.inner().to_string())
        })?;
        // Trailing characters after the document.
        deserializer
            .end()
            .map_err(|e| ApiError::invalid("body", e.to_string()))?;
        Ok(Self(value))
    }
}

/// Query parameters of type `T` (a struct of `Option<String>` with `deny_unknown_fields`).
#[derive(Debug)]
pub struct Params<T>(pub T);

impl<T, S> FromRequestParts<S> for Params<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parse_query(parts.uri.query()).map(Self)
    }
}

/// A query string into `T` (400 naming the parameter that does not fit, or the unknown one).
///
/// # Errors
/// [`ApiError::invalid`] for an unknown, repeated or malformed parameter.
pub fn parse_query<T: DeserializeOwned>(query: Option<&str>) -> Result<T, ApiError> {
    let query = query.unwrap_or_default();
    let deserializer =
        serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
    serde_path_to_error::deserialize(deserializer)
        .map_err(|e| ApiError::invalid(field_name(e.path(), "query"), e.inner().to_string()))
}

/// The single path parameter of a route, percent-decoded.
#[derive(Debug)]
pub struct PathParam(pub String);

impl<S: Send + Sync> FromRequestParts<S> for PathParam {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Path::<String>::from_request_parts(parts, state)
            .await
            .map(|Path(value)| Self(value))
            .map_err(|rejection| ApiError::invalid("path", rejection.body_text()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn accepts(content_type: &str) -> bool {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_str(content_type).expect("valid header in test"),
        );
        is_json_content_type(&headers)
    }

    #[test]
    fn json_content_types() {
        assert!(accepts("application/json"));
        assert!(accepts("application/json; charset=utf-8"));
        assert!(accepts("application/json;charset=\"UTF-8\""));
        assert!(accepts("Application/JSON"));
        assert!(accepts("application/json; charset=utf8; foo=bar"));
        assert!(!accepts("application/json; charset=latin1"));
        assert!(!accepts("application/cloudevents+json"));
        assert!(!accepts("application/jsonx"));
        assert!(!accepts("text/plain"));
        assert!(!accepts("text/json"));
        assert!(!accepts("application/x-www-form-urlencoded"));
        assert!(!is_json_content_type(&HeaderMap::new()));
    }

    fn path_of(json: &str) -> String {
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct Outer {
            events: Vec<std::collections::BTreeMap<String, u8>>,
        }
        let mut deserializer = serde_json::Deserializer::from_str(json);
        let error = serde_path_to_error::deserialize::<_, Outer>(&mut deserializer)
            .expect_err("invalid in test");
        field_name(error.path(), "body")
    }

    #[test]
    fn field_names_follow_the_path_up_to_the_unknown() {
        assert_eq!(path_of(r#"{"events":[{"a":1},{"b":"x"}]}"#), "events[1].b");
        assert_eq!(path_of(r#"{"events":[{"a":1},{b}]}"#), "events[1]");
        assert_eq!(path_of(r#"{"events":{}}"#), "events");
        assert_eq!(path_of(r#"{oops}"#), "body");
        assert_eq!(path_of("[]"), "body");
    }
}
