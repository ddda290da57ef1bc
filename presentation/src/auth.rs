//! Who is calling.
//!
//! For now every request acts as tenant `default`: authentication is a later issue. The seam is
//! deliberate. Authentication will be a middleware that checks the credential and inserts the
//! credential's [`Caller`] into the request's extensions; [`CallerExtractor`] already takes a
//! `Caller` from there when one is present. Handlers take a `CallerExtractor` and pass the
//! `Caller` to the use cases, so neither handlers nor use cases change when auth arrives.

use std::convert::Infallible;

use allsource_application::Caller;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;

/// The caller of the current request: the `Caller` an authentication layer put into the
/// request's extensions, or, with no such layer, [`Caller::default_tenant`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallerExtractor(pub Caller);

impl<S: Send + Sync> FromRequestParts<S> for CallerExtractor {
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
