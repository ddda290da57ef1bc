//! The black-box test suite of AllSource (one binary):
//! - `admin_cli`: `allsource admin` over HTTP, the real binary against a real server: every
//!   command group, table and json output, exit codes, `tail` following appends;
//! - `auth`: authentication and authorization attacks, the route × role matrix, admin CLI;
//! - `cold_reads`: a store read back from its Parquet files with no cache answers every read
//!   route exactly as it did from memory;
//! - `consumer_groups`: consumer groups over HTTP: competing members, redelivery, parking,
//!   tenant isolation, SIGKILL mid-flight, two PostgreSQL nodes on one group;
//! - `contract`: the `EventStore` contract, run against every storage adapter;
//! - `state_contract`: the `StateStore` contract, run against every adapter;
//! - `http`: every route, status code and error shape of the REST contract, against the real
//!   server;
//! - `compaction`: the compaction routes, and crashes of the real binary in the middle of a
//!   compaction;
//! - `process`: the real binary as a child process: crash (SIGKILL) cycles, SIGTERM, CLI;
//! - `postgres`: PostgreSQL-specific behaviour (lost database, several nodes);
//! - `postgres_feed`: live delivery across nodes on the postgres backend (LISTEN/NOTIFY and
//!   the poll);
//! - `postgres_partition`: the log partitioned by tenant (`admin postgres-partition`): every
//!   answer kept, a second run, another count refused, the CLI;
//! - `postgres_standby`: reads from a streaming-replication standby made by the test
//!   (`pg_basebackup`): read-your-writes, a lagging or failing standby, pagers never skipping;
//! - `pipelines`: stream pipelines over HTTP: hourly counts through SIGKILLs equal to an
//!   uninterrupted run, enrich from a projection, tenant isolation, the routes and paging,
//!   two postgres nodes sharing a pipeline;
//! - `policies`: the policy engine and the audit log over HTTP;
//! - `operations`: the Prometheus exposition after a known workload (and promtool), who may
//!   scrape it, traces exported over OTLP/HTTP with `traceparent` round trips;
//! - `payloads`: payload safety: what some reader could not read is refused at append; what
//!   is accepted reads back the same on every read path and across restarts;
//! - `projections`: projections and replay over HTTP, restarts and crashes between updates;
//! - `realtime`: consumers, WebSocket and SSE over the real server: the seam between replay
//!   and live, slow readers, resume, tenant isolation of every door, shutdown with open streams;
//! - `schemas`: the schema registry's routes and enforcement at append.
//! - `snapshots`: manual and automatic snapshots, and state reads through them.
//! - `policies`: the policy engine and the audit log over HTTP.
//! - `postgres`: PostgreSQL-specific behaviour (lost database, several nodes).
//! - `tenancy`: tenants, quotas, rate limits (memory and Redis), the two-tenant isolation
//!   matrix over every route.
//! - `mcp`: the MCP server with a real MCP client over HTTP (`/mcp`) and stdio (`allsource
//!   mcp`): every tool against the REST answer, schemas, tenancy, roles, read-only, audit.
//! - `openapi`: the OpenAPI document and docs page as served, and schemathesis fuzzing every
//!   operation of a `--dev` server against the document.
//! - `browser`: the docs page rendered by headless Chromium (operations shown, no script
//!   error, a screenshot kept as an artifact).
//! - `backup`: online backups under load, incremental chains, point-in-time restores by the
//!   real binary, verification of a corrupted file, and a backup to a local S3 server (moto).
//! - `webhooks`: webhook delivery to a real local receiver (signatures, order, retries,
//!   failure, the delivery log, restarts), refused destinations, validation, tenant isolation.
#![forbid(unsafe_code)]

mod admin_cli;
mod analytics;
mod auth;
mod backup;
mod browser;
mod cold_reads;
mod compaction;
mod console;
mod consumer_groups;
mod contract;
mod http;
mod mcp;
mod openapi;
mod operations;
mod payloads;
mod pipelines;
mod policies;
mod postgres;
mod postgres_feed;
mod postgres_partition;
mod postgres_standby;
mod process;
mod projections;
mod reads;
mod realtime;
mod schemas;
mod snapshots;
mod state_contract;
mod tenancy;
mod webhooks;
