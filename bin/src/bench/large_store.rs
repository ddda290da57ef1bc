//! `allsource bench --large-store`: an embedded store larger than memory (see
//! `docs/BENCHMARKS.md`, "A store larger than memory").
//!
//! 1. **Build** (skipped when `--data-dir` already holds a store): `--events` events appended
//!    in process, 100-event batches from 16 tasks, durability `none`; one entity per 100
//!    events, event `i` going to entity `i % entities`, so that a stream's events lie far
//!    apart in the log (the hard case for reads from disk). Progress on stderr.
//! 2. **Open and read**, in a fresh child process (so that the build's memory does not count):
//!    start-up time, resident memory after opening, the index's figures, hot stream reads (one
//!    stream again and again), cold stream reads (random streams, mostly not in the block
//!    cache; the OS page cache may hold their pages), and resident memory at the end.
//!
//! The HTTP workloads over the same store: `allsource bench --data-dir DIR --no-postgres`.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use allsource_application::ports::{EventStore, StreamRange};
use allsource_domain::{EntityId, EventId, EventType, ExpectedVersion, ProposedEvent, TenantId};
use allsource_infrastructure::SystemClock;
use allsource_infrastructure::embedded::{Durability, EmbeddedConfig, EmbeddedStore};
use anyhow::Context;
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::value::RawValue;

use super::BenchArgs;

/// Events per append while building.
const BATCH: u64 = 100;
/// Concurrent appenders while building.
const LOADERS: u64 = 16;
/// Events per entity.
const EVENTS_PER_ENTITY: u64 = 100;
/// Environment variable telling the child process to run the read phase only.
const READ_PHASE: &str = "ALLSOURCE_BENCH_LARGE_STORE_READ";

/// Runs the workload.
///
/// # Errors
/// A store that cannot be built or opened, or a failing read.
pub fn run(args: &BenchArgs) -> anyhow::Result<()> {
    let data_dir = args
        .data_dir
        .clone()
        .context("--large-store needs --data-dir DIR (the store is kept there for reuse)")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    if std::env::var_os(READ_PHASE).is_some() {
        return runtime.block_on(read_phase(&data_dir));
    }
    if data_dir.join("manifest.json").exists() {
        eprintln!(
            "{} already holds a store: measuring it (remove the dir to build a new one)",
            data_dir.display()
        );
    } else {
        std::fs::create_dir_all(&data_dir)?;
        runtime.block_on(build(&data_dir, args.events))?;
    }
    drop(runtime);
    let status = std::process::Command::new(std::env::current_exe()?)
        .args(["bench", "--large-store", "--data-dir"])
        .arg(&data_dir)
        .env(READ_PHASE, "1")
        .status()
        .context("cannot start the read phase")?;
    anyhow::ensure!(status.success(), "the read phase failed: {status}");
    Ok(())
}

fn config(data_dir: &Path) -> EmbeddedConfig {
    EmbeddedConfig {
        data_dir: data_dir.to_path_buf(),
        durability: Durability::None,
        ..EmbeddedConfig::default()
    }
}

fn entity(n: u64) -> anyhow::Result<EntityId> {
    EntityId::parse(&format!("account-{n:09}")).map_err(anyhow::Error::msg)
}

async fn build(data_dir: &Path, events: u64) -> anyhow::Result<()> {
    let dir = data_dir.to_path_buf();
    let store = Arc::new(
        tokio::task::spawn_blocking(move || {
            EmbeddedStore::open(config(&dir), Arc::new(SystemClock))
        })
        .await??,
    );
    let entities = (events / EVENTS_PER_ENTITY).max(1);
    let tenant = TenantId::parse("default").map_err(anyhow::Error::msg)?;
    let types: Vec<EventType> = ["account.opened", "funds.deposited", "funds.withdrawn"]
        .iter()
        .map(|t| EventType::parse(t).map_err(anyhow::Error::msg))
        .collect::<Result<_, _>>()?;
    let progress = ProgressBar::new(events).with_style(ProgressStyle::with_template(
        "building {pos}/{len} events [{elapsed_precise}] {bar:40} {per_sec} eta {eta}",
    )?);
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut loaders = Vec::new();
    for _ in 0..LOADERS {
        let (store, tenant, types, next, progress) = (
            Arc::clone(&store),
            tenant.clone(),
            types.clone(),
            Arc::clone(&next),
            progress.clone(),
        );
        loaders.push(tokio::spawn(async move {
            loop {
                let first = next.fetch_add(BATCH, Ordering::Relaxed);
                if first >= events {
                    return anyhow::Ok(());
                }
                let last = (first + BATCH).min(events);
                let batch = (first..last)
                    .map(|i| {
                        let payload = format!(
                            r#"{{"amount":{},"currency":"EUR","reference":"ref-{i:012}"}}"#,
                            i % 10_000
                        );
                        Ok(ProposedEvent {
                            id: EventId::generate(),
                            entity_id: entity(i % entities)?,
                            event_type: types[(i % 3) as usize].clone(),
                            payload: RawValue::from_string(payload)?,
                            metadata: None,
                            expected_version: ExpectedVersion::Any,
                        })
                    })
                    .collect::<anyhow::Result<Vec<_>>>()?;
                store.append(&tenant, batch).await?;
                progress.inc(last - first);
            }
        }));
    }
    for loader in loaders {
        loader.await??;
    }
    progress.finish();
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "built {events} events ({entities} entities) in {seconds:.0} s: {:.0} events/s; peak \
         resident memory of the build {}",
        events as f64 / seconds,
        mib(peak_rss())
    );
    store.shutdown().await?;
    Ok(())
}

async fn read_phase(data_dir: &Path) -> anyhow::Result<()> {
    let dir = data_dir.to_path_buf();
    let rss_before = rss();
    let started = Instant::now();
    let store = tokio::task::spawn_blocking(move || {
        EmbeddedStore::open(config(&dir), Arc::new(SystemClock))
    })
    .await??;
    let startup = started.elapsed();
    let tenant = TenantId::parse("default").map_err(anyhow::Error::msg)?;
    let stats = store.stats(&tenant).await?;
    let events = stats.total_events;
    let entities = stats.total_entities.max(1);
    let rss_open = rss();
    println!(
        "store: {events} events, {entities} entities, {}",
        disk_usage(data_dir)
    );
    println!(
        "start-up: {:.2} s; resident memory after opening {} (process before opening {}), \
         {:.1} bytes per event; peak {}",
        startup.as_secs_f64(),
        mib(rss_open),
        mib(rss_before),
        rss_open.saturating_sub(rss_before) as f64 / events.max(1) as f64,
        mib(peak_rss())
    );
    println!(
        "index: {} (stats.storage)",
        serde_json::json!({
            "index_bytes_per_event": stats.storage.get("index_bytes_per_event"),
            "events_in_memory": stats.storage.get("events_in_memory"),
            "parquet_files": stats.storage.get("parquet_files"),
            "last_recovery": stats.storage.get("last_recovery"),
        })
    );

    let hot = entity(entities / 2)?;
    let mut latency = Histogram::<u64>::new(3)?;
    let mut read_events = 0usize;
    for round in 0..2_100 {
        let t = Instant::now();
        let stream = store.read_stream(&tenant, &hot, StreamRange::ALL).await?;
        if round >= 100 {
            latency.record(micros(t.elapsed()))?;
        }
        read_events = stream.len();
    }
    report(
        "hot stream reads (one stream, again and again)",
        read_events,
        &latency,
    );

    let mut latency = Histogram::<u64>::new(3)?;
    let mut total = 0usize;
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let reads = 300;
    for _ in 0..reads {
        // xorshift: a spread of streams without a dependency.
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let t = Instant::now();
        let stream = store
            .read_stream(&tenant, &entity(seed % entities)?, StreamRange::ALL)
            .await?;
        latency.record(micros(t.elapsed()))?;
        total += stream.len();
    }
    report(
        "cold stream reads (random streams)",
        total / reads,
        &latency,
    );
    let stats = store.stats(&tenant).await?;
    println!(
        "block cache: {}; resident memory at the end {}, peak {}",
        stats.storage.get("cache").cloned().unwrap_or_default(),
        mib(rss()),
        mib(peak_rss())
    );
    store.shutdown().await?;
    Ok(())
}

fn report(name: &str, events_per_read: usize, latency: &Histogram<u64>) {
    println!(
        "{name}: {events_per_read} events per read; p50 {} µs, p99 {} µs, max {} µs ({} reads)",
        latency.value_at_quantile(0.5),
        latency.value_at_quantile(0.99),
        latency.max(),
        latency.len()
    );
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

/// A `/proc/self/status` figure in bytes.
fn status_bytes(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

fn rss() -> u64 {
    status_bytes("VmRSS:")
}

fn peak_rss() -> u64 {
    status_bytes("VmHWM:")
}

fn mib(bytes: u64) -> String {
    format!("{:.0} MiB", bytes as f64 / (1024.0 * 1024.0))
}

fn disk_usage(dir: &Path) -> String {
    fn walk(dir: &Path) -> u64 {
        std::fs::read_dir(dir).map_or(0, |entries| {
            entries
                .flatten()
                .map(|e| match e.file_type() {
                    Ok(t) if t.is_dir() => walk(&e.path()),
                    _ => e.metadata().map_or(0, |m| m.len()),
                })
                .sum()
        })
    }
    format!("{} on disk", mib(walk(dir)))
}
