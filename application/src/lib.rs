//! # allsource-application
//!
//! The use cases of AllSource and the ports they need. This crate performs no I/O of its own: it
//! talks to storage and time through the traits in [`ports`], which the infrastructure crate
//! implements and the composition root (`bin`) picks at run time.
//!
//! # Layout
//! - [`ports`]: `EventStore` (with the contract every adapter must honour) and `Clock`.
//! - [`use_cases`]: append (single and batch), query, read stream, entity state (with `as_of`),
//!   entities, event types, stats. Each validates its raw input and reports field-level errors.
//! - [`tenancy`]: who a request acts for.
#![forbid(unsafe_code)]

pub mod ports;
pub mod tenancy;
pub mod use_cases;

pub use tenancy::Caller;
