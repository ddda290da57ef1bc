//! Aggregation accumulators and the groups of a reduce.

use std::cmp::Ordering;
use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use serde_json::{Number, Value};

use super::operators::add_numbers;
use super::path::cmp_numbers;
use super::{AggregateFn, Aggregation, MAX_VALUES_PER_GROUP, Record, ReduceSpec, SourceEvent};

/// What one aggregation remembers for one group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum Acc {
    Count(u64),
    Sum(Number),
    Avg {
        sum: Number,
        count: u64,
    },
    Min(Option<Number>),
    Max(Option<Number>),
    /// The JSON texts of the distinct values.
    Distinct(BTreeSet<String>),
    /// `(record sequence number, value)` of the first / last value.
    First(Option<(u64, Value)>),
    Last(Option<(u64, Value)>),
    /// The numbers seen, in ascending order.
    Percentile(Vec<Number>),
}

impl Acc {
    fn initial(function: AggregateFn) -> Self {
        match function {
            AggregateFn::Count => Self::Count(0),
            AggregateFn::Sum => Self::Sum(Number::from(0)),
            AggregateFn::Avg => Self::Avg {
                sum: Number::from(0),
                count: 0,
            },
            AggregateFn::Min => Self::Min(None),
            AggregateFn::Max => Self::Max(None),
            AggregateFn::Distinct => Self::Distinct(BTreeSet::new()),
            AggregateFn::First => Self::First(None),
            AggregateFn::Last => Self::Last(None),
            AggregateFn::Percentile => Self::Percentile(Vec::new()),
        }
    }

    /// Whether folding `value` would go beyond [`MAX_VALUES_PER_GROUP`].
    fn check(&self, value: Option<&Value>) -> Result<(), String> {
        match (self, value) {
            (Self::Distinct(values), Some(v))
                if values.len() >= MAX_VALUES_PER_GROUP && !values.contains(&v.to_string()) =>
            {
                Err(format!(
                    "distinct keeps at most {MAX_VALUES_PER_GROUP} values per group"
                ))
            }
            (Self::Percentile(values), Some(Value::Number(_)))
                if values.len() >= MAX_VALUES_PER_GROUP =>
            {
                Err(format!(
                    "percentile keeps at most {MAX_VALUES_PER_GROUP} values per group"
                ))
            }
            _ => Ok(()),
        }
    }

    /// Folds the value the aggregation's field has in one record (`None`: missing or `null`;
    /// `count` without a field gets `Some(null)`).
    fn add(&mut self, value: Option<Value>, seq: u64) {
        match self {
            Self::Count(n) => {
                if value.is_some() {
                    *n = n.saturating_add(1);
                }
            }
            Self::Sum(sum) => {
                if let Some(Value::Number(x)) = value
                    && let Some(s) = add_numbers(sum, &x)
                {
                    *sum = s;
                }
            }
            Self::Avg { sum, count } => {
                if let Some(Value::Number(x)) = value
                    && let Some(s) = add_numbers(sum, &x)
                {
                    *sum = s;
                    *count = count.saturating_add(1);
                }
            }
            Self::Min(v) => {
                if let Some(Value::Number(x)) = value
                    && v.as_ref()
                        .is_none_or(|cur| cmp_numbers(&x, cur) == Some(Ordering::Less))
                {
                    *v = Some(x);
                }
            }
            Self::Max(v) => {
                if let Some(Value::Number(x)) = value
                    && v.as_ref()
                        .is_none_or(|cur| cmp_numbers(&x, cur) == Some(Ordering::Greater))
                {
                    *v = Some(x);
                }
            }
            Self::Distinct(values) => {
                if let Some(v) = value
                    && (values.len() < MAX_VALUES_PER_GROUP)
                {
                    values.insert(v.to_string());
                }
            }
            Self::First(at) => {
                if let Some(v) = value
                    && at.as_ref().is_none_or(|(s, _)| seq < *s)
                {
                    *at = Some((seq, v));
                }
            }
            Self::Last(at) => {
                if let Some(v) = value
                    && at.as_ref().is_none_or(|(s, _)| seq > *s)
                {
                    *at = Some((seq, v));
                }
            }
            Self::Percentile(values) => {
                if let Some(Value::Number(x)) = value
                    && values.len() < MAX_VALUES_PER_GROUP
                {
                    let at = values.partition_point(|v| {
                        cmp_numbers(v, &x).unwrap_or(Ordering::Equal) != Ordering::Greater
                    });
                    values.insert(at, x);
                }
            }
        }
    }

    /// Folds another accumulator of the same aggregation into this one (sessions merging).
    fn merge(&mut self, other: Self) -> Result<(), String> {
        match (self, other) {
            (Self::Count(a), Self::Count(b)) => *a = a.saturating_add(b),
            (Self::Sum(a), Self::Sum(b)) => {
                if let Some(s) = add_numbers(a, &b) {
                    *a = s;
                }
            }
            (
                Self::Avg { sum, count },
                Self::Avg {
                    sum: other_sum,
                    count: other_count,
                },
            ) => {
                if let Some(s) = add_numbers(sum, &other_sum) {
                    *sum = s;
                    *count = count.saturating_add(other_count);
                }
            }
            (me, Self::Min(Some(x)) | Self::Max(Some(x))) => me.add(Some(Value::Number(x)), 0),
            (Self::Distinct(a), Self::Distinct(b)) => {
                a.extend(b);
                if a.len() > MAX_VALUES_PER_GROUP {
                    return Err(format!(
                        "merging sessions: distinct keeps at most {MAX_VALUES_PER_GROUP} values \
                         per group"
                    ));
                }
            }
            (me, Self::First(Some((seq, v))) | Self::Last(Some((seq, v)))) => me.add(Some(v), seq),
            (Self::Percentile(a), Self::Percentile(b)) => {
                if a.len().saturating_add(b.len()) > MAX_VALUES_PER_GROUP {
                    return Err(format!(
                        "merging sessions: percentile keeps at most {MAX_VALUES_PER_GROUP} \
                         values per group"
                    ));
                }
                a.extend(b);
                a.sort_by(|x, y| cmp_numbers(x, y).unwrap_or(Ordering::Equal));
            }
            _ => {}
        }
        Ok(())
    }

    fn result(&self, p: Option<f64>) -> Value {
        match self {
            Self::Count(n) => Value::from(*n),
            Self::Sum(sum) => Value::Number(sum.clone()),
            Self::Avg { sum, count } => {
                if *count == 0 {
                    return Value::Null;
                }
                sum.as_f64()
                    .and_then(|s| Number::from_f64(s / *count as f64))
                    .map_or(Value::Null, Value::Number)
            }
            Self::Min(v) | Self::Max(v) => v.clone().map_or(Value::Null, Value::Number),
            Self::Distinct(values) => Value::from(values.len()),
            Self::First(at) | Self::Last(at) => at.as_ref().map_or(Value::Null, |(_, v)| v.clone()),
            Self::Percentile(values) => {
                nearest_rank(values, p.unwrap_or(50.0)).map_or(Value::Null, Value::Number)
            }
        }
    }
}

/// The nearest-rank percentile of ascending values: the value at rank `ceil(p/100 * n)`
/// (at least 1).
fn nearest_rank(values: &[Number], p: f64) -> Option<Number> {
    let n = values.len();
    if n == 0 {
        return None;
    }
    let rank = (p / 100.0 * n as f64).ceil();
    let rank = if rank.is_finite() && rank >= 1.0 {
        (rank as usize).min(n)
    } else {
        1
    };
    values.get(rank - 1).cloned()
}

/// The value an aggregation reads from a record (`None`: skipped).
fn read(aggregation: &Aggregation, record: &Record) -> Option<Value> {
    match &aggregation.field {
        None => Some(Value::Null),
        Some(field) => field.get_present(record),
    }
}

/// One group of a reduce (in one window, or overall).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct Group {
    /// The group_by values.
    pub values: Vec<Value>,
    pub accs: Vec<Acc>,
    /// The last record folded in: its source, and its sequence number.
    pub source: SourceEvent,
    pub seq: u64,
}

impl Group {
    pub fn new(spec: &ReduceSpec, values: Vec<Value>, source: SourceEvent) -> Self {
        Self {
            values,
            accs: spec
                .aggregations
                .iter()
                .map(|a| Acc::initial(a.function))
                .collect(),
            source,
            seq: 0,
        }
    }

    /// Whether the record can be folded in without going beyond a bound.
    pub fn check(&self, spec: &ReduceSpec, record: &Record) -> Result<(), String> {
        for (acc, aggregation) in self.accs.iter().zip(&spec.aggregations) {
            acc.check(read(aggregation, record).as_ref())
                .map_err(|e| format!("{}: {e}", aggregation.name))?;
        }
        Ok(())
    }

    pub fn add(&mut self, spec: &ReduceSpec, record: &Record, seq: u64) {
        for (acc, aggregation) in self.accs.iter_mut().zip(&spec.aggregations) {
            acc.add(read(aggregation, record), seq);
        }
        if seq >= self.seq {
            self.seq = seq;
            self.source = record.source.clone();
        }
    }

    pub fn merge(&mut self, other: Self) -> Result<(), String> {
        for (acc, theirs) in self.accs.iter_mut().zip(other.accs) {
            acc.merge(theirs)?;
        }
        if other.seq > self.seq {
            self.seq = other.seq;
            self.source = other.source;
        }
        Ok(())
    }

    /// The result payload: group_by members, then aggregations.
    pub fn payload(&self, spec: &ReduceSpec) -> serde_json::Map<String, Value> {
        let mut payload = serde_json::Map::new();
        for (path, value) in spec.group_by.iter().zip(&self.values) {
            if let Some(name) = path.result_name() {
                payload.insert(name.to_owned(), value.clone());
            }
        }
        for (acc, aggregation) in self.accs.iter().zip(&spec.aggregations) {
            payload.insert(aggregation.name.clone(), acc.result(aggregation.p));
        }
        payload
    }
}
