//! `allsource bench --analytics`: analytics and SQL over a large store, compared in the same run
//! with DuckDB over the same Parquet files (see `docs/BENCHMARKS.md`, "Analytics and SQL").
//!
//! 1. Loads `--events` events (default 10 M) through the HTTP batch route: 1,000 entities,
//!    20 event types, payloads with a numeric (`amount`) and a string (`category`) field;
//!    waits until the sealer has turned every full WAL segment into Parquet.
//! 2. Times five questions over HTTP, each run once to warm up and then `RUNS` times (the
//!    median is reported): frequency by day, summary, a three-step funnel, a `GROUP BY`
//!    event type with the sum of a payload field, and a selective filter on payload fields.
//! 3. Times the same questions in DuckDB (the Python package; `pip install duckdb`) over the
//!    store's Parquet files, with the same warm-up and runs, when `python3 -c 'import duckdb'`
//!    works; otherwise says so.
//!
//! The server also reads the unsealed tail (events not yet in Parquet, through the store);
//! DuckDB reads only the files. Both use every core of the machine.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::bail;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};

use super::{BenchArgs, Client, Credential};

/// Timed runs per question (after one warm-up run).
const RUNS: usize = 3;
/// Events per append request while loading.
const BATCH: usize = 1000;
/// Concurrent append requests while loading.
const LOADERS: usize = 8;

/// One question, as the server is asked it and as DuckDB is.
struct Question {
    name: &'static str,
    method: reqwest::Method,
    path: &'static str,
    body: Option<Value>,
    duckdb: String,
}

fn questions(since: &str, until: &str) -> Vec<Question> {
    let t = "read_parquet('{files}') WHERE tenant_id = 'default'";
    vec![
        Question {
            name: "frequency by day (30 days)",
            method: reqwest::Method::GET,
            path: "/api/v1/analytics/frequency?window=day",
            body: None,
            duckdb: format!(
                "SELECT date_trunc('day', timestamp) AS d, event_type, count(*) FROM {t} \
                 AND timestamp >= TIMESTAMPTZ '{since}' AND timestamp < TIMESTAMPTZ '{until}' \
                 GROUP BY 1, 2"
            ),
        },
        Question {
            name: "summary",
            method: reqwest::Method::GET,
            path: "/api/v1/analytics/summary",
            body: None,
            duckdb: format!(
                "SELECT count(*), count(DISTINCT entity_id), count(DISTINCT event_type), \
                 min(timestamp), max(timestamp) FROM {t}; \
                 SELECT event_type, count(*) AS n FROM {t} GROUP BY 1 ORDER BY n DESC, 1 LIMIT 10; \
                 SELECT entity_id, count(*) AS n FROM {t} GROUP BY 1 ORDER BY n DESC, 1 LIMIT 10"
            ),
        },
        Question {
            name: "funnel of three steps (1 h)",
            method: reqwest::Method::POST,
            path: "/api/v1/analytics/funnel",
            body: Some(json!({
                "steps": [{"event_type": "type-1"}, {"event_type": "type-2"}, {"event_type": "type-3"}],
                "within_ms": 3_600_000
            })),
            duckdb: format!(
                "WITH e AS (SELECT entity_id, position, timestamp, event_type FROM {t} \
                   AND event_type IN ('type-1', 'type-2', 'type-3')), \
                 s0 AS (SELECT entity_id, min(position) AS p0 FROM e WHERE event_type = 'type-1' GROUP BY 1), \
                 s0t AS (SELECT s0.entity_id, s0.p0, e.timestamp AS t0 FROM s0 JOIN e \
                   ON e.entity_id = s0.entity_id AND e.position = s0.p0), \
                 s1 AS (SELECT s.entity_id, s.t0, min(e.position) AS p1 FROM s0t s JOIN e \
                   ON e.entity_id = s.entity_id AND e.event_type = 'type-2' AND e.position > s.p0 \
                   AND e.timestamp <= s.t0 + INTERVAL 1 HOUR GROUP BY 1, 2), \
                 s2 AS (SELECT s.entity_id, min(e.position) AS p2 FROM s1 s JOIN e \
                   ON e.entity_id = s.entity_id AND e.event_type = 'type-3' AND e.position > s.p1 \
                   AND e.timestamp <= s.t0 + INTERVAL 1 HOUR GROUP BY 1) \
                 SELECT (SELECT count(*) FROM s0), (SELECT count(*) FROM s1), (SELECT count(*) FROM s2)"
            ),
        },
        Question {
            name: "GROUP BY event_type, sum(payload.amount)",
            method: reqwest::Method::POST,
            path: "/api/v1/sql",
            body: Some(json!({"query":
                "SELECT event_type, sum(json_get_float(payload, 'amount')) AS total \
                 FROM events GROUP BY event_type"})),
            duckdb: format!(
                "SELECT event_type, sum(CAST(json_extract_string(payload, '$.amount') AS DOUBLE)) \
                 FROM {t} GROUP BY 1"
            ),
        },
        Question {
            name: "selective filter on payload fields",
            method: reqwest::Method::POST,
            path: "/api/v1/sql",
            body: Some(json!({"query":
                "SELECT count(*) AS n FROM events WHERE json_get_str(payload, 'category') = 'cat-7' \
                 AND json_get_float(payload, 'amount') > 990"})),
            duckdb: format!(
                "SELECT count(*) FROM {t} AND json_extract_string(payload, '$.category') = 'cat-7' \
                 AND CAST(json_extract_string(payload, '$.amount') AS DOUBLE) > 990"
            ),
        },
    ]
}

fn batch(first: u64) -> Value {
    let events: Vec<Value> = (first..first + BATCH as u64)
        .map(|i| {
            json!({
                "entity_id": format!("entity-{}", i % 1000),
                "event_type": format!("type-{}", (i / 7) % 20),
                "payload": {"amount": (i % 1000) as f64 + 0.5, "category": format!("cat-{}", i % 50), "n": i},
            })
        })
        .collect();
    json!({ "events": events })
}

async fn load(client: &Client, events: u64) -> anyhow::Result<f64> {
    let bar = ProgressBar::new(events).with_style(
        ProgressStyle::with_template("loading {bar:40} {pos}/{len} events ({per_sec}, {eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let started = Instant::now();
    let batches = events.div_ceil(BATCH as u64);
    let next = std::sync::atomic::AtomicU64::new(0);
    let loaders = (0..LOADERS).map(|_| async {
        loop {
            let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if n >= batches {
                return anyhow::Ok(());
            }
            client
                .send(
                    reqwest::Method::POST,
                    "/api/v1/events/batch",
                    Some(&batch(n * BATCH as u64)),
                )
                .await?;
            bar.inc(BATCH as u64);
        }
    });
    futures::future::try_join_all(loaders).await?;
    bar.finish_and_clear();
    Ok(events as f64 / started.elapsed().as_secs_f64())
}

/// Waits until the sealer has caught up (one WAL segment left, the active one).
async fn sealed(client: &Client) -> anyhow::Result<Value> {
    let deadline = Instant::now() + Duration::from_secs(1800);
    loop {
        let stats = client
            .send(reqwest::Method::GET, "/api/v1/stats", None)
            .await?;
        if stats["storage"]["wal_segments"] == 1 {
            return Ok(stats);
        }
        if Instant::now() > deadline {
            bail!("the sealer did not catch up in 30 minutes: {stats}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn median(mut seconds: Vec<f64>) -> f64 {
    seconds.sort_by(f64::total_cmp);
    seconds[seconds.len() / 2]
}

/// DuckDB's medians per question, or why there are none.
fn duckdb_times(files: &str, questions: &[Question]) -> Result<Vec<f64>, String> {
    let statements: Vec<String> = questions
        .iter()
        .map(|q| q.duckdb.replace("{files}", files))
        .collect();
    let script = format!(
        r#"
import json, sys, time, duckdb
con = duckdb.connect()
out = []
for group in json.loads(sys.argv[1]):
    runs = []
    for i in range({runs} + 1):
        started = time.perf_counter()
        for statement in group.split("; "):
            con.execute(statement).fetchall()
        if i > 0:
            runs.append(time.perf_counter() - started)
    runs.sort()
    out.append(runs[len(runs) // 2])
print(json.dumps(out))
"#,
        runs = RUNS
    );
    let argument = serde_json::to_string(&statements).map_err(|e| e.to_string())?;
    let output = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(argument)
        .output()
        .map_err(|e| format!("cannot run python3: {e}"))?;
    if !output.status.success() {
        return Err(String::from_utf8_lossy(&output.stderr).trim().to_owned());
    }
    serde_json::from_slice(&output.stdout).map_err(|e| e.to_string())
}

/// Runs the analytics workloads against `base` and prints their table.
///
/// # Errors
/// A server that cannot be reached, a failing load or a failing question.
pub async fn run(
    args: &BenchArgs,
    base: &str,
    credential: Credential,
    data_dir: &Path,
) -> anyhow::Result<()> {
    let client = Client {
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(3600))
            .build()?,
        base: base.to_owned(),
        credential,
    };
    let rate = load(&client, args.events).await?;
    eprintln!(
        "loaded {} events at {rate:.0} events/s; waiting for the sealer",
        args.events
    );
    let stats = sealed(&client).await?;
    let until = chrono::Utc::now();
    let since = until - chrono::Duration::days(30);
    let questions = questions(&since.to_rfc3339(), &until.to_rfc3339());
    let mut ours = Vec::new();
    for q in &questions {
        let mut runs = Vec::new();
        for i in 0..=RUNS {
            let started = Instant::now();
            client
                .send(q.method.clone(), q.path, q.body.as_ref())
                .await?;
            if i > 0 {
                runs.push(started.elapsed().as_secs_f64());
            }
        }
        ours.push(median(runs));
        eprintln!("{}: {:.3} s", q.name, ours.last().copied().unwrap_or(0.0));
    }
    let files = format!("{}/parquet/*.parquet", data_dir.display());
    let duckdb = duckdb_times(&files, &questions);
    println!();
    println!(
        "analytics over {} events ({} Parquet files, {} bytes; the rest in the WAL tail)",
        stats["total_events"], stats["storage"]["parquet_files"], stats["storage"]["parquet_bytes"]
    );
    println!(
        "{:<44} {:>12} {:>12} {:>10}",
        "question", "AllSource s", "DuckDB s", "ratio"
    );
    for (i, q) in questions.iter().enumerate() {
        match &duckdb {
            Ok(times) => {
                let theirs = times.get(i).copied().unwrap_or(f64::NAN);
                println!(
                    "{:<44} {:>12.3} {:>12.3} {:>9.2}×",
                    q.name,
                    ours[i],
                    theirs,
                    ours[i] / theirs
                );
            }
            Err(_) => println!("{:<44} {:>12.3} {:>12} {:>10}", q.name, ours[i], "-", "-"),
        }
    }
    if let Err(why) = &duckdb {
        println!("\nDuckDB was not measured (pip install duckdb): {why}");
    }
    Ok(())
}
