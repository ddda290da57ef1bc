//! Adapters of the [`StateStore`](allsource_application::ports::StateStore) port.
//!
//! # Layout
//! - [`memory`]: `MemoryStateStore`, a `BTreeMap` (tests, `--dev`).
//! - [`file`]: `FileStateStore`, the embedded backend's: an append-only, checksummed log of
//!   writes replayed at start and rewritten (compacted) when mostly dead.
//! - [`postgres`]: `PostgresStateStore`, a table in the events database.
//!
//! The three share the in-memory map logic of [`memory::StateMap`] where they can, so the
//! version rules live in one place.

pub mod file;
pub mod memory;
pub mod postgres;

pub use file::FileStateStore;
pub use memory::MemoryStateStore;
pub use postgres::PostgresStateStore;
