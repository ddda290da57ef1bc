//! Use cases. Each one takes the [`Caller`](crate::Caller) and raw, untrusted input (strings as
//! they came from the request), validates it with field-level errors, applies the business rules,
//! and calls the ports. Each error enum documents the HTTP status its variants map to.

mod append;
mod params;
mod read;

pub use append::{AppendError, AppendEventInput, AppendEvents, AppendLimits, AppendReply};
pub use params::FieldError;
pub use read::{
    DEFAULT_QUERY_LIMIT, EntityListInput, EntityStateInput, EntityStateView, MAX_PAGE_LIMIT,
    QueryInput, ReadError, ReadEvents, StreamInput,
};
