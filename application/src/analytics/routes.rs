//! One use case per analytics route and the DSL query. Each validates its parameters (every
//! error named), builds its statements with [`super::sql`], runs them on the engine and shapes
//! the answer (JSON, as the API returns it).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use allsource_domain::query_dsl::{Condition, DslField, DslQuery};
use allsource_domain::{EntityId, Event, EventId, EventType, Position, Version};
use chrono::{DateTime, Duration as TimeDelta, SecondsFormat, Utc};
use serde_json::{Map, Value, json};

use super::compute::{self, AnomalyMethod, Interval};
use super::sql::{self, As};
use super::{Analytics, AnalyticsError};
use crate::Caller;
use crate::use_cases::params::{self, FieldError};

/// Raw parameters of `GET /api/v1/analytics/frequency`.
#[derive(Debug, Default, Clone)]
pub struct FrequencyInput {
    pub since: Option<String>,
    pub until: Option<String>,
    pub entity_id: Option<String>,
    pub event_type: Option<String>,
    pub window: Option<String>,
}

/// Raw parameters of `GET /api/v1/analytics/summary`.
#[derive(Debug, Default, Clone)]
pub struct SummaryInput {
    pub since: Option<String>,
    pub until: Option<String>,
    pub entity_id: Option<String>,
    pub event_type: Option<String>,
}

/// Raw parameters of `GET /api/v1/analytics/correlation`.
#[derive(Debug, Default, Clone)]
pub struct CorrelationInput {
    pub event_type_a: Option<String>,
    pub event_type_b: Option<String>,
    pub time_window_seconds: Option<String>,
    pub since: Option<String>,
    pub until: Option<String>,
}

/// The answer of `POST /api/v1/query`: whole events, or the selected fields.
#[derive(Debug, Clone, PartialEq)]
pub enum DslAnswer {
    Events {
        events: Vec<Arc<Event>>,
        has_more: bool,
    },
    Rows {
        rows: Vec<Map<String, Value>>,
        has_more: bool,
    },
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn cell_time(v: &Value) -> Option<DateTime<Utc>> {
    v.as_str()
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&Utc))
}

fn cell_u64(v: &Value) -> u64 {
    v.as_u64()
        .or_else(|| v.as_i64().map(|i| i.max(0) as u64))
        .unwrap_or(0)
}

fn cell_f64(v: &Value) -> Option<f64> {
    v.as_f64()
}

/// Filters shared by the routes: time range, entity, type.
#[derive(Debug, Default, Clone)]
struct Scope {
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
    entity_id: Option<EntityId>,
    event_type: Option<EventType>,
    condition: Option<Condition>,
}

impl Scope {
    /// `WHERE ...` (or nothing).
    fn where_clause(&self) -> String {
        let mut parts = Vec::new();
        if let Some(s) = self.since {
            parts.push(format!("\"timestamp\" >= {}", sql::time(s)));
        }
        if let Some(u) = self.until {
            parts.push(format!("\"timestamp\" < {}", sql::time(u)));
        }
        if let Some(e) = &self.entity_id {
            parts.push(format!("entity_id = {}", sql::string(e.as_str())));
        }
        if let Some(t) = &self.event_type {
            parts.push(format!("event_type = {}", sql::string(t.as_str())));
        }
        if let Some(c) = &self.condition {
            parts.push(sql::condition(c));
        }
        if parts.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", parts.join(" AND "))
        }
    }
}

/// Collects field errors over raw query parameters.
#[derive(Default)]
struct Checks(Vec<FieldError>);

impl Checks {
    fn push(&mut self, field: &str, message: impl Into<String>) {
        self.0.push(FieldError::new(field, message));
    }

    fn time(&mut self, field: &str, raw: Option<&str>) -> Option<DateTime<Utc>> {
        let raw = raw?;
        match params::timestamp(raw) {
            Ok(t) => Some(t),
            Err(e) => {
                self.push(field, e.0);
                None
            }
        }
    }

    fn entity(&mut self, field: &str, raw: Option<&str>) -> Option<EntityId> {
        let raw = raw?;
        match EntityId::parse(raw) {
            Ok(e) => Some(e),
            Err(e) => {
                self.push(field, e.0);
                None
            }
        }
    }

    fn event_type(&mut self, field: &str, raw: Option<&str>) -> Option<EventType> {
        let raw = raw?;
        match EventType::parse(raw) {
            Ok(t) => Some(t),
            Err(e) => {
                self.push(field, e.0);
                None
            }
        }
    }

    fn done(self) -> Result<(), AnalyticsError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(AnalyticsError::Invalid(self.0))
        }
    }
}

/// Members of a JSON body, read once each; unknown members are errors at their names.
struct Members<'a> {
    object: Option<&'a Map<String, Value>>,
    prefix: String,
    known: Vec<&'static str>,
    checks: Checks,
}

impl<'a> Members<'a> {
    fn of(body: &'a Value, prefix: &str) -> Self {
        let mut checks = Checks::default();
        let object = body.as_object();
        if object.is_none() {
            checks.push(
                if prefix.is_empty() { "body" } else { prefix },
                "must be a JSON object",
            );
        }
        Self {
            object,
            prefix: prefix.to_owned(),
            known: Vec::new(),
            checks,
        }
    }

    fn name(&self, member: &str) -> String {
        if self.prefix.is_empty() {
            member.to_owned()
        } else {
            format!("{}.{member}", self.prefix)
        }
    }

    fn get(&mut self, member: &'static str) -> Option<&'a Value> {
        self.known.push(member);
        self.object
            .and_then(|o| o.get(member))
            .filter(|v| !v.is_null())
    }

    fn text(&mut self, member: &'static str) -> Option<&'a str> {
        let value = self.get(member)?;
        match value.as_str() {
            Some(s) => Some(s),
            None => {
                let name = self.name(member);
                self.checks.push(&name, "must be a string");
                None
            }
        }
    }

    fn time(&mut self, member: &'static str) -> Option<DateTime<Utc>> {
        let raw = self.text(member)?;
        let name = self.name(member);
        self.checks.time(&name, Some(raw))
    }

    fn event_type(&mut self, member: &'static str) -> Option<EventType> {
        let raw = self.text(member)?;
        let name = self.name(member);
        self.checks.event_type(&name, Some(raw))
    }

    fn integer(&mut self, member: &'static str, min: i64, max: i64) -> Option<i64> {
        let value = self.get(member)?;
        match value.as_i64().filter(|n| (min..=max).contains(n)) {
            Some(n) => Some(n),
            None => {
                let name = self.name(member);
                self.checks
                    .push(&name, format!("must be an integer from {min} to {max}"));
                None
            }
        }
    }

    fn number(&mut self, member: &'static str, min: f64, max: f64) -> Option<f64> {
        let value = self.get(member)?;
        match value.as_f64().filter(|n| (min..=max).contains(n)) {
            Some(n) => Some(n),
            None => {
                let name = self.name(member);
                self.checks
                    .push(&name, format!("must be a number from {min} to {max}"));
                None
            }
        }
    }

    fn field(&mut self, member: &'static str) -> Option<DslField> {
        let raw = self.text(member)?;
        match DslField::parse(raw) {
            Ok(f) => Some(f),
            Err(message) => {
                let name = self.name(member);
                self.checks.push(&name, message);
                None
            }
        }
    }

    /// A DSL condition (`where`), with its errors at their paths under this member.
    fn condition(&mut self, member: &'static str, now: DateTime<Utc>) -> Option<Condition> {
        let value = self.get(member)?;
        let body = json!({ "where": value });
        match DslQuery::parse(&body, now) {
            Ok(q) => q.condition,
            Err(errors) => {
                let prefix = self.name(member);
                for (path, message) in errors {
                    let path = path.strip_prefix("where").unwrap_or(&path);
                    self.checks.push(&format!("{prefix}{path}"), message);
                }
                None
            }
        }
    }

    fn finish(mut self) -> Checks {
        if let Some(object) = self.object {
            for key in object.keys() {
                if !self.known.contains(&key.as_str()) {
                    let name = self.name(key);
                    self.checks.push(&name, "is not a member of this request");
                }
            }
        }
        self.checks
    }
}

/// The default range of a bucketed analysis ending at `until`.
fn default_since(interval: Interval, until: DateTime<Utc>) -> DateTime<Utc> {
    match interval {
        Interval::Minute => until - TimeDelta::hours(1),
        Interval::Hour => until - TimeDelta::hours(24),
        Interval::Day => until - TimeDelta::days(30),
        Interval::Week => until - TimeDelta::weeks(12),
        Interval::Month => until - TimeDelta::days(365),
    }
}

/// A validated time-series request.
#[derive(Debug, Clone)]
struct SeriesSpec {
    interval: Interval,
    since: DateTime<Utc>,
    until: DateTime<Utc>,
    scope: Scope,
    group_by: Option<DslField>,
    aggregations: Vec<Aggregation>,
    fill: Fill,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fill {
    Zero,
    Null,
    None,
}

#[derive(Debug, Clone)]
struct Aggregation {
    name: String,
    function: Function,
    field: Option<DslField>,
    p: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Function {
    Count,
    Sum,
    Avg,
    Min,
    Max,
    Stddev,
    Variance,
    Percentile,
    Distinct,
    First,
    Last,
}

impl Function {
    const NAMES: &'static str =
        "count, sum, avg, min, max, stddev, variance, percentile, distinct, first, last";

    fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "count" => Self::Count,
            "sum" => Self::Sum,
            "avg" => Self::Avg,
            "min" => Self::Min,
            "max" => Self::Max,
            "stddev" => Self::Stddev,
            "variance" => Self::Variance,
            "percentile" => Self::Percentile,
            "distinct" => Self::Distinct,
            "first" => Self::First,
            "last" => Self::Last,
            _ => return None,
        })
    }

    fn needs_field(self) -> bool {
        !matches!(self, Self::Count)
    }
}

impl Aggregation {
    /// The SQL aggregate (alias added by the caller).
    fn expression(&self) -> String {
        let number = || {
            self.field
                .as_ref()
                .map_or_else(|| "NULL".to_owned(), |f| sql::field(f, As::Number))
        };
        let json_value = || {
            self.field
                .as_ref()
                .map_or_else(|| "NULL".to_owned(), |f| sql::field(f, As::Json))
        };
        match self.function {
            Function::Count => match &self.field {
                None => "count(*)".into(),
                Some(DslField::Payload(path)) | Some(DslField::Metadata(path))
                    if !path.is_empty() =>
                {
                    format!("count({})", json_value())
                }
                Some(f) => format!("count({})", sql::field(f, As::Json)),
            },
            Function::Sum => format!("sum({})", number()),
            Function::Avg => format!("avg({})", number()),
            Function::Min => format!("min({})", number()),
            Function::Max => format!("max({})", number()),
            Function::Stddev => format!("stddev({})", number()),
            Function::Variance => format!("var_samp({})", number()),
            Function::Percentile => format!("array_agg({})", number()),
            Function::Distinct => format!("count(DISTINCT {})", json_value()),
            Function::First => format!("first_value({} ORDER BY position)", json_value()),
            Function::Last => format!("last_value({} ORDER BY position)", json_value()),
        }
    }

    /// The cell as the answer shows it.
    fn value(&self, cell: &Value) -> Value {
        match self.function {
            Function::Percentile => {
                let mut values: Vec<f64> = cell
                    .as_array()
                    .map(|a| a.iter().filter_map(Value::as_f64).collect())
                    .unwrap_or_default();
                compute::nearest_rank_percentile(&mut values, self.p)
                    .map_or(Value::Null, Value::from)
            }
            Function::First | Function::Last => match (&self.field, cell) {
                (Some(DslField::Payload(p)) | Some(DslField::Metadata(p)), Value::String(text))
                    if !p.is_empty() || matches!(self.field, Some(DslField::Payload(_))) =>
                {
                    serde_json::from_str(text).unwrap_or(Value::Null)
                }
                _ => cell.clone(),
            },
            _ => cell.clone(),
        }
    }

    /// The value of a bucket without events under `fill_missing: zero`: 0 for what counts
    /// or adds up, null for what has no value without events (avg, min, max, ...).
    fn zero(&self) -> Value {
        match self.function {
            Function::Count | Function::Sum | Function::Distinct => json!(0),
            _ => Value::Null,
        }
    }
}

impl Analytics {
    /// Checks a bucketed range against the bounds: `since < until`, at most `max_range_days`,
    /// at most `max_buckets` buckets.
    fn check_range(
        &self,
        checks: &mut Checks,
        interval: Interval,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
        since_field: &str,
        interval_field: &str,
    ) -> Option<Vec<DateTime<Utc>>> {
        if since >= until {
            checks.push(since_field, "must be before until");
            return None;
        }
        if until - since > TimeDelta::days(i64::from(self.config.max_range_days)) {
            checks.push(
                since_field,
                format!(
                    "the range may cover at most {} days (the analytics.max_range_days setting)",
                    self.config.max_range_days
                ),
            );
            return None;
        }
        match compute::bucket_starts(interval, since, until, self.config.max_buckets) {
            Ok(buckets) => Some(buckets),
            Err(needed) => {
                checks.push(
                    interval_field,
                    format!(
                        "the range needs {needed} {} buckets, more than the {} allowed: use a \
                         wider interval or a shorter range",
                        interval.as_str(),
                        self.config.max_buckets
                    ),
                );
                None
            }
        }
    }

    /// `GET /api/v1/analytics/frequency`: events per calendar bucket, empty buckets included.
    pub async fn frequency(
        &self,
        caller: &Caller,
        input: FrequencyInput,
    ) -> Result<Value, AnalyticsError> {
        let mut checks = Checks::default();
        let interval = match input.window.as_deref() {
            None => Interval::Hour,
            Some(raw) => Interval::parse(raw).unwrap_or_else(|| {
                checks.push("window", "must be minute, hour, day, week or month");
                Interval::Hour
            }),
        };
        let until = checks
            .time("until", input.until.as_deref())
            .unwrap_or_else(|| self.now());
        let since = checks
            .time("since", input.since.as_deref())
            .unwrap_or_else(|| default_since(interval, until));
        let entity_id = checks.entity("entity_id", input.entity_id.as_deref());
        let event_type = checks.event_type("event_type", input.event_type.as_deref());
        let buckets = self.check_range(&mut checks, interval, since, until, "since", "window");
        checks.done()?;
        let buckets = buckets.unwrap_or_default();
        let scope = Scope {
            since: Some(since),
            until: Some(until),
            entity_id,
            event_type,
            condition: None,
        };
        // Truncated as a timestamp without a zone (its UTC wall clock): the same buckets, and
        // DataFusion's truncation of zoned timestamps is several times slower.
        let statement = format!(
            "SELECT date_trunc({}, CAST(\"timestamp\" AS TIMESTAMP)) AS bucket, event_type, count(*) AS n \
             FROM events{} GROUP BY 1, 2",
            sql::string(interval.as_str()),
            scope.where_clause()
        );
        let table = self.scan(caller, &statement).await?;
        let mut counts: HashMap<DateTime<Utc>, BTreeMap<String, u64>> = HashMap::new();
        let mut total = 0;
        for row in &table.rows {
            let (Some(bucket), Some(event_type)) = (cell_time(&row[0]), row[1].as_str()) else {
                continue;
            };
            let n = cell_u64(&row[2]);
            total += n;
            *counts
                .entry(bucket)
                .or_default()
                .entry(event_type.to_owned())
                .or_default() += n;
        }
        let buckets: Vec<Value> = buckets
            .iter()
            .map(|start| {
                let types = counts.remove(start).unwrap_or_default();
                json!({
                    "timestamp": rfc3339(*start),
                    "count": types.values().sum::<u64>(),
                    "event_types": types,
                })
            })
            .collect();
        Ok(json!({
            "buckets": buckets,
            "total_events": total,
            "window": interval.as_str(),
            "time_range": {"from": rfc3339(since), "to": rfc3339(until)},
        }))
    }

    /// `GET /api/v1/analytics/summary`: totals, exact unique counts, the top types and
    /// entities.
    pub async fn summary(
        &self,
        caller: &Caller,
        input: SummaryInput,
    ) -> Result<Value, AnalyticsError> {
        let mut checks = Checks::default();
        let since = checks.time("since", input.since.as_deref());
        let until = checks.time("until", input.until.as_deref());
        if let (Some(s), Some(u)) = (since, until)
            && s >= u
        {
            checks.push("since", "must be before until");
        }
        let entity_id = checks.entity("entity_id", input.entity_id.as_deref());
        let event_type = checks.event_type("event_type", input.event_type.as_deref());
        checks.done()?;
        let scope = Scope {
            since,
            until,
            entity_id,
            event_type,
            condition: None,
        };
        let filter = scope.where_clause();
        let totals = self
            .scan(
                caller,
                &format!(
                    "SELECT count(*) AS n, count(DISTINCT entity_id) AS entities, \
                     count(DISTINCT event_type) AS types, min(\"timestamp\") AS first, \
                     max(\"timestamp\") AS last FROM events{filter}"
                ),
            )
            .await?;
        let row = totals.rows.first().cloned().unwrap_or_default();
        let cell = |i: usize| row.get(i).cloned().unwrap_or(Value::Null);
        let total = cell_u64(&cell(0));
        let first = cell_time(&cell(3));
        let last = cell_time(&cell(4));
        let top = |column: &str| {
            format!(
                "SELECT {column}, count(*) AS n FROM events{filter} GROUP BY 1 \
                 ORDER BY n DESC, 1 LIMIT 10"
            )
        };
        let share = |n: u64| {
            if total == 0 {
                0.0
            } else {
                n as f64 * 100.0 / total as f64
            }
        };
        let mut tops = Vec::new();
        for (column, key) in [("event_type", "event_type"), ("entity_id", "entity_id")] {
            let table = self.scan(caller, &top(column)).await?;
            let items: Vec<Value> = table
                .rows
                .iter()
                .map(|r| {
                    let n = cell_u64(&r[1]);
                    json!({key: r[0], "count": n, "percentage": share(n)})
                })
                .collect();
            tops.push(items);
        }
        let from = since.or(first);
        let to = until.or(last);
        let days = match (from, to) {
            (Some(f), Some(t)) => {
                ((t - f).num_microseconds().unwrap_or(0) as f64 / 86_400_000_000.0).max(1.0)
            }
            _ => 1.0,
        };
        let top_entities = tops.pop().unwrap_or_default();
        let top_event_types = tops.pop().unwrap_or_default();
        Ok(json!({
            "total_events": total,
            "unique_entities": cell_u64(&cell(1)),
            "unique_event_types": cell_u64(&cell(2)),
            "time_range": {"from": from.map(rfc3339), "to": to.map(rfc3339)},
            "events_per_day": if total == 0 { 0.0 } else { total as f64 / days },
            "top_event_types": top_event_types,
            "top_entities": top_entities,
            "first_event": first.map(rfc3339),
            "last_event": last.map(rfc3339),
        }))
    }

    /// `GET /api/v1/analytics/correlation`: the share of A events followed, within the window,
    /// by a B event of the same entity.
    pub async fn correlation(
        &self,
        caller: &Caller,
        input: CorrelationInput,
    ) -> Result<Value, AnalyticsError> {
        let mut checks = Checks::default();
        let a = match input.event_type_a.as_deref() {
            None => {
                checks.push("event_type_a", "is required");
                None
            }
            raw => checks.event_type("event_type_a", raw),
        };
        let b = match input.event_type_b.as_deref() {
            None => {
                checks.push("event_type_b", "is required");
                None
            }
            raw => checks.event_type("event_type_b", raw),
        };
        let max_window = i64::from(self.config.max_range_days) * 86_400;
        let window = match input.time_window_seconds.as_deref() {
            None => 3600,
            Some(raw) => match raw.parse::<i64>() {
                Ok(n) if (1..=max_window).contains(&n) => n,
                _ => {
                    checks.push(
                        "time_window_seconds",
                        format!("must be an integer from 1 to {max_window}"),
                    );
                    3600
                }
            },
        };
        let since = checks.time("since", input.since.as_deref());
        let until = checks.time("until", input.until.as_deref());
        if let (Some(s), Some(u)) = (since, until)
            && s >= u
        {
            checks.push("since", "must be before until");
        }
        checks.done()?;
        let (Some(a), Some(b)) = (a, b) else {
            return Err(AnalyticsError::invalid("event_type_a", "is required"));
        };
        let time = Scope {
            since,
            until,
            ..Scope::default()
        }
        .where_clause();
        let time_and = time.replacen(" WHERE ", " AND ", 1);
        let pairs = format!(
            "WITH a AS (SELECT entity_id, position, \"timestamp\" FROM events \
               WHERE event_type = {qa}{time_and}), \
             b AS (SELECT entity_id, position, \"timestamp\" FROM events \
               WHERE event_type = {qb}{time_and}), \
             pairs AS (SELECT a.entity_id, a.position, a.\"timestamp\" AS ta, \
               min(b.\"timestamp\") AS tb FROM a JOIN b ON a.entity_id = b.entity_id \
               AND b.position > a.position \
               AND b.\"timestamp\" <= a.\"timestamp\" + INTERVAL '{window} seconds' \
               GROUP BY a.entity_id, a.position, a.\"timestamp\")",
            qa = sql::string(a.as_str()),
            qb = sql::string(b.as_str()),
        );
        let counts = self
            .scan(
                caller,
                &format!(
                    "SELECT sum(CASE WHEN event_type = {qa} THEN 1 ELSE 0 END) AS total_a, \
                     sum(CASE WHEN event_type = {qb} THEN 1 ELSE 0 END) AS total_b \
                     FROM events WHERE event_type IN ({qa}, {qb}){time_and}",
                    qa = sql::string(a.as_str()),
                    qb = sql::string(b.as_str()),
                ),
            )
            .await?;
        let summary = self
            .scan(
                caller,
                &format!(
                    "{pairs} SELECT count(*) AS n, \
                     avg(CAST(tb AS BIGINT) - CAST(ta AS BIGINT)) AS avg_micros FROM pairs"
                ),
            )
            .await?;
        let examples = self
            .scan(
                caller,
                &format!("{pairs} SELECT entity_id, ta, tb FROM pairs ORDER BY position LIMIT 10"),
            )
            .await?;
        let count_row = counts.rows.first().cloned().unwrap_or_default();
        let total_a = count_row.first().map_or(0, cell_u64);
        let total_b = count_row.get(1).map_or(0, cell_u64);
        let summary_row = summary.rows.first().cloned().unwrap_or_default();
        let correlated = summary_row.first().map_or(0, cell_u64);
        let avg_seconds = summary_row
            .get(1)
            .and_then(cell_f64)
            .map_or(0.0, |micros| micros / 1e6);
        let examples: Vec<Value> = examples
            .rows
            .iter()
            .filter_map(|r| {
                let (ta, tb) = (cell_time(&r[1])?, cell_time(&r[2])?);
                Some(json!({
                    "entity_id": r[0],
                    "event_a_timestamp": rfc3339(ta),
                    "event_b_timestamp": rfc3339(tb),
                    "time_between_seconds":
                        (tb - ta).num_microseconds().unwrap_or(0) as f64 / 1e6,
                }))
            })
            .collect();
        let percentage = if total_a == 0 {
            0.0
        } else {
            (correlated as f64 * 100.0 / total_a as f64).min(100.0)
        };
        Ok(json!({
            "event_type_a": a.as_str(),
            "event_type_b": b.as_str(),
            "time_window_seconds": window,
            "total_a": total_a,
            "total_b": total_b,
            "correlated_pairs": correlated,
            "correlation_percentage": percentage,
            "avg_time_between_seconds": avg_seconds,
            "examples": examples,
        }))
    }

    /// Parses a time-series request (also the `series` of anomalies and the body of trends).
    fn series_spec(
        &self,
        members: &mut Members<'_>,
        single_aggregation: Option<(&'static str, &'static str, &'static str)>,
    ) -> Option<SeriesSpec> {
        let now = self.now();
        let interval = match members.text("interval") {
            None => {
                let name = members.name("interval");
                members
                    .checks
                    .push(&name, "is required: minute, hour, day, week or month");
                None
            }
            Some(raw) => Interval::parse(raw).or_else(|| {
                let name = members.name("interval");
                members
                    .checks
                    .push(&name, "must be minute, hour, day, week or month");
                None
            }),
        };
        let until = members.time("until").unwrap_or(now);
        let since = members.time("since");
        let event_type = members.event_type("event_type");
        let entity_id = match members.text("entity_id") {
            None => None,
            raw => {
                let name = members.name("entity_id");
                members.checks.entity(&name, raw)
            }
        };
        let condition = members.condition("where", now);
        let group_by = members.field("group_by");
        let fill = match members.text("fill_missing") {
            None => Fill::Zero,
            Some("zero") => Fill::Zero,
            Some("null") => Fill::Null,
            Some("none") => Fill::None,
            Some(_) => {
                let name = members.name("fill_missing");
                members.checks.push(&name, "must be zero, null or none");
                Fill::Zero
            }
        };
        let mut aggregations = Vec::new();
        match single_aggregation {
            Some((fn_member, field_member, p_member)) => {
                let function = match members.text(fn_member) {
                    None => Some(Function::Count),
                    Some(raw) => Function::parse(raw).or_else(|| {
                        let name = members.name(fn_member);
                        members
                            .checks
                            .push(&name, format!("must be one of {}", Function::NAMES));
                        None
                    }),
                };
                let field = members.field(field_member);
                let p = members.number(p_member, 0.0, 100.0).unwrap_or(50.0);
                if let Some(function) = function {
                    if function.needs_field() && field.is_none() {
                        let name = members.name(field_member);
                        members.checks.push(
                            &name,
                            format!("is required with {fn_member} {function:?}").to_lowercase(),
                        );
                    }
                    aggregations.push(Aggregation {
                        name: "value".into(),
                        function,
                        field,
                        p,
                    });
                }
            }
            None => self.aggregations(members, &mut aggregations),
        }
        let since = match (since, interval) {
            (Some(s), _) => s,
            (None, Some(i)) => default_since(i, until),
            (None, None) => until - TimeDelta::days(1),
        };
        let interval = interval?;
        let since_name = members.name("since");
        let interval_name = members.name("interval");
        self.check_range(
            &mut members.checks,
            interval,
            since,
            until,
            &since_name,
            &interval_name,
        )?;
        Some(SeriesSpec {
            interval,
            since,
            until,
            scope: Scope {
                since: Some(since),
                until: Some(until),
                entity_id,
                event_type,
                condition,
            },
            group_by,
            aggregations,
            fill,
        })
    }

    fn aggregations(&self, members: &mut Members<'_>, out: &mut Vec<Aggregation>) {
        let name = members.name("aggregations");
        let Some(list) = members.get("aggregations") else {
            members.checks.push(
                &name,
                "is required: a list of {\"name\", \"fn\", \"field\"?, \"p\"?}",
            );
            return;
        };
        let Some(list) = list.as_array().filter(|l| !l.is_empty() && l.len() <= 16) else {
            members
                .checks
                .push(&name, "must be a list of 1 to 16 aggregations");
            return;
        };
        for (i, item) in list.iter().enumerate() {
            let prefix = format!("{name}[{i}]");
            let mut m = Members::of(item, &prefix);
            let label = m.text("name").map(str::to_owned);
            let function = match m.text("fn") {
                None => {
                    let n = m.name("fn");
                    m.checks
                        .push(&n, format!("is required: one of {}", Function::NAMES));
                    None
                }
                Some(raw) => Function::parse(raw).or_else(|| {
                    let n = m.name("fn");
                    m.checks
                        .push(&n, format!("must be one of {}", Function::NAMES));
                    None
                }),
            };
            let field = m.field("field");
            let p = m.number("p", 0.0, 100.0);
            if let Some(f) = function {
                if f.needs_field() && field.is_none() {
                    let n = m.name("field");
                    m.checks.push(&n, "is required with this function");
                }
                if f == Function::Percentile && p.is_none() {
                    let n = m.name("p");
                    m.checks
                        .push(&n, "is required with percentile: a number from 0 to 100");
                }
            }
            let label = label.unwrap_or_else(|| {
                function.map_or_else(|| format!("a{i}"), |f| format!("{f:?}").to_lowercase())
            });
            if out.iter().any(|a| a.name == label) {
                let n = m.name("name");
                m.checks.push(&n, "must be unique among the aggregations");
            }
            let mut checks = m.finish();
            members.checks.0.append(&mut checks.0);
            if let Some(function) = function {
                out.push(Aggregation {
                    name: label,
                    function,
                    field,
                    p: p.unwrap_or(50.0),
                });
            }
        }
    }

    /// Runs a series: one row per (bucket, group) with data, then the gaps filled.
    async fn run_series(
        &self,
        caller: &Caller,
        spec: &SeriesSpec,
    ) -> Result<Vec<SeriesPoint>, AnalyticsError> {
        let group = spec
            .group_by
            .as_ref()
            .map_or_else(|| "NULL".to_owned(), |f| sql::field(f, As::Json));
        let aggregates: Vec<String> = spec
            .aggregations
            .iter()
            .enumerate()
            .map(|(i, a)| format!("{} AS a{i}", a.expression()))
            .collect();
        let statement = format!(
            "SELECT date_trunc({}, CAST(\"timestamp\" AS TIMESTAMP)) AS bucket, {group} AS grp, {} \
             FROM events{} GROUP BY 1, 2",
            sql::string(spec.interval.as_str()),
            aggregates.join(", "),
            spec.scope.where_clause()
        );
        let table = self.scan(caller, &statement).await?;
        let group_value = |cell: &Value| -> Value {
            match (&spec.group_by, cell) {
                (Some(DslField::Payload(p)) | Some(DslField::Metadata(p)), Value::String(text))
                    if !p.is_empty() =>
                {
                    serde_json::from_str(text).unwrap_or(Value::Null)
                }
                _ => cell.clone(),
            }
        };
        let mut by_group: BTreeMap<String, (Value, BucketValues)> = BTreeMap::new();
        for row in &table.rows {
            let Some(bucket) = cell_time(&row[0]) else {
                continue;
            };
            let g = group_value(&row[1]);
            let values: Vec<Value> = spec
                .aggregations
                .iter()
                .enumerate()
                .map(|(i, a)| a.value(&row[2 + i]))
                .collect();
            by_group
                .entry(g.to_string())
                .or_insert_with(|| (g, HashMap::new()))
                .1
                .insert(bucket, values);
        }
        let buckets = compute::bucket_starts(
            spec.interval,
            spec.since,
            spec.until,
            self.config.max_buckets,
        )
        .unwrap_or_default();
        if by_group.is_empty() && spec.group_by.is_none() {
            by_group.insert("null".into(), (Value::Null, HashMap::new()));
        }
        let mut points = Vec::new();
        for (_, (g, mut cells)) in by_group {
            for start in &buckets {
                let values = match cells.remove(start) {
                    Some(values) => values,
                    None => match spec.fill {
                        Fill::None => continue,
                        Fill::Null => vec![Value::Null; spec.aggregations.len()],
                        Fill::Zero => spec.aggregations.iter().map(Aggregation::zero).collect(),
                    },
                };
                points.push(SeriesPoint {
                    timestamp: *start,
                    group: g.clone(),
                    values,
                });
            }
        }
        points.sort_by_key(|p| p.timestamp);
        Ok(points)
    }

    fn series_json(spec: &SeriesSpec, points: &[SeriesPoint]) -> Vec<Value> {
        points
            .iter()
            .map(|p| {
                let values: Map<String, Value> = spec
                    .aggregations
                    .iter()
                    .zip(&p.values)
                    .map(|(a, v)| (a.name.clone(), v.clone()))
                    .collect();
                let mut point = json!({"timestamp": rfc3339(p.timestamp), "values": values});
                if spec.group_by.is_some()
                    && let Some(object) = point.as_object_mut()
                {
                    object.insert("group".into(), p.group.clone());
                }
                point
            })
            .collect()
    }

    /// `POST /api/v1/analytics/time-series`.
    pub async fn time_series(
        &self,
        caller: &Caller,
        body: &Value,
    ) -> Result<Value, AnalyticsError> {
        let mut members = Members::of(body, "");
        let spec = self.series_spec(&mut members, None);
        members.finish().done()?;
        let Some(spec) = spec else {
            return Err(AnalyticsError::invalid(
                "body",
                "is not a valid time-series request",
            ));
        };
        let points = self.run_series(caller, &spec).await?;
        Ok(json!({
            "interval": spec.interval.as_str(),
            "time_range": {"from": rfc3339(spec.since), "to": rfc3339(spec.until)},
            "group_by": spec.group_by.as_ref().map(DslField::name),
            "points": Self::series_json(&spec, &points),
        }))
    }

    /// `POST /api/v1/analytics/funnel`: ordered steps per entity within a time window.
    pub async fn funnel(&self, caller: &Caller, body: &Value) -> Result<Value, AnalyticsError> {
        let now = self.now();
        let mut members = Members::of(body, "");
        let max_within = i64::from(self.config.max_range_days) * 86_400_000;
        let within_ms = members
            .integer("within_ms", 1, max_within)
            .unwrap_or(86_400_000);
        let since = members.time("since");
        let until = members.time("until");
        if let (Some(s), Some(u)) = (since, until)
            && s >= u
        {
            members.checks.push("since", "must be before until");
        }
        let mut steps: Vec<(String, EventType, Option<Condition>)> = Vec::new();
        match members.get("steps").map(|s| s.as_array()) {
            Some(Some(list)) if (2..=10).contains(&list.len()) => {
                for (i, item) in list.iter().enumerate() {
                    let mut m = Members::of(item, &format!("steps[{i}]"));
                    let name = m.text("name").map(str::to_owned);
                    let event_type = m.event_type("event_type");
                    if event_type.is_none() && m.checks.0.is_empty() {
                        let n = m.name("event_type");
                        m.checks.push(&n, "is required");
                    }
                    let condition = m.condition("where", now);
                    let mut checks = m.finish();
                    members.checks.0.append(&mut checks.0);
                    if let Some(event_type) = event_type {
                        let name = name.unwrap_or_else(|| event_type.as_str().to_owned());
                        steps.push((name, event_type, condition));
                    }
                }
            }
            _ => members.checks.push(
                "steps",
                "must be a list of 2 to 10 steps {\"name\", \"event_type\", \"where\"?}",
            ),
        }
        members.finish().done()?;
        let scope = Scope {
            since,
            until,
            ..Scope::default()
        };
        let types: Vec<String> = steps.iter().map(|s| sql::string(s.1.as_str())).collect();
        let matches: Vec<String> = steps
            .iter()
            .enumerate()
            .map(|(i, (_, t, c))| {
                let mut m = format!("event_type = {}", sql::string(t.as_str()));
                if let Some(c) = c {
                    m = format!("{m} AND {}", sql::condition(c));
                }
                format!("({m}) AS s{i}")
            })
            .collect();
        let mut filter = scope.where_clause();
        let types_clause = format!("event_type IN ({})", types.join(", "));
        filter = if filter.is_empty() {
            format!(" WHERE {types_clause}")
        } else {
            format!("{filter} AND {types_clause}")
        };
        // The funnel as one statement (the greedy rule of `compute::funnel`, which the tests
        // compare it with): r0 is each entity's first step-0 event; r{k} its first event after
        // r{k-1}'s, matching step k, within `within_ms` of r0's time.
        let within_us = within_ms.saturating_mul(1000);
        let mut ctes = vec![format!(
            "e AS (SELECT entity_id, position, CAST(\"timestamp\" AS BIGINT) AS t, {} \
             FROM events{filter})",
            matches.join(", ")
        )];
        // Timestamps never decrease along positions (the store's invariant), so the time of
        // the first matching event is the least time of the matching events: no join back.
        ctes.push(
            "r0 AS (SELECT entity_id, min(position) AS p, min(t) AS t0, min(t) AS t, \
             min(t) AS prev FROM e WHERE s0 GROUP BY entity_id)"
                .to_owned(),
        );
        for k in 1..steps.len() {
            ctes.push(format!(
                "r{k} AS (SELECT r.entity_id, min(e.position) AS p, r.t0, min(e.t) AS t, \
                 r.t AS prev FROM r{j} r JOIN e ON e.entity_id = r.entity_id AND e.s{k} \
                 AND e.position > r.p AND e.t <= r.t0 + {within_us} \
                 GROUP BY r.entity_id, r.t0, r.t)",
                j = k - 1
            ));
        }
        let selects: Vec<String> = (0..steps.len())
            .map(|k| {
                format!(
                    "SELECT {k} AS step, count(*) AS n, \
                     median(CAST(t - prev AS DOUBLE)) AS median_us FROM r{k}"
                )
            })
            .collect();
        let statement = format!(
            "WITH {} SELECT step, n, median_us FROM ({}) ORDER BY step",
            ctes.join(", "),
            selects.join(" UNION ALL ")
        );
        let table = self.scan(caller, &statement).await?;
        let mut reached = vec![(0_u64, None::<f64>); steps.len()];
        for row in &table.rows {
            if let Some(k) = row[0].as_u64().and_then(|k| usize::try_from(k).ok())
                && let Some(slot) = reached.get_mut(k)
            {
                *slot = (cell_u64(&row[1]), row[2].as_f64());
            }
        }
        let first = reached.first().map_or(0, |r| r.0);
        let outcomes: Vec<compute::FunnelStepOutcome> = (0..steps.len())
            .map(|k| {
                let entered = reached[k].0;
                let next = reached.get(k + 1);
                let converted = next.map(|n| n.0);
                compute::FunnelStepOutcome {
                    entered,
                    converted,
                    conversion_rate: converted
                        .filter(|_| entered > 0)
                        .map(|c| c as f64 / entered as f64),
                    conversion_from_start: (first > 0).then(|| entered as f64 / first as f64),
                    median_time_to_convert_ms: next
                        .filter(|n| n.0 > 0)
                        .and_then(|n| n.1)
                        .map(|us| us / 1000.0),
                }
            })
            .collect();
        let entered = outcomes.first().map_or(0, |o| o.entered);
        let completed = outcomes.last().map_or(0, |o| o.entered);
        let steps_json: Vec<Value> = steps
            .iter()
            .zip(&outcomes)
            .map(|((name, t, _), o)| {
                json!({
                    "name": name,
                    "event_type": t.as_str(),
                    "entered": o.entered,
                    "converted": o.converted,
                    "conversion_rate": o.conversion_rate,
                    "conversion_from_start": o.conversion_from_start,
                    "median_time_to_convert_ms": o.median_time_to_convert_ms,
                })
            })
            .collect();
        Ok(json!({
            "within_ms": within_ms,
            "entered": entered,
            "completed": completed,
            "overall_conversion": if entered == 0 { None } else { Some(completed as f64 / entered as f64) },
            "steps": steps_json,
        }))
    }

    /// `POST /api/v1/analytics/cohorts`: retention by the period of each entity's first event.
    pub async fn cohorts(&self, caller: &Caller, body: &Value) -> Result<Value, AnalyticsError> {
        let mut members = Members::of(body, "");
        let first = members.event_type("first_event_type");
        let back = members.event_type("return_event_type");
        for (name, value) in [("first_event_type", &first), ("return_event_type", &back)] {
            if value.is_none() && !members.checks.0.iter().any(|e| e.field == name) {
                members.checks.push(name, "is required");
            }
        }
        let period = match members.text("period") {
            None => Interval::Week,
            Some(raw) => match Interval::parse(raw) {
                Some(i @ (Interval::Day | Interval::Week | Interval::Month)) => i,
                _ => {
                    members.checks.push("period", "must be day, week or month");
                    Interval::Week
                }
            },
        };
        let periods = members.integer("periods", 1, 100).unwrap_or(12) as usize;
        let until = members.time("until").unwrap_or_else(|| self.now());
        let since = members.time("since").unwrap_or_else(|| {
            until - TimeDelta::days(i64::from(self.config.max_range_days.min(366)))
        });
        self.check_range(&mut members.checks, period, since, until, "since", "period");
        members.finish().done()?;
        let (Some(first), Some(back)) = (first, back) else {
            return Err(AnalyticsError::invalid("first_event_type", "is required"));
        };
        let unit = sql::string(period.as_str());
        let firsts = format!(
            "firsts AS (SELECT entity_id, min(\"timestamp\") AS t0 FROM events \
             WHERE event_type = {} GROUP BY entity_id \
             HAVING min(\"timestamp\") >= {} AND min(\"timestamp\") < {})",
            sql::string(first.as_str()),
            sql::time(since),
            sql::time(until)
        );
        let sizes = self
            .scan(
                caller,
                &format!(
                    "WITH {firsts} SELECT date_trunc({unit}, CAST(t0 AS TIMESTAMP)) AS cohort, count(*) AS n \
                     FROM firsts GROUP BY 1 ORDER BY 1"
                ),
            )
            .await?;
        let retained = self
            .scan(
                caller,
                &format!(
                    "WITH {firsts}, returns AS (SELECT DISTINCT entity_id, \
                     date_trunc({unit}, CAST(\"timestamp\" AS TIMESTAMP)) AS rp FROM events WHERE event_type = {}) \
                     SELECT date_trunc({unit}, CAST(f.t0 AS TIMESTAMP)) AS cohort, r.rp AS period, \
                     count(DISTINCT f.entity_id) AS n FROM firsts f JOIN returns r \
                     ON f.entity_id = r.entity_id AND r.rp >= date_trunc({unit}, CAST(f.t0 AS TIMESTAMP)) \
                     GROUP BY 1, 2",
                    sql::string(back.as_str())
                ),
            )
            .await?;
        let mut matrix: BTreeMap<DateTime<Utc>, Vec<u64>> = BTreeMap::new();
        for row in &retained.rows {
            let (Some(cohort), Some(at)) = (cell_time(&row[0]), cell_time(&row[1])) else {
                continue;
            };
            let k = period.periods_between(cohort, at);
            if let Ok(k) = usize::try_from(k)
                && k < periods
            {
                matrix.entry(cohort).or_insert_with(|| vec![0; periods])[k] = cell_u64(&row[2]);
            }
        }
        let cohorts: Vec<Value> = sizes
            .rows
            .iter()
            .filter_map(|row| {
                let cohort = cell_time(&row[0])?;
                let size = cell_u64(&row[1]);
                let retention = matrix.remove(&cohort).unwrap_or_else(|| vec![0; periods]);
                let rates: Vec<f64> = retention
                    .iter()
                    .map(|n| {
                        if size == 0 {
                            0.0
                        } else {
                            *n as f64 / size as f64
                        }
                    })
                    .collect();
                Some(json!({
                    "cohort": rfc3339(cohort),
                    "size": size,
                    "retention": retention,
                    "rates": rates,
                }))
            })
            .collect();
        Ok(json!({
            "period": period.as_str(),
            "first_event_type": first.as_str(),
            "return_event_type": back.as_str(),
            "time_range": {"from": rfc3339(since), "to": rfc3339(until)},
            "cohorts": cohorts,
        }))
    }

    /// `POST /api/v1/analytics/trend`: a least-squares line over a series and its forecast.
    pub async fn trend(&self, caller: &Caller, body: &Value) -> Result<Value, AnalyticsError> {
        let mut members = Members::of(body, "");
        let forecast = members.integer("forecast_periods", 0, 100).unwrap_or(3) as usize;
        let spec = self.series_spec(&mut members, Some(("fn", "field", "p")));
        let grouped = spec.as_ref().is_some_and(|s| s.group_by.is_some());
        if grouped {
            members.checks.push(
                "group_by",
                "is not supported by trends: one series per request",
            );
        }
        members.finish().done()?;
        let Some(spec) = spec else {
            return Err(AnalyticsError::invalid(
                "body",
                "is not a valid trend request",
            ));
        };
        let points = self.run_series(caller, &spec).await?;
        let values: Vec<f64> = points
            .iter()
            .filter_map(|p| p.values.first().and_then(Value::as_f64))
            .collect();
        let line = compute::trend(&values, forecast);
        let mut next = spec.interval.floor(spec.until);
        if next < spec.until {
            next = spec.interval.next(next);
        }
        let forecast_points: Vec<Value> = line
            .as_ref()
            .map(|t| {
                t.forecast
                    .iter()
                    .map(|v| {
                        let point = json!({"timestamp": rfc3339(next), "value": v});
                        next = spec.interval.next(next);
                        point
                    })
                    .collect()
            })
            .unwrap_or_default();
        let series: Vec<Value> = points
            .iter()
            .map(|p| json!({"timestamp": rfc3339(p.timestamp), "value": p.values.first()}))
            .collect();
        Ok(json!({
            "interval": spec.interval.as_str(),
            "time_range": {"from": rfc3339(spec.since), "to": rfc3339(spec.until)},
            "points": series,
            "slope": line.as_ref().map(|t| t.slope),
            "intercept": line.as_ref().map(|t| t.intercept),
            "change": line.as_ref().map(|t| t.change),
            "change_percent": line.as_ref().and_then(|t| t.change_percent),
            "direction": line.as_ref().map_or("stable", |t| t.direction),
            "forecast": forecast_points,
        }))
    }

    /// `POST /api/v1/analytics/anomalies`: points of a series flagged by z-score, IQR or MAD.
    pub async fn anomalies(&self, caller: &Caller, body: &Value) -> Result<Value, AnalyticsError> {
        let mut members = Members::of(body, "");
        let method = match members.text("method") {
            None => AnomalyMethod::ZScore,
            Some(raw) => AnomalyMethod::parse(raw).unwrap_or_else(|| {
                members.checks.push("method", "must be zscore, iqr or mad");
                AnomalyMethod::ZScore
            }),
        };
        let sensitivity = match members.number("sensitivity", 0.0, 1000.0) {
            Some(s) if s > 0.0 => s,
            Some(_) => {
                members
                    .checks
                    .push("sensitivity", "must be a number above 0, at most 1000");
                method.default_sensitivity()
            }
            None => method.default_sensitivity(),
        };
        let aggregation = members.text("aggregation").map(str::to_owned);
        let spec = match members.get("series") {
            None => {
                members
                    .checks
                    .push("series", "is required: a time-series request");
                None
            }
            Some(series) => {
                let mut inner = Members::of(series, "series");
                let spec = self.series_spec(&mut inner, None);
                let mut checks = inner.finish();
                members.checks.0.append(&mut checks.0);
                spec
            }
        };
        let index = match (&spec, &aggregation) {
            (Some(s), Some(name)) => {
                let i = s.aggregations.iter().position(|a| &a.name == name);
                if i.is_none() {
                    members
                        .checks
                        .push("aggregation", "must name one of the series' aggregations");
                }
                i
            }
            (Some(_), None) => Some(0),
            _ => None,
        };
        members.finish().done()?;
        let (Some(spec), Some(index)) = (spec, index) else {
            return Err(AnalyticsError::invalid(
                "series",
                "is not a valid time-series request",
            ));
        };
        let points = self.run_series(caller, &spec).await?;
        let mut groups: BTreeMap<String, Vec<&SeriesPoint>> = BTreeMap::new();
        for p in &points {
            groups.entry(p.group.to_string()).or_default().push(p);
        }
        let mut flagged = Vec::new();
        for series in groups.values() {
            let values: Vec<f64> = series
                .iter()
                .map(|p| {
                    p.values
                        .get(index)
                        .and_then(Value::as_f64)
                        .unwrap_or(f64::NAN)
                })
                .collect();
            for a in compute::anomalies(&values, method, sensitivity) {
                let Some(point) = series.get(a.index) else {
                    continue;
                };
                let mut item = json!({
                    "timestamp": rfc3339(point.timestamp),
                    "value": a.value,
                    "score": a.score,
                    "expected": a.expected,
                });
                if spec.group_by.is_some()
                    && let Some(object) = item.as_object_mut()
                {
                    object.insert("group".into(), point.group.clone());
                }
                flagged.push(item);
            }
        }
        Ok(json!({
            "method": method.as_str(),
            "sensitivity": sensitivity,
            "aggregation": spec.aggregations.get(index).map(|a| a.name.clone()),
            "points": points.len(),
            "anomalies": flagged,
        }))
    }

    /// `POST /api/v1/query`: the JSON DSL, compiled to one statement.
    pub async fn query(&self, caller: &Caller, body: &Value) -> Result<DslAnswer, AnalyticsError> {
        let query = DslQuery::parse(body, self.now()).map_err(|errors| {
            AnalyticsError::Invalid(
                errors
                    .into_iter()
                    .map(|(field, message)| FieldError::new(field, message))
                    .collect(),
            )
        })?;
        let filter = query
            .condition
            .as_ref()
            .map_or_else(String::new, |c| format!(" WHERE {}", sql::condition(c)));
        let mut order: Vec<String> = Vec::new();
        for key in &query.order_by {
            let direction = if key.descending { "DESC" } else { "ASC" };
            match &key.field {
                DslField::Payload(_) | DslField::Metadata(_) => {
                    order.push(format!(
                        "{} {direction} NULLS LAST",
                        sql::field(&key.field, As::Number)
                    ));
                    order.push(format!(
                        "{} {direction} NULLS LAST",
                        sql::field(&key.field, As::Json)
                    ));
                }
                f => order.push(format!("{} {direction}", sql::field(f, As::Json))),
            }
        }
        order.push("position ASC".into());
        let columns = match &query.select {
            None => {
                "id, entity_id, event_type, version, position, \"timestamp\", payload, metadata"
                    .to_owned()
            }
            Some(fields) => fields
                .iter()
                .enumerate()
                .map(|(i, f)| format!("{} AS c{i}", sql::field(f, As::Json)))
                .collect::<Vec<_>>()
                .join(", "),
        };
        let statement = format!(
            "SELECT {columns} FROM events{filter} ORDER BY {} LIMIT {}",
            order.join(", "),
            query.limit + 1
        );
        let table = self.run(caller, &statement, query.limit + 1).await?;
        let has_more = table.rows.len() > query.limit;
        let rows = table.rows.into_iter().take(query.limit);
        match &query.select {
            None => {
                let events = rows
                    .map(|r| event_of(caller, &r))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(DslAnswer::Events { events, has_more })
            }
            Some(fields) => {
                let rows = rows
                    .map(|r| {
                        fields
                            .iter()
                            .zip(r)
                            .map(|(f, v)| {
                                let v = match (f, v) {
                                    (DslField::Payload(_), Value::String(text))
                                    | (DslField::Metadata(_), Value::String(text)) => {
                                        serde_json::from_str(&text).unwrap_or(Value::Null)
                                    }
                                    (_, v) => v,
                                };
                                (f.name(), v)
                            })
                            .collect()
                    })
                    .collect();
                Ok(DslAnswer::Rows { rows, has_more })
            }
        }
    }
}

/// A group's aggregated values by bucket start.
type BucketValues = HashMap<DateTime<Utc>, Vec<Value>>;

/// One point of a series.
#[derive(Debug, Clone)]
struct SeriesPoint {
    timestamp: DateTime<Utc>,
    group: Value,
    values: Vec<Value>,
}

/// An event rebuilt from a row of `SELECT id, entity_id, event_type, version, position,
/// timestamp, payload, metadata`.
fn event_of(caller: &Caller, row: &[Value]) -> Result<Arc<Event>, AnalyticsError> {
    let broken =
        || AnalyticsError::Internal(anyhow::anyhow!("the engine returned a malformed event row"));
    let text = |i: usize| row.get(i).and_then(Value::as_str).ok_or_else(broken);
    let id = EventId::parse(text(0)?).map_err(|_| broken())?;
    let entity_id = EntityId::parse(text(1)?).map_err(|_| broken())?;
    let event_type = EventType::parse(text(2)?).map_err(|_| broken())?;
    let version = Version::new(row.get(3).and_then(Value::as_u64).ok_or_else(broken)?);
    let position = Position::new(row.get(4).and_then(Value::as_u64).ok_or_else(broken)?);
    let timestamp = row.get(5).and_then(cell_time).ok_or_else(broken)?;
    let payload =
        serde_json::value::RawValue::from_string(text(6)?.to_owned()).map_err(|_| broken())?;
    let metadata = match row.get(7).and_then(Value::as_str) {
        Some(m) => {
            Some(serde_json::value::RawValue::from_string(m.to_owned()).map_err(|_| broken())?)
        }
        None => None,
    };
    Ok(Arc::new(Event {
        id,
        tenant_id: caller.tenant().clone(),
        entity_id,
        event_type,
        version,
        position,
        timestamp,
        payload,
        metadata,
    }))
}
