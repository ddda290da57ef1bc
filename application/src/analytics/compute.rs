//! The pure computations of the analytics routes: time buckets, percentiles, ordered funnels,
//! linear trends and outlier detection. The SQL side (DataFusion) produces the inputs; nothing
//! here performs I/O or reads a clock.
use chrono::{DateTime, Datelike, Months, NaiveDate, Utc};

const SECONDS_PER_MINUTE: i64 = 60;
const SECONDS_PER_HOUR: i64 = 60 * SECONDS_PER_MINUTE;
const SECONDS_PER_DAY: i64 = 24 * SECONDS_PER_HOUR;
const SECONDS_PER_WEEK: i64 = 7 * SECONDS_PER_DAY;
/// 1970-01-01 was a Thursday: the Monday of its ISO week lies this many seconds before the epoch.
const EPOCH_AFTER_MONDAY: i64 = 3 * SECONDS_PER_DAY;

/// The bucket width of frequency, time series, cohorts and trends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interval {
    Minute,
    Hour,
    Day,
    Week,
    Month,
}

impl Interval {
    /// "minute" | "hour" | "day" | "week" | "month"
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "minute" => Some(Self::Minute),
            "hour" => Some(Self::Hour),
            "day" => Some(Self::Day),
            "week" => Some(Self::Week),
            "month" => Some(Self::Month),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Minute => "minute",
            Self::Hour => "hour",
            Self::Day => "day",
            Self::Week => "week",
            Self::Month => "month",
        }
    }

    /// The fixed width in seconds (None for calendar months).
    fn fixed_seconds(self) -> Option<i64> {
        match self {
            Self::Minute => Some(SECONDS_PER_MINUTE),
            Self::Hour => Some(SECONDS_PER_HOUR),
            Self::Day => Some(SECONDS_PER_DAY),
            Self::Week => Some(SECONDS_PER_WEEK),
            Self::Month => None,
        }
    }

    /// The start of the bucket holding `t`, in UTC: truncation to the minute/hour/day; weeks
    /// start on Monday 00:00 UTC (ISO weeks, as DataFusion's `date_trunc('week')`); months on
    /// the 1st at 00:00 UTC (calendar-true).
    pub fn floor(self, t: DateTime<Utc>) -> DateTime<Utc> {
        match self.fixed_seconds() {
            Some(width) => {
                // Weeks are aligned on a Monday, the others on the epoch itself.
                let offset = if self == Self::Week {
                    EPOCH_AFTER_MONDAY
                } else {
                    0
                };
                let secs = t.timestamp();
                let floored = (secs + offset).div_euclid(width) * width - offset;
                DateTime::from_timestamp(floored, 0).unwrap_or(t)
            }
            None => first_of_month(t.year(), t.month()).unwrap_or(t),
        }
    }

    /// The start of the next bucket after the bucket starting at `start` (calendar months:
    /// Jan 1 -> Feb 1 -> Mar 1, across year ends). `start` is floored first; at the end of
    /// chrono's range the result saturates at the latest representable bucket start.
    pub fn next(self, start: DateTime<Utc>) -> DateTime<Utc> {
        let start = self.floor(start);
        match self.fixed_seconds() {
            Some(width) => DateTime::from_timestamp(start.timestamp().saturating_add(width), 0)
                .unwrap_or(start),
            None => start
                .date_naive()
                .checked_add_months(Months::new(1))
                .and_then(|date| date.and_hms_opt(0, 0, 0))
                .map(|naive| naive.and_utc())
                .unwrap_or(start),
        }
    }

    /// Whole buckets from the bucket starting at `from` to the one starting at `to` (both
    /// bucket starts, floored if they are not; negative if to < from). Months count calendar
    /// months (2026-01-01 -> 2026-03-01 is 2).
    pub fn periods_between(self, from: DateTime<Utc>, to: DateTime<Utc>) -> i64 {
        let (from, to) = (self.floor(from), self.floor(to));
        match self.fixed_seconds() {
            Some(width) => (to.timestamp() - from.timestamp()).div_euclid(width),
            None => month_index(to) - month_index(from),
        }
    }
}

fn first_of_month(year: i32, month: u32) -> Option<DateTime<Utc>> {
    NaiveDate::from_ymd_opt(year, month, 1)
        .and_then(|date| date.and_hms_opt(0, 0, 0))
        .map(|naive| naive.and_utc())
}

/// Months since year 0, January.
fn month_index(t: DateTime<Utc>) -> i64 {
    i64::from(t.year()) * 12 + i64::from(t.month0())
}

/// The bucket starts covering [since, until): from floor(since), each next, while start < until.
/// Err(n) with the number of buckets it would need (at least max+1) when more than `max`; the
/// count is computed arithmetically, so nothing is allocated for it. since >= until gives an
/// empty list.
pub fn bucket_starts(
    interval: Interval,
    since: DateTime<Utc>,
    until: DateTime<Utc>,
    max: usize,
) -> Result<Vec<DateTime<Utc>>, usize> {
    if since >= until {
        return Ok(Vec::new());
    }
    let first = interval.floor(since);
    let last_floor = interval.floor(until);
    // Buckets from `first` up to (excluding) the one holding `until`, plus that one when
    // `until` lies strictly inside it.
    let partial = i64::from(last_floor < until);
    let needed = interval
        .periods_between(first, last_floor)
        .saturating_add(partial);
    let needed = usize::try_from(needed).unwrap_or(usize::MAX);
    if needed > max {
        return Err(needed);
    }
    let mut starts = Vec::with_capacity(needed);
    let mut start = first;
    while start < until && starts.len() < needed {
        starts.push(start);
        let following = interval.next(start);
        if following <= start {
            // The end of chrono's range: no further bucket can be represented.
            break;
        }
        start = following;
    }
    Ok(starts)
}

/// Exact nearest-rank percentile (p in 0..=100, clamped): sort ascending, rank =
/// ceil(p/100 * n), at least 1; value at rank. None for no values (or a NaN `p`). NaN values
/// are ignored (removed from `values`, which is left sorted).
pub fn nearest_rank_percentile(values: &mut Vec<f64>, p: f64) -> Option<f64> {
    values.retain(|value| !value.is_nan());
    if values.is_empty() || p.is_nan() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let n = values.len();
    let p = p.clamp(0.0, 100.0);
    // p * n / 100 rather than p / 100 * n: exact for the integral p and n of the usual case.
    let rank = (p * n as f64 / 100.0).ceil() as usize;
    let rank = rank.clamp(1, n);
    values.get(rank - 1).copied()
}

/// One event of a funnel's candidate events, given sorted by (entity_id, position).
#[derive(Debug, Clone, PartialEq)]
pub struct FunnelRow {
    pub entity_id: String,
    pub position: u64,
    pub timestamp_micros: i64,
    /// per step: does this event match step i
    pub matches: Vec<bool>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FunnelStepOutcome {
    /// Entities that reached this step.
    pub entered: u64,
    /// Of them, those that reached the next step (None for the last step).
    pub converted: Option<u64>,
    /// converted / entered (None for the last step, or when entered = 0).
    pub conversion_rate: Option<f64>,
    /// entered / entered of step 0 (None when step 0 has 0 entered).
    pub conversion_from_start: Option<f64>,
    /// Median over the entities that converted of (time reaching next step − time reaching
    /// this step), in milliseconds (f64, microsecond precision); None for the last step or when
    /// no one converted. Median of an even count = mean of the two middle values.
    pub median_time_to_convert_ms: Option<f64>,
}

/// Ordered funnel, the reference rule (the route runs it as one statement on the engine; a
/// property test compares the two): for each entity, greedily: the first event matching step 0 gives t0; then,
/// for k >= 1, the first later event (greater position) matching step k whose time − t0 <=
/// within_micros reaches step k (an event matching several steps may serve only one step: the
/// one being looked for). An entity reaching step k also reached all before it.
///
/// An event matching step k outside the window is passed over (a later one may still be
/// inside it when positions and timestamps disagree). `matches` shorter than `steps` counts as
/// false for the missing steps. `steps == 0` gives an empty list.
pub fn funnel(rows: &[FunnelRow], steps: usize, within_micros: i64) -> Vec<FunnelStepOutcome> {
    if steps == 0 {
        return Vec::new();
    }
    // For each entity, the time at which it reached each step it reached.
    let mut journeys: Vec<Vec<i64>> = Vec::new();
    for entity_rows in rows.chunk_by(|a, b| a.entity_id == b.entity_id) {
        let mut reached: Vec<i64> = Vec::with_capacity(steps);
        for row in entity_rows {
            let looking_for = reached.len();
            if looking_for >= steps {
                break;
            }
            if !row.matches.get(looking_for).copied().unwrap_or(false) {
                continue;
            }
            match reached.first() {
                None => reached.push(row.timestamp_micros),
                Some(&t0) => {
                    if row.timestamp_micros.saturating_sub(t0) <= within_micros {
                        reached.push(row.timestamp_micros);
                    }
                }
            }
        }
        if !reached.is_empty() {
            journeys.push(reached);
        }
    }

    let entered: Vec<u64> = (0..steps)
        .map(|step| journeys.iter().filter(|times| times.len() > step).count() as u64)
        .collect();
    let start = entered.first().copied().unwrap_or(0);
    (0..steps)
        .map(|step| {
            let here = entered[step];
            let is_last = step + 1 == steps;
            let converted = (!is_last).then(|| entered[step + 1]);
            let conversion_rate = converted.and_then(|c| ratio(c, here));
            let mut durations_ms: Vec<f64> = if is_last {
                Vec::new()
            } else {
                journeys
                    .iter()
                    .filter(|times| times.len() > step + 1)
                    .map(|times| (times[step + 1] - times[step]) as f64 / 1000.0)
                    .collect()
            };
            FunnelStepOutcome {
                entered: here,
                converted,
                conversion_rate,
                conversion_from_start: ratio(here, start),
                median_time_to_convert_ms: median(&mut durations_ms),
            }
        })
        .collect()
}

fn ratio(numerator: u64, denominator: u64) -> Option<f64> {
    (denominator != 0).then(|| numerator as f64 / denominator as f64)
}

/// The median (mean of the two middle values for an even count); sorts `values`. None when
/// empty.
fn median(values: &mut [f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let n = values.len();
    let middle = values[n / 2];
    Some(if n.is_multiple_of(2) {
        (values[n / 2 - 1] + middle) / 2.0
    } else {
        middle
    })
}

/// The arithmetic mean; None when empty.
pub fn mean(values: &[f64]) -> Option<f64> {
    (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
}

/// The population variance (divided by n); None when empty.
pub fn population_variance(values: &[f64]) -> Option<f64> {
    let mean = mean(values)?;
    let squares: f64 = values.iter().map(|x| (x - mean) * (x - mean)).sum();
    Some(squares / values.len() as f64)
}

/// The population standard deviation; None when empty.
pub fn population_std_dev(values: &[f64]) -> Option<f64> {
    population_variance(values).map(f64::sqrt)
}

/// Least squares line over points (i, values[i]), i = 0..n-1.
#[derive(Debug, Clone, PartialEq)]
pub struct Trend {
    pub slope: f64,
    pub intercept: f64,
    /// last − first
    pub change: f64,
    /// change / |first| * 100; None when first == 0 or fewer than 2 points
    pub change_percent: Option<f64>,
    /// "increasing" | "decreasing" | "stable" (stable when |slope| <= 1e-9 * max(1, |mean|))
    pub direction: &'static str,
    /// intercept + slope * (n + j) for j in 0..forecast_periods
    pub forecast: Vec<f64>,
}

/// None for an empty series. One point: slope 0, intercept = the value.
pub fn trend(values: &[f64], forecast_periods: usize) -> Option<Trend> {
    let n = values.len();
    let first = *values.first()?;
    let last = *values.last()?;
    let y_mean = mean(values)?;
    let x_mean = (n as f64 - 1.0) / 2.0;
    let (mut covariance, mut x_spread) = (0.0, 0.0);
    for (i, y) in values.iter().enumerate() {
        let dx = i as f64 - x_mean;
        covariance += dx * (y - y_mean);
        x_spread += dx * dx;
    }
    let slope = if x_spread > 0.0 {
        covariance / x_spread
    } else {
        0.0
    };
    let intercept = y_mean - slope * x_mean;
    let change = last - first;
    let change_percent = (n >= 2 && first != 0.0).then(|| change / first.abs() * 100.0);
    let direction = if slope.abs() <= 1e-9 * y_mean.abs().max(1.0) {
        "stable"
    } else if slope > 0.0 {
        "increasing"
    } else {
        "decreasing"
    };
    let forecast = (0..forecast_periods)
        .map(|j| intercept + slope * (n + j) as f64)
        .collect();
    Some(Trend {
        slope,
        intercept,
        change,
        change_percent,
        direction,
        forecast,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnomalyMethod {
    ZScore,
    Iqr,
    Mad,
}

impl AnomalyMethod {
    /// "zscore" | "iqr" | "mad"
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "zscore" => Some(Self::ZScore),
            "iqr" => Some(Self::Iqr),
            "mad" => Some(Self::Mad),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::ZScore => "zscore",
            Self::Iqr => "iqr",
            Self::Mad => "mad",
        }
    }

    /// 3.0 standard deviations, 1.5 IQRs, 3.5 modified z.
    pub fn default_sensitivity(self) -> f64 {
        match self {
            Self::ZScore => 3.0,
            Self::Iqr => 1.5,
            Self::Mad => 3.5,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Anomaly {
    pub index: usize,
    pub value: f64,
    pub score: f64,
    pub expected: f64,
}

/// The "type 7" quantile of sorted values: h = (n−1)q, linear interpolation between the values
/// at floor(h) and ceil(h).
fn quantile_type7(sorted: &[f64], q: f64) -> Option<f64> {
    let n = sorted.len();
    if n == 0 {
        return None;
    }
    let h = (n - 1) as f64 * q.clamp(0.0, 1.0);
    let lo = (h.floor() as usize).min(n - 1);
    let hi = (h.ceil() as usize).min(n - 1);
    Some(sorted[lo] + (h - lo as f64) * (sorted[hi] - sorted[lo]))
}

/// The constant for the modified z-score (Iglewicz and Hoaglin).
const MODIFIED_Z: f64 = 0.6745;

/// Flags outliers (non-finite inputs — NaN and ±infinity — are skipped, never flagged, and do
/// not enter the statistics):
/// - ZScore: mean and population standard deviation; score = (x − mean)/sd; flagged when
///   |score| > sensitivity; sd == 0 flags nothing; expected = mean.
/// - Iqr: Q1, Q3 by the type-7 quantile; IQR = Q3 − Q1; flagged when x < Q1 − s·IQR or
///   x > Q3 + s·IQR; score = (x − median)/IQR, or x − median when IQR == 0 (the fences then
///   flag any x other than Q1); expected = median.
/// - Mad: median m; MAD = median(|x − m|); modified z = 0.6745·(x − m)/MAD; flagged when
///   |z| > s; MAD == 0 flags nothing; expected = m.
///
/// Fewer than 3 finite values: nothing flagged. Results are in index order.
pub fn anomalies(values: &[f64], method: AnomalyMethod, sensitivity: f64) -> Vec<Anomaly> {
    let points: Vec<(usize, f64)> = values
        .iter()
        .copied()
        .enumerate()
        .filter(|(_, value)| value.is_finite())
        .collect();
    if points.len() < 3 {
        return Vec::new();
    }
    let finite: Vec<f64> = points.iter().map(|&(_, value)| value).collect();
    let flag = |score_of: &dyn Fn(f64) -> Option<f64>, expected: f64| -> Vec<Anomaly> {
        points
            .iter()
            .filter_map(|&(index, value)| {
                score_of(value).map(|score| Anomaly {
                    index,
                    value,
                    score,
                    expected,
                })
            })
            .collect()
    };
    match method {
        AnomalyMethod::ZScore => {
            let (Some(mean), Some(sd)) = (mean(&finite), population_std_dev(&finite)) else {
                return Vec::new();
            };
            if sd == 0.0 {
                return Vec::new();
            }
            flag(
                &|x| {
                    let score = (x - mean) / sd;
                    (score.abs() > sensitivity).then_some(score)
                },
                mean,
            )
        }
        AnomalyMethod::Iqr => {
            let mut sorted = finite;
            sorted.sort_by(f64::total_cmp);
            let (Some(q1), Some(med), Some(q3)) = (
                quantile_type7(&sorted, 0.25),
                quantile_type7(&sorted, 0.5),
                quantile_type7(&sorted, 0.75),
            ) else {
                return Vec::new();
            };
            let iqr = q3 - q1;
            let (low, high) = (q1 - sensitivity * iqr, q3 + sensitivity * iqr);
            flag(
                &|x| {
                    let score = if iqr == 0.0 { x - med } else { (x - med) / iqr };
                    (x < low || x > high).then_some(score)
                },
                med,
            )
        }
        AnomalyMethod::Mad => {
            let mut sorted = finite;
            let Some(m) = median(&mut sorted) else {
                return Vec::new();
            };
            let mut deviations: Vec<f64> = sorted.iter().map(|x| (x - m).abs()).collect();
            let Some(mad) = median(&mut deviations) else {
                return Vec::new();
            };
            if mad == 0.0 {
                return Vec::new();
            }
            flag(
                &|x| {
                    let z = MODIFIED_Z * (x - m) / mad;
                    (z.abs() > sensitivity).then_some(z)
                },
                m,
            )
        }
    }
}

#[cfg(test)]
#[path = "compute_tests.rs"]
mod tests;
