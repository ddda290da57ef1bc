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
//! - [`clock`]: `SystemClock`.
//! - [`startup`]: `StartingStore`, which answers `Unavailable` until recovery has finished.

pub mod clock;
pub mod embedded;
pub mod index;
pub mod memory;
pub mod startup;

pub use clock::SystemClock;
pub use memory::MemoryStore;
pub use startup::StartingStore;
