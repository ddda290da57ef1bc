//! The black-box test suite of AllSource (one binary):
//! - `contract`: the `EventStore` contract, run against every storage adapter;
//! - `state_contract`: the `StateStore` contract, run against every adapter;
//! - `http`: every route, status code and error shape of the REST contract, against the real
//!   server;
//! - `process`: the real binary as a child process: crash (SIGKILL) cycles, SIGTERM, CLI;
//! - `postgres`: PostgreSQL-specific behaviour (lost database, several nodes).

mod contract;
mod http;
mod postgres;
mod process;
mod state_contract;
