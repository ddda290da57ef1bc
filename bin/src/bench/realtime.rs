//! `allsource bench --realtime`: what following the log costs and how fast it is, against the
//! in-process server (see `docs/BENCHMARKS.md`):
//!
//! 1. single-event appends/s with no subscriber, then with 100 live WebSocket subscribers
//!    reading every event (the subscribers must cost the appends only a few percent);
//! 2. live delivery latency, append acknowledged → frame received, p50/p99 over 100
//!    subscribers while 5,000 events/s are appended (batches of 50 every 10 ms);
//! 3. the catch-up rate: one WebSocket client replaying the whole store from storage.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use super::{BenchArgs, Credential, Outcome, Workload, drive};

/// Subscribers of the workloads with subscribers.
const SUBSCRIBERS: usize = 100;
/// Only every this-th position is timed (memory stays small with 100 subscribers).
const SAMPLE_EVERY: u64 = 10;

/// What one subscriber saw.
#[derive(Default)]
struct Seen {
    events: u64,
    /// Position → when its frame arrived, for sampled positions.
    arrivals: Vec<(u64, Instant)>,
    out_of_order: u64,
}

/// Opens `n` live-only subscribers on every event; they read until `stop`.
async fn subscribers(
    base: &str,
    n: usize,
    stop: &Arc<AtomicBool>,
) -> anyhow::Result<Vec<tokio::task::JoinHandle<Seen>>> {
    let url = format!(
        "{}/api/v1/events/stream",
        base.replacen("http://", "ws://", 1)
    );
    let mut tasks = Vec::with_capacity(n);
    for _ in 0..n {
        let (mut socket, _) = tokio_tungstenite::connect_async(url.as_str())
            .await
            .context("websocket handshake")?;
        socket
            .send(Message::Text(
                json!({"type": "subscribe", "filters": []})
                    .to_string()
                    .into(),
            ))
            .await?;
        let stop = Arc::clone(stop);
        tasks.push(tokio::spawn(async move {
            let mut seen = Seen::default();
            let mut last = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let Ok(Some(Ok(message))) =
                    tokio::time::timeout(Duration::from_millis(200), socket.next()).await
                else {
                    continue;
                };
                let Message::Text(text) = message else {
                    continue;
                };
                let arrived = Instant::now();
                // A light client: the position only, so that the 100 readers (which share the
                // machine with the server) do not measure JSON parsing.
                let Some(position) = position_of(&text) else {
                    continue;
                };
                seen.events += 1;
                if position <= last {
                    seen.out_of_order += 1;
                }
                last = position;
                if position.is_multiple_of(SAMPLE_EVERY) {
                    seen.arrivals.push((position, arrived));
                }
            }
            seen
        }));
    }
    // Give the subscribe messages time to be read before anything is appended.
    tokio::time::sleep(Duration::from_millis(500)).await;
    Ok(tasks)
}

/// The first `"position":N` of a frame.
fn position_of(text: &str) -> Option<u64> {
    let start = text.find("\"position\":")? + "\"position\":".len();
    let digits: &str = &text[start..];
    let end = digits
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(digits.len());
    digits[..end].parse().ok()
}

async fn finish(stop: &AtomicBool, tasks: Vec<tokio::task::JoinHandle<Seen>>) -> Vec<Seen> {
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::with_capacity(tasks.len());
    for t in tasks {
        if let Ok(seen) = t.await {
            all.push(seen);
        }
    }
    all
}

/// Appends 50-event batches every 10 ms for `seconds`; returns when each position was
/// acknowledged.
async fn paced_appends(base: &str, seconds: u64) -> anyhow::Result<HashMap<u64, Instant>> {
    let client = reqwest::Client::new();
    let acks = Arc::new(Mutex::new(HashMap::new()));
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let end = Instant::now() + Duration::from_secs(seconds);
    let mut inflight = Vec::new();
    let mut n = 0u64;
    while Instant::now() < end {
        tick.tick().await;
        let events: Vec<Value> = (0..50)
            .map(|i| {
                n += 1;
                json!({"entity_id": format!("paced-{}", i % 10), "event_type": "bench.paced", "payload": {"n": n}})
            })
            .collect();
        let (client, acks, url) = (
            client.clone(),
            Arc::clone(&acks),
            format!("{base}/api/v1/events/batch"),
        );
        inflight.push(tokio::spawn(async move {
            let Ok(response) = client
                .post(url)
                .json(&json!({ "events": events }))
                .send()
                .await
            else {
                return;
            };
            let Ok(body) = response.json::<Value>().await else {
                return;
            };
            let acked = Instant::now();
            let mut acks = acks.lock();
            for r in body["events"].as_array().into_iter().flatten() {
                if let Some(p) = r["position"].as_u64() {
                    acks.insert(p, acked);
                }
            }
        }));
    }
    for t in inflight {
        let _ = t.await;
    }
    let acks = std::mem::take(&mut *acks.lock());
    Ok(acks)
}

/// Replays the whole store to one WebSocket client: (events, seconds).
async fn catch_up(base: &str) -> anyhow::Result<(u64, f64)> {
    let url = format!(
        "{}/api/v1/events/stream",
        base.replacen("http://", "ws://", 1)
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(url.as_str()).await?;
    let started = Instant::now();
    socket
        .send(Message::Text(
            json!({"type": "subscribe", "filters": [], "from_position": 0})
                .to_string()
                .into(),
        ))
        .await?;
    while let Some(message) = socket.next().await {
        if let Message::Text(text) = message? {
            let frame: Value = serde_json::from_str(&text)?;
            if frame["type"] == "replay_complete" {
                let replayed = frame["replayed"].as_u64().unwrap_or(0);
                return Ok((replayed, started.elapsed().as_secs_f64()));
            }
        }
    }
    anyhow::bail!("the stream ended before replay_complete")
}

/// Runs the real-time workloads against `base` and prints their table.
///
/// # Errors
/// A server that cannot be reached or a failed handshake.
pub async fn run(args: &BenchArgs, base: &str, credential: Credential) -> anyhow::Result<()> {
    let alone = drive(
        "appends, no subscriber",
        args,
        args.connections,
        Workload::Single(base.to_owned(), credential.clone()),
    )
    .await?;
    let stop = Arc::new(AtomicBool::new(false));
    let subs = subscribers(base, SUBSCRIBERS, &stop).await?;
    let followed = drive(
        "appends, 100 live subscribers",
        args,
        args.connections,
        Workload::Single(base.to_owned(), credential.clone()),
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let seen = finish(&stop, subs).await;
    let delivered: u64 = seen.iter().map(|s| s.events).sum();
    let disorder: u64 = seen.iter().map(|s| s.out_of_order).sum();

    let stop = Arc::new(AtomicBool::new(false));
    let subs = subscribers(base, SUBSCRIBERS, &stop).await?;
    let acks = paced_appends(base, args.seconds).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let seen_paced = finish(&stop, subs).await;
    let mut latency = Histogram::<u64>::new(3)?;
    let mut missing = 0u64;
    let expected_samples = acks
        .keys()
        .filter(|p| p.is_multiple_of(SAMPLE_EVERY))
        .count() as u64;
    for s in &seen_paced {
        let sampled: u64 = s
            .arrivals
            .iter()
            .filter(|(p, _)| acks.contains_key(p))
            .count() as u64;
        missing += expected_samples.saturating_sub(sampled);
        for (position, arrived) in &s.arrivals {
            if let Some(acked) = acks.get(position) {
                let micros = arrived.saturating_duration_since(*acked).as_micros() as u64;
                latency.record(micros.max(1))?;
            }
        }
    }
    let (replayed, seconds) = catch_up(base).await?;

    let cost = 100.0 * (1.0 - followed.events_per_second() / alone.events_per_second());
    println!("## Real time\n");
    println!("| workload | figure |");
    println!("|---|---:|");
    row_rate(&alone);
    row_rate(&followed);
    println!("| cost of 100 subscribers to appends | {cost:.1} % |");
    println!(
        "| events delivered to the 100 subscribers (out of order: {disorder}) | {delivered} |"
    );
    println!(
        "| live latency at 5,000 events/s, 100 subscribers, p50 / p99 (ack → frame) | {:.2} / {:.2} ms |",
        latency.value_at_quantile(0.5) as f64 / 1000.0,
        latency.value_at_quantile(0.99) as f64 / 1000.0
    );
    println!("| sampled live events not received (should be 0) | {missing} |");
    println!(
        "| catch-up of one WebSocket client from storage | {:.0} events/s ({replayed} events in {seconds:.2} s) |",
        replayed as f64 / seconds
    );
    Ok(())
}

/// One table row: a workload's rate and latencies.
pub(super) fn row_rate(outcome: &Outcome) {
    println!(
        "| {} | {:.0} events/s (p50 {:.2} ms, p99 {:.2} ms, {} errors) |",
        outcome.name,
        outcome.events_per_second(),
        outcome.micros(0.5) / 1000.0,
        outcome.micros(0.99) / 1000.0,
        outcome.errors
    );
}
