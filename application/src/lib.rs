//! # allsource-application
//!
//! The use cases of AllSource and the ports they need. This crate performs no I/O of its own: it
//! talks to storage and time through the traits in [`ports`], which the infrastructure crate
//! implements and the composition root (`bin`) picks at run time.
//!
//! # Layout
//! - [`ports`]: `EventStore` (with the contract every adapter must honour) and `Clock`.
//! - [`use_cases`]: append (single and batch), query, read stream, entity state (with `as_of`),
//!   entities, event types, stats, the schema registry (which is also the append guard that
//!   enforces schemas), policies, the audit trail. Each validates its raw input and reports
//!   field-level errors.
//! - [`analytics`]: the pure computations of the analytics routes (time buckets, percentiles,
//!   funnels, trends, anomalies).
//! - [`pipelines`]: stream pipelines — definitions, durable execution over the tenant's log
//!   (operator state and checkpoint committed together), derived events and result tables.
//! - [`projections`]: declarative projections kept up to date by a runner, and replay jobs.
//! - [`subscriptions`]: following the log: the commit feed and the subscription (catch-up,
//!   then live, no gap and no duplicate at the seam) behind every real-time door.
//! - [`webhooks`]: webhooks — registration, signed in-order delivery with retries from a
//!   durable cursor, the delivery log, and the destination rules.
//! - [`quota`]: `QuotaGate` and `TenantGate`, the seams through which features consult the
//!   tenant's quotas and status.
//! - [`tenancy`]: who a request acts for ([`Caller`]).
//! - [`supervise`]: background loops that are restarted (and logged) when they die.
//! - [`observability`]: the lags of the log's followers, measured for the metrics.
//! - [`auth`]: the [`Authenticate`](auth::Authenticate) trait the HTTP layer calls with a
//!   request's credential.
//! - `testing` (feature `mocks`): an in-memory state store and a given/when/then helper for
//!   use-case tests; the ports' mockall mocks are behind the same feature.
#![forbid(unsafe_code)]

pub mod analytics;
pub mod auth;
mod fleet;
pub mod observability;
pub mod pipelines;
pub mod ports;
pub mod projections;
pub mod quota;
pub mod subscriptions;
pub mod supervise;
pub mod tenancy;
#[cfg(any(test, feature = "mocks"))]
pub mod testing;
pub mod use_cases;
pub mod webhooks;

pub use tenancy::{Caller, Principal};
