//! Tests of the analytics computations, each against a hand-computed answer.
use super::*;
use chrono::TimeZone;

fn at(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, mo, d, h, mi, s).unwrap()
}

fn day(y: i32, mo: u32, d: u32) -> DateTime<Utc> {
    at(y, mo, d, 0, 0, 0)
}

fn assert_close(actual: f64, expected: f64) {
    assert!(
        (actual - expected).abs() <= 1e-9 * expected.abs().max(1.0),
        "{actual} != {expected}"
    );
}

// ---------------------------------------------------------------- Interval

#[test]
fn interval_parses_and_prints_its_names() {
    for (text, interval) in [
        ("minute", Interval::Minute),
        ("hour", Interval::Hour),
        ("day", Interval::Day),
        ("week", Interval::Week),
        ("month", Interval::Month),
    ] {
        assert_eq!(Interval::parse(text), Some(interval));
        assert_eq!(interval.as_str(), text);
    }
    assert_eq!(Interval::parse("year"), None);
    assert_eq!(Interval::parse(""), None);
}

#[test]
fn minute_truncates_seconds_and_micros() {
    let t = at(2026, 3, 14, 15, 9, 26) + chrono::Duration::microseconds(535_897);
    assert_eq!(Interval::Minute.floor(t), at(2026, 3, 14, 15, 9, 0));
    assert_eq!(
        Interval::Minute.next(at(2026, 3, 14, 15, 9, 0)),
        at(2026, 3, 14, 15, 10, 0)
    );
    assert_eq!(
        Interval::Minute.next(at(2026, 12, 31, 23, 59, 0)),
        day(2027, 1, 1)
    );
    assert_eq!(
        Interval::Minute.periods_between(at(2026, 3, 14, 15, 9, 0), at(2026, 3, 14, 17, 9, 0)),
        120
    );
    assert_eq!(
        Interval::Minute.periods_between(at(2026, 3, 14, 17, 9, 0), at(2026, 3, 14, 15, 9, 0)),
        -120
    );
}

#[test]
fn hour_truncates_to_the_hour() {
    let t = at(2026, 3, 14, 15, 59, 59) + chrono::Duration::microseconds(999_999);
    assert_eq!(Interval::Hour.floor(t), at(2026, 3, 14, 15, 0, 0));
    assert_eq!(
        Interval::Hour.next(at(2026, 3, 14, 23, 0, 0)),
        day(2026, 3, 15)
    );
    assert_eq!(
        Interval::Hour.periods_between(day(2026, 3, 14), day(2026, 3, 16)),
        48
    );
}

#[test]
fn day_truncates_to_midnight_utc_and_knows_february() {
    assert_eq!(
        Interval::Day.floor(at(2026, 3, 14, 23, 59, 59)),
        day(2026, 3, 14)
    );
    assert_eq!(Interval::Day.next(day(2024, 2, 28)), day(2024, 2, 29));
    assert_eq!(Interval::Day.next(day(2024, 2, 29)), day(2024, 3, 1));
    assert_eq!(Interval::Day.next(day(2026, 2, 28)), day(2026, 3, 1));
    assert_eq!(
        Interval::Day.periods_between(day(2024, 2, 1), day(2024, 3, 1)),
        29
    );
    assert_eq!(
        Interval::Day.periods_between(day(2026, 2, 1), day(2026, 3, 1)),
        28
    );
    // Before the epoch, too.
    assert_eq!(
        Interval::Day.floor(at(1969, 12, 31, 18, 0, 0)),
        day(1969, 12, 31)
    );
}

#[test]
fn weeks_start_on_monday() {
    // 2026-01-01 is a Thursday; its ISO week starts on Monday 2025-12-29.
    assert_eq!(
        Interval::Week.floor(at(2026, 1, 1, 12, 0, 0)),
        day(2025, 12, 29)
    );
    // A Sunday floors to the Monday before it.
    assert_eq!(
        Interval::Week.floor(at(2026, 1, 4, 23, 59, 59)),
        day(2025, 12, 29)
    );
    // A Monday at midnight is its own start.
    assert_eq!(Interval::Week.floor(day(2026, 1, 5)), day(2026, 1, 5));
    // 1970-01-01 was a Thursday; 1969-12-31 (Wednesday) is before the epoch.
    assert_eq!(Interval::Week.floor(day(1970, 1, 1)), day(1969, 12, 29));
    assert_eq!(
        Interval::Week.floor(at(1969, 12, 31, 6, 0, 0)),
        day(1969, 12, 29)
    );
    assert_eq!(Interval::Week.next(day(2025, 12, 29)), day(2026, 1, 5));
    assert_eq!(
        Interval::Week.periods_between(day(2025, 12, 29), day(2026, 2, 2)),
        5
    );
    assert_eq!(
        Interval::Week.periods_between(day(2026, 2, 2), day(2025, 12, 29)),
        -5
    );
}

#[test]
fn months_are_calendar_true() {
    assert_eq!(
        Interval::Month.floor(at(2026, 1, 31, 10, 0, 0)),
        day(2026, 1, 1)
    );
    assert_eq!(
        Interval::Month.floor(at(2024, 2, 29, 23, 59, 59)),
        day(2024, 2, 1)
    );
    assert_eq!(
        Interval::Month.floor(at(2026, 2, 28, 23, 59, 59)),
        day(2026, 2, 1)
    );
    assert_eq!(Interval::Month.next(day(2026, 1, 1)), day(2026, 2, 1));
    assert_eq!(Interval::Month.next(day(2024, 2, 1)), day(2024, 3, 1));
    assert_eq!(Interval::Month.next(day(2026, 2, 1)), day(2026, 3, 1));
    assert_eq!(Interval::Month.next(day(2026, 12, 1)), day(2027, 1, 1));
    assert_eq!(
        Interval::Month.periods_between(day(2026, 1, 1), day(2026, 3, 1)),
        2
    );
    assert_eq!(
        Interval::Month.periods_between(day(2025, 11, 1), day(2026, 2, 1)),
        3
    );
    assert_eq!(
        Interval::Month.periods_between(day(2026, 2, 1), day(2025, 11, 1)),
        -3
    );
    assert_eq!(
        Interval::Month.periods_between(day(2026, 2, 1), day(2026, 2, 1)),
        0
    );
}

// ---------------------------------------------------------------- bucket_starts

#[test]
fn month_buckets_cover_the_range() {
    assert_eq!(
        bucket_starts(Interval::Month, day(2026, 1, 15), day(2026, 4, 1), 100),
        Ok(vec![day(2026, 1, 1), day(2026, 2, 1), day(2026, 3, 1)])
    );
    // A second into April opens April's bucket.
    assert_eq!(
        bucket_starts(
            Interval::Month,
            day(2026, 1, 15),
            at(2026, 4, 1, 0, 0, 1),
            100
        ),
        Ok(vec![
            day(2026, 1, 1),
            day(2026, 2, 1),
            day(2026, 3, 1),
            day(2026, 4, 1)
        ])
    );
}

#[test]
fn week_buckets_start_on_mondays() {
    assert_eq!(
        bucket_starts(Interval::Week, day(2026, 1, 1), day(2026, 1, 6), 100),
        Ok(vec![day(2025, 12, 29), day(2026, 1, 5)])
    );
}

#[test]
fn an_empty_range_has_no_buckets() {
    let t = at(2026, 1, 15, 12, 0, 0);
    assert_eq!(bucket_starts(Interval::Day, t, t, 100), Ok(vec![]));
    assert_eq!(
        bucket_starts(Interval::Day, t, day(2026, 1, 1), 100),
        Ok(vec![])
    );
}

#[test]
fn max_is_inclusive() {
    let ten_days = bucket_starts(Interval::Day, day(2026, 1, 1), day(2026, 1, 11), 10);
    assert_eq!(ten_days.map(|starts| starts.len()), Ok(10));
    assert_eq!(
        bucket_starts(Interval::Day, day(2026, 1, 1), day(2026, 1, 11), 9),
        Err(10)
    );
    assert_eq!(
        bucket_starts(Interval::Month, day(2026, 1, 1), day(2027, 1, 1), 11),
        Err(12)
    );
}

#[test]
fn too_many_buckets_is_counted_not_allocated() {
    let started = std::time::Instant::now();
    // 36_525 days (25 leap years from 2000 to 2096) of 1_440 minutes.
    assert_eq!(
        bucket_starts(Interval::Minute, day(2000, 1, 1), day(2100, 1, 1), 10_000),
        Err(52_596_000)
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(1));
    // Across chrono's whole range, too.
    assert!(matches!(
        bucket_starts(
            Interval::Minute,
            DateTime::<Utc>::MIN_UTC,
            DateTime::<Utc>::MAX_UTC,
            10_000
        ),
        Err(n) if n > 10_000
    ));
}

// ---------------------------------------------------------------- percentile

#[test]
fn nearest_rank_percentile_of_the_textbook_example() {
    let values = vec![35.0, 20.0, 50.0, 15.0, 40.0];
    for (p, expected) in [
        (0.0, 15.0),
        (5.0, 15.0),
        (30.0, 20.0),
        (40.0, 20.0),
        (50.0, 35.0),
        (100.0, 50.0),
    ] {
        let mut values = values.clone();
        assert_eq!(
            nearest_rank_percentile(&mut values, p),
            Some(expected),
            "p{p}"
        );
    }
}

#[test]
fn nearest_rank_percentile_ignores_nan_and_clamps_p() {
    let mut values = vec![f64::NAN, 3.0, 1.0, f64::NAN, 2.0];
    assert_eq!(nearest_rank_percentile(&mut values, 50.0), Some(2.0));
    assert_eq!(nearest_rank_percentile(&mut values, 150.0), Some(3.0));
    assert_eq!(nearest_rank_percentile(&mut values, -5.0), Some(1.0));
    assert_eq!(nearest_rank_percentile(&mut vec![], 50.0), None);
    assert_eq!(nearest_rank_percentile(&mut vec![f64::NAN], 50.0), None);
}

// ---------------------------------------------------------------- funnel

const T: i64 = 1_767_225_600_000_000; // 2026-01-01T00:00:00Z in microseconds
const SECOND: i64 = 1_000_000;
const HOUR: i64 = 3_600 * SECOND;

fn row(entity: &str, position: u64, timestamp_micros: i64, matches: [bool; 3]) -> FunnelRow {
    FunnelRow {
        entity_id: entity.to_owned(),
        position,
        timestamp_micros,
        matches: matches.to_vec(),
    }
}

const S0: [bool; 3] = [true, false, false];
const S1: [bool; 3] = [false, true, false];
const S2: [bool; 3] = [false, false, true];
const NONE: [bool; 3] = [false, false, false];

/// Six entities, three steps, one hour to finish:
/// - a: completes (its first event matches steps 0 and 1 but serves step 0 only):
///   0 -> 1 in 10 s, 1 -> 2 in 60 s.
/// - b: stops at step 1 (0 -> 1 in 4000.25 ms); a second step-0 event changes nothing.
/// - c: step 1 comes before step 0 and step 2 before step 1: reaches step 0 only.
/// - d: step 2 comes two hours after step 0 (outside the window): reaches step 1 (2 s).
/// - e: never does step 0: reaches nothing.
/// - f: completes; one event matches steps 1 and 2 and serves step 1 only: 0 -> 1 in 1 s,
///   1 -> 2 in 500 ms.
fn funnel_rows() -> Vec<FunnelRow> {
    vec![
        row("a", 1, T, [true, true, false]),
        row("a", 2, T + SECOND, NONE),
        row("a", 3, T + 10 * SECOND, S1),
        row("a", 4, T + 70 * SECOND, S2),
        row("b", 1, T, S0),
        row("b", 2, T + 4_000_250, S1),
        row("b", 3, T + 5 * SECOND, S0),
        row("c", 1, T, S1),
        row("c", 2, T + SECOND, S0),
        row("c", 3, T + 3 * SECOND, S2),
        row("d", 1, T, S0),
        row("d", 2, T + 2 * SECOND, S1),
        row("d", 3, T + 2 * HOUR, S2),
        row("e", 1, T, S1),
        row("e", 2, T + SECOND, S2),
        row("f", 1, T, S0),
        row("f", 2, T + SECOND, [false, true, true]),
        row("f", 3, T + 1_500_000, S2),
    ]
}

#[test]
fn funnel_counts_every_field_by_hand() {
    let outcome = funnel(&funnel_rows(), 3, HOUR);
    assert_eq!(
        outcome,
        vec![
            // Entered: a b c d f. Converted: a b d f, in 10000, 4000.25, 2000, 1000 ms:
            // median of [1000, 2000, 4000.25, 10000] = (2000 + 4000.25) / 2.
            FunnelStepOutcome {
                entered: 5,
                converted: Some(4),
                conversion_rate: Some(0.8),
                conversion_from_start: Some(1.0),
                median_time_to_convert_ms: Some(3000.125),
            },
            // Entered: a b d f. Converted: a (60000 ms) and f (500 ms).
            FunnelStepOutcome {
                entered: 4,
                converted: Some(2),
                conversion_rate: Some(0.5),
                conversion_from_start: Some(0.8),
                median_time_to_convert_ms: Some(30_250.0),
            },
            FunnelStepOutcome {
                entered: 2,
                converted: None,
                conversion_rate: None,
                conversion_from_start: Some(0.4),
                median_time_to_convert_ms: None,
            },
        ]
    );
}

#[test]
fn funnel_window_is_inclusive_and_measured_from_step_zero() {
    let rows = vec![
        row("a", 1, T, S0),
        row("a", 2, T + 40 * SECOND, S1),
        row("a", 3, T + 60 * SECOND, S2),
        row("b", 1, T, S0),
        row("b", 2, T + 40 * SECOND, S1),
        row("b", 3, T + 60 * SECOND + 1, S2),
    ];
    let outcome = funnel(&rows, 3, 60 * SECOND);
    let entered: Vec<u64> = outcome.iter().map(|step| step.entered).collect();
    assert_eq!(entered, vec![2, 2, 1]);
    assert_eq!(outcome[0].median_time_to_convert_ms, Some(40_000.0));
    assert_eq!(outcome[1].median_time_to_convert_ms, Some(20_000.0));
    assert_eq!(outcome[1].conversion_rate, Some(0.5));
}

#[test]
fn funnel_with_no_one_at_step_zero() {
    let rows = vec![row("e", 1, T, S1), row("e", 2, T + SECOND, S2)];
    let empty = FunnelStepOutcome {
        entered: 0,
        converted: Some(0),
        conversion_rate: None,
        conversion_from_start: None,
        median_time_to_convert_ms: None,
    };
    assert_eq!(
        funnel(&rows, 3, HOUR),
        vec![
            empty.clone(),
            empty,
            FunnelStepOutcome {
                entered: 0,
                converted: None,
                conversion_rate: None,
                conversion_from_start: None,
                median_time_to_convert_ms: None,
            },
        ]
    );
    assert_eq!(funnel(&[], 0, HOUR), vec![]);
}

#[test]
fn funnel_of_one_step() {
    let rows = vec![row("a", 1, T, S0), row("b", 1, T, S1)];
    assert_eq!(
        funnel(&rows, 1, HOUR),
        vec![FunnelStepOutcome {
            entered: 1,
            converted: None,
            conversion_rate: None,
            conversion_from_start: Some(1.0),
            median_time_to_convert_ms: None,
        }]
    );
}

// ---------------------------------------------------------------- trend

#[test]
fn trend_of_a_straight_line() {
    let t = trend(&[1.0, 2.0, 3.0, 4.0], 2).unwrap();
    assert_close(t.slope, 1.0);
    assert_close(t.intercept, 1.0);
    assert_eq!(t.change, 3.0);
    assert_close(t.change_percent.unwrap(), 300.0);
    assert_eq!(t.direction, "increasing");
    assert_eq!(t.forecast.len(), 2);
    assert_close(t.forecast[0], 5.0);
    assert_close(t.forecast[1], 6.0);
}

#[test]
fn trend_of_a_constant_series_is_stable() {
    let t = trend(&[5.0, 5.0, 5.0], 1).unwrap();
    assert_eq!(t.slope, 0.0);
    assert_eq!(t.intercept, 5.0);
    assert_eq!(t.change, 0.0);
    assert_eq!(t.change_percent, Some(0.0));
    assert_eq!(t.direction, "stable");
    assert_eq!(t.forecast, vec![5.0]);
}

#[test]
fn trend_decreasing() {
    // x̄ = 1.5, ȳ = 6; Σdx·dy = -11, Σdx² = 5: slope -2.2, intercept 6 + 2.2·1.5 = 9.3.
    let t = trend(&[9.0, 7.0, 6.0, 2.0], 1).unwrap();
    assert_close(t.slope, -2.2);
    assert_close(t.intercept, 9.3);
    assert_eq!(t.change, -7.0);
    assert_close(t.change_percent.unwrap(), -700.0 / 9.0);
    assert_eq!(t.direction, "decreasing");
    assert_close(t.forecast[0], 9.3 - 2.2 * 4.0);
}

#[test]
fn trend_edge_cases() {
    assert_eq!(trend(&[], 3), None);
    assert_eq!(
        trend(&[7.0], 2),
        Some(Trend {
            slope: 0.0,
            intercept: 7.0,
            change: 0.0,
            change_percent: None,
            direction: "stable",
            forecast: vec![7.0, 7.0],
        })
    );
    let from_zero = trend(&[0.0, 1.0], 0).unwrap();
    assert_eq!(from_zero.change_percent, None);
    assert!(from_zero.forecast.is_empty());
    // Percent change against |first|: -4 -> -2 is +50 %.
    assert_close(
        trend(&[-4.0, -2.0], 0).unwrap().change_percent.unwrap(),
        50.0,
    );
    // A slope tiny against the mean is stable.
    assert_eq!(trend(&[1e12, 1e12 + 1e-3], 0).unwrap().direction, "stable");
}

// ---------------------------------------------------------------- anomalies

#[test]
fn anomaly_method_names_and_defaults() {
    for (text, method, default) in [
        ("zscore", AnomalyMethod::ZScore, 3.0),
        ("iqr", AnomalyMethod::Iqr, 1.5),
        ("mad", AnomalyMethod::Mad, 3.5),
    ] {
        assert_eq!(AnomalyMethod::parse(text), Some(method));
        assert_eq!(method.as_str(), text);
        assert_eq!(method.default_sensitivity(), default);
    }
    assert_eq!(AnomalyMethod::parse("stddev"), None);
}

const SPIKE: [f64; 7] = [10.0, 10.0, 10.0, 10.0, 10.0, 10.0, 50.0];

#[test]
fn zscore_scores_the_spike_by_hand() {
    // mean = 110/7; deviations -40/7 (×6) and 240/7; variance = 67200/343;
    // z(50)² = (57600/49) / (67200/343) = 6, so z(50) = √6 ≈ 2.449 and z(10) = -1/√6.
    let mean = 110.0 / 7.0;
    assert_close(population_variance(&SPIKE).unwrap(), 67_200.0 / 343.0);
    let found = anomalies(&SPIKE, AnomalyMethod::ZScore, 2.0);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].index, 6);
    assert_eq!(found[0].value, 50.0);
    assert_close(found[0].score, 6f64.sqrt());
    assert_close(found[0].expected, mean);
    // One outlier among n points has z = √(n−1) at most: √6 < 3, so the default flags nothing.
    assert_eq!(
        anomalies(
            &SPIKE,
            AnomalyMethod::ZScore,
            AnomalyMethod::ZScore.default_sensitivity()
        ),
        vec![]
    );
    // The low side: every 10 has |z| = 1/√6 ≈ 0.408.
    assert_eq!(anomalies(&SPIKE, AnomalyMethod::ZScore, 0.4).len(), 7);
}

#[test]
fn iqr_flags_the_spike() {
    // Sorted: six 10s and a 50. Q1 (h = 1.5) = Q3 (h = 4.5) = median = 10: IQR = 0, so the
    // fences are both 10 and the score is x − median = 40.
    assert_eq!(
        anomalies(&SPIKE, AnomalyMethod::Iqr, 1.5),
        vec![Anomaly {
            index: 6,
            value: 50.0,
            score: 40.0,
            expected: 10.0
        }]
    );
}

#[test]
fn iqr_interpolates_quartiles() {
    // n = 8: Q1 at h = 1.75 -> 2.75; Q3 at h = 5.25 -> 6.25; IQR 3.5; median (h = 3.5) 4.5.
    // Fences: 2.75 − 5.25 = -2.5 and 6.25 + 5.25 = 11.5.
    let values = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 40.0];
    let found = anomalies(&values, AnomalyMethod::Iqr, 1.5);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].index, 7);
    assert_close(found[0].score, (40.0 - 4.5) / 3.5);
    assert_eq!(found[0].expected, 4.5);
    // With s = 0, 1 and 2 (below 2.75) and 7 (above 6.25) are outside too.
    let indices: Vec<usize> = anomalies(&values, AnomalyMethod::Iqr, 0.0)
        .iter()
        .map(|anomaly| anomaly.index)
        .collect();
    assert_eq!(indices, vec![0, 1, 6, 7]);
}

#[test]
fn mad_of_the_spike_is_zero_and_flags_nothing() {
    // median 10; |x − 10| = six 0s and 40: MAD = 0, which flags nothing by definition.
    assert_eq!(anomalies(&SPIKE, AnomalyMethod::Mad, 3.5), vec![]);
}

#[test]
fn mad_flags_a_spike_over_noise() {
    // Sorted: 9 10 10 10 11 11 50, median 10; |x − 10| sorted: 0 0 0 1 1 1 40, MAD = 1.
    // z(50) = 0.6745·40 = 26.98; z(11) = 0.6745, z(9) = -0.6745.
    let values = [10.0, 11.0, 9.0, 10.0, 10.0, 11.0, 50.0];
    let found = anomalies(&values, AnomalyMethod::Mad, 3.5);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].index, 6);
    assert_close(found[0].score, 0.6745 * 40.0);
    assert_eq!(found[0].expected, 10.0);
    assert_eq!(anomalies(&values, AnomalyMethod::Mad, 0.6).len(), 4);
}

#[test]
fn anomalies_skip_nan_and_keep_indices() {
    let values = [10.0, f64::NAN, 10.0, 10.0, 10.0, 10.0, 10.0, 50.0];
    let found = anomalies(&values, AnomalyMethod::ZScore, 2.0);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].index, 7);
    assert_close(found[0].score, 6f64.sqrt());
    let found = anomalies(&values, AnomalyMethod::Iqr, 1.5);
    assert_eq!(found.iter().map(|a| a.index).collect::<Vec<_>>(), vec![7]);
}

#[test]
fn nothing_to_flag() {
    for method in [
        AnomalyMethod::ZScore,
        AnomalyMethod::Iqr,
        AnomalyMethod::Mad,
    ] {
        assert_eq!(anomalies(&[], method, 0.0), vec![], "{method:?} empty");
        assert_eq!(
            anomalies(&[4.0; 10], method, 0.0),
            vec![],
            "{method:?} constant"
        );
        // Fewer than three finite values.
        assert_eq!(
            anomalies(&[1.0, f64::NAN, 1000.0], method, 0.0),
            vec![],
            "{method:?} short"
        );
    }
}
