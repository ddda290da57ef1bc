//! Adapters of the [`AuditLog`](allsource_application::ports::AuditLog) port.
//!
//! # Layout
//! - [`memory`]: `MemoryAuditLog`, a vector (tests, `--dev`).
//! - [`state`]: `StateAuditLog`, durable, over the `StateStore` port (every backend).

pub mod memory;
pub mod state;

pub use memory::MemoryAuditLog;
pub use state::StateAuditLog;
