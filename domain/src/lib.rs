//! # allsource-domain
//!
//! The heart of AllSource: what an event is, the rules its fields obey, how expectations on a
//! stream's version are checked, how a batch of proposed events is planned against the stored
//! streams, and how an entity's state is folded from its events.
//!
//! This crate is pure: no async runtime, no I/O. Every rule here is unit-tested in the file that
//! holds it, so adapters and use cases can rely on it instead of re-implementing it.
//!
//! # Layout
//! - [`values`]: value objects (`TenantId`, `EntityId`, `EventType`, `EventId`, `Version`,
//!   `Position`) with `parse` constructors that enforce the API's validation rules.
//! - [`event`]: the stored [`Event`](event::Event) and the [`ProposedEvent`](event::ProposedEvent)
//!   a client asks to append.
//! - [`expected_version`]: optimistic-concurrency expectations.
//! - [`append`]: the pure append planner (expectations in order, idempotency by event id).
//! - [`payload`]: what JSON an event's payload and metadata may hold (nesting, numbers,
//!   escapes) so that every reader reads it the same.
//! - [`state`]: the entity-state fold (top-level merge).
//! - [`access`]: roles, permissions and the table joining them.
//! - [`schema`]: schema-registry subjects, compatibility modes and the compatibility checker.
//! - [`policy`]: the policy language (conditions, effects, priorities), its evaluation and the
//!   five default policies.
//! - [`projection`]: declarative projections: definitions, reducers, keyed state.
//! - [`pipeline`]: stream pipelines: definitions validated field by field, and the pure,
//!   checkpointable execution of their operators (windows, reduce, dedupe, throttle, ...).
//! - [`query_dsl`]: the JSON query language of `POST /api/v1/query`, validated member by
//!   member, and the naive evaluator that defines its meaning.
//! - [`subscription`]: what followers of the log ask for: type filters (`x`, `x.*`, `*`),
//!   an entity, consumer names.
//! - [`tenant`]: tenants, tiers, quotas and rate limits.
//! - [`identity`]: the value objects of identity, [`Username`] and [`Password`].
#![forbid(unsafe_code)]

pub mod access;
pub mod append;
pub mod event;
pub mod expected_version;
pub mod identity;
pub mod payload;
pub mod pipeline;
pub mod policy;
pub mod projection;
pub mod query_dsl;
pub mod schema;
pub mod state;
pub mod subscription;
pub mod tenant;
pub mod values;

pub use access::{Permission, Role};
pub use append::{AppendContext, AppendRejection, PlannedEvent, plan_append};
pub use event::{Event, JsonPayload, ProposedEvent, same_content};
pub use expected_version::ExpectedVersion;
pub use identity::{Password, Username};
pub use payload::{JsonProblem, MAX_NESTING, check_json, check_payload};
pub use schema::{CompatibilityMode, Incompatibility, SchemaVersion, Subject};
pub use state::{EntityState, apply_payload};
pub use subscription::{ConsumerName, EventFilter, TypeFilter, TypeFilters};
pub use tenant::{QuotaOverrides, Quotas, RateLimit, Tenant, TenantName, Tier};
pub use values::{EntityId, EventId, EventType, InvalidValue, Position, TenantId, Version};
