//! # allsource-tests
//!
//! Helpers for the black-box test suite in `tests/suite` (one integration-test binary):
//!
//! # Layout
//! - [`server`]: `TestServer`, the real `Application` started in-process on port 0 with a
//!   temporary data dir, and an HTTP client for it.
//! - [`process`]: `ServerProcess`, the real `allsource` binary as a child process (for crash
//!   tests that SIGKILL it and CLI tests).
//! - [`pg`]: fresh PostgreSQL databases per test; loud skip or failure without PostgreSQL.
//! - [`pg_cluster`]: a PostgreSQL primary with a streaming-replication standby of its own (the
//!   standby-read tests).
//! - [`pagers`]: concurrent writers and a pager following the log ("a pager never skips").
//! - [`proxy`]: a TCP proxy a test can cut, to take PostgreSQL away from a running node.
//! - [`redis`]: the Redis of the rate-limiter tests; loud skip or failure without it.
//! - [`cdp`]: a headless Chromium driven through the DevTools protocol (the browser tests).
//! - [`harness`]: the storage backends the contract suite runs against.
//! - [`problem`]: assertions on problem documents (`assert_problem`, `fields`).
#![deny(unsafe_code)] // Exceptions, allowed where they are: `ServerProcess` sends SIGTERM and SIGHUP; `pg_cluster` runs PostgreSQL as its own user and stops it at exit.

pub mod cdp;
pub mod harness;
pub mod pagers;
pub mod pg;
pub mod pg_cluster;
pub mod problem;
pub mod process;
pub mod proxy;
pub mod redis;
pub mod server;
