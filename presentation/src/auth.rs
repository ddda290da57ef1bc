//! Who is calling, for handlers: [`CallerExtractor`] takes the [`Caller`] that the
//! authentication layer ([`crate::access::authenticate`]) put into the request's extensions.
//! Handlers pass it to the use cases, which scope everything to the caller's tenant.

use allsource_application::Caller;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use crate::error::ApiError;

/// The caller of the current request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallerExtractor(pub Caller);

impl<S: Send + Sync> FromRequestParts<S> for CallerExtractor {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        // Without the layer's caller the request is refused, never served as someone else.
        parts
            .extensions
            .get::<Caller>()
            .cloned()
            .map(Self)
            .ok_or_else(|| ApiError::unauthorized("credentials are required"))
    }
}
