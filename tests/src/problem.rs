//! Assertions on problem documents (RFC 9457), shared by every suite module.

use crate::server::Reply;

/// The reply is a problem document of `status` with error code `code`: the problem+json
/// content type, `type`, `title` and `detail` strings, `status`, `error`, and the
/// `x-request-id` header every response carries.
pub fn assert_problem(reply: &Reply, status: u16, code: &str) {
    assert_eq!(reply.status, status, "{}", reply.body);
    assert_eq!(
        reply.header("content-type"),
        Some("application/problem+json"),
        "{}",
        reply.body
    );
    for member in ["type", "title", "detail"] {
        assert!(reply.body[member].is_string(), "{member} in {}", reply.body);
    }
    assert_eq!(reply.body["status"], status, "{}", reply.body);
    assert_eq!(reply.body["error"], code, "{}", reply.body);
    assert!(
        reply
            .header("x-request-id")
            .is_some_and(|id| !id.is_empty()),
        "x-request-id on {}",
        reply.body
    );
}

/// The `field` of each entry of the problem's `errors` array, in order.
pub fn fields(reply: &Reply) -> Vec<String> {
    reply.body["errors"]
        .as_array()
        .map(|errors| {
            errors
                .iter()
                .map(|e| e["field"].as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default()
}
