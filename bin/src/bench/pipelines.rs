//! `allsource bench --pipelines`: what a stream pipeline costs and how fast it runs, against the
//! in-process server (see `docs/BENCHMARKS.md`, "Pipelines"). The pipeline has the four
//! operators of the issue: `filter` → `enrich` (the customer's entity state) → `window` (1 s
//! tumbling, by the events' timestamps) → `reduce` (count and sum per customer), into a table.
//!
//! 1. single-event appends/s with no pipeline, then with the pipeline following them live
//!    (the cost to the appends), and how fast the pipeline got through what was appended
//!    meanwhile (events/s from the start of the run until it has no lag);
//! 2. catch-up: a second pipeline, same definition, started over everything stored: events/s
//!    until it has no lag.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};

use super::realtime::row_rate;
use super::{BenchArgs, Client, Credential, Workload, drive};

/// The benchmark's pipeline, following `order.placed` from `from_position`.
fn definition(name: &str, from_position: Value) -> Value {
    json!({
        "name": name,
        "source_event_types": ["order.placed"],
        "operators": [
            {"type": "filter", "field": "$.currency", "op": "eq", "value": "EUR"},
            {"type": "enrich", "from": "entity_state", "entity_id_field": "$.customer",
             "into": "$.customer_state"},
            {"type": "window", "kind": "tumbling", "size_ms": 1000},
            {"type": "reduce", "group_by": ["$.customer"],
             "aggregations": [{"name": "orders", "fn": "count"},
                              {"name": "revenue", "fn": "sum", "field": "$.amount_cents"}]}
        ],
        "output": {"type": "table"},
        "from_position": from_position
    })
}

impl Client {
    async fn create(&self, definition: &Value) -> anyhow::Result<String> {
        let created = self
            .send(reqwest::Method::POST, "/api/v1/pipelines", Some(definition))
            .await?;
        created["id"]
            .as_str()
            .map(str::to_owned)
            .context("the created pipeline has no id")
    }

    /// Waits until the pipeline has no lag; returns its stats and when that was seen.
    async fn caught_up(&self, id: &str) -> anyhow::Result<(Value, Instant)> {
        let deadline = Instant::now() + Duration::from_secs(600);
        loop {
            let stats = self
                .send(
                    reqwest::Method::GET,
                    &format!("/api/v1/pipelines/{id}/stats"),
                    None,
                )
                .await?;
            if stats["lag"] == 0 && stats["lag_capped"] == false {
                return Ok((stats, Instant::now()));
            }
            if Instant::now() > deadline {
                bail!("the pipeline did not catch up in 10 minutes: {stats}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Runs the pipeline workloads against `base` and prints their table.
///
/// # Errors
/// A server that cannot be reached, or a pipeline that does not catch up.
pub async fn run(args: &BenchArgs, base: &str, credential: Credential) -> anyhow::Result<()> {
    let client = Client {
        http: reqwest::Client::new(),
        base: base.to_owned(),
        credential: credential.clone(),
    };
    // The customer the enrich looks up (every benchmark event names it).
    client
        .send(
            reqwest::Method::POST,
            "/api/v1/events",
            Some(
                &json!({"entity_id": "c-1234567", "event_type": "customer.registered",
                         "payload": {"tier": "gold", "country": "FR"}}),
            ),
        )
        .await?;
    let alone = drive(
        "appends, no pipeline",
        args,
        args.connections,
        Workload::Single(base.to_owned(), credential.clone()),
    )
    .await?;
    let live = client.create(&definition("live", json!("now"))).await?;
    let started = Instant::now();
    let followed = drive(
        "appends, one 4-operator pipeline following live",
        args,
        args.connections,
        Workload::Single(base.to_owned(), credential.clone()),
    )
    .await?;
    let appended_at = Instant::now();
    let (live_stats, live_done) = client.caught_up(&live).await?;
    let live_events = live_stats["events_processed"].as_u64().unwrap_or(0);
    let live_seconds = live_done.duration_since(started).as_secs_f64();
    let behind = live_done.duration_since(appended_at).as_secs_f64();

    let stored = client
        .send(reqwest::Method::GET, "/api/v1/stats", None)
        .await?;
    let catch_up = client.create(&definition("catch_up", json!(0))).await?;
    let from = Instant::now();
    let (catch_stats, catch_done) = client.caught_up(&catch_up).await?;
    let catch_events = catch_stats["events_processed"].as_u64().unwrap_or(0);
    let catch_seconds = catch_done.duration_since(from).as_secs_f64();

    let cost = 100.0 * (1.0 - followed.events_per_second() / alone.events_per_second());
    println!("## Pipelines\n");
    println!("| workload | figure |");
    println!("|---|---:|");
    row_rate(&alone);
    row_rate(&followed);
    println!("| cost of the live pipeline to appends | {cost:.1} % |");
    println!(
        "| live pipeline: events processed from the start of the appends until no lag | {:.0} events/s ({live_events} events in {live_seconds:.2} s; no lag {behind:.2} s after the last append) |",
        live_events as f64 / live_seconds
    );
    println!(
        "| catch-up: a new pipeline over the stored events | {:.0} events/s ({catch_events} events in {catch_seconds:.2} s; store: {} events) |",
        catch_events as f64 / catch_seconds,
        stored["total_events"]
    );
    println!(
        "| results (live / catch-up): failed, late | {} / {}, {} / {} |",
        live_stats["failed"], catch_stats["failed"], live_stats["late"], catch_stats["late"]
    );
    Ok(())
}
