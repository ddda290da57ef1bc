//! Who is calling. For now every request acts as tenant `default` (authentication is a later
//! piece of work). The seam is deliberate: an authentication middleware will insert the
//! credential's [`Caller`] into the request's extensions, and this extractor will pick it up;
//! handlers and use cases do not change.

use allsource_application::Caller;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use std::convert::Infallible;

/// The caller of the current request.
#[derive(Debug, Clone)]
pub struct CurrentCaller(pub Caller);

impl<S: Send + Sync> FromRequestParts<S> for CurrentCaller {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(
            parts
                .extensions
                .get::<Caller>()
                .cloned()
                .unwrap_or_else(Caller::default_tenant),
        ))
    }
}
