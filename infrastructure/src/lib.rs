//! # allsource-infrastructure
//!
//! Adapters of the application's ports.
//!
//! # Layout
//! - [`index`]: the in-memory read side (`EventIndex`) and the `GroupPlanner` that single
//!   writers use to stage appends; shared by the `memory` and `embedded` stores.
//! - [`memory`]: `MemoryStore`, an `EventStore` that keeps everything in memory (tests, `--dev`).
//! - [`embedded`]: `EmbeddedStore`, the default durable engine: single-writer group-commit WAL,
//!   Parquet files for sealed segments, a manifest, and recovery.
//! - [`postgres`]: `PostgresStore`, the `EventStore` on PostgreSQL (sqlx), for several
//!   stateless nodes on one database.
//! - [`cache`]: `CachedStore`, a moka cache of immutable facts (events by id, stream prefixes)
//!   in front of any store; never stale, even across nodes.
//! - [`clock`]: the system clock, `SystemClock`.
//! - [`state`]: adapters of the `StateStore` port (memory, file log, postgres).
//! - [`startup`]: `StartingStore`, `StartingStateStore` and `StartingCompactor`, which answer `Unavailable` until
//!   recovery has finished.
//! - [`audit`]: adapters of the `AuditLog` port.
//! - [`schema`]: `JsonSchemaValidator`, the `SchemaValidator` port on the `jsonschema` crate
//!   (draft 2020-12, no remote references).
//! - [`rate_limit`]: adapters of the `RateLimiter` port (memory, Redis).
//! - [`webhooks`]: `HttpWebhookSender`, the `WebhookSender` port on reqwest: HMAC-SHA256
//!   signatures, no redirects, destinations checked when registering and at connection time.
#![forbid(unsafe_code)]

pub mod audit;
pub mod backup;
pub mod cache;
pub mod clock;
pub mod embedded;
pub mod identity;
pub mod index;
pub mod memory;
pub mod postgres;
pub mod rate_limit;
pub mod schema;
pub mod sql;
pub mod startup;
pub mod state;
pub mod webhooks;

pub use clock::SystemClock;
pub use memory::MemoryStore;
pub use schema::JsonSchemaValidator;
pub use startup::{StartingCompactor, StartingStateStore, StartingStore};
