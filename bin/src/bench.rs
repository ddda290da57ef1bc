//! `allsource bench`: the HTTP load generator, with the baselines it is compared against
//! measured in the same run (see `docs/BENCHMARKS.md`):
//!
//! 1. the fsync rate of the data disk (4 KiB write + `fdatasync`, one writer);
//! 2. the ceiling of this machine for an axum JSON round trip (`Json<Event>` in and out);
//! 3. AllSource: single-event appends, 100-event batch appends, entity-state reads;
//! 4. PostgreSQL: single-row INSERT per transaction and 100-row INSERTs, at the same
//!    concurrency as the AllSource workloads.
//!
//! The server runs in this process on its own runtime (or elsewhere, with `--url`); client and
//! server share the machine's cores, as they do in the baselines of `PERFORMANCE.md`.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use parking_lot::Mutex;
use serde_json::json;

use crate::{Application, Settings};

mod analytics;
mod large_store;
mod pipelines;
mod realtime;

/// Arguments of `allsource bench`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Seconds each workload runs (after a one-second warm-up).
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Benchmark a running server at this URL instead of starting one in this process.
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,
    /// Storage backend of the in-process server: embedded, memory or postgres.
    #[arg(long, default_value = "embedded", value_parser = ["embedded", "memory", "postgres"])]
    pub backend: String,
    /// Data dir of the in-process server (default: a temporary dir under the current directory,
    /// so it sits on the same disk as the project).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// PostgreSQL for the baselines and for `--backend postgres`.
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/test")]
    pub postgres_url: String,
    /// Skip the PostgreSQL baselines.
    #[arg(long)]
    pub no_postgres: bool,
    /// Connections for single-event appends and state reads.
    #[arg(long, default_value_t = 64)]
    pub connections: usize,
    /// Connections for 100-event batch appends.
    #[arg(long, default_value_t = 16)]
    pub batch_connections: usize,
    /// Rate limiter of the in-process server: memory (the default of `serve`), redis, or off.
    #[arg(long, default_value = "memory", value_parser = ["memory", "redis", "off"])]
    pub rate_limit: String,
    /// Credentials of the in-process server: off (as `--dev`), jwt (a bootstrap admin logs in
    /// and every request carries its access token) or api-key (every request carries an API
    /// key of that admin).
    #[arg(long, default_value = "off", value_parser = ["off", "jwt", "api-key"])]
    pub auth: String,
    /// Run the real-time workloads instead (appends with and without 100 WebSocket
    /// subscribers, live latency at 5,000 events/s, catch-up rate); needs `--auth off`.
    #[arg(long)]
    pub realtime: bool,
    /// Run the pipeline workloads instead (appends with and without a live 4-operator
    /// pipeline, and a pipeline catching up over everything stored).
    #[arg(long, conflicts_with = "realtime")]
    pub pipelines: bool,
    /// Run the analytics workloads instead: load `--events` events, then time frequency,
    /// summary, a funnel, a GROUP BY and a selective filter, against DuckDB over the same
    /// Parquet files (needs `pip install duckdb` for the comparison).
    #[arg(long, conflicts_with_all = ["realtime", "pipelines"])]
    pub analytics: bool,
    /// Events the analytics workloads load first, and the size of the `--large-store` store.
    #[arg(long, default_value_t = 10_000_000)]
    pub events: u64,
    /// Build an embedded store of `--events` events in `--data-dir` (or reuse the one there),
    /// then measure start-up, memory, and hot and cold stream reads in a fresh process.
    #[arg(long, conflicts_with_all = ["realtime", "pipelines", "analytics", "url"])]
    pub large_store: bool,
}

/// The header every AllSource request of a workload carries (name, value), if any.
type Credential = Option<(&'static str, String)>;

/// A JSON client of the server under test, with the workload's credential (the real-time,
/// pipeline and analytics workloads).
struct Client {
    http: reqwest::Client,
    base: String,
    credential: Credential,
}

impl Client {
    /// Sends one request; a non-2xx answer is an error with its body.
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> anyhow::Result<serde_json::Value> {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some((name, value)) = &self.credential {
            request = request.header(*name, value);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.with_context(|| path.to_owned())?;
        let status = response.status();
        let body: serde_json::Value = response.json().await.unwrap_or(serde_json::Value::Null);
        if !status.is_success() {
            bail!("{path} answered {status}: {body}");
        }
        Ok(body)
    }
}

/// One workload's figures.
#[derive(Debug, Clone)]
struct Outcome {
    name: String,
    requests: u64,
    events: u64,
    errors: u64,
    seconds: f64,
    latency: Histogram<u64>,
}

impl Outcome {
    fn events_per_second(&self) -> f64 {
        self.events as f64 / self.seconds
    }

    fn micros(&self, quantile: f64) -> f64 {
        self.latency.value_at_quantile(quantile) as f64
    }
}

/// Runs the benchmark.
///
/// # Errors
/// A server that cannot start or be reached, or a failing workload.
pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    if args.large_store {
        return large_store::run(&args);
    }
    let client_runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let server_runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("allsource-server")
        .build()?;

    let scratch = tempfile::Builder::new()
        .prefix("allsource-bench-")
        .tempdir_in(".")
        .context("cannot create a scratch dir in the current directory")?;
    let data_dir = args
        .data_dir
        .clone()
        .unwrap_or_else(|| scratch.path().join("data"));
    std::fs::create_dir_all(&data_dir)?;

    let mut results = Vec::new();
    eprintln!("measuring the fsync rate of {}", data_dir.display());
    let fsync_rate = fsync_rate(&data_dir, Duration::from_secs(2))?;

    let echo_url = server_runtime.block_on(start_echo())?;
    results.push(client_runtime.block_on(drive(
        "axum Json echo (ceiling)",
        &args,
        args.connections,
        Workload::Echo(echo_url),
    ))?);

    let (base, _server) = match &args.url {
        Some(url) => (url.trim_end_matches('/').to_owned(), None),
        None => {
            let mut settings = Settings::for_tests(&data_dir);
            settings.storage.backend = args.backend.parse().map_err(anyhow::Error::msg)?;
            settings.storage.postgres.max_connections = 32;
            settings.rate_limit.enabled = args.rate_limit != "off";
            if args.analytics {
                // Loading 10 M events is not what a tenant's quotas are for; the questions may
                // take longer than a request should.
                settings.analytics.timeout_ms = 3_600_000;
                settings.analytics.memory_mb = 8192;
            }
            if args.rate_limit == "redis" {
                settings.rate_limit.backend = crate::settings::RateLimitBackend::Redis;
            }
            if args.auth != "off" {
                settings.auth.enabled = true;
                settings.auth.jwt.secret = BENCH_JWT_SECRET.into();
                settings.auth.bootstrap_admin.username = BENCH_ADMIN.into();
                settings.auth.bootstrap_admin.password = BENCH_PASSWORD.into();
            }
            if args.backend == "postgres" {
                // A database of its own, so the run never touches existing data.
                settings.storage.postgres.url =
                    server_runtime.block_on(fresh_database(&args.postgres_url))?;
            }
            let app = server_runtime.block_on(Application::build(settings))?;
            let base = format!("http://{}", app.local_addr());
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let handle = server_runtime.spawn(app.run_until(async move {
                let _ = stopped.await;
            }));
            client_runtime.block_on(wait_ready(&base))?;
            (base, Some((stop, handle)))
        }
    };
    let credential = if args.url.is_some() {
        None
    } else {
        client_runtime.block_on(credential(&base, &args.auth))?
    };
    if args.realtime {
        anyhow::ensure!(
            args.auth == "off",
            "--realtime runs with --auth off (its subscribers send no credentials)"
        );
        return client_runtime.block_on(realtime::run(&args, &base, credential));
    }
    if args.pipelines {
        return client_runtime.block_on(pipelines::run(&args, &base, credential));
    }
    if args.analytics {
        anyhow::ensure!(
            args.url.is_none() && args.backend == "embedded",
            "--analytics runs the in-process embedded server (DuckDB reads its Parquet files)"
        );
        return client_runtime.block_on(analytics::run(&args, &base, credential, &data_dir));
    }
    results.push(client_runtime.block_on(drive(
        "AllSource single-event appends",
        &args,
        args.connections,
        Workload::Single(base.clone(), credential.clone()),
    ))?);
    results.push(client_runtime.block_on(drive(
        "AllSource 100-event batches",
        &args,
        args.batch_connections,
        Workload::Batch(base.clone(), credential.clone()),
    ))?);
    results.push(client_runtime.block_on(drive(
        "AllSource entity-state reads",
        &args,
        args.connections,
        Workload::State(base.clone(), credential),
    ))?);

    if !args.no_postgres {
        match client_runtime.block_on(postgres_baselines(&args)) {
            Ok(mut pg) => results.append(&mut pg),
            Err(e) => eprintln!("skipping the PostgreSQL baselines: {e:#}"),
        }
    }
    report(&args, fsync_rate, &results);
    Ok(())
}

/// `fdatasync` calls per second after a 4 KiB write, one writer.
fn fsync_rate(dir: &std::path::Path, duration: Duration) -> anyhow::Result<f64> {
    let path = dir.join("fsync-probe");
    let mut file = std::fs::File::create(&path)?;
    let block = vec![0xA5u8; 4096];
    let started = Instant::now();
    let mut syncs = 0u64;
    while started.elapsed() < duration {
        file.write_all(&block)?;
        file.sync_data()?;
        syncs += 1;
    }
    let rate = syncs as f64 / started.elapsed().as_secs_f64();
    drop(file);
    let _ = std::fs::remove_file(&path);
    Ok(rate)
}

#[derive(serde::Serialize, serde::Deserialize)]
struct EchoEvent {
    entity_id: String,
    event_type: String,
    payload: serde_json::Value,
    #[serde(default)]
    metadata: Option<serde_json::Value>,
}

async fn start_echo() -> anyhow::Result<String> {
    async fn echo(axum::Json(event): axum::Json<EchoEvent>) -> axum::Json<EchoEvent> {
        axum::Json(event)
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/echo", listener.local_addr()?);
    let router = axum::Router::new().route("/echo", axum::routing::post(echo));
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    Ok(url)
}

async fn wait_ready(base: &str) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    // A large store takes a while to open (about 75 s for 100 M events on the benchmark
    // machine): wait up to ten minutes.
    for _ in 0..6000 {
        if let Ok(r) = client.get(format!("{base}/health/ready")).send().await
            && r.status() == 200
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("{base} did not become ready within ten minutes")
}

/// Creates `allsource_bench_<pid>` next to the database of `url` and returns its URL. It is
/// left in place for inspection; drop it with `DROP DATABASE`.
async fn fresh_database(url: &str) -> anyhow::Result<String> {
    let name = format!("allsource_bench_{}", std::process::id());
    let pool = sqlx::PgPool::connect(url)
        .await
        .with_context(|| format!("cannot connect to {url}"))?;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&pool)
        .await?;
    let Some(slash) = url.rfind('/') else {
        bail!("--postgres-url {url} names no database");
    };
    eprintln!("the postgres backend uses the new database {name}");
    Ok(format!("{}/{name}", &url[..slash]))
}

/// Signing secret and bootstrap admin of the in-process server under `--auth jwt|api-key`.
const BENCH_JWT_SECRET: &str = "allsource-bench-signing-secret-of-48-characters";
const BENCH_ADMIN: &str = "bench-admin";
const BENCH_PASSWORD: &str = "bench-admin-password-1";

/// Logs the bootstrap admin in and answers the header the workloads send: the access token
/// (`jwt`) or a new API key (`api-key`); nothing with `off`.
async fn credential(base: &str, auth: &str) -> anyhow::Result<Credential> {
    if auth == "off" {
        return Ok(None);
    }
    let client = reqwest::Client::new();
    let login: serde_json::Value = client
        .post(format!("{base}/api/v1/auth/login"))
        .json(&json!({"username": BENCH_ADMIN, "password": BENCH_PASSWORD}))
        .send()
        .await?
        .error_for_status()
        .context("the bootstrap admin cannot log in")?
        .json()
        .await?;
    let Some(token) = login["access_token"].as_str() else {
        bail!("login answered no access_token: {login}");
    };
    if auth == "jwt" {
        return Ok(Some(("authorization", format!("Bearer {token}"))));
    }
    let created: serde_json::Value = client
        .post(format!("{base}/api/v1/auth/api-keys"))
        .bearer_auth(token)
        .json(&json!({"name": "bench", "role": "developer"}))
        .send()
        .await?
        .error_for_status()
        .context("cannot create the benchmark's API key")?
        .json()
        .await?;
    let Some(key) = created["key"].as_str() else {
        bail!("API key creation answered no key: {created}");
    };
    Ok(Some(("x-api-key", key.to_owned())))
}

#[derive(Clone)]
enum Workload {
    Echo(String),
    Single(String, Credential),
    Batch(String, Credential),
    State(String, Credential),
}

/// A ~290-byte event, like the baselines of PERFORMANCE.md.
fn event_body(entity: &str, n: u64) -> serde_json::Value {
    json!({
        "entity_id": entity,
        "event_type": "order.placed",
        "payload": {"amount_cents": 129900 + n, "currency": "EUR", "customer": "c-1234567",
                    "items": [{"sku": "sku-1", "qty": 2}, {"sku": "sku-2", "qty": 1}]},
        "metadata": {"correlation_id": format!("c-{n}"), "source": "bench"},
    })
}

async fn drive(
    name: &str,
    args: &BenchArgs,
    connections: usize,
    workload: Workload,
) -> anyhow::Result<Outcome> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(connections)
        .build()?;
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let requests = Arc::new(AtomicU64::new(0));
    let events = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let latency = Arc::new(Mutex::new(Histogram::<u64>::new(3)?));
    let mut tasks = Vec::new();
    for c in 0..connections {
        let (client, workload) = (client.clone(), workload.clone());
        let (measuring, stop) = (Arc::clone(&measuring), Arc::clone(&stop));
        let (requests, events, errors, latency) = (
            Arc::clone(&requests),
            Arc::clone(&events),
            Arc::clone(&errors),
            Arc::clone(&latency),
        );
        tasks.push(tokio::spawn(async move {
            let mut local = Histogram::<u64>::new(3).expect("histogram");
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let entity = format!("bench-{c}-{}", n % 100);
                let (request, count) = match &workload {
                    Workload::Echo(url) => (client.post(url).json(&event_body(&entity, n)), 1),
                    Workload::Single(base, _) => (
                        client
                            .post(format!("{base}/api/v1/events"))
                            .json(&event_body(&entity, n)),
                        1,
                    ),
                    Workload::Batch(base, _) => {
                        let batch: Vec<_> = (0..100)
                            .map(|i| event_body(&format!("batch-{c}-{}", (n + i) % 100), n))
                            .collect();
                        (
                            client
                                .post(format!("{base}/api/v1/events/batch"))
                                .json(&json!({"events": batch})),
                            100,
                        )
                    }
                    Workload::State(base, _) => (
                        client.get(format!(
                            "{base}/api/v1/entities/bench-{c}-{}/state",
                            n % 100
                        )),
                        1,
                    ),
                };
                let request = match &workload {
                    Workload::Single(_, Some((name, value)))
                    | Workload::Batch(_, Some((name, value)))
                    | Workload::State(_, Some((name, value))) => request.header(*name, value),
                    _ => request,
                };
                let started = Instant::now();
                let ok = match request.send().await {
                    Ok(response) => {
                        let ok = response.status().is_success();
                        let _ = response.bytes().await;
                        ok
                    }
                    Err(_) => false,
                };
                if measuring.load(Ordering::Relaxed) {
                    if ok {
                        requests.fetch_add(1, Ordering::Relaxed);
                        events.fetch_add(count, Ordering::Relaxed);
                        let _ = local.record(started.elapsed().as_micros() as u64);
                    } else {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            let _ = latency.lock().add(&local);
        }));
    }
    let bar = ProgressBar::new(args.seconds + 1);
    bar.set_style(
        ProgressStyle::with_template("{msg:40} [{bar:30}] {pos}/{len} s")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_message(name.to_owned());
    tokio::time::sleep(Duration::from_secs(1)).await;
    bar.inc(1);
    measuring.store(true, Ordering::Relaxed);
    let started = Instant::now();
    for _ in 0..args.seconds {
        tokio::time::sleep(Duration::from_secs(1)).await;
        bar.inc(1);
    }
    measuring.store(false, Ordering::Relaxed);
    let seconds = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    bar.finish_and_clear();
    let latency = latency.lock().clone();
    let outcome = Outcome {
        name: name.to_owned(),
        requests: requests.load(Ordering::Relaxed),
        events: events.load(Ordering::Relaxed),
        errors: errors.load(Ordering::Relaxed),
        seconds,
        latency,
    };
    eprintln!(
        "{:40} {:>12.0} events/s  p50 {:>8.0} µs  p99 {:>8.0} µs  errors {}",
        outcome.name,
        outcome.events_per_second(),
        outcome.micros(0.5),
        outcome.micros(0.99),
        outcome.errors
    );
    if outcome.requests == 0 {
        bail!("{name}: no request succeeded ({} errors)", outcome.errors);
    }
    Ok(outcome)
}

/// PostgreSQL baselines: the same append workloads as plain INSERTs into an equivalent table.
async fn postgres_baselines(args: &BenchArgs) -> anyhow::Result<Vec<Outcome>> {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(args.connections as u32)
        .connect(&args.postgres_url)
        .await
        .with_context(|| format!("cannot connect to {}", args.postgres_url))?;
    let table = format!("bench_events_{}", std::process::id());
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "CREATE TABLE {table} (id uuid PRIMARY KEY, tenant_id text NOT NULL, entity_id text NOT NULL, \
         event_type text NOT NULL, version bigint NOT NULL, position bigserial, \
         timestamp timestamptz NOT NULL DEFAULT now(), payload jsonb NOT NULL, metadata jsonb, \
         UNIQUE (tenant_id, entity_id, version))"
    )))
    .execute(&pool)
    .await?;
    let single = pg_drive(&pool, &table, args, args.connections, 1).await;
    let batch = pg_drive(&pool, &table, args, args.batch_connections, 100).await;
    let _ = sqlx::query(sqlx::AssertSqlSafe(format!("DROP TABLE {table}")))
        .execute(&pool)
        .await;
    Ok(vec![single?, batch?])
}

async fn pg_drive(
    pool: &sqlx::PgPool,
    table: &str,
    args: &BenchArgs,
    clients: usize,
    rows: usize,
) -> anyhow::Result<Outcome> {
    let name = if rows == 1 {
        format!("PostgreSQL single-row INSERT, {clients} clients")
    } else {
        format!("PostgreSQL {rows}-row INSERT, {clients} clients")
    };
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let counters = Arc::new((AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)));
    let latency = Arc::new(Mutex::new(Histogram::<u64>::new(3)?));
    let sql = format!(
        "INSERT INTO {table} (id, tenant_id, entity_id, event_type, version, payload, metadata) \
         SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::jsonb[], $7::jsonb[])"
    );
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (pool, sql) = (pool.clone(), sql.clone());
        let (measuring, stop, counters, latency) = (
            Arc::clone(&measuring),
            Arc::clone(&stop),
            Arc::clone(&counters),
            Arc::clone(&latency),
        );
        tasks.push(tokio::spawn(async move {
            let mut local = Histogram::<u64>::new(3).expect("histogram");
            let mut version = 0i64;
            while !stop.load(Ordering::Relaxed) {
                let mut ids = Vec::with_capacity(rows);
                let mut versions = Vec::with_capacity(rows);
                for _ in 0..rows {
                    version += 1;
                    ids.push(uuid::Uuid::now_v7());
                    versions.push(version);
                }
                let body = event_body("x", version as u64);
                let payloads = vec![body["payload"].clone(); rows];
                let metadata = vec![body["metadata"].clone(); rows];
                let started = Instant::now();
                let done = sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
                    .bind(&ids)
                    .bind(vec!["default"; rows])
                    .bind(vec![format!("pg-{c}"); rows])
                    .bind(vec!["order.placed"; rows])
                    .bind(&versions)
                    .bind(&payloads)
                    .bind(&metadata)
                    .execute(&pool)
                    .await;
                if measuring.load(Ordering::Relaxed) {
                    if done.is_ok() {
                        counters.0.fetch_add(1, Ordering::Relaxed);
                        counters.1.fetch_add(rows as u64, Ordering::Relaxed);
                        let _ = local.record(started.elapsed().as_micros() as u64);
                    } else {
                        counters.2.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            let _ = latency.lock().add(&local);
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    measuring.store(true, Ordering::Relaxed);
    let started = Instant::now();
    let bar = ProgressBar::new(args.seconds);
    bar.set_message(name.clone());
    for _ in 0..args.seconds {
        tokio::time::sleep(Duration::from_secs(1)).await;
        bar.inc(1);
    }
    measuring.store(false, Ordering::Relaxed);
    let seconds = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    bar.finish_and_clear();
    let latency = latency.lock().clone();
    let outcome = Outcome {
        name,
        requests: counters.0.load(Ordering::Relaxed),
        events: counters.1.load(Ordering::Relaxed),
        errors: counters.2.load(Ordering::Relaxed),
        seconds,
        latency,
    };
    eprintln!(
        "{:40} {:>12.0} events/s  p50 {:>8.0} µs  p99 {:>8.0} µs  errors {}",
        outcome.name,
        outcome.events_per_second(),
        outcome.micros(0.5),
        outcome.micros(0.99),
        outcome.errors
    );
    Ok(outcome)
}

fn report(args: &BenchArgs, fsync_rate: f64, results: &[Outcome]) {
    let find = |prefix: &str| results.iter().find(|r| r.name.starts_with(prefix));
    if args.url.is_none() {
        println!(
            "\nserver: backend {}, rate limit {}, auth {}",
            args.backend, args.rate_limit, args.auth
        );
    }
    println!(
        "\n| workload | connections | events/s | requests/s | p50 µs | p99 µs | p99.9 µs | errors |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for r in results {
        let connections = if r.name.contains("batch") || r.name.contains("100-row") {
            args.batch_connections
        } else {
            args.connections
        };
        println!(
            "| {} | {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {} |",
            r.name,
            connections,
            r.events_per_second(),
            r.requests as f64 / r.seconds,
            r.micros(0.5),
            r.micros(0.99),
            r.micros(0.999),
            r.errors
        );
    }
    println!("\nfsync rate of the data disk (4 KiB + fdatasync, one writer): {fsync_rate:.0}/s");
    let ratio = |a: Option<&Outcome>, b: Option<&Outcome>| match (a, b) {
        (Some(a), Some(b)) if b.events > 0 => {
            format!("{:.2}×", a.events_per_second() / b.events_per_second())
        }
        _ => "n/a".into(),
    };
    let single = find("AllSource single");
    let batch = find("AllSource 100");
    let state = find("AllSource entity-state");
    let echo = find("axum Json echo");
    println!("\n| ratio | value |\n|---|---|");
    println!(
        "| single appends ÷ PostgreSQL single-row INSERTs | {} |",
        ratio(single, find("PostgreSQL single"))
    );
    println!(
        "| single appends ÷ axum Json echo ceiling | {} |",
        ratio(single, echo)
    );
    println!(
        "| 100-event batches ÷ PostgreSQL 100-row INSERTs | {} |",
        ratio(batch, find("PostgreSQL 100"))
    );
    println!(
        "| entity-state reads ÷ axum Json echo ceiling | {} |",
        ratio(state, echo)
    );
    if let Some(single) = single {
        println!(
            "| events per fsync (single appends ÷ fsync rate) | {:.1} |",
            single.events_per_second() / fsync_rate
        );
    }
}
