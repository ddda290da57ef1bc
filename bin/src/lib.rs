//! # allsource (the composition root)
//!
//! Reads the settings, picks the adapters, wires the use cases into the HTTP router and serves.
//! `main` is thin: the same [`Application::build`] is what the black-box tests start on port 0
//! with a temporary data dir.
//!
//! # Layout
//! - [`settings`]: the `Settings` struct, loaded from defaults, file, environment and flags.
//! - [`app`]: `Application`: build (bind, start recovery), run until stopped, graceful shutdown.
//! - [`telemetry`]: logs, OpenTelemetry traces, the Prometheus recorder.
//! - [`reload`]: configuration reload on SIGHUP.
//! - [`bench`]: the HTTP load generator behind `allsource bench`.
//! - [`admin`]: `allsource admin ...`: the admin CLI over HTTP (tenants, users, keys, stats,
//!   schemas, projections, consumers, backups, compaction, tail), `create-user` (users
//!   without HTTP, e.g. the first admin) and `postgres-partition` (on the database).
//! - [`mcp`]: `allsource mcp`, the MCP server over stdio (for desktop agents).
//! - [`backup`]: `allsource backup create|list|verify|restore`, and the server's backup wiring.
#![forbid(unsafe_code)]

pub mod admin;
pub mod app;
pub mod backup;
pub mod bench;
pub mod mcp;
pub mod reload;
pub mod settings;
pub mod telemetry;

pub use app::Application;
pub use settings::{Overrides, Settings};
